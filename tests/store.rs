//! The store fails closed and stays bounded: a node whose store lost something it had
//! acknowledged refuses to start (naming the store), and a node keeps its state and a
//! bounded `data_dir` across a thousand writes and a restart.

mod common;

use std::time::{Duration, Instant};

use common::two_sites::{DCS, SERVICES, ZONE};
use common::{http, http_get, TestCluster, TOKEN};

fn files() -> Vec<(&'static str, &'static str)> {
    vec![
        ("example.com.zone", ZONE),
        ("datacenters.toml", DCS),
        ("services.toml", SERVICES),
    ]
}

fn patch_weight(node: &common::NodeRef, weight: u32) -> (u16, String) {
    let body = format!("{{\"weight\": {weight}}}");
    http(
        node.admin,
        "PATCH",
        "/api/v1/datacenters/lon",
        Some(("application/json", &body)),
        Some(TOKEN),
    )
    .expect("admin answered")
}

fn weight(node: &common::NodeRef) -> Option<u64> {
    let (_, body) = http_get(node.admin, "/api/v1/datacenters/lon")?;
    serde_json::from_str::<serde_json::Value>(&body).ok()?["weight"].as_u64()
}

fn dir_size(path: &std::path::Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(path) {
        for e in entries.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => total += dir_size(&e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

#[test]
fn a_thousand_writes_keep_data_dir_bounded_and_survive_a_restart() {
    let mut c = TestCluster::start(1, &files());
    let node = c.node(1).at.clone();
    let data = c.dir.path().join("data1");
    let before = dir_size(&data);
    let start = Instant::now();
    for i in 1..=1000u32 {
        let (status, body) = patch_weight(&node, i % 1000);
        assert_eq!(status, 200, "write {i}: {body}");
    }
    let took = start.elapsed();
    let after = dir_size(&data);
    eprintln!(
        "1,000 writes in {took:?} ({:?} each); data_dir {before} -> {after} bytes",
        took / 1000
    );
    assert!(
        after < 32 << 20,
        "data_dir grew to {after} bytes after 1,000 small writes"
    );
    assert_eq!(weight(&node), Some(0));
    assert_eq!(
        c.node(1).stop(Duration::from_secs(10)).map(|s| s.success()),
        Some(true)
    );
    let t = Instant::now();
    c.node(1).restart();
    c.node(1).wait_healthy(Duration::from_secs(10));
    eprintln!("restart to /healthz 200 in {:?}", t.elapsed());
    assert_eq!(
        weight(&node),
        Some(0),
        "the last write survived the restart"
    );
}

#[test]
fn a_store_that_lost_an_acknowledged_write_is_refused_at_start() {
    let mut c = TestCluster::start(1, &files());
    let node = c.node(1).at.clone();
    for i in 1..=20u32 {
        assert_eq!(patch_weight(&node, i).0, 200);
    }
    assert_eq!(
        c.node(1).stop(Duration::from_secs(10)).map(|s| s.success()),
        Some(true)
    );
    // Flip one bit in the newest part of the database file: sled finds the damaged record
    // and rolls back to before it, silently; the node must notice and refuse.
    let db = c.dir.path().join("data1/raft/db");
    let mut bytes = std::fs::read(&db).expect("read db");
    let at = bytes.len().saturating_sub(300);
    bytes[at] ^= 0x40;
    std::fs::write(&db, &bytes).expect("write db");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_meridian"))
        .arg("serve")
        .arg("--config")
        .arg(c.dir.path().join("node1.toml"))
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a damaged store was served:\n{stderr}"
    );
    assert!(
        stderr.contains("lost data it had acknowledged") && stderr.contains("data1/raft"),
        "{stderr}"
    );
}
