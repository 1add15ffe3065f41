//! A one-shot HTTP/1.1 GET over a fresh loopback connection (the kit's blocking raw HTTP client):
//! cheap enough to poll a starting server every fraction of a millisecond, strict enough to
//! check the answer byte for byte.

use std::io::{self, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use demo_testkit::raw_http::{self, RawResponse};

/// How the probe knows the answer is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The server closes the connection, as `Connection: close` asks: every HTTP server.
    Close,
    /// The answer's `content-length` bytes of body are in: for the canned responder, which
    /// reads no header and so keeps the connection open.
    Length,
}

/// `GET /` with `Connection: close`; every step bounded by `timeout`.
pub fn get(addr: SocketAddr, timeout: Duration) -> io::Result<RawResponse> {
    get_path(addr, "/", timeout)
}

/// `GET /` with `Connection: close`, the answer read until `ending`; every step bounded by
/// `timeout`.
pub fn get_until(addr: SocketAddr, ending: Ending, timeout: Duration) -> io::Result<RawResponse> {
    match ending {
        Ending::Close => get(addr, timeout),
        Ending::Length => get_framed(addr, timeout),
    }
}

/// Reads until the body has the length the head announces (or the server closes); a body
/// longer than announced is returned whole, so a check of it fails.
fn get_framed(addr: SocketAddr, timeout: Duration) -> io::Result<RawResponse> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(&raw_http::get_request("/", "127.0.0.1", &[]))?;
    let mut raw = Vec::new();
    let mut chunk = [0; 4096];
    loop {
        let read = stream.read(&mut chunk)?;
        raw.extend_from_slice(&chunk[..read]);
        let answer = raw_http::parse(&raw);
        let complete = answer.as_ref().is_some_and(|answer| {
            answer
                .header("content-length")
                .and_then(|length| length.trim().parse::<usize>().ok())
                .is_some_and(|length| answer.body.len() >= length)
        });
        if complete || read == 0 {
            return answer.ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("malformed response: {:?}", String::from_utf8_lossy(&raw)),
                )
            });
        }
    }
}

/// `GET <path>` with `Connection: close`; every step bounded by `timeout`.
pub fn get_path(addr: SocketAddr, path: &str, timeout: Duration) -> io::Result<RawResponse> {
    raw_http::blocking::exchange(
        addr,
        &raw_http::get_request(path, "127.0.0.1", &[]),
        timeout,
    )
}

/// Polls `GET /` (each answer read until `ending`) until it answers 200 with `expected_body`,
/// and returns how long after
/// `started` that was. `alive` is asked between attempts so a child that died is reported at
/// once instead of at the deadline.
pub fn first_answer(
    addr: SocketAddr,
    ending: Ending,
    expected_body: &[u8],
    started: Instant,
    deadline: Duration,
    mut alive: impl FnMut() -> bool,
) -> Result<Duration, String> {
    loop {
        let last = match get_until(addr, ending, Duration::from_secs(2)) {
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
            first_answer(
                addr,
                Ending::Close,
                b"ok\n",
                started,
                Duration::from_secs(20),
                || true,
            )
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
            Ending::Close,
            b"",
            Instant::now(),
            Duration::from_secs(20),
            || false,
        )
        .expect_err("nobody listens");
        assert!(error.starts_with("exited before answering"), "{error}");
    }

    /// The canned responder keeps the connection open despite `Connection: close`: the check
    /// reads its answer by length, and finds hello-cf's status, content type and body.
    #[tokio::test(flavor = "multi_thread")]
    async fn the_canned_answer_is_read_by_its_length_and_passes_the_check() {
        let (listener, addr) = demo_testkit::listener().await;
        tokio::spawn(crate::canned::serve(listener));
        let bound = Duration::from_secs(20);
        let check = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            first_answer(
                addr,
                Ending::Length,
                crate::recorder::BODY.as_bytes(),
                started,
                bound,
                || true,
            )?;
            get_until(addr, Ending::Length, Duration::from_secs(5)).map_err(|e| e.to_string())
        });
        let answer = within("the check", bound, check)
            .await
            .expect("probe thread")
            .expect("answers");
        assert_eq!(answer.status, 200);
        assert_eq!(
            answer.header("content-type"),
            Some("text/html; charset=utf-8")
        );
        assert_eq!(answer.header("content-length"), Some("31"));
        assert_eq!(answer.body, crate::recorder::BODY.as_bytes());
    }
}
