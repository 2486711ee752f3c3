//! The retention purge: finished units, usage and daily usage older than
//! `retention_period`, once at start and then once per `update_interval`, each purge in its
//! own transaction.

use std::time::Duration;

use chrono_tz::Tz;
use tokio_util::sync::CancellationToken;

use super::now_ms;
use crate::storage::pool::refresh_planner_statistics;
use crate::storage::write::{purge_expired_rows, PurgedRows};
use crate::storage::{Database, StorageError};

/// Purges what ended or was last updated `retention` before `now_ms`.
pub async fn purge_once(
    db: &Database,
    retention: Duration,
    zone: Tz,
    now_ms: i64,
) -> Result<PurgedRows, StorageError> {
    let retention_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    let cutoff_ms = now_ms.saturating_sub(retention_ms);
    db.write(move |conn| {
        let transaction = conn.transaction()?;
        let purged = purge_expired_rows(&transaction, cutoff_ms, zone)?;
        transaction.commit()?;
        // The tables grew and shrank since the last run: keep the planner's view current.
        refresh_planner_statistics(conn)?;
        Ok(purged)
    })
    .await
}

/// Purges now, then every `interval`, until `shutdown`. Errors are logged; the next
/// purge tries again.
pub async fn run_retention(
    db: Database,
    retention: Duration,
    zone: Tz,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval(interval.max(Duration::from_secs(1)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        match purge_once(&db, retention, zone, now_ms()).await {
            Ok(purged) if purged == PurgedRows::default() => {}
            Ok(purged) => tracing::info!(
                units = purged.units,
                usage = purged.usage,
                daily_usage = purged.daily_usage,
                retention = ?retention,
                "purged expired rows"
            ),
            Err(error) => {
                tracing::error!(%error, "retention purge failed; retried at the next update")
            }
        }
    }
}
