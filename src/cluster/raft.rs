//! The running Raft instance of this node: start-up (open the store, start openraft,
//! initialise a new cluster once), writes (proposed here when this node leads, forwarded to
//! the leader otherwise, bounded in time), membership, and status.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, RaftError};
use openraft::ChangeMembers;

use crate::cluster::command::Command;
use crate::cluster::handle::{ClusterStatus, Handle, Member, WriteError};
use crate::cluster::network::{self, Committed, ForwardError, MemberChange, Network};
use crate::cluster::prevote;
use crate::cluster::state::State;
use crate::cluster::store::{self, Applied, Change, StateMachineStore};
use crate::cluster::types::{NodeInfo, Raft, Request, FORMAT_VERSION};

/// How long a write waits for a leader (an election) or for a quorum before it gives up.
pub const WRITE_DEADLINE: Duration = Duration::from_secs(5);

/// How long the leader waits for a write of `req` to be committed and applied:
/// [`WRITE_DEADLINE`], and 3 s more per MiB of zone text (every node stores it, and the
/// leader parses it before the write is seen applied; a busy machine reads a few MB/s).
pub fn write_deadline(req: &Request) -> Duration {
    WRITE_DEADLINE + Duration::from_millis(3000 * (req.cmd.text_bytes() >> 20) as u64)
}

/// A write that may already be in the log is sent again (same request id) to a new leader
/// only while it carries less zone text than this.
const RESEND_LIMIT: usize = 512 * 1024;

/// How long a leader that has not heard from a majority, or a follower that has not heard
/// from a leader, waits before it says it has no quorum: the election timeout.
const QUORUM_WINDOW: Duration = Duration::from_millis(ELECTION_TIMEOUT_MAX);
/// How long a follower may go without hearing from a leader (its own leadership counts)
/// before it says it has no quorum: two election timeouts, time for an election to end.
const FOLLOWER_QUORUM_WINDOW: Duration = Duration::from_millis(2 * ELECTION_TIMEOUT_MAX);
/// How long a write waits for a quorum to come back before it gives up (`not_applied`).
const NO_QUORUM_WAIT: Duration = Duration::from_millis(300);

const HEARTBEAT_MS: u64 = 200;
/// openraft's own elections are off: [`prevote::campaign`] starts them, after a pre-vote,
/// 1.35–1.95 s after the last heartbeat. What remains of these two in openraft: the leader
/// lease (`election_timeout_max`: a voter refuses a vote within it of hearing its leader,
/// which [`prevote::GRANT_AFTER`] matches) and the vote RPC's timeout (`min`).
const ELECTION_TIMEOUT_MIN: u64 = 600;
const ELECTION_TIMEOUT_MAX: u64 = 1200;
const _: () = assert!(prevote::GRANT_AFTER.as_millis() == ELECTION_TIMEOUT_MAX as u128);

/// What the node needs to start its control plane.
pub struct ClusterConfig {
    pub node_id: u64,
    pub data_dir: std::path::PathBuf,
    pub raft_addr: String,
    pub admin_addr: String,
    /// The initial voters (only they initialise a new cluster).
    pub peers: BTreeMap<u64, String>,
    pub secret: Option<String>,
    /// `[raft] tls`: mutual TLS for RPCs and forwards (`None`: plain HTTP).
    pub tls: Option<crate::tls::Tls>,
    /// `[raft] max_snapshot`: the largest snapshot this node receives, in bytes.
    pub max_snapshot: u64,
}

/// Why the control plane could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot create {0}: {1}")]
    DataDir(String, std::io::Error),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("raft configuration: {0}")]
    Config(String),
    #[error("raft did not start: {0}")]
    Raft(String),
}

/// A started control plane.
pub struct Started {
    pub handle: Handle,
    /// Serve this on `[raft] listen`.
    pub rpc: axum::Router,
    /// The latest applied state.
    pub applied: tokio::sync::watch::Receiver<Applied>,
    /// Every apply batch with what it changed, in order: the publisher's feed.
    pub changes: tokio::sync::mpsc::UnboundedReceiver<Change>,
    /// Whether the store held state when it was opened (a restart).
    pub restarted: bool,
}

/// This node's Raft instance and what it needs to write: the one layer between a route and
/// openraft. [`Handle`] is a cheap clone of it.
pub struct RaftNode {
    pub node_id: u64,
    raft: Raft,
    network: Network,
    sm: StateMachineStore,
    /// The store's directory: writes stop while its file system is nearly full.
    store_dir: std::path::PathBuf,
    /// The entry format each member applies, as this node last asked them while leading
    /// with the cluster's format behind this binary's ([`raise_format`]).
    formats: arc_swap::ArcSwap<BTreeMap<u64, u32>>,
    /// The term in which this node, leading, last asked them.
    formats_asked: AtomicU64,
    /// Held from the members' answers to the change they decide, by a membership change
    /// (a node's format, then adding it) and by raising the format (every member's, then
    /// the raise): no node joins between the answers and the raise. It keeps the last
    /// round's "not yet" and when, reused for [`FORMAT_CHECK`] (a burst of writes needing
    /// the newer format asks the members once).
    members: tokio::sync::Mutex<Option<(Instant, String)>>,
}

/// The room a store's file system must keep for writes to be taken: 5% of it, at least
/// 4 MiB and at most 64 MiB. A write the store cannot flush is a storage error, which stops
/// Raft for good; a write refused up front is `not_applied` and can be retried.
fn disk_reserve(total: u64) -> u64 {
    (total / 20).clamp(4 << 20, 64 << 20)
}

/// Open the store, start Raft, initialise a new cluster when this node is a named peer.
pub async fn start(cfg: ClusterConfig) -> Result<Started, StartError> {
    let dir = cfg.data_dir.join("raft");
    std::fs::create_dir_all(&dir).map_err(|e| StartError::DataDir(dir.display().to_string(), e))?;
    {
        // The store holds what operators would not publish (health-check URLs, keys).
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&cfg.data_dir, std::fs::Permissions::from_mode(0o700));
    }
    let (log, sm) = store::open(&dir)?;
    let applied = sm.subscribe();
    let changes = sm
        .take_changes()
        .ok_or_else(|| StartError::Raft("the store's change feed was taken".into()))?;
    let restarted = sm.current().last_applied.is_some();
    let config = openraft::Config {
        cluster_name: "meridian".into(),
        heartbeat_interval: HEARTBEAT_MS,
        election_timeout_min: ELECTION_TIMEOUT_MIN,
        election_timeout_max: ELECTION_TIMEOUT_MAX,
        install_snapshot_timeout: 10_000,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(1000),
        max_in_snapshot_log_to_keep: 200,
        // Elections start after a pre-vote only (see `prevote`).
        enable_elect: false,
        ..Default::default()
    }
    .validate()
    .map_err(|e| StartError::Config(e.to_string()))?;
    let transport = network::Transport {
        secret: cfg.secret.clone(),
        tls: cfg.tls.clone(),
        max_snapshot: cfg.max_snapshot,
    };
    let network = Network::with_transport(&transport);
    let raft = Raft::new(
        cfg.node_id,
        Arc::new(config),
        network.clone(),
        log,
        sm.clone(),
    )
    .await
    .map_err(|e| StartError::Raft(e.to_string()))?;

    if cfg.peers.contains_key(&cfg.node_id) {
        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        if !initialized {
            let members: BTreeMap<u64, NodeInfo> = cfg
                .peers
                .iter()
                .map(|(&id, addr)| {
                    let admin = if id == cfg.node_id {
                        cfg.admin_addr.clone()
                    } else {
                        String::new()
                    };
                    (
                        id,
                        NodeInfo {
                            raft: addr.clone(),
                            admin,
                        },
                    )
                })
                .collect();
            // Every named peer may do this at the same time with the same members: safe.
            if let Err(e) = raft.initialize(members).await {
                tracing::info!(error = %e, "cluster already initialised");
            } else {
                tracing::info!(peers = cfg.peers.len(), "new cluster initialised");
            }
        }
    } else if !restarted {
        tracing::info!("this node is not an initial peer: waiting to be added with POST /api/v1/cluster/members");
    }

    let inner = Arc::new(RaftNode {
        node_id: cfg.node_id,
        raft: raft.clone(),
        network,
        sm,
        store_dir: dir.clone(),
        formats: Default::default(),
        formats_asked: AtomicU64::new(0),
        members: tokio::sync::Mutex::new(None),
    });
    tokio::spawn(raise_format(Arc::downgrade(&inner)));
    tokio::spawn(log_leader_changes(raft.clone(), cfg.node_id));
    let alive = Arc::downgrade(&inner);
    tokio::spawn(prevote::campaign(
        raft.clone(),
        inner.network.clone(),
        cfg.node_id,
        move || alive.strong_count() > 0,
    ));
    let write_inner = inner.clone();
    let write: network::WriteFn = Arc::new(move |mut req: Request| {
        let inner = write_inner.clone();
        Box::pin(async move {
            // The leader's clock stamps every entry it proposes.
            req.at_ms = crate::cluster::types::now_ms();
            inner.propose_here(req).await
        })
    });
    let members_inner = inner.clone();
    let members: network::MembersFn = Arc::new(move |change: MemberChange| {
        let inner = members_inner.clone();
        Box::pin(async move {
            let result = match change {
                MemberChange::Add {
                    id,
                    raft,
                    admin,
                    voter,
                } => inner.add_member_here(id, raft, admin, voter).await,
                MemberChange::Remove { id } => inner.remove_member_here(id).await,
            };
            result.map_err(|e| match e {
                MemberError::NotLeader(leader) => ForwardError::NotLeader { leader },
                MemberError::Write(WriteError::Membership(m)) => ForwardError::BadRequest(m),
                MemberError::Write(e) => ForwardError::Unavailable(e.to_string()),
            })
        })
    });
    let contact = inner.network.contact.clone();
    // A leader with a quorum counts as hearing from a leader: when it steps down, it is
    // not taken for a node cut off.
    let leading = Arc::downgrade(&inner);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let Some(node) = leading.upgrade() else {
                return;
            };
            let m = node.raft.metrics().borrow().clone();
            if m.current_leader == Some(node.node_id) && node.quorum() {
                node.network.contact.heard_leader();
            }
        }
    });
    let rpc = network::router_with(raft, &transport, write, members, contact);
    Ok(Started {
        handle: Handle { inner },
        rpc,
        applied,
        changes,
        restarted,
    })
}

impl RaftNode {
    /// Propose on this node (a forwarded write): fail at once without a quorum, answer
    /// `Unknown` when the entry may be in the log but was not seen committed in time. The
    /// first write of a term waits for one look at the members' formats
    /// ([`RaftNode::raise_format`]), so that a new cluster's first writes already apply at
    /// its newest format.
    async fn propose_here(&self, req: Request) -> Result<Committed, ForwardError> {
        if self.state().format() < FORMAT_VERSION && !matches!(req.cmd, Command::SetFormat { .. }) {
            let (leader, term) = {
                let m = self.raft.metrics();
                let m = m.borrow();
                (m.current_leader, m.current_term)
            };
            let need = req.format();
            let first = self.formats_asked.load(Ordering::Relaxed) != term;
            if leader == Some(self.node_id) && (first || need > self.state().format()) {
                match self.raise_format().await {
                    Ok(()) => {}
                    // Every member applies this format, but the raise did not commit.
                    Err(NotRaised::Write(e)) if need > self.state().format() => return Err(e),
                    Err(NotRaised::Behind(why)) if need > self.state().format() => {
                        // Refused here too: a follower of a binary without the cluster
                        // format forwards what it does not know to hold back.
                        return Err(ForwardError::Unavailable(refusal(
                            &req,
                            self.state().format(),
                            Some(&why),
                        )));
                    }
                    Err(_) => {}
                }
            }
        }
        self.write_here(req).await
    }

    /// [`RaftNode::propose_here`] without the look at the members' formats.
    async fn write_here(&self, req: Request) -> Result<Committed, ForwardError> {
        if let Some(why) = self.disk_full() {
            return Err(ForwardError::Unavailable(why));
        }
        let m = self.raft.metrics().borrow().clone();
        if m.current_leader != Some(self.node_id) {
            return Err(ForwardError::NotLeader {
                leader: m.current_leader,
            });
        }
        if !self.wait_quorum().await {
            return Err(ForwardError::Unavailable(
                "no quorum: the leader has not heard from a majority of the voters".into(),
            ));
        }
        match tokio::time::timeout(write_deadline(&req), self.raft.client_write(req)).await {
            Err(_) => Err(ForwardError::Unknown(
                "proposed, but not seen committed in time".into(),
            )),
            Ok(Ok(r)) => Ok(Committed {
                response: r.data,
                index: r.log_id.index,
            }),
            // Leadership was lost meanwhile: the entry may be in the log.
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                Err(ForwardError::Unknown(format!(
                    "leadership moved to {:?} while the write was proposed",
                    f.leader_id
                )))
            }
            Ok(Err(RaftError::Fatal(f))) => Err(ForwardError::Unknown(format!(
                "the control plane stopped while the write was proposed: {f}"
            ))),
            Ok(Err(e)) => Err(ForwardError::Unknown(e.to_string())),
        }
    }

    /// Whether this node has a quorum now: as the leader, a majority of the voters (itself
    /// included) answered an AppendEntries within the election timeout; as a follower, a
    /// leader was heard within it.
    pub fn quorum(&self) -> bool {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        if m.current_leader == Some(self.node_id) {
            let voters: Vec<u64> = membership.voter_ids().collect();
            let contact = &self.network.contact;
            let acked = voters
                .iter()
                .filter(|&&v| v == self.node_id || contact.acked_within(v, QUORUM_WINDOW))
                .count();
            acked * 2 > voters.len()
        } else {
            m.current_leader.is_some() && self.network.contact.heard_within(FOLLOWER_QUORUM_WINDOW)
        }
    }

    /// Wait a little for a quorum (one just elected has not heard from everyone yet).
    async fn wait_quorum(&self) -> bool {
        let until = Instant::now() + NO_QUORUM_WAIT;
        loop {
            if self.quorum() {
                return true;
            }
            if Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Propose a request (its command, id, actor and precondition): here when leading,
    /// else at the leader; wait out an election (up to [`WRITE_DEADLINE`]). The request id
    /// makes a repeat harmless: the state machine applies an id once. The error says
    /// whether the write may still apply. Every write of the node goes this one way, with
    /// its actor set by the caller (`Request::by`).
    #[tracing::instrument(level = "debug", skip_all, fields(cmd = req.cmd.name(), actor = req.actor.as_deref().unwrap_or("system")))]
    pub async fn propose(&self, req: Request) -> Result<Committed, WriteError> {
        if let Some(why) = self.disk_full() {
            return Err(WriteError::NotApplied(why));
        }
        self.format_allows(&req).await?;
        // A large write: the leader's own wait, and time to find it and forward to it, so
        // that a forwarded write hears the leader's answer before its own time is up.
        let extra = write_deadline(&req) - WRITE_DEADLINE;
        let deadline = Instant::now() + write_deadline(&req) + extra;
        let mut last = String::from("no leader was elected in time");
        // Whether the entry may be in some leader's log.
        let mut proposed = false;
        let outcome = |proposed: bool, why: String| {
            if proposed {
                WriteError::Unknown(why)
            } else {
                WriteError::NotApplied(why)
            }
        };
        while Instant::now() < deadline {
            if proposed && req.cmd.text_bytes() >= RESEND_LIMIT {
                // The entry may be in the log: a large one is never sent again (a big zone
                // would cross the network twice and time out again); wait for its result to
                // be applied here. A small one goes to the next leader below: its request
                // id makes a second copy in the log apply as the first.
                return self
                    .await_applied(&req, deadline)
                    .await
                    .ok_or(outcome(true, last));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let m = self.raft.metrics().borrow().clone();
            let leader = m.current_leader;
            // A node that has heard from no leader for longer than an election takes (two
            // election timeouts; its own start counts as hearing) knows it has no quorum:
            // it refuses at once rather than after the whole deadline.
            if leader != Some(self.node_id)
                && !proposed
                && !self.network.contact.heard_within(FOLLOWER_QUORUM_WINDOW)
            {
                return Err(WriteError::NotApplied(
                    "no quorum: this node has heard from no leader for longer than an election takes".into(),
                ));
            }
            if leader == Some(self.node_id) {
                match self.propose_here(req.clone()).await {
                    Ok(c) => return Ok(c),
                    Err(ForwardError::Unavailable(why)) if !proposed => {
                        // No quorum at this leader: refused before proposing.
                        return Err(WriteError::NotApplied(why));
                    }
                    Err(ForwardError::NotLeader { .. }) => {}
                    Err(ForwardError::Unknown(why)) => {
                        proposed = true;
                        last = why;
                        if Instant::now() + Duration::from_millis(200) >= deadline {
                            break;
                        }
                    }
                    Err(e) => last = e.to_string(),
                }
            } else if let Some(node) = leader.and_then(|l| {
                m.membership_config
                    .membership()
                    .get_node(&l)
                    .cloned()
                    .filter(|_| l != self.node_id)
            }) {
                // A leader cut off holds a forward until it times out: stop waiting as soon
                // as another leader (or none) is known, and send the same request (its id
                // makes a repeat harmless) to the next one.
                let mut metrics = self.raft.metrics();
                let replaced = async move {
                    let _ = metrics.wait_for(|m| m.current_leader != leader).await;
                };
                let forwarded = tokio::select! {
                    r = self.network.forward_write_to(leader, &node.raft, &req, left) => r,
                    () = replaced => Err(ForwardError::Unknown(format!(
                        "the leader changed while the write was forwarded to {}",
                        node.raft
                    ))),
                };
                match forwarded {
                    Ok(Some(c)) => return Ok(c),
                    Ok(None) => {
                        // A leader of the first format: no index to wait for.
                        return Ok(Committed {
                            response: crate::cluster::Response::Noop,
                            index: 0,
                        });
                    }
                    Err(ForwardError::NotLeader { .. }) => {
                        last = format!("{} is no longer the leader", node.raft)
                    }
                    Err(ForwardError::Unavailable(why))
                        if !proposed && why.contains("no quorum") =>
                    {
                        return Err(WriteError::NotApplied(why));
                    }
                    Err(ForwardError::Unknown(why)) => {
                        proposed = true;
                        last = format!("leader {}: {why}", node.raft);
                    }
                    Err(ForwardError::Stopped(why)) => last = why,
                    Err(e) => last = format!("leader {}: {e}", node.raft),
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(outcome(proposed, last))
    }

    /// The result of request `req`, once this node applied it (its id is recorded with
    /// its result), polled until `deadline`; `None` without an id or in time.
    async fn await_applied(&self, req: &Request, deadline: Instant) -> Option<Committed> {
        let id = req.id.as_deref()?;
        loop {
            if let Some(r) = self.state().request(id) {
                return Some(Committed {
                    response: r.response.clone(),
                    index: r.index,
                });
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    pub fn state(&self) -> Arc<State> {
        self.sm.current().state
    }

    pub fn status(&self) -> ClusterStatus {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let formats = self.formats.load();
        let members = membership
            .nodes()
            .map(|(&id, node)| Member {
                id,
                addr: node.raft.clone(),
                admin: node.admin.clone(),
                voter: voters.contains(&id),
                format: if id == self.node_id {
                    Some(FORMAT_VERSION)
                } else {
                    formats.get(&id).copied()
                },
                // Entries behind the leader, as the leader sees it.
                lag: m.replication.as_ref().map(|r| {
                    let matched = r.get(&id).cloned().flatten().map_or(0, |l| l.index);
                    m.last_log_index.unwrap_or(0).saturating_sub(matched)
                }),
            })
            .collect();
        ClusterStatus {
            node_id: self.node_id,
            leader: m.current_leader,
            term: m.current_term,
            members,
            last_applied: m.last_applied.map(|l| l.index),
            last_log_index: m.last_log_index,
            format: self.state().format(),
            quorum: self.quorum(),
            control_plane: if m.running_state.is_err() {
                "stopped"
            } else if self.disk_full().is_some() {
                "disk_full"
            } else {
                "ok"
            },
        }
    }

    /// Why writes are refused for lack of room in the store's file system, if they are.
    pub fn disk_full(&self) -> Option<String> {
        let st = nix::sys::statvfs::statvfs(&self.store_dir).ok()?;
        let frag = st.fragment_size() as u64;
        let (total, free) = (
            st.blocks() as u64 * frag,
            st.blocks_available() as u64 * frag,
        );
        let reserve = disk_reserve(total);
        (free < reserve).then(|| {
            format!(
                "disk full: {} has {} KiB free, below the {} KiB kept for the store; writes resume when there is room",
                self.store_dir.display(),
                free >> 10,
                reserve >> 10
            )
        })
    }

    /// Add a node, at the leader wherever this is called; then, when it changed the
    /// membership, record the change in history under `actor` ([`Command::MemberAdded`]),
    /// with `request` as its request id when given (an `Idempotency-Key`'s: a retry finds it).
    pub async fn add_member(
        &self,
        id: u64,
        raft_addr: String,
        admin_addr: String,
        voter: bool,
        actor: &str,
        request: Option<String>,
    ) -> Result<(), WriteError> {
        let same = self.status().members.iter().any(|m| {
            m.id == id && m.addr == raft_addr && m.admin == admin_addr && m.voter == voter
        });
        let change = MemberChange::Add {
            id,
            raft: raft_addr.clone(),
            admin: admin_addr.clone(),
            voter,
        };
        match self
            .add_member_here(id, raft_addr.clone(), admin_addr.clone(), voter)
            .await
        {
            Err(MemberError::NotLeader(leader)) => self.forward_members(leader, &change).await,
            other => other.map_err(MemberError::into_write),
        }?;
        if !same {
            let cmd = Command::MemberAdded {
                id,
                raft: raft_addr,
                admin: admin_addr,
                voter,
            };
            self.record_member_change(cmd, actor, request).await;
        }
        Ok(())
    }

    /// Remove a node, at the leader wherever this is called; then record the change in
    /// history under `actor` ([`Command::MemberRemoved`]), with `request` as for
    /// [`RaftNode::add_member`].
    pub async fn remove_member(
        &self,
        id: u64,
        actor: &str,
        request: Option<String>,
    ) -> Result<(), WriteError> {
        match self.remove_member_here(id).await {
            Err(MemberError::NotLeader(leader)) => {
                self.forward_members(leader, &MemberChange::Remove { id })
                    .await
            }
            other => other.map_err(MemberError::into_write),
        }?;
        self.record_member_change(Command::MemberRemoved { id }, actor, request)
            .await;
        Ok(())
    }

    /// Propose the history entry of a membership change that committed. The change stands
    /// whatever becomes of this entry (openraft's own entry made it), so a failure here is
    /// logged, not answered.
    async fn record_member_change(&self, cmd: Command, actor: &str, request: Option<String>) {
        let leading = self.raft.metrics().borrow().current_leader == Some(self.node_id);
        if cmd.format() > self.state().format() && !leading {
            // Refused anyway (a member could not read it): no wait for the refusal.
            tracing::debug!(
                cmd = cmd.name(),
                "membership changed; not in history before the cluster format allows it"
            );
            return;
        }
        let id = request.unwrap_or_else(crate::cluster::new_request_id);
        let req = Request::with_id(cmd, id).by(actor);
        if let Err(e) = self.propose(req).await {
            tracing::warn!(error = %e, "membership changed, but its history entry was not committed");
        }
    }

    async fn forward_members(
        &self,
        leader: Option<u64>,
        change: &MemberChange,
    ) -> Result<(), WriteError> {
        let m = self.raft.metrics().borrow().clone();
        let addr = leader.and_then(|l| {
            m.membership_config
                .membership()
                .get_node(&l)
                .map(|n| n.raft.clone())
        });
        let Some(addr) = addr else {
            return Err(WriteError::NotApplied("no leader is elected".into()));
        };
        self.network
            .forward_members_to(leader, &addr, change)
            .await
            .map_err(|e| match e {
                ForwardError::BadRequest(m) => WriteError::Membership(m),
                ForwardError::NotLeader { .. } | ForwardError::Unavailable(_) => {
                    WriteError::NotApplied(e.to_string())
                }
                e => WriteError::Unknown(e.to_string()),
            })
    }

    async fn add_member_here(
        &self,
        id: u64,
        raft_addr: String,
        admin_addr: String,
        voter: bool,
    ) -> Result<(), MemberError> {
        // Not while the format is being raised: this node's format is checked against the
        // cluster's, and the raise asked every member but this one.
        let _raising = self.members.lock().await;
        // A node that cannot be reached, or is not who it says (its certificate), is not
        // added: the membership stays as it was.
        let already = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .get_node(&id)
            .is_some();
        if !already {
            let format = self.network.probe(id, &raft_addr).await.map_err(|e| {
                MemberError::Write(WriteError::NotApplied(format!(
                    "node {id} at {raft_addr}: {e}"
                )))
            })?;
            let cluster = self.state().format();
            if format < cluster {
                return Err(MemberError::Write(WriteError::Membership(format!(
                    "node {id} at {raft_addr} applies entry format {format}, in conflict with this cluster's format {cluster}: it runs an older Meridian; upgrade it first"
                ))));
            }
        }
        let node = NodeInfo {
            raft: raft_addr,
            admin: admin_addr,
        };
        let added = tokio::time::timeout(
            Duration::from_secs(15),
            self.raft.add_learner(id, node, true),
        )
        .await
        .map_err(|_| {
            MemberError::Write(WriteError::Unknown(
                "the new node did not catch up within 15 s".into(),
            ))
        })?;
        membership_result(added)?;
        if voter {
            let ids = BTreeSet::from([id]);
            let changed = tokio::time::timeout(
                WRITE_DEADLINE,
                self.raft
                    .change_membership(ChangeMembers::AddVoterIds(ids), false),
            )
            .await
            .map_err(|_| {
                MemberError::Write(WriteError::Unknown(
                    "membership change not committed in time".into(),
                ))
            })?;
            membership_result(changed)?;
        }
        Ok(())
    }

    async fn remove_member_here(&self, id: u64) -> Result<(), MemberError> {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        if membership.get_node(&id).is_none() {
            return Err(MemberError::Write(WriteError::Membership(format!(
                "node {id} is not a member"
            ))));
        }
        let is_voter = membership.voter_ids().any(|v| v == id);
        let change = if is_voter {
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        };
        let changed =
            tokio::time::timeout(WRITE_DEADLINE, self.raft.change_membership(change, false))
                .await
                .map_err(|_| {
                    MemberError::Write(WriteError::Unknown(
                        "membership change not committed in time".into(),
                    ))
                })?;
        membership_result(changed)
    }

    /// Stop Raft (on SIGTERM).
    pub async fn shutdown(&self) {
        let _ = self.raft.shutdown().await;
    }
}

/// How often a leader whose cluster is at an older format than its own asks the members
/// which format they apply.
const FORMAT_CHECK: Duration = Duration::from_secs(1);

/// While this node leads and the cluster's format is behind [`FORMAT_VERSION`], raise it
/// as soon as every member applies this binary's ([`RaftNode::raise_format`]). Runs until
/// the node is dropped.
async fn raise_format(node: std::sync::Weak<RaftNode>) {
    let mut reported = String::new();
    loop {
        {
            let Some(node) = node.upgrade() else {
                return;
            };
            let leading = node.raft.metrics().borrow().current_leader == Some(node.node_id);
            let behind = node.state().format() < FORMAT_VERSION;
            if !leading && !node.formats.load().is_empty() {
                // What members said is shown by the node that asked, while it leads.
                node.formats.store(Arc::default());
            }
            if behind && leading && node.quorum() {
                match node.raise_format().await {
                    Ok(()) => reported.clear(),
                    Err(NotRaised::Behind(why)) if why != reported => {
                        tracing::info!(newest = FORMAT_VERSION, behind = %why, "the cluster format stays until every member runs this Meridian");
                        reported = why;
                    }
                    Err(NotRaised::Write(e)) => {
                        tracing::warn!(error = %e, "every member runs this Meridian, but the cluster format was not raised")
                    }
                    Err(NotRaised::Behind(_)) => {}
                }
            }
        }
        tokio::time::sleep(FORMAT_CHECK).await;
    }
}

impl RaftNode {
    /// As the leader: ask every member which entry format it applies
    /// ([`Network::ask`]); when all apply [`FORMAT_VERSION`], raise the cluster's to
    /// it ([`Command::SetFormat`]) and wait for that to apply. Until then nothing newer is
    /// proposed (see [`RaftNode::propose`]), so a rolling upgrade never sends a node what it
    /// cannot apply. The error says which members hold it back.
    async fn raise_format(&self) -> Result<(), NotRaised> {
        let mut last = self.members.lock().await;
        if self.state().format() >= FORMAT_VERSION {
            return Ok(()); // raised while this waited
        }
        if let Some((_, why)) = last.as_ref().filter(|(at, _)| at.elapsed() < FORMAT_CHECK) {
            return Err(NotRaised::Behind(why.clone()));
        }
        let m = self.raft.metrics().borrow().clone();
        self.formats_asked.store(m.current_term, Ordering::Relaxed);
        let mut asking = tokio::task::JoinSet::new();
        for (&id, n) in m.membership_config.membership().nodes() {
            if id != self.node_id {
                let (network, addr) = (self.network.clone(), n.raft.clone());
                asking.spawn(async move {
                    (
                        id,
                        network.ask(id, &addr, FORMAT_ASK).await.map(|a| a.format),
                    )
                });
            }
        }
        let mut formats = BTreeMap::from([(self.node_id, FORMAT_VERSION)]);
        let mut behind = Vec::new();
        while let Some(answer) = asking.join_next().await {
            match answer {
                Ok((id, Ok(f))) => {
                    formats.insert(id, f);
                    if f < FORMAT_VERSION {
                        behind.push(format!("node {id} applies format {f}"));
                    }
                }
                Ok((id, Err(e))) => behind.push(format!("node {id} did not say ({e})")),
                Err(e) => behind.push(format!("a member was not asked ({e})")),
            }
        }
        behind.sort();
        self.formats.store(Arc::new(formats));
        if !behind.is_empty() {
            let why = behind.join(", ");
            *last = Some((Instant::now(), why.clone()));
            return Err(NotRaised::Behind(why));
        }
        *last = None;
        let from = self.state().format();
        let cmd = Command::SetFormat {
            format: FORMAT_VERSION,
        };
        let req = Request::with_id(cmd, crate::cluster::new_request_id()).by("system");
        // As the leader, here (propose would come back to this check).
        let c = self.write_here(req).await.map_err(NotRaised::Write)?;
        tracing::info!(
            from,
            to = FORMAT_VERSION,
            index = c.index,
            "cluster format raised: every member runs this Meridian"
        );
        Ok(())
    }

    /// Before a route reads this node's state to make a write (the algorithm of a zone's
    /// next key, an `Idempotency-Key`'s first result): on a follower, wait until it has
    /// applied as far as the leader had applied when asked, so that a write answered a
    /// moment ago through another node is seen here too. (Not a quorum-confirmed read index
    /// as etcd's: a write answered through any node was applied by the leader of its term
    /// first.) Asking and waiting take [`CATCH_UP_WAIT`] at most; a node that cannot catch
    /// up in time refuses before proposing. A leader reads what it has (it applies what it
    /// commits before it answers), and so does a follower that cannot ask its leader or
    /// whose leader does not say (an older binary): the write is checked again when it
    /// applies, so the worst is the answer a node behind gives.
    pub async fn catch_up(&self) -> Result<(), WriteError> {
        if !self.network.contact.heard_within(FOLLOWER_QUORUM_WINDOW) {
            return Ok(()); // no quorum: the write is refused at once, not after a wait here
        }
        let (leader, addr) = {
            let m = self.raft.metrics();
            let m = m.borrow();
            let Some(leader) = m.current_leader.filter(|l| *l != self.node_id) else {
                return Ok(());
            };
            let node = m.membership_config.membership().get_node(&leader).cloned();
            let Some(node) = node else { return Ok(()) };
            (leader, node.raft)
        };
        let deadline = Instant::now() + CATCH_UP_WAIT;
        let Ok(answer) = self.network.ask(leader, &addr, CATCH_UP_WAIT).await else {
            return Ok(());
        };
        let mut metrics = self.raft.metrics();
        let applied = metrics.wait_for(|m| m.last_applied.map_or(0, |l| l.index) >= answer.applied);
        let left = deadline.saturating_duration_since(Instant::now());
        let caught_up = tokio::time::timeout(left, applied)
            .await
            .is_ok_and(|r| r.is_ok());
        match caught_up {
            true => Ok(()),
            false => Err(WriteError::NotApplied(format!(
                "this node has not applied the leader's log up to index {} within {CATCH_UP_WAIT:?}: retry, or write through the leader",
                answer.applied
            ))),
        }
    }

    /// Off the leader: whether the cluster's format lets `req` be proposed, at once or once
    /// this node saw the leader raise it within [`FORMAT_WAIT`] (a new cluster's first
    /// leader raises it within a second of its election). The leader decides for itself
    /// ([`RaftNode::propose_here`]).
    async fn format_allows(&self, req: &Request) -> Result<(), WriteError> {
        let need = req.format();
        if need <= self.state().format()
            || matches!(req.cmd, Command::SetFormat { .. })
            || self.raft.metrics().borrow().current_leader == Some(self.node_id)
        {
            return Ok(());
        }
        let until = Instant::now() + FORMAT_WAIT;
        while self.state().format() < need && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let have = self.state().format();
        if need <= have {
            return Ok(());
        }
        Err(WriteError::NotApplied(refusal(req, have, None)))
    }
}

/// Why the cluster's format was not raised.
enum NotRaised {
    /// These members do not apply this binary's format, or did not say.
    Behind(String),
    /// Every member does, but the raise was not committed (leadership lost, no quorum).
    Write(ForwardError),
}

/// Why `req` is refused before it is proposed: the cluster, at format `have`, has a member
/// that could not apply it (it would stop); `who` says which, when the leader asked.
fn refusal(req: &Request, have: u32, who: Option<&str>) -> String {
    let who = who.map_or_else(String::new, |h| format!(" ({h})"));
    format!(
        "{} needs every member to apply entry format {}, and the cluster is at format {have}: a node still runs an older Meridian{who}; finish the upgrade (GET /api/v1/cluster on the leader shows each member's format), then retry",
        req.cmd.name(),
        req.format()
    )
}

/// How long a follower asks its leader, and then waits to apply as far
/// ([`RaftNode::catch_up`]).
const CATCH_UP_WAIT: Duration = Duration::from_secs(1);

/// How long a member has to say which format it applies: the leader asks again a second
/// later, and the first write of a term waits for the answers.
const FORMAT_ASK: Duration = Duration::from_secs(1);

/// How long a write that needs a newer cluster format waits, off the leader, for the leader
/// to raise it.
const FORMAT_WAIT: Duration = Duration::from_secs(1);

/// A membership change that did not happen here.
enum MemberError {
    /// Only the leader changes membership; this is who it is, if known.
    NotLeader(Option<u64>),
    Write(WriteError),
}

impl MemberError {
    fn into_write(self) -> WriteError {
        match self {
            MemberError::NotLeader(_) => WriteError::NotApplied("no leader is elected".into()),
            MemberError::Write(e) => e,
        }
    }
}

fn membership_result<T>(
    r: Result<T, RaftError<u64, ClientWriteError<u64, NodeInfo>>>,
) -> Result<(), MemberError> {
    match r {
        Ok(_) => Ok(()),
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
            Err(MemberError::NotLeader(f.leader_id))
        }
        Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => {
            Err(MemberError::Write(WriteError::Membership(e.to_string())))
        }
        Err(RaftError::Fatal(f)) => Err(MemberError::Write(WriteError::Unknown(f.to_string()))),
    }
}

/// Log each change of leader (and of this node's own leadership) once, at info: who leads
/// now, for which term. Ends with the Raft node.
async fn log_leader_changes(raft: Raft, me: u64) {
    let mut metrics = raft.metrics();
    let mut last = None;
    loop {
        let (leader, term) = {
            let m = metrics.borrow_and_update();
            (m.current_leader, m.current_term)
        };
        if leader != last {
            match leader {
                Some(l) if l == me => tracing::info!(term, "this node is the leader now"),
                Some(l) => tracing::info!(leader = l, term, "leader changed"),
                None => tracing::info!(term, previous = ?last, "no leader known"),
            }
            last = leader;
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}
