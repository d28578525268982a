//! Raft RPC over HTTP/JSON: the client side ([`Network`], one pooled `reqwest::Client` for
//! every peer) and the server side ([`router`], served on `[raft] listen`).
//!
//! The wire:
//!
//! | route                 | body                          | 200 answer                   |
//! |-----------------------|-------------------------------|------------------------------|
//! | `POST /raft/append`   | `AppendEntriesRequest`        | `AppendEntriesResponse`      |
//! | `POST /raft/vote`     | `VoteRequest`                 | `VoteResponse`               |
//! | `POST /raft/snapshot` | `InstallSnapshotRequest`      | `InstallSnapshotResponse`    |
//! | `POST /raft/write`    | [`Request`] (a forwarded write) | [`Response`] (after commit) |
//! | `POST /raft/members`  | [`MemberChange`] (forwarded)  | `null` (after commit)        |
//! | `POST /raft/probe`    | `{}`                          | [`ProbeAnswer`] (who answers, its format, how far it applied) |
//! | `POST /raft/prevote`  | [`PreVoteRequest`]            | [`PreVoteAnswer`] (see [`crate::cluster::prevote`]) |
//!
//! Every POST must say `Content-Type: application/json` (415 otherwise). When a secret is
//! configured every request carries it in [`SECRET_HEADER`]; a request without it or with a
//! wrong one is answered 401 before its body is read.
//!
//! With mutual TLS ([`Transport::tls`], served by [`crate::serve`]) a peer is the node its
//! certificate names (DNS SAN `node-N`): only current members are served (any peer of the
//! cluster's CA while this node belongs to no cluster yet, so that it can be added), and a
//! Raft RPC must come from the node it claims to be from (the candidate of a vote, the
//! leader of an append or a snapshot chunk). Outgoing connections verify that the server's
//! certificate chains to the CA and names `node-<target id>`.
//!
//! InstallSnapshot chunks are taken in order only (each at the offset where the last one
//! ended, or the last one again), from the leader of the current term or a newer one, up to
//! [`Transport::max_snapshot`] bytes in all; anything else is refused before openraft sees
//! it (a `SnapshotMismatch`, so that the leader starts over at offset 0).
//!
//! Errors are never sent as 200. The three Raft RPCs answer an [`RpcErrorBody`]: a
//! `RaftError` from openraft (409 for a snapshot mismatch, 503 when Raft has stopped, 500
//! otherwise) is carried in its `raft` field so that the client rebuilds the matching
//! `RemoteError`; 400/401/413 carry only a message. `/raft/write` answers a [`ForwardError`]
//! (see [`ForwardError::status`]).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Extension, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;
use openraft::error::{
    Fatal, InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    Timeout, Unreachable,
};
use openraft::network::{RPCOption, RPCTypes};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::cluster::command::{Command, Response};
use crate::cluster::prevote::{PreVoteAnswer, PreVoteRequest};
use crate::cluster::types::{
    NodeInfo, Raft, Request, TypeConfig, CLUSTER_FORMAT_START, FORMAT_VERSION,
};
use crate::serve::Peer;
use crate::tls::Tls;

/// The header that carries `[raft] secret`.
pub const SECRET_HEADER: &str = "x-meridian-raft-secret";

/// How long to wait for a TCP connection to a peer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// The request timeout of an InstallSnapshot chunk.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(30);
/// The request timeout of a forwarded write (it answers after commit and apply).
const FORWARD_TIMEOUT: Duration = Duration::from_secs(15);
/// An AppendEntries body this large is sent as a [`Transfer`].
const LARGE_APPEND: usize = 512 * 1024;
/// The request timeout when openraft gives none (never with 0.9, kept as a bound).
const DEFAULT_RPC_TIMEOUT: Duration = Duration::from_secs(5);
/// Body limit of `/raft/append`, `/raft/snapshot` and `/raft/write`: a snapshot chunk or an
/// import is large, but bounded.
const MAX_BODY: usize = 256 * 1024 * 1024;
/// Body limit of `/raft/vote`.
const MAX_VOTE_BODY: usize = 64 * 1024;
/// Body limit of `/raft/snapshot`: one chunk (openraft sends 3 MiB, about 12 MiB as JSON).
const MAX_SNAPSHOT_CHUNK_BODY: usize = 64 * 1024 * 1024;
/// The default of `[raft] max_snapshot`: the largest snapshot a node receives.
pub const DEFAULT_MAX_SNAPSHOT: u64 = 1 << 30;
/// How long [`Network::probe`] waits for a node's answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(4);
/// How long [`Network::probe`] waits for a node's port to accept connections (a node added
/// right after it was started). With [`PROBE_TIMEOUT`], within the 15 s an add may take.
const PROBE_CONNECT_WAIT: Duration = Duration::from_secs(8);
/// How long idle pooled connections to a peer are kept: less than the server's header-read
/// timeout, so that a pooled connection is never one the server is closing.
const POOL_IDLE: Duration = Duration::from_secs(10);
/// A peer failing this long is logged as down.
const DOWN_AFTER: Duration = Duration::from_secs(1);
/// How often a peer that stays down is mentioned again.
const DOWN_REMINDER: Duration = Duration::from_secs(60);

type NodeId = u64;
type RpcError<E = openraft::error::Infallible> = RPCError<NodeId, NodeInfo, RaftError<NodeId, E>>;

/// Why a forwarded write did not go through.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ForwardError {
    /// The node asked is not the leader; `leader` is the one it knows of, if any (421).
    #[error("not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<u64> },
    /// No quorum, no leader, the leader unreachable or too slow (503). After a timeout the
    /// write may or may not have been applied.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The leader proposed the write but did not see it committed in time: it may still
    /// apply (503).
    #[error("outcome unknown: {0}")]
    Unknown(String),
    /// Raft stopped on the node asked (503).
    #[error("the control plane has stopped: {0}")]
    Stopped(String),
    /// The raft secret was missing or wrong (401).
    #[error("rejected: wrong or missing raft secret")]
    Unauthorized,
    /// The peer's certificate names no member of the cluster (403).
    #[error("rejected: {0}")]
    Forbidden(String),
    /// The request body is not a request this node accepts (400).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The peer does not serve the route: a binary older than it (404).
    #[error("not served: {0}")]
    NotServed(String),
}

impl ForwardError {
    /// The HTTP status `/raft/write` answers this error with.
    pub fn status(&self) -> StatusCode {
        match self {
            ForwardError::NotLeader { .. } => StatusCode::MISDIRECTED_REQUEST,
            ForwardError::Unavailable(_) | ForwardError::Unknown(_) | ForwardError::Stopped(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ForwardError::Unauthorized => StatusCode::UNAUTHORIZED,
            ForwardError::Forbidden(_) => StatusCode::FORBIDDEN,
            ForwardError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ForwardError::NotServed(_) => StatusCode::NOT_FOUND,
        }
    }
}

impl IntoResponse for ForwardError {
    fn into_response(self) -> axum::response::Response {
        (self.status(), axum::Json(self)).into_response()
    }
}

/// A future as [`WriteFn`] returns it.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// How `/raft/write` performs a write on this node (the node passes a closure that calls
/// `raft.client_write` and maps errors).
pub type WriteFn = Arc<dyn Fn(Request) -> BoxFuture<Result<Committed, ForwardError>> + Send + Sync>;

/// A committed write: what applying it answered, and its log index (so that the node that
/// took the request can wait until its own DNS shows it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Committed {
    pub response: Response,
    pub index: u64,
}

/// What `/raft/write` answers: a [`Committed`]; a leader of the first format answered the
/// bare [`Response`].
#[derive(Deserialize)]
#[serde(untagged)]
enum ForwardReply {
    Committed(Committed),
    Bare(serde::de::IgnoredAny),
}

impl ForwardReply {
    fn committed(self) -> Option<Committed> {
        match self {
            ForwardReply::Committed(c) => Some(c),
            ForwardReply::Bare(_) => None,
        }
    }
}

/// When this node last heard from its peers: the leader's quorum (a majority answered an
/// AppendEntries within the election timeout) and a follower's "I hear a leader".
#[derive(Debug)]
pub struct Contact {
    /// Peer → when it last answered an AppendEntries without refusing this leader.
    acked: std::sync::Mutex<HashMap<u64, Instant>>,
    /// When this node last accepted an AppendEntries from a leader.
    heard: std::sync::Mutex<Option<Instant>>,
}

impl Default for Contact {
    /// A node that just started counts as having heard a leader: it gives the first
    /// election its time before it says it has no quorum.
    fn default() -> Contact {
        Contact {
            acked: Default::default(),
            heard: std::sync::Mutex::new(Some(Instant::now())),
        }
    }
}

impl Contact {
    /// A node that has heard from no leader at all (tests).
    #[cfg(test)]
    pub fn silent() -> Contact {
        Contact {
            acked: Default::default(),
            heard: std::sync::Mutex::new(None),
        }
    }

    fn ack(&self, peer: u64) {
        if let Ok(mut m) = self.acked.lock() {
            m.insert(peer, Instant::now());
        }
    }

    /// A leader was heard from (or this node leads with a quorum).
    pub fn heard_leader(&self) {
        if let Ok(mut h) = self.heard.lock() {
            *h = Some(Instant::now());
        }
    }

    /// Whether `peer` answered within `within`.
    pub fn acked_within(&self, peer: u64, within: Duration) -> bool {
        self.acked
            .lock()
            .ok()
            .and_then(|m| m.get(&peer).map(|t| t.elapsed() <= within))
            .unwrap_or(false)
    }

    /// Whether a leader was heard within `within`.
    pub fn heard_within(&self, within: Duration) -> bool {
        self.heard
            .lock()
            .ok()
            .and_then(|h| h.map(|t| t.elapsed() <= within))
            .unwrap_or(false)
    }
}

/// The body of an error answer to the three Raft RPCs.
#[derive(Debug, Serialize, Deserialize)]
pub struct RpcErrorBody {
    pub message: String,
    /// The serialized `RaftError`, when the error came from openraft.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raft: Option<serde_json::Value>,
}

// ---------------------------------------------------------------------------------------------
// Client side
// ---------------------------------------------------------------------------------------------

/// How this node's Raft traffic is protected, for both sides: the client ([`Network`]) and
/// the server ([`router_with`], served by [`crate::serve`]).
#[derive(Clone, Debug)]
pub struct Transport {
    /// `[raft] secret`: sent with every RPC and required of every RPC.
    pub secret: Option<String>,
    /// `[raft] tls`: mutual TLS material (with a CA).
    pub tls: Option<Tls>,
    /// `[raft] max_snapshot`: the largest snapshot this node receives, in bytes.
    pub max_snapshot: u64,
}

impl Default for Transport {
    fn default() -> Transport {
        Transport {
            secret: None,
            tls: None,
            max_snapshot: DEFAULT_MAX_SNAPSHOT,
        }
    }
}

impl Transport {
    /// How the Raft listener accepts connections for this transport, said in the log at
    /// start: mutual TLS; or plain HTTP from any address with a secret (which crosses the
    /// network in the clear); or, with neither, plain HTTP from loopback peers only.
    pub fn listener(&self, listen: std::net::SocketAddr) -> crate::serve::Transport {
        match (&self.tls, &self.secret) {
            (Some(tls), _) => {
                tracing::info!(%listen, ca = ?tls.files().ca, "Raft over mutual TLS");
                crate::serve::Transport::Tls(tls.clone())
            }
            (None, Some(_)) => {
                tracing::warn!(
                    %listen,
                    "Raft over plain HTTP: [raft] secret and every command cross the network in the clear \
                     and can be replayed; set [raft] tls (meridian certs makes certificates)"
                );
                crate::serve::Transport::Plain
            }
            (None, None) => {
                tracing::warn!(
                    %listen,
                    "Raft has neither [raft] tls nor [raft] secret: it serves loopback peers only"
                );
                crate::serve::Transport::LoopbackOnly
            }
        }
    }

    /// Plain HTTP with an optional secret (as before TLS).
    pub fn plain(secret: Option<String>) -> Transport {
        Transport {
            secret,
            ..Transport::default()
        }
    }
}

/// What `/raft/probe` answers: which node this is, the newest entry format it applies
/// (absent from binaries before the cluster format: [`CLUSTER_FORMAT_START`]), and how far
/// it applied.
#[derive(Debug, Serialize, Deserialize)]
pub struct ProbeAnswer {
    pub node_id: u64,
    #[serde(default = "start_format")]
    pub format: u32,
    /// The last log index the node has applied (absent from older binaries: 0). A
    /// follower asks the leader before it reads its own state for a write
    /// ([`crate::cluster::RaftNode::catch_up`]).
    #[serde(default)]
    pub applied: u64,
}

fn start_format() -> u32 {
    CLUSTER_FORMAT_START
}

/// The Raft RPC client side: pooled `reqwest` clients with connect and request timeouts.
/// Plain HTTP: one client for every peer. Mutual TLS: one client per peer, which connects to
/// `https://node-N:PORT` with `node-N` resolved to the peer's address, so that the server's
/// certificate is verified to name `node-N`.
#[derive(Clone)]
pub struct Network {
    client: reqwest::Client,
    secret: Option<Arc<str>>,
    tls: Option<rustls::ClientConfig>,
    /// The clients of each peer (mutual TLS), by (node id, address).
    peers: Arc<Mutex<HashMap<(u64, String), reqwest::Client>>>,
    /// Which peers are failing, for logs that say so once (not once per retry).
    liveness: Arc<Mutex<HashMap<u64, Liveness>>>,
    /// Who answered lately (shared with the server side).
    pub contact: Arc<Contact>,
    /// The large AppendEntries in flight to each peer ([`Transfer`]).
    transfers: Arc<Mutex<HashMap<NodeId, Transfer>>>,
}

/// The answer of an AppendEntries, as openraft takes it.
type AppendResult = Result<AppendEntriesResponse<NodeId>, RpcError>;

/// A large AppendEntries (a zone of a million records is one ~30 MB entry) sent to one peer
/// by a task of its own, with a timeout sized by its bytes ([`transfer_timeout`]).
///
/// openraft 0.9 gives every AppendEntries one heartbeat interval (200 ms) and drops it
/// then, whatever its size; retried, it would be dropped again, forever, while the
/// follower, hearing nothing, calls an election. So the bytes go out once, in the
/// background; each attempt openraft makes meanwhile sends the follower an empty
/// AppendEntries (a heartbeat: same vote, same previous entry) and waits for the transfer
/// within its own time; the attempt after the transfer ends takes its answer.
struct Transfer {
    vote: crate::cluster::types::Vote,
    prev: Option<crate::cluster::types::LogId>,
    last: Option<crate::cluster::types::LogId>,
    answer: tokio::sync::watch::Receiver<Option<AppendResult>>,
    task: tokio::task::JoinHandle<()>,
}

/// One peer's recent failures.
#[derive(Default)]
struct Liveness {
    failing_since: Option<Instant>,
    /// When the peer was last logged as down (`None`: not logged).
    logged: Option<Instant>,
}

impl Network {
    /// Plain HTTP, with an optional secret.
    pub fn new(secret: Option<String>) -> Network {
        Network::with_transport(&Transport::plain(secret))
    }

    pub fn with_transport(transport: &Transport) -> Network {
        let secret = transport.secret.clone();
        if let Some(s) = &secret {
            if reqwest::header::HeaderValue::from_str(s).is_err() {
                tracing::error!(
                    "[raft] secret is not a valid HTTP header value: every RPC will fail"
                );
            }
        }
        let tls = transport
            .tls
            .as_ref()
            .and_then(|t| match t.client_config() {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::error!(error = %e, "cannot build the raft TLS client configuration");
                    None
                }
            });
        let client = Network::builder(tls.as_ref()).build().unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot build the raft HTTP client, using defaults");
            reqwest::Client::new()
        });
        Network {
            client,
            secret: secret.map(Arc::from),
            tls,
            peers: Arc::default(),
            liveness: Arc::default(),
            contact: Arc::default(),
            transfers: Arc::default(),
        }
    }

    fn builder(tls: Option<&rustls::ClientConfig>) -> reqwest::ClientBuilder {
        let b = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .pool_idle_timeout(POOL_IDLE)
            // Raft traffic goes straight to the peer, whatever HTTP_PROXY says.
            .no_proxy();
        match tls {
            Some(c) => b.use_preconfigured_tls(c.clone()),
            None => b,
        }
    }

    /// The client and base URL for node `target` (when known) at `addr`.
    fn endpoint(&self, target: Option<u64>, addr: &str) -> (reqwest::Client, String) {
        let Some(tls) = &self.tls else {
            return (self.client.clone(), format!("http://{addr}"));
        };
        let sock = addr.parse::<std::net::SocketAddr>();
        let (Some(id), Ok(sock)) = (target, sock) else {
            // Without a node id the certificate must name the address (or host) itself.
            return (self.client.clone(), format!("https://{addr}"));
        };
        let name = crate::certs::node_name(id);
        let key = (id, addr.to_string());
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        let client = match peers.get(&key) {
            Some(c) => c.clone(),
            None => {
                let c = Network::builder(Some(tls))
                    .resolve(&name, sock)
                    .build()
                    .unwrap_or_else(|e| {
                        tracing::error!(error = %e, "cannot build the raft HTTPS client");
                        self.client.clone()
                    });
                // Addresses change rarely; drop the clients of a node's old address.
                peers.retain(|(i, _), _| *i != id);
                peers.insert(key, c.clone());
                c
            }
        };
        (client, format!("https://{name}:{}", sock.port()))
    }

    fn post(
        &self,
        target: Option<u64>,
        addr: &str,
        path: &str,
        timeout: Duration,
    ) -> reqwest::RequestBuilder {
        let (client, base) = self.endpoint(target, addr);
        let b = client.post(format!("{base}{path}")).timeout(timeout);
        match &self.secret {
            Some(s) => b.header(SECRET_HEADER, &**s),
            None => b,
        }
    }

    /// Note the outcome of an RPC to `target`; a peer that starts or stops failing is
    /// logged once, and a reminder once a minute while it stays down.
    fn note(&self, target: NodeId, addr: &str, failure: Option<&dyn std::fmt::Display>) {
        let mut all = self.liveness.lock().unwrap_or_else(|p| p.into_inner());
        let l = all.entry(target).or_default();
        match failure {
            None => {
                if let (Some(since), Some(_)) = (l.failing_since, l.logged) {
                    tracing::info!(peer = target, %addr, down_s = since.elapsed().as_secs(), "raft peer reachable again");
                }
                *l = Liveness::default();
            }
            Some(e) => {
                let now = Instant::now();
                let since = *l.failing_since.get_or_insert(now);
                let due = match l.logged {
                    None => now.duration_since(since) >= DOWN_AFTER,
                    Some(at) => now.duration_since(at) >= DOWN_REMINDER,
                };
                if due {
                    if l.logged.is_none() {
                        tracing::warn!(peer = target, %addr, error = %e, "raft peer unreachable");
                    } else {
                        tracing::warn!(peer = target, %addr, error = %e, down_s = since.elapsed().as_secs(), "raft peer still unreachable");
                    }
                    l.logged = Some(now);
                }
            }
        }
    }

    /// Forward a write to the leader at `leader_raft_addr` (its `ip:port` Raft address) over
    /// the same pooled client; used by followers. With TLS the leader's certificate must name
    /// the address; prefer [`Network::forward_write_to`].
    pub async fn forward_write(
        &self,
        leader_raft_addr: &str,
        req: &Request,
        timeout: Duration,
    ) -> Result<Option<Committed>, ForwardError> {
        self.forward_write_to(None, leader_raft_addr, req, timeout)
            .await
    }

    /// Forward a write to the leader, node `leader` at `leader_raft_addr`, waiting at most
    /// `timeout` for its answer (after which the outcome is unknown). `None`: a leader of
    /// the first format answered without the log index.
    pub async fn forward_write_to(
        &self,
        leader: Option<u64>,
        leader_raft_addr: &str,
        req: &Request,
        timeout: Duration,
    ) -> Result<Option<Committed>, ForwardError> {
        let reply: ForwardReply = self
            .forward_with(leader, leader_raft_addr, "/raft/write", req, timeout)
            .await?;
        Ok(reply.committed())
    }

    /// Forward a membership change to the leader at `leader_raft_addr`.
    pub async fn forward_members(
        &self,
        leader_raft_addr: &str,
        change: &MemberChange,
    ) -> Result<(), ForwardError> {
        self.forward(None, leader_raft_addr, "/raft/members", change)
            .await
    }

    /// Forward a membership change to the leader, node `leader` at `leader_raft_addr`.
    pub async fn forward_members_to(
        &self,
        leader: Option<u64>,
        leader_raft_addr: &str,
        change: &MemberChange,
    ) -> Result<(), ForwardError> {
        self.forward(leader, leader_raft_addr, "/raft/members", change)
            .await
    }

    /// Check that node `id` answers at `raft_addr` as itself — over mutual TLS, with a
    /// certificate of the cluster's CA naming `node-<id>` — before it is added. Within
    /// [`PROBE_TIMEOUT`]; an error says what failed. The answer is the entry format it
    /// applies.
    pub async fn probe(&self, id: u64, raft_addr: &str) -> Result<u32, ForwardError> {
        // A node started a moment ago may not listen yet: wait (bounded) for its port first.
        let deadline = Instant::now() + PROBE_CONNECT_WAIT;
        loop {
            let attempt =
                tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(raft_addr))
                    .await;
            match attempt {
                Ok(Ok(_)) => break,
                _ if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await
                }
                Ok(Err(e)) => {
                    return Err(ForwardError::Unavailable(format!(
                        "node {id} at {raft_addr} unreachable: {e}"
                    )))
                }
                Err(_) => {
                    return Err(ForwardError::Unavailable(format!(
                        "node {id} at {raft_addr} unreachable: connect timed out"
                    )))
                }
            }
        }
        self.ask(id, raft_addr, PROBE_TIMEOUT)
            .await
            .map(|a| a.format)
    }

    /// What member `id` at `raft_addr` says of itself on `/raft/probe` (the entry format it
    /// applies, how far it applied) within `timeout`, at once: no wait for a port that is
    /// not open yet.
    pub async fn ask(
        &self,
        id: u64,
        raft_addr: &str,
        timeout: Duration,
    ) -> Result<ProbeAnswer, ForwardError> {
        let answer: ProbeAnswer = tokio::time::timeout(
            timeout,
            self.forward_with(
                Some(id),
                raft_addr,
                "/raft/probe",
                &serde_json::json!({}),
                timeout,
            ),
        )
        .await
        .map_err(|_| {
            ForwardError::Unavailable(format!("node {id} at {raft_addr} did not answer in time"))
        })??;
        if answer.node_id != id {
            return Err(ForwardError::Unavailable(format!(
                "{raft_addr} is node {}, not node {id}",
                answer.node_id
            )));
        }
        Ok(answer)
    }

    /// Ask node `target` at `raft_addr` whether it would vote for this node
    /// ([`crate::cluster::prevote`]), waiting at most `timeout`.
    pub async fn prevote(
        &self,
        target: u64,
        raft_addr: &str,
        req: &PreVoteRequest,
        timeout: Duration,
    ) -> Result<PreVoteAnswer, ForwardError> {
        tokio::time::timeout(
            timeout,
            self.forward_with(
                Some(target),
                raft_addr,
                crate::cluster::prevote::PATH,
                req,
                timeout,
            ),
        )
        .await
        .map_err(|_| ForwardError::Unavailable(format!("{raft_addr} did not answer in time")))?
    }

    async fn forward<B: Serialize, R: DeserializeOwned>(
        &self,
        target: Option<u64>,
        leader_raft_addr: &str,
        path: &str,
        body: &B,
    ) -> Result<R, ForwardError> {
        self.forward_with(target, leader_raft_addr, path, body, FORWARD_TIMEOUT)
            .await
    }

    async fn forward_with<B: Serialize, R: DeserializeOwned>(
        &self,
        target: Option<u64>,
        leader_raft_addr: &str,
        path: &str,
        body: &B,
        timeout: Duration,
    ) -> Result<R, ForwardError> {
        let unavailable = |e: reqwest::Error| {
            let e = ErrorChain(&e);
            if e.0.is_connect() {
                ForwardError::Unavailable(format!("{leader_raft_addr} unreachable: {e}"))
            } else if e.0.is_timeout() {
                ForwardError::Unknown(format!(
                    "{leader_raft_addr} did not answer in time (the write may still apply): {e}"
                ))
            } else {
                ForwardError::Unavailable(format!("forwarding to {leader_raft_addr}: {e}"))
            }
        };
        let resp = self
            .post(target, leader_raft_addr, path, timeout)
            .json(body)
            .send()
            .await
            .map_err(unavailable)?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(unavailable)?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| {
                ForwardError::Unavailable(format!(
                    "{leader_raft_addr} answered an unreadable response: {e}"
                ))
            });
        }
        if let Ok(e) = serde_json::from_slice::<ForwardError>(&bytes) {
            return Err(e);
        }
        Err(match status {
            StatusCode::UNAUTHORIZED => ForwardError::Unauthorized,
            StatusCode::NOT_FOUND => {
                ForwardError::NotServed(format!("{leader_raft_addr} does not serve {path}"))
            }
            _ => ForwardError::Unavailable(format!(
                "{leader_raft_addr} answered {status}: {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(512)])
            )),
        })
    }
}

/// An error with its sources, `a: b: c` (reqwest's own message hides the TLS reason).
struct ErrorChain<'a>(&'a reqwest::Error);

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = std::error::Error::source(self.0);
        let mut last = String::new();
        for _ in 0..8 {
            let Some(s) = source else { break };
            let text = s.to_string();
            if text != last {
                write!(f, ": {text}")?;
            }
            last = text;
            source = s.source();
        }
        Ok(())
    }
}

impl openraft::RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> PeerClient {
        PeerClient {
            net: self.clone(),
            target,
            node: node.clone(),
        }
    }
}

/// The connection to one peer (no connection is held: the pool in [`Network`] keeps them).
#[derive(Clone)]
pub struct PeerClient {
    net: Network,
    target: NodeId,
    node: NodeInfo,
}

/// A string error, for `NetworkError::new`/`Unreachable::new`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Msg(String);

impl PeerClient {
    /// POST `body` to `path` on the peer, and read the answer, mapping every failure onto the
    /// `RPCError` variant openraft expects. `id` (the sender, from the request's vote) is needed
    /// to build a `Timeout`; without it a timeout is a `NetworkError`.
    async fn call<Q, A, E>(
        &self,
        path: &str,
        action: RPCTypes,
        id: Option<NodeId>,
        body: &Q,
        timeout: Duration,
    ) -> Result<A, RpcError<E>>
    where
        Q: Serialize,
        A: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let body = match serde_json::to_vec(body) {
            Ok(b) => b,
            Err(e) => {
                return Err(RPCError::Network(NetworkError::new(&Msg(format!(
                    "{action} to {}: cannot encode the request: {e}",
                    self.node.raft
                )))))
            }
        };
        self.call_raw(path, action, id, body, timeout).await
    }

    /// [`PeerClient::call`] of a body already encoded as JSON.
    async fn call_raw<A, E>(
        &self,
        path: &str,
        action: RPCTypes,
        id: Option<NodeId>,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<A, RpcError<E>>
    where
        A: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let map_err = |e: reqwest::Error| -> RpcError<E> {
            let chain = Msg(format!(
                "{action} to {}: {}",
                self.node.raft,
                ErrorChain(&e)
            ));
            if e.is_connect() {
                RPCError::Unreachable(Unreachable::new(&chain))
            } else if e.is_timeout() {
                match id {
                    Some(id) => RPCError::Timeout(Timeout {
                        action,
                        id,
                        target: self.target,
                        timeout,
                    }),
                    None => RPCError::Network(NetworkError::new(&chain)),
                }
            } else {
                RPCError::Network(NetworkError::new(&chain))
            }
        };
        let result = async {
            let resp = self
                .net
                .post(Some(self.target), &self.node.raft, path, timeout)
                .header(header::CONTENT_TYPE, "application/json")
                .body(body)
                .send()
                .await
                .map_err(map_err)?;
            let status = resp.status();
            let bytes = resp.bytes().await.map_err(map_err)?;
            Ok((status, bytes))
        }
        .await;
        let (status, bytes) = match result {
            Ok(r) => r,
            Err(e) => {
                self.net.note(self.target, &self.node.raft, Some(&e));
                return Err(e);
            }
        };
        if status.is_success() {
            self.net.note(self.target, &self.node.raft, None);
            return serde_json::from_slice(&bytes).map_err(|e| {
                RPCError::Network(NetworkError::new(&Msg(format!(
                    "{action} to {}: unreadable answer: {e}",
                    self.node.raft
                ))))
            });
        }
        let e = self.error_answer(action, status, &bytes);
        // A peer that refuses this node is as good as down; any other answer means it is up.
        if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
            self.net.note(self.target, &self.node.raft, Some(&e));
        } else {
            self.net.note(self.target, &self.node.raft, None);
        }
        Err(e)
    }

    /// The transfer to this peer that carries the first of `rpc`'s entries from the same
    /// leader, if one is under way or done: `rpc` is then a retry.
    fn joinable(
        &self,
        rpc: &AppendEntriesRequest<TypeConfig>,
    ) -> Option<tokio::sync::watch::Receiver<Option<AppendResult>>> {
        let last = rpc.entries.last().map(|e| e.log_id);
        let transfers = self.net.transfers.lock().unwrap_or_else(|p| p.into_inner());
        transfers
            .get(&self.target)
            .filter(|t| {
                t.vote == rpc.vote
                    && t.prev == rpc.prev_log_id
                    && t.last <= last
                    && t.last > rpc.prev_log_id
            })
            .map(|t| t.answer.clone())
    }

    /// Start a [`Transfer`] of `body` (the encoded `rpc`), replacing any other to this peer.
    fn start_transfer(
        &self,
        rpc: &AppendEntriesRequest<TypeConfig>,
        body: Vec<u8>,
    ) -> tokio::sync::watch::Receiver<Option<AppendResult>> {
        let id = rpc.vote.leader_id().voted_for();
        let bytes = body.len();
        let timeout = transfer_timeout(bytes);
        tracing::info!(
            target = self.target,
            bytes,
            entries = rpc.entries.len(),
            timeout_ms = timeout.as_millis() as u64,
            "sending a large AppendEntries in the background"
        );
        let (tx, rx) = tokio::sync::watch::channel(None);
        let peer = self.clone();
        let task = tokio::spawn(async move {
            let r = peer
                .call_raw("/raft/append", RPCTypes::AppendEntries, id, body, timeout)
                .await;
            let _ = tx.send(Some(r));
        });
        let transfer = Transfer {
            vote: rpc.vote,
            prev: rpc.prev_log_id,
            last: rpc.entries.last().map(|e| e.log_id),
            answer: rx.clone(),
            task,
        };
        let mut transfers = self.net.transfers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = transfers.insert(self.target, transfer) {
            old.task.abort();
        }
        rx
    }

    /// One attempt at a large AppendEntries: a heartbeat, then the transfer's answer if it
    /// comes within this attempt's time (a timeout otherwise: openraft tries again).
    async fn wait_transfer(
        &self,
        rpc: &AppendEntriesRequest<TypeConfig>,
        mut answer: tokio::sync::watch::Receiver<Option<AppendResult>>,
        option: &RPCOption,
    ) -> AppendResult {
        let started = Instant::now();
        let id = rpc.vote.leader_id().voted_for();
        let last = rpc.entries.last().map(|e| e.log_id);
        let budget = rpc_timeout(option);
        // The heartbeat: the follower hears its leader while the bytes are on their way.
        // Its answer holds for `rpc` too (same vote, same previous entry): a higher vote or
        // a conflict is the answer.
        let beat = AppendEntriesRequest::<TypeConfig> {
            vote: rpc.vote,
            prev_log_id: rpc.prev_log_id,
            entries: Vec::new(),
            leader_commit: rpc.leader_commit,
        };
        let beat = self
            .call::<_, AppendEntriesResponse<NodeId>, openraft::error::Infallible>(
                "/raft/append",
                RPCTypes::AppendEntries,
                id,
                &beat,
                budget,
            )
            .await;
        match beat {
            Ok(AppendEntriesResponse::Success) => self.net.contact.ack(self.target),
            Ok(other) => return Ok(other),
            Err(_) => {}
        }
        let left = budget.saturating_sub(started.elapsed());
        let result = match tokio::time::timeout(left, answer.wait_for(Option::is_some)).await {
            Ok(Ok(r)) => r.as_ref().map(copy_answer),
            // The task is gone (replaced by another transfer), or not done yet.
            Ok(Err(_)) | Err(_) => None,
        };
        let Some(result) = result else {
            return Err(RPCError::Timeout(Timeout {
                action: RPCTypes::AppendEntries,
                id: id.unwrap_or_default(),
                target: self.target,
                timeout: budget,
            }));
        };
        // Taken: the next large request starts afresh.
        let carried = {
            let mut transfers = self.net.transfers.lock().unwrap_or_else(|p| p.into_inner());
            let ours = transfers
                .get(&self.target)
                .is_some_and(|t| t.answer.same_channel(&answer));
            if ours {
                transfers.remove(&self.target).and_then(|t| t.last)
            } else {
                last
            }
        };
        match result {
            // The transfer carried the first of these entries only.
            Ok(AppendEntriesResponse::Success) if carried < last => {
                Ok(AppendEntriesResponse::PartialSuccess(carried))
            }
            r => r,
        }
    }

    /// Map a non-2xx answer.
    fn error_answer<E>(&self, action: RPCTypes, status: StatusCode, body: &[u8]) -> RpcError<E>
    where
        E: std::error::Error + DeserializeOwned,
    {
        let parsed = serde_json::from_slice::<RpcErrorBody>(body).ok();
        if let Some(raft) = parsed.as_ref().and_then(|b| b.raft.clone()) {
            match serde_json::from_value::<RaftError<NodeId, E>>(raft) {
                Ok(e) => {
                    return RPCError::RemoteError(RemoteError::new_with_node(
                        self.target,
                        self.node.clone(),
                        e,
                    ))
                }
                Err(e) => {
                    return RPCError::Network(NetworkError::new(&Msg(format!(
                        "{action} to {}: {status} with an unreadable raft error: {e}",
                        self.node.raft
                    ))))
                }
            }
        }
        let message = match parsed {
            Some(b) => b.message,
            None => String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned(),
        };
        let msg = Msg(format!(
            "{action} to {}: {status}: {message}",
            self.node.raft
        ));
        match status {
            // A secret mismatch or a refused certificate will not fix itself by retrying at
            // once: back off.
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                RPCError::Unreachable(Unreachable::new(&msg))
            }
            StatusCode::PAYLOAD_TOO_LARGE if action == RPCTypes::AppendEntries => {
                RPCError::PayloadTooLarge(
                    PayloadTooLarge::new_entries_hint(1).with_source_error(&msg),
                )
            }
            _ => RPCError::Network(NetworkError::new(&msg)),
        }
    }
}

/// A copy of an AppendEntries answer (openraft's type is not `Clone`).
// The error is openraft's, as its trait returns it.
#[allow(clippy::result_large_err)]
fn copy_answer(r: &AppendResult) -> AppendResult {
    match r {
        Ok(AppendEntriesResponse::Success) => Ok(AppendEntriesResponse::Success),
        Ok(AppendEntriesResponse::PartialSuccess(l)) => {
            Ok(AppendEntriesResponse::PartialSuccess(*l))
        }
        Ok(AppendEntriesResponse::Conflict) => Ok(AppendEntriesResponse::Conflict),
        Ok(AppendEntriesResponse::HigherVote(v)) => Ok(AppendEntriesResponse::HigherVote(*v)),
        Err(e) => Err(e.clone()),
    }
}

/// How long a large AppendEntries may take: 5 s, and a second for every 4 MiB (the follower
/// reads, decodes and flushes it to disk before it answers).
fn transfer_timeout(bytes: usize) -> Duration {
    Duration::from_secs(5) + Duration::from_millis((bytes / (4 * 1024 * 1024)) as u64 * 1000)
}

/// The request timeout for append/vote: the soft TTL, so that the RPC ends (as a `Timeout`)
/// before openraft drops it at the hard TTL.
fn rpc_timeout(option: &RPCOption) -> Duration {
    let soft = option.soft_ttl();
    if soft.is_zero() {
        if option.hard_ttl().is_zero() {
            DEFAULT_RPC_TIMEOUT
        } else {
            option.hard_ttl()
        }
    } else {
        soft
    }
}

impl openraft::RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcError> {
        let id = rpc.vote.leader_id().voted_for();
        let n = rpc.entries.len() as u64;
        let joined = if n > 0 { self.joinable(&rpc) } else { None };
        let r = if let Some(answer) = joined {
            self.wait_transfer(&rpc, answer, &option).await
        } else {
            let body = match serde_json::to_vec(&rpc) {
                Ok(b) => b,
                Err(e) => {
                    return Err(RPCError::Network(NetworkError::new(&Msg(format!(
                        "AppendEntries to {}: cannot encode the request: {e}",
                        self.node.raft
                    )))))
                }
            };
            if n > 0 && body.len() >= LARGE_APPEND {
                let answer = self.start_transfer(&rpc, body);
                self.wait_transfer(&rpc, answer, &option).await
            } else {
                self.call_raw(
                    "/raft/append",
                    RPCTypes::AppendEntries,
                    id,
                    body,
                    rpc_timeout(&option),
                )
                .await
            }
        };
        if let Ok(resp) = &r {
            if !matches!(resp, AppendEntriesResponse::HigherVote(_)) {
                self.net.contact.ack(self.target);
            }
        }
        match r {
            // Hint: half as many entries.
            Err(RPCError::PayloadTooLarge(_)) => Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint((n / 2).max(1)),
            )),
            r => r,
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcError<InstallSnapshotError>> {
        if rpc.offset == 0 {
            // A follower too far behind for the log: worth a line (it is rare, and large).
            tracing::info!(node = self.target, snapshot = %rpc.meta.snapshot_id, "sending a snapshot");
        }
        let id = rpc.vote.leader_id().voted_for();
        self.call(
            "/raft/snapshot",
            RPCTypes::InstallSnapshot,
            id,
            &rpc,
            SNAPSHOT_TIMEOUT,
        )
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcError> {
        let id = rpc.vote.leader_id().voted_for();
        self.call("/raft/vote", RPCTypes::Vote, id, &rpc, rpc_timeout(&option))
            .await
    }
}

// ---------------------------------------------------------------------------------------------
// Server side
// ---------------------------------------------------------------------------------------------

/// The server side, served on `[raft] listen` by the node: routes for the three RPCs (calling
/// `raft.append_entries` / `vote` / `install_snapshot`), plus `POST /raft/write`: a client
/// write forwarded by a follower (body: [`Request`]; answers the [`Response`] after commit, or
/// a [`ForwardError`]). Plain HTTP with an optional secret; see [`router_with`].
pub fn router(raft: Raft, secret: Option<String>, write: WriteFn, members: MembersFn) -> Router {
    router_with(
        raft,
        &Transport::plain(secret),
        write,
        members,
        Arc::default(),
    )
}

/// [`router`] for a [`Transport`]: with TLS, every request must come from a member's
/// certificate (served by [`crate::serve`] with the same material).
pub fn router_with(
    raft: Raft,
    transport: &Transport,
    write: WriteFn,
    members: MembersFn,
    transport_contact: Arc<Contact>,
) -> Router {
    let members = Router::new()
        .route(
            "/raft/members",
            post(forwarded_members).layer(DefaultBodyLimit::max(MAX_VOTE_BODY)),
        )
        .with_state(members);
    let probe = Router::new()
        .route(
            "/raft/probe",
            post(probe).layer(DefaultBodyLimit::max(MAX_VOTE_BODY)),
        )
        .with_state(raft.clone());
    let prevote = crate::cluster::prevote::routes(raft.clone(), transport_contact.clone());
    let rpc = RpcState {
        raft: raft.clone(),
        contact: transport_contact,
        snapshots: Arc::default(),
        max_snapshot: transport.max_snapshot,
    };
    let identity = IdentityCheck {
        raft,
        required: transport.tls.is_some(),
    };
    let app = raft_routes(rpc)
        .merge(write_routes(write))
        .merge(members)
        .merge(probe)
        .merge(prevote)
        .layer(axum::middleware::from_fn_with_state(identity, check_peer))
        .layer(axum::middleware::from_fn(require_json));
    guarded(app, transport.secret.clone())
}

/// What the three Raft RPC routes share.
#[derive(Clone)]
struct RpcState {
    raft: Raft,
    /// Who answered lately: an accepted AppendEntries means a leader is heard.
    contact: Arc<Contact>,
    snapshots: Arc<Mutex<Option<Receiving>>>,
    max_snapshot: u64,
}

/// The snapshot being received: its id, where the next chunk starts and where the last one
/// started (a chunk sent again after a lost answer is taken too).
struct Receiving {
    id: String,
    next: u64,
    last: u64,
}

/// Whether this node belongs to a cluster that has node `id` as a member (voter or
/// learner). A node that belongs to no cluster yet serves any peer of the CA: it is being
/// added.
fn is_member(raft: &Raft, id: u64) -> bool {
    let membership = raft.metrics().borrow().membership_config.clone();
    let m = membership.membership();
    m.nodes().next().is_none() || m.get_node(&id).is_some()
}

#[derive(Clone)]
struct IdentityCheck {
    raft: Raft,
    /// Mutual TLS: every request must carry a member's certificate.
    required: bool,
}

/// The refusal of a request, in the answer shape of its route.
fn refuse(path: &str, status: StatusCode, message: String) -> axum::response::Response {
    if path == "/raft/write" || path == "/raft/members" {
        let e = match status {
            StatusCode::FORBIDDEN => ForwardError::Forbidden(message),
            StatusCode::UNAUTHORIZED => ForwardError::Unauthorized,
            _ => ForwardError::BadRequest(message),
        };
        (status, axum::Json(e)).into_response()
    } else {
        rpc_error(status, message, None)
    }
}

/// Over mutual TLS: serve only members' certificates.
async fn check_peer(
    State(check): State<IdentityCheck>,
    req: axum::extract::Request,
    next: Next,
) -> axum::response::Response {
    if !check.required {
        return next.run(req).await;
    }
    let peer = req.extensions().get::<Peer>().copied();
    let refusal = match peer {
        Some(Peer {
            authenticated: true,
            node_id: Some(id),
            ..
        }) => {
            if is_member(&check.raft, id) {
                None
            } else {
                Some(format!("node {id} is not a member of this cluster"))
            }
        }
        Some(Peer {
            authenticated: true,
            node_id: None,
            ..
        }) => Some("the client certificate names no node (a DNS SAN node-N)".to_string()),
        _ => Some("no client certificate".to_string()),
    };
    match refusal {
        None => next.run(req).await,
        Some(why) => {
            tracing::debug!(peer = ?peer, path = %req.uri().path(), why, "raft request refused");
            refuse(req.uri().path(), StatusCode::FORBIDDEN, why)
        }
    }
}

/// Every POST must be `application/json` (a browser's cross-site form cannot send that
/// without a preflight).
async fn require_json(req: axum::extract::Request, next: Next) -> axum::response::Response {
    let json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if req.method() == axum::http::Method::POST && !json {
        return refuse(
            req.uri().path(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "a raft request body must be sent as Content-Type: application/json".into(),
        );
    }
    next.run(req).await
}

/// Over mutual TLS, a Raft RPC must come from the node it names as its sender: the refusal
/// when it does not.
fn wrong_sender(
    peer: &Option<Extension<Peer>>,
    sender: Option<NodeId>,
    what: &str,
) -> Option<axum::response::Response> {
    match peer {
        Some(Extension(Peer {
            authenticated: true,
            node_id,
            ..
        })) if *node_id != sender => Some(rpc_error(
            StatusCode::FORBIDDEN,
            format!(
                "{what} in the name of node {sender:?} from the certificate of node {node_id:?}"
            ),
            None,
        )),
        _ => None,
    }
}

async fn probe(State(raft): State<Raft>) -> axum::response::Response {
    let (node_id, applied) = {
        let m = raft.metrics();
        let m = m.borrow();
        (m.id, m.last_applied.map_or(0, |l| l.index))
    };
    let answer = ProbeAnswer {
        node_id,
        format: FORMAT_VERSION,
        applied,
    };
    (StatusCode::OK, axum::Json(answer)).into_response()
}

/// A membership change, forwarded by a follower to the leader.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum MemberChange {
    Add {
        id: u64,
        raft: String,
        admin: String,
        voter: bool,
    },
    Remove {
        id: u64,
    },
}

/// How `/raft/members` performs a membership change on this node.
pub type MembersFn = Arc<dyn Fn(MemberChange) -> BoxFuture<Result<(), ForwardError>> + Send + Sync>;

async fn forwarded_members(
    State(members): State<MembersFn>,
    body: Result<Bytes, BytesRejection>,
) -> axum::response::Response {
    let change: MemberChange = match body.map(|b| serde_json::from_slice(&b)) {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            return ForwardError::BadRequest(format!("not a membership change: {e}"))
                .into_response()
        }
        Err(r) => return ForwardError::BadRequest(r.body_text()).into_response(),
    };
    match members(change).await {
        Ok(()) => (StatusCode::OK, axum::Json(())).into_response(),
        Err(e) => e.into_response(),
    }
}

fn raft_routes(state: RpcState) -> Router {
    Router::new()
        .route(
            "/raft/append",
            post(append).layer(DefaultBodyLimit::max(MAX_BODY)),
        )
        .route(
            "/raft/vote",
            post(vote).layer(DefaultBodyLimit::max(MAX_VOTE_BODY)),
        )
        .route(
            "/raft/snapshot",
            post(snapshot).layer(DefaultBodyLimit::max(MAX_SNAPSHOT_CHUNK_BODY)),
        )
        .with_state(state)
}

fn write_routes(write: WriteFn) -> Router {
    Router::new()
        .route(
            "/raft/write",
            post(forwarded_write).layer(DefaultBodyLimit::max(MAX_BODY)),
        )
        .with_state(write)
}

/// Put the secret check in front of every route of `router` (nothing when no secret is set).
fn guarded(router: Router, secret: Option<String>) -> Router {
    match secret {
        Some(s) => router.layer(axum::middleware::from_fn_with_state(
            Arc::<str>::from(s),
            check_secret,
        )),
        None => router,
    }
}

async fn check_secret(
    State(secret): State<Arc<str>>,
    headers: HeaderMap,
    req: axum::extract::Request,
    next: Next,
) -> axum::response::Response {
    let ok = headers
        .get(SECRET_HEADER)
        .is_some_and(|v| constant_time_eq(secret.as_bytes(), v.as_bytes()));
    if ok {
        return next.run(req).await;
    }
    tracing::warn!(path = %req.uri().path(), "raft RPC with a missing or wrong secret");
    if req.uri().path() == "/raft/write" {
        ForwardError::Unauthorized.into_response()
    } else {
        rpc_error(
            StatusCode::UNAUTHORIZED,
            "wrong or missing raft secret".into(),
            None,
        )
    }
}

/// Compare a secret in time that depends only on the expected secret's length.
fn constant_time_eq(expected: &[u8], given: &[u8]) -> bool {
    let mut diff = u8::from(expected.len() != given.len());
    for (i, &e) in expected.iter().enumerate() {
        diff |= e ^ given.get(i).copied().unwrap_or(!e);
    }
    std::hint::black_box(diff) == 0
}

fn rpc_error(
    status: StatusCode,
    message: String,
    raft: Option<serde_json::Value>,
) -> axum::response::Response {
    (status, axum::Json(RpcErrorBody { message, raft })).into_response()
}

/// Parse a JSON body; when it cannot, the status (400/413) and message to answer.
fn parse<T: DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, (StatusCode, String)> {
    let bytes = body.map_err(|r| (r.status(), r.body_text()))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| (StatusCode::BAD_REQUEST, format!("bad request body: {e}")))
}

/// The answer to a Raft RPC: 200 with the response, or the `RaftError` with a real status.
fn answer<T, E>(r: Result<T, RaftError<NodeId, E>>) -> axum::response::Response
where
    T: Serialize,
    E: std::error::Error + Serialize,
{
    match r {
        Ok(t) => (StatusCode::OK, axum::Json(t)).into_response(),
        Err(e) => {
            let status = match &e {
                RaftError::APIError(_) => StatusCode::CONFLICT,
                RaftError::Fatal(Fatal::Stopped) => StatusCode::SERVICE_UNAVAILABLE,
                RaftError::Fatal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            };
            let message = e.to_string();
            match serde_json::to_value(&e) {
                Ok(v) => rpc_error(status, message, Some(v)),
                Err(se) => rpc_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("{message} (not serializable: {se})"),
                    None,
                ),
            }
        }
    }
}

async fn append(
    State(st): State<RpcState>,
    peer: Option<Extension<Peer>>,
    body: Result<Bytes, BytesRejection>,
) -> axum::response::Response {
    match parse::<AppendEntriesRequest<TypeConfig>>(body) {
        Ok(rpc) => {
            if let Some(r) = wrong_sender(&peer, rpc.vote.leader_id().voted_for(), "AppendEntries")
            {
                return r;
            }
            let r = st.raft.append_entries(rpc).await;
            if let Ok(resp) = &r {
                if !matches!(resp, AppendEntriesResponse::HigherVote(_)) {
                    st.contact.heard_leader();
                }
            }
            answer(r)
        }
        Err((status, message)) => rpc_error(status, message, None),
    }
}

async fn vote(
    State(st): State<RpcState>,
    peer: Option<Extension<Peer>>,
    body: Result<Bytes, BytesRejection>,
) -> axum::response::Response {
    match parse::<VoteRequest<NodeId>>(body) {
        Ok(rpc) => {
            if let Some(r) = wrong_sender(&peer, rpc.vote.leader_id().voted_for(), "a vote request")
            {
                return r;
            }
            answer(st.raft.vote(rpc).await)
        }
        Err((status, message)) => rpc_error(status, message, None),
    }
}

/// A snapshot chunk answered `SnapshotMismatch`: the leader starts over at offset 0.
fn mismatch(expect: (String, u64), got: (String, u64)) -> axum::response::Response {
    let m = openraft::error::SnapshotMismatch {
        expect: openraft::SnapshotSegmentId {
            id: expect.0,
            offset: expect.1,
        },
        got: openraft::SnapshotSegmentId {
            id: got.0,
            offset: got.1,
        },
    };
    answer::<InstallSnapshotResponse<NodeId>, _>(Err(RaftError::APIError(
        InstallSnapshotError::SnapshotMismatch(m),
    )))
}

async fn snapshot(
    State(st): State<RpcState>,
    peer: Option<Extension<Peer>>,
    body: Result<Bytes, BytesRejection>,
) -> axum::response::Response {
    let rpc = match parse::<InstallSnapshotRequest<TypeConfig>>(body) {
        Ok(rpc) => rpc,
        Err((status, message)) => return rpc_error(status, message, None),
    };
    let sender = rpc.vote.leader_id().voted_for();
    if let Some(r) = wrong_sender(&peer, sender, "InstallSnapshot") {
        return r;
    }
    // From the leader of this node's term or of a newer one only.
    let current = st.raft.metrics().borrow().vote;
    if !rpc.vote.is_committed() || rpc.vote < current {
        return rpc_error(
            StatusCode::FORBIDDEN,
            format!(
                "InstallSnapshot from node {sender:?} with vote {}: not the current leader ({current})",
                rpc.vote
            ),
            None,
        );
    }
    let id = rpc.meta.snapshot_id.clone();
    let (offset, done) = (rpc.offset, rpc.done);
    let end = offset.checked_add(rpc.data.len() as u64);
    if end.is_none_or(|e| e > st.max_snapshot) {
        tracing::warn!(
            snapshot = %id, offset, max = st.max_snapshot,
            "InstallSnapshot refused: larger than [raft] max_snapshot"
        );
        return rpc_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the snapshot would exceed [raft] max_snapshot ({} bytes) on this node",
                st.max_snapshot
            ),
            None,
        );
    }
    {
        let recv = st.snapshots.lock().unwrap_or_else(|p| p.into_inner());
        let in_order = offset == 0
            || recv.as_ref().is_some_and(|r| {
                r.id == id && (offset == r.next || (offset == r.last && end == Some(r.next)))
            });
        if !in_order {
            let expect = match recv.as_ref() {
                Some(r) => (r.id.clone(), r.next),
                None => (id.clone(), 0),
            };
            return mismatch(expect, (id, offset));
        }
    }
    let result = st.raft.install_snapshot(rpc).await;
    if result.is_ok() {
        let mut recv = st.snapshots.lock().unwrap_or_else(|p| p.into_inner());
        *recv = match (done, end) {
            (false, Some(next)) => Some(Receiving {
                id,
                next,
                last: offset,
            }),
            _ => None,
        };
    }
    answer(result)
}

async fn forwarded_write(
    State(write): State<WriteFn>,
    peer: Option<axum::Extension<Peer>>,
    body: Result<Bytes, BytesRejection>,
) -> axum::response::Response {
    let bytes = match body {
        Ok(b) => b,
        Err(r) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                axum::Json(ForwardError::BadRequest(r.body_text())),
            )
                .into_response()
        }
        Err(r) => return ForwardError::BadRequest(r.body_text()).into_response(),
    };
    let req: Request = match serde_json::from_slice(&bytes) {
        Ok(r) => r,
        Err(e) => return ForwardError::BadRequest(format!("not a request: {e}")).into_response(),
    };
    // Over mutual TLS a node speaks for itself only: a member cannot report health under
    // other node ids.
    if let (Some(axum::Extension(peer)), Command::HealthReport { node, .. }) = (&peer, &req.cmd) {
        if let Some(id) = peer.node_id.filter(|_| peer.authenticated) {
            if id != *node {
                return ForwardError::Forbidden(format!(
                    "node {id} cannot report health as node {node}"
                ))
                .into_response();
            }
        }
    }
    // Never commit an entry this leader could not apply itself.
    if req.v > FORMAT_VERSION {
        return ForwardError::BadRequest(format!(
            "entry format v{} is newer than this leader's v{FORMAT_VERSION}",
            req.v
        ))
        .into_response();
    }
    match write(req).await {
        Ok(committed) => (StatusCode::OK, axum::Json(committed)).into_response(),
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::command::Command;
    use openraft::{RaftNetwork, RaftNetworkFactory};
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// The forward timeout of the tests.
    const T: Duration = Duration::from_secs(5);

    async fn serve(router: Router) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        addr
    }

    /// A write stub counting its calls: `delete_zone` of "not.leader." answers NotLeader.
    fn stub(calls: Arc<AtomicUsize>) -> WriteFn {
        Arc::new(move |req: Request| {
            calls.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                match req.cmd {
                    Command::DeleteZone { origin } if origin == "not.leader." => {
                        Err(ForwardError::NotLeader { leader: Some(3) })
                    }
                    _ => Ok(Committed {
                        response: Response::Deleted,
                        index: 7,
                    }),
                }
            })
        })
    }

    fn req(origin: &str) -> Request {
        Request::new(Command::DeleteZone {
            origin: origin.into(),
        })
    }

    fn vote_req() -> VoteRequest<NodeId> {
        VoteRequest::new(openraft::Vote::new(1, 1), None)
    }

    /// A closed loopback port.
    async fn closed_port() -> std::net::SocketAddr {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        drop(l);
        addr
    }

    async fn peer(net: &Network, addr: std::net::SocketAddr) -> PeerClient {
        let mut net = net.clone();
        net.new_client(
            2,
            &NodeInfo {
                raft: addr.to_string(),
                admin: String::new(),
            },
        )
        .await
    }

    #[test]
    fn constant_time_compare() {
        assert!(constant_time_eq(b"s3cret", b"s3cret"));
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"s3cret", b"s3cres"));
        assert!(!constant_time_eq(b"s3cret", b"s3cre"));
        assert!(!constant_time_eq(b"s3cret", b"s3cret!"));
        assert!(!constant_time_eq(b"s3cret", b""));
        assert!(!constant_time_eq(b"", b"x"));
        // A byte that would XOR to zero with the filler must not match.
        assert!(!constant_time_eq(&[0xff], &[]));
        assert!(!constant_time_eq(&[0x00], &[]));
    }

    #[tokio::test]
    async fn secret_required_on_every_route() {
        let calls = Arc::new(AtomicUsize::new(0));
        let app = guarded(write_routes(stub(calls.clone())), Some("s3cret".into()));
        let addr = serve(app).await;
        let http = reqwest::Client::new();
        let body = serde_json::to_vec(&req("example.com.")).expect("json");

        // No header, a wrong one, a longer one: 401 and the write is not performed.
        for secret in [None, Some("wrong!"), Some("s3cret2"), Some("")] {
            let mut b = http
                .post(format!("http://{addr}/raft/write"))
                .header("content-type", "application/json")
                .body(body.clone());
            if let Some(s) = secret {
                b = b.header(SECRET_HEADER, s);
            }
            let resp = b.send().await.expect("send");
            assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{secret:?}");
            let e: ForwardError = resp.json().await.expect("json error body");
            assert_eq!(e, ForwardError::Unauthorized);
        }
        // The Raft routes answer the RPC error body.
        let resp = http
            .post(format!("http://{addr}/raft/vote"))
            .body("{}")
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        let e: RpcErrorBody = resp.json().await.expect("json error body");
        assert!(e.raft.is_none());
        assert_eq!(calls.load(Ordering::SeqCst), 0);

        // Through Network: the wrong secret → Unauthorized, the right one → performed.
        let wrong = Network::new(Some("nope".into()));
        assert_eq!(
            wrong
                .forward_write(&addr.to_string(), &req("example.com."), T)
                .await,
            Err(ForwardError::Unauthorized)
        );
        let none = Network::new(None);
        assert_eq!(
            none.forward_write(&addr.to_string(), &req("example.com."), T)
                .await,
            Err(ForwardError::Unauthorized)
        );
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        let right = Network::new(Some("s3cret".into()));
        assert_eq!(
            right
                .forward_write(&addr.to_string(), &req("example.com."), T)
                .await,
            Ok(Some(Committed {
                response: Response::Deleted,
                index: 7
            }))
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        // A peer with the wrong secret backs off (Unreachable).
        let mut p = peer(&wrong, addr).await;
        let r = p
            .vote(vote_req(), RPCOption::new(Duration::from_secs(1)))
            .await;
        assert!(matches!(r, Err(RPCError::Unreachable(_))), "{r:?}");
    }

    #[tokio::test]
    async fn no_secret_ignores_header() {
        let calls = Arc::new(AtomicUsize::new(0));
        let addr = serve(guarded(write_routes(stub(calls.clone())), None)).await;
        let net = Network::new(Some("whatever".into()));
        assert_eq!(
            net.forward_write(&addr.to_string(), &req("example.com."), T)
                .await,
            Ok(Some(Committed {
                response: Response::Deleted,
                index: 7
            }))
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn forward_write_errors() {
        let calls = Arc::new(AtomicUsize::new(0));
        let addr = serve(guarded(write_routes(stub(calls.clone())), None)).await;
        let net = Network::new(None);
        let a = addr.to_string();

        // The leader's error comes back as itself.
        assert_eq!(
            net.forward_write(&a, &req("not.leader."), T).await,
            Err(ForwardError::NotLeader { leader: Some(3) })
        );
        // A newer entry format is refused before it reaches Raft.
        let mut newer = req("example.com.");
        newer.v = FORMAT_VERSION + 1;
        assert!(matches!(
            net.forward_write(&a, &newer, T).await,
            Err(ForwardError::BadRequest(_))
        ));
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        // Garbage: 400 with a ForwardError body.
        let resp = reqwest::Client::new()
            .post(format!("http://{a}/raft/write"))
            .body("not json")
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        assert!(matches!(
            resp.json::<ForwardError>().await,
            Ok(ForwardError::BadRequest(_))
        ));

        // Nobody listening.
        let closed = closed_port().await.to_string();
        assert!(matches!(
            net.forward_write(&closed, &req("example.com."), T).await,
            Err(ForwardError::Unavailable(_))
        ));
    }

    #[tokio::test]
    async fn unreachable_peer() {
        let net = Network::new(None);
        let mut p = peer(&net, closed_port().await).await;
        let r = p
            .vote(vote_req(), RPCOption::new(Duration::from_secs(1)))
            .await;
        assert!(matches!(r, Err(RPCError::Unreachable(_))), "{r:?}");
    }

    #[tokio::test]
    async fn slow_peer_times_out() {
        let app = Router::new().route(
            "/raft/vote",
            post(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "{}"
            }),
        );
        let addr = serve(app).await;
        let net = Network::new(None);
        let mut p = peer(&net, addr).await;
        let r = p
            .vote(vote_req(), RPCOption::new(Duration::from_millis(200)))
            .await;
        match r {
            Err(RPCError::Timeout(t)) => {
                assert_eq!((t.id, t.target, t.action), (1, 2, RPCTypes::Vote));
                assert_eq!(t.timeout, Duration::from_millis(150));
            }
            r => panic!("expected a timeout, got {r:?}"),
        }
    }

    /// A RaftError answered by a peer comes back as the same RemoteError; other failures as
    /// NetworkError / PayloadTooLarge.
    #[tokio::test]
    async fn remote_errors_round_trip() {
        let app = Router::new()
            .route(
                "/raft/vote",
                post(|| async {
                    answer::<VoteResponse<NodeId>, _>(Err(RaftError::<NodeId>::Fatal(
                        Fatal::Stopped,
                    )))
                }),
            )
            .route(
                "/raft/snapshot",
                post(|| async {
                    let mismatch = openraft::error::SnapshotMismatch {
                        expect: openraft::SnapshotSegmentId {
                            id: "s1".into(),
                            offset: 0,
                        },
                        got: openraft::SnapshotSegmentId {
                            id: "s1".into(),
                            offset: 7,
                        },
                    };
                    answer::<InstallSnapshotResponse<NodeId>, _>(Err(RaftError::APIError(
                        InstallSnapshotError::SnapshotMismatch(mismatch),
                    )))
                }),
            )
            .route(
                "/raft/append",
                post(|| async { (StatusCode::PAYLOAD_TOO_LARGE, "too big") }),
            );
        let addr = serve(app).await;
        let net = Network::new(None);
        let mut p = peer(&net, addr).await;
        let opt = RPCOption::new(Duration::from_secs(2));

        match p.vote(vote_req(), opt.clone()).await {
            Err(RPCError::RemoteError(e)) => {
                assert_eq!(e.target, 2);
                assert_eq!(e.source, RaftError::Fatal(Fatal::Stopped));
            }
            r => panic!("expected a remote error, got {r:?}"),
        }

        let snap = InstallSnapshotRequest {
            vote: openraft::Vote::new(1, 1),
            meta: Default::default(),
            offset: 7,
            data: vec![1, 2, 3],
            done: false,
        };
        match p.install_snapshot(snap, opt.clone()).await {
            Err(RPCError::RemoteError(RemoteError {
                source: RaftError::APIError(InstallSnapshotError::SnapshotMismatch(m)),
                ..
            })) => assert_eq!(m.got.offset, 7),
            r => panic!("expected a snapshot mismatch, got {r:?}"),
        }

        let append = AppendEntriesRequest::<TypeConfig> {
            vote: openraft::Vote::new(1, 1),
            prev_log_id: None,
            entries: vec![Default::default(); 6],
            leader_commit: None,
        };
        match p.append_entries(append, opt).await {
            Err(RPCError::PayloadTooLarge(t)) => assert_eq!(t.entries_hint(), 3),
            r => panic!("expected PayloadTooLarge, got {r:?}"),
        }
    }

    /// InstallSnapshot: JSON only, from a committed leader vote not older than this node's,
    /// chunks in order (or the last one again), up to `max_snapshot` in all; every refusal
    /// before openraft buffers anything.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn install_snapshot_takes_ordered_chunks_from_the_leader_within_the_cap() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let config = Arc::new(openraft::Config::default().validate().expect("config"));
        let (log, sm) = crate::cluster::store::open(tmp.path()).expect("store");
        let raft = Raft::new(2, config, Network::new(None), log, sm)
            .await
            .expect("raft");
        let transport = Transport {
            max_snapshot: 1000,
            ..Transport::default()
        };
        let calls = Arc::new(AtomicUsize::new(0));
        let members: MembersFn = Arc::new(|_| Box::pin(async { Ok(()) }));
        let app = router_with(
            raft.clone(),
            &transport,
            stub(calls),
            members,
            Arc::default(),
        );
        let addr = serve(app).await;
        let http = reqwest::Client::new();
        let url = format!("http://{addr}/raft/snapshot");
        let send = |vote: openraft::Vote<u64>, offset: u64, len: usize| {
            let rpc = InstallSnapshotRequest::<TypeConfig> {
                vote,
                meta: openraft::SnapshotMeta {
                    snapshot_id: "s1".into(),
                    ..Default::default()
                },
                offset,
                data: vec![7; len],
                done: false,
            };
            let req = http.post(&url).json(&rpc);
            async move {
                let resp = req.send().await.expect("send");
                let status = resp.status();
                let body: RpcErrorBody = resp.json().await.unwrap_or(RpcErrorBody {
                    message: String::new(),
                    raft: None,
                });
                (status, body)
            }
        };
        let leader = openraft::Vote::new_committed(1, 1);
        // This node voted for node 1 in term 1 (as it would before node 1 leads).
        raft.vote(VoteRequest::new(openraft::Vote::new(1, 1), None))
            .await
            .expect("vote");
        raft.wait(Some(Duration::from_secs(5)))
            .metrics(|m| m.vote.leader_id().term == 1, "voted")
            .await
            .expect("vote seen");

        // Not JSON: 415, whatever the body.
        let resp = http
            .post(&url)
            .header("content-type", "text/plain")
            .body("{}")
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        // A candidate's vote, not a leader's.
        let (status, _) = send(openraft::Vote::new(1, 1), 0, 10).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        // A huge offset: past the cap, refused before anything is buffered.
        assert_eq!(
            send(leader, 1 << 40, 3).await.0,
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert_eq!(
            send(leader, u64::MAX, 3).await.0,
            StatusCode::PAYLOAD_TOO_LARGE
        );
        // Not at the start: a mismatch the leader answers by starting over at 0.
        let (status, body) = send(leader, 500, 3).await;
        assert_eq!(status, StatusCode::CONFLICT, "{}", body.message);
        assert!(
            body.raft.is_some() && body.message.contains("mismatch"),
            "{}",
            body.message
        );
        // In order.
        assert_eq!(send(leader, 0, 10).await.0, StatusCode::OK);
        assert_eq!(send(leader, 500, 3).await.0, StatusCode::CONFLICT);
        assert_eq!(send(leader, 5, 10).await.0, StatusCode::CONFLICT);
        assert_eq!(send(leader, 10, 10).await.0, StatusCode::OK);
        // The last chunk again (its answer was lost): taken.
        assert_eq!(send(leader, 10, 10).await.0, StatusCode::OK);
        // Past the cap, as one chunk or in all.
        assert_eq!(send(leader, 20, 990).await.0, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(send(leader, 0, 1001).await.0, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(send(leader, 20, 980).await.0, StatusCode::OK);
        // An older leader than the one this node follows.
        let (status, _) = send(openraft::Vote::new_committed(0, 3), 0, 10).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let _ = raft.shutdown().await;
    }

    /// One node: a real Raft on a sled store in `dir`, its router served on a loopback port.
    async fn real_node(
        id: u64,
        dir: &std::path::Path,
        secret: Option<&str>,
        config: Arc<openraft::Config>,
    ) -> (Raft, std::net::SocketAddr) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (log, sm) = crate::cluster::store::open(dir).expect("store");
        let net = Network::new(secret.map(String::from));
        let raft = Raft::new(id, config, net, log, sm).await.expect("raft");
        let r = raft.clone();
        let write: WriteFn = Arc::new(move |req: Request| {
            let r = r.clone();
            Box::pin(async move {
                match r.client_write(req).await {
                    Ok(w) => Ok(Committed {
                        response: w.data,
                        index: w.log_id.index,
                    }),
                    Err(RaftError::APIError(
                        openraft::error::ClientWriteError::ForwardToLeader(f),
                    )) => Err(ForwardError::NotLeader {
                        leader: f.leader_id,
                    }),
                    Err(e) => Err(ForwardError::Unavailable(e.to_string())),
                }
            })
        });
        let members: MembersFn = Arc::new(|_| Box::pin(async { Ok(()) }));
        let app = router(raft.clone(), secret.map(String::from), write, members);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (raft, addr)
    }

    fn info(addr: std::net::SocketAddr) -> NodeInfo {
        NodeInfo {
            raft: addr.to_string(),
            admin: String::new(),
        }
    }

    /// Two voters elect a leader over /raft/vote and replicate over /raft/append; a follower's
    /// write is forwarded over /raft/write; a learner added after the log was purged catches
    /// up over /raft/snapshot. All with a secret.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn real_cluster_over_http() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let config = Arc::new(
            openraft::Config {
                cluster_name: "test".into(),
                heartbeat_interval: 100,
                election_timeout_min: 400,
                election_timeout_max: 800,
                install_snapshot_timeout: 5_000,
                max_in_snapshot_log_to_keep: 0,
                purge_batch_size: 1,
                snapshot_policy: openraft::SnapshotPolicy::Never,
                ..Default::default()
            }
            .validate()
            .expect("config"),
        );
        let secret = Some("s3cret");
        let mut nodes = BTreeMap::new();
        for id in 1..=3u64 {
            let dir = tmp.path().join(id.to_string());
            std::fs::create_dir_all(&dir).expect("mkdir");
            nodes.insert(id, real_node(id, &dir, secret, config.clone()).await);
        }
        let (r1, a1) = nodes[&1].clone();
        let (_, a2) = nodes[&2].clone();
        let (r3, a3) = nodes[&3].clone();
        r1.initialize(BTreeMap::from([(1, info(a1)), (2, info(a2))]))
            .await
            .expect("initialize");
        let t = Some(Duration::from_secs(10));
        let m = r1
            .wait(t)
            .metrics(|m| m.current_leader.is_some(), "a leader")
            .await
            .expect("no leader elected");
        let leader = m.current_leader.unwrap_or(0);
        let follower = if leader == 1 { 2 } else { 1 };
        let (lr, la) = nodes[&leader].clone();
        let (_, fa) = nodes[&follower].clone();

        // A forwarded write, answered after commit.
        let net = Network::new(secret.map(String::from));
        let fwd = net
            .forward_write(&la.to_string(), &req("example.com."), T)
            .await;
        assert!(fwd.is_ok(), "{fwd:?}");
        // The follower is not the leader, and says who is.
        assert_eq!(
            net.forward_write(&fa.to_string(), &req("example.com."), T)
                .await,
            Err(ForwardError::NotLeader {
                leader: Some(leader)
            })
        );
        // Without the secret: refused.
        assert_eq!(
            Network::new(None)
                .forward_write(&la.to_string(), &req("example.com."), T)
                .await,
            Err(ForwardError::Unauthorized)
        );

        for _ in 0..5 {
            lr.client_write(req("example.com.")).await.expect("write");
        }
        // Snapshot, then purge every log: a new node can only catch up by snapshot.
        lr.trigger().snapshot().await.expect("snapshot");
        let m = lr
            .wait(t)
            .metrics(
                |m| m.snapshot.is_some() && m.snapshot == m.last_applied,
                "snapshot",
            )
            .await
            .expect("no snapshot");
        let last = m.last_applied.map(|l| l.index).unwrap_or(0);
        lr.trigger().purge_log(last).await.expect("purge");
        lr.wait(t)
            .metrics(|m| m.purged.map(|p| p.index) == Some(last), "purged")
            .await
            .expect("not purged");

        lr.add_learner(3, info(a3), true)
            .await
            .expect("add learner");
        r3.wait(t)
            .applied_index_at_least(Some(last), "caught up")
            .await
            .expect("the learner did not catch up");
        let m3 = r3.metrics().borrow().clone();
        assert!(m3.snapshot.map(|s| s.index) >= Some(last), "{m3:?}");

        for (_, (r, _)) in nodes {
            let _ = r.shutdown().await;
        }
    }
}
