//! A single-process control plane for tests: commands go straight to `State::apply`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::Router;

use crate::admin::{build, App, BoxFuture, ControlPlane, Readiness};
use crate::cluster::{self, ClusterStatus, Committed, Member, Response, WriteError};
use crate::snapshot::{self, Snapshot, SnapshotPublisher};

/// Applies every write at once, like a one-node cluster that always has quorum.
pub(crate) struct FakeCluster {
    pub state: ArcSwap<cluster::State>,
    pub members: ArcSwap<Vec<Member>>,
    /// When false, writes answer `NotApplied` (no quorum).
    pub available: AtomicBool,
    /// The last log index handed out.
    pub index: AtomicU64,
}

impl FakeCluster {
    pub fn new() -> Arc<FakeCluster> {
        Arc::new(FakeCluster {
            state: ArcSwap::from_pointee(cluster::State::default()),
            members: ArcSwap::from_pointee(vec![Member {
                id: 1,
                addr: "127.0.0.1:9053".into(),
                admin: "127.0.0.1:8053".into(),
                voter: true,
                lag: None,
            }]),
            available: AtomicBool::new(true),
            index: AtomicU64::new(0),
        })
    }

    fn check(&self) -> Result<(), WriteError> {
        if self.available.load(Ordering::Relaxed) {
            Ok(())
        } else {
            Err(WriteError::NotApplied("no quorum".into()))
        }
    }
}

impl ControlPlane for Arc<FakeCluster> {
    fn write(&self, req: cluster::Request) -> BoxFuture<'_, Result<Committed, WriteError>> {
        Box::pin(async move {
            self.check()?;
            let index = self.index.fetch_add(1, Ordering::Relaxed) + 1;
            let mut response = Response::Noop;
            self.state.rcu(|s| {
                let mut next = (**s).clone();
                response = next.apply_request(&req, index).0;
                next
            });
            Ok(Committed { response, index })
        })
    }

    fn state(&self) -> Arc<cluster::State> {
        self.state.load_full()
    }

    fn status(&self) -> ClusterStatus {
        ClusterStatus {
            node_id: 1,
            leader: Some(1),
            term: 3,
            members: (**self.members.load()).clone(),
            last_applied: Some(7),
            last_log_index: Some(7),
            quorum: true,
            control_plane: "ok",
        }
    }

    fn add_member<'a>(
        &'a self,
        id: u64,
        raft: String,
        admin: String,
        voter: bool,
        _actor: &'a str,
    ) -> BoxFuture<'a, Result<(), WriteError>> {
        Box::pin(async move {
            self.check()?;
            self.members.rcu(|m| {
                let mut m: Vec<Member> = m.iter().filter(|m| m.id != id).cloned().collect();
                m.push(Member {
                    id,
                    addr: raft.clone(),
                    admin: admin.clone(),
                    voter,
                    lag: None,
                });
                m
            });
            Ok(())
        })
    }

    fn remove_member<'a>(
        &'a self,
        id: u64,
        _actor: &'a str,
    ) -> BoxFuture<'a, Result<(), WriteError>> {
        Box::pin(async move {
            self.check()?;
            if !self.members.load().iter().any(|m| m.id == id) {
                return Err(WriteError::Membership(format!("node {id} is not a member")));
            }
            self.members
                .rcu(|m| m.iter().filter(|m| m.id != id).cloned().collect::<Vec<_>>());
            Ok(())
        })
    }
}

/// A router over a fresh [`FakeCluster`], with `token`.
pub(crate) struct TestApi {
    pub router: Router,
    pub cluster: Arc<FakeCluster>,
    pub ready: Readiness,
    pub publisher: SnapshotPublisher,
}

pub(crate) fn test_api(token: Option<&str>) -> TestApi {
    let cluster = FakeCluster::new();
    let ready = Readiness::default();
    let publisher = snapshot::channel(Snapshot::empty(1));
    let router = build(App {
        cluster: Arc::new(cluster.clone()),
        reader: publisher.reader(),
        ready: ready.clone(),
        token: crate::admin::token_cell(crate::admin::Access::single(token.map(str::to_string))),
        published: None,
        inflight: Default::default(),
        max_body: crate::admin::BODY_LIMIT,
        shares: Default::default(),
    });
    TestApi {
        router,
        cluster,
        ready,
        publisher,
    }
}
