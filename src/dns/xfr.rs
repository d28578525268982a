//! The data plane's slow path: zone transfers out (AXFR, RFC 5936; IXFR, RFC 1995),
//! NOTIFY and UPDATE requests, and TSIG-signed messages (RFC 8945). The transports hand
//! these here (UDP through a bounded queue to a task, TCP on the connection's task), so
//! the query path stays lock- and allocation-free; this path may allocate.

use std::net::IpAddr;
use std::sync::Arc;

use hickory_proto::op::{Message, OpCode, Query, ResponseCode};
use hickory_proto::rr::{RData, RecordType};

use crate::dns::answer::{answer, Client, Transport};
use crate::dns::cookie::Cookie;
use crate::dns::request;
use crate::dns::tsig::{self, Signer, Verified};
use crate::snapshot::Snapshot;
use crate::zone::transfer::{serial_after, XfrRr, XfrZone};
use crate::zone::wire_lower;

/// A transfer message stays under this many bytes (a TCP message may hold 65,535).
const MESSAGE_BUDGET: usize = 60_000;
/// Records tried per message before measuring.
const RECORDS_PER_MESSAGE: usize = 500;

/// Applies a DNS UPDATE through the cluster and says the RCODE to answer (wired by the
/// node; the data plane does not know Raft).
pub trait Updater: Send + Sync {
    fn update(
        &self,
        request: UpdateRequest,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ResponseCode> + Send + '_>>;
}

/// An UPDATE that passed TSIG and the grants, ready to be proposed.
#[derive(Debug, Clone)]
pub struct UpdateRequest {
    /// The zone's canonical origin (`example.com.`).
    pub zone: String,
    /// The signing key's canonical name.
    pub key: String,
    /// The prerequisite section (RFC 2136 §2.4) and the update section (§2.5).
    pub prerequisites: Vec<crate::zone::update::UpdateRr>,
    pub updates: Vec<crate::zone::update::UpdateRr>,
    /// The write's request id, derived from the request's TSIG MAC: the same signed
    /// message sent again (a client's retry over UDP, a replay within the fudge) gets the
    /// first one's result instead of applying twice.
    pub request_id: String,
}

/// What the slow path needs beyond the snapshot.
#[derive(Clone, Default)]
pub struct Context {
    pub updater: Option<Arc<dyn Updater>>,
}

/// A reply header for `req` with `rcode`, the question echoed.
fn reply(req: &Message, rcode: ResponseCode) -> Message {
    let mut m = Message::response(req.metadata.id, req.metadata.op_code);
    m.metadata.response_code = rcode;
    m.metadata.recursion_desired = req.metadata.recursion_desired;
    m.metadata.checking_disabled = req.metadata.checking_disabled;
    m.queries = req.queries.clone();
    m
}

fn encode(m: &Message) -> Vec<u8> {
    m.to_vec().unwrap_or_default()
}

/// A FORMERR built from the raw header alone (the message could not be read).
fn formerr_raw(msg: &[u8]) -> Vec<Vec<u8>> {
    if msg.len() < 12 {
        return Vec::new();
    }
    let mut out = vec![0u8; 12];
    out[0..2].copy_from_slice(&msg[0..2]);
    out[2] = 0x80 | (msg[2] & 0x78);
    out[3] = 1; // FORMERR
    vec![out]
}

/// Answer one special request: every message to send back, in order (none: drop).
pub async fn handle(
    snap: &Snapshot,
    msg: &[u8],
    source: IpAddr,
    transport: Transport,
    ctx: &Context,
) -> Vec<Vec<u8>> {
    let Ok(req) = Message::from_vec(msg) else {
        return formerr_raw(msg);
    };
    let mut signer = None;
    if req.signature.is_some() {
        match tsig::verify(msg, &snap.tsig, tsig::unix_now()) {
            Verified::Signed(s) => signer = Some(s),
            Verified::Unsigned => {}
            Verified::Malformed => return formerr_raw(msg),
            Verified::Failed(mut f) => {
                tracing::info!(%source, error = f.error, "TSIG verification failed");
                let mut out = encode(&reply(&req, ResponseCode::NotAuth));
                f.append(&mut out);
                return vec![out];
            }
        }
    }
    let qtype = req.queries.first().map(|q| q.query_type());
    match req.metadata.op_code {
        OpCode::Query if matches!(qtype, Some(RecordType::AXFR | RecordType::IXFR)) => {
            transfer(snap, &req, source, transport, signer)
        }
        OpCode::Query => signed_query(snap, msg, source, transport, signer),
        OpCode::Notify => {
            // We are the primary of our zones: acknowledge, change nothing.
            let mut m = reply(&req, ResponseCode::NoError);
            m.metadata.authoritative = true;
            finish(m, signer)
        }
        OpCode::Update => super::update::handle(snap, &req, signer, ctx).await,
        _ => finish(reply(&req, ResponseCode::NotImp), signer),
    }
}

/// One reply, signed when the request was.
fn finish(m: Message, signer: Option<Signer>) -> Vec<Vec<u8>> {
    let mut out = encode(&m);
    if let Some(mut s) = signer {
        s.sign(&mut out, 0, Vec::new());
    }
    vec![out]
}

/// A signed ordinary query: the usual answer, signed.
fn signed_query(
    snap: &Snapshot,
    msg: &[u8],
    source: IpAddr,
    transport: Transport,
    signer: Option<Signer>,
) -> Vec<Vec<u8>> {
    let Some(req) = request::parse(msg) else {
        return Vec::new();
    };
    let client = Client {
        source,
        transport,
        cookie: Cookie::None,
    };
    let mut out = Vec::with_capacity(1232);
    let outcome = answer(snap, &req, &client, &mut out);
    out.truncate(outcome.len);
    if let Some(mut s) = signer {
        s.sign(&mut out, 0, Vec::new());
    }
    vec![out]
}

/// AXFR or IXFR of one zone (RFC 5936, RFC 1995), to a client `allow_transfer` permits.
fn transfer(
    snap: &Snapshot,
    req: &Message,
    source: IpAddr,
    transport: Transport,
    signer: Option<Signer>,
) -> Vec<Vec<u8>> {
    let Some(q) = req.queries.first() else {
        return finish(reply(req, ResponseCode::FormErr), signer);
    };
    let origin = wire_lower(&q.name().to_lowercase());
    let key = signer.as_ref().map(|s| s.key.name.as_str());
    let zone = snap.xfr.get(&origin[..]);
    let permitted = zone.is_some_and(|z| z.settings.transfer_allowed(source, key));
    let (Some(zone), true) = (zone, permitted) else {
        tracing::info!(%source, zone = %q.name(), "zone transfer refused");
        return finish(reply(req, ResponseCode::Refused), signer);
    };
    let ixfr_from = (q.query_type() == RecordType::IXFR).then(|| {
        req.authorities.iter().find_map(|r| match &r.data {
            RData::SOA(soa) => Some(soa.serial),
            _ => None,
        })
    });
    if transport == Transport::Udp {
        // RFC 5936 §4.2: no AXFR over UDP; RFC 1995 §2: IXFR over UDP gets the SOA alone.
        if ixfr_from.is_none() {
            return finish(reply(req, ResponseCode::Refused), signer);
        }
        let mut m = reply(req, ResponseCode::NoError);
        m.metadata.authoritative = true;
        m.answers.push(zone.soa.clone());
        return finish(m, signer);
    }
    let records: Vec<XfrRr<'_>> = match ixfr_from {
        Some(None) => return finish(reply(req, ResponseCode::FormErr), signer),
        Some(Some(client)) => ixfr_records(zone, client).unwrap_or_else(|| axfr_records(zone)),
        None => axfr_records(zone),
    };
    tracing::info!(
        %source,
        zone = %q.name(),
        kind = ?q.query_type(),
        serial = zone.serial,
        records = records.len(),
        "zone transfer"
    );
    messages(req, q, &records, signer)
}

/// The whole zone, SOA first and last (RFC 5936 §2.2).
fn axfr_records(zone: &XfrZone) -> Vec<XfrRr<'_>> {
    let mut out = Vec::with_capacity(zone.file.len() + zone.services.len() + 1);
    out.push(XfrRr::Record(&zone.soa));
    out.extend(zone.body());
    out.push(XfrRr::Record(&zone.soa));
    out
}

/// RFC 1995 §4: the current SOA alone when the client is current; the differences when
/// the journal has them; `None` (the whole zone instead) otherwise.
fn ixfr_records(zone: &XfrZone, client: u32) -> Option<Vec<XfrRr<'_>>> {
    if client == zone.serial || serial_after(client, zone.serial) {
        return Some(vec![XfrRr::Record(&zone.soa)]);
    }
    let chain = zone.changes_since(client)?;
    let mut out = vec![XfrRr::Record(&zone.soa)];
    // The entries live as long as the snapshot: borrow them through the journal.
    for e in zone
        .journal
        .iter()
        .filter(|e| chain.iter().any(|c| Arc::ptr_eq(c, e)))
    {
        out.push(XfrRr::Record(&e.old_soa));
        out.extend(e.removed.iter().map(|w| XfrRr::Wire(w)));
        out.push(XfrRr::Record(&e.new_soa));
        out.extend(e.added.iter().map(|w| XfrRr::Wire(w)));
    }
    out.push(XfrRr::Record(&zone.soa));
    Some(out)
}

/// Cut `records` into messages of at most [`RECORDS_PER_MESSAGE`] records and
/// [`MESSAGE_BUDGET`] bytes (one record at least), each signed in turn. The header and
/// question are hickory's; the records are appended in wire form, names uncompressed.
fn messages(
    req: &Message,
    q: &Query,
    records: &[XfrRr<'_>],
    mut signer: Option<Signer>,
) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = records;
    let mut first = true;
    let mut one = Vec::with_capacity(512);
    while !rest.is_empty() || first {
        let mut m = reply(req, ResponseCode::NoError);
        m.metadata.authoritative = true;
        if !first {
            m.queries.clear();
        } else {
            m.queries = vec![q.clone()];
        }
        let mut bytes = encode(&m);
        if bytes.len() < 12 {
            tracing::error!("a transfer message header did not encode");
            return out;
        }
        let mut n = 0;
        let mut taken = 0;
        for r in rest.iter().take(RECORDS_PER_MESSAGE) {
            one.clear();
            if !r.write_wire(&mut one) {
                tracing::warn!(record = ?r, "a record that does not encode left out of a transfer");
                taken += 1;
                continue;
            }
            if n > 0 && bytes.len() + one.len() > MESSAGE_BUDGET {
                break;
            }
            bytes.extend_from_slice(&one);
            n += 1;
            taken += 1;
        }
        bytes[6..8].copy_from_slice(&(n as u16).to_be_bytes());
        if let Some(s) = &mut signer {
            s.sign(&mut bytes, 0, Vec::new());
        }
        out.push(bytes);
        rest = &rest[taken..];
        first = false;
    }
    out
}

/// The UDP slow path's queue: workers copy special datagrams into it; one task answers
/// them (an UPDATE waits for its commit without holding a worker) through a clone of the
/// listener's socket.
#[derive(Clone)]
pub struct UdpSlowPath {
    tx: tokio::sync::mpsc::Sender<(Vec<u8>, std::net::SocketAddr)>,
}

/// Requests waiting for the UDP slow path, beyond which they are dropped.
const UDP_SLOW_QUEUE: usize = 1024;
/// Requests the UDP slow path works on at once.
const UDP_SLOW_CONCURRENCY: usize = 64;

impl UdpSlowPath {
    /// Start the task that answers for `socket` (must run inside a tokio runtime).
    pub fn start(
        socket: std::net::UdpSocket,
        reader: crate::snapshot::SnapshotReader,
        ctx: Context,
    ) -> UdpSlowPath {
        let (tx, mut rx) =
            tokio::sync::mpsc::channel::<(Vec<u8>, std::net::SocketAddr)>(UDP_SLOW_QUEUE);
        let socket = Arc::new(socket);
        let permits = Arc::new(tokio::sync::Semaphore::new(UDP_SLOW_CONCURRENCY));
        tokio::spawn(async move {
            while let Some((msg, from)) = rx.recv().await {
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    return;
                };
                let snap = reader.load_full();
                let socket = socket.clone();
                let ctx = ctx.clone();
                tokio::spawn(async move {
                    let replies = handle(&snap, &msg, from.ip(), Transport::Udp, &ctx).await;
                    for r in replies {
                        if let Err(e) = socket.send_to(&r, from) {
                            tracing::debug!(error = %e, %from, "udp slow-path send failed");
                        }
                    }
                    drop(permit);
                });
            }
        });
        UdpSlowPath { tx }
    }

    /// Queue one datagram; dropped (as a lost datagram would be) when the queue is full.
    pub fn submit(&self, msg: &[u8], from: std::net::SocketAddr) {
        let _ = self.tx.try_send((msg.to_vec(), from));
    }
}
