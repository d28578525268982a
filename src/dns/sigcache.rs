//! The signature cache: per-answer RRSIGs (service and geo answers, wildcard answers, and
//! the NODATA NSECs made for them) shared by every worker thread, so that a hot name is
//! signed once, not per query, and every worker answers with the same signature until it
//! is renewed. Compact-denial NSECs for names that do not exist are not cached: the query
//! name is the client's choice, so caching them would only churn the table.
//!
//! A fixed table of 64k slots (4-way set-associative), allocated once when the first zone
//! is signed, so memory is bounded whatever the number of zones or names. Each
//! slot is a seqlock over plain atomic words (no `unsafe`, no lock, no allocation):
//! a reader copies the words and keeps them only if the sequence did not move; a writer
//! that finds the slot being written by another simply does not cache. The key is a
//! 128-bit keyed SipHash of everything signed but the signer's fixed fields — the zone's
//! signer generation (a new key or a rebuild is a new generation, so its entries are never
//! hit again), the owner, the type, the TTL and the RDATAs — so a client cannot aim two
//! RRsets at one slot. Entries need no clock: every signature of a generation has its
//! signer's one validity window, so a cached signature is exactly what signing again would
//! give, until the zone is re-signed (at half its validity) as a new generation.

use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::sync::OnceLock;

use siphasher::sip128::{Hasher128, SipHasher13};

/// Ways per set.
const WAYS: usize = 4;
/// Sets: 16k sets of 4 ways, 64k entries (about 7 MiB).
const SETS: usize = 1 << 14;
use crate::zone::dnssec::{RRSIG_HEAD as HEAD, SIG_LEN as SIG};
const DATA_WORDS: usize = (HEAD + SIG).div_ceil(8);

/// Where a zone's signatures come from: a new signer (new key, rebuilt zone) takes a new
/// generation, so the cache never answers with a signature of an old one.
static GENERATION: AtomicU64 = AtomicU64::new(1);

/// A new signer generation (called when a zone is signed).
pub fn next_generation() -> u64 {
    GENERATION.fetch_add(1, Ordering::Relaxed)
}

/// The process's cache, made on first use (when the first zone is signed).
pub fn global() -> &'static SigCache {
    static CACHE: OnceLock<SigCache> = OnceLock::new();
    CACHE.get_or_init(SigCache::new)
}

/// What an entry is found by: a keyed 128-bit hash of what was signed (never 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Key(u64, u64);

#[derive(Default)]
struct Slot {
    /// Even: stable; odd: being written. 0: never written.
    seq: AtomicU64,
    key: [AtomicU64; 2],
    /// The RRSIG's fixed fields then its signature, 8 bytes a word.
    data: [AtomicU64; DATA_WORDS],
}

/// A bounded, lock-free table of RRSIGs shared by all workers.
pub struct SigCache {
    slots: Box<[Slot]>,
    keys: (u64, u64),
}

impl std::fmt::Debug for SigCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigCache({} slots)", self.slots.len())
    }
}

impl Default for SigCache {
    fn default() -> SigCache {
        SigCache::new()
    }
}

impl SigCache {
    pub fn new() -> SigCache {
        SigCache {
            slots: (0..SETS * WAYS).map(|_| Slot::default()).collect(),
            keys: (rand::random(), rand::random()),
        }
    }

    /// The key of an RRset signed by generation `generation`: `owner` lower-case wire,
    /// `rdatas` in canonical form and order (exactly what the signature covers).
    pub fn key<'r>(
        &self,
        generation: u64,
        owner: &[u8],
        rtype: u16,
        ttl: u32,
        rdatas: impl Iterator<Item = &'r [u8]>,
    ) -> Key {
        use std::hash::Hasher as _;
        let mut h = SipHasher13::new_with_keys(self.keys.0, self.keys.1);
        h.write(&generation.to_le_bytes());
        h.write(&[owner.len() as u8]);
        h.write(owner);
        h.write(&rtype.to_be_bytes());
        h.write(&ttl.to_be_bytes());
        for rd in rdatas {
            h.write(&(rd.len() as u16).to_be_bytes());
            h.write(rd);
        }
        let v = h.finish128();
        Key(v.h1 | 1, v.h2)
    }

    fn set(&self, key: Key) -> &[Slot] {
        let i = (key.0 >> 1) as usize & (SETS - 1);
        &self.slots[i * WAYS..(i + 1) * WAYS]
    }

    /// The RRSIG RDATA cached under `key` into `out` (its fixed fields, `signer`, the
    /// signature); its length, or `None` when there is none.
    pub fn get(&self, key: Key, signer: &[u8], out: &mut [u8]) -> Option<usize> {
        let len = HEAD + signer.len() + SIG;
        if out.len() < len {
            return None;
        }
        for slot in self.set(key) {
            let Some(words) = read(slot, key) else {
                continue;
            };
            let mut bytes = [0u8; DATA_WORDS * 8];
            for (chunk, w) in bytes.chunks_exact_mut(8).zip(words) {
                chunk.copy_from_slice(&w.to_le_bytes());
            }
            out[..HEAD].copy_from_slice(&bytes[..HEAD]);
            out[HEAD..HEAD + signer.len()].copy_from_slice(signer);
            out[HEAD + signer.len()..len].copy_from_slice(&bytes[HEAD..HEAD + SIG]);
            return Some(len);
        }
        None
    }

    /// Cache `rrsig` (an RRSIG RDATA whose signer is `signer`) under `key`. Does nothing
    /// when its shape is not one we keep or the slot is being written by another worker.
    pub fn put(&self, key: Key, signer: &[u8], rrsig: &[u8]) {
        if rrsig.len() != HEAD + signer.len() + SIG || &rrsig[HEAD..HEAD + signer.len()] != signer {
            return;
        }
        let mut bytes = [0u8; DATA_WORDS * 8];
        bytes[..HEAD].copy_from_slice(&rrsig[..HEAD]);
        bytes[HEAD..HEAD + SIG].copy_from_slice(&rrsig[HEAD + signer.len()..]);
        let set = self.set(key);
        // The way that holds this key, else an empty one, else one chosen by the key.
        let way = set
            .iter()
            .position(|s| {
                s.key[0].load(Ordering::Relaxed) == key.0
                    && s.key[1].load(Ordering::Relaxed) == key.1
            })
            .or_else(|| set.iter().position(|s| s.seq.load(Ordering::Relaxed) == 0))
            .unwrap_or((key.1 >> 62) as usize % WAYS);
        let slot = &set[way];
        let s = slot.seq.load(Ordering::Relaxed);
        if s & 1 == 1
            || slot
                .seq
                .compare_exchange(s, s + 1, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
        {
            return; // another worker is writing it
        }
        fence(Ordering::Release);
        slot.key[0].store(key.0, Ordering::Relaxed);
        slot.key[1].store(key.1, Ordering::Relaxed);
        for (w, chunk) in slot.data.iter().zip(bytes.chunks_exact(8)) {
            let mut b = [0u8; 8];
            b.copy_from_slice(chunk);
            w.store(u64::from_le_bytes(b), Ordering::Relaxed);
        }
        slot.seq.store(s + 2, Ordering::Release);
    }
}

/// A consistent copy of `slot`'s words if it holds `key`.
fn read(slot: &Slot, key: Key) -> Option<[u64; DATA_WORDS]> {
    let s1 = slot.seq.load(Ordering::Acquire);
    if s1 & 1 == 1 || s1 == 0 {
        return None;
    }
    let k = (
        slot.key[0].load(Ordering::Relaxed),
        slot.key[1].load(Ordering::Relaxed),
    );
    let mut words = [0u64; DATA_WORDS];
    for (d, w) in words.iter_mut().zip(&slot.data) {
        *d = w.load(Ordering::Relaxed);
    }
    fence(Ordering::Acquire);
    let s2 = slot.seq.load(Ordering::Relaxed);
    (s1 == s2 && k == (key.0, key.1)).then_some(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rrsig(signer: &[u8], inception: u32, expiration: u32, fill: u8) -> Vec<u8> {
        let mut v = vec![0, 1, 13, 3, 0, 0, 0, 60];
        v.extend(expiration.to_be_bytes());
        v.extend(inception.to_be_bytes());
        v.extend([0x12, 0x34]);
        v.extend_from_slice(signer);
        v.extend([fill; SIG]);
        v
    }

    #[test]
    fn an_entry_comes_back_whole_for_its_key_and_generation_only() {
        let c = SigCache::new();
        let signer = b"\x07example\x03com\x00";
        let now = 1_800_000_000;
        let a: &[u8] = &[192, 0, 2, 1];
        let k = c.key(7, b"\x03www\x07example\x03com\x00", 1, 60, [a].into_iter());
        let sig = rrsig(signer, now - 3600, now + 14 * 86400, 0xab);
        let mut out = [0u8; 400];
        assert_eq!(c.get(k, signer, &mut out), None);
        c.put(k, signer, &sig);
        assert_eq!(c.get(k, signer, &mut out), Some(sig.len()));
        assert_eq!(&out[..sig.len()], &sig[..]);
        // Another generation, owner, TTL or RDATA is another key.
        let b: &[u8] = &[192, 0, 2, 2];
        for other in [
            c.key(8, b"\x03www\x07example\x03com\x00", 1, 60, [a].into_iter()),
            c.key(7, b"\x03wwx\x07example\x03com\x00", 1, 60, [a].into_iter()),
            c.key(7, b"\x03www\x07example\x03com\x00", 1, 61, [a].into_iter()),
            c.key(7, b"\x03www\x07example\x03com\x00", 1, 60, [b].into_iter()),
        ] {
            assert_ne!(other, k);
            assert_eq!(c.get(other, signer, &mut out), None);
        }
    }

    #[test]
    fn a_full_set_keeps_the_newest_and_bounds_memory() {
        let c = SigCache::new();
        let signer = b"\x00";
        let now = 1_800_000_000;
        let mut out = [0u8; 200];
        let mut last = None;
        for i in 0..(SETS * WAYS * 2) as u32 {
            let rd = i.to_be_bytes();
            let k = c.key(1, b"\x00", 1, 60, [&rd[..]].into_iter());
            c.put(k, signer, &rrsig(signer, now, now + 86400, i as u8));
            last = Some((k, i as u8));
        }
        let (k, fill) = last.expect("one");
        assert_eq!(c.get(k, signer, &mut out), Some(HEAD + 1 + SIG));
        assert_eq!(out[HEAD + 1], fill);
        assert_eq!(c.slots.len(), SETS * WAYS);
    }
}
