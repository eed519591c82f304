//! HTTPS on the gateway: certificate verification, ALPN, reloading certificate files, old
//! protocol versions refused, start-up errors, and the plain-HTTP redirect listener.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{Request, Response};
use hyper::body::Incoming;
use streamgate::Body;
use streamgate::app::keys::{MissingKeys, load_signing_keys};
use streamgate::app::{App, StartError};
use streamgate::config::Settings;
use streamgate::http::server::{ConnectionBuilder, Handler, serve_tls_with};
use streamgate::http::tls::{CertStore, TlsFiles};
use streamgate::metrics::Metrics;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const H2: &[u8] = b"h2";
const HTTP1: &[u8] = b"http/1.1";

/// [`gateway_config`] with HTTPS from `cert.pem`/`key.pem` next to the config file.
fn tls_config(redirect: bool) -> String {
    let mut yaml = gateway_config();
    yaml.push_str("tls:\n  cert: cert.pem\n  key: key.pem\n");
    if redirect {
        yaml.push_str("http_redirect_listen: 127.0.0.1:0\n");
    }
    yaml
}

fn write_pair(dir: &Path, cert: &IssuedCert) {
    std::fs::write(dir.join("cert.pem"), &cert.chain_pem).unwrap();
    std::fs::write(dir.join("key.pem"), &cert.key_pem).unwrap();
}

/// Start an app from `yaml`, relative paths resolved in `dir`, checking files every 50 ms.
async fn start_app(dir: &Path, yaml: &str) -> Result<App, StartError> {
    let mut settings = Settings::from_yaml(yaml, "test.yaml", dir)
        .unwrap_or_else(|errors| panic!("test config should be valid:\n{errors}"));
    if let Some(tls) = settings.tls.as_mut() {
        tls.reload_interval = Duration::from_millis(50);
    }
    let (keys, _) = load_signing_keys(&settings, MissingKeys::Fail).unwrap();
    App::start(settings, keys, None).await
}

/// A gateway serving HTTPS with a certificate from a fresh test CA, and its redirect listener.
struct TlsGateway {
    dir: tempfile::TempDir,
    ca: TestCa,
    cert: IssuedCert,
    app: App,
}

impl TlsGateway {
    async fn start() -> TlsGateway {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new("gateway");
        let cert = ca.issue();
        write_pair(dir.path(), &cert);
        let app = start_app(dir.path(), &tls_config(true))
            .await
            .expect("gateway should start");
        TlsGateway { dir, ca, cert, app }
    }

    fn addr(&self) -> SocketAddr {
        self.app.gateway_addr()
    }

    async fn connect(&self, alpn: &[&[u8]]) -> TlsConnection {
        TlsConnection::connect(self.addr(), self.ca.client_config(alpn))
            .await
            .expect("TLS handshake with the gateway")
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }
}

#[tokio::test]
async fn clients_verify_the_gateway_certificate_and_one_without_the_ca_is_refused() {
    let gateway = TlsGateway::start().await;
    assert!(
        gateway
            .app
            .gateway_origin()
            .starts_with("https://127.0.0.1:")
    );

    let mut client = gateway.connect(&[H2, HTTP1]).await;
    assert_eq!(client.peer_leaf, gateway.cert.leaf);
    let (_, health) = client.get("/healthz").await;
    assert_eq!(health.status.as_u16(), 200, "{}", health.text());
    let (_, watch) = client.get("/watch/intro").await;
    assert_eq!(watch.status.as_u16(), 302, "{}", watch.text());

    // TLS 1.2 is still served.
    let tls12 = gateway
        .ca
        .client_config_for(&[HTTP1], &[&rustls::version::TLS12]);
    let mut old = TlsConnection::connect(gateway.addr(), tls12).await.unwrap();
    assert_eq!(old.protocol_version, Some(rustls::ProtocolVersion::TLSv1_2));
    assert_eq!(old.get("/healthz").await.1.status.as_u16(), 200);

    // A client that trusts only another CA refuses the certificate.
    let stranger = TestCa::new("stranger").client_config(&[H2, HTTP1]);
    let error = TlsConnection::connect(gateway.addr(), stranger)
        .await
        .err()
        .expect("an untrusted certificate must fail the handshake");
    assert!(
        error.to_string().contains("invalid peer certificate"),
        "{error}"
    );
}

#[tokio::test]
async fn alpn_negotiates_h2_and_http2_requests_work() {
    let gateway = TlsGateway::start().await;
    let mut client = gateway.connect(&[H2, HTTP1]).await;
    assert_eq!(client.alpn.as_deref(), Some(H2));
    let (version, response) = client.get("/watch/intro").await;
    assert_eq!(version, http::Version::HTTP_2);
    assert_eq!(response.status.as_u16(), 302, "{}", response.text());
    let (version, response) = client.get("/healthz").await;
    assert_eq!(version, http::Version::HTTP_2);
    assert_eq!(response.status.as_u16(), 200);
}

#[tokio::test]
async fn alpn_chooses_http1_when_the_client_offers_only_that_or_nothing() {
    let gateway = TlsGateway::start().await;
    let mut client = gateway.connect(&[HTTP1]).await;
    assert_eq!(client.alpn.as_deref(), Some(HTTP1));
    let (version, response) = client.get("/healthz").await;
    assert_eq!(version, http::Version::HTTP_11);
    assert_eq!(response.status.as_u16(), 200);

    let mut client = gateway.connect(&[]).await;
    assert_eq!(client.alpn, None);
    let (version, response) = client.get("/healthz").await;
    assert_eq!(version, http::Version::HTTP_11);
    assert_eq!(response.status.as_u16(), 200);
}

#[tokio::test]
async fn swapped_certificate_files_reach_new_connections_and_old_ones_keep_working() {
    let gateway = TlsGateway::start().await;
    let certs = Arc::clone(gateway.app.tls().expect("TLS is on"));
    let mut before_h2 = gateway.connect(&[H2]).await;
    let mut before_h1 = gateway.connect(&[HTTP1]).await;
    assert_eq!(before_h2.get("/healthz").await.1.status.as_u16(), 200);

    let renewed = gateway.ca.issue();
    // Key first, then certificate: a look in between sees a mismatch and keeps the old pair.
    replace_file(&gateway.path("key.pem"), &renewed.key_pem);
    replace_file(&gateway.path("cert.pem"), &renewed.chain_pem);
    wait_for("the renewed certificate to serve", async || {
        certs.reloads().ok >= 1 && certs.current().cert[0] == renewed.leaf
    })
    .await;

    let mut after = gateway.connect(&[H2, HTTP1]).await;
    assert_eq!(after.peer_leaf, renewed.leaf);
    assert_eq!(after.get("/healthz").await.1.status.as_u16(), 200);

    // Connections made before the swap were not dropped.
    assert_eq!(before_h2.peer_leaf, gateway.cert.leaf);
    assert_eq!(before_h2.get("/watch/intro").await.1.status.as_u16(), 302);
    assert_eq!(before_h1.peer_leaf, gateway.cert.leaf);
    assert_eq!(before_h1.get("/healthz").await.1.status.as_u16(), 200);
}

#[tokio::test]
async fn a_broken_replacement_keeps_the_old_certificate() {
    let gateway = TlsGateway::start().await;
    let certs = Arc::clone(gateway.app.tls().expect("TLS is on"));

    replace_file(&gateway.path("cert.pem"), "not a certificate\n");
    wait_for("the broken certificate to be refused", async || {
        certs.reloads().failed >= 1
    })
    .await;
    let mut client = gateway.connect(&[H2, HTTP1]).await;
    assert_eq!(client.peer_leaf, gateway.cert.leaf);
    assert_eq!(client.get("/healthz").await.1.status.as_u16(), 200);

    // A valid certificate whose key never arrives: refused as well.
    let orphan = gateway.ca.issue();
    replace_file(&gateway.path("cert.pem"), &orphan.chain_pem);
    wait_for("the mismatched pair to be refused", async || {
        certs.reloads().failed >= 2
    })
    .await;
    let client = gateway.connect(&[H2, HTTP1]).await;
    assert_eq!(client.peer_leaf, gateway.cert.leaf);
    assert_eq!(certs.reloads().ok, 0);
}

/// A minimal ClientHello record with `version` as its client_version (TLS 1.0 = 0x0301,
/// 1.1 = 0x0302, 1.2 = 0x0303) and no `supported_versions` extension, so that is the highest
/// version it offers. Otherwise acceptable to a TLS 1.2 server: an ECDHE suite rustls
/// supports, signature algorithms, groups and point formats.
fn client_hello(version: [u8; 2]) -> Vec<u8> {
    fn extension(kind: u16, list: &[u8], length_bytes: usize) -> Vec<u8> {
        let mut data = (list.len() as u16).to_be_bytes()[2 - length_bytes..].to_vec();
        data.extend_from_slice(list);
        let mut out = kind.to_be_bytes().to_vec();
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(&data);
        out
    }
    let mut body = Vec::new();
    body.extend_from_slice(&version);
    body.extend_from_slice(&[0x5a; 32]); // random
    body.push(0); // no session id
    // ECDHE-ECDSA/RSA AES-128-GCM (TLS 1.2), and the CBC suites TLS 1.0 clients offer.
    let suites = [0xc0, 0x2b, 0xc0, 0x2f, 0xc0, 0x09, 0xc0, 0x13, 0x00, 0x2f];
    body.extend_from_slice(&(suites.len() as u16).to_be_bytes());
    body.extend_from_slice(&suites);
    body.extend_from_slice(&[1, 0]); // null compression only
    let mut extensions = Vec::new();
    // signature_algorithms: ecdsa_secp256r1_sha256, rsa_pss_rsae_sha256, rsa_pkcs1_sha256
    extensions.extend(extension(0x000d, &[0x04, 0x03, 0x08, 0x04, 0x04, 0x01], 2));
    // supported_groups: x25519, secp256r1
    extensions.extend(extension(0x000a, &[0x00, 0x1d, 0x00, 0x17], 2));
    // ec_point_formats: uncompressed
    extensions.extend(extension(0x000b, &[0], 1));
    body.extend_from_slice(&(extensions.len() as u16).to_be_bytes());
    body.extend_from_slice(&extensions);
    let mut handshake = vec![1]; // client_hello
    handshake.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    handshake.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01]; // handshake record, TLS 1.0 framing
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

#[tokio::test]
async fn tls_1_0_and_1_1_client_hellos_are_refused() {
    let gateway = TlsGateway::start().await;

    // Control: the same hello claiming TLS 1.2 gets a ServerHello, so the refusals below are
    // about the version alone.
    let mut stream = TcpStream::connect(gateway.addr()).await.unwrap();
    stream.write_all(&client_hello([0x03, 0x03])).await.unwrap();
    let mut first = [0u8; 6];
    tokio::time::timeout(REQUEST_TIMEOUT, stream.read_exact(&mut first))
        .await
        .expect("a reply to a TLS 1.2 hello")
        .unwrap();
    assert_eq!(first[0], 0x16, "a handshake record: {first:?}");
    assert_eq!(first[5], 2, "a ServerHello: {first:?}");

    for version in [[0x03, 0x01], [0x03, 0x02]] {
        let mut stream = TcpStream::connect(gateway.addr()).await.unwrap();
        stream.write_all(&client_hello(version)).await.unwrap();
        let mut answer = Vec::new();
        // The server answers with an alert and closes; never a ServerHello.
        let _ = tokio::time::timeout(REQUEST_TIMEOUT, stream.read_to_end(&mut answer))
            .await
            .expect("the server closes the connection");
        assert_ne!(
            answer.first(),
            Some(&0x16),
            "a handshake reply to {version:?}"
        );
        if !answer.is_empty() {
            assert_eq!(answer[0], 0x15, "an alert record: {answer:?}");
            assert_eq!(
                answer.get(5..7),
                Some(&[2, 70][..]),
                "a fatal protocol_version alert"
            );
        }
    }
    // The listener is unaffected.
    let mut client = gateway.connect(&[H2]).await;
    assert_eq!(client.get("/healthz").await.1.status.as_u16(), 200);
}

/// The 1-based line of the first line that, trimmed, starts with `prefix`.
fn line_of(yaml: &str, prefix: &str) -> usize {
    yaml.lines()
        .position(|line| line.trim_start().starts_with(prefix))
        .expect("the line is there")
        + 1
}

#[tokio::test]
async fn a_bad_certificate_or_key_fails_start_with_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("start");
    let cert = ca.issue();
    let yaml = tls_config(true);
    let cert_line = line_of(&yaml, "cert: cert.pem");
    let key_line = line_of(&yaml, "key: key.pem");
    let tls_line = line_of(&yaml, "tls:");

    // The configured paths are values: the field and line name the file instead.
    let configured = dir.path().display().to_string();
    let expect = async |needles: &[String]| {
        let error = match start_app(dir.path(), &yaml).await {
            Ok(_) => panic!("the gateway must not start"),
            Err(error) => error,
        };
        assert!(matches!(error, StartError::Tls(_)), "{error:?}");
        let text = error.to_string();
        for needle in needles {
            assert!(text.contains(needle.as_str()), "{needle:?} in:\n{text}");
        }
        assert!(!text.contains(&configured), "a path is echoed:\n{text}");
    };

    expect(&[
        format!("test.yaml:{cert_line}:3: tls.cert:"),
        "cannot read the certificate file: ".to_string(),
    ])
    .await;

    std::fs::write(dir.path().join("cert.pem"), &cert.chain_pem).unwrap();
    std::fs::write(dir.path().join("key.pem"), &cert.chain_pem).unwrap();
    expect(&[
        format!("test.yaml:{key_line}:3: tls.key:"),
        "private key file holds no private key".to_string(),
    ])
    .await;

    std::fs::write(dir.path().join("key.pem"), ca.issue().key_pem).unwrap();
    expect(&[
        format!("test.yaml:{tls_line}:1: tls:"),
        "the private key file does not match the certificate file".to_string(),
    ])
    .await;

    std::fs::write(dir.path().join("key.pem"), &cert.key_pem).unwrap();
    let app = start_app(dir.path(), &yaml)
        .await
        .expect("a good pair starts");
    app.shutdown().await;
}

#[test]
fn tls_settings_are_checked_with_file_line_and_field() {
    let parse = |yaml: &str| Settings::from_yaml(yaml, "test.yaml", Path::new("/etc/sg"));

    let settings = parse(&tls_config(true)).unwrap();
    let tls = settings.tls.expect("tls is set");
    assert_eq!(
        tls.files,
        TlsFiles {
            cert: "/etc/sg/cert.pem".into(),
            key: "/etc/sg/key.pem".into(),
        }
    );
    assert_eq!(
        tls.http_redirect_listen,
        Some("127.0.0.1:0".parse().unwrap())
    );
    assert_eq!(tls.reload_interval, streamgate::http::tls::RELOAD_INTERVAL);
    assert!(parse(&gateway_config()).unwrap().tls.is_none());

    let redirect_only = format!("{}http_redirect_listen: 127.0.0.1:8080\n", gateway_config());
    let errors = parse(&redirect_only).unwrap_err();
    let line = line_of(&redirect_only, "http_redirect_listen:");
    assert_eq!(errors.0.len(), 1, "{errors}");
    assert!(
        errors.0[0].to_string().starts_with(&format!(
            "test.yaml:{line}:1: http_redirect_listen: only valid with `tls`"
        )),
        "{errors}"
    );

    let typo = tls_config(false).replace("  key: key.pem", "  keyfile: key.pem");
    let errors = parse(&typo).unwrap_err();
    assert_eq!(
        errors.0[0].position.map(|p| p.0),
        Some(line_of(&typo, "keyfile:"))
    );
    assert!(
        errors.to_string().contains("unknown field `keyfile`"),
        "{errors}"
    );

    let same_port = tls_config(false).replace(
        "listen: 127.0.0.1:0\nstream",
        "listen: 127.0.0.1:8443\nstream",
    ) + "http_redirect_listen: 127.0.0.1:8443\n";
    let errors = parse(&same_port).unwrap_err();
    assert!(errors.to_string().contains("its own port"), "{errors}");
}

#[tokio::test]
async fn with_a_public_url_the_redirect_goes_there_whatever_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let cert = TestCa::new("gateway").issue();
    write_pair(dir.path(), &cert);
    let yaml = tls_config(true) + "auth:\n  public_url: https://videos.example.com\n";
    let app = start_app(dir.path(), &yaml).await.expect("gateway starts");
    let redirect = app.http_redirect_addr().expect("a redirect listener");
    for host in ["evil.example", "localhost", "127.0.0.1"] {
        let response = get_with(
            &format!("http://{redirect}/watch/intro?startTime=10"),
            &[("host", host)],
        )
        .await;
        assert_eq!(response.status.as_u16(), 308, "{host}");
        assert_eq!(
            response.header("location").unwrap(),
            "https://videos.example.com/watch/intro?startTime=10",
            "{host}"
        );
    }
    app.shutdown().await;
}

#[tokio::test]
async fn the_redirect_listener_sends_308_to_https_and_answers_healthz() {
    let gateway = TlsGateway::start().await;
    let redirect = gateway
        .app
        .http_redirect_addr()
        .expect("a redirect listener");
    let https_port = gateway.addr().port();

    let response = get(&format!(
        "http://{redirect}/watch/intro?startTime=10&muted=true"
    ))
    .await;
    assert_eq!(response.status.as_u16(), 308);
    let location = response.header("location").unwrap();
    assert_eq!(
        location,
        format!("https://127.0.0.1:{https_port}/watch/intro?startTime=10&muted=true")
    );

    // A name the certificate covers (it names localhost and 127.0.0.1) is kept ...
    let named = get_with(
        &format!("http://{redirect}/api/getSignedURL"),
        &[("host", "LocalHost:80")],
    )
    .await;
    assert_eq!(named.status.as_u16(), 308);
    assert_eq!(
        named.header("location").unwrap(),
        format!("https://localhost:{https_port}/api/getSignedURL")
    );
    // ... any other Host is refused, not sent back as a redirect.
    let foreign = get_with(
        &format!("http://{redirect}/watch/intro"),
        &[("host", "evil.example")],
    )
    .await;
    assert_eq!(foreign.status.as_u16(), 400, "{}", foreign.text());
    assert!(foreign.header("location").is_none());
    assert!(!foreign.text().contains("evil"), "{}", foreign.text());

    // Following the redirect reaches the gateway over TLS.
    let mut client = gateway.connect(&[H2, HTTP1]).await;
    let path = location.split_once(&format!(":{https_port}")).unwrap().1;
    let (_, followed) = client.get(path).await;
    assert_eq!(followed.status.as_u16(), 302, "{}", followed.text());

    let health = get(&format!("http://{redirect}/healthz")).await;
    assert_eq!(health.status.as_u16(), 200, "{}", health.text());

    // HTTP/1.0 needs no Host header; without one there is nowhere to redirect to.
    let mut stream = TcpStream::connect(redirect).await.unwrap();
    stream
        .write_all(b"GET /watch/intro HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(REQUEST_TIMEOUT, stream.read_to_end(&mut answer))
        .await
        .expect("an answer")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.0 400 "), "{answer}");

    gateway.app.shutdown().await;
}

struct Hello;

impl Handler for Hello {
    async fn handle(&self, _req: Request<Incoming>, _peer: SocketAddr) -> Response<Body> {
        Response::new(Body::new(Bytes::from_static(b"hello")))
    }
}

#[tokio::test]
async fn slow_handshakes_and_heads_are_cut_off_and_handshakes_do_not_hold_up_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("server");
    write_pair(dir.path(), &ca.issue());
    let certs = CertStore::load(TlsFiles {
        cert: dir.path().join("cert.pem"),
        key: dir.path().join("key.pem"),
    })
    .unwrap();
    let config = streamgate::http::tls::server_config(certs).unwrap();

    let start =
        |handshake_timeout: Duration, header_read_timeout: Duration, metrics: &Arc<Metrics>| {
            let config = Arc::clone(&config);
            let metrics = Arc::clone(metrics);
            async move {
                let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
                let addr = listener.local_addr().unwrap();
                let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
                let connections = ConnectionBuilder::with_header_read_timeout(header_read_timeout)
                    .with_tls_handshake_timeout(handshake_timeout)
                    .observed_by(metrics);
                let server = tokio::spawn(serve_tls_with(
                    listener,
                    config,
                    Arc::new(Hello),
                    connections,
                    async {
                        let _ = stopped.await;
                    },
                ));
                (addr, stop, server)
            }
        };

    // A client that connects and never says hello is disconnected.
    let metrics = Metrics::new();
    let (addr, _stop, _server) =
        start(Duration::from_millis(500), Duration::from_secs(1), &metrics).await;
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(REQUEST_TIMEOUT, silent.read_to_end(&mut buf))
        .await
        .expect("a silent handshake must not hold the connection open");
    let mut client = TlsConnection::connect(addr, ca.client_config(&[H2]))
        .await
        .unwrap();
    assert_eq!(client.get("/").await.1.text(), "hello");

    // After the handshake, a request head that never ends is cut off as on plain HTTP.
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut slow = tokio_rustls::TlsConnector::from(ca.client_config(&[HTTP1]))
        .connect(name, tcp)
        .await
        .unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n")
        .await
        .unwrap();
    slow.flush().await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(REQUEST_TIMEOUT, slow.read_to_end(&mut buf))
        .await
        .expect("a slow head over TLS must not hold the connection open");

    // With a long handshake deadline, a pending handshake still does not delay shutdown
    // (which would otherwise wait out its 10 s grace period).
    let metrics = Metrics::new();
    let (addr, stop, server) =
        start(Duration::from_secs(60), Duration::from_secs(60), &metrics).await;
    let _pending = TcpStream::connect(addr).await.unwrap();
    // Counted open on accept, right before its handshake task starts.
    wait_for("the server to accept the connection", async || {
        open_connections(&metrics) == 1.0
    })
    .await;
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("shutdown does not wait for handshakes")
        .unwrap();
    assert_eq!(
        open_connections(&metrics),
        0.0,
        "the abandoned handshake's connection is closed"
    );
}

fn streamgate() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_streamgate"));
    command.env("RUST_LOG", "warn");
    command
}

#[tokio::test]
async fn check_and_serve_report_tls() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("cli");
    let cert = ca.issue();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, tls_config(true)).unwrap();
    let config = config.display().to_string();

    std::fs::write(dir.path().join("cert.pem"), &cert.chain_pem).unwrap();
    std::fs::write(dir.path().join("key.pem"), "no key here\n").unwrap();
    let output = streamgate()
        .args(["--config", &config, "check"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("tls.key: the private key file") && !stderr.contains("key.pem"),
        "{stderr}"
    );

    std::fs::write(dir.path().join("key.pem"), &cert.key_pem).unwrap();
    let output = streamgate()
        .args(["--config", &config, "check"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("  tls      cert "), "{stdout}");

    let mut child = KillOnDrop(
        streamgate()
            .args(["--config", &config, "serve", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut origin = None;
    let mut redirect = None;
    while origin.is_none() || redirect.is_none() {
        let line = lines
            .recv_timeout(Duration::from_secs(20))
            .expect("serve prints its addresses");
        if let Some(rest) = line.strip_prefix("streamgate listening on ") {
            origin = Some(rest.to_string());
        }
        if let Some(rest) = line.strip_prefix("redirecting plain HTTP on ") {
            redirect = Some(rest.to_string());
        }
    }
    let origin = origin.unwrap();
    let addr: SocketAddr = origin
        .strip_prefix("https://")
        .unwrap_or_else(|| panic!("{origin} should be https"))
        .parse()
        .unwrap();
    assert!(redirect.unwrap().starts_with("http://127.0.0.1:"));
    let mut client = TlsConnection::connect(addr, ca.client_config(&[H2]))
        .await
        .unwrap();
    assert_eq!(client.get("/healthz").await.1.status.as_u16(), 200);
}

/// The child process, killed (by its id) and reaped when the test ends, even by a panic.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
