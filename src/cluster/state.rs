//! The replicated state and its pure, deterministic `apply`: the same commands in the same
//! order give the same state on every node. Nothing here reads a clock, a file or the
//! node's GeoIP database.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use hickory_proto::rr::Name;
use serde::{Deserialize, Serialize};

use crate::cluster::command::{Command, Rejection, Response};
use crate::model::{Datacenter, DcState, Health, Service};
use crate::snapshot::{Builder, Inputs};
use crate::zone::{parse_zone, ZoneFile};

/// The state's own format version (in snapshots and in the store).
pub const STATE_FORMAT: u32 = 1;

/// How long a node's health opinion counts after it was last reported (three missed
/// re-affirmations of 30 s): a node that died or was cut off stops counting after that.
pub const OPINION_FRESH_MS: u64 = 90_000;
/// Events kept per datacenter.
pub const MAX_EVENTS: usize = 50;

/// One node's latest verdict on a datacenter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Opinion {
    pub up: bool,
    /// When the leader logged it (ms since the Unix epoch).
    pub at_ms: u64,
    #[serde(default)]
    pub reason: String,
}

/// A transition of a datacenter's health or state, with each node's opinion at the time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub at_ms: u64,
    /// `health` or `state`.
    pub what: String,
    pub from: String,
    pub to: String,
    /// Node id → opinion, for health events.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub opinions: BTreeMap<u64, Opinion>,
}

/// Zones, datacenters and services, as the cluster agrees on them.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct State {
    /// Canonical origin (`example.com.`) → zone text.
    pub zones: BTreeMap<String, String>,
    pub datacenters: BTreeMap<String, Datacenter>,
    /// Canonical zone → canonical relative name → service.
    pub services: BTreeMap<String, BTreeMap<String, Service>>,
    /// Datacenter → node → that node's latest health opinion.
    #[serde(default)]
    pub opinions: BTreeMap<String, BTreeMap<u64, Opinion>>,
    /// Datacenter → its recent transitions, oldest first.
    #[serde(default)]
    pub events: BTreeMap<String, VecDeque<Event>>,
    /// Zones as parsed (derived from `zones`; rebuilt on load).
    #[serde(skip)]
    parsed: BTreeMap<String, Arc<ZoneFile>>,
}

fn health_name(h: Health) -> &'static str {
    match h {
        Health::Healthy => "healthy",
        Health::Unhealthy => "unhealthy",
        Health::Unknown => "unknown",
    }
}

fn state_event(from: DcState, to: DcState, at_ms: u64) -> Event {
    let name = |s: DcState| match s {
        DcState::Active => "active",
        DcState::Drained => "drained",
    };
    Event {
        at_ms,
        what: "state".into(),
        from: name(from).into(),
        to: name(to).into(),
        opinions: BTreeMap::new(),
    }
}

fn push_event(events: &mut BTreeMap<String, VecDeque<Event>>, dc: &str, event: Event) {
    let list = events.entry(dc.to_string()).or_default();
    list.push_back(event);
    while list.len() > MAX_EVENTS {
        list.pop_front();
    }
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
            None => Err(Rejection::BadRequest(format!(
                "{name} is not in zone {zone}."
            ))),
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
        self.services
            .values()
            .flat_map(|m| m.values().cloned())
            .collect()
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

    /// Apply one command logged by the leader at `at_ms`. On rejection the state is
    /// unchanged.
    pub fn apply(&mut self, cmd: &Command, at_ms: u64) -> Response {
        if let Command::HealthReport {
            node,
            dc,
            up,
            reason,
        } = cmd
        {
            // Health changes no definition: no copy, no validation.
            return self.report(*node, dc, *up, reason, at_ms);
        }
        // Work on a copy; keep it only if the result is a state that builds.
        let mut next = self.clone();
        let response = match next.change(cmd, at_ms) {
            Ok(r) => r,
            Err(why) => return Response::Rejected { why },
        };
        if let Err(why) = next.validate() {
            return Response::Rejected { why };
        }
        next.reassess(at_ms);
        *self = next;
        response
    }

    /// Record a node's opinion, then work out every datacenter's health again: an opinion
    /// may have aged out since the last entry.
    fn report(&mut self, node: u64, dc: &str, up: bool, reason: &str, at_ms: u64) -> Response {
        if !self.datacenters.contains_key(dc) {
            return Response::Rejected {
                why: Rejection::NotFound(format!("no datacenter {dc:?}")),
            };
        }
        self.opinions.entry(dc.to_string()).or_default().insert(
            node,
            Opinion {
                up,
                at_ms,
                reason: reason.to_string(),
            },
        );
        self.reassess(at_ms);
        Response::Noop
    }

    /// A datacenter is unhealthy when a majority of the nodes with a fresh opinion see it
    /// down, healthy when they do not, unknown with no fresh opinion.
    fn reassess(&mut self, now_ms: u64) {
        self.opinions
            .retain(|dc, _| self.datacenters.contains_key(dc));
        self.events
            .retain(|dc, _| self.datacenters.contains_key(dc));
        for (id, dc) in self.datacenters.iter_mut() {
            let fresh: Vec<&Opinion> = self
                .opinions
                .get(id)
                .into_iter()
                .flat_map(|m| m.values())
                .filter(|o| now_ms.saturating_sub(o.at_ms) <= OPINION_FRESH_MS)
                .collect();
            let down = fresh.iter().filter(|o| !o.up).count();
            let health = match fresh.len() {
                0 => Health::Unknown,
                n if down * 2 > n => Health::Unhealthy,
                _ => Health::Healthy,
            };
            if health != dc.health {
                let event = Event {
                    at_ms: now_ms,
                    what: "health".into(),
                    from: health_name(dc.health).into(),
                    to: health_name(health).into(),
                    opinions: self.opinions.get(id).cloned().unwrap_or_default(),
                };
                push_event(&mut self.events, id, event);
                dc.health = health;
            }
        }
    }

    fn change(&mut self, cmd: &Command, at_ms: u64) -> Result<Response, Rejection> {
        match cmd {
            Command::PutDatacenter { dc, set_state } => {
                let mut dc = dc.clone();
                dc.validate()
                    .map_err(|e| Rejection::Invalid(e.to_string()))?;
                let existed = match self.datacenters.get(&dc.id) {
                    Some(old) => {
                        dc.state = set_state.unwrap_or(old.state);
                        dc.health = old.health;
                        if dc.state != old.state {
                            push_event(
                                &mut self.events,
                                &dc.id,
                                state_event(old.state, dc.state, at_ms),
                            );
                        }
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
                    if dc.state != *s {
                        let event = state_event(dc.state, *s, at_ms);
                        dc.state = *s;
                        push_event(&mut self.events, id, event);
                    }
                }
                dc.validate()
                    .map_err(|e| Rejection::Invalid(e.to_string()))?;
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
                let name =
                    Name::from_ascii(&key).map_err(|e| Rejection::BadRequest(e.to_string()))?;
                let zf = parse_zone(text, &key, &name)
                    .map_err(|e| Rejection::BadRequest(e.to_string()))?;
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
                    self.change(
                        &Command::PutZone {
                            origin: origin.clone(),
                            text: text.clone(),
                        },
                        at_ms,
                    )?;
                }
                for dc in datacenters {
                    self.change(
                        &Command::PutDatacenter {
                            dc: dc.clone(),
                            set_state: Some(dc.state),
                        },
                        at_ms,
                    )?;
                }
                for service in services {
                    self.change(
                        &Command::PutService {
                            service: service.clone(),
                        },
                        at_ms,
                    )?;
                }
                Ok(Response::Imported)
            }
            Command::HealthReport { .. } => Ok(Response::Noop), // handled in apply()
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
    use crate::model::{Health, PolicyKind};

    const ZONE: &str =
        "$TTL 300\n@ IN SOA ns1 h 1 2 3 4 5\n@ IN NS ns1\nns1 IN A 192.0.2.1\nold IN CNAME ns1\n";

    fn dc(id: &str) -> Datacenter {
        crate::model::fixtures::datacenter(id, 1.0, 2.0, "192.0.2.9")
    }

    fn svc(name: &str, dcs: &[&str]) -> Service {
        crate::model::fixtures::service("Example.COM", name, PolicyKind::GeoNearest, dcs)
    }

    fn base() -> State {
        let mut s = State::default();
        let zone = Command::PutZone {
            origin: "example.com".into(),
            text: ZONE.into(),
        };
        assert_eq!(s.apply(&zone, 0), Response::Created);
        assert_eq!(
            s.apply(
                &Command::PutDatacenter {
                    dc: dc("lon"),
                    set_state: None
                },
                0
            ),
            Response::Created
        );
        s
    }

    #[test]
    fn put_replaces_without_undoing_a_drain() {
        let mut s = base();
        let r = s.apply(
            &Command::PatchDatacenter {
                id: "lon".into(),
                weight: None,
                state: Some(DcState::Drained),
            },
            0,
        );
        assert!(matches!(r, Response::Updated { .. }));
        let r = s.apply(
            &Command::PutDatacenter {
                dc: dc("lon"),
                set_state: None,
            },
            0,
        );
        assert_eq!(r, Response::Replaced);
        assert_eq!(s.datacenters["lon"].state, DcState::Drained);
    }

    #[test]
    fn rejected_commands_change_nothing() {
        let mut s = base();
        let r = s.apply(
            &Command::PutService {
                service: svc("www", &["nope"]),
            },
            0,
        );
        assert!(
            matches!(
                r,
                Response::Rejected {
                    why: Rejection::Invalid(_)
                }
            ),
            "{r:?}"
        );
        // a service on a CNAME name cannot build
        let r = s.apply(
            &Command::PutService {
                service: svc("old", &["lon"]),
            },
            0,
        );
        assert!(matches!(r, Response::Rejected { .. }), "{r:?}");
        assert!(s.services.is_empty());
        let r = s.apply(
            &Command::PutZone {
                origin: "example.com".into(),
                text: "garbage".into(),
            },
            0,
        );
        assert!(matches!(
            r,
            Response::Rejected {
                why: Rejection::BadRequest(_)
            }
        ));
        assert_eq!(s.zones["example.com."], ZONE);
    }

    #[test]
    fn datacenter_in_use_cannot_be_deleted() {
        let mut s = base();
        assert_eq!(
            s.apply(
                &Command::PutService {
                    service: svc("www", &["lon"])
                },
                0
            ),
            Response::Created
        );
        assert!(s.services["example.com."].contains_key("www"));
        let r = s.apply(&Command::DeleteDatacenter { id: "lon".into() }, 0);
        assert!(matches!(
            r,
            Response::Rejected {
                why: Rejection::Conflict(_)
            }
        ));
        let r = s.apply(
            &Command::DeleteZone {
                origin: "EXAMPLE.com.".into(),
            },
            0,
        );
        assert!(matches!(
            r,
            Response::Rejected {
                why: Rejection::Conflict(_)
            }
        ));
        assert_eq!(
            s.apply(
                &Command::DeleteService {
                    zone: "example.com".into(),
                    name: "WWW".into()
                },
                0
            ),
            Response::Deleted
        );
        assert_eq!(
            s.apply(&Command::DeleteDatacenter { id: "lon".into() }, 0),
            Response::Deleted
        );
    }

    #[test]
    fn import_is_all_or_nothing_and_only_once() {
        let mut s = State::default();
        let bad = Command::Import {
            zones: vec![("example.com".into(), ZONE.into())],
            datacenters: vec![dc("lon")],
            services: vec![svc("www", &["missing"])],
        };
        assert!(matches!(s.apply(&bad, 0), Response::Rejected { .. }));
        assert!(s.is_empty());
        let good = Command::Import {
            zones: vec![("example.com".into(), ZONE.into())],
            datacenters: vec![dc("lon")],
            services: vec![svc("www", &["lon"])],
        };
        assert_eq!(s.apply(&good, 0), Response::Imported);
        assert_eq!(s.apply(&good, 0), Response::Noop);
    }

    #[test]
    fn health_is_the_majority_of_fresh_opinions() {
        let mut s = base();
        let h = |s: &State| s.datacenters["lon"].health;
        assert_eq!(h(&s), Health::Unknown);
        let report = |node, up| Command::HealthReport {
            node,
            dc: "lon".into(),
            up,
            reason: String::new(),
        };
        s.apply(&report(1, true), 1_000);
        s.apply(&report(2, true), 1_000);
        s.apply(&report(3, false), 1_000);
        assert_eq!(h(&s), Health::Healthy, "one node alone cannot drain a site");
        s.apply(&report(2, false), 2_000);
        assert_eq!(h(&s), Health::Unhealthy);
        // node 3's and 2's opinions age out; node 1 keeps re-affirming up
        s.apply(&report(1, true), 2_000 + OPINION_FRESH_MS);
        assert_eq!(h(&s), Health::Healthy);
        let events = &s.events["lon"];
        assert_eq!(events.len(), 3, "{events:?}");
        assert_eq!(events[1].to, "unhealthy");
        assert_eq!(events[1].opinions.len(), 3);
        // a report about an unknown datacenter is a rejection, not an error
        let r = s.apply(
            &Command::HealthReport {
                node: 1,
                dc: "nope".into(),
                up: true,
                reason: String::new(),
            },
            5,
        );
        assert!(matches!(r, Response::Rejected { .. }));
    }

    #[test]
    fn state_round_trips_through_json() {
        let mut s = base();
        s.apply(
            &Command::PutService {
                service: svc("@", &["lon"]),
            },
            0,
        );
        let json = serde_json::to_vec(&s).expect("ser");
        let back: State = serde_json::from_slice(&json).expect("de");
        let back = back.restore().expect("restore");
        assert_eq!(back.zone_files().len(), 1);
        assert_eq!(back.services.len(), 1);
    }
}
