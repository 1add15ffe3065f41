//! Envoy bootstrap configurations (JSON) for the Envoys: the Cloud Foundry router, the egress
//! gateway and each sidecar, built from the policy model and the addresses of the components
//! already running. Names and shapes follow what istiod generates (`outbound|443||host`
//! clusters, route configurations named per listener, per-destination `host_rewrite_literal`,
//! the fault filter with a per-route config, the RBAC filter, REGISTRY_ONLY's 502), so the
//! Envoy admin pages read like a cluster's. Where istiod uses SDS for the mesh certificates,
//! the files written by certs.rs are referenced directly.
//!
//! Each Envoy's listeners and clusters come from their own functions; [`bootstrap`] assembles
//! them. Every listener binds 127.0.0.1 port 0; the chosen port is read back from the admin API.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::policy::{
    Authorization, AuthzOperation, AuthzPolicy, AuthzSource, Cluster, Destination, Fault, Gateway,
    GatewayServer, HeaderOperations, PathMatch, Retries, Route, RouteConfig, ServerProtocol,
    Sidecar, StringMatch, Upstream, UpstreamTls, VirtualHost,
};

/// The Cloud Foundry router stand-in: TLS with SNI, routing by Host to the hello servers.
#[derive(Debug, Clone)]
pub struct RouterSpec {
    pub routes: Vec<RouterRoute>,
    pub access_log: PathBuf,
}

/// One Cloud Foundry route: its hostname, certificate and the app instance behind it.
#[derive(Debug, Clone)]
pub struct RouterRoute {
    pub host: String,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub app: SocketAddr,
}

/// Where each kind of upstream listens locally; `None` (or no entry): not running (yet), so the
/// cluster has no endpoint and Envoy answers 503 for it.
#[derive(Debug, Clone, Default)]
pub struct Upstreams {
    /// The egress gateway's listener for each of its servers' ports.
    pub egress_gateway: BTreeMap<u16, SocketAddr>,
    /// Where every Cloud Foundry hostname resolves locally (instead of DNS).
    pub cf_router: Option<SocketAddr>,
    pub proxy: Option<SocketAddr>,
}

impl Upstreams {
    fn address(&self, upstream: Upstream, port: u16) -> Option<SocketAddr> {
        match upstream {
            Upstream::EgressGateway => self.egress_gateway.get(&port).copied(),
            Upstream::CfRouter => self.cf_router,
            Upstream::Proxy => self.proxy,
        }
    }
}

/// A proxy's mesh certificate and the mesh's root (istiod's SDS `default` and `ROOTCA`).
#[derive(Debug, Clone)]
pub struct MeshCertificate {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

/// The egress gateway: its mTLS server, authorization, routes and TLS origination.
#[derive(Debug, Clone)]
pub struct GatewaySpec<'a> {
    pub gateway: &'a Gateway,
    pub upstreams: Upstreams,
    pub mesh_certificate: MeshCertificate,
    /// The CA the gateway trusts for the Cloud Foundry routes (the DestinationRules'
    /// `caCertificates`/`credentialName`, or the system roots, on a cluster).
    pub origination_ca: PathBuf,
    pub access_log: PathBuf,
}

/// A workload's sidecar: its outbound routes and clusters.
#[derive(Debug, Clone)]
pub struct SidecarSpec<'a> {
    /// The Envoy's node id (`sidecar`, `caller-sidecar`).
    pub name: &'a str,
    pub sidecar: &'a Sidecar,
    pub upstreams: Upstreams,
    pub mesh_certificate: MeshCertificate,
    pub access_log: PathBuf,
}

/// The body the Cloud Foundry router answers for a Host it has no route for.
pub const UNKNOWN_ROUTE_BODY: &str =
    "404 Not Found: Requested route ('%REQ(:AUTHORITY)%') does not exist.\n";

/// The body it answers when the route exists but no app instance is up (`cf stop`).
pub const NO_ENDPOINTS_BODY: &str =
    "503 Service Unavailable: Requested route ('%REQ(:AUTHORITY)%') has no available endpoints.\n";

pub fn cf_router(spec: &RouterSpec) -> Value {
    let route_config = json!({
        "name": "cf_routes",
        "virtual_hosts": spec.routes.iter().map(router_virtual_host)
            .chain(std::iter::once(unknown_route_virtual_host()))
            .collect::<Vec<_>>(),
    });
    let connection_manager = |stat_prefix: &str| {
        http_connection_manager(HttpConnectionManager {
            stat_prefix,
            route_config: route_config.clone(),
            http_filters: vec![router_filter()],
            access_log: &spec.access_log,
            // The router appends X-Forwarded-For and sets X-Forwarded-Proto, as gorouter does.
            use_remote_address: true,
            // gorouter ignores the port in Host.
            strip_any_host_port: true,
            local_reply_config: Some(no_endpoints_reply()),
        })
    };
    let mut filter_chains: Vec<Value> = spec
        .routes
        .iter()
        .map(|route| {
            json!({
                "filter_chain_match": {"server_names": [route.host]},
                "transport_socket": downstream_tls(&route.cert, &route.key),
                "filters": [connection_manager("cf_router")],
            })
        })
        .collect();
    // Without a matching SNI gorouter still answers with its default certificate.
    if let Some(first) = spec.routes.first() {
        filter_chains.push(json!({
            "transport_socket": downstream_tls(&first.cert, &first.key),
            "filters": [connection_manager("cf_router")],
        }));
    }
    let listener = json!({
        "name": "cf_router_https",
        "address": loopback(0),
        "listener_filters": [{
            "name": "envoy.filters.listener.tls_inspector",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"},
        }],
        "filter_chains": filter_chains,
    });
    let clusters: Vec<Value> = spec
        .routes
        .iter()
        .map(|route| static_cluster(&app_cluster_name(&route.host), Some(route.app), "1s"))
        .collect();
    bootstrap("cf-router", vec![listener], clusters)
}

/// The cluster of the app instances behind one Cloud Foundry route.
pub fn app_cluster_name(host: &str) -> String {
    format!("app|{host}")
}

fn router_virtual_host(route: &RouterRoute) -> Value {
    json!({
        "name": route.host,
        "domains": [route.host],
        "routes": [{
            "match": {"prefix": "/"},
            "route": {"cluster": app_cluster_name(&route.host), "timeout": "15s"},
            "request_headers_to_add": [header_value("x-vcap-request-id", "%REQ(X-REQUEST-ID)%", "OVERWRITE_IF_EXISTS_OR_ADD")],
        }],
    })
}

fn unknown_route_virtual_host() -> Value {
    json!({
        "name": "unknown_route",
        "domains": ["*"],
        "routes": [{
            "match": {"prefix": "/"},
            "direct_response": {
                "status": 404,
                "body_format": {"text_format_source": {"inline_string": UNKNOWN_ROUTE_BODY}},
            },
            "response_headers_to_add": [header_value("x-cf-routererror", "unknown_route", "OVERWRITE_IF_EXISTS_OR_ADD")],
        }],
    })
}

/// A stopped app: Envoy's own 503 (no healthy host, or connection refused) reworded as gorouter's.
fn no_endpoints_reply() -> Value {
    json!({
        "mappers": [{
            "filter": {"and_filter": {"filters": [
                {"status_code_filter": {"comparison": {"op": "EQ", "value": {"default_value": 503, "runtime_key": "cf_router.no_endpoints"}}}},
                {"response_flag_filter": {"flags": ["UH", "UF"]}},
            ]}},
            "body_format_override": {"text_format_source": {"inline_string": NO_ENDPOINTS_BODY}},
            "headers_to_add": [header_value("x-cf-routererror", "no_endpoints", "OVERWRITE_IF_EXISTS_OR_ADD")],
        }],
    })
}

pub fn egress_gateway(spec: &GatewaySpec<'_>) -> Value {
    bootstrap(
        "egress-gateway",
        gateway_listeners(spec),
        gateway_clusters(spec),
    )
}

/// The gateway's listeners, one per server (named `0.0.0.0_<port>`): mTLS requiring a mesh
/// client certificate (SNI chosen by the server's hosts) for `HTTPS`/`ISTIO_MUTUAL`, plain HTTP
/// otherwise; RBAC before the fault filter, as istiod orders them.
pub fn gateway_listeners(spec: &GatewaySpec<'_>) -> Vec<Value> {
    spec.gateway
        .servers
        .iter()
        .map(|server| gateway_listener(spec, server))
        .collect()
}

fn gateway_listener(spec: &GatewaySpec<'_>, server: &GatewayServer) -> Value {
    let port = server.port;
    let mut http_filters = rbac_filters(&spec.gateway.authorization);
    http_filters.push(fault_filter());
    http_filters.push(router_filter());
    let manager = http_connection_manager(HttpConnectionManager {
        stat_prefix: &format!("outbound_0.0.0.0_{port}"),
        route_config: route_config(&server.route_config, None),
        http_filters,
        access_log: &spec.access_log,
        use_remote_address: true,
        strip_any_host_port: false,
        local_reply_config: None,
    });
    let mut chain = json!({"filters": [manager]});
    let mut listener = json!({
        "name": format!("0.0.0.0_{port}"),
        "address": socket_address(SocketAddr::new(gateway_listener_ip(port), 0)),
    });
    if server.protocol == ServerProtocol::HttpsIstioMutual {
        let names: Vec<&String> = server.hosts.iter().filter(|h| *h != "*").collect();
        if !names.is_empty() {
            chain["filter_chain_match"] = json!({"server_names": names});
        }
        chain["transport_socket"] = json!({
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                "require_client_certificate": true,
                "common_tls_context": {
                    "alpn_protocols": ["h2", "http/1.1"],
                    "tls_certificates": [tls_certificate(&spec.mesh_certificate)],
                    // Any mesh identity may connect; the RBAC filter decides what it may do.
                    "validation_context": {"trusted_ca": {"filename": spec.mesh_certificate.ca}},
                },
            },
        });
        listener["listener_filters"] = json!([tls_inspector()]);
    }
    listener["filter_chains"] = json!([chain]);
    listener
}

pub fn gateway_clusters(spec: &GatewaySpec<'_>) -> Vec<Value> {
    spec.gateway
        .clusters
        .iter()
        .map(|c| {
            cluster(
                c,
                &spec.upstreams,
                &spec.mesh_certificate,
                &spec.origination_ca,
            )
        })
        .collect()
}

/// The gateway servers' route configurations (RDS-ready: named as istiod names them).
pub fn gateway_route_configs(gateway: &Gateway) -> Vec<Value> {
    gateway
        .servers
        .iter()
        .map(|server| route_config(&server.route_config, None))
        .collect()
}

pub fn sidecar(spec: &SidecarSpec<'_>) -> Value {
    bootstrap(spec.name, sidecar_listeners(spec), sidecar_clusters(spec))
}

/// The sidecar's outbound HTTP listener (one port: the proxy reaches it as its `http_proxy`).
pub fn sidecar_listeners(spec: &SidecarSpec<'_>) -> Vec<Value> {
    let name = &spec.sidecar.route_config.name;
    vec![json!({
        "name": format!("0.0.0.0_{name}"),
        "address": loopback(0),
        "filter_chains": [{"filters": [http_connection_manager(HttpConnectionManager {
            stat_prefix: &format!("outbound_0.0.0.0_{name}"),
            route_config: sidecar_route_config(spec.sidecar),
            http_filters: vec![fault_filter(), router_filter()],
            access_log: &spec.access_log,
            use_remote_address: false,
            strip_any_host_port: false,
            local_reply_config: None,
        })]}],
    })]
}

pub fn sidecar_clusters(spec: &SidecarSpec<'_>) -> Vec<Value> {
    spec.sidecar
        .clusters
        .iter()
        .map(|c| {
            cluster(
                c,
                &spec.upstreams,
                &spec.mesh_certificate,
                &spec.mesh_certificate.ca,
            )
        })
        .collect()
}

/// The sidecar's route configuration, with REGISTRY_ONLY's `block_all` virtual host last.
pub fn sidecar_route_config(sidecar: &Sidecar) -> Value {
    // REGISTRY_ONLY: istiod's "block_all" virtual host answers 502 for every undeclared host.
    let block_all = json!({
        "name": "block_all",
        "domains": ["*"],
        "routes": [{"match": {"prefix": "/"}, "name": "block_all", "direct_response": {"status": 502}}],
        "include_request_attempt_count": true,
    });
    route_config(&sidecar.route_config, Some(block_all))
}

fn route_config(config: &RouteConfig, last: Option<Value>) -> Value {
    let mut virtual_hosts: Vec<Value> = config.virtual_hosts.iter().map(virtual_host).collect();
    virtual_hosts.extend(last);
    // istiod lists domains without port and has Envoy ignore the port in Host.
    json!({
        "name": config.name,
        "virtual_hosts": virtual_hosts,
        "validate_clusters": false,
        "ignore_port_in_host_matching": true,
    })
}

/// istiod sets `include_request_attempt_count` on every virtual host (`x-envoy-attempt-count`).
fn virtual_host(host: &VirtualHost) -> Value {
    json!({
        "name": host.name,
        "domains": host.domains,
        "routes": host.routes.iter().map(route).collect::<Vec<_>>(),
        "include_request_attempt_count": true,
    })
}

/// One Envoy route as istiod's `TranslateRoute` writes it.
pub fn route(route: &Route) -> Value {
    let mut action = json!({});
    if route.weighted {
        action["weighted_clusters"] = json!({
            "clusters": route.destinations.iter().map(weighted_cluster).collect::<Vec<_>>(),
        });
    } else if let Some(destination) = route.destinations.first() {
        action["cluster"] = json!(destination.cluster);
    }
    // A route-level Host rewrite wins; else a single destination's.
    let single = (!route.weighted)
        .then(|| route.destinations.first())
        .flatten();
    let host_rewrite = route
        .host_rewrite
        .clone()
        .or_else(|| single.and_then(|d| d.headers.host_rewrite.clone()));
    if let Some(host) = host_rewrite {
        action["host_rewrite_literal"] = json!(host);
    }
    // istiod always writes a timeout: 0s (none) when the VirtualService sets none, which turns
    // off Envoy's 15 s default.
    // (istiod also writes the same value as the deprecated `max_grpc_timeout`, which only
    // concerns gRPC requests; it is left out so Envoy does not warn at every start.)
    action["timeout"] = json!(duration(route.timeout.unwrap_or(Duration::ZERO)));
    if let Some(policy) = retry_policy(&route.retries) {
        action["retry_policy"] = policy;
    }
    if !route.mirrors.is_empty() {
        action["request_mirror_policies"] = route
            .mirrors
            .iter()
            .map(|mirror| {
                json!({
                    "cluster": mirror.cluster,
                    "runtime_fraction": {"default_value": per_million(mirror.percent)},
                    "trace_sampled": false,
                    // istiod (DISABLE_SHADOW_HOST_SUFFIX, on by default) keeps the Host as is.
                    "disable_shadow_host_suffix_append": true,
                })
            })
            .collect();
    }
    let mut out = json!({
        "name": route.name,
        "match": route_match(route),
        "route": action,
    });
    let mut headers = route.headers.clone();
    if let Some(destination) = single {
        let d = &destination.headers;
        headers.request_set.extend(d.request_set.iter().cloned());
        headers.request_add.extend(d.request_add.iter().cloned());
        headers
            .request_remove
            .extend(d.request_remove.iter().cloned());
        headers.response_set.extend(d.response_set.iter().cloned());
        headers.response_add.extend(d.response_add.iter().cloned());
        headers
            .response_remove
            .extend(d.response_remove.iter().cloned());
    }
    apply_header_operations(&mut out, &headers);
    if let Some(fault) = &route.fault {
        out["typed_per_filter_config"] = json!({"envoy.filters.http.fault": self::fault(fault)});
    }
    out
}

fn route_match(route: &Route) -> Value {
    let mut out = match &route.matcher.path {
        None => json!({"prefix": "/"}),
        Some(PathMatch::Prefix(prefix)) => json!({"prefix": prefix}),
        Some(PathMatch::Exact(path)) => json!({"path": path}),
        Some(PathMatch::Regex(regex)) => json!({"safe_regex": {"regex": regex}}),
    };
    if !route.matcher.headers.is_empty() {
        out["headers"] = route
            .matcher
            .headers
            .iter()
            .map(|header| {
                let string_match = match &header.value {
                    StringMatch::Exact(v) => json!({"exact": v}),
                    StringMatch::Prefix(v) if v.is_empty() => {
                        return json!({"name": header.name, "present_match": true});
                    }
                    StringMatch::Prefix(v) => json!({"prefix": v}),
                    StringMatch::Regex(v) => json!({"safe_regex": {"regex": v}}),
                };
                json!({"name": header.name, "string_match": string_match})
            })
            .collect();
    }
    out
}

/// Istio's per-destination `headers`: a Host rewrite and header operations on the weighted
/// cluster itself, so each destination gets its own Host.
fn weighted_cluster(destination: &Destination) -> Value {
    let mut cluster = json!({
        "name": destination.cluster,
        "weight": destination.weight,
    });
    if let Some(host) = &destination.headers.host_rewrite {
        cluster["host_rewrite_literal"] = json!(host);
    }
    apply_header_operations(&mut cluster, &destination.headers);
    cluster
}

fn apply_header_operations(target: &mut Value, headers: &HeaderOperations) {
    let to_add = |set: &[(String, String)], add: &[(String, String)]| -> Vec<Value> {
        set.iter()
            .map(|(name, value)| header_value(name, value, "OVERWRITE_IF_EXISTS_OR_ADD"))
            .chain(
                add.iter()
                    .map(|(name, value)| header_value(name, value, "APPEND_IF_EXISTS_OR_ADD")),
            )
            .collect()
    };
    let request = to_add(&headers.request_set, &headers.request_add);
    if !request.is_empty() {
        target["request_headers_to_add"] = json!(request);
    }
    if !headers.request_remove.is_empty() {
        target["request_headers_to_remove"] = json!(headers.request_remove);
    }
    let response = to_add(&headers.response_set, &headers.response_add);
    if !response.is_empty() {
        target["response_headers_to_add"] = json!(response);
    }
    if !headers.response_remove.is_empty() {
        target["response_headers_to_remove"] = json!(headers.response_remove);
    }
}

/// An Envoy cluster with istiod's circuit breakers, protocol options, outlier detection and TLS.
pub fn cluster(
    cluster: &Cluster,
    upstreams: &Upstreams,
    mesh_certificate: &MeshCertificate,
    origination_ca: &Path,
) -> Value {
    let connect_timeout = duration(cluster.connect_timeout);
    let mut out = static_cluster(
        &cluster.name,
        upstreams.address(cluster.upstream, cluster.port),
        &connect_timeout,
    );
    let breakers = cluster.circuit_breakers;
    out["circuit_breakers"] = json!({"thresholds": [{
        "max_connections": breakers.max_connections,
        "max_pending_requests": breakers.max_pending_requests,
        "max_requests": breakers.max_requests,
        "max_retries": breakers.max_retries,
        "track_remaining": false,
    }]});
    let mut protocol_options = json!({
        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
    });
    let mut common = json!({});
    if let Some(max) = cluster.max_requests_per_connection {
        common["max_requests_per_connection"] = json!(max);
    }
    if let Some(idle) = cluster.idle_timeout {
        common["idle_timeout"] = json!(duration(idle));
    }
    if common.as_object().is_some_and(|o| !o.is_empty()) {
        protocol_options["common_http_protocol_options"] = common;
    }
    protocol_options["explicit_http_config"] = if cluster.http2 {
        json!({"http2_protocol_options": {}})
    } else {
        json!({"http_protocol_options": {}})
    };
    if let Some(outlier) = &cluster.outlier_detection {
        let mut detection = json!({"enforcing_success_rate": 0});
        if let Some(n) = outlier.consecutive_5xx {
            detection["consecutive_5xx"] = json!(n);
            detection["enforcing_consecutive_5xx"] = json!(if n > 0 { 100 } else { 0 });
        }
        if let Some(n) = outlier.consecutive_gateway_failure {
            detection["consecutive_gateway_failure"] = json!(n);
            detection["enforcing_consecutive_gateway_failure"] = json!(if n > 0 { 100 } else { 0 });
        }
        if let Some(interval) = outlier.interval {
            detection["interval"] = json!(duration(interval));
        }
        if let Some(time) = outlier.base_ejection_time {
            detection["base_ejection_time"] = json!(duration(time));
        }
        if let Some(percent) = outlier.max_ejection_percent {
            detection["max_ejection_percent"] = json!(percent);
        }
        out["outlier_detection"] = detection;
        out["common_lb_config"] =
            json!({"healthy_panic_threshold": {"value": outlier.healthy_panic_threshold}});
    }
    match &cluster.tls {
        UpstreamTls::Plain => {}
        UpstreamTls::IstioMutual {
            sni,
            subject_alt_names,
            alpn,
        } => {
            let mut validation = json!({"trusted_ca": {"filename": mesh_certificate.ca}});
            if !subject_alt_names.is_empty() {
                validation["match_typed_subject_alt_names"] =
                    san_matchers("URI", subject_alt_names);
            }
            out["transport_socket"] = upstream_tls_socket(
                Some(sni),
                json!({
                    "alpn_protocols": alpn,
                    "tls_certificates": [tls_certificate(mesh_certificate)],
                    "validation_context": validation,
                }),
            );
        }
        UpstreamTls::Simple {
            sni,
            verify,
            subject_alt_names,
            auto_san_validation,
            alpn,
        } => {
            let mut common = json!({});
            if !alpn.is_empty() {
                common["alpn_protocols"] = json!(alpn);
            }
            if *verify {
                let mut validation = json!({"trusted_ca": {"filename": origination_ca}});
                if !subject_alt_names.is_empty() {
                    validation["match_typed_subject_alt_names"] =
                        san_matchers("DNS", subject_alt_names);
                }
                common["validation_context"] = validation;
            }
            out["transport_socket"] = upstream_tls_socket(sni.as_deref(), common);
            // istiod's automatic SNI and SAN validation when the rule names no SNI: the Host
            // after rewriting is sent, and (without SANs) checked.
            if sni.is_none() {
                protocol_options["upstream_http_protocol_options"] = json!({
                    "auto_sni": true,
                    "auto_san_validation": auto_san_validation,
                });
            }
        }
    }
    out["typed_extension_protocol_options"] =
        json!({"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": protocol_options});
    out
}

fn upstream_tls_socket(sni: Option<&str>, common_tls_context: Value) -> Value {
    let mut context = json!({
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        "common_tls_context": common_tls_context,
    });
    if let Some(sni) = sni {
        context["sni"] = json!(sni);
    }
    json!({"name": "envoy.transport_sockets.tls", "typed_config": context})
}

fn san_matchers(san_type: &str, names: &[String]) -> Value {
    names
        .iter()
        .map(|name| json!({"san_type": san_type, "matcher": {"exact": name}}))
        .collect()
}

fn tls_certificate(certificate: &MeshCertificate) -> Value {
    json!({
        "certificate_chain": {"filename": certificate.cert},
        "private_key": {"filename": certificate.key},
    })
}

fn tls_inspector() -> Value {
    json!({
        "name": "envoy.filters.listener.tls_inspector",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"},
    })
}

/// Istio's cluster naming: `outbound|<port>|<subset>|<host>`.
pub fn outbound_cluster_name(port: u16, subset: Option<&str>, host: &str) -> String {
    format!("outbound|{port}|{}|{host}", subset.unwrap_or(""))
}

/// Istio's percentages become fractions per million.
fn per_million(percent: f64) -> Value {
    json!({"numerator": (percent * 10_000.0).round() as u32, "denominator": "MILLION"})
}

/// istiod's `TranslateFault`: an abort without percentage keeps Envoy's unset (0 %) fraction.
fn fault(fault: &Fault) -> Value {
    let mut out = json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
    });
    if let Some(delay) = fault.delay {
        out["delay"] = json!({
            "fixed_delay": duration(delay.fixed),
            "percentage": per_million(delay.percent),
        });
    }
    if let Some(abort) = fault.abort {
        let mut config = json!({"http_status": abort.status});
        if let Some(percent) = abort.percent {
            config["percentage"] = per_million(percent);
        }
        out["abort"] = config;
    }
    out
}

/// Istio puts the fault filter in every HTTP filter chain; it acts only where a route configures it.
fn fault_filter() -> Value {
    json!({
        "name": "envoy.filters.http.fault",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"},
    })
}

/// The RBAC filters istiod puts on a proxy: DENY policies first, then ALLOW ones (an ALLOW
/// filter without policies denies everything, as istiod's does).
fn rbac_filters(authorization: &Authorization) -> Vec<Value> {
    let mut filters = Vec::new();
    let mut filter = |action: &str, policies: &[AuthzPolicy]| {
        let policies: serde_json::Map<String, Value> = policies
            .iter()
            .map(|policy| (policy.name.clone(), rbac_policy(policy)))
            .collect();
        filters.push(json!({
            "name": "envoy.filters.http.rbac",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
                "rules": {"action": action, "policies": policies},
            },
        }));
    };
    if !authorization.deny.is_empty() {
        filter("DENY", &authorization.deny);
    }
    if let Some(allow) = &authorization.allow {
        filter("ALLOW", allow);
    }
    filters
}

fn rbac_policy(policy: &AuthzPolicy) -> Value {
    let permissions: Vec<Value> = if policy.to.is_empty() {
        vec![json!({"any": true})]
    } else {
        policy.to.iter().map(rbac_permission).collect()
    };
    let principals: Vec<Value> = if policy.from.is_empty() {
        vec![json!({"any": true})]
    } else {
        policy.from.iter().map(rbac_principal).collect()
    };
    json!({"permissions": permissions, "principals": principals})
}

/// One condition of an Istio rule: any of `values`, each matched by `each`, negated for the
/// `not…` fields; none when the field is empty. The three names are Envoy's words for the
/// alternatives, their list and the negation (permissions and principals have their own).
fn any_of(
    (any, list, not): (&str, &str, &str),
    values: &[String],
    negated: bool,
    each: &dyn Fn(&str) -> Value,
) -> Option<Value> {
    if values.is_empty() {
        return None;
    }
    let alternatives: Vec<Value> = values.iter().map(|v| each(v)).collect();
    let alternatives = json!({ any: { list: alternatives } });
    Some(if negated {
        json!({ not: alternatives })
    } else {
        alternatives
    })
}

fn rbac_permission(operation: &AuthzOperation) -> Value {
    let mut rules = Vec::new();
    let mut condition = |values: &[String], negated: bool, each: &dyn Fn(&str) -> Value| {
        rules.extend(any_of(
            ("or_rules", "rules", "not_rule"),
            values,
            negated,
            each,
        ));
    };
    let host = |value: &str| json!({"header": header_matcher(":authority", value, true)});
    let method = |value: &str| json!({"header": header_matcher(":method", value, false)});
    let path = |value: &str| json!({"url_path": {"path": string_matcher(value, false)}});
    condition(&operation.hosts, false, &host);
    condition(&operation.not_hosts, true, &host);
    condition(&operation.methods, false, &method);
    condition(&operation.not_methods, true, &method);
    condition(&operation.paths, false, &path);
    condition(&operation.not_paths, true, &path);
    // An operation without conditions matches every request (Envoy wants a non-empty set).
    if rules.is_empty() {
        return json!({"any": true});
    }
    json!({"and_rules": {"rules": rules}})
}

fn rbac_principal(source: &AuthzSource) -> Value {
    let mut ids = Vec::new();
    let mut condition = |values: &[String], negated: bool, each: &dyn Fn(&str) -> Value| {
        ids.extend(any_of(("or_ids", "ids", "not_id"), values, negated, each));
    };
    let principal =
        |value: &str| json!({"authenticated": {"principal_name": string_matcher(value, false)}});
    let namespace = |value: &str| {
        let pattern = value
            .split('*')
            .map(regex_escape)
            .collect::<Vec<_>>()
            .join(".*");
        json!({"authenticated": {"principal_name": {"safe_regex": {"regex": format!(".*/ns/{pattern}/.*")}}}})
    };
    condition(&source.principals, false, &principal);
    condition(&source.not_principals, true, &principal);
    condition(&source.namespaces, false, &namespace);
    condition(&source.not_namespaces, true, &namespace);
    if ids.is_empty() {
        return json!({"any": true});
    }
    json!({"and_ids": {"ids": ids}})
}

/// istiod's `HostMatcher`: `*` present, `*x` suffix, `x*` prefix, else exact.
fn header_matcher(name: &str, value: &str, ignore_case: bool) -> Value {
    if value == "*" {
        return json!({"name": name, "present_match": true});
    }
    json!({"name": name, "string_match": string_matcher(value, ignore_case)})
}

/// A string matcher with Istio's `*` wildcards (`spiffe://*` for any principal).
fn string_matcher(value: &str, ignore_case: bool) -> Value {
    let mut matcher = if value == "*" || value == "spiffe://*" {
        json!({"safe_regex": {"regex": ".+"}})
    } else if let Some(rest) = value.strip_suffix('*') {
        json!({"prefix": rest})
    } else if let Some(suffix) = value.strip_prefix("spiffe://*") {
        json!({"suffix": suffix})
    } else if let Some(suffix) = value.strip_prefix('*') {
        json!({"suffix": suffix})
    } else {
        json!({"exact": value})
    };
    if ignore_case {
        matcher["ignore_case"] = json!(true);
    }
    matcher
}

fn regex_escape(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn retry_policy(retries: &Retries) -> Option<Value> {
    let Retries::Enabled {
        attempts,
        per_try_timeout,
        retry_on,
        retriable_status_codes,
        previous_hosts,
        backoff,
    } = retries
    else {
        return None;
    };
    let mut policy = json!({
        "retry_on": retry_on.join(","),
        "num_retries": attempts,
        "host_selection_retry_max_attempts": 5,
    });
    if *previous_hosts {
        // As istiod: retry on a different host when there is one.
        policy["retry_host_predicate"] = json!([{
            "name": "envoy.retry_host_predicates.previous_hosts",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"},
        }]);
    }
    if let Some(timeout) = per_try_timeout {
        policy["per_try_timeout"] = json!(duration(*timeout));
    }
    if !retriable_status_codes.is_empty() {
        policy["retriable_status_codes"] = json!(retriable_status_codes);
    }
    if let Some(base) = backoff {
        policy["retry_back_off"] = json!({"base_interval": duration(*base)});
    }
    Some(policy)
}

struct HttpConnectionManager<'a> {
    stat_prefix: &'a str,
    route_config: Value,
    http_filters: Vec<Value>,
    access_log: &'a Path,
    use_remote_address: bool,
    strip_any_host_port: bool,
    local_reply_config: Option<Value>,
}

fn http_connection_manager(hcm: HttpConnectionManager<'_>) -> Value {
    let mut config = json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": hcm.stat_prefix,
        "codec_type": "AUTO",
        "route_config": hcm.route_config,
        "http_filters": hcm.http_filters,
        "use_remote_address": hcm.use_remote_address,
        "strip_any_host_port": hcm.strip_any_host_port,
        // The proxy reaches the sidecar as its http_proxy, so requests carry absolute URLs.
        "http_protocol_options": {"allow_absolute_url": true},
        "access_log": [access_log(hcm.access_log)],
    });
    if let Some(local_reply) = hcm.local_reply_config {
        config["local_reply_config"] = local_reply;
    }
    json!({"name": "envoy.filters.network.http_connection_manager", "typed_config": config})
}

/// One JSON object per request, with what the tests and a curious reader need.
fn access_log(path: &Path) -> Value {
    json!({
        "name": "envoy.access_loggers.file",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": path,
            "log_format": {"json_format": {
                "start_time": "%START_TIME%",
                "method": "%REQ(:METHOD)%",
                "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
                "authority": "%REQ(:AUTHORITY)%",
                "status": "%RESPONSE_CODE%",
                "flags": "%RESPONSE_FLAGS%",
                "details": "%RESPONSE_CODE_DETAILS%",
                "duration_ms": "%DURATION%",
                "downstream_tls": "%DOWNSTREAM_TLS_VERSION%",
                "sni": "%REQUESTED_SERVER_NAME%",
                "upstream_cluster": "%UPSTREAM_CLUSTER%",
                "upstream_host": "%UPSTREAM_HOST%",
                "upstream_tls": "%UPSTREAM_TLS_VERSION%",
                "upstream_failure": "%UPSTREAM_TRANSPORT_FAILURE_REASON%",
                "downstream_peer_uri_san": "%DOWNSTREAM_PEER_URI_SAN%",
                "attempt_count_header": "%REQ(X-ENVOY-ATTEMPT-COUNT)%",
                "attempts": "%UPSTREAM_REQUEST_ATTEMPT_COUNT%",
                "request_id": "%REQ(X-REQUEST-ID)%",
            }},
        },
    })
}

fn router_filter() -> Value {
    json!({
        "name": "envoy.filters.http.router",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
    })
}

fn downstream_tls(cert: &Path, key: &Path) -> Value {
    json!({
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "common_tls_context": {
                "tls_certificates": [{
                    "certificate_chain": {"filename": cert},
                    "private_key": {"filename": key},
                }],
                "alpn_protocols": ["http/1.1"],
            },
        },
    })
}

/// A cluster of at most one fixed address: the local stand-in for DNS or Kubernetes endpoints.
fn static_cluster(name: &str, address: Option<SocketAddr>, connect_timeout: &str) -> Value {
    let endpoints: Vec<Value> = address
        .map(
            |address| json!({"lb_endpoints": [{"endpoint": {"address": socket_address(address)}}]}),
        )
        .into_iter()
        .collect();
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": connect_timeout,
        "load_assignment": {"cluster_name": name, "endpoints": endpoints},
    })
}

/// Assembles one Envoy's configuration from its listeners and clusters.
pub fn bootstrap(name: &str, listeners: Vec<Value>, clusters: Vec<Value>) -> Value {
    json!({
        "node": {"id": name, "cluster": name},
        "admin": {"address": loopback(0)},
        "static_resources": {"listeners": listeners, "clusters": clusters},
        // A bound on open connections, which Envoy otherwise warns about at every start.
        "overload_manager": {"resource_monitors": [{
            "name": "envoy.resource_monitors.global_downstream_max_connections",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig",
                "max_active_downstream_connections": 1024,
            },
        }]},
    })
}

/// The loopback address of the gateway's listener for a server's port, on a port the OS
/// chooses. Envoy gives a listener added at run time the socket of a running one with the same
/// address, and two listeners on port 0 of one address count as the same: so each server's
/// listener has an address of its own, 127.0.0.1 for port 80 (the port k8s/istio.yml uses) and
/// 127.0.<port / 256>.<port % 256> for any other (127.0.1.187 for 443), fixed per port so an
/// update never moves a listener.
pub fn gateway_listener_ip(port: u16) -> std::net::IpAddr {
    let [high, low] = port.to_be_bytes();
    if port == 80 {
        std::net::IpAddr::from([127, 0, 0, 1])
    } else {
        std::net::IpAddr::from([127, 0, high, low])
    }
}

fn header_value(name: &str, value: &str, action: &str) -> Value {
    json!({"header": {"key": name, "value": value}, "append_action": action})
}

fn loopback(port: u16) -> Value {
    socket_address(SocketAddr::from(([127, 0, 0, 1], port)))
}

fn socket_address(address: SocketAddr) -> Value {
    json!({"socket_address": {"address": address.ip().to_string(), "port_value": address.port()}})
}

/// Protobuf JSON durations: seconds with a fraction and an `s`.
fn duration(value: Duration) -> String {
    format!("{}s", value.as_secs_f64())
}
