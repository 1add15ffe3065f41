//! The set of Istio resources a running demo enforces, kept as the Kubernetes API server keeps
//! them: one per API group, kind, namespace and name. Applying a file replaces each of its
//! resources by that key and adds the new ones, which is what `kubectl apply` ends with when
//! every change to these resources goes through it. A resource without a namespace goes to
//! `default`, the namespace kubectl uses when neither the file nor the context names one.

use std::fmt;

use serde::Deserialize as _;
use serde_yaml::Value;

/// The namespace of a resource that names none, as with kubectl's default context.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Identifies a resource: API group (`networking.istio.io`), kind, namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ResourceKey {
    pub group: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for ResourceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

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

/// One resource as written, with its namespace filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    pub key: ResourceKey,
    pub document: Value,
}

/// The resources in the order they were first applied.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResourceStore {
    resources: Vec<Resource>,
}

impl ResourceStore {
    /// The resources of a file; `source` names it in errors, which are one line each.
    pub fn parse(source: &str, text: &str) -> Result<Vec<Resource>, String> {
        let mut resources: Vec<Resource> = Vec::new();
        for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
            let position = format!("{source}: document {}", index + 1);
            let value = Value::deserialize(document)
                .map_err(|error| format!("{position} is not valid YAML: {}", one_line(&error)))?;
            if value.is_null() {
                continue; // comments only
            }
            let resource = resource(&position, value)?;
            if let Some(earlier) = resources.iter().find(|r| r.key == resource.key) {
                return Err(format!(
                    "{position}: {} appears twice in the file",
                    earlier.key
                ));
            }
            resources.push(resource);
        }
        if resources.is_empty() {
            return Err(format!("{source}: no resources in the file"));
        }
        Ok(resources)
    }

    /// A store holding `resources`.
    pub fn new(resources: Vec<Resource>) -> ResourceStore {
        let mut store = ResourceStore::default();
        store.apply(resources);
        store
    }

    /// Replaces or adds each resource; says what happened to each.
    pub fn apply(&mut self, resources: Vec<Resource>) -> Vec<(ResourceKey, Change)> {
        let mut changes = Vec::new();
        for resource in resources {
            let key = resource.key.clone();
            let change = match self.resources.iter_mut().find(|r| r.key == key) {
                Some(existing) if existing.document == resource.document => Change::Unchanged,
                Some(existing) => {
                    *existing = resource;
                    Change::Configured
                }
                None => {
                    self.resources.push(resource);
                    Change::Created
                }
            };
            changes.push((key, change));
        }
        changes
    }

    /// Every resource as one multi-document YAML manifest, as the policy reader reads files.
    pub fn to_yaml(&self) -> String {
        self.resources
            .iter()
            .map(|resource| serde_yaml::to_string(&resource.document).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("---\n")
    }

    pub fn keys(&self) -> impl Iterator<Item = &ResourceKey> {
        self.resources.iter().map(|resource| &resource.key)
    }
}

fn resource(position: &str, mut document: Value) -> Result<Resource, String> {
    let text = |value: &Value, field: &str| -> Result<String, String> {
        match value.get(field) {
            Some(Value::String(text)) if !text.is_empty() => Ok(text.clone()),
            Some(_) => Err(format!("{position}: {field} must be a non-empty string")),
            None => Err(format!("{position}: {field} is missing")),
        }
    };
    if !document.is_mapping() {
        return Err(format!("{position}: a resource must be a mapping"));
    }
    let api_version = text(&document, "apiVersion")?;
    let kind = text(&document, "kind")?;
    let Some(metadata) = document.get_mut("metadata") else {
        return Err(format!("{position}: {kind}: metadata is missing"));
    };
    let Some(metadata) = metadata.as_mapping_mut() else {
        return Err(format!("{position}: {kind}: metadata must be a mapping"));
    };
    let name = match metadata.get("name") {
        Some(Value::String(name)) if !name.is_empty() => name.clone(),
        _ => return Err(format!("{position}: {kind}: metadata.name is missing")),
    };
    let namespace = match metadata.get("namespace") {
        None | Some(Value::Null) => {
            metadata.insert("namespace".into(), DEFAULT_NAMESPACE.into());
            DEFAULT_NAMESPACE.to_owned()
        }
        Some(Value::String(namespace)) if !namespace.is_empty() => namespace.clone(),
        Some(_) => {
            return Err(format!(
                "{position}: {kind}/{name}: metadata.namespace must be a non-empty string"
            ));
        }
    };
    // `networking.istio.io/v1` and `/v1beta1` are one resource served at two versions.
    let group = api_version
        .rsplit_once('/')
        .map_or("", |(group, _)| group)
        .to_owned();
    Ok(Resource {
        key: ResourceKey {
            group,
            kind,
            namespace,
            name,
        },
        document,
    })
}

fn one_line(error: &serde_yaml::Error) -> String {
    error
        .to_string()
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn applying_replaces_by_group_kind_namespace_and_name() {
        let mut store = ResourceStore::new(ResourceStore::parse("base", BASE).unwrap());
        let incoming = ResourceStore::parse(
            "change",
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
        )
        .unwrap();
        let changes: Vec<_> = store
            .apply(incoming)
            .into_iter()
            .map(|(key, change)| format!("{key} {}", change.as_str()))
            .collect();
        assert_eq!(
            changes,
            [
                "VirtualService egress-demo/split configured",
                "DestinationRule egress-demo/split unchanged",
                "VirtualService other/split created",
            ]
        );
        assert_eq!(store.keys().count(), 3);
        let yaml = store.to_yaml();
        assert!(yaml.contains("hosts:\n  - b"), "{yaml}");
    }

    #[test]
    fn a_resource_without_namespace_goes_to_default() {
        let resources = ResourceStore::parse(
            "f.yml",
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: g}\nspec: {}\n",
        )
        .unwrap();
        assert_eq!(resources[0].key.namespace, DEFAULT_NAMESPACE);
        assert_eq!(resources[0].document["metadata"]["namespace"], "default");
    }

    #[test]
    fn malformed_documents_are_one_line_errors_naming_the_document() {
        for (text, expected) in [
            ("kind: [\n", "f.yml: document 1 is not valid YAML"),
            (
                "apiVersion: v1\nkind: X\n",
                "f.yml: document 1: X: metadata is missing",
            ),
            (
                "apiVersion: v1\nkind: X\nmetadata: {namespace: n}\n",
                "metadata.name is missing",
            ),
            (
                "apiVersion: v1\nkind: X\nmetadata: {name: b}\n---\nkind: X\nmetadata: {name: a}\n",
                "document 2: apiVersion is missing",
            ),
            ("- a\n", "a resource must be a mapping"),
            ("# nothing\n", "f.yml: no resources in the file"),
            (
                "apiVersion: v1\nkind: X\nmetadata: {name: a}\n---\napiVersion: v1\nkind: X\nmetadata: {name: a}\n",
                "X default/a appears twice",
            ),
        ] {
            let error = ResourceStore::parse("f.yml", text).unwrap_err();
            assert!(error.contains(expected), "{text:?}: {error}");
            assert!(!error.contains('\n'), "{error}");
        }
    }
}
