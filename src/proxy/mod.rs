//! Proxy mode: fetch `<origin>/<token>/<path>` from Stream and stream the answer to the
//! viewer, who never sees the token.
//!
//! [`headers`] decides what crosses in each direction, [`rewrite`] keeps Stream URLs out of
//! manifests, player pages and redirects, and [`idle`] cuts off a stalled upstream body.

pub mod headers;
pub mod idle;
pub mod rewrite;

use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, ETAG, LOCATION};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};

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
    pub client_ip: IpAddr,
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

    /// Send the request and return Stream's answer with its body streaming through.
    /// Statuses pass through unchanged (the caller decides what a 401 or a 5xx means).
    pub async fn forward(&self, request: &Forward<'_>) -> Result<Response<Body>, UpstreamError> {
        let rewrites = needs_rewrite(request.path);
        let mut uri = format!("{}/{}/{}", self.origin, request.token, request.path);
        if let Some(query) = request.query {
            uri.push('?');
            uri.push_str(query);
        }
        let mut upstream_request = Request::builder()
            .method(request.method.clone())
            .uri(uri)
            .body(Full::new(Bytes::new()))
            .map_err(|e| UpstreamError::Failed(e.into()))?;
        *upstream_request.headers_mut() =
            headers::upstream_request_headers(request.headers, request.client_ip, rewrites);

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
        let mut headers = headers::downstream_response_headers(&parts.headers);
        let rewriter = Rewriter::new(&self.origin, request.token, request.video);
        if let Some(location) = parts.headers.get(LOCATION) {
            headers.remove(LOCATION);
            let rewritten = location.to_str().ok().and_then(|l| rewriter.location(l));
            if let Some(value) = rewritten.and_then(|l| HeaderValue::try_from(l).ok()) {
                headers.insert(LOCATION, value);
            }
        }
        let body = IdleBody::new(
            body,
            self.settings.idle_timeout,
            self.settings.min_body_rate,
        );
        let text = rewrites || is_rewritable_type(&parts.headers);
        let rewritten = text && parts.status.is_success();
        if rewritten && (is_coded(&parts.headers) || parts.status == StatusCode::PARTIAL_CONTENT) {
            // A compressed or partial document cannot be rewritten, and passing it on
            // could hand the viewer the token.
            return Err(UpstreamError::Failed(
                "the origin sent a compressed or partial document that must be rewritten".into(),
            ));
        }
        if rewritten {
            // The representation changes: its length and strong validator no longer hold
            // (for HEAD too, so that it describes what GET would send).
            headers.remove(CONTENT_LENGTH);
            if let Some(etag) = headers.remove(ETAG)
                && let Ok(weak) = HeaderValue::try_from(weaken(etag.as_bytes()))
            {
                headers.insert(ETAG, weak);
            }
        }
        let body = if rewritten && request.method != Method::HEAD {
            Body::stream(RewriteBody::new(body, rewriter))
        } else {
            Body::stream(body)
        };
        let mut response = Response::new(body);
        *response.status_mut() = parts.status;
        *response.headers_mut() = headers;
        Ok(response)
    }
}

/// The first line of a refusal body, for passing Stream's reason on: at most `limit`
/// bytes read, within `timeout`; printable text only.
pub async fn short_reason(response: Response<Body>, limit: usize, timeout: Duration) -> String {
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
        .take(200)
        .collect();
    if line.is_empty() {
        status.canonical_reason().unwrap_or("refused").to_string()
    } else {
        line
    }
}

/// Whether a path names a document whose URLs must be rewritten: HLS and DASH manifests,
/// and the player page.
fn needs_rewrite(path: &str) -> bool {
    path == "iframe" || path.ends_with(".m3u8") || path.ends_with(".mpd")
}

fn is_rewritable_type(headers: &HeaderMap) -> bool {
    let Some(content_type) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    matches!(
        mime.as_str(),
        "application/vnd.apple.mpegurl"
            | "application/x-mpegurl"
            | "audio/mpegurl"
            | "audio/x-mpegurl"
            | "application/dash+xml"
            | "text/html"
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

    #[test]
    fn rewritten_bodies_get_weak_validators() {
        assert_eq!(weaken(b"\"abc\""), b"W/\"abc\"");
        assert_eq!(weaken(b"W/\"abc\""), b"W/\"abc\"");
    }
}
