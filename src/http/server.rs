//! Listeners and connections: one accept loop shared by the gateway and the emulator.
//!
//! Each accepted connection is served by hyper-util's auto builder (HTTP/1.1 and HTTP/2 with
//! prior knowledge), watched by a graceful-shutdown tracker so that in-flight requests finish
//! when the server is asked to stop. [`serve_tls`] does the same after a TLS handshake (with
//! its own deadline), speaking whichever protocol ALPN chose.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::http::header_timer::HeaderTimers;

use crate::Body;

/// How long a client may take to send a complete request head (slow-loris guard).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head accepted on HTTP/1.1, in bytes; larger heads get 431.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// How long in-flight requests may run after shutdown is requested.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How long a client may take to complete the TLS handshake, so that slow or silent
/// handshakes cannot pin connections.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more are closed as soon as they are accepted.
pub const MAX_CONNECTIONS: usize = 10_000;
/// HTTP/2 streams one connection may have open.
pub const H2_MAX_CONCURRENT_STREAMS: u32 = 256;

/// Connection-level limits, all configurable (`limits:` in the configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Slow-loris guard; also how long an idle keep-alive connection is kept.
    pub header_read_timeout: Duration,
    /// HTTP/1.1 request head size; larger gets 431.
    pub max_header_bytes: usize,
    pub h2_max_concurrent_streams: u32,
    /// Connections served at once; the excess is closed on accept and counted.
    pub max_connections: usize,
    /// How long in-flight requests may finish after SIGTERM.
    pub shutdown_deadline: Duration,
    pub tls_handshake_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read_timeout: HEADER_READ_TIMEOUT,
            max_header_bytes: MAX_HEADER_BYTES,
            h2_max_concurrent_streams: H2_MAX_CONCURRENT_STREAMS,
            max_connections: MAX_CONNECTIONS,
            shutdown_deadline: SHUTDOWN_GRACE,
            tls_handshake_timeout: TLS_HANDSHAKE_TIMEOUT,
        }
    }
}

/// Something that turns a request into a response. It never fails: errors are responses.
pub trait Handler: Send + Sync + 'static {
    /// Answer one request from `peer`.
    fn handle(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> impl Future<Output = Response<Body>> + Send;
}

/// Per-connection HTTP settings shared by every listener: HTTP/1.1 with a header-read
/// timeout (on a coarse per-connection timer, see [`crate::http::header_timer`]) and a head size
/// limit; HTTP/2 (prior knowledge) with a stream limit; over TLS, a handshake deadline.
///
/// Create it inside a tokio runtime: it runs the header-timeout ticker until dropped.
pub struct ConnectionBuilder {
    template: auto::Builder<TokioExecutor>,
    timers: Arc<HeaderTimers>,
    ticker: tokio::task::JoinHandle<()>,
    handshake_timeout: Duration,
    connections: Arc<tokio::sync::Semaphore>,
    refused: Arc<std::sync::atomic::AtomicU64>,
    shutdown_deadline: Duration,
    metrics: Option<Arc<crate::metrics::Metrics>>,
}

impl ConnectionBuilder {
    /// The default settings ([`Limits::default`]).
    pub fn new() -> Self {
        Self::with_limits(&Limits::default())
    }

    /// Settings with a given header-read timeout (fires up to [`crate::http::header_timer::TICK`]
    /// late).
    pub fn with_header_read_timeout(header_read_timeout: Duration) -> Self {
        Self::with_limits(&Limits {
            header_read_timeout,
            ..Limits::default()
        })
    }

    /// Settings from `limits`.
    pub fn with_limits(limits: &Limits) -> Self {
        let mut template = auto::Builder::new(TokioExecutor::new());
        template
            .http1()
            .header_read_timeout(limits.header_read_timeout)
            // hyper's smallest buffer is 8 KiB.
            .max_buf_size(limits.max_header_bytes.max(8192));
        template
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(limits.h2_max_concurrent_streams);
        let timers = HeaderTimers::new();
        let ticker = tokio::spawn(Arc::clone(&timers).run());
        Self {
            template,
            timers,
            ticker,
            handshake_timeout: limits.tls_handshake_timeout,
            connections: Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1))),
            refused: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            shutdown_deadline: limits.shutdown_deadline,
            metrics: None,
        }
    }

    /// Count open and refused connections in `metrics`.
    pub fn observed_by(mut self, metrics: Arc<crate::metrics::Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// A counter of connections closed on accept because [`Limits::max_connections`] were
    /// already open.
    pub fn refused_counter(&self) -> Arc<std::sync::atomic::AtomicU64> {
        Arc::clone(&self.refused)
    }

    /// These settings with another TLS handshake deadline (default [`TLS_HANDSHAKE_TIMEOUT`]).
    pub fn with_tls_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// The builder for one new connection, with that connection's header timer.
    pub fn for_connection(&self) -> auto::Builder<TokioExecutor> {
        let mut builder = self.template.clone();
        builder.http1().timer(self.timers.connection_timer());
        builder
    }
}

impl Default for ConnectionBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for ConnectionBuilder {
    fn drop(&mut self) {
        self.ticker.abort();
    }
}

/// Serve `handler` on `listener` until `shutdown` resolves, then stop accepting and give
/// in-flight requests up to [`SHUTDOWN_GRACE`] (or [`Limits::shutdown_deadline`]) to finish.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    shutdown: impl Future<Output = ()>,
) {
    serve_with(listener, handler, ConnectionBuilder::new(), shutdown).await;
}

/// [`serve`] with explicit per-connection settings.
pub async fn serve_with<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    connections: ConnectionBuilder,
    shutdown: impl Future<Output = ()>,
) {
    accept_loop(listener, None, handler, connections, shutdown).await;
}

/// [`serve`] over TLS with `tls` (see [`crate::http::tls::server_config`]): each connection gets
/// [`TLS_HANDSHAKE_TIMEOUT`] to finish its handshake, then HTTP/2 if ALPN chose `h2`,
/// HTTP/1.1 if it chose `http/1.1`, and either (detected) when the client offered no ALPN.
pub async fn serve_tls<H: Handler>(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    handler: Arc<H>,
    shutdown: impl Future<Output = ()>,
) {
    serve_tls_with(listener, tls, handler, ConnectionBuilder::new(), shutdown).await;
}

/// [`serve_tls`] with explicit per-connection settings.
pub async fn serve_tls_with<H: Handler>(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    handler: Arc<H>,
    connections: ConnectionBuilder,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = TlsAcceptor::from(tls);
    accept_loop(listener, Some(acceptor), handler, connections, shutdown).await;
}

async fn accept_loop<H: Handler>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    handler: Arc<H>,
    connections: ConnectionBuilder,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    // Handshakes still in progress are abandoned at shutdown, not waited for.
    let (stopping, stop_handshakes) = watch::channel(false);
    tokio::pin!(shutdown);

    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // Usually EMFILE/ENFILE: back off briefly instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Over the cap: close at once, before any TLS or HTTP work.
        let Ok(permit) = Arc::clone(&connections.connections).try_acquire_owned() else {
            connections
                .refused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if let Some(metrics) = &connections.metrics {
                metrics.connection_refused();
            }
            tracing::debug!(%peer, "connection refused: too many open connections");
            drop(stream);
            continue;
        };
        let permit = OpenConnection {
            permit: Some(permit),
            metrics: connections.metrics.clone(),
        };
        if let Some(metrics) = &permit.metrics {
            metrics.connection_opened();
        }
        // Small responses (redirects) should leave at once, not wait for Nagle.
        let _ = stream.set_nodelay(true);
        let handler = Arc::clone(&handler);
        let builder = connections.for_connection();
        let watcher = graceful.watcher();
        match &tls {
            None => {
                tokio::spawn(async move {
                    serve_connection(builder, TokioIo::new(stream), handler, peer, watcher).await;
                    drop(permit);
                });
            }
            Some(acceptor) => {
                let handshake =
                    tokio::time::timeout(connections.handshake_timeout, acceptor.accept(stream));
                let mut stop = stop_handshakes.clone();
                tokio::spawn(async move {
                    let stream = tokio::select! {
                        done = handshake => match done {
                            Ok(Ok(stream)) => stream,
                            Ok(Err(error)) => {
                                tracing::debug!(%peer, %error, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake timed out");
                                return;
                            }
                        },
                        _ = stop.wait_for(|stop| *stop) => return,
                    };
                    let builder = match stream.get_ref().1.alpn_protocol() {
                        Some(b"h2") => builder.http2_only(),
                        Some(b"http/1.1") => builder.http1_only(),
                        _ => builder,
                    };
                    serve_connection(builder, TokioIo::new(stream), handler, peer, watcher).await;
                    drop(permit);
                });
            }
        }
    }

    drop(listener);
    let _ = stopping.send(true);
    if tokio::time::timeout(connections.shutdown_deadline, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("in-flight requests did not finish within the shutdown grace period");
    }
}

/// One open connection's slot under the cap; counted closed when dropped.
struct OpenConnection {
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    metrics: Option<Arc<crate::metrics::Metrics>>,
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        // The slot first: once a close is counted, a new connection is accepted.
        drop(self.permit.take());
        if let Some(metrics) = &self.metrics {
            metrics.connection_closed();
        }
    }
}

/// Serve HTTP on one established connection until it closes or shutdown completes it.
async fn serve_connection<H, I>(
    builder: auto::Builder<TokioExecutor>,
    io: I,
    handler: Arc<H>,
    peer: SocketAddr,
    watcher: Watcher,
) where
    H: Handler,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = service_fn(move |req| {
        let handler = Arc::clone(&handler);
        async move { Ok::<_, Infallible>(handler.handle(req, peer).await) }
    });
    let conn = builder.serve_connection(io, service);
    if let Err(error) = watcher.watch(conn.into_owned()).await {
        tracing::debug!(%peer, %error, "connection ended with an error");
    }
}
