//! Arbitrary bytes → `parse` → `answer`, over UDP and TCP, from a snapshot with no zones and
//! from a full one: the shipped example (zone, datacenters, geo services, the GeoIP test
//! database, so that ECS changes answers and their scope) plus a generated zone whose answers
//! do not fit in a UDP reply (big RRsets and services, many glue records, a long CNAME chain,
//! names near 255 bytes).
//!
//! Every reply must: be at least a header, echo the ID, have QR set, stay within the UDP
//! limit (the client's EDNS size clamped to 512..=1232, 512 without OPT), carry an OPT
//! exactly when the query had one, and decode as a whole DNS message with hickory-proto,
//! with the same RCODE, TC flag and length that `answer` reported.

#![no_main]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::sync::{Arc, LazyLock};

use hickory_proto::op::{Message, MessageType};
use hickory_proto::rr::Name;
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
use libfuzzer_sys::fuzz_target;
use meridian::dns::answer::{MAX_UDP_PAYLOAD, MIN_UDP_PAYLOAD};
use meridian::dns::request::Request;
use meridian::dns::{answer, parse, Client, Transport};
use meridian::geo::GeoDb;
use meridian::model::{
    Coordinates, Datacenter, DatacentersFile, DcState, Health, OnAllDown, PolicyKind, Service,
    ServicesFile,
};
use meridian::snapshot::{Builder, Inputs, Snapshot};
use meridian::zone::parse_zone;

const EXAMPLE_ZONE: &str = include_str!("../../zones/example.com.zone");
const DATACENTERS: &str = include_str!("../../zones/datacenters.toml");
const SERVICES: &str = include_str!("../../zones/services.toml");
const GEOIP: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../geoip/GeoIP2-City-Test.mmdb"
);

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
    z.push_str("tosvc IN CNAME bulk\ntogeo IN CNAME geo\n*.g IN CNAME geo\n");
    // Names near the 255-byte limit.
    let l63 = "a".repeat(63);
    z.push_str(&format!(
        "{l63}.{l63}.{l63}.{} IN A 10.4.0.1\n",
        "b".repeat(50)
    ));
    z.push_str(&format!("*.{l63}.{l63}.{l63} IN A 10.4.0.2\n"));
    z
}

/// Datacenters with many addresses each, so that a service's answer overflows UDP.
fn bulk_datacenters() -> Vec<Datacenter> {
    (0..3u8)
        .map(|d| Datacenter {
            id: format!("bulk{d}"),
            location: Coordinates {
                lat: -40.0 + 40.0 * f64::from(d),
                lon: 120.0 - 100.0 * f64::from(d),
            },
            addresses: (0..40u16)
                .flat_map(|i| {
                    [
                        IpAddr::V4(Ipv4Addr::new(10, 9, d, i as u8 + 1)),
                        IpAddr::V6(Ipv6Addr::new(
                            0x2001,
                            0xdb8,
                            9,
                            u16::from(d),
                            0,
                            0,
                            0,
                            i + 1,
                        )),
                    ]
                })
                .collect(),
            weight: 100,
            state: DcState::Active,
            health: Health::Healthy,
            health_check: None,
        })
        .collect()
}

fn big_services() -> Vec<Service> {
    let svc = |name: &str, policy, dcs: &[&str], answers| Service {
        zone: "big.test".into(),
        name: name.into(),
        policy,
        datacenters: dcs.iter().map(|d| d.to_string()).collect(),
        ttl: 30,
        answers,
        overrides: BTreeMap::new(),
        on_all_down: OnAllDown::All,
    };
    let mut geo = svc(
        "geo",
        PolicyKind::GeoNearest,
        &["lon", "iad", "sin", "bulk0"],
        Some(3),
    );
    geo.overrides
        .insert("country:GB".into(), vec!["bulk1".into(), "lon".into()]);
    geo.overrides
        .insert("continent:AS".into(), vec!["bulk2".into()]);
    vec![
        svc(
            "bulk",
            PolicyKind::RoundRobin,
            &["bulk0", "bulk1", "bulk2"],
            None,
        ),
        svc(
            "wbulk",
            PolicyKind::Weighted,
            &["bulk0", "bulk1", "sin"],
            Some(2),
        ),
        geo,
        svc("@", PolicyKind::GeoNearest, &["lon", "iad", "sin"], None),
    ]
}

/// The shipped example (zone, datacenters, services, GeoIP test database) plus `big.test`.
fn full_snapshot() -> Snapshot {
    let example = Name::from_ascii("example.com.").expect("origin");
    let big = Name::from_ascii("big.test.").expect("origin");
    let zones = [
        parse_zone(EXAMPLE_ZONE, "example.com.zone", &example).expect("example zone"),
        parse_zone(&big_zone(), "big.test.zone", &big).expect("big zone"),
    ];
    let mut datacenters = toml::from_str::<DatacentersFile>(DATACENTERS)
        .expect("datacenters.toml")
        .datacenter;
    datacenters.extend(bulk_datacenters());
    let mut services = toml::from_str::<ServicesFile>(SERVICES)
        .expect("services.toml")
        .service;
    services.extend(big_services());
    let geo = GeoDb::open(&[PathBuf::from(GEOIP)]).expect("GeoIP test database");
    Builder::new(7, Arc::new(geo))
        .build(&Inputs {
            zones: &zones,
            datacenters: &datacenters,
            services: &services,
        })
        .unwrap_or_else(|problems| panic!("snapshot: {problems:#?}"))
}

static EMPTY: LazyLock<Snapshot> = LazyLock::new(|| Snapshot::empty(1));
static FULL: LazyLock<Snapshot> = LazyLock::new(full_snapshot);

fn check(snap: &Snapshot, req: &Request<'_>, transport: Transport, out: &mut Vec<u8>) {
    let source = IpAddr::V4(Ipv4Addr::new(81, 2, 69, 142));
    let client = Client {
        source,
        transport,
        // Cookies on, as a node runs by default: the COOKIE option is read and answered.
        cookie: meridian::dns::cookie::check(&snap.cookies, req.edns.as_ref(), source, 1_700_000_000)
            .reply,
    };
    let outcome = answer(snap, req, &client, out);
    assert_eq!(outcome.len, out.len(), "Outcome.len is the reply's length");
    assert!(out.len() >= 12, "reply shorter than a header: {out:02x?}");
    assert_eq!(
        u16::from_be_bytes([out[0], out[1]]),
        req.id,
        "ID not echoed"
    );
    assert!(out[2] & 0x80 != 0, "QR not set");
    if transport == Transport::Udp {
        let limit = match req.edns {
            None => MIN_UDP_PAYLOAD,
            Some(e) => e.udp_size.clamp(MIN_UDP_PAYLOAD, MAX_UDP_PAYLOAD),
        } as usize;
        assert!(
            out.len() <= MAX_UDP_PAYLOAD as usize,
            "UDP reply over 1232: {}",
            out.len()
        );
        assert!(
            req.edns.is_some() || out.len() <= MIN_UDP_PAYLOAD as usize,
            "UDP reply without OPT over 512: {}",
            out.len()
        );
        assert!(
            out.len() <= limit,
            "UDP reply {} over the client's {limit}",
            out.len()
        );
    } else {
        assert!(!outcome.truncated, "TC over TCP");
    }

    let mut decoder = BinDecoder::new(out);
    let msg = match Message::read(&mut decoder) {
        Ok(m) => m,
        Err(e) => panic!("reply does not decode: {e}\nrequest: {req:?}\nreply: {out:02x?}"),
    };
    assert!(
        decoder.is_empty(),
        "{} bytes after the message: {out:02x?}",
        decoder.len()
    );
    assert_eq!(msg.metadata.id, req.id);
    assert_eq!(msg.metadata.message_type, MessageType::Response);
    assert_eq!(
        msg.edns.is_some(),
        req.edns.is_some(),
        "OPT in the reply iff in the query: {req:?}"
    );
    assert_eq!(
        u16::from(msg.metadata.response_code),
        outcome.rcode,
        "RCODE"
    );
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
