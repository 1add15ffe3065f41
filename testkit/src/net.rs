//! Loopback sockets numbered by the OS: a listener on port 0 with its address read back, a port
//! that refuses connections and stays reserved, and a peer that never answers.
//!
//! Which dead peer to use:
//! - [`Refused`]: connecting fails at once with "connection refused" (the kernel answers the
//!   handshake with a reset). It is a socket bound to its port and not listening, so the port
//!   stays ours: nothing else can take it, and [`Refused::listen`] brings a server up on the
//!   very same port (an upstream that comes back) without releasing it in between.
//! - [`Silent`]: connecting succeeds (the kernel completes the handshake into the backlog), and
//!   then nothing is ever read or answered: a black hole, for timeouts. Past the backlog,
//!   handshakes go unanswered too.

use std::net::{Ipv4Addr, SocketAddr};

use tokio::net::{TcpListener, TcpSocket};

/// `127.0.0.1:0`.
pub const LOOPBACK_ANY_PORT: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

/// A listener on loopback, on a port the OS picked, and its address.
pub async fn listener() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind(LOOPBACK_ANY_PORT)
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("a bound listener's address");
    (listener, addr)
}

/// [`listener`] without a runtime (blocking code, or to hand to a server that takes one).
pub fn std_listener() -> (std::net::TcpListener, SocketAddr) {
    let listener = std::net::TcpListener::bind(LOOPBACK_ANY_PORT).expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("a bound listener's address");
    (listener, addr)
}

/// A loopback port that refuses every connection and stays reserved while this value lives:
/// a socket bound to it, never listening.
#[derive(Debug)]
pub struct Refused {
    reservation: TcpSocket,
    addr: SocketAddr,
}

impl Refused {
    pub fn new() -> Self {
        let reservation = reusable_socket();
        reservation
            .bind(LOOPBACK_ANY_PORT)
            .expect("bind 127.0.0.1:0");
        let addr = reservation.local_addr().expect("a bound socket's address");
        Self { reservation, addr }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A listener on this same port (the upstream comes up). Dropping it makes the port refuse
    /// again; the reservation keeps the port ours throughout, so it can come up again. Needs a
    /// Tokio runtime.
    pub fn listen(&self) -> TcpListener {
        let socket = reusable_socket();
        socket.bind(self.addr).expect("bind the reserved port");
        socket.listen(1024).expect("listen on the reserved port")
    }

    /// The reservation itself, for code that wants the raw socket.
    pub fn socket(&self) -> &TcpSocket {
        &self.reservation
    }
}

impl std::fmt::Display for Refused {
    /// The address, as `127.0.0.1:<port>`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.addr.fmt(f)
    }
}

impl Default for Refused {
    fn default() -> Self {
        Self::new()
    }
}

/// `SO_REUSEPORT` lets the reservation and a listener share the port; only sockets of this
/// user that also ask for it could join, and the OS never hands the port out for port 0.
fn reusable_socket() -> TcpSocket {
    let socket = TcpSocket::new_v4().expect("a TCP socket");
    socket.set_reuseport(true).expect("SO_REUSEPORT");
    socket
}

/// A loopback peer that completes handshakes and never reads or answers: listening, never
/// accepting.
#[derive(Debug)]
pub struct Silent {
    _listener: std::net::TcpListener,
    addr: SocketAddr,
}

impl Silent {
    pub fn new() -> Self {
        let (listener, addr) = std_listener();
        Self {
            _listener: listener,
            addr,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl std::fmt::Display for Silent {
    /// The address, as `127.0.0.1:<port>`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.addr.fmt(f)
    }
}

impl Default for Silent {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;

    #[tokio::test]
    async fn a_refused_port_refuses_comes_up_and_refuses_again() {
        let refused = Refused::new();
        let error = TcpStream::connect(refused.addr()).await.unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::ConnectionRefused);

        let listener = refused.listen();
        assert_eq!(listener.local_addr().unwrap(), refused.addr());
        let mut client = TcpStream::connect(refused.addr()).await.unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        client.write_all(b"x").await.unwrap();
        let mut byte = [0u8; 1];
        server.read_exact(&mut byte).await.unwrap();
        drop((listener, server, client));

        let error = TcpStream::connect(refused.addr()).await.unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::ConnectionRefused);
        // Still ours: a second listener comes up on it.
        drop(refused.listen());
    }

    #[tokio::test]
    async fn the_os_never_hands_out_a_reserved_port() {
        let refused = Refused::new();
        for _ in 0..200 {
            let (_, addr) = listener().await;
            assert_ne!(addr, refused.addr());
        }
    }

    #[tokio::test]
    async fn a_silent_peer_connects_and_never_answers() {
        let silent = Silent::new();
        let mut stream = TcpStream::connect(silent.addr()).await.unwrap();
        stream.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_millis(200), stream.read(&mut byte)).await;
        assert!(read.is_err(), "the silent peer answered: {read:?}");
    }
}
