//! The configuration files the harness generates: the upstream nginx, nginx and HAProxy as
//! reverse proxies, and herd-proxy's mesh file. Pure string building, so the report can show
//! exactly what ran.

use std::path::Path;

use crate::pki::{Pki, SERVER_NAME};

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
    tls: Option<&Tls>,
) -> String {
    let h2 = h2_port
        .map(|p| format!("        listen 127.0.0.1:{p} http2;\n"))
        .unwrap_or_default();
    let (scheme, ssl, server_tls, client_tls, status) = match tls {
        None => ("http", "", String::new(), String::new(), String::new()),
        Some(Tls::Client { pki }) => (
            "https",
            "",
            String::new(),
            format!(
                "            proxy_ssl_certificate {cert};
            proxy_ssl_certificate_key {key};
            proxy_ssl_trusted_certificate {ca};
            proxy_ssl_verify on;
            proxy_ssl_verify_depth 1;
            proxy_ssl_name {SERVER_NAME};
            proxy_ssl_protocols TLSv1.3;
            proxy_ssl_session_reuse on;
",
                cert = pki.client.cert.display(),
                key = pki.client.key.display(),
                ca = pki.ca_cert.display(),
            ),
            String::new(),
        ),
        Some(Tls::Server { pki, status_port }) => (
            "http",
            " ssl",
            format!(
                "        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_client_certificate {ca};
        ssl_verify_client on;
        ssl_verify_depth 1;
        ssl_protocols TLSv1.3;
",
                cert = pki.server.cert.display(),
                key = pki.server.key.display(),
                ca = pki.ca_cert.display(),
            ),
            String::new(),
            format!(
                "    server {{
        listen 127.0.0.1:{status_port};
        location / {{
            stub_status;
        }}
    }}
"
            ),
        ),
    };
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
        listen 127.0.0.1:{port}{ssl};
{h2}{server_tls}        location / {{
            proxy_pass {scheme}://app;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_max_temp_file_size 0;
{client_tls}        }}
    }}
{status}}}
",
        main = nginx_main(dir, name),
        common = nginx_http_common(dir, name),
    )
}

/// Mutual TLS 1.3 between proxy A and proxy B of `two-hops-mtls` (nginx and HAProxy): A is the
/// client, presenting its certificate and verifying B's against the CA by the name
/// [`SERVER_NAME`]; B requires a client certificate from the same CA. Both reuse what TLS lets
/// them: A's connections to B are kept alive (nginx's upstream `keepalive`, HAProxy's
/// `http-reuse always`), and new ones resume a session (nginx `proxy_ssl_session_reuse`,
/// HAProxy's default). `status_port` (nginx) serves `stub_status`, whose `accepts` counts the
/// connections, so the TLS handshakes, B took.
pub enum Tls<'a> {
    Client { pki: &'a Pki },
    Server { pki: &'a Pki, status_port: u16 },
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
    tls: Option<&Tls>,
) -> String {
    let d = dir.display();
    let h2 = h2_port
        .map(|p| format!("    bind 127.0.0.1:{p} proto h2\n"))
        .unwrap_or_default();
    let (bind_tls, server_tls, stats) = match tls {
        None => (String::new(), String::new(), String::new()),
        Some(Tls::Client { pki }) => (
            String::new(),
            format!(
                " ssl crt {crt} ca-file {ca} verify required verifyhost {SERVER_NAME} \
                 ssl-min-ver TLSv1.3",
                crt = pki.client.pem.display(),
                ca = pki.ca_cert.display(),
            ),
            String::new(),
        ),
        Some(Tls::Server { pki, .. }) => (
            format!(
                " ssl crt {crt} ca-file {ca} verify required ssl-min-ver TLSv1.3",
                crt = pki.server.pem.display(),
                ca = pki.ca_cert.display(),
            ),
            String::new(),
            // `show info` on this socket: CumSslConns counts the TLS connections B took.
            format!(
                "    stats socket {}\n",
                haproxy_stats_socket(dir, name).display()
            ),
        ),
    };
    format!(
        "# {name}: HAProxy, 1 thread, core 1
global
    nbthread 1
    maxconn 8000
    pidfile {d}/{name}.pid
{stats}
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
    bind 127.0.0.1:{port}{bind_tls}
{h2}    default_backend app

backend app
    server app 127.0.0.1:{upstream_port}{server_tls}
"
    )
}

/// Where a HAProxy B of `two-hops-mtls` answers `show info`.
pub fn haproxy_stats_socket(dir: &Path, name: &str) -> std::path::PathBuf {
    dir.join(format!("{name}.sock"))
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
/// endpoint is that address (the next proxy's inbound). With `mesh` (`two-hops-mtls`), the proxy
/// gets its certificate from herd-control's identity service, the endpoint is a meshed one (mutual
/// TLS, HTTP/2, the next proxy's SPIFFE ID checked), and the inbound port is `mtls: strict`.
pub fn herd(
    name: &str,
    ports: HerdPorts,
    app_port: u16,
    route_to: Option<u16>,
    mesh: Option<&HerdMesh>,
) -> String {
    let endpoint = |next: u16| match mesh.and_then(|m| m.peer.as_deref()) {
        None => format!("127.0.0.1:{next}"),
        Some(peer) => format!("{{ address: 127.0.0.1:{next}, identity: \"{peer}\" }}"),
    };
    let services = match route_to {
        None => "services: []\n".to_string(),
        Some(next) => format!(
            "services:
  - name: app
    authorities: [app.local]
    endpoints: [{}]
",
            endpoint(next)
        ),
    };
    let (strict, identity) = match mesh {
        None => ("", String::new()),
        Some(m) => (
            ", mtls: strict",
            format!(
                "  identity: {{ addresses: [127.0.0.1:{}], id: \"{}\", tokenFile: {} }}\n",
                m.identity_port,
                m.id,
                m.token_file.display()
            ),
        ),
    };
    format!(
        "# {name}: herd-proxy, core 1 (access log off: the default)
proxy:
  inbound:  {{ listen: 127.0.0.1:{}, app: 127.0.0.1:{app_port}{strict} }}
  outbound: {{ listen: 127.0.0.1:{} }}
  admin:    {{ listen: 127.0.0.1:{} }}
{identity}{services}",
        ports.inbound, ports.outbound, ports.admin
    )
}

/// A herd-proxy's place in the mesh of `two-hops-mtls`.
pub struct HerdMesh {
    /// herd-control's identity port.
    pub identity_port: u16,
    /// This proxy's SPIFFE ID.
    pub id: String,
    /// Its bootstrap token's file.
    pub token_file: std::path::PathBuf,
    /// The SPIFFE ID the next proxy must present (proxy A's endpoint).
    pub peer: Option<String>,
}

/// The SPIFFE ID of proxy A or B (`account` `a` or `b`) of `two-hops-mtls`.
pub fn spiffe_id(account: &str) -> String {
    format!("spiffe://cluster.local/ns/bench/sa/{account}")
}

/// herd-control's `--bootstrap-tokens` file: one token per (service account, token), namespace
/// `bench`.
pub fn bootstrap_tokens(tokens: &[(&str, &str)]) -> String {
    let mut out =
        String::from("# herd-load: bootstrap tokens of two-hops-mtls' herd proxies\ntokens:\n");
    for (account, token) in tokens {
        out.push_str(&format!(
            "  - token: {token}\n    namespace: bench\n    serviceAccount: {account}\n"
        ));
    }
    out
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
        let a = herd("herd-a", ports, 9, Some(7), None);
        assert!(a.contains("authorities: [app.local]"));
        assert!(a.contains("endpoints: [127.0.0.1:7]"));
        assert!(a.contains("inbound:  { listen: 127.0.0.1:1, app: 127.0.0.1:9 }"));
        assert!(!a.contains("identity"));
        assert!(herd("herd", ports, 9, None, None).contains("services: []"));
    }

    #[test]
    fn herd_mtls_configs_name_identities_and_make_b_strict() {
        let ports = HerdPorts {
            inbound: 1,
            outbound: 2,
            admin: 3,
        };
        let mesh = |account: &str, peer: Option<&str>| HerdMesh {
            identity_port: 8,
            id: spiffe_id(account),
            token_file: format!("/t/{account}.token").into(),
            peer: peer.map(spiffe_id),
        };
        let a = herd("herd-a", ports, 9, Some(7), Some(&mesh("a", Some("b"))));
        assert!(a.contains(
            "endpoints: [{ address: 127.0.0.1:7, identity: \"spiffe://cluster.local/ns/bench/sa/b\" }]"
        ));
        assert!(a.contains(
            "identity: { addresses: [127.0.0.1:8], id: \"spiffe://cluster.local/ns/bench/sa/a\", \
             tokenFile: /t/a.token }"
        ));
        let b = herd("herd-b", ports, 9, None, Some(&mesh("b", None)));
        assert!(b.contains("app: 127.0.0.1:9, mtls: strict }"));
        assert!(b.contains("sa/b\", tokenFile: /t/b.token"));
        let tokens =
            bootstrap_tokens(&[("a", "0123456789abcdef0123"), ("b", "fedcba9876543210fedc")]);
        assert!(tokens.contains(
            "  - token: 0123456789abcdef0123\n    namespace: bench\n    serviceAccount: a\n"
        ));
        assert!(tokens.contains("serviceAccount: b\n"));
    }

    fn pki() -> Pki {
        let leaf = |n: &str| crate::pki::Leaf {
            cert: format!("/p/{n}.crt").into(),
            key: format!("/p/{n}.key").into(),
            pem: format!("/p/{n}.pem").into(),
        };
        Pki {
            ca_cert: "/p/ca.crt".into(),
            ca_key: "/p/ca.key".into(),
            client: leaf("a"),
            server: leaf("b"),
        }
    }

    #[test]
    fn nginx_mtls_hops() {
        let pki = pki();
        let dir = Path::new("/d");
        let plain = nginx_proxy(dir, "n", 1, None, 2, None);
        assert!(plain.contains("proxy_pass http://app;"));
        assert!(!plain.contains("ssl"));
        let a = nginx_proxy(dir, "a", 1, None, 2, Some(&Tls::Client { pki: &pki }));
        for line in [
            "proxy_pass https://app;",
            "proxy_ssl_certificate /p/a.crt;",
            "proxy_ssl_certificate_key /p/a.key;",
            "proxy_ssl_trusted_certificate /p/ca.crt;",
            "proxy_ssl_verify on;",
            "proxy_ssl_name b.bench.local;",
            "proxy_ssl_protocols TLSv1.3;",
            "proxy_ssl_session_reuse on;",
            "keepalive 64;",
        ] {
            assert!(a.contains(line), "{line} missing from\n{a}");
        }
        let b = nginx_proxy(
            dir,
            "b",
            1,
            None,
            2,
            Some(&Tls::Server {
                pki: &pki,
                status_port: 5,
            }),
        );
        for line in [
            "listen 127.0.0.1:1 ssl;",
            "ssl_certificate /p/b.crt;",
            "ssl_certificate_key /p/b.key;",
            "ssl_client_certificate /p/ca.crt;",
            "ssl_verify_client on;",
            "ssl_protocols TLSv1.3;",
            "proxy_pass http://app;",
            "listen 127.0.0.1:5;",
            "stub_status;",
        ] {
            assert!(b.contains(line), "{line} missing from\n{b}");
        }
        // Braces balance (a stray one would stop nginx at start).
        for text in [&plain, &a, &b] {
            assert_eq!(text.matches('{').count(), text.matches('}').count());
        }
    }

    #[test]
    fn haproxy_mtls_hops() {
        let pki = pki();
        let dir = Path::new("/d");
        let a = haproxy(dir, "a", 1, None, 2, Some(&Tls::Client { pki: &pki }));
        assert!(a.contains(
            "    server app 127.0.0.1:2 ssl crt /p/a.pem ca-file /p/ca.crt verify required \
             verifyhost b.bench.local ssl-min-ver TLSv1.3\n"
        ));
        assert!(a.contains("http-reuse always"));
        assert!(a.contains("    bind 127.0.0.1:1\n"));
        let b = haproxy(
            dir,
            "b",
            1,
            None,
            2,
            Some(&Tls::Server {
                pki: &pki,
                status_port: 5,
            }),
        );
        assert!(b.contains(
            "    bind 127.0.0.1:1 ssl crt /p/b.pem ca-file /p/ca.crt verify required \
             ssl-min-ver TLSv1.3\n"
        ));
        assert!(b.contains("    server app 127.0.0.1:2\n"));
        assert!(b.contains("    stats socket /d/b.sock\n"));
        assert!(!haproxy(dir, "p", 1, None, 2, None).contains("ssl"));
    }
}
