//! Clusters and their traffic policy from the DestinationRules, as istiod builds them
//! (`pilot/pkg/networking/core/cluster_traffic_policy.go`, `cluster_tls.go`): the rule is looked
//! up in the proxy's namespace, then the service's, then the root namespace, most specific host
//! first; a subset's policy overrides the rule's per component; port-level settings replace the
//! whole policy for their port; connection pools become circuit breakers.

use std::time::Duration;

use crate::policy::PolicyError;
use crate::policy::manifest::{
    ClientTls, ConnectionPool, DestinationRuleSpec, OutlierDetection as OutlierSpec, ResourceId,
    Spec, TrafficPolicy,
};
use crate::policy::model::{
    CircuitBreakers, Cluster, DEFAULT_CONNECT_TIMEOUT, OutlierDetection, UpstreamTls,
};

use super::Translator;
use super::service::{Service, Visibility};
use super::workloads::ROOT_NAMESPACE;

/// Istio's cluster naming: `outbound|<port>|<subset>|<host>`.
pub fn outbound_name(port: u16, subset: Option<&str>, host: &str) -> String {
    format!("outbound|{port}|{}|{host}", subset.unwrap_or(""))
}

/// The port and subset back from a cluster name made by [`outbound_name`].
pub fn port_and_subset(name: &str) -> (u16, Option<&str>) {
    let mut parts = name.split('|').skip(1);
    let port = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let subset = parts.next().filter(|s| !s.is_empty());
    (port, subset)
}

/// istiod's SNI for ISTIO_MUTUAL when the DestinationRule sets none: `outbound_.<port>_.<subset>_.<host>`.
fn istio_mtls_sni(port: u16, subset: Option<&str>, host: &str) -> String {
    format!("outbound_.{port}_.{}_.{host}", subset.unwrap_or(""))
}

/// The cluster a proxy in `namespace` uses for `host:port` (and `subset`).
pub fn cluster(
    translator: &Translator<'_>,
    namespace: &str,
    host: &str,
    port: u16,
    subset: Option<&str>,
    referrer: &str,
) -> Result<Cluster, PolicyError> {
    let name = outbound_name(port, subset, host);
    let service = translator.visible_service(namespace, host).ok_or_else(|| {
        translator.file_error(format!(
            "{referrer} routes to {host}, which no ServiceEntry visible in {namespace} declares (REGISTRY_ONLY: the proxy there does not know it)"
        ))
    })?;
    let service_port = service.port(port).ok_or_else(|| {
        translator.file_error(format!(
            "{referrer} routes to port {port} of {host}, which {} does not declare",
            service.source
        ))
    })?;
    let upstream = service.upstream;
    let upstream = match upstream {
        Some(upstream) => upstream,
        None if service.resolution == "STATIC" => {
            return Err(translator.file_error(format!(
                "{referrer} routes to {host}, which {} resolves STATIC without endpoints: every call would be 503 no healthy upstream; route it elsewhere (e.g. to the egress gateway)",
                service.source
            )));
        }
        None => {
            return Err(translator.file_error(format!(
                "{referrer} routes to {host} itself (resolution {} in {}), an address local-mesh cannot stand in for; route it to the egress gateway",
                service.resolution, service.source
            )));
        }
    };
    let rule = destination_rule(translator, namespace, service)?;
    let mut policy: Option<TrafficPolicy> = None;
    let mut rule_name = None;
    if let Some((id, rule)) = rule {
        crate::policy::reject_other(translator, id, "spec", &rule.other)?;
        rule_name = Some(id.to_string());
        policy = port_policy(
            translator,
            id,
            rule.traffic_policy.as_ref(),
            port,
            "trafficPolicy",
        )?;
        if let Some(subset_name) = subset {
            let Some((index, subset_spec)) = rule
                .subsets
                .iter()
                .enumerate()
                .find(|(_, s)| s.name == subset_name)
            else {
                return Err(translator.error(
                    id,
                    format!("{referrer} names subset {subset_name} of {host}, which this DestinationRule does not define (Envoy would answer 503: no cluster)"),
                ));
            };
            let field = format!("subsets[{index}]");
            crate::policy::reject_other(translator, id, &field, &subset_spec.other)?;
            if !subset_spec.labels.is_empty() && service.is_service_entry() {
                return Err(translator.error(
                    id,
                    format!("{field}.labels select endpoints of {host}, which has none local-mesh could label"),
                ));
            }
            let subset_policy = port_policy(
                translator,
                id,
                subset_spec.traffic_policy.as_ref(),
                port,
                &format!("{field}.trafficPolicy"),
            )?;
            policy = merge(policy, subset_policy);
        }
    } else if let Some(subset_name) = subset {
        return Err(translator.file_error(format!(
            "{referrer} names subset {subset_name} of {host}, but no DestinationRule visible in {namespace} defines it"
        )));
    }
    let policy = policy.unwrap_or_default();
    let field_owner = rule.map(|(id, _)| id);
    let mut cluster = Cluster {
        name: name.clone(),
        host: host.to_owned(),
        port,
        subset: subset.map(str::to_owned),
        upstream,
        http2: matches!(service_port.protocol.as_str(), "HTTP2" | "GRPC"),
        connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        circuit_breakers: CircuitBreakers::istio_default(),
        max_requests_per_connection: None,
        idle_timeout: None,
        outlier_detection: None,
        tls: UpstreamTls::Plain,
        destination_rule: rule_name,
    };
    if let Some(pool) = &policy.connection_pool {
        let id = field_owner.expect("a pool comes from a rule");
        connection_pool(translator, id, pool, &mut cluster)?;
    }
    if let Some(outlier) = &policy.outlier_detection {
        let id = field_owner.expect("outlier detection comes from a rule");
        cluster.outlier_detection = Some(outlier_detection(translator, id, outlier)?);
    }
    if let Some(tls) = &policy.tls {
        let id = field_owner.expect("tls comes from a rule");
        cluster.tls = upstream_tls(translator, id, tls, service, &cluster)?;
    }
    Ok(cluster)
}

/// The DestinationRule istiod applies for `service` to a proxy in `namespace`.
fn destination_rule<'m>(
    translator: &Translator<'m>,
    namespace: &str,
    service: &Service,
) -> Result<Option<(&'m ResourceId, &'m DestinationRuleSpec)>, PolicyError> {
    let rules: Vec<(&ResourceId, &DestinationRuleSpec)> = translator
        .manifest
        .resources
        .iter()
        .filter_map(|r| match &r.spec {
            Spec::DestinationRule(rule) => Some((&r.id, rule.as_ref())),
            _ => None,
        })
        .collect();
    for search in [namespace, service.namespace.as_str(), ROOT_NAMESPACE] {
        let mut candidates: Vec<(usize, &ResourceId, &DestinationRuleSpec)> = rules
            .iter()
            .filter(|(id, rule)| {
                id.namespace == search
                    && (id.namespace == namespace
                        || Visibility::of(rule.export_to.as_deref())
                            .visible_in(&id.namespace, namespace))
            })
            .filter_map(|(id, rule)| {
                host_specificity(&rule.host, &service.host).map(|s| (s, *id, *rule))
            })
            .collect();
        candidates.sort_by_key(|(specificity, _, _)| std::cmp::Reverse(*specificity));
        match candidates.as_slice() {
            [] => continue,
            [(_, id, rule)] => return Ok(Some((id, rule))),
            [(best, id, rule), (next, other, _), ..] => {
                if best == next {
                    return Err(translator.error(
                        other,
                        format!("{} is also configured by {id} in {search}; istiod would merge the two, local-mesh takes one DestinationRule per host", service.host),
                    ));
                }
                return Ok(Some((id, rule)));
            }
        }
    }
    Ok(None)
}

/// How specifically a DestinationRule `pattern` names `host`: exact beats the longest wildcard;
/// `None` when it does not apply. Short names are qualified as istiod does for Kubernetes hosts.
fn host_specificity(pattern: &str, host: &str) -> Option<usize> {
    if pattern == host {
        return Some(usize::MAX);
    }
    if pattern == "*" {
        return Some(0);
    }
    let suffix = pattern.strip_prefix('*')?;
    host.ends_with(suffix).then_some(suffix.len())
}

/// A traffic policy with its port-level setting for `port` applied: that setting replaces the
/// whole policy (istiod's `GetPortLevelTrafficPolicy`).
fn port_policy(
    translator: &Translator<'_>,
    id: &ResourceId,
    policy: Option<&TrafficPolicy>,
    port: u16,
    field: &str,
) -> Result<Option<TrafficPolicy>, PolicyError> {
    let Some(policy) = policy else {
        return Ok(None);
    };
    crate::policy::reject_other(translator, id, field, &policy.other)?;
    for (index, setting) in policy.port_level_settings.iter().enumerate() {
        crate::policy::reject_other(
            translator,
            id,
            &format!("{field}.portLevelSettings[{index}]"),
            &setting.other,
        )?;
    }
    match policy
        .port_level_settings
        .iter()
        .find(|s| s.port.number == port)
    {
        Some(setting) => Ok(Some(TrafficPolicy {
            tls: setting.tls.clone(),
            connection_pool: setting.connection_pool.clone(),
            outlier_detection: setting.outlier_detection.clone(),
            port_level_settings: Vec::new(),
            other: Default::default(),
        })),
        None => Ok(Some(TrafficPolicy {
            port_level_settings: Vec::new(),
            ..policy.clone()
        })),
    }
}

/// The subset's components override the rule's (istiod's `MergeTrafficPolicy`).
fn merge(rule: Option<TrafficPolicy>, subset: Option<TrafficPolicy>) -> Option<TrafficPolicy> {
    match (rule, subset) {
        (rule, None) => rule,
        (None, subset) => subset,
        (Some(rule), Some(subset)) => Some(TrafficPolicy {
            tls: subset.tls.or(rule.tls),
            connection_pool: subset.connection_pool.or(rule.connection_pool),
            outlier_detection: subset.outlier_detection.or(rule.outlier_detection),
            port_level_settings: Vec::new(),
            other: Default::default(),
        }),
    }
}

/// `connectionPool` → circuit breakers and HTTP protocol options (istiod's `applyConnectionPool`:
/// a value of 0 means unset).
fn connection_pool(
    translator: &Translator<'_>,
    id: &ResourceId,
    pool: &ConnectionPool,
    cluster: &mut Cluster,
) -> Result<(), PolicyError> {
    crate::policy::reject_other(translator, id, "connectionPool", &pool.other)?;
    let limit = |value: Option<i64>, field: &str| -> Result<Option<u32>, PolicyError> {
        match value {
            None | Some(0) => Ok(None),
            Some(v) => u32::try_from(v).map(Some).map_err(|_| {
                translator.error(id, format!("connectionPool.{field} {v} is not a count"))
            }),
        }
    };
    if let Some(http) = &pool.http {
        crate::policy::reject_other(translator, id, "connectionPool.http", &http.other)?;
        if let Some(v) = limit(http.http2_max_requests, "http.http2MaxRequests")? {
            cluster.circuit_breakers.max_requests = v;
        }
        if let Some(v) = limit(
            http.http1_max_pending_requests,
            "http.http1MaxPendingRequests",
        )? {
            cluster.circuit_breakers.max_pending_requests = v;
        }
        if let Some(v) = limit(http.max_retries, "http.maxRetries")? {
            cluster.circuit_breakers.max_retries = v;
        }
        cluster.max_requests_per_connection = limit(
            http.max_requests_per_connection,
            "http.maxRequestsPerConnection",
        )?;
        if let Some(value) = &http.idle_timeout {
            cluster.idle_timeout =
                Some(translator.duration(id, "connectionPool.http.idleTimeout", value)?);
        }
    }
    if let Some(tcp) = &pool.tcp {
        crate::policy::reject_other(translator, id, "connectionPool.tcp", &tcp.other)?;
        if let Some(v) = limit(tcp.max_connections, "tcp.maxConnections")? {
            cluster.circuit_breakers.max_connections = v;
        }
        if let Some(value) = &tcp.connect_timeout {
            cluster.connect_timeout =
                translator.duration(id, "connectionPool.tcp.connectTimeout", value)?;
        }
    }
    Ok(())
}

/// `outlierDetection` as istiod's `applyOutlierDetection` writes it.
fn outlier_detection(
    translator: &Translator<'_>,
    id: &ResourceId,
    outlier: &OutlierSpec,
) -> Result<OutlierDetection, PolicyError> {
    crate::policy::reject_other(translator, id, "outlierDetection", &outlier.other)?;
    let optional = |value: &Option<serde_norway::Value>,
                    field: &str|
     -> Result<Option<Duration>, PolicyError> {
        value
            .as_ref()
            .map(|v| translator.duration(id, &format!("outlierDetection.{field}"), v))
            .transpose()
    };
    let max_ejection_percent = match outlier.max_ejection_percent {
        None | Some(0) => None,
        Some(v @ 1..=100) => Some(v as u32),
        Some(v) => {
            return Err(translator.error(
                id,
                format!("outlierDetection.maxEjectionPercent {v} is not within 0..=100"),
            ));
        }
    };
    let min_health = outlier.min_health_percent.unwrap_or(0);
    if !(0..=100).contains(&min_health) {
        return Err(translator.error(
            id,
            format!("outlierDetection.minHealthPercent {min_health} is not within 0..=100"),
        ));
    }
    Ok(OutlierDetection {
        consecutive_5xx: outlier.consecutive_5xx_errors,
        consecutive_gateway_failure: outlier.consecutive_gateway_errors,
        interval: optional(&outlier.interval, "interval")?,
        base_ejection_time: optional(&outlier.base_ejection_time, "baseEjectionTime")?,
        max_ejection_percent,
        healthy_panic_threshold: min_health as f64,
    })
}

/// A cluster's TLS from the DestinationRule's `tls`.
fn upstream_tls(
    translator: &Translator<'_>,
    id: &ResourceId,
    tls: &ClientTls,
    service: &Service,
    cluster: &Cluster,
) -> Result<UpstreamTls, PolicyError> {
    // The trust anchors of a cluster; locally the router's certificate comes from the CA
    // generated at start, which the gateway trusts instead.
    crate::policy::reject_other_except(
        translator,
        id,
        "tls",
        &tls.other,
        &["caCertificates", "credentialName"],
    )?;
    let mode = tls.mode.as_deref().unwrap_or("DISABLE");
    match mode {
        "DISABLE" => Ok(UpstreamTls::Plain),
        "ISTIO_MUTUAL" => {
            if tls.insecure_skip_verify == Some(true) {
                return Err(translator.error(id, "tls.insecureSkipVerify with ISTIO_MUTUAL is not supported"));
            }
            let sni = tls.sni.clone().unwrap_or_else(|| {
                istio_mtls_sni(cluster.port, cluster.subset.as_deref(), &cluster.host)
            });
            let subject_alt_names = match &tls.subject_alt_names {
                Some(names) => names.clone(),
                None => service.subject_alt_names.clone(),
            };
            // istiod advertises its metadata-exchange protocol next to `istio` (and h2 for an
            // HTTP/2 cluster).
            let mut alpn = vec!["istio-peer-exchange".to_owned(), "istio".to_owned()];
            if cluster.http2 {
                alpn.push("h2".to_owned());
            }
            Ok(UpstreamTls::IstioMutual {
                sni,
                subject_alt_names,
                alpn,
            })
        }
        "SIMPLE" => {
            let verify = tls.insecure_skip_verify != Some(true);
            // SANs: the rule's, else (for a ServiceEntry host) the entry's `subjectAltNames`.
            let subject_alt_names = match &tls.subject_alt_names {
                Some(names) if !names.is_empty() => names.clone(),
                _ if service.is_service_entry() => service.subject_alt_names.clone(),
                _ => Vec::new(),
            };
            let auto_san_validation =
                verify && tls.sni.is_none() && tls.subject_alt_names.as_ref().is_none_or(Vec::is_empty);
            Ok(UpstreamTls::Simple {
                sni: tls.sni.clone(),
                verify,
                subject_alt_names,
                auto_san_validation,
                alpn: if cluster.http2 { vec!["h2".to_owned()] } else { Vec::new() },
            })
        }
        other => Err(translator.error(
            id,
            format!("tls.mode {other} is not supported (SIMPLE originates TLS, ISTIO_MUTUAL is the mesh's mTLS, DISABLE sends plain text)"),
        )),
    }
}
