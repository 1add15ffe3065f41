//! The server's limit on the time a service takes to answer (`ServerOptions::answer_timeout`),
//! over real sockets: a request not answered within the limit is marked overdue and its
//! connection's task woken, with no timer of the service's own; each request's limit counts
//! from its own head.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::task::Poll;
use std::time::Duration;

use demo_common::server::{ConnectionClock, Server, ServerOptions};
use hyper::body::Incoming;
use hyper::{Request, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

const LIMIT: Duration = Duration::from_millis(400);
/// How long `/in-time` takes to answer: most of the limit.
const IN_TIME: Duration = Duration::from_millis(300);
/// Bound on any one wait of the test.
const BOUND: Duration = Duration::from_secs(10);

/// A server with the short answer limit. `/overdue` waits for nothing but the clock saying the
/// request is overdue (the watchdog's wake is all that polls it again) and answers `overdue`;
/// `/in-time` answers after [`IN_TIME`], `late` if the clock says it is overdue by then, else
/// `in time`.
async fn start() -> SocketAddr {
    let options = ServerOptions {
        answer_timeout: Some(LIMIT),
        ..ServerOptions::default()
    };
    let server = Server::bind(SocketAddr::from(([127, 0, 0, 1], 0)), options)
        .await
        .expect("bind 127.0.0.1:0");
    let address = server.local_addr().expect("bound address");
    let make_service = |_peer, clock: ConnectionClock| {
        tower::service_fn(move |request: Request<Incoming>| {
            let clock = clock.clone();
            async move {
                let text = match request.uri().path() {
                    "/overdue" => {
                        std::future::poll_fn(|_| match clock.answer_overdue() {
                            true => Poll::Ready(()),
                            false => Poll::Pending,
                        })
                        .await;
                        "overdue"
                    }
                    _ => {
                        tokio::time::sleep(IN_TIME).await;
                        if clock.answer_overdue() {
                            "late"
                        } else {
                            "in time"
                        }
                    }
                };
                Ok::<_, Infallible>(Response::new(format!("{text}\n")))
            }
        })
    };
    tokio::spawn(server.serve_connections(make_service, std::future::pending()));
    address
}

/// Sends a keep-alive `GET path` and returns the answer's body, and how long it took.
async fn call(stream: &mut TcpStream, path: &str) -> (String, Duration) {
    let asked = Instant::now();
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    let mut buffer = [0; 1024];
    while !answer.ends_with(b"\n") || !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let read = tokio::time::timeout(BOUND, stream.read(&mut buffer))
            .await
            .expect("answer timed out")
            .expect("read");
        assert_ne!(read, 0, "closed before answering {path}: {answer:?}");
        answer.extend_from_slice(&buffer[..read]);
    }
    let took = asked.elapsed();
    let answer = String::from_utf8(answer).expect("a text answer");
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer:?}");
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    (body.to_owned(), took)
}

async fn connect(address: SocketAddr) -> TcpStream {
    tokio::time::timeout(BOUND, TcpStream::connect(address))
        .await
        .expect("connect timed out")
        .expect("connect")
}

#[tokio::test]
async fn a_request_unanswered_at_the_limit_is_marked_overdue_and_its_task_woken() {
    let mut stream = connect(start().await).await;
    let (body, took) = call(&mut stream, "/overdue").await;
    assert_eq!(body, "overdue\n");
    assert!(
        took >= LIMIT,
        "overdue after {took:?}, before the limit {LIMIT:?}"
    );
}

#[tokio::test]
async fn each_requests_limit_counts_from_its_own_head() {
    let mut stream = connect(start().await).await;
    // Most of a limit spent on the first request: were the second one's limit counted from
    // the first (or from the connection), it would be overdue well before a limit of its own.
    let (body, took) = call(&mut stream, "/in-time").await;
    assert_eq!(body, "in time\n", "answered after {took:?}");
    let (body, took) = call(&mut stream, "/overdue").await;
    assert_eq!(body, "overdue\n");
    assert!(
        took >= LIMIT,
        "overdue after {took:?}, before the limit {LIMIT:?}"
    );
}
