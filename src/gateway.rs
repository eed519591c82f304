//! Dispatch: route → handler → one error rendering. Nothing else happens here.
//!
//! The edge ([`crate::app::edge`]) has already made the request context and matched the
//! route; the handlers in [`crate::routes`] do the work; a refusal becomes a response in
//! [`render`] only.

use http::request::Parts;
use http::{HeaderValue, Response, StatusCode, Uri};
use hyper::body::Incoming;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::Body;
use crate::config::Settings;
use crate::error::{Audience, RequestError, json_response, prefers_html};
use crate::request::Context;
use crate::request::route::Route;
use crate::routes::{self, cors};
use crate::snapshot::Snapshot;

/// Answer one request whose route the edge matched. Never fails: errors are rendered.
pub async fn serve(
    snapshot: &Snapshot,
    ctx: &mut Context,
    route: Result<Route<'_>, RequestError>,
    head: &Parts,
    body: Incoming,
) -> Response<Body> {
    // A page on another site may call `/api/*` only from a listed origin.
    let (cors, refused) = if head.uri.path().starts_with("/api/") {
        match cors_of(snapshot, head) {
            Ok(cors) => (Some(cors), None),
            Err(refused) => (None, Some(refused)),
        }
    } else {
        (None, None)
    };
    // Each arm yields the response itself, not a `Result` matched a second time.
    let mut response = match (refused, route) {
        (Some(error), _) | (None, Err(error)) => render(snapshot, head, error),
        (None, Ok(route)) => match dispatch(snapshot, ctx, route, head, body).await {
            Ok(response) => response,
            Err(error) => render(snapshot, head, error),
        },
    };
    if let Some(cors) = &cors {
        cors::decorate(&mut response, cors);
    }
    response
}

/// The handler for `route`.
async fn dispatch(
    snapshot: &Snapshot,
    ctx: &mut Context,
    route: Route<'_>,
    head: &Parts,
    body: Incoming,
) -> Result<Response<Body>, RequestError> {
    let settings = &snapshot.settings;
    match route {
        Route::Watch {
            video,
            target,
            query,
        } => routes::watch::watch(snapshot, ctx, head, video, target, query).await,
        // Boxed, like the other routes below: their futures are large, and the cache-hit
        // redirect would otherwise carry (and move) all that space.
        Route::GetSignedUrl => {
            Box::pin(routes::api::get_signed_url(snapshot, ctx, head, body)).await
        }
        Route::ApiOptions { allow } => {
            let cors = cors_of(snapshot, head)?;
            Ok(cors::preflight(
                &head.headers,
                &cors,
                allow,
                settings.cors.max_age,
            ))
        }
        Route::Health => Ok(json_response(
            StatusCode::OK,
            &serde_json::json!({"status": "ok"}),
        )),
        // The edge answers these when they are served here.
        Route::Ready => Err(RequestError::NotFound("no such route".into())),
        Route::Metrics => Err(RequestError::NotFound(
            "/metrics is not served on this listener (see metrics_listen)".into(),
        )),
        Route::Home | Route::SignIn | Route::Asset(_) if !settings.demo_page => Err(
            RequestError::NotFound("no such route (the demo page is turned off)".into()),
        ),
        Route::Home => Box::pin(routes::demo::home(snapshot, ctx, head)).await,
        Route::SignIn => Box::pin(routes::demo::sign_in(snapshot, ctx, head)).await,
        Route::Asset(asset) => Ok(routes::demo::asset(asset)),
        Route::StreamToken { account_id, video } => Ok(Box::pin(routes::stream_api::create_token(
            snapshot, ctx, head, body, account_id, video,
        ))
        .await),
    }
}

/// Whether the request's `Origin` may call `/api/*` (see [`cors`]).
fn cors_of(snapshot: &Snapshot, head: &Parts) -> Result<cors::Cors, RequestError> {
    let settings = &snapshot.settings;
    cors::check(
        &head.headers,
        &head.uri,
        &settings.cors,
        settings.identity.public_url.as_deref(),
    )
}

/// The one place a refusal becomes a response (and is logged, once). Whether the client
/// prefers HTML (a browser navigating) is read here, on refusals only.
fn render(snapshot: &Snapshot, head: &Parts, error: RequestError) -> Response<Body> {
    let html = prefers_html(&head.headers);
    // Only a browser being sent to sign in needs the original URL afterwards.
    let login = html
        .then(|| login_location(&snapshot.settings, &head.uri))
        .flatten();
    error.render(&Audience {
        html,
        challenges: &snapshot.challenges,
        login,
    })
}

/// Where a browser that must sign in goes: `login_url?return_to=<this request>`. The return
/// address is this request's own path, made absolute only with the configured `public_url`,
/// never from the Host header, so it cannot point elsewhere.
fn login_location(settings: &Settings, uri: &Uri) -> Option<HeaderValue> {
    let identity = &settings.identity;
    let login = identity.login_url.as_deref()?;
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    if !path.starts_with('/') || path.starts_with("//") {
        return None;
    }
    let return_to = match &identity.public_url {
        Some(origin) => format!("{origin}{path}"),
        None => path.to_string(),
    };
    let separator = if login.contains('?') { '&' } else { '?' };
    let location = format!(
        "{login}{separator}return_to={}",
        utf8_percent_encode(&return_to, QUERY_VALUE)
    );
    HeaderValue::try_from(location).ok()
}

/// Characters escaped in a query parameter value.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');
