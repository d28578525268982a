//! Meridian as users meet it: behind a real recursive resolver. Unbound, with its ECS module
//! (`subnetcache`), forwards each client's /24 to Meridian, which picks the nearest datacenter
//! and scopes its answer; Unbound must then keep one cached answer per subnet.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{dig_at, free_port, Dig, Node};

const UNBOUND: &str = "/usr/sbin/unbound";

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

/// A foreground Unbound of the test's own, killed when dropped and when the test process dies.
struct Unbound {
    dir: tempfile::TempDir,
    addr: SocketAddr,
    child: Option<Child>,
}

impl Unbound {
    /// Start Unbound with a stub zone for `example.com` at `meridian`, and wait (bounded) until
    /// it answers. Retries on a fresh port if it exits early (a port taken since it was picked).
    fn start(meridian: SocketAddr) -> Unbound {
        let mut last = String::new();
        for _ in 0..3 {
            match Unbound::try_start(meridian) {
                Ok(u) => return u,
                Err(log) => last = log,
            }
        }
        panic!("unbound did not start:\n{last}");
    }

    fn try_start(meridian: SocketAddr) -> Result<Unbound, String> {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let d = dir.path().display();
        let config = format!(
            r#"server:
    interface: 127.0.0.1@{port}
    port: {port}
    do-ip6: no
    so-reuseport: no
    num-threads: 1
    outgoing-range: 64
    access-control: 127.0.0.0/8 allow
    do-not-query-localhost: no
    username: ""
    chroot: ""
    directory: "{d}"
    pidfile: "{d}/unbound.pid"
    use-syslog: no
    logfile: ""
    verbosity: 1
    harden-referral-path: no
    qname-minimisation: no
    target-fetch-policy: "0 0 0 0 0"
    module-config: "subnetcache iterator"
    send-client-subnet: {ip}
    max-client-subnet-ipv4: 24

remote-control:
    control-enable: no

stub-zone:
    name: "example.com"
    stub-addr: {ip}@{mport}
    stub-first: no
"#,
            ip = meridian.ip(),
            mport = meridian.port(),
        );
        let conf = dir.path().join("unbound.conf");
        std::fs::write(&conf, config).expect("write unbound.conf");
        let log_path = dir.path().join("unbound.log");
        let log = std::fs::File::create(&log_path).expect("unbound log");
        let child = common::spawn_owned(
            Command::new(UNBOUND)
                .arg("-d")
                .arg("-c")
                .arg(&conf)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log),
        );
        let mut u = Unbound {
            dir,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child: Some(child),
        };
        // Ready when it answers from its own built-in `localhost` zone (no upstream needed).
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Some(Ok(Some(status))) = u.child.as_mut().map(|c| c.try_wait()) {
                u.child = None;
                return Err(format!("exited early ({status}):\n{}", u.log()));
            }
            let d = dig_at(u.addr, &["+rec", "localhost", "A"]);
            if d.status == "NOERROR" && d.answer_data("A") == ["127.0.0.1"] {
                return Ok(u);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!("no answer within 15s:\n{}", u.log()))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("unbound.log")).unwrap_or_default()
    }

    /// `dig @unbound +rec +subnet=SUBNET www.example.com A`
    fn ask(&self, subnet: &str) -> Dig {
        dig_at(
            self.addr,
            &["+rec", &format!("+subnet={subnet}"), "www.example.com", "A"],
        )
    }
}

impl Drop for Unbound {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn geo_nearest_through_unbound_with_ecs_and_a_per_subnet_cache() {
    assert!(
        Path::new(UNBOUND).exists(),
        "{UNBOUND} is missing: run scripts/test.sh, which installs unbound"
    );
    let mut node = Node::start_example(ZONE, DATACENTERS, SERVICES);
    let unbound = Unbound::start(node.dns);
    let at = node.at.clone();

    let check = |(subnet, want): (&str, &str), when: &str| -> Dig {
        let d = unbound.ask(subnet);
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
