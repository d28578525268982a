//! DNS UPDATE (RFC 2136) signed with TSIG (RFC 8945), sent by the real `nsupdate -y` to a
//! follower of a 3-node cluster over UDP and TCP: applied through Raft, all or nothing, the
//! prerequisites checked at apply time, seen by every node with the same serial.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{http, http_get, wait_until, TestCluster, TOKEN};

const SECRET: &str = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTEyMzQ=";
const WRONG: &str = "d3Jvbmctd3Jvbmctd3Jvbmctd3Jvbmctd3JvbmctMTI=";

const ZONE: &str = "$ORIGIN example.com.\n$TTL 300\n@ IN SOA ns1 hostmaster 100 7200 3600 1209600 300\n@ IN NS ns1\nns1 IN A 127.0.0.1\nstatic IN A 192.0.2.10\n";
/// A zone only the no-op test writes to, so its serial moves for no other reason.
const QUIET: &str = "$ORIGIN quiet.test.\n$TTL 300\n@ IN SOA ns1 hostmaster 7 7200 3600 1209600 300\n@ IN NS ns1\nns1 IN A 127.0.0.1\n";
const DCS: &str = "[[datacenter]]\nid = \"lon\"\nlocation = { lat = 51.5, lon = -0.1 }\naddresses = [\"198.51.100.1\"]\n";
const SERVICES: &str = "[[service]]\nzone = \"example.com\"\nname = \"www\"\npolicy = \"geo_nearest\"\ndatacenters = [\"lon\"]\nttl = 60\n";
const TSIG: &str = "[[key]]\nname = \"acme\"\nalgorithm = \"hmac-sha256\"\nsecret = \"c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTEyMzQ=\"\n\n[[key]]\nname = \"other\"\nalgorithm = \"hmac-sha256\"\nsecret = \"c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTEyMzQ=\"\n";
/// `acme` may write TXT at `_acme-challenge`, anything below `dyn`, and A records
/// anywhere (so that an A at the service `www` is refused for being a service, not for
/// want of a grant). `other` may write nothing.
const SETTINGS: &str = "[[zone]]\norigin = \"example.com\"\nallow_update = [\n  { key = \"acme\", name = \"_acme-challenge.example.com.\", match = \"name\", types = [\"TXT\"] },\n  { key = \"acme\", name = \"dyn.example.com.\", match = \"subdomain\" },\n  { key = \"acme\", name = \"example.com.\", match = \"subdomain\", types = [\"A\"] },\n]\n\n[[zone]]\norigin = \"quiet.test\"\nallow_update = [{ key = \"acme\", name = \"quiet.test.\", match = \"subdomain\" }]\n";

/// The cluster's nodes (DNS and admin addresses) and which one leads.
struct Shared {
    dns: Vec<SocketAddr>,
    admin: Vec<SocketAddr>,
    leader: usize,
}

impl Shared {
    /// A node that is not the leader.
    fn follower(&self) -> SocketAddr {
        self.dns[(self.leader + 1) % self.dns.len()]
    }
}

/// One cluster for the file, started by a thread that lives as long as the test process
/// (the nodes die with it).
fn cluster() -> &'static Shared {
    static CELL: OnceLock<Shared> = OnceLock::new();
    CELL.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let c = TestCluster::start(
                3,
                &[
                    ("example.com.zone", ZONE),
                    ("quiet.test.zone", QUIET),
                    ("datacenters.toml", DCS),
                    ("services.toml", SERVICES),
                    ("tsig.toml", TSIG),
                    ("zone-settings.toml", SETTINGS),
                ],
            );
            let leader = c.leader(Duration::from_secs(20)).expect("a leader");
            let dns = c.nodes.iter().map(|n| n.at.dns).collect();
            let admin = c.nodes.iter().map(|n| n.at.admin).collect();
            // Wait for the bootstrap import to show on every node.
            let shared = Shared {
                dns,
                admin,
                leader: leader as usize - 1,
            };
            for &n in &shared.dns {
                wait_until(Duration::from_secs(20), || {
                    common::dig_at(n, &["www.example.com", "A"]).status == "NOERROR"
                })
                .expect("bootstrap imported on every node");
            }
            let _ = tx.send(shared);
            let _keep = c;
            loop {
                std::thread::park();
            }
        });
        rx.recv().expect("cluster started")
    })
}

/// Run `nsupdate` (`-v`: TCP) with `key` (`None`: unsigned) on `script` (without the
/// `server` line and final `send`): (success, everything it printed).
fn nsupdate(server: SocketAddr, key: Option<&str>, tcp: bool, script: &str) -> (bool, String) {
    let mut cmd = Command::new("nsupdate");
    if let Some(k) = key {
        cmd.arg("-y").arg(k);
    }
    if tcp {
        cmd.arg("-v");
    }
    cmd.args(["-t", "5", "-u", "2", "-r", "1"]);
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nsupdate runs (scripts/test.sh installs bind9-dnsutils)");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        let text = format!("server {} {}\n{script}\nsend\n", server.ip(), server.port());
        stdin.write_all(text.as_bytes()).expect("write script");
    }
    let out = child.wait_with_output().expect("nsupdate ends");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn acme() -> String {
    format!("hmac-sha256:acme:{SECRET}")
}

fn txt(server: SocketAddr, name: &str) -> Vec<String> {
    common::dig_at(server, &[name, "TXT"]).answer_data("TXT")
}

fn serial(server: SocketAddr) -> Option<u32> {
    let d = common::dig_at(server, &["example.com", "SOA"]);
    d.answer_data("SOA")
        .first()
        .and_then(|s| s.split_whitespace().nth(2))
        .and_then(|s| s.parse().ok())
}

/// Every node has `want` (`true`) or lacks it at `name`, and all show the same serial.
fn converged(c: &Shared, name: &str, value: &str, want: bool) -> bool {
    let quoted = format!("\"{value}\"");
    let have = c
        .dns
        .iter()
        .all(|&n| txt(n, name).contains(&quoted) == want);
    let serials: Vec<Option<u32>> = c.dns.iter().map(|&n| serial(n)).collect();
    have && serials[0].is_some() && serials.iter().all(|s| *s == serials[0])
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[test]
fn rfc2136_3_4_acme_txt_over_udp_and_tcp_reaches_every_node_with_one_serial() {
    let c = cluster();
    let name = "_acme-challenge.example.com.";
    let before = serial(c.follower()).expect("a serial");
    let (ok, out) = nsupdate(
        c.follower(),
        Some(&acme()),
        false,
        &format!("zone example.com\nupdate add {name} 60 TXT \"tok-udp\""),
    );
    assert!(ok, "UDP update failed: {out}");
    // The reply comes after the commit: the follower answers at once.
    assert!(txt(c.follower(), name).contains(&"\"tok-udp\"".to_string()));
    wait_until(Duration::from_secs(2), || {
        converged(c, name, "tok-udp", true)
    })
    .expect("every node shows the TXT with the same serial within 2 s");
    let after = serial(c.follower()).expect("a serial");
    assert!(after > before, "serial {before} → {after}");
    // GET /zones/example.com shows it.
    let (status, text) = http(
        c.admin[0],
        "GET",
        "/api/v1/zones/example.com",
        None,
        Some(TOKEN),
    )
    .expect("GET zone");
    assert_eq!(status, 200);
    assert!(text.contains("tok-udp"), "{text}");

    // Over TCP.
    let add = format!("zone example.com\nupdate add {name} 60 TXT \"tok-tcp\"");
    let (ok, out) = nsupdate(c.follower(), Some(&acme()), true, &add);
    assert!(ok, "TCP update failed: {out}");
    wait_until(Duration::from_secs(2), || {
        converged(c, name, "tok-tcp", true)
    })
    .expect("every node shows the TCP update within 2 s");

    // Delete both values (by RRset).
    let (ok, out) = nsupdate(
        c.follower(),
        Some(&acme()),
        false,
        &format!("zone example.com\nupdate delete {name} TXT"),
    );
    assert!(ok, "delete failed: {out}");
    wait_until(Duration::from_secs(2), || {
        converged(c, name, "tok-udp", false)
    })
    .expect("the deletion reaches every node");
}

/// RFC 2136 §3.6: an update that changes nothing answers NOERROR and leaves the serial.
#[test]
fn rfc2136_3_6_an_update_that_changes_nothing_keeps_the_serial() {
    let c = cluster();
    let f = c.follower();
    let soa = |n| {
        common::dig_at(n, &["quiet.test", "SOA"])
            .answer_data("SOA")
            .first()
            .and_then(|s| s.split_whitespace().nth(2).map(str::to_string))
    };
    let add = "zone quiet.test\nupdate add x.quiet.test. 60 TXT \"once\"";
    let (ok, out) = nsupdate(f, Some(&acme()), true, add);
    assert!(ok, "{out}");
    let first = soa(f).expect("a serial");
    assert_eq!(first, "8", "the serial moves once");
    for (tcp, script) in [
        (false, add),
        (
            true,
            "zone quiet.test\nupdate delete nothere.quiet.test. TXT",
        ),
        (
            false,
            "zone quiet.test\nupdate delete x.quiet.test. TXT \"other\"",
        ),
    ] {
        let (ok, out) = nsupdate(f, Some(&acme()), tcp, script);
        assert!(ok, "{script}: {out}");
        assert_eq!(
            soa(f).as_deref(),
            Some(first.as_str()),
            "{script} moved the serial"
        );
    }
}

#[test]
fn update_visible_on_all_nodes_latency() {
    let c = cluster();
    let mut times = Vec::new();
    let mut replies = Vec::new();
    for i in 0..20 {
        let name = format!("lat{i}.dyn.example.com.");
        let start = Instant::now();
        let (ok, out) = nsupdate(
            c.follower(),
            Some(&acme()),
            false,
            &format!("zone example.com\nupdate add {name} 60 TXT \"v{i}\""),
        );
        assert!(ok, "{out}");
        replies.push(start.elapsed());
        let value = format!("\"v{i}\"");
        wait_until(Duration::from_secs(2), || {
            c.dns.iter().all(|&n| txt(n, &name).contains(&value))
        })
        .expect("visible on every node within 2 s");
        times.push(start.elapsed());
    }
    times.sort();
    replies.sort();
    eprintln!(
        "nsupdate start → its signed NOERROR (committed, shown by the follower): median {:?}, p95 {:?}",
        percentile(&replies, 0.5),
        percentile(&replies, 0.95)
    );
    eprintln!(
        "UPDATE (nsupdate start) → visible on all 3 nodes: median {:?}, p95 {:?}, max {:?} (n={})",
        percentile(&times, 0.5),
        percentile(&times, 0.95),
        times[times.len() - 1],
        times.len()
    );
}

#[test]
fn rfc2136_3_2_prerequisites_fail_with_their_rcodes() {
    let c = cluster();
    let f = c.follower();
    let cases = [
        // name in use: www is a service
        ("prereq nxdomain www.example.com.", "YXDOMAIN"),
        ("prereq yxdomain nothere.example.com.", "NXDOMAIN"),
        ("prereq yxrrset static.example.com. TXT", "NXRRSET"),
        ("prereq nxrrset static.example.com. A", "YXRRSET"),
        ("prereq yxrrset static.example.com. A 192.0.2.99", "NXRRSET"),
    ];
    for (i, (prereq, rcode)) in cases.iter().enumerate() {
        let name = format!("pre{i}.dyn.example.com.");
        let (ok, out) = nsupdate(
            f,
            Some(&acme()),
            i % 2 == 1,
            &format!("zone example.com\n{prereq}\nupdate add {name} 60 TXT \"no\""),
        );
        assert!(!ok && out.contains(rcode), "{prereq}: want {rcode}: {out}");
        assert!(
            txt(f, &name).is_empty(),
            "{prereq}: the update applied anyway"
        );
    }
    // Prerequisites that hold: the update applies.
    let (ok, out) = nsupdate(
        f,
        Some(&acme()),
        false,
        "zone example.com\nprereq yxrrset static.example.com. A 192.0.2.10\nprereq nxdomain pre-ok.dyn.example.com.\nupdate add pre-ok.dyn.example.com. 60 TXT \"yes\"",
    );
    assert!(ok, "{out}");
    assert_eq!(
        txt(f, "pre-ok.dyn.example.com."),
        vec!["\"yes\"".to_string()]
    );
}

#[test]
fn rfc2136_3_3_not_granted_or_unsigned_is_refused() {
    let c = cluster();
    let f = c.follower();
    let other = format!("hmac-sha256:other:{SECRET}");
    let (ok, out) = nsupdate(
        f,
        Some(&other),
        false,
        "zone example.com\nupdate add _acme-challenge.example.com. 60 TXT \"x\"",
    );
    assert!(!ok && out.contains("REFUSED"), "key without grant: {out}");
    let (ok, out) = nsupdate(
        f,
        Some(&acme()),
        false,
        "zone example.com\nupdate add nope.example.com. 60 TXT \"x\"",
    );
    assert!(!ok && out.contains("REFUSED"), "type not granted: {out}");
    let (ok, out) = nsupdate(
        f,
        None,
        true,
        "zone example.com\nupdate add _acme-challenge.example.com. 60 TXT \"unsigned\"",
    );
    assert!(!ok && out.contains("REFUSED"), "unsigned: {out}");
    assert!(!txt(f, "_acme-challenge.example.com.").contains(&"\"unsigned\"".to_string()));
}

#[test]
fn rfc8945_5_2_bad_secret_is_notauth_badsig() {
    let c = cluster();
    let (ok, out) = nsupdate(
        c.follower(),
        Some(&format!("hmac-sha256:acme:{WRONG}")),
        false,
        "zone example.com\nupdate add _acme-challenge.example.com. 60 TXT \"bad\"",
    );
    assert!(!ok, "{out}");
    assert!(out.contains("NOTAUTH") && out.contains("BADSIG"), "{out}");
    assert!(!txt(c.follower(), "_acme-challenge.example.com.").contains(&"\"bad\"".to_string()));
}

#[test]
fn update_of_a_service_or_the_apex_soa_is_refused() {
    let c = cluster();
    let f = c.follower();
    let (ok, out) = nsupdate(
        f,
        Some(&acme()),
        false,
        "zone example.com\nupdate add www.example.com. 60 A 192.0.2.1",
    );
    assert!(!ok && out.contains("REFUSED"), "service A: {out}");
    let a = common::dig_at(f, &["www.example.com", "A"]).answer_data("A");
    assert_eq!(a, vec!["198.51.100.1".to_string()]);
    let (ok, out) = nsupdate(
        f,
        Some(&acme()),
        true,
        "zone example.com\nupdate delete www.example.com. A",
    );
    assert!(!ok && out.contains("REFUSED"), "service delete: {out}");
}

#[test]
fn rfc2136_3_4_1_3_outside_the_zone_is_notzone() {
    let c = cluster();
    let (ok, out) = nsupdate(
        c.follower(),
        Some(&acme()),
        false,
        "zone example.com\nupdate add x.example.org. 60 TXT \"out\"",
    );
    assert!(!ok && out.contains("NOTZONE"), "{out}");
}

#[test]
fn rfc2136_3_4_two_part_update_with_one_part_not_granted_leaves_nothing() {
    let c = cluster();
    let f = c.follower();
    let (ok, out) = nsupdate(
        f,
        Some(&acme()),
        false,
        "zone example.com\nupdate add part.dyn.example.com. 60 TXT \"granted\"\nupdate add nope2.example.com. 60 TXT \"not granted\"",
    );
    assert!(!ok && out.contains("REFUSED"), "{out}");
    for &n in &c.dns {
        assert!(txt(n, "part.dyn.example.com.").is_empty());
    }
}

#[test]
fn rfc2136_3_2_racing_updates_with_conflicting_prerequisites_one_wins() {
    let c = cluster();
    let rounds = 100;
    let (a, b) = (c.dns[0], c.dns[1]);
    for i in 0..rounds {
        let name = format!("race{i}.dyn.example.com.");
        let script = |who: &str| {
            format!("zone example.com\nprereq nxdomain {name}\nupdate add {name} 60 TXT \"{who}\"")
        };
        let (sa, sb) = (script("a"), script("b"));
        let (ra, rb) = std::thread::scope(|s| {
            let ta = s.spawn(|| nsupdate(a, Some(&acme()), i % 2 == 0, &sa));
            let tb = s.spawn(|| nsupdate(b, Some(&acme()), i % 2 == 1, &sb));
            (ta.join().expect("a"), tb.join().expect("b"))
        });
        assert!(ra.0 != rb.0, "round {i}: exactly one wins: {ra:?} {rb:?}");
        let loser = if ra.0 { &rb.1 } else { &ra.1 };
        assert!(loser.contains("YXDOMAIN"), "round {i}: {loser}");
        let winner = if ra.0 { "\"a\"" } else { "\"b\"" };
        wait_until(Duration::from_secs(2), || {
            c.dns
                .iter()
                .all(|&n| txt(n, &name) == vec![winner.to_string()])
        })
        .unwrap_or_else(|| panic!("round {i}: every node shows the winner {winner}"));
    }
    // Every node has the same zone.
    let texts: Vec<String> = c
        .admin
        .iter()
        .map(|&n| {
            http_get(n, "/api/v1/zones/example.com")
                .map(|r| r.1)
                .unwrap_or_default()
        })
        .collect();
    assert!(texts.iter().all(|t| *t == texts[0]));
}
