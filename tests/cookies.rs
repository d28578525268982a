//! DNS cookies (RFC 7873, server cookies per RFC 9018) against the real binary, with the
//! real `dig` and `kdig`: a client cookie gets a server cookie, the same cookie sent back is
//! valid (and echoed), a forged or old one gets a normal answer with a fresh cookie (no
//! BADCOOKIE), a malformed option is FORMERR, and `[dns] cookies = false` ignores the option.

mod common;

use std::sync::OnceLock;
use std::time::Duration;

use common::{Node, NodeRef, Setup};

const ZONE: &str = "$ORIGIN example.net.\n$TTL 3600\n@ IN SOA ns1 hostmaster 1 7200 3600 1209600 300\n@ IN NS ns1\nns1 IN A 127.0.0.1\nwww IN A 192.0.2.80\n";

fn node() -> &'static NodeRef {
    static NODE: OnceLock<NodeRef> = OnceLock::new();
    common::shared(&NODE, || {
        Node::start(&Setup {
            files: &[("example.net.zone", ZONE)],
            extra_config: "",
        })
    })
}

fn node_without_cookies() -> &'static NodeRef {
    static NODE: OnceLock<NodeRef> = OnceLock::new();
    common::shared(&NODE, || {
        Node::start(&Setup {
            files: &[("example.net.zone", ZONE)],
            extra_config: "[dns]\ncookies = false\n",
        })
    })
}

/// The COOKIE dig printed (hex, lower case) and what it said of it (`good`, …).
fn cookie_of(d: &common::Dig) -> Option<(String, String)> {
    let line = d.opt_line("COOKIE:")?;
    let rest = line
        .trim_start_matches("; ")
        .strip_prefix("COOKIE:")?
        .trim();
    let mut parts = rest.split_whitespace();
    let hex = parts.next()?.to_ascii_lowercase();
    let note = parts
        .next()
        .unwrap_or("")
        .trim_matches(|c| c == '(' || c == ')');
    Some((hex, note.to_string()))
}

/// The server cookie's timestamp (RFC 9018 §4: bytes 4..8 of the server cookie).
fn stamp(cookie_hex: &str) -> u32 {
    u32::from_str_radix(&cookie_hex[24..32], 16).expect("timestamp")
}

fn unix_now() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32)
}

#[test]
fn rfc7873_dig_cookie_gets_a_server_cookie_and_it_validates_when_sent_back() {
    let d = node().dig(&["+cookie", "www.example.net", "A"]);
    assert_eq!(d.answer_data("A"), vec!["192.0.2.80"], "{}", d.raw);
    let (cookie, note) = cookie_of(&d).unwrap_or_else(|| panic!("no COOKIE: {}", d.raw));
    // 8 bytes of client cookie, 16 of RFC 9018 server cookie (version 1, reserved 0).
    assert_eq!(cookie.len(), 48, "{cookie}");
    assert_eq!(&cookie[16..24], "01000000", "{cookie}");
    assert!(stamp(&cookie).abs_diff(unix_now()) <= 5, "{cookie}");
    assert_eq!(note, "good", "{}", d.raw);
    // Sent back, it is valid: echoed as it is (it is younger than half an hour).
    let again = node().dig(&[&format!("+cookie={cookie}"), "www.example.net", "A"]);
    assert_eq!(again.answer_data("A"), vec!["192.0.2.80"], "{}", again.raw);
    let (echoed, note) = cookie_of(&again).expect("cookie");
    assert_eq!(echoed, cookie, "{}", again.raw);
    assert_eq!(note, "good");
    // Over TCP too.
    let tcp = node().dig(&["+tcp", &format!("+cookie={cookie}"), "www.example.net", "A"]);
    assert_eq!(cookie_of(&tcp).map(|c| c.0), Some(cookie));
}

#[test]
fn rfc7873_5_2_3_forged_or_old_server_cookie_gets_its_answer_and_a_fresh_cookie() {
    let client = "0123456789abcdef";
    let old = format!("{:08x}", unix_now() - 7200);
    for server in [
        // A forged hash with the right version and time.
        format!("01000000{:08x}0011223344556677", unix_now()),
        // Two hours old.
        format!("01000000{old}0011223344556677"),
        // Not RFC 9018 at all (8 bytes).
        "0011223344556677".to_string(),
    ] {
        let sent = format!("{client}{server}");
        let d = node().dig(&[&format!("+cookie={sent}"), "www.example.net", "A"]);
        assert_eq!(d.status, "NOERROR", "no BADCOOKIE over UDP: {}", d.raw);
        assert_eq!(d.answer_data("A"), vec!["192.0.2.80"], "{}", d.raw);
        let (fresh, _) = cookie_of(&d).unwrap_or_else(|| panic!("no COOKIE: {}", d.raw));
        assert_eq!(&fresh[..16], client, "the client cookie is echoed");
        assert_ne!(&fresh[16..], server, "a fresh server cookie");
        assert!(stamp(&fresh).abs_diff(unix_now()) <= 5, "{fresh}");
        // The fresh one is valid: echoed when sent back.
        let back = node().dig(&[&format!("+cookie={fresh}"), "www.example.net", "A"]);
        assert_eq!(cookie_of(&back).map(|c| c.0), Some(fresh));
    }
}

#[test]
fn rfc7873_kdig_gets_a_server_cookie() {
    let out = std::process::Command::new("kdig")
        .arg(format!("@{}", node().dns.ip()))
        .args(["-p", &node().dns.port().to_string()])
        .args([
            "+cookie",
            "+norec",
            "+time=2",
            "+retry=0",
            "www.example.net",
            "A",
        ])
        .output()
        .expect("run kdig (install knot-dnsutils)");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("COOKIE:"))
        .unwrap_or_else(|| panic!("no COOKIE in kdig's output:\n{text}"));
    let hex: String = line
        .split_whitespace()
        .last()
        .unwrap_or("")
        .chars()
        .filter(char::is_ascii_hexdigit)
        .collect();
    assert_eq!(hex.len(), 48, "{line}");
    assert!(text.contains("192.0.2.80"), "{text}");
}

/// A query for www.example.net A with an OPT carrying a COOKIE option of `data`.
fn raw_query(data: &[u8]) -> Vec<u8> {
    let mut p = vec![0xbe, 0xef, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1];
    p.extend_from_slice(b"\x03www\x07example\x03net\x00\x00\x01\x00\x01");
    p.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0]);
    p.extend_from_slice(&((data.len() + 4) as u16).to_be_bytes());
    p.extend_from_slice(&[0, 10]);
    p.extend_from_slice(&(data.len() as u16).to_be_bytes());
    p.extend_from_slice(data);
    p
}

#[test]
fn rfc7873_5_2_2_malformed_cookie_option_is_formerr() {
    for len in [0usize, 5, 9, 15, 41] {
        let reply = common::udp_exchange(
            node().dns,
            &raw_query(&vec![7; len]),
            Duration::from_secs(2),
        )
        .unwrap_or_else(|| panic!("no reply to a {len}-byte cookie"));
        assert_eq!(reply[..2], [0xbe, 0xef]);
        assert_eq!(reply[3] & 0x0f, 1, "FORMERR for a {len}-byte cookie");
    }
    // The lengths RFC 7873 allows are answered.
    for len in [8usize, 16, 40] {
        let reply = common::udp_exchange(
            node().dns,
            &raw_query(&vec![7; len]),
            Duration::from_secs(2),
        )
        .expect("reply");
        assert_eq!(reply[3] & 0x0f, 0, "NOERROR for a {len}-byte cookie");
    }
}

#[test]
fn cookies_off_ignores_the_option() {
    let node = node_without_cookies();
    let d = node.dig(&["+cookie", "www.example.net", "A"]);
    assert_eq!(d.answer_data("A"), vec!["192.0.2.80"], "{}", d.raw);
    assert_eq!(cookie_of(&d), None, "{}", d.raw);
    // Even a malformed one: it is an unknown option then.
    let reply =
        common::udp_exchange(node.dns, &raw_query(&[7; 5]), Duration::from_secs(2)).expect("reply");
    assert_eq!(reply[3] & 0x0f, 0, "NOERROR");
}
