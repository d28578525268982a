//! A rolling upgrade, with a real older binary: a 3-node cluster of the binary from before
//! the cluster format (commit bb8e6b1, entry format 2) is upgraded one node at a time. At
//! every step each node keeps applying what the others write — a new leader never sends an
//! old follower an entry, a snapshot or a history entry it cannot read — and what needs
//! the new format (`If-Match: *`, key rolls) waits, refused as `not_applied`, until the last
//! node is upgraded; then the cluster's format goes up by itself, and a node of the old
//! binary can no longer join.
//!
//! The old binary is built by `scripts/test.sh` into `target/compat/meridian-format2` (from
//! the commit, with this build's dependencies) or named by `MERIDIAN_OLD_BIN`. Without it
//! the test fails, unless `MERIDIAN_SKIP_UPGRADE=1` (set by `scripts/test.sh` only when the
//! clone lacks the commit's history).

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::two_sites::{DCS, SERVICES, ZONE};
use common::{
    api, eventually_within, get_json, http_get, http_with, json, NodeRef, TestCluster, TOKEN,
};

const JSON: &str = "application/json";

/// The binary of entry format 2, or `None` when this run skips the test.
fn old_binary() -> Option<PathBuf> {
    let path = std::env::var_os("MERIDIAN_OLD_BIN").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("target/compat/meridian-format2"),
        PathBuf::from,
    );
    if path.is_file() {
        return Some(path);
    }
    if std::env::var("MERIDIAN_SKIP_UPGRADE").as_deref() == Ok("1") {
        eprintln!(
            "upgrade test SKIPPED (MERIDIAN_SKIP_UPGRADE=1): no {}",
            path.display()
        );
        return None;
    }
    panic!(
        "no older binary at {}: run scripts/test.sh (it builds one from commit bb8e6b1) or set MERIDIAN_OLD_BIN",
        path.display()
    );
}

fn new_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_meridian"))
}

fn files() -> Vec<(&'static str, &'static str)> {
    vec![
        ("example.com.zone", ZONE),
        ("datacenters.toml", DCS),
        ("services.toml", SERVICES),
    ]
}

fn cluster_json(node: &NodeRef) -> Option<serde_json::Value> {
    let (s, b) = http_get(node.admin, "/api/v1/cluster")?;
    (s == 200).then(|| serde_json::from_str(&b).ok())?
}

/// The cluster format a node reports (`None`: a binary from before it, or no answer).
fn format(node: &NodeRef) -> Option<u64> {
    cluster_json(node)?["format"].as_u64()
}

fn last_applied(node: &NodeRef) -> u64 {
    cluster_json(node).map_or(0, |v| v["last_applied"].as_u64().unwrap_or(0))
}

/// `PATCH /datacenters/lon` with `If-Match: *` (format 3): (status, answer).
fn if_exists(node: &NodeRef, body: &str) -> (u16, serde_json::Value) {
    let (s, b) = http_with(
        node.admin,
        "PATCH",
        "/api/v1/datacenters/lon",
        Some((JSON, body)),
        Some(TOKEN),
        &[("If-Match", "*")],
    )
    .expect("PATCH answered");
    (s, json(&b))
}

/// A London client's answer from one node.
fn london(node: &NodeRef) -> Vec<String> {
    node.dig(&["+subnet=81.2.69.142/32", "www.example.com", "A"])
        .answer_data("A")
}

/// Drain or activate `lon` through `via`; every node in `all` answers London with the
/// address that state gives, within 10 s.
fn drain(via: &NodeRef, drained: bool, all: &[NodeRef]) {
    let state = if drained { "drained" } else { "active" };
    let (s, v) = api(
        via.admin,
        "PATCH",
        "/api/v1/datacenters/lon",
        Some(&format!(r#"{{"state": "{state}"}}"#)),
    );
    assert_eq!(s, 200, "drain {state} through {}: {v}", via.admin);
    let want = if drained {
        "198.51.100.2"
    } else {
        "198.51.100.1"
    };
    for n in all {
        eventually_within(
            Duration::from_secs(10),
            &format!("{} answers {want}", n.dns),
            || (london(n) == [want]).then_some(()),
        );
    }
}

/// Stop node `id`, start it again on `bin` (same data), wait until it serves.
fn restart_on(c: &mut TestCluster, id: u64, bin: &Path) {
    let node = c.node(id);
    node.stop(Duration::from_secs(15));
    node.bin = bin.to_path_buf();
    node.restart();
    node.wait_healthy(Duration::from_secs(30));
}

/// No node logged that it met an entry, a snapshot or a state it cannot read.
fn none_refused(c: &TestCluster) {
    for n in &c.nodes {
        let log = n.at.log();
        for bad in [
            "newer Meridian",
            "unknown variant",
            "storage error",
            "panicked",
        ] {
            assert!(!log.contains(bad), "node {} logged {bad:?}:\n{log}", n.id);
        }
    }
}

/// A leader that runs the new binary: when an old node leads, it is restarted (on its own
/// binary) until leadership moves.
fn new_leader(c: &mut TestCluster, new: &[u64]) -> u64 {
    for _ in 0..5 {
        let leader = c.leader(Duration::from_secs(10)).expect("a leader");
        if new.contains(&leader) {
            return leader;
        }
        let bin = c.node(leader).bin.clone();
        c.node(leader).kill9();
        let moved = Instant::now() + Duration::from_secs(10);
        while Instant::now() < moved {
            let l = c
                .nodes
                .iter()
                .filter(|n| n.id != leader)
                .find_map(|n| cluster_json(&n.at).and_then(|v| v["leader"].as_u64()));
            if l.is_some_and(|l| l != leader) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        restart_on(c, leader, &bin);
    }
    panic!("no new-binary node became the leader in five tries");
}

#[test]
fn a_rolling_upgrade_from_format_2_keeps_every_node_applying() {
    let Some(old) = old_binary() else { return };
    let new = new_binary();
    let mut c = TestCluster::start_on(&old, 3, &files(), "");
    let all: Vec<NodeRef> = c.nodes.iter().map(|n| n.at.clone()).collect();
    c.leader(Duration::from_secs(10)).expect("a leader");
    let (s, v) = api(
        all[0].admin,
        "PUT",
        "/api/v1/zones/example.com/dnssec",
        Some(r#"{"algorithm": "ECDSAP256SHA256"}"#),
    );
    assert_eq!(s, 201, "{v}");
    drain(&all[0], true, &all);

    // 1. One node upgraded: it says the cluster is at format 2 and offers 4.
    restart_on(&mut c, 3, &new);
    assert_eq!(format(&all[2]), Some(2), "{:?}", cluster_json(&all[2]));
    drain(&all[2], false, &all);
    // What needs format 3 waits, refused before it was proposed.
    let (s, v) = if_exists(&all[2], r#"{"weight": 3}"#);
    assert_eq!(s, 503, "{v}");
    assert_eq!(v["outcome"], "not_applied", "{v}");
    assert!(
        v["error"].as_str().unwrap_or("").contains("entry format 3"),
        "{v}"
    );
    let (s, v) = api(
        all[2].admin,
        "POST",
        "/api/v1/zones/example.com./dnssec/rollover",
        Some(r#"{"role": "csk"}"#),
    );
    assert_eq!((s, &v["outcome"]), (503, &"not_applied".into()), "{v}");

    // 2. Two upgraded, a new leader, the old node 2 following: it applies what the new
    // leader writes, history with TSIG keys included.
    restart_on(&mut c, 1, &new);
    let leader = new_leader(&mut c, &[1, 3]);
    let via = all[leader as usize - 1].clone();
    let key = r#"{"algorithm": "hmac-sha256", "secret": "c2VjcmV0LXNlY3JldC1zZWNyZXQ="}"#;
    for _ in 0..2 {
        let (s, v) = api(via.admin, "PUT", "/api/v1/tsig-keys/xfr", Some(key));
        assert!(s == 200 || s == 201, "{v}");
    }
    drain(&via, true, &all);
    assert!(
        c.node(2).is_running(),
        "the old node stopped:\n{}",
        all[1].log()
    );

    // 3. A snapshot from the new leader to the old node: it misses more than a snapshot's
    // worth of entries (1,000) while stopped, then catches up from the snapshot.
    c.node(2).stop(Duration::from_secs(15));
    for i in 0..1100u32 {
        let (s, v) = api(
            via.admin,
            "PATCH",
            "/api/v1/datacenters/iad",
            Some(&format!(r#"{{"weight": {}}}"#, 1 + i % 50)),
        );
        assert_eq!(s, 200, "write {i}: {v}");
    }
    drain(&via, false, &all[..1]);
    let target = last_applied(&via);
    c.node(2).restart();
    c.node(2).wait_healthy(Duration::from_secs(30));
    eventually_within(Duration::from_secs(30), "the old node catches up", || {
        (last_applied(&all[1]) >= target).then_some(())
    });
    eventually_within(
        Duration::from_secs(10),
        "the old node answers London",
        || (london(&all[1]) == ["198.51.100.1"]).then_some(()),
    );
    // It caught up from a snapshot (the log it missed was purged), which the leader says.
    let sent = c.node(leader).at.log();
    assert!(
        sent.lines()
            .any(|l| l.contains("sending a snapshot") && l.contains("node=2")),
        "no snapshot was sent to node 2:\n{sent}"
    );
    none_refused(&c);

    // 4. The last node upgraded: the format goes up on every node by itself.
    restart_on(&mut c, 2, &new);
    let healthy = Instant::now();
    for n in &all {
        eventually_within(
            Duration::from_secs(15),
            &format!("{} at format 4", n.admin),
            || (format(n) == Some(4)).then_some(()),
        );
    }
    eprintln!(
        "format 4 on every node {:?} after the last node served",
        healthy.elapsed()
    );
    let (s, v) = if_exists(&all[1], r#"{"weight": 3}"#);
    assert_eq!(s, 200, "{v}");
    let (s, v) = api(
        all[1].admin,
        "PUT",
        "/api/v1/tsig-keys/xfr",
        Some(r#"{"algorithm": "hmac-sha256", "secret": "b3RoZXItc2VjcmV0LW90aGVyLXNlY3JldA=="}"#),
    );
    assert_eq!(s, 200, "{v}");
    let newest = get_json(all[1].admin, "/api/v1/history?limit=1")[0]["index"].as_u64();
    let newest = newest.expect("a history entry");
    let e = get_json(all[1].admin, &format!("/api/v1/history/{newest}"));
    assert_eq!(e["before"]["name"], "xfr", "{e}");
    let (s, v) = api(
        all[1].admin,
        "POST",
        "/api/v1/zones/example.com./dnssec/rollover",
        Some(r#"{"role": "csk"}"#),
    );
    assert_eq!(s, 202, "{v}");

    // 5. A node of the old binary may no longer join.
    let four = c.spawn_extra_on(&old);
    // (Not healthy until it has a state; the leader's probe waits for its port.)
    let at = c.node(four).at.clone();
    let body = format!(
        r#"{{"id": {four}, "addr": "{}", "admin": "{}", "voter": false}}"#,
        at.raft, at.admin
    );
    let (s, v) = api(all[0].admin, "POST", "/api/v1/cluster/members", Some(&body));
    assert_eq!(s, 409, "{v}");
    assert!(
        v["error"].as_str().unwrap_or("").contains("older Meridian"),
        "{v}"
    );
    let members = cluster_json(&all[0]).expect("cluster")["members"]
        .as_array()
        .map(Vec::len);
    assert_eq!(members, Some(3));
    none_refused(&c);
    // Every node lists the same history (what changed, where, by whom), whichever binary
    // applied each entry: format 2 kept them alike.
    let target = last_applied(&all[0]);
    let history = |n: &NodeRef| -> Vec<(u64, String, String, String)> {
        let list = get_json(n.admin, "/api/v1/history?limit=1000");
        let s = |e: &serde_json::Value, k: &str| e[k].as_str().unwrap_or("").to_string();
        let items = list.as_array().cloned().unwrap_or_default();
        items
            .iter()
            .map(|e| {
                (
                    e["index"].as_u64().unwrap_or(0),
                    s(e, "kind"),
                    s(e, "target"),
                    s(e, "actor"),
                )
            })
            .collect()
    };
    for n in &all[1..] {
        eventually_within(Duration::from_secs(10), "every node applied all", || {
            (last_applied(n) >= target).then_some(())
        });
        assert_eq!(
            history(n),
            history(&all[0]),
            "{} and {}",
            n.admin,
            all[0].admin
        );
    }
}
