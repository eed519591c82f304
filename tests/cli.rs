//! The `streamgate` binary as an operator uses it: check, sign, serve.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use serde_json::json;

fn streamgate() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_streamgate"));
    command.env("RUST_LOG", "warn");
    command
}

fn write_config(dir: &Path, name: &str, yaml: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, yaml).unwrap();
    path.display().to_string()
}

#[test]
fn check_accepts_the_shipped_config() {
    let output = streamgate()
        .args([
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config.yaml"),
            "check",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains(": OK"), "{stdout}");
    assert!(stdout.contains("videos   4"), "{stdout}");
    assert!(
        stdout.contains("metrics  /metrics on 127.0.0.1:9090 only"),
        "{stdout}"
    );
    assert!(stdout.contains("users    2"), "{stdout}");
    assert!(
        stdout.contains("issuer   https://idp.streamgate.example (HS256)"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "embed    demo page on; cross-origin /api/* from no other site; token API on for any account id"
        ),
        "{stdout}"
    );
    assert!(!stdout.contains("warning"), "{stdout}");
}

#[test]
fn check_names_file_line_and_field_for_each_mistake() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "  ttl: 1h\n",
            "  ttl: 1h\n  colour: red\n",
            "unknown field `colour`",
        ),
        ("  ttl: 1h\n", "  ttl: 36h\n", "to 24h (Stream's limit)"),
        (
            "  keynote:\n",
            "  intro:\n    uid: 11111111111111111111111111111111\n  keynote:\n",
            "duplicate entry",
        ),
        (
            "videos: [intro]",
            "videos: [intr0]",
            "rules[0].videos[0]: not a video alias or uid",
        ),
    ];
    for (from, to, expected) in cases {
        let yaml = gateway_config().replacen(from, to, 1);
        let path = write_config(dir.path(), "broken.yaml", &yaml);
        let output = streamgate()
            .args(["--config", &path, "check"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains(&format!("{path}:")),
            "no file:line in {stderr}"
        );
        assert!(
            stderr.contains(expected),
            "expected {expected:?} in {stderr}"
        );
        // The error names the field and what was expected, never the value.
        for value in ["36h", "intr0", "colour: red"] {
            assert!(!stderr.contains(value), "{value:?} echoed in {stderr}");
        }
    }
}

#[test]
fn check_rejects_bad_key_material_without_echoing_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("key.pem"),
        "-----BEGIN RSA PRIVATE KEY-----\nc2VjcmV0\n",
    )
    .unwrap();
    let yaml = gateway_config().replace(
        &fixture_path("test-only-signing-key.pem")
            .display()
            .to_string(),
        "key.pem",
    );
    let path = write_config(dir.path(), "config.yaml", &yaml);
    let output = streamgate()
        .args(["--config", &path, "check"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr.contains("signing_keys[0]"), "{stderr}");
    assert!(!stderr.contains("c2VjcmV0"), "{stderr}");
}

/// A policy with users, groups, a JWT issuer and windows, for `check` and `explain`.
fn policy_config(dir: &Path) -> String {
    std::fs::write(dir.join("idp.secret"), "0123456789abcdef0123456789abcdef\n").unwrap();
    let hash = run_with_stdin(&["hash-password"], "pw-for-tests\n");
    assert!(hash.status.success());
    let hash = String::from_utf8_lossy(&hash.stdout).trim().to_string();
    let rules_and_identity = format!(
        "  - name: premiere
    videos: [keynote]
    subjects: [anyone]
    not_before: 2030-01-01T18:00:00Z
    not_after: 2030-01-01T20:00:00+00:00
  - name: staff
    videos: [\"*\"]
    subjects: [group:staff]
    bind_client_ip: true
    countries:
      block: [KP]
users:
  alice:
    password: {hash}
    groups: [staff]
jwt_issuers:
  - issuer: https://idp.test
    audience: streamgate
    algorithms: [HS256]
    secret:
      file: {secret}
    groups_claim: groups
",
        secret = dir.join("idp.secret").display()
    );
    // The members rule is narrowed so that alice's request reaches the later rules.
    let yaml = gateway_config().replace("subjects: [authenticated]", "subjects: [api_key:ci]")
        + &rules_and_identity;
    write_config(dir, "policy.yaml", &yaml)
}

fn run_with_stdin(args: &[&str], stdin: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = streamgate()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn run(args: &[&str]) -> (bool, String, String) {
    let output = streamgate().args(args).output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn check_warns_about_shadowed_rules_unused_groups_and_unwatchable_videos() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = gateway_config()
        .replace(
            "subjects: [anyone]",
            "subjects: [anyone]\n  - name: late\n    videos: [intro]\n    subjects: [group:nobody]",
        )
        .replacen(
            "  - name: members\n    videos: [\"tag:members\"]",
            "  - name: members\n    videos: [\"tag:none\"]",
            1,
        );
    let path = write_config(dir.path(), "lint.yaml", &yaml);
    let (ok, stdout, stderr) = run(&["--config", &path, "check"]);
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stdout.contains("rule `late` can never match: rule `public` above it"),
        "{stdout}"
    );
    assert!(
        stdout.contains("rules[2].subjects[0]: no user or API key is in this group"),
        "{stdout}"
    );
    assert!(
        stdout.contains("rules[3].videos[0]: no video has this tag"),
        "{stdout}"
    );
    assert!(
        stdout.contains("video `keynote` is mentioned by no allow rule"),
        "{stdout}"
    );
}

#[test]
fn check_reports_policy_mistakes_by_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let good = policy_config(dir.path());
    let good = std::fs::read_to_string(good).unwrap();
    let cases = [
        (
            "password: $argon2id",
            "password: $argon2i",
            "users.alice.password",
            "expected an argon2id hash",
        ),
        (
            "[group:staff]",
            "[api_key:nope]",
            "rules[4].subjects[0]",
            "no API key by this name",
        ),
        (
            "      block: [KP]",
            "      allow: [US]",
            "rules[4].countries",
            "cannot be combined with bind_client_ip",
        ),
        (
            "      block: [KP]",
            "      block: [KP]\n    access_rules:\n      - {type: ip.src, action: block, ip: [10.0.0.0/8]}\n      - {type: ip.src, action: block, ip: [10.1.0.0/16]}\n      - {type: ip.src, action: block, ip: [10.2.0.0/16]}",
            "rules[4].access_rules",
            "would carry 6 access rules",
        ),
        (
            "not_after: 2030-01-01T20:00:00+00:00",
            "not_after: 2030-01-01T17:00:00Z",
            "rules[3].not_after",
            "must be later than not_before",
        ),
        (
            "algorithms: [HS256]",
            "algorithms: [RS256]",
            "jwt_issuers[0].secret",
            "only for HS256/384/512",
        ),
        (
            "algorithms: [HS256]",
            "algorithms: [none]",
            "jwt_issuers[0].algorithms[0]",
            "never accepted",
        ),
    ];
    for (from, to, field, expected) in cases {
        assert!(good.contains(from), "{from}");
        let path = write_config(dir.path(), "broken.yaml", &good.replacen(from, to, 1));
        let (ok, stdout, stderr) = run(&["--config", &path, "check"]);
        assert!(!ok, "{to} should be refused: {stdout}");
        let line = stderr
            .lines()
            .find(|l| l.contains(expected))
            .unwrap_or_else(|| panic!("no {expected:?} in {stderr}"));
        assert!(
            line.starts_with(&format!("{path}:")),
            "no file:line: {line}"
        );
        assert!(line.contains(field), "{line} should name {field}");
        assert!(!stderr.contains("$v=19$m="), "a hash leaked: {stderr}");
    }
}

#[test]
fn explain_shows_the_deciding_rule_why_earlier_ones_did_not_and_the_claims() {
    let dir = tempfile::tempdir().unwrap();
    let path = policy_config(dir.path());
    let (ok, stdout, stderr) = run(&[
        "--config",
        &path,
        "explain",
        "--video",
        "keynote",
        "--user",
        "alice",
        "--ip",
        "203.0.113.9",
        "--country",
        "US",
    ]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("subject  user:alice groups: [staff]"),
        "{stdout}"
    );
    assert!(
        stdout.contains("skipped: covers only api_key:ci"),
        "{stdout}"
    );
    assert!(
        stdout.contains("skipped: available from 2030-01-01T18:00:00Z"),
        "{stdout}"
    );
    assert!(
        stdout.contains("decision ALLOW by rule `staff`"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("\"kid\": \"{FIXTURE_KID}\"")),
        "{stdout}"
    );
    assert!(stdout.contains("\"203.0.113.9\""), "{stdout}");
    assert!(stdout.contains("\"KP\""), "{stdout}");
    assert!(
        stdout.contains("stream   plays for the viewer at 203.0.113.9 in US"),
        "{stdout}"
    );

    // During the premiere window anyone may watch, and the token ends with the window.
    let (ok, stdout, _) = run(&[
        "--config",
        &path,
        "explain",
        "--video",
        "keynote",
        "--anonymous",
        "--at",
        "2030-01-01T19:30:00Z",
    ]);
    assert!(ok);
    assert!(
        stdout.contains("decision ALLOW by rule `premiere`"),
        "{stdout}"
    );
    assert!(
        stdout.contains("exp clipped to the rule's end 2030-01-01T20:00:00Z"),
        "{stdout}"
    );
    assert!(stdout.contains("\"exp\": 1893528000"), "{stdout}");

    let (ok, stdout, _) = run(&["--config", &path, "explain", "--video", "keynote"]);
    assert!(ok);
    assert!(
        stdout.contains(
            "decision DENY rule `premiere` would allow, but this video is available from"
        ),
        "{stdout}"
    );

    // Groups a JWT would carry; a viewer elsewhere than the bound address is refused.
    let (ok, stdout, _) = run(&[
        "--config",
        &path,
        "explain",
        "--video",
        "intro",
        "--groups",
        "staff",
        "--ip",
        "192.0.2.1",
    ]);
    assert!(ok);
    assert!(
        stdout.contains("decision ALLOW by rule `public`"),
        "{stdout}"
    );
    let (ok, stdout, stderr) = run(&[
        "--config",
        &path,
        "explain",
        "--video",
        "nope",
        "--anonymous",
    ]);
    assert!(!ok);
    assert!(stderr.contains("no video `nope`"), "{stdout}{stderr}");
}

#[test]
fn hash_api_key_prints_a_fresh_key_once_with_its_digest() {
    let (ok, stdout, _) = run(&["hash-api-key", "--name", "partner"]);
    assert!(ok);
    let key = stdout
        .lines()
        .find_map(|l| l.strip_prefix("key: "))
        .expect("a key line");
    assert!(key.starts_with("sg_") && key.len() > 40, "{key}");
    let digest = streamgate::identity::hash_api_key(key);
    assert!(
        stdout.contains(&format!("    sha256: {digest}")),
        "{stdout}"
    );
    assert!(stdout.contains("  - name: partner"), "{stdout}");
    let (_, again, _) = run(&["hash-api-key"]);
    assert!(!again.contains(key), "keys must be random");
}

#[test]
fn hash_password_reads_stdin_and_prints_an_argon2id_hash() {
    let output = run_with_stdin(&["hash-password"], "correct horse\n");
    assert!(output.status.success());
    let hash = String::from_utf8_lossy(&output.stdout).trim().to_string();
    assert!(hash.starts_with("$argon2id$v=19$"), "{hash}");
    assert!(streamgate::identity::basic::validate_phc(&hash).is_ok());
    let empty = run_with_stdin(&["hash-password"], "\n");
    assert!(!empty.status.success(), "an empty password is refused");
}

#[test]
fn sign_prints_only_the_token_first_when_it_generates_the_development_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = gateway_config().replace(
        &format!("  - id: {FIXTURE_KID}\n    file: "),
        "  - file: generated-key.json\n    generate_if_missing: true\n    # was: ",
    );
    assert!(config.contains("generate_if_missing"), "{config}");
    let path = write_config(dir.path(), "config.yaml", &config);
    let output = streamgate()
        .args(["--config", &path, "sign", "intro"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(dir.path().join("generated-key.json").exists());
    // `TOKEN=$(streamgate sign intro | head -1)` gets the token, not the notice.
    let token = stdout.lines().next().unwrap();
    assert_eq!(
        decode_claims_unverified(token)["sub"],
        VIDEO_UID,
        "{stdout}"
    );
    assert!(!stdout.contains("generated"), "{stdout}");
    assert!(
        stderr.contains("generated a development signing key"),
        "{stderr}"
    );
}

#[test]
fn sign_prints_a_token_and_its_player_url() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "config.yaml", &gateway_config());
    let output = streamgate()
        .args([
            "--config",
            &path,
            "sign",
            "intro",
            "--ttl",
            "10m",
            "--downloadable",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let token = stdout.lines().next().unwrap();
    let claims = decode_claims_unverified(token);
    assert_eq!(claims["sub"], VIDEO_UID);
    assert_eq!(claims["downloadable"], true);
    assert!(claims["exp"].as_i64().unwrap() <= unix_now() + 600);
    assert!(stdout.contains(&format!("/{token}/iframe")), "{stdout}");

    let too_long = streamgate()
        .args(["--config", &path, "sign", "intro", "--ttl", "25h"])
        .output()
        .unwrap();
    assert!(!too_long.status.success());
}

/// A `streamgate` process whose stdout lines arrive on a channel; killed if a test ends (or
/// panics) without stopping it.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Running {
    fn spawn(args: &[&str], log_level: &str, stderr: Stdio) -> Running {
        let mut child = streamgate()
            .env("RUST_LOG", log_level)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (lines_tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running { child, lines }
    }

    /// The rest of the first stdout line that starts with `prefix` (within 20 s).
    fn line_after(&self, prefix: &str) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(20))
                .unwrap_or_else(|_| panic!("no line starting with {prefix:?}"));
            if let Some(rest) = line.strip_prefix(prefix) {
                return rest.to_string();
            }
        }
    }

    /// SIGTERM, then wait (at most 10 s) for the exit status.
    async fn terminate(self) -> ExitStatus {
        self.sigterm();
        self.exit_within(Duration::from_secs(10)).await
    }
}

/// [`gateway_config`] for a `serve` that stops at once on SIGTERM (no drain period).
fn undrained_config() -> String {
    format!("{}limits:\n  shutdown_drain: 0s\n", gateway_config())
}

#[tokio::test]
async fn serve_prints_its_address_serves_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "config.yaml", &undrained_config());
    let args = ["--config", &path, "serve", "--listen", "127.0.0.1:0"];
    let serve = Running::spawn(&args, "warn", Stdio::null());
    let origin = serve.line_after("streamgate listening on ");
    assert!(
        origin.starts_with("http://127.0.0.1:") && !origin.ends_with(":0"),
        "{origin}"
    );

    let health = get(&format!("{origin}/healthz")).await;
    assert_eq!(health.status.as_u16(), 200);
    let watch = get(&format!("{origin}/watch/intro")).await;
    assert_eq!(watch.status.as_u16(), 302);
    let player = get(watch.header("location").unwrap()).await;
    assert_eq!(player.status.as_u16(), 200);

    let status = serve.terminate().await;
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn logs_never_contain_tokens_or_api_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "config.yaml", &undrained_config());
    let log_path = dir.path().join("stderr.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let args = ["--config", &path, "serve", "--listen", "127.0.0.1:0"];
    let serve = Running::spawn(&args, "trace", Stdio::from(log));
    let origin = serve.line_after("streamgate listening on ");

    // `http://host:port/<token>/<resource>`
    let token_of = |response: &TestResponse| {
        let location = response.header("location").expect("a redirect");
        location.split('/').nth(3).unwrap().to_string()
    };
    let mut tokens = Vec::new();
    let watch = get(&format!("{origin}/watch/intro")).await;
    tokens.push(token_of(&watch));
    let members = get_with(
        &format!("{origin}/watch/keynote"),
        &[("x-api-key", TEST_API_KEY)],
    )
    .await;
    tokens.push(token_of(&members));
    let refused = get_with(
        &format!("{origin}/watch/keynote"),
        &[("authorization", "Bearer wrong-secret-key-123")],
    )
    .await;
    assert_eq!(refused.status.as_u16(), 401);
    let _ = get(&format!("{origin}/watch/..%2fsecret")).await;
    // Stream's token API and the demo page, with the key in each place it can be sent.
    let bearer = format!("Bearer {TEST_API_KEY}");
    let api = send(
        http::Method::POST,
        &format!("{origin}/accounts/023e105f4ecef8ad9ca31a8372d0c353/stream/intro/token"),
        &[("authorization", &bearer)],
        None,
    )
    .await;
    assert_eq!(api.status.as_u16(), 200, "{}", api.text());
    let body: serde_json::Value = serde_json::from_slice(&api.body).unwrap();
    tokens.push(body["result"]["token"].as_str().unwrap().to_string());
    let page = get_with(&format!("{origin}/"), &[("x-api-key", TEST_API_KEY)]).await;
    assert_eq!(page.status.as_u16(), 200);
    assert!(serve.terminate().await.success());

    let logs = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        logs.contains("token issued") && logs.contains("token issued through the token API"),
        "debug logs were captured:\n{logs}"
    );
    for token in &tokens {
        let signature = token.rsplit('.').next().unwrap();
        assert!(!logs.contains(signature), "a token leaked into the logs");
    }
    assert!(
        !logs.contains(TEST_API_KEY),
        "an API key leaked into the logs"
    );
    assert!(
        !logs.contains("wrong-secret-key-123"),
        "a presented key leaked"
    );
}

/// `serve` on `yaml` (written into `dir`) on a free port, its log in `format` at `level` going
/// to `dir/stderr.log`: the process, its origin and the log's path.
fn serve_logging(
    dir: &Path,
    yaml: &str,
    format: &str,
    level: &str,
) -> (Running, String, std::path::PathBuf) {
    let path = write_config(dir, "config.yaml", yaml);
    let log_path = dir.join("stderr.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let args = [
        "--config",
        &path,
        "--log-format",
        format,
        "serve",
        "--listen",
        "127.0.0.1:0",
    ];
    let serve = Running::spawn(&args, level, Stdio::from(log));
    let origin = serve.line_after("streamgate listening on ");
    (serve, origin, log_path)
}

#[tokio::test]
async fn every_access_line_is_written_before_the_process_exits_on_sigterm() {
    const REQUESTS: usize = 300;
    let dir = tempfile::tempdir().unwrap();
    let (serve, origin, log_path) = serve_logging(dir.path(), &gateway_config(), "json", "info");
    for i in 0..REQUESTS {
        let id = format!("drain-{i}");
        let watch = get_with(&format!("{origin}/watch/intro"), &[("x-request-id", &id)]).await;
        assert_eq!(watch.status.as_u16(), 302);
    }
    // Terminated right after the last answer: the lines may still be queued for the writer.
    assert!(serve.terminate().await.success());

    let logs = std::fs::read_to_string(&log_path).unwrap();
    let ids: std::collections::HashSet<String> = logs
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["message"] == "request")
        .filter_map(|line| line["request_id"].as_str().map(str::to_string))
        .collect();
    for i in 0..REQUESTS {
        assert!(
            ids.contains(&format!("drain-{i}")),
            "no access line for request {i}"
        );
    }
}

#[tokio::test]
async fn tokens_from_sign_play_on_the_standalone_emulator() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "config.yaml", &gateway_config());
    let args = ["--config", &path, "emulate", "--listen", "127.0.0.1:0"];
    let emulator = Running::spawn(&args, "warn", Stdio::null());
    let origin = emulator.line_after("Stream emulator listening on ");

    let output = streamgate()
        .args(["--config", &path, "sign", "keynote", "--downloadable"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let token = String::from_utf8_lossy(&output.stdout)
        .lines()
        .next()
        .unwrap()
        .to_string();
    let player = get(&format!("{origin}/{token}/iframe")).await;
    assert_eq!(player.status.as_u16(), 200, "{}", player.text());
    assert!(player.text().contains(OTHER_VIDEO_UID));
    let download = get(&format!("{origin}/{token}/downloads/default.mp4")).await;
    assert_eq!(download.status.as_u16(), 200);
    let forged = format!("{}x", &token[..token.len() - 1]);
    let refused = get(&format!("{origin}/{forged}/iframe")).await;
    assert_eq!(refused.status.as_u16(), 401);

    assert!(emulator.terminate().await.success());
}

// === graceful shutdown with requests in flight (proxy mode, a held upstream) ===

/// A Stream origin that answers only when the test releases it (or after 20 s): each request
/// that arrives is reported on `arrived`.
struct HeldUpstream {
    arrived: tokio::sync::mpsc::UnboundedSender<String>,
    release: tokio::sync::watch::Receiver<bool>,
}

impl streamgate::http::server::Handler for HeldUpstream {
    async fn handle(
        &self,
        req: http::Request<hyper::body::Incoming>,
        _peer: std::net::SocketAddr,
    ) -> http::Response<streamgate::Body> {
        let _ = self.arrived.send(req.uri().path().to_string());
        let mut release = self.release.clone();
        let _ = tokio::time::timeout(Duration::from_secs(20), release.wait_for(|go| *go)).await;
        http::Response::builder()
            .header("content-type", "image/jpeg")
            .body(streamgate::Body::new(bytes::Bytes::from_static(
                b"held upstream body",
            )))
            .unwrap()
    }
}

/// A held upstream on loopback, the sender that releases it, and where requests arrive.
async fn held_upstream() -> (
    TestServer,
    tokio::sync::watch::Sender<bool>,
    tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    let (arrived, arrivals) = tokio::sync::mpsc::unbounded_channel();
    let (release_tx, release) = tokio::sync::watch::channel(false);
    let upstream = TestServer::start(std::sync::Arc::new(HeldUpstream { arrived, release })).await;
    (upstream, release_tx, arrivals)
}

/// [`gateway_config`] in proxy mode against `origin`, with `shutdown_deadline`.
fn proxy_config_for(origin: &str, shutdown_deadline: &str) -> String {
    let emulator = "stream:\n  emulator:\n    listen: 127.0.0.1:0\n";
    let config = gateway_config();
    assert!(config.contains(emulator), "the default config has changed");
    format!(
        "{}mode: proxy\nlimits:\n  shutdown_drain: 0s\n  shutdown_deadline: {shutdown_deadline}\n",
        config.replace(emulator, &format!("stream:\n  origin: {origin}\n"))
    )
}

/// The proxied resource whose fetch the held upstream holds.
const HELD_PATH: &str = "/watch/intro/thumbnails/thumbnail.jpg";

impl Running {
    /// Send SIGTERM and return at once.
    fn sigterm(&self) {
        // The shell's builtin `kill`, so no procps package is needed.
        let killed = Command::new("sh")
            .args(["-c", &format!("kill -TERM {}", self.child.id())])
            .status()
            .unwrap();
        assert!(killed.success());
    }

    /// The first stdout line starting with `prefix` within `limit`, without blocking the
    /// async runtime (the upstream and clients run on it).
    async fn wait_for_line(&self, prefix: &str, limit: Duration) -> String {
        let what = format!("a line starting with {prefix:?}");
        wait_for_within(&what, limit, async || {
            loop {
                match self.lines.try_recv() {
                    Ok(line) if line.starts_with(prefix) => break Some(line),
                    Ok(_) => continue,
                    Err(mpsc::TryRecvError::Empty) => break None,
                    Err(mpsc::TryRecvError::Disconnected) => {
                        panic!("streamgate closed its stdout before {what}")
                    }
                }
            }
        })
        .await
    }

    /// Wait (at most `limit`) for the process to exit; kills it and panics otherwise.
    async fn exit_within(mut self, limit: Duration) -> ExitStatus {
        let exited = poll_until("streamgate to exit", limit, async || {
            self.child.try_wait().unwrap()
        })
        .await;
        exited.unwrap_or_else(|timed_out| {
            let _ = self.child.kill();
            let _ = self.child.wait();
            panic!("{timed_out}")
        })
    }
}

/// The gateway's `host:port` from its printed origin.
fn addr_of_origin(origin: &str) -> std::net::SocketAddr {
    origin
        .strip_prefix("http://")
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("an http://host:port origin: {origin}"))
}

/// Wait (at most 5 s) until connecting to `addr` is refused.
async fn until_refused(addr: std::net::SocketAddr) {
    let what = format!("{addr} to refuse connections once shutdown began");
    wait_for_within(
        &what,
        Duration::from_secs(5),
        async || match tokio::net::TcpStream::connect(addr).await {
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionRefused => Ok(()),
            Err(error) => Err(format!("connecting failed otherwise: {error}")),
            Ok(_) => Err("a connection was accepted".to_string()),
        },
    )
    .await;
}

#[tokio::test]
async fn sigterm_lets_in_flight_requests_finish_refuses_new_ones_and_exits_0() {
    let (upstream, release, mut arrivals) = held_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        "config.yaml",
        &proxy_config_for(&upstream.origin(), "10s"),
    );
    let log = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
    let args = ["--config", &path, "serve", "--listen", "127.0.0.1:0"];
    let serve = Running::spawn(&args, "warn", Stdio::from(log));
    let origin = serve.line_after("streamgate listening on ");
    let addr = addr_of_origin(&origin);

    // A request whose upstream fetch is held: it is surely in flight when SIGTERM comes.
    let url = format!("{origin}{HELD_PATH}");
    let in_flight = tokio::spawn(async move { get(&url).await });
    let upstream_path = tokio::time::timeout(Duration::from_secs(10), arrivals.recv())
        .await
        .expect("the proxied request reaches the upstream")
        .unwrap();
    assert!(
        upstream_path.ends_with("/thumbnails/thumbnail.jpg"),
        "{upstream_path}"
    );

    serve.sigterm();
    let terminated = std::time::Instant::now();
    serve
        .wait_for_line("shutting down", Duration::from_secs(10))
        .await;
    // New connections are refused while the request is still held.
    until_refused(addr).await;
    assert!(!in_flight.is_finished(), "the held request ended early");

    release.send(true).unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), in_flight)
        .await
        .expect("the in-flight request completes")
        .unwrap();
    let stderr = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
    assert_eq!(response.status.as_u16(), 200, "{stderr}");
    assert_eq!(response.text(), "held upstream body");

    // Within the deadline (10 s) plus slack for busy cores.
    let status = serve.exit_within(Duration::from_secs(15)).await;
    assert!(status.success(), "{status}: {stderr}");
    assert!(
        terminated.elapsed() < Duration::from_secs(15),
        "{:?}",
        terminated.elapsed()
    );
    upstream.shutdown().await;
}

#[tokio::test]
async fn sigterm_exits_0_at_the_shutdown_deadline_when_a_request_never_finishes() {
    let (upstream, release, mut arrivals) = held_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        "config.yaml",
        &proxy_config_for(&upstream.origin(), "1s"),
    );
    let log = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
    let args = ["--config", &path, "serve", "--listen", "127.0.0.1:0"];
    let serve = Running::spawn(&args, "warn", Stdio::from(log));
    let origin = serve.line_after("streamgate listening on ");
    let addr = addr_of_origin(&origin);

    // A raw client, so that a connection cut at the deadline is an outcome, not a panic.
    let stuck = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {HELD_PATH} HTTP/1.1\r\nHost: gateway.test\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut received = Vec::new();
        let _ =
            tokio::time::timeout(Duration::from_secs(15), stream.read_to_end(&mut received)).await;
        received
    });
    tokio::time::timeout(Duration::from_secs(10), arrivals.recv())
        .await
        .expect("the proxied request reaches the upstream")
        .unwrap();

    serve.sigterm();
    let terminated = std::time::Instant::now();
    // The 1 s deadline plus slack for busy cores; the upstream would hold for 20 s.
    let status = serve.exit_within(Duration::from_secs(6)).await;
    let waited = terminated.elapsed();
    let stderr = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
    assert!(status.success(), "{status}: {stderr}");
    assert!(
        waited >= Duration::from_millis(900),
        "exited before the deadline: {waited:?}"
    );
    assert!(
        stderr.contains("did not finish within the shutdown grace period"),
        "{stderr}"
    );

    // The held request got no response: its connection ended with the process.
    let received = tokio::time::timeout(Duration::from_secs(10), stuck)
        .await
        .expect("the cut connection is noticed")
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&received).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&received)
    );
    release.send(true).unwrap();
    upstream.shutdown().await;
}

#[test]
fn inspect_reports_valid_expired_tampered_and_malformed_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "config.yaml", &gateway_config());
    let inspect = |input: &str, extra: &[&str]| {
        let mut args = vec!["--config", config.as_str(), "inspect", input];
        args.extend_from_slice(extra);
        let output = streamgate().args(&args).output().unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };

    let blocked = json!([
        {"type": "ip.src", "action": "allow", "ip": ["203.0.113.0/24"]},
        {"type": "any", "action": "block"}
    ]);
    let valid = mint(with_claim(claims_for(VIDEO_UID), "accessRules", blocked));
    let url = format!("https://customer-x.cloudflarestream.com/{valid}/iframe?autoplay=true");
    let (code, out, _) = inspect(&url, &["--ip", "203.0.113.9"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains(&format!("\"sub\": \"{VIDEO_UID}\"")), "{out}");
    assert!(
        out.contains(&format!("signature  valid (key {FIXTURE_KID})")),
        "{out}"
    );
    assert!(out.contains("expires    ") && out.contains("(in "), "{out}");
    assert!(
        out.contains("the rules let the viewer at 203.0.113.9 play it"),
        "{out}"
    );
    assert!(out.contains("Stream would accept this token now"), "{out}");

    let (code, out, _) = inspect(&valid, &["--ip", "198.51.100.1"]);
    assert_eq!(code, Some(1));
    assert!(out.contains("blocked by rule on 'any'"), "{out}");

    let expired = mint(with_claim(
        claims_for(VIDEO_UID),
        "exp",
        json!(unix_now() - 7200),
    ));
    let (code, out, _) = inspect(&expired, &[]);
    assert_eq!(code, Some(1));
    assert!(out.contains("EXPIRED") && out.contains(" ago)"), "{out}");

    // Another video in the claims, the original signature kept.
    let parts: Vec<&str> = valid.split('.').collect();
    let forged_claims = b64url(serde_json::to_vec(&claims_for(OTHER_VIDEO_UID)).unwrap());
    let tampered = format!("{}.{forged_claims}.{}", parts[0], parts[2]);
    let (code, out, _) = inspect(&tampered, &[]);
    assert_eq!(code, Some(1));
    assert!(out.contains("signature  NOT VALID"), "{out}");

    for (input, reason) in [
        ("abc.def", "has 2 parts"),
        ("!!!.e30.c2ln", "header is not base64url-encoded JSON"),
        ("https://example.com/watch/intro", "no token found"),
    ] {
        let (code, _, err) = inspect(input, &[]);
        assert_eq!(code, Some(1));
        assert!(err.contains(reason), "{input}: {err}");
    }
}

// === draining on SIGTERM ===

/// What one looping client saw.
#[derive(Debug, Default)]
struct Tally {
    answered: u64,
    /// Answers received after the test saw the drain begin.
    after_drain: u64,
    /// Answers carrying `Connection: close`.
    told_to_close: u64,
    failures: Vec<String>,
}

/// GET `url` through `client` in a loop until `stop` (bounded in count and time), tallying
/// every answer and failure in `tally`.
async fn keep_asking(
    client: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        http_body_util::Full<bytes::Bytes>,
    >,
    url: String,
    drained: tokio::sync::watch::Receiver<bool>,
    stop: tokio::sync::watch::Receiver<bool>,
    tally: std::sync::Arc<std::sync::Mutex<Tally>>,
) {
    let started = std::time::Instant::now();
    for _ in 0..100_000 {
        if *stop.borrow() || started.elapsed() > Duration::from_secs(60) {
            return;
        }
        let answer = try_get(&client, &url).await;
        let mut tally = tally.lock().unwrap();
        match answer {
            Ok(response) if response.status.as_u16() == 302 => {
                tally.answered += 1;
                if *drained.borrow() {
                    tally.after_drain += 1;
                }
                if response.header("connection") == Some("close") {
                    tally.told_to_close += 1;
                }
            }
            Ok(response) => tally.failures.push(format!("status {}", response.status)),
            Err(error) => tally.failures.push(error),
        }
    }
}

#[tokio::test]
async fn on_sigterm_keep_alive_clients_lose_no_request_while_the_gateway_drains() {
    use std::sync::{Arc, Mutex};
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!("{}limits:\n  shutdown_drain: 3s\n", gateway_config());
    let path = write_config(dir.path(), "config.yaml", &yaml);
    let log = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
    let args = ["--config", &path, "serve", "--listen", "127.0.0.1:0"];
    let serve = Running::spawn(&args, "warn", Stdio::from(log));
    let origin = serve.line_after("streamgate listening on ");
    let url = format!("{origin}/watch/intro");

    // Three HTTP/1.1 clients and one HTTP/2 client, each reusing its connections.
    let (drained_tx, drained) = tokio::sync::watch::channel(false);
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let mut clients = Vec::new();
    for http2 in [false, false, false, true] {
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .http2_only(http2)
                .build_http();
        let tally = Arc::new(Mutex::new(Tally::default()));
        let task = tokio::spawn(keep_asking(
            client,
            url.clone(),
            drained.clone(),
            stop.clone(),
            Arc::clone(&tally),
        ));
        clients.push((http2, tally, task));
    }
    let each = |done: fn(&Tally, bool) -> bool| {
        clients
            .iter()
            .all(|(http2, tally, _)| done(&tally.lock().unwrap(), *http2))
    };
    wait_for("every client to be served", async || {
        each(|tally, _| tally.answered >= 5)
    })
    .await;

    serve.sigterm();
    serve
        .wait_for_line("draining for 3s", Duration::from_secs(10))
        .await;
    drained_tx.send(true).unwrap();
    // Taken out of rotation at once, while still serving.
    let ready = get(&format!("{origin}/readyz")).await;
    assert_eq!(ready.status.as_u16(), 503, "{}", ready.text());
    let detail: serde_json::Value = serde_json::from_slice(&ready.body).unwrap();
    assert_eq!(detail["draining"], true);
    assert_eq!(get(&format!("{origin}/healthz")).await.status.as_u16(), 200);

    // Clients keep going through the drain; HTTP/1.1 answers tell them to close, so they
    // move to new connections (HTTP/2 ones get GOAWAY) without losing a request.
    wait_for("every client to be served through the drain", async || {
        each(|tally, http2| tally.after_drain >= 10 && (http2 || tally.told_to_close >= 1))
    })
    .await;
    stop_tx.send(true).unwrap();
    for (http2, tally, task) in clients {
        tokio::time::timeout(REQUEST_TIMEOUT, task)
            .await
            .expect("the client loop ends")
            .unwrap();
        let tally = tally.lock().unwrap();
        assert!(
            tally.failures.is_empty(),
            "HTTP/{} client lost requests: {:?} ({} answered)",
            if http2 { "2" } else { "1.1" },
            tally.failures,
            tally.answered
        );
    }

    let status = serve.exit_within(Duration::from_secs(15)).await;
    let stderr = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
    assert!(status.success(), "{status}: {stderr}");
}

// === request-derived text in the log ===

/// A line a client would like the operator to read: a whole forged log record after a newline.
const FORGED_RECORD: &str =
    "2026-12-01T00:00:00.000000Z  INFO streamgate::reload: configuration reloaded FORGED";

/// Requests carrying [`FORGED_RECORD`] behind line breaks and escapes, and far more text than a
/// log line should hold, into the places that reach a debug log: a video id in the JSON body,
/// a query parameter's name, a request id, a path.
async fn send_forging_requests(origin: &str) {
    let padding = "A".repeat(3_000);
    let video_id = format!("x\n{FORGED_RECORD}\r\n\u{1b}[2K{FORGED_RECORD}{padding}");
    let body = serde_json::json!({ "video_id": video_id }).to_string();
    let api = send(
        http::Method::POST,
        &format!("{origin}/api/getSignedURL"),
        &[("content-type", "application/json")],
        Some(body.into_bytes()),
    )
    .await;
    assert_eq!(api.status.as_u16(), 400, "{}", api.text());
    assert!(api.text().len() < 1_000, "the reason echoes a short prefix");

    let query = get(&format!(
        "{origin}/watch/intro/iframe?%0A{}=1",
        FORGED_RECORD.replace(' ', "%20")
    ))
    .await;
    assert_eq!(query.status.as_u16(), 400, "{}", query.text());
    let long_path = get(&format!("{origin}/watch/{padding}")).await;
    assert_eq!(long_path.status.as_u16(), 414);
}

#[tokio::test]
async fn request_derived_text_cannot_forge_or_flood_a_log_line() {
    for format in ["text", "json"] {
        let dir = tempfile::tempdir().unwrap();
        let (serve, origin, log_path) =
            serve_logging(dir.path(), &undrained_config(), format, "debug");
        send_forging_requests(&origin).await;
        assert!(serve.terminate().await.success());

        let logs = std::fs::read_to_string(&log_path).unwrap();
        assert!(
            logs.contains("request refused"),
            "{format}: the refusals are logged at debug:\n{logs}"
        );
        assert!(
            logs.contains("2026-12-01T00:00:00.000000Z  INFO streamgate::reload"),
            "{format}: the text is logged, escaped:\n{logs}"
        );
        for line in logs.lines() {
            assert!(
                !line.contains(&format!("\r{FORGED_RECORD}"))
                    && !line.starts_with("2026-12-01T00:00:00.000000Z"),
                "{format}: a forged record starts a line: {line}"
            );
            assert!(!line.contains('\u{1b}'), "{format}: a raw escape: {line}");
            assert!(
                line.len() < 4_000,
                "{format}: a line of {} bytes echoes the request: {}…",
                line.len(),
                &line[..200]
            );
            if format == "json" {
                assert!(
                    serde_json::from_str::<serde_json::Value>(line).is_ok(),
                    "json: a line that is not a JSON record: {line}"
                );
            } else {
                assert!(
                    line.chars().next().is_some_and(|c| c.is_ascii_digit()),
                    "text: a line that is not a record of its own: {line}"
                );
            }
        }
    }
}

#[tokio::test]
async fn the_audit_trail_on_stderr_is_json_in_a_text_log_and_complete_on_sigterm() {
    const REQUESTS: usize = 50;
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!("{}audit_trail:\n  sink: stderr\n", undrained_config());
    let (serve, origin, log_path) = serve_logging(dir.path(), &yaml, "text", "info");
    let mut token = String::new();
    for i in 0..REQUESTS {
        let id = format!("trail-{i}");
        let watch = get_with(&format!("{origin}/watch/intro"), &[("x-request-id", &id)]).await;
        assert_eq!(watch.status.as_u16(), 302);
        token = watch
            .header("location")
            .unwrap()
            .split('/')
            .nth(3)
            .unwrap()
            .to_string();
    }
    // Terminated right after the last answer: the events may still be queued for the writer.
    assert!(serve.terminate().await.success());

    let logs = std::fs::read_to_string(&log_path).unwrap();
    assert!(!logs.contains(&token), "a token in the log");
    let mut events: Vec<serde_json::Value> = logs
        .lines()
        .filter(|line| line.starts_with('{'))
        .map(|line| serde_json::from_str(line).expect("an event is one JSON object"))
        .collect();
    assert_eq!(events.len(), REQUESTS, "{logs}");
    // Each worker's events are in order; two workers' are interleaved a batch at a time.
    let number = |event: &serde_json::Value| {
        let id = event["request_id"].as_str().expect("a request id");
        id.strip_prefix("trail-")
            .and_then(|n| n.parse::<usize>().ok())
            .expect("a request id of this test")
    };
    events.sort_by_key(number);
    for (i, event) in events.iter().enumerate() {
        assert_eq!(event["event"], "token");
        assert_eq!(event["request_id"], format!("trail-{i}").as_str());
        assert_eq!(event["reused"], i > 0, "only the first request minted it");
        assert_eq!(event["token_id"], events[0]["token_id"]);
    }
    // The rest of the log stays text.
    assert!(
        logs.lines()
            .any(|line| line.contains(" INFO streamgate::access: request"))
    );
}
