//! Units, ownership checks, projects, users, clusters and stats, on the migrated fixture.

use crate::helpers::{column, spawn_app, DAY_FROM, DAY_TO};

fn day() -> String {
    format!("from={DAY_FROM}&to={DAY_TO}")
}

#[tokio::test]
async fn old_database_is_migrated_in_place_without_losing_rows() {
    let app = spawn_app().await;
    let db = rusqlite::Connection::open(app.data_dir.path().join("ceems.db")).unwrap();
    let (version, dirty): (i64, i64) = db
        .query_row("SELECT version, dirty FROM schema_migrations", [], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .unwrap();
    assert_eq!((version, dirty), (9, 0));
    let count = |table: &str| -> i64 {
        db.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |row| {
            row.get(0)
        })
        .unwrap()
    };
    assert_eq!(count("units"), 6);
    assert_eq!(count("usage"), 5);
    assert_eq!(count("users"), 5);
    assert_eq!(count("projects"), 5);
    let egress: String = db
        .query_row(
            "SELECT total_egress_stats FROM units WHERE uuid = '1001' AND cluster_id = 'slurm-0'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(egress, r#"{"bytes_total":400}"#);
    app.stop().await;
}

#[tokio::test]
async fn user_sees_own_units_that_ended_in_the_window() {
    let app = spawn_app().await;
    let query = format!(
        "/api/v1/units?{}&field=uuid&field=cluster_id&field=ended_at_ts",
        day()
    );
    let rows = app.data(&query, "usr1").await;
    assert_eq!(
        serde_json::Value::Array(rows),
        serde_json::json!([
            {"cluster_id": "slurm-0", "uuid": "1001", "ended_at_ts": 1_704_884_400_000_i64},
            {"cluster_id": "slurm-1", "uuid": "2001", "ended_at_ts": 1_704_895_200_000_i64},
        ]),
        "ignored unit 1004 is not listed"
    );
    app.stop().await;
}

#[tokio::test]
async fn unit_json_matches_the_reference_bytes() {
    let app = spawn_app().await;
    let response = app
        .get(
            &format!("/api/v1/units?{}&cluster_id=slurm-0", day()),
            Some("usr1"),
        )
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    let text = response.text().await.unwrap();
    let expected = concat!(
        r#"{"status":"success","data":[{"cluster_id":"slurm-0","resource_manager":"slurm","uuid":"1001","#,
        r#""name":"train \u003ca\u0026b\u003e","project":"acc1","groupname":"grp1","username":"usr1","#,
        r#""created_at":"2024-01-10T09:55:00+0100","started_at":"2024-01-10T10:00:00+0100","#,
        r#""ended_at":"2024-01-10T12:00:00+0100","created_at_ts":1704876900000,"#,
        r#""started_at_ts":1704877200000,"ended_at_ts":1704884400000,"elapsed":"02:00:00","#,
        r#""state":"COMPLETED","allocation":{"billing":4,"cpus":4,"gpus":0,"mem":4294967296,"nodes":1},"#,
        r#""total_time_seconds":{"alloc_cpumemtime":29491200,"alloc_cputime":28800,"alloc_gpumemtime":0,"alloc_gputime":0,"walltime":7200},"#,
        r#""avg_cpu_usage":{"global":50},"avg_cpu_mem_usage":{"global":25.50000000},"#,
        r#""total_cpu_energy_usage_kwh":{"total":1.50000000},"total_cpu_emissions_gms":{"rte_total":120.25000000},"#,
        r#""total_io_write_stats":{"bytes_total":1000,"requests_total":10},"#,
        r#""total_io_read_stats":{"bytes_total":2000,"requests_total":20},"#,
        r#""total_ingress_stats":{"bytes_total":300},"total_egress_stats":{"bytes_total":400},"#,
        r#""tags":{"exit_code":"0:0","gid":1001,"nodelist":"n[001-002]","nodelistexp":"n001|n002","partition":"cpu","qos":"normal","uid":1001,"workdir":"/home/usr1"}}]}"#,
        "\n"
    );
    assert_eq!(text, expected);
    app.stop().await;
}

#[tokio::test]
async fn window_bounds_running_flag_and_timezone() {
    let app = spawn_app().await;
    // A unit ending exactly at `from` matches, one ending exactly at `to` does not.
    let at_noon = 1_704_884_400;
    let rows = app
        .data(
            &format!("/api/v1/units?from={at_noon}&to={}&field=uuid", at_noon + 1),
            "usr1",
        )
        .await;
    assert_eq!(column(&rows, "uuid"), vec!["1001"]);
    let rows = app
        .data(
            &format!(
                "/api/v1/units?from={}&to={at_noon}&field=uuid",
                at_noon - 60
            ),
            "usr1",
        )
        .await;
    assert!(rows.is_empty());

    let without = app
        .data(&format!("/api/v1/units?{}&field=uuid", day()), "usr3")
        .await;
    assert_eq!(column(&without, "uuid"), vec!["1001"]);
    let with = app
        .data(
            "/api/v1/units?from=0&to=10&running=false&field=uuid",
            "usr3",
        )
        .await;
    assert_eq!(
        column(&with, "uuid"),
        vec!["1003"],
        "running=false still enables running"
    );

    let athens = app
        .data(
            &format!(
                "/api/v1/units?{}&field=ended_at&field=uuid&timezone=Europe/Athens",
                day()
            ),
            "usr1",
        )
        .await;
    assert_eq!(athens[0]["ended_at"], "2024-01-10T13:00:00+0200");

    let unknown = app
        .get_json(
            &format!(
                "/api/v1/units?{}&field=ended_at&field=uuid&timezone=Mars/Olympus",
                day()
            ),
            Some("usr1"),
            200,
        )
        .await;
    assert_eq!(unknown["data"][0]["ended_at"], "2024-01-10T12:00:00+0100");
    assert!(
        unknown["warnings"][0]
            .as_str()
            .unwrap()
            .contains("'timezone'"),
        "{unknown}"
    );
    app.stop().await;
}

#[tokio::test]
async fn units_by_uuid_ignore_the_window() {
    let app = spawn_app().await;
    let rows = app
        .data(
            "/api/v1/units?uuid=1001&from=not-a-number&field=cluster_id",
            "usr1",
        )
        .await;
    assert_eq!(
        column(&rows, "cluster_id"),
        vec!["slurm-0"],
        "usr1 does not own slurm-1/1001"
    );
    app.stop().await;
}

#[tokio::test]
async fn admin_lists_any_user_and_project_filters_do_not_widen() {
    let app = spawn_app().await;
    let rows = app
        .data(
            &format!(
                "/api/v1/units/admin?{}&user=usr3&field=uuid&field=cluster_id",
                day()
            ),
            "admin",
        )
        .await;
    assert_eq!(column(&rows, "cluster_id"), vec!["slurm-1"]);
    // Project only: every user's units of that project (not the service account's).
    let rows = app
        .data(
            &format!("/api/v1/units/admin?{}&project=acc1&field=uuid", day()),
            "admin",
        )
        .await;
    assert_eq!(column(&rows, "uuid"), vec!["1001", "1002", "1001"]);
    // A user asking for another user's project sees nothing of it.
    let rows = app
        .data(
            &format!("/api/v1/units?{}&project=acc2&field=uuid", day()),
            "usr1",
        )
        .await;
    assert!(rows.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn verify_checks_ownership_per_cluster() {
    let app = spawn_app().await;
    let pass = |user: &'static str, query: &'static str| {
        let app = &app;
        async move {
            let response = app
                .get(&format!("/api/v1/units/verify?{query}"), Some(user))
                .await;
            let status = response.status().as_u16();
            let text = response.text().await.unwrap();
            (status, text)
        }
    };
    let (status, text) = pass("usr1", "cluster_id=slurm-0&uuid=1001").await;
    assert_eq!(
        (status, text.as_str()),
        (200, "{\"status\":\"success\",\"data\":null}\n")
    );
    // A member of the unit's project in the same cluster passes.
    assert_eq!(pass("usr2", "cluster_id=slurm-0&uuid=1001").await.0, 200);
    // Membership of acc1 in slurm-1 grants nothing in slurm-0.
    let (status, text) = pass("usr3", "cluster_id=slurm-0&uuid=1001").await;
    assert_eq!(status, 403);
    assert_eq!(
        text,
        "{\"status\":\"error\",\"data\":null,\"errorType\":\"forbidden\",\"error\":\"user do not have permissions on uuids\"}\n"
    );
    assert_eq!(pass("usr3", "cluster_id=slurm-1&uuid=1001").await.0, 200);
    // A reused uuid: one row is usr1's, the other is not, so the check fails.
    assert_eq!(
        pass("usr1", "cluster_id=slurm-0&cluster_id=slurm-1&uuid=1001")
            .await
            .0,
        403
    );
    assert_eq!(
        pass("usr1", "cluster_id=slurm-0&uuid=1001&uuid=9999")
            .await
            .0,
        403
    );
    assert_eq!(pass("usr1", "uuid=1001").await.0, 403, "no cluster_id");
    let (status, text) = pass("usr1", "cluster_id=slurm-0").await;
    assert_eq!(status, 400);
    assert!(text.contains("uuids missing in the request"));
    app.stop().await;
}

#[tokio::test]
async fn projects_and_users() {
    let app = spawn_app().await;
    let projects = app.data("/api/v1/projects", "usr1").await;
    assert_eq!(
        serde_json::Value::Array(projects),
        serde_json::json!([
            {"cluster_id": "slurm-0", "resource_manager": "slurm", "name": "acc1", "users": ["usr1", "usr2"]},
            {"cluster_id": "slurm-1", "resource_manager": "slurm", "name": "acc3", "users": ["usr1"]},
        ])
    );
    let all = app.data("/api/v1/projects/admin", "admin").await;
    assert_eq!(
        column(&all, "name"),
        vec!["acc1", "acc2", "acc1", "acc3"],
        "no memberless project"
    );
    let none = app.data("/api/v1/projects?project=acc2", "usr1").await;
    assert!(none.is_empty());

    let users = app.data("/api/v1/users", "usr1").await;
    assert_eq!(
        serde_json::Value::Array(users),
        serde_json::json!([
            {"cluster_id": "slurm-0", "resource_manager": "slurm", "name": "usr1", "projects": ["acc1"]},
            {"cluster_id": "slurm-1", "resource_manager": "slurm", "name": "usr1", "projects": ["acc3"]},
        ])
    );
    let some = app
        .data("/api/v1/users/admin?user=usr3&cluster_id=slurm-1", "admin")
        .await;
    assert_eq!(column(&some, "name"), vec!["usr3"]);
    let everyone = app.data("/api/v1/users/admin", "admin").await;
    assert_eq!(everyone.len(), 5);
    let project_only = app.data("/api/v1/users/admin?project=acc1", "admin").await;
    assert_eq!(project_only.len(), 5, "project alone is no filter on users");
    app.stop().await;
}

#[tokio::test]
async fn admin_list_comes_from_config_and_grafana_rows() {
    let app = spawn_app().await;
    let admins = app
        .data("/api/v1/users/admin?role=admin", "ceems-int-svc")
        .await;
    assert_eq!(
        serde_json::Value::Array(admins),
        serde_json::json!([
            {"cluster_id": "all", "name": "ceems-int-svc", "tags": ["ceems"]},
            {"cluster_id": "all", "name": "gadmin", "tags": ["grafana"]},
            {"cluster_id": "all", "name": "admin", "tags": ["ceems"]},
        ]),
        "oldadmin, no longer in the config, is revoked"
    );
    app.get_json("/api/v1/clusters/admin", Some("gadmin"), 200)
        .await;
    let denied = app
        .get_json("/api/v1/clusters/admin", Some("oldadmin"), 403)
        .await;
    assert_eq!(
        denied["error"],
        "current user does not have admin privileges"
    );
    app.stop().await;
}

#[tokio::test]
async fn clusters_and_stats() {
    let app = spawn_app().await;
    let clusters = app.data("/api/v1/clusters/admin", "admin").await;
    assert_eq!(
        serde_json::Value::Array(clusters),
        serde_json::json!([{"id": "slurm-0", "manager": "slurm"}, {"id": "slurm-1", "manager": "slurm"}])
    );
    let stats = app.data("/api/v1/stats/global/admin", "admin").await;
    assert_eq!(
        serde_json::Value::Array(stats),
        serde_json::json!([
            {"cluster_id": "slurm-0", "resource_manager": "slurm", "num_units": 4, "num_inactive_units": 3, "num_active_units": 1, "num_projects": 2, "num_users": 3},
            {"cluster_id": "slurm-1", "resource_manager": "slurm", "num_units": 2, "num_inactive_units": 2, "num_active_units": 0, "num_projects": 2, "num_users": 2},
        ])
    );
    let before = app
        .data("/api/v1/stats/current/admin?from=0&to=1000", "admin")
        .await;
    assert_eq!(
        column(&before, "num_units"),
        vec!["1"],
        "only the running unit"
    );
    let one = app
        .data("/api/v1/stats/global/admin?cluster_id=slurm-1", "admin")
        .await;
    assert_eq!(column(&one, "cluster_id"), vec!["slurm-1"]);
    app.stop().await;
}

#[tokio::test]
async fn admin_stats_are_shared_for_a_minute_per_cluster_list_and_window() {
    let app = spawn_app().await;
    let path = "/api/v1/stats/global/admin?cluster_id=slurm-1";
    let first = app.get(path, Some("admin")).await;
    assert!(
        first.headers().get("expires").is_none(),
        "computed, not cached"
    );
    let num_units = |body: serde_json::Value| body["data"][0]["num_units"].clone();
    assert_eq!(num_units(first.json().await.unwrap()), 2);

    // A unit written behind the server's back: the same question is answered from the
    // cache for a minute, another cluster list is counted again.
    let db = rusqlite::Connection::open(app.data_dir.path().join("ceems.db")).unwrap();
    db.execute(
        "INSERT INTO units (resource_manager, cluster_id, uuid, project, username, started_at, \
         ended_at_ts, ignore) VALUES ('slurm', 'slurm-1', '9999', 'p', 'u', 'x', 0, 0)",
        [],
    )
    .unwrap();
    let again = app.get(path, Some("admin")).await;
    assert!(
        again.headers().get("expires").is_some(),
        "served from the cache"
    );
    assert_eq!(num_units(again.json().await.unwrap()), 2);
    let reordered = app
        .data(
            "/api/v1/stats/global/admin?cluster_id=slurm-1&cluster_id=slurm-1",
            "admin",
        )
        .await;
    assert_eq!(column(&reordered, "num_units"), vec!["2"], "same clusters");
    let both = app
        .data(
            "/api/v1/stats/global/admin?cluster_id=slurm-1&cluster_id=slurm-0",
            "admin",
        )
        .await;
    assert_eq!(column(&both, "num_units"), vec!["4", "3"]);
    let current = app
        .data(
            "/api/v1/stats/current/admin?cluster_id=slurm-1&from=0&to=1000",
            "admin",
        )
        .await;
    assert_eq!(
        column(&current, "num_units"),
        vec!["1"],
        "the new running unit"
    );
    app.stop().await;
}
