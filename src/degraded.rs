//! Degradations that would otherwise be silent: `geo_nearest` services over a GeoIP
//! database without coordinates (a Country edition, or none at all), and services that fail
//! open because none of their datacenters is eligible. `meridian check` prints the first;
//! a running node logs both when they start (and when a service stops failing open), and
//! `/metrics` shows `meridian_service_fail_open`.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use crate::geo::GeoDb;
use crate::model::{PolicyKind, Service};
use crate::policy::{self, DcTable, Plan};
use crate::snapshot::{Snapshot, SnapshotReader};

/// How often a running node looks for a new snapshot to check.
const POLL: Duration = Duration::from_millis(500);

/// One warning per `geo_nearest` service that has no coordinates to go by.
pub fn geo_warnings<'a>(
    geo: &GeoDb,
    services: impl IntoIterator<Item = &'a Service>,
) -> Vec<String> {
    let why = if geo.describe() == "none" {
        "no GeoIP database is configured".to_string()
    } else if !geo.has_coordinates() {
        format!(
            "the GeoIP database ({}) has no coordinates (a Country edition?)",
            geo.describe()
        )
    } else {
        return Vec::new();
    };
    services
        .into_iter()
        .filter(|s| s.policy == PolicyKind::GeoNearest)
        .map(|s| {
            format!(
                "service {} in {} is geo_nearest, but {why}: clients get its datacenters in their listed order (after any country/continent override), not the nearest",
                s.name, s.zone
            )
        })
        .collect()
}

/// The services of a snapshot that fail open now, as `(zone, name)`.
pub fn failing_open(snap: &Snapshot) -> BTreeSet<(String, String)> {
    snap.plans
        .iter()
        .flatten()
        .map(|p| &**p)
        .filter(|p| policy::fails_open(p, &snap.dcs))
        .map(|p| (p.service.zone.clone(), p.service.name.clone()))
        .collect()
}

/// Log the degradations of each new snapshot as they start (and fail-open as it ends).
/// Runs until the task is dropped.
pub async fn watch(reader: SnapshotReader) {
    // What the degradations depend on, as last looked at: a snapshot that shares all three
    // (a zone's text or serial changed, say) cannot change them, and the look is O(services).
    // (Only these are held: an old snapshot would keep its zones' indexes alive.)
    type Inputs = (Arc<[Option<Arc<Plan>>]>, Arc<DcTable>, Arc<GeoDb>);
    let mut seen: Option<Inputs> = None;
    let mut geo_warned: HashSet<String> = HashSet::new();
    let mut failing: BTreeSet<(String, String)> = BTreeSet::new();
    loop {
        let snap: Arc<Snapshot> = Arc::clone(&reader.load());
        let same = seen.as_ref().is_some_and(|(plans, dcs, geo)| {
            Arc::ptr_eq(plans, &snap.plans)
                && Arc::ptr_eq(dcs, &snap.dcs)
                && Arc::ptr_eq(geo, &snap.geo)
        });
        if !same {
            seen = Some((snap.plans.clone(), snap.dcs.clone(), snap.geo.clone()));
            let warnings: HashSet<String> =
                geo_warnings(&snap.geo, snap.plans.iter().flatten().map(|p| &p.service))
                    .into_iter()
                    .collect();
            for w in warnings.difference(&geo_warned) {
                tracing::warn!("{w}");
            }
            geo_warned = warnings;

            let now = failing_open(&snap);
            for (zone, name) in now.difference(&failing) {
                tracing::warn!(
                    zone = %zone,
                    service = %name,
                    "service fails open: none of its datacenters is eligible (drained, unhealthy, or weight 0 for weighted); answering with all of them"
                );
            }
            let names: HashSet<(&str, &str)> = snap
                .plans
                .iter()
                .flatten()
                .map(|p| (p.service.zone.as_str(), p.service.name.as_str()))
                .collect();
            for (zone, name) in failing.difference(&now) {
                if names.contains(&(zone.as_str(), name.as_str())) {
                    tracing::info!(zone = %zone, service = %name, "service no longer fails open");
                }
            }
            failing = now;
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fixtures;

    fn geoip(name: &str) -> GeoDb {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/geoip")
            .join(name);
        GeoDb::open(&[path]).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    #[test]
    fn geo_nearest_over_a_country_database_is_a_warning() {
        let geo = fixtures::service("example.com", "www", PolicyKind::GeoNearest, &["a"]);
        let rr = fixtures::service("example.com", "rr", PolicyKind::RoundRobin, &["a"]);
        let services = [geo, rr];
        let w = geo_warnings(&geoip("GeoIP2-Country-Test.mmdb"), &services);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].starts_with("service www in example.com is geo_nearest")
                && w[0].contains("(GeoIP2-Country) has no coordinates"),
            "{}",
            w[0]
        );
        assert!(geo_warnings(&geoip("GeoIP2-City-Test.mmdb"), &services).is_empty());
        let w = geo_warnings(&GeoDb::empty(), &services);
        assert!(w.len() == 1 && w[0].contains("no GeoIP database"), "{w:?}");
        assert!(geo_warnings(&GeoDb::empty(), &services[1..]).is_empty());
    }
}
