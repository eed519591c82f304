//! Prometheus metrics: what the gateway counts, and their text exposition for `/metrics`.
//!
//! One [`Metrics`] (from [`Metrics::new`]) is shared by the whole process. Recording calls are
//! made on the request path, so none of them takes a lock, hashes a label set or allocates:
//!
//! - every label set whose values are known up front (routes, a fixed list of status codes
//!   plus `other`, decision outcomes, upstream error kinds, reload results) is a fixed slot in
//!   an array, chosen with `as usize`;
//! - policy rules are registered by name once per configuration ([`Metrics::set_rules`]) and
//!   recorded by their index in the policy;
//! - each counter, gauge and histogram bucket is split into per-thread shards, each shard on
//!   its own cache lines, so two cores recording at once do not bounce one line between them;
//!   a scrape sums the shards;
//! - histograms are atomic bucket counters plus a sum in nanoseconds (prometheus-client's
//!   `Histogram` takes a write lock on every `observe`), exported through a custom
//!   [`Collector`].
//!
//! A recording call costs a thread-local read and one to three uncontended atomic additions
//! (see the `metrics_request` group in `benches/micro.rs`).
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `streamgate_requests_total` | counter | `route`, `status` |
//! | `streamgate_request_duration_seconds` | histogram, 50 µs … 10 s | `route` |
//! | `streamgate_decisions_total` | counter | `outcome`, `rule` |
//! | `streamgate_token_cache_hits_total`, `_misses_total`, `_evictions_total` | counter | |
//! | `streamgate_token_cache_entries` | gauge | |
//! | `streamgate_signatures_total` | counter | |
//! | `streamgate_signing_duration_seconds` | histogram, 100 µs … 1 s | |
//! | `streamgate_upstream_duration_seconds` | histogram, 50 µs … 10 s | |
//! | `streamgate_upstream_errors_total` | counter | `kind` |
//! | `streamgate_config_reloads_total` | counter | `result` |
//! | `streamgate_config_generation` | gauge | |
//! | `streamgate_open_connections` | gauge | |
//! | `streamgate_connections_refused_total` | counter | |
//! | `streamgate_rate_limited_total` | counter | |
//! | `streamgate_log_lines_dropped_total` | counter | |
//! | `streamgate_audit_events_dropped_total` | counter | |
//! | `streamgate_connections_closed_total` | counter | `reason` (`header_timeout`, `idle_timeout`, `evicted`) |
//! | `streamgate_rate_limit_keys` | gauge | |
//! | `streamgate_draining` | gauge | |
//! | `streamgate_failed_sign_ins_total` | counter | |
//! | `streamgate_sign_ins_throttled_total` | counter | `reason` (`address`, `user`, `queued`) |
//! | `streamgate_unprotected_videos` | gauge | |
//! | `streamgate_stream_audit_failures_total` | counter | |
//!
//! Series labelled by request (`route`/`status`, and `rule` other than `""`) appear once they
//! are first non-zero, as a prometheus-client `Family` would add them; the small fixed label
//! sets (outcomes with `rule=""`, upstream error kinds, reload results) are always exported,
//! starting at 0. The token cache metrics appear once [`Metrics::set_cache_source`] is called.

use std::fmt;
use std::num::NonZero;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::FastMap;

/// The `Content-Type` of [`Metrics::encode`]'s output (OpenMetrics text, `# EOF` terminated).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Counters are only summed, never used to order other memory accesses.
const RELAXED: Ordering = Ordering::Relaxed;

/// What a request was for; the `route` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Route {
    /// `/watch/<video>` and `/watch/<video>/<resource>`: a redirect to a signed URL.
    Watch,
    /// Proxy mode: a file below the player fetched from Stream and streamed back.
    WatchFile,
    /// `POST /api/getSignedURL`.
    Api,
    /// Stream's token API, `POST /accounts/<id>/stream/<video>/token`.
    TokenApi,
    /// The demo page and its files.
    Page,
    /// `/healthz`.
    Health,
    /// The readiness probe.
    Ready,
    /// `/metrics` itself.
    Metrics,
    /// Anything else (unknown routes, 404s, 405s before routing).
    Other,
}

impl Route {
    /// Every route, in slot order.
    pub const ALL: [Route; 9] = [
        Route::Watch,
        Route::WatchFile,
        Route::Api,
        Route::TokenApi,
        Route::Page,
        Route::Health,
        Route::Ready,
        Route::Metrics,
        Route::Other,
    ];

    /// The `route` label value.
    pub const fn label(self) -> &'static str {
        match self {
            Route::Watch => "watch",
            Route::WatchFile => "watch_file",
            Route::Api => "api",
            Route::TokenApi => "token_api",
            Route::Page => "page",
            Route::Health => "health",
            Route::Ready => "ready",
            Route::Metrics => "metrics",
            Route::Other => "other",
        }
    }
}

const ROUTES: usize = Route::ALL.len();

/// What the access decision for a request was; the `outcome` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// A rule allowed the request.
    Allow,
    /// A `deny` rule refused it.
    DenyRule,
    /// No rule covered the request, so the default (deny) applied.
    DenyDefault,
    /// The only rule that would allow is outside its time window.
    OutsideWindow,
    /// No credential where one is needed, or an invalid one.
    Unauthenticated,
}

impl Outcome {
    /// Every outcome, in slot order.
    pub const ALL: [Outcome; 5] = [
        Outcome::Allow,
        Outcome::DenyRule,
        Outcome::DenyDefault,
        Outcome::OutsideWindow,
        Outcome::Unauthenticated,
    ];

    /// The `outcome` label value.
    pub const fn label(self) -> &'static str {
        match self {
            Outcome::Allow => "allow",
            Outcome::DenyRule => "deny_rule",
            Outcome::DenyDefault => "deny_default",
            Outcome::OutsideWindow => "outside_window",
            Outcome::Unauthenticated => "unauthenticated",
        }
    }

    /// Where a rule's counters keep this outcome; `None` for outcomes no rule decides.
    const fn rule_slot(self) -> Option<usize> {
        match self {
            Outcome::Allow => Some(0),
            Outcome::DenyRule => Some(1),
            Outcome::OutsideWindow => Some(2),
            Outcome::DenyDefault | Outcome::Unauthenticated => None,
        }
    }
}

const OUTCOMES: usize = Outcome::ALL.len();
/// The outcomes a rule decides, in [`Outcome::rule_slot`] order.
const RULE_OUTCOMES: [Outcome; 3] = [Outcome::Allow, Outcome::DenyRule, Outcome::OutsideWindow];

/// Why a proxied fetch from Stream failed; the `kind` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UpstreamErrorKind {
    /// The origin could not be reached (DNS, TCP, TLS).
    Connect,
    /// No response head in time, or the body stalled.
    Timeout,
    /// The origin answered 5xx.
    Status5xx,
    /// The origin refused the signed token.
    Refused,
    /// The connection failed part way through the body.
    Body,
}

impl UpstreamErrorKind {
    /// Every kind, in slot order.
    pub const ALL: [UpstreamErrorKind; 5] = [
        UpstreamErrorKind::Connect,
        UpstreamErrorKind::Timeout,
        UpstreamErrorKind::Status5xx,
        UpstreamErrorKind::Refused,
        UpstreamErrorKind::Body,
    ];

    /// The `kind` label value.
    pub const fn label(self) -> &'static str {
        match self {
            UpstreamErrorKind::Connect => "connect",
            UpstreamErrorKind::Timeout => "timeout",
            UpstreamErrorKind::Status5xx => "status_5xx",
            UpstreamErrorKind::Refused => "refused",
            UpstreamErrorKind::Body => "body",
        }
    }
}

const UPSTREAM_KINDS: usize = UpstreamErrorKind::ALL.len();

/// Why a sign-in was refused before its credential was checked; the `reason` label of
/// `streamgate_sign_ins_throttled_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ThrottleReason {
    /// The client address is in its backoff window after failed sign-ins.
    Address,
    /// The Basic user name is in its backoff window after failed sign-ins.
    User,
    /// The client address already has as many password checks running and waiting as it may.
    Queued,
}

impl ThrottleReason {
    /// Every reason, in slot order.
    pub const ALL: [ThrottleReason; 3] = [
        ThrottleReason::Address,
        ThrottleReason::User,
        ThrottleReason::Queued,
    ];

    /// The `reason` label value.
    pub const fn label(self) -> &'static str {
        match self {
            ThrottleReason::Address => "address",
            ThrottleReason::User => "user",
            ThrottleReason::Queued => "queued",
        }
    }
}

/// Why the server closed a client connection; the `reason` label of
/// `streamgate_connections_closed_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConnectionClose {
    /// No complete request head within `limits.header_read_timeout`.
    HeaderTimeout,
    /// Idle (nothing in flight) for `limits.idle_timeout`.
    IdleTimeout,
    /// Idle, and closed to admit a new connection at `limits.max_connections`.
    Evicted,
}

impl ConnectionClose {
    /// Every reason, in slot order.
    pub const ALL: [ConnectionClose; 3] = [
        ConnectionClose::HeaderTimeout,
        ConnectionClose::IdleTimeout,
        ConnectionClose::Evicted,
    ];

    /// The `reason` label value.
    pub const fn label(self) -> &'static str {
        match self {
            ConnectionClose::HeaderTimeout => "header_timeout",
            ConnectionClose::IdleTimeout => "idle_timeout",
            ConnectionClose::Evicted => "evicted",
        }
    }
}

/// The token cache's figures, read at scrape time from [`Metrics::set_cache_source`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheCounts {
    /// Lookups answered from the cache, since start.
    pub hits: u64,
    /// Lookups that had to sign, since start.
    pub misses: u64,
    /// Tokens dropped for size or age, since start.
    pub evictions: u64,
    /// Tokens cached now.
    pub entries: u64,
}

/// The callback [`Metrics::set_cache_source`] takes.
pub type CacheSource = dyn Fn() -> CacheCounts + Send + Sync;

/// Status codes with their own `status` label value; any other code is counted as `other`.
/// These are the codes the gateway answers with, plus 429 for rate limiting.
const STATUS_CODES: [u16; 23] = [
    200, 204, 206, 301, 302, 304, 308, 400, 401, 403, 404, 405, 412, 413, 414, 415, 416, 429, 500,
    501, 502, 503, 504,
];
const STATUS_LABELS: [&str; STATUSES] = [
    "200", "204", "206", "301", "302", "304", "308", "400", "401", "403", "404", "405", "412",
    "413", "414", "415", "416", "429", "500", "501", "502", "503", "504", "other",
];
const STATUS_OTHER: usize = STATUS_CODES.len();
const STATUSES: usize = STATUS_CODES.len() + 1;
/// Status code → slot, for codes below 600; one load instead of a search.
static STATUS_SLOT: [u8; 600] = status_slots();

const fn status_slots() -> [u8; 600] {
    let mut slots = [STATUS_OTHER as u8; 600];
    let mut i = 0;
    while i < STATUS_CODES.len() {
        slots[STATUS_CODES[i] as usize] = i as u8;
        i += 1;
    }
    slots
}

fn status_slot(status: u16) -> usize {
    STATUS_SLOT
        .get(usize::from(status))
        .map_or(STATUS_OTHER, |&slot| usize::from(slot))
}

/// Upper bounds (inclusive) of the request and upstream latency buckets, in nanoseconds:
/// 50 µs … 10 s.
const REQUEST_BOUNDS_NS: [u64; 17] = [
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];
/// Upper bounds (inclusive) of the signing latency buckets, in nanoseconds: 100 µs … 1 s.
const SIGNING_BOUNDS_NS: [u64; 13] = [
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
];
/// Bucket counts include the `+Inf` bucket.
const REQUEST_BUCKETS: usize = REQUEST_BOUNDS_NS.len() + 1;
const SIGNING_BUCKETS: usize = SIGNING_BOUNDS_NS.len() + 1;

/// A duration in nanoseconds, saturating (at 584 years).
fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// One shard of a lock-free histogram: a count per bucket (not cumulative) and the sum of the
/// observations in nanoseconds. The count is the sum of the buckets, so it never disagrees
/// with them. The sum wraps after 584 years of summed observations in one shard.
struct Buckets<const N: usize> {
    counts: [AtomicU64; N],
    sum_ns: AtomicU64,
}

impl<const N: usize> Buckets<N> {
    const fn new() -> Self {
        Self {
            counts: [const { AtomicU64::new(0) }; N],
            sum_ns: AtomicU64::new(0),
        }
    }

    /// `bounds` has `N - 1` entries; a value above the last goes to `+Inf`.
    fn observe(&self, bounds: &[u64], ns: u64) {
        let bucket = bounds.partition_point(|&bound| bound < ns);
        self.counts[bucket].fetch_add(1, RELAXED);
        self.sum_ns.fetch_add(ns, RELAXED);
    }
}

/// What one thread (or a few, when there are more threads than shards) records into. Aligned
/// to 128 bytes, the unit adjacent-line prefetchers pull in, so shards share no cache line.
#[repr(align(128))]
struct Shard {
    requests: [[AtomicU64; STATUSES]; ROUTES],
    request_latency: [Buckets<REQUEST_BUCKETS>; ROUTES],
    signing: Buckets<SIGNING_BUCKETS>,
    upstream: Buckets<REQUEST_BUCKETS>,
    upstream_errors: [AtomicU64; UPSTREAM_KINDS],
    /// Decisions counted under `rule=""`.
    decisions: [AtomicU64; OUTCOMES],
    /// Opened minus closed; the sum over shards is the gauge.
    open_connections: AtomicI64,
    connections_refused: AtomicU64,
    rate_limited: AtomicU64,
}

impl Shard {
    const fn new() -> Self {
        Self {
            requests: [const { [const { AtomicU64::new(0) }; STATUSES] }; ROUTES],
            request_latency: [const { Buckets::new() }; ROUTES],
            signing: Buckets::new(),
            upstream: Buckets::new(),
            upstream_errors: [const { AtomicU64::new(0) }; UPSTREAM_KINDS],
            decisions: [const { AtomicU64::new(0) }; OUTCOMES],
            open_connections: AtomicI64::new(0),
            connections_refused: AtomicU64::new(0),
            rate_limited: AtomicU64::new(0),
        }
    }
}

/// One rule's decision counters for one shard, on a cache line of its own.
#[repr(align(64))]
struct RuleShard([AtomicU64; RULE_OUTCOMES.len()]);

/// One rule's decision counters. Shared by successive rule tables while the rule keeps its
/// name, so a reload neither resets nor loses its counts.
struct RuleCounters {
    shards: Box<[RuleShard]>,
}

impl RuleCounters {
    fn new(shards: usize) -> Arc<Self> {
        Arc::new(Self {
            shards: (0..shards)
                .map(|_| RuleShard([const { AtomicU64::new(0) }; RULE_OUTCOMES.len()]))
                .collect(),
        })
    }

    fn sums(&self) -> [u64; RULE_OUTCOMES.len()] {
        let mut sums = [0; RULE_OUTCOMES.len()];
        for shard in &self.shards {
            for (sum, counter) in sums.iter_mut().zip(&shard.0) {
                *sum += counter.load(RELAXED);
            }
        }
        sums
    }
}

/// The rules of one configuration.
#[derive(Default)]
struct RuleTable {
    /// By rule index; `None` for an empty name (counted under `rule=""`).
    by_index: Box<[Option<Arc<RuleCounters>>]>,
    /// Each distinct name once, in first-seen order: the name, its escaped label value, and
    /// its counters (shared by every index with that name).
    named: Vec<(Box<str>, Box<str>, Arc<RuleCounters>)>,
}

/// Rarely written state, apart from the per-request lines.
#[repr(align(128))]
#[derive(Default)]
struct Cold {
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
    config_generation: AtomicU64,
    connections_closed: [AtomicU64; ConnectionClose::ALL.len()],
    rate_limit_keys: AtomicU64,
    draining: AtomicU64,
    failed_sign_ins: AtomicU64,
    sign_ins_throttled: [AtomicU64; ThrottleReason::ALL.len()],
    unprotected_videos: AtomicU64,
    stream_audit_failures: AtomicU64,
    /// The last periodic audit of the Cloudflare account, for `/readyz`.
    stream_audit: Mutex<Option<StreamAuditStatus>>,
}

/// How the last periodic audit of the Cloudflare account went (`cloudflare.audit_interval`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamAuditStatus {
    /// When it ran (unix seconds).
    pub at: u64,
    /// Whether the API answered; `false` keeps the figures of the last audit that ran.
    pub ok: bool,
    /// Catalogue videos with `requireSignedURLs: false` at the last audit that ran.
    pub unprotected_videos: u64,
    /// Other error findings (missing videos or keys, `allowedOrigins`) at the last audit.
    pub errors: u64,
    /// Whether any audit has completed.
    pub completed: bool,
}

/// The gateway's metrics. See the [module documentation](self) for the names and design.
///
/// All recording methods take `&self`, are lock-free and never allocate; [`Metrics::encode`]
/// is the scrape.
// Aligned so that the `Arc`'s reference counts (before the data) are on another cache line
// than the fields every recording call reads: cloning the `Arc` per connection then does not
// slow the request path.
#[repr(align(128))]
pub struct Metrics {
    shards: Box<[Shard]>,
    /// `shards.len() - 1`; the length is a power of two.
    shard_mask: usize,
    rules: ArcSwap<RuleTable>,
    /// Serialises [`Metrics::set_rules`], so concurrent reloads cannot drop each other's
    /// counters. Never taken on the request path.
    rules_update: Mutex<()>,
    cache_source: RwLock<Option<Arc<CacheSource>>>,
    cold: Cold,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics")
            .field("shards", &self.shards.len())
            .field("rules", &self.rules.load().named.len())
            .finish_non_exhaustive()
    }
}

/// The calling thread's shard number, before masking: threads are numbered in the order they
/// first record, so the first `shards` threads (the runtime's workers) get a shard each.
fn thread_slot() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SLOT: usize = NEXT.fetch_add(1, RELAXED);
    }
    SLOT.with(|slot| *slot)
}

impl Metrics {
    /// Metrics with every counter at zero, no rules and no cache source.
    pub fn new() -> Arc<Self> {
        let cpus = std::thread::available_parallelism().map_or(4, NonZero::get);
        Self::with_shards((cpus * 4).next_power_of_two().clamp(8, 64))
    }

    fn with_shards(shards: usize) -> Arc<Self> {
        debug_assert!(shards.is_power_of_two());
        Arc::new(Self {
            shards: (0..shards).map(|_| Shard::new()).collect(),
            shard_mask: shards - 1,
            rules: ArcSwap::from_pointee(RuleTable::default()),
            rules_update: Mutex::new(()),
            cache_source: RwLock::new(None),
            cold: Cold::default(),
        })
    }

    fn shard(&self) -> &Shard {
        &self.shards[thread_slot() & self.shard_mask]
    }

    /// A request answered: `streamgate_requests_total{route,status}` (a status outside the
    /// fixed list counts as `status="other"`) and `streamgate_request_duration_seconds{route}`.
    pub fn request(&self, route: Route, status: u16, latency: Duration) {
        let shard = self.shard();
        shard.requests[route as usize][status_slot(status)].fetch_add(1, RELAXED);
        shard.request_latency[route as usize].observe(&REQUEST_BOUNDS_NS, nanos(latency));
    }

    /// An access decision: `streamgate_decisions_total{outcome,rule}`.
    ///
    /// `rule` is the deciding rule's index in the policy whose names were last given to
    /// [`Metrics::set_rules`]. `None`, an index out of range, and the outcomes no rule decides
    /// ([`Outcome::DenyDefault`], [`Outcome::Unauthenticated`]) count under `rule=""`.
    pub fn decision(&self, outcome: Outcome, rule: Option<usize>) {
        let slot = thread_slot() & self.shard_mask;
        if let (Some(outcome_slot), Some(index)) = (outcome.rule_slot(), rule) {
            let table = self.rules.load();
            if let Some(Some(counters)) = table.by_index.get(index) {
                counters.shards[slot].0[outcome_slot].fetch_add(1, RELAXED);
                return;
            }
        }
        self.shards[slot].decisions[outcome as usize].fetch_add(1, RELAXED);
    }

    /// Registers the policy's rule names, by index, for [`Metrics::decision`]; a reload calls
    /// it again with the new policy's names, replacing the old ones.
    ///
    /// A rule keeps its counts across reloads as long as it keeps its name, whatever its new
    /// index; the series of rules no longer named disappear. Names repeated within one list
    /// share a series, and an empty name counts under `rule=""`. Not for the request path (it
    /// allocates, and serialises with other calls).
    pub fn set_rules<S: AsRef<str>>(&self, names: impl IntoIterator<Item = S>) {
        let _serial = self
            .rules_update
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let old = self.rules.load_full();
        let old_by_name: FastMap<&str, &Arc<RuleCounters>> = old
            .named
            .iter()
            .map(|(name, _, counters)| (&**name, counters))
            .collect();
        let mut table = RuleTable::default();
        let mut by_index = Vec::new();
        let mut new_by_name: FastMap<Box<str>, Arc<RuleCounters>> = FastMap::default();
        for name in names {
            let name = name.as_ref();
            if name.is_empty() {
                by_index.push(None);
                continue;
            }
            let counters = match new_by_name.get(name) {
                Some(counters) => Arc::clone(counters),
                None => {
                    let counters = old_by_name.get(name).map_or_else(
                        || RuleCounters::new(self.shards.len()),
                        |&counters| Arc::clone(counters),
                    );
                    new_by_name.insert(name.into(), Arc::clone(&counters));
                    table.named.push((
                        name.into(),
                        escape_label(name).into(),
                        Arc::clone(&counters),
                    ));
                    counters
                }
            };
            by_index.push(Some(counters));
        }
        table.by_index = by_index.into_boxed_slice();
        self.rules.store(Arc::new(table));
    }

    /// Where the token cache figures come from; called on every scrape (not under any lock
    /// of ours, so it may itself use `Metrics`). Replaces any earlier source.
    pub fn set_cache_source(&self, source: Box<CacheSource>) {
        *self
            .cache_source
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(Arc::from(source));
    }

    /// A token signed: `streamgate_signatures_total` and
    /// `streamgate_signing_duration_seconds`.
    pub fn signature(&self, latency: Duration) {
        self.shard()
            .signing
            .observe(&SIGNING_BOUNDS_NS, nanos(latency));
    }

    /// A proxied fetch got its response head from Stream after `latency_to_head`:
    /// `streamgate_upstream_duration_seconds`.
    pub fn upstream(&self, latency_to_head: Duration) {
        self.shard()
            .upstream
            .observe(&REQUEST_BOUNDS_NS, nanos(latency_to_head));
    }

    /// A proxied fetch failed: `streamgate_upstream_errors_total{kind}`.
    pub fn upstream_error(&self, kind: UpstreamErrorKind) {
        self.shard().upstream_errors[kind as usize].fetch_add(1, RELAXED);
    }

    /// A configuration reload was attempted:
    /// `streamgate_config_reloads_total{result="ok"|"failed"}`.
    pub fn reload(&self, ok: bool) {
        let counter = if ok {
            &self.cold.reloads_ok
        } else {
            &self.cold.reloads_failed
        };
        counter.fetch_add(1, RELAXED);
    }

    /// The generation of the configuration in force: `streamgate_config_generation`
    /// (exported capped at `i64::MAX`).
    pub fn set_config_generation(&self, generation: u64) {
        self.cold.config_generation.store(generation, RELAXED);
    }

    /// A connection accepted: `streamgate_open_connections` goes up by one. Pair each call
    /// with one [`Metrics::connection_closed`], from any thread.
    pub fn connection_opened(&self) {
        self.shard().open_connections.fetch_add(1, RELAXED);
    }

    /// A connection accepted by [`Metrics::connection_opened`] ended.
    pub fn connection_closed(&self) {
        self.shard().open_connections.fetch_sub(1, RELAXED);
    }

    /// A connection turned away over the connection cap:
    /// `streamgate_connections_refused_total`.
    pub fn connection_refused(&self) {
        self.shard().connections_refused.fetch_add(1, RELAXED);
    }

    /// The server closed a client connection: `streamgate_connections_closed_total{reason}`.
    pub fn connection_closed_by_server(&self, reason: ConnectionClose) {
        self.cold.connections_closed[reason as usize].fetch_add(1, RELAXED);
    }

    /// How many callers the rate limiter keeps state for: `streamgate_rate_limit_keys`.
    pub fn set_rate_limit_keys(&self, keys: usize) {
        self.cold
            .rate_limit_keys
            .store(u64::try_from(keys).unwrap_or(u64::MAX), RELAXED);
    }

    /// Shutdown has begun (`streamgate_draining` 1): `/readyz` answers 503 and connections
    /// are being closed.
    pub fn set_draining(&self) {
        self.cold.draining.store(1, RELAXED);
    }

    /// A request refused by the rate limiter: `streamgate_rate_limited_total`.
    pub fn rate_limited(&self) {
        self.shard().rate_limited.fetch_add(1, RELAXED);
    }

    /// A credential was checked and refused (a wrong password, an unknown API key, a JWT that
    /// failed verification): `streamgate_failed_sign_ins_total`.
    pub fn failed_sign_in(&self) {
        self.cold.failed_sign_ins.fetch_add(1, RELAXED);
    }

    /// A sign-in refused before its credential was checked:
    /// `streamgate_sign_ins_throttled_total{reason}`.
    pub fn sign_in_throttled(&self, reason: ThrottleReason) {
        self.cold.sign_ins_throttled[reason as usize].fetch_add(1, RELAXED);
    }

    /// An audit of the Cloudflare account ran: `streamgate_unprotected_videos` is set, and
    /// `/readyz` shows the outcome.
    pub fn stream_audit_done(&self, at: u64, unprotected_videos: u64, errors: u64) {
        self.cold
            .unprotected_videos
            .store(unprotected_videos, RELAXED);
        *self.lock_audit() = Some(StreamAuditStatus {
            at,
            ok: true,
            unprotected_videos,
            errors,
            completed: true,
        });
    }

    /// An audit of the Cloudflare account could not run:
    /// `streamgate_stream_audit_failures_total`; the last audit's figures stay.
    pub fn stream_audit_failed(&self, at: u64) {
        self.cold.stream_audit_failures.fetch_add(1, RELAXED);
        let mut status = self.lock_audit();
        let last = status.take().unwrap_or_default();
        *status = Some(StreamAuditStatus {
            at,
            ok: false,
            ..last
        });
    }

    /// The last audit's outcome; `None` before the first (or when audits are off).
    pub fn stream_audit(&self) -> Option<StreamAuditStatus> {
        self.lock_audit().clone()
    }

    fn lock_audit(&self) -> std::sync::MutexGuard<'_, Option<StreamAuditStatus>> {
        self.cold
            .stream_audit
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Every metric in OpenMetrics text (ending `# EOF`), for a response with
    /// [`CONTENT_TYPE`]. Sums the shards and calls the cache source; takes no lock that a
    /// recording call takes.
    pub fn encode(&self) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self.snapshot()));
        let mut text = String::with_capacity(8 * 1024);
        prometheus_client::encoding::text::encode(&mut text, &registry)
            .expect("writing to a String does not fail, and the snapshot encodes no error");
        text
    }

    /// These metrics as a [`Collector`], to register in another [`Registry`] next to other
    /// metrics. Each scrape of that registry reads them afresh.
    pub fn collector(self: &Arc<Self>) -> MetricsCollector {
        MetricsCollector(Arc::clone(self))
    }

    /// The shards summed, and the cache source's figures.
    fn snapshot(&self) -> Snapshot {
        let mut snap = Snapshot {
            requests: [[0; STATUSES]; ROUTES],
            request_latency: std::array::from_fn(|_| HistogramSnapshot::new(&REQUEST_BOUNDS_NS)),
            signing: HistogramSnapshot::new(&SIGNING_BOUNDS_NS),
            upstream: HistogramSnapshot::new(&REQUEST_BOUNDS_NS),
            upstream_errors: [0; UPSTREAM_KINDS],
            decisions: [0; OUTCOMES],
            rule_decisions: Vec::new(),
            cache: None,
            reloads_ok: self.cold.reloads_ok.load(RELAXED),
            reloads_failed: self.cold.reloads_failed.load(RELAXED),
            config_generation: self.cold.config_generation.load(RELAXED),
            open_connections: 0,
            connections_refused: 0,
            rate_limited: 0,
            connections_closed: std::array::from_fn(|i| {
                self.cold.connections_closed[i].load(RELAXED)
            }),
            rate_limit_keys: self.cold.rate_limit_keys.load(RELAXED),
            draining: self.cold.draining.load(RELAXED),
            failed_sign_ins: self.cold.failed_sign_ins.load(RELAXED),
            sign_ins_throttled: std::array::from_fn(|i| {
                self.cold.sign_ins_throttled[i].load(RELAXED)
            }),
            unprotected_videos: self.cold.unprotected_videos.load(RELAXED),
            stream_audit_failures: self.cold.stream_audit_failures.load(RELAXED),
        };
        for shard in &self.shards {
            add_all(
                snap.requests.as_flattened_mut(),
                shard.requests.as_flattened(),
            );
            for (hist, buckets) in snap.request_latency.iter_mut().zip(&shard.request_latency) {
                hist.add(buckets);
            }
            snap.signing.add(&shard.signing);
            snap.upstream.add(&shard.upstream);
            add_all(&mut snap.upstream_errors, &shard.upstream_errors);
            add_all(&mut snap.decisions, &shard.decisions);
            snap.open_connections += shard.open_connections.load(RELAXED);
            snap.connections_refused += shard.connections_refused.load(RELAXED);
            snap.rate_limited += shard.rate_limited.load(RELAXED);
        }
        // Shards read at slightly different moments can see a close without its open.
        snap.open_connections = snap.open_connections.max(0);
        snap.rule_decisions = self
            .rules
            .load()
            .named
            .iter()
            .map(|(_, label, counters)| (label.clone(), counters.sums()))
            .collect();
        let source = self
            .cache_source
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        snap.cache = source.map(|source| source());
        snap
    }
}

fn add_all(sums: &mut [u64], counters: &[AtomicU64]) {
    for (sum, counter) in sums.iter_mut().zip(counters) {
        *sum += counter.load(RELAXED);
    }
}

/// A label value as the text format needs it: the encoder writes values verbatim, and rule
/// names come from the operator's configuration.
fn escape_label(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '"' => escaped.push_str("\\\""),
            '\n' => escaped.push_str("\\n"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// [`Metrics`] as a [`Collector`]; see [`Metrics::collector`].
#[derive(Debug, Clone)]
pub struct MetricsCollector(Arc<Metrics>);

impl Collector for MetricsCollector {
    fn encode(&self, encoder: DescriptorEncoder) -> fmt::Result {
        self.0.snapshot().encode(encoder)
    }
}

/// A histogram summed over the shards.
#[derive(Debug)]
struct HistogramSnapshot {
    /// Upper bound in seconds (`f64::MAX` for `+Inf`, as prometheus-client expects) and the
    /// count in that bucket alone.
    buckets: Vec<(f64, u64)>,
    sum_ns: u64,
}

impl HistogramSnapshot {
    fn new(bounds_ns: &[u64]) -> Self {
        let buckets = bounds_ns
            .iter()
            .map(|&bound| bound as f64 / 1e9)
            .chain([f64::MAX])
            .map(|bound| (bound, 0))
            .collect();
        Self { buckets, sum_ns: 0 }
    }

    fn add<const N: usize>(&mut self, shard: &Buckets<N>) {
        for ((_, sum), counter) in self.buckets.iter_mut().zip(&shard.counts) {
            *sum += counter.load(RELAXED);
        }
        self.sum_ns = self.sum_ns.wrapping_add(shard.sum_ns.load(RELAXED));
    }

    fn count(&self) -> u64 {
        self.buckets.iter().map(|&(_, count)| count).sum()
    }

    fn encode(&self, metric: &mut MetricEncoder) -> fmt::Result {
        metric.encode_histogram::<NoLabelSet>(
            self.sum_ns as f64 / 1e9,
            self.count(),
            &self.buckets,
            None,
        )
    }
}

/// Every value at one scrape: what the [`Collector`] encodes.
#[derive(Debug)]
struct Snapshot {
    requests: [[u64; STATUSES]; ROUTES],
    request_latency: [HistogramSnapshot; ROUTES],
    signing: HistogramSnapshot,
    upstream: HistogramSnapshot,
    upstream_errors: [u64; UPSTREAM_KINDS],
    decisions: [u64; OUTCOMES],
    /// Escaped rule label and its counts in [`RULE_OUTCOMES`] order.
    rule_decisions: Vec<(Box<str>, [u64; RULE_OUTCOMES.len()])>,
    cache: Option<CacheCounts>,
    reloads_ok: u64,
    reloads_failed: u64,
    config_generation: u64,
    open_connections: i64,
    connections_refused: u64,
    rate_limited: u64,
    connections_closed: [u64; ConnectionClose::ALL.len()],
    rate_limit_keys: u64,
    draining: u64,
    failed_sign_ins: u64,
    sign_ins_throttled: [u64; ThrottleReason::ALL.len()],
    unprotected_videos: u64,
    stream_audit_failures: u64,
}

fn counter(metric: &mut MetricEncoder, value: u64) -> fmt::Result {
    metric.encode_counter::<NoLabelSet, _, u64>(&value, None)
}

fn lone_counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> fmt::Result {
    counter(
        &mut encoder.encode_descriptor(name, help, None, MetricType::Counter)?,
        value,
    )
}

fn lone_gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: i64) -> fmt::Result {
    encoder
        .encode_descriptor(name, help, None, MetricType::Gauge)?
        .encode_gauge(&value)
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let seconds = Unit::Seconds;
        let e = &mut encoder;

        let mut metric = e.encode_descriptor(
            "streamgate_requests",
            "Requests answered, by route and status code.",
            None,
            MetricType::Counter,
        )?;
        for (route, row) in Route::ALL.iter().zip(&self.requests) {
            for (status, &value) in STATUS_LABELS.iter().zip(row) {
                if value > 0 {
                    let labels = [("route", route.label()), ("status", *status)];
                    counter(&mut metric.encode_family(&labels)?, value)?;
                }
            }
        }

        let mut metric = e.encode_descriptor(
            "streamgate_request_duration",
            "Time from request head to response head, by route.",
            Some(&seconds),
            MetricType::Histogram,
        )?;
        for (route, hist) in Route::ALL.iter().zip(&self.request_latency) {
            if hist.count() > 0 {
                hist.encode(&mut metric.encode_family(&[("route", route.label())])?)?;
            }
        }

        let mut metric = e.encode_descriptor(
            "streamgate_decisions",
            "Access decisions, by outcome and deciding rule (\"\" when none).",
            None,
            MetricType::Counter,
        )?;
        for (outcome, &value) in Outcome::ALL.iter().zip(&self.decisions) {
            let labels = [("outcome", outcome.label()), ("rule", "")];
            counter(&mut metric.encode_family(&labels)?, value)?;
        }
        for (rule, values) in &self.rule_decisions {
            for (outcome, &value) in RULE_OUTCOMES.iter().zip(values) {
                if value > 0 {
                    let labels = [("outcome", outcome.label()), ("rule", &**rule)];
                    counter(&mut metric.encode_family(&labels)?, value)?;
                }
            }
        }

        if let Some(cache) = self.cache {
            lone_counter(
                e,
                "streamgate_token_cache_hits",
                "Token lookups answered from the cache.",
                cache.hits,
            )?;
            lone_counter(
                e,
                "streamgate_token_cache_misses",
                "Token lookups that needed a new signature.",
                cache.misses,
            )?;
            lone_counter(
                e,
                "streamgate_token_cache_evictions",
                "Tokens dropped from the cache for size or age.",
                cache.evictions,
            )?;
            lone_gauge(
                e,
                "streamgate_token_cache_entries",
                "Tokens in the cache.",
                i64::try_from(cache.entries).unwrap_or(i64::MAX),
            )?;
        }

        lone_counter(
            e,
            "streamgate_signatures",
            "Tokens signed.",
            self.signing.count(),
        )?;
        self.signing.encode(&mut e.encode_descriptor(
            "streamgate_signing_duration",
            "Time to sign one token.",
            Some(&seconds),
            MetricType::Histogram,
        )?)?;

        self.upstream.encode(&mut e.encode_descriptor(
            "streamgate_upstream_duration",
            "Proxy mode: time from sending a request to Stream to its response head.",
            Some(&seconds),
            MetricType::Histogram,
        )?)?;
        let mut metric = e.encode_descriptor(
            "streamgate_upstream_errors",
            "Proxy mode: failed fetches from Stream, by kind.",
            None,
            MetricType::Counter,
        )?;
        for (kind, &value) in UpstreamErrorKind::ALL.iter().zip(&self.upstream_errors) {
            counter(&mut metric.encode_family(&[("kind", kind.label())])?, value)?;
        }

        let mut metric = e.encode_descriptor(
            "streamgate_config_reloads",
            "Configuration reloads, by result.",
            None,
            MetricType::Counter,
        )?;
        counter(
            &mut metric.encode_family(&[("result", "ok")])?,
            self.reloads_ok,
        )?;
        counter(
            &mut metric.encode_family(&[("result", "failed")])?,
            self.reloads_failed,
        )?;
        lone_gauge(
            e,
            "streamgate_config_generation",
            "Generation of the configuration in force.",
            i64::try_from(self.config_generation).unwrap_or(i64::MAX),
        )?;

        lone_gauge(
            e,
            "streamgate_open_connections",
            "Client connections open now.",
            self.open_connections,
        )?;
        lone_counter(
            e,
            "streamgate_connections_refused",
            "Client connections turned away over the connection cap.",
            self.connections_refused,
        )?;
        lone_counter(
            e,
            "streamgate_rate_limited",
            "Requests refused by the rate limiter.",
            self.rate_limited,
        )?;
        lone_counter(
            e,
            "streamgate_log_lines_dropped",
            "Log lines dropped because the log writer could not keep up.",
            crate::log_writer::dropped_lines(),
        )?;
        lone_counter(
            e,
            "streamgate_audit_events_dropped",
            "Token audit events dropped because the audit trail's writer could not keep up.",
            crate::log_writer::dropped_audit_events(),
        )?;
        let mut metric = e.encode_descriptor(
            "streamgate_connections_closed",
            "Client connections the server closed, by reason.",
            None,
            MetricType::Counter,
        )?;
        for (reason, &value) in ConnectionClose::ALL.iter().zip(&self.connections_closed) {
            counter(
                &mut metric.encode_family(&[("reason", reason.label())])?,
                value,
            )?;
        }
        lone_gauge(
            e,
            "streamgate_rate_limit_keys",
            "Callers (addresses and subjects) the rate limiter keeps state for.",
            i64::try_from(self.rate_limit_keys).unwrap_or(i64::MAX),
        )?;
        lone_gauge(
            e,
            "streamgate_draining",
            "1 once shutdown has begun.",
            i64::try_from(self.draining).unwrap_or(i64::MAX),
        )?;
        lone_counter(
            e,
            "streamgate_failed_sign_ins",
            "Credentials checked and refused (wrong passwords, unknown API keys, refused JWTs).",
            self.failed_sign_ins,
        )?;
        let mut metric = e.encode_descriptor(
            "streamgate_sign_ins_throttled",
            "Sign-ins refused before their credential was checked, by reason.",
            None,
            MetricType::Counter,
        )?;
        for (reason, &value) in ThrottleReason::ALL.iter().zip(&self.sign_ins_throttled) {
            counter(
                &mut metric.encode_family(&[("reason", reason.label())])?,
                value,
            )?;
        }
        lone_gauge(
            e,
            "streamgate_unprotected_videos",
            "Catalogue videos the last audit of the Cloudflare account found playable without a token (requireSignedURLs false).",
            i64::try_from(self.unprotected_videos).unwrap_or(i64::MAX),
        )?;
        lone_counter(
            e,
            "streamgate_stream_audit_failures",
            "Periodic audits of the Cloudflare account that could not run (API errors).",
            self.stream_audit_failures,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::Barrier;

    /// Label pairs, sorted by name.
    type Labels = BTreeMap<String, String>;

    /// The samples of an exposition: (sample name, labels) → value. Panics on a line it does
    /// not understand, or on a sample given twice.
    fn parse(text: &str) -> BTreeMap<(String, Labels), f64> {
        assert!(text.ends_with("# EOF\n"), "no EOF marker:\n{text}");
        let mut samples = BTreeMap::new();
        for line in text.lines().filter(|line| !line.starts_with('#')) {
            let (series, value) = line.rsplit_once(' ').expect("a sample has a value");
            let value = match value {
                "+Inf" => f64::INFINITY,
                value => value
                    .parse()
                    .unwrap_or_else(|_| panic!("value in {line:?}")),
            };
            let (name, labels) = match series.split_once('{') {
                None => (series.to_owned(), Labels::new()),
                Some((name, rest)) => {
                    let body = rest.strip_suffix('}').expect("labels end with }");
                    (name.to_owned(), parse_labels(body))
                }
            };
            let previous = samples.insert((name, labels), value);
            assert!(previous.is_none(), "sample given twice: {line}");
        }
        samples
    }

    fn parse_labels(mut body: &str) -> Labels {
        let mut labels = Labels::new();
        while !body.is_empty() {
            let (key, rest) = body.split_once("=\"").expect("key=\"value\"");
            let mut value = String::new();
            let mut chars = rest.char_indices();
            let end = loop {
                match chars.next().expect("closing quote") {
                    (i, '"') => break i,
                    (_, '\\') => match chars.next().expect("escaped char").1 {
                        'n' => value.push('\n'),
                        c => value.push(c),
                    },
                    (_, c) => value.push(c),
                }
            };
            labels.insert(key.to_owned(), value);
            body = rest[end + 1..]
                .strip_prefix(',')
                .unwrap_or(&rest[end + 1..]);
        }
        labels
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|&(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    /// The value of one sample; panics when it is missing.
    fn value(samples: &BTreeMap<(String, Labels), f64>, name: &str, pairs: &[(&str, &str)]) -> f64 {
        *samples
            .get(&(name.to_owned(), labels(pairs)))
            .unwrap_or_else(|| panic!("no sample {name}{pairs:?}"))
    }

    /// Every label set a sample name has.
    fn label_sets(samples: &BTreeMap<(String, Labels), f64>, name: &str) -> BTreeSet<Labels> {
        samples
            .keys()
            .filter(|(n, _)| n == name)
            .map(|(_, labels)| labels.clone())
            .collect()
    }

    /// A histogram's cumulative buckets, by `le` label as written, plus `_count` and `_sum`.
    fn histogram(
        samples: &BTreeMap<(String, Labels), f64>,
        name: &str,
        pairs: &[(&str, &str)],
    ) -> (Vec<(String, f64)>, f64, f64) {
        let want = labels(pairs);
        let mut buckets: Vec<(f64, String, f64)> = samples
            .iter()
            .filter(|((n, _), _)| *n == format!("{name}_bucket"))
            .filter_map(|((_, l), &v)| {
                let mut rest = l.clone();
                let le = rest.remove("le").expect("a bucket has le");
                let bound = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().expect("le is a number")
                };
                (rest == want).then_some((bound, le, v))
            })
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        let count = value(samples, &format!("{name}_count"), pairs);
        let sum = value(samples, &format!("{name}_sum"), pairs);
        (
            buckets.into_iter().map(|(_, le, v)| (le, v)).collect(),
            count,
            sum,
        )
    }

    /// The cumulative count at the bucket whose bound is `le_seconds`.
    fn cumulative(buckets: &[(String, f64)], le_seconds: f64) -> f64 {
        buckets
            .iter()
            .find(|(le, _)| le != "+Inf" && le.parse::<f64>().unwrap() == le_seconds)
            .unwrap_or_else(|| panic!("no bucket le={le_seconds}"))
            .1
    }

    const MS: fn(u64) -> Duration = Duration::from_millis;
    const US: fn(u64) -> Duration = Duration::from_micros;

    #[test]
    fn scripted_sequence_exports_exact_values() {
        let metrics = Metrics::new();
        metrics.set_rules(["staff", "public", "embargo"]);

        metrics.request(Route::Watch, 302, US(40)); // le 5e-5
        metrics.request(Route::Watch, 302, US(300)); // le 5e-4
        metrics.request(Route::Watch, 403, MS(2)); // le 2.5e-3
        metrics.request(Route::Api, 200, MS(20)); // le 0.025
        metrics.request(Route::WatchFile, 418, Duration::from_secs(12)); // other, +Inf
        metrics.request(Route::Health, 200, US(50)); // exactly on le 5e-5

        metrics.decision(Outcome::Allow, Some(1));
        metrics.decision(Outcome::Allow, Some(1));
        metrics.decision(Outcome::Allow, Some(0));
        metrics.decision(Outcome::DenyRule, Some(0));
        metrics.decision(Outcome::OutsideWindow, Some(2));
        metrics.decision(Outcome::DenyDefault, None);
        metrics.decision(Outcome::Unauthenticated, None);
        metrics.decision(Outcome::Allow, Some(7)); // out of range → rule=""
        metrics.decision(Outcome::DenyDefault, Some(1)); // no rule decides a default deny

        metrics.signature(US(800)); // le 1e-3
        metrics.signature(MS(3)); // le 5e-3
        metrics.upstream(MS(30)); // le 0.05
        metrics.upstream_error(UpstreamErrorKind::Timeout);
        metrics.upstream_error(UpstreamErrorKind::Refused);
        metrics.upstream_error(UpstreamErrorKind::Refused);

        metrics.reload(true);
        metrics.reload(true);
        metrics.reload(false);
        metrics.set_config_generation(3);

        for _ in 0..3 {
            metrics.connection_opened();
        }
        metrics.connection_closed();
        metrics.connection_refused();
        metrics.rate_limited();
        metrics.rate_limited();

        let text = metrics.encode();
        let s = parse(&text);

        // Requests: exactly the label sets used, "other" for a status outside the list.
        let requests = "streamgate_requests_total";
        assert_eq!(
            label_sets(&s, requests),
            BTreeSet::from([
                labels(&[("route", "watch"), ("status", "302")]),
                labels(&[("route", "watch"), ("status", "403")]),
                labels(&[("route", "api"), ("status", "200")]),
                labels(&[("route", "watch_file"), ("status", "other")]),
                labels(&[("route", "health"), ("status", "200")]),
            ])
        );
        assert_eq!(
            value(&s, requests, &[("route", "watch"), ("status", "302")]),
            2.0
        );
        assert_eq!(
            value(&s, requests, &[("route", "watch"), ("status", "403")]),
            1.0
        );

        let duration = "streamgate_request_duration_seconds";
        assert_eq!(
            label_sets(&s, &format!("{duration}_count")),
            BTreeSet::from([
                labels(&[("route", "watch")]),
                labels(&[("route", "api")]),
                labels(&[("route", "watch_file")]),
                labels(&[("route", "health")]),
            ])
        );
        let (buckets, count, sum) = histogram(&s, duration, &[("route", "watch")]);
        assert_eq!(buckets.len(), 18);
        assert_eq!(count, 3.0);
        assert!((sum - 0.00234).abs() < 1e-12, "sum {sum}");
        assert_eq!(cumulative(&buckets, 0.00005), 1.0);
        assert_eq!(cumulative(&buckets, 0.00025), 1.0);
        assert_eq!(cumulative(&buckets, 0.0005), 2.0);
        assert_eq!(cumulative(&buckets, 0.001), 2.0);
        assert_eq!(cumulative(&buckets, 0.0025), 3.0);
        assert_eq!(cumulative(&buckets, 10.0), 3.0);
        assert_eq!(buckets.last().unwrap(), &("+Inf".to_owned(), 3.0));
        let (buckets, count, sum) = histogram(&s, duration, &[("route", "watch_file")]);
        assert_eq!((count, sum), (1.0, 12.0));
        assert_eq!(cumulative(&buckets, 10.0), 0.0);
        assert_eq!(buckets.last().unwrap().1, 1.0);
        let (buckets, count, _) = histogram(&s, duration, &[("route", "health")]);
        assert_eq!(count, 1.0);
        assert_eq!(cumulative(&buckets, 0.00005), 1.0, "le is inclusive");
        let (buckets, _, _) = histogram(&s, duration, &[("route", "api")]);
        assert_eq!(cumulative(&buckets, 0.01), 0.0);
        assert_eq!(cumulative(&buckets, 0.025), 1.0);

        // Decisions: every outcome under rule="", rules once they have counts.
        let decisions = "streamgate_decisions_total";
        let d = |outcome: &str, rule: &str| {
            value(&s, decisions, &[("outcome", outcome), ("rule", rule)])
        };
        assert_eq!(label_sets(&s, decisions).len(), 5 + 4);
        assert_eq!(d("allow", "public"), 2.0);
        assert_eq!(d("allow", "staff"), 1.0);
        assert_eq!(d("deny_rule", "staff"), 1.0);
        assert_eq!(d("outside_window", "embargo"), 1.0);
        assert_eq!(d("allow", ""), 1.0);
        assert_eq!(d("deny_default", ""), 2.0);
        assert_eq!(d("unauthenticated", ""), 1.0);
        assert_eq!(d("deny_rule", ""), 0.0);
        assert_eq!(d("outside_window", ""), 0.0);

        // No cache source: no cache metrics.
        assert!(!text.contains("streamgate_token_cache"));

        assert_eq!(value(&s, "streamgate_signatures_total", &[]), 2.0);
        let (buckets, count, sum) = histogram(&s, "streamgate_signing_duration_seconds", &[]);
        assert_eq!(buckets.len(), 14);
        assert_eq!(count, 2.0);
        assert!((sum - 0.0038).abs() < 1e-12, "sum {sum}");
        assert_eq!(cumulative(&buckets, 0.0005), 0.0);
        assert_eq!(cumulative(&buckets, 0.001), 1.0);
        assert_eq!(cumulative(&buckets, 0.0025), 1.0);
        assert_eq!(cumulative(&buckets, 0.005), 2.0);

        let (buckets, count, sum) = histogram(&s, "streamgate_upstream_duration_seconds", &[]);
        assert_eq!((count, sum), (1.0, 0.03));
        assert_eq!(cumulative(&buckets, 0.025), 0.0);
        assert_eq!(cumulative(&buckets, 0.05), 1.0);
        let errors = "streamgate_upstream_errors_total";
        assert_eq!(label_sets(&s, errors).len(), 5);
        assert_eq!(value(&s, errors, &[("kind", "timeout")]), 1.0);
        assert_eq!(value(&s, errors, &[("kind", "refused")]), 2.0);
        assert_eq!(value(&s, errors, &[("kind", "connect")]), 0.0);
        assert_eq!(value(&s, errors, &[("kind", "status_5xx")]), 0.0);
        assert_eq!(value(&s, errors, &[("kind", "body")]), 0.0);

        let reloads = "streamgate_config_reloads_total";
        assert_eq!(value(&s, reloads, &[("result", "ok")]), 2.0);
        assert_eq!(value(&s, reloads, &[("result", "failed")]), 1.0);
        assert_eq!(value(&s, "streamgate_config_generation", &[]), 3.0);
        assert_eq!(value(&s, "streamgate_open_connections", &[]), 2.0);
        assert_eq!(value(&s, "streamgate_connections_refused_total", &[]), 1.0);
        assert_eq!(value(&s, "streamgate_rate_limited_total", &[]), 2.0);

        // Every family is described once, with its type.
        for (family, kind) in [
            ("streamgate_requests", "counter"),
            ("streamgate_request_duration_seconds", "histogram"),
            ("streamgate_decisions", "counter"),
            ("streamgate_signatures", "counter"),
            ("streamgate_signing_duration_seconds", "histogram"),
            ("streamgate_upstream_duration_seconds", "histogram"),
            ("streamgate_upstream_errors", "counter"),
            ("streamgate_config_reloads", "counter"),
            ("streamgate_config_generation", "gauge"),
            ("streamgate_open_connections", "gauge"),
            ("streamgate_connections_refused", "counter"),
            ("streamgate_rate_limited", "counter"),
        ] {
            assert_eq!(
                text.matches(&format!("# TYPE {family} {kind}\n")).count(),
                1,
                "{family}"
            );
        }
        assert!(CONTENT_TYPE.starts_with("application/openmetrics-text"));
    }

    #[test]
    fn fresh_metrics_export_zeroes_and_no_request_series() {
        let s = parse(&Metrics::new().encode());
        assert!(label_sets(&s, "streamgate_requests_total").is_empty());
        assert!(label_sets(&s, "streamgate_request_duration_seconds_count").is_empty());
        assert_eq!(label_sets(&s, "streamgate_decisions_total").len(), 5);
        let (buckets, count, sum) = histogram(&s, "streamgate_signing_duration_seconds", &[]);
        assert_eq!((buckets.len(), count, sum), (14, 0.0, 0.0));
        assert_eq!(value(&s, "streamgate_open_connections", &[]), 0.0);
        assert_eq!(value(&s, "streamgate_config_generation", &[]), 0.0);
    }

    #[test]
    fn bucket_bounds_are_inclusive_and_out_of_range_goes_to_inf() {
        let metrics = Metrics::new();
        metrics.request(Route::Other, 200, Duration::ZERO);
        metrics.request(Route::Other, 200, US(50));
        metrics.request(Route::Other, 200, US(50) + Duration::from_nanos(1));
        metrics.request(Route::Other, 200, Duration::from_secs(10));
        metrics.request(
            Route::Other,
            200,
            Duration::from_secs(10) + Duration::from_nanos(1),
        );
        metrics.request(Route::Other, 200, Duration::MAX);
        let s = parse(&metrics.encode());
        let (buckets, count, _) = histogram(
            &s,
            "streamgate_request_duration_seconds",
            &[("route", "other")],
        );
        assert_eq!(count, 6.0);
        assert_eq!(cumulative(&buckets, 0.00005), 2.0);
        assert_eq!(cumulative(&buckets, 0.0001), 3.0);
        assert_eq!(cumulative(&buckets, 5.0), 3.0);
        assert_eq!(cumulative(&buckets, 10.0), 4.0);
        assert_eq!(buckets.last().unwrap(), &("+Inf".to_owned(), 6.0));
    }

    #[test]
    fn status_slots_match_the_status_list() {
        for (slot, &code) in STATUS_CODES.iter().enumerate() {
            assert_eq!(status_slot(code), slot);
            assert_eq!(STATUS_LABELS[slot], code.to_string());
        }
        assert_eq!(STATUS_LABELS[STATUS_OTHER], "other");
        for code in [0, 100, 201, 418, 599, 600, 999, u16::MAX] {
            assert_eq!(status_slot(code), STATUS_OTHER, "{code}");
        }
    }

    #[test]
    fn concurrent_recording_is_exact() {
        const THREADS: usize = 8;
        const PER_THREAD: u64 = 20_000;
        let metrics = Metrics::new();
        metrics.set_rules(["a", "b"]);
        let barrier = Barrier::new(THREADS);
        std::thread::scope(|scope| {
            for t in 0..THREADS {
                let (metrics, barrier) = (&metrics, &barrier);
                scope.spawn(move || {
                    barrier.wait();
                    for i in 0..PER_THREAD {
                        metrics.request(Route::Watch, 302, US(100));
                        metrics.decision(Outcome::Allow, Some((t + i as usize) % 2));
                        metrics.signature(MS(1));
                        metrics.connection_opened();
                        metrics.rate_limited();
                    }
                    // Closed on another thread than the one that opened.
                    barrier.wait();
                    for _ in 0..PER_THREAD - 1 {
                        metrics.connection_closed();
                    }
                });
            }
        });
        let total = (THREADS as u64 * PER_THREAD) as f64;
        let s = parse(&metrics.encode());
        assert_eq!(
            value(
                &s,
                "streamgate_requests_total",
                &[("route", "watch"), ("status", "302")]
            ),
            total
        );
        let (buckets, count, sum) = histogram(
            &s,
            "streamgate_request_duration_seconds",
            &[("route", "watch")],
        );
        assert_eq!(count, total);
        assert_eq!(cumulative(&buckets, 0.0001), total);
        assert!((sum - total * 1e-4).abs() < 1e-9, "sum {sum}");
        let d = |rule| {
            value(
                &s,
                "streamgate_decisions_total",
                &[("outcome", "allow"), ("rule", rule)],
            )
        };
        assert_eq!(d("a"), total / 2.0);
        assert_eq!(d("b"), total / 2.0);
        assert_eq!(value(&s, "streamgate_signatures_total", &[]), total);
        assert_eq!(value(&s, "streamgate_rate_limited_total", &[]), total);
        assert_eq!(
            value(&s, "streamgate_open_connections", &[]),
            THREADS as f64
        );
    }

    #[test]
    fn set_rules_replaces_rules_and_keeps_counts_of_surviving_names() {
        let metrics = Metrics::new();
        metrics.set_rules(["a", "b"]);
        metrics.decision(Outcome::Allow, Some(0));
        metrics.decision(Outcome::Allow, Some(1));
        metrics.decision(Outcome::DenyRule, Some(1));

        // Reload: "a" is gone, "b" moved from index 1 to 0, "c" is new.
        metrics.set_rules(["b", "c"]);
        metrics.decision(Outcome::Allow, Some(0));
        metrics.decision(Outcome::OutsideWindow, Some(1));
        metrics.decision(Outcome::Allow, Some(2)); // out of range now → rule=""

        let s = parse(&metrics.encode());
        let decisions = "streamgate_decisions_total";
        let rules: BTreeSet<String> = label_sets(&s, decisions)
            .into_iter()
            .map(|l| l["rule"].clone())
            .collect();
        assert_eq!(rules, BTreeSet::from(["".into(), "b".into(), "c".into()]));
        let d = |outcome: &str, rule: &str| {
            value(&s, decisions, &[("outcome", outcome), ("rule", rule)])
        };
        assert_eq!(d("allow", "b"), 2.0);
        assert_eq!(d("deny_rule", "b"), 1.0);
        assert_eq!(d("outside_window", "c"), 1.0);
        assert_eq!(d("allow", ""), 1.0);

        // Clearing the rules sends every index to rule="".
        metrics.set_rules(std::iter::empty::<&str>());
        metrics.decision(Outcome::Allow, Some(0));
        let s = parse(&metrics.encode());
        assert_eq!(label_sets(&s, decisions).len(), 5);
        assert_eq!(
            value(&s, decisions, &[("outcome", "allow"), ("rule", "")]),
            2.0
        );
    }

    #[test]
    fn repeated_empty_and_odd_rule_names() {
        let metrics = Metrics::new();
        let odd = "say \"hi\"\\\nnow";
        metrics.set_rules(["x", "", "x", odd]);
        metrics.decision(Outcome::Allow, Some(0));
        metrics.decision(Outcome::Allow, Some(2)); // same name as index 0: one series
        metrics.decision(Outcome::Allow, Some(1)); // empty name → rule=""
        metrics.decision(Outcome::DenyRule, Some(3));
        let text = metrics.encode();
        let s = parse(&text);
        let decisions = "streamgate_decisions_total";
        assert_eq!(label_sets(&s, decisions).len(), 5 + 2);
        assert_eq!(
            value(&s, decisions, &[("outcome", "allow"), ("rule", "x")]),
            2.0
        );
        assert_eq!(
            value(&s, decisions, &[("outcome", "allow"), ("rule", "")]),
            1.0
        );
        assert_eq!(
            value(&s, decisions, &[("outcome", "deny_rule"), ("rule", odd)]),
            1.0
        );
        assert!(text.contains(r#"rule="say \"hi\"\\\nnow""#), "{text}");
    }

    #[test]
    fn cache_source_is_read_at_each_scrape() {
        let metrics = Metrics::new();
        let hits = Arc::new(AtomicU64::new(5));
        let source_hits = Arc::clone(&hits);
        metrics.set_cache_source(Box::new(move || CacheCounts {
            hits: source_hits.load(RELAXED),
            misses: 2,
            evictions: 1,
            entries: 7,
        }));
        let s = parse(&metrics.encode());
        assert_eq!(value(&s, "streamgate_token_cache_hits_total", &[]), 5.0);
        assert_eq!(value(&s, "streamgate_token_cache_misses_total", &[]), 2.0);
        assert_eq!(
            value(&s, "streamgate_token_cache_evictions_total", &[]),
            1.0
        );
        assert_eq!(value(&s, "streamgate_token_cache_entries", &[]), 7.0);

        hits.store(9, RELAXED);
        let s = parse(&metrics.encode());
        assert_eq!(value(&s, "streamgate_token_cache_hits_total", &[]), 9.0);

        // A source may use the metrics, even replace itself: it is not called under our lock.
        let inner = Arc::clone(&metrics);
        metrics.set_cache_source(Box::new(move || {
            inner.set_cache_source(Box::new(|| CacheCounts {
                entries: 2,
                ..CacheCounts::default()
            }));
            CacheCounts {
                entries: 1,
                ..CacheCounts::default()
            }
        }));
        let s = parse(&metrics.encode());
        assert_eq!(value(&s, "streamgate_token_cache_entries", &[]), 1.0);
        let s = parse(&metrics.encode());
        assert_eq!(value(&s, "streamgate_token_cache_entries", &[]), 2.0);
    }

    #[test]
    fn collector_registers_beside_other_metrics() {
        let metrics = Metrics::new();
        metrics.rate_limited();
        let mut registry = Registry::default();
        let other: prometheus_client::metrics::counter::Counter = Default::default();
        other.inc();
        registry.register("other_thing", "Something else", other);
        registry.register_collector(Box::new(metrics.collector()));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let s = parse(&text);
        assert_eq!(value(&s, "other_thing_total", &[]), 1.0);
        assert_eq!(value(&s, "streamgate_rate_limited_total", &[]), 1.0);
    }

    #[test]
    fn a_failed_stream_audit_keeps_the_last_figures_and_is_counted() {
        let metrics = Metrics::new();
        assert_eq!(metrics.stream_audit(), None);
        assert_eq!(
            value(
                &parse(&metrics.encode()),
                "streamgate_unprotected_videos",
                &[]
            ),
            0.0
        );
        metrics.stream_audit_done(100, 2, 1);
        metrics.stream_audit_failed(200);
        let status = metrics.stream_audit().unwrap();
        assert_eq!(
            status,
            StreamAuditStatus {
                at: 200,
                ok: false,
                unprotected_videos: 2,
                errors: 1,
                completed: true,
            }
        );
        let s = parse(&metrics.encode());
        assert_eq!(value(&s, "streamgate_unprotected_videos", &[]), 2.0);
        assert_eq!(
            value(&s, "streamgate_stream_audit_failures_total", &[]),
            1.0
        );
    }

    #[test]
    fn failed_and_throttled_sign_ins_are_counted_by_reason() {
        let metrics = Metrics::new();
        let fresh = metrics.encode();
        let s = parse(&fresh);
        assert_eq!(value(&s, "streamgate_failed_sign_ins_total", &[]), 0.0);
        assert_eq!(
            label_sets(&s, "streamgate_sign_ins_throttled_total").len(),
            3,
            "every reason is exported from the start"
        );
        metrics.failed_sign_in();
        metrics.failed_sign_in();
        metrics.sign_in_throttled(ThrottleReason::User);
        metrics.sign_in_throttled(ThrottleReason::Queued);
        metrics.sign_in_throttled(ThrottleReason::Queued);
        let text = metrics.encode();
        let s = parse(&text);
        let throttled = "streamgate_sign_ins_throttled_total";
        assert_eq!(value(&s, "streamgate_failed_sign_ins_total", &[]), 2.0);
        assert_eq!(value(&s, throttled, &[("reason", "address")]), 0.0);
        assert_eq!(value(&s, throttled, &[("reason", "user")]), 1.0);
        assert_eq!(value(&s, throttled, &[("reason", "queued")]), 2.0);
        for family in [
            "streamgate_failed_sign_ins",
            "streamgate_sign_ins_throttled",
        ] {
            assert_eq!(
                text.matches(&format!("# TYPE {family} counter\n")).count(),
                1,
                "{family}"
            );
        }
    }
}
