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
//!
//! When a secret is configured every request carries it in [`SECRET_HEADER`]; a request
//! without it or with a wrong one is answered 401 before its body is read.
//!
//! Errors are never sent as 200. The three Raft RPCs answer an [`RpcErrorBody`]: a
//! `RaftError` from openraft (409 for a snapshot mismatch, 503 when Raft has stopped, 500
//! otherwise) is carried in its `raft` field so that the client rebuilds the matching
//! `RemoteError`; 400/401/413 carry only a message. `/raft/write` answers a [`ForwardError`]
//! (see [`ForwardError::status`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
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

use crate::cluster::command::Response;
use crate::cluster::types::{NodeInfo, Raft, Request, TypeConfig, FORMAT_VERSION};

/// The header that carries `[raft] secret`.
pub const SECRET_HEADER: &str = "x-meridian-raft-secret";

/// How long to wait for a TCP connection to a peer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// The request timeout of an InstallSnapshot chunk.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(30);
/// The request timeout of a forwarded write (it answers after commit and apply).
const FORWARD_TIMEOUT: Duration = Duration::from_secs(15);
/// The request timeout when openraft gives none (never with 0.9, kept as a bound).
const DEFAULT_RPC_TIMEOUT: Duration = Duration::from_secs(5);
/// Body limit of `/raft/append`, `/raft/snapshot` and `/raft/write`: a snapshot chunk or an
/// import is large, but bounded.
const MAX_BODY: usize = 256 * 1024 * 1024;
/// Body limit of `/raft/vote`.
const MAX_VOTE_BODY: usize = 64 * 1024;

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
    /// The request body is not a request this node accepts (400).
    #[error("bad request: {0}")]
    BadRequest(String),
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
            ForwardError::BadRequest(_) => StatusCode::BAD_REQUEST,
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

/// When this node last heard from its peers: the leader's quorum (a majority answered an
/// AppendEntries within the election timeout) and a follower's "I hear a leader".
#[derive(Debug, Default)]
pub struct Contact {
    /// Peer → when it last answered an AppendEntries without refusing this leader.
    acked: std::sync::Mutex<std::collections::HashMap<u64, std::time::Instant>>,
    /// When this node last accepted an AppendEntries from a leader.
    heard: std::sync::Mutex<Option<std::time::Instant>>,
}

impl Contact {
    fn ack(&self, peer: u64) {
        if let Ok(mut m) = self.acked.lock() {
            m.insert(peer, std::time::Instant::now());
        }
    }

    pub fn heard_leader(&self) {
        if let Ok(mut h) = self.heard.lock() {
            *h = Some(std::time::Instant::now());
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

/// The Raft RPC client side: one pooled `reqwest::Client` shared by every peer connection,
/// with connect and request timeouts.
#[derive(Clone)]
pub struct Network {
    client: reqwest::Client,
    secret: Option<Arc<str>>,
    /// Who answered lately (shared with the server side).
    pub contact: Arc<Contact>,
}

impl Network {
    pub fn new(secret: Option<String>) -> Network {
        if let Some(s) = &secret {
            if reqwest::header::HeaderValue::from_str(s).is_err() {
                tracing::error!(
                    "[raft] secret is not a valid HTTP header value: every RPC will fail"
                );
            }
        }
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(60))
            // Raft traffic goes straight to the peer, whatever HTTP_PROXY says.
            .no_proxy()
            .build()
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "cannot build the raft HTTP client, using defaults");
                reqwest::Client::new()
            });
        Network {
            client,
            secret: secret.map(Arc::from),
            contact: Arc::new(Contact::default()),
        }
    }

    fn post(&self, url: String, timeout: Duration) -> reqwest::RequestBuilder {
        let b = self.client.post(url).timeout(timeout);
        match &self.secret {
            Some(s) => b.header(SECRET_HEADER, &**s),
            None => b,
        }
    }

    /// Forward a write to the leader at `leader_raft_addr` (its `ip:port` Raft address) over
    /// the same pooled client; used by followers.
    pub async fn forward_write(
        &self,
        leader_raft_addr: &str,
        req: &Request,
        timeout: Duration,
    ) -> Result<Option<Committed>, ForwardError> {
        let reply: ForwardReply = self
            .forward(leader_raft_addr, "/raft/write", req, timeout)
            .await?;
        Ok(match reply {
            ForwardReply::Committed(c) => Some(c),
            ForwardReply::Bare(_) => None,
        })
    }

    /// Forward a membership change to the leader at `leader_raft_addr`.
    pub async fn forward_members(
        &self,
        leader_raft_addr: &str,
        change: &MemberChange,
    ) -> Result<(), ForwardError> {
        self.forward(leader_raft_addr, "/raft/members", change, FORWARD_TIMEOUT)
            .await
    }

    async fn forward<B: Serialize, R: DeserializeOwned>(
        &self,
        leader_raft_addr: &str,
        path: &str,
        body: &B,
        timeout: Duration,
    ) -> Result<R, ForwardError> {
        let url = format!("http://{leader_raft_addr}{path}");
        let unavailable = |e: reqwest::Error| {
            if e.is_connect() {
                ForwardError::Unavailable(format!("leader at {leader_raft_addr} unreachable: {e}"))
            } else if e.is_timeout() {
                ForwardError::Unknown(format!(
                    "the leader at {leader_raft_addr} did not answer in time \
                     (the write may still apply): {e}"
                ))
            } else {
                ForwardError::Unavailable(format!("forwarding to {leader_raft_addr}: {e}"))
            }
        };
        let resp = self
            .post(url, timeout)
            .json(body)
            .send()
            .await
            .map_err(unavailable)?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(unavailable)?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| {
                ForwardError::Unavailable(format!(
                    "the leader at {leader_raft_addr} answered an unreadable response: {e}"
                ))
            });
        }
        if let Ok(e) = serde_json::from_slice::<ForwardError>(&bytes) {
            return Err(e);
        }
        Err(match status {
            StatusCode::UNAUTHORIZED => ForwardError::Unauthorized,
            _ => ForwardError::Unavailable(format!(
                "the leader at {leader_raft_addr} answered {status}: {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(512)])
            )),
        })
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
        let url = format!("http://{}{}", self.node.raft, path);
        let map_err = |e: reqwest::Error| -> RpcError<E> {
            if e.is_connect() {
                RPCError::Unreachable(Unreachable::new(&e))
            } else if e.is_timeout() {
                match id {
                    Some(id) => RPCError::Timeout(Timeout {
                        action,
                        id,
                        target: self.target,
                        timeout,
                    }),
                    None => RPCError::Network(NetworkError::new(&e)),
                }
            } else {
                RPCError::Network(NetworkError::new(&e))
            }
        };
        let resp = self
            .net
            .post(url, timeout)
            .json(body)
            .send()
            .await
            .map_err(map_err)?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(map_err)?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| {
                RPCError::Network(NetworkError::new(&Msg(format!(
                    "{action} to {}: unreadable answer: {e}",
                    self.node.raft
                ))))
            });
        }
        Err(self.error_answer(action, status, &bytes))
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
            // A secret mismatch will not fix itself by retrying at once: back off.
            StatusCode::UNAUTHORIZED => RPCError::Unreachable(Unreachable::new(&msg)),
            StatusCode::PAYLOAD_TOO_LARGE if action == RPCTypes::AppendEntries => {
                RPCError::PayloadTooLarge(
                    PayloadTooLarge::new_entries_hint(1).with_source_error(&msg),
                )
            }
            _ => RPCError::Network(NetworkError::new(&msg)),
        }
    }
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
        let r = self
            .call(
                "/raft/append",
                RPCTypes::AppendEntries,
                id,
                &rpc,
                rpc_timeout(&option),
            )
            .await;
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
/// a [`ForwardError`]).
pub fn router(
    raft: Raft,
    secret: Option<String>,
    write: WriteFn,
    members: MembersFn,
    contact: Arc<Contact>,
) -> Router {
    let members = Router::new()
        .route(
            "/raft/members",
            post(forwarded_members).layer(DefaultBodyLimit::max(MAX_VOTE_BODY)),
        )
        .with_state(members);
    guarded(
        raft_routes(raft, contact)
            .merge(write_routes(write))
            .merge(members),
        secret,
    )
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

fn raft_routes(raft: Raft, contact: Arc<Contact>) -> Router {
    let append_routes = Router::new()
        .route(
            "/raft/append",
            post(append).layer(DefaultBodyLimit::max(MAX_BODY)),
        )
        .with_state((raft.clone(), contact));
    Router::new()
        .route(
            "/raft/vote",
            post(vote).layer(DefaultBodyLimit::max(MAX_VOTE_BODY)),
        )
        .route(
            "/raft/snapshot",
            post(snapshot).layer(DefaultBodyLimit::max(MAX_BODY)),
        )
        .with_state(raft)
        .merge(append_routes)
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
    State((raft, contact)): State<(Raft, Arc<Contact>)>,
    body: Result<Bytes, BytesRejection>,
) -> axum::response::Response {
    match parse::<AppendEntriesRequest<TypeConfig>>(body) {
        Ok(rpc) => {
            let r = raft.append_entries(rpc).await;
            if let Ok(resp) = &r {
                if !matches!(resp, AppendEntriesResponse::HigherVote(_)) {
                    contact.heard_leader();
                }
            }
            answer(r)
        }
        Err((status, message)) => rpc_error(status, message, None),
    }
}

async fn vote(
    State(raft): State<Raft>,
    body: Result<Bytes, BytesRejection>,
) -> axum::response::Response {
    match parse::<VoteRequest<NodeId>>(body) {
        Ok(rpc) => answer(raft.vote(rpc).await),
        Err((status, message)) => rpc_error(status, message, None),
    }
}

async fn snapshot(
    State(raft): State<Raft>,
    body: Result<Bytes, BytesRejection>,
) -> axum::response::Response {
    match parse::<InstallSnapshotRequest<TypeConfig>>(body) {
        Ok(rpc) => answer(raft.install_snapshot(rpc).await),
        Err((status, message)) => rpc_error(status, message, None),
    }
}

async fn forwarded_write(
    State(write): State<WriteFn>,
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
        let contact = Arc::new(Contact::default());
        let app = router(
            raft.clone(),
            secret.map(String::from),
            write,
            members,
            contact,
        );
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
