//! The plain-HTTP listener next to HTTPS: `308` to the same host and path over `https://`,
//! except `GET /healthz`, answered here.

use std::net::{Ipv6Addr, SocketAddr};

use http::header::{HOST, LOCATION};
use http::uri::Authority;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri};
use hyper::body::Incoming;

use crate::Body;
use crate::error::RequestError;
use crate::http::server::Handler;

/// The plain-HTTP listener next to HTTPS: `308` to the same host and path over `https://`,
/// except `GET /healthz`, answered here.
#[derive(Debug, Clone)]
pub struct HttpsRedirect {
    https_port: u16,
}

impl HttpsRedirect {
    /// Redirect to the HTTPS listener on `https_port` (left out of the URL when 443).
    pub fn new(https_port: u16) -> Self {
        Self { https_port }
    }

    /// The response to a request, from its method, target and headers.
    pub fn respond(&self, method: &Method, uri: &Uri, headers: &HeaderMap) -> Response<Body> {
        if uri.path() == "/healthz" && (method == Method::GET || method == Method::HEAD) {
            return crate::error::json_response(
                StatusCode::OK,
                &serde_json::json!({"status": "ok"}),
            );
        }
        let Some(host) = request_host(uri, headers) else {
            return RequestError::BadRequest(
                "missing or invalid Host header; use https:// to reach this gateway".into(),
            )
            .into_response();
        };
        let port = match self.https_port {
            443 => String::new(),
            port => format!(":{port}"),
        };
        let path = match uri.path() {
            path if path.starts_with('/') => path,
            _ => "/",
        };
        let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
        let location = format!("https://{host}{port}{path}{query}");
        let Ok(location) = HeaderValue::try_from(location) else {
            return RequestError::BadRequest("invalid request target".into()).into_response();
        };
        let mut response = Response::new(Body::default());
        *response.status_mut() = StatusCode::PERMANENT_REDIRECT;
        response.headers_mut().insert(LOCATION, location);
        response
    }
}

impl Handler for HttpsRedirect {
    async fn handle(&self, req: Request<Incoming>, _peer: SocketAddr) -> Response<Body> {
        self.respond(req.method(), req.uri(), req.headers())
    }
}

/// The host the client asked for: the request target's authority (HTTP/2 `:authority`, or
/// an absolute-form target), else the single `Host` header. Lowercased, without port; `None`
/// when missing or not a plain DNS name or IP literal.
fn request_host(uri: &Uri, headers: &HeaderMap) -> Option<String> {
    let authority = match uri.authority() {
        Some(authority) => authority.clone(),
        None => {
            let mut values = headers.get_all(HOST).iter();
            let (Some(value), None) = (values.next(), values.next()) else {
                return None;
            };
            value.to_str().ok()?.parse::<Authority>().ok()?
        }
    };
    if authority.as_str().contains('@') {
        return None;
    }
    let host = authority.host();
    let valid = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(literal) => literal.parse::<Ipv6Addr>().is_ok(),
        None => {
            !host.is_empty()
                && host.len() <= 253
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
        }
    };
    valid.then(|| host.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn respond(port: u16, method: Method, target: &str, host: Option<&str>) -> Response<Body> {
        let uri: Uri = target.parse().unwrap();
        let mut headers = HeaderMap::new();
        if let Some(host) = host {
            headers.insert(HOST, HeaderValue::from_str(host).unwrap());
        }
        HttpsRedirect::new(port).respond(&method, &uri, &headers)
    }

    fn location(response: &Response<Body>) -> &str {
        assert_eq!(response.status(), StatusCode::PERMANENT_REDIRECT);
        response.headers()[LOCATION].to_str().unwrap()
    }

    #[test]
    fn redirects_keep_host_path_and_query_and_add_the_https_port() {
        let get = Method::GET;
        let cases = [
            (
                8443,
                "/watch/intro?x=1&y=%20",
                Some("Example.com:8080"),
                "https://example.com:8443/watch/intro?x=1&y=%20",
            ),
            (443, "/a", Some("example.com"), "https://example.com/a"),
            (443, "/", Some("[::1]:80"), "https://[::1]/"),
            (
                8443,
                "http://h2.example/p?q",
                None,
                "https://h2.example:8443/p?q",
            ),
            (443, "*", Some("example.com"), "https://example.com/"),
        ];
        for (port, target, host, expected) in cases {
            let response = respond(port, get.clone(), target, host);
            assert_eq!(location(&response), expected);
        }
        let post = respond(443, Method::POST, "/healthz", Some("a.example"));
        assert_eq!(location(&post), "https://a.example/healthz");
    }

    #[test]
    fn healthz_is_answered_and_bad_hosts_are_refused() {
        assert_eq!(
            respond(443, Method::GET, "/healthz", None).status(),
            StatusCode::OK
        );
        for host in [
            None,
            Some(""),
            Some("user@evil.example"),
            Some("a b"),
            Some("[zz]"),
            Some("evil.example/path"),
        ] {
            let response = respond(443, Method::GET, "/x", host);
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{host:?}");
        }
        let mut headers = HeaderMap::new();
        headers.append(HOST, HeaderValue::from_static("a.example"));
        headers.append(HOST, HeaderValue::from_static("b.example"));
        let response =
            HttpsRedirect::new(443).respond(&Method::GET, &"/".parse().unwrap(), &headers);
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    }
}
