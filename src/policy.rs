//! Which datacenters a service answers with: one `eligible()` rule and the three pickers,
//! over tables built when the snapshot is built. A pick reads those tables and a few
//! numbers; it allocates nothing and locks nothing.
//!
//! `geo_nearest` uses gdnsd's method: for each set of datacenter locations (and overrides)
//! the GeoIP database is compiled once into a table from network to the datacenters in
//! preference order, adjacent networks with the same order merged. A query is one
//! longest-prefix look-up; the first eligible datacenter of the order is picked then, so a
//! drain or a health change needs no recompile, and the merged network is the ECS scope.

#![deny(clippy::disallowed_types)]

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use rand::Rng;

use crate::geo::{distance_km, GeoDb, GeoTable, Location};
use crate::model::{Datacenter, DcState, Health, OnAllDown, OverrideKey, PolicyKind, Service};

/// The most datacenters one service may use.
pub const MAX_SERVICE_DCS: usize = 32;

/// An address family, as the question's type asks for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

/// One datacenter as the data plane needs it.
#[derive(Clone, Debug)]
pub struct DcEntry {
    pub def: Datacenter,
    pub v4: Box<[[u8; 4]]>,
    pub v6: Box<[[u8; 16]]>,
    /// False for the place a removed datacenter left in its table (no service names it).
    pub live: bool,
}

impl DcEntry {
    pub fn new(def: Datacenter) -> DcEntry {
        let v4 = def
            .addresses
            .iter()
            .filter_map(|a| match a {
                IpAddr::V4(a) => Some(a.octets()),
                IpAddr::V6(_) => None,
            })
            .collect();
        let v6 = def
            .addresses
            .iter()
            .filter_map(|a| match a {
                IpAddr::V6(a) => Some(a.octets()),
                IpAddr::V4(_) => None,
            })
            .collect();
        DcEntry {
            def,
            v4,
            v6,
            live: true,
        }
    }

    pub fn has(&self, family: Family) -> bool {
        match family {
            Family::V4 => !self.v4.is_empty(),
            Family::V6 => !self.v6.is_empty(),
        }
    }

    /// The one rule for who may be in an answer: active, not unhealthy, and with an
    /// address of the family asked for.
    #[inline]
    pub fn eligible(&self, family: Family) -> bool {
        self.def.state == DcState::Active
            && self.def.health != Health::Unhealthy
            && self.has(family)
    }
}

/// All datacenters, by index.
#[derive(Clone, Debug, Default)]
pub struct DcTable {
    pub entries: Vec<DcEntry>,
    index: HashMap<String, u16>,
}

impl DcTable {
    pub fn new(dcs: impl IntoIterator<Item = Datacenter>) -> DcTable {
        let entries: Vec<DcEntry> = dcs.into_iter().map(DcEntry::new).collect();
        let index = entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.def.id.clone(), i as u16))
            .collect();
        DcTable { entries, index }
    }

    pub fn get(&self, id: &str) -> Option<u16> {
        self.index.get(id).copied()
    }

    /// The datacenters that exist, with their index.
    pub fn live(&self) -> impl Iterator<Item = (usize, &DcEntry)> {
        self.entries.iter().enumerate().filter(|(_, e)| e.live)
    }

    /// The table for `dcs`, keeping every index this one gave: a datacenter keeps its index
    /// while it exists (so services' plans and geo tables stay valid across a drain, a
    /// weight or an added site); a removed one leaves a place that a new one takes later.
    /// Also says whether a datacenter that stays moved (its services must be planned again).
    pub fn update<'a>(&self, dcs: impl IntoIterator<Item = &'a Datacenter>) -> (DcTable, bool) {
        let mut entries = self.entries.clone();
        let mut index = HashMap::new();
        let mut moved = false;
        let mut new = Vec::new();
        for dc in dcs {
            match self.index.get(&dc.id) {
                Some(&i) => {
                    moved |= entries[i as usize].def.location != dc.location;
                    entries[i as usize] = DcEntry::new(dc.clone());
                    index.insert(dc.id.clone(), i);
                }
                None => new.push(dc),
            }
        }
        let mut free = Vec::new();
        for (i, e) in entries.iter_mut().enumerate() {
            if e.live && !index.contains_key(&e.def.id) {
                e.live = false;
            }
            if !e.live {
                free.push(i as u16);
            }
        }
        free.reverse();
        for dc in new {
            let i = match free.pop() {
                Some(i) => {
                    entries[i as usize] = DcEntry::new(dc.clone());
                    i
                }
                None => {
                    entries.push(DcEntry::new(dc.clone()));
                    (entries.len() - 1) as u16
                }
            };
            index.insert(dc.id.clone(), i);
        }
        (DcTable { entries, index }, moved)
    }
}

/// A service, ready to pick for.
#[derive(Debug)]
pub struct Plan {
    pub service: Service,
    pub members: Box<[u16]>,
    pub cap: usize,
    pub geo: Option<Arc<GeoPlan>>,
}

/// A compiled geo table: network → index into `orders`.
pub struct GeoPlan {
    pub table: GeoTable<u32>,
    pub orders: Vec<Box<[u16]>>,
}

impl std::fmt::Debug for GeoPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GeoPlan({} orders)", self.orders.len())
    }
}

/// What a geo table depends on: the members' places and the overrides. Services with the
/// same key share one table; a drain or a health change does not change it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GeoKey {
    members: Vec<(u16, u64, u64)>,
    overrides: Vec<(OverrideKey, Vec<u16>)>,
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("service {0}: unknown datacenter {1:?}")]
    UnknownDatacenter(String, String),
    #[error("service {0}: more than {MAX_SERVICE_DCS} datacenters")]
    TooMany(String),
    #[error("service {0}: {1}")]
    Invalid(String, String),
}

impl Plan {
    /// Resolve a service's datacenter ids against the table.
    pub fn new(service: Service, dcs: &DcTable) -> Result<(Plan, Option<GeoKey>), PlanError> {
        let who = format!("{} in {}", service.name, service.zone);
        if service.datacenters.len() > MAX_SERVICE_DCS {
            return Err(PlanError::TooMany(who));
        }
        let idx = |id: &String| {
            dcs.get(id)
                .ok_or_else(|| PlanError::UnknownDatacenter(who.clone(), id.clone()))
        };
        let members: Box<[u16]> = service
            .datacenters
            .iter()
            .map(idx)
            .collect::<Result<_, _>>()?;
        let key = if service.policy == PolicyKind::GeoNearest {
            let mut overrides = Vec::new();
            for (k, list) in &service.overrides {
                let key = OverrideKey::parse(k)
                    .map_err(|e| PlanError::Invalid(who.clone(), e.to_string()))?;
                overrides.push((key, list.iter().map(idx).collect::<Result<Vec<_>, _>>()?));
            }
            overrides.sort();
            Some(GeoKey {
                members: members
                    .iter()
                    .map(|&m| {
                        let c = dcs.entries[m as usize].def.location;
                        (m, c.lat.to_bits(), c.lon.to_bits())
                    })
                    .collect(),
                overrides,
            })
        } else {
            None
        };
        let cap = service.answer_cap();
        Ok((
            Plan {
                service,
                members,
                cap,
                geo: None,
            },
            key,
        ))
    }
}

impl GeoKey {
    /// Compile the table: gdnsd's per-network datacenter order.
    pub fn compile(&self, db: &GeoDb) -> GeoPlan {
        let listed: Box<[u16]> = self.members.iter().map(|m| m.0).collect();
        let mut orders: Vec<Box<[u16]>> = vec![listed.clone()];
        let mut seen: HashMap<Box<[u16]>, u32> = HashMap::from([(listed, 0)]);
        let table = db.compile(|loc| {
            let order = self.order_for(loc);
            if let Some(&k) = seen.get(&order) {
                return k;
            }
            let k = orders.len() as u32;
            orders.push(order.clone());
            seen.insert(order, k);
            k
        });
        GeoPlan { table, orders }
    }

    /// The datacenters in preference order for a client at `loc`: a matching override
    /// (country before continent) first, then the rest by great-circle distance; a client
    /// with no coordinates gets the rest in listed order.
    pub fn order_for(&self, loc: Option<&Location>) -> Box<[u16]> {
        let mut order: Vec<u16> = Vec::with_capacity(self.members.len());
        if let Some(loc) = loc {
            let keys = [
                loc.country.map(OverrideKey::Country),
                loc.continent.map(OverrideKey::Continent),
            ];
            if let Some((_, list)) = keys
                .iter()
                .flatten()
                .find_map(|k| self.overrides.iter().find(|(o, _)| o == k))
            {
                order.extend(list.iter().copied());
            }
        }
        let mut rest: Vec<(f64, usize, u16)> = self
            .members
            .iter()
            .enumerate()
            .filter(|(_, m)| !order.contains(&m.0))
            .map(|(i, &(m, lat, lon))| {
                let d = match loc.and_then(|l| l.coords) {
                    Some(c) => distance_km(c, (f64::from_bits(lat), f64::from_bits(lon))),
                    None => 0.0,
                };
                (d, i, m)
            })
            .collect();
        rest.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        order.extend(rest.into_iter().map(|r| r.2));
        order.into_boxed_slice()
    }
}

/// The datacenters picked for one answer, in answer order.
#[derive(Clone, Copy, Debug)]
pub struct Pick {
    dcs: [u16; MAX_SERVICE_DCS],
    len: usize,
    /// The ECS scope the pick holds for (0: it does not depend on the client).
    pub scope: u8,
    /// No datacenter was eligible, and the service failed open.
    pub failed_open: bool,
}

impl Pick {
    fn new() -> Pick {
        Pick {
            dcs: [0; MAX_SERVICE_DCS],
            len: 0,
            scope: 0,
            failed_open: false,
        }
    }

    fn push(&mut self, dc: u16) {
        if self.len < MAX_SERVICE_DCS {
            self.dcs[self.len] = dc;
            self.len += 1;
        }
    }

    pub fn as_slice(&self) -> &[u16] {
        &self.dcs[..self.len]
    }
}

/// Pick datacenters for one query. `tick` rotates round-robin; `rng` draws for weighted.
pub fn pick(
    plan: &Plan,
    dcs: &DcTable,
    family: Family,
    client: IpAddr,
    tick: u64,
    rng: &mut impl Rng,
) -> Pick {
    let mut out = Pick::new();
    let e = |i: u16| &dcs.entries[i as usize];
    match plan.service.policy {
        PolicyKind::RoundRobin => {
            let n = plan
                .members
                .iter()
                .filter(|&&m| e(m).eligible(family))
                .count();
            if n > 0 {
                let start = (tick % n as u64) as usize;
                let eligible = plan
                    .members
                    .iter()
                    .copied()
                    .filter(|&m| e(m).eligible(family));
                for m in eligible
                    .clone()
                    .skip(start)
                    .chain(eligible.take(start))
                    .take(plan.cap)
                {
                    out.push(m);
                }
            }
        }
        PolicyKind::Weighted => {
            let mut pool: [(u16, u32); MAX_SERVICE_DCS] = [(0, 0); MAX_SERVICE_DCS];
            let mut n = 0;
            for &m in plan.members.iter() {
                let w = u32::from(e(m).def.weight);
                if e(m).eligible(family) && w > 0 && n < MAX_SERVICE_DCS {
                    pool[n] = (m, w);
                    n += 1;
                }
            }
            // Draw without replacement, in proportion to the weights.
            while n > 0 && out.len < plan.cap {
                let total: u32 = pool[..n].iter().map(|p| p.1).sum();
                let mut r = rng.random_range(0..total);
                let i = pool[..n]
                    .iter()
                    .position(|p| {
                        if r < p.1 {
                            true
                        } else {
                            r -= p.1;
                            false
                        }
                    })
                    .unwrap_or(n - 1);
                out.push(pool[i].0);
                pool[i] = pool[n - 1];
                n -= 1;
            }
        }
        PolicyKind::GeoNearest => {
            let (order, scope): (&[u16], u8) = match &plan.geo {
                Some(g) => {
                    let (k, scope) = g.table.lookup(client);
                    (
                        g.orders
                            .get(k as usize)
                            .map_or(&plan.members[..], |o| &o[..]),
                        scope,
                    )
                }
                None => (&plan.members[..], 0),
            };
            out.scope = scope;
            for &m in order
                .iter()
                .filter(|&&m| e(m).eligible(family))
                .take(plan.cap)
            {
                out.push(m);
            }
        }
    }
    if out.len == 0 && plan.service.on_all_down == OnAllDown::All {
        // Fail open: every datacenter of the service that has this family, as listed.
        out.failed_open = true;
        for &m in plan.members.iter().filter(|&&m| e(m).has(family)) {
            out.push(m);
        }
    }
    out
}

/// Whether a service fails open now: for A or for AAAA, no datacenter is eligible
/// (drained, unhealthy, or weight 0 for `weighted`), so it answers with all of them. A
/// service with `on_all_down = "none"` never does. This runs the real pick, for a client
/// with no location (geo overrides only reorder, so the outcome is the same for every
/// client); it is for metrics and logs, off the query path.
pub fn fails_open(plan: &Plan, dcs: &DcTable) -> bool {
    let mut rng = rand::rng();
    [
        (Family::V4, IpAddr::from([0u8; 4])),
        (Family::V6, IpAddr::from([0u8; 16])),
    ]
    .into_iter()
    // A family none of its datacenters has is NODATA, not failing open.
    .filter(|&(family, _)| {
        plan.members
            .iter()
            .any(|&m| dcs.entries.get(m as usize).is_some_and(|e| e.has(family)))
    })
    .any(|(family, client)| pick(plan, dcs, family, client, 0, &mut rng).failed_open)
}

/// All that [`unlocated`] reads of a datacenter. When a change leaves it equal, no zone
/// transfer changes: a weight between non-zero values, a location or a health check is
/// not in any transfer, so such a write moves no serial (and costs no look at the zones of
/// the services using it).
#[derive(Debug, PartialEq, Eq)]
pub struct UnlocatedView<'a> {
    /// Active and not unhealthy.
    serving: bool,
    weight_zero: bool,
    addresses: &'a [IpAddr],
}

impl<'a> UnlocatedView<'a> {
    pub fn of(d: &'a Datacenter) -> Self {
        UnlocatedView {
            serving: d.state == DcState::Active && d.health != Health::Unhealthy,
            weight_zero: d.weight == 0,
            addresses: &d.addresses,
        }
    }
}

/// A service's addresses of one family as a client with no location gets them, for zone
/// transfers: its eligible datacenters in listed order (weight 0 never, for `weighted`),
/// capped by `answers`; when none is eligible, fail-open (every datacenter with that family,
/// as listed, capped too) unless `on_all_down = "none"`. Pure: the same on every node.
pub fn unlocated<'a>(
    service: &Service,
    dc: impl Fn(&str) -> Option<&'a Datacenter>,
    v6: bool,
) -> Vec<IpAddr> {
    let family = |a: &IpAddr| a.is_ipv6() == v6;
    let members: Vec<&Datacenter> = service.datacenters.iter().filter_map(|id| dc(id)).collect();
    let eligible = |d: &&&Datacenter| {
        let seen = UnlocatedView::of(d);
        seen.serving
            && !(service.policy == PolicyKind::Weighted && seen.weight_zero)
            && seen.addresses.iter().any(family)
    };
    let mut chosen: Vec<&Datacenter> = members
        .iter()
        .filter(eligible)
        .take(service.answer_cap())
        .copied()
        .collect();
    if chosen.is_empty() && service.on_all_down == OnAllDown::All {
        chosen = members
            .iter()
            .filter(|d| d.addresses.iter().any(family))
            .take(service.answer_cap())
            .copied()
            .collect();
    }
    chosen
        .iter()
        .flat_map(|d| d.addresses.iter().copied().filter(family))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::DcState;
    use rand::SeedableRng;

    fn dc(id: &str, lat: f64, lon: f64, addr: &str, weight: u16) -> Datacenter {
        Datacenter {
            weight,
            ..crate::model::fixtures::datacenter(id, lat, lon, addr)
        }
    }

    fn table() -> DcTable {
        DcTable::new([
            dc("lon", 51.5, -0.1, "192.0.2.1", 100),
            dc("nyc", 40.7, -74.0, "192.0.2.2", 300),
            dc("sin", 1.35, 103.8, "2001:db8::3", 100),
        ])
    }

    fn service(policy: PolicyKind) -> Service {
        crate::model::fixtures::service("example.com", "www", policy, &["lon", "nyc", "sin"])
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn round_robin_rotates_over_eligible_only() {
        let dcs = table();
        let (plan, _) = Plan::new(service(PolicyKind::RoundRobin), &dcs).expect("plan");
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let a = pick(&plan, &dcs, Family::V4, ip("127.0.0.1"), 0, &mut rng);
        let b = pick(&plan, &dcs, Family::V4, ip("127.0.0.1"), 1, &mut rng);
        assert_eq!(a.as_slice(), &[0, 1]); // sin has no IPv4
        assert_eq!(b.as_slice(), &[1, 0]);
    }

    #[test]
    fn weighted_follows_weights_and_zero_is_never() {
        let mut dcs = table();
        let (plan, _) = Plan::new(service(PolicyKind::Weighted), &dcs).expect("plan");
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut counts = [0u32; 3];
        for _ in 0..4000 {
            let p = pick(&plan, &dcs, Family::V4, ip("127.0.0.1"), 0, &mut rng);
            counts[p.as_slice()[0] as usize] += 1;
        }
        // 1:3 → about 1000 : 3000
        assert!((850..1150).contains(&counts[0]), "{counts:?}");
        dcs.entries[1].def.weight = 0;
        for _ in 0..200 {
            let p = pick(&plan, &dcs, Family::V4, ip("127.0.0.1"), 0, &mut rng);
            assert_eq!(p.as_slice(), &[0]);
        }
    }

    #[test]
    fn all_drained_fails_open_unless_none() {
        let mut dcs = table();
        for e in dcs.entries.iter_mut() {
            e.def.state = DcState::Drained;
        }
        let (plan, _) = Plan::new(service(PolicyKind::Weighted), &dcs).expect("plan");
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let p = pick(&plan, &dcs, Family::V4, ip("127.0.0.1"), 0, &mut rng);
        assert!(p.failed_open);
        assert_eq!(p.as_slice(), &[0, 1]);
        let mut s = service(PolicyKind::Weighted);
        s.on_all_down = OnAllDown::None;
        let (plan, _) = Plan::new(s, &dcs).expect("plan");
        let p = pick(&plan, &dcs, Family::V4, ip("127.0.0.1"), 0, &mut rng);
        assert!(p.as_slice().is_empty());
    }

    #[test]
    fn fails_open_says_what_pick_does() {
        let mut dcs = table();
        let (plan, _) = Plan::new(service(PolicyKind::Weighted), &dcs).expect("plan");
        assert!(!fails_open(&plan, &dcs));
        // No datacenter with IPv6: AAAA is NODATA, not a failure.
        let v4 = crate::model::fixtures::service(
            "example.com",
            "v4",
            PolicyKind::RoundRobin,
            &["lon", "nyc"],
        );
        let (v4, _) = Plan::new(v4, &dcs).expect("plan");
        assert!(!fails_open(&v4, &dcs));
        // Weight 0 everywhere: nobody is eligible for `weighted`, but round robin is fine.
        for e in dcs.entries.iter_mut() {
            e.def.weight = 0;
        }
        assert!(fails_open(&plan, &dcs));
        let (rr, _) = Plan::new(service(PolicyKind::RoundRobin), &dcs).expect("plan");
        assert!(!fails_open(&rr, &dcs));
        for e in dcs.entries.iter_mut() {
            e.def.health = Health::Unhealthy;
        }
        assert!(fails_open(&rr, &dcs));
        let mut s = service(PolicyKind::RoundRobin);
        s.on_all_down = OnAllDown::None;
        let (none, _) = Plan::new(s, &dcs).expect("plan");
        assert!(!fails_open(&none, &dcs), "NODATA is not failing open");
    }

    #[test]
    fn geo_order_uses_great_circle_distance_and_overrides() {
        let dcs = table();
        let mut s = service(PolicyKind::GeoNearest);
        s.overrides.insert("country:SE".into(), vec!["nyc".into()]);
        let (_, key) = Plan::new(s, &dcs).expect("plan");
        let key = key.expect("geo key");
        let london = Location {
            coords: Some((51.5142, -0.0931)),
            country: Some(*b"GB"),
            continent: Some(*b"EU"),
        };
        assert_eq!(&*key.order_for(Some(&london)), &[0, 1, 2]);
        let sweden = Location {
            coords: Some((58.4, 15.6)),
            country: Some(*b"SE"),
            continent: Some(*b"EU"),
        };
        assert_eq!(&*key.order_for(Some(&sweden)), &[1, 0, 2]);
        // Tokyo: Singapore is nearest on the sphere
        let tokyo = Location {
            coords: Some((35.7, 139.7)),
            country: None,
            continent: None,
        };
        assert_eq!(key.order_for(Some(&tokyo))[0], 2);
        assert_eq!(&*key.order_for(None), &[0, 1, 2]);
    }
}
