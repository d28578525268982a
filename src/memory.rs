//! Handing memory the process has freed back to the system, after the rare large pieces of
//! work (a big import, a big zone indexed). A leaf: it imports nothing of this crate.
//!
//! Two things keep freed memory counted in the RSS. sled replaces a tree node on every
//! write and frees the old one through crossbeam-epoch once no reader can hold it; a batch
//! holds one epoch guard for all its writes, so a batch of 20,000 keys leaves ~90 MB of old
//! nodes that later pins collect only a little at a time (8 bags of 64 every 128 pins: on a
//! node that then sits idle, for a long while). And glibc keeps what was freed in its
//! arenas until `malloc_trim` returns the free pages.

/// Allocations this large get pages of their own, handed back as soon as they are freed.
/// glibc's default moves this threshold up (to 32 MiB) after the first large free, and
/// large buffers then come from the shared heap: sled's 21 MB of metric histograms, never
/// written with its metrics off, are zeroed there and counted in the RSS, and a large
/// build's buffers leave holes that only a trim returns (10,000 small zones: 114 → 97 MiB).
const MMAP_THRESHOLD: i32 = 256 << 10;
/// glibc's arenas (default: 8 per CPU). Each thread allocates from an arena of its own while
/// it can, and free memory in one serves no other: with the control plane's threads each
/// holding some, 10,000 small zones cost 7–10 MiB more RSS. The query path allocates
/// nothing after warm-up, so it never waits on an arena.
const ARENA_MAX: i32 = 2;

/// Set the allocator up for a long-lived server (see the constants). Call first thing in
/// `main`, before any thread starts.
pub fn configure_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets the allocator's parameters; no thread allocates yet.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_ARENA_MAX, ARENA_MAX);
    }
}

/// Collection rounds in a pass: each round frees up to 8 × 64 deferred objects (a
/// 20,000-key batch leaves about 1,000 bags), and costs well under a microsecond when
/// nothing is left.
const EPOCH_ROUNDS: usize = 1024;
/// The pause before each collection pass. Nothing is freed while any thread stays pinned
/// in an older epoch (another write, sled's flusher at that moment): one pass right after
/// the batch was seen to free nothing on a loaded machine (the garbage was still there 10 s
/// later). Later passes catch it; a pass with nothing left costs a millisecond.
const PASS_PAUSES_MS: [u64; 5] = [0, 100, 400, 1000, 2500];

/// Free what sled's last large batch left for epoch reclamation, then return the heap's
/// free pages to the system. Blocking work spread over a few seconds: run it off the
/// runtime's threads.
pub fn reclaim_after_large_write() {
    for pause in PASS_PAUSES_MS {
        std::thread::sleep(std::time::Duration::from_millis(pause));
        for _ in 0..EPOCH_ROUNDS {
            crossbeam_epoch::pin().flush();
        }
        release_freed();
    }
}

/// Return the heap's free memory to the system (glibc keeps it otherwise: a zone of a
/// million records leaves hundreds of MB of freed build memory counted in the RSS).
pub fn release_freed() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}
