//! The HTTP server of the admin API and of Raft: an axum router served over plain TCP or
//! TLS, with bounded connections — a total cap, a per-address cap, a TLS-handshake timeout,
//! a header-read timeout and an idle timeout. Past the per-address cap a connection is
//! closed at once (never an HTTP 429: nothing is read from it); at the total cap the
//! connection idle longest makes room. Every request carries a [`Peer`] extension
//! (its address and, over mutual TLS, the node id its certificate names) and axum's
//! `ConnectInfo<SocketAddr>`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use crate::tls::Tls;

/// Bounds on the connections of one listener.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Open connections at most; past it a new one is closed at once.
    pub max_connections: usize,
    /// Open connections from one IP address at most (DESIGN.md: at least 64).
    pub per_address: usize,
    /// A TLS client must send its ClientHello and finish the handshake within this.
    pub handshake_timeout: Duration,
    /// A request's header must arrive within this (also bounds a keep-alive connection
    /// that sends no next request).
    pub header_timeout: Duration,
    /// A connection that moves no byte either way for this long is closed (a body that
    /// never comes, a reply nobody reads).
    pub idle_timeout: Duration,
}

impl Limits {
    /// The admin API: browsers, scripts, monitoring.
    pub const ADMIN: Limits = Limits {
        max_connections: 4096,
        per_address: 256,
        handshake_timeout: Duration::from_secs(10),
        header_timeout: Duration::from_secs(20),
        // Longer than the slowest answer (a membership change waits up to 35 s).
        idle_timeout: Duration::from_secs(60),
    };

    /// Raft: a handful of peers, each with a small pool of connections.
    pub const RAFT: Limits = Limits {
        max_connections: 1024,
        per_address: 128,
        handshake_timeout: Duration::from_secs(5),
        header_timeout: Duration::from_secs(20),
        idle_timeout: Duration::from_secs(60),
    };
}

/// Descriptors kept out of every listener's cap: the store, GeoIP and certificate files,
/// health probes, outgoing Raft and dnstap keep working when clients take all they may.
pub const FD_RESERVE: u64 = 512;

impl Limits {
    /// The admin and Raft limits for a process allowed `open_files` descriptors, of which
    /// DNS over TCP may hold `dns_tcp`: what is left after [`FD_RESERVE`] goes three parts
    /// to the admin API, one to Raft, each at most its default cap.
    pub fn fit(open_files: u64, dns_tcp: u64) -> (Limits, Limits) {
        let left = open_files.saturating_sub(FD_RESERVE + dns_tcp) as usize;
        let mut admin = Limits::ADMIN;
        let mut raft = Limits::RAFT;
        admin.max_connections = admin.max_connections.min(left * 3 / 4).max(64);
        raft.max_connections = raft.max_connections.min(left / 4).max(32);
        admin.per_address = admin.per_address.min(admin.max_connections);
        raft.per_address = raft.per_address.min(raft.max_connections);
        (admin, raft)
    }
}

/// How connections are accepted.
#[derive(Clone, Debug)]
pub enum Transport {
    /// Plain HTTP from any address.
    Plain,
    /// Plain HTTP from loopback addresses only; any other is closed unread.
    LoopbackOnly,
    /// HTTPS only: a connection that does not start with a TLS handshake is closed unread.
    /// With a CA in the material, a client certificate chaining to it is required.
    Tls(Tls),
}

/// Who is on the other end of a request, as the server saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    pub addr: SocketAddr,
    /// The connection is TLS with a verified client certificate.
    pub authenticated: bool,
    /// The node id the client certificate names (DNS SAN `node-N`), if any.
    pub node_id: Option<u64>,
}

/// Serve `router` on `listener` until the task is dropped.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    transport: Transport,
    limits: Limits,
    what: &'static str,
) {
    let tls = match &transport {
        Transport::Tls(tls) => match tls.server_config() {
            Ok(c) => Some((tokio_rustls::TlsAcceptor::from(c), tls.is_mutual())),
            Err(e) => {
                tracing::error!(what, error = %e, "cannot build the TLS server configuration; not serving");
                return;
            }
        },
        _ => None,
    };
    let loopback_only = matches!(transport, Transport::LoopbackOnly);
    let slots = Slots::new(limits);
    let refused = RateLimitedLog::new(Duration::from_secs(60));
    loop {
        let (stream, addr) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors or memory: wait a moment rather than spin.
                refused.log(|n| tracing::warn!(what, error = %e, repeated = n, "accept failed"));
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if loopback_only && !is_loopback(addr.ip()) {
            refused.log(|n| {
                tracing::warn!(what, peer = %addr, repeated = n,
                    "connection from a non-loopback address closed: without TLS or a secret this listener serves loopback peers only")
            });
            continue;
        }
        let Some(slot) = slots.take(addr.ip()) else {
            refused.log(|n| {
                tracing::warn!(what, peer = %addr, repeated = n,
                    "connection closed: too many connections (per address or in total)")
            });
            continue;
        };
        let router = router.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            match tls {
                None => {
                    let peer = Peer {
                        addr,
                        authenticated: false,
                        node_id: None,
                    };
                    connection(stream, peer, router, limits, slot).await;
                }
                Some((acceptor, mutual)) => {
                    let Some(stream) = handshake(stream, &acceptor, limits, what, addr).await
                    else {
                        return;
                    };
                    let cert = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first());
                    let peer = Peer {
                        addr,
                        authenticated: mutual && cert.is_some(),
                        node_id: cert.and_then(crate::tls::node_id_of),
                    };
                    connection(stream, peer, router, limits, slot).await;
                }
            }
        });
    }
}

/// The TLS handshake, bounded in time; a first byte that is not a TLS handshake record
/// (plain HTTP, say) closes the connection before anything is answered.
async fn handshake(
    stream: TcpStream,
    acceptor: &tokio_rustls::TlsAcceptor,
    limits: Limits,
    what: &'static str,
    addr: SocketAddr,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    const HANDSHAKE_RECORD: u8 = 0x16;
    let deadline = tokio::time::Instant::now() + limits.handshake_timeout;
    let mut first = [0u8; 1];
    match tokio::time::timeout_at(deadline, stream.peek(&mut first)).await {
        Ok(Ok(1)) if first[0] == HANDSHAKE_RECORD => {}
        Ok(Ok(1)) => {
            tracing::debug!(what, peer = %addr, "not TLS: connection closed unanswered");
            return None;
        }
        _ => return None,
    }
    match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            tracing::debug!(what, peer = %addr, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => None,
    }
}

/// Serve HTTP/1.1 on one connection, closing it when it idles past the limit or is evicted
/// to make room.
async fn connection<S>(stream: S, peer: Peer, router: axum::Router, limits: Limits, slot: Slot)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let slot = Arc::new(slot);
    let io = TokioIo::new(Activity {
        inner: stream,
        slot: slot.clone(),
    });
    let service =
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(peer);
            req.extensions_mut()
                .insert(axum::extract::ConnectInfo(peer.addr));
            let mut router = router.clone();
            async move { tower_service::Service::call(&mut router, req).await }
        });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .serve_connection(io, service)
        .with_upgrades();
    tokio::pin!(conn);
    let tick = (limits.idle_timeout / 4).max(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = slot.conn.evict.notified() => {
                tracing::debug!(peer = %peer.addr, "idle connection closed to make room");
                return;
            }
            _ = tokio::time::sleep(tick) => {
                if slot.idle() > limits.idle_timeout {
                    tracing::debug!(peer = %peer.addr, "idle connection closed");
                    return;
                }
            }
        }
    }
}

/// Whether an address is loopback (an IPv4-mapped IPv6 loopback included).
pub fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// A connection closed to make room is one that has moved no byte for at least this long
/// (a client in the middle of a request is never the one).
const EVICT_IDLE: Duration = Duration::from_secs(1);

/// The open connections of one listener, total and per address. At the total cap the one
/// idle longest is closed to make room (as the DNS-over-TCP pool does), so a flood of idle
/// connections cannot lock out `/healthz`, a peer or an operator; past the per-address cap
/// a newcomer is closed.
#[derive(Clone)]
struct Slots {
    limits: Limits,
    /// What activity times count from.
    epoch: Instant,
    inner: Arc<Mutex<SlotsInner>>,
}

#[derive(Default)]
struct SlotsInner {
    per_ip: HashMap<IpAddr, usize>,
    open: HashMap<u64, Arc<Conn>>,
    next_id: u64,
}

/// One open connection, as the slots see it.
struct Conn {
    ip: IpAddr,
    /// When a byte last moved (ms since the slots' epoch).
    last_ms: AtomicU64,
    /// Set (and notified) when the connection is closed to make room.
    evict: tokio::sync::Notify,
}

/// One open connection's place; given back when dropped.
struct Slot {
    slots: Slots,
    id: u64,
    conn: Arc<Conn>,
}

impl Slots {
    fn new(limits: Limits) -> Slots {
        Slots {
            limits,
            epoch: Instant::now(),
            inner: Arc::default(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn take(&self, ip: IpAddr) -> Option<Slot> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner.per_ip.get(&ip).copied().unwrap_or(0) >= self.limits.per_address {
            return None;
        }
        if inner.open.len() >= self.limits.max_connections {
            let now = self.now_ms();
            let idlest = inner
                .open
                .iter()
                .map(|(id, c)| (c.last_ms.load(Ordering::Relaxed), *id))
                .min()
                .filter(|(last, _)| now.saturating_sub(*last) >= EVICT_IDLE.as_millis() as u64)
                .map(|(_, id)| id)?;
            if let Some(c) = Self::release(&mut inner, idlest) {
                c.evict.notify_one();
            }
        }
        let now = self.now_ms();
        let id = inner.next_id;
        inner.next_id += 1;
        let conn = Arc::new(Conn {
            ip,
            last_ms: AtomicU64::new(now),
            evict: tokio::sync::Notify::new(),
        });
        inner.open.insert(id, conn.clone());
        *inner.per_ip.entry(ip).or_insert(0) += 1;
        Some(Slot {
            slots: self.clone(),
            id,
            conn,
        })
    }

    /// Forget connection `id` (once: an evicted one is forgotten when it is evicted).
    fn release(inner: &mut SlotsInner, id: u64) -> Option<Arc<Conn>> {
        let conn = inner.open.remove(&id)?;
        if let Some(n) = inner.per_ip.get_mut(&conn.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                inner.per_ip.remove(&conn.ip);
            }
        }
        Some(conn)
    }
}

impl Slot {
    fn touch(&self) {
        self.conn
            .last_ms
            .store(self.slots.now_ms(), Ordering::Relaxed);
    }

    /// How long since a byte last moved.
    fn idle(&self) -> Duration {
        Duration::from_millis(
            self.slots
                .now_ms()
                .saturating_sub(self.conn.last_ms.load(Ordering::Relaxed)),
        )
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut inner = self.slots.inner.lock().unwrap_or_else(|p| p.into_inner());
        Slots::release(&mut inner, self.id);
    }
}

/// A stream that notes when a byte last moved.
struct Activity<S> {
    inner: S,
    slot: Arc<Slot>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Activity<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.slot.touch();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Activity<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.slot.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Logs an event at most once per period, saying how many were not logged.
pub struct RateLimitedLog {
    period: Duration,
    state: Mutex<(Option<Instant>, u64)>,
}

impl RateLimitedLog {
    pub fn new(period: Duration) -> RateLimitedLog {
        RateLimitedLog {
            period,
            state: Mutex::new((None, 0)),
        }
    }

    /// Call `log` (with the number of events since the last line) if the period has passed.
    pub fn log(&self, log: impl FnOnce(u64)) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.1 += 1;
        if s.0.is_none_or(|at| at.elapsed() >= self.period) {
            let n = s.1;
            *s = (Some(Instant::now()), 0);
            drop(s);
            log(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn limits(per_address: usize) -> Limits {
        Limits {
            max_connections: 100,
            per_address,
            handshake_timeout: Duration::from_millis(500),
            header_timeout: Duration::from_millis(500),
            idle_timeout: Duration::from_millis(800),
        }
    }

    async fn start(transport: Transport, limits: Limits) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let router = axum::Router::new().route(
            "/peer",
            axum::routing::get(|axum::Extension(p): axum::Extension<Peer>| async move {
                format!("{:?}", p.node_id)
            }),
        );
        tokio::spawn(serve(listener, router, transport, limits, "test"));
        addr
    }

    /// Whether the server closes the connection without a byte within `wait`.
    fn closed_unanswered(s: &mut std::net::TcpStream, wait: Duration) -> bool {
        s.set_read_timeout(Some(wait)).expect("timeout");
        let mut buf = [0u8; 64];
        match s.read(&mut buf) {
            Ok(0) => true,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
            Ok(_) => false,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn per_address_cap_closes_the_excess_and_frees_slots() {
        let addr = start(Transport::Plain, limits(3)).await;
        tokio::task::spawn_blocking(move || {
            let held: Vec<_> = (0..3)
                .map(|_| std::net::TcpStream::connect(addr).expect("connect"))
                .collect();
            std::thread::sleep(Duration::from_millis(100));
            let mut extra = std::net::TcpStream::connect(addr).expect("connect");
            assert!(closed_unanswered(&mut extra, Duration::from_secs(2)));
            drop(held);
            std::thread::sleep(Duration::from_millis(200));
            let mut s = std::net::TcpStream::connect(addr).expect("connect");
            s.write_all(b"GET /peer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .expect("write");
            let mut out = String::new();
            s.read_to_string(&mut out).expect("read");
            assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        })
        .await
        .expect("join");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn at_the_total_cap_the_idlest_connection_makes_room() {
        let mut l = limits(100);
        l.max_connections = 5;
        l.idle_timeout = Duration::from_secs(30);
        l.header_timeout = Duration::from_secs(30);
        let addr = start(Transport::Plain, l).await;
        tokio::task::spawn_blocking(move || {
            let mut held: Vec<_> = (0..5)
                .map(|_| std::net::TcpStream::connect(addr).expect("connect"))
                .collect();
            // Idle past EVICT_IDLE: a newcomer is served, and one of the idle ones closed.
            std::thread::sleep(EVICT_IDLE + Duration::from_millis(300));
            let mut s = std::net::TcpStream::connect(addr).expect("connect");
            s.write_all(b"GET /peer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .expect("write");
            let mut out = String::new();
            s.read_to_string(&mut out).expect("read");
            assert!(out.starts_with("HTTP/1.1 200"), "{out}");
            let mut closed = 0;
            for h in held.iter_mut() {
                closed += usize::from(closed_unanswered(h, Duration::from_millis(300)));
            }
            assert_eq!(closed, 1, "exactly the one idle longest made room");
        })
        .await
        .expect("join");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn silent_connections_are_closed() {
        let addr = start(Transport::Plain, limits(10)).await;
        tokio::task::spawn_blocking(move || {
            let mut s = std::net::TcpStream::connect(addr).expect("connect");
            let t = Instant::now();
            assert!(closed_unanswered(&mut s, Duration::from_secs(5)));
            assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
            // Half a header, then nothing.
            let mut s = std::net::TcpStream::connect(addr).expect("connect");
            s.write_all(b"GET /peer HTTP/1.1\r\nHo").expect("write");
            let mut out = Vec::new();
            s.set_read_timeout(Some(Duration::from_secs(5))).expect("t");
            let _ = s.read_to_end(&mut out);
            assert!(t.elapsed() < Duration::from_secs(6));
        })
        .await
        .expect("join");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tls_listener_closes_plaintext_unanswered() {
        let dir = tempfile::tempdir().expect("tmp");
        crate::certs::generate(dir.path(), 1, &[]).expect("certs");
        let tls = Tls::load(crate::tls::TlsFiles {
            cert: dir.path().join("node1.crt"),
            key: dir.path().join("node1.key"),
            ca: Some(dir.path().join("ca.crt")),
        })
        .expect("tls");
        let addr = start(Transport::Tls(tls), limits(10)).await;
        tokio::task::spawn_blocking(move || {
            let mut s = std::net::TcpStream::connect(addr).expect("connect");
            s.write_all(b"GET /peer HTTP/1.1\r\nHost: x\r\n\r\n")
                .expect("write");
            assert!(closed_unanswered(&mut s, Duration::from_secs(2)));
        })
        .await
        .expect("join");
    }

    #[test]
    fn limits_fit_the_open_file_limit_with_a_reserve() {
        let (admin, raft) = Limits::fit(1 << 20, 1024);
        assert_eq!(admin.max_connections, Limits::ADMIN.max_connections);
        assert_eq!(raft.max_connections, Limits::RAFT.max_connections);
        let (admin, raft) = Limits::fit(4096, 1024);
        assert_eq!(
            admin.max_connections + raft.max_connections,
            4096 - 1024 - FD_RESERVE as usize
        );
        assert!(admin.per_address >= 64);
    }

    #[test]
    fn loopback() {
        assert!(is_loopback("127.0.0.2".parse().expect("ip")));
        assert!(is_loopback("::1".parse().expect("ip")));
        assert!(is_loopback("::ffff:127.0.0.1".parse().expect("ip")));
        assert!(!is_loopback("10.0.0.1".parse().expect("ip")));
        assert!(!is_loopback("::ffff:10.0.0.1".parse().expect("ip")));
    }

    #[test]
    fn rate_limited_log_counts_what_it_skipped() {
        let l = RateLimitedLog::new(Duration::from_secs(3600));
        let mut lines = Vec::new();
        for _ in 0..5 {
            l.log(|n| lines.push(n));
        }
        assert_eq!(lines, [1]);
    }
}
