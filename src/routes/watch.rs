//! `GET|HEAD /watch/<video>[/<resource>]`: identify, authorize, get a token, then redirect
//! to the signed Stream URL or (proxy mode) fetch it and stream it back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CACHE_CONTROL, LOCATION, REFERRER_POLICY};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Response, StatusCode};

use crate::Body;
use crate::audit::Via;
use crate::authz::policy::Mode;
use crate::authz::{Permit, file_in_redirect_mode};
use crate::body::BodyEnd;
use crate::error::RequestError;
use crate::metrics::UpstreamErrorKind;
use crate::proxy::{self, Forward, UpstreamError};
use crate::request::Context;
use crate::request::id::REQUEST_ID;
use crate::request::route::{Resource, Target};
use crate::snapshot::Snapshot;
use crate::token::IssuedToken;

/// Answer `/watch/<video>[/<target>][?query]`.
pub async fn watch(
    snapshot: &Snapshot,
    ctx: &mut Context,
    head: &Parts,
    video: &str,
    target: Target<'_>,
    query: Option<&str>,
) -> Result<Response<Body>, RequestError> {
    super::identify(snapshot, ctx, &head.headers).await?;
    let permit = snapshot.authz.authorize(ctx, video, target)?;
    match (permit.mode(), target) {
        (Mode::Redirect, Target::File(path)) => Err(file_in_redirect_mode(path)),
        (Mode::Redirect, target) => {
            let resource = match target {
                Target::Resource(resource) => resource,
                _ => Resource::Iframe,
            };
            let token = permit.token(&snapshot.cache).await?;
            token_issued(snapshot, &permit, ctx, &token, Via::Redirect);
            redirect(&snapshot.origin, &token, resource, query)
        }
        // The player page references its manifests relatively: give it a URL whose directory
        // is the video's. No token is needed for that.
        (Mode::Proxy, Target::Player) => Ok(to_player(video, query)),
        // Boxed: the proxy's future is large, and the cache-hit redirect would otherwise carry
        // (and move) all that space.
        (Mode::Proxy, target) => {
            let token = permit.upstream_token(&snapshot.cache).await?;
            token_issued(snapshot, &permit, ctx, &token, Via::Proxy);
            let request = Forward {
                method: &head.method,
                headers: &head.headers,
                token: token.token.expose(),
                path: target.upstream_path(),
                query,
                video,
            };
            Box::pin(proxied(snapshot, request, &token, &permit, ctx)).await
        }
    }
}

/// A debug line per token a request used (signed or from the cache), and its audit event.
fn token_issued(
    snapshot: &Snapshot,
    permit: &Permit<'_>,
    ctx: &Context,
    token: &IssuedToken,
    via: Via,
) {
    super::audit_token(snapshot, ctx, permit, token, via);
    tracing::debug!(
        video = %permit.video().uid,
        rule = permit.rule(),
        subject = crate::untrusted::clip(ctx.identity.subject(), crate::untrusted::LOG_CHARS),
        "token issued"
    );
}

/// Fetch the target from Stream with `token` and stream it back. A token the origin refuses
/// is replaced once (one signature per refused token, however many requests saw it refused)
/// and the request tried again; a refused replacement, or a refusal while the last
/// replacement is cooling down, is passed on as a 403 with the origin's reason.
async fn proxied(
    snapshot: &Snapshot,
    mut request: Forward<'_>,
    token: &Arc<IssuedToken>,
    permit: &Permit<'_>,
    ctx: &Context,
) -> Result<Response<Body>, RequestError> {
    let request_id = ctx.id.clone();
    let response = forward(snapshot, &request).await?;
    if !proxy::refused_token(response.status()) {
        return upstream_status(snapshot, response).map(|r| watch_body(snapshot, r, request_id));
    }
    let Some(replacement) = permit.replacement_token(&snapshot.cache, token).await? else {
        tracing::debug!(
            video = %permit.video().uid,
            status = response.status().as_u16(),
            "the Stream origin refused a recent replacement token; not signing again yet"
        );
        return Err(refused(snapshot, response, request.token).await);
    };
    tracing::warn!(
        video = %permit.video().uid,
        status = response.status().as_u16(),
        "the Stream origin refused a token; trying its replacement"
    );
    drop(response);
    token_issued(snapshot, permit, ctx, &replacement, Via::Proxy);
    request.token = replacement.token.expose();
    let response = forward(snapshot, &request).await?;
    if !proxy::refused_token(response.status()) {
        return upstream_status(snapshot, response).map(|r| watch_body(snapshot, r, request_id));
    }
    Err(refused(snapshot, response, request.token).await)
}

/// The 403 for a refusal that stands, with the first line of the origin's reason (rewritten
/// like any other text body, and `token` withheld from the line once more).
async fn refused(snapshot: &Snapshot, response: Response<Body>, token: &str) -> RequestError {
    snapshot.metrics.upstream_error(UpstreamErrorKind::Refused);
    let reason = proxy::short_reason(response, token, 1024, Duration::from_secs(2)).await;
    RequestError::Forbidden(format!("the Stream origin refused the token: {reason}"))
}

/// One upstream exchange, timed and counted.
async fn forward(
    snapshot: &Snapshot,
    request: &Forward<'_>,
) -> Result<Response<Body>, RequestError> {
    let started = Instant::now();
    match snapshot.upstream.forward(request).await {
        Ok(response) => {
            snapshot.metrics.upstream(started.elapsed());
            Ok(response)
        }
        Err(error) => {
            snapshot.metrics.upstream_error(match error {
                UpstreamError::Timeout(_) => UpstreamErrorKind::Timeout,
                UpstreamError::Connect(_) => UpstreamErrorKind::Connect,
                UpstreamError::Failed(_) => UpstreamErrorKind::Body,
            });
            Err(RequestError::Upstream(error))
        }
    }
}

/// `response` with its body watched: a body that breaks off once the head has gone (stalled,
/// too slow, reset) is counted (`streamgate_upstream_errors_total{kind="body"}`) and logged
/// with the request id. The viewer sees the response end early.
fn watch_body(
    snapshot: &Snapshot,
    response: Response<Body>,
    request_id: HeaderValue,
) -> Response<Body> {
    let metrics = std::sync::Arc::clone(&snapshot.metrics);
    response.map(|body| {
        body.on_end(move |end, bytes| {
            if let BodyEnd::Failed(error) = end {
                metrics.upstream_error(UpstreamErrorKind::Body);
                tracing::warn!(
                    request_id = request_id.to_str().unwrap_or(""),
                    bytes,
                    %error,
                    "the Stream origin's body broke off; the viewer's response is truncated"
                );
            }
        })
    })
}

/// Stream's own failures are reported as a bad gateway, not passed on as our 5xx.
fn upstream_status(
    snapshot: &Snapshot,
    response: Response<Body>,
) -> Result<Response<Body>, RequestError> {
    let status = response.status();
    if status.is_server_error() {
        snapshot
            .metrics
            .upstream_error(UpstreamErrorKind::Status5xx);
        return Err(RequestError::UpstreamStatus(status.as_u16()));
    }
    Ok(response)
}

/// `302 Location: <origin>/<token>/<resource>[?query]`, never cached, never leaking the
/// token through a Referer. For HEAD, hyper sends the same head without a body.
pub fn redirect(
    origin: &str,
    token: &IssuedToken,
    resource: Resource,
    query: Option<&str>,
) -> Result<Response<Body>, RequestError> {
    if resource == Resource::Iframe && query.is_none() {
        // The most common answer: its headers built once per token, then copied.
        let headers = token
            .player_redirect(origin, || {
                location_value(origin, token, resource, None).map(found_headers)
            })
            .ok_or(RequestError::Internal(
                "redirect location is not a valid header value",
            ))?;
        return Ok(found(headers));
    }
    let location = location_value(origin, token, resource, query).ok_or(RequestError::Internal(
        "redirect location is not a valid header value",
    ))?;
    Ok(found(found_headers(location)))
}

/// `<origin>/<token>/<resource>[?query]` as a header value. The origin, token (base64url)
/// and query were all validated, so this fails only if there is a bug.
fn location_value(
    origin: &str,
    token: &IssuedToken,
    resource: Resource,
    query: Option<&str>,
) -> Option<HeaderValue> {
    let token = token.token.expose();
    let path = resource.path();
    let mut location = String::with_capacity(
        origin.len() + token.len() + path.len() + 3 + query.map_or(0, |q| q.len() + 1),
    );
    location.push_str(origin);
    location.push('/');
    location.push_str(token);
    location.push('/');
    location.push_str(path);
    if let Some(query) = query {
        location.push('?');
        location.push_str(query);
    }

    HeaderValue::try_from(location).ok()
}

/// `302 Found` with `headers` (from [`found_headers`]).
fn found(headers: HeaderMap) -> Response<Body> {
    let mut response = Response::new(Body::new(Bytes::new()));
    *response.status_mut() = StatusCode::FOUND;
    *response.headers_mut() = headers;
    response
}

/// A redirect's headers: to `location`, never cached, never leaking the token through a
/// Referer. `X-Request-Id` is there, empty and last, for the edge to fill in place as it
/// sets it on every response (`request::id::set_request_id`): a map copied from a cached one
/// has no spare room, and growing it for one more header cost more than the copy saved.
fn found_headers(location: HeaderValue) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(LOCATION, location);
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(REQUEST_ID, HeaderValue::from_static(""));
    headers
}

/// `302 Location: /watch/<video>/iframe[?query]`: in proxy mode the player page must be
/// served from a URL whose directory is the video's, so its relative references resolve
/// below it. Relative, and carries no token.
pub fn to_player(video: &str, query: Option<&str>) -> Response<Body> {
    let mut location = format!("/watch/{video}/iframe");
    if let Some(query) = query {
        location.push('?');
        location.push_str(query);
    }
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::FOUND;
    if let Ok(location) = HeaderValue::try_from(location) {
        response.headers_mut().insert(LOCATION, location);
    }
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
    response
}
