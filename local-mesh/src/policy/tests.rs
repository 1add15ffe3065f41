//! The translation of each construct, checked on the model (bootstrap.rs writes it as is).

use std::time::Duration;

use super::*;

/// k8s/istio.yml: mTLS to the gateway, checked origination, exportTo, the AuthorizationPolicy.
/// Tests edit it with `edited`.
/// k8s/istio.yml without its comment lines, so that an edit can name consecutive lines.
fn manifest() -> &'static str {
    static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TEXT.get_or_init(|| {
        REPO_MANIFEST
            .lines()
            .filter(|line| !line.trim_start().starts_with('#'))
            .map(|line| format!("{line}\n"))
            .collect()
    })
}

/// k8s/istio.yml and a pattern file over it.
const REPO_MANIFEST: &str = include_str!("../../../k8s/istio.yml");
const MIRRORING: &str = include_str!("../../../k8s/patterns/mirroring.yml");

const GATEWAY_HOST: &str = "istio-egressgateway.istio-system.svc.cluster.local";
const V1: &str = "hello-istio-v1.apps.cf.example";
const V2: &str = "hello-istio-v2.apps.cf.example";

fn parse(text: &str) -> Result<Policy, PolicyError> {
    Policy::parse(Path::new("istio.yml"), text)
}

fn edited(from: &str, to: &str) -> String {
    assert!(manifest().contains(from), "k8s/istio.yml has no {from:?}");
    manifest().replacen(from, to, 1)
}

fn error_of(text: &str) -> String {
    match parse(text) {
        Ok(policy) => panic!("expected an error, got {policy:#?}"),
        Err(error) => {
            let error = error.to_string();
            assert!(!error.contains('\n'), "one line: {error}");
            error
        }
    }
}

fn cluster<'p>(clusters: &'p [Cluster], name: &str) -> &'p Cluster {
    clusters
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no cluster {name} in {clusters:#?}"))
}

/// The mesh route's fragment in k8s/istio.yml, for edits of its http route.
const MESH_FAULT: &str =
    "        abort:\n          httpStatus: 418\n          percentage:\n            value: 20\n";
const MESH_RETRIES: &str = "      retries:\n        attempts: 2\n        perTryTimeout: 1s\n        retryOn: connect-failure,refused-stream,reset,503\n";

#[test]
fn reads_k8s_istio_yml() {
    let policy = parse(manifest()).unwrap();
    assert_eq!(policy.stable_host, "hello.external");
    assert_eq!(policy.stable_port, 80);
    let mesh = policy.mesh_route();
    assert_eq!(mesh.name, "to-egress-gateway");
    assert_eq!(mesh.source, "VirtualService/hello-external-via-egress");
    assert_eq!(
        mesh.fault.unwrap().abort,
        Some(Abort {
            status: 418,
            percent: Some(20.0)
        })
    );
    assert_eq!(mesh.timeout, Some(Duration::from_secs(3)));
    assert_eq!(
        mesh.retries,
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
            previous_hosts: true,
            backoff: None,
        }
    );
    let to_gateway = &mesh.destinations[0];
    assert_eq!(
        to_gateway.cluster,
        format!("outbound|80|hello-external|{GATEWAY_HOST}")
    );
    // The hop to the gateway: ISTIO_MUTUAL with the DestinationRule's SNI, the gateway's
    // identity checked, istiod's ALPN for an HTTP/2 in-mesh cluster.
    let hop = cluster(&policy.proxy_sidecar.clusters, &to_gateway.cluster);
    assert_eq!(hop.upstream, Upstream::EgressGateway);
    assert!(hop.http2, "the gateway Service's port 80 is named http2");
    assert_eq!(
        hop.tls,
        UpstreamTls::IstioMutual {
            sni: "hello.external".into(),
            subject_alt_names: vec![
                "spiffe://cluster.local/ns/istio-system/sa/istio-egressgateway-service-account"
                    .into()
            ],
            alpn: ["istio-peer-exchange", "istio", "h2"]
                .map(String::from)
                .to_vec(),
        }
    );
    assert_eq!(hop.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
    assert_eq!(hop.circuit_breakers, CircuitBreakers::istio_default());

    let server = policy.gateway_server();
    assert_eq!(server.port, 80);
    assert_eq!(server.protocol, ServerProtocol::HttpsIstioMutual);
    assert_eq!(server.hosts, ["hello.external"]);
    assert_eq!(
        server.route_config.name,
        "https.80.https-hello-external.hello-external-egress.istio-system"
    );
    let split = policy.gateway_route();
    assert_eq!(split.name, "split-v1-v2");
    assert!(split.weighted);
    let weights: Vec<_> = split
        .destinations
        .iter()
        .map(|d| (d.host.as_str(), d.weight, d.headers.host_rewrite.as_deref()))
        .collect();
    assert_eq!(weights, [(V1, 30, Some(V1)), (V2, 70, Some(V2))]);
    // No retries on the gateway route: istiod's default, which (1.24+) does not retry a 503.
    assert_eq!(split.retries, Retries::istio_default());
    let Retries::Enabled {
        retriable_status_codes,
        ..
    } = Retries::istio_default()
    else {
        panic!()
    };
    assert!(retriable_status_codes.is_empty());
    for (host, version) in [(V1, HelloVersion::V1), (V2, HelloVersion::V2)] {
        let origination = cluster(&policy.gateway.clusters, &format!("outbound|443||{host}"));
        assert_eq!(origination.upstream, Upstream::CfRouter);
        assert_eq!(
            origination.tls,
            UpstreamTls::Simple {
                sni: Some(host.into()),
                verify: true,
                subject_alt_names: vec![host.into()],
                auto_san_validation: false,
                alpn: Vec::new(),
            }
        );
        assert_eq!(policy.cf_host(host).unwrap().version, version);
    }
    assert_eq!(
        policy.gateway.authorization,
        Authorization {
            deny: Vec::new(),
            allow: Some(vec![AuthzPolicy {
                name: "ns[istio-system]-policy[hello-external-egress]-rule[0]".into(),
                from: vec![AuthzSource {
                    principals: vec![
                        "spiffe://cluster.local/ns/egress-demo/sa/app-that-calls-externally".into()
                    ],
                    ..AuthzSource::default()
                }],
                to: vec![AuthzOperation {
                    hosts: vec!["hello.external".into()],
                    ..AuthzOperation::default()
                }],
            }]),
        }
    );
    assert_eq!(
        policy.proxy_sidecar.identity.spiffe_id(),
        "spiffe://cluster.local/ns/egress-demo/sa/app-that-calls-externally"
    );
    assert_eq!(
        policy.caller_sidecar.identity.principal(),
        "cluster.local/ns/egress-demo/sa/traffic"
    );
}

#[test]
fn shares_follow_abort_and_weights() {
    let policy = parse(manifest()).unwrap();
    assert!((policy.abort_share() - 0.2).abs() < 1e-9);
    let shares = policy.version_shares();
    assert!((shares[&HelloVersion::V1] - 0.24).abs() < 1e-9);
    assert!((shares[&HelloVersion::V2] - 0.56).abs() < 1e-9);
    let all_v1 =
        parse(&edited("weight: 30", "weight: 100").replacen("weight: 70", "weight: 0", 1)).unwrap();
    // istiod leaves a 0-weight destination out of the weighted clusters.
    assert_eq!(all_v1.gateway_route().destinations.len(), 1);
    let shares = all_v1.version_shares();
    assert!((shares[&HelloVersion::V1] - 0.8).abs() < 1e-9);
    assert!(!shares.contains_key(&HelloVersion::V2));
}

#[test]
fn export_to_keeps_the_cloud_foundry_hosts_from_the_sidecars() {
    let policy = parse(manifest()).unwrap();
    for sidecar in [&policy.proxy_sidecar, &policy.caller_sidecar] {
        let config = &sidecar.route_config;
        assert_eq!(config.name, "80");
        assert!(config.virtual_host(V1).is_none(), "{config:#?}");
        assert!(config.virtual_host("hello.external").is_some());
        assert!(
            sidecar
                .clusters
                .iter()
                .all(|c| c.upstream != Upstream::CfRouter)
        );
    }
    // Exported to the whole mesh, the sidecars would see them (their HTTPS port carries no
    // HTTP virtual host; what matters is the registry).
    let open = parse(&manifest().replace(
        "    - hello-istio-v2.apps.cf.example\n  exportTo:\n    - \".\"\n",
        "    - hello-istio-v2.apps.cf.example\n",
    ))
    .unwrap();
    assert_eq!(open.cf_hosts.len(), 2);
    // A DestinationRule exported to "." in egress-demo is invisible to the gateway in
    // istio-system: a subset defined there would not exist for it.
    let moved = edited(
        "  name: hello-istio-v1-tls\n  namespace: istio-system\n",
        "  name: hello-istio-v1-tls\n  namespace: egress-demo\n",
    );
    let policy = parse(&moved).unwrap();
    let v1 = cluster(&policy.gateway.clusters, &format!("outbound|443||{V1}"));
    assert_eq!(
        v1.tls,
        UpstreamTls::Plain,
        "the rule does not reach the gateway"
    );
}

#[test]
fn the_caller_sidecar_routes_the_proxy_service_with_istio_defaults() {
    let policy = parse(manifest()).unwrap();
    let config = &policy.caller_sidecar.route_config;
    let host = config
        .virtual_host("service-that-calls-externally")
        .expect("the caller calls the proxy's Service by its short name");
    assert!(
        host.domains
            .contains(&"service-that-calls-externally.egress-demo.svc.cluster.local".to_owned())
    );
    let route = &host.routes[0];
    assert_eq!(route.name, "default");
    assert_eq!(route.timeout, None);
    assert_eq!(route.retries, Retries::istio_default());
    let to_proxy = cluster(
        &policy.caller_sidecar.clusters,
        &route.destinations[0].cluster,
    );
    assert_eq!(
        to_proxy.name,
        "outbound|80||service-that-calls-externally.egress-demo.svc.cluster.local"
    );
    assert_eq!(to_proxy.upstream, Upstream::Proxy);
}

#[test]
fn the_repository_manifest_reads() {
    let path = crate::repo_root().join("k8s").join("istio.yml");
    let policy = Policy::load(&path).unwrap_or_else(|error| panic!("{error}"));
    assert!(!policy.gateway_route().destinations.is_empty());
    assert_eq!(policy.cf_hosts.len(), 2, "{policy:?}");
}

#[test]
fn a_fault_without_percentage_never_fires() {
    let policy = parse(&edited(
        MESH_FAULT,
        "        abort: {httpStatus: 503}\n        delay: {fixedDelay: 2s}\n",
    ))
    .unwrap();
    let fault = policy.mesh_route().fault.unwrap();
    assert_eq!(
        fault.abort,
        Some(Abort {
            status: 503,
            percent: None
        })
    );
    assert_eq!(
        fault.delay,
        Some(Delay {
            fixed: Duration::from_secs(2),
            percent: 0.0
        })
    );
    assert_eq!(policy.abort_share(), 0.0);
}

#[test]
fn delay_and_abort_translate_at_either_hop() {
    let policy = parse(
        &edited(
            MESH_FAULT,
            "        delay: {fixedDelay: 250ms, percentage: {value: 12.5}}\n",
        )
        .replacen(
            "    - name: split-v1-v2\n",
            "    - name: split-v1-v2\n      fault: {abort: {httpStatus: 503, percentage: {value: 10}}}\n",
            1,
        ),
    )
    .unwrap();
    assert_eq!(
        policy.mesh_route().fault,
        Some(Fault {
            delay: Some(Delay {
                fixed: Duration::from_millis(250),
                percent: 12.5
            }),
            abort: None
        })
    );
    assert_eq!(policy.gateway_route().abort_share(), 0.1);
    let shares = policy.version_shares();
    assert!(
        (shares[&HelloVersion::V1] - 0.27).abs() < 1e-9,
        "{shares:?}"
    );
}

#[test]
fn istio_mutual_towards_a_plain_http_server_is_refused_with_the_reason() {
    let error = error_of(&edited(
        "    - port:\n        number: 80\n        name: https-hello-external\n        protocol: HTTPS\n      hosts:\n        - hello.external\n      tls:\n        mode: ISTIO_MUTUAL\n",
        "    - port: {number: 80, name: http, protocol: HTTP}\n      hosts: [hello.external]\n",
    ));
    assert!(
        error.contains("DestinationRule/egressgateway-for-hello-external")
            && error
                .contains("ISTIO_MUTUAL towards Gateway/hello-external-egress's plain-HTTP server"),
        "{error}"
    );
    // And plain text towards the mTLS server, equally doomed.
    let error = error_of(&edited(
        "            tls:\n              mode: ISTIO_MUTUAL\n              sni: hello.external",
        "            tls: {mode: DISABLE}",
    ));
    assert!(error.contains("plain text towards"), "{error}");
    // ISTIO_MUTUAL without sni: istiod sends the cluster name, which no server host matches.
    let error = error_of(&edited(
        "            tls:\n              mode: ISTIO_MUTUAL\n              sni: hello.external",
        "            tls: {mode: ISTIO_MUTUAL}",
    ));
    assert!(
        error.contains("SNI outbound_.80_.hello-external_.istio-egressgateway"),
        "{error}"
    );
}

#[test]
fn host_in_request_add_is_a_host_rewrite() {
    let policy = parse(&edited(
        "headers:\n            request:\n              set:\n                host: hello-istio-v1.apps.cf.example",
        "headers: {request: {add: {host: hello-istio-v1.apps.cf.example, x-canary: \"1\"}}}",
    ))
    .unwrap();
    let destination = &policy.gateway_route().destinations[0];
    assert_eq!(destination.headers.host_rewrite.as_deref(), Some(V1));
    assert_eq!(
        destination.headers.request_add,
        [("x-canary".to_owned(), "1".to_owned())]
    );
}

#[test]
fn wildcard_destination_rule_hosts_apply_most_specific_first() {
    let wildcard = "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: all-cf, namespace: istio-system}\nspec:\n  host: \"*.apps.cf.example\"\n  exportTo: [\".\"]\n  trafficPolicy:\n    tls: {mode: SIMPLE}\n    connectionPool: {tcp: {maxConnections: 7}}\n";
    // Without the per-host rules, the wildcard one applies to both routes: auto SNI and auto SAN.
    let without_v2 = manifest()
        .split("---\n")
        .filter(|doc| !doc.contains("name: hello-istio-v2-tls"))
        .collect::<Vec<_>>()
        .join("---\n");
    let policy = parse(&format!("{without_v2}{wildcard}")).unwrap();
    let v2 = cluster(&policy.gateway.clusters, &format!("outbound|443||{V2}"));
    assert_eq!(
        v2.destination_rule.as_deref(),
        Some("DestinationRule/all-cf")
    );
    assert_eq!(v2.circuit_breakers.max_connections, 7);
    assert!(matches!(
        &v2.tls,
        UpstreamTls::Simple {
            sni: None,
            auto_san_validation: true,
            ..
        }
    ));
    // The exact rule for v1 wins over the wildcard.
    let v1 = cluster(&policy.gateway.clusters, &format!("outbound|443||{V1}"));
    assert_eq!(
        v1.destination_rule.as_deref(),
        Some("DestinationRule/hello-istio-v1-tls")
    );
    assert_eq!(v1.circuit_breakers, CircuitBreakers::istio_default());
}

#[test]
fn service_entry_fields_are_honoured_or_refused() {
    let cases = [
        (
            "  resolution: NONE\n",
            "  resolution: STATIC\n  endpoints: [{address: 192.0.2.1}]\n",
            "endpoints are not supported",
        ),
        (
            "      name: https\n      protocol: HTTPS\n",
            "      name: https\n      protocol: HTTPS\n      targetPort: 8443\n",
            "targetPort 8443",
        ),
        (
            "location: MESH_EXTERNAL\n  ports:\n    - number: 443",
            "location: MESH_INTERNAL\n  ports:\n    - number: 443",
            "location MESH_INTERNAL",
        ),
        (
            "  resolution: DNS\n",
            "  resolution: DNS\n  addresses: [10.1.2.3]\n",
            "addresses with a HTTPS port",
        ),
        (
            "  resolution: DNS\n",
            "  resolution: NONE\n",
            "resolution NONE",
        ),
        (
            "  resolution: DNS\n",
            "  resolution: DNS\n  workloadSelector: {labels: {app: x}}\n",
            "spec.workloadSelector",
        ),
    ];
    for (from, to, expected) in cases {
        let error = error_of(&edited(from, to));
        assert!(
            error.contains(expected) && error.contains("ServiceEntry/") || error.contains(expected),
            "{expected:?} in {error}"
        );
    }
    // addresses on the HTTP stable name: routing stays by Host.
    parse(&edited(
        "  resolution: NONE\n",
        "  resolution: NONE\n  addresses: [198.18.0.10]\n",
    ))
    .unwrap();
    // subjectAltNames of the entry are checked when the rule names none.
    let policy = parse(
        &edited(
            "          subjectAltNames:\n            - hello-istio-v1.apps.cf.example\n",
            "",
        )
        .replacen(
            "  resolution: DNS\n",
            "  resolution: DNS\n  subjectAltNames: [router.cf.example]\n",
            1,
        ),
    )
    .unwrap();
    let v1 = cluster(&policy.gateway.clusters, &format!("outbound|443||{V1}"));
    let UpstreamTls::Simple {
        subject_alt_names,
        auto_san_validation,
        ..
    } = &v1.tls
    else {
        panic!("{v1:?}")
    };
    assert_eq!(subject_alt_names, &["router.cf.example"]);
    assert!(
        !auto_san_validation,
        "sni is set: no automatic SAN validation"
    );
}

#[test]
fn sni_without_subject_alt_names_checks_the_chain_only() {
    let policy = parse(&edited(
        "          subjectAltNames:\n            - hello-istio-v1.apps.cf.example\n",
        "",
    ))
    .unwrap();
    let v1 = cluster(&policy.gateway.clusters, &format!("outbound|443||{V1}"));
    assert!(matches!(
        &v1.tls,
        UpstreamTls::Simple { verify: true, subject_alt_names, auto_san_validation: false, .. }
            if subject_alt_names.is_empty()
    ));
}

#[test]
fn header_matches_in_order_with_the_default_route_last() {
    let policy = parse(&edited(
        "    - name: split-v1-v2\n",
        "    - name: canary\n      match:\n        - name: by-header\n          headers: {x-canary: {exact: \"yes\"}}\n        - headers: {user: {prefix: test-}}\n          uri: {regex: \"/v[0-9]+\"}\n      route:\n        - destination: {host: hello-istio-v2.apps.cf.example, port: {number: 443}}\n          headers: {request: {set: {host: hello-istio-v2.apps.cf.example}}}\n    - name: split-v1-v2\n",
    ))
    .unwrap();
    let host = policy.gateway.servers[0]
        .route_config
        .virtual_host("hello.external")
        .unwrap();
    let names: Vec<_> = host.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["canary.by-header", "canary", "split-v1-v2"]);
    assert_eq!(
        host.routes[0].matcher.headers,
        [HeaderMatch {
            name: "x-canary".into(),
            value: StringMatch::Exact("yes".into())
        }]
    );
    assert_eq!(
        host.routes[1].matcher.path,
        Some(PathMatch::Regex("/v[0-9]+".into()))
    );
    assert!(!host.routes[0].weighted);
    assert_eq!(
        host.routes[0].destinations[0]
            .headers
            .host_rewrite
            .as_deref(),
        Some(V2)
    );
    assert!(host.default_route().is_some());
    // The shares follow the default route.
    assert!((policy.version_shares()[&HelloVersion::V1] - 0.24).abs() < 1e-9);
}

#[test]
fn mirror_and_its_percentage() {
    let mirrored = |extra: &str| {
        parse(&edited(
            "    - name: split-v1-v2\n",
            &format!(
                "    - name: split-v1-v2\n      mirror: {{host: hello-istio-v2.apps.cf.example, port: {{number: 443}}}}\n{extra}"
            ),
        ))
    };
    let policy = mirrored("      mirrorPercentage: {value: 25}\n").unwrap();
    assert_eq!(
        policy.gateway_route().mirrors,
        [Mirror {
            cluster: format!("outbound|443||{V2}"),
            host: V2.into(),
            percent: 25.0
        }]
    );
    // No percentage: every request; an explicit 0: none (istiod's MirrorPercent).
    assert_eq!(
        mirrored("").unwrap().gateway_route().mirrors[0].percent,
        100.0
    );
    assert!(
        mirrored("      mirrorPercentage: {value: 0}\n")
            .unwrap()
            .gateway_route()
            .mirrors
            .is_empty()
    );
    let error = error_of(&edited(
        "    - name: split-v1-v2\n",
        "    - name: split-v1-v2\n      mirror: {host: elsewhere.example, port: {number: 80}}\n",
    ));
    assert!(error.contains("elsewhere.example"), "{error}");
}

#[test]
fn connection_pool_and_outlier_detection_become_circuit_breakers_and_ejection() {
    let policy = parse(&edited(
        "  trafficPolicy:\n    portLevelSettings:\n      - port:\n          number: 443\n        tls:\n          mode: SIMPLE\n          sni: hello-istio-v1.apps.cf.example\n",
        "  trafficPolicy:\n    portLevelSettings:\n      - port: {number: 443}\n        connectionPool:\n          tcp: {maxConnections: 1, connectTimeout: 250ms}\n          http: {http1MaxPendingRequests: 1, maxRequestsPerConnection: 1, http2MaxRequests: 3, maxRetries: 4, idleTimeout: 30s}\n        outlierDetection: {consecutive5xxErrors: 2, interval: 1s, baseEjectionTime: 30s, maxEjectionPercent: 100}\n        tls:\n          mode: SIMPLE\n          sni: hello-istio-v1.apps.cf.example\n",
    ))
    .unwrap();
    let v1 = cluster(&policy.gateway.clusters, &format!("outbound|443||{V1}"));
    assert_eq!(
        v1.circuit_breakers,
        CircuitBreakers {
            max_connections: 1,
            max_pending_requests: 1,
            max_requests: 3,
            max_retries: 4
        }
    );
    assert_eq!(v1.max_requests_per_connection, Some(1));
    assert_eq!(v1.idle_timeout, Some(Duration::from_secs(30)));
    assert_eq!(v1.connect_timeout, Duration::from_millis(250));
    assert_eq!(
        v1.outlier_detection,
        Some(OutlierDetection {
            consecutive_5xx: Some(2),
            consecutive_gateway_failure: None,
            interval: Some(Duration::from_secs(1)),
            base_ejection_time: Some(Duration::from_secs(30)),
            max_ejection_percent: Some(100),
            healthy_panic_threshold: 0.0,
        })
    );
    assert!(
        matches!(v1.tls, UpstreamTls::Simple { .. }),
        "port-level tls kept"
    );
    let error = error_of(&edited(
        "        tls:\n          mode: SIMPLE\n          sni: hello-istio-v1.apps.cf.example\n",
        "        connectionPool: {http: {h2UpgradePolicy: UPGRADE}}\n        tls:\n          mode: SIMPLE\n          sni: hello-istio-v1.apps.cf.example\n",
    ));
    assert!(
        error.contains("connectionPool.http.h2UpgradePolicy"),
        "{error}"
    );
}

#[test]
fn retries_follow_istiod() {
    let none = parse(&edited(MESH_RETRIES, "")).unwrap();
    assert_eq!(none.mesh_route().retries, Retries::istio_default());
    let off = parse(&edited("        attempts: 2\n", "        attempts: 0\n")).unwrap();
    assert_eq!(off.mesh_route().retries, Retries::Disabled);
    // Attempts alone keep istiod's default conditions (no 503).
    let attempts_only = parse(&edited(MESH_RETRIES, "      retries: {attempts: 4}\n")).unwrap();
    let Retries::Enabled {
        attempts,
        retry_on,
        retriable_status_codes,
        ..
    } = &attempts_only.mesh_route().retries
    else {
        panic!()
    };
    assert_eq!(*attempts, 4);
    assert_eq!(
        retry_on,
        &DEFAULT_RETRY_ON
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
    );
    assert!(retriable_status_codes.is_empty());
    // Codes alone get retriable-status-codes added; per-try timeout and conditions kept.
    let codes = parse(&edited(
        MESH_RETRIES,
        "      retries: {attempts: 3, perTryTimeout: 200ms, retryOn: \"gateway-error,503,504\", retryIgnorePreviousHosts: false}\n",
    ))
    .unwrap();
    assert_eq!(
        codes.mesh_route().retries,
        Retries::Enabled {
            attempts: 3,
            per_try_timeout: Some(Duration::from_millis(200)),
            retry_on: vec!["gateway-error".into(), "retriable-status-codes".into()],
            retriable_status_codes: vec![503, 504],
            previous_hosts: false,
            backoff: None,
        }
    );
}

#[test]
fn authorization_policies_are_placed_as_istiod_places_them() {
    let deny = "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: no-caller, namespace: istio-system}\nspec:\n  selector: {matchLabels: {istio: egressgateway}}\n  action: DENY\n  rules: [{from: [{source: {notPrincipals: [\"cluster.local/ns/egress-demo/*\"]}}]}]\n";
    let policy = parse(&format!("{}{deny}", manifest())).unwrap();
    assert_eq!(policy.gateway.authorization.deny.len(), 1);
    // An ALLOW policy without rules allows nothing.
    let policy = parse(
        &edited("  action: ALLOW\n  rules:", "  action: ALLOW\n  unused:")
            .replace("  unused:\n    - from:", "  x:\n    - from:"),
    );
    assert!(policy.is_err(), "unknown fields are refused");
    let empty = "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: nothing, namespace: istio-system}\nspec:\n  selector: {matchLabels: {istio: egressgateway}}\n";
    let without = manifest()
        .split("---\n")
        .filter(|doc| !doc.contains("kind: AuthorizationPolicy"))
        .collect::<Vec<_>>()
        .join("---\n");
    let policy = parse(&format!("{without}{empty}")).unwrap();
    assert_eq!(policy.gateway.authorization.allow, Some(Vec::new()));
    let policy = parse(&without).unwrap();
    assert_eq!(policy.gateway.authorization.allow, None);
    // A policy for the sidecars' inbound side is refused.
    let error = error_of(&edited(
        "  name: hello-external-egress\n  namespace: istio-system\n  labels:\n    demo: istio-external-services\nspec:\n  selector:\n    matchLabels:\n      istio: egressgateway",
        "  name: hello-external-egress\n  namespace: egress-demo\n  labels:\n    demo: istio-external-services\nspec:\n  selector:\n    matchLabels:\n      app: app-that-calls-externally",
    ));
    assert!(error.contains("inbound side"), "{error}");
}

#[test]
fn unsupported_constructs_are_errors_not_defaults() {
    let cases = [
        (
            edited(
                "    - name: to-egress-gateway\n",
                "    - name: to-egress-gateway\n      match: [{queryParams: {a: {exact: b}}}]\n",
            ),
            "match[0].queryParams",
        ),
        (
            edited(
                "      timeout: 3s\n",
                "      timeout: 3s\n      rewrite: {uri: /x}\n",
            ),
            "http[0].rewrite",
        ),
        (
            edited(
                "retryOn: connect-failure",
                "retryOn: sometimes,connect-failure",
            ),
            "\"sometimes\"",
        ),
        (edited("          weight: 30\n", ""), "weight is required"),
        (
            edited(
                "          mode: SIMPLE\n          sni: hello-istio-v2",
                "          mode: MUTUAL\n          sni: hello-istio-v2",
            ),
            "tls.mode MUTUAL",
        ),
        (edited("timeout: 3s", "timeout: 3"), "needs a unit"),
        (
            edited(
                "percentage:\n            value: 20",
                "percentage:\n            value: 120",
            ),
            "within 0..=100",
        ),
        (
            edited(
                "    - name: hello-external\n      trafficPolicy",
                "    - name: other\n      trafficPolicy",
            ),
            "subset hello-external",
        ),
        (
            edited("kind: Gateway", "kind: Sidecar"),
            "kind Sidecar is not supported",
        ),
        (
            edited(
                "destination:\n            host: hello-istio-v2.apps.cf.example",
                "destination:\n            host: hello-istio-v3.apps.cf.example",
            ),
            "hello-istio-v3.apps.cf.example, which no ServiceEntry visible in istio-system",
        ),
        (
            edited(
                "    - port:\n        number: 80\n        name: https-hello-external",
                "    - port:\n        number: 443\n        name: https-hello-external",
            ),
            "its servers listen on 443",
        ),
        (
            edited(
                "  name: hello-cf\n  namespace: istio-system\n",
                "  name: hello-cf\n",
            ),
            "metadata.namespace is required",
        ),
        (
            edited(MESH_FAULT, "        delay: {exponentialDelay: 1s}\n"),
            "fault.delay.exponentialDelay",
        ),
    ];
    for (text, expected) in cases {
        let error = error_of(&text);
        assert!(
            error.contains(expected),
            "expected {expected:?} in: {error}"
        );
    }
}

#[test]
fn a_third_cloud_foundry_host_has_no_hello_version() {
    let error = error_of(&edited(
        "    - hello-istio-v2.apps.cf.example\n  exportTo",
        "    - hello-istio-v2.apps.cf.example\n    - hello-istio.apps.cf.example\n  exportTo",
    ));
    assert!(
        error.contains("cannot tell which hello version serves hello-istio.apps.cf.example"),
        "{error}"
    );
}

#[test]
fn broken_yaml_names_the_document() {
    let error = error_of(&format!("{}\n---\nkind: [unclosed\n", manifest()));
    assert!(
        error.starts_with("istio.yml: document 10 is not valid YAML"),
        "{error}"
    );
    assert!(error.contains("line 216"), "{error}");
}

#[test]
fn version_of_a_hostname() {
    assert_eq!(hello_version_of(V1), Some(HelloVersion::V1));
    assert_eq!(
        hello_version_of("v2.apps.cf.example"),
        Some(HelloVersion::V2)
    );
    assert_eq!(hello_version_of("hello.v1.example"), None);
    assert_eq!(hello_version_of("hello-v1-v2.example"), None);
}

#[test]
fn gateway_servers_get_a_listener_each_and_share_no_port() {
    // k8s/istio.yml with k8s/patterns/mirroring.yml applied over it, as `apply` merges them.
    let merged = |pattern: &str| {
        let base = Manifest::parse(Path::new("istio.yml"), REPO_MANIFEST).unwrap();
        let mut store = crate::store::ResourceStore::new(base);
        store.apply(Manifest::parse(Path::new("mirroring.yml"), pattern)?);
        Policy::from_manifest(Path::new("mirroring.yml"), store.manifest())
    };
    let policy = merged(MIRRORING).unwrap();
    let ports: Vec<u16> = policy.gateway.servers.iter().map(|s| s.port).collect();
    assert_eq!(ports, [80, 443]);
    assert_eq!(policy.gateway_server().port, 80, "the mesh route's port");
    // The sidecar mirrors to the gateway's second port, over the same mTLS.
    let mirror = &policy.mesh_route().mirrors[0];
    assert_eq!(mirror.percent, 50.0);
    let copies = cluster(&policy.proxy_sidecar.clusters, &mirror.cluster);
    assert_eq!(copies.port, 443);
    assert!(matches!(&copies.tls, UpstreamTls::IstioMutual { sni, .. } if sni == "hello.external"));
    // On 443 the copies go to v2; the port-80 split keeps v1 only.
    let on_443 = &policy.gateway.servers[1].route_config.virtual_hosts[0].routes;
    assert_eq!(on_443[0].name, "copies-to-v2");
    assert!(
        policy.gateway.servers[0].route_config.virtual_hosts[0]
            .routes
            .iter()
            .all(|r| r.name != "copies-to-v2")
    );
    let same_port = MIRRORING.replacen(
        "        number: 443\n        name: https-hello-external-copies",
        "        number: 80\n        name: https-hello-external-copies",
        1,
    );
    assert_ne!(same_port, MIRRORING);
    let error = merged(&same_port).unwrap_err().to_string();
    assert!(error.contains("port 80 is already served"), "{error}");
}
