//! The admin API's unit tests run against the real control plane: a one-node Raft cluster
//! in a temporary directory on loopback, so a route's write goes the one way every write
//! goes (`RaftNode::propose`, the store, `State::apply`) — there is no fake to drift from it.

use std::time::{Duration, Instant};

use axum::Router;

use crate::admin::{build, App, Readiness};
use crate::cluster::{self, Handle};
use crate::snapshot::{self, Snapshot, SnapshotPublisher};

/// A router over a fresh cluster node, with `token`.
pub(crate) struct TestApi {
    pub router: Router,
    pub cluster: Handle,
    pub ready: Readiness,
    pub publisher: SnapshotPublisher,
    /// The node's Raft address (where its RPC is served).
    pub raft: std::net::SocketAddr,
    /// The node's data directory, removed when the test ends.
    _dir: tempfile::TempDir,
}

/// A started node: its handle, its Raft address (served) and its directory.
pub(crate) struct TestNode {
    pub handle: Handle,
    pub raft: std::net::SocketAddr,
    pub dir: tempfile::TempDir,
}

/// Start node `id` with Raft RPC served on a free loopback port; `peers` names the other
/// initial voters (`None`: this node is not an initial peer and starts empty, to be added).
pub(crate) async fn start_node(id: u64, peers: Option<Vec<(u64, String)>>) -> TestNode {
    let dir = tempfile::tempdir().expect("temp dir");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a raft port");
    let raft = listener.local_addr().expect("raft address");
    let mut all: std::collections::BTreeMap<u64, String> = Default::default();
    if let Some(peers) = peers {
        all.insert(id, raft.to_string());
        all.extend(peers);
    }
    let started = cluster::start(cluster::ClusterConfig {
        node_id: id,
        data_dir: dir.path().to_path_buf(),
        raft_addr: raft.to_string(),
        admin_addr: "127.0.0.1:8053".into(),
        peers: all,
        secret: None,
        tls: None,
        max_snapshot: 1 << 30,
    })
    .await
    .expect("the control plane starts");
    let (_, limits) = crate::serve::Limits::fit(1024, 64);
    tokio::spawn(crate::serve::serve(
        listener,
        started.rpc,
        crate::serve::Transport::LoopbackOnly,
        limits,
        "raft",
    ));
    TestNode {
        handle: started.handle,
        raft,
        dir,
    }
}

/// Wait until `node` leads (a one-node cluster elects itself), for at most 10 s.
async fn leading(node: &Handle) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while node.status().leader != Some(node.node_id()) || !node.quorum() {
        assert!(Instant::now() < deadline, "node 1 did not become leader");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn router_over(node: TestNode, token: Option<&str>) -> TestApi {
    let ready = Readiness::default();
    let publisher = snapshot::channel(Snapshot::empty(1));
    let router = build(App {
        cluster: node.handle.clone(),
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
        cluster: node.handle,
        ready,
        publisher,
        raft: node.raft,
        _dir: node.dir,
    }
}

/// A router over a one-node cluster that leads, with `token`.
pub(crate) async fn test_api(token: Option<&str>) -> TestApi {
    let node = start_node(1, Some(vec![])).await;
    leading(&node.handle).await;
    router_over(node, token)
}

/// A router over a node that can never have a quorum: its one peer is never there.
pub(crate) async fn no_quorum_api(token: Option<&str>) -> TestApi {
    let node = start_node(1, Some(vec![(2, "127.0.0.1:9".into())])).await;
    router_over(node, token)
}
