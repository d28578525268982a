//! Geo routing through the real binary: services answer by policy, with `dig +subnet` (EDNS
//! Client Subnet, RFC 7871) placing the client with the MaxMind test database.

mod common;

use std::sync::OnceLock;

use common::{Node, NodeRef, Setup};

const ZONE: &str = "$ORIGIN example.com.\n$TTL 300\n@ IN SOA ns1 hostmaster 1 7200 3600 1209600 300\n@ IN NS ns1\nns1 IN A 127.0.0.1\nwww IN TXT \"geo\"\n";

const DCS: &str = r#"
[[datacenter]]
id = "lon"
location = { lat = 51.5074, lon = -0.1278 }
addresses = ["198.51.100.1", "2001:db8:1::1"]

[[datacenter]]
id = "iad"
location = { lat = 38.9519, lon = -77.4480 }
addresses = ["198.51.100.2", "2001:db8:2::1"]

[[datacenter]]
id = "sin"
location = { lat = 1.3521, lon = 103.8198 }
addresses = ["198.51.100.3"]

[[datacenter]]
id = "lon-drained"
location = { lat = 51.5074, lon = -0.1278 }
addresses = ["198.51.100.11"]
state = "drained"

[[datacenter]]
id = "iad-drained"
location = { lat = 38.9519, lon = -77.4480 }
addresses = ["198.51.100.12"]
state = "drained"

[[datacenter]]
id = "light"
location = { lat = 0.0, lon = 0.0 }
addresses = ["198.51.100.21"]
weight = 100

[[datacenter]]
id = "heavy"
location = { lat = 0.0, lon = 0.0 }
addresses = ["198.51.100.22"]
weight = 300
"#;

const SERVICES: &str = r#"
[[service]]
zone = "example.com"
name = "www"
policy = "geo_nearest"
datacenters = ["lon", "iad", "sin"]
ttl = 60

[[service]]
zone = "example.com"
name = "@"
policy = "geo_nearest"
datacenters = ["lon", "iad", "sin"]
overrides = { "country:SE" = ["sin"], "continent:AS" = ["lon"] }

[[service]]
zone = "example.com"
name = "drain"
policy = "geo_nearest"
datacenters = ["lon-drained", "iad", "sin"]

[[service]]
zone = "example.com"
name = "alldown"
policy = "geo_nearest"
datacenters = ["lon-drained", "iad-drained"]

[[service]]
zone = "example.com"
name = "nothing"
policy = "geo_nearest"
datacenters = ["lon-drained", "iad-drained"]
on_all_down = "none"

[[service]]
zone = "example.com"
name = "rr"
policy = "round_robin"
datacenters = ["lon", "iad", "sin"]
ttl = 30

[[service]]
zone = "example.com"
name = "weighted"
policy = "weighted"
datacenters = ["light", "heavy"]
"#;

fn node() -> &'static NodeRef {
    static NODE: OnceLock<NodeRef> = OnceLock::new();
    common::shared(&NODE, || Node::start_example(ZONE, DCS, SERVICES))
}

fn a_for(name: &str, subnet: &str) -> Vec<String> {
    let d = node().dig(&[&format!("+subnet={subnet}"), name, "A"]);
    assert_eq!(d.status, "NOERROR", "{}", d.raw);
    assert!(d.has_flag("aa"));
    d.answer_data("A")
}

#[test]
fn geo_nearest_sends_each_client_to_its_nearest_site() {
    let cases = [
        ("81.2.69.142/32", "198.51.100.1"),   // London
        ("2.125.160.216/32", "198.51.100.1"), // Boxford, GB
        ("216.160.83.56/32", "198.51.100.2"), // Milton, WA, US
        ("214.78.120.0/24", "198.51.100.2"),  // San Diego, US
        ("214.0.0.0/24", "198.51.100.3"),     // Singapore
        ("175.16.199.0/24", "198.51.100.3"),  // Changchun, CN
        ("2001:218::/32", "198.51.100.3"),    // Japan
    ];
    for (subnet, want) in cases {
        assert_eq!(
            a_for("www.example.com", subnet),
            vec![want],
            "client {subnet}"
        );
    }
}

#[test]
fn rfc7871_scope_is_the_widest_network_with_the_same_answer() {
    let d = node().dig(&["+subnet=214.0.0.0/24", "www.example.com", "A"]);
    let ecs = d.opt_line("CLIENT-SUBNET:").expect("ECS echoed");
    assert!(ecs.contains("214.0.0.0/24/24"), "{ecs}");
    // London /32: a whole region shares one nearest site, so the scope is much wider than the
    // /31 the database has for that address (gdnsd answers /4 here too).
    let d = node().dig(&["+subnet=81.2.69.142/32", "www.example.com", "A"]);
    let ecs = d.opt_line("CLIENT-SUBNET:").expect("ECS echoed");
    let scope: u8 = ecs
        .rsplit('/')
        .next()
        .and_then(|s| s.trim().parse().ok())
        .expect("scope");
    assert!(scope <= 31 && scope > 0, "{ecs}");
    // a static name in the same zone: scope 0
    let d = node().dig(&["+subnet=81.2.69.142/32", "www.example.com", "TXT"]);
    let ecs = d.opt_line("CLIENT-SUBNET:").expect("ECS echoed");
    assert!(ecs.contains("81.2.69.142/32/0"), "{ecs}");
}

#[test]
fn rfc7871_ecs_zero_prefix_uses_the_source_address_with_scope_zero() {
    let d = node().dig(&["+subnet=0.0.0.0/0", "www.example.com", "A"]);
    // 127.0.0.1 is not in the database: listed order, London first
    assert_eq!(d.answer_data("A"), vec!["198.51.100.1"]);
    let ecs = d.opt_line("CLIENT-SUBNET:").expect("ECS echoed");
    assert!(ecs.contains("0.0.0.0/0/0"), "{ecs}");
}

#[test]
fn client_without_location_gets_listed_order() {
    let d = node().dig(&["www.example.com", "A"]);
    assert_eq!(d.answer_data("A"), vec!["198.51.100.1"], "{}", d.raw);
    assert!(
        d.opt_line("CLIENT-SUBNET:").is_none(),
        "no ECS asked, none echoed"
    );
    assert_eq!(d.answer[0].ttl, 60, "service TTL");
}

#[test]
fn overrides_by_country_then_continent_at_the_apex() {
    // Linköping, SE → country override → sin
    assert_eq!(
        a_for("example.com", "89.160.20.112/32"),
        vec!["198.51.100.3"]
    );
    // Changchun, AS → continent override → lon
    assert_eq!(
        a_for("example.com", "175.16.199.0/24"),
        vec!["198.51.100.1"]
    );
    // Milton, US → no override → nearest
    assert_eq!(
        a_for("example.com", "216.160.83.56/32"),
        vec!["198.51.100.2"]
    );
    // the apex still has its SOA and NS
    let d = node().dig(&["example.com", "SOA"]);
    assert_eq!(d.answer.len(), 1);
}

#[test]
fn drained_site_is_skipped_for_the_next_nearest() {
    assert_eq!(
        a_for("drain.example.com", "81.2.69.142/32"),
        vec!["198.51.100.2"]
    );
}

#[test]
fn all_drained_fails_open_unless_on_all_down_none() {
    assert_eq!(
        a_for("alldown.example.com", "81.2.69.142/32"),
        vec!["198.51.100.11", "198.51.100.12"]
    );
    let d = node().dig(&["nothing.example.com", "A"]);
    assert_eq!(d.status, "NOERROR");
    assert!(d.answer.is_empty(), "{}", d.raw);
    assert_eq!(d.authority[0].rtype, "SOA");
}

#[test]
fn aaaa_comes_from_ipv6_sites_and_other_types_are_nodata() {
    let d = node().dig(&["+subnet=81.2.69.142/32", "www.example.com", "AAAA"]);
    assert_eq!(d.answer_data("AAAA"), vec!["2001:db8:1::1"]);
    // Singapore has no IPv6: the next nearest with IPv6 answers
    let d = node().dig(&["+subnet=214.0.0.0/24", "www.example.com", "AAAA"]);
    assert_eq!(d.answer_data("AAAA").len(), 1);
    assert_ne!(d.answer_data("AAAA"), vec!["2001:db8:3::1"]);
    let d = node().dig(&["www.example.com", "MX"]);
    assert_eq!(d.status, "NOERROR");
    assert!(d.answer.is_empty());
    // records of other types at a service name still answer
    let d = node().dig(&["www.example.com", "TXT"]);
    assert_eq!(d.answer_data("TXT"), vec!["\"geo\""]);
}

#[test]
fn round_robin_rotates_all_sites() {
    let mut firsts = std::collections::BTreeSet::new();
    for _ in 0..12 {
        let d = node().dig(&["rr.example.com", "A"]);
        assert_eq!(d.answer.len(), 3, "all healthy sites: {}", d.raw);
        firsts.insert(d.answer[0].data.clone());
    }
    assert!(firsts.len() >= 2, "rotation: {firsts:?}");
}

#[test]
fn weighted_1_to_3_is_honoured() {
    // One dig process, 800 queries.
    let mut args: Vec<&str> = Vec::new();
    for _ in 0..800 {
        args.extend(["weighted.example.com", "A"]);
    }
    args.push("+short");
    let out = std::process::Command::new("dig")
        .arg("@127.0.0.1")
        .args([
            "-p",
            &node().dns.port().to_string(),
            "+norec",
            "+time=2",
            "+tries=2",
        ])
        .args(&args)
        .output()
        .expect("dig");
    let text = String::from_utf8_lossy(&out.stdout);
    let light = text.lines().filter(|l| l.trim() == "198.51.100.21").count();
    let heavy = text.lines().filter(|l| l.trim() == "198.51.100.22").count();
    assert!(light + heavy >= 790, "answered {}", light + heavy);
    // expected 200 ± 12 (σ); a 1:1 or 1:2 split falls far outside
    assert!((140..=260).contains(&light), "light {light}, heavy {heavy}");
}

#[test]
fn geoip_database_replaced_by_rename_is_picked_up_without_restart() {
    let dir = tempfile::tempdir().expect("tmp");
    let shared = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/geoip");
    let db = dir.path().join("geo.mmdb");
    // GeoLite2-City-Test does not know 214.0.0.0/24; GeoIP2-City-Test says Singapore.
    std::fs::copy(shared.join("GeoLite2-City-Test.mmdb"), &db).expect("copy");
    let extra = format!("[geoip]\ndatabase = \"{}\"\n", db.display());
    let node = Node::start(&Setup {
        files: &[
            ("example.com.zone", ZONE),
            ("datacenters.toml", DCS),
            ("services.toml", SERVICES),
        ],
        extra_config: &extra,
    });
    let ask = || {
        node.dig(&["+subnet=214.0.0.0/24", "www.example.com", "A"])
            .answer_data("A")
    };
    assert_eq!(ask(), vec!["198.51.100.1"], "unknown client: listed order");
    // a corrupt file put in place is refused and the old database stays
    let tmp = dir.path().join("geo.mmdb.new");
    std::fs::copy(
        shared.join("bad/GeoIP2-City-Test-Invalid-Node-Count.mmdb"),
        &tmp,
    )
    .expect("copy");
    std::fs::rename(&tmp, &db).expect("rename");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while !node.log().contains("new GeoIP database refused") {
        assert!(
            std::time::Instant::now() < deadline,
            "corrupt file not noticed: {}",
            node.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(ask(), vec!["198.51.100.1"]);
    std::fs::copy(shared.join("GeoIP2-City-Test.mmdb"), &tmp).expect("copy");
    std::fs::rename(&tmp, &db).expect("rename");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        if ask() == vec!["198.51.100.3"] {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "new database not used: {}",
            node.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}
