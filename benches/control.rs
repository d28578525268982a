//! The write path's cost, without the network and the disk: one command applied to the
//! replicated state (`State::apply`, with its validation), its delta handed to the snapshot
//! builder (`publisher::feed`) and the next snapshot built — with the shipped example
//! alone, and with 10,000 more zones each holding a `geo_nearest` service. A write must
//! cost what it changes: the two sizes should be close.
//!
//! - `patch_weight`: a datacenter's weight (every service keeps its plan and its zone).
//! - `drain`: a datacenter drained, then active again: it costs O(the zones with a service
//!   using it), whose transfers change (their serials move, their journals grow).
//! - `put_service`: one service replaced (re-planned; its zone not re-indexed).
//! - `put_zone`: one small zone's text replaced (that zone re-indexed).
//! - `dns_update/RECORDS`: one RFC 2136 UPDATE (an ACME challenge's TXT replaced) in a zone
//!   of RECORDS records. It costs O(that zone), not O(the change): the zone's text is
//!   rewritten and parsed again, and the zone re-indexed.
//!
//! Run: `cargo bench --bench control`.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use meridian::cluster::state::Delta;
use meridian::cluster::{Command, State};
use meridian::geo::GeoDb;
use meridian::model::{DatacentersFile, DcState, ServicesFile};
use meridian::publisher::feed;
use meridian::snapshot::Builder;

const EXAMPLE_ZONE: &str = include_str!("../zones/example.com.zone");
const DATACENTERS: &str = include_str!("../zones/datacenters.toml");
const SERVICES: &str = include_str!("../zones/services.toml");
const GEOIP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/geoip/GeoIP2-City-Test.mmdb");
const SMALL_ZONE: &str = "$TTL 300\n@ IN SOA ns1 hostmaster 1 7200 3600 1209600 300\n@ IN NS ns1\nns1 IN A 192.0.2.1\nstatic IN A 192.0.2.2\n";

/// The example, plus `extra` zones with a geo service each, applied and built once.
fn world(extra: usize) -> (State, Builder, u64) {
    let mut state = State::default();
    let mut index = 0;
    let mut run = |state: &mut State, cmd: Command| {
        index += 1;
        let (r, _) = state.apply(&cmd, None, 0, index);
        assert!(
            !matches!(r, meridian::cluster::Response::Rejected { .. }),
            "{r:?}"
        );
    };
    let dcs = toml::from_str::<DatacentersFile>(DATACENTERS).expect("dcs");
    let services = toml::from_str::<ServicesFile>(SERVICES).expect("services");
    run(
        &mut state,
        Command::Import {
            zones: vec![("example.com.".into(), EXAMPLE_ZONE.into())],
            datacenters: dcs.datacenter,
            services: services.service.clone(),
            tsig_keys: vec![],
            zone_settings: vec![],
        },
    );
    for i in 0..extra {
        let origin = format!("zone{i}.example.");
        run(
            &mut state,
            Command::PutZone {
                origin: origin.clone(),
                text: SMALL_ZONE.into(),
            },
        );
        let mut svc = services.service[0].clone();
        svc.zone = origin;
        run(&mut state, Command::PutService { service: svc });
    }
    let geo = Arc::new(GeoDb::open(&[GEOIP.into()]).expect("geoip"));
    let mut builder = Builder::new(1, geo);
    feed(&mut builder, &state, &Delta::everything());
    let (_, problems) = builder.snapshot();
    assert!(problems.is_empty(), "{problems:?}");
    (state, builder, index)
}

fn write_path(c: &mut Criterion) {
    let services = toml::from_str::<ServicesFile>(SERVICES).expect("services");
    let mut group = c.benchmark_group("write");
    for extra in [0usize, 10_000] {
        let (state, mut builder, mut index) = world(extra);
        let zones = extra + 1;
        let mut weight = 0u16;
        let mut state_w = state.clone();
        group.bench_function(BenchmarkId::new("patch_weight", zones), |b| {
            b.iter(|| {
                weight = weight % 999 + 1; // 1..=999: a weight of 0 is a drain for `weighted`
                index += 1;
                let cmd = Command::PatchDatacenter {
                    id: "lon".into(),
                    weight: Some(weight),
                    state: None,
                };
                let (_, delta) = state_w.apply(&cmd, None, 0, index);
                feed(&mut builder, &state_w, &delta);
                black_box(builder.snapshot())
            })
        });
        // A drain (and its undrain, turn about): every zone with a service using the site
        // transfers other addresses, so each one's serial moves and its journal grows.
        let mut state_d = state.clone();
        let mut drained = false;
        group.bench_function(BenchmarkId::new("drain", zones), |b| {
            b.iter(|| {
                drained = !drained;
                index += 1;
                let to = if drained {
                    DcState::Drained
                } else {
                    DcState::Active
                };
                let cmd = Command::PatchDatacenter {
                    id: "lon".into(),
                    weight: None,
                    state: Some(to),
                };
                let (_, delta) = state_d.apply(&cmd, None, 0, index);
                feed(&mut builder, &state_d, &delta);
                black_box(builder.snapshot())
            })
        });
        let mut state_s = state.clone();
        let mut ttl = 60;
        group.bench_function(BenchmarkId::new("put_service", zones), |b| {
            b.iter(|| {
                ttl = 60 + (ttl + 1) % 100;
                index += 1;
                let mut svc = services.service[0].clone();
                svc.ttl = ttl;
                let (_, delta) =
                    state_s.apply(&Command::PutService { service: svc }, None, 0, index);
                feed(&mut builder, &state_s, &delta);
                black_box(builder.snapshot())
            })
        });
        let mut state_z = state.clone();
        let mut serial = 1;
        group.bench_function(BenchmarkId::new("put_zone", zones), |b| {
            b.iter(|| {
                serial += 1;
                index += 1;
                let text = SMALL_ZONE.replace("hostmaster 1 ", &format!("hostmaster {serial} "));
                let cmd = Command::PutZone {
                    origin: "small.example.".into(),
                    text,
                };
                let (_, delta) = state_z.apply(&cmd, None, 0, index);
                feed(&mut builder, &state_z, &delta);
                black_box(builder.snapshot())
            })
        });
    }
    group.finish();
}

/// One zone of `records` A records that grants key `acme` updates of its challenge name.
fn update_world(records: usize) -> (State, Builder, u64) {
    use meridian::zoneconf::{NameMatch, UpdateRule, ZoneSettings};
    let mut text = String::from(SMALL_ZONE);
    for i in 0..records {
        text.push_str(&format!("h{i} IN A 192.0.{}.{}\n", (i >> 8) & 255, i & 255));
    }
    let mut state = State::default();
    let settings = ZoneSettings {
        allow_update: vec![UpdateRule {
            key: "acme".into(),
            name: "_acme-challenge.big.example.".into(),
            name_match: NameMatch::Name,
            types: vec!["TXT".into()],
        }],
        ..ZoneSettings::default()
    };
    let cmds = [
        Command::PutTsigKey {
            key: meridian::zoneconf::TsigKey {
                name: "acme".into(),
                algorithm: meridian::zoneconf::TsigAlgorithm::HmacSha256,
                secret: vec![7; 32],
            },
        },
        Command::PutZone {
            origin: "big.example.".into(),
            text,
        },
        Command::PutZoneSettings {
            origin: "big.example.".into(),
            settings,
        },
    ];
    for (i, cmd) in cmds.iter().enumerate() {
        let (r, _) = state.apply(cmd, None, 0, i as u64 + 1);
        assert!(
            !matches!(r, meridian::cluster::Response::Rejected { .. }),
            "{r:?}"
        );
    }
    let geo = Arc::new(GeoDb::open(&[GEOIP.into()]).expect("geoip"));
    let mut builder = Builder::new(1, geo);
    feed(&mut builder, &state, &Delta::everything());
    (state, builder, cmds.len() as u64)
}

/// Replace the challenge TXT with `token-VALUE` (delete the RRset, add one record).
fn acme_update(value: u64) -> Command {
    use hickory_proto::rr::rdata::TXT;
    use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
    use meridian::zone::update::UpdateRr;
    let name = Name::from_ascii("_acme-challenge.big.example.").expect("name");
    let mut delete = Record::update0(name.clone(), 0, RecordType::TXT);
    delete.dns_class = DNSClass::ANY;
    let add = Record::from_rdata(
        name,
        60,
        RData::TXT(TXT::new(vec![format!("token-{value}")])),
    );
    let wire = |r: &Record| UpdateRr::from_record(r).expect("wire");
    Command::DnsUpdate {
        zone: "big.example.".into(),
        key: "acme".into(),
        legacy_actor: "dns-update:acme".into(),
        prereqs: vec![],
        updates: vec![wire(&delete), wire(&add)],
    }
}

fn dns_update(c: &mut Criterion) {
    let mut group = c.benchmark_group("dns_update");
    group.sample_size(10);
    for records in [1_000usize, 100_000] {
        let (mut state, mut builder, mut index) = update_world(records);
        group.bench_function(BenchmarkId::from_parameter(records), |b| {
            b.iter(|| {
                index += 1;
                let (r, delta) = state.apply(&acme_update(index), None, 0, index);
                assert_eq!(r, meridian::cluster::Response::DnsUpdate { rcode: 0 });
                feed(&mut builder, &state, &delta);
                black_box(builder.snapshot())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, write_path, dns_update);
criterion_main!(benches);
