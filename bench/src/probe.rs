//! A one-shot HTTP/1.1 GET over a fresh loopback connection: cheap enough to poll a starting
//! server every fraction of a millisecond, strict enough to check the answer byte for byte.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

/// The part of a response the bench checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

/// `GET /` with `Connection: close`; every step bounded by `timeout`.
pub fn get(addr: SocketAddr, timeout: Duration) -> io::Result<Answer> {
    get_path(addr, "/", timeout)
}

/// `GET <path>` with `Connection: close`; every step bounded by `timeout`.
pub fn get_path(addr: SocketAddr, path: &str, timeout: Duration) -> io::Result<Answer> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> io::Result<Answer> {
    let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
    let head_end = raw
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .ok_or_else(|| invalid("no end of response head"))?;
    let head = std::str::from_utf8(&raw[..head_end]).map_err(|_| invalid("head not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| invalid("no status code"))?;
    let mut content_type = None;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-type") {
            content_type = Some(value.to_owned());
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        }
    }
    let body = &raw[head_end + 4..];
    let body = if chunked {
        dechunk(body).ok_or_else(|| invalid("bad chunked body"))?
    } else {
        body.to_vec()
    };
    Ok(Answer {
        status,
        content_type,
        body,
    })
}

fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = body.windows(2).position(|window| window == b"\r\n")?;
        let size_text = std::str::from_utf8(&body[..line_end]).ok()?;
        let size_text = size_text.split(';').next()?.trim();
        let size = usize::from_str_radix(size_text, 16).ok()?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(body.get(..size)?);
        body = body.get(size + 2..)?;
    }
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
    use std::net::{Ipv4Addr, TcpListener};

    #[test]
    fn reads_a_plain_and_a_chunked_answer() {
        let plain = b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: 3\r\n\r\nhi\n";
        let answer = parse_response(plain).expect("parses");
        assert_eq!(answer.status, 200);
        assert_eq!(
            answer.content_type.as_deref(),
            Some("text/html; charset=utf-8")
        );
        assert_eq!(answer.body, b"hi\n");

        let chunked = b"HTTP/1.1 418 I'm a teapot\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n";
        let answer = parse_response(chunked).expect("parses");
        assert_eq!(
            (answer.status, answer.body.as_slice()),
            (418, &b"abcde"[..])
        );
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_err());
    }

    /// A socket bound to a loopback port the OS picks, not listening: connections to it are
    /// refused until `listen` is called, and no other program can take the port meanwhile.
    fn bound_socket() -> (socket2::Socket, SocketAddr) {
        use socket2::{Domain, Socket, Type};
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        socket
            .bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())
            .expect("bind");
        let addr = socket
            .local_addr()
            .expect("address")
            .as_socket()
            .expect("inet");
        (socket, addr)
    }

    #[test]
    fn first_answer_waits_for_a_server_that_starts_late() {
        let (socket, addr) = bound_socket();
        let started = Instant::now();
        let server = thread::spawn(move || {
            thread::sleep(Duration::from_millis(100));
            socket.listen(16).expect("listen");
            let listener: TcpListener = socket.into();
            let (mut stream, _) = listener.accept().expect("accept");
            let mut request = [0u8; 1024];
            let _ = stream.read(&mut request);
            stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n")
                .expect("answer");
        });
        let elapsed = first_answer(addr, b"ok\n", started, Duration::from_secs(20), || true)
            .expect("answers");
        assert!(elapsed >= Duration::from_millis(100), "{elapsed:?}");
        server.join().expect("server thread");
    }

    #[test]
    fn first_answer_gives_up_when_the_child_is_gone() {
        // Kept bound for the whole test: the port refuses, and stays ours.
        let (_socket, addr) = bound_socket();
        let error = first_answer(addr, b"", Instant::now(), Duration::from_secs(20), || false)
            .expect_err("nobody listens");
        assert!(error.starts_with("exited before answering"), "{error}");
    }
}
