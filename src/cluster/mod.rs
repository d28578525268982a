//! The control plane: a versioned command log replicated with openraft, applied by a pure
//! state machine, stored in sled; the only source of new snapshots for the data plane.
//!
//! - [`command`]: the write vocabulary and its results.
//! - [`state`]: the replicated state and its deterministic `apply`.
//! - [`types`]: openraft's type configuration and the log entry format.

pub mod command;
pub mod network;
pub mod state;
pub mod store;
pub mod types;

pub use command::{Command, CookieSecret, Rejection, Response};
pub use state::State;
pub mod handle;
pub mod node;

pub use network::Committed;
pub use node::{start, ClusterConfig, StartError, Started, WRITE_DEADLINE};
pub use store::{Applied, Change};
pub use types::Request;

pub use handle::{ClusterStatus, Handle, Member, RaftNode, WriteError};

/// A fresh request id for a write (128 random bits, hex).
pub fn new_request_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}
