//! Arbitrary bytes → `parse` → `answer`, over UDP and TCP, from a snapshot with no zones and
//! from one with zones (the shipped example zone plus a generated one whose answers do not
//! fit in a UDP reply: big RRsets, many glue records, a long CNAME chain, long names).
//!
//! Every reply must: be at least a header, echo the ID, have QR set, stay within the UDP
//! limit (the client's EDNS size clamped to 512..=1232, 512 without OPT), carry an OPT
//! exactly when the query had one, and decode as a whole DNS message with hickory-proto,
//! with the same RCODE, TC flag and length that `answer` reported.

#![no_main]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, LazyLock};

use hickory_proto::op::{Message, MessageType};
use hickory_proto::rr::Name;
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
use libfuzzer_sys::fuzz_target;
use meridian::dns::answer::{MAX_UDP_PAYLOAD, MIN_UDP_PAYLOAD};
use meridian::dns::request::Request;
use meridian::dns::{answer, parse, Client, Transport};
use meridian::snapshot::Snapshot;
use meridian::zone::{parse_zone, Zone, ZoneSet};

const EXAMPLE_ZONE: &str = include_str!("../../zones/example.com.zone");

/// A zone whose answers overflow UDP replies, to exercise truncation.
fn big_zone() -> String {
    let mut z = String::from(
        "$TTL 60\n\
         @ IN SOA ns1.big.test. hostmaster.big.test. 1 7200 3600 1209600 60\n\
         @ IN NS ns1.big.test.\n\
         @ IN NS ns2.big.test.\n\
         ns1 IN A 10.0.0.1\n\
         ns2 IN AAAA 2001:db8::2\n",
    );
    for i in 0..200 {
        z.push_str(&format!("many IN A 10.1.{}.{}\n", i / 250, i % 250 + 1));
        z.push_str(&format!("many IN AAAA 2001:db8:1::{i:x}\n"));
    }
    let long = "x".repeat(200);
    for i in 0..12 {
        z.push_str(&format!("txt IN TXT \"{i} {long}\"\n"));
    }
    // A delegation whose glue does not fit (RFC 9471: TC).
    for i in 0..60 {
        z.push_str(&format!("deleg IN NS ns{i}.deleg.big.test.\n"));
        z.push_str(&format!("ns{i}.deleg IN A 10.2.0.{}\n", i + 1));
        z.push_str(&format!("ns{i}.deleg IN AAAA 2001:db8:2::{i:x}\n"));
    }
    // MX and SRV targets with more addresses than fit (left out silently).
    for i in 0..60 {
        z.push_str(&format!("@ IN MX {i} mx{i}.big.test.\n"));
        z.push_str(&format!("mx{i} IN A 10.3.0.{}\n", i + 1));
        z.push_str(&format!("_svc._tcp IN SRV {i} 1 443 mx{i}.big.test.\n"));
    }
    // A CNAME chain longer than the server follows, ending in a big RRset.
    for i in 0..12 {
        z.push_str(&format!("c{i} IN CNAME c{}\n", i + 1));
    }
    z.push_str("c12 IN CNAME many\n");
    z.push_str("loop1 IN CNAME loop2\nloop2 IN CNAME loop1\n");
    z.push_str("out IN CNAME www.example.com.\n");
    z.push_str("*.w IN CNAME many\n*.t IN TXT \"wild\"\n");
    // Names near the 255-byte limit.
    let l63 = "a".repeat(63);
    z.push_str(&format!("{l63}.{l63}.{l63}.{} IN A 10.4.0.1\n", "b".repeat(50)));
    z.push_str(&format!("*.{l63}.{l63}.{l63} IN A 10.4.0.2\n"));
    z
}

fn snapshot(zones: &[(&str, &str)]) -> Snapshot {
    let mut snap = Snapshot::empty(0x4d45_5249_4449_414e);
    let built = zones.iter().map(|(origin, text)| {
        let name = Name::from_ascii(origin).expect("origin");
        let file = parse_zone(text, &format!("{origin}zone"), &name).expect("zone parses");
        Zone::build(&file).expect("zone builds")
    });
    snap.zones = Arc::new(ZoneSet::new(built));
    snap
}

static EMPTY: LazyLock<Snapshot> = LazyLock::new(|| Snapshot::empty(1));
static FULL: LazyLock<Snapshot> = LazyLock::new(|| {
    let big = big_zone();
    snapshot(&[("example.com.", EXAMPLE_ZONE), ("big.test.", &big)])
});

fn check(snap: &Snapshot, req: &Request<'_>, transport: Transport, out: &mut Vec<u8>) {
    let client = Client {
        source: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 99)),
        transport,
    };
    let outcome = answer(snap, req, &client, out);
    assert_eq!(outcome.len, out.len(), "Outcome.len is the reply's length");
    assert!(out.len() >= 12, "reply shorter than a header: {out:02x?}");
    assert_eq!(u16::from_be_bytes([out[0], out[1]]), req.id, "ID not echoed");
    assert!(out[2] & 0x80 != 0, "QR not set");
    if transport == Transport::Udp {
        let limit = match req.edns {
            None => MIN_UDP_PAYLOAD,
            Some(e) => e.udp_size.clamp(MIN_UDP_PAYLOAD, MAX_UDP_PAYLOAD),
        } as usize;
        assert!(out.len() <= MAX_UDP_PAYLOAD as usize, "UDP reply over 1232: {}", out.len());
        assert!(
            req.edns.is_some() || out.len() <= MIN_UDP_PAYLOAD as usize,
            "UDP reply without OPT over 512: {}",
            out.len()
        );
        assert!(out.len() <= limit, "UDP reply {} over the client's {limit}", out.len());
    } else {
        assert!(!outcome.truncated, "TC over TCP");
    }

    let mut decoder = BinDecoder::new(out);
    let msg = match Message::read(&mut decoder) {
        Ok(m) => m,
        Err(e) => panic!("reply does not decode: {e}\nrequest: {req:?}\nreply: {out:02x?}"),
    };
    assert!(decoder.is_empty(), "{} bytes after the message: {out:02x?}", decoder.len());
    assert_eq!(msg.metadata.id, req.id);
    assert_eq!(msg.metadata.message_type, MessageType::Response);
    assert_eq!(
        msg.edns.is_some(),
        req.edns.is_some(),
        "OPT in the reply iff in the query: {req:?}"
    );
    assert_eq!(u16::from(msg.metadata.response_code), outcome.rcode, "RCODE");
    assert_eq!(msg.metadata.truncation, outcome.truncated, "TC flag");
    if req.question.is_some() {
        assert_eq!(msg.queries.len(), 1, "question not echoed");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(req) = parse(data) else {
        return;
    };
    let mut out = Vec::with_capacity(u16::MAX as usize);
    for snap in [&*EMPTY, &*FULL] {
        for transport in [Transport::Udp, Transport::Tcp] {
            check(snap, &req, transport, &mut out);
        }
    }
});
