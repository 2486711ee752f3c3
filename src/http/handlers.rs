//! Handlers per resource: plain async functions over an already identified user and
//! parsed parameters, answering a [`Reply`].

use bytes::Bytes;
use chrono::Utc;
use chrono_tz::Tz;
use http::header::{HeaderValue, CONTENT_TYPE, EXPIRES, X_CONTENT_TYPE_OPTIONS};
use http::StatusCode;

use super::answer_cache::CachedAnswer;
use super::demo;
use super::envelope::{self, ApiError, Reply};
use super::filters::{self, QueryParams, WindowRules};
use super::routes::{Api, Request, Route};
use crate::model::json::to_go_json;
use crate::model::time::local_time_zone;
use crate::storage::{queries, StorageError};

/// Dispatches to the handler of `route`.
pub async fn handle(api: &Api, route: Route, request: &Request, user: &str) -> Reply {
    let params = &request.query;
    let result = match route {
        Route::Landing => Ok(landing_page()),
        Route::Health => Ok(health(api).await),
        Route::Swagger => Ok(api.swagger.serve(&request.path)),
        Route::DemoUnits => Ok(envelope::success(
            &demo::demo_units(Utc::now().timestamp(), local_time_zone()),
            &[],
        )),
        Route::DemoUsage => Ok(envelope::success(&demo::demo_usage(), &[])),
        Route::Units { admin } => units(api, params, user, admin).await,
        Route::Verify => Ok(verify(api, params, user).await),
        Route::CurrentUsage { admin } => current_usage(api, request, user, admin).await,
        Route::GlobalUsage { admin } => global_usage(api, params, user, admin).await,
        Route::Projects { admin } => {
            let query = filters::project_query(params, user, admin);
            read_rows(api, move |conn| queries::projects(conn, &query)).await
        }
        Route::Users { admin } => {
            if admin && filters::wants_admin_list(params) {
                read_rows(api, queries::admin_users).await
            } else {
                let query = filters::user_query(params, user, admin);
                read_rows(api, move |conn| queries::users(conn, &query)).await
            }
        }
        Route::Clusters => read_rows(api, queries::clusters).await,
        Route::Stats { current } => stats(api, params, current).await,
    };
    result.unwrap_or_else(|error| envelope::error(&error))
}

fn window_rules(api: &Api) -> WindowRules {
    WindowRules {
        time_zone: api.time_zone,
        max_period: api.max_period,
        now: Utc::now().timestamp(),
    }
}

/// A database failure: logged, and answered as `internal` with SQLite's message.
fn internal(error: StorageError) -> ApiError {
    tracing::error!(%error, "database query failed");
    ApiError::internal(error.to_string())
}

/// Runs a listing query on a read-only connection and wraps its rows in the envelope.
async fn read_rows<T, F>(api: &Api, query: F) -> Result<Reply, ApiError>
where
    T: serde::Serialize + Send + 'static,
    F: FnOnce(&rusqlite::Connection) -> Result<crate::model::Rows<T>, StorageError>
        + Send
        + 'static,
{
    let rows = api.db.read(query).await.map_err(internal)?;
    Ok(envelope::success(&rows.rows, &rows.warnings))
}

async fn units(
    api: &Api,
    params: &QueryParams,
    user: &str,
    admin: bool,
) -> Result<Reply, ApiError> {
    let query = filters::unit_query(params, user, admin, &window_rules(api))?;
    let mut warnings = Vec::new();
    let zone = match params.first("timezone") {
        Some(zone_name) => match zone_name.parse::<Tz>() {
            Ok(zone) => (zone != api.time_zone).then_some(zone),
            Err(_) => {
                warnings.push(format!(
                    "unknown time zone {zone_name:?} in query parameter 'timezone': times are in the server's zone"
                ));
                None
            }
        },
        None => None,
    };
    let rows = api
        .db
        .read(move |conn| queries::units(conn, &query, zone))
        .await
        .map_err(internal)?;
    // Warnings about the rows first, then about the time zone.
    let warnings: Vec<String> = rows.warnings.into_iter().chain(warnings).collect();
    Ok(envelope::success_raw(&rows.json, &warnings))
}

/// The ownership check: 200 with `data: null`, or 403.
async fn verify(api: &Api, params: &QueryParams, user: &str) -> Reply {
    let query = match filters::verify_query(params, user) {
        Ok(query) => query,
        Err(error) => return envelope::error(&error),
    };
    match api
        .db
        .read(move |conn| queries::verify_ownership(conn, &query))
        .await
    {
        Ok(true) => envelope::success_null(&[]),
        Ok(false) => envelope::error(&ApiError::forbidden(
            "user do not have permissions on uuids",
        )),
        Err(error) => {
            tracing::error!(%error, "ownership check failed");
            envelope::error(&ApiError::forbidden(
                "user do not have permissions on uuids",
            ))
        }
    }
}

async fn current_usage(
    api: &Api,
    request: &Request,
    user: &str,
    admin: bool,
) -> Result<Reply, ApiError> {
    let params = &request.query;
    let (query, window) = filters::current_usage_query(params, user, admin, &window_rules(api))?;

    // The cache key: route and canonical parameters with the rounded window and the user.
    let mut key_params = params.clone();
    key_params.set("from", window.from.to_string());
    key_params.set("to", window.to.to_string());
    key_params.add("logged_user", user.to_owned());
    let key = format!("{}?{}", request.path, key_params.canonical());

    if let Some(hit) = api.usage_cache.get(&key).await {
        return Ok(cached_reply(&hit));
    }

    let answer = api
        .db
        .read(move |conn| queries::current_usage(conn, &query))
        .await
        .map_err(internal)?;
    match answer.rows {
        None => Ok(envelope::success_null(&answer.warnings)),
        Some(rows) => {
            let data_json = Bytes::from(to_go_json(&rows));
            if !rows.is_empty() {
                api.usage_cache.insert(key, data_json.clone()).await;
            }
            Ok(envelope::success_raw(&data_json, &answer.warnings))
        }
    }
}

/// A reply from the cache (with the warnings cached beside it), and an `Expires` header
/// saying until when it is served.
fn cached_reply(hit: &CachedAnswer) -> Reply {
    let mut reply = envelope::success_raw(&hit.data_json, &hit.warnings);
    let expires = hit
        .expires_at
        .with_timezone(&local_time_zone())
        .format("%a, %d %b %Y %H:%M:%S %Z")
        .to_string();
    if let Ok(value) = HeaderValue::from_str(&expires) {
        reply.headers.insert(EXPIRES, value);
    }
    reply
}

/// Admin stats, shared for a minute per cluster list and window (see
/// [`AnswerCache`](super::answer_cache::AnswerCache)).
async fn stats(api: &Api, params: &QueryParams, current: bool) -> Result<Reply, ApiError> {
    let query = filters::stats_query(params, current, &window_rules(api))?;
    let mut clusters = query.cluster_ids.clone();
    clusters.sort();
    clusters.dedup();
    let key = match &query.window {
        Some(window) => format!("current {clusters:?} {} {}", window.from, window.to),
        None => format!("global {clusters:?}"),
    };
    let (answer, fresh) = api
        .stats_cache
        .get_or_compute(key, async {
            let rows = api
                .db
                .read(move |conn| queries::stats(conn, &query))
                .await
                .map_err(internal)?;
            Ok((Bytes::from(to_go_json(&rows.rows)), rows.warnings))
        })
        .await?;
    Ok(if fresh {
        envelope::success_raw(&answer.data_json, &answer.warnings)
    } else {
        cached_reply(&answer)
    })
}

async fn global_usage(
    api: &Api,
    params: &QueryParams,
    user: &str,
    admin: bool,
) -> Result<Reply, ApiError> {
    let query = filters::global_usage_query(params, user, admin)?;
    read_rows(api, move |conn| queries::global_usage(conn, &query)).await
}

/// `/health`: 200 when the database answers, else 503.
async fn health(api: &Api) -> Reply {
    let (status, body) = match api.db.ping().await {
        Ok(()) => (StatusCode::OK, "CEEMS API Server is healthy"),
        Err(error) => {
            tracing::warn!(%error, "health check failed");
            (StatusCode::SERVICE_UNAVAILABLE, "KO")
        }
    };
    let mut reply = Reply::plain(status, body);
    reply
        .headers
        .insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    reply
}

/// Version information shown on the landing page.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// `/`: the landing page.
fn landing_page() -> Reply {
    let body = format!(
        r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="UTF-8">
<title>ceems_api_server</title>
<style>
body {{ font-family: -apple-system, BlinkMacSystemFont, "Segoe UI", Roboto, sans-serif; margin: 0; }}
header {{ background-color: #3cc9beff; color: #fff; font-size: 1rem; padding: 1rem; }}
main {{ padding: 1rem; }}
</style>
</head>
<body>
<header><h1>ceems_api_server</h1></header>
<main>
<h2>API server for reporting usage statistics for batchjobs/VMs/Pods.</h2>
<div>Version: (version={VERSION}, branch=, revision=)</div>
<div><ul>
<li><a href="/swagger/index.html">Swagger API</a></li>
<li><a href="/health">Health Status</a></li>
</ul></div>
</main>
</body>
</html>
"#
    );
    let mut reply = Reply::empty(StatusCode::OK);
    reply.headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=UTF-8"),
    );
    reply.body = Bytes::from(body);
    reply.compressible = true;
    reply
}
