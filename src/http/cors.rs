//! cors
