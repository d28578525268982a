//! DNSSEC online signing (DESIGN.md "DNSSEC (online signing)"): keys through the admin API,
//! signed answers checked by a real validator (Unbound with the zone's DS as its trust
//! anchor, and `delv`), and the wire with `dig +dnssec`.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{eventually_within, first_ds, get_json, http, json, sign_zone, Dig, Node, TOKEN};

use common::unbound::{delv, validator};

const ZONE: &str = r#"$ORIGIN example.com.
$TTL 300
@       3600 IN SOA ns1.example.com. hostmaster.example.com. ( 2026112501 7200 3600
                1209600 300 )
@       IN NS    ns1
ns1     IN A     127.0.0.1
@       IN A     192.0.2.1
@       IN MX    10 mail
mail    IN A     192.0.2.25
txt     IN TXT   "hello"
alias   IN CNAME mail
*.wild  IN TXT   "wild"
sub     IN NS    ns.sub
ns.sub  IN A     192.0.2.53
"#;

const DATACENTERS: &str = r#"
[[datacenter]]
id = "lon"
location = { lat = 51.5074, lon = -0.1278 }
addresses = ["198.51.100.1"]

[[datacenter]]
id = "sin"
location = { lat = 1.3521, lon = 103.8198 }
addresses = ["198.51.100.3"]
"#;

const SERVICES: &str = r#"
[[service]]
zone = "example.com"
name = "www"
policy = "geo_nearest"
datacenters = ["lon", "sin"]
ttl = 60
"#;

/// Sign `origin` on `node` and wait (bounded) until its DNS serves the DNSKEY.
fn sign(node: &Node, origin: &str, alg: &str) -> serde_json::Value {
    let keys = sign_zone(node.admin, origin, &format!(r#"{{"algorithm": "{alg}"}}"#));
    eventually_within(Duration::from_secs(5), "a DNSKEY served", || {
        node.dig(&[origin, "DNSKEY"])
            .answer
            .iter()
            .any(|r| r.rtype == "DNSKEY")
            .then_some(())
    });
    keys
}

/// RFC 4035 §4 through a validator, RFC 9824 compact denial, RFC 4034 §3 signature times,
/// and answers without DO unchanged.
#[test]
fn rfc4035_signed_answers_validate_through_unbound() {
    let node = Node::start_example(ZONE, DATACENTERS, SERVICES);
    let unsigned = node.dig(&["+dnssec", "example.com", "A"]);
    let keys = sign(&node, "example.com", "ECDSAP256SHA256");
    assert_eq!(keys["algorithm"], "ECDSAP256SHA256");
    let key = &keys["keys"][0];
    assert_eq!(
        (key["role"].as_str(), key["flags"].as_u64()),
        (Some("csk"), Some(257))
    );
    assert_eq!(key["state"], "active");
    assert!(!keys.to_string().contains("private"), "{keys}");
    let ds = first_ds(&keys);
    assert!(ds.starts_with(&format!("{} 13 2 ", key["tag"])), "{ds}");

    // Without DO: the same answer as before signing, no RRSIG.
    let plain = node.dig(&["example.com", "A"]);
    assert!(!plain.raw.contains("RRSIG"), "{}", plain.raw);
    assert_eq!(plain.answer, node.dig(&["example.com", "A"]).answer);
    assert_eq!(unsigned.answer_data("A"), plain.answer_data("A"));
    assert_eq!(node.dig(&["nope.example.com", "A"]).status, "NXDOMAIN");

    // With DO: RRSIG beside the answer, inception ≥ 1 h back, expiration ≥ 7 days ahead.
    let d = node.dig(&["+dnssec", "example.com", "A"]);
    let sig = d
        .answer
        .iter()
        .find(|r| r.rtype == "RRSIG")
        .unwrap_or_else(|| panic!("no RRSIG:\n{}", d.raw));
    let f: Vec<&str> = sig.data.split_whitespace().collect();
    let when = |s: &str| -> u64 {
        let t = time::PrimitiveDateTime::parse(
            s,
            time::macros::format_description!("[year][month][day][hour][minute][second]"),
        )
        .expect("RRSIG time");
        t.assume_utc().unix_timestamp() as u64
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let (expiration, inception) = (when(f[4]), when(f[5]));
    assert!(
        inception <= now - 3600 + 60,
        "inception {inception}, now {now}"
    );
    assert!(
        expiration >= now + 7 * 86400,
        "expiration {expiration}, now {now}"
    );

    // RFC 9824: a missing name is NOERROR with an NSEC at it (RRSIG NSEC NXNAME).
    let nx = node.dig(&["+dnssec", "nope.example.com", "A"]);
    assert_eq!(nx.status, "NOERROR", "{}", nx.raw);
    let nsec = nx
        .authority
        .iter()
        .find(|r| r.rtype == "NSEC")
        .unwrap_or_else(|| panic!("no NSEC:\n{}", nx.raw));
    assert_eq!(nsec.name, "nope.example.com.");
    assert!(
        nsec.data.starts_with("\\000.nope.example.com."),
        "{}",
        nsec.data
    );
    assert!(nsec.data.contains("RRSIG NSEC"), "{}", nsec.data);
    // NODATA: the NSEC lists what the name has, never the type asked.
    let nodata = node.dig(&["+dnssec", "txt.example.com", "A"]);
    let nsec = nodata
        .authority
        .iter()
        .find(|r| r.rtype == "NSEC")
        .expect("NSEC");
    assert!(nsec.data.ends_with("TXT RRSIG NSEC"), "{}", nsec.data);

    // A validator with the DS from GET as its only anchor.
    let unbound = validator(node.dns, &ds);
    // Each NOERROR with AD (a missing name too: compact denial).
    let cases: &[(&str, &str)] = &[
        ("example.com", "A"),
        ("example.com", "DNSKEY"),
        ("example.com", "MX"),
        ("txt.example.com", "TXT"),
        ("alias.example.com", "A"),
        ("x.wild.example.com", "TXT"),
        ("www.example.com", "A"),
        ("nope.example.com", "A"),
        ("txt.example.com", "A"),
        ("sub.example.com", "DS"),
    ];
    for (name, rtype) in cases {
        if let Err(e) = unbound.validated(name, rtype) {
            panic!("{e}");
        }
    }

    // delv validates too, straight from the node, with the same anchor.
    let text = delv(node.dns, &ds, &["example.com", "A"]);
    assert!(text.contains("; fully validated"), "delv:\n{text}");
}

/// The key API: a repeated PUT changes nothing, another algorithm is 409, DELETE stops
/// signing and GET is 404 after; history lists put_dnssec and delete_dnssec.
#[test]
fn dnssec_keys_api_put_get_delete() {
    let node = Node::start_example(ZONE, DATACENTERS, SERVICES);
    let path = "/api/v1/zones/example.com./dnssec";
    let get = |n: &Node| http(n.admin, "GET", path, None, Some(TOKEN)).expect("GET");
    assert_eq!(get(&node).0, 404);
    let first = sign(&node, "example.com", "ED25519");
    assert_eq!(
        first["keys"][0]["dnskey"]
            .as_str()
            .map(|s| s.starts_with("257 3 15 ")),
        Some(true)
    );
    let put = |alg: &str| {
        http(
            node.admin,
            "PUT",
            path,
            Some(("application/json", &format!(r#"{{"algorithm": "{alg}"}}"#))),
            Some(TOKEN),
        )
        .expect("PUT")
    };
    let (s, again) = put("ED25519");
    assert_eq!(s, 200, "{again}");
    assert_eq!(json(&again)["keys"], first["keys"]);
    assert_eq!(put("ECDSAP256SHA256").0, 409);
    let (s, body) = get(&node);
    assert_eq!(s, 200);
    assert_eq!(json(&body)["ds"], first["ds"]);
    assert!(!body.contains("private"), "{body}");
    let (s, _) = http(node.admin, "DELETE", path, None, Some(TOKEN)).expect("DELETE");
    assert_eq!(s, 204);
    assert_eq!(get(&node).0, 404);
    eventually_within(Duration::from_secs(5), "unsigned after DELETE", || {
        let d = node.dig(&["+dnssec", "example.com", "DNSKEY"]);
        (!d.raw.contains("RRSIG")).then_some(())
    });
    let (_, history) =
        http(node.admin, "GET", "/api/v1/history", None, Some(TOKEN)).expect("history");
    assert!(
        history.contains("\"put_dnssec\"") && history.contains("\"delete_dnssec\""),
        "{history}"
    );
    assert!(history.contains("dnssec/example.com."), "{history}");
    // No private key in the log.
    // PKCS#8 DER in base64 starts so: Ed25519 (ring's v2 form) and ECDSA P-256.
    for start in ["MFMCAQEw", "MIGHAgEA"] {
        assert!(!node.log().contains(start), "a private key in the log");
    }
}

/// A second world for the wire tests below, shared by them (one node, signed once): a
/// large TXT RRset, a wildcard, an empty non-terminal, and services with IPv4 and IPv6,
/// IPv4 only, and every datacenter drained with `on_all_down = "none"`.
const WIRE_ZONE: &str = r#"$ORIGIN example.com.
$TTL 300
@       3600 IN SOA ns1.example.com. hostmaster.example.com. ( 2026120701 7200 3600
                1209600 300 )
@       IN NS    ns1
ns1     IN A     127.0.0.1
@       IN A     192.0.2.1
@       IN MX    10 mail
mail    IN A     192.0.2.25
big     IN TXT   "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
big     IN TXT   "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
big     IN TXT   "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"
*.wild  IN TXT   "wild"
a.ent   IN TXT   "below an empty non-terminal"
"#;

const WIRE_DCS: &str = r#"
[[datacenter]]
id = "lon"
location = { lat = 51.5074, lon = -0.1278 }
addresses = ["198.51.100.1", "2001:db8::1"]

[[datacenter]]
id = "sin"
location = { lat = 1.3521, lon = 103.8198 }
addresses = ["198.51.100.3"]

[[datacenter]]
id = "off"
location = { lat = 40.0, lon = -74.0 }
addresses = ["198.51.100.9", "2001:db8::9"]
state = "drained"
"#;

const WIRE_SERVICES: &str = r#"
[[service]]
zone = "example.com"
name = "www"
policy = "geo_nearest"
datacenters = ["lon", "sin"]
ttl = 60

[[service]]
zone = "example.com"
name = "v4"
policy = "round_robin"
datacenters = ["sin"]

[[service]]
zone = "example.com"
name = "down"
policy = "round_robin"
datacenters = ["off"]
on_all_down = "none"
"#;

/// The shared signed node of the wire tests and its DS.
struct Wire {
    at: common::NodeRef,
    ds: String,
}

fn wire() -> &'static Wire {
    static NODE: std::sync::OnceLock<common::NodeRef> = std::sync::OnceLock::new();
    static WIRE: std::sync::OnceLock<Wire> = std::sync::OnceLock::new();
    WIRE.get_or_init(|| {
        let at = common::shared(&NODE, || {
            let node = Node::start_example(WIRE_ZONE, WIRE_DCS, WIRE_SERVICES);
            sign(&node, "example.com", "ECDSAP256SHA256");
            node
        });
        let ds = first_ds(&get_json(at.admin, "/api/v1/zones/example.com./dnssec"));
        Wire { at: at.clone(), ds }
    })
}

/// The size dig reports for the reply (`;; MSG SIZE  rcvd: N`).
fn msg_size(d: &Dig) -> usize {
    d.raw
        .lines()
        .find_map(|l| l.strip_prefix(";; MSG SIZE  rcvd: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no MSG SIZE:\n{}", d.raw))
}

/// Every RRset of `rrs` has an RRSIG covering it, and every RRSIG an RRset.
fn each_rrset_signed(rrs: &[common::Rr]) -> Result<(), String> {
    let mut sets: Vec<(String, String)> = rrs
        .iter()
        .filter(|r| r.rtype != "RRSIG")
        .map(|r| (r.name.to_lowercase(), r.rtype.clone()))
        .collect();
    sets.sort();
    sets.dedup();
    let mut sigs: Vec<(String, String)> = rrs
        .iter()
        .filter(|r| r.rtype == "RRSIG")
        .map(|r| {
            let covered = r.data.split_whitespace().next().unwrap_or("").to_string();
            (r.name.to_lowercase(), covered)
        })
        .collect();
    sigs.sort();
    sigs.dedup();
    if sets == sigs {
        Ok(())
    } else {
        Err(format!("RRsets {sets:?}, RRSIGs over {sigs:?}"))
    }
}

/// RFC 4035 §3.1.1 and RFC 6891 §7: with DO and a 512-byte buffer no reply is larger than
/// 512 bytes, an RRset never goes without its RRSIG, and TC is set when one was left out.
#[test]
fn rfc4035_3_1_1_do_with_a_512_byte_buffer_keeps_rrsets_with_their_rrsigs() {
    let w = wire();
    let questions: &[(&str, &str)] = &[
        ("big.example.com", "TXT"),
        ("example.com", "A"),
        ("example.com", "MX"),
        ("example.com", "DNSKEY"),
        ("example.com", "SOA"),
        ("mail.example.com", "TXT"),
        ("nope.example.com", "A"),
        ("x.wild.example.com", "TXT"),
        ("x.wild.example.com", "A"),
        ("ent.example.com", "A"),
        ("www.example.com", "A"),
        ("www.example.com", "AAAA"),
        ("www.example.com", "TXT"),
        ("down.example.com", "A"),
    ];
    for (name, rtype) in questions {
        let d =
            w.at.dig(&["+dnssec", "+bufsize=512", "+ignore", name, rtype]);
        let size = msg_size(&d);
        assert!(size <= 512, "{name} {rtype}: {size} bytes\n{}", d.raw);
        for (section, rrs) in [("answer", &d.answer), ("authority", &d.authority)] {
            if let Err(e) = each_rrset_signed(rrs) {
                panic!("{name} {rtype}, {section}: {e}\n{}", d.raw);
            }
        }
        // The same question over TCP: the whole answer, signed.
        let full = w.at.dig(&["+dnssec", "+tcp", name, rtype]);
        assert!(!full.has_flag("tc"), "{}", full.raw);
        if size < msg_size(&full) {
            assert!(
                d.has_flag("tc"),
                "{name} {rtype}: shorter without TC\n{}",
                d.raw
            );
        }
    }
    // The three TXT records fit in 512 bytes, but not with their RRSIG: TC and no TXT.
    let d = w.at.dig(&[
        "+dnssec",
        "+bufsize=512",
        "+ignore",
        "big.example.com",
        "TXT",
    ]);
    assert!(d.has_flag("tc"), "{}", d.raw);
    assert!(d.answer.is_empty(), "{}", d.raw);
    let plain =
        w.at.dig(&["+bufsize=512", "+ignore", "big.example.com", "TXT"]);
    assert!(!plain.has_flag("tc"), "{}", plain.raw);
    assert_eq!(plain.answer_data("TXT").len(), 3, "{}", plain.raw);
}

/// The NSEC of a NODATA answer (DESIGN.md "DNSSEC (online signing)", RFC 9824 §3): at a
/// service name its families (A and/or AAAA) whatever the health, never the type asked;
/// a type the service would have but cannot give now (every datacenter out) left out; at
/// a wildcard-made name the wildcard's types; at an empty non-terminal only RRSIG NSEC.
/// Each validates.
#[test]
fn rfc9824_3_nodata_nsec_bitmaps_at_services_wildcards_and_empty_non_terminals() {
    let w = wire();
    let cases: &[(&str, &str, &str)] = &[
        ("www.example.com", "TXT", "A AAAA RRSIG NSEC"),
        ("www.example.com", "MX", "A AAAA RRSIG NSEC"),
        ("v4.example.com", "AAAA", "A RRSIG NSEC"),
        ("v4.example.com", "TXT", "A RRSIG NSEC"),
        ("down.example.com", "A", "AAAA RRSIG NSEC"),
        ("down.example.com", "AAAA", "A RRSIG NSEC"),
        ("down.example.com", "TXT", "A AAAA RRSIG NSEC"),
        ("x.wild.example.com", "A", "TXT RRSIG NSEC"),
        ("ent.example.com", "A", "RRSIG NSEC"),
        ("ent.example.com", "TXT", "RRSIG NSEC"),
    ];
    for (name, rtype, types) in cases {
        let d = w.at.dig(&["+dnssec", name, rtype]);
        assert_eq!(d.status, "NOERROR", "{}", d.raw);
        assert!(d.answer.is_empty(), "{name} {rtype}: not NODATA\n{}", d.raw);
        let nsec = d
            .authority
            .iter()
            .find(|r| r.rtype == "NSEC")
            .unwrap_or_else(|| panic!("{name} {rtype}: no NSEC\n{}", d.raw));
        assert_eq!(nsec.name, format!("{name}."), "{}", d.raw);
        assert_eq!(
            nsec.data,
            format!("\\000.{name}. {types}"),
            "{name} {rtype}\n{}",
            d.raw
        );
        each_rrset_signed(&d.authority).unwrap_or_else(|e| panic!("{name} {rtype}: {e}"));
        // Without DO: plain NODATA, no NSEC.
        let plain = w.at.dig(&[name, rtype]);
        assert_eq!(plain.status, "NOERROR", "{}", plain.raw);
        assert!(!plain.raw.contains("NSEC"), "{}", plain.raw);
        // A validator proves it.
        let text = delv(w.at.dns, &w.ds, &[name, rtype]);
        assert!(
            text.contains("; negative response, fully validated"),
            "{name} {rtype}: delv:\n{text}"
        );
    }
}

/// RFC 9824 §3.5: an explicit query for the NXNAME meta-type (128) is FORMERR, with and
/// without DO, in a signed zone, an unsigned one, or none of ours.
#[test]
fn rfc9824_3_5_a_query_for_nxname_is_formerr() {
    let w = wire();
    for name in [
        "example.com",
        "nope.example.com",
        "www.example.com",
        "example.org",
    ] {
        for args in [&["+dnssec"][..], &[][..]] {
            let mut all = args.to_vec();
            all.extend([name, "TYPE128"]);
            let d = w.at.dig(&all);
            assert_eq!(d.status, "FORMERR", "{name} {args:?}\n{}", d.raw);
            assert!(d.answer.is_empty() && d.authority.is_empty(), "{}", d.raw);
        }
    }
}

/// The signature cache (DESIGN.md: "signed answers are cached so a hot name is not signed
/// per query"): the same geo answer asked again, from many source ports (so from each UDP
/// worker, which the kernel picks by the client's port), gets the byte-identical RRSIG;
/// so does a wildcard answer. ECDSA signatures are randomised, so two signings differ.
#[test]
fn signed_geo_and_wildcard_answers_come_from_one_cached_signature() {
    let w = wire();
    let cases: &[&[&str]] = &[
        &["+subnet=81.2.69.0/24", "www.example.com", "A"],
        &["+subnet=175.16.199.0/24", "www.example.com", "A"],
        &["+subnet=81.2.69.0/24", "www.example.com", "AAAA"],
        &["x.wild.example.com", "TXT"],
        &["www.example.com", "TXT"],
    ];
    for case in cases {
        let mut all = vec!["+dnssec"];
        all.extend_from_slice(case);
        let sig = |d: &Dig| -> String {
            let set = d
                .answer
                .iter()
                .chain(&d.authority)
                .filter(|r| r.rtype == "RRSIG" && !r.data.starts_with("SOA "))
                .map(|r| r.data.clone())
                .collect::<Vec<_>>();
            assert_eq!(set.len(), 1, "{case:?}: one RRSIG\n{}", d.raw);
            set[0].clone()
        };
        let first = sig(&w.at.dig(&all));
        // dig takes a new source port each time, and the kernel spreads ports over the
        // workers' sockets: with W workers, 17 questions all reach one worker with a
        // chance of W^-16 (2^-16 on 2 CPUs), so identical ECDSA signatures (random per
        // signing) show the cache is shared, not per worker.
        for _ in 0..16 {
            let d = w.at.dig(&all);
            assert_eq!(sig(&d), first, "{case:?}: another signature\n{}", d.raw);
        }
    }
    let a =
        w.at.dig(&["+dnssec", "+subnet=81.2.69.0/24", "www.example.com", "A"]);
    let b =
        w.at.dig(&["+dnssec", "+subnet=175.16.199.0/24", "www.example.com", "A"]);
    assert_ne!(
        a.answer_data("A"),
        b.answer_data("A"),
        "two subnets, two datacenters:\n{}\n{}",
        a.raw,
        b.raw
    );
    // A name that does not exist is signed per query (its NSEC is the client's choice).
    let nx = |_: ()| {
        w.at.dig(&["+dnssec", "nope.example.com", "A"])
            .authority
            .iter()
            .find(|r| r.rtype == "RRSIG" && r.data.starts_with("NSEC "))
            .map(|r| r.data.clone())
    };
    assert_ne!(nx(()), nx(()));
}
