//! Where the control plane keeps what it must not lose: the Raft log, the vote, the committed
//! log id, the applied state and the last snapshot, in one sled database (`DATA_DIR/raft`).
//!
//! Layout (every value is JSON, so a newer binary can still read what an older one wrote):
//!
//! - tree `meta`: `format` (the store format, [`STORE_FORMAT`], as decimal text), `vote`,
//!   `committed`, `last_purged` (log ids).
//! - tree `log`: one [`Entry`] per key, the key being the index as a big-endian `u64`.
//! - tree `sm`: `state` — `{format, last_applied, membership, state}`, written after every
//!   apply batch, so that a restarted node answers DNS from its own state at once, quorum or
//!   not; `snapshot` (the snapshot's bytes, `{format, state}`) and `snapshot_meta`.
//!
//! Durability: an append is acknowledged to Raft only once flushed; a vote is flushed before
//! `save_vote` returns; the state machine is flushed after each batch and each snapshot install.

// openraft's StorageError is large, and it is what every trait method here returns: the
// helpers return it too rather than box it only to unbox it at the trait boundary.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::io::Cursor;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    AnyError, EntryPayload, ErrorSubject, ErrorVerb, RaftLogReader, RaftSnapshotBuilder,
    StorageIOError,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Mutex};

use crate::cluster::command::Response;
use crate::cluster::state::{State, STATE_FORMAT};
use crate::cluster::types::{
    Entry, LogId, SnapshotMeta, StorageError, StoredMembership, TypeConfig, Vote, FORMAT_VERSION,
};

/// The newest store layout this binary writes and reads.
pub const STORE_FORMAT: u32 = 1;

/// sled's page cache.
const SLED_CACHE_BYTES: u64 = 16 << 20;

const TREE_META: &str = "meta";
const TREE_LOG: &str = "log";
const TREE_SM: &str = "sm";
const KEY_FORMAT: &str = "format";
const KEY_VOTE: &str = "vote";
const KEY_COMMITTED: &str = "committed";
const KEY_LAST_PURGED: &str = "last_purged";
const KEY_STATE: &str = "state";
const KEY_SNAPSHOT: &str = "snapshot";
const KEY_SNAPSHOT_META: &str = "snapshot_meta";

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the store in {}: {source}", dir.display())]
    Open {
        dir: PathBuf,
        #[source]
        source: sled::Error,
    },
    #[error(
        "the store in {} was written by a newer Meridian (format {found}; this binary reads up to {supported}): upgrade this binary",
        dir.display()
    )]
    NewerFormat {
        dir: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error(
        "the state in {} was written by a newer Meridian (state format {found}; this binary reads up to {supported}): upgrade this binary",
        dir.display()
    )]
    NewerState {
        dir: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("the store in {} is damaged: {what}", dir.display())]
    Corrupt { dir: PathBuf, what: String },
    #[error("cannot read or write the store in {}: {source}", dir.display())]
    Io {
        dir: PathBuf,
        #[source]
        source: sled::Error,
    },
}

/// The applied state as the rest of the node sees it.
#[derive(Clone, Debug)]
pub struct Applied {
    pub state: Arc<State>,
    /// The index of the last applied log entry (`None` before the first).
    pub last_applied: Option<u64>,
}

/// Open (or create) the store in `dir` (e.g. `DATA_DIR/raft`). Refuses, with a clear error, a
/// store written by a newer format than this binary knows.
pub fn open(dir: &Path) -> Result<(LogStore, StateMachineStore), StoreError> {
    let io = |source| StoreError::Io {
        dir: dir.to_path_buf(),
        source,
    };
    let corrupt = |what: String| StoreError::Corrupt {
        dir: dir.to_path_buf(),
        what,
    };
    // The control-plane state is small and read from memory (the state machine keeps it);
    // sled's default 1 GiB page cache would only grow the node's RSS.
    let db = sled::Config::new()
        .path(dir)
        .cache_capacity(SLED_CACHE_BYTES)
        .open()
        .map_err(|source| StoreError::Open {
            dir: dir.to_path_buf(),
            source,
        })?;
    let meta = db.open_tree(TREE_META).map_err(io)?;
    match meta.get(KEY_FORMAT).map_err(io)? {
        Some(v) => {
            let found = std::str::from_utf8(&v)
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok())
                .ok_or_else(|| {
                    corrupt(format!(
                        "meta/format is not a number: {:?}",
                        String::from_utf8_lossy(&v)
                    ))
                })?;
            if found > STORE_FORMAT {
                return Err(StoreError::NewerFormat {
                    dir: dir.to_path_buf(),
                    found,
                    supported: STORE_FORMAT,
                });
            }
        }
        None => {
            meta.insert(KEY_FORMAT, STORE_FORMAT.to_string().as_bytes())
                .map_err(io)?;
            db.flush().map_err(io)?;
        }
    }
    let log = db.open_tree(TREE_LOG).map_err(io)?;
    let sm = db.open_tree(TREE_SM).map_err(io)?;

    let data = match sm.get(KEY_STATE).map_err(io)? {
        None => SmData::default(),
        Some(bytes) => {
            let header: Header =
                serde_json::from_slice(&bytes).map_err(|e| corrupt(format!("sm/state: {e}")))?;
            if header.format > STATE_FORMAT {
                return Err(StoreError::NewerState {
                    dir: dir.to_path_buf(),
                    found: header.format,
                    supported: STATE_FORMAT,
                });
            }
            let blob: SmBlobIn =
                serde_json::from_slice(&bytes).map_err(|e| corrupt(format!("sm/state: {e}")))?;
            let state = blob
                .state
                .restore()
                .map_err(|e| corrupt(format!("sm/state does not rebuild: {e}")))?;
            SmData {
                state: Arc::new(state),
                last_applied: blob.last_applied,
                membership: blob.membership,
            }
        }
    };

    let (tx, _) = watch::channel(data.applied());
    let log_store = LogStore {
        db: db.clone(),
        log,
        meta,
    };
    let sm_store = StateMachineStore {
        inner: Arc::new(SmInner {
            db,
            sm,
            data: Mutex::new(data),
            tx,
            snapshot_counter: AtomicU64::new(0),
            snapshot_lock: Mutex::new(()),
        }),
    };
    Ok((log_store, sm_store))
}

/// Only the format of a JSON blob, read before the rest so that a newer blob is refused
/// with a clear message rather than a parse error.
#[derive(Deserialize)]
struct Header {
    format: u32,
}

#[derive(Serialize)]
struct SmBlobOut<'a> {
    format: u32,
    last_applied: &'a Option<LogId>,
    membership: &'a StoredMembership,
    state: &'a State,
}

#[derive(Deserialize)]
struct SmBlobIn {
    last_applied: Option<LogId>,
    membership: StoredMembership,
    state: State,
}

#[derive(Serialize)]
struct SnapshotOut<'a> {
    format: u32,
    state: &'a State,
}

#[derive(Deserialize)]
struct SnapshotIn {
    state: State,
}

fn sled_err(e: sled::Error) -> AnyError {
    AnyError::new(&e)
}

fn io_err(subject: ErrorSubject<u64>, verb: ErrorVerb, source: AnyError) -> StorageError {
    StorageIOError::new(subject, verb, source).into()
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn key_index(key: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = key.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

/// The Raft log and the vote. Cheap to clone (sled handles); also its own log reader.
#[derive(Clone)]
pub struct LogStore {
    db: sled::Db,
    log: sled::Tree,
    meta: sled::Tree,
}

impl LogStore {
    fn read_meta<T: for<'de> Deserialize<'de>>(
        &self,
        key: &str,
        subject: ErrorSubject<u64>,
    ) -> Result<Option<T>, StorageError> {
        let read = |e: AnyError| io_err(subject.clone(), ErrorVerb::Read, e);
        match self.meta.get(key).map_err(|e| read(sled_err(e)))? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| read(AnyError::new(&e).add_context(|| format!("meta/{key}")))),
        }
    }

    fn write_meta<T: Serialize>(
        &self,
        key: &str,
        value: &T,
        subject: ErrorSubject<u64>,
    ) -> Result<(), StorageError> {
        let write = |e: AnyError| io_err(subject.clone(), ErrorVerb::Write, e);
        let bytes = serde_json::to_vec(value).map_err(|e| write(AnyError::new(&e)))?;
        self.meta
            .insert(key, bytes)
            .map_err(|e| write(sled_err(e)))?;
        Ok(())
    }

    async fn flush(&self, subject: ErrorSubject<u64>) -> Result<(), StorageError> {
        self.db
            .flush_async()
            .await
            .map_err(|e| io_err(subject, ErrorVerb::Write, sled_err(e)))?;
        Ok(())
    }

    fn decode_entry(index: Option<u64>, value: &[u8]) -> Result<Entry, StorageError> {
        serde_json::from_slice(value).map_err(|e| {
            let subject = match index {
                Some(i) => ErrorSubject::LogIndex(i),
                None => ErrorSubject::Logs,
            };
            io_err(subject, ErrorVerb::Read, AnyError::new(&e))
        })
    }

    /// Remove every entry whose key is in `range` (one atomic batch).
    fn remove_range<R: RangeBounds<[u8; 8]>>(&self, range: R) -> Result<(), StorageError> {
        let mut batch = sled::Batch::default();
        for item in self.log.range(range) {
            let (k, _) =
                item.map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, sled_err(e)))?;
            batch.remove(k);
        }
        self.log
            .apply_batch(batch)
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, sled_err(e)))
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => match i.checked_add(1) {
                Some(i) => i,
                None => return Ok(Vec::new()),
            },
            Bound::Unbounded => 0,
        };
        // `None`: no upper bound.
        let end = match range.end_bound() {
            Bound::Included(&i) => i.checked_add(1),
            Bound::Excluded(&i) => Some(i),
            Bound::Unbounded => None,
        };
        let iter = match end {
            Some(end) if end <= start => return Ok(Vec::new()),
            Some(end) => self.log.range(index_key(start)..index_key(end)),
            None => self.log.range(index_key(start)..),
        };
        let mut entries = Vec::new();
        for item in iter {
            let (k, v) =
                item.map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, sled_err(e)))?;
            let index = key_index(&k).ok_or_else(|| {
                io_err(
                    ErrorSubject::Logs,
                    ErrorVerb::Read,
                    AnyError::error(format!("log key of {} bytes, not 8", k.len())),
                )
            })?;
            entries.push(Self::decode_entry(Some(index), &v)?);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged: Option<LogId> = self.read_meta(KEY_LAST_PURGED, ErrorSubject::Logs)?;
        let last = match self
            .log
            .last()
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, sled_err(e)))?
        {
            Some((k, v)) => Some(Self::decode_entry(key_index(&k), &v)?.log_id),
            None => None,
        };
        let last_log_id = match (last, last_purged) {
            (Some(l), Some(p)) => Some(if l.index >= p.index { l } else { p }),
            (l, p) => l.or(p),
        };
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.write_meta(KEY_VOTE, vote, ErrorSubject::Vote)?;
        self.flush(ErrorSubject::Vote).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.read_meta(KEY_VOTE, ErrorSubject::Vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not flushed on its own: a lost `committed` only means re-applying less at start-up
        // (the state machine persists its own progress); the next flush carries it.
        self.write_meta(KEY_COMMITTED, &committed, ErrorSubject::Store)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self
            .read_meta::<Option<LogId>>(KEY_COMMITTED, ErrorSubject::Store)?
            .flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut batch = sled::Batch::default();
        for entry in entries {
            let bytes = serde_json::to_vec(&entry).map_err(|e| {
                io_err(
                    ErrorSubject::Log(entry.log_id),
                    ErrorVerb::Write,
                    AnyError::new(&e),
                )
            })?;
            batch.insert(&index_key(entry.log_id.index), bytes);
        }
        self.log
            .apply_batch(batch)
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Write, sled_err(e)))?;
        // Acknowledge only what is on disk.
        match self.db.flush_async().await {
            Ok(_) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                let err = io_err(ErrorSubject::Logs, ErrorVerb::Write, sled_err(e));
                callback.log_io_completed(Err(std::io::Error::other(err.to_string())));
                Err(err)
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.remove_range(index_key(log_id.index)..)?;
        self.flush(ErrorSubject::Logs).await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // Record the purge point first: if we stop between the two writes, the leftover
        // entries are below it and removed by the next purge.
        self.write_meta(KEY_LAST_PURGED, &log_id, ErrorSubject::Logs)?;
        self.remove_range(..=index_key(log_id.index))?;
        self.flush(ErrorSubject::Logs).await
    }
}

#[derive(Clone, Default)]
struct SmData {
    state: Arc<State>,
    last_applied: Option<LogId>,
    membership: StoredMembership,
}

impl SmData {
    fn applied(&self) -> Applied {
        Applied {
            state: self.state.clone(),
            last_applied: self.last_applied.map(|l| l.index),
        }
    }

    fn blob(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(&SmBlobOut {
            format: STATE_FORMAT,
            last_applied: &self.last_applied,
            membership: &self.membership,
            state: &self.state,
        })
    }
}

struct SmInner {
    db: sled::Db,
    sm: sled::Tree,
    /// Held across a whole apply or install, so that they are serialized.
    data: Mutex<SmData>,
    tx: watch::Sender<Applied>,
    snapshot_counter: AtomicU64,
    /// Serializes writes of the stored snapshot.
    snapshot_lock: Mutex<()>,
}

impl SmInner {
    async fn flush(&self, subject: ErrorSubject<u64>) -> Result<(), StorageError> {
        self.db
            .flush_async()
            .await
            .map_err(|e| io_err(subject, ErrorVerb::Write, sled_err(e)))?;
        Ok(())
    }

    fn read_snapshot_meta(&self) -> Result<Option<SnapshotMeta>, StorageError> {
        let read = |e: AnyError| io_err(ErrorSubject::Snapshot(None), ErrorVerb::Read, e);
        match self
            .sm
            .get(KEY_SNAPSHOT_META)
            .map_err(|e| read(sled_err(e)))?
        {
            None => Ok(None),
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| read(AnyError::new(&e))),
        }
    }

    /// Add the snapshot (meta and bytes) to `batch`.
    fn snapshot_into(
        batch: &mut sled::Batch,
        meta: &SnapshotMeta,
        data: &[u8],
    ) -> Result<(), StorageError> {
        let meta_bytes = serde_json::to_vec(meta).map_err(|e| {
            io_err(
                ErrorSubject::Snapshot(Some(meta.signature())),
                ErrorVerb::Write,
                AnyError::new(&e),
            )
        })?;
        batch.insert(KEY_SNAPSHOT_META, meta_bytes);
        batch.insert(KEY_SNAPSHOT, data);
        Ok(())
    }

    fn publish(&self, data: &SmData) {
        self.tx.send_replace(data.applied());
    }
}

/// The state machine: the applied [`State`], its last applied log id and membership, and the
/// last snapshot. Clones share the same state.
#[derive(Clone)]
pub struct StateMachineStore {
    inner: Arc<SmInner>,
}

impl StateMachineStore {
    /// Every time entries are applied (or a snapshot installed), the new state and last
    /// applied log index are sent here; the node's publisher rebuilds the DNS snapshot from it.
    /// Subscribe before starting Raft.
    pub fn subscribe(&self) -> watch::Receiver<Applied> {
        self.inner.tx.subscribe()
    }

    /// The state as of the last apply (for reads by the admin API); cheap.
    pub fn current(&self) -> Applied {
        self.inner.tx.borrow().clone()
    }
}

/// Builds a snapshot of the state machine as it was when the builder was made.
pub struct StoreSnapshotBuilder {
    inner: Arc<SmInner>,
    view: SmData,
}

impl RaftSnapshotBuilder<TypeConfig> for StoreSnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let counter = self.inner.snapshot_counter.fetch_add(1, Ordering::Relaxed) + 1;
        let snapshot_id = match &self.view.last_applied {
            Some(l) => format!("{}-{}-{counter}", l.leader_id.term, l.index),
            None => format!("0-none-{counter}"),
        };
        let meta = SnapshotMeta {
            last_log_id: self.view.last_applied,
            last_membership: self.view.membership.clone(),
            snapshot_id,
        };
        let write = |e: AnyError| {
            io_err(
                ErrorSubject::Snapshot(Some(meta.signature())),
                ErrorVerb::Write,
                e,
            )
        };
        let data = serde_json::to_vec(&SnapshotOut {
            format: STATE_FORMAT,
            state: &self.view.state,
        })
        .map_err(|e| write(AnyError::new(&e)))?;

        {
            let _guard = self.inner.snapshot_lock.lock().await;
            // Never replace a newer stored snapshot (one installed meanwhile) with this one.
            let stored = self.inner.read_snapshot_meta()?;
            let newer_stored = stored.is_some_and(|s| s.last_log_id > meta.last_log_id);
            if !newer_stored {
                let mut batch = sled::Batch::default();
                SmInner::snapshot_into(&mut batch, &meta, &data)?;
                self.inner
                    .sm
                    .apply_batch(batch)
                    .map_err(|e| write(sled_err(e)))?;
                self.inner
                    .flush(ErrorSubject::Snapshot(Some(meta.signature())))
                    .await?;
            }
        }

        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = StoreSnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let data = self.inner.data.lock().await;
        Ok((data.last_applied, data.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut data = self.inner.data.lock().await;
        let mut next = data.clone();
        let mut responses = Vec::new();
        for entry in entries {
            let response = match entry.payload {
                EntryPayload::Blank => Response::Noop,
                EntryPayload::Membership(m) => {
                    next.membership = StoredMembership::new(Some(entry.log_id), m);
                    Response::Noop
                }
                EntryPayload::Normal(req) => {
                    if req.v > FORMAT_VERSION {
                        // Stop rather than misapply: nothing of this batch is kept.
                        return Err(StorageIOError::apply(
                            entry.log_id,
                            AnyError::error(format!(
                                "log entry {} was written by a newer Meridian (entry format {}; this binary applies up to {}): upgrade this binary",
                                entry.log_id, req.v, FORMAT_VERSION
                            )),
                        )
                        .into());
                    }
                    Arc::make_mut(&mut next.state).apply(&req.cmd, req.at_ms)
                }
            };
            next.last_applied = Some(entry.log_id);
            responses.push(response);
        }
        if responses.is_empty() {
            return Ok(responses);
        }

        let write = |e: AnyError| io_err(ErrorSubject::StateMachine, ErrorVerb::Write, e);
        let blob = next.blob().map_err(|e| write(AnyError::new(&e)))?;
        self.inner
            .sm
            .insert(KEY_STATE, blob)
            .map_err(|e| write(sled_err(e)))?;
        self.inner.flush(ErrorSubject::StateMachine).await?;

        *data = next;
        self.inner.publish(&data);
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        let view = self.inner.data.lock().await.clone();
        StoreSnapshotBuilder {
            inner: self.inner.clone(),
            view,
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let subject = || ErrorSubject::Snapshot(Some(meta.signature()));
        let bytes = snapshot.into_inner();
        let read = |e: AnyError| io_err(subject(), ErrorVerb::Read, e);
        let header: Header = serde_json::from_slice(&bytes).map_err(|e| read(AnyError::new(&e)))?;
        if header.format > STATE_FORMAT {
            return Err(read(AnyError::error(format!(
                "snapshot {} was written by a newer Meridian (state format {}; this binary reads up to {}): upgrade this binary",
                meta.snapshot_id, header.format, STATE_FORMAT
            ))));
        }
        let parsed: SnapshotIn =
            serde_json::from_slice(&bytes).map_err(|e| read(AnyError::new(&e)))?;
        let state = parsed.state.restore().map_err(|e| {
            read(AnyError::error(format!(
                "snapshot state does not rebuild: {e}"
            )))
        })?;

        let mut data = self.inner.data.lock().await;
        let next = SmData {
            state: Arc::new(state),
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
        };
        let write = |e: AnyError| io_err(subject(), ErrorVerb::Write, e);
        let blob = next.blob().map_err(|e| write(AnyError::new(&e)))?;
        {
            let _guard = self.inner.snapshot_lock.lock().await;
            // State and snapshot in one atomic batch.
            let mut batch = sled::Batch::default();
            batch.insert(KEY_STATE, blob);
            SmInner::snapshot_into(&mut batch, meta, &bytes)?;
            self.inner
                .sm
                .apply_batch(batch)
                .map_err(|e| write(sled_err(e)))?;
            self.inner.flush(subject()).await?;
        }

        *data = next;
        self.inner.publish(&data);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let _guard = self.inner.snapshot_lock.lock().await;
        let Some(meta) = self.inner.read_snapshot_meta()? else {
            return Ok(None);
        };
        let read = |e: AnyError| {
            io_err(
                ErrorSubject::Snapshot(Some(meta.signature())),
                ErrorVerb::Read,
                e,
            )
        };
        let data = self
            .inner
            .sm
            .get(KEY_SNAPSHOT)
            .map_err(|e| read(sled_err(e)))?
            .ok_or_else(|| read(AnyError::error("snapshot metadata without snapshot data")))?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data.to_vec())),
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use openraft::storage::RaftLogStorageExt;
    use openraft::testing::{StoreBuilder, Suite};
    use openraft::{CommittedLeaderId, Membership};

    use super::*;
    use crate::cluster::command::Command;
    use crate::cluster::types::{NodeInfo, Request};
    use crate::model::{Datacenter, DcState, OnAllDown, PolicyKind, Service};

    const ZONE: &str = "$TTL 300\n@ IN SOA ns1 hostmaster 1 7200 900 1209600 300\n@ IN NS ns1\nns1 IN A 192.0.2.1\n";
    const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/log-v1.json");

    fn lid(term: u64, index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    fn blank(term: u64, index: u64) -> Entry {
        Entry {
            log_id: lid(term, index),
            payload: EntryPayload::Blank,
        }
    }

    fn normal(term: u64, index: u64, cmd: Command) -> Entry {
        Entry {
            log_id: lid(term, index),
            payload: EntryPayload::Normal(Request {
                v: FORMAT_VERSION,
                at_ms: 1_700_000_000_000 + index,
                cmd,
            }),
        }
    }

    fn membership(term: u64, index: u64) -> Entry {
        let nodes: BTreeMap<u64, NodeInfo> = [1u64, 2, 3]
            .into_iter()
            .map(|id| {
                let info = NodeInfo {
                    raft: format!("10.0.0.{id}:7000"),
                    admin: format!("10.0.0.{id}:8080"),
                };
                (id, info)
            })
            .collect();
        Entry {
            log_id: lid(term, index),
            payload: EntryPayload::Membership(Membership::new(
                vec![BTreeSet::from([1, 2, 3])],
                nodes,
            )),
        }
    }

    fn dc(id: &str, ip: &str) -> Datacenter {
        crate::model::fixtures::datacenter(id, 51.5, -0.1, ip)
    }

    fn put_zone() -> Command {
        Command::PutZone {
            origin: "example.com".into(),
            text: ZONE.into(),
        }
    }

    fn put_dc(id: &str, ip: &str) -> Command {
        Command::PutDatacenter {
            dc: dc(id, ip),
            set_state: None,
        }
    }

    fn put_service() -> Command {
        Command::PutService {
            service: Service {
                zone: "example.com".into(),
                name: "www".into(),
                policy: PolicyKind::GeoNearest,
                datacenters: vec!["lon".into(), "nyc".into()],
                ttl: 60,
                answers: None,
                overrides: Default::default(),
                on_all_down: OnAllDown::All,
            },
        }
    }

    /// The entries of tests/fixtures/log-v1.json (as today's code writes them).
    fn fixture_entries() -> Vec<Entry> {
        vec![
            blank(1, 1),
            membership(1, 2),
            normal(1, 3, put_zone()),
            normal(1, 4, put_dc("lon", "192.0.2.10")),
            normal(1, 5, put_dc("nyc", "198.51.100.10")),
            normal(1, 6, put_service()),
        ]
    }

    fn temp() -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix("meridian-store-")
            .tempdir()
            .expect("tempdir")
    }

    fn open_ok(dir: &Path) -> (LogStore, StateMachineStore) {
        match open(dir) {
            Ok(s) => s,
            Err(e) => panic!("open {}: {e}", dir.display()),
        }
    }

    fn indexes(entries: &[Entry]) -> Vec<u64> {
        entries.iter().map(|e| e.log_id.index).collect()
    }

    #[tokio::test]
    async fn append_read_truncate_purge() {
        let dir = temp();
        let (mut log, _sm) = open_ok(dir.path());
        let st = log.get_log_state().await.expect("state");
        assert_eq!((st.last_purged_log_id, st.last_log_id), (None, None));

        log.blocking_append((1..=10).map(|i| blank(1, i)))
            .await
            .expect("append");
        assert_eq!(
            indexes(&log.try_get_log_entries(..).await.expect("read")),
            (1..=10).collect::<Vec<_>>()
        );
        assert_eq!(
            indexes(&log.try_get_log_entries(3..6).await.expect("read")),
            vec![3, 4, 5]
        );
        assert_eq!(
            indexes(&log.try_get_log_entries(9..=20).await.expect("read")),
            vec![9, 10]
        );
        assert!(log
            .try_get_log_entries(6..6)
            .await
            .expect("read")
            .is_empty());
        assert_eq!(
            log.get_log_state().await.expect("state").last_log_id,
            Some(lid(1, 10))
        );

        log.truncate(lid(1, 8)).await.expect("truncate");
        assert_eq!(
            indexes(&log.try_get_log_entries(..).await.expect("read")),
            (1..=7).collect::<Vec<_>>()
        );
        assert_eq!(
            log.get_log_state().await.expect("state").last_log_id,
            Some(lid(1, 7))
        );

        log.purge(lid(1, 3)).await.expect("purge");
        assert_eq!(
            indexes(&log.try_get_log_entries(..).await.expect("read")),
            (4..=7).collect::<Vec<_>>()
        );
        let st = log.get_log_state().await.expect("state");
        assert_eq!(st.last_purged_log_id, Some(lid(1, 3)));
        assert_eq!(st.last_log_id, Some(lid(1, 7)));

        // Purging everything leaves the purge point as the last log id.
        log.purge(lid(1, 7)).await.expect("purge");
        let st = log.get_log_state().await.expect("state");
        assert_eq!(st.last_purged_log_id, Some(lid(1, 7)));
        assert_eq!(st.last_log_id, Some(lid(1, 7)));
        assert!(log.try_get_log_entries(..).await.expect("read").is_empty());

        // Entries survive a reopen.
        log.blocking_append([blank(2, 8), blank(2, 9)])
            .await
            .expect("append");
        drop(log);
        drop(_sm);
        let (mut log, _sm) = open_ok(dir.path());
        let got = log.try_get_log_entries(..).await.expect("read");
        assert_eq!(got, vec![blank(2, 8), blank(2, 9)]);
        let st = log.get_log_state().await.expect("state");
        assert_eq!(st.last_purged_log_id, Some(lid(1, 7)));
        assert_eq!(st.last_log_id, Some(lid(2, 9)));
    }

    #[tokio::test]
    async fn vote_and_committed_survive_reopen() {
        let dir = temp();
        {
            let (mut log, _sm) = open_ok(dir.path());
            assert_eq!(log.read_vote().await.expect("vote"), None);
            assert_eq!(log.read_committed().await.expect("committed"), None);
            log.save_vote(&Vote::new(3, 2)).await.expect("save vote");
            log.save_committed(Some(lid(3, 5)))
                .await
                .expect("save committed");
        }
        let (mut log, _sm) = open_ok(dir.path());
        assert_eq!(log.read_vote().await.expect("vote"), Some(Vote::new(3, 2)));
        assert_eq!(
            log.read_committed().await.expect("committed"),
            Some(lid(3, 5))
        );
    }

    #[tokio::test]
    async fn applied_state_survives_reopen() {
        let dir = temp();
        let before;
        {
            let (_log, mut sm) = open_ok(dir.path());
            let mut rx = sm.subscribe();
            let responses = sm.apply(fixture_entries()).await.expect("apply");
            assert_eq!(
                responses,
                vec![
                    Response::Noop,
                    Response::Noop,
                    Response::Created,
                    Response::Created,
                    Response::Created,
                    Response::Created
                ]
            );
            assert!(rx.has_changed().expect("watch"));
            let applied = rx.borrow_and_update().clone();
            assert_eq!(applied.last_applied, Some(6));
            assert_eq!(sm.current().last_applied, Some(6));
            before = serde_json::to_value(&*applied.state).expect("json");
            // An entry may be rejected by the state: an answer, not an error.
            let r = sm
                .apply([normal(1, 7, put_dc("bad", "192.0.2.11")), blank(1, 8)])
                .await;
            let r = r.expect("apply");
            assert_eq!(r.len(), 2);
            assert_eq!(sm.current().last_applied, Some(8));
        }
        let (_log, mut sm) = open_ok(dir.path());
        let now = sm.current();
        assert_eq!(now.last_applied, Some(8));
        assert_eq!(
            serde_json::to_value(&*now.state).expect("json")["zones"],
            before["zones"]
        );
        assert_eq!(
            now.state.zone_files().len(),
            1,
            "derived data rebuilt on open"
        );
        assert!(now.state.services["example.com."].contains_key("www"));
        let (last, mem) = sm.applied_state().await.expect("applied");
        assert_eq!(last, Some(lid(1, 8)));
        assert_eq!(mem.log_id(), &Some(lid(1, 2)));
        assert_eq!(
            mem.membership().voter_ids().collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
    }

    #[tokio::test]
    async fn snapshot_installs_on_a_fresh_store() {
        let src_dir = temp();
        let (_log, mut src) = open_ok(src_dir.path());
        src.apply(fixture_entries()).await.expect("apply");
        let snap = src
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .expect("build");
        assert_eq!(snap.meta.last_log_id, Some(lid(1, 6)));
        assert!(
            snap.meta.snapshot_id.starts_with("1-6-"),
            "{}",
            snap.meta.snapshot_id
        );
        let cur = src
            .get_current_snapshot()
            .await
            .expect("current")
            .expect("some");
        assert_eq!(cur.meta, snap.meta);

        let dst_dir = temp();
        {
            let (_log, mut dst) = open_ok(dst_dir.path());
            let rx = dst.subscribe();
            let mut buf = dst.begin_receiving_snapshot().await.expect("begin");
            assert!(buf.get_ref().is_empty());
            *buf = *snap.snapshot.clone();
            dst.install_snapshot(&snap.meta, buf)
                .await
                .expect("install");
            assert!(rx.has_changed().expect("watch"));
            assert_eq!(rx.borrow().last_applied, Some(6));
            let (last, mem) = dst.applied_state().await.expect("applied");
            assert_eq!(
                (last, mem),
                (snap.meta.last_log_id, snap.meta.last_membership.clone())
            );
            assert_eq!(
                serde_json::to_value(&*dst.current().state).expect("json"),
                serde_json::to_value(&*src.current().state).expect("json")
            );
        }
        // After a restart: the state and the snapshot are both still there.
        let (_log, mut dst) = open_ok(dst_dir.path());
        assert_eq!(dst.current().last_applied, Some(6));
        assert_eq!(dst.current().state.zone_files().len(), 1);
        let cur = dst
            .get_current_snapshot()
            .await
            .expect("current")
            .expect("some");
        assert_eq!(cur.meta, snap.meta);
        assert_eq!(cur.snapshot.get_ref(), snap.snapshot.get_ref());
    }

    #[tokio::test]
    async fn newer_snapshot_is_refused() {
        let dir = temp();
        let (_log, mut sm) = open_ok(dir.path());
        let meta = SnapshotMeta {
            last_log_id: Some(lid(1, 5)),
            last_membership: StoredMembership::default(),
            snapshot_id: "1-5-1".into(),
        };
        let data = br#"{"format":99,"state":{"zones":{}}}"#.to_vec();
        let err = sm
            .install_snapshot(&meta, Box::new(Cursor::new(data)))
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("newer Meridian (state format 99"),
            "{err}"
        );
        assert_eq!(sm.current().last_applied, None);
    }

    #[test]
    fn newer_store_format_is_refused() {
        let dir = temp();
        {
            let db = sled::open(dir.path()).expect("sled");
            db.open_tree(TREE_META)
                .expect("tree")
                .insert(KEY_FORMAT, "99")
                .expect("insert");
            db.flush().expect("flush");
        }
        let err = match open(dir.path()) {
            Ok(_) => panic!("a format-99 store was opened"),
            Err(e) => e,
        };
        assert!(
            matches!(
                err,
                StoreError::NewerFormat {
                    found: 99,
                    supported: 1,
                    ..
                }
            ),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("was written by a newer Meridian (format 99; this binary reads up to 1): upgrade this binary"),
            "{msg}"
        );
        assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
    }

    #[tokio::test]
    async fn newer_entry_is_refused_by_apply() {
        let dir = temp();
        let (_log, mut sm) = open_ok(dir.path());
        let mut entry = normal(1, 2, put_zone());
        if let EntryPayload::Normal(req) = &mut entry.payload {
            req.v = 99;
        }
        let err = sm.apply([blank(1, 1), entry]).await.unwrap_err();
        assert!(
            err.to_string().contains("newer Meridian (entry format 99"),
            "{err}"
        );
        // Nothing of the batch was kept.
        assert_eq!(sm.current().last_applied, None);
        assert_eq!(sm.applied_state().await.expect("applied").0, None);
    }

    /// Writes tests/fixtures/log-v1.json. Run once (`--ignored`) when the fixture was made; it
    /// refuses to overwrite it, since the fixture is what later formats must still read.
    #[test]
    #[ignore]
    fn write_log_v1_fixture() {
        let path = Path::new(FIXTURE);
        assert!(
            !path.exists(),
            "{FIXTURE} exists; it must not be regenerated"
        );
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        let json = serde_json::to_string_pretty(&fixture_entries()).expect("json");
        std::fs::write(path, json + "\n").expect("write");
    }

    #[tokio::test]
    async fn fixture_log_v1_still_applies() {
        let text = std::fs::read_to_string(FIXTURE).expect("read the fixture");
        let entries: Vec<Entry> =
            serde_json::from_str(&text).expect("v1 entries still deserialize");
        assert_eq!(entries.len(), 6);
        let dir = temp();
        let (mut log, mut sm) = open_ok(dir.path());
        log.blocking_append(entries.clone()).await.expect("append");
        assert_eq!(log.try_get_log_entries(..).await.expect("read"), entries);

        let responses = sm.apply(entries).await.expect("apply");
        assert_eq!(
            responses,
            vec![
                Response::Noop,
                Response::Noop,
                Response::Created,
                Response::Created,
                Response::Created,
                Response::Created
            ]
        );
        let now = sm.current();
        assert_eq!(now.last_applied, Some(6));
        let state = &now.state;
        assert_eq!(state.zones.keys().collect::<Vec<_>>(), vec!["example.com."]);
        assert_eq!(
            state.datacenters.keys().collect::<Vec<_>>(),
            vec!["lon", "nyc"]
        );
        assert_eq!(
            state.datacenters["nyc"].addresses,
            vec!["198.51.100.10".parse::<std::net::IpAddr>().expect("ip")]
        );
        assert_eq!(state.datacenters["lon"].state, DcState::Active);
        let www = &state.services["example.com."]["www"];
        assert_eq!(www.zone, "example.com.");
        assert_eq!(www.datacenters, vec!["lon", "nyc"]);
        assert_eq!(www.policy, PolicyKind::GeoNearest);
        let (_, mem) = sm.applied_state().await.expect("applied");
        assert_eq!(mem.log_id(), &Some(lid(1, 2)));
        assert_eq!(
            mem.membership().get_node(&2),
            Some(&NodeInfo {
                raft: "10.0.0.2:7000".into(),
                admin: "10.0.0.2:8080".into()
            })
        );
    }

    struct TempStore;

    impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for TempStore {
        async fn build(
            &self,
        ) -> Result<(tempfile::TempDir, LogStore, StateMachineStore), StorageError> {
            let dir = temp();
            let (log, sm) = open(dir.path())
                .map_err(|e| StorageError::from(StorageIOError::write(AnyError::error(e))))?;
            Ok((dir, log, sm))
        }
    }

    /// openraft's own storage test suite.
    #[test]
    fn openraft_storage_suite() {
        if let Err(e) = Suite::test_all(TempStore) {
            panic!("openraft storage suite: {e}");
        }
    }
}
