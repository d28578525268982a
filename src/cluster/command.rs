//! The write vocabulary: every change to the cluster's state is one [`Command`] in the
//! Raft log, and every command has a [`Response`] — a rejected command (an unknown
//! datacenter, a zone that does not parse) is an answer, never a storage error.

use serde::{Deserialize, Serialize};

use crate::model::{Datacenter, DcState, Service};
use crate::snapshot::COOKIE_SECRET_LEN;
use crate::zone::dnssec::{Role, Step, ZoneKey, ZoneKeys};
use crate::zone::update::UpdateRr;
use crate::zoneconf::{TsigKey, ZoneSettings};

/// A change to the cluster state. New variants may be added; existing ones keep their
/// meaning and serialized form across versions.
///
/// Zone, service and key names stay text here, not [`crate::name`]'s types: the log holds
/// what older binaries wrote, and an entry naming something that is not a name must still
/// read (a log that cannot be read stops the node); it is refused when applied, where each
/// name is parsed once.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Command {
    /// Create or replace a datacenter's definition. `state` and `health` of an existing
    /// datacenter are kept unless `set_state` names one (re-applying never undoes a drain).
    PutDatacenter {
        dc: Datacenter,
        #[serde(default)]
        set_state: Option<DcState>,
    },
    /// Change a datacenter's weight and/or state.
    PatchDatacenter {
        id: String,
        #[serde(default)]
        weight: Option<u16>,
        #[serde(default)]
        state: Option<DcState>,
    },
    DeleteDatacenter {
        id: String,
    },
    /// Create or replace a zone from RFC 1035 text.
    PutZone {
        origin: String,
        text: String,
    },
    DeleteZone {
        origin: String,
    },
    PutService {
        service: Service,
    },
    DeleteService {
        zone: String,
        name: String,
    },
    /// One node's verdict on one datacenter's health: its first, each transition, and a
    /// periodic re-affirmation (so a fresh opinion can be told from a stale one).
    HealthReport {
        node: u64,
        dc: String,
        up: bool,
        #[serde(default)]
        reason: String,
    },
    /// A new DNS cookie secret for every node (RFC 9018); the current one stays valid as the
    /// previous. Proposed with a secret the proposer drew, so every node applies the same.
    RotateCookieSecret {
        secret: CookieSecret,
    },
    /// Put every datacenter, zone and service back as it was right after history entry
    /// `to` (health, TSIG keys, zone settings and DNSSEC keys stay as they are).
    Rollback {
        to: u64,
    },
    /// The bootstrap import: all of it, or nothing. Applied only to an empty state.
    Import {
        zones: Vec<(String, String)>,
        datacenters: Vec<Datacenter>,
        services: Vec<Service>,
        /// TSIG keys (`tsig.toml`); absent in entries written before they existed.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        tsig_keys: Vec<TsigKey>,
        /// Zone settings (`zone-settings.toml`): (origin, settings).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        zone_settings: Vec<(String, ZoneSettings)>,
    },
    /// Create or replace a TSIG key (RFC 8945).
    PutTsigKey {
        key: TsigKey,
    },
    /// Delete a TSIG key; refused while a zone's settings name it.
    DeleteTsigKey {
        name: String,
    },
    /// Create or replace a zone's transfer, notify, update and serial settings.
    PutZoneSettings {
        origin: String,
        settings: ZoneSettings,
    },
    /// A DNS UPDATE (RFC 2136) signed with TSIG key `key`, which the data plane verified:
    /// the grants and prerequisites are checked against the committed zone when it is
    /// applied (so racing updates serialise), then the updates apply all or nothing.
    /// Answered with [`Response::DnsUpdate`].
    DnsUpdate {
        /// The zone section's name.
        zone: String,
        /// The signing key's canonical name.
        key: String,
        /// `dns-update:KEY`. Ignored when applied (the entry's own actor says who), but still
        /// written: binaries before entry format 3 require the field, and during a rolling
        /// upgrade they apply what a newer leader wrote.
        #[serde(default, rename = "actor")]
        legacy_actor: String,
        #[serde(default)]
        prereqs: Vec<UpdateRr>,
        #[serde(default)]
        updates: Vec<UpdateRr>,
    },
    /// Sign a zone with keys the proposing node made (so that every node applies the
    /// same keys). The same algorithm again changes nothing; another one is refused.
    PutDnssec {
        origin: String,
        keys: ZoneKeys,
    },
    /// Stop signing a zone (its keys are forgotten).
    DeleteDnssec {
        origin: String,
    },
    /// Start a key roll (pre-publication): `key`, made by the proposing node, joins the
    /// DNSKEY RRset as published and replaces the zone's key of `role` (the role as the
    /// zone has it: `csk` in a one-key zone). Refused while a roll of that role is under way.
    Rollover {
        origin: String,
        role: Role,
        key: ZoneKey,
    },
    /// An automatic roll step the leader found due, applied only if the zone's keys are
    /// still at `version` and the step is due at the entry's time (history kind `rollover`,
    /// actor `system`).
    RolloverStep {
        origin: String,
        version: u64,
        step: Step,
    },
    /// The parent has the new DS of a KSK or CSK roll: the old key may leave.
    DsSeen {
        origin: String,
    },
    /// Node `id` joined the cluster (as a voter or a learner). Proposed by the leader after
    /// openraft's own membership entry committed, so that history lists the change under
    /// its actor (history kind `add_member`); applying it changes nothing else.
    MemberAdded {
        id: u64,
        raft: String,
        #[serde(default)]
        admin: String,
        voter: bool,
    },
    /// Node `id` left the cluster; like [`Command::MemberAdded`] (history kind
    /// `remove_member`).
    MemberRemoved {
        id: u64,
    },
    /// Every member applies entries of `format`: the leader proposes it once each member
    /// reported so (see [`crate::cluster::types::CLUSTER_FORMAT_START`]). It only ever
    /// raises the cluster's format; no history entry.
    SetFormat {
        format: u32,
    },
}

impl Command {
    /// A short name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Command::PutDatacenter { .. } => "put_datacenter",
            Command::PatchDatacenter { .. } => "patch_datacenter",
            Command::DeleteDatacenter { .. } => "delete_datacenter",
            Command::PutZone { .. } => "put_zone",
            Command::DeleteZone { .. } => "delete_zone",
            Command::PutService { .. } => "put_service",
            Command::DeleteService { .. } => "delete_service",
            Command::HealthReport { .. } => "health_report",
            Command::RotateCookieSecret { .. } => "rotate_cookie_secret",
            Command::Rollback { .. } => "rollback",
            Command::Import { .. } => "import",
            Command::PutTsigKey { .. } => "put_tsig_key",
            Command::DeleteTsigKey { .. } => "delete_tsig_key",
            Command::PutZoneSettings { .. } => "put_zone_settings",
            Command::DnsUpdate { .. } => "dns_update",
            Command::PutDnssec { .. } => "put_dnssec",
            Command::DeleteDnssec { .. } => "delete_dnssec",
            Command::Rollover { .. } => "rollover",
            Command::RolloverStep { .. } => "rollover_step",
            Command::DsSeen { .. } => "ds_seen",
            Command::MemberAdded { .. } => "add_member",
            Command::MemberRemoved { .. } => "remove_member",
            Command::SetFormat { .. } => "set_format",
        }
    }

    /// The entry format that first had this command: a cluster proposes it only once every
    /// member applies that format ([`crate::cluster::types::FORMAT_VERSION`]).
    pub fn format(&self) -> u32 {
        match self {
            Command::Rollover { .. }
            | Command::RolloverStep { .. }
            | Command::DsSeen { .. }
            | Command::MemberAdded { .. }
            | Command::MemberRemoved { .. } => 3,
            Command::SetFormat { .. } => 4,
            Command::PutDatacenter { .. }
            | Command::PatchDatacenter { .. }
            | Command::DeleteDatacenter { .. }
            | Command::PutZone { .. }
            | Command::DeleteZone { .. }
            | Command::PutService { .. }
            | Command::DeleteService { .. }
            | Command::HealthReport { .. }
            | Command::RotateCookieSecret { .. }
            | Command::Rollback { .. }
            | Command::Import { .. }
            | Command::PutTsigKey { .. }
            | Command::DeleteTsigKey { .. }
            | Command::PutZoneSettings { .. }
            | Command::DnsUpdate { .. }
            | Command::PutDnssec { .. }
            | Command::DeleteDnssec { .. } => 1,
        }
    }

    /// The bytes of zone text the command carries: what makes an entry large (a zone of a
    /// million records is about 30 MB), so that writes wait for it in proportion.
    pub fn text_bytes(&self) -> usize {
        match self {
            Command::PutZone { text, .. } => text.len(),
            Command::Import { zones, .. } => zones.iter().map(|(_, t)| t.len()).sum(),
            _ => 0,
        }
    }
}

/// A DNS server cookie secret: 16 random bytes, hex in the log, never in a `Debug` line.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CookieSecret(pub [u8; COOKIE_SECRET_LEN]);

impl CookieSecret {
    /// A fresh random secret.
    pub fn random() -> CookieSecret {
        CookieSecret(rand::random())
    }
}

impl std::fmt::Debug for CookieSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CookieSecret(<redacted>)")
    }
}

impl From<CookieSecret> for String {
    fn from(s: CookieSecret) -> String {
        s.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl TryFrom<String> for CookieSecret {
    type Error = String;
    fn try_from(hex: String) -> Result<CookieSecret, String> {
        let bad = || format!("a cookie secret is {} hex digits", 2 * COOKIE_SECRET_LEN);
        if hex.len() != 2 * COOKIE_SECRET_LEN || !hex.is_ascii() {
            return Err(bad());
        }
        let mut out = [0u8; COOKIE_SECRET_LEN];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(CookieSecret(out))
    }
}

/// Why a command was not applied (maps onto HTTP 400/404/409/422).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "message", rename_all = "snake_case")]
pub enum Rejection {
    /// Malformed input (a zone that does not parse, a bad name): 400.
    BadRequest(String),
    /// The thing named does not exist: 404.
    NotFound(String),
    /// It conflicts with the state (a datacenter still used): 409.
    Conflict(String),
    /// Well-formed but invalid (unknown datacenter, bad coordinates): 422.
    Invalid(String),
    /// The object changed since the version the write was conditioned on (`If-Match`): 412.
    PreconditionFailed(String),
}

impl Rejection {
    pub fn message(&self) -> &str {
        match self {
            Rejection::BadRequest(m)
            | Rejection::NotFound(m)
            | Rejection::Conflict(m)
            | Rejection::Invalid(m)
            | Rejection::PreconditionFailed(m) => m,
        }
    }
}

/// What applying a command did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    Created,
    Replaced,
    /// A datacenter after a PATCH.
    Updated {
        dc: Box<Datacenter>,
    },
    Deleted,
    Imported,
    /// Nothing to do (a membership change or blank entry, or an import into a non-empty state).
    Noop,
    Rejected {
        why: Rejection,
    },
    /// A rollback: the targets it put back (`datacenter/lon`, `zone/example.com.`, …).
    RolledBack {
        changed: Vec<String>,
    },
    /// What a [`Command::DnsUpdate`] came to: the reply's RCODE (RFC 2136 §2.2; 0 also
    /// when it changed nothing, §3.6).
    DnsUpdate {
        rcode: u16,
    },
}
