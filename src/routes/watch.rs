//! `GET|HEAD /watch/<video>[/<resource>]`: answer with a redirect to the signed Stream URL.

use bytes::Bytes;
use http::header::{CACHE_CONTROL, LOCATION, REFERRER_POLICY};
use http::{HeaderValue, Response, StatusCode};

use super::Resource;
use crate::Body;
use crate::error::RequestError;
use crate::gateway::Minted;

/// `302 Location: <origin>/<token>/<resource>[?query]`, never cached, never leaking the
/// token through a Referer. For HEAD, hyper sends the same head without a body.
pub fn redirect(
    origin: &str,
    minted: &Minted<'_>,
    resource: Resource,
    query: Option<&str>,
) -> Result<Response<Body>, RequestError> {
    if resource == Resource::Iframe && query.is_none() {
        // The most common answer: built once per token, then shared.
        let location = minted
            .token
            .player_location(origin, || location_value(origin, minted, resource, None))
            .ok_or(RequestError::Internal(
                "redirect location is not a valid header value",
            ))?;
        return Ok(found(location));
    }
    let location = location_value(origin, minted, resource, query).ok_or(
        RequestError::Internal("redirect location is not a valid header value"),
    )?;
    Ok(found(location))
}

/// `<origin>/<token>/<resource>[?query]` as a header value. The origin, token (base64url)
/// and query were all validated, so this fails only if there is a bug.
fn location_value(
    origin: &str,
    minted: &Minted<'_>,
    resource: Resource,
    query: Option<&str>,
) -> Option<HeaderValue> {
    let token = minted.token.token.expose();
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

/// `302 Found` to `location`, never cached, never leaking the token through a Referer.
fn found(location: HeaderValue) -> Response<Body> {
    let mut response = Response::new(Body::new(Bytes::new()));
    *response.status_mut() = StatusCode::FOUND;
    let headers = response.headers_mut();
    headers.insert(LOCATION, location);
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
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
