//! Reads the traffic policy from the Istio manifest (k8s/istio.yml), the single source of truth
//! for both the cluster and the local stand-in.
//!
//! Supported: one ServiceEntry declaring the stable name, one declaring the Cloud Foundry
//! hostnames, a Gateway with a plain-HTTP server, a DestinationRule for the egress gateway
//! subset, a mesh-bound VirtualService with one route to the egress gateway (fault abort,
//! timeout, retries), a gateway-bound VirtualService with one route of weighted destinations
//! (request header operations per destination), and DestinationRules originating TLS (SIMPLE).
//! Anything else that would change what the mesh does is an error naming the field, so the local
//! demo never silently behaves differently from the cluster.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_norway::Value;

/// What went wrong reading the policy; each message names the file and the resource.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read policy {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: document {index} is not valid YAML: {source}")]
    Yaml {
        path: PathBuf,
        index: usize,
        source: serde_norway::Error,
    },
    #[error("{path}: {resource}: {message}")]
    Resource {
        path: PathBuf,
        resource: String,
        message: String,
    },
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
}

/// The policy the local Envoys enforce, with every number taken from the manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// The stable name the proxy calls (`hello.external`).
    pub stable_host: String,
    /// Its port, declared by its ServiceEntry.
    pub stable_port: u16,
    /// What the sidecar does with calls to the stable name.
    pub mesh_route: MeshRoute,
    /// What the egress gateway does with them.
    pub gateway_route: GatewayRoute,
    /// The Cloud Foundry routes the foundation serves, each by one hello version.
    pub cf_hosts: Vec<CfHost>,
}

/// The sidecar's route: fault, timeout and retries, towards the egress gateway.
#[derive(Debug, Clone, PartialEq)]
pub struct MeshRoute {
    /// `VirtualService/<name>` for messages.
    pub source: String,
    pub rules: RouteRules,
    /// The egress gateway service (`istio-egressgateway.istio-system.svc.cluster.local`).
    pub gateway_host: String,
    pub gateway_subset: Option<String>,
    pub gateway_port: u16,
}

/// The egress gateway's route: weighted destinations, each a Cloud Foundry route.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayRoute {
    pub source: String,
    pub rules: RouteRules,
    pub destinations: Vec<Destination>,
}

/// Behaviour an Istio HTTP route adds on top of where it sends the request.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteRules {
    pub abort: Option<Abort>,
    /// `None`: no route timeout (Istio's default disables Envoy's 15 s).
    pub timeout: Option<Duration>,
    pub retries: Retries,
}

/// An injected abort: `percent` of calls answered with `status` by the sidecar itself.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Abort {
    pub status: u16,
    pub percent: f64,
}

/// A retry policy as Envoy receives it from Istio.
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
    },
}

impl Retries {
    /// What Istio programs when a route sets no `retries`.
    pub fn istio_default() -> Self {
        Retries::Enabled {
            attempts: 2,
            per_try_timeout: None,
            retry_on: [
                "connect-failure",
                "refused-stream",
                "unavailable",
                "cancelled",
                "retriable-status-codes",
            ]
            .map(String::from)
            .to_vec(),
            retriable_status_codes: vec![503],
        }
    }
}

/// One weighted destination of the gateway route.
#[derive(Debug, Clone, PartialEq)]
pub struct Destination {
    pub host: String,
    pub port: u16,
    pub weight: u32,
    /// From `headers.request.set` of `host`/`:authority`: Envoy's per-cluster host rewrite.
    pub host_rewrite: Option<String>,
    /// Other request headers set (overwrite) or added (append).
    pub set_headers: Vec<(String, String)>,
    pub add_headers: Vec<(String, String)>,
    pub remove_headers: Vec<String>,
    /// TLS the gateway originates towards this destination; `None` sends plain HTTP.
    pub tls: Option<OriginationTls>,
}

impl Destination {
    /// The Host the Cloud Foundry router sees.
    pub fn effective_host<'a>(&'a self, stable_host: &'a str) -> &'a str {
        self.host_rewrite.as_deref().unwrap_or(stable_host)
    }
}

/// `tls.mode: SIMPLE` of a DestinationRule.
#[derive(Debug, Clone, PartialEq)]
pub struct OriginationTls {
    /// `None`: Istio's auto SNI, i.e. the request's Host after rewriting.
    pub sni: Option<String>,
    /// `false` with `insecureSkipVerify: true`.
    pub verify: bool,
    /// Names the certificate must carry; empty: the SNI.
    pub subject_alt_names: Vec<String>,
}

/// A Cloud Foundry route and the hello version serving it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CfHost {
    pub host: String,
    pub port: u16,
    pub version: HelloVersion,
}

/// The two hello versions (hello-cf's `HELLO_VERSION`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HelloVersion {
    V1,
    V2,
}

impl HelloVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            HelloVersion::V1 => "v1",
            HelloVersion::V2 => "v2",
        }
    }

    /// The body hello-cf answers, without its trailing newline.
    pub fn greeting(self) -> String {
        format!("Hello K8s, from CF {} service!", self.as_str())
    }
}

impl Policy {
    /// Reads and checks the manifest at `path`.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.to_owned(),
            source,
        })?;
        Policy::parse(path, &text)
    }

    /// Parses manifest text; `path` is only used in messages.
    pub fn parse(path: &Path, text: &str) -> Result<Policy, PolicyError> {
        let resources = Resources::parse(path, text)?;
        resources.policy()
    }

    /// The share of calls (0..=1) the sidecar aborts.
    pub fn abort_share(&self) -> f64 {
        self.mesh_route
            .rules
            .abort
            .map_or(0.0, |abort| abort.percent / 100.0)
    }

    /// The share of calls (0..=1) each hello version answers, aborts taken out first.
    pub fn version_shares(&self) -> BTreeMap<HelloVersion, f64> {
        let total: u32 = self
            .gateway_route
            .destinations
            .iter()
            .map(|d| d.weight)
            .sum();
        let mut shares = BTreeMap::new();
        for destination in &self.gateway_route.destinations {
            if let Some(cf) = self.cf_host(&destination.host) {
                let share =
                    (1.0 - self.abort_share()) * f64::from(destination.weight) / f64::from(total);
                *shares.entry(cf.version).or_insert(0.0) += share;
            }
        }
        shares
    }

    pub fn cf_host(&self, host: &str) -> Option<&CfHost> {
        self.cf_hosts.iter().find(|cf| cf.host == host)
    }
}

// ---- the manifest as written ----

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Document {
    api_version: String,
    kind: String,
    metadata: Metadata,
    #[serde(default)]
    spec: Value,
}

#[derive(Debug, Deserialize)]
struct Metadata {
    name: String,
    #[serde(default)]
    namespace: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ServiceEntrySpec {
    hosts: Vec<String>,
    #[serde(default)]
    ports: Vec<Port>,
}

#[derive(Debug, Deserialize)]
struct Port {
    number: u16,
    #[serde(default)]
    protocol: Option<String>,
}

#[derive(Debug, Deserialize)]
struct GatewaySpec {
    #[serde(default)]
    servers: Vec<GatewayServer>,
}

#[derive(Debug, Deserialize)]
struct GatewayServer {
    port: Port,
    #[serde(default)]
    hosts: Vec<String>,
    #[serde(default)]
    tls: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DestinationRuleSpec {
    host: String,
    #[serde(default)]
    traffic_policy: Option<TrafficPolicy>,
    #[serde(default)]
    subsets: Vec<Subset>,
    #[serde(flatten)]
    other: BTreeMap<String, Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Subset {
    name: String,
    #[serde(default)]
    traffic_policy: Option<TrafficPolicy>,
    #[serde(flatten)]
    other: BTreeMap<String, Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TrafficPolicy {
    #[serde(default)]
    tls: Option<ClientTls>,
    #[serde(default)]
    port_level_settings: Vec<PortTrafficPolicy>,
    #[serde(flatten)]
    other: BTreeMap<String, Value>,
}

#[derive(Debug, Deserialize)]
struct PortTrafficPolicy {
    port: PortSelector,
    #[serde(default)]
    tls: Option<ClientTls>,
    #[serde(flatten)]
    other: BTreeMap<String, Value>,
}

#[derive(Debug, Deserialize)]
struct PortSelector {
    number: u16,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ClientTls {
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    sni: Option<String>,
    #[serde(default)]
    subject_alt_names: Vec<String>,
    #[serde(default)]
    insecure_skip_verify: Option<bool>,
    #[serde(flatten)]
    other: BTreeMap<String, Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct VirtualServiceSpec {
    hosts: Vec<String>,
    #[serde(default)]
    gateways: Vec<String>,
    #[serde(default)]
    http: Vec<HttpRoute>,
    #[serde(flatten)]
    other: BTreeMap<String, Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct HttpRoute {
    #[serde(default, rename = "match")]
    matches: Vec<BTreeMap<String, Value>>,
    #[serde(default)]
    route: Vec<RouteDestination>,
    #[serde(default)]
    fault: Option<Fault>,
    #[serde(default)]
    timeout: Option<Value>,
    #[serde(default)]
    retries: Option<RetryPolicy>,
    #[serde(flatten)]
    other: BTreeMap<String, Value>,
}

#[derive(Debug, Deserialize)]
struct RouteDestination {
    destination: DestinationRef,
    #[serde(default)]
    weight: Option<u32>,
    #[serde(default)]
    headers: Option<Headers>,
    #[serde(flatten)]
    other: BTreeMap<String, Value>,
}

#[derive(Debug, Deserialize)]
struct DestinationRef {
    host: String,
    #[serde(default)]
    subset: Option<String>,
    #[serde(default)]
    port: Option<PortSelector>,
}

#[derive(Debug, Deserialize)]
struct Headers {
    #[serde(default)]
    request: Option<HeaderOperations>,
    #[serde(default)]
    response: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
struct HeaderOperations {
    #[serde(default)]
    set: BTreeMap<String, String>,
    #[serde(default)]
    add: BTreeMap<String, String>,
    #[serde(default)]
    remove: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Fault {
    #[serde(default)]
    abort: Option<FaultAbort>,
    #[serde(flatten)]
    other: BTreeMap<String, Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FaultAbort {
    #[serde(default)]
    http_status: Option<u16>,
    #[serde(default)]
    percentage: Option<Percentage>,
    #[serde(flatten)]
    other: BTreeMap<String, Value>,
}

#[derive(Debug, Deserialize)]
struct Percentage {
    value: f64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RetryPolicy {
    #[serde(default)]
    attempts: Option<u32>,
    #[serde(default)]
    per_try_timeout: Option<Value>,
    #[serde(default)]
    retry_on: Option<String>,
    #[serde(flatten)]
    other: BTreeMap<String, Value>,
}

/// Retry conditions Istio passes to Envoy's `retry_on` (besides status codes).
const RETRY_CONDITIONS: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "envoy-ratelimited",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

const API_VERSIONS: &[&str] = &[
    "networking.istio.io/v1",
    "networking.istio.io/v1beta1",
    "networking.istio.io/v1alpha3",
];

// ---- from resources to policy ----

struct Named<T> {
    name: String,
    namespace: Option<String>,
    spec: T,
}

/// The mesh-bound VirtualService, the gateway-bound one, and its Gateway.
struct Bindings<'r> {
    mesh_vs: &'r Named<VirtualServiceSpec>,
    gateway_vs: &'r Named<VirtualServiceSpec>,
    gateway: &'r Named<GatewaySpec>,
}

struct Resources<'p> {
    path: &'p Path,
    service_entries: Vec<Named<ServiceEntrySpec>>,
    gateways: Vec<Named<GatewaySpec>>,
    destination_rules: Vec<Named<DestinationRuleSpec>>,
    virtual_services: Vec<Named<VirtualServiceSpec>>,
}

impl<'p> Resources<'p> {
    fn parse(path: &'p Path, text: &str) -> Result<Self, PolicyError> {
        let mut resources = Resources {
            path,
            service_entries: Vec::new(),
            gateways: Vec::new(),
            destination_rules: Vec::new(),
            virtual_services: Vec::new(),
        };
        for (index, document) in serde_norway::Deserializer::from_str(text).enumerate() {
            let yaml_error = |source| PolicyError::Yaml {
                path: path.to_owned(),
                index: index + 1,
                source,
            };
            let value = Value::deserialize(document).map_err(yaml_error)?;
            if value.is_null() {
                continue; // comments only, e.g. before the first `---`
            }
            let document: Document = serde_norway::from_value(value).map_err(yaml_error)?;
            resources.add(document)?;
        }
        Ok(resources)
    }

    fn add(&mut self, document: Document) -> Result<(), PolicyError> {
        let resource = format!("{}/{}", document.kind, document.metadata.name);
        if !API_VERSIONS.contains(&document.api_version.as_str()) {
            return Err(self.error(
                &resource,
                format!(
                    "apiVersion {} is not supported (expected one of {})",
                    document.api_version,
                    API_VERSIONS.join(", ")
                ),
            ));
        }
        let Metadata { name, namespace } = document.metadata;
        match document.kind.as_str() {
            "ServiceEntry" => {
                let spec = self.spec(&resource, document.spec)?;
                self.service_entries.push(Named {
                    name,
                    namespace,
                    spec,
                });
            }
            "Gateway" => {
                let spec = self.spec(&resource, document.spec)?;
                self.gateways.push(Named {
                    name,
                    namespace,
                    spec,
                });
            }
            "DestinationRule" => {
                let spec = self.spec(&resource, document.spec)?;
                self.destination_rules.push(Named {
                    name,
                    namespace,
                    spec,
                });
            }
            "VirtualService" => {
                let spec = self.spec(&resource, document.spec)?;
                self.virtual_services.push(Named {
                    name,
                    namespace,
                    spec,
                });
            }
            other => {
                return Err(self.error(
                    &resource,
                    format!(
                        "kind {other} is not supported by local-mesh \
                         (ServiceEntry, Gateway, DestinationRule, VirtualService are)"
                    ),
                ));
            }
        }
        Ok(())
    }

    fn spec<T: DeserializeOwned>(&self, resource: &str, spec: Value) -> Result<T, PolicyError> {
        serde_norway::from_value(spec)
            .map_err(|error| self.error(resource, format!("spec: {error}")))
    }

    fn error(&self, resource: &str, message: impl Into<String>) -> PolicyError {
        PolicyError::Resource {
            path: self.path.to_owned(),
            resource: resource.to_owned(),
            message: message.into(),
        }
    }

    fn file_error(&self, message: impl Into<String>) -> PolicyError {
        PolicyError::File {
            path: self.path.to_owned(),
            message: message.into(),
        }
    }

    fn policy(&self) -> Result<Policy, PolicyError> {
        let Bindings {
            mesh_vs,
            gateway_vs,
            gateway,
        } = self.bindings()?;
        let stable_host = single_host(self, mesh_vs)?;
        let stable_port = self.stable_port(&stable_host)?;
        let mesh_route = self.mesh_route(mesh_vs, gateway)?;
        let gateway_server_port = self.gateway_server_port(gateway, &stable_host)?;
        if mesh_route.gateway_port != gateway_server_port {
            return Err(self.error(
                &format!("VirtualService/{}", mesh_vs.name),
                format!(
                    "routes to the egress gateway on port {}, but Gateway/{} listens on {}",
                    mesh_route.gateway_port, gateway.name, gateway_server_port
                ),
            ));
        }
        let cf_hosts = self.cf_hosts()?;
        let gateway_route = self.gateway_route(gateway_vs, &cf_hosts)?;
        Ok(Policy {
            stable_host,
            stable_port,
            mesh_route,
            gateway_route,
            cf_hosts,
        })
    }

    fn bindings(&self) -> Result<Bindings<'_>, PolicyError> {
        let (mesh_bound, gateway_bound): (Vec<_>, Vec<_>) =
            self.virtual_services.iter().partition(|vs| {
                vs.spec.gateways.is_empty() || vs.spec.gateways.iter().any(|g| g == "mesh")
            });
        let mesh_vs = match mesh_bound.as_slice() {
            [one] => *one,
            found => {
                return Err(self.file_error(format!(
                    "expected exactly one VirtualService bound to the mesh (gateways: [mesh]), found {}",
                    found.len()
                )));
            }
        };
        if mesh_vs.spec.gateways.len() > 1 {
            return Err(self.error(
                &format!("VirtualService/{}", mesh_vs.name),
                "binding one VirtualService to both the mesh and a gateway is not supported; \
                 use one VirtualService for each",
            ));
        }
        let gateway_vs = match gateway_bound.as_slice() {
            [one] => *one,
            found => {
                return Err(self.file_error(format!(
                    "expected exactly one VirtualService bound to the egress Gateway, found {}",
                    found.len()
                )));
            }
        };
        let gateway = match gateway_vs.spec.gateways.as_slice() {
            [reference] => self
                .gateway_named(reference, gateway_vs.namespace.as_deref())
                .ok_or_else(|| {
                    self.error(
                        &format!("VirtualService/{}", gateway_vs.name),
                        format!("gateway {reference} is not defined in this file"),
                    )
                })?,
            _ => {
                return Err(self.error(
                    &format!("VirtualService/{}", gateway_vs.name),
                    "must be bound to exactly one Gateway",
                ));
            }
        };
        Ok(Bindings {
            mesh_vs,
            gateway_vs,
            gateway,
        })
    }

    /// `name` or `namespace/name`, as a VirtualService refers to a Gateway.
    fn gateway_named(
        &self,
        reference: &str,
        default_namespace: Option<&str>,
    ) -> Option<&Named<GatewaySpec>> {
        let (namespace, name) = match reference.split_once('/') {
            Some((namespace, name)) => (Some(namespace), name),
            None => (default_namespace, reference),
        };
        self.gateways.iter().find(|gateway| {
            gateway.name == name
                && (namespace.is_none() || gateway.namespace.as_deref() == namespace)
        })
    }

    fn stable_port(&self, stable_host: &str) -> Result<u16, PolicyError> {
        let entry = self
            .service_entries
            .iter()
            .find(|entry| entry.spec.hosts.iter().any(|host| host == stable_host))
            .ok_or_else(|| {
                self.file_error(format!(
                    "{stable_host} is not declared by any ServiceEntry (REGISTRY_ONLY would block it)"
                ))
            })?;
        let http_ports: Vec<u16> = entry
            .spec
            .ports
            .iter()
            .filter(|port| {
                port.protocol
                    .as_deref()
                    .is_some_and(|p| p.eq_ignore_ascii_case("HTTP"))
            })
            .map(|port| port.number)
            .collect();
        match http_ports.as_slice() {
            [port] => Ok(*port),
            _ => Err(self.error(
                &format!("ServiceEntry/{}", entry.name),
                format!(
                    "{stable_host} needs exactly one port with protocol HTTP, found {}",
                    http_ports.len()
                ),
            )),
        }
    }

    fn gateway_server_port(
        &self,
        gateway: &Named<GatewaySpec>,
        stable_host: &str,
    ) -> Result<u16, PolicyError> {
        let resource = format!("Gateway/{}", gateway.name);
        let serves = |server: &&GatewayServer| {
            server.hosts.iter().any(|host| {
                let host = host.rsplit('/').next().unwrap_or(host);
                host == stable_host || host == "*"
            })
        };
        let server = match gateway
            .spec
            .servers
            .iter()
            .filter(serves)
            .collect::<Vec<_>>()
            .as_slice()
        {
            [one] => *one,
            found => {
                return Err(self.error(
                    &resource,
                    format!(
                        "expected one server for {stable_host}, found {}",
                        found.len()
                    ),
                ));
            }
        };
        let protocol = server.port.protocol.as_deref().unwrap_or("");
        if !protocol.eq_ignore_ascii_case("HTTP") || server.tls.is_some() {
            return Err(self.error(
                &resource,
                format!(
                    "server on port {} has protocol {protocol}; local-mesh supports a plain HTTP server \
                     (the sidecar-to-gateway hop is not encrypted locally)",
                    server.port.number
                ),
            ));
        }
        Ok(server.port.number)
    }

    fn mesh_route(
        &self,
        vs: &Named<VirtualServiceSpec>,
        gateway: &Named<GatewaySpec>,
    ) -> Result<MeshRoute, PolicyError> {
        let resource = format!("VirtualService/{}", vs.name);
        let route = self.single_route(&resource, vs, false)?;
        let rules = self.route_rules(&resource, route)?;
        let destination = match route.route.as_slice() {
            [one] => one,
            found => {
                return Err(self.error(
                    &resource,
                    format!(
                        "the mesh route must have one destination, the egress gateway (Gateway/{}); found {}",
                        gateway.name,
                        found.len()
                    ),
                ));
            }
        };
        reject_other(self, &resource, "route[0]", &destination.other)?;
        if destination.headers.is_some() {
            return Err(self.error(&resource, "headers on the mesh route are not supported"));
        }
        let reference = &destination.destination;
        let port = reference
            .port
            .as_ref()
            .ok_or_else(|| {
                self.error(
                    &resource,
                    "the destination needs port.number (the egress gateway's port)",
                )
            })?
            .number;
        if let Some(subset) = &reference.subset {
            self.check_gateway_subset(&reference.host, subset)?;
        }
        Ok(MeshRoute {
            source: resource,
            rules,
            gateway_host: reference.host.clone(),
            gateway_subset: reference.subset.clone(),
            gateway_port: port,
        })
    }

    /// The subset must exist (Istio answers 503 otherwise); its TLS may only be Istio's own mTLS,
    /// which the local stand-in leaves out.
    fn check_gateway_subset(&self, host: &str, subset: &str) -> Result<(), PolicyError> {
        let rules: Vec<_> = self
            .destination_rules
            .iter()
            .filter(|rule| rule.spec.host == host)
            .collect();
        let found = rules.iter().find_map(|rule| {
            rule.spec
                .subsets
                .iter()
                .find(|s| s.name == subset)
                .map(|s| (rule, s))
        });
        let Some((rule, subset_spec)) = found else {
            return Err(self.file_error(format!(
                "the mesh route names subset {subset} of {host}, but no DestinationRule defines it"
            )));
        };
        let resource = format!("DestinationRule/{}", rule.name);
        reject_other(self, &resource, "spec", &rule.spec.other)?;
        reject_other(
            self,
            &resource,
            &format!("subset {subset}"),
            &subset_spec.other,
        )?;
        for policy in [
            rule.spec.traffic_policy.as_ref(),
            subset_spec.traffic_policy.as_ref(),
        ]
        .into_iter()
        .flatten()
        {
            reject_other(self, &resource, "trafficPolicy", &policy.other)?;
            if !policy.port_level_settings.is_empty() {
                return Err(self.error(
                    &resource,
                    "portLevelSettings for the egress gateway are not supported",
                ));
            }
            if let Some(tls) = &policy.tls {
                let mode = tls.mode.as_deref().unwrap_or("DISABLE");
                if mode != "ISTIO_MUTUAL" && mode != "DISABLE" {
                    return Err(self.error(
                        &resource,
                        format!("tls.mode {mode} towards the egress gateway is not supported (ISTIO_MUTUAL, DISABLE are)"),
                    ));
                }
            }
        }
        Ok(())
    }

    fn gateway_route(
        &self,
        vs: &Named<VirtualServiceSpec>,
        cf_hosts: &[CfHost],
    ) -> Result<GatewayRoute, PolicyError> {
        let resource = format!("VirtualService/{}", vs.name);
        let route = self.single_route(&resource, vs, true)?;
        let rules = self.route_rules(&resource, route)?;
        if route.route.is_empty() {
            return Err(self.error(&resource, "the gateway route has no destination"));
        }
        let several = route.route.len() > 1;
        let mut destinations = Vec::new();
        for (index, destination) in route.route.iter().enumerate() {
            let field = format!("route[{index}]");
            destinations.push(self.destination(
                &resource,
                &field,
                destination,
                several,
                cf_hosts,
            )?);
        }
        for (index, destination) in destinations.iter().enumerate() {
            if destinations[..index]
                .iter()
                .any(|earlier| earlier.host == destination.host)
            {
                return Err(self.error(
                    &resource,
                    format!("{} appears twice among the destinations", destination.host),
                ));
            }
        }
        if destinations.iter().map(|d| d.weight).sum::<u32>() == 0 {
            return Err(self.error(&resource, "the destination weights add up to 0"));
        }
        Ok(GatewayRoute {
            source: resource,
            rules,
            destinations,
        })
    }

    fn destination(
        &self,
        resource: &str,
        field: &str,
        destination: &RouteDestination,
        several: bool,
        cf_hosts: &[CfHost],
    ) -> Result<Destination, PolicyError> {
        reject_other(self, resource, field, &destination.other)?;
        let reference = &destination.destination;
        if reference.subset.is_some() {
            return Err(self.error(
                resource,
                format!("{field}: subsets of Cloud Foundry hosts are not supported"),
            ));
        }
        let host = reference.host.clone();
        let cf = cf_hosts.iter().find(|cf| cf.host == host).ok_or_else(|| {
            self.error(
                resource,
                format!("{field}: {host} is not declared by the Cloud Foundry ServiceEntry (REGISTRY_ONLY would block it)"),
            )
        })?;
        let port = reference.port.as_ref().map_or(cf.port, |port| port.number);
        if port != cf.port {
            return Err(self.error(
                resource,
                format!(
                    "{field}: port {port} of {host} is not the declared port {}",
                    cf.port
                ),
            ));
        }
        let weight = match (destination.weight, several) {
            (Some(weight), _) => weight,
            (None, false) => 100,
            (None, true) => {
                return Err(self.error(
                    resource,
                    format!("{field}: weight is required when there are several destinations"),
                ));
            }
        };
        let mut result = Destination {
            host: host.clone(),
            port,
            weight,
            host_rewrite: None,
            set_headers: Vec::new(),
            add_headers: Vec::new(),
            remove_headers: Vec::new(),
            tls: self.origination_tls(&host, port)?,
        };
        if let Some(headers) = &destination.headers {
            if headers.response.is_some() {
                return Err(self.error(
                    resource,
                    format!("{field}: headers.response is not supported"),
                ));
            }
            let request = headers.request.as_ref();
            for (name, value) in request.map(|r| &r.set).into_iter().flatten() {
                if name.eq_ignore_ascii_case("host") || name == ":authority" {
                    result.host_rewrite = Some(value.clone());
                } else {
                    result.set_headers.push((name.clone(), value.clone()));
                }
            }
            for (name, value) in request.map(|r| &r.add).into_iter().flatten() {
                result.add_headers.push((name.clone(), value.clone()));
            }
            result.remove_headers = request.map(|r| r.remove.clone()).unwrap_or_default();
        }
        Ok(result)
    }

    /// The TLS the egress gateway originates towards `host:port`, from its DestinationRule.
    fn origination_tls(
        &self,
        host: &str,
        port: u16,
    ) -> Result<Option<OriginationTls>, PolicyError> {
        let rules: Vec<_> = self
            .destination_rules
            .iter()
            .filter(|rule| rule.spec.host == host)
            .collect();
        let rule = match rules.as_slice() {
            [] => return Ok(None),
            [one] => *one,
            _ => return Err(self.file_error(format!("several DestinationRules for {host}"))),
        };
        let resource = format!("DestinationRule/{}", rule.name);
        reject_other(self, &resource, "spec", &rule.spec.other)?;
        if !rule.spec.subsets.is_empty() {
            return Err(self.error(
                &resource,
                "subsets of Cloud Foundry hosts are not supported",
            ));
        }
        let Some(policy) = &rule.spec.traffic_policy else {
            return Ok(None);
        };
        reject_other(self, &resource, "trafficPolicy", &policy.other)?;
        let mut tls = policy.tls.clone();
        for settings in &policy.port_level_settings {
            reject_other(self, &resource, "portLevelSettings", &settings.other)?;
            if settings.port.number == port && settings.tls.is_some() {
                tls = settings.tls.clone();
            }
        }
        let Some(tls) = tls else {
            return Ok(None);
        };
        // The cluster's trust anchors; locally the router's certificate comes from the CA
        // generated at start, which the gateway always trusts.
        reject_other_except(
            self,
            &resource,
            "tls",
            &tls.other,
            &["caCertificates", "credentialName"],
        )?;
        match tls.mode.as_deref().unwrap_or("DISABLE") {
            "DISABLE" => Ok(None),
            "SIMPLE" => Ok(Some(OriginationTls {
                sni: tls.sni.clone(),
                verify: !tls.insecure_skip_verify.unwrap_or(false),
                subject_alt_names: tls.subject_alt_names.clone(),
            })),
            mode => Err(self.error(
                &resource,
                format!("tls.mode {mode} is not supported (SIMPLE originates TLS; DISABLE sends plain HTTP)"),
            )),
        }
    }

    /// The route of a VirtualService: exactly one, matching everything (a gateway-bound one may
    /// match on `gateways`/`port`, which only restate its binding).
    fn single_route<'v>(
        &self,
        resource: &str,
        vs: &'v Named<VirtualServiceSpec>,
        gateway_bound: bool,
    ) -> Result<&'v HttpRoute, PolicyError> {
        reject_other(self, resource, "spec", &vs.spec.other)?;
        let route = match vs.spec.http.as_slice() {
            [one] => one,
            found => {
                return Err(self.error(
                    resource,
                    format!("expected exactly one http route, found {} (match-based routing is not supported)", found.len()),
                ));
            }
        };
        for condition in &route.matches {
            for key in condition.keys() {
                let restates_binding = gateway_bound && (key == "gateways" || key == "port");
                if !restates_binding {
                    return Err(
                        self.error(resource, format!("http[0].match.{key} is not supported"))
                    );
                }
            }
        }
        reject_other_except(self, resource, "http[0]", &route.other, &["name"])?;
        Ok(route)
    }

    fn route_rules(&self, resource: &str, route: &HttpRoute) -> Result<RouteRules, PolicyError> {
        let abort = match &route.fault {
            None => None,
            Some(fault) => {
                reject_other(self, resource, "http[0].fault", &fault.other)?;
                match &fault.abort {
                    None => None,
                    Some(abort) => Some(self.abort(resource, abort)?),
                }
            }
        };
        let timeout = match &route.timeout {
            None => None,
            Some(value) => {
                let timeout = istio_duration(value).map_err(|message| {
                    self.error(resource, format!("http[0].timeout: {message}"))
                })?;
                // Istio: `0s` disables the timeout, as an absent one does.
                (!timeout.is_zero()).then_some(timeout)
            }
        };
        let retries = match &route.retries {
            None => Retries::istio_default(),
            Some(policy) => self.retries(resource, policy)?,
        };
        Ok(RouteRules {
            abort,
            timeout,
            retries,
        })
    }

    fn abort(&self, resource: &str, abort: &FaultAbort) -> Result<Abort, PolicyError> {
        if abort.other.contains_key("percent") {
            return Err(self.error(
                resource,
                "http[0].fault.abort.percent is deprecated; use percentage.value",
            ));
        }
        reject_other(self, resource, "http[0].fault.abort", &abort.other)?;
        let status = abort
            .http_status
            .ok_or_else(|| self.error(resource, "http[0].fault.abort needs httpStatus"))?;
        if !(200..=599).contains(&status) {
            return Err(self.error(
                resource,
                format!("http[0].fault.abort.httpStatus {status} is not an HTTP status"),
            ));
        }
        // Istio aborts every call when no percentage is given.
        let percent = abort.percentage.as_ref().map_or(100.0, |p| p.value);
        if !(0.0..=100.0).contains(&percent) {
            return Err(self.error(
                resource,
                format!("http[0].fault.abort.percentage.value {percent} is not within 0..=100"),
            ));
        }
        Ok(Abort { status, percent })
    }

    fn retries(&self, resource: &str, policy: &RetryPolicy) -> Result<Retries, PolicyError> {
        reject_other(self, resource, "http[0].retries", &policy.other)?;
        let attempts = policy.attempts.unwrap_or(0);
        if attempts == 0 {
            return Ok(Retries::Disabled);
        }
        let per_try_timeout = match &policy.per_try_timeout {
            None => None,
            Some(value) => Some(istio_duration(value).map_err(|message| {
                self.error(
                    resource,
                    format!("http[0].retries.perTryTimeout: {message}"),
                )
            })?),
        };
        let mut retry_on = Vec::new();
        let mut codes = Vec::new();
        let conditions = policy.retry_on.as_deref().unwrap_or("");
        for condition in conditions
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
        {
            if let Ok(code) = condition.parse::<u16>() {
                codes.push(code);
            } else if RETRY_CONDITIONS.contains(&condition) {
                retry_on.push(condition.to_owned());
            } else {
                return Err(self.error(
                    resource,
                    format!("http[0].retries.retryOn: unknown condition {condition:?}"),
                ));
            }
        }
        if retry_on.is_empty() && codes.is_empty() {
            // Istio keeps its default conditions when only attempts are given.
            retry_on = [
                "connect-failure",
                "refused-stream",
                "unavailable",
                "cancelled",
            ]
            .map(String::from)
            .to_vec();
            codes.push(503);
        }
        if !codes.is_empty() && !retry_on.iter().any(|c| c == "retriable-status-codes") {
            retry_on.push("retriable-status-codes".to_owned());
        }
        Ok(Retries::Enabled {
            attempts,
            per_try_timeout,
            retry_on,
            retriable_status_codes: codes,
        })
    }

    /// The hosts of the ServiceEntry on port 443-style HTTPS/TLS ports: the Cloud Foundry routes.
    fn cf_hosts(&self) -> Result<Vec<CfHost>, PolicyError> {
        let mut cf_hosts: Vec<CfHost> = Vec::new();
        for entry in &self.service_entries {
            let tls_ports: Vec<u16> = entry
                .spec
                .ports
                .iter()
                .filter(|port| {
                    port.protocol.as_deref().is_some_and(|p| {
                        p.eq_ignore_ascii_case("HTTPS") || p.eq_ignore_ascii_case("TLS")
                    })
                })
                .map(|port| port.number)
                .collect();
            let port = match tls_ports.as_slice() {
                [] => continue,
                [port] => *port,
                _ => {
                    return Err(self.error(
                        &format!("ServiceEntry/{}", entry.name),
                        "several HTTPS ports for the Cloud Foundry routes are not supported",
                    ));
                }
            };
            for host in &entry.spec.hosts {
                let version = hello_version_of(host).ok_or_else(|| {
                    self.error(
                        &format!("ServiceEntry/{}", entry.name),
                        format!("cannot tell which hello version serves {host}: its first label needs a `v1` or `v2` part"),
                    )
                })?;
                if let Some(other) = cf_hosts.iter().find(|cf| cf.version == version) {
                    return Err(self.file_error(format!(
                        "{host} and {} would both be served by hello {}",
                        other.host,
                        version.as_str()
                    )));
                }
                cf_hosts.push(CfHost {
                    host: host.clone(),
                    port,
                    version,
                });
            }
        }
        if cf_hosts.is_empty() {
            return Err(self
                .file_error("no ServiceEntry declares the Cloud Foundry routes (an HTTPS port)"));
        }
        cf_hosts.sort_by_key(|cf| cf.version);
        Ok(cf_hosts)
    }
}

fn single_host(
    resources: &Resources<'_>,
    vs: &Named<VirtualServiceSpec>,
) -> Result<String, PolicyError> {
    match vs.spec.hosts.as_slice() {
        [host] => Ok(host.clone()),
        hosts => Err(resources.error(
            &format!("VirtualService/{}", vs.name),
            format!("expected one host (the stable name), found {}", hosts.len()),
        )),
    }
}

/// Fails on the first field the local stand-in does not interpret.
fn reject_other(
    resources: &Resources<'_>,
    resource: &str,
    field: &str,
    other: &BTreeMap<String, Value>,
) -> Result<(), PolicyError> {
    reject_other_except(resources, resource, field, other, &[])
}

/// Like [`reject_other`], accepting `harmless` fields that change nothing locally.
fn reject_other_except(
    resources: &Resources<'_>,
    resource: &str,
    field: &str,
    other: &BTreeMap<String, Value>,
    harmless: &[&str],
) -> Result<(), PolicyError> {
    match other.keys().find(|key| !harmless.contains(&key.as_str())) {
        None => Ok(()),
        Some(key) => Err(resources.error(
            resource,
            format!("{field}.{key} is not supported by local-mesh"),
        )),
    }
}

/// `hello-istio-v1.apps.cf.example` → v1: the version is a dash-separated part of the first label.
fn hello_version_of(host: &str) -> Option<HelloVersion> {
    let first_label = host.split('.').next()?;
    let mut versions = first_label.split('-').filter_map(|part| match part {
        "v1" => Some(HelloVersion::V1),
        "v2" => Some(HelloVersion::V2),
        _ => None,
    });
    let version = versions.next()?;
    versions.next().is_none().then_some(version)
}

/// Istio durations carry a unit (`3s`, `250ms`, `1m`); a bare number is an error there, so here too.
fn istio_duration(value: &Value) -> Result<Duration, String> {
    let text = match value {
        Value::String(text) => text.clone(),
        Value::Number(number) => number.to_string(),
        _ => return Err("expected a duration such as 3s".to_owned()),
    };
    if !text.trim_end().ends_with(|c: char| c.is_ascii_alphabetic()) {
        return Err(format!("'{text}' needs a unit (e.g. 3s, 250ms)"));
    }
    demo_common::parse_duration(&text).map_err(|error| error.to_string())
}

#[cfg(test)]
mod tests;
