//! Current and global usage: aggregation semantics, membership per cluster, the cache.

use crate::helpers::{column, spawn_app, DAY_FROM, DAY_TO};

fn day() -> String {
    format!("from={DAY_FROM}&to={DAY_TO}")
}

#[tokio::test]
async fn current_usage_aggregates_per_user_and_project() {
    let app = spawn_app().await;
    let response = app
        .get(&format!("/api/v1/usage/current?{}", day()), Some("usr1"))
        .await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers().get("expires").is_none(),
        "a miss has no Expires"
    );
    let text = response.text().await.unwrap();
    let envelope: serde_json::Value = serde_json::from_str(&text).unwrap();
    let rows = envelope["data"].as_array().unwrap();
    assert_eq!(
        column(rows, "cluster_id"),
        vec!["slurm-0", "slurm-0", "slurm-1"]
    );
    assert_eq!(column(rows, "username"), vec!["usr1", "usr2", "usr1"]);
    assert_eq!(column(rows, "project"), vec!["acc1", "acc1", "acc3"]);
    assert_eq!(
        column(rows, "num_units"),
        vec!["2", "1", "1"],
        "ignored units count too"
    );
    // Weighted by alloc_cputime: (50×28800 + 10×240) / 29040, 8 decimals.
    assert!(
        text.contains(r#""avg_cpu_usage":{"global":49.66942149}"#),
        "{text}"
    );
    assert!(
        text.contains(r#""avg_cpu_mem_usage":{"global":25.33057851}"#),
        "{text}"
    );
    // A key seen in the window but absent from a group is 0.
    assert!(text.contains(r#""avg_gpu_usage":{"global":0}"#), "{text}");
    assert_eq!(rows[0]["total_cpu_energy_usage_kwh"]["total"], 1.51);
    assert_eq!(rows[0]["total_time_seconds"]["walltime"], 7260);
    assert_eq!(rows[0]["total_egress_stats"]["bytes_total"], 400);
    assert_eq!(rows[2]["avg_gpu_usage"]["global"], 90.25);
    app.stop().await;
}

#[tokio::test]
async fn integral_values_average_without_truncation() {
    let app = spawn_app().await;
    // usr1's acc1 group: avg_cpu_usage 50 and 10 (integers) weighted 28800 and 240.
    let rows = app
        .data(
            &format!(
                "/api/v1/usage/current?{}&field=avg_cpu_usage&project=acc1&cluster_id=slurm-0",
                day()
            ),
            "usr1",
        )
        .await;
    assert_eq!(rows[0]["avg_cpu_usage"]["global"], 49.66942149);
    app.stop().await;
}

#[tokio::test]
async fn membership_in_one_cluster_grants_nothing_in_another() {
    let app = spawn_app().await;
    let rows = app
        .data(
            &format!(
                "/api/v1/usage/current?{}&field=cluster_id&field=username&field=avg_cpu_usage",
                day()
            ),
            "usr3",
        )
        .await;
    assert_eq!(column(&rows, "username"), vec!["usr3", "usr3"]);
    assert_eq!(column(&rows, "cluster_id"), vec!["slurm-0", "slurm-1"]);
    let global = app.data("/api/v1/usage/global", "usr3").await;
    assert_eq!(column(&global, "project"), vec!["acc2", "acc1"]);
    app.stop().await;
}

#[tokio::test]
async fn plain_fields_only_answer_null_as_the_reference() {
    let app = spawn_app().await;
    let envelope = app
        .get_json(
            &format!(
                "/api/v1/usage/current?{}&field=username&field=project",
                day()
            ),
            Some("usr1"),
            200,
        )
        .await;
    assert_eq!(
        envelope,
        serde_json::json!({"status": "success", "data": null})
    );
    app.stop().await;
}

#[tokio::test]
async fn current_usage_is_cached_per_user() {
    let app = spawn_app().await;
    let query = format!("/api/v1/usage/current?{}&field=avg_cpu_usage", day());
    let first = app.get(&query, Some("usr1")).await;
    assert!(first.headers().get("expires").is_none());
    let first_body = first.text().await.unwrap();
    let second = app.get(&query, Some("usr1")).await;
    let expires = second
        .headers()
        .get("expires")
        .expect("a hit has Expires")
        .clone();
    assert!(expires.to_str().unwrap().contains(" 20"), "{expires:?}");
    assert_eq!(second.text().await.unwrap(), first_body);
    // Another user is not served usr1's entry.
    let other = app.get(&query, Some("usr3")).await;
    assert!(other.headers().get("expires").is_none());
    assert_ne!(other.text().await.unwrap(), first_body);
    // The rounding to 900 s makes a slightly different window the same entry.
    let shifted = format!(
        "/api/v1/usage/current?from={}&to={}&field=avg_cpu_usage",
        DAY_FROM + 5,
        DAY_TO - 5
    );
    assert!(app
        .get(&shifted, Some("usr1"))
        .await
        .headers()
        .get("expires")
        .is_some());
    app.stop().await;
}

#[tokio::test]
async fn admin_usage_filters() {
    let app = spawn_app().await;
    let all = app
        .data(
            &format!(
                "/api/v1/usage/current/admin?{}&field=username&field=avg_cpu_usage",
                day()
            ),
            "admin",
        )
        .await;
    // Groups (username, project), ordered by cluster, user, project.
    assert_eq!(
        column(&all, "username"),
        vec!["usr1", "usr2", "usr3", "usr1", "usr3"]
    );
    let by_user = app
        .data(
            &format!(
                "/api/v1/usage/current/admin?{}&user=usr2&field=username&field=avg_cpu_usage",
                day()
            ),
            "admin",
        )
        .await;
    assert_eq!(
        column(&by_user, "username"),
        vec!["usr1", "usr2"],
        "members of usr2's projects"
    );
    let by_project = app
        .data("/api/v1/usage/global/admin?project=acc2", "admin")
        .await;
    assert_eq!(column(&by_project, "username"), vec!["usr3"]);
    app.stop().await;
}

#[tokio::test]
async fn global_usage_lists_lifetime_rows() {
    let app = spawn_app().await;
    let text = app
        .get(
            "/api/v1/usage/global?field=num_units&field=project",
            Some("usr1"),
        )
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(
        text,
        concat!(
            r#"{"status":"success","data":["#,
            r#"{"cluster_id":"","resource_manager":"","num_units":2,"project":"acc1","groupname":"","username":""},"#,
            r#"{"cluster_id":"","resource_manager":"","num_units":1,"project":"acc1","groupname":"","username":""},"#,
            r#"{"cluster_id":"","resource_manager":"","num_units":1,"project":"acc3","groupname":"","username":""}]}"#,
            "\n"
        )
    );
    app.stop().await;
}
