//! HAProxy as its users would tune it for this job: an HTTP reverse proxy in front of one
//! upstream, one thread per CPU it is given, upstream connections shared by all clients
//! (`http-reuse always`), no logging, timeouts long enough never to cut a benchmark connection.
//!
//! It listens on a socket the bench opened and passed as file descriptor [`LISTEN_FD`]
//! (`bind fd@3`), so no port number is released and bound again.

use std::fmt::Write as _;
use std::net::SocketAddr;

/// The file descriptor the listening socket is passed on.
pub const LISTEN_FD: i32 = 3;

/// The complete haproxy.cfg: `threads` threads, forwarding to `upstream`.
pub fn config(upstream: SocketAddr, threads: usize) -> String {
    let mut conf = String::new();
    let _ = write!(
        conf,
        "\
global
  nbthread {threads}
  # 2 descriptors per connection must fit the bench's `ulimit -n 8192`.
  maxconn 3000

defaults
  mode http
  option http-keep-alive
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout http-request 10s
  timeout http-keep-alive 60s

frontend proxy
  bind fd@{LISTEN_FD}
  default_backend hello

backend hello
  http-reuse always
  server hello {upstream}
"
    );
    conf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_thread_per_cpu_reuses_upstream_connections_and_listens_on_the_passed_socket() {
        let conf = config(SocketAddr::from(([127, 0, 0, 1], 9000)), 2);
        for line in [
            "nbthread 2",
            "http-reuse always",
            "bind fd@3",
            "server hello 127.0.0.1:9000",
            "mode http",
        ] {
            assert!(conf.contains(line), "missing {line}:\n{conf}");
        }
        assert!(!conf.contains("log "), "no logging");
    }
}
