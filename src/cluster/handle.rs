//! The control plane as the rest of the node sees it: propose a command (on any node: it is
//! forwarded to the leader), read the applied state, see and change the membership.

use std::sync::Arc;

use serde::Serialize;

use crate::cluster::command::{Command, Response};
use crate::cluster::state::State;

/// Why a write did not go through. Rejections are not errors: they are `Response::Rejected`.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// No leader was elected in time, or the leader cannot reach a quorum: 503.
    #[error("no quorum: {0}")]
    Unavailable(String),
    /// The node is shutting down or Raft stopped: 503.
    #[error("the control plane has stopped: {0}")]
    Stopped(String),
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
    /// The admin API address, when known.
    pub admin: String,
    pub voter: bool,
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
}

/// A cheap, clonable handle on the node's Raft instance.
#[derive(Clone)]
pub struct Handle {
    pub(crate) inner: Arc<crate::cluster::node::Inner>,
}

impl Handle {
    pub fn node_id(&self) -> u64 {
        self.inner.node_id
    }

    /// Propose a command and wait until it is committed and applied (on the leader).
    pub async fn write(&self, cmd: Command) -> Result<Response, WriteError> {
        self.inner.write(cmd).await
    }

    /// The state as applied on this node.
    pub fn state(&self) -> Arc<State> {
        self.inner.state()
    }

    pub fn status(&self) -> ClusterStatus {
        self.inner.status()
    }

    /// Add a node: first as a learner (it catches up), then as a voter unless `voter` is false.
    pub async fn add_member(
        &self,
        id: u64,
        raft_addr: String,
        admin_addr: String,
        voter: bool,
    ) -> Result<(), WriteError> {
        self.inner
            .add_member(id, raft_addr, admin_addr, voter)
            .await
    }

    pub async fn remove_member(&self, id: u64) -> Result<(), WriteError> {
        self.inner.remove_member(id).await
    }
}
