//! DNSSEC signatures kept across builds (issue 13, "Where the signatures come from"): after
//! a zone PUT that changes one record, the unchanged RRsets keep their RRSIG (the same
//! signature bytes on the wire), the changed one gets a new one, and a real validator
//! (Unbound with the zone's DS as its only anchor) validates both.

mod common;

use common::unbound::{validator, Unbound};
use common::{eventually, first_ds, http, sign_zone, Dig, Node, TOKEN};

/// The zone with `mail`'s address and the SOA serial given.
fn zone(serial: u32, mail: &str) -> String {
    format!(
        "$ORIGIN example.com.\n$TTL 300\n\
         @ 3600 IN SOA ns1.example.com. hostmaster.example.com. {serial} 7200 3600 1209600 300\n\
         @ IN NS ns1\nns1 IN A 127.0.0.1\n@ IN A 192.0.2.1\n@ IN MX 10 mail\n\
         mail IN A {mail}\ntxt IN TXT \"hello\"\n*.wild IN TXT \"wild\"\n"
    )
}

const DATACENTERS: &str = r#"
[[datacenter]]
id = "lon"
location = { lat = 51.5074, lon = -0.1278 }
addresses = ["198.51.100.1"]
"#;

const SERVICES: &str = r#"
[[service]]
zone = "example.com"
name = "www"
policy = "geo_nearest"
datacenters = ["lon"]
ttl = 60
"#;

/// The signature field (the last, base64) of the RRSIG covering `rtype` in `d`'s answer.
fn rrsig(d: &Dig, rtype: &str) -> String {
    d.answer
        .iter()
        .find(|r| r.rtype == "RRSIG" && r.data.split_whitespace().next() == Some(rtype))
        .map(|r| r.data.split_whitespace().skip(8).collect::<String>())
        .unwrap_or_else(|| panic!("no RRSIG over {rtype}:\n{}", d.raw))
}

/// `dig @unbound +rec +dnssec NAME RTYPE`, which must come back validated (AD).
fn validated(unbound: &Unbound, name: &str, rtype: &str) -> Dig {
    unbound
        .validated(name, rtype)
        .unwrap_or_else(|e| panic!("{e}"))
}

/// RFC 4035 §5: after a one-record change, the changed RRset (newly signed) and an
/// unchanged one (its old RRSIG kept) both validate; so do the SOA (negative answers) and
/// the apex.
#[test]
fn rfc4035_5_a_one_record_change_keeps_the_other_signatures_and_validates() {
    let node = Node::start_example(&zone(2026120701, "192.0.2.25"), DATACENTERS, SERVICES);
    let keys = sign_zone(
        node.admin,
        "example.com",
        r#"{"algorithm": "ECDSAP256SHA256"}"#,
    );
    let ds = first_ds(&keys);
    let before_txt = eventually("the zone signed", || {
        let d = node.dig(&["+dnssec", "txt.example.com", "TXT"]);
        d.answer.iter().any(|r| r.rtype == "RRSIG").then_some(d)
    });
    let before_mail = node.dig(&["+dnssec", "mail.example.com", "A"]);
    let before_apex = node.dig(&["+dnssec", "example.com", "A"]);

    let (status, body) = http(
        node.admin,
        "PUT",
        "/api/v1/zones/example.com",
        Some(("text/dns", &zone(2026120702, "192.0.2.26"))),
        Some(TOKEN),
    )
    .expect("PUT zone");
    assert!((200..300).contains(&status), "{status}: {body}");
    let after_mail = eventually("the new address served", || {
        let d = node.dig(&["+dnssec", "mail.example.com", "A"]);
        (d.answer_data("A") == ["192.0.2.26"]).then_some(d)
    });
    assert_ne!(rrsig(&after_mail, "A"), rrsig(&before_mail, "A"));
    // Kept from the last build, byte for byte.
    let after_txt = node.dig(&["+dnssec", "txt.example.com", "TXT"]);
    assert_eq!(rrsig(&after_txt, "TXT"), rrsig(&before_txt, "TXT"));
    let after_apex = node.dig(&["+dnssec", "example.com", "A"]);
    assert_eq!(rrsig(&after_apex, "A"), rrsig(&before_apex, "A"));

    // A validator that has seen nothing yet: the changed name, unchanged ones, the SOA.
    let unbound = validator(node.dns, &ds);
    let d = validated(&unbound, "mail.example.com", "A");
    assert_eq!(d.answer_data("A"), ["192.0.2.26"]);
    validated(&unbound, "txt.example.com", "TXT");
    validated(&unbound, "example.com", "A");
    validated(&unbound, "example.com", "SOA");
    validated(&unbound, "example.com", "DNSKEY");
    validated(&unbound, "x.wild.example.com", "TXT");
    validated(&unbound, "nope.example.com", "A");
    validated(&unbound, "txt.example.com", "A");
}
