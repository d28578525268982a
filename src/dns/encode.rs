//! Writing a reply into a caller's buffer: header, the question as it was sent, whole
//! RRsets with name compression (RFC 1035 §4.1.4), and an OPT record whose room is kept
//! back from the start so that truncation (RFC 2181 §9) never loses it.

use crate::dns::request::Request;
use crate::zone::{Rdata, RrSetRef};

/// The RRSIG type (RFC 4034 §3).
const RRSIG: u16 = crate::zone::dnssec::types::RRSIG;

/// Message sections, in wire order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Section {
    Answer = 0,
    Authority = 1,
    Additional = 2,
}

/// Where a compressible name's labels start in the message (offsets < 0x4000).
const MAX_POINTERS: usize = 48;

/// An EDNS Client Subnet option to echo (RFC 7871 §7.2.1): the query's option with the
/// scope the answer holds for.
#[derive(Clone, Copy, Debug)]
pub struct EcsEcho {
    pub family: u16,
    pub source_prefix: u8,
    pub scope_prefix: u8,
    pub addr: std::net::IpAddr,
}

/// The OPT record of a reply.
#[derive(Clone, Copy, Debug)]
pub struct OptOut<'a> {
    pub udp_size: u16,
    pub ext_rcode: u8,
    pub dnssec_ok: bool,
    pub nsid: Option<&'a [u8]>,
    pub ecs: Option<EcsEcho>,
    /// The COOKIE option's data (RFC 7873): client cookie and server cookie.
    pub cookie: Option<&'a [u8]>,
}

impl OptOut<'_> {
    fn wire_len(&self) -> usize {
        11 + self.nsid.map_or(0, |n| 4 + n.len())
            + self.ecs.map_or(0, |e| 8 + addr_len(&e))
            + self.cookie.map_or(0, |c| 4 + c.len())
    }
}

fn addr_len(e: &EcsEcho) -> usize {
    (e.source_prefix as usize).div_ceil(8)
}

/// A place in a reply under construction ([`Writer::mark`]).
#[derive(Clone, Copy, Debug)]
pub struct Mark {
    len: usize,
    npointers: usize,
    counts: [u16; 3],
}

/// A reply under construction.
pub struct Writer<'b> {
    buf: &'b mut Vec<u8>,
    limit: usize,
    pointers: [u16; MAX_POINTERS],
    npointers: usize,
    counts: [u16; 3],
    section: Section,
    truncated: bool,
}

impl<'b> Writer<'b> {
    /// Start a reply to `req` in `buf` (cleared first), at most `limit` bytes long, with
    /// `opt_len` bytes kept back for the OPT record. The header copies ID, opcode, RD and
    /// CD; QR is set; everything else starts clear. The question is echoed as sent.
    pub fn new(buf: &'b mut Vec<u8>, req: &Request<'_>, limit: usize, opt_len: usize) -> Self {
        buf.clear();
        buf.extend_from_slice(&req.id.to_be_bytes());
        buf.push(0x80 | (req.opcode << 3) | u8::from(req.rd));
        buf.push(if req.cd { 0x10 } else { 0 });
        buf.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
        let mut w = Writer {
            buf,
            limit: limit.saturating_sub(opt_len).max(12),
            pointers: [0; MAX_POINTERS],
            npointers: 0,
            counts: [0; 3],
            section: Section::Answer,
            truncated: false,
        };
        if let Some(q) = &req.question {
            w.buf[5] = 1;
            let start = w.buf.len();
            w.buf.extend_from_slice(q.raw);
            w.remember_labels(start, q.raw);
            w.buf.extend_from_slice(&q.qtype.to_be_bytes());
            w.buf.extend_from_slice(&q.qclass.to_be_bytes());
        }
        w
    }

    pub fn set_aa(&mut self, aa: bool) {
        if aa {
            self.buf[2] |= 0x04;
        } else {
            self.buf[2] &= !0x04;
        }
    }

    /// The low four bits of the RCODE (the high bits go in the OPT record).
    pub fn set_rcode(&mut self, rcode: u8) {
        self.buf[3] = (self.buf[3] & 0xf0) | (rcode & 0x0f);
    }

    pub fn set_tc(&mut self) {
        self.truncated = true;
        self.buf[2] |= 0x02;
    }

    pub fn truncated(&self) -> bool {
        self.truncated
    }

    /// Add a whole RRset to a section. Sections must be written in order. If it does not
    /// fit, nothing of it stays and `false` is returned; the caller decides whether that
    /// sets TC (it must for the answer and authority sections and for referral glue).
    pub fn rrset(&mut self, section: Section, owner: &[u8], set: RrSetRef<'_>, ttl: u32) -> bool {
        if self.truncated || section < self.section {
            return false;
        }
        self.section = section;
        let mark = (self.buf.len(), self.npointers);
        let mut n = 0u16;
        for rdata in set.rdatas() {
            if !self.record(owner, set.rtype(), ttl, rdata) || self.buf.len() > self.limit {
                self.buf.truncate(mark.0);
                self.npointers = mark.1;
                return false;
            }
            n = n.wrapping_add(1);
        }
        self.counts[section as usize] += n;
        true
    }

    /// Where the reply is now, to go back to with [`Writer::rollback`] (an RRset and its
    /// RRSIGs stay together or go together).
    pub fn mark(&self) -> Mark {
        Mark {
            len: self.buf.len(),
            npointers: self.npointers,
            counts: self.counts,
        }
    }

    /// Drop everything written since `m`.
    pub fn rollback(&mut self, m: Mark) {
        self.buf.truncate(m.len);
        self.npointers = m.npointers;
        self.counts = m.counts;
    }

    /// Write what `f` writes together or not at all (an RRset and its RRSIG, an NSEC and
    /// its RRSIG): when `f` returns `false`, everything it wrote is rolled back.
    #[inline]
    pub fn together(&mut self, f: impl FnOnce(&mut Self) -> bool) -> bool {
        let m = self.mark();
        if f(self) {
            return true;
        }
        self.rollback(m);
        false
    }

    /// An RRSIG RDATA over the last RRset written, at the same owner.
    pub fn rrsig(&mut self, section: Section, owner: &[u8], ttl: u32, sig: &[u8]) -> bool {
        self.raw_rrset(section, owner, RRSIG, ttl, std::iter::once(sig))
    }

    /// Add records built on the fly (service answers): `rdatas` of one type.
    pub fn raw_rrset<'r>(
        &mut self,
        section: Section,
        owner: &[u8],
        rtype: u16,
        ttl: u32,
        rdatas: impl Iterator<Item = &'r [u8]>,
    ) -> bool {
        if self.truncated || section < self.section {
            return false;
        }
        self.section = section;
        let mark = (self.buf.len(), self.npointers);
        let mut n = 0u16;
        for rdata in rdatas {
            self.name(owner);
            self.buf.extend_from_slice(&rtype.to_be_bytes());
            self.buf.extend_from_slice(&[0, 1]);
            self.buf.extend_from_slice(&ttl.to_be_bytes());
            self.buf
                .extend_from_slice(&(rdata.len() as u16).to_be_bytes());
            self.buf.extend_from_slice(rdata);
            n += 1;
            if self.buf.len() > self.limit {
                self.buf.truncate(mark.0);
                self.npointers = mark.1;
                return false;
            }
        }
        self.counts[section as usize] += n;
        true
    }

    fn record(&mut self, owner: &[u8], rtype: u16, ttl: u32, rdata: Rdata<'_>) -> bool {
        self.name(owner);
        self.buf.extend_from_slice(&rtype.to_be_bytes());
        self.buf.extend_from_slice(&[0, 1]); // class IN
        self.buf.extend_from_slice(&ttl.to_be_bytes());
        let len_at = self.buf.len();
        self.buf.extend_from_slice(&[0, 0]);
        match rdata {
            Rdata::Raw(raw) => self.buf.extend_from_slice(raw),
            Rdata::Name(n) => self.name(n),
            Rdata::Mx(pref, n) => {
                self.buf.extend_from_slice(&pref.to_be_bytes());
                self.name(n);
            }
            Rdata::Soa(m, r, counters) => {
                self.name(m);
                self.name(r);
                self.buf.extend_from_slice(counters);
            }
        }
        let len = self.buf.len() - len_at - 2;
        if len > u16::MAX as usize {
            return false;
        }
        self.buf[len_at..len_at + 2].copy_from_slice(&(len as u16).to_be_bytes());
        true
    }

    /// Write a wire name, pointing its longest known suffix at an earlier copy.
    fn name(&mut self, name: &[u8]) {
        let mut i = 0;
        while i < name.len() && name[i] != 0 {
            if let Some(ptr) = self.find(&name[i..]) {
                let start = self.buf.len();
                self.buf.extend_from_slice(&name[..i]);
                self.remember_labels(start, &name[..i]);
                self.buf.extend_from_slice(&(0xc000 | ptr).to_be_bytes());
                return;
            }
            i += 1 + name[i] as usize;
        }
        let start = self.buf.len();
        self.buf.extend_from_slice(name);
        self.remember_labels(start, name);
    }

    fn remember_labels(&mut self, start: usize, name: &[u8]) {
        let mut i = 0;
        while i < name.len() && name[i] != 0 && self.npointers < MAX_POINTERS {
            let at = start + i;
            if at >= 0x4000 {
                return;
            }
            self.pointers[self.npointers] = at as u16;
            self.npointers += 1;
            i += 1 + name[i] as usize;
        }
    }

    /// An earlier offset where exactly this (non-root) name suffix is written.
    fn find(&self, suffix: &[u8]) -> Option<u16> {
        // Every remembered offset is a label's length byte: comparing it first rules out
        // most candidates without the whole walk (a NXDOMAIN's SOA tries a dozen).
        let first = *suffix.first()?;
        self.pointers[..self.npointers].iter().copied().find(|&p| {
            self.buf.get(p as usize) == Some(&first) && same_name_at(self.buf, p as usize, suffix)
        })
    }

    /// Finish: append the OPT record (if any), write the counts. Returns the length.
    pub fn finish(self, opt: Option<&OptOut<'_>>) -> usize {
        let mut arcount = self.counts[2];
        if let Some(opt) = opt {
            self.buf.push(0); // root owner
            self.buf.extend_from_slice(&41u16.to_be_bytes());
            self.buf.extend_from_slice(&opt.udp_size.to_be_bytes());
            self.buf.push(opt.ext_rcode);
            self.buf.push(0); // version
            self.buf.push(if opt.dnssec_ok { 0x80 } else { 0 });
            self.buf.push(0);
            let rdlen = opt.wire_len() - 11;
            self.buf.extend_from_slice(&(rdlen as u16).to_be_bytes());
            if let Some(nsid) = opt.nsid {
                self.buf.extend_from_slice(&3u16.to_be_bytes());
                self.buf
                    .extend_from_slice(&(nsid.len() as u16).to_be_bytes());
                self.buf.extend_from_slice(nsid);
            }
            if let Some(e) = opt.ecs {
                let n = addr_len(&e);
                self.buf.extend_from_slice(&8u16.to_be_bytes());
                self.buf.extend_from_slice(&((4 + n) as u16).to_be_bytes());
                self.buf.extend_from_slice(&e.family.to_be_bytes());
                self.buf.push(e.source_prefix);
                self.buf.push(e.scope_prefix);
                match e.addr {
                    std::net::IpAddr::V4(a) => self.buf.extend_from_slice(&a.octets()[..n.min(4)]),
                    std::net::IpAddr::V6(a) => self.buf.extend_from_slice(&a.octets()[..n.min(16)]),
                }
            }
            if let Some(cookie) = opt.cookie {
                self.buf.extend_from_slice(&10u16.to_be_bytes());
                self.buf
                    .extend_from_slice(&(cookie.len() as u16).to_be_bytes());
                self.buf.extend_from_slice(cookie);
            }
            arcount += 1;
        }
        self.buf[6..8].copy_from_slice(&self.counts[0].to_be_bytes());
        self.buf[8..10].copy_from_slice(&self.counts[1].to_be_bytes());
        self.buf[10..12].copy_from_slice(&arcount.to_be_bytes());
        self.buf.len()
    }
}

/// The room an OPT record will take.
pub fn opt_len(opt: Option<&OptOut<'_>>) -> usize {
    opt.map_or(0, OptOut::wire_len)
}

/// Whether the name at `at` in a message equals `suffix` (case-insensitively). Pointers in
/// the message only ever point backwards, which bounds the walk.
fn same_name_at(msg: &[u8], mut at: usize, suffix: &[u8]) -> bool {
    let mut i = 0;
    let mut hops = 0;
    loop {
        let Some(&len) = msg.get(at) else {
            return false;
        };
        if len & 0xc0 == 0xc0 {
            let Some(&lo) = msg.get(at + 1) else {
                return false;
            };
            let target = (((len & 0x3f) as usize) << 8) | lo as usize;
            hops += 1;
            if target >= at || hops > 64 {
                return false;
            }
            at = target;
            continue;
        }
        let Some(&want) = suffix.get(i) else {
            return false;
        };
        if len != want {
            return false;
        }
        if len == 0 {
            return true;
        }
        let l = len as usize;
        let (Some(a), Some(b)) = (msg.get(at + 1..at + 1 + l), suffix.get(i + 1..i + 1 + l)) else {
            return false;
        };
        if !a.eq_ignore_ascii_case(b) {
            return false;
        }
        at += 1 + l;
        i += 1 + l;
    }
}
