//! Signature reuse across builds of a signed zone (`Zone::sign_reusing`): what a rebuild
//! signs again and what it keeps.

use hickory_proto::rr::Name;

use super::dnssec::{types, Algorithm, Layout, ZoneKeys};
use super::{parse_zone, rtype, Zone, RENEW_LEFT_SECS};

const T0: u64 = 1_700_000_000;
const DAY: u64 = 24 * 3600;

fn text(serial: u32, www: &str, extra: &str) -> String {
    format!(
        "$TTL 300\n@ IN SOA ns1 h {serial} 2 3 4 5\n@ IN NS ns1\nns1 IN A 192.0.2.1\n\
         www IN A {www}\nmail IN MX 10 ns1\ntxt IN TXT \"hello\"\n*.wild IN A 192.0.2.3\n\
         sub IN NS ns.sub\nns.sub IN A 192.0.2.4\n{extra}"
    )
}

fn build(text: &str) -> Zone {
    let origin: Name = "example.com.".parse().expect("name");
    let file = parse_zone(text, "z.zone", &origin).expect("zone");
    Zone::build(&file, &[]).expect("build")
}

fn keys() -> ZoneKeys {
    ZoneKeys::generate(Algorithm::EcdsaP256Sha256, Layout::KskZsk).expect("keys")
}

fn wire(name: &str) -> Box<[u8]> {
    super::wire_lower(&name.parse::<Name>().expect("name"))
}

/// The RRSIG RDATAs of one RRset, by (owner, type).
type Sigs = ((String, u16), Vec<Vec<u8>>);

/// Every signature the zone holds at the names the test zone has, by (name, type).
fn sigs(z: &Zone) -> Vec<Sigs> {
    let mut out = vec![(("SOA".to_string(), rtype::SOA), own(z.soa().sigs()))];
    for name in [
        "example.com.",
        "ns1.example.com.",
        "www.example.com.",
        "mail.example.com.",
        "txt.example.com.",
        "*.wild.example.com.",
        "wild.example.com.",
        "sub.example.com.",
        "new.example.com.",
    ] {
        let Some(node) = z.node(&wire(name)) else {
            continue;
        };
        for set in node.rrsets() {
            out.push(((name.to_string(), set.rtype()), own(set.sigs())));
        }
        if let Some(n) = node.nsec() {
            out.push(((name.to_string(), types::NSEC), vec![n.sig.to_vec()]));
        }
    }
    out
}

/// A list of byte strings, owned.
fn own(list: super::index::List<'_>) -> Vec<Vec<u8>> {
    list.map(<[u8]>::to_vec).collect()
}

/// The (name, type) whose signatures differ between two builds.
fn changed(a: &Zone, b: &Zone) -> Vec<(String, u16)> {
    let old = sigs(a);
    sigs(b)
        .into_iter()
        .filter(|(k, s)| old.iter().find(|(ok, _)| ok == k).map(|(_, os)| os) != Some(s))
        .map(|(k, _)| k)
        .collect()
}

#[test]
fn a_one_record_change_signs_only_that_rrset_and_the_soa() {
    let keys = keys();
    let mut z1 = build(&text(1, "192.0.2.10", ""));
    let first = z1.sign(&keys, T0).expect("sign");
    assert_eq!(first.kept, 0);
    assert!(first.made > 10, "{first:?}");

    let mut z2 = build(&text(2, "192.0.2.11", ""));
    let stats = z2.sign_reusing(&keys, T0 + 60, Some(&z1)).expect("sign");
    assert_eq!(stats.made, 2, "the www A RRset and the SOA: {stats:?}");
    assert_eq!(stats.made + stats.kept, first.made);
    assert_eq!(
        changed(&z1, &z2),
        [
            ("SOA".to_string(), rtype::SOA),
            ("www.example.com.".to_string(), rtype::A)
        ]
    );

    // A new type at a name: that RRset, the name's NSEC (its bitmap changed) and the SOA.
    let mut z3 = build(&text(3, "192.0.2.11", "www IN TXT \"x\"\n"));
    let stats = z3.sign_reusing(&keys, T0 + 120, Some(&z2)).expect("sign");
    assert_eq!(stats.made, 3, "{stats:?}");
    let mut c = changed(&z2, &z3);
    c.sort();
    assert_eq!(
        c,
        [
            ("SOA".to_string(), rtype::SOA),
            ("www.example.com.".to_string(), 16),
            ("www.example.com.".to_string(), types::NSEC),
        ]
    );

    // The same zone again (the same serial): nothing is signed.
    let mut z4 = build(&text(3, "192.0.2.11", "www IN TXT \"x\"\n"));
    let stats = z4.sign_reusing(&keys, T0 + 180, Some(&z3)).expect("sign");
    assert_eq!(stats.made, 0, "{stats:?}");
    assert!(changed(&z3, &z4).is_empty());
}

#[test]
fn aging_signatures_are_renewed_and_only_they() {
    let keys = keys();
    let mut z1 = build(&text(1, "192.0.2.10", ""));
    let total = z1.sign(&keys, T0).expect("sign").made;
    assert!(!z1.renewal_due(T0 + DAY), "a day old: nothing due");
    let half = u64::from(RENEW_LEFT_SECS);
    assert!(
        z1.renewal_due(T0 + half + 60),
        "half the validity gone: due"
    );

    // Four days on, one record changes: two fresh signatures.
    let mut z2 = build(&text(2, "192.0.2.11", ""));
    z2.sign_reusing(&keys, T0 + 4 * DAY, Some(&z1))
        .expect("sign");
    // Past the renewal point of the first build: everything but those two is made again.
    let now = T0 + half + 600;
    assert!(z2.renewal_due(now));
    let mut z3 = build(&text(2, "192.0.2.11", ""));
    let stats = z3.sign_reusing(&keys, now, Some(&z2)).expect("sign");
    assert_eq!(stats.kept, 2, "the SOA and www A made on day 4: {stats:?}");
    assert_eq!(stats.made, total - 2);
    assert!(!z3.renewal_due(now), "renewed: nothing due any more");
    assert_eq!(
        {
            let mut c = changed(&z2, &z3);
            c.retain(|k| k.0 == "www.example.com." && k.1 == rtype::A || k.0 == "SOA");
            c
        },
        Vec::<(String, u16)>::new(),
        "the young signatures were kept"
    );

    // Everything past the renewal point: everything is signed again.
    let mut z4 = build(&text(2, "192.0.2.11", ""));
    let stats = z4
        .sign_reusing(&keys, T0 + 4 * DAY + half + 60, Some(&z2))
        .expect("sign");
    assert_eq!((stats.made, stats.kept), (total, 0));
}

#[test]
fn a_key_change_signs_everything_again() {
    let keys1 = keys();
    let mut z1 = build(&text(1, "192.0.2.10", ""));
    let total = z1.sign(&keys1, T0).expect("sign").made;

    // Other keys altogether.
    let mut z2 = build(&text(1, "192.0.2.10", ""));
    let stats = z2.sign_reusing(&keys(), T0 + 60, Some(&z1)).expect("sign");
    assert_eq!((stats.made, stats.kept), (total, 0));

    // Only the ZSK replaced (same KSK): every data RRset and the DNSKEY RRset (a new key in
    // it) are signed again; CDS and CDNSKEY (the KSK's, by the KSK) keep theirs.
    let mut keys2 = keys1.clone();
    let zsk = keys2
        .keys
        .iter_mut()
        .find(|k| k.role == super::dnssec::Role::Zsk)
        .expect("zsk");
    let fresh = ZoneKeys::generate(Algorithm::EcdsaP256Sha256, Layout::KskZsk).expect("keys");
    let other = fresh
        .keys
        .into_iter()
        .find(|k| k.role == super::dnssec::Role::Zsk)
        .expect("zsk");
    *zsk = other;
    let mut z3 = build(&text(1, "192.0.2.10", ""));
    let stats = z3.sign_reusing(&keys2, T0 + 60, Some(&z1)).expect("sign");
    assert_eq!((stats.made, stats.kept), (total - 2, 2));
    let apex = z3.node(&wire("example.com.")).expect("apex");
    let old_apex = z1.node(&wire("example.com.")).expect("apex");
    for t in [types::CDS, types::CDNSKEY] {
        assert_eq!(
            apex.get(t).map(|s| own(s.sigs())),
            old_apex.get(t).map(|s| own(s.sigs()))
        );
    }

    // The key with the same tag but another public key is not trusted either.
    let mut keys3 = keys1.clone();
    let tag = keys3.keys[1].tag;
    keys3.keys[1] = {
        let mut k = keys2
            .keys
            .iter()
            .find(|k| k.role == super::dnssec::Role::Zsk)
            .expect("zsk")
            .clone();
        k.tag = tag;
        k.role = keys1.keys[1].role;
        k.flags = keys1.keys[1].flags;
        k
    };
    let mut z4 = build(&text(1, "192.0.2.10", ""));
    let stats = z4.sign_reusing(&keys3, T0 + 60, Some(&z1)).expect("sign");
    assert!(stats.made > 0 && stats.kept < total, "{stats:?}");
}
