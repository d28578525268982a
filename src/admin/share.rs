//! Each datacenter's share of this node's recent answers (`answers_share`): a sampler task
//! on the admin side that copies the data plane's per-datacenter answer counters into a
//! one-minute ring, and the arithmetic over it.
//!
//! The data plane already counts, per worker and without a lock, how many answers carried
//! each datacenter's addresses (`Snapshot::counters.dc_answers`). Those are totals since the
//! process started; a share of "the last minute" needs their value a minute ago. Rather than
//! add anything to the query path, a task reads the totals every [`SAMPLE_EVERY`] and keeps
//! the samples of the last [`WINDOW`]; a read compares the totals now with the oldest sample
//! still in the window.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, Weak};
use std::time::{Duration, Instant};

use crate::snapshot::{Snapshot, SnapshotReader};

/// The window a share is computed over.
pub const WINDOW: Duration = Duration::from_secs(60);

/// How often the sampler reads the counters: a share's window is [`WINDOW`] give or take
/// this much.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(2);

/// The samples of the last [`WINDOW`]: per datacenter id, its answer total at that time.
#[derive(Debug, Default)]
pub struct AnswerShares {
    ring: Mutex<VecDeque<Sample>>,
}

#[derive(Debug)]
struct Sample {
    at: Instant,
    totals: HashMap<String, u64>,
}

/// Each live datacenter's answer total in `snap`.
pub fn totals(snap: &Snapshot) -> HashMap<String, u64> {
    snap.dcs
        .entries
        .iter()
        .zip(snap.counters.dc_answers.iter())
        .filter(|(e, _)| e.live)
        .map(|(e, c)| (e.def.id.clone(), c.sum()))
        .collect()
}

impl AnswerShares {
    /// Record the totals as of `at`, and forget the samples older than the window (keeping
    /// the newest of those, so the window stays covered from its start).
    pub fn record(&self, at: Instant, totals: HashMap<String, u64>) {
        let Ok(mut ring) = self.ring.lock() else {
            return;
        };
        ring.push_back(Sample { at, totals });
        while ring.len() > 1
            && ring
                .get(1)
                .is_some_and(|s| at.duration_since(s.at) >= WINDOW)
        {
            ring.pop_front();
        }
    }

    /// Each datacenter's share (0–1) of the answers between the oldest sample in the window
    /// and `now` (whose totals are `current`): its answers over all datacenters' answers;
    /// 0 for every datacenter when there were none. A datacenter that was not yet defined
    /// at that sample, or whose counter started again (it was deleted and made again),
    /// counts from zero.
    pub fn shares(&self, now: Instant, current: &HashMap<String, u64>) -> HashMap<String, f64> {
        let empty = HashMap::new();
        let ring = self.ring.lock();
        let base = match &ring {
            Ok(ring) => ring
                .iter()
                .find(|s| now.saturating_duration_since(s.at) <= WINDOW)
                .map_or(&empty, |s| &s.totals),
            Err(_) => &empty,
        };
        let deltas: Vec<(&String, u64)> = current
            .iter()
            .map(|(id, &now_total)| {
                let then = base.get(id).copied().unwrap_or(0);
                let delta = if now_total >= then {
                    now_total - then
                } else {
                    now_total
                };
                (id, delta)
            })
            .collect();
        let all: u64 = deltas.iter().map(|(_, d)| d).sum();
        deltas
            .into_iter()
            .map(|(id, d)| {
                let share = if all == 0 { 0.0 } else { d as f64 / all as f64 };
                (id.clone(), share)
            })
            .collect()
    }

    /// The shares as of now, from the snapshot this node answers from.
    pub fn current(&self, snap: &Snapshot) -> HashMap<String, f64> {
        self.shares(Instant::now(), &totals(snap))
    }
}

/// Sample `reader`'s counters into `shares` every [`SAMPLE_EVERY`], until `shares` is
/// dropped (the router that owns it is gone). Needs a tokio runtime; without one (a router
/// built outside it) nothing is sampled and shares count from the process's start.
pub fn spawn(reader: SnapshotReader, shares: Weak<AnswerShares>) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    rt.spawn(async move {
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(shares) = shares.upgrade() else {
                return;
            };
            let snap = reader.load();
            shares.record(Instant::now(), totals(&snap));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, u64)]) -> HashMap<String, u64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn no_answers_is_zero_for_everyone() {
        let s = AnswerShares::default();
        let t0 = Instant::now();
        s.record(t0, map(&[("lon", 5), ("iad", 7)]));
        let shares = s.shares(
            t0 + Duration::from_secs(10),
            &map(&[("lon", 5), ("iad", 7)]),
        );
        assert_eq!(shares["lon"], 0.0);
        assert_eq!(shares["iad"], 0.0);
    }

    #[test]
    fn share_is_answers_in_the_window_over_all() {
        let s = AnswerShares::default();
        let t0 = Instant::now();
        // 100 answers for lon long ago; then 30 for lon and 10 for iad within the window.
        s.record(t0, map(&[("lon", 0), ("iad", 0)]));
        s.record(
            t0 + Duration::from_secs(30),
            map(&[("lon", 100), ("iad", 0)]),
        );
        s.record(
            t0 + Duration::from_secs(62),
            map(&[("lon", 110), ("iad", 5)]),
        );
        let now = t0 + Duration::from_secs(80);
        let shares = s.shares(now, &map(&[("lon", 130), ("iad", 10)]));
        // The oldest sample in the window is the one at 30 s.
        assert!((shares["lon"] - 0.75).abs() < 1e-9, "{shares:?}");
        assert!((shares["iad"] - 0.25).abs() < 1e-9, "{shares:?}");
    }

    #[test]
    fn old_samples_are_forgotten_but_the_window_start_is_kept() {
        let s = AnswerShares::default();
        let t0 = Instant::now();
        for i in 0..100u64 {
            s.record(t0 + Duration::from_secs(i * 2), map(&[("lon", i)]));
        }
        let len = s.ring.lock().map(|r| r.len()).unwrap_or(0);
        assert!(len <= 32, "{len} samples kept");
    }

    #[test]
    fn a_new_or_restarted_counter_counts_from_zero() {
        let s = AnswerShares::default();
        let t0 = Instant::now();
        s.record(t0, map(&[("lon", 50)]));
        let shares = s.shares(
            t0 + Duration::from_secs(5),
            &map(&[("lon", 10), ("sin", 30)]),
        );
        assert!((shares["lon"] - 0.25).abs() < 1e-9, "{shares:?}");
        assert!((shares["sin"] - 0.75).abs() < 1e-9, "{shares:?}");
    }

    #[test]
    fn without_samples_the_totals_count() {
        let s = AnswerShares::default();
        let shares = s.shares(Instant::now(), &map(&[("lon", 1), ("iad", 3)]));
        assert!((shares["iad"] - 0.75).abs() < 1e-9, "{shares:?}");
    }
}
