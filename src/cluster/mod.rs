//! The control plane: a versioned command log replicated with openraft, applied by a pure
//! state machine, stored in sled; the only source of new snapshots for the data plane.
//!
//! - [`command`]: the write vocabulary and its results.
//! - [`state`]: the replicated state and its deterministic `apply`.
//! - [`types`]: openraft's type configuration and the log entry format.
//! - [`store`]: the sled store (log, vote, one key per object), failing closed.
//! - [`network`]: the Raft RPCs and forwarded writes, over HTTP or mutual TLS.
//! - [`raft`]: the Raft node: start-up, writes with honest outcomes, quorum, status.
//! - [`prevote`]: elections only after a majority said it would vote (openraft 0.9 has no
//!   pre-vote).
//! - [`handle`]: a cheap clone of the Raft node.
//! - [`rollover`]: the leader's clock for DNSSEC key roll steps.

pub mod command;
pub mod network;
pub mod prevote;
pub mod rollover;
pub mod state;
pub mod store;
pub mod types;

pub use command::{Command, CookieSecret, Rejection, Response};
pub use state::State;
pub mod handle;
pub mod raft;

pub use network::Committed;
pub use raft::{start, ClusterConfig, StartError, Started, WRITE_DEADLINE};
pub use store::{Applied, Change};
pub use types::Request;

pub use handle::{ClusterStatus, Handle, Member, RaftNode, WriteError};

/// A fresh request id for a write (128 random bits, hex).
pub fn new_request_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}
