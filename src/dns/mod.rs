//! The data plane: reading queries, answering them from the current snapshot, and the UDP
//! and TCP listeners. Nothing here waits on the control plane or takes a lock on the query
//! path; `answer()` is pure and writes into a buffer its caller owns.

#![deny(clippy::disallowed_types)]

pub mod answer;
pub mod cookie;
pub mod encode;
pub mod request;
pub mod rrl;
pub mod sigcache;
pub mod tcp;
pub mod tsig;
pub mod udp;
pub mod update;
pub mod xfr;

pub use answer::{answer, Client, Outcome, Transport};
pub use cookie::Cookie;
pub use request::parse;

/// How a node's listeners treat queries beyond answering them (from `[dns]`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// Response rate limiting of UDP replies; `None`: off.
    pub rate_limit: Option<crate::config::RateLimit>,
    /// DNS cookies (RFC 7873): answered, checked, and a valid one exempts a query from
    /// rate limiting. Off: the option is ignored and replies carry none.
    pub cookies: bool,
}
