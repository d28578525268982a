//! Sorted range tables: the in-memory form of a GeoIP database and of compiled key tables.
//!
//! Every table is a *partition* of its address space: `starts[0] == 0`, the starts are strictly
//! increasing, and range `i` is `starts[i] ..= starts[i + 1] - 1` (the last one runs to the
//! end of the space). A lookup is one binary search.
//!
//! Values stored in the database tables are `u32` codes: an index into the location list,
//! [`NONE`] ("not in database"), or an IPv4 alias ([`alias`]) for IPv6 ranges whose addresses
//! embed an IPv4 address (`::/96`, `::ffff:0:0/96`, `2002::/16`, or whatever the tree aliases).

use std::fmt;
use std::net::IpAddr;

/// Value code: the address is not in the database.
pub(crate) const NONE: u32 = 0x7FFF_FFFF;
/// Value codes `ALIAS0 + base` (base <= 96): look the IPv4 address found at bits
/// `base .. base + 32` of the IPv6 address up in the IPv4 table.
const ALIAS0: u32 = 0x7FFF_FF00;
/// Location indices must stay below this.
pub(crate) const MAX_LOCATIONS: u32 = ALIAS0;
/// Flag bit in the split IPv6 table: a sub-/64 range starts inside this range.
const SPLIT_FLAG: u32 = 0x8000_0000;

/// The value code of an IPv4 alias whose IPv4 address starts at bit `base` (0..=96).
pub(crate) fn alias(base: u8) -> u32 {
    debug_assert!(base <= 96);
    ALIAS0 + u32::from(base)
}

/// The alias base of a value code, if it is an alias.
pub(crate) fn alias_base(code: u32) -> Option<u8> {
    if (ALIAS0..NONE).contains(&code) {
        u8::try_from(code - ALIAS0).ok()
    } else {
        None
    }
}

/// The IPv4 address embedded at bits `base .. base + 32` of `ip` (base <= 96).
#[inline]
fn embedded_v4(ip: u128, base: u8) -> u32 {
    // Truncation keeps the low 32 bits, i.e. bits base .. base + 32 counted from the top.
    (ip >> (96 - u32::from(base.min(96)))) as u32
}

/// An unsigned address integer (`u32` for IPv4, `u128` for IPv6).
pub(crate) trait Addr: Copy + Ord + fmt::Debug {
    const ZERO: Self;
    const MAX: Self;
    fn leading_zeros(self) -> u32;
    fn xor(self, other: Self) -> Self;
    fn dec(self) -> Self;
    fn inc(self) -> Self;
}

macro_rules! impl_addr {
    ($t:ty) => {
        impl Addr for $t {
            const ZERO: Self = 0;
            const MAX: Self = <$t>::MAX;
            #[inline]
            fn leading_zeros(self) -> u32 {
                <$t>::leading_zeros(self)
            }
            #[inline]
            fn xor(self, other: Self) -> Self {
                self ^ other
            }
            #[inline]
            fn dec(self) -> Self {
                self.wrapping_sub(1)
            }
            #[inline]
            fn inc(self) -> Self {
                self.wrapping_add(1)
            }
        }
    };
}
impl_addr!(u32);
impl_addr!(u128);

/// The prefix length of the largest aligned block that contains `ip` and lies inside
/// `start ..= end` (which must contain `ip`).
///
/// The block of length `p` around `ip` excludes `start - 1` iff `ip` and `start - 1` differ
/// in their first `p` bits, i.e. iff `p > clz(ip ^ (start - 1))`; likewise for `end + 1`.
#[inline]
pub(crate) fn block_prefix<A: Addr>(ip: A, start: A, end: A) -> u8 {
    let from_start = if start == A::ZERO {
        0
    } else {
        ip.xor(start.dec()).leading_zeros() + 1
    };
    let from_end = if end == A::MAX {
        0
    } else {
        ip.xor(end.inc()).leading_zeros() + 1
    };
    // At most the address width (32 or 128).
    from_start.max(from_end) as u8
}

/// A partition under construction: `(start, value)` pairs, adjacent equal values merged
/// (except [`NONE`], see [`RangeVec::push`]).
#[derive(Clone, Debug, Default)]
pub(crate) struct RangeVec<A> {
    pub(crate) starts: Vec<A>,
    pub(crate) vals: Vec<u32>,
}

impl<A: Addr> RangeVec<A> {
    /// A partition with one range covering the whole space.
    pub(crate) fn whole(val: u32) -> Self {
        RangeVec {
            starts: vec![A::ZERO],
            vals: vec![val],
        }
    }

    /// Append a range starting at `start` (greater than the previous start; the previous range
    /// ends at `start - 1`). Merged into the previous range if the value is the same, except for
    /// [`NONE`]: empty networks stay apart, so "not found" comes with the empty network's own
    /// prefix (they are few; merging found ranges is what saves memory).
    pub(crate) fn push(&mut self, start: A, val: u32) {
        if val == NONE || self.vals.last() != Some(&val) {
            self.starts.push(start);
            self.vals.push(val);
        }
    }

    pub(crate) fn shrink(&mut self) {
        self.starts.shrink_to_fit();
        self.vals.shrink_to_fit();
    }

    /// Combine two partitions of the same space: each piece gets `pick(self's value, top's
    /// value)`. Yields (start, value) pieces in order, not merged (see [`RangeVec::collect`]).
    pub(crate) fn overlay<'a>(
        &'a self,
        top: &'a RangeVec<A>,
        pick: impl Fn(u32, u32) -> u32 + 'a,
    ) -> impl Iterator<Item = (A, u32)> + 'a {
        let (mut i, mut j, mut done) = (0, 0, false);
        std::iter::from_fn(move || {
            if done || i >= self.starts.len() || j >= top.starts.len() {
                return None;
            }
            let piece = (
                self.starts[i].max(top.starts[j]),
                pick(self.vals[i], top.vals[j]),
            );
            match (self.starts.get(i + 1), top.starts.get(j + 1)) {
                (None, None) => done = true,
                (Some(_), None) => i += 1,
                (None, Some(_)) => j += 1,
                (Some(a), Some(b)) => {
                    if a <= b {
                        i += 1;
                    }
                    if b <= a {
                        j += 1;
                    }
                }
            }
            Some(piece)
        })
    }

    pub(crate) fn collect(pieces: impl Iterator<Item = (A, u32)>) -> RangeVec<A> {
        let mut out = RangeVec {
            starts: Vec::new(),
            vals: Vec::new(),
        };
        for (s, v) in pieces {
            out.push(s, v);
        }
        out.shrink();
        out
    }
}

/// A plain partition with one value per range (IPv4 database table, compiled tables).
#[derive(Clone)]
pub(crate) struct Plain<A, V> {
    starts: Vec<A>,
    vals: Vec<V>,
}

impl<A: Addr, V: Copy> Plain<A, V> {
    pub(crate) fn new(starts: Vec<A>, vals: Vec<V>) -> Self {
        debug_assert!(!starts.is_empty() && starts[0] == A::ZERO && starts.len() == vals.len());
        Plain { starts, vals }
    }

    pub(crate) fn len(&self) -> usize {
        self.starts.len()
    }

    /// The range holding `ip`: (index, value, start, end).
    #[inline]
    pub(crate) fn find(&self, ip: A) -> (usize, V, A, A) {
        // starts[0] == 0 <= ip, so the partition point is at least 1.
        let i = self.starts.partition_point(|&s| s <= ip).saturating_sub(1);
        let end = self.starts.get(i + 1).map_or(A::MAX, |next| next.dec());
        (i, self.vals[i], self.starts[i], end)
    }

    /// The value at `ip` and the prefix of the largest aligned block around `ip` in its range.
    #[inline]
    pub(crate) fn get(&self, ip: A) -> (V, u8) {
        let (_, v, start, end) = self.find(ip);
        (v, block_prefix(ip, start, end))
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (A, V)> + '_ {
        self.starts.iter().copied().zip(self.vals.iter().copied())
    }
}

/// The IPv6 database table, split to save memory: ranges starting on a /64 boundary (nearly
/// all of them) keep only the upper 64 bits of their start; the few that start inside a /64
/// go to a second, full-width table, and the /64-aligned range they start in is flagged.
pub(crate) struct SplitV6 {
    hi: Vec<u64>,
    hi_vals: Vec<u32>,
    lo: Vec<u128>,
    lo_vals: Vec<u32>,
}

impl SplitV6 {
    /// Build from (start, value) pieces in address order, starting at 0; adjacent equal values
    /// are merged as in [`RangeVec::push`].
    pub(crate) fn build(pieces: impl Iterator<Item = (u128, u32)>, size_hint: usize) -> Self {
        let mut t = SplitV6 {
            hi: Vec::with_capacity(size_hint),
            hi_vals: Vec::with_capacity(size_hint),
            lo: Vec::new(),
            lo_vals: Vec::new(),
        };
        let mut last = None;
        for (s, v) in pieces {
            debug_assert!(v & SPLIT_FLAG == 0);
            if v != NONE && last == Some(v) {
                continue;
            }
            last = Some(v);
            if s as u64 == 0 || t.hi_vals.is_empty() {
                t.hi.push((s >> 64) as u64);
                t.hi_vals.push(v);
            } else {
                t.lo.push(s);
                t.lo_vals.push(v);
                if let Some(last) = t.hi_vals.last_mut() {
                    *last |= SPLIT_FLAG;
                }
            }
        }
        t.hi.shrink_to_fit();
        t.hi_vals.shrink_to_fit();
        t.lo.shrink_to_fit();
        t.lo_vals.shrink_to_fit();
        t
    }

    pub(crate) fn len(&self) -> usize {
        self.hi.len() + self.lo.len()
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.hi.capacity() * 8
            + self.hi_vals.capacity() * 4
            + self.lo.capacity() * 16
            + self.lo_vals.capacity() * 4
    }

    /// The value at `ip` and the prefix of the largest aligned block around `ip` in its range.
    #[inline]
    pub(crate) fn get(&self, ip: u128) -> (u32, u8) {
        let top = (ip >> 64) as u64;
        let i = self.hi.partition_point(|&h| h <= top).saturating_sub(1);
        let start = u128::from(self.hi[i]) << 64;
        let next = self.hi.get(i + 1).map(|&h| u128::from(h) << 64);
        let raw = self.hi_vals[i];
        if raw & SPLIT_FLAG == 0 {
            let end = next.map_or(u128::MAX, |n| n - 1);
            return (raw, block_prefix(ip, start, end));
        }
        // Some full-width starts lie inside this range: the last one at or below ip (if it is
        // in this range) starts ip's range; the first one above ip may end it.
        let j = self.lo.partition_point(|&s| s <= ip);
        let (start, val) = match j.checked_sub(1) {
            Some(k) if self.lo[k] > start => (self.lo[k], self.lo_vals[k]),
            _ => (start, raw & !SPLIT_FLAG),
        };
        let end = match (next, self.lo.get(j)) {
            (Some(a), Some(&b)) => a.min(b) - 1,
            (Some(a), None) => a - 1,
            (None, Some(&b)) => b - 1,
            (None, None) => u128::MAX,
        };
        (val, block_prefix(ip, start, end))
    }

    /// All ranges in address order: (start, value).
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u128, u32)> + '_ {
        let mut hi = self
            .hi
            .iter()
            .zip(&self.hi_vals)
            .map(|(&h, &v)| (u128::from(h) << 64, v & !SPLIT_FLAG))
            .peekable();
        let mut lo = self
            .lo
            .iter()
            .copied()
            .zip(self.lo_vals.iter().copied())
            .peekable();
        std::iter::from_fn(move || match (hi.peek(), lo.peek()) {
            (Some(a), Some(b)) if b.0 < a.0 => lo.next(),
            (Some(_), _) => hi.next(),
            (None, _) => lo.next(),
        })
    }
}

/// A compiled table: every IPv4 and IPv6 address mapped to a key, adjacent ranges with equal
/// keys merged. Made by [`GeoDb::compile`](super::GeoDb::compile).
#[derive(Clone)]
pub struct GeoTable<K> {
    v4: Plain<u32, K>,
    v6: Plain<u128, K>,
    /// IPv6 ranges that map to the IPv4 table: (range index, base bit), sorted by index.
    v6_aliases: Vec<(usize, u8)>,
}

impl<K: Copy> GeoTable<K> {
    /// The key for `ip`, and the widest prefix (in `ip`'s family) around `ip` over which the key
    /// is the same: the largest aligned CIDR block containing `ip` that lies entirely inside
    /// `ip`'s merged range. For an IPv6 address that embeds an IPv4 address (`::ffff:a.b.c.d`,
    /// `2002:AABB:CCDD::`, ...) the IPv4 answer is given, with its prefix in IPv6 terms.
    #[inline]
    pub fn lookup(&self, ip: IpAddr) -> (K, u8) {
        match ip {
            IpAddr::V4(a) => self.v4.get(u32::from(a)),
            IpAddr::V6(a) => {
                let ip = u128::from(a);
                let (i, key, start, end) = self.v6.find(ip);
                let p = block_prefix(ip, start, end);
                match self.v6_aliases.iter().find(|(idx, _)| *idx == i) {
                    Some(&(_, base)) => {
                        let (key, p4) = self.v4.get(embedded_v4(ip, base));
                        (key, p.max(base + p4).min(128))
                    }
                    None => (key, p),
                }
            }
        }
    }

    /// Build from the database tables, mapping each value code through `key`.
    pub(crate) fn build(v4: &Plain<u32, u32>, v6: &SplitV6, key: impl Fn(u32) -> K) -> Self
    where
        K: Eq,
    {
        let (mut s4, mut k4) = (Vec::new(), Vec::<K>::new());
        for (start, code) in v4.iter() {
            let k = key(code);
            if k4.last() != Some(&k) {
                s4.push(start);
                k4.push(k);
            }
        }
        let (mut s6, mut k6, mut aliases) = (Vec::new(), Vec::<K>::new(), Vec::new());
        let mut last_alias = false;
        let none = key(NONE);
        for (start, code) in v6.iter() {
            if let Some(base) = alias_base(code) {
                aliases.push((s6.len(), base));
                s6.push(start);
                k6.push(none);
                last_alias = true;
            } else {
                let k = key(code);
                if last_alias || k6.last() != Some(&k) {
                    s6.push(start);
                    k6.push(k);
                }
                last_alias = false;
            }
        }
        s4.shrink_to_fit();
        k4.shrink_to_fit();
        s6.shrink_to_fit();
        k6.shrink_to_fit();
        GeoTable {
            v4: Plain::new(s4, k4),
            v6: Plain::new(s6, k6),
            v6_aliases: aliases,
        }
    }
}

impl<K> fmt::Debug for GeoTable<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeoTable")
            .field("ipv4_ranges", &self.v4.starts.len())
            .field("ipv6_ranges", &self.v6.starts.len())
            .finish()
    }
}

/// Look an IPv6 address up in the database tables, following IPv4 aliases.
#[inline]
pub(crate) fn lookup_v6(v4: &Plain<u32, u32>, v6: &SplitV6, ip: u128) -> (u32, u8) {
    let (code, p) = v6.get(ip);
    match alias_base(code) {
        Some(base) => {
            let (code, p4) = v4.get(embedded_v4(ip, base));
            (code, p.max(base + p4).min(128))
        }
        None => (code, p),
    }
}

/// Split the inclusive range `start ..= end` into maximal aligned CIDR blocks: (start, prefix).
pub(crate) fn cidr_blocks(mut start: u128, end: u128) -> Vec<(u128, u8)> {
    let mut out = Vec::new();
    loop {
        let align = if start == 0 {
            128
        } else {
            start.trailing_zeros()
        };
        let fit = match (end - start).checked_add(1) {
            None => 128,
            Some(count) => 127 - count.leading_zeros(),
        };
        let bits = align.min(fit);
        out.push((start, (128 - bits) as u8));
        let last = if bits == 128 {
            u128::MAX
        } else {
            start + ((1u128 << bits) - 1)
        };
        if last >= end {
            return out;
        }
        start = last + 1;
    }
}
