//! The configuration files the harness generates: the upstream nginx, nginx and HAProxy as
//! reverse proxies, and herd-proxy's mesh file. Pure string building, so the report can show
//! exactly what ran.

use std::path::Path;

/// Size of the upstream's `/64k` body.
pub const BODY_64K: usize = 64 * 1024;

/// Directives every nginx here shares: one worker, foreground master, everything (pid, error
/// log, temp files) inside the run's directory, no access log, keep-alive effectively unlimited.
fn nginx_main(dir: &Path, name: &str) -> String {
    let d = dir.display();
    format!(
        "worker_processes 1;
daemon off;
master_process on;
pid {d}/{name}.pid;
error_log {d}/{name}.err warn;
worker_rlimit_nofile 20000;
events {{
    worker_connections 10000;
}}
"
    )
}

fn nginx_http_common(dir: &Path, name: &str) -> String {
    let d = dir.display();
    format!(
        "    access_log off;
    default_type text/plain;
    keepalive_timeout 75s;
    keepalive_requests 10000000;
    client_body_temp_path {d}/{name}-tmp/body;
    proxy_temp_path {d}/{name}-tmp/proxy;
    fastcgi_temp_path {d}/{name}-tmp/fastcgi;
    uwsgi_temp_path {d}/{name}-tmp/uwsgi;
    scgi_temp_path {d}/{name}-tmp/scgi;
"
    )
}

/// The app every target ends at: `GET /` answers `200 ok`, `GET /64k` a 64 KiB file from
/// `{dir}/www/64k`; `h2_port` speaks h2c (prior knowledge) for the direct h2 target.
pub fn upstream_nginx(dir: &Path, port: u16, h2_port: u16) -> String {
    let d = dir.display();
    format!(
        "# upstream (the app): nginx, 1 worker, core 0
{main}http {{
{common}    sendfile on;
    tcp_nopush on;
    server {{
        listen 127.0.0.1:{port};
        listen 127.0.0.1:{h2_port} http2;
        root {d}/www;
        location = / {{
            return 200 \"ok\";
        }}
        location = /64k {{
        }}
    }}
}}
",
        main = nginx_main(dir, "upstream"),
        common = nginx_http_common(dir, "upstream"),
    )
}

/// nginx as a reverse proxy with upstream keep-alive, as its docs advise
/// (<https://nginx.org/en/docs/http/ngx_http_upstream_module.html#keepalive>): HTTP/1.1 to the
/// upstream, `Connection` cleared, a pool of idle connections. `proxy_max_temp_file_size 0`
/// keeps a 64 KiB response that outruns the client in memory instead of a temp file on disk.
pub fn nginx_proxy(
    dir: &Path,
    name: &str,
    port: u16,
    h2_port: Option<u16>,
    upstream_port: u16,
) -> String {
    let h2 = h2_port
        .map(|p| format!("        listen 127.0.0.1:{p} http2;\n"))
        .unwrap_or_default();
    format!(
        "# {name}: nginx reverse proxy, 1 worker, core 1
{main}http {{
{common}    upstream app {{
        server 127.0.0.1:{upstream_port};
        keepalive 64;
        keepalive_requests 10000000;
        keepalive_timeout 75s;
    }}
    server {{
        listen 127.0.0.1:{port};
{h2}        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_max_temp_file_size 0;
        }}
    }}
}}
",
        main = nginx_main(dir, name),
        common = nginx_http_common(dir, name),
    )
}

/// HAProxy as a reverse proxy: one thread, HTTP mode with keep-alive on both sides and
/// `http-reuse always` (idle server connections shared between clients, the docs' advice when
/// the server is known to support it), no logging. `maxconn` stays under what the file-descriptor
/// limit allows (HAProxy refuses to start otherwise).
pub fn haproxy(
    dir: &Path,
    name: &str,
    port: u16,
    h2_port: Option<u16>,
    upstream_port: u16,
) -> String {
    let d = dir.display();
    let h2 = h2_port
        .map(|p| format!("    bind 127.0.0.1:{p} proto h2\n"))
        .unwrap_or_default();
    format!(
        "# {name}: HAProxy, 1 thread, core 1
global
    nbthread 1
    maxconn 8000
    pidfile {d}/{name}.pid

defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s
    timeout http-request 10s

frontend fe
    bind 127.0.0.1:{port}
{h2}    default_backend app

backend app
    server app 127.0.0.1:{upstream_port}
"
    )
}

/// Ports of one herd-proxy.
#[derive(Debug, Clone, Copy)]
pub struct HerdPorts {
    pub inbound: u16,
    pub outbound: u16,
    pub admin: u16,
}

/// herd-proxy's mesh file: the inbound listener in front of the app at `app_port`, and when
/// `route_to` is set, a service `app` (`Host: app.local`) on the outbound listener whose one
/// endpoint is that address (the next proxy's inbound).
pub fn herd(name: &str, ports: HerdPorts, app_port: u16, route_to: Option<u16>) -> String {
    let services = match route_to {
        None => "services: []\n".to_string(),
        Some(next) => format!(
            "services:
  - name: app
    authorities: [app.local]
    endpoints: [127.0.0.1:{next}]
"
        ),
    };
    format!(
        "# {name}: herd-proxy, core 1 (access log off: the default)
proxy:
  inbound:  {{ listen: 127.0.0.1:{}, app: 127.0.0.1:{app_port} }}
  outbound: {{ listen: 127.0.0.1:{} }}
  admin:    {{ listen: 127.0.0.1:{} }}
{services}",
        ports.inbound, ports.outbound, ports.admin
    )
}

/// wrk's `done()` callback: one machine-readable line the harness parses.
pub const WRK_SCRIPT: &str = r#"-- herd-load: print a machine-readable summary when wrk is done
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "HERD_WRK requests=%.0f bytes=%.0f duration_us=%.0f connect=%.0f read=%.0f write=%.0f status=%.0f timeout=%.0f p50_us=%.0f p99_us=%.0f\n",
    summary.requests, summary.bytes, summary.duration, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(99)))
end
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn herd_two_hop_config_routes_app_local() {
        let ports = HerdPorts {
            inbound: 1,
            outbound: 2,
            admin: 3,
        };
        let a = herd("herd-a", ports, 9, Some(7));
        assert!(a.contains("authorities: [app.local]"));
        assert!(a.contains("endpoints: [127.0.0.1:7]"));
        assert!(a.contains("inbound:  { listen: 127.0.0.1:1, app: 127.0.0.1:9 }"));
        assert!(herd("herd", ports, 9, None).contains("services: []"));
    }
}
