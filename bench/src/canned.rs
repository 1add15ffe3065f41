//! The hello-cf comparison's reference point: a server that answers every request with the
//! same bytes and does no HTTP at all.
//!
//! It reads whatever arrives, counts the request heads by their blank line, and writes one
//! fixed answer (hello-cf's own bytes, a fixed date included) per head: no parsing, no header
//! map, no date formatting, no timers, nothing allocated per request, on the runtime our
//! programs use (one thread when it may use one CPU). Per request it costs what the kernel
//! charges for one loopback TCP round trip and next to nothing else, a floor no HTTP server
//! can go below on the same machine.
//!
//! It reads no header, so it does not honour `Connection: close`: it closes when the client
//! does. That is only correct for clients that frame the answer by its `content-length`, as
//! wrk and the bench's check of it do.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What hello-cf v1 answers to `GET /`, byte for byte, but for the date, which is fixed (the
/// same length as any other).
pub const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: 31\r\ndate: Tue, 01 Dec 2026 00:00:00 GMT\r\n\r\nHello K8s, from CF v1 service!\n";

/// Accepts on `listener` forever, answering each request head with [`ANSWER`].
pub async fn serve(listener: TcpListener) {
    crate::floor::serve_each(listener, answer).await;
}

/// Answers each complete request head until the client closes its side.
async fn answer(mut client: TcpStream) -> std::io::Result<()> {
    client.set_nodelay(true)?;
    let mut buffer = vec![0; 8192];
    let mut heads = HeadEnds::default();
    // Only for pipelined heads, several in one read: their answers go out in one write.
    let mut answers = Vec::new();
    loop {
        let read = client.read(&mut buffer).await?;
        if read == 0 {
            return Ok(());
        }
        match heads.count(&buffer[..read]) {
            0 => {}
            1 => client.write_all(ANSWER).await?,
            many => {
                answers.clear();
                for _ in 0..many {
                    answers.extend_from_slice(ANSWER);
                }
                client.write_all(&answers).await?;
            }
        }
    }
}

/// Counts the blank lines (`\r\n\r\n`) that end request heads, one across reads too.
#[derive(Debug, Default)]
struct HeadEnds {
    /// How many bytes of `\r\n\r\n` the bytes seen so far end with.
    matched: u8,
}

impl HeadEnds {
    fn count(&mut self, bytes: &[u8]) -> usize {
        let mut ends = 0;
        for &byte in bytes {
            self.matched = match (self.matched, byte) {
                (0 | 2, b'\r') | (1 | 3, b'\n') => self.matched + 1,
                (_, b'\r') => 1,
                _ => 0,
            };
            if self.matched == 4 {
                ends += 1;
                self.matched = 0;
            }
        }
        ends
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use demo_testkit::{listener, within};

    use super::*;

    const BOUND: Duration = Duration::from_secs(5);
    const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";

    /// The responder on a port the OS picked.
    async fn responder() -> SocketAddr {
        let (listener, addr) = listener().await;
        tokio::spawn(serve(listener));
        addr
    }

    async fn read_answers(client: &mut TcpStream, count: usize) -> Vec<u8> {
        let mut answers = vec![0; ANSWER.len() * count];
        within("the answers", BOUND, client.read_exact(&mut answers))
            .await
            .expect("answers");
        answers
    }

    /// Shuts the client's side and reads what else arrives until the responder closes too.
    async fn rest_after_closing(client: &mut TcpStream) -> Vec<u8> {
        client.shutdown().await.expect("shutdown");
        let mut rest = Vec::new();
        within(
            "the responder's close",
            BOUND,
            client.read_to_end(&mut rest),
        )
        .await
        .expect("read to the end");
        rest
    }

    #[tokio::test]
    async fn each_request_on_one_connection_gets_the_answer() {
        let mut client = TcpStream::connect(responder().await).await.unwrap();
        for _ in 0..2 {
            client.write_all(REQUEST).await.unwrap();
            assert_eq!(read_answers(&mut client, 1).await, ANSWER);
        }
        assert_eq!(rest_after_closing(&mut client).await, b"");
    }

    #[tokio::test]
    async fn pipelined_heads_in_one_write_get_one_answer_each() {
        let mut client = TcpStream::connect(responder().await).await.unwrap();
        client.write_all(&REQUEST.repeat(2)).await.unwrap();
        assert_eq!(read_answers(&mut client, 2).await, ANSWER.repeat(2));
        assert_eq!(rest_after_closing(&mut client).await, b"");
    }

    #[tokio::test]
    async fn a_head_split_across_writes_gets_exactly_one_answer() {
        let mut client = TcpStream::connect(responder().await).await.unwrap();
        // Split inside the blank line: `\r\n\r` now, the last `\n` later.
        let (first, last) = REQUEST.split_at(REQUEST.len() - 1);
        client.write_all(first).await.unwrap();
        // Nothing comes back for a head that has not ended (the wait also lets the responder
        // read the first part on its own).
        let mut early = [0; 1];
        let waited = tokio::time::timeout(Duration::from_millis(100), client.read(&mut early));
        assert!(waited.await.is_err(), "answered an unfinished head");
        client.write_all(last).await.unwrap();
        assert_eq!(read_answers(&mut client, 1).await, ANSWER);
        assert_eq!(rest_after_closing(&mut client).await, b"");
    }

    #[tokio::test]
    async fn the_client_closing_ends_the_connection() {
        let mut client = TcpStream::connect(responder().await).await.unwrap();
        // A head that never ends: no answer, and the responder still closes when the client does.
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        assert_eq!(rest_after_closing(&mut client).await, b"");
    }

    #[test]
    fn head_ends_are_counted_once_wherever_the_reads_split_them() {
        let two = REQUEST.repeat(2);
        for split in 0..=two.len() {
            let mut heads = HeadEnds::default();
            let (first, second) = two.split_at(split);
            assert_eq!(
                heads.count(first) + heads.count(second),
                2,
                "split at {split}"
            );
        }
        // Line breaks that are not a blank line, and a stray `\r` inside one, count as they should.
        let mut heads = HeadEnds::default();
        assert_eq!(heads.count(b"a\r\nb\r\n\r\r\n\r\n"), 1);
        assert_eq!(heads.count(b"\r\n\r\n\r\n"), 1);
    }
}
