//! Bad input to all three binaries: every configuration value tried with malformed input, once
//! through its environment variable and once through its flag. Each must end the program with
//! exit code 2 and exactly one line on stderr naming what was wrong: no panic, no start-up on a
//! default taken in its place (the base environment would let a program that accepted the value
//! start, and that shows as a wrong exit code or a timeout).

use std::path::Path;
use std::time::Duration;

use crate::support::{binary, figure, loading};
use demo_testkit::tls::Issued;
use tokio::process::Command;

/// A program that accepted a bad value keeps running; it is stopped and reported after this.
const BOUND: Duration = Duration::from_secs(15);

/// One malformed value for one setting.
struct Case {
    env: &'static str,
    flag: &'static str,
    value: String,
}

fn cases(env: &'static str, flag: &'static str, values: &[&str]) -> Vec<Case> {
    values
        .iter()
        .map(|value| Case {
            env,
            flag,
            value: (*value).to_owned(),
        })
        .collect()
}

const PORTS: &[&str] = &[
    "",
    " ",
    "-1",
    "65536",
    "70000",
    "http",
    "8080.0",
    "0x1f90",
    "1e3",
    "８０８０",
    "80 80",
    "8080s",
];
const ADDRESSES: &[&str] = &[
    "",
    "everywhere",
    "localhost",
    "256.0.0.1",
    "127.0.0.1:80",
    "[::1]",
    "1.2.3",
    "::g",
];
/// Malformed for any duration setting.
const DURATIONS: &[&str] = &[
    "",
    " ",
    "soon",
    "-1",
    "-1s",
    "1x",
    "1.2.3",
    ".",
    "s",
    "inf",
    "NaN",
    "1e3",
    "5 s s",
    "1d",
    "99999999999999999999999h",
    "5 parsecs",
];
/// Malformed only where the duration must be positive (timeouts, intervals).
const ZERO_DURATIONS: &[&str] = &["0", "0s", "0ms", "0.0"];
/// Serving threads: a whole number from 1 to 1024.
const WORKERS: &[&str] = &["", "0", "-1", "two", "1.5", "1025", "99999999999999999999"];
const LOG_FORMATS: &[&str] = &["", "xml", "JSON", "text,json", "1"];
/// Malformed as any http(s) URL.
const URLS: &[&str] = &[
    "",
    "not-a-url",
    "hello.external",
    "/relative",
    "ftp://example/",
    "file:///etc/passwd",
    "mailto:a@b",
    "http://",
    "http://:80/",
    "http://exa mple/",
    "http://[::1/",
    "http://h:99999/",
    "http://h:port/",
];

fn hello_cf_cases() -> Vec<Case> {
    let mut all = Vec::new();
    all.extend(cases("PORT", "--port", PORTS));
    all.extend(cases("BIND_ADDRESS", "--bind-address", ADDRESSES));
    all.extend(cases(
        "HELLO_VERSION",
        "--hello-version",
        &["", "v3", "V1", "1", "v1,v2", "latest", "v1 "],
    ));
    all.extend(cases("DRAIN_TIMEOUT", "--drain-timeout", DURATIONS));
    all.extend(cases("WORKERS", "--workers", WORKERS));
    all.extend(cases("LOG_FORMAT", "--log-format", LOG_FORMATS));
    all
}

fn proxy_cases() -> Vec<Case> {
    let mut all = Vec::new();
    all.extend(cases("PORT", "--port", PORTS));
    all.extend(cases("ADMIN_PORT", "--admin-port", PORTS));
    all.extend(cases("BIND_ADDRESS", "--bind-address", ADDRESSES));
    let mut upstream_urls = URLS.to_vec();
    upstream_urls.extend([
        "http://h/?q=1",
        "http://h/#top",
        "http://user:pass@h/",
        "http://h:0/",
    ]);
    all.extend(cases("UPSTREAM_URL", "--upstream-url", &upstream_urls));
    all.extend(cases("UPSTREAM_TIMEOUT", "--upstream-timeout", DURATIONS));
    all.extend(cases(
        "UPSTREAM_TIMEOUT",
        "--upstream-timeout",
        ZERO_DURATIONS,
    ));
    all.extend(cases("DRAIN_TIMEOUT", "--drain-timeout", DURATIONS));
    all.extend(cases("WORKERS", "--workers", WORKERS));
    all.extend(cases("LOG_FORMAT", "--log-format", LOG_FORMATS));
    all
}

fn traffic_cases() -> Vec<Case> {
    let mut all = Vec::new();
    all.extend(cases("URL", "--url", URLS));
    all.extend(cases("INTERVAL", "--interval", DURATIONS));
    all.extend(cases("INTERVAL", "--interval", ZERO_DURATIONS));
    all.extend(cases("INTERVAL", "--interval", &["0.1ms", "0.0005"]));
    all.extend(cases("TIMEOUT", "--timeout", DURATIONS));
    all.extend(cases("TIMEOUT", "--timeout", ZERO_DURATIONS));
    all.extend(cases(
        "COUNT",
        "--count",
        &[
            "",
            "0",
            "-1",
            "1.5",
            "ten",
            "1e3",
            "0x10",
            "99999999999999999999999",
            "unlimited",
            "5s",
        ],
    ));
    all.extend(cases(
        "SUMMARY_EVERY",
        "--summary-every",
        &[
            "",
            "0",
            "0s",
            "-3",
            "1.5",
            "xyz",
            "30 parsecs",
            "0.0001ms",
            "on",
        ],
    ));
    all.extend(cases(
        "MAX_BODY",
        "--max-body",
        &[
            "",
            "0",
            "-1",
            "4k",
            "4KiB",
            "1.5",
            "16777217",
            "99999999999",
            "99999999999999999999999",
        ],
    ));
    all.extend(cases("LOG_FORMAT", "--log-format", LOG_FORMATS));
    all
}

/// What one run of a binary printed.
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

async fn run(program: &str, args: &[String], env: &[(&str, &str)]) -> Ran {
    let mut command = Command::new(binary(program));
    command.args(args).env_clear().envs(env.iter().copied());
    // A program still running at the bound accepted the bad value.
    let name = format!("{program} {args:?} {env:?}");
    let output = demo_testkit::process::output(&name, &mut command, BOUND).await;
    Ran {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Checks the one-line error shape; `names` is text the line must contain.
fn check(program: &str, what: &str, ran: &Ran, names: &[&str]) {
    let Ran {
        code,
        stdout,
        stderr,
    } = ran;
    assert_eq!(*code, Some(2), "{what}: exit {code:?}, stderr {stderr:?}");
    assert!(
        stderr.ends_with('\n') && stderr.lines().count() == 1,
        "{what}: exactly one line expected on stderr, got {stderr:?}"
    );
    assert!(
        stderr.starts_with(&format!("{program}: ")),
        "{what}: {stderr:?}"
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
        "{what}: {stderr:?}"
    );
    for name in names {
        assert!(stderr.contains(name), "{what}: {stderr:?} lacks {name:?}");
    }
    assert!(stdout.is_empty(), "{what}: stdout {stdout:?}");
}

/// Tries every case through its variable and through its flag, over `base` (a configuration
/// that would start). Returns the number of runs.
async fn try_all(program: &str, base: &[(&str, &str)], cases: &[Case]) -> usize {
    let mut runs = 0;
    for case in cases {
        let env_named = format!("{} (env {})", case.flag, case.env);
        let quoted = format!("'{}'", case.value);
        let names = [env_named.as_str(), quoted.as_str()];

        // The rest of the base configuration, so that only the value under test is bad.
        let others: Vec<(&str, &str)> = base
            .iter()
            .filter(|(name, _)| *name != case.env)
            .copied()
            .collect();

        let mut env = others.clone();
        env.push((case.env, &case.value));
        let what = format!("{program} with {}={:?}", case.env, case.value);
        check(program, &what, &run(program, &[], &env).await, &names);

        // `--flag=value`, so that values starting with `-` stay values.
        let args = [format!("{}={}", case.flag, case.value)];
        let what = format!("{program} {}", args[0]);
        check(program, &what, &run(program, &args, &others).await, &names);
        runs += 2;
    }
    runs
}

#[tokio::test]
async fn hello_cf_rejects_every_malformed_value() {
    let _loading = loading().await;
    let base = [("BIND_ADDRESS", "127.0.0.1"), ("PORT", "0")];
    let runs = try_all("hello-cf", &base, &hello_cf_cases()).await;
    figure(
        "bad_input",
        format!("hello-cf: {runs} malformed inputs, each exit 2 with one line"),
    );
}

#[tokio::test]
async fn the_proxy_rejects_every_malformed_value() {
    let _loading = loading().await;
    let base = [
        ("BIND_ADDRESS", "127.0.0.1"),
        ("PORT", "0"),
        ("ADMIN_PORT", "0"),
        ("UPSTREAM_URL", "http://127.0.0.1:9/"),
    ];
    let runs = try_all("app-that-calls-externally", &base, &proxy_cases()).await;
    figure(
        "bad_input",
        format!("app-that-calls-externally: {runs} malformed inputs, each exit 2 with one line"),
    );
}

#[tokio::test]
async fn traffic_rejects_every_malformed_value() {
    let _loading = loading().await;
    // Valid, it would make one call to the discard port and exit 0.
    let base = [("URL", "http://127.0.0.1:9/"), ("COUNT", "1")];
    let runs = try_all("traffic", &base, &traffic_cases()).await;
    figure(
        "bad_input",
        format!("traffic: {runs} malformed inputs, each exit 2 with one line"),
    );
}

/// Certificate and key files a user can get wrong.
struct Files {
    _dir: tempfile::TempDir,
    cert: String,
    key: String,
    other_key: String,
    other_cert: String,
    empty: String,
    directory: String,
    garbage: String,
    bad_base64: String,
    missing: String,
}

fn files() -> Files {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, content: &[u8]| -> String {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        path_text(&path)
    };
    let ours = Issued::self_signed(&["localhost"]);
    let theirs = Issued::self_signed(&["localhost"]);
    let directory = dir.path().join("a-directory");
    std::fs::create_dir(&directory).unwrap();
    Files {
        cert: write("cert.pem", ours.cert_pem.as_bytes()),
        key: write("key.pem", ours.key_pem.as_bytes()),
        other_key: write("other-key.pem", theirs.key_pem.as_bytes()),
        other_cert: write("other-cert.pem", theirs.cert_pem.as_bytes()),
        empty: write("empty.pem", b""),
        directory: path_text(&directory),
        garbage: write("garbage.pem", b"this is not PEM\n\x00\xff\n"),
        bad_base64: write(
            "bad-base64.pem",
            b"-----BEGIN CERTIFICATE-----\n!!!not base64!!!\n-----END CERTIFICATE-----\n",
        ),
        missing: path_text(&dir.path().join("missing.pem")),
        _dir: dir,
    }
}

fn path_text(path: &Path) -> String {
    path.to_str().expect("UTF-8 temp path").to_owned()
}

#[tokio::test]
async fn hello_cf_rejects_unusable_certificates_and_keys() {
    let _loading = loading().await;
    let f = files();
    // (cert, key, text the line must contain)
    let cases: Vec<(Option<&str>, Option<&str>, &str)> = vec![
        (Some(&f.cert), None, "--tls-key"),
        (None, Some(&f.key), "--tls-cert"),
        (Some(&f.missing), Some(&f.key), &f.missing),
        (Some(&f.cert), Some(&f.missing), &f.missing),
        (Some(&f.directory), Some(&f.key), &f.directory),
        (Some(&f.cert), Some(&f.directory), &f.directory),
        (Some(&f.empty), Some(&f.key), &f.empty),
        (Some(&f.cert), Some(&f.empty), &f.empty),
        (Some(&f.garbage), Some(&f.key), &f.garbage),
        (Some(&f.cert), Some(&f.garbage), &f.garbage),
        (Some(&f.bad_base64), Some(&f.key), &f.bad_base64),
        (Some(&f.key), Some(&f.key), &f.key),
        (Some(&f.cert), Some(&f.cert), &f.cert),
        (Some(&f.cert), Some(&f.other_key), "do not"),
        (Some(&f.other_cert), Some(&f.key), "do not"),
    ];
    let mut runs = 0;
    for (cert, key, mentions) in &cases {
        let mut env = vec![("BIND_ADDRESS", "127.0.0.1"), ("PORT", "0")];
        let mut args = Vec::new();
        if let Some(cert) = cert {
            env.push(("TLS_CERT", cert));
            args.push(format!("--tls-cert={cert}"));
        }
        if let Some(key) = key {
            env.push(("TLS_KEY", key));
            args.push(format!("--tls-key={key}"));
        }
        let what = format!("hello-cf with cert {cert:?} key {key:?}");
        check(
            "hello-cf",
            &what,
            &run("hello-cf", &[], &env).await,
            &[mentions],
        );
        let base = &env[..2];
        check(
            "hello-cf",
            &what,
            &run("hello-cf", &args, base).await,
            &[mentions],
        );
        runs += 2;
    }
    figure(
        "bad_input",
        format!(
            "hello-cf: {runs} unusable certificate/key combinations, each exit 2 with one line"
        ),
    );
}

#[tokio::test]
async fn the_proxy_rejects_unusable_ca_files() {
    let _loading = loading().await;
    let f = files();
    let unusable = [
        &f.missing,
        &f.directory,
        &f.empty,
        &f.garbage,
        &f.bad_base64,
        &f.key,
    ];
    let mut runs = 0;
    for upstream in ["https://127.0.0.1:9/", "http://127.0.0.1:9/"] {
        for path in unusable {
            let env = [
                ("BIND_ADDRESS", "127.0.0.1"),
                ("PORT", "0"),
                ("ADMIN_PORT", "0"),
                ("UPSTREAM_URL", upstream),
                ("UPSTREAM_CA_CERT", path.as_str()),
            ];
            let what = format!("proxy for {upstream} with UPSTREAM_CA_CERT={path}");
            let names = ["--upstream-ca-cert (env UPSTREAM_CA_CERT)", path.as_str()];
            let program = "app-that-calls-externally";
            check(program, &what, &run(program, &[], &env).await, &names);
            let args = [format!("--upstream-ca-cert={path}")];
            check(
                program,
                &what,
                &run(program, &args, &env[..4]).await,
                &names,
            );
            runs += 2;
        }
    }
    figure(
        "bad_input",
        format!("app-that-calls-externally: {runs} unusable CA files, each exit 2 with one line"),
    );
}
