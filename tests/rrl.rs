//! Response rate limiting (DESIGN.md "Abuse resistance"), against the real binary: a burst
//! of UDP queries from one address is cut to the burst allowance with every second limited
//! reply slipped (truncated), TCP is never limited, and the amplification a reflector offers
//! drops below one. Each test sends from its own loopback /24 (127.N.0.1), so their budgets
//! never mix.

mod common;

use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{Node, NodeRef, Setup};

/// A zone with a TXT RRset that nearly fills a 1232-byte reply: the worst amplifier.
fn zone() -> String {
    let mut z = String::from(
        "$ORIGIN example.net.\n$TTL 3600\n@ IN SOA ns1 hostmaster 1 7200 3600 1209600 300\n@ IN NS ns1\nns1 IN A 127.0.0.1\nwww IN A 192.0.2.80\n",
    );
    for i in 0..5 {
        z.push_str(&format!("big IN TXT \"{}{i:02}\"\n", "x".repeat(198)));
    }
    z
}

fn start(extra: &'static str) -> Node {
    let zone: &'static str = Box::leak(zone().into_boxed_str());
    Node::start(&Setup {
        files: &[("example.net.zone", zone)],
        extra_config: extra,
    })
}

/// The node with RRL on, at the defaults (20/s, slip 2, /24, /56).
fn limited() -> &'static NodeRef {
    static NODE: OnceLock<NodeRef> = OnceLock::new();
    common::shared(&NODE, || start("[dns]\nrate_limit = {}\n"))
}

/// The same node without RRL (the default), for the "before" figure.
fn unlimited() -> &'static NodeRef {
    static NODE: OnceLock<NodeRef> = OnceLock::new();
    common::shared(&NODE, || start(""))
}

/// A query with EDNS (UDP size 4096) and, optionally, a COOKIE option.
pub fn query(id: u16, name: &str, qtype: u16, cookie: Option<&[u8]>) -> Vec<u8> {
    let mut p = id.to_be_bytes().to_vec();
    p.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 1]);
    for label in name.split('.').filter(|l| !l.is_empty()) {
        p.push(label.len() as u8);
        p.extend_from_slice(label.as_bytes());
    }
    p.push(0);
    p.extend_from_slice(&qtype.to_be_bytes());
    p.extend_from_slice(&[0, 1]);
    p.extend_from_slice(&[0, 0, 41, 0x10, 0x00, 0, 0, 0, 0]);
    let opts = cookie.map_or(Vec::new(), |c| {
        let mut o = vec![0, 10];
        o.extend_from_slice(&(c.len() as u16).to_be_bytes());
        o.extend_from_slice(c);
        o
    });
    p.extend_from_slice(&(opts.len() as u16).to_be_bytes());
    p.extend_from_slice(&opts);
    p
}

/// The question section of a message (its name must be uncompressed).
fn question_of(p: &[u8]) -> &[u8] {
    let mut i = 12;
    while i < p.len() && p[i] != 0 {
        i += 1 + p[i] as usize;
    }
    &p[12..(i + 5).min(p.len())]
}

fn u16_at(p: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([p[i], p[i + 1]])
}

/// What came back for a burst.
#[derive(Debug, Default)]
struct Tally {
    sent: usize,
    query_bytes: usize,
    full: usize,
    truncated: usize,
    reply_bytes: usize,
    /// Truncated replies that carried a record or lost the question.
    bad_slips: usize,
    /// Replies with a COOKIE option.
    cookies: usize,
}

/// Send `n` copies of `packet` (each with its own ID) from `from`, as fast as the loopback
/// takes them, and collect the replies until none has come for 500 ms.
fn burst(server: SocketAddr, from: Ipv4Addr, n: u16, packet: &[u8]) -> Tally {
    let sock = UdpSocket::bind((from, 0)).expect("bind the sender");
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let rx = sock.try_clone().expect("clone");
    let question = question_of(packet).to_vec();
    let reader = std::thread::spawn(move || {
        let mut t = Tally::default();
        let mut buf = [0u8; 65535];
        let mut last = Instant::now();
        let deadline = Instant::now() + Duration::from_secs(30);
        while last.elapsed() < Duration::from_millis(500) && Instant::now() < deadline {
            let Ok(len) = rx.recv(&mut buf) else {
                continue;
            };
            last = Instant::now();
            let r = &buf[..len];
            t.reply_bytes += len;
            if reply_cookie(r).is_some() {
                t.cookies += 1;
            }
            if r[2] & 0x02 != 0 {
                t.truncated += 1;
                let clean = u16_at(r, 6) == 0
                    && u16_at(r, 8) == 0
                    && u16_at(r, 4) == 1
                    && r.get(12..12 + question.len()) == Some(&question[..]);
                if !clean {
                    t.bad_slips += 1;
                }
            } else {
                t.full += 1;
            }
        }
        t
    });
    let mut p = packet.to_vec();
    for i in 0..n {
        p[..2].copy_from_slice(&i.to_be_bytes());
        sock.send_to(&p, server).expect("send");
        // A breath every 20 so that neither socket's buffer overflows.
        if i % 20 == 19 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let mut t = reader.join().expect("reader");
    t.sent = n as usize;
    t.query_bytes = packet.len() * n as usize;
    t
}

/// One test at a time (they run in parallel): the counters in `/metrics` are the node's,
/// and one burst must not make another's socket buffers overflow. (A test's lock, far from
/// the query path.)
#[allow(clippy::disallowed_types)]
fn turn() -> std::sync::MutexGuard<'static, ()> {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// A counter from `/metrics` (0 when absent).
fn metric(node: &NodeRef, name: &str) -> u64 {
    let (_, body) = common::http_get(node.admin, "/metrics").expect("metrics");
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn rrl_burst_from_one_address_is_cut_to_its_allowance_and_every_second_reply_slips() {
    let _turn = turn();
    let node = limited();
    let dropped = metric(node, "meridian_rrl_dropped_total");
    let slipped = metric(node, "meridian_rrl_slipped_total");
    let started = Instant::now();
    let t = burst(
        node.dns,
        Ipv4Addr::new(127, 1, 0, 1),
        2000,
        &query(0, "www.example.net", 1, None),
    );
    let secs = started.elapsed().as_secs_f64();
    eprintln!("burst of 2000 in {secs:.2} s: {t:?}");
    // The allowance: one second's worth (20) plus 20/s while the burst lasted.
    let allowed = 20 + (20.0 * secs).ceil() as usize;
    assert!(t.full <= allowed, "{} answered, at most {allowed}", t.full);
    assert!(t.full <= 2000 / 4, "{t:?}");
    assert!(t.full >= 20, "the burst allowance is answered: {t:?}");
    let limited = t.sent - t.full;
    // slip = 2: every second limited reply goes out truncated.
    assert!(
        t.truncated.abs_diff(limited / 2) <= limited / 20,
        "{} truncated of {limited} limited",
        t.truncated
    );
    assert_eq!(
        t.bad_slips, 0,
        "a slip is TC with the question and no records"
    );
    let dropped = metric(node, "meridian_rrl_dropped_total") - dropped;
    let slipped = metric(node, "meridian_rrl_slipped_total") - slipped;
    eprintln!("metrics: dropped {dropped}, slipped {slipped}");
    assert_eq!(slipped as usize, t.truncated, "every slip counted");
    assert!(dropped as usize + t.truncated + t.full <= 2000);
    assert!(dropped as usize >= limited - t.truncated - limited / 50);
}

#[test]
fn rfc7766_tcp_is_never_limited() {
    let _turn = turn();
    let node = limited();
    let from = Ipv4Addr::new(127, 2, 0, 1);
    // Use up the UDP budget of this network first.
    let t = burst(node.dns, from, 200, &query(0, "www.example.net", 1, None));
    assert!(t.full < 100, "{t:?}");
    // Then 300 queries over one TCP connection from the same address: all answered.
    let sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    sock.bind(&SocketAddr::from((from, 0)).into())
        .expect("bind");
    sock.connect_timeout(&node.dns.into(), Duration::from_secs(2))
        .expect("connect");
    let mut s: TcpStream = sock.into();
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    use std::io::{Read, Write};
    let mut out = Vec::new();
    for id in 0..300u16 {
        let q = query(id, "www.example.net", 1, None);
        out.extend_from_slice(&(q.len() as u16).to_be_bytes());
        out.extend_from_slice(&q);
    }
    s.write_all(&out).expect("write");
    let mut answered = 0;
    for _ in 0..300 {
        let mut len = [0u8; 2];
        s.read_exact(&mut len).expect("reply length");
        let mut r = vec![0u8; u16::from_be_bytes(len) as usize];
        s.read_exact(&mut r).expect("reply");
        if r[2] & 0x02 == 0 && u16_at(&r, 6) == 1 {
            answered += 1;
        }
    }
    assert_eq!(answered, 300);
    // And dig over TCP from that address too.
    let d = common::dig_at(
        node.dns,
        &["-b", "127.2.0.1", "+tcp", "www.example.net", "A"],
    );
    assert_eq!(d.answer_data("A"), vec!["192.0.2.80"], "{}", d.raw);
}

#[test]
fn rrl_error_replies_are_limited_too() {
    let _turn = turn();
    let node = limited();
    // REFUSED: a name in none of our zones.
    let t = burst(
        node.dns,
        Ipv4Addr::new(127, 3, 0, 1),
        300,
        &query(0, "www.example.org", 1, None),
    );
    assert!(t.full <= 40, "{t:?}");
    assert!(t.truncated > 100, "{t:?}");
}

#[test]
fn rrl_amplification_of_the_worst_query_before_and_with_rrl() {
    let _turn = turn();
    let q = query(0, "big.example.net", 16, None);
    let before = burst(unlimited().dns, Ipv4Addr::new(127, 4, 0, 1), 2000, &q);
    let with = burst(limited().dns, Ipv4Addr::new(127, 5, 0, 1), 2000, &q);
    let factor = |t: &Tally| t.reply_bytes as f64 / t.query_bytes as f64;
    eprintln!(
        "amplification (reply bytes / query bytes, {}-byte TXT query with EDNS, 2000-query burst): \
         before RRL {:.1}x ({} replies, {} bytes), with RRL {:.2}x ({} full, {} truncated, {} bytes)",
        q.len(),
        factor(&before),
        before.full,
        before.reply_bytes,
        factor(&with),
        with.full,
        with.truncated,
        with.reply_bytes
    );
    assert!(before.full > 1900, "{before:?}");
    assert!(factor(&before) > 20.0, "{before:?}");
    assert!(factor(&with) < 1.5, "{with:?}");
}

#[test]
fn rrl_is_off_by_default() {
    let _turn = turn();
    let t = burst(
        unlimited().dns,
        Ipv4Addr::new(127, 6, 0, 1),
        500,
        &query(0, "www.example.net", 1, None),
    );
    assert_eq!((t.full, t.truncated), (500, 0), "{t:?}");
}

/// The COOKIE option's data at the end of a reply (it is the OPT's last option).
fn reply_cookie(reply: &[u8]) -> Option<[u8; 24]> {
    let n = reply.len();
    let head = reply.get(n.checked_sub(28)?..n - 24)?;
    (head == [0, 10, 0, 24]).then(|| reply[n - 24..].try_into().ok())?
}

#[test]
fn rrl_a_client_with_a_valid_server_cookie_is_answered_throughout() {
    let _turn = turn();
    let node = limited();
    let from = Ipv4Addr::new(127, 7, 0, 1);
    let client = [0x5a; 8];
    // Learn a server cookie.
    let sock = UdpSocket::bind((from, 0)).expect("bind");
    sock.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    sock.send_to(&query(1, "www.example.net", 1, Some(&client)), node.dns)
        .expect("send");
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).expect("a reply with a cookie");
    let cookie = reply_cookie(&buf[..n]).expect("a COOKIE option in the reply");
    assert_eq!(cookie[..8], client);
    // A burst with it: never limited.
    let t = burst(
        node.dns,
        from,
        2000,
        &query(0, "www.example.net", 1, Some(&cookie)),
    );
    eprintln!("with a valid cookie: {t:?}");
    assert_eq!((t.full, t.truncated), (2000, 0), "{t:?}");
    // The same burst from another network with a forged server cookie: limited as if it
    // had none.
    let mut forged = cookie;
    forged[23] ^= 0xff;
    let t = burst(
        node.dns,
        Ipv4Addr::new(127, 8, 0, 1),
        2000,
        &query(0, "www.example.net", 1, Some(&forged)),
    );
    eprintln!("with a forged cookie: {t:?}");
    assert!(t.full < 100, "{t:?}");
    assert!(t.truncated > 800, "{t:?}");
    // A slipped reply still carries a fresh cookie, so the client can come back with it.
    assert_eq!(t.cookies, t.full + t.truncated, "{t:?}");
}

/// One query from `from` to `server` carrying `cookie`; the reply's COOKIE, if any.
fn cookie_reply(server: SocketAddr, from: Ipv4Addr, cookie: &[u8]) -> Option<[u8; 24]> {
    let sock = UdpSocket::bind((from, 0)).ok()?;
    sock.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    sock.send_to(&query(7, "www.example.net", 1, Some(cookie)), server)
        .ok()?;
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).ok()?;
    reply_cookie(&buf[..n])
}

/// DESIGN.md "Abuse resistance": the cookie secret is in the Raft state, so node 2 takes
/// node 1's cookies; after `POST /api/v1/cookie-secret/rotate` a cookie made before it is
/// still valid (never rate limited) while new ones are made with the new secret.
#[test]
fn rfc9018_cookie_secret_is_the_cluster_s_and_a_rotation_keeps_the_old_one_valid() {
    let _turn = turn();
    let zone: &'static str = Box::leak(zone().into_boxed_str());
    let cluster = common::TestCluster::start_with(
        2,
        &[("example.net.zone", zone)],
        "rate_limit = { responses_per_second = 5, slip = 0 }",
    );
    let (one, two) = (&cluster.nodes[0].at, &cluster.nodes[1].at);
    let from = Ipv4Addr::new(127, 9, 0, 1);
    let client = [0x42; 8];
    // Node 1's cookie is echoed by node 2 once the cluster's secret is applied on both.
    let deadline = Instant::now() + Duration::from_secs(20);
    let old = loop {
        assert!(
            Instant::now() < deadline,
            "node 2 never took node 1's cookie"
        );
        if let Some(c) = cookie_reply(one.dns, from, &client) {
            if cookie_reply(two.dns, from, &c) == Some(c) {
                break c;
            }
        }
        std::thread::sleep(Duration::from_millis(400));
    };
    let (status, body) = common::http(
        one.admin,
        "POST",
        "/api/v1/cookie-secret/rotate",
        None,
        Some(common::TOKEN),
    )
    .expect("rotate");
    assert_eq!(status, 200, "{body}");
    let (status, _) = common::http(
        one.admin,
        "POST",
        "/api/v1/cookie-secret/rotate",
        None,
        None,
    )
    .expect("rotate without a token");
    assert_eq!(status, 401);
    // Node 2 has the new secret once it no longer echoes the old cookie but renews it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let fresh = loop {
        assert!(Instant::now() < deadline, "node 2 never rotated");
        match cookie_reply(two.dns, from, &old) {
            Some(c) if c != old => break c,
            _ => std::thread::sleep(Duration::from_millis(300)),
        }
    };
    assert_eq!(fresh[..8], client);
    assert_eq!(
        cookie_reply(one.dns, from, &fresh),
        Some(fresh),
        "node 1 takes node 2's new cookie"
    );
    // The old cookie is still valid on both nodes: a burst with it is never limited…
    for node in [one, two] {
        let t = burst(
            node.dns,
            from,
            300,
            &query(0, "www.example.net", 1, Some(&old)),
        );
        assert_eq!(t.full, 300, "the pre-rotation cookie is still valid: {t:?}");
    }
    // …while the same burst with a forged one is.
    let mut forged = old;
    forged[23] ^= 0xff;
    let t = burst(
        two.dns,
        Ipv4Addr::new(127, 10, 0, 1),
        300,
        &query(0, "www.example.net", 1, Some(&forged)),
    );
    assert!(t.full < 50, "{t:?}");
}
