//! The token cache: one signed token per (video, token settings), reused while it still has
//! enough life left for a viewer to use it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use moka::Expiry;
use moka::future::Cache;

use crate::token::signer::Clock;
use crate::token::{IssuedToken, SignError, Signer, TokenSettings, VideoUid};

/// Slots in front of the cache for the tokens being asked for now.
const HOT_SLOTS: usize = 256;

/// How long a replacement for a refused token is trusted: if Stream refuses the replacement
/// too within this time, nothing more is signed for that key until it has passed (the
/// refusal is the origin's answer, not a stale token).
pub const REFUSED_TOKEN_COOL_DOWN: Duration = Duration::from_secs(60);

/// The last refusal handled for one key: which token Stream refused, when, and its
/// replacement once there is one (shared by every request that saw that refusal).
struct Refusal {
    refused: Arc<IssuedToken>,
    /// Unix second (by the cache's clock) the refusal was handled.
    at: u64,
    replacement: Arc<tokio::sync::OnceCell<Replaced>>,
}

/// The token that followed a refused one.
struct Replaced {
    token: Arc<IssuedToken>,
    /// Whether the refused token was evicted for it (else it was already cached: the refused
    /// token was an older one, and this is no replacement to cool down on).
    evicted: bool,
}

/// What [`TokenCache::replace_refused`] found.
#[derive(Debug, Clone)]
pub enum Replacement {
    /// A token other than the refused one, to try once.
    Token(Arc<IssuedToken>),
    /// The refused token was itself a replacement less than [`REFUSED_TOKEN_COOL_DOWN`] old:
    /// it stays cached, nothing was signed, and the refusal stands.
    CoolingDown,
}

/// A token in a hot slot. A lookup is a hash, one atomic load and two comparisons (the
/// settings by address first: a rule's grant is one shared `Arc`). Moka's own bookkeeping
/// on a hit (read recording, expiry and frequency accounting) cost as much as the rest of
/// the gateway's work on a cache hit.
struct Hot {
    uid: VideoUid,
    settings: Arc<TokenSettings>,
    token: Arc<IssuedToken>,
    /// Unix second from which the token is no longer served: the same window as the cache's.
    serve_until: u64,
}

/// What makes two tokens interchangeable: the video and every setting that goes into the
/// claims. Two callers with different entitlements therefore never share a token.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct TokenKey {
    uid: VideoUid,
    settings: Arc<TokenSettings>,
}

/// A counter that many threads bump at once: one cache line per shard, so a hot path does
/// not bounce a single line between cores.
#[derive(Default)]
struct ShardedCounter {
    shards: [PaddedCounter; COUNTER_SHARDS],
}

const COUNTER_SHARDS: usize = 16;

#[derive(Default)]
#[repr(align(64))]
struct PaddedCounter(AtomicU64);

impl ShardedCounter {
    fn increment(&self) {
        thread_local! {
            static SHARD: usize = {
                static NEXT: AtomicU64 = AtomicU64::new(0);
                (NEXT.fetch_add(1, Ordering::Relaxed) as usize) % COUNTER_SHARDS
            };
        }
        let shard = SHARD.with(|shard| *shard);
        self.shards[shard].0.fetch_add(1, Ordering::Relaxed);
    }

    fn sum(&self) -> u64 {
        self.shards
            .iter()
            .map(|shard| shard.0.load(Ordering::Relaxed))
            .sum()
    }
}

/// A borrowed [`TokenKey`] for lookups: hashes and compares the same, so a hit clones no
/// reference count that every request for a hot token would contend on.
#[derive(Hash)]
struct TokenKeyRef<'a> {
    uid: VideoUid,
    settings: &'a TokenSettings,
}

impl moka::Equivalent<TokenKey> for TokenKeyRef<'_> {
    fn equivalent(&self, key: &TokenKey) -> bool {
        self.uid == key.uid && *self.settings == *key.settings
    }
}

/// Expires each entry when its token's remaining life drops to `min_remaining`; a token
/// whose `exp` was clipped to its rule's end is kept until it expires, since signing again
/// could not give it longer life.
struct ReuseWindow {
    min_remaining: Duration,
    /// The signer's: remaining life is measured on the clock the token was stamped by.
    clock: Clock,
}

impl Expiry<TokenKey, Arc<IssuedToken>> for ReuseWindow {
    fn expire_after_create(
        &self,
        key: &TokenKey,
        token: &Arc<IssuedToken>,
        _created_at: Instant,
    ) -> Option<Duration> {
        let remaining = self.clock.until(token.expires_at);
        if key.settings.not_after == Some(token.expires_at) {
            return Some(remaining);
        }
        Some(remaining.saturating_sub(self.min_remaining))
    }
}

/// Whether `a` and `b` are the same issued token. By identity, not by text: two signatures
/// of the same claims within one second are byte-identical (the claims have no nonce), yet
/// the second is a replacement for the first.
fn same_token(a: &Arc<IssuedToken>, b: &Arc<IssuedToken>) -> bool {
    a.same_as(b)
}

/// One thread's copy of the token in a hot slot, and the slot entry it was copied from.
struct LocalHot {
    source: Arc<Hot>,
    token: Arc<IssuedToken>,
}

thread_local! {
    /// This thread's copies of hot-slot tokens, by slot. A hit hands out the thread's copy,
    /// not the shared token: counting a reference to the shared one (and to its redirect's
    /// `Location`) wrote to cache lines every core writes, and those writes were the most
    /// expensive instructions of a cache hit under load. A copy is valid while its slot
    /// still holds the entry it was copied from (the copy keeps that entry alive, so its
    /// address cannot be reused meanwhile): a new token or an eviction replaces the entry.
    static LOCAL_HOT: std::cell::RefCell<Vec<Option<LocalHot>>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// This thread's copy of `hot`'s token (kept in slot `index`), made on the thread's first
/// hit on `hot`; the shared token itself where thread-locals are gone (the thread is exiting).
fn local_copy(index: usize, hot: &Arc<Hot>) -> Arc<IssuedToken> {
    LOCAL_HOT
        .try_with(|local| {
            let mut local = local.try_borrow_mut().ok()?;
            if local.len() != HOT_SLOTS {
                local.resize_with(HOT_SLOTS, || None);
            }
            let entry = &mut local[index];
            if let Some(held) = entry
                && Arc::ptr_eq(&held.source, hot)
            {
                return Some(Arc::clone(&held.token));
            }
            let token = Arc::new(hot.token.copy_for_thread());
            *entry = Some(LocalHot {
                source: Arc::clone(hot),
                token: Arc::clone(&token),
            });
            Some(token)
        })
        .ok()
        .flatten()
        .unwrap_or_else(|| Arc::clone(&hot.token))
}

/// Counters for the cache; read with [`TokenCache::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Requests answered with a token that was already cached (or being signed by another).
    pub hits: u64,
    /// Requests that caused a signature.
    pub misses: u64,
    /// Entries currently held.
    pub entries: u64,
    /// Entries pushed out because the cache was full.
    pub evictions: u64,
}

/// A bounded, single-flight cache of signed tokens in front of a [`Signer`].
pub struct TokenCache {
    tokens: Cache<TokenKey, Arc<IssuedToken>, foldhash::fast::RandomState>,
    /// The most recently served token per slot, checked before `tokens`.
    hot: Box<[ArcSwapOption<Hot>]>,
    hot_hasher: foldhash::fast::RandomState,
    min_remaining: Duration,
    signer: Arc<Signer>,
    /// The signer's clock, held here so that a hit reads it without going through the
    /// signer.
    clock: Clock,
    hits: ShardedCounter,
    misses: AtomicU64,
    /// Entries pushed out by capacity (not by expiry or invalidation).
    evictions: Arc<AtomicU64>,
    metrics: Option<Arc<crate::metrics::Metrics>>,
    /// Longest wait for a signature (queue included), in milliseconds;
    /// `limits.request_timeout`, which a reload may change while the cache is kept.
    sign_timeout_ms: AtomicU64,
    /// Refusals handled within the last [`REFUSED_TOKEN_COOL_DOWN`], by key.
    refusals: std::sync::Mutex<std::collections::HashMap<TokenKey, Refusal>>,
}

impl TokenCache {
    /// A cache holding at most `capacity` tokens, serving each until it has less than
    /// `min_remaining` life left by the signer's [`Clock`].
    pub fn new(signer: Arc<Signer>, capacity: u64, min_remaining: Duration) -> Self {
        let clock = signer.clock().clone();
        let evictions = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&evictions);
        let tokens = Cache::builder()
            .max_capacity(capacity)
            .expire_after(ReuseWindow {
                min_remaining,
                clock: clock.clone(),
            })
            .eviction_listener(move |_key, _value, cause| {
                if cause == moka::notification::RemovalCause::Size {
                    counted.fetch_add(1, Ordering::Relaxed);
                }
            })
            .build_with_hasher(foldhash::fast::RandomState::default());
        Self {
            tokens,
            hot: (0..HOT_SLOTS).map(|_| ArcSwapOption::empty()).collect(),
            hot_hasher: foldhash::fast::RandomState::default(),
            min_remaining,
            signer,
            clock,
            hits: ShardedCounter::default(),
            misses: AtomicU64::new(0),
            evictions,
            metrics: None,
            sign_timeout_ms: AtomicU64::new(30_000),
            refusals: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// Give up on a signature after `timeout` (the caller gets a 503).
    pub fn with_sign_timeout(self, timeout: Duration) -> Self {
        self.set_sign_timeout(timeout);
        self
    }

    /// Change the signing timeout of a running cache (a reload that keeps the cache).
    pub fn set_sign_timeout(&self, timeout: Duration) {
        let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        self.sign_timeout_ms.store(ms, Ordering::Relaxed);
    }

    /// How long a signature may take (queue included) before the caller gets a 503.
    pub fn sign_timeout(&self) -> Duration {
        Duration::from_millis(self.sign_timeout_ms.load(Ordering::Relaxed))
    }

    /// Report each signature's latency (queue wait included) to `metrics`.
    pub fn observed_by(mut self, metrics: Arc<crate::metrics::Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// A token for `uid` under `settings`: the cached one while it has enough life left,
    /// else a new signature. Concurrent misses on one key wait for a single signature.
    pub async fn token(
        &self,
        uid: VideoUid,
        settings: &Arc<TokenSettings>,
    ) -> Result<Arc<IssuedToken>, Arc<SignError>> {
        self.token_at(uid, settings, crate::token::signer::unix_now())
            .await
    }

    /// [`TokenCache::token`] for a request that arrived in Unix second `now` (by the system
    /// clock; a manual clock still tells its own time): a hot token's life is judged by it,
    /// without another read of the clock.
    pub async fn token_at(
        &self,
        uid: VideoUid,
        settings: &Arc<TokenSettings>,
        now: u64,
    ) -> Result<Arc<IssuedToken>, Arc<SignError>> {
        let index = self.hot_index(uid, settings);
        let slot = &self.hot[index];
        if let Some(hot) = &*slot.load()
            && hot.uid == uid
            && (Arc::ptr_eq(&hot.settings, settings) || *hot.settings == **settings)
            && self.clock.now_or(now) < hot.serve_until
        {
            self.hits.increment();
            return Ok(local_copy(index, hot));
        }
        // Boxed: a miss's future (the cache's single-flight insert, the signer) is a few
        // hundred bytes that every hit's future would otherwise carry and move.
        let token = Box::pin(self.token_unshared(uid, settings)).await?;
        // Take the slot unless another key's token is fresh there: two hot keys that share a
        // slot then do not evict each other on every request (the second is served by the
        // cache behind).
        let now = self.clock.now();
        let free = slot.load().as_ref().is_none_or(|held| {
            now >= held.serve_until || (held.uid == uid && *held.settings == **settings)
        });
        if free {
            slot.store(Some(Arc::new(Hot {
                uid,
                settings: Arc::clone(settings),
                serve_until: self.serve_until(settings, &token),
                token: Arc::clone(&token),
            })));
        }
        Ok(token)
    }

    /// A token for settings made for one viewer (bound to their address): the same cache,
    /// but not the hot slots, which one-off settings would only crowd.
    pub async fn token_unshared(
        &self,
        uid: VideoUid,
        settings: &Arc<TokenSettings>,
    ) -> Result<Arc<IssuedToken>, Arc<SignError>> {
        // A plain lookup by a borrowed key, without the entry API's per-call key allocation.
        let lookup = TokenKeyRef { uid, settings };
        if let Some(token) = self.tokens.get(&lookup).await {
            if !self.outlived_by_manual_clock(settings, &token) {
                self.hits.increment();
                return Ok(token);
            }
            self.tokens.invalidate(&lookup).await;
        }
        let key = TokenKey {
            uid,
            settings: Arc::clone(settings),
        };
        // The miss path is boxed: its future is three times the size of the lookup's, and
        // every cache hit would otherwise carry (and move) that space.
        Box::pin(self.sign_once(key)).await
    }

    fn hot_slot(&self, uid: VideoUid, settings: &TokenSettings) -> &ArcSwapOption<Hot> {
        &self.hot[self.hot_index(uid, settings)]
    }

    /// The slot for `uid` under `settings`, placed by the settings' address rather than
    /// their contents: a rule's shared settings are one allocation for the life of its
    /// policy, and hashing the contents (access rules included) cost more than the rest of
    /// the lookup. Equal settings from two allocations may take two slots; a slot's entry is
    /// still checked by contents (see [`TokenCache::token_at`]), so the index only places.
    fn hot_index(&self, uid: VideoUid, settings: &TokenSettings) -> usize {
        use std::hash::BuildHasher;
        let hash = self
            .hot_hasher
            .hash_one((uid, std::ptr::from_ref(settings).addr()));
        hash as usize % HOT_SLOTS
    }

    /// When a token stops being served: `min_remaining` before it expires, or when it
    /// expires if it was clipped to its rule's end (see [`ReuseWindow`]).
    fn serve_until(&self, settings: &TokenSettings, token: &IssuedToken) -> u64 {
        if settings.not_after == Some(token.expires_at) {
            token.expires_at
        } else {
            token
                .expires_at
                .saturating_sub(self.min_remaining.as_secs_f64().ceil() as u64)
        }
    }

    /// Whether a manual [`Clock`] has moved past the end of `token`'s reuse window. The
    /// cache's own expiry runs on the monotonic clock, which a manual clock does not move.
    /// On the system clock that expiry alone decides, as it always has, and this reads no
    /// time.
    fn outlived_by_manual_clock(&self, settings: &TokenSettings, token: &IssuedToken) -> bool {
        !self.clock.is_system() && self.clock.now() >= self.serve_until(settings, token)
    }

    /// Sign the token for `key` unless a concurrent request already is; then share it.
    async fn sign_once(&self, key: TokenKey) -> Result<Arc<IssuedToken>, Arc<SignError>> {
        let (uid, settings) = (key.uid, Arc::clone(&key.settings));
        let signer = &self.signer;
        let metrics = self.metrics.as_ref();
        let timeout = self.sign_timeout();
        let entry = self
            .tokens
            .entry(key)
            .or_try_insert_with(async move {
                let started = Instant::now();
                let signed = match tokio::time::timeout(timeout, signer.sign(uid, settings)).await {
                    Ok(signed) => signed.map(Arc::new),
                    Err(_) => Err(SignError::TimedOut(timeout)),
                };
                if let Some(metrics) = metrics {
                    metrics.signature(started.elapsed());
                }
                signed
            })
            .await?;
        // Not fresh: another request signed it while this one waited (single-flight).
        if entry.is_fresh() {
            self.misses.fetch_add(1, Ordering::Relaxed);
        } else {
            self.hits.increment();
        }
        Ok(entry.into_value())
    }

    /// Sign a token for `uid` valid exactly over `validity`, bypassing the cache (each caller
    /// of Stream's token API gets its own token), with the same timeout and metrics as a
    /// cache miss.
    pub async fn sign_uncached(
        &self,
        uid: VideoUid,
        settings: Arc<TokenSettings>,
        validity: crate::token::claims::Validity,
    ) -> Result<IssuedToken, SignError> {
        let started = Instant::now();
        let signing = self.signer.sign_with_validity(uid, settings, validity);
        let timeout = self.sign_timeout();
        let signed = match tokio::time::timeout(timeout, signing).await {
            Ok(signed) => signed,
            Err(_) => Err(SignError::TimedOut(timeout)),
        };
        if let Some(metrics) = &self.metrics {
            metrics.signature(started.elapsed());
        }
        signed
    }

    /// A replacement for `refused`, a token for `uid` under `settings` that Stream refused.
    ///
    /// The refused token is evicted only if it is still the one cached, and then `lookup`
    /// (the caller's way to the cached token: it signs on a miss) gets its replacement. Every
    /// request refused with the same token shares that one eviction and lookup
    /// (single-flight), so a token is replaced at most once however many requests saw it
    /// refused. A refusal of the replacement itself within [`REFUSED_TOKEN_COOL_DOWN`] is
    /// [`Replacement::CoolingDown`]: no eviction, no signature. `Err` is `lookup`'s.
    pub async fn replace_refused<E, F, Fut>(
        &self,
        uid: VideoUid,
        settings: &Arc<TokenSettings>,
        refused: &Arc<IssuedToken>,
        lookup: F,
    ) -> Result<Replacement, E>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Arc<IssuedToken>, E>>,
    {
        let now = self.clock.now();
        let cool_down = REFUSED_TOKEN_COOL_DOWN.as_secs();
        let replacement = {
            let mut refusals = self
                .refusals
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            refusals.retain(|_, refusal| now < refusal.at.saturating_add(cool_down));
            let key = TokenKey {
                uid,
                settings: Arc::clone(settings),
            };
            match refusals.get(&key) {
                Some(last) if same_token(&last.refused, refused) => Arc::clone(&last.replacement),
                Some(last)
                    if last.replacement.get().is_some_and(|replaced| {
                        replaced.evicted && same_token(&replaced.token, refused)
                    }) =>
                {
                    return Ok(Replacement::CoolingDown);
                }
                // None, or an older token than the last one refused: a refusal of its own.
                _ => {
                    let replacement = Arc::new(tokio::sync::OnceCell::new());
                    refusals.insert(
                        key,
                        Refusal {
                            refused: Arc::clone(refused),
                            at: now,
                            replacement: Arc::clone(&replacement),
                        },
                    );
                    replacement
                }
            }
        };
        let replaced = replacement
            .get_or_try_init(|| async {
                let evicted = self.evict_if_cached(uid, settings, refused).await;
                let token = lookup().await?;
                Ok(Replaced { token, evicted })
            })
            .await?;
        if same_token(&replaced.token, refused) {
            return Ok(Replacement::CoolingDown);
        }
        Ok(Replacement::Token(Arc::clone(&replaced.token)))
    }

    /// Drop `token` from the hot slot and the cache if it is what they hold for `uid` under
    /// `settings` (and not a newer token someone already put there). `true` if the cache
    /// held it.
    async fn evict_if_cached(
        &self,
        uid: VideoUid,
        settings: &TokenSettings,
        token: &Arc<IssuedToken>,
    ) -> bool {
        let slot = self.hot_slot(uid, settings);
        let held = slot.load();
        if let Some(hot) = &*held
            && hot.uid == uid
            && *hot.settings == *settings
            && same_token(&hot.token, token)
        {
            // Only if the slot still holds what was checked.
            slot.compare_and_swap(&held, None);
        }
        let lookup = TokenKeyRef { uid, settings };
        match self.tokens.get(&lookup).await {
            Some(cached) if same_token(&cached, token) => {
                self.tokens.invalidate(&lookup).await;
                true
            }
            _ => false,
        }
    }

    /// Hits, misses and size so far.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.sum(),
            misses: self.misses.load(Ordering::Relaxed),
            entries: self.tokens.entry_count(),
            evictions: self.evictions.load(Ordering::Relaxed),
        }
    }

    /// The signer behind this cache.
    pub fn signer(&self) -> &Arc<Signer> {
        &self.signer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::SigningKey;
    use crate::token::claims::{AccessRule, RuleAction};

    const FIXTURE_PEM: &str = include_str!("../../tests/fixtures/test-only-signing-key.pem");

    fn cache(min_remaining: Duration) -> TokenCache {
        cache_with_clock(min_remaining, Clock::System)
    }

    /// A cache whose signer stamps tokens by `clock` (no `nbf` backdate).
    fn cache_with_clock(min_remaining: Duration, clock: Clock) -> TokenCache {
        let key = SigningKey::from_material(Some("0a1b2c3d4e5f60718293a4b5c6d7e8f9"), FIXTURE_PEM)
            .unwrap();
        let signer = Arc::new(Signer::with_clock(vec![key], Duration::ZERO, 4, clock));
        TokenCache::new(signer, 1000, min_remaining)
    }

    /// An arbitrary start for manual clocks.
    const T0: u64 = 1_800_000_000;

    fn settings(ttl_secs: u64, downloadable: bool) -> Arc<TokenSettings> {
        Arc::new(TokenSettings {
            ttl: Duration::from_secs(ttl_secs),
            downloadable,
            access_rules: Arc::from(vec![]),
            not_after: None,
        })
    }

    fn uid(n: u8) -> VideoUid {
        format!("{n:032x}").parse().unwrap()
    }

    #[test]
    fn borrowed_lookup_key_hashes_like_the_stored_key() {
        use std::hash::BuildHasher;
        let hasher = foldhash::fast::RandomState::default();
        let settings = settings(60, true);
        let stored = TokenKey {
            uid: uid(3),
            settings: Arc::clone(&settings),
        };
        let borrowed = TokenKeyRef {
            uid: uid(3),
            settings: &settings,
        };
        assert_eq!(hasher.hash_one(&stored), hasher.hash_one(&borrowed));
        assert!(moka::Equivalent::equivalent(&borrowed, &stored));
    }

    #[tokio::test]
    async fn concurrent_misses_on_one_key_sign_exactly_once() {
        let cache = Arc::new(cache(Duration::from_secs(60)));
        let settings = settings(3600, false);
        let mut tasks = Vec::new();
        for _ in 0..200 {
            let cache = Arc::clone(&cache);
            let settings = Arc::clone(&settings);
            tasks.push(tokio::spawn(async move {
                cache.token(uid(1), &settings).await.unwrap()
            }));
        }
        let mut tokens = Vec::new();
        for task in tasks {
            tokens.push(task.await.unwrap());
        }
        assert_eq!(cache.signer().signatures(), 1);
        assert!(tokens.iter().all(|t| t.token == tokens[0].token));
        assert_eq!(cache.stats().misses, 1);
        assert_eq!(cache.stats().hits, 199);
    }

    #[tokio::test]
    async fn different_settings_or_videos_never_share_a_token() {
        let cache = cache(Duration::from_secs(60));
        let plain = cache.token(uid(1), &settings(3600, false)).await.unwrap();
        let download = cache.token(uid(1), &settings(3600, true)).await.unwrap();
        let longer = cache.token(uid(1), &settings(7200, false)).await.unwrap();
        let other_video = cache.token(uid(2), &settings(3600, false)).await.unwrap();
        let ruled = Arc::new(TokenSettings {
            access_rules: Arc::from(vec![AccessRule::Any {
                action: RuleAction::Block,
            }]),
            ..(*settings(3600, false)).clone()
        });
        let clipped = Arc::new(TokenSettings {
            not_after: Some(crate::token::signer::unix_now() + 600),
            ..(*settings(3600, false)).clone()
        });
        let with_end = cache.token(uid(1), &clipped).await.unwrap();
        let with_rules = cache.token(uid(1), &ruled).await.unwrap();
        let all = [
            &plain,
            &download,
            &longer,
            &other_video,
            &with_rules,
            &with_end,
        ];
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(a.token, b.token);
            }
        }
        assert_eq!(cache.signer().signatures(), 6);
        // An equal-but-distinct settings value still hits.
        let again = cache.token(uid(1), &settings(3600, false)).await.unwrap();
        assert_eq!(again.token, plain.token);
    }

    #[tokio::test]
    async fn a_token_clipped_to_its_rules_end_is_reused_past_min_remaining() {
        // min_remaining (1 h) exceeds the token's whole clipped life (10 min): without the
        // exception every request near a rule's end would sign again.
        let clock = Clock::manual(T0);
        let cache = cache_with_clock(Duration::from_secs(3600), clock.clone());
        let clipped = Arc::new(TokenSettings {
            not_after: Some(T0 + 600),
            ..(*settings(7200, false)).clone()
        });
        let first = cache.token(uid(9), &clipped).await.unwrap();
        assert_eq!(first.expires_at, T0 + 600);
        let second = cache.token(uid(9), &clipped).await.unwrap();
        // Its last second: still the same token, from the hot slot and from the cache.
        clock.advance(Duration::from_secs(599));
        let last = cache.token(uid(9), &clipped).await.unwrap();
        let unshared = cache.token_unshared(uid(9), &clipped).await.unwrap();
        for token in [&second, &last, &unshared] {
            assert_eq!(token.token, first.token);
        }
        assert_eq!(cache.signer().signatures(), 1);
    }

    /// `replace_refused` as proxy mode calls it: the lookup is the hot-slot path.
    async fn replace(
        cache: &TokenCache,
        n: u8,
        settings: &Arc<TokenSettings>,
        refused: &Arc<IssuedToken>,
    ) -> Replacement {
        cache
            .replace_refused(uid(n), settings, refused, || cache.token(uid(n), settings))
            .await
            .unwrap()
    }

    fn replaced(replacement: Replacement) -> Arc<IssuedToken> {
        match replacement {
            Replacement::Token(token) => token,
            Replacement::CoolingDown => panic!("expected a replacement"),
        }
    }

    #[tokio::test]
    async fn a_refused_token_is_replaced_once_and_the_hot_slot_follows() {
        let cache = cache(Duration::from_secs(60));
        let settings = settings(3600, false);
        let first = cache.token(uid(4), &settings).await.unwrap();
        cache.token(uid(4), &settings).await.unwrap();
        assert_eq!(cache.signer().signatures(), 1);
        let second = replaced(replace(&cache, 4, &settings, &first).await);
        assert!(!same_token(&second, &first));
        assert_eq!(cache.signer().signatures(), 2, "signed again once");
        // Every later request, from the hot slot or the cache, gets the replacement.
        let hot = cache.token(uid(4), &settings).await.unwrap();
        let behind = cache.token_unshared(uid(4), &settings).await.unwrap();
        assert!(same_token(&hot, &second) && same_token(&behind, &second));
        // A late request refused with the first token gets the same replacement.
        let late = replaced(replace(&cache, 4, &settings, &first).await);
        assert!(same_token(&late, &second));
        assert_eq!(cache.signer().signatures(), 2);
    }

    #[tokio::test]
    async fn concurrent_refusals_of_one_token_sign_one_replacement() {
        let cache = Arc::new(cache(Duration::from_secs(60)));
        let settings = settings(3600, false);
        let refused = cache.token(uid(6), &settings).await.unwrap();
        let mut tasks = Vec::new();
        for _ in 0..100 {
            let (cache, settings, refused) = (
                Arc::clone(&cache),
                Arc::clone(&settings),
                Arc::clone(&refused),
            );
            tasks.push(tokio::spawn(async move {
                replaced(replace(&cache, 6, &settings, &refused).await)
            }));
        }
        let mut replacements = Vec::new();
        for task in tasks {
            replacements.push(task.await.unwrap());
        }
        assert_eq!(cache.signer().signatures(), 2, "one token, one replacement");
        assert!(replacements.iter().all(|t| same_token(t, &replacements[0])));
        assert!(!same_token(&replacements[0], &refused));
    }

    #[tokio::test]
    async fn a_refused_replacement_signs_nothing_until_the_cool_down_has_passed() {
        let clock = Clock::manual(T0);
        let cache = cache_with_clock(Duration::from_secs(60), clock.clone());
        let settings = settings(3600, false);
        let first = cache.token(uid(7), &settings).await.unwrap();
        let second = replaced(replace(&cache, 7, &settings, &first).await);
        for _ in 0..20 {
            let again = replace(&cache, 7, &settings, &second).await;
            assert!(matches!(again, Replacement::CoolingDown), "{again:?}");
        }
        assert_eq!(cache.signer().signatures(), 2);
        let still = cache.token(uid(7), &settings).await.unwrap();
        assert!(same_token(&still, &second), "the replacement stays cached");

        clock.advance(REFUSED_TOKEN_COOL_DOWN - Duration::from_secs(1));
        assert!(matches!(
            replace(&cache, 7, &settings, &second).await,
            Replacement::CoolingDown
        ));
        clock.advance(Duration::from_secs(1));
        let third = replaced(replace(&cache, 7, &settings, &second).await);
        assert!(!same_token(&third, &second));
        assert_eq!(cache.signer().signatures(), 3);
    }

    #[tokio::test]
    async fn a_refusal_of_a_token_no_longer_cached_evicts_nothing() {
        let cache = cache(Duration::from_secs(60));
        let settings = settings(3600, false);
        let current = cache.token(uid(8), &settings).await.unwrap();
        let stale = Arc::new(IssuedToken::new(
            "eyJ.stale.token".into(),
            current.expires_at,
        ));
        let replacement = replaced(replace(&cache, 8, &settings, &stale).await);
        assert!(
            same_token(&replacement, &current),
            "the cached token is the answer"
        );
        assert_eq!(cache.signer().signatures(), 1);
        // That was no replacement: a refusal of the current token is its own, and replaced.
        let other = cache.token(uid(9), &settings).await.unwrap();
        let renewed = replaced(replace(&cache, 8, &settings, &current).await);
        assert!(!same_token(&renewed, &current));
        assert_eq!(cache.signer().signatures(), 3);
        // Other keys are not touched by a refusal.
        let still = cache.token(uid(9), &settings).await.unwrap();
        assert!(same_token(&other, &still));
    }

    #[tokio::test]
    async fn a_hot_hit_hands_out_this_threads_copy_and_a_token_is_first_handed_out_once() {
        let cache = Arc::new(cache(Duration::from_secs(60)));
        let settings = settings(3600, false);
        // The miss hands out the shared token; the first hot hit on a thread makes that
        // thread's copy, and later hits there get the same copy.
        let signed = cache.token(uid(3), &settings).await.unwrap();
        assert!(
            signed.first_hand_out(),
            "the signed token's hand-out is its first"
        );
        let copy = cache.token(uid(3), &settings).await.unwrap();
        let again = cache.token(uid(3), &settings).await.unwrap();
        assert!(
            !Arc::ptr_eq(&copy, &signed),
            "a hit gets this thread's copy"
        );
        assert!(
            Arc::ptr_eq(&again, &copy),
            "the copy is kept for the next hit"
        );
        assert!(same_token(&copy, &signed) && copy.expires_at == signed.expires_at);
        assert_eq!(copy.key_id, signed.key_id);
        assert_eq!(copy.audit_id().id, signed.audit_id().id);
        assert!(
            !copy.first_hand_out(),
            "a hit on a handed-out token is a reuse"
        );
        // Another thread makes a copy of its own.
        let (other_cache, other_settings) = (Arc::clone(&cache), Arc::clone(&settings));
        let other = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap()
                .block_on(other_cache.token(uid(3), &other_settings))
                .unwrap()
        })
        .join()
        .unwrap();
        assert!(!Arc::ptr_eq(&other, &copy) && same_token(&other, &copy));
        assert!(!other.first_hand_out());
        assert_eq!(cache.signer().signatures(), 1);
        assert_eq!(cache.stats().hits, 3);
        // A token put in a slot but never handed out: the first copy's hand-out is its first.
        let unseen = cache.token(uid(4), &settings).await.unwrap();
        let first_copy = cache.token(uid(4), &settings).await.unwrap();
        assert!(first_copy.first_hand_out() && !unseen.first_hand_out());
        assert!(!format!("{first_copy:?}").contains(first_copy.token.expose().as_str()));
    }

    #[tokio::test]
    async fn equal_settings_in_another_arc_share_the_token() {
        // Equal settings from elsewhere (a reloaded policy) find the same token.
        let cache = cache(Duration::from_secs(60));
        let first = cache.token(uid(5), &settings(3600, true)).await.unwrap();
        let second = cache.token(uid(5), &settings(3600, true)).await.unwrap();
        assert!(same_token(&first, &second));
        assert_eq!(cache.signer().signatures(), 1);
    }

    #[tokio::test]
    async fn many_keys_each_get_their_own_token_through_the_hot_slots() {
        // More keys than slots, so slots are shared: every answer must still be for its key.
        let cache = cache(Duration::from_secs(60));
        let grants: Vec<Arc<TokenSettings>> = (0..3).map(|i| settings(600 + i, false)).collect();
        for round in 0..2 {
            for n in 0..120u8 {
                for grant in &grants {
                    let token = cache.token(uid(n), grant).await.unwrap();
                    let claims = token.token.expose().split('.').nth(1).unwrap().to_string();
                    let claims: serde_json::Value = serde_json::from_slice(
                        &base64::Engine::decode(
                            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                            claims,
                        )
                        .unwrap(),
                    )
                    .unwrap();
                    assert_eq!(claims["sub"], uid(n).as_str(), "round {round}");
                    let ttl = claims["exp"].as_u64().unwrap() - claims["nbf"].as_u64().unwrap();
                    assert_eq!(ttl, grant.ttl.as_secs(), "round {round}");
                }
            }
        }
        assert_eq!(
            cache.signer().signatures(),
            360,
            "the second round was all hits"
        );
        assert_eq!(cache.stats().hits, 360);
    }

    #[tokio::test]
    async fn token_is_reused_until_min_remaining_then_resigned() {
        // ttl 3 s, min_remaining 1 s: served while it has more than 1 s left, for 2 s.
        let clock = Clock::manual(T0);
        let cache = cache_with_clock(Duration::from_secs(1), clock.clone());
        let settings = settings(3, false);
        let first = cache.token(uid(7), &settings).await.unwrap();
        assert_eq!(first.expires_at, T0 + 3);
        let second = cache.token(uid(7), &settings).await.unwrap();
        clock.advance(Duration::from_secs(1));
        let third = cache.token(uid(7), &settings).await.unwrap();
        assert_eq!(second.token, first.token);
        assert_eq!(third.token, first.token, "2 s left: still served");
        assert_eq!(cache.signer().signatures(), 1);

        clock.advance(Duration::from_secs(1));
        let fourth = cache.token(uid(7), &settings).await.unwrap();
        assert_ne!(fourth.token, first.token, "1 s left: signed again");
        assert_eq!(fourth.expires_at, T0 + 2 + 3, "stamped by the same clock");
        let fifth = cache.token(uid(7), &settings).await.unwrap();
        assert_eq!(fifth.token, fourth.token);
        assert_eq!(cache.signer().signatures(), 2);
        assert_eq!((cache.stats().hits, cache.stats().misses), (3, 2));
    }

    #[tokio::test]
    async fn an_unshared_token_is_resigned_once_the_clock_passes_its_window() {
        // Without the hot slots: the cache behind them judges by the same clock.
        let clock = Clock::manual(T0);
        let cache = cache_with_clock(Duration::from_secs(60), clock.clone());
        let settings = settings(600, false);
        let first = cache.token_unshared(uid(8), &settings).await.unwrap();
        clock.advance(Duration::from_secs(539));
        let reused = cache.token_unshared(uid(8), &settings).await.unwrap();
        assert_eq!(reused.token, first.token, "61 s left: still served");
        clock.advance(Duration::from_secs(1));
        let renewed = cache.token_unshared(uid(8), &settings).await.unwrap();
        assert_ne!(renewed.token, first.token, "60 s left: signed again");
        assert_eq!(renewed.expires_at, T0 + 540 + 600);
        let again = cache.token_unshared(uid(8), &settings).await.unwrap();
        assert_eq!(again.token, renewed.token);
        assert_eq!(cache.signer().signatures(), 2);
    }
}
