//! The nginx set-ups, as configuration files: the ones tuned for the job, as an nginx user would
//! write them, and the ones the older demo ran.
//!
//! - `static`: one worker per CPU it is given, no access log, the 31 bytes from `return 200`
//!   (what an nginx user writes for a fixed answer, and nginx's cheapest path: no file system,
//!   no index lookup, no gzip), keep-alive connections never closed after a request count.
//! - `proxy-pool`: one worker per CPU, `proxy_pass` to an `upstream` block with a keep-alive
//!   pool that is never recycled after a request count, no access log.
//! - `staticfile` (older demo): the Cloud Foundry staticfile buildpack's http settings (sendfile, tcp_nopush,
//!   gzip with `gzip_static always`, keepalive_timeout 30, charset utf-8, server_tokens off,
//!   the dot-file rule) serving `index.html`. Two deliberate differences: `worker_processes
//!   auto` instead of the buildpack's 1, so that nginx may use every core as hello-cf does, and
//!   `access_log off`, as hello-cf logs no requests at its default level.
//! - `proxy-per-request` (older demo): the older demo's proxy, `proxy_pass $URL` with `proxy_http_version
//!   1.1` and no keep-alive block, so that every request opens a new upstream connection.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;

/// Which nginx set-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Site {
    /// Tuned: `return 200` with the greeting.
    Static { body: &'static str },
    /// Tuned: `proxy_pass` with an upstream keep-alive pool.
    ProxyPool { upstream: SocketAddr },
    /// The older demo's: the staticfile buildpack's settings serving `index.html`.
    Staticfile,
    /// The older demo's: `proxy_pass $URL`, a new upstream connection per request.
    ProxyPerRequest { upstream: SocketAddr },
}

/// Idle upstream connections each worker keeps: more than the bench's connection counts, so
/// the pool never limits nginx.
const UPSTREAM_POOL: u32 = 1024;

/// Requests per keep-alive connection before nginx closes it (its default is 1,000): more than
/// a run sends, as the other servers never close a busy connection.
const KEEPALIVE_REQUESTS: u32 = 10_000_000;

/// The complete nginx.conf for `site` listening on `listen`, with every path nginx writes to
/// (pid, logs, temp files) under `prefix`, and static files from `prefix/public`. The tuned
/// sites run `workers` worker processes (the CPUs nginx is given); the older demo's run
/// `worker_processes auto` as before.
pub fn config(site: Site, listen: SocketAddr, prefix: &Path, workers: usize) -> String {
    let prefix = prefix.display();
    let worker_processes = match site {
        Site::Static { .. } | Site::ProxyPool { .. } => workers.to_string(),
        Site::Staticfile | Site::ProxyPerRequest { .. } => "auto".to_owned(),
    };
    let mut conf = String::new();
    let _ = write!(
        conf,
        "\
worker_processes {worker_processes};
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}

http {{
  access_log off;
  client_body_temp_path {prefix}/client_body;
  proxy_temp_path {prefix}/proxy;
  fastcgi_temp_path {prefix}/fastcgi;
  uwsgi_temp_path {prefix}/uwsgi;
  scgi_temp_path {prefix}/scgi;
"
    );
    match site {
        Site::Static { body } => {
            let body = body.escape_default();
            let _ = write!(
                conf,
                "\
  keepalive_requests {KEEPALIVE_REQUESTS};
  server_tokens off;
  server {{
    listen {listen};
    location / {{
      default_type text/html;
      charset utf-8;
      return 200 \"{body}\";
    }}
  }}
}}
"
            );
        }
        Site::Staticfile => {
            let _ = write!(
                conf,
                "\
  charset utf-8;
  default_type application/octet-stream;
  types {{ text/html html htm shtml; text/plain txt; text/css css; application/json json; }}
  sendfile on;

  gzip on;
  gzip_disable \"msie6\";
  gzip_comp_level 6;
  gzip_min_length 1100;
  gzip_buffers 16 8k;
  gzip_proxied any;
  gunzip on;
  gzip_static always;
  gzip_types text/plain text/css text/js text/xml text/javascript application/javascript application/x-javascript application/json application/xml application/xml+rss;
  gzip_vary on;

  tcp_nopush on;
  keepalive_timeout 30;
  port_in_redirect off;
  server_tokens off;

  server {{
    listen {listen};
    server_name localhost;
    root {prefix}/public;
    index index.html index.htm Default.htm;
    location ~ /\\. {{
      deny all;
      return 404;
    }}
  }}
}}
"
            );
        }
        Site::ProxyPool { upstream } => {
            let _ = write!(
                conf,
                "\
  keepalive_requests {KEEPALIVE_REQUESTS};
  server_tokens off;
  upstream hello {{
    server {upstream};
    keepalive {UPSTREAM_POOL};
    keepalive_requests {KEEPALIVE_REQUESTS};
  }}
  server {{
    listen {listen};
    location / {{
      proxy_pass http://hello/;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
    }}
  }}
}}
"
            );
        }
        Site::ProxyPerRequest { upstream } => {
            let _ = write!(
                conf,
                "\
  server {{
    listen {listen};
    location / {{
      set $URL http://{upstream}/;
      proxy_pass $URL;
      proxy_http_version 1.1;
      proxy_ssl_server_name on;
    }}
  }}
}}
"
            );
        }
    }
    conf
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn staticfile_keeps_the_buildpack_settings_and_drops_the_access_log() {
        let conf = config(Site::Staticfile, addr(8080), Path::new("/w"), 1);
        for directive in [
            "worker_processes auto;",
            "access_log off;",
            "sendfile on;",
            "tcp_nopush on;",
            "gzip_static always;",
            "keepalive_timeout 30;",
            "charset utf-8;",
            "listen 127.0.0.1:8080;",
            "root /w/public;",
        ] {
            assert!(conf.contains(directive), "missing {directive}");
        }
        assert!(!conf.contains("proxy_pass"));
    }

    #[test]
    fn tuned_static_returns_the_body_from_one_worker_per_cpu() {
        let body = "Hello K8s, from CF v1 service!\n";
        let conf = config(Site::Static { body }, addr(8080), Path::new("/w"), 2);
        for directive in [
            "worker_processes 2;",
            "access_log off;",
            "return 200 \"Hello K8s, from CF v1 service!\\n\";",
            "default_type text/html;",
            "charset utf-8;",
        ] {
            assert!(conf.contains(directive), "missing {directive}:\n{conf}");
        }
        assert!(!conf.contains("gzip") && !conf.contains("index"));
    }

    #[test]
    fn the_pool_and_the_older_proxy_differ_only_in_upstream_reuse() {
        let pool = config(
            Site::ProxyPool {
                upstream: addr(9000),
            },
            addr(8080),
            Path::new("/w"),
            1,
        );
        assert!(pool.contains("server 127.0.0.1:9000;"));
        assert!(pool.contains("worker_processes 1;"));
        assert!(pool.contains("keepalive_requests 10000000;"));
        assert!(pool.contains("keepalive 1024;"));
        assert!(pool.contains("proxy_set_header Connection \"\";"));

        let older = config(
            Site::ProxyPerRequest {
                upstream: addr(9000),
            },
            addr(8080),
            Path::new("/w"),
            1,
        );
        assert!(older.contains("set $URL http://127.0.0.1:9000/;"));
        assert!(older.contains("proxy_pass $URL;"));
        assert!(older.contains("proxy_http_version 1.1;"));
        assert!(!older.contains("keepalive"));
        assert!(older.contains("worker_processes auto;"));
    }

    #[test]
    fn braces_balance() {
        for site in [
            Site::Static { body: "x\n" },
            Site::Staticfile,
            Site::ProxyPool { upstream: addr(1) },
            Site::ProxyPerRequest { upstream: addr(1) },
        ] {
            let conf = config(site, addr(2), Path::new("/w"), 2);
            assert_eq!(conf.matches('{').count(), conf.matches('}').count());
        }
    }
}
