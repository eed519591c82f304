//! The subset of Cloudflare's Stream management API the emulator answers, under `/client/v4`:
//!
//! | call | answer |
//! |---|---|
//! | `POST /accounts/{account_id}/stream/keys` | a new RSA-2048 key: `{"id", "pem", "jwk", "created"}` (the only time the private key is shown) |
//! | `GET /accounts/{account_id}/stream/keys` | `[{"id", "created"}]` |
//! | `DELETE /accounts/{account_id}/stream/keys/{key_id}` | `"ok"`; the key's tokens are refused from now on |
//! | `GET /accounts/{account_id}/stream` | videos, newest first (see [`ListQuery`]) |
//! | `GET /accounts/{account_id}/stream/{uid}` | one video |
//! | `POST /accounts/{account_id}/stream/{uid}` | edit `requireSignedURLs`, `allowedOrigins`, `meta`, `creator`; the video as edited |
//!
//! Every answer is Cloudflare's envelope, `{"success", "errors": [{"code", "message"}],
//! "messages", "result"}`. The token is checked first (401), then the route (404), then the
//! account (403).

use std::time::{Duration, SystemTime};

use aws_lc_rs::digest;
use bytes::Bytes;
use http::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use jsonwebtoken::DecodingKey;
use serde_json::{Map, Value, json};
use subtle::ConstantTimeEq;

use super::account::{
    AccountState, EmulatorAccount, VideoRecord, format_micros, parse_micros, unix_micros,
};
use super::content::{DOWNLOAD_LEN_BYTES, SEGMENT_DURATION_SECS, SEGMENTS_PER_RENDITION};
use super::origins;
use crate::Body;

/// Where the API's paths start.
pub const API_PREFIX: &str = "/client/v4";
/// The largest request body read.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// How long a request body may take to arrive.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// The most videos one list answer holds (Cloudflare's limit too).
pub const MAX_PAGE: usize = 1000;
/// The longest `creator` accepted (Cloudflare's limit).
const MAX_CREATOR_LEN: usize = 64;

/// Why an API request was refused: each maps to a status and a Cloudflare-style error code.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No `Authorization: Bearer`, a wrong token, or the API is disabled.
    #[error("Authentication error")]
    Unauthenticated,
    /// A good token, but not for this account.
    #[error("Authentication error")]
    WrongAccount,
    #[error("No route for that URI")]
    NoRoute,
    #[error("Method not allowed for this route")]
    MethodNotAllowed,
    #[error("video not found")]
    VideoNotFound,
    #[error("signing key not found")]
    KeyNotFound,
    /// Bad JSON, a field of the wrong type, a bad query parameter: the text says which.
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("request body larger than {MAX_BODY_BYTES} bytes")]
    PayloadTooLarge,
    #[error("request body not received in time")]
    BodyTimeout,
    #[error("an account holds at most {} signing keys", super::account::MAX_KEYS)]
    TooManyKeys,
    /// Our failure (key generation); the text names no internals.
    #[error("internal error")]
    Internal,
}

impl ApiError {
    /// The HTTP status and the code in the envelope's `errors`.
    pub fn status_and_code(&self) -> (StatusCode, u32) {
        match self {
            ApiError::Unauthenticated => (StatusCode::UNAUTHORIZED, 10000),
            ApiError::WrongAccount => (StatusCode::FORBIDDEN, 10000),
            ApiError::NoRoute => (StatusCode::NOT_FOUND, 7000),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, 7001),
            ApiError::VideoNotFound | ApiError::KeyNotFound => (StatusCode::NOT_FOUND, 10005),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, 10002),
            ApiError::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, 10002),
            ApiError::BodyTimeout => (StatusCode::REQUEST_TIMEOUT, 10002),
            ApiError::TooManyKeys => (StatusCode::BAD_REQUEST, 10011),
            ApiError::Internal => (StatusCode::INTERNAL_SERVER_ERROR, 10001),
        }
    }
}

/// A successful answer: the `result`, and top-level fields beside it (`range`, `total`).
struct Answer {
    result: Value,
    extra: Map<String, Value>,
}

impl From<Value> for Answer {
    fn from(result: Value) -> Answer {
        Answer {
            result,
            extra: Map::new(),
        }
    }
}

/// One API route, parsed from the path below [`API_PREFIX`].
#[derive(Debug, PartialEq, Eq)]
enum Route<'a> {
    Videos,
    Video(&'a str),
    Keys,
    Key(&'a str),
}

/// Answer an API request; refusals become envelopes here and nowhere else.
pub(super) async fn answer(
    account: &EmulatorAccount,
    origin: Option<String>,
    req: Request<Incoming>,
) -> Response<Body> {
    match handle(account, origin.as_deref(), req).await {
        Ok(answer) => envelope(StatusCode::OK, answer),
        Err(error) => {
            let (status, code) = error.status_and_code();
            tracing::debug!(%status, code, reason = %error, "emulator API refused request");
            let mut body = Map::new();
            body.insert("success".into(), Value::Bool(false));
            body.insert(
                "errors".into(),
                json!([{"code": code, "message": error.to_string()}]),
            );
            body.insert("messages".into(), json!([]));
            body.insert("result".into(), Value::Null);
            json_response(status, &Value::Object(body))
        }
    }
}

async fn handle(
    account: &EmulatorAccount,
    origin: Option<&str>,
    req: Request<Incoming>,
) -> Result<Answer, ApiError> {
    let access = account.api().ok_or(ApiError::Unauthenticated)?;
    if !bearer_matches(req.headers(), access.token.expose()) {
        return Err(ApiError::Unauthenticated);
    }
    let path = req.uri().path().to_string();
    let (account_id, route) = parse_path(&path).ok_or(ApiError::NoRoute)?;
    if account_id != access.account_id {
        return Err(ApiError::WrongAccount);
    }
    let method = req.method().clone();
    let query = req.uri().query().unwrap_or("").to_string();
    match (route, method) {
        (Route::Videos, Method::GET) => list_videos(account, origin, &query),
        (Route::Video(uid), Method::GET) => {
            let state = account.read();
            let video = state.videos.get(uid).ok_or(ApiError::VideoNotFound)?;
            Ok(video_json(video, origin).into())
        }
        (Route::Video(uid), Method::POST) => {
            let body = read_body(req).await?;
            edit_video(account, origin, uid, &body)
        }
        (Route::Keys, Method::GET) => Ok(list_keys(&account.read()).into()),
        (Route::Keys, Method::POST) => create_key(account).await,
        (Route::Key(id), Method::DELETE) => {
            if account.write().delete_key(id) {
                tracing::info!(key_id = %id, "emulator: signing key deleted through the API");
                Ok(Value::String("ok".into()).into())
            } else {
                Err(ApiError::KeyNotFound)
            }
        }
        _ => Err(ApiError::MethodNotAllowed),
    }
}

/// `accounts/{id}/stream[/keys[/{key}] | /{uid}]` below the prefix: the account id and route.
fn parse_path(path: &str) -> Option<(&str, Route<'_>)> {
    let rest = path.strip_prefix(API_PREFIX)?.strip_prefix('/')?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let segments: Vec<&str> = rest.split('/').collect();
    let route = match segments[..] {
        ["accounts", _, "stream"] => Route::Videos,
        ["accounts", _, "stream", "keys"] => Route::Keys,
        ["accounts", _, "stream", "keys", id] if !id.is_empty() => Route::Key(id),
        ["accounts", _, "stream", uid] if !uid.is_empty() => Route::Video(uid),
        _ => return None,
    };
    Some((segments[1], route))
}

/// Whether `headers` carry `Authorization: Bearer <expected>`. Compared in constant time
/// (over digests, so the length does not show either).
fn bearer_matches(headers: &HeaderMap, expected: &str) -> bool {
    let presented = headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    let Some(presented) = presented else {
        return false;
    };
    let presented = digest::digest(&digest::SHA256, presented.as_bytes());
    let expected = digest::digest(&digest::SHA256, expected.as_bytes());
    bool::from(presented.as_ref().ct_eq(expected.as_ref()))
}

/// The request body, at most [`MAX_BODY_BYTES`], within [`BODY_TIMEOUT`].
async fn read_body(req: Request<Incoming>) -> Result<Bytes, ApiError> {
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<usize>().ok());
    if declared.is_some_and(|len| len > MAX_BODY_BYTES) {
        return Err(ApiError::PayloadTooLarge);
    }
    let read = tokio::time::timeout(
        BODY_TIMEOUT,
        Limited::new(req.into_body(), MAX_BODY_BYTES).collect(),
    );
    match read.await {
        Err(_) => Err(ApiError::BodyTimeout),
        Ok(Err(error)) if error.is::<http_body_util::LengthLimitError>() => {
            Err(ApiError::PayloadTooLarge)
        }
        Ok(Err(_)) => Err(ApiError::BadRequest(
            "could not read the request body".into(),
        )),
        Ok(Ok(body)) => Ok(body.to_bytes()),
    }
}

// === keys ===

async fn create_key(account: &EmulatorAccount) -> Result<Answer, ApiError> {
    // RSA generation takes tens of milliseconds of CPU: off the runtime's workers.
    let generated = tokio::task::spawn_blocking(crate::token::keys::generate)
        .await
        .map_err(|_| ApiError::Internal)?
        .map_err(|error| {
            tracing::error!(%error, "emulator: could not generate a signing key");
            ApiError::Internal
        })?;
    let decoding = DecodingKey::from_rsa_raw_components(&generated.modulus, &generated.exponent);
    let document: Value =
        serde_json::from_str(generated.cloudflare_json.expose()).map_err(|_| ApiError::Internal)?;
    account
        .write()
        .add_created_key(generated.id.clone(), decoding, generated.created)
        .map_err(|_| ApiError::TooManyKeys)?;
    tracing::info!(key_id = %generated.id, "emulator: signing key created through the API");
    Ok(document.into())
}

fn list_keys(state: &AccountState) -> Value {
    let mut keys: Vec<(&String, SystemTime)> = state
        .keys
        .iter()
        .map(|(id, key)| (id, key.created))
        .collect();
    keys.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(b.0)));
    Value::Array(
        keys.into_iter()
            .map(|(id, created)| {
                json!({
                    "id": id,
                    "created": humantime::format_rfc3339_seconds(created).to_string(),
                })
            })
            .collect(),
    )
}

// === videos ===

/// The query of `GET /stream`. Unknown parameters are ignored, as Cloudflare does.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ListQuery {
    /// Oldest first (`asc=true`); newest first by default.
    pub asc: bool,
    /// Only videos created strictly after this (`after` or `start`), microseconds.
    pub after: Option<i64>,
    /// Only videos created strictly before this (`before` or `end`), microseconds.
    pub before: Option<i64>,
    /// Case-insensitive part of the name.
    pub search: Option<String>,
    /// Exactly this creator.
    pub creator: Option<String>,
    /// Exactly this `status.state`.
    pub status: Option<String>,
    /// At most this many (1..=1000, default 1000).
    pub limit: usize,
}

impl ListQuery {
    /// Parse a query string; `Err` names the parameter that is wrong.
    pub fn parse(query: &str) -> Result<ListQuery, ApiError> {
        let mut parsed = ListQuery {
            limit: MAX_PAGE,
            ..ListQuery::default()
        };
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = decode_component(value)
                .ok_or_else(|| bad(format!("`{name}` is not valid percent-encoded UTF-8")))?;
            let time = |name: &str| {
                parse_micros(&value).ok_or_else(|| {
                    bad(format!(
                        "`{name}` must be an RFC 3339 time such as 2024-01-01T00:00:00Z"
                    ))
                })
            };
            match name {
                "asc" => {
                    parsed.asc = match value.as_str() {
                        "true" => true,
                        "false" => false,
                        _ => return Err(bad("`asc` must be true or false".into())),
                    }
                }
                "after" | "start" => parsed.after = Some(time(name)?),
                "before" | "end" => parsed.before = Some(time(name)?),
                "search" => parsed.search = Some(value.to_lowercase()),
                "creator" => parsed.creator = Some(value),
                "status" => parsed.status = Some(value),
                "limit" => {
                    parsed.limit = value
                        .parse::<usize>()
                        .ok()
                        .filter(|limit| (1..=MAX_PAGE).contains(limit))
                        .ok_or_else(|| bad(format!("`limit` must be 1 to {MAX_PAGE}")))?;
                }
                _ => {}
            }
        }
        Ok(parsed)
    }

    /// Whether `video` passes the filters other than the creation-time cursor.
    fn selects(&self, video: &VideoRecord) -> bool {
        self.search
            .as_ref()
            .is_none_or(|search| video.name().to_lowercase().contains(search))
            && self
                .creator
                .as_ref()
                .is_none_or(|creator| video.creator.as_ref() == Some(creator))
            && self
                .status
                .as_ref()
                .is_none_or(|status| status == state_of(video))
    }

    fn in_window(&self, created_micros: i64) -> bool {
        self.after.is_none_or(|after| created_micros > after)
            && self.before.is_none_or(|before| created_micros < before)
    }
}

fn bad(reason: String) -> ApiError {
    ApiError::BadRequest(reason)
}

/// A query component: `+` is a space, then percent-decoding.
fn decode_component(value: &str) -> Option<String> {
    let spaced = value.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .ok()
        .map(|text| text.into_owned())
}

/// `result`: the page; `total`: the videos the filters select, whatever the cursor;
/// `range`: those of them the cursor (`after`/`before`) leaves, this page included.
fn list_videos(
    account: &EmulatorAccount,
    origin: Option<&str>,
    query: &str,
) -> Result<Answer, ApiError> {
    let query = ListQuery::parse(query)?;
    let state = account.read();
    let selected = state
        .by_created
        .iter()
        .filter_map(|(&created, uid)| Some((created, state.videos.get(uid)?)))
        .filter(|(_, video)| query.selects(video));
    let mut total = 0usize;
    let mut in_range: Vec<&VideoRecord> = Vec::new();
    for (created, video) in selected {
        total += 1;
        if query.in_window(created) {
            in_range.push(video);
        }
    }
    let range = in_range.len();
    if !query.asc {
        in_range.reverse();
    }
    let page: Vec<Value> = in_range
        .into_iter()
        .take(query.limit)
        .map(|video| video_json(video, origin))
        .collect();
    let mut extra = Map::new();
    extra.insert("range".into(), json!(range));
    extra.insert("total".into(), json!(total));
    Ok(Answer {
        result: Value::Array(page),
        extra,
    })
}

/// What a `POST /stream/{uid}` may change; checked whole before anything is applied.
#[derive(Debug, Default, PartialEq)]
struct VideoEdit {
    require_signed_urls: Option<bool>,
    allowed_origins: Option<Vec<String>>,
    meta: Option<Map<String, Value>>,
    creator: Option<Option<String>>,
}

impl VideoEdit {
    /// Parse an edit body. Unknown fields are ignored; a known field of the wrong type is
    /// `Err` naming it.
    fn parse(body: &[u8]) -> Result<VideoEdit, ApiError> {
        let value: Value = serde_json::from_slice(body).map_err(|error| {
            // serde_json's syntax errors name a place, never the input.
            bad(format!(
                "the body is not JSON ({:?} error at line {} column {})",
                error.classify(),
                error.line(),
                error.column()
            ))
        })?;
        let Value::Object(fields) = value else {
            return Err(bad("the body must be a JSON object".into()));
        };
        let mut edit = VideoEdit::default();
        if let Some(value) = fields.get("requireSignedURLs") {
            edit.require_signed_urls = Some(
                value
                    .as_bool()
                    .ok_or_else(|| bad("`requireSignedURLs` must be true or false".into()))?,
            );
        }
        if let Some(value) = fields.get("allowedOrigins") {
            let entries = value
                .as_array()
                .ok_or_else(|| bad("`allowedOrigins` must be a list of host names".into()))?;
            let mut allowed: Vec<String> = Vec::new();
            for (i, entry) in entries.iter().enumerate() {
                let entry = entry
                    .as_str()
                    .ok_or_else(|| bad(format!("`allowedOrigins[{i}]` must be a string")))?;
                let entry = origins::normalize_entry(entry)
                    .map_err(|reason| bad(format!("`allowedOrigins[{i}]` {reason}")))?;
                if !allowed.contains(&entry) {
                    allowed.push(entry);
                }
            }
            edit.allowed_origins = Some(allowed);
        }
        if let Some(value) = fields.get("meta") {
            let meta = value
                .as_object()
                .ok_or_else(|| bad("`meta` must be an object".into()))?;
            if meta.get("name").is_some_and(|name| !name.is_string()) {
                return Err(bad("`meta.name` must be a string".into()));
            }
            edit.meta = Some(meta.clone());
        }
        if let Some(value) = fields.get("creator") {
            edit.creator = Some(match value {
                Value::Null => None,
                Value::String(creator) if creator.chars().count() <= MAX_CREATOR_LEN => {
                    Some(creator.clone())
                }
                Value::String(_) => {
                    return Err(bad(format!(
                        "`creator` must be at most {MAX_CREATOR_LEN} characters"
                    )));
                }
                _ => return Err(bad("`creator` must be a string or null".into())),
            });
        }
        Ok(edit)
    }

    fn apply(self, video: &mut VideoRecord) {
        if let Some(require) = self.require_signed_urls {
            video.require_signed_urls = require;
        }
        if let Some(allowed) = self.allowed_origins {
            video.allowed_origins = allowed;
        }
        if let Some(meta) = self.meta {
            for (field, value) in meta {
                video.meta.insert(field, value);
            }
        }
        if let Some(creator) = self.creator {
            video.creator = creator;
        }
    }
}

fn edit_video(
    account: &EmulatorAccount,
    origin: Option<&str>,
    uid: &str,
    body: &[u8],
) -> Result<Answer, ApiError> {
    // An unknown video is a 404 even when the body is bad too.
    if !account.read().videos.contains_key(uid) {
        return Err(ApiError::VideoNotFound);
    }
    let edit = VideoEdit::parse(body)?;
    let mut state = account.write();
    let video = state.videos.get_mut(uid).ok_or(ApiError::VideoNotFound)?;
    edit.apply(video);
    video.modified_micros = unix_micros(SystemTime::now()).max(video.created_micros);
    tracing::info!(
        video_uid = %uid,
        require_signed_urls = video.require_signed_urls,
        allowed_origins = video.allowed_origins.len(),
        "emulator: video edited through the API"
    );
    Ok(video_json(video, origin).into())
}

fn state_of(video: &VideoRecord) -> &'static str {
    if video.ready { "ready" } else { "inprogress" }
}

/// A video as Cloudflare describes it; URLs on `origin` (the emulator), relative without one.
fn video_json(video: &VideoRecord, origin: Option<&str>) -> Value {
    let origin = origin.unwrap_or("");
    let uid = &video.uid;
    let url = |path: &str| format!("{origin}/{uid}/{path}");
    let created = format_micros(video.created_micros);
    let (duration, size, pct) = if video.ready {
        let seconds = SEGMENTS_PER_RENDITION as u64 * u64::from(SEGMENT_DURATION_SECS);
        (json!(seconds), json!(DOWNLOAD_LEN_BYTES), "100.000000")
    } else {
        (json!(-1), json!(0), "50.000000")
    };
    json!({
        "uid": uid,
        "creator": video.creator,
        "meta": video.meta,
        "created": created,
        "modified": format_micros(video.modified_micros),
        "uploaded": created,
        "readyToStream": video.ready,
        "readyToStreamAt": if video.ready { Value::String(created.clone()) } else { Value::Null },
        "status": {
            "state": state_of(video),
            "pctComplete": pct,
            "errorReasonCode": "",
            "errorReasonText": "",
        },
        "duration": duration,
        "size": size,
        "requireSignedURLs": video.require_signed_urls,
        "allowedOrigins": video.allowed_origins,
        "thumbnail": url("thumbnails/thumbnail.jpg"),
        "thumbnailTimestampPct": 0,
        // Stream's is `/watch`; the emulator's player page is the closest it has.
        "preview": url("iframe"),
        "playback": {
            "hls": url("manifest/video.m3u8"),
            "dash": url("manifest/video.mpd"),
        },
        "scheduledDeletion": Value::Null,
    })
}

// === responses ===

fn envelope(status: StatusCode, answer: Answer) -> Response<Body> {
    let mut body = Map::new();
    body.insert("success".into(), Value::Bool(true));
    body.insert("errors".into(), json!([]));
    body.insert("messages".into(), json!([]));
    body.insert("result".into(), answer.result);
    body.extend(answer.extra);
    json_response(status, &Value::Object(body))
}

fn json_response(status: StatusCode, body: &Value) -> Response<Body> {
    let mut response = Response::new(Body::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACCOUNT: &str = "023e105f4ecef8ad9ca31a8372d0c353";

    #[test]
    fn paths_name_the_account_and_the_route() {
        let path = |rest: &str| format!("{API_PREFIX}/accounts/{ACCOUNT}/stream{rest}");
        assert_eq!(parse_path(&path("")), Some((ACCOUNT, Route::Videos)));
        assert_eq!(parse_path(&path("/")), Some((ACCOUNT, Route::Videos)));
        assert_eq!(parse_path(&path("/keys")), Some((ACCOUNT, Route::Keys)));
        assert_eq!(
            parse_path(&path("/keys/abc")),
            Some((ACCOUNT, Route::Key("abc")))
        );
        assert_eq!(
            parse_path(&path("/abc")),
            Some((ACCOUNT, Route::Video("abc")))
        );
        for other in [
            "/client/v4",
            "/client/v4/accounts",
            "/client/v4/zones/x/stream",
            "/client/v4/accounts/x/stream/a/b",
            "/client/v4/accounts/x/stream/keys/a/b",
            "/client/v5/accounts/x/stream",
        ] {
            assert_eq!(parse_path(other), None, "{other}");
        }
    }

    #[test]
    fn only_the_exact_bearer_token_matches() {
        let headers = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
            headers
        };
        assert!(bearer_matches(&headers("Bearer s3cret"), "s3cret"));
        assert!(bearer_matches(&headers("bearer s3cret"), "s3cret"));
        for wrong in [
            "Bearer s3cre",
            "Bearer s3cret2",
            "Basic s3cret",
            "s3cret",
            "Bearer ",
        ] {
            assert!(!bearer_matches(&headers(wrong), "s3cret"), "{wrong}");
        }
        assert!(!bearer_matches(&HeaderMap::new(), "s3cret"));
    }

    #[test]
    fn list_query_reads_cloudflares_parameters_and_aliases() {
        let query = ListQuery::parse(
            "asc=true&start=2024-01-01T00:00:00Z&end=2024-01-02T00:00:00.5Z&search=Tour+Of&limit=10&include_counts=true",
        )
        .unwrap();
        assert!(query.asc);
        assert_eq!(query.after, Some(1_704_067_200_000_000));
        assert_eq!(query.before, Some(1_704_153_600_500_000));
        assert_eq!(query.search.as_deref(), Some("tour of"));
        assert_eq!(query.limit, 10);
        assert_eq!(ListQuery::parse("").unwrap().limit, MAX_PAGE);
        for bad in [
            "asc=yes",
            "after=yesterday",
            "limit=0",
            "limit=1001",
            "search=%ff",
        ] {
            assert!(
                matches!(ListQuery::parse(bad), Err(ApiError::BadRequest(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn edits_check_every_known_field_and_ignore_the_rest() {
        let edit = VideoEdit::parse(
            br#"{"requireSignedURLs": false, "allowedOrigins": ["*.Example.com"], "meta": {"name": "x"}, "creator": null, "thumbnailTimestampPct": 0.5}"#,
        )
        .unwrap();
        assert_eq!(edit.require_signed_urls, Some(false));
        assert_eq!(
            edit.allowed_origins,
            Some(vec!["*.example.com".to_string()])
        );
        assert_eq!(edit.creator, Some(None));
        for (body, reason) in [
            (&br#"{"requireSignedURLs": "no"}"#[..], "requireSignedURLs"),
            (br#"{"allowedOrigins": "example.com"}"#, "allowedOrigins"),
            (
                br#"{"allowedOrigins": ["https://x.com"]}"#,
                "allowedOrigins[0]",
            ),
            (br#"{"meta": []}"#, "meta"),
            (br#"{"meta": {"name": 5}}"#, "meta.name"),
            (br#"{"creator": 5}"#, "creator"),
            (br#"[]"#, "JSON object"),
            (br#"{"requireSignedURLs": tru"#, "not JSON"),
            (b"", "not JSON"),
        ] {
            let error = VideoEdit::parse(body).unwrap_err().to_string();
            assert!(error.contains(reason), "{error}");
        }
    }

    #[test]
    fn errors_map_to_statuses_and_codes() {
        assert_eq!(
            ApiError::Unauthenticated.status_and_code(),
            (StatusCode::UNAUTHORIZED, 10000)
        );
        assert_eq!(
            ApiError::WrongAccount.status_and_code(),
            (StatusCode::FORBIDDEN, 10000)
        );
        assert_eq!(
            ApiError::VideoNotFound.status_and_code(),
            (StatusCode::NOT_FOUND, 10005)
        );
        assert_eq!(
            ApiError::BadRequest("x".into()).status_and_code().0,
            StatusCode::BAD_REQUEST
        );
    }
}
