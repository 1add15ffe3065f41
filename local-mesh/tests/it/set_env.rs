//! `local-mesh set-env` and `unset-env` against the real demo binary, as a user runs them from a
//! second terminal: hello-v2 restarted with a fault knob shows in the log, a value hello-cf
//! refuses leaves the demo as it was, and unsetting the knob brings the greetings back.

use crate::support;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use support::{Answer, classify};
use tokio::io::{AsyncBufReadExt as _, BufReader, Lines};
use tokio::process::{Child, ChildStdout};
use tokio::time::Instant;

const BINARY: &str = env!("CARGO_BIN_EXE_local-mesh");

const FAILURE: &str = "hello-cf v2: injected failure (FAIL_PERCENT=100)";

async fn local_mesh(args: &[&str], run_dir: &Path) -> Output {
    let mut command = tokio::process::Command::new(BINARY);
    command
        .args(args)
        .arg("--run-dir")
        .arg(run_dir)
        .env_remove("LOCAL_MESH_RUN_DIR")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("no answer within 60 s")
        .expect("cannot run local-mesh")
}

/// The demo's next `count` caller lines (its `#` notes skipped).
async fn lines(stdout: &mut Lines<BufReader<ChildStdout>>, count: usize) -> Vec<Answer> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut answers = Vec::new();
    while answers.len() < count {
        let line = tokio::time::timeout_at(deadline, stdout.next_line())
            .await
            .expect("no caller line within 60 s")
            .unwrap()
            .expect("the demo stopped");
        if !line.starts_with('#') {
            answers.push(classify(&line));
        }
    }
    answers
}

/// Drops the demo's lines for `duration`: calls made before a restart.
async fn skip(stdout: &mut Lines<BufReader<ChildStdout>>, duration: Duration) {
    let until = Instant::now() + duration;
    while let Ok(line) = tokio::time::timeout_at(until, stdout.next_line()).await {
        line.unwrap().expect("the demo stopped");
    }
}

async fn stop(mut demo: Child) {
    let pid = demo.id().expect("the demo is running");
    // SIGTERM, as Ctrl-C or a service manager stops it; it stops every component it started.
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let status = tokio::time::timeout(Duration::from_secs(60), demo.wait())
        .await
        .expect("the demo did not stop within 60 s")
        .unwrap();
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_env_restarts_hello_v2_with_the_knob_and_unset_env_takes_it_away() {
    let _one = support::ONE_MESH_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    let mut demo = tokio::process::Command::new(BINARY)
        .arg("--run-dir")
        .arg(&run_dir)
        .args(["--interval", "20ms"])
        .env_remove("LOCAL_MESH_RUN_DIR")
        .env_remove("COUNT")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(demo.stdout.take().unwrap()).lines();
    // The first lines come once every component runs, the apply endpoint included.
    lines(&mut stdout, 1).await;

    let output = local_mesh(&["set-env", "hello-v2", "FAIL_PERCENT=100"], &run_dir).await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answer = String::from_utf8_lossy(&output.stdout);
    assert!(
        answer.contains("hello-v2 restarted with FAIL_PERCENT=100"),
        "{answer}"
    );
    // v2 now fails every request; the mesh route's 2 retries on 503 redraw the 30/70 split, so
    // a line fails when all 3 tries land on v2: 0.8 x 0.7^3 = 27 % of the lines. Not one of
    // 200 lines failing happens by chance with probability 0.73^200 < 1e-27; with the knob
    // not applied, no line would.
    skip(&mut stdout, Duration::from_millis(500)).await;
    let flaky = lines(&mut stdout, 200).await;
    assert!(
        flaky.contains(&Answer::Other(FAILURE.to_owned())),
        "{flaky:?}"
    );

    // A value hello-cf refuses: one line with its reason, exit 2, and v2 keeps running as it was.
    let output = local_mesh(&["set-env", "hello-v2", "DELAY=banana"], &run_dir).await;
    let line = String::from_utf8_lossy(&output.stderr)
        .trim_end()
        .to_owned();
    assert_eq!(output.status.code(), Some(2), "{line}");
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(
        line.contains("hello-v2 did not start with the new environment"),
        "{line}"
    );
    skip(&mut stdout, Duration::from_millis(500)).await;
    let still = lines(&mut stdout, 200).await;
    assert!(
        still.contains(&Answer::Other(FAILURE.to_owned())),
        "{still:?}"
    );

    // Unset: the greetings come back, no failure (certain once the restart is over).
    let output = local_mesh(&["unset-env", "hello-v2", "FAIL_PERCENT"], &run_dir).await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    skip(&mut stdout, Duration::from_millis(500)).await;
    let healed = lines(&mut stdout, 200).await;
    assert!(
        healed
            .iter()
            .all(|answer| matches!(answer, Answer::Abort | Answer::Hello(_))),
        "{healed:?}"
    );

    // Unknown apps and malformed assignments are refused at once.
    let output = local_mesh(&["set-env", "hello-v3", "DELAY=1s"], &run_dir).await;
    assert_eq!(output.status.code(), Some(2));
    let output = local_mesh(&["set-env", "hello-v2", "DELAY"], &run_dir).await;
    assert_eq!(output.status.code(), Some(2));
    // What wires the app into the demo is not the user's to change.
    let output = local_mesh(&["set-env", "hello-v2", "PORT=8080"], &run_dir).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("PORT is how local-mesh wires hello-v2"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    stop(demo).await;
}
