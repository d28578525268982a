//! UDP: a few plain threads per socket, each a loop of receive → [`answer`] → send with
//! buffers it owns, so a query costs two system calls and no task, lock or allocation.
//!
//! On a wildcard address the socket asks the kernel for each datagram's destination
//! (`IP_PKTINFO` / `IPV6_RECVPKTINFO`) and the reply is sent from that same address: a
//! resolver drops replies from an address it did not ask.

use std::io::{IoSlice, IoSliceMut};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use nix::sys::socket::{
    recvmsg, sendmsg, setsockopt, sockopt, ControlMessage, ControlMessageOwned, MsgFlags,
    SockaddrStorage,
};

use crate::dns::answer::{answer, record, Client, Transport};
use crate::dns::request;
use crate::metrics;
use crate::snapshot::SnapshotReader;

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

/// Start `threads` workers on a bound socket. They stop within [`STOP_POLL`] of `stop`.
pub fn spawn(
    socket: UdpSocket,
    threads: usize,
    reader: SnapshotReader,
    stop: Arc<AtomicBool>,
) -> std::io::Result<Vec<JoinHandle<()>>> {
    let socket = Arc::new(socket);
    let local = socket.local_addr()?;
    let wildcard = local.ip().is_unspecified();
    (0..threads.max(1))
        .map(|i| {
            let socket = socket.clone();
            let reader = reader.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name(format!("dns-udp-{i}"))
                .spawn(move || worker(&socket, wildcard, &reader, &stop))
        })
        .collect()
}

fn worker(socket: &UdpSocket, wildcard: bool, reader: &SnapshotReader, stop: &AtomicBool) {
    let mut inbuf = vec![0u8; RECV_BUF];
    let mut out = Vec::with_capacity(RECV_BUF);
    let mut cmsg = nix::cmsg_space!(libc::in6_pktinfo);
    // This thread's own slot in every counter.
    let slot = metrics::claim_worker();
    while !stop.load(Ordering::Relaxed) {
        let received = if wildcard {
            recv_with_dst(socket, &mut inbuf, &mut cmsg)
        } else {
            socket.recv_from(&mut inbuf).map(|(n, src)| (n, src, None))
        };
        let (len, src, dst) = match received {
            Ok(r) => r,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(e) => {
                tracing::warn!(error = %e, "udp receive failed");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let Some(req) = request::parse(&inbuf[..len]) else {
            continue;
        };
        let snap = reader.load();
        let client = Client {
            source: src.ip(),
            transport: Transport::Udp,
        };
        let outcome = answer(&snap, &req, &client, &mut out);
        let sent = match dst {
            Some(dst) => send_from(socket, &out[..outcome.len], src, dst),
            None => socket.send_to(&out[..outcome.len], src).map(|_| ()),
        };
        if let Err(e) = sent {
            tracing::debug!(error = %e, %src, "udp send failed");
        }
        record(&snap, &outcome, slot);
    }
}

/// The destination of a datagram: its address and the interface it came in on.
#[derive(Clone, Copy)]
enum Dst {
    V4(libc::in_pktinfo),
    V6(libc::in6_pktinfo),
}

fn recv_with_dst(
    socket: &UdpSocket,
    buf: &mut [u8],
    cmsg: &mut Vec<u8>,
) -> std::io::Result<(usize, SocketAddr, Option<Dst>)> {
    let mut iov = [IoSliceMut::new(buf)];
    let msg =
        recvmsg::<SockaddrStorage>(socket.as_raw_fd(), &mut iov, Some(cmsg), MsgFlags::empty())
            .map_err(std::io::Error::from)?;
    let src = msg
        .address
        .and_then(|a| {
            a.as_sockaddr_in()
                .map(|s| SocketAddr::from((IpAddr::from(s.ip()), s.port())))
                .or_else(|| {
                    a.as_sockaddr_in6()
                        .map(|s| SocketAddr::from((IpAddr::from(s.ip()), s.port())))
                })
        })
        .ok_or_else(|| std::io::Error::other("datagram without a source address"))?;
    let mut dst = None;
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            match c {
                ControlMessageOwned::Ipv4PacketInfo(info) => dst = Some(Dst::V4(info)),
                ControlMessageOwned::Ipv6PacketInfo(info) => dst = Some(Dst::V6(info)),
                _ => {}
            }
        }
    }
    Ok((msg.bytes, src, dst))
}

fn send_from(socket: &UdpSocket, data: &[u8], to: SocketAddr, dst: Dst) -> std::io::Result<()> {
    let iov = [IoSlice::new(data)];
    let to = SockaddrStorage::from(to);
    let result = match dst {
        Dst::V4(info) => {
            // Send from the address the query came to; let routing pick the interface.
            let pi = libc::in_pktinfo {
                ipi_ifindex: 0,
                ipi_spec_dst: info.ipi_addr,
                ipi_addr: info.ipi_addr,
            };
            sendmsg(
                socket.as_raw_fd(),
                &iov,
                &[ControlMessage::Ipv4PacketInfo(&pi)],
                MsgFlags::empty(),
                Some(&to),
            )
        }
        Dst::V6(info) => sendmsg(
            socket.as_raw_fd(),
            &iov,
            &[ControlMessage::Ipv6PacketInfo(&info)],
            MsgFlags::empty(),
            Some(&to),
        ),
    };
    result.map(|_| ()).map_err(std::io::Error::from)
}
