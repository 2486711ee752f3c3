//! HTTP basic authentication against the web config's `basic_auth_users` (bcrypt hashes),
//! with a bounded cache of successful verifications so that a dashboard's burst of
//! requests costs one bcrypt.
//!
//! The cache never holds a clear password: its key is the user name, the user's current
//! bcrypt hash and a SHA-256 of the password under a per-process random salt. Because the
//! hash is part of the key, a changed hash in the web config can never match an old entry.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use sha2::{Digest as _, Sha256};
use tokio::sync::Semaphore;

/// How many successful verifications are remembered.
const VERIFIED_CACHE_CAPACITY: u64 = 1024;

/// The cost used for the decoy hash when no configured hash tells us better; the
/// exporter-toolkit's own decoy uses 10.
const DEFAULT_DECOY_COST: u32 = 10;

/// The `basic_auth_users` map: user name (case-sensitive) to bcrypt hash.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct BasicAuthUsers {
    hashes: HashMap<String, Arc<str>>,
}

/// A `basic_auth_users` entry that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BasicAuthConfigError {
    #[error("basic_auth_users: the value for user {user:?} is not a bcrypt hash")]
    NotBcryptHash { user: String },
}

impl BasicAuthUsers {
    pub fn new(entries: impl IntoIterator<Item = (String, String)>) -> Self {
        let hashes = entries
            .into_iter()
            .map(|(user, hash)| (user, Arc::from(hash)))
            .collect();
        BasicAuthUsers { hashes }
    }

    /// True when no user is configured, which means "no authentication".
    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    /// The reference checks this at startup only: a value that is not a bcrypt hash makes
    /// the web config invalid. Later reloads skip it, and such a user simply never matches.
    pub fn validate_hashes(&self) -> Result<(), BasicAuthConfigError> {
        let mut users: Vec<&String> = self.hashes.keys().collect();
        users.sort();
        for user in users {
            let hash = &self.hashes[user];
            if hash.parse::<bcrypt::HashParts>().is_err() {
                return Err(BasicAuthConfigError::NotBcryptHash { user: user.clone() });
            }
        }
        Ok(())
    }

    fn hash_for(&self, user: &str) -> Option<&Arc<str>> {
        self.hashes.get(user)
    }

    /// The cost of the decoy verification run for unknown users: the highest configured
    /// cost, so that an unknown name takes as long as the slowest known one.
    fn decoy_cost(&self) -> u32 {
        self.hashes
            .values()
            .filter_map(|hash| hash.parse::<bcrypt::HashParts>().ok())
            .map(|parts| parts.get_cost())
            .max()
            .unwrap_or(DEFAULT_DECOY_COST)
    }

    /// Names whose hash differs between `self` and `other`, or that exist in only one.
    fn changed_users(&self, other: &BasicAuthUsers) -> Vec<String> {
        let mut changed: Vec<String> = self
            .hashes
            .iter()
            .filter(|(user, hash)| other.hashes.get(*user) != Some(*hash))
            .map(|(user, _)| user.clone())
            .collect();
        changed.extend(
            other
                .hashes
                .keys()
                .filter(|user| !self.hashes.contains_key(*user))
                .cloned(),
        );
        changed
    }
}

impl fmt::Debug for BasicAuthUsers {
    /// Hashes are secrets too (they can be brute-forced offline): show names only.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut users: Vec<&String> = self.hashes.keys().collect();
        users.sort();
        formatter
            .debug_struct("BasicAuthUsers")
            .field("users", &users)
            .finish()
    }
}

/// Why a request was not authenticated. Every variant is answered with the same 401; the
/// distinction is for logs only.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BasicAuthRejection {
    #[error("no usable `Authorization: Basic` header")]
    MissingCredentials,
    #[error("wrong user name or password")]
    WrongCredentials,
    #[error("password verification did not complete")]
    VerificationFailed,
}

/// Cache key of one successful verification.
#[derive(Clone, PartialEq, Eq, Hash)]
struct VerifiedCredentials {
    user: String,
    bcrypt_hash: Arc<str>,
    salted_password_digest: [u8; 32],
}

/// Verifies `Authorization: Basic` headers. One per server; cheap to share by reference.
pub struct BasicAuthVerifier {
    verified: moka::future::Cache<VerifiedCredentials, ()>,
    digest_salt: [u8; 32],
    /// bcrypt is CPU-bound by design: at most one verification per core runs at a time, so
    /// a flood of wrong passwords cannot take every blocking thread.
    bcrypt_slots: Arc<Semaphore>,
    bcrypt_runs: Arc<AtomicU64>,
    decoy_hashes: Arc<Mutex<HashMap<u32, Arc<str>>>>,
}

impl Default for BasicAuthVerifier {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for BasicAuthVerifier {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("BasicAuthVerifier")
            .field("cached_verifications", &self.verified.entry_count())
            .field("bcrypt_runs", &self.bcrypt_verification_count())
            .finish_non_exhaustive()
    }
}

impl BasicAuthVerifier {
    pub fn new() -> Self {
        let parallelism = std::thread::available_parallelism().map_or(1, |count| count.get());
        BasicAuthVerifier {
            verified: moka::future::Cache::builder()
                .max_capacity(VERIFIED_CACHE_CAPACITY)
                .support_invalidation_closures()
                .build(),
            digest_salt: random_salt(),
            bcrypt_slots: Arc::new(Semaphore::new(parallelism)),
            bcrypt_runs: Arc::new(AtomicU64::new(0)),
            decoy_hashes: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// How many bcrypt verifications ran so far (decoys for unknown users included).
    /// Exposed so that tests can tell a cache hit from a verification.
    pub fn bcrypt_verification_count(&self) -> u64 {
        self.bcrypt_runs.load(Ordering::Relaxed)
    }

    /// Drops the cached verifications of users whose hash changed between two versions of
    /// the web config.
    pub fn forget_changed_users(&self, previous: &BasicAuthUsers, current: &BasicAuthUsers) {
        let changed = previous.changed_users(current);
        if changed.is_empty() {
            return;
        }
        let invalidation = self
            .verified
            .invalidate_entries_if(move |credentials, _| changed.contains(&credentials.user));
        if invalidation.is_err() {
            // Only possible if the cache was built without invalidation closures; the hash
            // in the key keeps stale entries unreachable anyway.
            self.verified.invalidate_all();
        }
    }

    /// Checks the request's `Authorization` header against `users`.
    pub async fn verify(
        &self,
        users: &BasicAuthUsers,
        authorization: Option<&http::HeaderValue>,
    ) -> Result<(), BasicAuthRejection> {
        let (user, password) = authorization
            .and_then(|value| parse_basic_credentials(value.as_bytes()))
            .ok_or(BasicAuthRejection::MissingCredentials)?;
        let known_hash = std::str::from_utf8(&user)
            .ok()
            .and_then(|name| users.hash_for(name).map(|hash| (name, hash)));
        let Some((user, bcrypt_hash)) = known_hash else {
            // Unknown names cost one bcrypt too, so response times do not tell which users
            // exist.
            let decoy = self.decoy_hash(users.decoy_cost()).await?;
            let _ = self.run_bcrypt(password, decoy).await;
            return Err(BasicAuthRejection::WrongCredentials);
        };
        let credentials = VerifiedCredentials {
            user: user.to_owned(),
            bcrypt_hash: Arc::clone(bcrypt_hash),
            salted_password_digest: self.salted_digest(user.as_bytes(), &password),
        };
        let bcrypt_hash = Arc::clone(bcrypt_hash);
        // Concurrent requests with the same credentials share one verification; only
        // successes are stored.
        self.verified
            .try_get_with(credentials, async move {
                match self.run_bcrypt(password, bcrypt_hash).await {
                    Ok(true) => Ok(()),
                    Ok(false) => Err(BasicAuthRejection::WrongCredentials),
                    Err(rejection) => Err(rejection),
                }
            })
            .await
            .map_err(|rejection| (*rejection).clone())
    }

    async fn run_bcrypt(
        &self,
        password: Vec<u8>,
        bcrypt_hash: Arc<str>,
    ) -> Result<bool, BasicAuthRejection> {
        let _slot = Arc::clone(&self.bcrypt_slots)
            .acquire_owned()
            .await
            .map_err(|_closed| BasicAuthRejection::VerificationFailed)?;
        let bcrypt_runs = Arc::clone(&self.bcrypt_runs);
        let verification = tokio::task::spawn_blocking(move || {
            bcrypt_runs.fetch_add(1, Ordering::Relaxed);
            // The crate compares the digests in constant time. A hash it cannot read
            // (possible after a reload) never matches.
            bcrypt::verify(&password, &bcrypt_hash).unwrap_or(false)
        });
        verification.await.map_err(|join_error| {
            tracing::warn!(error = %join_error, "bcrypt verification task failed");
            BasicAuthRejection::VerificationFailed
        })
    }

    /// A hash of a fixed password at the given cost, made once per cost.
    async fn decoy_hash(&self, cost: u32) -> Result<Arc<str>, BasicAuthRejection> {
        if let Some(hash) = lock_ignoring_poison(&self.decoy_hashes).get(&cost) {
            return Ok(Arc::clone(hash));
        }
        let _slot = Arc::clone(&self.bcrypt_slots)
            .acquire_owned()
            .await
            .map_err(|_closed| BasicAuthRejection::VerificationFailed)?;
        let made = tokio::task::spawn_blocking(move || bcrypt::hash("ceems decoy password", cost))
            .await
            .map_err(|_join_error| BasicAuthRejection::VerificationFailed)?
            .map_err(|_bcrypt_error| BasicAuthRejection::VerificationFailed)?;
        let made: Arc<str> = Arc::from(made);
        lock_ignoring_poison(&self.decoy_hashes).insert(cost, Arc::clone(&made));
        Ok(made)
    }

    fn salted_digest(&self, user: &[u8], password: &[u8]) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(self.digest_salt);
        // The length prefix keeps ("ab", "c") and ("a", "bc") apart.
        hasher.update((user.len() as u64).to_be_bytes());
        hasher.update(user);
        hasher.update(password);
        hasher.finalize().into()
    }
}

/// Go's `Request.BasicAuth`: a case-insensitive `Basic ` prefix, standard base64 with
/// padding, then `user:password` split at the first colon.
fn parse_basic_credentials(header_value: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    const PREFIX: &[u8] = b"Basic ";
    if header_value.len() < PREFIX.len()
        || !header_value[..PREFIX.len()].eq_ignore_ascii_case(PREFIX)
    {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(&header_value[PREFIX.len()..])
        .ok()?;
    let colon = decoded.iter().position(|byte| *byte == b':')?;
    let password = decoded[colon + 1..].to_vec();
    let mut user = decoded;
    user.truncate(colon);
    Some((user, password))
}

/// The salt only has to be unknown outside this process: the OS generator through rustls'
/// provider, with std's randomly keyed hasher as a fallback that never fails.
fn random_salt() -> [u8; 32] {
    let mut salt = [0u8; 32];
    let provider = rustls::crypto::ring::default_provider();
    if provider.secure_random.fill(&mut salt).is_ok() {
        return salt;
    }
    use std::hash::{BuildHasher as _, Hasher as _};
    for chunk in salt.chunks_mut(8) {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(0);
        chunk.copy_from_slice(&hasher.finish().to_le_bytes()[..chunk.len()]);
    }
    salt
}

fn lock_ignoring_poison<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cost 4 is bcrypt's minimum: keeps the tests fast.
    fn hash_of(password: &str) -> String {
        bcrypt::hash(password, 4).expect("bcrypt hashes at cost 4")
    }

    fn basic_header(user: &str, password: &str) -> http::HeaderValue {
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        http::HeaderValue::from_str(&format!("Basic {encoded}")).expect("base64 is a valid header")
    }

    fn users_alice_bob() -> BasicAuthUsers {
        BasicAuthUsers::new([
            ("alice".to_owned(), hash_of("alice-secret")),
            ("bob".to_owned(), hash_of("bob-secret")),
        ])
    }

    #[test]
    fn basic_credentials_are_parsed_like_go() {
        let parse = |value: &str| parse_basic_credentials(value.as_bytes());
        let encoded = base64::engine::general_purpose::STANDARD.encode("u:p:q");
        assert_eq!(
            parse(&format!("Basic {encoded}")),
            Some((b"u".to_vec(), b"p:q".to_vec()))
        );
        assert_eq!(
            parse(&format!("bAsIc {encoded}")),
            Some((b"u".to_vec(), b"p:q".to_vec()))
        );
        let empty_password = base64::engine::general_purpose::STANDARD.encode("u:");
        assert_eq!(
            parse(&format!("Basic {empty_password}")),
            Some((b"u".to_vec(), Vec::new()))
        );
        let no_colon = base64::engine::general_purpose::STANDARD.encode("user");
        assert_eq!(parse(&format!("Basic {no_colon}")), None);
        assert_eq!(parse("Bearer abc"), None);
        assert_eq!(parse("Basic"), None);
        assert_eq!(parse("Basic !!!"), None);
    }

    #[test]
    fn hash_validation_rejects_values_that_are_not_bcrypt() {
        assert_eq!(users_alice_bob().validate_hashes(), Ok(()));
        let users = BasicAuthUsers::new([
            ("alice".to_owned(), hash_of("x")),
            ("carol".to_owned(), "plaintext".to_owned()),
        ]);
        assert_eq!(
            users.validate_hashes(),
            Err(BasicAuthConfigError::NotBcryptHash {
                user: "carol".to_owned()
            })
        );
    }

    #[test]
    fn debug_output_never_shows_hashes() {
        let users = users_alice_bob();
        let shown = format!("{users:?}");
        assert!(shown.contains("alice") && shown.contains("bob"), "{shown}");
        assert!(!shown.contains("$2"), "{shown}");
    }

    #[tokio::test]
    async fn right_password_passes_and_is_cached() {
        let verifier = BasicAuthVerifier::new();
        let users = users_alice_bob();
        let header = basic_header("alice", "alice-secret");
        assert_eq!(verifier.verify(&users, Some(&header)).await, Ok(()));
        assert_eq!(verifier.bcrypt_verification_count(), 1);
        assert_eq!(verifier.verify(&users, Some(&header)).await, Ok(()));
        assert_eq!(
            verifier.bcrypt_verification_count(),
            1,
            "second check is a cache hit"
        );
    }

    #[tokio::test]
    async fn wrong_password_unknown_user_and_missing_header_are_rejected() {
        let verifier = BasicAuthVerifier::new();
        let users = users_alice_bob();
        let wrong = basic_header("alice", "bob-secret");
        assert_eq!(
            verifier.verify(&users, Some(&wrong)).await,
            Err(BasicAuthRejection::WrongCredentials)
        );
        // Failures are not cached: each attempt costs a bcrypt.
        assert_eq!(
            verifier.verify(&users, Some(&wrong)).await,
            Err(BasicAuthRejection::WrongCredentials)
        );
        assert_eq!(verifier.bcrypt_verification_count(), 2);

        let unknown = basic_header("mallory", "alice-secret");
        assert_eq!(
            verifier.verify(&users, Some(&unknown)).await,
            Err(BasicAuthRejection::WrongCredentials)
        );
        assert_eq!(
            verifier.bcrypt_verification_count(),
            3,
            "an unknown user still costs one bcrypt"
        );

        assert_eq!(
            verifier.verify(&users, None).await,
            Err(BasicAuthRejection::MissingCredentials)
        );
        // User names are case-sensitive.
        let upper = basic_header("Alice", "alice-secret");
        assert_eq!(
            verifier.verify(&users, Some(&upper)).await,
            Err(BasicAuthRejection::WrongCredentials)
        );
    }

    #[tokio::test]
    async fn a_changed_hash_does_not_reuse_the_cached_success() {
        let verifier = BasicAuthVerifier::new();
        let before = users_alice_bob();
        let header = basic_header("alice", "alice-secret");
        assert_eq!(verifier.verify(&before, Some(&header)).await, Ok(()));

        let after = BasicAuthUsers::new([("alice".to_owned(), hash_of("new-secret"))]);
        verifier.forget_changed_users(&before, &after);
        assert_eq!(
            verifier.verify(&after, Some(&header)).await,
            Err(BasicAuthRejection::WrongCredentials)
        );
        let new_header = basic_header("alice", "new-secret");
        assert_eq!(verifier.verify(&after, Some(&new_header)).await, Ok(()));
        assert_eq!(verifier.bcrypt_verification_count(), 3);
    }

    #[tokio::test]
    async fn a_concurrent_burst_costs_one_bcrypt() {
        let verifier = Arc::new(BasicAuthVerifier::new());
        let users = Arc::new(users_alice_bob());
        let header = basic_header("bob", "bob-secret");
        let mut burst = tokio::task::JoinSet::new();
        for _ in 0..16 {
            let (verifier, users, header) =
                (Arc::clone(&verifier), Arc::clone(&users), header.clone());
            burst.spawn(async move { verifier.verify(&users, Some(&header)).await });
        }
        while let Some(outcome) = burst.join_next().await {
            assert_eq!(outcome.expect("verification task completes"), Ok(()));
        }
        assert_eq!(verifier.bcrypt_verification_count(), 1);
    }

    #[test]
    fn changed_users_lists_modified_added_and_removed_names() {
        let before = BasicAuthUsers::new([
            ("same".to_owned(), "h1".to_owned()),
            ("modified".to_owned(), "h2".to_owned()),
            ("removed".to_owned(), "h3".to_owned()),
        ]);
        let after = BasicAuthUsers::new([
            ("same".to_owned(), "h1".to_owned()),
            ("modified".to_owned(), "h2b".to_owned()),
            ("added".to_owned(), "h4".to_owned()),
        ]);
        let mut changed = before.changed_users(&after);
        changed.sort();
        assert_eq!(changed, ["added", "modified", "removed"]);
    }
}
