//! Findings of the outside attack review, each kept closed by a test over real sockets:
//! configuration values never reach `/readyz` or the log, proxy-mode rules hand out no
//! token, the viewer's address comes from one configured header, present-but-invalid
//! session cookies are refused, identity sources are kept apart in rules, and the places
//! where the gateway disagreed with its README.

mod common;

use std::path::PathBuf;

use common::*;
use http::Method;
use serde_json::Value;
use streamgate::app::App;
use streamgate::app::keys::{MissingKeys, load_signing_keys};
use streamgate::config::Settings;

// === the log ===

// === 1. configuration values are never echoed ===

/// A gateway started from a configuration file, so that it reloads.
struct FromFile {
    app: Option<App>,
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl FromFile {
    async fn start(yaml: &str) -> FromFile {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, yaml).expect("writing the configuration");
        let settings = Settings::load(&path)
            .unwrap_or_else(|errors| panic!("the configuration should be valid:\n{errors}"));
        let (keys, _) = load_signing_keys(&settings, MissingKeys::Fail)
            .unwrap_or_else(|errors| panic!("the keys should load:\n{errors}"));
        let app = App::start(settings, keys, None)
            .await
            .expect("the gateway should start");
        FromFile {
            app: Some(app),
            path,
            _dir: dir,
        }
    }

    fn app(&self) -> &App {
        self.app.as_ref().expect("running")
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.app().gateway_addr())
    }

    /// Write `yaml` and reload it now; `Err` is the refusal.
    fn reload_with(&self, yaml: &str) -> Result<u64, String> {
        std::fs::write(&self.path, yaml).expect("writing the configuration");
        self.app()
            .reloader()
            .expect("a configuration from a file reloads")
            .reload()
            .map_err(|error| error.to_string())
    }

    async fn shutdown(mut self) {
        if let Some(app) = self.app.take() {
            app.shutdown().await;
        }
    }
}

/// The line of `source` that contains `needle`, 1-based.
fn line_of(source: &str, needle: &str) -> usize {
    source
        .lines()
        .position(|line| line.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} in the configuration"))
        + 1
}

/// Text that must never leave the configuration file.
const SECRET: &str = "TEST-ONLY-s3cr3t-e8f1c0d2a9b7";

/// The PEM body the second case pastes (base64 of test-only text, not a key).
const PEM_BODY: &str = "VEVTVC1PTkxZLW5vdC1hLWtleS1lOGYxYzBkMmE5Yjc";

fn issuer_with_inline_secret() -> String {
    format!(
        "{}jwt_issuers:\n  - issuer: https://idp.test\n    audience: streamgate\n    algorithms: [HS256]\n    secret: \"{SECRET}\"\n",
        gateway_config()
    )
}

fn pem_pasted_into_signing_keys() -> String {
    let pem = format!(
        "    - |\n      -----BEGIN PRIVATE KEY-----\n      {PEM_BODY}\n      -----END PRIVATE KEY-----\n"
    );
    gateway_config().replacen("signing_keys:\n", &format!("signing_keys:\n{pem}"), 1)
}

fn pem_pasted_as_a_key_file() -> String {
    let pem = format!("-----BEGIN PRIVATE KEY-----\\n{PEM_BODY}\\n-----END PRIVATE KEY-----");
    gateway_config().replacen(
        "signing_keys:\n",
        &format!("signing_keys:\n  - file: \"{pem}\"\n"),
        1,
    )
}

#[tokio::test]
async fn a_refused_reload_never_shows_configured_secrets_on_readyz_or_in_the_log() {
    let logs = capture_logs();
    let running = FromFile::start(&gateway_config()).await;
    let cases = [
        (
            "an inline secret under a JWT issuer",
            issuer_with_inline_secret(),
            SECRET,
            "jwt_issuers[0].secret",
            "secret:",
        ),
        (
            "a PEM pasted into signing_keys",
            pem_pasted_into_signing_keys(),
            PEM_BODY,
            "signing_keys[0]",
            "- |",
        ),
        (
            "a PEM pasted as a key file",
            pem_pasted_as_a_key_file(),
            PEM_BODY,
            "signing_keys[0]",
            "- file:",
        ),
    ];
    for (i, (case, yaml, secret, field, line_text)) in cases.into_iter().enumerate() {
        let before = streamgate::token::signer::unix_now();
        let refusal = running
            .reload_with(&yaml)
            .expect_err("the configuration is refused");
        let line = line_of(&yaml, line_text);
        let at = format!("config.yaml:{line}:");
        assert!(
            refusal.contains(&at) && refusal.contains(field),
            "{case}: the refusal names the file, line and field: {refusal}"
        );
        assert!(!refusal.contains(secret), "{case}: {refusal}");

        let ready = get(&running.url("/readyz")).await;
        let text = ready.text();
        assert!(!text.contains(secret), "{case}: /readyz shows it: {text}");
        assert!(!text.contains(field), "{case}: /readyz explains: {text}");
        let reload = &serde_json::from_str::<Value>(&text).expect("/readyz is JSON")["reload"];
        assert_eq!(reload["failed"], i + 1, "{case}: {reload}");
        assert_eq!(reload["last_failed"], true, "{case}: {reload}");
        let when = reload["last_failed_at"].as_str().unwrap_or_default();
        let when = streamgate::config::parse_rfc3339(when)
            .unwrap_or_else(|| panic!("{case}: last_failed_at is a time: {reload}"));
        assert!(when >= before, "{case}: {reload}");
        assert!(reload.get("last_error").is_none(), "{case}: {reload}");

        let log = logged_text(&logs);
        assert!(
            log.contains(field),
            "{case}: the log keeps the value-free reason"
        );
        assert!(!log.contains(secret), "{case}: the log shows it");
    }
    // A good file again: the failure is no longer reported.
    running
        .reload_with(&gateway_config())
        .expect("the original configuration applies");
    let ready: Value = serde_json::from_str(&get(&running.url("/readyz")).await.text()).unwrap();
    assert_eq!(ready["reload"]["last_failed"], false, "{ready}");
    assert_eq!(ready["reload"]["last_failed_at"], Value::Null, "{ready}");
    running.shutdown().await;
}

#[tokio::test]
async fn check_names_the_field_of_an_inline_secret_without_echoing_it() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("config.yaml");
    for yaml in [
        issuer_with_inline_secret(),
        pem_pasted_into_signing_keys(),
        pem_pasted_as_a_key_file(),
    ] {
        std::fs::write(&path, &yaml).expect("writing the configuration");
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_streamgate"))
            .args(["--config", &path.display().to_string(), "check"])
            .output()
            .expect("streamgate runs");
        assert!(!output.status.success());
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(all.contains("config.yaml:"), "{all}");
        assert!(!all.contains(SECRET) && !all.contains(PEM_BODY), "{all}");
    }
}

// === 11. where the gateway disagreed with its README ===

/// `POST <url>` with a JSON body and `headers`.
async fn post_json(url: &str, body: &str, headers: &[(&str, &str)]) -> TestResponse {
    let mut all = vec![("content-type", "application/json")];
    all.extend_from_slice(headers);
    send(Method::POST, url, &all, Some(body.as_bytes().to_vec())).await
}

/// An account id for the token API's path.
const ACCOUNT_ID: &str = "023e105f4ecef8ad9ca31a8372d0c353";

#[tokio::test]
async fn dot_segments_anywhere_in_a_watch_path_are_bad_requests() {
    let gateway = TestGateway::start().await;
    for path in [
        "/watch/intro/../intro",
        "/watch/intro/manifest/../iframe",
        "/watch/intro/./iframe",
        "/watch/intro/..",
    ] {
        let response = get(&gateway.url(path)).await;
        assert_error(&response, 400, "`..` segments are not allowed");
    }
    // In the video's place, `..` is not a video id.
    assert_error(&get(&gateway.url("/watch/../intro")).await, 400, "`..`");
    // Other odd files below the player are still unknown resources.
    assert_error(
        &get(&gateway.url("/watch/intro/.env")).await,
        404,
        "unknown resource",
    );
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_malformed_video_id_is_a_bad_request_on_every_route_before_credentials() {
    let gateway = TestGateway::start().await;
    let api = gateway.url("/api/getSignedURL");
    let token_api =
        |video: &str| gateway.url(&format!("/accounts/{ACCOUNT_ID}/stream/{video}/token"));
    for credentials in [&[][..], &[("authorization", "Bearer not-a-key")][..]] {
        for video in ["-bad", "a b", "x/../y", &"a".repeat(65)] {
            let body = serde_json::json!({ "video_id": video }).to_string();
            let response = post_json(&api, &body, credentials).await;
            assert_error(&response, 400, "is not a video uid");
        }
        assert_error(
            &get_with(&gateway.url("/watch/-bad"), credentials).await,
            400,
            "is not a video uid",
        );
        let response = post_json(&token_api("-bad"), "", credentials).await;
        assert_eq!(response.status.as_u16(), 400, "{}", response.text());
        assert!(response.text().contains("is not a video uid"));
    }
    // A well-formed id that is not in the catalogue is still a 404.
    let body = serde_json::json!({ "video_id": UNKNOWN_VIDEO_UID }).to_string();
    assert_error(&post_json(&api, &body, &[]).await, 404, "no video");
    gateway.shutdown().await;
}

#[tokio::test]
async fn the_token_apis_401_challenges_in_the_configured_realm() {
    let config = format!("{}auth:\n  realm: videos.example\n", gateway_config());
    let gateway = TestGateway::start_with(&config).await;
    let url = gateway.url(&format!("/accounts/{ACCOUNT_ID}/stream/intro/token"));
    for credentials in [&[][..], &[("authorization", "Bearer not-a-key")][..]] {
        let response = post_json(&url, "", credentials).await;
        assert_eq!(response.status.as_u16(), 401, "{}", response.text());
        assert_eq!(
            response.header("www-authenticate"),
            Some("Bearer realm=\"videos.example\""),
        );
    }
    // /watch uses the same realm.
    let watch = get(&gateway.url("/watch/keynote")).await;
    assert_eq!(watch.status.as_u16(), 401);
    assert_eq!(
        watch.header("www-authenticate"),
        Some("Bearer realm=\"videos.example\"")
    );
    gateway.shutdown().await;
}

// === 7. a present session cookie is a credential ===

/// The HS256 secret of the `https://idp.test` issuer the identity tests configure.
const IDP_SECRET: &[u8] = b"security-test-only-hs256-secret-0123456789";
const IDP_ISSUER: &str = "https://idp.test";

/// [`gateway_config`] plus the `https://idp.test` issuer (secret in `secret_file`), reading
/// the `session` cookie and taking groups from `groups`, with `issuer_extra` lines appended
/// to its entry.
fn with_idp(secret_file: &std::path::Path, issuer_extra: &str) -> String {
    format!(
        "{}jwt_issuers:\n  - issuer: {IDP_ISSUER}\n    audience: streamgate\n    algorithms: [HS256]\n    secret:\n      file: {}\n    cookie: session\n    groups_claim: groups\n{issuer_extra}",
        gateway_config(),
        secret_file.display()
    )
}

/// An `https://idp.test` token with `claims` (iss, aud and exp added).
fn idp_token(secret: &[u8], issuer: &str, claims: Value) -> String {
    let mut claims = claims;
    claims["iss"] = issuer.into();
    claims["aud"] = "streamgate".into();
    claims["exp"] = (unix_now() + 3600).into();
    mint_hs256(secret, &claims)
}

#[tokio::test]
async fn an_empty_or_undecodable_session_cookie_is_a_401_not_anonymous() {
    let secret = temp_file_with(IDP_SECRET);
    let gateway = TestGateway::start_with(&with_idp(secret.path(), "")).await;
    let public = gateway.url("/watch/intro");
    for cookie in [
        "session=",
        "session=\"\"",
        "session=é",
        "theme=dark; session=",
        "session=not-a-token",
    ] {
        let response = get_with(&public, &[("cookie", cookie)]).await;
        assert_eq!(
            response.status.as_u16(),
            401,
            "{cookie:?}: {}",
            response.text()
        );
        assert!(response.header("www-authenticate").is_some(), "{cookie:?}");
    }
    // Anonymous, another site's cookie (unreadable or not), and a good session still play.
    for cookie in ["theme=dark", "theme=é", "sessionid=abc"] {
        let response = get_with(&public, &[("cookie", cookie)]).await;
        redirect_location(&response, cookie);
    }
    let token = idp_token(IDP_SECRET, IDP_ISSUER, serde_json::json!({"sub": "carol"}));
    let cookie = format!("theme=é; session={token}");
    redirect_location(
        &get_with(&public, &[("cookie", cookie.as_str())]).await,
        "a valid session",
    );
    gateway.shutdown().await;
}

// === 2. proxy-mode rules hand out no token ===

/// True when `text` holds something shaped like a JWT (three base64url parts, the first a
/// JSON header).
fn holds_a_token(text: &str) -> bool {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        .any(|word| word.starts_with("eyJ") && word.split('.').count() == 3)
}

#[tokio::test]
async fn no_endpoint_returns_a_token_for_a_proxy_mode_rule() {
    let gateway = TestGateway::start_with(&format!("{}mode: proxy\n", gateway_config())).await;
    let key = format!("Bearer {TEST_API_KEY}");
    let signatures = gateway.signatures();

    let api = post_json(
        &gateway.url("/api/getSignedURL"),
        r#"{"video_id": "intro"}"#,
        &[],
    )
    .await;
    assert_error(&api, 403, "proxy mode");
    assert!(api.text().contains("rule `public`"), "{}", api.text());
    assert!(api.text().contains("/watch/intro"), "{}", api.text());
    assert!(!holds_a_token(&api.text()), "{}", api.text());

    let token_api = post_json(
        &gateway.url(&format!("/accounts/{ACCOUNT_ID}/stream/intro/token")),
        "{}",
        &[("authorization", key.as_str())],
    )
    .await;
    assert_eq!(token_api.status.as_u16(), 403, "{}", token_api.text());
    let body: Value = serde_json::from_str(&token_api.text()).expect("Stream's envelope");
    assert_eq!(body["success"], false);
    assert_eq!(body["result"], Value::Null);
    let message = body["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("rule `ci-intro`") && message.contains("proxy mode"),
        "{body}"
    );
    assert_eq!(
        gateway.signatures(),
        signatures,
        "nothing was signed for them"
    );

    // The video still plays, through the gateway, with no token in sight.
    let to_player = get(&gateway.url("/watch/intro")).await;
    assert_eq!(
        redirect_location(&to_player, "proxied player"),
        "/watch/intro/iframe"
    );
    let player = get(&gateway.url("/watch/intro/iframe")).await;
    assert_eq!(player.status.as_u16(), 200, "{}", player.text());
    assert!(
        !holds_a_token(&player.text()),
        "the player page shows a token"
    );
    gateway.shutdown().await;
}

#[tokio::test]
async fn redirect_mode_rules_still_hand_out_tokens_next_to_proxy_mode_ones() {
    // The members rule proxies; the public one redirects.
    let config = gateway_config().replace(
        "    subjects: [authenticated]\n",
        "    subjects: [authenticated]\n    mode: proxy\n",
    );
    let gateway = TestGateway::start_with(&config).await;
    let key = format!("Bearer {TEST_API_KEY}");
    let public = post_json(
        &gateway.url("/api/getSignedURL"),
        r#"{"video_id": "intro"}"#,
        &[],
    )
    .await;
    assert_eq!(public.status.as_u16(), 200, "{}", public.text());
    assert!(holds_a_token(&public.text()));
    let members = post_json(
        &gateway.url("/api/getSignedURL"),
        r#"{"video_id": "keynote"}"#,
        &[("authorization", key.as_str())],
    )
    .await;
    assert_error(
        &members,
        403,
        "rule `members` serves this video in proxy mode",
    );
    gateway.shutdown().await;
}

#[test]
fn explain_says_a_proxy_mode_rule_hands_out_no_token() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, format!("{}mode: proxy\n", gateway_config())).expect("writing");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_streamgate"))
        .args(["--config", &path.display().to_string()])
        .args(["explain", "--video", "intro", "--anonymous"])
        .output()
        .expect("streamgate runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(
        stdout.contains("decision ALLOW by rule `public`"),
        "{stdout}"
    );
    assert!(
        stdout.contains("mode     proxy: watched through the gateway at /watch/intro"),
        "{stdout}"
    );
    assert!(
        stdout.contains("/api/getSignedURL and the token API answer 403"),
        "{stdout}"
    );
}

// === 3. the viewer's address comes from one configured header ===

/// [`gateway_config`] with the public rule binding tokens to the viewer's address, the peer
/// (127.0.0.1) and 10.0.0.0/8 trusted as proxies, and `header` as `client_address.header`.
fn bound_behind_proxies(header: Option<&str>) -> String {
    let config = gateway_config().replace(
        "    subjects: [anyone]\n",
        "    subjects: [anyone]\n    bind_client_ip: true\n",
    );
    let header = header.map_or(String::new(), |h| {
        format!("client_address:\n  header: {h}\n")
    });
    format!("{config}trusted_proxies: [127.0.0.1/32, 10.0.0.0/8]\n{header}")
}

/// The address the token for `/watch/intro` is bound to, for a request with `headers`.
async fn bound_address(gateway: &TestGateway, headers: &[(&str, &str)]) -> String {
    let response = get_with(&gateway.url("/watch/intro"), headers).await;
    let location = redirect_location(&response, &format!("{headers:?}"));
    let claims =
        decode_claims_unverified(&token_in_location(&location, &gateway.emulator_origin()));
    let rules = claims["accessRules"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(rules.len(), 2, "bound: ip.src allow, any block: {claims}");
    rules[0]["ip"][0].as_str().unwrap_or_default().to_string()
}

/// Every forwarding header at once, each naming a different client.
const MIXED: [(&str, &str); 4] = [
    ("x-forwarded-for", "203.0.113.9"),
    ("forwarded", "for=198.51.100.7"),
    ("x-real-ip", "198.51.100.8"),
    ("cf-connecting-ip", "198.51.100.9"),
];

#[tokio::test]
async fn only_the_configured_client_address_header_is_believed() {
    for (header, client) in [
        (None, "203.0.113.9"),
        (Some("X-Forwarded-For"), "203.0.113.9"),
        (Some("Forwarded"), "198.51.100.7"),
        (Some("x-real-ip"), "198.51.100.8"),
        (Some("CF-Connecting-IP"), "198.51.100.9"),
    ] {
        let gateway = TestGateway::start_with(&bound_behind_proxies(header)).await;
        assert_eq!(bound_address(&gateway, &MIXED).await, client, "{header:?}");
        // The others alone are ignored: the peer is the viewer.
        for other in MIXED {
            let is_configured = header
                .unwrap_or("x-forwarded-for")
                .eq_ignore_ascii_case(other.0);
            if !is_configured {
                assert_eq!(
                    bound_address(&gateway, &[other]).await,
                    "127.0.0.1",
                    "{header:?} configured, {other:?} sent"
                );
            }
        }
        gateway.shutdown().await;
    }
}

#[tokio::test]
async fn the_configured_header_is_walked_right_to_left_past_trusted_proxies() {
    let gateway = TestGateway::start_with(&bound_behind_proxies(None)).await;
    for (headers, client) in [
        // The client's own left-most entry is never preferred over what a proxy appended.
        (
            &[("x-forwarded-for", "198.51.100.1, 203.0.113.7")][..],
            "203.0.113.7",
        ),
        (
            &[("x-forwarded-for", "203.0.113.7, 10.1.1.1, 10.2.2.2")][..],
            "203.0.113.7",
        ),
        // Several header lines are one list, in order.
        (
            &[
                ("x-forwarded-for", "198.51.100.1, 203.0.113.7"),
                ("x-forwarded-for", "10.1.1.1"),
            ][..],
            "203.0.113.7",
        ),
        (
            &[
                ("x-forwarded-for", "10.1.1.1"),
                ("x-forwarded-for", "203.0.113.8"),
            ][..],
            "203.0.113.8",
        ),
        // IPv6: bare, bracketed, bracketed with a port; IPv4 with a port.
        (&[("x-forwarded-for", "2001:db8::5")][..], "2001:db8::5"),
        (&[("x-forwarded-for", "[2001:db8::6]")][..], "2001:db8::6"),
        (
            &[("x-forwarded-for", "[2001:db8::7]:4711, 10.1.1.1")][..],
            "2001:db8::7",
        ),
        (
            &[("x-forwarded-for", "203.0.113.10:5678")][..],
            "203.0.113.10",
        ),
        (
            &[("x-forwarded-for", "::ffff:203.0.113.11")][..],
            "203.0.113.11",
        ),
        // Malformed: the peer.
        (
            &[("x-forwarded-for", "203.0.113.7, garbage")][..],
            "127.0.0.1",
        ),
        (&[("x-forwarded-for", "unknown")][..], "127.0.0.1"),
        (&[("x-forwarded-for", "203.0.113.7:99999")][..], "127.0.0.1"),
        (
            &[("x-forwarded-for", "203.0.113.7, _hidden, 10.1.1.1")][..],
            "127.0.0.1",
        ),
    ] {
        assert_eq!(
            bound_address(&gateway, headers).await,
            client,
            "{headers:?}"
        );
    }
    gateway.shutdown().await;

    let gateway = TestGateway::start_with(&bound_behind_proxies(Some("Forwarded"))).await;
    for (headers, client) in [
        (
            &[("forwarded", r#"for="[2001:db8:cafe::17]:4711";proto=https"#)][..],
            "2001:db8:cafe::17",
        ),
        (
            &[
                ("forwarded", "for=198.51.100.1, for=203.0.113.7"),
                ("forwarded", "for=10.1.1.1;proto=https"),
            ][..],
            "203.0.113.7",
        ),
        (
            &[("forwarded", "for=203.0.113.7, for=unknown")][..],
            "127.0.0.1",
        ),
        (&[("forwarded", "proto=https")][..], "127.0.0.1"),
    ] {
        assert_eq!(
            bound_address(&gateway, headers).await,
            client,
            "{headers:?}"
        );
    }
    gateway.shutdown().await;
}

#[test]
fn an_unknown_client_address_header_is_a_config_error_without_the_value() {
    let yaml = bound_behind_proxies(Some("True-Client-IP"));
    let errors =
        Settings::from_yaml(&yaml, "test.yaml", std::path::Path::new("/")).expect_err("refused");
    let shown = errors.to_string();
    assert!(shown.contains("client_address.header"), "{shown}");
    assert!(shown.contains("X-Forwarded-For, Forwarded, X-Real-IP, CF-Connecting-IP"));
    assert!(!shown.contains("True-Client-IP"), "{shown}");
}

// === 8. identities carry their source ===

const PARTNER_ISSUER: &str = "https://partner.test";
const ALICE_PASSWORD: &str = "alice-test-only-password";

/// [`gateway_config`] with a local user `alice` in `staff`, the issuers `idp` (sharing local
/// names when `idp_shares`) and `partner` (never), and one rule per kind of subject.
fn two_sources(secret_file: &std::path::Path, idp_shares: bool) -> String {
    let issuers = format!(
        "jwt_issuers:\n  - issuer: {IDP_ISSUER}\n    name: idp\n    shares_local_names: {idp_shares}\n    audience: streamgate\n    algorithms: [HS256]\n    secret: {{file: {secret}}}\n    groups_claim: groups\n  - issuer: {PARTNER_ISSUER}\n    name: partner\n    audience: streamgate\n    algorithms: [HS256]\n    secret: {{file: {secret}}}\n    groups_claim: groups\n",
        secret = secret_file.display()
    );
    let config = gateway_config().replace(
        "api_keys:\n",
        "  alice-clip:\n    uid: 44444444444444444444444444444444\n  staff-clip:\n    uid: 55555555555555555555555555555555\n  partner-clip:\n    uid: 66666666666666666666666666666666\napi_keys:\n",
    );
    format!(
        "{config}  - name: alice-only\n    videos: [alice-clip]\n    subjects: [user:alice]\n  - name: staff\n    videos: [staff-clip]\n    subjects: [group:staff]\n  - name: partner-alice\n    videos: [partner-clip]\n    subjects: [\"user:partner:alice\", \"group:partner:reviewers\"]\nusers:\n  alice:\n    password: \"{}\"\n    groups: [staff]\n{issuers}",
        argon2_phc(ALICE_PASSWORD)
    )
}

/// The status of `/watch/<video>` with `headers`.
async fn watch_status(gateway: &TestGateway, video: &str, headers: &[(&str, &str)]) -> u16 {
    get_with(&gateway.url(&format!("/watch/{video}")), headers)
        .await
        .status
        .as_u16()
}

#[tokio::test]
async fn a_second_issuers_alice_and_staff_do_not_match_the_local_users_rules() {
    let secret = temp_file_with(IDP_SECRET);
    let gateway = TestGateway::start_with(&two_sources(secret.path(), false)).await;
    let basic = basic_auth("alice", ALICE_PASSWORD);
    let local = [("authorization", basic.as_str())];
    let bearer =
        |issuer: &str, claims: Value| format!("Bearer {}", idp_token(IDP_SECRET, issuer, claims));
    let partner_alice = bearer(
        PARTNER_ISSUER,
        serde_json::json!({"sub": "alice", "groups": ["staff", "reviewers"]}),
    );
    let partner = [("authorization", partner_alice.as_str())];
    let idp_alice = bearer(
        IDP_ISSUER,
        serde_json::json!({"sub": "alice", "groups": ["staff", "reviewers"]}),
    );
    let idp = [("authorization", idp_alice.as_str())];

    // The local user's rules.
    assert_eq!(watch_status(&gateway, "alice-clip", &local).await, 302);
    assert_eq!(watch_status(&gateway, "staff-clip", &local).await, 302);
    // The review's escalation: a token with sub alice and groups [staff] from other issuers.
    for (who, headers) in [("partner", &partner), ("idp", &idp)] {
        assert_eq!(
            watch_status(&gateway, "alice-clip", headers).await,
            403,
            "{who}"
        );
        assert_eq!(
            watch_status(&gateway, "staff-clip", headers).await,
            403,
            "{who}"
        );
    }
    // The qualified forms name one issuer's alice and reviewers, and only them.
    assert_eq!(watch_status(&gateway, "partner-clip", &partner).await, 302);
    assert_eq!(watch_status(&gateway, "partner-clip", &idp).await, 403);
    assert_eq!(watch_status(&gateway, "partner-clip", &local).await, 403);
    let reviewer = bearer(
        PARTNER_ISSUER,
        serde_json::json!({"sub": "rita", "groups": ["reviewers"]}),
    );
    assert_eq!(
        watch_status(
            &gateway,
            "partner-clip",
            &[("authorization", reviewer.as_str())]
        )
        .await,
        302
    );
    // `authenticated` still covers every source.
    assert_eq!(watch_status(&gateway, "keynote", &partner).await, 302);
    gateway.shutdown().await;

    // An issuer that shares the local names (the organisation's own) matches them.
    let gateway = TestGateway::start_with(&two_sources(secret.path(), true)).await;
    assert_eq!(watch_status(&gateway, "alice-clip", &idp).await, 302);
    assert_eq!(watch_status(&gateway, "staff-clip", &idp).await, 302);
    assert_eq!(watch_status(&gateway, "alice-clip", &partner).await, 403);
    assert_eq!(watch_status(&gateway, "staff-clip", &partner).await, 403);
    gateway.shutdown().await;
}

#[test]
fn check_warns_when_one_name_can_come_from_two_sources() {
    let secret = temp_file_with(IDP_SECRET);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("config.yaml");
    let run = |yaml: &str| {
        std::fs::write(&path, yaml).expect("writing the configuration");
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_streamgate"))
            .args(["--config", &path.display().to_string(), "check"])
            .output()
            .expect("streamgate runs");
        assert!(output.status.success(), "{output:?}");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let shared = run(&two_sources(secret.path(), true));
    assert!(
        shared.contains(
            "warning: rules[3].subjects[0]: this name may come from users and jwt_issuers[0]"
        ),
        "{shared}"
    );
    assert!(
        shared.contains("warning: rules[4].subjects[0]: this group may come from users and api_keys and jwt_issuers[0]"),
        "{shared}"
    );
    let apart = run(&two_sources(secret.path(), false));
    assert!(!apart.contains("may come from"), "{apart}");
}

#[test]
fn explain_tells_a_second_issuers_alice_from_the_local_one() {
    let secret = temp_file_with(IDP_SECRET);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, two_sources(secret.path(), false)).expect("writing");
    let explain = |extra: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_streamgate"))
            .args(["--config", &path.display().to_string(), "explain"])
            .args(["--video", "alice-clip", "--user", "alice"])
            .args(extra)
            .output()
            .expect("streamgate runs");
        assert!(output.status.success(), "{output:?}");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let local = explain(&[]);
    assert!(
        local.contains("subject  user:alice groups: [staff]"),
        "{local}"
    );
    assert!(
        local.contains("decision ALLOW by rule `alice-only`"),
        "{local}"
    );
    let partner = explain(&["--issuer", "partner", "--groups", "staff"]);
    assert!(
        partner.contains(&format!(
            "subject  jwt:alice from {PARTNER_ISSUER} groups: [staff]"
        )),
        "{partner}"
    );
    assert!(
        partner.contains("skipped: covers only user:alice"),
        "{partner}"
    );
    assert!(partner.contains("decision DENY"), "{partner}");
}
