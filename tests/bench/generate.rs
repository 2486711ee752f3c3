//! Smoke run of `ceems_bench generate`: a small dataset is a consistent CEEMS database,
//! the same for the same seed.

use std::path::Path;
use std::process::Command;

use rusqlite::{Connection, OpenFlags};

fn generate(out: &Path, units: u64, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ceems_bench"))
        .args(["generate", "--quiet", "--days", "20", "--end", "1767225600"])
        .args(["--units", &units.to_string(), "--out"])
        .arg(out)
        .args(extra)
        .output()
        .expect("ceems_bench runs")
}

fn open(dir: &Path) -> Connection {
    Connection::open_with_flags(dir.join("ceems.db"), OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap()
}

fn scalar(conn: &Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |row| row.get(0)).unwrap()
}

#[test]
fn a_small_dataset_is_consistent_and_reproducible() {
    let root = tempfile::tempdir().unwrap();
    let first = root.path().join("a");
    let output = generate(&first, 3_001, &["--users", "40", "--projects", "8"]);
    assert!(output.status.success(), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stdout)
        .contains("wrote 3001 units of 40 users in 8 projects"));

    let conn = open(&first);
    assert_eq!(scalar(&conn, "SELECT COUNT(*) FROM units"), 3_001);
    assert_eq!(
        scalar(&conn, "SELECT COUNT(DISTINCT uuid) FROM units"),
        3_001
    );
    // Every unit started, so each is counted once in usage and once in daily usage.
    assert_eq!(scalar(&conn, "SELECT SUM(num_units) FROM usage"), 3_001);
    assert_eq!(
        scalar(&conn, "SELECT SUM(num_units) FROM daily_usage"),
        3_001
    );
    assert_eq!(scalar(&conn, "SELECT COUNT(*) FROM users"), 40);
    assert_eq!(scalar(&conn, "SELECT COUNT(*) FROM projects"), 8);
    // Units are spread over the 20 days before --end in hourly windows (the last ends at
    // --end, midnight of a 21st day), the last day has running jobs.
    assert_eq!(
        scalar(
            &conn,
            "SELECT COUNT(DISTINCT substr(last_updated_at, 1, 10)) FROM units"
        ),
        21
    );
    assert_eq!(
        scalar(
            &conn,
            "SELECT num_windows FROM collect_state WHERE last_window_end_ts = 1767225600000"
        ),
        20 * 24
    );
    assert!(scalar(&conn, "SELECT COUNT(*) FROM units WHERE ended_at_ts = 0") > 0);
    assert_eq!(
        scalar(&conn, "SELECT COUNT(*) FROM units WHERE ended_at_ts > 1767225600000 OR started_at_ts > ended_at_ts AND ended_at_ts > 0"),
        0
    );
    // Per (user, project), usage holds the sum of its units' energy.
    let mismatched = scalar(
        &conn,
        "SELECT COUNT(*) FROM usage g WHERE abs(json_extract(g.total_cpu_energy_usage_kwh, '$.total') - \
         (SELECT SUM(json_extract(u.total_cpu_energy_usage_kwh, '$.total')) FROM units u \
          WHERE u.username = g.username AND u.project = g.project)) > 1e-6",
    );
    assert_eq!(mismatched, 0);
    // GPU jobs hold GPU maps, CPU jobs none; the key index knows both kinds.
    assert!(
        scalar(
            &conn,
            "SELECT COUNT(*) FROM units WHERE json_extract(allocation, '$.gpus') > 0"
        ) > 0
    );
    assert_eq!(
        scalar(&conn, "SELECT COUNT(*) FROM units WHERE json_extract(allocation, '$.gpus') = 0 AND avg_gpu_usage != '{}'"),
        0
    );
    assert_eq!(
        scalar(
            &conn,
            "SELECT SUM(units) FROM metric_key_hours WHERE metric = 'avg_cpu_usage'"
        ),
        3_001
    );
    // The usage buckets count every unit once per span (month, day, hour).
    assert_eq!(
        scalar(
            &conn,
            "SELECT COUNT(*) FROM (SELECT span FROM usage_buckets GROUP BY span HAVING SUM(num_units) = 3001)"
        ),
        3
    );
    // The server's indexes exist again after the bulk load.
    assert_eq!(
        scalar(&conn, "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND name LIKE 'idx_units_cluster_%'"),
        5
    );

    // The same seed gives the same units.
    let second = root.path().join("b");
    assert!(
        generate(&second, 3_001, &["--users", "40", "--projects", "8"])
            .status
            .success()
    );
    let digest = |dir: &Path| -> String {
        open(dir)
            .query_row(
                "SELECT group_concat(uuid || username || project || started_at || ended_at || total_cpu_energy_usage_kwh, ',') FROM (SELECT * FROM units ORDER BY uuid)",
                [],
                |row| row.get(0),
            )
            .unwrap()
    };
    assert_eq!(digest(&first), digest(&second));

    // A window length that does not divide a day is refused before anything is written.
    let odd = root.path().join("odd");
    let refused = generate(&odd, 10, &["--window-minutes", "7"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--window-minutes must divide a day"));
    assert!(!odd.join("ceems.db").exists());

    // An existing database is never overwritten.
    let again = generate(&first, 10, &[]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("exists: generate into a new directory")
    );
}
