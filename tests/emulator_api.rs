//! The emulator's Stream management API (`/client/v4`) over loopback: the envelope and its
//! refusals, signing keys created and deleted (and what that does to playback), paging
//! through videos, editing a video's settings and how serving follows them, and the account
//! surviving a configuration reload.

mod common;

use std::collections::HashSet;
use std::time::{Duration, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::{Method, StatusCode};
use rustls_pki_types::PrivatePkcs1KeyDer;
use rustls_pki_types::pem::PemObject;
use serde_json::{Value, json};
use streamgate::app::App;
use streamgate::app::keys::{MissingKeys, load_signing_keys};
use streamgate::config::Settings;
use streamgate::emulator::{AccountVideo, ApiAccess, EmulatorSettings};
use streamgate::secret::Secret;

use common::*;

const ACCOUNT: &str = "023e105f4ecef8ad9ca31a8372d0c353";
const API_TOKEN: &str = "test-only-emulator-api-token";

/// The default emulator settings with the API enabled for [`ACCOUNT`] and [`API_TOKEN`].
fn settings_with_api() -> EmulatorSettings {
    EmulatorSettings {
        api: Some(ApiAccess {
            account_id: ACCOUNT.into(),
            token: Secret::new(API_TOKEN.into()),
        }),
        ..emulator_settings()
    }
}

async fn emulator_with_api() -> TestEmulator {
    TestEmulator::start(settings_with_api()).await
}

/// `<origin>/client/v4/accounts/<ACCOUNT>/stream<rest>`.
fn api_url(origin: &str, rest: &str) -> String {
    format!("{origin}/client/v4/accounts/{ACCOUNT}/stream{rest}")
}

/// Call the API with the right token; answers the status and the parsed envelope.
async fn call(method: Method, url: &str, body: Option<Value>) -> (StatusCode, Value) {
    call_with(
        method,
        url,
        &[("authorization", &format!("Bearer {API_TOKEN}"))],
        body,
    )
    .await
}

async fn call_with(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut all = headers.to_vec();
    if body.is_some() {
        all.push(("content-type", "application/json"));
    }
    let response = send(method, url, &all, body.map(|b| b.to_string().into_bytes())).await;
    assert_eq!(response.header("content-type"), Some("application/json"));
    let envelope: Value = serde_json::from_slice(&response.body).expect("the answer is JSON");
    (response.status, envelope)
}

/// Assert a refusal envelope: status, `success: false`, one error with `code`.
fn assert_api_error(answer: &(StatusCode, Value), status: StatusCode, code: u64) {
    let (got, envelope) = answer;
    assert_eq!(*got, status, "{envelope}");
    assert_eq!(envelope["success"], json!(false), "{envelope}");
    assert_eq!(envelope["errors"][0]["code"], json!(code), "{envelope}");
    assert!(envelope["errors"][0]["message"].is_string(), "{envelope}");
    assert_eq!(envelope["messages"], json!([]));
    assert_eq!(envelope["result"], Value::Null);
}

/// The `result` of a successful envelope.
fn result_of(answer: (StatusCode, Value)) -> Value {
    let (status, envelope) = answer;
    assert_eq!(status, StatusCode::OK, "{envelope}");
    assert_eq!(envelope["success"], json!(true), "{envelope}");
    assert_eq!(envelope["errors"], json!([]));
    envelope["result"].clone()
}

/// The PKCS#1 DER of a key answer's `pem` (base64 of a PEM).
fn pkcs1_der_of(key: &Value) -> Vec<u8> {
    let pem = STANDARD
        .decode(key["pem"].as_str().expect("pem"))
        .expect("pem is base64");
    let pem = String::from_utf8(pem).expect("a PEM is text");
    assert!(pem.starts_with("-----BEGIN RSA PRIVATE KEY-----"), "{pem}");
    PrivatePkcs1KeyDer::from_pem_slice(pem.as_bytes())
        .expect("a PKCS#1 PEM")
        .secret_pkcs1_der()
        .to_vec()
}

/// A token for `uid` signed with a key the API created.
fn token_from_created_key(key: &Value, uid: &str) -> String {
    let id = key["id"].as_str().expect("id");
    mint_with_key(
        id,
        &pkcs1_der_of(key),
        &with_claim(claims_for(uid), "kid", json!(id)),
    )
}

fn key_ids(keys: &Value) -> HashSet<String> {
    keys.as_array()
        .expect("a list")
        .iter()
        .map(|key| key["id"].as_str().expect("id").to_string())
        .collect()
}

// === the envelope and who may call ===

#[tokio::test]
async fn without_the_right_token_every_call_is_401_authentication_error() {
    let emulator = emulator_with_api().await;
    let url = api_url(&emulator.origin(), "/keys");
    for headers in [
        vec![],
        vec![("authorization", "Bearer wrong-token")],
        vec![("authorization", "Basic dGVzdDp0ZXN0")],
        vec![("authorization", "test-only-emulator-api-token")],
    ] {
        let answer = call_with(Method::GET, &url, &headers, None).await;
        assert_api_error(&answer, StatusCode::UNAUTHORIZED, 10000);
        assert_eq!(answer.1["errors"][0]["message"], "Authentication error");
        assert!(!answer.1.to_string().contains(API_TOKEN));
    }
    // An emulator without API access refuses the token it does not have.
    let closed = emulator_without_api().await;
    let answer = call(Method::GET, &api_url(&closed.origin(), "/keys"), None).await;
    assert_api_error(&answer, StatusCode::UNAUTHORIZED, 10000);
}

async fn emulator_without_api() -> TestEmulator {
    TestEmulator::start(emulator_settings()).await
}

#[tokio::test]
async fn another_account_is_403_and_unknown_routes_and_methods_are_refused() {
    let emulator = emulator_with_api().await;
    let other = format!(
        "{}/client/v4/accounts/ffffffffffffffffffffffffffffffff/stream",
        emulator.origin()
    );
    assert_api_error(
        &call(Method::GET, &other, None).await,
        StatusCode::FORBIDDEN,
        10000,
    );
    let unknown = format!("{}/client/v4/accounts/{ACCOUNT}/images", emulator.origin());
    assert_api_error(
        &call(Method::GET, &unknown, None).await,
        StatusCode::NOT_FOUND,
        7000,
    );
    assert_api_error(
        &call(Method::DELETE, &api_url(&emulator.origin(), ""), None).await,
        StatusCode::METHOD_NOT_ALLOWED,
        7001,
    );
}

// === signing keys ===

#[tokio::test]
async fn a_created_key_signs_tokens_that_play_until_it_is_deleted() {
    let emulator = emulator_with_api().await;
    let keys_url = api_url(&emulator.origin(), "/keys");
    let key = result_of(call(Method::POST, &keys_url, None).await);
    let id = key["id"].as_str().expect("id").to_string();
    assert_eq!(id.len(), 32);
    assert!(key["created"].is_string());
    let jwk: Value = serde_json::from_slice(
        &STANDARD
            .decode(key["jwk"].as_str().expect("jwk"))
            .expect("jwk is base64"),
    )
    .expect("the JWK is JSON");
    for field in ["n", "e", "d", "p", "q", "dp", "dq", "qi"] {
        assert!(jwk[field].is_string(), "{field}");
    }
    assert_eq!(
        (jwk["kid"].as_str(), &jwk["alg"], &jwk["kty"]),
        (Some(id.as_str()), &json!("RS256"), &json!("RSA"))
    );

    // Trusted at once.
    let token = token_from_created_key(&key, VIDEO_UID);
    let played = get(&emulator.url_for(&token, "iframe")).await;
    assert_eq!(played.status, StatusCode::OK, "{}", played.text());

    // Listed without key material, beside the configured keys.
    let listed = result_of(call(Method::GET, &keys_url, None).await);
    assert_eq!(
        key_ids(&listed),
        HashSet::from([id.clone(), FIXTURE_KID.into(), SECOND_KID.into()])
    );
    let entry = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|entry| entry["id"] == json!(id))
        .unwrap();
    assert_eq!(
        entry.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["created", "id"]
    );

    // Deleted: its tokens are refused from the next request on.
    let deleted = result_of(call(Method::DELETE, &format!("{keys_url}/{id}"), None).await);
    assert_eq!(deleted, json!("ok"));
    let refused = get(&emulator.url_for(&token, "iframe")).await;
    assert_eq!(
        (refused.status, refused.text().as_str()),
        (StatusCode::UNAUTHORIZED, "unknown signing key")
    );
    assert_api_error(
        &call(Method::DELETE, &format!("{keys_url}/{id}"), None).await,
        StatusCode::NOT_FOUND,
        10005,
    );
    assert!(!key_ids(&result_of(call(Method::GET, &keys_url, None).await)).contains(&id));
}

#[tokio::test]
async fn deleting_a_configured_key_refuses_its_tokens() {
    let emulator = emulator_with_api().await;
    let token = mint(valid_claims());
    assert_eq!(
        get(&emulator.url_for(&token, "iframe")).await.status,
        StatusCode::OK
    );
    let url = api_url(&emulator.origin(), &format!("/keys/{FIXTURE_KID}"));
    result_of(call(Method::DELETE, &url, None).await);
    let refused = get(&emulator.url_for(&token, "iframe")).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_whole_key_answer_written_to_a_file_is_a_signing_key_the_gateway_loads() {
    let emulator = emulator_with_api().await;
    let response = send(
        Method::POST,
        &api_url(&emulator.origin(), "/keys"),
        &[("authorization", &format!("Bearer {API_TOKEN}"))],
        None,
    )
    .await;
    assert_eq!(response.status, StatusCode::OK);
    let answer: Value = serde_json::from_slice(&response.body).unwrap();
    let id = answer["result"]["id"].as_str().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("key.json"), &response.body).unwrap();
    let yaml = "stream:\n  emulator:\n    listen: 127.0.0.1:0\nsigning_keys:\n  - file: key.json\n";
    let settings = Settings::from_yaml(yaml, "test.yaml", dir.path()).unwrap();
    let (keys, _) = load_signing_keys(&settings, MissingKeys::Fail).expect("the answer loads");
    assert_eq!(keys[0].id(), id);
    // The gateway's key is the one the emulator trusts: its public half matches the JWK.
    let jwk: Value = serde_json::from_slice(
        &STANDARD
            .decode(answer["result"]["jwk"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    let (modulus, _) = keys[0].public_components();
    assert_eq!(b64url(modulus), jwk["n"].as_str().unwrap());
}

// === videos ===

/// `count` ready, protected videos with distinct uids, named `video <i>`.
fn many_videos(count: usize) -> Vec<AccountVideo> {
    (0..count)
        .map(|i| AccountVideo::protected(format!("{:032x}", i + 1), format!("video {i}")))
        .collect()
}

/// Every video, page by page with the `after` (ascending) or `before` (descending) cursor;
/// asserts each page's order and `range`/`total`.
async fn page_through(origin: &str, asc: bool, expected_total: usize) -> Vec<String> {
    let mut uids: Vec<String> = Vec::new();
    let mut cursor: Option<String> = None;
    // Bounded: 2,500 videos are 3 pages.
    for _ in 0..10 {
        let mut query = format!("?asc={asc}");
        if let Some(cursor) = &cursor {
            let name = if asc { "after" } else { "before" };
            query += &format!("&{name}={cursor}");
        }
        let (status, envelope) = call(Method::GET, &api_url(origin, &query), None).await;
        assert_eq!(status, StatusCode::OK, "{envelope}");
        let page = envelope["result"].as_array().expect("a list").clone();
        assert_eq!(envelope["total"], json!(expected_total));
        assert_eq!(envelope["range"], json!(expected_total - uids.len()));
        assert!(page.len() <= 1000);
        let created: Vec<&str> = page
            .iter()
            .map(|v| v["created"].as_str().unwrap())
            .collect();
        let mut sorted = created.clone();
        sorted.sort_unstable();
        if !asc {
            sorted.reverse();
        }
        assert_eq!(created, sorted, "each page is in order");
        let Some(last) = page.last() else {
            return uids;
        };
        cursor = Some(last["created"].as_str().unwrap().to_string());
        uids.extend(page.iter().map(|v| v["uid"].as_str().unwrap().to_string()));
    }
    panic!("paging did not end");
}

#[tokio::test]
async fn paging_through_2500_videos_by_creation_time_has_no_duplicates_or_gaps() {
    let emulator = TestEmulator::start(EmulatorSettings {
        video_uids: Vec::new(),
        videos: many_videos(2500),
        ..settings_with_api()
    })
    .await;
    let expected: Vec<String> = many_videos(2500).into_iter().map(|v| v.uid).collect();
    let ascending = page_through(&emulator.origin(), true, 2500).await;
    assert_eq!(ascending, expected, "oldest first is the seeding order");
    let mut descending = page_through(&emulator.origin(), false, 2500).await;
    descending.reverse();
    assert_eq!(descending, expected);

    // A smaller limit, and a search on the name.
    let (_, envelope) = call(Method::GET, &api_url(&emulator.origin(), "?limit=3"), None).await;
    let newest: Vec<&str> = envelope["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["meta"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(newest, ["video 2499", "video 2498", "video 2497"]);
    let (_, envelope) = call(
        Method::GET,
        &api_url(&emulator.origin(), "?search=VIDEO+249&asc=true"),
        None,
    )
    .await;
    assert_eq!(envelope["total"], json!(11));
    assert_eq!(envelope["result"][0]["meta"]["name"], json!("video 249"));
    assert_api_error(
        &call(
            Method::GET,
            &api_url(&emulator.origin(), "?before=last+week"),
            None,
        )
        .await,
        StatusCode::BAD_REQUEST,
        10002,
    );
}

#[tokio::test]
async fn a_video_is_described_as_stream_does() {
    let emulator = emulator_with_api().await;
    let video = result_of(
        call(
            Method::GET,
            &api_url(&emulator.origin(), &format!("/{VIDEO_UID}")),
            None,
        )
        .await,
    );
    assert_eq!(video["uid"], json!(VIDEO_UID));
    assert_eq!(video["meta"]["name"], json!(VIDEO_UID));
    assert_eq!(video["readyToStream"], json!(true));
    assert_eq!(video["status"]["state"], json!("ready"));
    assert_eq!(video["requireSignedURLs"], json!(true));
    assert_eq!(video["allowedOrigins"], json!([]));
    assert!(video["duration"].as_u64().is_some_and(|d| d > 0));
    assert!(video["size"].as_u64().is_some_and(|s| s > 0));
    let origin = emulator.origin();
    assert_eq!(
        video["playback"]["hls"],
        json!(format!("{origin}/{VIDEO_UID}/manifest/video.m3u8"))
    );
    assert_eq!(
        video["playback"]["dash"],
        json!(format!("{origin}/{VIDEO_UID}/manifest/video.mpd"))
    );
    assert_eq!(
        video["thumbnail"],
        json!(format!("{origin}/{VIDEO_UID}/thumbnails/thumbnail.jpg"))
    );
    for field in ["created", "modified", "preview"] {
        assert!(video[field].is_string(), "{field}");
    }
    assert_api_error(
        &call(
            Method::GET,
            &api_url(&origin, &format!("/{UNKNOWN_VIDEO_UID}")),
            None,
        )
        .await,
        StatusCode::NOT_FOUND,
        10005,
    );
    assert_api_error(
        &call(
            Method::POST,
            &api_url(&origin, &format!("/{UNKNOWN_VIDEO_UID}")),
            Some(json!({"requireSignedURLs": false})),
        )
        .await,
        StatusCode::NOT_FOUND,
        10005,
    );
}

#[tokio::test]
async fn require_signed_urls_decides_whether_the_bare_uid_plays() {
    let emulator = emulator_with_api().await;
    let url = api_url(&emulator.origin(), &format!("/{VIDEO_UID}"));
    let bare = emulator.url_for(VIDEO_UID, "iframe");
    assert_eq!(get(&bare).await.status, StatusCode::UNAUTHORIZED);

    let edited = result_of(
        call(
            Method::POST,
            &url,
            Some(json!({"requireSignedURLs": false, "meta": {"name": "Intro"}, "creator": "ops", "watermark": {"uid": "ignored"}})),
        )
        .await,
    );
    assert_eq!(edited["requireSignedURLs"], json!(false));
    assert_eq!(edited["meta"]["name"], json!("Intro"));
    assert_eq!(edited["creator"], json!("ops"));
    for resource in [
        "iframe",
        "manifest/video.m3u8",
        "manifest/video.mpd",
        "thumbnails/thumbnail.jpg",
    ] {
        let response = get(&emulator.url_for(VIDEO_UID, resource)).await;
        assert_eq!(
            response.status,
            StatusCode::OK,
            "{resource}: {}",
            response.text()
        );
    }
    // A signed token works too.
    let signed = get(&emulator.url_for(&mint(valid_claims()), "iframe")).await;
    assert_eq!(signed.status, StatusCode::OK);
    // The other video is untouched.
    let other = get(&emulator.url_for(OTHER_VIDEO_UID, "iframe")).await;
    assert_eq!(other.status, StatusCode::UNAUTHORIZED);

    // The edit shows in GET, and is undone by the next one.
    let video = result_of(call(Method::GET, &url, None).await);
    assert_eq!(video["requireSignedURLs"], json!(false));
    result_of(call(Method::POST, &url, Some(json!({"requireSignedURLs": true}))).await);
    let refused = get(&bare).await;
    assert_eq!(
        (refused.status, refused.text().as_str()),
        (StatusCode::UNAUTHORIZED, "this video requires a signed URL")
    );
}

#[tokio::test]
async fn bad_edits_are_400_with_a_reason_and_change_nothing() {
    let emulator = emulator_with_api().await;
    let url = api_url(&emulator.origin(), &format!("/{VIDEO_UID}"));
    for (body, reason) in [
        (&b"{not json"[..], "not JSON"),
        (b"", "not JSON"),
        (b"[]", "JSON object"),
        (br#"{"requireSignedURLs": "false"}"#, "requireSignedURLs"),
        (
            br#"{"requireSignedURLs": false, "allowedOrigins": ["https://example.com/"]}"#,
            "allowedOrigins[0]",
        ),
        (br#"{"meta": {"name": 1}}"#, "meta.name"),
    ] {
        let response = send(
            Method::POST,
            &url,
            &[("authorization", &format!("Bearer {API_TOKEN}"))],
            Some(body.to_vec()),
        )
        .await;
        assert_eq!(
            response.status,
            StatusCode::BAD_REQUEST,
            "{}",
            response.text()
        );
        let envelope: Value = serde_json::from_slice(&response.body).unwrap();
        let message = envelope["errors"][0]["message"].as_str().unwrap();
        assert!(message.contains(reason), "{message}");
    }
    let video = result_of(call(Method::GET, &url, None).await);
    assert_eq!(
        video["requireSignedURLs"],
        json!(true),
        "nothing was applied"
    );

    let oversized = vec![b' '; 64 * 1024 + 1];
    let response = send(
        Method::POST,
        &url,
        &[("authorization", &format!("Bearer {API_TOKEN}"))],
        Some(oversized),
    )
    .await;
    assert_eq!(response.status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn allowed_origins_limit_which_sites_may_embed() {
    let emulator = emulator_with_api().await;
    let url = api_url(&emulator.origin(), &format!("/{VIDEO_UID}"));
    let edited = result_of(
        call(
            Method::POST,
            &url,
            Some(json!({"allowedOrigins": ["*.Example.com", "localhost:3000"]})),
        )
        .await,
    );
    assert_eq!(
        edited["allowedOrigins"],
        json!(["*.example.com", "localhost:3000"])
    );
    let token = mint(valid_claims());
    let player = emulator.url_for(&token, "iframe");
    let manifest = emulator.url_for(&token, "manifest/video.m3u8");
    let status = async |url: &str, headers: &[(&str, &str)]| get_with(url, headers).await.status;

    // The player page needs a matching page; the manifest only refuses a wrong one.
    assert_eq!(status(&player, &[]).await, StatusCode::FORBIDDEN);
    assert_eq!(
        status(&player, &[("referer", "https://www.example.com/watch")]).await,
        StatusCode::OK
    );
    assert_eq!(
        status(&player, &[("origin", "http://localhost:3000")]).await,
        StatusCode::OK
    );
    let refused = get_with(&player, &[("referer", "https://example.com/")]).await;
    assert_eq!(
        (refused.status, refused.text().as_str()),
        (
            StatusCode::FORBIDDEN,
            "this site is not in the video's allowed origins"
        )
    );
    assert_eq!(
        status(
            &player,
            &[
                ("origin", "https://evil.test"),
                ("referer", "https://www.example.com/")
            ]
        )
        .await,
        StatusCode::FORBIDDEN,
        "Origin wins over Referer"
    );
    assert_eq!(status(&manifest, &[]).await, StatusCode::OK);
    assert_eq!(
        status(&manifest, &[("origin", "https://evil.test")]).await,
        StatusCode::FORBIDDEN
    );

    // Emptied: any site again.
    result_of(call(Method::POST, &url, Some(json!({"allowedOrigins": []}))).await);
    assert_eq!(status(&player, &[]).await, StatusCode::OK);
}

#[tokio::test]
async fn a_video_that_is_not_ready_is_not_served() {
    const DRAFT: &str = "3c5e7a9b1d2f4a6c8e0b1d3f5a7c9e2b";
    let emulator = TestEmulator::start(EmulatorSettings {
        videos: vec![AccountVideo {
            ready: false,
            require_signed_urls: false,
            ..AccountVideo::protected(DRAFT, "Draft")
        }],
        ..settings_with_api()
    })
    .await;
    for url in [
        emulator.url_for(DRAFT, "iframe"),
        emulator.url_for(&mint(claims_for(DRAFT)), "manifest/video.m3u8"),
    ] {
        let response = get(&url).await;
        assert_eq!(
            (response.status, response.text().as_str()),
            (
                StatusCode::NOT_FOUND,
                "this video is not ready to stream yet"
            )
        );
    }
    let video = result_of(
        call(
            Method::GET,
            &api_url(&emulator.origin(), &format!("/{DRAFT}")),
            None,
        )
        .await,
    );
    assert_eq!(video["readyToStream"], json!(false));
    assert_eq!(video["status"]["state"], json!("inprogress"));
}

// === seeded from the configuration, and kept across reloads ===

/// [`gateway_config`] with `keynote` unprotected and the API enabled with a token file in
/// `dir`, plus `extra`.
fn config_with_api(dir: &std::path::Path, extra: &str) -> String {
    std::fs::write(dir.join("api-token"), format!("{API_TOKEN}\n")).unwrap();
    gateway_config().replace(
        "stream:\n  emulator:\n    listen: 127.0.0.1:0\n",
        &format!(
            "stream:\n  emulator:\n    listen: 127.0.0.1:0\n    unprotected: [keynote]\ncloudflare:\n  account_id: {ACCOUNT}\n  api_token: {{file: api-token}}\n{extra}"
        ),
    )
}

async fn start_from(path: &std::path::Path) -> App {
    let settings = Settings::load(path).unwrap_or_else(|errors| panic!("{errors}"));
    let (keys, _) = load_signing_keys(&settings, MissingKeys::Fail).unwrap();
    App::start(settings, keys, None).await.expect("starts")
}

#[tokio::test]
async fn the_account_holds_the_catalogue_and_the_demo_videos_as_configured() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, config_with_api(dir.path(), "")).unwrap();
    let app = start_from(&path).await;
    let origin = format!("http://{}", app.emulator_addr().unwrap());
    let (_, envelope) = call(Method::GET, &api_url(&origin, "?asc=true"), None).await;
    let videos = envelope["result"].as_array().unwrap();
    let described: Vec<(&str, &str, bool, bool)> = videos
        .iter()
        .map(|v| {
            (
                v["uid"].as_str().unwrap(),
                v["meta"]["name"].as_str().unwrap(),
                v["requireSignedURLs"].as_bool().unwrap(),
                v["readyToStream"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        described,
        [
            (VIDEO_UID, "intro", true, true),
            (OTHER_VIDEO_UID, "keynote", false, true),
            (
                "7a3f9c2e1b4d4e6f8a0b2c4d6e8f0a1c",
                "Product tour",
                true,
                true
            ),
            (
                "3c5e7a9b1d2f4a6c8e0b1d3f5a7c9e2b",
                "Onboarding (draft)",
                true,
                false
            ),
        ]
    );
    assert_eq!(
        get(&format!("{origin}/{OTHER_VIDEO_UID}/iframe"))
            .await
            .status,
        StatusCode::OK,
        "an unprotected video plays by its bare uid"
    );
    assert_eq!(
        get(&format!("{origin}/{VIDEO_UID}/iframe")).await.status,
        StatusCode::UNAUTHORIZED
    );
    app.shutdown().await;
}

#[tokio::test]
async fn keys_and_video_settings_changed_through_the_api_survive_a_reload() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, config_with_api(dir.path(), "")).unwrap();
    let app = start_from(&path).await;
    let origin = format!("http://{}", app.emulator_addr().unwrap());
    let gateway = format!("http://{}", app.gateway_addr());

    // A created key, an edited video, and the configured key deleted.
    let key = result_of(call(Method::POST, &api_url(&origin, "/keys"), None).await);
    let created_token = token_from_created_key(&key, VIDEO_UID);
    result_of(
        call(
            Method::POST,
            &api_url(&origin, &format!("/{VIDEO_UID}")),
            Some(json!({"requireSignedURLs": false})),
        )
        .await,
    );
    // The gateway signs with the configured key; once deleted, its tokens are refused.
    let location = redirect_location(
        &get(&format!("{gateway}/watch/intro")).await,
        "/watch/intro",
    );
    assert_eq!(get(&location).await.status, StatusCode::OK);
    result_of(
        call(
            Method::DELETE,
            &api_url(&origin, &format!("/keys/{FIXTURE_KID}")),
            None,
        )
        .await,
    );
    assert_eq!(get(&location).await.status, StatusCode::UNAUTHORIZED);

    // A reload of a changed file (the token's life) builds a new emulator for the account.
    std::fs::write(
        &path,
        config_with_api(dir.path(), "").replace("ttl: 1h", "ttl: 2h"),
    )
    .unwrap();
    let generation = app
        .reloader()
        .unwrap()
        .reload()
        .expect("the reload applies");
    assert_eq!(generation, 2);

    let keys = key_ids(&result_of(
        call(Method::GET, &api_url(&origin, "/keys"), None).await,
    ));
    assert_eq!(
        keys,
        HashSet::from([key["id"].as_str().unwrap().to_string()]),
        "the deletion is remembered"
    );
    assert_eq!(
        get(&format!("{origin}/{created_token}/iframe"))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(get(&location).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        get(&format!("{origin}/{VIDEO_UID}/iframe")).await.status,
        StatusCode::OK,
        "the edited setting is kept"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_configured_api_token_that_cannot_be_read_stops_the_start_without_showing_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    let yaml = config_with_api(dir.path(), "").replace("file: api-token", "file: missing-token");
    std::fs::write(&path, yaml).unwrap();
    let settings = Settings::load(&path).unwrap();
    let (keys, _) = load_signing_keys(&settings, MissingKeys::Fail).unwrap();
    let error = App::start(settings, keys, None)
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(error.contains("cloudflare.api_token"), "{error}");
    assert!(!error.contains("missing-token"), "{error}");
}

#[test]
fn created_times_are_distinct_even_for_videos_seeded_at_one_instant() {
    // Explicit, equal creation times would make paging inexact: refused.
    let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let videos = many_videos(2)
        .into_iter()
        .map(|video| AccountVideo {
            created: Some(at),
            ..video
        })
        .collect();
    let error = streamgate::emulator::Emulator::new(EmulatorSettings {
        videos,
        ..settings_with_api()
    })
    .expect_err("refused");
    assert!(error.to_string().contains("creation time"), "{error}");
}
