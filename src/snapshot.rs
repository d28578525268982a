//! The immutable data the data plane answers from, and the handle that publishes it.
//!
//! One writer (the control plane; for now the node at start-up) builds a whole new
//! [`Snapshot`] and publishes it; every query loads the current one without a lock
//! (`arc-swap`) and keeps using it for the whole answer, so a query never sees half a change.
//! Each part is its own `Arc`, so a change to one part shares the others with the old one.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::zone::ZoneSet;

/// Everything one answer needs.
#[derive(Debug)]
pub struct Snapshot {
    /// The zones, indexed.
    pub zones: Arc<ZoneSet>,
    /// What NSID (RFC 5001) answers: the node id.
    pub nsid: Arc<[u8]>,
    /// Increases with every publish; for logs and metrics.
    pub generation: u64,
}

impl Snapshot {
    /// A snapshot with no zones: everything is REFUSED.
    pub fn empty(node_id: u64) -> Snapshot {
        Snapshot {
            zones: Arc::new(ZoneSet::default()),
            nsid: node_id.to_string().into_bytes().into(),
            generation: 0,
        }
    }
}

/// Read access to the current snapshot: cheap to clone, lock-free to load.
#[derive(Clone)]
pub struct SnapshotReader {
    current: Arc<ArcSwap<Snapshot>>,
}

impl SnapshotReader {
    /// The current snapshot. Hold it for one answer, not longer.
    #[inline]
    pub fn load(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.current.load()
    }
}

/// The one writer. Not `Clone`: whoever owns it is the only publisher.
pub struct SnapshotPublisher {
    current: Arc<ArcSwap<Snapshot>>,
}

impl SnapshotPublisher {
    /// Publish a new snapshot; queries that start after this see it.
    pub fn publish(&self, mut snapshot: Snapshot) {
        snapshot.generation = self.current.load().generation + 1;
        self.current.store(Arc::new(snapshot));
    }

    /// The snapshot currently published (to build the next one from).
    pub fn current(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    pub fn reader(&self) -> SnapshotReader {
        SnapshotReader {
            current: self.current.clone(),
        }
    }
}

/// A publisher and its first snapshot.
pub fn channel(initial: Snapshot) -> SnapshotPublisher {
    SnapshotPublisher {
        current: Arc::new(ArcSwap::from_pointee(initial)),
    }
}
