//! `GET /metrics` through the real binary: queries asked with `dig` show up by zone, type,
//! rcode and policy, answers by datacenter, with the Raft and snapshot gauges; and the label
//! set stays bounded whatever names clients ask for.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::two_sites::{DCS, SERVICES};
use common::{http_get, udp_exchange, Node};

const ZONE: &str = "$ORIGIN example.com.\n$TTL 300\n@ IN SOA ns1 hostmaster 1 7200 3600 1209600 300\n@ IN NS ns1\nns1 IN A 127.0.0.1\nstatic IN A 192.0.2.10\n";

fn start() -> Node {
    Node::start_example(ZONE, DCS, SERVICES)
}

/// Every sample of the exposition: series (name and labels) → value.
fn scrape(node: &Node) -> BTreeMap<String, f64> {
    let (status, text) = http_get(node.admin, "/metrics").expect("GET /metrics");
    assert_eq!(status, 200, "{text}");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("{l}"));
            let value = value.parse().unwrap_or_else(|_| panic!("value: {l}"));
            (series.to_string(), value)
        })
        .collect()
}

fn get(m: &BTreeMap<String, f64>, series: &str) -> f64 {
    m.get(series).copied().unwrap_or(0.0)
}

const GEO_A: &str =
    r#"meridian_queries_total{zone="example.com.",qtype="A",rcode="NOERROR",policy="geo_nearest"}"#;
const STATIC_A: &str =
    r#"meridian_queries_total{zone="example.com.",qtype="A",rcode="NOERROR",policy="none"}"#;
const NX_A: &str =
    r#"meridian_queries_total{zone="example.com.",qtype="A",rcode="NXDOMAIN",policy="none"}"#;
const REFUSED_A: &str =
    r#"meridian_queries_total{zone="-",qtype="A",rcode="REFUSED",policy="none"}"#;
const LON: &str = r#"meridian_datacenter_answers_total{datacenter="lon"}"#;
const IAD: &str = r#"meridian_datacenter_answers_total{datacenter="iad"}"#;

/// A query for `name` A, RD clear, no EDNS.
fn query(id: u16, name: &str) -> Vec<u8> {
    let mut p = id.to_be_bytes().to_vec();
    p.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        p.push(label.len() as u8);
        p.extend_from_slice(label.as_bytes());
    }
    p.extend_from_slice(&[0, 0, 1, 0, 1]);
    p
}

#[test]
fn queries_by_zone_type_rcode_and_policy_answers_by_datacenter_raft_and_snapshot_age() {
    let node = start();
    let before = scrape(&node);
    // London (81.2.69.142 in the test database) → lon, three times; over TCP once more.
    for _ in 0..3 {
        let d = node.dig(&["www.example.com", "A", "+subnet=81.2.69.142/32"]);
        assert_eq!(d.answer_data("A"), ["198.51.100.1"], "{}", d.raw);
    }
    let d = node.dig(&["www.example.com", "A", "+subnet=81.2.69.142/32", "+tcp"]);
    assert_eq!(d.answer_data("A"), ["198.51.100.1"], "{}", d.raw);
    // Milton, WA → iad.
    let d = node.dig(&["www.example.com", "A", "+subnet=216.160.83.56/32"]);
    assert_eq!(d.answer_data("A"), ["198.51.100.2"], "{}", d.raw);
    let d = node.dig(&["static.example.com", "A"]);
    assert_eq!(d.status, "NOERROR", "{}", d.raw);
    for _ in 0..2 {
        let d = node.dig(&["www.example.org", "A"]);
        assert_eq!(d.status, "REFUSED", "{}", d.raw);
    }
    let after = scrape(&node);
    let delta = |s: &str| get(&after, s) - get(&before, s);
    assert_eq!(delta(GEO_A), 5.0, "{after:#?}");
    assert_eq!(delta(STATIC_A), 1.0, "{after:#?}");
    assert_eq!(delta(REFUSED_A), 2.0, "{after:#?}");
    assert_eq!((delta(LON), delta(IAD)), (4.0, 1.0), "{after:#?}");
    assert_eq!(
        get(
            &after,
            r#"meridian_datacenter_health{datacenter="lon",health="unknown"}"#
        ),
        1.0
    );
    assert_eq!(
        get(
            &after,
            r#"meridian_datacenter_state{datacenter="iad",state="active"}"#
        ),
        1.0
    );
    // A single-node cluster: it leads, in a term of at least 1, with its log applied.
    assert!(get(&after, "meridian_raft_term") >= 1.0, "{after:#?}");
    assert_eq!(get(&after, "meridian_raft_leader"), 1.0);
    assert_eq!(get(&after, "meridian_raft_is_leader"), 1.0);
    assert!(
        get(&after, "meridian_raft_last_applied") >= 1.0,
        "{after:#?}"
    );
    assert!(
        get(&after, "meridian_raft_last_log_index") >= get(&after, "meridian_raft_last_applied")
    );
    let age = after
        .get("meridian_snapshot_age_seconds")
        .copied()
        .unwrap_or_else(|| panic!("no snapshot age: {after:#?}"));
    assert!((0.0..120.0).contains(&age), "{age}");
    assert!(get(&after, "meridian_snapshot_generation") >= 1.0);
}

#[test]
fn random_names_add_no_series() {
    let node = start();
    // One NXDOMAIN first, so its series exists before the burst.
    let d = node.dig(&["first-miss.example.com", "A"]);
    assert_eq!(d.status, "NXDOMAIN", "{}", d.raw);
    let before = scrape(&node);
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut answered = 0;
    for i in 0..1000u16 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let name = format!("r{seed:016x}.example.com");
        if let Some(reply) = udp_exchange(node.dns, &query(i, &name), Duration::from_secs(2)) {
            assert_eq!(reply[3] & 0x0f, 3, "NXDOMAIN for {name}");
            answered += 1;
        }
    }
    assert!(answered >= 990, "only {answered} of 1000 answered");
    let after = scrape(&node);
    let new: Vec<&String> = after.keys().filter(|k| !before.contains_key(*k)).collect();
    assert!(new.is_empty(), "new series: {new:#?}");
    assert_eq!(after.len(), before.len());
    assert_eq!(get(&after, NX_A) - get(&before, NX_A), f64::from(answered));
}
