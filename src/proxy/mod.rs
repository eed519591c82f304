//! Proxy mode: fetch `<origin>/<token>/<path>` from Stream and stream the answer to the
//! viewer, who never sees the token.
//!
//! [`headers`] decides what crosses in each direction (allow-lists both ways), [`rewrite`]
//! keeps the token out of every text body and redirect, and [`idle`] cuts off a stalled
//! upstream body.

pub mod headers;
pub mod idle;
pub mod rewrite;

use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, ETAG, LOCATION};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Frame;

use crate::body::{Body, BoxError};
use crate::http::client::{self as http_client, ClientOptions, HttpsClient};
use idle::IdleBody;
use rewrite::{RewriteBody, Rewriter};

/// The client proxy mode uses to reach Stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamSettings {
    /// Limit on opening a connection (TCP and TLS).
    pub connect_timeout: Duration,
    /// Limit on waiting for the response head (time to first byte).
    pub response_timeout: Duration,
    /// Longest gap allowed between two pieces of a response body.
    pub idle_timeout: Duration,
    /// Bytes per second a response body must bring, averaged over each `idle_timeout`
    /// (0: no minimum).
    pub min_body_rate: u64,
    /// Extra CA certificates to trust (a private origin; tests).
    pub ca_file: Option<std::path::PathBuf>,
}

/// Why an upstream exchange failed; the gateway maps these to 502 and 504.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Refused, unreachable, DNS or TLS failure.
    #[error("cannot reach the Stream origin")]
    Connect(#[source] BoxError),
    #[error("the Stream origin did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the exchange with the Stream origin failed")]
    Failed(#[source] BoxError),
}

/// Why the proxy client could not be built (a bad CA file).
pub use http_client::ClientError;

/// The pooled client to Stream, with its timeouts.
pub struct Upstream {
    client: HttpsClient,
    /// `scheme://host[:port]`, no trailing slash.
    origin: String,
    settings: UpstreamSettings,
}

/// One request to pass on.
pub struct Forward<'a> {
    pub method: &'a Method,
    /// The viewer's request headers.
    pub headers: &'a HeaderMap,
    pub token: &'a str,
    /// The path below the token, e.g. `manifest/video.m3u8`.
    pub path: &'a str,
    pub query: Option<&'a str>,
    /// The video as the viewer named it, for rewritten URLs.
    pub video: &'a str,
}

impl Upstream {
    pub fn new(origin: String, settings: UpstreamSettings) -> Result<Self, ClientError> {
        let client = http_client::build(&ClientOptions {
            extra_ca_file: settings.ca_file.clone(),
            connect_timeout: settings.connect_timeout,
        })?;
        Ok(Self {
            client,
            origin,
            settings,
        })
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Send the request and return Stream's answer with its body streaming through: headers
    /// by the allow-lists of [`headers`], a text body rewritten by [`rewrite`] (any status),
    /// anything else untouched. Statuses pass through unchanged (the caller decides what a
    /// 401 or a 5xx means). `Err(Failed)` also for a text body that cannot be rewritten
    /// (content-coded, or a 206 part): passing it on could hand the viewer the token.
    pub async fn forward(&self, request: &Forward<'_>) -> Result<Response<Body>, UpstreamError> {
        // Joined by hand, at its final size: the token makes this URI several hundred bytes
        // long, which `format!` would grow into step by step.
        let query = request.query.unwrap_or_default();
        let mut uri = String::with_capacity(
            self.origin.len() + request.token.len() + request.path.len() + query.len() + 3,
        );
        for part in [self.origin.as_str(), "/", request.token, "/", request.path] {
            uri.push_str(part);
        }
        if request.query.is_some() {
            uri.push('?');
            uri.push_str(query);
        }
        let mut upstream_request = Request::builder()
            .method(request.method.clone())
            .uri(uri)
            .body(Full::new(Bytes::new()))
            .map_err(|e| UpstreamError::Failed(e.into()))?;
        *upstream_request.headers_mut() =
            headers::upstream_request_headers(request.headers, !is_binary_path(request.path));

        let response = tokio::time::timeout(
            self.settings.response_timeout,
            self.client.request(upstream_request),
        )
        .await
        .map_err(|_| UpstreamError::Timeout(self.settings.response_timeout))?
        .map_err(|error| {
            if error.is_connect() {
                UpstreamError::Connect(error.into())
            } else {
                UpstreamError::Failed(error.into())
            }
        })?;

        let (parts, body) = response.into_parts();
        // An answer other than a 2xx (or a 304, which describes the 200) is a message about
        // the request, never media: rewritten whatever its type says.
        let message = !parts.status.is_success() && parts.status != StatusCode::NOT_MODIFIED;
        let text = message || is_text(request.path, &parts.headers);
        let has_body = request.method != Method::HEAD
            && parts.status != StatusCode::NOT_MODIFIED
            && parts.status != StatusCode::NO_CONTENT;
        if text
            && has_body
            && (is_coded(&parts.headers) || parts.status == StatusCode::PARTIAL_CONTENT)
        {
            return Err(UpstreamError::Failed(
                "the origin sent a compressed or partial text body, which must be rewritten".into(),
            ));
        }
        let mut headers =
            headers::downstream_response_headers(&parts.headers, request.token, !text);
        // Made once, and only when something is to be rewritten: media with no `Location`
        // (every segment and download) needs none.
        let location = parts.headers.get(LOCATION).and_then(|l| l.to_str().ok());
        let rewrites_body = text && has_body;
        let rewriter = (rewrites_body || location.is_some())
            .then(|| Rewriter::new(&self.origin, request.token, request.video));
        if let Some(value) = location
            .zip(rewriter.as_ref())
            .and_then(|(l, rewriter)| rewriter.location(l))
            .and_then(|l| HeaderValue::try_from(l).ok())
        {
            headers.insert(LOCATION, value);
        }
        if text {
            // The representation changes: its length and strong validator no longer hold
            // (for HEAD and 304 too, so that they describe what GET would send).
            headers.remove(CONTENT_LENGTH);
            if let Some(etag) = headers.remove(ETAG)
                && let Ok(weak) = HeaderValue::try_from(weaken(etag.as_bytes()))
            {
                headers.insert(ETAG, weak);
            }
        }
        let body = IdleBody::new(
            body,
            self.settings.idle_timeout,
            self.settings.min_body_rate,
        );
        let body = if let Some(rewriter) = rewriter.filter(|_| rewrites_body) {
            Body::stream(RewriteBody::new(body, rewriter))
        } else {
            // Per frame, not per byte: media passes through as it came, without trailers
            // (which are headers no allow-list admits).
            Body::stream(body.map_frame(|frame| match frame.into_data() {
                Ok(data) => Frame::data(data),
                Err(_) => Frame::data(Bytes::new()),
            }))
        };
        let mut response = Response::new(body);
        *response.status_mut() = parts.status;
        *response.headers_mut() = headers;
        Ok(response)
    }
}

/// The first line of a refusal body, for passing Stream's reason on: at most `limit`
/// bytes read, within `timeout`; printable text only, `token` withheld (again: leaving out
/// control characters could join the pieces of a token the body's rewrite did not see whole).
pub async fn short_reason(
    response: Response<Body>,
    token: &str,
    limit: usize,
    timeout: Duration,
) -> String {
    let status = response.status();
    let read = http_body_util::Limited::new(response.into_body(), limit).collect();
    let text = match tokio::time::timeout(timeout, read).await {
        Ok(Ok(collected)) => String::from_utf8_lossy(&collected.to_bytes()).into_owned(),
        _ => String::new(),
    };
    let line: String = text
        .lines()
        .next()
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_control())
        .collect();
    let line: String = line
        .replace(token, rewrite::TOKEN_PLACEHOLDER)
        .chars()
        .take(200)
        .collect();
    if line.is_empty() {
        status.canonical_reason().unwrap_or("refused").to_string()
    } else {
        line
    }
}

/// Whether a path names a document whose URLs must be rewritten whatever its type says: HLS
/// and DASH manifests, and the player page.
fn needs_rewrite(path: &str) -> bool {
    path == "iframe" || path.ends_with(".m3u8") || path.ends_with(".mpd")
}

/// Whether a path names media that is never text (segments, downloads, thumbnails): a body
/// without a `Content-Type` there passes through untouched, and the viewer's `Range` and
/// validators are passed on.
fn is_binary_path(path: &str) -> bool {
    let file = path.rsplit('/').next().unwrap_or(path);
    let Some((_, extension)) = file.rsplit_once('.') else {
        return false;
    };
    const BINARY: [&str; 14] = [
        "ts", "m4s", "mp4", "m4a", "m4v", "aac", "mp3", "webm", "jpg", "jpeg", "png", "gif",
        "webp", "avif",
    ];
    BINARY.iter().any(|b| extension.eq_ignore_ascii_case(b))
}

/// Whether the body must be rewritten: a document path, a text-like type, a type that cannot
/// be read (assume the worst), or no type outside a binary path.
fn is_text(path: &str, headers: &HeaderMap) -> bool {
    if needs_rewrite(path) {
        return true;
    }
    match headers.get(CONTENT_TYPE).map(|v| v.to_str()) {
        None => !is_binary_path(path),
        Some(Err(_)) => true,
        Some(Ok(content_type)) => is_text_type(content_type),
    }
}

/// HTML, JavaScript, JSON, CSS, VTT, XML, HLS and DASH manifests, plain text: anything a
/// browser or player reads as text and where a URL or the token could be written.
fn is_text_type(content_type: &str) -> bool {
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let Some((kind, subtype)) = mime.split_once('/') else {
        // Not a media type at all.
        return true;
    };
    kind == "text"
        || subtype.ends_with("+json")
        || subtype.ends_with("+xml")
        || matches!(
            mime.as_str(),
            "application/javascript"
                | "application/x-javascript"
                | "application/ecmascript"
                | "application/json"
                | "application/xml"
                | "application/vnd.apple.mpegurl"
                | "application/x-mpegurl"
                | "audio/mpegurl"
                | "audio/x-mpegurl"
                | "application/x-www-form-urlencoded"
        )
}

/// Whether the body carries a content coding other than `identity`.
fn is_coded(headers: &HeaderMap) -> bool {
    headers
        .get_all(http::header::CONTENT_ENCODING)
        .iter()
        .any(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"))
}

/// `"abc"` → `W/"abc"`; weak tags stay as they are.
fn weaken(etag: &[u8]) -> Vec<u8> {
    if etag.starts_with(b"W/") {
        etag.to_vec()
    } else {
        [b"W/".as_slice(), etag].concat()
    }
}

/// Whether an upstream status says the token itself was refused.
pub fn refused_token(status: StatusCode) -> bool {
    status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_and_the_player_page_are_rewritten_segments_are_not() {
        for path in [
            "iframe",
            "manifest/video.m3u8",
            "manifest/stream_360p.m3u8",
            "manifest/video.mpd",
        ] {
            assert!(needs_rewrite(path), "{path}");
        }
        for path in [
            "manifest/seg_360p_0.ts",
            "downloads/default.mp4",
            "thumbnails/thumbnail.jpg",
        ] {
            assert!(!needs_rewrite(path), "{path}");
        }
    }

    fn typed(content_type: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(content_type) = content_type {
            headers.insert(CONTENT_TYPE, HeaderValue::from_str(content_type).unwrap());
        }
        headers
    }

    #[test]
    fn every_text_like_body_is_rewritten_media_is_not() {
        for content_type in [
            "text/html; charset=utf-8",
            "text/vtt",
            "text/plain",
            "text/css",
            "text/javascript",
            "application/javascript",
            "application/json",
            "application/problem+json",
            "application/xml",
            "application/dash+xml",
            "image/svg+xml",
            "application/vnd.apple.mpegurl",
            "Application/X-MpegURL",
            "garbage",
            "",
        ] {
            assert!(
                is_text("anything", &typed(Some(content_type))),
                "{content_type}"
            );
            assert!(
                is_text("manifest/seg_0.ts", &typed(Some(content_type))),
                "{content_type}"
            );
        }
        for content_type in [
            "video/mp2t",
            "video/mp4",
            "image/jpeg",
            "application/octet-stream",
        ] {
            assert!(
                !is_text("downloads/x", &typed(Some(content_type))),
                "{content_type}"
            );
        }
        // A manifest or the player page is rewritten whatever it claims to be.
        assert!(is_text(
            "manifest/video.m3u8",
            &typed(Some("application/octet-stream"))
        ));
        assert!(is_text("iframe", &typed(Some("video/mp4"))));
        // Without a type: text unless the path names media.
        assert!(is_text("manifest/subtitles_en_0.vtt", &typed(None)));
        assert!(is_text("whatever", &typed(None)));
        for path in [
            "manifest/seg_360p_0.ts",
            "manifest/seg_0.M4S",
            "downloads/default.mp4",
            "thumbnails/thumbnail.jpg",
        ] {
            assert!(!is_text(path, &typed(None)), "{path}");
            assert!(is_binary_path(path), "{path}");
        }
        let mut unreadable = HeaderMap::new();
        unreadable.insert(CONTENT_TYPE, HeaderValue::from_bytes(b"text/\xff").unwrap());
        assert!(is_text("downloads/default.mp4", &unreadable));
    }

    #[test]
    fn rewritten_bodies_get_weak_validators() {
        assert_eq!(weaken(b"\"abc\""), b"W/\"abc\"");
        assert_eq!(weaken(b"W/\"abc\""), b"W/\"abc\"");
    }
}
