//! Every file of k8s/patterns/, applied to a running demo with `local-mesh apply -f`, as a user
//! applies it from a second terminal, and what the caller's log then shows. Between two patterns
//! k8s/istio.yml is applied back, as k8s/README.md says to. The fault knobs of hello-v2 are set
//! with the code behind `local-mesh set-env` ([`Mesh::set_hello_env`]); the canary user is the
//! real `local-mesh call`.
//!
//! One demo serves several patterns (starting one costs seconds, applying a file milliseconds);
//! the caller calls every 10 ms, so hundreds of lines take seconds.
//!
//! Each share is checked against the nearest wrong policy named next to it, with its false-alarm
//! rate: how often the check fails by chance when the mesh does exactly what the file says.

use crate::support;
use crate::support::ONE_MESH_AT_A_TIME;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use local_mesh::mesh::{self, Mesh, MeshEvent};
use local_mesh::policy::HelloVersion;
use support::{Answer, classify};
use tokio::time::Instant;

const BINARY: &str = env!("CARGO_BIN_EXE_local-mesh");

const V1: Answer = Answer::Hello(HelloVersion::V1);
const V2: Answer = Answer::Hello(HelloVersion::V2);
const TIMEOUT_BODY: &str = "upstream request timeout";
const OVERFLOW_BODY: &str =
    "upstream connect error or disconnect/reset before headers. reset reason: overflow";

/// Lines of calls that may have started under the previous policy are skipped for this long
/// after a change: a call takes milliseconds, or at most the route's 3 s timeout.
const SETTLE_FAST: Duration = Duration::from_millis(500);
const SETTLE_SLOW: Duration = Duration::from_millis(3500);

impl support::Demo {
    /// `local-mesh apply -f <file>`, which must succeed; then the lines of calls that may have
    /// started before it are skipped.
    async fn apply(&mut self, file: &Path, settle: Duration) {
        let output = support::apply(&self.run_dir, &[file]).await;
        assert!(
            output.status.success(),
            "apply -f {}: {}",
            file.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        self.skip(settle).await;
    }

    async fn apply_pattern(&mut self, name: &str, settle: Duration) {
        self.apply(&support::pattern_path(name), settle).await;
    }

    async fn apply_istio_yml(&mut self, settle: Duration) {
        self.apply(&support::repo_policy_path(), settle).await;
    }

    /// `local-mesh set-env hello-v2 NAME=VALUE` (`None`: unset-env), then the lines of calls
    /// from before the restart are skipped.
    async fn set_v2_env(&mut self, changes: &[(&str, Option<&str>)], settle: Duration) {
        let changes: Vec<(String, Option<String>)> = changes
            .iter()
            .map(|(name, value)| (name.to_string(), value.map(str::to_owned)))
            .collect();
        self.mesh
            .set_hello_env(HelloVersion::V2, &changes)
            .await
            .unwrap_or_else(|error| panic!("set-env: {error:#}"));
        self.skip(settle).await;
    }

    /// Reads and drops the caller's lines for `duration`; returns how many.
    async fn skip(&mut self, duration: Duration) -> usize {
        let until = Instant::now() + duration;
        let mut skipped = 0;
        while Instant::now() < until
            && tokio::time::timeout_at(until, next_line(&mut self.mesh))
                .await
                .is_ok()
        {
            skipped += 1;
        }
        skipped
    }

    /// The caller's next `count` lines, classified.
    async fn lines(&mut self, count: usize) -> Vec<(Answer, String)> {
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut lines = Vec::new();
        while lines.len() < count {
            let line = tokio::time::timeout_at(deadline, next_line(&mut self.mesh))
                .await
                .unwrap_or_else(|_| panic!("only {} lines in 90 s", lines.len()));
            lines.push((classify(&line), line));
        }
        lines
    }
}

/// The caller's next data line (its `#` notes are shown, not counted).
async fn next_line(mesh: &mut Mesh) -> String {
    loop {
        match mesh.next_event().await {
            Some(MeshEvent::CallerLine(line)) if line.starts_with('#') => eprintln!("{line}"),
            Some(MeshEvent::CallerLine(line)) => return line,
            Some(MeshEvent::ComponentDied { name, log_tail, .. }) => {
                panic!("{name} died:\n{log_tail}")
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn counts(lines: &[(Answer, String)]) -> BTreeMap<Answer, usize> {
    let mut counts = BTreeMap::new();
    for (answer, _) in lines {
        *counts.entry(answer.clone()).or_insert(0) += 1;
    }
    counts
}

fn count(lines: &[(Answer, String)], answer: &Answer) -> usize {
    lines.iter().filter(|(a, _)| a == answer).count()
}

/// Asserts a share within half the distance to the nearest wrong policy.
fn assert_share(what: &str, observed: usize, total: usize, expected: f64, nearest_wrong: f64) {
    let tolerance = (expected - nearest_wrong).abs() / 2.0;
    let share = observed as f64 / total as f64;
    assert!(
        (share - expected).abs() < tolerance,
        "{what}: {observed} of {total} lines ({share:.3}), expected {expected:.3} ± {tolerance:.3} \
         (the nearest wrong policy gives {nearest_wrong:.3})"
    );
}

/// Every line is `answer`.
fn assert_all(what: &str, lines: &[(Answer, String)], answer: &Answer) {
    assert_eq!(
        count(lines, answer),
        lines.len(),
        "{what}: {:?}",
        counts(lines)
    );
}

/// Traffic shifting in three steps, the header canary, mirroring, and delay with timeouts: one
/// demo, k8s/istio.yml applied back after each pattern.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_patterns_show_in_the_log_as_k8s_readme_says() {
    let _one = ONE_MESH_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let mut demo = support::start_demo(dir.path(), 10).await;

    // Step 1, all v1. istiod drops the 0-weight destination, so not one v2 line may appear
    // (false alarm: 0). Nearest wrong policy: 5 % to v2, which passes 150 lines with
    // probability 0.95^150 < 5e-4.
    demo.apply_pattern("traffic-shift-1-all-v1.yml", SETTLE_FAST)
        .await;
    assert_all("all v1", &demo.lines(150).await, &V1);

    // Step 2, 50/50. Nearest wrong policy: the step before or after it left in place is 0 or
    // 1; the demo's 30/70 gives 0.3. v1's share within 0.5 ± 0.1 over 400 lines: false alarm
    // 2 x P(Z > 4) = 6e-5.
    demo.apply_pattern("traffic-shift-2-half.yml", SETTLE_FAST)
        .await;
    let half = demo.lines(400).await;
    assert_eq!(
        count(&half, &V1) + count(&half, &V2),
        400,
        "{:?}",
        counts(&half)
    );
    assert_share("v1 at 50/50", count(&half, &V1), 400, 0.5, 0.3);

    // Step 3, all v2 (false alarm 0; 5 % to v1 passes with probability < 5e-4).
    demo.apply_pattern("traffic-shift-3-all-v2.yml", SETTLE_FAST)
        .await;
    assert_all("all v2", &demo.lines(150).await, &V2);

    // Header canary: the demo's caller (no header) gets v1 only; a second caller with the
    // header, `local-mesh call`, gets v2 only. Both are certain under the file's policy (false
    // alarm 0); the nearest wrong policy, a header match that never matches, gives the canary
    // v1 every time, and one line of 20 rejects it.
    demo.apply_istio_yml(SETTLE_FAST).await;
    demo.apply_pattern("header-canary.yml", SETTLE_FAST).await;
    let canary = tokio::process::Command::new(BINARY)
        .arg("call")
        .arg("--run-dir")
        .arg(&demo.run_dir)
        .args(["--header", "x-canary: always", "--count", "20"])
        .args(["--interval", "10ms", "--summary-every", "off"])
        .env_remove("LOCAL_MESH_RUN_DIR")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let (canary, others) = tokio::join!(
        async {
            tokio::time::timeout(Duration::from_secs(120), canary)
                .await
                .expect("local-mesh call did not end within 120 s")
                .expect("cannot run local-mesh call")
        },
        demo.lines(150)
    );
    assert!(
        canary.status.success(),
        "{}",
        String::from_utf8_lossy(&canary.stderr)
    );
    let canary_lines: Vec<(Answer, String)> = String::from_utf8_lossy(&canary.stdout)
        .lines()
        .filter(|line| !line.starts_with('#'))
        .map(|line| (classify(line), line.to_owned()))
        .collect();
    assert_eq!(canary_lines.len(), 20, "{canary_lines:?}");
    assert_all("the canary caller", &canary_lines, &V2);
    assert_all("the caller without the header", &others, &V1);

    // Mirroring: the log shows v1 only (certain: the copies' answers are dropped), while the
    // router's access log (v2's, as `cf logs hello-istio-v2` shows RTR lines) counts about one
    // copy for every second call. Nearest wrong policies: no mirror (0) or every call copied
    // (1): half-way is ± 0.25; over 300 calls the copies' share has sd 0.029, so a false alarm
    // is 2 x P(Z > 8.6) < 1e-17. Counting starts from all-v1 (no other request reaches v2;
    // the access log is flushed every 250 ms) and takes the lines of the calls made while
    // `apply` runs too, some of them not yet mirrored: that lowers the share by < 0.05.
    demo.apply_istio_yml(SETTLE_FAST).await;
    demo.apply_pattern("traffic-shift-1-all-v1.yml", SETTLE_SLOW)
        .await;
    let v2_host = demo
        .mesh
        .control()
        .policy()
        .await
        .cf_hosts
        .iter()
        .find(|cf| cf.version == HelloVersion::V2)
        .unwrap()
        .host
        .clone();
    let router_log = demo.mesh.access_log(mesh::CF_ROUTER);
    let v2_cluster = format!("app|{v2_host}");
    let copies = || {
        support_json_lines(&router_log)
            .iter()
            .filter(|entry| entry["upstream_cluster"] == v2_cluster.as_str())
            .count()
    };
    let before = copies();
    demo.apply_pattern("mirroring.yml", Duration::ZERO).await;
    let mirrored = demo.lines(300).await;
    assert_all("v1 only while mirroring", &mirrored, &V1);
    // Copies are fire-and-forget and the log is flushed every 250 ms: count them a moment
    // later, with the calls made meanwhile (the caller keeps calling).
    let calls = 300 + demo.skip(Duration::from_millis(600)).await;
    let after = copies();
    assert_share("copies at v2", after - before, calls, 0.5, 0.0);

    // Delay and timeouts: the gateway delays half of the requests by 2 s, the sidecar gives each
    // try 1 s and the call 3 s: 0.5^3 = 12.5 % of the lines are `upstream request timeout`,
    // the rest split 30/70. Nearest wrong policy: one retry fewer (or a per-try timeout not
    // applied, 0.5^2 = 25 %, or no retries, 50 %); half-way is ± 0.0625; over 500 lines sd is
    // 0.0148, a false alarm 2 x P(Z > 4.2) = 3e-5.
    demo.apply_istio_yml(SETTLE_FAST).await;
    demo.apply_pattern("delay-timeouts.yml", SETTLE_SLOW).await;
    let delayed = demo.lines(500).await;
    let timeouts = delayed
        .iter()
        .filter(|(answer, _)| *answer == Answer::Other(TIMEOUT_BODY.to_owned()))
        .count();
    assert_eq!(
        timeouts + count(&delayed, &V1) + count(&delayed, &V2),
        500,
        "only greetings and timeouts: {:?}",
        counts(&delayed)
    );
    assert_share("timeouts", timeouts, 500, 0.125, 0.25);

    demo.apply_istio_yml(SETTLE_SLOW).await;
    demo.stop().await;
}

/// Retries against a flaky v2, the same v2 without retries, and circuit breaking against a
/// slow v2: one demo, hello-v2's knobs set as `cf set-env` would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flaky_and_slow_v2_patterns_show_in_the_log_as_k8s_readme_says() {
    let _one = ONE_MESH_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let mut demo = support::start_demo(dir.path(), 10).await;
    let failure = Answer::Other("hello-cf v2: injected failure (FAIL_PERCENT=50)".to_owned());

    demo.set_v2_env(&[("FAIL_PERCENT", Some("50"))], SETTLE_FAST)
        .await;

    // Without retries every failure reaches the log: 0.7 x 0.5 = 35 % of the lines. Nearest
    // wrong policy: a hop that still retries the 503 once (0.35 x 0.35 ≈ 12 %), half-way is
    // ± 0.115; over 400 lines sd is 0.024, a false alarm 2 x P(Z > 4.8) < 2e-6.
    demo.apply_pattern("no-retries.yml", SETTLE_FAST).await;
    let bare = demo.lines(400).await;
    assert_eq!(
        count(&bare, &failure) + count(&bare, &V1) + count(&bare, &V2),
        400,
        "greetings and v2's failures only: {:?}",
        counts(&bare)
    );
    assert_share("v2's failures", count(&bare, &failure), 400, 0.35, 0.12);

    // With up to 3 retries a call fails only when all 4 tries do: 0.35^4 = 1.5 %, and v1's
    // share grows to 0.3 x (1 + 0.35 + 0.35^2 + 0.35^3) = 45.5 % (each retry draws the split
    // again). Failures: at most 6 % of 600 lines (mean 9, sd 3: a false alarm needs 36, P < 1e-12);
    // the nearest wrong policy, retries that do not cover 503, leaves 35 %. v1: nearest wrong
    // is retries that keep the first draw's destination, v1 at 0.3: ± 0.0775 over 600 lines
    // (sd 0.020), a false alarm 2 x P(Z > 3.8) = 1.4e-4.
    demo.apply_pattern("retries.yml", SETTLE_FAST).await;
    let retried = demo.lines(600).await;
    assert!(
        count(&retried, &failure) <= 36,
        "failures with retries: {:?}",
        counts(&retried)
    );
    assert_eq!(
        count(&retried, &failure) + count(&retried, &V1) + count(&retried, &V2),
        600,
        "{:?}",
        counts(&retried)
    );
    assert_share("v1 with retries", count(&retried, &V1), 600, 0.455, 0.3);

    // Circuit breaking: v2 answers after 1 s and its pool holds one request plus one waiting,
    // so of the 70 calls a second to v2 about 1 is served and the rest overflow at once with
    // Envoy's overflow body. Overflow share ≈ 0.7 - 0.01 - 0.01 = 0.68; nearest wrong policy:
    // no pool limits, no overflow at all (0). Half-way is ± 0.34; over 300 lines sd is 0.027,
    // a false alarm 2 x P(Z > 12) < 1e-30. v1 stays served (30 %, no retries here).
    demo.apply_istio_yml(SETTLE_FAST).await;
    demo.set_v2_env(
        &[("FAIL_PERCENT", None), ("DELAY", Some("1s"))],
        SETTLE_FAST,
    )
    .await;
    demo.apply_pattern("circuit-breaking.yml", SETTLE_SLOW)
        .await;
    let tripped = demo.lines(300).await;
    let overflows = count(&tripped, &Answer::Other(OVERFLOW_BODY.to_owned()));
    assert_eq!(
        overflows + count(&tripped, &V1) + count(&tripped, &V2),
        300,
        "greetings and overflows only: {:?}",
        counts(&tripped)
    );
    assert_share("overflows", overflows, 300, 0.68, 0.0);
    // The gateway's access log names the overflow with Envoy's flag.
    let gateway = support_json_lines(&demo.mesh.access_log(mesh::EGRESS_GATEWAY));
    assert!(
        gateway.iter().any(|entry| entry["flags"] == "UO"),
        "no UO in the gateway's access log"
    );

    demo.set_v2_env(&[("DELAY", None)], SETTLE_SLOW).await;
    demo.apply_istio_yml(SETTLE_FAST).await;
    demo.stop().await;
}

fn support_json_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}
