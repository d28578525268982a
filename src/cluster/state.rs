//! The replicated state and its pure, deterministic `apply`: the same commands in the same
//! order give the same state on every node. Nothing here reads a clock, a file or the
//! node's GeoIP database.

use std::collections::BTreeMap;
use std::sync::Arc;

use hickory_proto::rr::Name;
use serde::{Deserialize, Serialize};

use crate::cluster::command::{Command, Rejection, Response};
use crate::model::{Datacenter, DcState, Service};
use crate::snapshot::{Builder, Inputs};
use crate::zone::{parse_zone, ZoneFile};

/// The state's own format version (in snapshots and in the store).
pub const STATE_FORMAT: u32 = 1;

/// Zones, datacenters and services, as the cluster agrees on them.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct State {
    /// Canonical origin (`example.com.`) → zone text.
    pub zones: BTreeMap<String, String>,
    pub datacenters: BTreeMap<String, Datacenter>,
    /// Canonical zone → canonical relative name → service.
    pub services: BTreeMap<String, BTreeMap<String, Service>>,
    /// Zones as parsed (derived from `zones`; rebuilt on load).
    #[serde(skip)]
    parsed: BTreeMap<String, Arc<ZoneFile>>,
}

/// A zone origin as keys use it: lower case, with the final dot.
pub fn canonical_zone(origin: &str) -> Result<String, Rejection> {
    let mut name = Name::from_ascii(origin.trim())
        .map_err(|e| Rejection::BadRequest(format!("bad zone name {origin:?}: {e}")))?;
    name.set_fqdn(true);
    Ok(name.to_lowercase().to_ascii())
}

/// A service name as keys use it: `@` for the apex, otherwise lower case, relative.
pub fn canonical_service(zone: &str, name: &str) -> Result<String, Rejection> {
    let name = name.trim();
    if name == "@" || name.is_empty() {
        return Ok("@".into());
    }
    let n = Name::from_ascii(name)
        .map_err(|e| Rejection::BadRequest(format!("bad service name {name:?}: {e}")))?;
    let lower = n.to_lowercase().to_ascii();
    let lower = lower.trim_end_matches('.');
    let zone = zone.trim_end_matches('.');
    if n.is_fqdn() {
        // An absolute name must be in the zone.
        if lower == zone {
            return Ok("@".into());
        }
        return match lower.strip_suffix(&format!(".{zone}")) {
            Some(rel) => Ok(rel.to_string()),
            None => Err(Rejection::BadRequest(format!("{name} is not in zone {zone}."))),
        };
    }
    Ok(lower.to_string())
}

impl State {
    /// Rebuild what is derived (after deserializing).
    pub fn restore(mut self) -> Result<State, String> {
        self.parsed.clear();
        for (origin, text) in &self.zones {
            let name = Name::from_ascii(origin).map_err(|e| e.to_string())?;
            let zf = parse_zone(text, origin, &name).map_err(|e| e.to_string())?;
            self.parsed.insert(origin.clone(), Arc::new(zf));
        }
        Ok(self)
    }

    /// The parsed zones, in origin order.
    pub fn zone_files(&self) -> Vec<ZoneFile> {
        self.parsed.values().map(|z| (**z).clone()).collect()
    }

    pub fn datacenter_list(&self) -> Vec<Datacenter> {
        self.datacenters.values().cloned().collect()
    }

    pub fn service_list(&self) -> Vec<Service> {
        self.services.values().flat_map(|m| m.values().cloned()).collect()
    }

    /// Every service with its zone and name.
    fn each_service(&self) -> impl Iterator<Item = (&String, &String, &Service)> {
        self.services
            .iter()
            .flat_map(|(z, m)| m.iter().map(move |(n, s)| (z, n, s)))
    }

    pub fn is_empty(&self) -> bool {
        self.zones.is_empty() && self.datacenters.is_empty() && self.services.is_empty()
    }

    /// Apply one command. On rejection the state is unchanged.
    pub fn apply(&mut self, cmd: &Command) -> Response {
        // Work on a copy; keep it only if the result is a state that builds.
        let mut next = self.clone();
        let response = match next.change(cmd) {
            Ok(r) => r,
            Err(why) => return Response::Rejected { why },
        };
        if let Err(why) = next.validate() {
            return Response::Rejected { why };
        }
        *self = next;
        response
    }

    fn change(&mut self, cmd: &Command) -> Result<Response, Rejection> {
        match cmd {
            Command::PutDatacenter { dc, set_state } => {
                let mut dc = dc.clone();
                dc.validate().map_err(|e| Rejection::Invalid(e.to_string()))?;
                let existed = match self.datacenters.get(&dc.id) {
                    Some(old) => {
                        dc.state = set_state.unwrap_or(old.state);
                        dc.health = old.health;
                        true
                    }
                    None => {
                        dc.state = set_state.unwrap_or(DcState::Active);
                        false
                    }
                };
                self.datacenters.insert(dc.id.clone(), dc);
                Ok(if existed {
                    Response::Replaced
                } else {
                    Response::Created
                })
            }
            Command::PatchDatacenter { id, weight, state } => {
                let dc = self
                    .datacenters
                    .get_mut(id)
                    .ok_or_else(|| Rejection::NotFound(format!("no datacenter {id:?}")))?;
                if let Some(w) = weight {
                    dc.weight = *w;
                }
                if let Some(s) = state {
                    dc.state = *s;
                }
                dc.validate().map_err(|e| Rejection::Invalid(e.to_string()))?;
                Ok(Response::Updated {
                    dc: Box::new(dc.clone()),
                })
            }
            Command::DeleteDatacenter { id } => {
                if !self.datacenters.contains_key(id) {
                    return Err(Rejection::NotFound(format!("no datacenter {id:?}")));
                }
                if let Some((zone, name, _)) = self.each_service().find(|(_, _, s)| {
                    s.datacenters.contains(id) || s.overrides.values().any(|l| l.contains(id))
                }) {
                    return Err(Rejection::Conflict(format!(
                        "datacenter {id:?} is used by service {name} in {zone}"
                    )));
                }
                self.datacenters.remove(id);
                Ok(Response::Deleted)
            }
            Command::PutZone { origin, text } => {
                let key = canonical_zone(origin)?;
                let name = Name::from_ascii(&key).map_err(|e| Rejection::BadRequest(e.to_string()))?;
                let zf = parse_zone(text, &key, &name).map_err(|e| Rejection::BadRequest(e.to_string()))?;
                let existed = self.zones.insert(key.clone(), text.clone()).is_some();
                self.parsed.insert(key, Arc::new(zf));
                Ok(if existed {
                    Response::Replaced
                } else {
                    Response::Created
                })
            }
            Command::DeleteZone { origin } => {
                let key = canonical_zone(origin)?;
                if !self.zones.contains_key(&key) {
                    return Err(Rejection::NotFound(format!("no zone {key}")));
                }
                if let Some(name) = self.services.get(&key).and_then(|m| m.keys().next()) {
                    return Err(Rejection::Conflict(format!(
                        "zone {key} still has service {name}; delete its services first"
                    )));
                }
                self.zones.remove(&key);
                self.parsed.remove(&key);
                Ok(Response::Deleted)
            }
            Command::PutService { service } => {
                let zone = canonical_zone(&service.zone)?;
                let name = canonical_service(&zone, &service.name)?;
                if !self.zones.contains_key(&zone) {
                    return Err(Rejection::NotFound(format!("no zone {zone}")));
                }
                service
                    .validate(|id| self.datacenters.contains_key(id))
                    .map_err(|e| Rejection::Invalid(e.to_string()))?;
                let mut svc = service.clone();
                svc.zone = zone.clone();
                svc.name = name.clone();
                let existed = self
                    .services
                    .entry(zone)
                    .or_default()
                    .insert(name, svc)
                    .is_some();
                Ok(if existed {
                    Response::Replaced
                } else {
                    Response::Created
                })
            }
            Command::DeleteService { zone, name } => {
                let zone = canonical_zone(zone)?;
                let name = canonical_service(&zone, name)?;
                let in_zone = self.services.get_mut(&zone);
                match in_zone.and_then(|m| m.remove(&name)) {
                    Some(_) => {
                        if self.services.get(&zone).is_some_and(|m| m.is_empty()) {
                            self.services.remove(&zone);
                        }
                        Ok(Response::Deleted)
                    }
                    None => Err(Rejection::NotFound(format!("no service {name} in {zone}"))),
                }
            }
            Command::Import {
                zones,
                datacenters,
                services,
            } => {
                if !self.is_empty() {
                    return Ok(Response::Noop);
                }
                for (origin, text) in zones {
                    self.change(&Command::PutZone {
                        origin: origin.clone(),
                        text: text.clone(),
                    })?;
                }
                for dc in datacenters {
                    self.change(&Command::PutDatacenter {
                        dc: dc.clone(),
                        set_state: Some(dc.state),
                    })?;
                }
                for service in services {
                    self.change(&Command::PutService {
                        service: service.clone(),
                    })?;
                }
                Ok(Response::Imported)
            }
        }
    }

    /// The whole state must build into a snapshot (service names clash with no CNAME, sit
    /// under no delegation, …). Checked without the GeoIP database, which nodes may differ on.
    fn validate(&self) -> Result<(), Rejection> {
        let zones = self.zone_files();
        let dcs = self.datacenter_list();
        let services = self.service_list();
        let mut builder = Builder::new(0, Arc::new(crate::geo::GeoDb::empty()));
        builder
            .build(&Inputs {
                zones: &zones,
                datacenters: &dcs,
                services: &services,
            })
            .map(|_| ())
            .map_err(|problems| Rejection::Invalid(problems.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Coordinates, Health, OnAllDown, PolicyKind};

    const ZONE: &str = "$TTL 300\n@ IN SOA ns1 h 1 2 3 4 5\n@ IN NS ns1\nns1 IN A 192.0.2.1\nold IN CNAME ns1\n";

    fn dc(id: &str) -> Datacenter {
        Datacenter {
            id: id.into(),
            location: Coordinates { lat: 1.0, lon: 2.0 },
            addresses: vec!["192.0.2.9".parse().expect("ip")],
            weight: 100,
            state: DcState::Active,
            health: Health::Unknown,
            health_check: None,
        }
    }

    fn svc(name: &str, dcs: &[&str]) -> Service {
        Service {
            zone: "Example.COM".into(),
            name: name.into(),
            policy: PolicyKind::GeoNearest,
            datacenters: dcs.iter().map(|s| s.to_string()).collect(),
            ttl: 60,
            answers: None,
            overrides: Default::default(),
            on_all_down: OnAllDown::All,
        }
    }

    fn base() -> State {
        let mut s = State::default();
        let zone = Command::PutZone {
            origin: "example.com".into(),
            text: ZONE.into(),
        };
        assert_eq!(s.apply(&zone), Response::Created);
        assert_eq!(
            s.apply(&Command::PutDatacenter {
                dc: dc("lon"),
                set_state: None
            }),
            Response::Created
        );
        s
    }

    #[test]
    fn put_replaces_without_undoing_a_drain() {
        let mut s = base();
        let r = s.apply(&Command::PatchDatacenter {
            id: "lon".into(),
            weight: None,
            state: Some(DcState::Drained),
        });
        assert!(matches!(r, Response::Updated { .. }));
        let r = s.apply(&Command::PutDatacenter {
            dc: dc("lon"),
            set_state: None,
        });
        assert_eq!(r, Response::Replaced);
        assert_eq!(s.datacenters["lon"].state, DcState::Drained);
    }

    #[test]
    fn rejected_commands_change_nothing() {
        let mut s = base();
        let r = s.apply(&Command::PutService {
            service: svc("www", &["nope"]),
        });
        assert!(matches!(r, Response::Rejected { why: Rejection::Invalid(_) }), "{r:?}");
        // a service on a CNAME name cannot build
        let r = s.apply(&Command::PutService {
            service: svc("old", &["lon"]),
        });
        assert!(matches!(r, Response::Rejected { .. }), "{r:?}");
        assert!(s.services.is_empty());
        let r = s.apply(&Command::PutZone {
            origin: "example.com".into(),
            text: "garbage".into(),
        });
        assert!(matches!(r, Response::Rejected { why: Rejection::BadRequest(_) }));
        assert_eq!(s.zones["example.com."], ZONE);
    }

    #[test]
    fn datacenter_in_use_cannot_be_deleted() {
        let mut s = base();
        assert_eq!(
            s.apply(&Command::PutService {
                service: svc("www", &["lon"])
            }),
            Response::Created
        );
        assert!(s.services["example.com."].contains_key("www"));
        let r = s.apply(&Command::DeleteDatacenter { id: "lon".into() });
        assert!(matches!(r, Response::Rejected { why: Rejection::Conflict(_) }));
        let r = s.apply(&Command::DeleteZone {
            origin: "EXAMPLE.com.".into(),
        });
        assert!(matches!(r, Response::Rejected { why: Rejection::Conflict(_) }));
        assert_eq!(
            s.apply(&Command::DeleteService {
                zone: "example.com".into(),
                name: "WWW".into()
            }),
            Response::Deleted
        );
        assert_eq!(s.apply(&Command::DeleteDatacenter { id: "lon".into() }), Response::Deleted);
    }

    #[test]
    fn import_is_all_or_nothing_and_only_once() {
        let mut s = State::default();
        let bad = Command::Import {
            zones: vec![("example.com".into(), ZONE.into())],
            datacenters: vec![dc("lon")],
            services: vec![svc("www", &["missing"])],
        };
        assert!(matches!(s.apply(&bad), Response::Rejected { .. }));
        assert!(s.is_empty());
        let good = Command::Import {
            zones: vec![("example.com".into(), ZONE.into())],
            datacenters: vec![dc("lon")],
            services: vec![svc("www", &["lon"])],
        };
        assert_eq!(s.apply(&good), Response::Imported);
        assert_eq!(s.apply(&good), Response::Noop);
    }

    #[test]
    fn state_round_trips_through_json() {
        let mut s = base();
        s.apply(&Command::PutService {
            service: svc("@", &["lon"]),
        });
        let json = serde_json::to_vec(&s).expect("ser");
        let back: State = serde_json::from_slice(&json).expect("de");
        let back = back.restore().expect("restore");
        assert_eq!(back.zone_files().len(), 1);
        assert_eq!(back.services.len(), 1);
    }
}
