//! app-that-calls-externally: the in-mesh proxy. Every request on the forwarding port goes to
//! one upstream URL (`UPSTREAM_URL`, e.g. `http://hello.external/`) over a keep-alive
//! connection that stays with the client's connection; the upstream's status, headers (minus
//! hop-by-hop ones) and body come back unchanged, so an injected `418 fault filter abort` reaches the caller as exactly that.
//! Health and readiness live on a separate admin port and never touch the upstream.
//!
//! Tests start the pieces in-process on port 0: [`bind`] then [`Bound::serve`].

mod body;
pub mod config;
mod connect;
pub mod headers;
mod proxy;
mod upstream;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use demo_common::server::{Drain, Readiness, Server, ServerOptions, health_routes};

pub use body::{BodyError, Direction, ProxyBody};
pub use config::{Config, UpstreamProxy, UpstreamUrl};
pub use connect::SetupError;
pub use proxy::Proxy;

/// A future behind a pointer: one pointer to move, whatever the future's size.
type BoxFuture<'a, T> = std::pin::Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The admin port answers only quick health checks, so its drain is short.
const ADMIN_DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Proxy or TLS settings are unusable (a configuration error).
    #[error(transparent)]
    Setup(#[from] SetupError),
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
}

/// Both listeners bound and the client built; nothing served yet.
pub struct Bound {
    proxy: Proxy,
    forward: Server,
    admin: Server,
    proxy_addr: SocketAddr,
    admin_addr: SocketAddr,
}

/// Builds the proxy for `config` and binds its forwarding and admin ports.
pub async fn bind(config: &Config) -> Result<Bound, StartError> {
    let proxy = Proxy::new(config)?;
    let forward_options = ServerOptions {
        drain_timeout: config.drain_timeout,
        answer_timeout: Some(proxy.answer_timeout()),
        workers: demo_common::runtime::serving_threads(config.workers),
        ..ServerOptions::default()
    };
    let admin_options = ServerOptions {
        drain_timeout: ADMIN_DRAIN_TIMEOUT,
        ..ServerOptions::default()
    };
    let (forward, proxy_addr) = listen(config, config.port, forward_options).await?;
    let (admin, admin_addr) = listen(config, config.admin_port, admin_options).await?;
    Ok(Bound {
        proxy,
        forward,
        admin,
        proxy_addr,
        admin_addr,
    })
}

async fn listen(
    config: &Config,
    port: u16,
    options: ServerOptions,
) -> Result<(Server, SocketAddr), StartError> {
    let address = SocketAddr::new(config.bind_address, port);
    let bind_error = |source| StartError::Bind { address, source };
    let server = Server::bind(address, options).await.map_err(bind_error)?;
    let local = server.local_addr().map_err(bind_error)?;
    Ok((server, local))
}

impl Bound {
    /// Where the forwarding port listens.
    pub fn proxy_addr(&self) -> SocketAddr {
        self.proxy_addr
    }

    /// Where the admin (health) port listens.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    pub fn proxy(&self) -> &Proxy {
        &self.proxy
    }

    /// Serves until `shutdown` resolves; then readiness fails, the forwarding port stops
    /// accepting and drains its in-flight requests, and the admin port closes last.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Drain {
        let readiness = Readiness::ready();
        let (stop_admin, admin_stopped) = tokio::sync::oneshot::channel::<()>();
        let admin = tokio::spawn(self.admin.serve(health_routes(readiness.clone()), async {
            let _ = admin_stopped.await;
        }));
        let proxy = self.proxy;
        let drain = self
            .forward
            .serve_connections(
                move |peer, clock| proxy.connection_service(peer, clock),
                async move {
                    shutdown.await;
                    readiness.set_not_ready();
                },
            )
            .await;
        let _ = stop_admin.send(());
        let _ = admin.await;
        drain
    }
}
