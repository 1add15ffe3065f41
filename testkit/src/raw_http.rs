//! A raw HTTP/1.1 client: the test writes the exact bytes of a request and reads the response
//! as it came off the wire (head, headers, de-chunked body), every step under a timeout.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// A response as read off the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawResponse {
    /// The status line, e.g. `HTTP/1.1 200 OK`.
    pub status_line: String,
    pub status: u16,
    /// In the order received, names as sent.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked when it came chunked.
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The first header called `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// `GET <path>` with `Host`, `Connection: close` and `headers`, as bytes.
pub fn get_request(path: &str, host: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("Connection: close\r\n\r\n");
    request.into_bytes()
}

/// Sends `request` on a new connection and reads until the server closes it; every step
/// (connect, write, each read) within `timeout`. For a request with `Connection: close`.
pub async fn exchange(
    addr: SocketAddr,
    request: &[u8],
    timeout: Duration,
) -> io::Result<RawResponse> {
    let raw = exchange_bytes(addr, request, timeout).await?;
    parse(&raw).ok_or_else(|| malformed(&raw))
}

/// [`exchange`], returning the bytes as received.
pub async fn exchange_bytes(
    addr: SocketAddr,
    request: &[u8],
    timeout: Duration,
) -> io::Result<Vec<u8>> {
    let mut connection = RawConnection::connect(addr, timeout).await?;
    connection.write(request).await?;
    connection.read_to_end().await
}

/// One connection, written and read by hand.
pub struct RawConnection {
    stream: TcpStream,
    timeout: Duration,
    buffered: Vec<u8>,
}

impl RawConnection {
    /// Connects within `timeout`; later steps each get `timeout` too.
    pub async fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<Self> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| timed_out("connect"))??;
        Ok(Self {
            stream,
            timeout,
            buffered: Vec::new(),
        })
    }

    pub fn stream(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    pub async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        tokio::time::timeout(self.timeout, self.stream.write_all(bytes))
            .await
            .map_err(|_| timed_out("write"))?
    }

    /// Reads to the end of the stream (the server closed it).
    pub async fn read_to_end(&mut self) -> io::Result<Vec<u8>> {
        let deadline = Instant::now() + self.timeout;
        let mut raw = std::mem::take(&mut self.buffered);
        tokio::time::timeout_at(deadline, self.stream.read_to_end(&mut raw))
            .await
            .map_err(|_| timed_out("read to the end"))??;
        Ok(raw)
    }

    /// Reads what arrives until the server closes the connection (or breaks it) or `wait`
    /// passes: the bytes, and whether it closed within the wait.
    pub async fn read_until_closed(&mut self, wait: Duration) -> (Vec<u8>, bool) {
        let mut received = std::mem::take(&mut self.buffered);
        let mut chunk = [0u8; 16 * 1024];
        let closed = tokio::time::timeout(wait, async {
            loop {
                match self.stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(read) => received.extend_from_slice(&chunk[..read]),
                }
            }
        })
        .await
        .is_ok();
        (received, closed)
    }

    /// Reads one response framed by its `content-length` or chunked encoding (to the end of
    /// the stream without either), leaving the connection open for the next request. Set
    /// `head_only` for the answer to a HEAD request.
    pub async fn read_response(&mut self, head_only: bool) -> io::Result<RawResponse> {
        let deadline = Instant::now() + self.timeout;
        loop {
            if let Some(head_end) = find(&self.buffered, b"\r\n\r\n") {
                let head = parse_head(&self.buffered[..head_end])
                    .ok_or_else(|| malformed(&self.buffered))?;
                let body_start = head_end + 4;
                let framing =
                    if head_only || head.status / 100 == 1 || matches!(head.status, 204 | 304) {
                        Some(Framing::Length(0))
                    } else {
                        framing(&head.headers)
                    };
                if let Some(used) =
                    framing.and_then(|framing| framing.complete(&self.buffered[body_start..]))
                {
                    let (body, consumed) = used;
                    let response = RawResponse { body, ..head };
                    self.buffered.drain(..body_start + consumed);
                    return Ok(response);
                }
            }
            let mut chunk = [0u8; 16 * 1024];
            let read = tokio::time::timeout_at(deadline, self.stream.read(&mut chunk))
                .await
                .map_err(|_| timed_out("read a response"))??;
            if read == 0 {
                let raw = std::mem::take(&mut self.buffered);
                return parse(&raw).ok_or_else(|| malformed(&raw));
            }
            self.buffered.extend_from_slice(&chunk[..read]);
        }
    }
}

enum Framing {
    Length(usize),
    Chunked,
}

impl Framing {
    /// The body and how many bytes it took, once all of it is in `bytes`.
    fn complete(&self, bytes: &[u8]) -> Option<(Vec<u8>, usize)> {
        match self {
            Framing::Length(length) => {
                (bytes.len() >= *length).then(|| (bytes[..*length].to_vec(), *length))
            }
            Framing::Chunked => dechunk(bytes),
        }
    }
}

fn framing(headers: &[(String, String)]) -> Option<Framing> {
    let header = |name: &str| {
        headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    };
    if header("transfer-encoding")
        .is_some_and(|value| value.to_ascii_lowercase().contains("chunked"))
    {
        return Some(Framing::Chunked);
    }
    header("content-length")
        .and_then(|length| length.trim().parse().ok())
        .map(Framing::Length)
}

/// Parses a whole response (head and everything after it); None if the head is malformed.
/// A chunked body is de-chunked; a body shorter than its content-length is returned as is.
pub fn parse(raw: &[u8]) -> Option<RawResponse> {
    let head_end = find(raw, b"\r\n\r\n")?;
    let head = parse_head(&raw[..head_end])?;
    let rest = &raw[head_end + 4..];
    let body = match framing(&head.headers) {
        Some(Framing::Chunked) => dechunk(rest)?.0,
        _ => rest.to_vec(),
    };
    Some(RawResponse { body, ..head })
}

fn parse_head(head: &[u8]) -> Option<RawResponse> {
    let head = std::str::from_utf8(head).ok()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?.to_owned();
    let status = status_line
        .strip_prefix("HTTP/1.")?
        .get(2..5)?
        .parse()
        .ok()?;
    let headers = lines
        .map(|line| {
            let (name, value) = line.split_once(':')?;
            Some((name.to_owned(), value.trim().to_owned()))
        })
        .collect::<Option<Vec<_>>>()?;
    Some(RawResponse {
        status_line,
        status,
        headers,
        body: Vec::new(),
    })
}

/// A chunked body's data and how many bytes the encoding took, once the last chunk is in.
pub fn dechunk(mut bytes: &[u8]) -> Option<(Vec<u8>, usize)> {
    let total = bytes.len();
    let mut body = Vec::new();
    loop {
        let line_end = find(bytes, b"\r\n")?;
        let size_text = std::str::from_utf8(&bytes[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        bytes = &bytes[line_end + 2..];
        if size == 0 {
            // Trailers, if any, end with an empty line.
            let end = find(bytes, b"\r\n")?;
            let end = if end == 0 {
                2
            } else {
                find(bytes, b"\r\n\r\n")? + 4
            };
            return Some((body, total - bytes.len() + end));
        }
        if bytes.len() < size + 2 {
            return None;
        }
        body.extend_from_slice(&bytes[..size]);
        bytes = &bytes[size + 2..];
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

fn malformed(raw: &[u8]) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("malformed response: {:?}", String::from_utf8_lossy(raw)),
    )
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, format!("{what} timed out"))
}

/// The same without a runtime, for blocking code.
pub mod blocking {
    use std::io::{self, Read, Write};
    use std::net::{SocketAddr, TcpStream};
    use std::time::Duration;

    use super::{RawResponse, malformed, parse};

    /// Sends `request` on a new connection and reads until the server closes it; connect and
    /// each read and write within `timeout`.
    pub fn exchange(
        addr: SocketAddr,
        request: &[u8],
        timeout: Duration,
    ) -> io::Result<RawResponse> {
        let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        stream.write_all(request)?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw)?;
        parse(&raw).ok_or_else(|| malformed(&raw))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_plain_and_a_chunked_answer() {
        let plain = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-A: b \r\n\r\nhi\n").unwrap();
        assert_eq!(
            (plain.status, plain.header("x-a"), plain.text().as_str()),
            (200, Some("b"), "hi\n")
        );
        assert_eq!(plain.status_line, "HTTP/1.1 200 OK");
        let chunked = parse(b"HTTP/1.1 503 No\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n").unwrap();
        assert_eq!(
            (chunked.status, chunked.body.as_slice()),
            (503, b"abcde".as_slice())
        );
        assert!(parse(b"SSH-2.0-OpenSSH\r\n\r\n").is_none());
        assert!(parse(b"HTTP/1.1 200 OK\r\n").is_none());
    }

    #[tokio::test]
    async fn reads_responses_one_after_another_on_one_connection() {
        let upstream = crate::ScriptedUpstream::start(|mut connection| async move {
            while let Some(head) = connection.read_head().await {
                connection
                    .write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
                if head.to_ascii_lowercase().contains("connection: close") {
                    return connection.close().await;
                }
            }
        })
        .await;
        let mut connection = RawConnection::connect(upstream.addr, Duration::from_secs(10))
            .await
            .unwrap();
        for _ in 0..2 {
            connection
                .write(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
                .await
                .unwrap();
            let response = connection.read_response(false).await.unwrap();
            assert_eq!((response.status, response.text().as_str()), (200, "ok"));
        }
        let blocking = tokio::task::spawn_blocking(move || {
            blocking::exchange(
                upstream.addr,
                &get_request("/", "h", &[]),
                Duration::from_secs(10),
            )
        });
        assert_eq!(blocking.await.unwrap().unwrap().text(), "ok");
    }
}
