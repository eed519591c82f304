//! Every way of proving who you are, over HTTP: API keys, HTTP Basic users, JWTs from a
//! shared-secret issuer, a public-key issuer and a JWKS URL; and that a credential that is
//! present but invalid is refused (401), never treated as no credential at all.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use common::*;
use http::{Request, Response, StatusCode};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use streamgate::Body;
use streamgate::http::server::Handler;

const HS_ISSUER: &str = "https://hs.idp.test";
const RS_ISSUER: &str = "https://rs.idp.test";
const AUDIENCE: &str = "streamgate";
const HS_SECRET: &[u8] = b"identity-test-only-hs256-secret-0123456789abcdef";
const SESSION_COOKIE: &str = "sg_session";
const REALM: &str = "Team Videos";
const ALICE_PASSWORD: &str = "correct horse: battery staple";
/// Kid of the RS256 issuer's key in a JWKS (the second fixture key).
const IDP_KID: &str = "idp-key-1";
/// Kid of a key the identity provider adds later (the main fixture key).
const ROTATED_KID: &str = "idp-key-2";

const STAFF_UID: &str = "12121212121212121212121212121212";
const PRO_UID: &str = "34343434343434343434343434343434";

/// A gateway config with every kind of identity; `issuers` is the `jwt_issuers` list.
fn identity_config(issuers: &str) -> String {
    format!(
        "\
listen: 127.0.0.1:0
stream:
  emulator:
    listen: 127.0.0.1:0
signing_keys:
  - id: {FIXTURE_KID}
    file: test-only-signing-key.pem
videos:
  intro: {{uid: {VIDEO_UID}, tags: [public]}}
  keynote: {{uid: {OTHER_VIDEO_UID}, tags: [members]}}
  staff-clip: {{uid: \"{STAFF_UID}\"}}
  pro-clip: {{uid: \"{PRO_UID}\"}}
api_keys:
  - name: ci
    sha256: {digest}
users:
  alice:
    password: \"{alice}\"
    groups: [staff]
jwt_issuers:
{issuers}auth:
  realm: {REALM}
  # Many refused credentials come from one address here, each to see its own answer; the
  # backoff after failed sign-ins is tested in tests/throttle.rs.
  failed_sign_ins: {{allowed: 1000}}
rules:
  - name: public
    videos: [\"tag:public\"]
    subjects: [anyone]
  - name: members
    videos: [\"tag:members\"]
    subjects: [authenticated]
  - name: staff
    videos: [staff-clip]
    subjects: [group:staff]
  - name: pro
    videos: [pro-clip]
    subjects: [\"claim:plan=pro\"]
",
        digest = streamgate::identity::hash_api_key(TEST_API_KEY),
        alice = argon2_phc(ALICE_PASSWORD),
    )
}

/// The HS256 issuer (secret in `secret_file`, token also read from [`SESSION_COOKIE`]) and
/// the RS256 issuer (public key PEM of the second fixture key, groups at a dotted path). Both
/// share the local names, so the plain `group:staff` rule covers their staff.
fn two_issuers(secret_file: &tempfile::NamedTempFile) -> String {
    format!(
        "  - issuer: {HS_ISSUER}
    shares_local_names: true
    audience: {AUDIENCE}
    algorithms: [HS256]
    secret:
      file: {secret}
    cookie: {SESSION_COOKIE}
    groups_claim: groups
  - issuer: {RS_ISSUER}
    shares_local_names: true
    audience: [other-app, {AUDIENCE}]
    algorithms: [RS256]
    public_key_file: test-only-second-key.pub.pem
    subject_claim: email
    groups_claim: realm_access.roles
",
        secret = secret_file.path().display(),
    )
}

/// A gateway with [`identity_config`] and [`two_issuers`]; keep the file alive with it.
async fn start_full() -> (TestGateway, tempfile::NamedTempFile) {
    let secret = temp_file_with(HS_SECRET);
    let gateway = TestGateway::start_with(&identity_config(&two_issuers(&secret))).await;
    (gateway, secret)
}

/// Standard claims from the HS256 issuer, valid for an hour, plus `extra`.
fn hs_claims(extra: Value) -> Value {
    let mut claims = json!({
        "iss": HS_ISSUER,
        "aud": AUDIENCE,
        "iat": unix_now(),
        "exp": unix_now() + 3600,
    });
    for (name, value) in extra.as_object().expect("extra claims are an object") {
        claims[name] = value.clone();
    }
    claims
}

fn hs_token(extra: Value) -> String {
    mint_hs256(HS_SECRET, &hs_claims(extra))
}

/// Standard claims from the RS256 issuer, valid for an hour, plus `extra`.
fn rs_claims(extra: Value) -> Value {
    let mut claims = json!({
        "iss": RS_ISSUER,
        "aud": [AUDIENCE],
        "iat": unix_now(),
        "exp": unix_now() + 3600,
    });
    for (name, value) in extra.as_object().expect("extra claims are an object") {
        claims[name] = value.clone();
    }
    claims
}

/// An RS256 token signed by the second fixture key (the RS issuer's key), header kid `kid`.
fn rs_token(kid: &str, claims: &Value) -> String {
    mint_with_key(kid, &second_key_der(), claims)
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// `GET /watch/<video>` on `gateway` with `headers`.
async fn watch(gateway: &TestGateway, video: &str, headers: &[(&str, &str)]) -> TestResponse {
    get_with(&gateway.url(&format!("/watch/{video}")), headers).await
}

/// The redirect's token must play on the emulator.
async fn assert_plays(gateway: &TestGateway, response: &TestResponse, context: &str) {
    let location = redirect_location(response, context);
    assert!(
        location.starts_with(&gateway.emulator_origin()),
        "{context}: {location}"
    );
    let player = get(&location).await;
    assert_eq!(player.status.as_u16(), 200, "{context}: {}", player.text());
}

fn challenges(response: &TestResponse) -> Vec<String> {
    response
        .headers
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().expect("challenge is text").to_string())
        .collect()
}

// === API keys ===

#[tokio::test]
async fn api_key_in_authorization_or_x_api_key_is_accepted() {
    let (gateway, _secret) = start_full().await;
    let bearer_key = bearer(TEST_API_KEY);
    let lower = format!("bearer {TEST_API_KEY}");
    for headers in [
        vec![("authorization", bearer_key.as_str())],
        vec![("authorization", lower.as_str())],
        vec![("x-api-key", TEST_API_KEY)],
    ] {
        let response = watch(&gateway, "keynote", &headers).await;
        assert_plays(&gateway, &response, &format!("{headers:?}")).await;
    }
    gateway.shutdown().await;
}

#[tokio::test]
async fn unknown_or_revoked_api_key_is_401_even_for_a_public_video() {
    let (gateway, _secret) = start_full().await;
    let unknown = bearer("not-a-key");
    for headers in [
        vec![("authorization", unknown.as_str())],
        vec![("x-api-key", "not-a-key")],
        vec![("x-api-key", "")],
    ] {
        for video in ["keynote", "intro"] {
            let response = watch(&gateway, video, &headers).await;
            assert_error(&response, 401, "not valid");
            assert!(
                challenges(&response)
                    .iter()
                    .any(|c| c.starts_with("Bearer")),
                "{headers:?}"
            );
        }
    }
    gateway.shutdown().await;

    // Revoked: the same key, no longer in the configuration (another key still is).
    let revoked = gateway_config().replace(
        &streamgate::identity::hash_api_key(TEST_API_KEY),
        &streamgate::identity::hash_api_key("the-replacement-key"),
    );
    let gateway = TestGateway::start_with(&revoked).await;
    for video in ["keynote", "intro"] {
        let response = watch(&gateway, video, &[("x-api-key", TEST_API_KEY)]).await;
        assert_error(&response, 401, "API key is not valid");
    }
    let replacement = watch(&gateway, "keynote", &[("x-api-key", "the-replacement-key")]).await;
    assert_plays(&gateway, &replacement, "replacement key").await;
    gateway.shutdown().await;
}

// === HTTP Basic ===

#[tokio::test]
async fn basic_user_with_the_right_password_is_let_in_by_group() {
    let (gateway, _secret) = start_full().await;
    let alice = basic_auth("alice", ALICE_PASSWORD);
    let response = watch(&gateway, "staff-clip", &[("authorization", &alice)]).await;
    assert_plays(&gateway, &response, "alice on staff-clip").await;
    // The API key is authenticated but not staff.
    let ci = watch(&gateway, "staff-clip", &[("x-api-key", TEST_API_KEY)]).await;
    assert_error(&ci, 403, "policy does not allow");
    gateway.shutdown().await;
}

#[tokio::test]
async fn basic_wrong_password_and_unknown_user_get_the_same_401_with_a_basic_challenge() {
    let (gateway, _secret) = start_full().await;
    let wrong = basic_auth("alice", "wrong password");
    let unknown = basic_auth("mallory", ALICE_PASSWORD);
    let wrong = watch(&gateway, "staff-clip", &[("authorization", &wrong)]).await;
    let unknown = watch(&gateway, "staff-clip", &[("authorization", &unknown)]).await;
    assert_error(&wrong, 401, "unknown user or wrong password");
    assert_error(&unknown, 401, "unknown user or wrong password");
    assert_eq!(wrong.body, unknown.body, "the same answer for both");
    // Also on a video anyone may watch: a bad password is not anonymous access.
    let public = watch(
        &gateway,
        "intro",
        &[("authorization", &basic_auth("alice", "nope"))],
    )
    .await;
    assert_error(&public, 401, "unknown user or wrong password");

    let anonymous = watch(&gateway, "keynote", &[]).await;
    assert_error(&anonymous, 401, "requires you to sign in");
    for response in [&wrong, &unknown, &public, &anonymous] {
        let challenges = challenges(response);
        assert!(
            challenges
                .iter()
                .any(|c| c.starts_with(&format!("Basic realm=\"{REALM}\""))),
            "{challenges:?}"
        );
        assert!(
            challenges
                .iter()
                .any(|c| c.starts_with(&format!("Bearer realm=\"{REALM}\""))),
            "{challenges:?}"
        );
    }
    gateway.shutdown().await;
}

#[tokio::test]
async fn basic_success_is_remembered_and_failures_are_not() {
    let (gateway, _secret) = start_full().await;
    let basic = || {
        gateway
            .app()
            .snapshot()
            .auth
            .basic
            .as_ref()
            .expect("users are configured")
            .verifications()
    };
    let alice = basic_auth("alice", ALICE_PASSWORD);
    let first = watch(&gateway, "staff-clip", &[("authorization", &alice)]).await;
    redirect_location(&first, "first");
    assert_eq!(basic(), 1);
    let second = watch(&gateway, "staff-clip", &[("authorization", &alice)]).await;
    redirect_location(&second, "second");
    assert_eq!(basic(), 1, "the second request must not run argon2 again");

    let wrong = basic_auth("alice", "wrong password");
    for attempt in 1..=2 {
        let response = watch(&gateway, "staff-clip", &[("authorization", &wrong)]).await;
        assert_error(&response, 401, "wrong password");
        assert_eq!(basic(), 1 + attempt, "a failure is checked every time");
    }
    gateway.shutdown().await;
}

#[tokio::test]
async fn without_users_basic_is_neither_offered_nor_accepted() {
    let gateway = TestGateway::start().await;
    let anonymous = get(&gateway.url("/watch/keynote")).await;
    assert_error(&anonymous, 401, "requires you to sign in");
    assert_eq!(
        challenges(&anonymous),
        vec!["Bearer realm=\"streamgate\"".to_string()]
    );
    let basic = get_with(
        &gateway.url("/watch/intro"),
        &[("authorization", &basic_auth("alice", "pw"))],
    )
    .await;
    assert_error(&basic, 401, "unsupported authorization scheme `Basic`");
    gateway.shutdown().await;
}

// === JWT: shared secret and public key ===

#[tokio::test]
async fn jwt_groups_and_claims_from_the_token_drive_the_rules() {
    let (gateway, _secret) = start_full().await;
    let cases: [(&str, Value, &str, u16); 7] = [
        (
            "staff group",
            json!({"sub": "carol", "groups": ["staff"]}),
            "staff-clip",
            302,
        ),
        (
            "group as a string",
            json!({"sub": "carol", "groups": "staff"}),
            "staff-clip",
            302,
        ),
        ("no group", json!({"sub": "carol"}), "staff-clip", 403),
        (
            "pro plan",
            json!({"sub": "dave", "plan": "pro"}),
            "pro-clip",
            302,
        ),
        (
            "free plan",
            json!({"sub": "dave", "plan": "free"}),
            "pro-clip",
            403,
        ),
        (
            "pro is not staff",
            json!({"sub": "dave", "plan": "pro"}),
            "staff-clip",
            403,
        ),
        (
            "any valid token is authenticated",
            json!({"sub": "erin"}),
            "keynote",
            302,
        ),
    ];
    for (label, extra, video, status) in cases {
        let token = bearer(&hs_token(extra));
        let response = watch(&gateway, video, &[("authorization", &token)]).await;
        if status == 302 {
            assert_plays(&gateway, &response, label).await;
        } else {
            assert_error(&response, status, "policy does not allow");
        }
    }
    gateway.shutdown().await;
}

#[tokio::test]
async fn jwt_in_the_configured_cookie_is_accepted() {
    let (gateway, _secret) = start_full().await;
    let token = hs_token(json!({"sub": "carol", "groups": ["staff"]}));
    let cookie = format!("theme=dark; {SESSION_COOKIE}={token}; lang=en");
    let response = watch(&gateway, "staff-clip", &[("cookie", &cookie)]).await;
    assert_plays(&gateway, &response, "session cookie").await;
    // The same token in a cookie nobody configured is no credential at all.
    let other = format!("other_session={token}");
    let anonymous = watch(&gateway, "staff-clip", &[("cookie", &other)]).await;
    assert_error(&anonymous, 401, "requires you to sign in");
    gateway.shutdown().await;
}

#[tokio::test]
async fn rs256_issuer_with_a_public_key_file() {
    let (gateway, _secret) = start_full().await;
    let claims = rs_claims(json!({
        "email": "alice@example.com",
        "realm_access": {"roles": ["staff", "viewer"]},
    }));
    let token = bearer(&rs_token(IDP_KID, &claims));
    let response = watch(&gateway, "staff-clip", &[("authorization", &token)]).await;
    assert_plays(&gateway, &response, "rs256 staff").await;
    // A token signed by another RSA key is refused.
    let forged = bearer(&mint_with_key(IDP_KID, &fixture_key_der(), &claims));
    let refused = watch(&gateway, "intro", &[("authorization", &forged)]).await;
    assert_error(&refused, 401, "");
    gateway.shutdown().await;
}

/// Change one character in the middle of a token part (0 header, 1 claims, 2 signature),
/// keeping it valid base64url.
fn tamper(token: &str, part: usize) -> String {
    let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
    let target = &mut parts[part];
    let middle = target.len() / 2;
    let old = target.as_bytes()[middle];
    let new = if old == b'A' { 'B' } else { 'A' };
    target.replace_range(middle..=middle, &new.to_string());
    parts.join(".")
}

#[tokio::test]
async fn invalid_jwts_are_401_and_never_anonymous() {
    let (gateway, _secret) = start_full().await;
    let now = unix_now();
    let staff = json!({"sub": "carol", "groups": ["staff"]});
    let valid = hs_token(staff.clone());
    let rs_public_pem = std::fs::read(fixture_path("test-only-second-key.pub.pem"))
        .expect("the public key fixture is readable");

    // A valid token's claims with the subject changed, re-encoded, the signature kept.
    let forged_claims = {
        let mut parts: Vec<&str> = valid.split('.').collect();
        let claims = b64url(hs_claims(json!({"sub": "admin", "groups": ["staff"]})).to_string());
        parts[1] = &claims;
        parts.join(".")
    };
    // (what is wrong, the token, the reason the gateway gives)
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "expired",
            mint_hs256(
                HS_SECRET,
                &hs_claims(json!({"sub": "carol", "exp": now - 600, "iat": now - 4000})),
            ),
            "expired",
        ),
        (
            "not yet valid",
            mint_hs256(
                HS_SECRET,
                &hs_claims(json!({"sub": "carol", "nbf": now + 600})),
            ),
            "not valid yet",
        ),
        (
            "wrong issuer",
            mint_hs256(
                HS_SECRET,
                &hs_claims(json!({"sub": "carol", "iss": "https://evil.test"})),
            ),
            "is not trusted",
        ),
        (
            "wrong audience",
            mint_hs256(
                HS_SECRET,
                &hs_claims(json!({"sub": "carol", "aud": "another-service"})),
            ),
            "wrong audience",
        ),
        (
            "wrong secret",
            mint_hs256(
                b"not-the-secret-not-the-secret-00",
                &hs_claims(staff.clone()),
            ),
            "bad signature",
        ),
        ("tampered signature", tamper(&valid, 2), "bad signature"),
        ("tampered claims", forged_claims, "bad signature"),
        ("garbled claims", tamper(&valid, 1), "malformed"),
        (
            "alg none",
            assemble_token(
                &json!({"alg": "none", "typ": "JWT"}),
                &hs_claims(staff.clone()),
                b"",
            ),
            "algorithm \"none\" is not accepted",
        ),
        (
            "alg none with a signature",
            format!(
                "{}.{}.{}",
                b64url(json!({"alg": "none", "typ": "JWT"}).to_string()),
                valid.split('.').nth(1).expect("claims"),
                valid.split('.').nth(2).expect("signature")
            ),
            "algorithm \"none\" is not accepted",
        ),
        (
            "HS256 signed with the RS issuer's public key",
            mint_raw(
                &Header {
                    alg: Algorithm::HS256,
                    kid: Some(IDP_KID.into()),
                    ..Default::default()
                },
                &rs_claims(json!({"email": "carol@example.com"})),
                &EncodingKey::from_secret(&rs_public_pem),
            ),
            "algorithm HS256 is not accepted",
        ),
        (
            "RS issuer's claims signed with the HS issuer's secret",
            mint_hs256(HS_SECRET, &rs_claims(json!({"email": "carol@example.com"}))),
            "algorithm HS256 is not accepted",
        ),
        (
            "HS issuer's claims signed with the RS key",
            rs_token(IDP_KID, &hs_claims(staff.clone())),
            "algorithm RS256 is not accepted",
        ),
        ("garbage with dots", "a.b.c".to_string(), "malformed"),
    ];

    for (label, token, reason) in &cases {
        let via_bearer = bearer(token);
        let via_cookie = format!("{SESSION_COOKIE}={token}");
        // A bearer value not shaped like a JWT (an empty signature) is taken for an API key.
        let bearer_reason = if streamgate::identity::jwt::looks_like_jwt(token) {
            *reason
        } else {
            "the API key is not valid"
        };
        for (how, header, reason) in [
            (
                "bearer",
                ("authorization", via_bearer.as_str()),
                bearer_reason,
            ),
            ("cookie", ("cookie", via_cookie.as_str()), *reason),
        ] {
            // `intro` is a video anyone may watch: an invalid token must still be refused.
            let response = watch(&gateway, "intro", &[header]).await;
            assert_eq!(
                response.status.as_u16(),
                401,
                "{label} via {how}: {}",
                response.text()
            );
            assert!(response.header("location").is_none(), "{label} via {how}");
            let body: Value = serde_json::from_slice(&response.body)
                .unwrap_or_else(|_| panic!("{label} via {how}: {}", response.text()));
            assert_eq!(body["status"], 401, "{label} via {how}");
            let message = body["error"].as_str().unwrap_or_default();
            assert!(
                message.contains(reason),
                "{label} via {how}: expected {reason:?} in {message:?}"
            );
            assert!(
                challenges(&response)
                    .iter()
                    .any(|c| c.starts_with("Bearer")),
                "{label} via {how}"
            );
        }
    }
    // The valid token it was all derived from works, over both.
    let ok = watch(
        &gateway,
        "staff-clip",
        &[("authorization", &bearer(&valid))],
    )
    .await;
    assert_plays(&gateway, &ok, "valid").await;
    assert_eq!(
        gateway.signatures(),
        1,
        "no refused token caused a signature"
    );
    gateway.shutdown().await;
}

// === JWKS URL ===

/// A JWKS endpoint on 127.0.0.1 that counts its fetches; the key set can be changed.
struct JwksServer {
    keys: std::sync::Mutex<Value>,
    fetches: AtomicU64,
}

impl JwksServer {
    fn new(keys: Value) -> Arc<Self> {
        Arc::new(Self {
            keys: std::sync::Mutex::new(keys),
            fetches: AtomicU64::new(0),
        })
    }

    fn set(&self, keys: Value) {
        *self.keys.lock().expect("not poisoned") = keys;
    }

    fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::SeqCst)
    }
}

impl Handler for JwksServer {
    fn handle(
        &self,
        req: Request<hyper::body::Incoming>,
        _peer: std::net::SocketAddr,
    ) -> impl Future<Output = Response<Body>> + Send {
        let response = if req.uri().path() == "/jwks.json" {
            self.fetches.fetch_add(1, Ordering::SeqCst);
            let body = self.keys.lock().expect("not poisoned").to_string();
            let mut response = Response::new(Body::new(bytes::Bytes::from(body)));
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            response
        } else {
            let mut response = Response::new(Body::new(bytes::Bytes::from_static(b"not found")));
            *response.status_mut() = StatusCode::NOT_FOUND;
            response
        };
        std::future::ready(response)
    }
}

/// The public half of `pkcs1_der` as an RS256 JWK with `kid`.
fn rsa_jwk(kid: &str, pkcs1_der: &[u8]) -> Value {
    let public = verifying_key_from_der(kid, pkcs1_der);
    json!({
        "kty": "RSA",
        "kid": kid,
        "use": "sig",
        "alg": "RS256",
        "n": b64url(&public.modulus),
        "e": b64url(&public.exponent),
    })
}

fn jwks_issuer(url: &str) -> String {
    format!(
        "  - issuer: {RS_ISSUER}
    shares_local_names: true
    audience: {AUDIENCE}
    algorithms: [RS256]
    jwks_url: {url}
    jwks_refresh: 1h
    jwks_min_refresh_interval: 1h
    subject_claim: email
    groups_claim: realm_access.roles
"
    )
}

/// A token from the JWKS issuer for a staff member, signed by `pkcs1_der` with `kid`.
fn jwks_token(kid: &str, pkcs1_der: &[u8]) -> String {
    let claims = rs_claims(json!({
        "email": "alice@example.com",
        "realm_access": {"roles": ["staff"]},
    }));
    mint_with_key(kid, pkcs1_der, &claims)
}

/// Request `staff-clip` with `token` until it is not a 503 (keys not fetched yet), at most
/// for [`WAIT_LIMIT`].
async fn watch_when_keys_are_ready(gateway: &TestGateway, token: &str) -> TestResponse {
    let auth = bearer(token);
    wait_for("the JWKS keys to become available", async || {
        let response = watch(gateway, "staff-clip", &[("authorization", &auth)]).await;
        if response.status == StatusCode::SERVICE_UNAVAILABLE {
            Err(format!("503: {}", response.text()))
        } else {
            Ok(response)
        }
    })
    .await
}

#[tokio::test]
async fn jwks_unknown_kid_is_fetched_once_and_known_keys_outlive_the_server() {
    let server = JwksServer::new(json!({"keys": [rsa_jwk(IDP_KID, &second_key_der())]}));
    let jwks = TestServer::start(Arc::clone(&server)).await;
    let config = identity_config(&jwks_issuer(&jwks.url("/jwks.json")));
    let gateway = TestGateway::start_with(&config).await;
    let verifier = || {
        gateway
            .app()
            .snapshot()
            .auth
            .jwt
            .as_ref()
            .expect("issuers are configured")
            .jwks_fetches()
    };

    let known = jwks_token(IDP_KID, &second_key_der());
    let first = watch_when_keys_are_ready(&gateway, &known).await;
    assert_plays(&gateway, &first, "known kid").await;
    let fetched = server.fetches();
    assert!(fetched >= 1, "the keys came from the server");
    // The verifier counts a fetch once it has read the answer.
    wait_for("the verifier to count the server's fetches", async || {
        verifier() >= fetched
    })
    .await;
    assert_eq!(verifier(), fetched, "the verifier and the server agree");

    // A kid nobody publishes: one fetch to look for it, then no more within the interval.
    let unknown = bearer(&jwks_token("no-such-kid", &fixture_key_der()));
    for attempt in 0..10 {
        let response = watch(&gateway, "staff-clip", &[("authorization", &unknown)]).await;
        assert_eq!(
            response.status.as_u16(),
            401,
            "attempt {attempt}: {}",
            response.text()
        );
    }
    assert_eq!(
        server.fetches(),
        fetched + 1,
        "ten requests with an unknown kid cause exactly one fetch"
    );
    assert_eq!(verifier(), fetched + 1);

    // The identity provider goes away: tokens with known kids keep working.
    jwks.shutdown().await;
    for attempt in 0..3 {
        // A fresh token each time, so no verification cache can answer.
        let claims = rs_claims(json!({
            "email": format!("user{attempt}@example.com"),
            "realm_access": {"roles": ["staff"]},
        }));
        let token = bearer(&rs_token(IDP_KID, &claims));
        let response = watch(&gateway, "staff-clip", &[("authorization", &token)]).await;
        assert_plays(&gateway, &response, &format!("after shutdown {attempt}")).await;
    }
    gateway.shutdown().await;
}

#[tokio::test]
async fn jwks_key_added_later_is_found_on_its_first_use() {
    let server = JwksServer::new(json!({"keys": [rsa_jwk(IDP_KID, &second_key_der())]}));
    let jwks = TestServer::start(Arc::clone(&server)).await;
    let config = identity_config(&jwks_issuer(&jwks.url("/jwks.json")));
    let gateway = TestGateway::start_with(&config).await;

    let known = jwks_token(IDP_KID, &second_key_der());
    let first = watch_when_keys_are_ready(&gateway, &known).await;
    assert_plays(&gateway, &first, "known kid").await;
    let fetched = server.fetches();

    // The provider rotates in a new key; the first token signed with it triggers a fetch.
    server.set(json!({"keys": [
        rsa_jwk(IDP_KID, &second_key_der()),
        rsa_jwk(ROTATED_KID, &fixture_key_der()),
    ]}));
    let rotated = bearer(&jwks_token(ROTATED_KID, &fixture_key_der()));
    for attempt in 0..10 {
        let response = watch(&gateway, "staff-clip", &[("authorization", &rotated)]).await;
        assert_plays(&gateway, &response, &format!("rotated key {attempt}")).await;
    }
    assert_eq!(server.fetches(), fetched + 1, "one fetch found the new key");
    jwks.shutdown().await;
    gateway.shutdown().await;
}
