//! A loopback listener that records every connection made to it, for a test run with every
//! proxy variable pointing at it: the tests must reach their loopback peers directly, so the
//! record must stay empty.
//!
//! `proxy-trap <address file> <record file>`: listens on 127.0.0.1, port from the OS, writes
//! `127.0.0.1:<port>` to the address file once listening, and appends one line per connection
//! (the peer and the first line it sent, e.g. `CONNECT 127.0.0.1:41234 HTTP/1.1`) to the record
//! file. It answers `502` and runs until killed.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [address_file, record_file] = args.as_slice() else {
        eprintln!("usage: proxy-trap <address file> <record file>");
        return ExitCode::from(2);
    };
    let listener = match TcpListener::bind("127.0.0.1:0") {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("proxy-trap: cannot listen on 127.0.0.1: {error}");
            return ExitCode::FAILURE;
        }
    };
    let address = listener.local_addr().expect("a bound listener's address");
    // Written whole under another name, then renamed: a reader never sees half an address.
    let partial = format!("{address_file}.partial");
    if let Err(error) = std::fs::write(&partial, format!("{address}\n"))
        .and_then(|()| std::fs::rename(&partial, address_file))
    {
        eprintln!("proxy-trap: cannot write {address_file}: {error}");
        return ExitCode::FAILURE;
    }
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let record_file = record_file.clone();
        std::thread::spawn(move || record(stream, &record_file));
    }
    ExitCode::SUCCESS
}

fn record(stream: TcpStream, record_file: &str) {
    let peer = stream
        .peer_addr()
        .map_or_else(|_| "unknown peer".to_owned(), |peer| peer.to_string());
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut first_line = String::new();
    let mut reader = BufReader::new(&stream);
    let _ = reader.read_line(&mut first_line);
    let line = format!("{peer}: {}\n", first_line.trim_end());
    if let Ok(mut file) = OpenOptions::new()
        .create(true)
        .append(true)
        .open(record_file)
    {
        let _ = file.write_all(line.as_bytes());
    }
    let _ = (&stream).write_all(
        b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 22\r\nconnection: close\r\n\r\nproxy-trap: recorded\r\n",
    );
}
