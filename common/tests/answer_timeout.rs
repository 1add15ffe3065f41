//! The server's limit on the time a service takes to answer (`ServerOptions::answer_timeout`),
//! over real sockets: a request not answered within the limit is marked overdue and its
//! connection's task woken, with no timer of the service's own; each request's limit counts
//! from its own head.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::task::Poll;
use std::time::Duration;

use demo_common::server::{ConnectionClock, Server, ServerOptions};
use demo_testkit::raw_http::RawConnection;
use hyper::body::Incoming;
use hyper::{Request, Response};
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
        hyper::service::service_fn(move |request: Request<Incoming>| {
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
async fn call(connection: &mut RawConnection, path: &str) -> (String, Duration) {
    let asked = Instant::now();
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n");
    connection.write(request.as_bytes()).await.expect("write");
    let answer = connection.read_response(false).await.expect("an answer");
    assert_eq!(answer.status, 200, "{answer:?}");
    (answer.text(), asked.elapsed())
}

async fn connect(address: SocketAddr) -> RawConnection {
    RawConnection::connect(address, BOUND)
        .await
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
