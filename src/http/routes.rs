//! Every route in one table, and the per-request pipeline around the handlers:
//! route lookup → method → rate limit → preflight → identity and admin check → handler →
//! CORS → compression.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use chrono_tz::Tz;
use http::header::{HeaderMap, ACCEPT_ENCODING, ORIGIN};
use http::{Method, StatusCode};
use warp::filters::BoxedFilter;
use warp::Filter;

use super::answer_cache::AnswerCache;
use super::compression;
use super::cors::Cors;
use super::envelope::{self, ApiError, Reply};
use super::filters::QueryParams;
use super::handlers;
use super::identity::UserHeaders;
use super::rate_limit::RateLimiter;
use super::PeerAddr;
use crate::storage::Database;

/// What a path resolves to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    Landing,
    Health,
    Swagger,
    DemoUnits,
    DemoUsage,
    Units { admin: bool },
    Verify,
    CurrentUsage { admin: bool },
    GlobalUsage { admin: bool },
    Projects { admin: bool },
    Users { admin: bool },
    Clusters,
    Stats { current: bool },
}

impl Route {
    /// Routes under the API prefix (GET and OPTIONS only, CORS-wrapped).
    fn is_api(self) -> bool {
        !matches!(self, Route::Landing | Route::Health | Route::Swagger)
    }

    /// Routes that need an identified user.
    fn needs_user(self) -> bool {
        self.is_api() && !matches!(self, Route::DemoUnits | Route::DemoUsage)
    }

    /// Routes only admins may call.
    fn admin_only(self) -> bool {
        matches!(
            self,
            Route::Units { admin: true }
                | Route::CurrentUsage { admin: true }
                | Route::GlobalUsage { admin: true }
                | Route::Projects { admin: true }
                | Route::Users { admin: true }
                | Route::Clusters
                | Route::Stats { .. }
        )
    }

    fn has_cors(self) -> bool {
        self.is_api() || self == Route::Health
    }
}

/// The route table: exact paths, built once from the API prefix.
#[derive(Debug, Clone)]
pub struct RouteTable {
    exact: HashMap<String, Route>,
}

impl RouteTable {
    /// `prefix` is normalised (`""` or `/something`, no trailing slash).
    pub fn new(prefix: &str) -> Self {
        let api = format!("{prefix}/api/v1");
        let mut exact = HashMap::new();
        exact.insert("/".to_owned(), Route::Landing);
        exact.insert("/health".to_owned(), Route::Health);
        // Only these values of the reference's {mode} and {resource} exist; anything else
        // is the router's 404.
        let api_routes: [(&str, Route); 16] = [
            ("/units", Route::Units { admin: false }),
            ("/units/admin", Route::Units { admin: true }),
            ("/units/verify", Route::Verify),
            ("/usage/current", Route::CurrentUsage { admin: false }),
            ("/usage/current/admin", Route::CurrentUsage { admin: true }),
            ("/usage/global", Route::GlobalUsage { admin: false }),
            ("/usage/global/admin", Route::GlobalUsage { admin: true }),
            ("/projects", Route::Projects { admin: false }),
            ("/projects/admin", Route::Projects { admin: true }),
            ("/users", Route::Users { admin: false }),
            ("/users/admin", Route::Users { admin: true }),
            ("/clusters/admin", Route::Clusters),
            ("/stats/current/admin", Route::Stats { current: true }),
            ("/stats/global/admin", Route::Stats { current: false }),
            ("/demo/units", Route::DemoUnits),
            ("/demo/usage", Route::DemoUsage),
        ];
        for (path, route) in api_routes {
            exact.insert(format!("{api}{path}"), route);
        }
        Self { exact }
    }

    /// Every exact path of the table (the Swagger UI's assets are matched by prefix).
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.exact.keys().map(String::as_str)
    }

    pub fn lookup(&self, path: &str) -> Option<Route> {
        if let Some(route) = self.exact.get(path) {
            return Some(*route);
        }
        path.starts_with("/swagger/").then_some(Route::Swagger)
    }
}

/// Everything a request needs, shared by all connections.
pub struct Api {
    pub db: Database,
    pub routes: RouteTable,
    pub user_headers: UserHeaders,
    pub cors: Cors,
    /// Compression level when `--web.compression` is on.
    pub compression_level: Option<u32>,
    pub rate_limiter: Option<RateLimiter>,
    pub time_zone: Tz,
    pub max_period: Duration,
    /// Admins from the config (plus the load balancer's service account).
    pub config_admins: HashSet<String>,
    pub usage_cache: AnswerCache,
    pub stats_cache: AnswerCache,
    pub swagger: super::openapi::SwaggerUi,
}

/// The parts of a request the pipeline reads.
#[derive(Debug)]
pub struct Request {
    pub path: String,
    pub method: Method,
    pub headers: HeaderMap,
    pub query: QueryParams,
    pub raw_query: String,
    pub peer: Option<PeerAddr>,
}

/// The warp filter that serves every route.
pub fn filter(api: Arc<Api>) -> BoxedFilter<(warp::reply::Response,)> {
    let raw_query = warp::query::raw().or(warp::any().map(String::new)).unify();
    warp::path::full()
        .and(warp::method())
        .and(warp::header::headers_cloned())
        .and(raw_query)
        .and(warp::ext::optional::<PeerAddr>())
        .and_then(
            move |path: warp::path::FullPath,
                  method: Method,
                  headers: HeaderMap,
                  raw_query: String,
                  peer: Option<PeerAddr>| {
                let api = api.clone();
                async move {
                    let request = Request {
                        path: path.as_str().to_owned(),
                        method,
                        headers,
                        query: QueryParams::parse(&raw_query),
                        raw_query,
                        peer,
                    };
                    Ok::<_, Infallible>(into_response(dispatch(&api, request).await))
                }
            },
        )
        .boxed()
}

/// Runs the pipeline for one request.
pub async fn dispatch(api: &Api, request: Request) -> Reply {
    let Some(route) = api.routes.lookup(&request.path) else {
        return Reply::plain(StatusCode::NOT_FOUND, "404 page not found\n");
    };
    if route.is_api() && request.method != Method::GET && request.method != Method::OPTIONS {
        return Reply::empty(StatusCode::METHOD_NOT_ALLOWED);
    }
    if route == Route::Swagger && request.method != Method::GET {
        return Reply::plain(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed\n");
    }

    let user = api.user_headers.identify(&request.headers);
    let decision = api.rate_limiter.as_ref().map(|limiter| {
        let key = match (&user, request.peer) {
            (Some(user), _) => format!("user:{user}"),
            (None, Some(PeerAddr(peer))) => format!("ip:{}", peer.ip()),
            (None, None) => "anonymous".to_owned(),
        };
        limiter.check(&key, chrono::Utc::now().timestamp_millis())
    });
    if let Some(decision) = decision.filter(|decision| !decision.allowed) {
        return decision.rejection();
    }

    let mut reply = if request.method == Method::OPTIONS && route.has_cors() {
        api.cors.preflight(request.headers.get(ORIGIN))
    } else {
        let mut reply = authorised_call(api, route, &request, user).await;
        if route.has_cors() && reply.compressible {
            api.cors
                .apply(request.headers.get(ORIGIN), &mut reply.headers);
        }
        if let (Some(level), Some(encoding)) = (
            api.compression_level,
            compression::negotiate(request.headers.get(ACCEPT_ENCODING)),
        ) {
            compression::compress(&mut reply, encoding, level);
        }
        reply
    };
    if let Some(decision) = decision {
        decision.apply(&mut reply.headers);
    }
    reply
}

/// Identity and admin check, then the handler.
async fn authorised_call(
    api: &Api,
    route: Route,
    request: &Request,
    user: Option<String>,
) -> Reply {
    let user = if route.needs_user() {
        let Some(user) = user else {
            return envelope::middleware_error(&ApiError::unauthorized("no user identified"));
        };
        if route.admin_only() && !is_admin(api, &user).await {
            return envelope::middleware_error(&ApiError::forbidden(
                "current user does not have admin privileges",
            ));
        }
        user
    } else {
        String::new()
    };
    handlers::handle(api, route, request, &user).await
}

/// An admin is named in the config or in the `admin_users` table (Grafana teams).
async fn is_admin(api: &Api, user: &str) -> bool {
    if api.config_admins.contains(user) {
        return true;
    }
    match api.db.read(crate::storage::admin::admin_user_names).await {
        Ok(names) => names.iter().any(|name| name == user),
        Err(error) => {
            tracing::warn!(%error, "failed to read admin users; treating the user as non-admin");
            false
        }
    }
}

/// Converts a finished reply into warp's response type.
pub fn into_response(reply: Reply) -> warp::reply::Response {
    let mut response = warp::reply::Response::new(reply.body.into());
    *response.status_mut() = reply.status;
    *response.headers_mut() = reply.headers;
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Flags, Settings};

    async fn api() -> (Arc<Api>, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("temp dir");
        let database = Database::open(dir.path()).expect("database opens");
        let settings = Settings {
            flags: Flags::default(),
            config: Config::default(),
        };
        let api = super::super::build_api(&settings, database).expect("api builds");
        (Arc::new(api), dir)
    }

    #[tokio::test]
    async fn the_filter_routes_in_process() {
        let (api, _dir) = api().await;
        let routes = filter(api);

        let response = warp::test::request().path("/nope").reply(&routes).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(response.body().as_ref(), b"404 page not found\n");

        let response = warp::test::request()
            .path("/api/v1/units")
            .reply(&routes)
            .await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

        let response = warp::test::request()
            .path("/api/v1/units?from=0&to=1")
            .header("X-Grafana-User", "alice")
            .reply(&routes)
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.body().as_ref(),
            b"{\"status\":\"success\",\"data\":[]}\n"
        );

        let response = warp::test::request()
            .method("DELETE")
            .path("/api/v1/units")
            .reply(&routes)
            .await;
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert!(response.body().is_empty());
    }

    #[test]
    fn table_has_only_the_reference_paths() {
        let table = RouteTable::new("/ceems");
        assert_eq!(
            table.lookup("/ceems/api/v1/usage/current/admin"),
            Some(Route::CurrentUsage { admin: true })
        );
        assert_eq!(table.lookup("/api/v1/units"), None);
        assert_eq!(table.lookup("/ceems/api/v1/usage/yearly"), None);
        assert_eq!(table.lookup("/ceems/api/v1/units/"), None);
        assert_eq!(table.lookup("/health"), Some(Route::Health));
        assert_eq!(table.lookup("/swagger/index.html"), Some(Route::Swagger));
        assert_eq!(table.lookup("/swagger"), None);
    }
}
