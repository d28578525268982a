//! A real 3-node cluster on loopback: one API call on any node changes every node's DNS
//! answers; the cluster survives a killed leader, restarts, and a lost quorum.
//! One cluster is shared by the scenario, which runs its steps in order.

mod common;

use common::two_sites::{DCS, SERVICES, ZONE};

use std::time::{Duration, Instant};

use common::{http_get, http_with, TestCluster, TOKEN};

fn files() -> Vec<(&'static str, &'static str)> {
    vec![
        ("example.com.zone", ZONE),
        ("datacenters.toml", DCS),
        ("services.toml", SERVICES),
    ]
}

/// A London client's answer from one node.
fn london(node: &common::NodeRef) -> Vec<String> {
    node.dig(&["+subnet=81.2.69.142/32", "www.example.com", "A"])
        .answer_data("A")
}

/// Poll until every listed node answers `want` (or the deadline passes); returns the time.
fn converge(nodes: &[&common::NodeRef], want: &str, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        if nodes.iter().all(|n| london(n) == vec![want.to_string()]) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "nodes did not converge on {want} within {limit:?}: {:?}",
            nodes.iter().map(|n| london(n)).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The newest history entry of `kind` for `target` (any, when empty) that `node` lists,
/// polled for up to 5 s (the entry is proposed once the change committed).
fn history_entry(node: &common::NodeRef, kind: &str, target: &str) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let list = http_get(node.admin, "/api/v1/history?limit=1000")
            .and_then(|(_, b)| serde_json::from_str::<serde_json::Value>(&b).ok());
        let found = list.as_ref().and_then(|l| l.as_array()).and_then(|l| {
            l.iter()
                .find(|e| e["kind"] == kind && (target.is_empty() || e["target"] == target))
                .cloned()
        });
        if let Some(e) = found {
            return e;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "no {kind} entry for {target:?} in {list:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn patch_state(node: &common::NodeRef, dc: &str, state: &str) -> (u16, String) {
    common::patch_datacenter(node.admin, dc, &format!("{{\"state\": \"{state}\"}}"))
}

#[test]
fn three_node_cluster_replicates_survives_and_restarts() {
    let mut c = TestCluster::start(3, &files());
    let refs: Vec<common::NodeRef> = c.nodes.iter().map(|n| n.at.clone()).collect();
    let all: Vec<&common::NodeRef> = refs.iter().collect();
    converge(&all, "198.51.100.1", Duration::from_secs(10));

    // 1. A write on a follower reaches every node's DNS (promised: within 1 s).
    let leader = c.leader(Duration::from_secs(10)).expect("a leader");
    let follower = (1..=3).find(|&i| i != leader).expect("a follower");
    let (status, body) = patch_state(&refs[follower as usize - 1], "lon", "drained");
    assert_eq!(status, 200, "{body}");
    let took = converge(&all, "198.51.100.2", Duration::from_secs(5));
    eprintln!("drain seen by every node's DNS after {took:?}");
    assert!(took < Duration::from_secs(3), "took {took:?}");

    // 1b. A retried write with the same Idempotency-Key is applied once and answered with
    //     the first result (201, not 200).
    let dc = r#"{"location": {"lat": 1, "lon": 2}, "addresses": ["192.0.2.77"]}"#;
    let put_keyed = |node: &common::NodeRef, id: &str, key: &str| {
        common::http_with(
            node.admin,
            "PUT",
            &format!("/api/v1/datacenters/{id}"),
            Some(("application/json", dc)),
            Some(TOKEN),
            &[("Idempotency-Key", key)],
        )
        .expect("admin answered")
    };
    let f = &refs[follower as usize - 1];
    assert_eq!(put_keyed(f, "idem-a", "key-a").0, 201);
    let (status, body) = put_keyed(f, "idem-a", "key-a");
    assert_eq!(status, 201, "the first result again: {body}");
    let (status, _) = put_keyed(&refs[leader as usize - 1], "idem-a", "key-b");
    assert_eq!(status, 200, "another key is another write");

    // 1c. A write the leader proposed but could not commit (both followers paused) is
    //     503 with outcome "unknown"; once they are back it commits, and the same key then
    //     gets the committed result instead of applying it again.
    let lead = refs[leader as usize - 1].clone();
    let followers: Vec<u64> = (1..=3).filter(|&i| i != leader).collect();
    for &i in &followers {
        c.node(i).pause();
    }
    let t = Instant::now();
    let (status, body) = put_keyed(&lead, "idem-u", "key-u");
    for &i in &followers {
        c.node(i).resume();
    }
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("\"outcome\":\"unknown\""), "{body}");
    eprintln!("unknown outcome answered after {:?}", t.elapsed());
    let seen = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        refs.iter()
            .any(|r| http_get(r.admin, "/api/v1/datacenters/idem-u").map(|x| x.0) == Some(200))
    });
    // Retry while the write is known not applied (an election after the pause).
    let mut retry = put_keyed(&lead, "idem-u", "key-u");
    for _ in 0..50 {
        if !(retry.0 == 503 && retry.1.contains("not_applied")) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
        retry = put_keyed(&lead, "idem-u", "key-u");
    }
    let (status, body) = retry;
    // Committed later or lost with the old leader's log: either way the key's write is
    // applied exactly once, and answered as the creation it was.
    eprintln!(
        "the unknown write {} before the retry",
        if seen { "had committed" } else { "was lost" }
    );
    assert_eq!(status, 201, "{body}");
    let leader = c.leader(Duration::from_secs(10)).expect("a leader");

    // 1d. A write through the leader, then at once one through a follower that reads its
    //     own state for it: the follower first applies as far as the leader has, so it never
    //     answers 404 for what was just written (the settings of a zone just created; a
    //     roll of a zone just signed, whose new key the follower makes from the zone's).
    let lead = &refs[leader as usize - 1];
    let other = &refs[(1..=3).find(|&i| i != leader).expect("a follower") as usize - 1];
    let soa =
        "@ 300 IN SOA ns1 hostmaster 1 7200 3600 1209600 300\n@ IN NS ns1\nns1 IN A 192.0.2.1\n";
    for i in 0..10 {
        let zone = format!("/api/v1/zones/fresh{i}.example");
        let (s, b) = common::call(
            lead.admin,
            "PUT",
            &zone,
            Some(("text/dns", soa)),
            Some(TOKEN),
        );
        assert_eq!(s, 201, "{b}");
        let settings = r#"{"allow_transfer": ["127.0.0.1"]}"#;
        let (s, v) = common::api(
            other.admin,
            "PUT",
            &format!("{zone}/settings"),
            Some(settings),
        );
        assert_eq!(
            s, 201,
            "settings through a follower right after the zone: {v}"
        );
        let signing = r#"{"algorithm": "ECDSAP256SHA256"}"#;
        let (s, v) = common::api(lead.admin, "PUT", &format!("{zone}/dnssec"), Some(signing));
        assert_eq!(s, 201, "{v}");
        let roll = r#"{"role": "zsk"}"#;
        let (s, v) = common::api(
            other.admin,
            "POST",
            &format!("{zone}/dnssec/rollover"),
            Some(roll),
        );
        assert_eq!(
            s, 202,
            "a roll through a follower right after the signing: {v}"
        );
    }

    // 2. kill -9 the leader while clients query the others: every query answered.
    let others: Vec<common::NodeRef> = refs
        .iter()
        .enumerate()
        .filter(|(i, _)| *i as u64 + 1 != leader)
        .map(|(_, r)| r.clone())
        .collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let querier = {
        let (others, stop) = (others.clone(), stop.clone());
        std::thread::spawn(move || {
            let (mut asked, mut unanswered) = (0u32, 0u32);
            let start = Instant::now();
            while !stop.load(std::sync::atomic::Ordering::Relaxed)
                && start.elapsed() < Duration::from_secs(30)
            {
                for n in &others {
                    asked += 1;
                    if london(n).is_empty() {
                        unanswered += 1;
                    }
                }
            }
            (asked, unanswered)
        })
    };
    c.node(leader).kill9();
    let start = Instant::now();
    let mut accepted = None;
    while start.elapsed() < Duration::from_secs(15) {
        let (status, _) = patch_state(&others[0], "lon", "active");
        if status == 200 {
            accepted = Some(start.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let others_ref: Vec<&common::NodeRef> = others.iter().collect();
    converge(&others_ref, "198.51.100.1", Duration::from_secs(5));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (asked, unanswered) = querier.join().expect("querier");
    let accepted = accepted.expect("a write accepted after the leader died");
    eprintln!("write accepted {accepted:?} after kill -9 of the leader; {asked} queries during failover, {unanswered} unanswered");
    assert_eq!(unanswered, 0, "queries went unanswered during the failover");
    assert!(asked > 20, "only {asked} queries");
    assert!(accepted < Duration::from_secs(12));

    // 3. The killed node restarts and catches up.
    c.node(leader).restart();
    c.node(leader).wait_healthy(Duration::from_secs(20));
    converge(&all, "198.51.100.1", Duration::from_secs(10));

    // 3b. A node that is not an initial peer starts empty, is added as a learner through a
    //     follower, then serves the replicated state.
    let extra = c.spawn_extra();
    let extra_ref = c.node(extra).at.clone();
    let body = format!(
        "{{\"id\": {extra}, \"addr\": \"{}\", \"admin\": \"{}\", \"voter\": false}}",
        extra_ref.raft, extra_ref.admin
    );
    let leader = c.leader(Duration::from_secs(10)).expect("a leader");
    let follower = (1..=3).find(|&i| i != leader).expect("a follower");
    // With an Idempotency-Key, a retry answers the first attempt's 201, not "already a
    // member" (the key is in the change's history entry, replicated).
    let join = |via: usize| {
        http_with(
            refs[via].admin,
            "POST",
            "/api/v1/cluster/members",
            Some(("application/json", &body)),
            Some(TOKEN),
            &[("Idempotency-Key", "join-extra")],
        )
        .expect("admin answered")
    };
    let (status, resp) = join(follower as usize - 1);
    assert_eq!(status, 201, "{resp}");
    c.node(extra).wait_healthy(Duration::from_secs(20));
    converge(&[&extra_ref], "198.51.100.1", Duration::from_secs(10));
    let (_, cluster) = http_get(extra_ref.admin, "/api/v1/cluster").expect("cluster");
    let v: serde_json::Value = serde_json::from_str(&cluster).expect("json");
    let learner = v["members"]
        .as_array()
        .and_then(|m| m.iter().find(|x| x["id"] == extra))
        .expect("the new node is a member");
    assert_eq!(learner["voter"], false, "{cluster}");
    let target = format!("member/{extra}");
    let added = history_entry(&refs[0], "add_member", &target);
    assert_eq!(added["actor"], "admin", "{added}");
    let (status, resp) = join(leader as usize - 1);
    assert_eq!(
        status, 201,
        "the same key again, through the leader: {resp}"
    );
    c.node(extra).kill9();
    //     Removed again (through a follower), which history lists too; the same key again
    //     is the first 204, not "not a member".
    for via in [follower, leader] {
        let (status, resp) = http_with(
            refs[via as usize - 1].admin,
            "DELETE",
            &format!("/api/v1/cluster/members/{extra}"),
            None,
            Some(TOKEN),
            &[("Idempotency-Key", "leave-extra")],
        )
        .expect("admin answered");
        assert_eq!(status, 204, "through node {via}: {resp}");
    }
    let removed = history_entry(&refs[0], "remove_member", &target);
    assert_eq!(removed["actor"], "admin", "{removed}");
    let index = |e: &serde_json::Value| e["index"].as_u64().unwrap_or_else(|| panic!("{e}"));
    assert!(index(&removed) > index(&added));
    // The cluster's first cookie secret: no operator asked, so DESIGN's `system`.
    let drawn = history_entry(&refs[0], "rotate_cookie_secret", "");
    assert_eq!(drawn["actor"], "system", "{drawn}");

    // 4. All three restart and keep their state.
    let (status, body) = patch_state(&refs[0], "lon", "drained");
    assert_eq!(status, 200, "{body}");
    converge(&all, "198.51.100.2", Duration::from_secs(5));
    for id in 1..=3 {
        c.node(id).kill9();
    }
    for id in 1..=3 {
        c.node(id).restart();
    }
    for id in 1..=3 {
        c.node(id).wait_healthy(Duration::from_secs(20));
    }
    converge(&all, "198.51.100.2", Duration::from_secs(5));

    // 5. Two nodes down: the third still answers DNS; once it knows it has no quorum
    //    (GET /cluster says so) it refuses writes within 1 s, saying they were not applied.
    c.node(2).kill9();
    c.node(3).kill9();
    assert_eq!(london(&refs[0]), vec!["198.51.100.2"]);
    let no_quorum = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        http_get(refs[0].admin, "/api/v1/cluster")
            .and_then(|(_, b)| serde_json::from_str::<serde_json::Value>(&b).ok())
            .is_some_and(|v| v["quorum"] == false)
    });
    assert!(no_quorum, "node 1 never said it lost its quorum");
    let metrics = http_get(refs[0].admin, "/metrics").expect("metrics").1;
    assert!(metrics.contains("meridian_raft_quorum 0"), "{metrics}");
    let t = Instant::now();
    let (status, body) = patch_state(&refs[0], "lon", "active");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("\"outcome\":\"not_applied\""), "{body}");
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(http_get(refs[0].admin, "/healthz").map(|r| r.0), Some(200));
    assert_eq!(london(&refs[0]), vec!["198.51.100.2"]);
}
