//! Header rules for proxying, in one place: what crosses from the viewer to Stream and back.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Connection-scoped headers (RFC 9110 §7.6.1): never forwarded in either direction.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authenticate",
];

/// What this gateway adds to `Via`.
pub const VIA: &str = "1.1 streamgate";

fn is_hop_by_hop(name: &HeaderName, named_by_connection: &[HeaderName]) -> bool {
    let name = name.as_str();
    HOP_BY_HOP.contains(&name)
        || name.starts_with("proxy-")
        || named_by_connection.iter().any(|n| n.as_str() == name)
}

/// Header names listed in `Connection` (which are hop-by-hop too).
fn connection_named(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::try_from(name.trim()).ok())
        .collect()
}

/// The viewer's request headers to send to Stream: end-to-end headers only, without the
/// viewer's own credentials or forwarding claims, plus `Via` and `X-Forwarded-For`.
/// `whole_body`: ask for the whole, unencoded representation (the body will be rewritten).
pub fn upstream_request_headers(
    downstream: &HeaderMap,
    client_ip: IpAddr,
    whole_body: bool,
) -> HeaderMap {
    let named = connection_named(downstream);
    let mut out = HeaderMap::with_capacity(downstream.len() + 2);
    for (name, value) in downstream {
        let dropped = is_hop_by_hop(name, &named)
            || matches!(
                name.as_str(),
                // The viewer's credentials for this gateway are no business of Stream's.
                "authorization" | "cookie" | "x-api-key"
                // Set by the client library from the upstream URI.
                | "host" | "content-length" | "expect"
                // Replaced by ours.
                | "forwarded" | "x-forwarded-for" | "x-forwarded-host" | "x-forwarded-proto"
                | "x-real-ip"
            )
            || (whole_body
                && matches!(
                    name.as_str(),
                    "range"
                        | "if-range"
                        | "accept-encoding"
                        | "if-none-match"
                        | "if-modified-since"
                ));
        if !dropped {
            out.append(name.clone(), value.clone());
        }
    }
    if whole_body {
        // No Accept-Encoding would mean "any coding is fine"; the body must be rewritable.
        out.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
    }
    out.append(header::VIA, HeaderValue::from_static(VIA));
    if let Ok(ip) = HeaderValue::try_from(client_ip.to_string()) {
        out.insert(HeaderName::from_static("x-forwarded-for"), ip);
    }
    out
}

/// Stream's response headers as the viewer gets them: end-to-end only, `Via` added, and
/// caching limited to the viewer's own browser (the gateway's URL does not carry the token
/// that authorised the response, so a shared cache must never store it).
pub fn downstream_response_headers(upstream: &HeaderMap) -> HeaderMap {
    let named = connection_named(upstream);
    let mut out = HeaderMap::with_capacity(upstream.len() + 1);
    for (name, value) in upstream {
        if !is_hop_by_hop(name, &named) && name != header::CACHE_CONTROL {
            out.append(name.clone(), value.clone());
        }
    }
    out.append(header::VIA, HeaderValue::from_static(VIA));
    out.insert(header::CACHE_CONTROL, private_cache_control(upstream));
    out
}

/// Upstream `Cache-Control` with shared-cache permissions removed and `private` added
/// (unless it already forbids storing).
fn private_cache_control(upstream: &HeaderMap) -> HeaderValue {
    let mut directives: Vec<String> = upstream
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|d| d.trim().to_string())
        .filter(|d| {
            let name = d.split('=').next().unwrap_or("").to_ascii_lowercase();
            !d.is_empty() && name != "public" && name != "s-maxage" && name != "private"
        })
        .collect();
    if !directives
        .iter()
        .any(|d| d.eq_ignore_ascii_case("no-store"))
    {
        directives.insert(0, "private".into());
    }
    HeaderValue::try_from(directives.join(", "))
        .unwrap_or_else(|_| HeaderValue::from_static("private"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::try_from(*name).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn credentials_hop_by_hop_and_forwarding_claims_stay_behind() {
        let downstream = headers(&[
            ("authorization", "Basic YTpi"),
            ("cookie", "session=secret"),
            ("x-api-key", "k"),
            ("connection", "keep-alive, x-private"),
            ("x-private", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("proxy-authorization", "x"),
            ("x-forwarded-for", "6.6.6.6"),
            ("host", "videos.example.com"),
            ("range", "bytes=0-99"),
            ("if-none-match", "\"abc\""),
            ("user-agent", "test"),
        ]);
        let out = upstream_request_headers(&downstream, "203.0.113.7".parse().unwrap(), false);
        for gone in [
            "authorization",
            "cookie",
            "x-api-key",
            "connection",
            "x-private",
            "keep-alive",
            "te",
            "proxy-authorization",
            "host",
        ] {
            assert!(!out.contains_key(gone), "{gone} forwarded");
        }
        assert_eq!(out["x-forwarded-for"], "203.0.113.7");
        assert_eq!(out["via"], VIA);
        assert_eq!(out["range"], "bytes=0-99");
        assert_eq!(out["user-agent"], "test");
        let whole = upstream_request_headers(&downstream, "203.0.113.7".parse().unwrap(), true);
        assert!(!whole.contains_key("range") && !whole.contains_key("if-none-match"));
        assert_eq!(whole["accept-encoding"], "identity");
    }

    #[test]
    fn responses_lose_hop_by_hop_headers_and_shared_caching() {
        let upstream = headers(&[
            ("connection", "close, x-hop"),
            ("x-hop", "1"),
            ("transfer-encoding", "chunked"),
            (
                "cache-control",
                "public, max-age=31536000, immutable, s-maxage=60",
            ),
            ("content-range", "bytes 0-9/100"),
            ("etag", "\"e\""),
        ]);
        let out = downstream_response_headers(&upstream);
        assert!(!out.contains_key("connection") && !out.contains_key("x-hop"));
        assert!(!out.contains_key("transfer-encoding"));
        assert_eq!(out["cache-control"], "private, max-age=31536000, immutable");
        assert_eq!(out["content-range"], "bytes 0-9/100");
        assert_eq!(out["via"], VIA);
        let no_store = downstream_response_headers(&headers(&[("cache-control", "no-store")]));
        assert_eq!(no_store["cache-control"], "no-store");
        let none = downstream_response_headers(&HeaderMap::new());
        assert_eq!(none["cache-control"], "private");
    }
}
