//! `peer`: starts the bench's tuned HAProxy exactly as the bench configures it, one thread, on
//! a loopback listening socket it opens on port 0 and passes as file descriptor 3, under a
//! command of the caller's choosing (`taskset`, `valgrind`). It prints the address as
//! `address=` and then becomes that command, so bench/profile.sh measures the very peer the
//! bench loads, with no port number picked and bound again.
//!
//! ```sh
//! peer --upstream 127.0.0.1:8080 --dir /tmp/peer -- taskset -c 0 valgrind --tool=callgrind
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Command, ExitCode};

use anyhow::Context as _;
use bench_tools::{haproxy, listen};
use clap::Parser;

/// Starts the bench's tuned HAProxy on a socket of its own, under a wrapper command.
#[derive(Debug, Parser)]
#[command(name = "peer", version, about, long_about = None)]
struct Config {
    /// The proxy's upstream, as host:port.
    #[arg(long, env = "UPSTREAM")]
    upstream: SocketAddr,
    /// Directory for the configuration (created if missing).
    #[arg(long, env = "PEER_DIR")]
    dir: PathBuf,
    /// The HAProxy executable.
    #[arg(long, env = "BENCH_HAPROXY", default_value = "haproxy")]
    haproxy: PathBuf,
    /// The command HAProxy runs under, e.g. `taskset -c 0 valgrind --tool=callgrind`.
    #[arg(last = true)]
    wrapper: Vec<String>,
}

fn main() -> ExitCode {
    let config: Config = demo_common::cli::parse_or_exit();
    // `exec` returns only when it failed.
    let Err(error) = start(&config);
    eprintln!("peer: {error:#}");
    ExitCode::FAILURE
}

fn start(config: &Config) -> anyhow::Result<Infallible> {
    std::fs::create_dir_all(&config.dir)
        .with_context(|| format!("cannot create {}", config.dir.display()))?;
    let listener = listen::loopback_listener().context("cannot listen on 127.0.0.1")?;
    let address = listener.local_addr()?;
    let conf = config.dir.join("haproxy.cfg");
    std::fs::write(&conf, haproxy::config(config.upstream, 1))
        .with_context(|| format!("cannot write {}", conf.display()))?;
    let mut argv = config.wrapper.clone();
    argv.push(config.haproxy.display().to_string());
    argv.extend(["-f".into(), conf.display().to_string(), "-db".into()]);
    let mut command = Command::new(&argv[0]);
    command.args(&argv[1..]);
    listen::pass_listener(&mut command, &listener, haproxy::LISTEN_FD);
    println!("peer listening address={address}");
    Err(anyhow::Error::new(command.exec()).context(format!("cannot run {}", argv[0])))
}
