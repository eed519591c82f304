//! `streamgate stream keys|videos|audit` end to end: the command functions in-process against
//! the emulator's management API (and a few through the binary), the API client against a
//! scripted server for the error cases, and the periodic audit in a running gateway.

mod common;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use common::*;
use http::{Request, Response};
use hyper::body::Incoming;
use serde_json::Value;
use streamgate::Body;
use streamgate::app::{App, StartOptions};
use streamgate::cli::stream::{Session, StreamCommand};
use streamgate::cloudflare::{ApiError, ApiSettings, RetryPolicy, StreamApi};
use streamgate::emulator::{AccountVideo, ApiAccess};
use streamgate::http::server::Handler;
use streamgate::secret::Secret;

const ACCOUNT: &str = "023e105f4ecef8ad9ca31a8372d0c353";
/// Never to appear in any output.
const API_TOKEN: &str = "test-only-api-token-5f1c0e9a";

// === running the commands in-process ===

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    command: StreamCommand,
}

/// What one command did.
struct Ran {
    result: Result<u8, String>,
    out: String,
    err: String,
}

impl Ran {
    fn code(&self) -> u8 {
        match &self.result {
            Ok(code) => *code,
            Err(_) => 1,
        }
    }

    fn all(&self) -> String {
        format!(
            "{}\n{}\n{}",
            self.out,
            self.err,
            self.result.as_ref().err().cloned().unwrap_or_default()
        )
    }
}

/// Options of one in-process run.
struct Run<'a> {
    config: &'a Path,
    history: &'a Path,
    now: u64,
    terminal_input: Option<&'a str>,
}

impl<'a> Run<'a> {
    fn new(config: &'a Path, history: &'a Path) -> Self {
        Run {
            config,
            history,
            now: streamgate::token::signer::unix_now(),
            terminal_input: None,
        }
    }

    async fn go(&self, args: &[&str]) -> Ran {
        let parsed = Args::try_parse_from(std::iter::once("stream").chain(args.iter().copied()))
            .unwrap_or_else(|error| panic!("{args:?}: {error}"));
        let mut out = Vec::new();
        let mut err = Vec::new();
        let mut input = std::io::Cursor::new(self.terminal_input.unwrap_or("").as_bytes().to_vec());
        // Nothing from the process environment: the configuration names the token file.
        let env = |_: &str| None;
        let mut session = Session {
            config: self.config.to_path_buf(),
            key_history: self.history.to_path_buf(),
            out: &mut out,
            err: &mut err,
            input: &mut input,
            terminal: self.terminal_input.is_some(),
            now: self.now,
            env: &env,
            retry: None,
        };
        let result = streamgate::cli::stream::run(&mut session, parsed.command)
            .await
            .map_err(|error| format!("{error:#}"));
        let ran = Ran {
            result,
            out: String::from_utf8(out).unwrap(),
            err: String::from_utf8(err).unwrap(),
        };
        assert!(
            !ran.all().contains(API_TOKEN),
            "the API token leaked: {}",
            ran.all()
        );
        ran
    }
}

fn api_access() -> Option<ApiAccess> {
    Some(ApiAccess {
        account_id: ACCOUNT.into(),
        token: Secret::new(API_TOKEN.into()),
    })
}

/// A directory with the API token in `api-token`.
fn workdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("api-token"), format!("{API_TOKEN}\n")).unwrap();
    dir
}

fn cloudflare_section(api: &str) -> String {
    format!(
        "cloudflare:\n  account_id: {ACCOUNT}\n  api_token: {{file: api-token}}\n  api_base: {api}/client/v4\n"
    )
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

const UNSIGNED_UID: &str = "4b6d8f0a2c4e46a8b0c2d4e6f8a0b2c4";

/// A standalone emulator whose account holds the two default videos, `UNSIGNED_UID` with
/// requireSignedURLs false, and `extra`.
async fn account_emulator(extra: Vec<AccountVideo>) -> TestEmulator {
    let mut videos = vec![AccountVideo {
        require_signed_urls: false,
        ..AccountVideo::protected(UNSIGNED_UID, "Launch trailer")
    }];
    videos.extend(extra);
    // The account holds the catalogue's two videos and these, nothing else.
    TestEmulator::start(streamgate::emulator::EmulatorSettings {
        videos,
        api: api_access(),
        video_uids: vec![VIDEO_UID.to_owned(), OTHER_VIDEO_UID.to_owned()],
        ..emulator_settings()
    })
    .await
}

/// A configuration for the commands: Stream at `emulator`, the fixture key, three videos.
fn origin_config(dir: &Path, emulator: &TestEmulator, extra: &str) -> PathBuf {
    let yaml = format!(
        "\
stream:
  origin: {origin}
{cloudflare}
signing_keys:
  - id: {FIXTURE_KID}
    file: {key}
cors:
  allowed_origins: [https://www.example.com]
# The catalogue.
videos:
  intro:
    uid: {VIDEO_UID}
    tags: [public]   # tags stay
  keynote:
    uid: {OTHER_VIDEO_UID}
  trailer:
    uid: {UNSIGNED_UID}
rules:
  - name: public
    videos: [\"tag:public\"]
    subjects: [anyone]
{extra}",
        origin = emulator.origin(),
        cloudflare = cloudflare_section(&emulator.origin()),
        key = fixture_path("test-only-signing-key.pem").display(),
    );
    write(dir, "config.yaml", &yaml)
}

// === audit ===

#[tokio::test]
async fn audit_finds_the_unprotected_video_and_fix_yes_protects_it() {
    let emulator = account_emulator(Vec::new()).await;
    let dir = workdir();
    let config = origin_config(dir.path(), &emulator, "");
    let history = dir.path().join("history.json");
    let run = Run::new(&config, &history);

    // The bare uid plays: that is what critical means.
    assert_eq!(
        get(&emulator.url_for(UNSIGNED_UID, "iframe")).await.status,
        200
    );
    let audit = run.go(&["audit"]).await;
    assert_eq!(audit.code(), 2, "{}", audit.all());
    assert!(
        audit.out.contains(
            "CRITICAL  trailer (4b6d8f0a2c4e46a8b0c2d4e6f8a0b2c4): requireSignedURLs is false"
        ),
        "{}",
        audit.out
    );

    let json = run.go(&["audit", "--json"]).await;
    assert_eq!(json.code(), 2);
    let document: Value = serde_json::from_str(&json.out).unwrap();
    assert_eq!(document["counts"]["critical"], 1);
    assert_eq!(document["exit_code"], 2);
    assert_eq!(document["findings"][0]["kind"], "unprotected");
    assert_eq!(document["findings"][0]["video"], "trailer");
    assert_eq!(document["videos_checked"], 3);
    assert_eq!(document["keys_checked"], 1);

    // No terminal and no --yes: nothing changes.
    let refused = run.go(&["audit", "--fix"]).await;
    assert!(refused.result.is_err(), "{}", refused.all());
    assert!(refused.all().contains("needs --yes"), "{}", refused.all());
    assert_eq!(
        get(&emulator.url_for(UNSIGNED_UID, "iframe")).await.status,
        200
    );
    // On a terminal, "n" changes nothing either.
    let declined = Run {
        terminal_input: Some("n\n"),
        ..Run::new(&config, &history)
    }
    .go(&["audit", "--fix"])
    .await;
    assert!(declined.result.is_err());
    assert!(declined.err.contains("[y/N]"), "{}", declined.err);

    let fixed = run.go(&["audit", "--fix", "--yes"]).await;
    assert_eq!(fixed.code(), 0, "{}", fixed.all());
    assert!(fixed.out.contains("FIXED     trailer"), "{}", fixed.out);
    assert_eq!(
        get(&emulator.url_for(UNSIGNED_UID, "iframe")).await.status,
        401,
        "the bare uid no longer plays"
    );
    let clean = run.go(&["audit"]).await;
    assert_eq!(clean.code(), 0, "{}", clean.all());
    assert!(clean.out.contains("no findings"), "{}", clean.out);
}

#[tokio::test]
async fn audit_reports_missing_videos_and_keys_as_errors() {
    let emulator = account_emulator(Vec::new()).await;
    let dir = workdir();
    let missing_key = "abcdefabcdefabcdefabcdefabcdef12";
    let config = origin_config(dir.path(), &emulator, "");
    // A video the account lacks, and a second (trusted) key it lacks.
    let yaml = std::fs::read_to_string(&config)
        .unwrap()
        .replace(
            "  trailer:\n",
            "  gone:\n    uid: 99999999999999999999999999999999\n  trailer:\n",
        )
        .replace(
            "signing_keys:\n",
            &format!(
                "signing_keys:\n  - id: {missing_key}\n    file: {}\n    active: false\n",
                fixture_path("test-only-second-key.pem").display()
            ),
        );
    std::fs::write(&config, yaml).unwrap();
    let history = dir.path().join("history.json");
    let run = Run::new(&config, &history);
    // Protect the trailer first, so that nothing is critical.
    assert_eq!(run.go(&["audit", "--fix", "--yes"]).await.code(), 3);
    let audit = run.go(&["audit", "--json"]).await;
    let document: Value = serde_json::from_str(&audit.out).unwrap();
    assert_eq!(audit.code(), 3, "{}", audit.all());
    let kinds: Vec<&str> = document["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"video_missing"), "{kinds:?}");
    assert!(kinds.contains(&"key_missing"), "{kinds:?}");
}

// === videos ===

#[tokio::test]
async fn sync_pages_through_2500_videos_and_writes_the_missing_entries_keeping_comments() {
    let extra: Vec<AccountVideo> = (0..2500u32)
        .map(|i| AccountVideo::protected(format!("{:032x}", 0x1000 + i), format!("Episode {i}")))
        .collect();
    let emulator = account_emulator(extra).await;
    let dir = workdir();
    let config = origin_config(dir.path(), &emulator, "");
    let history = dir.path().join("history.json");
    let run = Run::new(&config, &history);

    let proposed = run.go(&["videos", "sync"]).await;
    assert_eq!(proposed.code(), 0, "{}", proposed.all());
    let new_uids: Vec<&str> = proposed
        .out
        .lines()
        .filter_map(|line| line.strip_prefix("+    uid: "))
        .collect();
    assert_eq!(new_uids.len(), 2500, "no gaps");
    let unique: std::collections::HashSet<_> = new_uids.iter().collect();
    assert_eq!(unique.len(), 2500, "no duplicates");
    assert!(
        proposed.out.contains("+  episode-0:\n"),
        "{}",
        &proposed.out[..400]
    );
    assert!(proposed.out.contains("+    title: \"Episode 2499\"\n"));
    let before = std::fs::read_to_string(&config).unwrap();
    assert_eq!(
        before,
        std::fs::read_to_string(&config).unwrap(),
        "not written"
    );

    let written = run.go(&["videos", "sync", "--write"]).await;
    assert_eq!(written.code(), 0, "{}", written.all());
    let after = std::fs::read_to_string(&config).unwrap();
    assert!(after.contains("# The catalogue.\n"), "comments stay");
    assert!(after.contains("    tags: [public]   # tags stay\n"));
    let settings = streamgate::config::Settings::load(&config).unwrap();
    assert_eq!(settings.catalogue.len(), 2503);
    assert!(settings.catalogue.by_alias("episode-2499").is_some());

    let again = run.go(&["videos", "sync"]).await;
    assert!(again.out.contains("lists every one"), "{}", &again.out);

    let listed = run.go(&["videos", "list"]).await;
    assert_eq!(listed.code(), 0);
    assert!(
        listed.out.starts_with("2503 videos on account"),
        "{}",
        &listed.out[..200]
    );
    let trailer = listed
        .out
        .lines()
        .find(|line| line.starts_with("trailer "))
        .unwrap();
    assert!(trailer.contains(" NO "), "{trailer}");
}

// === keys: create, sign, rotate, delete ===

/// A gateway started from a file (so it reloads), recording its key history.
async fn gateway_from_file(config: &Path, history: &Path) -> App {
    use streamgate::app::keys::{MissingKeys, load_signing_keys};
    let settings = streamgate::config::Settings::load(config).unwrap();
    let (keys, _) = load_signing_keys(&settings, MissingKeys::Fail).unwrap();
    App::start_with(
        settings,
        keys,
        StartOptions {
            key_history: Some(history.to_path_buf()),
            ..StartOptions::default()
        },
    )
    .await
    .unwrap()
}

fn gateway_yaml(api_base: &str, keys: &[&str]) -> String {
    let mut signing = String::new();
    for key in keys {
        signing.push_str(&format!("  - file: {key}\n"));
    }
    format!(
        "\
listen: 127.0.0.1:0
stream:
  emulator:
    listen: 127.0.0.1:0
{cloudflare}
signing_keys:
{signing}token:
  ttl: 1h
  min_remaining: 10m
videos:
  intro:
    uid: {VIDEO_UID}
rules:
  - name: everyone
    videos: [intro]
    subjects: [anyone]
    ttl: 2h
",
        cloudflare = cloudflare_section(api_base)
    )
}

/// Reload `app` from the file now (deterministic: no waiting for the watcher).
fn reload(app: &App, config: &Path, yaml: &str) {
    std::fs::write(config, yaml).unwrap();
    app.reloader().unwrap().reload().unwrap();
}

/// A token for intro from the gateway, and its key id.
async fn fresh_token(app: &App) -> (String, String) {
    let gateway = format!("http://{}", app.gateway_addr());
    let emulator = format!("http://{}", app.emulator_addr().unwrap());
    let response = get(&format!("{gateway}/watch/intro")).await;
    let token = token_in_location(&redirect_location(&response, "watch"), &emulator);
    let kid = decode_claims_unverified(&token)["kid"]
        .as_str()
        .unwrap()
        .to_string();
    (token, kid)
}

async fn plays(app: &App, token: &str) -> u16 {
    let emulator = format!("http://{}", app.emulator_addr().unwrap());
    get(&format!("{emulator}/{token}/iframe"))
        .await
        .status
        .as_u16()
}

#[tokio::test]
async fn rotation_old_tokens_play_until_the_old_key_is_deleted() {
    let dir = workdir();
    let config = dir.path().join("config.yaml");
    let history = dir.path().join("key-history.json");
    let fixture = fixture_path("test-only-signing-key.pem")
        .display()
        .to_string();
    std::fs::write(
        &config,
        gateway_yaml(
            "http://127.0.0.1:9",
            &[&format!("{fixture}\n    id: {FIXTURE_KID}")],
        ),
    )
    .unwrap();
    let app = gateway_from_file(&config, &history).await;
    let api = format!("http://{}", app.emulator_addr().unwrap());
    let with_keys = |keys: &[&str]| gateway_yaml(&api, keys);
    let fixture_entry = format!("{fixture}\n    id: {FIXTURE_KID}");
    reload(&app, &config, &with_keys(&[&fixture_entry]));
    let run = Run::new(&config, &history);

    // Create key A: written 0600, never overwritten, its entry printed.
    let key_a_path = dir.path().join("key-a.json");
    let created = run
        .go(&["keys", "create", "--out", key_a_path.to_str().unwrap()])
        .await;
    assert_eq!(created.code(), 0, "{}", created.all());
    let key_a = created
        .out
        .lines()
        .find_map(|line| line.strip_prefix("  - id: "))
        .unwrap()
        .to_string();
    let moved = key_a_path;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&moved).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let again = run
        .go(&["keys", "create", "--out", moved.to_str().unwrap()])
        .await;
    assert!(again.result.unwrap_err().contains("not overwriting"));

    // Sign with A: it plays.
    reload(&app, &config, &with_keys(&["key-a.json", &fixture_entry]));
    let (token_a, kid) = fresh_token(&app).await;
    assert_eq!(kid, key_a);
    assert_eq!(plays(&app, &token_a).await, 200);

    // Rotate to B, keeping A trusted.
    let created = run
        .go(&[
            "keys",
            "create",
            "--out",
            dir.path().join("key-b.json").to_str().unwrap(),
        ])
        .await;
    assert_eq!(created.code(), 0, "{}", created.all());
    reload(&app, &config, &with_keys(&["key-b.json", "key-a.json"]));
    let (token_b, key_b) = fresh_token(&app).await;
    assert_ne!(key_b, key_a);
    assert_eq!(plays(&app, &token_b).await, 200);
    assert_eq!(plays(&app, &token_a).await, 200, "A's tokens still play");

    let listed = run.go(&["keys", "list"]).await;
    let line_b = listed.out.lines().find(|l| l.starts_with(&key_b)).unwrap();
    assert!(line_b.contains("signing_keys[0], signs"), "{line_b}");
    let line_a = listed.out.lines().find(|l| l.starts_with(&key_a)).unwrap();
    assert!(line_a.contains("signing_keys[1], trusted"), "{line_a}");

    // Refused while configured.
    let refused = run.go(&["keys", "delete", &key_a]).await;
    let message = refused.result.unwrap_err();
    assert!(message.contains("signing_keys[1] uses it"), "{message}");

    // Out of the configuration, but its tokens may still be live (the rule's 2h ttl).
    reload(&app, &config, &with_keys(&["key-b.json"]));
    assert_eq!(plays(&app, &token_a).await, 200, "still on the account");
    let refused = run.go(&["keys", "delete", &key_a]).await;
    let message = refused.result.unwrap_err();
    assert!(message.contains("may play until"), "{message}");
    assert!(message.contains("the longest ttl, 2h"), "{message}");
    assert_eq!(plays(&app, &token_a).await, 200);

    // Two hours on: allowed, and A's tokens stop playing at once; B's play on.
    let later = Run {
        now: run.now + 2 * 3600 + 1,
        ..Run::new(&config, &history)
    };
    let deleted = later.go(&["keys", "delete", &key_a]).await;
    assert_eq!(deleted.code(), 0, "{}", deleted.all());
    assert!(deleted.err.contains("every token it signed has expired"));
    assert_eq!(plays(&app, &token_a).await, 401);
    assert_eq!(plays(&app, &token_b).await, 200);

    // A key this gateway never signed with may go, with a note; an unknown one is a 404.
    let unknown = later
        .go(&["keys", "delete", "0000000000000000000000000000000f"])
        .await;
    let message = unknown.result.unwrap_err();
    assert!(
        unknown
            .err
            .contains("no record of this gateway signing with it")
    );
    assert!(
        message.contains(
            "DELETE /accounts/…/stream/keys/0000000000000000000000000000000f: not found (404)"
        ),
        "{message}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn force_deletes_a_configured_key_with_a_warning() {
    let emulator = account_emulator(Vec::new()).await;
    let dir = workdir();
    let config = origin_config(dir.path(), &emulator, "");
    let history = dir.path().join("history.json");
    let run = Run::new(&config, &history);
    let forced = run.go(&["keys", "delete", FIXTURE_KID, "--force"]).await;
    assert_eq!(forced.code(), 0, "{}", forced.all());
    assert!(
        forced
            .err
            .contains("warning: --force: signing_keys[0] uses it to sign"),
        "{}",
        forced.err
    );
    let token = mint(valid_claims());
    assert_eq!(get(&emulator.url_for(&token, "iframe")).await.status, 401);
    let bad = run.go(&["keys", "delete", "../../etc"]).await;
    assert!(bad.result.unwrap_err().contains("32 hex"));
}

// === the periodic audit in serve ===

#[tokio::test]
async fn serve_audits_periodically_into_the_gauge_and_readyz() {
    let dir = workdir();
    let config = dir.path().join("config.yaml");
    let history = dir.path().join("history.json");
    let fixture = fixture_path("test-only-signing-key.pem")
        .display()
        .to_string();
    let yaml = gateway_yaml(
        "http://127.0.0.1:9",
        &[&format!("{fixture}\n    id: {FIXTURE_KID}")],
    )
    .replace(
        "    listen: 127.0.0.1:0\n",
        "    listen: 127.0.0.1:0\n    unprotected: [intro]\n",
    )
    .replace("  api_base:", "  audit_interval: 1h\n  api_base:");
    std::fs::write(&config, &yaml).unwrap();
    // The first audit fails (nothing listens on port 9): counted, readyz stays 200.
    let app = gateway_from_file(&config, &history).await;
    let metrics = Arc::clone(app.metrics());
    wait_for("a failed audit", async || {
        metrics
            .encode()
            .contains("streamgate_stream_audit_failures_total 1")
    })
    .await;
    let gateway = format!("http://{}", app.gateway_addr());
    let ready = get(&format!("{gateway}/readyz")).await;
    assert_eq!(ready.status, 200);
    assert!(ready.text().contains("could not run"), "{}", ready.text());

    // An audit against the right API (the `cloudflare` section needs a restart, so the
    // settings are given) finds intro unprotected.
    let api = format!("http://{}", app.emulator_addr().unwrap());
    std::fs::write(&config, yaml.replace("http://127.0.0.1:9", &api)).unwrap();
    let settings = streamgate::config::Settings::load(&config).unwrap();
    let client = streamgate::http::client::build(&Default::default()).unwrap();
    streamgate::app::stream_audit::run_once(
        &settings,
        vec![FIXTURE_KID.to_string()],
        &client,
        &metrics,
        1,
    )
    .await;
    assert!(
        metrics.encode().contains("streamgate_unprotected_videos 1"),
        "{}",
        metrics.encode()
    );
    let ready = get(&format!("{gateway}/readyz")).await;
    assert_eq!(ready.status, 200, "the gateway keeps serving");
    let body: Value = serde_json::from_slice(&ready.body).unwrap();
    assert_eq!(body["stream_audit"]["unprotected_videos"], 1);
    assert!(
        body["warnings"][0]
            .as_str()
            .unwrap()
            .contains("1 catalogue videos are publicly playable"),
        "{body}"
    );
    app.shutdown().await;
}

// === API errors, against a scripted server ===

/// A scripted answer: status, headers, body.
type Answer = (u16, Vec<(&'static str, String)>, String);

/// Answers with the scripted responses in order (the last one repeated), recording the
/// Authorization header of each request.
struct Scripted {
    answers: Mutex<VecDeque<Answer>>,
    authorizations: Mutex<Vec<String>>,
}

impl Handler for Scripted {
    async fn handle(&self, req: Request<Incoming>, _peer: SocketAddr) -> Response<Body> {
        self.authorizations.lock().unwrap().push(
            req.headers()
                .get("authorization")
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default(),
        );
        let mut answers = self.answers.lock().unwrap();
        let (status, headers, body) = if answers.len() > 1 {
            answers.pop_front().unwrap()
        } else {
            answers.front().cloned().unwrap()
        };
        let mut response = Response::builder().status(status);
        for (name, value) in headers {
            response = response.header(name, value);
        }
        response.body(Body::new(Bytes::from(body))).unwrap()
    }
}

async fn scripted(answers: Vec<Answer>) -> (TestServer, Arc<Scripted>) {
    let handler = Arc::new(Scripted {
        answers: Mutex::new(answers.into()),
        authorizations: Mutex::default(),
    });
    (TestServer::start(Arc::clone(&handler)).await, handler)
}

fn client_for(server: &TestServer, notices: &Arc<Mutex<Vec<String>>>) -> StreamApi {
    let env = |name: &str| (name == "CLOUDFLARE_API_TOKEN").then(|| API_TOKEN.to_string());
    let mut settings = ApiSettings::resolve(
        Some(ACCOUNT),
        None,
        Some(&format!("{}/client/v4", server.origin())),
        &env,
    )
    .unwrap();
    settings.retry = RetryPolicy {
        max_retries: 2,
        max_wait: Duration::from_secs(5),
        default_wait: Duration::from_millis(1),
    };
    settings.request_timeout = Duration::from_secs(5);
    let notices = Arc::clone(notices);
    StreamApi::new(
        settings,
        streamgate::http::client::build(&Default::default()).unwrap(),
    )
    .with_notice(Arc::new(move |message| {
        notices.lock().unwrap().push(message.to_string())
    }))
}

const KEYS_OK: &str = r#"{"success":true,"errors":[],"messages":[],"result":[{"id":"0a1b2c3d4e5f60718293a4b5c6d7e8f9","created":"2026-01-01T00:00:00Z"}]}"#;

fn failure(code: u32, message: &str) -> String {
    serde_json::json!({"success": false, "errors": [{"code": code, "message": message}], "messages": [], "result": null}).to_string()
}

fn assert_no_token(error: &ApiError) {
    let shown = format!("{error} {error:?}");
    assert!(!shown.contains(API_TOKEN), "{shown}");
}

#[tokio::test]
async fn unauthorized_names_the_call_the_code_and_the_permission() {
    for status in [401, 403] {
        let (server, handler) = scripted(vec![(
            status,
            vec![],
            failure(10000, "Authentication error\n\u{1b}[31m"),
        )])
        .await;
        let notices = Arc::default();
        let error = client_for(&server, &notices).list_keys().await.unwrap_err();
        let shown = error.to_string();
        assert!(shown.starts_with(&format!("GET /accounts/…/stream/keys: the API token was refused ({status}): error 10000: Authentication error\\n\\u{{1b}}[31m")), "{shown}");
        assert!(shown.contains("Stream Read"), "{shown}");
        assert_no_token(&error);
        assert_eq!(
            handler.authorizations.lock().unwrap()[0],
            format!("Bearer {API_TOKEN}")
        );
    }
}

#[tokio::test]
async fn not_found_and_server_errors_are_typed() {
    let (server, _) = scripted(vec![(404, vec![], failure(10005, "Not found"))]).await;
    let notices = Arc::default();
    let error = client_for(&server, &notices)
        .video(VIDEO_UID)
        .await
        .unwrap_err();
    assert!(matches!(error, ApiError::NotFound { .. }), "{error:?}");
    assert_eq!(
        error.to_string(),
        format!("GET /accounts/…/stream/{VIDEO_UID}: not found (404): error 10005: Not found")
    );

    let (server, handler) = scripted(vec![(500, vec![], "<html>oops</html>".into())]).await;
    let error = client_for(&server, &notices).list_keys().await.unwrap_err();
    assert_eq!(error.status(), Some(500));
    assert_eq!(
        error.to_string(),
        "GET /accounts/…/stream/keys: Cloudflare answered 500"
    );
    assert_eq!(
        handler.authorizations.lock().unwrap().len(),
        1,
        "a 500 is not retried"
    );
    assert_no_token(&error);
}

#[tokio::test]
async fn rate_limits_are_retried_after_retry_after_then_succeed() {
    let past = httpdate::fmt_http_date(std::time::SystemTime::now() - Duration::from_secs(5));
    let (server, handler) = scripted(vec![
        (
            429,
            vec![("retry-after", "0".into())],
            failure(10429, "slow down"),
        ),
        (
            429,
            vec![("retry-after", past)],
            failure(10429, "slow down"),
        ),
        (200, vec![], KEYS_OK.into()),
    ])
    .await;
    let notices: Arc<Mutex<Vec<String>>> = Arc::default();
    let keys = client_for(&server, &notices).list_keys().await.unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(handler.authorizations.lock().unwrap().len(), 3);
    let notices = notices.lock().unwrap();
    assert_eq!(notices.len(), 2, "{notices:?}");
    assert!(
        notices[0].contains("rate limited by Cloudflare (429); retrying in 0s (retry 1 of 2)"),
        "{notices:?}"
    );
}

#[tokio::test]
async fn rate_limits_are_given_up_on_after_the_retries_or_a_long_wait() {
    let (server, handler) = scripted(vec![(
        429,
        vec![("retry-after", "0".into())],
        failure(10429, "slow down"),
    )])
    .await;
    let notices = Arc::default();
    let error = client_for(&server, &notices).list_keys().await.unwrap_err();
    assert!(
        matches!(error, ApiError::RateLimited { attempts: 3, .. }),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .contains("rate limited (429) 3 times; gave up: error 10429: slow down"),
        "{error}"
    );
    assert_eq!(handler.authorizations.lock().unwrap().len(), 3, "bounded");

    let (server, handler) = scripted(vec![(
        429,
        vec![("retry-after", "3600".into())],
        String::new(),
    )])
    .await;
    let error = client_for(&server, &notices).list_keys().await.unwrap_err();
    assert!(
        matches!(
            error,
            ApiError::WaitTooLong {
                asked_secs: 3600,
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(
        handler.authorizations.lock().unwrap().len(),
        1,
        "no wait beyond the cap"
    );
}

#[tokio::test]
async fn a_silent_api_times_out() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut streams = Vec::new();
        for _ in 0..4 {
            if let Ok((stream, _)) = listener.accept().await {
                streams.push(stream);
            }
        }
        std::future::pending::<()>().await;
    });
    let env = |_: &str| Some(API_TOKEN.to_string());
    let mut settings = ApiSettings::resolve(
        Some(ACCOUNT),
        None,
        Some(&format!("http://{addr}/client/v4")),
        &env,
    )
    .unwrap();
    settings.request_timeout = Duration::from_millis(200);
    let api = StreamApi::new(
        settings,
        streamgate::http::client::build(&Default::default()).unwrap(),
    );
    let error = api.list_keys().await.unwrap_err();
    assert!(matches!(error, ApiError::Timeout { .. }), "{error:?}");
    held.abort();
}

// === through the binary ===

fn streamgate() -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_streamgate"));
    command
        .env("RUST_LOG", "warn")
        .env_remove("CLOUDFLARE_API_TOKEN")
        .env_remove("CLOUDFLARE_ACCOUNT_ID")
        .stdin(std::process::Stdio::null());
    command
}

#[tokio::test]
async fn the_binary_audits_with_exit_codes_and_prints_a_key_for_a_secret() {
    let emulator = account_emulator(Vec::new()).await;
    let dir = workdir();
    let config = origin_config(dir.path(), &emulator, "");
    let config_arg = config.to_str().unwrap().to_string();
    let output = tokio::task::spawn_blocking({
        let config_arg = config_arg.clone();
        move || {
            streamgate()
                .args(["--config", &config_arg, "stream", "audit", "--json"])
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert_eq!(output.status.code(), Some(2), "{stdout}{stderr}");
    let document: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(document["counts"]["critical"], 1);
    assert!(!stdout.contains(API_TOKEN) && !stderr.contains(API_TOKEN));

    // --fix without a terminal and without --yes: refused, exit 1.
    let output = tokio::task::spawn_blocking({
        let config_arg = config_arg.clone();
        move || {
            streamgate()
                .args(["--config", &config_arg, "stream", "audit", "--fix"])
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("needs --yes"));

    // --print: stdout is the key alone, loadable as it is; the entry goes to stderr.
    let output = tokio::task::spawn_blocking({
        let config_arg = config_arg.clone();
        move || {
            streamgate()
                .args([
                    "--config",
                    &config_arg,
                    "stream",
                    "keys",
                    "create",
                    "--print",
                ])
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(output.status.success(), "{stderr}");
    let key = streamgate::token::SigningKey::from_material(None, &stdout).unwrap();
    assert!(
        stderr.contains(&format!("  - id: {}", key.id())),
        "{stderr}"
    );
    assert!(!stdout.contains(API_TOKEN) && !stderr.contains(API_TOKEN));

    // No token anywhere: a clear error naming where it is looked for.
    let yaml = std::fs::read_to_string(&config)
        .unwrap()
        .replace("  api_token: {file: api-token}\n", "");
    std::fs::write(&config, yaml).unwrap();
    let output = tokio::task::spawn_blocking(move || {
        streamgate()
            .args(["--config", &config_arg, "stream", "keys", "list"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("CLOUDFLARE_API_TOKEN"), "{stderr}");
}
