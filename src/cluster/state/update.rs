//! DNS UPDATE (RFC 2136) in the state machine: [`Command::DnsUpdate`] is checked and
//! applied against the committed zone, so two racing updates serialise and exactly one of
//! two with conflicting prerequisites wins. It costs what it changes: the one zone's
//! records are edited and its text written back; no other zone is looked at.
//!
//! [`Command::DnsUpdate`]: crate::cluster::command::Command::DnsUpdate

use std::sync::Arc;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

use super::{parse_text, service_fqdn, Delta, State, ZoneEntry};
use crate::cluster::command::Response;
use crate::name::{ServiceName, ZoneName};
use crate::zone::update::{self, UpdateRr};

impl State {
    /// Apply a DNS UPDATE; the answer's RCODE is in the response. The state changes only
    /// when the update is accepted and changes the zone.
    pub(super) fn dns_update(
        &mut self,
        zone: &str,
        key: &str,
        prereqs: &[UpdateRr],
        updates: &[UpdateRr],
        index: u64,
        delta: &mut Delta,
    ) -> Response {
        let result = match ZoneName::parse(zone) {
            Ok(zone) => self.try_dns_update(&zone, key, prereqs, updates, index, delta),
            Err(_) => Err(ResponseCode::FormErr),
        };
        let rcode = match result {
            Ok(()) => ResponseCode::NoError,
            Err(rcode) => rcode,
        };
        Response::DnsUpdate {
            rcode: u16::from(rcode),
        }
    }

    fn try_dns_update(
        &mut self,
        origin: &ZoneName,
        key: &str,
        prereqs: &[UpdateRr],
        updates: &[UpdateRr],
        index: u64,
        delta: &mut Delta,
    ) -> Result<(), ResponseCode> {
        // RFC 2136 §3.1.2: a zone this server is not authoritative for.
        let entry = self
            .zones
            .get(origin)
            .cloned()
            .ok_or(ResponseCode::Refused)?; // a zone not held: REFUSED, as at the door
        let apex = entry.file.origin.clone();
        let prereqs = update::records(prereqs)?;
        let updates = update::records(updates)?;
        update::prescan(&apex, &prereqs, &updates)?;
        // What may not be touched: any type at a service's name, any SOA.
        for rr in &updates {
            if rr.record_type() == RecordType::SOA || self.service_at(origin, &rr.name).is_some() {
                return Err(ResponseCode::Refused);
            }
        }
        // Every record added or deleted must be granted to the key.
        let settings = self
            .zone_settings
            .get(origin)
            .map(|s| s.settings.clone())
            .ok_or(ResponseCode::Refused)?;
        for (name, rtype) in update::touched(&apex, &entry.file, &updates) {
            if !settings.update_granted(key, &name, rtype) {
                return Err(ResponseCode::Refused);
            }
        }
        for rr in updates
            .iter()
            .filter(|r| r.record_type() == RecordType::ANY)
        {
            if !settings.update_name_granted(key, &rr.name.to_lowercase()) {
                return Err(ResponseCode::Refused);
            }
        }
        // Prerequisites (§3.2), a service's answer counting as data at its name.
        let mut extra = Vec::new();
        for rr in &prereqs {
            if let Some(rel) = self.service_at(origin, &rr.name) {
                extra.extend(self.service_answer(origin, &rel));
            }
        }
        update::check_prereqs(&entry.file, &extra, &prereqs)?;
        // The update itself works on hickory records: the zone is converted for it (an
        // update rewrites the zone's text anyway).
        let current = entry.file.to_records().map_err(|e| {
            tracing::error!(zone = %origin, error = %e, "a stored record does not convert");
            ResponseCode::ServFail
        })?;
        let records = update::apply_updates(&apex, &current, &updates);
        drop(current);
        if update::same_records(&records, &entry.file) {
            return Ok(()); // §3.6: nothing changed, nothing moves
        }
        // A delegation added at or above a service would hide it.
        for rr in &updates {
            if rr.dns_class == DNSClass::IN && rr.record_type() == RecordType::NS && rr.name != apex
            {
                for (rel, _) in self.services_in(origin) {
                    if service_fqdn(origin, rel).is_ok_and(|f| rr.name.zone_of(&f)) {
                        return Err(ResponseCode::Refused);
                    }
                }
            }
        }
        let text = update::zone_text(&apex, &records);
        let file = match parse_text(origin, &text) {
            Ok(f) => f,
            Err(why) => {
                // The zone would break a zone rule (no NS, data below a delegation,
                // DNSSEC records that the DNSSEC API owns…): refused, as a policy.
                tracing::debug!(zone = %origin, why = why.message(), "update refused");
                return Err(ResponseCode::Refused);
            }
        };
        if !update::same_records(&records, &file) {
            tracing::error!(
                zone = %origin,
                "the zone text written after an update does not read back to the same records"
            );
            return Err(ResponseCode::ServFail);
        }
        self.zones.insert(
            origin.clone(),
            Arc::new(ZoneEntry {
                text: text.into(),
                file: Arc::new(file),
                version: index,
            }),
        );
        delta.zones.insert(origin.clone());
        Ok(())
    }

    /// The name of the service at `name` in `zone`, if there is one.
    fn service_at(&self, zone: &ZoneName, name: &Name) -> Option<ServiceName> {
        let rel = ServiceName::parse(zone, &name.to_ascii()).ok()?;
        self.service(zone, &rel).map(|_| rel)
    }

    /// One service's A/AAAA as an unlocated client gets them.
    fn service_answer(&self, zone: &ZoneName, rel: &ServiceName) -> Vec<Record> {
        let (Some(entry), Ok(owner)) = (self.service(zone, rel), service_fqdn(zone, rel)) else {
            return Vec::new();
        };
        let svc = &entry.service;
        let dc = |id: &str| self.datacenters.get(id).map(|e| &*e.dc);
        let mut out = Vec::new();
        for v6 in [false, true] {
            for addr in crate::policy::unlocated(svc, dc, v6) {
                let data = match addr {
                    std::net::IpAddr::V4(a) => RData::A(A(a)),
                    std::net::IpAddr::V6(a) => RData::AAAA(AAAA(a)),
                };
                out.push(Record::from_rdata(owner.clone(), svc.ttl, data));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::command::Command;
    use crate::zoneconf::{NameMatch, TsigAlgorithm, TsigKey, UpdateRule, ZoneSettings};

    const ZONE: &str = "$TTL 300\n@ IN SOA ns1 h 10 2 3 4 5\n@ IN NS ns1\nns1 IN A 192.0.2.1\n";

    fn state() -> State {
        let mut s = State::default();
        let cmds = [
            Command::PutZone {
                origin: "example.com".into(),
                text: ZONE.into(),
            },
            Command::PutTsigKey {
                key: TsigKey {
                    name: "k".into(),
                    algorithm: TsigAlgorithm::HmacSha256,
                    secret: b"secret".to_vec(),
                },
            },
            Command::PutZoneSettings {
                origin: "example.com".into(),
                settings: ZoneSettings {
                    allow_update: vec![UpdateRule {
                        key: "k".into(),
                        name: "dyn.example.com.".into(),
                        name_match: NameMatch::Subdomain,
                        types: vec![],
                    }],
                    ..ZoneSettings::default()
                },
            },
        ];
        for (i, c) in cmds.iter().enumerate() {
            let (r, _) = s.apply(c, None, 0, i as u64 + 1);
            assert!(!matches!(r, Response::Rejected { .. }), "{r:?}");
        }
        s
    }

    fn rr(text: &str) -> Record {
        let z = format!("$TTL 60\n@ IN SOA ns1 h 1 2 3 4 5\n@ IN NS ns1\n{text}\n");
        let origin = Name::from_ascii("example.com.").unwrap();
        crate::zone::parse_zone(&z, "t", &origin)
            .unwrap()
            .to_records()
            .unwrap()
            .pop()
            .unwrap()
    }

    fn nxdomain(name: &str) -> Record {
        let mut r = Record::update0(Name::from_ascii(name).unwrap(), 0, RecordType::ANY);
        r.dns_class = DNSClass::NONE;
        r
    }

    fn update(prereqs: &[Record], updates: &[Record]) -> Command {
        let w = |rs: &[Record]| {
            rs.iter()
                .map(|r| UpdateRr::from_record(r).unwrap())
                .collect()
        };
        Command::DnsUpdate {
            zone: "example.com.".into(),
            key: "k".into(),
            legacy_actor: "dns-update:k".into(),
            prereqs: w(prereqs),
            updates: w(updates),
        }
    }

    fn rcode(r: &Response) -> u16 {
        match r {
            Response::DnsUpdate { rcode } => *rcode,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rfc2136_3_2_conflicting_updates_serialise_and_the_serial_moves_once() {
        let mut s = state();
        let serial = s.serial("example.com.").unwrap();
        let a = update(
            &[nxdomain("x.dyn.example.com.")],
            &[rr("x.dyn IN TXT \"a\"")],
        );
        let b = update(
            &[nxdomain("x.dyn.example.com.")],
            &[rr("x.dyn IN TXT \"b\"")],
        );
        let (ra, da) = s.apply(&a, Some("ra"), 0, 10);
        assert_eq!(rcode(&ra), 0);
        assert!(da.zones.contains("example.com.") && da.serials.contains("example.com."));
        assert_eq!(s.serial("example.com."), Some(serial + 1));
        let (rb, db) = s.apply(&b, Some("rb"), 0, 11);
        assert_eq!(rcode(&rb), u16::from(ResponseCode::YXDomain));
        assert!(db.zones.is_empty() && db.serials.is_empty());
        // The same request again (a retried forward) is not applied twice.
        let (again, _) = s.apply(&a, Some("ra"), 0, 12);
        assert_eq!(rcode(&again), 0);
        // Nothing to change: NOERROR, serial kept (§3.6).
        let (r, d) = s.apply(&update(&[], &[rr("x.dyn IN TXT \"a\"")]), None, 0, 13);
        assert_eq!(rcode(&r), 0);
        assert!(d.zones.is_empty() && d.serials.is_empty());
        assert_eq!(s.serial("example.com."), Some(serial + 1));
        let text = &s.zone("example.com.").unwrap().text;
        assert!(
            text.contains("x.dyn.example.com. 60 IN TXT \"a\""),
            "{text}"
        );
        // Not granted: nothing changes.
        let (r, _) = s.apply(&update(&[], &[rr("y IN TXT \"n\"")]), None, 0, 14);
        assert_eq!(rcode(&r), u16::from(ResponseCode::Refused));
    }
}
