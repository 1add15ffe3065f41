//! The proxy comparison's second reference point: the least an HTTP/1.1 proxy built on hyper
//! does, the library the demo's proxy is built on.
//!
//! Each client connection gets hyper's server and one upstream connection of its own with
//! hyper's client (driven by a task of its own, as hyper's client connections are); each request
//! is handed to it as it came in and the answer handed back as it came out: no header rewritten,
//! no timer, no log line, no pool, no TLS. What the demo's proxy costs above this row is its own
//! code; what this row costs above the byte relay is HTTP as hyper does it.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

/// Accepts on `listener` forever, proxying each connection's requests to `upstream`.
pub async fn serve(listener: TcpListener, upstream: SocketAddr) {
    crate::floor::serve_each(listener, move |client| proxy(client, upstream)).await;
}

/// Serves one client connection's requests over one upstream connection.
async fn proxy(client: TcpStream, upstream: SocketAddr) -> io::Result<()> {
    let upstream = TcpStream::connect(upstream).await?;
    client.set_nodelay(true)?;
    upstream.set_nodelay(true)?;
    // `writev(false)` on both sides, as the demo's programs: one buffer, one `send` per message.
    let (sender, connection) = hyper::client::conn::http1::Builder::new()
        .writev(false)
        .handshake(TokioIo::new(upstream))
        .await
        .map_err(io::Error::other)?;
    tokio::spawn(connection);
    let sender = Arc::new(Mutex::new(sender));
    let service = hyper::service::service_fn(move |request| forward(&sender, request));
    hyper::server::conn::http1::Builder::new()
        .writev(false)
        .serve_connection(TokioIo::new(client), service)
        .await
        .map_err(io::Error::other)
}

/// Queues `request` on the upstream connection: hyper serves a connection's requests one at a
/// time, so the upstream connection is idle whenever a request comes. An upstream that fails
/// ends the client connection.
fn forward(
    sender: &Mutex<SendRequest<Incoming>>,
    request: Request<Incoming>,
) -> impl Future<Output = Result<Response<Incoming>, hyper::Error>> + use<> {
    let answer = sender
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .try_send_request(request);
    async move { answer.await.map_err(|error| error.into_error()) }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use demo_testkit::raw_http::RawConnection;
    use demo_testkit::{ScriptedUpstream, listener, within};

    use super::*;

    const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nhi\n";
    const BOUND: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn requests_go_upstream_over_one_connection_and_answers_come_back() {
        let (upstream, mut received) = ScriptedUpstream::answering(ANSWER).await;
        let (listener, addr) = listener().await;
        tokio::spawn(serve(listener, upstream.addr));
        let mut client = RawConnection::connect(addr, BOUND).await.unwrap();
        for path in ["/a", "/b?x=1"] {
            let request = format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n");
            client.write(request.as_bytes()).await.unwrap();
            let answer = client.read_response(false).await.unwrap();
            assert_eq!((answer.status, answer.text().as_str()), (200, "hi\n"));
            let forwarded = within("the forwarded request", BOUND, received.recv())
                .await
                .unwrap();
            assert!(
                forwarded.starts_with(&format!("GET {path} HTTP/1.1\r\n")),
                "{forwarded:?}"
            );
        }
        assert_eq!(upstream.connections(), 1);
    }
}
