//! How many TLS handshakes proxy B of `two-hops-mtls` saw, from what each server offers
//! cheaply: herd-proxy's `herd_tls_handshakes_total` (admin `/metrics`), nginx's `stub_status`
//! (`accepts`: every connection to B is a TLS one, so one handshake, full or resumed, besides the
//! status requests themselves) and HAProxy's `show info` on its stats socket (`CumSslConns`).
//! Read when the whole path first answers and again after the measurement: the difference is
//! the handshakes of the readiness probe, the warm-up and the measurement. A steady load over
//! reused connections adds none.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};

use crate::http;

/// Where proxy B's handshake count is read.
#[derive(Debug, Clone)]
pub(crate) enum Counter {
    /// herd-proxy's admin port.
    Herd { admin: u16 },
    /// An nginx `stub_status` port.
    Nginx { status: u16 },
    /// A HAProxy stats socket.
    Haproxy { socket: PathBuf },
}

const TIMEOUT: Duration = Duration::from_secs(5);

/// `GET path` as HTTP/1.0 (so the body ends at EOF, never chunked); the whole response.
fn fetch(port: u16, path: &str) -> Result<String> {
    let mut stream = TcpStream::connect_timeout(&http::addr(port), TIMEOUT)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    Ok(text)
}

impl Counter {
    /// The counter's value now (for nginx, less this read's own connection).
    pub(crate) fn read(&self) -> Result<u64> {
        match self {
            Counter::Herd { admin } => {
                let text = fetch(*admin, "/metrics")?;
                Ok(herd_inbound_handshakes(&text))
            }
            Counter::Nginx { status } => {
                let text = fetch(*status, "/")?;
                stub_status_accepts(&text)
                    .map(|n| n.saturating_sub(1))
                    .ok_or_else(|| anyhow!("no accepts count in nginx's stub_status: {text:?}"))
            }
            Counter::Haproxy { socket } => {
                let mut stream = UnixStream::connect(socket)
                    .with_context(|| format!("connecting to {}", socket.display()))?;
                stream.set_read_timeout(Some(TIMEOUT))?;
                stream.write_all(b"show info\n")?;
                let mut text = String::new();
                stream.read_to_string(&mut text)?;
                info_field(&text, "CumSslConns")
                    .ok_or_else(|| anyhow!("no CumSslConns in HAProxy's show info"))
            }
        }
    }
}

/// The sum of `herd_tls_handshakes_total` over its inbound series.
pub(crate) fn herd_inbound_handshakes(metrics: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| {
            l.starts_with("herd_tls_handshakes_total") && l.contains("direction=\"inbound\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// `accepts` of nginx's `stub_status` page (the first number of the line after `server accepts
/// handled requests`).
pub(crate) fn stub_status_accepts(page: &str) -> Option<u64> {
    let mut lines = page.lines();
    lines.find(|l| l.trim_start().starts_with("server accepts"))?;
    lines.next()?.split_whitespace().next()?.parse().ok()
}

/// A `Name: value` field of HAProxy's `show info`.
pub(crate) fn info_field(info: &str, name: &str) -> Option<u64> {
    info.lines().find_map(|l| {
        let (key, value) = l.split_once(':')?;
        (key.trim() == name).then(|| value.trim().parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn herd_metrics_count_inbound_handshakes_only() {
        let metrics = "# TYPE herd_tls_handshakes_total counter
herd_tls_handshakes_total{direction=\"inbound\",listener=\"inbound\"} 1
herd_tls_handshakes_total{direction=\"outbound\",listener=\"x\"} 7
herd_tls_handshake_failures_total{direction=\"inbound\",listener=\"inbound\",reason=\"io\"} 3
";
        assert_eq!(herd_inbound_handshakes(metrics), 1);
        assert_eq!(herd_inbound_handshakes("# nothing yet\n"), 0);
    }

    #[test]
    fn nginx_stub_status_accepts() {
        let page = "HTTP/1.1 200 OK\r\nServer: nginx\r\n\r\nActive connections: 3 \n\
                    server accepts handled requests\n 17 17 40312 \n\
                    Reading: 0 Writing: 1 Waiting: 2 \n";
        assert_eq!(stub_status_accepts(page), Some(17));
        assert_eq!(stub_status_accepts("HTTP/1.1 404 Not Found\r\n\r\n"), None);
    }

    #[test]
    fn haproxy_info_fields() {
        let info = "Name: HAProxy\nVersion: 2.6.12\nCumSslConns: 12\nSslFrontendKeyRate: 0\n";
        assert_eq!(info_field(info, "CumSslConns"), Some(12));
        assert_eq!(info_field(info, "SslFrontendKeyRate"), Some(0));
        assert_eq!(info_field(info, "Missing"), None);
        assert_eq!(info_field(info, "Name"), None);
    }
}
