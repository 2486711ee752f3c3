//! The TSDB updater against a real Prometheus over backfilled series with simple shapes
//! (constant power, constant ratios, linear counters), whose per-window answers are
//! computed by hand below.

#[path = "../common/prometheus.rs"]
mod prometheus;

use std::collections::BTreeMap;
use std::time::Duration;

use ceems_api_server::config::{
    default_queries, ClientUrl, QueryTemplate, TsdbUpdaterConfig, UpdaterConfig, WebClientConfig,
};
use ceems_api_server::model::{MetricMap, Unit};
use ceems_api_server::pipeline::Window;
use ceems_api_server::updater::tsdb::TsdbUpdater;
use prometheus::{Prometheus, PrometheusOptions, Series};

/// Scrape and evaluation interval of the test Prometheus.
const STEP_MS: i64 = 15_000;
const HOUR_MS: i64 = 3_600_000;

/// A 2-hour-aligned time two days ago: the data lies in the past, in whole blocks.
fn base_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    (now / 7200 * 7200 - 2 * 86_400) * 1000
}

fn updater_config(url: &str, tsdb: TsdbUpdaterConfig) -> UpdaterConfig {
    UpdaterConfig {
        id: "tsdb-test".to_owned(),
        updater: "tsdb".to_owned(),
        web: WebClientConfig {
            url: Some(ClientUrl::parse(url).unwrap()),
            ..WebClientConfig::default()
        },
        tsdb,
    }
}

fn window(start_ms: i64, end_ms: i64) -> Window {
    Window::new(start_ms, end_ms, chrono_tz::Tz::UTC)
}

fn unit(uuid: &str) -> Unit {
    Unit {
        uuid: uuid.to_owned(),
        ..Unit::default()
    }
}

fn map(entries: &[(&str, f64)]) -> MetricMap {
    MetricMap(
        entries
            .iter()
            .map(|(key, value)| ((*key).to_owned(), *value))
            .collect(),
    )
}

/// Asserts equal keys and values equal within 1e-9 relative (float rounding only).
fn assert_map(actual: &MetricMap, expected: &MetricMap, what: &str) {
    let actual_keys: Vec<&String> = actual.0.keys().collect();
    let expected_keys: Vec<&String> = expected.0.keys().collect();
    assert_eq!(actual_keys, expected_keys, "{what}: keys");
    for (key, expected_value) in &expected.0 {
        let actual_value = actual.0[key];
        let tolerance = 1e-9 * expected_value.abs().max(1e-300);
        assert!(
            (actual_value - expected_value).abs() <= tolerance,
            "{what}.{key}: got {actual_value}, expected {expected_value}"
        );
    }
}

/// Watts held for `samples` steps of 15 s, in kWh (what `sum_over_time(...[R:15s]) *
/// 15000 / 3.6e9` gives).
fn kwh(watts: f64, samples: i64) -> f64 {
    watts * (samples * 15) as f64 / 3.6e6
}

/// Grams for `grams_per_second` held over `samples` steps of 15 s.
fn grams(grams_per_second: f64, samples: i64) -> f64 {
    grams_per_second * (samples * 15) as f64
}

/// Unit 1001: a CPU job from base+10 min to base+90 min. Gauges have a sample every 15 s
/// from its start to 15 s before its end, then a NaN at the end (as a stopped target's
/// series goes stale, so the 5 min lookback does not stretch it). Counters rise linearly
/// from 0 at the start to the end.
/// Unit 1002: a GPU job running from base−30 min to base+150 min, past every window.
/// Unit 1003: no series at all.
fn reference_series(base: i64) -> Vec<Series> {
    let mut series = Vec::new();
    let (start_1, end_1) = (base + 10 * 60_000, base + 90 * 60_000);
    let gauge = |name: &str, labels: &[(&str, &str)], value: f64, start: i64, end: i64| {
        Series::new(name, labels)
            .every(STEP_MS, start, end - STEP_MS, |_| value)
            .at(end, f64::NAN)
    };
    let uuid_1 = [("uuid", "1001")];
    series.push(gauge(
        "uuid:ceems_cpu_usage:ratio_irate",
        &uuid_1,
        50.0,
        start_1,
        end_1,
    ));
    series.push(gauge(
        "uuid:ceems_cpu_memory_usage:ratio",
        &uuid_1,
        25.0,
        start_1,
        end_1,
    ));
    series.push(gauge(
        "uuid:ceems_host_power_watts:pue",
        &uuid_1,
        200.0,
        start_1,
        end_1,
    ));
    series.push(gauge(
        "uuid:ceems_host_emissions_g_s:pue",
        &[("uuid", "1001"), ("provider", "rte")],
        0.01,
        start_1,
        end_1,
    ));
    series.push(gauge(
        "uuid:ceems_host_emissions_g_s:pue",
        &[("uuid", "1001"), ("provider", "emaps")],
        0.02,
        start_1,
        end_1,
    ));
    let counter = |name: &str, labels: &[(&str, &str)], per_step: f64, start: i64, end: i64| {
        Series::new(name, labels).every(STEP_MS, start, end, move |time| {
            per_step * ((time - start) / STEP_MS) as f64
        })
    };
    series.push(counter(
        "ceems_ebpf_write_bytes_total",
        &uuid_1,
        1000.0,
        start_1,
        end_1,
    ));
    series.push(counter(
        "ceems_ebpf_write_requests_total",
        &uuid_1,
        10.0,
        start_1,
        end_1,
    ));
    series.push(counter(
        "ceems_ebpf_read_bytes_total",
        &uuid_1,
        500.0,
        start_1,
        end_1,
    ));

    let (start_2, end_2) = (base - 30 * 60_000, base + 150 * 60_000);
    let uuid_2 = [("uuid", "1002")];
    series.push(gauge(
        "uuid:ceems_cpu_usage:ratio_irate",
        &uuid_2,
        80.0,
        start_2,
        end_2,
    ));
    series.push(gauge(
        "uuid:ceems_cpu_memory_usage:ratio",
        &uuid_2,
        60.0,
        start_2,
        end_2,
    ));
    series.push(gauge(
        "uuid:ceems_gpu_usage:ratio",
        &uuid_2,
        90.0,
        start_2,
        end_2,
    ));
    series.push(gauge(
        "uuid:ceems_gpu_memory_usage:ratio",
        &uuid_2,
        40.0,
        start_2,
        end_2,
    ));
    series.push(gauge(
        "uuid:ceems_host_power_watts:pue",
        &uuid_2,
        150.0,
        start_2,
        end_2,
    ));
    series.push(gauge(
        "uuid:ceems_gpu_power_watts:pue",
        &uuid_2,
        300.0,
        start_2,
        end_2,
    ));
    series.push(gauge(
        "uuid:ceems_host_emissions_g_s:pue",
        &[("uuid", "1002"), ("provider", "owid")],
        0.005,
        start_2,
        end_2,
    ));
    series.push(gauge(
        "uuid:ceems_gpu_emissions_g_s:pue",
        &[("uuid", "1002"), ("provider", "owid")],
        0.012,
        start_2,
        end_2,
    ));
    series.push(counter(
        "ceems_ebpf_read_errors_total",
        &uuid_2,
        1.0,
        start_2,
        end_2,
    ));
    series.push(counter(
        "ceems_ebpf_ingress_bytes_total",
        &uuid_2,
        4000.0,
        start_2,
        end_2,
    ));
    series.push(counter(
        "ceems_ebpf_egress_bytes_total",
        &uuid_2,
        3000.0,
        start_2,
        end_2,
    ));
    series
}

/// What the default queries give for units 1001, 1002 and 1003 over `(start, end]`, by
/// hand. `samples_1`/`samples_2` count the 15 s steps of the window at which unit 1001/1002
/// has a (non-NaN) gauge sample: each counts for one step of power. For the counters,
/// `increase()` on samples that sit on the window bounds is the plain difference, except
/// where a series ends inside the window: Prometheus then extrapolates by half a step.
struct Expected {
    samples_1: i64,
    samples_2: i64,
    /// increase() of unit 1001's counters, in counter steps (1000 B, 10 requests, 500 B each).
    counter_steps_1: f64,
    /// increase() of unit 1002's counters, in counter steps.
    counter_steps_2: f64,
}

fn assert_units(units: &[Unit], expected: &Expected, what: &str) {
    let [unit_1, unit_2, unit_3] = units else {
        panic!("three units")
    };
    let metrics_1 = &unit_1.metrics;
    let what_1 = format!("{what}: unit 1001");
    assert_map(&metrics_1.avg_cpu_usage, &map(&[("global", 50.0)]), &what_1);
    assert_map(
        &metrics_1.avg_cpu_mem_usage,
        &map(&[("global", 25.0)]),
        &what_1,
    );
    assert_map(
        &metrics_1.total_cpu_energy_usage_kwh,
        &map(&[("total", kwh(200.0, expected.samples_1))]),
        &what_1,
    );
    assert_map(
        &metrics_1.total_cpu_emissions_gms,
        &map(&[
            ("rte_total", grams(0.01, expected.samples_1)),
            ("emaps_total", grams(0.02, expected.samples_1)),
        ]),
        &what_1,
    );
    for empty in [
        &metrics_1.avg_gpu_usage,
        &metrics_1.avg_gpu_mem_usage,
        &metrics_1.total_gpu_energy_usage_kwh,
        &metrics_1.total_gpu_emissions_gms,
        &metrics_1.total_ingress_stats,
        &metrics_1.total_egress_stats,
    ] {
        assert_map(empty, &map(&[]), &what_1);
    }
    let steps_1 = expected.counter_steps_1;
    assert_map(
        &metrics_1.total_io_write_stats,
        &map(&[
            ("bytes_total", 1000.0 * steps_1),
            ("requests_total", 10.0 * steps_1),
        ]),
        &what_1,
    );
    assert_map(
        &metrics_1.total_io_read_stats,
        &map(&[("bytes_total", 500.0 * steps_1)]),
        &what_1,
    );

    let metrics_2 = &unit_2.metrics;
    let what_2 = format!("{what}: unit 1002");
    assert_map(&metrics_2.avg_cpu_usage, &map(&[("global", 80.0)]), &what_2);
    assert_map(
        &metrics_2.avg_cpu_mem_usage,
        &map(&[("global", 60.0)]),
        &what_2,
    );
    assert_map(&metrics_2.avg_gpu_usage, &map(&[("global", 90.0)]), &what_2);
    assert_map(
        &metrics_2.avg_gpu_mem_usage,
        &map(&[("global", 40.0)]),
        &what_2,
    );
    assert_map(
        &metrics_2.total_cpu_energy_usage_kwh,
        &map(&[("total", kwh(150.0, expected.samples_2))]),
        &what_2,
    );
    assert_map(
        &metrics_2.total_gpu_energy_usage_kwh,
        &map(&[("total", kwh(300.0, expected.samples_2))]),
        &what_2,
    );
    assert_map(
        &metrics_2.total_cpu_emissions_gms,
        &map(&[("owid_total", grams(0.005, expected.samples_2))]),
        &what_2,
    );
    assert_map(
        &metrics_2.total_gpu_emissions_gms,
        &map(&[("owid_total", grams(0.012, expected.samples_2))]),
        &what_2,
    );
    let steps_2 = expected.counter_steps_2;
    assert_map(&metrics_2.total_io_write_stats, &map(&[]), &what_2);
    assert_map(
        &metrics_2.total_io_read_stats,
        &map(&[("errors_total", steps_2)]),
        &what_2,
    );
    assert_map(
        &metrics_2.total_ingress_stats,
        &map(&[("bytes_total", 4000.0 * steps_2)]),
        &what_2,
    );
    assert_map(
        &metrics_2.total_egress_stats,
        &map(&[("bytes_total", 3000.0 * steps_2)]),
        &what_2,
    );

    let what_3 = format!("{what}: unit 1003");
    for metric in [
        &unit_3.metrics.avg_cpu_usage,
        &unit_3.metrics.total_cpu_energy_usage_kwh,
        &unit_3.metrics.total_gpu_emissions_gms,
        &unit_3.metrics.total_egress_stats,
    ] {
        assert_map(metric, &map(&[]), &what_3);
    }
    assert!(
        unit_3.metrics.total_time_seconds.is_empty(),
        "total_time_seconds is not the updater's"
    );
}

/// Picks one metric map of a unit.
type PickMap = fn(&Unit) -> &MetricMap;

fn three_units() -> Vec<Unit> {
    vec![unit("1001"), unit("1002"), unit("1003")]
}

fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[tokio::test]
async fn default_queries_over_one_and_two_adjacent_windows() {
    install_crypto_provider();
    let base = base_ms();
    let mut server = Prometheus::start_with(&reference_series(base), PrometheusOptions::default());
    let updater =
        TsdbUpdater::new(&updater_config(&server.url(), TsdbUpdaterConfig::default())).unwrap();
    let queries_before = server.http_requests("/api/v1/query", 200);

    // One 2-hour window (base, base+2h]. Unit 1001: gauge samples from base+10 min to
    // base+89m45s = 320 steps (80 min). Unit 1002: every step of the window, 480.
    // Counters: 1001 rises 320 steps from 0 and stops 30 min before the window end, so
    // increase() extrapolates half a step past its last sample: 320 × 4807.5 / 4800.
    // 1002's counter has samples on both window bounds: 480 steps.
    let mut whole = three_units();
    let ignored = updater
        .update(&window(base, base + 2 * HOUR_MS), &mut whole)
        .await
        .unwrap();
    assert!(ignored.is_empty());
    let whole_expected = Expected {
        samples_1: 320,
        samples_2: 480,
        counter_steps_1: 320.0 * 4807.5 / 4800.0,
        counter_steps_2: 480.0,
    };
    assert_units(&whole, &whole_expected, "one 2 h window");
    assert_eq!(
        server.http_requests("/api/v1/query", 200) - queries_before,
        20.0,
        "three uuids: one batch of the 20 default queries"
    );

    // The same span as two adjacent 1-hour windows. Unit 1001 has steps base+10m ..
    // base+60m in the first (201) and base+60m15s .. base+89m45s in the second (119): the
    // boundary step at base+60m is counted once. Its counters: 200 steps in the first
    // (from 0, no extrapolation), 120 × 1807.5/1800 in the second.
    let mut first = three_units();
    updater
        .update(&window(base, base + HOUR_MS), &mut first)
        .await
        .unwrap();
    let first_expected = Expected {
        samples_1: 201,
        samples_2: 240,
        counter_steps_1: 200.0,
        counter_steps_2: 240.0,
    };
    assert_units(&first, &first_expected, "first 1 h window");
    let mut second = three_units();
    updater
        .update(&window(base + HOUR_MS, base + 2 * HOUR_MS), &mut second)
        .await
        .unwrap();
    let second_expected = Expected {
        samples_1: 119,
        samples_2: 240,
        counter_steps_1: 120.0 * 1807.5 / 1800.0,
        counter_steps_2: 240.0,
    };
    assert_units(&second, &second_expected, "second 1 h window");

    // The two windows add up to the whole one.
    for (index, name) in [(0, "1001"), (1, "1002")] {
        let sum = |pick: PickMap, key: &str| {
            pick(&first[index]).get(key).unwrap_or(0.0)
                + pick(&second[index]).get(key).unwrap_or(0.0)
        };
        let whole_value =
            |pick: fn(&Unit) -> &MetricMap, key: &str| pick(&whole[index]).get(key).unwrap_or(0.0);
        let checks: [(PickMap, &str); 5] = [
            (|unit| &unit.metrics.total_cpu_energy_usage_kwh, "total"),
            (|unit| &unit.metrics.total_cpu_emissions_gms, "rte_total"),
            (|unit| &unit.metrics.total_gpu_energy_usage_kwh, "total"),
            (|unit| &unit.metrics.total_cpu_emissions_gms, "owid_total"),
            (|unit| &unit.metrics.total_io_write_stats, "bytes_total"),
        ];
        for (pick, key) in checks {
            let (parts, all) = (sum(pick, key), whole_value(pick, key));
            assert!(
                (parts - all).abs() <= 1e-9 * all.abs(),
                "unit {name} {key}: windows add up to {parts}, the whole window gives {all}"
            );
        }
    }

    // Prometheus down: Err, and the units keep what they had.
    server.stop();
    let mut kept = three_units();
    kept[0].metrics.avg_cpu_usage = map(&[("global", 1.0)]);
    let before = kept.clone();
    let error = updater
        .update(&window(base, base + HOUR_MS), &mut kept)
        .await
        .unwrap_err();
    assert!(
        error.to_string().starts_with("updater tsdb-test: query "),
        "{error}"
    );
    assert_eq!(
        kept, before,
        "nothing is written when the TSDB cannot answer"
    );

    // Up again on the same data: the same answers.
    server.start();
    updater
        .update(&window(base, base + HOUR_MS), &mut kept)
        .await
        .unwrap();
    assert_units(&kept, &first_expected, "first 1 h window after a restart");
}

#[tokio::test]
async fn a_refused_query_leaves_its_metric_alone_and_the_others_are_filled() {
    install_crypto_provider();
    let base = base_ms();
    let server = Prometheus::start_with(&reference_series(base), PrometheusOptions::default());
    let mut queries = BTreeMap::new();
    queries.insert(
        "avg_cpu_usage".to_owned(),
        BTreeMap::from([(
            "global".to_owned(),
            // A missing parenthesis: Prometheus answers 400 bad_data.
            QueryTemplate::parse(
                "avg_over_time(uuid:ceems_cpu_usage:ratio_irate{uuid=~\"{{.UUIDs}}\"}[{{.Range}}:]",
            )
            .unwrap(),
        )]),
    );
    queries.insert(
        "total_cpu_energy_usage_kwh".to_owned(),
        default_queries()["total_cpu_energy_usage_kwh"].clone(),
    );
    queries.insert(
        "not_a_column".to_owned(),
        BTreeMap::from([("x".to_owned(), QueryTemplate::parse("up").unwrap())]),
    );
    let updater = TsdbUpdater::new(&updater_config(
        &server.url(),
        TsdbUpdaterConfig {
            queries,
            ..TsdbUpdaterConfig::default()
        },
    ))
    .unwrap();
    let queries_before = server.http_requests("/api/v1/query", 200);
    let refused_before = server.http_requests("/api/v1/query", 400);
    let mut units = three_units();
    for unit in &mut units {
        unit.metrics.avg_cpu_usage = map(&[("global", 7.0)]);
        unit.metrics.avg_gpu_usage = map(&[("global", 8.0)]);
    }
    updater
        .update(&window(base, base + HOUR_MS), &mut units)
        .await
        .unwrap();
    for unit in &units {
        assert_map(
            &unit.metrics.avg_cpu_usage,
            &map(&[("global", 7.0)]),
            &unit.uuid,
        );
        assert_map(
            &unit.metrics.avg_gpu_usage,
            &map(&[("global", 8.0)]),
            &unit.uuid,
        );
    }
    assert_map(
        &units[0].metrics.total_cpu_energy_usage_kwh,
        &map(&[("total", kwh(200.0, 201))]),
        "1001",
    );
    assert_map(
        &units[1].metrics.total_cpu_energy_usage_kwh,
        &map(&[("total", kwh(150.0, 240))]),
        "1002",
    );
    assert_map(
        &units[2].metrics.total_cpu_energy_usage_kwh,
        &map(&[]),
        "1003",
    );
    assert_eq!(
        server.http_requests("/api/v1/query", 200) - queries_before,
        1.0,
        "the unknown metric is not queried"
    );
    assert_eq!(
        server.http_requests("/api/v1/query", 400) - refused_before,
        1.0
    );
}

#[tokio::test]
async fn a_small_sample_limit_splits_the_uuids_into_batches() {
    install_crypto_provider();
    let base = base_ms();
    // 25 units at 10 W × their index over the whole hour (and a NaN at its end).
    let uuids: Vec<String> = (1..=25).map(|index| format!("{}", 2000 + index)).collect();
    let series: Vec<Series> = uuids
        .iter()
        .enumerate()
        .map(|(index, uuid)| {
            let watts = 10.0 * (index + 1) as f64;
            Series::new(
                "uuid:ceems_host_power_watts:pue",
                &[("uuid", uuid.as_str())],
            )
            .every(STEP_MS, base, base + HOUR_MS - STEP_MS, move |_| watts)
            .at(base + HOUR_MS, f64::NAN)
        })
        .collect();
    // With max-samples 100000, 15 s scrapes, a 1 h window and 50 series per query:
    // 100000 / (50 × 240) = 8 labels, half of it 4, raised to the minimum batch of 10.
    let server = Prometheus::start_with(
        &series,
        PrometheusOptions {
            extra_flags: vec!["--query.max-samples=100000".to_owned()],
            ..PrometheusOptions::default()
        },
    );
    let queries = BTreeMap::from([(
        "total_cpu_energy_usage_kwh".to_owned(),
        default_queries()["total_cpu_energy_usage_kwh"].clone(),
    )]);
    let updater = TsdbUpdater::new(&updater_config(
        &server.url(),
        TsdbUpdaterConfig {
            queries,
            ..TsdbUpdaterConfig::default()
        },
    ))
    .unwrap();
    let queries_before = server.http_requests("/api/v1/query", 200);
    let mut units: Vec<Unit> = uuids.iter().map(|uuid| unit(uuid)).collect();
    updater
        .update(&window(base, base + HOUR_MS), &mut units)
        .await
        .unwrap();
    assert_eq!(
        server.http_requests("/api/v1/query", 200) - queries_before,
        3.0,
        "batches of 10, 10 and 5 uuids"
    );
    // Steps base+15s .. base+59m45s have a sample: 239 (the one at base is the previous
    // window's).
    for (index, unit) in units.iter().enumerate() {
        assert_map(
            &unit.metrics.total_cpu_energy_usage_kwh,
            &map(&[("total", kwh(10.0 * (index + 1) as f64, 239))]),
            &unit.uuid,
        );
    }
}

#[tokio::test]
async fn short_units_are_ignored_and_their_series_deleted() {
    install_crypto_provider();
    let base = base_ms();
    let power = |uuid: &str| {
        Series::new("uuid:ceems_host_power_watts:pue", &[("uuid", uuid)]).every(
            STEP_MS,
            base,
            base + HOUR_MS,
            |_| 100.0,
        )
    };
    let server = Prometheus::start_with(
        &[power("3001"), power("3002")],
        PrometheusOptions::default(),
    );
    let queries = BTreeMap::from([(
        "total_cpu_energy_usage_kwh".to_owned(),
        default_queries()["total_cpu_energy_usage_kwh"].clone(),
    )]);
    let updater = TsdbUpdater::new(&updater_config(
        &server.url(),
        TsdbUpdaterConfig {
            queries,
            cutoff_duration: Duration::from_secs(300),
            delete_ignored: true,
            ..TsdbUpdaterConfig::default()
        },
    ))
    .unwrap();
    let mut short = unit("3001");
    short.started_at_ts = base + 60_000;
    short.ended_at_ts = base + 120_000;
    let mut long = unit("3002");
    long.started_at_ts = base;
    long.ended_at_ts = base + HOUR_MS;
    let mut units = vec![short, long];
    let ignored = updater
        .update(&window(base, base + HOUR_MS), &mut units)
        .await
        .unwrap();
    assert_eq!(ignored.into_iter().collect::<Vec<_>>(), ["3001"]);
    // Queried like any other unit: 240 steps of 100 W in (base, base+1h].
    assert_map(
        &units[0].metrics.total_cpu_energy_usage_kwh,
        &map(&[("total", kwh(100.0, 240))]),
        "3001",
    );
    // Its series are gone afterwards; the other unit's are not.
    let query = format!(
        "/api/v1/query?query=count_over_time(uuid:ceems_host_power_watts:pue%5B1h%5D)&time={}",
        (base + HOUR_MS) / 1000
    );
    let (status, body) = server.get(&query);
    assert_eq!(status, 200, "{body}");
    assert!(!body.contains("3001"), "{body}");
    assert!(body.contains(r#"{"uuid":"3002"},"#), "{body}");
}
