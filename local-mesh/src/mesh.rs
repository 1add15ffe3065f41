//! Starting the whole flow on loopback, each component after the one it talks to is ready:
//!
//! ```text
//! traffic --http_proxy--> caller-sidecar (Envoy) -> app-that-calls-externally
//!         --http_proxy--> sidecar (Envoy) --mTLS--> egress gateway (Envoy)
//!         --TLS--> CF router (Envoy) -> hello-cf v1 | v2
//! ```

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::bootstrap::{
    self, GatewaySpec, MeshCertificate, RouterRoute, RouterSpec, SidecarSpec, Upstreams,
};
use crate::certs::{self, Certificates};
use crate::envoy;
use crate::policy::{HelloVersion, Identity, Policy};
use crate::programs::Programs;
use crate::supervisor::{self, Event, ProcessSpec, Supervisor};

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
    pub summary_every: String,
}

/// Where each component listens.
#[derive(Debug, Clone)]
pub struct Addresses {
    pub hello: BTreeMap<HelloVersion, SocketAddr>,
    pub cf_router: SocketAddr,
    /// The gateway's listener for the server the proxy's calls go to.
    pub egress_gateway: SocketAddr,
    /// Its listener for each server, by port.
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
            http,
        };
        let started = tokio::select! {
            started = starter.start_all(&certificates) => Some(started),
            () = interrupt => None,
        };
        match started {
            Some(Ok(addresses)) => Ok(Some(Mesh {
                supervisor: starter.supervisor,
                events: starter.events,
                addresses,
                certificates,
                run_dir: options.run_dir.clone(),
                http: starter.http,
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
        let event = self.events.recv().await?;
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

    /// Starts a stopped hello server again on its address and waits until it serves.
    pub async fn restart_hello(&mut self, version: HelloVersion) -> anyhow::Result<()> {
        let name = hello_component(version);
        let address = *self
            .addresses
            .hello
            .get(&version)
            .with_context(|| format!("no {name} in this mesh"))?;
        self.supervisor.restart(&name)?;
        wait_http_ok(
            &self.supervisor,
            &self.http,
            &name,
            &format!("http://{address}/healthz"),
        )
        .await
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

struct Starter<'o> {
    options: &'o MeshOptions,
    supervisor: Supervisor,
    events: mpsc::UnboundedReceiver<Event>,
    http: reqwest::Client,
}

impl Starter<'_> {
    async fn start_all(&mut self, certificates: &Certificates) -> anyhow::Result<Addresses> {
        let policy = &self.options.policy;
        let mut hello = BTreeMap::new();
        for cf in &policy.cf_hosts {
            hello.insert(cf.version, self.start_hello(cf.version).await?);
        }
        let routes = policy
            .cf_hosts
            .iter()
            .map(|cf| {
                let leaf = certificates
                    .leaf(&cf.host)
                    .with_context(|| format!("no certificate for {}", cf.host))?;
                Ok(RouterRoute {
                    host: cf.host.clone(),
                    cert: leaf.cert.clone(),
                    key: leaf.key.clone(),
                    app: hello[&cf.version],
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let cf_router = self
            .start_envoy(
                CF_ROUTER,
                &bootstrap::cf_router(&RouterSpec {
                    routes,
                    access_log: self.access_log(CF_ROUTER),
                }),
            )
            .await?;
        let mesh_certificate = |identity: &Identity| {
            let workload = certificates
                .workload(identity)
                .with_context(|| format!("no certificate for {}", identity.spiffe_id()))?;
            Ok::<_, anyhow::Error>(MeshCertificate {
                cert: workload.cert.clone(),
                key: workload.key.clone(),
                ca: certificates.ca_cert.clone(),
            })
        };
        let gateway_listeners = self
            .start_envoy_listeners(
                EGRESS_GATEWAY,
                &bootstrap::egress_gateway(&GatewaySpec {
                    gateway: &policy.gateway,
                    upstreams: Upstreams {
                        cf_router: Some(cf_router),
                        ..Upstreams::default()
                    },
                    mesh_certificate: mesh_certificate(&policy.gateway.identity)?,
                    origination_ca: certificates.ca_cert.clone(),
                    access_log: self.access_log(EGRESS_GATEWAY),
                }),
            )
            .await?;
        // Listeners are named `0.0.0.0_<port>` after the server they stand for.
        let egress_gateway_ports: BTreeMap<u16, SocketAddr> = gateway_listeners
            .iter()
            .filter_map(|(name, address)| {
                let port = name.rsplit('_').next()?.parse().ok()?;
                Some((port, *address))
            })
            .collect();
        let egress_gateway = *egress_gateway_ports
            .get(&policy.gateway_server().port)
            .context("the egress gateway has no listener for the proxy's server")?;
        // The proxy's address is chosen first: the sidecars know the Service behind it.
        let proxy = free_loopback_port()?;
        let upstreams = Upstreams {
            egress_gateway: egress_gateway_ports.clone(),
            cf_router: Some(cf_router),
            proxy: Some(proxy),
        };
        let sidecar = self
            .start_envoy(
                SIDECAR,
                &bootstrap::sidecar(&SidecarSpec {
                    name: SIDECAR,
                    sidecar: &policy.proxy_sidecar,
                    upstreams: upstreams.clone(),
                    mesh_certificate: mesh_certificate(&policy.proxy_sidecar.identity)?,
                    access_log: self.access_log(SIDECAR),
                }),
            )
            .await?;
        let proxy_admin = self.start_proxy(proxy, sidecar).await?;
        let caller_sidecar = self
            .start_envoy(
                CALLER_SIDECAR,
                &bootstrap::sidecar(&SidecarSpec {
                    name: CALLER_SIDECAR,
                    sidecar: &policy.caller_sidecar,
                    upstreams,
                    mesh_certificate: mesh_certificate(&policy.caller_sidecar.identity)?,
                    access_log: self.access_log(CALLER_SIDECAR),
                }),
            )
            .await?;
        if let Some(caller) = &self.options.caller {
            self.start_caller(caller, caller_sidecar)?;
        }
        Ok(Addresses {
            hello,
            cf_router,
            egress_gateway,
            egress_gateway_ports,
            sidecar,
            caller_sidecar,
            proxy,
            proxy_admin,
        })
    }

    fn access_log(&self, component: &str) -> PathBuf {
        self.options.run_dir.join(format!("{component}.access.log"))
    }

    fn log(&self, component: &str) -> PathBuf {
        self.options.run_dir.join(format!("{component}.log"))
    }

    async fn start_hello(&mut self, version: HelloVersion) -> anyhow::Result<SocketAddr> {
        let name = hello_component(version);
        let address = free_loopback_port()?;
        self.supervisor.spawn(ProcessSpec {
            name: name.clone(),
            program: self.options.programs.hello_cf.clone(),
            args: Vec::new(),
            env: vec![
                env("PORT", address.port()),
                env("BIND_ADDRESS", address.ip()),
                env("HELLO_VERSION", version.as_str()),
                env("DRAIN_TIMEOUT", "1s"),
            ],
            log: self.log(&name),
            stdout_lines: false,
        })?;
        wait_http_ok(
            &self.supervisor,
            &self.http,
            &name,
            &format!("http://{address}/healthz"),
        )
        .await?;
        Ok(address)
    }

    /// Writes the bootstrap, starts Envoy, waits until it is live and returns its (first)
    /// listener's address.
    async fn start_envoy(
        &mut self,
        name: &str,
        config: &serde_json::Value,
    ) -> anyhow::Result<SocketAddr> {
        let listeners = self.start_envoy_listeners(name, config).await?;
        Ok(listeners[0].1)
    }

    /// Like [`Starter::start_envoy`], returning every listener's name and address.
    async fn start_envoy_listeners(
        &mut self,
        name: &str,
        config: &serde_json::Value,
    ) -> anyhow::Result<Vec<(String, SocketAddr)>> {
        let dir = &self.options.run_dir;
        let config_path = dir.join(format!("{name}.json"));
        let text =
            serde_json::to_string_pretty(config).context("cannot serialize an Envoy config")?;
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
            &self.http,
            name,
            &format!("http://{admin}/ready"),
        )
        .await?;
        self.listener_addresses(name, admin).await
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

    /// The name and address of each listener, as the admin API reports them (each was bound to
    /// port 0).
    async fn listener_addresses(
        &self,
        name: &str,
        admin: SocketAddr,
    ) -> anyhow::Result<Vec<(String, SocketAddr)>> {
        let url = format!("http://{admin}/listeners?format=json");
        let body = self
            .http
            .get(&url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .with_context(|| format!("{name}: GET {url}"))?
            .bytes()
            .await
            .with_context(|| format!("{name}: GET {url}"))?;
        let listeners: serde_json::Value =
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

    /// Starts the proxy on `address`; returns its admin address.
    async fn start_proxy(
        &mut self,
        address: SocketAddr,
        sidecar: SocketAddr,
    ) -> anyhow::Result<SocketAddr> {
        let policy = &self.options.policy;
        let admin = free_loopback_port()?;
        let upstream = match policy.stable_port {
            80 => format!("http://{}/", policy.stable_host),
            port => format!("http://{}:{port}/", policy.stable_host),
        };
        self.supervisor.spawn(ProcessSpec {
            name: PROXY.to_owned(),
            program: self.options.programs.proxy.clone(),
            args: Vec::new(),
            env: vec![
                env("PORT", address.port()),
                env("ADMIN_PORT", admin.port()),
                env("BIND_ADDRESS", address.ip()),
                env("UPSTREAM_URL", upstream),
                env("UPSTREAM_TIMEOUT", PROXY_UPSTREAM_TIMEOUT),
                env("DRAIN_TIMEOUT", "1s"),
                // In a pod the sidecar captures the connection; here the proxy is told about it.
                env("http_proxy", format!("http://{sidecar}")),
            ],
            log: self.log(PROXY),
            stdout_lines: false,
        })?;
        wait_http_ok(
            &self.supervisor,
            &self.http,
            PROXY,
            &format!("http://{admin}/readyz"),
        )
        .await?;
        Ok(admin)
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
        vars.push(env("SUMMARY_EVERY", &caller.summary_every));
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

fn env(name: &str, value: impl ToString) -> (String, String) {
    (name.to_owned(), value.to_string())
}

/// A loopback port the OS considers free right now. The component binds it a moment later;
/// were it taken in between, the component would fail to start and say so.
fn free_loopback_port() -> anyhow::Result<SocketAddr> {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("cannot find a free loopback port")?;
    listener.local_addr().context("cannot read a free port")
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
