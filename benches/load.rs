//! Load bench: the whole gateway in-process, driven over 127.0.0.1 by many keep-alive
//! HTTP/1.1 connections, against the two ceilings it is judged by.
//!
//! Scenarios:
//! - (a) gateway, cache hits: every request is `GET /watch/hot`, one token reused;
//! - (c) a minimal hyper server answering the same 302 head (a Location of the same length):
//!   the ceiling for (a), since the gateway cannot be faster than the HTTP stack under it;
//! - (b) gateway, all misses: every request names a video no one asked for before, so
//!   every request signs a token;
//! - (d) RS256 signatures per second of the same key on every core, nothing else running:
//!   the ceiling for (b);
//! - (e) gateway, cache hits, Basic user: every request is `GET /watch/members` with
//!   `Authorization: Basic` for one user, so after the first every request is a hit in the
//!   Basic verification cache (no argon2) and in the token cache;
//! - (f) gateway, cache hits, JWT: the same with an HS256 JWT in `Cookie: session=…`, a hit
//!   in the JWT verification cache after the first.
//!
//! (e) and (f) ask for a video of their own, `members`, allowed by a rule for the user and
//! the JWT's group; the anonymous (a) still asks for `hot`, decided by the same single `*`
//! rule as before (the members rule names only `members`, so it is not among `hot`'s
//! candidate rules). The config now has users and a cookie issuer, so the gateway also looks
//! for a session cookie on anonymous requests.
//!
//! The ratios it prints ((a)/(c) ≥ 0.90, (b)/(d) ≥ 0.85, (e)/(a) and (f)/(a) ≥ 0.70) are this
//! bench's own marks, not the project's targets: the load generator shares the cores, which
//! compresses every ratio toward 1. The targets are measured from outside (`benches/outside.rs`).
//! Falling short prints BELOW but does not fail; any failed request or non-302 answer exits
//! non-zero.
//!
//! Scenarios are measured in alternating rounds, (a) (c) (c') (e) (f) (a) (c) … then (b) (d)
//! (b) (d) …, so that a noisy neighbour slows both sides of a ratio alike instead of only one.
//!
//! The gateway and the minimal server run on one multi-thread runtime with a worker per
//! core, as `serve` does, and by default the load generator's connections run on that same
//! runtime: one thread per core and no more, so the OS never time-slices a server thread
//! against a client thread. With a runtime of its own (`LOAD_CLIENT_THREADS`), the threads
//! outnumber the cores and the closed loop hides server cost: a slower server lets the
//! client batch more answers per wake-up, and (a)/(c) read between 0.92 and 1.05 while the
//! gateway's own CPU per request was about 10 % above the minimal server's. Either way the
//! generator shares the cores, so req/s counts its cost too; CPU per request (from
//! `/proc/self/task/*/stat`) is printed alongside, per side when the sides have threads of
//! their own.
//!
//! Environment: `LOAD_SECONDS` (measured seconds per scenario, default 5, fractions
//! allowed; with warm-ups, seven scenarios take about 7 × (LOAD_SECONDS + 2) s in all),
//! `LOAD_CONNECTIONS` (default 64), `LOAD_CLIENT_THREADS` (0, the default, shares the
//! gateway's runtime; N gives the load generator its own runtime with N workers),
//! `LOAD_MAX_IN_FLIGHT` (the gateway's `signing.max_in_flight`, default the config's).

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http::header::{
    AUTHORIZATION, CACHE_CONTROL, CONTENT_LENGTH, COOKIE, HOST, LOCATION, REFERRER_POLICY,
};
use http::{HeaderName, HeaderValue, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Full};
use hyper::client::conn::http1::{self as client_http1, SendRequest};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use streamgate::app::App;
use streamgate::app::keys::{MissingKeys, load_signing_keys};
use streamgate::config::Settings;
use streamgate::http::server::ConnectionBuilder;
use streamgate::token::claims::Claims;
use streamgate::token::signer::{sign_jws, unix_now};
use streamgate::token::{SigningKey, TokenSettings, VideoUid};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

const FIXTURE_KEY_PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/test-only-signing-key.pem"
);
const FIXTURE_KID: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f9";

const DEFAULT_SECONDS: f64 = 5.0;
const DEFAULT_CONNECTIONS: usize = 64;
/// Rounds per scenario; the measured time is split evenly between them.
const ROUNDS: u32 = 5;
/// Uncounted time before a scenario's first round: connections open, caches warm.
const WARM_UP: Duration = Duration::from_secs(1);
/// Uncounted time before each later round, while its connections open.
const ROUND_WARM_UP: Duration = Duration::from_millis(250);
/// No scenario issues more requests than this, however fast the machine.
const MAX_REQUESTS_PER_SCENARIO: u64 = 2_000_000;
/// A request that takes longer counts as an error and ends its connection.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Videos `v0..` in the catalogue for the all-misses scenario; split between connections.
const MISS_VIDEOS: usize = 60_000;
/// The one video of the cache-hit scenario; its uid is outside the `v<i>` range.
const HIT_ALIAS: &str = "hot";
const HIT_UID: &str = "ffffffffffffffffffffffffffffffff";
/// The video of the authenticated cache-hit scenarios, allowed only to the bench user and
/// the JWT group; its uid is outside the `v<i>` range too.
const MEMBER_ALIAS: &str = "members";
const MEMBER_UID: &str = "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee";
const BASIC_USER: &str = "bench-user";
const BASIC_PASSWORD: &str = "bench-password-not-secret";
/// The group the JWT's `groups` claim names, and the Basic user is in.
const MEMBER_GROUP: &str = "viewers";
const JWT_ISSUER: &str = "https://idp.bench.invalid";
const JWT_AUDIENCE: &str = "streamgate-bench";
const JWT_SUBJECT: &str = "jwt-viewer";
const JWT_COOKIE: &str = "session";
/// A test-only HMAC secret, written to a temporary file for the issuer.
const JWT_SECRET: &str = "bench-only-hs256-secret-0123456789abcdef0123456789abcdef0123456789";
/// Verified credentials stay cached for the whole run (the defaults are shorter).
const AUTH_CACHE_TTL: &str = "2h";
/// The JWT outlives the longest run (`LOAD_SECONDS` ≤ 600 for each of seven scenarios).
const JWT_LIFETIME: Duration = Duration::from_secs(4 * 3600);
const NBF_BACKDATE: Duration = Duration::from_secs(60);

const HIT_TARGET: f64 = 0.90;
const MISS_TARGET: f64 = 0.85;
const AUTH_TARGET: f64 = 0.70;

/// Thread-name prefixes, for CPU accounting per side.
const SERVER_THREADS: &str = "bench-server";
const CLIENT_THREADS: &str = "bench-client";
const SIGNER_THREADS: &str = "bench-signer";
/// The gateway's own signing threads (`streamgate-signer-N`, as /proc shows the first 15
/// bytes of a thread's name).
const GATEWAY_SIGNER_THREADS: &str = "streamgate-sign";
/// USER_HZ, the unit of utime and stime in `/proc/self/task/*/stat`; 100 on Linux.
const CLOCK_TICKS_PER_SEC: u64 = 100;

fn main() {
    let options = Options::from_env();
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(options.cores)
        .thread_name(SERVER_THREADS)
        // Idle blocking (signing) threads must outlive a scenario, or their CPU time
        // vanishes from /proc before it is read.
        .thread_keep_alive(Duration::from_secs(120))
        .enable_all()
        .build()
        .expect("the gateway runtime starts");
    let own_client_rt = (options.client_threads > 0).then(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(options.client_threads)
            .thread_name(CLIENT_THREADS)
            .enable_all()
            .build()
            .expect("the load generator runtime starts")
    });
    let client_rt = own_client_rt.as_ref().unwrap_or(&server_rt);

    // Holds the JWT issuer's secret file; read when the gateway starts.
    let secret_dir = tempfile::tempdir().expect("a temporary directory");
    let credentials = Credentials::new(secret_dir.path());
    let settings = bench_settings(options.max_in_flight, secret_dir.path());
    let max_in_flight = settings.max_signing_in_flight;
    let (keys, _) = load_signing_keys(&settings, MissingKeys::Fail).expect("the fixture key loads");
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let app = server_rt
        .block_on(App::start(settings, keys, Some(loopback)))
        .expect("the gateway starts");
    let gateway = app.gateway_addr();
    let hit_path = format!("/watch/{HIT_ALIAS}");
    // Also signs the hot token, so that (a) is all hits from its first request.
    let location = client_rt.block_on(fetch_location(gateway, &hit_path, None));
    // Likewise for (e) and (f): sign the members token and verify each credential once, so
    // that both are all hits from their first request.
    let member_path = format!("/watch/{MEMBER_ALIAS}");
    let member_location = client_rt.block_on(async {
        let basic = fetch_location(gateway, &member_path, Some(&credentials.basic)).await;
        let jwt = fetch_location(gateway, &member_path, Some(&credentials.jwt)).await;
        assert_eq!(basic, jwt, "one token for both credentials");
        basic
    });
    assert_eq!(
        member_location.len(),
        location.len(),
        "(e) and (f) answer with a Location as long as (a)'s"
    );
    let serving = app.snapshot();
    let auth = &serving.auth;
    let auth_checks = || {
        (
            auth.basic.as_ref().map_or(0, |basic| basic.verifications()),
            auth.jwt.as_ref().map_or(0, |jwt| jwt.verifications()),
        )
    };
    let auth_checks_before = auth_checks();
    assert_eq!(
        auth_checks_before,
        (1, 1),
        "one argon2 check and one JWT verification warm the caches"
    );

    let baseline_listener = server_rt
        .block_on(TcpListener::bind(loopback))
        .expect("the baseline server binds");
    let baseline = baseline_listener.local_addr().expect("a bound address");
    let baseline_task = server_rt.spawn(serve_fixed_redirect(
        baseline_listener,
        location.clone(),
        false,
    ));
    let tuned_listener = server_rt
        .block_on(TcpListener::bind(loopback))
        .expect("the tuned baseline server binds");
    let tuned = tuned_listener.local_addr().expect("a bound address");
    let tuned_task = server_rt.spawn(serve_fixed_redirect(tuned_listener, location.clone(), true));

    print_preamble(&options, max_in_flight, location.len());

    let hit_paths = Paths::Repeat(hit_path.parse().expect("a valid path"));
    let member_paths = Paths::Repeat(member_path.parse().expect("a valid path"));
    let (mut hits, mut bare, mut same_limits) = (Scenario::new(), Scenario::new(), Scenario::new());
    let mut basic_hits = Scenario::with_header(credentials.basic.clone());
    let mut jwt_hits = Scenario::with_header(credentials.jwt.clone());
    let cache_before = app.snapshot().cache.stats();
    for round in 0..ROUNDS {
        let slot = Slot::new(round, &options);
        hits.round(client_rt, gateway, &hit_paths, slot, options.connections);
        bare.round(client_rt, baseline, &hit_paths, slot, options.connections);
        same_limits.round(client_rt, tuned, &hit_paths, slot, options.connections);
        basic_hits.round(client_rt, gateway, &member_paths, slot, options.connections);
        jwt_hits.round(client_rt, gateway, &member_paths, slot, options.connections);
    }
    let cache_after = app.snapshot().cache.stats();
    let auth_checks_after = auth_checks();
    baseline_task.abort();
    tuned_task.abort();

    let miss_paths = Paths::distinct_videos(options.connections);
    let mut misses = Scenario::new();
    let mut signing = SigningReport::default();
    let signatures_before = app.snapshot().cache.signer().signatures();
    for round in 0..ROUNDS {
        let slot = Slot::new(round, &options);
        misses.round(client_rt, gateway, &miss_paths, slot, options.connections);
        signing.absorb(sign_on_every_core(options.cores, slot));
    }
    let signatures = app.snapshot().cache.signer().signatures() - signatures_before;
    server_rt.block_on(app.shutdown());

    drop(secret_dir);

    let (hits, bare, same_limits, misses) = (
        hits.finish(),
        bare.finish(),
        same_limits.finish(),
        misses.finish(),
    );
    let (basic_hits, jwt_hits) = (basic_hits.finish(), jwt_hits.finish());
    let shared = own_client_rt.is_none();
    print_table(
        shared,
        &[
            ("(a) gateway, cache hits", &hits),
            ("(c) minimal hyper, same 302", &bare),
            ("(c') (c) + gateway's limits", &same_limits),
            ("(b) gateway, all misses", &misses),
            ("(e) gateway, hits, Basic", &basic_hits),
            ("(f) gateway, hits, JWT cookie", &jwt_hits),
        ],
    );
    println!(
        "(d) raw sign_jws, {} threads, nothing else running: {} signatures in {:.2} s = {:.0} signs/s ({} µs CPU/sign)",
        options.cores,
        signing.signatures,
        signing.elapsed.as_secs_f64(),
        signing.per_second(),
        format_micros(signing.cpu_micros_per_signature()),
    );
    println!();
    println!(
        "(a) (e) (f) token cache: {} hits, {} misses over {} requests (warm-up included)",
        cache_after.hits - cache_before.hits,
        cache_after.misses - cache_before.misses,
        hits.all_ok_requests + basic_hits.all_ok_requests + jwt_hits.all_ok_requests,
    );
    println!(
        "(e) Basic: {} argon2 checks over {} requests; (f) JWT: {} signature verifications over {} requests (0 = every request a verification-cache hit)",
        auth_checks_after.0 - auth_checks_before.0,
        basic_hits.all_ok_requests,
        auth_checks_after.1 - auth_checks_before.1,
        jwt_hits.all_ok_requests,
    );
    println!(
        "(b) signer: {signatures} signatures for {} requests (warm-up included): {}",
        misses.all_ok_requests,
        if signatures == misses.all_ok_requests {
            "every request signed"
        } else {
            "MISMATCH: some requests did not sign, or signed twice"
        },
    );
    if misses.exhausted_connections > 0 {
        println!(
            "(b) {} of {} connections ran out of distinct videos and stopped early",
            misses.exhausted_connections, options.connections
        );
    }
    println!();
    print_ratios(shared, &hits, &bare, &misses, &signing);
    println!(
        "  (a)/(c') cache hits vs minimal hyper with the gateway's connection limits (header-read timeout): {:.0} / {:.0} = {:.3}",
        hits.per_second(),
        same_limits.per_second(),
        hits.per_second() / same_limits.per_second()
    );
    print_auth_ratios(shared, &hits, &basic_hits, &jwt_hits);

    let reports = [
        ("(a)", &hits),
        ("(c)", &bare),
        ("(c')", &same_limits),
        ("(b)", &misses),
        ("(e)", &basic_hits),
        ("(f)", &jwt_hits),
    ];
    let errors: u64 = reports.iter().map(|(_, report)| report.errors).sum();
    if errors > 0 {
        for (name, report) in reports {
            if let Some(error) = &report.first_error {
                eprintln!("{name} first error: {error}");
            }
        }
        eprintln!("load bench: {errors} requests failed");
        std::process::exit(1);
    }
}

// === setup ===

struct Options {
    cores: usize,
    duration: Duration,
    connections: usize,
    /// 0: the load generator shares the gateway's runtime.
    client_threads: usize,
    max_in_flight: Option<usize>,
}

impl Options {
    fn from_env() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, NonZeroUsize::get);
        let seconds: f64 = env_or("LOAD_SECONDS", DEFAULT_SECONDS);
        if !(seconds.is_finite() && seconds > 0.0 && seconds <= 600.0) {
            exit_usage("LOAD_SECONDS must be a number of seconds in (0, 600]");
        }
        let options = Self {
            cores,
            duration: Duration::from_secs_f64(seconds),
            connections: env_or("LOAD_CONNECTIONS", DEFAULT_CONNECTIONS),
            client_threads: env_or("LOAD_CLIENT_THREADS", 0),
            max_in_flight: std::env::var_os("LOAD_MAX_IN_FLIGHT")
                .map(|_| env_or("LOAD_MAX_IN_FLIGHT", 0)),
        };
        if options.connections == 0 || options.connections > MISS_VIDEOS {
            exit_usage(&format!("LOAD_CONNECTIONS must be in 1..={MISS_VIDEOS}"));
        }
        if options.max_in_flight == Some(0) {
            exit_usage("LOAD_MAX_IN_FLIGHT must be at least 1");
        }
        options
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
    eprintln!("load bench: {message}");
    std::process::exit(2)
}

/// The credentials of (e) and (f), as request headers.
struct Credentials {
    basic: (HeaderName, HeaderValue),
    jwt: (HeaderName, HeaderValue),
}

impl Credentials {
    /// Writes the issuer's secret file into `secret_dir`.
    fn new(secret_dir: &Path) -> Self {
        std::fs::write(secret_dir.join("jwt-secret"), JWT_SECRET).expect("the secret is written");
        let basic = base64::engine::general_purpose::STANDARD
            .encode(format!("{BASIC_USER}:{BASIC_PASSWORD}"));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("the clock is after 1970")
            .as_secs();
        let claims = serde_json::json!({
            "iss": JWT_ISSUER,
            "aud": JWT_AUDIENCE,
            "sub": JWT_SUBJECT,
            "groups": [MEMBER_GROUP],
            "iat": now,
            "exp": now + JWT_LIFETIME.as_secs(),
        });
        let jwt = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
        )
        .expect("the JWT is signed");
        let value = |text: String| HeaderValue::try_from(text).expect("a valid header value");
        Self {
            basic: (AUTHORIZATION, value(format!("Basic {basic}"))),
            jwt: (COOKIE, value(format!("{JWT_COOKIE}={jwt}"))),
        }
    }
}

/// A gateway config redirecting to an origin nobody follows, with the hot video and
/// [`MISS_VIDEOS`] others, all open to anyone, a cache big enough to keep every token, and
/// for (e) and (f) a Basic user, an HS256 issuer (its secret in `secret_dir`) and the
/// members video, which only they may watch.
fn bench_settings(max_in_flight: Option<usize>, secret_dir: &Path) -> Settings {
    let mut yaml = String::with_capacity(MISS_VIDEOS * 64);
    let key_path = FIXTURE_KEY_PATH.replace('\'', "''");
    writeln!(
        yaml,
        "listen: 127.0.0.1:0\n\
         stream:\n  origin: http://127.0.0.1:9\n\
         signing_keys:\n  - id: {FIXTURE_KID}\n    file: '{key_path}'\n\
         token:\n  ttl: 1h\n  min_remaining: 10m\n\
         cache:\n  capacity: {}",
        2 * MISS_VIDEOS
    )
    .expect("writing to a String");
    if let Some(max_in_flight) = max_in_flight {
        writeln!(yaml, "signing:\n  max_in_flight: {max_in_flight}").expect("writing to a String");
    }
    // argon2id with the default parameters, as `streamgate hash-password` makes it.
    let phc = streamgate::identity::basic::hash_password(BASIC_PASSWORD).expect("hashes");
    let secret_path = secret_dir.join("jwt-secret").display().to_string();
    writeln!(
        yaml,
        "auth:\n  basic_cache_ttl: {AUTH_CACHE_TTL}\n\
         users:\n  {BASIC_USER}:\n    password: '{phc}'\n    groups: [{MEMBER_GROUP}]\n\
         jwt_issuers:\n  - issuer: {JWT_ISSUER}\n    name: bench-idp\n    audience: {JWT_AUDIENCE}\n\
         \x20   algorithms: [HS256]\n    secret:\n      file: '{}'\n\
         \x20   cookie: {JWT_COOKIE}\n    groups_claim: groups\n    cache_ttl: {AUTH_CACHE_TTL}",
        secret_path.replace('\'', "''"),
    )
    .expect("writing to a String");
    // `members` first: it names only its own video, so `hot` and the `v<i>` videos are still
    // decided by `everyone` alone.
    writeln!(
        yaml,
        "rules:\n  - name: members\n    videos: [{MEMBER_ALIAS}]\n    subjects: ['user:{BASIC_USER}', 'group:{MEMBER_GROUP}', 'group:bench-idp:{MEMBER_GROUP}']\n\
         \x20 - name: everyone\n    videos: ['*']\n    subjects: [anyone]"
    )
    .expect("writing to a String");
    writeln!(
        yaml,
        "videos:\n  {HIT_ALIAS}:\n    uid: {HIT_UID}\n  {MEMBER_ALIAS}:\n    uid: {MEMBER_UID}"
    )
    .expect("writing to a String");
    for i in 0..MISS_VIDEOS {
        writeln!(yaml, "  v{i}:\n    uid: {:032x}", i + 1).expect("writing to a String");
    }
    let settings = Settings::from_yaml(&yaml, "load-bench.yaml", Path::new("/"))
        .unwrap_or_else(|errors| panic!("the bench config is invalid:\n{errors}"));
    assert!(settings.warnings.is_empty(), "{:?}", settings.warnings);
    settings
}

/// One request to the gateway, with `header` if given; its Location, so (c) can answer with
/// one of the same length.
async fn fetch_location(
    target: SocketAddr,
    path: &str,
    header: Option<&(HeaderName, HeaderValue)>,
) -> HeaderValue {
    let mut sender = connect(target).await.expect("the gateway accepts");
    let mut request = Request::get(path)
        .header(HOST, target.to_string())
        .body(Empty::new())
        .expect("a valid request");
    if let Some((name, value)) = header {
        request.headers_mut().insert(name, value.clone());
    }
    let response = sender.send_request(request).await.expect("a response");
    assert_eq!(response.status(), StatusCode::FOUND, "{response:?}");
    response
        .headers()
        .get(LOCATION)
        .expect("a redirect has a Location")
        .clone()
}

// === the baseline server (c) ===

/// Answer every request on `listener` with the gateway's redirect head and a fixed Location,
/// served by hyper-util's auto builder: with its defaults for (c), through the gateway's own
/// accept loop and connection lifecycle (`streamgate::http::server::serve_with`) for (c').
async fn serve_fixed_redirect(
    listener: TcpListener,
    location: HeaderValue,
    with_gateway_limits: bool,
) {
    if with_gateway_limits {
        let handler = Arc::new(FixedRedirect(location));
        streamgate::http::server::serve_with(
            listener,
            handler,
            ConnectionBuilder::new(),
            std::future::pending(),
        )
        .await;
        return;
    }
    let defaults = auto::Builder::new(TokioExecutor::new());
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let builder = defaults.clone();
        let location = location.clone();
        tokio::spawn(async move {
            let service = service_fn(move |_request| {
                let location = location.clone();
                async move { Ok::<_, Infallible>(fixed_redirect(location)) }
            });
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// (c') as a gateway [`streamgate::http::server::Handler`].
struct FixedRedirect(HeaderValue);

impl streamgate::http::server::Handler for FixedRedirect {
    async fn handle(
        &self,
        _req: http::Request<hyper::body::Incoming>,
        _peer: SocketAddr,
    ) -> Response<streamgate::Body> {
        fixed_redirect(self.0.clone()).map(|_| streamgate::Body::empty())
    }
}

fn fixed_redirect(location: HeaderValue) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::FOUND;
    let headers = response.headers_mut();
    headers.insert(LOCATION, location);
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
    response
}

// === the load generator ===

/// What each connection asks for.
enum Paths {
    /// Every request asks for the same path.
    Repeat(Uri),
    /// Connection `i` walks its own slice `/watch/v<i * per_connection>..` once, across all
    /// rounds, so no video is asked for twice; it stops when its slice runs out.
    DistinctVideos {
        per_connection: usize,
        next: Arc<[AtomicUsize]>,
    },
}

impl Paths {
    fn distinct_videos(connections: usize) -> Self {
        Paths::DistinctVideos {
            per_connection: MISS_VIDEOS / connections,
            next: (0..connections).map(|_| AtomicUsize::new(0)).collect(),
        }
    }

    fn for_connection(&self, connection: usize) -> Box<dyn Iterator<Item = Uri> + Send> {
        match self {
            Paths::Repeat(uri) => Box::new(std::iter::repeat(uri.clone())),
            Paths::DistinctVideos {
                per_connection,
                next,
            } => {
                let (per_connection, next) = (*per_connection, Arc::clone(next));
                Box::new(std::iter::from_fn(move || {
                    let offset = next[connection].fetch_add(1, Ordering::Relaxed);
                    (offset < per_connection).then(|| {
                        let video = connection * per_connection + offset;
                        format!("/watch/v{video}").parse().expect("a valid path")
                    })
                }))
            }
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
            warm_up: if round == 0 { WARM_UP } else { ROUND_WARM_UP },
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

/// When a round counts requests, and when it stops.
#[derive(Clone, Copy)]
struct Window {
    measure_from: Instant,
    stop_at: Instant,
}

#[derive(Default)]
struct ConnectionReport {
    /// Latency of each 302 to a request started inside the window.
    latencies_micros: Vec<u32>,
    /// 302s received, warm-up included.
    ok_requests: u64,
    errors: u64,
    first_error: Option<String>,
    /// When the last measured request finished.
    last_finish: Option<Instant>,
    exhausted: bool,
}

impl ConnectionReport {
    fn fail(&mut self, error: String) {
        self.errors += 1;
        self.first_error.get_or_insert(error);
    }
}

/// One connection's request loop: send, wait for the whole response, repeat, until the
/// window closes, its paths run out, the scenario's cap is reached or the connection fails.
async fn drive_connection(
    target: SocketAddr,
    mut paths: Box<dyn Iterator<Item = Uri> + Send>,
    header: Option<(HeaderName, HeaderValue)>,
    window: Window,
    issued: Arc<AtomicU64>,
) -> ConnectionReport {
    let mut report = ConnectionReport {
        latencies_micros: Vec::with_capacity(16 * 1024),
        ..ConnectionReport::default()
    };
    let mut sender = match connect(target).await {
        Ok(sender) => sender,
        Err(error) => {
            report.fail(error);
            return report;
        }
    };
    let host = HeaderValue::try_from(target.to_string()).expect("an address is a valid Host");
    loop {
        let started = Instant::now();
        if started >= window.stop_at
            || issued.fetch_add(1, Ordering::Relaxed) >= MAX_REQUESTS_PER_SCENARIO
        {
            break;
        }
        let Some(uri) = paths.next() else {
            report.exhausted = true;
            break;
        };
        let outcome = tokio::time::timeout(
            REQUEST_TIMEOUT,
            send(&mut sender, uri, &host, header.as_ref()),
        )
        .await;
        let finished = Instant::now();
        match outcome {
            Ok(Ok(StatusCode::FOUND)) => {
                report.ok_requests += 1;
                if started >= window.measure_from {
                    let micros = (finished - started).as_micros();
                    let micros = u32::try_from(micros).unwrap_or(u32::MAX);
                    report.latencies_micros.push(micros);
                    report.last_finish = Some(finished);
                }
            }
            Ok(Ok(status)) => report.fail(format!("status {status}, expected 302")),
            Ok(Err(error)) => {
                report.fail(format!("request failed: {error}"));
                break;
            }
            Err(_) => {
                report.fail(format!("no response within {REQUEST_TIMEOUT:?}"));
                break;
            }
        }
    }
    report
}

async fn connect(target: SocketAddr) -> Result<SendRequest<Empty<Bytes>>, String> {
    let stream = TcpStream::connect(target)
        .await
        .map_err(|error| format!("connect failed: {error}"))?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = client_http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|error| format!("handshake failed: {error}"))?;
    tokio::spawn(conn);
    Ok(sender)
}

/// One request, with `header` if given; its status once the (empty) body has been read.
async fn send(
    sender: &mut SendRequest<Empty<Bytes>>,
    uri: Uri,
    host: &HeaderValue,
    header: Option<&(HeaderName, HeaderValue)>,
) -> Result<StatusCode, hyper::Error> {
    sender.ready().await?;
    let mut request = Request::new(Empty::new());
    *request.uri_mut() = uri;
    request.headers_mut().insert(HOST, host.clone());
    if let Some((name, value)) = header {
        request.headers_mut().insert(name.clone(), value.clone());
    }
    let response = sender.send_request(request).await?;
    let status = response.status();
    response.into_body().collect().await?;
    Ok(status)
}

/// One scenario's results, every round and connection merged.
#[derive(Default)]
struct LoadReport {
    /// Sorted ascending once [`Scenario::finish`] has run.
    latencies_micros: Vec<u32>,
    /// Measured time, summed over rounds.
    elapsed: Duration,
    all_ok_requests: u64,
    errors: u64,
    first_error: Option<String>,
    exhausted_connections: usize,
    server_cpu: Option<Duration>,
    client_cpu: Option<Duration>,
}

impl LoadReport {
    fn requests(&self) -> u64 {
        self.latencies_micros.len() as u64
    }

    fn per_second(&self) -> f64 {
        self.requests() as f64 / self.elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
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

    fn server_cpu_micros_per_request(&self) -> Option<f64> {
        per_request_micros(self.server_cpu?, self.requests())
    }

    /// The gateway's and the load generator's CPU together.
    fn total_cpu_micros_per_request(&self) -> Option<f64> {
        per_request_micros(add_cpu(self.server_cpu, self.client_cpu)?, self.requests())
    }
}

fn per_request_micros(cpu: Duration, requests: u64) -> Option<f64> {
    (requests > 0).then(|| cpu.as_secs_f64() * 1e6 / requests as f64)
}

/// Known only while every part of it is known.
fn add_cpu(total: Option<Duration>, part: Option<Duration>) -> Option<Duration> {
    Some(total? + part?)
}

/// A scenario being measured round by round.
struct Scenario {
    report: LoadReport,
    rounds: u32,
    /// Requests issued so far, against [`MAX_REQUESTS_PER_SCENARIO`].
    issued: Arc<AtomicU64>,
    /// A header every request carries (a credential).
    header: Option<(HeaderName, HeaderValue)>,
}

impl Scenario {
    fn new() -> Self {
        Self {
            report: LoadReport::default(),
            rounds: 0,
            issued: Arc::new(AtomicU64::new(0)),
            header: None,
        }
    }

    /// A scenario whose every request carries `header`.
    fn with_header(header: (HeaderName, HeaderValue)) -> Self {
        Self {
            header: Some(header),
            ..Self::new()
        }
    }

    /// Run one round against `target` and add it to the totals.
    fn round(
        &mut self,
        runtime: &Runtime,
        target: SocketAddr,
        paths: &Paths,
        slot: Slot,
        connections: usize,
    ) {
        let round = run_load(
            runtime,
            target,
            paths,
            self.header.as_ref(),
            slot,
            &self.issued,
            connections,
        );
        self.absorb(round);
    }

    fn absorb(&mut self, round: LoadReport) {
        let total = &mut self.report;
        if self.rounds == 0 {
            total.server_cpu = round.server_cpu;
            total.client_cpu = round.client_cpu;
        } else {
            total.server_cpu = add_cpu(total.server_cpu, round.server_cpu);
            total.client_cpu = add_cpu(total.client_cpu, round.client_cpu);
        }
        self.rounds += 1;
        total
            .latencies_micros
            .extend_from_slice(&round.latencies_micros);
        total.elapsed += round.elapsed;
        total.all_ok_requests += round.all_ok_requests;
        total.errors += round.errors;
        if total.first_error.is_none() {
            total.first_error = round.first_error;
        }
        // A connection whose slice ran out stays out in later rounds.
        total.exhausted_connections = total.exhausted_connections.max(round.exhausted_connections);
    }

    fn finish(mut self) -> LoadReport {
        self.report.latencies_micros.sort_unstable();
        self.report
    }
}

/// One round: `connections` connections on the load generator's runtime, a warm-up, then
/// the measured window; CPU is sampled at both ends of the window.
fn run_load(
    runtime: &Runtime,
    target: SocketAddr,
    paths: &Paths,
    header: Option<&(HeaderName, HeaderValue)>,
    slot: Slot,
    issued: &Arc<AtomicU64>,
    connections: usize,
) -> LoadReport {
    runtime.block_on(async {
        let window = slot.window();
        let connections: Vec<_> = (0..connections)
            .map(|connection| {
                tokio::spawn(drive_connection(
                    target,
                    paths.for_connection(connection),
                    header.cloned(),
                    window,
                    Arc::clone(issued),
                ))
            })
            .collect();
        tokio::time::sleep_until(window.measure_from.into()).await;
        let cpu_before = CpuSample::now();

        let mut round = LoadReport::default();
        let mut last_finish = window.measure_from;
        for connection in connections {
            let report = match connection.await {
                Ok(report) => report,
                Err(join) => {
                    round.errors += 1;
                    round
                        .first_error
                        .get_or_insert(format!("connection task failed: {join}"));
                    continue;
                }
            };
            round
                .latencies_micros
                .extend_from_slice(&report.latencies_micros);
            round.all_ok_requests += report.ok_requests;
            round.errors += report.errors;
            if round.first_error.is_none() {
                round.first_error = report.first_error;
            }
            round.exhausted_connections += usize::from(report.exhausted);
            last_finish = last_finish.max(report.last_finish.unwrap_or(last_finish));
        }
        let cpu_after = CpuSample::now();
        round.server_cpu = cpu_after.server.zip(cpu_before.server).map(|(a, b)| a - b);
        round.client_cpu = cpu_after.client.zip(cpu_before.client).map(|(a, b)| a - b);
        // Up to the last measured answer: the window, unless every connection stopped early.
        round.elapsed = last_finish - window.measure_from;
        round
    })
}

// === raw signing (d) ===

#[derive(Default)]
struct SigningReport {
    signatures: u64,
    /// Measured time, summed over rounds.
    elapsed: Duration,
    cpu: Option<Duration>,
    rounds: u32,
}

impl SigningReport {
    fn per_second(&self) -> f64 {
        self.signatures as f64 / self.elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
    }

    fn cpu_micros_per_signature(&self) -> Option<f64> {
        per_request_micros(self.cpu?, self.signatures)
    }

    fn absorb(&mut self, round: SigningReport) {
        self.cpu = if self.rounds == 0 {
            round.cpu
        } else {
            add_cpu(self.cpu, round.cpu)
        };
        self.rounds += 1;
        self.signatures += round.signatures;
        self.elapsed += round.elapsed;
    }
}

/// `threads` OS threads signing distinct claims with the parsed key in a loop.
fn sign_on_every_core(threads: usize, slot: Slot) -> SigningReport {
    let pem = std::fs::read_to_string(FIXTURE_KEY_PATH).expect("the fixture key is readable");
    let key = Arc::new(
        SigningKey::from_material(Some(FIXTURE_KID), &pem).expect("the fixture key parses"),
    );
    let settings = Arc::new(TokenSettings {
        ttl: Duration::from_secs(3600),
        downloadable: false,
        access_rules: Arc::from(vec![]),
        not_after: None,
    });
    let window = slot.window();
    let workers: Vec<_> = (0..threads)
        .map(|thread| {
            let key = Arc::clone(&key);
            let settings = Arc::clone(&settings);
            std::thread::Builder::new()
                .name(format!("{SIGNER_THREADS}-{thread}"))
                .spawn(move || sign_until(&key, &settings, thread, window))
                .expect("a signing thread starts")
        })
        .collect();
    let mut round = SigningReport {
        cpu: Some(Duration::ZERO),
        ..SigningReport::default()
    };
    let mut last_finish = window.measure_from;
    for worker in workers {
        let signed = worker.join().expect("a signing thread does not panic");
        round.signatures += signed.signatures;
        round.cpu = add_cpu(round.cpu, signed.cpu);
        last_finish = last_finish.max(signed.last_finish);
    }
    round.elapsed = last_finish - window.measure_from;
    round
}

/// What one signing thread did inside the window.
struct Signed {
    signatures: u64,
    last_finish: Instant,
    /// The thread's own CPU time inside the window.
    cpu: Option<Duration>,
}

/// Sign distinct claims until the window closes, counting those started inside it.
fn sign_until(key: &SigningKey, settings: &TokenSettings, thread: usize, window: Window) -> Signed {
    let mut signed = Signed {
        signatures: 0,
        last_finish: window.measure_from,
        cpu: None,
    };
    let mut cpu_at_window = None;
    for i in 0_u64.. {
        let started = Instant::now();
        if started >= window.stop_at {
            break;
        }
        if started >= window.measure_from && cpu_at_window.is_none() {
            cpu_at_window = Some(current_thread_cpu());
        }
        let uid: VideoUid = format!("{thread:016x}{i:016x}")
            .parse()
            .expect("a valid uid");
        let claims = Claims::build(&uid, key.id(), settings, unix_now(), NBF_BACKDATE);
        std::hint::black_box(sign_jws(key, &claims).expect("signs"));
        if started >= window.measure_from {
            signed.signatures += 1;
            signed.last_finish = Instant::now();
        }
    }
    // Read by the thread itself: once it exits, its time is gone from /proc.
    signed.cpu = cpu_at_window
        .flatten()
        .zip(current_thread_cpu())
        .map(|(before, after)| after - before);
    signed
}

// === CPU accounting ===

/// CPU time used so far by the gateway's and the load generator's threads.
struct CpuSample {
    server: Option<Duration>,
    client: Option<Duration>,
}

impl CpuSample {
    fn now() -> Self {
        Self {
            server: add_cpu(
                thread_cpu(SERVER_THREADS),
                thread_cpu(GATEWAY_SIGNER_THREADS),
            ),
            client: thread_cpu(CLIENT_THREADS),
        }
    }
}

/// User + system CPU time of this process's live threads whose name starts with `prefix`,
/// from `/proc/self/task/*/stat` (Linux); `None` where that cannot be read.
fn thread_cpu(prefix: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        // A thread may exit between the listing and the read.
        let Ok(stat) = std::fs::read_to_string(task.ok()?.path().join("stat")) else {
            continue;
        };
        let (name, cpu) = parse_stat(&stat)?;
        if name.starts_with(prefix) {
            total += cpu;
        }
    }
    Some(total)
}

/// The calling thread's user + system CPU time, from `/proc/thread-self/stat` (Linux).
fn current_thread_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    parse_stat(&stat).map(|(_, cpu)| cpu)
}

/// A thread's name and user + system CPU time, from its `stat` line.
fn parse_stat(stat: &str) -> Option<(&str, Duration)> {
    // `tid (name) state ...`: the name may hold spaces and parentheses, so split at the
    // last `)`.
    let (head, rest) = stat.rsplit_once(')')?;
    let (_, name) = head.split_once('(')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // proc(5): utime and stime are fields 14 and 15; `rest` starts at field 3.
    let user: u64 = fields.get(11)?.parse().ok()?;
    let system: u64 = fields.get(12)?.parse().ok()?;
    let ticks = user + system;
    Some((
        name,
        Duration::from_millis(ticks * 1000 / CLOCK_TICKS_PER_SEC),
    ))
}

// === output ===

fn print_preamble(options: &Options, max_in_flight: usize, location_len: usize) {
    println!(
        "streamgate load bench: {} keep-alive HTTP/1.1 connections over 127.0.0.1; each scenario measured for {:.1} s in {ROUNDS} alternating rounds ({} s warm-up before the first, {} ms before the others), at most {MAX_REQUESTS_PER_SCENARIO} requests",
        options.connections,
        options.duration.as_secs_f64(),
        WARM_UP.as_secs(),
        ROUND_WARM_UP.as_millis(),
    );
    let generator = match options.client_threads {
        0 => "runs on the same runtime".to_string(),
        threads => format!("runs on its own runtime with {threads} workers"),
    };
    println!(
        "{} cores shared: the gateway and the minimal server run on a tokio multi-thread runtime with {} workers (signing.max_in_flight {max_in_flight}, signatures on its signing threads); the load generator {generator}. req/s includes the generator's CPU.",
        options.cores, options.cores,
    );
    println!("Location header: {location_len} bytes");
    println!();
}

/// `shared`: the load generator ran on the gateway's runtime, so its CPU cannot be told
/// apart from the gateway's.
fn print_table(shared: bool, rows: &[(&str, &LoadReport)]) {
    println!(
        "{:<28} {:>9} {:>8} {:>8} {:>8} {:>9} {:>6} {:>11} {:>15}",
        "scenario",
        "requests",
        "req/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "errors",
        "CPU µs/req",
        "gateway µs/req"
    );
    for (name, report) in rows {
        let gateway_cpu = if shared {
            "(shared)".to_string()
        } else {
            format_micros(report.server_cpu_micros_per_request())
        };
        println!(
            "{:<28} {:>9} {:>8.0} {:>8.3} {:>8.3} {:>9.3} {:>6} {:>11} {:>15}",
            name,
            report.requests(),
            report.per_second(),
            report.percentile_ms(50.0),
            report.percentile_ms(99.0),
            report.percentile_ms(99.9),
            report.errors,
            format_micros(report.total_cpu_micros_per_request()),
            gateway_cpu,
        );
    }
    println!("(CPU µs/req: gateway and load generator together, signing included)");
}

fn format_micros(micros: Option<f64>) -> String {
    micros.map_or_else(|| "n/a".to_string(), |micros| format!("{micros:.1}"))
}

fn print_ratios(
    shared: bool,
    hits: &LoadReport,
    bare: &LoadReport,
    misses: &LoadReport,
    signing: &SigningReport,
) {
    println!("ratios (req/s; the load generator shares the cores, which narrows any gap):");
    print_ratio(
        "(a)/(c) cache hits vs minimal hyper",
        hits.per_second(),
        bare.per_second(),
        HIT_TARGET,
    );
    print_ratio(
        "(b)/(d) all misses vs raw signing",
        misses.per_second(),
        signing.per_second(),
        MISS_TARGET,
    );
    // Informational: the same comparisons by CPU per request, which the machine's noise
    // moves less than throughput.
    let (per_request, side) = if shared {
        (
            LoadReport::total_cpu_micros_per_request as fn(&LoadReport) -> Option<f64>,
            "gateway and load generator",
        )
    } else {
        (
            LoadReport::server_cpu_micros_per_request as fn(&LoadReport) -> Option<f64>,
            "gateway alone",
        )
    };
    println!("CPU per request ({side}):");
    if let (Some(gateway), Some(minimal)) = (per_request(hits), per_request(bare)) {
        println!(
            "  (c)/(a): {minimal:.1} / {gateway:.1} µs = {:.3}",
            minimal / gateway
        );
    }
    if let (Some(gateway), Some(raw)) = (per_request(misses), signing.cpu_micros_per_signature()) {
        println!(
            "  (d)/(b), CPU per raw signature over CPU per miss: {raw:.1} / {gateway:.1} µs = {:.3}",
            raw / gateway
        );
    }
}

/// (e) and (f) against (a): what verifying a cached credential adds to a cache hit.
fn print_auth_ratios(shared: bool, hits: &LoadReport, basic: &LoadReport, jwt: &LoadReport) {
    println!("authenticated cache hits vs anonymous (req/s):");
    print_ratio(
        "(e)/(a) Basic user vs anonymous",
        basic.per_second(),
        hits.per_second(),
        AUTH_TARGET,
    );
    print_ratio(
        "(f)/(a) JWT cookie vs anonymous",
        jwt.per_second(),
        hits.per_second(),
        AUTH_TARGET,
    );
    let per_request = if shared {
        LoadReport::total_cpu_micros_per_request
    } else {
        LoadReport::server_cpu_micros_per_request
    };
    if let (Some(anonymous), Some(basic), Some(jwt)) =
        (per_request(hits), per_request(basic), per_request(jwt))
    {
        println!(
            "  CPU per request: (a) {anonymous:.1} µs, (e) {basic:.1} µs (+{:.1}), (f) {jwt:.1} µs (+{:.1})",
            basic - anonymous,
            jwt - anonymous,
        );
    }
}

fn print_ratio(name: &str, measured: f64, ceiling: f64, target: f64) {
    let ratio = measured / ceiling;
    let verdict = if ratio >= target { "PASS" } else { "BELOW" };
    println!(
        "  {name}: {measured:.0} / {ceiling:.0} = {ratio:.3} (target >= {target:.2}) {verdict}"
    );
}
