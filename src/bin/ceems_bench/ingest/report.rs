//! The markdown summary of an ingest run.

use std::fmt::Write as _;

use super::Results;

/// Units per second for `units` in `ms` milliseconds.
pub fn per_second(units: i64, ms: i64) -> f64 {
    if ms <= 0 {
        0.0
    } else {
        units as f64 * 1000.0 / ms as f64
    }
}

pub fn markdown(results: &Results) -> String {
    let windows = &results.windows;
    let sum = |field: fn(&super::WindowLine) -> u64| -> i64 {
        windows
            .iter()
            .map(|window| i64::try_from(field(window)).unwrap_or(i64::MAX))
            .sum()
    };
    let total = sum(|window| window.total_ms);
    let fetch = sum(|window| window.fetch_ms);
    let units = sum(|window| window.units_ms);
    let sacct = sum(|window| window.sacct_alone_ms);
    let updaters = sum(|window| window.updaters_ms);
    let users_projects = sum(|window| window.users_projects_ms);
    let write = sum(|window| window.write_ms);
    let rows = sum(|window| window.units);
    let share = |ms: i64| {
        if total > 0 {
            format!("{:.1} %", ms as f64 * 100.0 / total as f64)
        } else {
            "-".to_owned()
        }
    };

    let mut out = String::new();
    let _ = writeln!(
        out,
        "## Ingest: {} jobs through the update loop\n",
        results.jobs
    );
    let _ = writeln!(out, "| measure | value |\n|---|---|");
    let _ = writeln!(out, "| windows | {} |", windows.len());
    let _ = writeln!(out, "| unit rows written (all windows) | {rows} |");
    let _ = writeln!(
        out,
        "| units/s, jobs / sum of window total_ms | {:.0} |",
        per_second(results.jobs, total)
    );
    let _ = writeln!(
        out,
        "| units/s, jobs / wall time (first window start to last unit stored) | {:.0} |",
        per_second(results.jobs, results.wall_ms)
    );
    let _ = writeln!(
        out,
        "| wall time, first window start to last unit stored | {:.2} s |",
        results.wall_ms as f64 / 1000.0
    );
    let _ = writeln!(
        out,
        "| wall time, server spawn to last unit stored | {:.2} s |",
        results.wall_from_spawn_ms as f64 / 1000.0
    );

    let _ = writeln!(
        out,
        "\n### Where the time goes (sum over windows)\n\n| stage | ms | share of total |\n|---|---:|---:|"
    );
    let mut row = |stage: &str, ms: i64| {
        let _ = writeln!(out, "| {stage} | {ms} | {} |", share(ms));
    };
    row("fetch (sacct + parse + TSDB + sacctmgr)", fetch);
    row("- units: sacct + parse", units);
    row("  - the stand-in sacct alone (separate run)", sacct);
    row("  - the rest: spawn, read, parse", units - sacct);
    row("- tsdb updater (Prometheus queries)", updaters);
    row("- users and projects (sacctmgr)", users_projects);
    row("write (one transaction)", write);
    row("total", total);

    let _ = writeln!(
        out,
        "\n### Windows\n\n| start | end | units | new | fetch ms | units ms | sacct alone ms | tsdb ms | write ms | total ms |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for window in windows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            window.window_start,
            window.window_end,
            window.units,
            window.new_units,
            window.fetch_ms,
            window.units_ms,
            window.sacct_alone_ms,
            window.updaters_ms,
            window.write_ms,
            window.total_ms
        );
    }

    let _ = writeln!(
        out,
        "\n### Setup\n\n- Prometheus: {} series, {} samples at {} s, backfilled by promtool from {} files in {:.2} s; ready in {:.2} s.\n- Server: `max_update_interval: {}`.",
        results.backfill_series,
        results.backfill_samples,
        results.scrape_interval_s,
        results.backfill_files,
        results.backfill_ms as f64 / 1000.0,
        results.prometheus_start_ms as f64 / 1000.0,
        results.max_update_interval
    );

    let verification = &results.verification;
    let jobs = results.jobs;
    let _ = writeln!(
        out,
        "\n### Verification\n\n| check | expected | got |\n|---|---:|---:|"
    );
    let _ = writeln!(out, "| units | {jobs} | {} |", verification.units);
    let _ = writeln!(
        out,
        "| sum of usage.num_units | {jobs} | {} |",
        verification.usage_num_units
    );
    let _ = writeln!(
        out,
        "| sum of daily_usage.num_units | {jobs} | {} |",
        verification.daily_usage_num_units
    );
    let _ = writeln!(
        out,
        "| units with energy > 0 | {jobs} | {} |",
        verification.units_with_energy
    );
    let _ = writeln!(
        out,
        "| units whose energy or CPU usage is off | 0 | {} |",
        verification.units_off
    );
    let _ = writeln!(
        out,
        "| failed updates | 0 | {} |",
        verification.failed_updates
    );
    if let Some(first) = &verification.first_off {
        let _ = writeln!(out, "\nFirst unit off: {first}");
    }
    let _ = writeln!(
        out,
        "\n**{}**",
        if verification.ok {
            "verification passed"
        } else {
            "verification FAILED"
        }
    );
    out
}
