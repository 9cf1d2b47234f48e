//! A real Prometheus (Debian's `prometheus`) scraping a proxy, and `promtool` linting its text.
//!
//! [`Prometheus::scraping`] writes a `prometheus.yml` with one job, `herd`, that scrapes the
//! proxy's admin `/metrics` every second, starts `prometheus` on a fresh loopback port with its
//! own temporary TSDB (never the system one at `/var/lib/prometheus`, never `:9090`), and returns
//! once Prometheus is ready and has scraped the proxy once. The tests then ask what an operator's
//! dashboard would ask, through the HTTP query API:
//!
//! ```
//! use herd_tests::prometheus::{self, Prometheus};
//!
//! # async fn demo(proxy: herd_tests::Proxy) {
//! let prom = Prometheus::scraping(proxy.admin()).await;
//! // ... traffic ...
//! let by_status = prom
//!     .wait_for(
//!         r#"sum by (status_code) (herd_http_responses_total{service="web"})"#,
//!         |v| prometheus::keyed(v, &["status_code"]).get("200") == Some(&40.0),
//!     )
//!     .await;
//! # }
//! ```
//!
//! Scrapes are a second apart, so a count the proxy has already moved shows up in Prometheus a
//! second or two later: [`Prometheus::wait_for`] polls (bounded by [`SCRAPED`]) rather than
//! asking once. [`Prometheus::try_query`] tells an expression Prometheus refuses from one that
//! matches nothing. The module also reads the exposition text itself ([`Exposition`]), for tests
//! that look at `/metrics` directly, and runs `promtool check metrics` on it
//! ([`promtool_check_metrics`]).

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use crate::tcp;

/// A series' labels, `__name__` included when the query keeps it.
pub type Labels = BTreeMap<String, String>;

/// An instant vector: each series' labels and value.
pub type Vector = Vec<(Labels, f64)>;

/// How long Prometheus gets to start (open its TSDB, bind its port).
pub const STARTUP: Duration = Duration::from_secs(30);

/// How long a test waits for Prometheus to show what the proxy already counted: many 1 s
/// scrapes, on a machine busy running other tests.
pub const SCRAPED: Duration = Duration::from_secs(20);

/// A running Prometheus scraping one proxy or a few; killed (and its TSDB removed) when dropped.
pub struct Prometheus {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
    dir: TempDir,
}

impl Prometheus {
    /// Starts Prometheus scraping `http://{admin}/metrics` every second and waits until it is
    /// ready and its first scrape of the proxy succeeded (`up{job="herd"} == 1`).
    pub async fn scraping(admin: SocketAddr) -> Prometheus {
        Self::scraping_all(&[admin]).await
    }

    /// [`Prometheus::scraping`] of several proxies (one target each in the `herd` job): returns
    /// once every one has been scraped.
    pub async fn scraping_all(admins: &[SocketAddr]) -> Prometheus {
        let targets: Vec<String> = admins.iter().map(|a| format!("'{a}'")).collect();
        let targets = targets.join(", ");
        let dir = tempfile::Builder::new()
            .prefix("herd-prometheus-")
            .tempdir()
            .expect("temp dir");
        let config = dir.path().join("prometheus.yml");
        // scrape_timeout must not exceed scrape_interval; written out rather than left to the
        // version's defaulting rules.
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: herd\n    scheme: http\n    metrics_path: /metrics\n\
                 \x20   static_configs:\n      - targets: [{targets}]\n"
            ),
        )
        .expect("write prometheus.yml");
        let data = dir.path().join("data");
        let log = dir.path().join("prometheus.log");
        let out = std::fs::File::create(&log).expect("create prometheus log");
        let addr = crate::ports::addr();
        // Flags as Debian's 2.42 spells them (`prometheus --help`).
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--storage.tsdb.retention.time=1h")
            .arg("--log.level=info")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup log"))
            .stderr(out)
            .spawn()
            .expect("spawn prometheus (is Debian's `prometheus` package installed?)");
        let mut prometheus = Prometheus {
            child,
            addr,
            log,
            dir,
        };
        prometheus.wait_ready().await;
        prometheus
            .wait_for(r#"up{job="herd"}"#, |v| {
                v.iter().filter(|(_, up)| *up == 1.0).count() == admins.len()
            })
            .await;
        prometheus
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + STARTUP;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll prometheus") {
                panic!(
                    "prometheus exited with {status} before it was ready:\n{}",
                    self.log_text()
                );
            }
            if let Some(response) = tcp::try_get(self.addr, "/-/ready").await
                && response.status == 200
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready after {STARTUP:?}:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Where Prometheus' HTTP API listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The directory holding `prometheus.yml` and the TSDB.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Everything Prometheus has logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Evaluates `promql` at the current time (`GET /api/v1/query`); panics if Prometheus
    /// refuses it. A scalar result comes back as one series without labels.
    pub async fn query(&self, promql: &str) -> Vector {
        self.try_query(promql)
            .await
            .unwrap_or_else(|e| panic!("query {promql:?} failed: {e}"))
    }

    /// [`Prometheus::query`] that returns Prometheus' error (a parse or evaluation error, with
    /// its `errorType`) instead of panicking: `Ok(vec![])` is an expression that matched
    /// nothing, `Err` one Prometheus could not evaluate.
    #[doc(alias = "query_errors")]
    pub async fn try_query(&self, promql: &str) -> Result<Vector, String> {
        let path = format!("/api/v1/query?query={}", percent_encode(promql));
        let response = tcp::try_get(self.addr, &path)
            .await
            .ok_or_else(|| format!("no answer from prometheus at {}", self.addr))?;
        let body: Value = serde_json::from_slice(&response.body).map_err(|e| {
            format!(
                "HTTP {}: body is not JSON ({e}): {}",
                response.status,
                response.text()
            )
        })?;
        if body["status"] != "success" {
            return Err(format!(
                "HTTP {}: {}: {}",
                response.status,
                body["errorType"].as_str().unwrap_or("?"),
                body["error"].as_str().unwrap_or("?")
            ));
        }
        let data = &body["data"];
        match data["resultType"].as_str() {
            Some("vector") => data["result"]
                .as_array()
                .ok_or_else(|| format!("vector without result: {body}"))?
                .iter()
                .map(|series| {
                    let labels = series["metric"]
                        .as_object()
                        .ok_or_else(|| format!("series without metric: {series}"))?
                        .iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                        .collect();
                    Ok((labels, sample_value(&series["value"])?))
                })
                .collect(),
            Some("scalar") => Ok(vec![(Labels::new(), sample_value(&data["result"])?)]),
            other => Err(format!("unexpected result type {other:?}: {body}")),
        }
    }

    /// Polls `promql` (every 200 ms, at most [`SCRAPED`]) until `predicate` holds for its
    /// result, and returns that result. Panics with the last result (or error) and Prometheus'
    /// view of its target if it never does.
    pub async fn wait_for(&self, promql: &str, predicate: impl Fn(&Vector) -> bool) -> Vector {
        let deadline = Instant::now() + SCRAPED;
        loop {
            let last = self.try_query(promql).await;
            if let Ok(vector) = &last
                && predicate(vector)
            {
                return vector.clone();
            }
            if Instant::now() >= deadline {
                let up = self.try_query(r#"up{job="herd"}"#).await;
                panic!(
                    "timed out after {SCRAPED:?} waiting for {promql}; last result: {}\n\
                     (up{{job=\"herd\"}}: {up:?})",
                    match &last {
                        Ok(vector) => show(vector),
                        Err(e) => format!("error {e}"),
                    }
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until `promql` gives the non-zero values `expected`, keyed by the values of
    /// `keys` (see [`keyed`]); series that are 0 are left out of the comparison, so a series the
    /// proxy exports before anything happened does not count as a difference.
    pub async fn wait_for_counts(
        &self,
        promql: &str,
        keys: &[&str],
        expected: &BTreeMap<String, f64>,
    ) -> BTreeMap<String, f64> {
        let vector = self
            .wait_for(promql, |v| &non_zero(&keyed(v, keys)) == expected)
            .await;
        keyed(&vector, keys)
    }

    /// Waits until `promql` is one series whose value is `expected`, and returns it.
    pub async fn wait_for_value(&self, promql: &str, expected: f64) -> f64 {
        self.wait_for(promql, |v| v.len() == 1 && v[0].1 == expected)
            .await[0]
            .1
    }

    /// The value of `promql` when it is one series (`sum(...)`, a scalar); `None` when it
    /// matches nothing. Panics when it is several series.
    pub async fn value(&self, promql: &str) -> Option<f64> {
        let vector = self.query(promql).await;
        assert!(
            vector.len() <= 1,
            "{promql} is {} series, not one: {}",
            vector.len(),
            show(&vector)
        );
        vector.first().map(|(_, value)| *value)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log_text();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!(
                "---- prometheus log (last {} lines) ----\n{}\n---- end ----",
                tail.len(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        // Killed and reaped before the TempDir (its TSDB) is removed.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sample_value(pair: &Value) -> Result<f64, String> {
    let text = pair
        .get(1)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("not a [time, \"value\"] pair: {pair}"))?;
    parse_float(text).ok_or_else(|| format!("not a number: {text:?}"))
}

/// A Prometheus float: `1`, `0.25`, `1e-05`, `NaN`, `+Inf`, `-Inf`.
fn parse_float(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => text.parse().ok(),
    }
}

/// `vector` as a map from the values of `keys` (joined with `/`, in that order; a missing label
/// is empty) to the value, summing series that share a key: `keyed(v, &["status_code", "error"])`
/// gives `{"200/": 40.0, "504/timeout": 1.0}`.
pub fn keyed(vector: &Vector, keys: &[&str]) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for (labels, value) in vector {
        let key: Vec<&str> = keys
            .iter()
            .map(|k| labels.get(*k).map(String::as_str).unwrap_or(""))
            .collect();
        *out.entry(key.join("/")).or_insert(0.0) += value;
    }
    out
}

/// `map` without its zero entries.
pub fn non_zero(map: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    map.iter()
        .filter(|(_, v)| **v != 0.0)
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

/// A vector as one line per series, for failure messages.
pub fn show(vector: &Vector) -> String {
    if vector.is_empty() {
        return "(no series)".to_owned();
    }
    vector
        .iter()
        .map(|(labels, value)| {
            let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
            format!("{{{}}} {value}", labels.join(", "))
        })
        .collect::<Vec<_>>()
        .join("\n  ")
}

/// Percent-encodes everything but RFC 3986's unreserved characters, for a query parameter.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Runs `promtool check metrics` with `exposition` on its stdin: `Ok` when it finds nothing to
/// complain about, else `Err` with what it printed (lint problems, parse errors) and its exit
/// status.
pub fn promtool_check_metrics(exposition: &str) -> Result<(), String> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn promtool (is Debian's `prometheus` package installed?)");
    {
        let mut stdin = child.stdin.take().expect("promtool stdin");
        stdin
            .write_all(exposition.as_bytes())
            .expect("write to promtool");
    }
    let output = child.wait_with_output().expect("wait for promtool");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if output.status.success() && said.trim().is_empty() {
        Ok(())
    } else {
        Err(format!("promtool exited with {}:\n{said}", output.status))
    }
}

/// One sample of the text exposition format.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Labels,
    pub value: f64,
}

/// `GET /metrics` as parsed text: the samples, and each family's `# TYPE`.
#[derive(Clone, Debug, Default)]
pub struct Exposition {
    pub samples: Vec<Sample>,
    /// Family name -> `counter`, `gauge`, `histogram`, ...
    pub types: BTreeMap<String, String>,
    /// Family name -> its `# HELP` text.
    pub help: BTreeMap<String, String>,
}

impl Exposition {
    /// Parses Prometheus' text format (version 0.0.4); panics on a line it cannot read, naming
    /// it.
    pub fn parse(text: &str) -> Exposition {
        let mut exposition = Exposition::default();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix('#') {
                let mut words = rest.trim_start().splitn(3, ' ');
                match (words.next(), words.next(), words.next()) {
                    (Some("TYPE"), Some(name), Some(kind)) => {
                        exposition
                            .types
                            .insert(name.to_owned(), kind.trim().to_owned());
                    }
                    (Some("HELP"), Some(name), help) => {
                        exposition
                            .help
                            .insert(name.to_owned(), help.unwrap_or("").to_owned());
                    }
                    _ => {}
                }
                continue;
            }
            let sample = parse_sample(line).unwrap_or_else(|e| {
                panic!("/metrics line {}: {e}: {line:?}", number + 1);
            });
            exposition.samples.push(sample);
        }
        exposition
    }

    /// The samples named `name` whose labels include every `(label, value)` of `matching`.
    pub fn find<'a>(
        &'a self,
        name: &'a str,
        matching: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| {
            s.name == name
                && matching
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
    }

    /// The sum of [`Exposition::find`]'s values; `None` when no sample matches.
    pub fn sum(&self, name: &str, matching: &[(&str, &str)]) -> Option<f64> {
        let mut found = None;
        for sample in self.find(name, matching) {
            *found.get_or_insert(0.0) += sample.value;
        }
        found
    }

    /// The samples carrying `label="value"`, whatever their name.
    pub fn with_label<'a>(
        &'a self,
        label: &'a str,
        value: &'a str,
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples
            .iter()
            .filter(move |s| s.labels.get(label).map(String::as_str) == Some(value))
    }
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .ok_or("no value")?;
    let name = line[..name_end].to_owned();
    let mut rest = &line[name_end..];
    let mut labels = Labels::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices().peekable();
        let end = loop {
            // Skip separators, find `name="value"` or the closing brace.
            while let Some((_, c)) = chars.peek()
                && (*c == ',' || c.is_whitespace())
            {
                chars.next();
            }
            let Some(&(start, c)) = chars.peek() else {
                return Err("unterminated label set".into());
            };
            if c == '}' {
                break start + 1;
            }
            let mut key = String::new();
            while let Some(&(_, c)) = chars.peek()
                && c != '='
            {
                key.push(c);
                chars.next();
            }
            if chars.next().map(|(_, c)| c) != Some('=')
                || chars.next().map(|(_, c)| c) != Some('"')
            {
                return Err(format!("label {key:?} without =\"value\""));
            }
            let mut value = String::new();
            loop {
                match chars.next() {
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, c)) => value.push(c),
                        None => return Err("dangling escape".into()),
                    },
                    Some((_, '"')) => break,
                    Some((_, c)) => value.push(c),
                    None => return Err("unterminated label value".into()),
                }
            }
            labels.insert(key.trim().to_owned(), value);
        };
        rest = &inner[end..];
    }
    let value = rest
        .split_whitespace()
        .next()
        .ok_or("no value after the labels")?;
    let value = parse_float(value).ok_or_else(|| format!("bad value {value:?}"))?;
    Ok(Sample {
        name,
        labels,
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_labels_escapes_and_special_values() {
        let text = "# HELP a_total Things.\n# TYPE a_total counter\n\
                    a_total{x=\"1\",y=\"q\\\"uo\\\\te\"} 3\n\
                    b 4.5\n\
                    h_bucket{le=\"+Inf\",} +Inf\n\
                    g{a=\"\"} NaN 1700000000\n";
        let e = Exposition::parse(text);
        assert_eq!(e.types["a_total"], "counter");
        assert_eq!(e.help["a_total"], "Things.");
        assert_eq!(e.samples.len(), 4);
        assert_eq!(e.samples[0].labels["y"], "q\"uo\\te");
        assert_eq!(e.sum("a_total", &[("x", "1")]), Some(3.0));
        assert_eq!(e.sum("b", &[]), Some(4.5));
        assert_eq!(e.samples[2].value, f64::INFINITY);
        assert!(e.samples[3].value.is_nan());
        assert_eq!(e.sum("missing", &[]), None);
    }

    #[test]
    fn keys_join_label_values_and_sum() {
        let series = |s: &str, e: &str, v: f64| {
            let labels = [("status_code", s), ("error", e)]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            (labels, v)
        };
        let v = vec![
            series("200", "", 40.0),
            series("504", "timeout", 1.0),
            series("200", "", 2.0),
        ];
        let k = keyed(&v, &["status_code", "error"]);
        assert_eq!(k["200/"], 42.0);
        assert_eq!(k["504/timeout"], 1.0);
    }

    #[test]
    fn percent_encoding_keeps_only_unreserved_bytes() {
        assert_eq!(
            percent_encode(r#"sum(x{a="b c"})[1m]"#),
            "sum%28x%7Ba%3D%22b%20c%22%7D%29%5B1m%5D"
        );
    }
}
