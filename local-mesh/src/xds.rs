//! Envoy's dynamic resources served from files, so a running Envoy changes its configuration
//! without a restart, as a sidecar does when istiod pushes.
//!
//! The generators in [`crate::bootstrap`] describe a whole Envoy as a static bootstrap. Here it
//! is split: the bootstrap Envoy starts with keeps node, admin and the rest, and takes its
//! listeners (LDS), clusters (CDS) and every HTTP route configuration (RDS) from files in one
//! directory per Envoy, which Envoy watches (`path_config_source` with `watched_directory`).
//! Each file is replaced by an atomic rename, so Envoy never reads half of one.
//!
//! Route configurations go through RDS rather than inline in the listener because a policy
//! change (weights, faults, timeouts, retries) is a route change: a new route configuration is
//! swapped in for the next request, while a changed listener would drain its connections.
//!
//! An update is written make-before-break, as Envoy's xDS protocol asks of a control plane,
//! each step acknowledged by Envoy (its subscriptions report the step's version) before the
//! next: clusters first (old and new ones together), then routes and listeners, then the
//! clusters no longer used are removed. No route ever names a cluster Envoy does not have yet,
//! so no call fails during the switch.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use tokio::time::Instant;

const LISTENER_TYPE: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
const CLUSTER_TYPE: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
const ROUTE_TYPE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
const HCM_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";

const LDS_FILE: &str = "lds.json";
const CDS_FILE: &str = "cds.json";

/// How long Envoy may take to acknowledge one step of an update.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(10);

/// One Envoy's resources, as served to it.
#[derive(Debug, Clone, Default, PartialEq)]
struct Resources {
    listeners: Vec<Value>,
    clusters: Vec<Value>,
    /// Route configurations by name.
    routes: BTreeMap<String, Value>,
}

/// The xDS files of one Envoy and what it has acknowledged.
#[derive(Debug)]
pub struct XdsFiles {
    /// The Envoy's component name, in messages.
    name: String,
    dir: PathBuf,
    /// The Envoy's own log, where it says why it rejected an update.
    log: PathBuf,
    admin: Option<SocketAddr>,
    /// Version of the last step written; every file written carries the version of its step.
    version: u64,
    /// What each file holds now (without its version), so unchanged files are not rewritten.
    written: BTreeMap<String, Value>,
    /// The resources Envoy runs with.
    current: Resources,
}

impl XdsFiles {
    /// The files of Envoy `name` live in `dir` (created if missing).
    pub fn new(name: &str, dir: &Path, log: &Path) -> anyhow::Result<XdsFiles> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(XdsFiles {
            name: name.to_owned(),
            dir: dir.to_owned(),
            log: log.to_owned(),
            admin: None,
            version: 0,
            written: BTreeMap::new(),
            current: Resources::default(),
        })
    }

    /// The directory Envoy watches.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes the resources of `full` (a bootstrap as the generators make it) and returns the
    /// bootstrap Envoy is to start with, which reads them from the files.
    pub fn start(&mut self, full: &Value) -> anyhow::Result<Value> {
        let resources = self.split(full)?;
        self.version += 1;
        let files = self.files(&resources, &resources.clusters);
        for (file, content) in files {
            self.write(&file, content)?;
        }
        self.current = resources;
        Ok(self.dynamic_bootstrap(full))
    }

    /// Where the Envoy's admin interface listens, once it runs: updates wait on it.
    pub fn set_admin(&mut self, admin: SocketAddr) {
        self.admin = Some(admin);
    }

    /// Where the Envoy's admin interface listens, once [`XdsFiles::set_admin`] was called.
    pub fn admin(&self) -> Option<SocketAddr> {
        self.admin
    }

    /// Brings the running Envoy to the resources of `full`; returns whether anything changed.
    /// On failure Envoy is brought back to what it ran before, as far as it takes it.
    pub async fn update(&mut self, full: &Value, http: &reqwest::Client) -> anyhow::Result<bool> {
        let next = self.split(full)?;
        if next == self.current {
            return Ok(false);
        }
        let previous = self.current.clone();
        match self.step_to(&next, http).await {
            Ok(()) => {
                self.current = next;
                Ok(true)
            }
            Err(error) => {
                if let Err(rollback) = self.step_to(&previous, http).await {
                    tracing::warn!(envoy = %self.name, error = %format!("{rollback:#}"), "cannot restore the previous configuration");
                }
                Err(error)
            }
        }
    }

    /// The three steps: clusters old and new, then routes and listeners, then clusters new only.
    async fn step_to(&mut self, next: &Resources, http: &reqwest::Client) -> anyhow::Result<()> {
        let mut both = next.clusters.clone();
        for cluster in &self.current.clusters {
            if !both.iter().any(|c| c["name"] == cluster["name"]) {
                both.push(cluster.clone());
            }
        }
        let all = self.files(next, &both);
        let clusters_first: Vec<_> = all.iter().filter(|(f, _)| f == CDS_FILE).cloned().collect();
        // Routes before listeners: a listener names its route configuration, which must exist.
        let mut routes_then_listeners: Vec<_> =
            all.into_iter().filter(|(f, _)| f != CDS_FILE).collect();
        routes_then_listeners.sort_by_key(|(file, _)| file == LDS_FILE);
        let clusters_last = self
            .files(next, &next.clusters)
            .into_iter()
            .filter(|(f, _)| f == CDS_FILE)
            .collect();
        for step in [clusters_first, routes_then_listeners, clusters_last] {
            self.write_step(step, http).await?;
        }
        Ok(())
    }

    /// Writes the files of one step that differ from what Envoy has and waits for its ack.
    async fn write_step(
        &mut self,
        files: Vec<(String, Value)>,
        http: &reqwest::Client,
    ) -> anyhow::Result<()> {
        let changed: Vec<(String, Value)> = files
            .into_iter()
            .filter(|(file, content)| self.written.get(file) != Some(content))
            .collect();
        if changed.is_empty() {
            return Ok(());
        }
        let admin = self
            .admin
            .with_context(|| format!("{} is not running", self.name))?;
        let refused_before = SubscriptionStats::read(http, admin).await?.refused;
        self.version += 1;
        let mut expected = Vec::new();
        for (file, content) in changed {
            expected.push(self.expectation(&file, &content));
            self.write(&file, content)?;
        }
        let deadline = Instant::now() + ACK_TIMEOUT;
        let mut refused_at = None;
        loop {
            let stats = SubscriptionStats::read(http, admin).await?;
            if expected.iter().all(|e| stats.has(e, self.version)) {
                return Ok(());
            }
            // Every rename makes Envoy read every file again, so a file refused before this step
            // (being replaced now) may count once more before the step's last rename: a refusal
            // is final only if the step is still not taken a moment later.
            if stats.refused > refused_before {
                let since = *refused_at.get_or_insert_with(Instant::now);
                if since.elapsed() >= REFUSAL_GRACE {
                    bail!(
                        "{} rejected the new configuration: {}",
                        self.name,
                        self.rejection_reason()
                    );
                }
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} did not take the new configuration within {}s (see {})",
                    self.name,
                    ACK_TIMEOUT.as_secs(),
                    self.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn expectation(&self, file: &str, content: &Value) -> Expectation {
        if file == CDS_FILE {
            Expectation::Clusters
        } else if file == LDS_FILE {
            Expectation::Listeners
        } else {
            Expectation::Route(content[0]["name"].as_str().unwrap_or_default().to_owned())
        }
    }

    /// Envoy's own reason, from the last line of its log that gives one.
    fn rejection_reason(&self) -> String {
        let tail = crate::supervisor::log_tail(&self.log, 50);
        tail.lines()
            .rev()
            .find_map(|line| {
                ["config update rejected: ", "config update failure: "]
                    .iter()
                    .find_map(|marker| line.split_once(marker))
                    // A parse error goes on with the file's text from `: {` on.
                    .map(|(_, reason)| reason.trim_end_matches(": {").to_owned())
            })
            .unwrap_or_else(|| format!("see {}", self.log.display()))
    }

    /// File name and content (the resource list) of every file for `resources`, with
    /// `clusters` as the cluster list.
    fn files(&self, resources: &Resources, clusters: &[Value]) -> Vec<(String, Value)> {
        let mut files = vec![
            (CDS_FILE.to_owned(), json!(clusters)),
            (LDS_FILE.to_owned(), json!(resources.listeners)),
        ];
        for (name, route) in &resources.routes {
            files.push((route_file(name), json!([route])));
        }
        files
    }

    /// Replaces `file` by an atomic rename: Envoy sees the old content or the new, never a part.
    fn write(&mut self, file: &str, resources: Value) -> anyhow::Result<()> {
        let type_url = if file == CDS_FILE {
            CLUSTER_TYPE
        } else if file == LDS_FILE {
            LISTENER_TYPE
        } else {
            ROUTE_TYPE
        };
        let typed: Vec<Value> = resources
            .as_array()
            .into_iter()
            .flatten()
            .map(|resource| {
                let mut resource = resource.clone();
                if let Some(object) = resource.as_object_mut() {
                    object.insert("@type".to_owned(), json!(type_url));
                }
                resource
            })
            .collect();
        let response = json!({"version_info": self.version.to_string(), "resources": typed});
        let text = serde_json::to_string_pretty(&response).context("cannot serialize xDS")?;
        let path = self.dir.join(file);
        let staging = self.dir.join(format!(".{file}.new"));
        std::fs::write(&staging, text)
            .with_context(|| format!("cannot write {}", staging.display()))?;
        std::fs::rename(&staging, &path)
            .with_context(|| format!("cannot replace {}", path.display()))?;
        self.written.insert(file.to_owned(), resources);
        Ok(())
    }

    /// Listeners with their route configurations moved to RDS, clusters, route configurations.
    fn split(&self, full: &Value) -> anyhow::Result<Resources> {
        let statics = &full["static_resources"];
        let mut resources = Resources {
            listeners: array(&statics["listeners"]),
            clusters: array(&statics["clusters"]),
            routes: BTreeMap::new(),
        };
        for listener in &mut resources.listeners {
            let listener_name = listener["name"].as_str().unwrap_or_default().to_owned();
            let mut chains: Vec<&mut Value> = Vec::new();
            for (key, value) in listener.as_object_mut().into_iter().flatten() {
                match key.as_str() {
                    "filter_chains" => chains.extend(value.as_array_mut().into_iter().flatten()),
                    "default_filter_chain" => chains.push(value),
                    _ => {}
                }
            }
            for chain in chains {
                for filter in chain["filters"].as_array_mut().into_iter().flatten() {
                    let Some(config) = filter.get_mut("typed_config") else {
                        continue;
                    };
                    if config["@type"] != HCM_TYPE {
                        continue;
                    }
                    let Some(route) = config
                        .as_object_mut()
                        .and_then(|c| c.remove("route_config"))
                    else {
                        continue;
                    };
                    let name = route["name"]
                        .as_str()
                        .with_context(|| {
                            format!(
                                "{}: listener {listener_name} has an unnamed route configuration",
                                self.name
                            )
                        })?
                        .to_owned();
                    if let Some(other) = resources.routes.get(&name)
                        && *other != route
                    {
                        bail!(
                            "{}: two different route configurations are named {name}",
                            self.name
                        );
                    }
                    config["rds"] = json!({
                        "route_config_name": name,
                        "config_source": self.config_source(&route_file(&name)),
                    });
                    resources.routes.insert(name, route);
                }
            }
        }
        Ok(resources)
    }

    /// What Envoy starts with: the generated bootstrap without its listeners and clusters, which
    /// come from the files.
    fn dynamic_bootstrap(&self, full: &Value) -> Value {
        let mut bootstrap = full.clone();
        if let Some(statics) = bootstrap["static_resources"].as_object_mut() {
            statics.remove("listeners");
            statics.remove("clusters");
            if statics.is_empty() {
                bootstrap
                    .as_object_mut()
                    .map(|b| b.remove("static_resources"));
            }
        }
        bootstrap["dynamic_resources"] = json!({
            "lds_config": self.config_source(LDS_FILE),
            "cds_config": self.config_source(CDS_FILE),
        });
        bootstrap
    }

    fn config_source(&self, file: &str) -> Value {
        json!({
            "resource_api_version": "V3",
            "path_config_source": {
                "path": self.dir.join(file),
                // A rename into the directory makes Envoy read the file again.
                "watched_directory": {"path": self.dir},
            },
        })
    }
}

/// A file of a step that Envoy is to take.
enum Expectation {
    Clusters,
    Listeners,
    Route(String),
}

/// How long a step whose files Envoy refused may still turn out taken (see `write_step`).
const REFUSAL_GRACE: Duration = Duration::from_millis(500);

/// What Envoy's subscriptions report: the version each last took (set whenever it reads its
/// file successfully, even when nothing in it changed), and how many reads it refused.
struct SubscriptionStats {
    /// Stat name (`listener_manager.lds`, `http.<prefix>.rds.<route>`) to version.
    versions: BTreeMap<String, String>,
    /// `update_rejected` plus `update_failure`, over every subscription.
    refused: u64,
}

impl SubscriptionStats {
    async fn read(http: &reqwest::Client, admin: SocketAddr) -> anyhow::Result<SubscriptionStats> {
        let text = admin_get(
            http,
            admin,
            "/stats?filter=(version_text|update_rejected|update_failure)$",
        )
        .await?;
        let mut stats = SubscriptionStats {
            versions: BTreeMap::new(),
            refused: 0,
        };
        for (name, value) in text.lines().filter_map(|line| line.split_once(": ")) {
            if let Some(subscription) = name.strip_suffix(".version_text") {
                let version = value.trim().trim_matches('"').to_owned();
                stats.versions.insert(subscription.to_owned(), version);
            } else if let Ok(count) = value.trim().parse::<u64>() {
                stats.refused += count;
            }
        }
        Ok(stats)
    }

    fn has(&self, expectation: &Expectation, version: u64) -> bool {
        let version = version.to_string();
        match expectation {
            Expectation::Clusters => self.versions.get("cluster_manager.cds") == Some(&version),
            Expectation::Listeners => self.versions.get("listener_manager.lds") == Some(&version),
            Expectation::Route(name) => {
                // Envoy writes `:` in stat names as `_`.
                let suffix = format!(".rds.{}", name.replace(':', "_"));
                self.versions
                    .iter()
                    .any(|(stat, v)| stat.ends_with(&suffix) && *v == version)
            }
        }
    }
}

/// `rds.<name>.json`, the name made safe for a file name.
fn route_file(name: &str) -> String {
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("rds.{safe}.json")
}

fn array(value: &Value) -> Vec<Value> {
    value.as_array().cloned().unwrap_or_default()
}

async fn admin_get(
    http: &reqwest::Client,
    admin: SocketAddr,
    path: &str,
) -> anyhow::Result<String> {
    let url = format!("http://{admin}{path}");
    http.get(&url)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .with_context(|| format!("GET {url}"))?
        .text()
        .await
        .with_context(|| format!("GET {url}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> Value {
        json!({
            "node": {"id": "sidecar"},
            "admin": {"address": {}},
            "static_resources": {
                "listeners": [{
                    "name": "l",
                    "filter_chains": [{"filters": [{
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": {"@type": HCM_TYPE, "route_config": {"name": "http.80", "virtual_hosts": []}},
                    }]}],
                }],
                "clusters": [{"name": "outbound|80||gw"}],
            },
        })
    }

    #[test]
    fn routes_move_to_rds_and_the_bootstrap_keeps_only_its_own_bits() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = XdsFiles::new("sidecar", dir.path(), &dir.path().join("log")).unwrap();
        let bootstrap = files.start(&full()).unwrap();
        assert!(bootstrap.get("static_resources").is_none(), "{bootstrap}");
        assert_eq!(bootstrap["node"]["id"], "sidecar");
        assert_eq!(
            bootstrap["dynamic_resources"]["lds_config"]["path_config_source"]["watched_directory"]
                ["path"],
            json!(dir.path())
        );
        let lds: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join(LDS_FILE)).unwrap())
                .unwrap();
        let hcm = &lds["resources"][0]["filter_chains"][0]["filters"][0]["typed_config"];
        assert!(hcm.get("route_config").is_none());
        assert_eq!(hcm["rds"]["route_config_name"], "http.80");
        assert_eq!(lds["resources"][0]["@type"], LISTENER_TYPE);
        let rds: Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("rds.http.80.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(rds["resources"][0]["name"], "http.80");
        assert_eq!(rds["version_info"], "1");
    }

    #[test]
    fn two_different_routes_with_one_name_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let files = XdsFiles::new("sidecar", dir.path(), &dir.path().join("log")).unwrap();
        let mut config = full();
        let mut second = config["static_resources"]["listeners"][0].clone();
        second["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]["virtual_hosts"] =
            json!([{"name": "x"}]);
        config["static_resources"]["listeners"]
            .as_array_mut()
            .unwrap()
            .push(second);
        let error = files.split(&config).unwrap_err().to_string();
        assert!(error.contains("named http.80"), "{error}");
    }

    #[test]
    fn route_file_names_are_safe() {
        assert_eq!(route_file("http.80"), "rds.http.80.json");
        assert_eq!(route_file("a/b|c"), "rds.a_b_c.json");
    }
}
