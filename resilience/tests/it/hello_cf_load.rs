//! hello-cf, the real binary, holding many idle keep-alive connections while active callers
//! keep getting the greeting promptly; then SIGTERM with every connection still open: it
//! closes them and exits 0 well within its drain bound.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::support::{
    Connection, Exchange, Stdout, figure, loading, percentile, start_program, within,
};
use http::StatusCode;
use tokio::time::Instant;

const IDLE_CONNECTIONS: usize = 500;
const ACTIVE_CALLERS: usize = 16;
/// Short enough that the idle connections are reused before the server's 10s idle limit
/// (its header-read timeout) closes them, on a loaded machine too.
const ACTIVE_FOR: Duration = Duration::from_millis(2500);
const GREETING: &str = "Hello K8s, from CF v2 service!\n";
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Per request; far above what an answer takes, so only a starved server trips it.
const REQUEST_DEADLINE: Duration = Duration::from_secs(10);
const STEP: Duration = Duration::from_secs(60);

async fn greeted(connection: &mut Connection) -> Result<Duration, String> {
    let started = Instant::now();
    match connection
        .get("/", "hello-istio-v2.example", REQUEST_DEADLINE)
        .await
    {
        Exchange::Answered { status, body } if status == StatusCode::OK && body == GREETING => {
            Ok(started.elapsed())
        }
        other => Err(format!("{other:?}")),
    }
}

/// Opens `count` connections, each answered once and then left idle.
async fn open_idle(address: SocketAddr, count: usize) -> Vec<Connection> {
    let mut opening = tokio::task::JoinSet::new();
    for _ in 0..count {
        opening.spawn(async move {
            let mut connection = Connection::open(address).await.expect("connect");
            greeted(&mut connection).await.expect("first request");
            connection
        });
    }
    let mut idle = Vec::with_capacity(count);
    while let Some(connection) = opening.join_next().await {
        idle.push(connection.unwrap());
    }
    idle
}

/// `ACTIVE_CALLERS` loops for `ACTIVE_FOR`: half on one keep-alive connection, half on a new
/// connection per request. Returns every request's latency.
async fn active_load(address: SocketAddr) -> Vec<Duration> {
    let failures = Arc::new(AtomicU64::new(0));
    let mut callers = tokio::task::JoinSet::new();
    let until = Instant::now() + ACTIVE_FOR;
    for caller in 0..ACTIVE_CALLERS {
        let failures = Arc::clone(&failures);
        callers.spawn(async move {
            let mut latencies = Vec::new();
            let mut kept = None;
            while Instant::now() < until {
                let connection = match kept.take() {
                    Some(connection) => connection,
                    None => Connection::open(address).await.expect("connect"),
                };
                let mut connection = connection;
                match greeted(&mut connection).await {
                    Ok(latency) => latencies.push(latency),
                    Err(error) => {
                        eprintln!("active request failed: {error}");
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
                if caller % 2 == 0 {
                    kept = Some(connection);
                }
            }
            latencies
        });
    }
    let mut latencies = Vec::new();
    while let Some(done) = callers.join_next().await {
        latencies.extend(done.unwrap());
    }
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "active requests failed"
    );
    latencies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_answering_with_many_idle_connections_and_drains_them_on_sigterm() {
    let _loading = loading().await;
    let mut hello = start_program(
        "hello-cf",
        &[],
        &[
            ("BIND_ADDRESS", "127.0.0.1"),
            ("PORT", "0"),
            ("HELLO_VERSION", "v2"),
            ("DRAIN_TIMEOUT", "5s"),
            ("LOG_FORMAT", "json"),
        ],
        Stdout::Null,
    );
    let listening = hello.wait_for_message("hello-cf listening", STEP).await;
    let address: SocketAddr = listening["address"].as_str().unwrap().parse().unwrap();
    let idle_memory = hello.memory().unwrap();

    let mut idle = within(
        "opening the idle connections",
        STEP,
        open_idle(address, IDLE_CONNECTIONS),
    )
    .await;
    let idle_since = Instant::now();
    let mut latencies = within("the active load", STEP, active_load(address)).await;
    let active_requests = latencies.len();
    assert!(
        active_requests >= ACTIVE_CALLERS,
        "only {active_requests} requests were made"
    );
    let p50 = percentile(&mut latencies, 50);
    let p99 = percentile(&mut latencies, 99);
    // Generous for a loaded 2-core machine; a server stuck behind its idle connections would
    // take seconds or time out.
    assert!(p99 < Duration::from_secs(2), "p99 latency {p99:?}");

    // Every idle connection was held open and still answers.
    let held = idle
        .iter()
        .filter(|connection| !connection.is_closed())
        .count();
    assert_eq!(
        held,
        IDLE_CONNECTIONS,
        "idle connections closed after {:?}",
        idle_since.elapsed()
    );
    let mut reused = 0;
    for connection in &mut idle {
        greeted(connection)
            .await
            .expect("an idle connection's second request");
        reused += 1;
    }
    let loaded_memory = hello.memory().unwrap();

    // SIGTERM with every connection open (idle): they are closed and the process exits 0.
    let signalled = Instant::now();
    hello.signal(libc::SIGTERM);
    let status = hello
        .wait_exit(DRAIN_TIMEOUT + Duration::from_secs(5))
        .await;
    let exited_after = signalled.elapsed();
    assert_eq!(status.code(), Some(0), "{status}; log:\n{}", hello.log());
    assert!(
        exited_after < DRAIN_TIMEOUT,
        "idle connections held the drain for {exited_after:?}"
    );
    demo_testkit::eventually("the idle connections to be closed", STEP, || {
        let all_closed = idle.iter().all(Connection::is_closed);
        async move { all_closed }
    })
    .await;
    assert!(
        tokio::net::TcpStream::connect(address).await.is_err(),
        "still accepting after exit"
    );

    figure(
        "hello_cf_load",
        format!(
            "{IDLE_CONNECTIONS} idle keep-alive connections held and reused ({reused} answered); \
             {active_requests} active requests from {ACTIVE_CALLERS} callers, 0 failed, \
             p50 {p50:?} p99 {p99:?}; memory idle {idle_memory}, loaded {loaded_memory}; \
             SIGTERM -> exit 0 in {exited_after:?} with {IDLE_CONNECTIONS} connections open"
        ),
    );
}
