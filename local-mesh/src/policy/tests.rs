use super::*;

/// The demo's layout in its smallest form; tests edit it with `replace`.
const MANIFEST: &str = r#"
# comment-only document first, as in k8s/istio.yml
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: stable, namespace: demo}
spec:
  hosts: [hello.external]
  location: MESH_EXTERNAL
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: NONE
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: cf, namespace: demo}
spec:
  hosts: [hello-istio-v1.apps.cf.example, hello-istio-v2.apps.cf.example]
  ports: [{number: 443, name: https, protocol: HTTPS}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: egress, namespace: demo}
spec:
  selector: {istio: egressgateway}
  servers:
    - port: {number: 80, name: http, protocol: HTTP}
      hosts: [hello.external]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: egress-subset, namespace: demo}
spec:
  host: istio-egressgateway.istio-system.svc.cluster.local
  subsets: [{name: hello}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: mesh-route, namespace: demo}
spec:
  hosts: [hello.external]
  gateways: [mesh]
  http:
    - name: to-gateway
      fault: {abort: {httpStatus: 418, percentage: {value: 20}}}
      timeout: 3s
      retries: {attempts: 2, perTryTimeout: 1s, retryOn: "connect-failure,refused-stream,reset,503"}
      route:
        - destination:
            host: istio-egressgateway.istio-system.svc.cluster.local
            subset: hello
            port: {number: 80}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: gateway-route, namespace: demo}
spec:
  hosts: [hello.external]
  gateways: [egress]
  http:
    - route:
        - destination: {host: hello-istio-v1.apps.cf.example, port: {number: 443}}
          weight: 30
          headers: {request: {set: {host: hello-istio-v1.apps.cf.example}}}
        - destination: {host: hello-istio-v2.apps.cf.example, port: {number: 443}}
          weight: 70
          headers: {request: {set: {host: hello-istio-v2.apps.cf.example}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: v1-tls, namespace: demo}
spec:
  host: hello-istio-v1.apps.cf.example
  trafficPolicy:
    portLevelSettings:
      - port: {number: 443}
        tls: {mode: SIMPLE, sni: hello-istio-v1.apps.cf.example}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: v2-tls, namespace: demo}
spec:
  host: hello-istio-v2.apps.cf.example
  trafficPolicy:
    tls: {mode: SIMPLE}
"#;

fn parse(text: &str) -> Result<Policy, PolicyError> {
    Policy::parse(Path::new("istio.yml"), text)
}

fn edited(from: &str, to: &str) -> String {
    assert!(MANIFEST.contains(from), "the fixture has no {from:?}");
    MANIFEST.replacen(from, to, 1)
}

fn error_of(text: &str) -> String {
    match parse(text) {
        Ok(policy) => panic!("expected an error, got {policy:?}"),
        Err(error) => error.to_string(),
    }
}

#[test]
fn reads_every_number_of_the_demo_layout() {
    let policy = parse(MANIFEST).unwrap();
    assert_eq!(policy.stable_host, "hello.external");
    assert_eq!(policy.stable_port, 80);
    let mesh = &policy.mesh_route;
    assert_eq!(
        mesh.rules.abort,
        Some(Abort {
            status: 418,
            percent: 20.0
        })
    );
    assert_eq!(mesh.rules.timeout, Some(Duration::from_secs(3)));
    assert_eq!(
        mesh.rules.retries,
        Retries::Enabled {
            attempts: 2,
            per_try_timeout: Some(Duration::from_secs(1)),
            retry_on: [
                "connect-failure",
                "refused-stream",
                "reset",
                "retriable-status-codes"
            ]
            .map(String::from)
            .to_vec(),
            retriable_status_codes: vec![503],
        }
    );
    assert_eq!(
        mesh.gateway_host,
        "istio-egressgateway.istio-system.svc.cluster.local"
    );
    assert_eq!(mesh.gateway_subset.as_deref(), Some("hello"));
    assert_eq!(mesh.gateway_port, 80);
    let destinations = &policy.gateway_route.destinations;
    assert_eq!(destinations.len(), 2);
    assert_eq!((destinations[0].weight, destinations[1].weight), (30, 70));
    assert_eq!(
        destinations[0].host_rewrite.as_deref(),
        Some("hello-istio-v1.apps.cf.example")
    );
    assert_eq!(
        destinations[1].host_rewrite.as_deref(),
        Some("hello-istio-v2.apps.cf.example")
    );
    let v1_tls = destinations[0].tls.as_ref().unwrap();
    assert_eq!(
        v1_tls.sni.as_deref(),
        Some("hello-istio-v1.apps.cf.example")
    );
    assert!(v1_tls.verify);
    // No sni in the DestinationRule: left to auto SNI.
    assert_eq!(destinations[1].tls.as_ref().unwrap().sni, None);
    // The gateway route sets no retries: Istio's default applies there.
    assert_eq!(policy.gateway_route.rules.retries, Retries::istio_default());
    assert_eq!(policy.gateway_route.rules.timeout, None);
    let versions: Vec<_> = policy
        .cf_hosts
        .iter()
        .map(|cf| (cf.host.as_str(), cf.version))
        .collect();
    assert_eq!(
        versions,
        [
            ("hello-istio-v1.apps.cf.example", HelloVersion::V1),
            ("hello-istio-v2.apps.cf.example", HelloVersion::V2)
        ]
    );
}

#[test]
fn shares_follow_abort_and_weights() {
    let policy = parse(MANIFEST).unwrap();
    assert!((policy.abort_share() - 0.2).abs() < 1e-9);
    let shares = policy.version_shares();
    assert!((shares[&HelloVersion::V1] - 0.24).abs() < 1e-9);
    assert!((shares[&HelloVersion::V2] - 0.56).abs() < 1e-9);
    let all_v1 =
        parse(&edited("weight: 30", "weight: 100").replacen("weight: 70", "weight: 0", 1)).unwrap();
    let shares = all_v1.version_shares();
    assert!((shares[&HelloVersion::V1] - 0.8).abs() < 1e-9);
    assert_eq!(shares[&HelloVersion::V2], 0.0);
}

#[test]
fn the_repository_manifest_is_supported() {
    let path = crate::repo_root().join("k8s").join("istio.yml");
    let policy = Policy::load(&path).unwrap_or_else(|error| panic!("{error}"));
    assert!(!policy.gateway_route.destinations.is_empty());
    assert_eq!(policy.cf_hosts.len(), 2, "{policy:?}");
}

#[test]
fn a_delay_fault_is_rejected_by_name() {
    let error = error_of(&edited(
        "fault: {abort: {httpStatus: 418, percentage: {value: 20}}}",
        "fault: {delay: {fixedDelay: 5s, percentage: {value: 10}}}",
    ));
    assert!(
        error.contains("VirtualService/mesh-route") && error.contains("fault.delay"),
        "{error}"
    );
}

#[test]
fn abort_without_percentage_aborts_everything() {
    let policy = parse(&edited(
        "{httpStatus: 418, percentage: {value: 20}}",
        "{httpStatus: 503}",
    ))
    .unwrap();
    assert_eq!(
        policy.mesh_route.rules.abort,
        Some(Abort {
            status: 503,
            percent: 100.0
        })
    );
}

#[test]
fn unsupported_routing_is_an_error_not_a_default() {
    let cases = [
        (
            edited(
                "    - name: to-gateway\n",
                "    - name: to-gateway\n      match: [{uri: {prefix: /v2}}]\n",
            ),
            "match.uri",
        ),
        (
            edited(
                "      timeout: 3s\n",
                "      timeout: 3s\n      mirror: {host: elsewhere}\n",
            ),
            "http[0].mirror",
        ),
        (
            edited(
                "retryOn: \"connect-failure",
                "retryOn: \"sometimes,connect-failure",
            ),
            "\"sometimes\"",
        ),
        (edited("          weight: 30\n", ""), "weight is required"),
        (
            edited("tls: {mode: SIMPLE}", "tls: {mode: MUTUAL}"),
            "tls.mode MUTUAL",
        ),
        (edited("timeout: 3s", "timeout: 3"), "needs a unit"),
        (
            edited("percentage: {value: 20}", "percentage: {value: 120}"),
            "within 0..=100",
        ),
        (
            edited("subsets: [{name: hello}]", "subsets: [{name: other}]"),
            "subset hello",
        ),
        (
            edited("kind: Gateway", "kind: Sidecar"),
            "kind Sidecar is not supported",
        ),
        (
            edited(
                "destination: {host: hello-istio-v2.apps.cf.example, port: {number: 443}}",
                "destination: {host: hello-istio-v3.apps.cf.example, port: {number: 443}}",
            ),
            "hello-istio-v3.apps.cf.example is not declared",
        ),
        (
            edited(
                "protocol: HTTP}]\n  resolution: NONE",
                "protocol: TCP}]\n  resolution: NONE",
            ),
            "exactly one port with protocol HTTP",
        ),
        (
            edited(
                "    - port: {number: 80, name: http, protocol: HTTP}",
                "    - port: {number: 443, name: https, protocol: HTTPS}",
            ),
            "Gateway/egress",
        ),
    ];
    for (text, expected) in cases {
        let error = error_of(&text);
        assert!(
            error.contains(expected),
            "expected {expected:?} in: {error}"
        );
        assert!(!error.contains('\n'), "one line: {error}");
    }
}

#[test]
fn a_third_cloud_foundry_host_has_no_hello_version() {
    let error = error_of(&edited(
        "hello-istio-v2.apps.cf.example]",
        "hello-istio-v2.apps.cf.example, hello-istio.apps.cf.example]",
    ));
    assert!(
        error.contains("cannot tell which hello version serves hello-istio.apps.cf.example"),
        "{error}"
    );
}

#[test]
fn retries_follow_istio_defaults() {
    let none = parse(&edited("      retries: {attempts: 2, perTryTimeout: 1s, retryOn: \"connect-failure,refused-stream,reset,503\"}\n", "")).unwrap();
    assert_eq!(none.mesh_route.rules.retries, Retries::istio_default());
    let off = parse(&edited("attempts: 2,", "attempts: 0,")).unwrap();
    assert_eq!(off.mesh_route.rules.retries, Retries::Disabled);
}

#[test]
fn a_destination_without_host_rewrite_keeps_the_stable_host() {
    let policy = parse(&edited(
        "          headers: {request: {set: {host: hello-istio-v1.apps.cf.example}}}\n",
        "",
    ))
    .unwrap();
    let destination = &policy.gateway_route.destinations[0];
    assert_eq!(destination.host_rewrite, None);
    assert_eq!(
        destination.effective_host(&policy.stable_host),
        "hello.external"
    );
}

#[test]
fn broken_yaml_names_the_document() {
    let error = error_of(&format!("{MANIFEST}\n---\nkind: [unclosed\n"));
    assert!(
        error.starts_with("istio.yml: document 9 is not valid YAML"),
        "{error}"
    );
    assert!(error.contains("line 89"), "{error}");
}

#[test]
fn version_of_a_hostname() {
    assert_eq!(
        hello_version_of("hello-istio-v1.apps.cf.example"),
        Some(HelloVersion::V1)
    );
    assert_eq!(
        hello_version_of("v2.apps.cf.example"),
        Some(HelloVersion::V2)
    );
    assert_eq!(hello_version_of("hello.v1.example"), None);
    assert_eq!(hello_version_of("hello-v1-v2.example"), None);
}
