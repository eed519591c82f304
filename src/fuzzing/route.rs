//! The router: any method, path and query gets a route or a 4xx, and a matched route is one
//! the handlers can trust (a valid video, a safe relative path below the token, only the
//! documented query parameters).

use arbitrary::Arbitrary;
use http::Method;

use crate::request::route::{
    ASSETS_PREFIX, Asset, MAX_PATH_BYTES, Route, Target, match_route, route,
};
use crate::token::VideoUid;
use crate::token::claims::is_valid_alias;

/// One request line, built from pieces the router looks for.
#[derive(Debug, Arbitrary)]
pub struct Input {
    method: MethodChoice,
    path: PathInput,
    query: Option<Query>,
}

#[derive(Debug, Arbitrary)]
enum MethodChoice {
    Get,
    Head,
    Post,
    Options,
    Delete,
    Other(String),
}

#[derive(Debug, Arbitrary)]
enum PathInput {
    /// `/watch/<video>/...`.
    Watch(Segment, Vec<Segment>),
    /// `/accounts/<account>/stream/<video>/token`, give or take.
    Accounts(Vec<Segment>),
    /// One of the fixed routes, maybe with more after it.
    Fixed(u8, Option<String>),
    /// Any text (a `/` is put in front).
    Raw(String),
    /// Segments after `/`.
    Segments(Vec<Segment>),
}

#[derive(Debug, Arbitrary)]
enum Query {
    Pairs(Vec<(u8, String)>),
    Raw(String),
}

/// Query parameters the router knows, and some it does not.
const PARAMS: [&str; 8] = [
    "autoplay",
    "startTime",
    "time",
    "height",
    "token",
    "x",
    "",
    "muted",
];

const FIXED: [&str; 12] = [
    "/",
    "/healthz",
    "/readyz",
    "/metrics",
    "/api/getSignedURL",
    "/sign-in",
    "/favicon.ico",
    "/assets/demo.js",
    "/assets/demo.css",
    "/assets/favicon.svg",
    "/watch",
    "/accounts/",
];

#[derive(Debug, Arbitrary)]
enum Segment {
    Alias,
    Uid,
    Resource(u8),
    Dot,
    DotDot,
    Empty,
    Escaped(u8),
    Stream,
    Token,
    Account,
    Text(String),
}

const RESOURCES: [&str; 7] = [
    "iframe",
    "manifest/video.m3u8",
    "manifest/video.mpd",
    "thumbnails/thumbnail.jpg",
    "downloads/default.mp4",
    "manifest/seg_360p_0.ts",
    "demo.js",
];

impl Input {
    fn method(&self) -> Option<Method> {
        match &self.method {
            MethodChoice::Get => Some(Method::GET),
            MethodChoice::Head => Some(Method::HEAD),
            MethodChoice::Post => Some(Method::POST),
            MethodChoice::Options => Some(Method::OPTIONS),
            MethodChoice::Delete => Some(Method::DELETE),
            // Only what hyper would have parsed as a method reaches the router.
            MethodChoice::Other(name) => Method::from_bytes(name.as_bytes()).ok(),
        }
    }

    fn path(&self) -> String {
        match &self.path {
            PathInput::Watch(video, rest) => format!("/watch/{}", segments(video, rest)),
            PathInput::Accounts(rest) => match rest.split_first() {
                Some((first, rest)) => format!("/accounts/{}", segments(first, rest)),
                None => "/accounts/".into(),
            },
            PathInput::Fixed(i, more) => format!(
                "{}{}",
                FIXED[usize::from(*i) % FIXED.len()],
                more.as_deref().unwrap_or_default()
            ),
            PathInput::Raw(text) => format!("/{text}"),
            PathInput::Segments(rest) => match rest.split_first() {
                Some((first, rest)) => format!("/{}", segments(first, rest)),
                None => "/".into(),
            },
        }
    }

    fn query(&self) -> Option<String> {
        match self.query.as_ref()? {
            Query::Raw(text) => Some(text.clone()),
            Query::Pairs(pairs) => Some(
                pairs
                    .iter()
                    .map(|(name, value)| format!("{}={value}", PARAMS[usize::from(*name) % 8]))
                    .collect::<Vec<_>>()
                    .join("&"),
            ),
        }
    }
}

/// `first` and `rest` joined by `/`.
fn segments(first: &Segment, rest: &[Segment]) -> String {
    std::iter::once(first)
        .chain(rest)
        .map(|segment| match segment {
            Segment::Alias => "intro".to_string(),
            Segment::Uid => "ce800be43a9772f4bb02f35b860fb516".to_string(),
            Segment::Resource(i) => RESOURCES[usize::from(*i) % RESOURCES.len()].to_string(),
            Segment::Dot => ".".to_string(),
            Segment::DotDot => "..".to_string(),
            Segment::Empty => String::new(),
            Segment::Escaped(byte) => format!("%{byte:02X}"),
            Segment::Stream => "stream".to_string(),
            Segment::Token => "token".to_string(),
            Segment::Account => "023e105f4ecef8ad9ca31a8372d0c353".to_string(),
            Segment::Text(text) => text.clone(),
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Route the request and check what came out.
pub fn check(input: Input) {
    let Some(method) = input.method() else {
        return;
    };
    let path = input.path();
    let query = input.query();
    let query = query.as_deref();
    let matched = route(&method, &path, query);

    // The router is a pure function.
    let again = match_route(&method, &path, query);
    match (&matched.route, &again) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(a), Err(b)) => assert_eq!(a.status(), b.status()),
        (a, b) => panic!("two answers for one request: {a:?} and {b:?}"),
    }

    let route = match matched.route {
        Err(error) => {
            assert!(
                error.status().is_client_error(),
                "{method} {path:?}: a refused route is a 4xx, got {} ({error:?})",
                error.status()
            );
            if path.len() > MAX_PATH_BYTES {
                assert_eq!(error.status(), http::StatusCode::URI_TOO_LONG);
            }
            return;
        }
        Ok(route) => route,
    };
    assert!(path.len() <= MAX_PATH_BYTES, "an overlong path was routed");
    assert_eq!(matched.label, route.label());
    check_route(&method, &path, query, &route);
}

fn check_route(method: &Method, path: &str, query: Option<&str>, route: &Route<'_>) {
    match route {
        Route::Watch {
            video,
            target,
            query: passed,
        } => {
            assert!(
                *method == Method::GET || *method == Method::HEAD,
                "{method} reached a watch handler"
            );
            assert!(
                video.parse::<VideoUid>().is_ok() || is_valid_alias(video),
                "not a video: {video:?}"
            );
            let expected = match target {
                Target::Player => format!("/watch/{video}"),
                other => format!("/watch/{video}/{}", other.upstream_path()),
            };
            assert_eq!(path, expected, "the route does not spell the path");
            check_upstream_path(target.upstream_path());
            if let Some(passed) = passed {
                assert!(!passed.is_empty());
                assert_eq!(Some(*passed), query, "the query was changed");
                check_query(target, passed);
            }
        }
        Route::StreamToken { account_id, video } => {
            assert_eq!(path, format!("/accounts/{account_id}/stream/{video}/token"));
            assert!(!account_id.contains('/') && !video.contains('/'));
        }
        Route::Asset(asset) => {
            let file = match asset {
                Asset::Script => "/assets/demo.js",
                Asset::Style => "/assets/demo.css",
                Asset::Icon if path == "/favicon.ico" => "/favicon.ico",
                Asset::Icon => "/assets/favicon.svg",
            };
            assert_eq!(path, file);
            assert!(path.starts_with(ASSETS_PREFIX) || path == "/favicon.ico");
        }
        Route::GetSignedUrl => assert_eq!((method, path), (&Method::POST, "/api/getSignedURL")),
        Route::ApiOptions { .. } => {
            assert_eq!((method, path), (&Method::OPTIONS, "/api/getSignedURL"))
        }
        Route::Health => assert_eq!(path, "/healthz"),
        Route::Ready => assert_eq!(path, "/readyz"),
        Route::Metrics => assert_eq!(path, "/metrics"),
        Route::Home => assert_eq!(path, "/"),
        Route::SignIn => assert_eq!(path, "/sign-in"),
    }
}

/// What is appended to `<origin>/<token>/` upstream: relative, plain segments only.
fn check_upstream_path(upstream: &str) {
    assert!(!upstream.is_empty() && !upstream.starts_with('/'));
    for segment in upstream.split('/') {
        assert!(!segment.is_empty(), "empty segment in {upstream:?}");
        assert!(!segment.starts_with('.'), "dot segment in {upstream:?}");
        assert!(
            segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')),
            "odd characters in {upstream:?}"
        );
    }
}

/// A query passed on upstream holds only the documented parameters (or, for other files,
/// only plain characters).
fn check_query(target: &Target<'_>, query: &str) {
    let allowed: &[&str] = match target {
        Target::File(_) => {
            assert!(query.bytes().all(|b| b.is_ascii_alphanumeric()
                || matches!(b, b'-' | b'.' | b'_' | b'~' | b'%' | b'=' | b'&' | b'+')));
            return;
        }
        Target::Player => &[
            "autoplay",
            "controls",
            "defaultTextTrack",
            "letterboxColor",
            "loop",
            "muted",
            "poster",
            "preload",
            "primaryColor",
            "startTime",
        ],
        Target::Resource(resource) if resource.path() == "thumbnails/thumbnail.jpg" => {
            &["time", "height", "width", "fit"]
        }
        Target::Resource(resource) if resource.path() == "iframe" => &[
            "autoplay",
            "controls",
            "defaultTextTrack",
            "letterboxColor",
            "loop",
            "muted",
            "poster",
            "preload",
            "primaryColor",
            "startTime",
        ],
        Target::Resource(resource) => panic!("a query was passed on for {}", resource.path()),
    };
    for pair in query.split('&') {
        let name = pair.split_once('=').map_or(pair, |(name, _)| name);
        assert!(allowed.contains(&name), "parameter {name:?} passed on");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_request_gets_a_trustworthy_route_or_a_client_error() {
        super::super::property(super::check);
    }
}
