//! UDP: one plain thread per CPU the process may run on, each with its own `SO_REUSEPORT`
//! socket and a loop of `recvmmsg` → [`answer`] each → `sendmmsg`, with buffers it owns and
//! the snapshot loaded once per batch: two system calls per batch, and no task, lock or
//! allocation per query.
//!
//! On a wildcard address the socket asks the kernel for each datagram's destination
//! (`IP_PKTINFO` / `IPV6_RECVPKTINFO`) and the reply is sent from that same address: a
//! resolver drops replies from an address it did not ask.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use nix::sys::socket::{setsockopt, sockopt};

use crate::dns::answer::{answer, record, slip, Client, Transport};
use crate::dns::cookie::{self, Checked, Cookie};
use crate::dns::request;
use crate::dns::rrl::{Limiter, Verdict};
use crate::dns::xfr::UdpSlowPath;
use crate::dns::Options;
use crate::dnstap::{self, Dnstap, Protocol, Tap};
use crate::metrics;
use crate::snapshot::SnapshotReader;

/// Datagrams per `recvmmsg` / `sendmmsg`.
pub const BATCH: usize = 32;
/// Room for one `IP_PKTINFO` or `IPV6_PKTINFO` control message.
const CMSG_ROOM: usize = 64;

/// How often a blocked receive wakes up to look at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(200);
/// Larger than any UDP query we answer (EDNS payloads beyond this are not queries).
const RECV_BUF: usize = 4096;

/// Bind a UDP socket for DNS: IPv6 sockets are IPv6-only (so `0.0.0.0` and `[::]` can both
/// be bound), and a wildcard address turns on destination reporting.
pub fn bind(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let domain = if addr.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    // Every worker binds its own socket to the address; the kernel spreads flows over them.
    socket.set_reuse_port(true)?;
    // Bursts queue in the kernel rather than being dropped while a worker is busy.
    let _ = socket.set_recv_buffer_size(4 << 20);
    socket.bind(&addr.into())?;
    socket.set_read_timeout(Some(STOP_POLL))?;
    let socket: UdpSocket = socket.into();
    if addr.ip().is_unspecified() {
        let fd = socket.as_fd_ref();
        let res = if addr.is_ipv4() {
            setsockopt(&fd, sockopt::Ipv4PacketInfo, &true)
        } else {
            setsockopt(&fd, sockopt::Ipv6RecvPacketInfo, &true)
        };
        res.map_err(std::io::Error::from)?;
    }
    Ok(socket)
}

trait AsFdRef {
    fn as_fd_ref(&self) -> std::os::fd::BorrowedFd<'_>;
}

impl AsFdRef for UdpSocket {
    fn as_fd_ref(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.as_fd()
    }
}

/// Bind `n` sockets to `addr` for `n` workers. A plain bind first makes sure nobody else
/// holds the address (with `SO_REUSEPORT` alone, a second server of the same user would
/// silently share the traffic); port 0 becomes one port for all.
pub fn bind_group(addr: SocketAddr, n: usize) -> std::io::Result<Vec<UdpSocket>> {
    let probe = UdpSocket::bind(addr)?;
    let addr = probe.local_addr()?;
    drop(probe);
    (0..n.max(1)).map(|_| bind(addr)).collect()
}

/// The number of UDP workers per address: one per CPU this process may run on (so
/// `taskset -c 0` gives one).
pub fn worker_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Start one worker per socket; each must be bound to the same address (see [`bind`]).
/// They stop within [`STOP_POLL`] of `stop`. With a query log, each worker logs into a tap
/// of its own.
pub fn spawn(
    sockets: Vec<UdpSocket>,
    reader: SnapshotReader,
    stop: Arc<AtomicBool>,
    dnstap: Option<&Dnstap>,
    options: Options,
    slow: Option<UdpSlowPath>,
) -> std::io::Result<Vec<JoinHandle<()>>> {
    sockets
        .into_iter()
        .enumerate()
        .map(|(i, socket)| {
            let local = socket.local_addr()?;
            let reader = reader.clone();
            let stop = stop.clone();
            let tap = dnstap.map(Dnstap::tap);
            let slow = slow.clone();
            std::thread::Builder::new()
                .name(format!("dns-udp-{i}"))
                .spawn(move || {
                    let mut batch = Batch::new(local, tap, options);
                    batch.slow = slow;
                    // This thread's own slot in every counter.
                    let slot = metrics::claim_worker();
                    while !stop.load(Ordering::Relaxed) {
                        batch.serve(&socket, &reader, slot);
                    }
                })
        })
        .collect()
}

/// Control-message space, aligned as `cmsghdr` needs.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct Cmsg([u8; CMSG_ROOM]);

/// One worker's buffers and system-call headers, reused for every batch. The headers hold
/// raw pointers into the buffers; they are filled in anew before each call.
struct Batch {
    wildcard: bool,
    /// The socket's address (for a wildcard, the port the replies' addresses go with).
    local: SocketAddr,
    /// The query log's queue, when queries are logged.
    tap: Option<Tap>,
    /// This worker's own rate limiter, when response rate limiting is on.
    rrl: Option<Limiter>,
    /// DNS cookies are on.
    cookies: bool,
    /// Where transfers, NOTIFY, UPDATE and signed messages go (a bounded queue).
    slow: Option<UdpSlowPath>,
    inbufs: Vec<[u8; RECV_BUF]>,
    outbufs: Vec<Vec<u8>>,
    addrs: Vec<libc::sockaddr_storage>,
    cmsgs: Vec<Cmsg>,
    out_cmsgs: Vec<Cmsg>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    out_iovs: Vec<libc::iovec>,
    out_hdrs: Vec<libc::mmsghdr>,
}

impl Batch {
    fn new(local: SocketAddr, tap: Option<Tap>, options: Options) -> Batch {
        // SAFETY: all-zero is a valid value of these plain C structs.
        let zeroed_hdr: libc::mmsghdr = unsafe { std::mem::zeroed() };
        let zeroed_addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let iov = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        Batch {
            wildcard: local.ip().is_unspecified(),
            local,
            tap,
            rrl: options.rate_limit.map(Limiter::new),
            cookies: options.cookies,
            slow: None,
            inbufs: vec![[0u8; RECV_BUF]; BATCH],
            outbufs: (0..BATCH).map(|_| Vec::with_capacity(RECV_BUF)).collect(),
            addrs: vec![zeroed_addr; BATCH],
            cmsgs: vec![Cmsg([0; CMSG_ROOM]); BATCH],
            out_cmsgs: vec![Cmsg([0; CMSG_ROOM]); BATCH],
            iovs: vec![iov; BATCH],
            hdrs: vec![zeroed_hdr; BATCH],
            out_iovs: vec![iov; BATCH],
            out_hdrs: vec![zeroed_hdr; BATCH],
        }
    }

    /// Receive up to a batch (waiting at most [`STOP_POLL`] for the first datagram), answer
    /// each from one snapshot, send the replies.
    fn serve(&mut self, socket: &UdpSocket, reader: &SnapshotReader, slot: metrics::Worker) {
        let fd = socket.as_raw_fd();
        for i in 0..BATCH {
            self.iovs[i] = libc::iovec {
                iov_base: self.inbufs[i].as_mut_ptr().cast(),
                iov_len: RECV_BUF,
            };
            let h = &mut self.hdrs[i].msg_hdr;
            h.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_iov = &mut self.iovs[i];
            h.msg_iovlen = 1;
            if self.wildcard {
                h.msg_control = self.cmsgs[i].0.as_mut_ptr().cast();
                h.msg_controllen = CMSG_ROOM as _;
            } else {
                h.msg_control = std::ptr::null_mut();
                h.msg_controllen = 0;
            }
            h.msg_flags = 0;
            self.hdrs[i].msg_len = 0;
        }
        // SAFETY: every header points into buffers of this struct, sized as declared, that
        // live across the call; the kernel writes at most those sizes.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n <= 0 {
            let e = std::io::Error::last_os_error();
            if !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock
                    | std::io::ErrorKind::TimedOut
                    | std::io::ErrorKind::Interrupted
            ) {
                tracing::warn!(error = %e, "udp receive failed");
                std::thread::sleep(Duration::from_millis(10));
            }
            return;
        }
        let snap = reader.load();
        // The query log: one look and one clock reading per batch.
        let received = match self.tap {
            Some(_) => dnstap::now(),
            None => Duration::ZERO,
        };
        let now_ms = self.rrl.as_ref().map_or(0, Limiter::now);
        let now_secs = if self.cookies { cookie::unix_now() } else { 0 };
        let mut m = 0;
        for i in 0..n as usize {
            let len = (self.hdrs[i].msg_len as usize).min(RECV_BUF);
            let Some(src) = sockaddr_to_std(&self.addrs[i]) else {
                continue;
            };
            let Some(req) = request::parse(&self.inbufs[i][..len]) else {
                if let Some(tap) = &self.tap {
                    let server =
                        server_addr(self.local, self.wildcard, &self.hdrs[i], &self.cmsgs[i]);
                    tap.log(
                        Protocol::Udp,
                        src,
                        server,
                        received,
                        &self.inbufs[i][..len],
                        None,
                    );
                }
                continue;
            };
            if req.special {
                // Off the query path: copied into the slow path's queue (dropped when full).
                if let Some(slow) = &self.slow {
                    slow.submit(&self.inbufs[i][..len], src);
                }
                continue;
            }
            let checked = if self.cookies {
                cookie::check(&snap.cookies, req.edns.as_ref(), src.ip(), now_secs)
            } else {
                Checked {
                    reply: Cookie::None,
                    valid: false,
                }
            };
            let client = Client {
                source: src.ip(),
                transport: Transport::Udp,
                cookie: checked.reply,
            };
            let outcome = answer(&snap, &req, &client, &mut self.outbufs[i]);
            record(&snap, &outcome, slot);
            let qlen = len;
            let mut len = outcome.len;
            let mut dropped = false;
            // A valid server cookie proves the source address: nothing to limit.
            if let Some(rrl) = self.rrl.as_mut().filter(|_| !checked.valid) {
                match rrl.check(src.ip(), &req, &outcome, now_ms) {
                    Verdict::Send => {}
                    Verdict::Slip => {
                        len = slip(&req, &outcome, &mut self.outbufs[i]);
                        metrics::rrl().slipped.inc(slot);
                    }
                    Verdict::Drop => {
                        metrics::rrl().dropped.inc(slot);
                        dropped = true;
                    }
                }
            }
            if let Some(tap) = &self.tap {
                let server = server_addr(self.local, self.wildcard, &self.hdrs[i], &self.cmsgs[i]);
                let reply = (!dropped).then(|| (&self.outbufs[i][..len], dnstap::now()));
                tap.log(
                    Protocol::Udp,
                    src,
                    server,
                    received,
                    &self.inbufs[i][..qlen],
                    reply,
                );
            }
            if dropped {
                continue;
            }
            self.out_iovs[m] = libc::iovec {
                iov_base: self.outbufs[i].as_mut_ptr().cast(),
                iov_len: len,
            };
            let namelen = self.hdrs[i].msg_hdr.msg_namelen;
            let h = &mut self.out_hdrs[m].msg_hdr;
            h.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = namelen;
            h.msg_iov = &mut self.out_iovs[m];
            h.msg_iovlen = 1;
            h.msg_flags = 0;
            h.msg_control = std::ptr::null_mut();
            h.msg_controllen = 0;
            if self.wildcard {
                let got = self.hdrs[i].msg_hdr.msg_controllen;
                let control = self.cmsgs[i];
                if let Some(clen) =
                    reply_control(&control.0[..got.min(CMSG_ROOM)], &mut self.out_cmsgs[m].0)
                {
                    h.msg_control = self.out_cmsgs[m].0.as_mut_ptr().cast();
                    h.msg_controllen = clen as _;
                }
            }
            m += 1;
        }
        if let Some(tap) = &self.tap {
            tap.wake();
        }
        let mut sent = 0;
        while sent < m {
            // SAFETY: as for recvmmsg; out_hdrs[sent..m] point at filled buffers of this
            // struct.
            let r = unsafe {
                libc::sendmmsg(
                    fd,
                    self.out_hdrs[sent..].as_mut_ptr(),
                    (m - sent) as libc::c_uint,
                    0,
                )
            };
            if r <= 0 {
                tracing::debug!(error = %std::io::Error::last_os_error(), "udp send failed");
                sent += 1; // skip the datagram that failed, send the rest
            } else {
                sent += r as usize;
            }
        }
    }
}

/// The address a datagram came to: the socket's, or on a wildcard socket the destination
/// the kernel reported with it.
fn server_addr(
    local: SocketAddr,
    wildcard: bool,
    hdr: &libc::mmsghdr,
    control: &Cmsg,
) -> SocketAddr {
    if !wildcard {
        return local;
    }
    let got = hdr.msg_hdr.msg_controllen.min(CMSG_ROOM);
    match destination(&control.0[..got]) {
        Some(ip) => SocketAddr::new(ip, local.port()),
        None => local,
    }
}

/// The destination address in a datagram's packet-info control message.
fn destination(received: &[u8]) -> Option<IpAddr> {
    let (pos, len, v4) = pktinfo(received)?;
    let data = &received[pos + std::mem::size_of::<libc::cmsghdr>()..pos + len];
    if v4 && data.len() >= std::mem::size_of::<libc::in_pktinfo>() {
        // SAFETY: the data is an in_pktinfo (checked length); unaligned access.
        let pi: libc::in_pktinfo = unsafe { std::ptr::read_unaligned(data.as_ptr().cast()) };
        return Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(pi.ipi_addr.s_addr))));
    }
    if !v4 && data.len() >= std::mem::size_of::<libc::in6_pktinfo>() {
        // SAFETY: the data is an in6_pktinfo (checked length); unaligned access.
        let pi: libc::in6_pktinfo = unsafe { std::ptr::read_unaligned(data.as_ptr().cast()) };
        return Some(IpAddr::V6(Ipv6Addr::from(pi.ipi6_addr.s6_addr)));
    }
    None
}

/// Where the packet-info control message is in a datagram's control data: its offset,
/// its length and whether it is IPv4's (`IP_PKTINFO`) or IPv6's (`IPV6_PKTINFO`).
/// `None` when there is none, or the control data is malformed.
fn pktinfo(received: &[u8]) -> Option<(usize, usize, bool)> {
    let hdr = std::mem::size_of::<libc::cmsghdr>();
    let mut pos = 0;
    while pos + hdr <= received.len() {
        // SAFETY: the bytes at `pos` are a cmsghdr written by the kernel (bounds checked).
        let c: libc::cmsghdr = unsafe { std::ptr::read_unaligned(received[pos..].as_ptr().cast()) };
        let len = c.cmsg_len as usize;
        if len < hdr || pos + len > received.len() {
            return None;
        }
        if c.cmsg_level == libc::IPPROTO_IP && c.cmsg_type == libc::IP_PKTINFO {
            return Some((pos, len, true));
        }
        if c.cmsg_level == libc::IPPROTO_IPV6 && c.cmsg_type == libc::IPV6_PKTINFO {
            return Some((pos, len, false));
        }
        // CMSG_ALIGN
        pos += (len + std::mem::size_of::<usize>() - 1) & !(std::mem::size_of::<usize>() - 1);
    }
    None
}

/// The source address of a datagram.
fn sockaddr_to_std(a: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match a.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says this storage holds a sockaddr_in.
            let sin: &libc::sockaddr_in = unsafe { &*(a as *const _ as *const libc::sockaddr_in) };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddr::from((
                IpAddr::V4(ip),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this storage holds a sockaddr_in6.
            let sin6: &libc::sockaddr_in6 =
                unsafe { &*(a as *const _ as *const libc::sockaddr_in6) };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::from((
                IpAddr::V6(ip),
                u16::from_be(sin6.sin6_port),
            )))
        }
        _ => None,
    }
}

/// From a received datagram's control data, the control data of its reply: the same
/// packet-info message, so the reply leaves from the address the query came to (for IPv4
/// with the interface left to routing). Returns its length.
fn reply_control(received: &[u8], out: &mut [u8; CMSG_ROOM]) -> Option<usize> {
    let hdr = std::mem::size_of::<libc::cmsghdr>();
    let (pos, len, v4) = pktinfo(received)?;
    if len > CMSG_ROOM {
        return None;
    }
    out[..len].copy_from_slice(&received[pos..pos + len]);
    let data = &received[pos + hdr..pos + len];
    if v4 && data.len() >= std::mem::size_of::<libc::in_pktinfo>() {
        // SAFETY: the data is an in_pktinfo (checked length); unaligned access.
        let mut pi: libc::in_pktinfo = unsafe { std::ptr::read_unaligned(data.as_ptr().cast()) };
        pi.ipi_ifindex = 0;
        pi.ipi_spec_dst = pi.ipi_addr;
        // SAFETY: same place and size in the copy.
        unsafe {
            std::ptr::write_unaligned(out[hdr..].as_mut_ptr().cast(), pi);
        }
    }
    Some(len)
}
