//! The `streamgate` binary as an operator uses it: check, sign, serve.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;

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
    assert!(stdout.contains("videos   2"), "{stdout}");
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
        ("  ttl: 1h\n", "  ttl: 36h\n", "over Stream's limit of 24h"),
        (
            "  keynote:\n",
            "  intro:\n    uid: 11111111111111111111111111111111\n  keynote:\n",
            "duplicate entry `intro`",
        ),
        (
            "videos: [intro]",
            "videos: [intr0]",
            "rules[0].videos[0]: `intr0`",
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

/// A `streamgate` process whose stdout lines arrive on a channel.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
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
    async fn terminate(mut self) -> ExitStatus {
        // The shell's builtin `kill`, so no procps package is needed.
        let killed = Command::new("sh")
            .args(["-c", &format!("kill -TERM {}", self.child.id())])
            .status()
            .unwrap();
        assert!(killed.success());
        for _ in 0..100 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = self.child.kill();
        panic!("streamgate did not exit within 10 s of SIGTERM");
    }
}

#[tokio::test]
async fn serve_prints_its_address_serves_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "config.yaml", &gateway_config());
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
    let path = write_config(dir.path(), "config.yaml", &gateway_config());
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
    assert!(serve.terminate().await.success());

    let logs = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        logs.contains("token issued"),
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
