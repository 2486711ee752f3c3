//! Pure steps of an update: which units are ignored, how many uuids one query may name,
//! the template values, and how answers become the units' metric maps.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use super::settings::TsdbSettings;
use crate::config::{TemplateValues, TsdbUpdaterConfig};
use crate::model::{Metric, MetricMap, Unit};

/// The smallest batch, whatever the sample limit says.
const MIN_BATCH_SIZE: usize = 10;

/// Uuids of the units that lived less than `cutoff`: ended, and `ended - started` below it.
pub fn ignored_uuids(units: &[Unit], cutoff: Duration) -> BTreeSet<String> {
    let cutoff_ms = i64::try_from(cutoff.as_millis()).unwrap_or(i64::MAX);
    units
        .iter()
        .filter(|unit| {
            !unit.uuid.is_empty()
                && unit.ended_at_ts > 0
                && unit.ended_at_ts.saturating_sub(unit.started_at_ts) < cutoff_ms
        })
        .map(|unit| unit.uuid.clone())
        .collect()
}

/// The distinct non-empty uuids, in unit order.
pub fn distinct_uuids(units: &[Unit]) -> Vec<&str> {
    let mut seen = BTreeSet::new();
    units
        .iter()
        .map(|unit| unit.uuid.as_str())
        .filter(|uuid| !uuid.is_empty() && seen.insert(*uuid))
        .collect()
}

/// How many uuids one query names, so that all queries of a batch together stay within the
/// TSDB's sample limit: `query_min_samples` of the series the limit allows when each of
/// `query_max_series` series holds one sample per scrape over the window, at least 10 and
/// at most `uuid_count`.
pub fn batch_size(
    duration: Duration,
    settings: &TsdbSettings,
    config: &TsdbUpdaterConfig,
    uuid_count: usize,
) -> usize {
    let scrape_ms = settings.scrape_interval.as_millis().max(1);
    let samples_per_series = u64::try_from(duration.as_millis() / scrape_ms)
        .unwrap_or(u64::MAX)
        .max(1);
    let series_samples = config
        .query_max_series
        .max(1)
        .saturating_mul(samples_per_series);
    let max_labels = settings.max_samples / series_samples;
    // Truncation is the rule; the product is far below 2^53.
    let allowed = (config.query_min_samples * max_labels as f64).floor() as usize;
    allowed.max(MIN_BATCH_SIZE).min(uuid_count)
}

/// The template values of one batch.
pub fn template_values(uuids: &[&str], range: Duration, settings: &TsdbSettings) -> TemplateValues {
    TemplateValues {
        uuids: uuids.join("|"),
        range,
        scrape_interval: settings.scrape_interval,
        evaluation_interval: settings.evaluation_interval,
        rate_interval: settings.rate_interval(),
    }
}

/// The window length used in queries: whole seconds.
pub fn query_range(window_duration: Duration) -> Duration {
    Duration::from_secs(window_duration.as_secs())
}

/// The range of a subquery: one millisecond short of the window, so that the sample at the
/// window start (already counted by the previous window) is left out.
pub fn subquery_range(range: Duration) -> Duration {
    range.saturating_sub(Duration::from_millis(1))
}

/// Seconds since the epoch as Prometheus reads them (`1700000000`, `1700000000.5`).
pub fn epoch_seconds(milliseconds: i64) -> String {
    format!("{}", milliseconds as f64 / 1000.0)
}

/// metric → submetric → uuid → value, for the (metric, submetric) pairs with at least
/// one successful query.
pub type Results = BTreeMap<Metric, BTreeMap<String, HashMap<String, f64>>>;

/// Every metric with results gets, in every unit, a new map holding the submetrics whose
/// results name the unit's uuid (possibly none: `{}`); NaN, infinite and negative values
/// are 0. Metrics without results keep their maps.
pub fn write_back(units: &mut [Unit], results: &Results) {
    for unit in units {
        for (metric, submetrics) in results {
            let map: BTreeMap<String, f64> = submetrics
                .iter()
                .filter_map(|(submetric, values)| {
                    values
                        .get(&unit.uuid)
                        .map(|value| (submetric.clone(), sanitize(*value)))
                })
                .collect();
            *unit.metrics.get_mut(*metric) = MetricMap(map);
        }
    }
}

fn sanitize(value: f64) -> f64 {
    if value.is_finite() && value > 0.0 {
        value
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(uuid: &str, started_at_ts: i64, ended_at_ts: i64) -> Unit {
        Unit {
            uuid: uuid.to_owned(),
            started_at_ts,
            ended_at_ts,
            ..Unit::default()
        }
    }

    #[test]
    fn short_ended_units_are_ignored() {
        let units = [
            unit("short", 1_000, 60_000),
            unit("long", 1_000, 700_000),
            unit("running", 1_000, 0),
            unit("", 1_000, 2_000),
            unit("exact", 0, 300_000),
        ];
        assert_eq!(
            ignored_uuids(&units, Duration::from_secs(300)),
            BTreeSet::from(["short".to_owned()])
        );
        assert!(ignored_uuids(&units, Duration::ZERO).is_empty());
    }

    #[test]
    fn batch_size_follows_the_sample_limit() {
        let config = TsdbUpdaterConfig::default();
        let mut settings = TsdbSettings {
            scrape_interval: Duration::from_secs(15),
            ..TsdbSettings::default()
        };
        let hour = Duration::from_secs(3600);
        // 50e6 / (50 × 240) = 4166 labels, half of it: 2083.
        assert_eq!(batch_size(hour, &settings, &config, 5000), 2083);
        assert_eq!(batch_size(hour, &settings, &config, 25), 25);
        settings.max_samples = 100_000;
        assert_eq!(batch_size(hour, &settings, &config, 25), 10, "at least 10");
        settings.max_samples = 0;
        assert_eq!(batch_size(hour, &settings, &config, 25), 10);
        assert_eq!(batch_size(hour, &settings, &config, 3), 3);
        // A window shorter than a scrape still counts one sample per series.
        settings.max_samples = 1_000;
        let tight = TsdbUpdaterConfig {
            query_max_series: 1,
            query_min_samples: 1.0,
            ..TsdbUpdaterConfig::default()
        };
        assert_eq!(
            batch_size(Duration::from_secs(5), &settings, &tight, 5000),
            1000
        );
        assert_eq!(batch_size(Duration::ZERO, &settings, &tight, 5000), 1000);
        assert_eq!(batch_size(Duration::ZERO, &settings, &tight, 0), 0);
    }

    #[test]
    fn uuids_are_distinct_and_non_empty() {
        let units = [
            unit("b", 0, 0),
            unit("", 0, 0),
            unit("a", 0, 0),
            unit("b", 0, 0),
        ];
        assert_eq!(distinct_uuids(&units), ["b", "a"]);
    }

    #[test]
    fn ranges_and_times() {
        assert_eq!(
            query_range(Duration::from_millis(3_600_999)),
            Duration::from_secs(3600)
        );
        assert_eq!(
            subquery_range(Duration::from_secs(3600)),
            Duration::from_millis(3_599_999)
        );
        assert_eq!(epoch_seconds(1_700_000_000_000), "1700000000");
        assert_eq!(epoch_seconds(1_700_000_000_250), "1700000000.25");
    }

    #[test]
    fn write_back_replaces_maps_of_answered_metrics_only() {
        let mut units = [unit("1", 0, 0), unit("2", 0, 0), unit("", 0, 0)];
        for unit in &mut units {
            unit.metrics.avg_cpu_usage = MetricMap(BTreeMap::from([("old".to_owned(), 1.0)]));
            unit.metrics.avg_gpu_usage = MetricMap(BTreeMap::from([("old".to_owned(), 2.0)]));
        }
        let results: Results = BTreeMap::from([(
            Metric::AvgCpuUsage,
            BTreeMap::from([
                (
                    "global".to_owned(),
                    HashMap::from([("1".to_owned(), 12.5), ("2".to_owned(), f64::NAN)]),
                ),
                (
                    "other".to_owned(),
                    HashMap::from([("1".to_owned(), -3.0), ("3".to_owned(), 9.0)]),
                ),
            ]),
        )]);
        write_back(&mut units, &results);
        assert_eq!(
            units[0].metrics.avg_cpu_usage.0,
            BTreeMap::from([("global".to_owned(), 12.5), ("other".to_owned(), 0.0)])
        );
        assert_eq!(
            units[1].metrics.avg_cpu_usage.0,
            BTreeMap::from([("global".to_owned(), 0.0)])
        );
        assert!(units[2].metrics.avg_cpu_usage.is_empty());
        for unit in &units {
            assert_eq!(
                unit.metrics.avg_gpu_usage.0,
                BTreeMap::from([("old".to_owned(), 2.0)])
            );
        }
        let infinite: Results = BTreeMap::from([(
            Metric::TotalIoReadStats,
            BTreeMap::from([(
                "bytes_total".to_owned(),
                HashMap::from([("1".to_owned(), f64::INFINITY)]),
            )]),
        )]);
        write_back(&mut units, &infinite);
        assert_eq!(
            units[0].metrics.total_io_read_stats.get("bytes_total"),
            Some(0.0)
        );
    }
}
