//! The proxy comparison's reference point: a TCP relay that does no HTTP at all.
//!
//! Each client connection gets one upstream connection of its own and the bytes are copied both
//! ways as they come, as a layer-4 proxy does: no parsing, no headers, no timers, no pool, one
//! thread. Per request it costs what the kernel charges for two loopback TCP round trips and
//! next to nothing else, a floor no HTTP proxy can go below on the same machine.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};

/// Accepts on `listener` forever, relaying each connection to `upstream`.
pub async fn serve(listener: TcpListener, upstream: SocketAddr) {
    loop {
        let client = match listener.accept().await {
            Ok((client, _)) => client,
            Err(error) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        tokio::spawn(async move {
            if let Err(error) = relay(client, upstream).await {
                tracing::debug!(%error, "relay connection ended");
            }
        });
    }
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
    use std::net::Ipv4Addr;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nhi\n";

    /// An upstream that answers every read with ANSWER and counts what it was sent.
    async fn upstream() -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>) {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (sent, received) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut buffer = [0; 1024];
            loop {
                let read = stream.read(&mut buffer).await.unwrap();
                if read == 0 {
                    return;
                }
                sent.send(buffer[..read].to_vec()).unwrap();
                stream.write_all(ANSWER).await.unwrap();
            }
        });
        (addr, received)
    }

    #[tokio::test]
    async fn requests_and_answers_pass_through_unchanged_over_one_upstream_connection() {
        let (upstream, mut received) = upstream().await;
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, upstream));
        let mut client = TcpStream::connect(addr).await.unwrap();
        for path in ["/a", "/b?x=1"] {
            let request = format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n");
            client.write_all(request.as_bytes()).await.unwrap();
            let mut answer = vec![0; ANSWER.len()];
            tokio::time::timeout(Duration::from_secs(5), client.read_exact(&mut answer))
                .await
                .expect("answer within 5 s")
                .unwrap();
            assert_eq!(answer, ANSWER);
            let forwarded = received.recv().await.unwrap();
            assert_eq!(forwarded, request.as_bytes());
        }
    }

    #[tokio::test]
    async fn an_upstream_that_closes_after_answering_closes_the_client_too() {
        let upstream = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let upstream_addr = upstream.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = upstream.accept().await.unwrap();
            let mut buffer = [0; 1024];
            let _ = stream.read(&mut buffer).await.unwrap();
            stream.write_all(ANSWER).await.unwrap();
            // Dropped here: the upstream closes, as after `Connection: close`.
        });
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, upstream_addr));
        let mut client = TcpStream::connect(addr).await.unwrap();
        client
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut answer))
            .await
            .expect("closed within 5 s")
            .unwrap();
        assert_eq!(answer, ANSWER);
    }
}
