//! The current-usage cache: answers kept 15 minutes from insertion, per route, user and
//! parameter set (from/to rounded to 900 s, so a dashboard refresh hits it).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};

/// How long an answer is served from the cache.
pub const USAGE_CACHE_TTL: Duration = Duration::from_secs(15 * 60);

/// A cached answer: the `data` array already encoded.
#[derive(Debug, Clone)]
pub struct CachedUsage {
    pub data_json: Bytes,
    pub expires_at: DateTime<Utc>,
}

/// A bounded in-memory cache (by encoded size), expiring entries a fixed time after
/// insertion: a hit does not extend an entry's life.
#[derive(Clone)]
pub struct UsageCache {
    cache: moka::future::Cache<String, Arc<CachedUsage>>,
}

impl UsageCache {
    /// `max_bytes` bounds the total size of the cached answers.
    pub fn new(max_bytes: u64) -> Self {
        let cache = moka::future::Cache::builder()
            .time_to_live(USAGE_CACHE_TTL)
            .weigher(|key: &String, value: &Arc<CachedUsage>| {
                u32::try_from(key.len() + value.data_json.len()).unwrap_or(u32::MAX)
            })
            .max_capacity(max_bytes)
            .build();
        Self { cache }
    }

    pub async fn get(&self, key: &str) -> Option<Arc<CachedUsage>> {
        self.cache.get(key).await
    }

    pub async fn insert(&self, key: String, data_json: Bytes) -> Arc<CachedUsage> {
        let expires_at = Utc::now()
            + chrono::Duration::from_std(USAGE_CACHE_TTL).unwrap_or(chrono::Duration::zero());
        let entry = Arc::new(CachedUsage {
            data_json,
            expires_at,
        });
        self.cache.insert(key, entry.clone()).await;
        entry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn entries_are_kept_per_key() {
        let cache = UsageCache::new(1 << 20);
        assert!(cache.get("a").await.is_none());
        let inserted = cache.insert("a".into(), Bytes::from_static(b"[1]")).await;
        let hit = cache.get("a").await.unwrap();
        assert_eq!(hit.data_json, inserted.data_json);
        assert_eq!(hit.expires_at, inserted.expires_at);
        assert!(cache.get("b").await.is_none());
    }
}
