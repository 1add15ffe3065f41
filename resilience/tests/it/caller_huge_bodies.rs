//! The caller, the real binary, against bodies it must not swallow: an endless chunked
//! stream, a 10 GiB announced body, and endless binary bytes that each expand on escaping.
//! Every line stays within MAX_BODY (times the longest escape), each call ends at the cap
//! rather than at its timeout, and the process's peak memory stays small.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::support::{Stdout, figure, loading, start_program};
use demo_testkit::memory::mib;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const STEP: Duration = Duration::from_secs(60);
const CALLS: usize = 12;
const MARKER: &str = traffic::body::TRUNCATED_MARKER;
/// `2022-02-04T10:34:33+00:00` and a tab.
const PREFIX: usize = 26;

/// An upstream whose n-th answer never ends: chunked 'x' (n % 3 == 0), a 10 GiB
/// Content-Length of 'y' (1), or endless control bytes (2). Counts the bytes it got out.
async fn flooding_upstream() -> (SocketAddr, Arc<AtomicU64>) {
    let (listener, address) = demo_testkit::listener().await;
    let sent = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&sent);
    tokio::spawn(async move {
        let mut n = 0u64;
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(flood(stream, n, Arc::clone(&counter)));
            n += 1;
        }
    });
    (address, sent)
}

async fn flood(mut stream: TcpStream, n: u64, sent: Arc<AtomicU64>) {
    let mut request = [0u8; 4096];
    let _ = stream.read(&mut request).await;
    let (head, chunk): (&[u8], Vec<u8>) = match n % 3 {
        0 => (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
            [b"10000\r\n".to_vec(), vec![b'x'; 0x10000], b"\r\n".to_vec()].concat(),
        ),
        1 => (
            b"HTTP/1.1 200 OK\r\ncontent-length: 10737418240\r\n\r\n",
            vec![b'y'; 0x10000],
        ),
        _ => (
            b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\n\r\n",
            (0..0x10000u32).map(|i| (i % 32) as u8).collect(),
        ),
    };
    if stream.write_all(head).await.is_err() {
        return;
    }
    // Until the caller hangs up (or a bound far beyond any cap).
    for _ in 0..100_000 {
        if stream.write_all(&chunk).await.is_err() {
            return;
        }
        sent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
    }
}

async fn run_against_flood(max_body: usize) -> (Vec<String>, u64, u64) {
    let (upstream, sent) = flooding_upstream().await;
    let mut caller = start_program(
        "traffic",
        &[],
        &[
            ("URL", &format!("http://{upstream}/")),
            ("INTERVAL", "100ms"),
            ("TIMEOUT", "20s"),
            ("COUNT", &CALLS.to_string()),
            ("MAX_BODY", &max_body.to_string()),
            ("RUST_LOG", "warn"),
        ],
        Stdout::Piped,
    );
    let pid = caller.pid();
    let sampler = demo_testkit::memory::Sampler::start(pid, Duration::from_millis(20));
    let started = tokio::time::Instant::now();
    let mut lines = Vec::new();
    while let Some(line) = caller.next_stdout_line(STEP).await {
        lines.push(line);
    }
    // Read just before the exit is reaped (the process lingers until waited for).
    let hwm = caller.memory().map_or(0, |memory| memory.hwm_kib);
    let (peak_sampled, _) = sampler.stop();
    let status = caller.wait_exit(STEP).await;
    assert_eq!(status.code(), Some(0), "{}", caller.log());
    // The calls ended at the cap, not at their 20s timeout.
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    (lines, hwm.max(peak_sampled), sent.load(Ordering::Relaxed))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_and_huge_bodies_give_bounded_lines_and_bounded_memory() {
    let _loading = loading().await;
    let mut figures = Vec::new();
    for max_body in [4096, 1024 * 1024] {
        let (printed, peak_kib, sent) = run_against_flood(max_body).await;
        // A starved caller may note skipped ticks on `#` lines; every call has its own line.
        let (notes, lines): (Vec<String>, Vec<String>) =
            printed.into_iter().partition(|line| line.starts_with('#'));
        assert!(
            notes.iter().all(|note| note.starts_with("# skipped ")),
            "{notes:?}"
        );
        assert_eq!(lines.len(), CALLS, "one line per call");
        let longest_allowed = PREFIX + 6 * max_body + MARKER.len();
        for (n, line) in lines.iter().enumerate() {
            assert!(
                line.len() <= longest_allowed,
                "line {n}: {} bytes",
                line.len()
            );
            let (_, field) = line.split_once('\t').unwrap();
            assert!(field.ends_with(MARKER), "line {n} is not marked as cut");
            let kept = &field[..field.len() - MARKER.len()];
            match n % 3 {
                0 => assert_eq!(kept, "x".repeat(max_body), "line {n}"),
                1 => assert_eq!(kept, "y".repeat(max_body), "line {n}"),
                // Control bytes are escaped, so each line is still a single line.
                _ => assert!(
                    kept.starts_with("\\u{0}\\u{1}\\u{2}"),
                    "line {n}: {}",
                    &kept[..40]
                ),
            }
        }
        let longest = lines.iter().map(String::len).max().unwrap();
        // Memory: what a few capped bodies need, nowhere near what the upstream sent.
        let bound_kib = 64 * 1024 + 8 * (max_body as u64 / 1024) * 6;
        assert!(
            peak_kib < bound_kib,
            "peak {} with MAX_BODY={max_body}",
            mib(peak_kib)
        );
        figures.push(format!(
            "MAX_BODY={max_body}: {CALLS} calls against endless/10 GiB bodies, upstream pushed \
             {} before being cut off, longest line {longest} bytes, caller VmHWM {}",
            mib(sent / 1024),
            mib(peak_kib)
        ));
    }
    figure("caller_huge_bodies", figures.join("; "));
}
