//! Shared helpers for integration tests: servers on ephemeral loopback ports, the committed
//! test-only keys, token minting, and a small HTTP client with a timeout.
//!
//! Each test binary uses a different subset, hence the `dead_code` allowances.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::signature::{KeyPair, RsaKeyPair, RsaPublicKeyComponents};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rustls_pki_types::PrivatePkcs1KeyDer;
use rustls_pki_types::pem::PemObject;
use serde_json::{Value, json};
use streamgate::emulator::{Emulator, EmulatorSettings, VerifyingKeySpec};
use streamgate::http::server::{Handler, serve};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Key id of `tests/fixtures/test-only-signing-key.pem`.
pub const FIXTURE_KID: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f9";
/// Key id of `tests/fixtures/test-only-second-key.pem`.
pub const SECOND_KID: &str = "ffeeddccbbaa99887766554433221100";
/// A video uid the default emulator settings know.
pub const VIDEO_UID: &str = "ce800be43a9772f4bb02f35b860fb516";
/// A second known video uid.
pub const OTHER_VIDEO_UID: &str = "5d5bc37ffcf54c9b82e996823bffbb81";
/// A well-formed uid that no default settings know.
pub const UNKNOWN_VIDEO_UID: &str = "00000000000000000000000000000000";
/// The country header the default emulator settings read (Stream's).
pub const COUNTRY_HEADER: &str = "cf-ipcountry";
/// The client-address header [`emulator_settings_with_client_ip_header`] trusts.
pub const CLIENT_IP_HEADER: &str = "x-test-client-ip";
/// No request made through [`send`] may take longer than this.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

// === fixtures ===

/// Absolute path of a file under `tests/fixtures/`.
pub fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// PKCS#1 DER of a PEM fixture key (`-----BEGIN RSA PRIVATE KEY-----`).
pub fn key_der_from_pem_fixture(name: &str) -> Vec<u8> {
    PrivatePkcs1KeyDer::from_pem_file(fixture_path(name))
        .unwrap_or_else(|error| panic!("fixture key {name} should load: {error}"))
        .secret_pkcs1_der()
        .to_vec()
}

/// PKCS#1 DER of the main test-only signing key (kid [`FIXTURE_KID`]).
pub fn fixture_key_der() -> Vec<u8> {
    key_der_from_pem_fixture("test-only-signing-key.pem")
}

/// PKCS#1 DER of the second test-only signing key (kid [`SECOND_KID`]).
pub fn second_key_der() -> Vec<u8> {
    key_der_from_pem_fixture("test-only-second-key.pem")
}

/// The public half of a PKCS#1 DER private key, as the emulator wants it.
pub fn verifying_key_from_der(kid: &str, pkcs1_der: &[u8]) -> VerifyingKeySpec {
    let pair = RsaKeyPair::from_der(pkcs1_der).expect("fixture key should parse");
    let components = RsaPublicKeyComponents::<Vec<u8>>::from(pair.public_key());
    VerifyingKeySpec {
        id: kid.to_owned(),
        modulus: components.n,
        exponent: components.e,
    }
}

/// The verifying key for the main fixture key.
pub fn fixture_verifying_key() -> VerifyingKeySpec {
    verifying_key_from_der(FIXTURE_KID, &fixture_key_der())
}

/// The verifying key for the second fixture key.
pub fn second_verifying_key() -> VerifyingKeySpec {
    verifying_key_from_der(SECOND_KID, &second_key_der())
}

/// The public key of a PKCS#1 DER private key, itself as PKCS#1 DER (`RSAPublicKey`).
pub fn public_key_der(pkcs1_der: &[u8]) -> Vec<u8> {
    let pair = RsaKeyPair::from_der(pkcs1_der).expect("fixture key should parse");
    pair.public_key().as_ref().to_vec()
}

// === tokens ===

/// Current unix time in seconds.
pub fn unix_now() -> i64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock should be after 1970");
    i64::try_from(since_epoch.as_secs()).expect("time should fit in i64")
}

/// Claims for a token on `video_uid` signed by the main fixture key, valid for an hour.
pub fn claims_for(video_uid: &str) -> Value {
    json!({
        "sub": video_uid,
        "kid": FIXTURE_KID,
        "exp": unix_now() + 3600,
    })
}

/// Claims for [`VIDEO_UID`], valid for an hour.
pub fn valid_claims() -> Value {
    claims_for(VIDEO_UID)
}

/// `claims` with `field` set to `value`.
pub fn with_claim(mut claims: Value, field: &str, value: Value) -> Value {
    claims[field] = value;
    claims
}

/// An RS256 token for `claims`, signed by the main fixture key with header kid [`FIXTURE_KID`].
pub fn mint(claims: Value) -> String {
    mint_with_key(FIXTURE_KID, &fixture_key_der(), &claims)
}

/// An RS256 token for `claims`, signed by `pkcs1_der` with header kid `kid`.
pub fn mint_with_key(kid: &str, pkcs1_der: &[u8], claims: &Value) -> String {
    let header = Header {
        alg: Algorithm::RS256,
        kid: Some(kid.to_owned()),
        typ: None,
        ..Default::default()
    };
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_rsa_der(pkcs1_der))
        .expect("signing with a fixture key should work")
}

/// A token signed with any jsonwebtoken header and key (e.g. HS256 with a public key as the
/// secret), for tests of what must be refused.
pub fn mint_raw(header: &Header, claims: &Value, key: &EncodingKey) -> String {
    jsonwebtoken::encode(header, claims, key).expect("encoding should work")
}

/// base64url without padding, as JWT parts are encoded.
pub fn b64url(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A token assembled by hand from JSON parts and raw signature bytes (no signing at all).
pub fn assemble_token(header: &Value, claims: &Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        b64url(header.to_string()),
        b64url(claims.to_string()),
        b64url(signature)
    )
}

/// The decoded claims of a token (no verification), for tests that inspect what was minted.
pub fn decode_claims_unverified(token: &str) -> Value {
    let claims_b64 = token.split('.').nth(1).expect("token should have claims");
    let bytes = URL_SAFE_NO_PAD
        .decode(claims_b64)
        .expect("claims should be base64url");
    serde_json::from_slice(&bytes).expect("claims should be JSON")
}

// === servers ===

/// A [`Handler`] served on an ephemeral loopback port until dropped (or [`shutdown`]).
///
/// [`shutdown`]: TestServer::shutdown
pub struct TestServer {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestServer {
    /// Serve `handler` on `127.0.0.1:0`.
    pub async fn start<H: Handler>(handler: Arc<H>) -> TestServer {
        TestServer::start_on("127.0.0.1:0".parse().expect("literal address"), handler).await
    }

    /// Serve `handler` on `bind` (use port 0, e.g. `[::1]:0`).
    pub async fn start_on<H: Handler>(bind: SocketAddr, handler: Arc<H>) -> TestServer {
        let listener = TcpListener::bind(bind)
            .await
            .unwrap_or_else(|error| panic!("binding {bind} should work: {error}"));
        let addr = listener
            .local_addr()
            .expect("bound listener has an address");
        let (shutdown, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, handler, async {
            // A dropped sender also means stop.
            let _ = stopped.await;
        }));
        TestServer {
            addr,
            shutdown: Some(shutdown),
            task: Some(task),
        }
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` (or `http://[::1]:PORT`), no trailing slash.
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// [`origin`](TestServer::origin) followed by `path_and_query` (which starts with `/`).
    pub fn url(&self, path_and_query: &str) -> String {
        format!("{}{path_and_query}", self.origin())
    }

    /// Stop accepting and wait (bounded) for the server task to finish.
    pub async fn shutdown(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(15), task)
                .await
                .expect("server should stop within its grace period")
                .expect("server task should not panic");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

/// An [`Emulator`] on an ephemeral loopback port; derefs to its [`TestServer`].
pub struct TestEmulator {
    server: TestServer,
}

impl TestEmulator {
    /// Build an emulator from `settings` and serve it on `127.0.0.1:0`.
    pub async fn start(settings: EmulatorSettings) -> TestEmulator {
        TestEmulator::start_on("127.0.0.1:0".parse().expect("literal address"), settings).await
    }

    /// Build an emulator from `settings` and serve it on `bind`.
    pub async fn start_on(bind: SocketAddr, settings: EmulatorSettings) -> TestEmulator {
        let emulator = Emulator::new(settings).expect("emulator settings should be valid");
        TestEmulator {
            server: TestServer::start_on(bind, Arc::new(emulator)).await,
        }
    }

    /// `<origin>/<token_or_uid>/<resource>`, e.g. `url_for(&token, "iframe")`.
    pub fn url_for(&self, token_or_uid: &str, resource: &str) -> String {
        self.server.url(&format!("/{token_or_uid}/{resource}"))
    }

    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}

impl std::ops::Deref for TestEmulator {
    type Target = TestServer;

    fn deref(&self) -> &TestServer {
        &self.server
    }
}

/// Emulator settings: both fixture keys, [`VIDEO_UID`] and [`OTHER_VIDEO_UID`], country from
/// [`COUNTRY_HEADER`], viewer address from the socket, 30 s leeway.
pub fn emulator_settings() -> EmulatorSettings {
    EmulatorSettings {
        keys: vec![fixture_verifying_key(), second_verifying_key()],
        video_uids: vec![VIDEO_UID.to_owned(), OTHER_VIDEO_UID.to_owned()],
        videos: Vec::new(),
        api: None,
        country_header: HeaderName::from_static(COUNTRY_HEADER),
        client_ip_header: None,
        leeway: Duration::from_secs(30),
    }
}

/// [`emulator_settings`], but the viewer address comes from [`CLIENT_IP_HEADER`] when sent.
pub fn emulator_settings_with_client_ip_header() -> EmulatorSettings {
    EmulatorSettings {
        client_ip_header: Some(HeaderName::from_static(CLIENT_IP_HEADER)),
        ..emulator_settings()
    }
}

// === client ===

/// A response read in full.
#[derive(Debug)]
pub struct TestResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl TestResponse {
    /// The body as UTF-8 text (panics otherwise).
    pub fn text(&self) -> String {
        String::from_utf8(self.body.to_vec()).expect("body should be UTF-8")
    }

    /// A header's value as text, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|value| value.to_str().expect("header should be text"))
    }
}

/// Send one HTTP/1.1 request over plain TCP and read the whole response. Panics if anything
/// fails or the exchange takes longer than [`REQUEST_TIMEOUT`]. Redirects are not followed.
pub async fn send(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> TestResponse {
    // A client per request: tests run on separate runtimes, and a pooled connection must not
    // outlive the runtime that opened it.
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build_http();
    let mut request = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .expect("request should build");
    let exchange = async {
        let response = client
            .request(request)
            .await
            .expect("request should succeed");
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .expect("response body should be readable")
            .to_bytes();
        TestResponse {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| panic!("request to {url} timed out after {REQUEST_TIMEOUT:?}"))
}

/// `GET url` with no extra headers.
pub async fn get(url: &str) -> TestResponse {
    send(Method::GET, url, &[], None).await
}

/// `GET url` with `headers`.
pub async fn get_with(url: &str, headers: &[(&str, &str)]) -> TestResponse {
    send(Method::GET, url, headers, None).await
}

// === gateway ===

/// The API key the default test gateway config knows, as a client sends it.
pub const TEST_API_KEY: &str = "test-only-api-key";

/// The default gateway configuration for tests: in-process emulator on a free port, the
/// fixture key, a public video (`intro`) and a members-only one (`keynote`).
pub fn gateway_config() -> String {
    format!(
        "\
listen: 127.0.0.1:0
stream:
  emulator:
    listen: 127.0.0.1:0
signing_keys:
  - id: {FIXTURE_KID}
    file: {key}
token:
  ttl: 1h
  min_remaining: 10m
videos:
  intro:
    uid: {VIDEO_UID}
    tags: [public]
  keynote:
    uid: {OTHER_VIDEO_UID}
    tags: [members]
api_keys:
  - name: ci
    sha256: {digest}
rules:
  - name: ci-intro
    videos: [intro]
    subjects: [api_key:ci]
    ttl: 30m
  - name: public
    videos: [\"tag:public\"]
    subjects: [anyone]
  - name: members
    videos: [\"tag:members\"]
    subjects: [authenticated]
    downloadable: true
",
        key = fixture_path("test-only-signing-key.pem").display(),
        digest = streamgate::identity::hash_api_key(TEST_API_KEY),
    )
}

/// A gateway (and its emulator) running in this test's runtime on loopback ports.
pub struct TestGateway {
    app: Option<streamgate::app::App>,
    origin: String,
}

impl TestGateway {
    /// Start with [`gateway_config`].
    pub async fn start() -> TestGateway {
        Self::start_with(&gateway_config()).await
    }

    /// Start with the given YAML (relative key paths resolve against `tests/fixtures`).
    pub async fn start_with(yaml: &str) -> TestGateway {
        use streamgate::app::keys::{MissingKeys, load_signing_keys};
        use streamgate::config::Settings;
        let settings = Settings::from_yaml(yaml, "test.yaml", &fixture_path(""))
            .unwrap_or_else(|errors| panic!("test config should be valid:\n{errors}"));
        let (keys, _) = load_signing_keys(&settings, MissingKeys::Fail)
            .unwrap_or_else(|errors| panic!("test keys should load:\n{errors}"));
        let app = streamgate::app::App::start(settings, keys, None)
            .await
            .expect("gateway should start");
        let origin = format!("http://{}", app.gateway_addr());
        TestGateway {
            app: Some(app),
            origin,
        }
    }

    pub fn app(&self) -> &streamgate::app::App {
        self.app.as_ref().expect("running")
    }

    /// `http://127.0.0.1:PORT` of the gateway.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// `http://127.0.0.1:PORT` of the in-process emulator.
    pub fn emulator_origin(&self) -> String {
        format!(
            "http://{}",
            self.app().emulator_addr().expect("emulator runs")
        )
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("{}{path_and_query}", self.origin)
    }

    /// Signatures made so far.
    pub fn signatures(&self) -> u64 {
        self.app().snapshot().cache.signer().signatures()
    }

    pub async fn shutdown(mut self) {
        if let Some(app) = self.app.take() {
            app.shutdown().await;
        }
    }
}

/// `POST /api/getSignedURL` with a JSON `body` and extra `headers`.
pub async fn post_get_signed_url(
    gateway: &TestGateway,
    body: &str,
    headers: &[(&str, &str)],
) -> TestResponse {
    let mut all = vec![("content-type", "application/json")];
    all.extend_from_slice(headers);
    send(
        Method::POST,
        &gateway.url("/api/getSignedURL"),
        &all,
        Some(body.as_bytes().to_vec()),
    )
    .await
}

/// The token inside a redirect `Location` of the form `<origin>/<token>/<resource>`.
pub fn token_in_location(location: &str, origin: &str) -> String {
    location
        .strip_prefix(origin)
        .and_then(|rest| rest.strip_prefix('/'))
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("{location} should start with {origin}/"))
        .to_string()
}

/// Send `req` and assert a JSON error body with `status` whose reason contains `reason`.
pub fn assert_error(response: &TestResponse, status: u16, reason: &str) {
    assert_eq!(
        response.status.as_u16(),
        status,
        "body: {}",
        response.text()
    );
    let body: Value = serde_json::from_slice(&response.body)
        .unwrap_or_else(|_| panic!("error body should be JSON: {}", response.text()));
    let message = body["error"].as_str().unwrap_or_default();
    assert!(
        message.contains(reason),
        "expected reason containing {reason:?}, got {message:?}"
    );
}

// === identity and policy helpers (tests/policy.rs, tests/identity.rs) ===

/// An argon2id PHC string for `password`, with parameters cheap enough for tests.
pub fn argon2_phc(password: &str) -> String {
    use argon2::password_hash::{PasswordHasher, SaltString};
    use aws_lc_rs::rand::SecureRandom as _;
    // rand_core's OsRng is not compiled in (no `getrandom` feature): salt from aws-lc.
    let mut salt = [0u8; 16];
    aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut salt)
        .expect("the system RNG works");
    let salt = SaltString::encode_b64(&salt).expect("a 16-byte salt encodes");
    let params = argon2::Params::new(8 * 1024, 1, 1, None).expect("argon2 params are valid");
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password(password.as_bytes(), &salt)
        .expect("hashing a test password should work")
        .to_string()
}

/// `Authorization: Basic ...` value for `user` and `password`.
pub fn basic_auth(user: &str, password: &str) -> String {
    use base64::engine::general_purpose::STANDARD;
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
}

/// An HS256 token for `claims` signed with `secret` (no `kid`).
pub fn mint_hs256(secret: &[u8], claims: &Value) -> String {
    let header = Header {
        alg: Algorithm::HS256,
        ..Default::default()
    };
    mint_raw(&header, claims, &EncodingKey::from_secret(secret))
}

/// The `Location` of a 302, panicking with `context` and the body otherwise.
pub fn redirect_location(response: &TestResponse, context: &str) -> String {
    assert_eq!(
        response.status.as_u16(),
        302,
        "{context}: expected a redirect, body: {}",
        response.text()
    );
    response
        .header("location")
        .unwrap_or_else(|| panic!("{context}: a 302 has a Location"))
        .to_string()
}

/// A temporary file holding `contents` (deleted when dropped).
pub fn temp_file_with(contents: &[u8]) -> tempfile::NamedTempFile {
    use std::io::Write as _;
    let mut file = tempfile::NamedTempFile::new().expect("a temporary file");
    file.write_all(contents).expect("writing a temporary file");
    file.flush().expect("flushing a temporary file");
    file
}

// === TLS (tests/tls.rs) ===

/// A test-only CA that issues server certificates for `localhost` and 127.0.0.1.
pub struct TestCa {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

/// A server certificate and its key, as the gateway reads them.
pub struct IssuedCert {
    /// The leaf then the CA, PEM.
    pub chain_pem: String,
    /// PKCS#8 PEM.
    pub key_pem: String,
    /// The leaf, DER, to compare with what a client was shown.
    pub leaf: rustls_pki_types::CertificateDer<'static>,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("streamgate test-only CA {name}"),
        );
        let key = rcgen::KeyPair::generate().expect("a CA key");
        TestCa {
            issuer: rcgen::CertifiedIssuer::self_signed(params, key).expect("a CA certificate"),
        }
    }

    /// A fresh key and a certificate for `localhost` and 127.0.0.1 signed by this CA.
    pub fn issue(&self) -> IssuedCert {
        let key = rcgen::KeyPair::generate().expect("a server key");
        let params =
            rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .expect("server params");
        let leaf = params
            .signed_by(&key, &self.issuer)
            .expect("the CA signs the server certificate");
        IssuedCert {
            chain_pem: format!("{}{}", leaf.pem(), self.issuer.pem()),
            key_pem: key.serialize_pem(),
            leaf: leaf.der().clone(),
        }
    }

    /// A client trusting only this CA, offering `alpn` (may be empty) and TLS 1.3 and 1.2.
    pub fn client_config(&self, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        self.client_config_for(alpn, rustls::DEFAULT_VERSIONS)
    }

    /// [`client_config`](TestCa::client_config) limited to `versions`.
    pub fn client_config_for(
        &self,
        alpn: &[&[u8]],
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(self.issuer.der().clone())
            .expect("the CA is a valid root");
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .expect("supported versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}

/// Replace `path` the way certificate tooling does: write a sibling, then rename over it.
pub fn replace_file(path: &std::path::Path, contents: &str) {
    let staging = path.with_extension("new");
    std::fs::write(&staging, contents).expect("writing the replacement");
    std::fs::rename(&staging, path).expect("renaming the replacement into place");
}

/// The HTTP side of one TLS connection, HTTP/2 or HTTP/1.1 as ALPN chose.
enum TlsSender {
    Http1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    Http2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

/// One TLS connection to a test server, kept open across requests.
pub struct TlsConnection {
    sender: TlsSender,
    authority: String,
    /// The leaf certificate the server presented.
    pub peer_leaf: rustls_pki_types::CertificateDer<'static>,
    /// The ALPN protocol agreed, if any.
    pub alpn: Option<Vec<u8>>,
    pub protocol_version: Option<rustls::ProtocolVersion>,
}

impl TlsConnection {
    /// Connect to `addr` as `localhost` and complete the handshake (bounded).
    pub async fn connect(
        addr: SocketAddr,
        config: Arc<rustls::ClientConfig>,
    ) -> std::io::Result<TlsConnection> {
        use hyper_util::rt::TokioIo;
        let connect = async {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            let name = rustls_pki_types::ServerName::try_from("localhost")
                .expect("a valid name")
                .to_owned();
            tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
        };
        let stream = tokio::time::timeout(REQUEST_TIMEOUT, connect)
            .await
            .unwrap_or_else(|_| panic!("TLS handshake with {addr} timed out"))?;
        let session = stream.get_ref().1;
        let peer_leaf = session
            .peer_certificates()
            .and_then(|chain| chain.first())
            .expect("the server presents a certificate")
            .clone()
            .into_owned();
        let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
        let protocol_version = session.protocol_version();
        let io = TokioIo::new(stream);
        let sender = if alpn.as_deref() == Some(b"h2") {
            let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(std::io::Error::other)?;
            tokio::spawn(conn);
            TlsSender::Http2(sender)
        } else {
            let (sender, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(std::io::Error::other)?;
            tokio::spawn(conn);
            TlsSender::Http1(sender)
        };
        Ok(TlsConnection {
            sender,
            authority: format!("localhost:{}", addr.port()),
            peer_leaf,
            alpn,
            protocol_version,
        })
    }

    /// `GET path_and_query` on this connection; the response is read in full (bounded).
    pub async fn get(&mut self, path_and_query: &str) -> (http::Version, TestResponse) {
        let uri = format!("https://{}{path_and_query}", self.authority);
        let exchange = async {
            let response = match &mut self.sender {
                TlsSender::Http2(sender) => {
                    let request = Request::get(&uri).body(Full::new(Bytes::new())).unwrap();
                    sender.send_request(request).await
                }
                TlsSender::Http1(sender) => {
                    sender.ready().await.expect("the connection is open");
                    let request = Request::get(path_and_query)
                        .header(http::header::HOST, &self.authority)
                        .body(Full::new(Bytes::new()))
                        .unwrap();
                    sender.send_request(request).await
                }
            }
            .expect("request should succeed");
            let version = response.version();
            let (parts, body) = response.into_parts();
            let body = body.collect().await.expect("a readable body").to_bytes();
            let response = TestResponse {
                status: parts.status,
                headers: parts.headers,
                body,
            };
            (version, response)
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .unwrap_or_else(|_| panic!("request to {uri} timed out"))
    }
}

// === HLS and DASH (emulator and proxy tests) ===

/// The URI lines of an HLS playlist (every non-blank line that is not a tag), in order.
pub fn playlist_uris(playlist: &str) -> Vec<String> {
    playlist
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

/// The `URI="..."` attribute values in an HLS playlist's tags (`#EXT-X-MEDIA`, `#EXT-X-KEY`,
/// ...), in order.
pub fn playlist_attribute_uris(playlist: &str) -> Vec<String> {
    playlist
        .lines()
        .filter(|line| line.starts_with('#'))
        .flat_map(|line| line.split("URI=\"").skip(1))
        .filter_map(|rest| rest.split_once('"').map(|(uri, _)| uri.to_owned()))
        .collect()
}

/// `reference` resolved against `base` as a player does for the forms playlists use: an
/// absolute URL as it is, `/path` against base's origin, anything else against base's
/// directory (no `..` handling).
pub fn resolve_url(base: &str, reference: &str) -> String {
    if reference.contains("://") {
        return reference.to_owned();
    }
    let base = base.split(['?', '#']).next().unwrap_or(base);
    if reference.starts_with('/') {
        let after_scheme = base.find("://").map_or(0, |at| at + 3);
        let origin_end = base[after_scheme..]
            .find('/')
            .map_or(base.len(), |at| after_scheme + at);
        return format!("{}{reference}", &base[..origin_end]);
    }
    let directory_end = base.rfind('/').map_or(base.len(), |at| at + 1);
    format!("{}{reference}", &base[..directory_end])
}

// === live reload (tests/reload.rs) ===

/// A client that keeps its connections open between requests (for one runtime only).
pub fn pooled_client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// `GET url` through `client` without panicking: `Err` says why the exchange failed or that
/// it took longer than [`REQUEST_TIMEOUT`].
pub async fn try_get(
    client: &Client<HttpConnector, Full<Bytes>>,
    url: &str,
) -> Result<TestResponse, String> {
    let request = Request::get(url)
        .body(Full::new(Bytes::new()))
        .map_err(|error| format!("request to {url} does not build: {error}"))?;
    let exchange = async {
        let response = client
            .request(request)
            .await
            .map_err(|error| format!("request to {url} failed: {error}"))?;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|error| format!("body of {url} unreadable: {error}"))?
            .to_bytes();
        Ok(TestResponse {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "request to {url} timed out after {REQUEST_TIMEOUT:?}"
            ))
        })
}

// === metrics ===

/// The `streamgate_open_connections` gauge of `metrics`, read in process.
pub fn open_connections(metrics: &streamgate::metrics::Metrics) -> f64 {
    let text = metrics.encode();
    text.lines()
        .find_map(|line| line.strip_prefix("streamgate_open_connections "))
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no streamgate_open_connections sample in:\n{text}"))
}

// === waiting for a condition ===

/// How often a wait checks its condition again.
pub const POLL_EVERY: Duration = Duration::from_millis(10);
/// How long [`wait_for`] waits before it fails the test.
pub const WAIT_LIMIT: Duration = Duration::from_secs(10);

/// What one check of a condition found: `Ok` with a value once the condition holds, else
/// `Err` with what was seen instead (shown when the wait fails).
pub trait Probe {
    type Value;
    fn outcome(self) -> Result<Self::Value, String>;
}

impl Probe for bool {
    type Value = ();
    fn outcome(self) -> Result<(), String> {
        if self {
            Ok(())
        } else {
            Err("the condition did not hold".into())
        }
    }
}

impl<T> Probe for Option<T> {
    type Value = T;
    fn outcome(self) -> Result<T, String> {
        self.ok_or_else(|| "nothing yet".into())
    }
}

impl<T, E: std::fmt::Display> Probe for Result<T, E> {
    type Value = T;
    fn outcome(self) -> Result<T, String> {
        self.map_err(|seen| seen.to_string())
    }
}

/// A wait whose condition did not hold within its limit.
#[derive(Debug)]
pub struct TimedOut {
    what: String,
    waited: Duration,
    checks: u64,
    last_seen: String,
}

impl std::fmt::Display for TimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "waited {:.1?} ({} checks) for {}; last seen: {}",
            self.waited, self.checks, self.what, self.last_seen
        )
    }
}

/// The bookkeeping of one bounded wait, shared by [`poll_until`] and
/// [`poll_until_blocking`], which differ only in how they pause between checks.
struct Wait<'a> {
    what: &'a str,
    limit: Duration,
    started: std::time::Instant,
    checks: u64,
    /// Bounds the checks even if a clock misbehaves: one per [`POLL_EVERY`], and a last one.
    max_checks: u64,
    last_seen: String,
}

impl<'a> Wait<'a> {
    fn new(what: &'a str, limit: Duration) -> Self {
        Wait {
            what,
            limit,
            started: std::time::Instant::now(),
            checks: 0,
            max_checks: (limit.as_micros() / POLL_EVERY.as_micros()) as u64 + 2,
            last_seen: "no check finished".into(),
        }
    }

    /// How much of the limit is left.
    fn remaining(&self) -> Duration {
        self.limit.saturating_sub(self.started.elapsed())
    }

    /// Record one check (`None`: it was still running at the limit). `Break` with the value
    /// once the condition holds or with the failure once the wait is over; `Continue` with
    /// how long to pause before the next check.
    fn record<P: Probe>(
        &mut self,
        checked: Option<P>,
    ) -> std::ops::ControlFlow<Result<P::Value, TimedOut>, Duration> {
        use std::ops::ControlFlow::{Break, Continue};
        self.checks += 1;
        match checked.map(Probe::outcome) {
            Some(Ok(value)) => return Break(Ok(value)),
            Some(Err(seen)) => self.last_seen = seen,
            None => self.last_seen = "a check was still running at the limit".into(),
        }
        let remaining = self.remaining();
        if remaining.is_zero() || self.checks >= self.max_checks {
            return Break(Err(TimedOut {
                what: self.what.to_owned(),
                waited: self.started.elapsed(),
                checks: self.checks,
                last_seen: std::mem::take(&mut self.last_seen),
            }));
        }
        Continue(POLL_EVERY.min(remaining))
    }
}

/// Check `probe` every [`POLL_EVERY`] until it holds, for at most `limit` (a check still
/// running then is abandoned): the value it found, or why the wait failed, naming `what`.
pub async fn poll_until<P: Probe>(
    what: &str,
    limit: Duration,
    mut probe: impl AsyncFnMut() -> P,
) -> Result<P::Value, TimedOut> {
    let mut wait = Wait::new(what, limit);
    loop {
        let checked = tokio::time::timeout(wait.remaining(), probe()).await.ok();
        match wait.record(checked) {
            std::ops::ControlFlow::Break(done) => return done,
            std::ops::ControlFlow::Continue(pause) => tokio::time::sleep(pause).await,
        }
    }
}

/// [`poll_until`] for a thread outside the async runtime (a `Drop`, a child process).
pub fn poll_until_blocking<P: Probe>(
    what: &str,
    limit: Duration,
    mut probe: impl FnMut() -> P,
) -> Result<P::Value, TimedOut> {
    let mut wait = Wait::new(what, limit);
    loop {
        match wait.record(Some(probe())) {
            std::ops::ControlFlow::Break(done) => return done,
            std::ops::ControlFlow::Continue(pause) => std::thread::sleep(pause),
        }
    }
}

/// Wait (at most [`WAIT_LIMIT`]) until `probe` holds and return what it found; panics naming
/// `what` and the last thing seen otherwise.
pub async fn wait_for<P: Probe>(what: &str, probe: impl AsyncFnMut() -> P) -> P::Value {
    wait_for_within(what, WAIT_LIMIT, probe).await
}

/// [`wait_for`] with another limit.
pub async fn wait_for_within<P: Probe>(
    what: &str,
    limit: Duration,
    probe: impl AsyncFnMut() -> P,
) -> P::Value {
    poll_until(what, limit, probe)
        .await
        .unwrap_or_else(|timed_out| panic!("{timed_out}"))
}

// === captured logs ===

/// Everything logged in this test binary, as JSON lines at TRACE, from the first call on.
/// Installed as the global subscriber: the gateway logs from runtime workers, signing threads
/// and blocking threads alike, and tests that read the log pick their own requests out by
/// request id.
#[allow(dead_code)]
pub fn capture_logs() -> std::sync::Arc<std::sync::Mutex<Vec<u8>>> {
    use std::sync::{Arc, Mutex, OnceLock};
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    Arc::clone(LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&buffer);
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_ansi(false)
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || LogSink(Arc::clone(&sink)))
            .finish();
        tracing::subscriber::set_global_default(subscriber)
            .expect("nothing else in this binary sets a global subscriber");
        buffer
    }))
}

struct LogSink(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The captured log as text.
#[allow(dead_code)]
pub fn logged_text(logs: &std::sync::Mutex<Vec<u8>>) -> String {
    String::from_utf8_lossy(
        &logs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    )
    .into_owned()
}
