//! Embedding and integration over HTTP: Stream's token API served by the gateway, CORS for
//! `/api/*`, and the demo page's content for each kind of visitor. (The demo page in a real
//! browser is `tests/browser.rs`.)

mod common;

use common::*;
use http::Method;
use serde_json::{Value, json};

const ACCOUNT: &str = "023e105f4ecef8ad9ca31a8372d0c353";
const APP_KEY: &str = "test-only-app-key";
const OTHER_KEY: &str = "test-only-other-key";
const ARCHIVE_UID: &str = "aaaabbbbccccddddeeeeffff00001111";
const ALLOWED_ORIGIN: &str = "https://www.example.com";

/// Rules for the token API: the `app` key gets `intro` with downloads and no access rules,
/// and `keynote` for 2 h with downloads and a country block; any caller gets `intro` for
/// 30 min; authenticated callers get `keynote` (no downloads). Nobody gets `archive`.
fn config(extra: &str) -> String {
    format!(
        "\
listen: 127.0.0.1:0
stream:
  emulator:
    listen: 127.0.0.1:0
    country_header: CF-IPCountry
signing_keys:
  - id: {FIXTURE_KID}
    file: test-only-signing-key.pem
token:
  ttl: 1h
  min_remaining: 10m
videos:
  intro: {{uid: {VIDEO_UID}, title: \"Intro <b>&</b> welcome\", tags: [public]}}
  keynote: {{uid: {OTHER_VIDEO_UID}, title: Keynote, tags: [members]}}
  archive: {{uid: {ARCHIVE_UID}, tags: [archive]}}
api_keys:
  - {{name: app, sha256: {app}, groups: [apps]}}
  - {{name: other, sha256: {other}}}
users:
  alice: {{password: \"{alice}\", groups: [staff]}}
rules:
  - name: apps-intro
    videos: [intro]
    subjects: [group:apps]
    ttl: 2h
    downloadable: true
  - name: apps-keynote
    videos: [keynote]
    subjects: [group:apps]
    ttl: 2h
    downloadable: true
    countries: {{block: [KP]}}
  - name: public
    videos: [\"tag:public\"]
    subjects: [anyone]
    ttl: 30m
  - name: members
    videos: [\"tag:members\"]
    subjects: [authenticated]
{extra}",
        app = streamgate::identity::hash_api_key(APP_KEY),
        other = streamgate::identity::hash_api_key(OTHER_KEY),
        alice = argon2_phc("alice-password"),
    )
}

async fn start(extra: &str) -> TestGateway {
    TestGateway::start_with(&config(extra)).await
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

/// `POST /accounts/ACCOUNT/stream/<video>/token` with `body` (None = no body at all).
async fn stream_token(
    gateway: &TestGateway,
    video: &str,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> TestResponse {
    let path = format!("/accounts/{ACCOUNT}/stream/{video}/token");
    let body = body.map(|b| b.to_string().into_bytes());
    let mut all = vec![("content-type", "application/json")];
    all.extend_from_slice(headers);
    send(Method::POST, &gateway.url(&path), &all, body).await
}

/// The token of a successful answer, after checking Stream's envelope exactly.
fn token_of(response: &TestResponse) -> String {
    assert_eq!(response.status.as_u16(), 200, "{}", response.text());
    assert_eq!(response.header("content-type"), Some("application/json"));
    let body: Value = serde_json::from_slice(&response.body).expect("JSON body");
    let object = body.as_object().expect("an object");
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["errors", "messages", "result", "success"]);
    assert_eq!(body["success"], true);
    assert_eq!(body["errors"], json!([]));
    assert_eq!(body["messages"], json!([]));
    assert_eq!(
        body["result"].as_object().map(|r| r.len()),
        Some(1),
        "result holds only the token: {body}"
    );
    body["result"]["token"]
        .as_str()
        .expect("result.token is a string")
        .to_string()
}

/// A failure in Cloudflare's shape: `success: false`, one error with `code` and a message
/// containing `needle`, `result: null`.
fn assert_stream_error(response: &TestResponse, status: u16, code: u64, needle: &str) {
    assert_eq!(response.status.as_u16(), status, "{}", response.text());
    let body: Value = serde_json::from_slice(&response.body)
        .unwrap_or_else(|_| panic!("error body should be JSON: {}", response.text()));
    assert_eq!(body["success"], false, "{body}");
    assert_eq!(body["result"], Value::Null, "{body}");
    assert_eq!(body["messages"], json!([]), "{body}");
    let errors = body["errors"].as_array().expect("errors is an array");
    assert_eq!(errors.len(), 1, "{body}");
    assert_eq!(errors[0]["code"], code, "{body}");
    let message = errors[0]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(needle),
        "expected {needle:?} in {message:?}"
    );
}

/// What the emulator answers for the player page with `token`, from 127.0.0.1.
async fn emulator_status(gateway: &TestGateway, token: &str) -> u16 {
    get(&format!("{}/{token}/iframe", gateway.emulator_origin()))
        .await
        .status
        .as_u16()
}

fn assert_near(actual: &Value, expected: i64, what: &str) {
    let actual = actual
        .as_i64()
        .unwrap_or_else(|| panic!("{what} is an integer"));
    assert!(
        (actual - expected).abs() <= 5,
        "{what}: {actual}, expected about {expected}"
    );
}

// === Stream's token API ===

#[tokio::test]
async fn an_empty_body_gets_streams_defaults_and_the_token_plays() {
    let gateway = start("").await;
    let auth = bearer(APP_KEY);
    for body in [None, Some(json!({}))] {
        let response = stream_token(&gateway, "intro", body, &[("authorization", &auth)]).await;
        let token = token_of(&response);
        let claims = decode_claims_unverified(&token);
        assert_eq!(claims["sub"], VIDEO_UID);
        assert_eq!(claims["kid"], FIXTURE_KID);
        assert_near(&claims["exp"], unix_now() + 3600, "exp");
        assert_near(&claims["nbf"], unix_now() - 3600, "nbf");
        assert!(claims.get("downloadable").is_none(), "{claims}");
        assert!(claims.get("accessRules").is_none(), "{claims}");
        assert_eq!(emulator_status(&gateway, &token).await, 200);
    }
    // The video may be named by its uid, as Stream's clients do, and each call signs anew
    // (as Stream's endpoint does; the cache is for /watch).
    let before = gateway.signatures();
    for _ in 0..2 {
        let by_uid = stream_token(&gateway, VIDEO_UID, None, &[("x-api-key", APP_KEY)]).await;
        assert_eq!(
            decode_claims_unverified(&token_of(&by_uid))["sub"],
            VIDEO_UID
        );
    }
    assert_eq!(gateway.signatures(), before + 2);
    gateway.shutdown().await;
}

#[tokio::test]
async fn streams_documented_request_is_honoured_field_by_field() {
    let gateway = start("").await;
    let exp = unix_now() + 1800;
    let nbf = unix_now() - 60;
    // The request body of Stream's API reference, without the key fields.
    let documented = json!({
        "exp": exp,
        "nbf": nbf,
        "downloadable": true,
        "accessRules": [
            {"type": "ip.geoip.country", "action": "block", "country": ["US", "MX"]},
            {"type": "ip.src", "action": "allow", "ip": ["93.184.216.0/24", "2400:cb00::/32"]},
            {"type": "any", "action": "block"}
        ]
    });
    let auth = bearer(APP_KEY);
    let response = stream_token(
        &gateway,
        "intro",
        Some(documented.clone()),
        &[("authorization", &auth)],
    )
    .await;
    let token = token_of(&response);
    let claims = decode_claims_unverified(&token);
    assert_eq!(claims["exp"], exp);
    assert_eq!(claims["nbf"], nbf);
    assert_eq!(claims["downloadable"], true);
    assert_eq!(claims["accessRules"], documented["accessRules"]);
    // The rules are really in the signed token: 127.0.0.1 is not in the allowed ranges.
    assert_eq!(emulator_status(&gateway, &token).await, 401);

    // With Stream's key fields, the request is refused: keys stay in the gateway.
    let mut with_key = documented.clone();
    with_key["id"] = json!("ab0d4ef71g4425f8dcba9041231813000");
    with_key["pem"] = json!("LS0tLS1CRUdJTiBSU0EgUFJJVkFURSBLRVktLS0tLQo=");
    let refused = stream_token(
        &gateway,
        "intro",
        Some(with_key),
        &[("authorization", &auth)],
    )
    .await;
    assert_stream_error(&refused, 400, 400, "signs with its own keys");
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_request_may_narrow_the_grant() {
    let gateway = start("").await;
    let auth = bearer(APP_KEY);
    let exp = unix_now() + 600;
    let response = stream_token(
        &gateway,
        "keynote",
        Some(json!({
            "exp": exp,
            "downloadable": false,
            "accessRules": [{"type": "ip.src", "action": "block", "ip": ["127.0.0.1/32"]}]
        })),
        &[("authorization", &auth)],
    )
    .await;
    let token = token_of(&response);
    let claims = decode_claims_unverified(&token);
    assert_eq!(claims["exp"], exp);
    assert!(claims.get("downloadable").is_none(), "{claims}");
    // The request's block rule first, then the policy's country block.
    assert_eq!(
        claims["accessRules"],
        json!([
            {"type": "ip.src", "action": "block", "ip": ["127.0.0.1/32"]},
            {"type": "ip.geoip.country", "action": "block", "country": ["KP"]}
        ])
    );
    assert_eq!(emulator_status(&gateway, &token).await, 401);

    // Without the extra rule the same grant plays here, and downloads are allowed.
    let plain = stream_token(
        &gateway,
        "keynote",
        Some(json!({"downloadable": true})),
        &[("authorization", &auth)],
    )
    .await;
    let token = token_of(&plain);
    assert_eq!(decode_claims_unverified(&token)["downloadable"], true);
    assert_eq!(emulator_status(&gateway, &token).await, 200);
    gateway.shutdown().await;
}

#[tokio::test]
async fn widening_the_grant_is_a_403_naming_the_field() {
    let gateway = start("").await;
    let app = bearer(APP_KEY);
    let other = bearer(OTHER_KEY);
    let before = gateway.signatures();
    let cases = [
        // apps-keynote grants 2 h.
        (
            &app,
            "keynote",
            json!({"exp": unix_now() + 3 * 3600}),
            "`exp`",
        ),
        // members grants no downloads.
        (
            &other,
            "keynote",
            json!({"downloadable": true}),
            "`downloadable`",
        ),
        // apps-keynote already has access rules: no allow rules on top.
        (
            &app,
            "keynote",
            json!({"accessRules": [{"type": "any", "action": "allow"}]}),
            "`accessRules`",
        ),
    ];
    for (auth, video, body, field) in cases {
        let response = stream_token(&gateway, video, Some(body), &[("authorization", auth)]).await;
        assert_stream_error(&response, 403, 403, field);
    }
    assert_eq!(gateway.signatures(), before, "nothing was signed");
    gateway.shutdown().await;
}

#[tokio::test]
async fn what_stream_would_refuse_is_a_400() {
    let gateway = start("").await;
    let auth = bearer(APP_KEY);
    let block = json!({"type": "ip.geoip.country", "action": "block", "country": ["RU"]});
    let cases = [
        (json!({"exp": unix_now() + 25 * 3600}), "24 hours"),
        (json!({"exp": unix_now() - 10}), "not in the future"),
        (
            json!({"exp": unix_now() + 600, "nbf": unix_now() + 700}),
            "`nbf` must be before `exp`",
        ),
        (json!({"accessRules": vec![block.clone(); 6]}), "at most 5"),
        // Five of the request's and the policy's country rule make six.
        (
            json!({"accessRules": vec![block.clone(); 5]}),
            "would carry 6",
        ),
        (json!({"exp": "tomorrow"}), "`exp`"),
        (json!({"access_rules": []}), "unknown field `access_rules`"),
    ];
    for (body, needle) in cases {
        let response =
            stream_token(&gateway, "keynote", Some(body), &[("authorization", &auth)]).await;
        assert_stream_error(&response, 400, 400, needle);
    }
    let path = format!("/accounts/{ACCOUNT}/stream/keynote/token");
    let malformed = send(
        Method::POST,
        &gateway.url(&path),
        &[("authorization", &auth)],
        Some(b"{\"exp\": ".to_vec()),
    )
    .await;
    assert_stream_error(&malformed, 400, 400, "malformed JSON");
    gateway.shutdown().await;
}

#[tokio::test]
async fn only_api_keys_may_call_the_token_api() {
    let gateway = start("").await;
    let anonymous = stream_token(&gateway, "intro", None, &[]).await;
    assert_stream_error(&anonymous, 401, 10000, "API key");
    assert_eq!(
        anonymous.header("www-authenticate"),
        Some("Bearer realm=\"streamgate\"")
    );
    let wrong = stream_token(&gateway, "intro", None, &[("authorization", "Bearer nope")]).await;
    assert_stream_error(&wrong, 401, 10000, "");
    let alice = basic_auth("alice", "alice-password");
    let user = stream_token(&gateway, "intro", None, &[("authorization", &alice)]).await;
    assert_stream_error(&user, 403, 403, "API keys only");
    // Authenticated, but no rule allows it.
    let other = bearer(OTHER_KEY);
    let denied = stream_token(&gateway, "archive", None, &[("authorization", &other)]).await;
    assert_stream_error(&denied, 403, 403, "does not allow");
    let unknown = stream_token(
        &gateway,
        UNKNOWN_VIDEO_UID,
        None,
        &[("authorization", &other)],
    )
    .await;
    assert_stream_error(&unknown, 404, 404, "no video");
    gateway.shutdown().await;
}

#[tokio::test]
async fn the_token_api_checks_method_and_account() {
    let gateway = start(&format!("token_api:\n  account_id: {ACCOUNT}\n")).await;
    let auth = bearer(APP_KEY);
    let path = format!("/accounts/{ACCOUNT}/stream/intro/token");
    let get = get_with(&gateway.url(&path), &[("authorization", &auth)]).await;
    assert_stream_error(&get, 405, 405, "method not allowed");
    assert_eq!(get.header("allow"), Some("POST"));
    let foreign = send(
        Method::POST,
        &gateway.url("/accounts/ffffffffffffffffffffffffffffffff/stream/intro/token"),
        &[("authorization", &auth)],
        None,
    )
    .await;
    assert_stream_error(
        &foreign,
        404,
        404,
        "does not mint tokens for account ffffffffffffffffffffffffffffffff",
    );
    let malformed = send(
        Method::POST,
        &gateway.url("/accounts/not-an-account/stream/intro/token"),
        &[("authorization", &auth)],
        None,
    )
    .await;
    assert_stream_error(&malformed, 400, 400, "not an account id");
    // The configured account works, in either case.
    let upper = format!("/accounts/{}/stream/intro/token", ACCOUNT.to_uppercase());
    let ok = send(
        Method::POST,
        &gateway.url(&upper),
        &[("authorization", &auth)],
        None,
    )
    .await;
    token_of(&ok);
    gateway.shutdown().await;

    let off = start("token_api:\n  enabled: false\n").await;
    let response = stream_token(&off, "intro", None, &[("authorization", &auth)]).await;
    assert_stream_error(&response, 404, 404, "turned off");
    off.shutdown().await;
}

// === CORS for /api/* ===

fn cors_config() -> String {
    format!("cors:\n  allowed_origins: [\"{ALLOWED_ORIGIN}\"]\n  max_age: 5m\n")
}

async fn post_signed_url(gateway: &TestGateway, headers: &[(&str, &str)]) -> TestResponse {
    post_get_signed_url(gateway, r#"{"video_id": "keynote"}"#, headers).await
}

#[tokio::test]
async fn preflight_is_answered_for_allowed_origins_only() {
    let gateway = start(&cors_config()).await;
    let preflight = |origin: &'static str| {
        let url = gateway.url("/api/getSignedURL");
        async move {
            send(
                Method::OPTIONS,
                &url,
                &[
                    ("origin", origin),
                    ("access-control-request-method", "POST"),
                    ("access-control-request-headers", "content-type"),
                ],
                None,
            )
            .await
        }
    };
    let allowed = preflight(ALLOWED_ORIGIN).await;
    assert_eq!(allowed.status.as_u16(), 204, "{}", allowed.text());
    assert_eq!(
        allowed.header("access-control-allow-origin"),
        Some(ALLOWED_ORIGIN)
    );
    assert_eq!(
        allowed.header("access-control-allow-credentials"),
        Some("true")
    );
    assert_eq!(
        allowed.header("access-control-allow-methods"),
        Some("POST, OPTIONS")
    );
    let headers = allowed.header("access-control-allow-headers").unwrap();
    assert!(headers.contains("Content-Type"), "{headers}");
    assert_eq!(allowed.header("access-control-max-age"), Some("300"));
    assert!(allowed.header("vary").is_some());

    let other = preflight("https://evil.example").await;
    assert_error(&other, 403, "https://evil.example");
    assert!(other.header("access-control-allow-origin").is_none());
    gateway.shutdown().await;
}

#[tokio::test]
async fn credentialed_requests_work_from_allowed_origins_and_are_refused_from_others() {
    let gateway = start(&cors_config()).await;
    let alice = basic_auth("alice", "alice-password");

    let allowed = post_signed_url(
        &gateway,
        &[("origin", ALLOWED_ORIGIN), ("authorization", &alice)],
    )
    .await;
    assert_eq!(allowed.status.as_u16(), 200, "{}", allowed.text());
    assert_eq!(
        allowed.header("access-control-allow-origin"),
        Some(ALLOWED_ORIGIN)
    );
    assert_eq!(
        allowed.header("access-control-allow-credentials"),
        Some("true")
    );
    assert!(
        allowed
            .header("access-control-expose-headers")
            .is_some_and(|h| h.contains("X-Request-Id"))
    );
    // A refusal for a listed origin carries the headers too, so the page can read why.
    let anonymous = post_signed_url(&gateway, &[("origin", ALLOWED_ORIGIN)]).await;
    assert_eq!(anonymous.status.as_u16(), 401);
    assert_eq!(
        anonymous.header("access-control-allow-origin"),
        Some(ALLOWED_ORIGIN)
    );

    // Another site's page cannot use the visitor's credentials: refused before anything.
    let before = gateway.signatures();
    let evil = post_signed_url(
        &gateway,
        &[
            ("origin", "https://evil.example"),
            ("authorization", &alice),
        ],
    )
    .await;
    assert_error(
        &evil,
        403,
        "cross-origin requests from `https://evil.example`",
    );
    assert!(evil.header("access-control-allow-origin").is_none());
    assert_eq!(gateway.signatures(), before);

    // The gateway's own pages (Origin = the host they were served from) and clients that
    // send no Origin get no CORS headers and no refusal.
    let own = gateway.origin().to_string();
    for headers in [
        vec![("origin", own.as_str()), ("authorization", alice.as_str())],
        vec![("authorization", alice.as_str())],
    ] {
        let response = post_signed_url(&gateway, &headers).await;
        assert_eq!(response.status.as_u16(), 200, "{}", response.text());
        assert!(response.header("access-control-allow-origin").is_none());
    }
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_bad_cors_origin_is_a_configuration_error_naming_the_field() {
    for origin in ["*", "https://www.example.com/path", "www.example.com"] {
        let yaml = config(&format!("cors:\n  allowed_origins: [\"{origin}\"]\n"));
        let errors =
            streamgate::config::Settings::from_yaml(&yaml, "embed.yaml", &fixture_path(""))
                .err()
                .unwrap_or_else(|| panic!("{origin} should be refused"))
                .to_string();
        assert!(
            errors.contains("embed.yaml") && errors.contains("cors.allowed_origins[0]"),
            "{errors}"
        );
    }
}

// === the demo page ===

async fn home(gateway: &TestGateway, headers: &[(&str, &str)]) -> TestResponse {
    get_with(&gateway.url("/"), headers).await
}

#[tokio::test]
async fn the_demo_page_lists_what_each_visitor_may_watch() {
    let gateway = start("").await;
    let anonymous = home(&gateway, &[]).await;
    assert_eq!(anonymous.status.as_u16(), 200);
    assert_eq!(
        anonymous.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(anonymous.header("cache-control"), Some("private, no-store"));
    assert_eq!(anonymous.header("referrer-policy"), Some("no-referrer"));
    let csp = anonymous.header("content-security-policy").unwrap();
    assert!(
        csp.contains(&format!("frame-src 'self' {}", gateway.emulator_origin())),
        "{csp}"
    );
    let page = anonymous.text();
    assert!(page.contains("Not signed in"), "{page}");
    assert!(page.contains(r#"data-video="intro""#));
    assert!(!page.contains(r#"data-video="keynote""#));
    assert!(page.contains(r#"<iframe id="player" name="player" src="/watch/intro""#));
    // Titles from the configuration are escaped.
    assert!(page.contains("Intro &lt;b&gt;&amp;&lt;/b&gt; welcome"));
    assert!(!page.contains("<b>&</b>"));
    assert!(page.contains(r#"<a id="sign-in" href="/sign-in">"#));

    let alice = basic_auth("alice", "alice-password");
    let signed_in = home(&gateway, &[("authorization", &alice)]).await.text();
    assert!(signed_in.contains(r#"<strong id="subject">alice</strong>"#));
    assert!(signed_in.contains(r#"data-video="keynote""#));
    assert!(!signed_in.contains(r#"data-video="archive""#));

    // A wrong credential is refused, not shown as anonymous.
    let wrong = basic_auth("alice", "wrong");
    assert_eq!(
        home(&gateway, &[("authorization", &wrong)])
            .await
            .status
            .as_u16(),
        401
    );
    gateway.shutdown().await;
}

#[tokio::test]
async fn the_demo_page_serves_its_files_and_sign_in() {
    let gateway = start("").await;
    for (path, content_type, needle) in [
        (
            "/assets/demo.js",
            "text/javascript; charset=utf-8",
            "/api/getSignedURL",
        ),
        ("/assets/demo.css", "text/css; charset=utf-8", "#video-list"),
        ("/assets/favicon.svg", "image/svg+xml", "<svg"),
    ] {
        let response = get(&gateway.url(path)).await;
        assert_eq!(response.status.as_u16(), 200, "{path}");
        assert_eq!(response.header("content-type"), Some(content_type));
        assert!(response.text().contains(needle), "{path}");
    }
    assert_eq!(
        get(&gateway.url("/assets/nope.js")).await.status.as_u16(),
        404
    );

    let ask = get(&gateway.url("/sign-in")).await;
    assert_eq!(ask.status.as_u16(), 401);
    let challenges: Vec<&str> = ask
        .headers
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert!(
        challenges.iter().any(|c| c.starts_with("Basic")),
        "{challenges:?}"
    );
    let alice = basic_auth("alice", "alice-password");
    let back = get_with(&gateway.url("/sign-in"), &[("authorization", &alice)]).await;
    assert_eq!(back.status.as_u16(), 303);
    assert_eq!(back.header("location"), Some("/"));
    gateway.shutdown().await;
}

#[tokio::test]
async fn the_demo_page_can_be_turned_off() {
    let gateway = start("demo_page: false\n").await;
    for path in ["/", "/assets/demo.js", "/sign-in"] {
        assert_error(&get(&gateway.url(path)).await, 404, "turned off");
    }
    // The rest of the gateway is unaffected.
    assert_eq!(get(&gateway.url("/watch/intro")).await.status.as_u16(), 302);
    gateway.shutdown().await;
}
