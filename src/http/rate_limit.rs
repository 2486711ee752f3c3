//! rate_limit
