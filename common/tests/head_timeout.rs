//! The server's limit on the time a client may take to send each request head, over real
//! sockets: a head that never completes is cut at the limit, an answer that takes longer than
//! the limit is not, and the limit starts again after every answer.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use demo_common::server::{Server, ServerOptions};
use hyper::{Request, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

const LIMIT: Duration = Duration::from_millis(300);
/// How long `/slow` takes to answer: three limits.
const SLOW: Duration = Duration::from_millis(900);
/// Bound on any one wait of the test.
const BOUND: Duration = Duration::from_secs(10);
const ANSWER: &str = "answered\n";

/// A server with the short limit: `/slow` answers after [`SLOW`], anything else at once.
async fn start() -> SocketAddr {
    let options = ServerOptions {
        header_read_timeout: LIMIT,
        ..ServerOptions::default()
    };
    let server = Server::bind(SocketAddr::from(([127, 0, 0, 1], 0)), options)
        .await
        .expect("bind 127.0.0.1:0");
    let address = server.local_addr().expect("bound address");
    let service = tower::service_fn(|request: Request<hyper::body::Incoming>| async move {
        if request.uri().path() == "/slow" {
            tokio::time::sleep(SLOW).await;
        }
        Ok::<_, Infallible>(Response::new(ANSWER.to_owned()))
    });
    tokio::spawn(server.serve(service, std::future::pending()));
    address
}

async fn connect(address: SocketAddr) -> TcpStream {
    tokio::time::timeout(BOUND, TcpStream::connect(address))
        .await
        .expect("connect timed out")
        .expect("connect")
}

/// Sends a keep-alive `GET path` and reads its whole answer (it ends with [`ANSWER`]).
async fn call(stream: &mut TcpStream, path: &str) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    let mut buffer = [0; 1024];
    while !answer.ends_with(ANSWER.as_bytes()) {
        let read = tokio::time::timeout(BOUND, stream.read(&mut buffer))
            .await
            .expect("answer timed out")
            .expect("read");
        assert_ne!(read, 0, "closed before answering {path}: {answer:?}");
        answer.extend_from_slice(&buffer[..read]);
    }
    assert!(answer.starts_with(b"HTTP/1.1 200 OK\r\n"), "{answer:?}");
}

/// Reads until the server closes the connection; what it sent meanwhile.
async fn until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut rest = Vec::new();
    tokio::time::timeout(BOUND, stream.read_to_end(&mut rest))
        .await
        .expect("the connection was not closed")
        .expect("read");
    rest
}

#[tokio::test]
async fn a_head_that_never_completes_is_cut_at_the_limit_unanswered() {
    let address = start().await;
    let started = Instant::now();
    let mut stream = connect(address).await;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: te")
        .await
        .expect("write");
    let rest = until_closed(&mut stream).await;
    let held = started.elapsed();
    assert!(rest.is_empty(), "a half-sent request got {rest:?}");
    assert!(
        held >= LIMIT,
        "cut after {held:?}, before the limit {LIMIT:?}"
    );
}

#[tokio::test]
async fn an_answer_slower_than_the_limit_is_not_cut_and_the_limit_restarts_after_it() {
    let address = start().await;
    let mut stream = connect(address).await;
    let asked = Instant::now();
    call(&mut stream, "/slow").await;
    assert!(asked.elapsed() >= SLOW);
    // Idle from the answer on: closed at the limit. (The server starts counting when the
    // answer leaves, a moment before it is read here: hence the margin.)
    let answered = Instant::now();
    let rest = until_closed(&mut stream).await;
    let idle = answered.elapsed();
    assert!(rest.is_empty(), "an idle connection got {rest:?}");
    assert!(
        idle >= LIMIT - Duration::from_millis(50),
        "an idle connection was cut after {idle:?}, before the limit {LIMIT:?}"
    );
}

#[tokio::test]
async fn a_connection_used_for_longer_than_the_limit_stays_open_while_its_heads_are_prompt() {
    let address = start().await;
    let mut stream = connect(address).await;
    let opened = Instant::now();
    // Five calls two thirds of the limit apart: the connection outlives three limits.
    for _ in 0..5 {
        call(&mut stream, "/").await;
        tokio::time::sleep(LIMIT * 2 / 3).await;
    }
    call(&mut stream, "/").await;
    assert!(opened.elapsed() >= LIMIT * 3);
}
