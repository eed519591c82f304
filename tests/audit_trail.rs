//! The token audit trail, over real sockets: every token a request is given is one event,
//! minted or reused, naming the token by its hash and never holding it.

mod common;

use common::*;
use serde_json::Value;
use std::time::Duration;

/// The shared test configuration, a proxy-mode video, and the audit trail in `path`.
fn config_with_trail(path: &std::path::Path) -> String {
    let base = gateway_config()
        .replace(
            "api_keys:\n",
            &format!("  proxied:\n    uid: {PROXIED_UID}\n    tags: [proxied]\napi_keys:\n"),
        )
        .replace(
            "rules:\n",
            "rules:\n  - name: through-the-gateway\n    videos: [\"tag:proxied\"]\n    subjects: [anyone]\n    mode: proxy\n",
        );
    format!(
        "{base}audit_trail:\n  sink: file\n  path: {}\n",
        path.display()
    )
}

/// A video that exists on the emulator only because the catalogue names it.
const PROXIED_UID: &str = "8f2c6a04b7d94e1fa3c5d6e7f8091a2b";

fn events(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .expect("the audit trail file exists")
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
        .collect()
}

fn sha256_id(token: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    digest.as_ref()[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn each_token_handed_out_is_one_event_marked_minted_or_reused_without_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("trail").join("tokens.jsonl");
    let gateway = TestGateway::start_with(&config_with_trail(&path)).await;

    // Anonymous, twice: minted, then reused from the cache.
    let first = get(&gateway.url("/watch/intro")).await;
    let second = get(&gateway.url("/watch/intro")).await;
    let emulator = gateway.emulator_origin();
    let token = token_in_location(&redirect_location(&first, "first"), &emulator);
    assert_eq!(
        token,
        token_in_location(&redirect_location(&second, "second"), &emulator)
    );
    // An API key, through /api/getSignedURL (its own rule, so its own token).
    let api = post_get_signed_url(
        &gateway,
        r#"{"video_id":"intro"}"#,
        &[("x-api-key", TEST_API_KEY)],
    )
    .await;
    assert_eq!(api.status, 200, "{}", api.text());
    let api_token = serde_json::from_str::<Value>(&api.text()).unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    // Proxy mode: the viewer never sees the token, the trail still records who was served.
    let proxied = get(&gateway.url("/watch/proxied/manifest/video.m3u8")).await;
    assert_eq!(proxied.status, 200, "{}", proxied.text());

    // Shutdown writes every event recorded before it.
    gateway.shutdown().await;
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains(&token), "a token in the trail: {text}");
    assert!(!text.contains(&api_token), "a token in the trail: {text}");
    let events = events(&path);
    assert_eq!(events.len(), 4, "{text}");

    let (minted, reused, by_key, by_proxy) = (&events[0], &events[1], &events[2], &events[3]);
    for event in &events {
        assert_eq!(event["event"], "token");
        assert_eq!(event["client"], "127.0.0.1");
        assert_eq!(event["key_id"], FIXTURE_KID);
        assert!(event["timestamp"].as_str().unwrap().ends_with('Z'));
        assert!(event["expires"].as_str().unwrap().ends_with('Z'));
        assert!(!event["request_id"].as_str().unwrap().is_empty());
    }
    assert_eq!(minted["reused"], false);
    assert_eq!(minted["token_id"], sha256_id(&token).as_str());
    assert_eq!(minted["subject"], "anonymous");
    assert_eq!(minted["source"], "anonymous");
    assert_eq!(minted["video"], VIDEO_UID);
    assert_eq!(minted["alias"], "intro");
    assert_eq!(minted["rule"], "public");
    assert_eq!(minted["via"], "redirect");

    assert_eq!(reused["reused"], true);
    assert_eq!(reused["token_id"], minted["token_id"]);
    assert_ne!(reused["request_id"], minted["request_id"]);

    assert_eq!(by_key["reused"], false);
    assert_eq!(by_key["token_id"], sha256_id(&api_token).as_str());
    assert_eq!(by_key["subject"], "api_key:ci");
    assert_eq!(by_key["source"], "api_key");
    assert_eq!(by_key["rule"], "ci-intro");
    assert_eq!(by_key["via"], "api");

    assert_eq!(by_proxy["reused"], false);
    assert_eq!(by_proxy["alias"], "proxied");
    assert_eq!(by_proxy["rule"], "through-the-gateway");
    assert_eq!(by_proxy["via"], "proxy");
}

#[tokio::test]
async fn a_refused_request_writes_no_event() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.jsonl");
    let gateway = TestGateway::start_with(&config_with_trail(&path)).await;
    // Members only: anonymous is asked to sign in; a wrong API key is a 401.
    let refused = get(&gateway.url("/watch/keynote")).await;
    assert_eq!(refused.status, 401);
    let wrong = get_with(&gateway.url("/watch/keynote"), &[("x-api-key", "wrong")]).await;
    assert_eq!(wrong.status, 401);
    gateway.shutdown().await;
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
}

#[tokio::test]
async fn an_audit_trail_that_cannot_be_opened_stops_the_start_and_names_the_section() {
    let dir = tempfile::tempdir().unwrap();
    // A directory where the file should be.
    let path = dir.path().join("taken");
    std::fs::create_dir(&path).unwrap();
    let settings = streamgate::config::Settings::from_yaml(
        &config_with_trail(&path),
        "test.yaml",
        &fixture_path(""),
    )
    .unwrap();
    let (keys, _) = streamgate::app::keys::load_signing_keys(
        &settings,
        streamgate::app::keys::MissingKeys::Fail,
    )
    .unwrap();
    let error = match streamgate::app::App::start(settings, keys, None).await {
        Ok(_) => panic!("started without its audit trail"),
        Err(error) => error,
    };
    assert!(error.to_string().contains("audit_trail"), "{error}");
}

/// How many bytes of the file at `path` are in the page cache, as `fincore` (util-linux)
/// counts them, without reading any (`streamgate::page_cache`'s tests check the same way).
#[cfg(target_os = "linux")]
fn resident(path: &std::path::Path) -> u64 {
    let output = std::process::Command::new("fincore")
        .args(["--bytes", "--noheadings", "--output", "RES"])
        .arg(path)
        .output()
        .expect("fincore runs (Debian: apt-get install util-linux-extra)");
    assert!(output.status.success(), "fincore: {output:?}");
    String::from_utf8(output.stdout)
        .unwrap()
        .trim()
        .parse()
        .expect("fincore prints a byte count")
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_trail_file_closed_at_shutdown_is_on_disk_and_out_of_the_page_cache() {
    // On the disk the build is on: a tmpfs /tmp keeps its pages whatever the advice.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("tokens.jsonl");
    let gateway = TestGateway::start_with(&config_with_trail(&path)).await;
    for _ in 0..20 {
        assert_eq!(get(&gateway.url("/watch/intro")).await.status, 302);
    }
    // Written by the writer thread within its flush interval, and cached meanwhile: what the
    // check after shutdown relies on.
    poll_until(
        "the 20 events written",
        Duration::from_secs(10),
        async || std::fs::read_to_string(&path).is_ok_and(|text| text.lines().count() == 20),
    )
    .await
    .unwrap();
    assert!(resident(&path) > 0, "a file just written is cached");

    gateway.shutdown().await;
    let cached = resident(&path);
    assert_eq!(cached, 0, "{cached} bytes still cached");
    // Reading it brings it back, whole.
    assert_eq!(events(&path).len(), 20);
}
