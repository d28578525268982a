//! NOTIFY (RFC 1996) from the leader to a real Knot secondary: Knot, configured with a TSIG
//! key and the three Meridian nodes as its primaries, and given no command after it
//! starts, serves the new serial and content within 10 s of a drain, a zone PUT and an
//! UPDATE. Its log says whether it refreshed by IXFR or AXFR.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{http, wait_until, TestCluster, TOKEN};

const SECRET: &str = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTEyMzQ=";

const ZONE: &str = "$ORIGIN example.com.\n$TTL 300\n@ IN SOA ns1 hostmaster 100 7200 3600 1209600 300\n@ IN NS ns1\nns1 IN A 127.0.0.1\nstatic IN A 192.0.2.10\n";
const DCS: &str = "[[datacenter]]\nid = \"lon\"\nlocation = { lat = 51.5, lon = -0.1 }\naddresses = [\"198.51.100.1\"]\n\n[[datacenter]]\nid = \"iad\"\nlocation = { lat = 38.9, lon = -77.4 }\naddresses = [\"198.51.100.2\"]\n";
const SERVICES: &str = "[[service]]\nzone = \"example.com\"\nname = \"www\"\npolicy = \"geo_nearest\"\ndatacenters = [\"lon\", \"iad\"]\nanswers = 2\nttl = 60\n";

/// knotd, killed with the test.
struct Knot(Child);

impl Drop for Knot {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_knot(dir: &std::path::Path, port: u16, primaries: &[SocketAddr]) -> Knot {
    let knotd = ["/usr/sbin/knotd", "/usr/bin/knotd"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("knotd is missing: run scripts/test.sh, which installs knot");
    let d = dir.display();
    let mut conf = format!(
        "server:\n    listen: 127.0.0.1@{port}\n    rundir: {d}\nlog:\n  - target: {d}/knot.log\n    any: info\ndatabase:\n    storage: {d}\nkey:\n  - id: xfr\n    algorithm: hmac-sha256\n    secret: {SECRET}\nremote:\n"
    );
    for (i, p) in primaries.iter().enumerate() {
        conf.push_str(&format!(
            "  - id: meridian{i}\n    address: {}@{}\n    key: xfr\n",
            p.ip(),
            p.port()
        ));
    }
    let ids: Vec<String> = (0..primaries.len())
        .map(|i| format!("meridian{i}"))
        .collect();
    conf.push_str(&format!(
        "acl:\n  - id: notify_from_meridian\n    address: 127.0.0.1\n    key: xfr\n    action: notify\nzone:\n  - domain: example.com\n    master: [{}]\n    acl: notify_from_meridian\n    file: {d}/example.com.zone\n    storage: {d}\n",
        ids.join(", ")
    ));
    let conf_path = dir.join("knot.conf");
    std::fs::write(&conf_path, conf).expect("knot.conf");
    Knot(common::spawn_owned(
        Command::new(knotd)
            .arg("-c")
            .arg(&conf_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    ))
}

fn serial(server: SocketAddr) -> Option<u32> {
    common::dig_at(server, &["example.com", "SOA"])
        .answer_data("SOA")
        .first()
        .and_then(|s| s.split_whitespace().nth(2))
        .and_then(|s| s.parse().ok())
}

/// How Knot refreshed to `serial`, from its log: "IXFR" or "AXFR" (the transfer that
/// finished last before the "zone updated, … serial A -> SERIAL" line).
fn refresh_kind(log: &str, serial: u32) -> Option<&'static str> {
    let needle = format!("-> {serial},");
    let mut last = None;
    for l in log.lines() {
        if l.contains("incoming") && l.contains("finished") {
            if l.contains("IXFR") {
                last = Some("IXFR");
            } else if l.contains("AXFR") {
                last = Some("AXFR");
            }
        }
        if l.contains("zone updated") && l.contains(&needle) {
            return last;
        }
    }
    None
}

#[test]
fn rfc1996_knot_secondary_follows_a_drain_a_zone_put_and_an_update() {
    let knot_port = common::free_port();
    let knot_addr = SocketAddr::from(([127, 0, 0, 1], knot_port));
    let tsig =
        format!("[[key]]\nname = \"xfr\"\nalgorithm = \"hmac-sha256\"\nsecret = \"{SECRET}\"\n");
    let settings = format!(
        "[[zone]]\norigin = \"example.com\"\nallow_transfer = [\"key:xfr\"]\nnotify = [\"{knot_addr}\"]\nnotify_key = \"xfr\"\nallow_update = [{{ key = \"xfr\", name = \"_acme-challenge.example.com.\", types = [\"TXT\"] }}]\n"
    );
    let mut c = TestCluster::start(
        3,
        &[
            ("example.com.zone", ZONE),
            ("datacenters.toml", DCS),
            ("services.toml", SERVICES),
            ("tsig.toml", &tsig),
            ("zone-settings.toml", &settings),
        ],
    );
    let dns: Vec<SocketAddr> = c.nodes.iter().map(|n| n.at.dns).collect();
    let leader = c.leader(Duration::from_secs(20)).expect("a leader");
    let admin = c.node(leader).at.admin;
    wait_until(Duration::from_secs(20), || {
        dns.iter().all(|&n| serial(n).is_some())
    })
    .expect("the zone on every node");

    let kdir = tempfile::tempdir().expect("knot dir");
    let _knot = start_knot(kdir.path(), knot_port, &dns);
    let first = serial(dns[0]).expect("serial");
    wait_until(Duration::from_secs(15), || serial(knot_addr) == Some(first))
        .expect("Knot loads the zone from Meridian");
    let knot_log = || std::fs::read_to_string(kdir.path().join("knot.log")).unwrap_or_default();

    // 1. A drain changes www's unlocated answer: a new serial, and Knot follows.
    let www = |n: SocketAddr| common::dig_at(n, &["www.example.com", "A"]).answer_data("A");
    assert_eq!(www(knot_addr), vec!["198.51.100.1", "198.51.100.2"]);
    let (status, body) = http(
        admin,
        "PATCH",
        "/api/v1/datacenters/iad",
        Some(("application/json", "{\"state\": \"drained\"}")),
        Some(TOKEN),
    )
    .expect("PATCH");
    assert_eq!(status, 200, "{body}");
    let drained = wait_until(Duration::from_secs(5), || {
        serial(dns[0]).is_some_and(|s| s != first)
    })
    .and_then(|_| serial(dns[0]))
    .expect("the drain moves the serial");
    let took = wait_until(Duration::from_secs(10), || {
        serial(knot_addr) == Some(drained) && www(knot_addr) == vec!["198.51.100.1"]
    })
    .unwrap_or_else(|| panic!("Knot did not follow the drain within 10 s:\n{}", knot_log()));
    eprintln!(
        "drain: Knot at serial {drained} after {took:?}, by {:?}",
        refresh_kind(&knot_log(), drained)
    );

    // 2. A zone PUT.
    let text = format!("{ZONE}new IN A 192.0.2.77\n");
    let (status, body) = http(
        admin,
        "PUT",
        "/api/v1/zones/example.com",
        Some(("text/dns", &text)),
        Some(TOKEN),
    )
    .expect("PUT");
    assert!(status == 200 || status == 201, "{status} {body}");
    let put = serial(dns[0]).expect("serial");
    assert_ne!(put, drained);
    let took = wait_until(Duration::from_secs(10), || {
        serial(knot_addr) == Some(put)
            && common::dig_at(knot_addr, &["new.example.com", "A"]).answer_data("A")
                == vec!["192.0.2.77"]
    })
    .unwrap_or_else(|| panic!("Knot did not follow the PUT within 10 s:\n{}", knot_log()));
    eprintln!(
        "zone PUT: Knot at serial {put} after {took:?}, by {:?}",
        refresh_kind(&knot_log(), put)
    );

    // 3. A DNS UPDATE.
    let mut child = Command::new("nsupdate")
        .args(["-y", &format!("hmac-sha256:xfr:{SECRET}"), "-t", "5"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nsupdate (scripts/test.sh installs bind9-dnsutils)");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        write!(
            stdin,
            "server {} {}\nzone example.com\nupdate add _acme-challenge.example.com. 60 TXT \"knot\"\nsend\n",
            dns[2].ip(),
            dns[2].port()
        )
        .expect("script");
    }
    let out = child.wait_with_output().expect("nsupdate");
    assert!(out.status.success(), "{out:?}");
    let updated = serial(dns[2]).expect("serial");
    let took = wait_until(Duration::from_secs(10), || {
        serial(knot_addr) == Some(updated)
            && common::dig_at(knot_addr, &["_acme-challenge.example.com", "TXT"]).answer_data("TXT")
                == vec!["\"knot\""]
    })
    .unwrap_or_else(|| {
        panic!(
            "Knot did not follow the UPDATE within 10 s:\n{}",
            knot_log()
        )
    });
    let log = knot_log();
    eprintln!(
        "UPDATE: Knot at serial {updated} after {took:?}, by {:?}",
        refresh_kind(&log, updated)
    );
    for s in [drained, put, updated] {
        assert!(
            refresh_kind(&log, s).is_some(),
            "Knot's log names no transfer to {s}:\n{log}"
        );
    }
    assert!(
        log.contains("notify, incoming"),
        "Knot was not notified:\n{log}"
    );
}
