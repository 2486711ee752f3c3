//! The Grafana dashboards of `grafana-dashboards/`, checked as Grafana would use them: every
//! Infinity query of every panel and variable is sent to the real server (basic auth,
//! gzip, the provisioned user header) for the user and the admin endpoints, and each
//! column a panel shows must come back; data links must lead to a dashboard that works
//! with what they carry; the Prometheus queries must parse and use the CEEMS series.

mod database;
mod grafana;
#[allow(dead_code)]
#[path = "../api/helpers.rs"]
mod helpers;
mod runner;

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::LazyLock;

use regex::Regex;

use grafana::{load_dashboards, Dashboard};
use runner::{check_dashboards, provisioned_datasource, repository_path, Grafana};

fn dashboards() -> Vec<Dashboard> {
    load_dashboards(&repository_path("grafana-dashboards"))
}

#[tokio::test]
async fn every_panel_gets_its_columns_from_the_server() {
    let dashboards = dashboards();
    let files: Vec<&str> = dashboards.iter().map(|d| d.file.as_str()).collect();
    assert_eq!(
        files,
        [
            "cluster-status.json",
            "job-list.json",
            "job-metrics.json",
            "usage.json"
        ]
    );
    let grafana = Grafana::start().await;
    let report = check_dashboards(&grafana, &dashboards).await;
    let errors: Vec<&String> = report.errors.iter().collect();
    assert!(errors.is_empty(), "{} problems:\n{errors:#?}", errors.len());

    // The runs reached every query: both endpoint kinds, and the job dashboard through the
    // job list's links (one per job list run with rows).
    let places = |file: &str| report.answers.keys().filter(|(f, _)| f == file).count();
    assert_eq!(
        places("job-list.json"),
        2 + 3,
        "2 query variables and 3 panels"
    );
    assert_eq!(
        places("job-metrics.json"),
        1 + 2,
        "1 query variable and 2 tables"
    );
    assert_eq!(places("usage.json"), 2 + 8);
    assert_eq!(places("cluster-status.json"), 1 + 7);
    let job_list = &report.answers[&(
        "job-list.json".to_owned(),
        "panel 1 \"Jobs\" query A".to_owned(),
    )]
        .1;
    assert_eq!(job_list.len(), grafana.scenario.job_list_runs);
    // The user's run on each cluster lists exactly the units the demo generator has for
    // them in the range: those that ended in it and those still running.
    for (cluster_id, expected) in &grafana.scenario.user_units {
        assert!(
            expected.len() >= 5,
            "{cluster_id}: {} has {} units",
            grafana.scenario.user,
            expected.len()
        );
        let listed: Vec<BTreeSet<String>> = job_list
            .iter()
            .map(|rows| {
                rows.iter()
                    .map(|row| row["uuid"].as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .collect();
        assert!(
            listed.contains(expected),
            "{cluster_id}: no job list run shows the {} units of {}: {expected:?}",
            expected.len(),
            grafana.scenario.user
        );
    }
    // Every job list run with rows links to the job dashboard.
    let with_rows = job_list.iter().filter(|rows| !rows.is_empty()).count();
    assert!(with_rows > 0);
    assert_eq!(report.linked_runs["job-metrics.json"], with_rows);
    assert!(report.requests > 100, "{} requests", report.requests);
    check_promql(&report);
    grafana.stop().await;
}

/// The same check on copies of the dashboards with one thing broken each: it must fail,
/// naming the broken thing.
#[tokio::test]
async fn a_broken_dashboard_fails_the_check() {
    let grafana = Grafana::start().await;
    // (file to break, text, replacement, file the error is reported for, error)
    let cases: [(&str, &str, &str, &str, &str); 5] = [
        (
            "job-list.json",
            "\"selector\": \"avg_cpu_usage.global\"",
            "\"selector\": \"avg_cpu_usage.globl\"",
            "job-list.json",
            "column \"avg_cpu_usage.globl\" (CPU usage) is in none of the",
        ),
        (
            "usage.json",
            "\"url\": \"/api/v1/usage/global${suffix}\"",
            "\"url\": \"/api/v1/usage/globl${suffix}\"",
            "usage.json",
            "HTTP 404",
        ),
        (
            "cluster-status.json",
            "\"value\": \"total_gpu_energy_usage_kwh\"",
            "\"value\": \"total_gpu_energy_kwh\"",
            "cluster-status.json",
            "field=total_gpu_energy_kwh is not a field of /api/v1/usage/",
        ),
        (
            "job-list.json",
            "var-uuid=${__data.fields.uuid}",
            "var-job=${__data.fields.uuid}",
            "job-metrics.json (linked from job-list.json",
            "the link sets var-job, which is not a variable here",
        ),
        (
            "job-metrics.json",
            "\"url\": \"/api/v1/projects${suffix}\"",
            "\"url\": \"/api/v1/projects${sufix}\"",
            "job-metrics.json",
            "unknown variable \"sufix\"",
        ),
    ];
    for (file, from, to, error_file, expected) in cases {
        // The broken file, and the job metrics behind the job list's links.
        let broken: Vec<Dashboard> = dashboards()
            .into_iter()
            .filter(|dashboard| {
                dashboard.file == file
                    || (file == "job-list.json" && dashboard.file == "job-metrics.json")
            })
            .map(|mut dashboard| {
                if dashboard.file == file {
                    let text = dashboard.json.to_string();
                    let from = from.replace(": ", ":");
                    assert!(text.contains(&from), "{file} has {from}");
                    dashboard.json =
                        serde_json::from_str(&text.replace(&from, &to.replace(": ", ":"))).unwrap();
                }
                dashboard
            })
            .collect();
        let report = check_dashboards(&grafana, &broken).await;
        assert!(
            report
                .errors
                .iter()
                .any(|error| error.starts_with(error_file) && error.contains(expected)),
            "{file}: {to}: expected {expected:?} in {:#?}",
            report.errors
        );
    }
    grafana.stop().await;
}

/// CEEMS series a job dashboard may read, each selected by the unit's `uuid` label.
const SERIES: &[&str] = &[
    "uuid:ceems_cpu_usage:ratio_irate",
    "uuid:ceems_cpu_memory_usage:ratio",
    "uuid:ceems_gpu_usage:ratio",
    "uuid:ceems_gpu_memory_usage:ratio",
    "uuid:ceems_host_power_watts:pue",
    "uuid:ceems_gpu_power_watts:pue",
    "ceems_ebpf_read_bytes_total",
    "ceems_ebpf_write_bytes_total",
    "ceems_ebpf_ingress_bytes_total",
    "ceems_ebpf_egress_bytes_total",
];

/// The Prometheus queries of the runs (interpolated, the unit's uuid filled in by the job
/// list's links) use only the CEEMS series, select by `uuid`, and parse.
fn check_promql(report: &runner::Report) {
    static SELECTOR: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}").unwrap());
    let mut used = BTreeSet::new();
    let mut exprs = Vec::new();
    for ((file, place), set) in &report.promql {
        assert_eq!(file, "job-metrics.json");
        // Reached through a link, the unit is a real one.
        assert!(
            set.iter()
                .any(|expr| expr.contains("uuid=\"") && !expr.contains("uuid=\"\"")),
            "{place}: {set:?}"
        );
        for expr in set {
            let mut selectors = 0;
            for captures in SELECTOR.captures_iter(expr) {
                selectors += 1;
                assert!(
                    SERIES.contains(&&captures[1]),
                    "{place}: {} is not a CEEMS series",
                    &captures[1]
                );
                assert!(
                    captures[2].starts_with("uuid=\""),
                    "{place}: {expr} does not select by uuid"
                );
                used.insert(captures[1].to_owned());
            }
            assert!(selectors > 0, "{place}: {expr}");
            exprs.push(expr.clone());
        }
    }
    assert_eq!(
        used.len(),
        SERIES.len(),
        "every series has a panel: {used:?}"
    );

    // promtool parses each expression as a recording rule.
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yml");
    let mut text = String::from("groups:\n  - name: dashboards\n    rules:\n");
    for (index, expr) in exprs.iter().enumerate() {
        text.push_str(&format!(
            "      - record: dashboard_expr_{index}\n        expr: {}\n",
            serde_json::to_string(expr).unwrap()
        ));
    }
    std::fs::write(&rules, text).unwrap();
    let output = Command::new("promtool")
        .arg("check")
        .arg("rules")
        .arg(&rules)
        .output()
        .expect("promtool runs (scripts/install-test-deps.sh installs it)");
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn provisioning_sends_the_grafana_user_and_basic_auth() {
    let datasource = provisioned_datasource();
    assert!(datasource.basic_auth);
    assert_eq!(datasource.header_name, "X-Grafana-User");
    assert_eq!(datasource.header_value, "${__user.login}");

    let path = repository_path("grafana-dashboards/provisioning/dashboards/ceems.yml");
    let yaml: serde_json::Value =
        yaml_serde::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(yaml["apiVersion"], 1);
    assert_eq!(yaml["providers"][0]["type"], "file");
    assert_eq!(
        yaml["providers"][0]["options"]["path"],
        "${CEEMS_DASHBOARDS_DIR}"
    );
}
