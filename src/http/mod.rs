//! HTTP: the only module that imports warp and hyper.
//!
//! Request pipeline, outermost first: listener (TLS) → web-config headers and basic auth →
//! path cleaning → warp routes (rate limit → identity and admin check → handler, wrapped
//! by CORS and compression).

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
pub mod usage_cache;
pub mod web_config;

/// The peer address of a connection, put in every request's extensions by the listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub std::net::SocketAddr);
