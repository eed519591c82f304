//! Proxy mode end to end over loopback: the player, playlists, segments, subtitles and
//! downloads fetched through the gateway from the emulator without the viewer ever seeing a
//! token; the header rules against a recording upstream; streaming with bounded memory; and
//! every upstream fault (refused, silent, stalled, reset, 5xx, refused tokens) with short
//! timeouts.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http::header::HOST;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use streamgate::Body;
use streamgate::body::BoxError;
use streamgate::emulator::{CLIP, Media, SYNTHETIC, SYNTHETIC_DOWNLOAD_LEN_BYTES};
use streamgate::http::server::Handler;
use tokio::sync::mpsc;

/// `Via` the gateway adds in both directions.
const VIA: &str = "1.1 streamgate";
/// The body the recording upstream streams for `big.bin`.
const BIG_BODY_BYTES: u64 = 200 * 1024 * 1024;
/// The chunk size it streams that body in.
const CHUNK_BYTES: usize = 64 * 1024;
/// The declared length of the bodies the upstream stalls or cuts off.
const PROMISED_BYTES: usize = 1024 * 1024;
/// Short upstream timeouts for the fault tests.
const SHORT_TIMEOUTS: &str = "\
upstream:
  connect_timeout: 1s
  response_timeout: 1s
  idle_timeout: 1s
";
/// What "within the timeout" means for a 1 s timeout on two shared, busy cores.
const FAULT_DEADLINE: Duration = Duration::from_secs(8);

// === configurations ===

/// The default test configuration with every rule in proxy mode, on the in-process emulator.
fn proxy_config() -> String {
    format!("{}mode: proxy\n", gateway_config())
}

/// The default test configuration in proxy mode against `origin` (no emulator), with `extra`
/// top-level YAML appended.
fn origin_config(origin: &str, extra: &str) -> String {
    let emulator = "stream:\n  emulator:\n    listen: 127.0.0.1:0\n";
    let config = gateway_config();
    assert!(config.contains(emulator), "the default config has changed");
    format!(
        "{}mode: proxy\n{extra}",
        config.replace(emulator, &format!("stream:\n  origin: {origin}\n"))
    )
}

/// The default test configuration with one `rule`'s mode set (the rule is found by its
/// `subjects` line, which is unique in [`gateway_config`]).
fn with_rule_mode(config: &str, subjects_line: &str, mode: &str) -> String {
    assert!(
        config.contains(subjects_line),
        "no rule with {subjects_line}"
    );
    config.replace(subjects_line, &format!("{subjects_line}    mode: {mode}\n"))
}

const API_KEY_HEADER: (&str, &str) = ("x-api-key", TEST_API_KEY);

// === small helpers ===

/// The token the gateway uses upstream for `video` for this caller. No endpoint hands out a
/// proxy-mode token, so it is asked of the running snapshot the way `/watch` asks: identify,
/// authorize, then the permit's upstream token (from the same cache proxied requests use).
async fn current_token(gateway: &TestGateway, video: &str, headers: &[(&str, &str)]) -> String {
    let snapshot = gateway.app().snapshot();
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.append(
            http::HeaderName::from_bytes(name.as_bytes()).expect("a header name"),
            http::HeaderValue::from_str(value).expect("a header value"),
        );
    }
    let peer: std::net::SocketAddr = "127.0.0.1:1".parse().expect("an address");
    let mut ctx = streamgate::request::Context::new(
        http::HeaderValue::from_static("test"),
        peer,
        peer.ip(),
        streamgate::metrics::Route::Watch,
    );
    ctx.identity = snapshot
        .auth
        .identify(&map, ctx.client)
        .await
        .expect("the credentials are valid");
    let permit = snapshot
        .authz
        .authorize(&mut ctx, video, streamgate::request::route::Target::Player)
        .unwrap_or_else(|error| panic!("{video} is permitted: {error}"));
    permit
        .upstream_token(&snapshot.cache)
        .await
        .expect("a token is signed")
        .token
        .expose()
        .to_owned()
}

/// Panics if any of `secrets` appears in the body or any header value of `response`.
fn assert_leaks_nothing(response: &TestResponse, secrets: &[&str], context: &str) {
    let body = String::from_utf8_lossy(&response.body);
    for secret in secrets {
        assert!(
            !body.contains(secret),
            "{context}: the body contains {secret:?}:\n{body}"
        );
        for (name, value) in &response.headers {
            let value = String::from_utf8_lossy(value.as_bytes());
            assert!(
                !value.contains(secret),
                "{context}: header {name} contains {secret:?}: {value}"
            );
        }
    }
}

/// A 200 with a body, panicking with `context` otherwise.
fn assert_ok(response: &TestResponse, context: &str) {
    assert_eq!(
        response.status.as_u16(),
        200,
        "{context}: {}",
        String::from_utf8_lossy(&response.body)
    );
}

/// `Via: 1.1 streamgate` and a `Cache-Control` that no shared cache may act on.
fn assert_proxied_headers(response: &TestResponse, context: &str) {
    assert_eq!(response.header("via"), Some(VIA), "{context}");
    let cache_control = response.header("cache-control").unwrap_or_default();
    assert!(
        !cache_control.to_ascii_lowercase().contains("public")
            && !cache_control.contains("s-maxage"),
        "{context}: Cache-Control {cache_control:?}"
    );
    assert!(
        cache_control.contains("private") || cache_control.contains("no-store"),
        "{context}: Cache-Control {cache_control:?}"
    );
}

/// The process's resident set size (the gateway runs in this process), in bytes.
fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .expect("a VmRSS line");
    let kib: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .expect("VmRSS in kB");
    kib * 1024
}

/// A response whose body is still to be read.
struct Opened {
    status: StatusCode,
    headers: HeaderMap,
    body: Incoming,
}

/// Send a request and return once the response head arrives (bounded by
/// [`REQUEST_TIMEOUT`]); the body is left to the caller.
async fn open(method: Method, url: &str, headers: &[(&str, &str)]) -> Opened {
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build_http();
    let mut request = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(Bytes::new())).expect("a request");
    let response = tokio::time::timeout(REQUEST_TIMEOUT, client.request(request))
        .await
        .unwrap_or_else(|_| panic!("no response head from {url} within {REQUEST_TIMEOUT:?}"))
        .expect("the request should be answered");
    let (parts, body) = response.into_parts();
    Opened {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// How reading a body ended.
#[derive(Debug)]
struct Drained {
    bytes: u64,
    /// The error that ended the body early, if it did.
    error: Option<String>,
    elapsed: Duration,
}

/// Read `body` to its end (or error), counting bytes without keeping them; panics if that
/// takes longer than `limit`. `every` is called with the running count after each frame.
async fn drain(mut body: Incoming, limit: Duration, mut every: impl FnMut(u64)) -> Drained {
    let started = Instant::now();
    let mut bytes = 0u64;
    let read = async {
        loop {
            match body.frame().await {
                None => return None,
                Some(Err(error)) => return Some(format!("{error:?}")),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        bytes += data.len() as u64;
                        every(bytes);
                    }
                }
            }
        }
    };
    let error = tokio::time::timeout(limit, read)
        .await
        .unwrap_or_else(|_| panic!("the body did not end within {limit:?}"));
    Drained {
        bytes,
        error,
        elapsed: started.elapsed(),
    }
}

// === a recording, scripted upstream ===

/// One request as the upstream received it.
#[derive(Clone, Debug)]
struct Recorded {
    method: Method,
    /// `/<token>/<file>`.
    path: String,
    headers: HeaderMap,
}

impl Recorded {
    /// The path segment where Stream expects the token.
    fn token(&self) -> &str {
        self.path
            .trim_start_matches('/')
            .split('/')
            .next()
            .unwrap_or_default()
    }
}

/// What the scripted upstream saw and holds.
#[derive(Default)]
struct UpstreamState {
    requests: Mutex<Vec<Recorded>>,
    /// Requests per file below the token.
    attempts: Mutex<HashMap<String, usize>>,
    /// Bytes of `big.bin` handed to the server so far.
    big_sent: AtomicU64,
    /// Set when the server could no longer hand `big.bin` on: the connection was closed.
    big_cancelled: AtomicBool,
    /// Senders of bodies that stall, kept open so they stall rather than end.
    stalled: Mutex<Vec<mpsc::Sender<Result<Bytes, BoxError>>>>,
}

/// A stand-in for Stream that checks no token and answers by the file below the token:
///
/// | file | answer |
/// |---|---|
/// | `big.bin` | 200, [`BIG_BODY_BYTES`] generated in [`CHUNK_BYTES`] chunks, streamed |
/// | `hop` | 200 with hop-by-hop headers and a public `Cache-Control` |
/// | `redirect` | 302 to `<its origin>/<token>/x` |
/// | `redirect-root` | 302 to `/<token>/manifest/y` |
/// | `redirect-leak` | 302 to a foreign URL that carries the token in its query |
/// | `silent` | never answers (30 s) |
/// | `stall` | 200, declares [`PROMISED_BYTES`], sends 4 KiB, then nothing |
/// | `reset` | 200, declares [`PROMISED_BYTES`], sends 64 KiB, then drops the connection |
/// | `reset-chunked` | the same, chunked: no length declared |
/// | `drip` | 200, chunked, one byte every 100 ms (for at most a minute) |
/// | `fail` | 500 |
/// | `refuse-once` | 401 the first time, then 200 |
/// | `refuse-always` | 403 `blocked by rule on 'ip.src'` |
/// | `manifest/coded.m3u8` | a master playlist naming `<its origin>/<token>/...`, gzip-coded unless the request limits `Accept-Encoding` to identity |
/// | anything else | 200 `ok` |
struct ScriptedUpstream {
    state: Arc<UpstreamState>,
}

/// A body fed through a channel: it ends when the sender is dropped, fails when it sends an
/// error, and its sender learns that the connection is gone when sending fails.
struct ChannelBody {
    rx: mpsc::Receiver<Result<Bytes, BoxError>>,
}

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.rx
            .poll_recv(cx)
            .map(|item| item.map(|result| result.map(Frame::data)))
    }
}

fn plain(status: u16, body: &'static str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain")
        .body(Body::new(Bytes::from_static(body.as_bytes())))
        .expect("a response")
}

/// A 200 whose body comes from `rx`, declaring `declared` bytes (chunked when `None`).
fn streamed(rx: mpsc::Receiver<Result<Bytes, BoxError>>, declared: Option<u64>) -> Response<Body> {
    let mut response = Response::builder()
        .status(200)
        .header("content-type", "application/octet-stream");
    if let Some(declared) = declared {
        response = response.header("content-length", declared);
    }
    response
        .body(Body::stream(ChannelBody { rx }))
        .expect("a response")
}

/// A master playlist naming the upstream's own token URL, content-coded as the request
/// allows: with no `Accept-Encoding` any coding is acceptable (RFC 9110 §12.5.3), so only a
/// request that asks for identity gets it.
fn coded_manifest(request: &HeaderMap, host: &str, token: &str) -> Response<Body> {
    let playlist = format!(
        "#EXTM3U\n#EXT-X-MEDIA:TYPE=SUBTITLES,GROUP-ID=\"subs\",NAME=\"English\",URI=\"http://{host}/{token}/manifest/subtitles_en.m3u8\"\nstream_360p.m3u8\n"
    );
    let accepted = request
        .get("accept-encoding")
        .and_then(|v| v.to_str().ok())
        .map(str::to_ascii_lowercase);
    let identity_only = accepted.is_some_and(|a| !a.contains("gzip") && !a.contains('*'));
    let response = Response::builder()
        .status(200)
        .header("content-type", "application/vnd.apple.mpegurl");
    let (response, body) = if identity_only {
        (response, playlist.into_bytes())
    } else {
        (
            response.header("content-encoding", "gzip"),
            gzip_stored(playlist.as_bytes()),
        )
    };
    response
        .body(Body::new(Bytes::from(body)))
        .expect("a response")
}

/// A gzip member (RFC 1952) holding `data` in one stored deflate block (RFC 1951 §3.2.4):
/// valid gzip without a compressor. `data` must be under 64 KiB.
fn gzip_stored(data: &[u8]) -> Vec<u8> {
    let len = u16::try_from(data.len()).expect("under 64 KiB");
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    out.push(1); // BFINAL, stored
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&(!len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&crc32(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

/// CRC-32 (IEEE), bit by bit.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn redirect_to(location: &str) -> Response<Body> {
    Response::builder()
        .status(302)
        .header("location", location)
        .body(Body::empty())
        .expect("a response")
}

impl ScriptedUpstream {
    fn answer(&self, req: &Request<Incoming>) -> Response<Body> {
        let path = req.uri().path().to_owned();
        let recorded = Recorded {
            method: req.method().clone(),
            path: path.clone(),
            headers: req.headers().clone(),
        };
        let token = recorded.token().to_owned();
        let file = path
            .trim_start_matches('/')
            .split_once('/')
            .map_or("", |(_, file)| file)
            .to_owned();
        self.state.requests.lock().unwrap().push(recorded);
        let attempt = {
            let mut attempts = self.state.attempts.lock().unwrap();
            let count = attempts.entry(file.clone()).or_default();
            *count += 1;
            *count
        };
        let host = req
            .headers()
            .get(HOST)
            .and_then(|host| host.to_str().ok())
            .unwrap_or("missing-host")
            .to_owned();
        match file.as_str() {
            "big.bin" => self.big_body(),
            "hop" => Response::builder()
                .status(200)
                .header("content-type", "text/plain")
                .header("connection", "x-foo")
                .header("x-foo", "hop-by-hop")
                .header("keep-alive", "timeout=5, max=100")
                .header("proxy-authenticate", "Basic realm=\"upstream\"")
                .header("cache-control", "public, max-age=60, s-maxage=600")
                .header("x-end-to-end", "kept")
                .body(Body::new(Bytes::from_static(b"hop")))
                .expect("a response"),
            "redirect" => redirect_to(&format!("http://{host}/{token}/x")),
            "redirect-root" => redirect_to(&format!("/{token}/manifest/y")),
            "redirect-leak" => redirect_to(&format!("https://elsewhere.example/?t={token}")),
            "stall" => {
                let (tx, rx) = mpsc::channel(1);
                tx.try_send(Ok(Bytes::from(vec![b's'; 4096])))
                    .expect("an empty channel takes one chunk");
                self.state.stalled.lock().unwrap().push(tx);
                streamed(rx, Some(PROMISED_BYTES as u64))
            }
            "reset" | "reset-chunked" => {
                let (tx, rx) = mpsc::channel(2);
                tx.try_send(Ok(Bytes::from(vec![b'r'; 64 * 1024])))
                    .expect("room for the first chunk");
                tx.try_send(Err("the upstream drops the connection".into()))
                    .expect("room for the error");
                let declared = (file == "reset").then_some(PROMISED_BYTES as u64);
                streamed(rx, declared)
            }
            "drip" => {
                let (tx, rx) = mpsc::channel(1);
                tokio::spawn(async move {
                    for _ in 0..600 {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        if tx.send(Ok(Bytes::from_static(b"d"))).await.is_err() {
                            return;
                        }
                    }
                });
                streamed(rx, None)
            }
            "fail" => plain(500, "upstream exploded"),
            "refuse-once" if attempt == 1 => plain(401, "token expired"),
            "refuse-always" => plain(403, "blocked by rule on 'ip.src'"),
            "manifest/coded.m3u8" => coded_manifest(req.headers(), &host, &token),
            _ => plain(200, "ok"),
        }
    }

    /// [`BIG_BODY_BYTES`] of generated bytes: a producer task hands the server one shared
    /// chunk at a time, so the upstream holds at most a few chunks however large the body.
    fn big_body(&self) -> Response<Body> {
        let chunk = Bytes::from(
            (0..CHUNK_BYTES)
                .map(|i| (i % 251) as u8)
                .collect::<Vec<u8>>(),
        );
        let (tx, rx) = mpsc::channel(2);
        let state = Arc::clone(&self.state);
        tokio::spawn(async move {
            let chunks = BIG_BODY_BYTES / CHUNK_BYTES as u64;
            for _ in 0..chunks {
                if tx.send(Ok(chunk.clone())).await.is_err() {
                    state.big_cancelled.store(true, Ordering::SeqCst);
                    return;
                }
                state
                    .big_sent
                    .fetch_add(CHUNK_BYTES as u64, Ordering::SeqCst);
            }
        });
        streamed(rx, Some(BIG_BODY_BYTES))
    }
}

impl Handler for ScriptedUpstream {
    async fn handle(&self, req: Request<Incoming>, _peer: SocketAddr) -> Response<Body> {
        let response = self.answer(&req);
        let silent = req.uri().path().ends_with("/silent");
        if silent {
            // Accepted and read, never answered (bounded, for a tidy shutdown).
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
        response
    }
}

/// A [`ScriptedUpstream`] on a loopback port, and a gateway in proxy mode in front of it.
struct Rig {
    upstream: TestServer,
    state: Arc<UpstreamState>,
    gateway: TestGateway,
}

impl Rig {
    /// Start both; `extra` is appended to the gateway's configuration.
    async fn start(extra: &str) -> Rig {
        let state = Arc::new(UpstreamState::default());
        let upstream = TestServer::start(Arc::new(ScriptedUpstream {
            state: Arc::clone(&state),
        }))
        .await;
        let gateway = TestGateway::start_with(&origin_config(&upstream.origin(), extra)).await;
        Rig {
            upstream,
            state,
            gateway,
        }
    }

    fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().unwrap().clone()
    }

    fn attempts(&self, file: &str) -> usize {
        self.state
            .attempts
            .lock()
            .unwrap()
            .get(file)
            .copied()
            .unwrap_or(0)
    }

    /// A request that should work whatever happened before it.
    async fn assert_still_serving(&self, after: &str) {
        let response = get(&self.gateway.url("/watch/intro/ok")).await;
        assert_ok(&response, &format!("a normal request after {after}"));
        assert_eq!(response.text(), "ok", "after {after}");
    }

    async fn shutdown(self) {
        self.gateway.shutdown().await;
        self.upstream.shutdown().await;
    }
}

// === proxy mode against the emulator ===

#[tokio::test]
async fn watch_redirects_to_the_relative_player_page_which_carries_no_token() {
    let gateway = TestGateway::start_with(&proxy_config()).await;
    let watch_url = gateway.url("/watch/intro");
    let response = get(&watch_url).await;
    let location = redirect_location(&response, "proxy-mode /watch");
    assert_eq!(location, "/watch/intro/iframe");
    assert_eq!(response.header("cache-control"), Some("private, no-store"));
    let with_options = get(&gateway.url("/watch/intro?autoplay=true&muted=true")).await;
    assert_eq!(
        redirect_location(&with_options, "player options"),
        "/watch/intro/iframe?autoplay=true&muted=true"
    );

    let page_url = resolve_url(&watch_url, &location);
    let page = get(&page_url).await;
    assert_ok(&page, "the player page");
    assert!(
        page.header("content-type")
            .is_some_and(|t| t.starts_with("text/html")),
        "{:?}",
        page.headers
    );
    assert!(page.text().contains(VIDEO_UID), "{}", page.text());
    assert_proxied_headers(&page, "the player page");

    let token = current_token(&gateway, "intro", &[]).await;
    let emulator = gateway.emulator_origin();
    let secrets = [token.as_str(), emulator.as_str(), "eyJ"];
    assert_leaks_nothing(&response, &secrets, "the /watch redirect");
    assert_leaks_nothing(&page, &secrets, "the player page");

    // The page's manifest reference resolves below the gateway's video path.
    let manifest = get(&resolve_url(&page_url, "manifest/video.m3u8")).await;
    assert_ok(&manifest, "the manifest the page names");
    assert!(manifest.text().starts_with("#EXTM3U"));
    gateway.shutdown().await;
}

#[tokio::test]
async fn master_playlist_subtitles_uri_is_rewritten_to_the_gateway() {
    let gateway = TestGateway::start_with(&proxy_config()).await;
    let master = get(&gateway.url("/watch/intro/manifest/video.m3u8")).await;
    assert_ok(&master, "the master playlist");
    let text = master.text();
    assert!(text.starts_with("#EXTM3U\n"), "{text}");
    assert_eq!(
        playlist_attribute_uris(&text),
        ["/watch/intro/manifest/subtitles_en.m3u8"],
        "{text}"
    );
    assert_eq!(
        playlist_uris(&text),
        ["stream_240p.m3u8", "stream_360p.m3u8"],
        "{text}"
    );
    assert!(!text.contains("://"), "{text}");
    let token = current_token(&gateway, "intro", &[]).await;
    let emulator = gateway.emulator_origin();
    let emulator_host = emulator.trim_start_matches("http://");
    assert_leaks_nothing(
        &master,
        &[token.as_str(), emulator_host, "eyJ"],
        "the master playlist",
    );
    assert_proxied_headers(&master, "the master playlist");
    // The body changed, so its length and strong validator went.
    assert_eq!(master.header("content-length"), None);
    let etag = master.header("etag").expect("an ETag");
    assert!(etag.starts_with("W/\""), "{etag}");

    // The emulator's own playlist did name itself and the token: the gateway rewrote it.
    let direct = get(&format!("{emulator}/{token}/manifest/video.m3u8")).await;
    assert_ok(&direct, "the master playlist from the emulator");
    assert!(direct.text().contains(&format!("{emulator}/{token}/")));
    gateway.shutdown().await;
}

#[tokio::test]
async fn every_segment_of_every_rendition_is_fetched_through_relative_uris() {
    let gateway = TestGateway::start_with(&with_large_video(&proxy_config())).await;
    // The real clip, and the large bodies (196,648- and 327,684-byte segments).
    every_segment_is_fetched_through_relative_uris(&gateway, "intro", &CLIP, &[]).await;
    every_segment_is_fetched_through_relative_uris(
        &gateway,
        "large",
        &SYNTHETIC,
        &[API_KEY_HEADER],
    )
    .await;

    // The other documented resources come through too.
    let token = current_token(&gateway, "intro", &[]).await;
    let mpd = get(&gateway.url("/watch/intro/manifest/video.mpd")).await;
    assert_ok(&mpd, "the DASH manifest");
    assert!(mpd.text().contains("seg_$RepresentationID$_$Number$.ts"));
    assert_leaks_nothing(&mpd, &[token.as_str(), "eyJ"], "the DASH manifest");
    let thumbnail = get(&gateway.url("/watch/intro/thumbnails/thumbnail.jpg?time=2s")).await;
    assert_ok(&thumbnail, "the thumbnail");
    assert_eq!(&thumbnail.body[..3], &[0xFF, 0xD8, 0xFF]);
    gateway.shutdown().await;
}

/// Walk `video`'s master playlist through the gateway (with `headers`): every rendition's
/// media playlist and every segment, each the emulator's own bytes, of `media`'s sizes.
async fn every_segment_is_fetched_through_relative_uris(
    gateway: &TestGateway,
    video: &str,
    media: &Media,
    headers: &[(&str, &str)],
) {
    let token = current_token(gateway, video, headers).await;
    let emulator = gateway.emulator_origin();
    let master_url = gateway.url(&format!("/watch/{video}/manifest/video.m3u8"));
    let master = get_with(&master_url, headers).await;
    assert_ok(&master, "the master playlist");
    let renditions = playlist_uris(&master.text());
    assert_eq!(renditions.len(), media.renditions.len());
    for (rendition, uri) in media.renditions.iter().zip(&renditions) {
        let playlist_url = resolve_url(&master_url, uri);
        assert!(playlist_url.starts_with(gateway.origin()), "{playlist_url}");
        let playlist = get_with(&playlist_url, headers).await;
        assert_ok(&playlist, &playlist_url);
        assert_leaks_nothing(&playlist, &[token.as_str(), "eyJ"], &playlist_url);
        let segments = playlist_uris(&playlist.text());
        assert_eq!(
            segments.len(),
            media.segments_per_rendition,
            "{}",
            playlist.text()
        );
        for (index, segment) in segments.iter().enumerate() {
            let segment_url = resolve_url(&playlist_url, segment);
            assert_eq!(
                segment_url,
                gateway.url(&format!("/watch/{video}/{}", rendition.segment_path(index)))
            );
            let proxied = get_with(&segment_url, headers).await;
            assert_ok(&proxied, &segment_url);
            let len = rendition.segment_len_bytes(index);
            assert_eq!(proxied.body.len(), len, "{segment_url}");
            assert_eq!(proxied.header("content-type"), Some("video/mp2t"));
            assert_eq!(
                proxied.header("content-length"),
                Some(len.to_string().as_str())
            );
            assert_proxied_headers(&proxied, &segment_url);
            let direct = get(&format!(
                "{emulator}/{token}/{}",
                rendition.segment_path(index)
            ))
            .await;
            assert_ok(&direct, "a segment from the emulator");
            assert!(proxied.body == direct.body, "{segment_url}: other bytes");
            assert_eq!(proxied.header("etag"), direct.header("etag"));
        }
    }
}

#[tokio::test]
async fn subtitles_playlist_and_vtt_are_served_through_the_gateway() {
    let gateway = TestGateway::start_with(&proxy_config()).await;
    let master_url = gateway.url("/watch/intro/manifest/video.m3u8");
    let master = get(&master_url).await;
    let subtitles_uri = playlist_attribute_uris(&master.text())
        .into_iter()
        .next()
        .expect("a subtitles URI");
    let playlist_url = resolve_url(&master_url, &subtitles_uri);
    assert_eq!(
        playlist_url,
        gateway.url("/watch/intro/manifest/subtitles_en.m3u8")
    );
    let playlist = get(&playlist_url).await;
    assert_ok(&playlist, "the subtitles playlist");
    assert!(
        playlist
            .header("content-type")
            .is_some_and(|t| t.contains("mpegurl"))
    );
    let files = playlist_uris(&playlist.text());
    assert_eq!(files, ["subtitles_en_0.vtt"], "{}", playlist.text());
    let vtt = get(&resolve_url(&playlist_url, &files[0])).await;
    assert_ok(&vtt, "the subtitles");
    assert_eq!(vtt.header("content-type"), Some("text/vtt"));
    assert!(vtt.text().starts_with("WEBVTT"), "{}", vtt.text());
    assert_proxied_headers(&vtt, "the subtitles");
    gateway.shutdown().await;
}

#[tokio::test]
async fn byte_range_on_a_download_is_proxied_only_when_the_rule_allows_downloads() {
    let gateway = TestGateway::start_with(&with_large_video(&proxy_config())).await;
    let refused = get_with(
        &gateway.url("/watch/intro/downloads/default.mp4"),
        &[("range", "bytes=100-199")],
    )
    .await;
    assert_error(&refused, 403, "downloads are not allowed");

    // The large video's: 4 MiB streamed through the gateway.
    let url = gateway.url("/watch/large/downloads/default.mp4");
    let whole = get_with(&url, &[API_KEY_HEADER]).await;
    assert_ok(&whole, "the whole download");
    assert_eq!(whole.body.len(), SYNTHETIC_DOWNLOAD_LEN_BYTES);
    assert_eq!(&whole.body[4..8], b"ftyp");
    assert_eq!(whole.header("content-type"), Some("video/mp4"));
    assert_eq!(whole.header("accept-ranges"), Some("bytes"));
    assert_proxied_headers(&whole, "the whole download");

    let part = get_with(&url, &[API_KEY_HEADER, ("range", "bytes=100-199")]).await;
    assert_eq!(part.status.as_u16(), 206, "{:?}", part.headers);
    assert_eq!(
        part.header("content-range"),
        Some(format!("bytes 100-199/{SYNTHETIC_DOWNLOAD_LEN_BYTES}").as_str())
    );
    assert_eq!(part.header("content-length"), Some("100"));
    assert_eq!(part.body, whole.body.slice(100..200));
    assert_proxied_headers(&part, "a range of the download");

    let token = current_token(&gateway, "large", &[API_KEY_HEADER]).await;
    let direct = get_with(
        &format!(
            "{}/{token}/downloads/default.mp4",
            gateway.emulator_origin()
        ),
        &[("range", "bytes=100-199")],
    )
    .await;
    assert_eq!(direct.status.as_u16(), 206);
    assert_eq!(part.body, direct.body, "the emulator's own bytes");
    assert_leaks_nothing(&part, &[token.as_str()], "a range of the download");
    gateway.shutdown().await;
}

#[tokio::test]
async fn head_answers_the_same_headers_without_a_body() {
    let gateway = TestGateway::start_with(&proxy_config()).await;
    let cases = [
        ("/watch/intro/manifest/seg_360p_2.ts", vec![]),
        ("/watch/keynote/downloads/default.mp4", vec![API_KEY_HEADER]),
        ("/watch/intro/thumbnails/thumbnail.jpg", vec![]),
    ];
    for (path, headers) in cases {
        let url = gateway.url(path);
        let got = get_with(&url, &headers).await;
        assert_ok(&got, path);
        let head = send(Method::HEAD, &url, &headers, None).await;
        assert_eq!(head.status, got.status, "{path}");
        assert!(head.body.is_empty(), "{path}: HEAD has a body");
        assert_eq!(
            head.header("content-length"),
            Some(got.body.len().to_string().as_str()),
            "{path}"
        );
        for name in [
            "content-type",
            "etag",
            "last-modified",
            "accept-ranges",
            "cache-control",
            "via",
        ] {
            assert_eq!(head.header(name), got.header(name), "{path}: {name}");
        }
        assert_proxied_headers(&head, path);
    }
    let refused = send(
        Method::HEAD,
        &gateway.url("/watch/intro/downloads/default.mp4"),
        &[],
        None,
    )
    .await;
    assert_eq!(refused.status.as_u16(), 403);
    assert!(refused.body.is_empty());
    gateway.shutdown().await;
}

/// HEAD of a document the gateway rewrites should describe what GET sends (RFC 9110 §9.3.2):
/// not the upstream's original length or strong validator.
#[tokio::test]
async fn head_of_a_rewritten_manifest_describes_the_rewritten_get() {
    let gateway = TestGateway::start_with(&proxy_config()).await;
    let url = gateway.url("/watch/intro/manifest/video.m3u8");
    let got = get(&url).await;
    assert_ok(&got, "GET of the master playlist");
    let head = send(Method::HEAD, &url, &[], None).await;
    assert_eq!(head.status.as_u16(), 200);
    assert!(head.body.is_empty());
    if let Some(length) = head.header("content-length") {
        assert_eq!(
            length,
            got.body.len().to_string(),
            "HEAD announces a length GET does not send"
        );
    }
    assert_eq!(
        head.header("etag"),
        got.header("etag"),
        "HEAD and GET carry different validators"
    );
    gateway.shutdown().await;
}

#[tokio::test]
async fn if_none_match_with_the_etag_is_answered_304() {
    let gateway = TestGateway::start_with(&proxy_config()).await;
    let url = gateway.url("/watch/intro/manifest/seg_360p_1.ts");
    let first = get(&url).await;
    assert_ok(&first, "a segment");
    let etag = first.header("etag").expect("an ETag").to_owned();
    assert!(
        etag.starts_with('"'),
        "a strong ETag on bytes passed as they are: {etag}"
    );

    let again = get_with(&url, &[("if-none-match", &etag)]).await;
    assert_eq!(again.status.as_u16(), 304, "{:?}", again.headers);
    assert!(again.body.is_empty());
    assert_eq!(again.header("etag"), Some(etag.as_str()));
    assert_proxied_headers(&again, "a 304");

    let other = get_with(&url, &[("if-none-match", "\"something-else\"")]).await;
    assert_ok(&other, "a non-matching If-None-Match");
    assert_eq!(other.body, first.body);

    let since = first
        .header("last-modified")
        .expect("Last-Modified")
        .to_owned();
    let unmodified = get_with(&url, &[("if-modified-since", &since)]).await;
    assert_eq!(unmodified.status.as_u16(), 304);
    gateway.shutdown().await;
}

#[tokio::test]
async fn traversal_attempts_are_refused_before_reaching_the_upstream() {
    let rig = Rig::start("").await;
    let cases = [
        "/watch/intro/manifest/../iframe",
        "/watch/intro/manifest/../../keynote/iframe",
        "/watch/intro/./iframe",
        "/watch/intro/%2e%2e/iframe",
        "/watch/intro/manifest/%2e%2e/iframe",
        "/watch/intro/manifest/..%2fiframe",
        "/watch/intro/manifest%2F..%2F..%2Fkeynote/iframe",
        "/watch/intro/manifest//seg_360p_0.ts",
        "/watch/intro/.env",
        "/watch/intro/manifest/seg.ts?x=a,b",
        "/watch/%2e%2e/keynote/iframe",
    ];
    for path in cases {
        let response = get(&rig.gateway.url(path)).await;
        assert!(
            response.status.is_client_error(),
            "{path}: {} {}",
            response.status,
            response.text()
        );
    }
    assert!(
        rig.requests().is_empty(),
        "refused paths reached the upstream: {:?}",
        rig.requests()
    );
    assert_eq!(rig.gateway.signatures(), 0, "no refused path is signed for");
    rig.assert_still_serving("traversal attempts").await;
    rig.shutdown().await;
}

#[tokio::test]
async fn redirect_mode_does_not_serve_files_below_the_player() {
    let gateway = TestGateway::start().await;
    let response = get(&gateway.url("/watch/intro/manifest/seg_360p_0.ts")).await;
    assert_error(&response, 404, "proxy mode only");
    let player = get(&gateway.url("/watch/intro")).await;
    let location = redirect_location(&player, "redirect mode");
    assert!(
        location.starts_with(&gateway.emulator_origin()),
        "{location}"
    );
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_rule_can_proxy_under_a_global_redirect_mode() {
    // `public` (anyone, intro) proxies; `ci-intro` (the API key) keeps redirecting.
    let config = with_rule_mode(&gateway_config(), "    subjects: [anyone]\n", "proxy");
    let gateway = TestGateway::start_with(&config).await;
    let anonymous = get(&gateway.url("/watch/intro")).await;
    assert_eq!(
        redirect_location(&anonymous, "the proxying rule"),
        "/watch/intro/iframe"
    );
    let segment = get(&gateway.url("/watch/intro/manifest/seg_360p_0.ts")).await;
    assert_ok(&segment, "a segment under the proxying rule");
    let clip_360p = CLIP.renditions.iter().find(|r| r.name == "360p").unwrap();
    assert_eq!(segment.body.len(), clip_360p.segment_len_bytes(0));
    assert_eq!(segment.header("via"), Some(VIA));

    let with_key = get_with(&gateway.url("/watch/intro"), &[API_KEY_HEADER]).await;
    let location = redirect_location(&with_key, "the redirecting rule");
    assert!(
        location.starts_with(&gateway.emulator_origin()),
        "{location}"
    );
    let file = get_with(
        &gateway.url("/watch/intro/manifest/seg_360p_0.ts"),
        &[API_KEY_HEADER],
    )
    .await;
    assert_error(&file, 404, "proxy mode only");
    gateway.shutdown().await;

    // And the other way round: a global proxy with one redirecting rule.
    let config = with_rule_mode(&proxy_config(), "    subjects: [api_key:ci]\n", "redirect");
    let gateway = TestGateway::start_with(&config).await;
    let with_key = get_with(&gateway.url("/watch/intro"), &[API_KEY_HEADER]).await;
    let location = redirect_location(&with_key, "the redirecting rule");
    assert!(
        location.starts_with(&gateway.emulator_origin()),
        "{location}"
    );
    let anonymous = get(&gateway.url("/watch/intro")).await;
    assert_eq!(
        redirect_location(&anonymous, "the global proxy mode"),
        "/watch/intro/iframe"
    );
    gateway.shutdown().await;
}

// === header rules, against a recording upstream ===

#[tokio::test]
async fn only_allowed_viewer_headers_reach_the_upstream() {
    let rig = Rig::start("").await;
    let url = rig.gateway.url("/watch/intro/manifest/seg_360p_0.ts");
    let bearer = format!("Bearer {TEST_API_KEY}");
    let response = get_with(
        &url,
        &[
            ("authorization", &bearer),
            ("cookie", "session=viewer-secret"),
            ("x-api-key", TEST_API_KEY),
            ("x-forwarded-for", "203.0.113.9"),
            ("forwarded", "for=203.0.113.9"),
            ("x-real-ip", "203.0.113.9"),
            ("cf-connecting-ip", "203.0.113.9"),
            ("true-client-ip", "203.0.113.9"),
            ("cf-ipcountry", "KP"),
            ("referer", "https://viewer.example/203.0.113.9"),
            ("connection", "x-private"),
            ("x-private", "hop"),
            ("accept-encoding", "gzip"),
            ("user-agent", "proxy-test/1"),
            ("accept-language", "en-NZ"),
            ("range", "bytes=0-9"),
        ],
    )
    .await;
    assert_ok(&response, "through the recording upstream");
    assert_eq!(response.header("via"), Some(VIA));

    let requests = rig.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    let seen = &requests[0];
    assert_eq!(seen.method, Method::GET);
    assert!(
        seen.path.ends_with("/manifest/seg_360p_0.ts"),
        "{}",
        seen.path
    );
    // The gateway signed for the viewer's rule (the API key's), and put the token in the path.
    let claims = decode_claims_unverified(seen.token());
    assert_eq!(claims["sub"], VIDEO_UID);
    let mut names: Vec<&str> = seen.headers.keys().map(|name| name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "accept-encoding",
            "accept-language",
            "host",
            "range",
            "user-agent",
            "via"
        ],
        "{:?}",
        seen.headers
    );
    let all_values: Vec<String> = seen
        .headers
        .values()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    for secret in [TEST_API_KEY, "viewer-secret", "203.0.113.9", "KP"] {
        assert!(
            all_values.iter().all(|value| !value.contains(secret)),
            "{secret} reached the upstream: {:?}",
            seen.headers
        );
    }
    assert_eq!(
        seen.headers
            .get("accept-encoding")
            .map(|v| v.to_str().unwrap()),
        Some("identity")
    );
    assert_eq!(
        seen.headers.get("via").map(|v| v.to_str().unwrap()),
        Some(VIA)
    );
    assert_eq!(
        seen.headers.get("host").map(|v| v.to_str().unwrap()),
        Some(rig.upstream.addr().to_string().as_str()),
        "the upstream is asked for itself, not for the gateway's host"
    );
    assert_eq!(
        seen.headers.get("user-agent").map(|v| v.to_str().unwrap()),
        Some("proxy-test/1")
    );
    assert_eq!(
        seen.headers.get("range").map(|v| v.to_str().unwrap()),
        Some("bytes=0-9")
    );
    rig.shutdown().await;
}

#[tokio::test]
async fn only_allowed_upstream_headers_reach_the_viewer() {
    let rig = Rig::start("").await;
    // The upstream really sends them: ask it directly first.
    let direct = get(&rig.upstream.url("/some.token/hop")).await;
    assert_eq!(direct.header("x-foo"), Some("hop-by-hop"));
    assert!(
        direct.header("keep-alive").is_some(),
        "{:?}",
        direct.headers
    );
    assert!(
        direct
            .header("connection")
            .is_some_and(|c| c.contains("x-foo")),
        "{:?}",
        direct.headers
    );

    let response = get(&rig.gateway.url("/watch/intro/hop")).await;
    assert_ok(&response, "through the gateway");
    assert_eq!(response.text(), "hop");
    for name in ["x-foo", "keep-alive", "proxy-authenticate", "x-end-to-end"] {
        assert!(
            response.header(name).is_none(),
            "{name} passed on: {:?}",
            response.headers
        );
    }
    if let Some(connection) = response.header("connection") {
        assert!(!connection.contains("x-foo"), "{connection}");
    }
    assert_eq!(
        response.header("cache-control"),
        Some("private, max-age=60")
    );
    assert_eq!(response.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(response.header("via"), Some(VIA));
    rig.shutdown().await;
}

#[tokio::test]
async fn upstream_locations_into_the_token_space_are_rewritten_or_dropped() {
    let rig = Rig::start("").await;
    let absolute = get(&rig.gateway.url("/watch/intro/redirect")).await;
    assert_eq!(
        redirect_location(&absolute, "an absolute Location"),
        "/watch/intro/x"
    );
    let root = get(&rig.gateway.url("/watch/intro/redirect-root")).await;
    assert_eq!(
        redirect_location(&root, "a root-relative Location"),
        "/watch/intro/manifest/y"
    );
    let leak = get(&rig.gateway.url("/watch/intro/redirect-leak")).await;
    assert_eq!(leak.status.as_u16(), 302);
    assert_eq!(
        leak.header("location"),
        None,
        "a Location that would carry the token must be dropped"
    );

    let token = rig.requests()[0].token().to_owned();
    assert!(token.contains('.'), "a JWT: {token}");
    let upstream = rig.upstream.origin();
    for response in [&absolute, &root, &leak] {
        assert_leaks_nothing(response, &[token.as_str(), upstream.as_str()], "a redirect");
        assert_eq!(response.header("via"), Some(VIA));
    }
    rig.shutdown().await;
}

/// A manifest must reach the rewriter uncoded: with no `Accept-Encoding` any coding would be
/// acceptable (RFC 9110 §12.5.3), so the gateway asks for `identity`.
#[tokio::test]
async fn manifests_are_fetched_uncoded_so_they_can_be_rewritten() {
    let rig = Rig::start("").await;
    // Sanity: the upstream honours an explicit identity request, and gzips otherwise.
    let direct = get(&rig.upstream.url("/some.token/manifest/coded.m3u8")).await;
    assert_eq!(direct.header("content-encoding"), Some("gzip"));
    let plain = get_with(
        &rig.upstream.url("/some.token/manifest/coded.m3u8"),
        &[("accept-encoding", "identity")],
    )
    .await;
    assert_eq!(plain.header("content-encoding"), None);

    let response = get_with(
        &rig.gateway.url("/watch/intro/manifest/coded.m3u8"),
        &[("accept-encoding", "gzip, deflate, br")],
    )
    .await;
    assert_ok(&response, "a manifest from an upstream that compresses");
    let requests = rig.requests();
    assert_eq!(requests.len(), 3, "two direct, one proxied");
    let seen = &requests[2];
    let asked = seen.headers.get("accept-encoding");
    assert_eq!(
        asked.map(|v| v.to_str().unwrap()),
        Some("identity"),
        "the gateway must ask for an uncoded manifest: {:?}",
        seen.headers
    );
    assert_eq!(response.header("content-encoding"), None);
    assert_eq!(
        playlist_attribute_uris(&response.text()),
        ["/watch/intro/manifest/subtitles_en.m3u8"]
    );
    assert_leaks_nothing(&response, &[seen.token()], "a coded manifest");
    rig.shutdown().await;
}

// === streaming ===

#[tokio::test]
async fn a_200_mb_body_streams_through_with_bounded_memory() {
    const GROWTH_LIMIT: u64 = 64 * 1024 * 1024;
    let rig = Rig::start("").await;
    // Warm up: the connection pools, buffers and allocator arenas of a proxied request.
    rig.assert_still_serving("start-up").await;
    let baseline = resident_bytes();
    let mut peak = baseline;
    let mut next_sample = 0u64;

    let opened = open(Method::GET, &rig.gateway.url("/watch/intro/big.bin"), &[]).await;
    assert_eq!(opened.status.as_u16(), 200);
    assert_eq!(
        opened
            .headers
            .get("content-length")
            .and_then(|v| v.to_str().ok()),
        Some(BIG_BODY_BYTES.to_string().as_str())
    );
    assert_eq!(
        opened.headers.get("via").and_then(|v| v.to_str().ok()),
        Some(VIA)
    );
    let drained = drain(opened.body, Duration::from_secs(240), |read| {
        if read >= next_sample {
            peak = peak.max(resident_bytes());
            next_sample = read + 8 * 1024 * 1024;
        }
    })
    .await;
    peak = peak.max(resident_bytes());
    assert_eq!(drained.error, None);
    assert_eq!(drained.bytes, BIG_BODY_BYTES);
    let growth = peak.saturating_sub(baseline);
    assert!(
        growth < GROWTH_LIMIT,
        "resident memory grew by {} MiB while streaming {} MiB (baseline {} MiB)",
        growth >> 20,
        BIG_BODY_BYTES >> 20,
        baseline >> 20
    );
    eprintln!(
        "streamed {} MiB in {:?}; resident memory grew by {} KiB",
        BIG_BODY_BYTES >> 20,
        drained.elapsed,
        growth >> 10
    );
    rig.assert_still_serving("a 200 MB body").await;
    rig.shutdown().await;
}

#[tokio::test]
async fn a_viewer_hanging_up_mid_body_closes_the_upstream_connection() {
    const READ_BEFORE_HANGING_UP: usize = 4 * 1024 * 1024;
    let rig = Rig::start("").await;
    let addr = rig.gateway.app().gateway_addr();
    // A raw socket, so hanging up is exactly a close with the rest of the body unread.
    let read = tokio::task::spawn_blocking(move || {
        use std::io::{Read as _, Write as _};
        let mut stream = std::net::TcpStream::connect(addr).expect("connect to the gateway");
        stream
            .set_read_timeout(Some(REQUEST_TIMEOUT))
            .expect("a read timeout");
        write!(
            stream,
            "GET /watch/intro/big.bin HTTP/1.1\r\nHost: {addr}\r\n\r\n"
        )
        .expect("send the request");
        let mut buffer = vec![0u8; 64 * 1024];
        let mut total = 0;
        while total < READ_BEFORE_HANGING_UP {
            let n = stream.read(&mut buffer).expect("read the response");
            assert!(n > 0, "the gateway ended the response after {total} bytes");
            if total == 0 {
                assert!(
                    buffer.starts_with(b"HTTP/1.1 200 "),
                    "{}",
                    String::from_utf8_lossy(&buffer[..n.min(200)])
                );
            }
            total += n;
        }
        total
        // The socket is dropped here, with most of the body unread.
    });
    let total = tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .expect("reading a few MB should not take a minute")
        .expect("the reader should not panic");
    assert!(total >= READ_BEFORE_HANGING_UP);

    let state = Arc::clone(&rig.state);
    wait_for("the upstream to see its connection closed", async || {
        state.big_cancelled.load(Ordering::SeqCst)
    })
    .await;
    let sent = rig.state.big_sent.load(Ordering::SeqCst);
    assert!(
        sent < BIG_BODY_BYTES,
        "the upstream streamed the whole body ({sent} bytes) to a viewer who had left"
    );
    rig.assert_still_serving("a viewer hanging up").await;
    rig.shutdown().await;
}

// === upstream faults ===

#[tokio::test]
async fn a_refused_upstream_connection_is_a_502() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        listener.local_addr().expect("an address").port()
        // Dropped: nothing listens there any more.
    };
    let config = origin_config(&format!("http://127.0.0.1:{port}"), SHORT_TIMEOUTS);
    let gateway = TestGateway::start_with(&config).await;
    let started = Instant::now();
    let response = get(&gateway.url("/watch/intro/manifest/seg_360p_0.ts")).await;
    assert!(
        started.elapsed() < FAULT_DEADLINE,
        "{:?}",
        started.elapsed()
    );
    assert_error(&response, 502, "cannot reach the Stream origin");
    assert_eq!(response.header("cache-control"), Some("no-store"));
    // Requests that need no upstream still work.
    let player = get(&gateway.url("/watch/intro")).await;
    assert_eq!(
        redirect_location(&player, "after a refused connection"),
        "/watch/intro/iframe"
    );
    assert_ok(&get(&gateway.url("/healthz")).await, "health");
    gateway.shutdown().await;
}

#[tokio::test]
async fn an_upstream_that_never_answers_is_a_504_within_the_response_timeout() {
    let rig = Rig::start(SHORT_TIMEOUTS).await;
    let started = Instant::now();
    let response = get(&rig.gateway.url("/watch/intro/silent")).await;
    let elapsed = started.elapsed();
    assert_error(&response, 504, "did not answer within");
    assert!(elapsed < FAULT_DEADLINE, "504 after {elapsed:?}");
    assert_eq!(rig.attempts("silent"), 1);
    rig.assert_still_serving("a silent upstream").await;
    rig.shutdown().await;
}

#[tokio::test]
async fn an_upstream_body_that_stalls_is_cut_after_the_idle_timeout() {
    let rig = Rig::start(SHORT_TIMEOUTS).await;
    let opened = open(Method::GET, &rig.gateway.url("/watch/intro/stall"), &[]).await;
    assert_eq!(opened.status.as_u16(), 200, "the response starts");
    let drained = drain(opened.body, Duration::from_secs(30), |_| {}).await;
    assert!(
        drained.error.is_some(),
        "a stalled body must end in an error, not look complete: {drained:?}"
    );
    assert!(
        drained.bytes < PROMISED_BYTES as u64,
        "{} bytes of {PROMISED_BYTES}",
        drained.bytes
    );
    assert!(
        drained.elapsed < FAULT_DEADLINE,
        "cut after {:?}",
        drained.elapsed
    );
    rig.assert_still_serving("a stalled body").await;
    rig.shutdown().await;
}

#[tokio::test]
async fn an_upstream_that_drops_the_connection_mid_body_truncates_the_response() {
    let rig = Rig::start(SHORT_TIMEOUTS).await;
    let opened = open(Method::GET, &rig.gateway.url("/watch/intro/reset"), &[]).await;
    assert_eq!(opened.status.as_u16(), 200, "the response starts");
    assert_eq!(
        opened
            .headers
            .get("content-length")
            .and_then(|v| v.to_str().ok()),
        Some(PROMISED_BYTES.to_string().as_str())
    );
    let drained = drain(opened.body, Duration::from_secs(30), |_| {}).await;
    assert!(drained.error.is_some(), "a truncated body: {drained:?}");
    assert!(drained.bytes < PROMISED_BYTES as u64, "{drained:?}");
    assert!(
        drained.elapsed < FAULT_DEADLINE,
        "ended after {:?}",
        drained.elapsed
    );
    rig.assert_still_serving("a dropped upstream connection")
        .await;

    // Without a declared length only the missing last chunk tells a cut body from a whole
    // one: the gateway must not end the chunked response cleanly.
    let opened = open(
        Method::GET,
        &rig.gateway.url("/watch/intro/reset-chunked"),
        &[],
    )
    .await;
    assert_eq!(opened.status.as_u16(), 200);
    assert!(!opened.headers.contains_key("content-length"));
    let drained = drain(opened.body, Duration::from_secs(30), |_| {}).await;
    assert!(
        drained.error.is_some(),
        "a cut chunked body must not look complete: {drained:?}"
    );
    assert!(drained.bytes <= 64 * 1024, "{drained:?}");
    assert!(drained.elapsed < FAULT_DEADLINE, "{drained:?}");
    rig.assert_still_serving("a dropped chunked upstream body")
        .await;
    rig.shutdown().await;
}

#[tokio::test]
async fn an_upstream_500_is_a_502_with_a_reason() {
    let rig = Rig::start(SHORT_TIMEOUTS).await;
    let response = get(&rig.gateway.url("/watch/intro/fail")).await;
    assert_error(&response, 502, "the Stream origin answered 500");
    assert!(!response.text().contains("exploded"), "{}", response.text());
    assert_eq!(rig.attempts("fail"), 1, "a 5xx is not retried");
    rig.assert_still_serving("an upstream 500").await;
    rig.shutdown().await;
}

#[tokio::test]
async fn a_refused_token_is_signed_again_once() {
    let rig = Rig::start("").await;
    let response = get(&rig.gateway.url("/watch/intro/refuse-once")).await;
    assert_ok(&response, "after one refusal");
    assert_eq!(response.text(), "ok");
    assert_eq!(rig.attempts("refuse-once"), 2);
    assert_eq!(rig.gateway.signatures(), 2, "signed, refused, signed again");
    // The fresh token is cached: the next request signs nothing.
    rig.assert_still_serving("a re-signed token").await;
    assert_eq!(rig.gateway.signatures(), 2);
    rig.shutdown().await;
}

#[tokio::test]
async fn a_token_refused_twice_is_a_403_with_the_origin_reason() {
    let rig = Rig::start("").await;
    let response = get(&rig.gateway.url("/watch/intro/refuse-always")).await;
    assert_error(&response, 403, "blocked by rule on 'ip.src'");
    assert_eq!(rig.attempts("refuse-always"), 2, "one retry, no more");
    assert_eq!(rig.gateway.signatures(), 2);
    let tokens: Vec<String> = rig
        .requests()
        .iter()
        .map(|request| request.token().to_owned())
        .collect();
    assert_leaks_nothing(
        &response,
        &[tokens[0].as_str(), tokens[1].as_str()],
        "the refusal",
    );
    rig.assert_still_serving("a refused token").await;
    rig.shutdown().await;
}

/// `streamgate_signatures_total`, as the gateway's metrics endpoint reports it.
fn signatures_total(gateway: &TestGateway) -> f64 {
    let text = gateway.app().metrics().encode();
    text.lines()
        .find_map(|line| {
            line.strip_prefix("streamgate_signatures_total ")?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no streamgate_signatures_total in:\n{text}"))
}

/// The distinct tokens the scripted upstream was sent.
fn distinct_tokens(rig: &Rig) -> std::collections::BTreeSet<String> {
    rig.requests()
        .iter()
        .map(|request| request.token().to_owned())
        .collect()
}

#[tokio::test]
async fn twenty_refused_requests_cost_at_most_one_extra_signature() {
    let rig = Rig::start("").await;
    for round in 0..20 {
        let response = get(&rig.gateway.url("/watch/intro/refuse-always")).await;
        assert_error(&response, 403, "blocked by rule on 'ip.src'");
        assert!(
            round > 0 || rig.attempts("refuse-always") == 2,
            "one retry at first"
        );
    }
    assert_eq!(
        signatures_total(&rig.gateway),
        2.0,
        "the first token and one replacement"
    );
    // The first request retried once with the replacement; the replacement's refusals
    // within the cool-down are passed on without signing or retrying.
    assert_eq!(rig.attempts("refuse-always"), 21);
    assert!(
        distinct_tokens(&rig).len() <= 2,
        "{:?}",
        distinct_tokens(&rig).len()
    );
    // Other videos' tokens were never touched.
    let other = get_with(&rig.gateway.url("/watch/keynote/ok"), &[API_KEY_HEADER]).await;
    assert_ok(&other, "another video");
    rig.assert_still_serving("refused requests").await;
    assert_eq!(
        signatures_total(&rig.gateway),
        3.0,
        "keynote's own token only"
    );
    rig.shutdown().await;
}

#[tokio::test]
async fn concurrent_refusals_of_one_token_sign_one_replacement() {
    let rig = Rig::start("").await;
    let url = rig.gateway.url("/watch/intro/refuse-always");
    let requests = (0..20).map(|_| {
        let url = url.clone();
        tokio::spawn(async move { get(&url).await })
    });
    for request in requests.collect::<Vec<_>>() {
        let response = request.await.expect("the request task does not panic");
        assert_error(&response, 403, "blocked by rule on 'ip.src'");
    }
    assert_eq!(
        signatures_total(&rig.gateway),
        2.0,
        "one token, one replacement, however many saw it refused"
    );
    assert!(rig.attempts("refuse-always") <= 40);
    rig.shutdown().await;
}

/// The default configuration in proxy mode with `public` (anyone, `intro`) refusing viewers
/// in KP and in 203.0.113.0/24, and the emulator reading the viewer's address from
/// `client_ip_header`.
fn geo_config(client_ip_header: &str) -> String {
    let config = proxy_config().replace(
        "  emulator:\n    listen: 127.0.0.1:0\n",
        &format!(
            "  emulator:\n    listen: 127.0.0.1:0\n    client_ip_header: {client_ip_header}\n"
        ),
    );
    let subjects = "    subjects: [anyone]\n";
    assert!(config.contains(subjects) && config.contains("client_ip_header"));
    config.replace(
        subjects,
        &format!(
            "{subjects}    countries: {{block: [KP]}}\n    access_rules:\n      - {{type: ip.src, action: block, ip: [203.0.113.0/24]}}\n"
        ),
    )
}

#[tokio::test]
async fn a_viewers_location_headers_cannot_make_stream_refuse_the_shared_token() {
    for client_ip_header in ["CF-Connecting-IP", "True-Client-IP"] {
        let gateway = TestGateway::start_with(&geo_config(client_ip_header)).await;
        let viewer = [
            ("cf-ipcountry", "KP"),
            ("cf-connecting-ip", "203.0.113.9"),
            ("true-client-ip", "203.0.113.9"),
            ("x-forwarded-for", "203.0.113.9"),
            ("referer", "https://viewer.example/"),
        ];
        let url = gateway.url("/watch/intro/manifest/seg_360p_0.ts");
        for _ in 0..20 {
            let response = get_with(&url, &viewer).await;
            assert_ok(&response, client_ip_header);
        }
        assert_eq!(signatures_total(&gateway), 1.0, "{client_ip_header}");

        // The emulator would refuse the token for such a viewer: the headers did not reach it.
        let token = current_token(&gateway, "intro", &[]).await;
        let direct = format!(
            "{}/{token}/manifest/seg_360p_0.ts",
            gateway.emulator_origin()
        );
        assert_ok(&get(&direct).await, "the token from here");
        for header in [("cf-ipcountry", "KP"), (client_ip_header, "203.0.113.9")] {
            let refused = get_with(&direct, &[header]).await;
            assert!(
                matches!(refused.status.as_u16(), 401 | 403)
                    && refused.text().contains("blocked by rule"),
                "{header:?}: {} {}",
                refused.status,
                refused.text()
            );
        }
        gateway.shutdown().await;
    }
}

// === a hostile origin plants the token everywhere it can ===

/// The token, split into one-byte chunks around a newline-free run of text.
fn split_chunks(text: &str) -> Vec<Result<Bytes, BoxError>> {
    text.as_bytes()
        .iter()
        .map(|byte| Ok(Bytes::copy_from_slice(&[*byte])))
        .collect()
}

/// A stand-in for Stream that plants the token it was sent in every header it can (the
/// allowed ones included), in `Location`, and in a body by the file asked for:
///
/// | file | answer |
/// |---|---|
/// | `iframe` | 200 HTML with the token in a JavaScript string, an attribute and a URL |
/// | `manifest/video.m3u8` | 200 HLS with `c.m3u8?token=<token>`, Stream URLs and a `URI=` |
/// | `subs.vtt` | 200 `text/vtt` naming the token in a cue and a URL |
/// | `config.json` / `data.xml` | 200 JSON / XML with the token in strings and attributes |
/// | `untyped` | 200 without `Content-Type` |
/// | `split.txt` | 200 `text/plain` sent one byte per chunk |
/// | `redirect` | 302 to a URL with the token in its query, the token in its body |
/// | `missing` | 404 HTML naming the token |
/// | `denied` | 403 whose first line names the token |
/// | `denied.bin` | 401 typed as media whose first line names the token, once cut by a control character |
/// | `gone` | 410 typed as media, naming the token |
/// | `coded.vtt` | 200 `text/vtt`, gzip-coded (cannot be rewritten) |
/// | `partial.vtt` | 206 `text/vtt` (cannot be rewritten) |
struct HostileOrigin {
    tokens: Arc<Mutex<Vec<String>>>,
}

impl HostileOrigin {
    fn answer(&self, req: &Request<Incoming>) -> Response<Body> {
        let path = req.uri().path().to_owned();
        let (token, file) = path
            .trim_start_matches('/')
            .split_once('/')
            .map(|(token, file)| (token.to_owned(), file.to_owned()))
            .unwrap_or_default();
        self.tokens.lock().unwrap().push(token.clone());
        let host = req
            .headers()
            .get(HOST)
            .and_then(|host| host.to_str().ok())
            .unwrap_or("missing-host")
            .to_owned();
        let origin = format!("http://{host}");
        let t = &token;
        let (status, content_type, body): (u16, Option<&str>, Body) = match file.as_str() {
            "iframe" => (
                200,
                Some("text/html"),
                Body::new(Bytes::from(format!(
                    "<!doctype html><script>var token = \"{t}\"; var src = '{origin}/{t}/manifest/video.m3u8';</script>\n<video src='{origin}/{t}'></video><a href=\"/{t}/iframe?t={t}\">{t}</a>\n"
                ))),
            ),
            "manifest/video.m3u8" => (
                200,
                Some("application/vnd.apple.mpegurl"),
                Body::new(Bytes::from(format!(
                    "#EXTM3U\n#EXT-X-MEDIA:TYPE=SUBTITLES,URI=\"{origin}/{t}/subs.m3u8?token={t}\"\nc.m3u8?token={t}\n/{t}/d.m3u8\n{origin}/{t}/e.m3u8\n"
                ))),
            ),
            "subs.vtt" => (
                200,
                Some("text/vtt"),
                Body::new(Bytes::from(format!(
                    "WEBVTT\n\n00:00.000 --> 00:01.000\n{t}\n\n00:01.000 --> 00:02.000\n{origin}/{t}/x\n"
                ))),
            ),
            "config.json" => (
                200,
                Some("application/json"),
                Body::new(Bytes::from(format!(
                    "{{\"token\":\"{t}\",\"src\":\"{origin}/{t}/x\",\"list\":[\"{t}\"]}}"
                ))),
            ),
            "data.xml" => (
                200,
                Some("application/xml"),
                Body::new(Bytes::from(format!(
                    "<?xml version=\"1.0\"?><MPD><BaseURL>{origin}/{t}/</BaseURL><x token=\"{t}\">{t}</x></MPD>"
                ))),
            ),
            "untyped" => (200, None, Body::new(Bytes::from(format!("token={t}\n")))),
            "split.txt" => {
                let (tx, rx) = mpsc::channel(4096);
                for chunk in split_chunks(&format!("a{t}b{origin}/{t}/c\"{t}\"")) {
                    tx.try_send(chunk).expect("room for every chunk");
                }
                (200, Some("text/plain"), Body::stream(ChannelBody { rx }))
            }
            "redirect" => (
                302,
                Some("text/html"),
                Body::new(Bytes::from(format!(
                    "<a href=\"https://elsewhere.example/?t={t}\">moved</a>"
                ))),
            ),
            "missing" => (
                404,
                Some("text/html"),
                Body::new(Bytes::from(format!("<h1>no such file below {t}</h1>"))),
            ),
            "denied" => (
                403,
                Some("text/plain"),
                Body::new(Bytes::from(format!("token {t} is not welcome here\n{t}\n"))),
            ),
            // Typed as media, and the token cut by a control character the reason drops.
            "denied.bin" => {
                let (head, tail) = t.split_at(t.len() / 2);
                (
                    401,
                    Some("application/octet-stream"),
                    Body::new(Bytes::from(format!("{t} and {head}\u{1}{tail}\n"))),
                )
            }
            "gone" => (
                410,
                Some("application/octet-stream"),
                Body::new(Bytes::from(t.clone())),
            ),
            "coded.vtt" => {
                let mut response = Response::builder()
                    .status(200)
                    .header("content-type", "text/vtt")
                    .header("content-encoding", "gzip")
                    .body(Body::new(Bytes::from(gzip_stored(
                        format!("WEBVTT\n\n{t}\n").as_bytes(),
                    ))))
                    .expect("a response");
                plant_headers(response.headers_mut(), t, &origin);
                return response;
            }
            "partial.vtt" => (
                206,
                Some("text/vtt"),
                Body::new(Bytes::from(format!("{t}\n"))),
            ),
            _ => (
                200,
                Some("text/plain"),
                Body::new(Bytes::from_static(b"ok")),
            ),
        };
        let mut response = Response::builder()
            .status(status)
            .body(body)
            .expect("a response");
        plant_headers(response.headers_mut(), t, &origin);
        if let Some(content_type) = content_type {
            response.headers_mut().insert(
                "content-type",
                content_type.parse().expect("a content type"),
            );
        }
        response
    }
}

/// The token in every header that could carry it: those no allow-list admits, and the
/// allowed ones too (a header holding the token is dropped whole).
fn plant_headers(headers: &mut HeaderMap, token: &str, origin: &str) {
    let planted = [
        (
            "link",
            format!("<{origin}/{token}/manifest/video.m3u8>; rel=preload"),
        ),
        ("content-location", format!("/{token}/iframe")),
        ("set-cookie", format!("stream={token}; Path=/")),
        ("x-token", token.to_owned()),
        ("refresh", format!("0; url={origin}/{token}/iframe")),
        ("access-control-allow-origin", format!("{origin}/{token}")),
        ("location", format!("https://elsewhere.example/?t={token}")),
        ("etag", format!("\"{token}\"")),
        ("last-modified", token.to_owned()),
        ("expires", token.to_owned()),
        ("vary", format!("x-{token}")),
        ("date", token.to_owned()),
        ("cache-control", format!("max-age=60, x-token=\"{token}\"")),
        ("accept-ranges", token.to_owned()),
        ("content-range", format!("bytes {token}")),
    ];
    for (name, value) in planted {
        headers.append(
            http::HeaderName::from_static(name),
            value.parse().expect("a token is a valid header value"),
        );
    }
}

impl Handler for HostileOrigin {
    async fn handle(&self, req: Request<Incoming>, _peer: SocketAddr) -> Response<Body> {
        self.answer(&req)
    }
}

/// Every byte of one exchange as the viewer receives it (status line, headers, framing,
/// body, trailers), over a raw socket that asks for trailers and closes at the end.
async fn raw_exchange(addr: SocketAddr, method: &str, path: &str) -> Vec<u8> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nTE: trailers\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.expect("send");
        let mut bytes = Vec::new();
        stream.read_to_end(&mut bytes).await.expect("read");
        bytes
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| panic!("{method} {path} took longer than {REQUEST_TIMEOUT:?}"))
}

#[tokio::test]
async fn the_viewer_never_sees_a_token_from_a_hostile_origin() {
    let tokens = Arc::new(Mutex::new(Vec::new()));
    let origin = TestServer::start(Arc::new(HostileOrigin {
        tokens: Arc::clone(&tokens),
    }))
    .await;
    let gateway = TestGateway::start_with(&origin_config(&origin.origin(), "")).await;
    let expected = [
        ("iframe", 200),
        ("manifest/video.m3u8", 200),
        ("subs.vtt", 200),
        ("config.json", 200),
        ("data.xml", 200),
        ("untyped", 200),
        ("split.txt", 200),
        ("redirect", 302),
        ("missing", 404),
        ("denied", 403),
        ("denied.bin", 403),
        ("gone", 410),
        ("coded.vtt", 502),
        ("partial.vtt", 502),
    ];
    let mut seen = Vec::new();
    for (file, status) in expected {
        let path = format!("/watch/intro/{file}");
        let response = get(&gateway.url(&path)).await;
        assert_eq!(
            response.status.as_u16(),
            status,
            "{file}: {}",
            response.text()
        );
        let head = send(Method::HEAD, &gateway.url(&path), &[], None).await;
        let raw_get = raw_exchange(gateway.app().gateway_addr(), "GET", &path).await;
        let raw_head = raw_exchange(gateway.app().gateway_addr(), "HEAD", &path).await;
        seen.push((file, response, head, raw_get, raw_head));
    }
    let tokens: Vec<String> = tokens.lock().unwrap().clone();
    assert!(
        !tokens.is_empty() && tokens.iter().all(|t| t.starts_with("eyJ")),
        "{tokens:?}"
    );
    for (file, response, head, raw_get, raw_head) in &seen {
        for token in &tokens {
            assert_leaks_nothing(response, &[token.as_str()], file);
            assert_leaks_nothing(head, &[token.as_str()], &format!("HEAD {file}"));
            for raw in [raw_get, raw_head] {
                assert!(
                    !raw.windows(token.len()).any(|w| w == token.as_bytes()),
                    "{file}: the token in the raw exchange:\n{}",
                    String::from_utf8_lossy(raw)
                );
            }
        }
        for name in [
            "link",
            "content-location",
            "set-cookie",
            "x-token",
            "refresh",
        ] {
            assert!(response.header(name).is_none(), "{file}: {name} passed on");
        }
    }
    let text = |file: &str| {
        let (_, response, ..) = seen.iter().find(|(f, ..)| *f == file).expect("fetched");
        response.text()
    };
    // Stream URLs became gateway paths; the token elsewhere, the placeholder.
    assert_eq!(
        text("manifest/video.m3u8"),
        "#EXTM3U\n#EXT-X-MEDIA:TYPE=SUBTITLES,URI=\"/watch/intro/subs.m3u8?token=~token-withheld~\"\nc.m3u8?token=~token-withheld~\n/watch/intro/d.m3u8\n/watch/intro/e.m3u8\n"
    );
    assert!(
        text("iframe").contains("var token = \"~token-withheld~\""),
        "{}",
        text("iframe")
    );
    assert!(text("iframe").contains("var src = '/watch/intro/manifest/video.m3u8'"));
    assert_eq!(
        text("split.txt"),
        format!("a~token-withheld~b/watch/intro/c\"~token-withheld~\"")
    );
    assert!(text("untyped").starts_with("token=~token-withheld~"));
    assert!(
        text("denied").contains("token ~token-withheld~ is not welcome here"),
        "{}",
        text("denied")
    );
    assert!(
        text("denied.bin").contains("~token-withheld~ and ~token-withheld~"),
        "{}",
        text("denied.bin")
    );
    assert_eq!(text("gone"), "~token-withheld~");
    let (_, redirect, ..) = seen
        .iter()
        .find(|(f, ..)| *f == "redirect")
        .expect("fetched");
    assert_eq!(
        redirect.header("location"),
        None,
        "a Location holding the token is dropped"
    );
    gateway.shutdown().await;
    origin.shutdown().await;
}

// === broken bodies are visible; the deadline model ===

/// The captured log lines (JSON) that mention request `id`.
fn lines_for(logs: &Mutex<Vec<u8>>, id: &str) -> Vec<serde_json::Value> {
    let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    text.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["fields"]["request_id"] == id)
        .collect()
}

fn upstream_body_errors(gateway: &TestGateway) -> f64 {
    gateway
        .app()
        .metrics()
        .encode()
        .lines()
        .find_map(|line| {
            line.strip_prefix("streamgate_upstream_errors_total{kind=\"body\"} ")?
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

#[tokio::test]
async fn a_broken_upstream_body_is_counted_logged_with_its_request_id_and_marked_truncated() {
    let logs = capture_logs();
    let rig = Rig::start(SHORT_TIMEOUTS).await;
    let pid = std::process::id();
    let mut ids = Vec::new();
    for file in ["stall", "reset", "reset-chunked"] {
        let id = format!("broken-{file}-{pid}");
        let opened = open(
            Method::GET,
            &rig.gateway.url(&format!("/watch/intro/{file}")),
            &[("x-request-id", &id)],
        )
        .await;
        assert_eq!(opened.status.as_u16(), 200, "{file}: the response starts");
        let drained = drain(opened.body, Duration::from_secs(30), |_| {}).await;
        assert!(drained.error.is_some(), "{file}: {drained:?}");
        ids.push((file, id));
    }
    let whole = format!("whole-{pid}");
    let response = get_with(
        &rig.gateway.url("/watch/intro/ok"),
        &[("x-request-id", &whole)],
    )
    .await;
    assert_eq!(response.text(), "ok");

    wait_for("each broken body to be counted", async || {
        upstream_body_errors(&rig.gateway) == 3.0
    })
    .await;
    for (file, id) in &ids {
        let lines = wait_for("the broken body's log lines", async || {
            let lines = lines_for(&logs, id);
            (lines.len() >= 2).then_some(lines)
        })
        .await;
        let warning = lines
            .iter()
            .find(|line| line["level"] == "WARN")
            .unwrap_or_else(|| panic!("{file}: no warning with the request id: {lines:?}"));
        assert!(
            warning["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("truncated")),
            "{warning}"
        );
        let access = lines
            .iter()
            .find(|line| line["target"] == "streamgate::access")
            .unwrap_or_else(|| panic!("{file}: no access line: {lines:?}"));
        assert_eq!(access["fields"]["status"], 200, "{access}");
        assert_eq!(access["fields"]["body"], "truncated", "{file}: {access}");
        assert_eq!(access["fields"]["truncated"], true, "{access}");
    }
    let access = wait_for("the whole body's access line", async || {
        lines_for(&logs, &whole)
            .into_iter()
            .find(|line| line["target"] == "streamgate::access")
    })
    .await;
    assert_eq!(access["fields"]["body"], "complete", "{access}");
    assert_eq!(access["fields"]["truncated"], false, "{access}");
    assert_eq!(access["fields"]["body_bytes"], 2, "{access}");
    rig.shutdown().await;
}

#[tokio::test]
async fn a_proxied_request_slower_than_request_timeout_is_answered_at_request_timeout() {
    // The upstream would be given 10 s for its head; the request as a whole has 1 s.
    let rig =
        Rig::start("upstream:\n  response_timeout: 10s\nlimits:\n  request_timeout: 1s\n").await;
    let started = Instant::now();
    let response = get(&rig.gateway.url("/watch/intro/silent")).await;
    let elapsed = started.elapsed();
    assert_error(&response, 503, "took longer than 1s");
    assert!(response.header("retry-after").is_some());
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(5),
        "answered after {elapsed:?}"
    );
    rig.assert_still_serving("a slow upstream head").await;
    rig.shutdown().await;
}

#[tokio::test]
async fn a_slow_drip_origin_is_cut_at_the_minimum_body_rate() {
    // One byte every 100 ms is never idle for a second, but is under 100 bytes/s.
    let rig = Rig::start("upstream:\n  idle_timeout: 1s\n  min_body_rate: 100\n").await;
    let opened = open(Method::GET, &rig.gateway.url("/watch/intro/drip"), &[]).await;
    assert_eq!(opened.status.as_u16(), 200, "the response starts");
    let drained = drain(opened.body, Duration::from_secs(30), |_| {}).await;
    assert!(drained.error.is_some(), "a cut body: {drained:?}");
    assert!(drained.bytes < 100, "{drained:?}");
    assert!(
        drained.elapsed < Duration::from_secs(5),
        "cut after {:?}",
        drained.elapsed
    );
    wait_for("the cut body to be counted", async || {
        upstream_body_errors(&rig.gateway) == 1.0
    })
    .await;
    rig.assert_still_serving("a slow-drip upstream").await;
    rig.shutdown().await;
}
