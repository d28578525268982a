//! The openraft type configuration, and what travels in the log: a versioned [`Request`]
//! wrapping a [`Command`], answered by a [`Response`].

use serde::{Deserialize, Serialize};

use crate::cluster::command::{Command, Response};
use crate::cluster::state::Target;

/// The newest log entry format this binary applies. It reads every older one; it refuses to
/// apply a newer one (an older binary in a mixed cluster must be upgraded, not guess).
/// 2: an entry may carry a precondition ([`Request::if_match`]), which an older binary would
/// ignore; entries without one are still written as format 1. 3: a precondition may ask
/// only that the object exists (`If-Match: *`, [`Precondition::exists`]), which a format-2
/// binary would take for "version 0"; key rolls ([`Command::Rollover`] and its steps) and
/// membership history ([`Command::MemberAdded`]). 4: the cluster's format is raised
/// ([`Command::SetFormat`]).
///
/// It is also the cluster format this binary offers: a cluster writes an entry of format
/// `n` only once every member said it applies `n` ([`CLUSTER_FORMAT_START`]).
pub const FORMAT_VERSION: u32 = 4;

/// The format a cluster starts at, and stays at until every member reports a newer one:
/// what the oldest binary that may still be a member (one from before the cluster format)
/// applies. Entries of a newer format are not proposed until the leader has raised the
/// cluster's format ([`Command::SetFormat`]), so that during a rolling upgrade no node is
/// sent an entry, a snapshot or a history entry it cannot read.
pub const CLUSTER_FORMAT_START: u32 = 2;

/// The format of an entry whose precondition names a version.
const VERSION_MATCH_FORMAT: u32 = 2;

/// The format of an entry whose precondition asks only that the object exists.
const EXISTS_MATCH_FORMAT: u32 = 3;

/// The format of an entry an older binary can apply the same way.
const BASE_FORMAT: u32 = 1;

/// A write's precondition (`If-Match`), checked when the entry is applied: the object named
/// still has this version (the log index of its last change; 0: it does not exist), or,
/// with `exists`, has any version at all.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Precondition {
    /// `datacenter/ID`, `zone/ORIGIN`, `service/ZONE/NAME`, `tsig/NAME`, `settings/ORIGIN`,
    /// `dnssec/ORIGIN`.
    pub target: Target,
    /// Ignored when `exists`.
    #[serde(default)]
    pub version: u64,
    /// `If-Match: *`: any version, as long as the object exists (format 3).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exists: bool,
}

/// A node as the cluster knows it: where its Raft RPC and admin API listen.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub raft: String,
    #[serde(default)]
    pub admin: String,
}

impl std::fmt::Display for NodeInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "raft {} admin {}", self.raft, self.admin)
    }
}

/// Milliseconds since the Unix epoch: the leader's clock, which stamps the entries it
/// proposes (`Request::at_ms`).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One log entry's payload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// The format this entry was written in.
    pub v: u32,
    /// When the leader proposed it (milliseconds since the Unix epoch): the one clock every
    /// state machine uses, so that applying is deterministic.
    pub at_ms: u64,
    pub cmd: Command,
    /// Who asked, once: a write's request id (random per API call, or derived from its
    /// `Idempotency-Key`). The state machine applies an id once and answers a repeat with
    /// the first result, so a forward sent twice, or a retried write, never applies twice.
    /// Absent in entries older binaries wrote; older binaries ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Who made the change (history's actor): a token's name, `dns-update:KEY`, `health`,
    /// `bootstrap` or `system`. Absent in older entries (shown as `system`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// Apply only if the named object is still at this version (else rejected: 412).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub if_match: Option<Precondition>,
}

impl Request {
    pub fn new(cmd: Command) -> Request {
        let at_ms = now_ms();
        Request {
            v: cmd.format().max(BASE_FORMAT),
            at_ms,
            cmd,
            id: None,
            actor: None,
            if_match: None,
        }
    }

    /// The same, with a request id.
    pub fn with_id(cmd: Command, id: String) -> Request {
        Request {
            id: Some(id),
            ..Request::new(cmd)
        }
    }
}

impl Request {
    /// The format a member must apply for this entry to be proposed (its `v`, which its
    /// command and precondition raised when it was made).
    pub fn format(&self) -> u32 {
        self.v.max(self.cmd.format())
    }

    /// The same, made by `actor`.
    pub fn by(mut self, actor: &str) -> Request {
        self.actor = Some(actor.to_string());
        self
    }

    /// The same, applied only while `target` is at `version` (a format-2 entry).
    pub fn if_match(mut self, target: Target, version: u64) -> Request {
        self.if_match = Some(Precondition {
            target,
            version,
            exists: false,
        });
        self.v = self.v.max(VERSION_MATCH_FORMAT);
        self
    }

    /// The same, applied only while `target` exists, whatever its version (`If-Match: *`;
    /// a format-3 entry).
    pub fn if_exists(mut self, target: Target) -> Request {
        self.if_match = Some(Precondition {
            target,
            version: 0,
            exists: true,
        });
        self.v = self.v.max(EXISTS_MATCH_FORMAT);
        self
    }
}

impl std::fmt::Display for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "v{} {}", self.v, self.cmd.name())
    }
}

openraft::declare_raft_types!(
    /// Meridian's Raft types.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = u64,
        Node = NodeInfo,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = tokio::fs::File,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type LogId = openraft::LogId<u64>;
pub type Vote = openraft::Vote<u64>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type StoredMembership = openraft::StoredMembership<u64, NodeInfo>;
pub type SnapshotMeta = openraft::SnapshotMeta<u64, NodeInfo>;
pub type StorageError = openraft::StorageError<u64>;
