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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use hickory_proto::rr::Name;

use crate::geo::GeoDb;
use crate::metrics::{Counter, QueryStats};
use crate::model::{Datacenter, Service};
use crate::policy::{DcTable, GeoKey, GeoPlan, Plan};
use crate::zone::dnssec::ZoneKeys;
use crate::zone::transfer::XfrZone;
use crate::zone::{wire_lower, Zone, ZoneFile, ZoneSet};
use crate::zoneconf::TsigKey;

/// Everything one answer needs.
#[derive(Debug)]
pub struct Snapshot {
    /// The zones, indexed (service names included, pointing into `plans`).
    pub zones: Arc<ZoneSet>,
    /// The services, ready to pick for, by slot (`Node::service`); `None`: a free slot.
    pub plans: Arc<[Option<Arc<Plan>>]>,
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
    /// What zone transfers, NOTIFY and UPDATE need: each zone's transferred content,
    /// journal and settings, by lower-case wire origin. Off the query path.
    pub xfr: Arc<XfrSet>,
    /// The cluster's TSIG keys, by canonical name (lower case, no final dot).
    pub tsig: Arc<TsigKeys>,
}

/// Zones' transfer data by lower-case wire origin. A persistent map: a publish that changes
/// one zone's copies the path to it, not the map (as a `HashMap` of 10,000 zones copied per
/// publish it was 29% of a zone PUT's profile; with the degradation watcher's change, CPU
/// per PUT went from 9.7 to 5.75 ms, `benches/control/run.sh`).
pub type XfrSet = imbl::HashMap<Box<[u8]>, Arc<XfrZone>>;
/// TSIG keys by canonical name.
pub type TsigKeys = BTreeMap<String, Arc<TsigKey>>;

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
            xfr: Arc::default(),
            tsig: Arc::default(),
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
    /// Shared between snapshots until a zone comes or goes.
    pub zones: Arc<[(String, Arc<QueryStats>)]>,
    /// Queries in none of our zones (REFUSED), and errors answered before any zone was
    /// looked up (FORMERR, NOTIMP, BADVERS).
    pub no_zone: Arc<QueryStats>,
    /// How many answers had each datacenter's addresses, indexed like `Snapshot::dcs`.
    /// Shared between snapshots until a datacenter comes or goes.
    pub dc_answers: Arc<[Arc<Counter>]>,
}

impl QueryCounters {
    fn empty(no_zone: Arc<QueryStats>) -> QueryCounters {
        QueryCounters {
            by_key: Box::new([]),
            zones: Arc::new([]),
            no_zone,
            dc_answers: Arc::new([]),
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

/// What a whole snapshot is built from (`meridian check`, the bootstrap files, tests).
pub struct Inputs<'a> {
    pub zones: &'a [ZoneFile],
    pub datacenters: &'a [Datacenter],
    pub services: &'a [Service],
}

/// A service's key in the builder: its zone's origin and its absolute name (lower-case wire).
type ServiceId = (WireName, WireName);

/// Builds snapshots incrementally: it holds the parts of the last one (zone indexes, service
/// plans, the datacenter table, compiled geo tables, counters) and a change rebuilds only
/// the part it touches — a zone text re-indexes that zone, a service re-plans that service
/// (and re-indexes its zone only when it appears or goes), a drain or a weight rebuilds the
/// small datacenter table and nothing else.
///
/// Zone nodes name services by a stable slot (an index into `Snapshot::plans` that a
/// service keeps while it exists), so a service's new plan needs no re-index.
pub struct Builder {
    node_id: u64,
    geo: Arc<GeoDb>,
    /// Geo tables by what they depend on, shared by services with the same places.
    tables: HashMap<GeoKey, Arc<GeoPlan>>,
    /// Query counters by zone origin (lower-case wire form), kept across builds.
    zone_stats: HashMap<WireName, Arc<QueryStats>>,
    /// Answer counters by datacenter id, kept across builds.
    dc_stats: HashMap<String, Arc<Counter>>,
    no_zone: Arc<QueryStats>,

    dcs: Arc<DcTable>,
    /// Zone files by origin.
    files: HashMap<WireName, Arc<ZoneFile>>,
    /// Services by zone: absolute name → slot.
    zone_services: HashMap<WireName, BTreeMap<WireName, u32>>,
    /// Every service's slot, and the definition it was planned from.
    slots: HashMap<ServiceId, u32>,
    defs: Vec<Option<Service>>,
    plans: Vec<Option<Arc<Plan>>>,
    free: Vec<u32>,
    zones: ZoneSet,
    /// Zones to index again at the next snapshot.
    dirty_zones: BTreeSet<WireName>,
    plans_changed: bool,
    dcs_changed: bool,
    problems: Vec<String>,
    /// The parts of the last snapshot, reused while unchanged.
    last: Option<Parts>,
    /// Each indexed zone's address (its [`ZoneKey`]) by origin, and its counters by key.
    zone_addr: HashMap<WireName, ZoneKey>,
    zone_keys: BTreeMap<usize, Arc<QueryStats>>,
    /// Zones came or went: the per-zone label list is made again.
    zone_set_changed: bool,
    /// A plan was replaced or removed: a geo table may be unused now.
    prune_tables: bool,
    /// Datacenters came or went: the answer counters are lined up again.
    dc_set_changed: bool,
    /// The cookie secrets every snapshot gets: random for this process until the cluster's
    /// are set with [`Builder::set_cookie_secrets`].
    cookies: Arc<CookieSecrets>,
    /// The cluster's serial of each zone (lower-case wire origin), applied to its index.
    serials: HashMap<WireName, u32>,
    /// Zones whose serial changed but whose index did not.
    dirty_serials: BTreeSet<WireName>,
    xfr: Arc<XfrSet>,
    tsig: Arc<TsigKeys>,
    /// The DNSSEC keys of signed zones, by lower-case wire origin.
    dnssec: HashMap<WireName, Arc<ZoneKeys>>,
}

#[derive(Clone)]
struct Parts {
    zones: Arc<ZoneSet>,
    plans: Arc<[Option<Arc<Plan>>]>,
    counters: Arc<QueryCounters>,
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
            dcs: Arc::new(DcTable::default()),
            files: HashMap::new(),
            zone_services: HashMap::new(),
            slots: HashMap::new(),
            defs: Vec::new(),
            plans: Vec::new(),
            free: Vec::new(),
            zones: ZoneSet::default(),
            dirty_zones: BTreeSet::new(),
            plans_changed: true,
            dcs_changed: true,
            problems: Vec::new(),
            last: None,
            zone_addr: HashMap::new(),
            zone_keys: BTreeMap::new(),
            zone_set_changed: true,
            prune_tables: false,
            dc_set_changed: true,
            cookies: Arc::new(CookieSecrets::random()),
            serials: HashMap::new(),
            dirty_serials: BTreeSet::new(),
            xfr: Arc::default(),
            tsig: Arc::default(),
            dnssec: HashMap::new(),
        }
    }

    /// A zone's DNSSEC keys (`None`: unsigned): the zone is indexed and signed again at the
    /// next snapshot.
    pub fn put_dnssec(&mut self, origin: &Name, keys: Option<Arc<ZoneKeys>>) {
        let wire = wire_lower(origin);
        let changed = match keys {
            Some(k) => self.dnssec.insert(wire.clone(), k.clone()).as_deref() != Some(&*k),
            None => self.dnssec.remove(&wire).is_some(),
        };
        if changed {
            self.dirty_zones.insert(wire);
        }
    }

    /// Mark for the next build every signed zone with a signature whose renewal is due at
    /// `now` (seconds since the epoch; see [`Zone::renewal_due`]): that build signs only
    /// the aging signatures again. One comparison per signed zone, so a pass with nothing
    /// due costs nothing. Returns how many zones were marked.
    pub fn renew_aging_signatures(&mut self, now: u64) -> usize {
        let due: Vec<WireName> = self
            .dnssec
            .keys()
            .filter(|o| self.zones.get(o).is_some_and(|z| z.renewal_due(now)))
            .cloned()
            .collect();
        let n = due.len();
        self.dirty_zones.extend(due);
        n
    }

    /// A zone's transfer data (its serial included), or `None` when the zone went: the
    /// index takes the serial without being built again.
    pub fn put_xfr(&mut self, origin: &Name, xfr: Option<Arc<XfrZone>>) {
        let wire = wire_lower(origin);
        let xfrs = Arc::make_mut(&mut self.xfr);
        match xfr {
            Some(x) => {
                if self.serials.insert(wire.clone(), x.serial) != Some(x.serial) {
                    self.dirty_serials.insert(wire.clone());
                }
                xfrs.insert(wire, x);
            }
            None => {
                self.serials.remove(&wire);
                xfrs.remove(&wire);
            }
        }
    }

    /// The cluster's TSIG keys.
    pub fn set_tsig_keys(&mut self, keys: TsigKeys) {
        self.tsig = Arc::new(keys);
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

    /// A new GeoIP database: every geo table is compiled again (every service re-planned).
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
        self.prune_tables = true;
        self.replan_all();
    }

    pub fn geo(&self) -> &Arc<GeoDb> {
        &self.geo
    }

    /// Build a whole snapshot of exactly `inputs` (what the builder held before and the
    /// inputs do not name is removed). Every problem is reported, one line each.
    pub fn build(&mut self, inputs: &Inputs<'_>) -> Result<Snapshot, Vec<String>> {
        let (zones, services) = self.held();
        for (zone, name) in services {
            self.remove_service(&zone, &name);
        }
        for origin in zones {
            self.remove_zone(&origin);
        }
        // Fresh slots and a fresh datacenter table: every service is planned again below.
        self.plans.clear();
        self.defs.clear();
        self.free.clear();
        self.dcs = Arc::new(DcTable::default());
        self.dc_set_changed = true;
        for dc in inputs.datacenters {
            if let Err(e) = dc.validate() {
                self.problems.push(e.to_string());
            }
        }
        self.set_datacenters(inputs.datacenters.iter());
        for file in inputs.zones {
            self.put_zone(Arc::new(file.clone()));
        }
        let mut seen = HashMap::new();
        for svc in inputs.services {
            if let Ok(id) = service_name(svc) {
                if seen.insert(id, ()).is_some() {
                    self.problems.push(format!(
                        "service {} in {} is defined twice",
                        svc.name, svc.zone
                    ));
                    continue;
                }
            }
            self.put_service(svc);
        }
        let (snap, problems) = self.snapshot();
        if problems.is_empty() {
            Ok(snap)
        } else {
            Err(problems)
        }
    }

    /// The datacenters now (definitions with state and health). Each keeps its index; a
    /// service is planned again only when one of its datacenters moved.
    pub fn set_datacenters<'a>(&mut self, dcs: impl IntoIterator<Item = &'a Datacenter>) {
        let (table, moved) = self.dcs.update(dcs);
        self.dc_set_changed |= table.entries.len() != self.dcs.entries.len()
            || table
                .entries
                .iter()
                .zip(self.dcs.entries.iter())
                .any(|(a, b)| a.live != b.live || a.def.id != b.def.id);
        self.dcs = Arc::new(table);
        self.dcs_changed = true;
        if moved {
            self.replan_all();
        }
    }

    fn replan_all(&mut self) {
        let defs: Vec<Service> = self.defs.iter().flatten().cloned().collect();
        for svc in &defs {
            self.put_service(svc);
        }
    }

    /// The zones (origins) and services (zone, name as defined) this builder holds: what a
    /// rebuild from a whole new state must remove when the state no longer has them.
    pub fn held(&self) -> (Vec<Name>, Vec<(String, String)>) {
        let zones = self.files.values().map(|f| f.origin.clone()).collect();
        let services = self
            .defs
            .iter()
            .flatten()
            .map(|s| (s.zone.clone(), s.name.clone()))
            .collect();
        (zones, services)
    }

    /// A zone's text, new or changed: it is indexed again at the next snapshot.
    pub fn put_zone(&mut self, file: Arc<ZoneFile>) {
        let origin = wire_lower(&file.origin);
        self.files.insert(origin.clone(), file);
        self.dirty_zones.insert(origin);
    }

    /// A zone deleted.
    pub fn remove_zone(&mut self, origin: &Name) {
        let origin = wire_lower(origin);
        self.files.remove(&origin);
        self.dirty_zones.insert(origin);
    }

    /// A service, new or changed: planned now; its zone is indexed again only when the
    /// service is new there.
    pub fn put_service(&mut self, svc: &Service) {
        let who = || format!("service {} in {}", svc.name, svc.zone);
        if let Err(e) = svc.validate(|id| self.dcs.get(id).is_some()) {
            self.problems.push(format!("{}: {e}", who()));
            return;
        }
        let id = match service_name(svc) {
            Ok(id) => id,
            Err(e) => {
                self.problems.push(e);
                return;
            }
        };
        let plan = match Plan::new(svc.clone(), &self.dcs) {
            Ok((mut plan, key)) => {
                if let Some(key) = key {
                    plan.geo = Some(self.table(key, &svc.name));
                }
                Arc::new(plan)
            }
            Err(e) => {
                self.problems.push(e.to_string());
                return;
            }
        };
        let slot = match self.slots.get(&id) {
            Some(&slot) => slot,
            None => {
                let slot = match self.free.pop() {
                    Some(s) => s,
                    None => {
                        self.plans.push(None);
                        self.defs.push(None);
                        (self.plans.len() - 1) as u32
                    }
                };
                self.slots.insert(id.clone(), slot);
                self.zone_services
                    .entry(id.0.clone())
                    .or_default()
                    .insert(id.1.clone(), slot);
                self.dirty_zones.insert(id.0.clone());
                slot
            }
        };
        let old = self.plans[slot as usize].replace(plan);
        self.prune_tables |= old.is_some_and(|o| o.geo.is_some());
        self.defs[slot as usize] = Some(svc.clone());
        self.plans_changed = true;
    }

    /// A service deleted: its slot is freed and its zone indexed again.
    pub fn remove_service(&mut self, zone: &str, name: &str) {
        let probe = Service {
            zone: zone.into(),
            name: name.into(),
            policy: crate::model::PolicyKind::RoundRobin,
            datacenters: Vec::new(),
            ttl: 0,
            answers: None,
            overrides: Default::default(),
            on_all_down: Default::default(),
        };
        let Ok(id) = service_name(&probe) else {
            return;
        };
        let Some(slot) = self.slots.remove(&id) else {
            return;
        };
        if let Some(m) = self.zone_services.get_mut(&id.0) {
            m.remove(&id.1);
            if m.is_empty() {
                self.zone_services.remove(&id.0);
            }
        }
        self.prune_tables |= self.plans[slot as usize]
            .take()
            .is_some_and(|o| o.geo.is_some());
        self.defs[slot as usize] = None;
        self.free.push(slot);
        self.dirty_zones.insert(id.0);
        self.plans_changed = true;
    }

    /// The geo table for a key: shared with every service with the same places.
    fn table(&mut self, key: GeoKey, service: &str) -> Arc<GeoPlan> {
        if let Some(t) = self.tables.get(&key) {
            return t.clone();
        }
        let started = std::time::Instant::now();
        let t = Arc::new(key.compile(&self.geo));
        tracing::info!(
            service,
            orders = t.orders.len(),
            ms = started.elapsed().as_millis() as u64,
            "geo table compiled"
        );
        self.tables.insert(key, t.clone());
        t
    }

    /// The next snapshot: the dirty zones indexed again, every other part shared with the
    /// last one. The problems met since the last snapshot come with it (a zone that does
    /// not index keeps its old index; a service that does not plan keeps its old plan).
    pub fn snapshot(&mut self) -> (Snapshot, Vec<String>) {
        let zones_changed =
            !self.dirty_zones.is_empty() || !self.dirty_serials.is_empty() || self.last.is_none();
        if zones_changed {
            let dirty = std::mem::take(&mut self.dirty_zones);
            // A new serial alone: the same index under the new SOA.
            for origin in std::mem::take(&mut self.dirty_serials) {
                if dirty.contains(&origin) {
                    continue;
                }
                let (Some(z), Some(&serial)) = (self.zones.get(&origin), self.serials.get(&origin))
                else {
                    continue;
                };
                let z = z.with_serial(serial);
                self.install_zone(origin, z);
            }
            for origin in dirty {
                let services: Vec<(Box<[u8]>, u32)> = self
                    .zone_services
                    .get(&origin)
                    .map(|m| m.iter().map(|(n, s)| (n.clone(), *s)).collect())
                    .unwrap_or_default();
                let Some(file) = self.files.get(&origin) else {
                    self.zones.remove(&origin);
                    if let Some(old) = self.zone_addr.remove(&origin) {
                        self.zone_keys.remove(&old.0);
                        self.zone_stats.remove(&origin);
                        self.zone_set_changed = true;
                    }
                    for (name, _) in services {
                        self.problems.push(format!(
                            "service {} has no zone {} loaded",
                            crate::zone::display(&name),
                            crate::zone::display(&origin)
                        ));
                    }
                    continue;
                };
                // The cluster's serial goes in before signing, so the SOA is signed once;
                // a signed zone keeps the signatures of its last build that are still good.
                let prev = self.zones.get(&origin).cloned();
                let built = Zone::build(file, &services).and_then(|mut z| {
                    if let Some(&serial) = self.serials.get(&origin) {
                        if serial != z.serial() {
                            z.set_serial(serial);
                        }
                    }
                    if let Some(keys) = self.dnssec.get(&origin) {
                        let started = std::time::Instant::now();
                        let stats =
                            z.sign_reusing(keys, crate::dns::tsig::unix_now(), prev.as_deref())?;
                        tracing::debug!(
                            zone = %file.origin,
                            made = stats.made,
                            kept = stats.kept,
                            ms = started.elapsed().as_millis() as u64,
                            "zone signed"
                        );
                    }
                    Ok(z)
                });
                match built {
                    Ok(z) => self.install_zone(origin, z),
                    Err(e) => self.problems.push(format!("zone {}: {e}", file.origin)),
                }
            }
        }
        let zones = match (&self.last, zones_changed) {
            (Some(last), false) => last.zones.clone(),
            _ => Arc::new(self.zones.clone()),
        };
        let plans = match (&self.last, self.plans_changed) {
            (Some(last), false) => last.plans.clone(),
            _ => self.plans.clone().into(),
        };
        let last_counters = self.last.as_ref().map(|l| l.counters.clone());
        let counters = match (last_counters, zones_changed || self.dc_set_changed) {
            (Some(last), false) => last,
            (last, _) => Arc::new(self.counters(last.as_deref(), &zones)),
        };
        if std::mem::take(&mut self.prune_tables) {
            // Tables no service uses any more are dropped.
            let used: std::collections::HashSet<*const GeoPlan> = self
                .plans
                .iter()
                .flatten()
                .filter_map(|p| p.geo.as_ref().map(Arc::as_ptr))
                .collect();
            self.tables.retain(|_, t| used.contains(&Arc::as_ptr(t)));
        }
        self.plans_changed = false;
        self.dcs_changed = false;
        self.zone_set_changed = false;
        self.dc_set_changed = false;
        self.last = Some(Parts {
            zones: zones.clone(),
            plans: plans.clone(),
            counters: counters.clone(),
        });
        let snap = Snapshot {
            zones,
            plans,
            dcs: self.dcs.clone(),
            geo: self.geo.clone(),
            nsid: self.node_id.to_string().into_bytes().into(),
            generation: 0,
            counters,
            published_at: Instant::now(),
            cookies: self.cookies.clone(),
            xfr: self.xfr.clone(),
            tsig: self.tsig.clone(),
        };
        (snap, std::mem::take(&mut self.problems))
    }

    /// Put an indexed zone in the set, its counters following it to its new address.
    fn install_zone(&mut self, origin: WireName, z: Zone) {
        let z = Arc::new(z);
        let key = ZoneKey::of(&z);
        match self.zone_addr.insert(origin.clone(), key) {
            Some(old) => {
                self.zone_keys.remove(&old.0);
            }
            None => self.zone_set_changed = true,
        }
        let stats = self.zone_stats.entry(origin).or_default().clone();
        self.zone_keys.insert(key.0, stats);
        self.zones.insert(z);
    }

    /// The counters of the indexed zones and of the datacenters: the ones they had, new
    /// ones for new names. What did not come or go is shared with `last`; the per-zone
    /// look-up (by zone address) is lined up again, which is a copy of pointers.
    fn counters(&mut self, last: Option<&QueryCounters>, zones: &ZoneSet) -> QueryCounters {
        let by_key: Box<[(ZoneKey, Arc<QueryStats>)]> = self
            .zone_keys
            .iter()
            .map(|(&k, s)| (ZoneKey(k), s.clone()))
            .collect();
        let labels = match last {
            Some(l) if !self.zone_set_changed => l.zones.clone(),
            _ => {
                let mut labels: Vec<(String, Arc<QueryStats>)> = zones
                    .iter()
                    .map(|z| {
                        let stats = self
                            .zone_keys
                            .get(&ZoneKey::of(z).0)
                            .cloned()
                            .unwrap_or_default();
                        (z.origin().to_string(), stats)
                    })
                    .collect();
                labels.sort_by(|a, b| a.0.cmp(&b.0));
                labels.into()
            }
        };
        let dc_answers = match last {
            Some(l) if !self.dc_set_changed => l.dc_answers.clone(),
            _ => {
                let mut dc_stats = HashMap::with_capacity(self.dcs.entries.len());
                let answers: Arc<[Arc<Counter>]> = self
                    .dcs
                    .entries
                    .iter()
                    .map(|e| {
                        let c = self.dc_stats.remove(&e.def.id).unwrap_or_default();
                        if e.live {
                            dc_stats.insert(e.def.id.clone(), c.clone());
                        }
                        c
                    })
                    .collect();
                self.dc_stats = dc_stats;
                answers
            }
        };
        QueryCounters {
            by_key,
            zones: labels,
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
    /// The current snapshot as an `Arc`, for work that awaits (transfers, updates).
    pub fn load_full(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

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
        let table = |s: &Snapshot, i: usize| {
            let plan = s.plans[i].as_ref().expect("plan");
            plan.geo.clone().expect("geo plan")
        };
        assert!(Arc::ptr_eq(&table(&first, 0), &table(&first, 1)));
        assert!(!Arc::ptr_eq(&table(&first, 0), &table(&first, 2)));
        let second = builder.build(&inputs).expect("build");
        assert!(Arc::ptr_eq(&table(&first, 0), &table(&second, 1)));
        assert!(Arc::ptr_eq(&table(&first, 2), &table(&second, 2)));
    }

    #[test]
    fn signed_zones_are_built_again_when_signatures_age_and_unsigned_ones_never() {
        let text = "$TTL 300\n@ IN SOA ns1 h 1 2 3 4 5\n@ IN NS ns1\nns1 IN A 192.0.2.1\n";
        let file = |origin: &str| {
            let name: Name = origin.parse().expect("name");
            Arc::new(parse_zone(text, "z.zone", &name).expect("zone"))
        };
        let mut b = Builder::new(1, Arc::new(GeoDb::empty()));
        b.put_zone(file("example.com."));
        b.put_zone(file("example.net."));
        let keys = crate::zone::dnssec::ZoneKeys::generate_csk(
            crate::zone::dnssec::Algorithm::EcdsaP256Sha256,
        )
        .expect("keys");
        b.put_dnssec(&"example.com.".parse().expect("name"), Some(Arc::new(keys)));
        let (first, problems) = b.snapshot();
        assert!(problems.is_empty(), "{problems:?}");
        let now = crate::dns::tsig::unix_now();
        assert_eq!(
            b.renew_aging_signatures(now),
            0,
            "fresh signatures: nothing due"
        );
        let eight_days = 8 * 24 * 3600;
        assert_eq!(b.renew_aging_signatures(now + eight_days), 1);
        let (second, _) = b.snapshot();
        let zone = |s: &Snapshot, o: &str| {
            s.zones
                .get(&wire_lower(&o.parse::<Name>().expect("name")))
                .cloned()
                .expect("zone")
        };
        assert!(
            !Arc::ptr_eq(
                &zone(&first, "example.com."),
                &zone(&second, "example.com.")
            ),
            "the signed zone was built (signed) again"
        );
        assert!(
            Arc::ptr_eq(
                &zone(&first, "example.net."),
                &zone(&second, "example.net.")
            ),
            "the unsigned zone was left alone"
        );
    }
}
