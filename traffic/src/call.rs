//! One call: GET the URL, read at most the cap of the body, and describe what happened in
//! one field of text.

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use demo_common::error;
use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::HeaderMap;
use tokio::time::Instant;

use crate::body::CappedBody;
use crate::config::Config;

/// What one call produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The server answered (any status). `body` is already one printable line.
    Answered { status: u16, body: String },
    /// No complete answer.
    Failed(CallError),
}

impl Outcome {
    /// The text printed after the tab: the body, or `error: ...`, never empty.
    pub fn field(&self) -> String {
        match self {
            // An empty field would read like the older loop's transport failures, where curl
            // printed nothing; say what came back instead.
            Outcome::Answered { status, body } if body.is_empty() => {
                format!("(empty body, status {status})")
            }
            Outcome::Answered { body, .. } => body.clone(),
            Outcome::Failed(error) => format!("error: {error}"),
        }
    }
}

/// Why a call got no complete answer, in words short enough for the log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// The connection failed: refused, reset, aborted, unreachable (the words of
    /// [`demo_common::error::io_reason`]).
    Connection(&'static str),
    /// The peer closed the connection before the response was complete.
    ClosedEarly,
    TimedOut(Duration),
    NotResolved(String),
    Tls(String),
    TooManyRedirects,
    InvalidResponse,
    Other(String),
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Connection(reason) => f.write_str(reason),
            CallError::ClosedEarly => {
                f.write_str("connection closed before the response was complete")
            }
            CallError::TimedOut(after) => {
                write!(f, "timed out after {}", crate::format_duration(*after))
            }
            CallError::NotResolved(name) => write!(f, "dns: {name} not resolved"),
            CallError::Tls(reason) => write!(f, "tls: {reason}"),
            CallError::TooManyRedirects => f.write_str("too many redirects"),
            CallError::InvalidResponse => f.write_str("invalid HTTP response"),
            CallError::Other(message) => f.write_str(message),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot build the HTTP client: {0}")]
pub struct BuildError(#[from] reqwest::Error);

/// Makes the calls: one pooled HTTP client, the URL, the timeout and the body cap.
#[derive(Debug, Clone)]
pub struct Caller {
    client: reqwest::Client,
    url: Url,
    headers: HeaderMap,
    timeout: Duration,
    max_body: usize,
}

impl Caller {
    /// A caller resolving names through the system resolver and honouring the proxy variables.
    pub fn new(config: &Config) -> Result<Self, BuildError> {
        Self::builder(config).build()
    }

    /// A caller with a choice of resolver and of honouring the proxy variables.
    pub fn builder(config: &Config) -> CallerBuilder<'_> {
        CallerBuilder {
            config,
            resolver: Arc::new(SystemResolver),
            proxy_variables: true,
        }
    }

    fn build(builder: CallerBuilder<'_>) -> Result<Self, BuildError> {
        let CallerBuilder {
            config,
            resolver,
            proxy_variables,
        } = builder;
        demo_common::tls::install_crypto_provider();
        // Redirects follow reqwest's default policy (up to 10), as `curl -L` followed them.
        // Proxies come from http_proxy/https_proxy/NO_PROXY, as curl took them.
        let mut client = reqwest::Client::builder()
            .user_agent(concat!("traffic/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(NameReportingResolver { inner: resolver });
        if !proxy_variables {
            client = client.no_proxy();
        }
        Ok(Self {
            client: client.build()?,
            url: config.url.clone(),
            headers: crate::header::header_map(&config.headers),
            timeout: config.timeout,
            max_body: config.max_body,
        })
    }

    /// Makes one call that started at `started`; it ends by `started + timeout` whatever the
    /// server does.
    pub async fn call(&self, started: Instant) -> Outcome {
        let outcome = tokio::time::timeout_at(started + self.timeout, self.fetch())
            .await
            .unwrap_or(Outcome::Failed(CallError::TimedOut(self.timeout)));
        tracing::debug!(elapsed = ?started.elapsed(), ?outcome, "call finished");
        outcome
    }

    async fn fetch(&self) -> Outcome {
        let request = self
            .client
            .get(self.url.clone())
            .headers(self.headers.clone());
        let mut response = match request.send().await {
            Ok(response) => response,
            Err(error) => return Outcome::Failed(classify(&error)),
        };
        let status = response.status().as_u16();
        let mut body = CappedBody::new(self.max_body);
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) if body.push(&chunk) => {}
                // Over the cap: dropping the response closes the connection unread.
                Ok(Some(_)) | Ok(None) => break,
                Err(error) => return Outcome::Failed(classify(&error)),
            }
        }
        Outcome::Answered {
            status,
            body: body.into_field(),
        }
    }
}

/// Builds a [`Caller`]: [`Caller::builder`], then [`CallerBuilder::build`].
pub struct CallerBuilder<'a> {
    config: &'a Config,
    resolver: Arc<dyn Resolve>,
    proxy_variables: bool,
}

impl CallerBuilder<'_> {
    /// Resolves names through `resolver` (tests use it so that no DNS query leaves the
    /// machine).
    pub fn resolver<R: Resolve + 'static>(mut self, resolver: R) -> Self {
        self.resolver = Arc::new(resolver);
        self
    }

    /// Calls go straight to the URL's host, whatever `http_proxy`, `https_proxy` or
    /// `ALL_PROXY` say. For tests, whose calls to loopback must stay there; the program itself
    /// always honours the variables (in the mesh, `http_proxy` is how it reaches its sidecar),
    /// so no flag turns them off.
    pub fn no_proxy(mut self) -> Self {
        self.proxy_variables = false;
        self
    }

    pub fn build(self) -> Result<Caller, BuildError> {
        Caller::build(self)
    }
}

/// Names the cause of a failed request by walking its chain of sources.
fn classify(error: &reqwest::Error) -> CallError {
    if error.is_redirect() {
        return CallError::TooManyRedirects;
    }
    if let Some(known) = error::chain(error).find_map(classify_cause) {
        return known;
    }
    tracing::debug!(error = %error, "unclassified call error");
    let innermost = error::chain(error).last().map(ToString::to_string);
    CallError::Other(innermost.unwrap_or_default())
}

fn classify_cause(cause: &(dyn StdError + 'static)) -> Option<CallError> {
    if let Some(not_resolved) = cause.downcast_ref::<NotResolved>() {
        return Some(CallError::NotResolved(not_resolved.name.clone()));
    }
    if let Some(tls) = cause.downcast_ref::<rustls::Error>() {
        return Some(CallError::Tls(tls.to_string()));
    }
    if let Some(hyper_error) = cause.downcast_ref::<hyper::Error>() {
        if hyper_error.is_incomplete_message() {
            return Some(CallError::ClosedEarly);
        }
        if hyper_error.is_parse() {
            return Some(CallError::InvalidResponse);
        }
    }
    match cause.downcast_ref::<io::Error>()?.kind() {
        // What a closed connection cut short is the response: say so.
        io::ErrorKind::UnexpectedEof | io::ErrorKind::BrokenPipe => Some(CallError::ClosedEarly),
        kind => error::io_reason(kind).map(CallError::Connection),
    }
}

/// A failed name lookup, carrying the name so that the log line can say which.
#[derive(Debug)]
struct NotResolved {
    name: String,
    source: Option<Box<dyn StdError + Send + Sync>>,
}

impl fmt::Display for NotResolved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} not resolved", self.name)?;
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl StdError for NotResolved {}

/// Wraps a resolver so that every failure, and an empty answer, becomes [`NotResolved`].
struct NameReportingResolver {
    inner: Arc<dyn Resolve>,
}

impl Resolve for NameReportingResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        let lookup = self.inner.resolve(name);
        Box::pin(async move {
            let not_resolved = |source| -> Box<dyn StdError + Send + Sync> {
                Box::new(NotResolved {
                    name: host.clone(),
                    source,
                })
            };
            let addrs: Vec<_> = lookup.await.map_err(|e| not_resolved(Some(e)))?.collect();
            if addrs.is_empty() {
                return Err(not_resolved(None));
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// The system's resolver (getaddrinfo on a blocking thread).
struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<_> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_never_empty() {
        let empty = Outcome::Answered {
            status: 204,
            body: String::new(),
        };
        assert_eq!(empty.field(), "(empty body, status 204)");
        let abort = Outcome::Answered {
            status: 418,
            body: "fault filter abort".into(),
        };
        assert_eq!(abort.field(), "fault filter abort");
        let failed = Outcome::Failed(CallError::TimedOut(Duration::from_millis(1500)));
        assert_eq!(failed.field(), "error: timed out after 1.5s");
        let dns = Outcome::Failed(CallError::NotResolved("hello.external".into()));
        assert_eq!(dns.field(), "error: dns: hello.external not resolved");
    }
}
