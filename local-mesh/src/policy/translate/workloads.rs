//! The demo's workloads as k8s/ deploys them: namespace, ServiceAccount and labels of each pod
//! with a proxy, and the Kubernetes Services the mesh knows besides the manifest's
//! ServiceEntries. The values are those of k8s/*.yml and of Istio's egress gateway install; a
//! test reads k8s/ to keep them in step.

use std::collections::BTreeMap;

use crate::policy::model::{Identity, Upstream};

/// Istio's root namespace (where the egress gateway lives too).
pub const ROOT_NAMESPACE: &str = "istio-system";

/// A pod with an Envoy: its Deployment, namespace, ServiceAccount and labels.
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    pub name: &'static str,
    pub namespace: &'static str,
    pub service_account: &'static str,
    pub labels: &'static [(&'static str, &'static str)],
}

impl Workload {
    pub fn identity(&self) -> Identity {
        Identity::new(self.namespace, self.service_account)
    }
}

/// k8s/app-that-calls-externally.yml.
pub const PROXY: Workload = Workload {
    name: "app-that-calls-externally",
    namespace: "egress-demo",
    service_account: "app-that-calls-externally",
    labels: &[("app", "app-that-calls-externally")],
};

/// k8s/traffic.yml.
pub const CALLER: Workload = Workload {
    name: "traffic",
    namespace: "egress-demo",
    service_account: "traffic",
    labels: &[("app", "traffic")],
};

/// The egress gateway `istioctl install` deploys.
pub const EGRESS_GATEWAY: Workload = Workload {
    name: "istio-egressgateway",
    namespace: ROOT_NAMESPACE,
    service_account: "istio-egressgateway-service-account",
    labels: &[("app", "istio-egressgateway"), ("istio", "egressgateway")],
};

/// A Kubernetes Service the mesh knows from the API server, not from the manifest.
#[derive(Debug, Clone, Copy)]
pub struct KubernetesService {
    pub name: &'static str,
    pub namespace: &'static str,
    /// `(number, name, protocol)`; istiod takes the protocol from the port's name.
    pub ports: &'static [(u16, &'static str, &'static str)],
    pub service_account: &'static str,
    pub upstream: Upstream,
}

impl KubernetesService {
    pub fn host(&self) -> String {
        format!("{}.{}.svc.cluster.local", self.name, self.namespace)
    }
}

pub const KUBERNETES_SERVICES: &[KubernetesService] = &[
    // k8s/app-that-calls-externally.yml: port 80 -> 8080 of the proxy.
    KubernetesService {
        name: "service-that-calls-externally",
        namespace: PROXY.namespace,
        ports: &[(80, "http", "HTTP")],
        service_account: PROXY.service_account,
        upstream: Upstream::Proxy,
    },
    // Istio's install: 80 (named http2) -> 8080 and 443 -> 8443.
    KubernetesService {
        name: "istio-egressgateway",
        namespace: ROOT_NAMESPACE,
        ports: &[(80, "http2", "HTTP2"), (443, "https", "HTTPS")],
        service_account: EGRESS_GATEWAY.service_account,
        upstream: Upstream::EgressGateway,
    },
];

/// Whether a `matchLabels`-style selector selects `workload`; an empty one selects nothing here
/// (callers decide what an absent selector means).
pub fn selects(selector: &BTreeMap<String, String>, workload: &Workload) -> bool {
    !selector.is_empty()
        && selector
            .iter()
            .all(|(key, value)| workload.labels.iter().any(|(k, v)| k == key && v == value))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The identities above are those k8s/ deploys: each Deployment's namespace and
    /// serviceAccountName.
    #[test]
    fn workloads_match_the_k8s_manifests() {
        let k8s = crate::repo_root().join("k8s");
        for workload in [PROXY, CALLER] {
            let text = std::fs::read_to_string(k8s.join(format!("{}.yml", workload.name))).unwrap();
            let mut found = false;
            for document in serde_norway::Deserializer::from_str(&text) {
                let value =
                    <serde_norway::Value as serde::Deserialize>::deserialize(document).unwrap();
                if value["kind"].as_str() != Some("Deployment") {
                    continue;
                }
                found = true;
                assert_eq!(
                    value["metadata"]["namespace"].as_str(),
                    Some(workload.namespace)
                );
                let pod = &value["spec"]["template"];
                assert_eq!(
                    pod["spec"]["serviceAccountName"].as_str(),
                    Some(workload.service_account),
                    "{}",
                    workload.name
                );
                for (key, label) in workload.labels {
                    assert_eq!(pod["metadata"]["labels"][*key].as_str(), Some(*label));
                }
            }
            assert!(found, "no Deployment in k8s/{}.yml", workload.name);
        }
    }
}
