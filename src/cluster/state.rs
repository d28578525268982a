//! The replicated state and its pure, deterministic `apply`: the same commands in the same
//! order give the same state on every node. Nothing here reads a clock, a file or the
//! node's GeoIP database.
//!
//! The state is a set of persistent maps (`imbl`) of `Arc`ed objects: cloning it is O(1) and
//! a command copies only the path to what it changes. `apply` validates only what a command
//! touches (a reverse index from datacenter to its services answers "in use?"; a zone is
//! checked against its own services) and returns a [`Delta`] naming what it changed, which
//! the store writes (one key per object) and the publisher turns into the next snapshot.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use hickory_proto::rr::Name;
use imbl::{OrdMap, OrdSet};
use serde::{Deserialize, Serialize};

use crate::cluster::command::{Command, Rejection, Response};
use crate::cluster::types::{Precondition, Request, CLUSTER_FORMAT_START};
use crate::model::{Datacenter, DcState, Health, Service};
use crate::name::{KeyName, NameError, ServiceName, ZoneName};
use crate::snapshot::CookieSecrets;
use crate::zone::transfer::Journal;
use crate::zone::{parse_zone, service_conflict, ZoneFile};
use crate::zoneconf::{TsigKey, ZoneSettings};

mod dnssec;
pub mod history;
pub use dnssec::{DnssecEntry, DnssecPublic, PublicKey};
mod serial;

pub use history::{HistoryEntry, Shown, Target, TsigShown, MAX_HISTORY};
pub use serial::{next_serial, JOURNAL_VERSIONS};
mod update;

/// The newest format of the state (in snapshots and in the store) this binary reads. 1: one
/// JSON value of the whole state; 2: one object per key, request records, versions; 3: the
/// same, written once the cluster's format is past [`CLUSTER_FORMAT_START`] (it may hold
/// what older binaries cannot read, and says so: they refuse it by this number).
pub const STATE_FORMAT: u32 = 3;

/// How long a node's health opinion counts after it was last reported (three missed
/// re-affirmations of 30 s): a node that died or was cut off stops counting after that.
pub const OPINION_FRESH_MS: u64 = 90_000;
/// Events kept per datacenter.
pub const MAX_EVENTS: usize = 50;
/// How long the result of a write with a request id is kept, so that the same request
/// (a retried forward, a repeated `Idempotency-Key`) gets that result instead of applying twice.
pub const REQUEST_TTL_MS: u64 = 24 * 3600 * 1000;
/// The most request records kept (the oldest go first beyond it).
pub const MAX_REQUESTS: usize = 100_000;

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

/// A zone: its text as given, parsed once, and the log index of its last change.
#[derive(Clone, Debug)]
pub struct ZoneEntry {
    pub text: Arc<str>,
    pub file: Arc<ZoneFile>,
    pub version: u64,
}

/// A datacenter's definition with its drain state and health verdict (what answers depend
/// on), and the log index of its last change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DcEntry {
    pub dc: Arc<Datacenter>,
    pub version: u64,
}

/// What answers do not depend on: each node's latest opinion and the recent transitions.
/// A re-affirmed opinion changes only this, so it is stored but never published.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DcStatus {
    #[serde(default)]
    pub opinions: BTreeMap<u64, Opinion>,
    #[serde(default)]
    pub events: VecDeque<Event>,
}

/// A service definition and the log index of its last change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServiceEntry {
    pub service: Arc<Service>,
    pub version: u64,
}

/// The result of a write with a request id, kept for [`REQUEST_TTL_MS`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    pub at_ms: u64,
    /// The log index the request was applied at.
    pub index: u64,
    pub response: Response,
}

/// A TSIG key and the log index of its last change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TsigEntry {
    pub key: Arc<TsigKey>,
    pub version: u64,
}

/// A zone's settings and the log index of their last change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SettingsEntry {
    pub settings: Arc<ZoneSettings>,
    pub version: u64,
}

/// A service's key: its zone's origin and its name in the zone.
pub type ServiceKey = (ZoneName, ServiceName);

/// What one or more applied commands changed. The store writes these keys; the publisher
/// rebuilds exactly these parts of the snapshot.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Delta {
    /// Zones whose text changed, appeared or went away.
    pub zones: BTreeSet<ZoneName>,
    /// Services defined, replaced or deleted.
    pub services: BTreeSet<ServiceKey>,
    /// Datacenters whose definition, state or health changed, appeared or went away.
    pub datacenters: BTreeSet<String>,
    /// Datacenters whose opinions or events changed (stored, never published).
    pub statuses: BTreeSet<String>,
    /// Request records added or pruned (stored, never published).
    pub requests: BTreeSet<String>,
    /// The DNS cookie secrets changed.
    pub cookies: bool,
    /// TSIG keys put or deleted.
    pub tsig_keys: BTreeSet<KeyName>,
    /// Zones whose settings changed.
    pub zone_settings: BTreeSet<ZoneName>,
    /// Zones whose published serial (and so transferred content) changed.
    pub serials: BTreeSet<ZoneName>,
    /// Zones whose DNSSEC keys changed (signed, unsigned).
    pub dnssec: BTreeSet<ZoneName>,
    /// History entries added or pruned (stored, never published).
    pub history: BTreeSet<u64>,
    /// The cluster's format went up (stored, never published).
    pub format: bool,
    /// Everything may have changed (a snapshot installed): rebuild all.
    pub everything: bool,
}

impl Delta {
    pub fn merge(&mut self, other: Delta) {
        self.zones.extend(other.zones);
        self.services.extend(other.services);
        self.datacenters.extend(other.datacenters);
        self.statuses.extend(other.statuses);
        self.requests.extend(other.requests);
        self.cookies |= other.cookies;
        self.tsig_keys.extend(other.tsig_keys);
        self.zone_settings.extend(other.zone_settings);
        self.serials.extend(other.serials);
        self.dnssec.extend(other.dnssec);
        self.history.extend(other.history);
        self.format |= other.format;
        self.everything |= other.everything;
    }

    /// Whether answers may differ: anything but opinions, events and request records.
    pub fn changes_answers(&self) -> bool {
        self.everything
            || !self.zones.is_empty()
            || !self.services.is_empty()
            || !self.datacenters.is_empty()
            || self.cookies
            || !self.tsig_keys.is_empty()
            || !self.zone_settings.is_empty()
            || !self.serials.is_empty()
            || !self.dnssec.is_empty()
    }

    pub fn is_empty(&self) -> bool {
        !self.changes_answers()
            && self.statuses.is_empty()
            && self.requests.is_empty()
            && self.history.is_empty()
            && !self.format
    }

    pub fn everything() -> Delta {
        Delta {
            everything: true,
            ..Delta::default()
        }
    }
}

/// Zones, datacenters and services, as the cluster agrees on them. Keyed by names
/// canonicalised once ([`crate::name`]); look-ups take the name, or its canonical text.
#[derive(Clone, Debug, Default)]
pub struct State {
    zones: OrdMap<ZoneName, Arc<ZoneEntry>>,
    datacenters: OrdMap<String, DcEntry>,
    status: OrdMap<String, Arc<DcStatus>>,
    /// Zone → name in the zone → service.
    services: OrdMap<ZoneName, OrdMap<ServiceName, ServiceEntry>>,
    /// Datacenter → the services that name it (in their list or an override). Derived.
    users: OrdMap<String, OrdSet<ServiceKey>>,
    /// Request id → the result it had.
    requests: OrdMap<String, Arc<RequestRecord>>,
    /// (applied at, request id), to drop the oldest first. Derived.
    request_age: OrdSet<(u64, String)>,
    /// The cluster's DNS cookie secrets; none until the first leader draws one.
    cookies: Option<Arc<CookieSecrets>>,
    /// The current voters, from the last membership entry applied (derived from the log,
    /// never stored): only their health opinions count. `None`: not known (no membership
    /// applied yet), every node's counts.
    voters: Option<BTreeSet<u64>>,
    tsig_keys: OrdMap<KeyName, TsigEntry>,
    zone_settings: OrdMap<ZoneName, SettingsEntry>,
    /// The published serial of each zone.
    serials: OrdMap<ZoneName, u32>,
    /// Each zone's recent versions for IXFR. Kept in memory only: after a restart a node
    /// answers IXFR for older serials with the whole zone (RFC 1995 §4).
    journals: OrdMap<ZoneName, Arc<Journal>>,
    /// The last [`MAX_HISTORY`] changes by log index.
    history: OrdMap<u64, Arc<HistoryEntry>>,
    /// DNSSEC keys of signed zones.
    dnssec: OrdMap<ZoneName, DnssecEntry>,
    /// The entry format every member applies ([`crate::cluster::types::CLUSTER_FORMAT_START`]
    /// until the leader raises it).
    format: ClusterFormat,
}

/// The cluster's format: the newest entry format every member applies. It starts at
/// [`CLUSTER_FORMAT_START`] (a state stored or sent before the cluster format existed reads
/// as that) and only goes up ([`Command::SetFormat`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ClusterFormat(pub u32);

impl Default for ClusterFormat {
    fn default() -> ClusterFormat {
        ClusterFormat(CLUSTER_FORMAT_START)
    }
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

/// A name refused where a command is applied: 400, with the name's own message.
impl From<NameError> for Rejection {
    fn from(e: NameError) -> Rejection {
        Rejection::BadRequest(e.to_string())
    }
}

/// The absolute name of a service.
fn service_fqdn(zone: &ZoneName, name: &ServiceName) -> Result<Name, Rejection> {
    let bad = |e: &dyn std::fmt::Display| Rejection::BadRequest(format!("bad name {name}: {e}"));
    let origin = Name::from_ascii(zone.as_str()).map_err(|e| bad(&e))?;
    if name.is_apex() {
        return Ok(origin);
    }
    Name::from_ascii(name.as_str())
        .map_err(|e| bad(&e))?
        .append_name(&origin)
        .map_err(|e| bad(&e))
}

fn parse_text(origin: &ZoneName, text: &str) -> Result<ZoneFile, Rejection> {
    let name =
        Name::from_ascii(origin.as_str()).map_err(|e| Rejection::BadRequest(e.to_string()))?;
    // The same text already parsed by this process as a check (the bootstrap directory on
    // a new cluster's first start): what parsing it again would give, without the work.
    if let Some(file) = crate::zone::handover::take(&name, text) {
        return Ok(file);
    }
    parse_zone(text, origin.as_str(), &name).map_err(|e| Rejection::BadRequest(e.to_string()))
}

/// The datacenters a service names, in its list and its overrides.
fn named_dcs(s: &Service) -> impl Iterator<Item = &String> {
    s.datacenters.iter().chain(s.overrides.values().flatten())
}

impl State {
    // ---- reads ----------------------------------------------------------------------

    pub fn is_empty(&self) -> bool {
        self.zones.is_empty() && self.datacenters.is_empty() && self.services.is_empty()
    }

    pub fn zones(&self) -> impl Iterator<Item = (&ZoneName, &Arc<ZoneEntry>)> {
        self.zones.iter()
    }

    pub fn zone<Z>(&self, origin: &Z) -> Option<&Arc<ZoneEntry>>
    where
        Z: Ord + ?Sized,
        ZoneName: Borrow<Z>,
    {
        self.zones.get(origin)
    }

    pub fn datacenters(&self) -> impl Iterator<Item = &DcEntry> {
        self.datacenters.values()
    }

    pub fn datacenter(&self, id: &str) -> Option<&DcEntry> {
        self.datacenters.get(id)
    }

    /// Opinions and events of a datacenter (empty when it has none).
    pub fn status(&self, id: &str) -> Arc<DcStatus> {
        self.status.get(id).cloned().unwrap_or_default()
    }

    /// The services of a zone, by name.
    pub fn services_in<Z>(&self, zone: &Z) -> impl Iterator<Item = (&ServiceName, &ServiceEntry)>
    where
        Z: Ord + ?Sized,
        ZoneName: Borrow<Z>,
    {
        self.services.get(zone).into_iter().flat_map(|m| m.iter())
    }

    pub fn service<Z, N>(&self, zone: &Z, name: &N) -> Option<&ServiceEntry>
    where
        Z: Ord + ?Sized,
        N: Ord + ?Sized,
        ZoneName: Borrow<Z>,
        ServiceName: Borrow<N>,
    {
        self.services.get(zone).and_then(|m| m.get(name))
    }

    /// Every service.
    pub fn services(&self) -> impl Iterator<Item = &ServiceEntry> {
        self.services.values().flat_map(|m| m.values())
    }

    /// Every service's key.
    pub fn service_keys(&self) -> impl Iterator<Item = ServiceKey> + '_ {
        self.services
            .iter()
            .flat_map(|(z, m)| m.keys().map(move |n| (z.clone(), n.clone())))
    }

    pub fn request(&self, id: &str) -> Option<&Arc<RequestRecord>> {
        self.requests.get(id)
    }

    pub fn requests(&self) -> impl Iterator<Item = (&String, &Arc<RequestRecord>)> {
        self.requests.iter()
    }

    // ---- loading (store, snapshots) --------------------------------------------------

    /// Put a stored zone back (its text is parsed again).
    pub fn load_zone(&mut self, origin: ZoneName, text: &str, version: u64) -> Result<(), String> {
        let file = parse_text(&origin, text).map_err(|r| r.message().to_string())?;
        self.zones.insert(
            origin,
            Arc::new(ZoneEntry {
                text: text.into(),
                file: Arc::new(file),
                version,
            }),
        );
        Ok(())
    }

    pub fn load_datacenter(&mut self, entry: DcEntry) {
        self.datacenters.insert(entry.dc.id.clone(), entry);
    }

    pub fn load_status(&mut self, id: String, status: DcStatus) {
        self.status.insert(id, Arc::new(status));
    }

    /// Put a stored service back. Its zone and name are the service's own fields (a
    /// `Service` keeps them as text: it travels in commands too), which the state wrote
    /// canonical: any other text is refused.
    pub fn load_service(&mut self, entry: ServiceEntry) -> Result<(), NameError> {
        let zone = ZoneName::canonical(entry.service.zone.clone())?;
        let name = ServiceName::canonical(entry.service.name.clone())?;
        self.insert_service((zone, name), entry);
        Ok(())
    }

    fn insert_service(&mut self, key: ServiceKey, entry: ServiceEntry) {
        for dc in named_dcs(&entry.service) {
            let mut set = self.users.get(dc).cloned().unwrap_or_default();
            set.insert(key.clone());
            self.users.insert(dc.clone(), set);
        }
        let mut in_zone = self.services.get(&key.0).cloned().unwrap_or_default();
        in_zone.insert(key.1, entry);
        self.services.insert(key.0, in_zone);
    }

    /// Follow a membership entry: opinions of nodes that are no longer voters are dropped
    /// and the verdicts worked out again (at the time of the newest opinion, so that every
    /// node, replaying the same log, gets the same verdicts).
    pub fn set_voters(&mut self, voters: BTreeSet<u64>, delta: &mut Delta) {
        let ids: Vec<String> = self.status.keys().cloned().collect();
        let mut newest = None;
        for id in ids {
            let status = self.status(&id);
            newest = newest.max(status.opinions.values().map(|o| o.at_ms).max());
            if status.opinions.keys().all(|n| voters.contains(n)) {
                continue;
            }
            let mut status = (*status).clone();
            status.opinions.retain(|n, _| voters.contains(n));
            self.status.insert(id.clone(), Arc::new(status));
            delta.statuses.insert(id);
        }
        let before = self.clone(); // O(1): for the serials of what a verdict changed
        self.voters = Some(voters);
        // The time to judge freshness at: the newest opinion's, and (from cluster format 4)
        // no earlier than the newest write's, so that opinions another write already aged
        // out do not count again (and a verdict flip back and forth, moving serials twice).
        let newest_write = self.request_age.get_max().map(|(at, _)| *at);
        let newest = match self.format() >= 4 {
            true => newest.max(newest_write),
            false => newest,
        };
        if let Some(now) = newest {
            self.reassess(now, delta);
            // A verdict that flipped changes the transfers of its site's zones, as it would
            // through a health report: their serials move and their journals say so. Binaries
            // before the cluster format 4 did not: every member applies it alike only once
            // the format says all run one that does.
            if delta.changes_answers() && self.format() >= 4 {
                self.move_serials(&before, delta, now);
            }
        }
    }

    /// Whether `node`'s health opinions count (true while the voters are not known).
    pub fn is_voter(&self, node: u64) -> bool {
        self.voters.as_ref().is_none_or(|v| v.contains(&node))
    }

    /// The voters, as the store knows them at load (nothing to recompute: the stored
    /// opinions were filtered when the membership entry was applied).
    pub fn load_voters(&mut self, voters: BTreeSet<u64>) {
        self.voters = Some(voters);
    }

    /// The cluster's DNS cookie secrets, once drawn.
    pub fn cookie_secrets(&self) -> Option<&Arc<CookieSecrets>> {
        self.cookies.as_ref()
    }

    /// The entry format every member applies: what may be proposed.
    pub fn format(&self) -> u32 {
        self.format.0
    }

    /// The state format this state is written in ([`STATE_FORMAT`]): 2 while the cluster
    /// may still have members of the first cluster format.
    pub fn stored_format(&self) -> u32 {
        if self.format() > CLUSTER_FORMAT_START {
            STATE_FORMAT
        } else {
            2
        }
    }

    pub fn load_format(&mut self, format: u32) {
        self.format = ClusterFormat(format.max(CLUSTER_FORMAT_START));
    }

    pub fn load_cookies(&mut self, secrets: CookieSecrets) {
        self.cookies = Some(Arc::new(secrets));
    }

    pub fn tsig_keys(&self) -> impl Iterator<Item = &TsigEntry> {
        self.tsig_keys.values()
    }

    pub fn tsig_key_names(&self) -> impl Iterator<Item = &KeyName> {
        self.tsig_keys.keys()
    }

    pub fn tsig_key<K>(&self, name: &K) -> Option<&TsigEntry>
    where
        K: Ord + ?Sized,
        KeyName: Borrow<K>,
    {
        self.tsig_keys.get(name)
    }

    pub fn zone_settings<Z>(&self, origin: &Z) -> Option<&SettingsEntry>
    where
        Z: Ord + ?Sized,
        ZoneName: Borrow<Z>,
    {
        self.zone_settings.get(origin)
    }

    pub fn all_zone_settings(&self) -> impl Iterator<Item = (&ZoneName, &SettingsEntry)> {
        self.zone_settings.iter()
    }

    /// Put a stored key back; its name (a `TsigKey` keeps it as text: it travels in
    /// commands too) was written canonical, any other text is refused.
    pub fn load_tsig_key(&mut self, entry: TsigEntry) -> Result<(), NameError> {
        let name = KeyName::canonical(entry.key.name.clone())?;
        self.tsig_keys.insert(name, entry);
        Ok(())
    }

    pub fn load_zone_settings(&mut self, origin: ZoneName, entry: SettingsEntry) {
        self.zone_settings.insert(origin, entry);
    }

    pub fn load_request(&mut self, id: String, record: RequestRecord) {
        self.request_age.insert((record.at_ms, id.clone()));
        self.requests.insert(id, Arc::new(record));
    }

    /// The version of the object `target` names: the log index of its last change, 0
    /// when it does not exist (a member has none).
    pub fn version_of(&self, target: &Target) -> u64 {
        match target {
            Target::Datacenter(id) => self.datacenter(id).map(|e| e.version),
            Target::Zone(origin) => self.zone(origin).map(|z| z.version),
            Target::Service(zone, name) => self.service(zone, name).map(|s| s.version),
            Target::Tsig(name) => self.tsig_key(name).map(|k| k.version),
            Target::Settings(origin) => self.zone_settings(origin).map(|s| s.version),
            Target::Dnssec(origin) => self.dnssec(origin).map(|s| s.version),
            Target::Member(_) => None,
        }
        .unwrap_or(0)
    }

    /// Whether a write's precondition holds here, in log order: the object is at the
    /// version named, or (`If-Match: *`) exists at all.
    fn precondition(&self, p: &Precondition) -> Result<(), Rejection> {
        let now = self.version_of(&p.target);
        match (p.exists, now) {
            (true, 0) => Err(Rejection::PreconditionFailed(format!(
                "If-Match *: {} does not exist",
                p.target
            ))),
            (true, _) => Ok(()),
            (false, v) if v == p.version => Ok(()),
            (false, v) => Err(Rejection::PreconditionFailed(format!(
                "If-Match \"{}\": {} is at version {v} now",
                p.version, p.target
            ))),
        }
    }

    // ---- apply ----------------------------------------------------------------------

    /// Apply one command logged by the leader at `at_ms` as entry `index`. On rejection the
    /// state is unchanged. A command carrying a request id that was already applied is not
    /// applied again: it gets the first result.
    pub fn apply(
        &mut self,
        cmd: &Command,
        request_id: Option<&str>,
        at_ms: u64,
        index: u64,
    ) -> (Response, Delta) {
        let req = Request {
            v: 1,
            at_ms,
            cmd: cmd.clone(),
            id: request_id.map(str::to_string),
            actor: None,
            if_match: None,
        };
        self.apply_request(&req, index)
    }

    /// [`State::apply`] of a whole log entry: its precondition is checked against the state
    /// it applies to (412 when the object moved on), and the change is recorded in the
    /// history under its actor.
    pub fn apply_request(&mut self, req: &Request, index: u64) -> (Response, Delta) {
        let (cmd, request_id, at_ms) = (&req.cmd, req.id.as_deref(), req.at_ms);
        let mut delta = Delta::default();
        let before = self.clone(); // O(1): for the serials of what changed
        self.prune_requests(at_ms, &mut delta);
        if let Some(id) = request_id {
            if let Some(done) = self.requests.get(id) {
                return (done.response.clone(), delta);
            }
        }
        let response = match cmd {
            Command::HealthReport {
                node,
                dc,
                up,
                reason,
            } => self.report(*node, dc, *up, reason, at_ms, &mut delta),
            _ => {
                // Work on a copy (O(1)); keep it only when the command is accepted.
                let mut next = self.clone();
                let mut changed = Delta::default();
                let result = match &req.if_match {
                    Some(p) => next.precondition(p),
                    None => Ok(()),
                }
                .and_then(|()| next.change(cmd, at_ms, index, &mut changed));
                match result {
                    Ok(r) => {
                        next.reassess(at_ms, &mut changed);
                        next.record(&before, req, index, &r, &mut changed);
                        *self = next;
                        delta.merge(changed);
                        r
                    }
                    Err(why) => Response::Rejected { why },
                }
            }
        };
        if delta.changes_answers() {
            self.move_serials(&before, &mut delta, at_ms);
        }
        if let Some(id) = request_id {
            self.load_request(
                id.to_string(),
                RequestRecord {
                    at_ms,
                    index,
                    response: response.clone(),
                },
            );
            delta.requests.insert(id.to_string());
        }
        (response, delta)
    }

    /// Drop request records older than [`REQUEST_TTL_MS`], and the oldest beyond
    /// [`MAX_REQUESTS`].
    fn prune_requests(&mut self, now_ms: u64, delta: &mut Delta) {
        while let Some((at, id)) = self.request_age.get_min().cloned() {
            let expired = now_ms.saturating_sub(at) > REQUEST_TTL_MS;
            if !expired && self.request_age.len() < MAX_REQUESTS {
                break;
            }
            self.request_age.remove(&(at, id.clone()));
            self.requests.remove(&id);
            delta.requests.insert(id);
        }
    }

    fn push_event(&mut self, dc: &str, event: Event, delta: &mut Delta) {
        let mut status = (*self.status(dc)).clone();
        status.events.push_back(event);
        while status.events.len() > MAX_EVENTS {
            status.events.pop_front();
        }
        self.status.insert(dc.to_string(), Arc::new(status));
        delta.statuses.insert(dc.to_string());
    }

    /// Record a node's opinion, then work out every datacenter's health again: an opinion
    /// may have aged out since the last entry.
    fn report(
        &mut self,
        node: u64,
        dc: &str,
        up: bool,
        reason: &str,
        at_ms: u64,
        delta: &mut Delta,
    ) -> Response {
        if !self.datacenters.contains_key(dc) {
            return Response::Rejected {
                why: Rejection::NotFound(format!("no datacenter {dc:?}")),
            };
        }
        if self.voters.as_ref().is_some_and(|v| !v.contains(&node)) {
            return Response::Rejected {
                why: Rejection::Invalid(format!(
                    "node {node} is not a voter: only voters' health opinions count"
                )),
            };
        }
        let mut status = (*self.status(dc)).clone();
        status.opinions.insert(
            node,
            Opinion {
                up,
                at_ms,
                reason: reason.to_string(),
            },
        );
        self.status.insert(dc.to_string(), Arc::new(status));
        delta.statuses.insert(dc.to_string());
        self.reassess(at_ms, delta);
        Response::Noop
    }

    /// A datacenter is unhealthy when a majority of the nodes with a fresh opinion see it
    /// down, healthy when they do not, unknown with no fresh opinion. Only datacenters with
    /// opinions are looked at (the others stay unknown).
    fn reassess(&mut self, now_ms: u64, delta: &mut Delta) {
        let ids: Vec<String> = self.status.keys().cloned().collect();
        for id in ids {
            let Some(entry) = self.datacenters.get(&id) else {
                continue;
            };
            let status = self.status(&id);
            let fresh: Vec<&Opinion> = status
                .opinions
                .values()
                .filter(|o| now_ms.saturating_sub(o.at_ms) <= OPINION_FRESH_MS)
                .collect();
            let down = fresh.iter().filter(|o| !o.up).count();
            let health = match fresh.len() {
                0 => Health::Unknown,
                n if down * 2 > n => Health::Unhealthy,
                _ => Health::Healthy,
            };
            if health != entry.dc.health {
                let event = Event {
                    at_ms: now_ms,
                    what: "health".into(),
                    from: health_name(entry.dc.health).into(),
                    to: health_name(health).into(),
                    opinions: status.opinions.clone(),
                };
                let mut dc = (*entry.dc).clone();
                dc.health = health;
                let version = entry.version;
                // A verdict is not a change of definition: the version stays.
                self.datacenters.insert(
                    id.clone(),
                    DcEntry {
                        dc: Arc::new(dc),
                        version,
                    },
                );
                delta.datacenters.insert(id.clone());
                self.push_event(&id, event, delta);
            }
        }
    }

    fn change(
        &mut self,
        cmd: &Command,
        at_ms: u64,
        index: u64,
        delta: &mut Delta,
    ) -> Result<Response, Rejection> {
        match cmd {
            Command::PutDatacenter { dc, set_state } => {
                let mut dc = dc.clone();
                dc.validate()
                    .map_err(|e| Rejection::Invalid(e.to_string()))?;
                let existed = match self.datacenters.get(&dc.id) {
                    Some(old) => {
                        let old = old.dc.clone();
                        dc.state = set_state.unwrap_or(old.state);
                        dc.health = old.health;
                        if dc.state != old.state {
                            self.push_event(&dc.id, state_event(old.state, dc.state, at_ms), delta);
                        }
                        true
                    }
                    None => {
                        dc.state = set_state.unwrap_or(DcState::Active);
                        dc.health = Health::Unknown;
                        false
                    }
                };
                delta.datacenters.insert(dc.id.clone());
                self.datacenters.insert(
                    dc.id.clone(),
                    DcEntry {
                        dc: Arc::new(dc),
                        version: index,
                    },
                );
                Ok(if existed {
                    Response::Replaced
                } else {
                    Response::Created
                })
            }
            Command::PatchDatacenter { id, weight, state } => {
                let entry = self
                    .datacenters
                    .get(id)
                    .ok_or_else(|| Rejection::NotFound(format!("no datacenter {id:?}")))?;
                let mut dc = (*entry.dc).clone();
                if let Some(w) = weight {
                    dc.weight = *w;
                }
                if let Some(s) = state {
                    if dc.state != *s {
                        self.push_event(id, state_event(dc.state, *s, at_ms), delta);
                        dc.state = *s;
                    }
                }
                dc.validate()
                    .map_err(|e| Rejection::Invalid(e.to_string()))?;
                delta.datacenters.insert(id.clone());
                let dc = Arc::new(dc);
                self.datacenters.insert(
                    id.clone(),
                    DcEntry {
                        dc: dc.clone(),
                        version: index,
                    },
                );
                Ok(Response::Updated {
                    dc: Box::new((*dc).clone()),
                })
            }
            Command::DeleteDatacenter { id } => {
                if !self.datacenters.contains_key(id) {
                    return Err(Rejection::NotFound(format!("no datacenter {id:?}")));
                }
                if let Some((zone, name)) = self.users.get(id).and_then(|s| s.get_min()) {
                    return Err(Rejection::Conflict(format!(
                        "datacenter {id:?} is used by service {name} in {zone}"
                    )));
                }
                self.datacenters.remove(id);
                self.users.remove(id);
                if self.status.remove(id).is_some() {
                    delta.statuses.insert(id.clone());
                }
                delta.datacenters.insert(id.clone());
                Ok(Response::Deleted)
            }
            Command::PutZone { origin, text } => {
                let key = ZoneName::parse(origin)?;
                let file = parse_text(&key, text)?;
                // The zone must still hold each of its services.
                for (name, _) in self.services_in(&key) {
                    let fqdn = service_fqdn(&key, name)?;
                    if let Some(what) = service_conflict(&file, &fqdn) {
                        return Err(Rejection::Invalid(format!(
                            "zone {key}: service {name} conflicts with {what} in the new text"
                        )));
                    }
                }
                let existed = self
                    .zones
                    .insert(
                        key.clone(),
                        Arc::new(ZoneEntry {
                            text: text.as_str().into(),
                            file: Arc::new(file),
                            version: index,
                        }),
                    )
                    .is_some();
                delta.zones.insert(key);
                Ok(if existed {
                    Response::Replaced
                } else {
                    Response::Created
                })
            }
            Command::DeleteZone { origin } => {
                let key = ZoneName::parse(origin)?;
                if !self.zones.contains_key(&key) {
                    return Err(Rejection::NotFound(format!("no zone {key}")));
                }
                if let Some(name) = self.services_in(&key).next().map(|(n, _)| n) {
                    return Err(Rejection::Conflict(format!(
                        "zone {key} still has service {name}; delete its services first"
                    )));
                }
                self.zones.remove(&key);
                if self.zone_settings.remove(&key).is_some() {
                    delta.zone_settings.insert(key.clone());
                }
                if self.dnssec.remove(&key).is_some() {
                    delta.dnssec.insert(key.clone());
                }
                delta.zones.insert(key);
                Ok(Response::Deleted)
            }
            Command::PutService { service } => {
                let zone = ZoneName::parse(&service.zone)?;
                let name = ServiceName::parse(&zone, &service.name)?;
                let Some(entry) = self.zones.get(&zone) else {
                    return Err(Rejection::NotFound(format!("no zone {zone}")));
                };
                service
                    .validate(|id| self.datacenters.contains_key(id))
                    .map_err(|e| Rejection::Invalid(e.to_string()))?;
                if service.datacenters.len() > crate::policy::MAX_SERVICE_DCS {
                    return Err(Rejection::Invalid(format!(
                        "service {name} in {zone}: more than {} datacenters",
                        crate::policy::MAX_SERVICE_DCS
                    )));
                }
                let fqdn = service_fqdn(&zone, &name)?;
                if let Some(what) = service_conflict(&entry.file, &fqdn) {
                    return Err(Rejection::Invalid(format!(
                        "service {name} in {zone} conflicts with {what} in the zone"
                    )));
                }
                let mut svc = service.clone();
                svc.zone = zone.to_string();
                svc.name = name.to_string();
                let existed = self.remove_service(&zone, &name).is_some();
                self.insert_service(
                    (zone.clone(), name.clone()),
                    ServiceEntry {
                        service: Arc::new(svc),
                        version: index,
                    },
                );
                delta.services.insert((zone, name));
                Ok(if existed {
                    Response::Replaced
                } else {
                    Response::Created
                })
            }
            Command::DeleteService { zone, name } => {
                let zone = ZoneName::parse(zone)?;
                let name = ServiceName::parse(&zone, name)?;
                match self.remove_service(&zone, &name) {
                    Some(_) => {
                        delta.services.insert((zone, name));
                        Ok(Response::Deleted)
                    }
                    None => Err(Rejection::NotFound(format!("no service {name} in {zone}"))),
                }
            }
            Command::Import {
                zones,
                datacenters,
                services,
                tsig_keys,
                zone_settings,
            } => {
                if !self.is_empty() {
                    return Ok(Response::Noop);
                }
                for key in tsig_keys {
                    let cmd = Command::PutTsigKey { key: key.clone() };
                    self.change(&cmd, at_ms, index, delta)?;
                }
                for (origin, text) in zones {
                    let cmd = Command::PutZone {
                        origin: origin.clone(),
                        text: text.clone(),
                    };
                    self.change(&cmd, at_ms, index, delta)?;
                }
                for dc in datacenters {
                    let cmd = Command::PutDatacenter {
                        dc: dc.clone(),
                        set_state: Some(dc.state),
                    };
                    self.change(&cmd, at_ms, index, delta)?;
                }
                for service in services {
                    let cmd = Command::PutService {
                        service: service.clone(),
                    };
                    self.change(&cmd, at_ms, index, delta)?;
                }
                for (origin, settings) in zone_settings {
                    let cmd = Command::PutZoneSettings {
                        origin: origin.clone(),
                        settings: settings.clone(),
                    };
                    self.change(&cmd, at_ms, index, delta)?;
                }
                Ok(Response::Imported)
            }
            Command::PutTsigKey { key } => {
                let name = KeyName::parse(&key.name)?;
                if key.secret.is_empty() {
                    return Err(Rejection::Invalid(format!("TSIG key {name}: empty secret")));
                }
                let mut key = key.clone();
                key.name = name.to_string();
                let existed = self
                    .tsig_keys
                    .insert(
                        name.clone(),
                        TsigEntry {
                            key: Arc::new(key),
                            version: index,
                        },
                    )
                    .is_some();
                delta.tsig_keys.insert(name);
                Ok(if existed {
                    Response::Replaced
                } else {
                    Response::Created
                })
            }
            Command::DeleteTsigKey { name } => {
                let name = KeyName::parse(name)?;
                if !self.tsig_keys.contains_key(&name) {
                    return Err(Rejection::NotFound(format!("no TSIG key {name:?}")));
                }
                if let Some((zone, _)) = self
                    .zone_settings
                    .iter()
                    .find(|(_, s)| s.settings.keys().any(|k| k == name.as_str()))
                {
                    return Err(Rejection::Conflict(format!(
                        "TSIG key {name:?} is used by the settings of zone {zone}"
                    )));
                }
                self.tsig_keys.remove(&name);
                delta.tsig_keys.insert(name);
                Ok(Response::Deleted)
            }
            Command::PutZoneSettings { origin, settings } => {
                let key = ZoneName::parse(origin)?;
                if !self.zones.contains_key(&key) {
                    return Err(Rejection::NotFound(format!("no zone {key}")));
                }
                let settings = settings
                    .normalised(|k| self.tsig_keys.contains_key(k))
                    .map_err(Rejection::Invalid)?;
                let existed = self
                    .zone_settings
                    .insert(
                        key.clone(),
                        SettingsEntry {
                            settings: Arc::new(settings),
                            version: index,
                        },
                    )
                    .is_some();
                delta.zone_settings.insert(key);
                Ok(if existed {
                    Response::Replaced
                } else {
                    Response::Created
                })
            }
            Command::PutDnssec { origin, keys } => {
                self.put_dnssec(ZoneName::parse(origin)?, keys, index, delta)
            }
            Command::DeleteDnssec { origin } => self.delete_dnssec(ZoneName::parse(origin)?, delta),
            Command::Rollover { origin, role, key } => {
                let origin = ZoneName::parse(origin)?;
                self.rollover(&origin, *role, key, at_ms, index, delta)
            }
            Command::RolloverStep {
                origin,
                version,
                step,
            } => {
                let origin = ZoneName::parse(origin)?;
                self.rollover_step(&origin, *version, *step, at_ms, index, delta)
            }
            Command::DsSeen { origin } => self.ds_seen(&ZoneName::parse(origin)?, index, delta),
            Command::HealthReport { .. } => Ok(Response::Noop), // handled in apply()
            // Openraft's membership entry made the change; this one is its history.
            Command::MemberAdded { .. } | Command::MemberRemoved { .. } => Ok(Response::Noop),
            Command::SetFormat { format } => {
                if *format > self.format.0 {
                    self.format = ClusterFormat(*format);
                    delta.format = true;
                }
                Ok(Response::Noop)
            }
            Command::Rollback { to } => self.rollback(*to, at_ms, index, delta),
            Command::DnsUpdate {
                zone,
                key,
                prereqs,
                updates,
                ..
            } => Ok(self.dns_update(zone, key, prereqs, updates, index, delta)),
            Command::RotateCookieSecret { secret } => {
                let previous = self.cookies.as_ref().map(|c| c.current);
                self.cookies = Some(Arc::new(CookieSecrets {
                    current: secret.0,
                    previous,
                }));
                delta.cookies = true;
                Ok(if previous.is_some() {
                    Response::Replaced
                } else {
                    Response::Created
                })
            }
        }
    }

    /// Remove a service and its reverse-index entries.
    fn remove_service(&mut self, zone: &ZoneName, name: &ServiceName) -> Option<ServiceEntry> {
        let mut in_zone = self.services.get(zone)?.clone();
        let old = in_zone.remove(name)?;
        if in_zone.is_empty() {
            self.services.remove(zone);
        } else {
            self.services.insert(zone.clone(), in_zone);
        }
        let key = (zone.clone(), name.clone());
        for dc in named_dcs(&old.service) {
            if let Some(set) = self.users.get(dc) {
                let mut set = set.clone();
                set.remove(&key);
                if set.is_empty() {
                    self.users.remove(dc);
                } else {
                    self.users.insert(dc.clone(), set);
                }
            }
        }
        Some(old)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::command::CookieSecret;
    use crate::model::{Health, PolicyKind};

    const ZONE: &str =
        "$TTL 300\n@ IN SOA ns1 h 1 2 3 4 5\n@ IN NS ns1\nns1 IN A 192.0.2.1\nold IN CNAME ns1\nsub IN NS ns.elsewhere.\n";

    fn dc(id: &str) -> Datacenter {
        crate::model::fixtures::datacenter(id, 1.0, 2.0, "192.0.2.9")
    }

    fn svc(name: &str, dcs: &[&str]) -> Service {
        crate::model::fixtures::service("Example.COM", name, PolicyKind::GeoNearest, dcs)
    }

    fn ap(s: &mut State, cmd: &Command, at_ms: u64) -> Response {
        s.apply(cmd, None, at_ms, 1).0
    }

    fn base() -> State {
        let mut s = State::default();
        let zone = Command::PutZone {
            origin: "example.com".into(),
            text: ZONE.into(),
        };
        assert_eq!(ap(&mut s, &zone, 0), Response::Created);
        let put = Command::PutDatacenter {
            dc: dc("lon"),
            set_state: None,
        };
        assert_eq!(ap(&mut s, &put, 0), Response::Created);
        s
    }

    #[test]
    fn put_replaces_without_undoing_a_drain() {
        let mut s = base();
        let r = ap(
            &mut s,
            &Command::PatchDatacenter {
                id: "lon".into(),
                weight: None,
                state: Some(DcState::Drained),
            },
            0,
        );
        assert!(matches!(r, Response::Updated { .. }));
        let r = ap(
            &mut s,
            &Command::PutDatacenter {
                dc: dc("lon"),
                set_state: None,
            },
            0,
        );
        assert_eq!(r, Response::Replaced);
        assert_eq!(s.datacenter("lon").expect("lon").dc.state, DcState::Drained);
    }

    #[test]
    fn rejected_commands_change_nothing() {
        let mut s = base();
        let r = ap(
            &mut s,
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
        for bad in ["old", "OLD.example.com.", "x.sub", "ns1"] {
            let r = ap(
                &mut s,
                &Command::PutService {
                    service: svc(bad, &["lon"]),
                },
                0,
            );
            assert!(matches!(r, Response::Rejected { .. }), "{bad}: {r:?}");
        }
        assert_eq!(s.services().count(), 0);
        let r = ap(
            &mut s,
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
        assert_eq!(&*s.zone("example.com.").expect("zone").text, ZONE);
    }

    #[test]
    fn a_zone_text_that_would_clash_with_a_service_is_refused() {
        let mut s = base();
        let put = Command::PutService {
            service: svc("www", &["lon"]),
        };
        assert_eq!(ap(&mut s, &put, 0), Response::Created);
        let clash = format!("{ZONE}www IN CNAME ns1\n");
        let r = ap(
            &mut s,
            &Command::PutZone {
                origin: "example.com.".into(),
                text: clash,
            },
            0,
        );
        assert!(matches!(r, Response::Rejected { .. }), "{r:?}");
    }

    #[test]
    fn datacenter_in_use_cannot_be_deleted() {
        let mut s = base();
        let put = Command::PutService {
            service: svc("www", &["lon"]),
        };
        assert_eq!(ap(&mut s, &put, 0), Response::Created);
        assert!(s.service("example.com.", "www").is_some());
        let r = ap(&mut s, &Command::DeleteDatacenter { id: "lon".into() }, 0);
        assert!(matches!(
            r,
            Response::Rejected {
                why: Rejection::Conflict(_)
            }
        ));
        let r = ap(
            &mut s,
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
        let del = Command::DeleteService {
            zone: "example.com".into(),
            name: "WWW".into(),
        };
        assert_eq!(ap(&mut s, &del, 0), Response::Deleted);
        assert_eq!(
            ap(&mut s, &Command::DeleteDatacenter { id: "lon".into() }, 0),
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
            tsig_keys: vec![],
            zone_settings: vec![],
        };
        assert!(matches!(ap(&mut s, &bad, 0), Response::Rejected { .. }));
        assert!(s.is_empty());
        let good = Command::Import {
            zones: vec![("example.com".into(), ZONE.into())],
            datacenters: vec![dc("lon")],
            services: vec![svc("www", &["lon"])],
            tsig_keys: vec![],
            zone_settings: vec![],
        };
        assert_eq!(ap(&mut s, &good, 0), Response::Imported);
        assert_eq!(ap(&mut s, &good, 0), Response::Noop);
    }

    #[test]
    fn health_is_the_majority_of_fresh_opinions() {
        let mut s = base();
        let h = |s: &State| s.datacenter("lon").expect("lon").dc.health;
        assert_eq!(h(&s), Health::Unknown);
        let report = |node, up| Command::HealthReport {
            node,
            dc: "lon".into(),
            up,
            reason: String::new(),
        };
        ap(&mut s, &report(1, true), 1_000);
        ap(&mut s, &report(2, true), 1_000);
        let (_, delta) = s.apply(&report(3, false), None, 1_000, 9);
        assert!(
            !delta.changes_answers(),
            "an opinion that changes no verdict publishes nothing: {delta:?}"
        );
        assert_eq!(h(&s), Health::Healthy, "one node alone cannot drain a site");
        let (_, delta) = s.apply(&report(2, false), None, 2_000, 10);
        assert!(delta.datacenters.contains("lon"));
        assert_eq!(h(&s), Health::Unhealthy);
        // node 3's and 2's opinions age out; node 1 keeps re-affirming up
        ap(&mut s, &report(1, true), 2_000 + OPINION_FRESH_MS);
        assert_eq!(h(&s), Health::Healthy);
        let events = &s.status("lon").events;
        assert_eq!(events.len(), 3, "{events:?}");
        assert_eq!(events[1].to, "unhealthy");
        assert_eq!(events[1].opinions.len(), 3);
        // a report about an unknown datacenter is a rejection, not an error
        let r = ap(
            &mut s,
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
    fn only_voters_opinions_count_and_a_removed_voter_s_go() {
        let mut s = base();
        s.change(
            &Command::SetFormat { format: 4 },
            0,
            2,
            &mut Delta::default(),
        )
        .expect("format 4");
        // A second site, so that lon's verdict shows in a transfer (with lon alone out, a
        // service would fail open to lon's address anyway).
        let par = Command::PutDatacenter {
            dc: crate::model::fixtures::datacenter("par", 48.9, 2.3, "192.0.2.10"),
            set_state: None,
        };
        assert_eq!(ap(&mut s, &par, 0), Response::Created);
        let service = svc("www", &["lon", "par"]);
        assert_eq!(
            ap(&mut s, &Command::PutService { service }, 0),
            Response::Created
        );
        let h = |s: &State| s.datacenter("lon").expect("lon").dc.health;
        let report = |node, up| Command::HealthReport {
            node,
            dc: "lon".into(),
            up,
            reason: String::new(),
        };
        s.set_voters([1, 2, 3].into(), &mut Delta::default());
        // Forged ids (not voters) are refused, however many.
        for node in 101..=103 {
            let r = ap(&mut s, &report(node, false), 1_000);
            assert!(matches!(r, Response::Rejected { .. }), "{r:?}");
        }
        assert_eq!(h(&s), Health::Unknown);
        ap(&mut s, &report(1, true), 1_000);
        ap(&mut s, &report(2, false), 1_000);
        ap(&mut s, &report(3, false), 1_000);
        assert_eq!(h(&s), Health::Unhealthy);
        // Nodes 2 and 3 leave the voters: their opinions go, the verdict follows at once,
        // and so does the serial of a zone whose transfer shows lon's address again.
        let zone = ZoneName::parse("example.com").expect("zone");
        let serial = s.serial(&zone);
        let mut delta = Delta::default();
        s.set_voters([1, 4, 5].into(), &mut delta);
        assert!(delta.datacenters.contains("lon"), "{delta:?}");
        assert_eq!(s.status("lon").opinions.keys().collect::<Vec<_>>(), [&1]);
        assert_eq!(h(&s), Health::Healthy);
        assert!(s.is_voter(4) && !s.is_voter(2));
        assert!(
            delta.serials.contains(&zone) && s.serial(&zone) != serial,
            "{delta:?}"
        );
    }

    #[test]
    fn a_cookie_secret_rotation_keeps_the_current_one_as_previous() {
        let mut s = base();
        assert!(s.cookie_secrets().is_none());
        let first = CookieSecret([1; 16]);
        let (r, delta) = s.apply(&Command::RotateCookieSecret { secret: first }, None, 1, 20);
        assert_eq!(r, Response::Created);
        assert!(delta.cookies && delta.changes_answers());
        let second = CookieSecret([2; 16]);
        let (r, _) = s.apply(&Command::RotateCookieSecret { secret: second }, None, 2, 21);
        assert_eq!(r, Response::Replaced);
        let c = s.cookie_secrets().expect("secrets");
        assert_eq!((c.current, c.previous), ([2; 16], Some([1; 16])));
        // In the log as hex, never in a Debug line.
        let json =
            serde_json::to_string(&Command::RotateCookieSecret { secret: second }).expect("json");
        assert!(json.contains(&"02".repeat(16)), "{json}");
        assert!(!format!("{second:?}").contains("02"));
        let back: Command = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, Command::RotateCookieSecret { secret: second });
        assert!(
            serde_json::from_str::<Command>(r#"{"op":"rotate_cookie_secret","secret":"zz"}"#)
                .is_err()
        );
    }

    #[test]
    fn a_request_id_applies_once_and_answers_the_first_result_again() {
        let mut s = base();
        let put = Command::PutService {
            service: svc("www", &["lon"]),
        };
        let (first, d1) = s.apply(&put, Some("req-1"), 10, 5);
        assert_eq!(first, Response::Created);
        assert!(d1.services.contains(&("example.com.".into(), "www".into())));
        let (again, d2) = s.apply(&put, Some("req-1"), 11, 6);
        assert_eq!(again, Response::Created, "the first result, not Replaced");
        assert!(!d2.changes_answers());
        assert_eq!(s.service("example.com.", "www").expect("www").version, 5);
        // a day later the record is gone and the same id applies again
        let (later, _) = s.apply(&put, Some("req-1"), 11 + REQUEST_TTL_MS + 1, 7);
        assert_eq!(later, Response::Replaced);
    }

    #[test]
    fn a_command_touches_only_what_it_names() {
        let mut s = base();
        let (_, d) = s.apply(
            &Command::PatchDatacenter {
                id: "lon".into(),
                weight: Some(5),
                state: None,
            },
            None,
            0,
            3,
        );
        assert_eq!(d.datacenters, BTreeSet::from(["lon".to_string()]));
        assert!(d.zones.is_empty() && d.services.is_empty());
        assert_eq!(s.datacenter("lon").expect("lon").version, 3);
    }

    /// A zone's serial moves when what a transfer of it sends changes, and only then: a
    /// weight between non-zero values is in no transfer (and looks at no zone), a weight
    /// of 0 takes a weighted service's addresses out, a drain every service's.
    #[test]
    fn only_a_change_a_transfer_shows_moves_the_serials_of_a_datacenters_zones() {
        let mut s = base();
        // Two sites: with lon out, a weighted service answers par's address alone (with
        // none left it would fail open to every site's, lon's too).
        let par = Command::PutDatacenter {
            dc: crate::model::fixtures::datacenter("par", 48.9, 2.3, "192.0.2.10"),
            set_state: None,
        };
        assert_eq!(ap(&mut s, &par, 0), Response::Created);
        let mut weighted = svc("w", &["lon", "par"]);
        weighted.policy = PolicyKind::Weighted;
        for service in [svc("www", &["lon"]), weighted] {
            assert_eq!(
                ap(&mut s, &Command::PutService { service }, 0),
                Response::Created
            );
        }
        let zone = ZoneName::parse("example.com").expect("zone");
        let mut index = 10;
        let mut patch = |s: &mut State, weight: Option<u16>, state: Option<DcState>| {
            index += 1;
            let cmd = Command::PatchDatacenter {
                id: "lon".into(),
                weight,
                state,
            };
            let before = s.serial(&zone);
            let (r, d) = s.apply(&cmd, None, 0, index);
            assert!(!matches!(r, Response::Rejected { .. }), "{r:?}");
            let moved = d.serials.contains(&zone);
            assert_eq!(
                moved,
                s.serial(&zone) != before,
                "the delta names what moved"
            );
            moved
        };
        assert!(!patch(&mut s, Some(7), None), "a weight moved the serial");
        assert!(!patch(&mut s, Some(900), None), "a weight moved the serial");
        assert!(
            patch(&mut s, Some(0), None),
            "weight 0 left the weighted service's addresses"
        );
        assert!(patch(&mut s, Some(3), None), "back from 0");
        assert!(patch(&mut s, None, Some(DcState::Drained)), "a drain");
        assert!(!patch(&mut s, Some(4), None), "a weight while drained");
        assert!(
            patch(&mut s, None, Some(DcState::Active)),
            "back from the drain"
        );
    }
}
