//! Where the control plane keeps what it must not lose: the Raft log, the vote, the committed
//! log id and the applied state, one key per object, in one sled database (`DATA_DIR/raft`).
//!
//! Layout (every value is JSON, so a newer binary can still read what an older one wrote):
//!
//! - tree `meta`: `format` (the store format, [`STORE_FORMAT`], as decimal text), `vote`,
//!   `committed`, `last_purged` (log ids).
//! - tree `log`: one [`Entry`] per key, the key being the index as a big-endian `u64`.
//! - tree `objects` (format 2): `applied` (`{format, last_applied, membership}`), and one key
//!   per object: `z/ORIGIN` (a zone's text and version), `d/ID` (a datacenter), `t/ID` (its
//!   opinions and events), `s/ZONE\0NAME` (a service), `r/ID` (a request's result),
//!   `cookies` (the DNS cookie secrets), `h/INDEX` (a history entry), `y/ORIGIN` (a
//!   signed zone's DNSSEC keys). An apply
//!   batch writes the keys its commands touched and `applied` in one sled batch, so a write
//!   costs what it changed, never the whole state.
//! - tree `sm` (format 1, read once and converted): `state`, the whole state as one value.
//!
//! Raft snapshots are not stored: one is the state at its last applied entry, serialized
//! when openraft asks for it (the objects in the store are that state).
//!
//! Durability: an append is acknowledged to Raft only once flushed; a vote is flushed before
//! `save_vote` returns; the state machine is flushed after each batch and each snapshot
//! install. Failing closed: after each of those flushes the acknowledged high-water mark
//! (vote, last log index, last applied) is written to `DATA_DIR/raft/meridian.ack` and synced; a
//! store that opens below its mark lost something it had acknowledged (a damaged file that
//! sled silently rolled back) and is refused with a message naming it.

// openraft's StorageError is large, and it is what every trait method here returns: the
// helpers return it too rather than box it only to unbox it at the trait boundary.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    AnyError, EntryPayload, ErrorSubject, ErrorVerb, RaftLogReader, RaftSnapshotBuilder,
    StorageIOError,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch, Mutex};

use crate::cluster::command::Response;
use crate::cluster::state::{
    DcEntry, DcStatus, Delta, DnssecEntry, Event, HistoryEntry, Opinion, RequestRecord,
    ServiceEntry, SettingsEntry, State, TsigEntry, STATE_FORMAT,
};
use crate::cluster::types::{
    Entry, LogId, SnapshotMeta, StorageError, StoredMembership, TypeConfig, Vote,
    CLUSTER_FORMAT_START, FORMAT_VERSION,
};
use crate::model::{Datacenter, Service};
use crate::name::{KeyName, ServiceName, ZoneName};
use crate::snapshot::CookieSecrets;

/// The newest store layout this binary writes and reads (1: the state as one value; 2: one
/// key per object).
pub const STORE_FORMAT: u32 = 2;

/// Zone text this large (in one command) is applied by [`blocking`].
const LARGE_TEXT: usize = 1 << 20;

/// Run CPU-heavy `f` on this thread, telling a multi-threaded runtime so (its other tasks
/// move to other threads meanwhile); on a current-thread runtime (tests), just run it.
fn blocking<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// sled's page cache.
const SLED_CACHE_BYTES: u64 = 16 << 20;

const TREE_META: &str = "meta";
const TREE_LOG: &str = "log";
const TREE_SM_V1: &str = "sm";
const TREE_OBJECTS: &str = "objects";
const KEY_FORMAT: &str = "format";
const KEY_VOTE: &str = "vote";
const KEY_COMMITTED: &str = "committed";
const KEY_LAST_PURGED: &str = "last_purged";
const KEY_STATE_V1: &str = "state";
const KEY_APPLIED: &str = "applied";
/// The cluster's DNS cookie secrets (`objects` tree).
const KEY_COOKIES: &str = "cookies";
/// The cluster's format, once raised past [`CLUSTER_FORMAT_START`] (absent before).
const KEY_CLUSTER_FORMAT: &str = "cluster_format";

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
    #[error(
        "the store in {} lost data it had acknowledged ({what}; {} says more was on disk): a damaged file was rolled back. \
         This node must not rejoin with it. Restore the directory from a backup, or move it aside \
         (`mv {} {}.damaged`) so that the node starts empty and catches up from the cluster",
        dir.display(), mark.display(), dir.display(), dir.display()
    )]
    LostAcknowledged {
        dir: PathBuf,
        mark: PathBuf,
        what: String,
    },
    #[error("cannot read or write the store in {}: {source}", dir.display())]
    Io {
        dir: PathBuf,
        #[source]
        source: sled::Error,
    },
    #[error("cannot read or write {}: {source}", path.display())]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The applied state as the rest of the node sees it.
#[derive(Clone, Debug)]
pub struct Applied {
    pub state: Arc<State>,
    /// The index of the last applied log entry (`None` before the first).
    pub last_applied: Option<u64>,
}

/// One apply batch (or a snapshot installed), for the publisher: the state after it and
/// what it changed.
#[derive(Clone, Debug)]
pub struct Change {
    pub state: Arc<State>,
    pub last_applied: Option<u64>,
    pub delta: Delta,
}

/// The acknowledgement mark's file name in the store's directory.
const MARK_FILE: &str = "meridian.ack";

/// The acknowledged high-water mark, kept beside the store (see the module doc).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Ack {
    vote: Option<Vote>,
    /// The last log index acknowledged as appended (after truncation: what is left).
    log_last: Option<u64>,
    /// The last applied index made durable.
    applied: Option<u64>,
}

/// Whether the store in `dir` has applied anything, read from its acknowledgement mark
/// alone, without opening the store (the node asks before it opens it, to skip reading a
/// bootstrap directory it will not import). A mark that is missing or does not read counts
/// as no: the open that follows says what is wrong with it.
pub fn holds_applied_state(dir: &Path) -> bool {
    let Ok(bytes) = std::fs::read(dir.join(MARK_FILE)) else {
        return false;
    };
    let text = String::from_utf8_lossy(&bytes);
    serde_json::from_str::<Ack>(text.trim_end_matches(['\0', ' ', '\n']))
        .is_ok_and(|a| a.applied.is_some())
}

/// Writes [`Ack`] in place and syncs it: one small write, no rename.
struct AckFile {
    ack: std::sync::Mutex<(Ack, Option<std::fs::File>)>,
}

impl AckFile {
    fn open(path: PathBuf) -> Result<(AckFile, Option<Ack>), StoreError> {
        let file_err = |source| StoreError::File {
            path: path.clone(),
            source,
        };
        let existing = match std::fs::read(&path) {
            // Created, but nothing acknowledged yet.
            Ok(bytes) if bytes.iter().all(|b| b.is_ascii_whitespace() || *b == 0) => None,
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                let ack: Ack = serde_json::from_str(text.trim_end_matches(['\0', ' ', '\n']))
                    .map_err(|e| StoreError::Corrupt {
                        dir: path.clone(),
                        what: format!("the acknowledgement mark does not parse: {e}"),
                    })?;
                Some(ack)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(file_err(e)),
        };
        let file = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .mode(0o600)
                .open(&path)
                .map_err(file_err)?
        };
        let ack = existing.clone().unwrap_or_default();
        Ok((
            AckFile {
                ack: std::sync::Mutex::new((ack, Some(file))),
            },
            existing,
        ))
    }

    /// Change the mark and make it durable. Called after the store's own flush.
    fn update(&self, f: impl FnOnce(&mut Ack)) -> std::io::Result<()> {
        use std::io::{Seek, Write};
        let mut guard = self
            .ack
            .lock()
            .map_err(|_| std::io::Error::other("ack mark lock poisoned"))?;
        let (ack, file) = &mut *guard;
        let before = ack.clone();
        f(ack);
        if *ack == before {
            return Ok(());
        }
        let Some(file) = file.as_mut() else {
            return Ok(());
        };
        let mut text = serde_json::to_vec(&*ack).map_err(std::io::Error::other)?;
        // A fixed size, so that an older, longer mark leaves no tail.
        if text.len() < 512 {
            text.resize(512, b' ');
        }
        file.seek(std::io::SeekFrom::Start(0))?;
        file.write_all(&text)?;
        file.sync_data()
    }
}

/// Open (or create) the store in `dir` (e.g. `DATA_DIR/raft`). Refuses, with a clear error, a
/// store written by a newer format than this binary knows, and one that lost anything it had
/// acknowledged. A format-1 store is converted to format 2 on the way.
pub fn open(dir: &Path) -> Result<(LogStore, StateMachineStore), StoreError> {
    let io = |source| StoreError::Io {
        dir: dir.to_path_buf(),
        source,
    };
    let corrupt = |what: String| StoreError::Corrupt {
        dir: dir.to_path_buf(),
        what,
    };
    // The state machine keeps the state in memory; sled's default 1 GiB page cache would
    // only grow the node's RSS.
    let db = sled::Config::new()
        .path(dir)
        .cache_capacity(SLED_CACHE_BYTES)
        .open()
        .map_err(|source| StoreError::Open {
            dir: dir.to_path_buf(),
            source,
        })?;
    restrict_permissions(dir);
    let meta = db.open_tree(TREE_META).map_err(io)?;
    let found = match meta.get(KEY_FORMAT).map_err(io)? {
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
            found
        }
        None => STORE_FORMAT,
    };
    let log = db.open_tree(TREE_LOG).map_err(io)?;
    let objects = db.open_tree(TREE_OBJECTS).map_err(io)?;

    if found < 2 {
        upgrade_v1(dir, &db, &objects)?;
    }
    if found != STORE_FORMAT || meta.get(KEY_FORMAT).map_err(io)?.is_none() {
        meta.insert(KEY_FORMAT, STORE_FORMAT.to_string().as_bytes())
            .map_err(io)?;
        db.flush().map_err(io)?;
    }

    let data = load_objects(dir, &objects)?;
    let log_store = LogStore {
        db: db.clone(),
        log,
        meta,
        ack: None,
        flusher: Default::default(),
    };

    // Fail closed: compare what is on disk with what was acknowledged.
    let mark_path = dir.join(MARK_FILE);
    let (ack_file, mark) = AckFile::open(mark_path.clone())?;
    let ack_file = Arc::new(ack_file);
    if let Some(mark) = mark {
        let lost = |what: String| StoreError::LostAcknowledged {
            dir: dir.to_path_buf(),
            mark: mark_path.clone(),
            what,
        };
        let vote: Option<Vote> = log_store
            .read_meta(KEY_VOTE, ErrorSubject::Vote)
            .map_err(|e| corrupt(e.to_string()))?;
        if let Some(acked) = mark.vote {
            if vote.is_none_or(|v| v < acked) {
                return Err(lost(format!(
                    "the vote is {vote:?}, {acked} was acknowledged"
                )));
            }
        }
        let last_purged: Option<LogId> = log_store
            .read_meta(KEY_LAST_PURGED, ErrorSubject::Logs)
            .map_err(|e| corrupt(e.to_string()))?;
        let last_in_log = match log_store.log.last().map_err(io)? {
            Some((k, _)) => key_index(&k),
            None => None,
        };
        let log_last = last_in_log.max(last_purged.map(|l| l.index));
        let applied = data.last_applied.map(|l| l.index);
        if let Some(acked) = mark.log_last {
            // Applied entries may have been purged from the log: they count as held.
            if log_last.max(applied) < Some(acked) {
                return Err(lost(format!(
                    "the log ends at {log_last:?}, {acked} was acknowledged"
                )));
            }
        }
        if mark.applied > applied {
            return Err(lost(format!(
                "the state is applied up to {applied:?}, {:?} was acknowledged",
                mark.applied
            )));
        }
    }
    let log_store = LogStore {
        ack: Some(ack_file.clone()),
        ..log_store
    };

    let (tx, _) = watch::channel(data.applied());
    let (changes_tx, changes_rx) = mpsc::unbounded_channel();
    let _ = changes_tx.send(Change {
        state: data.state.clone(),
        last_applied: data.last_applied.map(|l| l.index),
        delta: Delta::everything(),
    });
    let sm_store = StateMachineStore {
        inner: Arc::new(SmInner {
            db,
            objects,
            data: Mutex::new(data),
            tx,
            changes: changes_tx,
            changes_rx: std::sync::Mutex::new(Some(changes_rx)),
            ack: ack_file,
            dir: dir.to_path_buf(),
        }),
    };
    Ok((log_store, sm_store))
}

/// The store holds health-check URLs, TSIG secrets and DNSSEC private keys: only the node's
/// user may read it. Files a store of an older version left more open are closed down here;
/// files made from now on are 0600 because `serve` runs with umask 077.
fn restrict_permissions(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    // Bounded: sled's tree is two levels deep (`blobs/`, `snap.*`); a deeper one is not ours.
    let mut dirs = vec![(dir.to_path_buf(), 0u8)];
    while let Some((d, depth)) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
            let mode = if is_dir { 0o700 } else { 0o600 };
            let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode));
            if is_dir && depth < 4 {
                dirs.push((path, depth + 1));
            }
        }
    }
}

/// Only the format of a JSON blob, read before the rest so that a newer blob is refused
/// with a clear message rather than a parse error.
#[derive(Deserialize)]
struct Header {
    format: u32,
}

/// `applied` in tree `objects`.
#[derive(Serialize, Deserialize)]
struct AppliedRecord {
    format: u32,
    last_applied: Option<LogId>,
    membership: StoredMembership,
}

/// A zone as stored.
#[derive(Serialize, Deserialize)]
struct ZoneRecord {
    text: String,
    version: u64,
}

/// The state as format 1 kept it (the `sm/state` blob, and format-1 snapshots).
#[derive(Deserialize)]
struct StateV1 {
    #[serde(default)]
    zones: BTreeMap<String, String>,
    #[serde(default)]
    datacenters: BTreeMap<String, Datacenter>,
    #[serde(default)]
    services: BTreeMap<String, BTreeMap<String, Service>>,
    #[serde(default)]
    opinions: BTreeMap<String, BTreeMap<u64, Opinion>>,
    #[serde(default)]
    events: BTreeMap<String, std::collections::VecDeque<Event>>,
}

impl StateV1 {
    fn into_state(self, version: u64) -> Result<State, String> {
        let mut state = State::default();
        for (origin, text) in self.zones {
            let origin = ZoneName::canonical(origin).map_err(|e| e.to_string())?;
            state.load_zone(origin, &text, version)?;
        }
        for (_, dc) in self.datacenters {
            state.load_datacenter(DcEntry {
                dc: Arc::new(dc),
                version,
            });
        }
        let mut status: BTreeMap<String, DcStatus> = BTreeMap::new();
        for (id, opinions) in self.opinions {
            status.entry(id).or_default().opinions = opinions;
        }
        for (id, events) in self.events {
            status.entry(id).or_default().events = events;
        }
        for (id, s) in status {
            state.load_status(id, s);
        }
        for service in self.services.into_values().flat_map(|m| m.into_values()) {
            state
                .load_service(ServiceEntry {
                    service: Arc::new(service),
                    version,
                })
                .map_err(|e| e.to_string())?;
        }
        Ok(state)
    }
}

/// A Raft snapshot's bytes (format 2).
#[derive(Serialize, Deserialize)]
struct SnapshotV2 {
    format: u32,
    zones: Vec<(ZoneName, ZoneRecord)>,
    datacenters: Vec<DcEntry>,
    status: Vec<(String, DcStatus)>,
    services: Vec<ServiceEntry>,
    requests: Vec<(String, RequestRecord)>,
    #[serde(default)]
    cookies: Option<CookieSecrets>,
    #[serde(default)]
    history: Vec<HistoryEntry>,
    #[serde(default)]
    tsig_keys: Vec<TsigEntry>,
    #[serde(default)]
    zone_settings: Vec<(ZoneName, SettingsEntry)>,
    #[serde(default)]
    serials: Vec<(ZoneName, u32)>,
    #[serde(default)]
    dnssec: Vec<(ZoneName, DnssecEntry)>,
    /// The cluster's format, when raised past its start (absent in older snapshots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cluster_format: Option<u32>,
}

impl SnapshotV2 {
    fn of(state: &State) -> SnapshotV2 {
        SnapshotV2 {
            format: state.stored_format(),
            zones: state
                .zones()
                .map(|(o, z)| {
                    let record = ZoneRecord {
                        text: z.text.to_string(),
                        version: z.version,
                    };
                    (o.clone(), record)
                })
                .collect(),
            datacenters: state.datacenters().cloned().collect(),
            status: state
                .datacenters()
                .map(|d| (d.dc.id.clone(), (*state.status(&d.dc.id)).clone()))
                .filter(|(_, s)| *s != DcStatus::default())
                .collect(),
            services: state.services().cloned().collect(),
            requests: state
                .requests()
                .map(|(id, r)| (id.clone(), (**r).clone()))
                .collect(),
            cookies: state.cookie_secrets().map(|c| (**c).clone()),
            history: state.history().map(|e| (**e).clone()).collect(),
            tsig_keys: state.tsig_keys().cloned().collect(),
            zone_settings: state
                .all_zone_settings()
                .map(|(o, s)| (o.clone(), s.clone()))
                .collect(),
            serials: state.serials().map(|(o, s)| (o.clone(), *s)).collect(),
            dnssec: state
                .all_dnssec()
                .map(|(o, d)| (o.clone(), d.clone()))
                .collect(),
            cluster_format: Some(state.format()).filter(|&f| f > CLUSTER_FORMAT_START),
        }
    }

    fn into_state(self) -> Result<State, String> {
        let mut state = State::default();
        for (origin, z) in self.zones {
            state.load_zone(origin, &z.text, z.version)?;
        }
        for d in self.datacenters {
            state.load_datacenter(d);
        }
        for (id, s) in self.status {
            state.load_status(id, s);
        }
        for s in self.services {
            state.load_service(s).map_err(|e| e.to_string())?;
        }
        for (id, r) in self.requests {
            state.load_request(id, r);
        }
        if let Some(c) = self.cookies {
            state.load_cookies(c);
        }
        for e in self.history {
            state.load_history(e);
        }
        for k in self.tsig_keys {
            state.load_tsig_key(k).map_err(|e| e.to_string())?;
        }
        for (o, z) in self.zone_settings {
            state.load_zone_settings(o, z);
        }
        for (o, serial) in self.serials {
            state.load_serial(o, serial);
        }
        for (o, d) in self.dnssec {
            state.load_dnssec(o, d);
        }
        if let Some(f) = self.cluster_format {
            state.load_format(f);
        }
        Ok(state)
    }
}

/// Read a snapshot, format 1 or 2, from a file (read twice: its format, then its state, so
/// that a large snapshot is never held as bytes beside the state it becomes).
fn decode_snapshot(file: &mut std::fs::File, version: u64) -> Result<State, String> {
    use std::io::{BufReader, Seek, SeekFrom};
    let from_start = |file: &mut std::fs::File| {
        file.seek(SeekFrom::Start(0)).map_err(|e| e.to_string())?;
        Ok::<_, String>(BufReader::new(file.try_clone().map_err(|e| e.to_string())?))
    };
    let header: Header = serde_json::from_reader(from_start(file)?).map_err(|e| e.to_string())?;
    if header.format > STATE_FORMAT {
        return Err(format!(
            "written by a newer Meridian (state format {}; this binary reads up to {STATE_FORMAT}): upgrade this binary",
            header.format
        ));
    }
    if header.format < 2 {
        #[derive(Deserialize)]
        struct SnapshotV1 {
            state: StateV1,
        }
        let v1: SnapshotV1 =
            serde_json::from_reader(from_start(file)?).map_err(|e| e.to_string())?;
        return v1.state.into_state(version);
    }
    let v2: SnapshotV2 = serde_json::from_reader(from_start(file)?).map_err(|e| e.to_string())?;
    v2.into_state()
}

/// A new snapshot file in `dir`, open for reading and writing, already unlinked: it lives
/// while openraft holds it (sending or receiving) and leaves nothing behind, whatever ends.
fn snapshot_file(dir: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = dir.join(format!("snapshot-{}-{n}.tmp", std::process::id()));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(file)
}

/// A history entry's key: its index, zero-padded so the keys sort by index.
fn history_key(index: u64) -> Vec<u8> {
    format!("h/{index:020}").into_bytes()
}
fn zone_key(origin: &ZoneName) -> Vec<u8> {
    format!("z/{origin}").into_bytes()
}
fn dc_key(id: &str) -> Vec<u8> {
    format!("d/{id}").into_bytes()
}
fn status_key(id: &str) -> Vec<u8> {
    format!("t/{id}").into_bytes()
}
fn service_key(zone: &ZoneName, name: &ServiceName) -> Vec<u8> {
    format!("s/{zone}\0{name}").into_bytes()
}
fn request_key(id: &str) -> Vec<u8> {
    format!("r/{id}").into_bytes()
}
fn tsig_key_key(name: &KeyName) -> Vec<u8> {
    format!("k/{name}").into_bytes()
}
fn settings_key(origin: &ZoneName) -> Vec<u8> {
    format!("o/{origin}").into_bytes()
}
fn serial_key(origin: &ZoneName) -> Vec<u8> {
    format!("x/{origin}").into_bytes()
}
/// A zone's DNSSEC keys (private keys included: the store is 0600).
fn dnssec_key(origin: &ZoneName) -> Vec<u8> {
    format!("y/{origin}").into_bytes()
}

/// A sled batch, and how much it writes: after a large one, the memory sled's old tree
/// nodes held is reclaimed ([`crate::memory::reclaim_after_large_write`]).
#[derive(Default)]
struct Writes {
    batch: sled::Batch,
    /// Keys written or removed.
    keys: usize,
}

/// A batch of this many keys is large (about 4 KB of sled garbage per key written).
const LARGE_BATCH_KEYS: usize = 1000;

impl Writes {
    fn insert(&mut self, key: impl Into<sled::IVec>, value: Vec<u8>) {
        self.keys += 1;
        self.batch.insert(key, value);
    }

    fn remove(&mut self, key: impl Into<sled::IVec>) {
        self.keys += 1;
        self.batch.remove(key);
    }

    fn is_large(&self) -> bool {
        self.keys >= LARGE_BATCH_KEYS
    }
}

/// Every object of `state` into `batch` (a snapshot installed, a format-1 store converted).
fn all_objects(state: &State, batch: &mut Writes) -> Result<(), serde_json::Error> {
    let mut delta = Delta::default();
    delta.zones.extend(state.zones().map(|(o, _)| o.clone()));
    delta
        .datacenters
        .extend(state.datacenters().map(|d| d.dc.id.clone()));
    delta.statuses = delta.datacenters.clone();
    delta.services.extend(state.service_keys());
    delta
        .requests
        .extend(state.requests().map(|(id, _)| id.clone()));
    delta.cookies = true;
    delta.format = state.format() > CLUSTER_FORMAT_START;
    delta.history.extend(state.history().map(|e| e.index));
    delta.tsig_keys.extend(state.tsig_key_names().cloned());
    delta
        .zone_settings
        .extend(state.all_zone_settings().map(|(o, _)| o.clone()));
    delta
        .serials
        .extend(state.serials().map(|(o, _)| o.clone()));
    delta
        .dnssec
        .extend(state.all_dnssec().map(|(o, _)| o.clone()));
    changed_objects(state, &delta, batch)
}

/// The keys `delta` names, as `state` has them now (removed when it has them no more).
fn changed_objects(
    state: &State,
    delta: &Delta,
    batch: &mut Writes,
) -> Result<(), serde_json::Error> {
    for origin in &delta.zones {
        match state.zone(origin) {
            Some(z) => batch.insert(
                zone_key(origin),
                serde_json::to_vec(&ZoneRecord {
                    text: z.text.to_string(),
                    version: z.version,
                })?,
            ),
            None => batch.remove(zone_key(origin)),
        }
    }
    for id in &delta.datacenters {
        put(batch, dc_key(id), state.datacenter(id))?;
    }
    for id in &delta.statuses {
        let status = state.status(id);
        if state.datacenter(id).is_some() && *status != DcStatus::default() {
            batch.insert(status_key(id), serde_json::to_vec(&*status)?);
        } else {
            batch.remove(status_key(id));
        }
    }
    for (zone, name) in &delta.services {
        put(batch, service_key(zone, name), state.service(zone, name))?;
    }
    for id in &delta.requests {
        put(batch, request_key(id), state.request(id))?;
    }
    for index in &delta.history {
        put(batch, history_key(*index), state.history_entry(*index))?;
    }
    if delta.cookies {
        put(batch, KEY_COOKIES.into(), state.cookie_secrets())?;
    }
    if delta.format {
        batch.insert(KEY_CLUSTER_FORMAT, serde_json::to_vec(&state.format())?);
    }
    for name in &delta.tsig_keys {
        put(batch, tsig_key_key(name), state.tsig_key(name))?;
    }
    for origin in &delta.zone_settings {
        put(batch, settings_key(origin), state.zone_settings(origin))?;
    }
    for origin in &delta.serials {
        put(
            batch,
            serial_key(origin),
            state.stored_serial(origin).as_ref(),
        )?;
    }
    for origin in &delta.dnssec {
        put(batch, dnssec_key(origin), state.dnssec(origin))?;
    }
    Ok(())
}

/// Write `value` at `key`, or remove the key when there is none.
fn put<T: Serialize>(
    batch: &mut Writes,
    key: Vec<u8>,
    value: Option<T>,
) -> Result<(), serde_json::Error> {
    match value {
        Some(v) => batch.insert(key, serde_json::to_vec(&v)?),
        None => batch.remove(key),
    }
    Ok(())
}

/// Convert a format-1 store (one `sm/state` value) to one key per object, in one batch.
fn upgrade_v1(dir: &Path, db: &sled::Db, objects: &sled::Tree) -> Result<(), StoreError> {
    let io = |source| StoreError::Io {
        dir: dir.to_path_buf(),
        source,
    };
    let corrupt = |what: String| StoreError::Corrupt {
        dir: dir.to_path_buf(),
        what,
    };
    let sm = db.open_tree(TREE_SM_V1).map_err(io)?;
    let Some(bytes) = sm.get(KEY_STATE_V1).map_err(io)? else {
        return Ok(());
    };
    let header: Header =
        serde_json::from_slice(&bytes).map_err(|e| corrupt(format!("sm/state: {e}")))?;
    if header.format > 1 {
        return Err(StoreError::NewerState {
            dir: dir.to_path_buf(),
            found: header.format,
            supported: STATE_FORMAT,
        });
    }
    #[derive(Deserialize)]
    struct BlobV1 {
        last_applied: Option<LogId>,
        membership: StoredMembership,
        state: StateV1,
    }
    let blob: BlobV1 =
        serde_json::from_slice(&bytes).map_err(|e| corrupt(format!("sm/state: {e}")))?;
    let version = blob.last_applied.map_or(0, |l| l.index);
    let state = blob
        .state
        .into_state(version)
        .map_err(|e| corrupt(format!("sm/state does not rebuild: {e}")))?;
    let mut batch = Writes::default();
    all_objects(&state, &mut batch).map_err(|e| corrupt(e.to_string()))?;
    let applied = AppliedRecord {
        format: state.stored_format(),
        last_applied: blob.last_applied,
        membership: blob.membership,
    };
    batch.insert(
        KEY_APPLIED,
        serde_json::to_vec(&applied).map_err(|e| corrupt(e.to_string()))?,
    );
    let large = batch.is_large();
    objects.apply_batch(batch.batch).map_err(io)?;
    db.flush().map_err(io)?;
    db.drop_tree(TREE_SM_V1).map_err(io)?;
    db.flush().map_err(io)?;
    if large {
        // In the background: it spreads its passes over a few seconds.
        std::thread::spawn(crate::memory::reclaim_after_large_write);
    }
    tracing::info!(dir = %dir.display(), "store converted from format 1 to 2 (one key per object)");
    Ok(())
}

/// The state machine as stored: every object, and what was applied.
fn load_objects(dir: &Path, objects: &sled::Tree) -> Result<SmData, StoreError> {
    let corrupt = |what: String| StoreError::Corrupt {
        dir: dir.to_path_buf(),
        what,
    };
    let mut data = SmData::default();
    let mut state = State::default();
    for item in objects.iter() {
        let (k, v) = item.map_err(|source| StoreError::Io {
            dir: dir.to_path_buf(),
            source,
        })?;
        let key = String::from_utf8_lossy(&k).into_owned();
        let bad = |e: &dyn std::fmt::Display| corrupt(format!("objects/{key}: {e}"));
        if key == KEY_APPLIED {
            let header: Header = serde_json::from_slice(&v).map_err(|e| bad(&e))?;
            if header.format > STATE_FORMAT {
                return Err(StoreError::NewerState {
                    dir: dir.to_path_buf(),
                    found: header.format,
                    supported: STATE_FORMAT,
                });
            }
            let a: AppliedRecord = serde_json::from_slice(&v).map_err(|e| bad(&e))?;
            data.last_applied = a.last_applied;
            data.membership = a.membership;
        } else if let Some(origin) = key.strip_prefix("z/") {
            let z: ZoneRecord = serde_json::from_slice(&v).map_err(|e| bad(&e))?;
            let origin = ZoneName::canonical(origin.to_string()).map_err(|e| bad(&e))?;
            state
                .load_zone(origin, &z.text, z.version)
                .map_err(|e| bad(&e))?;
        } else if key.starts_with("d/") {
            state.load_datacenter(serde_json::from_slice(&v).map_err(|e| bad(&e))?);
        } else if let Some(id) = key.strip_prefix("t/") {
            state.load_status(
                id.to_string(),
                serde_json::from_slice(&v).map_err(|e| bad(&e))?,
            );
        } else if key.starts_with("s/") {
            state
                .load_service(serde_json::from_slice(&v).map_err(|e| bad(&e))?)
                .map_err(|e| bad(&e))?;
        } else if key.starts_with("h/") {
            state.load_history(serde_json::from_slice(&v).map_err(|e| bad(&e))?);
        } else if key == KEY_CLUSTER_FORMAT {
            state.load_format(serde_json::from_slice(&v).map_err(|e| bad(&e))?);
        } else if key == KEY_COOKIES {
            state.load_cookies(serde_json::from_slice(&v).map_err(|e| bad(&e))?);
        } else if let Some(id) = key.strip_prefix("r/") {
            state.load_request(
                id.to_string(),
                serde_json::from_slice(&v).map_err(|e| bad(&e))?,
            );
        } else if key.starts_with("k/") {
            state
                .load_tsig_key(serde_json::from_slice(&v).map_err(|e| bad(&e))?)
                .map_err(|e| bad(&e))?;
        } else if let Some(origin) = key.strip_prefix("o/") {
            state.load_zone_settings(
                ZoneName::canonical(origin.to_string()).map_err(|e| bad(&e))?,
                serde_json::from_slice(&v).map_err(|e| bad(&e))?,
            );
        } else if let Some(origin) = key.strip_prefix("y/") {
            state.load_dnssec(
                ZoneName::canonical(origin.to_string()).map_err(|e| bad(&e))?,
                serde_json::from_slice(&v).map_err(|e| bad(&e))?,
            );
        } else if let Some(origin) = key.strip_prefix("x/") {
            state.load_serial(
                ZoneName::canonical(origin.to_string()).map_err(|e| bad(&e))?,
                serde_json::from_slice(&v).map_err(|e| bad(&e))?,
            );
        } else {
            return Err(corrupt(format!("unknown key objects/{key}")));
        }
    }
    if data.membership.log_id().is_some() {
        state.load_voters(data.membership.membership().voter_ids().collect());
    }
    data.state = Arc::new(state);
    Ok(data)
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
    /// The acknowledged high-water mark (absent only while the store is being opened).
    ack: Option<Arc<AckFile>>,
    /// The flusher of appended entries, started by the first append (shared by clones).
    flusher: Arc<std::sync::OnceLock<mpsc::UnboundedSender<FlushJob>>>,
}

/// Work for the flusher task ([`flush_in_order`]).
enum FlushJob {
    /// Entries up to `last` are in sled: flush, raise the mark, then tell Raft.
    Appended {
        /// Carried per job, so that an idle flusher holds no handle on the store (a
        /// closed store can be opened again at once).
        db: sled::Db,
        last: Option<u64>,
        ack: Option<Arc<AckFile>>,
        callback: LogFlushed<TypeConfig>,
    },
    /// Answered once every job sent before it is done.
    Barrier(tokio::sync::oneshot::Sender<()>),
}

/// Flush appended entries off Raft's core task, in the order they were appended.
///
/// openraft 0.9 calls `append` on the task that also sends heartbeats: a leader flushing a
/// zone of tens of megabytes there sends none meanwhile, and its followers call an
/// election. `append` puts the entries in sled and returns; this task makes them durable,
/// raises the acknowledged mark and only then reports them flushed, so Raft counts them
/// (for a commit or an AppendEntries answer) exactly as before. Jobs queued together share
/// one flush.
async fn flush_in_order(mut jobs: mpsc::UnboundedReceiver<FlushJob>) {
    let mut batch = Vec::new();
    while let Some(first) = jobs.recv().await {
        batch.push(first);
        while let Ok(more) = jobs.try_recv() {
            batch.push(more);
        }
        let db = batch.iter().find_map(|j| match j {
            FlushJob::Appended { db, .. } => Some(db.clone()),
            FlushJob::Barrier(_) => None,
        });
        let flushed = if let Some(db) = db {
            match tokio::task::spawn_blocking(move || db.flush()).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(e) => Err(e.to_string()),
            }
        } else {
            Ok(())
        };
        for job in batch.drain(..) {
            match job {
                FlushJob::Barrier(done) => {
                    let _ = done.send(());
                }
                FlushJob::Appended {
                    last,
                    ack,
                    callback,
                    ..
                } => {
                    let done = flushed.clone().and_then(|()| match &ack {
                        Some(ack) => ack
                            .update(|a| a.log_last = a.log_last.max(last))
                            .map_err(|e| e.to_string()),
                        None => Ok(()),
                    });
                    if let Err(e) = &done {
                        tracing::error!(error = %e, "flushing the Raft log failed");
                    }
                    callback.log_io_completed(done.map_err(std::io::Error::other));
                }
            }
        }
    }
}

impl LogStore {
    /// Wait until every append so far is flushed and acknowledged (or failed).
    async fn flushed(&self) {
        if let Some(flusher) = self.flusher.get() {
            let (tx, rx) = tokio::sync::oneshot::channel();
            if flusher.send(FlushJob::Barrier(tx)).is_ok() {
                let _ = rx.await;
            }
        }
    }

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

    /// Move the acknowledged mark (after a flush that made it true).
    fn acknowledge(
        &self,
        subject: ErrorSubject<u64>,
        f: impl FnOnce(&mut Ack),
    ) -> Result<(), StorageError> {
        match &self.ack {
            Some(ack) => ack
                .update(f)
                .map_err(|e| io_err(subject, ErrorVerb::Write, AnyError::new(&e))),
            None => Ok(()),
        }
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
        self.flush(ErrorSubject::Vote).await?;
        self.acknowledge(ErrorSubject::Vote, |a| a.vote = Some(*vote))
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
        let mut last = None;
        for entry in entries {
            last = Some(entry.log_id.index);
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
        // Acknowledged only once on disk, by the flusher (which keeps the order).
        let job = FlushJob::Appended {
            db: self.db.clone(),
            last,
            ack: self.ack.clone(),
            callback,
        };
        let flusher = self.flusher.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(flush_in_order(rx));
            tx
        });
        flusher.send(job).map_err(|_| {
            io_err(
                ErrorSubject::Logs,
                ErrorVerb::Write,
                AnyError::error("the log flusher has stopped"),
            )
        })
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // A pending flush must not raise the mark over entries removed here.
        self.flushed().await;
        // Lower the mark first: a mark below the log is safe, one above it is not.
        self.acknowledge(ErrorSubject::Logs, |a| {
            a.log_last = a.log_last.min(log_id.index.checked_sub(1));
        })?;
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

    fn record(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(&AppliedRecord {
            format: self.state.stored_format(),
            last_applied: self.last_applied,
            membership: self.membership.clone(),
        })
    }

    /// The Raft snapshot of this state: its meta, and the state serialized into a file in
    /// `dir` (read back from its start).
    fn snapshot(&self, dir: &Path) -> std::io::Result<(SnapshotMeta, std::fs::File)> {
        use std::io::{Seek, SeekFrom, Write};
        let snapshot_id = match &self.last_applied {
            Some(l) => format!("{}-{}", l.leader_id.term, l.index),
            None => "0-none".to_string(),
        };
        let meta = SnapshotMeta {
            last_log_id: self.last_applied,
            last_membership: self.membership.clone(),
            snapshot_id,
        };
        let mut file = snapshot_file(dir)?;
        let mut out = std::io::BufWriter::new(&mut file);
        serde_json::to_writer(&mut out, &SnapshotV2::of(&self.state))?;
        out.flush()?;
        drop(out);
        file.seek(SeekFrom::Start(0))?;
        Ok((meta, file))
    }
}

struct SmInner {
    db: sled::Db,
    objects: sled::Tree,
    /// Held across a whole apply or install, so that they are serialized.
    data: Mutex<SmData>,
    tx: watch::Sender<Applied>,
    changes: mpsc::UnboundedSender<Change>,
    changes_rx: std::sync::Mutex<Option<mpsc::UnboundedReceiver<Change>>>,
    ack: Arc<AckFile>,
    /// Where snapshot files are made (the store's directory).
    dir: PathBuf,
}

impl SmInner {
    async fn flush(&self, subject: ErrorSubject<u64>) -> Result<(), StorageError> {
        self.db
            .flush_async()
            .await
            .map_err(|e| io_err(subject.clone(), ErrorVerb::Write, sled_err(e)))?;
        Ok(())
    }

    /// Write `batch` with the applied record, flush, move the mark, then show the new state.
    async fn commit(
        &self,
        data: &mut SmData,
        next: SmData,
        mut batch: Writes,
        delta: Delta,
        subject: ErrorSubject<u64>,
    ) -> Result<(), StorageError> {
        let write = |e: AnyError| io_err(subject.clone(), ErrorVerb::Write, e);
        batch.insert(
            KEY_APPLIED,
            next.record().map_err(|e| write(AnyError::new(&e)))?,
        );
        let large = batch.is_large();
        self.objects
            .apply_batch(batch.batch)
            .map_err(|e| write(sled_err(e)))?;
        self.flush(subject.clone()).await?;
        if large {
            // Off this thread (it spreads its passes over a few seconds).
            tokio::task::spawn_blocking(crate::memory::reclaim_after_large_write);
        }
        let applied = next.last_applied.map(|l| l.index);
        self.ack
            .update(|a| a.applied = a.applied.max(applied))
            .map_err(|e| write(AnyError::new(&e)))?;
        *data = next;
        self.tx.send_replace(data.applied());
        let _ = self.changes.send(Change {
            state: data.state.clone(),
            last_applied: applied,
            delta,
        });
        Ok(())
    }
}

/// The state machine: the applied [`State`], its last applied log id and membership. Clones
/// share the same state.
#[derive(Clone)]
pub struct StateMachineStore {
    inner: Arc<SmInner>,
}

impl StateMachineStore {
    /// The latest applied state, whenever entries are applied (or a snapshot installed).
    /// Intermediate states may be skipped: for readers of the state, not of changes.
    pub fn subscribe(&self) -> watch::Receiver<Applied> {
        self.inner.tx.subscribe()
    }

    /// Every apply batch with what it changed, in order, starting with the state as opened
    /// (as a change of everything): the publisher's feed. Taken once.
    pub fn take_changes(&self) -> Option<mpsc::UnboundedReceiver<Change>> {
        self.inner.changes_rx.lock().ok()?.take()
    }

    /// The state as of the last apply (for reads by the admin API); cheap.
    pub fn current(&self) -> Applied {
        self.inner.tx.borrow().clone()
    }
}

/// Builds a snapshot of the state machine as it was when the builder was made.
pub struct StoreSnapshotBuilder {
    view: SmData,
    dir: PathBuf,
}

impl RaftSnapshotBuilder<TypeConfig> for StoreSnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let (meta, file) = self.view.snapshot(&self.dir).map_err(|e| {
            io_err(
                ErrorSubject::Snapshot(None),
                ErrorVerb::Write,
                AnyError::new(&e),
            )
        })?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(tokio::fs::File::from_std(file)),
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
        let mut state = (*next.state).clone();
        let mut delta = Delta::default();
        let mut responses = Vec::new();
        for entry in entries {
            let response = match entry.payload {
                EntryPayload::Blank => Response::Noop,
                EntryPayload::Membership(m) => {
                    let mut d = Delta::default();
                    state.set_voters(m.voter_ids().collect(), &mut d);
                    delta.merge(d);
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
                    let index = entry.log_id.index;
                    let (response, d) = if req.cmd.text_bytes() >= LARGE_TEXT {
                        // Parsing a zone of a million records takes seconds: let the
                        // runtime move its other tasks (Raft heartbeats) off this thread.
                        blocking(|| state.apply_request(&req, index))
                    } else {
                        state.apply_request(&req, index)
                    };
                    delta.merge(d);
                    response
                }
            };
            next.last_applied = Some(entry.log_id);
            responses.push(response);
        }
        if responses.is_empty() {
            return Ok(responses);
        }
        next.state = Arc::new(state);
        let mut batch = Writes::default();
        changed_objects(&next.state, &delta, &mut batch).map_err(|e| {
            io_err(
                ErrorSubject::StateMachine,
                ErrorVerb::Write,
                AnyError::new(&e),
            )
        })?;
        self.inner
            .commit(&mut data, next, batch, delta, ErrorSubject::StateMachine)
            .await?;
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        let view = self.inner.data.lock().await.clone();
        StoreSnapshotBuilder {
            view,
            dir: self.inner.dir.clone(),
        }
    }

    /// A snapshot being received is written to a file (openraft writes each chunk at its
    /// offset; the Raft server has checked the offsets and the size cap).
    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError> {
        let file = snapshot_file(&self.inner.dir).map_err(|e| {
            io_err(
                ErrorSubject::Snapshot(None),
                ErrorVerb::Write,
                AnyError::new(&e),
            )
        })?;
        Ok(Box::new(tokio::fs::File::from_std(file)))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError> {
        let subject = || ErrorSubject::Snapshot(Some(meta.signature()));
        let mut file = snapshot.into_std().await;
        let version = meta.last_log_id.map_or(0, |l| l.index);
        let state = decode_snapshot(&mut file, version).map_err(|e| {
            io_err(
                subject(),
                ErrorVerb::Read,
                AnyError::error(format!("snapshot {}: {e}", meta.snapshot_id)),
            )
        })?;
        let mut state = state;
        if meta.last_membership.log_id().is_some() {
            state.load_voters(meta.last_membership.membership().voter_ids().collect());
        }
        let mut data = self.inner.data.lock().await;
        let next = SmData {
            state: Arc::new(state),
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
        };
        let write = |e: AnyError| io_err(subject(), ErrorVerb::Write, e);
        // Replace every object: remove what the snapshot does not have.
        let mut batch = Writes::default();
        for item in self.inner.objects.iter() {
            let (k, _) = item.map_err(|e| write(sled_err(e)))?;
            batch.remove(k);
        }
        all_objects(&next.state, &mut batch).map_err(|e| write(AnyError::new(&e)))?;
        self.inner
            .commit(&mut data, next, batch, Delta::everything(), subject())
            .await
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let view = self.inner.data.lock().await.clone();
        if view.last_applied.is_none() {
            return Ok(None);
        }
        let mut builder = StoreSnapshotBuilder {
            view,
            dir: self.inner.dir.clone(),
        };
        builder.build_snapshot().await.map(Some)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use openraft::storage::RaftLogStorageExt;
    use openraft::testing::{StoreBuilder, Suite};
    use openraft::{CommittedLeaderId, Membership};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::cluster::command::Command;
    use crate::cluster::types::{NodeInfo, Request};
    use crate::model::{Datacenter, DcState, OnAllDown, PolicyKind, Service};

    const ZONE: &str = "$TTL 300\n@ IN SOA ns1 hostmaster 1 7200 900 1209600 300\n@ IN NS ns1\nns1 IN A 192.0.2.1\n";
    const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/log-v1.json");

    /// The whole state as JSON, to compare two states.
    fn dump(state: &State) -> serde_json::Value {
        serde_json::to_value(SnapshotV2::of(state)).expect("json")
    }

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
                v: 1,
                at_ms: 1_700_000_000_000 + index,
                cmd,
                id: None,
                actor: None,
                if_match: None,
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

    /// Open, retrying for a while: a dropped sled database releases its file lock from a
    /// background thread, a moment after the drop.
    fn open_ok(dir: &Path) -> (LogStore, StateMachineStore) {
        let mut last = None;
        for _ in 0..50 {
            match open(dir) {
                Ok(s) => return s,
                Err(e) => last = Some(e),
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("open {}: {last:?}", dir.display())
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
            before = dump(&applied.state);
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
        assert_eq!(dump(&now.state)["zones"], before["zones"]);
        assert_eq!(now.state.zones().count(), 1, "derived data rebuilt on open");
        assert!(now.state.service("example.com.", "www").is_some());
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
            snap.meta.snapshot_id.starts_with("1-6"),
            "{}",
            snap.meta.snapshot_id
        );
        let cur = src
            .get_current_snapshot()
            .await
            .expect("current")
            .expect("some");
        assert_eq!(cur.meta, snap.meta);
        let snap_bytes = read_all(snap.snapshot).await;
        assert_eq!(read_all(cur.snapshot).await, snap_bytes);

        let dst_dir = temp();
        {
            let (_log, mut dst) = open_ok(dst_dir.path());
            let rx = dst.subscribe();
            let mut buf = dst.begin_receiving_snapshot().await.expect("begin");
            assert_eq!(buf.metadata().await.expect("meta").len(), 0);
            // Chunk by chunk, as openraft writes what arrives.
            for chunk in snap_bytes.chunks(7) {
                buf.write_all(chunk).await.expect("write chunk");
            }
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
            assert_eq!(dump(&dst.current().state), dump(&src.current().state));
        }
        // After a restart: the state and the snapshot are both still there.
        let (_log, mut dst) = open_ok(dst_dir.path());
        assert_eq!(dst.current().last_applied, Some(6));
        assert_eq!(dst.current().state.zones().count(), 1);
        let cur = dst
            .get_current_snapshot()
            .await
            .expect("current")
            .expect("some");
        assert_eq!(cur.meta, snap.meta);
        assert_eq!(read_all(cur.snapshot).await, snap_bytes);
        // No snapshot file is left behind in the store's directory.
        let left: Vec<_> = std::fs::read_dir(dst_dir.path())
            .expect("dir")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("snapshot-"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    /// The cluster format survives a restart and travels in snapshots; until it is raised,
    /// a snapshot is what the first cluster format wrote (state format 2, no new field), so
    /// an older member installs it.
    #[tokio::test]
    async fn the_cluster_format_is_stored_and_in_snapshots_only_once_raised() {
        let json = |bytes: &[u8]| -> serde_json::Value {
            serde_json::from_slice(bytes).expect("snapshot JSON")
        };
        let src_dir = temp();
        let (bytes, meta) = {
            let (_log, mut src) = open_ok(src_dir.path());
            src.apply(fixture_entries()).await.expect("apply");
            let snap = src.get_snapshot_builder().await.build_snapshot().await;
            let first = json(&read_all(snap.expect("build").snapshot).await);
            assert_eq!(first["format"], 2);
            assert!(first.get("cluster_format").is_none(), "{first}");
            let raise = Command::SetFormat {
                format: FORMAT_VERSION,
            };
            src.apply([normal(1, 7, raise)]).await.expect("apply");
            assert_eq!(src.current().state.format(), FORMAT_VERSION);
            let snap = src.get_snapshot_builder().await.build_snapshot().await;
            let snap = snap.expect("build");
            (read_all(snap.snapshot).await, snap.meta)
        };
        let raised = json(&bytes);
        assert_eq!(raised["format"], STATE_FORMAT);
        assert_eq!(raised["cluster_format"], FORMAT_VERSION);
        {
            let (_log, src) = open_ok(src_dir.path());
            assert_eq!(
                src.current().state.format(),
                FORMAT_VERSION,
                "after a restart"
            );
        }

        let dst_dir = temp();
        let (_log, mut dst) = open_ok(dst_dir.path());
        let mut buf = dst.begin_receiving_snapshot().await.expect("begin");
        buf.write_all(&bytes).await.expect("write");
        dst.install_snapshot(&meta, buf).await.expect("install");
        assert_eq!(dst.current().state.format(), FORMAT_VERSION, "installed");
    }

    async fn read_all(mut f: Box<tokio::fs::File>) -> Vec<u8> {
        let mut out = Vec::new();
        f.read_to_end(&mut out).await.expect("read snapshot");
        out
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
        let mut file = sm.begin_receiving_snapshot().await.expect("begin");
        file.write_all(br#"{"format":99,"state":{"zones":{}}}"#)
            .await
            .expect("write");
        let err = sm.install_snapshot(&meta, file).await.unwrap_err();
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
                    supported: 2,
                    ..
                }
            ),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("was written by a newer Meridian (format 99; this binary reads up to 2): upgrade this binary"),
            "{msg}"
        );
        assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
    }

    /// The state only ever wrote canonical names; a key with another spelling is damage,
    /// refused rather than read under a name its key does not have.
    #[tokio::test]
    async fn a_stored_name_not_in_canonical_form_is_refused() {
        let dir = temp();
        {
            let (_log, mut sm) = open_ok(dir.path());
            sm.apply(fixture_entries()).await.expect("apply");
        }
        let mut db = None;
        for _ in 0..50 {
            match sled::open(dir.path()) {
                Ok(d) => {
                    db = Some(d);
                    break;
                }
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(100)),
            }
        }
        {
            let db = db.expect("sled");
            let objects = db.open_tree(TREE_OBJECTS).expect("objects");
            let zone = objects
                .remove("z/example.com.")
                .expect("remove")
                .expect("the zone is stored");
            objects.insert("z/Example.COM.", zone).expect("insert");
            db.flush().expect("flush");
        }
        let mut last = None;
        for _ in 0..50 {
            match open(dir.path()) {
                Ok(_) => panic!("a store with a non-canonical zone key was opened"),
                Err(StoreError::Corrupt { what, .. }) => {
                    last = Some(what);
                    break;
                }
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(100)),
            }
        }
        let what = last.expect("refused as corrupt");
        assert!(
            what.contains("objects/z/Example.COM.") && what.contains("canonical"),
            "{what}"
        );
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
        assert_eq!(
            state.zones().map(|(o, _)| o.as_str()).collect::<Vec<_>>(),
            vec!["example.com."]
        );
        assert_eq!(
            state
                .datacenters()
                .map(|d| d.dc.id.as_str())
                .collect::<Vec<_>>(),
            vec!["lon", "nyc"]
        );
        let dc = |id: &str| state.datacenter(id).expect("dc").dc.clone();
        assert_eq!(
            dc("nyc").addresses,
            vec!["198.51.100.10".parse::<std::net::IpAddr>().expect("ip")]
        );
        assert_eq!(dc("lon").state, DcState::Active);
        let www = &state.service("example.com.", "www").expect("www").service;
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

    #[test]
    fn a_format_1_store_is_converted_to_one_key_per_object() {
        // What a format-1 binary left: meta/format 1 and the whole state in sm/state.
        let dir = temp();
        {
            let db = sled::open(dir.path()).expect("sled");
            db.open_tree(TREE_META)
                .expect("meta")
                .insert(KEY_FORMAT, "1")
                .expect("format");
            let blob = serde_json::json!({
                "format": 1,
                "last_applied": lid(1, 6),
                "membership": StoredMembership::default(),
                "state": {
                    "zones": {"example.com.": ZONE},
                    "datacenters": {
                        "lon": dc("lon", "192.0.2.10"),
                        "nyc": Datacenter { state: DcState::Drained, ..dc("nyc", "198.51.100.10") },
                    },
                    "services": {"example.com.": {"www": match put_service() {
                        Command::PutService { service } => Service { zone: "example.com.".into(), ..service },
                        _ => unreachable!(),
                    }}},
                    "opinions": {"lon": {"1": {"up": true, "at_ms": 5, "reason": "ok"}}},
                    "events": {},
                },
            });
            db.open_tree(TREE_SM_V1)
                .expect("sm")
                .insert(KEY_STATE_V1, serde_json::to_vec(&blob).expect("json"))
                .expect("state");
            db.flush().expect("flush");
        }
        let check = |sm: &StateMachineStore| {
            let now = sm.current();
            assert_eq!(now.last_applied, Some(6));
            let st = &now.state;
            assert_eq!(st.zones().count(), 1);
            assert_eq!(
                st.datacenter("nyc").expect("nyc").dc.state,
                DcState::Drained
            );
            assert!(st.service("example.com.", "www").is_some());
            assert!(st.status("lon").opinions[&1].up);
        };
        {
            let (_log, sm) = open_ok(dir.path());
            check(&sm);
        }
        // Converted once: format 2 on disk, the old tree gone, the same state again.
        let (log, sm) = open_ok(dir.path());
        check(&sm);
        assert_eq!(
            log.meta.get(KEY_FORMAT).expect("read").as_deref(),
            Some(b"2".as_slice())
        );
        let names = log.db.tree_names();
        assert!(
            !names.iter().any(|n| n.as_ref() == TREE_SM_V1.as_bytes()),
            "{names:?}"
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
