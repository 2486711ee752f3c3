//! The SQL behind every read route, built from typed queries with bound parameters only.
//!
//! Access rules live here, in one place, as SQL predicates derived from the query's
//! [`Scope`]: a user sees their own units, and the rows of projects they are a member of
//! *in the same cluster*; an admin sees what the filters select.

use std::borrow::Cow;

use chrono_tz::Tz;
use rusqlite::types::{Value, ValueRef};
use rusqlite::{params_from_iter, Connection, OptionalExtension, Row};

use super::{flat_json, log_statement, StorageError};
use crate::model::json::{decode_text_lossy, write_go_json};
use crate::model::time::convert_dtz;
use crate::model::{
    Cluster, CurrentUsageQuery, DtWindow, Filters, Generic, GlobalUsageQuery, List, Metric,
    MetricMap, Project, ProjectQuery, Rows, Scope, Stat, StatsQuery, UnitField, UnitQuery, Usage,
    UsageField, User, UserQuery, VerifyQuery,
};

/// A SQL statement under construction, with its positional parameters.
#[derive(Debug, Default)]
struct Sql {
    text: String,
    params: Vec<Value>,
}

impl Sql {
    fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    fn bind(&mut self, value: impl Into<Value>) -> &mut Self {
        self.params.push(value.into());
        self.text.push('?');
        self
    }

    /// `(?, ?, ...)` with one parameter per value.
    fn bind_list<S: AsRef<str>>(&mut self, values: &[S]) -> &mut Self {
        self.text.push('(');
        for (index, value) in values.iter().enumerate() {
            if index > 0 {
                self.text.push_str(", ");
            }
            self.bind(value.as_ref().to_owned());
        }
        self.text.push(')');
        self
    }

    /// `SELECT a, b, c`.
    fn select<'a>(&mut self, columns: impl Iterator<Item = &'a str>) -> &mut Self {
        self.push("SELECT ");
        for (index, column) in columns.enumerate() {
            if index > 0 {
                self.push(", ");
            }
            self.push(column);
        }
        self
    }

    /// The window predicate on `ended_at` (text comparison of `DT` bounds with the stored
    /// `DTZ`, as the reference does), optionally OR still running.
    fn and_ended_in(&mut self, window: &DtWindow, or_running: bool) -> &mut Self {
        self.push(" AND (ended_at BETWEEN ")
            .bind(window.from.clone())
            .push(" AND ")
            .bind(window.to.clone());
        if or_running {
            self.push(" OR ended_at_ts = 0");
        }
        self.push(")")
    }

    /// ` AND column IN (...)` when `values` is non-empty.
    fn and_in<S: AsRef<str>>(&mut self, column: &str, values: &[S]) -> &mut Self {
        if !values.is_empty() {
            self.push(" AND ").push(column).push(" IN ");
            self.bind_list(values);
        }
        self
    }
}

/// The member lists of projects, tolerant of a corrupt JSON column.
const MEMBERS: &str = "json_each(CASE WHEN json_valid(p.users) THEN p.users ELSE '[]' END) m";

/// `(cluster_id, project)` pairs of the projects any of `users` is a member of.
fn memberships_of(sql: &mut Sql, users: &[String]) {
    sql.push("SELECT p.cluster_id, p.name FROM projects p, ")
        .push(MEMBERS)
        .push(" WHERE m.value IN ");
    sql.bind_list(users);
}

/// `(cluster_id, project)` pairs of every project that has at least one member.
const PROJECTS_WITH_MEMBERS: &str = "SELECT p.cluster_id, p.name FROM projects p \
     WHERE json_valid(p.users) AND json_type(p.users) = 'array' \
     AND json_array_length(p.users) > 0";

/// The `<project>:svc` service accounts of k8s namespaces named in the filters.
fn service_accounts(projects: &[String]) -> Vec<String> {
    projects
        .iter()
        .map(|project| format!("{project}:svc"))
        .collect()
}

/// Admin user list: the `user` params plus the service accounts of the named projects,
/// empty when no user was named (then no user filter applies).
fn admin_user_list(filters: &Filters) -> Vec<String> {
    if filters.users.is_empty() {
        return Vec::new();
    }
    let mut users = filters.users.clone();
    users.extend(service_accounts(&filters.projects));
    users
}

/// Appends the scope predicate on rows that have `cluster_id` and `project` columns and
/// are aggregated per project (usage tables): members see their projects' rows.
fn and_project_scope(sql: &mut Sql, scope: &Scope, filters: &Filters) {
    sql.push(" AND (cluster_id, project) IN (");
    match scope {
        Scope::User(user) => memberships_of(sql, std::slice::from_ref(user)),
        Scope::Admin => {
            let users = admin_user_list(filters);
            if users.is_empty() {
                sql.push(PROJECTS_WITH_MEMBERS);
            } else {
                memberships_of(sql, &users);
            }
        }
    }
    sql.push(")");
}

/// Reads a TEXT column (NULL and other types as the empty string), invalid UTF-8 replaced
/// byte by byte as Go does.
fn text(row: &Row<'_>, index: usize) -> rusqlite::Result<String> {
    Ok(match row.get_ref(index)? {
        ValueRef::Text(bytes) | ValueRef::Blob(bytes) => decode_text_lossy(bytes),
        ValueRef::Integer(value) => value.to_string(),
        ValueRef::Real(value) => value.to_string(),
        ValueRef::Null => String::new(),
    })
}

/// Reads a TEXT column as [`text`] does, borrowing it when it is valid UTF-8.
fn text_cow<'row>(row: &'row Row<'_>, index: usize) -> rusqlite::Result<Cow<'row, str>> {
    Ok(match stored_text(row, index)? {
        Some(text) => Cow::Borrowed(text),
        None => Cow::Owned(text(row, index)?),
    })
}

/// A TEXT column's text when it is valid UTF-8.
fn stored_text<'row>(row: &'row Row<'_>, index: usize) -> rusqlite::Result<Option<&'row str>> {
    Ok(match row.get_ref(index)? {
        ValueRef::Text(bytes) => std::str::from_utf8(bytes).ok(),
        _ => None,
    })
}

/// Reads an INTEGER column; NULL or unparsable text is 0.
fn integer(row: &Row<'_>, index: usize) -> rusqlite::Result<i64> {
    Ok(match row.get_ref(index)? {
        ValueRef::Integer(value) => value,
        ValueRef::Real(value) => value as i64,
        ValueRef::Text(bytes) => std::str::from_utf8(bytes)
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(0),
        ValueRef::Null | ValueRef::Blob(_) => 0,
    })
}

/// Counts rows whose JSON columns could not be decoded; they are emitted with the
/// undecodable value left empty, and the envelope gets a warning.
#[derive(Debug, Default)]
struct ScanProblems(usize);

impl ScanProblems {
    /// Decodes a JSON column; an empty column is the zero value, an undecodable one is
    /// counted and left empty.
    fn decode<T: Default, E>(
        &mut self,
        row: &Row<'_>,
        index: usize,
        decode: impl FnOnce(&str) -> Result<T, E>,
    ) -> rusqlite::Result<T> {
        let text = text(row, index)?;
        if text.is_empty() {
            return Ok(T::default());
        }
        Ok(decode(&text).unwrap_or_else(|_| {
            self.0 += 1;
            T::default()
        }))
    }

    fn metric(&mut self, row: &Row<'_>, index: usize) -> rusqlite::Result<MetricMap> {
        self.decode(row, index, MetricMap::decode)
    }

    fn generic(&mut self, row: &Row<'_>, index: usize) -> rusqlite::Result<Generic> {
        self.decode(row, index, Generic::decode)
    }

    /// A JSON column as the text its encoder gives (`{}` when empty): the stored text
    /// itself when `is_encoded` says it is already that, else `reencode`d.
    fn encoded_text<'row>(
        &mut self,
        row: &'row Row<'_>,
        index: usize,
        is_encoded: fn(&str) -> bool,
        reencode: fn(&mut Self, &Row<'_>, usize) -> rusqlite::Result<String>,
    ) -> rusqlite::Result<Cow<'row, str>> {
        match stored_text(row, index)? {
            Some(text) if is_encoded(text) => Ok(Cow::Borrowed(text)),
            _ => Ok(Cow::Owned(reencode(self, row, index)?)),
        }
    }

    fn list(&mut self, row: &Row<'_>, index: usize) -> rusqlite::Result<List> {
        self.decode(row, index, List::decode)
    }

    /// The envelope warnings: the reference's wording, counting rows, not columns.
    fn into_warnings(self, rows_with_problems: usize) -> Vec<String> {
        if self.0 == 0 {
            Vec::new()
        } else {
            vec![format!("failed to scan {rows_with_problems} rows")]
        }
    }
}

/// Runs `sql` and maps every row, counting rows with undecodable JSON.
fn collect_rows<T>(
    conn: &Connection,
    sql: &Sql,
    mut map: impl FnMut(&Row<'_>, &mut ScanProblems) -> rusqlite::Result<T>,
) -> Result<Rows<T>, StorageError> {
    let mut statement = conn.prepare_cached(&sql.text)?;
    let mut result_rows = statement.query(params_from_iter(sql.params.iter()))?;
    log_statement(result_rows.as_ref());
    let mut rows = Vec::new();
    let mut problems = ScanProblems::default();
    let mut rows_with_problems = 0;
    while let Some(row) = result_rows.next()? {
        let before = problems.0;
        rows.push(map(row, &mut problems)?);
        if problems.0 > before {
            rows_with_problems += 1;
        }
    }
    Ok(Rows {
        rows,
        warnings: problems.into_warnings(rows_with_problems),
    })
}

/// The unit list as the JSON array the route answers, and the envelope's warnings.
#[derive(Debug)]
pub struct UnitList {
    pub json: Vec<u8>,
    pub warnings: Vec<String>,
}

/// `GET /units[/admin]`: units that ended in the window (plus running ones), or the
/// given uuids, ordered by cluster and uuid. Times are rendered in `zone` when given.
///
/// Each row is written straight from its columns, with the rules of
/// [`Unit`](crate::model::Unit)'s encoding
/// (empty fields left out, `uuid` always there): a heavy user's list is megabytes, and
/// building a `Unit` per row and encoding it again cost as much as the query itself.
/// Stored maps and allocations already in the form encoding gives are copied as they are.
pub fn units(
    conn: &Connection,
    query: &UnitQuery,
    zone: Option<Tz>,
) -> Result<UnitList, StorageError> {
    let fields: Vec<UnitField> = query.fields.iter().collect();
    let mut sql = Sql::default();
    sql.select(fields.iter().map(|field| field.name()));
    // Ordered here rather than by SQLite: with `ORDER BY` the statement sorted whole rows
    // (maps included) in a temporary B-tree, 40 % of its time for a heavy user.
    sql.push(", cluster_id, uuid");
    let order_at = fields.len();
    sql.push(" FROM units WHERE ignore = 0");
    let filters = &query.filters;
    match &query.scope {
        Scope::User(user) => {
            sql.push(" AND (username = ").bind(user.clone());
            if !filters.projects.is_empty() {
                // Service accounts of namespaces the user is a member of (same cluster).
                sql.push(" OR (username = project || ':svc' AND (cluster_id, project) IN (");
                memberships_of(&mut sql, std::slice::from_ref(user));
                sql.push("))");
            }
            sql.push(")");
        }
        Scope::Admin => {
            sql.and_in("username", &admin_user_list(filters));
        }
    }
    sql.and_in("project", &filters.projects)
        .and_in("cluster_id", &filters.cluster_ids);
    if !query.uuids.is_empty() {
        sql.and_in("uuid", &query.uuids);
    } else if let Some(window) = &query.window {
        sql.and_ended_in(window, query.running);
    }
    let mut written = Vec::with_capacity(64 * 1024);
    let rows = collect_rows(conn, &sql, |row, problems| {
        let start = written.len();
        write_unit(&mut written, row, &fields, zone, problems)?;
        let order = (
            SqlOrder::of(row.get_ref(order_at)?),
            SqlOrder::of(row.get_ref(order_at + 1)?),
        );
        Ok((order, start..written.len()))
    })?;
    let mut units = rows.rows;
    units.sort_by(|(left, _), (right, _)| left.cmp(right));
    let mut json = Vec::with_capacity(written.len() + units.len() + 2);
    json.push(b'[');
    for (index, (_, range)) in units.into_iter().enumerate() {
        if index > 0 {
            json.push(b',');
        }
        json.extend_from_slice(&written[range]);
    }
    json.push(b']');
    Ok(UnitList {
        json,
        warnings: rows.warnings,
    })
}

/// Writes one unit's object from the selected columns (`fields`, in output order).
fn write_unit(
    out: &mut Vec<u8>,
    row: &Row<'_>,
    fields: &[UnitField],
    zone: Option<Tz>,
    problems: &mut ScanProblems,
) -> rusqlite::Result<()> {
    let mut object = JsonObject::start(out);
    // `uuid` is always answered, empty when not selected.
    let mut uuid_written = false;
    for (index, field) in fields.iter().enumerate() {
        if !uuid_written && *field >= UnitField::Uuid {
            if *field != UnitField::Uuid {
                object.string("uuid", "");
            }
            uuid_written = true;
        }
        match field {
            UnitField::CreatedAtTs | UnitField::StartedAtTs | UnitField::EndedAtTs => {
                let value = integer(row, index)?;
                if value != 0 {
                    object.integer(field.name(), value);
                }
            }
            UnitField::Allocation | UnitField::Tags | UnitField::Metric(_) => {
                // Allocations are objects of integers; maps as `MetricMap::encode` writes.
                let json = if let UnitField::Metric(_) = field {
                    problems.encoded_text(
                        row,
                        index,
                        flat_json::is_encoded_metric_map,
                        |p, r, i| Ok(p.metric(r, i)?.encode()),
                    )?
                } else {
                    problems.encoded_text(
                        row,
                        index,
                        flat_json::is_encoded_integer_object,
                        |p, r, i| Ok(p.generic(r, i)?.as_json().to_owned()),
                    )?
                };
                if json != "{}" {
                    object.raw(field.name(), &json);
                }
            }
            UnitField::CreatedAt | UnitField::StartedAt | UnitField::EndedAt => {
                let value = text_cow(row, index)?;
                match zone {
                    Some(zone) if !value.is_empty() => {
                        object.string(field.name(), &convert_dtz(&value, zone));
                    }
                    _ if value.is_empty() => {}
                    _ => object.string(field.name(), &value),
                }
            }
            _ => {
                let value = text_cow(row, index)?;
                if !value.is_empty() || *field == UnitField::Uuid {
                    object.string(field.name(), &value);
                }
            }
        }
    }
    if !uuid_written {
        object.string("uuid", "");
    }
    object.end();
    Ok(())
}

/// A JSON object being written member by member, with [`GoFormatter`]'s escaping.
struct JsonObject<'a> {
    out: &'a mut Vec<u8>,
    empty: bool,
}

impl<'a> JsonObject<'a> {
    fn start(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        JsonObject { out, empty: true }
    }

    /// `"name":` (names are plain column names, never escaped).
    fn key(&mut self, name: &str) {
        if !self.empty {
            self.out.push(b',');
        }
        self.empty = false;
        self.out.push(b'"');
        self.out.extend_from_slice(name.as_bytes());
        self.out.extend_from_slice(b"\":");
    }

    fn string(&mut self, name: &str, value: &str) {
        self.key(name);
        write_go_json(self.out, value);
    }

    fn integer(&mut self, name: &str, value: i64) {
        self.key(name);
        self.out.extend_from_slice(value.to_string().as_bytes());
    }

    /// A value that is already JSON text.
    fn raw(&mut self, name: &str, json: &str) {
        self.key(name);
        self.out.extend_from_slice(json.as_bytes());
    }

    fn end(self) {
        self.out.push(b'}');
    }
}

/// A column value ordered as SQLite's `ORDER BY` orders it with the `BINARY` collation:
/// NULL first, then numbers by value, then text and then blobs by their bytes.
#[derive(Debug, Clone, PartialEq)]
enum SqlOrder {
    Null,
    Integer(i64),
    Real(f64),
    Text(Vec<u8>),
    Blob(Vec<u8>),
}

impl SqlOrder {
    fn of(value: ValueRef<'_>) -> Self {
        match value {
            ValueRef::Null => SqlOrder::Null,
            ValueRef::Integer(number) => SqlOrder::Integer(number),
            ValueRef::Real(number) => SqlOrder::Real(number),
            ValueRef::Text(bytes) => SqlOrder::Text(bytes.to_vec()),
            ValueRef::Blob(bytes) => SqlOrder::Blob(bytes.to_vec()),
        }
    }

    fn class(&self) -> u8 {
        match self {
            SqlOrder::Null => 0,
            SqlOrder::Integer(_) | SqlOrder::Real(_) => 1,
            SqlOrder::Text(_) => 2,
            SqlOrder::Blob(_) => 3,
        }
    }
}

impl Eq for SqlOrder {}

impl PartialOrd for SqlOrder {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for SqlOrder {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        use SqlOrder::{Blob, Integer, Real, Text};
        match (self, other) {
            (Integer(left), Integer(right)) => left.cmp(right),
            // SQLite compares an integer with a real exactly; a stored real is never NaN.
            (Integer(left), Real(right)) => compare_integer_real(*left, *right),
            (Real(left), Integer(right)) => compare_integer_real(*right, *left).reverse(),
            (Real(left), Real(right)) => left.total_cmp(right),
            (Text(left), Text(right)) | (Blob(left), Blob(right)) => left.cmp(right),
            _ => self.class().cmp(&other.class()),
        }
    }
}

/// `integer` against `real` by exact value.
fn compare_integer_real(integer: i64, real: f64) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;
    if real >= TWO_POW_63 {
        Ordering::Less
    } else if real < -TWO_POW_63 {
        Ordering::Greater
    } else {
        let truncated = real.trunc() as i64;
        integer.cmp(&truncated).then_with(|| {
            let fraction = real - real.trunc();
            0.0_f64.partial_cmp(&fraction).unwrap_or(Ordering::Equal)
        })
    }
}

/// `GET /units/verify`: true when every requested uuid exists in the given clusters and
/// every unit with such a uuid belongs to the user, directly or through a membership of
/// its project in its cluster.
pub fn verify_ownership(conn: &Connection, query: &VerifyQuery) -> Result<bool, StorageError> {
    if query.user.is_empty() || query.cluster_ids.is_empty() || query.uuids.is_empty() {
        return Ok(false);
    }
    let mut distinct = query.uuids.clone();
    distinct.sort();
    distinct.dedup();

    let mut sql = Sql::default();
    sql.push("SELECT COUNT(DISTINCT CASE WHEN owned THEN uuid END), COUNT(CASE WHEN NOT owned THEN 1 END) FROM (SELECT uuid, (username = ")
        .bind(query.user.clone())
        .push(" OR (cluster_id, project) IN (");
    memberships_of(&mut sql, std::slice::from_ref(&query.user));
    sql.push(")) AS owned FROM units WHERE 1 = 1");
    sql.and_in("cluster_id", &query.cluster_ids)
        .and_in("uuid", &distinct);
    sql.push(")");

    let mut statement = conn.prepare_cached(&sql.text)?;
    let mut rows = statement.query(params_from_iter(sql.params.iter()))?;
    log_statement(rows.as_ref());
    let (owned, foreign): (i64, i64) = match rows.next()? {
        Some(row) => (row.get(0)?, row.get(1)?),
        None => (0, 0),
    };
    Ok(foreign == 0 && usize::try_from(owned).is_ok_and(|owned| owned == distinct.len()))
}

/// The JSON path of a metric key, quoted so any key is safe.
fn json_path(key: &str) -> String {
    format!("$.\"{}\"", key.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The distinct keys of a metric map over the units that the window and the project and
/// cluster filters select (not the access scope: the reference's key set).
///
/// Without a project filter, from the key index of every cluster concerned when all of
/// them are indexed (see [`metric_keys`](super::metric_keys)); otherwise from `units`.
fn metric_keys(
    conn: &Connection,
    metric: Metric,
    query: &CurrentUsageQuery,
) -> Result<Vec<String>, StorageError> {
    if query.filters.projects.is_empty() && !query.terminated_only {
        let clusters = if query.filters.cluster_ids.is_empty() {
            super::metric_keys::clusters_with_units(conn)?
        } else {
            let mut clusters = query.filters.cluster_ids.clone();
            clusters.sort();
            clusters.dedup();
            clusters
        };
        let mut keys = std::collections::BTreeSet::new();
        let mut indexed = true;
        for cluster_id in &clusters {
            match super::metric_keys::keys_in_window(
                conn,
                cluster_id,
                metric,
                &query.window.from,
                &query.window.to,
            )? {
                Some(found) => keys.extend(found),
                None => {
                    indexed = false;
                    break;
                }
            }
        }
        if indexed {
            return Ok(keys.into_iter().collect());
        }
    }
    scan_metric_keys(conn, metric, query)
}

/// [`metric_keys`] read from every unit of the window.
fn scan_metric_keys(
    conn: &Connection,
    metric: Metric,
    query: &CurrentUsageQuery,
) -> Result<Vec<String>, StorageError> {
    let column = metric.column();
    let mut sql = Sql::default();
    sql.push("SELECT DISTINCT k.key FROM units, json_each(CASE WHEN json_valid(units.")
        .push(column)
        .push(") AND json_type(units.")
        .push(column)
        .push(") = 'object' THEN units.")
        .push(column)
        .push(" ELSE '{}' END) k WHERE last_updated_at BETWEEN ")
        .bind(query.window.from.clone())
        .push(" AND ")
        .bind(query.window.to.clone());
    sql.and_in("project", &query.filters.projects)
        .and_in("cluster_id", &query.filters.cluster_ids);
    if query.terminated_only {
        sql.push(" AND ended_at_ts > 0");
    }
    sql.push(" ORDER BY k.key");
    let mut statement = conn.prepare_cached(&sql.text)?;
    let mut rows = statement.query(params_from_iter(sql.params.iter()))?;
    log_statement(rows.as_ref());
    let mut keys = Vec::new();
    while let Some(row) = rows.next()? {
        keys.push(text(row, 0)?);
    }
    Ok(keys)
}

/// The answer of current usage: `rows` is `None` for the reference's `data: null`
/// (no selected field needed an aggregate).
#[derive(Debug, Clone, PartialEq)]
pub struct CurrentUsage {
    pub rows: Option<Vec<Usage>>,
    pub warnings: Vec<String>,
}

/// `GET /usage/current[/admin]`: per (user, project) aggregates of the units updated in
/// the window.
pub fn current_usage(
    conn: &Connection,
    query: &CurrentUsageQuery,
) -> Result<CurrentUsage, StorageError> {
    let mut warnings = Vec::new();
    let mut metric_items: Vec<(Metric, Vec<String>)> = Vec::new();
    for field in query.fields.iter() {
        let UsageField::Metric(metric) = field else {
            continue;
        };
        match metric_keys(conn, metric, query) {
            Ok(keys) => {
                // A total with no key needs no lookup; an average always runs (its
                // weights are looked up), as the reference does.
                if !keys.is_empty() || metric.weight_key().is_some() {
                    metric_items.push((metric, keys));
                }
            }
            Err(error) => {
                tracing::warn!(metric = metric.column(), %error, "metric key lookup failed");
                warnings.push(format!("failed to build query for {}", metric.column()));
            }
        }
    }
    if metric_items.is_empty() {
        // Nothing needs a lookup: the reference runs no query and answers `data: null`.
        return Ok(CurrentUsage {
            rows: None,
            warnings,
        });
    }

    if let Some(rows) = rollup_current_usage(conn, query, &metric_items)? {
        return Ok(CurrentUsage {
            rows: Some(rows),
            warnings,
        });
    }
    match run_current_usage(conn, query, &metric_items, "SUM") {
        Err(StorageError::Sqlite(error)) if error.to_string().contains("integer overflow") => {
            // Integer sums that overflow int64 are summed as floats instead of failing.
            run_current_usage(conn, query, &metric_items, "TOTAL")
        }
        other => other,
    }
    .map(|rows| {
        let mut all_warnings = rows.warnings;
        all_warnings.extend(warnings);
        CurrentUsage {
            rows: Some(rows.rows),
            warnings: all_warnings,
        }
    })
}

/// Current usage from the usage buckets ([`usage_rollup`](super::usage_rollup)): whole
/// hours, days and months of the window from buckets, its partial edge hours from
/// `units`. `None` when the buckets cannot answer (the `daily_usage` mode, a group key
/// other than user and project, a cluster without buckets, a sum the buckets cannot keep
/// exactly): the caller then aggregates `units`.
fn rollup_current_usage(
    conn: &Connection,
    query: &CurrentUsageQuery,
    metric_items: &[(Metric, Vec<String>)],
) -> Result<Option<Vec<Usage>>, StorageError> {
    use super::usage_rollup::{cover, Totals, MARKER};

    if query.experimental || !query.group_by.is_empty() {
        return Ok(None);
    }
    let clusters = if query.filters.cluster_ids.is_empty() {
        super::metric_keys::clusters_with_units(conn)?
    } else {
        query.filters.cluster_ids.clone()
    };
    for cluster_id in &clusters {
        if !MARKER.is_set(conn, cluster_id)? {
            return Ok(None);
        }
    }
    let scoped = |sql: &mut Sql, terminated: &str| {
        and_project_scope(sql, &query.scope, &query.filters);
        sql.and_in("project", &query.filters.projects)
            .and_in("cluster_id", &query.filters.cluster_ids);
        if query.terminated_only {
            sql.push(terminated);
        }
    };
    let cover = cover(&query.window.from, &query.window.to);
    let mut totals = Totals::default();
    for range in &cover.units {
        let mut sql = Sql::default();
        sql.push("last_updated_at >= ")
            .bind(range.low.clone())
            .push(if range.high_inclusive {
                " AND last_updated_at <= "
            } else {
                " AND last_updated_at < "
            })
            .bind(range.high.clone());
        scoped(&mut sql, " AND ended_at_ts > 0");
        totals.add_units(conn, &sql.text, &sql.params)?;
    }
    for range in &cover.buckets {
        let mut sql = Sql::default();
        sql.push("span = ")
            .bind(range.span as i64)
            .push(if range.low_inclusive {
                " AND bucket >= "
            } else {
                " AND bucket > "
            })
            .bind(range.low.clone())
            .push(" AND bucket < ")
            .bind(range.high.clone());
        scoped(&mut sql, " AND terminated = 1");
        totals.add_buckets(conn, &sql.text, &sql.params)?;
    }
    Ok(totals.into_usage(query.fields, metric_items))
}

fn run_current_usage(
    conn: &Connection,
    query: &CurrentUsageQuery,
    metric_items: &[(Metric, Vec<String>)],
    sum: &str,
) -> Result<Rows<Usage>, StorageError> {
    let table = if query.experimental {
        "daily_usage"
    } else {
        "units"
    };
    // `SUM(expression)`, or its overflow-free form which repeats the expression (and so
    // its parameters).
    let push_sum = |sql: &mut Sql, expression: &str, params: &[&str]| {
        let repeats = if sum == "SUM" {
            sql.push("SUM(").push(expression).push(")");
            1
        } else {
            sql.push("CASE WHEN COUNT(")
                .push(expression)
                .push(") = 0 THEN NULL ELSE TOTAL(")
                .push(expression)
                .push(") END");
            2
        };
        for _ in 0..repeats {
            sql.params
                .extend(params.iter().map(|param| Value::Text(json_path(param))));
        }
    };

    let mut sql = Sql::default();
    sql.push("SELECT cluster_id, resource_manager, ");
    if query.experimental {
        push_sum(&mut sql, "num_units", &[]);
    } else {
        sql.push("COUNT(*)");
    }
    sql.push(", project, groupname, username");
    for (metric, keys) in metric_items {
        sql.push(", json_object(");
        for (index, key) in keys.iter().enumerate() {
            if index > 0 {
                sql.push(", ");
            }
            sql.bind(key.clone()).push(", ");
            let value = format!("json_extract({}, ?)", metric.column());
            match metric.weight_key() {
                None => push_sum(&mut sql, &value, &[key]),
                Some(weight_key) => {
                    let weight = "json_extract(total_time_seconds, ?)";
                    // `* 1.0`: a mean of integral values is not truncated (the reference
                    // divides integers when every stored value is integral).
                    push_sum(&mut sql, &format!("{value} * {weight}"), &[key, weight_key]);
                    sql.push(" * 1.0 / ");
                    push_sum(&mut sql, weight, &[weight_key]);
                }
            }
        }
        sql.push(")");
    }
    sql.push(" FROM ")
        .push(table)
        .push(" WHERE last_updated_at BETWEEN ");
    sql.bind(query.window.from.clone())
        .push(" AND ")
        .bind(query.window.to.clone());
    and_project_scope(&mut sql, &query.scope, &query.filters);
    sql.and_in("project", &query.filters.projects)
        .and_in("cluster_id", &query.filters.cluster_ids);
    if query.terminated_only {
        sql.push(" AND ended_at_ts > 0");
    }
    let mut group_by: Vec<&str> = vec!["username", "project"];
    group_by.extend(query.group_by.iter().map(|group| group.column()));
    group_by.sort_unstable();
    group_by.dedup();
    sql.push(" GROUP BY ").push(&group_by.join(", "));
    sql.push(" ORDER BY cluster_id, username, project");

    let selected = query.fields;
    collect_rows(conn, &sql, |row, problems| {
        let mut usage = Usage::default();
        if selected.contains(UsageField::ClusterId) {
            usage.cluster_id = text(row, 0)?;
        }
        if selected.contains(UsageField::ResourceManager) {
            usage.resource_manager = text(row, 1)?;
        }
        if selected.contains(UsageField::NumUnits) {
            usage.num_units = integer(row, 2)?;
        }
        if selected.contains(UsageField::Project) {
            usage.project = text(row, 3)?;
        }
        if selected.contains(UsageField::Groupname) {
            usage.groupname = text(row, 4)?;
        }
        if selected.contains(UsageField::Username) {
            usage.username = text(row, 5)?;
        }
        for (index, (metric, _)) in metric_items.iter().enumerate() {
            *usage.metrics.get_mut(*metric) =
                problems.decode(row, 6 + index, MetricMap::decode_sql_aggregate)?;
        }
        Ok(usage)
    })
}

/// `GET /usage/global[/admin]`: lifetime aggregates from the `usage` table.
pub fn global_usage(
    conn: &Connection,
    query: &GlobalUsageQuery,
) -> Result<Rows<Usage>, StorageError> {
    let fields: Vec<UsageField> = query.fields.iter().collect();
    let mut sql = Sql::default();
    sql.select(fields.iter().map(|field| field.name()));
    sql.push(" FROM usage WHERE 1 = 1");
    and_project_scope(&mut sql, &query.scope, &query.filters);
    sql.and_in("project", &query.filters.projects)
        .and_in("cluster_id", &query.filters.cluster_ids);
    sql.push(" ORDER BY cluster_id, username, project");

    collect_rows(conn, &sql, |row, problems| {
        let mut usage = Usage::default();
        for (index, field) in fields.iter().enumerate() {
            match field {
                UsageField::ClusterId => usage.cluster_id = text(row, index)?,
                UsageField::ResourceManager => usage.resource_manager = text(row, index)?,
                UsageField::NumUnits => usage.num_units = integer(row, index)?,
                UsageField::Project => usage.project = text(row, index)?,
                UsageField::Groupname => usage.groupname = text(row, index)?,
                UsageField::Username => usage.username = text(row, index)?,
                UsageField::Metric(metric) => {
                    *usage.metrics.get_mut(*metric) = problems.metric(row, index)?;
                }
            }
        }
        Ok(usage)
    })
}

/// `GET /projects[/admin]`: a user's projects (membership per cluster), or for admins
/// every project that has members.
pub fn projects(conn: &Connection, query: &ProjectQuery) -> Result<Rows<Project>, StorageError> {
    let mut sql = Sql::default();
    sql.push("SELECT uid, cluster_id, resource_manager, name, users, tags FROM projects WHERE (cluster_id, name) IN (");
    match &query.scope {
        Scope::User(user) => memberships_of(&mut sql, std::slice::from_ref(user)),
        Scope::Admin => {
            sql.push(PROJECTS_WITH_MEMBERS);
        }
    }
    sql.push(")");
    sql.and_in("name", &query.filters.projects)
        .and_in("cluster_id", &query.filters.cluster_ids);
    sql.push(" ORDER BY cluster_id, name");
    collect_rows(conn, &sql, |row, problems| {
        Ok(Project {
            uid: text(row, 0)?,
            cluster_id: text(row, 1)?,
            resource_manager: text(row, 2)?,
            name: text(row, 3)?,
            users: problems.list(row, 4)?,
            tags: problems.list(row, 5)?,
        })
    })
}

fn user_row(row: &Row<'_>, problems: &mut ScanProblems) -> rusqlite::Result<User> {
    Ok(User {
        uid: text(row, 0)?,
        cluster_id: text(row, 1)?,
        resource_manager: text(row, 2)?,
        name: text(row, 3)?,
        projects: problems.list(row, 4)?,
        tags: problems.list(row, 5)?,
    })
}

/// `GET /users[/admin]`: the current user's rows, or for admins the named users (every
/// user when none is named).
pub fn users(conn: &Connection, query: &UserQuery) -> Result<Rows<User>, StorageError> {
    let mut sql = Sql::default();
    sql.push(
        "SELECT uid, cluster_id, resource_manager, name, projects, tags FROM users WHERE name",
    );
    match &query.scope {
        Scope::User(user) => {
            sql.push(" = ").bind(user.clone());
        }
        Scope::Admin => {
            // `project` only widens a user list to the namespaces' service accounts; it
            // is never a filter of its own here.
            let names = admin_user_list(&query.filters);
            if names.is_empty() {
                sql.push(" IS NOT NULL");
            } else {
                sql.push(" IN ").bind_list(&names);
            }
        }
    }
    sql.and_in("cluster_id", &query.filters.cluster_ids);
    sql.push(" ORDER BY cluster_id, name");
    collect_rows(conn, &sql, user_row)
}

/// `GET /users/admin?role=admin`: every admin user row, in insertion order.
pub fn admin_users(conn: &Connection) -> Result<Rows<User>, StorageError> {
    let mut sql = Sql::default();
    sql.push("SELECT uid, cluster_id, resource_manager, name, projects, tags FROM admin_users ORDER BY rowid");
    collect_rows(conn, &sql, user_row)
}

/// `GET /clusters/admin`: the distinct (cluster, manager) pairs of the units table.
pub fn clusters(conn: &Connection) -> Result<Rows<Cluster>, StorageError> {
    let mut sql = Sql::default();
    sql.push("SELECT DISTINCT cluster_id, resource_manager FROM units ORDER BY cluster_id, resource_manager");
    collect_rows(conn, &sql, |row, _| {
        Ok(Cluster {
            id: text(row, 0)?,
            manager: text(row, 1)?,
        })
    })
}

/// `GET /stats/{current,global}/admin`: per-cluster unit, user and project counts.
///
/// One statement per cluster, read along the covering `(cluster_id, ended_at, ...)` index:
/// the window's ended units as a range of it, the running ones from the running units'
/// partial index. A single `GROUP BY cluster_id` with `ended_at BETWEEN ... OR ended_at_ts
/// = 0` can use neither and reads every unit's row, maps included (90 s at 1e7 units).
/// The counts are taken here from the rows (`StatCounts`), not by SQLite's aggregate.
pub fn stats(conn: &Connection, query: &StatsQuery) -> Result<Rows<Stat>, StorageError> {
    let mut clusters: Vec<Option<String>> = Vec::new();
    let has_null_cluster = query.cluster_ids.is_empty()
        && conn
            .query_row(
                "SELECT 1 FROM units WHERE cluster_id IS NULL LIMIT 1",
                [],
                |_| Ok(()),
            )
            .optional()?
            .is_some();
    if has_null_cluster {
        clusters.push(None);
    }
    for cluster_id in super::metric_keys::clusters_with_units(conn)? {
        if query.cluster_ids.is_empty() || query.cluster_ids.contains(&cluster_id) {
            clusters.push(Some(cluster_id));
        }
    }
    let mut stats = Rows {
        rows: Vec::with_capacity(clusters.len()),
        warnings: Vec::new(),
    };
    for cluster_id in clusters {
        let sql = cluster_stats_sql(cluster_id, query);
        let mut statement = conn.prepare_cached(&sql.text)?;
        let mut rows = statement.query(params_from_iter(sql.params.iter()))?;
        log_statement(rows.as_ref());
        let mut counts = StatCounts::default();
        while let Some(row) = rows.next()? {
            counts.add(row)?;
        }
        stats.rows.extend(counts.finish());
    }
    Ok(stats)
}

/// The aggregate of the stats statement, computed here from the rows of one cluster:
/// SQLite's `COUNT(DISTINCT)` inserts every row into a temporary B-tree, several
/// microseconds a row, and a 30-day window of a large centre holds about a million.
#[derive(Default)]
struct StatCounts {
    /// The bare columns, from the last row as SQLite takes them.
    cluster_id: String,
    resource_manager: String,
    units: i64,
    ended: i64,
    running: i64,
    projects: DistinctValues,
    users: DistinctValues,
}

impl StatCounts {
    /// Adds a row of `cluster_id, resource_manager, ended_at_ts > 0, ended_at_ts = 0,
    /// project, username`.
    fn add(&mut self, row: &Row<'_>) -> rusqlite::Result<()> {
        self.units += 1;
        self.ended += i64::from(row.get::<_, Option<bool>>(2)?.unwrap_or(false));
        self.running += i64::from(row.get::<_, Option<bool>>(3)?.unwrap_or(false));
        self.projects.insert(row.get_ref(4)?);
        self.users.insert(row.get_ref(5)?);
        self.cluster_id = text(row, 0)?;
        self.resource_manager = text(row, 1)?;
        Ok(())
    }

    /// The stat, or none when no row was read (as `GROUP BY` gives no group).
    fn finish(self) -> Option<Stat> {
        (self.units > 0).then(|| Stat {
            cluster_id: self.cluster_id,
            resource_manager: self.resource_manager,
            num_units: self.units,
            num_inactive_units: self.ended,
            num_active_units: self.running,
            num_projects: self.projects.len(),
            num_users: self.users.len(),
        })
    }
}

/// Distinct values as `COUNT(DISTINCT)` counts them: NULL ignored, text and blob apart.
/// `project` and `username` have TEXT affinity, so SQLite stores numbers as text; a
/// number read anyway counts as its text.
#[derive(Default)]
struct DistinctValues {
    texts: std::collections::HashSet<Vec<u8>>,
    blobs: std::collections::HashSet<Vec<u8>>,
}

impl DistinctValues {
    fn insert(&mut self, value: ValueRef<'_>) {
        let (set, bytes) = match value {
            ValueRef::Null => return,
            ValueRef::Text(bytes) => (&mut self.texts, bytes),
            ValueRef::Blob(bytes) => (&mut self.blobs, bytes),
            ValueRef::Integer(integer) => {
                self.texts.insert(integer.to_string().into_bytes());
                return;
            }
            ValueRef::Real(real) => {
                self.texts.insert(real.to_string().into_bytes());
                return;
            }
        };
        if !set.contains(bytes) {
            set.insert(bytes.to_vec());
        }
    }

    fn len(&self) -> i64 {
        (self.texts.len() + self.blobs.len()) as i64
    }
}

/// The stats statement of one cluster (`None`: the units without a cluster).
fn cluster_stats_sql(cluster_id: Option<String>, query: &StatsQuery) -> Sql {
    let mut sql = Sql::default();
    let cluster = |sql: &mut Sql| {
        match &cluster_id {
            Some(cluster_id) => sql.push("cluster_id = ").bind(cluster_id.clone()),
            None => sql.push("cluster_id IS NULL"),
        };
    };
    let columns = "SELECT cluster_id, resource_manager, ended_at_ts > 0, ended_at_ts = 0, project, username FROM units";
    sql.push(columns)
        .push(" INDEXED BY idx_units_cluster_ended WHERE ");
    cluster(&mut sql);
    if let Some(window) = &query.window {
        // Ended in the window, or running and not already counted by the first half
        // (`IS NOT 1` keeps a NULL `ended_at`, which the OR of the reference keeps). The
        // running units are read from their partial index: with sampled statistics the
        // planner may otherwise scan the whole covering index for `ended_at_ts = 0`.
        sql.push(" AND ended_at BETWEEN ")
            .bind(window.from.clone())
            .push(" AND ")
            .bind(window.to.clone());
        sql.push(" UNION ALL ")
            .push(columns)
            .push(" INDEXED BY idx_units_cluster_user_running WHERE ");
        cluster(&mut sql);
        sql.push(" AND ended_at_ts = 0 AND (ended_at BETWEEN ")
            .bind(window.from.clone())
            .push(" AND ")
            .bind(window.to.clone())
            .push(") IS NOT 1");
    }
    sql
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Metrics, Unit};
    use crate::storage::test_support::database;

    /// The single statement the reference runs: the per-cluster statements must count
    /// exactly as it does.
    fn reference_stats(conn: &Connection, query: &StatsQuery) -> Vec<Stat> {
        let mut sql = Sql::default();
        sql.push(
            "SELECT cluster_id, COUNT(*), COUNT(CASE WHEN ended_at_ts > 0 THEN 1 END), \
             COUNT(CASE WHEN ended_at_ts = 0 THEN 1 END), COUNT(DISTINCT project), \
             COUNT(DISTINCT username) FROM units WHERE 1 = 1",
        );
        sql.and_in("cluster_id", &query.cluster_ids);
        if let Some(window) = &query.window {
            sql.and_ended_in(window, true);
        }
        sql.push(" GROUP BY cluster_id ORDER BY cluster_id");
        collect_rows(conn, &sql, |row, _| {
            Ok(Stat {
                cluster_id: text(row, 0)?,
                resource_manager: String::new(),
                num_units: integer(row, 1)?,
                num_inactive_units: integer(row, 2)?,
                num_active_units: integer(row, 3)?,
                num_projects: integer(row, 4)?,
                num_users: integer(row, 5)?,
            })
        })
        .unwrap()
        .rows
    }

    #[test]
    fn per_cluster_stats_count_as_the_single_statement() {
        let conn = database();
        let mut insert = conn
            .prepare(
                "INSERT INTO units (cluster_id, resource_manager, uuid, started_at, ended_at, ended_at_ts, project, username)
                 VALUES (?1, 'slurm', ?2, '2024-01-01T00:00:00', ?3, ?4, ?5, ?6)",
            )
            .unwrap();
        let clusters = [Some("c1"), Some("c2"), None, Some("c3")];
        let ends: [(Option<&str>, Option<i64>); 7] = [
            (Some("2024-01-02T10:00:00+0000"), Some(1_704_189_600_000)),
            (Some("2024-01-05T00:00:00+0000"), Some(1_704_412_800_000)),
            (Some("Unknown"), Some(0)),
            (None, Some(0)),
            (Some("2024-01-03T00:00:00+0000"), Some(0)),
            (Some("2024-01-03T12:00:00+0000"), None),
            (Some("N/A"), Some(5)),
        ];
        for id in 0..200_i64 {
            let cluster = clusters[(id % 4) as usize];
            let (ended_at, ended_at_ts) = ends[(id % 7) as usize];
            let project = (id % 11 != 0).then(|| format!("p{}", id % 5));
            let username = (id % 13 != 0).then(|| format!("u{}", id % 9));
            insert
                .execute(rusqlite::params![
                    cluster,
                    id.to_string(),
                    ended_at,
                    ended_at_ts,
                    project,
                    username
                ])
                .unwrap();
        }
        // Stored as text by the column's affinity ('3', '3.0', '3', '2.5'), and a blob.
        let odd: [Value; 5] = [
            Value::Integer(3),
            Value::Real(3.0),
            Value::Text("3".into()),
            Value::Blob(b"3".to_vec()),
            Value::Real(2.5),
        ];
        for (index, value) in odd.iter().enumerate() {
            conn.execute(
                "INSERT INTO units (cluster_id, resource_manager, uuid, ended_at, ended_at_ts, project, username)
                 VALUES ('c2', 'slurm', ?1, '2024-01-02T00:00:00+0000', 1704153600000, ?2, ?2)",
                rusqlite::params![format!("odd{index}"), value],
            )
            .unwrap();
        }
        let windows = [
            None,
            Some(("2024-01-01T00:00:00", "2024-01-04T00:00:00")),
            Some(("2024-01-03T00:00:00", "2024-01-03T00:00:00")),
            Some(("2025-01-01T00:00:00", "2024-01-01T00:00:00")),
        ];
        let filters: [&[&str]; 4] = [&[], &["c2"], &["c1", "c3", "nope"], &["nope"]];
        for window in windows {
            for filter in filters {
                let query = StatsQuery {
                    cluster_ids: filter.iter().map(|c| (*c).to_owned()).collect(),
                    window: window.map(|(from, to)| DtWindow {
                        from: from.to_owned(),
                        to: to.to_owned(),
                    }),
                };
                let mut got = stats(&conn, &query).unwrap().rows;
                for stat in &mut got {
                    assert_eq!(stat.resource_manager, "slurm");
                    stat.resource_manager.clear();
                }
                let expected = reference_stats(&conn, &query);
                assert_eq!(got, expected, "{query:?}");
                if filter.is_empty() && window.is_none() {
                    assert_eq!(expected.len(), 4, "every cluster and the NULL one");
                }
            }
        }
    }

    #[test]
    fn values_order_as_sqlite_orders_them() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute("CREATE TABLE t (v)", []).unwrap();
        let values = [
            Value::Null,
            Value::Integer(i64::MIN),
            Value::Integer(i64::MAX),
            Value::Integer(-3),
            Value::Integer(3),
            Value::Integer(9_007_199_254_740_993),
            Value::Real(9_007_199_254_740_992.0),
            Value::Real(9.3e18),
            Value::Real(-9.3e18),
            Value::Real(3.5),
            Value::Real(-3.5),
            Value::Real(-2.5),
            Value::Real(0.25),
            Value::Text("b".into()),
            Value::Text("ab".into()),
            Value::Text("a".into()),
            Value::Text("Z".into()),
            Value::Text("é".into()),
            Value::Text("10".into()),
            Value::Text("9".into()),
            Value::Blob(b"a".to_vec()),
            Value::Blob(b"".to_vec()),
            Value::Blob(vec![0xff, 0]),
        ];
        for value in values.iter().rev() {
            conn.execute("INSERT INTO t (v) VALUES (?1)", [value])
                .unwrap();
        }
        let read = |sql: &str| -> Vec<Value> {
            let mut statement = conn.prepare(sql).unwrap();
            let rows = statement.query_map([], |row| row.get::<_, Value>(0));
            rows.unwrap().map(Result::unwrap).collect()
        };
        let expected = read("SELECT v FROM t ORDER BY v");
        let mut ours = read("SELECT v FROM t");
        ours.sort_by_key(|value| SqlOrder::of(ValueRef::from(value)));
        assert_eq!(ours, expected);
    }

    /// An admin's unit list of `fields` over 2024-01-01 and 2024-01-02.
    fn admin_unit_query(fields: &[&str], running: bool) -> UnitQuery {
        UnitQuery {
            scope: Scope::Admin,
            filters: Filters::default(),
            uuids: Vec::new(),
            window: Some(DtWindow {
                from: "2024-01-01T00:00:00".into(),
                to: "2024-01-03T00:00:00".into(),
            }),
            running,
            fields: crate::model::UnitFieldSet::from_params(fields).unwrap(),
        }
    }

    #[test]
    fn unit_lists_are_ordered_by_cluster_and_uuid() {
        let conn = database();
        let clusters: [Value; 4] = [
            Value::Null,
            Value::Text("b".into()),
            Value::Text("a".into()),
            Value::Blob(b"a".to_vec()),
        ];
        let uuids: [Value; 5] = [
            Value::Text("10".into()),
            Value::Text("9".into()),
            Value::Null,
            Value::Blob(b"1".to_vec()),
            Value::Text("100".into()),
        ];
        for id in 0..40_usize {
            conn.execute(
                "INSERT INTO units (cluster_id, uuid, name, username, ended_at, ended_at_ts, ignore)
                 VALUES (?1, ?2, ?3, 'u', '2024-01-02T00:00:00+0000', 1, 0)",
                rusqlite::params![
                    clusters[(id * 7) % 4],
                    uuids[(id * 3) % 5],
                    format!("n{id}")
                ],
            )
            .unwrap();
        }
        let query = admin_unit_query(&["name"], false);
        let listed = units(&conn, &query, None).unwrap();
        let listed: Vec<serde_json::Value> = serde_json::from_slice(&listed.json).unwrap();
        let names: Vec<String> = listed
            .iter()
            .map(|unit| unit["name"].as_str().unwrap().to_owned())
            .collect();
        let mut statement = conn
            .prepare("SELECT cluster_id, uuid, name FROM units ORDER BY cluster_id, uuid")
            .unwrap();
        let expected: Vec<(Value, Value, String)> = statement
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(names.len(), 40);
        // Equal (cluster, uuid) pairs may come in any order: compare the keys in turn.
        let by_name: std::collections::HashMap<&str, (&Value, &Value)> = expected
            .iter()
            .map(|(cluster, uuid, name)| (name.as_str(), (cluster, uuid)))
            .collect();
        let ours: Vec<(&Value, &Value)> = names.iter().map(|name| by_name[name.as_str()]).collect();
        let theirs: Vec<(&Value, &Value)> = expected.iter().map(|(c, u, _)| (c, u)).collect();
        assert_eq!(ours, theirs);
    }

    /// Rows written from their columns answer the bytes of [`Unit`]s built from decoded
    /// columns: stored maps and allocations kept as they are or decoded and encoded
    /// again, empty fields left out, `uuid` always there, times in the asked zone.
    #[test]
    fn unit_rows_answer_as_encoded_units() {
        let conn = database();
        let maps = [
            r#"{"global":76.24923022}"#,
            r#"{"global":76.2492302}"#,
            r#"{"b":1,"a":2.5}"#,
            r#"{"a":"NaN","b":null,"c":-0}"#,
            r#"{"a<b":1,"z":1e3}"#,
            r#"{"total":1234567.12345678}"#,
            "{}",
            "null",
            "",
            "not json",
        ];
        let allocations = [
            r#"{"cpus":2,"mem":4096}"#,
            r#"{"mem":4096,"cpus":2}"#,
            r#"{"cpus":2.0,"nodes":-0,"name":"<x>"}"#,
            "{}",
            "null",
            "[]",
        ];
        let names = ["job", "", "<&>", "caf\u{e9}"];
        for (id, map) in maps.iter().enumerate() {
            let allocation = allocations[id % allocations.len()];
            let name: &[u8] = if id == 7 {
                b"bad \xff byte"
            } else {
                names[id % names.len()].as_bytes()
            };
            conn.execute(
                "INSERT INTO units (cluster_id, uuid, name, username, ended_at, ended_at_ts,
                 ignore, allocation, avg_cpu_usage, total_io_read_stats)
                 VALUES ('c', ?1, CAST(?2 AS TEXT), 'u', ?3, ?4, 0, ?5, ?6, ?6)",
                rusqlite::params![
                    format!("{id:02}"),
                    name,
                    if id == 3 {
                        ""
                    } else {
                        "2024-01-02T00:00:00+0000"
                    },
                    if id == 3 {
                        0
                    } else {
                        1_704_153_600_000_i64 + id as i64
                    },
                    allocation,
                    map
                ],
            )
            .unwrap();
        }
        let mut problems = 0;
        let expected: Vec<Unit> = maps
            .iter()
            .enumerate()
            .map(|(id, map)| {
                let allocation = allocations[id % allocations.len()];
                let mut unit = Unit {
                    uuid: format!("{id:02}"),
                    name: if id == 7 {
                        "bad \u{fffd} byte".into()
                    } else {
                        names[id % names.len()].into()
                    },
                    ended_at: if id == 3 {
                        String::new()
                    } else {
                        "2024-01-02T02:00:00+0200".into()
                    },
                    ended_at_ts: if id == 3 {
                        0
                    } else {
                        1_704_153_600_000 + id as i64
                    },
                    allocation: Generic::decode(allocation).unwrap_or_else(|_| {
                        problems += 1;
                        Generic::default()
                    }),
                    ..Unit::default()
                };
                let decoded = MetricMap::decode(map).unwrap_or_default();
                if !map.is_empty() && MetricMap::decode(map).is_err() {
                    problems += 1;
                }
                unit.metrics.avg_cpu_usage = decoded.clone();
                unit.metrics.total_io_read_stats = decoded;
                unit
            })
            .collect();
        let query = |fields: &[&str]| admin_unit_query(fields, true);
        let all = [
            "uuid",
            "name",
            "ended_at",
            "ended_at_ts",
            "allocation",
            "avg_cpu_usage",
            "total_io_read_stats",
        ];
        let athens: Tz = "Europe/Athens".parse().unwrap();
        let listed = units(&conn, &query(&all), Some(athens)).unwrap();
        assert_eq!(
            String::from_utf8(listed.json).unwrap(),
            String::from_utf8(crate::model::json::to_go_json(&expected)).unwrap()
        );
        // Rows with an undecodable column are counted once each.
        assert_eq!(problems, 2);
        assert_eq!(
            listed.warnings,
            vec![format!("failed to scan {problems} rows")]
        );

        // Without `uuid` selected, every unit still answers an empty one.
        let listed = units(&conn, &query(&["name", "avg_cpu_usage"]), None).unwrap();
        let expected: Vec<Unit> = expected
            .into_iter()
            .map(|unit| Unit {
                name: unit.name,
                metrics: Metrics {
                    avg_cpu_usage: unit.metrics.avg_cpu_usage,
                    ..Metrics::default()
                },
                ..Unit::default()
            })
            .collect();
        assert_eq!(
            String::from_utf8(listed.json).unwrap(),
            String::from_utf8(crate::model::json::to_go_json(&expected)).unwrap()
        );
    }
}
