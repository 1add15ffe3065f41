//! What the two floors (`relay` for the proxies, `canned` for hello-cf) and the hyper reference
//! (`hyper_relay`) share: the accept loop, the process around it, and its flags.

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use demo_common::workers::Workers;
use tokio::net::{TcpListener, TcpStream};

/// Accepts on `listener` forever, each connection handled by `handle` in a task of its own, on
/// the serving threads our programs use: one single-threaded runtime per CPU the process may
/// use, connections dealt in turn.
pub async fn serve_each<H, F>(listener: TcpListener, handle: H)
where
    H: Fn(TcpStream) -> F + Clone + Send + 'static,
    F: Future<Output = io::Result<()>> + Send + 'static,
{
    let workers = Workers::start(demo_common::runtime::available_cpus(), "floor");
    loop {
        let client = match listener.accept().await {
            Ok((client, _)) => client,
            Err(error) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let handle = handle.clone();
        workers.spawn(client, move |client| async move {
            if let Err(error) = handle(client).await {
                tracing::debug!(%error, "connection ended");
            }
        });
    }
}

/// Where a floor's process listens.
#[derive(Debug, clap::Args)]
pub struct Listen {
    /// Port to listen on (0: one the OS picks, logged as `address=`).
    #[arg(long, env = "PORT")]
    port: u16,
    /// Address to listen on.
    #[arg(long, env = "BIND_ADDRESS", default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    bind_address: IpAddr,
}

impl Listen {
    pub fn address(&self) -> SocketAddr {
        SocketAddr::new(self.bind_address, self.port)
    }
}

/// Where a relay's process listens, and where it relays every connection to.
#[derive(Debug, clap::Args)]
pub struct Relay {
    #[command(flatten)]
    pub listen: Listen,
    /// Where every connection is relayed to, as host:port.
    #[arg(long, env = "UPSTREAM")]
    pub upstream: SocketAddr,
}

/// A floor's process: listens on `address` (port 0: one the OS picks), logs it as `address=`
/// for the bench, and serves with `serve` on the runtime our programs use.
pub fn run<S, F>(name: &str, address: SocketAddr, serve: S) -> ExitCode
where
    S: FnOnce(TcpListener) -> F,
    F: Future<Output = ()>,
{
    demo_common::runtime::block_on(async {
        match TcpListener::bind(address).await {
            Ok(listener) => {
                match listener.local_addr() {
                    Ok(address) => tracing::info!(%address, "{name} listening"),
                    Err(error) => tracing::warn!(%error, "listening on an unknown address"),
                }
                serve(listener).await;
                ExitCode::SUCCESS
            }
            Err(error) => {
                tracing::error!(%address, %error, "cannot listen");
                ExitCode::FAILURE
            }
        }
    })
}
