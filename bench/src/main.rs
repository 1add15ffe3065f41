use std::process::ExitCode;

use anyhow::Context as _;
use bench_tools::config::Config;
use bench_tools::run::Bench;

fn main() -> ExitCode {
    let config: Config = demo_common::cli::parse_or_exit();
    if let Err(line) = bench_tools::run::check_config(&config) {
        demo_common::cli::config_error_exit(&line);
    }
    demo_common::logging::init(config.log_format, "info,demo_common=warn");
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: Config) -> anyhow::Result<()> {
    let out = config.out.clone();
    let work = tempfile::Builder::new()
        .prefix("bench-")
        .tempdir()
        .context("cannot create a scratch directory")?;
    let command = config.command_line.clone();
    let result = Bench::new(config, work.path(), command).and_then(Bench::run);
    let report = match result {
        Ok(report) => report,
        Err(error) => {
            // Keep the configs and logs for a look at what went wrong.
            let kept = work.keep();
            return Err(error.context(format!("configs and logs kept in {}", kept.display())));
        }
    };
    let table = report.render();
    print!("{table}");
    std::fs::write(&out, &table).with_context(|| format!("cannot write {}", out.display()))?;
    tracing::info!(path = %out.display(), "table written");
    Ok(())
}
