//! The immutable data the data plane answers from, and the handle that publishes it.
//!
//! One writer (the control plane; for now the node at start-up) builds a whole new
//! [`Snapshot`] and publishes it; every query loads the current one without a lock
//! (`arc-swap`) and keeps using it for the whole answer, so a query never sees half a change.
//! Each part is its own `Arc`, so a change to one part shares the others with the old one.
//!
//! The query counters ([`QueryCounters`]) ride along: the [`Builder`] keeps one set per zone
//! origin and per datacenter id and hands the same ones to every snapshot, so counts go on
//! across rebuilds; a zone or datacenter no longer defined loses its counters (and its
//! series) at the next build.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use hickory_proto::rr::Name;

use crate::geo::GeoDb;
use crate::metrics::{Counter, QueryStats};
use crate::model::{Datacenter, Service};
use crate::policy::{DcTable, GeoKey, GeoPlan, Plan};
use crate::zone::{wire_lower, Zone, ZoneFile, ZoneSet};

/// Everything one answer needs.
#[derive(Debug)]
pub struct Snapshot {
    /// The zones, indexed (service names included, pointing into `plans`).
    pub zones: Arc<ZoneSet>,
    /// The services, ready to pick for.
    pub plans: Arc<[Plan]>,
    /// The datacenters with their weight, state and health.
    pub dcs: Arc<DcTable>,
    /// The GeoIP database (for `explain`; answers use the plans' compiled tables).
    pub geo: Arc<GeoDb>,
    /// What NSID (RFC 5001) answers: the node id.
    pub nsid: Arc<[u8]>,
    /// Increases with every publish; for logs and metrics.
    pub generation: u64,
    /// The counters the transports record answers in.
    pub counters: Arc<QueryCounters>,
    /// When this snapshot was published (built, until it is).
    pub published_at: Instant,
    /// The secrets DNS server cookies (RFC 9018) are made and checked with: the cluster's,
    /// so that every node accepts every node's cookies.
    pub cookies: Arc<CookieSecrets>,
}

/// The length of a server cookie secret: a SipHash-2-4 key (RFC 9018 §4.4).
pub const COOKIE_SECRET_LEN: usize = 16;

/// The cluster's DNS cookie secrets. Cookies are made with `current` and accepted under
/// either: after a rotation, a cookie made with the old secret stays valid for the rest of
/// its hour (a server cookie is never accepted more than an hour after it was made, so
/// `previous` may stay until the next rotation).
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CookieSecrets {
    pub current: [u8; COOKIE_SECRET_LEN],
    pub previous: Option<[u8; COOKIE_SECRET_LEN]>,
}

impl CookieSecrets {
    /// A fresh random secret, with no previous one.
    pub fn random() -> CookieSecrets {
        CookieSecrets {
            current: rand::random(),
            previous: None,
        }
    }

    /// Rotate: a new random current secret, the current one kept as previous.
    pub fn rotated(&self) -> CookieSecrets {
        CookieSecrets {
            current: rand::random(),
            previous: Some(self.current),
        }
    }
}

impl std::fmt::Debug for CookieSecrets {
    /// Never the secrets themselves.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CookieSecrets")
            .field("current", &"<redacted>")
            .field("previous", &self.previous.map(|_| "<redacted>"))
            .finish()
    }
}

impl Snapshot {
    /// A snapshot with no zones: everything is REFUSED.
    pub fn empty(node_id: u64) -> Snapshot {
        Snapshot {
            zones: Arc::new(ZoneSet::default()),
            plans: Arc::new([]),
            dcs: Arc::new(DcTable::default()),
            geo: Arc::new(GeoDb::empty()),
            nsid: node_id.to_string().into_bytes().into(),
            generation: 0,
            counters: Arc::new(QueryCounters::empty(Arc::new(QueryStats::new()))),
            published_at: Instant::now(),
            cookies: Arc::new(CookieSecrets::random()),
        }
    }
}

/// Which zone of a snapshot answered, for finding its counters; [`ZoneKey::NONE`] when no
/// zone did. Only meaningful with the snapshot whose zone it was taken from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ZoneKey(usize);

impl ZoneKey {
    pub const NONE: ZoneKey = ZoneKey(0);

    /// The key of a zone of `Snapshot::zones` (its address: zones do not move while the
    /// snapshot lives).
    #[inline]
    pub fn of(zone: &Zone) -> ZoneKey {
        ZoneKey(zone as *const Zone as usize)
    }
}

/// A snapshot's query counters: per zone, for queries in no zone, and per datacenter.
/// Label sets stay bounded: one [`QueryStats`] per configured zone, none per client.
#[derive(Debug)]
pub struct QueryCounters {
    /// Per zone, sorted by [`ZoneKey`].
    by_key: Box<[(ZoneKey, Arc<QueryStats>)]>,
    /// Per zone, sorted by origin: (origin as text, lower case with the final dot, counters).
    pub zones: Box<[(String, Arc<QueryStats>)]>,
    /// Queries in none of our zones (REFUSED), and errors answered before any zone was
    /// looked up (FORMERR, NOTIMP, BADVERS).
    pub no_zone: Arc<QueryStats>,
    /// How many answers had each datacenter's addresses, indexed like `Snapshot::dcs`.
    pub dc_answers: Box<[Arc<Counter>]>,
}

impl QueryCounters {
    fn empty(no_zone: Arc<QueryStats>) -> QueryCounters {
        QueryCounters {
            by_key: Box::new([]),
            zones: Box::new([]),
            no_zone,
            dc_answers: Box::new([]),
        }
    }

    /// The counters of the zone with this key; those of no zone for [`ZoneKey::NONE`].
    #[inline]
    pub fn zone(&self, key: ZoneKey) -> &QueryStats {
        match self.by_key.binary_search_by_key(&key.0, |e| e.0 .0) {
            Ok(i) => &self.by_key[i].1,
            Err(_) => &self.no_zone,
        }
    }
}

/// What a snapshot is built from: the definitions, as the state holds them.
pub struct Inputs<'a> {
    pub zones: &'a [ZoneFile],
    pub datacenters: &'a [Datacenter],
    pub services: &'a [Service],
}

/// Builds snapshots, keeping compiled geo tables between builds: a table depends only on
/// the database and on its services' datacenter places and overrides, so a drain, a
/// weight or a health change reuses it.
pub struct Builder {
    node_id: u64,
    geo: Arc<GeoDb>,
    tables: HashMap<GeoKey, Arc<GeoPlan>>,
    /// Query counters by zone origin (lower-case wire form), kept across builds.
    zone_stats: HashMap<WireName, Arc<QueryStats>>,
    /// Answer counters by datacenter id, kept across builds.
    dc_stats: HashMap<String, Arc<Counter>>,
    no_zone: Arc<QueryStats>,
    /// The cookie secrets every snapshot gets: random for this process until the cluster's
    /// are set with [`Builder::set_cookie_secrets`].
    cookies: Arc<CookieSecrets>,
}

impl Builder {
    pub fn new(node_id: u64, geo: Arc<GeoDb>) -> Builder {
        Builder {
            node_id,
            geo,
            tables: HashMap::new(),
            zone_stats: HashMap::new(),
            dc_stats: HashMap::new(),
            no_zone: Arc::new(QueryStats::new()),
            cookies: Arc::new(CookieSecrets::random()),
        }
    }

    /// A snapshot with no zones (everything REFUSED) that counts into this builder's
    /// counters: the one to serve before the first build.
    pub fn empty(&self) -> Snapshot {
        Snapshot {
            counters: Arc::new(QueryCounters::empty(self.no_zone.clone())),
            cookies: self.cookies.clone(),
            ..Snapshot::empty(self.node_id)
        }
    }

    /// The cluster's cookie secrets (from the replicated state), for the next build.
    /// Returns whether they changed (then the next snapshot must be built to use them).
    pub fn set_cookie_secrets(&mut self, secrets: &CookieSecrets) -> bool {
        if *self.cookies == *secrets {
            return false;
        }
        self.cookies = Arc::new(secrets.clone());
        true
    }

    /// The cookie secrets the next build uses.
    pub fn cookie_secrets(&self) -> &Arc<CookieSecrets> {
        &self.cookies
    }

    /// A new GeoIP database: every table is compiled again at the next build.
    pub fn set_geo(&mut self, geo: Arc<GeoDb>) {
        self.geo = geo;
        self.tables.clear();
    }

    pub fn geo(&self) -> &Arc<GeoDb> {
        &self.geo
    }

    /// Build a whole snapshot. Every problem is reported, one line each.
    pub fn build(&mut self, inputs: &Inputs<'_>) -> Result<Snapshot, Vec<String>> {
        let mut problems = Vec::new();
        for dc in inputs.datacenters {
            if let Err(e) = dc.validate() {
                problems.push(e.to_string());
            }
        }
        let dcs = DcTable::new(inputs.datacenters.iter().cloned());
        let mut plans = Vec::new();
        let mut by_zone: HashMap<WireName, Vec<(WireName, u32)>> = HashMap::new();
        let mut seen = HashMap::new();
        let mut keep = HashMap::new();
        for svc in inputs.services {
            if let Err(e) = svc.validate(|id| dcs.get(id).is_some()) {
                problems.push(format!("service {} in {}: {e}", svc.name, svc.zone));
                continue;
            }
            let (zone, name) = match service_name(svc) {
                Ok(n) => n,
                Err(e) => {
                    problems.push(e);
                    continue;
                }
            };
            if seen.insert(name.clone(), ()).is_some() {
                problems.push(format!(
                    "service {} in {} is defined twice",
                    svc.name, svc.zone
                ));
                continue;
            }
            match Plan::new(svc.clone(), &dcs) {
                Ok((mut plan, key)) => {
                    if let Some(key) = key {
                        // Services with the same key share one table, within a build
                        // (`keep`) and across builds (`tables`).
                        let table = match keep.get(&key).or_else(|| self.tables.get(&key)) {
                            Some(t) => Arc::clone(t),
                            None => {
                                let started = std::time::Instant::now();
                                let t = Arc::new(key.compile(&self.geo));
                                tracing::info!(
                                    service = %svc.name,
                                    orders = t.orders.len(),
                                    ms = started.elapsed().as_millis() as u64,
                                    "geo table compiled"
                                );
                                t
                            }
                        };
                        keep.insert(key, table.clone());
                        plan.geo = Some(table);
                    }
                    by_zone
                        .entry(zone)
                        .or_default()
                        .push((name, plans.len() as u32));
                    plans.push(plan);
                }
                Err(e) => problems.push(e.to_string()),
            }
        }
        let mut zones = Vec::new();
        for file in inputs.zones {
            let origin = wire_lower(&file.origin);
            let services = by_zone.remove(&origin).unwrap_or_default();
            match Zone::build(file, &services) {
                Ok(z) => zones.push(z),
                Err(e) => problems.push(format!("zone {}: {e}", file.origin)),
            }
        }
        for (origin, services) in by_zone {
            for (_, idx) in services {
                let svc = &plans[idx as usize].service;
                problems.push(format!(
                    "service {} in {}: no zone {} is loaded",
                    svc.name,
                    svc.zone,
                    crate::zone::display(&origin)
                ));
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        // Tables no service uses any more are dropped.
        self.tables = keep;
        let zones = Arc::new(ZoneSet::new(zones));
        let counters = self.counters(&zones, &dcs);
        Ok(Snapshot {
            zones,
            plans: plans.into(),
            dcs: Arc::new(dcs),
            geo: self.geo.clone(),
            nsid: self.node_id.to_string().into_bytes().into(),
            generation: 0,
            counters: Arc::new(counters),
            published_at: Instant::now(),
            cookies: self.cookies.clone(),
        })
    }

    /// The counters of these zones and datacenters: the ones they had, new ones for new
    /// names; the counters of those gone are dropped.
    fn counters(&mut self, zones: &ZoneSet, dcs: &DcTable) -> QueryCounters {
        let mut zone_stats = HashMap::with_capacity(zones.len());
        let mut by_key = Vec::with_capacity(zones.len());
        let mut labels = Vec::with_capacity(zones.len());
        for zone in zones.iter() {
            let origin: WireName = zone.origin_wire().into();
            let stats = self.zone_stats.remove(&origin).unwrap_or_default();
            by_key.push((ZoneKey::of(zone), stats.clone()));
            labels.push((zone.origin().to_string(), stats.clone()));
            zone_stats.insert(origin, stats);
        }
        by_key.sort_by_key(|e| e.0 .0);
        labels.sort_by(|a, b| a.0.cmp(&b.0));
        self.zone_stats = zone_stats;
        let mut dc_stats = HashMap::with_capacity(dcs.entries.len());
        let dc_answers = dcs
            .entries
            .iter()
            .map(|e| {
                let c = self.dc_stats.remove(&e.def.id).unwrap_or_default();
                dc_stats.insert(e.def.id.clone(), c.clone());
                c
            })
            .collect();
        self.dc_stats = dc_stats;
        QueryCounters {
            by_key: by_key.into(),
            zones: labels.into(),
            no_zone: self.no_zone.clone(),
            dc_answers,
        }
    }
}

/// A lower-case wire name.
type WireName = Box<[u8]>;

/// A service's zone origin and absolute name, as lower-case wire names.
fn service_name(svc: &Service) -> Result<(WireName, WireName), String> {
    let who = || format!("service {} in {}", svc.name, svc.zone);
    let mut origin =
        Name::from_ascii(svc.zone.trim()).map_err(|e| format!("{}: bad zone name: {e}", who()))?;
    origin.set_fqdn(true);
    let name = match svc.name.trim() {
        "@" => origin.clone(),
        n => {
            let rel = Name::from_ascii(n).map_err(|e| format!("{}: bad name: {e}", who()))?;
            if rel.is_fqdn() {
                rel
            } else {
                rel.append_name(&origin)
                    .map_err(|e| format!("{}: bad name: {e}", who()))?
            }
        }
    };
    if !origin.zone_of(&name) {
        return Err(format!("{}: the name is outside the zone", who()));
    }
    Ok((wire_lower(&origin), wire_lower(&name)))
}

/// Read access to the current snapshot: cheap to clone, lock-free to load.
#[derive(Clone)]
pub struct SnapshotReader {
    current: Arc<ArcSwap<Snapshot>>,
}

impl SnapshotReader {
    /// The current snapshot. Hold it for one answer, not longer.
    #[inline]
    pub fn load(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.current.load()
    }
}

/// The one writer. Not `Clone`: whoever owns it is the only publisher.
pub struct SnapshotPublisher {
    current: Arc<ArcSwap<Snapshot>>,
}

impl SnapshotPublisher {
    /// Publish a new snapshot; queries that start after this see it.
    pub fn publish(&self, mut snapshot: Snapshot) {
        snapshot.generation = self.current.load().generation + 1;
        snapshot.published_at = Instant::now();
        self.current.store(Arc::new(snapshot));
    }

    /// The snapshot currently published (to build the next one from).
    pub fn current(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    pub fn reader(&self) -> SnapshotReader {
        SnapshotReader {
            current: self.current.clone(),
        }
    }
}

/// A publisher and its first snapshot.
pub fn channel(initial: Snapshot) -> SnapshotPublisher {
    SnapshotPublisher {
        current: Arc::new(ArcSwap::from_pointee(initial)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fixtures::{datacenter, service};
    use crate::model::PolicyKind;
    use crate::zone::parse_zone;

    fn dc(id: &str, lat: f64) -> Datacenter {
        datacenter(id, lat, 0.0, "192.0.2.9")
    }

    fn geo_service(name: &str, dcs: &[&str]) -> Service {
        service("example.com", name, PolicyKind::GeoNearest, dcs)
    }

    #[test]
    fn services_with_the_same_places_share_one_geo_table_within_and_across_builds() {
        // 10,000 services over the same three sites once compiled 10,000 tables of the
        // whole database in one build (24 GiB with GeoLite2): they must share one.
        let origin = "example.com.".parse().expect("name");
        let zone = parse_zone(
            "$TTL 300\n@ IN SOA ns1 h 1 2 3 4 5\n@ IN NS ns1\nns1 IN A 192.0.2.1\n",
            "example.com.zone",
            &origin,
        )
        .expect("zone");
        let dcs = [dc("a", 1.0), dc("b", 2.0), dc("c", 3.0)];
        let services = [
            geo_service("s1", &["a", "b", "c"]),
            geo_service("s2", &["a", "b", "c"]),
            geo_service("s3", &["c", "b", "a"]),
        ];
        let inputs = Inputs {
            zones: std::slice::from_ref(&zone),
            datacenters: &dcs,
            services: &services,
        };
        let mut builder = Builder::new(1, Arc::new(GeoDb::empty()));
        let first = builder.build(&inputs).expect("build");
        let table = |s: &Snapshot, i: usize| s.plans[i].geo.clone().expect("geo plan");
        assert!(Arc::ptr_eq(&table(&first, 0), &table(&first, 1)));
        assert!(!Arc::ptr_eq(&table(&first, 0), &table(&first, 2)));
        let second = builder.build(&inputs).expect("build");
        assert!(Arc::ptr_eq(&table(&first, 0), &table(&second, 1)));
        assert!(Arc::ptr_eq(&table(&first, 2), &table(&second, 2)));
    }
}
