//! An HTTP/1.1 client (hyper) over one loopback connection that reports exactly how each
//! exchange ended: answered, cut after the head, or not answered at all.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::{SendRequest, handshake};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How one request ended, from the client's side.
#[derive(Debug)]
pub enum Exchange {
    /// A complete response.
    Answered { status: StatusCode, body: Bytes },
    /// The head arrived, then the stream ended before the body was complete.
    Cut { status: StatusCode, error: String },
    /// No response head: the connection failed or closed first.
    Unanswered(String),
    /// Nothing conclusive within the deadline.
    TimedOut,
}

/// One client connection (HTTP/1.1, keep-alive).
pub struct Connection {
    sender: SendRequest<Empty<Bytes>>,
    driver: JoinHandle<()>,
}

impl Connection {
    pub async fn open(addr: SocketAddr) -> std::io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = handshake(TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
        let driver = tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Self { sender, driver })
    }

    /// Whether the connection has ended (closed by either side).
    pub fn is_closed(&self) -> bool {
        self.driver.is_finished() || self.sender.is_closed()
    }

    /// GETs `path` with `Host: host` and reads the whole body, all within `deadline`.
    pub async fn get(&mut self, path: &str, host: &str, deadline: Duration) -> Exchange {
        let request = Request::get(path)
            .header("host", host)
            .body(Empty::new())
            .expect("a valid request");
        let until = Instant::now() + deadline;
        let sent = async {
            self.sender
                .ready()
                .await
                .map_err(|error| Exchange::Unanswered(error.to_string()))?;
            self.sender
                .send_request(request)
                .await
                .map_err(|error| Exchange::Unanswered(error.to_string()))
        };
        let response = match tokio::time::timeout_at(until, sent).await {
            Err(_) => return Exchange::TimedOut,
            Ok(Err(exchange)) => return exchange,
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        match tokio::time::timeout_at(until, response.into_body().collect()).await {
            Err(_) => Exchange::TimedOut,
            Ok(Ok(body)) => Exchange::Answered {
                status,
                body: body.to_bytes(),
            },
            Ok(Err(error)) => Exchange::Cut {
                status,
                error: error.to_string(),
            },
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// GETs `path` on a fresh connection to `addr`.
pub async fn get_once(addr: SocketAddr, path: &str, deadline: Duration) -> Exchange {
    match tokio::time::timeout(deadline, Connection::open(addr)).await {
        Err(_) => Exchange::TimedOut,
        Ok(Err(error)) => Exchange::Unanswered(error.to_string()),
        Ok(Ok(mut connection)) => connection.get(path, "resilience.test", deadline).await,
    }
}
