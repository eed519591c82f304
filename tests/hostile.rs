//! Hostile input over real sockets: a corpus of malformed, smuggled, oversized and absurd
//! requests, each written as raw bytes to a running gateway. Whatever arrives, the gateway
//! answers with a 4xx (or 501/505, which HTTP reserves for methods and versions it does not
//! speak), never puts a token in the answer to a bad request, and keeps answering `/healthz`.
//!
//! Each case is bounded in time; a case that the server neither answers nor closes within
//! [`CASE_LIMIT`] fails. Run it alone with `cargo test --test hostile`.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The whole exchange of one case, from connect to the server closing.
const CASE_LIMIT: Duration = Duration::from_secs(10);
/// Short server timeouts (header, idle, request), so that cases that leave a connection
/// waiting end quickly.
const LIMITS: &str =
    "limits:\n  header_read_timeout: 2s\n  idle_timeout: 2s\n  request_timeout: 2s\n";
/// Every JWT (and so every token) starts with this: base64url of `{"`.
const TOKEN_MARK: &[u8] = b"eyJ";
const ACCOUNT: &str = "023e105f4ecef8ad9ca31a8372d0c353";
/// Asked on the same connection after a case, to see whether it survived.
const FOLLOW_UP: &[u8] =
    b"GET /healthz HTTP/1.1\r\nHost: hostile.test\r\nConnection: close\r\n\r\n";

// === the gateway ===

/// The default test gateway with short limits, and the public video (`intro`) played in
/// proxy mode, so that requests with ranges reach the upstream exchange.
async fn start() -> TestGateway {
    let config = format!("{}{LIMITS}", gateway_config());
    let public = "    subjects: [anyone]\n";
    assert!(config.contains(public), "the default config has changed");
    let config = config.replace(public, &format!("{public}    mode: proxy\n"));
    TestGateway::start_with(&config).await
}

fn addr(gateway: &TestGateway) -> SocketAddr {
    gateway.app().gateway_addr()
}

// === one case ===

/// How a case ends its side of the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ending {
    /// Ask for `/healthz` on the same connection, with `Connection: close`.
    FollowUp,
    /// Send nothing more and wait for the server to answer and close (its limits end it).
    Wait,
    /// Close the sending side at once (a request cut short).
    HalfClose,
}

/// One hostile request.
struct Case {
    name: String,
    bytes: Vec<u8>,
    ending: Ending,
    /// At most this many answers to the case's own bytes (a smuggled request must not get one).
    max_answers: usize,
    /// The bytes are HTTP/2 (or other non-HTTP/1) and get no HTTP/1 answer to parse.
    binary: bool,
}

impl Case {
    fn new(name: &str, bytes: impl Into<Vec<u8>>) -> Case {
        Case {
            name: name.to_string(),
            bytes: bytes.into(),
            ending: Ending::FollowUp,
            max_answers: usize::MAX,
            binary: false,
        }
    }

    fn ending(mut self, ending: Ending) -> Case {
        self.ending = ending;
        self
    }

    fn answers_at_most(mut self, max: usize) -> Case {
        self.max_answers = max;
        self
    }

    fn binary(mut self) -> Case {
        self.binary = true;
        self
    }
}

/// `method path` with `headers` and `body`, as HTTP/1.1 with a Host.
fn request(method: &str, path: &str, headers: &[&str], body: &[u8]) -> Vec<u8> {
    let mut bytes = format!("{method} {path} HTTP/1.1\r\nHost: hostile.test\r\n").into_bytes();
    for header in headers {
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(b"\r\n");
    bytes.extend_from_slice(body);
    bytes
}

/// `POST path` with a JSON `body` (its length declared) and extra `headers`.
fn post_json(path: &str, headers: &[&str], body: &[u8]) -> Vec<u8> {
    let length = format!("Content-Length: {}", body.len());
    let mut all = vec!["Content-Type: application/json", length.as_str()];
    all.extend_from_slice(headers);
    request("POST", path, &all, body)
}

/// One HTTP/1 response read off the wire.
#[derive(Debug)]
struct Answer {
    status: u16,
}

/// Send `case` and read until the server closes (bounded). `Err` says what went wrong.
async fn exchange(addr: SocketAddr, case: &Case) -> Result<Vec<u8>, String> {
    let run = async {
        let mut stream = TcpStream::connect(addr)
            .await
            .map_err(|error| format!("connect: {error}"))?;
        // The server may refuse the rest of a request it has already answered: writes may
        // fail, what it sent back still counts.
        let _ = stream.write_all(&case.bytes).await;
        match case.ending {
            Ending::FollowUp => {
                let _ = stream.write_all(FOLLOW_UP).await;
            }
            Ending::HalfClose => {
                let _ = stream.shutdown().await;
            }
            Ending::Wait => {}
        }
        let mut received = Vec::new();
        // A reset after the answer is how some refusals end; keep what arrived.
        let _ = stream.read_to_end(&mut received).await;
        Ok(received)
    };
    tokio::time::timeout(CASE_LIMIT, run)
        .await
        .unwrap_or_else(|_| Err(format!("neither answered nor closed within {CASE_LIMIT:?}")))
}

/// The HTTP/1 responses in `bytes`, in order (interim 1xx left out); stops at anything that
/// is not a response.
fn answers(mut bytes: &[u8]) -> Vec<Answer> {
    let mut answers = Vec::new();
    while let Some(end) = find(bytes, b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&bytes[..end]).to_string();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let Some(status) = status_line
            .strip_prefix("HTTP/1.")
            .and_then(|rest| rest.get(2..5))
            .and_then(|code| code.parse::<u16>().ok())
        else {
            break;
        };
        let header = |name: &str| {
            head.split("\r\n").skip(1).find_map(|line| {
                let (n, v) = line.split_once(':')?;
                n.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_string())
            })
        };
        let rest = &bytes[end + 4..];
        let body_len = if (100..200).contains(&status) || status == 204 || status == 304 {
            Some(0)
        } else if header("transfer-encoding").is_some_and(|te| te.contains("chunked")) {
            chunked_len(rest)
        } else {
            header("content-length")
                .and_then(|len| len.parse::<usize>().ok())
                .or(Some(rest.len()))
        };
        let Some(body_len) = body_len.filter(|len| *len <= rest.len()) else {
            answers.push(Answer { status });
            break;
        };
        if status >= 200 {
            answers.push(Answer { status });
        }
        bytes = &rest[body_len..];
    }
    answers
}

/// The length of a chunked body at the start of `bytes`, trailer included.
fn chunked_len(bytes: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        let line_end = at + find(&bytes[at..], b"\r\n")?;
        let size = String::from_utf8_lossy(&bytes[at..line_end]);
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        at = line_end + 2;
        if size == 0 {
            return Some(at + find(&bytes[at..], b"\r\n")? + 2);
        }
        at += size + 2;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// What is wrong with how the gateway handled `case`, if anything.
async fn judge(gateway: &TestGateway, case: &Case) -> Option<String> {
    let received = match exchange(addr(gateway), case).await {
        Ok(received) => received,
        Err(error) => return Some(error),
    };
    let shown = || String::from_utf8_lossy(&received[..received.len().min(400)]).into_owned();
    if find(&received, TOKEN_MARK).is_some() {
        return Some(format!("a token in the answer: {}", shown()));
    }
    if case.binary {
        if received.starts_with(b"HTTP/") {
            let statuses = answers(&received);
            if let Some(bad) = statuses.iter().find(|a| is_server_error(a.status)) {
                return Some(format!("answered {}: {}", bad.status, shown()));
            }
        }
    } else {
        let mut statuses = answers(&received);
        // The follow-up's answer, when the connection survived, is last.
        if case.ending == Ending::FollowUp && statuses.len() > 1 {
            statuses.pop();
        }
        if let Some(bad) = statuses.iter().find(|a| is_server_error(a.status)) {
            return Some(format!("answered {}: {}", bad.status, shown()));
        }
        if statuses.len() > case.max_answers {
            return Some(format!(
                "{} answers to what may get {}: {}",
                statuses.len(),
                case.max_answers,
                shown()
            ));
        }
        if statuses.is_empty() && case.ending != Ending::HalfClose {
            return Some(format!("no answer: {:?}", shown()));
        }
    }
    let health = get(&gateway.url("/healthz")).await;
    if health.status != 200 {
        return Some(format!("/healthz answered {} afterwards", health.status));
    }
    None
}

/// 5xx, except 501 and 505: what HTTP answers to a method or version it does not implement.
fn is_server_error(status: u16) -> bool {
    (500..600).contains(&status) && status != 501 && status != 505
}

/// Run every case against one gateway and fail with all that went wrong.
async fn run(cases: Vec<Case>) {
    let gateway = start().await;
    let mut failures = Vec::new();
    for case in &cases {
        if let Some(failure) = judge(&gateway, case).await {
            failures.push(format!("{}: {failure}", case.name));
        }
    }
    gateway.shutdown().await;
    assert!(
        failures.is_empty(),
        "{} of {} hostile requests were mishandled:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

// === the corpus ===

fn token_api_path() -> String {
    format!("/accounts/{ACCOUNT}/stream/intro/token")
}

const API_KEY: &str = "Authorization: Bearer test-only-api-key";

/// `[[[...]]]` (or `{"a":{"a":...}}`) nested `depth` deep.
fn nested(depth: usize, object: bool) -> String {
    if object {
        format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth))
    } else {
        format!("{}{}", "[".repeat(depth), "]".repeat(depth))
    }
}

fn smuggling() -> Vec<Case> {
    let smuggled =
        "GET /watch/keynote HTTP/1.1\r\nHost: hostile.test\r\nX-Api-Key: test-only-api-key\r\n\r\n";
    let chunked_then = |headers: &[&str]| {
        request(
            "POST",
            "/api/getSignedURL",
            headers,
            format!("0\r\n\r\n{smuggled}").as_bytes(),
        )
    };
    vec![
        Case::new(
            "Content-Length and Transfer-Encoding, a request smuggled after the chunked end",
            chunked_then(&[
                "Content-Type: application/json",
                "Content-Length: 4",
                "Transfer-Encoding: chunked",
            ]),
        )
        .ending(Ending::Wait)
        .answers_at_most(1),
        Case::new(
            "Transfer-Encoding before Content-Length, a request smuggled after",
            chunked_then(&[
                "Transfer-Encoding: chunked",
                "Content-Length: 100",
                "Content-Type: application/json",
            ]),
        )
        .ending(Ending::Wait)
        .answers_at_most(1),
        Case::new(
            "Content-Length covers a smuggled request",
            request(
                "POST",
                "/healthz",
                &[&format!("Content-Length: {}", smuggled.len())],
                smuggled.as_bytes(),
            ),
        )
        .ending(Ending::Wait)
        .answers_at_most(1),
        Case::new(
            "two different Content-Lengths",
            request(
                "POST",
                "/api/getSignedURL",
                &["Content-Length: 3", "Content-Length: 40"],
                b"{}x",
            ),
        )
        .ending(Ending::Wait)
        .answers_at_most(1),
        Case::new(
            "a Content-Length list",
            request(
                "POST",
                "/api/getSignedURL",
                &["Content-Length: 2, 40"],
                b"{}",
            ),
        )
        .ending(Ending::Wait),
        Case::new(
            "a negative Content-Length",
            request("POST", "/api/getSignedURL", &["Content-Length: -1"], b""),
        ),
        Case::new(
            "a signed Content-Length",
            request("POST", "/api/getSignedURL", &["Content-Length: +2"], b"{}"),
        ),
        Case::new(
            "a Content-Length past u64",
            request(
                "POST",
                "/api/getSignedURL",
                &["Content-Length: 184467440737095516160"],
                b"{}",
            ),
        )
        .ending(Ending::HalfClose),
        Case::new(
            "a hex Content-Length",
            request("POST", "/api/getSignedURL", &["Content-Length: 0x2"], b"{}"),
        ),
        Case::new(
            "Transfer-Encoding that is not chunked",
            request(
                "POST",
                "/api/getSignedURL",
                &["Transfer-Encoding: gzip"],
                b"",
            ),
        ),
        Case::new(
            "chunked, then identity",
            request(
                "POST",
                "/api/getSignedURL",
                &["Transfer-Encoding: chunked, identity"],
                b"0\r\n\r\n",
            ),
        ),
        Case::new(
            "a lookalike of chunked",
            request(
                "POST",
                "/api/getSignedURL",
                &["Transfer-Encoding: xchunked"],
                b"0\r\n\r\n",
            ),
        ),
        Case::new(
            "Transfer-Encoding on two lines",
            request(
                "POST",
                "/api/getSignedURL",
                &["Transfer-Encoding: chunked", "Transfer-Encoding: identity"],
                b"0\r\n\r\n",
            ),
        ),
        Case::new(
            "Transfer-Encoding in HTTP/1.0",
            b"POST /api/getSignedURL HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                .to_vec(),
        ),
        Case::new(
            "a space before the colon",
            request("POST", "/api/getSignedURL", &["Content-Length : 2"], b"{}"),
        ),
        Case::new(
            "an obs-folded header",
            request(
                "GET",
                "/watch/keynote",
                &["X-Api-Key: nope", " test-only-api-key"],
                b"",
            ),
        ),
        Case::new(
            "a chunk size past u64",
            request(
                "POST",
                "/api/getSignedURL",
                &[
                    "Content-Type: application/json",
                    "Transfer-Encoding: chunked",
                ],
                b"fffffffffffffffffffffff\r\n{}\r\n0\r\n\r\n",
            ),
        )
        .ending(Ending::HalfClose),
        Case::new(
            "a chunk extension with a NUL",
            request(
                "POST",
                "/api/getSignedURL",
                &[
                    "Content-Type: application/json",
                    "Transfer-Encoding: chunked",
                ],
                b"2;a=\0\r\n{}\r\n0\r\n\r\n",
            ),
        ),
        Case::new(
            "a bare CR in a header",
            request("GET", "/healthz", &["X-Thing: a\rb"], b""),
        ),
    ]
}

fn oversize() -> Vec<Case> {
    let long_value = format!("X-Padding: {}", "a".repeat(70 * 1024));
    let many: Vec<String> = (0..200).map(|i| format!("X-Header-{i}: {i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    vec![
        Case::new(
            "a 70 KiB header",
            request("GET", "/healthz", &[&long_value], b""),
        ),
        Case::new("200 headers", request("GET", "/healthz", &many, b"")),
        Case::new(
            "a 70 KiB request line",
            request(
                "GET",
                &format!("/watch/{}", "a".repeat(70 * 1024)),
                &[],
                b"",
            ),
        ),
        Case::new(
            "a path past the router's limit",
            request("GET", &format!("/watch/{}", "a".repeat(3000)), &[], b""),
        ),
        Case::new(
            "deep file path below the video",
            request(
                "GET",
                &format!("/watch/intro{}", "/a".repeat(500)),
                &[],
                b"",
            ),
        ),
        Case::new(
            "a 60 KiB cookie",
            request(
                "GET",
                "/watch/keynote",
                &[&format!("Cookie: session={}", "x".repeat(60 * 1024))],
                b"",
            ),
        ),
        Case::new(
            "a 60 KiB Authorization",
            request(
                "GET",
                "/watch/keynote",
                &[&format!("Authorization: Bearer {}", "k".repeat(60 * 1024))],
                b"",
            ),
        ),
        Case::new(
            "a body past the limit",
            post_json("/api/getSignedURL", &[], &vec![b' '; 64 * 1024]),
        ),
        Case::new(
            "a declared body past the limit, not sent",
            request(
                "POST",
                "/api/getSignedURL",
                &[
                    "Content-Type: application/json",
                    "Content-Length: 10000000000",
                ],
                b"",
            ),
        )
        .ending(Ending::HalfClose),
        Case::new(
            "a thousand pipelined bad requests",
            b"GET /watch/%00 HTTP/1.1\r\nHost: h\r\n\r\n".repeat(1000),
        ),
    ]
}

fn bad_bytes() -> Vec<Case> {
    vec![
        Case::new(
            "a NUL in the path",
            b"GET /watch/in\0tro HTTP/1.1\r\nHost: h\r\n\r\n".to_vec(),
        ),
        Case::new(
            "a NUL in a header value",
            b"GET /watch/keynote HTTP/1.1\r\nHost: h\r\nX-Api-Key: test-only-api-key\0\r\n\r\n"
                .to_vec(),
        ),
        Case::new(
            "a NUL in a header name",
            b"GET /healthz HTTP/1.1\r\nHost: h\r\nX-\0: 1\r\n\r\n".to_vec(),
        ),
        Case::new(
            "bad UTF-8 in the path",
            b"GET /watch/\xff\xfe HTTP/1.1\r\nHost: h\r\n\r\n".to_vec(),
        ),
        Case::new(
            "bad UTF-8 in the query",
            b"GET /watch/intro?autoplay=\xc3\x28 HTTP/1.1\r\nHost: h\r\n\r\n".to_vec(),
        ),
        Case::new(
            "bad UTF-8 in the API key",
            b"GET /watch/keynote HTTP/1.1\r\nHost: h\r\nX-Api-Key: \xff\xfe\r\n\r\n".to_vec(),
        ),
        Case::new(
            "bad UTF-8 in Authorization",
            b"GET /watch/keynote HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer \xc3\xa9\xff\r\n\r\n"
                .to_vec(),
        ),
        Case::new(
            "bad UTF-8 in a cookie",
            b"GET /watch/keynote HTTP/1.1\r\nHost: h\r\nCookie: session=\xff\r\n\r\n".to_vec(),
        ),
        Case::new(
            "bad UTF-8 in X-Forwarded-For",
            b"GET /watch/keynote HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: \xff1.2.3.4\r\n\r\n"
                .to_vec(),
        ),
        Case::new(
            "a percent-encoded NUL",
            request("GET", "/watch/intro%00", &[], b""),
        ),
        Case::new(
            "percent-encoded traversal",
            request("GET", "/watch/intro/%2e%2e/%2e%2e/etc/passwd", &[], b""),
        ),
        Case::new(
            "traversal below the video",
            request("GET", "/watch/intro/../../../etc/passwd", &[], b""),
        ),
        Case::new(
            "a control character in the query",
            b"GET /watch/intro?autoplay=\x01 HTTP/1.1\r\nHost: h\r\n\r\n".to_vec(),
        ),
        Case::new(
            "a DEL in the Host",
            b"GET /healthz HTTP/1.1\r\nHost: a\x7fb\r\n\r\n".to_vec(),
        ),
        Case::new(
            "two Host lines",
            b"GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".to_vec(),
        ),
        Case::new(
            "a half IPv6 Host",
            b"GET /healthz HTTP/1.1\r\nHost: [::1\r\n\r\n".to_vec(),
        ),
        Case::new(
            "binary garbage",
            (0..2048u32)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
                .collect::<Vec<u8>>(),
        )
        .binary(),
        Case::new(
            "a TLS ClientHello on the plain port",
            b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03".to_vec(),
        )
        .ending(Ending::HalfClose)
        .binary(),
    ]
}

fn ranges() -> Vec<Case> {
    let thumbnail = "/watch/intro/thumbnails/thumbnail.jpg";
    let manifest = "/watch/intro/manifest/video.m3u8";
    let many = format!("Range: bytes={}", vec!["0-0"; 2000].join(","));
    let mut cases: Vec<Case> = [
        "Range: bytes=99999999999999999999999-",
        "Range: bytes=18446744073709551615-18446744073709551615",
        "Range: bytes=-0",
        "Range: bytes=-99999999999999999999",
        "Range: bytes=5-1",
        "Range: bytes=abc",
        "Range: bytes=--1",
        "Range: bytes=0-1.5",
        "Range: bytes=1e3-",
        "Range: items=0-1",
        "Range: bytes=",
        "Range: bytes=0-0, -1, 5-",
    ]
    .iter()
    .flat_map(|range| {
        [thumbnail, manifest].map(|path| {
            Case::new(
                &format!("{range} on {path}"),
                request("GET", path, &[range], b""),
            )
        })
    })
    .collect();
    cases.push(Case::new(
        "2000 ranges",
        request("GET", thumbnail, &[&many], b""),
    ));
    cases.push(Case::new(
        "a range with a garbage If-Range",
        request(
            "GET",
            thumbnail,
            &["Range: bytes=0-10", "If-Range: \"\0\""],
            b"",
        ),
    ));
    cases.push(Case::new(
        "a range on a download the rule does not allow",
        request(
            "GET",
            "/watch/intro/downloads/default.mp4",
            &["Range: bytes=0-"],
            b"",
        ),
    ));
    cases
}

/// JSON bodies that are not a request for a token: absurd numbers, wrong types, deep nesting.
fn json_bodies() -> Vec<String> {
    vec![
        r#"{"video_id": 1e999}"#.into(),
        r#"{"video_id": -1}"#.into(),
        r#"{"video_id": 1.5}"#.into(),
        r#"{"video_id": 18446744073709551616}"#.into(),
        r#"{"video_id": -0.0e-999}"#.into(),
        r#"{"video_id": null}"#.into(),
        r#"{"video_id": true}"#.into(),
        r#"{"video_id": ["intro"]}"#.into(),
        r#"{"video_id": {"id": "intro"}}"#.into(),
        r#"{"video_id": ""}"#.into(),
        r#"{"video_id": "intro\u0000"}"#.into(),
        r#"{"video_id": "\ud800"}"#.into(),
        r#"{"video_id": "../intro"}"#.into(),
        r#"{"video_id": "intro", "video_id": "intro"}"#.into(),
        r#"{"video_id": "intro"} trailing"#.into(),
        format!(r#"{{"video_id": "{}"}}"#, "a".repeat(3000)),
        format!(r#"{{"video_id": {}}}"#, nested(1500, false)),
        format!(r#"{{"video_id": {}}}"#, nested(600, true)),
        nested(2000, false),
        "\u{feff}{\"video_id\": \"intro\"}".into(),
        "[]".into(),
        "\"intro\"".into(),
        "1e999".into(),
        "null".into(),
        "{".into(),
        String::new(),
    ]
}

/// Token API bodies that Stream would refuse: absurd, fractional or negative times, wrong
/// types, deep nesting, too many rules, the signing key's fields.
fn token_api_bodies() -> Vec<String> {
    vec![
        r#"{"exp": 1e999}"#.into(),
        r#"{"exp": -1}"#.into(),
        r#"{"exp": 1.5}"#.into(),
        r#"{"exp": 18446744073709551616}"#.into(),
        r#"{"exp": 99999999999999999999999999999}"#.into(),
        r#"{"exp": 1e300}"#.into(),
        r#"{"exp": -9223372036854775808}"#.into(),
        r#"{"exp": "tomorrow"}"#.into(),
        r#"{"exp": [1]}"#.into(),
        r#"{"nbf": -5}"#.into(),
        r#"{"nbf": 1e999}"#.into(),
        r#"{"nbf": 4102444800, "exp": 4102444800}"#.into(),
        r#"{"downloadable": "true"}"#.into(),
        r#"{"downloadable": 1}"#.into(),
        r#"{"accessRules": {}}"#.into(),
        r#"{"accessRules": [{}, {}, {}, {}, {}, {}]}"#.into(),
        r#"{"accessRules": [{"type": "ip.src", "action": "allow", "ip": ["999.1.1.1"]}]}"#.into(),
        r#"{"accessRules": [{"type": "ip.src", "action": "allow", "ip": []}]}"#.into(),
        r#"{"accessRules": [{"type": "ip.geoip.country", "action": "block", "country": ["\u0000\u0000"]}]}"#.into(),
        r#"{"accessRules": [{"type": "any", "action": "maybe"}]}"#.into(),
        r#"{"accessRules": [{"type": "any", "action": "block", "extra": 1}]}"#.into(),
        format!(r#"{{"accessRules": {}}}"#, nested(1500, false)),
        format!(r#"{{"exp": {}}}"#, nested(600, true)),
        r#"{"id": "0a1b2c3d4e5f60718293a4b5c6d7e8f9"}"#.into(),
        r#"{"pem": "LS0tLS1CRUdJTg=="}"#.into(),
        r#"{"unknown": 1}"#.into(),
        r#"{"exp": 1, "exp": 2}"#.into(),
        nested(2000, false),
        "[]".into(),
        "1e999".into(),
        "{".into(),
    ]
}

fn json() -> Vec<Case> {
    let mut cases: Vec<Case> = json_bodies()
        .into_iter()
        .map(|body| {
            Case::new(
                &format!("getSignedURL {}", preview(&body)),
                post_json("/api/getSignedURL", &[], body.as_bytes()),
            )
        })
        .collect();
    cases.extend(token_api_bodies().into_iter().map(|body| {
        Case::new(
            &format!("token API {}", preview(&body)),
            post_json(&token_api_path(), &[API_KEY], body.as_bytes()),
        )
    }));
    cases.push(Case::new(
        "getSignedURL with a text body",
        request(
            "POST",
            "/api/getSignedURL",
            &["Content-Type: text/plain", "Content-Length: 20"],
            br#"{"video_id":"intro"}"#,
        ),
    ));
    cases.push(
        Case::new(
            "getSignedURL with a body shorter than declared",
            request(
                "POST",
                "/api/getSignedURL",
                &["Content-Type: application/json", "Content-Length: 100"],
                br#"{"video_id":"#,
            ),
        )
        .ending(Ending::HalfClose),
    );
    cases.push(
        Case::new(
            "the token API with a body shorter than declared",
            request(
                "POST",
                &token_api_path(),
                &[
                    API_KEY,
                    "Content-Type: application/json",
                    "Content-Length: 100",
                ],
                br#"{"exp":"#,
            ),
        )
        .ending(Ending::HalfClose),
    );
    cases.push(Case::new(
        "100-continue, then a bad body",
        request(
            "POST",
            "/api/getSignedURL",
            &[
                "Content-Type: application/json",
                "Content-Length: 1",
                "Expect: 100-continue",
            ],
            b"{",
        ),
    ));
    cases.push(Case::new(
        "the token API for a malformed account",
        post_json("/accounts/../stream/intro/token", &[API_KEY], b"{}"),
    ));
    cases.push(Case::new(
        "the token API for a malformed video",
        post_json(
            &format!("/accounts/{ACCOUNT}/stream/%00/token"),
            &[API_KEY],
            b"{}",
        ),
    ));
    cases
}

fn preview(body: &str) -> String {
    let short: String = body.chars().take(60).collect();
    if short.len() < body.len() {
        format!("{short}... ({} bytes)", body.len())
    } else {
        short
    }
}

fn methods_and_versions() -> Vec<Case> {
    let h2_preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let mut h2_garbage = h2_preface.to_vec();
    // A frame header claiming 16 MiB of an unknown type on stream 1, then noise.
    h2_garbage.extend_from_slice(b"\xff\xff\xff\xee\x00\x00\x00\x00\x01");
    h2_garbage.extend_from_slice(&[0x5a; 512]);
    let mut h2_bad_headers = h2_preface.to_vec();
    // SETTINGS (empty), then HEADERS on stream 1 with an undecodable HPACK block.
    h2_bad_headers.extend_from_slice(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00");
    h2_bad_headers.extend_from_slice(b"\x00\x00\x04\x01\x05\x00\x00\x00\x01\xff\xff\xff\xff");
    vec![
        Case::new("an unknown method", request("FOO", "/healthz", &[], b"")),
        Case::new("a lower-case method", request("get", "/healthz", &[], b"")),
        Case::new(
            "a 300-character method",
            request(&"M".repeat(300), "/healthz", &[], b""),
        ),
        Case::new(
            "a method with a slash",
            request("GE/T", "/healthz", &[], b""),
        ),
        Case::new("TRACE", request("TRACE", "/watch/keynote", &[API_KEY], b"")),
        Case::new(
            "CONNECT",
            b"CONNECT 127.0.0.1:443 HTTP/1.1\r\nHost: 127.0.0.1:443\r\n\r\n".to_vec(),
        )
        .ending(Ending::Wait),
        Case::new("OPTIONS *", request("OPTIONS", "*", &[], b"")),
        Case::new(
            "DELETE on the token API",
            request("DELETE", &token_api_path(), &[API_KEY], b""),
        ),
        Case::new(
            "an absolute-form target",
            request("GET", "http://evil.example/watch/unknown-video", &[], b""),
        ),
        Case::new(
            "an empty path segment",
            request("GET", "//watch/intro", &[], b""),
        ),
        Case::new("no path", b"GET  HTTP/1.1\r\nHost: h\r\n\r\n".to_vec()),
        Case::new(
            "HTTP/1.2",
            b"GET /healthz HTTP/1.2\r\nHost: h\r\n\r\n".to_vec(),
        ),
        Case::new(
            "HTTP/2.0 in text",
            b"GET /healthz HTTP/2.0\r\nHost: h\r\n\r\n".to_vec(),
        ),
        Case::new(
            "HTTP/0.9 version",
            b"GET /healthz HTTP/0.9\r\n\r\n".to_vec(),
        ),
        Case::new("an HTTP/0.9 request", b"GET /healthz\r\n\r\n".to_vec()),
        Case::new(
            "HTTP/3 in text",
            b"GET /healthz HTTP/3\r\nHost: h\r\n\r\n".to_vec(),
        ),
        Case::new(
            "a version of garbage",
            b"GET /healthz XTTP/1.1\r\nHost: h\r\n\r\n".to_vec(),
        ),
        Case::new(
            "the HTTP/2 preface without SM",
            b"PRI * HTTP/2.0\r\n\r\n".to_vec(),
        )
        .ending(Ending::HalfClose),
        Case::new("the HTTP/2 preface, then garbage frames", h2_garbage)
            .ending(Ending::HalfClose)
            .binary(),
        Case::new(
            "the HTTP/2 preface, then undecodable headers",
            h2_bad_headers,
        )
        .ending(Ending::HalfClose)
        .binary(),
        Case::new(
            "an h2c upgrade",
            request(
                "GET",
                "/healthz",
                &[
                    "Connection: Upgrade, HTTP2-Settings",
                    "Upgrade: h2c",
                    "HTTP2-Settings: AAMAAABkAAQAAP__",
                ],
                b"",
            ),
        ),
        Case::new(
            "a websocket upgrade",
            request(
                "GET",
                "/watch/unknown-video",
                &[
                    "Connection: Upgrade",
                    "Upgrade: websocket",
                    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
                    "Sec-WebSocket-Version: 13",
                ],
                b"",
            ),
        )
        .ending(Ending::Wait),
    ]
}

// === the tests ===

#[tokio::test]
async fn request_smuggling_forms_get_one_answer_or_a_client_error() {
    run(smuggling()).await;
}

#[tokio::test]
async fn oversized_heads_paths_and_bodies_are_refused() {
    run(oversize()).await;
}

#[tokio::test]
async fn nul_bytes_bad_utf8_and_garbage_are_client_errors() {
    run(bad_bytes()).await;
}

#[tokio::test]
async fn absurd_ranges_never_break_the_proxy() {
    run(ranges()).await;
}

#[tokio::test]
async fn absurd_json_bodies_get_a_client_error_and_no_token() {
    run(json()).await;
}

#[tokio::test]
async fn odd_methods_versions_and_http2_garbage_are_refused() {
    run(methods_and_versions()).await;
}

#[tokio::test]
async fn a_body_that_never_arrives_is_a_client_timeout() {
    let gateway = start().await;
    let cut_short = request(
        "POST",
        "/api/getSignedURL",
        &["Content-Type: application/json", "Content-Length: 100"],
        br#"{"video_id":"#,
    );
    let received = exchange(
        addr(&gateway),
        &Case::new("", cut_short).ending(Ending::Wait),
    )
    .await
    .expect("the gateway answers within its request timeout");
    let statuses: Vec<u16> = answers(&received).iter().map(|a| a.status).collect();
    assert_eq!(statuses, [408], "{}", String::from_utf8_lossy(&received));
    gateway.shutdown().await;
}

#[test]
fn the_response_reader_finds_every_answer() {
    let two = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n\r\nnoHTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n";
    let statuses: Vec<u16> = answers(two).iter().map(|a| a.status).collect();
    assert_eq!(statuses, [400, 200]);
    assert!(answers(b"\x00\x00\x12\x04").is_empty());
    assert!(is_server_error(500) && is_server_error(503));
    assert!(!is_server_error(501) && !is_server_error(505) && !is_server_error(431));
}
