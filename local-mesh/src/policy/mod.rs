//! Reads the traffic policy from the Istio manifest (k8s/istio.yml), the single source of truth
//! for both the cluster and the local stand-in.
//!
//! - [`manifest`]: the resources as written (serde types, multi-document YAML, identity);
//! - [`translate`]: validation and translation as istiod does it, for the demo's proxies;
//! - [`model`]: what the Envoys enforce.
//!
//! Anything that would change what the mesh does and that the local Envoys cannot reproduce is an
//! error naming the resource and the field, so the local demo never silently behaves differently
//! from the cluster.

pub mod manifest;
pub mod model;
pub mod translate;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_norway::Value;

pub use model::*;
pub use translate::hello_version_of;

use manifest::{Manifest, Other, ResourceId};
use translate::Translator;

/// What went wrong reading the policy; each message names the file and the resource.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read policy {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: document {index} is not valid YAML: {source}")]
    Yaml {
        path: PathBuf,
        index: usize,
        source: serde_norway::Error,
    },
    #[error("{path}: {resource}: {message}")]
    Resource {
        path: PathBuf,
        resource: String,
        message: String,
    },
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
}

impl Policy {
    /// Reads and checks the manifest at `path`.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.to_owned(),
            source,
        })?;
        Policy::parse(path, &text)
    }

    /// Parses manifest text (any number of documents) into the whole validated model; `path` is
    /// only used in messages.
    pub fn parse(path: &Path, text: &str) -> Result<Policy, PolicyError> {
        let manifest = Manifest::parse(path, text)?;
        Policy::from_manifest(path, &manifest)
    }

    /// Translates resources already read (e.g. a running set with applied resources merged in by
    /// [`manifest::ResourceId`]); `path` is only used in messages.
    pub fn from_manifest(path: &Path, manifest: &Manifest) -> Result<Policy, PolicyError> {
        translate::policy(path, manifest)
    }
}

/// Fails on the first field the local stand-in does not interpret.
pub(crate) fn reject_other(
    translator: &Translator<'_>,
    resource: &ResourceId,
    field: &str,
    other: &Other,
) -> Result<(), PolicyError> {
    reject_other_except(translator, resource, field, other, &[])
}

/// Like [`reject_other`], accepting `harmless` fields that change nothing locally.
pub(crate) fn reject_other_except(
    translator: &Translator<'_>,
    resource: &ResourceId,
    field: &str,
    other: &Other,
    harmless: &[&str],
) -> Result<(), PolicyError> {
    match other.keys().find(|key| !harmless.contains(&key.as_str())) {
        None => Ok(()),
        Some(key) => Err(translator.error(
            resource,
            format!("{field}.{key} is not supported by local-mesh"),
        )),
    }
}

/// Istio durations carry a unit (`3s`, `250ms`, `1m`); a bare number is an error there, so here too.
pub(crate) fn istio_duration(value: &Value) -> Result<Duration, String> {
    let text = match value {
        Value::String(text) => text.clone(),
        Value::Number(number) => number.to_string(),
        _ => return Err("expected a duration such as 3s".to_owned()),
    };
    if !text.trim_end().ends_with(|c: char| c.is_ascii_alphabetic()) {
        return Err(format!("'{text}' needs a unit (e.g. 3s, 250ms)"));
    }
    demo_common::parse_duration(&text).map_err(|error| error.to_string())
}

#[cfg(test)]
mod tests;
