//! Connections that never finish a request head are closed, whatever they started as; idle
//! ones close after `idle_timeout`; at the connection cap an idle one is evicted for a new one,
//! and a new one is refused (and counted) only when every connection is busy.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use streamgate::Body;
use streamgate::app::App;
use streamgate::app::keys::{MissingKeys, load_signing_keys};
use streamgate::config::Settings;
use streamgate::http::server::{ConnectionBuilder, Handler, Limits, serve_with};
use streamgate::metrics::Metrics;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

/// The HTTP/2 connection preface a client with prior knowledge sends first.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty HTTP/2 SETTINGS frame (length 0, type 4, no flags, stream 0).
const H2_SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];

/// The time a closed-for-silence connection may take beyond its timeout: the ticker's period,
/// the close grace for a client that does not answer a GOAWAY, and busy shared cores.
const SLACK: Duration = Duration::from_millis(3000);

/// The value of `name{labels}` in a scrape of `metrics` (0 when absent).
fn sample(metrics: &Metrics, name_and_labels: &str) -> f64 {
    metrics
        .encode()
        .lines()
        .find_map(|line| line.strip_prefix(name_and_labels)?.trim().parse().ok())
        .unwrap_or(0.0)
}

fn closed_for(metrics: &Metrics, reason: &str) -> f64 {
    sample(
        metrics,
        &format!("streamgate_connections_closed_total{{reason=\"{reason}\"}}"),
    )
}

/// Wait until the peer closes `stream` (EOF or reset), within `limit`; panics with `what`.
async fn until_closed(stream: &mut (impl AsyncRead + Unpin), limit: Duration, what: &str) {
    let read = async {
        let mut chunk = [0u8; 1024];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    };
    tokio::time::timeout(limit, read)
        .await
        .unwrap_or_else(|_| panic!("{what} was still open after {limit:?}"));
}

/// Start a gateway from `yaml` (keys and relative paths resolved in `dir`).
async fn start_app(dir: &Path, yaml: &str) -> App {
    let settings = Settings::from_yaml(yaml, "test.yaml", dir)
        .unwrap_or_else(|errors| panic!("test config should be valid:\n{errors}"));
    let (keys, _) = load_signing_keys(&settings, MissingKeys::Fail).unwrap();
    App::start(settings, keys, None).await.expect("starts")
}

#[tokio::test]
async fn silent_connections_of_every_kind_are_closed_and_real_requests_still_get_through() {
    let header_read_timeout = Duration::from_secs(1);
    let yaml = format!(
        "{}limits:\n  max_connections: 4\n  header_read_timeout: 1s\n",
        gateway_config()
    );
    let gateway = TestGateway::start_with(&yaml).await;
    let addr = gateway.app().gateway_addr();
    let metrics = Arc::clone(gateway.app().metrics());

    // Fill the cap: nothing at all; one byte of a possible HTTP/2 preface; half a preface;
    // a whole preface and SETTINGS, then silence.
    let mut silent = Vec::new();
    let opened = Instant::now();
    for (kind, bytes) in [
        ("nothing", &b""[..]),
        ("one byte `P`", b"P"),
        ("half an HTTP/2 preface", &H2_PREFACE[..12]),
        (
            "an HTTP/2 preface and SETTINGS",
            &[H2_PREFACE, H2_SETTINGS].concat()[..],
        ),
    ] {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(bytes).await.unwrap();
        silent.push((kind, stream));
    }
    wait_for("the gateway to hold every silent connection", async || {
        open_connections(&metrics) == 4.0
    })
    .await;

    // The cap is full of connections that will never send a request, yet a viewer and a
    // health check are served: each evicts the oldest silent one.
    let watch = get(&gateway.url("/watch/intro")).await;
    assert_eq!(watch.status.as_u16(), 302, "{}", watch.text());
    assert_eq!(get(&gateway.url("/healthz")).await.status.as_u16(), 200);
    assert_eq!(gateway.app().refused_connections(), 0);

    // Whatever each one started as, it is closed within the header timeout.
    for (kind, stream) in &mut silent {
        until_closed(stream, header_read_timeout + SLACK, kind).await;
    }
    assert!(opened.elapsed() < header_read_timeout + SLACK);
    wait_for("every close to be counted", async || {
        let evicted = closed_for(&metrics, "evicted");
        let timed_out = closed_for(&metrics, "header_timeout");
        (evicted >= 1.0 && evicted + timed_out == 4.0)
            .then_some(())
            .ok_or(format!("evicted {evicted}, header_timeout {timed_out}"))
    })
    .await;
    wait_for("no connection left open", async || {
        open_connections(&metrics) == 0.0
    })
    .await;
    gateway.shutdown().await;
}

#[tokio::test]
async fn tls_connections_that_say_nothing_after_the_handshake_are_closed() {
    let header_read_timeout = Duration::from_secs(1);
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("silent");
    let cert = ca.issue();
    std::fs::write(dir.path().join("cert.pem"), &cert.chain_pem).unwrap();
    std::fs::write(dir.path().join("key.pem"), &cert.key_pem).unwrap();
    let yaml = format!(
        "{}tls:\n  cert: cert.pem\n  key: key.pem\nlimits:\n  max_connections: 3\n  header_read_timeout: 1s\n",
        gateway_config()
    );
    let app = start_app(dir.path(), &yaml).await;
    let addr = app.gateway_addr();
    let metrics = Arc::clone(app.metrics());

    // Handshakes completed (offering HTTP/2, HTTP/1.1 and nothing), then silence.
    let mut silent = Vec::new();
    for alpn in [&[&b"h2"[..]][..], &[b"http/1.1"], &[]] {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let stream = tokio_rustls::TlsConnector::from(ca.client_config(alpn))
            .connect(name, tcp)
            .await
            .expect("the handshake completes");
        silent.push((format!("TLS with ALPN {alpn:?}"), stream));
    }
    wait_for("the gateway to hold every silent connection", async || {
        open_connections(&metrics) == 3.0
    })
    .await;
    let opened = Instant::now();

    let mut client = TlsConnection::connect(addr, ca.client_config(&[b"h2"]))
        .await
        .unwrap();
    assert_eq!(client.get("/healthz").await.1.status.as_u16(), 200);

    for (kind, stream) in &mut silent {
        until_closed(stream, header_read_timeout + SLACK, kind).await;
    }
    assert!(opened.elapsed() < header_read_timeout + SLACK);
    drop(client);
    app.shutdown().await;
}

struct Hello;

impl Handler for Hello {
    async fn handle(&self, _req: Request<Incoming>, _peer: SocketAddr) -> Response<Body> {
        Response::new(Body::new(Bytes::from_static(b"hello")))
    }
}

/// Tells the test that a request has arrived, then answers once the test releases it.
struct Held {
    arrived: mpsc::UnboundedSender<()>,
    release: watch::Receiver<bool>,
}

impl Handler for Held {
    async fn handle(&self, _req: Request<Incoming>, _peer: SocketAddr) -> Response<Body> {
        let _ = self.arrived.send(());
        let mut release = self.release.clone();
        let _ = tokio::time::timeout(Duration::from_secs(20), release.wait_for(|go| *go)).await;
        Response::new(Body::new(Bytes::from_static(b"finished")))
    }
}

/// Serve `handler` with `limits` on a loopback port until the returned sender is dropped.
async fn serve<H: Handler>(
    handler: H,
    limits: Limits,
    metrics: &Arc<Metrics>,
) -> (
    SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    Arc<std::sync::atomic::AtomicU64>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let connections = ConnectionBuilder::with_limits(&limits).observed_by(Arc::clone(metrics));
    let refused = connections.refused_counter();
    tokio::spawn(serve_with(
        listener,
        Arc::new(handler),
        connections,
        async {
            let _ = stopped.await;
        },
    ));
    (addr, stop, refused)
}

#[tokio::test]
async fn at_the_cap_with_every_connection_busy_a_new_one_is_refused_and_counted() {
    let (arrived, mut arrivals) = mpsc::unbounded_channel();
    let (release, held) = watch::channel(false);
    let metrics = Metrics::new();
    let limits = Limits {
        max_connections: 1,
        ..Limits::default()
    };
    let (addr, _stop, refused) = serve(
        Held {
            arrived,
            release: held,
        },
        limits,
        &metrics,
    )
    .await;
    let url = format!("http://{addr}/");
    let busy = tokio::spawn(async move { get(&url).await });
    tokio::time::timeout(Duration::from_secs(10), arrivals.recv())
        .await
        .expect("the request reaches the handler");

    let mut turned_away = TcpStream::connect(addr).await.unwrap();
    until_closed(
        &mut turned_away,
        Duration::from_secs(5),
        "the connection over the cap",
    )
    .await;
    assert_eq!(refused.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert_eq!(
        sample(&metrics, "streamgate_connections_refused_total"),
        1.0
    );
    assert_eq!(
        closed_for(&metrics, "evicted"),
        0.0,
        "a busy one is never evicted"
    );

    release.send(true).unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), busy)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.text(), "finished");
}

#[tokio::test]
async fn idle_keep_alive_connections_close_after_the_idle_timeout_not_the_header_timeout() {
    let metrics = Metrics::new();
    let idle_timeout = Duration::from_secs(2);
    let limits = Limits {
        header_read_timeout: Duration::from_millis(500),
        idle_timeout,
        ..Limits::default()
    };
    let (addr, _stop, _) = serve(Hello, limits, &metrics).await;

    // HTTP/1.1: served once, then idle.
    let mut http1 = TcpStream::connect(addr).await.unwrap();
    http1
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let n = http1.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).ends_with("hello"));
    let idle_from = Instant::now();

    // HTTP/2 with prior knowledge: one stream, then no open stream.
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    let http2 = tokio::spawn(conn);
    let request = Request::get(format!("http://{addr}/"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(
        response.into_body().collect().await.unwrap().to_bytes(),
        "hello"
    );
    let h2_idle_from = Instant::now();

    until_closed(
        &mut http1,
        idle_timeout + SLACK,
        "the idle HTTP/1.1 connection",
    )
    .await;
    let waited = idle_from.elapsed();
    assert!(
        waited >= idle_timeout - Duration::from_millis(100),
        "closed at {waited:?}, before the idle timeout"
    );
    tokio::time::timeout(idle_timeout + SLACK, http2)
        .await
        .expect("the idle HTTP/2 connection is closed")
        .unwrap()
        .expect("closed with a GOAWAY, not an error");
    assert!(h2_idle_from.elapsed() >= idle_timeout - Duration::from_millis(100));
    wait_for("both idle closes to be counted", async || {
        closed_for(&metrics, "idle_timeout") == 2.0
    })
    .await;
}
