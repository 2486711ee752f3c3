//! Caches of encoded answers, expiring a fixed time after insertion (a hit does not extend
//! an entry's life), bounded by encoded size.
//!
//! - current usage: 15 minutes, per route, user and parameter set (from/to rounded to
//!   900 s, so a dashboard refresh hits it), as the reference caches it;
//! - admin stats: one minute, per cluster list and exact window, so that every admin
//!   opening the cluster status dashboard at once shares one count (concurrent misses of
//!   one key wait for a single computation).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};

use super::envelope::ApiError;

/// How long a current-usage answer is served from the cache.
pub const USAGE_CACHE_TTL: Duration = Duration::from_secs(15 * 60);

/// How long an admin stats answer is served from the cache.
pub const STATS_CACHE_TTL: Duration = Duration::from_secs(60);

/// A cached answer: the `data` value already encoded, and the envelope's warnings.
#[derive(Debug, Clone)]
pub struct CachedAnswer {
    pub data_json: Bytes,
    pub warnings: Vec<String>,
    pub expires_at: DateTime<Utc>,
}

/// A cache of encoded answers with one time to live.
#[derive(Clone)]
pub struct AnswerCache {
    cache: moka::future::Cache<String, Arc<CachedAnswer>>,
    ttl: Duration,
}

impl AnswerCache {
    /// `max_bytes` bounds the total size of the cached answers.
    pub fn new(max_bytes: u64, ttl: Duration) -> Self {
        let cache = moka::future::Cache::builder()
            .time_to_live(ttl)
            .weigher(|key: &String, value: &Arc<CachedAnswer>| {
                let warnings: usize = value.warnings.iter().map(String::len).sum();
                u32::try_from(key.len() + value.data_json.len() + warnings).unwrap_or(u32::MAX)
            })
            .max_capacity(max_bytes)
            .build();
        Self { cache, ttl }
    }

    pub async fn get(&self, key: &str) -> Option<Arc<CachedAnswer>> {
        self.cache.get(key).await
    }

    fn answer(&self, data_json: Bytes, warnings: Vec<String>) -> Arc<CachedAnswer> {
        let expires_at =
            Utc::now() + chrono::Duration::from_std(self.ttl).unwrap_or(chrono::Duration::zero());
        Arc::new(CachedAnswer {
            data_json,
            warnings,
            expires_at,
        })
    }

    pub async fn insert(&self, key: String, data_json: Bytes) -> Arc<CachedAnswer> {
        let entry = self.answer(data_json, Vec::new());
        self.cache.insert(key, entry.clone()).await;
        entry
    }

    /// The cached answer of `key`, or the one `compute` gives, then cached. Concurrent
    /// calls for a missing key run one `compute` and share its answer; an error is not
    /// cached. The flag is true when the answer was computed by this call.
    pub async fn get_or_compute<F>(
        &self,
        key: String,
        compute: F,
    ) -> Result<(Arc<CachedAnswer>, bool), ApiError>
    where
        F: Future<Output = Result<(Bytes, Vec<String>), ApiError>>,
    {
        let entry = self
            .cache
            .entry(key)
            .or_try_insert_with(async {
                let (data_json, warnings) = compute.await?;
                Ok::<_, ApiError>(self.answer(data_json, warnings))
            })
            .await
            .map_err(|error| ApiError::clone(&error))?;
        let fresh = entry.is_fresh();
        Ok((entry.into_value(), fresh))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn entries_are_kept_per_key() {
        let cache = AnswerCache::new(1 << 20, USAGE_CACHE_TTL);
        assert!(cache.get("a").await.is_none());
        let inserted = cache.insert("a".into(), Bytes::from_static(b"[1]")).await;
        let hit = cache.get("a").await.unwrap();
        assert_eq!(hit.data_json, inserted.data_json);
        assert_eq!(hit.expires_at, inserted.expires_at);
        assert!(cache.get("b").await.is_none());
    }

    #[tokio::test]
    async fn concurrent_misses_share_one_computation_and_errors_are_not_kept() {
        let cache = AnswerCache::new(1 << 20, STATS_CACHE_TTL);
        let runs = Arc::new(AtomicUsize::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let (cache, runs) = (cache.clone(), runs.clone());
            tasks.spawn(async move {
                cache
                    .get_or_compute("k".into(), async move {
                        runs.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok((Bytes::from_static(b"[2]"), vec!["w".to_owned()]))
                    })
                    .await
            });
        }
        let answers = tasks.join_all().await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        let fresh = answers
            .iter()
            .filter(|answer| answer.as_ref().unwrap().1)
            .count();
        assert_eq!(fresh, 1);
        for answer in &answers {
            let (cached, _) = answer.as_ref().unwrap();
            assert_eq!(cached.data_json, Bytes::from_static(b"[2]"));
            assert_eq!(cached.warnings, vec!["w".to_owned()]);
        }

        let failed = cache
            .get_or_compute("e".into(), async { Err(ApiError::internal("down")) })
            .await;
        assert_eq!(failed.unwrap_err(), ApiError::internal("down"));
        let retried = cache
            .get_or_compute("e".into(), async {
                Ok((Bytes::from_static(b"[]"), Vec::new()))
            })
            .await
            .unwrap();
        assert!(retried.1);
        assert!(cache.get("e").await.is_some());
    }
}
