//! Envoy bootstrap configurations (JSON) for the three Envoys, built from the policy and the
//! addresses of the components already running. Names and shapes follow what Istio generates
//! (`outbound|443||host` clusters, per-destination `host_rewrite_literal`, the fault filter with
//! a per-route config, REGISTRY_ONLY's 502), so the Envoy admin pages read like a cluster's.
//!
//! Every listener binds 127.0.0.1 port 0; the chosen port is read back from the admin API.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::policy::{Abort, Destination, Policy, Retries, RouteRules};

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

/// The egress gateway stand-in: weighted split with TLS origination to the router.
#[derive(Debug, Clone)]
pub struct GatewaySpec<'a> {
    pub policy: &'a Policy,
    /// Where every Cloud Foundry hostname resolves locally (instead of DNS).
    pub router: SocketAddr,
    pub ca_cert: PathBuf,
    pub access_log: PathBuf,
}

/// The proxy's sidecar stand-in: fault, timeout and retries, then the egress gateway.
#[derive(Debug, Clone)]
pub struct SidecarSpec<'a> {
    pub policy: &'a Policy,
    pub gateway: SocketAddr,
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
        .map(|route| static_cluster(&app_cluster_name(&route.host), route.app, None))
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
    let policy = spec.policy;
    let route = &policy.gateway_route;
    let weighted: Vec<Value> = route.destinations.iter().map(weighted_cluster).collect();
    let virtual_host = json!({
        "name": format!("{}:{}", policy.stable_host, policy.mesh_route.gateway_port),
        "domains": domains(&policy.stable_host, policy.mesh_route.gateway_port),
        "routes": [route_entry(
            &route.rules,
            json!({"weighted_clusters": {"clusters": weighted}}),
        )],
    });
    let port = policy.mesh_route.gateway_port;
    let listener = json!({
        "name": format!("0.0.0.0_{port}"),
        "address": loopback(0),
        "filter_chains": [{"filters": [http_connection_manager(HttpConnectionManager {
            stat_prefix: &format!("outbound_0.0.0.0_{port}"),
            route_config: json!({"name": format!("http.{port}"), "virtual_hosts": [virtual_host]}),
            http_filters: vec![fault_filter(), router_filter()],
            access_log: &spec.access_log,
            use_remote_address: true,
            strip_any_host_port: false,
            local_reply_config: None,
        })]}],
    });
    let clusters: Vec<Value> = route
        .destinations
        .iter()
        .map(|destination| {
            let tls = destination
                .tls
                .as_ref()
                .map(|tls| upstream_tls(destination, tls, &policy.stable_host, &spec.ca_cert));
            static_cluster(
                &outbound_cluster_name(destination.port, None, &destination.host),
                spec.router,
                tls,
            )
        })
        .collect();
    bootstrap("egress-gateway", vec![listener], clusters)
}

/// Istio's per-destination `headers.request`: a host rewrite and header operations on the
/// weighted cluster itself, so each destination gets its own Host.
fn weighted_cluster(destination: &Destination) -> Value {
    let mut cluster = json!({
        "name": outbound_cluster_name(destination.port, None, &destination.host),
        "weight": destination.weight,
    });
    if let Some(host) = &destination.host_rewrite {
        cluster["host_rewrite_literal"] = json!(host);
    }
    let headers: Vec<Value> = destination
        .set_headers
        .iter()
        .map(|(name, value)| header_value(name, value, "OVERWRITE_IF_EXISTS_OR_ADD"))
        .chain(
            destination
                .add_headers
                .iter()
                .map(|(name, value)| header_value(name, value, "APPEND_IF_EXISTS_OR_ADD")),
        )
        .collect();
    if !headers.is_empty() {
        cluster["request_headers_to_add"] = json!(headers);
    }
    if !destination.remove_headers.is_empty() {
        cluster["request_headers_to_remove"] = json!(destination.remove_headers);
    }
    cluster
}

fn upstream_tls(
    destination: &Destination,
    tls: &crate::policy::OriginationTls,
    stable_host: &str,
    ca_cert: &Path,
) -> Value {
    // Istio's auto SNI uses the Host after rewriting when the DestinationRule names none.
    let sni = tls
        .sni
        .clone()
        .unwrap_or_else(|| destination.effective_host(stable_host).to_owned());
    let mut common = json!({});
    if tls.verify {
        let names = if tls.subject_alt_names.is_empty() {
            vec![sni.clone()]
        } else {
            tls.subject_alt_names.clone()
        };
        common["validation_context"] = json!({
            "trusted_ca": {"filename": ca_cert},
            "match_typed_subject_alt_names": names.iter().map(|name| json!({
                "san_type": "DNS",
                "matcher": {"exact": name},
            })).collect::<Vec<_>>(),
        });
    }
    json!({
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "sni": sni,
            "common_tls_context": common,
        },
    })
}

pub fn sidecar(spec: &SidecarSpec<'_>) -> Value {
    let policy = spec.policy;
    let mesh = &policy.mesh_route;
    let gateway_cluster = outbound_cluster_name(
        mesh.gateway_port,
        mesh.gateway_subset.as_deref(),
        &mesh.gateway_host,
    );
    let route = route_entry(&mesh.rules, json!({"cluster": gateway_cluster}));
    let stable = json!({
        "name": format!("{}:{}", policy.stable_host, policy.stable_port),
        "domains": domains(&policy.stable_host, policy.stable_port),
        "routes": [route],
    });
    // REGISTRY_ONLY: Istio's "block_all" virtual host answers 502 for every undeclared host.
    let block_all = json!({
        "name": "block_all",
        "domains": ["*"],
        "routes": [{"match": {"prefix": "/"}, "name": "block_all", "direct_response": {"status": 502}}],
    });
    let port = policy.stable_port;
    let listener = json!({
        "name": format!("0.0.0.0_{port}"),
        "address": loopback(0),
        "filter_chains": [{"filters": [http_connection_manager(HttpConnectionManager {
            stat_prefix: &format!("outbound_0.0.0.0_{port}"),
            route_config: json!({"name": port.to_string(), "virtual_hosts": [stable, block_all]}),
            http_filters: vec![fault_filter(), router_filter()],
            access_log: &spec.access_log,
            use_remote_address: false,
            strip_any_host_port: false,
            local_reply_config: None,
        })]}],
    });
    let clusters = vec![static_cluster(&gateway_cluster, spec.gateway, None)];
    bootstrap("sidecar", vec![listener], clusters)
}

/// Istio's cluster naming: `outbound|<port>|<subset>|<host>`.
pub fn outbound_cluster_name(port: u16, subset: Option<&str>, host: &str) -> String {
    format!("outbound|{port}|{}|{host}", subset.unwrap_or(""))
}

/// Istio's percentage becomes a fraction per million.
fn fault(abort: Abort) -> Value {
    let per_million = (abort.percent * 10_000.0).round() as u32;
    json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
        "abort": {
            "http_status": abort.status,
            "percentage": {"numerator": per_million, "denominator": "MILLION"},
        },
    })
}

/// The route of an Istio HTTP route: timeout and retries on the action, the abort as the fault
/// filter's per-route config.
fn route_entry(rules: &RouteRules, mut action: Value) -> Value {
    // Istio always writes a timeout: 0s (none) when the VirtualService sets none, which turns off
    // Envoy's 15 s default.
    action["timeout"] = json!(duration(rules.timeout.unwrap_or(Duration::ZERO)));
    if let Some(policy) = retry_policy(&rules.retries) {
        action["retry_policy"] = policy;
    }
    let mut route = json!({"match": {"prefix": "/"}, "route": action});
    if let Some(abort) = rules.abort {
        route["typed_per_filter_config"] = json!({"envoy.filters.http.fault": fault(abort)});
    }
    route
}

/// Istio puts the fault filter in every HTTP filter chain; it acts only where a route configures it.
fn fault_filter() -> Value {
    json!({
        "name": "envoy.filters.http.fault",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"},
    })
}

fn retry_policy(retries: &Retries) -> Option<Value> {
    let Retries::Enabled {
        attempts,
        per_try_timeout,
        retry_on,
        retriable_status_codes,
    } = retries
    else {
        return None;
    };
    let mut policy = json!({
        "retry_on": retry_on.join(","),
        "num_retries": attempts,
        // As Istio: retry on a different host when there is one, and say how hard to look.
        "retry_host_predicate": [{
            "name": "envoy.retry_host_predicates.previous_hosts",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"},
        }],
        "host_selection_retry_max_attempts": 5,
    });
    if let Some(timeout) = per_try_timeout {
        policy["per_try_timeout"] = json!(duration(*timeout));
    }
    if !retriable_status_codes.is_empty() {
        policy["retriable_status_codes"] = json!(retriable_status_codes);
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

/// A cluster of one fixed address: the local stand-in for DNS or Kubernetes endpoints.
fn static_cluster(name: &str, address: SocketAddr, transport_socket: Option<Value>) -> Value {
    let mut cluster = json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": socket_address(address)}}]}],
        },
    });
    if let Some(socket) = transport_socket {
        cluster["transport_socket"] = socket;
    }
    cluster
}

fn bootstrap(name: &str, listeners: Vec<Value>, clusters: Vec<Value>) -> Value {
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

/// The Host values a virtual host answers: the name alone and with its port, as Istio lists them.
fn domains(host: &str, port: u16) -> Vec<String> {
    vec![host.to_owned(), format!("{host}:{port}")]
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
