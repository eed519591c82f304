//! The gateway end to end over loopback: /watch redirects that the emulator accepts,
//! /api/getSignedURL, the token cache seen from outside, and bad input on every route.

mod common;

use std::sync::Arc;

use common::*;
use http::Method;
use serde_json::{Value, json};

fn location(response: &TestResponse) -> String {
    assert_eq!(response.status.as_u16(), 302, "body: {}", response.text());
    response
        .header("location")
        .expect("302 has a Location")
        .to_string()
}

#[tokio::test]
async fn allowed_request_redirects_to_a_token_the_emulator_accepts() {
    let gateway = TestGateway::start().await;
    let response = get(&gateway.url("/watch/intro")).await;
    let location = location(&response);
    assert_eq!(response.header("cache-control"), Some("private, no-store"));
    assert_eq!(response.header("referrer-policy"), Some("no-referrer"));
    assert!(location.ends_with("/iframe"), "{location}");
    let token = token_in_location(&location, &gateway.emulator_origin());
    let claims = decode_claims_unverified(&token);
    assert_eq!(claims["sub"], VIDEO_UID);
    assert_eq!(claims["kid"], FIXTURE_KID);
    assert!(claims["exp"].is_u64() && claims["nbf"].is_u64());

    let player = get(&location).await;
    assert_eq!(player.status.as_u16(), 200, "{}", player.text());
    assert!(player.text().contains(VIDEO_UID));
    gateway.shutdown().await;
}

#[tokio::test]
async fn every_resource_redirects_to_content_the_emulator_serves() {
    let gateway = TestGateway::start().await;
    let cases = [
        (
            "/watch/intro/manifest/video.m3u8",
            "/manifest/video.m3u8",
            "mpegurl",
        ),
        (
            "/watch/intro/manifest/video.mpd",
            "/manifest/video.mpd",
            "dash+xml",
        ),
        (
            "/watch/intro/thumbnails/thumbnail.jpg?time=2s&height=90",
            "/thumbnails/thumbnail.jpg?time=2s&height=90",
            "image/jpeg",
        ),
        (&format!("/watch/{VIDEO_UID}"), "/iframe", "text/html"),
    ];
    for (path, suffix, content_type) in cases {
        let location = location(&get(&gateway.url(path)).await);
        assert!(location.ends_with(suffix), "{path}: {location}");
        let content = get(&location).await;
        assert_eq!(content.status.as_u16(), 200, "{path}: {}", content.text());
        let got = content.header("content-type").unwrap_or_default();
        assert!(got.contains(content_type), "{path}: {got}");
    }
    gateway.shutdown().await;
}

#[tokio::test]
async fn downloads_only_when_the_rule_allows() {
    let gateway = TestGateway::start().await;
    let refused = get(&gateway.url("/watch/intro/downloads/default.mp4")).await;
    assert_error(&refused, 403, "downloads are not allowed");

    let auth = [("authorization", &*format!("Bearer {TEST_API_KEY}"))];
    let response = get_with(&gateway.url("/watch/keynote/downloads/default.mp4"), &auth).await;
    let location = location(&response);
    let token = token_in_location(&location, &gateway.emulator_origin());
    assert_eq!(decode_claims_unverified(&token)["downloadable"], true);
    let mp4 = get(&location).await;
    assert_eq!(mp4.status.as_u16(), 200, "{}", mp4.text());
    assert_eq!(mp4.header("content-type"), Some("video/mp4"));
    gateway.shutdown().await;
}

#[tokio::test]
async fn protected_video_needs_a_valid_api_key() {
    let gateway = TestGateway::start().await;
    let anonymous = get(&gateway.url("/watch/keynote")).await;
    assert_error(&anonymous, 401, "requires you to sign in with an API key");
    assert!(anonymous.header("www-authenticate").is_some());

    let wrong = get_with(&gateway.url("/watch/keynote"), &[("x-api-key", "nope")]).await;
    assert_error(&wrong, 401, "not valid");
    // A bad key is refused even where anonymous access would be allowed.
    let wrong_public = get_with(&gateway.url("/watch/intro"), &[("x-api-key", "nope")]).await;
    assert_error(&wrong_public, 401, "not valid");

    let ok = get_with(
        &gateway.url("/watch/keynote"),
        &[("x-api-key", TEST_API_KEY)],
    )
    .await;
    let player = get(&location(&ok)).await;
    assert_eq!(player.status.as_u16(), 200);
    assert!(player.text().contains(OTHER_VIDEO_UID));
    gateway.shutdown().await;
}

#[tokio::test]
async fn head_answers_the_same_redirect_without_a_body() {
    let gateway = TestGateway::start().await;
    let response = send(Method::HEAD, &gateway.url("/watch/intro"), &[], None).await;
    assert_eq!(response.status.as_u16(), 302);
    assert!(response.header("location").is_some());
    assert!(response.body.is_empty());
    gateway.shutdown().await;
}

#[tokio::test]
async fn bad_input_on_watch_gets_the_right_4xx_with_a_reason() {
    let gateway = TestGateway::start().await;
    let huge = format!("/watch/{}", "a".repeat(4000));
    let cases: Vec<(String, u16, &str)> = vec![
        ("/watch/not_a_video".into(), 404, "no video"),
        (format!("/watch/{UNKNOWN_VIDEO_UID}"), 404, "no video"),
        ("/watch/bad!id".into(), 400, "not a video uid"),
        ("/watch/../etc/passwd".into(), 400, "not a video uid"),
        ("/watch/%2e%2e/iframe".into(), 400, "percent-encoded"),
        ("/watch/intro%2Fiframe".into(), 400, "percent-encoded"),
        ("/watch/".into(), 400, "missing video"),
        ("/watch/intro/secret.txt".into(), 404, "unknown resource"),
        // The README's error table: `..` is a 400 wherever it appears.
        (
            "/watch/intro/iframe/../../x".into(),
            400,
            "`..` segments are not allowed",
        ),
        (
            "/watch/intro/thumbnails/thumbnail.jpg?token=x".into(),
            400,
            "unsupported query",
        ),
        ("/nothing-here".into(), 404, "no such route"),
        (huge, 414, "too long"),
    ];
    for (path, status, reason) in cases {
        let response = get(&gateway.url(&path)).await;
        assert_error(&response, status, reason);
    }
    let post = send(Method::POST, &gateway.url("/watch/intro"), &[], None).await;
    assert_error(&post, 405, "method not allowed");
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
    assert_eq!(
        gateway.signatures(),
        0,
        "no bad request may cause a signature"
    );
    gateway.shutdown().await;
}

#[tokio::test]
async fn get_signed_url_returns_a_token_the_emulator_accepts() {
    let gateway = TestGateway::start().await;
    let response = post_get_signed_url(&gateway, r#"{"video_id": "intro"}"#, &[]).await;
    assert_eq!(response.status.as_u16(), 200, "{}", response.text());
    assert_eq!(response.header("cache-control"), Some("no-store"));
    let body: Value = serde_json::from_slice(&response.body).unwrap();
    let token = body["token"].as_str().unwrap();
    let url = body["url"].as_str().unwrap();
    assert_eq!(url, format!("{}/{token}/iframe", gateway.emulator_origin()));
    let expires_at = body["expires_at"].as_str().unwrap();
    assert!(
        expires_at.ends_with('Z') && expires_at.contains('T'),
        "{expires_at}"
    );
    let player = get(url).await;
    assert_eq!(player.status.as_u16(), 200);

    // Same policy as /watch: the same token comes back from both.
    let location = location(&get(&gateway.url("/watch/intro")).await);
    assert_eq!(
        token_in_location(&location, &gateway.emulator_origin()),
        token
    );
    gateway.shutdown().await;
}

#[tokio::test]
async fn get_signed_url_refuses_bad_requests_with_reasons() {
    let gateway = TestGateway::start().await;
    let get_instead = get(&gateway.url("/api/getSignedURL")).await;
    assert_error(&get_instead, 405, "method not allowed");
    assert_eq!(get_instead.header("allow"), Some("POST, OPTIONS"));

    assert_error(
        &post_get_signed_url(&gateway, "{}", &[]).await,
        400,
        "`video_id` is required",
    );
    assert_error(
        &post_get_signed_url(&gateway, r#"{"video_id": 7}"#, &[]).await,
        400,
        "must be a string",
    );
    assert_error(
        &post_get_signed_url(&gateway, r#"{"video_id": "#, &[]).await,
        400,
        "malformed JSON",
    );
    assert_error(
        &post_get_signed_url(&gateway, "not json", &[]).await,
        400,
        "malformed JSON",
    );
    // Malformed, as on /watch: a 400 (a well-formed unknown id is a 404).
    assert_error(
        &post_get_signed_url(&gateway, r#"{"video_id": "../x"}"#, &[]).await,
        400,
        "not a video uid",
    );
    assert_error(
        &post_get_signed_url(&gateway, r#"{"video_id": "keynote"}"#, &[]).await,
        401,
        "API key",
    );

    let text = send(
        Method::POST,
        &gateway.url("/api/getSignedURL"),
        &[("content-type", "text/plain")],
        Some(br#"{"video_id": "intro"}"#.to_vec()),
    )
    .await;
    assert_error(&text, 415, "application/json");

    let huge = format!(r#"{{"video_id": "{}"}}"#, "a".repeat(10_000));
    assert_error(
        &post_get_signed_url(&gateway, &huge, &[]).await,
        413,
        "larger than",
    );
    assert_eq!(gateway.signatures(), 0);
    gateway.shutdown().await;
}

#[tokio::test]
async fn two_hundred_concurrent_requests_for_one_video_sign_once() {
    let gateway = Arc::new(TestGateway::start().await);
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let gateway = Arc::clone(&gateway);
        tasks.push(tokio::spawn(async move {
            location(&get(&gateway.url("/watch/intro")).await)
        }));
    }
    let mut locations = Vec::new();
    for task in tasks {
        locations.push(task.await.unwrap());
    }
    assert!(locations.iter().all(|l| *l == locations[0]));
    assert_eq!(gateway.signatures(), 1);
    let stats = gateway.app().snapshot().cache.stats();
    assert_eq!((stats.misses, stats.hits), (1, 199));
}

#[tokio::test]
async fn callers_with_different_entitlements_get_different_tokens() {
    let gateway = TestGateway::start().await;
    let origin = gateway.emulator_origin();
    let anonymous = location(&get(&gateway.url("/watch/intro")).await);
    let ci =
        location(&get_with(&gateway.url("/watch/intro"), &[("x-api-key", TEST_API_KEY)]).await);
    assert_ne!(anonymous, ci);
    let anonymous_claims = decode_claims_unverified(&token_in_location(&anonymous, &origin));
    let ci_claims = decode_claims_unverified(&token_in_location(&ci, &origin));
    let life = |c: &Value| c["exp"].as_u64().unwrap() - c["nbf"].as_u64().unwrap();
    assert_eq!(life(&anonymous_claims), 3600 + 60);
    assert_eq!(life(&ci_claims), 1800 + 60);
    assert_eq!(gateway.signatures(), 2);
    gateway.shutdown().await;
}

/// [`gateway_config`] with tokens that live 3 s and are reused while more than 1 s is left.
fn short_lived_config() -> String {
    let config = gateway_config().replace(
        "ttl: 1h\n  min_remaining: 10m",
        "ttl: 3s\n  min_remaining: 1s",
    );
    assert!(config.contains("ttl: 3s"), "the default config has changed");
    config.replace("    ttl: 30m\n", "")
}

#[tokio::test]
async fn a_token_is_reused_over_http_while_it_has_life_left() {
    let gateway = TestGateway::start_with(&short_lived_config()).await;
    let first = location(&get(&gateway.url("/watch/intro")).await);
    let second = location(&get(&gateway.url("/watch/intro")).await);
    assert_eq!(first, second);
    assert_eq!(gateway.signatures(), 1);
    let stats = gateway.app().snapshot().cache.stats();
    assert_eq!((stats.misses, stats.hits), (1, 1));
    let player = get(&second).await;
    assert_eq!(player.status.as_u16(), 200, "{}", player.text());
    gateway.shutdown().await;
}

/// The expiry half of the reuse window needs time to pass: here on a manual clock that the
/// gateway is started with.
#[tokio::test]
async fn a_token_down_to_min_remaining_is_signed_again() {
    use streamgate::app::keys::{MissingKeys, load_signing_keys};
    use streamgate::app::{App, StartOptions};
    use streamgate::config::Settings;
    use streamgate::token::signer::Clock;

    let settings = Settings::from_yaml(&short_lived_config(), "test.yaml", &fixture_path(""))
        .unwrap_or_else(|errors| panic!("test config should be valid:\n{errors}"));
    let (keys, _) = load_signing_keys(&settings, MissingKeys::Fail).unwrap();
    // From the system's time, so that the emulator (which reads that) accepts the tokens.
    let t0 = u64::try_from(unix_now()).unwrap();
    let clock = Clock::manual(t0);
    let options = StartOptions {
        metrics_listen: None,
        listen: Some("127.0.0.1:0".parse().unwrap()),
        clock: clock.clone(),
        ..StartOptions::default()
    };
    let app = App::start_with(settings, keys, options).await.unwrap();
    let origin = format!("http://{}", app.emulator_addr().expect("the emulator runs"));
    let url = format!("http://{}/watch/intro", app.gateway_addr());
    let watch = async || location(&get(&url).await);
    let claims = |location: &str| decode_claims_unverified(&token_in_location(location, &origin));
    let signatures = || app.snapshot().cache.signer().signatures();

    let first = watch().await;
    assert_eq!(claims(&first)["exp"], t0 + 3);
    clock.advance(std::time::Duration::from_secs(1));
    assert_eq!(watch().await, first, "2 s left: reused");
    assert_eq!(signatures(), 1);

    clock.advance(std::time::Duration::from_secs(1));
    let renewed = watch().await;
    assert_ne!(renewed, first, "1 s left: signed again");
    assert_eq!(claims(&renewed)["exp"], t0 + 2 + 3);
    assert_eq!(claims(&renewed)["nbf"], t0 + 2 - 60);
    assert_eq!(watch().await, renewed);
    assert_eq!(signatures(), 2);
    let player = get(&renewed).await;
    assert_eq!(player.status.as_u16(), 200, "{}", player.text());
    app.shutdown().await;
}

#[tokio::test]
async fn health_answers_ok() {
    let gateway = TestGateway::start().await;
    let response = get(&gateway.url("/healthz")).await;
    assert_eq!(response.status.as_u16(), 200);
    assert_eq!(
        serde_json::from_slice::<Value>(&response.body).unwrap(),
        json!({"status": "ok"})
    );
    gateway.shutdown().await;
}

#[tokio::test]
async fn gateway_tokens_respect_emulator_access_rules() {
    // A rule whose token only works from one address: the emulator judges the viewer.
    let config = gateway_config()
        .replace(
            "    listen: 127.0.0.1:0\nsigning_keys",
            "    listen: 127.0.0.1:0\n    client_ip_header: x-test-client-ip\nsigning_keys",
        )
        .replace(
            "    subjects: [anyone]\n",
            "    subjects: [anyone]\n    access_rules:\n      - {type: ip.src, action: allow, ip: [203.0.113.0/24]}\n      - {type: any, action: block}\n",
        );
    let gateway = TestGateway::start_with(&config).await;
    let location = location(&get(&gateway.url("/watch/intro")).await);
    let inside = get_with(&location, &[("x-test-client-ip", "203.0.113.9")]).await;
    assert_eq!(inside.status.as_u16(), 200, "{}", inside.text());
    let outside = get_with(&location, &[("x-test-client-ip", "198.51.100.1")]).await;
    assert_eq!(outside.status.as_u16(), 401);
    assert!(
        outside.text().contains("blocked by rule on 'any'"),
        "{}",
        outside.text()
    );
    gateway.shutdown().await;
}

#[tokio::test]
async fn http2_with_prior_knowledge_gets_the_same_redirect() {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let gateway = TestGateway::start().await;
    let stream = tokio::net::TcpStream::connect(gateway.app().gateway_addr())
        .await
        .unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    let driver = tokio::spawn(connection);
    let request = http::Request::get(gateway.url("/watch/intro"))
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = tokio::time::timeout(REQUEST_TIMEOUT, sender.send_request(request))
        .await
        .expect("h2 request should not hang")
        .unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.status().as_u16(), 302);
    let location = response.headers()["location"].to_str().unwrap().to_string();
    let _ = response.into_body().collect().await;
    assert!(location.starts_with(&gateway.emulator_origin()));
    drop(sender);
    driver.abort();
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_taken_gateway_port_fails_start_with_a_clear_error() {
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = gateway_config().replacen(
        "listen: 127.0.0.1:0\n",
        &format!("listen: {}\n", taken.local_addr().unwrap()),
        1,
    );
    let settings =
        streamgate::config::Settings::from_yaml(&config, "test.yaml", &fixture_path("")).unwrap();
    let (keys, _) = streamgate::app::keys::load_signing_keys(
        &settings,
        streamgate::app::keys::MissingKeys::Fail,
    )
    .unwrap();
    let error = streamgate::app::App::start(settings, keys, None)
        .await
        .err()
        .expect("the port is taken");
    let message = error.to_string();
    assert!(
        message.contains("cannot listen on") && message.contains("gateway"),
        "{message}"
    );
}
