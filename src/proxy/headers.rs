//! Header rules for proxying, in one place: what crosses from the viewer to Stream and back.
//! Both directions are allow-lists: a header not named here does not cross.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// What this gateway adds to `Via`.
pub const VIA: &str = "1.1 streamgate";

/// The viewer's request headers Stream may see: content negotiation and the viewer's agent.
/// Nothing that names or locates the viewer (addresses, country, `Referer`, cookies,
/// credentials): one token serves every viewer of a rule, so nothing a viewer sends may make
/// Stream judge that token differently.
const UPSTREAM_REQUEST: [HeaderName; 3] =
    [header::ACCEPT, header::ACCEPT_LANGUAGE, header::USER_AGENT];

/// The viewer's headers that ask for part of a representation, or for none if unchanged:
/// passed on only for a body that passes through untouched (a part of a document cannot be
/// rewritten, and a rewritten document has validators of its own).
const UPSTREAM_REQUEST_PARTIAL: [HeaderName; 4] = [
    header::RANGE,
    header::IF_RANGE,
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
];

/// Stream's response headers the viewer may see, besides `Cache-Control` (made private) and
/// `Location` (rewritten, see [`super::rewrite::Rewriter::location`]).
const DOWNSTREAM_RESPONSE: [HeaderName; 10] = [
    header::CONTENT_TYPE,
    // A download's file name.
    header::CONTENT_DISPOSITION,
    header::CONTENT_LENGTH,
    header::CONTENT_RANGE,
    header::ACCEPT_RANGES,
    header::ETAG,
    header::LAST_MODIFIED,
    header::EXPIRES,
    header::VARY,
    header::DATE,
];

/// Header names listed in `Connection`: hop-by-hop, so never passed on even when allowed.
fn connection_named(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::try_from(name.trim()).ok())
        .collect()
}

/// The request headers to send to Stream: the allowed ones the viewer sent, plus ours
/// (`Accept-Encoding: identity`, `Via`). The client library sets `Host` from the upstream
/// URI. `whole_body`: the answer may have to be rewritten, so ask for all of it,
/// unconditionally.
///
/// No `X-Forwarded-For`: Stream judges a token against the connection's address (the
/// gateway's) anyway, and the viewer's address is no business of Stream's.
pub fn upstream_request_headers(downstream: &HeaderMap, whole_body: bool) -> HeaderMap {
    let named = connection_named(downstream);
    let partial: &[HeaderName] = if whole_body {
        &[]
    } else {
        &UPSTREAM_REQUEST_PARTIAL
    };
    let mut out = HeaderMap::with_capacity(UPSTREAM_REQUEST.len() + partial.len() + 2);
    for name in UPSTREAM_REQUEST.iter().chain(partial) {
        if named.contains(name) {
            continue;
        }
        for value in downstream.get_all(name) {
            out.append(name.clone(), value.clone());
        }
    }
    // Without Accept-Encoding any coding would be acceptable (RFC 9110 §12.5.3), and a
    // coded document cannot be rewritten.
    out.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    out.append(header::VIA, HeaderValue::from_static(VIA));
    out
}

/// Stream's response headers as the viewer gets them: the allowed ones whose value does not
/// hold `token`, `Cache-Control` limited to the viewer's own browser (the gateway's URL does
/// not carry the token that authorised the response, so a shared cache must never store
/// it), `Via` and `X-Content-Type-Options: nosniff` (a body is only ever what its type says,
/// and only text types are rewritten). `untouched_body`: the body passes through as it is,
/// so its `Content-Encoding` goes with it (a rewritten body never has one).
pub fn downstream_response_headers(
    upstream: &HeaderMap,
    token: &str,
    untouched_body: bool,
) -> HeaderMap {
    let named = connection_named(upstream);
    let holds_token = |value: &HeaderValue| contains(value.as_bytes(), token.as_bytes());
    let encoding: &[HeaderName] = if untouched_body {
        &[header::CONTENT_ENCODING]
    } else {
        &[]
    };
    let mut out = HeaderMap::with_capacity(DOWNSTREAM_RESPONSE.len() + 4);
    // One pass over what Stream sent (a handful of headers), rather than a lookup per
    // allowed name.
    for (name, value) in upstream {
        let allowed = DOWNSTREAM_RESPONSE.contains(name) || encoding.contains(name);
        if allowed && !named.contains(name) && !holds_token(value) {
            out.append(name.clone(), value.clone());
        }
    }
    let cache_control = upstream
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter(|value| !holds_token(value));
    out.insert(header::CACHE_CONTROL, private_cache_control(cache_control));
    out.append(header::VIA, HeaderValue::from_static(VIA));
    out.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    out
}

/// Whether `needle` (not empty) occurs in `haystack`.
pub(crate) fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty()
        && haystack
            .windows(needle.len())
            .any(|window| window == needle)
}

/// Upstream `Cache-Control` with shared-cache permissions removed and `private` added
/// (unless it already forbids storing).
fn private_cache_control<'a>(upstream: impl Iterator<Item = &'a HeaderValue>) -> HeaderValue {
    let mut kept = String::new();
    let mut no_store = false;
    let directives = upstream
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim);
    for directive in directives {
        let name = directive.split('=').next().unwrap_or("");
        let shared = ["public", "s-maxage", "private"]
            .iter()
            .any(|n| name.eq_ignore_ascii_case(n));
        if directive.is_empty() || shared {
            continue;
        }
        no_store |= directive.eq_ignore_ascii_case("no-store");
        if !kept.is_empty() {
            kept.push_str(", ");
        }
        kept.push_str(directive);
    }
    let value = match (no_store, kept.is_empty()) {
        (true, _) => kept,
        (false, true) => return HeaderValue::from_static("private"),
        (false, false) => {
            let mut value = String::with_capacity(kept.len() + 9);
            value.push_str("private, ");
            value.push_str(&kept);
            value
        }
    };
    HeaderValue::try_from(value).unwrap_or_else(|_| HeaderValue::from_static("private"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln";

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

    fn names(map: &HeaderMap) -> Vec<&str> {
        let mut names: Vec<&str> = map.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        names
    }

    #[test]
    fn only_allowed_request_headers_reach_stream() {
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
            ("forwarded", "for=6.6.6.6"),
            ("cf-connecting-ip", "6.6.6.6"),
            ("true-client-ip", "6.6.6.6"),
            ("cf-ipcountry", "KP"),
            ("referer", "https://viewer.example/page"),
            ("origin", "https://viewer.example"),
            ("host", "videos.example.com"),
            ("accept-encoding", "gzip"),
            ("range", "bytes=0-99"),
            ("if-range", "\"abc\""),
            ("if-none-match", "\"abc\""),
            ("if-modified-since", "Wed, 21 Oct 2015 07:28:00 GMT"),
            ("accept", "*/*"),
            ("accept-language", "en"),
            ("user-agent", "test"),
        ]);
        let out = upstream_request_headers(&downstream, false);
        assert_eq!(
            names(&out),
            [
                "accept",
                "accept-encoding",
                "accept-language",
                "if-modified-since",
                "if-none-match",
                "if-range",
                "range",
                "user-agent",
                "via",
            ]
        );
        assert_eq!(out["accept-encoding"], "identity");
        assert_eq!(out["via"], VIA);
        assert_eq!(out["range"], "bytes=0-99");
        assert_eq!(out["user-agent"], "test");

        let whole = upstream_request_headers(&downstream, true);
        assert_eq!(
            names(&whole),
            [
                "accept",
                "accept-encoding",
                "accept-language",
                "user-agent",
                "via"
            ]
        );
        assert_eq!(whole["accept-encoding"], "identity");
    }

    #[test]
    fn an_allowed_request_header_named_by_connection_stays_behind() {
        let downstream = headers(&[("connection", "range"), ("range", "bytes=0-1")]);
        let out = upstream_request_headers(&downstream, false);
        assert!(!out.contains_key("range"));
    }

    #[test]
    fn only_allowed_response_headers_reach_the_viewer() {
        let upstream = headers(&[
            ("connection", "close, x-hop"),
            ("x-hop", "1"),
            ("transfer-encoding", "chunked"),
            ("set-cookie", "a=b"),
            ("link", "</x>; rel=preload"),
            ("content-location", "/x"),
            ("x-end-to-end", "dropped"),
            ("content-encoding", "gzip"),
            ("content-disposition", "attachment"),
            ("access-control-allow-origin", "*"),
            (
                "cache-control",
                "public, max-age=31536000, immutable, s-maxage=60",
            ),
            ("content-type", "video/mp2t"),
            ("content-length", "10"),
            ("content-range", "bytes 0-9/100"),
            ("accept-ranges", "bytes"),
            ("etag", "\"e\""),
            ("last-modified", "Wed, 21 Oct 2015 07:28:00 GMT"),
            ("expires", "Thu, 22 Oct 2015 07:28:00 GMT"),
            ("vary", "Accept"),
            ("date", "Wed, 21 Oct 2015 07:28:00 GMT"),
        ]);
        let out = downstream_response_headers(&upstream, TOKEN, false);
        assert_eq!(
            names(&out),
            [
                "accept-ranges",
                "cache-control",
                "content-disposition",
                "content-length",
                "content-range",
                "content-type",
                "date",
                "etag",
                "expires",
                "last-modified",
                "vary",
                "via",
                "x-content-type-options",
            ]
        );
        assert_eq!(out["cache-control"], "private, max-age=31536000, immutable");
        assert_eq!(out["x-content-type-options"], "nosniff");
        let untouched = downstream_response_headers(&upstream, TOKEN, true);
        assert_eq!(untouched["content-encoding"], "gzip");
        let no_store =
            downstream_response_headers(&headers(&[("cache-control", "no-store")]), TOKEN, true);
        assert_eq!(no_store["cache-control"], "no-store");
        let none = downstream_response_headers(&HeaderMap::new(), TOKEN, true);
        assert_eq!(none["cache-control"], "private");
    }

    #[test]
    fn an_allowed_response_header_holding_the_token_is_dropped() {
        let upstream = headers(&[
            ("content-type", &format!("text/plain; x={TOKEN}")),
            ("etag", &format!("\"{TOKEN}\"")),
            ("etag", "\"kept\""),
            ("vary", TOKEN),
            ("cache-control", &format!("max-age=60, x=\"{TOKEN}\"")),
            ("cache-control", "no-cache"),
        ]);
        let out = downstream_response_headers(&upstream, TOKEN, true);
        assert!(!out.contains_key("content-type") && !out.contains_key("vary"));
        let etags: Vec<_> = out.get_all("etag").iter().collect();
        assert_eq!(etags, ["\"kept\""]);
        assert_eq!(out["cache-control"], "private, no-cache");
        for (name, value) in &out {
            assert!(!contains(value.as_bytes(), TOKEN.as_bytes()), "{name}");
        }
    }
}
