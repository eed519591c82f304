//! Operating the gateway: connection and request limits, rate limits, `/metrics` (on the
//! gateway or on its own listener), `/readyz`, request ids, and the access log (one line per
//! request, never a secret).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::*;
use http::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

// === small helpers ===

/// [`gateway_config`] with `extra` top-level YAML appended.
/// The test gateway's config with `extra`, serving `/metrics` on its public listener so that
/// the tests can scrape it there.
fn config_with(extra: &str) -> String {
    format!("{}metrics_public: true\n{extra}", gateway_config())
}

/// The gateway's `host:port`.
fn addr_of(gateway: &TestGateway) -> SocketAddr {
    gateway.app().gateway_addr()
}

/// One HTTP/1.1 response read off a raw connection.
#[derive(Debug)]
struct RawResponse {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then_some(value.trim())
        })
    }
}

/// Read one response (head and a `Content-Length` body) from a keep-alive connection, within
/// [`REQUEST_TIMEOUT`].
async fn read_response(stream: &mut TcpStream) -> RawResponse {
    let read = async {
        let mut buf = Vec::new();
        let head_end = loop {
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.expect("reading a response");
            assert!(
                n > 0,
                "connection closed before a full response head: {:?}",
                String::from_utf8_lossy(&buf)
            );
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("no status in {head:?}"));
        let mut response = RawResponse {
            status,
            head,
            body: buf[head_end..].to_vec(),
        };
        let length: usize = response
            .header("content-length")
            .map_or(0, |v| v.parse().expect("a numeric Content-Length"));
        while response.body.len() < length {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.expect("reading a body");
            assert!(n > 0, "connection closed in the body");
            response.body.extend_from_slice(&chunk[..n]);
        }
        response
    };
    tokio::time::timeout(REQUEST_TIMEOUT, read)
        .await
        .expect("a response in time")
}

/// `GET path` on an open keep-alive connection.
async fn get_on(stream: &mut TcpStream, path: &str) -> RawResponse {
    let request = format!("GET {path} HTTP/1.1\r\nHost: gateway.test\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("writing a request");
    read_response(stream).await
}

/// Everything the peer sends until it closes (or resets) the connection, within `limit`;
/// `None` if it is still open then. A write that fails because the peer already closed is
/// not an error here.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    let read = async {
        let mut received = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return received,
                Ok(n) => received.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(limit, read).await.ok()
}

/// Send `request` (raw bytes) on a new connection and read until the server closes it.
async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.expect("connecting");
    // The server may answer and close before it has read everything (431, 413).
    let _ = stream.write_all(request).await;
    read_until_closed(&mut stream, REQUEST_TIMEOUT)
        .await
        .expect("the server answers and closes in time")
}

/// The status code at the start of a raw response.
fn raw_status(response: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(response);
    text.strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP/1.1 response: {text:?}"))
}

fn json_body(response: &TestResponse) -> Value {
    serde_json::from_slice(&response.body)
        .unwrap_or_else(|_| panic!("a JSON body, got {}", response.text()))
}

// === metrics text ===

/// One sample: metric name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

/// Parse the Prometheus/OpenMetrics text format (samples only, comments skipped).
fn parse_metrics(text: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name_and_labels, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("a sample line: {line}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("a numeric value: {line}"));
        let (name, labels) = match name_and_labels.split_once('{') {
            None => (name_and_labels.to_string(), BTreeMap::new()),
            Some((name, rest)) => {
                let rest = rest
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("labels end with `}}`: {line}"));
                (name.to_string(), parse_labels(rest, line))
            }
        };
        samples.push((name, labels, value));
    }
    samples
}

/// `a="x",b="y\"z"` into a map, unescaping values.
fn parse_labels(mut text: &str, line: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    while !text.is_empty() {
        let (key, rest) = text
            .split_once("=\"")
            .unwrap_or_else(|| panic!("a label: {line}"));
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => panic!("a dangling escape: {line}"),
                },
                Some((at, '"')) => break at,
                Some((_, c)) => value.push(c),
                None => panic!("an unterminated label value: {line}"),
            }
        };
        labels.insert(key.trim_start_matches(',').to_string(), value);
        text = rest[end + 1..].trim_start_matches(',');
    }
    labels
}

/// A scrape, parsed; [`Scrape::value`] looks a series up by its exact label set.
struct Scrape {
    text: String,
    samples: Vec<Sample>,
}

impl Scrape {
    fn new(text: String) -> Scrape {
        let samples = parse_metrics(&text);
        Scrape { text, samples }
    }

    /// The series `name` with exactly `labels`, if exported.
    fn find(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let wanted: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples
            .iter()
            .find(|(n, l, _)| n == name && *l == wanted)
            .map(|(_, _, v)| *v)
    }

    /// The series `name` with exactly `labels`; panics (showing the scrape) if absent.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.find(name, labels)
            .unwrap_or_else(|| panic!("no series {name}{labels:?} in the scrape:\n{}", self.text))
    }

    /// Like [`Scrape::value`], but a series not (yet) exported counts as 0: series labelled
    /// by request appear once they are non-zero.
    fn count(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.find(name, labels).unwrap_or(0.0)
    }

    /// `streamgate_requests_total{route,status}`.
    fn requests(&self, route: &str, status: &str) -> f64 {
        self.count(
            "streamgate_requests_total",
            &[("route", route), ("status", status)],
        )
    }

    /// `streamgate_decisions_total{outcome,rule}`.
    fn decisions(&self, outcome: &str, rule: &str) -> f64 {
        self.count(
            "streamgate_decisions_total",
            &[("outcome", outcome), ("rule", rule)],
        )
    }

    /// Every decision counted, whatever its outcome and rule.
    fn all_decisions(&self) -> f64 {
        self.samples
            .iter()
            .filter(|(name, _, _)| name == "streamgate_decisions_total")
            .map(|(_, _, v)| v)
            .sum()
    }
}

/// `GET url` (a `/metrics` endpoint), checked for status and content type, parsed.
async fn scrape(url: &str) -> Scrape {
    let response = get(url).await;
    assert_eq!(response.status.as_u16(), 200, "{url}: {}", response.text());
    let content_type = response.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let text = response.text();
    assert!(text.ends_with("# EOF\n"), "{text}");
    Scrape::new(text)
}

// === limits ===

#[tokio::test]
async fn an_oversized_request_head_gets_431_and_one_under_the_limit_is_served() {
    let gateway =
        TestGateway::start_with(&config_with("limits:\n  max_header_bytes: 16384\n")).await;
    let addr = addr_of(&gateway);
    let head = |filler: usize| {
        format!(
            "GET /healthz HTTP/1.1\r\nHost: gateway.test\r\nX-Filler: {}\r\nConnection: close\r\n\r\n",
            "a".repeat(filler)
        )
    };

    let big = raw_exchange(addr, head(20 * 1024).as_bytes()).await;
    assert_eq!(raw_status(&big), 431, "{}", String::from_utf8_lossy(&big));

    // Under the configured limit (and far over hyper's minimum buffer): served.
    let fits = raw_exchange(addr, head(12 * 1024).as_bytes()).await;
    assert_eq!(raw_status(&fits), 200, "{}", String::from_utf8_lossy(&fits));
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_slow_request_head_is_cut_off_after_the_header_read_timeout() {
    let gateway =
        TestGateway::start_with(&config_with("limits:\n  header_read_timeout: 1s\n")).await;
    let addr = addr_of(&gateway);
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /watch/intro HTTP/1.1\r\nHost: gateway.test\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    // 1 s, checked by a ticker every 0.5 s, plus scheduling on busy shared cores.
    let received = read_until_closed(&mut slow, Duration::from_millis(3500))
        .await
        .expect("the connection is closed within ~3 s of a stalled head");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "closed before the timeout: {waited:?}"
    );
    // Nothing but (at most) a 408 is sent: the request was never served.
    let text = String::from_utf8_lossy(&received);
    assert!(
        received.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );

    // Prompt clients are served meanwhile and afterwards.
    assert_eq!(get(&gateway.url("/healthz")).await.status.as_u16(), 200);
    gateway.shutdown().await;
}

#[tokio::test]
async fn at_the_cap_the_oldest_idle_connection_is_evicted_for_a_new_one() {
    let gateway = TestGateway::start_with(&config_with("limits:\n  max_connections: 2\n")).await;
    let addr = addr_of(&gateway);

    // Two keep-alive connections, each served once so the gateway surely holds them; the
    // first has been idle longer.
    let mut first = TcpStream::connect(addr).await.unwrap();
    let mut second = TcpStream::connect(addr).await.unwrap();
    assert_eq!(get_on(&mut first, "/healthz").await.status, 200);
    assert_eq!(get_on(&mut second, "/healthz").await.status, 200);

    // A third is served, and the first is closed to make room for it.
    let mut third = TcpStream::connect(addr).await.unwrap();
    assert_eq!(get_on(&mut third, "/healthz").await.status, 200);
    let received = read_until_closed(&mut first, Duration::from_secs(5))
        .await
        .expect("the oldest idle connection is closed");
    assert!(
        received.is_empty(),
        "{}",
        String::from_utf8_lossy(&received)
    );
    assert_eq!(gateway.app().refused_connections(), 0);

    // The others still work; the eviction is in the metrics.
    let metrics = get_on(&mut second, "/metrics").await;
    assert_eq!(metrics.status, 200);
    let scrape = Scrape::new(String::from_utf8(metrics.body).unwrap());
    assert_eq!(
        scrape.value(
            "streamgate_connections_closed_total",
            &[("reason", "evicted")]
        ),
        1.0
    );
    assert_eq!(
        scrape.value("streamgate_connections_refused_total", &[]),
        0.0
    );
    assert_eq!(scrape.value("streamgate_open_connections", &[]), 2.0);
    assert_eq!(get_on(&mut third, "/healthz").await.status, 200);
    drop((second, third));
    gateway.shutdown().await;
}

#[tokio::test]
async fn an_oversized_api_body_gets_413() {
    let gateway = TestGateway::start_with(&config_with("limits:\n  max_body_bytes: 64\n")).await;
    let url = gateway.url("/api/getSignedURL");
    let json = [("content-type", "application/json")];

    // Declared too large.
    let padding = "x".repeat(200);
    let big = json!({"video_id": "intro", "padding": padding}).to_string();
    let response = send(Method::POST, &url, &json, Some(big.into_bytes())).await;
    assert_error(&response, 413, "larger than 64 bytes");

    // Not declared (chunked), found too large while reading.
    let chunk = format!("{{\"video_id\":\"intro\",\"padding\":\"{padding}\"}}");
    let request = format!(
        "POST /api/getSignedURL HTTP/1.1\r\nHost: gateway.test\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
        chunk.len()
    );
    let answer = raw_exchange(addr_of(&gateway), request.as_bytes()).await;
    assert_eq!(
        raw_status(&answer),
        413,
        "{}",
        String::from_utf8_lossy(&answer)
    );

    // Within the limit: served.
    let small = json!({"video_id": "intro"}).to_string();
    assert!(small.len() <= 64);
    let response = send(Method::POST, &url, &json, Some(small.into_bytes())).await;
    assert_eq!(response.status.as_u16(), 200, "{}", response.text());
    gateway.shutdown().await;
}

// === rate limits ===

/// The `Retry-After` of a 429 (whole seconds, at least 1), checked against its JSON reason.
fn assert_rate_limited(response: &TestResponse, context: &str) -> u64 {
    assert_error(response, 429, "too many requests");
    let retry_after: u64 = response
        .header("retry-after")
        .unwrap_or_else(|| panic!("{context}: a 429 has Retry-After"))
        .parse()
        .expect("Retry-After in whole seconds");
    assert!(retry_after >= 1, "{context}: Retry-After {retry_after}");
    let body = json_body(response);
    assert_eq!(body["status"], 429, "{context}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains(&format!("retry in {retry_after} s")),
        "{context}: {body}"
    );
    retry_after
}

/// Send `request(attempt)` (attempts count from 1) until the limiter answers 429 (bounded);
/// every earlier answer must be a success (200 or 302). With a burst of `burst` at one per
/// second, attempt `burst + 1` is refused unless the requests took so long that a token came
/// back meanwhile, which is tolerated (and checked).
async fn until_limited(
    burst: usize,
    mut request: impl AsyncFnMut(usize) -> TestResponse,
) -> TestResponse {
    let started = Instant::now();
    for attempt in 1..=burst + 5 {
        let response = request(attempt).await;
        let status = response.status.as_u16();
        if attempt > burst && status == 429 {
            return response;
        }
        assert!(
            status == 200 || status == 302,
            "attempt {attempt}: {status} {}",
            response.text()
        );
        assert!(
            attempt <= burst || started.elapsed() >= Duration::from_millis(900),
            "attempt {attempt} came within a second of the first yet was not limited"
        );
    }
    panic!("never rate limited");
}

#[tokio::test]
async fn too_many_requests_from_one_address_get_429_with_retry_after() {
    let gateway = TestGateway::start_with(&config_with(
        "rate_limit:\n  per_address: {per_second: 1, burst: 2}\n",
    ))
    .await;
    let url = gateway.url("/watch/intro");
    let limited = until_limited(2, async |_| get(&url).await).await;
    assert_rate_limited(&limited, "per address");

    // Only minting is limited.
    assert_eq!(get(&gateway.url("/healthz")).await.status.as_u16(), 200);
    assert_eq!(get(&gateway.url("/readyz")).await.status.as_u16(), 200);

    // Another address has a budget of its own.
    #[cfg(target_os = "linux")]
    {
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(other, 0)).unwrap();
        let mut stream = socket.connect(addr_of(&gateway)).await.unwrap();
        assert_eq!(get_on(&mut stream, "/watch/intro").await.status, 302);
    }

    let scrape = scrape(&gateway.url("/metrics")).await;
    assert!(scrape.value("streamgate_rate_limited_total", &[]) >= 1.0);
    assert_eq!(
        scrape.value("streamgate_rate_limited_total", &[]),
        scrape.requests("watch", "429")
    );
    gateway.shutdown().await;
}

#[tokio::test]
async fn rate_limit_state_after_a_flood_of_distinct_addresses_returns_to_the_base() {
    // Viewer addresses come from X-Forwarded-For (the test is the trusted proxy); each
    // address's one request recovers within a millisecond.
    let gateway = TestGateway::start_with(&config_with(
        "trusted_proxies: [127.0.0.1]\nrate_limit:\n  per_address: {per_second: 1000, burst: 1}\n  max_keys: 200\n",
    ))
    .await;
    let app = gateway.app();
    let limiter = app.snapshot().authz.limiter().clone();
    assert_eq!(limiter.keys(), 0);
    let client = pooled_client();
    let mut statuses = BTreeMap::new();
    for i in 0..600u32 {
        let viewer = IpAddr::from(std::net::Ipv4Addr::from(0xC633_6400 + i)).to_string();
        let request = http::Request::get(gateway.url("/watch/intro"))
            .header("x-forwarded-for", &viewer)
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        let response = tokio::time::timeout(REQUEST_TIMEOUT, client.request(request))
            .await
            .unwrap()
            .unwrap();
        *statuses.entry(response.status().as_u16()).or_insert(0) += 1;
        assert!(limiter.keys() <= 200, "{} keys", limiter.keys());
    }
    assert!(
        statuses.get(&302).copied().unwrap_or(0) >= 200,
        "{statuses:?}"
    );

    wait_for("the limiter to forget the flood", async || {
        let kept = app.forget_idle_rate_limits();
        (kept == 0).then_some(()).ok_or(format!("{kept} keys kept"))
    })
    .await;
    let scrape = scrape(&gateway.url("/metrics")).await;
    assert_eq!(scrape.value("streamgate_rate_limit_keys", &[]), 0.0);
    gateway.shutdown().await;
}

#[tokio::test]
async fn too_many_requests_from_one_api_key_get_429_and_others_are_unaffected() {
    let gateway = TestGateway::start_with(&config_with(
        "rate_limit:\n  per_subject: {per_second: 1, burst: 2}\n",
    ))
    .await;
    let url = gateway.url("/watch/intro");
    let key = [("x-api-key", TEST_API_KEY)];
    let api = gateway.url("/api/getSignedURL");
    // Two mints on /watch, then the API, which shares the key's budget.
    let limited = until_limited(2, async |attempt| {
        if attempt <= 2 {
            get_with(&url, &key).await
        } else {
            let headers = [("content-type", "application/json"), key[0]];
            let body = br#"{"video_id":"intro"}"#.to_vec();
            send(Method::POST, &api, &headers, Some(body)).await
        }
    })
    .await;
    assert_rate_limited(&limited, "per subject");

    // Anonymous callers have no subject, so no subject limit.
    for _ in 0..4 {
        assert_eq!(get(&url).await.status.as_u16(), 302);
    }
    let s = scrape(&gateway.url("/metrics")).await;
    assert_eq!(
        s.value("streamgate_rate_limited_total", &[]),
        s.requests("api", "429")
    );
    gateway.shutdown().await;
}

// === metrics ===

#[tokio::test]
async fn metrics_count_requests_decisions_cache_and_signatures() {
    let gateway = TestGateway::start_with(&config_with("")).await;
    let emulator = gateway.emulator_origin();
    let mut tokens = BTreeSet::new();
    for _ in 0..5 {
        let response = get(&gateway.url("/watch/intro")).await;
        let location = redirect_location(&response, "anonymous intro");
        tokens.insert(token_in_location(&location, &emulator));
    }
    for _ in 0..2 {
        let response = get(&gateway.url("/watch/keynote")).await;
        assert_eq!(response.status.as_u16(), 401, "{}", response.text());
    }
    let response = get_with(&gateway.url("/watch/intro"), &[("x-api-key", TEST_API_KEY)]).await;
    let location = redirect_location(&response, "API key intro");
    tokens.insert(token_in_location(&location, &emulator));
    let response = get_with(
        &gateway.url("/watch/keynote"),
        &[("x-api-key", "not-a-known-key")],
    )
    .await;
    assert_eq!(response.status.as_u16(), 401, "{}", response.text());
    // Two rules (public, ci-intro) with different settings: two distinct tokens.
    assert_eq!(tokens.len(), 2);

    let s = scrape(&gateway.url("/metrics")).await;
    assert_eq!(s.requests("watch", "302"), 6.0);
    assert_eq!(s.requests("watch", "401"), 3.0);
    assert_eq!(s.requests("watch", "404"), 0.0);
    assert_eq!(
        s.requests("metrics", "200"),
        0.0,
        "a scrape counts after itself"
    );
    assert_eq!(
        s.value(
            "streamgate_request_duration_seconds_count",
            &[("route", "watch")]
        ),
        9.0
    );

    assert_eq!(s.decisions("allow", "public"), 5.0);
    assert_eq!(s.decisions("allow", "ci-intro"), 1.0);
    assert_eq!(s.decisions("allow", "members"), 0.0);
    // No rule covers keynote for an anonymous caller: the default applies.
    assert_eq!(
        s.value(
            "streamgate_decisions_total",
            &[("outcome", "deny_default"), ("rule", "")]
        ),
        2.0
    );
    // The unknown API key.
    assert_eq!(
        s.value(
            "streamgate_decisions_total",
            &[("outcome", "unauthenticated"), ("rule", "")]
        ),
        1.0
    );
    assert_eq!(s.decisions("allow", ""), 0.0);
    assert_eq!(s.all_decisions(), 9.0);

    // One miss per distinct token, every other mint a hit.
    assert_eq!(s.value("streamgate_token_cache_misses_total", &[]), 2.0);
    assert_eq!(s.value("streamgate_token_cache_hits_total", &[]), 4.0);
    // moka counts entries lazily (its housekeeping runs on later cache operations), so the
    // gauge may lag behind the two tokens now cached.
    assert!(s.value("streamgate_token_cache_entries", &[]) <= 2.0);
    assert_eq!(s.value("streamgate_signatures_total", &[]), 2.0);
    assert_eq!(gateway.signatures(), 2);
    assert_eq!(
        s.value("streamgate_signing_duration_seconds_count", &[]),
        2.0
    );

    assert_eq!(s.value("streamgate_config_generation", &[]), 1.0);
    // At least the connection this scrape came over.
    assert!(s.value("streamgate_open_connections", &[]) >= 1.0);
    assert_eq!(s.value("streamgate_connections_refused_total", &[]), 0.0);
    assert_eq!(s.value("streamgate_rate_limited_total", &[]), 0.0);

    // An unknown video.
    let response = get(&gateway.url("/watch/no-such-video")).await;
    assert_eq!(response.status.as_u16(), 404, "{}", response.text());
    let s = scrape(&gateway.url("/metrics")).await;
    assert_eq!(s.requests("watch", "404"), 1.0);
    assert_eq!(s.requests("watch", "302"), 6.0);
    assert_eq!(s.requests("metrics", "200"), 1.0);
    assert_eq!(s.value("streamgate_token_cache_misses_total", &[]), 2.0);
    gateway.shutdown().await;
}

/// A 404 for an unknown video and a 429 from the rate limiter are decided before the policy
/// is consulted: no access decision was made, so none may be counted or logged (in
/// particular not as `unauthenticated`, which means a missing or invalid credential).
#[tokio::test]
async fn requests_stopped_before_the_policy_count_no_decision() {
    let logs = capture_logs();
    let gateway = TestGateway::start_with(&config_with(
        "rate_limit:\n  per_subject: {per_second: 1, burst: 1}\n",
    ))
    .await;
    let key = ("x-api-key", TEST_API_KEY);
    let unknown_id = unique_id("unknown-video");
    let response = get_with(
        &gateway.url("/watch/no-such-video"),
        &[key, ("x-request-id", &unknown_id)],
    )
    .await;
    assert_eq!(response.status.as_u16(), 404, "{}", response.text());
    // The 404 used the key's one token: the next mint is refused (unless a second passed).
    let limited_id = unique_id("rate-limited");
    let started = Instant::now();
    let response = get_with(
        &gateway.url("/watch/intro"),
        &[key, ("x-request-id", &limited_id)],
    )
    .await;
    let limited = response.status.as_u16() == 429;
    assert!(
        limited || started.elapsed() >= Duration::from_millis(900),
        "{}",
        response.text()
    );

    let lines = access_lines(&logs);
    let unknown = one_line_for(&lines, &unknown_id);
    assert_eq!(unknown["subject"], "api_key:ci");
    let s = scrape(&gateway.url("/metrics")).await;
    let decided = if limited { 0.0 } else { 1.0 };
    assert_eq!(
        (
            s.decisions("unauthenticated", ""),
            s.all_decisions(),
            unknown["decision"].as_str().unwrap(),
        ),
        (0.0, decided, ""),
        "(unauthenticated decisions, all decisions, logged decision of the 404): requests \
         refused before the policy was consulted (404 unknown video by an API-key caller{}) \
         were counted and logged as decisions",
        if limited { ", 429 rate limited" } else { "" }
    );
    if limited {
        let line = one_line_for(&lines, &limited_id);
        assert_eq!(line["status"], 429);
        assert_eq!(
            line["decision"], "",
            "a rate-limited request was logged with a decision"
        );
    }
    gateway.shutdown().await;
}

#[tokio::test]
async fn metrics_listen_moves_metrics_to_a_listener_of_its_own() {
    let config = format!("{}metrics_listen: 127.0.0.1:0\n", gateway_config());
    let gateway = TestGateway::start_with(&config).await;
    let metrics_addr = gateway
        .app()
        .metrics_addr()
        .expect("a metrics listener is running");
    assert_ne!(metrics_addr, addr_of(&gateway));
    assert!(metrics_addr.ip().is_loopback() && metrics_addr.port() != 0);

    let on_gateway = get(&gateway.url("/metrics")).await;
    assert_eq!(on_gateway.status.as_u16(), 404, "{}", on_gateway.text());
    assert_eq!(get(&gateway.url("/watch/intro")).await.status.as_u16(), 302);

    let separate = format!("http://{metrics_addr}");
    let s = scrape(&format!("{separate}/metrics")).await;
    assert_eq!(s.requests("watch", "302"), 1.0);
    assert_eq!(s.requests("metrics", "404"), 1.0);
    assert_eq!(s.decisions("allow", "public"), 1.0);
    let health = get(&format!("{separate}/healthz")).await;
    assert_eq!(health.status.as_u16(), 200);
    assert_eq!(json_body(&health)["status"], "ok");
    let other = get(&format!("{separate}/watch/intro")).await;
    assert_eq!(
        other.status.as_u16(),
        404,
        "only /metrics and /healthz there"
    );
    gateway.shutdown().await;
}

#[tokio::test]
async fn metrics_are_not_public_unless_made_so_on_purpose() {
    // No `metrics_listen` and no `metrics_public`: the metrics (rule names, per-rule traffic)
    // are nowhere.
    let gateway = TestGateway::start_with(&gateway_config()).await;
    assert_eq!(get(&gateway.url("/watch/intro")).await.status.as_u16(), 302);
    let hidden = get(&gateway.url("/metrics")).await;
    assert_eq!(hidden.status.as_u16(), 404, "{}", hidden.text());
    assert!(
        hidden.text().contains("metrics_listen"),
        "{}",
        hidden.text()
    );
    assert!(
        !hidden.text().contains("public"),
        "no rule name: {}",
        hidden.text()
    );
    assert!(gateway.app().metrics_addr().is_none());
    gateway.shutdown().await;

    // Both: the metrics listener and, on purpose, the public one.
    let config = format!(
        "{}metrics_listen: 127.0.0.1:0\nmetrics_public: true\n",
        gateway_config()
    );
    let gateway = TestGateway::start_with(&config).await;
    let separate = gateway.app().metrics_addr().expect("a metrics listener");
    let public = scrape(&gateway.url("/metrics")).await;
    assert_eq!(public.requests("metrics", "200"), 0.0);
    let private = scrape(&format!("http://{separate}/metrics")).await;
    assert_eq!(private.requests("metrics", "200"), 1.0, "the public scrape");
    gateway.shutdown().await;
}

// === readiness and health ===

#[tokio::test]
async fn readyz_reports_policy_key_and_emulator_and_healthz_answers() {
    let gateway = TestGateway::start_with(&config_with("")).await;
    let response = get(&gateway.url("/readyz")).await;
    assert_eq!(response.status.as_u16(), 200, "{}", response.text());
    assert_eq!(response.header("content-type"), Some("application/json"));
    let body = json_body(&response);
    assert_eq!(body["ready"], true, "{body}");
    assert_eq!(body["policy"]["rules"], 3, "{body}");
    assert_eq!(body["policy"]["videos"], 2, "{body}");
    assert_eq!(body["policy"]["generation"], 1, "{body}");
    assert_eq!(body["signing_key"]["active"], FIXTURE_KID, "{body}");
    assert_eq!(body["signing_key"]["usable"], true, "{body}");
    assert_eq!(body["signing_key"]["configured"], 1, "{body}");
    assert_eq!(body["emulator_reachable"], true, "{body}");

    let health = get(&gateway.url("/healthz")).await;
    assert_eq!(health.status.as_u16(), 200);
    assert_eq!(json_body(&health)["status"], "ok");

    let s = scrape(&gateway.url("/metrics")).await;
    assert_eq!(s.requests("ready", "200"), 1.0);
    assert_eq!(s.requests("health", "200"), 1.0);
    assert_eq!(s.all_decisions(), 0.0);
    gateway.shutdown().await;
}

// === request ids ===

fn is_generated_id(id: &str) -> bool {
    id.len() == 24
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[tokio::test]
async fn request_ids_are_echoed_when_sane_and_generated_otherwise() {
    let gateway = TestGateway::start_with(&config_with("")).await;
    let id_of = async |path: &str, sent: Option<&str>| {
        let headers: Vec<(&str, &str)> = sent.map(|id| ("x-request-id", id)).into_iter().collect();
        let response = get_with(&gateway.url(path), &headers).await;
        let ids: Vec<_> = response.headers.get_all("x-request-id").iter().collect();
        assert_eq!(ids.len(), 1, "{path}: one X-Request-Id, got {ids:?}");
        ids[0].to_str().unwrap().to_string()
    };

    // Sane: echoed, on every kind of response.
    let longest = "a".repeat(128);
    for sane in [
        "abc-123_x.y:z",
        "A",
        "0f8fad5b-d9cb-469f-a165-70867728950e",
        &longest,
    ] {
        for path in [
            "/watch/intro",
            "/watch/keynote",
            "/watch/nope",
            "/healthz",
            "/readyz",
            "/metrics",
            "/nowhere",
        ] {
            assert_eq!(id_of(path, Some(sane)).await, sane, "{path}");
        }
    }

    // Insane: replaced by a generated id.
    let too_long = "a".repeat(129);
    for insane in [
        too_long.as_str(),
        "has space",
        "slash/es",
        "semi;colon",
        "quote\"",
        "<script>",
        "ünï",
    ] {
        let id = id_of("/watch/intro", Some(insane)).await;
        assert!(is_generated_id(&id), "{insane:?} was answered with {id:?}");
    }
    // An empty one too.
    let id = id_of("/watch/intro", Some("")).await;
    assert!(is_generated_id(&id), "{id:?}");

    // Absent: generated, different for each request.
    let mut seen = BTreeSet::new();
    for path in [
        "/watch/intro",
        "/watch/intro",
        "/watch/keynote",
        "/healthz",
        "/nowhere",
    ] {
        let id = id_of(path, None).await;
        assert!(is_generated_id(&id), "{path}: {id:?}");
        assert!(seen.insert(id), "request ids repeat");
    }
    gateway.shutdown().await;
}

// === access log ===

/// The fields of every access-log line captured so far.
fn access_lines(logs: &Mutex<Vec<u8>>) -> Vec<Value> {
    logged_text(logs)
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).expect("a JSON log line"))
        .filter(|line| line["target"] == "streamgate::access")
        .map(|line| line["fields"].clone())
        .collect()
}

/// The one access line for request `id`.
fn one_line_for<'a>(lines: &'a [Value], id: &str) -> &'a Value {
    let mine: Vec<_> = lines.iter().filter(|l| l["request_id"] == id).collect();
    assert_eq!(mine.len(), 1, "one access line for {id}: {mine:?}");
    mine[0]
}

/// A request id no other request in this binary sends.
fn unique_id(what: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "ops-{what}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

const LOG_API_KEY: &str = "sgOpsLogApiKey7f3a9c21d";
const LOG_PASSWORD: &str = "OpsLogPassw0rdQz81";
const LOG_JWT_SECRET: &str = "ops-log-test-only-hs256-secret-5b0e7d1c9a";
const LOG_ISSUER: &str = "https://idp.ops.test";
const LOG_COOKIE: &str = "sg_session";

fn access_log_config(secret_file: &std::path::Path) -> String {
    config_with(&format!(
        "\
users:
  alice:
    password: \"{hash}\"
jwt_issuers:
  - issuer: {LOG_ISSUER}
    audience: streamgate
    algorithms: [HS256]
    secret:
      file: {secret}
    cookie: {LOG_COOKIE}
log:
  access: true
",
        hash = argon2_phc(LOG_PASSWORD),
        secret = secret_file.display(),
    ))
    .replace(
        "api_keys:\n",
        &format!(
            "api_keys:\n  - name: logger\n    sha256: {}\n",
            streamgate::identity::hash_api_key(LOG_API_KEY)
        ),
    )
}

fn log_jwt(subject: &str) -> String {
    mint_hs256(
        LOG_JWT_SECRET.as_bytes(),
        &json!({
            "iss": LOG_ISSUER,
            "aud": "streamgate",
            "sub": subject,
            "iat": unix_now(),
            "exp": unix_now() + 3600,
        }),
    )
}

#[tokio::test]
async fn the_access_log_has_one_line_per_request_and_no_secrets() {
    let logs = capture_logs();
    let secret_file = temp_file_with(LOG_JWT_SECRET.as_bytes());
    let gateway = TestGateway::start_with(&access_log_config(secret_file.path())).await;
    let emulator = gateway.emulator_origin();

    let bearer_key = format!("Bearer {LOG_API_KEY}");
    let basic = basic_auth("alice", LOG_PASSWORD);
    let wrong_basic = basic_auth("alice", "OpsLogWrongPassw0rd");
    let jwt = log_jwt("viewer-bearer");
    let bearer_jwt = format!("Bearer {jwt}");
    let cookie_jwt = log_jwt("viewer-cookie");
    let cookie = format!("theme=dark; {LOG_COOKIE}={cookie_jwt}");

    /// A request and the access line it must produce.
    struct Case<'a> {
        method: Method,
        path: &'a str,
        headers: Vec<(&'a str, &'a str)>,
        body: Option<&'a str>,
        /// status, decision, rule, subject, video
        logged: (u16, &'a str, &'a str, &'a str, &'a str),
    }
    let get = |path, headers, logged| Case {
        method: Method::GET,
        path,
        headers,
        body: None,
        logged,
    };
    let (members, logger) = ("members", "api_key:logger");
    let cases = [
        get(
            "/watch/intro?autoplay=true",
            vec![],
            (302, "allow", "public", "", "intro"),
        ),
        get(
            "/watch/keynote",
            vec![("x-api-key", LOG_API_KEY)],
            (302, "allow", members, logger, "keynote"),
        ),
        get(
            "/watch/keynote",
            vec![("authorization", &bearer_key)],
            (302, "allow", members, logger, "keynote"),
        ),
        get(
            "/watch/keynote",
            vec![("authorization", &basic)],
            (302, "allow", members, "user:alice", "keynote"),
        ),
        get(
            "/watch/keynote",
            vec![("authorization", &bearer_jwt)],
            (302, "allow", members, "jwt:viewer-bearer", "keynote"),
        ),
        get(
            "/watch/keynote",
            vec![("cookie", &cookie)],
            (302, "allow", members, "jwt:viewer-cookie", "keynote"),
        ),
        get(
            "/watch/keynote",
            vec![],
            (401, "deny_default", "", "", "keynote"),
        ),
        get(
            "/watch/keynote",
            vec![("authorization", &wrong_basic)],
            (401, "unauthenticated", "", "", ""),
        ),
        get(
            "/healthz",
            vec![("authorization", &bearer_key)],
            (200, "", "", "", ""),
        ),
        Case {
            method: Method::POST,
            path: "/api/getSignedURL",
            headers: vec![
                ("content-type", "application/json"),
                ("x-api-key", LOG_API_KEY),
            ],
            body: Some(r#"{"video_id":"keynote"}"#),
            logged: (200, "allow", members, logger, "keynote"),
        },
    ];

    let mut tokens = Vec::new();
    let mut ids = Vec::new();
    for case in &cases {
        let id = unique_id("access");
        let mut headers = case.headers.clone();
        headers.push(("x-request-id", &id));
        let body = case.body.map(|b| b.as_bytes().to_vec());
        let response = send(case.method.clone(), &gateway.url(case.path), &headers, body).await;
        assert_eq!(
            response.status.as_u16(),
            case.logged.0,
            "{} {}: {}",
            case.method,
            case.path,
            response.text()
        );
        assert_eq!(response.header("x-request-id"), Some(id.as_str()));
        if let Some(location) = response.header("location") {
            tokens.push(token_in_location(location, &emulator));
        }
        if case.body.is_some() {
            tokens.push(json_body(&response)["token"].as_str().unwrap().to_string());
        }
        ids.push(id);
    }
    assert_eq!(tokens.len(), 7);

    let lines = access_lines(&logs);
    for (case, id) in cases.iter().zip(&ids) {
        let line = one_line_for(&lines, id);
        let context = format!("{} {}: {line}", case.method, case.path);
        assert_eq!(line["message"], "request", "{context}");
        assert_eq!(line["method"], case.method.as_str(), "{context}");
        // The path only: a query may carry anything.
        assert_eq!(
            line["path"],
            case.path.split('?').next().unwrap(),
            "{context}"
        );
        let (status, decision, rule, subject, video) = case.logged;
        assert_eq!(line["status"], status, "{context}");
        assert_eq!(line["decision"], decision, "{context}");
        assert_eq!(line["rule"], rule, "{context}");
        assert_eq!(line["subject"], subject, "{context}");
        assert_eq!(line["video"], video, "{context}");
        assert_eq!(line["peer"], "127.0.0.1", "{context}");
        assert!(line["latency_ms"].as_f64().is_some(), "{context}");
    }

    // Nothing secret anywhere in the logs, at any level, from any thread.
    let text = logged_text(&logs);
    assert!(
        text.contains("token issued"),
        "debug lines are captured too"
    );
    let mut secrets: Vec<&str> = vec![
        LOG_API_KEY,
        LOG_PASSWORD,
        "OpsLogWrongPassw0rd",
        LOG_JWT_SECRET,
        &jwt,
        &cookie_jwt,
        &bearer_key,
        &basic,
        &wrong_basic,
        &bearer_jwt,
    ];
    // The base64 of `user:password` without its scheme, and each JWT's signature alone.
    secrets.push(basic.strip_prefix("Basic ").unwrap());
    secrets.push(wrong_basic.strip_prefix("Basic ").unwrap());
    secrets.push(jwt.rsplit('.').next().unwrap());
    secrets.push(cookie_jwt.rsplit('.').next().unwrap());
    for token in &tokens {
        secrets.push(token);
        secrets.push(token.rsplit('.').next().unwrap());
    }
    for secret in secrets {
        assert!(
            !text.contains(secret),
            "the logs contain a secret: {secret}"
        );
    }
    gateway.shutdown().await;
}

#[tokio::test]
async fn log_access_false_writes_no_access_lines() {
    let logs = capture_logs();
    let gateway = TestGateway::start_with(&config_with("log:\n  access: false\n")).await;
    let id = unique_id("no-access-log");
    let response = get_with(&gateway.url("/watch/intro"), &[("x-request-id", &id)]).await;
    assert_eq!(response.status.as_u16(), 302);
    assert_eq!(response.header("x-request-id"), Some(id.as_str()));
    let lines = access_lines(&logs);
    assert!(
        !lines.iter().any(|l| l["request_id"] == id.as_str()),
        "an access line was written with log.access: false"
    );
    // Metrics do not depend on the access log.
    let s = scrape(&gateway.url("/metrics")).await;
    assert_eq!(s.decisions("allow", "public"), 1.0);
    gateway.shutdown().await;
}
