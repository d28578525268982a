//! The running Raft instance of this node (placeholder until the store and network land).

use std::sync::Arc;

use crate::cluster::command::{Command, Response};
use crate::cluster::handle::{ClusterStatus, WriteError};
use crate::cluster::state::State;

pub(crate) struct Inner {
    pub node_id: u64,
}

impl Inner {
    pub async fn write(&self, _cmd: Command) -> Result<Response, WriteError> {
        Err(WriteError::Unavailable("the control plane is not running".into()))
    }

    pub fn state(&self) -> Arc<State> {
        Arc::new(State::default())
    }

    pub fn status(&self) -> ClusterStatus {
        ClusterStatus {
            node_id: self.node_id,
            leader: None,
            term: 0,
            members: Vec::new(),
            last_applied: None,
            commit: None,
        }
    }

    pub async fn add_member(
        &self,
        _id: u64,
        _raft: String,
        _admin: String,
        _voter: bool,
    ) -> Result<(), WriteError> {
        Err(WriteError::Unavailable("the control plane is not running".into()))
    }

    pub async fn remove_member(&self, _id: u64) -> Result<(), WriteError> {
        Err(WriteError::Unavailable("the control plane is not running".into()))
    }
}
