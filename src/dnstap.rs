//! The dnstap query log (DESIGN.md "Query log (dnstap)"): every query and its response as
//! dnstap `AUTH_QUERY` / `AUTH_RESPONSE` messages in Frame Streams (content type
//! `protobuf:dnstap.Dnstap`), written by one thread to a file or to a reader's unix socket.
//!
//! The query path never waits for the log. Each UDP worker, and the TCP path, has a [`Tap`]:
//! a bounded lock-free queue to the writer thread and a pool of buffers coming back from it.
//! Logging a query copies its bytes and its reply's into a pooled buffer and pushes it; a
//! full queue drops the event and counts it (`meridian_dnstap_dropped_total`). With dnstap
//! off there is no tap and nothing is done per query.
//!
//! The writer encodes the small dnstap protobuf by hand (a dozen scalar and bytes fields,
//! not worth a code generator). A file is truncated at start and written as a
//! unidirectional stream (START, frames, STOP). On a socket the node is the writer of a
//! bidirectional stream (READY → ACCEPT → START … STOP → FINISH); when the reader goes away
//! the events of that time are dropped and counted, and the writer connects again with a
//! backoff. Both are flushed and closed properly by [`Dnstap::finish`] (on SIGTERM).

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, LazyLock, OnceLock};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_queue::ArrayQueue;

use crate::config::{DnstapConfig, DnstapSink};
use crate::metrics;

/// The Frame Streams content type of dnstap.
pub const CONTENT_TYPE: &[u8] = b"protobuf:dnstap.Dnstap";
/// Events one tap may have waiting for the writer. At 100,000 queries a second on one
/// worker this is 40 ms of traffic: four of the writer's rounds, and it is woken sooner
/// (at [`WAKE_AT`]) when traffic is heavy.
pub const QUEUE: usize = 4096;
/// A tap with this many events waiting wakes the writer rather than let it sleep out its
/// round: below it, the query path does nothing but push.
const WAKE_AT: usize = QUEUE / 4;
/// A buffer that grew beyond this (a large TCP answer) is freed rather than pooled.
const POOLED_MAX: usize = 8 << 10;
/// The first size of a pooled buffer: a query and a typical answer.
const BUF_START: usize = 1024;
/// How often the output is flushed (a full buffer is written at once).
const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// How long the writer sleeps between two rounds over the queues (a tap that fills up wakes
/// it sooner). Waking per query or per batch would cost a system call or two on each; a
/// round every 10 ms costs nothing measurable, idle or busy.
const ROUND: Duration = Duration::from_millis(10);
/// Bound on every socket read and write, so a stalled reader cannot hold the writer.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// First and longest wait between two connection attempts to the reader.
const RECONNECT_MIN: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(2);
/// Longest control frame we read (an ACCEPT or FINISH carries a few content types at most).
const MAX_CONTROL: usize = 4096;

// Frame Streams control frame types and field.
const FSTRM_ACCEPT: u32 = 0x01;
const FSTRM_START: u32 = 0x02;
const FSTRM_STOP: u32 = 0x03;
const FSTRM_READY: u32 = 0x04;
const FSTRM_FINISH: u32 = 0x05;
const FSTRM_CONTENT_TYPE: u32 = 0x01;

/// Events dropped: a full queue, no reader connected, or an output that failed.
static DROPPED: LazyLock<metrics::Counter> = LazyLock::new(metrics::Counter::new);
/// Events handed to the output (flushed to the file or the socket).
static WRITTEN: AtomicU64 = AtomicU64::new(0);
/// Completed handshakes with a socket reader.
static CONNECTIONS: AtomicU64 = AtomicU64::new(0);
/// Whether a socket reader is connected now (always false for a file).
static CONNECTED: AtomicBool = AtomicBool::new(false);

/// What `/metrics` shows of the query log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Events not logged (each is a query, with its response when it had one).
    pub dropped: u64,
    /// Events flushed to the output.
    pub written: u64,
    /// Frame Streams handshakes completed with a socket reader since start.
    pub connections: u64,
    /// A socket reader is connected now.
    pub connected: bool,
}

/// This process's query-log statistics.
pub fn stats() -> Stats {
    Stats {
        dropped: DROPPED.sum(),
        written: WRITTEN.load(Ordering::Relaxed),
        connections: CONNECTIONS.load(Ordering::Relaxed),
        connected: CONNECTED.load(Ordering::Relaxed),
    }
}

/// Why the query log cannot start.
#[derive(Debug, thiserror::Error)]
pub enum DnstapError {
    #[error("[dnstap] file {}: cannot create it: {source}", path.display())]
    File {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot start the dnstap writer thread: {0}")]
    Thread(#[source] io::Error),
}

/// Start the query log a node's config asks for (`None`: none), and say so in the log.
pub fn start_logged(config: Option<&DnstapConfig>) -> Result<Option<Dnstap>, DnstapError> {
    let Some(config) = config else {
        return Ok(None);
    };
    let log = Dnstap::start(config)?;
    let (kind, path) = match &config.sink {
        DnstapSink::File(p) => ("file", p),
        DnstapSink::Socket(p) => ("socket", p),
    };
    tracing::info!(kind, path = %path.display(), identity = %config.identity, "dnstap query log on");
    Ok(Some(log))
}

/// [`Dnstap::finish`] off the async runtime, waiting at most `limit` (a stalled reader
/// must not hold up a shutdown).
pub async fn finish_within(log: Option<Dnstap>, limit: Duration) {
    let Some(log) = log else {
        return;
    };
    let done = tokio::task::spawn_blocking(move || log.finish());
    if tokio::time::timeout(limit, done).await.is_err() {
        tracing::warn!("the dnstap log did not finish in time; its end may be missing");
    }
}

/// The transport a query came over (dnstap `SocketProtocol`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Udp = 1,
    Tcp = 2,
}

/// The current time as dnstap wants it: since the Unix epoch.
#[inline]
pub fn now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// One query and, when it was answered, its response: `buf` holds the query's bytes and
/// then the response's.
struct Event {
    protocol: Protocol,
    client: SocketAddr,
    server: SocketAddr,
    query_time: Duration,
    /// `None`: the query got no response (it could not be read).
    response_time: Option<Duration>,
    query_len: usize,
    buf: Vec<u8>,
}

/// A queue from one producer (a UDP worker, or the TCP path) to the writer, and the
/// buffers the writer hands back for reuse.
struct Lane {
    events: ArrayQueue<Event>,
    free: ArrayQueue<Vec<u8>>,
}

/// What the producers and the writer share.
struct Shared {
    /// The writer is about to sleep or asleep: the next producer to push wakes it.
    sleeping: AtomicBool,
    stop: AtomicBool,
    writer: OnceLock<Thread>,
}

/// A running query log: the writer thread and the way to register taps with it.
pub struct Dnstap {
    shared: Arc<Shared>,
    register: mpsc::Sender<Arc<Lane>>,
    thread: Option<JoinHandle<()>>,
}

/// One producer's end of the query log. Cheap to clone (TCP connections share the TCP
/// path's lane); never blocks.
#[derive(Clone)]
pub struct Tap {
    lane: Arc<Lane>,
    shared: Arc<Shared>,
}

impl Dnstap {
    /// Open the output (a file is truncated now; a socket reader that is not there yet is
    /// connected to later) and start the writer thread.
    pub fn start(config: &DnstapConfig) -> Result<Dnstap, DnstapError> {
        let sink = match &config.sink {
            DnstapSink::File(path) => {
                let file = File::create(path).map_err(|source| DnstapError::File {
                    path: path.clone(),
                    source,
                })?;
                let mut out = BufWriter::with_capacity(64 << 10, file);
                let mut start = Vec::new();
                control_frame(&mut start, FSTRM_START, true);
                out.write_all(&start)
                    .and_then(|()| out.flush())
                    .map_err(|source| DnstapError::File {
                        path: path.clone(),
                        source,
                    })?;
                Sink::File(FileSink {
                    path: path.clone(),
                    out: Some(out),
                    pending: 0,
                })
            }
            DnstapSink::Socket(path) => {
                let mut sink = SocketSink {
                    path: path.clone(),
                    conn: None,
                    pending: 0,
                    next_try: Instant::now(),
                    backoff: RECONNECT_MIN,
                    warned: false,
                };
                // Once now, so a reader that is already listening gets every query.
                sink.try_connect();
                Sink::Socket(sink)
            }
        };
        let shared = Arc::new(Shared {
            sleeping: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            writer: OnceLock::new(),
        });
        let (register, lanes) = mpsc::channel();
        let encoder = Encoder::new(config.identity.as_bytes(), config.version.as_bytes());
        let writer_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("dnstap".into())
            .spawn(move || write_loop(sink, encoder, writer_shared, lanes))
            .map_err(DnstapError::Thread)?;
        let _ = shared.writer.set(thread.thread().clone());
        Ok(Dnstap {
            shared,
            register,
            thread: Some(thread),
        })
    }

    /// A new producer with a queue of its own.
    pub fn tap(&self) -> Tap {
        let lane = Arc::new(Lane {
            events: ArrayQueue::new(QUEUE),
            free: ArrayQueue::new(QUEUE),
        });
        // The writer is gone only after `finish`; a tap made then logs into the void.
        let _ = self.register.send(lane.clone());
        Tap {
            lane,
            shared: self.shared.clone(),
        }
    }

    /// Write what is queued, end the stream (STOP, and FINISH from a socket reader), flush
    /// and close. Producers should have stopped; what they log afterwards is lost.
    pub fn finish(mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(t) = self.shared.writer.get() {
            t.unpark();
        }
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the dnstap writer panicked");
            }
        }
    }
}

impl Drop for Dnstap {
    fn drop(&mut self) {
        // Not finished (an error path): let the writer end on its own.
        self.shared.stop.store(true, Ordering::Release);
        if let Some(t) = self.shared.writer.get() {
            t.unpark();
        }
    }
}

impl Tap {
    /// Log one query and its response (`None`: it got none), with the time the query was
    /// received and the response's. Returns false when the event was dropped (queue full).
    #[inline]
    pub fn log(
        &self,
        protocol: Protocol,
        client: SocketAddr,
        server: SocketAddr,
        query_time: Duration,
        query: &[u8],
        response: Option<(&[u8], Duration)>,
    ) -> bool {
        if self.lane.events.is_full() {
            DROPPED.inc(metrics::worker());
            return false;
        }
        let mut buf = self
            .lane
            .free
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(BUF_START));
        buf.clear();
        buf.extend_from_slice(query);
        let response_time = response.map(|(bytes, at)| {
            buf.extend_from_slice(bytes);
            at
        });
        let event = Event {
            protocol,
            client,
            server,
            query_time,
            response_time,
            query_len: query.len(),
            buf,
        };
        match self.lane.events.push(event) {
            Ok(()) => true,
            Err(event) => {
                let _ = self.lane.free.push(event.buf);
                DROPPED.inc(metrics::worker());
                false
            }
        }
    }

    /// Call after logging a batch (or one TCP query): wakes the writer early when this
    /// tap's queue is filling up; otherwise the writer's next round takes the events.
    #[inline]
    pub fn wake(&self) {
        if self.lane.events.len() >= WAKE_AT
            && self.shared.sleeping.load(Ordering::Relaxed)
            && self.shared.sleeping.swap(false, Ordering::AcqRel)
        {
            if let Some(t) = self.shared.writer.get() {
                t.unpark();
            }
        }
    }
}

/// The writer thread: drain every lane into the sink, flush now and then, sleep when idle.
fn write_loop(
    mut sink: Sink,
    mut encoder: Encoder,
    shared: Arc<Shared>,
    register: mpsc::Receiver<Arc<Lane>>,
) {
    let mut lanes: Vec<Arc<Lane>> = Vec::new();
    let mut last_flush = Instant::now();
    loop {
        while let Ok(lane) = register.try_recv() {
            lanes.push(lane);
        }
        let stopping = shared.stop.load(Ordering::Acquire);
        sink.tick();
        let (mut written, mut busy) = (0usize, false);
        for lane in &lanes {
            // A bounded share per lane and round, so one busy worker cannot starve another.
            let mut n = 0;
            while n < QUEUE {
                let Some(event) = lane.events.pop() else {
                    break;
                };
                n += 1;
                sink.write(encoder.event(&event));
                let mut buf = event.buf;
                if buf.capacity() <= POOLED_MAX {
                    buf.clear();
                    let _ = lane.free.push(buf);
                }
            }
            written += n;
            busy |= n >= WAKE_AT;
        }
        if stopping || last_flush.elapsed() >= FLUSH_EVERY {
            sink.flush();
            last_flush = Instant::now();
        }
        if stopping && written == 0 {
            break;
        }
        // Heavy traffic: go round again at once. Otherwise sleep out the round.
        if !busy && !stopping {
            shared.sleeping.store(true, Ordering::Release);
            std::thread::park_timeout(ROUND);
            shared.sleeping.store(false, Ordering::Relaxed);
        }
    }
    sink.finish();
}

/// Count `n` events lost by the writer.
fn dropped(n: u64) {
    if n > 0 {
        DROPPED.add(metrics::worker(), n);
    }
}

/// Where frames go.
enum Sink {
    File(FileSink),
    Socket(SocketSink),
}

impl Sink {
    /// Write one event's data frames (buffered).
    fn write(&mut self, frame: &[u8]) {
        match self {
            Sink::File(f) => f.write(frame),
            Sink::Socket(s) => s.write(frame),
        }
    }

    fn flush(&mut self) {
        match self {
            Sink::File(f) => f.flush(),
            Sink::Socket(s) => s.flush(),
        }
    }

    /// Between rounds: a socket that is down tries to connect again when its time comes.
    fn tick(&mut self) {
        if let Sink::Socket(s) = self {
            if s.conn.is_none() && Instant::now() >= s.next_try {
                s.try_connect();
            }
        }
    }

    fn finish(self) {
        match self {
            Sink::File(f) => f.finish(),
            Sink::Socket(s) => s.finish(),
        }
    }
}

/// A file written as one unidirectional stream. After a write error the log stops (a
/// stream with a torn frame in the middle could not be read past it); later events are
/// dropped and counted.
struct FileSink {
    path: PathBuf,
    out: Option<BufWriter<File>>,
    /// Events written since the last successful flush.
    pending: u64,
}

impl FileSink {
    fn write(&mut self, frame: &[u8]) {
        let Some(out) = self.out.as_mut() else {
            dropped(1);
            return;
        };
        match out.write_all(frame) {
            Ok(()) => self.pending += 1,
            Err(e) => self.fail(&e),
        }
    }

    fn flush(&mut self) {
        if let Some(out) = self.out.as_mut() {
            match out.flush() {
                Ok(()) => {
                    WRITTEN.fetch_add(self.pending, Ordering::Relaxed);
                    self.pending = 0;
                }
                Err(e) => self.fail(&e),
            }
        }
    }

    fn fail(&mut self, e: &io::Error) {
        tracing::error!(path = %self.path.display(), error = %e, "dnstap file write failed; the query log stops");
        self.out = None;
        dropped(self.pending.max(1));
        self.pending = 0;
    }

    fn finish(mut self) {
        let mut stop = Vec::new();
        control_frame(&mut stop, FSTRM_STOP, false);
        if let Some(out) = self.out.as_mut() {
            if let Err(e) = out.write_all(&stop) {
                self.fail(&e);
            }
        }
        self.flush();
        if let Some(out) = self.out.take() {
            if let Err(e) = out.get_ref().sync_all() {
                tracing::warn!(path = %self.path.display(), error = %e, "dnstap file not synced");
            }
        }
    }
}

/// A reader's unix socket, with the node as the writer of a bidirectional stream.
struct SocketSink {
    path: PathBuf,
    conn: Option<BufWriter<UnixStream>>,
    /// Events written since the last successful flush.
    pending: u64,
    next_try: Instant,
    backoff: Duration,
    /// The reader being away has been logged (once per absence, not per attempt).
    warned: bool,
}

impl SocketSink {
    fn try_connect(&mut self) {
        match handshake(&self.path) {
            Ok(stream) => {
                tracing::info!(socket = %self.path.display(), "dnstap reader connected");
                CONNECTIONS.fetch_add(1, Ordering::Relaxed);
                CONNECTED.store(true, Ordering::Relaxed);
                self.conn = Some(BufWriter::with_capacity(64 << 10, stream));
                self.backoff = RECONNECT_MIN;
                self.warned = false;
            }
            Err(e) => {
                if self.warned {
                    tracing::debug!(socket = %self.path.display(), error = %e, "dnstap reader still unreachable");
                } else {
                    tracing::warn!(
                        socket = %self.path.display(),
                        error = %e,
                        "dnstap reader unreachable; queries are not logged until it is back"
                    );
                    self.warned = true;
                }
                self.next_try = Instant::now() + self.backoff;
                self.backoff = (self.backoff * 2).min(RECONNECT_MAX);
            }
        }
    }

    fn write(&mut self, frame: &[u8]) {
        let Some(conn) = self.conn.as_mut() else {
            dropped(1);
            return;
        };
        match conn.write_all(frame) {
            Ok(()) => self.pending += 1,
            Err(e) => self.lost(&e),
        }
    }

    fn flush(&mut self) {
        if let Some(conn) = self.conn.as_mut() {
            match conn.flush() {
                Ok(()) => {
                    WRITTEN.fetch_add(self.pending, Ordering::Relaxed);
                    self.pending = 0;
                }
                Err(e) => self.lost(&e),
            }
        }
    }

    /// The reader went away: what was in flight is lost; connect again soon.
    fn lost(&mut self, e: &io::Error) {
        tracing::warn!(socket = %self.path.display(), error = %e, "dnstap reader went away; reconnecting");
        self.warned = true;
        CONNECTED.store(false, Ordering::Relaxed);
        if let Some(conn) = self.conn.take() {
            // The buffered frames are unsent; dropping the writer must not retry them.
            let (stream, _unsent) = conn.into_parts();
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
        // What was buffered or in flight is lost (some of it may have reached the reader).
        dropped(self.pending.max(1));
        self.pending = 0;
        self.backoff = RECONNECT_MIN;
        self.next_try = Instant::now() + RECONNECT_MIN;
    }

    fn finish(mut self) {
        self.flush();
        let Some(conn) = self.conn.take() else {
            return;
        };
        let mut stream = match conn.into_inner() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e.error(), "dnstap: cannot flush before STOP");
                return;
            }
        };
        let mut stop = Vec::new();
        control_frame(&mut stop, FSTRM_STOP, false);
        let ended = stream
            .write_all(&stop)
            .and_then(|()| stream.flush())
            .and_then(|()| read_control(&mut stream))
            .and_then(|(kind, _)| {
                if kind == FSTRM_FINISH {
                    Ok(())
                } else {
                    Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("expected FINISH, got control frame {kind}"),
                    ))
                }
            });
        match ended {
            Ok(()) => tracing::info!(socket = %self.path.display(), "dnstap stream finished"),
            Err(e) => {
                tracing::warn!(socket = %self.path.display(), error = %e, "dnstap stream ended without FINISH")
            }
        }
        CONNECTED.store(false, Ordering::Relaxed);
        let _ = stream.shutdown(std::net::Shutdown::Both);
    }
}

/// Connect and do the writer's half of the bidirectional handshake: READY with our content
/// type, ACCEPT that names it, START.
fn handshake(path: &std::path::Path) -> io::Result<UnixStream> {
    let mut stream = UnixStream::connect(path)?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    let mut frame = Vec::new();
    control_frame(&mut frame, FSTRM_READY, true);
    stream.write_all(&frame)?;
    let (kind, types) = read_control(&mut stream)?;
    if kind != FSTRM_ACCEPT {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("expected ACCEPT, got control frame {kind}"),
        ));
    }
    if !types.iter().any(|t| t == CONTENT_TYPE) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the reader does not accept protobuf:dnstap.Dnstap",
        ));
    }
    frame.clear();
    control_frame(&mut frame, FSTRM_START, true);
    stream.write_all(&frame)?;
    Ok(stream)
}

/// Append a control frame: the escape (a zero length), its length, its type and, when
/// asked, our content type.
fn control_frame(out: &mut Vec<u8>, kind: u32, content_type: bool) {
    let fields = if content_type {
        8 + CONTENT_TYPE.len()
    } else {
        0
    };
    out.extend_from_slice(&0u32.to_be_bytes());
    out.extend_from_slice(&((4 + fields) as u32).to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    if content_type {
        out.extend_from_slice(&FSTRM_CONTENT_TYPE.to_be_bytes());
        out.extend_from_slice(&(CONTENT_TYPE.len() as u32).to_be_bytes());
        out.extend_from_slice(CONTENT_TYPE);
    }
}

/// Read one control frame: its type and the content types it names.
fn read_control(stream: &mut impl Read) -> io::Result<(u32, Vec<Vec<u8>>)> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    let mut word = [0u8; 4];
    stream.read_exact(&mut word)?;
    if word != [0; 4] {
        return Err(bad("expected a control frame, got a data frame"));
    }
    stream.read_exact(&mut word)?;
    let len = u32::from_be_bytes(word) as usize;
    if !(4..=MAX_CONTROL).contains(&len) {
        return Err(bad("control frame of an impossible length"));
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body)?;
    let be32 = |b: &[u8]| -> Option<u32> { Some(u32::from_be_bytes(b.get(..4)?.try_into().ok()?)) };
    let kind = be32(&body).ok_or_else(|| bad("short control frame"))?;
    let mut types = Vec::new();
    let mut rest = &body[4..];
    while !rest.is_empty() {
        let (Some(field), Some(flen)) = (be32(rest), rest.get(4..).and_then(be32)) else {
            return Err(bad("truncated control field"));
        };
        let value = rest
            .get(8..8 + flen as usize)
            .ok_or_else(|| bad("truncated control field"))?;
        if field == FSTRM_CONTENT_TYPE {
            types.push(value.to_vec());
        }
        rest = &rest[8 + flen as usize..];
    }
    Ok((kind, types))
}

/// The dnstap protobuf, encoded by hand into buffers reused for every frame.
struct Encoder {
    identity: Vec<u8>,
    version: Vec<u8>,
    message: Vec<u8>,
    frame: Vec<u8>,
}

// Field numbers of dnstap.proto.
const DNSTAP_IDENTITY: u32 = 1;
const DNSTAP_VERSION: u32 = 2;
const DNSTAP_MESSAGE: u32 = 14;
const DNSTAP_TYPE: u32 = 15;
const DNSTAP_TYPE_MESSAGE: u64 = 1;
const MSG_TYPE: u32 = 1;
const MSG_SOCKET_FAMILY: u32 = 2;
const MSG_SOCKET_PROTOCOL: u32 = 3;
const MSG_QUERY_ADDRESS: u32 = 4;
const MSG_RESPONSE_ADDRESS: u32 = 5;
const MSG_QUERY_PORT: u32 = 6;
const MSG_RESPONSE_PORT: u32 = 7;
const MSG_QUERY_TIME_SEC: u32 = 8;
const MSG_QUERY_TIME_NSEC: u32 = 9;
const MSG_QUERY_MESSAGE: u32 = 10;
const MSG_RESPONSE_TIME_SEC: u32 = 12;
const MSG_RESPONSE_TIME_NSEC: u32 = 13;
const MSG_RESPONSE_MESSAGE: u32 = 14;
const AUTH_QUERY: u64 = 1;
const AUTH_RESPONSE: u64 = 2;
const FAMILY_INET: u64 = 1;
const FAMILY_INET6: u64 = 2;

impl Encoder {
    fn new(identity: &[u8], version: &[u8]) -> Encoder {
        Encoder {
            identity: identity.to_vec(),
            version: version.to_vec(),
            message: Vec::with_capacity(1024),
            frame: Vec::with_capacity(1024),
        }
    }

    /// The data frames of an event: its query's, and its response's when it had one.
    fn event(&mut self, e: &Event) -> &[u8] {
        self.frame.clear();
        self.append_frame(e, false);
        if e.response_time.is_some() {
            self.append_frame(e, true);
        }
        &self.frame
    }

    /// Append the data frame (4-byte length, then the `Dnstap` message) of the event's
    /// query, or of its response.
    fn append_frame(&mut self, e: &Event, response: bool) {
        let m = &mut self.message;
        m.clear();
        varint_field(
            m,
            MSG_TYPE,
            if response { AUTH_RESPONSE } else { AUTH_QUERY },
        );
        let family = if e.client.is_ipv4() {
            FAMILY_INET
        } else {
            FAMILY_INET6
        };
        varint_field(m, MSG_SOCKET_FAMILY, family);
        varint_field(m, MSG_SOCKET_PROTOCOL, e.protocol as u64);
        match e.client.ip() {
            IpAddr::V4(a) => bytes_field(m, MSG_QUERY_ADDRESS, &a.octets()),
            IpAddr::V6(a) => bytes_field(m, MSG_QUERY_ADDRESS, &a.octets()),
        }
        match e.server.ip() {
            IpAddr::V4(a) => bytes_field(m, MSG_RESPONSE_ADDRESS, &a.octets()),
            IpAddr::V6(a) => bytes_field(m, MSG_RESPONSE_ADDRESS, &a.octets()),
        }
        varint_field(m, MSG_QUERY_PORT, u64::from(e.client.port()));
        varint_field(m, MSG_RESPONSE_PORT, u64::from(e.server.port()));
        varint_field(m, MSG_QUERY_TIME_SEC, e.query_time.as_secs());
        fixed32_field(m, MSG_QUERY_TIME_NSEC, e.query_time.subsec_nanos());
        let (query, answer) = e.buf.split_at(e.query_len.min(e.buf.len()));
        match (response, e.response_time) {
            (true, Some(at)) => {
                varint_field(m, MSG_RESPONSE_TIME_SEC, at.as_secs());
                fixed32_field(m, MSG_RESPONSE_TIME_NSEC, at.subsec_nanos());
                bytes_field(m, MSG_RESPONSE_MESSAGE, answer);
            }
            _ => bytes_field(m, MSG_QUERY_MESSAGE, query),
        }
        let f = &mut self.frame;
        let start = f.len();
        f.extend_from_slice(&[0; 4]);
        bytes_field(f, DNSTAP_IDENTITY, &self.identity);
        bytes_field(f, DNSTAP_VERSION, &self.version);
        bytes_field(f, DNSTAP_MESSAGE, &self.message);
        varint_field(f, DNSTAP_TYPE, DNSTAP_TYPE_MESSAGE);
        let len = (f.len() - start - 4) as u32;
        f[start..start + 4].copy_from_slice(&len.to_be_bytes());
    }
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varint_field(out: &mut Vec<u8>, field: u32, v: u64) {
    varint(out, u64::from(field) << 3);
    varint(out, v);
}

fn fixed32_field(out: &mut Vec<u8>, field: u32, v: u32) {
    varint(out, (u64::from(field) << 3) | 5);
    out.extend_from_slice(&v.to_le_bytes());
}

fn bytes_field(out: &mut Vec<u8>, field: u32, v: &[u8]) {
    varint(out, (u64::from(field) << 3) | 2);
    varint(out, v.len() as u64);
    out.extend_from_slice(v);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A protobuf field as read back: number and value (varint, fixed32 or bytes).
    #[derive(Debug, PartialEq)]
    enum Value {
        Varint(u64),
        Fixed32(u32),
        Bytes(Vec<u8>),
    }

    fn read_varint(b: &[u8], pos: &mut usize) -> u64 {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = b[*pos];
            *pos += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                break;
            }
        }
        v
    }

    fn fields(b: &[u8]) -> Vec<(u32, Value)> {
        let mut pos = 0;
        let mut out = Vec::new();
        while pos < b.len() {
            let key = read_varint(b, &mut pos);
            let value = match key & 7 {
                0 => Value::Varint(read_varint(b, &mut pos)),
                5 => {
                    let v = u32::from_le_bytes(b[pos..pos + 4].try_into().expect("4 bytes"));
                    pos += 4;
                    Value::Fixed32(v)
                }
                2 => {
                    let n = read_varint(b, &mut pos) as usize;
                    pos += n;
                    Value::Bytes(b[pos - n..pos].to_vec())
                }
                w => panic!("wire type {w}"),
            };
            out.push(((key >> 3) as u32, value));
        }
        out
    }

    fn event() -> Event {
        Event {
            protocol: Protocol::Tcp,
            client: "[2001:db8::7]:40000".parse().expect("addr"),
            server: "[::1]:53".parse().expect("addr"),
            query_time: Duration::new(1_700_000_000, 123),
            response_time: Some(Duration::new(1_700_000_001, 456)),
            query_len: 3,
            buf: b"qqqrrrrr".to_vec(),
        }
    }

    #[test]
    fn dnstap_message_fields_match_dnstap_proto() {
        let mut enc = Encoder::new(b"ns1", b"meridian 9");
        let e = event();
        let both = enc.event(&e).to_vec();
        let qlen = u32::from_be_bytes(both[..4].try_into().expect("len")) as usize;
        let (query, frame) = both.split_at(4 + qlen);
        let len = u32::from_be_bytes(frame[..4].try_into().expect("len")) as usize;
        assert_eq!(len, frame.len() - 4);
        let top = fields(&frame[4..]);
        assert_eq!(top[0], (1, Value::Bytes(b"ns1".to_vec())));
        assert_eq!(top[1], (2, Value::Bytes(b"meridian 9".to_vec())));
        assert_eq!(top[3], (15, Value::Varint(1)));
        let Value::Bytes(msg) = &top[2].1 else {
            panic!("message")
        };
        assert_eq!(top[2].0, 14);
        let mut v6 = [0u8; 16];
        v6[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        v6[15] = 7;
        let mut lo = [0u8; 16];
        lo[15] = 1;
        assert_eq!(
            fields(msg),
            vec![
                (1, Value::Varint(2)),
                (2, Value::Varint(2)),
                (3, Value::Varint(2)),
                (4, Value::Bytes(v6.to_vec())),
                (5, Value::Bytes(lo.to_vec())),
                (6, Value::Varint(40000)),
                (7, Value::Varint(53)),
                (8, Value::Varint(1_700_000_000)),
                (9, Value::Fixed32(123)),
                (12, Value::Varint(1_700_000_001)),
                (13, Value::Fixed32(456)),
                (14, Value::Bytes(b"rrrrr".to_vec())),
            ]
        );
        let Value::Bytes(msg) = &fields(&query[4..])[2].1 else {
            panic!("message")
        };
        let msg = fields(msg);
        assert_eq!(msg[0], (1, Value::Varint(1)));
        assert_eq!(msg.last(), Some(&(10, Value::Bytes(b"qqq".to_vec()))));
    }

    #[test]
    fn file_is_a_unidirectional_stream_start_frames_stop() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("q.dnstap");
        std::fs::write(&path, b"old contents, truncated at start").expect("write");
        let log = Dnstap::start(&DnstapConfig {
            sink: DnstapSink::File(path.clone()),
            identity: "id".into(),
            version: "v".into(),
        })
        .expect("start");
        let tap = log.tap();
        let (c, s): (SocketAddr, SocketAddr) = (
            "192.0.2.1:5353".parse().expect("addr"),
            "127.0.0.1:53".parse().expect("addr"),
        );
        assert!(tap.log(Protocol::Udp, c, s, now(), b"q1", Some((b"r1", now()))));
        assert!(tap.log(Protocol::Udp, c, s, now(), b"q2", None));
        tap.wake();
        log.finish();
        let data = std::fs::read(&path).expect("read");
        let mut r = &data[..];
        let (kind, types) = read_control(&mut r).expect("START");
        assert_eq!((kind, types), (FSTRM_START, vec![CONTENT_TYPE.to_vec()]));
        let mut frames = 0;
        loop {
            let len = u32::from_be_bytes(r[..4].try_into().expect("len")) as usize;
            if len == 0 {
                break;
            }
            r = &r[4 + len..];
            frames += 1;
        }
        assert_eq!(frames, 3, "query and response, then a query alone");
        let (kind, _) = read_control(&mut r).expect("STOP");
        assert_eq!(kind, FSTRM_STOP);
        assert!(r.is_empty());
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let dir = tempfile::tempdir().expect("dir");
        let log = Dnstap::start(&DnstapConfig {
            sink: DnstapSink::File(dir.path().join("q.dnstap")),
            identity: "id".into(),
            version: "v".into(),
        })
        .expect("start");
        // A lane the writer never sees: nothing drains it.
        let tap = Tap {
            lane: Arc::new(Lane {
                events: ArrayQueue::new(2),
                free: ArrayQueue::new(2),
            }),
            shared: log.shared.clone(),
        };
        let a: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        let before = stats().dropped;
        let logged: Vec<bool> = (0..4)
            .map(|_| tap.log(Protocol::Udp, a, a, now(), b"q", None))
            .collect();
        assert_eq!(logged, [true, true, false, false]);
        assert!(stats().dropped >= before + 2);
        log.finish();
    }
}
