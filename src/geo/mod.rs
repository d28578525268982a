//! GeoIP databases (MaxMind DB `.mmdb` files) compiled into sorted range tables; great-circle distance.
//!
//! [`GeoDb::open`] walks each file's search tree once, decodes every distinct record once
//! (MaxMind GeoIP2/GeoLite2 City or Country schema, or the flat DB-IP / ip-location-db schema)
//! and keeps only an IPv4 and an IPv6 table of address ranges → [`Location`]. Lookups are a
//! binary search with no allocation and no locks. [`GeoDb::compile`] maps every range to a key
//! (e.g. the nearest datacenter) into a [`GeoTable`], merging adjacent ranges with equal keys,
//! so its lookups also give the widest ECS scope prefix over which the answer holds.
//!
//! IPv6 addresses that embed an IPv4 address (`::a.b.c.d`, `::ffff:a.b.c.d`, 6to4
//! `2002:AABB:CCDD::`, and any other alias the file's tree has, such as Teredo `2001::/32` in
//! MaxMind files) are answered from the IPv4 table, with the prefix in IPv6 terms.

#![deny(clippy::disallowed_types)]

use std::fmt;
use std::net::IpAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::Instant;

mod mmdb;
mod table;
#[cfg(test)]
mod tests;

pub use table::GeoTable;
use table::{alias, alias_base, lookup_v6, Plain, RangeVec, SplitV6, NONE};

/// A place as the database says: any field may be missing.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Location {
    /// Latitude and longitude in degrees.
    pub coords: Option<(f64, f64)>,
    /// ISO 3166-1 alpha-2 country code, upper case (e.g. `*b"GB"`).
    pub country: Option<[u8; 2]>,
    /// Continent code, upper case (e.g. `*b"EU"`).
    pub continent: Option<[u8; 2]>,
}

/// Why a GeoIP database could not be opened. Every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum GeoError {
    /// `GeoDb::open` was given an empty list.
    #[error("no GeoIP database file given")]
    NoFiles,
    /// The file could not be read (missing, permissions, a directory, ...).
    #[error("cannot read GeoIP database {}: {error}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The file is not a MaxMind DB file, or its metadata is unusable.
    #[error("GeoIP database {} is not a usable MaxMind DB (.mmdb) file: {reason}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The search tree or a data record is corrupt.
    #[error("GeoIP database {} is corrupt: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// No record has a country, continent or coordinates (e.g. an ASN database).
    #[error(
        "GeoIP database {} (type {database_type:?}) has no location data: no record has a country, continent or coordinates",
        path.display()
    )]
    NoLocationData {
        /// The file.
        path: PathBuf,
        /// The metadata `database_type`.
        database_type: String,
    },
}

/// GeoIP data held in memory: immutable once opened, `Send + Sync`.
pub struct GeoDb {
    v4: Plain<u32, u32>,
    v6: SplitV6,
    locations: Vec<Location>,
    build_epoch: u64,
    types: Vec<String>,
}

/// The IPv6 regions that always embed an IPv4 address: `::/96` (IPv4-compatible, where MaxMind
/// trees keep IPv4), `::ffff:0:0/96` (IPv4-mapped) and `2002::/16` (6to4).
fn standard_aliases() -> RangeVec<u128> {
    let mut r = RangeVec::whole(alias(96));
    r.push(1 << 32, NONE);
    r.push(0xffff << 32, alias(96));
    r.push(0x1_0000 << 32, NONE);
    r.push(0x2002 << 112, alias(16));
    r.push(0x2003 << 112, NONE);
    r
}

/// First wins: `top` fills only what `base` left empty.
fn fill_empty(base: u32, top: u32) -> u32 {
    if base == NONE {
        top
    } else {
        base
    }
}

impl GeoDb {
    /// Open one or more `.mmdb` files (e.g. one IPv4 + one IPv6 file). Walks each tree once and
    /// decodes every record it reaches into a compact in-memory table; a file that cannot be
    /// read that way is refused with an error naming the file (never a panic). With several
    /// files, later files fill only what earlier ones left empty.
    ///
    /// `maxminddb`'s `verify()` failing alone is only a warning: it also rejects usable files
    /// (e.g. the ip-location-db ones, for their empty `description`). A file whose records have
    /// no country, continent or coordinates at all is refused.
    pub fn open(paths: &[PathBuf]) -> Result<GeoDb, GeoError> {
        if paths.is_empty() {
            return Err(GeoError::NoFiles);
        }
        let t0 = Instant::now();
        let mut interner = mmdb::Interner::default();
        let mut v4: Option<RangeVec<u32>> = None;
        let mut v6: Option<RangeVec<u128>> = None;
        let (mut build_epoch, mut types) = (0, Vec::new());
        for path in paths {
            let loaded = load_guarded(path, &mut interner)?;
            build_epoch = build_epoch.max(loaded.build_epoch);
            types.push(loaded.database_type);
            v4 = Some(match v4 {
                None => loaded.v4,
                Some(acc) => RangeVec::collect(acc.overlay(&loaded.v4, fill_empty)),
            });
            v6 = match (v6, loaded.v6) {
                (None, new) => new,
                (Some(acc), None) => Some(acc),
                (Some(acc), Some(new)) => Some(RangeVec::collect(acc.overlay(&new, fill_empty))),
            };
        }
        let v4 = v4.unwrap_or_else(|| RangeVec::whole(NONE));
        let v6 = v6.unwrap_or_else(|| RangeVec::whole(NONE));
        let mut db = GeoDb::from_parts(v4, v6, interner.locations);
        db.build_epoch = build_epoch;
        db.types = types;
        tracing::info!(
            files = ?paths,
            types = %db.describe(),
            ipv4_ranges = db.v4.len(),
            ipv6_ranges = db.v6.len(),
            locations = db.locations.len(),
            elapsed_ms = t0.elapsed().as_millis() as u64,
            "GeoIP database loaded"
        );
        Ok(db)
    }

    /// An empty database (no file): every lookup is None.
    pub fn empty() -> GeoDb {
        GeoDb::from_parts(RangeVec::whole(NONE), RangeVec::whole(NONE), Vec::new())
    }

    fn from_parts(v4: RangeVec<u32>, v6: RangeVec<u128>, mut locations: Vec<Location>) -> GeoDb {
        // The standard IPv4-embedding regions override whatever the files say there.
        let standard = standard_aliases();
        let pieces = v6.overlay(&standard, |base, top| {
            if alias_base(top).is_some() {
                top
            } else {
                base
            }
        });
        let v6 = SplitV6::build(pieces, v6.starts.len() + standard.starts.len());
        locations.shrink_to_fit();
        GeoDb {
            v4: Plain::new(v4.starts, v4.vals),
            v6,
            locations,
            build_epoch: 0,
            types: Vec::new(),
        }
    }

    /// Where an address is, and the prefix length (in the address's own family: IPv4 0..=32,
    /// IPv6 0..=128) of the network the answer holds for: the database network, or a wider
    /// aligned block where adjacent networks have the same location. Also given when not
    /// found: then it is the prefix of the empty network, usable as the ECS scope of an
    /// "unknown" answer. No decoding happens here: this is a binary search in the tables.
    #[inline]
    pub fn locate(&self, ip: IpAddr) -> (Option<Location>, u8) {
        let (code, prefix) = match ip {
            IpAddr::V4(a) => self.v4.get(u32::from(a)),
            IpAddr::V6(a) => lookup_v6(&self.v4, &self.v6, u128::from(a)),
        };
        (self.locations.get(code as usize).copied(), prefix)
    }

    /// Compile a table mapping every network to a key computed once per distinct record: `f` is
    /// called once per distinct [`Location`], and once with `None` for "not in database".
    /// Adjacent ranges with equal keys are merged.
    pub fn compile<K: Copy + Eq>(&self, mut f: impl FnMut(Option<&Location>) -> K) -> GeoTable<K> {
        let none = f(None);
        let keys: Vec<K> = self.locations.iter().map(|l| f(Some(l))).collect();
        GeoTable::build(&self.v4, &self.v6, |code| {
            keys.get(code as usize).copied().unwrap_or(none)
        })
    }

    /// Whether any record has coordinates. A Country edition has none: `geo_nearest` then
    /// has no distances to go by (only its country/continent overrides).
    pub fn has_coordinates(&self) -> bool {
        self.locations.iter().any(|l| l.coords.is_some())
    }

    /// The metadata `build_epoch` (seconds since 1970) of the newest file; 0 when empty.
    pub fn build_epoch(&self) -> u64 {
        self.build_epoch
    }

    /// A short description: the `database_type` of each file, e.g. `"GeoIP2-City"` or
    /// `"city ipv4 + city ipv6"`; `"none"` when empty.
    pub fn describe(&self) -> String {
        if self.types.is_empty() {
            "none".to_string()
        } else {
            self.types.join(" + ")
        }
    }
}

impl fmt::Debug for GeoDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeoDb")
            .field("types", &self.types)
            .field("build_epoch", &self.build_epoch)
            .field("ipv4_ranges", &self.v4.len())
            .field("ipv6_ranges", &self.v6.len())
            .field("ipv6_table_bytes", &self.v6.heap_bytes())
            .field("locations", &self.locations.len())
            .finish()
    }
}

/// Load one file. `maxminddb` returned errors, not panics, on every corrupt test file; the
/// `catch_unwind` is only a last defence against a panic (in the crate or here) on some other
/// input. It needs `panic = "unwind"` (the default).
fn load_guarded(path: &Path, interner: &mut mmdb::Interner) -> Result<mmdb::Loaded, GeoError> {
    catch_unwind(AssertUnwindSafe(|| mmdb::load(path, interner))).unwrap_or_else(|_| {
        Err(GeoError::Corrupt {
            path: path.to_path_buf(),
            reason: "internal error (panic) while reading this file".to_string(),
        })
    })
}

/// Mean earth radius (IUGG), km.
const EARTH_RADIUS_KM: f64 = 6371.0088;

/// Great-circle (haversine) distance in km between two (lat, lon) points in degrees.
pub fn distance_km(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (lat1, lat2) = (a.0.to_radians(), b.0.to_radians());
    let dlat = lat2 - lat1;
    let dlon = (b.1 - a.1).to_radians();
    let h = (dlat / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * (dlon / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_KM * h.clamp(0.0, 1.0).sqrt().asin()
}
