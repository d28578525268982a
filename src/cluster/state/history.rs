//! History and rollback: every committed change to the routing state (datacenters, zones,
//! services) and to zone settings, TSIG keys and the cookie secret, with who made it, kept in
//! the replicated state itself — so every node has the same history, whatever Raft compacts.
//!
//! An entry keeps only what it needs to be undone: each changed object's value *before* the
//! change. A zone's is a line patch from its text after the change back to its text before
//! (a one-record change costs one line, not the zone twice). "After" is never stored: it is
//! the next change's "before", or the current value.
//!
//! A rollback to entry N is one command: it walks the entries after N newest first, takes
//! each object's value before the earliest of them, and puts those back. It never touches
//! health, TSIG keys, zone settings or DNSSEC keys, and it is itself an entry (undoable).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{Delta, State};
use crate::cluster::command::{Command, Rejection, Response};
use crate::cluster::types::Request;
use crate::model::{Datacenter, Health, Service};

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
    pub target: Option<String>,
    pub summary: String,
    /// Each changed routing object (by target) and its value before.
    #[serde(default)]
    pub undo: Vec<(String, Prior)>,
}

/// An object's value at some point, as the API shows it.
#[derive(Clone, Debug, PartialEq)]
pub enum Shown {
    Datacenter(Arc<Datacenter>),
    Zone(String),
    Service(Arc<Service>),
}

pub fn datacenter_target(id: &str) -> String {
    format!("datacenter/{id}")
}
pub fn zone_target(origin: &str) -> String {
    format!("zone/{origin}")
}
pub fn service_target(zone: &str, name: &str) -> String {
    format!("service/{zone}/{name}")
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
        Command::HealthReport { .. } | Command::Import { .. } => None,
        // The automatic steps of a roll are rollover entries too (actor `system`).
        Command::RolloverStep { .. } => Some("rollover"),
        other => Some(other.name()),
    }
}

/// The target a command names, for the entry's `target` and for `If-Match`.
pub fn target_of(cmd: &Command) -> Option<String> {
    match cmd {
        Command::PutDatacenter { dc, .. } => Some(datacenter_target(&dc.id)),
        Command::PatchDatacenter { id, .. } | Command::DeleteDatacenter { id } => {
            Some(datacenter_target(id))
        }
        Command::PutZone { origin, .. } | Command::DeleteZone { origin } => {
            super::canonical_zone(origin).ok().map(|o| zone_target(&o))
        }
        Command::PutService { service } => {
            let zone = super::canonical_zone(&service.zone).ok()?;
            let name = super::canonical_service(&zone, &service.name).ok()?;
            Some(service_target(&zone, &name))
        }
        Command::DeleteService { zone, name } => {
            let zone = super::canonical_zone(zone).ok()?;
            let name = super::canonical_service(&zone, name).ok()?;
            Some(service_target(&zone, &name))
        }
        Command::PutTsigKey { key } => Some(format!("tsig/{}", key.name)),
        Command::DeleteTsigKey { name } => Some(format!("tsig/{name}")),
        Command::DnsUpdate { zone, .. } => {
            super::canonical_zone(zone).ok().map(|o| zone_target(&o))
        }
        Command::PutZoneSettings { origin, .. } => super::canonical_zone(origin)
            .ok()
            .map(|o| format!("settings/{o}")),
        Command::PutDnssec { origin, .. }
        | Command::DeleteDnssec { origin }
        | Command::Rollover { origin, .. }
        | Command::RolloverStep { origin, .. }
        | Command::DsSeen { origin } => super::canonical_zone(origin)
            .ok()
            .map(|o| format!("dnssec/{o}")),
        _ => None,
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
        let actor = match cmd {
            Command::DnsUpdate { actor, .. } => actor.as_str(),
            _ => req.actor.as_deref().unwrap_or("system"),
        };
        let Some(kind) = kind_of(cmd) else { return };
        // An UPDATE whose prerequisites failed changed nothing: not a change to list.
        if matches!(response, Response::DnsUpdate { rcode } if *rcode != 0) {
            return;
        }
        let undo = self.undo_since(before, delta);
        let target = target_of(cmd);
        let summary = summarize(cmd, response, &undo, before, self);
        self.history.insert(
            index,
            Arc::new(HistoryEntry {
                index,
                at_ms,
                actor: actor.to_string(),
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

    /// Each routing object `delta` names whose value differs from `before`, with its value
    /// there (a health verdict alone is no change).
    fn undo_since(&self, before: &State, delta: &Delta) -> Vec<(String, Prior)> {
        let mut undo = Vec::new();
        for id in &delta.datacenters {
            let old = before.datacenter(id).map(|e| definition(&e.dc));
            let new = self.datacenter(id).map(|e| definition(&e.dc));
            if old != new {
                undo.push((datacenter_target(id), Prior::Datacenter { dc: old }));
            }
        }
        for origin in &delta.zones {
            let old = before.zone(origin).map(|z| z.text.clone());
            let new = self.zone(origin).map(|z| z.text.clone());
            if old != new {
                let patch =
                    ZonePatch::between(new.as_deref().unwrap_or(""), old.as_deref().unwrap_or(""));
                undo.push((
                    zone_target(origin),
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
                undo.push((service_target(zone, name), Prior::Service { service: old }));
            }
        }
        undo
    }

    /// An object as it is now.
    fn shown_now(&self, target: &str) -> Option<Shown> {
        let (kind, rest) = target.split_once('/')?;
        match kind {
            "datacenter" => self
                .datacenter(rest)
                .map(|e| Shown::Datacenter(e.dc.clone())),
            "zone" => self.zone(rest).map(|z| Shown::Zone(z.text.to_string())),
            "service" => {
                let (zone, name) = rest.rsplit_once('/')?;
                self.service(zone, name)
                    .map(|s| Shown::Service(s.service.clone()))
            }
            _ => None,
        }
    }

    /// What `target` was right after entry `index` (every later entry undone), or `None`
    /// when it did not exist then. Zones are rebuilt by patching the text back.
    pub fn shown_after(&self, target: &str, index: u64) -> Option<Shown> {
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
    pub fn shown_before(&self, target: &str, index: u64) -> Option<Shown> {
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
        // Every target changed since, and its value right after `to`.
        let mut targets = BTreeSet::new();
        for (_, entry) in self.history.range(to + 1..) {
            targets.extend(entry.undo.iter().map(|(t, _)| t.clone()));
        }
        let mut wanted: BTreeMap<String, Option<Shown>> = BTreeMap::new();
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
        let kind = |t: &str| t.split('/').next().unwrap_or("").to_string();
        let steps: Vec<(&String, &Option<Shown>)> = wanted.iter().collect();
        let mut plan: Vec<(String, Option<Shown>)> = Vec::new();
        let mut add = |want_kind: &str, puts: bool| {
            for (t, v) in &steps {
                if kind(t) == want_kind && v.is_some() == puts {
                    plan.push(((*t).clone(), (*v).clone()));
                }
            }
        };
        add("datacenter", true);
        add("service", false);
        add("zone", false);
        add("zone", true);
        add("service", true);
        add("datacenter", false);
        let mut remove_first: Vec<String> = steps
            .iter()
            .filter(|(t, v)| kind(t) == "service" && v.is_some())
            .filter(|(t, _)| self.shown_now(t).is_some())
            .map(|(t, _)| (*t).clone())
            .collect();
        // Services being put back are taken away first too (their zone may change under
        // them); the plan puts them back after the zones.
        let at = plan
            .iter()
            .position(|(t, _)| kind(t) != "datacenter")
            .unwrap_or(plan.len());
        for t in remove_first.drain(..).rev() {
            plan.insert(at, (t, None));
        }
        for (target, value) in plan {
            let cmd = match (value, target.split_once('/')) {
                (Some(Shown::Datacenter(dc)), _) => Command::PutDatacenter {
                    dc: (*dc).clone(),
                    set_state: Some(dc.state),
                },
                (Some(Shown::Zone(text)), _) => Command::PutZone {
                    origin: target.trim_start_matches("zone/").to_string(),
                    text,
                },
                (Some(Shown::Service(s)), _) => Command::PutService {
                    service: (*s).clone(),
                },
                (None, Some(("datacenter", id))) => Command::DeleteDatacenter { id: id.into() },
                (None, Some(("zone", origin))) => Command::DeleteZone {
                    origin: origin.into(),
                },
                (None, Some((_, rest))) => {
                    let (zone, name) = rest.rsplit_once('/').unwrap_or(("", ""));
                    Command::DeleteService {
                        zone: zone.into(),
                        name: name.into(),
                    }
                }
                (None, None) => continue,
            };
            // A service already taken away by this rollback has nothing left to delete.
            if let Command::DeleteService { zone, name } = &cmd {
                if self.service(zone, name).is_none() {
                    continue;
                }
            }
            self.change(&cmd, at_ms, index, delta)
                .map_err(|why| rollback_failed(&target, why))?;
        }
        Ok(Response::RolledBack {
            changed: wanted.into_keys().collect(),
        })
    }
}

fn rollback_failed(target: &str, why: Rejection) -> Rejection {
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
    undo: &[(String, Prior)],
    before: &State,
    after: &State,
) -> String {
    match (cmd, response) {
        (
            Command::Rollover { origin, .. }
            | Command::RolloverStep { origin, .. }
            | Command::DsSeen { origin },
            _,
        ) => super::dnssec::summary(cmd, origin, before, after),
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
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::PolicyKind;

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
            (entry.kind.as_str(), entry.target.as_deref()),
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
        let Some(Shown::Zone(after)) = s.shown_after("zone/example.com.", 1) else {
            panic!("no zone after entry 1");
        };
        assert!(after.contains("192.0.2.7"));
        assert_eq!(s.shown_before("zone/example.com.", 1), None);
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
