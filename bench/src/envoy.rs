//! Envoy, the mesh's own proxy, as a plain HTTP reverse proxy in front of one upstream: one
//! worker per CPU it is given (`--concurrency`), HTTP/1.1 with keep-alive to the upstream (its
//! connection pool), no access log, no request ids (the other proxies add none), and circuit
//! breakers raised above the bench's connection counts so they never shed load.
//!
//! Envoy takes no listening socket from its parent: it listens on port 0, writes its admin
//! address to a file, and the bench asks the admin API which port the listener got.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;

/// The listener's name in the config and in the admin API's `/listeners`.
pub const LISTENER: &str = "proxy";

/// The bootstrap config (YAML) forwarding every request to `upstream`.
pub fn config(upstream: SocketAddr) -> String {
    let (address, port) = (upstream.ip(), upstream.port());
    let mut conf = String::new();
    let _ = write!(
        conf,
        r#"admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
static_resources:
  listeners:
  - name: {LISTENER}
    address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: proxy
          codec_type: HTTP1
          generate_request_id: false
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{prefix: "/"}}
                route: {{cluster: hello}}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: hello
    type: STATIC
    connect_timeout: 5s
    circuit_breakers:
      thresholds:
      - {{max_connections: 100000, max_pending_requests: 100000, max_requests: 100000}}
    load_assignment:
      cluster_name: hello
      endpoints:
      - lb_endpoints:
        - endpoint:
            address: {{socket_address: {{address: {address}, port_value: {port}}}}}
"#
    );
    conf
}

/// Envoy's arguments: `workers` worker threads, no hot-restart shared memory (other Envoys
/// may run on the machine), errors only, the admin address written to `admin_address_file`.
pub fn arguments(config: &Path, admin_address_file: &Path, workers: usize) -> Vec<OsString> {
    vec![
        "--config-path".into(),
        config.into(),
        "--concurrency".into(),
        workers.to_string().into(),
        "--disable-hot-restart".into(),
        "--log-level".into(),
        "error".into(),
        "--admin-address-path".into(),
        admin_address_file.into(),
    ]
}

/// The listener's address from the admin API's plain-text `/listeners` (`proxy::127.0.0.1:41235`).
pub fn listener_address(listeners: &str) -> Option<SocketAddr> {
    listeners.lines().find_map(|line| {
        let (name, address) = line.trim().split_once("::")?;
        (name == LISTENER).then(|| address.parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwards_to_the_upstream_from_a_port_the_os_picks() {
        let conf = config(SocketAddr::from(([127, 0, 0, 1], 9000)));
        assert!(conf.contains("port_value: 9000"), "{conf}");
        assert_eq!(
            conf.matches("port_value: 0").count(),
            2,
            "admin and listener"
        );
        assert!(conf.contains("generate_request_id: false"));
        assert!(!conf.contains("access_log"));
        assert_eq!(conf.matches('{').count(), conf.matches('}').count());
    }

    #[test]
    fn workers_are_the_cpus_given() {
        let args = arguments(Path::new("/w/envoy.yaml"), Path::new("/w/admin"), 2);
        let at = args
            .iter()
            .position(|a| a == "--concurrency")
            .expect("flag");
        assert_eq!(args[at + 1], "2");
    }

    #[test]
    fn reads_the_listener_address() {
        let text = "admin::127.0.0.1:9901\nproxy::127.0.0.1:41235\n";
        assert_eq!(
            listener_address(text),
            Some(SocketAddr::from(([127, 0, 0, 1], 41235)))
        );
        assert_eq!(listener_address("other::127.0.0.1:1\n"), None);
        assert_eq!(listener_address("proxy::nonsense\n"), None);
    }
}
