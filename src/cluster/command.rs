//! The write vocabulary: every change to the cluster's state is one [`Command`] in the
//! Raft log, and every command has a [`Response`] — a rejected command (an unknown
//! datacenter, a zone that does not parse) is an answer, never a storage error.

use serde::{Deserialize, Serialize};

use crate::model::{Datacenter, DcState, Service};
use crate::zoneconf::{TsigKey, ZoneSettings};

/// A change to the cluster state. New variants may be added; existing ones keep their
/// meaning and serialized form across versions.
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
            Command::Import { .. } => "import",
            Command::PutTsigKey { .. } => "put_tsig_key",
            Command::DeleteTsigKey { .. } => "delete_tsig_key",
            Command::PutZoneSettings { .. } => "put_zone_settings",
        }
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
}

impl Rejection {
    pub fn message(&self) -> &str {
        match self {
            Rejection::BadRequest(m)
            | Rejection::NotFound(m)
            | Rejection::Conflict(m)
            | Rejection::Invalid(m) => m,
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
}
