//! The `streamgate` binary as an operator uses it: check, sign, serve.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
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

#[tokio::test]
async fn serve_prints_its_address_serves_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "config.yaml", &gateway_config());
    let mut child = streamgate()
        .args(["--config", &path, "serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
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
    let banner = lines
        .recv_timeout(Duration::from_secs(20))
        .expect("serve prints its address");
    let origin = banner
        .strip_prefix("streamgate listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {banner}"))
        .to_string();
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

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let mut exited = None;
    for _ in 0..100 {
        if let Some(status) = child.try_wait().unwrap() {
            exited = Some(status);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let Some(status) = exited else {
        let _ = child.kill();
        panic!("serve did not exit within 10 s of SIGTERM");
    };
    assert!(status.success(), "{status}");
}
