//! The outside load bench: the release `streamgate` binary as its own process on the shipped
//! `config.yaml` (access log on, written to a file, as production runs it), driven by wrk,
//! with each server's own CPU time per request read from `/proc/<pid>/stat`, and the load
//! generator's from this process's waited-for children (`/proc/self/stat`).
//!
//! Scenarios, in groups, measured in alternating rounds so that a noisy neighbour slows both
//! sides of a ratio alike (the hit group's servers in an order rotated each round, so that
//! none is always first or last):
//! - `hit` group: `hit`, `GET /watch/welcome` with one token reused (anonymous; like every
//!   gateway row, with the shipped token audit trail writing an event per request);
//!   `hit no trail`, the same with the `audit_trail` section removed (what the trail costs);
//!   `hit no access log`, the shipped config with `log: {access: false}`, and `hit text log`,
//!   the shipped config logging in the text format (what the access line costs, in each
//!   format);
//!   `hit-basic`,
//!   `hit-jwt`, the same with HTTP Basic (`bob`) and with the demo issuer's JWT in the
//!   `session` cookie, on `/watch/keynote`; `hyper`, a minimal hyper server (this binary,
//!   re-executed) answering a 302 of the same size; `nginx`, nginx `return 302` of the same
//!   size with its access log on (`buffer=64k`), when nginx is installed.
//! - `miss` group: `miss`, every request a video no one asked for before (a copy of the
//!   shipped config with 40,000 extra aliases and 20,000 more for the unmeasured warm-up, a
//!   fresh process per round), so every measured request signs; `sign`, a bare hyper server
//!   (this binary, re-executed) that signs an RS256 token per request with a key parsed once:
//!   the ceiling for `miss`. The two take turns at going first, round by round.
//! - `https` group: the gateway (the shipped config plus a `tls` block) against nginx
//!   (`ssl_protocols TLSv1.2 TLSv1.3`), both with one ECDSA P-256 certificate made at run
//!   time. `https` / `https nginx`: keep-alive hits over TLS 1.3 (wrk). `tls1.x full` and
//!   `tls1.x resumed`: every request a new connection (`Connection: close`), from a rustls
//!   client generator (this binary, re-executed) with session resumption off or on; req/s is
//!   connections/s there and the CPU columns are per connection. wrk is not used for these:
//!   with `Connection: close` it resumes its sessions, so it never measures full handshakes.
//!   The generator skips certificate and signature verification and exchanges keys with
//!   X25519, so it spends less per handshake than the server it measures.
//! - `proxy` group: `streamgate emulate` as its own process is the origin; the gateway (the
//!   shipped config with `stream.origin` pointing at it and the public rule in `mode: proxy`,
//!   `downloadable`), nginx `proxy_pass` with a token minted once (buffering on and off), a
//!   minimal hyper-util proxy (this binary, re-executed) and the emulator directly (the
//!   ceiling) each serve `downloads/default.mp4` (4 MiB) and `manifest/seg_360p_0.ts`
//!   (196,648 bytes: the emulator's segment nearest 200–300 KB; its 720p ones are 327,684)
//!   of the video `large`, added to the config copies with the emulator's
//!   `SYNTHETIC_VIDEO_UID`: the one video whose files are large synthetic bodies (the others
//!   play a real clip of a few hundred KB). The CPU column is the proxy's own, not the
//!   emulator's.
//!
//! Run: `cargo bench --bench outside` (needs wrk: `apt-get install -y wrk`; nginx optional;
//! the `https` group's nginx rows need nginx built with SSL, as distributions ship it).
//! Environment:
//! - `OUTSIDE_SECONDS`: length of each measurement, default 5;
//! - `OUTSIDE_ROUNDS`: rounds, default 3; the table shows each row's median round, and each
//!   ratio twice: from the two rows' median rounds, and as the median of the ratios taken
//!   within each round (a target counts as met only when both meet it);
//! - `OUTSIDE_CONNECTIONS`: wrk connections and handshake generator tasks, default 64;
//! - `OUTSIDE_WARM_SECONDS`: an unmeasured wrk run of the same load before each plain-HTTP
//!   row (the misses' on videos of their own), default 1 (0 turns it off);
//! - `OUTSIDE_ONLY`: a comma list of groups to run (`hit`, `miss`, `https`, `proxy`),
//!   default all.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const MISS_VIDEOS: usize = 40_000;
/// Videos `w0` … for the misses' unmeasured warm-up (a second of it is about 4,000).
const MISS_WARM_VIDEOS: usize = 20_000;
/// The proxied files, below `/watch/large/` (gateway, nginx, hyper) or the token (emulator).
const DOWNLOAD_PATH: &str = "downloads/default.mp4";
const SEGMENT_PATH: &str = "manifest/seg_360p_0.ts";
/// The public video the proxy group fetches: the emulator's large-body video.
const PROXY_VIDEO: &str = "large";

/// The servers of the hit group, each started, measured and stopped in turn.
#[derive(Clone, Copy)]
enum HitStep {
    /// The shipped config: `hit`, `hit-basic` and `hit-jwt` on one process.
    Shipped,
    NoTrail,
    NoAccessLog,
    TextLog,
    Minimal,
    Nginx,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // Re-executed as one of the reference servers or the handshake generator.
    match args.get(1).map(String::as_str) {
        Some("--serve-minimal") => return reference::minimal(&args[2], &args[3]),
        Some("--serve-signing") => return reference::signing(&args[2], &args[3], &args[4]),
        Some("--serve-proxy") => return reference::proxy(&args[2], &args[3]),
        Some("--tls-connect") => return handshakes::run(&args[2..]),
        _ => {}
    }
    if Command::new("wrk").arg("--version").output().is_err() {
        eprintln!("wrk is not installed: apt-get install -y wrk");
        std::process::exit(2);
    }
    let groups = Groups::from_env();
    let seconds: u64 = env_or("OUTSIDE_SECONDS", 5);
    let rounds: usize = env_or("OUTSIDE_ROUNDS", 3);
    let connections: usize = env_or("OUTSIDE_CONNECTIONS", 64);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let work = tempfile::tempdir().expect("a temporary directory");
    let bench = Bench {
        seconds,
        warm_seconds: env_or("OUTSIDE_WARM_SECONDS", 1),
        connections,
        work: work.path().to_path_buf(),
        root,
    };
    bench.prepare();
    let nginx = Command::new("nginx").arg("-v").output().is_ok();
    if !nginx {
        eprintln!("nginx is not installed (apt-get install -y nginx): its rows are skipped");
    }
    // The reference servers answer with a Location of the gateway's size.
    let location = (groups.hit || groups.https).then(|| {
        let gateway = bench.gateway("config.yaml", &bench.work.join("config.yaml"));
        gateway.location("/watch/welcome")
    });
    let tls_config = groups.https.then(|| bench.tls_config());
    let origin = groups.proxy.then(|| bench.origin());

    let mut results: Vec<(&str, Vec<Measure>)> = Vec::new();
    let mut record = |name: &'static str, measure: Measure| {
        eprintln!("  {name:<22} {measure}");
        match results.iter_mut().find(|(n, _)| *n == name) {
            Some((_, all)) => all.push(measure),
            None => results.push((name, vec![measure])),
        }
    };
    for round in 1..=rounds {
        eprintln!("round {round}/{rounds}");
        if let (true, Some(location)) = (groups.hit, &location) {
            // The servers in an order rotated each round, so that none is always measured
            // first (right after the round before's last group) or last.
            let mut steps = vec![
                HitStep::Shipped,
                HitStep::NoTrail,
                HitStep::NoAccessLog,
                HitStep::TextLog,
                HitStep::Minimal,
            ];
            if nginx {
                steps.push(HitStep::Nginx);
            }
            let turn = (round - 1) % steps.len();
            steps.rotate_left(turn);
            for step in steps {
                match step {
                    HitStep::Shipped => {
                        let gateway = bench.gateway("config.yaml", &bench.work.join("config.yaml"));
                        gateway.location("/watch/welcome"); // signs the one token the hits reuse
                        record("hit", gateway.wrk("/watch/welcome", &[], None));
                        record(
                            "hit-basic",
                            gateway.wrk("/watch/keynote", &[&basic_header()], None),
                        );
                        record(
                            "hit-jwt",
                            gateway.wrk("/watch/keynote", &[&jwt_cookie(&bench.root)], None),
                        );
                    }
                    HitStep::NoTrail => {
                        let untrailed =
                            bench.gateway("no-trail.yaml", &bench.work.join("no-trail.yaml"));
                        untrailed.location("/watch/welcome");
                        record("hit no trail", untrailed.wrk("/watch/welcome", &[], None));
                    }
                    HitStep::NoAccessLog => {
                        let unlogged = bench
                            .gateway("no-access-log.yaml", &bench.work.join("no-access-log.yaml"));
                        unlogged.location("/watch/welcome");
                        record(
                            "hit no access log",
                            unlogged.wrk("/watch/welcome", &[], None),
                        );
                    }
                    HitStep::TextLog => {
                        let text = bench.gateway_logging(
                            "text.yaml",
                            &bench.work.join("config.yaml"),
                            "text",
                        );
                        text.location("/watch/welcome");
                        record("hit text log", text.wrk("/watch/welcome", &[], None));
                    }
                    HitStep::Minimal => {
                        let minimal = bench.reference("--serve-minimal", &[location]);
                        record("hyper", minimal.wrk("/watch/welcome", &[], None));
                    }
                    HitStep::Nginx => {
                        let nginx = bench.nginx_redirect(location, None);
                        record("nginx", nginx.wrk("/watch/welcome", &[], None));
                    }
                }
            }
        }
        if groups.miss {
            // The gateway first in odd rounds and the bare signer first in even ones, so that
            // neither is always the one measured right after the hit group.
            let mut pair = [true, false];
            if round % 2 == 0 {
                pair.reverse();
            }
            for gateway_turn in pair {
                if gateway_turn {
                    let misses = bench.miss_config();
                    let gateway = bench.gateway("miss.yaml", &misses);
                    record("miss", gateway.wrk("/", &[], Some(MISS_SCRIPT)));
                } else {
                    let key = bench.work.join(".streamgate/dev-signing-key.json");
                    let signing =
                        bench.reference("--serve-signing", &[&key.display().to_string(), "x"]);
                    record("sign", signing.wrk("/", &[], Some(MISS_SCRIPT)));
                }
            }
        }
        if let (Some(tls_config), Some(location)) = (&tls_config, &location) {
            let gateway = bench.gateway("tls.yaml", tls_config).https();
            record("https", gateway.wrk("/watch/welcome", &[], None));
            for (name, version, resume) in HANDSHAKE_ROWS {
                record(name, gateway.handshakes(version, resume, "/watch/welcome"));
            }
            drop(gateway);
            if nginx {
                let tls = Some(bench.work.as_path());
                let nginx = bench.nginx_redirect(location, tls).https();
                record("https nginx", nginx.wrk("/watch/welcome", &[], None));
                for (name, version, resume) in HANDSHAKE_ROWS {
                    let name = nginx_row(name);
                    record(name, nginx.handshakes(version, resume, "/watch/welcome"));
                }
                drop(nginx);
            }
        }
        if let Some(origin) = &origin {
            for (file, rows) in [
                (DOWNLOAD_PATH, &PROXY_MP4_ROWS),
                (SEGMENT_PATH, &PROXY_SEG_ROWS),
            ] {
                let path = format!("/watch/{PROXY_VIDEO}/{file}");
                let [
                    gateway_row,
                    nginx_buffered_row,
                    nginx_streaming_row,
                    hyper_row,
                    direct_row,
                ] = *rows;
                let gateway = bench.gateway("proxy.yaml", &origin.config);
                record(gateway_row, gateway.wrk(&path, &[], None));
                drop(gateway);
                if nginx {
                    let nginx = bench.nginx_proxy(origin, true);
                    record(nginx_buffered_row, nginx.wrk(&path, &[], None));
                    drop(nginx);
                    let nginx = bench.nginx_proxy(origin, false);
                    record(nginx_streaming_row, nginx.wrk(&path, &[], None));
                    drop(nginx);
                }
                let upstream = format!("{}/{}", origin.emulator.origin(), origin.token);
                let hyper = bench.reference("--serve-proxy", &[&upstream]);
                record(hyper_row, hyper.wrk(&path, &[], None));
                drop(hyper);
                let direct = format!("/{}/{file}", origin.token);
                record(direct_row, origin.emulator.wrk(&direct, &[], None));
            }
        }
    }
    drop(origin);
    print_table(&results, seconds, rounds, connections);
}

/// The handshake rows: name, TLS version, resumption.
const HANDSHAKE_ROWS: [(&str, &str, bool); 4] = [
    ("tls1.3 full", "1.3", false),
    ("tls1.3 resumed", "1.3", true),
    ("tls1.2 full", "1.2", false),
    ("tls1.2 resumed", "1.2", true),
];

fn nginx_row(gateway_row: &str) -> &'static str {
    match gateway_row {
        "tls1.3 full" => "tls1.3 full nginx",
        "tls1.3 resumed" => "tls1.3 resumed nginx",
        "tls1.2 full" => "tls1.2 full nginx",
        _ => "tls1.2 resumed nginx",
    }
}

/// Proxy rows per file: gateway, nginx buffering, nginx streaming, hyper-util, emulator.
const PROXY_MP4_ROWS: [&str; 5] = [
    "proxy mp4",
    "proxy mp4 nginx buf",
    "proxy mp4 nginx nobuf",
    "proxy mp4 hyper",
    "proxy mp4 direct",
];
const PROXY_SEG_ROWS: [&str; 5] = [
    "proxy seg",
    "proxy seg nginx buf",
    "proxy seg nginx nobuf",
    "proxy seg hyper",
    "proxy seg direct",
];

/// Which groups of scenarios run (`OUTSIDE_ONLY`).
struct Groups {
    hit: bool,
    miss: bool,
    https: bool,
    proxy: bool,
}

impl Groups {
    fn from_env() -> Groups {
        let Ok(only) = std::env::var("OUTSIDE_ONLY") else {
            return Groups {
                hit: true,
                miss: true,
                https: true,
                proxy: true,
            };
        };
        let names: Vec<&str> = only.split(',').map(str::trim).collect();
        if let Some(unknown) = names
            .iter()
            .find(|n| !["hit", "miss", "https", "proxy"].contains(n))
        {
            eprintln!("OUTSIDE_ONLY: unknown group `{unknown}` (hit, miss, https, proxy)");
            std::process::exit(2);
        }
        Groups {
            hit: names.contains(&"hit"),
            miss: names.contains(&"miss"),
            https: names.contains(&"https"),
            proxy: names.contains(&"proxy"),
        }
    }
}

// === the measurements ===

/// One run of a load generator against one server.
#[derive(Clone, Copy, Debug, Default)]
struct Measure {
    /// Connections/s for the handshake rows.
    requests_per_sec: f64,
    /// Response bytes (headers included) per second, in 10^6 bytes.
    megabytes_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    cpu_us_per_request: f64,
    /// The load generator's CPU per request.
    client_cpu_us_per_request: f64,
    /// The server's CPU time over the run's wall time: 1.0 is one core kept busy.
    server_cores: f64,
    errors: u64,
    /// For the handshake rows: the share of connections that resumed a session.
    resumed: Option<f64>,
    /// The share of the machine's CPU time the hypervisor gave to others during the run
    /// (steal, from `/proc/stat`): what a noisy neighbour took from this round.
    steal: f64,
}

impl std::fmt::Display for Measure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:>8.0} req/s  {:.1} MB/s  p50 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  \
             CPU {:.1} µs/req (client {:.1}, server {:.2} cores)  steal {:.0} %",
            self.requests_per_sec,
            self.megabytes_per_sec,
            self.p50_ms,
            self.p99_ms,
            self.p999_ms,
            self.cpu_us_per_request,
            self.client_cpu_us_per_request,
            self.server_cores,
            self.steal * 100.0,
        )?;
        if let Some(resumed) = self.resumed {
            write!(f, "  resumed {:.0} %", resumed * 100.0)?;
        }
        if self.errors > 0 {
            write!(f, "  ERRORS {}", self.errors)?;
        }
        Ok(())
    }
}

/// Reports what wrk's own summary lacks: p99.9, errors as one number, bytes read.
const DONE_SCRIPT: &str = r#"
done = function(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.status + summary.errors.timeout
  io.write(string.format("BENCH %d %.0f %.0f %.0f %d %d\n", summary.requests,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), errors,
    summary.bytes))
end
"#;

/// Every request a new video: `/watch/m<n>`, the threads taking alternate numbers. Given an
/// argument (`-- w`), the videos are named by it instead (`/watch/w<n>`): the unmeasured
/// warm-up asks for videos of its own, so that every measured request is still a first one.
const MISS_SCRIPT: &str = r#"
local threads = 0
setup = function(thread)
  thread:set("id", threads)
  threads = threads + 1
end
init = function(args)
  n = 0
  prefix = args[1] or "m"
end
request = function()
  n = n + 1
  return wrk.format(nil, "/watch/" .. prefix .. (n * 2 + id))
end
"#;

struct Bench {
    seconds: u64,
    /// The unmeasured load before each plain-HTTP row (`OUTSIDE_WARM_SECONDS`).
    warm_seconds: u64,
    connections: usize,
    /// A scratch directory: configs, keys, certificates, logs.
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
    scheme: &'static str,
}

/// The emulator as an origin, the gateway config that proxies to it, and a token for it.
struct Origin<'b> {
    emulator: Server<'b>,
    config: PathBuf,
    /// Minted once (`streamgate sign large --downloadable`), for nginx and the hyper proxy.
    token: String,
}

impl Bench {
    /// The files every config copy names (the demo issuer's secret), and `config.yaml`: the
    /// shipped config as it is but for its in-process emulator's fixed port.
    fn prepare(&self) {
        std::fs::write(self.work.join("config.yaml"), self.shipped_config()).unwrap();
        std::fs::write(
            self.work.join("no-trail.yaml"),
            replace_section(&self.shipped_config(), "audit_trail:", ""),
        )
        .unwrap();
        std::fs::write(
            self.work.join("no-access-log.yaml"),
            format!("{}log:\n  access: false\n", self.shipped_config()),
        )
        .unwrap();
        let demo = self.work.join("demo");
        std::fs::create_dir_all(&demo).unwrap();
        for file in ["idp-hs256.secret", "cloudflare-api-token"] {
            std::fs::copy(self.root.join("demo").join(file), demo.join(file)).unwrap();
        }
    }

    /// `streamgate serve` on `config` (copied into the scratch directory as `name`, beside the
    /// demo secret it names), on a free port, the access log on and written to a file.
    fn gateway(&self, name: &str, config: &Path) -> Server<'_> {
        self.gateway_logging(name, config, "json")
    }

    /// [`Bench::gateway`] with its log in `format` (`json` or `text`).
    fn gateway_logging(&self, name: &str, config: &Path, format: &str) -> Server<'_> {
        let path = self.work.join(name);
        if config != path {
            std::fs::copy(config, &path).unwrap();
        }
        let port = free_port();
        let log_path = self.work.join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_streamgate"))
            .current_dir(&self.work)
            .args([
                "--config",
                name,
                "--log-format",
                format,
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
        self.serving(vec![child], None, port, Some(&log_path))
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
        self.serving(vec![child], None, port, None)
    }

    /// nginx answering `return 302 <location>` with its access log on, buffered; over HTTPS
    /// with the certificate in `tls` (a directory holding `tls-cert.pem`, `tls-key.pem`).
    fn nginx_redirect(&self, location: &str, tls: Option<&Path>) -> Server<'_> {
        let locations = format!(
            "location / {{ add_header Cache-Control \"private, no-store\" always; \
             return 302 {location}; }}"
        );
        self.nginx(tls, "", &locations)
    }

    /// nginx `proxy_pass` to the emulator (keep-alive upstream connections), each
    /// `/watch/large/<file>` fetched as `/<token>/<file>`.
    fn nginx_proxy(&self, origin: &Origin<'_>, buffering: bool) -> Server<'_> {
        let upstream = format!(
            "upstream emulator {{ server {}; keepalive 64; }}",
            origin.emulator.addr
        );
        let locations = format!(
            "location /watch/{PROXY_VIDEO}/ {{
      rewrite ^/watch/{PROXY_VIDEO}/(.*)$ /{token}/$1 break;
      proxy_pass http://emulator;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
      proxy_buffering {buffering};
    }}",
            token = origin.token,
            buffering = if buffering { "on" } else { "off" },
        );
        self.nginx(None, &upstream, &locations)
    }

    /// nginx with its access log on (`buffer=64k`), serving `locations`.
    fn nginx(&self, tls: Option<&Path>, http_extra: &str, locations: &str) -> Server<'_> {
        let port = free_port();
        let dir = self.work.join("nginx");
        // A fresh directory per start: the temporary files of a buffering proxy go here too.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (ssl, certificate) = match tls {
            Some(files) => (
                " ssl",
                format!(
                    "ssl_certificate {cert}; ssl_certificate_key {key};
    ssl_protocols TLSv1.2 TLSv1.3;",
                    cert = files.join("tls-cert.pem").display(),
                    key = files.join("tls-key.pem").display(),
                ),
            ),
            None => ("", String::new()),
        };
        // As root, nginx's workers run as `nobody`, who cannot enter the scratch directory
        // where a buffering proxy writes its temporary files.
        let user = if running_as_root() { "user root;" } else { "" };
        let conf = format!(
            "daemon off; master_process on; worker_processes auto; pid {dir}/nginx.pid; {user}
error_log {dir}/error.log;
events {{ worker_connections 4096; }}
http {{
  access_log {dir}/access.log combined buffer=64k;
  client_body_temp_path {dir}/client_body; proxy_temp_path {dir}/proxy_temp;
  fastcgi_temp_path {dir}/fastcgi; uwsgi_temp_path {dir}/uwsgi; scgi_temp_path {dir}/scgi;
  {http_extra}
  server {{
    listen 127.0.0.1:{port}{ssl};
    {certificate}
    {locations}
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
        let log = dir.join("error.log");
        self.serving(vec![child], Some(dir.join("nginx.pid")), port, Some(&log))
    }

    /// Wait (at most 30 s) until `port` accepts connections; if the server exits first, panic
    /// with the end of its `log`.
    fn serving(
        &self,
        children: Vec<Child>,
        pid_file: Option<PathBuf>,
        port: u16,
        log: Option<&Path>,
    ) -> Server<'_> {
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut server = Server {
            bench: self,
            pids: children.iter().map(Child::id).collect(),
            children,
            addr,
            scheme: "http",
        };
        let started = Instant::now();
        while TcpStream::connect(addr).is_err() {
            if let Ok(Some(status)) = server.children[0].try_wait() {
                let text = log
                    .and_then(|log| std::fs::read_to_string(log).ok())
                    .unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let tail = lines[lines.len().saturating_sub(20)..].join("\n");
                panic!("the server for {addr} exited ({status}):\n{tail}");
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "server on {addr} did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        if pid_file.is_some() {
            // nginx's workers are children of the master.
            let workers = children_of(server.pids[0]);
            server.pids.extend(workers);
        }
        server
    }

    /// The shipped config with `MISS_VIDEOS` more public videos, `m0` … `m<N-1>`.
    fn miss_config(&self) -> PathBuf {
        let path = self.work.join("miss.yaml");
        if path.exists() {
            return path;
        }
        let shipped = self.shipped_config();
        let mut videos = String::with_capacity((MISS_VIDEOS + MISS_WARM_VIDEOS) * 64);
        for n in 0..MISS_VIDEOS {
            let _ = writeln!(
                videos,
                "  m{n}:\n    uid: {:032x}\n    tags: [public]",
                0xabcd_0000_0000_0000_0000_0000_0000_0000_u128 + n as u128
            );
        }
        for n in 0..MISS_WARM_VIDEOS {
            let _ = writeln!(
                videos,
                "  w{n}:\n    uid: {:032x}\n    tags: [public]",
                0xabce_0000_0000_0000_0000_0000_0000_0000_u128 + n as u128
            );
        }
        let config = replace_once(&shipped, "videos:\n", &format!("videos:\n{videos}"));
        std::fs::write(&path, config).unwrap();
        path
    }

    /// The shipped config serving HTTPS with a self-signed ECDSA P-256 certificate for
    /// `localhost` and 127.0.0.1, made now (`tls-cert.pem`, `tls-key.pem`, which nginx uses too).
    fn tls_config(&self) -> PathBuf {
        let certified =
            rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
                .expect("a self-signed certificate");
        std::fs::write(self.work.join("tls-cert.pem"), certified.cert.pem()).unwrap();
        std::fs::write(
            self.work.join("tls-key.pem"),
            certified.signing_key.serialize_pem(),
        )
        .unwrap();
        let config = format!(
            "{}\ntls:\n  cert: tls-cert.pem\n  key: tls-key.pem\n",
            self.shipped_config()
        );
        let path = self.work.join("tls.yaml");
        std::fs::write(&path, config).unwrap();
        path
    }

    /// `streamgate emulate` on the shipped config plus the public large-body video
    /// [`PROXY_VIDEO`] as its own process (its signing key made here if missing), a token
    /// for that video that may download, and a gateway config that proxies the public videos
    /// from this emulator.
    fn origin(&self) -> Origin<'_> {
        let large_video = format!(
            "videos:\n  {PROXY_VIDEO}:\n    uid: {}\n    tags: [public]\n",
            streamgate::emulator::SYNTHETIC_VIDEO_UID
        );
        let with_large_video = replace_once(&self.shipped_config(), "videos:\n", &large_video);
        let emulator_config = self.work.join("emulator.yaml");
        std::fs::write(&emulator_config, &with_large_video).unwrap();
        let signed = Command::new(env!("CARGO_BIN_EXE_streamgate"))
            .current_dir(&self.work)
            .args([
                "--config",
                "emulator.yaml",
                "sign",
                PROXY_VIDEO,
                "--downloadable",
            ])
            .stderr(Stdio::inherit())
            .output()
            .expect("streamgate sign runs");
        assert!(signed.status.success(), "streamgate sign failed");
        let token = String::from_utf8_lossy(&signed.stdout)
            .lines()
            .next()
            .expect("a token")
            .trim()
            .to_string();

        let port = free_port();
        let log_path = self.work.join("emulator.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_streamgate"))
            .current_dir(&self.work)
            .args(["--config", "emulator.yaml", "emulate", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("streamgate emulate starts");
        let emulator = self.serving(vec![child], None, port, Some(&log_path));

        let config = replace_section(
            &with_large_video,
            "stream:",
            &format!("stream:\n  origin: {}\n", emulator.origin()),
        );
        // The key exists now; a generated key is refused without the in-process emulator.
        let config = replace_once(&config, "    generate_if_missing: true\n", "");
        let public_rule =
            "  - name: public videos\n    videos: [\"tag:public\"]\n    subjects: [anyone]\n";
        let config = replace_once(
            &config,
            public_rule,
            &format!("{public_rule}    mode: proxy\n    downloadable: true\n"),
        );
        let path = self.work.join("proxy.yaml");
        std::fs::write(&path, config).unwrap();
        Origin {
            emulator,
            config: path,
            token,
        }
    }

    /// The shipped config, its in-process emulator on a free port (so that this bench never
    /// waits for, or takes, 8081).
    fn shipped_config(&self) -> String {
        let shipped = std::fs::read_to_string(self.root.join("config.yaml")).unwrap();
        replace_once(
            &shipped,
            "    listen: 127.0.0.1:8081\n",
            "    listen: 127.0.0.1:0\n",
        )
    }
}

/// `text` with the first `from` replaced; panics if it is not there (the shipped config changed).
fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "the shipped config holds {from:?}");
    text.replacen(from, to, 1)
}

/// `text` with the top-level section that starts with the line `header` (and runs over the
/// indented lines below it) replaced by `section`.
fn replace_section(text: &str, header: &str, section: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut lines = text.split_inclusive('\n').peekable();
    let mut found = false;
    while let Some(line) = lines.next() {
        if !found && line.trim_end() == header {
            found = true;
            out.push_str(section);
            while lines.next_if(|l| l.starts_with("  ")).is_some() {}
        } else {
            out.push_str(line);
        }
    }
    assert!(found, "the shipped config has a `{header}` section");
    out
}

impl Server<'_> {
    /// The same server, spoken to over TLS.
    fn https(mut self) -> Self {
        self.scheme = "https";
        self
    }

    fn origin(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    fn cpu_ticks(&self) -> u64 {
        self.pids.iter().map(|pid| cpu_ticks(*pid)).sum()
    }

    /// Run `generator` to its end; the server's CPU ticks, the generator's, the wall time and
    /// the machine's steal share.
    fn measured(&self, generator: &mut Command) -> (Output, Ticks) {
        let before = self.cpu_ticks();
        let children_before = children_cpu_ticks();
        let machine_before = machine_ticks();
        let started = Instant::now();
        let output = generator.output().expect("the load generator runs");
        let wall = started.elapsed();
        let machine = machine_ticks().since(machine_before);
        let ticks = Ticks {
            server: self.cpu_ticks() - before,
            client: children_cpu_ticks() - children_before,
            wall,
            steal: machine.steal as f64 / machine.total.max(1) as f64,
        };
        (output, ticks)
    }

    /// One request to `path` with `headers` before a plain-HTTP round without a script, so
    /// that a verification the first request pays for (an argon2 check for Basic, while every
    /// connection waits for it) is not counted as the steady state's latency.
    fn warm_up(&self, path: &str, headers: &[&str]) {
        use std::io::Read as _;
        if self.scheme != "http" {
            return;
        }
        let Ok(mut stream) = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5)) else {
            return;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let mut request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            self.addr
        );
        for header in headers {
            request.push_str(header);
            request.push_str("\r\n");
        }
        request.push_str("\r\n");
        if stream.write_all(request.as_bytes()).is_ok() {
            let mut answer = Vec::new();
            let _ = stream.take(1 << 20).read_to_end(&mut answer);
        }
    }

    /// One wrk run of `OUTSIDE_SECONDS` on `path`, with `headers`, and `script` if given.
    fn wrk(&self, path: &str, headers: &[&str], script: Option<&str>) -> Measure {
        if script.is_none() {
            self.warm_up(path, headers);
        }
        // A second of the same load, not measured: a process's first second under load
        // (its threads, buffers and caches growing) is not its steady state, and every
        // server's first row paid it while the rows after it did not. The misses' warm-up
        // asks for videos of its own (`w<n>`), so the measured requests all still sign.
        if self.bench.warm_seconds > 0 {
            match script {
                None => {
                    let _ = self.run_wrk(path, headers, self.bench.warm_seconds);
                }
                Some(script) => self.run_wrk_script(path, script, "w", self.bench.warm_seconds),
            }
        }
        self.run_wrk_measured(path, headers, script)
    }

    /// wrk on `path` with `script` given `argument`, for `seconds`, unmeasured.
    fn run_wrk_script(&self, path: &str, script: &str, argument: &str, seconds: u64) {
        let script_path = self.bench.work.join("warm.lua");
        std::fs::write(&script_path, script).unwrap();
        let _ = self
            .wrk_command(path, &[], seconds)
            .arg("-s")
            .arg(&script_path)
            .arg("--")
            .arg(argument)
            .output()
            .expect("wrk runs");
    }

    /// wrk on `path` for `seconds`, unmeasured.
    fn run_wrk(&self, path: &str, headers: &[&str], seconds: u64) -> Output {
        self.wrk_command(path, headers, seconds)
            .output()
            .expect("wrk runs")
    }

    /// `wrk -t2 -c<connections> -d<seconds>s` on `path` with `headers`.
    fn wrk_command(&self, path: &str, headers: &[&str], seconds: u64) -> Command {
        let mut command = Command::new("wrk");
        command
            .arg("-t2")
            .arg(format!("-c{}", self.bench.connections))
            .arg(format!("-d{seconds}s"));
        for header in headers {
            command.arg("-H").arg(header);
        }
        command.arg(format!("{}{path}", self.origin()));
        command
    }

    /// The measured wrk run of [`Server::wrk`].
    fn run_wrk_measured(&self, path: &str, headers: &[&str], script: Option<&str>) -> Measure {
        let script_path = self.bench.work.join("bench.lua");
        let mut file = std::fs::File::create(&script_path).unwrap();
        file.write_all(script.unwrap_or("").as_bytes()).unwrap();
        file.write_all(DONE_SCRIPT.as_bytes()).unwrap();
        let mut command = self.wrk_command(path, headers, self.bench.seconds);
        command.arg("-s").arg(&script_path);
        let (output, ticks) = self.measured(&mut command);
        let text = String::from_utf8_lossy(&output.stdout);
        let line = text
            .lines()
            .find_map(|line| line.strip_prefix("BENCH "))
            .unwrap_or_else(|| panic!("no summary from wrk:\n{text}"));
        let fields: Vec<f64> = line
            .split_whitespace()
            .map(|f| f.parse().unwrap())
            .collect();
        let non_3xx = text
            .lines()
            .find_map(|line| line.trim().strip_prefix("Non-2xx or 3xx responses: "))
            .map_or(0, |n| n.trim().parse::<u64>().unwrap_or(0));
        self.measure(
            [fields[0], fields[5], fields[1], fields[2], fields[3]],
            fields[4] as u64 + non_3xx,
            ticks,
            None,
        )
    }

    /// New TLS connections for `OUTSIDE_SECONDS`, each one `GET path` with `Connection: close`,
    /// from the handshake generator (this binary, re-executed).
    fn handshakes(&self, version: &str, resume: bool, path: &str) -> Measure {
        let mut command = Command::new(std::env::current_exe().unwrap());
        command
            .arg("--tls-connect")
            .arg(self.addr.to_string())
            .arg(version)
            .arg(if resume { "resumed" } else { "full" })
            .arg(self.bench.seconds.to_string())
            .arg(self.bench.connections.to_string())
            .arg(path);
        let (output, ticks) = self.measured(&mut command);
        let text = String::from_utf8_lossy(&output.stdout);
        let line = text
            .lines()
            .find_map(|line| line.strip_prefix("HANDSHAKES "))
            .unwrap_or_else(|| panic!("no summary from the handshake generator:\n{text}"));
        // connections, resumed, p50 µs, p99 µs, p99.9 µs, errors, bytes
        let fields: Vec<f64> = line
            .split_whitespace()
            .map(|f| f.parse().unwrap())
            .collect();
        self.measure(
            [fields[0], fields[6], fields[2], fields[3], fields[4]],
            fields[5] as u64,
            ticks,
            Some(fields[1] / fields[0].max(1.0)),
        )
    }

    /// A measure from `[requests, bytes, p50 µs, p99 µs, p99.9 µs]` and the run's ticks.
    fn measure(
        &self,
        [requests, bytes, p50_us, p99_us, p999_us]: [f64; 5],
        errors: u64,
        Ticks {
            server: server_ticks,
            client: client_ticks,
            wall,
            steal,
        }: Ticks,
        resumed: Option<f64>,
    ) -> Measure {
        let seconds = self.bench.seconds as f64;
        let requests = requests.max(1.0);
        let ticks_per_sec = clock_ticks_per_second();
        let cpu_us = |ticks: u64| ticks as f64 / ticks_per_sec * 1e6 / requests;
        Measure {
            requests_per_sec: requests / seconds,
            megabytes_per_sec: bytes / seconds / 1e6,
            p50_ms: p50_us / 1000.0,
            p99_ms: p99_us / 1000.0,
            p999_ms: p999_us / 1000.0,
            cpu_us_per_request: cpu_us(server_ticks),
            client_cpu_us_per_request: cpu_us(client_ticks),
            server_cores: server_ticks as f64 / ticks_per_sec / wall.as_secs_f64(),
            errors,
            resumed,
            steal,
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

/// What one measured run cost: the server's and the load generator's CPU ticks, its wall
/// time, and the machine's steal share over it.
struct Ticks {
    server: u64,
    client: u64,
    wall: Duration,
    steal: f64,
}

/// The machine's CPU time from the `cpu` line of `/proc/stat`: all of it, and the steal.
#[derive(Clone, Copy)]
struct MachineTicks {
    total: u64,
    steal: u64,
}

impl MachineTicks {
    fn since(self, before: MachineTicks) -> MachineTicks {
        MachineTicks {
            total: self.total.saturating_sub(before.total),
            steal: self.steal.saturating_sub(before.steal),
        }
    }
}

/// The machine's ticks now (zeros where `/proc/stat` cannot be read).
fn machine_ticks() -> MachineTicks {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .lines()
        .find_map(|line| line.strip_prefix("cpu "))
        .unwrap_or("")
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal guest guest_nice; guest time is also
    // counted in user, so the total stops at steal.
    MachineTicks {
        total: fields.iter().take(8).sum(),
        steal: fields.get(7).copied().unwrap_or(0),
    }
}

/// Fields of `/proc/<pid>/stat`, numbered as in proc(5), summed.
fn stat_fields_sum(pid: &str, numbers: &[usize]) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3.
    numbers
        .iter()
        .filter_map(|n| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok()))
        .sum()
}

/// utime + stime of `pid`.
fn cpu_ticks(pid: u32) -> u64 {
    stat_fields_sum(&pid.to_string(), &[14, 15])
}

/// cutime + cstime of this process: the CPU of the children it has waited for.
fn children_cpu_ticks() -> u64 {
    stat_fields_sum("self", &[16, 17])
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        == Some("0")
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

/// `Authorization: Basic` for the demo user `bob` of the shipped config: in the `members`
/// group, so that his hits are decided by the same rule as the JWT's (`members`, one token for
/// every viewer) and the ratio to anonymous hits measures authentication alone. (alice is in
/// `staff`, whose rule binds each token to the viewer's address: a token per viewer.)
fn basic_header() -> String {
    use base64::Engine as _;
    let credentials = base64::engine::general_purpose::STANDARD.encode("bob:bob-demo-password");
    format!("Authorization: Basic {credentials}")
}

/// `Cookie: session=<JWT>` from the shipped config's demo issuer, in its `members` group (which
/// the `members` rule names as `group:demo-idp:members`).
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

// === the report ===

/// What a ratio should be.
#[derive(Clone, Copy)]
enum Target {
    AtLeast(f64),
    AtMost(f64),
    /// For information only.
    None,
}

/// A ratio of two rows' medians.
struct Ratio {
    what: &'static str,
    a: &'static str,
    b: &'static str,
    metric: fn(&Measure) -> f64,
    target: Target,
}

/// A ratio of requests (or connections) per second.
const fn rps(what: &'static str, a: &'static str, b: &'static str, target: Target) -> Ratio {
    Ratio {
        what,
        a,
        b,
        metric: |m| m.requests_per_sec,
        target,
    }
}

const RATIOS: &[Ratio] = &[
    Ratio {
        what: "hit CPU / hyper CPU",
        a: "hit",
        b: "hyper",
        metric: |m| m.cpu_us_per_request,
        target: Target::AtMost(1.3),
    },
    rps("hit req/s / nginx", "hit", "nginx", Target::AtLeast(0.9)),
    rps(
        "hit req/s / hit without the access log",
        "hit",
        "hit no access log",
        Target::AtLeast(0.9),
    ),
    rps(
        "hit, text log req/s / hit without the access log",
        "hit text log",
        "hit no access log",
        Target::AtLeast(0.9),
    ),
    rps(
        "hit req/s / hit without the audit trail",
        "hit",
        "hit no trail",
        Target::None,
    ),
    rps("miss req/s / sign", "miss", "sign", Target::AtLeast(0.9)),
    rps(
        "hit-basic req/s / hit",
        "hit-basic",
        "hit",
        Target::AtLeast(0.85),
    ),
    rps(
        "hit-jwt req/s / hit",
        "hit-jwt",
        "hit",
        Target::AtLeast(0.85),
    ),
    rps(
        "https keep-alive req/s / nginx",
        "https",
        "https nginx",
        Target::AtLeast(0.9),
    ),
    rps(
        "tls1.3 full conn/s / nginx",
        "tls1.3 full",
        "tls1.3 full nginx",
        Target::AtLeast(0.9),
    ),
    rps(
        "tls1.3 resumed conn/s / nginx",
        "tls1.3 resumed",
        "tls1.3 resumed nginx",
        Target::AtLeast(0.9),
    ),
    rps(
        "tls1.2 full conn/s / nginx",
        "tls1.2 full",
        "tls1.2 full nginx",
        Target::AtLeast(0.9),
    ),
    rps(
        "tls1.2 resumed conn/s / nginx",
        "tls1.2 resumed",
        "tls1.2 resumed nginx",
        Target::AtLeast(0.9),
    ),
    rps(
        "proxy mp4 req/s / nginx buffering",
        "proxy mp4",
        "proxy mp4 nginx buf",
        Target::AtLeast(1.0),
    ),
    rps(
        "proxy mp4 req/s / nginx streaming",
        "proxy mp4",
        "proxy mp4 nginx nobuf",
        Target::AtLeast(1.0),
    ),
    rps(
        "proxy mp4 req/s / hyper-util proxy",
        "proxy mp4",
        "proxy mp4 hyper",
        Target::AtLeast(0.9),
    ),
    rps(
        "proxy mp4 req/s / emulator direct",
        "proxy mp4",
        "proxy mp4 direct",
        Target::None,
    ),
    rps(
        "proxy seg req/s / nginx buffering",
        "proxy seg",
        "proxy seg nginx buf",
        Target::AtLeast(1.0),
    ),
    rps(
        "proxy seg req/s / nginx streaming",
        "proxy seg",
        "proxy seg nginx nobuf",
        Target::AtLeast(1.0),
    ),
    rps(
        "proxy seg req/s / hyper-util proxy",
        "proxy seg",
        "proxy seg hyper",
        Target::AtLeast(0.9),
    ),
    rps(
        "proxy seg req/s / emulator direct",
        "proxy seg",
        "proxy seg direct",
        Target::None,
    ),
];

fn print_table(results: &[(&str, Vec<Measure>)], seconds: u64, rounds: usize, connections: usize) {
    let median = |name: &str| -> Option<Measure> {
        let (_, all) = results.iter().find(|(n, _)| *n == name)?;
        let mut sorted = all.clone();
        sorted.sort_by(|a, b| a.requests_per_sec.total_cmp(&b.requests_per_sec));
        Some(sorted[sorted.len() / 2])
    };
    println!(
        "\noutside load bench: wrk -t2 -c{connections} (handshake rows: {connections} client \
         tasks, a new connection per request), {seconds} s rounds, {rounds} rounds, median \
         round per row"
    );
    println!(
        "| scenario | req/s | MB/s | p50 ms | p99 ms | p99.9 ms | server CPU µs/req | \
         client CPU µs/req | server cores | steal | resumed |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for (name, _) in results {
        let m = median(name).unwrap();
        let resumed = m
            .resumed
            .map_or(String::new(), |r| format!("{:.0} %", r * 100.0));
        println!(
            "| {name} | {:.0} | {:.1} | {:.2} | {:.2} | {:.2} | {:.1} | {:.1} | {:.2} | {:.0} % | {resumed} |",
            m.requests_per_sec,
            m.megabytes_per_sec,
            m.p50_ms,
            m.p99_ms,
            m.p999_ms,
            m.cpu_us_per_request,
            m.client_cpu_us_per_request,
            m.server_cores,
            m.steal * 100.0,
        );
    }
    // How much of the machine a neighbour took: the ratios below are only as steady as this.
    let mut steals: Vec<f64> = results
        .iter()
        .flat_map(|(_, all)| all)
        .map(|m| m.steal)
        .collect();
    steals.sort_by(f64::total_cmp);
    if let (Some(median), Some(max)) = (steals.get(steals.len() / 2), steals.last()) {
        println!(
            "\nsteal (CPU time the host gave to other guests) over the measured runs: median {:.0} %, \
             highest {:.0} %",
            median * 100.0,
            max * 100.0
        );
    }
    // The same ratio taken within each round (its two rows measured minutes apart at most),
    // then the median of those, and their lowest and highest: a noisy neighbour that slows
    // one round slows both sides, and the spread says how far one round can be trusted.
    let paired = |ratio: &Ratio| -> Option<(f64, f64, f64)> {
        let (_, a) = results.iter().find(|(n, _)| *n == ratio.a)?;
        let (_, b) = results.iter().find(|(n, _)| *n == ratio.b)?;
        let mut values: Vec<f64> = a
            .iter()
            .zip(b)
            .map(|(a, b)| (ratio.metric)(a) / (ratio.metric)(b))
            .collect();
        values.sort_by(f64::total_cmp);
        Some((
            *values.get(values.len() / 2)?,
            *values.first()?,
            *values.last()?,
        ))
    };
    println!(
        "\n| ratio | value | median of the rounds' own | the rounds' own, lowest–highest | \
         CPU µs/req, a vs b | target | |"
    );
    println!("|---|---|---|---|---|---|---|");
    for ratio in RATIOS {
        let (Some(a), Some(b)) = (median(ratio.a), median(ratio.b)) else {
            continue;
        };
        let value = (ratio.metric)(&a) / (ratio.metric)(&b);
        let (per_round, lowest, highest) = paired(ratio).unwrap_or((value, value, value));
        // Met only when both measures meet it.
        let (target, met) = match ratio.target {
            Target::AtLeast(bound) => (
                format!("≥ {bound:.2}"),
                verdict(value >= bound, per_round >= bound),
            ),
            Target::AtMost(bound) => (
                format!("≤ {bound:.2}"),
                verdict(value <= bound, per_round <= bound),
            ),
            Target::None => ("—".to_string(), ""),
        };
        println!(
            "| {} | {value:.2} | {per_round:.2} | {lowest:.2}–{highest:.2} | {:.1} vs {:.1} | \
             {target} | {met} |",
            ratio.what, a.cpu_us_per_request, b.cpu_us_per_request
        );
    }
    // A handshake row measures what it says only if the sessions resumed (or did not).
    for (name, _) in results {
        let Some(resumed) = median(name).and_then(|m| m.resumed) else {
            continue;
        };
        let wants_resumption = name.contains("resumed");
        if wants_resumption && resumed < 0.9 || !wants_resumption && resumed > 0.0 {
            println!(
                "note: `{name}`: {:.0} % of its connections resumed a session",
                resumed * 100.0
            );
        }
    }
    // A reference server's errors (nginx timing out under the buffered 4 MiB proxy, say) are
    // reported; only the gateway's own fail the bench.
    let reference = |name: &str| {
        name == "sign"
            || ["nginx", "hyper", "direct"]
                .iter()
                .any(|r| name.contains(r))
    };
    let errors = |ours: bool| -> u64 {
        results
            .iter()
            .filter(|(name, _)| reference(name) != ours)
            .flat_map(|(_, all)| all)
            .map(|m| m.errors)
            .sum()
    };
    let (failed, reference_failed) = (errors(true), errors(false));
    if reference_failed > 0 {
        println!(
            "note: {reference_failed} requests to the reference servers failed (see ERRORS above)"
        );
    }
    if failed > 0 {
        eprintln!("{failed} requests to the gateway failed or were not answered as expected");
        std::process::exit(1);
    }
}

/// A target is met when the ratio of the median rounds and the median of the rounds' own
/// ratios both meet it.
fn verdict(by_medians: bool, by_rounds: bool) -> &'static str {
    match (by_medians, by_rounds) {
        (true, true) => "met",
        (false, false) => "BELOW",
        _ => "BELOW by one measure",
    }
}

/// The reference servers, each as small as hyper allows.
mod reference {
    use std::convert::Infallible;
    use std::net::SocketAddr;
    use std::sync::Arc;

    use bytes::Bytes;
    use http::{HeaderValue, Request, Response, StatusCode, Uri};
    use http_body_util::combinators::BoxBody;
    use http_body_util::{BodyExt as _, Empty, Full};
    use hyper::body::Incoming;
    use hyper::service::{Service, service_fn};
    use hyper_util::client::legacy::Client;
    use hyper_util::client::legacy::connect::HttpConnector;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto;

    type BoxError = Box<dyn std::error::Error + Send + Sync>;

    /// Serve `service` on `addr` with a worker per core, as the gateway does.
    fn serve_with<S, B>(addr: &str, service: S)
    where
        S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let addr: SocketAddr = addr.parse().unwrap();
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
                let service = service.clone();
                tokio::spawn(async move {
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
    }

    /// Serve a fixed answer per path.
    fn serve<F>(addr: &str, handler: F)
    where
        F: Fn(&str) -> Response<Full<Bytes>> + Send + Sync + 'static,
    {
        let handler = Arc::new(handler);
        serve_with(
            addr,
            service_fn(move |req: Request<Incoming>| {
                let response = handler(req.uri().path());
                async move { Ok::<_, Infallible>(response) }
            }),
        );
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
        // The gateway's answer carries a request id (24 hex digits): the same bytes here, so
        // that the two answers are the same size.
        headers.insert(
            http::header::HeaderName::from_static("x-request-id"),
            HeaderValue::from_static("000000000000000000000000"),
        );
        response
    }

    /// A fixed 302 to `location`.
    pub fn minimal(addr: &str, location: &str) {
        let location = HeaderValue::try_from(location).unwrap();
        serve(addr, move |_| found(location.clone()));
    }

    /// A proxy as small as hyper-util allows: `/watch/<video>/<path>` is fetched as
    /// `<upstream>/<path>` over a pooled keep-alive client and its body streamed back as it
    /// comes, headers and all.
    pub fn proxy(addr: &str, upstream: &str) {
        let upstream: Arc<str> = upstream.trim_end_matches('/').into();
        let client: Client<HttpConnector, Empty<Bytes>> =
            Client::builder(TokioExecutor::new()).build_http();
        serve_with(
            addr,
            service_fn(move |req: Request<Incoming>| {
                let client = client.clone();
                let upstream = Arc::clone(&upstream);
                async move { Ok::<_, Infallible>(forward(&client, &upstream, &req).await) }
            }),
        );
    }

    async fn forward(
        client: &Client<HttpConnector, Empty<Bytes>>,
        upstream: &str,
        req: &Request<Incoming>,
    ) -> Response<BoxBody<Bytes, hyper::Error>> {
        let below_video = req
            .uri()
            .path()
            .strip_prefix("/watch/")
            .and_then(|rest| rest.split_once('/'))
            .map(|(_, path)| path);
        let Some(uri) =
            below_video.and_then(|path| format!("{upstream}/{path}").parse::<Uri>().ok())
        else {
            return status(StatusCode::NOT_FOUND);
        };
        let request = Request::get(uri).body(Empty::new()).unwrap();
        match client.request(request).await {
            Ok(response) => response.map(|body| body.boxed()),
            Err(_) => status(StatusCode::BAD_GATEWAY),
        }
    }

    fn status(code: StatusCode) -> Response<BoxBody<Bytes, hyper::Error>> {
        let body = Empty::new().map_err(|never| match never {}).boxed();
        let mut response = Response::new(body);
        *response.status_mut() = code;
        response
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

/// The handshake generator: tasks that each open TLS connections one after another for a
/// while, each sending one `GET` with `Connection: close` and reading the answer to its end.
/// Each task has its own client configuration (and so its own session cache), as each
/// browser would. Certificates and handshake signatures are not verified and the key exchange
/// is X25519, so the client spends less per handshake than the server.
///
/// Arguments: `ADDR 1.2|1.3 full|resumed SECONDS TASKS PATH`. Prints
/// `HANDSHAKES <connections> <resumed> <p50 µs> <p99 µs> <p99.9 µs> <errors> <bytes>`.
mod handshakes {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::Duration;

    use rustls::client::Resumption;
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::{CryptoProvider, aws_lc_rs};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{ClientConfig, DigitallySignedStruct, HandshakeKind, SignatureScheme};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::time::Instant;
    use tokio_rustls::TlsConnector;

    /// A connection that has not finished by then counts as an error.
    const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
    /// A bound on each task's loop besides the deadline.
    const MAX_CONNECTIONS_PER_TASK: usize = 1_000_000;

    #[derive(Default)]
    struct Tally {
        latencies_us: Vec<u32>,
        resumed: u64,
        errors: u64,
        first_error: Option<String>,
        bytes: u64,
    }

    impl Tally {
        fn error(&mut self, error: String) {
            self.errors += 1;
            self.first_error.get_or_insert(error);
        }
    }

    pub fn run(args: &[String]) {
        let [addr, version, resumption, seconds, tasks, path] = args else {
            panic!("--tls-connect ADDR 1.2|1.3 full|resumed SECONDS TASKS PATH");
        };
        let addr: SocketAddr = addr.parse().unwrap();
        let resume = resumption == "resumed";
        let seconds: u64 = seconds.parse().unwrap();
        let tasks: usize = tasks.parse().unwrap();
        let request: Arc<[u8]> =
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .into_bytes()
                .into();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut total = runtime.block_on(async {
            let deadline = Instant::now() + Duration::from_secs(seconds);
            let mut set = tokio::task::JoinSet::new();
            for _ in 0..tasks {
                let connector = TlsConnector::from(client_config(version, resume));
                let request = Arc::clone(&request);
                set.spawn(connect_until(connector, addr, request, deadline));
            }
            let mut total = Tally::default();
            while let Some(tally) = set.join_next().await {
                let tally = tally.expect("a generator task");
                total.latencies_us.extend(tally.latencies_us);
                total.resumed += tally.resumed;
                total.errors += tally.errors;
                total.first_error = total.first_error.or(tally.first_error);
                total.bytes += tally.bytes;
            }
            total
        });
        if let Some(error) = &total.first_error {
            eprintln!("{} connections failed, the first: {error}", total.errors);
        }
        total.latencies_us.sort_unstable();
        let percentile = |p: f64| -> u32 {
            let n = total.latencies_us.len();
            if n == 0 {
                return 0;
            }
            total.latencies_us[((n as f64 * p / 100.0) as usize).min(n - 1)]
        };
        println!(
            "HANDSHAKES {} {} {} {} {} {} {}",
            total.latencies_us.len(),
            total.resumed,
            percentile(50.0),
            percentile(99.0),
            percentile(99.9),
            total.errors,
            total.bytes
        );
    }

    async fn connect_until(
        connector: TlsConnector,
        addr: SocketAddr,
        request: Arc<[u8]>,
        deadline: Instant,
    ) -> Tally {
        let mut tally = Tally::default();
        for _ in 0..MAX_CONNECTIONS_PER_TASK {
            let started = Instant::now();
            if started >= deadline {
                break;
            }
            let attempt = one_connection(&connector, addr, &request);
            match tokio::time::timeout(CONNECTION_TIMEOUT, attempt).await {
                Ok(Ok((resumed, bytes))) => {
                    let micros = started.elapsed().as_micros();
                    tally
                        .latencies_us
                        .push(micros.try_into().unwrap_or(u32::MAX));
                    tally.resumed += u64::from(resumed);
                    tally.bytes += bytes as u64;
                }
                Ok(Err(error)) => tally.error(error.to_string()),
                Err(_) => tally.error("timed out".to_string()),
            }
        }
        tally
    }

    /// One connection: handshake, request, the answer to its end. `Ok((resumed, bytes))`
    /// for an answered `302`.
    async fn one_connection(
        connector: &TlsConnector,
        addr: SocketAddr,
        request: &[u8],
    ) -> std::io::Result<(bool, usize)> {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let server_name = ServerName::try_from("localhost").unwrap();
        let mut tls = connector.connect(server_name, tcp).await?;
        let resumed = tls.get_ref().1.handshake_kind() == Some(HandshakeKind::Resumed);
        tls.write_all(request).await?;
        let mut answer = Vec::with_capacity(2048);
        match tls.read_to_end(&mut answer).await {
            Ok(_) => {}
            // A server that closes without close_notify after a complete answer.
            Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => {}
            Err(error) => return Err(error),
        }
        if !answer.starts_with(b"HTTP/1.1 302") {
            return Err(std::io::Error::other("not answered with a redirect"));
        }
        Ok((resumed, answer.len()))
    }

    fn client_config(version: &str, resume: bool) -> Arc<ClientConfig> {
        let mut provider = aws_lc_rs::default_provider();
        // The key share is X25519's; P-256 is offered too because OpenSSL serves a P-256
        // certificate over TLS 1.2 only to a client that lists the curve.
        provider.kx_groups = vec![aws_lc_rs::kx_group::X25519, aws_lc_rs::kx_group::SECP256R1];
        let provider = Arc::new(provider);
        let versions: &[&rustls::SupportedProtocolVersion] = match version {
            "1.2" => &[&rustls::version::TLS12],
            _ => &[&rustls::version::TLS13],
        };
        let mut config = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(versions)
            .expect("the provider supports the version")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyServer(provider)))
            .with_no_client_auth();
        config.resumption = if resume {
            Resumption::in_memory_sessions(32)
        } else {
            Resumption::disabled()
        };
        Arc::new(config)
    }

    /// Trusts any server without checking anything: the bench measures the server's side.
    #[derive(Debug)]
    struct AcceptAnyServer(Arc<CryptoProvider>);

    impl ServerCertVerifier for AcceptAnyServer {
        fn verify_server_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp_response: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            _message: &[u8],
            _cert: &CertificateDer<'_>,
            _dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Ok(HandshakeSignatureValid::assertion())
        }

        fn verify_tls13_signature(
            &self,
            _message: &[u8],
            _cert: &CertificateDer<'_>,
            _dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Ok(HandshakeSignatureValid::assertion())
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
}
