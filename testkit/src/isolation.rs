//! Running a program's own HTTP client in-process, in a test, whatever the environment's proxy
//! variables say.
//!
//! A program honours `http_proxy`, `ALL_PROXY` and the rest, as it must. A test that builds
//! that program's client inside the test process (the caller's `Caller`) would send its
//! requests for `127.0.0.1:<port>` to that proxy, and changing the environment of a running,
//! multi-threaded test process is not sound. So such a test runs itself again in a child
//! process of its test binary whose environment lacks the proxy variables, and takes the
//! child's verdict. Tests whose clients can be told to go direct (`direct_client`, the proxy's
//! `UpstreamProxy::Direct`) do that instead; this is for the clients that cannot.

use std::process::Command;

/// Every variable an HTTP client may take a proxy from, in both spellings.
pub const PROXY_VARIABLES: [&str; 8] = [
    "http_proxy",
    "HTTP_PROXY",
    "https_proxy",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
    "no_proxy",
    "NO_PROXY",
];

/// Set in the child, so that it runs the test body instead of starting another child.
const RERUN_MARKER: &str = "DEMO_TESTKIT_RERUN_WITHOUT_PROXY_VARIABLES";

/// When a proxy variable is set, runs the test `test` (its full path in the test binary, e.g.
/// `lines::a_reset_connection_is_named`) in a child process of this binary without the proxy
/// variables, fails unless it passed there, and returns true: the test returns at once. Returns
/// false, so that the test body runs here, in that child or when no proxy variable is set. Use
/// [`crate::rerun_without_proxy_variables!`], which names the test for you.
pub fn rerun_without_proxy_variables(test: &str) -> bool {
    let proxy_set = PROXY_VARIABLES
        .iter()
        .any(|variable| std::env::var_os(variable).is_some());
    if !proxy_set || std::env::var_os(RERUN_MARKER).is_some() {
        return false;
    }
    let test_binary = std::env::current_exe().expect("the test binary's path");
    let mut command = Command::new(test_binary);
    command
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(RERUN_MARKER, "1");
    for variable in PROXY_VARIABLES {
        command.env_remove(variable);
    }
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("cannot run {test} again: {error}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("test result: ok. 1 passed"),
        "{test}, run without the proxy variables, did not pass ({}):\n{stdout}\n{stderr}",
        output.status
    );
    true
}

/// The path libtest names a test by: `module_path` without the crate's own name, then `name`.
pub fn test_path(module_path: &str, name: &str) -> String {
    match module_path.split_once("::") {
        Some((_, module)) => format!("{module}::{name}"),
        None => name.to_owned(),
    }
}

/// `if rerun_without_proxy_variables!(this_test_fn) { return; }` as a test's first line: see
/// [`rerun_without_proxy_variables`](crate::isolation::rerun_without_proxy_variables). A name
/// that is not the test's own fails the test (the child would run nothing).
#[macro_export]
macro_rules! rerun_without_proxy_variables {
    ($test:ident) => {
        $crate::isolation::rerun_without_proxy_variables(&$crate::isolation::test_path(
            module_path!(),
            stringify!($test),
        ))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_tests_as_libtest_does() {
        assert_eq!(test_path("it::lines", "a"), "lines::a");
        assert_eq!(test_path("it::a::b", "c"), "a::b::c");
        assert_eq!(test_path("demo_testkit", "d"), "d");
    }
}
