//! The one router: pure functions from method and path to a [`Route`] (or a client error),
//! and the metrics label of every request, matched or not.

use http::Method;

use crate::error::{RequestError, truncate};
use crate::metrics;
use crate::token::VideoUid;
use crate::token::claims::is_valid_alias;

/// Where the demo page's static files live.
pub const ASSETS_PREFIX: &str = "/assets/";

/// A static file of the demo page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Asset {
    Script,
    Style,
    Icon,
}

impl Asset {
    /// The file below [`ASSETS_PREFIX`] that `path` names, if it is one of ours.
    pub fn from_path(path: &str) -> Option<Asset> {
        match path.strip_prefix(ASSETS_PREFIX)? {
            "demo.js" => Some(Asset::Script),
            "demo.css" => Some(Asset::Style),
            "favicon.svg" => Some(Asset::Icon),
            _ => None,
        }
    }
}

/// Longest request path accepted, in bytes; longer gets 414.
pub const MAX_PATH_BYTES: usize = 2048;

/// A Stream resource a token can be used for, as it appears after `<origin>/<token>/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    Iframe,
    HlsManifest,
    DashManifest,
    Thumbnail,
    Download,
}

impl Resource {
    const ALL: [Resource; 5] = [
        Resource::Iframe,
        Resource::HlsManifest,
        Resource::DashManifest,
        Resource::Thumbnail,
        Resource::Download,
    ];

    /// The path below the token.
    pub fn path(self) -> &'static str {
        match self {
            Resource::Iframe => "iframe",
            Resource::HlsManifest => "manifest/video.m3u8",
            Resource::DashManifest => "manifest/video.mpd",
            Resource::Thumbnail => "thumbnails/thumbnail.jpg",
            Resource::Download => "downloads/default.mp4",
        }
    }

    fn from_path(path: &str) -> Option<Resource> {
        Resource::ALL.into_iter().find(|r| r.path() == path)
    }

    /// Query parameters passed on to Stream: the player's options, the thumbnail's size.
    fn allowed_query(self) -> Option<&'static [&'static str]> {
        match self {
            Resource::Iframe => Some(&[
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
            ]),
            Resource::Thumbnail => Some(&["time", "height", "width", "fit"]),
            _ => None,
        }
    }
}

/// What below the token a `/watch/<video>/...` request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target<'a> {
    /// `/watch/<video>`: the player.
    Player,
    /// A documented Stream resource.
    Resource(Resource),
    /// Any other file below the token (what manifests reference: renditions, segments,
    /// captions). Served in proxy mode only. Checked: relative, no `.`/`..` segments, plain
    /// characters.
    File(&'a str),
}

impl Target<'_> {
    /// The path below the token on Stream.
    pub fn upstream_path(&self) -> &str {
        match self {
            Target::Player => Resource::Iframe.path(),
            Target::Resource(resource) => resource.path(),
            Target::File(path) => path,
        }
    }

    /// Whether the target is an MP4 download (which needs a `downloadable` token).
    pub fn is_download(&self) -> bool {
        match self {
            Target::Resource(resource) => *resource == Resource::Download,
            Target::File(path) => path.starts_with("downloads/"),
            Target::Player => false,
        }
    }
}

/// What a request asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route<'a> {
    /// `/watch/<video>[/<path>]`: `video` is syntactically a uid or an alias.
    Watch {
        video: &'a str,
        target: Target<'a>,
        /// The query to pass on, already checked.
        query: Option<&'a str>,
    },
    /// `POST /api/getSignedURL`.
    GetSignedUrl,
    /// `OPTIONS /api/...`: a CORS preflight (or a plain question about the methods).
    ApiOptions { allow: &'static str },
    /// `/healthz`.
    Health,
    /// `/readyz`: answered by the edge, which sees the reload state.
    Ready,
    /// `/metrics` on the gateway's own listener (when `metrics_listen` is not set).
    Metrics,
    /// `GET /`: the demo and embed page.
    Home,
    /// `GET /sign-in`: ask the browser to sign in, then back to `/`.
    SignIn,
    /// A static file of the demo page.
    Asset(Asset),
    /// `/accounts/{account_id}/stream/{video}/token`, Stream's token API; any method, so that
    /// the answer (405 included) comes in Stream's envelope.
    StreamToken { account_id: &'a str, video: &'a str },
}

/// A request's route as the router matched it, with the metrics label it is counted under.
#[derive(Debug)]
pub struct Matched<'a> {
    /// The `route` label, also for requests the router refused (a `/watch` path that is not
    /// a valid video is still counted as `watch`).
    pub label: metrics::Route,
    pub route: Result<Route<'a>, RequestError>,
}

/// Route one request: the one place a path is read.
pub fn route<'a>(method: &Method, path: &'a str, query: Option<&'a str>) -> Matched<'a> {
    let route = match_route(method, path, query);
    let label = match &route {
        Ok(route) => route.label(),
        Err(_) => label_of_unmatched(path),
    };
    Matched { label, route }
}

impl Route<'_> {
    /// The metrics label of a matched route.
    pub fn label(&self) -> metrics::Route {
        match self {
            Route::Watch {
                target: Target::File(_),
                ..
            } => metrics::Route::WatchFile,
            Route::Watch { .. } => metrics::Route::Watch,
            Route::GetSignedUrl | Route::ApiOptions { .. } => metrics::Route::Api,
            Route::Health => metrics::Route::Health,
            Route::Ready => metrics::Route::Ready,
            Route::Metrics => metrics::Route::Metrics,
            Route::Home | Route::SignIn | Route::Asset(_) => metrics::Route::Page,
            Route::StreamToken { .. } => metrics::Route::TokenApi,
        }
    }
}

/// The label of a request the router refused, by the family its path belongs to: a bad
/// `/watch` request is still a `watch` request.
fn label_of_unmatched(path: &str) -> metrics::Route {
    match path {
        "/healthz" => metrics::Route::Health,
        "/readyz" => metrics::Route::Ready,
        "/metrics" => metrics::Route::Metrics,
        "/api/getSignedURL" => metrics::Route::Api,
        "/" | "/sign-in" | "/favicon.ico" => metrics::Route::Page,
        _ if path.starts_with(ASSETS_PREFIX) => metrics::Route::Page,
        _ if path.starts_with("/accounts/") => metrics::Route::TokenApi,
        "/watch" => metrics::Route::Watch,
        _ if path.starts_with("/watch/") => metrics::Route::Watch,
        _ => metrics::Route::Other,
    }
}

/// Match `method` and `path` (with `query`) to a route, or explain why not.
pub fn match_route<'a>(
    method: &Method,
    path: &'a str,
    query: Option<&'a str>,
) -> Result<Route<'a>, RequestError> {
    if path.len() > MAX_PATH_BYTES {
        return Err(RequestError::UriTooLong);
    }
    if let Some(rest) = path.strip_prefix("/watch/") {
        require_method(method, &[Method::GET, Method::HEAD], "GET, HEAD")?;
        return match_watch(rest, query);
    }
    if let Some(rest) = path.strip_prefix("/accounts/") {
        return match rest.split('/').collect::<Vec<_>>()[..] {
            [account_id, "stream", video, "token"] => Ok(Route::StreamToken { account_id, video }),
            _ => Err(RequestError::NotFound(
                "no such route; the token API is POST /accounts/<account id>/stream/<video>/token"
                    .into(),
            )),
        };
    }
    match path {
        "/watch" => Err(RequestError::BadRequest(
            "missing video: use /watch/<video uid or alias>".into(),
        )),
        "/api/getSignedURL" if method == Method::OPTIONS => Ok(Route::ApiOptions {
            allow: "POST, OPTIONS",
        }),
        "/api/getSignedURL" => {
            require_method(method, &[Method::POST], "POST, OPTIONS")?;
            Ok(Route::GetSignedUrl)
        }
        "/" => {
            require_method(method, &[Method::GET, Method::HEAD], "GET, HEAD")?;
            Ok(Route::Home)
        }
        // Browsers ask for it on every page, the error pages included.
        "/favicon.ico" => {
            require_method(method, &[Method::GET, Method::HEAD], "GET, HEAD")?;
            Ok(Route::Asset(Asset::Icon))
        }
        "/sign-in" => {
            require_method(method, &[Method::GET, Method::HEAD], "GET, HEAD")?;
            Ok(Route::SignIn)
        }
        _ if path.starts_with(ASSETS_PREFIX) => {
            let asset = Asset::from_path(path)
                .ok_or_else(|| RequestError::NotFound("no such file".into()))?;
            require_method(method, &[Method::GET, Method::HEAD], "GET, HEAD")?;
            Ok(Route::Asset(asset))
        }
        "/healthz" => {
            require_method(method, &[Method::GET, Method::HEAD], "GET, HEAD")?;
            Ok(Route::Health)
        }
        "/readyz" => {
            require_method(method, &[Method::GET, Method::HEAD], "GET, HEAD")?;
            Ok(Route::Ready)
        }
        "/metrics" => {
            require_method(method, &[Method::GET, Method::HEAD], "GET, HEAD")?;
            Ok(Route::Metrics)
        }
        _ => Err(RequestError::NotFound("no such route".into())),
    }
}

fn require_method(
    method: &Method,
    allowed: &[Method],
    allow: &'static str,
) -> Result<(), RequestError> {
    if allowed.contains(method) {
        Ok(())
    } else {
        Err(RequestError::MethodNotAllowed { allow })
    }
}

fn match_watch<'a>(rest: &'a str, query: Option<&'a str>) -> Result<Route<'a>, RequestError> {
    if rest.contains('%') {
        // Aliases, uids and resources are plain ASCII: an escape can only be an attempt to
        // smuggle a `/` or `..` past the matcher.
        return Err(RequestError::BadRequest(
            "percent-encoded characters are not allowed in /watch paths".into(),
        ));
    }
    let (video, resource_path) = match rest.split_once('/') {
        Some((video, resource)) => (video, Some(resource)),
        None => (rest, None),
    };
    if video.is_empty() {
        return Err(RequestError::BadRequest(
            "missing video: use /watch/<video uid or alias>".into(),
        ));
    }
    check_video_id(video)?;
    let target = match resource_path {
        None => Target::Player,
        // `..` (and `.`) is a traversal attempt wherever it appears, not an unknown file.
        Some(path) if path.split('/').any(|segment| matches!(segment, "." | "..")) => {
            return Err(RequestError::BadRequest(
                "`.` and `..` segments are not allowed in /watch paths".into(),
            ));
        }
        Some(path) => match Resource::from_path(path) {
            Some(resource) => Target::Resource(resource),
            None if is_safe_file_path(path) => Target::File(path),
            None => {
                return Err(RequestError::NotFound(format!(
                    "unknown resource `{}`; one of: {}",
                    truncate(path),
                    Resource::ALL.map(Resource::path).join(", ")
                )));
            }
        },
    };
    let query = query.filter(|q| !q.is_empty());
    let resource = match target {
        Target::Player => Resource::Iframe,
        Target::Resource(resource) => resource,
        Target::File(_) => {
            return match query {
                Some(query) if !is_safe_query(query) => Err(RequestError::BadRequest(
                    "the query may hold only letters, digits and -._~%=&+".into(),
                )),
                query => Ok(Route::Watch {
                    video,
                    target,
                    query,
                }),
            };
        }
    };
    let query = match (query, resource.allowed_query()) {
        (None, _) | (Some(_), None) => None,
        (Some(query), Some(allowed)) => {
            for pair in query.split('&') {
                let name = pair.split_once('=').map_or(pair, |(name, _)| name);
                if !allowed.contains(&name) {
                    return Err(RequestError::BadRequest(format!(
                        "unsupported query parameter `{}` for {}; allowed: {}",
                        truncate(name),
                        resource.path(),
                        allowed.join(", ")
                    )));
                }
            }
            Some(query)
        }
    };
    Ok(Route::Watch {
        video,
        target,
        query,
    })
}

/// `Ok` when `video` is shaped like a video uid (32 hex characters) or an alias; the same
/// check for every route that names a video (`/watch`, `/api/getSignedURL`, the token API),
/// so a malformed id is a 400 everywhere, before credentials are looked at.
pub fn check_video_id(video: &str) -> Result<(), RequestError> {
    if video.parse::<VideoUid>().is_ok() || is_valid_alias(video) {
        return Ok(());
    }
    Err(RequestError::BadRequest(format!(
        "`{}` is not a video uid (32 hex characters) or alias (letters, digits, `.`, `_`, `-`)",
        truncate(video)
    )))
}

/// Most segments a file path below the token may have, and their longest length.
const MAX_FILE_SEGMENTS: usize = 8;
const MAX_SEGMENT_BYTES: usize = 128;

/// A relative path of plain segments: `manifest/seg_360p_0.ts`; never empty segments, `.`
/// or `..`, or anything that could be read as another origin or an escape.
fn is_safe_file_path(path: &str) -> bool {
    let segments: Vec<&str> = path.split('/').collect();
    segments.len() <= MAX_FILE_SEGMENTS
        && segments.iter().all(|segment| {
            !segment.is_empty()
                && segment.len() <= MAX_SEGMENT_BYTES
                && !segment.starts_with('.')
                && segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        })
}

fn is_safe_query(query: &str) -> bool {
    query.bytes().all(|b| {
        b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'_' | b'~' | b'%' | b'=' | b'&' | b'+')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str) -> Result<Route<'_>, RequestError> {
        match_route(&Method::GET, path, None)
    }

    #[test]
    fn watch_defaults_to_the_player_page() {
        assert_eq!(
            get("/watch/intro").unwrap(),
            Route::Watch {
                video: "intro",
                target: Target::Player,
                query: None
            }
        );
    }

    #[test]
    fn every_stream_resource_is_routed() {
        for resource in Resource::ALL {
            let path = format!(
                "/watch/0123456789abcdef0123456789abcdef/{}",
                resource.path()
            );
            match get(&path).unwrap() {
                Route::Watch { target, .. } => assert_eq!(target, Target::Resource(resource)),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn traversal_and_escapes_are_bad_requests() {
        for path in [
            "/watch/../etc/passwd",
            "/watch/..",
            "/watch/%2e%2e/iframe",
            "/watch/intro%2Fiframe",
            "/watch/.hidden",
            "/watch/intro/manifest/../iframe",
            "/watch/intro/./iframe",
            "/watch/welcome/../welcome",
            "/watch/intro/manifest/..",
            "/watch/",
            "/watch//iframe",
            "/watch",
        ] {
            let err = get(path).unwrap_err();
            assert!(
                matches!(err, RequestError::BadRequest(_)),
                "{path}: {err:?}"
            );
        }
    }

    #[test]
    fn odd_sub_paths_are_not_found() {
        for path in [
            "/watch/intro/",
            "/watch/intro/manifest/",
            "/watch/intro/a//b",
            "/watch/intro/.env",
            "/watch/intro/...",
            "/watch/intro/a:b",
            "/watch/intro/a/b/c/d/e/f/g/h/i",
        ] {
            let err = get(path).unwrap_err();
            assert!(matches!(err, RequestError::NotFound(_)), "{path}: {err:?}");
        }
    }

    #[test]
    fn other_files_below_the_video_are_routed_as_files() {
        let route = match_route(
            &Method::GET,
            "/watch/intro/manifest/seg_360p_0.ts",
            Some("x=1"),
        )
        .unwrap();
        assert_eq!(
            route,
            Route::Watch {
                video: "intro",
                target: Target::File("manifest/seg_360p_0.ts"),
                query: Some("x=1"),
            }
        );
        let bad = match_route(&Method::GET, "/watch/intro/manifest/a.ts", Some("a=<b>"));
        assert!(matches!(bad.unwrap_err(), RequestError::BadRequest(_)));
        assert!(Target::File("downloads/other.mp4").is_download());
        assert!(Target::Resource(Resource::Download).is_download());
        assert!(!Target::File("manifest/downloads.m3u8").is_download());
    }

    #[test]
    fn the_token_api_path_is_matched_for_any_method() {
        let path = "/accounts/023e105f4ecef8ad9ca31a8372d0c353/stream/intro/token";
        for method in [Method::POST, Method::GET, Method::DELETE] {
            assert_eq!(
                match_route(&method, path, None).unwrap(),
                Route::StreamToken {
                    account_id: "023e105f4ecef8ad9ca31a8372d0c353",
                    video: "intro"
                }
            );
        }
        for path in [
            "/accounts/a/stream/intro",
            "/accounts/a/stream/intro/token/x",
            "/accounts/a/images/intro/token",
            "/accounts/",
        ] {
            assert!(
                matches!(get(path).unwrap_err(), RequestError::NotFound(_)),
                "{path}"
            );
        }
    }

    #[test]
    fn demo_page_routes() {
        assert_eq!(get("/").unwrap(), Route::Home);
        assert_eq!(get("/sign-in").unwrap(), Route::SignIn);
        assert!(matches!(get("/assets/demo.js").unwrap(), Route::Asset(_)));
        assert!(matches!(
            get("/assets/../config.yaml").unwrap_err(),
            RequestError::NotFound(_)
        ));
        assert_eq!(
            match_route(&Method::OPTIONS, "/api/getSignedURL", None).unwrap(),
            Route::ApiOptions {
                allow: "POST, OPTIONS"
            }
        );
    }

    #[test]
    fn every_request_gets_the_label_of_its_family_matched_or_not() {
        let label = |method: Method, path: &str| route(&method, path, None).label;
        assert_eq!(label(Method::GET, "/watch/intro"), metrics::Route::Watch);
        assert_eq!(label(Method::GET, "/watch"), metrics::Route::Watch);
        assert_eq!(label(Method::GET, "/watch/%2e%2e"), metrics::Route::Watch);
        assert_eq!(label(Method::POST, "/watch/intro"), metrics::Route::Watch);
        assert_eq!(
            label(Method::GET, "/watch/intro/manifest/seg_1.ts"),
            metrics::Route::WatchFile
        );
        assert_eq!(label(Method::GET, "/api/getSignedURL"), metrics::Route::Api);
        assert_eq!(
            label(Method::OPTIONS, "/api/getSignedURL"),
            metrics::Route::Api
        );
        assert_eq!(label(Method::GET, "/assets/nope"), metrics::Route::Page);
        assert_eq!(label(Method::GET, "/readyz"), metrics::Route::Ready);
        assert_eq!(label(Method::POST, "/metrics"), metrics::Route::Metrics);
        assert_eq!(
            label(Method::GET, "/accounts/a/stream/b/token"),
            metrics::Route::TokenApi
        );
        assert_eq!(label(Method::GET, "/nope"), metrics::Route::Other);
    }

    #[test]
    fn huge_paths_are_refused_before_parsing() {
        let path = format!("/watch/{}", "a".repeat(MAX_PATH_BYTES));
        assert!(matches!(get(&path).unwrap_err(), RequestError::UriTooLong));
    }

    #[test]
    fn thumbnail_keeps_only_its_documented_query() {
        let path = "/watch/intro/thumbnails/thumbnail.jpg";
        let ok = match_route(&Method::GET, path, Some("time=2s&height=120")).unwrap();
        assert!(matches!(
            ok,
            Route::Watch {
                query: Some("time=2s&height=120"),
                ..
            }
        ));
        let bad = match_route(&Method::GET, path, Some("token=x")).unwrap_err();
        assert!(matches!(bad, RequestError::BadRequest(_)));
        let dropped = match_route(
            &Method::GET,
            "/watch/intro/manifest/video.m3u8",
            Some("a=b"),
        );
        assert!(matches!(dropped.unwrap(), Route::Watch { query: None, .. }));
    }

    #[test]
    fn wrong_methods_name_the_allowed_ones() {
        let err = match_route(&Method::POST, "/watch/intro", None).unwrap_err();
        assert!(matches!(
            err,
            RequestError::MethodNotAllowed { allow: "GET, HEAD" }
        ));
        let err = match_route(&Method::GET, "/api/getSignedURL", None).unwrap_err();
        assert!(matches!(
            err,
            RequestError::MethodNotAllowed {
                allow: "POST, OPTIONS"
            }
        ));
        let err = match_route(&Method::POST, "/", None).unwrap_err();
        assert!(matches!(
            err,
            RequestError::MethodNotAllowed { allow: "GET, HEAD" }
        ));
        assert!(matches!(
            get("/nope").unwrap_err(),
            RequestError::NotFound(_)
        ));
    }
}
