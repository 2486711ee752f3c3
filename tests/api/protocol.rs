//! The envelope's errors, routing, CORS, compression, rate limiting, basic auth, the
//! route prefix and the non-API routes.

use std::io::Read;

use crate::helpers::{spawn_app, spawn_app_with, DAY_FROM};

#[tokio::test]
async fn missing_user_and_missing_rights() {
    let app = spawn_app().await;
    let response = app.get("/api/v1/units", None).await;
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.text().await.unwrap(),
        "{\"status\":\"error\",\"data\":null,\"errorType\":\"unauthorized\",\"error\":\"no user identified\"}\n"
    );
    let response = app.get("/api/v1/units/admin", Some("usr1")).await;
    assert_eq!(response.status(), 403);
    assert_eq!(
        response.text().await.unwrap(),
        "{\"status\":\"error\",\"data\":null,\"errorType\":\"forbidden\",\"error\":\"current user does not have admin privileges\"}\n"
    );
    app.stop().await;
}

#[tokio::test]
async fn bad_parameters_are_bad_data_naming_the_parameter() {
    let app = spawn_app_with(|settings| {
        settings.flags.query_max_period = std::time::Duration::from_secs(86_400);
    })
    .await;
    let cases = [
        ("/api/v1/units?field=bogus", "invalid query fields"),
        ("/api/v1/usage/global?field=uuid", "invalid query fields"),
        (
            "/api/v1/units?from=yesterday",
            "query parameter 'from': malformed timestamp",
        ),
        (
            "/api/v1/units?to=1.5",
            "query parameter 'to': malformed timestamp",
        ),
        (
            "/api/v1/units?from=0&to=172800",
            "maximum query window exceeded",
        ),
        (
            "/api/v1/usage/current?from=x",
            "query parameter 'from': malformed timestamp",
        ),
        (
            "/api/v1/stats/current/admin?to=x",
            "query parameter 'to': malformed timestamp",
        ),
    ];
    for (query, message) in cases {
        let user = if query.contains("admin") {
            "admin"
        } else {
            "usr1"
        };
        let envelope = app.get_json(query, Some(user), 400).await;
        assert_eq!(envelope["errorType"], "bad_data", "{query}");
        assert_eq!(envelope["error"], message, "{query}");
    }
    let envelope = app
        .get_json("/api/v1/usage/current?groupby=uuid", Some("usr1"), 400)
        .await;
    assert!(envelope["error"].as_str().unwrap().contains("'groupby'"));
    app.stop().await;
}

#[tokio::test]
async fn router_answers_404_and_405_as_the_reference() {
    let app = spawn_app().await;
    for path in [
        "/api/v1/units/",
        "/api/v1/stats/current",
        "/api/v1/usage/yearly",
        "/api/v1/health",
        "/nope",
    ] {
        let response = app.get(path, Some("usr1")).await;
        assert_eq!(response.status(), 404, "{path}");
        assert_eq!(response.text().await.unwrap(), "404 page not found\n");
    }
    let response = app
        .client
        .post(format!("{}/api/v1/units", app.base))
        .header("X-Grafana-User", "usr1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert!(response.text().await.unwrap().is_empty());
    let response = app
        .client
        .post(format!("{}/swagger/index.html", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.text().await.unwrap(), "Method not allowed\n");
    app.stop().await;
}

#[tokio::test]
async fn preflight_and_cors_headers() {
    let app = spawn_app().await;
    let response = app
        .client
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/api/v1/units", app.base),
        )
        .header("Origin", "https://reqbin.com")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let headers = response.headers();
    assert_eq!(headers["access-control-allow-origin"], "https://reqbin.com");
    assert_eq!(headers["access-control-allow-methods"], "GET");
    assert_eq!(
        headers["access-control-allow-headers"],
        "Accept, Authorization, Content-Type, Origin, X-Grafana-User"
    );
    assert_eq!(headers["access-control-expose-headers"], "Date");
    assert_eq!(headers["content-length"], "0");
    assert!(headers.get("content-type").is_none());

    let response = app
        .client
        .get(format!("{}/api/v1/projects", app.base))
        .header("X-Grafana-User", "usr1")
        .header("Origin", "https://grafana.example.org")
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "https://grafana.example.org"
    );
    assert_eq!(response.headers()["vary"], "Origin");
    app.stop().await;
}

#[tokio::test]
async fn gzip_when_enabled_and_accepted() {
    let app = spawn_app_with(|settings| settings.flags.compression = true).await;
    let response = app
        .client
        .get(format!("{}/api/v1/projects", app.base))
        .header("X-Grafana-User", "usr1")
        .header("Accept-Encoding", "gzip")
        .header("User-Agent", "Go-http-client/1.1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-encoding"], "gzip");
    let compressed = response.bytes().await.unwrap();
    let mut text = String::new();
    flate2::read::GzDecoder::new(&compressed[..])
        .read_to_string(&mut text)
        .unwrap();
    assert!(
        text.starts_with("{\"status\":\"success\",\"data\":[{"),
        "{text}"
    );
    // Middleware errors are never compressed.
    let response = app
        .client
        .get(format!("{}/api/v1/projects", app.base))
        .header("Accept-Encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert!(response.headers().get("content-encoding").is_none());
    app.stop().await;
}

#[tokio::test]
async fn rate_limit_is_per_user() {
    let app = spawn_app_with(|settings| settings.flags.max_requests = 3).await;
    for _ in 0..3 {
        let response = app.get("/api/v1/projects", Some("usr1")).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-ratelimit-limit"], "3");
    }
    let response = app.get("/api/v1/projects", Some("usr1")).await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "60");
    assert_eq!(response.text().await.unwrap(), "Too Many Requests\n");
    assert_eq!(
        app.get("/api/v1/projects", Some("usr2")).await.status(),
        200
    );
    app.stop().await;
}

#[tokio::test]
async fn route_prefix_moves_only_the_api_routes() {
    let app = spawn_app_with(|settings| settings.flags.route_prefix = "/ceems".to_owned()).await;
    assert_eq!(
        app.get("/ceems/api/v1/projects", Some("usr1"))
            .await
            .status(),
        200
    );
    assert_eq!(
        app.get("/api/v1/projects", Some("usr1")).await.status(),
        404
    );
    assert_eq!(app.get("/health", None).await.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn health_landing_swagger_and_demo() {
    let app = spawn_app().await;
    let health = app.get("/health", None).await;
    assert_eq!(health.status(), 200);
    assert_eq!(health.text().await.unwrap(), "CEEMS API Server is healthy");
    let landing = app.get("/", None).await;
    assert_eq!(landing.status(), 200);
    assert_eq!(
        landing.headers()["content-type"],
        "text/html; charset=UTF-8"
    );
    assert!(landing.text().await.unwrap().contains("ceems_api_server"));
    let swagger = app.get("/swagger/index.html", None).await;
    assert_eq!(swagger.status(), 200);
    let doc: serde_json::Value = serde_json::from_str(
        &app.get("/swagger/doc.json", None)
            .await
            .text()
            .await
            .unwrap(),
    )
    .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let demo = app.get_json("/api/v1/demo/units", None, 200).await;
    assert_eq!(demo["data"].as_array().unwrap().len(), 100);
    let demo = app.get_json("/api/v1/demo/usage", None, 200).await;
    assert!(!demo["data"].as_array().unwrap().is_empty());
    app.stop().await;
}

#[tokio::test]
async fn path_cleaning_redirects() {
    let app = spawn_app().await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = client
        .get(format!("{}/api//v1/./units?from={DAY_FROM}", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 301);
    assert_eq!(
        response.headers()["location"],
        format!("/api/v1/units?from={DAY_FROM}").as_str()
    );
    app.stop().await;
}

#[tokio::test]
async fn basic_auth_from_the_web_config() {
    let web_dir = tempfile::tempdir().unwrap();
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    let web_config = web_dir.path().join("web.yml");
    std::fs::write(
        &web_config,
        format!("basic_auth_users:\n  grafana: '{hash}'\n"),
    )
    .unwrap();
    let path = web_config.clone();
    let app = spawn_app_with(move |settings| settings.flags.web_config_file = Some(path)).await;
    let anonymous = app.get("/api/v1/projects", Some("usr1")).await;
    assert_eq!(anonymous.status(), 401);
    assert_eq!(anonymous.headers()["www-authenticate"], "Basic");
    for _ in 0..2 {
        let response = app
            .client
            .get(format!("{}/api/v1/projects", app.base))
            .basic_auth("grafana", Some("s3cret"))
            .header("X-Grafana-User", "usr1")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let wrong = app
        .client
        .get(format!("{}/health", app.base))
        .basic_auth("grafana", Some("nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    app.stop().await;
}

#[tokio::test]
async fn database_errors_are_internal_with_the_sqlite_message() {
    let app = spawn_app().await;
    let db = rusqlite::Connection::open(app.data_dir.path().join("ceems.db")).unwrap();
    db.execute_batch("DROP TABLE projects").unwrap();
    let envelope = app.get_json("/api/v1/projects", Some("usr1"), 500).await;
    assert_eq!(envelope["errorType"], "internal");
    assert!(
        envelope["error"]
            .as_str()
            .unwrap()
            .contains("no such table: projects"),
        "{envelope}"
    );
    // The ownership check denies on a database error rather than failing open.
    let envelope = app
        .get_json(
            "/api/v1/units/verify?cluster_id=slurm-0&uuid=1001",
            Some("usr1"),
            403,
        )
        .await;
    assert_eq!(envelope["errorType"], "forbidden");
    app.stop().await;
}

#[tokio::test]
async fn undecodable_json_columns_are_warned_about_not_leaked() {
    let app = spawn_app().await;
    let db = rusqlite::Connection::open(app.data_dir.path().join("ceems.db")).unwrap();
    db.execute(
        "UPDATE units SET avg_cpu_usage = '{\"global\":\"oops\"}' WHERE uuid = '1001' AND cluster_id = 'slurm-0'",
        [],
    )
    .unwrap();
    let envelope = app
        .get_json(
            &format!(
                "/api/v1/units?from={DAY_FROM}&to={}&field=uuid&field=avg_cpu_usage",
                DAY_FROM + 86_400
            ),
            Some("usr1"),
            200,
        )
        .await;
    assert_eq!(
        envelope["warnings"],
        serde_json::json!(["failed to scan 1 rows"])
    );
    let rows = envelope["data"].as_array().unwrap();
    assert_eq!(
        rows[0],
        serde_json::json!({"uuid": "1001"}),
        "the bad map is left out"
    );
    assert_eq!(
        rows[1]["avg_cpu_usage"]["global"], 60,
        "the next row keeps its own value"
    );
    app.stop().await;
}

#[tokio::test]
async fn tls_from_the_web_config() {
    use rustls::pki_types::pem::PemObject as _;
    let web_dir = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let certificate_pem = certified.cert.pem();
    std::fs::write(web_dir.path().join("server.crt"), &certificate_pem).unwrap();
    std::fs::write(
        web_dir.path().join("server.key"),
        certified.signing_key.serialize_pem(),
    )
    .unwrap();
    let web_config = web_dir.path().join("web.yml");
    std::fs::write(
        &web_config,
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n",
    )
    .unwrap();
    let path = web_config.clone();
    let app = spawn_app_with(move |settings| settings.flags.web_config_file = Some(path)).await;
    let port = app.base.rsplit(':').next().unwrap().to_owned();

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_slice(certificate_pem.as_bytes()).unwrap())
        .unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .no_proxy()
        .build()
        .unwrap();
    let response = client
        .get(format!("https://localhost:{port}/api/v1/projects"))
        .header("X-Grafana-User", "usr1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.text().await.unwrap().contains("\"acc3\""));
    // Plain HTTP on the TLS port gets no answer.
    let plain = app.client.get(format!("{}/health", app.base)).send().await;
    assert!(plain.is_err(), "{plain:?}");
    app.stop().await;
}
