//! The running Raft instance of this node: start-up (open the store, start openraft,
//! initialise a new cluster once), writes (proposed here when this node leads, forwarded to
//! the leader otherwise, bounded in time), membership, and status.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, RaftError};
use openraft::ChangeMembers;

use crate::cluster::command::{Command, Response};
use crate::cluster::handle::{ClusterStatus, Handle, Member, WriteError};
use crate::cluster::network::{self, ForwardError, MemberChange, Network};
use crate::cluster::state::State;
use crate::cluster::store::{self, Applied, StateMachineStore};
use crate::cluster::types::{NodeInfo, Raft, Request};

/// How long a write waits for a leader (an election) or for a quorum before it gives up.
pub const WRITE_DEADLINE: Duration = Duration::from_secs(5);

/// How long one forward to the leader may take before the leader is looked up again.
const FORWARD_WAIT: Duration = Duration::from_millis(1500);

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
    /// Every applied state, in order.
    pub applied: tokio::sync::watch::Receiver<Applied>,
    /// Whether the store held state when it was opened (a restart).
    pub restarted: bool,
}

pub(crate) struct Inner {
    pub node_id: u64,
    raft: Raft,
    network: Network,
    sm: StateMachineStore,
}

/// Open the store, start Raft, initialise a new cluster when this node is a named peer.
pub async fn start(cfg: ClusterConfig) -> Result<Started, StartError> {
    let dir = cfg.data_dir.join("raft");
    std::fs::create_dir_all(&dir).map_err(|e| StartError::DataDir(dir.display().to_string(), e))?;
    let (log, sm) = store::open(&dir)?;
    let applied = sm.subscribe();
    let restarted = sm.current().last_applied.is_some();
    let config = openraft::Config {
        cluster_name: "meridian".into(),
        heartbeat_interval: 200,
        election_timeout_min: 1000,
        election_timeout_max: 2000,
        install_snapshot_timeout: 10_000,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(1000),
        max_in_snapshot_log_to_keep: 200,
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

    let inner = Arc::new(Inner {
        node_id: cfg.node_id,
        raft: raft.clone(),
        network,
        sm,
    });
    let write_inner = inner.clone();
    let write: network::WriteFn = Arc::new(move |mut req: Request| {
        let inner = write_inner.clone();
        Box::pin(async move {
            // The leader's clock stamps every entry it proposes.
            req.at_ms = Request::new(req.cmd.clone()).at_ms;
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
    let rpc = network::router_with(raft, &transport, write, members);
    Ok(Started {
        handle: Handle { inner },
        rpc,
        applied,
        restarted,
    })
}

impl Inner {
    /// Propose on this node; if it is not the leader, say who is.
    async fn propose_here(&self, req: Request) -> Result<Response, ForwardError> {
        match tokio::time::timeout(WRITE_DEADLINE, self.raft.client_write(req)).await {
            Err(_) => Err(ForwardError::Unavailable(
                "the leader could not reach a quorum in time".into(),
            )),
            Ok(Ok(r)) => Ok(r.data),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                Err(ForwardError::NotLeader {
                    leader: f.leader_id,
                })
            }
            Ok(Err(RaftError::Fatal(f))) => Err(ForwardError::Stopped(f.to_string())),
            Ok(Err(e)) => Err(ForwardError::Unavailable(e.to_string())),
        }
    }

    /// Propose a command: here when leading, else at the leader; wait out an election.
    #[tracing::instrument(level = "debug", skip_all, fields(cmd = cmd.name()))]
    pub async fn write(&self, cmd: Command) -> Result<Response, WriteError> {
        let req = Request::new(cmd);
        let deadline = Instant::now() + WRITE_DEADLINE;
        let mut last = String::from("no leader elected");
        while Instant::now() < deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            let attempt = tokio::time::timeout(left, self.raft.client_write(req.clone())).await;
            match attempt {
                Err(_) => {
                    last = "no quorum: the write was not committed in time".into();
                    break;
                }
                Ok(Ok(r)) => return Ok(r.data),
                Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                    if let Some(node) = f.leader_node.filter(|_| f.leader_id != Some(self.node_id))
                    {
                        // One forward waits at most FORWARD_WAIT: a leader cut off without a
                        // word is replaced by an election meanwhile, and the next round asks
                        // the new one.
                        let wait = left.min(FORWARD_WAIT);
                        let fwd = tokio::time::timeout(
                            wait,
                            self.network.forward_write_to(f.leader_id, &node.raft, &req),
                        );
                        match fwd.await {
                            Ok(Ok(r)) => return Ok(r),
                            Ok(Err(e)) => last = format!("leader {}: {e}", node.raft),
                            Err(_) => last = format!("leader {} did not answer in time", node.raft),
                        }
                    }
                }
                Ok(Err(RaftError::Fatal(f))) => return Err(WriteError::Stopped(f.to_string())),
                Ok(Err(e)) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(WriteError::Unavailable(last))
    }

    pub fn state(&self) -> Arc<State> {
        self.sm.current().state
    }

    pub fn status(&self) -> ClusterStatus {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let members = membership
            .nodes()
            .map(|(&id, node)| Member {
                id,
                addr: node.raft.clone(),
                admin: node.admin.clone(),
                voter: voters.contains(&id),
            })
            .collect();
        ClusterStatus {
            node_id: self.node_id,
            leader: m.current_leader,
            term: m.current_term,
            members,
            last_applied: m.last_applied.map(|l| l.index),
            last_log_index: m.last_log_index,
        }
    }

    /// Add a node, at the leader wherever this is called.
    pub async fn add_member(
        &self,
        id: u64,
        raft_addr: String,
        admin_addr: String,
        voter: bool,
    ) -> Result<(), WriteError> {
        let change = MemberChange::Add {
            id,
            raft: raft_addr.clone(),
            admin: admin_addr.clone(),
            voter,
        };
        match self.add_member_here(id, raft_addr, admin_addr, voter).await {
            Err(MemberError::NotLeader(leader)) => self.forward_members(leader, &change).await,
            other => other.map_err(MemberError::into_write),
        }
    }

    /// Remove a node, at the leader wherever this is called.
    pub async fn remove_member(&self, id: u64) -> Result<(), WriteError> {
        match self.remove_member_here(id).await {
            Err(MemberError::NotLeader(leader)) => {
                self.forward_members(leader, &MemberChange::Remove { id })
                    .await
            }
            other => other.map_err(MemberError::into_write),
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
            return Err(WriteError::Unavailable("no leader is elected".into()));
        };
        self.network
            .forward_members_to(leader, &addr, change)
            .await
            .map_err(|e| match e {
                ForwardError::BadRequest(m) => WriteError::Membership(m),
                e => WriteError::Unavailable(e.to_string()),
            })
    }

    async fn add_member_here(
        &self,
        id: u64,
        raft_addr: String,
        admin_addr: String,
        voter: bool,
    ) -> Result<(), MemberError> {
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
            self.network.probe(id, &raft_addr).await.map_err(|e| {
                MemberError::Write(WriteError::Unavailable(format!(
                    "node {id} at {raft_addr}: {e}"
                )))
            })?;
        }
        let node = NodeInfo {
            raft: raft_addr,
            admin: admin_addr,
        };
        let added = tokio::time::timeout(
            Duration::from_secs(30),
            self.raft.add_learner(id, node, true),
        )
        .await
        .map_err(|_| {
            MemberError::Write(WriteError::Unavailable(
                "the new node did not catch up within 30 s".into(),
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
                MemberError::Write(WriteError::Unavailable(
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
                    MemberError::Write(WriteError::Unavailable(
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

/// A membership change that did not happen here.
enum MemberError {
    /// Only the leader changes membership; this is who it is, if known.
    NotLeader(Option<u64>),
    Write(WriteError),
}

impl MemberError {
    fn into_write(self) -> WriteError {
        match self {
            MemberError::NotLeader(_) => WriteError::Unavailable("no leader is elected".into()),
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
        Err(RaftError::Fatal(f)) => Err(MemberError::Write(WriteError::Stopped(f.to_string()))),
    }
}

impl Handle {
    /// Stop Raft (on SIGTERM).
    pub async fn shutdown(&self) {
        self.inner.shutdown().await;
    }
}
