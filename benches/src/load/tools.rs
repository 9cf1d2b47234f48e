//! Parsing the load generators' output: oha's JSON, the line wrk's `done()` callback prints
//! (see `configs::WRK_SCRIPT`), and h2load's summary.

use std::collections::BTreeMap;

use anyhow::{Context, Result, anyhow};
use serde_json::Value;

/// What one oha run reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Oha {
    /// Responses with status 200.
    pub ok: u64,
    /// Responses with any other status.
    pub non_200: u64,
    /// Requests that got no response (connection errors, timeouts), by oha's message.
    pub errors: BTreeMap<String, u64>,
    pub rps: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    /// Mean response body size, bytes.
    pub size_per_request: f64,
}

impl Oha {
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

fn number(v: &Value, path: &[&str]) -> Result<f64> {
    let mut cur = v;
    for key in path {
        cur = cur
            .get(key)
            .ok_or_else(|| anyhow!("oha JSON lacks {}", path.join(".")))?;
    }
    // A run with no successful request has null statistics.
    Ok(cur.as_f64().unwrap_or(f64::NAN))
}

/// Parses `oha --output-format json`: latencies are in seconds.
pub fn parse_oha(json: &str) -> Result<Oha> {
    let v: Value = serde_json::from_str(json.trim()).context("oha output is not JSON")?;
    let counts = |key: &str| -> BTreeMap<String, u64> {
        v.get(key)
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, n)| (k.clone(), n.as_u64().unwrap_or(0)))
                    .collect()
            })
            .unwrap_or_default()
    };
    let statuses = counts("statusCodeDistribution");
    let ok = statuses.get("200").copied().unwrap_or(0);
    let non_200 = statuses.values().sum::<u64>() - ok;
    let us = |key: &str| number(&v, &["latencyPercentiles", key]).map(|s| s * 1e6);
    Ok(Oha {
        ok,
        non_200,
        errors: counts("errorDistribution"),
        rps: number(&v, &["summary", "requestsPerSec"])?,
        p50_us: us("p50")?,
        p99_us: us("p99")?,
        p999_us: us("p99.9")?,
        size_per_request: number(&v, &["summary", "sizePerRequest"])?,
    })
}

/// The summary wrk's `done()` callback prints.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Wrk {
    pub requests: u64,
    pub bytes: u64,
    pub duration_s: f64,
    pub connect: u64,
    pub read: u64,
    pub write: u64,
    /// Responses with a status above 399.
    pub status: u64,
    pub timeout: u64,
    pub p50_us: f64,
    pub p99_us: f64,
}

impl Wrk {
    pub fn error_count(&self) -> u64 {
        self.connect + self.read + self.write + self.status + self.timeout
    }
    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.duration_s
    }
}

/// Finds the `HERD_WRK key=value ...` line in wrk's stdout.
pub fn parse_wrk(stdout: &str) -> Result<Wrk> {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("HERD_WRK "))
        .ok_or_else(|| anyhow!("wrk printed no HERD_WRK summary line"))?;
    let mut fields = BTreeMap::new();
    for pair in line.split_whitespace() {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| anyhow!("bad wrk summary field {pair:?}"))?;
        let v: f64 = v
            .parse()
            .with_context(|| format!("bad wrk summary value {pair:?}"))?;
        fields.insert(k, v);
    }
    let get = |k: &str| {
        fields
            .get(k)
            .copied()
            .ok_or_else(|| anyhow!("wrk summary lacks {k}"))
    };
    Ok(Wrk {
        requests: get("requests")? as u64,
        bytes: get("bytes")? as u64,
        duration_s: get("duration_us")? / 1e6,
        connect: get("connect")? as u64,
        read: get("read")? as u64,
        write: get("write")? as u64,
        status: get("status")? as u64,
        timeout: get("timeout")? as u64,
        p50_us: get("p50_us")?,
        p99_us: get("p99_us")?,
    })
}

/// h2load's summary.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct H2load {
    pub duration_s: f64,
    pub rps: f64,
    pub done: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub errored: u64,
    pub timeout: u64,
    pub status_2xx: u64,
    pub status_other: u64,
    /// Response body bytes (the `data` figure of the `traffic:` line).
    pub data_bytes: u64,
}

impl H2load {
    pub fn error_count(&self) -> u64 {
        self.failed + self.errored + self.timeout + self.status_other
    }
}

/// The number before `word` in a comma-separated list like `10 total, 9 done, 1 failed`.
fn count_before(list: &str, word: &str) -> Option<u64> {
    list.split(',').find_map(|part| {
        let mut it = part.split_whitespace();
        let n = it.next()?;
        (it.next()? == word).then(|| n.parse().ok()).flatten()
    })
}

/// Parses h2load's summary: `finished in 10.00s, 39546.00 req/s, 2.56MB/s`,
/// `requests: N total, N started, N done, N succeeded, N failed, N errored, N timeout`,
/// `status codes: N 2xx, N 3xx, N 4xx, N 5xx` and `traffic: ... , 154.48KB (158184) data`.
pub fn parse_h2load(stdout: &str) -> Result<H2load> {
    let line = |prefix: &str| {
        stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .ok_or_else(|| anyhow!("h2load printed no `{prefix}` line"))
    };
    let finished = line("finished in ")?;
    let mut parts = finished.split(',').map(str::trim);
    let duration = parts.next().unwrap_or_default();
    let duration_s = if let Some(ms) = duration.strip_suffix("ms") {
        ms.parse::<f64>()? / 1e3
    } else {
        duration
            .strip_suffix('s')
            .ok_or_else(|| anyhow!("bad h2load duration {duration:?}"))?
            .parse()?
    };
    let rps = parts
        .next()
        .and_then(|p| p.strip_suffix(" req/s"))
        .ok_or_else(|| anyhow!("no req/s in h2load's {finished:?}"))?
        .parse()?;
    let requests = line("requests: ")?;
    let req = |w: &str| count_before(requests, w).ok_or_else(|| anyhow!("h2load: no `{w}` count"));
    let statuses = line("status codes: ")?;
    let status = |w: &str| count_before(statuses, w).unwrap_or(0);
    let traffic = line("traffic: ")?;
    let data_bytes = traffic
        .rsplit_once('(')
        .and_then(|(_, rest)| rest.strip_suffix(") data"))
        .ok_or_else(|| anyhow!("no data bytes in h2load's {traffic:?}"))?
        .parse()?;
    Ok(H2load {
        duration_s,
        rps,
        done: req("done")?,
        succeeded: req("succeeded")?,
        failed: req("failed")?,
        errored: req("errored")?,
        timeout: req("timeout")?,
        status_2xx: status("2xx"),
        status_other: status("3xx") + status("4xx") + status("5xx"),
        data_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRK: &str = "Running 1s test @ http://127.0.0.1:38111/64k
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.46ms    1.52ms   9.10ms   83.08%
  14546 requests in 1.01s, 0.89GB read
Requests/sec:  14453.57
HERD_WRK requests=14546 bytes=956821334 duration_us=1006395 connect=0 read=0 write=0 status=3 timeout=1 p50_us=628 p99_us=6411
";

    #[test]
    fn wrk_summary_line() {
        let w = parse_wrk(WRK).unwrap();
        assert_eq!(w.requests, 14546);
        assert_eq!(w.bytes, 956_821_334);
        assert!((w.duration_s - 1.006395).abs() < 1e-9);
        assert_eq!(w.error_count(), 4);
        assert_eq!(w.p99_us, 6411.0);
        assert!((w.rps() - 14453.6).abs() < 0.1);
        assert!(parse_wrk("Running 1s test\n").is_err());
    }

    const H2LOAD: &str = "Stopped all clients for thread #0

finished in 2.00s, 39546.00 req/s, 2.56MB/s
requests: 79092 total, 79252 started, 79092 done, 79090 succeeded, 2 failed, 2 errored, 0 timeout
status codes: 79093 2xx, 0 3xx, 1 4xx, 0 5xx
traffic: 5.13MB (5379097) total, 3.62MB (3796464) headers (space savings 51.02%), 154.48KB (158184) data
                     min         max         mean         sd        +/- sd
time for request:       43us     12.64ms      3.84ms      2.45ms    67.95%
";

    #[test]
    fn h2load_summary() {
        let h = parse_h2load(H2LOAD).unwrap();
        assert_eq!(h.duration_s, 2.0);
        assert_eq!(h.rps, 39546.0);
        assert_eq!(
            (h.done, h.succeeded, h.failed, h.errored, h.timeout),
            (79092, 79090, 2, 2, 0)
        );
        assert_eq!((h.status_2xx, h.status_other), (79093, 1));
        assert_eq!(h.data_bytes, 158_184);
        assert_eq!(h.error_count(), 5);
        let ms = H2LOAD.replace("finished in 2.00s", "finished in 950.12ms");
        assert!((parse_h2load(&ms).unwrap().duration_s - 0.95012).abs() < 1e-9);
        assert!(parse_h2load("unable to connect").is_err());
    }

    const OHA: &str = r#"{"summary":{"successRate":1.0,"total":2.001,"slowest":0.0031,"fastest":0.00005,
        "average":0.0002,"requestsPerSec":1999.4,"totalData":8000,"sizePerRequest":2,"sizePerSec":3998.8},
        "responseTimeHistogram":{"0.0001":10},
        "latencyPercentiles":{"p10":0.0001,"p25":0.00012,"p50":0.000151,"p75":0.0002,"p90":0.0003,
        "p95":0.0004,"p99":0.000812,"p99.9":0.0021,"p99.99":0.003},
        "rps":{"mean":2000.0},
        "statusCodeDistribution":{"200":3990,"502":2},
        "errorDistribution":{"connection closed":3}}"#;

    #[test]
    fn oha_json() {
        let o = parse_oha(OHA).unwrap();
        assert_eq!((o.ok, o.non_200, o.error_count()), (3990, 2, 3));
        assert!((o.p50_us - 151.0).abs() < 1e-6);
        assert!((o.p99_us - 812.0).abs() < 1e-6);
        assert!((o.p999_us - 2100.0).abs() < 1e-6);
        assert_eq!(o.rps, 1999.4);
        assert_eq!(o.size_per_request, 2.0);
        assert!(parse_oha("not json").is_err());
    }
}
