//! From the manifest's resources to the model, as istiod does it for the demo's proxies: what
//! each sidecar sees (exportTo), which DestinationRule applies (the proxy's namespace, then the
//! service's, then the root namespace; the most specific host), the routes of the
//! VirtualServices, the egress gateway's server, and the AuthorizationPolicies. A construct the
//! local Envoys cannot reproduce is refused with one line naming the resource and the field.

mod authz;
mod cluster;
mod route;
mod service;
mod workloads;

use std::path::Path;

use super::PolicyError;
use super::manifest::{self, GatewaySpec, Manifest, ResourceId, Spec, VirtualServiceSpec};
use super::model::{
    Cluster, Gateway, GatewayServer, Policy, Route, RouteConfig, ServerProtocol, Sidecar,
    UpstreamTls, VirtualHost,
};

pub use service::hello_version_of;
pub use workloads::{CALLER, EGRESS_GATEWAY, KUBERNETES_SERVICES, PROXY, ROOT_NAMESPACE, Workload};

use service::{Service, Visibility};

/// Translates a whole manifest.
pub fn policy(path: &Path, manifest: &Manifest) -> Result<Policy, PolicyError> {
    let translator = Translator::new(path, manifest)?;
    translator.policy()
}

/// The resources indexed for the translation, and the file for messages.
pub(crate) struct Translator<'m> {
    path: &'m Path,
    manifest: &'m Manifest,
    services: Vec<Service>,
}

impl<'m> Translator<'m> {
    fn new(path: &'m Path, manifest: &'m Manifest) -> Result<Self, PolicyError> {
        let mut translator = Translator {
            path,
            manifest,
            services: Vec::new(),
        };
        translator.services = service::registry(&translator)?;
        for resource in &manifest.resources {
            if let Spec::VirtualService(vs) = &resource.spec {
                route::check_virtual_service(&translator, &resource.id, vs)?;
            }
        }
        Ok(translator)
    }

    pub(crate) fn error(&self, resource: &ResourceId, message: impl Into<String>) -> PolicyError {
        PolicyError::Resource {
            path: self.path.to_owned(),
            resource: resource.to_string(),
            message: message.into(),
        }
    }

    /// An Istio duration (`10s`, `1.5s`, `100ms`) of `field`, or the error naming it.
    pub(crate) fn duration(
        &self,
        id: &ResourceId,
        field: &str,
        value: &serde_norway::Value,
    ) -> Result<std::time::Duration, PolicyError> {
        super::istio_duration(value)
            .map_err(|message| self.error(id, format!("{field}: {message}")))
    }

    pub(crate) fn file_error(&self, message: impl Into<String>) -> PolicyError {
        PolicyError::File {
            path: self.path.to_owned(),
            message: message.into(),
        }
    }

    fn virtual_services(&self) -> impl Iterator<Item = (&'m ResourceId, &'m VirtualServiceSpec)> {
        self.manifest
            .resources
            .iter()
            .filter_map(|r| match &r.spec {
                Spec::VirtualService(vs) => Some((&r.id, vs)),
                _ => None,
            })
    }

    fn gateways(&self) -> impl Iterator<Item = (&'m ResourceId, &'m GatewaySpec)> {
        self.manifest
            .resources
            .iter()
            .filter_map(|r| match &r.spec {
                Spec::Gateway(gateway) => Some((&r.id, gateway)),
                _ => None,
            })
    }

    /// The service a proxy in `namespace` knows by `host`, if it sees one.
    pub(crate) fn visible_service(&self, namespace: &str, host: &str) -> Option<&Service> {
        self.services
            .iter()
            .find(|s| s.host == host && s.export_to.visible_in(&s.namespace, namespace))
    }

    fn policy(&self) -> Result<Policy, PolicyError> {
        let proxy_ns = &PROXY.namespace;
        let stable = self.stable_service(proxy_ns)?;
        let stable_host = stable.host.clone();
        let stable_port = stable
            .http_ports()
            .next()
            .expect("a stable service has an HTTP port")
            .number;
        let cf_hosts = service::cf_hosts(self)?;
        let proxy_sidecar = self.sidecar(&PROXY)?;
        let caller_sidecar = self.sidecar(&CALLER)?;
        let gateway = self.gateway(&stable_host)?;
        let policy = Policy {
            stable_host,
            stable_port,
            cf_hosts,
            proxy_sidecar,
            caller_sidecar,
            gateway,
        };
        self.check_hop_to_gateway(&policy)?;
        Ok(policy)
    }

    /// The one ServiceEntry host with an HTTP port the proxy's sidecar sees: the name it calls.
    fn stable_service(&self, namespace: &str) -> Result<&Service, PolicyError> {
        let candidates: Vec<&Service> = self
            .services
            .iter()
            .filter(|s| s.is_service_entry() && s.http_ports().next().is_some())
            .filter(|s| s.export_to.visible_in(&s.namespace, namespace))
            .collect();
        match candidates.as_slice() {
            [one] => Ok(one),
            [] => Err(self.file_error(format!(
                "no ServiceEntry visible in {namespace} declares an HTTP port: the proxy's stable name (e.g. hello.external) must be declared, or REGISTRY_ONLY blocks it"
            ))),
            several => Err(self.file_error(format!(
                "several ServiceEntry hosts with an HTTP port are visible in {namespace} ({}); local-mesh's proxy calls one stable name",
                several.iter().map(|s| s.host.as_str()).collect::<Vec<_>>().join(", ")
            ))),
        }
    }

    /// What istiod pushes to the sidecar of `workload`: a virtual host per visible service's HTTP
    /// port (its VirtualService's routes, or istiod's default route), and the clusters used.
    fn sidecar(&self, workload: &Workload) -> Result<Sidecar, PolicyError> {
        let namespace = &workload.namespace;
        let mut virtual_hosts = Vec::new();
        let mut ports = Vec::new();
        for service in self
            .services
            .iter()
            .filter(|s| s.export_to.visible_in(&s.namespace, namespace))
        {
            for port in service.http_ports() {
                ports.push(port.number);
                let routes = match self.mesh_virtual_service(namespace, &service.host)? {
                    Some((id, vs)) => {
                        route::routes(self, id, vs, port.number, &["mesh".to_owned()], namespace)?
                    }
                    None => vec![route::default_route(service, port.number)],
                };
                if routes.is_empty() {
                    continue;
                }
                virtual_hosts.push(VirtualHost {
                    name: format!("{}:{}", service.host, port.number),
                    domains: service.domains(namespace),
                    routes,
                });
            }
        }
        ports.sort_unstable();
        ports.dedup();
        let route_config_name = match ports.as_slice() {
            [port] => port.to_string(),
            _ => {
                return Err(self.file_error(format!(
                    "the services visible in {namespace} use HTTP ports {ports:?}; local-mesh's sidecars carry one HTTP port"
                )));
            }
        };
        let clusters = self.clusters_of(&virtual_hosts, namespace)?;
        Ok(Sidecar {
            workload: workload.name.to_owned(),
            identity: workload.identity(),
            route_config: RouteConfig {
                name: route_config_name,
                virtual_hosts,
            },
            clusters,
        })
    }

    /// The mesh-bound VirtualService for `host` that a sidecar in `namespace` sees.
    fn mesh_virtual_service(
        &self,
        namespace: &str,
        host: &str,
    ) -> Result<Option<(&'m ResourceId, &'m VirtualServiceSpec)>, PolicyError> {
        let found: Vec<_> = self
            .virtual_services()
            .filter(|(id, vs)| {
                route::binds_mesh(vs)
                    && Visibility::of(vs.export_to.as_deref()).visible_in(&id.namespace, namespace)
                    && vs.hosts.iter().any(|h| h == host)
            })
            .collect();
        match found.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(*one)),
            [first, second, ..] => Err(self.error(
                second.0,
                format!(
                    "{host} is already routed by {}; istiod would merge the two, local-mesh takes one VirtualService per host",
                    first.0
                ),
            )),
        }
    }

    /// Every cluster the routes use (destinations and mirrors), once each.
    fn clusters_of(
        &self,
        virtual_hosts: &[VirtualHost],
        namespace: &str,
    ) -> Result<Vec<Cluster>, PolicyError> {
        let mut clusters: Vec<Cluster> = Vec::new();
        let references = virtual_hosts
            .iter()
            .flat_map(|vh| &vh.routes)
            .flat_map(|route| {
                route
                    .destinations
                    .iter()
                    .map(|d| (d.host.as_str(), d.port, d.subset.as_deref(), &route.source))
                    .chain(route.mirrors.iter().map(move |m| {
                        let (port, subset) = cluster::port_and_subset(&m.cluster);
                        (m.host.as_str(), port, subset, &route.source)
                    }))
            });
        for (host, port, subset, source) in references {
            let name = cluster::outbound_name(port, subset, host);
            if clusters.iter().any(|c| c.name == name) {
                continue;
            }
            clusters.push(cluster::cluster(
                self, namespace, host, port, subset, source,
            )?);
        }
        Ok(clusters)
    }

    /// The egress gateway: a listener per server of the Gateways selecting it, their routes,
    /// the clusters they use and the authorization.
    fn gateway(&self, stable_host: &str) -> Result<Gateway, PolicyError> {
        let namespace = &EGRESS_GATEWAY.namespace;
        let mut servers: Vec<GatewayServer> = Vec::new();
        for (id, gateway) in self
            .gateways()
            .filter(|(_, g)| workloads::selects(&g.selector, &EGRESS_GATEWAY))
        {
            super::reject_other(self, id, "spec", &gateway.other)?;
            for (index, server) in gateway.servers.iter().enumerate() {
                let server = self.gateway_server(id, index, server, namespace)?;
                if let Some(earlier) = servers.iter().find(|s| s.port == server.port) {
                    return Err(self.error(
                        id,
                        format!(
                            "servers[{index}]: port {} is already served by {}; local-mesh runs one server per gateway port",
                            server.port, earlier.source
                        ),
                    ));
                }
                servers.push(server);
            }
        }
        if servers.is_empty() {
            return Err(self.file_error(
                "no Gateway selects the egress gateway (selector istio: egressgateway)",
            ));
        }
        if !servers
            .iter()
            .any(|s| s.hosts.iter().any(|h| h == stable_host || h == "*"))
        {
            return Err(self.error(
                &self
                    .gateways()
                    .find(|(_, g)| workloads::selects(&g.selector, &EGRESS_GATEWAY))
                    .expect("a server comes from a Gateway")
                    .0
                    .clone(),
                format!("no server's hosts include {stable_host}, the name the proxy calls"),
            ));
        }
        let virtual_hosts: Vec<VirtualHost> = servers
            .iter()
            .flat_map(|s| s.route_config.virtual_hosts.iter().cloned())
            .collect();
        let clusters = self.clusters_of(&virtual_hosts, namespace)?;
        let authorization = authz::authorization(self, &self.manifest.resources)?;
        Ok(Gateway {
            identity: EGRESS_GATEWAY.identity(),
            servers,
            clusters,
            authorization,
        })
    }

    fn gateway_server(
        &self,
        id: &ResourceId,
        index: usize,
        server: &manifest::Server,
        namespace: &str,
    ) -> Result<GatewayServer, PolicyError> {
        let field = format!("servers[{index}]");
        super::reject_other(self, id, &field, &server.other)?;
        let hosts: Vec<String> = server
            .hosts
            .iter()
            .map(|h| {
                h.rsplit_once('/')
                    .map_or(h.as_str(), |(_, host)| host)
                    .to_owned()
            })
            .collect();
        let protocol = server
            .port
            .protocol
            .as_deref()
            .unwrap_or("")
            .to_ascii_uppercase();
        let tls_mode = server.tls.as_ref().map(|tls| {
            (
                tls.mode.as_deref().unwrap_or("PASSTHROUGH").to_owned(),
                &tls.other,
            )
        });
        let protocol = match (protocol.as_str(), tls_mode) {
            ("HTTP", None) => ServerProtocol::Http,
            ("HTTPS", Some((mode, other))) if mode == "ISTIO_MUTUAL" => {
                super::reject_other(self, id, &format!("{field}.tls"), other)?;
                ServerProtocol::HttpsIstioMutual
            }
            ("HTTPS", Some((mode, _))) => {
                return Err(self.error(
                    id,
                    format!("{field}.tls.mode {mode} is not supported (ISTIO_MUTUAL is: the mesh's mTLS from the sidecars)"),
                ));
            }
            (protocol, _) => {
                return Err(self.error(
                    id,
                    format!("{field}: protocol {protocol} is not supported (HTTP without tls, or HTTPS with tls.mode ISTIO_MUTUAL)"),
                ));
            }
        };
        let port = server.port.number;
        let gateway_names = [format!("{}/{}", id.namespace, id.name)];
        let mut virtual_hosts = Vec::new();
        for host in &hosts {
            let bound: Vec<_> = self
                .virtual_services()
                .filter(|(vs_id, vs)| {
                    route::binds_gateway(vs, vs_id, id)
                        && Visibility::of(vs.export_to.as_deref())
                            .visible_in(&vs_id.namespace, namespace)
                        && vs.hosts.iter().any(|h| h == host || h == "*")
                })
                .collect();
            let (vs_id, vs) = match bound.as_slice() {
                [one] => *one,
                [] => {
                    return Err(self.error(
                        id,
                        format!("no VirtualService bound to this Gateway (and visible in {namespace}) routes {host}"),
                    ));
                }
                [_, (second, _), ..] => {
                    return Err(self.error(
                        second,
                        format!("{host} is already routed on Gateway/{}; local-mesh takes one VirtualService per host", id.name),
                    ));
                }
            };
            let routes = route::routes(self, vs_id, vs, port, &gateway_names, namespace)?;
            if routes.is_empty() {
                continue; // every route matches another port
            }
            virtual_hosts.push(VirtualHost {
                name: format!("{host}:{port}"),
                domains: vec![host.clone()],
                routes,
            });
        }
        let route_config_name = match protocol {
            ServerProtocol::Http => format!("http.{port}"),
            ServerProtocol::HttpsIstioMutual => format!(
                "https.{port}.{}.{}.{}",
                server.port.name.as_deref().unwrap_or("https"),
                id.name,
                id.namespace
            ),
        };
        Ok(GatewayServer {
            source: id.to_string(),
            port,
            protocol,
            hosts,
            route_config: RouteConfig {
                name: route_config_name,
                virtual_hosts,
            },
        })
    }

    /// The sidecars' clusters towards the egress gateway must speak what its server expects, or
    /// every call fails on a cluster too; say why instead of starting a demo that cannot work.
    fn check_hop_to_gateway(&self, policy: &Policy) -> Result<(), PolicyError> {
        for sidecar in [&policy.proxy_sidecar, &policy.caller_sidecar] {
            for cluster in sidecar
                .clusters
                .iter()
                .filter(|c| c.upstream == super::model::Upstream::EgressGateway)
                .filter(|c| route_uses(sidecar, &c.name))
            {
                let source = cluster
                    .destination_rule
                    .clone()
                    .unwrap_or_else(|| format!("the route to {}", cluster.host));
                let refuse = |message: String| {
                    self.file_error(format!("{source}: {message} (cluster {})", cluster.name))
                };
                let Some(server) = policy
                    .gateway
                    .servers
                    .iter()
                    .find(|s| s.port == cluster.port)
                else {
                    return Err(refuse(format!(
                        "routes to the egress gateway on port {}, but its servers listen on {}",
                        cluster.port,
                        policy
                            .gateway
                            .servers
                            .iter()
                            .map(|s| s.port.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                };
                match (&cluster.tls, server.protocol) {
                    (UpstreamTls::IstioMutual { sni, .. }, ServerProtocol::HttpsIstioMutual) => {
                        if !server.hosts.iter().any(|h| h == sni || h == "*") {
                            return Err(refuse(format!(
                                "ISTIO_MUTUAL with SNI {sni}, which no host of {}'s server on port {} ({}) matches: the gateway has no filter chain for it and resets the connection; set sni to the server's host",
                                server.source,
                                server.port,
                                server.hosts.join(", ")
                            )));
                        }
                    }
                    (UpstreamTls::IstioMutual { .. }, ServerProtocol::Http) => {
                        return Err(refuse(format!(
                            "ISTIO_MUTUAL towards {}'s plain-HTTP server on port {}: the gateway would read the TLS handshake as HTTP and every call fails; make the server HTTPS with tls.mode ISTIO_MUTUAL, or drop the subset's TLS",
                            server.source, server.port
                        )));
                    }
                    (UpstreamTls::Plain, ServerProtocol::HttpsIstioMutual) => {
                        return Err(refuse(format!(
                            "plain text towards {}'s ISTIO_MUTUAL server on port {}: automatic mTLS does not apply to the egress gateway (no security.istio.io/tlsMode label), so set tls.mode ISTIO_MUTUAL with sni in the subset",
                            server.source, server.port
                        )));
                    }
                    (UpstreamTls::Plain, ServerProtocol::Http) => {}
                    (UpstreamTls::Simple { .. }, _) => {
                        return Err(refuse(
                            "tls.mode SIMPLE towards the egress gateway is not supported (ISTIO_MUTUAL, DISABLE are)".to_owned(),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Whether a VirtualService route of the sidecar sends (or mirrors) to `cluster`; istiod's
/// default routes (no VirtualService) are not the demo's path to the gateway.
fn route_uses(sidecar: &Sidecar, cluster: &str) -> bool {
    sidecar
        .route_config
        .virtual_hosts
        .iter()
        .flat_map(|vh| &vh.routes)
        .filter(|route: &&Route| route.source.starts_with("VirtualService/"))
        .any(|route| {
            route.destinations.iter().any(|d| d.cluster == cluster)
                || route.mirrors.iter().any(|m| m.cluster == cluster)
        })
}
