//! The custom SQL functions every connection registers: `add_metric_map`, `avg_metric_map`
//! and the aggregates `sum_metric_map_agg`, `avg_metric_map_agg`.
//!
//! Maps arrive as MetricMap text (decoded with [`MetricMap::decode`]) and leave as
//! MetricMap text (encoded with [`MetricMap::encode`]), so the stored format stays the
//! reference's. The arithmetic lives in plain functions ([`add_metric_maps`],
//! [`weighted_average_metric_maps`]) that the SQL wrappers call, so it can be tested
//! without SQLite.

use std::collections::BTreeMap;

use rusqlite::functions::{Aggregate, Context, FunctionFlags};
use rusqlite::types::ValueRef;
use rusqlite::Connection;

use crate::model::MetricMap;

/// Why a custom function rejected its arguments. Surfaces as a statement error, never as a
/// panic: the reference's callback panics on malformed map text and takes the process down.
#[derive(Debug, thiserror::Error)]
#[error("{function}: argument {position}: {reason}")]
pub struct FunctionArgumentError {
    function: &'static str,
    position: usize,
    reason: String,
}

pub const ADD_METRIC_MAP: &str = "add_metric_map";
pub const AVG_METRIC_MAP: &str = "avg_metric_map";
pub const SUM_METRIC_MAP_AGG: &str = "sum_metric_map_agg";
pub const AVG_METRIC_MAP_AGG: &str = "avg_metric_map_agg";

/// Registers the four functions on `conn`. Called for every connection (writer and
/// readers) because SQLite functions are per connection.
pub fn register_metric_map_functions(conn: &Connection) -> rusqlite::Result<()> {
    // Deterministic: same inputs, same output, so SQLite may use them in indexes and
    // factor them out of loops.
    let flags = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC;
    conn.create_scalar_function(ADD_METRIC_MAP, 2, flags, |ctx| {
        let existing = metric_map_argument(ctx, 0, ADD_METRIC_MAP)?;
        let current = metric_map_argument(ctx, 1, ADD_METRIC_MAP)?;
        Ok(add_metric_maps(&existing, &current).encode())
    })?;
    conn.create_scalar_function(AVG_METRIC_MAP, 4, flags, |ctx| {
        let existing = metric_map_argument(ctx, 0, AVG_METRIC_MAP)?;
        let current = metric_map_argument(ctx, 1, AVG_METRIC_MAP)?;
        let existing_weight = weight_argument(ctx, 2, AVG_METRIC_MAP)?;
        let current_weight = weight_argument(ctx, 3, AVG_METRIC_MAP)?;
        Ok(
            weighted_average_metric_maps(&existing, &current, existing_weight, current_weight)
                .encode(),
        )
    })?;
    conn.create_aggregate_function(SUM_METRIC_MAP_AGG, 1, flags, SumMetricMapAggregate)?;
    conn.create_aggregate_function(AVG_METRIC_MAP_AGG, 2, flags, AvgMetricMapAggregate)?;
    Ok(())
}

/// Key-wise union of two maps: shared keys are added, the others copied.
pub fn add_metric_maps(existing: &MetricMap, current: &MetricMap) -> MetricMap {
    let mut sum = existing.0.clone();
    for (key, value) in &current.0 {
        *sum.entry(key.clone()).or_insert(0.0) += value;
    }
    MetricMap(sum)
}

/// Weighted mean per key. For each key, `S = Σ v·w` and `W = Σ w` over the maps holding
/// it; the result is `S / W` when `W > 0`, else `S` (so 0 when every weight is 0). This is
/// the reference's rule: a key only in `existing` keeps its value when `existing_weight > 0`
/// and becomes 0 when it is 0.
pub fn weighted_average_metric_maps(
    existing: &MetricMap,
    current: &MetricMap,
    existing_weight: f64,
    current_weight: f64,
) -> MetricMap {
    let mut sums = WeightedSums::default();
    sums.add_map(existing, existing_weight);
    sums.add_map(current, current_weight);
    sums.finish()
}

/// Running `Σ v·w` and `Σ w` per key, the state shared by `avg_metric_map` and
/// `avg_metric_map_agg`.
#[derive(Debug, Default)]
struct WeightedSums(BTreeMap<String, (f64, f64)>);

impl WeightedSums {
    fn add_map(&mut self, map: &MetricMap, weight: f64) {
        for (key, value) in &map.0 {
            let (weighted_sum, weight_sum) = self.0.entry(key.clone()).or_insert((0.0, 0.0));
            *weighted_sum += value * weight;
            *weight_sum += weight;
        }
    }

    fn finish(self) -> MetricMap {
        MetricMap(
            self.0
                .into_iter()
                .map(|(key, (weighted_sum, weight_sum))| {
                    let value = if weight_sum > 0.0 {
                        weighted_sum / weight_sum
                    } else {
                        weighted_sum
                    };
                    (key, value)
                })
                .collect(),
        )
    }
}

/// `sum_metric_map_agg(m)`: key-wise sum over the rows. Rows holding `{}`, `null` or SQL
/// NULL add nothing. Each row is decoded into a fresh map (the reference reuses one map,
/// which leaks a key's value into later rows that lack it).
struct SumMetricMapAggregate;

impl Aggregate<MetricMap, String> for SumMetricMapAggregate {
    fn init(&self, _ctx: &mut Context<'_>) -> rusqlite::Result<MetricMap> {
        Ok(MetricMap::default())
    }

    fn step(&self, ctx: &mut Context<'_>, sum: &mut MetricMap) -> rusqlite::Result<()> {
        if is_skipped_map_text(ctx.get_raw(0)) {
            return Ok(());
        }
        let row = metric_map_argument(ctx, 0, SUM_METRIC_MAP_AGG)?;
        for (key, value) in row.0 {
            *sum.0.entry(key).or_insert(0.0) += value;
        }
        Ok(())
    }

    fn finalize(&self, _ctx: &mut Context<'_>, sum: Option<MetricMap>) -> rusqlite::Result<String> {
        Ok(sum.unwrap_or_default().encode())
    }
}

/// `avg_metric_map_agg(m, w)`: weighted mean per key over the rows. Rows holding `{}`,
/// `null`, SQL NULL or a zero weight are skipped. Fresh map per row, as above.
struct AvgMetricMapAggregate;

impl Aggregate<WeightedSums, String> for AvgMetricMapAggregate {
    fn init(&self, _ctx: &mut Context<'_>) -> rusqlite::Result<WeightedSums> {
        Ok(WeightedSums::default())
    }

    fn step(&self, ctx: &mut Context<'_>, sums: &mut WeightedSums) -> rusqlite::Result<()> {
        // The weight is checked first so that a text weight is an error even on a `{}` row.
        let weight = weight_argument(ctx, 1, AVG_METRIC_MAP_AGG)?;
        if weight == 0.0 || is_skipped_map_text(ctx.get_raw(0)) {
            return Ok(());
        }
        let row = metric_map_argument(ctx, 0, AVG_METRIC_MAP_AGG)?;
        sums.add_map(&row, weight);
        Ok(())
    }

    fn finalize(
        &self,
        _ctx: &mut Context<'_>,
        sums: Option<WeightedSums>,
    ) -> rusqlite::Result<String> {
        Ok(sums.unwrap_or_default().finish().encode())
    }
}

/// The rows the aggregates skip without decoding.
fn is_skipped_map_text(value: ValueRef<'_>) -> bool {
    match value {
        ValueRef::Null => true,
        ValueRef::Text(bytes) | ValueRef::Blob(bytes) => bytes == b"{}" || bytes == b"null",
        ValueRef::Integer(_) | ValueRef::Real(_) => false,
    }
}

fn argument_error(function: &'static str, index: usize, reason: String) -> rusqlite::Error {
    rusqlite::Error::UserFunctionError(Box::new(FunctionArgumentError {
        function,
        position: index + 1,
        reason,
    }))
}

/// Reads a map argument. SQL NULL is an empty map (the reference fails the statement);
/// a number or text that does not decode is a statement error.
fn metric_map_argument(
    ctx: &Context<'_>,
    index: usize,
    function: &'static str,
) -> rusqlite::Result<MetricMap> {
    match ctx.get_raw(index) {
        ValueRef::Null => Ok(MetricMap::default()),
        ValueRef::Text(bytes) | ValueRef::Blob(bytes) => {
            let text = std::str::from_utf8(bytes)
                .map_err(|error| argument_error(function, index, error.to_string()))?;
            MetricMap::decode(text)
                .map_err(|error| argument_error(function, index, error.to_string()))
        }
        ValueRef::Integer(_) | ValueRef::Real(_) => Err(argument_error(
            function,
            index,
            "argument must be BLOB or TEXT".to_owned(),
        )),
    }
}

/// Reads a weight argument. REAL as is, INTEGER as its float value, SQL NULL as 0 (the
/// CAST of a missing JSON key is NULL; the reference fails the statement and loses the
/// update). Text is still an error: no caller passes one.
fn weight_argument(
    ctx: &Context<'_>,
    index: usize,
    function: &'static str,
) -> rusqlite::Result<f64> {
    match ctx.get_raw(index) {
        ValueRef::Null => Ok(0.0),
        ValueRef::Integer(integer) => Ok(integer as f64),
        ValueRef::Real(real) => Ok(real),
        ValueRef::Text(_) | ValueRef::Blob(_) => Err(argument_error(
            function,
            index,
            "argument must be a FLOAT".to_owned(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::collection::btree_map;
    use proptest::prelude::*;

    fn map(text: &str) -> MetricMap {
        MetricMap::decode(text).expect("test map text is valid")
    }

    fn connection() -> Connection {
        let conn = Connection::open_in_memory().expect("in-memory database");
        register_metric_map_functions(&conn).expect("register functions");
        conn
    }

    fn scalar(conn: &Connection, sql: &str) -> rusqlite::Result<String> {
        conn.query_row(sql, [], |row| row.get(0))
    }

    #[test]
    fn add_metric_map_adds_shared_keys_and_copies_the_others() {
        let conn = connection();
        let result = scalar(
            &conn,
            r#"SELECT add_metric_map('{"a":1,"b":2,"c":3}', '{"a":2,"c":"inf","b":"nan","d":9}')"#,
        )
        .unwrap();
        assert_eq!(result, r#"{"a":3,"b":2,"c":3,"d":9}"#);
    }

    #[test]
    fn add_metric_map_reencodes_with_eight_decimals() {
        let conn = connection();
        let result = scalar(&conn, r#"SELECT add_metric_map('{"a":0.1}', '{"a":0.2}')"#).unwrap();
        assert_eq!(result, r#"{"a":0.30000000}"#);
    }

    #[test]
    fn add_metric_map_treats_null_text_and_sql_null_as_empty() {
        let conn = connection();
        assert_eq!(
            scalar(&conn, r#"SELECT add_metric_map('null', '{"a":1}')"#).unwrap(),
            r#"{"a":1}"#
        );
        assert_eq!(
            scalar(&conn, r#"SELECT add_metric_map(NULL, '{"a":1}')"#).unwrap(),
            r#"{"a":1}"#
        );
        assert_eq!(
            scalar(&conn, "SELECT add_metric_map(NULL, NULL)").unwrap(),
            "{}"
        );
    }

    #[test]
    fn add_metric_map_accepts_blob_maps() {
        let conn = connection();
        assert_eq!(
            scalar(
                &conn,
                r#"SELECT add_metric_map(CAST('{"a":1}' AS BLOB), '{"a":1}')"#
            )
            .unwrap(),
            r#"{"a":2}"#
        );
    }

    #[test]
    fn malformed_maps_are_statement_errors() {
        let conn = connection();
        for sql in [
            r#"SELECT add_metric_map('', '{}')"#,
            r#"SELECT add_metric_map('{"a":', '{}')"#,
            r#"SELECT add_metric_map('{}', '{"a":"x"}')"#,
            r#"SELECT add_metric_map('{}', '{"a":NaN}')"#,
            r#"SELECT add_metric_map(1, '{}')"#,
            r#"SELECT avg_metric_map('{}', 2.5, 1.0, 1.0)"#,
            r#"SELECT avg_metric_map('{"a":1}', '{"a":1}', 'x', 1.0)"#,
            r#"SELECT sum_metric_map_agg(m) FROM (SELECT '{"a":"bad"}' AS m)"#,
            r#"SELECT avg_metric_map_agg(m, 1.0) FROM (SELECT '[' AS m)"#,
        ] {
            let error = scalar(&conn, sql).expect_err(sql);
            assert!(
                error.to_string().contains("argument"),
                "{sql}: unexpected error {error}"
            );
        }
        // The connection is still usable afterwards.
        assert_eq!(
            scalar(&conn, "SELECT add_metric_map('{}', '{}')").unwrap(),
            "{}"
        );
    }

    #[test]
    fn avg_metric_map_follows_the_reference_examples() {
        let conn = connection();
        assert_eq!(
            scalar(
                &conn,
                r#"SELECT avg_metric_map('{"a":1,"b":4,"c":8}', '{"a":4,"c":2,"b":1}', 1.0, 2.0)"#
            )
            .unwrap(),
            r#"{"a":3,"b":2,"c":4}"#
        );
        assert_eq!(
            scalar(
                &conn,
                r#"SELECT avg_metric_map('{"a":1,"b":3,"c":8}', '{"a":4,"c":2}', 1.0, 2.0)"#
            )
            .unwrap(),
            r#"{"a":3,"b":3,"c":4}"#
        );
    }

    #[test]
    fn avg_metric_map_zero_weights_give_the_weighted_sum() {
        let conn = connection();
        // w_e = 0: a key only in existing becomes 0; shared keys take the current value.
        assert_eq!(
            scalar(
                &conn,
                r#"SELECT avg_metric_map('{"a":5,"b":7}', '{"a":2}', 0.0, 3.0)"#
            )
            .unwrap(),
            r#"{"a":2,"b":0}"#
        );
        // Both weights 0: every key becomes 0.
        assert_eq!(
            scalar(
                &conn,
                r#"SELECT avg_metric_map('{"a":5,"b":7}', '{"a":2,"c":1}', 0.0, 0.0)"#
            )
            .unwrap(),
            r#"{"a":0,"b":0,"c":0}"#
        );
    }

    #[test]
    fn avg_metric_map_reads_integer_and_null_weights() {
        let conn = connection();
        assert_eq!(
            scalar(
                &conn,
                r#"SELECT avg_metric_map('{"a":1}', '{"a":4}', 1, 2)"#
            )
            .unwrap(),
            r#"{"a":3}"#
        );
        // A missing JSON key casts to NULL: counted as weight 0, so only current counts.
        assert_eq!(
            scalar(
                &conn,
                r#"SELECT avg_metric_map('{"a":1}', '{"a":4}',
                       CAST(json_extract('{}', '$.alloc_cputime') AS REAL), 2.0)"#
            )
            .unwrap(),
            r#"{"a":4}"#
        );
    }

    #[test]
    fn avg_metric_map_non_finite_values_encode_as_zero() {
        let conn = connection();
        // 1e308 * 10 overflows to +Inf; Inf / 11 is Inf, written as 0 like the reference.
        assert_eq!(
            scalar(
                &conn,
                r#"SELECT avg_metric_map('{"a":1e308}', '{}', 10.0, 1.0)"#
            )
            .unwrap(),
            r#"{"a":0}"#
        );
        assert_eq!(
            scalar(
                &conn,
                r#"SELECT avg_metric_map('{"a":"-Inf"}', '{"a":2}', 1.0, 1.0)"#
            )
            .unwrap(),
            r#"{"a":1}"#
        );
    }

    #[test]
    fn functions_are_deterministic_so_indexes_accept_them() {
        let conn = connection();
        conn.execute_batch(
            "CREATE TABLE t (a TEXT, b TEXT);
             CREATE INDEX t_add ON t (add_metric_map(a, b));
             CREATE INDEX t_avg ON t (avg_metric_map(a, b, 1.0, 1.0));
             INSERT INTO t VALUES ('{\"x\":1}', '{\"x\":2}');",
        )
        .expect("deterministic functions can be indexed");
    }

    fn aggregate_table(conn: &Connection, rows: &[(Option<&str>, Option<f64>)]) {
        conn.execute_batch("CREATE TABLE m (map TEXT, weight REAL)")
            .unwrap();
        for (map, weight) in rows {
            conn.execute(
                "INSERT INTO m VALUES (?1, ?2)",
                rusqlite::params![map, weight],
            )
            .unwrap();
        }
    }

    #[test]
    fn sum_metric_map_agg_adds_rows_with_fresh_maps() {
        let conn = connection();
        aggregate_table(
            &conn,
            &[
                (Some(r#"{"a":1,"b":2}"#), None),
                (Some("{}"), None),
                (Some("null"), None),
                (None, None),
                // No "b" here: the reference would re-add b=2 from its reused map.
                (Some(r#"{"a":3,"c":0.5}"#), None),
            ],
        );
        assert_eq!(
            scalar(&conn, "SELECT sum_metric_map_agg(map) FROM m").unwrap(),
            r#"{"a":4,"b":2,"c":0.50000000}"#
        );
        assert_eq!(
            scalar(&conn, "SELECT sum_metric_map_agg(map) FROM m WHERE 0").unwrap(),
            "{}"
        );
        assert_eq!(
            scalar(
                &conn,
                "SELECT sum_metric_map_agg(map) FROM m WHERE map = '{}'"
            )
            .unwrap(),
            "{}"
        );
    }

    #[test]
    fn avg_metric_map_agg_weights_rows_and_skips_zero_weights() {
        let conn = connection();
        aggregate_table(
            &conn,
            &[
                (Some(r#"{"a":1,"b":10}"#), Some(1.0)),
                (Some(r#"{"a":4}"#), Some(2.0)),
                (Some(r#"{"a":100,"z":5}"#), Some(0.0)),
                (Some(r#"{"a":100}"#), None),
                (Some("{}"), Some(5.0)),
                (Some("null"), Some(5.0)),
            ],
        );
        assert_eq!(
            scalar(&conn, "SELECT avg_metric_map_agg(map, weight) FROM m").unwrap(),
            r#"{"a":3,"b":10}"#
        );
        assert_eq!(
            scalar(
                &conn,
                "SELECT avg_metric_map_agg(map, weight) FROM m WHERE 0"
            )
            .unwrap(),
            "{}"
        );
    }

    #[test]
    fn avg_metric_map_agg_reads_integer_weights() {
        let conn = connection();
        assert_eq!(
            scalar(
                &conn,
                r#"SELECT avg_metric_map_agg(m, w) FROM
                   (SELECT '{"a":1}' AS m, 1 AS w UNION ALL SELECT '{"a":4}', 2)"#
            )
            .unwrap(),
            r#"{"a":3}"#
        );
    }

    fn metric_maps() -> impl Strategy<Value = MetricMap> {
        btree_map("[a-e]", -1.0e6..1.0e6f64, 0..5).prop_map(MetricMap)
    }

    fn integral_metric_maps() -> impl Strategy<Value = MetricMap> {
        btree_map(
            "[a-e]",
            (-1_000_000i64..1_000_000).prop_map(|v| v as f64),
            0..5,
        )
        .prop_map(MetricMap)
    }

    fn close(left: f64, right: f64) -> bool {
        (left - right).abs() <= 1e-9 * left.abs().max(right.abs()).max(1.0)
    }

    proptest! {
        #[test]
        fn weighted_average_lies_between_the_contributing_values(
            existing in metric_maps(),
            current in metric_maps(),
            existing_weight in 1.0e-3..1.0e6f64,
            current_weight in 1.0e-3..1.0e6f64,
        ) {
            let result = weighted_average_metric_maps(&existing, &current, existing_weight, current_weight);
            for (key, value) in &result.0 {
                let contributing: Vec<f64> =
                    [existing.get(key), current.get(key)].into_iter().flatten().collect();
                let low = contributing.iter().copied().fold(f64::INFINITY, f64::min);
                let high = contributing.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                prop_assert!(
                    (close(*value, low) || *value >= low) && (close(*value, high) || *value <= high),
                    "{key}: {value} outside [{low}, {high}]"
                );
            }
        }

        #[test]
        fn weighted_average_is_symmetric_in_its_sides(
            existing in metric_maps(),
            current in metric_maps(),
            existing_weight in 0.0..1.0e6f64,
            current_weight in 0.0..1.0e6f64,
        ) {
            prop_assert_eq!(
                weighted_average_metric_maps(&existing, &current, existing_weight, current_weight),
                weighted_average_metric_maps(&current, &existing, current_weight, existing_weight)
            );
        }

        #[test]
        fn weighted_average_with_equal_weights_is_the_mean(
            existing in metric_maps(),
            current in metric_maps(),
            weight in 1.0e-3..1.0e6f64,
        ) {
            let result = weighted_average_metric_maps(&existing, &current, weight, weight);
            for (key, value) in &result.0 {
                let expected = match (existing.get(key), current.get(key)) {
                    (Some(left), Some(right)) => (left + right) / 2.0,
                    (Some(only), None) | (None, Some(only)) => only,
                    (None, None) => unreachable!("result keys come from the inputs"),
                };
                prop_assert!(close(*value, expected), "{key}: {value} != {expected}");
            }
        }

        #[test]
        fn weighted_average_with_zero_current_weight_keeps_existing_values(
            existing in metric_maps(),
            current in metric_maps(),
            existing_weight in 1.0e-3..1.0e6f64,
        ) {
            let result = weighted_average_metric_maps(&existing, &current, existing_weight, 0.0);
            for (key, value) in &result.0 {
                match existing.get(key) {
                    Some(kept) => prop_assert!(close(*value, kept), "{key}: {value} != {kept}"),
                    // Only in current with weight 0: S = 0 and W = 0.
                    None => prop_assert_eq!(*value, 0.0),
                }
            }
            let merged_again = weighted_average_metric_maps(&result, &current, existing_weight, 0.0);
            for (key, value) in &merged_again.0 {
                prop_assert!(close(*value, result.get(key).unwrap_or(0.0)));
            }
        }

        #[test]
        fn add_is_commutative(left in metric_maps(), right in metric_maps()) {
            prop_assert_eq!(add_metric_maps(&left, &right), add_metric_maps(&right, &left));
        }

        #[test]
        fn add_is_associative(
            first in integral_metric_maps(),
            second in integral_metric_maps(),
            third in integral_metric_maps(),
        ) {
            // Integral values well inside 2^53 add exactly, so equality is exact.
            prop_assert_eq!(
                add_metric_maps(&add_metric_maps(&first, &second), &third),
                add_metric_maps(&first, &add_metric_maps(&second, &third))
            );
        }

        #[test]
        fn add_keeps_the_union_of_keys(left in metric_maps(), right in metric_maps()) {
            let sum = add_metric_maps(&left, &right);
            let mut keys: Vec<&String> = left.0.keys().chain(right.0.keys()).collect();
            keys.sort();
            keys.dedup();
            prop_assert_eq!(sum.0.keys().collect::<Vec<_>>(), keys);
        }

        #[test]
        fn sql_and_plain_functions_agree(
            existing in metric_maps(),
            current in metric_maps(),
            existing_weight in 0.0..1.0e3f64,
            current_weight in 0.0..1.0e3f64,
        ) {
            let conn = connection();
            let from_sql: String = conn
                .query_row(
                    "SELECT avg_metric_map(?1, ?2, ?3, ?4)",
                    rusqlite::params![existing.encode(), current.encode(), existing_weight, current_weight],
                    |row| row.get(0),
                )
                .unwrap();
            let plain = weighted_average_metric_maps(
                &map(&existing.encode()),
                &map(&current.encode()),
                existing_weight,
                current_weight,
            );
            prop_assert_eq!(from_sql, plain.encode());
        }
    }
}
