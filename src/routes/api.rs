//! `POST /api/getSignedURL`: the seed's JSON API, `{"video_id"}` → `{"token", "url", "expires_at"}`.

use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::request::Parts;
use http::{HeaderMap, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::Deserialize;

use crate::Body;
use crate::error::{RequestError, json_response};
use crate::request::Context;
use crate::request::route::{Resource, Target, check_video_id};
use crate::snapshot::Snapshot;

#[derive(Deserialize)]
struct GetSignedUrlRequest {
    video_id: serde_json::Value,
}

/// Mint a token for the posted `video_id` under the same policy as `/watch`.
pub async fn get_signed_url(
    snapshot: &Snapshot,
    ctx: &mut Context,
    head: &Parts,
    body: Incoming,
) -> Result<Response<Body>, RequestError> {
    require_json(&head.headers)?;
    let bytes = read_body(snapshot, ctx.deadline, &head.headers, body).await?;

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
    check_video_id(video_id)?;

    super::identify(snapshot, ctx, &head.headers).await?;
    let permit = snapshot.authz.authorize(ctx, video_id, Target::Player)?;
    let issued = permit.token(&snapshot.cache).await?;
    super::audit_token(snapshot, ctx, &permit, &issued, crate::audit::Via::Api);
    let token = issued.token.expose();
    let expires_at = UNIX_EPOCH + Duration::from_secs(issued.expires_at);
    let body = serde_json::json!({
        "token": token,
        "url": format!("{}/{}/{}", snapshot.origin, token, Resource::Iframe.path()),
        "expires_at": humantime::format_rfc3339_seconds(expires_at).to_string(),
        "video_id": permit.video().uid.as_str(),
    });
    Ok(json_response(StatusCode::OK, &body))
}

/// The request body, within `limits.max_body_bytes` (413) and by `deadline` (the request's,
/// else `limits.request_timeout` from now) (408). The request's own deadline is the one its
/// response head is due by: both timers fire together, and the body's is polled first, so a
/// body that never arrives is answered 408 whatever the scheduling.
pub(super) async fn read_body(
    snapshot: &Snapshot,
    deadline: Option<tokio::time::Instant>,
    headers: &HeaderMap,
    body: Incoming,
) -> Result<Bytes, RequestError> {
    let limit = snapshot.settings.max_body_bytes;
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(RequestError::PayloadTooLarge { limit });
    }
    let deadline =
        deadline.unwrap_or_else(|| tokio::time::Instant::now() + snapshot.settings.request_timeout);
    let read = tokio::time::timeout_at(deadline, Limited::new(body, limit).collect());
    Ok(read
        .await
        .map_err(|_| RequestError::BodyTimeout(snapshot.settings.request_timeout))?
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
