//! The outbound HTTP(S) client: rustls with the aws-lc-rs provider, HTTP/2 or HTTP/1.1 by
//! ALPN, pooled connections.
//!
//! Plain `http://` is allowed here; the configuration only accepts it for loopback hosts.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// The shared outbound client type.
pub type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// How to build an [`HttpsClient`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOptions {
    /// A PEM file of CA certificates to trust (a private CA, a test CA).
    ///
    /// Trusted in addition to the public roots; see [`build`].
    pub extra_ca_file: Option<PathBuf>,
    /// Limit on establishing the TCP connection.
    pub connect_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            extra_ca_file: None,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    // The path is a configured value: the caller names the field instead.
    #[error("cannot use the CA file: {reason}")]
    CaFile { path: PathBuf, reason: String },
    #[error("cannot set up TLS: {0}")]
    Tls(String),
}

/// Why a fetch failed. Never carries the URL (it could hold a secret) or a body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("timed out")]
    Timeout,
    #[error("the server answered with status {0}")]
    Status(u16),
    #[error("the response body is larger than the limit")]
    TooLarge,
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("the request failed: {0}")]
    Request(String),
}

/// A pooled client: TLS 1.2+ through rustls and aws-lc-rs, ALPN `h2` then `http/1.1`, plain
/// `http://` allowed.
///
/// Trust roots are the Mozilla roots (webpki-roots), plus every certificate in
/// [`ClientOptions::extra_ca_file`] when it is set (a private CA).
pub fn build(options: &ClientOptions) -> Result<HttpsClient, ClientError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let versions = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| ClientError::Tls(error.to_string()))?;
    // The public web PKI, plus a private CA when one is given.
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = &options.extra_ca_file {
        roots.roots.extend(read_ca_file(path)?.roots);
    }
    let tls = versions.with_root_certificates(roots).with_no_client_auth();

    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(options.connect_timeout));
    http.set_nodelay(true);

    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .build(connector))
}

/// Every certificate in a PEM file, as trust roots.
fn read_ca_file(path: &Path) -> Result<RootCertStore, ClientError> {
    let fail = |reason: String| ClientError::CaFile {
        path: path.to_path_buf(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|error| fail(error.to_string()))?;
    let mut roots = RootCertStore::empty();
    for (i, cert) in CertificateDer::pem_slice_iter(&pem).enumerate() {
        let cert = cert.map_err(|error| fail(format!("certificate {}: {error}", i + 1)))?;
        roots
            .add(cert)
            .map_err(|error| fail(format!("certificate {}: {error}", i + 1)))?;
    }
    if roots.is_empty() {
        return Err(fail("no PEM certificate found".into()));
    }
    Ok(roots)
}

/// GET `uri` and return its body: at most `max_bytes`, all within `timeout`; any status but
/// 2xx is an error.
pub async fn get_bytes(
    client: &HttpsClient,
    uri: &http::Uri,
    timeout: Duration,
    max_bytes: usize,
) -> Result<Bytes, FetchError> {
    let fetch = async {
        let request = http::Request::get(uri.clone())
            .header(http::header::ACCEPT, "application/json, */*;q=0.5")
            .header(
                http::header::USER_AGENT,
                concat!("streamgate/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(Bytes::new()))
            .map_err(|error| FetchError::Request(error.to_string()))?;
        let response = client.request(request).await.map_err(|error| {
            let message = error_chain(&error);
            if error.is_connect() {
                FetchError::Connect(message)
            } else {
                FetchError::Request(message)
            }
        })?;
        let status = response.status();
        if !status.is_success() {
            return Err(FetchError::Status(status.as_u16()));
        }
        let declared = response
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<u64>().ok());
        if declared.is_some_and(|length| length > max_bytes as u64) {
            return Err(FetchError::TooLarge);
        }
        let body = Limited::new(response.into_body(), max_bytes)
            .collect()
            .await
            .map_err(|error| {
                if error.is::<http_body_util::LengthLimitError>() {
                    FetchError::TooLarge
                } else {
                    FetchError::Request(error_chain(&*error))
                }
            })?;
        Ok(body.to_bytes())
    };
    tokio::time::timeout(timeout, fetch)
        .await
        .unwrap_or(Err(FetchError::Timeout))
}

/// An error and its causes, `: `-separated (hyper's own message alone is too vague).
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    // Bounded: error chains are short, but never trust that.
    for _ in 0..8 {
        let Some(cause) = source else { break };
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

/// Loopback test servers and a test CA, shared with other modules' tests.
#[cfg(test)]
pub(crate) mod test_support {
    use std::convert::Infallible;
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use bytes::Bytes;
    use http_body_util::Full;
    use hyper::body::Incoming;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    use tokio::net::TcpListener;

    pub type Handler =
        Arc<dyn Fn(&http::Request<Incoming>) -> http::Response<Full<Bytes>> + Send + Sync>;

    /// A server on 127.0.0.1, stopped when dropped.
    pub struct TestServer {
        pub addr: SocketAddr,
        /// Requests answered.
        pub hits: Arc<AtomicU64>,
        task: tokio::task::JoinHandle<()>,
    }

    impl TestServer {
        pub fn hits(&self) -> u64 {
            self.hits.load(Ordering::SeqCst)
        }
    }

    impl Drop for TestServer {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    /// At most this many connections per test server: every loop is bounded.
    const MAX_CONNECTIONS: usize = 1000;

    /// Serve `handler` over HTTP/1.1, or HTTPS when `tls` is given.
    pub async fn serve(tls: Option<Arc<rustls::ServerConfig>>, handler: Handler) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicU64::new(0));
        let counter = hits.clone();
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        let task = tokio::spawn(async move {
            for _ in 0..MAX_CONNECTIONS {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let handler = handler.clone();
                let counter = counter.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request: http::Request<Incoming>| {
                        counter.fetch_add(1, Ordering::SeqCst);
                        let response = handler(&request);
                        async move { Ok::<_, Infallible>(response) }
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    match acceptor {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                let _ = http.serve_connection(TokioIo::new(stream), service).await;
                            }
                        }
                        None => {
                            let _ = http.serve_connection(TokioIo::new(stream), service).await;
                        }
                    }
                });
            }
        });
        TestServer { addr, hits, task }
    }

    /// A server that accepts connections and never answers.
    pub async fn serve_silent() -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            for _ in 0..MAX_CONNECTIONS {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                held.push(stream);
            }
        });
        TestServer { addr, hits, task }
    }

    /// A fixed response.
    pub fn respond(status: u16, body: impl Into<Bytes>) -> http::Response<Full<Bytes>> {
        http::Response::builder()
            .status(status)
            .body(Full::new(body.into()))
            .unwrap()
    }

    /// A test CA and a server certificate it signed for `localhost` and 127.0.0.1.
    pub struct TestCa {
        /// The CA certificate, PEM.
        pub ca_pem: String,
        pub server_config: Arc<rustls::ServerConfig>,
    }

    impl TestCa {
        pub fn new() -> Self {
            let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
            ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            ca_params
                .distinguished_name
                .push(rcgen::DnType::CommonName, "streamgate test-only CA");
            let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();

            let leaf_key = KeyPair::generate().unwrap();
            let leaf_params =
                CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                    .unwrap();
            let leaf = leaf_params.signed_by(&leaf_key, &ca).unwrap();

            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            let mut server_config = rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(
                    vec![leaf.der().clone()],
                    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
                )
                .unwrap();
            server_config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Self {
                ca_pem: ca.pem(),
                server_config: Arc::new(server_config),
            }
        }

        /// The CA certificate in a temporary file.
        pub fn ca_file(&self) -> tempfile::NamedTempFile {
            let mut file = tempfile::NamedTempFile::new().unwrap();
            std::io::Write::write_all(&mut file, self.ca_pem.as_bytes()).unwrap();
            file
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;

    const LIMIT: usize = 1 << 20;
    const WAIT: Duration = Duration::from_secs(10);

    fn uri(scheme: &str, server: &TestServer, path: &str) -> http::Uri {
        format!("{scheme}://{}{path}", server.addr).parse().unwrap()
    }

    fn plain_client() -> HttpsClient {
        build(&ClientOptions::default()).unwrap()
    }

    #[tokio::test]
    async fn plain_http_on_loopback_is_fetched() {
        let server = serve(None, Arc::new(|_req| respond(200, "hello"))).await;
        let body = get_bytes(&plain_client(), &uri("http", &server, "/x"), WAIT, LIMIT)
            .await
            .unwrap();
        assert_eq!(&body[..], b"hello");
        assert_eq!(server.hits(), 1);
    }

    #[tokio::test]
    async fn https_succeeds_with_the_ca_file_and_fails_without_it() {
        let ca = TestCa::new();
        let ca_file = ca.ca_file();
        let server = serve(
            Some(ca.server_config.clone()),
            Arc::new(|_req| respond(200, "secure")),
        )
        .await;
        let target = uri("https", &server, "/jwks");

        let trusting = build(&ClientOptions {
            extra_ca_file: Some(ca_file.path().to_path_buf()),
            ..ClientOptions::default()
        })
        .unwrap();
        let body = get_bytes(&trusting, &target, WAIT, LIMIT).await.unwrap();
        assert_eq!(&body[..], b"secure");

        let error = get_bytes(&plain_client(), &target, WAIT, LIMIT)
            .await
            .unwrap_err();
        assert!(matches!(error, FetchError::Connect(_)), "{error:?}");
        assert_eq!(server.hits(), 1);
    }

    #[tokio::test]
    async fn localhost_name_is_verified_too() {
        let ca = TestCa::new();
        let ca_file = ca.ca_file();
        let server = serve(
            Some(ca.server_config.clone()),
            Arc::new(|_req| respond(200, "named")),
        )
        .await;
        let client = build(&ClientOptions {
            extra_ca_file: Some(ca_file.path().to_path_buf()),
            ..ClientOptions::default()
        })
        .unwrap();
        let target: http::Uri = format!("https://localhost:{}/", server.addr.port())
            .parse()
            .unwrap();
        // `localhost` may resolve to ::1 first, where nothing listens; the connector then
        // falls back to 127.0.0.1.
        let body = get_bytes(&client, &target, WAIT, LIMIT).await.unwrap();
        assert_eq!(&body[..], b"named");
    }

    #[tokio::test]
    async fn a_server_that_never_answers_times_out() {
        let server = serve_silent().await;
        let error = get_bytes(
            &plain_client(),
            &uri("http", &server, "/"),
            Duration::from_millis(200),
            LIMIT,
        )
        .await
        .unwrap_err();
        assert_eq!(error, FetchError::Timeout);
    }

    #[tokio::test]
    async fn non_2xx_is_an_error_naming_the_status() {
        let server = serve(None, Arc::new(|_req| respond(404, "no such thing"))).await;
        let error = get_bytes(&plain_client(), &uri("http", &server, "/"), WAIT, LIMIT)
            .await
            .unwrap_err();
        assert_eq!(error, FetchError::Status(404));
        assert!(error.to_string().contains("404"));
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_refused() {
        let server = serve(None, Arc::new(|_req| respond(200, vec![b'x'; 4096]))).await;
        let client = plain_client();
        let error = get_bytes(&client, &uri("http", &server, "/"), WAIT, 1024)
            .await
            .unwrap_err();
        assert_eq!(error, FetchError::TooLarge);
        let body = get_bytes(&client, &uri("http", &server, "/"), WAIT, 4096)
            .await
            .unwrap();
        assert_eq!(body.len(), 4096);
    }

    #[tokio::test]
    async fn a_streamed_body_over_the_limit_is_refused() {
        // No Content-Length: the limit is enforced while reading.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut buffer = [0u8; 4096];
            let _ = stream.read(&mut buffer).await;
            let chunk = vec![b'y'; 2048];
            let mut response =
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n".to_vec();
            response.extend_from_slice(&chunk);
            response.extend_from_slice(b"\r\n800\r\n");
            response.extend_from_slice(&chunk);
            response.extend_from_slice(b"\r\n0\r\n\r\n");
            let _ = stream.write_all(&response).await;
        });
        let target: http::Uri = format!("http://{addr}/").parse().unwrap();
        let error = get_bytes(&plain_client(), &target, WAIT, 3000)
            .await
            .unwrap_err();
        assert_eq!(error, FetchError::TooLarge);
        server.abort();
    }

    #[tokio::test]
    async fn connection_refused_is_a_connect_error() {
        // Bind then drop, so the port is (almost certainly) closed.
        let addr = {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            listener.local_addr().unwrap()
        };
        let target: http::Uri = format!("http://{addr}/").parse().unwrap();
        let error = get_bytes(&plain_client(), &target, WAIT, LIMIT)
            .await
            .unwrap_err();
        assert!(matches!(error, FetchError::Connect(_)), "{error:?}");
    }

    #[test]
    fn a_bad_ca_file_gives_the_reason_without_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let error = build(&ClientOptions {
            extra_ca_file: Some(missing.clone()),
            ..ClientOptions::default()
        })
        .unwrap_err();
        assert!(
            error.to_string().contains("cannot use the CA file"),
            "{error}"
        );
        assert!(!error.to_string().contains("missing.pem"), "{error}");

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let error = build(&ClientOptions {
            extra_ca_file: Some(empty),
            ..ClientOptions::default()
        })
        .unwrap_err();
        assert!(!error.to_string().contains("empty.pem"), "{error}");
        assert!(error.to_string().contains("no PEM certificate"), "{error}");
    }
}
