//! DNSSEC across a 3-node cluster (DESIGN.md "DNSSEC (online signing)": keys made once,
//! replicated through Raft, the same on every node): every node serves the same DNSKEY
//! RRset, and its answers — static, geo, compact denial — validate with the one DS.
//! One cluster for the file.

mod common;

use std::time::{Duration, Instant};

use common::two_sites::{DCS, SERVICES, ZONE};
use common::unbound::delv;
use common::{first_ds, get_json, sign_zone, NodeRef, TestCluster};

/// RFC 4035 §5 on every node: the key PUT on one follower is the key every node signs
/// with, so one DS validates every node's answers.
#[test]
fn rfc4035_5_every_node_of_a_cluster_serves_the_same_dnskey_and_validates() {
    let c = TestCluster::start(
        3,
        &[
            ("example.com.zone", ZONE),
            ("datacenters.toml", DCS),
            ("services.toml", SERVICES),
        ],
    );
    let refs: Vec<NodeRef> = c.nodes.iter().map(|n| n.at.clone()).collect();
    let leader = c.leader(Duration::from_secs(10)).expect("a leader");
    let follower = &refs[(1..=3).find(|&i| i != leader).expect("a follower") as usize - 1];
    let keys = sign_zone(
        follower.admin,
        "example.com",
        r#"{"algorithm": "ECDSAP256SHA256"}"#,
    );
    let ds = first_ds(&keys);
    let dnskey = keys["keys"][0]["dnskey"]
        .as_str()
        .expect("a DNSKEY")
        .to_string();

    // Every node serves it within 5 s, and only it.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut sets = Vec::new();
    for n in &refs {
        let set = loop {
            let set = n.dig(&["example.com", "DNSKEY"]).answer_data("DNSKEY");
            if !set.is_empty() || Instant::now() > deadline {
                break set;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        sets.push(set);
    }
    // dig splits the key's base64 with spaces.
    let squeeze = |s: &str| s.split_whitespace().collect::<String>();
    for (i, set) in sets.iter().enumerate() {
        let set: Vec<String> = set.iter().map(|k| squeeze(k)).collect();
        assert_eq!(set, vec![squeeze(&dnskey)], "node {}: {sets:?}", i + 1);
    }
    // And GET on each node shows the same keys and DS.
    for n in &refs {
        let got = get_json(n.admin, "/api/v1/zones/example.com./dnssec");
        assert_eq!(got["ds"], keys["ds"], "{got}");
    }

    // Each node's answers validate with the one DS: static, the geo service (signed as
    // the query name on each node), the key set, and a name that does not exist.
    for (i, n) in refs.iter().enumerate() {
        for (name, rtype, want) in [
            ("example.com", "SOA", "; fully validated"),
            ("example.com", "DNSKEY", "; fully validated"),
            ("www.example.com", "A", "; fully validated"),
            ("ns1.example.com", "A", "; fully validated"),
            (
                "nope.example.com",
                "A",
                "; negative response, fully validated",
            ),
            (
                "www.example.com",
                "TXT",
                "; negative response, fully validated",
            ),
        ] {
            let text = delv(n.dns, &ds, &[name, rtype]);
            assert!(
                text.contains(want),
                "node {}: {name} {rtype}:\n{text}",
                i + 1
            );
        }
    }
}
