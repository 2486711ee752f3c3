//! What Grafana and the Infinity plugin do with a dashboard file, without Grafana: the
//! variables, the interpolation of `$var` / `${var:format}` / `[[var]]` and the time
//! macros, the request an Infinity query becomes, the gjson selectors of its columns, and
//! the data links between dashboards. Pure functions; the HTTP side is in `runner.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::LazyLock;

use regex::Regex;
use serde_json::Value;

pub const INFINITY: &str = "yesoreyeram-infinity-datasource";
pub const PROMETHEUS: &str = "prometheus";

/// One dashboard file.
#[derive(Clone, Debug)]
pub struct Dashboard {
    pub file: String,
    pub json: Value,
}

impl Dashboard {
    pub fn uid(&self) -> &str {
        self.json["uid"].as_str().unwrap_or("")
    }
}

/// Every `*.json` file of `dir`, sorted by name.
pub fn load_dashboards(dir: &Path) -> Vec<Dashboard> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|error| panic!("{}: {error}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("dashboard readable");
            let json = serde_json::from_str(&text)
                .unwrap_or_else(|error| panic!("{}: not JSON: {error}", path.display()));
            let file = path.file_name().unwrap().to_string_lossy().into_owned();
            Dashboard { file, json }
        })
        .collect()
}

// ------------------------------------------------------------------------------------
// Interpolation

/// The dashboard time range, epoch milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeRange {
    pub from_ms: i64,
    pub to_ms: i64,
}

/// Everything a `$…` may refer to while one query is interpolated.
#[derive(Clone, Debug, Default)]
pub struct Scope {
    /// Dashboard variables (name → the single selected value).
    pub variables: BTreeMap<String, String>,
    pub time: Option<TimeRange>,
    pub user_login: Option<String>,
    /// `${__data.fields.<name>}` of a data link: the clicked row, by field name.
    pub row: Option<BTreeMap<String, String>>,
    /// Prometheus-only globals (`$__rate_interval`, …).
    pub promql_globals: bool,
}

/// Grafana's variable pattern: `$name`, `[[name:format]]`, `${name.path:format}`.
static VARIABLE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?:\.([^:^\}]+))?(?::([^\}]+))?\}")
        .expect("variable regex")
});

/// Replaces every variable of `text` the way Grafana's template service does for a
/// single-valued variable, and fails on what Grafana would leave unresolved (an unknown
/// variable, a format the dashboards have no business using, a link-only variable in a
/// query).
pub fn interpolate(text: &str, scope: &Scope) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for captures in VARIABLE.captures_iter(text) {
        let whole = captures.get(0).unwrap();
        out.push_str(&text[last..whole.start()]);
        last = whole.end();
        let name = captures
            .get(1)
            .or(captures.get(2))
            .or(captures.get(4))
            .unwrap()
            .as_str();
        let path = captures.get(5).map(|m| m.as_str());
        let format = captures.get(3).or(captures.get(6)).map(|m| m.as_str());
        out.push_str(
            &resolve(name, path, format, scope)
                .map_err(|error| format!("{}: {error} (in {text:?})", whole.as_str()))?,
        );
    }
    out.push_str(&text[last..]);
    Ok(out)
}

fn resolve(
    name: &str,
    path: Option<&str>,
    format: Option<&str>,
    scope: &Scope,
) -> Result<String, String> {
    match name {
        "__from" | "__to" => {
            let time = scope.time.ok_or("no time range here")?;
            let ms = if name == "__from" {
                time.from_ms
            } else {
                time.to_ms
            };
            match format {
                None => Ok(ms.to_string()),
                Some("date:seconds") => Ok(ms.div_euclid(1000).to_string()),
                Some(other) => Err(format!("time format {other:?} is not epoch seconds or ms")),
            }
        }
        "__user" => match (path, &scope.user_login) {
            (Some("login"), Some(login)) => Ok(login.clone()),
            _ => Err("only ${__user.login} is known".to_owned()),
        },
        "__data" => {
            let row = scope.row.as_ref().ok_or("only data links know ${__data}")?;
            let field = path
                .and_then(|path| path.strip_prefix("fields."))
                .ok_or("only ${__data.fields.<name>} is known")?;
            row.get(field)
                .cloned()
                .ok_or_else(|| format!("the panel has no field {field:?}"))
        }
        "__rate_interval" | "__interval" | "__range" if scope.promql_globals => {
            Ok(if name == "__interval" { "15s" } else { "1m" }.to_owned())
        }
        _ => {
            let value = scope
                .variables
                .get(name)
                .ok_or_else(|| format!("unknown variable {name:?}"))?;
            if path.is_some() {
                return Err(format!("variable {name:?} has no fields"));
            }
            match format {
                None | Some("raw") | Some("glob") | Some("text") => Ok(value.clone()),
                Some(other) => Err(format!("format {other:?} is not checked here")),
            }
        }
    }
}

// ------------------------------------------------------------------------------------
// Variables

#[derive(Clone, Debug, PartialEq)]
pub enum VariableKind {
    /// A data source picker of this plugin id.
    Datasource(String),
    /// `(text, value)` options of a custom variable, as Grafana parses its query.
    Custom(Vec<(String, String)>),
    /// A free text box and its default.
    Textbox(String),
    /// Options from an Infinity query; the values are the first column.
    Query(Box<InfinityQuery>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Variable {
    pub name: String,
    pub kind: VariableKind,
    /// The saved selection (`current.value`), if any.
    pub current: Option<String>,
}

/// Grafana's parsing of a custom variable: comma-separated items (`\,` escapes a comma),
/// each `text : value` or a bare value; text and value are trimmed.
pub fn custom_options(query: &str) -> Vec<(String, String)> {
    static ITEM: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"(?:\\,|[^,])+").expect("item regex"));
    static PAIR: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"^\s*(.+)\s:\s(.+)$").expect("pair regex"));
    ITEM.find_iter(query)
        .map(|item| {
            let item = item.as_str().replace("\\,", ",");
            match PAIR.captures(&item) {
                Some(pair) => (pair[1].trim().to_owned(), pair[2].trim().to_owned()),
                None => (item.trim().to_owned(), item.trim().to_owned()),
            }
        })
        .collect()
}

/// The dashboard's template variables, in order.
pub fn variables(dashboard: &Dashboard) -> Result<Vec<Variable>, String> {
    let list = dashboard.json["templating"]["list"]
        .as_array()
        .ok_or("no templating.list")?;
    list.iter()
        .map(|variable| {
            let name = variable["name"].as_str().ok_or("variable without name")?;
            let query = &variable["query"];
            let kind = match variable["type"].as_str().unwrap_or("") {
                "datasource" => VariableKind::Datasource(query.as_str().unwrap_or("").to_owned()),
                "custom" => VariableKind::Custom(custom_options(query.as_str().unwrap_or(""))),
                "textbox" => VariableKind::Textbox(query.as_str().unwrap_or("").to_owned()),
                "query" => {
                    let datasource = datasource_type(&variable["datasource"]);
                    if datasource != INFINITY {
                        return Err(format!("variable {name}: data source {datasource:?}"));
                    }
                    if query["queryType"] != "infinity" {
                        return Err(format!("variable {name}: not an Infinity query"));
                    }
                    let infinity = InfinityQuery::parse(&query["infinityQuery"])
                        .map_err(|error| format!("variable {name}: {error}"))?;
                    VariableKind::Query(Box::new(infinity))
                }
                other => return Err(format!("variable {name}: type {other:?} is not handled")),
            };
            let current = variable["current"]["value"].as_str().map(str::to_owned);
            Ok(Variable {
                name: name.to_owned(),
                kind,
                current,
            })
        })
        .collect()
}

fn datasource_type(datasource: &Value) -> String {
    datasource["type"].as_str().unwrap_or("").to_owned()
}

// ------------------------------------------------------------------------------------
// Infinity queries

#[derive(Clone, Debug, PartialEq)]
pub struct Column {
    pub selector: String,
    pub text: String,
}

/// The parts of an Infinity query that make the request and the table.
#[derive(Clone, Debug, PartialEq)]
pub struct InfinityQuery {
    pub url: String,
    pub params: Vec<(String, String)>,
    pub root_selector: String,
    pub columns: Vec<Column>,
}

impl InfinityQuery {
    /// Accepts only what these dashboards should use: a JSON GET on a URL, the backend
    /// parser, root selector `data` and plain columns.
    pub fn parse(query: &Value) -> Result<InfinityQuery, String> {
        let expect = |key: &str, wanted: &str| {
            if query[key] == wanted {
                Ok(())
            } else {
                Err(format!("{key} is {} (want {wanted:?})", query[key]))
            }
        };
        expect("type", "json")?;
        expect("source", "url")?;
        expect("parser", "backend")?;
        let method = query["url_options"]["method"].as_str().unwrap_or("GET");
        if method != "GET" {
            return Err(format!("method {method} (the API answers GET only)"));
        }
        let params = query["url_options"]["params"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|param| {
                (
                    param["key"].as_str().unwrap_or("").to_owned(),
                    param["value"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect();
        let columns = query["columns"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|column| Column {
                selector: column["selector"].as_str().unwrap_or("").to_owned(),
                text: column["text"].as_str().unwrap_or("").to_owned(),
            })
            .collect();
        Ok(InfinityQuery {
            url: query["url"].as_str().ok_or("no url")?.to_owned(),
            params,
            root_selector: query["root_selector"].as_str().unwrap_or("").to_owned(),
            columns,
        })
    }

    /// The path and query string the Infinity backend sends: the interpolated URL, then
    /// every param added in order (repeated keys kept) and encoded with keys sorted, as
    /// Go's `url.Values.Encode` does. Infinity interpolates the URL and the param values,
    /// nothing else.
    pub fn request_target(&self, scope: &Scope) -> Result<String, String> {
        let url = interpolate(&self.url, scope)?;
        let (path, query) = url.split_once('?').unwrap_or((&url, ""));
        let mut pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        for (key, value) in &self.params {
            pairs.push((key.clone(), interpolate(value, scope)?));
        }
        // A stable sort keeps the order of the values of one key.
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        let mut encoded = form_urlencoded::Serializer::new(String::new());
        for (key, value) in &pairs {
            encoded.append_pair(key, value);
        }
        let encoded = encoded.finish();
        Ok(if encoded.is_empty() {
            path.to_owned()
        } else {
            format!("{path}?{encoded}")
        })
    }
}

/// A gjson path as the backend parser reads a column: dot-separated keys. Anything
/// fancier (wildcards, `#`, `|`, modifiers, escapes) is refused: the dashboards do not need
/// it and the checker would not model it.
pub fn select<'a>(row: &'a Value, selector: &str) -> Result<Option<&'a Value>, String> {
    if selector.is_empty()
        || selector
            .chars()
            .any(|c| matches!(c, '*' | '?' | '#' | '|' | '@' | '\\' | '$' | '{' | '['))
    {
        return Err(format!("selector {selector:?} is not a plain dotted path"));
    }
    let mut value = row;
    for key in selector.split('.') {
        match value.get(key) {
            Some(next) => value = next,
            None => return Ok(None),
        }
    }
    Ok(if value.is_null() { None } else { Some(value) })
}

// ------------------------------------------------------------------------------------
// The API's models, to check fields and selectors without data

const UNIT_FIELDS: &[&str] = &[
    "cluster_id",
    "resource_manager",
    "uuid",
    "name",
    "project",
    "groupname",
    "username",
    "created_at",
    "started_at",
    "ended_at",
    "created_at_ts",
    "started_at_ts",
    "ended_at_ts",
    "elapsed",
    "state",
    "allocation",
    "total_time_seconds",
    "avg_cpu_usage",
    "avg_cpu_mem_usage",
    "total_cpu_energy_usage_kwh",
    "total_cpu_emissions_gms",
    "avg_gpu_usage",
    "avg_gpu_mem_usage",
    "total_gpu_energy_usage_kwh",
    "total_gpu_emissions_gms",
    "total_io_write_stats",
    "total_io_read_stats",
    "total_ingress_stats",
    "total_egress_stats",
    "tags",
];
const USAGE_FIELDS: &[&str] = &[
    "cluster_id",
    "resource_manager",
    "num_units",
    "project",
    "groupname",
    "username",
    "total_time_seconds",
    "avg_cpu_usage",
    "avg_cpu_mem_usage",
    "total_cpu_energy_usage_kwh",
    "total_cpu_emissions_gms",
    "avg_gpu_usage",
    "avg_gpu_mem_usage",
    "total_gpu_energy_usage_kwh",
    "total_gpu_emissions_gms",
    "total_io_write_stats",
    "total_io_read_stats",
    "total_ingress_stats",
    "total_egress_stats",
];
const PROJECT_KEYS: &[&str] = &[
    "uid",
    "cluster_id",
    "resource_manager",
    "name",
    "users",
    "tags",
];
const USER_KEYS: &[&str] = &[
    "uid",
    "cluster_id",
    "resource_manager",
    "name",
    "projects",
    "tags",
];
const CLUSTER_KEYS: &[&str] = &["id", "manager"];
const STAT_KEYS: &[&str] = &[
    "cluster_id",
    "resource_manager",
    "num_units",
    "num_inactive_units",
    "num_active_units",
    "num_projects",
    "num_users",
];

/// A route of the API: the keys of its rows and whether it takes `field`.
pub struct Route {
    pub keys: &'static [&'static str],
    pub takes_fields: bool,
}

/// The route an interpolated path names, or why it names none.
pub fn route(path: &str) -> Result<Route, String> {
    let rest = path
        .strip_prefix("/api/v1/")
        .ok_or_else(|| format!("{path}: not under /api/v1"))?;
    let (rest, admin) = match rest.strip_suffix("/admin") {
        Some(rest) => (rest, true),
        None => (rest, false),
    };
    let (keys, takes_fields, admin_only): (&'static [&'static str], bool, bool) = match rest {
        "units" => (UNIT_FIELDS, true, false),
        "usage/current" | "usage/global" => (USAGE_FIELDS, true, false),
        "projects" => (PROJECT_KEYS, false, false),
        "users" => (USER_KEYS, false, false),
        "clusters" => (CLUSTER_KEYS, false, true),
        "stats/current" | "stats/global" => (STAT_KEYS, false, true),
        _ => return Err(format!("{path}: no such route")),
    };
    if admin_only && !admin {
        return Err(format!("{path}: only the /admin form of this route exists"));
    }
    Ok(Route { keys, takes_fields })
}

/// Checks a query against the API's models before any data: a known route, valid `field`
/// values (the server silently drops others), and each column's first key among what the
/// route returns with these fields. `target` is the interpolated path and query.
pub fn check_static(query: &InfinityQuery, target: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if query.root_selector != "data" {
        errors.push(format!(
            "root_selector is {:?}; the envelope's rows are under \"data\"",
            query.root_selector
        ));
    }
    let (path, query_string) = target.split_once('?').unwrap_or((target, ""));
    let route = match route(path) {
        Ok(route) => route,
        Err(error) => {
            errors.push(error);
            return errors;
        }
    };
    let fields: BTreeSet<String> = form_urlencoded::parse(query_string.as_bytes())
        .filter(|(key, _)| key == "field")
        .map(|(_, value)| value.trim().to_owned())
        .collect();
    if !fields.is_empty() && !route.takes_fields {
        errors.push(format!("{path} takes no field parameter"));
    }
    for field in &fields {
        if !route.keys.contains(&field.as_str()) {
            errors.push(format!("field={field} is not a field of {path}"));
        }
    }
    for column in &query.columns {
        if let Err(error) = select(&Value::Null, &column.selector) {
            errors.push(error);
            continue;
        }
        let first = column.selector.split('.').next().unwrap_or("");
        if !route.keys.contains(&first) {
            errors.push(format!(
                "column {:?}: {first:?} is not in the rows of {path}",
                column.selector
            ));
        } else if route.takes_fields && !fields.is_empty() && !fields.contains(first) {
            errors.push(format!(
                "column {:?}: {first:?} is not among the requested fields",
                column.selector
            ));
        }
    }
    errors
}

/// Checks the answers one query got over all the runs of its dashboard: every column must
/// resolve to a value in at least one row, and at least one answer must have rows.
pub fn check_columns(query: &InfinityQuery, answers: &[Vec<Value>]) -> Vec<String> {
    let mut errors = Vec::new();
    if answers.iter().all(Vec::is_empty) {
        errors.push(format!(
            "{}: no rows in any of {} runs",
            query.url,
            answers.len()
        ));
        return errors;
    }
    for column in &query.columns {
        let mut found = false;
        for row in answers.iter().flatten() {
            match select(row, &column.selector) {
                Ok(Some(_)) => {
                    found = true;
                    break;
                }
                Ok(None) => {}
                Err(error) => {
                    errors.push(error);
                    found = true;
                    break;
                }
            }
        }
        if !found {
            let rows: usize = answers.iter().map(Vec::len).sum();
            errors.push(format!(
                "{}: column {:?} ({}) is in none of the {rows} rows",
                query.url, column.selector, column.text
            ));
        }
    }
    errors
}

/// A row as a panel's fields see it: column text → the selected value as text (empty
/// when absent, as Grafana renders a null in a link).
pub fn row_fields(query: &InfinityQuery, row: &Value) -> BTreeMap<String, String> {
    query
        .columns
        .iter()
        .map(|column| {
            let text = match select(row, &column.selector) {
                Ok(Some(Value::String(text))) => text.clone(),
                Ok(Some(other)) => other.to_string(),
                _ => String::new(),
            };
            (column.text.clone(), text)
        })
        .collect()
}

// ------------------------------------------------------------------------------------
// Panels

/// One query of one panel.
#[derive(Clone, Debug)]
pub struct PanelQuery {
    /// `<id> "<title>"`: titles need not be unique, ids are.
    pub panel: String,
    pub ref_id: String,
    pub kind: PanelQueryKind,
    /// Data links of the panel (URLs as written).
    pub links: Vec<String>,
}

#[derive(Clone, Debug)]
pub enum PanelQueryKind {
    Infinity(InfinityQuery),
    Prometheus(String),
}

/// Every panel, rows' nested panels included.
pub fn panels(dashboard: &Dashboard) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for panel in list.as_array().map(Vec::as_slice).unwrap_or_default() {
            out.push(panel);
            walk(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard.json["panels"], &mut out);
    out
}

fn panel_links(panel: &Value) -> Vec<String> {
    let mut links = Vec::new();
    let mut add = |list: &Value| {
        for link in list.as_array().map(Vec::as_slice).unwrap_or_default() {
            if let Some(url) = link["url"].as_str() {
                links.push(url.to_owned());
            }
        }
    };
    add(&panel["fieldConfig"]["defaults"]["links"]);
    for override_ in panel["fieldConfig"]["overrides"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        for property in override_["properties"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            if property["id"] == "links" {
                add(&property["value"]);
            }
        }
    }
    links
}

/// The queries of every panel. The data source must be one of the dashboard's data source
/// variables (`${ceems_api}`, `${prometheus}`), never a fixed uid.
pub fn panel_queries(dashboard: &Dashboard) -> Result<Vec<PanelQuery>, String> {
    let mut out = Vec::new();
    for panel in panels(dashboard) {
        let title = panel["title"].as_str().unwrap_or("").to_owned();
        let targets = panel["targets"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        if panel["type"] != "row" && panel["type"] != "text" && targets.is_empty() {
            return Err(format!("panel {title:?} has no query"));
        }
        for target in targets {
            let datasource = if target["datasource"].is_object() {
                &target["datasource"]
            } else {
                &panel["datasource"]
            };
            let ref_id = target["refId"].as_str().unwrap_or("").to_owned();
            let here = format!("panel {title:?} query {ref_id}");
            let (kind, variable) = match datasource_type(datasource).as_str() {
                INFINITY => (
                    PanelQueryKind::Infinity(
                        InfinityQuery::parse(target).map_err(|error| format!("{here}: {error}"))?,
                    ),
                    "${ceems_api}",
                ),
                PROMETHEUS => (
                    PanelQueryKind::Prometheus(
                        target["expr"]
                            .as_str()
                            .ok_or_else(|| format!("{here}: no expr"))?
                            .to_owned(),
                    ),
                    "${prometheus}",
                ),
                other => return Err(format!("{here}: data source type {other:?}")),
            };
            if datasource["uid"] != variable {
                return Err(format!(
                    "{here}: data source uid {} (want {variable})",
                    datasource["uid"]
                ));
            }
            out.push(PanelQuery {
                panel: format!("{} {title:?}", panel["id"]),
                ref_id,
                kind,
                links: panel_links(panel),
            });
        }
    }
    Ok(out)
}

/// A data link to another dashboard, resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct DashboardLink {
    pub uid: String,
    pub variables: BTreeMap<String, String>,
    pub time: Option<TimeRange>,
}

/// Parses an interpolated link `/d/<uid>[/<slug>]?var-x=…&from=…&to=…`. An empty or
/// missing `from`/`to` leaves the target's own time range (None).
pub fn parse_dashboard_link(url: &str) -> Result<DashboardLink, String> {
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    let uid = path
        .strip_prefix("/d/")
        .and_then(|rest| rest.split('/').next())
        .filter(|uid| !uid.is_empty())
        .ok_or_else(|| format!("link {url:?} is not /d/<uid>/…"))?;
    let mut variables = BTreeMap::new();
    let (mut from, mut to) = (None, None);
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        if let Some(name) = key.strip_prefix("var-") {
            variables.insert(name.to_owned(), value.into_owned());
        } else if key == "from" {
            from = value.parse::<i64>().ok();
        } else if key == "to" {
            to = value.parse::<i64>().ok();
        } else {
            return Err(format!("link {url:?}: unexpected parameter {key:?}"));
        }
    }
    let time = match (from, to) {
        (Some(from_ms), Some(to_ms)) => Some(TimeRange { from_ms, to_ms }),
        _ => None,
    };
    Ok(DashboardLink {
        uid: uid.to_owned(),
        variables,
        time,
    })
}

// ------------------------------------------------------------------------------------
// Import format

/// What Grafana 10/11 needs to import the file: a schema version it migrates from, a
/// uid, `__inputs` whose names are used and `__requires` naming every panel type, unique
/// panel ids, and every `$…` in titles and queries resolvable.
pub fn check_import_format(dashboard: &Dashboard) -> Vec<String> {
    let json = &dashboard.json;
    let mut errors = Vec::new();
    let schema = json["schemaVersion"].as_i64().unwrap_or(0);
    if !(38..=39).contains(&schema) {
        errors.push(format!("schemaVersion {schema} (want 38 or 39)"));
    }
    if dashboard.uid().is_empty() || dashboard.uid().len() > 40 {
        errors.push("uid missing or longer than 40 characters".to_owned());
    }
    if json["title"].as_str().unwrap_or("").is_empty() {
        errors.push("no title".to_owned());
    }
    if !json["id"].is_null() {
        errors.push("id must be null in a file meant for import".to_owned());
    }
    let text = json.to_string();
    for input in json["__inputs"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let name = input["name"].as_str().unwrap_or("");
        if !text.contains(&format!("${{{name}}}")) {
            errors.push(format!("__inputs {name} is never used"));
        }
    }
    let required: BTreeSet<&str> = json["__requires"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter_map(|require| require["id"].as_str())
        .collect();
    if !required.contains("grafana") {
        errors.push("__requires does not name grafana".to_owned());
    }
    let mut ids = BTreeSet::new();
    for panel in panels(dashboard) {
        let kind = panel["type"].as_str().unwrap_or("");
        if kind != "row" && !required.contains(kind) {
            errors.push(format!("panel type {kind} is not in __requires"));
        }
        if !panel["id"].as_i64().is_some_and(|id| ids.insert(id)) {
            errors.push(format!("panel {} has no unique id", panel["title"]));
        }
        if !panel["gridPos"]["w"].is_u64() || !panel["gridPos"]["h"].is_u64() {
            errors.push(format!("panel {} has no gridPos", panel["title"]));
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn scope() -> Scope {
        Scope {
            variables: BTreeMap::from([
                ("cluster_id".to_owned(), "slurm-0".to_owned()),
                ("suffix".to_owned(), "/admin".to_owned()),
            ]),
            time: Some(TimeRange {
                from_ms: 1_704_841_200_999,
                to_ms: 1_704_927_600_000,
            }),
            user_login: Some("usr1".to_owned()),
            row: None,
            promql_globals: false,
        }
    }

    #[test]
    fn every_variable_syntax_and_the_time_macros() {
        let text = "$cluster_id ${cluster_id} ${cluster_id:raw} [[cluster_id]] \
                    ${__from:date:seconds} ${__to:date:seconds} $__from $__to ${__user.login}";
        assert_eq!(
            interpolate(text, &scope()).unwrap(),
            "slurm-0 slurm-0 slurm-0 slurm-0 1704841200 1704927600 1704841200999 \
             1704927600000 usr1"
        );
    }

    #[test]
    fn unresolvable_variables_are_errors() {
        for text in [
            "$clusterid",
            "${cluster_id:csv}",
            "${__from:date:YYYY}",
            "${__data.fields.uuid}",
            "$__rate_interval",
        ] {
            assert!(interpolate(text, &scope()).is_err(), "{text}");
        }
    }

    #[test]
    fn custom_variable_values_as_grafana_parses_them() {
        assert_eq!(
            custom_options("user :  ,admin : /admin"),
            vec![
                ("user".to_owned(), String::new()),
                ("admin".to_owned(), "/admin".to_owned())
            ]
        );
        assert_eq!(
            custom_options(r"a\,b, c"),
            vec![
                ("a,b".to_owned(), "a,b".to_owned()),
                ("c".to_owned(), "c".to_owned())
            ]
        );
    }

    fn units_query(selector: &str) -> InfinityQuery {
        InfinityQuery {
            url: "/api/v1/units${suffix}".to_owned(),
            params: vec![
                ("cluster_id".to_owned(), "${cluster_id}".to_owned()),
                ("field".to_owned(), "uuid".to_owned()),
                ("field".to_owned(), "avg_cpu_usage".to_owned()),
                ("from".to_owned(), "${__from:date:seconds}".to_owned()),
            ],
            root_selector: "data".to_owned(),
            columns: vec![
                Column {
                    selector: "uuid".to_owned(),
                    text: "uuid".to_owned(),
                },
                Column {
                    selector: selector.to_owned(),
                    text: "CPU".to_owned(),
                },
            ],
        }
    }

    #[test]
    fn the_request_is_what_infinity_sends() {
        assert_eq!(
            units_query("avg_cpu_usage.global")
                .request_target(&scope())
                .unwrap(),
            "/api/v1/units/admin?cluster_id=slurm-0&field=uuid&field=avg_cpu_usage\
             &from=1704841200"
        );
    }

    #[test]
    fn a_broken_selector_is_caught() {
        let rows = vec![
            json!({"uuid": "1", "avg_cpu_usage": {"global": 50}}),
            json!({"uuid": "2"}),
        ];
        let good = units_query("avg_cpu_usage.global");
        assert_eq!(
            check_columns(&good, std::slice::from_ref(&rows)),
            Vec::<String>::new()
        );
        // A typo in the key, and a metric key that the rows do not have.
        for selector in ["avg_cpu_usage.globl", "avg_cpu_usage.total"] {
            let errors = check_columns(&units_query(selector), std::slice::from_ref(&rows));
            assert_eq!(
                errors,
                vec![format!(
                    "/api/v1/units${{suffix}}: column {selector:?} (CPU) is in none of the 2 rows"
                )]
            );
        }
        // No rows at all: the panel shows nothing.
        assert_eq!(
            check_columns(&good, &[vec![], vec![]]),
            vec!["/api/v1/units${suffix}: no rows in any of 2 runs".to_owned()]
        );
    }

    #[test]
    fn wrong_routes_fields_and_columns_are_caught_before_any_data() {
        let query = units_query("avg_cpu_usage.global");
        let target = query.request_target(&scope()).unwrap();
        assert_eq!(check_static(&query, &target), Vec::<String>::new());

        let mut wrong_field = query.clone();
        wrong_field.params[2].1 = "avg_cpu".to_owned();
        let target = wrong_field.request_target(&scope()).unwrap();
        assert_eq!(
            check_static(&wrong_field, &target),
            vec![
                "field=avg_cpu is not a field of /api/v1/units/admin".to_owned(),
                "column \"avg_cpu_usage.global\": \"avg_cpu_usage\" is not among the \
                 requested fields"
                    .to_owned()
            ]
        );

        let mut wrong_route = query.clone();
        wrong_route.url = "/api/v1/unit${suffix}".to_owned();
        let target = wrong_route.request_target(&scope()).unwrap();
        assert_eq!(
            check_static(&wrong_route, &target),
            vec!["/api/v1/unit/admin: no such route".to_owned()]
        );

        let mut user_stats = query.clone();
        user_stats.url = "/api/v1/stats/current".to_owned();
        user_stats.params.truncate(1);
        let target = user_stats.request_target(&scope()).unwrap();
        assert_eq!(
            check_static(&user_stats, &target),
            vec!["/api/v1/stats/current: only the /admin form of this route exists".to_owned()]
        );

        let mut fancy = query.clone();
        fancy.columns[1].selector = "avg_cpu_usage.*".to_owned();
        fancy.root_selector = "$.data".to_owned();
        let target = fancy.request_target(&scope()).unwrap();
        assert_eq!(
            check_static(&fancy, &target),
            vec![
                "root_selector is \"$.data\"; the envelope's rows are under \"data\"".to_owned(),
                "selector \"avg_cpu_usage.*\" is not a plain dotted path".to_owned()
            ]
        );
    }

    #[test]
    fn links_name_a_dashboard_its_variables_and_a_time_range() {
        let link = parse_dashboard_link(
            "/d/ceems-job/x?var-uuid=1001&var-suffix=&from=1704876900000&to=1704884400000",
        )
        .unwrap();
        assert_eq!(link.uid, "ceems-job");
        assert_eq!(link.variables["uuid"], "1001");
        assert_eq!(link.variables["suffix"], "");
        assert_eq!(
            link.time,
            Some(TimeRange {
                from_ms: 1_704_876_900_000,
                to_ms: 1_704_884_400_000
            })
        );
        // A running unit has no end: the target keeps its own range.
        let running = parse_dashboard_link("/d/ceems-job?var-uuid=1003&from=1&to=").unwrap();
        assert_eq!(running.time, None);
        assert!(parse_dashboard_link("/dashboards/x").is_err());
    }
}
