//! A peer that is down is logged once when it goes, with a reminder a minute, and once when
//! it comes back — not per Raft retry (openraft alone would write dozens of lines every few
//! seconds). A 3-node cluster runs a minute with one follower stopped while writes go on;
//! the other nodes' logs must say fewer than 10 lines about it. Its own file, since it
//! takes over a minute and so runs beside the other test binaries.

mod common;

use std::time::{Duration, Instant};

use common::{http, two_sites, TestCluster, TOKEN};

/// How long the peer stays down.
const DOWN_FOR: Duration = Duration::from_secs(60);

/// The lines of `log` (from byte `from` on) that are about node `id` at `raft_addr`: they
/// name its Raft address, or it by id as a peer, target or node.
fn lines_about(log: &str, from: usize, id: u64, raft_addr: &str) -> Vec<String> {
    let names = [
        format!("peer={id}"),
        format!("target={id}"),
        format!("node {id} "),
        format!("node={id}"),
        format!("node_id={id}"),
        format!("\"peer\":{id}"),
        format!("\"target\":{id}"),
    ];
    log.get(from..)
        .unwrap_or("")
        .lines()
        .filter(|l| l.contains(raft_addr) || names.iter().any(|n| l.contains(n.as_str())))
        .map(str::to_string)
        .collect()
}

#[test]
fn a_peer_down_for_a_minute_is_logged_in_fewer_than_10_lines() {
    let mut c = TestCluster::start(
        3,
        &[
            ("example.com.zone", two_sites::ZONE),
            ("datacenters.toml", two_sites::DCS),
            ("services.toml", two_sites::SERVICES),
        ],
    );
    let leader = c.leader(Duration::from_secs(20)).expect("a leader");
    let down = (1..=3).find(|&id| id != leader).expect("a follower");
    let others: Vec<u64> = (1..=3).filter(|&id| id != down).collect();
    let raft_addr = c.node(down).at.raft.to_string();
    let starts: Vec<usize> = others.iter().map(|&id| c.node(id).at.log().len()).collect();

    c.node(down).stop(Duration::from_secs(10));
    // Writes go on meanwhile, so the leader keeps trying to replicate to the stopped peer.
    let admin = c.node(leader).at.admin;
    let started = Instant::now();
    let mut weight = 100;
    let mut writes = 0;
    while started.elapsed() < DOWN_FOR {
        weight = if weight == 100 { 90 } else { 100 };
        let body = format!(r#"{{"weight": {weight}}}"#);
        if let Some((200, _)) = http(
            admin,
            "PATCH",
            "/api/v1/datacenters/lon",
            Some(("application/json", &body)),
            Some(TOKEN),
        ) {
            writes += 1;
        }
        std::thread::sleep(Duration::from_secs(5));
    }
    assert!(
        writes >= 10,
        "only {writes} writes committed with one peer down"
    );

    // It comes back: the leader says so (bounded wait).
    c.node(down).restart();
    c.node(down).wait_healthy(Duration::from_secs(30));
    let deadline = Instant::now() + Duration::from_secs(20);
    let back = loop {
        let log = c.node(leader).at.log();
        if log.contains("raft peer reachable again") || Instant::now() > deadline {
            break log;
        }
        std::thread::sleep(Duration::from_millis(200));
    };

    let mut report = String::new();
    for (&id, &from) in others.iter().zip(&starts) {
        let log = c.node(id).at.log();
        let about = lines_about(&log, from, down, &raft_addr);
        report.push_str(&format!(
            "node {id}: {} lines about node {down}:\n{}\n",
            about.len(),
            about.join("\n")
        ));
        assert!(
            about.len() < 10,
            "node {id} logged {} lines about node {down} being down:\n{report}",
            about.len()
        );
        // Nor does it hide in lines that do not name it: few warnings or errors at all.
        let loud: Vec<&str> = log[from..]
            .lines()
            .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
            .collect();
        assert!(
            loud.len() < 10,
            "node {id} logged {} warnings and errors:\n{}",
            loud.len(),
            loud.join("\n")
        );
    }
    eprintln!("{report}");
    // The down and up transitions are there (once each at the leader), not silence.
    let leader_from = others
        .iter()
        .zip(&starts)
        .find(|(&id, _)| id == leader)
        .map_or(0, |(_, &from)| from);
    let leader_log = back.get(leader_from..).unwrap_or("");
    assert_eq!(
        leader_log.matches("raft peer unreachable").count(),
        1,
        "{report}"
    );
    assert_eq!(
        leader_log.matches("raft peer reachable again").count(),
        1,
        "{report}"
    );
}
