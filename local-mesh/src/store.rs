//! The set of Istio resources a running demo enforces, kept as the Kubernetes API server keeps
//! them: one per kind, namespace and name ([`ResourceId`], the policy reader's own identity).
//! Applying a file replaces each of its resources by that identity and adds the new ones, which
//! is what `kubectl apply` ends with when every change to these resources goes through it.

use crate::policy::manifest::{Manifest, ResourceId};

/// What applying did to one resource, in kubectl's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Created,
    Configured,
    Unchanged,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Created => "created",
            Change::Configured => "configured",
            Change::Unchanged => "unchanged",
        }
    }
}

/// The resources in the order they were first applied.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResourceStore {
    manifest: Manifest,
}

impl ResourceStore {
    /// A store holding the resources of `manifest`.
    pub fn new(manifest: Manifest) -> ResourceStore {
        ResourceStore { manifest }
    }

    /// Replaces or adds each resource of `incoming`; says what happened to each.
    pub fn apply(&mut self, incoming: Manifest) -> Vec<(ResourceId, Change)> {
        let resources = &mut self.manifest.resources;
        let mut changes = Vec::new();
        for resource in incoming.resources {
            let id = resource.id.clone();
            let change = match resources.iter_mut().find(|r| r.id == id) {
                Some(existing) if *existing == resource => Change::Unchanged,
                Some(existing) => {
                    *existing = resource;
                    Change::Configured
                }
                None => {
                    resources.push(resource);
                    Change::Created
                }
            };
            changes.push((id, change));
        }
        changes
    }

    /// Every resource, as the policy reader translates them.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn manifest(text: &str) -> Manifest {
        Manifest::parse(Path::new("f.yml"), text).unwrap()
    }

    const BASE: &str = "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: split, namespace: egress-demo}
spec: {hosts: [a]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: split, namespace: egress-demo}
spec: {host: a}
";

    #[test]
    fn applying_replaces_by_kind_namespace_and_name() {
        let mut store = ResourceStore::new(manifest(BASE));
        let incoming = manifest(
            "\
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: split, namespace: egress-demo}
spec: {hosts: [b]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: split, namespace: egress-demo}
spec: {host: a}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: split, namespace: other}
spec: {hosts: [c]}
",
        );
        let changes: Vec<_> = store
            .apply(incoming)
            .into_iter()
            .map(|(id, change)| format!("{id} {} {}", id.namespace, change.as_str()))
            .collect();
        assert_eq!(
            changes,
            [
                "VirtualService/split egress-demo configured",
                "DestinationRule/split egress-demo unchanged",
                "VirtualService/split other created",
            ]
        );
        let resources = &store.manifest().resources;
        assert_eq!(resources.len(), 3);
        assert_eq!(resources[0].id.namespace, "egress-demo");
        assert!(
            format!("{:?}", resources[0].spec).contains("\"b\""),
            "{:?}",
            resources[0]
        );
    }
}
