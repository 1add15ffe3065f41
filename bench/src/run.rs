//! The bench itself: starts each contender, loads it with wrk in alternating rounds, reads its
//! memory and CPU time from /proc, runs the callers against the recorder, and fills the report.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};

use crate::config::{Config, Cpus, Section};
use crate::nginx::{self, Site};
use crate::probe;
use crate::procs::{self, Running};
use crate::recorder::{self, Recorder};
use crate::report::{
    CallerRuns, Comparison, Machine, Measured, PROXY_TARGET, Report, STATIC_TARGET, Series, mib,
};
use crate::schedule;
use crate::wrk;

/// What `GET /` answers, byte for byte, from every contender and from the recorder.
const GREETING: &str = recorder::BODY;
const CONTENT_TYPE: &str = "text/html; charset=utf-8";
/// A contender must answer within this time of being started.
const START_DEADLINE: Duration = Duration::from_secs(20);
/// Settling time before the idle RSS is read.
const IDLE_SETTLE: Duration = Duration::from_secs(1);
/// How often /proc is read while wrk runs.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// The programs the bench starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Program {
    HelloCf,
    NginxStaticfile,
    Proxy,
    NginxProxyPool,
    NginxProxyPerRequest,
    /// Not a contender: the floor of the proxy comparison (`relay.rs`).
    ByteRelay,
    /// Not a contender: another build of the proxy (`--baseline-proxy`).
    BaselineProxy,
}

impl Program {
    pub fn label(self) -> &'static str {
        match self {
            Program::HelloCf => "hello-cf",
            Program::NginxStaticfile => "nginx staticfile",
            Program::Proxy => "app-that-calls-externally",
            Program::NginxProxyPool => "nginx proxy_pass pool",
            Program::NginxProxyPerRequest => "nginx proxy_pass older demo",
            Program::ByteRelay => "byte relay (no HTTP)",
            Program::BaselineProxy => "baseline build",
        }
    }

    fn nginx_site(self, upstream: Option<SocketAddr>) -> Option<Site> {
        match (self, upstream) {
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
                | Program::NginxProxyPerRequest
                | Program::ByteRelay
                | Program::BaselineProxy
        )
    }
}

const STATIC_CONTENDERS: [Program; 2] = [Program::HelloCf, Program::NginxStaticfile];
const PROXY_CONTENDERS: [Program; 3] = [
    Program::Proxy,
    Program::NginxProxyPool,
    Program::NginxProxyPerRequest,
];
/// The proxy comparison: the contenders, then the byte relay as the floor.
const PROXY_COMPARISON: [Program; 4] = [
    Program::Proxy,
    Program::NginxProxyPool,
    Program::NginxProxyPerRequest,
    Program::ByteRelay,
];

/// A started program that has answered once.
struct Launched {
    program: Program,
    running: Running,
    addr: SocketAddr,
    startup: Duration,
}

pub struct Bench {
    config: Config,
    work: PathBuf,
    clock_ticks: u64,
    launches: u32,
    report: Report,
}

impl Bench {
    /// `work` is a scratch directory for configs and logs; `config` has passed
    /// [`check_config`].
    pub fn new(config: Config, work: &Path, command: String) -> anyhow::Result<Self> {
        let clock_ticks = procs::clock_ticks_per_second()?;
        let mut report = Report {
            command,
            machine: machine(&config),
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
            launches: 0,
            report,
        })
    }

    /// Runs the configured sections and returns the report.
    pub fn run(mut self) -> anyhow::Result<Report> {
        self.describe_nginx_binary();
        if self.config.runs(Section::Startup) {
            self.startup().context("start-up measurement")?;
        }
        if self.config.runs(Section::Static) {
            self.static_comparison().context("hello-cf vs nginx")?;
        }
        if self.config.runs(Section::Proxy) {
            self.proxy_comparison()
                .context("proxy vs nginx proxy_pass")?;
        }
        if self.config.runs(Section::Schedule) {
            self.schedule().context("caller schedule")?;
        }
        self.report.machine.load_after = load_average();
        Ok(self.report)
    }

    fn describe_nginx_binary(&mut self) {
        let Some(path) = which(&self.config.nginx) else {
            return;
        };
        let Ok(metadata) = fs::metadata(&path) else {
            return;
        };
        let text = format!("{} (+ shared libraries)", mib(metadata.len() / 1024));
        for program in [
            Program::NginxStaticfile,
            Program::NginxProxyPool,
            Program::NginxProxyPerRequest,
        ] {
            self.report.footprint(program.label()).binary = Some(text.clone());
        }
    }

    /// Start-up time to first answer and idle RSS of fresh processes, alternating programs.
    fn startup(&mut self) -> anyhow::Result<()> {
        tracing::info!("start-up and idle memory");
        let cpus = self.config.server_cpus.clone();
        let upstream = self.launch(Program::HelloCf, None, &cpus)?;
        let recorder = Recorder::start(Duration::ZERO)?;
        let programs = [STATIC_CONTENDERS.as_slice(), PROXY_CONTENDERS.as_slice()].concat();
        for _ in 0..self.config.rounds {
            for &program in &programs {
                let upstream = program.needs_upstream().then_some(upstream.addr);
                let mut launched = self.launch(program, upstream, &cpus)?;
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

    fn static_comparison(&mut self) -> anyhow::Result<()> {
        tracing::info!("hello-cf vs nginx serving the same file");
        let comparison = self.compare(
            "hello-cf vs nginx (staticfile buildpack settings), same 31-byte answer",
            &STATIC_CONTENDERS,
            None,
        )?;
        self.report.comparisons.push((comparison, STATIC_TARGET));
        Ok(())
    }

    /// The proxies all front one hello-cf, which shares the server CPUs with them: the
    /// system under test is proxy plus upstream, and wrk alone loads it from the other CPUs.
    fn proxy_comparison(&mut self) -> anyhow::Result<()> {
        tracing::info!("proxy vs nginx proxy_pass");
        let upstream = self.launch(Program::HelloCf, None, &self.config.server_cpus.clone())?;
        let mut programs = PROXY_COMPARISON.to_vec();
        if self.config.baseline_proxy.is_some() {
            programs.push(Program::BaselineProxy);
        }
        let comparison = self.compare(
            "app-that-calls-externally vs nginx proxy_pass, in front of one hello-cf",
            &programs,
            Some(upstream.addr),
        )?;
        self.report.comparisons.push((comparison, PROXY_TARGET));
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
    ) -> anyhow::Result<Comparison> {
        let cpus = self.config.server_cpus.clone();
        let mut contenders = Vec::new();
        for &program in programs {
            contenders.push(self.launch(program, upstream, &cpus)?);
        }
        let mut series: Vec<Series> = programs
            .iter()
            .map(|program| Series {
                label: program.label().to_owned(),
                runs: Vec::new(),
            })
            .collect();
        let connections = self.config.connections.clone();
        for &count in &connections {
            if !self.config.warmup.is_zero() {
                for contender in &mut contenders {
                    self.load(contender, count, self.config.warmup)?;
                }
            }
            for round in 1..=self.config.rounds {
                for (contender, series) in contenders.iter_mut().zip(&mut series) {
                    let measured = self.load(contender, count, self.config.duration)?;
                    tracing::info!(
                        contender = contender.program.label(),
                        connections = count,
                        round,
                        requests_per_second = measured.wrk.requests_per_second.round(),
                        p99 = ?measured.wrk.p99,
                        "measured"
                    );
                    series.runs.push(measured);
                }
            }
        }
        for (contender, series) in contenders.iter_mut().zip(&series) {
            if matches!(
                contender.program,
                Program::ByteRelay | Program::BaselineProxy
            ) {
                continue;
            }
            let usage = procs::tree_usage(contender.running.pid())?;
            let footprint = self.report.footprint(contender.program.label());
            footprint.hwm_kib = Some(usage.hwm_kib);
            footprint.load_rss_kib = series.load_rss_kib();
        }
        Ok(Comparison {
            title: title.to_owned(),
            connections,
            series,
        })
    }

    /// One wrk run against `contender`, with its CPU time and RSS read around and during it.
    fn load(
        &mut self,
        contender: &mut Launched,
        connections: u32,
        duration: Duration,
    ) -> anyhow::Result<Measured> {
        let pid = contender.running.pid();
        let before = procs::tree_usage(pid)
            .with_context(|| format!("{} is gone", contender.program.label()))?;
        let url = format!("http://{}/", contender.addr);
        let command = wrk::command(
            &self.config.wrk,
            &self.config.load_cpus,
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

    /// Starts `program` pinned to `cpus` and waits for its first correct answer.
    fn launch(
        &mut self,
        program: Program,
        upstream: Option<SocketAddr>,
        cpus: &Cpus,
    ) -> anyhow::Result<Launched> {
        self.launches += 1;
        let port = procs::free_port()?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let name = format!("{}-{}", slug(program), self.launches);
        let log = self.scratch(&format!("{name}.log"));
        let command = match program.nginx_site(upstream) {
            Some(site) => self.nginx_command(site, addr, &name, cpus)?,
            None => self.program_command(program, port, upstream, cpus)?,
        };
        let started = Instant::now();
        let mut running = Running::spawn(program.label(), command, &log)?;
        let startup =
            probe::first_answer(addr, GREETING.as_bytes(), started, START_DEADLINE, || {
                running.exited().is_none()
            })
            .map_err(|error| {
                anyhow::anyhow!(
                    "{} on {addr}: {error}; its log ({}): {}",
                    program.label(),
                    log.display(),
                    running.log_tail()
                )
            })?;
        let answer = probe::get(addr, Duration::from_secs(5))?;
        ensure!(
            answer.content_type.as_deref() == Some(CONTENT_TYPE),
            "{} answers Content-Type {:?}, not {CONTENT_TYPE:?}",
            program.label(),
            answer.content_type
        );
        Ok(Launched {
            program,
            running,
            addr,
            startup,
        })
    }

    fn program_command(
        &self,
        program: Program,
        port: u16,
        upstream: Option<SocketAddr>,
        cpus: &Cpus,
    ) -> anyhow::Result<Command> {
        let mut command = match program {
            Program::HelloCf => {
                let mut command = procs::command(&self.config.bin_dir.join("hello-cf"), cpus);
                command.env("HELLO_VERSION", "v1");
                command
            }
            Program::Proxy | Program::BaselineProxy => {
                let upstream = upstream.context("the proxy needs an upstream")?;
                let binary = match (&self.config.baseline_proxy, program) {
                    (Some(baseline), Program::BaselineProxy) => baseline.clone(),
                    _ => self.config.bin_dir.join("app-that-calls-externally"),
                };
                let mut command = procs::command(&binary, cpus);
                command
                    .env("UPSTREAM_URL", format!("http://{upstream}/"))
                    .env("ADMIN_PORT", procs::free_port()?.to_string());
                command
            }
            Program::ByteRelay => {
                let upstream = upstream.context("the relay needs an upstream")?;
                let mut command = procs::command(&self.config.bin_dir.join("byte-relay"), cpus);
                command.env("UPSTREAM", upstream.to_string());
                command
            }
            _ => bail!("{} is not one of the demo's programs", program.label()),
        };
        command
            .env("PORT", port.to_string())
            .env("BIND_ADDRESS", "127.0.0.1");
        Ok(command)
    }

    /// Writes the site's nginx.conf and index.html into a directory of its own.
    fn nginx_command(
        &self,
        site: Site,
        listen: SocketAddr,
        name: &str,
        cpus: &Cpus,
    ) -> anyhow::Result<Command> {
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
        fs::write(&conf, nginx::config(site, listen, &prefix))?;
        let mut command = procs::command(&self.config.nginx, cpus);
        command
            .arg("-e")
            .arg(prefix.join("error.log"))
            .arg("-p")
            .arg(&prefix)
            .arg("-c")
            .arg(&conf);
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

/// Checks what the flags name but clap cannot: the binaries in `--bin-dir`, the CPU lists
/// (taskset must accept them), nginx and wrk. Returns the one-line error for exit code 2.
pub fn check_config(config: &Config) -> Result<(), String> {
    let binaries = [
        ("hello-cf", "hello-cf"),
        ("app-that-calls-externally", "app-that-calls-externally"),
        ("traffic", "traffic"),
        ("byte-relay", "bench-tools"),
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
    if let Some(baseline) = &config.baseline_proxy
        && !baseline.is_file()
    {
        return Err(format!(
            "invalid value '{}' for --baseline-proxy (env BENCH_BASELINE_PROXY): no such file",
            baseline.display()
        ));
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
    let tools = [
        ("--nginx", "BENCH_NGINX", &config.nginx),
        ("--wrk", "BENCH_WRK", &config.wrk),
    ];
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

fn slug(program: Program) -> String {
    program.label().replace(' ', "-")
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
        tool_version(&config.wrk, "-v"),
        tool_version(Path::new("curl"), "--version"),
        tool_version(Path::new("rustc"), "-V"),
    ]
    .into_iter()
    .flatten()
    .collect();
    let settings = vec![
        format!(
            "Pinning: the programs under test (and the proxies' upstream) on CPUs {}, wrk on \
             CPUs {}; the machine has {cpus}, and unpinned, wrk and the server under test \
             would compete for the same cores.",
            config.server_cpus, config.load_cpus
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
        .next()?
        .trim()
        .to_owned();
    // `nginx version: nginx/1.22.1`, `wrk 4.1.0 [epoll] Copyright ...`, `curl 7.88.1 (x86_64...`
    let line = line.trim_start_matches("nginx version: ");
    let end = [" Copyright", " ("]
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

    /// The four programs every run needs.
    const PROGRAMS: [&str; 4] = [
        "hello-cf",
        "app-that-calls-externally",
        "traffic",
        "byte-relay",
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
    fn a_missing_baseline_proxy_is_a_config_error() {
        let dir = bin_dir_with(&PROGRAMS);
        let missing = dir.path().join("old-proxy");
        let args = [
            "--bin-dir",
            path(dir.path()),
            "--baseline-proxy",
            path(&missing),
        ];
        let line = check_config(&config(&args)).expect_err("no such file");
        assert!(
            line.contains("--baseline-proxy (env BENCH_BASELINE_PROXY)"),
            "{line}"
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
