//! Listeners and connections: one accept loop shared by the gateway and the emulator.
//!
//! Each accepted connection is served by hyper-util's auto builder (HTTP/1.1 and HTTP/2 with
//! prior knowledge), its life watched by [`crate::http::connections`]: a connection that has
//! not sent a complete request head within `header_read_timeout` is closed, whatever it
//! started as, and so is one idle for `idle_timeout`. At the connection cap the connection
//! idle the longest is evicted to admit a new one; when every connection is busy the new one
//! is refused and counted. [`serve_tls`] does the same after a TLS handshake (with its own
//! deadline), speaking whichever protocol ALPN chose.
//!
//! Shutdown has two steps. Draining (see [`ConnectionBuilder::draining_on`]): the listener
//! still accepts, HTTP/1 responses carry `Connection: close` and HTTP/2 connections are sent
//! GOAWAY, so clients move to other replicas without losing a request. Stopping: the listener
//! closes, idle connections close, and in-flight requests get [`Limits::shutdown_deadline`].

use std::cell::Cell;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::CONNECTION;
use http::{HeaderValue, Version};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_rustls::TlsAcceptor;

use crate::Body;
use crate::body::BoxError;
use crate::http::connections::{Connection, ConnectionTable, InFlight, Phase};
use crate::metrics::Metrics;

/// How long a client may take to send a complete request head (slow-loris guard), counted
/// from accept (or the end of the TLS handshake) for the first request and from its first
/// byte for later ones on HTTP/1.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection with nothing in flight is kept open: longer than the idle timeout of
/// the load balancers in front, so that they, not the gateway, close idle connections.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(75);
/// Largest request head accepted on HTTP/1.1, in bytes; larger heads get 431.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// How long the listener keeps serving after SIGTERM, with `/readyz` at 503, so that load
/// balancers stop sending new connections before it closes.
pub const SHUTDOWN_DRAIN: Duration = Duration::from_secs(5);
/// How long in-flight requests may run once the listener has closed.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How long a client may take to complete the TLS handshake, so that slow or silent
/// handshakes cannot pin connections.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; beyond it the oldest idle one is evicted, or the new one is
/// closed when none is idle.
pub const MAX_CONNECTIONS: usize = 10_000;
/// HTTP/2 streams one connection may have open.
pub const H2_MAX_CONCURRENT_STREAMS: u32 = 256;
/// HTTP/2 keep-alive: a PING after this long without a frame from the client, and the
/// connection is closed when its answer takes longer than the same again.
pub const H2_KEEP_ALIVE: Duration = Duration::from_secs(20);
/// How long a connection the server decided to close (idle, silent, evicted) may take over
/// it, e.g. an HTTP/2 GOAWAY exchange, before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// How long a connection admitted by evicting an idle one waits for that one's slot.
const ADMIT_WAIT: Duration = Duration::from_secs(2);

/// Connection-level limits, all configurable (`limits:` in the configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Time to a complete request head (see [`HEADER_READ_TIMEOUT`]).
    pub header_read_timeout: Duration,
    /// How long a connection with nothing in flight stays open.
    pub idle_timeout: Duration,
    /// HTTP/1.1 request head size; larger gets 431.
    pub max_header_bytes: usize,
    pub h2_max_concurrent_streams: u32,
    /// Connections served at once.
    pub max_connections: usize,
    /// How long the listener keeps serving after SIGTERM (`/readyz` 503, connections asked
    /// to close).
    pub shutdown_drain: Duration,
    /// How long in-flight requests may finish once the listener has closed.
    pub shutdown_deadline: Duration,
    pub tls_handshake_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read_timeout: HEADER_READ_TIMEOUT,
            idle_timeout: IDLE_TIMEOUT,
            max_header_bytes: MAX_HEADER_BYTES,
            h2_max_concurrent_streams: H2_MAX_CONCURRENT_STREAMS,
            max_connections: MAX_CONNECTIONS,
            shutdown_drain: SHUTDOWN_DRAIN,
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

/// Per-connection settings shared by every listener: the connection lifecycle (head and idle
/// deadlines, the cap, draining), HTTP/1.1 head size, HTTP/2 stream limit and keep-alive
/// pings, and over TLS a handshake deadline.
///
/// Create it inside a tokio runtime: it runs the deadline ticker until dropped.
pub struct ConnectionBuilder {
    template: auto::Builder<TokioExecutor>,
    table: Arc<ConnectionTable>,
    ticker: tokio::task::JoinHandle<()>,
    handshake_timeout: Duration,
    connections: Arc<Semaphore>,
    refused: Arc<AtomicU64>,
    shutdown_deadline: Duration,
    metrics: Option<Arc<Metrics>>,
    drain: Option<watch::Receiver<bool>>,
}

impl ConnectionBuilder {
    /// The default settings ([`Limits::default`]).
    pub fn new() -> Self {
        Self::with_limits(&Limits::default())
    }

    /// Settings with a given header-read timeout (fires up to
    /// [`crate::http::connections::TICK`] late).
    pub fn with_header_read_timeout(header_read_timeout: Duration) -> Self {
        Self::with_limits(&Limits {
            header_read_timeout,
            ..Limits::default()
        })
    }

    /// Settings from `limits`.
    pub fn with_limits(limits: &Limits) -> Self {
        let mut template = auto::Builder::new(TokioExecutor::new());
        // No hyper header timer: the connection table times heads, on every protocol, and
        // lets an idle HTTP/1 connection wait for `idle_timeout` rather than for a head.
        template
            .http1()
            // hyper's smallest buffer is 8 KiB.
            .max_buf_size(limits.max_header_bytes.max(8192));
        template
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(limits.h2_max_concurrent_streams)
            .keep_alive_interval(H2_KEEP_ALIVE)
            .keep_alive_timeout(H2_KEEP_ALIVE);
        let table = ConnectionTable::new(limits.header_read_timeout, limits.idle_timeout);
        let ticker = tokio::spawn(Arc::clone(&table).run());
        Self {
            template,
            table,
            ticker,
            handshake_timeout: limits.tls_handshake_timeout,
            connections: Arc::new(Semaphore::new(limits.max_connections.max(1))),
            refused: Arc::new(AtomicU64::new(0)),
            shutdown_deadline: limits.shutdown_deadline,
            metrics: None,
            drain: None,
        }
    }

    /// Count open, refused and closed connections in `metrics`.
    pub fn observed_by(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Start draining once `drain` turns true: keep accepting, but answer HTTP/1 requests
    /// with `Connection: close` and send HTTP/2 connections GOAWAY.
    pub fn draining_on(mut self, drain: watch::Receiver<bool>) -> Self {
        self.drain = Some(drain);
        self
    }

    /// A counter of connections closed on accept because [`Limits::max_connections`] were
    /// already open and none was idle.
    pub fn refused_counter(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.refused)
    }

    /// These settings with another TLS handshake deadline (default [`TLS_HANDSHAKE_TIMEOUT`]).
    pub fn with_tls_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    fn refuse(&self, peer: SocketAddr) {
        count_refused(&self.refused, self.metrics.as_deref(), peer);
    }
}

fn count_refused(refused: &AtomicU64, metrics: Option<&Metrics>, peer: SocketAddr) {
    refused.fetch_add(1, Ordering::Relaxed);
    if let Some(metrics) = metrics {
        metrics.connection_refused();
    }
    tracing::debug!(%peer, "connection refused: too many open connections, none idle");
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

/// How a connection accepted over the cap gets its slot: at once, or once the idle
/// connection evicted for it has closed.
enum Admission {
    Now(tokio::sync::OwnedSemaphorePermit),
    AfterEviction(Arc<Semaphore>),
}

async fn accept_loop<H: Handler>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    handler: Arc<H>,
    connections: ConnectionBuilder,
    shutdown: impl Future<Output = ()>,
) {
    // Every connection task holds a sender: once all are gone, the receiver sees the end.
    let (alive, mut all_closed) = mpsc::channel::<()>(1);
    // Handshakes still in progress are abandoned at shutdown, not waited for.
    let (stopping, stop_handshakes) = watch::channel(false);
    let mut drain = connections.drain.clone();
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
            () = drain_started(&mut drain) => {
                drain = None;
                connections.table.set_phase(Phase::Draining);
                continue;
            }
        };
        let admission = match Arc::clone(&connections.connections).try_acquire_owned() {
            Ok(permit) => Admission::Now(permit),
            Err(_) if connections.table.evict_oldest_idle() => {
                Admission::AfterEviction(Arc::clone(&connections.connections))
            }
            // Every connection is busy: close at once, before any TLS or HTTP work.
            Err(_) => {
                connections.refuse(peer);
                drop(stream);
                continue;
            }
        };
        // Small responses (redirects) should leave at once, not wait for Nagle.
        let _ = stream.set_nodelay(true);
        let task = ConnectionTask {
            builder: connections.template.clone(),
            table: Arc::clone(&connections.table),
            metrics: connections.metrics.clone(),
            refused: Arc::clone(&connections.refused),
            handler: Arc::clone(&handler),
            peer,
            _alive: alive.clone(),
        };
        let tls = tls.clone().map(|acceptor| TlsStart {
            acceptor,
            timeout: connections.handshake_timeout,
            stop: stop_handshakes.clone(),
        });
        tokio::spawn(task.run(stream, admission, tls));
    }

    drop(listener);
    let _ = stopping.send(true);
    connections.table.set_phase(Phase::Stopping);
    drop(alive);
    if tokio::time::timeout(connections.shutdown_deadline, all_closed.recv())
        .await
        .is_err()
    {
        tracing::warn!("in-flight requests did not finish within the shutdown grace period");
    }
}

/// Resolves once `drain` turns true; never when there is none (or its sender is gone).
async fn drain_started(drain: &mut Option<watch::Receiver<bool>>) {
    if let Some(drain) = drain
        && drain.wait_for(|draining| *draining).await.is_ok()
    {
        return;
    }
    std::future::pending().await
}

/// A TLS handshake to make before serving.
struct TlsStart {
    acceptor: TlsAcceptor,
    timeout: Duration,
    stop: watch::Receiver<bool>,
}

/// One accepted connection, from admission to close.
struct ConnectionTask<H> {
    builder: auto::Builder<TokioExecutor>,
    table: Arc<ConnectionTable>,
    metrics: Option<Arc<Metrics>>,
    refused: Arc<AtomicU64>,
    handler: Arc<H>,
    peer: SocketAddr,
    _alive: mpsc::Sender<()>,
}

impl<H: Handler> ConnectionTask<H> {
    async fn run(self, stream: tokio::net::TcpStream, admission: Admission, tls: Option<TlsStart>) {
        let peer = self.peer;
        let permit = match admission {
            Admission::Now(permit) => permit,
            Admission::AfterEviction(slots) => {
                match tokio::time::timeout(ADMIT_WAIT, slots.acquire_owned()).await {
                    Ok(Ok(permit)) => permit,
                    // The evicted connection became busy again and kept its slot.
                    _ => {
                        count_refused(&self.refused, self.metrics.as_deref(), peer);
                        return;
                    }
                }
            }
        };
        let _open = OpenConnection::new(permit, self.metrics.clone());
        let Some(tls) = tls else {
            let connection = self.table.open();
            self.serve(connection, stream, self.builder.clone()).await;
            return;
        };
        let mut stop = tls.stop;
        let handshake = tokio::time::timeout(tls.timeout, tls.acceptor.accept(stream));
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
            Some(b"h2") => self.builder.clone().http2_only(),
            Some(b"http/1.1") => self.builder.clone().http1_only(),
            _ => self.builder.clone(),
        };
        // The head deadline starts once the handshake (which has its own) is done.
        let connection = self.table.open();
        self.serve(connection, stream, builder).await;
    }

    /// Serve HTTP on one established connection until it closes, the server closes it (see
    /// [`Connection::close_reason`]) or shutdown completes it.
    async fn serve<I>(&self, connection: Connection, io: I, builder: auto::Builder<TokioExecutor>)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let peer = self.peer;
        let service = {
            let connection = connection.clone();
            // Each request's future owns a reference to the handler. Counted in an allocation
            // of this connection's own rather than in the handler's, which every connection
            // shares: a reference counted there per request is two atomic writes to one cache
            // line that the cores serving at once pass back and forth.
            let handler = Arc::new(Arc::clone(&self.handler));
            // The last request's future's box, when it was answered at once (see `Eager`).
            let spare = Cell::new(None);
            service_fn(move |req: Request<Incoming>| {
                let http2 = req.version() == Version::HTTP_2;
                let in_flight = connection.request_started(http2);
                let connection = connection.clone();
                let handler = Arc::clone(&handler);
                Eager::start(
                    async move {
                        let mut response = handler.handle(req, peer).await;
                        // Draining: this response is the connection's last (HTTP/2 is sent GOAWAY
                        // by the connection's task instead).
                        if !http2 && connection.phase() != Phase::Serving {
                            response
                                .headers_mut()
                                .insert(CONNECTION, HeaderValue::from_static("close"));
                        }
                        Ok::<_, Infallible>(response.map(|body| InFlightBody {
                            body,
                            _in_flight: in_flight,
                        }))
                    },
                    &spare,
                )
            })
        };
        let conn = builder.serve_connection(TokioIo::new(connection.watch(io)), service);
        tokio::pin!(conn);
        // Asked to close (GOAWAY sent, or HTTP/1 keep-alive off).
        let mut shut_down = false;
        // Closing on the server's own initiative: dropped if not closed by then.
        let mut close_by: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                ended = conn.as_mut() => {
                    if let Err(error) = ended {
                        tracing::debug!(%peer, %error, "connection ended with an error");
                    }
                    return;
                }
                () = connection.changed() => {}
                () = sleep_until(close_by) => {
                    tracing::debug!(%peer, "connection dropped: it did not close in time");
                    return;
                }
            }
            if close_by.is_none()
                && let Some(reason) = connection.close_reason()
            {
                tracing::debug!(%peer, reason = reason.label(), "closing connection");
                if let Some(metrics) = &self.metrics {
                    metrics.connection_closed_by_server(reason);
                }
                close_by = Some(tokio::time::Instant::now() + CLOSE_GRACE);
                if !shut_down {
                    shut_down = true;
                    conn.as_mut().graceful_shutdown();
                }
                continue;
            }
            let phase = connection.phase();
            let close_now = match phase {
                Phase::Serving => false,
                // HTTP/1 closes after its next response (`Connection: close`); closing an
                // idle one now would race a request the client may be sending.
                Phase::Draining => connection.is_http2(),
                Phase::Stopping => true,
            };
            if close_now && !shut_down {
                shut_down = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A request's future, polled once as soon as hyper hands over the request rather than when
/// hyper first polls it.
///
/// Between the two, hyper's HTTP/1 dispatcher reads from the socket to notice a client that
/// hangs up mid-request, and it reads into the buffer the request head was parsed from. While
/// the request (its path and header values are slices of that buffer) is alive, the buffer
/// cannot be reused and hyper allocates a fresh 8 KiB one, past the allocator's per-thread
/// cache, for every request on the connection. A cache hit is answered at its first poll, so
/// polling it here drops the request before that read. A request that is not answered at once
/// (a miss, a proxied request) is polled again, with the connection's waker, as soon as hyper
/// polls this future: a future may be polled with a new waker at any time.
enum Eager<F: Future> {
    Done(Option<F::Output>),
    Running(Pin<Box<F>>),
}

impl<F: Future> Eager<F> {
    /// Poll `future` once, in the box `spare` holds if any: a future answered at once leaves
    /// its box there for the connection's next request, so a connection of cache hits
    /// allocates it once (a request's future is a few KiB, past the allocator's per-thread
    /// cache). One still pending takes its box with it.
    fn start(future: F, spare: &Cell<Option<Pin<Box<F>>>>) -> Self {
        let mut boxed = match spare.take() {
            Some(mut boxed) => {
                boxed.as_mut().set(future);
                boxed
            }
            None => Box::pin(future),
        };
        match boxed
            .as_mut()
            .poll(&mut Context::from_waker(std::task::Waker::noop()))
        {
            Poll::Ready(output) => {
                spare.set(Some(boxed));
                Self::Done(Some(output))
            }
            Poll::Pending => Self::Running(boxed),
        }
    }
}

// The inner future is boxed, and the output is never pinned: only moved out.
impl<F: Future> Unpin for Eager<F> {}

impl<F: Future> Future for Eager<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        match self.get_mut() {
            Self::Done(output) => Poll::Ready(output.take().expect("polled after completion")),
            Self::Running(future) => future.as_mut().poll(cx),
        }
    }
}

/// A response body that keeps its connection busy until it is finished or dropped.
struct InFlightBody {
    body: Body,
    /// Held for its `Drop`.
    _in_flight: InFlight,
}

impl hyper::body::Body for InFlightBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// One open connection's slot under the cap; counted closed when dropped.
struct OpenConnection {
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    metrics: Option<Arc<Metrics>>,
}

impl OpenConnection {
    fn new(permit: tokio::sync::OwnedSemaphorePermit, metrics: Option<Arc<Metrics>>) -> Self {
        if let Some(metrics) = &metrics {
            metrics.connection_opened();
        }
        Self {
            permit: Some(permit),
            metrics,
        }
    }
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize};
    use std::task::Wake;

    use super::*;

    /// Counts its wakes.
    struct Counting(AtomicUsize);

    impl Wake for Counting {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_future_ready_at_once_runs_and_drops_what_it_holds_before_it_is_polled() {
        let held = Arc::new(());
        let ran = Arc::new(AtomicBool::new(false));
        let spare = Cell::new(None);
        let mut eager = Eager::start(
            {
                let held = Arc::clone(&held);
                let ran = Arc::clone(&ran);
                async move {
                    // Only borrowed: a capture the future never gives away.
                    assert_eq!(Arc::strong_count(&held), 2);
                    ran.store(true, Ordering::SeqCst);
                    7
                }
            },
            &spare,
        );
        assert!(ran.load(Ordering::SeqCst), "run when started");
        // The finished future, kept in its box for the next request, holds nothing.
        assert_eq!(
            Arc::strong_count(&held),
            1,
            "what it held is already dropped"
        );
        assert!(spare.take().is_some(), "its box is kept");
        let waker = Arc::new(Counting(AtomicUsize::new(0))).into();
        let polled = Pin::new(&mut eager).poll(&mut Context::from_waker(&waker));
        assert_eq!(polled, Poll::Ready(7));
    }

    #[test]
    fn a_pending_future_wakes_the_waker_it_was_polled_with_after_the_start() {
        let (send, receive) = tokio::sync::oneshot::channel::<u32>();
        let mut eager = Eager::start(
            async move { receive.await.unwrap_or(0) + 1 },
            &Cell::new(None),
        );
        assert!(matches!(eager, Eager::Running(_)), "pending at the start");
        let counting = Arc::new(Counting(AtomicUsize::new(0)));
        let waker = Arc::clone(&counting).into();
        let mut cx = Context::from_waker(&waker);
        assert_eq!(Pin::new(&mut eager).poll(&mut cx), Poll::Pending);
        send.send(41).unwrap();
        assert_eq!(
            counting.0.load(Ordering::SeqCst),
            1,
            "the later waker, not the start's, is woken"
        );
        assert_eq!(Pin::new(&mut eager).poll(&mut cx), Poll::Ready(42));
    }

    /// One request's future: answered at once, or when `wait` is sent.
    async fn request(wait: Option<tokio::sync::oneshot::Receiver<u32>>) -> u32 {
        match wait {
            Some(wait) => wait.await.unwrap_or(0),
            None => 1,
        }
    }

    /// Where the box `spare` holds is.
    fn address<F>(spare: &Cell<Option<Pin<Box<F>>>>) -> usize {
        let boxed = spare.take().expect("a box is left");
        let at = std::ptr::from_ref(&*boxed).addr();
        spare.set(Some(boxed));
        at
    }

    #[test]
    fn a_future_answered_at_once_leaves_its_box_for_the_next_and_a_pending_one_takes_it() {
        let spare = Cell::new(None);
        assert!(matches!(
            Eager::start(request(None), &spare),
            Eager::Done(Some(1))
        ));
        let first = address(&spare);
        assert!(matches!(
            Eager::start(request(None), &spare),
            Eager::Done(Some(1))
        ));
        assert_eq!(
            address(&spare),
            first,
            "the second request reused the first's box"
        );

        let (send, receive) = tokio::sync::oneshot::channel();
        let pending = Eager::start(request(Some(receive)), &spare);
        assert!(matches!(pending, Eager::Running(_)));
        assert!(
            spare.take().is_none(),
            "the pending request took the box with it"
        );
        drop(send);
    }
}
