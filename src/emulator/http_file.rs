//! Serving one file the way an HTTP origin does (RFC 9110): validators (`ETag`,
//! `Last-Modified`), conditional requests (`If-Match`, `If-Unmodified-Since`, `If-None-Match`,
//! `If-Modified-Since`) and single byte ranges (`Range`, `If-Range`).
//!
//! Only reached once a token was accepted: a refused token never gets a 304 or a 206.

use std::time::SystemTime;

use aws_lc_rs::digest::{SHA256, digest};
use bytes::Bytes;
use http::header::{
    ACCEPT_RANGES, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG, IF_MATCH,
    IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE, IF_UNMODIFIED_SINCE, LAST_MODIFIED, RANGE,
    X_CONTENT_TYPE_OPTIONS,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode};
use http_range_header::RangeUnsatisfiableError;
use httpdate::HttpDate;

use crate::Body;

/// One servable file: its bytes and the metadata every response about it carries.
#[derive(Clone, Debug)]
pub struct Representation {
    body: Bytes,
    /// Strong entity tag, quoted (`"…"`): a digest of `body`.
    etag: HeaderValue,
    last_modified: HeaderValue,
    /// `last_modified` as a date, to compare with the request's (to the second).
    last_modified_date: HttpDate,
    content_type: &'static str,
    cache_control: &'static str,
}

impl Representation {
    /// A file of `body` (its strong `ETag` is computed here, so build static files once).
    ///
    /// # Panics
    /// If `last_modified` is before 1970 or after 9999, outside what an HTTP date can say.
    pub fn new(
        body: Bytes,
        content_type: &'static str,
        cache_control: &'static str,
        last_modified: SystemTime,
    ) -> Representation {
        let etag = HeaderValue::from_str(&strong_etag(&body))
            .expect("a quoted hex digest is a valid header value");
        let last_modified_date = HttpDate::from(last_modified);
        let last_modified = HeaderValue::from_str(&last_modified_date.to_string())
            .expect("an HTTP date is a valid header value");
        Representation {
            body,
            etag,
            last_modified,
            last_modified_date,
            content_type,
            cache_control,
        }
    }

    #[cfg(test)]
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    pub fn etag(&self) -> &str {
        self.etag
            .to_str()
            .expect("the ETag was built from visible ASCII")
    }

    /// Answer a `GET` or `HEAD` for this file, honouring the request's conditional and range
    /// headers: 200, 206, 304, 412 or 416.
    pub fn respond(&self, method: &Method, request: &HeaderMap) -> Response<Body> {
        let total = self.body.len() as u64;
        let outcome = evaluate(
            self.etag(),
            self.last_modified_date,
            total,
            *method == Method::GET,
            request,
        );
        let (status, body) = match outcome {
            Outcome::Full => (StatusCode::OK, self.body.clone()),
            Outcome::Partial(range) => (
                StatusCode::PARTIAL_CONTENT,
                // `evaluate` only returns ranges inside the body.
                self.body.slice(range.first as usize..=range.last as usize),
            ),
            Outcome::NotModified => (StatusCode::NOT_MODIFIED, Bytes::new()),
            Outcome::PreconditionFailed => (
                StatusCode::PRECONDITION_FAILED,
                Bytes::from_static(b"precondition failed"),
            ),
            Outcome::RangeNotSatisfiable => (
                StatusCode::RANGE_NOT_SATISFIABLE,
                Bytes::from_static(b"range not satisfiable"),
            ),
        };
        let body_len = body.len();
        let mut response = Response::new(Body::new(body));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        // What a 304 must repeat from the 200 (RFC 9110 §15.4.5), and what every answer about
        // this file may carry.
        headers.insert(ETAG, self.etag.clone());
        headers.insert(LAST_MODIFIED, self.last_modified.clone());
        let cache_control = match outcome {
            // An answer about this request's headers, not about the file: never stored.
            Outcome::PreconditionFailed | Outcome::RangeNotSatisfiable => "no-store",
            Outcome::Full | Outcome::Partial(_) | Outcome::NotModified => self.cache_control,
        };
        headers.insert(CACHE_CONTROL, HeaderValue::from_static(cache_control));
        headers.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        match outcome {
            Outcome::Full | Outcome::Partial(_) => {
                headers.insert(CONTENT_TYPE, HeaderValue::from_static(self.content_type));
                headers.insert(CONTENT_LENGTH, HeaderValue::from(body_len));
            }
            Outcome::PreconditionFailed | Outcome::RangeNotSatisfiable => {
                headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
                headers.insert(CONTENT_LENGTH, HeaderValue::from(body_len));
            }
            Outcome::NotModified => {}
        }
        match outcome {
            Outcome::Partial(range) => {
                let value = format!("bytes {}-{}/{total}", range.first, range.last);
                headers.insert(CONTENT_RANGE, header_value(value));
            }
            Outcome::RangeNotSatisfiable => {
                headers.insert(CONTENT_RANGE, header_value(format!("bytes */{total}")));
            }
            _ => {}
        }
        response
    }
}

fn header_value(text: String) -> HeaderValue {
    HeaderValue::try_from(text).expect("digits, spaces and punctuation are a valid header value")
}

/// `"<32 hex digits>"`: the first 128 bits of the body's SHA-256, quoted.
pub fn strong_etag(body: &[u8]) -> String {
    let hash = digest(&SHA256, body);
    format!("\"{}\"", crate::hex::encode(&hash.as_ref()[..16]))
}

// === conditional requests and ranges ===

/// An inclusive byte range inside the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteRange {
    pub first: u64,
    pub last: u64,
}

/// What to answer, after the request's preconditions and range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Full,
    Partial(ByteRange),
    NotModified,
    PreconditionFailed,
    RangeNotSatisfiable,
}

/// Evaluate the preconditions in RFC 9110 §13.2.2 order, then the range. `is_get` is false
/// for `HEAD`, where ranges are ignored (range handling is defined for `GET` only).
pub fn evaluate(
    etag: &str,
    last_modified: HttpDate,
    total_len: u64,
    is_get: bool,
    request: &HeaderMap,
) -> Outcome {
    if let Some(tags) = joined(request, &IF_MATCH) {
        if !matches_any(&tags, etag, Comparison::Strong) {
            return Outcome::PreconditionFailed;
        }
    } else if let Some(date) = single_date(request, &IF_UNMODIFIED_SINCE)
        && last_modified > date
    {
        return Outcome::PreconditionFailed;
    }
    if let Some(tags) = joined(request, &IF_NONE_MATCH) {
        if matches_any(&tags, etag, Comparison::Weak) {
            return Outcome::NotModified;
        }
    } else if let Some(date) = single_date(request, &IF_MODIFIED_SINCE)
        && last_modified <= date
    {
        return Outcome::NotModified;
    }
    if !is_get {
        return Outcome::Full;
    }
    let mut ranges = request.get_all(RANGE).iter();
    let (Some(range), None) = (ranges.next(), ranges.next()) else {
        return Outcome::Full;
    };
    let Ok(range) = range.to_str() else {
        return Outcome::Full;
    };
    if let Some(if_range) = request.get(IF_RANGE)
        && !if_range_holds(if_range, etag, last_modified)
    {
        return Outcome::Full;
    }
    match parse_range(range, total_len) {
        RangeRequest::Ignored => Outcome::Full,
        RangeRequest::Satisfiable(range) => Outcome::Partial(range),
        RangeRequest::Unsatisfiable => Outcome::RangeNotSatisfiable,
    }
}

/// Every value of a list header, joined with commas; `None` when absent or not text.
fn joined(request: &HeaderMap, name: &HeaderName) -> Option<String> {
    let mut values = request.get_all(name).iter().peekable();
    values.peek()?;
    let values: Option<Vec<&str>> = values.map(|value| value.to_str().ok()).collect();
    Some(values?.join(","))
}

/// A date header with exactly one valid HTTP-date; anything else is ignored (§13.1.3-4).
fn single_date(request: &HeaderMap, name: &HeaderName) -> Option<HttpDate> {
    let mut values = request.get_all(name).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return None;
    };
    parse_http_date(value.to_str().ok()?)
}

/// `If-Range`: an entity tag must match strongly, a date must equal `Last-Modified` exactly;
/// anything else is false (RFC 9110 §13.1.5).
fn if_range_holds(value: &HeaderValue, etag: &str, last_modified: HttpDate) -> bool {
    let Ok(value) = value.to_str() else {
        return false;
    };
    let value = value.trim();
    if value.starts_with('"') || value.starts_with("W/") {
        return matches!(
            parse_entity_tags(value).as_deref(),
            Some([tag]) if tag.matches(etag, Comparison::Strong)
        );
    }
    parse_http_date(value) == Some(last_modified)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Comparison {
    Strong,
    Weak,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct EntityTag<'a> {
    weak: bool,
    /// Including the quotes.
    opaque: &'a str,
}

impl EntityTag<'_> {
    /// Compare with our own (always strong, quoted) tag (RFC 9110 §8.8.3.2).
    fn matches(&self, ours: &str, comparison: Comparison) -> bool {
        self.opaque == ours && (comparison == Comparison::Weak || !self.weak)
    }
}

/// `If-Match`/`If-None-Match`: `*` matches any current file; otherwise any listed tag must
/// match. A malformed list matches nothing.
fn matches_any(list: &str, etag: &str, comparison: Comparison) -> bool {
    if list.trim() == "*" {
        return true;
    }
    parse_entity_tags(list).is_some_and(|tags| tags.iter().any(|tag| tag.matches(etag, comparison)))
}

/// A comma-separated list of entity tags (empty list elements allowed, as RFC 9110 §5.6.1
/// asks); `None` if anything else is in it. Tags may contain commas, so this scans rather
/// than splits.
fn parse_entity_tags(list: &str) -> Option<Vec<EntityTag<'_>>> {
    let mut tags = Vec::new();
    let mut rest = list;
    loop {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        if rest.is_empty() {
            return Some(tags);
        }
        let (weak, quoted) = match rest.strip_prefix("W/") {
            Some(quoted) => (true, quoted),
            None => (false, rest),
        };
        let inner = quoted.strip_prefix('"')?;
        let close = inner.find('"')?;
        let opaque = &quoted[..close + 2];
        if !opaque[1..opaque.len() - 1]
            .bytes()
            .all(|byte| byte == 0x21 || (0x23..=0x7E).contains(&byte) || byte >= 0x80)
        {
            return None;
        }
        tags.push(EntityTag { weak, opaque });
        rest = quoted[close + 2..].trim_start_matches([' ', '\t']);
        if !(rest.is_empty() || rest.starts_with(',')) {
            return None;
        }
    }
}

/// How a `Range` header applies to a file of some length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeRequest {
    /// Not a single valid byte range (another unit, bad syntax, several ranges): answer the
    /// whole file, which RFC 9110 §14.2 allows.
    Ignored,
    /// One range inside the file.
    Satisfiable(ByteRange),
    /// A valid range that starts past the end (or an empty suffix): 416.
    Unsatisfiable,
}

/// Parse `bytes=a-b`, `bytes=a-` or `bytes=-n` against a file of `total_len` bytes.
pub fn parse_range(value: &str, total_len: u64) -> RangeRequest {
    let Ok(ranges) = http_range_header::parse_range_header(value) else {
        return RangeRequest::Ignored;
    };
    // Several ranges would need a multipart/byteranges answer; the whole file will do.
    if ranges.len() != 1 {
        return RangeRequest::Ignored;
    }
    match ranges.validate(total_len).as_deref() {
        Ok([range]) => RangeRequest::Satisfiable(ByteRange {
            first: *range.start(),
            last: *range.end(),
        }),
        // An empty file has no byte a 206 could name (the crate accepts `bytes=-n` on it).
        Ok(_) | Err(RangeUnsatisfiableError::Unsatisfiable) => RangeRequest::Unsatisfiable,
        // Malformed, or past the crate's limits (30 digits a position, 15 empty list elements):
        // ignoring the header is always allowed.
        Err(_) => RangeRequest::Ignored,
    }
}

// === HTTP dates ===

/// An HTTP-date in any of the three forms recipients must accept (RFC 9110 §5.6.7):
/// IMF-fixdate, RFC 850 and asctime. `None` for anything else, including a weekday that does
/// not match the date.
fn parse_http_date(text: &str) -> Option<HttpDate> {
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    const ETAG_VALUE: &str = "\"0123456789abcdef0123456789abcdef\"";
    const LAST_MODIFIED_SECS: u64 = 784_111_777; // Sun, 06 Nov 1994 08:49:37 GMT
    const TOTAL: u64 = 1000;

    fn outcome(headers: &[(&str, &str)]) -> Outcome {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        evaluate(ETAG_VALUE, date(LAST_MODIFIED_SECS), TOTAL, true, &map)
    }

    /// The date `secs` seconds after 1970.
    fn date(secs: u64) -> HttpDate {
        HttpDate::from(UNIX_EPOCH + Duration::from_secs(secs))
    }

    /// That date as a header would carry it.
    fn format_http_date(secs: u64) -> String {
        date(secs).to_string()
    }

    fn range(first: u64, last: u64) -> RangeRequest {
        RangeRequest::Satisfiable(ByteRange { first, last })
    }

    #[test]
    fn http_dates_parse_in_all_three_forms() {
        for text in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
        ] {
            assert_eq!(
                parse_http_date(text),
                Some(date(LAST_MODIFIED_SECS)),
                "{text}"
            );
        }
    }

    #[test]
    fn malformed_http_dates_are_none() {
        for text in [
            "",
            "yesterday",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 6 Nov 1994 08:49:37 GMT",
            "Sun, 31 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 24:00:00 GMT",
            "Sun, 06 Foo 1994 08:49:37 GMT",
            "Sunday, 06-Nov-1994 08:49:37 GMT",
            "1994-11-06T08:49:37Z",
            // The weekday must be the date's, and there is no leap second.
            "Mon, 06 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 08:49:60 GMT",
        ] {
            assert_eq!(parse_http_date(text), None, "{text}");
        }
    }

    #[test]
    fn http_date_formatting_round_trips() {
        assert_eq!(
            format_http_date(LAST_MODIFIED_SECS),
            "Sun, 06 Nov 1994 08:49:37 GMT"
        );
        assert_eq!(format_http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        for secs in [0, 951_782_400, 1_748_865_600, 4_107_542_399] {
            assert_eq!(parse_http_date(&format_http_date(secs)), Some(date(secs)));
        }
    }

    #[test]
    fn single_byte_ranges_are_resolved_against_the_length() {
        assert_eq!(parse_range("bytes=0-99", TOTAL), range(0, 99));
        assert_eq!(parse_range("bytes=990-", TOTAL), range(990, 999));
        assert_eq!(parse_range("bytes=-10", TOTAL), range(990, 999));
        assert_eq!(parse_range("bytes=-5000", TOTAL), range(0, 999));
        assert_eq!(parse_range("bytes=500-5000", TOTAL), range(500, 999));
        assert_eq!(parse_range("Bytes= 7-7 ,", TOTAL), range(7, 7));
        assert_eq!(
            parse_range("bytes=0-99999999999999999999999", TOTAL),
            range(0, 999)
        );
    }

    #[test]
    fn ranges_past_the_end_are_unsatisfiable() {
        for value in [
            "bytes=1000-",
            "bytes=1000-2000",
            "bytes=-0",
            "bytes=99999999999999999999999-",
        ] {
            assert_eq!(
                parse_range(value, TOTAL),
                RangeRequest::Unsatisfiable,
                "{value}"
            );
        }
    }

    #[test]
    fn no_range_of_an_empty_file_is_satisfiable() {
        for value in ["bytes=0-", "bytes=0-0", "bytes=-5", "bytes=-0"] {
            assert_eq!(
                parse_range(value, 0),
                RangeRequest::Unsatisfiable,
                "{value}"
            );
        }
        assert_eq!(parse_range("bytes=a-", 0), RangeRequest::Ignored);
    }

    #[test]
    fn invalid_or_multiple_ranges_are_ignored() {
        for value in [
            "items=0-1",
            "bytes",
            "bytes=",
            "bytes=5-1",
            "bytes=a-b",
            "bytes=+1-2",
            "bytes=1",
            "bytes=0-1,5-6",
            "bytes=0-1, -1",
        ] {
            assert_eq!(parse_range(value, TOTAL), RangeRequest::Ignored, "{value}");
        }
    }

    #[test]
    fn entity_tag_lists_parse_with_commas_inside_tags() {
        let tags = parse_entity_tags(r#" "a,b", W/"c" ,, "d""#).unwrap();
        let opaque: Vec<(bool, &str)> = tags.iter().map(|tag| (tag.weak, tag.opaque)).collect();
        assert_eq!(
            opaque,
            [(false, "\"a,b\""), (true, "\"c\""), (false, "\"d\"")]
        );
        assert_eq!(parse_entity_tags("abc"), None);
        assert_eq!(parse_entity_tags("\"abc"), None);
        assert_eq!(parse_entity_tags("\"a\" \"b\""), None);
    }

    #[test]
    fn if_none_match_compares_weakly_and_accepts_a_star() {
        let weak = format!("W/{ETAG_VALUE}");
        for value in [ETAG_VALUE, "*", &weak, &format!("\"other\", {ETAG_VALUE}")] {
            assert_eq!(
                outcome(&[("if-none-match", value)]),
                Outcome::NotModified,
                "{value}"
            );
        }
        assert_eq!(outcome(&[("if-none-match", "\"other\"")]), Outcome::Full);
    }

    #[test]
    fn if_modified_since_applies_only_without_if_none_match() {
        let at = format_http_date(LAST_MODIFIED_SECS);
        let before = format_http_date(LAST_MODIFIED_SECS - 1);
        assert_eq!(outcome(&[("if-modified-since", &at)]), Outcome::NotModified);
        assert_eq!(outcome(&[("if-modified-since", &before)]), Outcome::Full);
        assert_eq!(outcome(&[("if-modified-since", "garbage")]), Outcome::Full);
        assert_eq!(
            outcome(&[("if-none-match", "\"other\""), ("if-modified-since", &at)]),
            Outcome::Full
        );
    }

    #[test]
    fn if_match_and_if_unmodified_since_fail_with_412() {
        let weak = format!("W/{ETAG_VALUE}");
        assert_eq!(outcome(&[("if-match", &weak)]), Outcome::PreconditionFailed);
        assert_eq!(outcome(&[("if-match", ETAG_VALUE)]), Outcome::Full);
        assert_eq!(outcome(&[("if-match", "*")]), Outcome::Full);
        let before = format_http_date(LAST_MODIFIED_SECS - 1);
        assert_eq!(
            outcome(&[("if-unmodified-since", &before)]),
            Outcome::PreconditionFailed
        );
    }

    #[test]
    fn if_range_needs_a_strong_etag_match_or_the_exact_date() {
        let partial = Outcome::Partial(ByteRange { first: 0, last: 9 });
        let with = |if_range: &str| outcome(&[("range", "bytes=0-9"), ("if-range", if_range)]);
        assert_eq!(with(ETAG_VALUE), partial);
        assert_eq!(with(&format_http_date(LAST_MODIFIED_SECS)), partial);
        assert_eq!(with(&format!("W/{ETAG_VALUE}")), Outcome::Full);
        assert_eq!(with("\"other\""), Outcome::Full);
        assert_eq!(
            with(&format_http_date(LAST_MODIFIED_SECS + 1)),
            Outcome::Full
        );
        assert_eq!(with("garbage"), Outcome::Full);
    }

    #[test]
    fn ranges_are_ignored_on_head_and_when_sent_twice() {
        let mut headers = HeaderMap::new();
        headers.insert(RANGE, HeaderValue::from_static("bytes=0-9"));
        assert_eq!(
            evaluate(ETAG_VALUE, date(LAST_MODIFIED_SECS), TOTAL, false, &headers),
            Outcome::Full
        );
        headers.append(RANGE, HeaderValue::from_static("bytes=0-9"));
        assert_eq!(
            evaluate(ETAG_VALUE, date(LAST_MODIFIED_SECS), TOTAL, true, &headers),
            Outcome::Full
        );
    }

    #[test]
    fn strong_etag_is_a_quoted_digest() {
        let etag = strong_etag(b"hello");
        assert_eq!(etag.len(), 34);
        assert!(etag.starts_with('"') && etag.ends_with('"'));
        assert_eq!(etag, strong_etag(b"hello"));
        assert_ne!(etag, strong_etag(b"hello!"));
    }
}
