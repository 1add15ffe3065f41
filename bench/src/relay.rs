//! The proxy comparison's reference point: a TCP relay that does no HTTP at all.
//!
//! Each client connection gets one upstream connection of its own and the bytes are copied both
//! ways as they come, as a layer-4 proxy does: no parsing, no headers, no timers, no pool, on
//! the runtime our programs use. Per request it costs what the kernel charges for two loopback
//! TCP round trips and next to nothing else, a floor no HTTP proxy can go below on the same
//! machine.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};

/// Accepts on `listener` forever, relaying each connection to `upstream`.
pub async fn serve(listener: TcpListener, upstream: SocketAddr) {
    crate::floor::serve_each(listener, move |client| relay(client, upstream)).await;
}

/// Copies both ways until both sides have closed.
async fn relay(mut client: TcpStream, upstream: SocketAddr) -> std::io::Result<()> {
    let mut upstream = TcpStream::connect(upstream).await?;
    client.set_nodelay(true)?;
    upstream.set_nodelay(true)?;
    tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use demo_testkit::{ScriptedUpstream, listener, within};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nhi\n";
    const BOUND: Duration = Duration::from_secs(5);

    /// The relay on a port the OS picked, in front of `upstream`.
    async fn relay_to(upstream: &ScriptedUpstream) -> SocketAddr {
        let (listener, addr) = listener().await;
        tokio::spawn(serve(listener, upstream.addr));
        addr
    }

    #[tokio::test]
    async fn requests_and_answers_pass_through_unchanged_over_one_upstream_connection() {
        let (upstream, mut received) = ScriptedUpstream::answering(ANSWER).await;
        let mut client = TcpStream::connect(relay_to(&upstream).await).await.unwrap();
        for path in ["/a", "/b?x=1"] {
            let request = format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n");
            client.write_all(request.as_bytes()).await.unwrap();
            let mut answer = vec![0; ANSWER.len()];
            within("the answer", BOUND, client.read_exact(&mut answer))
                .await
                .unwrap();
            assert_eq!(answer, ANSWER);
            let forwarded = within("the forwarded request", BOUND, received.recv()).await;
            assert_eq!(forwarded.as_deref(), Some(request.as_str()));
        }
        assert_eq!(upstream.connections(), 1);
    }

    #[tokio::test]
    async fn an_upstream_that_closes_after_answering_closes_the_client_too() {
        let upstream = ScriptedUpstream::start(|mut connection| async move {
            connection.read_head().await;
            connection.write(ANSWER).await;
            // Dropped here: the upstream closes, as after `Connection: close`.
        })
        .await;
        let mut client = TcpStream::connect(relay_to(&upstream).await).await.unwrap();
        client
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        within("the close", BOUND, client.read_to_end(&mut answer))
            .await
            .unwrap();
        assert_eq!(answer, ANSWER);
    }
}
