//! Counters for the data plane, and the fixed label vocabularies that keep every series
//! bounded. A leaf: it imports nothing of this crate, and anyone may use it.
//!
//! A counter is one slot per worker, each on its own cache lines: a UDP worker thread
//! claims a slot of its own when it starts ([`claim_worker`]) and bumps it with a plain
//! load and store, no locked instruction and no cache line shared with another thread.
//! Every other thread (TCP tasks, tests) shares the last slot and adds atomically. A scrape
//! sums the slots. Nothing here locks on the query path; a worker's block of a counter is
//! allocated the first time that worker counts in it (once), and the table of blocks the
//! first time anyone does, so memory follows the zones each worker actually answers for,
//! not zones × workers: a zone never queried costs a few words.

use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;

/// Slots per counter: [`MAX_WORKERS`]` - 1` threads of their own (UDP runs one worker per
/// CPU and listen address), and one shared.
pub const MAX_WORKERS: usize = 64;
/// The slot of every thread that has none of its own.
const SHARED: usize = MAX_WORKERS - 1;

/// Slots handed out so far.
static CLAIMED: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static WORKER: Cell<usize> = const { Cell::new(SHARED) };
}

/// The calling thread's slot. Not `Send`: a slot of its own is written without a locked
/// instruction, so only its thread may write it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Worker {
    slot: usize,
    _thread: PhantomData<*const ()>,
}

impl Worker {
    fn new(slot: usize) -> Worker {
        Worker {
            slot,
            _thread: PhantomData,
        }
    }

    /// Whether this thread has a slot of its own.
    pub fn is_own(self) -> bool {
        self.slot != SHARED
    }
}

/// Give the calling thread a slot of its own, while any are left (then it shares the last
/// one). For long-lived threads that answer queries; calling it again changes nothing.
pub fn claim_worker() -> Worker {
    WORKER.with(|w| {
        if w.get() == SHARED {
            let n = CLAIMED.fetch_add(1, Ordering::Relaxed);
            if n < SHARED {
                w.set(n);
            }
        }
        Worker::new(w.get())
    })
}

/// The calling thread's slot.
#[inline]
pub fn worker() -> Worker {
    Worker::new(WORKER.with(Cell::get))
}

/// Counters per [`Line`].
const PER_LINE: usize = 16;

/// Sixteen counters on a pair of cache lines (128 bytes: the adjacent-line prefetcher
/// fetches lines in pairs, so a worker's block is a whole number of pairs).
#[repr(align(128))]
#[derive(Default)]
struct Line([AtomicU64; PER_LINE]);

/// A worker slot's block of lines, made when that worker first counts.
type Blocks = Box<[OnceLock<Box<[Line]>>]>;

/// `len` counters, each with a slot per worker. A worker's counters are one block of their
/// own, allocated when it first counts, that shares no cache line (nor line pair) with
/// another worker's. The table of blocks (a word and a half per slot) is made on the first
/// count too: a node holds an array per zone, and most zones of a large server are rarely
/// or never queried (10,000 zones cost 15 MB when every array had its table up front).
pub struct CounterArray {
    len: usize,
    /// Lines per block.
    stride: usize,
    blocks: OnceLock<Blocks>,
}

impl CounterArray {
    pub fn new(len: usize) -> CounterArray {
        CounterArray {
            len,
            stride: len.div_ceil(PER_LINE).max(1),
            blocks: OnceLock::new(),
        }
    }

    /// A worker's block, allocated (with the table, the first time anyone counts) on its
    /// first use: once each, never again on later counts.
    #[inline]
    fn block(&self, slot: usize) -> Option<&[Line]> {
        let blocks = match self.blocks.get() {
            Some(b) => b,
            None => self
                .blocks
                .get_or_init(|| (0..MAX_WORKERS).map(|_| OnceLock::new()).collect()),
        };
        let cell = blocks.get(slot)?;
        Some(match cell.get() {
            Some(b) => b,
            None => cell.get_or_init(|| (0..self.stride).map(|_| Line::default()).collect()),
        })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Add `n` to counter `i` (ignored when out of range).
    #[inline]
    pub fn add(&self, w: Worker, i: usize, n: u64) {
        if i >= self.len {
            return;
        }
        let Some(line) = self.block(w.slot).and_then(|b| b.get(i / PER_LINE)) else {
            return;
        };
        let cell = &line.0[i % PER_LINE];
        if w.is_own() {
            // Only this thread writes this slot: no read-modify-write needed.
            cell.store(
                cell.load(Ordering::Relaxed).wrapping_add(n),
                Ordering::Relaxed,
            );
        } else {
            cell.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Counter `i`, summed over the workers.
    pub fn get(&self, i: usize) -> u64 {
        if i >= self.len {
            return 0;
        }
        let Some(blocks) = self.blocks.get() else {
            return 0;
        };
        blocks
            .iter()
            .filter_map(|b| b.get())
            .map(|b| b[i / PER_LINE].0[i % PER_LINE].load(Ordering::Relaxed))
            .fold(0u64, u64::wrapping_add)
    }
}

impl fmt::Debug for CounterArray {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CounterArray({})", self.len)
    }
}

/// One counter with a slot per worker.
pub struct Counter(CounterArray);

impl Counter {
    pub fn new() -> Counter {
        Counter(CounterArray::new(1))
    }

    #[inline]
    pub fn add(&self, w: Worker, n: u64) {
        self.0.add(w, 0, n);
    }

    #[inline]
    pub fn inc(&self, w: Worker) {
        self.0.add(w, 0, 1);
    }

    /// The total over every worker.
    pub fn sum(&self) -> u64 {
        self.0.get(0)
    }
}

impl Default for Counter {
    fn default() -> Self {
        Counter::new()
    }
}

impl fmt::Debug for Counter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Counter({})", self.sum())
    }
}

/// What response rate limiting did to UDP replies, over the whole process (a node has one
/// set of listeners).
#[derive(Debug, Default)]
pub struct RrlCounters {
    /// Replies not sent.
    pub dropped: Counter,
    /// Replies sent truncated instead (slipped).
    pub slipped: Counter,
}

/// The process's response rate limiting counters.
pub fn rrl() -> &'static RrlCounters {
    static RRL: OnceLock<RrlCounters> = OnceLock::new();
    RRL.get_or_init(RrlCounters::default)
}

/// The `qtype` label values: the common types, and `other` for the rest.
pub const QTYPES: [&str; 13] = [
    "A", "AAAA", "CNAME", "MX", "NS", "SOA", "TXT", "SRV", "CAA", "PTR", "DS", "ANY", "other",
];

/// The `rcode` label values (RFC 1035 §4.1.1, RFC 6891 §9), and `other`.
pub const RCODES: [&str; 8] = [
    "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "BADVERS", "other",
];

/// The `policy` label values: `none` for answers no service picked.
pub const POLICIES: [&str; 4] = ["none", "round_robin", "weighted", "geo_nearest"];

/// The index of a query type in [`QTYPES`].
#[inline]
pub fn qtype_index(qtype: u16) -> usize {
    match qtype {
        1 => 0,
        28 => 1,
        5 => 2,
        15 => 3,
        2 => 4,
        6 => 5,
        16 => 6,
        33 => 7,
        257 => 8,
        12 => 9,
        43 => 10,
        255 => 11,
        _ => 12,
    }
}

/// The index of a (full, extended) RCODE in [`RCODES`].
#[inline]
pub fn rcode_index(rcode: u16) -> usize {
    match rcode {
        0..=5 => rcode as usize,
        16 => 6,
        _ => 7,
    }
}

/// Which service policy picked an answer, as the `policy` label says it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Policy {
    #[default]
    None = 0,
    RoundRobin = 1,
    Weighted = 2,
    GeoNearest = 3,
}

/// Cells with policy `none`: every qtype × rcode.
const PLAIN_CELLS: usize = QTYPES.len() * RCODES.len();
/// The qtypes a service answers (A, AAAA, ANY), by their index in [`QTYPES`].
const SERVICE_QTYPES: [usize; 3] = [0, 1, 11];
/// Every cell: the plain ones, then policy × service qtype for NOERROR.
const QUERY_CELLS: usize = PLAIN_CELLS + (POLICIES.len() - 1) * SERVICE_QTYPES.len();

/// One zone's queries by qtype, rcode and policy. A service only answers A, AAAA and ANY,
/// and only with NOERROR, so only those combinations have a cell per policy; anything else
/// is counted under policy `none`.
#[derive(Debug)]
pub struct QueryStats {
    cells: CounterArray,
}

impl QueryStats {
    pub fn new() -> QueryStats {
        QueryStats {
            cells: CounterArray::new(QUERY_CELLS),
        }
    }

    fn cell(qtype: usize, rcode: usize, policy: Policy) -> usize {
        if policy != Policy::None && rcode == 0 {
            if let Some(k) = SERVICE_QTYPES.iter().position(|&q| q == qtype) {
                return PLAIN_CELLS + (policy as usize - 1) * SERVICE_QTYPES.len() + k;
            }
        }
        qtype * RCODES.len() + rcode
    }

    /// Count one query: its type, the full RCODE of the reply, and the policy.
    #[inline]
    pub fn record(&self, w: Worker, qtype: u16, rcode: u16, policy: Policy) {
        let i = Self::cell(qtype_index(qtype), rcode_index(rcode), policy);
        self.cells.add(w, i, 1);
    }

    /// The count of one combination of label indexes.
    pub fn get(&self, qtype: usize, rcode: usize, policy: Policy) -> u64 {
        self.cells.get(Self::cell(qtype, rcode, policy))
    }

    /// Every combination counted at least once: `(qtype, rcode, policy, count)` labels.
    pub fn for_each(&self, mut f: impl FnMut(&'static str, &'static str, &'static str, u64)) {
        for (q, qtype) in QTYPES.iter().enumerate() {
            for (r, rcode) in RCODES.iter().enumerate() {
                let n = self.cells.get(q * RCODES.len() + r);
                if n > 0 {
                    f(qtype, rcode, POLICIES[0], n);
                }
            }
        }
        for (p, policy) in POLICIES.iter().enumerate().skip(1) {
            for (k, &q) in SERVICE_QTYPES.iter().enumerate() {
                let n = self
                    .cells
                    .get(PLAIN_CELLS + (p - 1) * SERVICE_QTYPES.len() + k);
                if n > 0 {
                    f(QTYPES[q], RCODES[0], policy, n);
                }
            }
        }
    }
}

impl Default for QueryStats {
    fn default() -> Self {
        QueryStats::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_worker_slots_sum() {
        let c = std::sync::Arc::new(Counter::new());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || {
                    let w = claim_worker();
                    for _ in 0..10_000 {
                        c.inc(w);
                    }
                    c.add(w, 5);
                })
            })
            .collect();
        // This thread shares the last slot.
        let w = worker();
        for _ in 0..1_000 {
            c.inc(w);
        }
        for t in threads {
            t.join().expect("worker thread");
        }
        assert_eq!(c.sum(), 4 * 10_005 + 1_000);
    }

    #[test]
    fn shared_slot_is_atomic_and_slots_run_out() {
        let c = std::sync::Arc::new(Counter::new());
        // More threads than slots: the late ones share the last slot, and lose nothing.
        let threads: Vec<_> = (0..MAX_WORKERS + 4)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || {
                    let w = claim_worker();
                    assert_eq!(claim_worker(), w, "claiming twice keeps the slot");
                    for _ in 0..5_000 {
                        c.inc(w);
                    }
                    w.slot
                })
            })
            .collect();
        let slots: Vec<usize> = threads
            .into_iter()
            .map(|t| t.join().expect("join"))
            .collect();
        assert_eq!(c.sum(), (MAX_WORKERS as u64 + 4) * 5_000);
        assert!(slots.contains(&SHARED), "{slots:?}");
        let mut own: Vec<usize> = slots.into_iter().filter(|&s| s != SHARED).collect();
        let n = own.len();
        own.sort_unstable();
        own.dedup();
        assert_eq!(own.len(), n, "no slot of its own is handed out twice");
    }

    #[test]
    fn worker_blocks_do_not_share_cache_lines() {
        let a = CounterArray::new(17);
        assert_eq!(a.stride, 2);
        assert_eq!(std::mem::align_of::<Line>(), 128);
        // Nothing is allocated until a worker counts, not even the table of blocks.
        assert!(a.blocks.get().is_none());
        assert_eq!(a.get(16), 0);
        assert!(a.blocks.get().is_none(), "reading allocates nothing");
        a.add(worker(), 16, 3);
        a.add(worker(), 17, 3); // out of range: ignored
        assert_eq!((a.get(16), a.get(15), a.get(17)), (3, 0, 0));
        let table = a.blocks.get().expect("the table, made by the first count");
        assert_eq!(table.len(), MAX_WORKERS);
        assert_eq!(table.iter().filter(|b| b.get().is_some()).count(), 1);
        let own = std::thread::spawn(|| claim_worker().slot)
            .join()
            .expect("join");
        let block = a.block(own).expect("block");
        assert_eq!(block.len(), 2);
        assert_eq!(block.as_ptr() as usize % 128, 0);
    }

    #[test]
    fn an_uncounted_zone_costs_a_few_words() {
        // One QueryStats per zone: 10,000 zones must not cost megabytes before a query.
        assert!(std::mem::size_of::<QueryStats>() <= 48);
        let s = QueryStats::new();
        assert_eq!(s.get(0, 0, Policy::None), 0);
        assert!(s.cells.blocks.get().is_none());
        s.record(worker(), 1, 0, Policy::None);
        assert_eq!(s.get(0, 0, Policy::None), 1);
    }

    #[test]
    fn query_cells_are_bounded_and_distinct() {
        let s = QueryStats::new();
        let w = worker();
        s.record(w, 1, 0, Policy::GeoNearest);
        s.record(w, 1, 0, Policy::GeoNearest);
        s.record(w, 1, 0, Policy::None);
        s.record(w, 28, 3, Policy::None);
        s.record(w, 65, 5, Policy::None); // HTTPS → other
        s.record(w, 1, 16, Policy::None);
        s.record(w, 99, 42, Policy::None); // other, other
        s.record(w, 16, 2, Policy::Weighted); // no policy cell: counted as none
        let mut seen = Vec::new();
        s.for_each(|q, r, p, n| seen.push(format!("{q} {r} {p} {n}")));
        seen.sort();
        assert_eq!(
            seen,
            [
                "A BADVERS none 1",
                "A NOERROR geo_nearest 2",
                "A NOERROR none 1",
                "AAAA NXDOMAIN none 1",
                "TXT SERVFAIL none 1",
                "other REFUSED none 1",
                "other other none 1",
            ]
        );
        // Every cell index is in range and no two label sets share one.
        let mut cells = std::collections::HashSet::new();
        for q in 0..QTYPES.len() {
            for r in 0..RCODES.len() {
                for p in [
                    Policy::None,
                    Policy::RoundRobin,
                    Policy::Weighted,
                    Policy::GeoNearest,
                ] {
                    let c = QueryStats::cell(q, r, p);
                    assert!(c < QUERY_CELLS);
                    if p == Policy::None || (r == 0 && SERVICE_QTYPES.contains(&q)) {
                        assert!(cells.insert(c), "{q} {r} {p:?}");
                    }
                }
            }
        }
        assert_eq!(cells.len(), QUERY_CELLS);
    }
}
