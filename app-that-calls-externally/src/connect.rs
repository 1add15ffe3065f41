//! Opening connections to the one upstream from hyper-util and hyper-rustls pieces: directly,
//! through an HTTP proxy (absolute-form requests, as `http_proxy` asks), or through a CONNECT
//! tunnel for an https upstream, with TLS verified against the system roots plus an optional
//! extra CA.
//!
//! The route is decided once at start-up, from hyper-util's proxy `Matcher`: there is only one
//! upstream, so there is nothing to match per request.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use demo_common::error;
use http::{HeaderValue, Uri};
use hyper_rustls::{FixedServerNameResolver, HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::proxy::matcher::{Intercept, Matcher};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_util::io::InspectReader;
use tower::ServiceExt as _;
use tower::util::BoxCloneSyncService;

use crate::config::{UpstreamProxy, UpstreamUrl};

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
    let (matcher, source_name, value) = match setting {
        UpstreamProxy::Direct => return Ok(Route::Direct),
        UpstreamProxy::Url(url) => (
            Matcher::builder().all(url.as_str()).build(),
            "the upstream proxy".to_owned(),
            url.clone(),
        ),
        UpstreamProxy::Environment => {
            let matcher = Matcher::from_env();
            let Some((name, value)) = proxy_variable(upstream.is_https()) else {
                return Ok(Route::Direct);
            };
            (matcher, format!("env {name}"), value)
        }
    };
    let invalid = |reason: &str| SetupError::Proxy {
        source_name: source_name.clone(),
        value: without_credentials(&value),
        reason: reason.to_owned(),
    };
    let origin = upstream.origin();
    // The matcher drops a value it cannot parse; checked alone, such a value is a start-up
    // error, not a silent direct connection.
    let alone = Matcher::builder()
        .all(value.as_str())
        .build()
        .intercept(&origin)
        .ok_or_else(|| invalid("not a proxy URL (expected http://host:port)"))?;
    proxy_uri(&alone).map_err(|reason| invalid(&reason))?;
    // NO_PROXY may still send the upstream direct.
    let Some(intercept) = matcher.intercept(&origin) else {
        return Ok(Route::Direct);
    };
    let proxy = intercept.uri().clone();
    let credentials = intercept.basic_auth().cloned();
    Ok(if upstream.is_https() {
        Route::Tunnel { proxy, credentials }
    } else {
        Route::Forward { proxy, credentials }
    })
}

/// The variable `Matcher::from_env` takes the upstream's proxy from, and its value: the
/// scheme's own pair (`HTTP_PROXY`/`http_proxy`, `HTTPS_PROXY`/`https_proxy`), else
/// `ALL_PROXY`/`all_proxy`, upper case first, as the matcher reads them. Looked up only to name
/// the variable in an error and to catch a value the matcher dropped.
fn proxy_variable(https: bool) -> Option<(&'static str, String)> {
    let own = if https {
        ["HTTPS_PROXY", "https_proxy"]
    } else {
        ["HTTP_PROXY", "http_proxy"]
    };
    [own, ["ALL_PROXY", "all_proxy"]]
        .into_iter()
        .find_map(|pair| {
            pair.into_iter()
                .find_map(|name| std::env::var(name).ok().map(|value| (name, value)))
                .filter(|(_, value)| !value.trim().is_empty())
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
fn tls_config(
    extra_roots: Vec<CertificateDer<'static>>,
) -> Result<rustls::ClientConfig, SetupError> {
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
    Ok(config)
}

/// Why a connection to the upstream could not be opened. The text ends up in the 502 body.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum ConnectError {
    /// No TCP connection (the name lookup included) to `endpoint`.
    #[error("{reason} ({endpoint})")]
    Tcp { endpoint: String, reason: String },
    #[error("proxy {proxy}: {cause}")]
    Proxy {
        proxy: String,
        cause: Box<ConnectError>,
    },
    #[error("proxy {proxy} refused the tunnel: it answered '{status_line}'")]
    TunnelRefused { proxy: String, status_line: String },
    #[error("proxy {proxy} failed to open the tunnel: {reason}")]
    Tunnel { proxy: String, reason: String },
    #[error("TLS handshake failed: {reason}")]
    Tls { reason: String },
}

impl ConnectError {
    fn tcp(endpoint: &str, error: &(dyn std::error::Error + 'static)) -> Self {
        ConnectError::Tcp {
            endpoint: endpoint.to_owned(),
            reason: error::root_cause(error),
        }
    }

    fn proxy(proxy: &str, cause: ConnectError) -> Self {
        ConnectError::Proxy {
            proxy: proxy.to_owned(),
            cause: Box::new(cause),
        }
    }
}

/// A connection to the upstream (or to the proxy in front of it), TLS or not.
pub(crate) type UpstreamIo = MaybeHttpsStream<TokioIo<TcpStream>>;

/// Opens the TCP connection a route asks for: to the upstream, to the proxy, or a tunnel
/// through the proxy to the upstream. Called with the upstream's URL.
type TcpRoute = BoxCloneSyncService<Uri, TokioIo<TcpStream>, ConnectError>;

/// hyper-util's default: the other address family is tried once the first has had this long.
const HAPPY_EYEBALLS_DELAY: Duration = Duration::from_millis(300);

/// Opens new upstream connections along the configured route.
pub(crate) struct Connector {
    upstream: Uri,
    connect: Connect,
}

enum Connect {
    Plain(TcpRoute),
    Tls(HttpsConnector<TcpRoute>),
}

impl Connector {
    /// A connector for `upstream` along `route`.
    pub(crate) fn new(
        upstream: &UpstreamUrl,
        route: &Route,
        extra_roots: Vec<CertificateDer<'static>>,
    ) -> Result<Self, SetupError> {
        let mut tcp = HttpConnector::new();
        // An https upstream's URL reaches it too: TLS goes on top of what it opens.
        tcp.enforce_http(false);
        // Requests are small and latency matters more than packet count.
        tcp.set_nodelay(true);
        tcp.set_happy_eyeballs_timeout(Some(HAPPY_EYEBALLS_DELAY));
        // No connect timeout of its own: UPSTREAM_TIMEOUT bounds the whole attempt, connecting
        // included, and answers 504. An equal timer here would race it and turn some of those
        // into 502 "timed out" (seen under load in the resilience suite).
        let tcp = tcp_route(tcp, route, upstream);
        let connect = if upstream.is_https() {
            let name = ServerName::try_from(upstream.host().to_owned()).map_err(|_| {
                SetupError::Tls(rustls::Error::General(format!(
                    "{} is not a valid TLS server name",
                    upstream.host()
                )))
            })?;
            Connect::Tls(HttpsConnector::new(
                tcp,
                tls_config(extra_roots)?,
                false,
                Arc::new(FixedServerNameResolver::new(name)),
            ))
        } else {
            Connect::Plain(tcp)
        };
        Ok(Self {
            upstream: upstream.origin(),
            connect,
        })
    }

    pub(crate) async fn connect(&self) -> Result<UpstreamIo, ConnectError> {
        let upstream = self.upstream.clone();
        match &self.connect {
            Connect::Plain(tcp) => tcp
                .clone()
                .oneshot(upstream)
                .await
                .map(MaybeHttpsStream::Http),
            Connect::Tls(https) => https.clone().oneshot(upstream).await.map_err(|error| {
                match error.downcast::<ConnectError>() {
                    Ok(error) => *error,
                    // Whatever failed after the TCP connection was up is the TLS handshake.
                    Err(error) => ConnectError::Tls {
                        reason: error::root_cause(&*error),
                    },
                }
            }),
        }
    }
}

/// `tcp` along `route`, its errors told as the 502 body tells them.
fn tcp_route(tcp: HttpConnector, route: &Route, upstream: &UpstreamUrl) -> TcpRoute {
    match route.clone() {
        Route::Direct => {
            let endpoint = upstream.connect_target();
            BoxCloneSyncService::new(tcp.map_err(move |error| ConnectError::tcp(&endpoint, &error)))
        }
        Route::Forward { proxy, .. } => {
            let name = proxy_name(&proxy);
            BoxCloneSyncService::new(
                tcp.map_request(move |_upstream| proxy.clone())
                    .map_err(move |error| {
                        ConnectError::proxy(&name, ConnectError::tcp(&name, &error))
                    }),
            )
        }
        Route::Tunnel { proxy, credentials } => {
            BoxCloneSyncService::new(tower::service_fn(move |upstream| {
                tunnel(tcp.clone(), proxy.clone(), credentials.clone(), upstream)
            }))
        }
    }
}

/// Enough of a proxy's answer to CONNECT for its status line.
const RECORDED_ANSWER: usize = 256;

/// Opens a CONNECT tunnel through `proxy` to `upstream` with hyper-util's `Tunnel`.
async fn tunnel(
    tcp: HttpConnector,
    proxy: Uri,
    credentials: Option<HeaderValue>,
    upstream: Uri,
) -> Result<TokioIo<TcpStream>, ConnectError> {
    let name = proxy_name(&proxy);
    // hyper-util's TunnelError says only "unsuccessful": the start of the proxy's answer is kept
    // for its status line (`403 Forbidden`, `407 Proxy Authentication Required`), which tells
    // the user why. The stream is unwrapped once the tunnel is up, so requests never pass here.
    let answer = Arc::new(Mutex::new(Vec::new()));
    let recorded = Arc::clone(&answer);
    let to_proxy = tcp
        .map_err({
            let name = name.clone();
            move |error| ConnectError::proxy(&name, ConnectError::tcp(&name, &error))
        })
        .map_response(move |tcp: TokioIo<TcpStream>| {
            let answer = Arc::clone(&recorded);
            TokioIo::new(InspectReader::new(
                tcp.into_inner(),
                move |read: &[u8]| {
                    let mut answer = answer.lock().unwrap_or_else(PoisonError::into_inner);
                    let room = RECORDED_ANSWER.saturating_sub(answer.len());
                    answer.extend_from_slice(&read[..read.len().min(room)]);
                },
            ))
        });
    let mut tunnel = Tunnel::new(proxy, to_proxy);
    if let Some(credentials) = credentials {
        tunnel = tunnel.with_auth(credentials);
    }
    let failed = match tunnel.oneshot(upstream).await {
        Ok(io) => return Ok(TokioIo::new(io.into_inner().into_inner())),
        Err(failed) => failed,
    };
    // hyper-util's TunnelError cannot be named outside its crate: what failed is read from its
    // chain (the proxy unreachable) and from the answer recorded (the proxy said no).
    if let Some(unreachable) = error::find::<ConnectError>(&failed) {
        return Err(unreachable.clone());
    }
    let answer = answer.lock().unwrap_or_else(PoisonError::into_inner);
    Err(match refusal(&answer) {
        Some(status_line) => ConnectError::TunnelRefused {
            proxy: name,
            status_line,
        },
        None => ConnectError::Tunnel {
            proxy: name,
            reason: error::root_cause(&failed),
        },
    })
}

/// The status line of a proxy's answer to CONNECT, when it has one and it is not 200.
fn refusal(answer: &[u8]) -> Option<String> {
    let end = answer.iter().position(|&byte| byte == b'\n')?;
    let line = String::from_utf8_lossy(&answer[..end])
        .trim_end()
        .to_owned();
    (line.split_whitespace().nth(1) != Some("200")).then_some(line)
}

/// `host:port` of a proxy, for messages (the URL kept here never carries credentials).
fn proxy_name(proxy: &Uri) -> String {
    proxy
        .authority()
        .map_or_else(|| proxy.to_string(), ToString::to_string)
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

    /// A CONNECT proxy on loopback that reads one request head and answers `answer`.
    async fn answering_proxy(answer: &'static [u8]) -> std::net::SocketAddr {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut client, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            while !head.ends_with(b"\r\n\r\n") {
                let mut byte = [0u8];
                if client.read(&mut byte).await.unwrap_or(0) == 0 {
                    return;
                }
                head.push(byte[0]);
            }
            let _ = client.write_all(answer).await;
        });
        address
    }

    async fn tunnel_error(answer: &'static [u8]) -> (std::net::SocketAddr, String) {
        let proxy = answering_proxy(answer).await;
        let upstream = url("https://hello.external/");
        let route = route_for(&upstream, &UpstreamProxy::Url(format!("http://{proxy}"))).unwrap();
        let connector = Connector::new(&upstream, &route, Vec::new()).unwrap();
        let error = tokio::time::timeout(Duration::from_secs(20), connector.connect())
            .await
            .expect("the tunnel attempt ends")
            .expect_err("the tunnel is refused");
        (proxy, error.to_string())
    }

    #[tokio::test]
    async fn a_refused_tunnel_names_the_proxys_status_line() {
        let (proxy, error) =
            tunnel_error(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n").await;
        assert_eq!(
            error,
            format!(
                "proxy {proxy} refused the tunnel: it answered 'HTTP/1.1 407 Proxy Authentication Required'"
            )
        );
    }

    #[tokio::test]
    async fn a_proxy_that_closes_without_answering_is_not_called_a_refusal() {
        let (proxy, error) = tunnel_error(b"").await;
        assert!(
            error.starts_with(&format!("proxy {proxy} failed to open the tunnel: ")),
            "{error}"
        );
    }

    #[test]
    fn only_a_complete_status_line_other_than_200_is_a_refusal() {
        assert_eq!(
            refusal(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n").as_deref(),
            Some("HTTP/1.1 403 Forbidden")
        );
        assert_eq!(refusal(b"HTTP/1.1 200 Connection established\r\n"), None);
        assert_eq!(refusal(b"HTTP/1.1 403 Forb"), None);
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
