//! The outside load bench: the release `streamgate` binary as its own process on the shipped
//! `config.yaml` (access log on, written to a file, as production runs it), driven by wrk,
//! with each server's own CPU time per request read from `/proc/<pid>/stat`.
//!
//! Scenarios, measured in alternating rounds so that a noisy neighbour slows both sides of a
//! ratio alike:
//! - `hit`: `GET /watch/welcome`, one token reused (anonymous);
//! - `hit-basic`, `hit-jwt`: the same with HTTP Basic (`alice`) and with the demo issuer's JWT
//!   in the `session` cookie, on `/watch/keynote`;
//! - `hyper`: a minimal hyper server (this binary, re-executed) answering a 302 of the same size;
//! - `nginx`: nginx `return 302` of the same size with its access log on (`buffer=64k`), when
//!   nginx is installed;
//! - `miss`: every request a video no one asked for before (a copy of the shipped config with
//!   40,000 extra aliases, a fresh process per round), so every request signs;
//! - `sign`: a bare hyper server (this binary, re-executed) that signs an RS256 token per request
//!   with a key parsed once: the ceiling for `miss`.
//!
//! Run: `cargo bench --bench outside` (needs wrk: `apt-get install -y wrk`; nginx optional).
//! Environment: `OUTSIDE_SECONDS` (per round, default 5), `OUTSIDE_ROUNDS` (default 3),
//! `OUTSIDE_CONNECTIONS` (default 64).

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MISS_VIDEOS: usize = 40_000;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // Re-executed as one of the reference servers.
    match args.get(1).map(String::as_str) {
        Some("--serve-minimal") => return reference::minimal(&args[2], &args[3]),
        Some("--serve-signing") => return reference::signing(&args[2], &args[3], &args[4]),
        _ => {}
    }
    if Command::new("wrk").arg("--version").output().is_err() {
        eprintln!("wrk is not installed: apt-get install -y wrk");
        std::process::exit(2);
    }
    let seconds: u64 = env_or("OUTSIDE_SECONDS", 5);
    let rounds: usize = env_or("OUTSIDE_ROUNDS", 3);
    let connections: usize = env_or("OUTSIDE_CONNECTIONS", 64);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let work = tempfile::tempdir().expect("a temporary directory");
    let bench = Bench {
        seconds,
        connections,
        work: work.path().to_path_buf(),
        root,
    };
    let nginx = Command::new("nginx").arg("-v").output().is_ok();
    if !nginx {
        eprintln!("nginx is not installed (apt-get install -y nginx): its rows are skipped");
    }

    let mut results: Vec<(&str, Vec<Measure>)> = Vec::new();
    let mut record = |name: &'static str, measure: Measure| {
        eprintln!("  {name:<10} {measure}");
        match results.iter_mut().find(|(n, _)| *n == name) {
            Some((_, all)) => all.push(measure),
            None => results.push((name, vec![measure])),
        }
    };
    for round in 1..=rounds {
        eprintln!("round {round}/{rounds}");
        let gateway = bench.gateway("config.yaml", &bench.root.join("config.yaml"));
        let location = gateway.location("/watch/welcome");
        record("hit", gateway.wrk("/watch/welcome", &[], None));
        record(
            "hit-basic",
            gateway.wrk("/watch/keynote", &[&basic_header()], None),
        );
        record(
            "hit-jwt",
            gateway.wrk("/watch/keynote", &[&jwt_cookie(&bench.root)], None),
        );
        drop(gateway);
        let minimal = bench.reference("--serve-minimal", &[&location]);
        record("hyper", minimal.wrk("/watch/welcome", &[], None));
        drop(minimal);
        if nginx {
            let nginx = bench.nginx(&location);
            record("nginx", nginx.wrk("/watch/welcome", &[], None));
            drop(nginx);
        }
        let misses = bench.miss_config();
        let gateway = bench.gateway("miss.yaml", &misses);
        record("miss", gateway.wrk("/", &[], Some(MISS_SCRIPT)));
        drop(gateway);
        let key = bench.work.join(".streamgate/dev-signing-key.json");
        let signing = bench.reference("--serve-signing", &[&key.display().to_string(), "x"]);
        record("sign", signing.wrk("/", &[], Some(MISS_SCRIPT)));
        drop(signing);
    }
    print_table(&results, seconds, rounds, connections);
}

// === the measurements ===

/// One wrk run against one server.
#[derive(Clone, Copy, Debug, Default)]
struct Measure {
    requests_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    cpu_us_per_request: f64,
    errors: u64,
}

impl std::fmt::Display for Measure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:>8.0} req/s  p50 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  CPU {:.1} µs/req{}",
            self.requests_per_sec,
            self.p50_ms,
            self.p99_ms,
            self.p999_ms,
            self.cpu_us_per_request,
            if self.errors > 0 {
                format!("  ERRORS {}", self.errors)
            } else {
                String::new()
            }
        )
    }
}

/// Reports what wrk's own summary lacks: p99.9, and errors as one number.
const DONE_SCRIPT: &str = r#"
done = function(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.status + summary.errors.timeout
  io.write(string.format("BENCH %d %.0f %.0f %.0f %d\n", summary.requests,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), errors))
end
"#;

/// Every request a new video: `/watch/m<n>`, the threads taking alternate numbers.
const MISS_SCRIPT: &str = r#"
local threads = 0
setup = function(thread)
  thread:set("id", threads)
  threads = threads + 1
end
init = function(args)
  n = 0
end
request = function()
  n = n + 1
  return wrk.format(nil, "/watch/m" .. (n * 2 + id))
end
"#;

struct Bench {
    seconds: u64,
    connections: usize,
    /// A scratch directory: configs, keys, logs.
    work: PathBuf,
    root: PathBuf,
}

/// A server process under load; killed when dropped.
struct Server<'b> {
    bench: &'b Bench,
    children: Vec<Child>,
    /// Processes whose CPU is counted (nginx: the master and its workers).
    pids: Vec<u32>,
    addr: SocketAddr,
}

impl Bench {
    /// `streamgate serve` on `config` (copied into the scratch directory as `name`, beside the
    /// demo secret it names), on a free port, the access log on and written to a file.
    fn gateway(&self, name: &str, config: &Path) -> Server<'_> {
        let demo = self.work.join("demo");
        std::fs::create_dir_all(&demo).unwrap();
        std::fs::copy(
            self.root.join("demo/idp-hs256.secret"),
            demo.join("idp-hs256.secret"),
        )
        .unwrap();
        let path = self.work.join(name);
        if config != path {
            std::fs::copy(config, &path).unwrap();
        }
        let port = free_port();
        let log = std::fs::File::create(self.work.join(format!("{name}.log"))).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_streamgate"))
            .current_dir(&self.work)
            .args([
                "--config",
                name,
                "--log-format",
                "json",
                "serve",
                "--metrics-listen",
                "127.0.0.1:0",
                "--listen",
            ])
            .arg(format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("streamgate starts");
        self.serving(vec![child], None, port)
    }

    /// This binary as a reference server.
    fn reference(&self, mode: &str, args: &[&str]) -> Server<'_> {
        let port = free_port();
        let child = Command::new(std::env::current_exe().unwrap())
            .arg(mode)
            .arg(format!("127.0.0.1:{port}"))
            .args(args)
            .stdout(Stdio::null())
            .spawn()
            .expect("the reference server starts");
        self.serving(vec![child], None, port)
    }

    /// nginx answering `return 302 <location>` with its access log on, buffered.
    fn nginx(&self, location: &str) -> Server<'_> {
        let port = free_port();
        let dir = self.work.join("nginx");
        std::fs::create_dir_all(&dir).unwrap();
        let conf = format!(
            "daemon off; master_process on; worker_processes auto; pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{ worker_connections 4096; }}
http {{
  access_log {dir}/access.log combined buffer=64k;
  server {{
    listen 127.0.0.1:{port};
    location / {{ add_header Cache-Control \"private, no-store\" always; return 302 {location}; }}
  }}
}}
",
            dir = dir.display()
        );
        let path = dir.join("nginx.conf");
        std::fs::write(&path, conf).unwrap();
        let child = Command::new("nginx")
            .arg("-c")
            .arg(&path)
            .arg("-p")
            .arg(&dir)
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx starts");
        self.serving(vec![child], Some(dir.join("nginx.pid")), port)
    }

    /// Wait (at most 30 s) until `port` accepts connections.
    fn serving(&self, children: Vec<Child>, pid_file: Option<PathBuf>, port: u16) -> Server<'_> {
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let started = Instant::now();
        while TcpStream::connect(addr).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "server on {addr} did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut pids: Vec<u32> = children.iter().map(Child::id).collect();
        if pid_file.is_some() {
            // nginx's workers are children of the master.
            pids.extend(children_of(pids[0]));
        }
        Server {
            bench: self,
            children,
            pids,
            addr,
        }
    }

    /// The shipped config with `MISS_VIDEOS` more public videos, `m0` … `m<N-1>`.
    fn miss_config(&self) -> PathBuf {
        let path = self.work.join("miss.yaml");
        if path.exists() {
            return path;
        }
        let shipped = std::fs::read_to_string(self.root.join("config.yaml")).unwrap();
        let mut videos = String::with_capacity(MISS_VIDEOS * 64);
        for n in 0..MISS_VIDEOS {
            let _ = writeln!(
                videos,
                "  m{n}:\n    uid: {:032x}\n    tags: [public]",
                0xabcd_0000_0000_0000_0000_0000_0000_0000_u128 + n as u128
            );
        }
        let config = shipped.replacen("videos:\n", &format!("videos:\n{videos}"), 1);
        assert_ne!(
            config, shipped,
            "the shipped config has a `videos:` section"
        );
        std::fs::write(&path, config).unwrap();
        path
    }
}

impl Server<'_> {
    fn cpu_ticks(&self) -> u64 {
        self.pids.iter().map(|pid| cpu_ticks(*pid)).sum()
    }

    /// One wrk run of `OUTSIDE_SECONDS` on `path`, with `headers`, and `script` if given.
    fn wrk(&self, path: &str, headers: &[&str], script: Option<&str>) -> Measure {
        let script_path = self.bench.work.join("bench.lua");
        let mut file = std::fs::File::create(&script_path).unwrap();
        file.write_all(script.unwrap_or("").as_bytes()).unwrap();
        file.write_all(DONE_SCRIPT.as_bytes()).unwrap();
        let mut command = Command::new("wrk");
        command
            .arg("-t2")
            .arg(format!("-c{}", self.bench.connections))
            .arg(format!("-d{}s", self.bench.seconds))
            .arg("-s")
            .arg(&script_path);
        for header in headers {
            command.arg("-H").arg(header);
        }
        command.arg(format!("http://{}{path}", self.addr));
        let before = self.cpu_ticks();
        let output = command.output().expect("wrk runs");
        let after = self.cpu_ticks();
        let text = String::from_utf8_lossy(&output.stdout);
        let line = text
            .lines()
            .find_map(|line| line.strip_prefix("BENCH "))
            .unwrap_or_else(|| panic!("no summary from wrk:\n{text}"));
        let fields: Vec<f64> = line
            .split_whitespace()
            .map(|f| f.parse().unwrap())
            .collect();
        let requests = fields[0].max(1.0);
        let ticks_per_sec = clock_ticks_per_second();
        let non_3xx = text
            .lines()
            .find_map(|line| line.trim().strip_prefix("Non-2xx or 3xx responses: "))
            .map_or(0, |n| n.trim().parse::<u64>().unwrap_or(0));
        Measure {
            requests_per_sec: requests / self.bench.seconds as f64,
            p50_ms: fields[1] / 1000.0,
            p99_ms: fields[2] / 1000.0,
            p999_ms: fields[3] / 1000.0,
            cpu_us_per_request: (after - before) as f64 / ticks_per_sec * 1e6 / requests,
            errors: fields[4] as u64 + non_3xx,
        }
    }

    /// The `Location` of `path` (a 302 answered to a first request, which also warms the cache).
    fn location(&self, path: &str) -> String {
        let mut stream = TcpStream::connect(self.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        std::io::Read::read_to_string(&mut stream, &mut answer).unwrap();
        answer
            .lines()
            .find_map(|line| line.strip_prefix("location: "))
            .unwrap_or_else(|| panic!("no Location in:\n{answer}"))
            .to_string()
    }
}

impl Drop for Server<'_> {
    fn drop(&mut self) {
        for child in &mut self.children {
            // SIGTERM first: nginx flushes its log, the gateway drains.
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(15);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15; `rest` starts at field 3.
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    field(14).unwrap_or(0) + field(15).unwrap_or(0)
}

fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `Authorization: Basic` for the demo user `alice` of the shipped config.
fn basic_header() -> String {
    use base64::Engine as _;
    let credentials = base64::engine::general_purpose::STANDARD.encode("alice:alice-demo-password");
    format!("Authorization: Basic {credentials}")
}

/// `Cookie: session=<JWT>` from the shipped config's demo issuer, in its `members` group
/// (`group:demo-idp:members` in the `members` rule).
fn jwt_cookie(root: &Path) -> String {
    let secret = std::fs::read(root.join("demo/idp-hs256.secret")).unwrap();
    let secret = String::from_utf8_lossy(&secret)
        .trim_end()
        .as_bytes()
        .to_vec();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({
        "iss": "https://idp.streamgate.example",
        "aud": "streamgate",
        "sub": "carol",
        "groups": ["members"],
        "iat": now,
        "exp": now + 3600,
    });
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(&secret),
    )
    .unwrap();
    format!("Cookie: session={token}")
}

fn print_table(results: &[(&str, Vec<Measure>)], seconds: u64, rounds: usize, connections: usize) {
    let median = |name: &str| -> Option<Measure> {
        let (_, all) = results.iter().find(|(n, _)| *n == name)?;
        let mut sorted = all.clone();
        sorted.sort_by(|a, b| a.requests_per_sec.total_cmp(&b.requests_per_sec));
        Some(sorted[sorted.len() / 2])
    };
    println!(
        "\noutside load bench: wrk -t2 -c{connections}, {seconds} s rounds, {rounds} rounds, median round per row"
    );
    println!("| scenario | req/s | p50 ms | p99 ms | p99.9 ms | server CPU µs/req |");
    println!("|---|---|---|---|---|---|");
    for (name, _) in results {
        let m = median(name).unwrap();
        println!(
            "| {name} | {:.0} | {:.2} | {:.2} | {:.2} | {:.1} |",
            m.requests_per_sec, m.p50_ms, m.p99_ms, m.p999_ms, m.cpu_us_per_request
        );
    }
    let ratio = |what: &str,
                 a: Option<Measure>,
                 b: Option<Measure>,
                 f: fn(&Measure) -> f64,
                 target: &str,
                 ok: fn(f64) -> bool| {
        if let (Some(a), Some(b)) = (a, b) {
            let r = f(&a) / f(&b);
            println!(
                "| {what} | {r:.2} | {target} | {} |",
                if ok(r) { "met" } else { "BELOW" }
            );
        }
    };
    println!("\n| ratio | value | target | |");
    println!("|---|---|---|---|");
    let rps = |m: &Measure| m.requests_per_sec;
    let cpu = |m: &Measure| m.cpu_us_per_request;
    ratio(
        "hit CPU / hyper CPU",
        median("hit"),
        median("hyper"),
        cpu,
        "≤ 1.3",
        |r| r <= 1.3,
    );
    ratio(
        "hit req/s / nginx req/s",
        median("hit"),
        median("nginx"),
        rps,
        "≥ 0.9",
        |r| r >= 0.9,
    );
    ratio(
        "miss req/s / sign req/s",
        median("miss"),
        median("sign"),
        rps,
        "≥ 0.9",
        |r| r >= 0.9,
    );
    ratio(
        "hit-basic req/s / hit req/s",
        median("hit-basic"),
        median("hit"),
        rps,
        "≥ 0.85",
        |r| r >= 0.85,
    );
    ratio(
        "hit-jwt req/s / hit req/s",
        median("hit-jwt"),
        median("hit"),
        rps,
        "≥ 0.85",
        |r| r >= 0.85,
    );
    let failed: u64 = results
        .iter()
        .flat_map(|(_, all)| all)
        .map(|m| m.errors)
        .sum();
    if failed > 0 {
        eprintln!("{failed} requests failed or were not answered with a redirect");
        std::process::exit(1);
    }
}

/// The reference servers, each as small as hyper allows.
mod reference {
    use std::convert::Infallible;
    use std::net::SocketAddr;
    use std::sync::Arc;

    use bytes::Bytes;
    use http::{HeaderValue, Response, StatusCode};
    use http_body_util::Full;
    use hyper::service::service_fn;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto;

    /// Serve `handler` on `addr` with a worker per core, as the gateway does.
    fn serve<F>(addr: &str, handler: F)
    where
        F: Fn(&str) -> Response<Full<Bytes>> + Send + Sync + 'static,
    {
        let addr: SocketAddr = addr.parse().unwrap();
        let handler = Arc::new(handler);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let handler = Arc::clone(&handler);
                tokio::spawn(async move {
                    let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let response = handler(req.uri().path());
                        async move { Ok::<_, Infallible>(response) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
    }

    fn found(location: HeaderValue) -> Response<Full<Bytes>> {
        let mut response = Response::new(Full::new(Bytes::new()));
        *response.status_mut() = StatusCode::FOUND;
        let headers = response.headers_mut();
        headers.insert(http::header::LOCATION, location);
        headers.insert(
            http::header::CACHE_CONTROL,
            HeaderValue::from_static("private, no-store"),
        );
        headers.insert(
            http::header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        response
    }

    /// A fixed 302 to `location`.
    pub fn minimal(addr: &str, location: &str) {
        let location = HeaderValue::try_from(location).unwrap();
        serve(addr, move |_| found(location.clone()));
    }

    /// A 302 to a token signed per request (RS256, the key parsed once) for the video named by
    /// the path's last segment.
    pub fn signing(addr: &str, key_file: &str, _unused: &str) {
        let document: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(key_file).unwrap()).unwrap();
        let pem = document["pem"].as_str().expect("the key file has a pem");
        use base64::Engine as _;
        let pem = base64::engine::general_purpose::STANDARD
            .decode(pem)
            .map(|bytes| String::from_utf8(bytes).unwrap())
            .unwrap_or_else(|_| pem.to_string());
        let block = pem::parse(pem.as_bytes()).expect("a PEM key");
        let pkcs1 = if block.tag() == "PRIVATE KEY" {
            use pkcs8::der::Decode as _;
            pkcs8::PrivateKeyInfoRef::from_der(block.contents())
                .expect("a PKCS#8 key")
                .private_key
                .as_bytes()
                .to_vec()
        } else {
            block.contents().to_vec()
        };
        // Parsed once; each request only signs.
        let key = aws_lc_rs::signature::RsaKeyPair::from_der(&pkcs1).expect("an RSA key");
        let kid = document["id"].as_str().unwrap_or_default().to_string();
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let header = b64(format!(r#"{{"alg":"RS256","kid":"{kid}"}}"#).as_bytes());
        let rng = aws_lc_rs::rand::SystemRandom::new();
        serve(addr, move |path| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            let video = path.rsplit('/').next().unwrap_or("");
            let claims = serde_json::json!({
                "sub": video, "kid": kid, "exp": now + 3600, "nbf": now - 60,
            });
            let signing_input = format!("{header}.{}", b64(claims.to_string().as_bytes()));
            let mut signature = vec![0; key.public_modulus_len()];
            key.sign(
                &aws_lc_rs::signature::RSA_PKCS1_SHA256,
                &rng,
                signing_input.as_bytes(),
                &mut signature,
            )
            .expect("signing works");
            let token = format!("{signing_input}.{}", b64(&signature));
            let location =
                HeaderValue::try_from(format!("http://127.0.0.1:8081/{token}/iframe")).unwrap();
            found(location)
        });
    }
}
