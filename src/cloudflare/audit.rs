//! The audit: does the account protect what the catalogue promises?
//!
//! For every catalogue video: it exists on the account and is ready; `requireSignedURLs` is
//! true (if not, anyone who learns the uid plays it: **critical**); `allowedOrigins`, when
//! not empty, lets the configuration's embedding origins (`cors.allowed_origins`,
//! `auth.public_url`) embed it. For every configured key: it exists on the account (a token
//! signed with a key Stream does not know is refused).
//!
//! [`audit`] is pure; [`run`] fetches what it needs first.

use std::collections::HashMap;

use serde::Serialize;

use super::api::{AccountKey, AccountVideo, ApiError, StreamApi};
use crate::config::Settings;
use crate::untrusted::Untrusted;

/// How bad a finding is. Ordered from worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Publicly playable: the gateway's policy protects nothing.
    Critical,
    /// Playback through the gateway fails.
    Error,
    /// Worth a look; nothing is exposed or broken yet.
    Warning,
}

impl Severity {
    pub fn label(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

/// What a finding is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// `requireSignedURLs` is false.
    Unprotected,
    /// A catalogue video the account does not have.
    VideoMissing,
    /// A catalogue video that cannot be played yet (or failed processing).
    NotReady,
    /// `allowedOrigins` leaves out an origin the configuration embeds from.
    OriginsMismatch,
    /// A configured signing key the account does not have.
    KeyMissing,
}

/// One problem found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub severity: Severity,
    pub kind: FindingKind,
    /// The catalogue alias, for video findings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub video: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    pub message: String,
}

/// Exit status of `stream audit`: no critical or error finding (warnings allowed).
pub const EXIT_CLEAN: u8 = 0;
/// Exit status of `stream audit`: the audit could not run (configuration, API failure).
pub const EXIT_FAILED: u8 = 1;
/// Exit status of `stream audit`: at least one critical finding (a publicly playable video).
pub const EXIT_CRITICAL: u8 = 2;
/// Exit status of `stream audit`: errors (missing videos or keys, origins) but nothing critical.
pub const EXIT_ERRORS: u8 = 3;

/// The outcome of one audit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AuditReport {
    pub videos_checked: usize,
    pub keys_checked: usize,
    /// Worst first, then in catalogue order.
    pub findings: Vec<Finding>,
}

impl AuditReport {
    pub fn count(&self, severity: Severity) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity == severity)
            .count()
    }

    /// Catalogue videos that play without a token: `(alias, uid)`.
    pub fn unprotected(&self) -> Vec<(&str, &str)> {
        self.findings
            .iter()
            .filter(|f| f.kind == FindingKind::Unprotected)
            .filter_map(|f| Some((f.video.as_deref()?, f.uid.as_deref()?)))
            .collect()
    }

    /// [`EXIT_CRITICAL`], [`EXIT_ERRORS`] or [`EXIT_CLEAN`].
    pub fn exit_code(&self) -> u8 {
        if self.count(Severity::Critical) > 0 {
            EXIT_CRITICAL
        } else if self.count(Severity::Error) > 0 {
            EXIT_ERRORS
        } else {
            EXIT_CLEAN
        }
    }
}

/// What the configuration says the account must provide.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditInput {
    /// `(alias, uid)` of every catalogue video, in catalogue order.
    pub videos: Vec<(String, String)>,
    /// Configured signing key ids, the signing one first.
    pub key_ids: Vec<String>,
    /// Origins whose pages embed the player: `cors.allowed_origins` and `auth.public_url`.
    pub embedding_origins: Vec<String>,
}

impl AuditInput {
    /// The catalogue and embedding origins of `settings`, with the configured `key_ids`.
    pub fn from_settings(settings: &Settings, key_ids: Vec<String>) -> Self {
        let videos = settings
            .catalogue
            .videos()
            .map(|video| (video.alias.to_string(), video.uid.to_string()))
            .collect();
        let mut embedding_origins = settings.cors.allowed_origins.clone();
        if let Some(public) = &settings.identity.public_url {
            let origin = origin_of(public);
            if !embedding_origins.contains(&origin) {
                embedding_origins.push(origin);
            }
        }
        Self {
            videos,
            key_ids,
            embedding_origins,
        }
    }
}

/// Fetch the account's keys and videos and audit them against `input`.
pub async fn run(api: &StreamApi, input: &AuditInput) -> Result<AuditReport, ApiError> {
    let keys = api.list_keys().await?;
    let videos = api.list_videos().await?;
    Ok(audit(input, &videos, &keys))
}

/// Compare what the configuration needs with what the account has.
pub fn audit(input: &AuditInput, videos: &[AccountVideo], keys: &[AccountKey]) -> AuditReport {
    let by_uid: HashMap<String, &AccountVideo> = videos
        .iter()
        .map(|video| (video.uid.to_ascii_lowercase(), video))
        .collect();
    let mut findings = Vec::new();
    for (alias, uid) in &input.videos {
        let finding = |severity, kind, message: String| Finding {
            severity,
            kind,
            video: Some(alias.clone()),
            uid: Some(uid.clone()),
            key_id: None,
            message,
        };
        let Some(video) = by_uid.get(uid) else {
            findings.push(finding(
                Severity::Error,
                FindingKind::VideoMissing,
                "not on the account: /watch answers with Stream's 404".into(),
            ));
            continue;
        };
        if !video.requires_signed_urls() {
            findings.push(finding(
                Severity::Critical,
                FindingKind::Unprotected,
                "requireSignedURLs is false: anyone who learns the uid plays it, whatever the policy says"
                    .into(),
            ));
        }
        if !video.is_ready() {
            let state = video.state().unwrap_or("unknown");
            let severity = if state == "error" {
                Severity::Error
            } else {
                Severity::Warning
            };
            findings.push(finding(
                severity,
                FindingKind::NotReady,
                format!(
                    "not ready to stream (state {})",
                    Untrusted::limited(state, 32)
                ),
            ));
        }
        let allowed = video.allowed_origins();
        if !allowed.is_empty() {
            let refused: Vec<&str> = input
                .embedding_origins
                .iter()
                .filter(|origin| !allowed.iter().any(|entry| allows(entry, origin)))
                .map(String::as_str)
                .collect();
            if !refused.is_empty() {
                let listed: Vec<String> = allowed
                    .iter()
                    .take(8)
                    .map(|entry| Untrusted::limited(entry, 64).to_string())
                    .collect();
                findings.push(finding(
                    Severity::Error,
                    FindingKind::OriginsMismatch,
                    format!(
                        "allowedOrigins [{}] does not let {} embed it",
                        listed.join(", "),
                        refused.join(", ")
                    ),
                ));
            }
        }
    }
    for key_id in &input.key_ids {
        if !keys.iter().any(|key| key.id.eq_ignore_ascii_case(key_id)) {
            findings.push(Finding {
                severity: Severity::Error,
                kind: FindingKind::KeyMissing,
                video: None,
                uid: None,
                key_id: Some(key_id.clone()),
                message: "configured, but not on the account: Stream refuses every token it signs"
                    .into(),
            });
        }
    }
    // Stable: catalogue order within a severity.
    findings.sort_by_key(|finding| finding.severity);
    AuditReport {
        videos_checked: input.videos.len(),
        keys_checked: input.key_ids.len(),
        findings,
    }
}

/// `scheme://host[:port]` of a URL (its path dropped).
fn origin_of(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("https", url));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    format!("{}://{}", scheme, authority).to_ascii_lowercase()
}

/// The host and port (explicit or the scheme's) of an origin such as `https://a.example:8443`.
fn host_and_port(origin: &str) -> (String, Option<u16>) {
    let (scheme, authority) = origin.split_once("://").unwrap_or(("https", origin));
    let authority = authority.split('/').next().unwrap_or_default();
    let (host, port) = split_port(authority);
    let port = port.or(match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    });
    (host.to_ascii_lowercase(), port)
}

/// `host` and `port` of `host[:port]` (`[v6]:port` too).
fn split_port(authority: &str) -> (&str, Option<u16>) {
    if let Some((host, after)) = authority
        .strip_prefix('[')
        .and_then(|rest| rest.split_once(']'))
    {
        return (host, after.strip_prefix(':').and_then(|p| p.parse().ok()));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => match port.parse() {
            Ok(port) => (host, Some(port)),
            Err(_) => (authority, None),
        },
        _ => (authority, None),
    }
}

/// Whether an `allowedOrigins` entry (`example.com`, `*.example.com`, `localhost:8080`) lets
/// pages from `origin` embed the video. A wildcard does not cover the bare domain, and an
/// entry with a port covers only that port.
pub fn allows(entry: &str, origin: &str) -> bool {
    let entry = entry.trim().to_ascii_lowercase();
    if entry == "*" {
        return true;
    }
    // An entry written as an origin is read as its host.
    let entry = entry
        .split_once("://")
        .map_or(entry.as_str(), |(_, rest)| rest)
        .trim_end_matches('/');
    let (entry_host, entry_port) = split_port(entry);
    let (host, port) = host_and_port(origin);
    if entry_port.is_some() && entry_port != port {
        return false;
    }
    match entry_host.strip_prefix("*.") {
        Some(domain) => host
            .strip_suffix(domain)
            .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
        None => host == entry_host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "ce800be43a9772f4bb02f35b860fb516";
    const B: &str = "5d5bc37ffcf54c9b82e996823bffbb81";
    const C: &str = "8f2c6a04b7d94e1fa3c5d6e7f8091a2b";
    const KEY: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f9";

    fn video(uid: &str, signed: bool, origins: &[&str], ready: bool) -> AccountVideo {
        serde_json::from_value(serde_json::json!({
            "uid": uid,
            "created": "2026-01-01T00:00:00Z",
            "requireSignedURLs": signed,
            "allowedOrigins": origins,
            "readyToStream": ready,
            "status": {"state": if ready { "ready" } else { "inprogress" }},
        }))
        .unwrap()
    }

    fn input() -> AuditInput {
        AuditInput {
            videos: vec![
                ("intro".into(), A.into()),
                ("keynote".into(), B.into()),
                ("gone".into(), C.into()),
            ],
            key_ids: vec![KEY.into()],
            embedding_origins: vec!["https://www.example.com".into()],
        }
    }

    #[test]
    fn an_unprotected_video_is_critical_and_sorted_first() {
        let videos = [video(A, true, &[], true), video(B, false, &[], false)];
        let keys = [AccountKey {
            id: KEY.into(),
            created: None,
        }];
        let report = audit(&input(), &videos, &keys);
        let kinds: Vec<_> = report.findings.iter().map(|f| f.kind).collect();
        assert_eq!(
            kinds,
            [
                FindingKind::Unprotected,
                FindingKind::VideoMissing,
                FindingKind::NotReady
            ]
        );
        assert_eq!(report.unprotected(), [("keynote", B)]);
        assert_eq!(report.exit_code(), EXIT_CRITICAL);
    }

    #[test]
    fn a_missing_key_or_video_is_an_error_and_a_clean_account_exits_zero() {
        let videos = [video(A, true, &[], true), video(B, true, &[], true)];
        let mut input = input();
        input.videos.pop();
        assert_eq!(audit(&input, &videos, &[]).exit_code(), EXIT_ERRORS);
        let keys = [AccountKey {
            id: KEY.to_uppercase(),
            created: None,
        }];
        let report = audit(&input, &videos, &keys);
        assert!(report.findings.is_empty(), "{report:?}");
        assert_eq!(report.exit_code(), EXIT_CLEAN);
    }

    #[test]
    fn allowed_origins_must_cover_every_embedding_origin() {
        let keys = [AccountKey {
            id: KEY.into(),
            created: None,
        }];
        let mut input = input();
        input.videos.truncate(1);
        for (origins, ok) in [
            (&["www.example.com"][..], true),
            (&["*.example.com"][..], true),
            (&["example.com"][..], false),
            (&["other.example", "www.example.com"][..], true),
            (&["other.example"][..], false),
        ] {
            let report = audit(&input, &[video(A, true, origins, true)], &keys);
            assert_eq!(report.findings.is_empty(), ok, "{origins:?}: {report:?}");
        }
    }

    #[test]
    fn origin_entries_match_hosts_wildcards_and_ports() {
        assert!(allows("example.com", "https://example.com"));
        assert!(allows("EXAMPLE.com", "https://example.com:8443"));
        assert!(allows("*.example.com", "https://a.b.example.com"));
        assert!(!allows("*.example.com", "https://example.com"));
        assert!(!allows("*.example.com", "https://badexample.com"));
        assert!(allows("localhost:8080", "http://localhost:8080"));
        assert!(!allows("localhost:8080", "http://localhost:9090"));
        assert!(!allows("localhost:8080", "http://localhost"));
        assert!(allows("example.com:443", "https://example.com"));
        assert!(allows("*", "https://anything.example"));
        assert!(allows("[::1]:8080", "http://[::1]:8080"));
        assert!(!allows("", "https://example.com"));
        assert_eq!(
            origin_of("https://Videos.Example.com/watch/x?y"),
            "https://videos.example.com"
        );
    }
}
