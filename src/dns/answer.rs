//! The pure answer: one parsed request and one snapshot in, one wire reply out, written into
//! a buffer the transport owns. No I/O, no lock, no allocation: UDP and TCP (and the
//! benches and the fuzzer) all call [`answer`]. What the answer was made of comes back in
//! its [`Outcome`]; the transports count it with [`record`], so `answer` itself stays pure
//! (and `explain` counts nothing).

use std::net::IpAddr;

use crate::dns::cookie::Cookie;
use crate::dns::encode::{opt_len, EcsEcho, OptOut, Section, Writer};
use crate::dns::request::{Kind, NameBuf, Question, Request};
use crate::metrics::{self, Worker};
use crate::model::PolicyKind;
use crate::policy::{self, Family};
use crate::snapshot::{Snapshot, ZoneKey};
use crate::zone::{parent, rtype, NodeRef, RrSetRef, SignedNsec, Zone};

/// The largest UDP reply we send, whatever the client offers (DNS Flag Day 2020: avoids IP
/// fragmentation); also what our OPT record advertises.
pub const MAX_UDP_PAYLOAD: u16 = 1232;
/// Without EDNS a UDP reply is at most 512 bytes (RFC 1035 §4.2.1).
pub const MIN_UDP_PAYLOAD: u16 = 512;
/// How many CNAMEs in a row we follow inside a zone before we stop.
const MAX_CNAME_CHAIN: usize = 8;

/// Response codes (RFC 1035 §4.1.1, RFC 6891 §9).
pub mod rcode {
    pub const NOERROR: u8 = 0;
    pub const FORMERR: u8 = 1;
    pub const SERVFAIL: u8 = 2;
    pub const NXDOMAIN: u8 = 3;
    pub const NOTIMP: u8 = 4;
    pub const REFUSED: u8 = 5;
    /// Extended: 16, sent as 0 in the header and 1 in the OPT record.
    pub const BADVERS: u16 = 16;
}

/// How the query arrived: it bounds the reply's size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// Who asked, as the transport saw it.
#[derive(Clone, Copy, Debug)]
pub struct Client {
    pub source: IpAddr,
    pub transport: Transport,
    /// The COOKIE option the reply carries ([`crate::dns::cookie::check`]; `None` when
    /// cookies are off or the query had none).
    pub cookie: Cookie,
}

/// The response class a reply is rate limited under (as in Knot's and NSD's RRL): replies
/// of one class to one client network share a budget, so that an attacker cannot escape
/// the limit by varying what does not change the reply (random names under a wildcard or
/// that do not exist).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// An answer with records for the question: per name and type.
    Positive,
    /// The name exists without that type: per name and type.
    NoData,
    /// The name does not exist: per zone.
    NxDomain,
    /// A referral to a delegated child: per delegation.
    Referral,
    /// Synthesized from a wildcard: per zone.
    Wildcard,
    /// Any other RCODE (REFUSED, FORMERR, NOTIMP, SERVFAIL, BADVERS): per zone (the root
    /// for queries in none of ours).
    Error,
}

/// [`Outcome::key_at`] when the class is counted under the root name, not a part of the
/// question's name.
pub const KEY_ROOT: u8 = u8::MAX;

/// What happened, for logs and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The full RCODE (BADVERS is 16).
    pub rcode: u16,
    pub truncated: bool,
    pub len: usize,
    /// The question's type (0 without a question).
    pub qtype: u16,
    /// The zone that answered; [`ZoneKey::NONE`] for REFUSED and for errors answered before
    /// a zone was looked up.
    pub zone: ZoneKey,
    /// The service whose pick is the answer (an index into `Snapshot::plans`), if one is.
    pub service: Option<u32>,
    /// Which of that service's datacenters have addresses in the answer: bit `i` stands for
    /// `plans[service].members[i]` (a service has at most 32).
    pub members: u32,
    /// The response class, for rate limiting.
    pub class: Class,
    /// Where in the (lower-cased) question name the name the class is counted under
    /// starts: 0 for the whole name, the offset of the zone origin or the delegation;
    /// [`KEY_ROOT`] for the root.
    pub key_at: u8,
    /// The length of the OPT record at the end of the reply (0 without one): a slipped
    /// (truncated) reply keeps it.
    pub opt_len: u16,
}

impl Outcome {
    fn error(rcode: u16, qtype: u16, len: usize, opt_len: usize) -> Outcome {
        Outcome {
            rcode,
            truncated: false,
            len,
            qtype,
            zone: ZoneKey::NONE,
            service: None,
            members: 0,
            class: Class::Error,
            key_at: KEY_ROOT,
            opt_len: opt_len as u16,
        }
    }
}

/// What the look-up found out on its way, besides the reply.
struct Trace {
    /// The ECS scope of the answer.
    scope: u8,
    zone: ZoneKey,
    service: Option<u32>,
    members: u32,
    /// The class of a NOERROR reply (the RCODE decides the others).
    class: Class,
    /// Where the zone's origin starts in the question name ([`KEY_ROOT`]: no zone).
    zone_at: u8,
    /// Where the delegation of a referral starts in the question name ([`KEY_ROOT`]: the
    /// referral came after a CNAME, so it is counted under the zone).
    cut_at: u8,
    /// The query has DO and the zone is signed: RRSIGs and NSECs go out.
    dnssec: bool,
}

/// Count one answered query in `snap`'s counters: the snapshot `outcome` was answered from.
/// `w` is the calling thread's [`metrics::worker`].
#[inline]
pub fn record(snap: &Snapshot, outcome: &Outcome, w: Worker) {
    let counters = &snap.counters;
    let plan = outcome
        .service
        .and_then(|i| snap.plans.get(i as usize))
        .and_then(Option::as_deref);
    let policy = match plan.map(|p| p.service.policy) {
        None => metrics::Policy::None,
        Some(PolicyKind::RoundRobin) => metrics::Policy::RoundRobin,
        Some(PolicyKind::Weighted) => metrics::Policy::Weighted,
        Some(PolicyKind::GeoNearest) => metrics::Policy::GeoNearest,
    };
    counters
        .zone(outcome.zone)
        .record(w, outcome.qtype, outcome.rcode, policy);
    if let Some(plan) = plan {
        let mut bits = outcome.members;
        while bits != 0 {
            let i = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            let dc = plan
                .members
                .get(i)
                .and_then(|&d| counters.dc_answers.get(d as usize));
            if let Some(c) = dc {
                c.inc(w);
            }
        }
    }
}

/// Answer `req` from `snap` into `out` (cleared first).
pub fn answer(snap: &Snapshot, req: &Request<'_>, client: &Client, out: &mut Vec<u8>) -> Outcome {
    let limit = match (client.transport, &req.edns) {
        (Transport::Tcp, _) => u16::MAX as usize,
        (Transport::Udp, None) => MIN_UDP_PAYLOAD as usize,
        (Transport::Udp, Some(e)) => e.udp_size.clamp(MIN_UDP_PAYLOAD, MAX_UDP_PAYLOAD) as usize,
    };
    // Whatever the answer, its OPT carries the same NSID and ECS echo; the ECS scope of a
    // static answer is 0 (RFC 7871 §7.2.1: it does not depend on the client).
    let mut opt = req.edns.map(|e| OptOut {
        udp_size: MAX_UDP_PAYLOAD,
        ext_rcode: 0,
        dnssec_ok: e.dnssec_ok,
        nsid: e.nsid.then_some(&snap.nsid[..]),
        ecs: e.ecs.map(|c| EcsEcho {
            family: c.family,
            source_prefix: c.source_prefix,
            scope_prefix: 0,
            addr: c.addr,
        }),
        cookie: match &client.cookie {
            Cookie::Reply(c) => Some(&c[..]),
            Cookie::None | Cookie::Malformed => None,
        },
    });
    // A malformed COOKIE option is FORMERR (RFC 7873 §5.2.2).
    let kind = match (req.kind, client.cookie) {
        (Kind::Query, Cookie::Malformed) => Kind::FormErr,
        (k, _) => k,
    };
    let code: u16 = match kind {
        Kind::FormErr => rcode::FORMERR as u16,
        Kind::NotImp => rcode::NOTIMP as u16,
        Kind::BadVers => rcode::BADVERS,
        Kind::Query => 0,
    };
    if kind != Kind::Query {
        if let Some(o) = opt.as_mut() {
            o.ext_rcode = (code >> 4) as u8;
            if kind == Kind::BadVers {
                o.nsid = None;
                o.ecs = None;
                o.cookie = None;
            }
        }
        let olen = opt_len(opt.as_ref());
        let mut w = Writer::new(out, req, limit, olen);
        w.set_rcode((code & 0x0f) as u8);
        let len = w.finish(opt.as_ref());
        return Outcome::error(
            code,
            req.question.as_ref().map_or(0, |q| q.qtype),
            len,
            olen,
        );
    }
    let Some(q) = req.question.as_ref() else {
        // parse() only says Query with a question; be safe anyway.
        let olen = opt_len(opt.as_ref());
        let mut w = Writer::new(out, req, limit, olen);
        w.set_rcode(rcode::FORMERR);
        let len = w.finish(opt.as_ref());
        return Outcome::error(rcode::FORMERR as u16, 0, len, olen);
    };
    // The client is the ECS address when there is one with a prefix (RFC 7871 §7.1.1);
    // ECS /0 carries no address.
    let ecs = req.edns.and_then(|e| e.ecs).filter(|c| c.source_prefix > 0);
    let who = ecs.map_or(client.source, |c| c.addr);
    let olen = opt_len(opt.as_ref());
    let mut w = Writer::new(out, req, limit, olen);
    let mut trace = Trace {
        scope: 0,
        zone: ZoneKey::NONE,
        service: None,
        members: 0,
        class: Class::Positive,
        zone_at: KEY_ROOT,
        cut_at: KEY_ROOT,
        dnssec: req.edns.is_some_and(|e| e.dnssec_ok),
    };
    let rc = resolve(snap, q, who, &mut w, &mut trace);
    w.set_rcode(rc);
    // ECS /0 keeps scope 0: the answer did not use an address from it.
    if let (Some(_), Some(o)) = (ecs, opt.as_mut().and_then(|o| o.ecs.as_mut())) {
        o.scope_prefix = trace.scope;
    }
    let truncated = w.truncated();
    let len = w.finish(opt.as_ref());
    let (class, key_at) = match rc {
        rcode::NOERROR => match trace.class {
            Class::Positive | Class::NoData => (trace.class, 0),
            Class::Referral if trace.cut_at != KEY_ROOT => (Class::Referral, trace.cut_at),
            c => (c, trace.zone_at),
        },
        rcode::NXDOMAIN => (Class::NxDomain, trace.zone_at),
        _ => (Class::Error, trace.zone_at),
    };
    Outcome {
        rcode: rc as u16,
        truncated,
        len,
        qtype: q.qtype,
        zone: trace.zone,
        service: trace.service,
        members: trace.members,
        class,
        key_at,
        opt_len: olen as u16,
    }
}

/// The authoritative look-up (RFC 1034 §4.3.2, RFC 4592, RFC 8482), writing as it goes.
/// Returns the RCODE; the ECS scope of the answer (0 unless a service's pick depended on
/// where the client is), the zone and the service's pick go into `trace`.
fn resolve(
    snap: &Snapshot,
    q: &Question<'_>,
    who: IpAddr,
    w: &mut Writer<'_>,
    trace: &mut Trace,
) -> u8 {
    if q.qclass != 1 {
        return rcode::REFUSED; // class IN only
    }
    if matches!(q.qtype, rtype::AXFR | rtype::IXFR) {
        return rcode::REFUSED; // no zone transfers in v1
    }
    let lower = q.name.as_slice();
    let Some(mut zone) = snap.zones.find(lower) else {
        return rcode::REFUSED;
    };
    // DS belongs to the parent side of a cut (RFC 4035 §3.1.4.1): at the apex of a zone
    // whose parent we also serve, answer from the parent.
    if q.qtype == rtype::DS && lower == zone.origin_wire() {
        if let Some(p) = snap.zones.find_parent(lower) {
            zone = p;
        }
    }
    w.set_aa(true);
    trace.dnssec &= zone.signer().is_some();
    trace.zone = ZoneKey::of(zone);
    // The origin is a suffix of the name (the parent's too, for a DS at an apex).
    trace.zone_at =
        u8::try_from(lower.len() - zone.origin_wire().len().min(lower.len())).unwrap_or(KEY_ROOT);
    walk(snap, zone, q, who, w, trace)
}

/// From the zone down to the answer, following CNAMEs inside the zone.
fn walk(
    snap: &Snapshot,
    zone: &Zone,
    q: &Question<'_>,
    who: IpAddr,
    w: &mut Writer<'_>,
    trace: &mut Trace,
) -> u8 {
    // The name being looked up: first the question, then each CNAME target in the zone.
    let mut raw: &[u8] = q.raw;
    let mut name: NameBuf = q.name;
    for _ in 0..=MAX_CNAME_CHAIN {
        let lname = name.as_slice();
        if let Some(cut) = find_cut(zone, lname, q.qtype) {
            trace.class = Class::Referral;
            if std::ptr::eq(raw, q.raw) {
                trace.cut_at = u8::try_from(cut.1).unwrap_or(KEY_ROOT);
            }
            return referral(zone, cut, raw, w, trace.dnssec);
        }
        let (node, owner_is_wild) = match zone.node(lname) {
            Some(n) => (n, false),
            None => match wildcard(zone, lname) {
                Some(n) => {
                    trace.class = Class::Wildcard;
                    (n, true)
                }
                None if trace.dnssec => {
                    // RFC 9824: NOERROR with an NSEC at the name, types RRSIG NSEC NXNAME.
                    trace.class = Class::NxDomain;
                    deny(zone, w, raw, lname, Denial::NxName);
                    return rcode::NOERROR;
                }
                None => {
                    negative(zone, w);
                    return rcode::NXDOMAIN;
                }
            },
        };
        // Synthesized records take the query name as owner (RFC 4592 §4.1).
        if let (Some(idx), false) = (node.service(), owner_is_wild) {
            if matches!(q.qtype, rtype::A | rtype::AAAA | rtype::ANY) {
                return service(snap, zone, node, idx, q.qtype, raw, lname, who, w, trace);
            }
        }
        if q.qtype != rtype::CNAME {
            if let Some(cname) = node.get(rtype::CNAME) {
                if !answer_set(w, zone, trace.dnssec, owner_is_wild, raw, lname, cname) {
                    w.set_tc();
                    return rcode::NOERROR;
                }
                let Some(crate::zone::Rdata::Name(target)) = cname.rdatas().next() else {
                    return rcode::NOERROR;
                };
                if q.qtype == rtype::ANY {
                    return rcode::NOERROR; // RFC 8482: the CNAME is the one RRset
                }
                let next = NameBuf::lower(target);
                if !crate::zone::is_subdomain(next.as_slice(), zone.origin_wire()) {
                    return rcode::NOERROR; // out of zone: the resolver follows it
                }
                raw = target;
                name = next;
                continue;
            }
        }
        let set = if q.qtype == rtype::ANY {
            // RFC 8482 §4.2: one RRset of the name is a full answer to ANY.
            node.rrsets().next()
        } else if node.is_cut() && q.qtype == rtype::DS {
            node.get(rtype::DS)
        } else {
            node.get(q.qtype)
        };
        // The apex SOA as published carries the cluster's serial, not the text's.
        let set = set.map(|s| {
            if s.rtype() == rtype::SOA {
                zone.soa()
            } else {
                s
            }
        });
        match set {
            Some(set) => {
                if !answer_set(w, zone, trace.dnssec, owner_is_wild, raw, lname, set) {
                    w.set_tc();
                    return rcode::NOERROR;
                }
                additional(zone, set, w, false);
            }
            None => {
                if trace.class == Class::Positive {
                    trace.class = Class::NoData;
                }
                if trace.dnssec {
                    let kind = match (owner_is_wild, node.service()) {
                        (true, _) => Denial::Synthesized(node),
                        // A service name has A and/or AAAA whatever the type asked.
                        (false, Some(idx)) => {
                            let (v4, v6) = service_families(snap, idx);
                            Denial::Service(node, v4, v6)
                        }
                        (false, None) => Denial::NoData(node),
                    };
                    deny(zone, w, raw, name.as_slice(), kind);
                } else {
                    negative(zone, w);
                }
            }
        }
        return rcode::NOERROR;
    }
    rcode::NOERROR // chain too long: what we have is the answer
}

/// A service's A or AAAA answer: the policy's pick, capped at the service's `answers`.
#[allow(clippy::too_many_arguments)]
fn service(
    snap: &Snapshot,
    zone: &Zone,
    node: NodeRef<'_>,
    idx: u32,
    qtype: u16,
    raw: &[u8],
    lower: &[u8],
    who: IpAddr,
    w: &mut Writer<'_>,
    trace: &mut Trace,
) -> u8 {
    let Some(plan) = snap.plans.get(idx as usize).and_then(Option::as_deref) else {
        return rcode::SERVFAIL;
    };
    trace.service = Some(idx);
    let mut rng = LazyRng(None);
    // Only round-robin rotates: the others leave the thread's position alone.
    let tick = if plan.service.policy == PolicyKind::RoundRobin {
        TICK.with(|t| {
            let v = t.get().wrapping_add(1);
            t.set(v);
            v
        })
    } else {
        0
    };
    let families: &[Family] = match qtype {
        rtype::AAAA => &[Family::V6],
        rtype::A => &[Family::V4],
        _ => &[Family::V4, Family::V6], // ANY: one RRset (RFC 8482), IPv4 if there is one
    };
    for &family in families {
        let pick = policy::pick(plan, &snap.dcs, family, who, tick, &mut rng);
        trace.scope = pick.scope;
        let cap = if pick.failed_open {
            usize::MAX
        } else {
            plan.cap
        };
        let dcs = &snap.dcs.entries;
        let addrs = pick.as_slice().iter().flat_map(|&d| {
            let e = &dcs[d as usize];
            let (v4, v6): (&[[u8; 4]], &[[u8; 16]]) = match family {
                Family::V4 => (&e.v4, &[]),
                Family::V6 => (&[], &e.v6),
            };
            v4.iter().map(|a| &a[..]).chain(v6.iter().map(|a| &a[..]))
        });
        let mut addrs = addrs.take(cap).peekable();
        if addrs.peek().is_none() {
            continue;
        }
        let rt = match family {
            Family::V4 => rtype::A,
            Family::V6 => rtype::AAAA,
        };
        let written = if trace.dnssec {
            signed_addrs(w, zone, raw, lower, rt, plan.service.ttl, addrs)
        } else {
            w.raw_rrset(Section::Answer, raw, rt, plan.service.ttl, addrs)
        };
        if !written {
            w.set_tc();
            return rcode::NOERROR;
        }
        // The datacenters whose addresses went out: in pick order, up to the cap.
        let mut left = cap;
        for &d in pick.as_slice() {
            if left == 0 {
                break;
            }
            let n = match family {
                Family::V4 => dcs[d as usize].v4.len(),
                Family::V6 => dcs[d as usize].v6.len(),
            };
            if n > 0 {
                if let Some(i) = plan.members.iter().position(|&m| m == d) {
                    trace.members |= 1u32.checked_shl(i as u32).unwrap_or(0);
                }
                left = left.saturating_sub(n);
            }
        }
        return rcode::NOERROR;
    }
    trace.class = Class::NoData;
    if trace.dnssec {
        // The NSEC lists the service's families but those this answer found empty (every
        // datacenter out with `on_all_down = "none"`), which it is then signed for.
        let (v4, v6) = service_families(snap, idx);
        let tried = |f: Family| families.contains(&f);
        let kind = Denial::Service(node, v4 && !tried(Family::V4), v6 && !tried(Family::V6));
        deny(zone, w, raw, lower, kind);
    } else {
        negative(zone, w);
    }
    rcode::NOERROR
}

/// Whether a service's datacenters have IPv4 and IPv6 addresses (whatever their health,
/// so a NODATA proof never hides a variant another client may get).
fn service_families(snap: &Snapshot, idx: u32) -> (bool, bool) {
    let Some(plan) = snap.plans.get(idx as usize).and_then(Option::as_deref) else {
        return (false, false);
    };
    let (mut v4, mut v6) = (false, false);
    for &d in plan.members.iter() {
        if let Some(e) = snap.dcs.entries.get(d as usize) {
            v4 |= e.has(Family::V4);
            v6 |= e.has(Family::V6);
        }
    }
    (v4, v6)
}

/// The thread's random generator, taken only when a pick draws (weighted services): a geo
/// or round-robin answer does not pay for it.
struct LazyRng(Option<rand::rngs::ThreadRng>);

impl rand::RngCore for LazyRng {
    fn next_u32(&mut self) -> u32 {
        self.0.get_or_insert_with(rand::rng).next_u32()
    }

    fn next_u64(&mut self) -> u64 {
        self.0.get_or_insert_with(rand::rng).next_u64()
    }

    fn fill_bytes(&mut self, dst: &mut [u8]) {
        self.0.get_or_insert_with(rand::rng).fill_bytes(dst)
    }
}

thread_local! {
    /// Round-robin position, one per worker thread: no shared counter on the hot path.
    static TICK: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// The closest delegation at or above `name` and below the apex, unless the question is the
/// DS at the cut itself (answered from this side).
fn find_cut<'z>(zone: &'z Zone, name: &[u8], qtype: u16) -> Option<(NodeRef<'z>, usize)> {
    let origin_len = zone.origin_wire().len();
    if name.len() <= origin_len {
        return None;
    }
    // Label starts of `name` above the origin, walked from the apex down.
    let mut starts = [0u8; 128];
    let mut n = 0;
    let mut i = 0;
    while name.len() - i > origin_len && n < starts.len() {
        starts[n] = i as u8;
        n += 1;
        i += 1 + name[i] as usize;
    }
    for &s in starts[..n].iter().rev() {
        let s = s as usize;
        let node = zone.node(&name[s..])?;
        if node.is_cut() {
            if s == 0 && qtype == rtype::DS {
                return None;
            }
            return Some((node, s));
        }
    }
    None
}

/// The wildcard that covers a name that does not exist: `*.<closest encloser>`
/// (RFC 4592 §3.3.1).
fn wildcard<'z>(zone: &'z Zone, name: &[u8]) -> Option<NodeRef<'z>> {
    let mut rest = name;
    while rest.len() > zone.origin_wire().len() {
        rest = parent(rest);
        if let Some(node) = zone.node(rest) {
            if !node.has_wildcard_child() {
                return None;
            }
            let mut wild = [0u8; 257];
            wild[0] = 1;
            wild[1] = b'*';
            let len = 2 + rest.len();
            if len > wild.len() {
                return None;
            }
            wild[2..len].copy_from_slice(rest);
            return zone.node(&wild[..len]);
        }
    }
    None
}

/// A referral: the cut's NS in authority and their addresses as glue, without AA.
fn referral(
    zone: &Zone,
    cut: (NodeRef<'_>, usize),
    raw: &[u8],
    w: &mut Writer<'_>,
    dnssec: bool,
) -> u8 {
    let (node, start) = cut;
    w.set_aa(false);
    let Some(ns) = node.get(rtype::NS) else {
        return rcode::SERVFAIL;
    };
    if !w.rrset(Section::Authority, &raw[start..], ns, ns.ttl()) {
        w.set_tc();
        return rcode::NOERROR;
    }
    // Signed: the DS with its RRSIG, or the NSEC at the cut proving there is none.
    if dnssec {
        let owner = &raw[start..];
        let ok = match (node.get(rtype::DS), node.nsec()) {
            (Some(ds), _) => put(w, true, Section::Authority, owner, ds, ds.ttl()),
            (None, Some(nsec)) => put_nsec(w, owner, zone.negative_ttl(), nsec),
            (None, None) => true,
        };
        if !ok {
            w.set_tc();
            return rcode::NOERROR;
        }
    }
    additional(zone, ns, w, true);
    rcode::NOERROR
}

/// Address records for the targets of NS, MX and SRV records that live in this zone. For a
/// referral they are glue, and glue that does not fit sets TC (RFC 9471); otherwise extra
/// records are left out silently (RFC 2181 §9).
fn additional(zone: &Zone, set: RrSetRef<'_>, w: &mut Writer<'_>, glue: bool) {
    if !matches!(set.rtype(), rtype::NS | rtype::MX | rtype::SRV) {
        return;
    }
    for target in set.targets() {
        let lower = NameBuf::lower(target);
        let Some(node) = zone.node(lower.as_slice()) else {
            continue;
        };
        for t in [rtype::A, rtype::AAAA] {
            if let Some(addrs) = node.get(t) {
                if !w.rrset(Section::Additional, target, addrs, addrs.ttl()) && glue {
                    w.set_tc();
                    return;
                }
            }
        }
    }
}

/// An RRset and, with `signed`, its RRSIGs, together or not at all.
fn put(
    w: &mut Writer<'_>,
    signed: bool,
    section: Section,
    owner: &[u8],
    set: RrSetRef<'_>,
    ttl: u32,
) -> bool {
    if !signed || set.sigs().is_empty() {
        return w.rrset(section, owner, set, ttl);
    }
    w.together(|w| {
        w.rrset(section, owner, set, ttl) && w.raw_rrset(section, owner, RRSIG, ttl, set.sigs())
    })
}

/// An answer RRset at `raw`: with DO in a signed zone, with its RRSIG; one made from a
/// wildcard is signed as the query name, now (so no proof of the name's absence is needed).
fn answer_set(
    w: &mut Writer<'_>,
    zone: &Zone,
    dnssec: bool,
    wild: bool,
    raw: &[u8],
    lower: &[u8],
    set: RrSetRef<'_>,
) -> bool {
    if !(dnssec && wild) {
        return put(w, dnssec, Section::Answer, raw, set, set.ttl());
    }
    let mut sig = [0u8; SIG_ROOM];
    let canon = set.canon();
    let Some(n) = sign_rrset(zone, lower, set.rtype(), set.ttl(), canon, true, &mut sig) else {
        return w.rrset(Section::Answer, raw, set, set.ttl());
    };
    w.together(|w| {
        w.rrset(Section::Answer, raw, set, set.ttl())
            && w.rrsig(Section::Answer, raw, set.ttl(), &sig[..n])
    })
}

/// A service's addresses signed as the query name, now (RFC 4034 §6.3 order in the
/// signature; pick order in the answer).
fn signed_addrs<'a>(
    w: &mut Writer<'_>,
    zone: &Zone,
    raw: &[u8],
    lower: &[u8],
    rt: u16,
    ttl: u32,
    addrs: impl Iterator<Item = &'a [u8]>,
) -> bool {
    let mut list: [&[u8]; 64] = [&[]; 64];
    let mut n = 0;
    for a in addrs.take(list.len()) {
        list[n] = a;
        n += 1;
    }
    w.together(|w| {
        if !w.raw_rrset(Section::Answer, raw, rt, ttl, list[..n].iter().copied()) {
            return false;
        }
        if zone.signer().is_none() {
            return true;
        }
        let mut sorted = list;
        sorted[..n].sort_unstable();
        let mut uniq = 0;
        for i in 0..n {
            if i == 0 || sorted[i] != sorted[uniq - 1] {
                sorted[uniq] = sorted[i];
                uniq += 1;
            }
        }
        let mut sig = [0u8; SIG_ROOM];
        let rdatas = sorted[..uniq].iter().copied();
        match sign_rrset(zone, lower, rt, ttl, rdatas, true, &mut sig) {
            Some(len) => w.rrsig(Section::Answer, raw, ttl, &sig[..len]),
            None => true,
        }
    })
}

/// A ready NSEC with its RRSIG, together or not at all.
fn put_nsec(w: &mut Writer<'_>, owner: &[u8], ttl: u32, nsec: SignedNsec<'_>) -> bool {
    w.together(|w| {
        w.raw_rrset(
            Section::Authority,
            owner,
            NSEC,
            ttl,
            std::iter::once(nsec.rdata),
        ) && w.rrsig(Section::Authority, owner, ttl, nsec.sig)
    })
}

/// Sign one RRset as `owner` (lower-case wire; `rdatas` canonical, in canonical order) into
/// `sig`: from the shared signature cache when `cached` and it has it, else signed now
/// (and cached when `cached`). `None` in an unsigned zone or when it cannot be signed.
fn sign_rrset<'r, I>(
    zone: &Zone,
    owner: &[u8],
    rtype: u16,
    ttl: u32,
    rdatas: I,
    cached: bool,
    sig: &mut [u8; SIG_ROOM],
) -> Option<usize>
where
    I: Iterator<Item = &'r [u8]> + Clone,
{
    let signer = zone.signer()?;
    if !cached {
        return signer.sign_into(owner, rtype, ttl, rdatas, &mut [0u8; MAX_TBS], sig);
    }
    let cache = sigcache::global();
    let key = cache.key(zone.sig_generation(), owner, rtype, ttl, rdatas.clone());
    let origin = zone.origin_wire();
    if let Some(n) = cache.get(key, origin, sig) {
        return Some(n);
    }
    // The to-be-signed buffer (2 KiB) is made only when signing.
    let n = signer.sign_into(owner, rtype, ttl, rdatas, &mut [0u8; MAX_TBS], sig)?;
    cache.put(key, origin, &sig[..n]);
    Some(n)
}

/// RRSIG and NSEC type numbers.
const RRSIG: u16 = crate::zone::dnssec::types::RRSIG;
const NSEC: u16 = crate::zone::dnssec::types::NSEC;
use crate::dns::sigcache;
use crate::zone::dnssec::{MAX_TBS, RRSIG_HEAD, SIG_LEN};
/// Room for one RRSIG RDATA: the fixed fields, the signer's name, the signature.
const SIG_ROOM: usize = RRSIG_HEAD + 255 + SIG_LEN;
/// The compact-denial bitmap of a name that does not exist: RRSIG NSEC NXNAME (RFC 9824).
const NXNAME_BITMAP: [u8; 19] = [
    0x00, 0x11, 0, 0, 0, 0, 0, 0x03, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x80,
];

/// What a signed negative answer denies.
enum Denial<'z> {
    /// The name exists without the type: its ready NSEC.
    NoData(NodeRef<'z>),
    /// A wildcard-made name without the type: the wildcard's types, signed as the name.
    Synthesized(NodeRef<'z>),
    /// A service name without the type: its ready NSEC's types plus A (first flag) and/or
    /// AAAA (second) by the service's address families, signed as the name.
    Service(NodeRef<'z>, bool, bool),
    /// The name does not exist (answered NOERROR, RFC 9824).
    NxName,
}

/// A signed negative answer: the SOA and the compact-denial NSEC, each with its RRSIG.
fn deny(zone: &Zone, w: &mut Writer<'_>, raw: &[u8], lower: &[u8], kind: Denial<'_>) {
    let ttl = zone.negative_ttl();
    if !put(
        w,
        true,
        Section::Authority,
        zone.origin_wire(),
        zone.soa(),
        ttl,
    ) {
        w.set_tc();
        return;
    }
    let mut bits = [0u8; 256];
    let cached = !matches!(kind, Denial::NxName);
    let bitmap: &[u8] = match kind {
        Denial::Service(node, v4, v6) => match node.nsec() {
            Some(nsec) => {
                let b = nsec.bitmap();
                // Window 0 is always there (RRSIG and NSEC are in it) and reaches AAAA.
                let ok = b.len() <= bits.len() && b.len() >= 6 && b[0] == 0 && b[1] >= 4;
                if !(v4 || v6) || !ok {
                    if !put_nsec(w, raw, ttl, nsec) {
                        w.set_tc();
                    }
                    return;
                }
                bits[..b.len()].copy_from_slice(b);
                if v4 {
                    bits[2] |= 0x80 >> rtype::A; // type 1: window 0, byte 0
                }
                if v6 {
                    bits[2 + 3] |= 0x80 >> (rtype::AAAA % 8); // type 28: byte 3
                }
                &bits[..b.len()]
            }
            None => return,
        },
        Denial::NoData(node) => {
            if let Some(nsec) = node.nsec() {
                if !put_nsec(w, raw, ttl, nsec) {
                    w.set_tc();
                }
            }
            return;
        }
        Denial::Synthesized(node) => match node.nsec() {
            // The wildcard's NSEC RDATA: `\000.*.<closest encloser>` then its bitmap.
            Some(nsec) => nsec.bitmap(),
            None => return,
        },
        Denial::NxName => &NXNAME_BITMAP,
    };
    let mut rdata = [0u8; 2 + 255 + 256];
    let len = 2 + lower.len() + bitmap.len();
    if len > rdata.len() {
        return;
    }
    rdata[0] = 1;
    rdata[2..2 + lower.len()].copy_from_slice(lower);
    rdata[2 + lower.len()..len].copy_from_slice(bitmap);
    let rdata = &rdata[..len];
    let mut sig = [0u8; SIG_ROOM];
    // Only the NSEC of a name that does not exist is signed per query, uncached.
    let Some(n) = sign_rrset(
        zone,
        lower,
        NSEC,
        ttl,
        std::iter::once(rdata),
        cached,
        &mut sig,
    ) else {
        return;
    };
    let nsec = SignedNsec {
        rdata,
        sig: &sig[..n],
    };
    if !put_nsec(w, raw, ttl, nsec) {
        w.set_tc();
    }
}

/// NODATA or NXDOMAIN: the zone's SOA in authority with the RFC 2308 TTL.
fn negative(zone: &Zone, w: &mut Writer<'_>) {
    let soa = zone.soa();
    if !w.rrset(
        Section::Authority,
        zone.origin_wire(),
        soa,
        zone.negative_ttl(),
    ) {
        w.set_tc();
    }
}

/// Turn the reply `outcome` in `out` into its slipped form for response rate limiting:
/// the header with TC set and the question, the OPT record kept (so a cookie still reaches
/// the client), every other record gone. Returns the new length.
pub fn slip(req: &Request<'_>, outcome: &Outcome, out: &mut [u8]) -> usize {
    let len = outcome.len.min(out.len());
    if len < 12 {
        return len;
    }
    let question_end = 12 + req.question.as_ref().map_or(0, |q| q.raw.len() + 4);
    let opt_len = outcome.opt_len as usize;
    if question_end + opt_len > len {
        return len; // not a reply this module wrote; leave it
    }
    out.copy_within(len - opt_len..len, question_end);
    out[2] |= 0x02; // TC
    out[6..10].fill(0); // no answer, no authority
    out[10..12].copy_from_slice(&u16::from(opt_len > 0).to_be_bytes());
    question_end + opt_len
}
