//! The running state of one configuration, and the one function that builds it.
//!
//! [`Snapshot::build`] is the only place runtime objects are made from settings: the
//! authenticator, the authorizer and its rate limits, the token cache and its signer, the
//! upstream client, the emulator's view of the keys. Start and reload both call it; a reload
//! passes the running snapshot so that what did not change (the token cache, the rate-limit
//! state, the failed sign-ins) carries over. [`restart_only_changes`] decides, field by field, what a running
//! process cannot change.

use std::sync::Arc;

use http::HeaderValue;

use crate::audit::AuditTrail;
use crate::authz::Authorizer;
use crate::authz::ratelimit::MintLimiter;
use crate::config::{ConfigError, ConfigErrors, EmulatorOptions, Settings, StreamSettings};
use crate::emulator::{
    AccountVideo, Emulator, EmulatorAccount, EmulatorError, EmulatorSettings, VerifyingKeySpec,
    demo_account_videos,
};
use crate::identity::Authenticator;
use crate::identity::basic::BasicUsers;
use crate::identity::jwt::JwtVerifier;
use crate::identity::throttle::SignInThrottle;
use crate::metrics::Metrics;
use crate::proxy::{ClientError, Upstream};
use crate::token::cache::TokenCache;
use crate::token::signer::Clock;
use crate::token::{Signer, SigningKey};

/// Why a configuration could not be turned into a running snapshot; the running one (if any)
/// is unchanged.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    #[error("cannot start the Stream emulator")]
    Emulator(#[source] EmulatorError),
    #[error("cannot build the client for the Stream origin (upstream.ca_file)")]
    Upstream(#[source] ClientError),
}

/// What every snapshot of one process shares, fixed when it starts: where tokens are played
/// (the emulator's address is known only once it listens), the metrics, and the clock tokens
/// are stamped by.
#[derive(Clone)]
pub struct Fixed {
    /// `https://customer-<code>.cloudflarestream.com` or the emulator (no trailing slash).
    pub origin: String,
    pub metrics: Arc<Metrics>,
    /// The system clock in production; tests move a manual one.
    pub clock: Clock,
    /// The token audit trail (`audit_trail`), opened once at start.
    pub audit: Option<Arc<AuditTrail>>,
    /// The emulator's account, kept across reloads (keys and video settings changed through
    /// its API survive them); `None` gives each built emulator a fresh one.
    pub emulator_account: Option<Arc<EmulatorAccount>>,
}

/// Everything one configuration needs at run time. Each request loads the current snapshot
/// once and keeps it to the end, so it sees the old configuration or the new one, never a mix.
pub struct Snapshot {
    pub settings: Arc<Settings>,
    pub auth: Authenticator,
    pub authz: Authorizer,
    pub cache: Arc<TokenCache>,
    /// Where tokens are played: `https://customer-<code>.cloudflarestream.com` or the
    /// emulator (no trailing slash).
    pub origin: String,
    /// The client proxy mode fetches Stream through.
    pub upstream: Upstream,
    /// `WWW-Authenticate` values for a 401, precomputed from what is configured.
    pub challenges: Vec<HeaderValue>,
    pub metrics: Arc<Metrics>,
    /// Where every token handed to a request is recorded, when configured.
    pub audit: Option<Arc<AuditTrail>>,
}

impl Snapshot {
    /// Build the running state for `settings`, signing with `keys` (in configuration order)
    /// and playing tokens at `origin`. With `previous`, the token cache is kept when neither
    /// the keys nor the cache settings changed (tokens under rules whose settings changed are
    /// never served again: the settings are part of the key), and so is the rate-limit state
    /// when the limits did not change.
    ///
    /// Also returns the emulator's new state when `settings` run one, to be swapped in before
    /// the snapshot (a token the new snapshot signs must already be trusted).
    pub fn build(
        settings: Settings,
        keys: Vec<SigningKey>,
        fixed: &Fixed,
        previous: Option<&Snapshot>,
    ) -> Result<(Snapshot, Option<Emulator>), BuildError> {
        let keys = active_first(&settings, keys);
        let mut auth = authenticator(&settings)?;
        if let Some(old) = previous.and_then(|previous| previous.auth.basic.as_ref()) {
            auth.basic = auth.basic.take().map(|basic| basic.reusing_memory_of(old));
        }
        // Failed sign-ins carry over like the rate limits: a reload must not hand a guesser
        // a fresh set of attempts.
        if let Some(previous) = previous
            && *previous.auth.throttle.settings() == settings.identity.failed_sign_ins
        {
            auth.throttle = Arc::clone(&previous.auth.throttle);
        }
        let cache = token_cache(&settings, keys, previous, fixed);
        let origin = fixed.origin.clone();
        let metrics = &fixed.metrics;
        let upstream = Upstream::new(origin.clone(), settings.upstream.clone())
            .map_err(BuildError::Upstream)?;
        // Last of what can fail: building the emulator seeds the shared account.
        let emulator = match &settings.stream {
            StreamSettings::Emulator(options) => {
                let wanted = emulator_settings(&settings, cache.signer().keys(), options);
                let built = match &fixed.emulator_account {
                    Some(account) => Emulator::for_account(wanted, Arc::clone(account)),
                    None => Emulator::new(wanted),
                };
                Some(built.map_err(BuildError::Emulator)?)
            }
            StreamSettings::Origin(_) => None,
        };
        let limiter = match previous {
            Some(previous) if previous.settings.rate_limit == settings.rate_limit => {
                Arc::clone(previous.authz.limiter())
            }
            _ => Arc::new(MintLimiter::new(&settings.rate_limit)),
        };
        let authz = Authorizer::new(
            Arc::clone(&settings.policy),
            Arc::clone(&settings.catalogue),
            limiter,
            sign_in(&auth),
            Arc::clone(metrics),
        );
        let challenges = challenges(&settings, &auth);
        if let Some(jwt) = &auth.jwt {
            // The refresh task ends by itself once this verifier is replaced and dropped.
            jwt.spawn_refresh(std::future::pending());
        }
        let snapshot = Snapshot {
            settings: Arc::new(settings),
            auth,
            authz,
            cache,
            origin,
            upstream,
            challenges,
            metrics: Arc::clone(metrics),
            audit: fixed.audit.clone(),
        };
        Ok((snapshot, emulator))
    }
}

/// The token cache for `settings`: the running one when nothing it depends on changed (its
/// signing timeout follows `limits.request_timeout` either way), else a new one.
fn token_cache(
    settings: &Settings,
    keys: Vec<SigningKey>,
    previous: Option<&Snapshot>,
    fixed: &Fixed,
) -> Arc<TokenCache> {
    if let Some(previous) = previous {
        let old = &previous.settings;
        let reusable = same_keys(previous.cache.signer().keys(), &keys)
            && old.nbf_backdate == settings.nbf_backdate
            && old.max_signing_in_flight == settings.max_signing_in_flight
            && old.sign_on_workers == settings.sign_on_workers
            && old.cache_capacity == settings.cache_capacity
            && old.min_remaining == settings.min_remaining;
        if reusable {
            previous.cache.set_sign_timeout(settings.request_timeout);
            return Arc::clone(&previous.cache);
        }
    }
    // New keys (or cache settings): no token signed by a removed key survives.
    let signer = Arc::new(
        Signer::with_clock(
            keys,
            settings.nbf_backdate,
            settings.max_signing_in_flight,
            fixed.clock.clone(),
        )
        .on_workers(settings.sign_on_workers),
    );
    Arc::new(
        TokenCache::new(signer, settings.cache_capacity, settings.min_remaining)
            .with_sign_timeout(settings.request_timeout)
            .observed_by(Arc::clone(&fixed.metrics)),
    )
}

/// Whether two key lists are the same keys in the same order (the first signs).
fn same_keys(running: &[Arc<SigningKey>], loaded: &[SigningKey]) -> bool {
    running.len() == loaded.len()
        && running
            .iter()
            .zip(loaded)
            .all(|(a, b)| a.id() == b.id() && a.public_components() == b.public_components())
}

/// `keys` (in configuration order) with the `active: true` key first: the signer signs with
/// the first. Without a marked key the first configured key signs.
pub fn active_first(settings: &Settings, mut keys: Vec<SigningKey>) -> Vec<SigningKey> {
    let active = settings
        .signing_keys
        .iter()
        .position(|source| source.active);
    if let Some(index) = active.filter(|&i| i < keys.len()) {
        let key = keys.remove(index);
        keys.insert(0, key);
    }
    keys
}

/// The request-path authenticator: reads issuer secrets, public keys and JWKS files (JWKS
/// URLs are fetched once the gateway runs). Errors name the issuer's field.
pub fn authenticator(settings: &Settings) -> Result<Authenticator, ConfigErrors> {
    let identity = &settings.identity;
    let jwt = if identity.issuers.is_empty() {
        None
    } else {
        let verifier = JwtVerifier::new(identity.issuers.clone()).map_err(|errors| {
            ConfigErrors(
                errors
                    .into_iter()
                    .map(|(i, message)| {
                        let (field, position) = identity
                            .issuer_fields
                            .get(i)
                            .cloned()
                            .unwrap_or_else(|| (format!("jwt_issuers[{i}]"), None));
                        ConfigError {
                            file: settings.file.clone(),
                            position,
                            field,
                            message,
                        }
                    })
                    .collect(),
            )
        })?;
        Some(Arc::new(verifier))
    };
    let basic = (!identity.users.is_empty()).then(|| {
        BasicUsers::new(
            identity.users.clone(),
            identity.basic_cache_ttl,
            identity.max_password_checks,
        )
    });
    Ok(Authenticator {
        throttle: Arc::new(SignInThrottle::new(identity.failed_sign_ins)),
        api_keys: identity.api_keys.clone(),
        basic,
        jwt,
        jwt_cookies: identity
            .issuers
            .iter()
            .filter_map(|i| i.cookie.clone())
            .collect(),
    })
}

impl Snapshot {
    /// The `Bearer` challenge alone, in the configured realm (the token API takes API keys
    /// only).
    pub fn bearer_challenge(&self) -> &[HeaderValue] {
        // `challenges` ends with it.
        let last = self.challenges.len().saturating_sub(1);
        &self.challenges[last..]
    }
}

/// The `WWW-Authenticate` challenges of a 401: Basic when users are configured, Bearer always
/// and last.
fn challenges(settings: &Settings, auth: &Authenticator) -> Vec<HeaderValue> {
    let realm = &settings.identity.realm;
    let mut challenges = vec![];
    if auth.basic_enabled() {
        challenges.push(format!("Basic realm=\"{realm}\", charset=\"UTF-8\""));
    }
    challenges.push(format!("Bearer realm=\"{realm}\""));
    challenges
        .into_iter()
        .filter_map(|c| HeaderValue::try_from(c).ok())
        .collect()
}

/// The credentials this gateway accepts, for a 401's reason.
fn sign_in(auth: &Authenticator) -> Arc<str> {
    let mut ways = vec!["an API key (Authorization: Bearer <key> or X-Api-Key)"];
    if auth.basic_enabled() {
        ways.push("a user name and password (HTTP Basic)");
    }
    if auth.jwt.is_some() {
        ways.push("a session token from your identity provider");
    }
    ways.join(", or ").into()
}

/// What the emulator needs from the configuration: the public halves of every key, and the
/// account's videos: the catalogue's (named by title, else alias; requiring signed URLs
/// unless listed in `unprotected`), then the demo's ([`demo_account_videos`]). The API's
/// access is not set: it is the account's, read once at start.
pub fn emulator_settings(
    settings: &Settings,
    keys: &[Arc<SigningKey>],
    options: &EmulatorOptions,
) -> EmulatorSettings {
    let mut videos: Vec<AccountVideo> = settings
        .catalogue
        .videos()
        .map(|video| {
            let uid = video.uid.as_str().to_string();
            AccountVideo {
                require_signed_urls: !options.unprotected.contains(&uid),
                ..AccountVideo::protected(
                    uid,
                    video
                        .title
                        .clone()
                        .unwrap_or_else(|| video.alias.to_string()),
                )
            }
        })
        .collect();
    for demo in demo_account_videos() {
        if !videos.iter().any(|video| video.uid == demo.uid) {
            videos.push(demo);
        }
    }
    EmulatorSettings {
        keys: keys
            .iter()
            .map(|key| VerifyingKeySpec::from(&**key))
            .collect(),
        video_uids: Vec::new(),
        videos,
        api: None,
        country_header: options.country_header.clone(),
        client_ip_header: options.client_ip_header.clone(),
        leeway: options.leeway,
    }
}

/// The settings a running process cannot change (listeners, connection limits, TLS, the
/// Stream origin): the name of each one `new` changes, in the configuration's own terms.
///
/// Every field of [`Settings`] is named here, so a new setting cannot be added without
/// deciding whether a reload applies it.
pub fn restart_only_changes(old: &Settings, new: &Settings) -> Vec<&'static str> {
    let Settings {
        // Applied on reload: each is read from the snapshot or built into it.
        file: _,
        signing_keys: _,
        default_token: _,
        min_remaining: _,
        nbf_backdate: _,
        cache_capacity: _,
        max_signing_in_flight: _,
        sign_on_workers: _,
        catalogue: _,
        identity: _,
        policy: _,
        upstream: _,
        request_timeout: _,
        max_body_bytes: _,
        rate_limit: _,
        access_log: _,
        metrics_public: _,
        demo_page: _,
        cors: _,
        token_api: _,
        allow_empty_policy: _,
        warnings: _,
        // Fixed at start: listeners and what each connection is served with; the emulator's
        // account id and API token (read once); the audit trail's file (opened once, so no
        // event is lost between two files).
        audit_trail,
        listen,
        stream,
        cloudflare,
        tls,
        limits,
        metrics_listen,
    } = new;
    let mut changed = Vec::new();
    let mut check = |differs: bool, field: &'static str| {
        if differs {
            changed.push(field);
        }
    };
    check(*listen != old.listen, "listen");
    check(*stream != old.stream, "stream");
    check(*cloudflare != old.cloudflare, "cloudflare");
    check(*tls != old.tls, "tls");
    check(*metrics_listen != old.metrics_listen, "metrics_listen");
    check(*audit_trail != old.audit_trail, "audit_trail");
    let crate::http::server::Limits {
        header_read_timeout,
        idle_timeout,
        max_header_bytes,
        h2_max_concurrent_streams,
        max_connections,
        shutdown_drain,
        shutdown_deadline,
        tls_handshake_timeout,
    } = limits;
    let was = &old.limits;
    check(
        *header_read_timeout != was.header_read_timeout,
        "limits.header_read_timeout",
    );
    check(*idle_timeout != was.idle_timeout, "limits.idle_timeout");
    check(
        *max_header_bytes != was.max_header_bytes,
        "limits.max_header_bytes",
    );
    check(
        *h2_max_concurrent_streams != was.h2_max_concurrent_streams,
        "limits.h2_max_concurrent_streams",
    );
    check(
        *max_connections != was.max_connections,
        "limits.max_connections",
    );
    check(
        *shutdown_drain != was.shutdown_drain,
        "limits.shutdown_drain",
    );
    check(
        *shutdown_deadline != was.shutdown_deadline,
        "limits.shutdown_deadline",
    );
    check(
        *tls_handshake_timeout != was.tls_handshake_timeout,
        "limits.tls_handshake_timeout",
    );
    changed
}

/// `new` with every restart-only setting put back to the running value, so that the snapshot
/// describes what actually serves.
pub fn keep_restart_settings(old: &Settings, mut new: Settings) -> Settings {
    new.listen = old.listen;
    new.stream = old.stream.clone();
    new.cloudflare = old.cloudflare.clone();
    new.tls = old.tls.clone();
    new.metrics_listen = old.metrics_listen;
    new.audit_trail = old.audit_trail.clone();
    new.limits = old.limits.clone();
    new
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
stream:
  origin: https://customer-abc.cloudflarestream.com
signing_keys:
  - id: 0123456789abcdef0123456789abcdef
    file: key.pem
videos: {}
rules: []
"#;

    fn settings(extra: &str) -> Settings {
        Settings::from_yaml(
            &format!("{BASE}{extra}"),
            "config.yaml",
            std::path::Path::new("."),
        )
        .unwrap()
    }

    #[test]
    fn connection_limits_and_listeners_need_a_restart_and_the_rest_does_not() {
        let old = settings("");
        let new = settings(
            "listen: 127.0.0.1:9999\nmetrics_listen: 127.0.0.1:9100\nlimits:\n  max_connections: 5\n  header_read_timeout: 2s\n  request_timeout: 3s\n  max_body_bytes: 10\nlog:\n  access: false\n",
        );
        assert_eq!(
            restart_only_changes(&old, &new),
            [
                "listen",
                "metrics_listen",
                "limits.header_read_timeout",
                "limits.max_connections"
            ]
        );
        let kept = keep_restart_settings(&old, new);
        assert_eq!(kept.listen, old.listen);
        assert_eq!(kept.limits, old.limits);
        assert_eq!(kept.metrics_listen, None);
        // Applied by the reload.
        assert_eq!(kept.request_timeout, std::time::Duration::from_secs(3));
        assert_eq!(kept.max_body_bytes, 10);
        assert!(!kept.access_log);
    }
}
