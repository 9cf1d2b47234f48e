//! The measurement, phase by phase: the fleet's first sync, changes to the shared service, a
//! rolling update, `kill -9` and restart, and a last change that shows which proxies are still
//! live. Each phase is bounded in time; a phase that times out reports what it reached.
//!
//! Server CPU is read from `/proc/PID/stat` around each phase; the CPU of a change is what the
//! server spent from the write until every proxy had it and its verdicts had come back (a short
//! grace), minus what it spends idle over as long (keep-alives, timers: measured beforehand with
//! the whole fleet connected).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::fleet::{Arrival, Fleet};
use crate::plan::{self, Change, Plan};
use crate::procfs::{self, Memory};
use crate::report::{ChangeResult, End, Restart, Rolling, RoutingChange, Startup, Sync};
use crate::server::Server;
use crate::stats::quantiles;

/// Time for the verdicts of a change to come back before its CPU is read.
const GRACE: Duration = Duration::from_millis(500);
/// Pause between changes, so that one change's work does not overlap the next.
const BETWEEN_CHANGES: Duration = Duration::from_secs(1);
const POLL: Duration = Duration::from_millis(20);

pub struct Limits {
    pub sync: Duration,
    pub change: Duration,
    pub resync: Duration,
}

pub struct Bench {
    pub plan: Plan,
    pub server: Server,
    pub fleet: Arc<Fleet>,
    pub limits: Limits,
    /// herd-control is killed above this RSS (bytes), as a container memory limit would, and
    /// the phase fails: a run must not take the machine's memory.
    pub max_rss: u64,
    /// Server CPU seconds per second while idle with the fleet connected.
    pub idle_rate: f64,
}

fn secs(nanos: u64) -> f64 {
    nanos as f64 / 1e9
}

fn self_cpu() -> Duration {
    procfs::cpu("self").unwrap_or_default()
}

impl Bench {
    fn proxies(&self) -> usize {
        self.plan.subscriptions.len()
    }

    /// Fails when herd-control has exited, or has gone above [`Bench::max_rss`] (then it is
    /// killed). Returns its RSS.
    fn guard(&mut self) -> Result<u64> {
        self.server.check_alive()?;
        let rss = self.server.memory().rss;
        if rss > self.max_rss {
            self.server.kill()?;
            bail!(
                "herd-control killed at {} MiB RSS, above the run's cap of {} MiB (--max-server-rss)",
                rss >> 20,
                self.max_rss >> 20
            );
        }
        Ok(rss)
    }

    /// Waits for the server's `/ready`.
    pub async fn startup(&mut self) -> Result<Startup> {
        let start = Instant::now();
        while !self.server.ready().await {
            self.server.check_alive()?;
            if start.elapsed() > Duration::from_secs(60) {
                bail!("herd-control not ready within 60 s");
            }
            tokio::time::sleep(POLL).await;
        }
        Ok(Startup {
            ready_seconds: start.elapsed().as_secs_f64(),
            cpu_seconds: self.server.cpu().as_secs_f64(),
            memory: self.server.memory(),
        })
    }

    /// Starts every proxy and waits until each holds routing and all its sets.
    pub async fn sync(&mut self) -> Result<Sync> {
        let n = self.proxies();
        let cpu0 = self.server.cpu();
        let load0 = self_cpu();
        let m0 = self.server.metrics().await?;
        let overflows0 = procfs::listen_overflows();
        let t0 = self.fleet.now();
        self.fleet.start();
        let deadline = Instant::now() + self.limits.sync;
        let mut peak_rss = 0;
        let mut stopped = None;
        // Sampled as it goes: a server killed for its memory has no CPU time left to read.
        let mut cpu1 = cpu0;
        while self.fleet.synced() < n && Instant::now() < deadline {
            cpu1 = cpu1.max(self.server.cpu());
            match self.guard() {
                Ok(rss) => peak_rss = peak_rss.max(rss),
                Err(e) => {
                    stopped = Some(format!("{e:#}"));
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let t1 = self.fleet.now();
        let cpu1 = cpu1.max(self.server.cpu());
        let load1 = self_cpu();
        let m1 = match stopped {
            None => self.server.metrics().await?,
            Some(_) => Default::default(),
        };
        let times: Vec<f64> = self
            .fleet
            .slots
            .iter()
            .map(|s| s.synced_at.load(Ordering::Relaxed))
            .filter(|&t| t != 0)
            .map(|t| secs(t - t0))
            .collect();
        let count = self.fleet.count();
        Ok(Sync {
            synced: times.len(),
            seconds: secs(t1 - t0),
            per_proxy: quantiles(&times),
            server_cpu: cpu1.saturating_sub(cpu0).as_secs_f64(),
            load_cpu: load1.saturating_sub(load0).as_secs_f64(),
            routing_sent: m1.routing_sent - m0.routing_sent,
            endpoints_sent: m1.endpoints_sent - m0.endpoints_sent,
            routing_received: count.routing,
            routing_bytes: count.routing_bytes,
            sets_received: count.full + count.deltas,
            endpoint_bytes: count.endpoint_bytes,
            memory: self.server.memory(),
            sampled_peak_rss: peak_rss,
            connect_failures: count.connect_failures,
            load_memory: procfs::memory("self").unwrap_or_default(),
            listen_overflows: overflows(overflows0),
            stopped,
        })
    }

    /// Server CPU per second with the fleet connected and nothing changing.
    pub async fn idle(&mut self, over: Duration) -> Result<f64> {
        let cpu0 = self.server.cpu();
        let t = Instant::now();
        tokio::time::sleep(over).await;
        self.guard()?;
        self.idle_rate =
            self.server.cpu().saturating_sub(cpu0).as_secs_f64() / t.elapsed().as_secs_f64();
        Ok(self.idle_rate)
    }

    /// One change to the shared service: per-proxy arrival of the version that carries it.
    pub async fn change(&mut self) -> Result<ChangeResult> {
        let n = self.proxies();
        let before: Vec<String> = self
            .fleet
            .slots
            .iter()
            .map(|s| s.held().sets[0].clone())
            .collect();
        let m0 = self.server.metrics().await?;
        let cpu0 = self.server.cpu();
        let load0 = self_cpu();
        let counts0 = self.fleet.count();
        self.fleet.recorder.start();
        let t0 = self.fleet.now();
        let change = self.plan.change_shared()?;
        let deadline = Instant::now() + self.limits.change;
        while self
            .fleet
            .recorder
            .inspect(|log| first_new(log, 0, &before).len())
            < n
            && Instant::now() < deadline
        {
            self.guard()?;
            tokio::time::sleep(POLL).await;
        }
        let t1 = self.fleet.now();
        tokio::time::sleep(GRACE).await;
        let t2 = self.fleet.now();
        let cpu1 = self.server.cpu();
        let load1 = self_cpu();
        let m1 = self.server.metrics().await?;
        let log = self.fleet.recorder.stop();
        let firsts = first_new(&log, 0, &before);
        let latencies: Vec<f64> = firsts.values().map(|a| secs(a.at - t0)).collect();
        let carries = |a: &Arrival| match &change {
            Change::Add(address) => a.addresses.contains(address),
            Change::Remove(address) => {
                a.removed.contains(address) || (a.full && !a.addresses.contains(address))
            }
        };
        let wrong = firsts.values().filter(|a| !carries(a)).count();
        let mut versions: Vec<String> = self
            .fleet
            .slots
            .iter()
            .map(|s| s.held().sets[0].clone())
            .collect();
        versions.sort();
        versions.dedup();
        let raw = cpu1.saturating_sub(cpu0).as_secs_f64();
        let window = secs(t2 - t0);
        let counts = self.fleet.count().since(counts0);
        Ok(ChangeResult {
            change: match change {
                Change::Add(a) => format!("add {a}"),
                Change::Remove(a) => format!("remove {a}"),
            },
            reached: firsts.len(),
            expected: n,
            latency: quantiles(&latencies),
            all_seconds: secs(t1 - t0),
            server_cpu_raw: raw,
            server_cpu: (raw - self.idle_rate * window).max(0.0),
            window,
            delivered: m1.endpoints_sent - m0.endpoints_sent,
            received: counts.full + counts.deltas,
            full_sets: counts.full,
            wrong,
            versions_held: versions.len(),
            load_cpu: load1.saturating_sub(load0).as_secs_f64(),
        })
    }

    /// `changes` changes, [`BETWEEN_CHANGES`] apart.
    pub async fn changes(&mut self, changes: usize) -> Result<Vec<ChangeResult>> {
        let mut results = Vec::new();
        for _ in 0..changes {
            let result = self.change().await?;
            let complete = result.reached == result.expected;
            results.push(result);
            if !complete {
                break;
            }
            tokio::time::sleep(BETWEEN_CHANGES).await;
        }
        Ok(results)
    }

    /// The rolling update of the most watched service: `steps` steps at `rate` per second.
    pub async fn rolling(&mut self, steps: usize, rate: f64) -> Result<Rolling> {
        let service = self.plan.rolling;
        let subscribers = self.plan.subscribers(service);
        let m0 = self.server.metrics().await?;
        let cpu0 = self.server.cpu();
        let load0 = self_cpu();
        self.fleet.recorder.start();
        let mut stamps = Vec::with_capacity(steps);
        let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
        let first = self.fleet.now();
        for _ in 0..steps {
            ticks.tick().await;
            stamps.push(self.fleet.now());
            self.plan.roll()?;
        }
        let written = self.fleet.now();
        let deadline = Instant::now() + self.limits.change;
        let done = |log: &[Arrival]| {
            let progress = progress(log, service);
            subscribers
                .iter()
                .filter(|p| {
                    progress
                        .get(p)
                        .is_some_and(|v| v.last().map(|x| x.1) == Some(steps))
                })
                .count()
        };
        while self.fleet.recorder.inspect(done) < subscribers.len() && Instant::now() < deadline {
            self.guard()?;
            tokio::time::sleep(POLL).await;
        }
        let t1 = self.fleet.now();
        tokio::time::sleep(GRACE).await;
        let t2 = self.fleet.now();
        let cpu1 = self.server.cpu();
        let load1 = self_cpu();
        let m1 = self.server.metrics().await?;
        let log = self.fleet.recorder.stop();
        let progress = progress(&log, service);
        let mut per_update = Vec::new();
        let mut last_per_step = Vec::new();
        let mut missing = 0;
        for (k, &stamp) in stamps.iter().enumerate() {
            let step = k + 1;
            let mut last: f64 = 0.0;
            for p in &subscribers {
                // The first update at this proxy that brought it to this step or beyond.
                let arrived = progress
                    .get(p)
                    .and_then(|v| v.iter().find(|(_, s)| *s >= step))
                    .map(|(at, _)| secs(at.saturating_sub(stamp)));
                match arrived {
                    Some(latency) => {
                        per_update.push(latency);
                        last = last.max(latency);
                    }
                    None => missing += 1,
                }
            }
            last_per_step.push(last);
        }
        let complete = subscribers
            .iter()
            .filter(|p| {
                progress
                    .get(p)
                    .is_some_and(|v| v.last().map(|x| x.1) == Some(steps))
            })
            .count();
        let raw = cpu1.saturating_sub(cpu0).as_secs_f64();
        let window = secs(t2 - first);
        Ok(Rolling {
            service: self.plan.names[service as usize].clone(),
            subscribers: subscribers.len(),
            steps,
            rate,
            writing_seconds: secs(written - first),
            all_seconds: secs(t1 - first),
            per_update: quantiles(&per_update),
            last_per_step: quantiles(&last_per_step),
            missing,
            complete,
            versions_made: m1.mesh_changes - m0.mesh_changes,
            updates_received: log.len(),
            delivered: m1.endpoints_sent - m0.endpoints_sent,
            server_cpu_raw: raw,
            server_cpu: (raw - self.idle_rate * window).max(0.0),
            window,
            load_cpu: load1.saturating_sub(load0).as_secs_f64(),
        })
    }

    /// `kill -9`, start again on the same ports, and wait for every proxy to be back.
    pub async fn restart(&mut self) -> Result<Restart> {
        let n = self.proxies();
        let watches_expected: usize = self.plan.subscriptions.iter().map(Vec::len).sum();
        let held_before = self.fleet.held();
        let counts0 = self.fleet.count();
        let load0 = self_cpu();
        let memory_before = self.server.memory();
        let overflows0 = procfs::listen_overflows();
        let t_kill = self.fleet.now();
        self.server.kill()?;
        self.server.restart()?;
        let t_start = self.fleet.now();
        let deadline = Instant::now() + self.limits.resync;
        let (mut ready, mut clients, mut server_counts) = (None, None, None);
        let mut polls = 0u32;
        let mut peak_rss = 0;
        while Instant::now() < deadline && (clients.is_none() || server_counts.is_none()) {
            peak_rss = peak_rss.max(self.guard()?);
            if ready.is_none() && self.server.ready().await {
                ready = Some(self.fleet.now());
            }
            if clients.is_none() && self.fleet.open(t_kill).1 == n {
                clients = Some(self.fleet.now());
            }
            if polls.is_multiple_of(5)
                && let Ok(m) = self.server.metrics().await
                && m.proxies as usize == n
                && m.watches as usize == watches_expected
            {
                server_counts = Some(self.fleet.now());
            }
            polls += 1;
            tokio::time::sleep(POLL).await;
        }
        // Anything the server resends arrives now or never.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let m = self.server.metrics().await.ok();
        let reopen: Vec<f64> = self
            .fleet
            .slots
            .iter()
            .map(|s| s.opened_at.load(Ordering::Relaxed))
            .filter(|&t| t > t_kill)
            .map(|t| secs(t - t_kill))
            .collect();
        let held_after = self.fleet.held();
        let changed = held_before
            .iter()
            .zip(&held_after)
            .filter(|(a, b)| a != b)
            .count();
        Ok(Restart {
            memory_before,
            start_seconds: secs(t_start - t_kill),
            ready_seconds: ready.map(|t| secs(t - t_kill)),
            all_reopened_seconds: clients.map(|t| secs(t - t_kill)),
            server_counts_seconds: server_counts.map(|t| secs(t - t_kill)),
            reopened: self.fleet.open(t_kill).1,
            expected: n,
            reopen: quantiles(&reopen),
            server_proxies: m.map(|m| m.proxies),
            server_watches: m.map(|m| m.watches),
            watches_expected,
            received: self.fleet.count().since(counts0),
            held_changed: changed,
            listen_overflows: overflows(overflows0),
            server_cpu: self.server.cpu().as_secs_f64(),
            memory: Memory {
                rss: self.server.memory().rss,
                hwm: self.server.memory().hwm.max(peak_rss),
            },
            load_cpu: self_cpu().saturating_sub(load0).as_secs_f64(),
        })
    }

    /// A last shared-service change, and what is live at the end.
    pub async fn end(&mut self) -> Result<End> {
        let check = self.change().await?;
        let m = self.server.metrics().await.context("/metrics at the end")?;
        let (open, _) = self.fleet.open(0);
        let count = self.fleet.count();
        Ok(End {
            received_last_change: check.reached,
            last_change: check,
            client_open: open,
            kernel_established: procfs::established_to(self.server.discovery.port()),
            server_proxies: m.proxies,
            server_watches: m.watches,
            sessions: self
                .fleet
                .slots
                .iter()
                .map(|s| u64::from(s.sessions.load(Ordering::Relaxed)))
                .sum(),
            session_ends: count.session_ends,
            connect_failures: count.connect_failures,
            nacks: count.nacks,
            server_memory: self.server.memory(),
            load_memory: procfs::memory("self").unwrap_or_default(),
        })
    }
}

impl Bench {
    /// A change to the routing (a setting of `shared`): the whole routing document goes to
    /// every proxy at once. Server memory is sampled meanwhile; above [`Bench::max_rss`] the
    /// server is killed, and the phase reports at what RSS.
    pub async fn routing_change(&mut self) -> Result<RoutingChange> {
        let max_rss = self.max_rss;
        let n = self.proxies();
        let before: Vec<String> = self
            .fleet
            .slots
            .iter()
            .map(|s| s.held().routing.clone())
            .collect();
        let m0 = self.server.metrics().await?;
        let cpu0 = self.server.cpu();
        let load0 = self_cpu();
        let rss0 = self.server.memory().rss;
        let load_rss0 = procfs::memory("self").unwrap_or_default().rss;
        let counts0 = self.fleet.count();
        let t0 = self.fleet.now();
        self.plan.change_routing()?;
        let deadline = Instant::now() + self.limits.change;
        let reached = |fleet: &Fleet| {
            fleet
                .slots
                .iter()
                .zip(&before)
                .filter(|(s, b)| s.held().routing != **b)
                .count()
        };
        let (mut peak, mut load_peak, mut killed) = (rss0, load_rss0, None);
        while reached(&self.fleet) < n && Instant::now() < deadline {
            self.server.check_alive()?;
            let rss = self.server.memory().rss;
            peak = peak.max(rss);
            load_peak = load_peak.max(procfs::memory("self").unwrap_or_default().rss);
            if rss > max_rss {
                self.server.kill()?;
                killed = Some(rss);
                break;
            }
            tokio::time::sleep(POLL).await;
        }
        let t1 = self.fleet.now();
        let latencies: Vec<f64> = self
            .fleet
            .slots
            .iter()
            .zip(&before)
            .filter(|(s, b)| s.held().routing != **b)
            .map(|(s, _)| secs(s.routing_at.load(Ordering::Relaxed).saturating_sub(t0)))
            .collect();
        let (server_cpu, delivered) = if killed.is_none() {
            tokio::time::sleep(GRACE).await;
            let m1 = self.server.metrics().await?;
            (
                self.server.cpu().saturating_sub(cpu0).as_secs_f64(),
                m1.routing_sent - m0.routing_sent,
            )
        } else {
            (0.0, 0.0)
        };
        let counts = self.fleet.count().since(counts0);
        Ok(RoutingChange {
            reached: latencies.len(),
            expected: n,
            latency: quantiles(&latencies),
            all_seconds: secs(t1 - t0),
            document_bytes: counts
                .routing_bytes
                .checked_div(counts.routing)
                .unwrap_or(0),
            delivered,
            server_cpu,
            server_rss_before: rss0,
            server_rss_peak: peak,
            killed_at_rss: killed,
            max_rss,
            load_rss_peak: load_peak,
            load_cpu: self_cpu().saturating_sub(load0).as_secs_f64(),
        })
    }
}

/// Accept-queue overflows since `before` (machine-wide: other listeners count too).
fn overflows(before: Option<u64>) -> Option<u64> {
    Some(procfs::listen_overflows()?.saturating_sub(before?))
}

/// For each proxy, its first logged update of `service` whose version differs from the one it
/// held before (`before[proxy]`).
fn first_new<'a>(log: &'a [Arrival], service: u32, before: &[String]) -> HashMap<u32, &'a Arrival> {
    let mut firsts = HashMap::new();
    for a in log {
        if a.service == service && a.version != before[a.proxy as usize] {
            firsts.entry(a.proxy).or_insert(a);
        }
    }
    firsts
}

/// For each proxy, its updates of the rolling service in order: (arrival, the highest rolling
/// step it had after that update). Steps only add endpoints the later steps keep, so the
/// highest step among an update's addresses is the last step it includes, and a proxy's
/// progress is the running maximum.
fn progress(log: &[Arrival], service: u32) -> HashMap<u32, Vec<(u64, usize)>> {
    let mut by_proxy: HashMap<u32, Vec<(u64, usize)>> = HashMap::new();
    for a in log.iter().filter(|a| a.service == service) {
        let step = a
            .addresses
            .iter()
            .filter_map(|addr| plan::rolled_step(addr))
            .max()
            .unwrap_or(0);
        let v = by_proxy.entry(a.proxy).or_default();
        let so_far = v.last().map_or(0, |x| x.1);
        v.push((a.at, so_far.max(step)));
    }
    by_proxy
}

#[cfg(test)]
mod tests;
