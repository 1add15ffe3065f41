//! The server's limit on the time a client may take to send each request head, over real
//! sockets: a head that never completes is cut at the limit; an answer that takes longer than
//! the limit to make, or to read, is not, nor a request body read after its answer; the limit
//! starts again after every answer.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use demo_common::server::{ConnectionClock, Server, ServerOptions};
use http_body::Body;
use hyper::body::Incoming;
use hyper::{Request, Response};
use std::pin::Pin;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;

const LIMIT: Duration = Duration::from_millis(500);
/// How long `/slow` takes to answer: three limits.
const SLOW: Duration = Duration::from_millis(1500);
/// The size of `/large`'s answer: more than the kernel's socket buffers hold (4 MiB at most by
/// default), so hyper still holds part of it while the client reads slowly.
const LARGE: usize = 12 << 20;
/// Bound on any one wait of the test.
const BOUND: Duration = Duration::from_secs(10);
const ANSWER: &str = "answered\n";

/// A server with the short limit: `/slow` answers after [`SLOW`], `/large` with [`LARGE`] bytes,
/// anything else at once.
async fn start() -> SocketAddr {
    let server = bind().await;
    let address = server.local_addr().expect("bound address");
    let service = tower::service_fn(|request: Request<hyper::body::Incoming>| async move {
        match request.uri().path() {
            "/slow" => tokio::time::sleep(SLOW).await,
            "/large" => return Ok(Response::new("x".repeat(LARGE - ANSWER.len()) + ANSWER)),
            _ => {}
        }
        Ok::<_, Infallible>(Response::new(ANSWER.to_owned()))
    });
    tokio::spawn(server.serve(service, std::future::pending()));
    address
}

async fn bind() -> Server {
    let options = ServerOptions {
        header_read_timeout: LIMIT,
        ..ServerOptions::default()
    };
    Server::bind(SocketAddr::from(([127, 0, 0, 1], 0)), options)
        .await
        .expect("bind 127.0.0.1:0")
}

/// A server with the short limit that answers at once and reads each request's body afterwards
/// in a task of its own, holding the connection busy while it does (as the proxy does when an
/// upstream answers before it has the whole upload); the byte count of each body comes out of
/// the channel.
async fn start_reading_bodies_after_answering() -> (SocketAddr, mpsc::UnboundedReceiver<usize>) {
    let server = bind().await;
    let address = server.local_addr().expect("bound address");
    let (counted, counts) = mpsc::unbounded_channel();
    let make_service = move |_peer, clock: ConnectionClock| {
        let counted = counted.clone();
        hyper::service::service_fn(move |request: Request<Incoming>| {
            let reading = clock.body_reading();
            let counted = counted.clone();
            tokio::spawn(async move {
                let _reading = reading;
                let mut body = request.into_body();
                let mut count = 0;
                // To the last byte (hyper says the end of a body of known length only once it
                // reads the connection again).
                while !body.is_end_stream() {
                    match std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
                        Some(Ok(frame)) => count += frame.data_ref().map_or(0, |data| data.len()),
                        _ => break,
                    }
                }
                let _ = counted.send(count);
            });
            async { Ok::<_, Infallible>(Response::new(ANSWER.to_owned())) }
        })
    };
    tokio::spawn(server.serve_connections(make_service, std::future::pending()));
    (address, counts)
}

async fn connect(address: SocketAddr) -> TcpStream {
    tokio::time::timeout(BOUND, TcpStream::connect(address))
        .await
        .expect("connect timed out")
        .expect("connect")
}

/// Sends a keep-alive `GET path` and reads its whole answer.
async fn call(stream: &mut TcpStream, path: &str) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let answer = read_answer(stream, path).await;
    assert!(answer.starts_with(b"HTTP/1.1 200 OK\r\n"), "{answer:?}");
}

/// Reads one whole answer to the request for `path` (it ends with [`ANSWER`]).
async fn read_answer(stream: &mut TcpStream, path: &str) -> Vec<u8> {
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
    answer
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
    // answer has left, a moment before it is read here: hence the margin.)
    let answered = Instant::now();
    let rest = until_closed(&mut stream).await;
    let idle = answered.elapsed();
    assert!(rest.is_empty(), "an idle connection got {rest:?}");
    assert!(
        idle >= LIMIT / 2,
        "an idle connection was cut after {idle:?}, well before the limit {LIMIT:?}"
    );
}

#[tokio::test]
async fn a_connection_used_for_longer_than_the_limit_stays_open_while_its_heads_are_prompt() {
    let address = start().await;
    let mut stream = connect(address).await;
    let opened = Instant::now();
    // Ten calls a third of the limit apart: the connection outlives three limits.
    for _ in 0..10 {
        call(&mut stream, "/").await;
        tokio::time::sleep(LIMIT / 3).await;
    }
    call(&mut stream, "/").await;
    assert!(opened.elapsed() >= LIMIT * 3);
}

#[tokio::test]
async fn a_client_reading_a_large_answer_slowly_gets_all_of_it() {
    let address = start().await;
    // A small receive window, so the answer waits in the server rather than in this socket.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(64 << 10).expect("SO_RCVBUF");
    let mut stream = tokio::time::timeout(BOUND, socket.connect(address))
        .await
        .expect("connect timed out")
        .expect("connect");
    let asked = Instant::now();
    stream
        .write_all(b"GET /large HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    // About 64 KiB every 10 ms: the answer takes well over two limits to read.
    let mut answer = Vec::with_capacity(LARGE + 1024);
    let mut buffer = vec![0; 64 << 10];
    loop {
        let read = tokio::time::timeout(BOUND, stream.read(&mut buffer))
            .await
            .expect("the answer stalled")
            .expect("read");
        if read == 0 {
            break;
        }
        answer.extend_from_slice(&buffer[..read]);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let took = asked.elapsed();
    assert!(
        took >= LIMIT * 2,
        "read in {took:?}: not slow enough to test anything"
    );
    let head_end = answer
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .expect("an answer head");
    let body = &answer[head_end + 4..];
    assert_eq!(body.len(), LARGE, "the answer was cut after {took:?}");
    assert!(body.ends_with(ANSWER.as_bytes()));
}

#[tokio::test]
async fn a_request_body_read_after_its_answer_is_not_cut() {
    let (address, mut counts) = start_reading_bodies_after_answering().await;
    let mut stream = connect(address).await;
    stream
        .write_all(b"POST /upload HTTP/1.1\r\nHost: test\r\nContent-Length: 6\r\n\r\nx")
        .await
        .expect("write");
    read_answer(&mut stream, "/upload").await;
    // The rest of the body, a byte every half limit: it ends well over two limits after the
    // answer went out.
    for _ in 0..5 {
        tokio::time::sleep(LIMIT / 2).await;
        stream.write_all(b"x").await.expect("the upload was cut");
    }
    let count = tokio::time::timeout(BOUND, counts.recv())
        .await
        .expect("the body was never counted")
        .expect("the server is gone");
    assert_eq!(count, 6, "the body was cut after its answer");
}
