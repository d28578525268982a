//! Meridian as users meet it: behind a real recursive resolver. Unbound, with its ECS module
//! (`subnetcache`), forwards each client's /24 to Meridian, which picks the nearest datacenter
//! and scopes its answer; Unbound must then keep one cached answer per subnet.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::{dig_at, Dig, Node};

use common::unbound::{Unbound, UNBOUND};

const ZONE: &str = r#"$ORIGIN example.com.
$TTL 300
@       3600 IN SOA ns1.example.com. hostmaster.example.com. ( 2026112501 7200 3600
                1209600 300 )
@       IN NS    ns1
ns1     IN A     127.0.0.1
@       IN A     192.0.2.1
"#;

const DATACENTERS: &str = r#"
[[datacenter]]
id = "lon"
location = { lat = 51.5074, lon = -0.1278 }
addresses = ["198.51.100.1"]
weight = 100

[[datacenter]]
id = "iad"
location = { lat = 38.9519, lon = -77.4480 }
addresses = ["198.51.100.2"]
weight = 100

[[datacenter]]
id = "sin"
location = { lat = 1.3521, lon = 103.8198 }
addresses = ["198.51.100.3"]
weight = 100
"#;

const SERVICES: &str = r#"
[[service]]
zone = "example.com"
name = "www"
policy = "geo_nearest"
datacenters = ["lon", "iad", "sin"]
ttl = 60
"#;

/// Client subnets as a resolver sends them (ECS truncated to /24), and the datacenter address
/// nearest each (geoip/README.md, "ECS truncated to /24").
const GB: (&str, &str) = ("2.2.3.0/24", "198.51.100.1"); // Boxford → lon
const SG: (&str, &str) = ("214.0.0.0/24", "198.51.100.3"); // Singapore → sin
const CN: (&str, &str) = ("175.16.199.0/24", "198.51.100.3"); // Changchun → sin
const US: (&str, &str) = ("214.78.120.0/24", "198.51.100.2"); // San Diego → iad

/// Unbound with ECS on (a per-subnet cache), stub to `meridian`.
fn start_unbound(meridian: SocketAddr) -> Unbound {
    Unbound::start(
        meridian,
        &format!(
            "    module-config: \"subnetcache iterator\"\n    send-client-subnet: {}\n    max-client-subnet-ipv4: 24\n",
            meridian.ip()
        ),
    )
}

/// `dig @unbound +rec +subnet=SUBNET www.example.com A`
fn ask(unbound: &Unbound, subnet: &str) -> Dig {
    dig_at(
        unbound.addr,
        &["+rec", &format!("+subnet={subnet}"), "www.example.com", "A"],
    )
}

#[test]
fn geo_nearest_through_unbound_with_ecs_and_a_per_subnet_cache() {
    assert!(
        Path::new(UNBOUND).exists(),
        "{UNBOUND} is missing: run scripts/test.sh, which installs unbound"
    );
    let mut node = Node::start_example(ZONE, DATACENTERS, SERVICES);
    let unbound = start_unbound(node.dns);
    let at = node.at.clone();

    let check = |(subnet, want): (&str, &str), when: &str| -> Dig {
        let d = ask(&unbound, subnet);
        assert_eq!(
            (d.status.as_str(), d.answer_data("A")),
            ("NOERROR", vec![want.to_string()]),
            "{subnet} ({when}) through unbound:\n{}\nunbound log:\n{}\nmeridian log:\n{}",
            d.raw,
            unbound.log(),
            at.log()
        );
        d
    };

    // Each subnet twice, interleaved: a repeat after another subnet's answer must still get
    // its own datacenter, not the answer Unbound cached for the subnet asked just before.
    let order = [GB, SG, GB, CN, US, SG, CN, US];
    let mut seen = Vec::new();
    for (i, q) in order.into_iter().enumerate() {
        let d = check(q, &format!("query {}", i + 1));
        // Unbound echoes the client's ECS with the scope Meridian gave: non-zero, since the
        // pick depends on the client.
        let ecs = d.opt_line("CLIENT-SUBNET:").unwrap_or_default().to_string();
        let scope = ecs
            .rsplit('/')
            .next()
            .and_then(|s| s.trim().parse::<u8>().ok());
        assert!(
            ecs.contains(&format!(" {}/", q.0)) && scope.is_some_and(|s| s > 0),
            "{} echoed ECS {ecs:?}, want a non-zero scope:\n{}",
            q.0,
            d.raw
        );
        seen.extend(d.answer_data("A"));
    }
    // Three different answers for one name from one resolver: Meridian saw each client's
    // subnet (without ECS it sees only 127.0.0.1, which has no location).
    seen.sort();
    seen.dedup();
    assert_eq!(seen, ["198.51.100.1", "198.51.100.2", "198.51.100.3"]);

    // With Meridian gone, Unbound can answer only from its cache: still one answer per subnet.
    assert!(
        node.terminate(Duration::from_secs(10)).is_some(),
        "meridian did not stop"
    );
    for q in [US, GB, CN, SG] {
        check(q, "from cache, meridian stopped");
    }
}
