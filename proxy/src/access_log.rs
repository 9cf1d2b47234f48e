//! The access log: one line per request, to stdout, off by default (`accessLog` per listener).
//!
//! Writing must never slow a request down, so the request path only hands a finished
//! [`Entry`] to a bounded channel; a background task formats it (JSON or Apache's Combined Log
//! Format) and writes it, flushing whenever the channel runs dry. When the writer falls behind by
//! more than [`BACKLOG`] entries (stdout blocked by a slow log shipper), entries are dropped and
//! counted in `herd_access_log_dropped_total` rather than queued without bound.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use herd_config::AccessLogFormat;
use http::HeaderValue;
use prometheus::IntCounter;
use tokio::sync::mpsc;

use crate::listen::Direction;

/// Entries waiting to be written before new ones are dropped.
pub const BACKLOG: usize = 10_000;

/// One request, as logged.
pub struct Entry {
    pub format: AccessLogFormat,
    pub time: SystemTime,
    pub direction: Direction,
    pub method: http::Method,
    pub authority: Option<String>,
    pub path: String,
    pub version: http::Version,
    pub user_agent: Option<HeaderValue>,
    pub referer: Option<HeaderValue>,
    pub client: SocketAddr,
    /// The client's SPIFFE ID, verified by mutual TLS; `None` for a plaintext client.
    pub client_identity: Option<Arc<herd_identity::SpiffeId>>,
    pub request_id: Option<HeaderValue>,
    pub service: Arc<str>,
    pub route: Arc<str>,
    pub status: u16,
    pub duration: Duration,
    /// Request body bytes forwarded, counted as they go.
    pub bytes_in: Arc<AtomicU64>,
    pub bytes_out: u64,
    pub endpoint: Option<SocketAddr>,
    pub attempts: u32,
    pub error: Option<String>,
}

/// The handle a listener's connections log through.
#[derive(Clone)]
pub struct AccessLog {
    tx: mpsc::Sender<Entry>,
    dropped: IntCounter,
}

impl AccessLog {
    /// Starts the writer task.
    pub fn start(dropped: IntCounter) -> Self {
        let (tx, rx) = mpsc::channel(BACKLOG);
        tokio::spawn(write(rx));
        AccessLog { tx, dropped }
    }

    /// Queues `entry`, or drops it when the writer is too far behind.
    pub fn log(&self, entry: Entry) {
        if self.tx.try_send(entry).is_err() {
            self.dropped.inc();
        }
    }
}

async fn write(mut rx: mpsc::Receiver<Entry>) {
    let mut line = String::with_capacity(512);
    let mut out = std::io::BufWriter::new(std::io::stdout());
    while let Some(entry) = rx.recv().await {
        line.clear();
        format(&entry, &mut line);
        let _ = out.write_all(line.as_bytes());
        if rx.is_empty() {
            let _ = out.flush();
        }
    }
}

fn text(v: &Option<HeaderValue>) -> Option<&str> {
    v.as_ref().and_then(|v| v.to_str().ok())
}

/// Formats one line, newline included.
pub fn format(e: &Entry, out: &mut String) {
    let bytes_in = e.bytes_in.load(Ordering::Relaxed);
    match e.format {
        AccessLogFormat::Json => {
            let value = serde_json::json!({
                "time": humantime::format_rfc3339_millis(e.time).to_string(),
                "direction": e.direction.as_str(),
                "method": e.method.as_str(),
                "authority": e.authority,
                "path": e.path,
                "status": e.status,
                "duration": e.duration.as_secs_f64(),
                "bytesIn": bytes_in,
                "bytesOut": e.bytes_out,
                "endpoint": e.endpoint.map(|a| a.to_string()),
                "attempts": e.attempts,
                "client": e.client.to_string(),
                "clientIdentity": e.client_identity.as_deref().map(|id| id.as_str()),
                "error": e.error,
                "requestId": text(&e.request_id),
                "service": &*e.service,
                "route": &*e.route,
            });
            let _ = write!(out, "{value}");
        }
        AccessLogFormat::Apache => {
            let quoted =
                |v: Option<&str>| v.map_or_else(|| "-".to_owned(), |s| s.replace('"', "\\\""));
            let _ = write!(
                out,
                "{} - {} [{}] \"{} {} {:?}\" {} {} \"{}\" \"{}\" {:.6} {} {} \"{}\"",
                e.client.ip(),
                e.client_identity.as_deref().map_or("-", |id| id.as_str()),
                apache_time(e.time),
                e.method,
                e.path,
                e.version,
                e.status,
                e.bytes_out,
                quoted(text(&e.referer)),
                quoted(text(&e.user_agent)),
                e.duration.as_secs_f64(),
                e.endpoint.map_or_else(|| "-".to_owned(), |a| a.to_string()),
                e.attempts,
                quoted(text(&e.request_id)),
            );
        }
    }
    out.push('\n');
}

/// `21/Nov/2026:23:04:01 +0000`: Apache's `%t`, in UTC.
fn apache_time(time: SystemTime) -> String {
    // RFC 3339 `2026-11-21T23:04:01Z` rearranged.
    let rfc = humantime::format_rfc3339_seconds(time).to_string();
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = rfc[5..7]
        .parse::<usize>()
        .ok()
        .and_then(|m| MONTHS.get(m.wrapping_sub(1)))
        .copied()
        .unwrap_or("Jan");
    format!(
        "{}/{}/{}:{} +0000",
        &rfc[8..10],
        month,
        &rfc[0..4],
        &rfc[11..19]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(format: AccessLogFormat) -> Entry {
        Entry {
            format,
            time: SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_302_241),
            direction: Direction::Outbound,
            method: http::Method::GET,
            authority: Some("web.local".into()),
            path: "/api/v1/timelines/home?limit=20".into(),
            version: http::Version::HTTP_11,
            user_agent: Some(HeaderValue::from_static("curl/7.88")),
            referer: None,
            client: "127.0.0.1:5555".parse().unwrap(),
            client_identity: None,
            request_id: Some(HeaderValue::from_static("abc")),
            service: "web".into(),
            route: "api".into(),
            status: 200,
            duration: Duration::from_millis(12),
            bytes_in: Arc::new(AtomicU64::new(0)),
            bytes_out: 1234,
            endpoint: Some("10.0.0.1:3000".parse().unwrap()),
            attempts: 1,
            error: None,
        }
    }

    #[test]
    fn json_lines_carry_every_field() {
        let mut line = String::new();
        format(&entry(AccessLogFormat::Json), &mut line);
        assert!(line.ends_with('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["status"], 200);
        assert_eq!(v["bytesOut"], 1234);
        assert_eq!(v["endpoint"], "10.0.0.1:3000");
        assert_eq!(v["requestId"], "abc");
        assert_eq!(v["error"], serde_json::Value::Null);
        assert_eq!(v["time"], "2026-11-21T23:04:01.000Z");
    }

    #[test]
    fn apache_lines_are_combined_log_format_and_more() {
        let mut line = String::new();
        format(&entry(AccessLogFormat::Apache), &mut line);
        assert_eq!(
            line,
            "127.0.0.1 - - [21/Nov/2026:23:04:01 +0000] \"GET /api/v1/timelines/home?limit=20 HTTP/1.1\" 200 1234 \"-\" \"curl/7.88\" 0.012000 10.0.0.1:3000 1 \"abc\"\n"
        );
    }
}
