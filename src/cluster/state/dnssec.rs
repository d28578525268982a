//! DNSSEC keys in the state machine: [`Command::PutDnssec`] carries keys the proposing node
//! made (so every node applies the same), [`Command::DeleteDnssec`] stops signing, and a
//! key roll is [`Command::Rollover`] (the new key, made by the proposer), the automatic
//! [`Command::RolloverStep`]s the leader proposes when due, and [`Command::DsSeen`].
//!
//! Timing is deterministic: a key's times are the committed entries' times (`at_ms`), the
//! TTLs come from the zone in the state, and a step is applied only if it is due at its own
//! entry's time with the keys still at the version the proposer saw.
//!
//! [`Command::PutDnssec`]: crate::cluster::command::Command::PutDnssec
//! [`Command::DeleteDnssec`]: crate::cluster::command::Command::DeleteDnssec
//! [`Command::Rollover`]: crate::cluster::command::Command::Rollover
//! [`Command::RolloverStep`]: crate::cluster::command::Command::RolloverStep
//! [`Command::DsSeen`]: crate::cluster::command::Command::DsSeen

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{Delta, State};
use crate::cluster::command::{Command, Rejection, Response};
use crate::name::ZoneName;
use crate::zone::dnssec::{self, KeyState, Role, RollError, Step, Timings, ZoneKey, ZoneKeys};

/// A zone's DNSSEC keys and the log index of their last change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DnssecEntry {
    pub keys: Arc<ZoneKeys>,
    pub version: u64,
}

/// A zone's DNSSEC keys as the API shows them (the `GET .../dnssec` body but its version):
/// public forms only, never a private key. History keeps this form too.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnssecPublic {
    pub algorithm: dnssec::Algorithm,
    pub keys: Vec<PublicKey>,
    /// DS RDATA (SHA-256) of each secure entry point, in presentation form.
    pub ds: Vec<String>,
}

/// One key as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicKey {
    pub tag: u16,
    pub flags: u16,
    pub role: Role,
    /// DNSKEY RDATA in presentation form.
    pub dnskey: String,
    pub state: KeyState,
}

impl DnssecEntry {
    /// The keys' public forms for zone `origin`. A DS that cannot be made (a key the state
    /// would not have taken) is left out rather than failing the view.
    pub fn public(&self, origin: &ZoneName) -> DnssecPublic {
        let alg = self.keys.algorithm;
        let keys = self
            .keys
            .keys
            .iter()
            .map(|k| PublicKey {
                tag: k.tag,
                flags: k.flags,
                role: k.role,
                dnskey: k.dnskey_text(alg),
                state: k.state,
            })
            .collect();
        let ds = match origin.to_name() {
            Ok(name) => self
                .keys
                .entry_points()
                .filter_map(|k| k.ds(alg, &name).ok().map(|d| d.to_string()))
                .collect(),
            Err(_) => Vec::new(),
        };
        DnssecPublic {
            algorithm: alg,
            keys,
            ds,
        }
    }
}

impl From<RollError> for Rejection {
    fn from(e: RollError) -> Rejection {
        match e {
            RollError::Conflict(m) => Rejection::Conflict(m),
            RollError::Invalid(m) => Rejection::Invalid(m),
        }
    }
}

impl State {
    /// A zone's DNSSEC keys, when it is signed.
    pub fn dnssec<Z>(&self, origin: &Z) -> Option<&DnssecEntry>
    where
        Z: Ord + ?Sized,
        ZoneName: std::borrow::Borrow<Z>,
    {
        self.dnssec.get(origin)
    }

    /// Every signed zone.
    pub fn all_dnssec(&self) -> impl Iterator<Item = (&ZoneName, &DnssecEntry)> {
        self.dnssec.iter()
    }

    pub fn load_dnssec(&mut self, origin: ZoneName, entry: DnssecEntry) {
        self.dnssec.insert(origin, entry);
    }

    /// The TTLs a roll in zone `origin` waits for: the DNSKEY TTL (the SOA's TTL, as the
    /// index signs it) and the largest TTL of anything the zone-data key signs (records,
    /// service answers, negative answers, the DNSKEY RRset). `None` without the zone.
    pub fn dnssec_timings(&self, origin: &ZoneName) -> Option<Timings> {
        let zone = self.zone(origin)?;
        let mut soa_ttl = None;
        let mut max_ttl = 0u32;
        for r in zone.file.rrs() {
            if r.rtype == u16::from(hickory_proto::rr::RecordType::SOA) {
                // RFC 2308 §5: the negative TTL is min(SOA TTL, MINIMUM).
                let minimum = r
                    .rdata
                    .last_chunk::<4>()
                    .map_or(0, |m| u32::from_be_bytes(*m));
                soa_ttl = Some(r.ttl);
                max_ttl = max_ttl.max(r.ttl.min(minimum));
            }
            max_ttl = max_ttl.max(r.ttl);
        }
        for (_, s) in self.services_in(origin) {
            max_ttl = max_ttl.max(s.service.ttl);
        }
        let dnskey_ttl = dnssec::dnskey_ttl(soa_ttl?);
        Some(Timings {
            dnskey_ttl,
            max_ttl: max_ttl.max(dnskey_ttl),
        })
    }

    /// The automatic roll steps due at `now_ms` (what the leader proposes), one per zone
    /// at most: each carries the keys' version, so a second one for the same zone would be
    /// refused anyway; the next is found on the next look.
    pub fn due_rollover_steps(&self, now_ms: u64) -> Vec<Command> {
        let mut out = Vec::new();
        for (origin, e) in self.dnssec.iter().filter(|(_, e)| e.keys.rolling()) {
            let Some(t) = self.dnssec_timings(origin) else {
                continue;
            };
            if let Some(step) = e.keys.due(&t, now_ms).into_iter().next() {
                out.push(Command::RolloverStep {
                    origin: origin.to_string(),
                    version: e.version,
                    step,
                });
            }
        }
        out
    }

    /// Sign a zone with `keys`. The same algorithm and layout again changes nothing;
    /// another algorithm or layout is a conflict (delete first).
    pub(super) fn put_dnssec(
        &mut self,
        key: ZoneName,
        keys: &ZoneKeys,
        index: u64,
        delta: &mut Delta,
    ) -> Result<Response, Rejection> {
        if !self.zones.contains_key(&key) {
            return Err(Rejection::NotFound(format!("no zone {key}")));
        }
        if let Some(old) = self.dnssec.get(&key) {
            if old.keys.algorithm != keys.algorithm {
                return Err(Rejection::Conflict(format!(
                    "zone {key} is signed with {}; DELETE its dnssec first",
                    old.keys.algorithm.name()
                )));
            }
            if old.keys.layout() != keys.layout() {
                return Err(Rejection::Conflict(format!(
                    "zone {key} is signed with keys {:?}; DELETE its dnssec first",
                    old.keys.layout().name()
                )));
            }
            return Ok(Response::Noop);
        }
        if keys.data_key().is_none() || keys.entry_points().next().is_none() {
            return Err(Rejection::Invalid(format!(
                "zone {key}: the keys need an active zone-data key and a secure entry point"
            )));
        }
        self.dnssec.insert(
            key.clone(),
            DnssecEntry {
                keys: Arc::new(keys.clone()),
                version: index,
            },
        );
        delta.dnssec.insert(key);
        Ok(Response::Created)
    }

    /// Stop signing a zone.
    pub(super) fn delete_dnssec(
        &mut self,
        key: ZoneName,
        delta: &mut Delta,
    ) -> Result<Response, Rejection> {
        if self.dnssec.remove(&key).is_none() {
            return Err(Rejection::NotFound(format!("zone {key} is not signed")));
        }
        delta.dnssec.insert(key);
        Ok(Response::Deleted)
    }

    /// The keys of a signed zone (404 when the zone or its keys are missing): what every
    /// change and the API's reads of a zone's keys start from.
    pub fn signed(&self, key: &ZoneName) -> Result<&DnssecEntry, Rejection> {
        match self.dnssec.get(key) {
            Some(e) => Ok(e),
            None if !self.zones.contains_key(key) => {
                Err(Rejection::NotFound(format!("no zone {key}")))
            }
            None => Err(Rejection::NotFound(format!("zone {key} is not signed"))),
        }
    }

    fn put_keys(&mut self, origin: &ZoneName, keys: ZoneKeys, index: u64, delta: &mut Delta) {
        self.dnssec.insert(
            origin.clone(),
            DnssecEntry {
                keys: Arc::new(keys),
                version: index,
            },
        );
        delta.dnssec.insert(origin.clone());
    }

    /// Start a roll of `role` with `new`, published at `at_ms`.
    pub(super) fn rollover(
        &mut self,
        origin: &ZoneName,
        role: Role,
        new: &ZoneKey,
        at_ms: u64,
        index: u64,
        delta: &mut Delta,
    ) -> Result<Response, Rejection> {
        let entry = self.signed(origin)?;
        let mut keys = (*entry.keys).clone();
        let role = keys.roll_role(role)?;
        keys.roll(role, new.clone(), at_ms)?;
        self.put_keys(origin, keys, index, delta);
        Ok(Response::Created)
    }

    /// An automatic step, if the keys are still at `version` and it is due at `at_ms`.
    pub(super) fn rollover_step(
        &mut self,
        origin: &ZoneName,
        version: u64,
        step: Step,
        at_ms: u64,
        index: u64,
        delta: &mut Delta,
    ) -> Result<Response, Rejection> {
        let entry = self.signed(origin)?;
        if entry.version != version {
            return Err(Rejection::Conflict(format!(
                "the keys of {origin} changed since (version {} now, {version} proposed)",
                entry.version
            )));
        }
        let timings = self
            .dnssec_timings(origin)
            .ok_or_else(|| Rejection::NotFound(format!("no zone {origin}")))?;
        let mut keys = (*entry.keys).clone();
        keys.take(step, &timings, at_ms)?;
        self.put_keys(origin, keys, index, delta);
        Ok(Response::Replaced)
    }

    /// The parent has the new DS: refused when no KSK or CSK roll waits for it.
    pub(super) fn ds_seen(
        &mut self,
        origin: &ZoneName,
        index: u64,
        delta: &mut Delta,
    ) -> Result<Response, Rejection> {
        let entry = self.signed(origin)?;
        let mut keys = (*entry.keys).clone();
        if !keys.ds_seen() {
            return Err(Rejection::Conflict(format!(
                "no KSK or CSK roll of {origin} waits for the parent's DS"
            )));
        }
        self.put_keys(origin, keys, index, delta);
        Ok(Response::Replaced)
    }
}

/// A history summary of a roll command: which key moved where.
pub(super) fn summary(cmd: &Command, origin: &ZoneName, before: &State, after: &State) -> String {
    let keys = |s: &State| s.dnssec(origin).map(|e| e.keys.clone());
    let (Some(old), Some(new)) = (keys(before), keys(after)) else {
        return "no change".into();
    };
    match cmd {
        Command::Rollover { .. } => new
            .keys
            .iter()
            .find(|k| k.state == KeyState::Published && !old.keys.iter().any(|o| o.tag == k.tag))
            .map(|k| {
                format!(
                    "{} {} published, replacing {}",
                    k.role.name(),
                    k.tag,
                    k.replaces.map_or_else(String::new, |t| t.to_string())
                )
            })
            .unwrap_or_default(),
        Command::RolloverStep { step, .. } => match step {
            Step::Activate { tag } => {
                let old_tag = old
                    .keys
                    .iter()
                    .find(|k| k.tag == *tag)
                    .and_then(|k| k.replaces);
                match old_tag {
                    Some(o) => format!("key {tag} active, key {o} retired"),
                    None => format!("key {tag} active"),
                }
            }
            Step::Remove { tag } => format!("key {tag} removed"),
        },
        Command::DsSeen { .. } => {
            let tags: Vec<String> = old
                .keys
                .iter()
                .filter(|k| k.awaiting_ds)
                .map(|k| k.tag.to_string())
                .collect();
            format!("parent DS seen for key {}", tags.join(", "))
        }
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zone::dnssec::{Algorithm, Layout, PROPAGATION_MS};

    /// SOA TTL 2 (the DNSKEY TTL), negative TTL min(2, 1) = 1, largest record TTL 7.
    const ZONE: &str = "$TTL 2\n@ IN SOA ns1 h 1 2 3 4 1\n@ IN NS ns1\nns1 7 IN A 192.0.2.1\n";
    const ORIGIN: &str = "example.com.";

    fn ap(s: &mut State, cmd: &Command, at_ms: u64, index: u64) -> Response {
        s.apply(cmd, None, at_ms, index).0
    }

    fn signed(layout: Layout) -> State {
        let mut s = State::default();
        let zone = Command::PutZone {
            origin: ORIGIN.into(),
            text: ZONE.into(),
        };
        assert_eq!(ap(&mut s, &zone, 0, 1), Response::Created);
        let keys = ZoneKeys::generate(Algorithm::EcdsaP256Sha256, layout).expect("keys");
        let put = Command::PutDnssec {
            origin: ORIGIN.into(),
            keys,
        };
        assert_eq!(ap(&mut s, &put, 0, 2), Response::Created);
        s
    }

    fn roll(s: &State, role: Role) -> Command {
        let keys = &s.dnssec(ORIGIN).expect("signed").keys;
        let role = keys.roll_role(role).expect("role");
        Command::Rollover {
            origin: ORIGIN.into(),
            role,
            key: ZoneKey::generate(keys.algorithm, role).expect("key"),
        }
    }

    fn rejected(r: &Response) -> Option<&Rejection> {
        match r {
            Response::Rejected { why } => Some(why),
            _ => None,
        }
    }

    #[test]
    fn timings_come_from_the_zone() {
        let s = signed(Layout::Csk);
        let t = s.dnssec_timings(&ORIGIN.into()).expect("timings");
        assert_eq!((t.dnskey_ttl, t.max_ttl), (2, 7));
    }

    #[test]
    fn rfc6781_4_1_1_1_zsk_roll_steps_in_order_and_only_when_due() {
        let mut s = signed(Layout::KskZsk);
        let ds_before: Vec<u16> = s
            .dnssec(ORIGIN)
            .expect("e")
            .keys
            .entry_points()
            .map(|k| k.tag)
            .collect();
        let cmd = roll(&s, Role::Zsk);
        let Command::Rollover { key, .. } = &cmd else {
            unreachable!()
        };
        let new_tag = key.tag;
        assert_eq!(ap(&mut s, &cmd, 10_000, 3), Response::Created);
        // A second ZSK roll while this one runs: 409; a KSK roll may run beside it.
        let again = roll(&s, Role::Zsk);
        assert!(matches!(
            rejected(&ap(&mut s, &again, 10_001, 4)),
            Some(Rejection::Conflict(_))
        ));
        let keys = s.dnssec(ORIGIN).expect("e").keys.clone();
        assert_eq!(keys.keys.len(), 3);
        let old_tag = keys
            .keys
            .iter()
            .find(|k| k.role == Role::Zsk && k.state == KeyState::Active)
            .expect("old")
            .tag;
        assert_eq!(
            keys.data_key().map(|k| k.tag),
            Some(old_tag),
            "the old ZSK signs until the new one is active"
        );
        // Not due before the DNSKEY TTL and the propagation delay.
        let activate_at = 10_000 + 2_000 + PROPAGATION_MS;
        assert!(s.due_rollover_steps(activate_at - 1).is_empty());
        let due = s.due_rollover_steps(activate_at);
        assert_eq!(due.len(), 1, "{due:?}");
        // Applied too early (the entry's own time), it is refused and changes nothing.
        assert!(matches!(
            rejected(&ap(&mut s, &due[0], activate_at - 1, 4)),
            Some(Rejection::Conflict(_))
        ));
        assert_eq!(s.dnssec(ORIGIN).expect("e").version, 3);
        assert!(matches!(
            ap(&mut s, &due[0], activate_at, 5),
            Response::Replaced
        ));
        // The same step again (a repeated proposal): the version moved on.
        assert!(matches!(
            rejected(&ap(&mut s, &due[0], activate_at + 1, 6)),
            Some(Rejection::Conflict(_))
        ));
        let keys = s.dnssec(ORIGIN).expect("e").keys.clone();
        assert_eq!(keys.data_key().map(|k| k.tag), Some(new_tag));
        let old = keys
            .keys
            .iter()
            .find(|k| k.tag == old_tag)
            .expect("old stays");
        assert_eq!((old.state, old.since_ms), (KeyState::Retired, activate_at));
        // The old ZSK leaves after the largest TTL it signed (7 s).
        let remove_at = activate_at + 7_000 + PROPAGATION_MS;
        assert!(s.due_rollover_steps(remove_at - 1).is_empty());
        let due = s.due_rollover_steps(remove_at);
        assert!(
            matches!(&due[..], [Command::RolloverStep { step: Step::Remove { tag }, .. }] if *tag == old_tag),
            "{due:?}"
        );
        assert!(matches!(
            ap(&mut s, &due[0], remove_at, 7),
            Response::Replaced
        ));
        let keys = s.dnssec(ORIGIN).expect("e").keys.clone();
        assert_eq!(keys.keys.len(), 2);
        assert!(!keys.rolling());
        let ds_after: Vec<u16> = keys.entry_points().map(|k| k.tag).collect();
        assert_eq!(ds_before, ds_after, "a ZSK roll never changes the DS");
        // History: rollover entries, the automatic ones by `system`.
        let kinds: Vec<(String, String)> = s
            .history()
            .map(|e| (e.kind.clone(), e.actor.clone()))
            .collect();
        assert_eq!(
            kinds
                .iter()
                .filter(|(k, a)| k == "rollover" && a == "system")
                .count(),
            3,
            "{kinds:?}"
        );
    }

    #[test]
    fn a_csk_roll_keeps_the_old_key_until_ds_seen() {
        let mut s = signed(Layout::Csk);
        let old_tag = s.dnssec(ORIGIN).expect("e").keys.keys[0].tag;
        // ds-seen with no roll under way: 409.
        let seen = Command::DsSeen {
            origin: ORIGIN.into(),
        };
        assert!(matches!(
            rejected(&ap(&mut s, &seen, 1, 3)),
            Some(Rejection::Conflict(_))
        ));
        // `zsk` rolls the one combined key.
        let cmd = roll(&s, Role::Zsk);
        assert_eq!(ap(&mut s, &cmd, 10_000, 4), Response::Created);
        let keys = s.dnssec(ORIGIN).expect("e").keys.clone();
        let new_tag = keys
            .keys
            .iter()
            .find(|k| k.tag != old_tag)
            .expect("new")
            .tag;
        assert_eq!(keys.entry_points().count(), 2, "both DS meanwhile");
        assert_eq!(
            keys.cds_keys().map(|k| k.tag).collect::<Vec<_>>(),
            [new_tag]
        );
        let csk_again = roll(&s, Role::Csk);
        assert!(matches!(
            rejected(&ap(&mut s, &csk_again, 10_001, 5)),
            Some(Rejection::Conflict(_))
        ));
        let mut at = 10_000 + 2_000 + PROPAGATION_MS;
        let due = s.due_rollover_steps(at);
        assert!(matches!(ap(&mut s, &due[0], at, 6), Response::Replaced));
        // Long after: still waiting for the parent.
        at += 3_600_000;
        assert!(s.due_rollover_steps(at).is_empty());
        assert!(matches!(ap(&mut s, &seen, at, 7), Response::Replaced));
        let due = s.due_rollover_steps(at + 1);
        assert!(
            matches!(&due[..], [Command::RolloverStep { step: Step::Remove { tag }, .. }] if *tag == old_tag),
            "{due:?}"
        );
        assert!(matches!(ap(&mut s, &due[0], at + 1, 8), Response::Replaced));
        let keys = s.dnssec(ORIGIN).expect("e").keys.clone();
        assert_eq!(
            keys.keys
                .iter()
                .map(|k| (k.tag, k.state))
                .collect::<Vec<_>>(),
            [(new_tag, KeyState::Active)]
        );
        let last = s.history().next_back().expect("entry");
        assert_eq!(
            (last.kind.as_str(), last.summary.as_str()),
            ("rollover", &*format!("key {old_tag} removed"))
        );
        assert!(s.history().any(|e| e.kind == "ds_seen"));
    }

    #[test]
    fn rollover_refusals_404_422_and_determinism() {
        let mut s = signed(Layout::KskZsk);
        // `csk` in a KSK+ZSK zone: 422 (the API maps it before proposing).
        let keys = s.dnssec(ORIGIN).expect("e").keys.clone();
        assert!(matches!(
            keys.roll_role(Role::Csk),
            Err(RollError::Invalid(_))
        ));
        let bad = Command::Rollover {
            origin: ORIGIN.into(),
            role: Role::Csk,
            key: ZoneKey::generate(keys.algorithm, Role::Csk).expect("key"),
        };
        assert!(matches!(
            rejected(&ap(&mut s, &bad, 1, 3)),
            Some(Rejection::Invalid(_))
        ));
        // A key whose flags do not fit its role.
        let mut wrong = ZoneKey::generate(keys.algorithm, Role::Zsk).expect("key");
        wrong.flags = 257;
        let bad = Command::Rollover {
            origin: ORIGIN.into(),
            role: Role::Zsk,
            key: wrong,
        };
        assert!(matches!(
            rejected(&ap(&mut s, &bad, 1, 3)),
            Some(Rejection::Invalid(_))
        ));
        // Unsigned or missing zone: 404.
        for origin in ["nope.example.", "example.org."] {
            let cmd = Command::Rollover {
                origin: origin.into(),
                role: Role::Zsk,
                key: ZoneKey::generate(keys.algorithm, Role::Zsk).expect("key"),
            };
            assert!(matches!(
                rejected(&ap(&mut s, &cmd, 1, 3)),
                Some(Rejection::NotFound(_))
            ));
        }
        let mut unsigned = s.clone();
        ap(
            &mut unsigned,
            &Command::DeleteDnssec {
                origin: ORIGIN.into(),
            },
            1,
            3,
        );
        assert!(matches!(
            rejected(&ap(&mut unsigned, &roll(&s, Role::Zsk), 1, 4)),
            Some(Rejection::NotFound(_))
        ));
        // Two nodes applying the same entries end with the same keys.
        let cmds = [roll(&s, Role::Ksk), roll(&s, Role::Zsk)];
        let mut a = s.clone();
        let mut b = s.clone();
        for (i, c) in cmds.iter().enumerate() {
            ap(&mut a, c, 100, 10 + i as u64);
            ap(&mut b, c, 100, 10 + i as u64);
        }
        let mut at = 100;
        let mut index = 20;
        for _ in 0..20 {
            at += 1_000;
            let seen = Command::DsSeen {
                origin: ORIGIN.into(),
            };
            if at == 10_100 {
                ap(&mut a, &seen, at, index);
                ap(&mut b, &seen, at, index);
                index += 1;
            }
            for c in a.due_rollover_steps(at) {
                assert_eq!(ap(&mut a, &c, at, index), ap(&mut b, &c, at, index));
                index += 1;
            }
            assert_eq!(a.dnssec(ORIGIN), b.dnssec(ORIGIN));
        }
        let keys = a.dnssec(ORIGIN).expect("e").keys.clone();
        assert_eq!(keys.keys.len(), 2, "both rolls done: {keys:?}");
        assert!(keys
            .keys
            .iter()
            .all(|k| k.state == KeyState::Active && k.replaces.is_none()));
        // PUT of another layout on a signed zone: 409; the same layout again: no change.
        let split = Command::PutDnssec {
            origin: ORIGIN.into(),
            keys: ZoneKeys::generate(Algorithm::EcdsaP256Sha256, Layout::Csk).expect("k"),
        };
        assert!(matches!(
            rejected(&ap(&mut a, &split, at, index)),
            Some(Rejection::Conflict(_))
        ));
        let same = Command::PutDnssec {
            origin: ORIGIN.into(),
            keys: ZoneKeys::generate(Algorithm::EcdsaP256Sha256, Layout::KskZsk).expect("k"),
        };
        assert_eq!(ap(&mut a, &same, at, index), Response::Noop);
    }
}
