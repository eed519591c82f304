//! The plain-HTTP listener next to HTTPS: `308` to the same path over `https://`, except
//! `GET /healthz`, answered here.
//!
//! The `Location` never takes a name only because the client sent it: with `auth.public_url`
//! (an `https://` origin) every redirect goes there; otherwise the request's Host must be a
//! name (or address) the serving certificate covers, and anything else is a 400.

use std::net::{Ipv6Addr, SocketAddr};
use std::sync::Arc;

use http::header::{HOST, LOCATION};
use http::uri::Authority;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use rustls::sign::CertifiedKey;
use rustls_pki_types::ServerName;

use crate::Body;
use crate::app::live::Live;
use crate::error::RequestError;
use crate::http::server::Handler;
use crate::http::tls::CertStore;
use crate::snapshot::Snapshot;

/// The plain-HTTP listener next to HTTPS, reading the live `auth.public_url` and the current
/// certificate for each request.
pub struct HttpsRedirect {
    https_port: u16,
    live: Arc<Live<Snapshot>>,
    certs: Arc<CertStore>,
}

/// Where a redirect may send the client.
#[derive(Clone, Copy)]
pub enum Destination<'a> {
    /// `auth.public_url`, an `https://` origin: every request goes there, whatever its Host.
    PublicUrl(&'a str),
    /// The Host the client asked for, when this certificate is valid for it, on the HTTPS
    /// listener's port.
    CertifiedHost {
        cert: &'a CertifiedKey,
        https_port: u16,
    },
}

impl HttpsRedirect {
    /// Redirect to the HTTPS listener on `https_port` (left out of the URL when 443).
    pub fn new(https_port: u16, live: Arc<Live<Snapshot>>, certs: Arc<CertStore>) -> Self {
        Self {
            https_port,
            live,
            certs,
        }
    }
}

impl Handler for HttpsRedirect {
    async fn handle(&self, req: Request<Incoming>, _peer: SocketAddr) -> Response<Body> {
        let snapshot = self.live.current();
        let cert = self.certs.current();
        let destination = match snapshot.settings.identity.public_url.as_deref() {
            Some(url) if url.starts_with("https://") => Destination::PublicUrl(url),
            _ => Destination::CertifiedHost {
                cert: &cert,
                https_port: self.https_port,
            },
        };
        respond(req.method(), req.uri(), req.headers(), destination)
    }
}

/// The response to a request, from its method, target and headers.
pub fn respond(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    destination: Destination<'_>,
) -> Response<Body> {
    if uri.path() == "/healthz" && (method == Method::GET || method == Method::HEAD) {
        return crate::error::json_response(StatusCode::OK, &serde_json::json!({"status": "ok"}));
    }
    let origin = match destination {
        Destination::PublicUrl(url) => url.trim_end_matches('/').to_string(),
        Destination::CertifiedHost { cert, https_port } => {
            let Some(host) = request_host(uri, headers) else {
                return RequestError::BadRequest(
                    "missing or invalid Host header; use https:// to reach this gateway".into(),
                )
                .into_response();
            };
            if !certifies(cert, &host) {
                return RequestError::BadRequest(
                    "this gateway does not serve that host over HTTPS; use its https:// address"
                        .into(),
                )
                .into_response();
            }
            match https_port {
                443 => format!("https://{host}"),
                port => format!("https://{host}:{port}"),
            }
        }
    };
    let path = match uri.path() {
        path if path.starts_with('/') => path,
        _ => "/",
    };
    let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    let Ok(location) = HeaderValue::try_from(format!("{origin}{path}{query}")) else {
        return RequestError::BadRequest("invalid request target".into()).into_response();
    };
    let mut response = Response::new(Body::default());
    *response.status_mut() = StatusCode::PERMANENT_REDIRECT;
    response.headers_mut().insert(LOCATION, location);
    response
}

/// Whether the certificate's end-entity is valid for `host` (a DNS name, or an IP literal,
/// IPv6 in brackets), by the same rules a browser applies.
fn certifies(cert: &CertifiedKey, host: &str) -> bool {
    let name = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let (Ok(leaf), Ok(name)) = (cert.end_entity_cert(), ServerName::try_from(name)) else {
        return false;
    };
    webpki::EndEntityCert::try_from(leaf)
        .and_then(|leaf| leaf.verify_is_valid_for_subject_name(&name))
        .is_ok()
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

    /// A certificate for `names` (DNS names, wildcards and IP addresses).
    fn cert_for(names: &[&str]) -> CertifiedKey {
        let key = rcgen::KeyPair::generate().unwrap();
        let names = names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let cert = rcgen::CertificateParams::new(names)
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let der = rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
        let signing = rustls::crypto::aws_lc_rs::sign::any_supported_type(&der).unwrap();
        CertifiedKey::new(vec![cert.der().clone()], signing)
    }

    fn respond_to(
        destination: Destination<'_>,
        method: Method,
        target: &str,
        host: Option<&str>,
    ) -> Response<Body> {
        let uri: Uri = target.parse().unwrap();
        let mut headers = HeaderMap::new();
        if let Some(host) = host {
            headers.insert(HOST, HeaderValue::from_str(host).unwrap());
        }
        respond(&method, &uri, &headers, destination)
    }

    fn location(response: &Response<Body>) -> &str {
        assert_eq!(response.status(), StatusCode::PERMANENT_REDIRECT);
        response.headers()[LOCATION].to_str().unwrap()
    }

    #[test]
    fn redirects_keep_a_certified_host_path_and_query_and_add_the_https_port() {
        let cert = cert_for(&["example.com", "*.example.net", "::1", "127.0.0.1"]);
        let on = |https_port| Destination::CertifiedHost {
            cert: &cert,
            https_port,
        };
        let cases = [
            (
                8443,
                "/watch/intro?x=1&y=%20",
                Some("Example.com:8080"),
                "https://example.com:8443/watch/intro?x=1&y=%20",
            ),
            (443, "/a", Some("example.com"), "https://example.com/a"),
            (
                443,
                "/a",
                Some("videos.example.net"),
                "https://videos.example.net/a",
            ),
            (443, "/", Some("[::1]:80"), "https://[::1]/"),
            (443, "/", Some("127.0.0.1:80"), "https://127.0.0.1/"),
            (
                8443,
                "http://example.com/p?q",
                None,
                "https://example.com:8443/p?q",
            ),
            (443, "*", Some("example.com"), "https://example.com/"),
        ];
        for (port, target, host, expected) in cases {
            let response = respond_to(on(port), Method::GET, target, host);
            assert_eq!(location(&response), expected);
        }
        let post = respond_to(on(443), Method::POST, "/healthz", Some("example.com"));
        assert_eq!(location(&post), "https://example.com/healthz");
    }

    #[test]
    fn a_host_the_certificate_does_not_cover_is_refused_not_echoed() {
        let cert = cert_for(&["example.com", "*.example.net"]);
        let on = Destination::CertifiedHost {
            cert: &cert,
            https_port: 443,
        };
        for host in [
            "evil.example",
            "example.com.evil.example",
            "a.b.example.net",
            "example.net",
            "10.0.0.1",
            "[::1]",
        ] {
            let response = respond_to(on, Method::GET, "/watch/intro", Some(host));
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{host}");
            assert!(response.headers().get(LOCATION).is_none(), "{host}");
        }
    }

    #[test]
    fn with_a_public_url_every_redirect_goes_there_whatever_the_host() {
        let public = Destination::PublicUrl("https://videos.example.com");
        for host in [Some("evil.example"), None, Some("videos.example.com")] {
            let response = respond_to(public, Method::GET, "/watch/intro?t=1", host);
            assert_eq!(
                location(&response),
                "https://videos.example.com/watch/intro?t=1"
            );
        }
    }

    #[test]
    fn healthz_is_answered_and_bad_hosts_are_refused() {
        let cert = cert_for(&["a.example", "b.example"]);
        let on = Destination::CertifiedHost {
            cert: &cert,
            https_port: 443,
        };
        assert_eq!(
            respond_to(on, Method::GET, "/healthz", None).status(),
            StatusCode::OK
        );
        for host in [
            None,
            Some(""),
            Some("user@a.example"),
            Some("a b"),
            Some("[zz]"),
            Some("a.example/path"),
        ] {
            let response = respond_to(on, Method::GET, "/x", host);
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{host:?}");
        }
        let mut headers = HeaderMap::new();
        headers.append(HOST, HeaderValue::from_static("a.example"));
        headers.append(HOST, HeaderValue::from_static("b.example"));
        let response = respond(&Method::GET, &"/".parse().unwrap(), &headers, on);
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    }
}
