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
    let (addr, _stop) = start(Duration::from_secs(1)).await;
    let mut client = TcpStream::connect(addr).await.unwrap();
    // Three requests spread over more than the timeout, each head sent promptly.
    for _ in 0..3 {
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 512];
        let n = tokio::time::timeout(Duration::from_secs(5), client.read(&mut buf))
            .await
            .expect("a response")
            .unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).ends_with("hello"));
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
}

struct Slow;

impl Handler for Slow {
    async fn handle(&self, _req: Request<Incoming>, _peer: SocketAddr) -> Response<Body> {
        tokio::time::sleep(Duration::from_millis(500)).await;
        Response::new(Body::new(Bytes::from_static(b"finished")))
    }
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish_then_stops() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve_with(
        listener,
        Arc::new(Slow),
        ConnectionBuilder::new(),
        async {
            let _ = stopped.await;
        },
    ));
    // An idle keep-alive connection must not hold shutdown up.
    let _idle = TcpStream::connect(addr).await.unwrap();
    let url = format!("http://{addr}/");
    let in_flight = tokio::spawn(async move { common::get(&url).await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    stop.send(()).unwrap();

    let response = in_flight.await.unwrap();
    assert_eq!(response.text(), "finished");
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("serve returns once in-flight requests are done")
        .unwrap();
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}
