//! Configuration: one clap struct, every flag with an env-var twin, and the upstream URL parsed
//! once at start-up into the pieces every request reuses.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use bytes::Bytes;
use demo_common::logging::LogFormat;
use http::HeaderValue;
use http::uri::{Authority, PathAndQuery, Scheme, Uri};

/// What the proxy listens on and where it forwards.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    version,
    about = "The demo's in-mesh proxy: forwards every request to one upstream URL and hands back \
             its status, headers and body unchanged.",
    after_help = "The upstream call honours http_proxy/HTTP_PROXY (https_proxy/HTTPS_PROXY for an \
                  https upstream, then all_proxy/ALL_PROXY) and no_proxy/NO_PROXY."
)]
pub struct Config {
    /// Port for the forwarded traffic; every path on it goes to the upstream.
    #[arg(long, env = "PORT", default_value_t = 8080)]
    pub port: u16,

    /// Port for /healthz and /readyz only, so no upstream path is ever shadowed.
    #[arg(long, env = "ADMIN_PORT", default_value_t = 9090)]
    pub admin_port: u16,

    /// Address to bind both ports on.
    #[arg(long, env = "BIND_ADDRESS", default_value_t = IpAddr::V4(Ipv4Addr::UNSPECIFIED))]
    pub bind_address: IpAddr,

    /// The one upstream: request paths and queries are appended to its path.
    #[arg(long, env = "UPSTREAM_URL", default_value = "http://hello.external/")]
    pub upstream_url: UpstreamUrl,

    /// Time the upstream has to send its response head, from the client's request head (else
    /// 504); also the longest pause tolerated inside a request or response body before it is
    /// cut.
    #[arg(
        long,
        env = "UPSTREAM_TIMEOUT",
        default_value = "5s",
        value_parser = demo_common::parse_positive_duration
    )]
    pub upstream_timeout: Duration,

    /// PEM file with extra CA certificates to trust for an https upstream, on top of the
    /// system's roots.
    #[arg(long, env = "UPSTREAM_CA_CERT")]
    pub upstream_ca_cert: Option<PathBuf>,

    /// How long in-flight requests may finish after SIGTERM/SIGINT.
    #[arg(
        long,
        env = "DRAIN_TIMEOUT",
        default_value = "10s",
        value_parser = demo_common::parse_duration
    )]
    pub drain_timeout: Duration,

    /// Threads serving connections, each a single-threaded runtime, connections dealt to them
    /// in turn. Default: one per CPU the process may use (its CPU limit or affinity).
    #[arg(long, env = "WORKERS", value_parser = clap::value_parser!(u16).range(1..=i64::from(demo_common::runtime::MAX_WORKERS)))]
    pub workers: Option<u16>,

    /// Log format on stderr.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// How the upstream is reached. Not a flag: the binary always reads the standard proxy
    /// variables; tests and embedders set it explicitly because the environment is
    /// process-wide.
    #[arg(skip)]
    pub upstream_proxy: UpstreamProxy,
}

impl Config {
    /// Checks what single flags cannot: both ports on one address must differ.
    pub fn validate(&self) -> Result<(), String> {
        if self.port == self.admin_port && self.port != 0 {
            return Err(format!(
                "--port (env PORT) and --admin-port (env ADMIN_PORT) are both {}; they must differ",
                self.port
            ));
        }
        Ok(())
    }
}

/// Whether and through which HTTP proxy the upstream is called.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum UpstreamProxy {
    /// `http_proxy`/`HTTP_PROXY` (or `https_proxy`/`HTTPS_PROXY` for an https upstream, then
    /// `all_proxy`/`ALL_PROXY`), unless `no_proxy`/`NO_PROXY` names the upstream host.
    #[default]
    Environment,
    /// Always connect to the upstream itself.
    Direct,
    /// Always go through this proxy URL (`http://host:port`, optionally with `user:pass@`).
    Url(String),
}

/// The upstream URL, split once so each request only appends its own path and query.
#[derive(Clone)]
pub struct UpstreamUrl {
    text: String,
    scheme: Scheme,
    authority: Authority,
    host: String,
    port: u16,
    /// The URL's path without its trailing slash; empty for `/`.
    base_path: String,
    host_header: HeaderValue,
}

/// Why a string is not a usable upstream URL.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UpstreamUrlError {
    #[error("not a URL ({0})")]
    Malformed(String),
    #[error("it must start with http:// or https://")]
    MissingScheme,
    #[error("scheme '{0}' is not supported (use http or https)")]
    UnsupportedScheme(String),
    #[error("it has no host")]
    MissingHost,
    #[error("its port is not a number from 1 to 65535")]
    BadPort,
    #[error("user info in the URL is not supported")]
    UserInfo,
    #[error("it must not have a query: each request's own query is forwarded")]
    Query,
    #[error("it must not have a fragment")]
    Fragment,
}

impl FromStr for UpstreamUrl {
    type Err = UpstreamUrlError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        // `Uri` drops a fragment silently, so look for it in the raw text.
        if text.contains('#') {
            return Err(UpstreamUrlError::Fragment);
        }
        let uri: Uri = text.parse().map_err(|error: http::uri::InvalidUri| {
            UpstreamUrlError::Malformed(error.to_string())
        })?;
        let scheme = uri
            .scheme()
            .cloned()
            .ok_or(UpstreamUrlError::MissingScheme)?;
        let default_port = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            other => return Err(UpstreamUrlError::UnsupportedScheme(other.to_owned())),
        };
        let authority = uri
            .authority()
            .cloned()
            .ok_or(UpstreamUrlError::MissingHost)?;
        if authority.as_str().contains('@') {
            return Err(UpstreamUrlError::UserInfo);
        }
        if authority.host().is_empty() {
            return Err(UpstreamUrlError::MissingHost);
        }
        // `Authority::port` hides a port that does not fit in u16, so read the text.
        let port_text = authority.as_str()[authority.host().len()..].strip_prefix(':');
        let port = match port_text {
            None | Some("") => default_port,
            Some(text) => match text.parse::<u16>() {
                Ok(port) if port != 0 => port,
                _ => return Err(UpstreamUrlError::BadPort),
            },
        };
        if uri.query().is_some() {
            return Err(UpstreamUrlError::Query);
        }
        let host = authority.host();
        let bare_host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        // The Host header leaves out the scheme's default port, as HTTP clients do.
        let host_header = if port == default_port {
            HeaderValue::from_str(host)
        } else {
            HeaderValue::from_str(&format!("{host}:{port}"))
        }
        .map_err(|error| UpstreamUrlError::Malformed(error.to_string()))?;
        Ok(Self {
            text: text.to_owned(),
            scheme,
            authority,
            host: bare_host,
            port,
            base_path: uri.path().trim_end_matches('/').to_owned(),
            host_header,
        })
    }
}

impl UpstreamUrl {
    pub fn is_https(&self) -> bool {
        self.scheme == Scheme::HTTPS
    }

    /// The host name or IP address, without IPv6 brackets.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port, the scheme's default when the URL names none.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The value of the `Host` header the upstream receives.
    pub fn host_header(&self) -> &HeaderValue {
        &self.host_header
    }

    /// The URL the client asks the upstream for, for an incoming request target: the
    /// request's path and query appended to the upstream's path, the query byte for byte.
    /// `None` when the target has no path (`*`).
    pub fn target(&self, incoming: &Uri) -> Option<Uri> {
        self.target_path(incoming).map(|path| self.absolute(path))
    }

    /// The path and query of [`UpstreamUrl::target`] alone: what a request sent straight to
    /// the upstream carries (origin form), without building the absolute URL.
    pub fn target_path(&self, incoming: &Uri) -> Option<PathAndQuery> {
        let incoming_path = match incoming.path_and_query() {
            Some(path) if path.as_str().starts_with('/') => Some(path),
            Some(_) => return None,
            None => None,
        };
        match (self.base_path.is_empty(), incoming_path) {
            (true, Some(path)) => Some(path.clone()),
            (true, None) => Some(PathAndQuery::from_static("/")),
            (false, path) => {
                let path = path.map_or("/", PathAndQuery::as_str);
                let mut joined = String::with_capacity(self.base_path.len() + path.len());
                joined.push_str(&self.base_path);
                joined.push_str(path);
                PathAndQuery::from_maybe_shared(Bytes::from(joined)).ok()
            }
        }
    }

    /// `path` on the upstream, as an absolute URL (what a forward proxy is asked for).
    pub fn absolute(&self, path: PathAndQuery) -> Uri {
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(path);
        Uri::from_parts(parts).expect("scheme and authority were parsed from a URI")
    }

    /// `scheme://authority/`: the upstream as the proxy matcher and the connector are given it.
    pub(crate) fn origin(&self) -> Uri {
        self.absolute(PathAndQuery::from_static("/"))
    }

    /// `host:port` (IPv6 in brackets), as error messages name the upstream's endpoint.
    pub(crate) fn connect_target(&self) -> String {
        format!("{}:{}", self.authority.host(), self.port)
    }
}

impl fmt::Display for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use demo_common::cli::{ParseOutcome, try_parse_from};

    fn url(text: &str) -> UpstreamUrl {
        text.parse().unwrap()
    }

    fn target(base: &str, incoming: &str) -> String {
        url(base)
            .target(&incoming.parse().unwrap())
            .unwrap()
            .to_string()
    }

    #[test]
    fn joins_paths_without_doubling_slashes() {
        let cases = [
            ("http://h/", "/", "http://h/"),
            ("http://h/", "/a/b?x=1", "http://h/a/b?x=1"),
            ("http://h", "/a", "http://h/a"),
            ("http://h/base/", "/a?b=1", "http://h/base/a?b=1"),
            ("http://h/base", "/a?b=1", "http://h/base/a?b=1"),
            ("http://h/base/", "/", "http://h/base/"),
            ("http://h:8080/base//", "/a", "http://h:8080/base/a"),
            ("https://h/", "/x", "https://h/x"),
        ];
        for (base, incoming, expected) in cases {
            assert_eq!(target(base, incoming), expected, "{base} + {incoming}");
        }
    }

    #[test]
    fn keeps_the_query_byte_for_byte() {
        let query = "/p?a=%2F&b=x+y&c='q'&d=%zz&e=&&f=ü";
        let joined = url("http://h/base/")
            .target(&query.parse().unwrap())
            .unwrap();
        assert_eq!(
            joined.path_and_query().unwrap().as_str(),
            format!("/base{query}")
        );
    }

    #[test]
    fn absolute_form_targets_use_only_their_path() {
        assert_eq!(
            target("http://up:81/b/", "http://elsewhere/a?q=1"),
            "http://up:81/b/a?q=1"
        );
        assert!(url("http://h/").target(&"*".parse().unwrap()).is_none());
    }

    #[test]
    fn host_header_leaves_out_default_ports() {
        assert_eq!(
            url("http://hello.external/").host_header(),
            "hello.external"
        );
        assert_eq!(url("http://h:80/").host_header(), "h");
        assert_eq!(url("http://h:8080/").host_header(), "h:8080");
        assert_eq!(url("https://h:443/").host_header(), "h");
        assert_eq!(url("https://h:80/").host_header(), "h:80");
        assert_eq!(url("http://[::1]:81/").host_header(), "[::1]:81");
        assert_eq!(url("http://[::1]:81/").host(), "::1");
        assert_eq!(url("http://[::1]:81/").connect_target(), "[::1]:81");
        assert_eq!(url("https://h/").port(), 443);
    }

    #[test]
    fn rejects_urls_that_cannot_be_an_upstream() {
        let cases = [
            ("ftp://x", UpstreamUrlError::UnsupportedScheme("ftp".into())),
            ("hello.external", UpstreamUrlError::MissingScheme),
            ("/just/a/path", UpstreamUrlError::MissingScheme),
            ("http://u:p@h/", UpstreamUrlError::UserInfo),
            ("http://h/?a=1", UpstreamUrlError::Query),
            ("http://h/#top", UpstreamUrlError::Fragment),
            ("http://h:0/", UpstreamUrlError::BadPort),
            ("http://h:99999/", UpstreamUrlError::BadPort),
            ("http://[::1]:99999/", UpstreamUrlError::BadPort),
        ];
        for (text, expected) in cases {
            assert_eq!(text.parse::<UpstreamUrl>().unwrap_err(), expected, "{text}");
        }
        assert!(matches!(
            "not a url".parse::<UpstreamUrl>(),
            Err(UpstreamUrlError::Malformed(_))
        ));
        assert!("".parse::<UpstreamUrl>().is_err());
    }

    fn invalid_line(args: &[&str]) -> String {
        let mut argv = vec!["app-that-calls-externally"];
        argv.extend_from_slice(args);
        match try_parse_from::<Config, _, _>(argv) {
            Err(ParseOutcome::Invalid(line)) => line,
            other => panic!("expected a config error for {args:?}, got {other:?}"),
        }
    }

    #[test]
    fn bad_values_name_the_flag_and_its_env_var() {
        let line = invalid_line(&["--upstream-url", "ftp://x"]);
        assert!(line.contains("--upstream-url (env UPSTREAM_URL)"), "{line}");
        assert!(line.contains("scheme 'ftp' is not supported"), "{line}");
        let line = invalid_line(&["--port", "70000"]);
        assert!(line.contains("--port (env PORT)"), "{line}");
        let line = invalid_line(&["--upstream-timeout", "abc"]);
        assert!(
            line.contains("--upstream-timeout (env UPSTREAM_TIMEOUT)"),
            "{line}"
        );
        let line = invalid_line(&["--upstream-timeout", "0s"]);
        assert!(line.contains("greater than zero"), "{line}");
    }

    #[test]
    fn defaults_follow_the_contract() {
        let config: Config = try_parse_from([
            "app-that-calls-externally",
            // Pin every value the environment could otherwise supply.
            "--port=8080",
            "--admin-port=9090",
            "--upstream-url=http://hello.external/",
        ])
        .unwrap();
        assert_eq!(config.port, 8080);
        assert_eq!(config.admin_port, 9090);
        assert_eq!(config.upstream_url.to_string(), "http://hello.external/");
        assert_eq!(config.upstream_proxy, UpstreamProxy::Environment);
        assert!(config.validate().is_ok());
    }

    #[test]
    fn ports_must_differ() {
        let config: Config = try_parse_from([
            "app-that-calls-externally",
            "--port=9000",
            "--admin-port=9000",
        ])
        .unwrap();
        let error = config.validate().unwrap_err();
        assert!(error.contains("--admin-port (env ADMIN_PORT)"), "{error}");
    }
}
