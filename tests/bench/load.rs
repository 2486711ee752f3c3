//! Smoke run of `ceems_bench load`: the debug server on a generated database of 2,000
//! units, five users for two seconds. Every route is measured without an error, against both
//! floors, and the requests are the ones the dashboards send.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

const ROUTES: [&str; 7] = [
    "units_30d",
    "usage_current_30d",
    "usage_current_365d",
    "usage_global",
    "projects",
    "stats_admin",
    "verify",
];

/// The `field` values of a request target.
fn fields(target: &str) -> BTreeSet<String> {
    let query = target.split_once('?').map_or("", |(_, query)| query);
    form_urlencoded::parse(query.as_bytes())
        .filter(|(key, _)| key == "field")
        .map(|(_, value)| value.into_owned())
        .collect()
}

/// The field sets of every Infinity query of a dashboard.
fn dashboard_field_sets(file: &str) -> Vec<BTreeSet<String>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("grafana-dashboards")
        .join(file);
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).expect("dashboard JSON");
    let mut sets = Vec::new();
    let mut stack = vec![&dashboard];
    while let Some(value) = stack.pop() {
        match value {
            Value::Object(map) => {
                if let Some(params) = map.get("params").and_then(Value::as_array) {
                    let set: BTreeSet<String> = params
                        .iter()
                        .filter(|param| param["key"] == "field")
                        .filter_map(|param| param["value"].as_str().map(str::to_owned))
                        .collect();
                    if !set.is_empty() {
                        sets.push(set);
                    }
                }
                stack.extend(map.values());
            }
            Value::Array(items) => stack.extend(items),
            _ => {}
        }
    }
    sets
}

#[test]
fn load_measures_every_route_against_its_floors() {
    let work = tempfile::tempdir().expect("work dir");
    let data = work.path().join("data");
    let generated = Command::new(env!("CARGO_BIN_EXE_ceems_bench"))
        .args(["generate", "--units", "2000", "--quiet", "--out"])
        .arg(&data)
        .output()
        .expect("run ceems_bench generate");
    assert!(
        generated.status.success(),
        "ceems_bench generate failed: {}",
        String::from_utf8_lossy(&generated.stderr)
    );
    let out = work.path().join("load.json");
    let output = Command::new(env!("CARGO_BIN_EXE_ceems_bench"))
        .arg("load")
        .arg("--data")
        .arg(&data)
        .arg("--server")
        .arg(env!("CARGO_BIN_EXE_ceems_api_server"))
        .args(["--users", "5", "--duration", "2s", "--repeat", "3"])
        .arg("--out")
        .arg(&out)
        .args(["--label", "smoke"])
        .output()
        .expect("run ceems_bench load");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "ceems_bench load failed ({}):\n{stdout}\n{stderr}",
        output.status
    );

    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&out).expect("the JSON report"))
            .expect("the report parses");
    let routes = report["routes"].as_array().expect("routes");
    let names: Vec<&str> = routes
        .iter()
        .map(|route| route["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ROUTES);
    for route in routes {
        let name = route["name"].as_str().unwrap();
        for phase in [
            "uncached",
            "sustained",
            "sequential",
            "http_floor_sustained",
            "http_floor_sequential",
        ] {
            assert!(
                route[phase]["count"].as_u64().unwrap() > 0,
                "{name}: nothing measured in {phase}"
            );
            assert_eq!(route[phase]["errors"], 0, "{name}: errors in {phase}");
        }
        assert!(route["sustained"]["throughput_rps"].as_f64().unwrap() > 0.0);
        assert!(
            route["http_floor_sustained"]["throughput_rps"]
                .as_f64()
                .unwrap()
                > 0.0
        );
        assert!(
            !route["sql"].as_array().unwrap().is_empty(),
            "{name}: no statement captured"
        );
        assert!(
            route["sql_floor_us"].as_u64().unwrap() > 0,
            "{name}: no SQL floor"
        );
        assert!(route["http_floor_sequential"]["p50_us"].as_u64().unwrap() > 0);
        assert!(route["response_bytes"].as_u64().unwrap() > 0);
        assert!(route["ratio_to_floors"].as_f64().unwrap() > 0.0);
    }
    // The first window of current usage and admin stats is answered from the cache once
    // asked; every user's current usage is distinct, the admins' stats are one question.
    for route in [&routes[1], &routes[2], &routes[5]] {
        let cached = &route["sequential_cached"];
        assert!(cached["count"].as_u64().unwrap() > 0, "{}", route["name"]);
        assert_eq!(cached["count"], cached["cached"], "{}", route["name"]);
    }
    for route in &routes[1..3] {
        assert_eq!(route["uncached_cache_hits"], 0, "{}", route["name"]);
    }
    assert_eq!(
        routes[5]["uncached"]["count"].as_u64().unwrap()
            + routes[5]["uncached_cache_hits"].as_u64().unwrap(),
        5,
        "one stats request per user"
    );
    assert_eq!(report["errors"]["server_requests"], 0);
    assert_eq!(report["errors"]["database_locked_lines"], 0);
    assert!(report["memory"]["peak_rss_kb"].as_u64().unwrap() > 0);
    assert!(report["memory"]["sampled_peak_rss_kb"].as_u64().unwrap() > 0);
    assert_eq!(report["picked_users"].as_array().unwrap().len(), 5);

    // The requests are the dashboards' own.
    let job_list = dashboard_field_sets("job-list.json");
    let usage = dashboard_field_sets("usage.json");
    let example = |index: usize| routes[index]["example_request"].as_str().unwrap();
    assert!(job_list.contains(&fields(example(0))), "{}", example(0));
    for index in 1..4 {
        assert!(
            usage.contains(&fields(example(index))),
            "{}",
            example(index)
        );
    }

    // The markdown table names every route.
    for name in ROUTES {
        assert!(stdout.contains(&format!("| {name} |")), "{stdout}");
    }
}
