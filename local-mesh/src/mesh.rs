//! Starting the whole flow on loopback, each component after the one it talks to is ready:
//!
//! ```text
//! traffic --http_proxy--> caller-sidecar (Envoy) -> app-that-calls-externally
//!         --http_proxy--> sidecar (Envoy) --mTLS--> egress gateway (Envoy)
//!         --TLS--> CF router (Envoy) -> hello-cf v1 | v2
//! ```
//!
//! Every Envoy takes its listeners, clusters and routes from xDS files ([`crate::xds`]), so
//! [`MeshControl`] changes the policy, and where an app instance listens, without a restart.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use serde_json::Value;
use tokio::sync::{Mutex, mpsc};
use tokio::time::Instant;

use crate::bootstrap::{
    self, GatewaySpec, MeshCertificate, RouterRoute, RouterSpec, SidecarSpec, Upstreams,
};
use crate::certs::{self, Certificates};
use crate::envoy;
use crate::policy::{HelloVersion, Identity, Policy};
use crate::programs::Programs;
use crate::supervisor::{self, Event, ProcessSpec, Supervisor};
use crate::xds::XdsFiles;

pub const CF_ROUTER: &str = "cf-router";
pub const EGRESS_GATEWAY: &str = "egress-gateway";
pub const SIDECAR: &str = "sidecar";
pub const CALLER_SIDECAR: &str = "caller-sidecar";
pub const PROXY: &str = "app-that-calls-externally";
pub const CALLER: &str = "traffic";

/// How long one component may take to become ready (Envoy on a busy two-core machine included).
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The proxy's own upstream timeout, as k8s/ sets it: above the mesh's route timeout, so the
/// mesh's 504 is what the caller sees.
pub const PROXY_UPSTREAM_TIMEOUT: &str = "4s";
/// The caller's timeout, above both.
pub const CALLER_TIMEOUT: &str = "10s";

/// The Kubernetes Service in front of the proxy, as the caller names it (k8s/traffic.yml).
pub const PROXY_SERVICE: &str = "service-that-calls-externally";

/// The variables local-mesh starts a hello app with to wire it in (where it listens, which
/// version it is, how it logs the address that is read back): `set-env` leaves them alone.
pub const HELLO_WIRING: [&str; 5] = [
    "PORT",
    "BIND_ADDRESS",
    "HELLO_VERSION",
    "DRAIN_TIMEOUT",
    "LOG_FORMAT",
];

/// The name of the hello-cf component of one version.
pub fn hello_component(version: HelloVersion) -> String {
    format!("hello-{}", version.as_str())
}

/// Everything [`Mesh::start`] needs.
#[derive(Debug, Clone)]
pub struct MeshOptions {
    pub policy: Policy,
    pub envoy: PathBuf,
    pub programs: Programs,
    /// Certificates, Envoy configs and every component's log go here.
    pub run_dir: PathBuf,
    /// `None` starts the mesh without a caller (tests drive it themselves).
    pub caller: Option<CallerOptions>,
    pub envoy_log_level: String,
}

/// What the caller is told.
#[derive(Debug, Clone)]
pub struct CallerOptions {
    /// `None`: unbounded.
    pub count: Option<u64>,
    pub interval: Duration,
    /// As the caller reads `SUMMARY_EVERY`: `off`, `100` (calls) or `30s`.
    pub summary_every: traffic::config::SummaryEvery,
}

/// Where each component listens.
#[derive(Debug, Clone)]
pub struct Addresses {
    pub hello: BTreeMap<HelloVersion, SocketAddr>,
    pub cf_router: SocketAddr,
    /// The gateway's listener for the server the proxy's calls go to.
    pub egress_gateway: SocketAddr,
    /// Its listener for each server, by port, as started (`apply` may add or remove servers:
    /// [`MeshControl::egress_gateway_ports`] has the current ones).
    pub egress_gateway_ports: BTreeMap<u16, SocketAddr>,
    pub sidecar: SocketAddr,
    pub caller_sidecar: SocketAddr,
    pub proxy: SocketAddr,
    pub proxy_admin: SocketAddr,
}

/// What the running mesh reports.
#[derive(Debug)]
pub enum MeshEvent {
    /// A line the caller printed.
    CallerLine(String),
    /// The caller made its `COUNT` calls and exited 0.
    CallerFinished,
    /// A component exited on its own.
    ComponentDied {
        name: String,
        status: ExitStatus,
        log: PathBuf,
        log_tail: String,
    },
}

/// The running components.
pub struct Mesh {
    supervisor: Supervisor,
    events: mpsc::UnboundedReceiver<Event>,
    addresses: Addresses,
    certificates: Certificates,
    run_dir: PathBuf,
    http: reqwest::Client,
    control: MeshControl,
}

/// One row of the table of components shown at start.
#[derive(Debug, Clone)]
pub struct ComponentInfo {
    pub name: String,
    pub address: Option<SocketAddr>,
    pub log: PathBuf,
    pub stands_for: &'static str,
}

impl Mesh {
    /// Starts every component; on failure, stops what was started and says which one failed.
    pub async fn start(options: MeshOptions) -> anyhow::Result<Mesh> {
        let mesh = Mesh::start_until(options, std::future::pending()).await?;
        mesh.context("start-up was interrupted")
    }

    /// Like [`Mesh::start`], but gives up when `interrupt` resolves first: then what was started
    /// is stopped and the result is `None`.
    pub async fn start_until(
        options: MeshOptions,
        interrupt: impl Future<Output = ()>,
    ) -> anyhow::Result<Option<Mesh>> {
        std::fs::create_dir_all(&options.run_dir)
            .with_context(|| format!("cannot create {}", options.run_dir.display()))?;
        let hosts: Vec<String> = options
            .policy
            .cf_hosts
            .iter()
            .map(|cf| cf.host.clone())
            .collect();
        let policy = &options.policy;
        let identities = [
            policy.proxy_sidecar.identity.clone(),
            policy.caller_sidecar.identity.clone(),
            policy.gateway.identity.clone(),
        ];
        let certificates = certs::generate(&options.run_dir.join("certs"), &hosts, &identities)?;
        let (supervisor, events) = Supervisor::new();
        demo_common::tls::install_crypto_provider();
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(2))
            .build()
            .context("cannot build an HTTP client")?;
        let mut starter = Starter {
            options: &options,
            supervisor,
            events,
            control: Control {
                policy: options.policy.clone(),
                hello: BTreeMap::new(),
                upstreams: Upstreams::default(),
                caller_sidecar: None,
                certificates: certificates.clone(),
                run_dir: options.run_dir.clone(),
                envoys: BTreeMap::new(),
                http: http.clone(),
            },
        };
        let started = tokio::select! {
            started = starter.start_all() => Some(started),
            () = interrupt => None,
        };
        match started {
            Some(Ok(addresses)) => Ok(Some(Mesh {
                supervisor: starter.supervisor,
                events: starter.events,
                addresses,
                certificates,
                run_dir: options.run_dir.clone(),
                http,
                control: MeshControl {
                    inner: Arc::new(Mutex::new(starter.control)),
                },
            })),
            Some(Err(error)) => {
                starter.supervisor.stop_all().await;
                Err(error)
            }
            None => {
                starter.supervisor.stop_all().await;
                Ok(None)
            }
        }
    }

    pub fn addresses(&self) -> &Addresses {
        &self.addresses
    }

    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// Changes the running Envoys' configuration; clones may be used from other tasks.
    pub fn control(&self) -> MeshControl {
        self.control.clone()
    }

    /// The CA the egress gateway trusts for the Cloud Foundry routes, and the mesh's root.
    pub fn ca_cert(&self) -> &Path {
        &self.certificates.ca_cert
    }

    /// The certificates generated at start (the mesh's workloads' and the router's).
    pub fn certificates(&self) -> &Certificates {
        &self.certificates
    }

    /// The access log of one Envoy component (JSON lines).
    pub fn access_log(&self, envoy_component: &str) -> PathBuf {
        self.run_dir.join(format!("{envoy_component}.access.log"))
    }

    /// The components in start order with their addresses and logs.
    pub fn components(&self) -> Vec<ComponentInfo> {
        let a = &self.addresses;
        let mut rows: Vec<(String, Option<SocketAddr>, &'static str)> = a
            .hello
            .iter()
            .map(|(version, address)| {
                (
                    hello_component(*version),
                    Some(*address),
                    "an app instance on Cloud Foundry",
                )
            })
            .collect();
        rows.push((
            CF_ROUTER.into(),
            Some(a.cf_router),
            "the Cloud Foundry router (gorouter, HTTPS 443)",
        ));
        rows.push((
            EGRESS_GATEWAY.into(),
            Some(a.egress_gateway),
            "istio-egressgateway in istio-system",
        ));
        rows.push((
            SIDECAR.into(),
            Some(a.sidecar),
            "the istio-proxy sidecar of the proxy pod",
        ));
        rows.push((
            CALLER_SIDECAR.into(),
            Some(a.caller_sidecar),
            "the istio-proxy sidecar of the caller pod",
        ));
        rows.push((
            PROXY.into(),
            Some(a.proxy),
            "service-that-calls-externally (the proxy)",
        ));
        if self.supervisor.log(CALLER).is_some() {
            rows.push((CALLER.into(), None, "deploy/traffic (the caller)"));
        }
        rows.into_iter()
            .filter_map(|(name, address, stands_for)| {
                let log = self.supervisor.log(&name)?.to_owned();
                Some(ComponentInfo {
                    name,
                    address,
                    log,
                    stands_for,
                })
            })
            .collect()
    }

    /// The next thing that happened; `None` when nothing more can happen.
    pub async fn next_event(&mut self) -> Option<MeshEvent> {
        let event = loop {
            match self.events.recv().await? {
                // An app that refused a new environment was started again with its previous
                // one ([`Mesh::set_hello_env`]): its exit is history, not a failure.
                Event::Exited { name, .. }
                    if self.supervisor.spec(&name).is_some()
                        && self.supervisor.exit_status(&name).is_none() =>
                {
                    continue;
                }
                event => break event,
            }
        };
        Some(match event {
            Event::Line { line, .. } => MeshEvent::CallerLine(line),
            Event::Exited { name, status, .. } if name == CALLER && status.success() => {
                MeshEvent::CallerFinished
            }
            Event::Exited { name, status, log } => MeshEvent::ComponentDied {
                log_tail: supervisor::log_tail(&log, 20),
                name,
                status,
                log,
            },
        })
    }

    /// Stops one component (e.g. `hello-v2`), as `cf stop` would; the rest keeps running.
    pub async fn stop_component(&mut self, name: &str) -> anyhow::Result<()> {
        self.supervisor.stop(name).await
    }

    /// Starts a stopped hello server again, as `cf start` would: on a new port, which the router
    /// learns as gorouter learns a new instance's address; then waits until it serves.
    pub async fn restart_hello(&mut self, version: HelloVersion) -> anyhow::Result<()> {
        let name = hello_component(version);
        let spec = self
            .supervisor
            .spec(&name)
            .with_context(|| format!("no {name} in this mesh"))?
            .clone();
        self.start_hello_with(version, spec).await
    }

    /// Sets (`Some`) or unsets (`None`) environment variables of a hello app and restarts it,
    /// as `cf set-env` (or `cf unset-env`) and `cf restart` do on Cloud Foundry: the new process
    /// listens on a port the OS chooses, which the router's cluster learns through CDS, as
    /// gorouter learns a new instance's address. If the app does not start with the new
    /// environment (a bad value: hello-cf exits 2 naming the variable), it is started again with
    /// the one it had and the error says why. Returns the app's environment now.
    pub async fn set_hello_env(
        &mut self,
        version: HelloVersion,
        changes: &[(String, Option<String>)],
    ) -> anyhow::Result<Vec<(String, String)>> {
        let name = hello_component(version);
        if let Some((key, _)) = changes
            .iter()
            .find(|(key, _)| HELLO_WIRING.contains(&key.as_str()))
        {
            bail!(
                "{key} is how local-mesh wires {name} into the demo; set hello-cf's knobs \
                 (FAIL_PERCENT, FAIL_STATUS, DELAY) or other variables"
            );
        }
        let previous = self
            .supervisor
            .spec(&name)
            .with_context(|| format!("no {name} in this mesh"))?
            .clone();
        let mut next = previous.clone();
        for (key, value) in changes {
            next.env.retain(|(k, _)| k != key);
            if let Some(value) = value {
                next.env.push((key.clone(), value.clone()));
            }
        }
        self.supervisor.stop(&name).await?;
        let log_offset = file_len(&next.log);
        match self.start_hello_with(version, next.clone()).await {
            Ok(()) => Ok(next.env),
            Err(error) => {
                // The app's own last word (hello-cf names the variable it refuses), if it said
                // one, else why waiting for it failed.
                let reason = std::fs::read(&next.log)
                    .ok()
                    .and_then(|bytes| {
                        let start = usize::try_from(log_offset).ok()?.min(bytes.len());
                        let text = String::from_utf8_lossy(&bytes[start..]).into_owned();
                        text.lines()
                            .rev()
                            .find(|line| !line.trim().is_empty())
                            .map(str::to_owned)
                    })
                    .unwrap_or_else(|| format!("{error:#}"));
                let _ = self.supervisor.stop(&name).await;
                self.start_hello_with(version, previous)
                    .await
                    .with_context(|| format!("{name} did not start again as it was"))?;
                Err(anyhow!(
                    "{name} did not start with the new environment ({reason}); it runs as before"
                ))
            }
        }
    }

    async fn start_hello_with(
        &mut self,
        version: HelloVersion,
        spec: ProcessSpec,
    ) -> anyhow::Result<()> {
        let name = spec.name.clone();
        let log = spec.log.clone();
        let log_offset = file_len(&log);
        self.supervisor.spawn(spec)?;
        let address = hello_address(&self.supervisor, &name, &log, log_offset).await?;
        wait_http_ok(
            &self.supervisor,
            &self.http,
            &name,
            &format!("http://{address}/healthz"),
        )
        .await?;
        self.control.set_hello_address(version, address).await?;
        self.addresses.hello.insert(version, address);
        Ok(())
    }

    /// Every pid started, for checking that none is left.
    pub fn pids(&self) -> Vec<(String, u32)> {
        self.supervisor.pids()
    }

    /// Stops everything, the caller first, and waits for every process to be gone.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        let stubborn = self.supervisor.stop_all().await;
        if stubborn.is_empty() {
            Ok(())
        } else {
            Err(anyhow!("could not stop: {}", stubborn.join("; ")))
        }
    }
}

/// The Envoys' configuration of a running mesh, changed in place through their xDS files.
/// Clones share one state; changes are made one at a time.
#[derive(Clone)]
pub struct MeshControl {
    inner: Arc<Mutex<Control>>,
}

/// Why a new policy was not put in place.
#[derive(Debug, thiserror::Error)]
pub enum ReconfigureError {
    /// The policy changes what a running process was started with; the message says what.
    #[error("{0}")]
    NeedsRestart(String),
    /// An Envoy did not take its new configuration; every Envoy is back on the previous policy.
    #[error("{0:#}")]
    Failed(anyhow::Error),
}

impl MeshControl {
    /// The policy the Envoys run with.
    pub async fn policy(&self) -> Policy {
        self.inner.lock().await.policy.clone()
    }

    /// Regenerates every Envoy's configuration for `policy` and switches each running Envoy to
    /// it. Returns whether anything changed.
    pub async fn set_policy(&self, policy: Policy) -> Result<bool, ReconfigureError> {
        let mut control = self.inner.lock().await;
        if let Some(reason) = needs_restart(&control.policy, &policy) {
            return Err(ReconfigureError::NeedsRestart(reason));
        }
        let previous = std::mem::replace(&mut control.policy, policy);
        let mut updated = Vec::new();
        let mut changed = false;
        for envoy in ENVOYS {
            match control.update(envoy).await {
                Ok(envoy_changed) => {
                    changed |= envoy_changed;
                    updated.push(envoy);
                }
                Err(error) => {
                    control.policy = previous;
                    for envoy in updated {
                        if let Err(rollback) = control.update(envoy).await {
                            tracing::warn!(envoy, error = %format!("{rollback:#}"), "cannot restore the previous policy");
                        }
                    }
                    return Err(ReconfigureError::Failed(error));
                }
            }
        }
        Ok(changed)
    }

    /// The caller's sidecar, which a second caller (`local-mesh call`) goes through too.
    pub async fn caller_sidecar(&self) -> Option<SocketAddr> {
        self.inner.lock().await.caller_sidecar
    }

    /// The egress gateway's listener for each of its servers' ports, now.
    pub async fn egress_gateway_ports(&self) -> BTreeMap<u16, SocketAddr> {
        self.inner.lock().await.upstreams.egress_gateway.clone()
    }

    /// A hello server listens somewhere new: the router's cluster for its route follows.
    async fn set_hello_address(
        &self,
        version: HelloVersion,
        address: SocketAddr,
    ) -> anyhow::Result<()> {
        let mut control = self.inner.lock().await;
        control.hello.insert(version, address);
        control.update(CF_ROUTER).await.map(drop)
    }
}

/// The Envoys, nearest the apps first: a change reaches the hops behind a route before the route.
const ENVOYS: [&str; 4] = [CF_ROUTER, EGRESS_GATEWAY, SIDECAR, CALLER_SIDECAR];

/// What a new policy may not change in a running mesh: what the processes were started with
/// (the proxy's upstream URL, the hello servers and certificates of the Cloud Foundry routes).
fn needs_restart(running: &Policy, new: &Policy) -> Option<String> {
    if (&running.stable_host, running.stable_port) != (&new.stable_host, new.stable_port) {
        return Some(format!(
            "the stable name changes from {}:{} to {}:{}, which the running proxy was started with; \
             stop local-mesh and start it with --policy naming the new manifest",
            running.stable_host, running.stable_port, new.stable_host, new.stable_port
        ));
    }
    if running.cf_hosts != new.cf_hosts {
        let hosts = |policy: &Policy| {
            policy
                .cf_hosts
                .iter()
                .map(|cf| cf.host.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Some(format!(
            "the Cloud Foundry hostnames change from [{}] to [{}], which the running router and \
             its certificates were made for; stop local-mesh and start it with --policy naming \
             the new manifest",
            hosts(running),
            hosts(new)
        ));
    }
    let identities = |policy: &Policy| {
        [
            policy.proxy_sidecar.identity.spiffe_id(),
            policy.caller_sidecar.identity.spiffe_id(),
            policy.gateway.identity.spiffe_id(),
        ]
    };
    if identities(running) != identities(new) {
        return Some(format!(
            "the workloads' identities change from {:?} to {:?}, which their running sidecars' \
             certificates were issued for; stop local-mesh and start it with --policy naming \
             the new manifest",
            identities(running),
            identities(new)
        ));
    }
    None
}

/// What the Envoys' configurations are made from.
struct Control {
    policy: Policy,
    hello: BTreeMap<HelloVersion, SocketAddr>,
    /// Where the router, the gateway's listeners and the proxy listen (so far).
    upstreams: Upstreams,
    caller_sidecar: Option<SocketAddr>,
    certificates: Certificates,
    run_dir: PathBuf,
    /// The xDS files of each running Envoy.
    envoys: BTreeMap<&'static str, XdsFiles>,
    http: reqwest::Client,
}

impl Control {
    /// The whole configuration of one Envoy, as the generators make it.
    fn render(&self, envoy: &str) -> anyhow::Result<Value> {
        let policy = &self.policy;
        match envoy {
            CF_ROUTER => {
                let routes = policy
                    .cf_hosts
                    .iter()
                    .map(|cf| {
                        let leaf = self
                            .certificates
                            .leaf(&cf.host)
                            .with_context(|| format!("no certificate for {}", cf.host))?;
                        let app = *self
                            .hello
                            .get(&cf.version)
                            .with_context(|| format!("no hello {} running", cf.version.as_str()))?;
                        Ok(RouterRoute {
                            host: cf.host.clone(),
                            cert: leaf.cert.clone(),
                            key: leaf.key.clone(),
                            app,
                        })
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?;
                Ok(bootstrap::cf_router(&RouterSpec {
                    routes,
                    access_log: self.access_log(CF_ROUTER),
                }))
            }
            EGRESS_GATEWAY => Ok(bootstrap::egress_gateway(&GatewaySpec {
                gateway: &policy.gateway,
                upstreams: Upstreams {
                    cf_router: self.upstreams.cf_router,
                    ..Upstreams::default()
                },
                mesh_certificate: self.mesh_certificate(&policy.gateway.identity)?,
                origination_ca: self.certificates.ca_cert.clone(),
                access_log: self.access_log(EGRESS_GATEWAY),
            })),
            SIDECAR | CALLER_SIDECAR => {
                let sidecar = if envoy == SIDECAR {
                    &policy.proxy_sidecar
                } else {
                    &policy.caller_sidecar
                };
                Ok(bootstrap::sidecar(&SidecarSpec {
                    name: envoy,
                    sidecar,
                    upstreams: self.upstreams.clone(),
                    mesh_certificate: self.mesh_certificate(&sidecar.identity)?,
                    access_log: self.access_log(envoy),
                }))
            }
            other => bail!("no Envoy named {other}"),
        }
    }

    /// The workload certificate of `identity` (istiod's SDS `default`) and the mesh's root.
    fn mesh_certificate(&self, identity: &Identity) -> anyhow::Result<MeshCertificate> {
        let workload = self
            .certificates
            .workload(identity)
            .with_context(|| format!("no certificate for {}", identity.spiffe_id()))?;
        Ok(MeshCertificate {
            cert: workload.cert.clone(),
            key: workload.key.clone(),
            ca: self.certificates.ca_cert.clone(),
        })
    }

    /// Brings one running Envoy to what [`Control::render`] makes now. After the gateway, its
    /// listeners are read again: a server added by a change listens on a port the OS chose,
    /// which the sidecars' clusters for that port then name.
    async fn update(&mut self, envoy: &'static str) -> anyhow::Result<bool> {
        let full = self.render(envoy)?;
        let files = self
            .envoys
            .get_mut(envoy)
            .with_context(|| format!("{envoy} is not running"))?;
        let changed = files.update(&full, &self.http).await?;
        if changed && envoy == EGRESS_GATEWAY {
            self.upstreams.egress_gateway = self.gateway_ports().await?;
        }
        Ok(changed)
    }

    /// The gateway's listener for each server of the policy, by the server's port; waits (up to
    /// [`xds::ACK_TIMEOUT`](crate::xds::ACK_TIMEOUT)) until each listens.
    async fn gateway_ports(&self) -> anyhow::Result<BTreeMap<u16, SocketAddr>> {
        let admin = self
            .envoys
            .get(EGRESS_GATEWAY)
            .and_then(XdsFiles::admin)
            .context("the egress gateway is not running")?;
        let wanted: Vec<u16> = self.policy.gateway.servers.iter().map(|s| s.port).collect();
        let deadline = Instant::now() + crate::xds::ACK_TIMEOUT;
        loop {
            let listeners = listener_addresses(&self.http, EGRESS_GATEWAY, admin).await?;
            let ports = gateway_ports_of(&listeners);
            if wanted.iter().all(|port| ports.contains_key(port)) {
                return Ok(ports);
            }
            if Instant::now() >= deadline {
                bail!(
                    "the egress gateway has no listener for every server ({wanted:?}) after {}s: {listeners:?}",
                    crate::xds::ACK_TIMEOUT.as_secs()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn access_log(&self, component: &str) -> PathBuf {
        self.run_dir.join(format!("{component}.access.log"))
    }
}

struct Starter<'o> {
    options: &'o MeshOptions,
    supervisor: Supervisor,
    events: mpsc::UnboundedReceiver<Event>,
    control: Control,
}

impl Starter<'_> {
    async fn start_all(&mut self) -> anyhow::Result<Addresses> {
        let versions: Vec<HelloVersion> = self
            .options
            .policy
            .cf_hosts
            .iter()
            .map(|cf| cf.version)
            .collect();
        for version in versions {
            let address = self.start_hello(version).await?;
            self.control.hello.insert(version, address);
        }
        let cf_router = self.start_envoy(CF_ROUTER).await?[0].1;
        self.control.upstreams.cf_router = Some(cf_router);
        let gateway_listeners = self.start_envoy(EGRESS_GATEWAY).await?;
        let egress_gateway_ports = gateway_ports_of(&gateway_listeners);
        self.control.upstreams.egress_gateway = egress_gateway_ports.clone();
        let egress_gateway = *egress_gateway_ports
            .get(&self.options.policy.gateway_server().port)
            .context("the egress gateway has no listener for the proxy's server")?;
        // The proxy's sidecar starts before the proxy (which is told where it is); the proxy's
        // address, chosen by the OS, then reaches the sidecars' clusters for its Service via CDS.
        let sidecar = self.start_envoy(SIDECAR).await?[0].1;
        let (proxy, proxy_admin) = self.start_proxy(sidecar).await?;
        self.control.upstreams.proxy = Some(proxy);
        self.control.update(SIDECAR).await?;
        let caller_sidecar = self.start_envoy(CALLER_SIDECAR).await?[0].1;
        self.control.caller_sidecar = Some(caller_sidecar);
        if let Some(caller) = &self.options.caller {
            self.start_caller(caller, caller_sidecar)?;
        }
        Ok(Addresses {
            hello: self.control.hello.clone(),
            cf_router,
            egress_gateway,
            egress_gateway_ports,
            sidecar,
            caller_sidecar,
            proxy,
            proxy_admin,
        })
    }

    fn log(&self, component: &str) -> PathBuf {
        self.options.run_dir.join(format!("{component}.log"))
    }

    /// Starts a hello server on a port the OS chooses and returns the address it logged.
    async fn start_hello(&mut self, version: HelloVersion) -> anyhow::Result<SocketAddr> {
        let name = hello_component(version);
        let log = self.log(&name);
        let log_offset = file_len(&log);
        self.supervisor.spawn(ProcessSpec {
            name: name.clone(),
            program: self.options.programs.hello_cf.clone(),
            args: Vec::new(),
            env: vec![
                env("PORT", 0),
                env("BIND_ADDRESS", "127.0.0.1"),
                env("HELLO_VERSION", version.as_str()),
                env("DRAIN_TIMEOUT", "1s"),
                env("LOG_FORMAT", "text"),
            ],
            log: log.clone(),
            stdout_lines: false,
        })?;
        let address = hello_address(&self.supervisor, &name, &log, log_offset).await?;
        wait_http_ok(
            &self.supervisor,
            &self.control.http,
            &name,
            &format!("http://{address}/healthz"),
        )
        .await?;
        Ok(address)
    }

    /// Writes the xDS files and the bootstrap, starts Envoy, waits until it is live and returns
    /// its listeners' names and addresses (at least one).
    async fn start_envoy(
        &mut self,
        name: &'static str,
    ) -> anyhow::Result<Vec<(String, SocketAddr)>> {
        let dir = self.options.run_dir.clone();
        let full = self.control.render(name)?;
        let mut files = XdsFiles::new(name, &dir.join("xds").join(name), &self.log(name))?;
        let config = files.start(&full)?;
        let config_path = dir.join(format!("{name}.json"));
        let text =
            serde_json::to_string_pretty(&config).context("cannot serialize an Envoy config")?;
        std::fs::write(&config_path, text)
            .with_context(|| format!("cannot write {}", config_path.display()))?;
        let admin_file = dir.join(format!("{name}.admin"));
        let _ = std::fs::remove_file(&admin_file);
        self.supervisor.spawn(ProcessSpec {
            name: name.to_owned(),
            program: self.options.envoy.clone(),
            args: envoy::arguments(&config_path, &admin_file, &self.options.envoy_log_level),
            env: Vec::new(),
            log: self.log(name),
            stdout_lines: false,
        })?;
        let admin = self.wait_admin_address(name, &admin_file).await?;
        wait_http_ok(
            &self.supervisor,
            &self.control.http,
            name,
            &format!("http://{admin}/ready"),
        )
        .await?;
        files.set_admin(admin);
        self.control.envoys.insert(name, files);
        listener_addresses(&self.control.http, name, admin).await
    }

    async fn wait_admin_address(&self, name: &str, file: &Path) -> anyhow::Result<SocketAddr> {
        let file = file.to_owned();
        poll_until_ready(&self.supervisor, name, || {
            let file = file.clone();
            async move {
                let text = std::fs::read_to_string(&file).ok()?;
                text.trim().parse::<SocketAddr>().ok()
            }
        })
        .await
    }

    /// Starts the proxy with both its ports chosen by the OS; returns the addresses it logged.
    async fn start_proxy(
        &mut self,
        sidecar: SocketAddr,
    ) -> anyhow::Result<(SocketAddr, SocketAddr)> {
        let policy = &self.options.policy;
        let upstream = match policy.stable_port {
            80 => format!("http://{}/", policy.stable_host),
            port => format!("http://{}:{port}/", policy.stable_host),
        };
        let log = self.log(PROXY);
        let log_offset = file_len(&log);
        self.supervisor.spawn(ProcessSpec {
            name: PROXY.to_owned(),
            program: self.options.programs.proxy.clone(),
            args: Vec::new(),
            env: vec![
                env("PORT", 0),
                env("ADMIN_PORT", 0),
                env("BIND_ADDRESS", "127.0.0.1"),
                env("UPSTREAM_URL", upstream),
                env("UPSTREAM_TIMEOUT", PROXY_UPSTREAM_TIMEOUT),
                env("DRAIN_TIMEOUT", "1s"),
                env("LOG_FORMAT", "text"),
                // In a pod the sidecar captures the connection; here the proxy is told about it.
                env("http_proxy", format!("http://{sidecar}")),
            ],
            log: log.clone(),
            stdout_lines: false,
        })?;
        let fields = logged_fields(
            &self.supervisor,
            PROXY,
            &log,
            log_offset,
            "app-that-calls-externally listening",
            &["proxy_addr", "admin_addr"],
        )
        .await?;
        let (address, admin) = (fields[0], fields[1]);
        wait_http_ok(
            &self.supervisor,
            &self.control.http,
            PROXY,
            &format!("http://{admin}/readyz"),
        )
        .await?;
        Ok((address, admin))
    }

    /// The caller calls the proxy's Service by name through its own sidecar, as in its pod.
    fn start_caller(
        &mut self,
        caller: &CallerOptions,
        caller_sidecar: SocketAddr,
    ) -> anyhow::Result<()> {
        let mut vars = vec![
            env("URL", format!("http://{PROXY_SERVICE}/")),
            env("http_proxy", format!("http://{caller_sidecar}")),
            env("INTERVAL", format!("{}", caller.interval.as_secs_f64())),
            env("TIMEOUT", CALLER_TIMEOUT),
        ];
        if let Some(count) = caller.count {
            vars.push(env("COUNT", count));
        }
        vars.push(env("SUMMARY_EVERY", caller.summary_every));
        self.supervisor.spawn(ProcessSpec {
            name: CALLER.to_owned(),
            program: self.options.programs.caller.clone(),
            args: Vec::new(),
            env: vars,
            log: self.log(CALLER),
            stdout_lines: true,
        })?;
        Ok(())
    }
}

/// The name and address of each listener of an Envoy, as its admin API reports them (each was
/// bound to port 0).
async fn listener_addresses(
    http: &reqwest::Client,
    name: &str,
    admin: SocketAddr,
) -> anyhow::Result<Vec<(String, SocketAddr)>> {
    let url = format!("http://{admin}/listeners?format=json");
    let body = http
        .get(&url)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .with_context(|| format!("{name}: GET {url}"))?
        .bytes()
        .await
        .with_context(|| format!("{name}: GET {url}"))?;
    let listeners: Value =
        serde_json::from_slice(&body).with_context(|| format!("{name}: {url} is not JSON"))?;
    let statuses = listeners["listener_statuses"].as_array();
    let mut addresses = Vec::new();
    for status in statuses.into_iter().flatten() {
        let socket = &status["local_address"]["socket_address"];
        let ip = socket["address"].as_str().and_then(|ip| ip.parse().ok());
        let port = socket["port_value"]
            .as_u64()
            .and_then(|port| u16::try_from(port).ok());
        match (status["name"].as_str(), ip, port) {
            (Some(listener), Some(ip), Some(port)) if port != 0 => {
                addresses.push((listener.to_owned(), SocketAddr::new(ip, port)));
            }
            _ => bail!("{name}: cannot read the listener address from {url}: {listeners}"),
        }
    }
    if addresses.is_empty() {
        bail!("{name}: no listener in {url}: {listeners}");
    }
    Ok(addresses)
}

/// The gateway's listeners by the port of the server each stands for (they are named
/// `0.0.0.0_<port>`, as istiod names them).
fn gateway_ports_of(listeners: &[(String, SocketAddr)]) -> BTreeMap<u16, SocketAddr> {
    listeners
        .iter()
        .filter_map(|(name, address)| {
            let port = name.rsplit('_').next()?.parse().ok()?;
            Some((port, *address))
        })
        .collect()
}

fn env(name: &str, value: impl ToString) -> (String, String) {
    (name.to_owned(), value.to_string())
}

/// The size of a log file, so a restarted component's lines are told from its earlier ones.
fn file_len(path: &Path) -> u64 {
    path.metadata().map_or(0, |meta| meta.len())
}

/// The address a hello server logged in its "hello-cf listening" line after `offset`.
async fn hello_address(
    supervisor: &Supervisor,
    name: &str,
    log: &Path,
    offset: u64,
) -> anyhow::Result<SocketAddr> {
    let fields = logged_fields(
        supervisor,
        name,
        log,
        offset,
        "hello-cf listening",
        &["address"],
    )
    .await?;
    Ok(fields[0])
}

/// The socket addresses named by `fields` (`field=<address>`) in the first line of `log` after
/// byte `offset` that contains `message`: how a component started on port 0 says where it
/// listens.
async fn logged_fields(
    supervisor: &Supervisor,
    name: &str,
    log: &Path,
    offset: u64,
    message: &str,
    fields: &[&str],
) -> anyhow::Result<Vec<SocketAddr>> {
    poll_until_ready(supervisor, name, || async {
        let bytes = std::fs::read(log).ok()?;
        let start = usize::try_from(offset).ok()?.min(bytes.len());
        let text = String::from_utf8_lossy(&bytes[start..]);
        let line = text.lines().find(|line| line.contains(message))?;
        fields
            .iter()
            .map(|field| {
                let prefix = format!("{field}=");
                line.split_whitespace()
                    .find_map(|word| word.strip_prefix(prefix.as_str()))?
                    .parse()
                    .ok()
            })
            .collect()
    })
    .await
    .with_context(|| format!("waiting for {name}'s {message:?} line in {}", log.display()))
}

async fn wait_http_ok(
    supervisor: &Supervisor,
    http: &reqwest::Client,
    name: &str,
    url: &str,
) -> anyhow::Result<()> {
    poll_until_ready(supervisor, name, || async {
        let response = http.get(url).send().await.ok()?;
        response.status().is_success().then_some(())
    })
    .await
    .with_context(|| format!("waiting for GET {url}"))
}

/// Polls `probe` until it yields a value, the component exits, or [`READY_TIMEOUT`] passes.
async fn poll_until_ready<T, F, Fut>(
    supervisor: &Supervisor,
    name: &str,
    mut probe: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(status) = supervisor.exit_status(name) {
            bail!(
                "{name} exited during start-up ({status}); {}",
                tail_of(supervisor, name)
            );
        }
        if let Some(value) = probe().await {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            bail!(
                "{name} was not ready within {}s; {}",
                READY_TIMEOUT.as_secs(),
                tail_of(supervisor, name)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn tail_of(supervisor: &Supervisor, name: &str) -> String {
    match supervisor.log(name) {
        Some(log) => format!(
            "last lines of {}:\n{}",
            log.display(),
            supervisor::log_tail(log, 20)
        ),
        None => String::new(),
    }
}
