//! Integration tests: the real `App` on port 0 with its own data directory, called over
//! real HTTP.

mod binary;
mod helpers;
mod listing;
mod protocol;
mod usage;
