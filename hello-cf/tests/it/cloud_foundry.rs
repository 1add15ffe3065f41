//! Cloud Foundry packaging of hello-cf (`cf/`): `cf/build.sh` leaves a static x86-64
//! executable in the folder `cf/manifest.yml` pushes, and that executable, started the way
//! Diego starts an app (`bash -c <command>` in the pushed folder, with `PORT` and the manifest's
//! env and nothing else), serves each version byte for byte and passes its health check.
//!
//! The static build is a release build with LTO. It runs once per test process, shared by every
//! test here, in `<target dir>/cf`, so a second run only relinks what changed.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use demo_testkit::ChildProcess;
use demo_testkit::memory::Memory;
use demo_testkit::process::Stdout;
use demo_testkit::raw_http::{self, RawResponse};
use serde::Deserialize;

const VERSIONS: [&str; 2] = ["v1", "v2"];
/// The executable the manifest's command runs, inside the pushed folder.
const BINARY_NAME: &str = "hello-cf";
/// A cold static build takes about 2 minutes on 2 idle cores; a loaded CI machine is slower.
const BUILD_DEADLINE: Duration = Duration::from_secs(30 * 60);
/// Diego starts the health check right away and gives an app 60 s to pass it by default.
const START_DEADLINE: Duration = Duration::from_secs(60);
/// Diego's grace period between SIGTERM and SIGKILL.
const DIEGO_GRACE_PERIOD: Duration = Duration::from_secs(10);
const IO_TIMEOUT: Duration = Duration::from_secs(10);
const POLL_INTERVAL: Duration = Duration::from_millis(50);

fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("hello-cf sits inside the workspace")
        .to_path_buf()
}

fn cf_dir() -> PathBuf {
    workspace_dir().join("cf")
}

/// Per-process scratch space for logs, inside the target directory.
fn scratch_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("cf-{}-{name}", std::process::id()))
}

// ---------------------------------------------------------------------------------------------
// The manifest

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    applications: Vec<Application>,
}

/// The attributes the manifest uses, spelled as Cloud Foundry spells them (mostly kebab-case,
/// but `disk_quota`); a misspelled or unexpected key fails the parse.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Application {
    name: String,
    path: PathBuf,
    buildpacks: Vec<String>,
    stack: String,
    command: String,
    instances: u32,
    memory: String,
    #[serde(rename = "disk_quota")]
    disk_quota: String,
    health_check_type: String,
    health_check_http_endpoint: String,
    #[serde(default)]
    env: BTreeMap<String, String>,
}

impl Application {
    /// The folder `cf push` uploads (`path` is relative to the manifest).
    fn pushed_dir(&self) -> PathBuf {
        cf_dir().join(&self.path)
    }
}

fn manifest_text() -> String {
    let path = cf_dir().join("manifest.yml");
    fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()))
}

fn readme_text() -> String {
    let path = cf_dir().join("README.md");
    fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()))
}

/// The names of the `((name))` variables in a manifest.
fn manifest_variables(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find("((") {
        let after = &rest[start + 2..];
        let end = after
            .find("))")
            .unwrap_or_else(|| panic!("unterminated (( in the manifest: {after:.40}"));
        names.insert(after[..end].trim().to_owned());
        rest = &after[end + 2..];
    }
    names
}

/// Replaces every `((name))` with its value; an unset variable fails, as it fails `cf push`.
fn interpolate(text: &str, variables: &BTreeMap<String, String>) -> Result<String, String> {
    let mut result = text.to_owned();
    for name in manifest_variables(text) {
        let value = variables
            .get(&name)
            .ok_or_else(|| format!("variable (({name})) is not set"))?;
        result = result.replace(&format!("(({name}))"), value);
    }
    Ok(result)
}

fn version_variables(version: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("version".to_owned(), version.to_owned())])
}

/// The application as `cf push -f cf/manifest.yml` sees it with these variables.
fn parse_manifest(variables: &BTreeMap<String, String>) -> Result<Application, String> {
    let text = interpolate(&manifest_text(), variables)?;
    let manifest: Manifest = serde_norway::from_str(&text).map_err(|error| error.to_string())?;
    let mut applications = manifest.applications.into_iter();
    match (applications.next(), applications.next()) {
        (Some(application), None) => Ok(application),
        _ => Err("the manifest must describe exactly one application per push".to_owned()),
    }
}

fn manifest_for(version: &str) -> Application {
    parse_manifest(&version_variables(version))
        .unwrap_or_else(|error| panic!("manifest with version={version}: {error}"))
}

/// Bytes in a Cloud Foundry quota such as `32M`, `64MB` or `1G`.
fn quota_bytes(quota: &str) -> u64 {
    let upper = quota.trim().to_ascii_uppercase();
    let digits_end = upper
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(upper.len());
    let (number, unit) = upper.split_at(digits_end);
    let number: u64 = number
        .parse()
        .unwrap_or_else(|_| panic!("quota {quota:?} has no number"));
    let unit_bytes = match unit {
        "M" | "MB" => 1 << 20,
        "G" | "GB" => 1 << 30,
        _ => panic!("quota {quota:?}: unit must be M, MB, G or GB"),
    };
    number * unit_bytes
}

/// The `--var name=value` sets of every `cf push -f cf/manifest.yml` command in the README.
fn documented_pushes(readme: &str) -> Vec<BTreeMap<String, String>> {
    readme
        .lines()
        .filter_map(|line| {
            line.split_once("cf push -f cf/manifest.yml")
                .map(|(_, args)| args)
        })
        .map(|args| {
            let mut variables = BTreeMap::new();
            let mut words = args.split_whitespace();
            while let Some(word) = words.next() {
                let assignment = match word.strip_prefix("--var=") {
                    Some(assignment) => Some(assignment),
                    None if word == "--var" => words.next(),
                    None => None,
                };
                if let Some((name, value)) = assignment.and_then(|a| a.split_once('=')) {
                    variables.insert(name.to_owned(), value.trim_matches('`').to_owned());
                }
            }
            variables
        })
        .collect()
}

#[test]
fn manifest_parses_and_the_readme_push_commands_set_every_variable_it_uses() {
    let text = manifest_text();
    serde_norway::from_str::<serde_norway::Value>(&text).unwrap_or_else(|error| {
        panic!("cf/manifest.yml is not YAML before interpolation: {error}")
    });
    let variables = manifest_variables(&text);
    let readme = readme_text();
    for name in &variables {
        assert!(
            readme.contains(&format!("(({name}))")),
            "cf/README.md does not explain the manifest variable (({name}))"
        );
    }

    let pushes = documented_pushes(&readme);
    for version in VERSIONS {
        let push = pushes
            .iter()
            .find(|push| push.get("version").map(String::as_str) == Some(version))
            .unwrap_or_else(|| {
                panic!("cf/README.md shows no `cf push -f cf/manifest.yml --var version={version}`")
            });
        let application = parse_manifest(push).unwrap_or_else(|error| {
            panic!("the README's push of {version} (variables {push:?}) fails: {error}")
        });
        assert_eq!(application.name, format!("hello-istio-{version}"));
        assert_eq!(
            application.env.get("HELLO_VERSION").map(String::as_str),
            Some(version),
            "each app must serve its own version"
        );
    }

    let unset = parse_manifest(&BTreeMap::new());
    assert!(
        variables.is_empty() || unset.is_err(),
        "a push without variables must fail rather than deploy a literal (( ))"
    );
}

#[test]
fn manifest_pushes_only_the_prebuilt_binary_with_an_http_health_check() {
    for version in VERSIONS {
        let application = manifest_for(version);
        assert_eq!(
            application.buildpacks,
            ["binary_buildpack"],
            "the binary buildpack never detects; it must be named, alone"
        );
        assert_eq!(application.stack, "cflinuxfs4");
        assert!(
            application.command.starts_with("exec "),
            "command {:?} must exec the binary so that it, not a shell, gets SIGTERM",
            application.command
        );
        assert!(
            application.command.contains(BINARY_NAME),
            "command {:?} does not run {BINARY_NAME}",
            application.command
        );
        assert_eq!(application.health_check_type, "http");
        assert!(application.health_check_http_endpoint.starts_with('/'));
        assert!(application.instances >= 1);

        // Strictly inside cf/ (no `..`, not cf/ itself), and not a crate: nothing but the
        // binary may be uploaded.
        assert!(
            !application.path.as_os_str().is_empty()
                && application
                    .path
                    .components()
                    .all(|c| matches!(c, Component::Normal(_))),
            "path {:?} must be a folder below cf/",
            application.path
        );
        assert!(!application.pushed_dir().join("Cargo.toml").exists());

        assert!(
            quota_bytes(&application.memory) <= 64 << 20,
            "memory quota is not small"
        );
        assert!(
            quota_bytes(&application.disk_quota) <= 256 << 20,
            "disk quota is not small"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The build

/// Runs `cf/build.sh` once per test process; every test that needs the binary shares it.
fn built_binary() -> &'static Path {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match BUILT.get_or_init(run_build_script) {
        Ok(binary) => binary,
        Err(error) => panic!("{error}"),
    }
}

fn run_build_script() -> Result<PathBuf, String> {
    // The target directory this test was built in (CARGO_TARGET_TMPDIR is its `tmp`); the
    // script builds below it, in `cf/`, and so shares it across runs.
    let target_dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .ok_or("CARGO_TARGET_TMPDIR has no parent")?;
    let log_path = scratch_file("build.log");
    let log =
        fs::File::create(&log_path).map_err(|error| format!("{}: {error}", log_path.display()))?;
    let log_for_stderr = log.try_clone().map_err(|error| error.to_string())?;
    let mut build = Command::new("bash")
        .arg(cf_dir().join("build.sh"))
        // Any directory works; not the workspace, to show it.
        .current_dir(std::env::temp_dir())
        .env("CARGO_TARGET_DIR", target_dir)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_for_stderr)
        // Its own process group, so a timeout can stop cargo and rustc too.
        .process_group(0)
        .spawn()
        .map_err(|error| format!("cannot run cf/build.sh: {error}"))?;
    let outcome = wait_with_deadline(&mut build, BUILD_DEADLINE);
    if outcome.is_none() {
        signal_process_group(build.id(), "KILL");
        let _ = build.wait();
    }
    let output = fs::read_to_string(&log_path).unwrap_or_default();
    match outcome {
        Some(status) if status.success() => Ok(manifest_for("v1").pushed_dir().join(BINARY_NAME)),
        Some(status) => Err(format!("cf/build.sh failed ({status}):\n{output}")),
        None => Err(format!(
            "cf/build.sh did not finish within {BUILD_DEADLINE:?}:\n{output}"
        )),
    }
}

/// Why an ELF image is not a static x86-64 executable, or `None` if it is one. Static means
/// no program interpreter (PT_INTERP) and no shared library needed (DT_NEEDED); a static-pie
/// keeps a dynamic section, for relocating itself, that needs nothing.
fn static_x86_64_problem(elf: &[u8]) -> Option<String> {
    const EM_X86_64: u16 = 62;
    const PT_DYNAMIC: u32 = 2;
    const PT_INTERP: u32 = 3;
    const DT_NULL: u64 = 0;
    const DT_NEEDED: u64 = 1;
    let bytes = |offset: usize, len: usize| elf.get(offset..offset.checked_add(len)?);
    let u16_at = |offset| Some(u16::from_le_bytes(bytes(offset, 2)?.try_into().ok()?));
    let u32_at = |offset| Some(u32::from_le_bytes(bytes(offset, 4)?.try_into().ok()?));
    let u64_at = |offset| Some(u64::from_le_bytes(bytes(offset, 8)?.try_into().ok()?));
    let usize_at = |offset| usize::try_from(u64_at(offset)?).ok();
    let truncated = || Some("truncated ELF headers".to_owned());

    if elf.get(..4) != Some(b"\x7fELF".as_slice()) {
        return Some("not an ELF file".to_owned());
    }
    if elf.get(4..6) != Some([2, 1].as_slice()) {
        return Some("not a 64-bit little-endian ELF file".to_owned());
    }
    if u16_at(18) != Some(EM_X86_64) {
        return Some(format!("not x86-64 (e_machine {:?})", u16_at(18)));
    }
    let (Some(table), Some(entry_size), Some(count)) = (usize_at(32), u16_at(54), u16_at(56))
    else {
        return truncated();
    };
    for index in 0..usize::from(count) {
        let header = table + index * usize::from(entry_size);
        let (Some(kind), Some(offset), Some(size)) =
            (u32_at(header), usize_at(header + 8), usize_at(header + 32))
        else {
            return truncated();
        };
        match kind {
            PT_INTERP => {
                let interpreter = bytes(offset, size).map(String::from_utf8_lossy);
                return Some(format!(
                    "dynamically linked: program interpreter {interpreter:?}"
                ));
            }
            PT_DYNAMIC => {
                for entry in (offset..offset.saturating_add(size)).step_by(16) {
                    let Some(tag) = u64_at(entry) else {
                        return truncated();
                    };
                    match tag {
                        DT_NULL => break,
                        DT_NEEDED => {
                            return Some("dynamically linked: needs shared libraries".to_owned());
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    None
}

#[test]
fn build_script_puts_a_static_x86_64_executable_in_the_pushed_folder() {
    let binary = built_binary();
    let application = manifest_for("v1");
    let pushed_dir = application.pushed_dir();
    assert_eq!(binary.parent(), Some(pushed_dir.as_path()));

    let mode = fs::metadata(binary).expect("binary").permissions().mode();
    assert_eq!(
        mode & 0o111,
        0o111,
        "{} is not executable by everyone: {mode:o}",
        binary.display()
    );

    let image = fs::read(binary).expect("binary");
    assert_eq!(static_x86_64_problem(&image), None, "{}", binary.display());
    // The check itself tells a dynamic executable apart: this test program links libc.
    let this_test = fs::read(std::env::current_exe().expect("current exe")).expect("test exe");
    assert!(static_x86_64_problem(&this_test).is_some());

    // `cf push` uploads the whole folder: it must hold the binary and nothing else.
    let mut uploaded: Vec<String> = fs::read_dir(&pushed_dir)
        .expect("pushed folder")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    uploaded.sort();
    assert_eq!(uploaded, [BINARY_NAME]);

    let size = image.len() as u64;
    assert!(
        size < quota_bytes(&application.disk_quota),
        "the {size}-byte binary does not fit the {} disk quota",
        application.disk_quota
    );
}

// ---------------------------------------------------------------------------------------------
// Running it as Diego does

/// hello-cf started as Diego starts an app instance: `bash -c <command>` in the pushed folder
/// with `PORT`, the instance variables and the manifest's env, and nothing else inherited.
/// `PORT=0` stands in for the port Diego assigns: the OS picks it and the app's "listening"
/// line names it, so no other test can take it between choosing and binding.
struct Instance {
    child: ChildProcess,
    port: u16,
}

impl Instance {
    /// Starts the app, reads its port from its log, and waits for its health check to pass.
    async fn start(application: &Application) -> Instance {
        let mut child =
            ChildProcess::spawn(&application.name, diego_command(application), Stdout::Log);
        let address: SocketAddr = child
            .wait_for_line("its listening address", START_DEADLINE, |line| {
                if !line.contains("hello-cf listening") {
                    return None;
                }
                line.split_whitespace()
                    .find_map(|word| word.strip_prefix("address="))?
                    .parse()
                    .ok()
            })
            .await;
        let mut instance = Instance {
            child,
            port: address.port(),
        };
        instance
            .wait_until_healthy(&application.health_check_http_endpoint)
            .await;
        instance
    }

    fn pid(&self) -> u32 {
        self.child.pid()
    }

    fn log(&self) -> String {
        self.child.log()
    }

    /// Polls the health endpoint as Diego's http health check does: healthy on a 200.
    async fn wait_until_healthy(&mut self, endpoint: &str) {
        let started = Instant::now();
        let mut last_error = String::from("no attempt");
        while started.elapsed() < START_DEADLINE {
            if let Some(status) = self.child.try_exit() {
                panic!("exited with {status}; its log:\n{}", self.log());
            }
            match http_get(self.port, endpoint, &[]).await {
                Ok(response) if response.status == 200 => return,
                Ok(response) => last_error = format!("{endpoint} answered {}", response.status),
                Err(error) => last_error = error.to_string(),
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        panic!(
            "not healthy within {START_DEADLINE:?} ({last_error}); its log:\n{}",
            self.log()
        );
    }

    /// Sends SIGTERM, as Diego does to stop an instance, and waits for the exit.
    async fn terminate(&mut self, deadline: Duration) -> Option<ExitStatus> {
        self.child.terminate();
        self.child.wait_exit_within(deadline).await
    }
}

fn diego_command(application: &Application) -> tokio::process::Command {
    let pushed_dir = application.pushed_dir();
    let vcap_application = format!(
        r#"{{"application_name":"{}","instance_index":0,"uris":["{}.apps.cf.example"]}}"#,
        application.name, application.name
    );
    let mut command = tokio::process::Command::new("bash");
    command
        .arg("-c")
        .arg(&application.command)
        .current_dir(&pushed_dir)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", &pushed_dir)
        .env("LANG", "en_US.UTF-8")
        .env("PORT", "0")
        .env("CF_INSTANCE_INDEX", "0")
        .env("VCAP_APPLICATION", vcap_application)
        .envs(&application.env);
    command
}

fn wait_with_deadline(child: &mut Child, deadline: Duration) -> Option<ExitStatus> {
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if started.elapsed() < deadline => thread::sleep(POLL_INTERVAL),
            Ok(None) | Err(_) => return None,
        }
    }
}

fn signal_process_group(leader: u32, signal: &str) {
    // bash's builtin `kill`, so no extra tool or crate is needed.
    let target = format!("-{leader}");
    let status = Command::new("bash")
        .args([
            "-c",
            r#"kill "$1" -- "$2""#,
            "kill",
            &format!("-{signal}"),
            &target,
        ])
        .status()
        .expect("bash kill");
    assert!(status.success(), "kill -{signal} {target} failed");
}

/// Whether something listens on `port` on every IPv4 address or every address: the router
/// reaches a container on its own address, never on loopback.
fn listens_on_all_interfaces(port: u16) -> bool {
    const TCP_LISTEN: &str = "0A";
    let any_v4 = format!("00000000:{port:04X}");
    let any_v6 = format!("{}:{port:04X}", "0".repeat(32));
    [("/proc/net/tcp", any_v4), ("/proc/net/tcp6", any_v6)]
        .iter()
        .any(|(table, wanted)| {
            fs::read_to_string(table).is_ok_and(|text| {
                text.lines().skip(1).any(|line| {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    fields.get(1) == Some(&wanted.as_str()) && fields.get(3) == Some(&TCP_LISTEN)
                })
            })
        })
}

/// Resident memory of a process, which the container's memory limit bounds.
fn resident_bytes(pid: u32) -> u64 {
    Memory::of(pid).expect("process status").rss_kib * 1024
}

/// GET `path` on `127.0.0.1:<port>` with `headers` (Host defaults to the address), as raw
/// bytes on the wire: the test compares what the app sent, nothing in between.
async fn http_get(port: u16, path: &str, headers: &[(&str, &str)]) -> io::Result<RawResponse> {
    let default_host = format!("127.0.0.1:{port}");
    let host = headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("host"))
        .map_or(default_host.as_str(), |(_, value)| *value);
    let others: Vec<(&str, &str)> = headers
        .iter()
        .filter(|(name, _)| !name.eq_ignore_ascii_case("host"))
        .copied()
        .collect();
    let request = raw_http::get_request(path, host, &others);
    raw_http::exchange(
        SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        &request,
        IO_TIMEOUT,
    )
    .await
}

/// What the gorouter adds to a request before it reaches the app: the client's address, the
/// scheme it terminated TLS for, a request id, the arrival time and (with tracing on) trace
/// context. Host is the route, and the app must answer regardless.
fn gorouter_headers(route: &str) -> Vec<(&str, &str)> {
    vec![
        ("Host", route),
        ("X-Forwarded-For", "198.51.100.23, 10.0.16.4"),
        ("X-Forwarded-Proto", "https"),
        ("X-Vcap-Request-Id", "4e5a8a3b-61a4-4a9b-6f2e-3c1d2a9b8e7f"),
        ("X-Request-Start", "1767225600123"),
        ("X-B3-Traceid", "4e5a8a3b61a44a9b6f2e3c1d2a9b8e7f"),
        ("X-B3-Spanid", "6f2e3c1d2a9b8e7f"),
        (
            "traceparent",
            "00-4e5a8a3b61a44a9b6f2e3c1d2a9b8e7f-6f2e3c1d2a9b8e7f-01",
        ),
    ]
}

async fn started_as_cloud_foundry_starts_it_answers_byte_exact(version: &str) {
    tokio::task::spawn_blocking(built_binary)
        .await
        .expect("the build");
    let application = manifest_for(version);
    let mut instance = Instance::start(&application).await;
    let port = instance.port;

    // Diego's http health check, on the manifest's endpoint.
    let health = http_get(port, &application.health_check_http_endpoint, &[])
        .await
        .expect("health check");
    assert_eq!(
        health.status, 200,
        "health check on {}",
        application.health_check_http_endpoint
    );

    let route = format!("{}.apps.cf.example", application.name);
    let response = http_get(port, "/", &gorouter_headers(&route))
        .await
        .expect("GET /");
    let greeting = format!("Hello K8s, from CF {version} service!\n");
    assert_eq!(response.status, 200);
    assert_eq!(
        response.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(response.header("content-length"), Some("31"));
    assert_eq!(
        String::from_utf8_lossy(&response.body),
        greeting,
        "body of GET / for {version}"
    );
    assert_eq!(response.body, greeting.as_bytes());

    assert!(
        listens_on_all_interfaces(port),
        "{} does not listen on 0.0.0.0:{port} (or [::]:{port}); the router could not reach it",
        application.name
    );
    let resident = resident_bytes(instance.pid());
    assert!(
        resident < quota_bytes(&application.memory),
        "{} uses {resident} bytes, over its {} memory quota",
        application.name,
        application.memory
    );

    // Diego signals the process it started: with `exec`, that is hello-cf itself.
    let executable = fs::read_link(format!("/proc/{}/exe", instance.pid())).expect("process exe");
    assert_eq!(
        executable.file_name().and_then(|name| name.to_str()),
        Some(BINARY_NAME),
        "the started process is {}, so SIGTERM would not reach {BINARY_NAME}",
        executable.display()
    );

    // A client stuck halfway through its request must not keep the instance past the grace
    // period: the manifest's DRAIN_TIMEOUT ends the drain before Diego's SIGKILL.
    let mut stuck_client =
        TcpStream::connect((Ipv4Addr::LOCALHOST, port)).expect("connect a stuck client");
    stuck_client
        .write_all(b"GET / HTTP/1.1\r\nHost: stuck.example\r\n")
        .expect("half a request");
    let stopping = Instant::now();
    let status = instance.terminate(DIEGO_GRACE_PERIOD).await;
    let stop_time = stopping.elapsed();
    let log = instance.log();
    let status = status.unwrap_or_else(|| {
        panic!(
            "{} still runs {DIEGO_GRACE_PERIOD:?} after SIGTERM; its log:\n{log}",
            application.name
        )
    });
    assert!(
        stop_time < DIEGO_GRACE_PERIOD,
        "{} took {stop_time:?} to stop; Diego would have killed it; its log:\n{log}",
        application.name
    );
    assert!(
        status.success(),
        "{} stopped with {status} after {stop_time:?}; its log:\n{log}",
        application.name
    );
}

#[tokio::test]
async fn v1_started_as_cloud_foundry_starts_it_answers_byte_exact_and_stops_on_sigterm() {
    started_as_cloud_foundry_starts_it_answers_byte_exact("v1").await;
}

#[tokio::test]
async fn v2_started_as_cloud_foundry_starts_it_answers_byte_exact_and_stops_on_sigterm() {
    started_as_cloud_foundry_starts_it_answers_byte_exact("v2").await;
}
