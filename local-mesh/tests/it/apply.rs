//! `local-mesh apply` against a running demo, as a user runs it from a second terminal: the
//! split changes under the caller's eyes without a failed call or a restarted process, refused
//! input changes nothing, and without a demo `apply` says so.
//!
//! The demo runs in-process (its apply endpoint included, as `local-mesh` starts it) with real
//! Envoy; `apply` is the real binary, pointed at the demo's run directory.

use crate::support;
use crate::support::ONE_MESH_AT_A_TIME;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use local_mesh::mesh::{Mesh, MeshEvent};
use local_mesh::policy::HelloVersion;
use support::{Answer, apply, classify};
use tokio::time::Instant;

const BINARY: &str = env!("CARGO_BIN_EXE_local-mesh");

/// The demo promises the log shows a change within this time.
const SWITCH: Duration = Duration::from_secs(2);

/// Lines that must follow the switch: under the old 30/70 policy (with 20 % aborts) a line is
/// v2 with probability 0.56, so 40 lines without v2 happen by chance with probability
/// 0.44^40 < 1e-14.
const LINES_AFTER_SWITCH: usize = 40;

/// `local-mesh apply --run-dir <run_dir> -f -` with `text` on stdin, bounded in time.
async fn apply_stdin(run_dir: &Path, text: &str) -> Output {
    use tokio::io::AsyncWriteExt as _;
    let mut child = tokio::process::Command::new(BINARY)
        .args(["apply", "-f", "-", "--run-dir"])
        .arg(run_dir)
        .env_remove("LOCAL_MESH_RUN_DIR")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("cannot run local-mesh apply");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(text.as_bytes()).await.unwrap();
    drop(stdin);
    tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("apply did not answer within 60 s")
        .unwrap()
}

fn one_line(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes).into_owned();
    assert_eq!(text.trim_end().lines().count(), 1, "one line: {text:?}");
    text.trim_end().to_owned()
}

/// The gateway-bound VirtualService of k8s/istio.yml alone, with the first destination at 100
/// and the others at 0: what a user writes to send everything to v1.
fn all_to_v1(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(support::repo_policy_path()).unwrap();
    for document in serde_norway::Deserializer::from_str(&text) {
        let mut value = <serde_norway::Value as serde::Deserialize>::deserialize(document).unwrap();
        if !support::all_to_first_destination(&mut value) {
            continue;
        }
        let path = dir.join("all-v1.yml");
        std::fs::write(&path, serde_norway::to_string(&value).unwrap()).unwrap();
        return path;
    }
    panic!("no weighted route in k8s/istio.yml")
}

/// The caller's next line, with its arrival time. Its `#` notes (it fell behind schedule on a
/// busy machine) are shown, not counted.
async fn next_line(mesh: &mut Mesh, deadline: Instant) -> (Instant, String) {
    loop {
        let event = tokio::time::timeout_at(deadline, mesh.next_event())
            .await
            .expect("no caller line in time");
        match event {
            Some(MeshEvent::CallerLine(line)) if line.starts_with('#') => eprintln!("{line}"),
            Some(MeshEvent::CallerLine(line)) => return (Instant::now(), line),
            Some(MeshEvent::ComponentDied { name, log_tail, .. }) => {
                panic!("{name} died:\n{log_tail}")
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// The caller's next `count` lines.
async fn lines(mesh: &mut Mesh, count: usize) -> Vec<(Instant, String)> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut lines = Vec::new();
    while lines.len() < count {
        lines.push(next_line(mesh, deadline).await);
    }
    lines
}

/// The caller's lines while `apply` runs, and after it until `enough` says so.
async fn lines_during(
    mesh: &mut Mesh,
    apply: impl Future<Output = Output>,
    mut enough: impl FnMut(&[(Instant, String)]) -> bool,
) -> (Output, Vec<(Instant, String)>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut lines = Vec::new();
    let mut output = None;
    tokio::pin!(apply);
    loop {
        if let Some(output) = output.take_if(|_| enough(&lines)) {
            return (output, lines);
        }
        tokio::select! {
            done = &mut apply, if output.is_none() => output = Some(done),
            line = next_line(mesh, deadline) => lines.push(line),
        }
    }
}

/// Every line is an abort or a greeting: nothing failed.
fn assert_no_error(lines: &[(Instant, String)]) {
    for (_, line) in lines {
        assert!(
            matches!(classify(line), Answer::Abort | Answer::Hello(_)),
            "an error line around the switch: {line:?} in {lines:#?}"
        );
    }
}

fn v2_lines(lines: &[(Instant, String)]) -> usize {
    lines
        .iter()
        .filter(|(_, line)| classify(line) == Answer::Hello(HelloVersion::V2))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_the_split_mid_run_turns_the_log_within_2s_without_an_error_or_a_restart() {
    let _one = ONE_MESH_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let mut demo = support::start_demo(dir.path(), 50).await;
    let pids = demo.mesh.pids();

    // The manifest's 30/70: v2 in the first 20 lines (missed by chance with p = 0.44^20 < 1e-7).
    let before = lines(&mut demo.mesh, 20).await;
    assert_no_error(&before);
    assert!(v2_lines(&before) > 0, "{before:#?}");

    // 100/0: after SWITCH, no v2 at all.
    let all_v1 = all_to_v1(dir.path());
    let applied_at = Instant::now();
    let settled = applied_at + SWITCH;
    let (output, during) =
        lines_during(&mut demo.mesh, apply(&demo.run_dir, &[&all_v1]), |lines| {
            lines.iter().filter(|(at, _)| *at > settled).count() >= LINES_AFTER_SWITCH
        })
        .await;
    let answer = one_line(&output.stdout);
    assert!(
        output.status.success(),
        "{answer} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        answer.contains("hello-external-split configured"),
        "{answer}"
    );
    assert_no_error(&during);
    let late: Vec<_> = during
        .iter()
        .filter(|(at, _)| *at > settled)
        .cloned()
        .collect();
    assert_eq!(
        v2_lines(&late),
        0,
        "v2 more than {SWITCH:?} after the apply: {during:#?}"
    );
    let last_v2 = during
        .iter()
        .filter(|(_, line)| classify(line) == Answer::Hello(HelloVersion::V2))
        .map(|(at, _)| at.duration_since(applied_at))
        .max();
    eprintln!("last v2 line {last_v2:?} after the apply started");

    // Back to k8s/istio.yml, as `kubectl apply -f k8s/istio.yml` switches a cluster back.
    let applied_at = Instant::now();
    let (output, back) = lines_during(
        &mut demo.mesh,
        apply(&demo.run_dir, &[&support::repo_policy_path()]),
        |lines| {
            v2_lines(lines) > 0
                || lines
                    .iter()
                    .filter(|(at, _)| *at > applied_at + SWITCH)
                    .count()
                    >= LINES_AFTER_SWITCH
        },
    )
    .await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_no_error(&back);
    let first_v2 = back
        .iter()
        .find(|(_, line)| classify(line) == Answer::Hello(HelloVersion::V2))
        .map(|(at, _)| at.duration_since(applied_at));
    assert!(
        first_v2.is_some_and(|after| after < SWITCH + Duration::from_secs(3)),
        "v2 did not come back: {back:#?}"
    );

    // Every process is the one started at the beginning, still running.
    assert_eq!(demo.mesh.pids(), pids);
    for (name, pid) in &pids {
        // SAFETY: signal 0 only asks whether the process exists.
        let alive = unsafe { libc::kill(*pid as libc::pid_t, 0) } == 0;
        assert!(alive, "{name} (pid {pid}) was restarted or died");
    }
    demo.stop().await;
}

/// The v2 DestinationRule of k8s/istio.yml with `insecureSkipVerify: true`: a change of the
/// egress gateway's cluster for v2, which keeps working.
fn v2_without_verification(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(support::repo_policy_path()).unwrap();
    for document in serde_norway::Deserializer::from_str(&text) {
        let mut value = <serde_norway::Value as serde::Deserialize>::deserialize(document).unwrap();
        if value["kind"] != "DestinationRule"
            || value["spec"]["host"].as_str() != Some("hello-istio-v2.apps.cf.example")
        {
            continue;
        }
        let settings = value["spec"]["trafficPolicy"]["portLevelSettings"]
            .as_sequence_mut()
            .expect("the v2 DestinationRule has portLevelSettings");
        for setting in settings {
            setting["tls"]["insecureSkipVerify"] = serde_norway::Value::from(true);
        }
        let path = dir.join("v2-no-verify.yml");
        std::fs::write(&path, serde_norway::to_string(&value).unwrap()).unwrap();
        return path;
    }
    panic!("no DestinationRule for hello-istio-v2.apps.cf.example in k8s/istio.yml")
}

/// The cluster as the running egress gateway has it.
async fn gateway_cluster(run_dir: &Path, name: &str) -> serde_json::Value {
    let admin = std::fs::read_to_string(run_dir.join("egress-gateway.admin")).unwrap();
    let url = format!(
        "http://{}/config_dump?resource=dynamic_active_clusters",
        admin.trim()
    );
    let text = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
        .get(&url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let dump: serde_json::Value = serde_json::from_str(&text).unwrap();
    dump["configs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|config| &config["cluster"])
        .find(|cluster| cluster["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no cluster {name} in {dump}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_changed_back_and_forth_mid_run_fails_no_call() {
    let _one = ONE_MESH_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let mut demo = support::start_demo(dir.path(), 50).await;
    let cluster = "outbound|443||hello-istio-v2.apps.cf.example";
    let verifying = gateway_cluster(&demo.run_dir, cluster).await;
    let validation = "/transport_socket/typed_config/common_tls_context/validation_context";
    assert!(verifying.pointer(validation).is_some(), "{verifying}");

    let unverified = v2_without_verification(dir.path());
    let mut all = lines(&mut demo.mesh, 10).await;
    for round in 0..3 {
        for (file, verifies) in [
            (unverified.as_path(), false),
            (&support::repo_policy_path(), true),
        ] {
            let (output, during) =
                lines_during(&mut demo.mesh, apply(&demo.run_dir, &[file]), |lines| {
                    lines.len() >= 10
                })
                .await;
            let answer = one_line(&output.stdout);
            assert!(
                output.status.success(),
                "round {round}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            assert!(answer.contains("hello-istio-v2-tls configured"), "{answer}");
            all.extend(during);
            // The running gateway has the cluster this apply asked for.
            let running = gateway_cluster(&demo.run_dir, cluster).await;
            assert_eq!(running.pointer(validation).is_some(), verifies, "{running}");
        }
    }
    all.extend(lines(&mut demo.mesh, 10).await);
    assert_no_error(&all);
    assert!(v2_lines(&all) > 0, "{all:#?}");
    demo.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_input_is_one_line_exit_2_and_the_demo_keeps_its_policy() {
    let _one = ONE_MESH_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let mut demo = support::start_demo(dir.path(), 50).await;
    let all_v1 = all_to_v1(dir.path());

    // A valid change together with an unsupported kind: all or nothing.
    let mixed = dir.path().join("mixed.yml");
    std::fs::write(
        &mixed,
        format!(
            "{}---\napiVersion: networking.istio.io/v1alpha3\nkind: EnvoyFilter\nmetadata:\n  name: tweak\n  namespace: egress-demo\nspec: {{}}\n",
            std::fs::read_to_string(&all_v1).unwrap()
        ),
    )
    .unwrap();
    let broken = dir.path().join("broken.yml");
    std::fs::write(&broken, "kind: [VirtualService\n").unwrap();
    let nameless = dir.path().join("nameless.yml");
    std::fs::write(
        &nameless,
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {namespace: egress-demo}\nspec: {}\n",
    )
    .unwrap();
    for (file, expected) in [
        (&mixed, "EnvoyFilter/tweak"),
        (&broken, "document 1 is not valid YAML"),
        (&nameless, "document 1: missing field `name`"),
    ] {
        let output = apply(&demo.run_dir, &[file]).await;
        let line = one_line(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{line}");
        assert!(output.stdout.is_empty());
        assert!(
            line.starts_with(&format!("local-mesh: {}", file.display())),
            "{line}"
        );
        assert!(line.contains(expected), "expected {expected:?} in {line}");
    }

    // The same from stdin.
    let output = apply_stdin(&demo.run_dir, "kind: [VirtualService\n").await;
    let line = one_line(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{line}");
    assert!(
        line.starts_with("local-mesh: <stdin>: document 1 is not valid YAML"),
        "{line}"
    );

    // The old 30/70 still holds: v2 in the next lines.
    let after = lines(&mut demo.mesh, LINES_AFTER_SWITCH).await;
    assert_no_error(&after);
    assert!(
        v2_lines(&after) > 0,
        "the refused change took effect: {after:#?}"
    );

    // Nothing of the refused files stayed in the running set: the valid part alone applies.
    let output = apply(&demo.run_dir, &[&all_v1]).await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    demo.stop().await;
}

#[test]
fn apply_without_a_running_demo_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(BINARY)
        .args(["apply", "-f"])
        .arg(support::repo_policy_path())
        .arg("--run-dir")
        .arg(dir.path())
        .env_remove("LOCAL_MESH_RUN_DIR")
        .output()
        .unwrap();
    let line = one_line(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{line}");
    assert!(
        line.starts_with("local-mesh: no local-mesh demo is running in"),
        "{line}"
    );
}

#[test]
fn bad_apply_flags_are_one_line_and_exit_2() {
    for args in [
        &["apply"][..],
        &["apply", "-f"],
        &["apply", "-f", "x.yml", "--count", "3"],
        &["apply", "-f", "/nonexistent/x.yml"],
    ] {
        let output = std::process::Command::new(BINARY)
            .args(args)
            .env_remove("LOCAL_MESH_RUN_DIR")
            .output()
            .unwrap();
        let line = one_line(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {line}");
        assert!(line.starts_with("local-mesh: "), "{line}");
    }
}
