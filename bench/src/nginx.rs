//! The nginx set-ups the older demo ran, as configuration files.
//!
//! - `staticfile`: the Cloud Foundry staticfile buildpack's http settings (sendfile, tcp_nopush,
//!   gzip with `gzip_static always`, keepalive_timeout 30, charset utf-8, server_tokens off,
//!   the dot-file rule) serving `index.html`. Two deliberate differences: `worker_processes
//!   auto` instead of the buildpack's 1, so that nginx may use every core as hello-cf does, and
//!   `access_log off`, as hello-cf logs no requests at its default level.
//! - `proxy-pool`: `proxy_pass` to an `upstream` block with a keep-alive pool, the best nginx
//!   set-up for this job.
//! - `proxy-per-request`: the older demo's proxy, `proxy_pass $URL` with `proxy_http_version
//!   1.1` and no keep-alive block, so that every request opens a new upstream connection.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;

/// Which nginx set-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Site {
    Staticfile,
    ProxyPool { upstream: SocketAddr },
    ProxyPerRequest { upstream: SocketAddr },
}

/// Idle upstream connections each worker keeps: more than the bench's connection counts, so
/// the pool never limits nginx.
const UPSTREAM_POOL: u32 = 1024;

/// The complete nginx.conf for `site` listening on `listen`, with every path nginx writes to
/// (pid, logs, temp files) under `prefix`, and static files from `prefix/public`.
pub fn config(site: Site, listen: SocketAddr, prefix: &Path) -> String {
    let prefix = prefix.display();
    let mut conf = String::new();
    let _ = write!(
        conf,
        "\
worker_processes auto;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}

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
  upstream hello {{
    server {upstream};
    keepalive {UPSTREAM_POOL};
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
        let conf = config(Site::Staticfile, addr(8080), Path::new("/w"));
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
    fn the_pool_and_the_older_proxy_differ_only_in_upstream_reuse() {
        let pool = config(
            Site::ProxyPool {
                upstream: addr(9000),
            },
            addr(8080),
            Path::new("/w"),
        );
        assert!(pool.contains("server 127.0.0.1:9000;"));
        assert!(pool.contains("keepalive 1024;"));
        assert!(pool.contains("proxy_set_header Connection \"\";"));

        let older = config(
            Site::ProxyPerRequest {
                upstream: addr(9000),
            },
            addr(8080),
            Path::new("/w"),
        );
        assert!(older.contains("set $URL http://127.0.0.1:9000/;"));
        assert!(older.contains("proxy_pass $URL;"));
        assert!(older.contains("proxy_http_version 1.1;"));
        assert!(!older.contains("keepalive"));
    }

    #[test]
    fn braces_balance() {
        for site in [
            Site::Staticfile,
            Site::ProxyPool { upstream: addr(1) },
            Site::ProxyPerRequest { upstream: addr(1) },
        ] {
            let conf = config(site, addr(2), Path::new("/w"));
            assert_eq!(conf.matches('{').count(), conf.matches('}').count());
        }
    }
}
