//! Health checking: probing datacenters and this node's verdicts about them.
//!
//! This module owns the probes (HTTP(S) `GET` with 2xx as up, or a TCP connect), their
//! schedule (a jittered interval so nodes do not probe in lockstep, a timeout, and a bound on
//! probes in flight across all datacenters) and the per-node rise/fall state machine that
//! turns probe outcomes into [`Verdict`]s.
//!
//! It does not import `cluster` or `admin`: verdicts go out on an mpsc channel and the node
//! forwards them to the Raft log as proposals. What goes out per datacenter: the first verdict
//! as soon as `rise` successes or `fall` failures are reached, then only transitions
//! (up→down, down→up), plus a re-affirmation of the current verdict every [`REAFFIRM_EVERY`]
//! so that a fresh opinion can be told from a stale one. Not every probe.
//!
//! Failures never loop hot: a refused connection, a wrong port, a timeout or a bad URL are each
//! one failed probe, and the next probe comes at the normal interval. A probe that fails for
//! a reason on this node (out of descriptors, memory, buffers or local ports) is no opinion:
//! it neither counts towards `fall` nor re-affirms the last verdict, so a node starved of
//! descriptors cannot vote a healthy datacenter down.

mod probe;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::Rng;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::model::{CheckDuration, Datacenter, HealthCheck};

/// Probe interval when a check names none.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
/// Probe timeout when a check names none. A timeout is always kept below the interval.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(500);
/// Consecutive successes that make a datacenter up.
pub const DEFAULT_RISE: u32 = 2;
/// Consecutive failures that make a datacenter down.
pub const DEFAULT_FALL: u32 = 2;
/// How often a node re-sends its current verdict about a datacenter.
pub const REAFFIRM_EVERY: Duration = Duration::from_secs(30);
/// Probes in flight at once, across all datacenters.
pub const MAX_IN_FLIGHT: usize = 64;
/// How long a transition may wait for room in the report channel before it is dropped (it is
/// then retried each round until delivered).
pub const TRANSITION_SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// Upper bounds (ms) of the probe latency histogram buckets; one more bucket is `+Inf`.
pub const LATENCY_BUCKETS_MS: [f64; 9] = [1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0];
/// Shortest interval a probe loop runs at, whatever a check says.
const MIN_INTERVAL: Duration = Duration::from_millis(10);

/// One node's verdict about one datacenter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub dc: String,
    pub up: bool,
    /// The latest probe that agrees with the verdict, e.g. `"HTTP 503"`, `"connect refused"`,
    /// `"timeout after 500ms"`, `"ok (12 ms)"`.
    pub reason: String,
}

/// Per-datacenter probe counts and latency: plain data for the metrics module.
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeStats {
    pub dc: String,
    /// `"http"` or `"tcp"`.
    pub kind: &'static str,
    pub probes: u64,
    pub failures: u64,
    /// This node's current verdict; `None` until `rise` or `fall` is first reached.
    pub up: Option<bool>,
    pub last_latency_ms: Option<f64>,
    /// Sum of all probe latencies (the histogram's `_sum`).
    pub latency_sum_ms: f64,
    /// Non-cumulative counts: `latency_buckets[i]` counts probes with latency in
    /// `(LATENCY_BUCKETS_MS[i-1], LATENCY_BUCKETS_MS[i]]`; the last entry is above 1000 ms.
    pub latency_buckets: [u64; LATENCY_BUCKETS_MS.len() + 1],
}

impl ProbeStats {
    fn new(dc: &str, kind: &'static str) -> ProbeStats {
        ProbeStats {
            dc: dc.to_string(),
            kind,
            probes: 0,
            failures: 0,
            up: None,
            last_latency_ms: None,
            latency_sum_ms: 0.0,
            latency_buckets: [0; LATENCY_BUCKETS_MS.len() + 1],
        }
    }

    fn record(&mut self, ok: bool, latency: Duration) {
        let ms = latency.as_secs_f64() * 1000.0;
        self.probes += 1;
        if !ok {
            self.failures += 1;
        }
        self.last_latency_ms = Some(ms);
        self.latency_sum_ms += ms;
        self.latency_buckets[bucket_index(ms)] += 1;
    }

    /// Cumulative bucket counts, as Prometheus `le` buckets want them (the last is `+Inf`
    /// and equals `probes`).
    pub fn cumulative_buckets(&self) -> [u64; LATENCY_BUCKETS_MS.len() + 1] {
        let mut out = self.latency_buckets;
        for i in 1..out.len() {
            out[i] += out[i - 1];
        }
        out
    }
}

fn bucket_index(ms: f64) -> usize {
    LATENCY_BUCKETS_MS
        .iter()
        .position(|&bound| ms <= bound)
        .unwrap_or(LATENCY_BUCKETS_MS.len())
}

/// Knobs for a [`Prober`]; [`Settings::default`] is what [`Prober::start`] uses.
#[derive(Clone, Debug)]
pub struct Settings {
    pub reaffirm_every: Duration,
    pub max_in_flight: usize,
    pub transition_send_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            reaffirm_every: REAFFIRM_EVERY,
            max_in_flight: MAX_IN_FLIGHT,
            transition_send_timeout: TRANSITION_SEND_TIMEOUT,
        }
    }
}

/// What to probe, resolved from a [`HealthCheck`] with defaults filled in.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Target {
    Http(String),
    Tcp(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Check {
    target: Target,
    interval: Duration,
    timeout: Duration,
    rise: u32,
    fall: u32,
}

impl Check {
    /// Defaults for what is missing or unparsable; `rise`/`fall` at least 1; the interval at
    /// least [`MIN_INTERVAL`]; the timeout clamped below the interval (to 90% of it).
    fn resolve(hc: &HealthCheck) -> Check {
        let (target, interval, timeout, rise, fall) = match hc {
            HealthCheck::Http {
                url,
                interval,
                timeout,
                rise,
                fall,
            } => (Target::Http(url.clone()), interval, timeout, rise, fall),
            HealthCheck::Tcp {
                address,
                interval,
                timeout,
                rise,
                fall,
            } => (Target::Tcp(address.clone()), interval, timeout, rise, fall),
        };
        let dur = |d: &Option<CheckDuration>, default: Duration| {
            d.as_ref().map_or(default, CheckDuration::get)
        };
        let interval = dur(interval, DEFAULT_INTERVAL).max(MIN_INTERVAL);
        let mut timeout = dur(timeout, DEFAULT_TIMEOUT);
        if timeout >= interval {
            timeout = interval.mul_f64(0.9);
        }
        Check {
            target,
            interval,
            timeout,
            rise: rise.unwrap_or(DEFAULT_RISE).max(1),
            fall: fall.unwrap_or(DEFAULT_FALL).max(1),
        }
    }

    fn kind(&self) -> &'static str {
        match self.target {
            Target::Http(_) => "http",
            Target::Tcp(_) => "tcp",
        }
    }
}

/// The rise/fall state machine: Unknown until `rise` consecutive successes (up) or `fall`
/// consecutive failures (down).
#[derive(Debug)]
struct Tracker {
    rise: u32,
    fall: u32,
    ok_streak: u32,
    fail_streak: u32,
    up: Option<bool>,
}

impl Tracker {
    fn new(rise: u32, fall: u32) -> Tracker {
        Tracker {
            rise: rise.max(1),
            fall: fall.max(1),
            ok_streak: 0,
            fail_streak: 0,
            up: None,
        }
    }

    /// One probe outcome; `Some(up)` when the verdict changes (the first one included).
    fn record(&mut self, ok: bool) -> Option<bool> {
        if ok {
            self.ok_streak = self.ok_streak.saturating_add(1);
            self.fail_streak = 0;
            if self.up != Some(true) && self.ok_streak >= self.rise {
                self.up = Some(true);
                return Some(true);
            }
        } else {
            self.fail_streak = self.fail_streak.saturating_add(1);
            self.ok_streak = 0;
            if self.up != Some(false) && self.fail_streak >= self.fall {
                self.up = Some(false);
                return Some(false);
            }
        }
        None
    }
}

/// What every probe task shares.
#[derive(Clone)]
struct Shared {
    reports: mpsc::Sender<Verdict>,
    /// One HTTP client for all probers (or why it could not be built).
    client: Result<reqwest::Client, String>,
    in_flight: Arc<Semaphore>,
    settings: Arc<Settings>,
}

struct Running {
    check: HealthCheck,
    task: JoinHandle<()>,
    stats: Arc<Mutex<ProbeStats>>,
}

/// A running set of probers. `update` is called with the current datacenter list whenever it
/// changes (the node calls it after each applied state); probers start, stop or restart (when
/// the check changed) to match. Dropping it stops every probe.
pub struct Prober {
    shared: Shared,
    runtime: tokio::runtime::Handle,
    running: Mutex<HashMap<String, Running>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Prober {
    /// Probers with the default [`Settings`]; nothing runs until [`Prober::update`].
    ///
    /// # Panics
    /// Outside a Tokio runtime (probe tasks are spawned on the current one).
    pub fn start(reports: mpsc::Sender<Verdict>) -> Prober {
        Prober::start_with(reports, Settings::default())
    }

    /// [`Prober::start`] with explicit settings.
    ///
    /// # Panics
    /// Outside a Tokio runtime.
    pub fn start_with(reports: mpsc::Sender<Verdict>, settings: Settings) -> Prober {
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            // A fresh connection per probe: the check is whether new clients can connect.
            .pool_max_idle_per_host(0)
            .user_agent(concat!("meridian-health/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| {
                tracing::error!(error = %e, "health: HTTP client unavailable; HTTP checks will fail");
                e.to_string()
            });
        Prober {
            shared: Shared {
                reports,
                client,
                in_flight: Arc::new(Semaphore::new(settings.max_in_flight.max(1))),
                settings: Arc::new(settings),
            },
            runtime: tokio::runtime::Handle::current(),
            running: Mutex::new(HashMap::new()),
        }
    }

    /// Match the probers to `dcs`: start one per datacenter with a `health_check`, restart one
    /// whose check changed (its state back to Unknown), stop those gone or without a check,
    /// leave the rest running.
    pub fn update(&self, dcs: &[Datacenter]) {
        let wanted: HashMap<&str, &HealthCheck> = dcs
            .iter()
            .filter_map(|dc| dc.health_check.as_ref().map(|hc| (dc.id.as_str(), hc)))
            .collect();
        let mut running = lock(&self.running);
        running.retain(|id, r| {
            let keep = wanted.get(id.as_str()).is_some_and(|hc| **hc == r.check);
            if !keep {
                tracing::debug!(dc = %id, "health: stopping prober");
                r.task.abort();
            }
            keep
        });
        for (id, hc) in wanted {
            if running.contains_key(id) {
                continue;
            }
            let check = Check::resolve(hc);
            tracing::debug!(dc = %id, ?check, "health: starting prober");
            let stats = Arc::new(Mutex::new(ProbeStats::new(id, check.kind())));
            let task = self.runtime.spawn(run(
                id.to_string(),
                check,
                self.shared.clone(),
                stats.clone(),
            ));
            running.insert(
                id.to_string(),
                Running {
                    check: hc.clone(),
                    task,
                    stats,
                },
            );
        }
    }

    /// Per-datacenter probe latency and outcome counts for metrics: a snapshot copy, sorted
    /// by datacenter id.
    pub fn stats(&self) -> Vec<ProbeStats> {
        let mut out: Vec<ProbeStats> = lock(&self.running)
            .values()
            .map(|r| lock(&r.stats).clone())
            .collect();
        out.sort_by(|a, b| a.dc.cmp(&b.dc));
        out
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        for r in lock(&self.running).values() {
            r.task.abort();
        }
    }
}

/// A random delay in `[0, interval)`, so nodes do not start probing in lockstep.
fn initial_delay(interval: Duration) -> Duration {
    interval.mul_f64(rand::rng().random_range(0.0..1.0))
}

/// The interval ±10%.
fn jittered(interval: Duration) -> Duration {
    interval.mul_f64(rand::rng().random_range(0.9..1.1))
}

/// One datacenter's probe loop; runs until aborted or the report channel is closed.
async fn run(dc: String, check: Check, shared: Shared, stats: Arc<Mutex<ProbeStats>>) {
    tokio::time::sleep(initial_delay(check.interval)).await;
    let settings = shared.settings.clone();
    let mut tracker = Tracker::new(check.rise, check.fall);
    let mut last_ok = String::new();
    let mut last_fail = String::new();
    // When the current verdict last went out; `unsent` while a transition is undelivered.
    let mut last_sent: Option<Instant> = None;
    let mut unsent = false;
    let mut warned = false;
    let mut local_warned = false;
    loop {
        let round = Instant::now();
        let outcome = {
            let Ok(_permit) = shared.in_flight.acquire().await else {
                return;
            };
            probe::probe(&shared.client, &check.target, check.timeout).await
        };
        if outcome.local {
            // This node cannot probe just now (out of descriptors, memory…): that says
            // nothing about the datacenter, so no verdict and no re-affirmation (the last
            // opinion ages until probes work again), never "down".
            if !local_warned {
                tracing::warn!(dc = %dc, reason = %outcome.reason, "health: probe failed for a local reason; no opinion until it works again");
                local_warned = true;
            }
            tokio::time::sleep_until(round + jittered(check.interval)).await;
            continue;
        }
        local_warned = false;
        let changed = tracker.record(outcome.ok);
        {
            let mut s = lock(&stats);
            s.record(outcome.ok, outcome.latency);
            s.up = tracker.up;
        }
        if outcome.ok {
            last_ok = outcome.reason;
        } else {
            last_fail = outcome.reason;
        }
        if let Some(up) = tracker.up {
            let verdict = || Verdict {
                dc: dc.clone(),
                up,
                reason: if up {
                    last_ok.clone()
                } else {
                    last_fail.clone()
                },
            };
            if changed.is_some() {
                tracing::info!(dc = %dc, up, reason = %verdict().reason, "health: verdict");
                match tokio::time::timeout(
                    settings.transition_send_timeout,
                    shared.reports.send(verdict()),
                )
                .await
                {
                    Ok(Ok(())) => {
                        last_sent = Some(Instant::now());
                        unsent = false;
                        warned = false;
                    }
                    Ok(Err(_)) => return,
                    Err(_) => {
                        tracing::warn!(dc = %dc, up, "health: report channel full; verdict dropped, will retry");
                        unsent = true;
                        warned = true;
                    }
                }
            } else if unsent || last_sent.is_none_or(|t| t.elapsed() >= settings.reaffirm_every) {
                match shared.reports.try_send(verdict()) {
                    Ok(()) => {
                        last_sent = Some(Instant::now());
                        unsent = false;
                        warned = false;
                    }
                    Err(TrySendError::Closed(_)) => return,
                    Err(TrySendError::Full(_)) => {
                        if !warned {
                            tracing::warn!(dc = %dc, up, "health: report channel full; re-affirmation dropped");
                            warned = true;
                        }
                    }
                }
            }
        }
        tokio::time::sleep_until(round + jittered(check.interval)).await;
    }
}
