//! Soak: the release binary under mixed traffic, then under a flood of wrong Basic passwords,
//! with its memory read from `/proc/<pid>/status` (`VmRSS`, `VmHWM`) every 250 ms.
//!
//! Phases, each followed by an idle pause:
//! - **mixed**: proxied manifests and thumbnails (through the in-process emulator), redirects
//!   for a Basic user (a hit in the verification cache), `POST /api/getSignedURL`, unknown
//!   paths, `/healthz`, each request from a random viewer address behind a trusted proxy (so
//!   the per-address rate limiter sees a new key almost every time);
//! - **password flood**: every connection sends the user's name with a random wrong password
//!   (a full argon2id check with the default 19 MiB parameters each time), while one more
//!   client signs in with the right password and counts its answers.
//!
//! Prints RSS at start, the peak (sampled and `VmHWM`) and RSS at the end of each phase's
//! idle pause. Memory figures are reported, not judged: a bench, not a test.
//!
//! The allocator was chosen with it: with password checks in reused working memory, glibc's
//! malloc used 15–17 MiB less than mimalloc at every point of both phases (see the README's
//! reliability section), so the binary keeps the system allocator.
//!
//! Run with `cargo bench --bench soak`. Environment: `SOAK_SECONDS` (per phase, default 20),
//! `SOAK_CONNECTIONS` (default 32), `SOAK_IDLE_SECONDS` (pause after each phase, default 5),
//! `SOAK_PASSWORD_CHECKS` (`auth.max_password_checks`, default 4).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

const PASSWORD: &str = "correct horse battery staple";

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn config(password_checks: u64) -> String {
    let key =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/test-only-signing-key.pem");
    let phc = streamgate::identity::basic::hash_password(PASSWORD).expect("hashing works");
    format!(
        "\
listen: 127.0.0.1:0
stream:
  emulator:
    listen: 127.0.0.1:0
signing_keys:
  - id: 0a1b2c3d4e5f60718293a4b5c6d7e8f9
    file: {key}
token:
  ttl: 1h
  min_remaining: 10m
videos:
  intro:
    uid: ce800be43a9772f4bb02f35b860fb516
  keynote:
    uid: 5d5bc37ffcf54c9b82e996823bffbb81
users:
  viewer:
    password: \"{phc}\"
    groups: [members]
auth:
  max_password_checks: {password_checks}
trusted_proxies: [127.0.0.1]
rate_limit:
  per_address: {{per_second: 1000, burst: 1000}}
rules:
  - name: public
    videos: [intro]
    subjects: [anyone]
    mode: proxy
  - name: members
    videos: [keynote]
    subjects: [group:members]
log:
  access: false
limits:
  shutdown_drain: 0s
",
        key = key.display()
    )
}

/// The gateway process and where it listens.
struct Gateway {
    child: Child,
    origin: String,
}

impl Gateway {
    fn start(config: &Path) -> Gateway {
        let mut child = Command::new(env!("CARGO_BIN_EXE_streamgate"))
            .args(["--config", &config.display().to_string(), "serve"])
            .args(["--listen", "127.0.0.1:0"])
            .env("RUST_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the release binary starts");
        let stdout = child.stdout.take().expect("piped");
        let mut lines = BufReader::new(stdout).lines();
        let origin = loop {
            let line = lines
                .next()
                .expect("streamgate prints its address")
                .expect("stdout is readable");
            if let Some(origin) = line.strip_prefix("streamgate listening on ") {
                break origin.to_string();
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines.by_ref() {});
        Gateway { child, origin }
    }

    /// `(VmRSS, VmHWM)` in KiB.
    fn memory(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("/proc/<pid>/status is readable");
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|kib| kib.parse().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Memory over one phase, in KiB.
struct PhaseMemory {
    name: &'static str,
    start: u64,
    peak: u64,
    high_water: u64,
    end: u64,
    requests: u64,
    notes: String,
}

/// Sample RSS every 250 ms until `done`; the largest sample.
async fn sample_peak(gateway: &Gateway, done: &AtomicBool) -> u64 {
    let mut peak = 0;
    while !done.load(Ordering::Acquire) {
        peak = peak.max(gateway.memory().0);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    peak.max(gateway.memory().0)
}

/// A small xorshift: random addresses and passwords without a dependency.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

async fn send(client: &HttpClient, request: Request<Full<Bytes>>) -> Option<u16> {
    let response = tokio::time::timeout(Duration::from_secs(30), client.request(request))
        .await
        .ok()?
        .ok()?;
    let status = response.status().as_u16();
    let _ = response.into_body().collect().await;
    Some(status)
}

fn basic(password: &str) -> String {
    let credentials =
        base64::engine::general_purpose::STANDARD.encode(format!("viewer:{password}"));
    format!("Basic {credentials}")
}

/// One request of the mixed traffic, chosen by `i`.
fn mixed_request(origin: &str, i: u64, random: &mut Random) -> Request<Full<Bytes>> {
    let r = random.next();
    let viewer = format!(
        "10.{}.{}.{}",
        (r >> 8) & 0xff,
        (r >> 16) & 0xff,
        (r >> 24) & 0xff
    );
    let (method, path, body) = match i % 10 {
        0..=3 => (Method::GET, "/watch/intro/manifest/video.m3u8", None),
        4 | 5 => (Method::GET, "/watch/intro/thumbnails/thumbnail.jpg", None),
        6 => (Method::GET, "/watch/keynote", None),
        7 => (Method::GET, "/no/such/page", None),
        8 => (
            Method::POST,
            "/api/getSignedURL",
            Some(r#"{"video_id":"intro"}"#),
        ),
        _ => (Method::GET, "/healthz", None),
    };
    let mut request = Request::builder()
        .method(method)
        .uri(format!("{origin}{path}"))
        .header("x-forwarded-for", viewer);
    if i % 10 == 6 {
        request = request.header("authorization", basic(PASSWORD));
    }
    if body.is_some() {
        request = request.header("content-type", "application/json");
    }
    request
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .expect("the request builds")
}

fn wrong_password_request(origin: &str, random: &mut Random) -> Request<Full<Bytes>> {
    let password = format!("wrong-{:016x}", random.next());
    Request::get(format!("{origin}/watch/keynote"))
        .header("authorization", basic(&password))
        .body(Full::new(Bytes::new()))
        .expect("the request builds")
}

/// Run `connections` loops of `request` for `seconds`; returns the answers by status.
async fn load(
    origin: &str,
    connections: u64,
    seconds: u64,
    request: fn(&str, u64, &mut Random) -> Request<Full<Bytes>>,
) -> (u64, std::collections::BTreeMap<u16, u64>) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for c in 0..connections {
        let origin = origin.to_string();
        tasks.push(tokio::spawn(async move {
            let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
            let mut random = Random(0x9E37_79B9_7F4A_7C15 ^ (c + 1));
            let mut statuses = std::collections::BTreeMap::new();
            for i in 0..10_000_000u64 {
                if Instant::now() >= deadline {
                    break;
                }
                let status = send(&client, request(&origin, i, &mut random)).await;
                *statuses.entry(status.unwrap_or(0)).or_insert(0u64) += 1;
            }
            statuses
        }));
    }
    let mut all = std::collections::BTreeMap::new();
    for task in tasks {
        for (status, count) in task.await.expect("a load task") {
            *all.entry(status).or_insert(0) += count;
        }
    }
    (all.values().sum(), all)
}

async fn phase(
    gateway: &Gateway,
    name: &'static str,
    idle: Duration,
    run: impl std::future::Future<Output = (u64, String)>,
) -> PhaseMemory {
    let start = gateway.memory().0;
    let done = AtomicBool::new(false);
    let (peak, (requests, notes)) = tokio::join!(sample_peak(gateway, &done), async {
        let outcome = run.await;
        done.store(true, Ordering::Release);
        outcome
    });
    tokio::time::sleep(idle).await;
    let (end, high_water) = gateway.memory();
    PhaseMemory {
        name,
        start,
        peak,
        high_water,
        end,
        requests,
        notes,
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; nothing to filter.
    let seconds = env_number("SOAK_SECONDS", 20);
    let connections = env_number("SOAK_CONNECTIONS", 32);
    let idle = Duration::from_secs(env_number("SOAK_IDLE_SECONDS", 5));
    let password_checks = env_number("SOAK_PASSWORD_CHECKS", 4);
    let allocator = "the system allocator";

    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, config(password_checks)).expect("writing the config");
    let gateway = Gateway::start(&path);
    let origin = gateway.origin.clone();
    // Warm up: the first requests load lazily built state (the dummy hash, TLS-free pools).
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let _ = send(&client, mixed_request(&origin, 0, &mut Random(1))).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let at_start = gateway.memory().0;

    let mixed = phase(&gateway, "mixed traffic", idle, async {
        let (requests, statuses) = load(&origin, connections, seconds, mixed_request).await;
        (requests, format!("answers by status {statuses:?}"))
    })
    .await;

    let flood = phase(&gateway, "wrong-password flood", idle, async {
        let real_user = Arc::new(AtomicU64::new(0));
        let real_ok = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let user = {
            let (origin, real_user, real_ok, stop) = (
                origin.clone(),
                Arc::clone(&real_user),
                Arc::clone(&real_ok),
                Arc::clone(&stop),
            );
            tokio::spawn(async move {
                let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
                for _ in 0..100_000 {
                    if stop.load(Ordering::Acquire) {
                        break;
                    }
                    let request = Request::get(format!("{origin}/watch/keynote"))
                        .header("authorization", basic(PASSWORD))
                        .body(Full::new(Bytes::new()))
                        .expect("the request builds");
                    real_user.fetch_add(1, Ordering::Relaxed);
                    if send(&client, request).await == Some(302) {
                        real_ok.fetch_add(1, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            })
        };
        let (requests, statuses) = load(&origin, connections, seconds, |origin, _, random| {
            wrong_password_request(origin, random)
        })
        .await;
        stop.store(true, Ordering::Release);
        let _ = user.await;
        (
            requests,
            format!(
                "answers by status {statuses:?}; the real user got 302 on {} of {} tries",
                real_ok.load(Ordering::Relaxed),
                real_user.load(Ordering::Relaxed)
            ),
        )
    })
    .await;

    println!(
        "soak: {allocator}, {connections} connections, {seconds} s per phase, max_password_checks {password_checks}, {idle:?} idle after each"
    );
    println!("RSS after start-up: {}", mib(at_start));
    println!(
        "| phase | requests | RSS at start | peak RSS (sampled) | VmHWM | RSS after {} s idle |",
        idle.as_secs()
    );
    println!("|---|---|---|---|---|---|");
    for phase in [&mixed, &flood] {
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            phase.name,
            phase.requests,
            mib(phase.start),
            mib(phase.peak),
            mib(phase.high_water),
            mib(phase.end)
        );
    }
    for phase in [&mixed, &flood] {
        println!("{}: {}", phase.name, phase.notes);
    }
    drop(gateway);
}
