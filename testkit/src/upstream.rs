//! A scripted upstream: a raw TCP responder on loopback whose script gets every accepted
//! connection, numbered in arrival order, and answers, delays, resets or cuts it at will.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A raw TCP upstream on loopback. It accepts until dropped (connections already handed to
/// the script carry on).
pub struct ScriptedUpstream {
    pub addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    accepting: JoinHandle<()>,
}

impl ScriptedUpstream {
    /// Listens on `127.0.0.1:0` and runs `script` on every connection, each in its own task.
    pub async fn start<S, F>(script: S) -> Self
    where
        S: Fn(Connection) -> F + Send + Sync + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let (listener, _) = crate::net::listener().await;
        Self::on(listener, script)
    }

    /// An upstream that answers every request head, on every connection, with `answer`; the
    /// heads come out of the receiver as they arrive, for the test to see what was forwarded.
    pub async fn answering(
        answer: &'static [u8],
    ) -> (Self, tokio::sync::mpsc::UnboundedReceiver<String>) {
        let (sent, heads) = tokio::sync::mpsc::unbounded_channel();
        let upstream = Self::start(move |mut connection| {
            let sent = sent.clone();
            async move {
                while let Some(head) = connection.read_head().await {
                    let _ = sent.send(head);
                    connection.write(answer).await;
                }
            }
        })
        .await;
        (upstream, heads)
    }

    /// [`ScriptedUpstream::start`] on a given listener (e.g. [`crate::Refused::listen`]).
    pub fn on<S, F>(listener: TcpListener, script: S) -> Self
    where
        S: Fn(Connection) -> F + Send + Sync + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let addr = listener.local_addr().expect("a bound listener's address");
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&connections);
        let accepting = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let index = counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(script(Connection {
                    index,
                    stream,
                    buffered: Vec::new(),
                }));
            }
        });
        Self {
            addr,
            connections,
            accepting,
        }
    }

    /// `http://<addr><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// How many connections it has accepted.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl std::fmt::Display for ScriptedUpstream {
    /// The address, as `127.0.0.1:<port>`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.addr.fmt(f)
    }
}

impl Drop for ScriptedUpstream {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

/// One accepted connection, as the script sees it.
pub struct Connection {
    /// 0 for the first connection accepted, 1 for the next, and so on.
    pub index: usize,
    pub stream: TcpStream,
    buffered: Vec<u8>,
}

impl Connection {
    /// Reads up to the end of the next request head and returns it; None if the peer closed
    /// (or broke the connection) first. Bytes after the head stay for [`Connection::read_body`].
    pub async fn read_head(&mut self) -> Option<String> {
        loop {
            if let Some(end) = self.buffered.windows(4).position(|w| w == b"\r\n\r\n") {
                let head: Vec<u8> = self.buffered.drain(..end + 4).collect();
                return Some(String::from_utf8_lossy(&head).into_owned());
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(read) => self.buffered.extend_from_slice(&chunk[..read]),
            }
        }
    }

    /// Reads `length` body bytes; None if the peer closed first.
    pub async fn read_body(&mut self, length: usize) -> Option<Vec<u8>> {
        while self.buffered.len() < length {
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(read) => self.buffered.extend_from_slice(&chunk[..read]),
            }
        }
        Some(self.buffered.drain(..length).collect())
    }

    /// Writes `bytes`; false if the peer has gone.
    pub async fn write(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).await.is_ok() && self.stream.flush().await.is_ok()
    }

    /// Writes a complete response: `status`, `content-type: text/plain`, a content-length and
    /// `body`.
    pub async fn answer(&mut self, status: u16, body: &[u8]) -> bool {
        let head = format!(
            "HTTP/1.1 {status} {}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n",
            reason(status),
            body.len()
        );
        self.write(head.as_bytes()).await && self.write(body).await
    }

    /// Writes a head promising `promised` body bytes, then only `sent` of them.
    pub async fn answer_partly(&mut self, status: u16, promised: usize, sent: &[u8]) -> bool {
        let head = format!(
            "HTTP/1.1 {status} {}\r\ncontent-length: {promised}\r\n\r\n",
            reason(status)
        );
        self.write(head.as_bytes()).await && self.write(sent).await
    }

    /// Waits `delay` (an upstream slow to answer).
    pub async fn delay(&self, delay: Duration) {
        tokio::time::sleep(delay).await;
    }

    /// Closes the connection with a reset (RST) instead of a FIN.
    pub fn reset(self) {
        let _ = self.stream.set_zero_linger();
        drop(self.stream);
    }

    /// Closes the write side (FIN) and waits, bounded, for the peer to close too.
    pub async fn close(mut self) {
        let _ = self.stream.shutdown().await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.hold()).await;
    }

    /// Holds the connection, reading and dropping whatever arrives, until the peer closes it.
    pub async fn hold(&mut self) {
        let mut sink = [0u8; 4096];
        while matches!(self.stream.read(&mut sink).await, Ok(read) if read > 0) {}
    }
}

/// Reads one byte at a time up to the end of an HTTP head (so nothing after it is taken from
/// the stream); None if the peer closed first. For code that holds a bare stream.
pub async fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// Writes `bytes` to `stream`, ignoring a peer that has gone.
pub async fn write(stream: &mut TcpStream, bytes: &[u8]) {
    let _ = stream.write_all(bytes).await;
    let _ = stream.flush().await;
}

/// The reason phrase of the statuses tests use (any other gets `Status`).
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        302 => "Found",
        400 => "Bad Request",
        404 => "Not Found",
        418 => "I'm a teapot",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raw_http;

    #[tokio::test]
    async fn numbers_connections_and_answers_resets_and_cuts_them() {
        let upstream = ScriptedUpstream::start(|mut connection| async move {
            connection.read_head().await;
            match connection.index {
                0 => {
                    connection.answer(200, b"first\n").await;
                    connection.close().await;
                }
                1 => connection.reset(),
                _ => {
                    connection.answer_partly(200, 100, b"Hello").await;
                    connection.close().await;
                }
            }
        })
        .await;
        let request = raw_http::get_request("/", "h", &[]);
        let bound = Duration::from_secs(10);
        let first = raw_http::exchange(upstream.addr, &request, bound)
            .await
            .unwrap();
        assert_eq!((first.status, first.text().as_str()), (200, "first\n"));
        let reset = raw_http::exchange_bytes(upstream.addr, &request, bound).await;
        assert_eq!(
            reset.map_err(|error| error.kind()),
            Err(std::io::ErrorKind::ConnectionReset)
        );
        let cut = raw_http::exchange(upstream.addr, &request, bound)
            .await
            .unwrap();
        assert_eq!(cut.body, b"Hello");
        assert_eq!(upstream.connections(), 3);
    }
}
