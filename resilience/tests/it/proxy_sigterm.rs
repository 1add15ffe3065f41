//! SIGTERM to the proxy, the real binary, in the middle of a load: calls in flight complete,
//! readiness fails, new connections are refused from then on, idle keep-alive connections are
//! closed, and the process exits 0 within its drain bound; a call that outlives the bound is
//! cut rather than holding the exit.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::support::{Connection, Exchange, Program, figure, get_once, loading, measuring, within};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::task::JoinSet;
use tokio::time::Instant;

const STEP: Duration = Duration::from_secs(60);
const IN_FLIGHT: usize = 100;
const IDLE: usize = 50;
/// How long the upstream takes on `/slow`: the calls are in flight when SIGTERM comes.
const SLOW: Duration = Duration::from_millis(1500);

/// An upstream answering `/slow` after [`SLOW`], `/stuck` never, anything else at once; it
/// counts the requests that reached it.
async fn upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    let (listener, address) = demo_testkit::listener().await;
    let arrived = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&arrived);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    async move {
                        match request.uri().path() {
                            "/slow" => tokio::time::sleep(SLOW).await,
                            "/stuck" => std::future::pending::<()>().await,
                            _ => {}
                        }
                        let body = format!("done {}\n", request.uri().path());
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (address, arrived)
}

async fn start_proxy(upstream: SocketAddr, drain: &str) -> (Program, SocketAddr, SocketAddr) {
    let settings = [("UPSTREAM_TIMEOUT", "30s"), ("DRAIN_TIMEOUT", drain)];
    let proxy = crate::support::start_proxy(upstream, &settings).await;
    (proxy.program, proxy.address, proxy.admin)
}

/// Whether `/readyz` says the proxy still wants traffic.
async fn ready(admin: SocketAddr) -> bool {
    matches!(
        get_once(admin, "/readyz", Duration::from_secs(5)).await,
        Exchange::Answered { status, .. } if status == StatusCode::OK
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_finishes_every_call_in_flight_and_refuses_new_ones() {
    let _loading = loading().await;
    let (upstream, arrived) = upstream().await;
    let drain = Duration::from_secs(10);
    let (mut proxy, address, admin) = start_proxy(upstream, "10s").await;
    assert!(ready(admin).await);

    // Idle keep-alive connections, each answered once.
    let mut idle = Vec::new();
    for _ in 0..IDLE {
        let mut connection = Connection::open(address).await.unwrap();
        let first = connection.get("/fast", "s", Duration::from_secs(10)).await;
        assert!(
            matches!(first, Exchange::Answered { status, .. } if status == StatusCode::OK),
            "{first:?}"
        );
        idle.push(connection);
    }
    // Calls in flight when the signal comes.
    let before = arrived.load(Ordering::SeqCst);
    let mut in_flight = JoinSet::new();
    for _ in 0..IN_FLIGHT {
        in_flight.spawn(get_once(address, "/slow", STEP));
    }
    demo_testkit::eventually("the calls to reach the upstream", STEP, || {
        let reached = arrived.load(Ordering::SeqCst) - before;
        async move { reached == IN_FLIGHT }
    })
    .await;
    // New callers keep coming, one every 10ms, through the shutdown.
    let newcomers = tokio::spawn(async move {
        let mut attempts = JoinSet::new();
        let stop = Instant::now() + SLOW + Duration::from_secs(3);
        while Instant::now() < stop {
            attempts.spawn(async move {
                let started = Instant::now();
                (
                    started,
                    get_once(address, "/fast", Duration::from_secs(10)).await,
                )
            });
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut outcomes = Vec::new();
        while let Some(done) = attempts.join_next().await {
            outcomes.push(done.unwrap());
        }
        outcomes
    });

    tokio::time::sleep(Duration::from_millis(100)).await;
    let signalled = Instant::now();
    proxy.signal(libc::SIGTERM);
    demo_testkit::eventually(
        "readiness to fail",
        STEP,
        || async move { !ready(admin).await },
    )
    .await;
    let unready = Instant::now();
    demo_testkit::eventually("new connections to be refused", STEP, || async move {
        tokio::net::TcpStream::connect(address).await.is_err()
    })
    .await;
    let refused = Instant::now();

    // Every call in flight completes, in full.
    let mut completed = 0;
    within("the calls in flight", STEP, async {
        while let Some(done) = in_flight.join_next().await {
            match done.unwrap() {
                Exchange::Answered { status, body }
                    if status == StatusCode::OK && body == "done /slow\n" =>
                {
                    completed += 1
                }
                other => panic!("a call in flight at SIGTERM ended as {other:?}"),
            }
        }
    })
    .await;
    let status = proxy.wait_exit(drain + Duration::from_secs(5)).await;
    let exited = signalled.elapsed();
    assert_eq!(status.code(), Some(0), "{status}; log:\n{}", proxy.log());
    assert!(exited < drain, "exit took {exited:?}");
    assert!(proxy.log().contains("\"drained\""), "log:\n{}", proxy.log());
    assert!(
        idle.iter().all(Connection::is_closed),
        "an idle connection outlived the process"
    );

    // Newcomers: answered before readiness dropped; never after.
    let outcomes = within("the newcomers", STEP, newcomers).await.unwrap();
    let mut answered_before = 0;
    let mut turned_away = 0;
    for (started, outcome) in &outcomes {
        match outcome {
            Exchange::Answered { status, .. } if *started < unready => {
                assert_eq!(*status, StatusCode::OK);
                answered_before += 1;
            }
            Exchange::Answered { status, body } => panic!(
                "a connection opened {:?} after readiness failed was answered {status} {body:?}",
                *started - unready
            ),
            Exchange::Unanswered(_) => turned_away += 1,
            Exchange::Cut { .. } | Exchange::TimedOut => panic!("a newcomer ended as {outcome:?}"),
        }
    }
    assert!(
        turned_away > 0 && answered_before > 0,
        "{answered_before} answered, {turned_away} turned away"
    );

    figure(
        "proxy_sigterm",
        format!(
            "SIGTERM with {IN_FLIGHT} calls in flight, {IDLE} idle keep-alive connections and \
             a new caller every 10ms: readiness failed after {:?}, new connections refused \
             after {:?}, {completed}/{IN_FLIGHT} calls in flight completed, {answered_before} \
             newcomers answered before readiness failed and {turned_away} turned away after, \
             0 answered after; exit 0 after {exited:?} (DRAIN_TIMEOUT {drain:?})",
            unready - signalled,
            refused - signalled,
        ),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_outliving_the_drain_bound_is_cut_and_the_exit_is_on_time() {
    let _measuring = measuring().await;
    let (upstream, arrived) = upstream().await;
    let drain = Duration::from_secs(2);
    let (mut proxy, address, _) = start_proxy(upstream, "2s").await;
    let stuck = tokio::spawn(get_once(address, "/stuck", STEP));
    demo_testkit::eventually("the call to reach the upstream", STEP, || {
        let reached = arrived.load(Ordering::SeqCst);
        async move { reached == 1 }
    })
    .await;

    let signalled = Instant::now();
    proxy.signal(libc::SIGTERM);
    let status = proxy.wait_exit(drain + Duration::from_secs(10)).await;
    let exited = signalled.elapsed();
    assert_eq!(status.code(), Some(0), "{status}; log:\n{}", proxy.log());
    assert!(
        exited >= drain && exited < drain + Duration::from_secs(3),
        "exit after {exited:?} with a {drain:?} drain"
    );
    assert!(
        proxy.log().contains("drain time ran out"),
        "the log does not say the drain timed out:\n{}",
        proxy.log()
    );
    // The stuck call ends when the process does: no answer, no hang.
    let outcome = within("the stuck call", STEP, stuck).await.unwrap();
    assert!(matches!(outcome, Exchange::Unanswered(_)), "{outcome:?}");
    figure(
        "proxy_sigterm",
        format!(
            "a call stuck upstream at SIGTERM: exit 0 after {exited:?} (DRAIN_TIMEOUT \
             {drain:?}), the call closed unanswered, the log says the drain timed out"
        ),
    );
}
