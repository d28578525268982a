//! DNS over TCP (RFC 7766): length-prefixed messages, answered in order on each connection.
//!
//! Connections are a bounded resource: at most [`TcpLimits::max_connections`] are open;
//! each must deliver a whole query, and take each reply, within the idle timeout or is
//! closed; and when every place is taken, the connection idle the longest is closed to make
//! room (whether it is waiting for a query or for its client to read a reply), so hundreds
//! of idle, slow or non-reading clients cannot keep a new one from being answered.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::dns::answer::{answer, record, Client, Transport};
use crate::dns::cookie::{self, Cookie};
use crate::dns::request;
use crate::dns::xfr;
use crate::dns::Options;
use crate::dnstap::{self, Protocol, Tap};
use crate::metrics;
use crate::snapshot::SnapshotReader;

/// Connection limits.
#[derive(Clone, Copy, Debug)]
pub struct TcpLimits {
    pub max_connections: usize,
    /// How long a connection may sit without completing a query.
    pub idle_timeout: Duration,
}

impl Default for TcpLimits {
    fn default() -> Self {
        TcpLimits {
            max_connections: 1024,
            idle_timeout: Duration::from_secs(10),
        }
    }
}

/// `Slot::active` of a free slot.
const FREE: u64 = 0;
/// `Slot::active` of a connection asked to close.
const CLOSING: u64 = u64::MAX;

/// One place for a connection: when it was last active (0 = free), and a way to close it.
struct Slot {
    /// Milliseconds since `Pool::epoch` + 1 of the last activity; 0 when free; [`CLOSING`]
    /// once an eviction has asked the holder to close.
    active: AtomicU64,
    /// Wakes the holder after its slot was set to [`CLOSING`].
    wake: Notify,
}

/// The places shared by every TCP listener of a node.
pub struct Pool {
    limits: TcpLimits,
    permits: Arc<Semaphore>,
    slots: Box<[Slot]>,
    epoch: Instant,
}

impl Pool {
    pub fn new(limits: TcpLimits) -> Arc<Pool> {
        Arc::new(Pool {
            limits,
            permits: Arc::new(Semaphore::new(limits.max_connections)),
            slots: (0..limits.max_connections)
                .map(|_| Slot {
                    active: AtomicU64::new(0),
                    wake: Notify::new(),
                })
                .collect(),
            epoch: Instant::now(),
        })
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// A place for a new connection; closes the idlest one when all are taken.
    async fn admit(self: &Arc<Self>) -> Option<(OwnedSemaphorePermit, usize)> {
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                self.evict_idlest();
                tokio::time::timeout(Duration::from_secs(2), self.permits.clone().acquire_owned())
                    .await
                    .ok()?
                    .ok()?
            }
        };
        // Holding a permit guarantees a free slot: a slot is freed before its permit.
        let now = self.now();
        let idx = self.slots.iter().position(|s| {
            s.active
                .compare_exchange(FREE, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        })?;
        Some((permit, idx))
    }

    /// Ask the connection idle the longest to close. Its slot is marked as closing so that
    /// concurrent evictions each pick a different connection.
    fn evict_idlest(&self) {
        for _ in 0..8 {
            let idlest = self
                .slots
                .iter()
                .map(|s| (s, s.active.load(Ordering::Relaxed)))
                .filter(|&(_, t)| t != FREE && t != CLOSING)
                .min_by_key(|&(_, t)| t);
            let Some((slot, seen)) = idlest else {
                return;
            };
            if slot
                .active
                .compare_exchange(seen, CLOSING, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                slot.wake.notify_waiters();
                return;
            }
        }
    }

    /// Open connections.
    pub fn open(&self) -> usize {
        self.limits.max_connections - self.permits.available_permits()
    }

    /// Descriptors the process should be allowed: every connection plus room for the
    /// listeners, UDP sockets, the store and the Raft and admin connections.
    pub fn fds_wanted(&self) -> u64 {
        self.limits.max_connections as u64 + 256
    }
}

/// Raise the soft limit on open files to the hard limit, as name servers do at start (the
/// common soft default of 1024 is below the connection cap). Returns the soft limit now in
/// force.
pub fn raise_fd_limit() -> std::io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: `raised` is a valid rlimit; raising the soft limit up to the hard one
        // needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        lim = raised;
    }
    Ok(lim.rlim_cur)
}

/// Accept connections until the task is dropped. With a query log, every connection logs
/// into `tap` (the TCP path's one queue).
pub async fn serve(
    listener: TcpListener,
    pool: Arc<Pool>,
    reader: SnapshotReader,
    tap: Option<Tap>,
    options: Options,
    special: xfr::Context,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors (EMFILE, ENFILE): the idlest connection gives its
                // descriptor to the waiting one, as when the cap is reached. Then wait a
                // little rather than spin.
                if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) {
                    pool.evict_idlest();
                    // Handled, and frequent under a flood: not worth a warning each time.
                    tracing::debug!(error = %e, "tcp accept: out of descriptors");
                } else {
                    tracing::warn!(error = %e, "tcp accept failed");
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let pool = pool.clone();
        let reader = reader.clone();
        let tap = tap.clone();
        let special = special.clone();
        tokio::spawn(async move {
            let Some((permit, idx)) = pool.admit().await else {
                return;
            };
            let _ = stream.set_nodelay(true);
            if let Err(e) = connection(
                stream,
                peer,
                &pool,
                idx,
                &reader,
                tap.as_ref(),
                options,
                &special,
            )
            .await
            {
                tracing::debug!(error = %e, %peer, "tcp connection ended");
            }
            pool.slots[idx].active.store(FREE, Ordering::Release);
            drop(permit);
        });
    }
}

#[allow(clippy::too_many_arguments)]
async fn connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    pool: &Pool,
    idx: usize,
    reader: &SnapshotReader,
    tap: Option<&Tap>,
    options: Options,
    special: &xfr::Context,
) -> std::io::Result<()> {
    let slot = &pool.slots[idx];
    let mut inbuf = Vec::with_capacity(512);
    let mut out = Vec::with_capacity(4096);
    let mut client = Client {
        source: peer.ip(),
        transport: Transport::Tcp,
        cookie: Cookie::None,
    };
    // The address the client connected to, for the query log.
    let server = match tap {
        Some(_) => stream.local_addr()?,
        None => peer,
    };
    loop {
        let woken = slot.wake.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        // Checked after `enable`, so an eviction cannot slip between the check and the wait.
        if slot.active.load(Ordering::Acquire) == CLOSING {
            return Ok(());
        }
        let read = tokio::select! {
            r = tokio::time::timeout(pool.limits.idle_timeout, read_frame(&mut stream, &mut inbuf)) => r,
            _ = &mut woken => return Ok(()),
        };
        match read {
            Err(_) | Ok(Ok(false)) => return Ok(()), // idle too long, or closed
            Ok(Err(e)) => return Err(e),
            Ok(Ok(true)) => {}
        }
        let received = match tap {
            Some(_) => dnstap::now(),
            None => std::time::Duration::ZERO,
        };
        // Fresh activity, unless an eviction already claimed the slot.
        let seen = slot.active.load(Ordering::Acquire);
        if seen == CLOSING
            || slot
                .active
                .compare_exchange(seen, pool.now(), Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
        {
            return Ok(());
        }
        // A message too broken to answer closes the connection (RFC 7766 §6.2.2 leaves it to us).
        let Some(req) = request::parse(&inbuf) else {
            if let Some(tap) = tap {
                tap.log(Protocol::Tcp, peer, server, received, &inbuf, None);
                tap.wake();
            }
            return Ok(());
        };
        if req.special {
            // Transfers, NOTIFY, UPDATE and signed messages: the slow path, one or more
            // replies (a transfer may be many messages).
            let snap = reader.load_full();
            let replies = xfr::handle(&snap, &inbuf, peer.ip(), Transport::Tcp, special).await;
            for r in replies {
                let Ok(len) = u16::try_from(r.len()) else {
                    continue;
                };
                let write = async {
                    stream.write_all(&len.to_be_bytes()).await?;
                    stream.write_all(&r).await
                };
                match tokio::time::timeout(pool.limits.idle_timeout, write).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Err(e),
                    Err(_) => return Ok(()),
                }
            }
            continue;
        }
        let outcome = {
            let snap = reader.load();
            if options.cookies {
                let now = cookie::unix_now();
                client.cookie =
                    cookie::check(&snap.cookies, req.edns.as_ref(), peer.ip(), now).reply;
            }
            let outcome = answer(&snap, &req, &client, &mut out);
            // TCP tasks move between threads: they share the common slot.
            record(&snap, &outcome, metrics::worker());
            outcome
        };
        if let Some(tap) = tap {
            let reply = (&out[..outcome.len], dnstap::now());
            tap.log(Protocol::Tcp, peer, server, received, &inbuf, Some(reply));
            tap.wake();
        }
        let len = (outcome.len as u16).to_be_bytes();
        let write = async {
            stream.write_all(&len).await?;
            stream.write_all(&out[..outcome.len]).await
        };
        // A client that does not read its replies must not hold its place for ever: the
        // write has the idle timeout too, and an eviction stops it.
        let written = tokio::select! {
            r = tokio::time::timeout(pool.limits.idle_timeout, write) => r.ok(),
            _ = &mut woken => None,
        };
        match written {
            Some(Ok(())) => {}
            Some(Err(e)) => return Err(e),
            None => {
                // Reset rather than close: a graceful close would leave the unsent replies
                // queued in the kernel for a client that does not read them.
                let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
                return Ok(());
            }
        }
    }
}

/// Read one length-prefixed message. `Ok(false)` on a clean close before a new message.
async fn read_frame(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<bool> {
    let mut len = [0u8; 2];
    match stream.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(false),
        Err(e) => return Err(e),
    }
    let len = u16::from_be_bytes(len) as usize;
    buf.resize(len, 0);
    stream.read_exact(buf).await?;
    Ok(true)
}
