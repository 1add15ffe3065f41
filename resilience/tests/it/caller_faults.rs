//! The caller against upstreams that are not there: a dead port, a port that accepts and never
//! answers, a port whose accept queue is full, a name that resolves nowhere, and an upstream
//! flapping up and down. Whatever happens it prints exactly one line per tick, never exits,
//! and never drifts from `start + k * INTERVAL`.
//!
//! Tick times are taken from the caller's resolver hook (`CallerBuilder::resolver`): each call
//! opens its connection and so resolves its host the moment it starts. The hook is also what
//! keeps every name lookup inside the process: no DNS query leaves the machine. The caller
//! honours the proxy variables, so the in-process tests build it with `no_proxy()`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::{Stdout, figure, measuring, start_program, within};
use demo_testkit::{Refused, Silent};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::time::Instant;
use traffic::{CallLimit, Caller, Config, SummaryEvery};

const INTERVAL: Duration = Duration::from_millis(200);
const TICKS: u64 = 15;
const TIMEOUT: Duration = Duration::from_millis(500);
/// Generous for a loaded 2-core machine, yet under half an interval, so each call is
/// attributed to exactly one tick.
const TOLERANCE: Duration = Duration::from_millis(95);
const STEP: Duration = Duration::from_secs(60);

/// Resolves the names it was given to loopback, fails the rest, and records when each
/// lookup happened.
#[derive(Clone)]
struct RecordingResolver {
    names: HashMap<String, IpAddr>,
    lookups: Arc<Mutex<Vec<Instant>>>,
}

impl RecordingResolver {
    fn new(names: &[&str]) -> Self {
        Self {
            names: names
                .iter()
                .map(|name| ((*name).to_owned(), IpAddr::V4(Ipv4Addr::LOCALHOST)))
                .collect(),
            lookups: Arc::default(),
        }
    }

    fn lookups(&self) -> Vec<Instant> {
        self.lookups.lock().unwrap().clone()
    }
}

impl Resolve for RecordingResolver {
    fn resolve(&self, name: Name) -> Resolving {
        self.lookups.lock().unwrap().push(Instant::now());
        let found = self.names.get(name.as_str()).copied();
        Box::pin(async move {
            let ip = found.ok_or("no such name in the test's resolver")?;
            Ok(Box::new(std::iter::once(SocketAddr::new(ip, 0))) as Addrs)
        })
    }
}

fn config(url: &str) -> Config {
    Config {
        url: url.parse().unwrap(),
        interval: INTERVAL,
        timeout: TIMEOUT,
        count: CallLimit::Calls(TICKS),
        summary_every: SummaryEvery::Off,
        max_body: 4096,
        log_format: demo_common::logging::LogFormat::Text,
        headers: Vec::new(),
    }
}

/// What a run printed and when its calls started.
struct Run {
    fields: Vec<String>,
    lookups: Vec<Instant>,
    skipped_ticks: u64,
}

/// Runs the caller in-process on `url` for [`TICKS`] ticks.
async fn run(url: &str, resolver: RecordingResolver) -> Run {
    let config = config(url);
    let caller = Caller::builder(&config)
        .resolver(resolver.clone())
        .no_proxy()
        .build()
        .unwrap();
    let mut out = Vec::new();
    let report = within(
        "the run",
        STEP,
        traffic::run_with(&config, caller, &mut out, std::future::pending()),
    )
    .await
    .expect("the run failed");
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    // Exactly one line per tick: no `#` notes, no skipped ticks, nothing else.
    assert_eq!(report.calls, TICKS, "{lines:?}");
    assert_eq!(lines.len() as u64, TICKS, "{lines:?}");
    let fields = lines
        .iter()
        .map(|line| {
            let (timestamp, field) = line.split_once('\t').expect("a tab");
            assert!(
                chrono_like(timestamp),
                "not a `date -Is` timestamp: {line:?}"
            );
            field.to_owned()
        })
        .collect();
    Run {
        fields,
        lookups: resolver.lookups(),
        skipped_ticks: report.skipped_ticks,
    }
}

/// `2022-02-04T10:34:33+00:00`: digits and separators where `date -Is` puts them.
fn chrono_like(text: &str) -> bool {
    const SHAPE: &[u8; 25] = b"dddd-dd-ddTdd:dd:dd+dd:dd";
    text.len() == SHAPE.len()
        && text.bytes().zip(SHAPE).all(|(byte, shape)| match shape {
            b'd' => byte.is_ascii_digit(),
            b'+' => byte == b'+' || byte == b'-',
            other => byte == *other,
        })
}

/// Checks one lookup per tick at `first + k * INTERVAL`; returns the largest deviation.
fn assert_on_schedule(name: &str, lookups: &[Instant]) -> Duration {
    assert_eq!(lookups.len() as u64, TICKS, "{name}: one call per tick");
    let first = lookups[0];
    let mut worst = Duration::ZERO;
    for (k, at) in lookups.iter().enumerate() {
        let expected = INTERVAL * u32::try_from(k).unwrap();
        let off = (*at - first).abs_diff(expected);
        assert!(
            off <= TOLERANCE,
            "{name}: call {k} started at +{:?}, due at +{expected:?}",
            *at - first
        );
        worst = worst.max(off);
    }
    worst
}

async fn check(name: &str, url: &str, resolver: RecordingResolver, expected: &[&str]) -> String {
    let run = run(url, resolver).await;
    for field in &run.fields {
        assert!(
            expected.contains(&field.as_str()),
            "{name}: unexpected line field {field:?}"
        );
    }
    assert_eq!(run.skipped_ticks, 0, "{name}");
    let worst = assert_on_schedule(name, &run.lookups);
    let summary = format!("{name}: {TICKS} ticks, {TICKS} lines, largest deviation {worst:?}");
    figure("caller_faults", &summary);
    summary
}

#[tokio::test]
async fn a_dead_port_gives_one_refused_line_per_tick() {
    let _measuring = measuring().await;
    // Bound and never listening: refused, and the port stays ours for the whole run.
    let dead = Refused::new();
    let url = format!("http://dead.test:{}/", dead.addr().port());
    check(
        "dead port",
        &url,
        RecordingResolver::new(&["dead.test"]),
        &["error: connection refused"],
    )
    .await;
}

#[tokio::test]
async fn a_black_holed_port_gives_one_timeout_line_per_tick() {
    let _measuring = measuring().await;
    // Completes every handshake and never reads or answers.
    let black_hole = Silent::new();
    let url = format!("http://black-hole.test:{}/", black_hole.addr().port());
    check(
        "black-holed port",
        &url,
        RecordingResolver::new(&["black-hole.test"]),
        &["error: timed out after 500ms"],
    )
    .await;
}

#[tokio::test]
async fn a_port_with_a_full_accept_queue_gives_one_timeout_line_per_tick() {
    let _measuring = measuring().await;
    // Listens with the smallest queue and never accepts; fill the queue so further
    // handshakes go unanswered.
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let address = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..16 {
        match tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(address)).await {
            Ok(Ok(stream)) => fillers.push(stream),
            _ => break,
        }
    }
    assert!(fillers.len() < 16, "the accept queue never filled");
    let url = format!("http://full-queue.test:{}/", address.port());
    check(
        "full accept queue",
        &url,
        RecordingResolver::new(&["full-queue.test"]),
        &["error: timed out after 500ms"],
    )
    .await;
    drop(listener);
}

#[tokio::test]
async fn an_unresolvable_name_gives_one_dns_line_per_tick() {
    let _measuring = measuring().await;
    // The resolver knows no name at all; `.invalid` could never resolve anyway (RFC 6761).
    check(
        "unresolvable name",
        "http://hello.invalid/",
        RecordingResolver::new(&[]),
        &["error: dns: hello.invalid not resolved"],
    )
    .await;
}

/// Serves `up\n` and closes each connection after its answer (so every call opens a new one,
/// and the resolver sees every tick).
async fn serve_up(listener: TcpListener) {
    while let Ok((mut stream, _)) = listener.accept().await {
        tokio::spawn(async move {
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request).await;
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close\r\n\r\nup\n")
                .await;
            let _ = stream.shutdown().await;
        });
    }
}

#[tokio::test]
async fn a_flapping_upstream_gives_one_line_per_tick_of_each_kind() {
    let _measuring = measuring().await;
    // The port is held all along (bound, refusing while down), so nothing else can take it
    // while the upstream is down. Up for three ticks, down for three, switching between ticks.
    let port = Refused::new();
    let address = port.addr();
    let flapping = tokio::spawn(async move {
        tokio::time::sleep(INTERVAL / 2).await;
        loop {
            let serving = tokio::spawn(serve_up(port.listen()));
            tokio::time::sleep(INTERVAL * 3).await;
            serving.abort();
            tokio::time::sleep(INTERVAL * 3).await;
        }
    });
    let url = format!("http://flapping.test:{}/", address.port());
    let resolver = RecordingResolver::new(&["flapping.test"]);
    let run = run(&url, resolver).await;
    flapping.abort();
    let up = run.fields.iter().filter(|field| *field == "up").count();
    let down = run
        .fields
        .iter()
        .filter(|field| *field == "error: connection refused")
        .count();
    assert_eq!(up + down, TICKS as usize, "{:?}", run.fields);
    assert!(up >= 3 && down >= 3, "{:?}", run.fields);
    // It switched several times, and each state shows as runs of lines, not noise.
    let switches = run
        .fields
        .windows(2)
        .filter(|pair| pair[0] != pair[1])
        .count();
    assert!(
        (3..=7).contains(&switches),
        "{switches} switches: {:?}",
        run.fields
    );
    let worst = assert_on_schedule("flapping", &run.lookups);
    figure(
        "caller_faults",
        format!(
            "flapping upstream: {TICKS} ticks, {TICKS} lines ({up} answered, {down} refused, \
             {switches} switches), largest deviation {worst:?}"
        ),
    );
}

/// The binary keeps going against a dead port and a black hole alike (no exit), one line per
/// tick, until SIGTERM, and then exits 0.
#[tokio::test]
async fn the_binary_never_exits_on_its_own_when_nothing_answers() {
    let _measuring = measuring().await;
    let dead = Refused::new();
    let black_hole = Silent::new();
    let mut lines_seen = Vec::new();
    for (url, expected) in [
        (format!("http://{dead}/"), "error: connection refused"),
        (
            format!("http://{black_hole}/"),
            "error: timed out after 300ms",
        ),
    ] {
        let mut caller = start_program(
            "traffic",
            &[],
            &[
                ("URL", &url),
                ("INTERVAL", "100ms"),
                ("TIMEOUT", "300ms"),
                ("RUST_LOG", "warn"),
            ],
            Stdout::Piped,
        );
        let mut lines = 0;
        while lines < 15 {
            let line = caller
                .next_stdout_line(Duration::from_secs(10))
                .await
                .expect("the caller exited on its own");
            assert_eq!(
                line.split_once('\t').map(|(_, field)| field),
                Some(expected),
                "{line}"
            );
            lines += 1;
        }
        assert!(caller.is_running());
        caller.signal(libc::SIGTERM);
        let status = caller.wait_exit(Duration::from_secs(10)).await;
        assert_eq!(status.code(), Some(0), "{}", caller.log());
        lines_seen.push(format!(
            "{expected}: {lines} lines, still running, SIGTERM -> exit 0"
        ));
    }
    figure(
        "caller_faults",
        format!("binary: {}", lines_seen.join("; ")),
    );
}
