//! The service registry a proxy sees: the manifest's ServiceEntries (every field that changes
//! behaviour honoured or refused) and the Kubernetes Services of the demo, with `exportTo`.

use crate::policy::PolicyError;
use crate::policy::manifest::{ResourceId, ServiceEntrySpec, Spec};
use crate::policy::model::{CfHost, HelloVersion, Upstream};

use super::Translator;
use super::workloads::KUBERNETES_SERVICES;

/// `exportTo` as istiod reads it; absent: the whole mesh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Visibility {
    All,
    Namespaces(Vec<String>),
}

impl Visibility {
    pub fn of(export_to: Option<&[String]>) -> Visibility {
        match export_to {
            None | Some([]) => Visibility::All,
            Some(list) if list.iter().any(|e| e == "*") => Visibility::All,
            Some(list) => Visibility::Namespaces(list.to_vec()),
        }
    }

    /// Whether a resource in `own` namespace is visible to proxies in `namespace`.
    pub fn visible_in(&self, own: &str, namespace: &str) -> bool {
        match self {
            Visibility::All => true,
            Visibility::Namespaces(list) => list
                .iter()
                .any(|e| (e == "." && own == namespace) || e == namespace),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ServicePort {
    pub number: u16,
    /// Upper case: HTTP, HTTP2, HTTPS, TLS, TCP, GRPC.
    pub protocol: String,
}

/// One host of the registry.
#[derive(Debug, Clone)]
pub struct Service {
    pub host: String,
    pub namespace: String,
    pub ports: Vec<ServicePort>,
    pub export_to: Visibility,
    /// `ServiceEntry/<name>`, or `Service/<name>` for a Kubernetes Service.
    pub source: String,
    /// The ServiceEntry, for messages about it.
    pub entry: Option<ResourceId>,
    /// Where its endpoints are locally; `None`: none a proxy could reach.
    pub upstream: Option<Upstream>,
    /// A ServiceEntry's `resolution`, for messages.
    pub resolution: String,
    /// ServiceEntry `subjectAltNames`, or the SPIFFE ID of a Kubernetes Service's pods.
    pub subject_alt_names: Vec<String>,
    /// A Kubernetes Service's short name, for the domains istiod lists.
    pub short_name: Option<String>,
}

impl Service {
    pub fn is_service_entry(&self) -> bool {
        self.entry.is_some()
    }

    /// Ports carrying HTTP, which sidecars route by Host.
    pub fn http_ports(&self) -> impl Iterator<Item = &ServicePort> {
        self.ports
            .iter()
            .filter(|p| matches!(p.protocol.as_str(), "HTTP" | "HTTP2"))
    }

    pub fn port(&self, number: u16) -> Option<&ServicePort> {
        self.ports.iter().find(|p| p.number == number)
    }

    /// The Host values a sidecar's virtual host answers, as istiod lists them: names without
    /// port, the route configuration ignoring the port in Host (`httproute.go`).
    pub fn domains(&self, proxy_namespace: &str) -> Vec<String> {
        let mut names = vec![self.host.clone()];
        if let Some(short) = &self.short_name {
            if self.namespace == proxy_namespace {
                names.push(short.clone());
            }
            names.push(format!("{short}.{}", self.namespace));
            names.push(format!("{short}.{}.svc", self.namespace));
        }
        names
    }
}

/// The Kubernetes Services, then every ServiceEntry host.
pub fn registry(translator: &Translator<'_>) -> Result<Vec<Service>, PolicyError> {
    let mut services: Vec<Service> = KUBERNETES_SERVICES
        .iter()
        .map(|k| Service {
            host: k.host(),
            namespace: k.namespace.to_owned(),
            ports: k
                .ports
                .iter()
                .map(|(number, _, protocol)| ServicePort {
                    number: *number,
                    protocol: (*protocol).to_owned(),
                })
                .collect(),
            export_to: Visibility::All,
            source: format!("Service/{}", k.name),
            entry: None,
            upstream: Some(k.upstream),
            resolution: "Kubernetes endpoints".to_owned(),
            subject_alt_names: vec![
                crate::policy::model::Identity::new(k.namespace, k.service_account).spiffe_id(),
            ],
            short_name: Some(k.name.to_owned()),
        })
        .collect();
    for resource in &translator.manifest.resources {
        let Spec::ServiceEntry(entry) = &resource.spec else {
            continue;
        };
        for service in service_entry(translator, &resource.id, entry)? {
            let clash = services.iter().find(|s| {
                s.host == service.host
                    && (s.namespace == service.namespace
                        || s.export_to == Visibility::All
                        || service.export_to == Visibility::All)
            });
            if let Some(earlier) = clash {
                return Err(translator.error(
                    &resource.id,
                    format!(
                        "{} is also declared by {}; istiod would keep only one of them",
                        service.host, earlier.source
                    ),
                ));
            }
            services.push(service);
        }
    }
    Ok(services)
}

/// Checks one ServiceEntry's fields and yields a service per host.
fn service_entry(
    translator: &Translator<'_>,
    id: &ResourceId,
    entry: &ServiceEntrySpec,
) -> Result<Vec<Service>, PolicyError> {
    // workloadSelector, subjectAltNames' siblings we do not know: refused by name.
    crate::policy::reject_other(translator, id, "spec", &entry.other)?;
    let location = entry.location.as_deref().unwrap_or("MESH_EXTERNAL");
    if location != "MESH_EXTERNAL" {
        return Err(translator.error(
            id,
            format!("location {location} is not supported: its endpoints would be treated as mesh workloads (mTLS, inbound policy) that local-mesh does not run; use MESH_EXTERNAL"),
        ));
    }
    if !entry.endpoints.is_empty() {
        return Err(translator.error(
            id,
            "endpoints are not supported: local-mesh stands the Cloud Foundry router in for every external address and sends nothing off loopback",
        ));
    }
    let resolution = entry.resolution.as_deref().unwrap_or("NONE").to_owned();
    let mut ports = Vec::new();
    for (index, port) in entry.ports.iter().enumerate() {
        if let Some(target) = port.target_port.filter(|t| *t != port.number) {
            return Err(translator.error(
                id,
                format!("ports[{index}].targetPort {target} is not supported: locally every external host is the router, which listens on the port called ({})", port.number),
            ));
        }
        let protocol = port
            .protocol
            .as_deref()
            .unwrap_or("TCP")
            .to_ascii_uppercase();
        if !entry.addresses.is_empty() && !matches!(protocol.as_str(), "HTTP" | "HTTP2") {
            return Err(translator.error(
                id,
                format!("addresses with a {protocol} port are not supported: local-mesh's sidecars route by Host (HTTP), never by destination address"),
            ));
        }
        ports.push(super::service::ServicePort {
            number: port.number,
            protocol,
        });
    }
    let carries_tls = ports
        .iter()
        .any(|p| matches!(p.protocol.as_str(), "HTTPS" | "TLS"));
    let upstream = match resolution.as_str() {
        // What DNS returns for a Cloud Foundry route: the router, locally.
        "DNS" | "DNS_ROUND_ROBIN" if carries_tls => Some(Upstream::CfRouter),
        "DNS" | "DNS_ROUND_ROBIN" => None,
        // No endpoints: Envoy answers 503 (no healthy upstream), here as on a cluster.
        "STATIC" => None,
        "NONE" => None,
        other => {
            return Err(translator.error(
                id,
                format!(
                    "resolution {other} is not supported (NONE, STATIC, DNS, DNS_ROUND_ROBIN are)"
                ),
            ));
        }
    };
    Ok(entry
        .hosts
        .iter()
        .map(|host| Service {
            host: host.clone(),
            namespace: id.namespace.clone(),
            ports: ports.clone(),
            export_to: Visibility::of(entry.export_to.as_deref()),
            source: id.to_string(),
            entry: Some(id.clone()),
            upstream,
            resolution: resolution.clone(),
            subject_alt_names: entry.subject_alt_names.clone(),
            short_name: None,
        })
        .collect())
}

/// The hosts of ServiceEntries with an HTTPS or TLS port: the Cloud Foundry routes, each served
/// by the hello version its first label names.
pub fn cf_hosts(translator: &Translator<'_>) -> Result<Vec<CfHost>, PolicyError> {
    let mut cf_hosts: Vec<CfHost> = Vec::new();
    for service in translator.services.iter().filter(|s| s.is_service_entry()) {
        let entry = service.entry.as_ref().expect("a ServiceEntry's service");
        let tls_ports: Vec<u16> = service
            .ports
            .iter()
            .filter(|p| matches!(p.protocol.as_str(), "HTTPS" | "TLS"))
            .map(|p| p.number)
            .collect();
        let port = match tls_ports.as_slice() {
            [] => continue,
            [port] => *port,
            _ => {
                return Err(translator.error(
                    entry,
                    "several HTTPS ports for the Cloud Foundry routes are not supported",
                ));
            }
        };
        let host = &service.host;
        let version = hello_version_of(host).ok_or_else(|| {
            translator.error(
                entry,
                format!("cannot tell which hello version serves {host}: its first label needs a `v1` or `v2` part"),
            )
        })?;
        if let Some(other) = cf_hosts.iter().find(|cf| cf.version == version) {
            return Err(translator.file_error(format!(
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
    if cf_hosts.is_empty() {
        return Err(translator
            .file_error("no ServiceEntry declares the Cloud Foundry routes (an HTTPS port)"));
    }
    cf_hosts.sort_by_key(|cf| cf.version);
    Ok(cf_hosts)
}

/// `hello-istio-v1.apps.cf.example` → v1: the version is a dash-separated part of the first label.
pub fn hello_version_of(host: &str) -> Option<HelloVersion> {
    let first_label = host.split('.').next()?;
    let mut versions = first_label.split('-').filter_map(|part| match part {
        "v1" => Some(HelloVersion::V1),
        "v2" => Some(HelloVersion::V2),
        _ => None,
    });
    let version = versions.next()?;
    versions.next().is_none().then_some(version)
}
