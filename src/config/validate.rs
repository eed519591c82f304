//! Validation: from the raw YAML structures to [`Settings`], collecting every error with the
//! file, line and field it concerns.

use std::collections::HashMap;
use std::net::SocketAddr;

use http::HeaderName;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::raw::{self, RawConfig, RawKey};
use super::*;
use crate::authz::catalogue::{Catalogue, Video, is_valid_alias};
use crate::http::tls::TlsFiles;
use crate::token::claims::{AccessRule, MAX_ACCESS_RULES};
use crate::token::{TokenSettings, VideoUid};

pub(super) struct Checker<'a> {
    pub(super) file: &'a str,
    pub(super) source: &'a str,
    pub(super) errors: Vec<ConfigError>,
}

impl Checker<'_> {
    pub(super) fn error(&mut self, path: &[Seg], message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.file.to_string(),
            position: locate(self.source, path),
            field: display_path(path),
            message: message.into(),
        });
    }

    pub(super) fn position(&self, path: &[Seg]) -> Option<(usize, usize)> {
        locate(self.source, path)
    }
}

pub(super) fn key(name: &str) -> Seg {
    Seg::key(name)
}

pub(super) fn validate(mut raw: RawConfig, check: &mut Checker<'_>, base_dir: &Path) -> Settings {
    let mut warnings = Vec::new();
    let unprotected = raw
        .stream
        .emulator
        .as_mut()
        .map(|emulator| std::mem::take(&mut emulator.unprotected))
        .unwrap_or_default();
    let mut stream = validate_stream(raw.stream, check);
    let is_emulated = matches!(stream, Some(StreamSettings::Emulator(_)));
    let signing_keys = validate_keys(&raw.signing_keys, is_emulated, check, base_dir);

    let min_remaining = raw.token.min_remaining.0;
    let ttl = raw.token.ttl.0;
    if min_remaining >= ttl {
        check.error(
            &[key("token"), key("min_remaining")],
            "must be less than token.ttl, or no token could ever be reused",
        );
    }
    check_access_rules(
        &raw.token.access_rules,
        &[key("token"), key("access_rules")],
        check,
    );
    let defaults = policy::TokenDefaults::from_raw(&raw.token);
    let default_token = Arc::new(TokenSettings {
        ttl,
        downloadable: raw.token.downloadable,
        access_rules: Arc::from(raw.token.access_rules),
        not_after: None,
    });

    if raw.cache.capacity == 0 {
        check.error(&[key("cache"), key("capacity")], "must be at least 1");
    }
    if raw.signing.max_in_flight == 0 {
        check.error(
            &[key("signing"), key("max_in_flight")],
            "must be at least 1",
        );
    }

    let catalogue = build_catalogue(raw.videos.0, check);
    if let Some(StreamSettings::Emulator(options)) = &mut stream {
        options.unprotected = resolve_unprotected(&unprotected, &catalogue, check);
    }
    let identity = identity::validate_identity(
        identity::RawIdentity {
            api_keys: raw.api_keys,
            users: raw.users.0,
            issuers: raw.jwt_issuers,
            auth: raw.auth,
            trusted_proxies: raw.trusted_proxies,
            client_address: raw.client_address,
        },
        check,
        base_dir,
    );
    let mode = policy::mode_of(raw.mode);
    let policy = policy::build_policy(
        raw.rules,
        &catalogue,
        &identity,
        &defaults,
        mode,
        check,
        &mut warnings,
    );
    let upstream = validate_upstream(&raw.upstream, check, base_dir);
    let limits = validate_limits(&raw.limits, check);
    if raw.rate_limit.max_keys == 0 {
        check.error(&[key("rate_limit"), key("max_keys")], "must be at least 1");
    }
    let rate_limit = RateLimitSettings {
        per_subject: validate_rate(raw.rate_limit.per_subject, "per_subject", check),
        per_address: validate_rate(raw.rate_limit.per_address, "per_address", check),
        max_keys: raw.rate_limit.max_keys,
    };
    if check.errors.is_empty() {
        warnings.extend(lint(&policy, &catalogue));
    }

    let cors = validate_cors(raw.cors, check);
    let token_api = validate_token_api(raw.token_api, check);
    let audit_trail = raw
        .audit_trail
        .and_then(|raw| validate_audit_trail(raw, check, base_dir));
    let cloudflare = validate_cloudflare(raw.cloudflare, check, base_dir);
    let tls = validate_tls(
        raw.tls,
        raw.http_redirect_listen,
        raw.listen,
        check,
        base_dir,
    );
    Settings {
        file: check.file.to_string(),
        listen: raw.listen,
        stream: stream.unwrap_or_else(|| StreamSettings::Origin(String::new())),
        signing_keys,
        default_token,
        min_remaining,
        nbf_backdate: raw.token.nbf_backdate.0,
        cache_capacity: raw.cache.capacity,
        max_signing_in_flight: raw.signing.max_in_flight,
        sign_on_workers: raw.signing.on_workers,
        catalogue: Arc::new(catalogue),
        identity,
        policy: Arc::new(policy),
        tls,
        upstream,
        limits,
        request_timeout: raw.limits.request_timeout.0,
        max_body_bytes: raw.limits.max_body_bytes,
        rate_limit,
        access_log: raw.log.access,
        metrics_listen: raw.metrics_listen,
        metrics_public: raw.metrics_public,
        demo_page: raw.demo_page,
        cors,
        token_api,
        audit_trail,
        cloudflare,
        allow_empty_policy: raw.allow_empty_policy,
        warnings,
    }
}

pub(super) fn validate_stream(
    raw: raw::RawStream,
    check: &mut Checker<'_>,
) -> Option<StreamSettings> {
    let path = [key("stream")];
    let chosen = [
        raw.customer_code.is_some(),
        raw.origin.is_some(),
        raw.emulator.is_some(),
    ];
    if chosen.iter().filter(|set| **set).count() != 1 {
        check.error(
            &path,
            "set exactly one of `customer_code`, `origin` or `emulator`",
        );
        return None;
    }
    if let Some(code) = raw.customer_code {
        if code.is_empty()
            || !code
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            check.error(
                &[key("stream"), key("customer_code")],
                "a customer code is lowercase letters and digits, as in customer-<code>.cloudflarestream.com",
            );
            return None;
        }
        return Some(StreamSettings::Origin(format!(
            "https://customer-{code}.cloudflarestream.com"
        )));
    }
    if let Some(origin) = raw.origin {
        return match parse_origin(&origin) {
            Ok(origin) => Some(StreamSettings::Origin(origin)),
            Err(message) => {
                check.error(&[key("stream"), key("origin")], message);
                None
            }
        };
    }
    let emulator = raw.emulator?;
    let mut header = |name: &str, field: &str| match HeaderName::try_from(name) {
        Ok(header) => Some(header),
        Err(_) => {
            check.error(
                &[key("stream"), key("emulator"), key(field)],
                "not a valid header name",
            );
            None
        }
    };
    if emulator.leeway.0 > MAX_EMULATOR_LEEWAY {
        check.error(
            &[key("stream"), key("emulator"), key("leeway")],
            format!(
                "at most {}: Stream tolerates only a few seconds of clock skew",
                human_duration(MAX_EMULATOR_LEEWAY)
            ),
        );
        return None;
    }
    let country_header = header(&emulator.country_header, "country_header")?;
    let client_ip_header = match emulator.client_ip_header {
        Some(name) => Some(header(&name, "client_ip_header")?),
        None => None,
    };
    Some(StreamSettings::Emulator(EmulatorOptions {
        listen: emulator.listen,
        country_header,
        client_ip_header,
        leeway: emulator.leeway.0,
        // Resolved once the catalogue is known.
        unprotected: Vec::new(),
    }))
}

/// `stream.emulator.unprotected`: each entry a catalogue alias or uid, as uids (in order,
/// without repeats).
fn resolve_unprotected(
    entries: &[String],
    catalogue: &Catalogue,
    check: &mut Checker<'_>,
) -> Vec<String> {
    let mut uids: Vec<String> = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let video = catalogue
            .videos()
            .find(|video| &*video.alias == entry.as_str() || video.uid.as_str() == entry);
        match video {
            Some(video) => {
                let uid = video.uid.as_str().to_string();
                if !uids.contains(&uid) {
                    uids.push(uid);
                }
            }
            None => check.error(
                &[
                    key("stream"),
                    key("emulator"),
                    key("unprotected"),
                    Seg::Index(i),
                ],
                "not an alias or uid of `videos:`",
            ),
        }
    }
    uids
}

/// `cloudflare`: the account id (32 hex), where the API token is read from, the API's base
/// URL and the audit interval.
pub(super) fn validate_cloudflare(
    raw: raw::RawCloudflare,
    check: &mut Checker<'_>,
    base_dir: &Path,
) -> CloudflareSettings {
    let at = |field: &str| [key("cloudflare"), key(field)];
    let account_id = raw.account_id.and_then(|id| {
        if is_account_id(&id) {
            Some(id.to_ascii_lowercase())
        } else {
            check.error(
                &at("account_id"),
                "a Cloudflare account id is 32 hex characters",
            );
            None
        }
    });
    let api_token = raw
        .api_token
        .and_then(|token| match (token.file, token.env) {
            (Some(file), None) => Some(KeyLocation::File(base_dir.join(file))),
            (None, Some(env)) if !env.is_empty() => Some(KeyLocation::Env(env)),
            _ => {
                check.error(
                    &at("api_token"),
                    "set exactly one of `file` or `env` (secrets are never inline)",
                );
                None
            }
        });
    let api_base = raw.api_base.and_then(|base| match parse_api_base(&base) {
        Some(base) => Some(base),
        None => {
            check.error(
                &at("api_base"),
                "must be an http or https URL such as https://api.cloudflare.com/client/v4 (no query)",
            );
            None
        }
    });
    let audit_interval = raw.audit_interval.map(|interval| interval.0);
    if audit_interval.is_some_and(|interval| interval < Duration::from_secs(1)) {
        check.error(&at("audit_interval"), "must be at least 1s");
    }
    CloudflareSettings {
        account_id,
        api_token,
        api_base,
        audit_interval,
    }
}

/// An absolute `http`/`https` URL with a host and no query or fragment, without its
/// trailing slash.
fn parse_api_base(base: &str) -> Option<String> {
    let uri: http::Uri = base.parse().ok()?;
    let scheme_ok = matches!(uri.scheme_str(), Some("https" | "http"));
    let host_ok = uri
        .authority()
        .is_some_and(|authority| !authority.host().is_empty() && !authority.as_str().contains('@'));
    if !scheme_ok || !host_ok || uri.query().is_some() || base.contains('#') {
        return None;
    }
    Some(base.trim_end_matches('/').to_string())
}

pub(super) fn validate_limits(
    raw: &raw::RawLimits,
    check: &mut Checker<'_>,
) -> crate::http::server::Limits {
    let at = |field: &str| [key("limits"), key(field)];
    for (field, value) in [
        ("header_read_timeout", raw.header_read_timeout.0),
        ("idle_timeout", raw.idle_timeout.0),
        ("request_timeout", raw.request_timeout.0),
    ] {
        if value < Duration::from_millis(100) {
            check.error(&at(field), "must be at least 100ms");
        }
    }
    if raw.max_header_bytes < 8192 {
        check.error(
            &at("max_header_bytes"),
            "must be at least 8192 (hyper's smallest buffer)",
        );
    }
    for (field, value) in [
        ("max_connections", raw.max_connections),
        ("max_body_bytes", raw.max_body_bytes),
        (
            "h2_max_concurrent_streams",
            raw.h2_max_concurrent_streams as usize,
        ),
    ] {
        if value == 0 {
            check.error(&at(field), "must be at least 1");
        }
    }
    crate::http::server::Limits {
        header_read_timeout: raw.header_read_timeout.0,
        idle_timeout: raw.idle_timeout.0,
        max_header_bytes: raw.max_header_bytes,
        h2_max_concurrent_streams: raw.h2_max_concurrent_streams,
        max_connections: raw.max_connections,
        shutdown_drain: raw.shutdown_drain.0,
        shutdown_deadline: raw.shutdown_deadline.0,
        ..crate::http::server::Limits::default()
    }
}

pub(super) fn validate_cors(raw: raw::RawCors, check: &mut Checker<'_>) -> CorsSettings {
    let mut allowed_origins: Vec<String> = Vec::new();
    for (i, origin) in raw.allowed_origins.iter().enumerate() {
        let path = [key("cors"), key("allowed_origins"), Seg::Index(i)];
        if origin == "*" {
            check.error(
                &path,
                "`*` is not allowed: credentials are sent only to listed origins; list each site",
            );
            continue;
        }
        match parse_origin(origin) {
            Ok(parsed) if parsed == *origin || parsed == origin.trim_end_matches('/') => {
                let parsed = parsed.to_ascii_lowercase();
                if !allowed_origins.contains(&parsed) {
                    allowed_origins.push(parsed);
                }
            }
            _ => check.error(
                &path,
                "not an origin like https://www.example.com (scheme and host, optional port, no path)",
            ),
        }
    }
    if raw.max_age.0 > Duration::from_secs(24 * 60 * 60) {
        check.error(
            &[key("cors"), key("max_age")],
            "at most 24h (browsers cap it lower anyway)",
        );
    }
    CorsSettings {
        allowed_origins,
        max_age: raw.max_age.0,
    }
}

pub(super) fn validate_token_api(
    raw: raw::RawTokenApi,
    check: &mut Checker<'_>,
) -> TokenApiSettings {
    let account_id = raw.account_id.and_then(|id| {
        if is_account_id(&id) {
            Some(id.to_ascii_lowercase())
        } else {
            check.error(
                &[key("token_api"), key("account_id")],
                "a Cloudflare account id is 32 hex characters",
            );
            None
        }
    });
    TokenApiSettings {
        enabled: raw.enabled,
        account_id,
    }
}

fn validate_audit_trail(
    raw: raw::RawAuditTrail,
    check: &mut Checker<'_>,
    base_dir: &Path,
) -> Option<crate::audit::AuditSink> {
    use crate::audit::AuditSink;
    if raw.max_file_bytes < 4096 {
        check.error(
            &[key("audit_trail"), key("max_file_bytes")],
            "must be at least 4096",
        );
    }
    match (raw.sink, raw.path) {
        (raw::RawAuditSink::Stderr, None) => Some(AuditSink::Stderr),
        (raw::RawAuditSink::Stderr, Some(_)) => {
            check.error(
                &[key("audit_trail"), key("path")],
                "is only for `sink: file`",
            );
            None
        }
        (raw::RawAuditSink::File, None) => {
            check.error(
                &[key("audit_trail"), key("path")],
                "is required with `sink: file`",
            );
            None
        }
        (raw::RawAuditSink::File, Some(path)) if path.is_empty() => {
            check.error(&[key("audit_trail"), key("path")], "must not be empty");
            None
        }
        (raw::RawAuditSink::File, Some(path)) => Some(AuditSink::File {
            path: base_dir.join(path),
            max_file_bytes: raw.max_file_bytes,
            keep_files: raw.keep_files,
        }),
    }
}

pub(super) fn validate_rate(
    raw: Option<raw::RawRate>,
    field: &str,
    check: &mut Checker<'_>,
) -> Option<Rate> {
    let raw = raw?;
    let per_second = std::num::NonZeroU32::new(raw.per_second);
    let burst = std::num::NonZeroU32::new(raw.burst.unwrap_or(raw.per_second));
    match (per_second, burst) {
        (Some(per_second), Some(burst)) => Some(Rate { per_second, burst }),
        _ => {
            check.error(
                &[key("rate_limit"), key(field)],
                "per_second and burst must be at least 1",
            );
            None
        }
    }
}

pub(super) fn validate_upstream(
    raw: &raw::RawUpstream,
    check: &mut Checker<'_>,
    base_dir: &Path,
) -> UpstreamSettings {
    for (field, value) in [
        ("connect_timeout", raw.connect_timeout.0),
        ("response_timeout", raw.response_timeout.0),
        ("idle_timeout", raw.idle_timeout.0),
    ] {
        if value < Duration::from_millis(100) {
            check.error(&[key("upstream"), key(field)], "must be at least 100ms");
        }
    }
    UpstreamSettings {
        connect_timeout: raw.connect_timeout.0,
        response_timeout: raw.response_timeout.0,
        idle_timeout: raw.idle_timeout.0,
        min_body_rate: raw.min_body_rate,
        ca_file: raw.ca_file.as_ref().map(|file| base_dir.join(file)),
    }
}

/// `scheme://host[:port]` with nothing after it; returned without a trailing slash.
pub(super) fn parse_origin(origin: &str) -> Result<String, String> {
    let uri: http::Uri = origin.parse().map_err(|_| "not a URL".to_string())?;
    let scheme_ok = matches!(uri.scheme_str(), Some("https" | "http"));
    let bare = matches!(uri.path(), "" | "/") && uri.query().is_none();
    match uri.authority() {
        Some(authority) if scheme_ok && bare => Ok(format!(
            "{}://{}",
            uri.scheme_str().unwrap_or("https"),
            authority
        )),
        _ => Err(
            "must be an origin like https://customer-abc123.cloudflarestream.com (no path)".into(),
        ),
    }
}

pub(super) fn validate_keys(
    raw: &[RawKey],
    is_emulated: bool,
    check: &mut Checker<'_>,
    base_dir: &Path,
) -> Vec<KeySource> {
    if raw.is_empty() {
        check.error(
            &[key("signing_keys")],
            "at least one signing key is required (Cloudflare's POST /stream/keys creates one)",
        );
    }
    let mut ids: HashMap<String, usize> = HashMap::new();
    let mut sources: Vec<KeySource> = Vec::new();
    if raw.iter().filter(|k| k.active).count() > 1 {
        check.error(
            &[key("signing_keys")],
            "mark at most one key `active: true` (the one new tokens are signed with)",
        );
    }
    for (i, entry) in raw.iter().enumerate() {
        let path = [key("signing_keys"), Seg::Index(i)];
        if let Some(id) = &entry.id {
            if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
                check.error(
                    &[key("signing_keys"), Seg::Index(i), key("id")],
                    "a key id is 32 hex characters",
                );
            } else if let Some(first) = ids.insert(id.to_ascii_lowercase(), i) {
                check.error(
                    &[key("signing_keys"), Seg::Index(i), key("id")],
                    format!("this key id is already listed at signing_keys[{first}]"),
                );
            }
        }
        let location = match (&entry.file, &entry.env) {
            (Some(file), None) => KeyLocation::File(base_dir.join(file)),
            (None, Some(env)) => KeyLocation::Env(env.clone()),
            _ => {
                check.error(
                    &path,
                    "set exactly one of `file` or `env` (keys are never inline)",
                );
                continue;
            }
        };
        if entry.generate_if_missing {
            if !matches!(location, KeyLocation::File(_)) {
                check.error(
                    &[
                        key("signing_keys"),
                        Seg::Index(i),
                        key("generate_if_missing"),
                    ],
                    "only a `file` key can be generated",
                );
            } else if !is_emulated {
                check.error(
                    &[key("signing_keys"), Seg::Index(i), key("generate_if_missing")],
                    "a generated key only works with `stream.emulator`: real Stream knows only keys it created",
                );
            }
        }
        sources.push(KeySource {
            id: entry.id.clone(),
            location,
            generate_if_missing: entry.generate_if_missing,
            active: entry.active,
            field: display_path(&path),
            position: check.position(&path),
        });
    }
    sources
}

pub(super) fn check_access_rules(rules: &[AccessRule], path: &[Seg], check: &mut Checker<'_>) {
    if rules.len() > MAX_ACCESS_RULES {
        check.error(
            path,
            format!(
                "{} access rules; Stream accepts at most {MAX_ACCESS_RULES} per token",
                rules.len()
            ),
        );
    }
    for (i, rule) in rules.iter().enumerate() {
        if let Err(message) = rule.validate() {
            let mut item = path.to_vec();
            item.push(Seg::Index(i));
            check.error(&item, message);
        }
    }
}

pub(super) fn build_catalogue(
    videos: Vec<(String, raw::RawVideo)>,
    check: &mut Checker<'_>,
) -> Catalogue {
    let mut catalogue = Catalogue::default();
    let mut aliases_by_uid: HashMap<VideoUid, String> = HashMap::new();
    for (alias, video) in videos {
        let path = [key("videos"), key(&alias)];
        if !is_valid_alias(&alias) {
            check.error(
                &path,
                "not a usable alias: 1-64 letters, digits, `.`, `_` or `-`, starting with a letter or digit, and not shaped like a uid",
            );
            continue;
        }
        if let Some(first) = aliases_by_uid.get(&video.uid) {
            check.error(
                &[key("videos"), key(&alias), key("uid")],
                format!("this uid is already listed, as videos.{first}"),
            );
            continue;
        }
        aliases_by_uid.insert(video.uid, alias.clone());
        catalogue.insert(Video {
            uid: video.uid,
            alias: alias.into(),
            tags: video.tags.into_iter().map(Arc::from).collect(),
            title: video.title,
        });
    }
    catalogue
}

pub(super) fn validate_tls(
    raw: Option<raw::RawTls>,
    http_redirect_listen: Option<SocketAddr>,
    listen: SocketAddr,
    check: &mut Checker<'_>,
    base_dir: &Path,
) -> Option<TlsSettings> {
    let Some(raw) = raw else {
        if http_redirect_listen.is_some() {
            check.error(
                &[key("http_redirect_listen")],
                "only valid with `tls`: it redirects plain HTTP to the HTTPS listener",
            );
        }
        return None;
    };
    if let Some(redirect) = http_redirect_listen
        && redirect == listen
        && redirect.port() != 0
    {
        check.error(
            &[key("http_redirect_listen")],
            "the same address as `listen`; the redirect needs its own port",
        );
    }
    for (name, path) in [("cert", &raw.cert), ("key", &raw.key)] {
        if path.as_os_str().is_empty() {
            check.error(&[key("tls"), key(name)], "must name a PEM file");
        }
    }
    Some(TlsSettings {
        files: TlsFiles {
            cert: base_dir.join(raw.cert),
            key: base_dir.join(raw.key),
        },
        http_redirect_listen,
        reload_interval: crate::http::tls::RELOAD_INTERVAL,
        positions: [
            check.position(&[key("tls")]),
            check.position(&[key("tls"), key("cert")]),
            check.position(&[key("tls"), key("key")]),
        ],
    })
}
