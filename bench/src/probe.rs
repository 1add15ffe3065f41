//! A one-shot HTTP/1.1 GET over a fresh loopback connection (the kit's blocking raw HTTP client):
//! cheap enough to poll a starting server every fraction of a millisecond, strict enough to
//! check the answer byte for byte.

use std::io;
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use demo_testkit::raw_http::{self, RawResponse};

/// `GET /` with `Connection: close`; every step bounded by `timeout`.
pub fn get(addr: SocketAddr, timeout: Duration) -> io::Result<RawResponse> {
    get_path(addr, "/", timeout)
}

/// `GET <path>` with `Connection: close`; every step bounded by `timeout`.
pub fn get_path(addr: SocketAddr, path: &str, timeout: Duration) -> io::Result<RawResponse> {
    raw_http::blocking::exchange(
        addr,
        &raw_http::get_request(path, "127.0.0.1", &[]),
        timeout,
    )
}

/// Polls `GET /` until it answers 200 with `expected_body`, and returns how long after
/// `started` that was. `alive` is asked between attempts so a child that died is reported at
/// once instead of at the deadline.
pub fn first_answer(
    addr: SocketAddr,
    expected_body: &[u8],
    started: Instant,
    deadline: Duration,
    mut alive: impl FnMut() -> bool,
) -> Result<Duration, String> {
    loop {
        let last = match get(addr, Duration::from_secs(2)) {
            Ok(answer) if answer.status == 200 && answer.body == expected_body => {
                return Ok(started.elapsed());
            }
            Ok(answer) => format!(
                "answered {} with {:?}",
                answer.status,
                String::from_utf8_lossy(&answer.body)
            ),
            Err(error) => error.to_string(),
        };
        if !alive() {
            return Err(format!("exited before answering (last attempt: {last})"));
        }
        if started.elapsed() > deadline {
            return Err(format!(
                "no answer within {deadline:?} (last attempt: {last})"
            ));
        }
        // Short enough to resolve millisecond start-ups, long enough not to starve the child.
        thread::sleep(Duration::from_micros(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use demo_testkit::{Refused, within};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    #[tokio::test(flavor = "multi_thread")]
    async fn first_answer_waits_for_a_server_that_starts_late() {
        // Refuses until it listens, and the port stays ours meanwhile.
        let refused = Refused::new();
        let addr = refused.addr();
        let started = Instant::now();
        let probe = tokio::task::spawn_blocking(move || {
            first_answer(addr, b"ok\n", started, Duration::from_secs(20), || true)
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let listener = refused.listen();
        let bound = Duration::from_secs(20);
        let (mut stream, _) = within("the probe's connection", bound, listener.accept())
            .await
            .expect("accept");
        let mut request = [0u8; 1024];
        let _ = within("the request", bound, stream.read(&mut request)).await;
        stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n")
            .await
            .expect("answer");
        drop(stream);
        let elapsed = within("the probe", bound, probe)
            .await
            .expect("probe thread")
            .expect("answers");
        assert!(elapsed >= Duration::from_millis(100), "{elapsed:?}");
    }

    #[test]
    fn first_answer_gives_up_when_the_child_is_gone() {
        let refused = Refused::new();
        let error = first_answer(
            refused.addr(),
            b"",
            Instant::now(),
            Duration::from_secs(20),
            || false,
        )
        .expect_err("nobody listens");
        assert!(error.starts_with("exited before answering"), "{error}");
    }
}
