//! The data plane's cost per query, from the shipped example (zone, datacenters, services,
//! GeoIP test database), with the output buffer reused across iterations as the UDP and TCP
//! loops do.
//!
//! - `static_answer`: `answer()` alone, on a pre-parsed request for a static A name.
//! - `static_wire`: a whole query, wire to wire: `parse` + `answer`.
//! - `nxdomain_wire`: the same for a name that does not exist (SOA in authority).
//! - `static_ecs_wire`: the static query with the ECS option a resolver sends (echoed).
//! - `geo_ecs_wire`: the same for a geo-nearest service, picked by an ECS address: next
//!   to `static_ecs_wire`, the cost of the geo decision itself.
//! - `geo_pick_located` / `geo_pick_unlocated`: the decision alone (`policy::pick`), for a
//!   client the database places and for one it does not (the listed order).
//! - `signed/*`: the zone signed (ECDSA P-256), queries with DO: a static name (RRSIGs
//!   made at build time), the geo service and a wildcard name from the shared signature
//!   cache (warm), a wildcard name never asked before (signed now: the uncached cost), and
//!   a name that does not exist (its compact-denial NSEC signed per query).
//!
//! Run: `cargo bench --bench lookup`.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hickory_proto::rr::Name;
use meridian::dns::answer::rcode;
use meridian::dns::{answer, parse, Client, Transport};
use meridian::geo::GeoDb;
use meridian::model::{DatacentersFile, PolicyKind, ServicesFile};
use meridian::policy::{pick, Family};
use meridian::snapshot::{Builder, Inputs, Snapshot};
use meridian::zone::parse_zone;

const EXAMPLE_ZONE: &str = include_str!("../zones/example.com.zone");
const DATACENTERS: &str = include_str!("../zones/datacenters.toml");
const SERVICES: &str = include_str!("../zones/services.toml");
const GEOIP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/geoip/GeoIP2-City-Test.mmdb");

fn snapshot() -> Snapshot {
    snapshot_with(0)
}

/// The example zone and services, plus `extra` generated zones with one geo service each:
/// the cost of a query must not depend on how many there are.
fn snapshot_with(extra: usize) -> Snapshot {
    snapshot_signed(extra, false)
}

fn snapshot_signed(extra: usize, signed: bool) -> Snapshot {
    let origin = Name::from_ascii("example.com.").expect("origin");
    let mut zones = vec![parse_zone(EXAMPLE_ZONE, "example.com.zone", &origin).expect("zone")];
    for i in 0..extra {
        let name = format!("zone{i}.example.");
        let text = "$TTL 300\n@ IN SOA ns1 hostmaster 1 7200 3600 1209600 300\n@ IN NS ns1\nns1 IN A 192.0.2.1\nstatic IN A 192.0.2.2\n";
        let origin = Name::from_ascii(&name).expect("origin");
        zones.push(parse_zone(text, &name, &origin).expect("zone"));
    }
    let datacenters = toml::from_str::<DatacentersFile>(DATACENTERS)
        .expect("datacenters.toml")
        .datacenter;
    let mut services = toml::from_str::<ServicesFile>(SERVICES)
        .expect("services.toml")
        .service;
    for i in 0..extra {
        let mut svc = services[0].clone();
        svc.zone = format!("zone{i}.example.");
        services.push(svc);
    }
    let geo = GeoDb::open(&[PathBuf::from(GEOIP)]).expect("GeoIP test database");
    let mut builder = Builder::new(1, Arc::new(geo));
    if signed {
        let keys = meridian::zone::dnssec::ZoneKeys::generate_csk(
            meridian::zone::dnssec::Algorithm::EcdsaP256Sha256,
        )
        .expect("a key");
        builder.put_dnssec(&origin, Some(Arc::new(keys)));
    }
    builder
        .build(&Inputs {
            zones: &zones,
            datacenters: &datacenters,
            services: &services,
        })
        .unwrap_or_else(|problems| panic!("snapshot: {problems:#?}"))
}

/// A query as a resolver sends it: RD clear, one question, an OPT (1232 bytes) with `options`.
fn query(name: &str, qtype: u16, options: &[u8]) -> Vec<u8> {
    query_do(name, qtype, options, false)
}

/// [`query`] with the DO bit when `dnssec_ok`.
fn query_do(name: &str, qtype: u16, options: &[u8], dnssec_ok: bool) -> Vec<u8> {
    let mut p = vec![0xbe, 0xef, 0x00, 0x00, 0, 1, 0, 0, 0, 0, 0, 1];
    for label in name.split('.') {
        p.push(label.len() as u8);
        p.extend_from_slice(label.as_bytes());
    }
    p.push(0);
    p.extend_from_slice(&qtype.to_be_bytes());
    p.extend_from_slice(&[0, 1]);
    p.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0]);
    p.extend_from_slice(if dnssec_ok { &[0x80, 0] } else { &[0, 0] });
    p.extend_from_slice(&(options.len() as u16).to_be_bytes());
    p.extend_from_slice(options);
    p
}

fn lookup(c: &mut Criterion) {
    let snap = snapshot();
    let client = Client {
        source: IpAddr::V4(Ipv4Addr::new(198, 51, 100, 77)),
        transport: Transport::Udp,
        cookie: meridian::dns::Cookie::None,
    };
    let static_q = query("static.example.com", 1, &[]);
    let nx_q = query("nope.example.com", 1, &[]);
    // ECS 175.16.199.0/24 (CN in the GeoIP test database).
    let ecs = [0, 8, 0, 7, 0, 1, 24, 0, 175, 16, 199];
    let geo_q = query("www.example.com", 1, &ecs);
    let static_ecs_q = query("static.example.com", 1, &ecs);
    let mut out = Vec::with_capacity(u16::MAX as usize);

    // Each case must answer what it claims to, or its figure means nothing.
    for (q, want) in [
        (&static_q, rcode::NOERROR),
        (&static_ecs_q, rcode::NOERROR),
        (&nx_q, rcode::NXDOMAIN),
        (&geo_q, rcode::NOERROR),
    ] {
        let req = parse(q).expect("query parses");
        let outcome = answer(&snap, &req, &client, &mut out);
        assert_eq!(outcome.rcode, u16::from(want), "{req:?}");
        let ancount = u16::from_be_bytes([out[6], out[7]]);
        assert_eq!(
            ancount > 0,
            want == rcode::NOERROR,
            "answer count {ancount}"
        );
    }

    let mut g = c.benchmark_group("lookup");
    g.throughput(Throughput::Elements(1));

    let req = parse(&static_q).expect("query parses");
    g.bench_function("static_answer", |b| {
        b.iter(|| answer(black_box(&snap), black_box(&req), &client, &mut out))
    });
    for (id, q) in [
        ("static_wire", &static_q),
        ("nxdomain_wire", &nx_q),
        ("static_ecs_wire", &static_ecs_q),
        ("geo_ecs_wire", &geo_q),
    ] {
        g.bench_function(id, |b| {
            b.iter(|| {
                let req = parse(black_box(q)).expect("query parses");
                answer(black_box(&snap), &req, &client, &mut out)
            })
        });
    }
    let plan = snap
        .plans
        .iter()
        .flatten()
        .find(|p| p.service.policy == PolicyKind::GeoNearest)
        .expect("a geo_nearest service in the example");
    let mut rng = rand::rng();
    for (id, who) in [
        (
            "geo_pick_located",
            IpAddr::V4(Ipv4Addr::new(175, 16, 199, 1)),
        ),
        (
            "geo_pick_unlocated",
            IpAddr::V4(Ipv4Addr::new(198, 51, 100, 77)),
        ),
    ] {
        g.bench_function(id, |b| {
            b.iter(|| {
                pick(
                    black_box(plan),
                    &snap.dcs,
                    Family::V4,
                    black_box(who),
                    0,
                    &mut rng,
                )
            })
        });
    }
    // What response rate limiting and a DNS cookie add to a query: one bucket look-up, and
    // one SipHash-2-4 to check the cookie a client sent back.
    {
        use meridian::dns::cookie;
        use meridian::dns::rrl::Limiter;
        let req = parse(&static_q).expect("query parses");
        let outcome = answer(&snap, &req, &client, &mut out);
        let mut rrl = Limiter::new(meridian::config::RateLimit {
            responses_per_second: 1_000_000,
            ..Default::default()
        });
        let now = rrl.now();
        g.bench_function("rrl_check", |b| {
            b.iter(|| rrl.check(black_box(client.source), &req, &outcome, now))
        });
        let client_cookie = [1, 2, 3, 4, 5, 6, 7, 8];
        let t = cookie::unix_now();
        let server = cookie::make(&snap.cookies.current, &client_cookie, client.source, t);
        let option = [&[0u8, 10, 0, 24][..], &client_cookie, &server].concat();
        let cookie_q = query("static.example.com", 1, &option);
        let req = parse(&cookie_q).expect("query parses");
        let checked = cookie::check(&snap.cookies, req.edns.as_ref(), client.source, t);
        assert!(checked.valid, "the cookie validates");
        g.bench_function("cookie_check", |b| {
            b.iter(|| {
                cookie::check(
                    &snap.cookies,
                    black_box(req.edns.as_ref()),
                    client.source,
                    t,
                )
            })
        });
    }
    g.finish();

    // The same queries with 10,000 more zones and services in the snapshot.
    let big = snapshot_with(10_000);
    let mut g = c.benchmark_group("lookup_10k_zones");
    g.throughput(Throughput::Elements(1));
    for (id, q) in [
        ("static_wire", &static_q),
        ("nxdomain_wire", &nx_q),
        ("geo_ecs_wire", &geo_q),
    ] {
        g.bench_function(id, |b| {
            b.iter(|| {
                let req = parse(black_box(q)).expect("query parses");
                answer(black_box(&big), &req, &client, &mut out)
            })
        });
    }
    g.finish();
}

/// With DO in a signed zone: what signing costs per query, cached and not.
fn signed(c: &mut Criterion) {
    let snap = snapshot_signed(0, true);
    let client = Client {
        source: IpAddr::V4(Ipv4Addr::new(198, 51, 100, 77)),
        transport: Transport::Udp,
        cookie: meridian::dns::Cookie::None,
    };
    let ecs = [0, 8, 0, 7, 0, 1, 24, 0, 175, 16, 199];
    let static_q = query_do("static.example.com", 1, &[], true);
    let geo_q = query_do("www.example.com", 1, &ecs, true);
    let wild_q = query_do("x.wild.example.com", 1, &[], true);
    // A fresh name per iteration: its 8 hex digits are rewritten in place.
    let mut fresh_q = query_do("n00000000.wild.example.com", 1, &[], true);
    let mut nx_q = query_do("n00000000.example.com", 1, &[], true);
    let mut out = Vec::with_capacity(u16::MAX as usize);
    let rrsigs = |out: &[u8]| {
        // An RRSIG (type 46) follows the answer: count its type bytes after the question.
        out.windows(4).filter(|w| w == &[0, 46, 0, 1]).count()
    };
    for q in [&static_q, &geo_q, &wild_q, &fresh_q, &nx_q] {
        let req = parse(q).expect("query parses");
        let outcome = answer(&snap, &req, &client, &mut out);
        assert_eq!(outcome.rcode, u16::from(rcode::NOERROR), "{req:?}");
        assert!(rrsigs(&out) >= 1, "no RRSIG for {req:?}");
    }
    fn bump(q: &mut [u8], n: u32) {
        // The first label is `n` + 8 hex digits, right after the 12-byte header.
        for (i, d) in format!("{n:08x}").bytes().enumerate() {
            q[14 + i] = d;
        }
    }
    let mut g = c.benchmark_group("signed");
    g.throughput(Throughput::Elements(1));
    for (id, q) in [
        ("static_do_wire", &static_q),
        ("geo_do_cached_wire", &geo_q),
        ("wild_do_cached_wire", &wild_q),
    ] {
        g.bench_function(id, |b| {
            b.iter(|| {
                let req = parse(black_box(q)).expect("query parses");
                answer(black_box(&snap), &req, &client, &mut out)
            })
        });
    }
    let mut n = 0u32;
    g.bench_function("wild_do_uncached_wire", |b| {
        b.iter(|| {
            n = n.wrapping_add(1);
            bump(&mut fresh_q, n);
            let req = parse(black_box(&fresh_q)).expect("query parses");
            answer(black_box(&snap), &req, &client, &mut out)
        })
    });
    g.bench_function("nx_do_wire", |b| {
        b.iter(|| {
            n = n.wrapping_add(1);
            bump(&mut nx_q, n);
            let req = parse(black_box(&nx_q)).expect("query parses");
            answer(black_box(&snap), &req, &client, &mut out)
        })
    });
    g.finish();
}

criterion_group!(benches, lookup, signed);
criterion_main!(benches);
