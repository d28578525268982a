//! Per-zone serials and journals: worked out in [`State::apply`] from the replicated state
//! alone, so every node publishes the same serial for the same content. A change touches
//! the zones it names, the zones of the services it names, and the zones of the services
//! of the datacenters it names (drains, verdicts), never the rest.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{Name, RData, Record};

use super::{service_fqdn, Delta, State};
use crate::name::ZoneName;
use crate::policy::UnlocatedView;
use crate::zone::transfer::{
    serial_after, soa_with_serial, text_serial, Journal, JournalEntry, XfrZone,
};
use crate::zone::{Rr, ZoneFile};
use crate::zoneconf::{SerialPolicy, ZoneSettings};

/// Versions kept per zone for IXFR (at least 100, as the contract asks) when their changes
/// are small; big changes are bounded by [`journal_budget`].
pub const JOURNAL_VERSIONS: usize = 128;

/// Records a zone's journal may hold in all: four times the zone, and at least 10,000.
fn journal_budget(zone_records: usize) -> usize {
    (zone_records * 4).max(10_000)
}

/// The next serial: `increment` max(text serial, previous + 1), `unixtime` max(commit
/// second, previous + 1), in RFC 1982 arithmetic; the first one is the base itself.
pub fn next_serial(prev: Option<u32>, text: u32, policy: SerialPolicy, at_ms: u64) -> u32 {
    let base = match policy {
        SerialPolicy::Increment => text,
        SerialPolicy::Unixtime => (at_ms / 1000) as u32,
    };
    match prev {
        None => base,
        Some(p) if serial_after(base, p) => base,
        Some(p) => p.wrapping_add(1),
    }
}

/// A whole record in wire form, as the journal keeps it.
type WireRr = Box<[u8]>;

/// A service record as the parts of an [`Rr`]: owner (lower-case wire), type, TTL, RDATA.
type Parts = (Vec<u8>, u16, u32, Vec<u8>);

fn as_rr(p: &Parts) -> Rr<'_> {
    Rr {
        owner: &p.0,
        rtype: p.1,
        ttl: p.2,
        rdata: &p.3,
    }
}

/// `old` → `new`: the records that went and came, each in wire form, in the order given.
/// Keys are the records themselves (owner, type, TTL, RDATA borrowed from the stores): no
/// copy of a record that did not change.
fn diff<'a>(
    old: impl Iterator<Item = Rr<'a>> + Clone,
    new: impl Iterator<Item = Rr<'a>> + Clone,
) -> (Vec<WireRr>, Vec<WireRr>) {
    let old_set: rustc_hash::FxHashSet<Rr<'a>> = old.clone().collect();
    let new_set: rustc_hash::FxHashSet<Rr<'a>> = new.clone().collect();
    let gone = |from: &mut dyn Iterator<Item = Rr<'a>>, other: &rustc_hash::FxHashSet<Rr<'a>>| {
        let mut done: rustc_hash::FxHashSet<Rr<'a>> = Default::default();
        from.filter(|r| !other.contains(r) && done.insert(*r))
            .map(|r| {
                let mut wire = Vec::with_capacity(r.owner.len() + 10 + r.rdata.len());
                r.write_wire(&mut wire);
                wire.into_boxed_slice()
            })
            .collect::<Vec<_>>()
    };
    let removed = gone(&mut old.clone(), &new_set);
    let added = gone(&mut new.clone(), &old_set);
    (removed, added)
}

fn without_soa(file: &ZoneFile) -> impl Iterator<Item = Rr<'_>> + Clone {
    file.rrs().filter(|r| r.rtype != 6)
}

impl State {
    /// The zone's published serial (the text's until the cluster set one).
    pub fn serial<Z>(&self, origin: &Z) -> Option<u32>
    where
        Z: Ord + ?Sized,
        ZoneName: std::borrow::Borrow<Z>,
    {
        let z = self.zones.get(origin)?;
        Some(
            self.serials
                .get(origin)
                .copied()
                .unwrap_or_else(|| text_serial(&z.file)),
        )
    }

    /// Zones with a serial set, and the serial (for the store and snapshots).
    pub fn serials(&self) -> impl Iterator<Item = (&ZoneName, &u32)> {
        self.serials.iter()
    }

    /// The serial the cluster set for a zone (none before its first change).
    pub fn stored_serial(&self, origin: &ZoneName) -> Option<u32> {
        self.serials.get(origin).copied()
    }

    pub fn load_serial(&mut self, origin: ZoneName, serial: u32) {
        self.serials.insert(origin, serial);
    }

    /// Every service's unlocated A/AAAA records in a zone, by name.
    pub fn service_records(&self, zone: &ZoneName) -> Vec<Record> {
        let mut out = Vec::new();
        self.each_service_address(zone, |owner, ttl, addr| {
            let data = match addr {
                std::net::IpAddr::V4(a) => RData::A(A(a)),
                std::net::IpAddr::V6(a) => RData::AAAA(AAAA(a)),
            };
            out.push(Record::from_rdata(owner.clone(), ttl, data));
        });
        out
    }

    /// [`State::service_records`] as the journal keys them, made straight from the
    /// addresses (a drain diffs every zone of every service using the site: no record is
    /// built and encoded for that).
    fn service_parts(&self, zone: &ZoneName) -> Vec<Parts> {
        let mut out = Vec::new();
        let mut wire = (None::<Name>, Vec::new());
        self.each_service_address(zone, |owner, ttl, addr| {
            if wire.0.as_ref() != Some(owner) {
                wire.1.clear();
                crate::zone::push_wire(owner, true, &mut wire.1);
                wire.0 = Some(owner.clone());
            }
            let (rtype, rdata) = match addr {
                std::net::IpAddr::V4(a) => (1, a.octets().to_vec()),
                std::net::IpAddr::V6(a) => (28, a.octets().to_vec()),
            };
            out.push((wire.1.clone(), rtype, ttl, rdata));
        });
        out
    }

    /// Each service of the zone: its owner, TTL, and each address a client with no location
    /// gets (A, then AAAA).
    fn each_service_address(&self, zone: &ZoneName, mut f: impl FnMut(&Name, u32, IpAddr)) {
        for (name, entry) in self.services_in(zone) {
            let Ok(owner) = service_fqdn(zone, name) else {
                continue;
            };
            let svc = &entry.service;
            let dc = |id: &str| self.datacenters.get(id).map(|e| &*e.dc);
            for v6 in [false, true] {
                for addr in crate::policy::unlocated(svc, dc, v6) {
                    f(&owner, svc.ttl, addr);
                }
            }
        }
    }

    /// What a transfer of the zone sends now.
    pub fn xfr_zone(&self, origin: &ZoneName) -> Option<XfrZone> {
        let z = self.zones.get(origin)?;
        let serial = self.serial(origin)?;
        Some(XfrZone {
            origin: z.file.origin.clone(),
            serial,
            soa: soa_with_serial(&z.file, serial)?,
            file: z.file.clone(),
            services: Arc::new(self.service_records(origin)),
            journal: self.journals.get(origin).cloned().unwrap_or_default(),
            settings: self
                .zone_settings
                .get(origin)
                .map(|s| s.settings.clone())
                .unwrap_or_else(|| Arc::new(ZoneSettings::default())),
        })
    }

    /// Move the serial of every zone whose transferred content differs from `before`, and
    /// record the difference in its journal.
    pub(super) fn move_serials(&mut self, before: &State, delta: &mut Delta, at_ms: u64) {
        let mut zones: BTreeSet<ZoneName> = delta.zones.clone();
        zones.extend(delta.services.iter().map(|(z, _)| z.clone()));
        for dc in &delta.datacenters {
            let was = before.datacenters.get(dc).map(|e| UnlocatedView::of(&e.dc));
            let is = self.datacenters.get(dc).map(|e| UnlocatedView::of(&e.dc));
            if was == is {
                continue; // nothing a transfer shows of it changed (a weight, a location)
            }
            for st in [before, &*self] {
                if let Some(users) = st.users.get(dc) {
                    zones.extend(users.iter().map(|(z, _)| z.clone()));
                }
            }
        }
        for origin in zones {
            let Some(new) = self.zones.get(&origin).cloned() else {
                let had = self.serials.remove(&origin).is_some();
                if self.journals.remove(&origin).is_some() || had {
                    delta.serials.insert(origin);
                }
                continue;
            };
            let policy = self
                .zone_settings
                .get(&origin)
                .map(|s| s.settings.serial)
                .unwrap_or_default();
            let text = text_serial(&new.file);
            let prev = self.serials.get(&origin).copied();
            let old = before.zones.get(&origin);
            let (Some(old), Some(prev)) = (old, prev) else {
                // A new zone (or one from before serials were kept).
                self.serials
                    .insert(origin.clone(), next_serial(prev, text, policy, at_ms));
                self.journals.remove(&origin);
                delta.serials.insert(origin);
                continue;
            };
            let old_services = before.service_parts(&origin);
            let new_services = self.service_parts(&origin);
            let text_same = Arc::ptr_eq(&old.file, &new.file);
            let soa_same = text_same || old.file.soa() == new.file.soa();
            let (removed, added) = if text_same {
                diff(
                    old_services.iter().map(as_rr),
                    new_services.iter().map(as_rr),
                )
            } else {
                diff(
                    without_soa(&old.file).chain(old_services.iter().map(as_rr)),
                    without_soa(&new.file).chain(new_services.iter().map(as_rr)),
                )
            };
            if soa_same && removed.is_empty() && added.is_empty() {
                continue;
            }
            let serial = next_serial(Some(prev), text, policy, at_ms);
            self.serials.insert(origin.clone(), serial);
            let (Some(old_soa), Some(new_soa)) = (
                soa_with_serial(&old.file, prev),
                soa_with_serial(&new.file, serial),
            ) else {
                continue;
            };
            let entry = JournalEntry {
                old_soa,
                new_soa,
                removed,
                added,
            };
            let budget = journal_budget(new.file.len() + new_services.len());
            let mut journal: Journal = self
                .journals
                .get(&origin)
                .map(|j| (**j).clone())
                .unwrap_or_default();
            if entry.size() <= budget {
                journal.push_back(Arc::new(entry));
            } else {
                journal.clear(); // bigger than the zone: IXFR sends the whole zone
            }
            let mut total: usize = journal.iter().map(|e| e.size()).sum();
            while journal.len() > JOURNAL_VERSIONS || total > budget {
                match journal.pop_front() {
                    Some(e) => total -= e.size(),
                    None => break,
                }
            }
            self.journals.insert(origin.clone(), Arc::new(journal));
            delta.serials.insert(origin);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The journal's keys made from the addresses are the records' own wire parts, as
    /// the encoder writes them (owner lower-cased, A and AAAA RDATA).
    #[test]
    fn service_parts_are_the_service_records_in_wire_form() {
        use crate::cluster::Command;
        use crate::model::{fixtures, PolicyKind};
        let mut s = State::default();
        let zone = "$TTL 300\n@ IN SOA ns1 h 1 2 3 4 5\n@ IN NS ns1\nns1 IN A 192.0.2.1\n";
        let mut lon = fixtures::datacenter("lon", 51.5, -0.1, "192.0.2.9");
        lon.addresses.push("2001:db8::9".parse().expect("v6"));
        let cmds = [
            Command::PutZone {
                origin: "Example.COM".into(),
                text: zone.into(),
            },
            Command::PutDatacenter {
                dc: lon,
                set_state: None,
            },
            Command::PutDatacenter {
                dc: fixtures::datacenter("par", 48.9, 2.3, "192.0.2.10"),
                set_state: None,
            },
        ];
        for (i, cmd) in cmds.iter().enumerate() {
            s.apply(cmd, None, 0, i as u64 + 1);
        }
        for (i, name) in ["WWW", "@", "a.b"].into_iter().enumerate() {
            let service =
                fixtures::service("example.com", name, PolicyKind::RoundRobin, &["lon", "par"]);
            s.apply(&Command::PutService { service }, None, 0, i as u64 + 10);
        }
        let origin = ZoneName::parse("example.com").expect("zone");
        let encoded: Vec<Parts> = s
            .service_records(&origin)
            .iter()
            .map(|r| {
                let mut owner = Vec::new();
                crate::zone::push_wire(&r.name, true, &mut owner);
                let wire = crate::zone::transfer::record_wire(r).expect("encodes");
                let rdata = wire[owner.len() + 10..].to_vec();
                (owner, u16::from(r.record_type()), r.ttl, rdata)
            })
            .collect();
        assert_eq!(encoded.len(), 9, "three services, three addresses each");
        assert_eq!(s.service_parts(&origin), encoded);
    }

    #[test]
    fn rfc1982_serials_move_forward() {
        let inc = SerialPolicy::Increment;
        assert_eq!(next_serial(None, 7, inc, 0), 7);
        assert_eq!(next_serial(Some(7), 7, inc, 0), 8);
        assert_eq!(next_serial(Some(7), 100, inc, 0), 100);
        assert_eq!(next_serial(Some(u32::MAX), 1, inc, 0), 1);
        assert_eq!(next_serial(Some(u32::MAX), 0, inc, 0), 0);
        let unix = SerialPolicy::Unixtime;
        assert_eq!(
            next_serial(Some(5), 1, unix, 1_700_000_000_000),
            1_700_000_000
        );
        assert_eq!(
            next_serial(Some(1_700_000_000), 1, unix, 1_700_000_000_000),
            1_700_000_001
        );
    }
}
