//! DNSSEC key rollover (DESIGN.md "DNSSEC (online signing)"): pre-publication (RFC 6781
//! §4.1.1.1) timed by the zone's own TTLs — here 2 s, so a roll takes seconds — with a real
//! validator (Unbound, the DS from `GET` as its trust anchor) asked at every step; a ZSK roll
//! in a KSK+ZSK zone and a CSK roll that waits for `ds-seen`.

mod common;

use std::time::{Duration, Instant, SystemTime};

use common::unbound::{validator, Unbound};
use common::{api, eventually_within, get_json, sign_zone, Dig, Node, NodeRef, TestCluster};

/// Every TTL 2 s: the DNSKEY TTL (the SOA's) and the largest TTL signed.
const ZONE: &str = r#"$ORIGIN example.com.
$TTL 2
@       IN SOA ns1.example.com. hostmaster.example.com. ( 2026120701 7200 3600
                1209600 2 )
@       IN NS    ns1
ns1     IN A     127.0.0.1
@       IN A     192.0.2.1
txt     IN TXT   "hello"
*.wild  IN TXT   "wild"
"#;

const DATACENTERS: &str = r#"
[[datacenter]]
id = "lon"
location = { lat = 51.5074, lon = -0.1278 }
addresses = ["198.51.100.1"]

[[datacenter]]
id = "sin"
location = { lat = 1.3521, lon = 103.8198 }
addresses = ["198.51.100.3"]
"#;

const SERVICES: &str = r#"
[[service]]
zone = "example.com"
name = "www"
policy = "geo_nearest"
datacenters = ["lon", "sin"]
ttl = 2
"#;

const PATH: &str = "/api/v1/zones/example.com./dnssec";

/// How long a whole roll may take here: two waits of TTL + 5 s propagation, plus ticks.
const ROLL_LIMIT: Duration = Duration::from_secs(60);

/// An authorised JSON request to `node`'s admin API: (status, the answer parsed).
fn call(node: &NodeRef, method: &str, path: &str, body: Option<&str>) -> (u16, serde_json::Value) {
    api(node.admin, method, path, body)
}

fn get(node: &NodeRef) -> serde_json::Value {
    get_json(node.admin, PATH)
}

fn rollover(node: &NodeRef, role: &str) -> (u16, serde_json::Value) {
    call(
        node,
        "POST",
        &format!("{PATH}/rollover"),
        Some(&format!(r#"{{"role": "{role}"}}"#)),
    )
}

/// Sign the zone with a KSK and a ZSK (ECDSA): the PUT's body, the KSK's tag, the ZSK's.
fn sign_ksk_zsk(node: &Node) -> (serde_json::Value, u64, u64) {
    let v = sign_zone(
        node.admin,
        "example.com.",
        r#"{"algorithm": "ECDSAP256SHA256", "keys": "ksk+zsk"}"#,
    );
    let ks = keys(&v);
    let ksk = ks.iter().find(|k| k.1 == "ksk").expect("a KSK").0;
    let zsk = ks.iter().find(|k| k.1 == "zsk").expect("a ZSK").0;
    (v, ksk, zsk)
}

/// (tag, role, state) of every key in a GET body.
fn keys(v: &serde_json::Value) -> Vec<(u64, String, String)> {
    v["keys"]
        .as_array()
        .unwrap_or_else(|| panic!("no keys: {v}"))
        .iter()
        .map(|k| {
            (
                k["tag"].as_u64().expect("tag"),
                k["role"].as_str().expect("role").to_string(),
                k["state"].as_str().expect("state").to_string(),
            )
        })
        .collect()
}

fn ds_list(v: &serde_json::Value) -> Vec<String> {
    let mut ds: Vec<String> = v["ds"]
        .as_array()
        .unwrap_or_else(|| panic!("no ds: {v}"))
        .iter()
        .map(|d| d.as_str().expect("DS").to_string())
        .collect();
    ds.sort();
    ds
}

/// What a validator must keep answering with AD at every step: static, wildcard, a geo
/// service (signed per answer), a missing name (compact denial) and the DNSKEY RRset.
const CASES: &[(&str, &str)] = &[
    ("example.com", "A"),
    ("txt.example.com", "TXT"),
    ("x.wild.example.com", "TXT"),
    ("www.example.com", "A"),
    ("nope.example.com", "A"),
    ("example.com", "DNSKEY"),
];

/// Ask `unbound` every case: NOERROR with AD, never SERVFAIL.
fn validates(unbound: &Unbound, what: &str, node: &Node) {
    for (name, rtype) in CASES {
        if let Err(e) = unbound.validated(name, rtype) {
            panic!("{what}: {e}\nmeridian log:\n{}", node.log());
        }
    }
}

/// The key tags of the RRSIGs covering `rtype` in `d`'s answer.
fn sig_tags(d: &Dig, rtype: &str) -> Vec<u64> {
    let mut tags: Vec<u64> = d
        .answer
        .iter()
        .filter(|r| r.rtype == "RRSIG" && r.data.split_whitespace().next() == Some(rtype))
        .filter_map(|r| r.data.split_whitespace().nth(6)?.parse().ok())
        .collect();
    tags.sort_unstable();
    tags
}

/// Wait (bounded) until the node's DNS signs `rtype` at `name` with exactly `want`.
fn wait_sig_tags(node: &NodeRef, name: &str, rtype: &str, want: &[u64]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let d = node.dig(&["+dnssec", name, rtype]);
        if sig_tags(&d, rtype) == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} {rtype}: want RRSIGs by {want:?}, got:\n{}",
            d.raw
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Wait (bounded, 5 s) until the node's DNSKEY RRset holds `n` keys.
fn wait_dnskeys(node: &NodeRef, n: usize, what: &str) {
    eventually_within(Duration::from_secs(5), what, || {
        (node
            .dig(&["example.com", "DNSKEY"])
            .answer_data("DNSKEY")
            .len()
            == n)
            .then_some(())
    })
}

/// History entries as (kind, actor, summary).
fn history(node: &NodeRef) -> Vec<(String, String, String)> {
    let (s, v) = call(node, "GET", "/api/v1/history?limit=100", None);
    assert_eq!(s, 200, "{v}");
    v.as_array()
        .unwrap_or_else(|| panic!("history: {v}"))
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap_or("").to_string(),
                e["actor"].as_str().unwrap_or("").to_string(),
                e["summary"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// How long after it retired a replaced key's removal falls due: the zone's largest TTL
/// and DNSKEY TTL (both 2 s here) plus the propagation delay (5 s, src/zone/dnssec.rs).
const REMOVAL_WAIT: Duration = Duration::from_secs(2 + 5);

/// How often the leader looks for due roll steps (src/cluster/rollover.rs): a due step is
/// proposed within one tick.
const TICK: Duration = Duration::from_secs(1);

/// When key `old` retired for `new`, as the node recorded it: the committed time of the
/// automatic step "key NEW active, key OLD retired" (the time the server's own timers count
/// from).
fn retired_at(node: &NodeRef, new: u64, old: u64) -> SystemTime {
    let summary = format!("key {new} active, key {old} retired");
    let h = get_json(node.admin, "/api/v1/history?limit=100");
    let entry = h
        .as_array()
        .and_then(|a| a.iter().find(|e| e["summary"].as_str() == Some(&summary)))
        .unwrap_or_else(|| panic!("no history entry {summary:?}: {h}"));
    let time = entry["time"].as_str().unwrap_or("");
    humantime::parse_rfc3339(time).unwrap_or_else(|e| panic!("history time {time:?}: {e}"))
}

/// A KSK or CSK roll without `ds-seen`, to past the point where the old key would have
/// left: first until `new` is active and `old` retired (the step itself, seen in the keys'
/// states), then until the old key's removal has been due for two leader ticks. At every
/// look both validators (anchored at the old and at the new DS) validate, `old` is still
/// listed and `ds` is `both`.
fn hold_without_ds_seen(
    node: &Node,
    (with_old, with_new): (&Unbound, &Unbound),
    (old, new): (u64, u64),
    both: &[String],
) {
    let look = |when: &str| {
        validates(with_old, &format!("old DS, {when}"), node);
        validates(with_new, &format!("new DS, {when}"), node);
        let v = get(node);
        assert!(
            keys(&v).iter().any(|k| k.0 == old),
            "left before ds-seen: {v}"
        );
        assert_eq!(ds_list(&v), both);
        keys(&v)
    };
    eventually_within(
        ROLL_LIMIT,
        "the new key active, the old one retired",
        || {
            let ks = look("during the roll");
            let state = |tag: u64| ks.iter().find(|k| k.0 == tag).map(|k| k.2.clone());
            (state(new).as_deref() == Some("active") && state(old).as_deref() == Some("retired"))
                .then_some(())
        },
    );
    // The removal is a protocol timer, decided against the committed step's time: its only
    // effect here is an absence (the old key does not leave), so there is no state to poll
    // for. Keep looking until the server's own due time (the retirement it recorded plus
    // the removal wait) has passed by two ticks; ds_seen_then_old_key_leaves then shows the
    // removal was due (the key leaves within ticks of ds-seen).
    let due = retired_at(node, new, old) + REMOVAL_WAIT + 2 * TICK;
    eventually_within(ROLL_LIMIT, "the old key's removal due", || {
        look("waiting for ds-seen");
        (SystemTime::now() >= due).then_some(())
    });
}

/// A roll that changes the DS: `POST .../rollover` with `role` (202), and meanwhile a second
/// one with `again` refused (409). The new key (of `new_role`, other than `old`) is
/// published; `ds` lists two DS, the old one and the new one. (new tag, both DS, new DS);
/// and once the DNSKEY RRset is signed by both keys.
fn roll_to_a_new_ds(
    node: &Node,
    (role, again, new_role): (&str, &str, &str),
    old: u64,
    old_ds: &str,
) -> (u64, Vec<String>, String) {
    let (s, v) = rollover(node, role);
    assert_eq!(s, 202, "{v}");
    assert_eq!(
        rollover(node, again).0,
        409,
        "a {role} roll is under way, {again} refused"
    );
    let new = keys(&v)
        .iter()
        .find(|k| k.0 != old && k.1 == new_role)
        .map(|k| {
            assert_eq!(k.2, "published", "{v}");
            k.0
        })
        .unwrap_or_else(|| panic!("no new {new_role}: {v}"));
    let both = ds_list(&v);
    assert_eq!(both.len(), 2, "both DS meanwhile: {v}");
    let new_ds = both
        .iter()
        .find(|d| *d != old_ds)
        .expect("the new DS")
        .clone();
    let mut both_tags = vec![old, new];
    both_tags.sort_unstable();
    wait_sig_tags(node, "example.com", "DNSKEY", &both_tags);
    (new, both, new_ds)
}

/// `POST .../ds-seen` (200), then wait until key `old` has left `keys` and only `new_ds` is
/// listed, `with_new` (anchored at the new DS) validating at every look. Called once the
/// old key's removal was due: it must leave within a few leader ticks.
fn ds_seen_then_old_key_leaves(node: &Node, with_new: &Unbound, old: u64, new_ds: &str) {
    let (s, v) = call(node, "POST", &format!("{PATH}/ds-seen"), None);
    assert_eq!(s, 200, "{v}");
    let deadline = Instant::now() + 5 * TICK;
    loop {
        validates(with_new, "new DS, after ds-seen", node);
        let v = get(node);
        if keys(&v).iter().all(|k| k.0 != old) {
            assert_eq!(ds_list(&v), [new_ds.to_string()]);
            return;
        }
        assert!(
            Instant::now() < deadline,
            "key {old} did not leave after ds-seen: {v}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// `keys: "ksk+zsk"`: the KSK (257) signs only the key RRsets, the ZSK (256) the rest, the
/// DS is the KSK's; a ZSK roll (RFC 6781 §4.1.1.1) validates at every step, ends with the
/// new ZSK active and the old one gone, and never changes the DS. Plus the refusals: 404,
/// 409, 422.
#[test]
fn rfc6781_4_1_1_1_zsk_roll_in_a_ksk_zsk_zone_validates_throughout() {
    let node = Node::start_example(ZONE, DATACENTERS, SERVICES);
    // Not signed yet: 404.
    assert_eq!(rollover(&node, "zsk").0, 404);
    assert_eq!(call(&node, "POST", &format!("{PATH}/ds-seen"), None).0, 404);
    let (v, ksk, zsk) = sign_ksk_zsk(&node);
    let ks = keys(&v);
    assert!(ks.iter().all(|k| k.2 == "active"), "{v}");
    let flags: Vec<u64> = v["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["flags"].as_u64().expect("flags"))
        .collect();
    assert_eq!(flags.len(), 2);
    assert!(flags.contains(&257) && flags.contains(&256), "{v}");
    let ds = ds_list(&v);
    assert_eq!(ds.len(), 1, "only the KSK has a DS: {v}");
    assert!(ds[0].starts_with(&format!("{ksk} 13 2 ")), "{ds:?}");
    // The same again: 200, nothing changed; the other layout named: 409; a bad one: 422.
    let (s, again) = call(&node, "PUT", PATH, Some(r#"{"keys": "ksk+zsk"}"#));
    assert_eq!((s, keys(&again)), (200, ks.clone()));
    assert_eq!(call(&node, "PUT", PATH, Some(r#"{"keys": "csk"}"#)).0, 409);
    assert_eq!(call(&node, "PUT", PATH, Some(r#"{"keys": "zsk"}"#)).0, 422);

    // On the wire: DNSKEY signed by the KSK alone, data by the ZSK alone.
    wait_sig_tags(&node, "example.com", "DNSKEY", &[ksk]);
    wait_sig_tags(&node, "example.com", "CDS", &[ksk]);
    wait_sig_tags(&node, "example.com", "A", &[zsk]);
    wait_sig_tags(&node, "www.example.com", "A", &[zsk]);
    let unbound = validator(node.dns, &ds[0]);
    validates(&unbound, "ksk+zsk", &node);

    // Refusals: unknown role 422, `csk` in a KSK+ZSK zone 422, no KSK roll for ds-seen 409.
    assert_eq!(rollover(&node, "bogus").0, 422);
    assert_eq!(rollover(&node, "csk").0, 422);
    assert_eq!(call(&node, "POST", &format!("{PATH}/ds-seen"), None).0, 409);
    assert_eq!(
        call(
            &node,
            "POST",
            "/api/v1/zones/example.org./dnssec/rollover",
            Some(r#"{"role": "zsk"}"#)
        )
        .0,
        404
    );

    // The roll: 202 with the new ZSK published at once; a second ZSK roll meanwhile is 409.
    let rolled = Instant::now();
    let (s, v) = rollover(&node, "zsk");
    assert_eq!(s, 202, "{v}");
    let ks = keys(&v);
    assert_eq!(ks.len(), 3, "{v}");
    let new = ks
        .iter()
        .find(|k| k.1 == "zsk" && k.2 == "published")
        .unwrap_or_else(|| panic!("no published ZSK: {v}"))
        .0;
    assert_eq!(ds_list(&v), ds, "a ZSK roll never changes the DS");
    assert_eq!(rollover(&node, "zsk").0, 409);
    // Published: in the DNSKEY RRset, not signing yet.
    wait_dnskeys(&node, 3, "the new ZSK is not in DNSKEY within 5 s");

    // Every step validates; the states go published → active, active → retired → gone.
    let deadline = Instant::now() + ROLL_LIMIT;
    let mut seen = Vec::new();
    loop {
        validates(&unbound, "during the ZSK roll", &node);
        let v = get(&node);
        let ks = keys(&v);
        let state = |tag: u64| ks.iter().find(|k| k.0 == tag).map(|k| k.2.clone());
        let now = (state(new), state(zsk));
        if seen.last() != Some(&now) {
            seen.push(now.clone());
        }
        assert_eq!(ds_list(&v), ds, "a ZSK roll never changes the DS");
        if now == (Some("active".into()), None) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the roll did not end in {ROLL_LIMIT:?}: {seen:?}\n{}",
            node.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let want = [
        (Some("published".to_string()), Some("active".to_string())),
        (Some("active".to_string()), Some("retired".to_string())),
        (Some("active".to_string()), None),
    ];
    assert!(
        seen.iter().all(|s| want.contains(s)) && seen.contains(&want[1]),
        "states seen: {seen:?}"
    );
    wait_sig_tags(&node, "example.com", "A", &[new]);
    wait_sig_tags(&node, "www.example.com", "A", &[new]);
    wait_sig_tags(&node, "example.com", "DNSKEY", &[ksk]);
    validates(&unbound, "after the ZSK roll", &node);
    eprintln!(
        "ZSK roll, start to the old key's removal: {:?}",
        rolled.elapsed()
    );

    let h = history(&node);
    assert!(
        h.iter().any(|(k, a, _)| k == "rollover" && a != "system"),
        "{h:?}"
    );
    let auto: Vec<&(String, String, String)> = h
        .iter()
        .filter(|(k, a, _)| k == "rollover" && a == "system")
        .collect();
    assert_eq!(auto.len(), 2, "activate and remove: {h:?}");
}

/// A CSK roll: both DS in GET and the new one in CDS until `ds-seen`; validators anchored
/// at the old DS and at the new DS both validate during the roll; the old key stays past
/// its waits until `ds-seen`, then leaves.
#[test]
fn rfc6781_csk_roll_validates_with_either_ds_and_waits_for_ds_seen() {
    let node = Node::start_example(ZONE, DATACENTERS, SERVICES);
    let v = sign_zone(node.admin, "example.com.", r#"{"algorithm": "ED25519"}"#);
    let old = keys(&v)[0].0;
    let old_ds = ds_list(&v);
    assert_eq!(old_ds.len(), 1);
    let old_ds = old_ds[0].clone();
    wait_sig_tags(&node, "example.com", "DNSKEY", &[old]);
    let with_old = validator(node.dns, &old_ds);
    validates(&with_old, "before the roll", &node);

    // `zsk` rolls the one combined key too. Both keys sign the key RRsets meanwhile.
    let rolled = Instant::now();
    let (new, both, new_ds) = roll_to_a_new_ds(&node, ("zsk", "csk", "csk"), old, &old_ds);
    assert!(new_ds.starts_with(&format!("{new} 15 2 ")), "{new_ds}");
    let mut both_tags = vec![old, new];
    both_tags.sort_unstable();

    // RFC 7344: CDS and CDNSKEY name the new key only.
    let cds = node.dig(&["example.com", "CDS"]).answer_data("CDS");
    assert_eq!(cds.len(), 1, "{cds:?}");
    // dig splits a long digest into words.
    let squeeze = |s: &str| {
        s.split_whitespace()
            .collect::<String>()
            .to_ascii_uppercase()
    };
    assert_eq!(squeeze(&cds[0]), squeeze(&new_ds));
    let cdnskey = node.dig(&["example.com", "CDNSKEY"]).answer_data("CDNSKEY");
    assert_eq!(cdnskey.len(), 1, "{cdnskey:?}");
    assert!(cdnskey[0].starts_with("257 3 15 "), "{cdnskey:?}");
    let with_new = validator(node.dns, &new_ds);

    // Both anchors validate until the new key is active and the old one retired, and on
    // past the old key's own waits (2 s TTL + 5 s propagation) without ds-seen.
    hold_without_ds_seen(&node, (&with_old, &with_new), (old, new), &both);
    wait_sig_tags(&node, "example.com", "A", &[new]);
    wait_sig_tags(&node, "example.com", "DNSKEY", &both_tags);

    ds_seen_then_old_key_leaves(&node, &with_new, old, &new_ds);
    wait_sig_tags(&node, "example.com", "DNSKEY", &[new]);
    wait_dnskeys(&node, 1, "the old key is still in DNSKEY");
    validates(&with_new, "new DS, after the roll", &node);
    eprintln!(
        "CSK roll to the old key's removal (held past its waits without ds-seen): {:?}",
        rolled.elapsed()
    );
    assert_eq!(
        call(&node, "POST", &format!("{PATH}/ds-seen"), None).0,
        409,
        "no roll waits for ds-seen any more"
    );

    let h = history(&node);
    assert!(
        h.iter().any(|(k, a, _)| k == "ds_seen" && a != "system"),
        "{h:?}"
    );
    let auto: Vec<&String> = h
        .iter()
        .filter(|(k, a, _)| k == "rollover" && a == "system")
        .map(|(_, _, s)| s)
        .collect();
    assert_eq!(
        auto,
        [
            &format!("key {old} removed"),
            &format!("key {new} active, key {old} retired")
        ],
        "{h:?}"
    );
}

/// A KSK roll in a KSK+ZSK zone: the ZSK keeps signing the data throughout; the DNSKEY
/// RRset is signed by both KSKs until `ds-seen`, so validators anchored at the old DS and
/// at the new DS both validate; after `ds-seen` the old KSK leaves and the new DS alone is
/// listed.
#[test]
fn rfc6781_ksk_roll_in_a_ksk_zsk_zone_validates_with_either_ds() {
    let node = Node::start_example(ZONE, DATACENTERS, SERVICES);
    let (v, old, zsk) = sign_ksk_zsk(&node);
    let old_ds = ds_list(&v)[0].clone();
    wait_sig_tags(&node, "example.com", "DNSKEY", &[old]);
    let with_old = validator(node.dns, &old_ds);
    validates(&with_old, "before the KSK roll", &node);

    let rolled = Instant::now();
    let (new, both, new_ds) = roll_to_a_new_ds(&node, ("ksk", "ksk", "ksk"), old, &old_ds);
    let with_new = validator(node.dns, &new_ds);

    // Through published → active/retired, and past the old KSK's waits without ds-seen.
    hold_without_ds_seen(&node, (&with_old, &with_new), (old, new), &both);
    let ks = keys(&get(&node));
    let state = |tag: u64| ks.iter().find(|k| k.0 == tag).map(|k| k.2.clone());
    assert_eq!(
        (
            state(new).as_deref(),
            state(old).as_deref(),
            state(zsk).as_deref()
        ),
        (Some("active"), Some("retired"), Some("active")),
        "{ks:?}"
    );
    wait_sig_tags(&node, "example.com", "A", &[zsk]);

    ds_seen_then_old_key_leaves(&node, &with_new, old, &new_ds);
    wait_sig_tags(&node, "example.com", "DNSKEY", &[new]);
    wait_sig_tags(&node, "www.example.com", "A", &[zsk]);
    validates(&with_new, "new DS, after the KSK roll", &node);
    eprintln!(
        "KSK roll to the old key's removal (held past its waits without ds-seen): {:?}",
        rolled.elapsed()
    );
}

/// In a 3-node cluster: the roll is started on one node, the new key is in every node's
/// DNSKEY RRset within 5 s, the leader that was in charge dies mid-roll and the new leader
/// takes the remaining steps, each exactly once; every node ends with the same keys.
#[test]
fn a_zsk_roll_in_a_cluster_survives_a_leader_change_and_steps_once() {
    let mut c = TestCluster::start(
        3,
        &[
            ("example.com.zone", ZONE),
            ("datacenters.toml", DATACENTERS),
            ("services.toml", SERVICES),
        ],
    );
    let refs: Vec<NodeRef> = c.nodes.iter().map(|n| n.at.clone()).collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    while refs
        .iter()
        .any(|n| n.dig(&["example.com", "SOA"]).status != "NOERROR")
    {
        assert!(
            Instant::now() < deadline,
            "the zone is not served everywhere"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    sign_zone(refs[1].admin, "example.com.", r#"{"keys": "ksk+zsk"}"#);
    // Node 3 takes the roll at once: it makes the new key from the zone's keys once it has
    // applied as far as the leader had (a follower's read index), not from what it had.
    let (s, v) = rollover(&refs[2], "zsk");
    assert_eq!(s, 202, "{v}");
    let new = keys(&v)
        .iter()
        .find(|k| k.2 == "published")
        .map(|k| k.0)
        .unwrap_or_else(|| panic!("no published key: {v}"));
    for n in &refs {
        wait_dnskeys(n, 3, "the new key in every node's DNSKEY");
    }
    // The leader dies before any automatic step is due (the first is 7 s away): the new
    // key is still only published, so the steps left are the next leader's.
    let leader = c.leader(Duration::from_secs(10)).expect("a leader");
    let before = keys(&get(&refs[leader as usize - 1]));
    assert!(
        before.iter().any(|k| k.0 == new && k.2 == "published"),
        "a step was taken before the leader was killed: {before:?}"
    );
    c.node(leader).kill9();
    let alive: Vec<&NodeRef> = refs
        .iter()
        .enumerate()
        .filter(|(i, _)| *i as u64 + 1 != leader)
        .map(|(_, n)| n)
        .collect();
    let deadline = Instant::now() + ROLL_LIMIT;
    loop {
        let ks = keys(&get(alive[0]));
        if ks.len() == 2 && ks.iter().any(|k| k.0 == new && k.2 == "active") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the roll did not end after the leader change: {ks:?}\n{}",
            alive[0].log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let first = get(alive[0]);
    let deadline = Instant::now() + Duration::from_secs(5);
    for n in &alive {
        while keys(&get(n)) != keys(&first) {
            assert!(Instant::now() < deadline, "the nodes' keys differ");
            std::thread::sleep(Duration::from_millis(50));
        }
        wait_sig_tags(n, "example.com", "A", &[new]);
        let dnskeys = n.dig(&["example.com", "DNSKEY"]).answer_data("DNSKEY");
        assert_eq!(dnskeys.len(), 2, "{dnskeys:?}");
    }
    let auto = history(alive[1])
        .into_iter()
        .filter(|(k, a, _)| k == "rollover" && a == "system")
        .count();
    assert_eq!(auto, 2, "each automatic step exactly once");
}
