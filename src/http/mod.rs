//! HTTP: the only module that imports warp and hyper.
//!
//! Request pipeline, outermost first: listener (TLS) → web-config headers and basic auth →
//! path cleaning → warp routes (rate limit → identity and admin check → handler, wrapped
//! by CORS and compression).

pub mod answer_cache;
pub mod basic_auth;
pub mod compression;
pub mod cors;
pub mod demo;
pub mod envelope;
pub mod filters;
pub mod handlers;
pub mod identity;
pub mod listener;
pub mod openapi;
pub mod path_clean;
pub mod rate_limit;
pub mod routes;
pub mod web_config;

/// The peer address of a connection, put in every request's extensions by the listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub std::net::SocketAddr);

use std::collections::HashSet;

use crate::config::Settings;
use crate::storage::Database;

/// A setting of the HTTP layer that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum HttpSetupError {
    #[error(transparent)]
    UserHeader(#[from] identity::InvalidHeaderName),
    #[error(transparent)]
    CorsOrigin(#[from] cors::InvalidOrigin),
    #[error(transparent)]
    Contract(#[from] openapi::InvalidContract),
}

/// Size bound of the current-usage cache.
const USAGE_CACHE_BYTES: u64 = 256 * 1024 * 1024;
/// Bound of the admin stats cache (answers are a row per cluster).
const STATS_CACHE_BYTES: u64 = 4 * 1024 * 1024;

/// Builds the shared state of every route from the settings.
pub fn build_api(settings: &Settings, db: Database) -> Result<routes::Api, HttpSetupError> {
    let flags = &settings.flags;
    let user_headers = identity::UserHeaders::new(&flags.user_header_names)?;
    let cors = cors::Cors::new(&flags.cors_origin, user_headers.names())?;
    let config_admins: HashSet<String> = settings
        .config
        .server
        .admin
        .ceems_admin_users()
        .into_iter()
        .collect();
    Ok(routes::Api {
        db,
        routes: routes::RouteTable::new(&flags.route_prefix),
        user_headers,
        cors,
        compression_level: flags.compression.then_some(flags.compression_level),
        rate_limiter: (flags.max_requests > 0)
            .then(|| rate_limit::RateLimiter::new(flags.max_requests)),
        time_zone: settings.config.server.data.time_zone,
        max_period: flags.query_max_period,
        config_admins,
        usage_cache: answer_cache::AnswerCache::new(
            USAGE_CACHE_BYTES,
            answer_cache::USAGE_CACHE_TTL,
        ),
        stats_cache: answer_cache::AnswerCache::new(
            STATS_CACHE_BYTES,
            answer_cache::STATS_CACHE_TTL,
        ),
        swagger: openapi::SwaggerUi::for_route_prefix(&flags.route_prefix)?,
    })
}
