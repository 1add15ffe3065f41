//! `--header` / `HEADER`: extra headers on every call, as `curl -H`, through a proxy too, and
//! bad ones refused at start.

use axum::http::HeaderMap;
use clap::Parser as _;
use traffic::Config;

use crate::support::{output, respond, run_lines, scripted, traffic};

/// An upstream that answers `ok` to every request (and records them).
async fn recording_upstream() -> crate::support::Upstream {
    scripted(|_| async { respond(200, "ok\n") }).await
}

fn values(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .map(|value| value.to_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn every_call_carries_the_configured_headers() {
    let upstream = recording_upstream().await;
    let url = upstream.url();
    let config = Config::try_parse_from([
        "traffic",
        "--url",
        &url,
        "--interval",
        "20ms",
        "--count",
        "3",
        "-H",
        "X-Canary: yes",
        "--header",
        "X-Team: a",
        "--header",
        "X-Team: b",
        "--header",
        "User-Agent: canary-user/1",
        "--header",
        "Host: canary.example",
    ])
    .unwrap();
    let (report, _) = run_lines(&config).await;
    assert_eq!(report.calls, 3);
    let seen = upstream.arrivals();
    assert_eq!(seen.len(), 3);
    for request in &seen {
        assert_eq!(values(&request.headers, "x-canary"), ["yes"]);
        assert_eq!(values(&request.headers, "x-team"), ["a", "b"]);
        // A configured header replaces the client's own.
        assert_eq!(values(&request.headers, "user-agent"), ["canary-user/1"]);
        assert_eq!(values(&request.headers, "host"), ["canary.example"]);
    }
}

#[tokio::test]
async fn without_headers_nothing_extra_is_sent() {
    let upstream = recording_upstream().await;
    let out = output(traffic().env("URL", upstream.url()).env("COUNT", "1")).await;
    assert_eq!(out.status.code(), Some(0));
    let seen = upstream.arrivals();
    let mut names: Vec<&str> = seen[0].headers.keys().map(|name| name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["accept", "host", "user-agent"], "{seen:?}");
    assert!(values(&seen[0].headers, "user-agent")[0].starts_with("traffic/"));
}

/// The env var holds one header per line, as a Kubernetes `value: |` block gives it (with a
/// trailing newline); it reaches the upstream through `http_proxy`, as in the local mesh.
#[tokio::test]
async fn the_env_var_holds_one_header_per_line_and_goes_through_the_proxy() {
    let proxy = recording_upstream().await;
    let out = output(
        traffic()
            // A name that no resolver knows: only the proxy can take the call.
            .env("URL", "http://hello.external/")
            .env("http_proxy", proxy.url())
            .env("COUNT", "2")
            .env("INTERVAL", "20ms")
            .env("HEADER", "X-Canary: yes\nX-User: alice\r\n\n"),
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.lines().count(), 2, "{stdout}");
    assert!(
        stdout.lines().all(|line| line.ends_with("\tok")),
        "{stdout}"
    );
    let seen = proxy.arrivals();
    assert_eq!(seen.len(), 2);
    for request in &seen {
        assert_eq!(request.target, "http://hello.external/");
        assert_eq!(values(&request.headers, "host"), ["hello.external"]);
        assert_eq!(values(&request.headers, "x-canary"), ["yes"]);
        assert_eq!(values(&request.headers, "x-user"), ["alice"]);
    }
}

#[tokio::test]
async fn bad_headers_exit_2_naming_the_flag_and_env_var() {
    let cases = [
        "X-Canary yes",
        "X Canary: yes",
        ": yes",
        "X-Canary:",
        "X-Canary: a\u{7f}b",
        "Content-Length: 5",
        // One bad line among good ones is named alone, and the error stays one line.
        "X-Canary: yes\nnot a header\nX-User: alice",
    ];
    for value in cases {
        let out = output(traffic().env("HEADER", value)).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{value:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{value:?}");
        assert_eq!(stderr.lines().count(), 1, "{value:?}: {stderr}");
        assert!(
            stderr.starts_with("traffic: ") && stderr.contains("--header (env HEADER)"),
            "{value:?}: {stderr}"
        );
    }
    let out = output(traffic().args(["-H", "no colon here"])).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("'no colon here'"), "{stderr}");
}

#[tokio::test]
async fn help_shows_the_header_option() {
    let out = output(traffic().arg("--help")).await;
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("-H, --header <NAME: VALUE>"), "{help}");
    assert!(help.contains("[env: HEADER"), "{help}");
}
