//! The real binary: exit codes, COUNT, signals, and stdout flushed line by line.

use std::time::Duration;

use crate::support::{RUN_BOUND, field, output, respond, scripted, traffic};
use demo_testkit::ChildProcess;
use demo_testkit::process::Stdout;

#[tokio::test]
async fn bad_configuration_exits_2_naming_flag_and_env_var() {
    let cases = [
        ("INTERVAL", "abc", "--interval"),
        ("URL", "not-a-url", "--url"),
        ("COUNT", "-1", "--count"),
        ("SUMMARY_EVERY", "xyz", "--summary-every"),
        ("TIMEOUT", "0", "--timeout"),
        ("MAX_BODY", "lots", "--max-body"),
        ("LOG_FORMAT", "xml", "--log-format"),
    ];
    for (env, value, flag) in cases {
        let out = output(traffic().env(env, value)).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{env}={value}: {stderr}");
        assert!(out.stdout.is_empty(), "{env}={value}");
        assert_eq!(stderr.lines().count(), 1, "{env}={value}: {stderr}");
        assert!(
            stderr.starts_with("traffic: ") && stderr.contains(&format!("{flag} (env {env})")),
            "{env}={value}: {stderr}"
        );
        assert!(stderr.contains(&format!("'{value}'")), "{stderr}");
    }
    // The same through a flag.
    let out = output(traffic().args(["--interval", "soon"])).await;
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test]
async fn help_lists_every_option_and_exits_0() {
    let out = output(traffic().arg("--help")).await;
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for env in [
        "URL",
        "INTERVAL",
        "TIMEOUT",
        "COUNT",
        "SUMMARY_EVERY",
        "MAX_BODY",
        "LOG_FORMAT",
    ] {
        assert!(help.contains(&format!("[env: {env}=")), "{env}: {help}");
    }
}

#[tokio::test]
async fn count_ends_the_run_with_the_final_summary_and_exit_0() {
    let upstream = scripted(|_| async { respond(200, "Hello K8s, from CF v1 service!\n") }).await;
    let out = output(
        traffic()
            .env("URL", upstream.url())
            .env("INTERVAL", "50ms")
            .env("COUNT", "3")
            .env("SUMMARY_EVERY", "30s"),
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<_> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    for line in &lines[..3] {
        assert_eq!(field(line), "Hello K8s, from CF v1 service!");
    }
    assert_eq!(
        lines[3],
        "# total 3 calls: 100% (3) Hello K8s, from CF v1 service!"
    );
    assert_eq!(upstream.arrivals().len(), 3);
}

#[tokio::test]
async fn sigterm_ends_an_endless_run_promptly_with_exit_0() {
    let upstream = scripted(|_| async { respond(200, "ok\n") }).await;
    let mut command = traffic();
    command
        .env("URL", upstream.url())
        .env("INTERVAL", "100ms")
        .env("SUMMARY_EVERY", "1000");
    let mut child = ChildProcess::spawn("traffic", command, Stdout::Piped);

    // Lines arrive while the process runs: stdout is flushed per line, even into a pipe.
    let mut lines = Vec::new();
    while lines.len() < 2 {
        let line = child
            .next_stdout_line(RUN_BOUND)
            .await
            .expect("stdout closed early");
        lines.push(line);
    }

    child.terminate();
    let signalled = tokio::time::Instant::now();
    while let Some(line) = child.next_stdout_line(RUN_BOUND).await {
        lines.push(line);
    }
    let status = child.wait_exit(RUN_BOUND).await;
    assert_eq!(status.code(), Some(0), "{}", child.log());
    assert!(
        signalled.elapsed() < Duration::from_secs(5),
        "exit took {:?}",
        signalled.elapsed()
    );

    let calls = lines.iter().filter(|line| !line.starts_with('#')).count();
    for line in &lines[..calls] {
        assert_eq!(field(line), "ok");
    }
    assert_eq!(lines.len(), calls + 1, "{lines:?}");
    assert_eq!(
        lines[calls],
        format!("# total {calls} calls: 100% ({calls}) ok")
    );
}
