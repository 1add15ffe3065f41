//! What the Envoys enforce: per workload, the view istiod would push to its proxy (virtual
//! hosts with ordered routes, clusters with their traffic policy), the egress gateway's servers
//! and authorization, and the demo's own view (the stable name, the Cloud Foundry routes).
//! Every value is already translated as istiod translates it; bootstrap.rs only writes JSON.

use std::collections::BTreeMap;
use std::time::Duration;

/// The two hello versions: hello-cf's own type (`HELLO_VERSION`).
pub use hello_cf::HelloVersion;

/// The policy the local Envoys enforce, with every number taken from the manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// The stable name the proxy calls (`hello.external`).
    pub stable_host: String,
    /// Its port, declared by its ServiceEntry.
    pub stable_port: u16,
    /// The Cloud Foundry routes the foundation serves, each by one hello version.
    pub cf_hosts: Vec<CfHost>,
    /// The sidecar of the proxy (`app-that-calls-externally`).
    pub proxy_sidecar: Sidecar,
    /// The sidecar of the caller (`traffic`).
    pub caller_sidecar: Sidecar,
    /// The egress gateway.
    pub gateway: Gateway,
}

/// A workload's identity: its namespace and ServiceAccount.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Identity {
    pub namespace: String,
    pub service_account: String,
}

impl Identity {
    pub fn new(namespace: &str, service_account: &str) -> Identity {
        Identity {
            namespace: namespace.to_owned(),
            service_account: service_account.to_owned(),
        }
    }

    /// `cluster.local/ns/<ns>/sa/<sa>`, as an AuthorizationPolicy names it.
    pub fn principal(&self) -> String {
        format!(
            "{TRUST_DOMAIN}/ns/{}/sa/{}",
            self.namespace, self.service_account
        )
    }

    /// `spiffe://cluster.local/ns/<ns>/sa/<sa>`: the URI SAN of its certificate.
    pub fn spiffe_id(&self) -> String {
        format!("spiffe://{}", self.principal())
    }
}

/// The mesh's trust domain (Istio's default).
pub const TRUST_DOMAIN: &str = "cluster.local";

/// What istiod pushes to one sidecar: its outbound HTTP routes and the clusters they use.
#[derive(Debug, Clone, PartialEq)]
pub struct Sidecar {
    /// The Deployment whose pod the sidecar sits in.
    pub workload: String,
    pub identity: Identity,
    pub route_config: RouteConfig,
    pub clusters: Vec<Cluster>,
}

/// An Envoy route configuration: one per listener, named as istiod names it (`80` for a
/// sidecar's port 80, `https.80.https.<gateway>.<namespace>` for a gateway server).
#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfig {
    pub name: String,
    pub virtual_hosts: Vec<VirtualHost>,
}

impl RouteConfig {
    /// The virtual host answering `host` (exact domain, without port).
    pub fn virtual_host(&self, host: &str) -> Option<&VirtualHost> {
        self.virtual_hosts
            .iter()
            .find(|vh| vh.domains.iter().any(|d| d == host))
    }
}

/// A virtual host: the domains it answers and its routes, first match wins.
#[derive(Debug, Clone, PartialEq)]
pub struct VirtualHost {
    /// `<host>:<port>`.
    pub name: String,
    pub domains: Vec<String>,
    pub routes: Vec<Route>,
}

impl VirtualHost {
    /// The last route if it matches every request (istiod's catch-all, or a route without match).
    pub fn default_route(&self) -> Option<&Route> {
        self.routes
            .last()
            .filter(|route| route.matcher.is_catch_all())
    }
}

/// One Envoy route: an Istio http route for one of its `match` entries.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// The http route's name (`.<match name>` appended), `default` for istiod's own route.
    pub name: String,
    /// `VirtualService/<name>`, or the service for istiod's default route.
    pub source: String,
    pub matcher: RouteMatch,
    /// Several destinations in the manifest: Envoy's weighted clusters (0-weight ones left out),
    /// each with its own headers; one: a plain cluster, its headers on the route.
    pub weighted: bool,
    pub destinations: Vec<Destination>,
    /// Route-level `rewrite.authority` or route-level `headers.request` of `host`.
    pub host_rewrite: Option<String>,
    /// The http route's own `headers`.
    pub headers: HeaderOperations,
    pub fault: Option<Fault>,
    /// `None`: no route timeout (istiod writes `0s`, which turns off Envoy's 15 s).
    pub timeout: Option<Duration>,
    pub retries: Retries,
    pub mirrors: Vec<Mirror>,
}

impl Route {
    /// The share of requests (0..=1) the route's abort answers.
    pub fn abort_share(&self) -> f64 {
        self.fault
            .as_ref()
            .and_then(|fault| fault.abort)
            .map_or(0.0, |abort| abort.share())
    }
}

/// What a route matches on; an empty matcher is `prefix: /`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RouteMatch {
    pub path: Option<PathMatch>,
    pub headers: Vec<HeaderMatch>,
}

impl RouteMatch {
    pub fn is_catch_all(&self) -> bool {
        self.headers.is_empty()
            && match &self.path {
                None => true,
                Some(PathMatch::Prefix(prefix)) => prefix == "/",
                Some(_) => false,
            }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum PathMatch {
    Exact(String),
    Prefix(String),
    Regex(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct HeaderMatch {
    pub name: String,
    pub value: StringMatch,
}

#[derive(Debug, Clone, PartialEq)]
pub enum StringMatch {
    Exact(String),
    Prefix(String),
    Regex(String),
}

/// One destination of a route; a route with several is a weighted split.
#[derive(Debug, Clone, PartialEq)]
pub struct Destination {
    /// `outbound|<port>|<subset>|<host>`.
    pub cluster: String,
    pub host: String,
    pub port: u16,
    pub subset: Option<String>,
    pub weight: u32,
    /// `headers` of this destination (with several destinations: on the weighted cluster).
    pub headers: HeaderOperations,
}

impl Destination {
    /// The Host the upstream sees, given the request's.
    pub fn effective_host<'a>(&'a self, request_host: &'a str) -> &'a str {
        self.headers.host_rewrite.as_deref().unwrap_or(request_host)
    }
}

/// Istio's `headers`: `host` (or `:authority`) in `request.set` or `request.add` is a Host
/// rewrite; everything else is a header operation.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HeaderOperations {
    pub host_rewrite: Option<String>,
    pub request_set: Vec<(String, String)>,
    pub request_add: Vec<(String, String)>,
    pub request_remove: Vec<String>,
    pub response_set: Vec<(String, String)>,
    pub response_add: Vec<(String, String)>,
    pub response_remove: Vec<String>,
}

impl HeaderOperations {
    pub fn is_empty(&self) -> bool {
        *self == HeaderOperations::default()
    }
}

/// The fault filter's per-route configuration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fault {
    pub delay: Option<Delay>,
    pub abort: Option<Abort>,
}

/// An injected abort: a share of calls answered with `status` by the proxy itself.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Abort {
    pub status: u16,
    /// `None` when the manifest gives no `percentage`: istiod then leaves Envoy's fraction
    /// unset, and the abort never fires.
    pub percent: Option<f64>,
}

impl Abort {
    pub fn share(self) -> f64 {
        self.percent.unwrap_or(0.0) / 100.0
    }
}

/// An injected delay before a share of calls is forwarded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Delay {
    pub fixed: Duration,
    /// 0 when the manifest gives no `percentage` (istiod writes 0 %: it never fires).
    pub percent: f64,
}

/// A retry policy as Envoy receives it from istiod.
#[derive(Debug, Clone, PartialEq)]
pub enum Retries {
    /// `attempts: 0`.
    Disabled,
    Enabled {
        attempts: u32,
        per_try_timeout: Option<Duration>,
        /// Envoy `retry_on` conditions, `retriable-status-codes` included when codes are given.
        retry_on: Vec<String>,
        retriable_status_codes: Vec<u16>,
        /// The previous-hosts predicate (istiod's default; `retryIgnorePreviousHosts: false` drops it).
        previous_hosts: bool,
        backoff: Option<Duration>,
    },
}

/// istiod's retry conditions when a route sets none (Istio 1.24+: 503 is no longer among them,
/// `route/retry/retry.go`).
pub const DEFAULT_RETRY_ON: &[&str] = &[
    "connect-failure",
    "refused-stream",
    "unavailable",
    "cancelled",
    "retriable-status-codes",
];

impl Retries {
    /// What istiod programs when a route sets no `retries`.
    pub fn istio_default() -> Self {
        Retries::Enabled {
            attempts: 2,
            per_try_timeout: None,
            retry_on: DEFAULT_RETRY_ON.iter().map(|c| c.to_string()).collect(),
            retriable_status_codes: Vec::new(),
            previous_hosts: true,
            backoff: None,
        }
    }
}

/// `mirror` + `mirrorPercentage`: a fire-and-forget copy to another cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct Mirror {
    pub cluster: String,
    pub host: String,
    /// Share of requests copied, 0..=100.
    pub percent: f64,
}

/// An Envoy cluster with the traffic policy istiod derives from the DestinationRules.
#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    /// `outbound|<port>|<subset>|<host>`.
    pub name: String,
    pub host: String,
    pub port: u16,
    pub subset: Option<String>,
    /// Where its endpoints are locally.
    pub upstream: Upstream,
    /// HTTP/2 towards the upstream (a port of protocol HTTP2/GRPC, e.g. the gateway's `http2`).
    pub http2: bool,
    /// `connectionPool.tcp.connectTimeout`, else the mesh's 10 s.
    pub connect_timeout: Duration,
    pub circuit_breakers: CircuitBreakers,
    pub max_requests_per_connection: Option<u32>,
    pub idle_timeout: Option<Duration>,
    pub outlier_detection: Option<OutlierDetection>,
    pub tls: UpstreamTls,
    /// The DestinationRule the traffic policy came from, for messages.
    pub destination_rule: Option<String>,
}

/// The local stand-in for a cluster's endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upstream {
    /// The egress gateway's listener (the Service `istio-egressgateway`).
    EgressGateway,
    /// The Cloud Foundry router (what DNS gives for a Cloud Foundry route).
    CfRouter,
    /// The proxy (the Service `service-that-calls-externally`).
    Proxy,
}

/// Envoy's circuit-breaker thresholds (default priority).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitBreakers {
    pub max_connections: u32,
    pub max_pending_requests: u32,
    pub max_requests: u32,
    pub max_retries: u32,
}

impl CircuitBreakers {
    /// istiod's thresholds for every cluster: all at u32::MAX, so only a DestinationRule limits.
    pub fn istio_default() -> Self {
        CircuitBreakers {
            max_connections: u32::MAX,
            max_pending_requests: u32::MAX,
            max_requests: u32::MAX,
            max_retries: u32::MAX,
        }
    }
}

/// Outlier detection as istiod writes it (success-rate ejection always off).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutlierDetection {
    pub consecutive_5xx: Option<u32>,
    pub consecutive_gateway_failure: Option<u32>,
    pub interval: Option<Duration>,
    pub base_ejection_time: Option<Duration>,
    pub max_ejection_percent: Option<u32>,
    /// istiod sets the panic threshold to `minHealthPercent` (0 when unset).
    pub healthy_panic_threshold: f64,
}

/// The mesh's default connect timeout (MeshConfig `connectTimeout`).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS a cluster originates.
#[derive(Debug, Clone, PartialEq)]
pub enum UpstreamTls {
    Plain,
    /// The mesh's mTLS with the workload's certificate.
    IstioMutual {
        sni: String,
        /// SPIFFE IDs the peer's certificate must carry (empty: any mesh identity).
        subject_alt_names: Vec<String>,
        alpn: Vec<String>,
    },
    /// `tls.mode: SIMPLE`.
    Simple {
        /// `None`: auto SNI, the Host after rewriting.
        sni: Option<String>,
        /// `false` with `insecureSkipVerify: true`: no chain and no name checked.
        verify: bool,
        /// Names the certificate must carry (DestinationRule, else ServiceEntry `subjectAltNames`);
        /// empty with `auto_san_validation` false: the chain alone is checked.
        subject_alt_names: Vec<String>,
        /// Envoy's `auto_san_validation`: the name checked is the Host (no `sni`, no SANs).
        auto_san_validation: bool,
        alpn: Vec<String>,
    },
}

/// The egress gateway: its identity, its servers (a listener each), clusters and authorization.
#[derive(Debug, Clone, PartialEq)]
pub struct Gateway {
    pub identity: Identity,
    pub servers: Vec<GatewayServer>,
    pub clusters: Vec<Cluster>,
    pub authorization: Authorization,
}

/// One Gateway server: a listener on `port`.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayServer {
    /// `Gateway/<name>`.
    pub source: String,
    pub port: u16,
    pub protocol: ServerProtocol,
    pub hosts: Vec<String>,
    pub route_config: RouteConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerProtocol {
    /// Plain HTTP.
    Http,
    /// `HTTPS` with `tls.mode: ISTIO_MUTUAL`: the mesh's mTLS, a client certificate required.
    HttpsIstioMutual,
}

/// AuthorizationPolicies applying to a proxy, as Envoy RBAC filters: DENY before ALLOW.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Authorization {
    pub deny: Vec<AuthzPolicy>,
    /// `None` when no ALLOW policy applies (everything allowed); `Some(empty)`: nothing allowed.
    pub allow: Option<Vec<AuthzPolicy>>,
}

/// One Envoy RBAC policy: one rule of an AuthorizationPolicy, named as istiod names it
/// (`ns[<ns>]-policy[<name>]-rule[<i>]`).
#[derive(Debug, Clone, PartialEq)]
pub struct AuthzPolicy {
    pub name: String,
    /// Any of these sources (each: all of its conditions); empty: any source.
    pub from: Vec<AuthzSource>,
    /// Any of these operations; empty: any operation.
    pub to: Vec<AuthzOperation>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct AuthzSource {
    /// SPIFFE principals (`spiffe://` + the manifest's value; `*` wildcards kept).
    pub principals: Vec<String>,
    pub not_principals: Vec<String>,
    pub namespaces: Vec<String>,
    pub not_namespaces: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct AuthzOperation {
    pub hosts: Vec<String>,
    pub not_hosts: Vec<String>,
    pub methods: Vec<String>,
    pub not_methods: Vec<String>,
    pub paths: Vec<String>,
    pub not_paths: Vec<String>,
}

/// A Cloud Foundry route and the hello version serving it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CfHost {
    pub host: String,
    pub port: u16,
    pub version: HelloVersion,
}

impl Policy {
    /// The route the proxy's sidecar takes for a plain call to the stable name.
    pub fn mesh_route(&self) -> &Route {
        self.stable_route(&self.proxy_sidecar.route_config)
    }

    /// The gateway server the proxy's sidecar sends the stable name to.
    pub fn gateway_server(&self) -> &GatewayServer {
        let port = self.mesh_route().destinations.first().map(|d| d.port);
        self.gateway
            .servers
            .iter()
            .find(|s| Some(s.port) == port)
            .unwrap_or(&self.gateway.servers[0])
    }

    /// The route the egress gateway takes for a plain call to the stable name.
    pub fn gateway_route(&self) -> &Route {
        self.stable_route(&self.gateway_server().route_config)
    }

    fn stable_route<'p>(&self, config: &'p RouteConfig) -> &'p Route {
        let host = config
            .virtual_host(&self.stable_host)
            .expect("the translation gives the stable name a virtual host");
        host.default_route()
            .or(host.routes.last())
            .expect("the translation gives every virtual host a route")
    }

    /// The share of calls (0..=1) the sidecar aborts.
    pub fn abort_share(&self) -> f64 {
        self.mesh_route().abort_share()
    }

    /// The share of calls (0..=1) each hello version answers, aborts taken out first (the
    /// gateway's catch-all route's weights).
    pub fn version_shares(&self) -> BTreeMap<HelloVersion, f64> {
        let route = self.gateway_route();
        let total: u32 = route.destinations.iter().map(|d| d.weight).sum();
        let mut shares = BTreeMap::new();
        for destination in &route.destinations {
            if let Some(cf) = self.cf_host(&destination.host) {
                let share = (1.0 - self.abort_share())
                    * (1.0 - route.abort_share())
                    * f64::from(destination.weight)
                    / f64::from(total.max(1));
                *shares.entry(cf.version).or_insert(0.0) += share;
            }
        }
        shares
    }

    pub fn cf_host(&self, host: &str) -> Option<&CfHost> {
        self.cf_hosts.iter().find(|cf| cf.host == host)
    }

    /// One line saying what the mesh will do.
    pub fn summary(&self) -> String {
        let mesh = self.mesh_route();
        let mut parts = Vec::new();
        if let Some(fault) = mesh.fault {
            if let Some(delay) = fault.delay {
                parts.push(format!(
                    "delay {:?} for {}% of calls",
                    delay.fixed, delay.percent
                ));
            }
            if let Some(abort) = fault.abort {
                parts.push(format!(
                    "abort {} for {}% of calls",
                    abort.status,
                    abort.percent.unwrap_or(0.0)
                ));
            }
        }
        if let Some(timeout) = mesh.timeout {
            parts.push(format!("timeout {timeout:?}"));
        }
        match &mesh.retries {
            Retries::Disabled => parts.push("no retries".to_owned()),
            Retries::Enabled {
                attempts,
                per_try_timeout,
                retry_on,
                retriable_status_codes,
                ..
            } => {
                let per_try = per_try_timeout
                    .map(|t| format!(" of {t:?}"))
                    .unwrap_or_default();
                let codes = retriable_status_codes
                    .iter()
                    .map(u16::to_string)
                    .collect::<Vec<_>>();
                parts.push(format!(
                    "{attempts} retries{per_try} on {}{}",
                    retry_on.join(","),
                    if codes.is_empty() {
                        String::new()
                    } else {
                        format!(" [{}]", codes.join(","))
                    }
                ));
            }
        }
        let gateway = self.gateway_route();
        let mut split = gateway
            .destinations
            .iter()
            .map(|d| format!("{} {}", d.host, d.weight))
            .collect::<Vec<_>>()
            .join(", ");
        let mut extras = Vec::new();
        if let Some(Fault { delay, abort }) = gateway.fault {
            if let Some(delay) = delay {
                extras.push(format!("delay {:?} for {}%", delay.fixed, delay.percent));
            }
            if let Some(abort) = abort {
                extras.push(format!(
                    "abort {} for {}%",
                    abort.status,
                    abort.percent.unwrap_or(0.0)
                ));
            }
        }
        if let Some(timeout) = gateway.timeout {
            extras.push(format!("timeout {timeout:?}"));
        }
        for mirror in self.mesh_route().mirrors.iter().chain(&gateway.mirrors) {
            extras.push(format!(
                "{}% mirrored to {}",
                mirror.percent, mirror.cluster
            ));
        }
        let other_routes = self
            .gateway_server()
            .route_config
            .virtual_host(&self.stable_host)
            .map_or(0, |vh| vh.routes.len().saturating_sub(1));
        if other_routes > 0 {
            extras.push(format!("{other_routes} matching route(s) before it"));
        }
        if !extras.is_empty() {
            split = format!("{split} ({})", extras.join(", "));
        }
        let hop = match self.gateway_server().protocol {
            ServerProtocol::Http => "plain HTTP",
            ServerProtocol::HttpsIstioMutual => "mTLS",
        };
        format!(
            "{} -> {}; to the egress gateway over {hop}; then {split}",
            self.stable_host,
            parts.join(", ")
        )
    }
}
