//! DNS over TCP (RFC 7766) against clients that never read their replies: the server's
//! writes have a timeout and an eviction stops them, so 1,100 such clients (more than the
//! 1,024 places) lose their connections within the idle timeout (10 s) and a new client is
//! answered meanwhile.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{Node, NodeRef, Setup};

/// The server's idle timeout (`TcpLimits::default`).
const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// A zone whose `big` TXT RRset makes a 16 KB reply: a few fill any socket buffer.
fn zone() -> &'static str {
    static ZONE: OnceLock<String> = OnceLock::new();
    ZONE.get_or_init(|| {
        let mut z = String::from(
            "$ORIGIN example.net.\n$TTL 3600\n@ IN SOA ns1 hostmaster 1 7200 3600 1209600 300\n@ IN NS ns1\nns1 IN A 127.0.0.1\nwww IN A 192.0.2.80\n",
        );
        for i in 0..80 {
            z.push_str(&format!("big IN TXT \"{}{i:02}\"\n", "x".repeat(198)));
        }
        z
    })
}

fn node() -> &'static NodeRef {
    static NODE: OnceLock<NodeRef> = OnceLock::new();
    common::shared(&NODE, || {
        Node::start(&Setup {
            files: &[("example.net.zone", zone())],
            extra_config: "",
        })
    })
}

/// 16 length-prefixed queries for `big.example.net TXT`.
fn queries() -> Vec<u8> {
    let mut out = Vec::new();
    for id in 0..16u16 {
        let mut q = id.to_be_bytes().to_vec();
        q.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
        q.extend_from_slice(b"\x03big\x07example\x03net\x00\x00\x10\x00\x01");
        out.extend_from_slice(&(q.len() as u16).to_be_bytes());
        out.extend_from_slice(&q);
    }
    out
}

/// A client that will not read: a small receive buffer and a small MSS, so that the
/// server's send buffer (sized from the MSS) fills after a few replies.
fn non_reader(server: SocketAddr) -> Option<TcpStream> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).ok()?;
    s.set_recv_buffer_size(4096).ok()?;
    s.set_mss(536).ok()?;
    s.connect_timeout(&server.into(), Duration::from_secs(3))
        .ok()?;
    let mut s: TcpStream = s.into();
    s.write_all(&queries()).ok()?;
    Some(s)
}

/// Server-side TCP connections of `port` in ESTABLISHED state, from /proc/net/tcp{,6}.
fn established(port: u16) -> usize {
    let want = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|t| {
            t.lines()
                .skip(1)
                .filter(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    f.len() > 3 && f[1].ends_with(&want) && f[3] == "01"
                })
                .count()
        })
        .sum()
}

#[test]
fn rfc7766_clients_that_never_read_are_evicted_within_the_idle_timeout() {
    let node = node();
    let limit = meridian::dns::tcp::raise_fd_limit().expect("open-file limit");
    let target = 1100.min(limit.saturating_sub(64) as usize);
    let started = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..target {
        match non_reader(node.dns) {
            Some(s) => clients.push(s),
            None => break,
        }
    }
    let opened = started.elapsed();
    assert!(
        clients.len() > 900 && clients.len() == target,
        "only {} of {target} clients connected (open-file limit {limit})",
        clients.len()
    );
    // The server is stuck writing to them (or has evicted the oldest to make room)…
    std::thread::sleep(Duration::from_millis(500));
    let stuck = established(node.dns.port());
    // …and still answers a new client.
    let d = node.dig(&["+tcp", "www.example.net", "A"]);
    assert_eq!(d.answer_data("A"), vec!["192.0.2.80"], "{}", d.raw);
    // Within the idle timeout of the last client's queries, every one of them has lost its
    // connection (with 5 s of slack for a busy machine: the server reaches the last of the
    // 1,100 a little after it connected, and its write times out 10 s after that).
    let deadline = started + opened + IDLE_TIMEOUT + Duration::from_secs(5);
    let mut left = established(node.dns.port());
    while left > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        left = established(node.dns.port());
    }
    let took = started.elapsed();
    eprintln!(
        "{} non-reading clients opened in {opened:.1?}; {stuck} server-side connections \
         after 0.5 s; {left} left after {took:.1?} from the first",
        clients.len()
    );
    assert_eq!(
        left, 0,
        "connections still open {took:?} after the first client"
    );
    drop(clients);
    let d = node.dig(&["+tcp", "www.example.net", "A"]);
    assert_eq!(d.answer_data("A"), vec!["192.0.2.80"], "{}", d.raw);
}
