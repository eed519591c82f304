//! The shared accept loop: slow clients are cut off, prompt ones are served.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use streamgate::Body;
use streamgate::http::server::{ConnectionBuilder, Handler, serve_with};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

struct Hello;

impl Handler for Hello {
    async fn handle(&self, _req: Request<Incoming>, _peer: SocketAddr) -> Response<Body> {
        Response::new(Body::new(Bytes::from_static(b"hello")))
    }
}

async fn start(header_read_timeout: Duration) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let connections = ConnectionBuilder::with_header_read_timeout(header_read_timeout);
    tokio::spawn(serve_with(listener, Arc::new(Hello), connections, async {
        let _ = stopped.await;
    }));
    (addr, stop)
}

#[tokio::test]
async fn slow_request_head_is_cut_off_after_the_header_timeout() {
    let (addr, _stop) = start(Duration::from_secs(1)).await;
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /x HTTP/1.1\r\nHost: a\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    // The server closes the connection (408 or plain close) instead of waiting forever.
    let read = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "a slow head must not hold the connection open"
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "closed too early: {waited:?}"
    );

    // Meanwhile and afterwards, a prompt client is served.
    let response = common::get(&format!("http://{addr}/")).await;
    assert_eq!(response.text(), "hello");
}

#[tokio::test]
async fn keep_alive_requests_each_get_a_fresh_header_deadline() {
    let header_read_timeout = Duration::from_secs(1);
    let (addr, _stop) = start(header_read_timeout).await;
    let mut client = TcpStream::connect(addr).await.unwrap();
    let connected = Instant::now();
    // A deadline armed when the connection opened would have fired by then, however late the
    // coarse header timer fires it.
    let outlived = header_read_timeout + streamgate::http::connections::TICK;
    // The idle time between requests is what this test is about (not a wait for an event):
    // each pause is well within one deadline, and together they outlast one.
    let pause = Duration::from_millis(600);
    for request in 1..=5 {
        let sent_at = connected.elapsed();
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 512];
        let n = tokio::time::timeout(Duration::from_secs(5), client.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no response to request {request}"))
            .unwrap();
        let response = String::from_utf8_lossy(&buf[..n]);
        assert!(
            response.ends_with("hello"),
            "request {request}, sent {sent_at:?} after connecting: {response:?}"
        );
        if sent_at > outlived {
            return;
        }
        tokio::time::sleep(pause).await;
    }
    panic!("five requests did not span {outlived:?}");
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
        // Bounded, so that a test failing before it releases the request still ends.
        let _ = tokio::time::timeout(Duration::from_secs(20), release.wait_for(|go| *go)).await;
        Response::new(Body::new(Bytes::from_static(b"finished")))
    }
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish_then_stops() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (arrived, mut arrivals) = mpsc::unbounded_channel();
    let (release, held) = watch::channel(false);
    let handler = Held {
        arrived,
        release: held,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve_with(
        listener,
        Arc::new(handler),
        ConnectionBuilder::new(),
        async {
            let _ = stopped.await;
        },
    ));
    // An idle keep-alive connection must not hold shutdown up.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    let url = format!("http://{addr}/");
    let in_flight = tokio::spawn(async move { common::get(&url).await });
    tokio::time::timeout(Duration::from_secs(10), arrivals.recv())
        .await
        .expect("the request reaches the handler")
        .expect("the handler is alive");
    stop.send(()).unwrap();

    // The listener closes; serve then waits for the held request (and only for it).
    common::wait_for("the listener to close", async || {
        TcpStream::connect(addr).await.is_err()
    })
    .await;
    assert!(
        !server.is_finished(),
        "serve returned while a request was in flight"
    );
    assert!(!in_flight.is_finished(), "the held request ended early");

    release.send(true).unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), in_flight)
        .await
        .expect("the released request completes")
        .unwrap();
    assert_eq!(response.text(), "finished");
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("serve returns once in-flight requests are done")
        .unwrap();
    let mut buf = [0u8; 16];
    let closed = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf))
        .await
        .expect("the idle connection is closed at shutdown");
    assert!(
        matches!(closed, Ok(0) | Err(_)),
        "the idle connection got {closed:?}"
    );
}
