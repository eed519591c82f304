//! Proxy and TLS bench: whole gateways in-process, driven over 127.0.0.1 by keep-alive or
//! one-shot HTTP/1.1 connections, each figure against the ceiling it is judged by.
//!
//! Scenarios, each a set of sides measured in alternating rounds (A B, B A, A B, ...) so that a
//! noisy neighbour slows both sides of a ratio alike:
//! - (1) large body: `GET /watch/clip/downloads/default.mp4` (4 MiB) through the gateway in
//!   proxy mode (a `downloadable` rule), against `GET /<token>/downloads/default.mp4` straight
//!   from the gateway's own in-process emulator, with a token signed here by the same key;
//! - (2) small segments: the five 360p segments (`manifest/seg_360p_{0..4}.ts`, 196,648 bytes
//!   each) in turn, through the gateway against direct;
//! - (1m), (2m): the same paths through a minimal hyper proxy (a hyper-util server that
//!   forwards each request with a pooled hyper-util client and hands the answer back
//!   untouched), printed for information: the ceiling of any proxy built on hyper, as load.rs's
//!   minimal server is the ceiling of the redirect path;
//! - (3a) new connections: TCP connect + TLS handshake + one `GET /watch/hot` (a cache-hit
//!   302) with `Connection: close`, the server closing first, against the same over plain
//!   HTTP. The client keeps no TLS sessions, so every handshake is a full one; a third side
//!   with the client's session cache on (TLS 1.3 resumption) is printed for information;
//! - (3b) keep-alive: `GET /watch/hot` on keep-alive connections, HTTPS against plain HTTP.
//!
//! The TLS gateway and the plain one are two instances of one redirect-mode config, the first
//! with `tls: {cert, key}` from a fresh rcgen test CA (ECDSA P-256); the client trusts only that
//! CA and offers only `http/1.1`, so both sides speak HTTP/1.1.
//!
//! Targets: (1) and (2) gateway/direct >= 0.70; gateway/minimal proxy, (3a) and (3b) are
//! printed without a target.
//! Falling short prints MISS but does not fail (the machine is shared and noisy); any failed
//! request, wrong status or wrong body length exits non-zero.
//!
//! Everything (gateways, emulator, load generator) runs on one tokio multi-thread runtime
//! with a worker per core, as load.rs does, so every side's rate counts the generator's and
//! the emulator's CPU as well: a gateway/direct ratio compares "emulator + client" with
//! "emulator + gateway + client" on the same cores. CPU per request (the whole process, from
//! `/proc/self/stat`) is printed per side, and the difference between two sides is the cost of
//! what one adds (the gateway's proxying, the TLS handshake).
//!
//! Environment: `PROXY_BENCH_SECONDS` (measured seconds per side, default 5, fractions
//! allowed; eleven sides with their warm-ups take about 11 x (PROXY_BENCH_SECONDS + 1.3) s),
//! `PROXY_BENCH_CONNECTIONS` (concurrent connections of (1) and (2), default 4),
//! `PROXY_BENCH_HANDSHAKERS` (concurrent new-connection loops of (3a), default 8),
//! `PROXY_BENCH_TLS_CONNECTIONS` (keep-alive connections of (3b), default 32),
//! `PROXY_BENCH_SCENARIOS` (which to run, default `1,2,3`; `3` is `3a,3b`).

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CONNECTION, HOST, LOCATION};
use http::{HeaderValue, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Either, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self as client_http1, SendRequest};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls_pki_types::{CertificateDer, ServerName};
use streamgate::app::App;
use streamgate::config::{MissingKeys, Settings, load_signing_keys};
use streamgate::emulator::{DOWNLOAD_LEN_BYTES, RENDITIONS, SEGMENTS_PER_RENDITION};
use streamgate::token::claims::Claims;
use streamgate::token::signer::{sign_jws, unix_now};
use streamgate::token::{SigningKey, TokenSettings, VideoUid};
use tokio::net::TcpStream;
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;

const FIXTURE_KEY_PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/test-only-signing-key.pem"
);
const FIXTURE_KID: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f9";

const DEFAULT_SECONDS: f64 = 5.0;
const DEFAULT_PROXY_CONNECTIONS: usize = 4;
const DEFAULT_HANDSHAKERS: usize = 8;
const DEFAULT_TLS_CONNECTIONS: usize = 32;
/// Most concurrent loops any knob may ask for.
const MAX_CONNECTIONS: usize = 1024;
/// Rounds per side; the measured time is split evenly between them.
const ROUNDS: u32 = 5;
/// Uncounted time before a side's first round: connections open, pools and caches warm.
const FIRST_WARM_UP: Duration = Duration::from_millis(500);
/// Uncounted time before each later round, while its connections open.
const ROUND_WARM_UP: Duration = Duration::from_millis(200);
/// No keep-alive side issues more requests than this, however fast the machine.
const MAX_REQUESTS_PER_SIDE: u64 = 2_000_000;
/// No new-connection side opens more connections than this (each leaves a TIME_WAIT socket
/// on the server side for a minute).
const MAX_CONNECTIONS_PER_SIDE: u64 = 250_000;
/// A request (or a whole one-shot connection) that takes longer counts as an error and ends
/// its loop.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The direct sides' token: as long-lived as the gateway's (`ttl: 1h`), backdated as the
/// gateway backdates its own (`nbf_backdate` defaults to 60 s).
const TOKEN_TTL: Duration = Duration::from_secs(3600);
const NBF_BACKDATE: Duration = Duration::from_secs(60);

/// The proxied video.
const CLIP_ALIAS: &str = "clip";
const CLIP_UID: &str = "c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1";
/// The redirect-mode video of (3).
const HOT_ALIAS: &str = "hot";
const HOT_UID: &str = "ffffffffffffffffffffffffffffffff";
const DOWNLOAD_PATH: &str = "downloads/default.mp4";
/// The rendition whose segments (2) fetches: 360p.
const SEGMENT_RENDITION: usize = 0;

const PROXY_TARGET: f64 = 0.70;
const MB: f64 = 1e6;
/// USER_HZ, the unit of utime and stime in `/proc/self/stat`; 100 on Linux.
const CLOCK_TICKS_PER_SEC: u64 = 100;

fn main() {
    let options = Options::from_env();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(options.cores)
        .thread_name("bench-worker")
        .enable_all()
        .build()
        .expect("the runtime starts");
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));

    // (1) and (2): a proxy-mode gateway and its in-process emulator.
    let proxy_app = start(&rt, proxy_settings(), loopback);
    let gateway = proxy_app.gateway_addr();
    let emulator = proxy_app
        .emulator_addr()
        .expect("the proxy config runs the emulator");
    let token = direct_token();
    let rendition = RENDITIONS[SEGMENT_RENDITION];
    let segment_len = rendition.segment_len_bytes() as u64;
    let download_len = DOWNLOAD_LEN_BYTES as u64;
    let via_gateway = |path: &str| format!("/watch/{CLIP_ALIAS}/{path}");
    let direct = |path: &str| format!("/{token}/{path}");
    let segment_paths: Vec<String> = (0..SEGMENTS_PER_RENDITION)
        .map(|index| rendition.segment_path(index))
        .collect();
    // Same bytes both ways, before anything is timed (this also signs the gateway's token
    // and opens its upstream pool).
    rt.block_on(async {
        for path in std::iter::once(DOWNLOAD_PATH).chain(segment_paths.iter().map(String::as_str)) {
            let proxied = fetch(gateway, None, &via_gateway(path)).await;
            let straight = fetch(emulator, None, &direct(path)).await;
            assert_eq!(proxied.0, StatusCode::OK, "{path} via the gateway");
            assert_eq!(straight.0, StatusCode::OK, "{path} from the emulator");
            assert!(
                proxied.1 == straight.1,
                "{path}: the gateway changed the body"
            );
        }
    });

    // The ceiling of a hyper-based proxy: the same paths, forwarded with nothing else done.
    let minimal_listener = rt
        .block_on(tokio::net::TcpListener::bind(loopback))
        .expect("the minimal proxy binds");
    let minimal = minimal_listener.local_addr().expect("a bound address");
    let minimal_task = rt.spawn(serve_minimal_proxy(
        minimal_listener,
        format!("http://{emulator}/{token}/"),
    ));
    rt.block_on(async {
        let path = via_gateway(&segment_paths[0]);
        let (status, body, _) = fetch(minimal, None, &path).await;
        assert_eq!(status, StatusCode::OK, "{path} via the minimal proxy");
        assert_eq!(
            body.len() as u64,
            segment_len,
            "{path} via the minimal proxy"
        );
    });

    // (3): the same redirect-mode config, over HTTPS and over plain HTTP.
    let tls_dir = tempfile::tempdir().expect("a temporary directory");
    let ca_der = write_test_certificate(tls_dir.path());
    let tls_app = start(&rt, redirect_settings(Some(tls_dir.path())), loopback);
    let plain_app = start(&rt, redirect_settings(None), loopback);
    let full_handshakes = TlsConnector::from(client_config(&ca_der, false));
    let resuming = TlsConnector::from(client_config(&ca_der, true));
    let hot = format!("/watch/{HOT_ALIAS}");
    let (tls_info, https_location, http_location) = rt.block_on(async {
        let info = tls_probe(tls_app.gateway_addr(), &full_handshakes).await;
        let https = fetch(tls_app.gateway_addr(), Some(&full_handshakes), &hot).await;
        let http = fetch(plain_app.gateway_addr(), None, &hot).await;
        assert_eq!(https.0, StatusCode::FOUND, "{hot} over HTTPS");
        assert_eq!(http.0, StatusCode::FOUND, "{hot} over HTTP");
        (info, https.2, http.2)
    });
    assert_eq!(
        https_location.map(|l| l.len()),
        http_location.map(|l| l.len()),
        "both redirect gateways answer with a Location of one length"
    );

    print_preamble(&options, &tls_info, segment_len);

    let paths = |make: &dyn Fn(&str) -> String, list: &[&str]| -> Arc<[Uri]> {
        list.iter()
            .map(|path| make(path).parse().expect("a valid path"))
            .collect()
    };
    let segment_list: Vec<&str> = segment_paths.iter().map(String::as_str).collect();
    let keep_alive = |addr, tls: Option<&TlsConnector>, paths, connections, len| Target {
        addr,
        tls: tls.cloned(),
        host: host_header(addr, tls.is_some()),
        paths,
        expect_status: StatusCode::OK,
        expect_len: len,
        connections,
        fresh_connections: false,
        cap: MAX_REQUESTS_PER_SIDE,
    };
    let n = options.proxy_connections;
    let mut large_gateway = Side::new(
        "(1g) 4 MiB via gateway",
        keep_alive(
            gateway,
            None,
            paths(&via_gateway, &[DOWNLOAD_PATH]),
            n,
            Some(download_len),
        ),
    );
    let mut large_direct = Side::new(
        "(1d) 4 MiB direct",
        keep_alive(
            emulator,
            None,
            paths(&direct, &[DOWNLOAD_PATH]),
            n,
            Some(download_len),
        ),
    );
    let mut large_minimal = Side::new(
        "(1m) 4 MiB via minimal proxy",
        keep_alive(
            minimal,
            None,
            paths(&via_gateway, &[DOWNLOAD_PATH]),
            n,
            Some(download_len),
        ),
    );
    let mut small_gateway = Side::new(
        "(2g) segments via gateway",
        keep_alive(
            gateway,
            None,
            paths(&via_gateway, &segment_list),
            n,
            Some(segment_len),
        ),
    );
    let mut small_minimal = Side::new(
        "(2m) segments via minimal proxy",
        keep_alive(
            minimal,
            None,
            paths(&via_gateway, &segment_list),
            n,
            Some(segment_len),
        ),
    );
    let mut small_direct = Side::new(
        "(2d) segments direct",
        keep_alive(
            emulator,
            None,
            paths(&direct, &segment_list),
            n,
            Some(segment_len),
        ),
    );
    let redirect = |addr, tls: Option<&TlsConnector>, connections, fresh| Target {
        addr,
        tls: tls.cloned(),
        host: host_header(addr, tls.is_some()),
        paths: Arc::from(vec![hot.parse::<Uri>().expect("a valid path")]),
        expect_status: StatusCode::FOUND,
        expect_len: Some(0),
        connections,
        fresh_connections: fresh,
        cap: if fresh {
            MAX_CONNECTIONS_PER_SIDE
        } else {
            MAX_REQUESTS_PER_SIDE
        },
    };
    let (https, http) = (tls_app.gateway_addr(), plain_app.gateway_addr());
    let h = options.handshakers;
    let mut handshake_tls = Side::new(
        "(3a) new conn, HTTPS full",
        redirect(https, Some(&full_handshakes), h, true),
    );
    let mut handshake_plain = Side::new("(3a) new conn, HTTP", redirect(http, None, h, true));
    let mut handshake_resumed = Side::new(
        "(3a') new conn, HTTPS resumed",
        redirect(https, Some(&resuming), h, true),
    );
    let k = options.tls_connections;
    let mut keep_alive_tls = Side::new(
        "(3b) keep-alive, HTTPS",
        redirect(https, Some(&full_handshakes), k, false),
    );
    let mut keep_alive_plain = Side::new("(3b) keep-alive, HTTP", redirect(http, None, k, false));

    let run = &options.scenarios;
    if run.large {
        measure(
            &rt,
            &options,
            &mut [&mut large_gateway, &mut large_minimal, &mut large_direct],
        );
    }
    if run.small {
        measure(
            &rt,
            &options,
            &mut [&mut small_gateway, &mut small_minimal, &mut small_direct],
        );
    }
    if run.handshakes {
        measure(
            &rt,
            &options,
            &mut [
                &mut handshake_tls,
                &mut handshake_plain,
                &mut handshake_resumed,
            ],
        );
    }
    if run.keep_alive {
        measure(
            &rt,
            &options,
            &mut [&mut keep_alive_tls, &mut keep_alive_plain],
        );
    }

    rt.block_on(async {
        proxy_app.shutdown().await;
        tls_app.shutdown().await;
        plain_app.shutdown().await;
    });
    drop(tls_dir);

    minimal_task.abort();
    let sides = [
        large_gateway,
        large_minimal,
        large_direct,
        small_gateway,
        small_minimal,
        small_direct,
        handshake_tls,
        handshake_plain,
        handshake_resumed,
        keep_alive_tls,
        keep_alive_plain,
    ]
    .map(Side::finish);
    print_table(&options, &sides);
    let [
        large_gateway,
        large_minimal,
        large_direct,
        small_gateway,
        small_minimal,
        small_direct,
        handshake_tls,
        handshake_plain,
        handshake_resumed,
        keep_alive_tls,
        keep_alive_plain,
    ] = &sides;
    println!();
    if run.handshakes {
        println!(
            "(3a') {} of {} measured HTTPS connections resumed a TLS session; (3a) resumed {}",
            handshake_resumed.resumed,
            handshake_resumed.requests(),
            handshake_tls.resumed,
        );
        println!();
    }
    println!(
        "ratios (rates; the load generator and the emulator share the cores with the gateway):"
    );
    print_ratio(
        "(1) 4 MiB downloads, gateway/direct MB/s",
        large_gateway,
        large_direct,
        Report::mb_per_second,
        Some(PROXY_TARGET),
    );
    print_ratio(
        "(1') 4 MiB downloads, gateway/minimal proxy MB/s",
        large_gateway,
        large_minimal,
        Report::mb_per_second,
        None,
    );
    print_ratio(
        "(1'') 4 MiB downloads, minimal proxy/direct MB/s",
        large_minimal,
        large_direct,
        Report::mb_per_second,
        None,
    );
    print_ratio(
        "(2) 360p segments, gateway/direct req/s",
        small_gateway,
        small_direct,
        Report::per_second,
        Some(PROXY_TARGET),
    );
    print_ratio(
        "(2') 360p segments, gateway/minimal proxy req/s",
        small_gateway,
        small_minimal,
        Report::per_second,
        None,
    );
    print_ratio(
        "(2'') 360p segments, minimal proxy/direct req/s",
        small_minimal,
        small_direct,
        Report::per_second,
        None,
    );
    print_ratio(
        "(3a) new connections, HTTPS (full handshake)/HTTP conn/s",
        handshake_tls,
        handshake_plain,
        Report::per_second,
        None,
    );
    print_ratio(
        "(3a') new connections, HTTPS (resumed)/HTTP conn/s",
        handshake_resumed,
        handshake_plain,
        Report::per_second,
        None,
    );
    print_ratio(
        "(3b) keep-alive requests, HTTPS/HTTP req/s",
        keep_alive_tls,
        keep_alive_plain,
        Report::per_second,
        None,
    );
    println!(
        "what each addition costs (CPU of the whole process per unit, one side minus the other):"
    );
    print_cost(
        "(1) proxying, per MB",
        large_gateway,
        large_direct,
        Report::cpu_micros_per_mb,
    );
    print_cost(
        "(1') minimal proxying, per MB",
        large_minimal,
        large_direct,
        Report::cpu_micros_per_mb,
    );
    print_cost(
        "(2) proxying, per segment",
        small_gateway,
        small_direct,
        Report::cpu_micros_per_request,
    );
    print_cost(
        "(2') minimal proxying, per segment",
        small_minimal,
        small_direct,
        Report::cpu_micros_per_request,
    );
    print_cost(
        "(3a) full TLS handshake (client and server), per connection",
        handshake_tls,
        handshake_plain,
        Report::cpu_micros_per_request,
    );
    print_cost(
        "(3a') resumed TLS handshake, per connection",
        handshake_resumed,
        handshake_plain,
        Report::cpu_micros_per_request,
    );
    print_cost(
        "(3b) TLS records, per keep-alive request",
        keep_alive_tls,
        keep_alive_plain,
        Report::cpu_micros_per_request,
    );

    let errors: u64 = sides.iter().map(|side| side.errors).sum();
    if errors > 0 {
        for side in &sides {
            if let Some(error) = &side.first_error {
                eprintln!("{} first error: {error}", side.label);
            }
        }
        eprintln!("proxy bench: {errors} requests failed");
        std::process::exit(1);
    }
}

// === setup ===

struct Options {
    cores: usize,
    /// Measured time per side.
    duration: Duration,
    proxy_connections: usize,
    handshakers: usize,
    tls_connections: usize,
    scenarios: Scenarios,
}

/// Which scenarios run (`PROXY_BENCH_SCENARIOS`, e.g. `1,2` or `3b`; `3` is 3a and 3b).
struct Scenarios {
    large: bool,
    small: bool,
    handshakes: bool,
    keep_alive: bool,
}

impl Scenarios {
    fn parse(text: &str) -> Option<Self> {
        let mut run = Scenarios {
            large: false,
            small: false,
            handshakes: false,
            keep_alive: false,
        };
        for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match name {
                "1" => run.large = true,
                "2" => run.small = true,
                "3" => (run.handshakes, run.keep_alive) = (true, true),
                "3a" => run.handshakes = true,
                "3b" => run.keep_alive = true,
                _ => return None,
            }
        }
        Some(run)
    }

    fn sides(&self) -> u32 {
        3 * u32::from(self.large)
            + 3 * u32::from(self.small)
            + 3 * u32::from(self.handshakes)
            + 2 * u32::from(self.keep_alive)
    }
}

impl Options {
    fn from_env() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, NonZeroUsize::get);
        let seconds: f64 = env_or("PROXY_BENCH_SECONDS", DEFAULT_SECONDS);
        if !(seconds.is_finite() && seconds > 0.0 && seconds <= 600.0) {
            exit_usage("PROXY_BENCH_SECONDS must be a number of seconds in (0, 600]");
        }
        let connections = |name: &str, default: usize| {
            let value = env_or(name, default);
            if value == 0 || value > MAX_CONNECTIONS {
                exit_usage(&format!("{name} must be in 1..={MAX_CONNECTIONS}"));
            }
            value
        };
        let scenarios = std::env::var("PROXY_BENCH_SCENARIOS").unwrap_or_else(|_| "1,2,3".into());
        let Some(scenarios) = Scenarios::parse(&scenarios) else {
            exit_usage("PROXY_BENCH_SCENARIOS must list some of 1, 2, 3, 3a, 3b, e.g. `1,2`")
        };
        Self {
            cores,
            scenarios,
            duration: Duration::from_secs_f64(seconds),
            proxy_connections: connections("PROXY_BENCH_CONNECTIONS", DEFAULT_PROXY_CONNECTIONS),
            handshakers: connections("PROXY_BENCH_HANDSHAKERS", DEFAULT_HANDSHAKERS),
            tls_connections: connections("PROXY_BENCH_TLS_CONNECTIONS", DEFAULT_TLS_CONNECTIONS),
        }
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|_| exit_usage(&format!("{name}=`{text}` is not a valid number"))),
        Err(_) => default,
    }
}

fn exit_usage(message: &str) -> ! {
    eprintln!("proxy bench: {message}");
    std::process::exit(2)
}

fn start(rt: &Runtime, settings: Settings, listen: SocketAddr) -> App {
    let (keys, _) = load_signing_keys(&settings, MissingKeys::Fail).expect("the fixture key loads");
    rt.block_on(App::start(settings, keys, Some(listen)))
        .expect("the gateway starts")
}

/// The lines every config shares: the test-only key, one-hour tokens, one open rule.
fn common_yaml(rule_extra: &str) -> String {
    let key_path = FIXTURE_KEY_PATH.replace('\'', "''");
    format!(
        "signing_keys:\n  - id: {FIXTURE_KID}\n    file: '{key_path}'\n\
         token:\n  ttl: 1h\n  min_remaining: 10m\n\
         rules:\n  - name: everyone\n    videos: ['*']\n    subjects: [anyone]\n{rule_extra}"
    )
}

fn parse_settings(yaml: &str, name: &str, dir: &Path) -> Settings {
    let settings = Settings::from_yaml(yaml, name, dir)
        .unwrap_or_else(|errors| panic!("the bench config is invalid:\n{errors}"));
    assert!(settings.warnings.is_empty(), "{:?}", settings.warnings);
    settings
}

/// Proxy mode in front of the in-process emulator, downloads allowed.
fn proxy_settings() -> Settings {
    let mut yaml = String::from(
        "listen: 127.0.0.1:0\nmode: proxy\nstream:\n  emulator:\n    listen: 127.0.0.1:0\n",
    );
    yaml.push_str(&common_yaml("    downloadable: true\n"));
    writeln!(yaml, "videos:\n  {CLIP_ALIAS}:\n    uid: {CLIP_UID}").expect("writing to a String");
    parse_settings(&yaml, "proxy-bench.yaml", Path::new("/"))
}

/// Redirect mode to an origin nobody follows; HTTPS with `cert.pem` and `key.pem` from
/// `tls_dir` when given.
fn redirect_settings(tls_dir: Option<&Path>) -> Settings {
    let mut yaml = String::from("listen: 127.0.0.1:0\nstream:\n  origin: http://127.0.0.1:9\n");
    yaml.push_str(&common_yaml(""));
    writeln!(yaml, "videos:\n  {HOT_ALIAS}:\n    uid: {HOT_UID}").expect("writing to a String");
    if tls_dir.is_some() {
        yaml.push_str("tls:\n  cert: cert.pem\n  key: key.pem\n");
    }
    parse_settings(&yaml, "tls-bench.yaml", tls_dir.unwrap_or(Path::new("/")))
}

/// A downloadable token for the clip, signed here with the gateway's key, for the direct
/// sides.
fn direct_token() -> String {
    let pem = std::fs::read_to_string(FIXTURE_KEY_PATH).expect("the fixture key is readable");
    let key = SigningKey::from_material(Some(FIXTURE_KID), &pem).expect("the fixture key parses");
    let settings = TokenSettings {
        ttl: TOKEN_TTL,
        downloadable: true,
        access_rules: Arc::from(vec![]),
        not_after: None,
    };
    let uid: VideoUid = CLIP_UID.parse().expect("a valid uid");
    let claims = Claims::build(&uid, key.id(), &settings, unix_now(), NBF_BACKDATE);
    sign_jws(&key, &claims).expect("signs")
}

/// A test-only CA and a certificate for `localhost` and 127.0.0.1 signed by it, written as
/// `cert.pem` (leaf then CA) and `key.pem` into `dir`; the CA's certificate, for clients.
fn write_test_certificate(dir: &Path) -> CertificateDer<'static> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        "streamgate bench-only CA".to_string(),
    );
    let ca_key = rcgen::KeyPair::generate().expect("a CA key");
    let ca = rcgen::CertifiedIssuer::self_signed(params, ca_key).expect("a CA certificate");
    let key = rcgen::KeyPair::generate().expect("a server key");
    let leaf =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .expect("server params")
            .signed_by(&key, &ca)
            .expect("the CA signs the server certificate");
    std::fs::write(dir.join("cert.pem"), format!("{}{}", leaf.pem(), ca.pem()))
        .expect("the certificate is written");
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).expect("the key is written");
    ca.der().clone()
}

/// A client trusting only the test CA, offering `http/1.1` only; with `resume`, it keeps
/// sessions (rustls's default in-memory cache), else every handshake is a full one.
fn client_config(ca: &CertificateDer<'static>, resume: bool) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).expect("the CA is a valid root");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("supported versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    if !resume {
        config.resumption = rustls::client::Resumption::disabled();
    }
    Arc::new(config)
}

fn server_name() -> ServerName<'static> {
    ServerName::try_from("localhost").expect("a valid name")
}

fn host_header(addr: SocketAddr, tls: bool) -> HeaderValue {
    let host = if tls {
        format!("localhost:{}", addr.port())
    } else {
        addr.to_string()
    };
    HeaderValue::try_from(host).expect("a valid Host")
}

/// One request on a connection of its own: status, whole body, Location.
async fn fetch(
    addr: SocketAddr,
    tls: Option<&TlsConnector>,
    path: &str,
) -> (StatusCode, Bytes, Option<HeaderValue>) {
    let (mut sender, _connection, _) = open(addr, tls).await.expect("the server accepts");
    let request = Request::get(path)
        .header(HOST, host_header(addr, tls.is_some()))
        .body(Empty::new())
        .expect("a valid request");
    let response = sender.send_request(request).await.expect("a response");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("a whole body").to_bytes();
    (parts.status, body, parts.headers.get(LOCATION).cloned())
}

/// What the TLS handshake with the gateway settles on.
async fn tls_probe(addr: SocketAddr, connector: &TlsConnector) -> String {
    let tcp = TcpStream::connect(addr).await.expect("the gateway accepts");
    let tls = connector
        .connect(server_name(), tcp)
        .await
        .expect("a TLS handshake");
    let session = tls.get_ref().1;
    let kx = session
        .negotiated_key_exchange_group()
        .map_or_else(|| "?".to_string(), |group| format!("{:?}", group.name()));
    format!(
        "{:?}, {:?}, key exchange {kx}, ALPN {}, server certificate ECDSA P-256 (rcgen)",
        session.protocol_version().expect("a version"),
        session
            .negotiated_cipher_suite()
            .expect("a cipher suite")
            .suite(),
        session
            .alpn_protocol()
            .map_or("none".into(), String::from_utf8_lossy),
    )
}

// === the minimal proxy ===

type MinimalBody = Either<Incoming, Empty<Bytes>>;

/// Forward every `GET /watch/<video>/<path>` on `listener` to `<upstream_prefix><path>` with a
/// pooled hyper-util client, and pass the answer back untouched (status, headers, body): no
/// routing, identity, policy, header rules, timeouts or body wrappers. The cheapest a proxy
/// built on hyper can be; hyper-util's auto builder with its defaults, as load.rs's (c).
async fn serve_minimal_proxy(listener: tokio::net::TcpListener, upstream_prefix: String) {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build(connector);
    let upstream_prefix: Arc<str> = upstream_prefix.into();
    let server = auto::Builder::new(TokioExecutor::new());
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (client, upstream_prefix, server) =
            (client.clone(), Arc::clone(&upstream_prefix), server.clone());
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let (client, upstream_prefix) = (client.clone(), Arc::clone(&upstream_prefix));
                async move { Ok::<_, Infallible>(forward(&client, &upstream_prefix, &request).await) }
            });
            let _ = server.serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

async fn forward(
    client: &Client<HttpConnector, Empty<Bytes>>,
    upstream_prefix: &str,
    request: &Request<Incoming>,
) -> Response<MinimalBody> {
    let path = request
        .uri()
        .path()
        .strip_prefix("/watch/")
        .and_then(|rest| rest.split_once('/'))
        .map(|(_, path)| path);
    let upstream = path.and_then(|path| {
        Request::get(format!("{upstream_prefix}{path}"))
            .body(Empty::new())
            .ok()
    });
    let answer = match upstream {
        Some(upstream) => client.request(upstream).await.ok(),
        None => None,
    };
    match answer {
        Some(response) => response.map(Either::Left),
        None => {
            let mut response = Response::new(Either::Right(Empty::new()));
            *response.status_mut() = StatusCode::BAD_GATEWAY;
            response
        }
    }
}

// === the load generator ===

/// What one side asks for, of whom, and how.
struct Target {
    addr: SocketAddr,
    tls: Option<TlsConnector>,
    host: HeaderValue,
    /// Each loop walks these in turn, starting at its own offset.
    paths: Arc<[Uri]>,
    expect_status: StatusCode,
    /// The body length every answer must have.
    expect_len: Option<u64>,
    /// Concurrent loops.
    connections: usize,
    /// A new connection for each request (`Connection: close`), or one kept alive per loop.
    fresh_connections: bool,
    /// Most requests (or connections) the side may issue, warm-ups included.
    cap: u64,
}

impl Target {
    fn check(&self, status: StatusCode, len: u64) -> Result<(), String> {
        if status != self.expect_status {
            return Err(format!("status {status}, expected {}", self.expect_status));
        }
        match self.expect_len {
            Some(expected) if expected != len => {
                Err(format!("a body of {len} bytes, expected {expected}"))
            }
            _ => Ok(()),
        }
    }
}

/// One round's timing: uncounted warm-up, then the measured part.
#[derive(Clone, Copy)]
struct Slot {
    warm_up: Duration,
    measured: Duration,
}

impl Slot {
    fn new(round: u32, options: &Options) -> Self {
        Self {
            warm_up: if round == 0 {
                FIRST_WARM_UP
            } else {
                ROUND_WARM_UP
            },
            measured: options.duration / ROUNDS,
        }
    }

    fn window(self) -> Window {
        let start = Instant::now();
        Window {
            measure_from: start + self.warm_up,
            stop_at: start + self.warm_up + self.measured,
        }
    }
}

/// When a round counts requests, and when it stops issuing them.
#[derive(Clone, Copy)]
struct Window {
    measure_from: Instant,
    stop_at: Instant,
}

/// What one loop did.
#[derive(Default)]
struct LoopReport {
    /// Latency of each good answer to a request started inside the window (for a new
    /// connection: from before the connect to the server's close).
    latencies_micros: Vec<u32>,
    /// Body bytes of those answers.
    bytes: u64,
    /// TLS handshakes among them that resumed a session.
    resumed: u64,
    errors: u64,
    first_error: Option<String>,
    /// When the last measured answer finished.
    last_finish: Option<Instant>,
}

impl LoopReport {
    fn fail(&mut self, error: String) {
        self.errors += 1;
        self.first_error.get_or_insert(error);
    }
}

/// Aborts a connection task when dropped, so that a timed-out loop leaves nothing behind.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Connect (with a TLS handshake when `tls`), then an HTTP/1.1 handshake; the connection
/// runs on a task of its own. Also tells whether the TLS handshake resumed a session.
async fn open(
    addr: SocketAddr,
    tls: Option<&TlsConnector>,
) -> Result<(SendRequest<Empty<Bytes>>, AbortOnDrop, bool), String> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|error| format!("connect failed: {error}"))?;
    let _ = tcp.set_nodelay(true);
    match tls {
        None => {
            let (sender, task) = http1_handshake(TokioIo::new(tcp)).await?;
            Ok((sender, task, false))
        }
        Some(connector) => {
            let stream = connector
                .connect(server_name(), tcp)
                .await
                .map_err(|error| format!("TLS handshake failed: {error}"))?;
            let resumed =
                stream.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
            let (sender, task) = http1_handshake(TokioIo::new(stream)).await?;
            Ok((sender, task, resumed))
        }
    }
}

async fn http1_handshake<I>(io: I) -> Result<(SendRequest<Empty<Bytes>>, AbortOnDrop), String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, connection) = client_http1::handshake(io)
        .await
        .map_err(|error| format!("HTTP handshake failed: {error}"))?;
    let task = tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok((sender, AbortOnDrop(task)))
}

/// One request; its status and body length once the whole body has been read (and counted,
/// not kept).
async fn exchange(
    sender: &mut SendRequest<Empty<Bytes>>,
    uri: Uri,
    host: &HeaderValue,
    close: bool,
) -> Result<(StatusCode, u64), String> {
    sender
        .ready()
        .await
        .map_err(|error| format!("connection lost: {error}"))?;
    let mut request = Request::new(Empty::new());
    *request.uri_mut() = uri;
    request.headers_mut().insert(HOST, host.clone());
    if close {
        request
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    let response = sender
        .send_request(request)
        .await
        .map_err(|error| format!("request failed: {error}"))?;
    let status = response.status();
    let mut body = response.into_body();
    let mut len = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|error| format!("body failed: {error}"))?;
        if let Some(data) = frame.data_ref() {
            len += data.len() as u64;
        }
    }
    Ok((status, len))
}

/// A whole one-shot connection: connect, handshake(s), one request with `Connection: close`,
/// then wait for the server to close. Its status and body length, and whether TLS resumed.
async fn one_shot(target: &Target, uri: Uri) -> Result<(StatusCode, u64, bool), String> {
    let (mut sender, connection, resumed) = open(target.addr, target.tls.as_ref()).await?;
    let (status, len) = exchange(&mut sender, uri, &target.host, true).await?;
    drop(sender);
    // The server closes first after a `Connection: close` answer (so the TIME_WAIT sockets
    // are its own, not the client's ephemeral ports); the close is part of each cycle.
    let mut connection = connection;
    (&mut connection.0)
        .await
        .map_err(|error| format!("connection task failed: {error}"))?;
    Ok((status, len, resumed))
}

/// One loop of a side: requests until the window closes, the side's cap is reached or
/// something fails.
async fn drive(
    target: Arc<Target>,
    offset: usize,
    window: Window,
    issued: Arc<AtomicU64>,
) -> LoopReport {
    let mut report = LoopReport {
        latencies_micros: Vec::with_capacity(4096),
        ..LoopReport::default()
    };
    let mut kept = None;
    if !target.fresh_connections {
        match tokio::time::timeout(REQUEST_TIMEOUT, open(target.addr, target.tls.as_ref())).await {
            Ok(Ok((sender, connection, _))) => kept = Some((sender, connection)),
            Ok(Err(error)) => {
                report.fail(error);
                return report;
            }
            Err(_) => {
                report.fail(format!("no connection within {REQUEST_TIMEOUT:?}"));
                return report;
            }
        }
    }
    for i in 0.. {
        let started = Instant::now();
        if started >= window.stop_at || issued.fetch_add(1, Ordering::Relaxed) >= target.cap {
            break;
        }
        let uri = target.paths[(offset + i) % target.paths.len()].clone();
        let outcome = match &mut kept {
            Some((sender, _)) => {
                tokio::time::timeout(REQUEST_TIMEOUT, exchange(sender, uri, &target.host, false))
                    .await
                    .map(|result| result.map(|(status, len)| (status, len, false)))
            }
            None => tokio::time::timeout(REQUEST_TIMEOUT, one_shot(&target, uri)).await,
        };
        let finished = Instant::now();
        let result = match outcome {
            Ok(Ok((status, len, resumed))) => target.check(status, len).map(|()| (len, resumed)),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(format!("no answer within {REQUEST_TIMEOUT:?}")),
        };
        match result {
            Ok((len, resumed)) => {
                if started >= window.measure_from {
                    let micros =
                        u32::try_from((finished - started).as_micros()).unwrap_or(u32::MAX);
                    report.latencies_micros.push(micros);
                    report.bytes += len;
                    report.resumed += u64::from(resumed);
                    report.last_finish = Some(finished);
                }
            }
            Err(error) => {
                report.fail(error);
                break;
            }
        }
    }
    report
}

/// One side's results, every round and loop merged.
#[derive(Default)]
struct Report {
    label: &'static str,
    /// Whether any round ran (the side's scenario was selected).
    measured: bool,
    /// Sorted ascending once [`Side::finish`] has run.
    latencies_micros: Vec<u32>,
    bytes: u64,
    resumed: u64,
    /// Measured time (to the last measured answer), summed over rounds.
    elapsed: Duration,
    /// Wall time over which `cpu` was sampled, summed over rounds.
    cpu_wall: Duration,
    /// The whole process's CPU time inside the measured windows.
    cpu: Option<Duration>,
    errors: u64,
    first_error: Option<String>,
}

impl Report {
    fn requests(&self) -> u64 {
        self.latencies_micros.len() as u64
    }

    fn seconds(&self) -> f64 {
        self.elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
    }

    fn per_second(&self) -> f64 {
        self.requests() as f64 / self.seconds()
    }

    fn mb_per_second(&self) -> f64 {
        self.bytes as f64 / MB / self.seconds()
    }

    /// Nearest-rank percentile, in milliseconds.
    fn percentile_ms(&self, percent: f64) -> f64 {
        if self.latencies_micros.is_empty() {
            return f64::NAN;
        }
        let rank = (percent / 100.0 * self.latencies_micros.len() as f64).ceil() as usize;
        let index = rank.clamp(1, self.latencies_micros.len()) - 1;
        f64::from(self.latencies_micros[index]) / 1000.0
    }

    fn cpu_micros_per_request(&self) -> Option<f64> {
        let requests = self.requests();
        let cpu = self.cpu?;
        (requests > 0).then(|| cpu.as_secs_f64() * 1e6 / requests as f64)
    }

    fn cpu_micros_per_mb(&self) -> Option<f64> {
        let cpu = self.cpu?;
        (self.bytes > 0).then(|| cpu.as_secs_f64() * 1e6 / (self.bytes as f64 / MB))
    }

    /// Share of all cores busy while measuring.
    fn cpu_utilisation(&self, cores: usize) -> Option<f64> {
        let wall = self.cpu_wall.as_secs_f64();
        let cpu = self.cpu?;
        (wall > 0.0).then(|| cpu.as_secs_f64() / wall / cores as f64)
    }

    fn absorb(&mut self, round: Report, first: bool) {
        self.cpu = if first {
            round.cpu
        } else {
            self.cpu.zip(round.cpu).map(|(total, part)| total + part)
        };
        self.latencies_micros
            .extend_from_slice(&round.latencies_micros);
        self.bytes += round.bytes;
        self.resumed += round.resumed;
        self.elapsed += round.elapsed;
        self.cpu_wall += round.cpu_wall;
        self.errors += round.errors;
        if self.first_error.is_none() {
            self.first_error = round.first_error;
        }
    }
}

/// One side being measured round by round.
struct Side {
    target: Arc<Target>,
    report: Report,
    rounds: u32,
    /// Requests issued so far, against the target's cap.
    issued: Arc<AtomicU64>,
}

impl Side {
    fn new(label: &'static str, target: Target) -> Self {
        Self {
            target: Arc::new(target),
            report: Report {
                label,
                ..Report::default()
            },
            rounds: 0,
            issued: Arc::new(AtomicU64::new(0)),
        }
    }

    fn round(&mut self, rt: &Runtime, slot: Slot) {
        let round = run_round(rt, &self.target, slot, &self.issued);
        self.report.absorb(round, self.rounds == 0);
        self.rounds += 1;
    }

    fn finish(mut self) -> Report {
        self.report.latencies_micros.sort_unstable();
        self.report.measured = self.rounds > 0;
        self.report
    }
}

/// Measure `sides` in [`ROUNDS`] rounds, in turn, the order reversed every other round.
fn measure(rt: &Runtime, options: &Options, sides: &mut [&mut Side]) {
    for round in 0..ROUNDS {
        let slot = Slot::new(round, options);
        if round % 2 == 0 {
            sides.iter_mut().for_each(|side| side.round(rt, slot));
        } else {
            sides.iter_mut().rev().for_each(|side| side.round(rt, slot));
        }
    }
}

/// One round: the side's loops on the runtime, a warm-up, then the measured window; the
/// process's CPU is sampled from the window's start to the last loop's end.
fn run_round(rt: &Runtime, target: &Arc<Target>, slot: Slot, issued: &Arc<AtomicU64>) -> Report {
    rt.block_on(async {
        let window = slot.window();
        let loops: Vec<_> = (0..target.connections)
            .map(|offset| {
                tokio::spawn(drive(
                    Arc::clone(target),
                    offset,
                    window,
                    Arc::clone(issued),
                ))
            })
            .collect();
        tokio::time::sleep_until(window.measure_from.into()).await;
        let cpu_before = process_cpu();
        let mut round = Report::default();
        let mut last_finish = window.measure_from;
        for handle in loops {
            let report = match handle.await {
                Ok(report) => report,
                Err(join) => {
                    round.errors += 1;
                    round
                        .first_error
                        .get_or_insert(format!("loop task failed: {join}"));
                    continue;
                }
            };
            round
                .latencies_micros
                .extend_from_slice(&report.latencies_micros);
            round.bytes += report.bytes;
            round.resumed += report.resumed;
            round.errors += report.errors;
            if round.first_error.is_none() {
                round.first_error = report.first_error;
            }
            last_finish = last_finish.max(report.last_finish.unwrap_or(last_finish));
        }
        let cpu_after = process_cpu();
        round.cpu_wall = window.measure_from.elapsed();
        round.cpu = cpu_after
            .zip(cpu_before)
            .map(|(after, before)| after.saturating_sub(before));
        round.elapsed = last_finish - window.measure_from;
        round
    })
}

/// User + system CPU time of the whole process so far, from `/proc/self/stat` (Linux).
fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // `pid (name) state ...`: split at the last `)`; utime and stime are fields 14 and 15.
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let user: u64 = fields.get(11)?.parse().ok()?;
    let system: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_millis(
        (user + system) * 1000 / CLOCK_TICKS_PER_SEC,
    ))
}

// === output ===

fn print_preamble(options: &Options, tls_info: &str, segment_len: u64) {
    let sides = f64::from(options.scenarios.sides());
    let per_side = options.duration.as_secs_f64()
        + (FIRST_WARM_UP + ROUND_WARM_UP * (ROUNDS - 1)).as_secs_f64();
    println!(
        "streamgate proxy bench: each side measured for {:.1} s in {ROUNDS} alternating rounds ({} ms warm-up before the first, {} ms before the others); about {:.0} s in all",
        options.duration.as_secs_f64(),
        FIRST_WARM_UP.as_millis(),
        ROUND_WARM_UP.as_millis(),
        sides * per_side,
    );
    println!(
        "{} cores shared by the gateways, the emulator and the load generator (one tokio runtime, {} workers); rates count all of their CPU.",
        options.cores, options.cores,
    );
    println!(
        "(1) {} keep-alive connections, {DOWNLOAD_LEN_BYTES} bytes per answer; (2) {} keep-alive connections, {SEGMENTS_PER_RENDITION} segments of {segment_len} bytes in turn",
        options.proxy_connections, options.proxy_connections,
    );
    println!(
        "(3a) {} concurrent connect-request-close loops; (3b) {} keep-alive connections; HTTP/1.1 everywhere",
        options.handshakers, options.tls_connections,
    );
    println!("TLS: {tls_info}");
    println!("MB = 10^6 bytes");
    println!();
}

fn print_table(options: &Options, sides: &[Report]) {
    println!(
        "{:<30} {:>8} {:>9} {:>8} {:>8} {:>8} {:>6} {:>6} {:>11}",
        "side", "requests", "req/s", "MB/s", "p50 ms", "p99 ms", "errors", "CPU %", "CPU µs/req"
    );
    for side in sides.iter().filter(|side| side.measured) {
        println!(
            "{:<30} {:>8} {:>9.0} {:>8.1} {:>8.3} {:>8.3} {:>6} {:>6} {:>11}",
            side.label,
            side.requests(),
            side.per_second(),
            side.mb_per_second(),
            side.percentile_ms(50.0),
            side.percentile_ms(99.0),
            side.errors,
            side.cpu_utilisation(options.cores)
                .map_or("n/a".into(), |share| format!("{:.0}", share * 100.0)),
            format_micros(side.cpu_micros_per_request()),
        );
    }
    println!(
        "(for new connections a request is a whole connection: connect, handshakes, one request, close; CPU is the whole process's)"
    );
}

fn format_micros(micros: Option<f64>) -> String {
    micros.map_or_else(|| "n/a".to_string(), |micros| format!("{micros:.1}"))
}

/// `side`'s `metric` over `ceiling`'s, when both were measured.
fn print_ratio(
    name: &str,
    side: &Report,
    ceiling: &Report,
    metric: fn(&Report) -> f64,
    target: Option<f64>,
) {
    if !(side.measured && ceiling.measured) {
        return;
    }
    let (measured, ceiling) = (metric(side), metric(ceiling));
    let ratio = measured / ceiling;
    let verdict = match target {
        Some(target) if ratio >= target => format!("(target >= {target:.2}) PASS"),
        Some(target) => format!("(target >= {target:.2}) MISS"),
        None => "(no target)".to_string(),
    };
    println!("  {name}: {measured:.1} / {ceiling:.1} = {ratio:.3} {verdict}");
}

/// What `with` costs per unit over `without`, when both were measured.
fn print_cost(name: &str, with: &Report, without: &Report, metric: fn(&Report) -> Option<f64>) {
    if let (true, Some(with), Some(without)) = (
        with.measured && without.measured,
        metric(with),
        metric(without),
    ) {
        println!(
            "  {name}: {with:.1} - {without:.1} = {:.1} µs",
            with - without
        );
    }
}
