//! The dnstap query log (DESIGN.md "Query log (dnstap)") through the real binary: queries
//! asked with `dig` over UDP and TCP are read back with BIND's `dnstap-read`, from a file
//! and from a socket whose reader is `fstrm_capture` (Frame Streams' own tool), which also
//! goes away and comes back.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::two_sites::{DCS, SERVICES, ZONE};
use common::{http_get, spawn_owned, Node, Setup};

const CONTENT_TYPE: &str = "protobuf:dnstap.Dnstap";

fn start(dnstap: &str) -> Node {
    Node::start(&Setup {
        files: &[
            ("example.com.zone", ZONE),
            ("datacenters.toml", DCS),
            ("services.toml", SERVICES),
        ],
        extra_config: &format!("\n[dnstap]\n{dnstap}\n"),
    })
}

/// One message of `dnstap-read -y`: its scalars by dotted path (`identity`,
/// `message.socket_protocol`, `message.response_message_data.status`…) and its question.
#[derive(Debug, Default)]
struct Tap {
    fields: std::collections::BTreeMap<String, String>,
    question: String,
}

impl Tap {
    fn get(&self, key: &str) -> &str {
        self.fields.get(key).map(String::as_str).unwrap_or("")
    }
}

/// Run `dnstap-read -y FILE` and read its YAML documents (the subset it writes: nested
/// maps of scalars, lists of quoted strings, `|` text blocks).
fn read_back(file: &Path) -> Vec<Tap> {
    let out = Command::new("dnstap-read")
        .arg("-y")
        .arg(file)
        .output()
        .expect("run dnstap-read (install bind9-dnsutils)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "dnstap-read failed: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.split("\n---")
        .filter(|doc| doc.contains("type:"))
        .map(|doc| {
            let mut tap = Tap::default();
            // The keys enclosing the current line: (indent, key, is a text block).
            let mut path: Vec<(usize, String, bool)> = Vec::new();
            for line in doc.lines() {
                let trimmed = line.trim();
                if trimmed.is_empty() {
                    continue;
                }
                let indent = line.len() - line.trim_start().len();
                while path.last().is_some_and(|(i, _, _)| *i >= indent) {
                    path.pop();
                }
                if path.last().is_some_and(|(_, _, block)| *block) {
                    continue; // the dig-like text of a message
                }
                let key = |k: &str| {
                    path.iter()
                        .map(|(_, p, _)| p.as_str())
                        .chain([k])
                        .collect::<Vec<_>>()
                        .join(".")
                };
                if let Some(item) = trimmed.strip_prefix("- ") {
                    if path.last().is_some_and(|(_, k, _)| k == "QUESTION_SECTION") {
                        tap.question = item.trim_matches('\'').to_string();
                    }
                } else if let Some(k) = trimmed.strip_suffix(':') {
                    path.push((indent, k.to_string(), false));
                } else if let Some((k, v)) = trimmed.split_once(": ") {
                    let full = key(k);
                    tap.fields.insert(full, v.trim_matches('"').to_string());
                    if v == "|" {
                        path.push((indent, k.to_string(), true));
                    }
                }
            }
            tap
        })
        .collect()
}

/// The query and response messages for a question, e.g. `www.example.com. IN A`.
fn pair<'a>(taps: &'a [Tap], question: &str) -> (&'a Tap, &'a Tap) {
    let find = |kind: &str| {
        taps.iter()
            .find(|t| t.question == question && t.get("message.type") == kind)
            .unwrap_or_else(|| panic!("no {kind} for {question} in {taps:#?}"))
    };
    (find("AUTH_QUERY"), find("AUTH_RESPONSE"))
}

fn metric(admin: SocketAddr, name: &str) -> Option<f64> {
    let (_, text) = http_get(admin, "/metrics")?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn dnstap_file_holds_every_query_and_response_over_udp_and_tcp() {
    let mut node = start("file = \"queries.dnstap\"\nidentity = \"test-ns1\"");
    let path = node.dir.path().join("queries.dnstap");
    let udp = node.dig(&["www.example.com", "A"]);
    assert_eq!(udp.status, "NOERROR", "{}", udp.raw);
    let tcp = node.dig(&["+tcp", "example.com", "SOA"]);
    assert_eq!(tcp.status, "NOERROR", "{}", tcp.raw);
    let nx = node.dig(&["nope.example.com", "AAAA"]);
    assert_eq!(nx.status, "NXDOMAIN", "{}", nx.raw);
    assert_eq!(
        metric(node.admin, "meridian_dnstap_dropped_total"),
        Some(0.0)
    );
    // SIGTERM flushes the log and ends the stream.
    let status = node.terminate(Duration::from_secs(10)).expect("node exits");
    assert!(status.success(), "{status}");

    let taps = read_back(&path);
    assert_eq!(taps.len(), 6, "three queries, three responses: {taps:#?}");
    let version = format!("meridian {}", env!("CARGO_PKG_VERSION"));
    let dns_port = node.dns.port().to_string();
    for (question, protocol, rcode) in [
        ("www.example.com. IN A", "UDP", "NOERROR"),
        ("example.com. IN SOA", "TCP", "NOERROR"),
        ("nope.example.com. IN AAAA", "UDP", "NXDOMAIN"),
    ] {
        let (q, r) = pair(&taps, question);
        for t in [q, r] {
            assert_eq!(t.get("type"), "MESSAGE");
            assert_eq!(t.get("identity"), "test-ns1");
            assert_eq!(t.get("version"), version);
            assert_eq!(t.get("message.socket_family"), "INET");
            assert_eq!(t.get("message.socket_protocol"), protocol, "{t:#?}");
            assert_eq!(t.get("message.query_address"), "127.0.0.1");
            assert_eq!(t.get("message.response_address"), "127.0.0.1");
            assert_eq!(t.get("message.response_port"), dns_port);
        }
        let port: u16 = q.get("message.query_port").parse().expect("client port");
        assert_ne!(port, 0);
        assert_eq!(r.get("message.query_port"), q.get("message.query_port"));
        assert!(!q.get("message.query_time").is_empty(), "{q:#?}");
        assert!(!r.get("message.response_time").is_empty(), "{r:#?}");
        assert!(q.fields.contains_key("message.query_message"), "{q:#?}");
        assert!(r.fields.contains_key("message.response_message"), "{r:#?}");
        assert_eq!(
            r.get("message.response_message_data.status"),
            rcode,
            "{r:#?}"
        );
        assert_eq!(
            q.get("message.query_message_data.id"),
            r.get("message.response_message_data.id")
        );
    }
}

/// `fstrm_capture` on a unix socket, writing what it reads to `out`.
fn capture(sock: &Path, out: &Path) -> Child {
    let _ = std::fs::remove_file(sock);
    let child = spawn_owned(
        Command::new("fstrm_capture")
            .args(["-t", CONTENT_TYPE, "-u"])
            .arg(sock)
            .arg("-w")
            .arg(out)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sock.exists() {
        assert!(Instant::now() < deadline, "fstrm_capture did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// SIGTERM to a reader we started, and wait (bounded) for it to write its file and exit.
fn stop(child: &mut Child) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("fstrm_capture did not stop on SIGTERM");
}

#[test]
fn dnstap_socket_handshakes_with_fstrm_capture_and_reconnects() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sock = dir.path().join("dnstap.sock");
    let (first, second) = (dir.path().join("1.fstrm"), dir.path().join("2.fstrm"));
    let mut reader = capture(&sock, &first);
    let mut node = start(&format!("socket = \"{}\"", sock.display()));
    assert_eq!(
        metric(node.admin, "meridian_dnstap_connected"),
        Some(1.0),
        "connected at start"
    );
    let a = node.dig(&["www.example.com", "A"]);
    assert_eq!(a.status, "NOERROR", "{}", a.raw);
    let t = node.dig(&["+tcp", "www.example.com", "A"]);
    assert_eq!(t.status, "NOERROR", "{}", t.raw);

    // Both reached the reader (the log is flushed every 100 ms).
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(node.admin, "meridian_dnstap_written_total") < Some(2.0) {
        assert!(Instant::now() < deadline, "not written:\n{}", node.log());
        std::thread::sleep(Duration::from_millis(20));
    }

    // The reader goes away and another takes its place: the node connects to it.
    stop(&mut reader);
    let mut reader = capture(&sock, &second);
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut n = 0;
    while metric(node.admin, "meridian_dnstap_connections_total") != Some(2.0) {
        assert!(
            Instant::now() < deadline,
            "no reconnection:\n{}",
            node.log()
        );
        // A write is what shows the old reader gone.
        n += 1;
        node.dig(&[&format!("probe{n}.example.com"), "A"]);
        std::thread::sleep(Duration::from_millis(50));
    }
    let after = node.dig(&["+tcp", "after.example.com", "A"]);
    assert_eq!(after.status, "NXDOMAIN", "{}", after.raw);
    // SIGTERM: STOP, the reader's FINISH, then exit.
    let status = node.terminate(Duration::from_secs(10)).expect("node exits");
    assert!(status.success(), "{status}");
    stop(&mut reader);
    assert!(
        node.log().contains("dnstap stream finished"),
        "{}",
        node.log()
    );

    let taps = read_back(&first);
    let (q, r) = pair(&taps, "www.example.com. IN A");
    assert_eq!(q.get("message.socket_protocol"), "UDP");
    assert_eq!(r.get("message.response_port"), node.dns.port().to_string());
    let tcp = taps
        .iter()
        .filter(|t| t.get("message.socket_protocol") == "TCP")
        .count();
    assert_eq!(tcp, 2, "the TCP query and its response: {taps:#?}");
    let taps = read_back(&second);
    let (q, r) = pair(&taps, "after.example.com. IN A");
    assert_eq!(q.get("message.socket_protocol"), "TCP");
    assert_eq!(r.get("message.socket_protocol"), "TCP");
}
