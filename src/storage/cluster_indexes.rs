//! The indexes this server keeps per cluster beside `units` (the metric key index and the
//! usage buckets), built from the units of a cluster that lacks them: a database written
//! by another server, or by a version of this one that did not keep them yet.

use rusqlite::Connection;

use super::pool::WRITER_CACHE_KIB;
use super::{metric_keys, usage_rollup, StorageError};

/// Which indexes of a cluster were built, and from how many units.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Built {
    pub metric_keys: Option<usize>,
    pub usage_buckets: Option<usize>,
}

/// Builds the indexes `cluster_id` lacks, in one transaction. With `before_writing` (the
/// pipeline, about to write windows of the cluster), indexes are also rebuilt when units
/// were updated after this server's last window: another server wrote to the file since.
pub fn build_missing(
    conn: &mut Connection,
    cluster_id: &str,
    before_writing: bool,
) -> Result<Built, StorageError> {
    // One pass over every unit and every bucket in one transaction: a page cache large
    // enough to keep what it writes, for its duration only.
    conn.pragma_update(None, "cache_size", REBUILD_CACHE_KIB)?;
    let built = build_in_transaction(conn, cluster_id, before_writing);
    conn.pragma_update(None, "cache_size", WRITER_CACHE_KIB)?;
    built
}

/// Page cache while indexes are built, in KiB (a negative `cache_size`).
const REBUILD_CACHE_KIB: i64 = -262_144;

fn build_in_transaction(
    conn: &mut Connection,
    cluster_id: &str,
    before_writing: bool,
) -> Result<Built, StorageError> {
    let transaction = conn.transaction()?;
    let foreign =
        before_writing && metric_keys::written_by_another_server(&transaction, cluster_id)?;
    let mut built = Built::default();
    if foreign || !metric_keys::MARKER.start_cluster(&transaction, cluster_id)? {
        built.metric_keys = Some(metric_keys::rebuild(&transaction, cluster_id)?);
    }
    if foreign || !usage_rollup::MARKER.start_cluster(&transaction, cluster_id)? {
        built.usage_buckets = Some(usage_rollup::rebuild(&transaction, cluster_id)?);
    }
    transaction.commit()?;
    Ok(built)
}
