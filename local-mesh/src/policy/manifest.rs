//! The resources as written in the manifest: serde types, the multi-document reader and each
//! resource's identity (kind, namespace, name). Fields local-mesh does not interpret land in an
//! `other` map, so the translation can refuse them by name instead of ignoring them.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_norway::Value;

use super::PolicyError;

/// Unknown fields of a spec object, by name.
pub type Other = BTreeMap<String, Value>;

/// What identifies a resource to the API server: `kubectl apply` replaces a resource with the
/// same kind, namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResourceId {
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for ResourceId {
    /// `Kind/name`, as the policy's messages name a resource.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind, self.name)
    }
}

/// One resource of the manifest, its spec typed by kind.
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    pub id: ResourceId,
    pub spec: Spec,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Spec {
    ServiceEntry(ServiceEntrySpec),
    Gateway(GatewaySpec),
    DestinationRule(Box<DestinationRuleSpec>),
    VirtualService(VirtualServiceSpec),
    AuthorizationPolicy(AuthorizationPolicySpec),
}

/// Every resource of a manifest, in file order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Manifest {
    pub resources: Vec<Resource>,
}

const NETWORKING_API_VERSIONS: &[&str] = &[
    "networking.istio.io/v1",
    "networking.istio.io/v1beta1",
    "networking.istio.io/v1alpha3",
];
const SECURITY_API_VERSIONS: &[&str] = &["security.istio.io/v1", "security.istio.io/v1beta1"];

impl Manifest {
    /// Reads a multi-document YAML text; `path` is only used in messages.
    pub fn parse(path: &Path, text: &str) -> Result<Manifest, PolicyError> {
        let mut manifest = Manifest::default();
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
            // Valid YAML, but not a resource (no kind, no metadata.name, ...).
            let document: Document =
                serde_norway::from_value(value).map_err(|error| PolicyError::File {
                    path: path.to_owned(),
                    message: format!("document {}: {error}", index + 1),
                })?;
            let resource = Resource::from_document(path, document)?;
            if manifest.resources.iter().any(|r| r.id == resource.id) {
                return Err(resource_error(
                    path,
                    &resource.id,
                    format!(
                        "appears twice (namespace {}); the second would replace the first",
                        resource.id.namespace
                    ),
                ));
            }
            manifest.resources.push(resource);
        }
        Ok(manifest)
    }
}

impl Resource {
    fn from_document(path: &Path, document: Document) -> Result<Resource, PolicyError> {
        let Document {
            api_version,
            kind,
            metadata,
            spec,
        } = document;
        let mut id = ResourceId {
            kind,
            namespace: String::new(),
            name: metadata.name,
        };
        let versions = match id.kind.as_str() {
            "AuthorizationPolicy" => SECURITY_API_VERSIONS,
            _ => NETWORKING_API_VERSIONS,
        };
        if !versions.contains(&api_version.as_str()) {
            return Err(resource_error(
                path,
                &id,
                format!(
                    "apiVersion {api_version} is not supported (expected one of {})",
                    versions.join(", ")
                ),
            ));
        }
        id.namespace = metadata.namespace.ok_or_else(|| {
            resource_error(
                path,
                &id,
                "metadata.namespace is required (kubectl would take the context's namespace)",
            )
        })?;
        let spec = match id.kind.as_str() {
            "ServiceEntry" => Spec::ServiceEntry(typed(path, &id, spec)?),
            "Gateway" => Spec::Gateway(typed(path, &id, spec)?),
            "DestinationRule" => Spec::DestinationRule(Box::new(typed(path, &id, spec)?)),
            "VirtualService" => Spec::VirtualService(typed(path, &id, spec)?),
            "AuthorizationPolicy" => Spec::AuthorizationPolicy(typed(path, &id, spec)?),
            other => {
                return Err(resource_error(
                    path,
                    &id,
                    format!(
                        "kind {other} is not supported by local-mesh (ServiceEntry, Gateway, \
                         DestinationRule, VirtualService, AuthorizationPolicy are)"
                    ),
                ));
            }
        };
        Ok(Resource { id, spec })
    }
}

fn typed<T: DeserializeOwned>(path: &Path, id: &ResourceId, spec: Value) -> Result<T, PolicyError> {
    serde_norway::from_value(spec)
        .map_err(|error| resource_error(path, id, format!("spec: {error}")))
}

fn resource_error(path: &Path, id: &ResourceId, message: impl Into<String>) -> PolicyError {
    PolicyError::Resource {
        path: path.to_owned(),
        resource: id.to_string(),
        message: message.into(),
    }
}

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

// ---- ServiceEntry ----

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceEntrySpec {
    pub hosts: Vec<String>,
    #[serde(default)]
    pub ports: Vec<Port>,
    #[serde(default)]
    pub export_to: Option<Vec<String>>,
    #[serde(default)]
    pub location: Option<String>,
    #[serde(default)]
    pub resolution: Option<String>,
    #[serde(default)]
    pub addresses: Vec<String>,
    #[serde(default)]
    pub endpoints: Vec<Value>,
    #[serde(default)]
    pub subject_alt_names: Vec<String>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Port {
    pub number: u16,
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub target_port: Option<u16>,
}

// ---- Gateway ----

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct GatewaySpec {
    #[serde(default)]
    pub selector: BTreeMap<String, String>,
    #[serde(default)]
    pub servers: Vec<Server>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Server {
    pub port: Port,
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub tls: Option<ServerTls>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerTls {
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(flatten)]
    pub other: Other,
}

// ---- DestinationRule ----

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DestinationRuleSpec {
    pub host: String,
    #[serde(default)]
    pub traffic_policy: Option<TrafficPolicy>,
    #[serde(default)]
    pub subsets: Vec<Subset>,
    #[serde(default)]
    pub export_to: Option<Vec<String>>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subset {
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub traffic_policy: Option<TrafficPolicy>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrafficPolicy {
    #[serde(default)]
    pub tls: Option<ClientTls>,
    #[serde(default)]
    pub connection_pool: Option<ConnectionPool>,
    #[serde(default)]
    pub outlier_detection: Option<OutlierDetection>,
    #[serde(default)]
    pub port_level_settings: Vec<PortTrafficPolicy>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortTrafficPolicy {
    pub port: PortSelector,
    #[serde(default)]
    pub tls: Option<ClientTls>,
    #[serde(default)]
    pub connection_pool: Option<ConnectionPool>,
    #[serde(default)]
    pub outlier_detection: Option<OutlierDetection>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PortSelector {
    pub number: u16,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientTls {
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub sni: Option<String>,
    #[serde(default)]
    pub subject_alt_names: Option<Vec<String>>,
    #[serde(default)]
    pub insecure_skip_verify: Option<bool>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionPool {
    #[serde(default)]
    pub tcp: Option<TcpSettings>,
    #[serde(default)]
    pub http: Option<HttpSettings>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TcpSettings {
    #[serde(default)]
    pub max_connections: Option<i64>,
    #[serde(default)]
    pub connect_timeout: Option<Value>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpSettings {
    #[serde(default)]
    pub http1_max_pending_requests: Option<i64>,
    #[serde(default)]
    pub http2_max_requests: Option<i64>,
    #[serde(default)]
    pub max_requests_per_connection: Option<i64>,
    #[serde(default)]
    pub max_retries: Option<i64>,
    #[serde(default)]
    pub idle_timeout: Option<Value>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutlierDetection {
    #[serde(default, rename = "consecutive5xxErrors")]
    pub consecutive_5xx_errors: Option<u32>,
    #[serde(default)]
    pub consecutive_gateway_errors: Option<u32>,
    #[serde(default)]
    pub interval: Option<Value>,
    #[serde(default)]
    pub base_ejection_time: Option<Value>,
    #[serde(default)]
    pub max_ejection_percent: Option<i64>,
    #[serde(default)]
    pub min_health_percent: Option<i64>,
    #[serde(flatten)]
    pub other: Other,
}

// ---- VirtualService ----

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualServiceSpec {
    pub hosts: Vec<String>,
    #[serde(default)]
    pub gateways: Vec<String>,
    #[serde(default)]
    pub http: Vec<HttpRoute>,
    #[serde(default)]
    pub export_to: Option<Vec<String>>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRoute {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, rename = "match")]
    pub matches: Vec<HttpMatch>,
    #[serde(default)]
    pub route: Vec<RouteDestination>,
    #[serde(default)]
    pub fault: Option<Fault>,
    #[serde(default)]
    pub timeout: Option<Value>,
    #[serde(default)]
    pub retries: Option<RetryPolicy>,
    #[serde(default)]
    pub mirror: Option<DestinationRef>,
    #[serde(default)]
    pub mirror_percentage: Option<Percentage>,
    #[serde(default)]
    pub headers: Option<Headers>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpMatch {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub uri: Option<StringMatch>,
    #[serde(default)]
    pub headers: BTreeMap<String, StringMatch>,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub gateways: Vec<String>,
    #[serde(flatten)]
    pub other: Other,
}

/// Istio's StringMatch: exactly one of `exact`, `prefix`, `regex`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct StringMatch {
    #[serde(default)]
    pub exact: Option<String>,
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub regex: Option<String>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RouteDestination {
    pub destination: DestinationRef,
    #[serde(default)]
    pub weight: Option<u32>,
    #[serde(default)]
    pub headers: Option<Headers>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DestinationRef {
    pub host: String,
    #[serde(default)]
    pub subset: Option<String>,
    #[serde(default)]
    pub port: Option<PortSelector>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Headers {
    #[serde(default)]
    pub request: Option<HeaderOperations>,
    #[serde(default)]
    pub response: Option<HeaderOperations>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct HeaderOperations {
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    #[serde(default)]
    pub add: BTreeMap<String, String>,
    #[serde(default)]
    pub remove: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Fault {
    #[serde(default)]
    pub abort: Option<FaultAbort>,
    #[serde(default)]
    pub delay: Option<FaultDelay>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultAbort {
    #[serde(default)]
    pub http_status: Option<u16>,
    #[serde(default)]
    pub percentage: Option<Percentage>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultDelay {
    #[serde(default)]
    pub fixed_delay: Option<Value>,
    #[serde(default)]
    pub percentage: Option<Percentage>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Percentage {
    pub value: f64,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RetryPolicy {
    #[serde(default)]
    pub attempts: Option<i64>,
    #[serde(default)]
    pub per_try_timeout: Option<Value>,
    #[serde(default)]
    pub retry_on: Option<String>,
    #[serde(default)]
    pub retry_ignore_previous_hosts: Option<bool>,
    #[serde(default)]
    pub backoff: Option<Value>,
    #[serde(flatten)]
    pub other: Other,
}

// ---- AuthorizationPolicy ----

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthorizationPolicySpec {
    #[serde(default)]
    pub selector: Option<WorkloadSelector>,
    #[serde(default)]
    pub action: Option<String>,
    #[serde(default)]
    pub rules: Option<Vec<AuthzRule>>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadSelector {
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct AuthzRule {
    #[serde(default)]
    pub from: Vec<AuthzFrom>,
    #[serde(default)]
    pub to: Vec<AuthzTo>,
    #[serde(default)]
    pub when: Vec<Value>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AuthzFrom {
    pub source: AuthzSource,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthzSource {
    #[serde(default)]
    pub principals: Vec<String>,
    #[serde(default)]
    pub not_principals: Vec<String>,
    #[serde(default)]
    pub namespaces: Vec<String>,
    #[serde(default)]
    pub not_namespaces: Vec<String>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AuthzTo {
    pub operation: AuthzOperation,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthzOperation {
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub not_hosts: Vec<String>,
    #[serde(default)]
    pub methods: Vec<String>,
    #[serde(default)]
    pub not_methods: Vec<String>,
    #[serde(default)]
    pub paths: Vec<String>,
    #[serde(default)]
    pub not_paths: Vec<String>,
    #[serde(flatten)]
    pub other: Other,
}
