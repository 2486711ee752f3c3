//! Grafana with the provisioned Infinity data source, emulated: the real server on port 0
//! behind basic auth and compression, requests made the way the Infinity backend makes
//! them, and every dashboard run for each endpoint suffix, each value of its variables
//! (a few per variable) and each data link followed from the rows it shows.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::Read;
use std::path::{Path, PathBuf};

use ceems_api_server::app::App;
use serde_json::Value;

use crate::database::{prepare_database, Scenario};
use crate::grafana::{
    check_columns, check_import_format, check_static, interpolate, panel_queries,
    parse_dashboard_link, row_fields, variables, Dashboard, InfinityQuery, PanelQueryKind, Scope,
    TimeRange, VariableKind, INFINITY,
};
use crate::helpers::test_settings;

/// How many values of one query variable a run explores.
const VALUES_PER_VARIABLE: usize = 3;

pub fn repository_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// The Infinity data source as the provisioning file configures it.
pub struct Datasource {
    pub basic_auth: bool,
    pub header_name: String,
    /// The header value after Grafana's provisioning (`$$` → `$`), before the plugin
    /// replaces `${__user.login}`.
    pub header_value: String,
}

/// Reads the Infinity data source of `provisioning/datasources/ceems.yml`.
pub fn provisioned_datasource() -> Datasource {
    let path = repository_path("grafana-dashboards/provisioning/datasources/ceems.yml");
    let text = std::fs::read_to_string(&path).expect("datasource provisioning file");
    let yaml: Value = yaml_serde::from_str(&text).expect("provisioning YAML parses");
    let infinity = yaml["datasources"]
        .as_array()
        .expect("datasources list")
        .iter()
        .find(|datasource| datasource["type"] == INFINITY)
        .expect("an Infinity data source is provisioned");
    let unescape = |value: &Value| value.as_str().unwrap_or("").replace("$$", "$");
    Datasource {
        basic_auth: infinity["basicAuth"] == true,
        header_name: unescape(&infinity["jsonData"]["httpHeaderName1"]),
        header_value: unescape(&infinity["secureJsonData"]["httpHeaderValue1"]),
    }
}

const BASIC_USER: &str = "grafana";
const BASIC_PASSWORD: &str = "dashboards";

/// The server with a database from [`prepare_database`], and a client that calls it as
/// Infinity does.
pub struct Grafana {
    app: Option<App>,
    base: String,
    client: reqwest::Client,
    datasource: Datasource,
    pub scenario: Scenario,
    _data_dir: tempfile::TempDir,
    _web_dir: tempfile::TempDir,
}

impl Grafana {
    pub async fn start() -> Grafana {
        let data_dir = tempfile::tempdir().expect("data dir");
        let scenario = prepare_database(data_dir.path());
        let web_dir = tempfile::tempdir().expect("web config dir");
        let web_config = web_dir.path().join("web.yml");
        let hash = bcrypt::hash(BASIC_PASSWORD, 4).expect("bcrypt");
        std::fs::write(
            &web_config,
            format!("basic_auth_users:\n  {BASIC_USER}: '{hash}'\n"),
        )
        .expect("write web config");
        let mut settings = test_settings(data_dir.path());
        settings.flags.web_config_file = Some(web_config);
        settings.flags.compression = true;
        settings.config.server.admin.users = vec![scenario.admin.clone()];
        let app = App::build(settings).await.expect("app starts");
        let base = format!("http://127.0.0.1:{}", app.port());
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client");
        Grafana {
            app: Some(app),
            base,
            client,
            datasource: provisioned_datasource(),
            scenario,
            _data_dir: data_dir,
            _web_dir: web_dir,
        }
    }

    pub async fn stop(mut self) {
        if let Some(app) = self.app.take() {
            app.stop().await.expect("clean stop");
        }
    }

    /// One Infinity request for `login`: GET with the Go client's user agent, gzip, the
    /// configured basic auth and the user header. The rows under `data`, or why not.
    pub async fn rows(&self, target: &str, login: &str) -> Result<Vec<Value>, String> {
        let header_value = self
            .datasource
            .header_value
            .replace("${__user.login}", login);
        let mut request = self
            .client
            .get(format!("{}{target}", self.base))
            .header("User-Agent", "Go-http-client/1.1")
            .header("Accept-Encoding", "gzip")
            .header("Content-Type", "application/json")
            .header(self.datasource.header_name.as_str(), header_value);
        if self.datasource.basic_auth {
            request = request.basic_auth(BASIC_USER, Some(BASIC_PASSWORD));
        }
        let response = request
            .send()
            .await
            .map_err(|error| format!("GET {target} as {login}: {error}"))?;
        let status = response.status().as_u16();
        let gzip = response
            .headers()
            .get("content-encoding")
            .is_some_and(|value| value == "gzip");
        let bytes = response.bytes().await.map_err(|error| error.to_string())?;
        let mut body = String::new();
        if gzip {
            flate2::read::GzDecoder::new(&bytes[..])
                .read_to_string(&mut body)
                .map_err(|error| format!("GET {target}: bad gzip: {error}"))?;
        } else {
            body = String::from_utf8_lossy(&bytes).into_owned();
        }
        if status != 200 {
            return Err(format!(
                "GET {target} as {login}: HTTP {status}: {}",
                body.trim()
            ));
        }
        let envelope: Value = serde_json::from_str(&body)
            .map_err(|error| format!("GET {target}: not JSON ({error}): {body}"))?;
        if envelope["status"] != "success" {
            return Err(format!("GET {target} as {login}: {envelope}"));
        }
        envelope["data"]
            .as_array()
            .cloned()
            .ok_or_else(|| format!("GET {target} as {login}: data is not an array: {envelope}"))
    }
}

/// Where a query is: the dashboard file and `panel <id> "<title>" query <refId>` or
/// `variable <name>`.
pub type Place = (String, String);

/// Everything the runs saw.
#[derive(Default)]
pub struct Report {
    pub errors: BTreeSet<String>,
    /// (file, where) → the query and the rows of each of its answers.
    pub answers: BTreeMap<Place, (InfinityQuery, Vec<Vec<Value>>)>,
    /// (file, where) → the interpolated PromQL expressions.
    pub promql: BTreeMap<Place, BTreeSet<String>>,
    pub runs: usize,
    pub requests: usize,
    /// file → the link runs it got.
    pub linked_runs: BTreeMap<String, usize>,
}

struct Run {
    dashboard: usize,
    presets: BTreeMap<String, String>,
    time: TimeRange,
    from_link: Option<String>,
}

/// Runs every dashboard as Grafana would and checks what comes back.
pub async fn check_dashboards(grafana: &Grafana, dashboards: &[Dashboard]) -> Report {
    let mut report = Report::default();
    let window = TimeRange {
        from_ms: grafana.scenario.from_ms,
        to_ms: grafana.scenario.to_ms,
    };
    let mut queue = VecDeque::new();
    let mut uids = BTreeSet::new();
    for (index, dashboard) in dashboards.iter().enumerate() {
        let file = &dashboard.file;
        if !uids.insert(dashboard.uid().to_owned()) {
            report
                .errors
                .insert(format!("{file}: uid {} is used twice", dashboard.uid()));
        }
        for error in check_import_format(dashboard) {
            report.errors.insert(format!("{file}: {error}"));
        }
        let suffixes = match variables(dashboard) {
            Ok(list) => list.into_iter().find_map(|variable| match variable.kind {
                VariableKind::Custom(options) if variable.name == "suffix" => Some(options),
                _ => None,
            }),
            Err(error) => {
                report.errors.insert(format!("{file}: {error}"));
                continue;
            }
        };
        let Some(suffixes) = suffixes else {
            report
                .errors
                .insert(format!("{file}: no custom variable \"suffix\""));
            continue;
        };
        for (_, suffix) in suffixes {
            queue.push_back(Run {
                dashboard: index,
                presets: BTreeMap::from([("suffix".to_owned(), suffix)]),
                time: window,
                from_link: None,
            });
        }
    }
    while let Some(run) = queue.pop_front() {
        let links = run_dashboard(grafana, dashboards, &run, &mut report).await;
        if run.from_link.is_none() {
            queue.extend(links);
        }
    }
    for ((file, place), (query, answers)) in &report.answers {
        for error in check_columns(query, answers) {
            report.errors.insert(format!("{file}: {place}: {error}"));
        }
    }
    for dashboard in dashboards {
        if !report.linked_runs.contains_key(&dashboard.file) && has_textbox(dashboard) {
            report.errors.insert(format!(
                "{}: no data link leads here with its text box variables filled",
                dashboard.file
            ));
        }
    }
    report
}

fn has_textbox(dashboard: &Dashboard) -> bool {
    variables(dashboard).is_ok_and(|list| {
        list.iter()
            .any(|variable| matches!(variable.kind, VariableKind::Textbox(_)))
    })
}

/// Runs one dashboard for every explored combination of its variables; returns the runs
/// its data links lead to.
async fn run_dashboard(
    grafana: &Grafana,
    dashboards: &[Dashboard],
    run: &Run,
    report: &mut Report,
) -> Vec<Run> {
    let dashboard = &dashboards[run.dashboard];
    let file = dashboard.file.clone();
    let fail = |report: &mut Report, error: String| {
        let origin = run
            .from_link
            .as_ref()
            .map(|from| format!(" (linked from {from})"))
            .unwrap_or_default();
        report.errors.insert(format!("{file}{origin}: {error}"));
    };
    let login = match run.presets.get("suffix").map(String::as_str) {
        Some("") => grafana.scenario.user.clone(),
        Some("/admin") => grafana.scenario.admin.clone(),
        other => {
            fail(
                report,
                format!("suffix {other:?} is neither empty nor /admin"),
            );
            return Vec::new();
        }
    };
    if run.from_link.is_some() {
        *report.linked_runs.entry(file.clone()).or_default() += 1;
    }
    let base_scope = Scope {
        time: Some(run.time),
        user_login: Some(login.clone()),
        ..Scope::default()
    };
    // Resolve the variables in order, branching over a few values of each query variable.
    let list = variables(dashboard).expect("checked before the runs");
    let known: BTreeSet<&str> = list.iter().map(|variable| variable.name.as_str()).collect();
    for name in run.presets.keys() {
        if !known.contains(name.as_str()) {
            fail(
                report,
                format!("the link sets var-{name}, which is not a variable here"),
            );
        }
    }
    let mut assignments = vec![BTreeMap::new()];
    for variable in &list {
        let mut next = Vec::new();
        for assignment in assignments {
            let preset = run.presets.get(&variable.name);
            let values: Vec<String> = match &variable.kind {
                VariableKind::Datasource(_) => {
                    vec![preset.cloned().unwrap_or_else(|| variable.name.clone())]
                }
                VariableKind::Textbox(default) => vec![preset.unwrap_or(default).clone()],
                VariableKind::Custom(options) => {
                    let values: Vec<String> = options.iter().map(|(_, v)| v.clone()).collect();
                    let chosen = preset
                        .or(variable.current.as_ref())
                        .cloned()
                        .or_else(|| values.first().cloned())
                        .unwrap_or_default();
                    if !values.contains(&chosen) {
                        fail(
                            report,
                            format!("{} = {chosen:?} is not one of {values:?}", variable.name),
                        );
                    }
                    vec![chosen]
                }
                VariableKind::Query(query) => {
                    let scope = Scope {
                        variables: assignment.clone(),
                        ..base_scope.clone()
                    };
                    let place = format!("variable {}", variable.name);
                    let rows =
                        run_infinity(grafana, &file, &place, query, &scope, &login, report).await;
                    let mut options: Vec<String> = rows
                        .iter()
                        .filter_map(|row| row_fields(query, row).into_values().next())
                        .filter(|value| !value.is_empty())
                        .collect::<BTreeSet<_>>()
                        .into_iter()
                        .collect();
                    match preset {
                        Some(preset) => {
                            if !options.contains(preset) {
                                fail(
                                    report,
                                    format!(
                                        "{} = {preset:?} is not among its options {options:?} \
                                         for {login}",
                                        variable.name
                                    ),
                                );
                            }
                            vec![preset.clone()]
                        }
                        None if options.is_empty() => vec![String::new()],
                        None => {
                            options.truncate(VALUES_PER_VARIABLE);
                            options
                        }
                    }
                }
            };
            for value in values {
                let mut assignment = assignment.clone();
                assignment.insert(variable.name.clone(), value);
                next.push(assignment);
            }
        }
        assignments = next;
    }

    let queries = match panel_queries(dashboard) {
        Ok(queries) => queries,
        Err(error) => {
            fail(report, error);
            return Vec::new();
        }
    };
    let mut links = Vec::new();
    for assignment in assignments {
        report.runs += 1;
        let scope = Scope {
            variables: assignment,
            ..base_scope.clone()
        };
        for query in &queries {
            let place = format!("panel {} query {}", query.panel, query.ref_id);
            match &query.kind {
                PanelQueryKind::Prometheus(expr) => {
                    let prom_scope = Scope {
                        promql_globals: true,
                        ..scope.clone()
                    };
                    match interpolate(expr, &prom_scope) {
                        Ok(expr) => {
                            report
                                .promql
                                .entry((file.clone(), place))
                                .or_default()
                                .insert(expr);
                        }
                        Err(error) => fail(report, format!("{place}: {error}")),
                    }
                }
                PanelQueryKind::Infinity(infinity) => {
                    let rows =
                        run_infinity(grafana, &file, &place, infinity, &scope, &login, report)
                            .await;
                    for link in &query.links {
                        let Some(row) = rows.first() else { continue };
                        let link_scope = Scope {
                            row: Some(row_fields(infinity, row)),
                            ..scope.clone()
                        };
                        let target = interpolate(link, &link_scope)
                            .map_err(|error| format!("{place}: link: {error}"))
                            .and_then(|url| parse_dashboard_link(&url));
                        let target = match target {
                            Ok(target) => target,
                            Err(error) => {
                                fail(report, error);
                                continue;
                            }
                        };
                        let Some(index) = dashboards
                            .iter()
                            .position(|dashboard| dashboard.uid() == target.uid)
                        else {
                            fail(
                                report,
                                format!("{place}: link to unknown uid {}", target.uid),
                            );
                            continue;
                        };
                        if !target.variables.contains_key("suffix") {
                            fail(report, format!("{place}: link does not carry var-suffix"));
                            continue;
                        }
                        links.push(Run {
                            dashboard: index,
                            presets: target.variables,
                            time: target.time.unwrap_or(run.time),
                            from_link: Some(format!("{file} {place}")),
                        });
                    }
                }
            }
        }
    }
    links
}

/// Sends one Infinity query and records its answer; an empty list when it failed.
async fn run_infinity(
    grafana: &Grafana,
    file: &str,
    place: &str,
    query: &InfinityQuery,
    scope: &Scope,
    login: &str,
    report: &mut Report,
) -> Vec<Value> {
    let target = match query.request_target(scope) {
        Ok(target) => target,
        Err(error) => {
            report.errors.insert(format!("{file}: {place}: {error}"));
            return Vec::new();
        }
    };
    for error in check_static(query, &target) {
        report.errors.insert(format!("{file}: {place}: {error}"));
    }
    report.requests += 1;
    let rows = match grafana.rows(&target, login).await {
        Ok(rows) => rows,
        Err(error) => {
            report.errors.insert(format!("{file}: {place}: {error}"));
            return Vec::new();
        }
    };
    report
        .answers
        .entry((file.to_owned(), place.to_owned()))
        .or_insert_with(|| (query.clone(), Vec::new()))
        .1
        .push(rows.clone());
    rows
}
