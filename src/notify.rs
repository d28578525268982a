//! NOTIFY (RFC 1996) from the leader to each zone's `notify` addresses when the zone's
//! published serial changes.
//!
//! [`tee`] sits between the state machine's change feed and the publisher: every applied
//! batch that moved serials is looked at here (on the leader only; a follower passes it
//! on untouched). For each such zone with `notify` addresses, one task (a newer serial of
//! the same zone replaces it) waits until the new serial is published on every reachable
//! member, or 5 s after the commit, whichever comes first, then sends NOTIFY to each
//! address, signed with `notify_key` when set, and resends until answered, at most
//! [`SENDS`] times with a doubling timeout.
//!
//! "Published on every member" is approximated from what the leader knows: every member's
//! replicated (matched) log index has reached the change's entry, and then one heartbeat
//! interval and a margin have passed, in which the followers learn that the entry is
//! committed and apply and publish it (milliseconds). A member that has not replicated
//! the entry within 5 s counts as unreachable.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Record, RecordType};
use tokio::sync::mpsc;

use crate::cluster::{Change, Handle, State};
use crate::dns::tsig;
use crate::name::ZoneName;
use crate::zone::transfer::soa_with_serial;
use crate::zoneconf::TsigKey;

/// NOTIFY is sent at the latest this long after the leader applied the change.
const PUBLISH_DEADLINE: Duration = Duration::from_secs(5);
/// After every member has replicated the entry: time for them to learn the commit (one
/// heartbeat, 200 ms) and publish it.
const COMMIT_GRACE: Duration = Duration::from_millis(300);
/// Sends per address at most (RFC 1996 §3.6: retransmit until answered, bounded).
pub const SENDS: u32 = 5;
/// The first send's wait for an answer; it doubles with each resend.
const FIRST_TIMEOUT: Duration = Duration::from_secs(1);

/// One zone's new serial, to announce.
struct Job {
    origin: ZoneName,
    index: u64,
    applied: Instant,
    serial: u32,
    soa: Record,
    targets: Vec<SocketAddr>,
    key: Option<Arc<TsigKey>>,
}

/// Pass `changes` on (the returned feed, for the publisher), and on the leader start the
/// NOTIFYs the changes call for.
pub fn tee(
    mut changes: mpsc::UnboundedReceiver<Change>,
    handle: Handle,
) -> mpsc::UnboundedReceiver<Change> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut running: HashMap<ZoneName, tokio::task::JoinHandle<()>> = HashMap::new();
        while let Some(change) = changes.recv().await {
            if !change.delta.serials.is_empty() && handle.status().leader == Some(handle.node_id())
            {
                let index = change.last_applied.unwrap_or(0);
                for origin in &change.delta.serials {
                    let Some(job) = job(&change.state, origin, index) else {
                        continue;
                    };
                    if let Some(old) = running.remove(origin) {
                        old.abort(); // a newer serial supersedes it
                    }
                    running.insert(origin.clone(), tokio::spawn(run(job, handle.clone())));
                }
                running.retain(|_, t| !t.is_finished());
            }
            if tx.send(change).is_err() {
                return;
            }
        }
    });
    rx
}

/// What to announce for `origin` after `index`, if its settings name `notify` addresses.
fn job(state: &State, origin: &ZoneName, index: u64) -> Option<Job> {
    let settings = state.zone_settings(origin)?.settings.clone();
    if settings.notify.is_empty() {
        return None;
    }
    let zone = state.zone(origin)?;
    let serial = state.serial(origin)?;
    let key = match &settings.notify_key {
        // The settings hold the key's canonical name.
        Some(k) => match state.tsig_key(k.as_str()) {
            Some(e) => Some(e.key.clone()),
            None => {
                tracing::warn!(zone = origin.as_str(), key = %k, "notify_key is not a TSIG key; NOTIFY not sent");
                return None;
            }
        },
        None => None,
    };
    Some(Job {
        origin: origin.clone(),
        index,
        applied: Instant::now(),
        serial,
        soa: soa_with_serial(&zone.file, serial)?,
        targets: settings.notify.clone(),
        key,
    })
}

async fn run(job: Job, handle: Handle) {
    wait_published(&handle, job.index, job.applied).await;
    let job = Arc::new(job);
    let sends: Vec<_> = job
        .targets
        .iter()
        .map(|&to| tokio::spawn(notify_one(job.clone(), to)))
        .collect();
    for s in sends {
        let _ = s.await;
    }
}

/// Until every member has replicated `index` (plus [`COMMIT_GRACE`]), or
/// [`PUBLISH_DEADLINE`] after `applied`.
async fn wait_published(handle: &Handle, index: u64, applied: Instant) {
    let deadline = applied + PUBLISH_DEADLINE;
    loop {
        let st = handle.status();
        let last = st.last_log_index.unwrap_or(0);
        let everyone = st
            .members
            .iter()
            .filter(|m| m.id != st.node_id)
            .all(|m| m.lag.is_some_and(|lag| last.saturating_sub(lag) >= index));
        if everyone {
            let at = (Instant::now() + COMMIT_GRACE).min(deadline);
            tokio::time::sleep_until(at.into()).await;
            return;
        }
        if Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The NOTIFY message for `job` (RFC 1996 §3.7: the zone's SOA in the answer section),
/// signed when the zone has a `notify_key`.
fn message(job: &Job, id: u16) -> Option<Vec<u8>> {
    let origin = job.origin.to_name().ok()?;
    let mut m = Message::new(id, MessageType::Query, OpCode::Notify);
    m.metadata.authoritative = true;
    let mut q = Query::query(origin, RecordType::SOA);
    q.set_query_class(DNSClass::IN);
    m.queries.push(q);
    m.answers.push(job.soa.clone());
    let mut out = m.to_vec().ok()?;
    if let Some(key) = &job.key {
        tsig::sign_request(key, &mut out)?;
    }
    Some(out)
}

/// Send NOTIFY to one address until it answers, at most [`SENDS`] times.
async fn notify_one(job: Arc<Job>, to: SocketAddr) {
    let bind: SocketAddr = if to.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = match tokio::net::UdpSocket::bind(bind).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(%to, error = %e, "NOTIFY: cannot open a socket");
            return;
        }
    };
    let mut timeout = FIRST_TIMEOUT;
    let mut buf = vec![0u8; 4096];
    for attempt in 1..=SENDS {
        let id: u16 = rand::random();
        let Some(msg) = message(&job, id) else {
            tracing::error!(zone = %job.origin, "NOTIFY message could not be built");
            return;
        };
        if let Err(e) = socket.send_to(&msg, to).await {
            tracing::debug!(%to, error = %e, "NOTIFY send failed");
        }
        let until = Instant::now() + timeout;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            let Ok(Ok((n, from))) = tokio::time::timeout(left, socket.recv_from(&mut buf)).await
            else {
                break;
            };
            // An answer is a response from that address with the ID of this send.
            let Ok(reply) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            if from != to
                || reply.metadata.id != id
                || reply.metadata.message_type != MessageType::Response
                || reply.metadata.op_code != OpCode::Notify
            {
                continue;
            }
            let rcode = reply.metadata.response_code;
            if rcode == ResponseCode::NoError {
                tracing::info!(zone = %job.origin, serial = job.serial, %to, attempt, "NOTIFY answered");
            } else {
                tracing::warn!(zone = %job.origin, serial = job.serial, %to, %rcode, "NOTIFY answered with an error");
            }
            return;
        }
        timeout *= 2;
    }
    tracing::warn!(zone = %job.origin, serial = job.serial, %to, sends = SENDS, "NOTIFY not answered");
}
