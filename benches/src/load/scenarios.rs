//! The scenarios: one measurement of one target (start it, warm it up, load it with the
//! scenario's generator, read its CPU time and peak memory), and the load generators' runs.

use std::collections::BTreeMap;
use std::process::Command;
use std::thread;
use std::time::Duration;

use anyhow::{Result, anyhow, bail};

use crate::configs;
use crate::procs::{Ticks, cpu_ticks, memory_kib, run_tool};
use crate::report::Measurement;
use crate::targets::{Deployment, pinned, start};
use crate::{Ctx, LOAD_CORE, Scenario, Target, http, tools};

pub(crate) fn tool_output(cmd: Command, tool: &str) -> Result<String> {
    let shown = format!("{cmd:?}");
    let out = run_tool(cmd)?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "{tool} failed ({}): {shown}\n{}\n{}",
            out.status,
            stdout.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(stdout)
}

pub(crate) fn oha(ctx: &Ctx, port: u16, host: &str, secs: u64) -> Result<tools::Oha> {
    let mut cmd = pinned(LOAD_CORE, "oha");
    cmd.args([
        "-z",
        &format!("{secs}s"),
        "-q",
        &ctx.rate.to_string(),
        "-c",
        "32",
    ])
    .args([
        "--latency-correction",
        "--no-tui",
        "--output-format",
        "json",
    ])
    // Requests still in flight at the deadline are waited for, not counted as errors.
    .arg("-w");
    if host != "x" {
        cmd.arg("--host").arg(host);
    }
    cmd.arg(format!("http://127.0.0.1:{port}/"));
    let out = tool_output(cmd, "oha")?;
    tools::parse_oha(&out)
}

pub(crate) fn wrk(ctx: &Ctx, port: u16, path: &str, conns: u32, secs: u64) -> Result<tools::Wrk> {
    let script = ctx.dir.join("done.lua");
    let mut cmd = pinned(LOAD_CORE, "wrk");
    cmd.args(["-t1", &format!("-c{conns}"), &format!("-d{secs}s"), "-s"])
        .arg(&script)
        .arg(format!("http://127.0.0.1:{port}{path}"));
    tools::parse_wrk(&tool_output(cmd, "wrk")?)
}

pub(crate) fn h2load(port: u16, secs: u64) -> Result<tools::H2load> {
    let mut cmd = pinned(LOAD_CORE, "h2load");
    cmd.args(["-c", "16", "-m", "10", "-D", &secs.to_string()])
        .arg(format!("http://127.0.0.1:{port}/"));
    let out = tool_output(cmd, "h2load")?;
    let h = tools::parse_h2load(&out)?;
    if h.succeeded == 0 {
        bail!("h2load: no request succeeded:\n{}", out.trim());
    }
    Ok(h)
}

pub(crate) const MIB: f64 = 1024.0;

/// CPU µs per request from a clock-tick delta.
pub(crate) fn cpu_per_request(ctx: &Ctx, ticks: u64, requests: u64) -> f64 {
    ticks as f64 / ctx.ticks_per_second as f64 * 1e6 / requests.max(1) as f64
}

/// Runs one measurement; a failure becomes a problem on the measurement, not an abort.
pub(crate) fn measure(
    ctx: &mut Ctx,
    round: usize,
    scenario: Scenario,
    target: Target,
) -> Measurement {
    let mut m = Measurement {
        round,
        scenario,
        target,
        metrics: BTreeMap::new(),
        errors: 0,
        problems: Vec::new(),
        notes: Vec::new(),
    };
    let tag = format!("r{round}-{}-{}", scenario.name(), target.name());
    let hops = if scenario.two_hops() { 2 } else { 1 };
    let mtls = scenario == Scenario::TwoHopsMtls;
    let result = start(ctx, target, &tag, hops, mtls).and_then(|mut d| {
        let r = run(ctx, scenario, &mut d, &mut m);
        // A proxy that died mid-run explains a failed load tool best: report both.
        let alive = d.check_alive();
        m.notes.extend(d.stop());
        match (r, alive) {
            (Err(e), Err(dead)) => Err(e.context(format!("{dead:#}"))),
            (r, alive) => r.and(alive),
        }
    });
    if let Err(e) = result {
        m.problems
            .push(format!("failed: {e:#}").replace('\n', " ⏎ "));
    }
    m
}

pub(crate) fn run(
    ctx: &Ctx,
    scenario: Scenario,
    d: &mut Deployment,
    m: &mut Measurement,
) -> Result<()> {
    let roots = d.roots();
    let proxied = !roots.is_empty();
    let record = |m: &mut Measurement, k: &str, v: f64| {
        m.metrics.insert(k.to_string(), v);
    };
    let finish = |m: &mut Measurement, ticks: Ticks, requests: u64| {
        if proxied {
            for (key, ticks) in [
                ("cpu_us_per_req", ticks.total()),
                ("user_us_per_req", ticks.user),
                ("system_us_per_req", ticks.system),
            ] {
                m.metrics
                    .insert(key.into(), cpu_per_request(ctx, ticks, requests));
            }
            m.metrics.insert(
                "peak_rss_mib".into(),
                memory_kib(&roots, "VmHWM") as f64 / MIB,
            );
        }
    };
    match scenario {
        Scenario::Latency | Scenario::TwoHops | Scenario::TwoHopsMtls => {
            if ctx.warmup > 0 {
                oha(ctx, d.port, d.host, ctx.warmup)?;
            }
            let t0 = cpu_ticks(&roots);
            let o = oha(ctx, d.port, d.host, ctx.duration)?;
            let ticks = cpu_ticks(&roots).since(t0);
            record(m, "p50_us", o.p50_us);
            record(m, "p99_us", o.p99_us);
            record(m, "p999_us", o.p999_us);
            record(m, "rps", o.rps);
            record(m, "requests", o.ok as f64);
            finish(m, ticks, o.ok);
            if let Some((counter, before)) = &d.handshakes {
                let after = counter.read()?;
                record(m, "b_tls_handshakes", after.saturating_sub(*before) as f64);
            }
            m.errors = o.non_200 + o.error_count();
            if m.errors > 0 {
                m.problems.push(format!(
                    "{} non-200 responses, {} failed requests {:?}",
                    o.non_200,
                    o.error_count(),
                    o.errors
                ));
            }
            if (o.size_per_request - 2.0).abs() > 0.01 {
                m.problems.push(format!(
                    "mean body {:.2} bytes, expected 2",
                    o.size_per_request
                ));
            }
            if o.rps < 0.95 * f64::from(ctx.rate) {
                m.problems.push(format!(
                    "achieved {:.0} rps of the {} requested",
                    o.rps, ctx.rate
                ));
            }
        }
        Scenario::MaxRps | Scenario::Body64k => {
            let (path, conns, body) = if scenario == Scenario::MaxRps {
                ("/", 64, 2)
            } else {
                ("/64k", 16, configs::BODY_64K as u64)
            };
            if ctx.warmup > 0 {
                wrk(ctx, d.port, path, conns, ctx.warmup)?;
            }
            let t0 = cpu_ticks(&roots);
            let w = wrk(ctx, d.port, path, conns, ctx.duration)?;
            let ticks = cpu_ticks(&roots).since(t0);
            record(m, "rps", w.rps());
            record(m, "requests", w.requests as f64);
            record(m, "p50_us", w.p50_us);
            record(m, "p99_us", w.p99_us);
            if scenario == Scenario::Body64k {
                record(m, "mb_per_s", w.bytes as f64 / w.duration_s / 1e6);
            }
            finish(m, ticks, w.requests);
            m.errors = w.error_count();
            if m.errors > 0 {
                m.problems.push(format!(
                    "wrk errors: {} status>399, {} connect, {} read, {} write, {} timeout",
                    w.status, w.connect, w.read, w.write, w.timeout
                ));
            }
            let per = w.bytes as f64 / w.requests.max(1) as f64;
            // Headers add 100-300 bytes; responses cut off at the end add a little.
            if w.requests == 0 || per < body as f64 + 50.0 || per > body as f64 + 1024.0 {
                m.problems.push(format!(
                    "{per:.0} bytes per response for a {body}-byte body ({} requests)",
                    w.requests
                ));
            }
        }
        Scenario::H2 => {
            let port = d
                .h2_port
                .ok_or_else(|| anyhow!("no h2c port for this target"))?;
            if ctx.warmup > 0 {
                h2load(port, ctx.warmup)?;
            }
            let t0 = cpu_ticks(&roots);
            let h = h2load(port, ctx.duration)?;
            let ticks = cpu_ticks(&roots).since(t0);
            record(m, "rps", h.rps);
            record(m, "requests", h.succeeded as f64);
            finish(m, ticks, h.succeeded);
            m.errors = h.error_count();
            if m.errors > 0 {
                m.problems.push(format!(
                    "h2load: {} failed, {} errored, {} timeout, {} non-2xx",
                    h.failed, h.errored, h.timeout, h.status_other
                ));
            }
            let per = h.data_bytes as f64 / h.succeeded as f64;
            if !(1.8..=2.2).contains(&per) {
                m.problems
                    .push(format!("{per:.2} body bytes per response, expected 2"));
            }
        }
        Scenario::Idle => idle(ctx, d, m)?,
    }
    Ok(())
}

pub(crate) fn idle(ctx: &Ctx, d: &Deployment, m: &mut Measurement) -> Result<()> {
    let roots = d.roots();
    thread::sleep(Duration::from_millis(300));
    let rss_start = memory_kib(&roots, "VmRSS") as f64;
    let mut conns = Vec::with_capacity(ctx.idle_conns);
    let (mut non_200, mut failed) = (0u64, 0u64);
    let mut first_error = None;
    for _ in 0..ctx.idle_conns {
        match http::get(d.port, d.host, "/", Duration::from_secs(5)) {
            Ok((stream, 200)) => conns.push(stream),
            Ok((_, status)) => {
                non_200 += 1;
                first_error.get_or_insert_with(|| format!("status {status}"));
            }
            Err(e) => {
                failed += 1;
                first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
        if failed > 50 {
            break;
        }
    }
    thread::sleep(Duration::from_secs(1));
    let rss = memory_kib(&roots, "VmRSS") as f64;
    let peak = memory_kib(&roots, "VmHWM") as f64;
    let closed = conns.iter().filter(|s| !http::still_open(s)).count();
    let open = conns.len();
    drop(conns);
    m.metrics.insert("rss_start_mib".into(), rss_start / MIB);
    m.metrics.insert("rss_mib".into(), rss / MIB);
    m.metrics.insert("peak_rss_mib".into(), peak / MIB);
    m.metrics.insert(
        "kib_per_conn".into(),
        (rss - rss_start) / open.max(1) as f64,
    );
    m.metrics.insert("conns".into(), open as f64);
    m.errors = non_200 + failed;
    if m.errors > 0 {
        m.problems.push(format!(
            "{non_200} non-200, {failed} failed of {} connections (first: {})",
            ctx.idle_conns,
            first_error.unwrap_or_default()
        ));
    }
    if closed > 0 {
        m.problems.push(format!(
            "the target closed {closed} of {open} idle connections within 1 s"
        ));
    }
    Ok(())
}
