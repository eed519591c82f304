//! Authorization over the real HTTP path: the matrix in `tests/fixtures/authz-matrix.yaml`
//! (who × video × client address → status and token claims), tokens bound to the client
//! address as the emulator judges them, forwarded headers from trusted and untrusted peers,
//! and what browsers get when they are refused.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;

use common::*;
use serde::Deserialize;
use serde_json::{Value, json};

/// The HS256 secret of the matrix's `https://idp.test` issuer.
const MATRIX_JWT_SECRET: &[u8] = b"matrix-test-only-hs256-secret-0123456789";
const MATRIX_ISSUER: &str = "https://idp.test";
const MATRIX_AUDIENCE: &str = "streamgate";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Matrix {
    config: String,
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    who: String,
    #[serde(default)]
    claims: serde_json::Map<String, Value>,
    video: String,
    #[serde(default)]
    download: bool,
    xff: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    status: u16,
    reason: Option<String>,
    #[serde(default)]
    downloadable: bool,
    access_rules: Option<Value>,
    ttl: Option<String>,
    exp: Option<String>,
}

/// What the fixture's placeholders stand for.
struct Placeholders {
    now: u64,
    key_file: String,
    jwt_secret_file: String,
}

/// Replace every `{{...}}` in `template`.
fn render(template: &str, values: &Placeholders) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .unwrap_or_else(|| panic!("unclosed placeholder at {:?}", &rest[start..]));
        out.push_str(&expand(after[..end].trim(), values));
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

fn expand(name: &str, values: &Placeholders) -> String {
    if name == "key_file" {
        return values.key_file.clone();
    }
    if name == "jwt_secret_file" {
        return values.jwt_secret_file.clone();
    }
    if let Some(offset) = name.strip_prefix("now") {
        return streamgate::authz::policy::rfc3339(relative_time(values.now, offset));
    }
    if let Some(password) = name.strip_prefix("argon2:") {
        return argon2_phc(password);
    }
    if let Some(key) = name.strip_prefix("api_key_digest:") {
        return streamgate::identity::hash_api_key(key);
    }
    panic!("unknown placeholder {{{{{name}}}}}");
}

/// `now` moved by `offset` (``, `+20m`, `-1h`).
fn relative_time(now: u64, offset: &str) -> u64 {
    if offset.is_empty() {
        return now;
    }
    let (sign, amount) = offset.split_at(1);
    let amount = humantime::parse_duration(amount)
        .unwrap_or_else(|e| panic!("bad time offset {offset:?}: {e}"))
        .as_secs();
    match sign {
        "+" => now + amount,
        "-" => now - amount,
        _ => panic!("a time offset starts with + or -: {offset:?}"),
    }
}

/// The uid behind a case's `video`: the alias looked up in the config, or the uid itself.
fn uid_of(video: &str, uids: &HashMap<String, String>) -> String {
    uids.get(video)
        .cloned()
        .unwrap_or_else(|| video.to_string())
}

fn video_uids(config: &str) -> HashMap<String, String> {
    let parsed: serde_yaml::Value = serde_yaml::from_str(config).expect("config is YAML");
    parsed["videos"]
        .as_mapping()
        .expect("config has videos")
        .iter()
        .map(|(alias, video)| {
            (
                alias.as_str().expect("alias").to_string(),
                video["uid"].as_str().expect("uid").to_string(),
            )
        })
        .collect()
}

/// The request headers that present `who`.
fn credentials(case: &Case) -> Vec<(String, String)> {
    let who = case.who.as_str();
    if who == "anonymous" {
        return vec![];
    }
    if who == "jwt" || who.starts_with("jwt:") {
        let issuer = who.strip_prefix("jwt:").unwrap_or(MATRIX_ISSUER);
        let mut claims = case.claims.clone();
        claims.insert("iss".into(), json!(issuer));
        claims.insert("aud".into(), json!(MATRIX_AUDIENCE));
        claims.insert("iat".into(), json!(unix_now()));
        claims.insert("exp".into(), json!(unix_now() + 3600));
        let token = mint_hs256(MATRIX_JWT_SECRET, &Value::Object(claims));
        return vec![("authorization".into(), format!("Bearer {token}"))];
    }
    if let Some(key) = who.strip_prefix("api_key:") {
        return vec![("authorization".into(), format!("Bearer {key}"))];
    }
    if let Some(pair) = who.strip_prefix("basic:") {
        let (user, password) = pair.split_once(':').expect("basic:<user>:<password>");
        return vec![("authorization".into(), basic_auth(user, password))];
    }
    panic!("case {:?}: unknown `who` {who:?}", case.name);
}

/// Run one case; `Err` describes every mismatch.
async fn run_case(
    gateway: &TestGateway,
    case: &Case,
    uids: &HashMap<String, String>,
    nbf_backdate: u64,
) -> Result<(), String> {
    let resource = if case.download {
        "downloads/default.mp4"
    } else {
        "iframe"
    };
    let path = if case.download {
        format!("/watch/{}/{resource}", case.video)
    } else {
        format!("/watch/{}", case.video)
    };
    let mut headers = credentials(case);
    if let Some(xff) = &case.xff {
        headers.push(("x-forwarded-for".into(), xff.clone()));
    }
    for (name, value) in &case.headers {
        headers.push((name.clone(), value.clone()));
    }
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let response = get_with(&gateway.url(&path), &headers).await;
    let status = response.status.as_u16();
    if status != case.status {
        return Err(format!(
            "GET {path}: expected {}, got {status}: {}",
            case.status,
            response.text()
        ));
    }
    if status != 302 {
        let body: Value = serde_json::from_slice(&response.body)
            .map_err(|_| format!("error body is not JSON: {}", response.text()))?;
        if body["status"] != json!(status) {
            return Err(format!("error body has the wrong status: {body}"));
        }
        let message = body["error"].as_str().unwrap_or_default();
        if let Some(reason) = &case.reason
            && !message.contains(reason.as_str())
        {
            return Err(format!(
                "expected reason containing {reason:?}, got {message:?}"
            ));
        }
        if status == 401 && response.header("www-authenticate").is_none() {
            return Err("a 401 without WWW-Authenticate".into());
        }
        return Ok(());
    }

    let location = response.header("location").unwrap_or_default().to_string();
    let origin = gateway.emulator_origin();
    if !location.starts_with(&format!("{origin}/")) || !location.ends_with(&format!("/{resource}"))
    {
        return Err(format!(
            "Location {location:?} is not {origin}/<token>/{resource}"
        ));
    }
    let claims = decode_claims_unverified(&token_in_location(&location, &origin));
    let mut problems = Vec::new();
    let uid = uid_of(&case.video, uids);
    if claims["sub"] != json!(uid) {
        problems.push(format!("sub {} is not {uid}", claims["sub"]));
    }
    let downloadable = claims
        .get("downloadable")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if downloadable != case.downloadable {
        problems.push(format!(
            "downloadable is {downloadable}, expected {}",
            case.downloadable
        ));
    }
    let rules = claims.get("accessRules").cloned().unwrap_or(json!([]));
    let expected_rules = case.access_rules.clone().unwrap_or(json!([]));
    if rules != expected_rules {
        problems.push(format!(
            "accessRules are {rules}, expected {expected_rules}"
        ));
    }
    let exp = claims["exp"].as_u64().unwrap_or_default();
    let nbf = claims["nbf"].as_u64().unwrap_or_default();
    match (&case.exp, &case.ttl) {
        (Some(_), Some(_)) => problems.push("a case sets exp or ttl, not both".into()),
        (Some(end), None) => {
            let end = streamgate::config::parse_rfc3339(end)
                .ok_or_else(|| format!("`exp: {end}` is not RFC 3339"))?;
            if exp != end {
                problems.push(format!("exp {exp} is not the rule's not_after {end}"));
            }
        }
        (None, ttl) => {
            let ttl = humantime::parse_duration(ttl.as_deref().unwrap_or("1h"))
                .map_err(|e| format!("bad ttl: {e}"))?
                .as_secs();
            let life = exp.saturating_sub(nbf).saturating_sub(nbf_backdate);
            // exp and nbf come from the same signing instant; allow a little slack anyway.
            if life.abs_diff(ttl) > 2 {
                problems.push(format!(
                    "lifetime exp - nbf - backdate = {life}s, expected ttl {ttl}s"
                ));
            }
        }
    }
    if expected_rules == json!([]) {
        // Nothing restricts the viewer: the emulator must accept the token as it is.
        let player = get(&location).await;
        if player.status.as_u16() != 200 {
            problems.push(format!(
                "the emulator refused the token: {} {}",
                player.status,
                player.text()
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

#[tokio::test]
async fn authorization_matrix_from_fixture() {
    let secret = temp_file_with(MATRIX_JWT_SECRET);
    let values = Placeholders {
        now: unix_now() as u64,
        key_file: fixture_path("test-only-signing-key.pem")
            .display()
            .to_string(),
        jwt_secret_file: secret.path().display().to_string(),
    };
    let template = std::fs::read_to_string(fixture_path("authz-matrix.yaml"))
        .expect("the matrix fixture is readable");
    let matrix: Matrix =
        serde_yaml::from_str(&render(&template, &values)).expect("the matrix fixture parses");
    assert!(
        matrix.cases.len() >= 30,
        "the matrix should have at least 30 cases"
    );
    let mut names = std::collections::HashSet::new();
    for case in &matrix.cases {
        assert!(names.insert(&case.name), "duplicate case {:?}", case.name);
    }
    let uids = video_uids(&matrix.config);
    let gateway = TestGateway::start_with(&matrix.config).await;
    let nbf_backdate = 60;

    let mut failures = Vec::new();
    for case in &matrix.cases {
        if let Err(problem) = run_case(&gateway, case, &uids, nbf_backdate).await {
            failures.push(format!("case {:?}: {problem}", case.name));
        }
    }
    gateway.shutdown().await;
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        matrix.cases.len(),
        failures.join("\n")
    );
}

// === tokens bound to the client address ===

/// [`gateway_config`] with the public rule binding tokens to the viewer's address, plus
/// `extra` top-level YAML.
fn bound_config(extra: &str) -> String {
    let config = gateway_config().replace(
        "    subjects: [anyone]\n",
        "    subjects: [anyone]\n    bind_client_ip: true\n",
    );
    format!("{config}{extra}")
}

fn access_rules_of(location: &str, origin: &str) -> Value {
    decode_claims_unverified(&token_in_location(location, origin))["accessRules"].clone()
}

fn bound_to(ip: &str) -> Value {
    json!([
        {"type": "ip.src", "action": "allow", "ip": [ip]},
        {"type": "any", "action": "block"}
    ])
}

#[tokio::test]
async fn bound_token_plays_from_its_address_and_is_blocked_from_another() {
    let gateway = TestGateway::start_with(&bound_config("")).await;
    let origin = gateway.emulator_origin();
    let location = redirect_location(&get(&gateway.url("/watch/intro")).await, "bound intro");
    assert_eq!(access_rules_of(&location, &origin), bound_to("127.0.0.1"));

    // The in-process emulator listens on 127.0.0.1: the viewer is 127.0.0.1.
    let from_v4 = get(&location).await;
    assert_eq!(from_v4.status.as_u16(), 200, "{}", from_v4.text());
    assert!(from_v4.text().contains(VIDEO_UID));

    // A second emulator with the same keys on [::1]: the viewer is ::1.
    let v6: SocketAddr = "[::1]:0".parse().expect("literal address");
    let emulator = TestEmulator::start_on(v6, emulator_settings()).await;
    assert!(emulator.origin().starts_with("http://[::1]:"));
    let token = token_in_location(&location, &origin);
    // Sanity: that emulator accepts an unbound token of the same gateway over [::1].
    let unbound = gateway_config();
    let unbound_gateway = TestGateway::start_with(&unbound).await;
    let free = redirect_location(
        &get(&unbound_gateway.url("/watch/intro")).await,
        "unbound intro",
    );
    let free_token = token_in_location(&free, &unbound_gateway.emulator_origin());
    let free_v6 = get(&emulator.url_for(&free_token, "iframe")).await;
    assert_eq!(free_v6.status.as_u16(), 200, "{}", free_v6.text());

    let from_v6 = get(&emulator.url_for(&token, "iframe")).await;
    assert_eq!(from_v6.status.as_u16(), 401, "{}", from_v6.text());
    // `ip.src allow 127.0.0.1` does not match ::1, so the trailing `any block` decides.
    assert!(
        from_v6.text().contains("blocked by rule on 'any'"),
        "{}",
        from_v6.text()
    );
    emulator.shutdown().await;
    unbound_gateway.shutdown().await;
    gateway.shutdown().await;
}

#[tokio::test]
async fn forwarded_for_from_an_untrusted_peer_is_ignored() {
    let spoof = [("x-forwarded-for", "203.0.113.7")];
    for (extra, label) in [
        ("", "no trusted proxies"),
        (
            "trusted_proxies: [10.0.0.0/8, \"::1/128\"]\n",
            "other proxies",
        ),
    ] {
        let gateway = TestGateway::start_with(&bound_config(extra)).await;
        let origin = gateway.emulator_origin();
        let location =
            redirect_location(&get_with(&gateway.url("/watch/intro"), &spoof).await, label);
        assert_eq!(
            access_rules_of(&location, &origin),
            bound_to("127.0.0.1"),
            "{label}"
        );
        let player = get(&location).await;
        assert_eq!(player.status.as_u16(), 200, "{label}: {}", player.text());
        // Forwarded is ignored the same way.
        let forwarded = [("forwarded", "for=203.0.113.8")];
        let location = redirect_location(
            &get_with(&gateway.url("/watch/intro"), &forwarded).await,
            label,
        );
        assert_eq!(
            access_rules_of(&location, &origin),
            bound_to("127.0.0.1"),
            "{label}: Forwarded"
        );
        gateway.shutdown().await;
    }
}

#[tokio::test]
async fn forwarded_for_from_a_trusted_peer_binds_the_forwarded_address() {
    let gateway = TestGateway::start_with(&bound_config("trusted_proxies: [127.0.0.1/32]\n")).await;
    let origin = gateway.emulator_origin();
    let spoof = [("x-forwarded-for", "203.0.113.7")];
    let location = redirect_location(
        &get_with(&gateway.url("/watch/intro"), &spoof).await,
        "trusted",
    );
    assert_eq!(access_rules_of(&location, &origin), bound_to("203.0.113.7"));
    // That token is for 203.0.113.7, so the emulator refuses it from 127.0.0.1.
    let player = get(&location).await;
    assert_eq!(player.status.as_u16(), 401, "{}", player.text());
    assert!(player.text().contains("blocked by rule on 'any'"));

    // Without a forwarding header the peer itself is the client.
    let direct = redirect_location(&get(&gateway.url("/watch/intro")).await, "direct");
    assert_eq!(access_rules_of(&direct, &origin), bound_to("127.0.0.1"));
    assert_eq!(get(&direct).await.status.as_u16(), 200);
    gateway.shutdown().await;
}

// === browsers ===

const BROWSER: (&str, &str) = ("accept", "text/html,application/xhtml+xml,*/*;q=0.8");

#[tokio::test]
async fn browsers_get_html_error_pages() {
    let gateway = TestGateway::start().await;
    let cases = [
        ("/watch/keynote", 401, "requires you to sign in"),
        ("/watch/no-such-video", 404, "no video"),
        (
            "/watch/intro/downloads/default.mp4",
            403,
            "downloads are not allowed",
        ),
    ];
    for (path, status, reason) in cases {
        let response = get_with(&gateway.url(path), &[BROWSER]).await;
        assert_eq!(response.status.as_u16(), status, "{path}");
        let content_type = response.header("content-type").unwrap_or_default();
        assert!(
            content_type.starts_with("text/html"),
            "{path}: {content_type}"
        );
        let page = response.text();
        assert!(
            page.contains("<html") && page.contains(&status.to_string()),
            "{path}: {page}"
        );
        assert!(page.contains(reason), "{path}: {page}");
        if status == 401 {
            // No login_url: the browser gets the page and the challenges.
            assert!(response.header("www-authenticate").is_some(), "{path}");
        }
    }
    // A client asking for JSON first still gets JSON.
    let json_first = get_with(
        &gateway.url("/watch/keynote"),
        &[("accept", "application/json, text/html")],
    )
    .await;
    assert_error(&json_first, 401, "requires you to sign in");
    gateway.shutdown().await;
}

fn with_auth(auth: &str) -> String {
    format!("{}auth:\n{auth}", gateway_config())
}

#[tokio::test]
async fn anonymous_browser_is_sent_to_the_login_page_with_a_relative_return_to() {
    let gateway = TestGateway::start_with(&with_auth("  login_url: /login\n")).await;
    let path = "/watch/keynote/thumbnails/thumbnail.jpg?time=2s&height=90";
    let response = get_with(&gateway.url(path), &[BROWSER, ("host", "evil.example")]).await;
    assert_eq!(response.status.as_u16(), 302, "{}", response.text());
    assert_eq!(
        response.header("location"),
        Some(
            "/login?return_to=%2Fwatch%2Fkeynote%2Fthumbnails%2Fthumbnail.jpg%3Ftime%3D2s%26height%3D90"
        )
    );
    assert_eq!(response.header("cache-control"), Some("no-store"));

    // API clients get the 401 JSON and the challenge, not a redirect.
    for headers in [vec![], vec![("accept", "application/json")]] {
        let api = get_with(&gateway.url("/watch/keynote"), &headers).await;
        assert_error(&api, 401, "requires you to sign in");
        assert!(api.header("location").is_none());
        assert!(api.header("www-authenticate").is_some());
    }
    // A known caller who may not watch is told so, not sent to sign in again.
    let staff_only = with_auth("  login_url: /login\n").replace(
        "    subjects: [authenticated]\n",
        "    subjects: [api_key:ci]\n    action: deny\n",
    );
    let denying = TestGateway::start_with(&staff_only).await;
    let forbidden = get_with(
        &denying.url("/watch/keynote"),
        &[BROWSER, ("x-api-key", TEST_API_KEY)],
    )
    .await;
    assert_eq!(forbidden.status.as_u16(), 403, "{}", forbidden.text());
    assert!(forbidden.header("location").is_none());
    assert!(forbidden.text().contains("<html"));
    denying.shutdown().await;
    gateway.shutdown().await;
}

#[tokio::test]
async fn login_url_keeps_its_own_query_and_may_be_absolute() {
    let cases = [
        (
            "  login_url: /sso/start?app=videos\n",
            "/sso/start?app=videos&return_to=%2Fwatch%2Fkeynote",
        ),
        (
            "  login_url: https://login.example.com/start\n",
            "https://login.example.com/start?return_to=%2Fwatch%2Fkeynote",
        ),
    ];
    for (auth, expected) in cases {
        let gateway = TestGateway::start_with(&with_auth(auth)).await;
        let response = get_with(&gateway.url("/watch/keynote"), &[BROWSER]).await;
        assert_eq!(response.status.as_u16(), 302, "{auth}: {}", response.text());
        assert_eq!(response.header("location"), Some(expected), "{auth}");
        gateway.shutdown().await;
    }
}

#[tokio::test]
async fn public_url_makes_return_to_absolute_on_that_origin() {
    let config = with_auth("  login_url: /login\n  public_url: https://videos.example.com\n");
    let gateway = TestGateway::start_with(&config).await;
    let response = get_with(
        &gateway.url("/watch/keynote?autoplay=true"),
        &[
            BROWSER,
            ("host", "evil.example"),
            ("x-forwarded-host", "evil.example"),
        ],
    )
    .await;
    assert_eq!(response.status.as_u16(), 302, "{}", response.text());
    let location = response.header("location").unwrap_or_default();
    assert_eq!(
        location,
        "/login?return_to=https%3A%2F%2Fvideos.example.com%2Fwatch%2Fkeynote%3Fautoplay%3Dtrue"
    );
    assert!(!location.contains("evil"));
    let api = get(&gateway.url("/watch/keynote")).await;
    assert_error(&api, 401, "requires you to sign in");
    gateway.shutdown().await;
}
