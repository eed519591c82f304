//! A local stand-in for a Cloudflare Stream origin (`customer-<code>.cloudflarestream.com`).
//!
//! It judges tokens the way Stream documents it and must not share validation code with the
//! gateway's signer: it is the independent check.

mod account;
pub mod api;
mod content;
mod http_file;
mod judge;
mod origins;
mod rules;

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::signature::{RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents};
use bytes::Bytes;
use http::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE, HOST, ORIGIN, REFERER};
use http::uri::Authority;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use jsonwebtoken::DecodingKey;

use self::account::{AccountState, Seed, VideoRecord};
pub use self::account::{AccountVideo, ApiAccess, EmulatorAccount, MAX_KEYS, demo_account_videos};
pub use self::content::{
    DOWNLOAD_LEN_BYTES, RENDITIONS, Rendition, SEGMENT_DURATION_SECS, SEGMENTS_PER_RENDITION,
    SUBTITLES_PLAYLIST_PATH, SUBTITLES_SEGMENT_PATH, TS_PACKET_LEN,
};
use self::content::{Library, Resource};
use self::http_file::Representation;
use self::judge::{FixedTrust, Permit, Rejection, TokenJudge};
use self::rules::Viewer;
use crate::Body;
use crate::http::server::Handler;

/// The public half of one signing key, as the emulator knows it.
#[derive(Clone, Debug)]
pub struct VerifyingKeySpec {
    /// Key id (`kid`), 32 hex characters.
    pub id: String,
    /// RSA modulus, big-endian, no leading zero byte.
    pub modulus: Vec<u8>,
    /// RSA public exponent, big-endian.
    pub exponent: Vec<u8>,
}

impl From<&crate::token::SigningKey> for VerifyingKeySpec {
    /// The public half of a signing key, as the emulator trusts it.
    fn from(key: &crate::token::SigningKey) -> Self {
        let (modulus, exponent) = key.public_components();
        Self {
            id: key.id().to_string(),
            modulus,
            exponent,
        }
    }
}

/// What the emulator needs to know to judge tokens and serve content.
#[derive(Clone, Debug)]
pub struct EmulatorSettings {
    /// Keys whose tokens are accepted.
    pub keys: Vec<VerifyingKeySpec>,
    /// Video uids (32 lowercase hex) that exist on this origin, named by their uid: ready, and
    /// requiring signed URLs.
    pub video_uids: Vec<String>,
    /// More videos, with their names and settings (after `video_uids`, in order).
    pub videos: Vec<AccountVideo>,
    /// The account id and API token the management API accepts; `None` disables it. Read
    /// when the account is made: an emulator built for an existing account uses the
    /// account's.
    pub api: Option<ApiAccess>,
    /// Request header that carries the viewer's country (Stream: `CF-IPCountry`).
    pub country_header: HeaderName,
    /// Request header that carries the viewer's address, when the emulator sits behind a
    /// proxy or a test wants to pose as another address; `None` uses the socket peer.
    pub client_ip_header: Option<HeaderName>,
    /// Clock skew tolerated on `exp` and `nbf`.
    pub leeway: Duration,
}

/// Why an [`Emulator`] could not be built from its settings.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    /// A key's modulus or exponent cannot verify RS256 signatures.
    #[error("signing key {id:?} cannot be used: {reason}")]
    UnusableKey { id: String, reason: &'static str },
    /// Two keys share one id, so a token's `kid` would be ambiguous.
    #[error("signing key id {0:?} is configured more than once")]
    DuplicateKeyId(String),
    /// A configured video uid is not 32 lower-case hex characters.
    #[error("video uid {0:?} is not 32 lower-case hex characters")]
    InvalidVideoUid(String),
    /// A video is listed twice.
    #[error("video uid {0:?} is listed more than once")]
    DuplicateVideoUid(String),
    /// Two videos were given the same creation time, which would make paging inexact.
    #[error("video {0:?} has the creation time of another video")]
    DuplicateCreated(String),
    #[error("video {uid:?}: an allowed origin {reason}")]
    InvalidAllowedOrigin { uid: String, reason: &'static str },
}

/// A local Stream origin: serves `GET`/`HEAD /<token>/<file>` for its videos when the token
/// passes the same checks Stream documents, and refuses everything else with Stream's status
/// codes and short reasons.
///
/// The files (player page, HLS and DASH manifests, media playlists, segments, subtitles,
/// thumbnail, download) are listed in [`RENDITIONS`] and the constants beside it. Every file
/// answers with a strong `ETag`, a fixed `Last-Modified`, conditional requests (304/412) and
/// single byte ranges (206/416), once the token was accepted.
pub struct Emulator {
    judge: TokenJudge,
    account: Arc<EmulatorAccount>,
    country_header: HeaderName,
    client_ip_header: Option<HeaderName>,
    library: &'static Library,
}

// === impl Emulator ===

impl Emulator {
    /// Build an emulator with an account of its own, seeded from `settings`. `Err` when a key
    /// cannot verify RS256 signatures (empty id, modulus outside 2048..=8192 bits, even or
    /// oversized exponent, leading zero bytes), when two keys share an id, when a video uid is
    /// not 32 lower-case hex characters or is listed twice, when two videos are given the same
    /// creation time, or when an allowed origin is not a host name.
    pub fn new(settings: EmulatorSettings) -> Result<Emulator, EmulatorError> {
        let account = Arc::new(EmulatorAccount::new(settings.api.clone()));
        Emulator::for_account(settings, account)
    }

    /// Build an emulator serving `account`, after seeding it from `settings` (see
    /// [`EmulatorAccount`]: what the account holds already keeps its settings; configured keys
    /// no longer listed are dropped). `settings.api` is not used: the account's is. `Err` as
    /// for [`Emulator::new`], and then the account is unchanged.
    pub fn for_account(
        settings: EmulatorSettings,
        account: Arc<EmulatorAccount>,
    ) -> Result<Emulator, EmulatorError> {
        let mut ids = HashSet::with_capacity(settings.keys.len());
        let mut keys = Vec::with_capacity(settings.keys.len());
        for spec in &settings.keys {
            let key = decoding_key(spec)?;
            if !ids.insert(spec.id.clone()) {
                return Err(EmulatorError::DuplicateKeyId(spec.id.clone()));
            }
            keys.push((spec.id.clone(), key));
        }
        let videos = account::check_videos(settings.video_uids, settings.videos)?;
        account.apply(Seed { keys, videos })?;
        Ok(Emulator {
            judge: TokenJudge::new(settings.leeway),
            account,
            country_header: settings.country_header,
            client_ip_header: settings.client_ip_header,
            library: Library::shared(),
        })
    }

    /// The account this emulator serves (shared with the emulators built after it).
    pub fn account(&self) -> &Arc<EmulatorAccount> {
        &self.account
    }

    /// How the judge rules on `token` for a viewer at `address` in `country` at
    /// `now_unix_secs`: the video and whether it may be downloaded, or the reason a 401 gives.
    /// For the fuzz targets and property tests only.
    #[cfg(any(test, feature = "fuzzing"))]
    #[doc(hidden)]
    pub fn judge_token(
        &self,
        token: &str,
        address: IpAddr,
        country: Option<&str>,
        now_unix_secs: i64,
    ) -> Result<(String, bool), String> {
        let state = self.account.read();
        self.judge
            .judge(
                token,
                &*state,
                &Viewer::new(address, country),
                now_unix_secs,
            )
            .map(|permit| (permit.video_uid, permit.downloadable))
            .map_err(|rejection| rejection.to_string())
    }

    /// Answer one request; refusals become responses here and nowhere else.
    fn answer(&self, req: &Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        match self.serve(req, peer) {
            Ok(response) => response,
            Err(refusal) => {
                // The reason never contains the token; the path (which does) is not logged.
                tracing::debug!(
                    %peer,
                    status = %refusal.status(),
                    reason = %crate::untrusted::Untrusted::new(&refusal.to_string()),
                    "emulator refused request"
                );
                refusal_response(&refusal)
            }
        }
    }

    fn serve(&self, req: &Request<Incoming>, peer: SocketAddr) -> Result<Response<Body>, Refusal> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return Err(Refusal::MethodNotAllowed);
        }
        let (segment, path) =
            content::split_path(req.uri().path()).ok_or(Refusal::NotFound("not found"))?;
        // Read once: the request sees the keys and settings of one moment.
        let state = self.account.read();
        let permit = self.authorize(&state, segment, req.headers(), peer)?;
        // Only now: a refused token learns nothing about which files exist.
        let resource = Resource::parse(path).ok_or(Refusal::NotFound("not found"))?;
        let video = state
            .videos
            .get(&permit.video_uid)
            .ok_or(Refusal::NotFound("video not found"))?;
        check_video_settings(video, resource, req.headers())?;
        drop(state);
        if resource == Resource::Download && !permit.downloadable {
            return Err(Refusal::DownloadsNotAllowed);
        }
        tracing::debug!(
            %peer,
            video_uid = %permit.video_uid,
            %resource,
            "emulator serving"
        );
        let file = self.file(resource, &permit.video_uid, segment, req);
        Ok(file.respond(req.method(), req.headers()))
    }

    /// Judge the path segment: a bare uid plays only when its video does not require signed
    /// URLs (and never downloads); a token is judged for the viewer who sent it.
    fn authorize(
        &self,
        state: &AccountState,
        segment: &str,
        headers: &HeaderMap,
        peer: SocketAddr,
    ) -> Result<Permit, Refusal> {
        // Tokens always contain dots; uids never do.
        if !segment.contains('.') {
            let video = state
                .videos
                .get(segment)
                .ok_or(Refusal::NotFound("video not found"))?;
            if video.require_signed_urls {
                return Err(Refusal::RequiresSignedUrl);
            }
            return Ok(Permit {
                video_uid: video.uid.clone(),
                downloadable: false,
            });
        }
        let viewer = self.viewer(headers, peer);
        Ok(self.judge.judge(segment, state, &viewer, unix_now_secs())?)
    }

    /// The viewer's address (the client-ip header when configured, present and parseable;
    /// else the socket peer) and country (the country header, if sent).
    fn viewer(&self, headers: &HeaderMap, peer: SocketAddr) -> Viewer {
        let header_address = self
            .client_ip_header
            .as_ref()
            .and_then(|name| headers.get(name))
            .and_then(|value| value.to_str().ok())
            // Tolerate an `X-Forwarded-For`-style list: the first entry is the client.
            .and_then(|value| value.split(',').next())
            .and_then(|value| value.trim().parse::<IpAddr>().ok());
        let country = headers
            .get(&self.country_header)
            .and_then(|value| value.to_str().ok())
            .map(str::trim)
            .filter(|country| !country.is_empty());
        Viewer::new(header_address.unwrap_or(peer.ip()), country)
    }

    /// The file to serve for `resource` of `video_uid`, requested through `token`.
    fn file(
        &self,
        resource: Resource,
        video_uid: &str,
        token: &str,
        req: &Request<Incoming>,
    ) -> Cow<'static, Representation> {
        let body = match resource {
            Resource::Player => content::player_page(video_uid),
            Resource::HlsManifest => content::hls_master_playlist(&subtitles_uri(req, token)),
            _ => {
                let file = self.library.file(resource);
                return Cow::Borrowed(file.expect("the library holds every other file"));
            }
        };
        // Small, so hashing it per request for its ETag is cheap.
        Cow::Owned(content::representation(resource, Bytes::from(body)))
    }
}

/// Where the master playlist points for subtitles: an absolute URL on the host and scheme
/// the request was sent to (`http` unless the request line says otherwise: the emulator
/// only listens on plain HTTP), as origins that write absolute URLs do. Relative when the
/// request names no usable host (HTTP/1.0 without `Host`).
fn subtitles_uri(req: &Request<Incoming>, token: &str) -> String {
    match origin_of(req) {
        Some(origin) => format!("{origin}/{token}/{SUBTITLES_PLAYLIST_PATH}"),
        None => content::SUBTITLES_PLAYLIST_FILE.to_owned(),
    }
}

/// `scheme://authority` the request was sent to (`http` unless the request line says
/// otherwise), or `None` when it names no usable host (HTTP/1.0 without `Host`).
fn origin_of<B>(req: &Request<B>) -> Option<String> {
    // An absolute-form target or HTTP/2 `:authority` wins over `Host` (RFC 9112 §3.2.2).
    let authority = req.uri().authority().cloned().or_else(|| {
        let host = req.headers().get(HOST)?.to_str().ok()?;
        host.parse::<Authority>().ok()
    });
    let authority = authority.filter(|authority| !authority.as_str().contains('@'))?;
    let scheme = req.uri().scheme_str().unwrap_or("http");
    Some(format!("{scheme}://{authority}"))
}

/// What a video's own settings say about serving `resource` to this request: not before it
/// is ready; and with `allowedOrigins` set, not to a page of another site (the `Origin`
/// header, else the `Referer`). Without either header only the player page is refused: it is
/// what sites embed, while a player's own fetches may not say where they come from.
fn check_video_settings(
    video: &VideoRecord,
    resource: Resource,
    headers: &HeaderMap,
) -> Result<(), Refusal> {
    if !video.ready {
        return Err(Refusal::NotReady);
    }
    if video.allowed_origins.is_empty() {
        return Ok(());
    }
    let page = headers
        .get(ORIGIN)
        .or_else(|| headers.get(REFERER))
        .map(|value| value.to_str().unwrap_or(""));
    match page {
        Some(page) if origins::allows(&video.allowed_origins, page) => Ok(()),
        Some(_) => Err(Refusal::OriginNotAllowed),
        None if resource == Resource::Player => Err(Refusal::OriginNotAllowed),
        None => Ok(()),
    }
}

impl Handler for Emulator {
    async fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        if is_api_path(req.uri().path()) {
            let origin = origin_of(&req);
            return api::answer(&self.account, origin, req).await;
        }
        // Nothing else awaits: the request body is never read.
        self.answer(&req, peer)
    }
}

/// Whether `path` is the management API's (`/client/v4` and below).
fn is_api_path(path: &str) -> bool {
    path.strip_prefix(api::API_PREFIX)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

impl fmt::Debug for Emulator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Emulator")
            .field("account", &self.account)
            .field("country_header", &self.country_header)
            .field("client_ip_header", &self.client_ip_header)
            .finish_non_exhaustive()
    }
}

/// Check that `spec` can verify RS256 signatures, and build its verifying key.
fn decoding_key(spec: &VerifyingKeySpec) -> Result<DecodingKey, EmulatorError> {
    let unusable = |reason| EmulatorError::UnusableKey {
        id: spec.id.clone(),
        reason,
    };
    let (modulus, exponent) = (spec.modulus.as_slice(), spec.exponent.as_slice());
    if spec.id.is_empty() {
        return Err(unusable("the key id is empty"));
    }
    let (Some(&modulus_top), Some(&modulus_bottom)) = (modulus.first(), modulus.last()) else {
        return Err(unusable("the modulus is empty"));
    };
    if modulus_top == 0 {
        return Err(unusable("the modulus has a leading zero byte"));
    }
    let modulus_bits = modulus.len() * 8 - modulus_top.leading_zeros() as usize;
    if !(2048..=8192).contains(&modulus_bits) {
        return Err(unusable("the modulus must be 2048 to 8192 bits"));
    }
    if modulus_bottom & 1 == 0 {
        return Err(unusable("the modulus must be odd"));
    }
    let (Some(&exponent_top), Some(&exponent_bottom)) = (exponent.first(), exponent.last()) else {
        return Err(unusable("the exponent is empty"));
    };
    if exponent_top == 0 {
        return Err(unusable("the exponent has a leading zero byte"));
    }
    // AWS-LC refuses even exponents, 1, and exponents wider than 33 bits; 32 keeps it simple.
    if exponent_bottom & 1 == 0 || exponent.len() > 4 || exponent == [1] {
        return Err(unusable(
            "the exponent must be odd, at least 3 and at most 32 bits",
        ));
    }
    RsaPublicKeyComponents {
        n: modulus,
        e: exponent,
    }
    .to_parsed_public_key(&RSA_PKCS1_2048_8192_SHA256)
    .map_err(|_| unusable("it is not a valid RSA public key"))?;
    Ok(DecodingKey::from_rsa_raw_components(modulus, exponent))
}

fn unix_now_secs() -> i64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX)
}

/// Everything the emulator refuses, with Stream's status for each.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("method not allowed")]
    MethodNotAllowed,
    /// Unknown resource or unknown video (the text says which).
    #[error("{0}")]
    NotFound(&'static str),
    #[error("this video requires a signed URL")]
    RequiresSignedUrl,
    #[error(transparent)]
    Token(#[from] Rejection),
    #[error("downloads are not allowed for this token")]
    DownloadsNotAllowed,
    #[error("this video is not ready to stream yet")]
    NotReady,
    #[error("this site is not in the video's allowed origins")]
    OriginNotAllowed,
}

impl Refusal {
    fn status(&self) -> StatusCode {
        match self {
            Refusal::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Refusal::NotFound(_) | Refusal::NotReady => StatusCode::NOT_FOUND,
            Refusal::OriginNotAllowed => StatusCode::FORBIDDEN,
            Refusal::RequiresSignedUrl | Refusal::Token(_) | Refusal::DownloadsNotAllowed => {
                StatusCode::UNAUTHORIZED
            }
        }
    }
}

fn refusal_response(refusal: &Refusal) -> Response<Body> {
    let mut response = Response::new(Body::new(Bytes::from(refusal.to_string())));
    *response.status_mut() = refusal.status();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if matches!(refusal, Refusal::MethodNotAllowed) {
        headers.insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
    }
    response
}

/// Check `token`'s RS256 signature the way the emulator does, against `keys`: `Ok(kid)` for
/// a good signature, `Err(reason)` otherwise (unknown key, bad signature, malformed).
pub fn check_signature(token: &str, keys: &[VerifyingKeySpec]) -> Result<String, String> {
    let mut trust = FixedTrust::default();
    for spec in keys {
        let key = decoding_key(spec).map_err(|e| e.to_string())?;
        trust.keys.insert(spec.id.clone(), key);
    }
    judge::verify_signature(token, |kid| trust.keys.get(kid))
        .map(|(kid, _)| kid)
        .map_err(|rejection| rejection.to_string())
}

/// How Stream would treat a viewer at `address` in `country` (as its GeoIP would say) under
/// a token's `accessRules` claim: `Ok(None)` allowed, `Ok(Some(type))` blocked by a rule of
/// that type, `Err` the malformed fields.
pub fn judge_access_rules(
    access_rules: &serde_json::Value,
    address: std::net::IpAddr,
    country: Option<&str>,
) -> Result<Option<&'static str>, Vec<String>> {
    let rules = rules::parse_access_rules(access_rules)?;
    Ok(
        match rules::evaluate(&rules, &rules::Viewer::new(address, country)) {
            rules::RuleOutcome::Allowed => None,
            rules::RuleOutcome::Blocked(kind) => Some(kind),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "ce800be43a9772f4bb02f35b860fb516";

    fn settings(keys: Vec<VerifyingKeySpec>) -> EmulatorSettings {
        EmulatorSettings {
            keys,
            video_uids: vec![UID.to_owned()],
            videos: Vec::new(),
            api: None,
            country_header: HeaderName::from_static("cf-ipcountry"),
            client_ip_header: None,
            leeway: Duration::from_secs(30),
        }
    }

    fn fixture_key() -> VerifyingKeySpec {
        use aws_lc_rs::signature::{KeyPair, RsaKeyPair};
        use rustls_pki_types::PrivatePkcs1KeyDer;
        use rustls_pki_types::pem::PemObject;
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/test-only-signing-key.pem"
        );
        let der = PrivatePkcs1KeyDer::from_pem_file(path).expect("fixture key should load");
        let pair = RsaKeyPair::from_der(der.secret_pkcs1_der()).expect("fixture key should parse");
        let components = RsaPublicKeyComponents::<Vec<u8>>::from(pair.public_key());
        VerifyingKeySpec {
            id: "0a1b2c3d4e5f60718293a4b5c6d7e8f9".to_owned(),
            modulus: components.n,
            exponent: components.e,
        }
    }

    fn build_error(keys: Vec<VerifyingKeySpec>) -> String {
        Emulator::new(settings(keys))
            .expect_err("settings should be refused")
            .to_string()
    }

    #[test]
    fn fixture_key_is_accepted() {
        assert!(Emulator::new(settings(vec![fixture_key()])).is_ok());
    }

    #[test]
    fn short_modulus_is_refused() {
        let mut key = fixture_key();
        key.modulus.truncate(128);
        key.modulus[127] |= 1;
        assert!(build_error(vec![key]).contains("2048 to 8192 bits"));
    }

    #[test]
    fn modulus_with_leading_zero_is_refused() {
        let mut key = fixture_key();
        key.modulus.insert(0, 0);
        assert!(build_error(vec![key]).contains("leading zero"));
    }

    #[test]
    fn even_or_trivial_exponent_is_refused() {
        for exponent in [vec![], vec![1], vec![1, 0], vec![1, 0, 0, 0, 1]] {
            let mut key = fixture_key();
            key.exponent = exponent;
            assert!(build_error(vec![key]).contains("exponent"));
        }
    }

    #[test]
    fn duplicate_key_id_is_refused() {
        assert!(build_error(vec![fixture_key(), fixture_key()]).contains("more than once"));
    }

    #[test]
    fn malformed_video_uid_is_refused() {
        let mut settings = settings(vec![fixture_key()]);
        settings.video_uids.push("Not-A-Uid".to_owned());
        let error = Emulator::new(settings).expect_err("uid should be refused");
        assert!(matches!(error, EmulatorError::InvalidVideoUid(uid) if uid == "Not-A-Uid"));
    }

    #[test]
    fn refusals_map_to_stream_statuses() {
        assert_eq!(
            Refusal::MethodNotAllowed.status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(
            Refusal::NotFound("video not found").status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            Refusal::RequiresSignedUrl.status(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            Refusal::DownloadsNotAllowed.status(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            Refusal::from(Rejection::Expired).status(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(Refusal::NotReady.status(), StatusCode::NOT_FOUND);
        assert_eq!(Refusal::OriginNotAllowed.status(), StatusCode::FORBIDDEN);
    }

    #[test]
    fn viewer_address_comes_from_the_client_ip_header_when_parseable() {
        let mut settings = settings(vec![fixture_key()]);
        settings.client_ip_header = Some(HeaderName::from_static("x-test-client-ip"));
        let emulator = Emulator::new(settings).unwrap();
        let peer: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let mut headers = HeaderMap::new();
        assert_eq!(emulator.viewer(&headers, peer).address(), peer.ip());
        headers.insert(
            "x-test-client-ip",
            HeaderValue::from_static("2001:db8::7, 10.0.0.1"),
        );
        assert_eq!(
            emulator.viewer(&headers, peer).address(),
            "2001:db8::7".parse::<IpAddr>().unwrap()
        );
        headers.insert("x-test-client-ip", HeaderValue::from_static("nonsense"));
        assert_eq!(emulator.viewer(&headers, peer).address(), peer.ip());
    }
}
