//! Smoke run of `ceems_bench ingest`.

use std::process::Command;

#[test]
fn ingest_stores_every_job_once_with_its_energy() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ingest.json");
    let workdir = dir.path().join("work");
    let output = Command::new(env!("CARGO_BIN_EXE_ceems_bench"))
        .arg("ingest")
        .arg(format!(
            "--server={}",
            env!("CARGO_BIN_EXE_ceems_api_server")
        ))
        .arg("--jobs=2000")
        .arg(format!("--out={}", out.display()))
        .arg(format!("--workdir={}", workdir.display()))
        .arg("--timeout=240")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "ceems_bench ingest failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("verification passed"), "{stdout}");

    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let verification = &results["verification"];
    assert_eq!(results["jobs"], 2000);
    assert_eq!(verification["units"], 2000, "{verification}");
    assert_eq!(verification["usage_num_units"], 2000, "{verification}");
    assert_eq!(
        verification["daily_usage_num_units"], 2000,
        "{verification}"
    );
    assert_eq!(verification["units_with_energy"], 2000, "{verification}");
    assert_eq!(verification["units_off"], 0, "{verification}");
    assert_eq!(verification["failed_updates"], 0, "{verification}");
    assert_eq!(verification["ok"], true);

    // Every window is measured, and together they stored each job once.
    let windows = results["windows"].as_array().unwrap();
    assert!(!windows.is_empty());
    let new_units: u64 = windows
        .iter()
        .map(|window| window["new_units"].as_u64().unwrap())
        .sum();
    assert_eq!(new_units, 2000);
    for window in windows {
        for field in [
            "total_ms",
            "fetch_ms",
            "units_ms",
            "updaters_ms",
            "write_ms",
        ] {
            assert!(window[field].is_u64(), "{field} missing in {window}");
        }
        assert!(window["sacct_alone_ms"].as_u64().unwrap() > 0, "{window}");
    }
    // 2000 jobs with a power and a CPU series each.
    assert_eq!(results["backfill_series"], 4000);
    assert!(results["backfill_samples"].as_u64().unwrap() > 4000);
    // The server and Prometheus are stopped: nothing holds the database any more.
    assert!(workdir.join("server/data/ceems.db").exists());
}
