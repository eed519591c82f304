//! Cross-origin access to `/api/*`: which other sites' pages may call the JSON API from a
//! browser, with the visitor's cookies.
//!
//! Only origins the operator lists get CORS headers, always with credentials. A cross-origin
//! request from any other origin is refused before anything else happens, so a page
//! elsewhere cannot make a visitor's browser mint tokens with the visitor's cookie (the
//! `application/json` body already forces a preflight; this refuses the rest too).

use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_METHOD, ALLOW, HOST, ORIGIN, VARY,
};
use http::{HeaderMap, HeaderValue, Response, StatusCode, Uri};

use crate::Body;
use crate::config::CorsSettings;
use crate::error::RequestError;

/// Request headers a cross-origin page may send to `/api/*`.
const ALLOWED_HEADERS: &str = "Content-Type, Authorization, X-Api-Key, X-Request-Id";
/// Response headers a cross-origin page may read.
const EXPOSED_HEADERS: &str = "X-Request-Id, Retry-After, WWW-Authenticate";

/// What the `Origin` of an `/api/*` request means.
#[derive(Debug, PartialEq, Eq)]
pub enum Cors {
    /// No `Origin`, or the gateway's own: nothing to add.
    SameOrigin,
    /// A listed origin: the response carries CORS headers for it.
    Allowed(HeaderValue),
}

/// Classify the request's `Origin` against the allow list; an unlisted foreign origin is a
/// 403 naming it.
pub fn check(
    headers: &HeaderMap,
    uri: &Uri,
    settings: &CorsSettings,
    public_url: Option<&str>,
) -> Result<Cors, RequestError> {
    let Some(origin) = headers.get(ORIGIN) else {
        return Ok(Cors::SameOrigin);
    };
    let text = origin.to_str().unwrap_or("").trim();
    let lowered = text.to_ascii_lowercase();
    if settings.allowed_origins.contains(&lowered) {
        return Ok(Cors::Allowed(origin.clone()));
    }
    if is_same_origin(&lowered, headers, uri, public_url) {
        return Ok(Cors::SameOrigin);
    }
    Err(RequestError::Forbidden(format!(
        "cross-origin requests from `{}` are not allowed; the operator lists trusted sites in cors.allowed_origins",
        crate::error::truncate(text)
    )))
}

/// Whether `origin` (lowercase) is this gateway: the configured public URL, or the host the
/// request was sent to (`Host`, or the authority of an HTTP/2 request).
fn is_same_origin(origin: &str, headers: &HeaderMap, uri: &Uri, public_url: Option<&str>) -> bool {
    if public_url.is_some_and(|public| public.eq_ignore_ascii_case(origin)) {
        return true;
    }
    let Some((_, origin_host)) = origin.split_once("://") else {
        return false;
    };
    let host = headers
        .get(HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()));
    host.is_some_and(|host| host.eq_ignore_ascii_case(origin_host))
}

/// Add the CORS headers for an allowed origin to an answer (errors included, so the page can
/// read the reason).
pub fn decorate(response: &mut Response<Body>, cors: &Cors) {
    let Cors::Allowed(origin) = cors else { return };
    let headers = response.headers_mut();
    headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    headers.insert(
        ACCESS_CONTROL_ALLOW_CREDENTIALS,
        HeaderValue::from_static("true"),
    );
    headers.insert(
        ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSED_HEADERS),
    );
    headers.append(VARY, HeaderValue::from_static("Origin"));
}

/// Answer `OPTIONS` on an `/api/*` path: a preflight from a listed origin gets the methods
/// and headers it may use; an `OPTIONS` without `Origin` just learns the methods.
pub fn preflight(
    headers: &HeaderMap,
    cors: &Cors,
    allow: &'static str,
    max_age: std::time::Duration,
) -> Response<Body> {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    let is_preflight = headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD);
    let out = response.headers_mut();
    out.insert(ALLOW, HeaderValue::from_static(allow));
    if is_preflight && matches!(cors, Cors::Allowed(_)) {
        out.insert(
            ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(allow),
        );
        out.insert(
            ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(ALLOWED_HEADERS),
        );
        out.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from(max_age.as_secs()));
        out.append(
            VARY,
            HeaderValue::from_static(
                "Access-Control-Request-Method, Access-Control-Request-Headers",
            ),
        );
    }
    decorate(&mut response, cors);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> CorsSettings {
        CorsSettings {
            allowed_origins: vec!["https://www.example.com".into()],
            max_age: std::time::Duration::from_secs(600),
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn uri() -> Uri {
        Uri::from_static("/api/getSignedURL")
    }

    #[test]
    fn listed_origins_are_allowed_in_any_case() {
        let h = headers(&[("origin", "https://WWW.example.com")]);
        assert!(matches!(
            check(&h, &uri(), &settings(), None).unwrap(),
            Cors::Allowed(_)
        ));
    }

    #[test]
    fn no_origin_and_the_gateways_own_are_same_origin() {
        let none = headers(&[("host", "videos.example.com")]);
        assert_eq!(
            check(&none, &uri(), &settings(), None).unwrap(),
            Cors::SameOrigin
        );
        let own = headers(&[
            ("origin", "http://127.0.0.1:8080"),
            ("host", "127.0.0.1:8080"),
        ]);
        assert_eq!(
            check(&own, &uri(), &settings(), None).unwrap(),
            Cors::SameOrigin
        );
        let public = headers(&[
            ("origin", "https://videos.example.com"),
            ("host", "10.0.0.5:8080"),
        ]);
        assert_eq!(
            check(
                &public,
                &uri(),
                &settings(),
                Some("https://videos.example.com")
            )
            .unwrap(),
            Cors::SameOrigin
        );
    }

    #[test]
    fn other_origins_are_refused_by_name() {
        for origin in [
            "https://evil.example",
            "null",
            "https://www.example.com.evil",
        ] {
            let h = headers(&[("origin", origin), ("host", "127.0.0.1:8080")]);
            let error = check(&h, &uri(), &settings(), None).unwrap_err();
            assert!(error.to_string().contains(origin), "{error}");
        }
        // The port is part of the origin.
        let h = headers(&[
            ("origin", "http://127.0.0.1:9999"),
            ("host", "127.0.0.1:8080"),
        ]);
        assert!(check(&h, &uri(), &settings(), None).is_err());
    }

    #[test]
    fn preflight_from_a_listed_origin_gets_methods_headers_and_credentials() {
        let h = headers(&[
            ("origin", "https://www.example.com"),
            ("access-control-request-method", "POST"),
        ]);
        let cors = check(&h, &uri(), &settings(), None).unwrap();
        let response = preflight(&h, &cors, "POST, OPTIONS", settings().max_age);
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        let out = response.headers();
        assert_eq!(out[ACCESS_CONTROL_ALLOW_ORIGIN], "https://www.example.com");
        assert_eq!(out[ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert_eq!(out[ACCESS_CONTROL_ALLOW_METHODS], "POST, OPTIONS");
        assert!(
            out[ACCESS_CONTROL_ALLOW_HEADERS]
                .to_str()
                .unwrap()
                .contains("Content-Type")
        );
        assert_eq!(out[ACCESS_CONTROL_MAX_AGE], "600");
    }

    #[test]
    fn options_without_origin_only_lists_methods() {
        let response = preflight(
            &HeaderMap::new(),
            &Cors::SameOrigin,
            "POST, OPTIONS",
            settings().max_age,
        );
        assert_eq!(response.headers()[ALLOW], "POST, OPTIONS");
        assert!(!response.headers().contains_key(ACCESS_CONTROL_ALLOW_ORIGIN));
    }
}
