//! `POST /api/getSignedURL`: the seed's JSON API, `{"video_id"}` → `{"token", "url", "expires_at"}`.

use std::net::SocketAddr;
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::Deserialize;

use super::Resource;
use crate::Body;
use crate::error::{RequestError, json_response};
use crate::gateway::Gateway;

#[derive(Deserialize)]
struct GetSignedUrlRequest {
    video_id: serde_json::Value,
}

/// Mint a token for the posted `video_id` under the same policy as `/watch`.
pub async fn get_signed_url(
    gateway: &Gateway,
    req: Request<Incoming>,
    peer: SocketAddr,
    note: &mut crate::app::edge::AccessNote,
) -> Result<Response<Body>, RequestError> {
    require_json(req.headers())?;
    let (parts, body) = req.into_parts();
    let bytes = read_body(gateway, &parts.headers, body).await?;

    let request: GetSignedUrlRequest = serde_json::from_slice(&bytes).map_err(|error| {
        if error.is_data() {
            RequestError::BadRequest("`video_id` is required".into())
        } else {
            RequestError::BadRequest(format!("malformed JSON: {error}"))
        }
    })?;
    let video_id = request
        .video_id
        .as_str()
        .ok_or_else(|| RequestError::BadRequest("`video_id` must be a string".into()))?;
    if video_id.is_empty() {
        return Err(RequestError::BadRequest("`video_id` is empty".into()));
    }

    let minted = gateway
        .mint(&parts.headers, peer, video_id, super::Target::Player, note)
        .await?;
    let token = minted.token.token.expose();
    let expires_at = UNIX_EPOCH + Duration::from_secs(minted.token.expires_at);
    let body = serde_json::json!({
        "token": token,
        "url": format!("{}/{}/{}", gateway.origin(), token, Resource::Iframe.path()),
        "expires_at": humantime::format_rfc3339_seconds(expires_at).to_string(),
        "video_id": minted.video.uid.as_str(),
    });
    Ok(json_response(StatusCode::OK, &body))
}

/// The request body, within `limits.max_body_bytes` (413) and `limits.request_timeout`.
pub(super) async fn read_body(
    gateway: &Gateway,
    headers: &HeaderMap,
    body: Incoming,
) -> Result<Bytes, RequestError> {
    let limit = gateway.settings().max_body_bytes;
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(RequestError::PayloadTooLarge { limit });
    }
    let read = tokio::time::timeout(
        gateway.settings().request_timeout,
        Limited::new(body, limit).collect(),
    );
    Ok(read
        .await
        .map_err(|_| RequestError::Timeout(gateway.settings().request_timeout))?
        .map_err(|error| {
            if error.is::<http_body_util::LengthLimitError>() {
                RequestError::PayloadTooLarge { limit }
            } else {
                RequestError::BadRequest("could not read the request body".into())
            }
        })?
        .to_bytes())
}

/// The body must be declared as JSON (`application/json`, parameters allowed).
fn require_json(headers: &HeaderMap) -> Result<(), RequestError> {
    let is_json = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim())
        .is_some_and(|mime| mime.eq_ignore_ascii_case("application/json"));
    if is_json {
        Ok(())
    } else {
        Err(RequestError::UnsupportedMediaType)
    }
}
