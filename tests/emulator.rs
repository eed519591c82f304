//! The Stream emulator over real loopback sockets: what it serves for a good token, and the
//! status and reason it gives for each way a token can be bad.

mod common;

use std::net::SocketAddr;

use bytes::Bytes;
use http::{Method, StatusCode};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use streamgate::emulator::{
    CLIP, Media, SUBTITLES_PLAYLIST_PATH, SYNTHETIC, SYNTHETIC_DOWNLOAD_LEN_BYTES, TS_PACKET_LEN,
};

use common::*;

/// Assert a refusal by status and exact reason text, with the plain-text content type.
fn assert_refused(response: &TestResponse, status: StatusCode, reason: &str) {
    assert_eq!(
        (response.status, response.text().as_str()),
        (status, reason),
        "unexpected answer"
    );
    assert_eq!(response.header("content-type"), Some("text/plain"));
}

async fn emulator() -> TestEmulator {
    TestEmulator::start(emulator_settings()).await
}

/// Fetch `resource` with a token for `claims` from a fresh default emulator.
async fn fetch_with_claims(claims: Value, resource: &str) -> TestResponse {
    let emulator = emulator().await;
    get(&emulator.url_for(&mint(claims), resource)).await
}

/// Fetch the player page with a token carrying `rules`, posing as `address` (and `country`).
async fn fetch_as(rules: Value, address: &str, country: Option<&str>) -> TestResponse {
    let emulator = TestEmulator::start(emulator_settings_with_client_ip_header()).await;
    let token = mint(with_claim(valid_claims(), "accessRules", rules));
    let mut headers = vec![(CLIENT_IP_HEADER, address)];
    if let Some(country) = country {
        headers.push((COUNTRY_HEADER, country));
    }
    get_with(&emulator.url_for(&token, "iframe"), &headers).await
}

// === what a good token gets ===

#[tokio::test]
async fn valid_token_plays_the_player_page_naming_the_video() {
    let response = fetch_with_claims(valid_claims(), "iframe").await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(
        response.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(response.header("cache-control"), Some("no-store"));
    let page = response.text();
    assert!(page.contains(&format!("streamgate Stream emulator — video {VIDEO_UID}")));
    assert!(page.contains(r#"src="manifest/video.m3u8""#));
}

#[tokio::test]
async fn valid_token_gets_the_hls_master_playlist() {
    let response = fetch_with_claims(valid_claims(), "manifest/video.m3u8").await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(
        response.header("content-type"),
        Some("application/vnd.apple.mpegurl")
    );
    let playlist = response.text();
    assert!(playlist.starts_with("#EXTM3U"));
    assert_eq!(playlist.matches("#EXT-X-STREAM-INF").count(), 2);
}

#[tokio::test]
async fn valid_token_gets_the_dash_manifest() {
    let response = fetch_with_claims(valid_claims(), "manifest/video.mpd").await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(
        response.header("content-type"),
        Some("application/dash+xml")
    );
    assert!(response.text().contains("<MPD "));
}

#[tokio::test]
async fn valid_token_gets_a_jpeg_thumbnail_whatever_the_query() {
    let emulator = emulator().await;
    let token = mint(valid_claims());
    let url = emulator.url_for(
        &token,
        "thumbnails/thumbnail.jpg?time=12s&height=270&width=480&fit=crop",
    );
    let response = get(&url).await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.header("content-type"), Some("image/jpeg"));
    assert_eq!(&response.body[..3], &[0xFF, 0xD8, 0xFF]);
}

#[tokio::test]
async fn downloadable_token_gets_the_mp4() {
    let claims = with_claim(valid_claims(), "downloadable", json!(true));
    let response = fetch_with_claims(claims, "downloads/default.mp4").await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.header("content-type"), Some("video/mp4"));
    assert_eq!(&response.body[4..8], b"ftyp");
    assert!(response.body.len() >= 60 * 1024);
}

#[tokio::test]
async fn download_is_refused_without_downloadable() {
    let emulator = emulator().await;
    for claims in [
        valid_claims(),
        with_claim(valid_claims(), "downloadable", json!(false)),
    ] {
        let response = get(&emulator.url_for(&mint(claims), "downloads/default.mp4")).await;
        assert_refused(
            &response,
            StatusCode::UNAUTHORIZED,
            "downloads are not allowed for this token",
        );
    }
}

#[tokio::test]
async fn head_answers_headers_without_a_body() {
    let emulator = emulator().await;
    let url = emulator.url_for(&mint(valid_claims()), "manifest/video.m3u8");
    let full = get(&url).await;
    let head = send(Method::HEAD, &url, &[], None).await;
    assert_eq!(head.status, StatusCode::OK);
    assert!(head.body.is_empty());
    assert_eq!(
        head.header("content-length"),
        Some(full.body.len().to_string().as_str())
    );
}

#[tokio::test]
async fn token_from_the_second_key_is_accepted() {
    let emulator = emulator().await;
    let claims = with_claim(claims_for(OTHER_VIDEO_UID), "kid", json!(SECOND_KID));
    let token = mint_with_key(SECOND_KID, &second_key_der(), &claims);
    let response = get(&emulator.url_for(&token, "iframe")).await;
    assert_eq!(response.status, StatusCode::OK);
    assert!(response.text().contains(OTHER_VIDEO_UID));
}

#[tokio::test]
async fn exp_and_nbf_as_integer_strings_are_accepted() {
    let now = unix_now();
    let claims = with_claim(
        with_claim(valid_claims(), "exp", json!((now + 600).to_string())),
        "nbf",
        json!((now - 3600).to_string()),
    );
    let response = fetch_with_claims(claims, "iframe").await;
    assert_eq!(response.status, StatusCode::OK);
}

#[tokio::test]
async fn token_within_leeway_of_expiry_is_accepted() {
    // Default settings allow 30 s of skew.
    let claims = with_claim(valid_claims(), "exp", json!(unix_now() - 10));
    let response = fetch_with_claims(claims, "iframe").await;
    assert_eq!(response.status, StatusCode::OK);
}

// === what a bad token gets ===

#[tokio::test]
async fn expired_token_is_rejected_by_emulator() {
    let claims = with_claim(valid_claims(), "exp", json!(unix_now() - 120));
    let response = fetch_with_claims(claims, "iframe").await;
    assert_refused(&response, StatusCode::UNAUTHORIZED, "token expired");
}

#[tokio::test]
async fn not_yet_valid_token_is_rejected_by_emulator() {
    let claims = with_claim(valid_claims(), "nbf", json!(unix_now() + 600));
    let response = fetch_with_claims(claims, "iframe").await;
    assert_refused(&response, StatusCode::UNAUTHORIZED, "token not yet valid");
}

#[tokio::test]
async fn tampered_payload_is_rejected_by_emulator() {
    let emulator = emulator().await;
    let token = mint(valid_claims());
    let parts: Vec<&str> = token.split('.').collect();
    let forged_claims = b64url(with_claim(valid_claims(), "downloadable", json!(true)).to_string());
    let forged = format!("{}.{forged_claims}.{}", parts[0], parts[2]);
    let response = get(&emulator.url_for(&forged, "downloads/default.mp4")).await;
    assert_refused(&response, StatusCode::UNAUTHORIZED, "invalid signature");
}

#[tokio::test]
async fn tampered_signature_is_rejected_by_emulator() {
    let emulator = emulator().await;
    let token = mint(valid_claims());
    let (signed, signature) = token.rsplit_once('.').expect("token has three parts");
    // Flip the first signature character to another base64url character.
    let flipped = if signature.starts_with('A') { "B" } else { "A" };
    let forged = format!("{signed}.{flipped}{}", &signature[1..]);
    let response = get(&emulator.url_for(&forged, "iframe")).await;
    assert_refused(&response, StatusCode::UNAUTHORIZED, "invalid signature");
}

#[tokio::test]
async fn token_signed_by_a_different_key_than_its_kid_is_rejected() {
    let token = mint_with_key(FIXTURE_KID, &second_key_der(), &valid_claims());
    let emulator = emulator().await;
    let response = get(&emulator.url_for(&token, "iframe")).await;
    assert_refused(&response, StatusCode::UNAUTHORIZED, "invalid signature");
}

#[tokio::test]
async fn header_kid_differing_from_claim_kid_is_rejected() {
    let claims = with_claim(valid_claims(), "kid", json!(SECOND_KID));
    let response = fetch_with_claims(claims, "iframe").await;
    assert_refused(
        &response,
        StatusCode::UNAUTHORIZED,
        "malformed token: check fields [kid]",
    );
}

#[tokio::test]
async fn token_from_an_unknown_key_is_rejected() {
    let unknown_kid = "11111111111111111111111111111111";
    let claims = with_claim(valid_claims(), "kid", json!(unknown_kid));
    let token = mint_with_key(unknown_kid, &fixture_key_der(), &claims);
    let emulator = emulator().await;
    let response = get(&emulator.url_for(&token, "iframe")).await;
    assert_refused(&response, StatusCode::UNAUTHORIZED, "unknown signing key");
}

#[tokio::test]
async fn token_for_an_unknown_video_is_rejected() {
    let response = fetch_with_claims(claims_for(UNKNOWN_VIDEO_UID), "iframe").await;
    assert_refused(
        &response,
        StatusCode::UNAUTHORIZED,
        "token is for an unknown video",
    );
}

#[tokio::test]
async fn token_whose_sub_is_not_a_uid_is_rejected() {
    let emulator = emulator().await;
    for sub in [json!("my-video"), json!(VIDEO_UID.to_uppercase()), json!(7)] {
        let token = mint(with_claim(valid_claims(), "sub", sub));
        let response = get(&emulator.url_for(&token, "iframe")).await;
        assert_refused(
            &response,
            StatusCode::UNAUTHORIZED,
            "malformed token: check fields [sub]",
        );
    }
    let mut no_sub = valid_claims();
    no_sub.as_object_mut().expect("claims object").remove("sub");
    let response = get(&emulator.url_for(&mint(no_sub), "iframe")).await;
    assert_refused(
        &response,
        StatusCode::UNAUTHORIZED,
        "malformed token: check fields [sub]",
    );
}

#[tokio::test]
async fn alg_none_token_is_rejected() {
    let emulator = emulator().await;
    let token = assemble_token(
        &json!({"alg": "none", "kid": FIXTURE_KID}),
        &valid_claims(),
        b"",
    );
    let response = get(&emulator.url_for(&token, "iframe")).await;
    assert_refused(
        &response,
        StatusCode::UNAUTHORIZED,
        "malformed token: check fields [alg]",
    );
}

#[tokio::test]
async fn hs256_token_keyed_with_the_public_key_is_rejected() {
    let emulator = emulator().await;
    let header = Header {
        alg: Algorithm::HS256,
        kid: Some(FIXTURE_KID.to_owned()),
        ..Default::default()
    };
    let public_key = public_key_der(&fixture_key_der());
    let token = mint_raw(
        &header,
        &valid_claims(),
        &EncodingKey::from_secret(&public_key),
    );
    let response = get(&emulator.url_for(&token, "iframe")).await;
    assert_refused(
        &response,
        StatusCode::UNAUTHORIZED,
        "malformed token: check fields [alg]",
    );
}

#[tokio::test]
async fn non_numeric_exp_is_rejected() {
    let emulator = emulator().await;
    for exp in [
        json!("tomorrow"),
        json!(unix_now() as f64 + 0.5),
        json!(true),
    ] {
        let token = mint(with_claim(valid_claims(), "exp", exp));
        let response = get(&emulator.url_for(&token, "iframe")).await;
        assert_refused(
            &response,
            StatusCode::UNAUTHORIZED,
            "malformed token: check fields [exp]",
        );
    }
}

#[tokio::test]
async fn more_than_five_access_rules_are_rejected() {
    let rules = Value::Array(vec![json!({"type": "any", "action": "allow"}); 6]);
    let claims = with_claim(valid_claims(), "accessRules", rules);
    let response = fetch_with_claims(claims, "iframe").await;
    assert_refused(
        &response,
        StatusCode::UNAUTHORIZED,
        "malformed token: check fields [accessRules]",
    );
}

#[tokio::test]
async fn malformed_access_rule_is_named() {
    let rules = json!([{"type": "ip.src", "action": "allow", "ip": ["999.0.0.1"]}]);
    let claims = with_claim(valid_claims(), "accessRules", rules);
    let response = fetch_with_claims(claims, "iframe").await;
    assert_refused(
        &response,
        StatusCode::UNAUTHORIZED,
        "malformed token: check fields [accessRules[0].ip]",
    );
}

#[tokio::test]
async fn garbage_in_place_of_a_token_is_rejected() {
    let emulator = emulator().await;
    let response = get(&emulator.url_for("not.a.token", "iframe")).await;
    assert_refused(
        &response,
        StatusCode::UNAUTHORIZED,
        "malformed token: check fields [header]",
    );
}

// === access rules ===

#[tokio::test]
async fn ip_rule_allows_a_v4_viewer_inside_its_cidr() {
    let rules = json!([
        {"type": "ip.src", "action": "allow", "ip": ["198.51.100.0/24"]},
        {"type": "any", "action": "block"},
    ]);
    let response = fetch_as(rules, "198.51.100.20", None).await;
    assert_eq!(response.status, StatusCode::OK);
}

#[tokio::test]
async fn ip_rule_blocks_a_v4_viewer_inside_its_cidr() {
    let rules = json!([{"type": "ip.src", "action": "block", "ip": ["198.51.100.0/24"]}]);
    let response = fetch_as(rules, "198.51.100.20", None).await;
    assert_refused(
        &response,
        StatusCode::UNAUTHORIZED,
        "blocked by rule on 'ip.src'",
    );
}

#[tokio::test]
async fn ip_rule_blocks_a_v6_viewer_inside_its_cidr() {
    let rules = json!([{"type": "ip.src", "action": "block", "ip": ["2001:db8:aa::/48"]}]);
    let response = fetch_as(rules, "2001:db8:aa::17", None).await;
    assert_refused(
        &response,
        StatusCode::UNAUTHORIZED,
        "blocked by rule on 'ip.src'",
    );
}

#[tokio::test]
async fn ip_rule_allows_a_v6_viewer_inside_its_cidr() {
    let rules = json!([
        {"type": "ip.src", "action": "allow", "ip": ["2001:db8:aa::/48"]},
        {"type": "any", "action": "block"},
    ]);
    let response = fetch_as(rules, "2001:db8:aa::17", None).await;
    assert_eq!(response.status, StatusCode::OK);
}

#[tokio::test]
async fn v4_rule_never_matches_a_v6_viewer() {
    let rules = json!([{"type": "ip.src", "action": "block", "ip": ["0.0.0.0/0"]}]);
    let response = fetch_as(rules, "2001:db8::1", None).await;
    assert_eq!(response.status, StatusCode::OK);
}

#[tokio::test]
async fn v6_rule_blocks_a_viewer_connected_over_ipv6_loopback() {
    let bind: SocketAddr = "[::1]:0".parse().expect("literal address");
    // No client-ip header configured: the socket peer (::1) is the viewer.
    let emulator = TestEmulator::start_on(bind, emulator_settings()).await;
    let token = mint(with_claim(
        valid_claims(),
        "accessRules",
        json!([
            {"type": "ip.src", "action": "allow", "ip": ["127.0.0.0/8"]},
            {"type": "ip.src", "action": "block", "ip": ["::1/128"]},
        ]),
    ));
    let response = get(&emulator.url_for(&token, "iframe")).await;
    assert_refused(
        &response,
        StatusCode::UNAUTHORIZED,
        "blocked by rule on 'ip.src'",
    );
}

#[tokio::test]
async fn socket_peer_is_the_viewer_when_no_client_ip_header_is_configured() {
    // The emulator ignores the header because it is not configured to trust it.
    let emulator = emulator().await;
    let token = mint(with_claim(
        valid_claims(),
        "accessRules",
        json!([{"type": "ip.src", "action": "block", "ip": ["127.0.0.1"]}]),
    ));
    let response = get_with(
        &emulator.url_for(&token, "iframe"),
        &[(CLIENT_IP_HEADER, "203.0.113.5")],
    )
    .await;
    assert_refused(
        &response,
        StatusCode::UNAUTHORIZED,
        "blocked by rule on 'ip.src'",
    );
}

#[tokio::test]
async fn country_rule_blocks_a_listed_country_ignoring_case() {
    let rules = json!([{"type": "ip.geoip.country", "action": "block", "country": ["GB", "fr"]}]);
    let response = fetch_as(rules, "192.0.2.1", Some("FR")).await;
    assert_refused(
        &response,
        StatusCode::UNAUTHORIZED,
        "blocked by rule on 'ip.geoip.country'",
    );
}

#[tokio::test]
async fn country_rule_allows_a_listed_country() {
    let rules = json!([
        {"type": "ip.geoip.country", "action": "allow", "country": ["DE"]},
        {"type": "any", "action": "block"},
    ]);
    let response = fetch_as(rules, "192.0.2.1", Some("de")).await;
    assert_eq!(response.status, StatusCode::OK);
}

#[tokio::test]
async fn country_rule_never_matches_without_a_country_header() {
    let rules = json!([
        {"type": "ip.geoip.country", "action": "allow", "country": ["DE"]},
        {"type": "any", "action": "block"},
    ]);
    let response = fetch_as(rules, "192.0.2.1", None).await;
    assert_refused(
        &response,
        StatusCode::UNAUTHORIZED,
        "blocked by rule on 'any'",
    );
}

#[tokio::test]
async fn any_rule_blocks_everyone() {
    let rules = json!([{"type": "any", "action": "block"}]);
    let response = fetch_as(rules, "192.0.2.1", Some("US")).await;
    assert_refused(
        &response,
        StatusCode::UNAUTHORIZED,
        "blocked by rule on 'any'",
    );
}

#[tokio::test]
async fn token_is_valid_when_no_rule_matches() {
    let rules = json!([
        {"type": "ip.src", "action": "block", "ip": ["198.51.100.0/24", "2001:db8::/32"]},
        {"type": "ip.geoip.country", "action": "block", "country": ["US"]},
    ]);
    let response = fetch_as(rules, "192.0.2.1", Some("CA")).await;
    assert_eq!(response.status, StatusCode::OK);
}

#[tokio::test]
async fn first_matching_rule_wins() {
    // The viewer matches all three rules; only the first one counts.
    let block_first = json!([
        {"type": "ip.geoip.country", "action": "block", "country": ["NL"]},
        {"type": "ip.src", "action": "allow", "ip": ["192.0.2.0/24"]},
        {"type": "any", "action": "allow"},
    ]);
    let response = fetch_as(block_first, "192.0.2.1", Some("NL")).await;
    assert_refused(
        &response,
        StatusCode::UNAUTHORIZED,
        "blocked by rule on 'ip.geoip.country'",
    );

    let allow_first = json!([
        {"type": "ip.src", "action": "allow", "ip": ["192.0.2.0/24"]},
        {"type": "ip.geoip.country", "action": "block", "country": ["NL"]},
        {"type": "any", "action": "block"},
    ]);
    let response = fetch_as(allow_first, "192.0.2.1", Some("NL")).await;
    assert_eq!(response.status, StatusCode::OK);
}

// === paths and methods ===

#[tokio::test]
async fn bare_video_uid_requires_a_signed_url() {
    let emulator = emulator().await;
    let response = get(&emulator.url_for(VIDEO_UID, "iframe")).await;
    assert_refused(
        &response,
        StatusCode::UNAUTHORIZED,
        "this video requires a signed URL",
    );
}

#[tokio::test]
async fn unknown_bare_video_uid_is_not_found() {
    let emulator = emulator().await;
    let response = get(&emulator.url_for(UNKNOWN_VIDEO_UID, "iframe")).await;
    assert_refused(&response, StatusCode::NOT_FOUND, "video not found");
}

#[tokio::test]
async fn unknown_resource_is_not_found() {
    let emulator = emulator().await;
    let token = mint(valid_claims());
    for resource in [
        "manifest/stream_1080p.m3u8",
        "manifest/seg_360p_5.ts",
        "manifest/seg_360p_01.ts",
        "manifest/../iframe",
        "manifest/video.m3u8/",
        "player",
        "downloads/other.mp4",
        "",
    ] {
        let response = get(&emulator.url_for(&token, resource)).await;
        assert_refused(&response, StatusCode::NOT_FOUND, "not found");
    }
    let response = get(&emulator.url("/")).await;
    assert_refused(&response, StatusCode::NOT_FOUND, "not found");
}

#[tokio::test]
async fn post_is_not_allowed() {
    let emulator = emulator().await;
    let url = emulator.url_for(&mint(valid_claims()), "iframe");
    let response = send(Method::POST, &url, &[], Some(b"{}".to_vec())).await;
    assert_refused(
        &response,
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed",
    );
    assert_eq!(response.header("allow"), Some("GET, HEAD"));
}

#[tokio::test]
async fn unknown_file_below_a_rejected_token_is_refused_before_it_is_looked_up() {
    let emulator = emulator().await;
    let expired = mint(with_claim(valid_claims(), "exp", json!(unix_now() - 120)));
    let response = get(&emulator.url_for(&expired, "manifest/stream_1080p.m3u8")).await;
    assert_refused(&response, StatusCode::UNAUTHORIZED, "token expired");
}

#[tokio::test]
async fn dot_segments_in_place_of_a_token_are_not_found() {
    let emulator = emulator().await;
    // Each would reach the judge as a uid ("video not found") if it were not refused first.
    for path in [
        "/../manifest/video.m3u8",
        "/./manifest/video.m3u8",
        "/a%2Eb/iframe",
    ] {
        let response = get(&emulator.url(path)).await;
        assert_refused(&response, StatusCode::NOT_FOUND, "not found");
    }
}

// === files, as a proxy fetches them ===

/// A token for [`VIDEO_UID`] that may also download.
fn downloadable_token() -> String {
    mint(with_claim(valid_claims(), "downloadable", json!(true)))
}

/// A token for [`LARGE_VIDEO_UID`] (the large synthetic bodies) that may also download.
fn large_downloadable_token() -> String {
    mint(with_claim(
        claims_for(LARGE_VIDEO_UID),
        "downloadable",
        json!(true),
    ))
}

/// The videos whose files the tests walk: the clip, and the large synthetic one.
const VIDEOS: [(&str, &Media); 2] = [(VIDEO_UID, &CLIP), (LARGE_VIDEO_UID, &SYNTHETIC)];

/// The master playlist's URL and text of `video_uid`, for a fresh valid token.
async fn master_playlist(emulator: &TestEmulator, video_uid: &str) -> (String, String) {
    let url = emulator.url_for(&mint(claims_for(video_uid)), "manifest/video.m3u8");
    let response = get(&url).await;
    assert_eq!(response.status, StatusCode::OK);
    (url, response.text())
}

#[tokio::test]
async fn master_playlist_lists_two_relative_renditions_and_an_absolute_subtitles_uri_on_the_request_host()
 {
    let emulator = emulator().await;
    let token = mint(valid_claims());
    let response = get(&emulator.url_for(&token, "manifest/video.m3u8")).await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(
        response.header("content-type"),
        Some("application/vnd.apple.mpegurl")
    );
    assert_eq!(response.header("cache-control"), Some("no-store"));
    let playlist = response.text();
    assert_eq!(
        playlist_uris(&playlist),
        ["stream_240p.m3u8", "stream_360p.m3u8"]
    );
    let media: Vec<&str> = playlist
        .lines()
        .filter(|line| line.starts_with("#EXT-X-MEDIA:"))
        .collect();
    assert_eq!(media.len(), 1, "{playlist}");
    assert!(media[0].contains("TYPE=SUBTITLES"), "{playlist}");
    assert_eq!(
        playlist_attribute_uris(&playlist),
        [format!(
            "http://{}/{token}/manifest/subtitles_en.m3u8",
            emulator.addr()
        )]
    );
}

#[tokio::test]
async fn absolute_subtitles_uri_follows_the_host_header() {
    let emulator = emulator().await;
    let token = mint(valid_claims());
    let url = emulator.url_for(&token, "manifest/video.m3u8");
    let response = get_with(&url, &[("host", "media.example.test:8443")]).await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(
        playlist_attribute_uris(&response.text()),
        [format!(
            "http://media.example.test:8443/{token}/{SUBTITLES_PLAYLIST_PATH}"
        )]
    );
}

#[tokio::test]
async fn every_segment_of_each_rendition_fetches_with_its_size_and_type() {
    let emulator = emulator().await;
    for (video_uid, media) in VIDEOS {
        every_segment_fetches_with_its_size_and_type(&emulator, video_uid, media).await;
    }
}

async fn every_segment_fetches_with_its_size_and_type(
    emulator: &TestEmulator,
    video_uid: &str,
    media: &Media,
) {
    let (master_url, master) = master_playlist(emulator, video_uid).await;
    let renditions = playlist_uris(&master);
    assert_eq!(renditions.len(), media.renditions.len());
    let mut seen: Vec<Bytes> = Vec::new();
    for (rendition, uri) in media.renditions.iter().zip(&renditions) {
        let playlist_url = resolve_url(&master_url, uri);
        let response = get(&playlist_url).await;
        assert_eq!(response.status, StatusCode::OK, "{uri}");
        assert_eq!(
            response.header("content-type"),
            Some("application/vnd.apple.mpegurl")
        );
        let playlist = response.text();
        assert!(
            playlist.contains("#EXT-X-PLAYLIST-TYPE:VOD\n"),
            "{playlist}"
        );
        assert!(playlist.ends_with("#EXT-X-ENDLIST\n"), "{playlist}");
        let segments = playlist_uris(&playlist);
        assert_eq!(segments.len(), media.segments_per_rendition, "{playlist}");
        for (index, segment) in segments.iter().enumerate() {
            assert!(!segment.contains("://") && !segment.starts_with('/'));
            let response = get(&resolve_url(&playlist_url, segment)).await;
            assert_eq!(response.status, StatusCode::OK, "{segment}");
            assert_eq!(response.header("content-type"), Some("video/mp2t"));
            assert_eq!(
                response.header("cache-control"),
                Some("public, max-age=31536000, immutable")
            );
            let len = rendition.segment_len_bytes(index);
            assert_eq!(response.body.len(), len, "{segment}");
            assert_eq!(
                response.header("content-length"),
                Some(len.to_string().as_str())
            );
            assert!(
                response
                    .body
                    .chunks(TS_PACKET_LEN)
                    .all(|packet| packet.len() == TS_PACKET_LEN && packet[0] == 0x47),
                "{segment} should be whole MPEG-TS packets"
            );
            assert!(
                !seen.contains(&response.body),
                "{segment} repeats a segment"
            );
            seen.push(response.body);
        }
    }
}

#[tokio::test]
async fn absolute_subtitles_uri_serves_a_playlist_and_its_webvtt_segment() {
    let emulator = emulator().await;
    let (_, master) = master_playlist(&emulator, VIDEO_UID).await;
    let subtitles_url = playlist_attribute_uris(&master).remove(0);
    let response = get(&subtitles_url).await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(
        response.header("content-type"),
        Some("application/vnd.apple.mpegurl")
    );
    let playlist = response.text();
    assert!(
        playlist.contains("#EXT-X-PLAYLIST-TYPE:VOD\n"),
        "{playlist}"
    );
    let segments = playlist_uris(&playlist);
    assert_eq!(segments, ["subtitles_en_0.vtt"]);
    let response = get(&resolve_url(&subtitles_url, &segments[0])).await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.header("content-type"), Some("text/vtt"));
    assert!(response.text().starts_with("WEBVTT\n"));
}

#[tokio::test]
async fn dash_manifest_names_segments_and_subtitles_that_are_served() {
    let emulator = emulator().await;
    for (video_uid, media) in VIDEOS {
        dash_segments_and_subtitles_are_served(&emulator, video_uid, media).await;
    }
}

async fn dash_segments_and_subtitles_are_served(
    emulator: &TestEmulator,
    video_uid: &str,
    media: &Media,
) {
    let mpd_url = emulator.url_for(&mint(claims_for(video_uid)), "manifest/video.mpd");
    let manifest = get(&mpd_url).await.text();
    let template = manifest
        .split("media=\"")
        .nth(1)
        .and_then(|rest| rest.split_once('"'))
        .map(|(template, _)| template)
        .expect("the MPD has a SegmentTemplate media attribute");
    assert!(manifest.contains("startNumber=\"0\""), "{manifest}");
    let duration = format!("mediaPresentationDuration=\"PT{}S\"", media.duration_secs());
    assert!(manifest.contains(&duration), "{manifest}");
    for rendition in media.renditions {
        assert!(manifest.contains(&format!("<Representation id=\"{}\"", rendition.name)));
        for number in 0..media.segments_per_rendition {
            let file = template
                .replace("$RepresentationID$", rendition.name)
                .replace("$Number$", &number.to_string());
            let response = get(&resolve_url(&mpd_url, &file)).await;
            assert_eq!(response.status, StatusCode::OK, "{file}");
            assert_eq!(response.body.len(), rendition.segment_len_bytes(number));
        }
    }
    let base_url = manifest
        .split("<BaseURL>")
        .nth(1)
        .and_then(|rest| rest.split_once("</BaseURL>"))
        .map(|(base_url, _)| base_url)
        .expect("the subtitles have a BaseURL");
    let response = get(&resolve_url(&mpd_url, base_url)).await;
    assert_eq!(response.status, StatusCode::OK, "{base_url}");
    assert_eq!(response.header("content-type"), Some("text/vtt"));
}

#[tokio::test]
async fn download_is_the_clips_faststart_mp4() {
    let emulator = emulator().await;
    let response = get(&emulator.url_for(&downloadable_token(), "downloads/default.mp4")).await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.body.len(), CLIP.download_len_bytes());
    assert_eq!(&response.body[4..8], b"ftyp");
    let ftyp_len = u32::from_be_bytes(response.body[..4].try_into().unwrap()) as usize;
    assert_eq!(&response.body[ftyp_len + 4..ftyp_len + 8], b"moov");
}

#[tokio::test]
async fn large_video_download_is_a_large_mp4_with_validators() {
    let emulator = emulator().await;
    let url = emulator.url_for(&large_downloadable_token(), "downloads/default.mp4");
    let response = get(&url).await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.body.len(), SYNTHETIC_DOWNLOAD_LEN_BYTES);
    assert_eq!(&response.body[4..8], b"ftyp");
    assert_eq!(response.header("accept-ranges"), Some("bytes"));
    assert_eq!(
        response.header("last-modified"),
        Some("Mon, 02 Jun 2025 12:00:00 GMT")
    );
    let etag = response.header("etag").expect("an ETag");
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
    let again = get(&emulator.url_for(&large_downloadable_token(), "downloads/default.mp4")).await;
    assert_eq!(
        again.header("etag"),
        Some(etag),
        "the ETag is deterministic"
    );
}

// === HTTP semantics on every file ===

#[tokio::test]
async fn head_matches_get_headers_without_a_body_for_every_kind_of_file() {
    let emulator = emulator().await;
    let token = downloadable_token();
    for resource in [
        "iframe",
        "manifest/video.m3u8",
        "manifest/stream_360p.m3u8",
        "manifest/seg_360p_2.ts",
        "manifest/subtitles_en_0.vtt",
        "manifest/video.mpd",
        "thumbnails/thumbnail.jpg",
        "downloads/default.mp4",
    ] {
        let url = emulator.url_for(&token, resource);
        let full = get(&url).await;
        let head = send(Method::HEAD, &url, &[], None).await;
        assert_eq!((head.status, full.status), (StatusCode::OK, StatusCode::OK));
        assert!(head.body.is_empty(), "{resource}");
        let mut head_headers = head.headers.clone();
        let mut get_headers = full.headers.clone();
        head_headers.remove("date");
        get_headers.remove("date");
        assert_eq!(head_headers, get_headers, "{resource}");
        assert_eq!(
            full.header("content-length"),
            Some(full.body.len().to_string().as_str())
        );
        for name in ["etag", "last-modified", "accept-ranges", "cache-control"] {
            assert!(full.header(name).is_some(), "{resource} lacks {name}");
        }
    }
}

/// The large video's download's full body, and the answer to a GET of it with `headers`.
async fn download_with(headers: &[(&str, &str)]) -> (Bytes, TestResponse) {
    let emulator = emulator().await;
    let url = emulator.url_for(&large_downloadable_token(), "downloads/default.mp4");
    let full = get(&url).await;
    assert_eq!(full.status, StatusCode::OK);
    (full.body, get_with(&url, headers).await)
}

/// Assert a 206 carrying exactly `full[first..=last]`.
fn assert_partial(response: &TestResponse, full: &Bytes, first: usize, last: usize) {
    assert_eq!(response.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        response.header("content-range"),
        Some(format!("bytes {first}-{last}/{}", full.len()).as_str())
    );
    assert_eq!(
        response.header("content-length"),
        Some((last - first + 1).to_string().as_str())
    );
    assert_eq!(response.header("content-type"), Some("video/mp4"));
    assert!(response.body == full[first..=last], "wrong bytes");
}

#[tokio::test]
async fn closed_byte_range_answers_206_with_exact_bytes() {
    let (full, response) = download_with(&[("range", "bytes=1000-1999")]).await;
    assert_partial(&response, &full, 1000, 1999);
}

#[tokio::test]
async fn open_byte_range_answers_206_up_to_the_end() {
    let first = SYNTHETIC_DOWNLOAD_LEN_BYTES - 3000;
    let (full, response) = download_with(&[("range", &format!("bytes={first}-"))]).await;
    assert_partial(&response, &full, first, SYNTHETIC_DOWNLOAD_LEN_BYTES - 1);
}

#[tokio::test]
async fn suffix_byte_range_answers_206_with_the_last_bytes() {
    let (full, response) = download_with(&[("range", "bytes=-500")]).await;
    assert_partial(
        &response,
        &full,
        SYNTHETIC_DOWNLOAD_LEN_BYTES - 500,
        SYNTHETIC_DOWNLOAD_LEN_BYTES - 1,
    );
}

#[tokio::test]
async fn byte_range_on_a_segment_answers_206() {
    let emulator = emulator().await;
    let url = emulator.url_for(&mint(valid_claims()), "manifest/seg_360p_2.ts");
    let full = get(&url).await.body;
    let response = get_with(&url, &[("range", "bytes=188-375")]).await;
    assert_eq!(response.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(response.header("content-type"), Some("video/mp2t"));
    assert_eq!(response.body, full.slice(188..376));
    assert_eq!(response.body[0], 0x47);
}

#[tokio::test]
async fn range_past_the_end_answers_416_with_the_total() {
    let (_, response) =
        download_with(&[("range", &format!("bytes={SYNTHETIC_DOWNLOAD_LEN_BYTES}-"))]).await;
    assert_eq!(response.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(
        response.header("content-range"),
        Some(format!("bytes */{SYNTHETIC_DOWNLOAD_LEN_BYTES}").as_str())
    );
    assert_eq!(response.header("cache-control"), Some("no-store"));
}

#[tokio::test]
async fn multiple_ranges_answer_200_with_the_full_body() {
    let (full, response) = download_with(&[("range", "bytes=0-9, 100-199")]).await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.header("content-range"), None);
    assert!(response.body == full, "the whole file");
}

#[tokio::test]
async fn matching_if_none_match_answers_304_with_the_etag() {
    let emulator = emulator().await;
    let url = emulator.url_for(&mint(valid_claims()), "manifest/seg_360p_0.ts");
    let etag = get(&url).await.header("etag").expect("an ETag").to_owned();
    let weak = format!("W/{etag}");
    let listed = format!("\"something-else\", {etag}");
    for value in [etag.as_str(), "*", weak.as_str(), listed.as_str()] {
        for method in [Method::GET, Method::HEAD] {
            let response = send(method, &url, &[("if-none-match", value)], None).await;
            assert_eq!(response.status, StatusCode::NOT_MODIFIED, "{value}");
            assert_eq!(response.header("etag"), Some(etag.as_str()));
            assert!(response.body.is_empty());
        }
    }
    let response = get_with(&url, &[("if-none-match", "\"something-else\"")]).await;
    assert_eq!(response.status, StatusCode::OK);
}

#[tokio::test]
async fn if_modified_since_answers_304_unless_modified_since() {
    let emulator = emulator().await;
    let url = emulator.url_for(&mint(valid_claims()), "thumbnails/thumbnail.jpg");
    let full = get(&url).await;
    let last_modified = full.header("last-modified").expect("a Last-Modified");
    let response = get_with(&url, &[("if-modified-since", last_modified)]).await;
    assert_eq!(response.status, StatusCode::NOT_MODIFIED);
    assert_eq!(response.header("etag"), full.header("etag"));
    let earlier = "Sun, 01 Jun 2025 12:00:00 GMT";
    let response = get_with(&url, &[("if-modified-since", earlier)]).await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.body, full.body);
    // If-None-Match, when sent, decides alone.
    let response = get_with(
        &url,
        &[
            ("if-none-match", "\"something-else\""),
            ("if-modified-since", last_modified),
        ],
    )
    .await;
    assert_eq!(response.status, StatusCode::OK);
}

#[tokio::test]
async fn if_range_with_the_current_validator_honours_the_range() {
    let emulator = emulator().await;
    let url = emulator.url_for(&downloadable_token(), "downloads/default.mp4");
    let full = get(&url).await;
    for validator in [full.header("etag"), full.header("last-modified")] {
        let validator = validator.expect("a validator");
        let response = get_with(&url, &[("range", "bytes=0-99"), ("if-range", validator)]).await;
        assert_partial(&response, &full.body, 0, 99);
    }
}

#[tokio::test]
async fn if_range_mismatch_answers_200_with_the_full_body() {
    let emulator = emulator().await;
    let url = emulator.url_for(&downloadable_token(), "downloads/default.mp4");
    let full = get(&url).await;
    let weak = format!("W/{}", full.header("etag").expect("an ETag"));
    for validator in [
        "\"something-else\"",
        weak.as_str(),
        "Sun, 01 Jun 2025 12:00:00 GMT",
    ] {
        let response = get_with(&url, &[("range", "bytes=0-99"), ("if-range", validator)]).await;
        assert_eq!(response.status, StatusCode::OK, "{validator}");
        assert_eq!(response.header("content-range"), None);
        assert!(response.body == full.body, "the whole file");
    }
}

#[tokio::test]
async fn if_match_mismatch_answers_412() {
    let (_, response) = download_with(&[("if-match", "\"something-else\"")]).await;
    assert_eq!(response.status, StatusCode::PRECONDITION_FAILED);
}

#[tokio::test]
async fn range_and_conditionals_on_a_rejected_token_stay_401() {
    let emulator = emulator().await;
    let expired = mint(with_claim(
        with_claim(valid_claims(), "downloadable", json!(true)),
        "exp",
        json!(unix_now() - 120),
    ));
    let conditional: [&[(&str, &str)]; 3] = [
        &[("range", "bytes=0-99")],
        &[("if-none-match", "*")],
        &[("if-modified-since", "Fri, 01 Jan 2100 00:00:00 GMT")],
    ];
    for headers in conditional {
        let response = get_with(
            &emulator.url_for(&expired, "downloads/default.mp4"),
            headers,
        )
        .await;
        assert_refused(&response, StatusCode::UNAUTHORIZED, "token expired");
        let not_downloadable = mint(valid_claims());
        let response = get_with(
            &emulator.url_for(&not_downloadable, "downloads/default.mp4"),
            headers,
        )
        .await;
        assert_refused(
            &response,
            StatusCode::UNAUTHORIZED,
            "downloads are not allowed for this token",
        );
    }
}
