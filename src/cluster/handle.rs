//! The control plane as the rest of the node sees it: a [`Handle`] on this node's
//! [`RaftNode`] (propose a command on any node, read the applied state, see and change the
//! membership), and the types its answers use.

use std::sync::Arc;

use serde::Serialize;

pub use crate::cluster::raft::RaftNode;

/// Why a write did not go through, and what became of it. Rejections are not errors: they
/// are `Response::Rejected`.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Refused before it was proposed (no leader in time, no quorum at the leader): it was
    /// not applied and will not be. 503, `"outcome": "not_applied"`.
    #[error("not applied: {0}")]
    NotApplied(String),
    /// Proposed, but not seen committed in time: it may still apply. 503,
    /// `"outcome": "unknown"`.
    #[error("outcome unknown, the write may still apply: {0}")]
    Unknown(String),
    /// Bad membership request (unknown node, …): 400/404/409 by message.
    #[error("{0}")]
    Membership(String),
}

/// One member of the cluster.
#[derive(Clone, Debug, Serialize)]
pub struct Member {
    pub id: u64,
    /// The Raft address.
    pub addr: String,
    /// The admin API address, `""` when unknown.
    pub admin: String,
    pub voter: bool,
    /// Entries behind the leader, as the leader sees it (`null` on other nodes).
    pub lag: Option<u64>,
    /// The newest entry format it applies: known for this node, and for the others on a
    /// leader that asked them while the cluster's format was behind its own (`null`
    /// otherwise).
    pub format: Option<u32>,
}

/// What `GET /cluster` shows.
#[derive(Clone, Debug, Serialize)]
pub struct ClusterStatus {
    pub node_id: u64,
    pub leader: Option<u64>,
    pub term: u64,
    pub members: Vec<Member>,
    pub last_applied: Option<u64>,
    /// The last log index this node holds (committed or not).
    pub last_log_index: Option<u64>,
    /// The cluster's format: the newest entry format every member applies. Writes that need
    /// a newer one are refused (`not_applied`) until every member runs a binary that has it.
    pub format: u32,
    /// The leader heard from a majority within its election timeout; on a follower,
    /// whether it hears from a leader.
    pub quorum: bool,
    /// Whether the control plane takes writes: `ok`, `disk_full` (writes refused until the
    /// store's file system has room again) or `stopped` (Raft stopped on a storage error;
    /// DNS keeps answering from the last state; restart the node).
    pub control_plane: &'static str,
}

/// A cheap, clonable handle on the node's Raft instance; every method is [`RaftNode`]'s.
#[derive(Clone)]
pub struct Handle {
    pub(crate) inner: Arc<RaftNode>,
}

impl std::ops::Deref for Handle {
    type Target = RaftNode;
    fn deref(&self) -> &RaftNode {
        &self.inner
    }
}
