//! Current usage rolled up per (cluster, project, user, ended or not) and per hour, day and
//! month of `last_updated_at`: what lets current usage over a year answer from a few
//! hundred rows instead of every unit of the user's projects.
//!
//! Current usage sums, per (user, project), the lifetime maps of every unit last updated in
//! the window. Read from `units`, that is one JSON decode per key per unit: a year of a
//! large centre's project is millions of decodes. Table `usage_buckets` keeps, for each
//! group and each hour (`YYYY-MM-DDTHH`), day (`YYYY-MM-DD`) and month (`YYYY-MM`) prefix
//! of `last_updated_at`, the group's unit count and the SQL sums of every key of every map
//! (`SUM(json_extract(map, key))` for totals, `SUM(value × weight)` for averages), with
//! SQLite's types: sums of JSON integers stay integers, any real makes the sum real
//! (compensated, as SQLite's `SUM` is). A window is then answered by [`cover`]: whole
//! months, days and hours from buckets, the partial hours at both edges from `units`.
//!
//! Buckets are never patched by subtraction: every hour a window touches (the hour it
//! writes and the hours its re-updated units leave) is recomputed from its units, then its
//! day from the day's hours and its month from the month's days, in the window's
//! transaction. A unit whose values SQLite would read differently from this module (a
//! string, a nested object, malformed JSON, a NULL user or project) makes its bucket
//! *inexact*; a window that meets an inexact bucket is answered from `units` instead.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use rusqlite::{params, Connection, Row};
use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::flat_json::{self, Number};
use super::metric_keys::{after_prefix, metric_columns, ClusterMarker};
use super::StorageError;
use crate::model::values::round_to_15_digits;
use crate::model::{Metric, MetricMap, Usage, UsageField, UsageFieldSet};

/// The bucket table and its completeness marker, beside the CEEMS schema.
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS usage_buckets (
    cluster_id TEXT NOT NULL,
    project TEXT NOT NULL,
    span INTEGER NOT NULL,
    bucket TEXT NOT NULL,
    username TEXT NOT NULL,
    terminated INTEGER NOT NULL,
    resource_manager TEXT NOT NULL,
    groupname TEXT NOT NULL,
    num_units INTEGER NOT NULL,
    sums TEXT NOT NULL
);
-- A rowid table with a small key index: rows hold kilobytes of sums, and a rebuild inserts
-- them in time order, which keeps the table appended to and only the index scattered.
CREATE UNIQUE INDEX IF NOT EXISTS idx_usage_buckets_key
    ON usage_buckets (cluster_id, project, span, bucket, username, terminated);
CREATE INDEX IF NOT EXISTS idx_usage_buckets_span ON usage_buckets (cluster_id, span, bucket);
CREATE TABLE IF NOT EXISTS usage_bucket_clusters (
    cluster_id TEXT PRIMARY KEY NOT NULL,
    indexed_at TEXT NOT NULL
);";

/// Whether the buckets of a cluster are complete.
pub const MARKER: ClusterMarker = ClusterMarker("usage_bucket_clusters");

/// Prefix lengths of `last_updated_at` that buckets are kept for, coarsest first: month,
/// day, hour.
const SPANS: [usize; 3] = [7, 10, 13];
const HOUR: usize = 13;

/// The first `len` characters of `text` (all of it when shorter), as SQLite's `substr`.
fn prefix(text: &str, len: usize) -> &str {
    match text.char_indices().nth(len) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

/// A SQL `SUM` in progress, with SQLite's typing: integers while every input is an
/// integer (overflow is an error), otherwise a real summed with Kahan-Babuska-Neumaier
/// compensation, as SQLite 3.43+ does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sum {
    Int(i64),
    Real { sum: f64, err: f64 },
}

/// A value SQLite could not sum the way [`Sum`] does (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inexact;

impl Sum {
    fn real_step(sum: &mut f64, err: &mut f64, value: f64) {
        let total = *sum + value;
        if sum.abs() > value.abs() {
            *err += (*sum - total) + value;
        } else {
            *err += (value - total) + *sum;
        }
        *sum = total;
    }

    fn add(&mut self, value: Sum) -> Result<(), Inexact> {
        match (self, value) {
            (Sum::Int(total), Sum::Int(value)) => {
                *total = total.checked_add(value).ok_or(Inexact)?;
            }
            (this @ Sum::Int(_), value) => {
                let Sum::Int(total) = *this else {
                    unreachable!()
                };
                *this = Sum::Real {
                    sum: total as f64,
                    err: 0.0,
                };
                this.add(value)?;
            }
            (Sum::Real { sum, err }, Sum::Int(value)) => Self::real_step(sum, err, value as f64),
            (
                Sum::Real { sum, err },
                Sum::Real {
                    sum: other,
                    err: other_err,
                },
            ) => {
                Self::real_step(sum, err, other);
                Self::real_step(sum, err, other_err);
            }
        }
        Ok(())
    }

    /// The value SQLite returns for the sum.
    pub fn value(self) -> f64 {
        match self {
            Sum::Int(total) => total as f64,
            Sum::Real { sum, err } => sum + err,
        }
    }
}

/// One value of a stored map as `json_extract` returns it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Scalar {
    Int(i64),
    Real(f64),
    Null,
    /// Text, an array or an object: SQLite would sum its text.
    Other,
}

impl Scalar {
    fn sum(self) -> Option<Result<Sum, Inexact>> {
        match self {
            Scalar::Int(value) => Some(Ok(Sum::Int(value))),
            Scalar::Real(value) => Some(Ok(Sum::Real {
                sum: value,
                err: 0.0,
            })),
            Scalar::Null => None,
            Scalar::Other => Some(Err(Inexact)),
        }
    }

    /// `value * weight` as SQLite multiplies: integers unless one is real or the product
    /// overflows. `None` when either is NULL.
    fn times(self, weight: Scalar) -> Option<Result<Sum, Inexact>> {
        match (self, weight) {
            (Scalar::Null, _) | (_, Scalar::Null) => None,
            (Scalar::Other, _) | (_, Scalar::Other) => Some(Err(Inexact)),
            (Scalar::Int(a), Scalar::Int(b)) => Some(Ok(match a.checked_mul(b) {
                Some(product) => Sum::Int(product),
                None => Sum::Real {
                    sum: a as f64 * b as f64,
                    err: 0.0,
                },
            })),
            (a, b) => Some(Ok(Sum::Real {
                sum: a.as_f64() * b.as_f64(),
                err: 0.0,
            })),
        }
    }

    fn as_f64(self) -> f64 {
        match self {
            Scalar::Int(value) => value as f64,
            Scalar::Real(value) => value,
            Scalar::Null | Scalar::Other => 0.0,
        }
    }
}

impl From<Number> for Scalar {
    fn from(number: Number) -> Self {
        match number {
            Number::Int(value) => Scalar::Int(value),
            Number::Real(value) => Scalar::Real(value),
        }
    }
}

impl From<Number> for Sum {
    fn from(number: Number) -> Self {
        match number {
            Number::Int(value) => Sum::Int(value),
            Number::Real(value) => Sum::Real {
                sum: value,
                err: 0.0,
            },
        }
    }
}

impl<'de> serde::Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ScalarVisitor;
        impl<'de> Visitor<'de> for ScalarVisitor {
            type Value = Scalar;
            fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                formatter.write_str("a JSON value")
            }
            fn visit_bool<E>(self, value: bool) -> Result<Scalar, E> {
                Ok(Scalar::Int(i64::from(value)))
            }
            fn visit_i64<E>(self, value: i64) -> Result<Scalar, E> {
                Ok(Scalar::Int(value))
            }
            fn visit_u64<E>(self, value: u64) -> Result<Scalar, E> {
                Ok(i64::try_from(value).map_or(Scalar::Real(value as f64), Scalar::Int))
            }
            fn visit_f64<E>(self, value: f64) -> Result<Scalar, E> {
                Ok(Scalar::Real(value))
            }
            fn visit_str<E>(self, _: &str) -> Result<Scalar, E> {
                Ok(Scalar::Other)
            }
            fn visit_unit<E>(self) -> Result<Scalar, E> {
                Ok(Scalar::Null)
            }
            fn visit_none<E>(self) -> Result<Scalar, E> {
                Ok(Scalar::Null)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Scalar::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scalar, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Scalar::Other)
            }
        }
        deserializer.deserialize_any(ScalarVisitor)
    }
}

/// The keys and values of a stored map column as `json_extract` sees them: a NULL column
/// or JSON that is not an object holds no key; text that is not JSON is [`Inexact`]
/// (SQLite fails on it, and JSON5 is read by SQLite only).
fn scalars(text: Option<&str>) -> Result<Vec<(Cow<'_, str>, Scalar)>, Inexact> {
    let Some(text) = text else {
        return Ok(Vec::new());
    };
    if let Some(entries) = flat_json::numbers(text) {
        return Ok(entries
            .into_iter()
            .map(|(key, number)| (Cow::Borrowed(key), Scalar::from(number)))
            .collect());
    }
    match serde_json::from_str::<BTreeMap<String, Scalar>>(text) {
        Ok(map) => Ok(map
            .into_iter()
            .map(|(key, value)| (Cow::Owned(key), value))
            .collect()),
        Err(_) if serde_json::from_str::<IgnoredAny>(text).is_ok() => Ok(Vec::new()),
        Err(_) => Err(Inexact),
    }
}

/// The sums of one group: unit count and, per metric, per key, the SQL sum.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sums {
    pub num_units: i64,
    maps: [BTreeMap<String, Sum>; 13],
    inexact: bool,
}

impl Sums {
    fn map_mut(&mut self, metric: Metric) -> &mut BTreeMap<String, Sum> {
        &mut self.maps[metric_index(metric)]
    }

    fn map(&self, metric: Metric) -> &BTreeMap<String, Sum> {
        &self.maps[metric_index(metric)]
    }

    fn add_value(&mut self, metric: Metric, key: &str, value: Option<Result<Sum, Inexact>>) {
        let Some(value) = value else {
            return;
        };
        let outcome = value.and_then(|value| match self.map_mut(metric).get_mut(key) {
            Some(total) => total.add(value),
            None => {
                self.map_mut(metric).insert(key.to_owned(), value);
                Ok(())
            }
        });
        if outcome.is_err() {
            self.inexact = true;
        }
    }

    /// Adds one unit from its thirteen map columns (in [`Metric::ALL`] order).
    fn add_unit(&mut self, columns: &[Option<&str>; 13]) {
        self.num_units += 1;
        let mut decoded: [Vec<(Cow<'_, str>, Scalar)>; 13] = Default::default();
        for (index, text) in columns.iter().enumerate() {
            match scalars(*text) {
                Ok(values) => decoded[index] = values,
                Err(Inexact) => self.inexact = true,
            }
        }
        let weights = &decoded[metric_index(Metric::TotalTimeSeconds)];
        for metric in Metric::ALL {
            let values = &decoded[metric_index(metric)];
            match metric.weight_key() {
                None => {
                    for (key, value) in values {
                        self.add_value(metric, key, value.sum());
                    }
                }
                Some(weight_key) => {
                    let weight = weights
                        .iter()
                        .find(|(key, _)| key == weight_key)
                        .map_or(Scalar::Null, |(_, weight)| *weight);
                    for (key, value) in values {
                        self.add_value(metric, key, value.times(weight));
                    }
                }
            }
        }
    }

    /// Adds the sums stored as `text` (see [`Sums::decode`]), without building them
    /// first when the text is in the form this server writes.
    fn add_text(&mut self, text: &str, num_units: i64) {
        if self.add_written(text) {
            self.num_units += num_units;
        } else {
            self.merge(&Sums::decode(text, num_units));
        }
    }

    /// Adds the sums of `text` when it is in the form this server writes (read without
    /// serde_json); `false`, with nothing added, otherwise.
    fn add_written(&mut self, text: &str) -> bool {
        let Some(columns) = flat_json::nested_numbers(text) else {
            return false;
        };
        for (column, values) in columns {
            let Some(metric) = Metric::from_column(column) else {
                self.inexact = true;
                continue;
            };
            for (key, number) in values {
                self.add_value(metric, key, Some(Ok(Sum::from(number))));
            }
        }
        true
    }

    /// Adds the sums of another group (a finer bucket).
    fn merge(&mut self, other: &Sums) {
        self.num_units += other.num_units;
        self.inexact |= other.inexact;
        for metric in Metric::ALL {
            for (key, value) in other.map(metric) {
                self.add_value(metric, key, Some(Ok(*value)));
            }
        }
    }

    /// The stored text: `{"<column>":{"<key>":<sum>}}` with integer sums as JSON
    /// integers and real sums with a fraction or exponent; the empty text when inexact.
    fn encode(&self) -> String {
        if self.inexact {
            return String::new();
        }
        let mut out = serde_json::Map::new();
        for metric in Metric::ALL {
            let map = self.map(metric);
            if map.is_empty() {
                continue;
            }
            let mut encoded = serde_json::Map::new();
            for (key, sum) in map {
                let value = match *sum {
                    Sum::Int(total) => serde_json::Value::from(total),
                    Sum::Real { .. } => match serde_json::Number::from_f64(sum.value()) {
                        Some(number) => serde_json::Value::Number(number),
                        None => return String::new(),
                    },
                };
                encoded.insert(key.clone(), value);
            }
            out.insert(
                metric.column().to_owned(),
                serde_json::Value::Object(encoded),
            );
        }
        serde_json::Value::Object(out).to_string()
    }

    /// The sums as [`Sums::decode`] reads back their [`Sums::encode`] text, without the
    /// text: inexact (and nothing else kept) when the text is empty, every real sum at its
    /// value with no compensation left (the text holds the value's shortest round-trip
    /// digits, which read back exactly).
    fn stored(&self) -> Sums {
        let finite = self
            .maps
            .iter()
            .flat_map(BTreeMap::values)
            .all(|sum| match sum {
                Sum::Int(_) => true,
                Sum::Real { .. } => sum.value().is_finite(),
            });
        if self.inexact || !finite {
            return Sums {
                num_units: self.num_units,
                inexact: true,
                ..Sums::default()
            };
        }
        let mut stored = self.clone();
        for sum in stored.maps.iter_mut().flat_map(BTreeMap::values_mut) {
            if let Sum::Real { .. } = sum {
                *sum = Sum::Real {
                    sum: sum.value(),
                    err: 0.0,
                };
            }
        }
        stored
    }

    fn decode(text: &str, num_units: i64) -> Sums {
        let mut sums = Sums {
            num_units,
            ..Sums::default()
        };
        if sums.add_written(text) {
            return sums;
        }
        let parsed: Result<BTreeMap<String, BTreeMap<String, Scalar>>, _> =
            serde_json::from_str(text);
        let Ok(parsed) = parsed else {
            sums.inexact = true;
            return sums;
        };
        for (column, values) in parsed {
            let Some(metric) = Metric::from_column(&column) else {
                sums.inexact = true;
                continue;
            };
            for (key, value) in values {
                let sum = match value {
                    Scalar::Int(total) => Sum::Int(total),
                    Scalar::Real(total) => Sum::Real {
                        sum: total,
                        err: 0.0,
                    },
                    Scalar::Null | Scalar::Other => {
                        sums.inexact = true;
                        continue;
                    }
                };
                sums.map_mut(metric).insert(key, sum);
            }
        }
        sums
    }
}

fn metric_index(metric: Metric) -> usize {
    Metric::ALL
        .iter()
        .position(|candidate| *candidate == metric)
        .expect("every metric is in Metric::ALL")
}

/// What identifies a group inside a bucket.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct GroupKey {
    project: String,
    username: String,
    terminated: bool,
}

/// A group's sums with the bare columns of its latest unit (as SQLite's bare columns come
/// from the last row it aggregated).
#[derive(Debug, Clone, Default)]
struct Group {
    /// `last_updated_at` of the unit, or the key of the bucket, the bare columns are from.
    latest: String,
    cluster_id: String,
    resource_manager: String,
    groupname: String,
    sums: Sums,
}

/// A TEXT column borrowed from the row; anything else is the error `row.get` gives.
fn borrowed_text<'row>(row: &'row rusqlite::Row<'_>, index: usize) -> rusqlite::Result<&'row str> {
    row.get_ref(index)?.as_str().map_err(|error| {
        rusqlite::Error::FromSqlConversionFailure(index, rusqlite::types::Type::Text, error.into())
    })
}

/// The bare columns of a group: those of its latest unit or bucket.
struct Bare {
    cluster_id: String,
    resource_manager: String,
    groupname: String,
}

/// The unit columns read to aggregate units: group key, bare columns, the thirteen maps.
fn unit_columns() -> String {
    format!(
        "cluster_id, resource_manager, username, project, groupname, ended_at_ts > 0, last_updated_at, {}",
        metric_columns()
    )
}

/// One unit as the buckets read it: group key, bare columns, the thirteen map texts.
pub(super) struct BucketUnit<'a> {
    pub cluster_id: &'a str,
    pub resource_manager: &'a str,
    /// `None` for a SQL NULL, which SQLite groups apart from the empty text.
    pub username: Option<&'a str>,
    pub project: Option<&'a str>,
    pub groupname: &'a str,
    pub terminated: bool,
    pub last_updated_at: &'a str,
    /// In [`Metric::ALL`] order; `None` for NULL.
    pub columns: [Option<&'a str>; 13],
    /// A map column held something other than UTF-8 text or NULL.
    pub malformed: bool,
}

/// Adds `unit` to its group in `groups`.
fn add_unit(groups: &mut HashMap<GroupKey, Group>, unit: &BucketUnit<'_>) {
    let key = GroupKey {
        project: unit.project.unwrap_or_default().to_owned(),
        username: unit.username.unwrap_or_default().to_owned(),
        terminated: unit.terminated,
    };
    let group = groups.entry(key).or_default();
    if unit.last_updated_at >= group.latest.as_str() {
        unit.cluster_id.clone_into(&mut group.cluster_id);
        unit.resource_manager
            .clone_into(&mut group.resource_manager);
        unit.groupname.clone_into(&mut group.groupname);
        unit.last_updated_at.clone_into(&mut group.latest);
    }
    if unit.username.is_none() || unit.project.is_none() || unit.malformed {
        // SQLite groups NULL apart from the empty text; buckets cannot.
        group.sums.inexact = true;
    }
    group.sums.add_unit(&unit.columns);
}

/// Reads one row of [`unit_columns`], starting at column `first`, into `groups`.
fn add_unit_row(
    row: &Row<'_>,
    first: usize,
    groups: &mut HashMap<GroupKey, Group>,
) -> rusqlite::Result<()> {
    let text = |index: usize| -> rusqlite::Result<Option<Cow<'_, str>>> {
        Ok(match row.get_ref(first + index)? {
            rusqlite::types::ValueRef::Text(bytes) => Some(String::from_utf8_lossy(bytes)),
            rusqlite::types::ValueRef::Null => None,
            rusqlite::types::ValueRef::Integer(value) => Some(Cow::Owned(value.to_string())),
            rusqlite::types::ValueRef::Real(value) => Some(Cow::Owned(value.to_string())),
            rusqlite::types::ValueRef::Blob(_) => Some(Cow::Borrowed("")),
        })
    };
    let cluster_id = text(0)?;
    let resource_manager = text(1)?;
    let username = text(2)?;
    let project = text(3)?;
    let groupname = text(4)?;
    let terminated = row.get::<_, Option<bool>>(first + 5)?.unwrap_or(false);
    let last_updated_at = text(6)?;
    let mut malformed = false;
    let mut columns: [Option<&str>; 13] = [None; 13];
    for (index, column) in columns.iter_mut().enumerate() {
        *column = match row.get_ref(first + 7 + index)? {
            rusqlite::types::ValueRef::Text(bytes) => match std::str::from_utf8(bytes) {
                Ok(text) => Some(text),
                Err(_) => {
                    malformed = true;
                    None
                }
            },
            rusqlite::types::ValueRef::Null => None,
            _ => {
                malformed = true;
                None
            }
        };
    }
    add_unit(
        groups,
        &BucketUnit {
            cluster_id: cluster_id.as_deref().unwrap_or_default(),
            resource_manager: resource_manager.as_deref().unwrap_or_default(),
            username: username.as_deref(),
            project: project.as_deref(),
            groupname: groupname.as_deref().unwrap_or_default(),
            terminated,
            last_updated_at: last_updated_at.as_deref().unwrap_or_default(),
            columns,
            malformed,
        },
    );
    Ok(())
}

/// The hour buckets of one cluster built from its units in `last_updated_at` order (a
/// rebuild, a bulk load): each hour is written when the next one starts, and its days and
/// months derived from the hours as they are written ([`Coarser`]).
pub(super) struct HourBuckets {
    cluster_id: String,
    current: Option<String>,
    groups: HashMap<GroupKey, Group>,
    hours: BTreeSet<String>,
    /// `None` once an hour came that [`Coarser`] cannot follow: days and months are then
    /// derived from the stored hours at the end, as a refresh does.
    coarser: Option<Coarser>,
}

impl HourBuckets {
    /// Deletes every bucket of `cluster_id`: they are about to be written again.
    pub fn start(conn: &Connection, cluster_id: &str) -> Result<Self, StorageError> {
        conn.execute(
            "DELETE FROM usage_buckets WHERE cluster_id = ?1",
            [cluster_id],
        )?;
        Ok(Self {
            cluster_id: cluster_id.to_owned(),
            current: None,
            groups: HashMap::new(),
            hours: BTreeSet::new(),
            coarser: Some(Coarser::default()),
        })
    }

    /// Adds a unit of hour `hour`; hours must come in ascending order.
    pub fn add(
        &mut self,
        conn: &Connection,
        hour: &str,
        unit: &BucketUnit<'_>,
    ) -> Result<(), StorageError> {
        self.enter(conn, hour)?;
        add_unit(&mut self.groups, unit);
        Ok(())
    }

    /// As [`HourBuckets::add`], from a row of [`unit_columns`] starting at column `first`.
    fn add_row(
        &mut self,
        conn: &Connection,
        hour: &str,
        row: &Row<'_>,
        first: usize,
    ) -> Result<(), StorageError> {
        self.enter(conn, hour)?;
        add_unit_row(row, first, &mut self.groups)?;
        Ok(())
    }

    /// Writes the hour being built when `hour` is another one.
    fn enter(&mut self, conn: &Connection, hour: &str) -> Result<(), StorageError> {
        if self.current.as_deref() != Some(hour) {
            self.write_current(conn)?;
            let follows = self.hours.last().is_none_or(|last| last.as_str() < hour);
            if !follows || hour.chars().count() < SPANS[1] {
                self.coarser = None;
            }
            self.hours.insert(hour.to_owned());
            self.current = Some(hour.to_owned());
        }
        Ok(())
    }

    fn write_current(&mut self, conn: &Connection) -> Result<(), StorageError> {
        if let Some(done) = self.current.take() {
            replace_bucket(conn, &self.cluster_id, HOUR, &done, &self.groups)?;
            if let Some(coarser) = &mut self.coarser {
                coarser.add_hour(conn, &self.cluster_id, &done, &self.groups)?;
            }
            self.groups.clear();
        }
        Ok(())
    }

    /// Writes the last hour, its day and month (or every day and month from the stored
    /// hours), and marks the cluster's buckets complete.
    pub fn finish(mut self, conn: &Connection) -> Result<(), StorageError> {
        self.write_current(conn)?;
        match self.coarser.take() {
            Some(coarser) => coarser.finish(conn, &self.cluster_id)?,
            None => refresh_coarser(conn, &self.cluster_id, &self.hours)?,
        }
        MARKER.mark(conn, &self.cluster_id)
    }
}

/// The day and month buckets of [`HourBuckets`], merged in memory from the hours as they
/// are written, as [`refresh_coarser`] merges them from the stored rows: each finer
/// group as its stored sums read back ([`Sums::stored`]), in ascending bucket order, the
/// bare columns of the latest. That holds while hours come in ascending order and each
/// has at least a day's characters, so that the hours a day's range of buckets holds
/// are the ones before the next day (and the same for days in a month).
#[derive(Default)]
struct Coarser {
    day: Option<(String, HashMap<GroupKey, Group>)>,
    month: Option<(String, HashMap<GroupKey, Group>)>,
}

impl Coarser {
    fn add_hour(
        &mut self,
        conn: &Connection,
        cluster_id: &str,
        hour: &str,
        groups: &HashMap<GroupKey, Group>,
    ) -> Result<(), StorageError> {
        let day = prefix(hour, SPANS[1]);
        if self.day.as_ref().is_none_or(|(current, _)| current != day) {
            self.write_day(conn, cluster_id)?;
            self.day = Some((day.to_owned(), HashMap::new()));
        }
        if let Some((_, day_groups)) = &mut self.day {
            merge_stored(day_groups, groups);
        }
        Ok(())
    }

    /// Writes the day being merged and merges it into its month.
    fn write_day(&mut self, conn: &Connection, cluster_id: &str) -> Result<(), StorageError> {
        let Some((day, groups)) = self.day.take() else {
            return Ok(());
        };
        replace_bucket(conn, cluster_id, SPANS[1], &day, &groups)?;
        let month = prefix(&day, SPANS[0]);
        if self
            .month
            .as_ref()
            .is_none_or(|(current, _)| current != month)
        {
            self.write_month(conn, cluster_id)?;
            self.month = Some((month.to_owned(), HashMap::new()));
        }
        if let Some((_, month_groups)) = &mut self.month {
            merge_stored(month_groups, &groups);
        }
        Ok(())
    }

    fn write_month(&mut self, conn: &Connection, cluster_id: &str) -> Result<(), StorageError> {
        if let Some((month, groups)) = self.month.take() {
            replace_bucket(conn, cluster_id, SPANS[0], &month, &groups)?;
        }
        Ok(())
    }

    fn finish(mut self, conn: &Connection, cluster_id: &str) -> Result<(), StorageError> {
        self.write_day(conn, cluster_id)?;
        self.write_month(conn, cluster_id)
    }
}

/// Merges the groups of a finer bucket into `into` as [`read_buckets`] merges its rows.
fn merge_stored(into: &mut HashMap<GroupKey, Group>, finer: &HashMap<GroupKey, Group>) {
    for (key, group) in finer {
        let merged = match into.get_mut(key) {
            Some(merged) => merged,
            None => into.entry(key.clone()).or_default(),
        };
        merged.resource_manager.clone_from(&group.resource_manager);
        merged.groupname.clone_from(&group.groupname);
        merged.sums.merge(&group.sums.stored());
    }
}

/// `SELECT <leading><unit columns> FROM units <clause>` read along the
/// `(cluster_id, last_updated_at)` index: with the sampled statistics of a large file the
/// planner may prefer a full scan and an external sort of every unit's maps. Without the
/// index (dropped by hand), the planner chooses.
fn prepare_by_update_time<'c>(
    conn: &'c Connection,
    clause: &str,
    leading: &str,
) -> Result<rusqlite::CachedStatement<'c>, StorageError> {
    let columns = unit_columns();
    match conn.prepare_cached(&format!(
        "SELECT {leading}{columns} FROM units INDEXED BY idx_units_cluster_updated {clause}"
    )) {
        Ok(statement) => Ok(statement),
        Err(_) => {
            Ok(conn.prepare_cached(&format!("SELECT {leading}{columns} FROM units {clause}"))?)
        }
    }
}

/// Recomputes the buckets of `cluster_id` that hold the hours in `hours` (hour prefixes of
/// `last_updated_at`): each hour from its units, then each day from its hours, then each
/// month from its days. Runs in the writer's transaction.
pub fn refresh(
    conn: &Connection,
    cluster_id: &str,
    hours: &BTreeSet<String>,
) -> Result<(), StorageError> {
    let mut statement = prepare_by_update_time(
        conn,
        "WHERE cluster_id = ?1 AND last_updated_at >= ?2 AND last_updated_at < ?3",
        "",
    )?;
    for hour in hours {
        let mut groups = HashMap::new();
        let mut rows = statement.query(params![cluster_id, hour, after_prefix(hour)])?;
        while let Some(row) = rows.next()? {
            add_unit_row(row, 0, &mut groups)?;
        }
        replace_bucket(conn, cluster_id, HOUR, hour, &groups)?;
    }
    refresh_coarser(conn, cluster_id, hours)
}

/// Recomputes the day and month buckets that hold `hours` from their finer buckets.
fn refresh_coarser(
    conn: &Connection,
    cluster_id: &str,
    hours: &BTreeSet<String>,
) -> Result<(), StorageError> {
    let mut touched: BTreeSet<String> = hours.clone();
    for pair in SPANS.windows(2).rev() {
        let (coarse, fine) = (pair[0], pair[1]);
        let buckets: BTreeSet<String> = touched
            .iter()
            .map(|bucket| prefix(bucket, coarse).to_owned())
            .collect();
        for bucket in &buckets {
            let groups = read_buckets(conn, cluster_id, fine, bucket)?;
            replace_bucket(conn, cluster_id, coarse, bucket, &groups)?;
        }
        touched = buckets;
    }
    Ok(())
}

/// The groups of `cluster_id` merged over its `span` buckets that start with `parent`.
fn read_buckets(
    conn: &Connection,
    cluster_id: &str,
    span: usize,
    parent: &str,
) -> Result<HashMap<GroupKey, Group>, StorageError> {
    let mut statement = conn.prepare_cached(
        "SELECT project, username, terminated, resource_manager, groupname, num_units, sums
         FROM usage_buckets WHERE cluster_id = ?1 AND span = ?2 AND bucket >= ?3 AND bucket < ?4
         ORDER BY bucket",
    )?;
    let mut rows = statement.query(params![
        cluster_id,
        span as i64,
        parent,
        after_prefix(parent)
    ])?;
    let mut groups: HashMap<GroupKey, Group> = HashMap::new();
    while let Some(row) = rows.next()? {
        let key = GroupKey {
            project: row.get(0)?,
            username: row.get(1)?,
            terminated: row.get(2)?,
        };
        let sums = Sums::decode(&row.get::<_, String>(6)?, row.get(5)?);
        // In bucket order: the latest bucket's bare columns are kept.
        let group = groups.entry(key).or_default();
        group.cluster_id = cluster_id.to_owned();
        group.resource_manager = row.get(3)?;
        group.groupname = row.get(4)?;
        group.sums.merge(&sums);
    }
    Ok(groups)
}

/// Replaces the `span` bucket `bucket` of `cluster_id` with `groups`.
fn replace_bucket(
    conn: &Connection,
    cluster_id: &str,
    span: usize,
    bucket: &str,
    groups: &HashMap<GroupKey, Group>,
) -> Result<(), StorageError> {
    conn.prepare_cached(
        "DELETE FROM usage_buckets WHERE cluster_id = ?1 AND span = ?2 AND bucket = ?3",
    )?
    .execute(params![cluster_id, span as i64, bucket])?;
    let mut insert = conn.prepare_cached(
        "INSERT OR REPLACE INTO usage_buckets (cluster_id, project, span, bucket, username, terminated, resource_manager, groupname, num_units, sums)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?;
    for (key, group) in groups {
        insert.execute(params![
            cluster_id,
            key.project,
            span as i64,
            bucket,
            key.username,
            key.terminated,
            group.resource_manager,
            group.groupname,
            group.sums.num_units,
            group.sums.encode(),
        ])?;
    }
    Ok(())
}

/// Builds every bucket of `cluster_id` from its units (a database written without them).
/// One pass over the cluster's units in `last_updated_at` order, an hour at a time.
pub fn rebuild(conn: &Connection, cluster_id: &str) -> Result<usize, StorageError> {
    let mut buckets = HourBuckets::start(conn, cluster_id)?;
    let mut statement = prepare_by_update_time(
        conn,
        "WHERE cluster_id = ?1 ORDER BY last_updated_at",
        &format!("substr(last_updated_at, 1, {HOUR}), "),
    )?;
    let mut rows = statement.query([cluster_id])?;
    let mut units = 0;
    while let Some(row) = rows.next()? {
        let hour: String = row.get::<_, Option<String>>(0)?.unwrap_or_default();
        buckets.add_row(conn, &hour, row, 1)?;
        units += 1;
    }
    drop(rows);
    drop(statement);
    buckets.finish(conn)?;
    Ok(units)
}

/// Hour prefixes of the units of `cluster_id` that the retention purge is about to delete
/// (ended at or before `cutoff_ms`), per cluster whose buckets are kept.
pub fn hours_of_purged_units(
    conn: &Connection,
    cutoff_ms: i64,
) -> Result<HashMap<String, BTreeSet<String>>, StorageError> {
    let mut statement = conn.prepare(&format!(
        "SELECT DISTINCT cluster_id, substr(last_updated_at, 1, {HOUR}) FROM units WHERE {}",
        super::write::EXPIRED_UNITS
    ))?;
    let mut rows = statement.query([cutoff_ms])?;
    let mut hours: HashMap<String, BTreeSet<String>> = HashMap::new();
    while let Some(row) = rows.next()? {
        let cluster_id: String = row.get::<_, Option<String>>(0)?.unwrap_or_default();
        let hour: String = row.get::<_, Option<String>>(1)?.unwrap_or_default();
        hours.entry(cluster_id).or_default().insert(hour);
    }
    let mut kept = HashMap::new();
    for (cluster_id, hours) in hours {
        if MARKER.is_set(conn, &cluster_id)? {
            kept.insert(cluster_id, hours);
        }
    }
    Ok(kept)
}

/// A range of `last_updated_at` read from `units`: `low` included, `high` included when
/// `high_inclusive`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitRange {
    pub low: String,
    pub high: String,
    pub high_inclusive: bool,
}

/// A range of bucket keys of one span: `high` excluded, `low` included when
/// `low_inclusive`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketRange {
    pub span: usize,
    pub low: String,
    pub low_inclusive: bool,
    pub high: String,
}

/// How a window `[from, to]` of `last_updated_at` is read: units for the partial hours at
/// its edges, the largest buckets that fit in between.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cover {
    pub units: Vec<UnitRange>,
    pub buckets: Vec<BucketRange>,
}

/// The [`Cover`] of `[from, to]`. Every text `t` with `from <= t <= to` falls in exactly
/// one of its ranges: a bucket's key is a prefix of `t`, and prefixes order as the texts.
pub fn cover(from: &str, to: &str) -> Cover {
    let mut cover = Cover::default();
    if from > to {
        return cover;
    }
    let (from_hour, to_hour) = (prefix(from, HOUR), prefix(to, HOUR));
    if from_hour >= to_hour {
        cover.units.push(UnitRange {
            low: from.to_owned(),
            high: to.to_owned(),
            high_inclusive: true,
        });
        return cover;
    }
    cover.units.push(UnitRange {
        low: from.to_owned(),
        high: after_prefix(from_hour),
        high_inclusive: false,
    });
    cover.units.push(UnitRange {
        low: to_hour.to_owned(),
        high: to.to_owned(),
        high_inclusive: true,
    });
    cover_between(&SPANS, from_hour, to_hour, &mut cover.buckets);
    cover
}

/// Buckets of span `spans.last()` strictly between keys `low` and `high` of that span,
/// through coarser buckets where whole ones fit.
fn cover_between(spans: &[usize], low: &str, high: &str, out: &mut Vec<BucketRange>) {
    let span = spans[spans.len() - 1];
    let whole = |low: &str, low_inclusive: bool, high: &str| BucketRange {
        span,
        low: low.to_owned(),
        low_inclusive,
        high: high.to_owned(),
    };
    if spans.len() == 1 {
        out.push(whole(low, false, high));
        return;
    }
    let coarse = spans[spans.len() - 2];
    let (coarse_low, coarse_high) = (prefix(low, coarse), prefix(high, coarse));
    if coarse_low >= coarse_high {
        out.push(whole(low, false, high));
        return;
    }
    out.push(whole(low, false, &after_prefix(coarse_low)));
    out.push(whole(coarse_high, true, high));
    cover_between(&spans[..spans.len() - 1], coarse_low, coarse_high, out);
}

/// Current usage summed per (user, project) from units and buckets.
#[derive(Debug, Default)]
pub struct Totals(HashMap<(String, String), Group>);

impl Totals {
    /// The total of (user, project), whose bare columns become those of `latest` when it
    /// is at least as late as what the total holds.
    fn total_mut(
        &mut self,
        key: GroupKey,
        latest: &str,
        bare: impl FnOnce() -> rusqlite::Result<Bare>,
    ) -> rusqlite::Result<&mut Group> {
        let total = self.0.entry((key.username, key.project)).or_default();
        if latest >= total.latest.as_str() {
            let Bare {
                cluster_id,
                resource_manager,
                groupname,
            } = bare()?;
            latest.clone_into(&mut total.latest);
            total.cluster_id = cluster_id;
            total.resource_manager = resource_manager;
            total.groupname = groupname;
        }
        Ok(total)
    }

    /// Adds the units selected by `SELECT ... FROM units WHERE <predicate>`.
    pub fn add_units(
        &mut self,
        conn: &Connection,
        predicate: &str,
        params: &[rusqlite::types::Value],
    ) -> Result<(), StorageError> {
        let mut statement = conn.prepare_cached(&format!(
            "SELECT {} FROM units WHERE {predicate}",
            unit_columns()
        ))?;
        let mut rows = statement.query(rusqlite::params_from_iter(params))?;
        super::log_statement(rows.as_ref());
        let mut groups = HashMap::new();
        while let Some(row) = rows.next()? {
            add_unit_row(row, 0, &mut groups)?;
        }
        for (key, group) in groups {
            let Group {
                latest,
                cluster_id,
                resource_manager,
                groupname,
                sums,
            } = group;
            let bare = || {
                Ok(Bare {
                    cluster_id,
                    resource_manager,
                    groupname,
                })
            };
            self.total_mut(key, &latest, bare)?.sums.merge(&sums);
        }
        Ok(())
    }

    /// Adds the buckets selected by `SELECT ... FROM usage_buckets WHERE <predicate>`,
    /// each bucket's sums added from its text as it is read.
    pub fn add_buckets(
        &mut self,
        conn: &Connection,
        predicate: &str,
        params: &[rusqlite::types::Value],
    ) -> Result<(), StorageError> {
        let mut statement = conn.prepare_cached(&format!(
            "SELECT cluster_id, resource_manager, username, project, groupname, terminated, num_units, sums, bucket
             FROM usage_buckets WHERE {predicate}"
        ))?;
        let mut rows = statement.query(rusqlite::params_from_iter(params))?;
        super::log_statement(rows.as_ref());
        while let Some(row) = rows.next()? {
            let key = GroupKey {
                username: row.get(2)?,
                project: row.get(3)?,
                terminated: row.get(5)?,
            };
            let bare = || {
                Ok(Bare {
                    cluster_id: row.get(0)?,
                    resource_manager: row.get(1)?,
                    groupname: row.get(4)?,
                })
            };
            let latest = borrowed_text(row, 8)?;
            let sums = borrowed_text(row, 7)?;
            let num_units = row.get(6)?;
            self.total_mut(key, latest, bare)?
                .sums
                .add_text(sums, num_units);
        }
        Ok(())
    }

    /// The rows of current usage for the selected `fields`, each metric of `items` holding
    /// exactly its listed keys, ordered by cluster, user and project. `None` when a sum
    /// could not be kept exactly as SQLite computes it (the caller asks `units` instead).
    pub fn into_usage(
        self,
        fields: UsageFieldSet,
        items: &[(Metric, Vec<String>)],
    ) -> Option<Vec<Usage>> {
        let mut rows = Vec::with_capacity(self.0.len());
        for ((username, project), group) in self.0 {
            if group.sums.inexact {
                return None;
            }
            let mut usage = Usage::default();
            if fields.contains(UsageField::ClusterId) {
                usage.cluster_id = group.cluster_id.clone();
            }
            if fields.contains(UsageField::ResourceManager) {
                usage.resource_manager = group.resource_manager.clone();
            }
            if fields.contains(UsageField::NumUnits) {
                usage.num_units = group.sums.num_units;
            }
            if fields.contains(UsageField::Project) {
                usage.project = project.clone();
            }
            if fields.contains(UsageField::Groupname) {
                usage.groupname = group.groupname.clone();
            }
            if fields.contains(UsageField::Username) {
                usage.username = username.clone();
            }
            for (metric, keys) in items {
                let mut map = MetricMap::default();
                for key in keys {
                    map.0
                        .insert(key.clone(), metric_value(&group.sums, *metric, key)?);
                }
                *usage.metrics.get_mut(*metric) = map;
            }
            rows.push((group.cluster_id, username, project, usage));
        }
        rows.sort_by(|a, b| (&a.0, &a.1, &a.2).cmp(&(&b.0, &b.1, &b.2)));
        Some(rows.into_iter().map(|(_, _, _, usage)| usage).collect())
    }
}

/// The value the SQL of current usage gives `key` of `metric` for a group: the sum, or for
/// an average `SUM(value × weight) * 1.0 / SUM(weight)`; NULL (no value, a zero weight) as
/// 0; a real rounded to 15 significant digits as the scan's results are
/// ([`MetricMap::decode_sql_aggregate`]). `None` for a result that is not finite.
fn metric_value(sums: &Sums, metric: Metric, key: &str) -> Option<f64> {
    let value = match metric.weight_key() {
        None => match sums.map(metric).get(key) {
            None => return Some(0.0),
            Some(Sum::Int(total)) => return Some(*total as f64),
            Some(sum) => sum.value(),
        },
        Some(weight_key) => {
            let numerator = sums.map(metric).get(key);
            let weight = sums.map(Metric::TotalTimeSeconds).get(weight_key);
            let (Some(numerator), Some(weight)) = (numerator, weight) else {
                return Some(0.0);
            };
            let weight = weight.value();
            if weight == 0.0 {
                return Some(0.0);
            }
            numerator.value() / weight
        }
    };
    value.is_finite().then(|| round_to_15_digits(value))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::model::time::format_dt;
    use crate::model::{CurrentUsageQuery, DtWindow, Filters, List, Project, Scope, Unit};
    use crate::storage::queries::{current_usage, CurrentUsage};
    use crate::storage::test_support::{database, random_unit, write_at, Numbers};
    use crate::storage::write::purge_expired_rows;

    const CLUSTER: &str = "c1";
    const EPOCH: i64 = 1_706_652_000; // 2024-01-30T22:00:00Z

    /// Sums of the given (metric, key, value) additions, `num_units` units.
    fn sums_of(num_units: i64, values: &[(Metric, &str, Sum)]) -> Sums {
        let mut sums = Sums {
            num_units,
            ..Sums::default()
        };
        for (metric, key, value) in values {
            sums.add_value(*metric, key, Some(Ok(*value)));
        }
        sums
    }

    #[test]
    fn stored_sums_are_what_their_text_reads_back_as() {
        let real = |sum: f64| Sum::Real { sum, err: 0.0 };
        let cases = [
            sums_of(0, &[]),
            sums_of(
                3,
                &[
                    (Metric::TotalTimeSeconds, "walltime", Sum::Int(7)),
                    (Metric::TotalTimeSeconds, "walltime", real(0.1)),
                    (Metric::TotalTimeSeconds, "walltime", real(0.2)),
                    (Metric::TotalTimeSeconds, "walltime", real(1e16)),
                    (Metric::AvgCpuUsage, "global", real(-0.0)),
                    (Metric::AvgCpuUsage, "global", real(-0.0)),
                    (Metric::AvgGpuUsage, "global", real(-0.0)),
                    (Metric::TotalIngressStats, "bytes_total", Sum::Int(i64::MAX)),
                    (Metric::TotalEgressStats, "bytes_total", real(1e300)),
                    (Metric::TotalEgressStats, "errors", real(1.5e-300)),
                ],
            ),
            sums_of(1, &[(Metric::AvgCpuUsage, "global", real(f64::INFINITY))]),
            sums_of(1, &[(Metric::AvgCpuUsage, "global", real(f64::NAN))]),
            sums_of(
                2,
                &[
                    (Metric::AvgCpuUsage, "global", real(f64::MAX)),
                    (Metric::AvgCpuUsage, "global", real(f64::MAX)),
                ],
            ),
            sums_of(
                2,
                &[
                    (Metric::AvgCpuUsage, "global", Sum::Int(i64::MAX)),
                    (Metric::AvgCpuUsage, "global", Sum::Int(1)),
                ],
            ),
            sums_of(1, &[(Metric::AvgCpuUsage, "a \"quoted\" key", real(2.5))]),
        ];
        for sums in cases {
            let text = sums.encode();
            assert_eq!(sums.stored(), Sums::decode(&text, sums.num_units), "{text}");
        }
    }

    fn projects() -> Vec<Project> {
        (0..3)
            .map(|index| Project {
                cluster_id: CLUSTER.into(),
                resource_manager: "slurm".into(),
                name: format!("p{index}"),
                users: List::decode(&format!("[\"u{index}\",\"u{}\"]", index + 2)).unwrap(),
                ..Project::default()
            })
            .collect()
    }

    fn write(conn: &mut Connection, end_s: i64, units: &[Unit]) {
        write_at(conn, CLUSTER, end_s, units, &projects());
    }

    /// Windows ending over 40 days across a month boundary, each writing new units and
    /// updating running ones again (with new values), which moves them to a later hour.
    fn history(conn: &mut Connection) {
        let mut numbers = Numbers::new(7);
        let mut running: Vec<(u64, i64)> = Vec::new();
        let mut uuid = 0;
        let mut end = EPOCH;
        for window in 0..60 {
            end += 900 + (numbers.next(40) as i64) * 1_800 + (window % 3) * 86_400 / 4;
            let mut units = Vec::new();
            for _ in 0..(3 + numbers.next(6)) {
                uuid += 1;
                let started = end - 600;
                if numbers.next(3) == 0 {
                    running.push((uuid, started));
                    units.push(random_unit(&mut numbers, CLUSTER, uuid, started, None));
                } else {
                    units.push(random_unit(
                        &mut numbers,
                        CLUSTER,
                        uuid,
                        started,
                        Some(end - 60),
                    ));
                }
            }
            let mut still_running = Vec::new();
            for (id, started) in running.drain(..) {
                match numbers.next(3) {
                    0 => units.push(random_unit(
                        &mut numbers,
                        CLUSTER,
                        id,
                        started,
                        Some(end - 30),
                    )),
                    1 => {
                        units.push(random_unit(&mut numbers, CLUSTER, id, started, None));
                        still_running.push((id, started));
                    }
                    _ => still_running.push((id, started)),
                }
            }
            running = still_running;
            write(conn, end, &units);
        }
    }

    fn query(scope: Scope, from_s: i64, to_s: i64, terminated_only: bool) -> CurrentUsageQuery {
        CurrentUsageQuery {
            scope,
            filters: Filters::default(),
            window: DtWindow {
                from: format_dt(from_s, chrono_tz::UTC),
                to: format_dt(to_s, chrono_tz::UTC),
            },
            fields: UsageFieldSet::all(),
            experimental: false,
            terminated_only,
            group_by: Vec::new(),
        }
    }

    /// Windows of many lengths and offsets (edges on and off hours, days and months), for
    /// an admin, two users and `__terminated`.
    fn queries() -> Vec<CurrentUsageQuery> {
        let bounds: Vec<i64> = (0..10)
            .map(|index| EPOCH - 7_200 + index * 434_583 - (index % 4) * 2_700)
            .collect();
        let mut queries = Vec::new();
        for &from in &bounds {
            for &to in bounds.iter().filter(|to| **to >= from) {
                for scope in [
                    Scope::Admin,
                    Scope::User("u1".into()),
                    Scope::User("u4".into()),
                ] {
                    queries.push(query(scope.clone(), from, to, false));
                }
                queries.push(query(Scope::Admin, from, to, true));
            }
        }
        queries
    }

    fn answers(conn: &Connection) -> Vec<CurrentUsage> {
        queries()
            .iter()
            .map(|query| current_usage(conn, query).unwrap())
            .collect()
    }

    /// The answers with the buckets, then from `units` alone (marker removed), which must
    /// be the same.
    fn assert_buckets_answer_as_units(conn: &Connection) {
        assert!(MARKER.is_set(conn, CLUSTER).unwrap());
        let from_buckets = answers(conn);
        conn.execute("DELETE FROM usage_bucket_clusters", [])
            .unwrap();
        let from_units = answers(conn);
        MARKER.mark(conn, CLUSTER).unwrap();
        let non_empty = from_units
            .iter()
            .filter(|answer| answer.rows.as_ref().is_some_and(|rows| !rows.is_empty()))
            .count();
        assert!(non_empty > 100, "only {non_empty} windows hold usage");
        for (index, (buckets, units)) in from_buckets.iter().zip(&from_units).enumerate() {
            assert_same_usage(
                buckets,
                units,
                &format!("query {index}: {:?}", queries()[index]),
            );
            // The group's bare `groupname` is one of its units' (SQLite: "an arbitrary row").
            for row in buckets.rows.iter().flatten() {
                let held: i64 = conn
                    .query_row(
                        "SELECT COUNT(*) FROM units WHERE username = ?1 AND project = ?2 AND groupname = ?3",
                        [&row.username, &row.project, &row.groupname],
                        |row| row.get(0),
                    )
                    .unwrap();
                assert!(held > 0, "{row:?}");
            }
        }
    }

    /// Equal answers, except that a real may differ in its last (15th) digit: SQL sums in
    /// the order of its plan, buckets in theirs.
    fn assert_same_usage(buckets: &CurrentUsage, units: &CurrentUsage, context: &str) {
        let rounded = |answer: &CurrentUsage| {
            let mut answer = answer.clone();
            for row in answer.rows.iter_mut().flatten() {
                row.groupname.clear();
                for metric in Metric::ALL {
                    for value in row.metrics.get_mut(metric).0.values_mut() {
                        *value = 0.0;
                    }
                }
            }
            answer
        };
        assert_eq!(rounded(buckets), rounded(units), "{context}");
        for (bucket_row, unit_row) in buckets
            .rows
            .iter()
            .flatten()
            .zip(units.rows.iter().flatten())
        {
            for metric in Metric::ALL {
                let pairs = bucket_row
                    .metrics
                    .get(metric)
                    .0
                    .values()
                    .zip(unit_row.metrics.get(metric).0.values());
                for (a, b) in pairs {
                    assert!(
                        (a - b).abs() <= 1e-14 * a.abs().max(b.abs()),
                        "{context}: {metric:?} {a} != {b}"
                    );
                }
            }
        }
    }

    #[test]
    fn cover_holds_each_text_of_the_window_once() {
        let texts: Vec<String> = (0..400)
            .map(|index| format_dt(EPOCH - 90_000 + index * 9_377, chrono_tz::UTC))
            .chain(["2024-02", "2024-02-01", "2024-02-01T05", "Unknown", ""].map(String::from))
            .collect();
        let bounds = [
            "2024-01-30T22:15:00",
            "2024-01-30T22:45:00",
            "2024-01-31T23:00:00",
            "2024-02-01T00:00:00",
            "2024-02-01T05:30:00",
            "2024-02-29T23:45:00",
            "2024-03-02T01:45:00",
        ];
        for from in bounds {
            for to in bounds {
                let cover = cover(from, to);
                for text in &texts {
                    let in_units = cover
                        .units
                        .iter()
                        .filter(|range| {
                            text.as_str() >= range.low.as_str()
                                && (text.as_str() < range.high.as_str()
                                    || (range.high_inclusive && *text == range.high))
                        })
                        .count();
                    let in_buckets = cover
                        .buckets
                        .iter()
                        .filter(|range| {
                            let key = prefix(text, range.span);
                            (key > range.low.as_str() || (range.low_inclusive && key == range.low))
                                && key < range.high.as_str()
                        })
                        .count();
                    let expected = usize::from(from <= text.as_str() && text.as_str() <= to);
                    assert_eq!(in_units + in_buckets, expected, "{from} {to} {text}");
                }
            }
        }
        let long = cover("2024-01-30T22:15:00", "2024-03-02T01:45:00");
        assert!(long.buckets.iter().any(|range| range.span == 7));
        assert!(long.buckets.iter().any(|range| range.span == 10));
    }

    #[test]
    fn sums_keep_sqlite_types() {
        let mut sum = Sum::Int(i64::MAX - 1);
        assert_eq!(sum.add(Sum::Int(2)), Err(Inexact));
        let mut sum = Sum::Int(3);
        sum.add(Sum::Int(4)).unwrap();
        assert_eq!(sum, Sum::Int(7));
        sum.add(Sum::Real { sum: 0.5, err: 0.0 }).unwrap();
        assert_eq!(sum.value(), 7.5);
        // Compensated: the small terms are not lost next to a large one.
        let mut sum = Sum::Real {
            sum: 1e16,
            err: 0.0,
        };
        for _ in 0..10 {
            sum.add(Sum::Real { sum: 1.0, err: 0.0 }).unwrap();
        }
        assert_eq!(sum.value(), 1e16 + 10.0);
        assert_eq!(Scalar::Int(3).times(Scalar::Int(4)), Some(Ok(Sum::Int(12))));
        assert_eq!(Scalar::Int(3).times(Scalar::Null), None);
        assert_eq!(
            Scalar::Int(i64::MAX).times(Scalar::Int(2)),
            Some(Ok(Sum::Real {
                sum: i64::MAX as f64 * 2.0,
                err: 0.0
            }))
        );
    }

    #[test]
    fn buckets_answer_as_units_do() {
        let mut conn = database();
        history(&mut conn);
        let buckets: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM usage_buckets WHERE span = 7",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert!(buckets > 0);
        assert_buckets_answer_as_units(&conn);
    }

    #[test]
    fn buckets_follow_the_retention_purge() {
        let mut conn = database();
        history(&mut conn);
        let transaction = conn.transaction().unwrap();
        let purged =
            purge_expired_rows(&transaction, (EPOCH + 12 * 86_400) * 1000, chrono_tz::UTC).unwrap();
        transaction.commit().unwrap();
        assert!(purged.units > 0);
        assert_buckets_answer_as_units(&conn);
    }

    #[test]
    fn rebuilt_buckets_equal_the_kept_ones() {
        let mut conn = database();
        history(&mut conn);
        let snapshot = |conn: &Connection| -> Vec<(String, i64, String, String, String, i64)> {
            let mut statement = conn
                .prepare(
                    "SELECT project, span, bucket, username, sums, num_units FROM usage_buckets
                     ORDER BY project, span, bucket, username, terminated",
                )
                .unwrap();
            statement
                .query_map([], |row| {
                    Ok((
                        row.get(0)?,
                        row.get(1)?,
                        row.get(2)?,
                        row.get(3)?,
                        row.get(4)?,
                        row.get(5)?,
                    ))
                })
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        };
        let kept = snapshot(&conn);
        let units: i64 = conn
            .query_row("SELECT COUNT(*) FROM units", [], |row| row.get(0))
            .unwrap();
        assert_eq!(rebuild(&conn, CLUSTER).unwrap() as i64, units);
        assert_eq!(snapshot(&conn), kept);
        assert_buckets_answer_as_units(&conn);
    }

    #[test]
    fn values_sqlite_reads_otherwise_are_answered_from_units() {
        let mut conn = database();
        history(&mut conn);
        conn.execute(
            "UPDATE units SET total_cpu_energy_usage_kwh = '{\"total\":\"12\"}' WHERE uuid = '5'",
            [],
        )
        .unwrap();
        let hours: BTreeSet<String> = conn
            .prepare("SELECT substr(last_updated_at, 1, 13) FROM units WHERE uuid = '5'")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        refresh(&conn, CLUSTER, &hours).unwrap();
        let inexact: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM usage_buckets WHERE sums = ''",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(inexact, 3, "the hour, day and month of the unit");
        assert_buckets_answer_as_units(&conn);
    }
}
