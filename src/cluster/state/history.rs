//! History and rollback: every committed change to the routing state (datacenters, zones,
//! services) and to zone settings, TSIG keys and the cookie secret, with who made it, kept in
//! the replicated state itself — so every node has the same history, whatever Raft compacts.
//!
//! An entry keeps only what it needs to be undone: each changed object's value *before* the
//! change. A zone's is a line patch from its text after the change back to its text before
//! (a one-record change costs one line, not the zone twice). "After" is never stored: it is
//! the next change's "before", or the current value.
//!
//! TSIG keys, zone settings and DNSSEC keys have their value before kept too, as the API
//! shows them (a key without its secret, DNSSEC keys as their public DNSKEY and DS), so that
//! an entry shows them before and after; they are never put back.
//!
//! A rollback to entry N is one command: it walks the entries after N newest first, takes
//! each object's value before the earliest of them, and puts those back. It never touches
//! health, TSIG keys, zone settings or DNSSEC keys, and it is itself an entry (undoable).
//!
//! Every object a change names is a [`Target`], written (`datacenter/lon`) and read back in
//! one place.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::dnssec::DnssecPublic;
use super::{Delta, State};
use crate::cluster::command::{Command, Rejection, Response};
use crate::cluster::types::Request;
use crate::model::{Datacenter, Health, Service};
use crate::name::{KeyName, NameError, ServiceName, ZoneName};
use crate::zoneconf::{TsigAlgorithm, TsigKey, ZoneSettings};

/// History entries kept (health opinions and verdicts are not entries).
pub const MAX_HISTORY: usize = 10_000;

/// One line edit of a [`ZonePatch`]: at line `at` of the text it applies to, remove
/// `delete` lines and put `insert` there.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Edit {
    pub at: usize,
    pub delete: usize,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub insert: Vec<String>,
}

/// How to get a zone's text before a change from its text after it (an absent zone's text
/// is empty).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZonePatch {
    pub edits: Vec<Edit>,
}

impl ZonePatch {
    /// The patch that turns `after` into `before`.
    pub fn between(after: &str, before: &str) -> ZonePatch {
        if before.is_empty() {
            // A new zone: delete every line (what the diff would say, without diffing a
            // million lines against nothing).
            let lines = after.split_inclusive('\n').count();
            let edits = (lines > 0)
                .then_some(Edit {
                    at: 0,
                    delete: lines,
                    insert: Vec::new(),
                })
                .into_iter()
                .collect();
            return ZonePatch { edits };
        }
        // A deadline bounds the work on a huge zone rewritten whole; the diff is then less
        // minimal but still exact, and each node's patch, whichever, rebuilds the same text.
        let diff = similar::TextDiff::configure()
            .deadline(std::time::Instant::now() + std::time::Duration::from_secs(2))
            .diff_lines(after, before);
        let mut edits = Vec::new();
        for op in diff.ops() {
            let (tag, old, new) = op.as_tag_tuple();
            if tag == similar::DiffTag::Equal {
                continue;
            }
            edits.push(Edit {
                at: old.start,
                delete: old.len(),
                insert: diff.new_slices()[new]
                    .iter()
                    .map(|l| l.to_string())
                    .collect(),
            });
        }
        ZonePatch { edits }
    }

    /// `after` with the patch applied: the text before.
    pub fn apply(&self, after: &str) -> String {
        let lines: Vec<&str> = after.split_inclusive('\n').collect();
        let mut out = String::with_capacity(after.len());
        let mut next = 0;
        for e in &self.edits {
            let at = e.at.min(lines.len());
            for l in &lines[next.min(at)..at] {
                out.push_str(l);
            }
            for l in &e.insert {
                out.push_str(l);
            }
            next = (at + e.delete).min(lines.len()).max(next);
        }
        for l in &lines[next.min(lines.len())..] {
            out.push_str(l);
        }
        out
    }

    /// Lines removed and added by the change this patch undoes.
    fn counts(&self) -> (usize, usize) {
        let added = self.edits.iter().map(|e| e.delete).sum();
        let removed = self.edits.iter().map(|e| e.insert.len()).sum();
        (added, removed)
    }
}

/// An object's value before a change (`None`: it did not exist).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Prior {
    /// A datacenter's definition with its drain state (its health is not history).
    Datacenter {
        dc: Option<Arc<Datacenter>>,
    },
    /// `existed`: whether the zone existed; `patch` turns the text after into the text
    /// before.
    Zone {
        existed: bool,
        patch: ZonePatch,
    },
    Service {
        service: Option<Arc<Service>>,
    },
    /// A TSIG key as the API shows it (never its secret). Shown, never rolled back.
    TsigKey {
        key: Option<TsigShown>,
    },
    /// A zone's settings. Shown, never rolled back.
    ZoneSettings {
        settings: Option<Arc<ZoneSettings>>,
    },
    /// A zone's DNSSEC keys in their public forms (never a private key). Shown, never
    /// rolled back.
    Dnssec {
        keys: Option<Arc<DnssecPublic>>,
    },
}

/// The cluster format from which history keeps TSIG keys, zone settings and DNSSEC keys
/// before a change ([`Prior::TsigKey`], [`Prior::ZoneSettings`], [`Prior::Dnssec`]).
const SHOWN_PRIOR_FORMAT: u32 = 3;

impl Prior {
    /// Whether members of the first cluster format read this kind.
    fn kept_by_older_formats(&self) -> bool {
        match self {
            Prior::Datacenter { .. } | Prior::Zone { .. } | Prior::Service { .. } => true,
            Prior::TsigKey { .. } | Prior::ZoneSettings { .. } | Prior::Dnssec { .. } => false,
        }
    }
}

/// A TSIG key as the API shows it: its name and algorithm, never its secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TsigShown {
    pub name: String,
    pub algorithm: TsigAlgorithm,
}

/// One committed change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub index: u64,
    pub at_ms: u64,
    pub actor: String,
    pub kind: String,
    /// `datacenter/lon`, `zone/example.com.`, `service/example.com./www`, …; none for a
    /// rollback.
    pub target: Option<Target>,
    pub summary: String,
    /// Each changed object (by target) and its value before.
    #[serde(default)]
    pub undo: Vec<(Target, Prior)>,
}

/// An object's value at some point, as the API shows it.
#[derive(Clone, Debug, PartialEq)]
pub enum Shown {
    Datacenter(Arc<Datacenter>),
    Zone(String),
    Service(Arc<Service>),
    TsigKey(TsigShown),
    ZoneSettings(Arc<ZoneSettings>),
    Dnssec(Arc<DnssecPublic>),
}

/// What a change names, in canonical form: the one place its text (`datacenter/lon`,
/// `zone/example.com.`, `service/example.com./www`, `tsig/NAME`, `settings/ORIGIN`,
/// `dnssec/ORIGIN`, `member/ID`) is written and read back. Serialized as that text, so
/// history entries and preconditions keep the form they always had. Read back, its names
/// are parsed (canonicalised) rather than held to their canonical text: a precondition is
/// in the log, which must read whatever was written (every binary wrote them canonical
/// anyway), and no store key is named after a target. Only what is no name is refused.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Target {
    Datacenter(String),
    Zone(ZoneName),
    Service(ZoneName, ServiceName),
    Tsig(KeyName),
    Settings(ZoneName),
    Dnssec(ZoneName),
    /// A cluster member (history of `add_member` / `remove_member`).
    Member(u64),
}

impl Target {
    /// Whether a rollback puts it back: datacenters, zones and services.
    pub fn is_routing(&self) -> bool {
        matches!(
            self,
            Target::Datacenter(_) | Target::Zone(_) | Target::Service(..)
        )
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Datacenter(id) => write!(f, "datacenter/{id}"),
            Target::Zone(origin) => write!(f, "zone/{origin}"),
            Target::Service(zone, name) => write!(f, "service/{zone}/{name}"),
            Target::Tsig(name) => write!(f, "tsig/{name}"),
            Target::Settings(origin) => write!(f, "settings/{origin}"),
            Target::Dnssec(origin) => write!(f, "dnssec/{origin}"),
            Target::Member(id) => write!(f, "member/{id}"),
        }
    }
}

impl std::str::FromStr for Target {
    type Err = String;
    fn from_str(text: &str) -> Result<Target, String> {
        let bad = || format!("{text:?} is not a target (kind/name)");
        let named = |e: NameError| format!("{text:?} is not a target: {e}");
        let (kind, rest) = text.split_once('/').ok_or_else(bad)?;
        let zone = |z: &str| ZoneName::parse(z).map_err(named);
        Ok(match kind {
            "datacenter" => Target::Datacenter(rest.to_string()),
            "zone" => Target::Zone(zone(rest)?),
            "service" => {
                let (z, name) = rest.rsplit_once('/').ok_or_else(bad)?;
                let z = zone(z)?;
                let name = ServiceName::parse(&z, name).map_err(named)?;
                Target::Service(z, name)
            }
            "tsig" => Target::Tsig(KeyName::parse(rest).map_err(named)?),
            "settings" => Target::Settings(zone(rest)?),
            "dnssec" => Target::Dnssec(zone(rest)?),
            "member" => Target::Member(rest.parse().map_err(|_| bad())?),
            _ => return Err(bad()),
        })
    }
}

impl From<Target> for String {
    fn from(t: Target) -> String {
        t.to_string()
    }
}

impl TryFrom<String> for Target {
    type Error = String;
    fn try_from(text: String) -> Result<Target, String> {
        text.parse()
    }
}

/// A TSIG key as the API shows it.
fn tsig_shown(key: &TsigKey) -> TsigShown {
    TsigShown {
        name: key.name.clone(),
        algorithm: key.algorithm,
    }
}

/// A datacenter as history keeps it: its health left out (always unknown).
fn definition(dc: &Datacenter) -> Arc<Datacenter> {
    let mut d = dc.clone();
    d.health = Health::Unknown;
    Arc::new(d)
}

/// The history kind of a command; `None`: not an entry (health, the bootstrap import).
fn kind_of(cmd: &Command) -> Option<&'static str> {
    match cmd {
        Command::HealthReport { .. } | Command::Import { .. } | Command::SetFormat { .. } => None,
        // The automatic steps of a roll are rollover entries too (actor `system`).
        Command::RolloverStep { .. } => Some("rollover"),
        other => Some(other.name()),
    }
}

/// The target a command names, for the entry's `target` and for `If-Match`; none when its
/// names are not names (the command is refused when applied).
pub fn target_of(cmd: &Command) -> Option<Target> {
    let zone = |origin: &str| ZoneName::parse(origin).ok();
    match cmd {
        Command::PutDatacenter { dc, .. } => Some(Target::Datacenter(dc.id.clone())),
        Command::PatchDatacenter { id, .. } | Command::DeleteDatacenter { id } => {
            Some(Target::Datacenter(id.clone()))
        }
        Command::PutZone { origin, .. }
        | Command::DeleteZone { origin }
        | Command::DnsUpdate { zone: origin, .. } => zone(origin).map(Target::Zone),
        Command::PutService { service } => {
            let zone = zone(&service.zone)?;
            let name = ServiceName::parse(&zone, &service.name).ok()?;
            Some(Target::Service(zone, name))
        }
        Command::DeleteService { zone: z, name } => {
            let zone = zone(z)?;
            let name = ServiceName::parse(&zone, name).ok()?;
            Some(Target::Service(zone, name))
        }
        Command::PutTsigKey {
            key: TsigKey { name, .. },
        }
        | Command::DeleteTsigKey { name } => KeyName::parse(name).ok().map(Target::Tsig),
        Command::PutZoneSettings { origin, .. } => zone(origin).map(Target::Settings),
        Command::PutDnssec { origin, .. }
        | Command::DeleteDnssec { origin }
        | Command::Rollover { origin, .. }
        | Command::RolloverStep { origin, .. }
        | Command::DsSeen { origin } => zone(origin).map(Target::Dnssec),
        Command::MemberAdded { id, .. } | Command::MemberRemoved { id } => {
            Some(Target::Member(*id))
        }
        Command::HealthReport { .. }
        | Command::RotateCookieSecret { .. }
        | Command::Rollback { .. }
        | Command::Import { .. }
        | Command::SetFormat { .. } => None,
    }
}

impl State {
    /// The history entries, oldest first.
    pub fn history(&self) -> impl DoubleEndedIterator<Item = &Arc<HistoryEntry>> {
        self.history.values()
    }

    pub fn history_entry(&self, index: u64) -> Option<&Arc<HistoryEntry>> {
        self.history.get(&index)
    }

    /// Entries with an index below `before`, newest first, at most `limit`.
    pub fn history_before(&self, before: u64, limit: usize) -> Vec<Arc<HistoryEntry>> {
        self.history
            .range(..before)
            .rev()
            .take(limit)
            .map(|(_, e)| e.clone())
            .collect()
    }

    pub fn load_history(&mut self, entry: HistoryEntry) {
        self.history.insert(entry.index, Arc::new(entry));
    }

    /// Record what `req` (applied as entry `index`) changed, compared with `before`.
    pub(super) fn record(
        &mut self,
        before: &State,
        req: &Request,
        index: u64,
        response: &Response,
        delta: &mut Delta,
    ) {
        let (cmd, at_ms) = (&req.cmd, req.at_ms);
        let actor = match (cmd, req.actor.as_deref()) {
            // Entries written before an UPDATE's actor went with the request said `system`
            // there (and carried the actor in the command, which is now ignored).
            (Command::DnsUpdate { key, .. }, None | Some("system")) => {
                format!("dns-update:{key}")
            }
            (_, actor) => actor.unwrap_or("system").to_string(),
        };
        let Some(kind) = kind_of(cmd) else { return };
        // An UPDATE whose prerequisites failed changed nothing: not a change to list.
        if matches!(response, Response::DnsUpdate { rcode } if *rcode != 0) {
            return;
        }
        let mut undo = self.undo_since(before, delta);
        if self.format() < SHOWN_PRIOR_FORMAT {
            // A member of an older format could not read these kinds in a snapshot or its
            // store: until every member applies them, history keeps what it kept then.
            undo.retain(|(_, p)| p.kept_by_older_formats());
        }
        let target = target_of(cmd);
        let summary = summarize(cmd, response, target.as_ref(), &undo, before, self);
        self.history.insert(
            index,
            Arc::new(HistoryEntry {
                index,
                at_ms,
                actor,
                kind: kind.to_string(),
                target,
                summary,
                undo,
            }),
        );
        delta.history.insert(index);
        while self.history.len() > MAX_HISTORY {
            let Some((&oldest, _)) = self.history.iter().next() else {
                break;
            };
            self.history.remove(&oldest);
            delta.history.insert(oldest);
        }
    }

    /// Each object `delta` names whose value differs from `before`, with its value there
    /// (a health verdict alone is no change). Routing objects first, in the order a
    /// summary looks for them.
    fn undo_since(&self, before: &State, delta: &Delta) -> Vec<(Target, Prior)> {
        let mut undo = Vec::new();
        for id in &delta.datacenters {
            let old = before.datacenter(id).map(|e| definition(&e.dc));
            let new = self.datacenter(id).map(|e| definition(&e.dc));
            if old != new {
                undo.push((
                    Target::Datacenter(id.clone()),
                    Prior::Datacenter { dc: old },
                ));
            }
        }
        for origin in &delta.zones {
            let old = before.zone(origin).map(|z| z.text.clone());
            let new = self.zone(origin).map(|z| z.text.clone());
            if old != new {
                let patch =
                    ZonePatch::between(new.as_deref().unwrap_or(""), old.as_deref().unwrap_or(""));
                undo.push((
                    Target::Zone(origin.clone()),
                    Prior::Zone {
                        existed: old.is_some(),
                        patch,
                    },
                ));
            }
        }
        for (zone, name) in &delta.services {
            let old = before.service(zone, name).map(|s| s.service.clone());
            let new = self.service(zone, name).map(|s| s.service.clone());
            if old != new {
                undo.push((
                    Target::Service(zone.clone(), name.clone()),
                    Prior::Service { service: old },
                ));
            }
        }
        for name in &delta.tsig_keys {
            // Compared whole (a new secret is a change), kept without the secret.
            let old = before.tsig_key(name).map(|e| e.key.clone());
            if old != self.tsig_key(name).map(|e| e.key.clone()) {
                let key = old.map(|k| tsig_shown(&k));
                undo.push((Target::Tsig(name.clone()), Prior::TsigKey { key }));
            }
        }
        for origin in &delta.zone_settings {
            let old = before.zone_settings(origin).map(|e| e.settings.clone());
            if old != self.zone_settings(origin).map(|e| e.settings.clone()) {
                undo.push((
                    Target::Settings(origin.clone()),
                    Prior::ZoneSettings { settings: old },
                ));
            }
        }
        for origin in &delta.dnssec {
            let old = before.dnssec(origin);
            let new = self.dnssec(origin);
            if old.map(|e| &e.keys) != new.map(|e| &e.keys) {
                let keys = old.map(|e| Arc::new(e.public(origin)));
                undo.push((Target::Dnssec(origin.clone()), Prior::Dnssec { keys }));
            }
        }
        undo
    }

    /// An object as it is now.
    fn shown_now(&self, target: &Target) -> Option<Shown> {
        match target {
            Target::Datacenter(id) => self.datacenter(id).map(|e| Shown::Datacenter(e.dc.clone())),
            Target::Zone(origin) => self.zone(origin).map(|z| Shown::Zone(z.text.to_string())),
            Target::Service(zone, name) => self
                .service(zone, name)
                .map(|s| Shown::Service(s.service.clone())),
            Target::Tsig(name) => self
                .tsig_key(name)
                .map(|e| Shown::TsigKey(tsig_shown(&e.key))),
            Target::Settings(origin) => self
                .zone_settings(origin)
                .map(|e| Shown::ZoneSettings(e.settings.clone())),
            Target::Dnssec(origin) => self
                .dnssec(origin)
                .map(|e| Shown::Dnssec(Arc::new(e.public(origin)))),
            Target::Member(_) => None,
        }
    }

    /// What `target` was right after entry `index` (every later entry undone), or `None`
    /// when it did not exist then. Zones are rebuilt by patching the text back.
    pub fn shown_after(&self, target: &Target, index: u64) -> Option<Shown> {
        let mut value = self.shown_now(target);
        for entry in self.history.range(index + 1..).rev().map(|(_, e)| e) {
            for (t, prior) in &entry.undo {
                if t == target {
                    value = undo_one(value, prior);
                }
            }
        }
        value
    }

    /// What `target` was right before entry `index`.
    pub fn shown_before(&self, target: &Target, index: u64) -> Option<Shown> {
        let after = self.shown_after(target, index);
        let entry = self.history.get(&index)?;
        let mut value = after;
        for (t, prior) in &entry.undo {
            if t == target {
                value = undo_one(value, prior);
            }
        }
        value
    }

    /// Put every datacenter, zone and service back as it was right after entry `to`.
    pub(super) fn rollback(
        &mut self,
        to: u64,
        at_ms: u64,
        index: u64,
        delta: &mut Delta,
    ) -> Result<Response, Rejection> {
        if !self.history.contains_key(&to) {
            return Err(Rejection::NotFound(format!(
                "{to} is not the index of a retained history entry"
            )));
        }
        // Every routing target changed since, and its value right after `to`.
        let mut targets = BTreeSet::new();
        for (_, entry) in self.history.range(to + 1..) {
            targets.extend(
                entry
                    .undo
                    .iter()
                    .map(|(t, _)| t)
                    .filter(|t| t.is_routing())
                    .cloned(),
            );
        }
        let mut wanted: BTreeMap<Target, Option<Shown>> = BTreeMap::new();
        for t in targets {
            let then = self.shown_after(&t, to);
            let now = self.shown_now(&t);
            let same = match (&then, &now) {
                (Some(Shown::Datacenter(a)), Some(Shown::Datacenter(b))) => {
                    definition(a) == definition(b)
                }
                (a, b) => a == b,
            };
            if !same {
                wanted.insert(t, then);
            }
        }
        // In an order where nothing is named before it exists and no zone text clashes
        // with a service: datacenters put; every service that changes taken away; zones
        // deleted, then put; services put back; datacenters deleted. One command, so no
        // query sees the steps in between.
        #[derive(PartialEq)]
        enum Kind {
            Datacenter,
            Zone,
            Service,
        }
        let kind = |t: &Target| match t {
            Target::Datacenter(_) => Kind::Datacenter,
            Target::Zone(_) => Kind::Zone,
            _ => Kind::Service,
        };
        let steps: Vec<(&Target, &Option<Shown>)> = wanted.iter().collect();
        let mut plan: Vec<(Target, Option<Shown>)> = Vec::new();
        let mut add = |want_kind: Kind, puts: bool| {
            for (t, v) in &steps {
                if kind(t) == want_kind && v.is_some() == puts {
                    plan.push(((*t).clone(), (*v).clone()));
                }
            }
        };
        add(Kind::Datacenter, true);
        add(Kind::Service, false);
        add(Kind::Zone, false);
        add(Kind::Zone, true);
        add(Kind::Service, true);
        add(Kind::Datacenter, false);
        let mut remove_first: Vec<Target> = steps
            .iter()
            .filter(|(t, v)| kind(t) == Kind::Service && v.is_some())
            .filter(|(t, _)| self.shown_now(t).is_some())
            .map(|(t, _)| (*t).clone())
            .collect();
        // Services being put back are taken away first too (their zone may change under
        // them); the plan puts them back after the zones.
        let at = plan
            .iter()
            .position(|(t, _)| kind(t) != Kind::Datacenter)
            .unwrap_or(plan.len());
        for t in remove_first.drain(..).rev() {
            plan.insert(at, (t, None));
        }
        for (target, value) in plan {
            let cmd = match (value, &target) {
                (Some(Shown::Datacenter(dc)), _) => Command::PutDatacenter {
                    dc: (*dc).clone(),
                    set_state: Some(dc.state),
                },
                (Some(Shown::Zone(text)), Target::Zone(origin)) => Command::PutZone {
                    origin: origin.to_string(),
                    text,
                },
                (Some(Shown::Service(s)), _) => Command::PutService {
                    service: (*s).clone(),
                },
                (None, Target::Datacenter(id)) => Command::DeleteDatacenter { id: id.clone() },
                (None, Target::Zone(origin)) => Command::DeleteZone {
                    origin: origin.to_string(),
                },
                (None, Target::Service(zone, name)) => {
                    // A service already taken away by this rollback has nothing left to
                    // delete.
                    if self.service(zone, name).is_none() {
                        continue;
                    }
                    Command::DeleteService {
                        zone: zone.to_string(),
                        name: name.to_string(),
                    }
                }
                _ => continue,
            };
            self.change(&cmd, at_ms, index, delta)
                .map_err(|why| rollback_failed(&target, why))?;
        }
        Ok(Response::RolledBack {
            changed: wanted.into_keys().map(|t| t.to_string()).collect(),
        })
    }
}

fn rollback_failed(target: &Target, why: Rejection) -> Rejection {
    Rejection::Conflict(format!(
        "the rollback cannot put {target} back: {}",
        why.message()
    ))
}

/// A value with one change undone.
fn undo_one(value: Option<Shown>, prior: &Prior) -> Option<Shown> {
    match prior {
        Prior::Datacenter { dc } => dc.clone().map(Shown::Datacenter),
        Prior::Service { service } => service.clone().map(Shown::Service),
        Prior::TsigKey { key } => key.clone().map(Shown::TsigKey),
        Prior::ZoneSettings { settings } => settings.clone().map(Shown::ZoneSettings),
        Prior::Dnssec { keys } => keys.clone().map(Shown::Dnssec),
        Prior::Zone { existed, patch } => {
            let after = match &value {
                Some(Shown::Zone(t)) => t.as_str(),
                _ => "",
            };
            existed.then(|| Shown::Zone(patch.apply(after)))
        }
    }
}

/// One line saying what a change did.
fn summarize(
    cmd: &Command,
    response: &Response,
    target: Option<&Target>,
    undo: &[(Target, Prior)],
    before: &State,
    after: &State,
) -> String {
    match (cmd, response) {
        (Command::Rollover { .. } | Command::RolloverStep { .. } | Command::DsSeen { .. }, _) => {
            match target {
                Some(Target::Dnssec(origin)) => super::dnssec::summary(cmd, origin, before, after),
                _ => String::new(),
            }
        }
        (
            Command::MemberAdded {
                id, raft, voter, ..
            },
            _,
        ) => {
            let role = if *voter { "voter" } else { "learner" };
            format!("node {id} at {raft} added as a {role}")
        }
        (Command::MemberRemoved { id }, _) => format!("node {id} removed"),
        (Command::Rollback { to }, Response::RolledBack { changed }) => {
            format!("rolled back to {to}: {} changed", changed.len())
        }
        (Command::PatchDatacenter { id, .. }, _)
        | (
            Command::PutDatacenter {
                dc: Datacenter { id, .. },
                ..
            },
            _,
        ) => {
            let (Some(old), Some(new)) = (before.datacenter(id), after.datacenter(id)) else {
                return "created".into();
            };
            let mut parts = Vec::new();
            if old.dc.state != new.dc.state {
                parts.push(format!("state {:?} → {:?}", old.dc.state, new.dc.state).to_lowercase());
            }
            if old.dc.weight != new.dc.weight {
                parts.push(format!("weight {} → {}", old.dc.weight, new.dc.weight));
            }
            if parts.is_empty() && !undo.is_empty() {
                parts.push("definition changed".into());
            }
            if parts.is_empty() {
                "no change".into()
            } else {
                parts.join(", ")
            }
        }
        (Command::PutZone { .. }, _)
        | (Command::DeleteZone { .. }, _)
        | (Command::DnsUpdate { .. }, _) => match undo.first() {
            Some((_, Prior::Zone { existed, patch })) => {
                let (added, removed) = patch.counts();
                match (existed, matches!(cmd, Command::DeleteZone { .. })) {
                    (_, true) => "deleted".into(),
                    (false, _) => format!("created ({added} lines)"),
                    (true, _) => format!("+{added} −{removed} lines"),
                }
            }
            _ => "no change".into(),
        },
        (_, Response::Created) => "created".into(),
        (_, Response::Replaced) => {
            if undo.is_empty() && matches!(cmd, Command::PutService { .. }) {
                "no change".into()
            } else {
                "replaced".into()
            }
        }
        (_, Response::Deleted) => "deleted".into(),
        // A repeated PUT .../dnssec with the same algorithm and layout.
        (_, Response::Noop) => "no change".into(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::types::FORMAT_VERSION;
    use crate::model::PolicyKind;
    use std::collections::BTreeSet;

    const ZONE: &str = "$TTL 300\n@ IN SOA ns1 h 1 2 3 4 5\n@ IN NS ns1\nns1 IN A 192.0.2.1\n";

    #[test]
    fn a_rollback_puts_back_a_record_a_later_service_took_the_name_of_and_is_itself_undone() {
        let mut s = State::default();
        let mut index = 0;
        let mut ap = |s: &mut State, cmd: Command| {
            index += 1;
            let req = Request::new(cmd).by("ops");
            let (r, _) = s.apply_request(&req, index);
            assert!(!matches!(r, Response::Rejected { .. }), "{r:?}");
            index
        };
        ap(
            &mut s,
            Command::PutZone {
                origin: "example.com".into(),
                text: format!("{ZONE}api IN A 192.0.2.7\n"),
            },
        );
        let dc = crate::model::fixtures::datacenter("lon", 1.0, 2.0, "192.0.2.9");
        let weight = dc.weight;
        let point = ap(
            &mut s,
            Command::PutDatacenter {
                dc,
                set_state: None,
            },
        );
        // Later: the record goes, and a service takes its name; lon is drained.
        ap(
            &mut s,
            Command::PutZone {
                origin: "example.com".into(),
                text: ZONE.into(),
            },
        );
        let svc =
            crate::model::fixtures::service("example.com", "api", PolicyKind::GeoNearest, &["lon"]);
        ap(&mut s, Command::PutService { service: svc });
        ap(
            &mut s,
            Command::PatchDatacenter {
                id: "lon".into(),
                weight: Some(7),
                state: Some(crate::model::DcState::Drained),
            },
        );
        let rollback = ap(&mut s, Command::Rollback { to: point });
        let before_rollback = rollback - 1;
        assert!(s.service("example.com.", "api").is_none());
        assert!(s
            .zone("example.com.")
            .is_some_and(|z| z.text.contains("api IN A 192.0.2.7")));
        let lon = &s.datacenter("lon").expect("lon").dc;
        assert_eq!(
            (lon.weight, lon.state),
            (weight, crate::model::DcState::Active)
        );
        let entry = s.history_entry(rollback).expect("the rollback is an entry");
        assert_eq!(
            (entry.kind.as_str(), entry.target.as_ref()),
            ("rollback", None)
        );
        assert_eq!(entry.actor, "ops");
        // Undo the rollback: the service and the drain are back.
        ap(
            &mut s,
            Command::Rollback {
                to: before_rollback,
            },
        );
        assert!(s.service("example.com.", "api").is_some());
        assert!(!s
            .zone("example.com.")
            .is_some_and(|z| z.text.contains("192.0.2.7")));
        assert_eq!(
            s.datacenter("lon").expect("lon").dc.state,
            crate::model::DcState::Drained
        );
        // Before and after of the first zone change, rebuilt from the patches.
        let zone = Target::Zone("example.com.".into());
        let Some(Shown::Zone(after)) = s.shown_after(&zone, 1) else {
            panic!("no zone after entry 1");
        };
        assert!(after.contains("192.0.2.7"));
        assert_eq!(s.shown_before(&zone, 1), None);
    }

    #[test]
    fn an_update_entry_older_binaries_wrote_still_shows_its_key_as_actor() {
        let mut s = State::default();
        let zone = Command::PutZone {
            origin: "example.com".into(),
            text: ZONE.into(),
        };
        s.apply_request(&Request::new(zone).by("ops"), 1);
        let settings = Command::PutZoneSettings {
            origin: "example.com".into(),
            settings: Default::default(),
        };
        s.apply_request(&Request::new(settings).by("ops"), 2);
        // As entries were written before the actor went with the request: `system` there,
        // the real actor inside the command (now ignored).
        let old = r#"{"v":1,"at_ms":5,"actor":"system","cmd":{"op":"dns_update",
            "zone":"example.com.","key":"k1","actor":"dns-update:k1"}}"#;
        let req: Request = serde_json::from_str(old).expect("an old entry reads");
        let (r, _) = s.apply_request(&req, 3);
        assert_eq!(r, Response::DnsUpdate { rcode: 0 });
        let new = Command::DnsUpdate {
            zone: "example.com.".into(),
            key: "k2".into(),
            legacy_actor: "dns-update:k2".into(),
            prereqs: vec![],
            updates: vec![],
        };
        s.apply_request(&Request::new(new).by("dns-update:k2"), 4);
        let actors: Vec<&str> = s.history().map(|e| e.actor.as_str()).collect();
        assert_eq!(actors, ["ops", "ops", "dns-update:k1", "dns-update:k2"]);
    }

    #[test]
    fn a_target_is_written_and_read_back_in_one_form() {
        let all = [
            Target::Datacenter("lon".into()),
            Target::Zone("example.com.".into()),
            Target::Service("example.com.".into(), "www".into()),
            Target::Service("example.com.".into(), "@".into()),
            Target::Tsig("k1".into()),
            Target::Settings("example.com.".into()),
            Target::Dnssec("example.com.".into()),
            Target::Member(3),
        ];
        for t in all {
            let text = t.to_string();
            assert_eq!(text.parse::<Target>(), Ok(t.clone()), "{text}");
            let json = serde_json::to_string(&t).expect("json");
            assert_eq!(json, format!("{text:?}"));
            assert_eq!(serde_json::from_str::<Target>(&json).expect("back"), t);
        }
        assert_eq!(
            "service/example.com./www".parse::<Target>(),
            Ok(Target::Service("example.com.".into(), "www".into()))
        );
        for bad in ["", "zone", "nope/x", "member/x", "service/example.com."] {
            assert!(bad.parse::<Target>().is_err(), "{bad}");
        }
        // Read back canonicalised (a precondition is in the log, which must read), and
        // what is no name refused.
        for (given, want) in [
            ("zone/Example.com", "zone/example.com."),
            ("service/example.com./WWW", "service/example.com./www"),
            (
                "service/example.com./www.example.com.",
                "service/example.com./www",
            ),
            ("tsig/K1.", "tsig/k1"),
        ] {
            let t = given.parse::<Target>().expect(given);
            assert_eq!(t.to_string(), want);
        }
        for bad in [
            "settings/a..b.",
            "service/example.com./www.other.org.",
            "tsig/.",
        ] {
            let e = bad.parse::<Target>().expect_err(bad);
            assert!(e.contains("is not a target: "), "{bad}: {e}");
        }
    }

    /// Until every member applies format 3, history keeps only the before-kinds the first
    /// cluster format reads (an older member would fail on a snapshot or store holding the
    /// others), so every node of a mixed cluster records the same.
    #[test]
    fn a_cluster_of_the_first_format_keeps_only_the_kinds_older_members_read() {
        use crate::zone::dnssec::{Algorithm, Layout, ZoneKeys};
        use crate::zoneconf::{TsigAlgorithm, TsigKey};
        let mut s = State::default();
        assert_eq!(s.format(), crate::cluster::types::CLUSTER_FORMAT_START);
        let key = |secret: &[u8]| TsigKey {
            name: "k1".into(),
            algorithm: TsigAlgorithm::HmacSha256,
            secret: secret.to_vec(),
        };
        let keys = ZoneKeys::generate(Algorithm::EcdsaP256Sha256, Layout::Csk).expect("keys");
        let cmds = [
            Command::PutZone {
                origin: "example.com".into(),
                text: ZONE.into(),
            },
            Command::PutTsigKey { key: key(b"first") },
            Command::PutTsigKey {
                key: key(b"second"),
            },
            Command::PutZoneSettings {
                origin: "example.com".into(),
                settings: Default::default(),
            },
            Command::PutDnssec {
                origin: "example.com".into(),
                keys,
            },
            Command::DeleteDnssec {
                origin: "example.com".into(),
            },
            Command::PutZone {
                origin: "example.com".into(),
                text: ZONE.replace("192.0.2.1", "192.0.2.9"),
            },
        ];
        for (i, cmd) in cmds.into_iter().enumerate() {
            let (r, _) = s.apply_request(&Request::new(cmd).by("ops"), i as u64 + 1);
            assert!(!matches!(r, Response::Rejected { .. }), "{r:?}");
        }
        let mut kinds = BTreeSet::new();
        for e in s.history() {
            let json = serde_json::to_value(&**e).expect("json");
            for (_, prior) in json["undo"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|u| {
                    let pair = u.as_array()?;
                    Some((pair.first()?.clone(), pair.get(1)?.clone()))
                })
            {
                kinds.insert(prior["kind"].as_str().unwrap_or("?").to_string());
            }
        }
        // What the first cluster format's history knows, and nothing else.
        assert_eq!(kinds, BTreeSet::from(["zone".to_string()]), "{kinds:?}");
        // Raised, the same changes keep their before.
        let (r, _) = s.apply_request(
            &Request::new(Command::SetFormat {
                format: FORMAT_VERSION,
            }),
            8,
        );
        assert_eq!(r, Response::Noop);
        let (r, _) = s.apply_request(&Request::new(Command::PutTsigKey { key: key(b"third") }), 9);
        assert_eq!(r, Response::Replaced);
        let e = s.history_entry(9).expect("entry");
        assert!(
            matches!(e.undo.as_slice(), [(_, Prior::TsigKey { key: Some(_) })]),
            "{e:?}"
        );
        // The format never goes down.
        let (r, _) = s.apply_request(&Request::new(Command::SetFormat { format: 2 }), 10);
        assert_eq!(r, Response::Noop);
        assert_eq!(s.format(), FORMAT_VERSION);
    }

    #[test]
    fn tsig_keys_settings_and_dnssec_show_before_and_after_but_are_not_rolled_back() {
        use crate::zone::dnssec::{Algorithm, Layout, ZoneKeys};
        use crate::zoneconf::{TsigAlgorithm, TsigKey};
        let mut s = State::default();
        let mut index = 0;
        let mut ap = |s: &mut State, cmd: Command| {
            index += 1;
            let (r, _) = s.apply_request(&Request::new(cmd).by("ops"), index);
            assert!(!matches!(r, Response::Rejected { .. }), "{r:?}");
            index
        };
        // Every member applies these history kinds (see the next test for a cluster that
        // does not yet).
        let format = FORMAT_VERSION;
        ap(&mut s, Command::SetFormat { format });
        assert_eq!(s.format(), format);
        let key = |secret: &[u8]| TsigKey {
            name: "k1".into(),
            algorithm: TsigAlgorithm::HmacSha256,
            secret: secret.to_vec(),
        };
        let zone = ap(
            &mut s,
            Command::PutZone {
                origin: "example.com".into(),
                text: ZONE.into(),
            },
        );
        let put_key = ap(&mut s, Command::PutTsigKey { key: key(b"first") });
        let new_secret = ap(
            &mut s,
            Command::PutTsigKey {
                key: key(b"second"),
            },
        );
        let settings = crate::zoneconf::ZoneSettings {
            allow_transfer: vec!["key:k1".into()],
            ..Default::default()
        };
        let put_settings = ap(
            &mut s,
            Command::PutZoneSettings {
                origin: "example.com".into(),
                settings: settings.clone(),
            },
        );
        let keys = ZoneKeys::generate(Algorithm::EcdsaP256Sha256, Layout::Csk).expect("keys");
        let sign = ap(
            &mut s,
            Command::PutDnssec {
                origin: "example.com".into(),
                keys,
            },
        );
        let unsign = ap(
            &mut s,
            Command::DeleteDnssec {
                origin: "example.com".into(),
            },
        );
        let tsig = Target::Tsig("k1".into());
        let shown_key = Some(Shown::TsigKey(TsigShown {
            name: "k1".into(),
            algorithm: TsigAlgorithm::HmacSha256,
        }));
        assert_eq!(s.shown_before(&tsig, put_key), None);
        assert_eq!(s.shown_after(&tsig, put_key), shown_key);
        // A new secret is a change (an entry with its before), shown without the secret.
        let e = s.history_entry(new_secret).expect("entry");
        assert_eq!(e.undo.len(), 1);
        assert_eq!(s.shown_before(&tsig, new_secret), shown_key);
        let stored = serde_json::to_string(&**e).expect("json");
        assert!(!stored.contains("secret"), "{stored}");
        let set = Target::Settings("example.com.".into());
        assert_eq!(s.shown_before(&set, put_settings), None);
        assert!(
            matches!(s.shown_after(&set, put_settings), Some(Shown::ZoneSettings(x)) if *x == settings)
        );
        let dnssec = Target::Dnssec("example.com.".into());
        assert_eq!(s.shown_before(&dnssec, sign), None);
        let Some(Shown::Dnssec(public)) = s.shown_after(&dnssec, sign) else {
            panic!("no keys after {sign}");
        };
        assert_eq!((public.keys.len(), public.ds.len()), (1, 1));
        assert_eq!(s.shown_before(&dnssec, unsign), Some(Shown::Dnssec(public)));
        assert_eq!(s.shown_after(&dnssec, unsign), None);
        let stored = serde_json::to_string(&**s.history_entry(unsign).expect("e")).expect("j");
        assert!(!stored.contains("private"), "{stored}");
        // A rollback to the zone's creation leaves keys, settings and signing as they are.
        let (r, _) = s.apply_request(&Request::new(Command::Rollback { to: zone }), 99);
        assert_eq!(r, Response::RolledBack { changed: vec![] });
        assert!(s.tsig_key("k1").is_some() && s.zone_settings("example.com.").is_some());
    }

    #[test]
    fn a_patch_turns_the_text_after_into_the_text_before() {
        let cases = [
            ("a\nb\nc\n", "a\nB\nc\n"),
            ("", "a\nb\n"),
            ("a\nb\n", ""),
            ("x\n", "a\nx\nz\n"),
            ("a\nb\nc\nd\n", "b\nd\ne\n"),
            ("no newline", "no newline at all"),
        ];
        for (after, before) in cases {
            let p = ZonePatch::between(after, before);
            assert_eq!(p.apply(after), before, "{after:?} → {before:?}: {p:?}");
        }
        // A one-line change costs one line.
        let big: String = (0..1000)
            .map(|i| format!("r{i} IN A 192.0.2.1\n"))
            .collect();
        let changed = big.replace("r500 IN A", "r500 IN AAAA");
        let p = ZonePatch::between(&changed, &big);
        assert_eq!(p.edits.len(), 1);
        assert_eq!(p.edits[0].insert.len(), 1);
    }
}
