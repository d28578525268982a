//! Rebuilding a signed zone of 100 000 records after a one-record change: signing every
//! RRset again (`Zone::sign`, what every build did before signatures were kept) against
//! keeping the last build's good signatures (`Zone::sign_reusing`). Both include indexing
//! the zone text, as a build does.
//!
//! `cargo bench --bench resign`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use hickory_proto::rr::Name;
use meridian::zone::dnssec::{Algorithm, ZoneKeys};
use meridian::zone::{parse_zone, Zone, ZoneFile};

const RECORDS: usize = 100_000;
const NOW: u64 = 1_700_000_000;

/// A zone of `RECORDS` A records (one per name), `changed` giving n0 another address.
fn zone_file(serial: u32, changed: bool) -> ZoneFile {
    let mut text = format!("$TTL 300\n@ IN SOA ns1 h {serial} 2 3 4 5\n@ IN NS ns1\n");
    text.push_str("ns1 IN A 192.0.2.1\n");
    for i in 0..RECORDS {
        let last = if changed && i == 0 { 254 } else { i % 250 };
        text.push_str(&format!(
            "n{i} IN A 10.{}.{}.{last}\n",
            i / 65536,
            (i / 256) % 256
        ));
    }
    let origin: Name = "big.example.".parse().expect("name");
    parse_zone(&text, "big.zone", &origin).expect("zone")
}

fn resign(c: &mut Criterion) {
    let keys = ZoneKeys::generate_csk(Algorithm::EcdsaP256Sha256).expect("keys");
    let before = zone_file(1, false);
    let after = zone_file(2, true);
    let mut prev = Zone::build(&before, &[]).expect("build");
    prev.sign(&keys, NOW).expect("sign");

    let mut g = c.benchmark_group("resign_100k");
    g.sample_size(10);
    g.bench_function("one_record_changed_sign_all", |b| {
        b.iter(|| {
            let mut z = Zone::build(&after, &[]).expect("build");
            black_box(z.sign(&keys, NOW + 60).expect("sign"))
        })
    });
    g.bench_function("one_record_changed_keep_good_signatures", |b| {
        b.iter(|| {
            let mut z = Zone::build(&after, &[]).expect("build");
            let stats = z.sign_reusing(&keys, NOW + 60, Some(&prev)).expect("sign");
            assert_eq!(stats.made, 2, "n0's A and the SOA");
            black_box(stats)
        })
    });
    g.bench_function("index_only", |b| {
        b.iter(|| black_box(Zone::build(&after, &[]).expect("build")))
    });
    g.finish();
}

criterion_group!(benches, resign);
criterion_main!(benches);
