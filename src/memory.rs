//! Handing memory the process has freed back to the system, after the rare large pieces of
//! work (a big import, a big zone indexed). A leaf: it imports nothing of this crate.
//!
//! Two things keep freed memory counted in the RSS. sled replaces a tree node on every
//! write and frees the old one through crossbeam-epoch once no reader can hold it; a batch
//! holds one epoch guard for all its writes, so a batch of 20,000 keys leaves ~90 MB of old
//! nodes that later pins collect only a little at a time (8 bags of 64 every 128 pins: on a
//! node that then sits idle, for a long while). And glibc keeps what was freed in its
//! arenas until `malloc_trim` returns the free pages.

/// Collection rounds after a large batch: each frees up to 8 × 64 deferred objects (a
/// 20,000-key batch leaves about 1,000 bags), and costs well under a microsecond when
/// nothing is left.
const EPOCH_ROUNDS: usize = 4096;

/// Free what sled's last large batch left for epoch reclamation, then return the heap's
/// free pages to the system. Blocking work of a few milliseconds: run it off the runtime's
/// threads.
pub fn reclaim_after_large_write() {
    for _ in 0..EPOCH_ROUNDS {
        crossbeam_epoch::pin().flush();
    }
    release_freed();
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
