//! Meridian: a GeoDNS authoritative name server.
//!
//! Modules, in import order (each imports only those before it; `metrics`, `memory` and `name`
//! are leaves):
//! `model` → `config` → `geo` → `zone` → `policy` → `snapshot` → `dns` → `explain` →
//! `health` → `cluster` → `notify` → `publisher` → `admin` → `node`.
//!
//! - [`model`]: datacenters, services and policies, with their validation.
//! - [`name`]: zone, service and TSIG key names, canonicalised once (a leaf).
//! - [`config`]: the node config file and its validated form.
//! - [`geo`]: GeoIP databases compiled into longest-prefix tables; great-circle distance.
//! - [`zone`]: RFC 1035 zone text → records (with `file:line` errors) → a per-name index.
//! - [`policy`]: round-robin, weighted and geo-nearest picks over prepared tables.
//! - [`snapshot`]: the immutable data the data plane reads, and its publish/load handle.
//! - [`dns`]: the data plane: wire parsing, the pure `answer()`, UDP/TCP listeners.
//! - [`dnstap`]: the query log: per-worker queues to one Frame Streams writer thread.
//! - [`memory`]: freed memory handed back to the system after large writes and builds.
//! - [`degraded`]: silent degradations made loud (GeoIP without coordinates, fail-open).
//! - [`explain`]: the answer a client would get, and why (CLI and admin API).
//! - [`cluster`]: the replicated state (persistent maps, `apply` returning a delta), its
//!   store (one key per object, failing closed), the Raft node and network.
//! - [`dnsupdate`]: DNS UPDATE (RFC 2136) from the data plane into Raft.
//! - [`notify`]: NOTIFY (RFC 1996) from the leader when a zone's serial moves.
//! - [`publisher`]: the one writer of the snapshot, applying deltas.
//! - [`admin`]: the HTTP admin API.
//! - [`service`]: systemd readiness (`sd_notify`) and SIGHUP as a reload request.
//! - [`node`]: wiring: build, run, stop on SIGTERM.
//! - [`client`]: the admin API's command-line clients, `meridian apply` and `meridian
//!   export`, beside `main`; they speak only the admin API.

// Lock types are denied only where queries run (dns, policy, geo); see clippy.toml.
#![allow(clippy::disallowed_types)]

pub mod admin;
pub mod certs;
pub mod client;
pub mod cluster;
pub mod config;
pub mod degraded;
pub mod dns;
pub mod dnstap;
pub mod dnsupdate;
pub mod explain;
pub mod health;

pub mod geo;
pub mod memory;
pub mod metrics;
pub mod model;
pub mod name;
pub mod node;
pub mod notify;
pub mod policy;
pub mod publisher;
pub mod serve;
pub mod service;
pub mod snapshot;
pub mod tls;
pub mod zone;
pub mod zoneconf;
