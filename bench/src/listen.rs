//! How the bench learns where a contender listens, without ever picking a free port number,
//! releasing it and hoping nobody takes it before the contender binds it:
//!
//! - programs that can listen on port 0 do, and the bench reads the address they report: ours
//!   log it (`address=`, `proxy_addr=`), Envoy tells it through its admin API;
//! - nginx and HAProxy, which refuse port 0, are handed a listening socket the bench opened on
//!   port 0 and keeps: as file descriptor 3, which nginx takes through its `NGINX` variable
//!   (the mechanism of its binary upgrade) and HAProxy through `bind fd@3`.

use std::fs;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::fd::AsRawFd as _;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};

/// Pending connections the passed socket queues: more than the bench opens at once, so no
/// connection of a 256-connection run waits for a retransmitted SYN.
const BACKLOG: i32 = 4096;

/// A listening socket on a loopback port the OS picks.
pub fn loopback_listener() -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// Makes `listener` the child's file descriptor `fd` (without close-on-exec), whatever number
/// it has in this process.
pub fn pass_listener(command: &mut Command, listener: &TcpListener, fd: i32) {
    let source = listener.as_raw_fd();
    // SAFETY: between fork and exec the closure calls only dup2 and fcntl, which are
    // async-signal-safe, and touches no memory of the parent's but two integers.
    unsafe {
        command.pre_exec(move || {
            if source != fd && libc::dup2(source, fd) == -1 {
                return Err(io::Error::last_os_error());
            }
            // dup2 clears close-on-exec on the copy; the same number keeps it: clear it here.
            if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// The address logged as `key=<address>` in `log`, waited for until `deadline`; `alive` is
/// asked between reads so a child that died is reported at once.
pub fn logged_address(
    log: &Path,
    key: &str,
    deadline: Duration,
    mut alive: impl FnMut() -> bool,
) -> Result<SocketAddr, String> {
    let started = Instant::now();
    loop {
        if let Some(address) = fs::read_to_string(log)
            .ok()
            .and_then(|text| find_logged_address(&text, key))
        {
            return Ok(address);
        }
        if !alive() {
            return Err(format!("exited before logging `{key}=`"));
        }
        if started.elapsed() > deadline {
            return Err(format!("logged no `{key}=` within {deadline:?}"));
        }
        thread::sleep(Duration::from_micros(200));
    }
}

/// The first `key=<address>` in a log text (tracing's text format; JSON's `"key":"<address>"`
/// too).
pub fn find_logged_address(text: &str, key: &str) -> Option<SocketAddr> {
    let patterns = [format!("{key}="), format!("\"{key}\":\"")];
    text.lines().find_map(|line| {
        patterns.iter().find_map(|pattern| {
            let start = line.find(pattern.as_str())? + pattern.len();
            let value: String = line[start..]
                .chars()
                .take_while(|c| !c.is_whitespace() && *c != '"')
                .collect();
            value.parse().ok()
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read as _, Write as _};
    use std::net::TcpStream;

    #[test]
    fn finds_the_address_in_text_and_json_log_lines() {
        let text = "2026-12-01T02:00:00Z  INFO hello_cf: hello-cf listening address=127.0.0.1:41234 version=V1\n";
        assert_eq!(
            find_logged_address(text, "address"),
            Some(SocketAddr::from(([127, 0, 0, 1], 41234)))
        );
        let json = r#"{"fields":{"proxy_addr":"127.0.0.1:5","admin_addr":"127.0.0.1:6"}}"#;
        assert_eq!(
            find_logged_address(json, "admin_addr"),
            Some(SocketAddr::from(([127, 0, 0, 1], 6)))
        );
        assert_eq!(find_logged_address("no address here\n", "address"), None);
        assert_eq!(find_logged_address("address=nonsense\n", "address"), None);
    }

    #[test]
    fn a_child_serves_on_the_passed_socket() {
        let listener = loopback_listener().expect("listener");
        let addr = listener.local_addr().expect("address");
        // python3 stands in for nginx: it accepts on file descriptor 3 and answers once.
        let script = "import socket; s = socket.socket(fileno=3); c, _ = s.accept(); \
                      c.recv(100); c.sendall(b'on fd 3')";
        let mut command = Command::new("python3");
        command.arg("-c").arg(script);
        pass_listener(&mut command, &listener, 3);
        let mut child = command.spawn().expect("python3 starts");
        let mut stream = TcpStream::connect(addr).expect("connects");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        stream.write_all(b"hi").expect("writes");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).expect("reads");
        assert_eq!(answer, "on fd 3");
        assert!(child.wait().expect("exits").success());
    }

    #[test]
    fn logged_address_gives_up_when_the_child_is_gone() {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("x.log");
        fs::write(&log, "starting\n").expect("log");
        let error = logged_address(&log, "address", Duration::from_secs(20), || false)
            .expect_err("never logged");
        assert!(error.starts_with("exited before logging"), "{error}");
    }
}
