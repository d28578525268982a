//! What a large sled batch leaves behind is handed back (`meridian::memory`): sled frees the
//! tree nodes a batch replaced through crossbeam-epoch, and one batch holds one epoch guard
//! for all its writes, so a bootstrap import of 10,000 zones left ~90 MB of old nodes in the
//! node's RSS until later pins collected them. This checks the mechanism the store relies on
//! (that the collector `reclaim_after_large_write` drives is the one sled defers to, and
//! that the trim returns the pages), in a process of its own: the heap figures are the
//! whole process's. `benches/bigzone/run.sh --only many` measures the node itself.

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn the_nodes_a_large_batch_replaced_are_freed_and_returned() {
    fn in_use() -> usize {
        // SAFETY: mallinfo2 only reads the allocator's statistics.
        let m = unsafe { libc::mallinfo2() };
        m.uordblks + m.hblkhd
    }
    fn rss_kb() -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse().ok())
            })
            .unwrap_or(0)
    }
    meridian::memory::configure_allocator();
    let dir = tempfile::tempdir().expect("temp dir");
    let db = sled::Config::new()
        .path(dir.path())
        .cache_capacity(16 << 20)
        .open()
        .expect("open sled");
    let objects = db.open_tree("objects").expect("tree");
    let before = in_use();
    // Like the import of 5,000 small zones: a zone's text and its serial, one batch.
    let mut batch = sled::Batch::default();
    for i in 0..5_000 {
        let text = format!(
            "{{\"text\":\"$ORIGIN zone{i}.example.\\n$TTL 300\\n@ IN SOA ns1 hostmaster 1 7200 3600 1209600 300\\n@ IN NS ns1\\nns1 IN A 192.0.2.1\\nwww IN A 192.0.2.2\\n\",\"version\":2}}"
        );
        batch.insert(format!("z/zone{i}.example").into_bytes(), text.into_bytes());
        batch.insert(format!("x/zone{i}.example").into_bytes(), b"1".to_vec());
    }
    objects.apply_batch(batch).expect("batch");
    db.flush().expect("flush");
    let after_batch = in_use();
    let rss_batch = rss_kb();
    assert!(
        after_batch > before + (20 << 20),
        "the batch left less garbage than expected ({} -> {} bytes in use): is this test still measuring anything?",
        before,
        after_batch
    );
    meridian::memory::reclaim_after_large_write();
    let reclaimed = in_use();
    let rss_reclaimed = rss_kb();
    assert!(
        reclaimed < before + (12 << 20),
        "the replaced nodes were not freed: {before} bytes in use before the batch, {after_batch} after it, {reclaimed} after reclaiming"
    );
    assert!(
        rss_reclaimed + 15 * 1024 < rss_batch,
        "the freed pages were not returned: RSS {rss_batch} KiB after the batch, {rss_reclaimed} KiB after reclaiming"
    );
    // The tree still holds every key.
    assert_eq!(objects.len(), 10_000);
}
