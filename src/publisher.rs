//! The one writer of the data plane's snapshot. It is fed every apply batch of the state
//! machine with what it changed (a [`Delta`]), and new GeoIP databases; it hands only the
//! changed parts to the incremental [`Builder`] (a zone text re-indexes that zone, a drain
//! rebuilds the small datacenter table) and publishes the result. A batch that changed
//! nothing an answer depends on (a re-affirmed health opinion, a membership entry) publishes
//! nothing. After each batch it says which log index the data plane now reflects, so that a
//! write can answer once its node's DNS shows it.

use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use crate::cluster::state::Delta;
use crate::cluster::{Change, State};
use crate::geo::GeoDb;
use crate::name::ZoneName;
use crate::snapshot::{Builder, SnapshotPublisher};

/// How often the publisher looks for signed zones whose signatures are aging (less than
/// half their validity left, `zone::index::RENEW_LEFT_SECS`): those zones are built again,
/// off the query path, and only their aging signatures are made again. A pass with
/// nothing due builds nothing.
pub const RENEW_CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// A batch changing this many zones is followed by a heap trim, however fast its build.
const LARGE_DELTA_ZONES: usize = 1000;

/// What else changes the snapshot.
pub enum Update {
    /// A new GeoIP database was opened.
    Geo(Arc<GeoDb>),
    /// Something readiness depends on changed: call `on_publish` again.
    Recheck,
}

/// Called after every batch with the state it reflects (readiness, metrics).
pub type OnPublish = Box<dyn Fn(&State, Option<u64>) + Send>;

/// The transfer data and TSIG keys `delta` names (everything: all of them).
fn feed_xfr(builder: &mut Builder, state: &State, delta: &Delta) {
    if delta.everything || !delta.tsig_keys.is_empty() {
        builder.set_tsig_keys(
            state
                .tsig_keys()
                .map(|k| (k.key.name.clone(), k.key.clone()))
                .collect(),
        );
    }
    let origins: std::collections::BTreeSet<ZoneName> = if delta.everything {
        let (held, _) = builder.held();
        held.iter()
            .map(ZoneName::from_name)
            .chain(state.zones().map(|(o, _)| o.clone()))
            .collect()
    } else {
        delta
            .serials
            .iter()
            .chain(&delta.zone_settings)
            .chain(&delta.zones)
            .cloned()
            .collect()
    };
    for origin in origins {
        let Ok(name) = origin.to_name() else {
            continue;
        };
        builder.put_xfr(&name, state.xfr_zone(&origin).map(Arc::new));
    }
    feed_dnssec(builder, state, delta);
}

/// The DNSSEC keys `delta` names (everything: every zone's).
fn feed_dnssec(builder: &mut Builder, state: &State, delta: &Delta) {
    let origins: Vec<ZoneName> = if delta.everything {
        let (held, _) = builder.held();
        held.iter()
            .map(ZoneName::from_name)
            .chain(state.zones().map(|(o, _)| o.clone()))
            .collect()
    } else {
        delta.dnssec.iter().cloned().collect()
    };
    for origin in origins {
        let Ok(name) = origin.to_name() else {
            continue;
        };
        builder.put_dnssec(&name, state.dnssec(&origin).map(|e| e.keys.clone()));
    }
}

/// Hand `delta` (against `state`) to the builder: only what it names is rebuilt.
pub fn feed(builder: &mut Builder, state: &State, delta: &Delta) {
    if delta.cookies || delta.everything {
        if let Some(secrets) = state.cookie_secrets() {
            builder.set_cookie_secrets(secrets);
        }
    }
    feed_xfr(builder, state, delta);
    if delta.everything {
        builder.set_datacenters(state.datacenters().map(|e| &*e.dc));
        let (zones, services) = builder.held();
        for (zone, name) in services {
            // The builder's services came from the state: their names are canonical text.
            if state.service(zone.as_str(), name.as_str()).is_none() {
                builder.remove_service(&zone, &name);
            }
        }
        for origin in zones {
            if state.zone(&ZoneName::from_name(&origin)).is_none() {
                builder.remove_zone(&origin);
            }
        }
        for (_, z) in state.zones() {
            builder.put_zone(z.file.clone());
        }
        for s in state.services() {
            builder.put_service(&s.service);
        }
        return;
    }
    if !delta.datacenters.is_empty() {
        builder.set_datacenters(state.datacenters().map(|e| &*e.dc));
    }
    for origin in &delta.zones {
        match state.zone(origin) {
            Some(z) => builder.put_zone(z.file.clone()),
            None => match origin.to_name() {
                Ok(name) => builder.remove_zone(&name),
                Err(e) => {
                    tracing::error!(origin = origin.as_str(), error = %e, "a removed zone has a bad name")
                }
            },
        }
    }
    for (zone, name) in &delta.services {
        match state.service(zone, name) {
            Some(s) => builder.put_service(&s.service),
            None => builder.remove_service(zone.as_str(), name.as_str()),
        }
    }
}

/// Run the publisher until the change feed closes.
pub async fn run(
    mut changes: mpsc::UnboundedReceiver<Change>,
    mut updates: mpsc::Receiver<Update>,
    mut builder: Builder,
    publisher: SnapshotPublisher,
    published: watch::Sender<Option<u64>>,
    on_publish: OnPublish,
) {
    let mut state = Arc::new(State::default());
    let mut last_applied = None;
    // Signatures are valid for 14 days (zone::dnssec::VALIDITY_SECS) and made again when 7
    // are left; looking every hour keeps far more than the quarter DESIGN.md asks for.
    let mut resign = tokio::time::interval(RENEW_CHECK_EVERY);
    resign.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    resign.tick().await;
    loop {
        let mut delta = Delta::default();
        let mut rebuild = false;
        tokio::select! {
            _ = resign.tick() => {
                let n = builder.renew_aging_signatures(crate::dns::tsig::unix_now());
                if n > 0 {
                    tracing::info!(zones = n, "renewing aging signatures");
                    rebuild = true;
                }
            }
            change = changes.recv() => {
                let Some(first) = change else { return };
                let mut latest = first;
                delta.merge(std::mem::take(&mut latest.delta));
                // Everything that is waiting goes into one snapshot.
                while let Ok(mut more) = changes.try_recv() {
                    delta.merge(std::mem::take(&mut more.delta));
                    latest = more;
                }
                state = latest.state;
                last_applied = latest.last_applied;
            }
            update = updates.recv() => match update {
                Some(Update::Geo(db)) => {
                    builder.set_geo(db);
                    rebuild = true;
                }
                Some(Update::Recheck) => {}
                None => return,
            },
        }
        if delta.changes_answers() || rebuild {
            // A build of many zones frees as much as one large zone's.
            let large = delta.everything || delta.zones.len() >= LARGE_DELTA_ZONES;
            let st = state.clone();
            let started = std::time::Instant::now();
            // Indexing a changed zone is plain CPU work (seconds for a million records): off
            // the runtime's threads, so Raft heartbeats and the API keep their pace.
            let built = tokio::task::spawn_blocking(move || {
                feed(&mut builder, &st, &delta);
                let result = builder.snapshot();
                (builder, result)
            })
            .await;
            let (snap, problems);
            (builder, (snap, problems)) = match built {
                Ok(done) => done,
                Err(e) => {
                    tracing::error!(error = %e, "snapshot build failed; the publisher stops");
                    return;
                }
            };
            if !problems.is_empty() {
                tracing::error!(
                    problems = %problems.join("; "),
                    "parts of the applied state do not build; they keep their last form"
                );
            }
            publisher.publish(snap);
            if large || started.elapsed() > std::time::Duration::from_millis(500) {
                // A large zone (or many) was indexed: hand what its build freed back to
                // the system.
                tokio::task::spawn_blocking(crate::memory::release_freed);
            }
            tracing::debug!(
                generation = publisher.current().generation,
                applied = ?last_applied,
                us = started.elapsed().as_micros() as u64,
                "snapshot published"
            );
        }
        published.send_replace(last_applied);
        on_publish(&state, last_applied);
    }
}
