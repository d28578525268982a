//! Knot DNS as the judge: Knot and Meridian serve the same zone, and `dig` must see the same
//! reply from both (flags, RCODE, every section, TTLs, EDNS) for every query below.
//! Two known, intended differences are left out of the list: Meridian echoes EDNS Client
//! Subnet (RFC 7871; Knot without its geoip module ignores it), and it copies the CD bit
//! (RFC 4035 §3.1.6; Knot clears it on unsigned zones).

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Node, Setup};

const ZONE: &str = r#"$ORIGIN example.net.
$TTL 3600
@       3600 IN SOA ns1.example.net. hostmaster.example.net. ( 2026112501 7200 3600
                1209600 300 )
@       IN NS    ns1
@       IN NS    ns2
ns1     IN A     127.0.0.1
ns2     IN A     127.0.0.2
ns2     IN AAAA  ::2
@       IN A     192.0.2.1
@       IN MX    10 mail
mail    IN A     192.0.2.25
www     IN A     192.0.2.80
www     IN AAAA  2001:db8::80
www     IN TXT   "web"
alias   IN CNAME www
chain1  IN CNAME chain2
chain2  IN CNAME www
dangling IN CNAME nothere
outside IN CNAME www.example.org.
*.wild  IN A     192.0.2.99
*.wild  IN TXT   "wild"
host.wild IN A   192.0.2.98
a.b.c   IN A     192.0.2.3
sub     IN NS    ns.sub
sub     IN NS    ns.elsewhere.org.
ns.sub  IN A     192.0.2.53
_sip._udp IN SRV 10 60 5060 sip
sip     IN A     192.0.2.30
caa     IN CAA   0 issue "letsencrypt.org"
big     IN TXT   "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789-01"
big     IN TXT   "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789-02"
big     IN TXT   "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789-03"
big     IN TXT   "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789-04"
big     IN TXT   "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789-05"
big     IN TXT   "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789-06"
big     IN TXT   "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789-07"
big     IN TXT   "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789-08"
"#;

const QUERIES: &[(&str, &str, &[&str])] = &[
    ("www.example.net", "A", &[]),
    ("www.example.net", "AAAA", &[]),
    ("example.net", "SOA", &[]),
    ("example.net", "NS", &[]),
    ("example.net", "MX", &[]),
    ("example.net", "AAAA", &[]),
    ("example.net", "DS", &[]),
    ("example.net", "CNAME", &[]),
    ("nothere.example.net", "A", &[]),
    ("www.example.net", "MX", &[]),
    ("b.c.example.net", "A", &[]),
    ("c.example.net", "TXT", &[]),
    ("alias.example.net", "A", &[]),
    ("alias.example.net", "CNAME", &[]),
    ("alias.example.net", "ANY", &[]),
    ("chain1.example.net", "AAAA", &[]),
    ("dangling.example.net", "A", &[]),
    ("outside.example.net", "A", &[]),
    ("anything.wild.example.net", "A", &[]),
    ("x.y.wild.example.net", "TXT", &[]),
    ("anything.wild.example.net", "MX", &[]),
    ("host.wild.example.net", "TXT", &[]),
    ("*.wild.example.net", "A", &[]),
    ("wild.example.net", "A", &[]),
    ("deep.sub.example.net", "A", &[]),
    ("sub.example.net", "A", &[]),
    ("sub.example.net", "NS", &[]),
    ("sub.example.net", "DS", &[]),
    ("ns.sub.example.net", "A", &[]),
    ("www.example.org", "A", &[]),
    ("_sip._udp.example.net", "SRV", &[]),
    ("caa.example.net", "CAA", &[]),
    ("example.net", "TYPE65000", &[]),
    ("big.example.net", "TXT", &["+ignore", "+bufsize=1232"]),
    ("big.example.net", "TXT", &["+ignore", "+noedns"]),
    ("big.example.net", "TXT", &["+tcp"]),
    ("www.example.net", "ANY", &[]),
    ("WwW.ExAmPlE.NeT", "A", &[]),
    ("www.example.net", "A", &["+dnssec"]),
    ("www.example.net", "A", &["+edns=1", "+noednsnegotiation"]),
    ("www.example.net", "A", &["+rec"]),
    ("www.example.net", "A", &["+opcode=2"]),
    ("www.example.net", "A", &["+noedns"]),
];

/// knotd on a free loopback port, killed with the test.
struct Knot(Child);

impl Drop for Knot {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_knot(dir: &std::path::Path) -> (Knot, SocketAddr) {
    let knotd = ["/usr/sbin/knotd", "/usr/bin/knotd"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("knotd is missing: run scripts/test.sh, which installs knot");
    let port = common::free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    std::fs::write(dir.join("example.net.zone"), ZONE).expect("zone");
    let conf = format!(
        "server:\n    listen: 127.0.0.1@{port}\n    rundir: {d}\nlog:\n  - target: stderr\n    any: warning\ndatabase:\n    storage: {d}\nzone:\n  - domain: example.net\n    file: {d}/example.net.zone\n    storage: {d}\n",
        d = dir.display()
    );
    let conf_path = dir.join("knot.conf");
    std::fs::write(&conf_path, conf).expect("knot.conf");
    let knot = Knot(common::spawn_owned(
        Command::new(knotd)
            .arg("-c")
            .arg(&conf_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    ));
    let deadline = Instant::now() + Duration::from_secs(15);
    while common::dig_at(addr, &["www.example.net"]).status != "NOERROR" {
        assert!(Instant::now() < deadline, "knotd did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (knot, addr)
}

/// What must agree: header (less the ID), flags, EDNS, every record; sorted per section.
fn normalized(server: SocketAddr, name: &str, qtype: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<&str> = extra.to_vec();
    args.extend([name, qtype]);
    let d = common::dig_at(server, &args);
    let mut out = vec![
        format!("status {}", d.status),
        format!("flags {}", d.flags.join(" ")),
    ];
    out.extend(d.opt.iter().filter(|l| l.contains("EDNS:")).cloned());
    for (sec, rrs) in [
        ("an", &d.answer),
        ("au", &d.authority),
        ("ad", &d.additional),
    ] {
        let mut v: Vec<String> = rrs
            .iter()
            .map(|r| format!("{sec} {} {} {} {}", r.name, r.ttl, r.rtype, r.data))
            .collect();
        v.sort();
        out.extend(v);
    }
    out.extend(
        d.question
            .iter()
            .map(|q| format!("q {}", q.split_whitespace().collect::<Vec<_>>().join(" "))),
    );
    out
}

#[test]
fn same_replies_as_knot_for_the_same_zone() {
    let dir = tempfile::tempdir().expect("tmp");
    let (_knot, knot) = start_knot(dir.path());
    let node = Node::start(&Setup {
        files: &[("example.net.zone", ZONE)],
        extra_config: "",
    });
    let mut differences = Vec::new();
    for (name, qtype, extra) in QUERIES {
        let k = normalized(knot, name, qtype, extra);
        let m = normalized(node.dns, name, qtype, extra);
        if k != m {
            differences.push(format!(
                "{name} {qtype} {}\n  knot:     {k:?}\n  meridian: {m:?}",
                extra.join(" ")
            ));
        }
    }
    assert!(differences.is_empty(), "{}", differences.join("\n"));
}
