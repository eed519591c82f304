//! The typed API client: one method per call, Cloudflare's envelope unwrapped, errors typed.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::config::is_account_id;
use crate::http::client::{HttpsClient, error_chain};
use crate::secret::{KeyLocation, Secret};
use crate::untrusted::Untrusted;

/// Where the API is unless `cloudflare.api_base` says otherwise.
pub const DEFAULT_API_BASE: &str = "https://api.cloudflare.com/client/v4";
/// The environment variable the account id is read from when the configuration has none.
pub const ACCOUNT_ID_ENV: &str = "CLOUDFLARE_ACCOUNT_ID";
/// The environment variable the API token is read from when the configuration has none.
pub const API_TOKEN_ENV: &str = "CLOUDFLARE_API_TOKEN";
/// Videos per listing page: the API's maximum.
pub const PAGE_LIMIT: usize = 1000;
/// How long one request may take, unless told otherwise.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest answer read (a page of 1000 videos is about 2 MB).
const MAX_BODY_BYTES: usize = 32 << 20;
/// At most this many listing pages (ten million videos): every loop is bounded.
const MAX_PAGES: usize = 10_000;
/// Cloudflare error entries kept in an error, and characters kept of each message.
const MAX_ERRORS: usize = 4;
const MESSAGE_CHARS: usize = 200;

/// How a rate-limited (429) request is retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// The longest wait accepted: an answer asking for more is given up on at once.
    pub max_wait: Duration,
    /// The wait when a 429 carries no usable `Retry-After` (doubled on each retry).
    pub default_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 3,
            max_wait: Duration::from_secs(60),
            default_wait: Duration::from_secs(2),
        }
    }
}

/// What the client needs: the account, the token, where the API is, and its limits.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// 32 hex characters, lowercase.
    pub account_id: String,
    pub api_token: Secret<String>,
    /// `https://api.cloudflare.com/client/v4` or another base, without a trailing slash.
    pub api_base: String,
    /// Each attempt's limit, from sending the request to the end of the answer.
    pub request_timeout: Duration,
    pub retry: RetryPolicy,
}

/// Why the account id, the token or the base URL could not be found. Never holds a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error(
        "no Cloudflare account id: set `cloudflare.account_id` in the configuration or the environment variable CLOUDFLARE_ACCOUNT_ID"
    )]
    NoAccountId,
    #[error("the Cloudflare account id ({from}) is not 32 hex characters")]
    BadAccountId { from: &'static str },
    #[error(
        "no Cloudflare API token: set `cloudflare.api_token` ({{file: PATH}} or {{env: NAME}}) or the environment variable CLOUDFLARE_API_TOKEN (never on the command line)"
    )]
    NoToken,
    #[error("cannot read the Cloudflare API token from {from}: {reason}")]
    TokenUnreadable { from: String, reason: String },
    #[error("`cloudflare.api_base` is not an http:// or https:// URL")]
    BadBase,
}

impl ApiSettings {
    /// Resolve the settings from what the configuration says (each may be absent) and the
    /// environment, read through `env`: the configuration's account id, else
    /// `CLOUDFLARE_ACCOUNT_ID`; the configuration's token source (a file or a named variable),
    /// else `CLOUDFLARE_API_TOKEN`; the configuration's base, else [`DEFAULT_API_BASE`].
    pub fn resolve(
        account_id: Option<&str>,
        api_token: Option<&KeyLocation>,
        api_base: Option<&str>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<ApiSettings, CredentialError> {
        let (account_id, from) = match account_id {
            Some(id) => (id.trim().to_string(), "cloudflare.account_id"),
            None => (
                env(ACCOUNT_ID_ENV)
                    .ok_or(CredentialError::NoAccountId)?
                    .trim()
                    .to_string(),
                ACCOUNT_ID_ENV,
            ),
        };
        if !is_account_id(&account_id) {
            return Err(CredentialError::BadAccountId { from });
        }
        let (token, from) = match api_token {
            Some(KeyLocation::File(path)) => (
                std::fs::read_to_string(path).map_err(|error| {
                    CredentialError::TokenUnreadable {
                        from: "the file named by `cloudflare.api_token.file`".into(),
                        reason: error.to_string(),
                    }
                })?,
                "the file named by `cloudflare.api_token.file`".to_string(),
            ),
            Some(KeyLocation::Env(name)) => (
                env(name).ok_or_else(|| CredentialError::TokenUnreadable {
                    from: "the variable named by `cloudflare.api_token.env`".into(),
                    reason: "it is not set".into(),
                })?,
                "the variable named by `cloudflare.api_token.env`".to_string(),
            ),
            None => (
                env(API_TOKEN_ENV).ok_or(CredentialError::NoToken)?,
                API_TOKEN_ENV.to_string(),
            ),
        };
        let token = token.trim().to_string();
        if token.is_empty() {
            return Err(CredentialError::TokenUnreadable {
                from,
                reason: "it is empty".into(),
            });
        }
        if HeaderValue::from_str(&format!("Bearer {token}")).is_err() {
            return Err(CredentialError::TokenUnreadable {
                from,
                reason: "it holds characters a header cannot carry".into(),
            });
        }
        let api_base = api_base
            .unwrap_or(DEFAULT_API_BASE)
            .trim()
            .trim_end_matches('/')
            .to_string();
        let parsed: http::Uri = api_base.parse().map_err(|_| CredentialError::BadBase)?;
        if !matches!(parsed.scheme_str(), Some("http" | "https")) || parsed.host().is_none() {
            return Err(CredentialError::BadBase);
        }
        Ok(ApiSettings {
            account_id: account_id.to_ascii_lowercase(),
            api_token: Secret::new(token),
            api_base,
            request_timeout: REQUEST_TIMEOUT,
            retry: RetryPolicy::default(),
        })
    }
}

/// One API call as errors name it: `GET /accounts/…/stream/keys` (the account id is left out
/// to keep messages short; it is in the configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub method: Method,
    /// The path after `/accounts/{account_id}`, e.g. `/stream/keys`.
    pub path: String,
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} /accounts/…{}", self.method, self.path)
    }
}

/// The `errors` Cloudflare sent with a failure, each message escaped and cut short.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CloudflareErrors(pub Vec<(i64, String)>);

impl CloudflareErrors {
    fn from_body(body: &[u8]) -> Self {
        #[derive(Deserialize)]
        struct Failure {
            #[serde(default)]
            errors: Vec<serde_json::Value>,
        }
        let Ok(failure) = serde_json::from_slice::<Failure>(body) else {
            return Self::default();
        };
        let errors = failure
            .errors
            .iter()
            .take(MAX_ERRORS)
            .map(|error| {
                let code = error.get("code").and_then(|c| c.as_i64()).unwrap_or(0);
                let message = error
                    .get("message")
                    .and_then(|m| m.as_str())
                    .unwrap_or("(no message)");
                (code, Untrusted::limited(message, MESSAGE_CHARS).to_string())
            })
            .collect();
        Self(errors)
    }
}

impl fmt::Display for CloudflareErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (code, message)) in self.0.iter().enumerate() {
            f.write_str(if i == 0 { ": " } else { "; " })?;
            write!(f, "error {code}: {message}")?;
        }
        Ok(())
    }
}

/// Why a call failed. Each names the call; none holds the token or a response body beyond
/// Cloudflare's own error codes and (escaped, clipped) messages.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    #[error(
        "{call}: the API token was refused ({status}){errors}; it needs the Stream Read permission (Stream Write to create or delete keys and edit videos) on this account"
    )]
    Unauthorized {
        call: Call,
        status: u16,
        errors: CloudflareErrors,
    },
    #[error("{call}: not found (404){errors}")]
    NotFound {
        call: Call,
        errors: CloudflareErrors,
    },
    #[error("{call}: rate limited (429) {attempts} times; gave up{errors}")]
    RateLimited {
        call: Call,
        attempts: u32,
        errors: CloudflareErrors,
    },
    #[error(
        "{call}: rate limited (429), and asked to wait {asked_secs}s, longer than the {max_secs}s this tool waits; try again later"
    )]
    WaitTooLong {
        call: Call,
        asked_secs: u64,
        max_secs: u64,
    },
    #[error("{call}: Cloudflare answered {status}{errors}")]
    Status {
        call: Call,
        status: u16,
        errors: CloudflareErrors,
    },
    #[error("{call}: Cloudflare answered success: false{errors}")]
    Unsuccessful {
        call: Call,
        errors: CloudflareErrors,
    },
    #[error("{call}: no answer within {}s", timeout.as_secs_f32())]
    Timeout { call: Call, timeout: Duration },
    #[error("{call}: cannot reach the API: {reason}")]
    Transport { call: Call, reason: String },
    #[error("{call}: the answer is not what the API documents: {reason}")]
    Malformed { call: Call, reason: String },
    #[error("{call}: {reason}")]
    Paging { call: Call, reason: String },
    #[error("{call}: not sent: a key id or video uid is 32 hex characters")]
    BadId { call: Call },
}

impl ApiError {
    /// The HTTP status Cloudflare answered with, when the failure is one.
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Unauthorized { status, .. } | ApiError::Status { status, .. } => {
                Some(*status)
            }
            ApiError::NotFound { .. } => Some(404),
            ApiError::RateLimited { .. } | ApiError::WaitTooLong { .. } => Some(429),
            _ => None,
        }
    }
}

/// A signing key on the account (no key material: the API never shows it again).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct AccountKey {
    pub id: String,
    #[serde(default)]
    pub created: Option<String>,
}

/// A key just created: its id and Cloudflare's whole answer, the only copy of the private key.
#[derive(Debug)]
pub struct CreatedKey {
    pub id: String,
    pub created: Option<String>,
    /// The JSON answer as sent (`{"result": {"id", "pem", "jwk", "created"}, ...}`), which the
    /// key loader reads as it is.
    pub answer: Secret<String>,
}

/// A video on the account, as much of it as the commands read. Missing fields take their
/// defaults (a video that says nothing about `requireSignedURLs` is treated as unprotected).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct AccountVideo {
    pub uid: String,
    #[serde(default)]
    pub meta: Option<serde_json::Value>,
    #[serde(default)]
    pub created: Option<String>,
    #[serde(default, rename = "readyToStream")]
    pub ready_to_stream: Option<bool>,
    #[serde(default)]
    pub status: Option<serde_json::Value>,
    #[serde(default, rename = "requireSignedURLs")]
    pub require_signed_urls: Option<bool>,
    #[serde(default, rename = "allowedOrigins")]
    pub allowed_origins: Option<Vec<String>>,
}

impl AccountVideo {
    /// `meta.name`, the display name.
    pub fn name(&self) -> Option<&str> {
        self.meta.as_ref()?.get("name")?.as_str()
    }

    /// When it was uploaded.
    pub fn created_at(&self) -> Option<SystemTime> {
        self.created.as_deref().and_then(super::time::parse)
    }

    /// `status.state`: `queued`, `inprogress`, `ready`, `error` …
    pub fn state(&self) -> Option<&str> {
        self.status.as_ref()?.get("state")?.as_str()
    }

    /// Whether it can be played now.
    pub fn is_ready(&self) -> bool {
        self.ready_to_stream.unwrap_or(false)
    }

    /// Whether only signed tokens play it.
    pub fn requires_signed_urls(&self) -> bool {
        self.require_signed_urls.unwrap_or(false)
    }

    /// The sites allowed to embed it (empty: any).
    pub fn allowed_origins(&self) -> &[String] {
        self.allowed_origins.as_deref().unwrap_or_default()
    }
}

/// The fields `POST /stream/{uid}` changes; the others are left as they are.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct VideoEdit {
    #[serde(rename = "requireSignedURLs", skip_serializing_if = "Option::is_none")]
    pub require_signed_urls: Option<bool>,
    #[serde(rename = "allowedOrigins", skip_serializing_if = "Option::is_none")]
    pub allowed_origins: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meta: Option<serde_json::Value>,
}

/// Told about waits (a 429 being retried): the CLI prints it on stderr, `serve` logs it.
pub type Notice = Arc<dyn Fn(&str) + Send + Sync>;

/// The Stream API for one account.
pub struct StreamApi {
    client: HttpsClient,
    settings: ApiSettings,
    notice: Notice,
}

impl fmt::Debug for StreamApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamApi")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Cloudflare's envelope around every answer.
#[derive(Deserialize)]
struct Envelope<T> {
    #[serde(default)]
    success: Option<bool>,
    result: Option<T>,
}

impl StreamApi {
    /// A client for `settings.account_id` through `client`; waits are reported to stderr.
    pub fn new(settings: ApiSettings, client: HttpsClient) -> Self {
        Self {
            client,
            settings,
            notice: Arc::new(|message| eprintln!("{message}")),
        }
    }

    /// Report waits to `notice` instead of stderr.
    pub fn with_notice(mut self, notice: Notice) -> Self {
        self.notice = notice;
        self
    }

    pub fn settings(&self) -> &ApiSettings {
        &self.settings
    }

    /// `POST /stream/keys`: a new signing key. `Ok` holds the only copy of its private key.
    pub async fn create_key(&self) -> Result<CreatedKey, ApiError> {
        #[derive(Deserialize)]
        struct Created {
            id: String,
            #[serde(default)]
            created: Option<String>,
            pem: Option<serde_json::Value>,
            jwk: Option<serde_json::Value>,
        }
        let call = self.call(Method::POST, "/stream/keys".into());
        let body = self
            .send(&call, None, Some(Bytes::from_static(b"{}")))
            .await?;
        let created: Created = unwrap_envelope(&call, &body)?;
        if created.pem.is_none() && created.jwk.is_none() {
            return Err(ApiError::Malformed {
                call,
                reason: "the new key has neither `pem` nor `jwk`".into(),
            });
        }
        let answer = String::from_utf8(body.to_vec()).map_err(|_| ApiError::Malformed {
            call: call.clone(),
            reason: "the answer is not UTF-8".into(),
        })?;
        Ok(CreatedKey {
            id: created.id,
            created: created.created,
            answer: Secret::new(answer),
        })
    }

    /// `GET /stream/keys`: the account's signing keys.
    pub async fn list_keys(&self) -> Result<Vec<AccountKey>, ApiError> {
        let call = self.call(Method::GET, "/stream/keys".into());
        let body = self.send(&call, None, None).await?;
        unwrap_envelope(&call, &body)
    }

    /// `DELETE /stream/keys/{id}`: delete a key, which **revokes every token signed with it**.
    pub async fn delete_key(&self, key_id: &str) -> Result<(), ApiError> {
        let call = self.call(Method::DELETE, format!("/stream/keys/{}", path_id(key_id)));
        check_id(&call, key_id)?;
        let body = self.send(&call, None, None).await?;
        unwrap_envelope::<serde_json::Value>(&call, &body).map(|_| ())
    }

    /// `GET /stream/{uid}`: one video.
    pub async fn video(&self, uid: &str) -> Result<AccountVideo, ApiError> {
        let call = self.call(Method::GET, format!("/stream/{}", path_id(uid)));
        check_id(&call, uid)?;
        let body = self.send(&call, None, None).await?;
        unwrap_envelope(&call, &body)
    }

    /// `POST /stream/{uid}`: change a video; `Ok` is the video as it now is.
    pub async fn edit_video(&self, uid: &str, edit: &VideoEdit) -> Result<AccountVideo, ApiError> {
        let call = self.call(Method::POST, format!("/stream/{}", path_id(uid)));
        check_id(&call, uid)?;
        let json = serde_json::to_vec(edit).map_err(|error| ApiError::Malformed {
            call: call.clone(),
            reason: error.to_string(),
        })?;
        let body = self.send(&call, None, Some(Bytes::from(json))).await?;
        unwrap_envelope(&call, &body)
    }

    /// `GET /stream?asc=true[&after=…]`: one page of videos, oldest first, created after
    /// `after` when given.
    pub async fn list_videos_page(
        &self,
        after: Option<SystemTime>,
    ) -> Result<Vec<AccountVideo>, ApiError> {
        let call = self.call(Method::GET, "/stream".into());
        let mut query = "asc=true".to_string();
        if let Some(after) = after {
            query.push_str("&after=");
            query.push_str(&super::time::format_nanos(after));
        }
        let body = self.send(&call, Some(&query), None).await?;
        unwrap_envelope(&call, &body)
    }

    /// Every video on the account, oldest first, each once.
    ///
    /// Pages by creation time: each request asks for videos created after the newest one seen
    /// less a microsecond, so a video sharing its creation time with the last one of a page
    /// is not skipped whether the API reads `after` as strict or not; the overlap is dropped
    /// by uid. It stops at the first page that brings nothing new, and fails rather than loop
    /// when more than a page of videos share one creation time.
    pub async fn list_videos(&self) -> Result<Vec<AccountVideo>, ApiError> {
        let call = self.call(Method::GET, "/stream".into());
        let mut seen: HashSet<String> = HashSet::new();
        let mut videos = Vec::new();
        let mut after: Option<SystemTime> = None;
        for _ in 0..MAX_PAGES {
            let page = self.list_videos_page(after).await?;
            let full = page.len() >= PAGE_LIMIT;
            let mut newest = after;
            let mut fresh = 0usize;
            for video in page {
                let created = video.created_at().ok_or_else(|| ApiError::Malformed {
                    call: call.clone(),
                    reason: format!(
                        "video {} has no usable `created` time",
                        Untrusted::limited(&video.uid, 64)
                    ),
                })?;
                newest = newest.max(Some(created));
                if seen.insert(video.uid.clone()) {
                    fresh += 1;
                    videos.push(video);
                }
            }
            if fresh == 0 {
                if full {
                    return Err(ApiError::Paging {
                        call,
                        reason: format!(
                            "more than {PAGE_LIMIT} videos share one creation time; they cannot be listed by time"
                        ),
                    });
                }
                videos.sort_by_key(|video| video.created_at());
                return Ok(videos);
            }
            after = newest.map(|newest| {
                newest
                    .checked_sub(Duration::from_micros(1))
                    .unwrap_or(newest)
            });
        }
        Err(ApiError::Paging {
            call,
            reason: format!("gave up after {MAX_PAGES} pages"),
        })
    }

    fn call(&self, method: Method, path: String) -> Call {
        Call { method, path }
    }

    /// Send one call (retrying 429s as the policy allows) and return a 2xx answer's body;
    /// any other status is an error.
    async fn send(
        &self,
        call: &Call,
        query: Option<&str>,
        body: Option<Bytes>,
    ) -> Result<Bytes, ApiError> {
        let retry = &self.settings.retry;
        let mut waited_default = retry.default_wait;
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let (status, headers, answer) = self.attempt(call, query, body.clone()).await?;
            if status == StatusCode::TOO_MANY_REQUESTS {
                if attempt > retry.max_retries {
                    return Err(ApiError::RateLimited {
                        call: call.clone(),
                        attempts: attempt,
                        errors: CloudflareErrors::from_body(&answer),
                    });
                }
                let wait = match retry_after(&headers, SystemTime::now()) {
                    Some(wait) => wait,
                    None => {
                        let wait = waited_default;
                        waited_default = waited_default.saturating_mul(2);
                        wait
                    }
                };
                if wait > retry.max_wait {
                    return Err(ApiError::WaitTooLong {
                        call: call.clone(),
                        asked_secs: wait.as_secs(),
                        max_secs: retry.max_wait.as_secs(),
                    });
                }
                (self.notice)(&format!(
                    "{call}: rate limited by Cloudflare (429); retrying in {}s (retry {attempt} of {})",
                    wait.as_secs_f32().ceil() as u64,
                    retry.max_retries
                ));
                tokio::time::sleep(wait).await;
                continue;
            }
            if status.is_success() {
                return Ok(answer);
            }
            let errors = CloudflareErrors::from_body(&answer);
            let call = call.clone();
            return Err(match status.as_u16() {
                401 | 403 => ApiError::Unauthorized {
                    call,
                    status: status.as_u16(),
                    errors,
                },
                404 => ApiError::NotFound { call, errors },
                status => ApiError::Status {
                    call,
                    status,
                    errors,
                },
            });
        }
    }

    /// One exchange, bounded by the request timeout.
    async fn attempt(
        &self,
        call: &Call,
        query: Option<&str>,
        body: Option<Bytes>,
    ) -> Result<(StatusCode, HeaderMap, Bytes), ApiError> {
        let mut uri = format!(
            "{}/accounts/{}{}",
            self.settings.api_base, self.settings.account_id, call.path
        );
        if let Some(query) = query {
            uri.push('?');
            uri.push_str(query);
        }
        let has_body = body.is_some();
        let mut request = Request::builder()
            .method(call.method.clone())
            .uri(uri)
            .header(http::header::ACCEPT, "application/json")
            .header(
                http::header::USER_AGENT,
                concat!("streamgate/", env!("CARGO_PKG_VERSION")),
            );
        if has_body {
            request = request.header(http::header::CONTENT_TYPE, "application/json");
        }
        let mut request = request
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|error| ApiError::Transport {
                call: call.clone(),
                reason: error.to_string(),
            })?;
        let mut authorization =
            HeaderValue::from_str(&format!("Bearer {}", self.settings.api_token.expose()))
                .map_err(|_| ApiError::Transport {
                    call: call.clone(),
                    reason: "the API token cannot be sent in a header".into(),
                })?;
        authorization.set_sensitive(true);
        request
            .headers_mut()
            .insert(http::header::AUTHORIZATION, authorization);

        let exchange = async {
            let response =
                self.client
                    .request(request)
                    .await
                    .map_err(|error| ApiError::Transport {
                        call: call.clone(),
                        reason: error_chain(&error),
                    })?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_BODY_BYTES)
                .collect()
                .await
                .map_err(|error| ApiError::Transport {
                    call: call.clone(),
                    reason: if error.is::<http_body_util::LengthLimitError>() {
                        format!("the answer is larger than {} MB", MAX_BODY_BYTES >> 20)
                    } else {
                        format!("the answer broke off: {error}")
                    },
                })?
                .to_bytes();
            Ok((parts.status, parts.headers, body))
        };
        let timeout = self.settings.request_timeout;
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or_else(|_| {
                Err(ApiError::Timeout {
                    call: call.clone(),
                    timeout,
                })
            })
    }
}

/// The `result` of a successful envelope.
fn unwrap_envelope<T: DeserializeOwned>(call: &Call, body: &[u8]) -> Result<T, ApiError> {
    let envelope: Envelope<T> =
        serde_json::from_slice(body).map_err(|error| ApiError::Malformed {
            call: call.clone(),
            // serde_json's category and place; never the answer's text.
            reason: format!(
                "{:?} error at line {} column {}",
                error.classify(),
                error.line(),
                error.column()
            ),
        })?;
    if envelope.success == Some(false) {
        return Err(ApiError::Unsuccessful {
            call: call.clone(),
            errors: CloudflareErrors::from_body(body),
        });
    }
    envelope.result.ok_or_else(|| ApiError::Malformed {
        call: call.clone(),
        reason: "no `result`".into(),
    })
}

/// A key id or video uid, refused before it reaches a path unless it is 32 hex characters.
fn check_id(call: &Call, id: &str) -> Result<(), ApiError> {
    if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(ApiError::BadId { call: call.clone() })
    }
}

/// What may be shown of an id in a call's name: itself when well formed, else a placeholder.
fn path_id(id: &str) -> String {
    if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        id.to_ascii_lowercase()
    } else {
        "<invalid id>".into()
    }
}

/// How long `Retry-After` asks to wait: delay-seconds, or an HTTP date (a past date is no
/// wait). `None` when absent or unreadable.
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        }
    }

    const ACCOUNT: &str = "023e105f4ecef8ad9ca31a8372d0c353";

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers, now), None);
        headers.insert("retry-after", HeaderValue::from_static("7"));
        assert_eq!(retry_after(&headers, now), Some(Duration::from_secs(7)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        headers.insert("retry-after", HeaderValue::from_str(&later).unwrap());
        assert_eq!(retry_after(&headers, now), Some(Duration::from_secs(30)));
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(30));
        headers.insert("retry-after", HeaderValue::from_str(&earlier).unwrap());
        assert_eq!(retry_after(&headers, now), Some(Duration::ZERO));
        headers.insert("retry-after", HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&headers, now), None);
        headers.insert("retry-after", HeaderValue::from_static("-3"));
        assert_eq!(retry_after(&headers, now), None);
    }

    #[test]
    fn settings_come_from_the_config_then_the_environment() {
        let env = env_of(&[
            ("CLOUDFLARE_ACCOUNT_ID", ACCOUNT),
            ("CLOUDFLARE_API_TOKEN", " env-token \n"),
            ("OTHER_TOKEN", "other-token"),
        ]);
        let settings = ApiSettings::resolve(None, None, None, &env).unwrap();
        assert_eq!(settings.account_id, ACCOUNT);
        assert_eq!(settings.api_token.expose(), "env-token");
        assert_eq!(settings.api_base, DEFAULT_API_BASE);
        assert_eq!(format!("{settings:?}").matches("env-token").count(), 0);

        let other = KeyLocation::Env("OTHER_TOKEN".into());
        let settings = ApiSettings::resolve(
            Some("023E105F4ECEF8AD9CA31A8372D0C353"),
            Some(&other),
            Some("http://127.0.0.1:8081/client/v4/"),
            &env,
        )
        .unwrap();
        assert_eq!(settings.account_id, ACCOUNT);
        assert_eq!(settings.api_token.expose(), "other-token");
        assert_eq!(settings.api_base, "http://127.0.0.1:8081/client/v4");
    }

    #[test]
    fn missing_or_bad_settings_are_named_without_their_values() {
        let none = env_of(&[]);
        assert_eq!(
            ApiSettings::resolve(None, None, None, &none).unwrap_err(),
            CredentialError::NoAccountId
        );
        assert_eq!(
            ApiSettings::resolve(Some(ACCOUNT), None, None, &none).unwrap_err(),
            CredentialError::NoToken
        );
        let error = ApiSettings::resolve(Some("not-an-account"), None, None, &none).unwrap_err();
        assert!(!error.to_string().contains("not-an-account"), "{error}");
        let env = env_of(&[("CLOUDFLARE_API_TOKEN", "bad\ntoken")]);
        let error = ApiSettings::resolve(Some(ACCOUNT), None, None, &env).unwrap_err();
        assert!(!error.to_string().contains("bad"), "{error}");
        let env = env_of(&[("CLOUDFLARE_API_TOKEN", "t")]);
        assert_eq!(
            ApiSettings::resolve(Some(ACCOUNT), None, Some("ftp://x"), &env).unwrap_err(),
            CredentialError::BadBase
        );
        let missing = KeyLocation::File("/nonexistent/streamgate-token".into());
        let error = ApiSettings::resolve(Some(ACCOUNT), Some(&missing), None, &env).unwrap_err();
        assert!(!error.to_string().contains("/nonexistent"), "{error}");
    }

    #[test]
    fn cloudflare_errors_are_escaped_clipped_and_counted() {
        let body = serde_json::json!({
            "success": false,
            "errors": [
                {"code": 10000, "message": "Authentication error\n\u{1b}[2Kforged"},
                {"code": 2, "message": "x".repeat(1000)},
                {"code": 3}, {"code": 4}, {"code": 5},
            ],
        })
        .to_string();
        let errors = CloudflareErrors::from_body(body.as_bytes());
        assert_eq!(errors.0.len(), MAX_ERRORS);
        let shown = errors.to_string();
        assert!(
            shown.starts_with(": error 10000: Authentication error\\n"),
            "{shown}"
        );
        assert!(!shown.contains(['\n', '\x1b']));
        assert!(shown.len() < 600, "{shown}");
        assert_eq!(CloudflareErrors::from_body(b"<html>").to_string(), "");
    }

    #[test]
    fn calls_are_named_without_the_account() {
        let call = Call {
            method: Method::GET,
            path: "/stream/keys".into(),
        };
        assert_eq!(call.to_string(), "GET /accounts/…/stream/keys");
        assert_eq!(path_id("../../x"), "<invalid id>");
    }
}
