//! Reading one `.mmdb` file: walk its search tree once, decode each distinct record once, and
//! produce IPv4 / IPv6 partitions of value codes (see [`super::table`]).

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use ipnetwork::IpNetwork;
use maxminddb::{LookupResult, MaxMindDbError, Reader, WithinOptions};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::table::{alias, cidr_blocks, RangeVec, MAX_LOCATIONS, NONE};
use super::{GeoError, Location};

/// What one file contributes.
pub(super) struct Loaded {
    pub(super) v4: RangeVec<u32>,
    /// `None` for an IPv4-only tree.
    pub(super) v6: Option<RangeVec<u128>>,
    pub(super) build_epoch: u64,
    pub(super) database_type: String,
}

/// A fast hasher for trusted keys made of integers (data offsets, location bits): the keys
/// come from a local file, so hash flooding is not a concern, and SipHash was a tenth of the
/// load time on DB-IP City Lite.
#[derive(Default)]
struct FastHasher(u64);

impl Hasher for FastHasher {
    fn finish(&self) -> u64 {
        // Fold the high half in: hashbrown takes bucket bits from the low end.
        let m = u128::from(self.0) * 0x9E37_79B9_7F4A_7C15;
        (m >> 64) as u64 ^ m as u64
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u8(&mut self, n: u8) {
        self.write_u64(u64::from(n));
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(23) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

/// Distinct locations across all files, each stored once.
#[derive(Default)]
pub(super) struct Interner {
    pub(super) locations: Vec<Location>,
    index: FastMap<LocKey, u32>,
}

type LocKey = (Option<(u64, u64)>, Option<[u8; 2]>, Option<[u8; 2]>);

impl Interner {
    fn intern(&mut self, loc: Location) -> Option<u32> {
        let key = (
            loc.coords.map(|(a, b)| (a.to_bits(), b.to_bits())),
            loc.country,
            loc.continent,
        );
        if let Some(&i) = self.index.get(&key) {
            return Some(i);
        }
        let i = u32::try_from(self.locations.len())
            .ok()
            .filter(|&i| i < MAX_LOCATIONS)?;
        self.locations.push(loc);
        self.index.insert(key, i);
        Some(i)
    }
}

/// How to fill the holes the crate's network iterator leaves in an IPv6 tree.
///
/// `Reader::networks` skips every subtree whose node is the IPv4 start node (the node reached
/// after 96 zero bits) unless it is in `::/96`: with an IPv4 subtree those are the IPv4 aliases
/// (`::ffff:0:0/96`, `2001::/32`, `2002::/16` in MaxMind files); without one, the "start node"
/// is a leaf, and every other leaf with the same data (or every other empty leaf) is skipped.
#[derive(Clone, Copy)]
enum Holes {
    Alias,
    Value(u32),
}

struct Walk<'p, 'i> {
    path: &'p Path,
    interner: &'i mut Interner,
    /// data offset → value code, for this file.
    offsets: FastMap<usize, u32>,
    last: Option<(usize, u32)>,
    /// Distinct records with at least one usable field.
    located: usize,
    v4: RangeVec<u32>,
    v6: RangeVec<u128>,
    /// Next address expected (None once the end of the space was reached).
    next4: Option<u32>,
    next6: Option<u128>,
    holes: Holes,
}

pub(super) fn load(path: &Path, interner: &mut Interner) -> Result<Loaded, GeoError> {
    let reader = Reader::open_readfile(path).map_err(|e| match e {
        MaxMindDbError::Io(error) => GeoError::Io {
            path: path.to_path_buf(),
            error,
        },
        other => GeoError::Invalid {
            path: path.to_path_buf(),
            reason: other.to_string(),
        },
    })?;
    let meta = reader.metadata();
    if let Err(e) = reader.verify() {
        tracing::warn!(
            path = %path.display(),
            error = %e,
            "GeoIP database fails maxminddb verification; loading it anyway"
        );
    }
    let v6_tree = meta.ip_version == 6;
    let mut walk = Walk {
        path,
        interner,
        offsets: FastMap::default(),
        last: None,
        located: 0,
        v4: RangeVec::default(),
        v6: RangeVec::default(),
        next4: Some(0),
        next6: Some(0),
        holes: Holes::Value(NONE),
    };
    if v6_tree {
        // Does the tree have an IPv4 subtree at ::/96? Then an IPv4 lookup reports an IPv4
        // network; otherwise the IPv6 network (a leaf above ::/96) that holds all of IPv4.
        let l = reader
            .lookup(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
            .map_err(|e| walk.corrupt(e))?;
        walk.holes = match l.network() {
            Ok(IpNetwork::V4(_)) => Holes::Alias,
            _ => Holes::Value(walk.value(&l)?),
        };
    }
    // A tree of n nodes has at most n + 1 leaves; a bound stops a crafted tree that shares
    // nodes from making the walk exponential (the crate's own verify() uses 3n).
    let max_networks = (meta.node_count as usize)
        .saturating_mul(2)
        .saturating_add(2);
    let networks = reader
        .networks(WithinOptions::default().include_networks_without_data())
        .map_err(|e| walk.corrupt(e))?;
    for (n, item) in networks.enumerate() {
        if n >= max_networks {
            return Err(walk.malformed(format!(
                "the search tree yields more than {max_networks} networks for {} nodes (cyclic or corrupt tree)",
                meta.node_count
            )));
        }
        let l = item.map_err(|e| walk.corrupt(e))?;
        let val = walk.value(&l)?;
        match l.network().map_err(|e| walk.corrupt(e))? {
            IpNetwork::V4(net) => {
                let (s, e) = (u32::from(net.network()), u32::from(net.broadcast()));
                walk.push4(s, e, val)?;
                if v6_tree {
                    // The IPv4 subtree at ::/96: IPv6 addresses there embed the IPv4 address.
                    walk.push6(u128::from(s), u128::from(e), alias(96))?;
                }
            }
            IpNetwork::V6(net) => {
                if !v6_tree {
                    return Err(walk.malformed("an IPv4-only tree yielded an IPv6 network".into()));
                }
                let s = u128::from(net.network());
                let p = net.prefix();
                let e = s | u128::MAX.checked_shr(u32::from(p)).unwrap_or(0);
                if s == 0 && p <= 96 {
                    // No IPv4 subtree: IPv4 lookups land on this network.
                    walk.push4(0, u32::MAX, val)?;
                }
                walk.push6(s, e, val)?;
            }
        }
    }
    if let Some(s) = walk.next4 {
        walk.v4.push(s, NONE);
    }
    if v6_tree {
        if let Some(s) = walk.next6 {
            walk.fill6(s, u128::MAX);
        }
    }
    if walk.located == 0 {
        return Err(GeoError::NoLocationData {
            path: path.to_path_buf(),
            database_type: meta.database_type.clone(),
        });
    }
    let Walk { mut v4, mut v6, .. } = walk;
    v4.shrink();
    v6.shrink();
    Ok(Loaded {
        v4,
        v6: v6_tree.then_some(v6),
        build_epoch: meta.build_epoch,
        database_type: meta.database_type.clone(),
    })
}

impl Walk<'_, '_> {
    fn corrupt(&self, e: MaxMindDbError) -> GeoError {
        GeoError::Corrupt {
            path: self.path.to_path_buf(),
            reason: e.to_string(),
        }
    }

    fn malformed(&self, reason: String) -> GeoError {
        GeoError::Corrupt {
            path: self.path.to_path_buf(),
            reason,
        }
    }

    /// The value code of a network: its location index (decoding the record the first time its
    /// data offset is seen), or NONE.
    fn value(&mut self, l: &LookupResult<'_, Vec<u8>>) -> Result<u32, GeoError> {
        let Some(offset) = l.offset() else {
            return Ok(NONE);
        };
        match self.last {
            Some((o, v)) if o == offset => return Ok(v),
            _ => {}
        }
        let v = match self.offsets.get(&offset) {
            Some(&v) => v,
            None => {
                let rec = l
                    .decode::<RawRecord<'_>>()
                    .map_err(|e| self.corrupt(e))?
                    .unwrap_or_default();
                let loc = rec.location();
                if loc.coords.is_some() || loc.country.is_some() || loc.continent.is_some() {
                    self.located += 1;
                }
                let v = self
                    .interner
                    .intern(loc)
                    .ok_or_else(|| self.malformed("too many distinct locations".into()))?;
                self.offsets.insert(offset, v);
                v
            }
        };
        self.last = Some((offset, v));
        Ok(v)
    }

    fn push4(&mut self, s: u32, e: u32, val: u32) -> Result<(), GeoError> {
        match self.next4 {
            Some(next) if s >= next => {
                if s > next {
                    self.v4.push(next, NONE);
                }
                self.v4.push(s, val);
                self.next4 = e.checked_add(1);
                Ok(())
            }
            _ => Err(self.malformed(format!(
                "IPv4 network {}/{} overlaps or is out of order",
                Ipv4Addr::from(s),
                32 - (e - s).count_ones()
            ))),
        }
    }

    fn push6(&mut self, s: u128, e: u128, val: u32) -> Result<(), GeoError> {
        match self.next6 {
            Some(next) if s >= next => {
                if s > next {
                    self.fill6(next, s - 1);
                }
                self.v6.push(s, val);
                self.next6 = e.checked_add(1);
                Ok(())
            }
            _ => Err(self.malformed(format!(
                "IPv6 network {}/{} overlaps or is out of order",
                std::net::Ipv6Addr::from(s),
                128 - (e - s).count_ones()
            ))),
        }
    }

    /// Fill a hole the iterator skipped (see [`Holes`]).
    fn fill6(&mut self, s: u128, e: u128) {
        match self.holes {
            Holes::Value(v) => self.v6.push(s, v),
            Holes::Alias => {
                for (start, prefix) in cidr_blocks(s, e) {
                    let v = if prefix <= 96 { alias(prefix) } else { NONE };
                    self.v6.push(start, v);
                }
            }
        }
    }
}

/// The fields of a record that matter here, from either schema:
/// MaxMind (`country.iso_code`, `continent.code`, `location.latitude/longitude`) or flat
/// (`country_code`, `continent_code` or `continent`, `latitude`, `longitude`).
/// Fields of an unexpected type are ignored; malformed data is an error.
#[derive(Default)]
struct RawRecord<'a> {
    country: Option<&'a str>,
    continent: Option<&'a str>,
    lat: Option<f64>,
    lon: Option<f64>,
}

impl RawRecord<'_> {
    fn location(&self) -> Location {
        let coords = match (self.lat, self.lon) {
            (Some(lat), Some(lon))
                if lat.is_finite()
                    && lon.is_finite()
                    && (-90.0..=90.0).contains(&lat)
                    && (-180.0..=180.0).contains(&lon) =>
            {
                // + 0.0 turns -0.0 into 0.0, so equal places intern as one.
                Some((lat + 0.0, lon + 0.0))
            }
            _ => None,
        };
        Location {
            coords,
            country: code2(self.country),
            continent: code2(self.continent),
        }
    }
}

/// A two-letter code, upper-cased; anything else is None.
fn code2(s: Option<&str>) -> Option<[u8; 2]> {
    match s?.as_bytes() {
        &[a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
            Some([a.to_ascii_uppercase(), b.to_ascii_uppercase()])
        }
        _ => None,
    }
}

/// Where in a record a value sits, which decides what is read from it.
#[derive(Clone, Copy)]
enum Ctx {
    /// The record itself.
    Top,
    /// `country` / `continent`: a map with `iso_code` / `code`, or a plain string.
    Place,
    /// `location`: a map with `latitude` and `longitude`.
    Location,
    /// A leaf: a string or a number.
    Leaf,
}

/// What a value yielded, depending on its context.
#[derive(Default)]
struct Node<'a> {
    text: Option<&'a str>,
    num: Option<f64>,
    rec: RawRecord<'a>,
}

impl Node<'_> {
    fn number(&self) -> Option<f64> {
        self.num
            .or_else(|| self.text.and_then(|t| t.trim().parse().ok()))
    }
}

impl<'de> de::Deserialize<'de> for RawRecord<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Ctx::Top.deserialize(d)?.rec)
    }
}

impl<'de> DeserializeSeed<'de> for Ctx {
    type Value = Node<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Node<'de>, D::Error> {
        // deserialize_any: maxminddb's deserialize_f64 refuses a `float` (f32) field, which the
        // flat DB-IP / ip-location-db files use for coordinates.
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Ctx {
    type Value = Node<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a MaxMind DB value")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Node<'de>, E> {
        Ok(Node {
            text: Some(v),
            ..Node::default()
        })
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Node<'de>, E> {
        Ok(Node::default())
    }
    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Node<'de>, E> {
        Ok(Node::default())
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Node<'de>, E> {
        Ok(Node::default())
    }
    fn visit_unit<E: de::Error>(self) -> Result<Node<'de>, E> {
        Ok(Node::default())
    }
    fn visit_none<E: de::Error>(self) -> Result<Node<'de>, E> {
        Ok(Node::default())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node<'de>, E> {
        Ok(Node {
            num: Some(v),
            ..Node::default()
        })
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node<'de>, E> {
        self.visit_f64(v as f64)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node<'de>, E> {
        self.visit_f64(v as f64)
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Node<'de>, E> {
        self.visit_f64(v as f64)
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Node<'de>, E> {
        self.visit_f64(v as f64)
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Node<'de>, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node<'de>, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node<'de>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Node::default())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node<'de>, A::Error> {
        let mut out = Node::default();
        let (mut loc_lat, mut loc_lon, mut flat_lat, mut flat_lon) = (None, None, None, None);
        let (mut country, mut country_code, mut continent, mut continent_code) =
            (None, None, None, None);
        while let Some(key) = map.next_key::<&'de str>()? {
            match (self, key) {
                (Ctx::Top, "country") => country = map.next_value_seed(Ctx::Place)?.text,
                (Ctx::Top, "country_code") => country_code = map.next_value_seed(Ctx::Leaf)?.text,
                (Ctx::Top, "continent") => continent = map.next_value_seed(Ctx::Place)?.text,
                (Ctx::Top, "continent_code") => {
                    continent_code = map.next_value_seed(Ctx::Leaf)?.text
                }
                (Ctx::Top, "location") => {
                    let n = map.next_value_seed(Ctx::Location)?;
                    (loc_lat, loc_lon) = (n.rec.lat, n.rec.lon);
                }
                (Ctx::Top | Ctx::Location, "latitude") => {
                    flat_lat = map.next_value_seed(Ctx::Leaf)?.number()
                }
                (Ctx::Top | Ctx::Location, "longitude") => {
                    flat_lon = map.next_value_seed(Ctx::Leaf)?.number()
                }
                (Ctx::Place, "iso_code" | "code") => {
                    out.text = map.next_value_seed(Ctx::Leaf)?.text
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        // Prefer the MaxMind nested fields; take a coordinate pair from one place only.
        out.rec = RawRecord {
            country: country.or(country_code),
            continent: continent.or(continent_code),
            lat: if loc_lat.is_some() { loc_lat } else { flat_lat },
            lon: if loc_lat.is_some() { loc_lon } else { flat_lon },
        };
        Ok(out)
    }
}
