//! Integration tests of the Grafana admin-team sync: a stand-in Grafana team API on a
//! loopback port, the real `App` on port 0 with its own database, real HTTP both ways.

mod fake_grafana;
mod reachability;
mod sync;
