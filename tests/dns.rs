//! Authoritative answer semantics, checked with the real `dig` (and `kdig`) against the real
//! binary. One node serves every test of this file; tests are named for the rule they check.

mod common;

use std::sync::OnceLock;
use std::time::Duration;

use common::{Node, NodeRef, Setup};

const ZONE: &str = r#"$ORIGIN example.net.
$TTL 3600
@       3600 IN SOA ns1.example.net. hostmaster.example.net. ( 2026112501 7200 3600
                1209600 300 )
@       IN NS    ns1
@       IN NS    ns2
ns1     IN A     127.0.0.1
ns2     IN A     127.0.0.2
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

fn node() -> &'static NodeRef {
    static NODE: OnceLock<NodeRef> = OnceLock::new();
    common::shared(&NODE, || {
        Node::start(&Setup {
            files: &[("example.net.zone", ZONE)],
            extra_config: "",
        })
    })
}

#[test]
fn rfc1035_authoritative_answer_has_aa_and_no_ns_in_authority() {
    let d = node().dig(&["www.example.net", "A"]);
    assert_eq!(d.status, "NOERROR", "{}", d.raw);
    assert!(d.has_flag("aa"), "{}", d.raw);
    assert_eq!(d.answer_data("A"), vec!["192.0.2.80"]);
    assert!(d.authority.is_empty(), "minimal responses: {}", d.raw);
}

#[test]
fn rfc1035_soa_and_ns_at_apex() {
    let d = node().dig(&["example.net", "SOA"]);
    assert_eq!(d.status, "NOERROR");
    assert!(d.has_flag("aa"));
    assert_eq!(d.answer.len(), 1, "{}", d.raw);
    assert!(d.answer[0]
        .data
        .starts_with("ns1.example.net. hostmaster.example.net. 2026112501"));
    let d = node().dig(&["example.net", "NS"]);
    assert_eq!(
        d.answer_data("NS"),
        vec!["ns1.example.net.", "ns2.example.net."]
    );
    assert!(d.has_flag("aa"));
}

#[test]
fn rfc2308_nxdomain_has_soa_with_negative_ttl() {
    let d = node().dig(&["nothere.example.net", "A"]);
    assert_eq!(d.status, "NXDOMAIN", "{}", d.raw);
    assert!(d.has_flag("aa"));
    assert!(d.answer.is_empty());
    assert_eq!(d.authority.len(), 1, "{}", d.raw);
    assert_eq!(d.authority[0].rtype, "SOA");
    assert_eq!(d.authority[0].name, "example.net.");
    // the lesser of the SOA's TTL (3600) and its minimum (300)
    assert_eq!(d.authority[0].ttl, 300);
}

#[test]
fn rfc2308_nodata_has_soa_with_negative_ttl() {
    let d = node().dig(&["www.example.net", "MX"]);
    assert_eq!(d.status, "NOERROR");
    assert!(d.answer.is_empty(), "{}", d.raw);
    assert_eq!(d.authority.len(), 1);
    assert_eq!(d.authority[0].rtype, "SOA");
    assert_eq!(d.authority[0].ttl, 300);
}

#[test]
fn rfc8020_empty_non_terminal_is_nodata_not_nxdomain() {
    let d = node().dig(&["b.c.example.net", "A"]);
    assert_eq!(d.status, "NOERROR", "{}", d.raw);
    assert!(d.answer.is_empty());
    assert_eq!(d.authority[0].rtype, "SOA");
}

#[test]
fn rfc1034_cname_followed_inside_the_zone() {
    let d = node().dig(&["alias.example.net", "A"]);
    assert_eq!(d.status, "NOERROR");
    assert_eq!(d.answer_data("CNAME"), vec!["www.example.net."]);
    assert_eq!(d.answer_data("A"), vec!["192.0.2.80"]);
    let d = node().dig(&["chain1.example.net", "AAAA"]);
    assert_eq!(d.answer.len(), 3, "{}", d.raw);
    assert_eq!(d.answer_data("AAAA"), vec!["2001:db8::80"]);
    // the CNAME itself is the answer to a CNAME question
    let d = node().dig(&["alias.example.net", "CNAME"]);
    assert_eq!(d.answer.len(), 1);
}

#[test]
fn rfc6604_cname_to_missing_name_is_nxdomain_with_the_cname() {
    let d = node().dig(&["dangling.example.net", "A"]);
    assert_eq!(d.status, "NXDOMAIN", "{}", d.raw);
    assert_eq!(d.answer_data("CNAME"), vec!["nothere.example.net."]);
    assert_eq!(d.authority[0].rtype, "SOA");
    let d = node().dig(&["outside.example.net", "A"]);
    assert_eq!(d.status, "NOERROR");
    assert_eq!(d.answer_data("CNAME"), vec!["www.example.org."]);
    assert!(d.authority.is_empty());
}

#[test]
fn rfc4592_wildcard_synthesizes_with_the_query_name() {
    let d = node().dig(&["anything.wild.example.net", "A"]);
    assert_eq!(d.status, "NOERROR", "{}", d.raw);
    assert_eq!(d.answer.len(), 1);
    assert_eq!(d.answer[0].name, "anything.wild.example.net.");
    assert_eq!(d.answer[0].data, "192.0.2.99");
    let d = node().dig(&["x.y.wild.example.net", "TXT"]);
    assert_eq!(d.answer_data("TXT"), vec!["\"wild\""]);
    // a wildcard without that type: NODATA
    let d = node().dig(&["anything.wild.example.net", "MX"]);
    assert_eq!(d.status, "NOERROR");
    assert!(d.answer.is_empty());
    // an existing name is never covered by the wildcard
    let d = node().dig(&["host.wild.example.net", "TXT"]);
    assert_eq!(d.status, "NOERROR");
    assert!(d.answer.is_empty(), "{}", d.raw);
    let d = node().dig(&["host.wild.example.net", "A"]);
    assert_eq!(d.answer_data("A"), vec!["192.0.2.98"]);
}

#[test]
fn rfc1034_referral_at_zone_cut_has_ns_and_glue_without_aa() {
    let d = node().dig(&["deep.sub.example.net", "A"]);
    assert_eq!(d.status, "NOERROR", "{}", d.raw);
    assert!(!d.has_flag("aa"), "{}", d.raw);
    assert!(d.answer.is_empty());
    assert_eq!(d.authority.len(), 1);
    assert_eq!(d.authority[0].rtype, "NS");
    assert_eq!(d.authority[0].name, "sub.example.net.");
    assert_eq!(d.additional.len(), 1, "{}", d.raw);
    assert_eq!(d.additional[0].data, "192.0.2.53");
    // the cut itself too
    let d = node().dig(&["sub.example.net", "A"]);
    assert!(!d.has_flag("aa"));
    assert_eq!(d.authority[0].rtype, "NS");
}

#[test]
fn rfc4035_ds_at_delegation_answered_by_parent_authoritatively() {
    let d = node().dig(&["sub.example.net", "DS"]);
    assert_eq!(d.status, "NOERROR", "{}", d.raw);
    assert!(d.has_flag("aa"), "{}", d.raw);
    assert!(d.answer.is_empty());
    assert_eq!(d.authority[0].rtype, "SOA");
}

#[test]
fn refused_outside_all_zones() {
    let d = node().dig(&["www.example.org", "A"]);
    assert_eq!(d.status, "REFUSED", "{}", d.raw);
    assert!(!d.has_flag("aa"));
    assert_eq!(d.question.len(), 1, "question echoed: {}", d.raw);
}

#[test]
fn rfc1035_opcode_other_than_query_is_notimp_with_question_echoed() {
    let d = node().dig(&["+opcode=2", "www.example.net", "A"]);
    assert_eq!(d.status, "NOTIMP", "{}", d.raw);
    assert_eq!(d.question.len(), 1, "{}", d.raw);
}

#[test]
fn rfc6891_edns_version_1_gets_badvers() {
    let d = node().dig(&["+edns=1", "+noednsnegotiation", "www.example.net", "A"]);
    assert_eq!(d.status, "BADVERS", "{}", d.raw);
    assert!(d.answer.is_empty());
    assert!(d.opt_line("EDNS: version: 0").is_some(), "{}", d.raw);
}

#[test]
fn rfc6891_do_bit_copied_and_unknown_options_and_flags_not_echoed() {
    let d = node().dig(&[
        "+dnssec",
        "+ednsopt=65001:abcd",
        "+ednsflags=0x40",
        "www.example.net",
    ]);
    assert_eq!(d.status, "NOERROR", "{}", d.raw);
    let edns = d.opt_line("EDNS:").expect("OPT in reply");
    assert!(edns.contains("flags: do;"), "{edns}");
    assert!(!edns.contains("MBZ"), "unknown EDNS flag echoed: {edns}");
    assert!(
        !d.opt.iter().any(|l| l.contains("65001")),
        "unknown option echoed: {}",
        d.raw
    );
    assert!(edns.contains("udp: 1232"), "{edns}");
}

#[test]
fn rfc5001_nsid_answers_with_the_node_id() {
    let d = node().dig(&["+nsid", "www.example.net"]);
    let nsid = d.opt_line("NSID:").expect("NSID in reply");
    assert!(nsid.contains("(\"1\")"), "{nsid}");
    let d = node().dig(&["www.example.net"]);
    assert!(d.opt_line("NSID:").is_none());
}

#[test]
fn rfc1035_rd_copied() {
    let d = node().dig(&["+rec", "www.example.net"]);
    assert!(d.has_flag("rd"));
    assert!(!d.has_flag("ra"));
    let d = node().dig(&["www.example.net"]);
    assert!(!d.has_flag("rd"));
}

#[test]
fn rfc4343_question_case_echoed() {
    let d = node().dig(&["WwW.ExAmPlE.NeT", "A"]);
    assert_eq!(d.question.len(), 1);
    assert!(
        d.question[0].starts_with("WwW.ExAmPlE.NeT."),
        "{:?}",
        d.question
    );
    assert_eq!(d.answer_data("A"), vec!["192.0.2.80"]);
}

#[test]
fn rfc8482_any_answered_minimally() {
    let d = node().dig(&["www.example.net", "ANY"]);
    assert_eq!(d.status, "NOERROR");
    let types: std::collections::BTreeSet<_> = d.answer.iter().map(|r| r.rtype.clone()).collect();
    assert_eq!(types.len(), 1, "one RRset: {}", d.raw);
}

#[test]
fn rfc2181_truncation_over_udp_and_full_answer_over_tcp() {
    let d = node().dig(&["+ignore", "+bufsize=1232", "big.example.net", "TXT"]);
    assert!(d.has_flag("tc"), "{}", d.raw);
    assert!(d.answer.is_empty(), "whole RRsets only: {}", d.raw);
    assert!(d.opt_line("EDNS:").is_some(), "OPT kept when truncated");
    let d = node().dig(&["+ignore", "+noedns", "big.example.net", "TXT"]);
    assert!(d.has_flag("tc"));
    let d = node().dig(&["+tcp", "big.example.net", "TXT"]);
    assert!(!d.has_flag("tc"));
    assert_eq!(d.answer.len(), 8, "{}", d.raw);
}

#[test]
fn rfc5936_axfr_and_ixfr_refused() {
    let out = std::process::Command::new("dig")
        .args([
            "@127.0.0.1",
            "-p",
            &node().dns.port().to_string(),
            "example.net",
            "AXFR",
        ])
        .output()
        .expect("dig");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Transfer failed"), "{text}");
    for qtype in [251u16, 252] {
        let mut p = header(0x7777, 0, 1, 0);
        p.extend_from_slice(b"\x07example\x03net\x00");
        p.extend_from_slice(&qtype.to_be_bytes());
        p.extend_from_slice(&[0, 1]);
        let r = exchange(&p).expect("a reply");
        assert_eq!(rcode(&r), 5, "REFUSED for type {qtype}");
    }
}

#[test]
fn additional_addresses_for_mx_and_srv_targets() {
    let d = node().dig(&["example.net", "MX"]);
    assert_eq!(d.answer_data("MX"), vec!["10 mail.example.net."]);
    assert_eq!(d.additional.len(), 1, "{}", d.raw);
    assert_eq!(d.additional[0].data, "192.0.2.25");
    let d = node().dig(&["_sip._udp.example.net", "SRV"]);
    assert_eq!(d.answer_data("SRV"), vec!["10 60 5060 sip.example.net."]);
    let d = node().dig(&["caa.example.net", "CAA"]);
    assert_eq!(d.answer_data("CAA"), vec!["0 issue \"letsencrypt.org\""]);
}

#[test]
fn rfc7871_static_answer_echoes_ecs_with_scope_zero() {
    let d = node().dig(&["+subnet=81.2.69.0/24", "www.example.net"]);
    let ecs = d.opt_line("CLIENT-SUBNET:").expect("ECS echoed");
    assert!(ecs.contains("81.2.69.0/24/0"), "{ecs}");
}

#[test]
fn kdig_agrees() {
    let out = std::process::Command::new("kdig")
        .args([
            &format!("@127.0.0.1:{}", node().dns.port()),
            "+norec",
            "+nsid",
            "www.example.net",
            "AAAA",
        ])
        .output()
        .expect("run kdig (install knot-dnsutils)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("status: NOERROR"), "{text}");
    assert!(text.contains("2001:db8::80"), "{text}");
    assert!(text.contains("Flags: qr aa;"), "{text}");
    let out = std::process::Command::new("kdig")
        .args([
            &format!("@127.0.0.1:{}", node().dns.port()),
            "+tcp",
            "nothere.example.net",
        ])
        .output()
        .expect("kdig");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("status: NXDOMAIN"), "{text}");
}

// ---- raw packets: what dig cannot send ----

fn header(id: u16, flags: u16, qd: u16, ar: u16) -> Vec<u8> {
    let mut p = id.to_be_bytes().to_vec();
    p.extend_from_slice(&flags.to_be_bytes());
    p.extend_from_slice(&qd.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 0]);
    p.extend_from_slice(&ar.to_be_bytes());
    p
}

const WWW: &[u8] = b"\x03www\x07example\x03net\x00";

fn exchange(p: &[u8]) -> Option<Vec<u8>> {
    common::udp_exchange(node().dns, p, Duration::from_secs(2))
}

fn rcode(reply: &[u8]) -> u8 {
    reply[3] & 0x0f
}

#[test]
fn rfc1035_malformed_question_is_formerr_echoing_id() {
    let mut p = header(0xbeef, 0x0000, 1, 0);
    p.extend_from_slice(b"\x03www\x07exam"); // cut in the middle of the name
    let r = exchange(&p).expect("a reply");
    assert_eq!(&r[0..2], &[0xbe, 0xef]);
    assert_eq!(rcode(&r), 1, "FORMERR");
    assert!(r[2] & 0x80 != 0, "QR");
}

#[test]
fn rfc1035_z_bit_cleared_and_id_opcode_echoed() {
    let mut p = header(0x1234, 0x0140, 1, 0); // RD + Z
    p.extend_from_slice(WWW);
    p.extend_from_slice(&[0, 1, 0, 1]);
    let r = exchange(&p).expect("a reply");
    assert_eq!(&r[0..2], &[0x12, 0x34]);
    assert_eq!(r[3] & 0x40, 0, "Z cleared");
    assert_eq!(r[2] & 0x01, 1, "RD copied");
    assert_eq!(r[2] & 0x04, 0x04, "AA");
}

#[test]
fn rfc7871_malformed_ecs_is_formerr() {
    let mut p = header(0x4242, 0, 1, 1);
    p.extend_from_slice(WWW);
    p.extend_from_slice(&[0, 1, 0, 1]);
    // OPT with ECS 81.2.69.0/23 whose address has a bit past the prefix
    p.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 11]);
    p.extend_from_slice(&[0, 8, 0, 7, 0, 1, 23, 0, 81, 2, 69]);
    let r = exchange(&p).expect("a reply");
    assert_eq!(rcode(&r), 1, "FORMERR");
    // prefix longer than the family
    let mut p = header(0x4243, 0, 1, 1);
    p.extend_from_slice(WWW);
    p.extend_from_slice(&[0, 1, 0, 1]);
    p.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 12]);
    p.extend_from_slice(&[0, 8, 0, 8, 0, 1, 33, 0, 81, 2, 69, 1]);
    let r = exchange(&p).expect("a reply");
    assert_eq!(rcode(&r), 1, "FORMERR");
}

#[test]
fn garbage_packets_leave_the_server_answering() {
    let mut seed = 0x2545f4914f6cdd1du64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let mut packets: Vec<Vec<u8>> = vec![
        vec![],
        vec![1, 2, 3],
        header(1, 0, 1, 0), // header only
        [header(2, 0, 1, 0), b"\xc0\x0c\x00\x01\x00\x01".to_vec()].concat(), // pointer to itself
        [header(3, 0, 1, 0), b"\xc0\x12\x00\x01\x00\x01".to_vec()].concat(), // pointer forward
        [header(4, 0, 1, 0), vec![0x3f; 300]].concat(), // over-long name
        [header(5, 0, 0xffff, 0xffff), WWW.to_vec()].concat(), // lying counts
        [
            header(6, 0, 1, 1),
            WWW.to_vec(),
            vec![0, 1, 0, 1, 0, 0, 41, 0, 0],
        ]
        .concat(), // cut OPT
    ];
    for _ in 0..300 {
        let len = (next() % 200) as usize;
        packets.push((0..len).map(|_| next() as u8).collect());
    }
    for p in &packets {
        let _ = sock.send_to(p, node().dns);
    }
    let d = node().dig(&["www.example.net", "A"]);
    assert_eq!(d.answer_data("A"), vec!["192.0.2.80"], "{}", d.raw);
}

#[test]
fn rfc7766_idle_tcp_clients_do_not_lock_out_a_new_one() {
    // More idle connections than the server's cap (1024): the idlest are closed to make room.
    // Where the open-file limit is lower than that, the server runs out of descriptors first
    // and must make room the same way. Keep a few descriptors for running dig.
    let limit = meridian::dns::tcp::raise_fd_limit().expect("open-file limit");
    let target = 1100.min(limit.saturating_sub(32) as usize);
    let mut idle = Vec::new();
    for _ in 0..target {
        match std::net::TcpStream::connect_timeout(&node().dns, Duration::from_secs(2)) {
            Ok(s) => idle.push(s),
            Err(_) => break,
        }
    }
    assert!(
        idle.len() > 900 && idle.len() == target,
        "only {} of {target} connections opened (open-file limit {limit})",
        idle.len()
    );
    let d = node().dig(&["+tcp", "www.example.net", "A"]);
    assert_eq!(d.answer_data("A"), vec!["192.0.2.80"], "{}", d.raw);
}
