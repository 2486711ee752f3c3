//! The SQL behind every route.
