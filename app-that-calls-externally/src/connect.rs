//! Opening connections to the one upstream: directly, through an HTTP proxy (absolute-form
//! requests, as `http_proxy` asks), or through a CONNECT tunnel for an https upstream, with
//! TLS verified against the system roots plus an optional extra CA.
//!
//! The route is decided once at start-up: there is only one upstream, so there is nothing
//! to match per request.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderValue, Uri};
use hyper_util::client::proxy::matcher::{Intercept, Matcher};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::config::{UpstreamProxy, UpstreamUrl};

/// A host and port to open a TCP connection to.
#[derive(Debug, Clone)]
struct Endpoint {
    host: String,
    port: u16,
}

/// How connections reach the upstream.
#[derive(Debug, Clone)]
pub(crate) enum Route {
    Direct,
    /// Plain-HTTP upstream through an HTTP proxy: requests go in absolute form.
    Forward {
        proxy: Uri,
        credentials: Option<HeaderValue>,
    },
    /// HTTPS upstream through an HTTP proxy: a CONNECT tunnel, then TLS to the upstream.
    Tunnel {
        proxy: Uri,
        credentials: Option<HeaderValue>,
    },
}

impl Route {
    /// Whether requests go in absolute form (`GET http://host/path`), as an HTTP proxy
    /// expects; otherwise in origin form (`GET /path`).
    pub(crate) fn absolute_form(&self) -> bool {
        matches!(self, Route::Forward { .. })
    }

    /// Credentials the client must put on each request (only in absolute-form mode; a tunnel
    /// sends them once, on CONNECT).
    pub(crate) fn request_credentials(&self) -> Option<&HeaderValue> {
        match self {
            Route::Forward { credentials, .. } => credentials.as_ref(),
            _ => None,
        }
    }
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Route::Direct => f.write_str("direct"),
            Route::Forward { proxy, .. } => write!(f, "via HTTP proxy {proxy}"),
            Route::Tunnel { proxy, .. } => write!(f, "via CONNECT tunnel through {proxy}"),
        }
    }
}

/// Problems in the proxy or TLS settings, found at start-up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("invalid value '{value}' for {source_name}: {reason}")]
    Proxy {
        source_name: String,
        value: String,
        reason: String,
    },
    #[error("invalid value '{}' for --upstream-ca-cert (env UPSTREAM_CA_CERT): {reason}", path.display())]
    CaCert { path: PathBuf, reason: String },
    #[error("cannot set up TLS for the upstream: {0}")]
    Tls(#[source] rustls::Error),
}

/// Decides the route for `upstream` from `setting`.
pub(crate) fn route_for(
    upstream: &UpstreamUrl,
    setting: &UpstreamProxy,
) -> Result<Route, SetupError> {
    let (source_name, value, no_proxy) = match setting {
        UpstreamProxy::Direct => return Ok(Route::Direct),
        UpstreamProxy::Url(url) => ("the upstream proxy".to_owned(), url.clone(), String::new()),
        UpstreamProxy::Environment => {
            let names: &[&str] = if upstream.is_https() {
                &["https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"]
            } else {
                &["http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"]
            };
            let Some((name, value)) = first_env(names) else {
                return Ok(Route::Direct);
            };
            let no_proxy =
                first_env(&["no_proxy", "NO_PROXY"]).map_or_else(String::new, |(_, v)| v);
            (format!("env {name}"), value, no_proxy)
        }
    };
    let invalid = |reason: &str| SetupError::Proxy {
        source_name: source_name.clone(),
        value: without_credentials(&value),
        reason: reason.to_owned(),
    };
    let origin = upstream.origin();
    // The matcher ignores values it cannot parse; check the value alone first so a typo is
    // an error, not a silent direct connection.
    let intercept = Matcher::builder()
        .all(value.clone())
        .build()
        .intercept(&origin)
        .ok_or_else(|| invalid("not a proxy URL (expected http://host:port)"))?;
    let applies = Matcher::builder()
        .all(value.clone())
        .no(no_proxy)
        .build()
        .intercept(&origin)
        .is_some();
    if !applies {
        return Ok(Route::Direct);
    }
    let proxy = proxy_uri(&intercept).map_err(|reason| invalid(&reason))?;
    let credentials = intercept.basic_auth().cloned();
    Ok(if upstream.is_https() {
        Route::Tunnel { proxy, credentials }
    } else {
        Route::Forward { proxy, credentials }
    })
}

/// `scheme://user:pass@host` shown as `scheme://***@host`, so errors never print a password.
fn without_credentials(url: &str) -> String {
    let authority_start = url.find("://").map_or(0, |index| index + 3);
    match url[authority_start..]
        .split('/')
        .next()
        .and_then(|authority| authority.rfind('@'))
    {
        Some(at) => format!(
            "{}***{}",
            &url[..authority_start],
            &url[authority_start + at..]
        ),
        None => url.to_owned(),
    }
}

fn first_env(names: &[&str]) -> Option<(String, String)> {
    names.iter().find_map(|name| match std::env::var(name) {
        Ok(value) if !value.trim().is_empty() => {
            Some(((*name).to_owned(), value.trim().to_owned()))
        }
        _ => None,
    })
}

fn proxy_uri(intercept: &Intercept) -> Result<Uri, String> {
    let uri = intercept.uri();
    match uri.scheme_str() {
        Some("http") => Ok(uri.clone()),
        Some("https") => {
            Err("TLS to the proxy itself is not supported; use an http:// proxy URL".into())
        }
        Some(other) => Err(format!(
            "{other} proxies are not supported; use an http:// proxy URL"
        )),
        None => Err("the proxy URL has no scheme".into()),
    }
}

fn endpoint_of(uri: &Uri) -> Endpoint {
    let host = uri.host().unwrap_or_default();
    Endpoint {
        host: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        port: uri.port_u16().unwrap_or(80),
    }
}

/// Reads the PEM certificates of `path`, to be trusted in addition to the system roots.
pub(crate) fn read_ca_certificates(
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, SetupError> {
    let invalid = |reason: String| SetupError::CaCert {
        path: path.to_owned(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|error| invalid(error.to_string()))?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| invalid(format!("not valid PEM: {error}")))?;
    if certificates.is_empty() {
        return Err(invalid("holds no PEM certificate".into()));
    }
    Ok(certificates)
}

/// TLS settings for an https upstream: system roots plus `extra_roots`, HTTP/1.1 over ALPN.
fn tls_connector(extra_roots: Vec<CertificateDer<'static>>) -> Result<TlsConnector, SetupError> {
    demo_common::tls::install_crypto_provider();
    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()));
    let verifier =
        rustls_platform_verifier::Verifier::new_with_extra_roots(extra_roots, provider.clone())
            .map_err(SetupError::Tls)?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(SetupError::Tls)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

/// Why a connection to the upstream could not be opened. The text ends up in the 502 body.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("DNS lookup of {host} failed: {source}")]
    Dns { host: String, source: io::Error },
    #[error("{host} resolved to no address")]
    NoAddress { host: String },
    #[error("{} ({address})", describe_io(source))]
    Tcp {
        address: std::net::SocketAddr,
        source: io::Error,
    },
    #[error("proxy {proxy}: {source}")]
    Proxy {
        proxy: String,
        #[source]
        source: Box<ConnectError>,
    },
    #[error("proxy {proxy} refused the tunnel: {reason}")]
    Tunnel { proxy: String, reason: String },
    #[error("TLS handshake failed: {}", describe_io(source))]
    Tls { source: io::Error },
}

/// A short, lower-case reason for common socket errors; the OS text otherwise.
pub(crate) fn describe_io(error: &io::Error) -> String {
    demo_common::error::io_reason(error.kind()).map_or_else(|| error.to_string(), str::to_owned)
}

/// Opens new upstream connections along the configured route.
pub(crate) struct Connector(ConnectorInner);

struct ConnectorInner {
    upstream: Endpoint,
    connect_target: String,
    route: Route,
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl Connector {
    pub(crate) fn new(
        upstream: &UpstreamUrl,
        route: Route,
        extra_roots: Vec<CertificateDer<'static>>,
    ) -> Result<Self, SetupError> {
        let tls = if upstream.is_https() {
            let name = ServerName::try_from(upstream.host().to_owned()).map_err(|_| {
                SetupError::Tls(rustls::Error::General(format!(
                    "{} is not a valid TLS server name",
                    upstream.host()
                )))
            })?;
            Some((tls_connector(extra_roots)?, name))
        } else {
            None
        };
        Ok(Self(ConnectorInner {
            upstream: Endpoint {
                host: upstream.host().to_owned(),
                port: upstream.port(),
            },
            connect_target: upstream.connect_target(),
            route,
            tls,
        }))
    }
}

impl Connector {
    pub(crate) async fn connect(&self) -> Result<TokioIo<UpstreamStream>, ConnectError> {
        self.0.connect().await.map(TokioIo::new)
    }
}

impl ConnectorInner {
    async fn connect(&self) -> Result<UpstreamStream, ConnectError> {
        match &self.route {
            Route::Direct => {
                let tcp = tcp_connect(&self.upstream).await?;
                self.secure(tcp).await
            }
            Route::Forward { proxy, .. } => {
                let tcp = tcp_connect(&endpoint_of(proxy))
                    .await
                    .map_err(|error| proxy_error(proxy, error))?;
                self.secure(tcp).await
            }
            Route::Tunnel { proxy, credentials } => {
                let mut tcp = tcp_connect(&endpoint_of(proxy))
                    .await
                    .map_err(|error| proxy_error(proxy, error))?;
                open_tunnel(&mut tcp, &self.connect_target, credentials.as_ref())
                    .await
                    .map_err(|reason| ConnectError::Tunnel {
                        proxy: proxy_name(proxy),
                        reason,
                    })?;
                self.secure(tcp).await
            }
        }
    }

    /// Adds TLS when the upstream is https.
    async fn secure(&self, tcp: TcpStream) -> Result<UpstreamStream, ConnectError> {
        let io = match &self.tls {
            None => Io::Plain(tcp),
            Some((connector, name)) => {
                let tls = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|source| ConnectError::Tls { source })?;
                Io::Tls(Box::new(tls))
            }
        };
        Ok(UpstreamStream { io })
    }
}

fn proxy_error(proxy: &Uri, error: ConnectError) -> ConnectError {
    ConnectError::Proxy {
        proxy: proxy_name(proxy),
        source: Box::new(error),
    }
}

/// `host:port` of a proxy, for messages (the URL kept here never carries credentials).
fn proxy_name(proxy: &Uri) -> String {
    proxy
        .authority()
        .map_or_else(|| proxy.to_string(), ToString::to_string)
}

/// Resolves `endpoint` and connects to its addresses in turn.
async fn tcp_connect(endpoint: &Endpoint) -> Result<TcpStream, ConnectError> {
    // An IP literal is parsed, not looked up.
    let addresses = tokio::net::lookup_host((endpoint.host.as_str(), endpoint.port))
        .await
        .map_err(|source| ConnectError::Dns {
            host: endpoint.host.clone(),
            source,
        })?;
    let mut last_error = None;
    for address in addresses {
        match TcpStream::connect(address).await {
            Ok(stream) => {
                // Requests are small and latency matters more than packet count.
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(source) => last_error = Some(ConnectError::Tcp { address, source }),
        }
    }
    Err(last_error.unwrap_or_else(|| ConnectError::NoAddress {
        host: endpoint.host.clone(),
    }))
}

/// Longest CONNECT response head accepted from a proxy.
const MAX_TUNNEL_RESPONSE: usize = 8 * 1024;

/// Asks the proxy on `tcp` for a tunnel to `target` (`host:port`); Err is the reason.
async fn open_tunnel(
    tcp: &mut TcpStream,
    target: &str,
    credentials: Option<&HeaderValue>,
) -> Result<(), String> {
    let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n").into_bytes();
    if let Some(credentials) = credentials {
        request.extend_from_slice(b"Proxy-Authorization: ");
        request.extend_from_slice(credentials.as_bytes());
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"\r\n");
    tcp.write_all(&request)
        .await
        .map_err(|error| describe_io(&error))?;

    let mut head = Vec::with_capacity(512);
    let end = loop {
        if let Some(end) = head.windows(4).position(|window| window == b"\r\n\r\n") {
            break end + 4;
        }
        if head.len() >= MAX_TUNNEL_RESPONSE {
            return Err("response head too long".into());
        }
        let mut chunk = [0u8; 1024];
        let read = tcp
            .read(&mut chunk)
            .await
            .map_err(|error| describe_io(&error))?;
        if read == 0 {
            return Err("connection closed before the response".into());
        }
        head.extend_from_slice(&chunk[..read]);
    };
    // The upstream speaks first only after our TLS hello, so nothing may follow the head.
    if end != head.len() {
        return Err("unexpected data after the response head".into());
    }
    let status_line = head
        .split(|&byte| byte == b'\r')
        .next()
        .map(String::from_utf8_lossy)
        .unwrap_or_default();
    let status = status_line.split_whitespace().nth(1).unwrap_or_default();
    if status.len() == 3 && status.starts_with('2') {
        Ok(())
    } else {
        Err(format!("it answered '{status_line}'"))
    }
}

/// A connection to the upstream (or to the proxy in front of it).
pub(crate) struct UpstreamStream {
    io: Io,
}

enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for UpstreamStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Io::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.io {
            Io::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Io::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.io {
            Io::Plain(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            Io::Tls(stream) => Pin::new(stream.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(stream) => stream.is_write_vectored(),
            Io::Tls(stream) => stream.is_write_vectored(),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Io::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            Io::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> UpstreamUrl {
        text.parse().unwrap()
    }

    #[test]
    fn explicit_proxy_url_routes_plain_http_in_absolute_form() {
        let route = route_for(
            &url("http://hello.external/"),
            &UpstreamProxy::Url("http://user:secret@127.0.0.1:3128".into()),
        )
        .unwrap();
        let Route::Forward { proxy, credentials } = &route else {
            panic!("expected a forward route, got {route:?}");
        };
        assert_eq!(proxy.authority().unwrap(), "127.0.0.1:3128");
        assert_eq!(credentials.as_ref().unwrap(), "Basic dXNlcjpzZWNyZXQ=");
        assert!(route.request_credentials().is_some());
    }

    #[test]
    fn https_upstream_is_tunnelled() {
        let route = route_for(
            &url("https://hello.external/"),
            &UpstreamProxy::Url("127.0.0.1:3128".into()),
        )
        .unwrap();
        assert!(
            matches!(
                route,
                Route::Tunnel {
                    credentials: None,
                    ..
                }
            ),
            "{route:?}"
        );
        assert!(route.request_credentials().is_none());
    }

    #[test]
    fn unusable_proxy_urls_are_errors_not_silent_direct_routes() {
        for value in [
            "http://",
            "socks5://127.0.0.1:1080",
            "https://127.0.0.1:3128",
            "not a url",
        ] {
            let error =
                route_for(&url("http://h/"), &UpstreamProxy::Url(value.into())).unwrap_err();
            assert!(error.to_string().contains(value), "{error}");
        }
    }

    #[test]
    fn errors_do_not_print_proxy_passwords() {
        let error = route_for(
            &url("http://h/"),
            &UpstreamProxy::Url("socks5://user:secret@127.0.0.1:1080".into()),
        )
        .unwrap_err()
        .to_string();
        assert!(!error.contains("secret"), "{error}");
        assert!(error.contains("socks5://***@127.0.0.1:1080"), "{error}");
        assert_eq!(
            without_credentials("127.0.0.1:3128/a@b"),
            "127.0.0.1:3128/a@b"
        );
        assert_eq!(without_credentials("u:p@proxy:3128"), "***@proxy:3128");
    }

    #[test]
    fn direct_is_direct() {
        let route = route_for(&url("http://h/"), &UpstreamProxy::Direct).unwrap();
        assert!(matches!(route, Route::Direct));
        assert_eq!(route.to_string(), "direct");
    }

    #[test]
    fn proxy_endpoints_drop_ipv6_brackets_and_default_to_port_80() {
        let endpoint = endpoint_of(&"http://[::1]:3128".parse().unwrap());
        assert_eq!((endpoint.host.as_str(), endpoint.port), ("::1", 3128));
        let endpoint = endpoint_of(&"http://proxy.local".parse().unwrap());
        assert_eq!((endpoint.host.as_str(), endpoint.port), ("proxy.local", 80));
    }

    #[test]
    fn io_reasons_are_short() {
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(describe_io(&refused), "connection refused");
    }

    #[test]
    fn ca_file_problems_name_the_flag() {
        let error = read_ca_certificates(Path::new("/nonexistent/ca.pem")).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("--upstream-ca-cert (env UPSTREAM_CA_CERT)"),
            "{error}"
        );
    }
}
