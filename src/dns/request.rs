//! Reading a query off the wire and sorting it into a typed kind, without allocating.
//!
//! Only what an authoritative server needs is decoded: the header, the one question (its
//! name kept as sent, for the echo, and lower-cased, for the lookup) and the OPT record
//! (RFC 6891) with the NSID (RFC 5001), client-subnet (RFC 7871) and COOKIE (RFC 7873)
//! options. The answer and authority sections of a query are skipped, not interpreted.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::zone::rtype;

/// The longest name on the wire (RFC 1035 §2.3.4).
pub const MAX_NAME: usize = 255;

const OPT_NSID: u16 = 3;
const OPT_ECS: u16 = 8;
const OPT_COOKIE: u16 = 10;

/// How the server must treat a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A well-formed standard query.
    Query,
    /// Malformed: FORMERR.
    FormErr,
    /// An opcode other than QUERY: NOTIMP.
    NotImp,
    /// An EDNS version we do not speak: BADVERS (RFC 6891 §6.1.3).
    BadVers,
}

/// A lower-cased wire name in a fixed buffer.
#[derive(Clone, Copy)]
pub struct NameBuf {
    buf: [u8; MAX_NAME],
    len: u8,
}

impl NameBuf {
    /// Lower-case a wire name (at most 255 bytes) into a buffer.
    pub fn lower(raw: &[u8]) -> NameBuf {
        let mut buf = [0u8; MAX_NAME];
        let len = raw.len().min(MAX_NAME);
        for (d, s) in buf.iter_mut().zip(&raw[..len]) {
            *d = s.to_ascii_lowercase();
        }
        NameBuf {
            buf,
            len: len as u8,
        }
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.buf[..self.len as usize]
    }
}

impl std::fmt::Debug for NameBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&crate::zone::display(self.as_slice()))
    }
}

/// The question of a query.
#[derive(Clone, Copy, Debug)]
pub struct Question<'a> {
    /// The name exactly as sent (its case is echoed).
    pub raw: &'a [u8],
    /// The same name, lower-cased, for look-ups.
    pub name: NameBuf,
    pub qtype: u16,
    pub qclass: u16,
}

/// An EDNS Client Subnet option as sent (RFC 7871 §6), validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientSubnet {
    pub family: u16,
    pub source_prefix: u8,
    /// The address with every bit past the source prefix zero.
    pub addr: IpAddr,
}

/// A COOKIE option as sent (RFC 7873 §4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CookieIn {
    /// A length other than 8 (client cookie only) or 16 to 40 (with a server cookie of 8
    /// to 32 bytes), or two COOKIE options: FORMERR when cookies are on (RFC 7873 §5.2.2).
    Malformed,
    /// A client cookie, and a server cookie of `server_len` bytes (0: none).
    Present {
        client: [u8; 8],
        server: [u8; 32],
        server_len: u8,
    },
}

/// What the OPT record of a query said.
#[derive(Clone, Copy, Debug, Default)]
pub struct Edns {
    pub udp_size: u16,
    pub version: u8,
    pub dnssec_ok: bool,
    pub nsid: bool,
    pub ecs: Option<ClientSubnet>,
    /// Read whether or not cookies are on: the transport decides what it means.
    pub cookie: Option<CookieIn>,
}

/// A parsed request: what every reply must echo, and the kind that decides the reply.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    pub id: u16,
    pub opcode: u8,
    pub rd: bool,
    pub cd: bool,
    pub question: Option<Question<'a>>,
    pub edns: Option<Edns>,
    pub kind: Kind,
    /// Not for `answer()`: a zone transfer, NOTIFY, UPDATE or a TSIG-signed message. The
    /// transports hand these to [`crate::dns::xfr`], off the query path.
    pub special: bool,
}

/// Parse a query. `None` means drop it silently: shorter than a header, or a response
/// (QR set), which answering could turn into a loop between two servers.
pub fn parse(packet: &[u8]) -> Option<Request<'_>> {
    if packet.len() < 12 || packet[2] & 0x80 != 0 {
        return None;
    }
    let id = u16::from_be_bytes([packet[0], packet[1]]);
    let opcode = (packet[2] >> 3) & 0x0f;
    // A message we cannot read to the end is FORMERR, or NOTIMP when its opcode is not
    // QUERY (that answer needs nothing more of it): either way it echoes what was read.
    let unreadable = if opcode != 0 {
        Kind::NotImp
    } else {
        Kind::FormErr
    };
    let mut req = Request {
        id,
        opcode,
        rd: packet[2] & 0x01 != 0,
        cd: packet[3] & 0x10 != 0,
        question: None,
        edns: None,
        kind: unreadable,
        special: false,
    };
    let count = |i: usize| u16::from_be_bytes([packet[i], packet[i + 1]]);
    let (qd, an, ns, ar) = (count(4), count(6), count(8), count(10));
    if qd != 1 {
        return Some(req);
    }
    let Some((raw, end)) = read_question_name(packet, 12) else {
        return Some(req);
    };
    if end + 4 > packet.len() {
        return Some(req);
    }
    req.question = Some(Question {
        raw,
        name: NameBuf::lower(raw),
        qtype: count(end),
        qclass: count(end + 2),
    });
    let mut pos = end + 4;
    for _ in 0..(an as u32 + ns as u32) {
        match skip_record(packet, pos) {
            Some((end, _)) => pos = end,
            None => return Some(req),
        }
    }
    let mut tsig = false;
    for _ in 0..ar {
        let Some((end, opt)) = skip_record(packet, pos) else {
            return Some(req);
        };
        tsig = record_type(packet, pos) == Some(TSIG);
        if opt.is_some() {
            if req.edns.is_some() {
                req.kind = Kind::FormErr; // RFC 6891 §6.1.1: more than one OPT
                return Some(req);
            }
            match parse_opt(&packet[pos..end]) {
                Ok(edns) => req.edns = Some(edns),
                Err(edns) => {
                    // Keep what was read so that the FORMERR carries an OPT (RFC 6891 §7).
                    req.edns = edns;
                    req.kind = Kind::FormErr;
                    return Some(req);
                }
            }
        }
        pos = end;
    }
    if pos != packet.len() {
        return Some(req); // trailing garbage
    }
    let qtype = req.question.map_or(0, |q| q.qtype);
    req.special = tsig
        || opcode == OPCODE_NOTIFY
        || opcode == OPCODE_UPDATE
        || (opcode == 0 && matches!(qtype, rtype::AXFR | rtype::IXFR));
    if opcode != 0 {
        req.kind = Kind::NotImp;
        return Some(req);
    }
    req.kind = Kind::FormErr;
    if let Some(q) = &req.question {
        if q.qtype == rtype::OPT {
            return Some(req); // RFC 6891 §6.1.1: OPT is not a question type
        }
    }
    req.kind = match req.edns {
        Some(e) if e.version > 0 => Kind::BadVers,
        // RFC 9824 §3.5: an explicit query for the NXNAME meta-type is FORMERR, with or
        // without DO.
        _ if qtype == crate::zone::dnssec::types::NXNAME => Kind::FormErr,
        _ => Kind::Query,
    };
    Some(req)
}

/// Read the question's name: plain labels only (a compression pointer in the first name of
/// a message can only point into the header, so it is malformed).
fn read_question_name(packet: &[u8], start: usize) -> Option<(&[u8], usize)> {
    let mut pos = start;
    loop {
        let len = *packet.get(pos)? as usize;
        if len & 0xc0 != 0 {
            return None;
        }
        pos += 1 + len;
        if pos - start > MAX_NAME || pos > packet.len() {
            return None;
        }
        if len == 0 {
            return Some((&packet[start..pos], pos));
        }
    }
}

/// RR type TSIG (RFC 8945).
const TSIG: u16 = 250;
/// Opcodes NOTIFY (RFC 1996) and UPDATE (RFC 2136).
pub const OPCODE_NOTIFY: u8 = 4;
pub const OPCODE_UPDATE: u8 = 5;

/// The type of the record starting at `start` (after its owner name).
fn record_type(packet: &[u8], start: usize) -> Option<u16> {
    let mut pos = start;
    loop {
        let len = *packet.get(pos)? as usize;
        match len & 0xc0 {
            0x00 if len == 0 => {
                pos += 1;
                break;
            }
            0x00 => pos += 1 + len,
            0xc0 => {
                pos += 2;
                break;
            }
            _ => return None,
        }
    }
    Some(u16::from_be_bytes([
        *packet.get(pos)?,
        *packet.get(pos + 1)?,
    ]))
}

/// Skip one resource record. Returns its end, and `Some(())` when it is an OPT record
/// owned by the root.
fn skip_record(packet: &[u8], start: usize) -> Option<(usize, Option<()>)> {
    let mut pos = start;
    let mut name_len = 0usize;
    loop {
        let len = *packet.get(pos)? as usize;
        match len & 0xc0 {
            0x00 => {
                pos += 1 + len;
                name_len += 1 + len;
                if name_len > MAX_NAME {
                    return None;
                }
                if len == 0 {
                    break;
                }
            }
            0xc0 => {
                // A pointer ends the name; skipping never follows it, so loops cannot bite.
                pos += 2;
                break;
            }
            _ => return None,
        }
    }
    if pos + 10 > packet.len() {
        return None;
    }
    let rtype = u16::from_be_bytes([packet[pos], packet[pos + 1]]);
    let rdlen = u16::from_be_bytes([packet[pos + 8], packet[pos + 9]]) as usize;
    let end = pos + 10 + rdlen;
    if end > packet.len() {
        return None;
    }
    let is_opt = rtype == rtype::OPT;
    if is_opt && pos - start != 1 {
        return None; // OPT must be owned by the root
    }
    Some((end, is_opt.then_some(())))
}

/// Parse an OPT record (starting at its one-byte root owner). On error, returns what could
/// be read (for the FORMERR's OPT), if anything.
fn parse_opt(rr: &[u8]) -> Result<Edns, Option<Edns>> {
    // owner(1) type(2) class=udp size(2) ttl=ext rcode(1) version(1) flags(2) rdlen(2)
    let udp_size = u16::from_be_bytes([rr[3], rr[4]]);
    let version = rr[6];
    let flags = u16::from_be_bytes([rr[7], rr[8]]);
    let mut edns = Edns {
        udp_size,
        version,
        dnssec_ok: flags & 0x8000 != 0,
        nsid: false,
        ecs: None,
        cookie: None,
    };
    if version > 0 {
        return Ok(edns); // options of unknown versions are not ours to judge
    }
    let mut opts = &rr[11..];
    while !opts.is_empty() {
        if opts.len() < 4 {
            return Err(Some(edns));
        }
        let code = u16::from_be_bytes([opts[0], opts[1]]);
        let len = u16::from_be_bytes([opts[2], opts[3]]) as usize;
        let Some(data) = opts.get(4..4 + len) else {
            return Err(Some(edns));
        };
        match code {
            OPT_NSID => edns.nsid = true,
            OPT_ECS => {
                if edns.ecs.is_some() {
                    return Err(Some(edns));
                }
                edns.ecs = Some(parse_ecs(data).ok_or(Some(edns))?);
            }
            OPT_COOKIE => {
                edns.cookie = Some(match (edns.cookie, data.len()) {
                    (Some(_), _) => CookieIn::Malformed,
                    (None, 8) | (None, 16..=40) => {
                        let mut client = [0u8; 8];
                        client.copy_from_slice(&data[..8]);
                        let mut server = [0u8; 32];
                        server[..data.len() - 8].copy_from_slice(&data[8..]);
                        CookieIn::Present {
                            client,
                            server,
                            server_len: (data.len() - 8) as u8,
                        }
                    }
                    (None, _) => CookieIn::Malformed,
                });
            }
            _ => {} // unknown options are ignored and never echoed
        }
        opts = &opts[4 + len..];
    }
    Ok(edns)
}

/// RFC 7871 §6: FAMILY, SOURCE PREFIX-LENGTH, SCOPE PREFIX-LENGTH, ADDRESS truncated to the
/// source prefix, with the bits past it zero.
fn parse_ecs(data: &[u8]) -> Option<ClientSubnet> {
    if data.len() < 4 {
        return None;
    }
    let family = u16::from_be_bytes([data[0], data[1]]);
    let source_prefix = data[2];
    let addr = &data[4..];
    let max = match family {
        1 => 32,
        2 => 128,
        _ => return None,
    };
    if source_prefix > max || addr.len() != (source_prefix as usize).div_ceil(8) {
        return None;
    }
    if let Some(&last) = addr.last() {
        let used = source_prefix % 8;
        if used != 0 && last & (0xffu8 >> used) != 0 {
            return None;
        }
    }
    let addr = if family == 1 {
        let mut b = [0u8; 4];
        b[..addr.len()].copy_from_slice(addr);
        IpAddr::V4(Ipv4Addr::from(b))
    } else {
        let mut b = [0u8; 16];
        b[..addr.len()].copy_from_slice(addr);
        IpAddr::V6(Ipv6Addr::from(b))
    };
    Some(ClientSubnet {
        family,
        source_prefix,
        addr,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &[u8], qtype: u16, extra: &[u8], arcount: u16) -> Vec<u8> {
        let mut p = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0];
        p.extend_from_slice(&arcount.to_be_bytes());
        p.extend_from_slice(name);
        p.extend_from_slice(&qtype.to_be_bytes());
        p.extend_from_slice(&[0, 1]);
        p.extend_from_slice(extra);
        p
    }

    fn opt(version: u8, options: &[u8]) -> Vec<u8> {
        let mut o = vec![0, 0, 41, 0x10, 0x00, 0, version, 0x80, 0];
        o.extend_from_slice(&(options.len() as u16).to_be_bytes());
        o.extend_from_slice(options);
        o
    }

    const NAME: &[u8] = b"\x03WwW\x07example\x03com\x00";

    #[test]
    fn plain_query_keeps_case_and_lowers_lookup_name() {
        let p = query(NAME, 1, &[], 0);
        let r = parse(&p).expect("parsed");
        assert_eq!(r.kind, Kind::Query);
        let q = r.question.expect("question");
        assert_eq!(q.raw, NAME);
        assert_eq!(q.name.as_slice(), b"\x03www\x07example\x03com\x00");
        assert!(r.rd);
    }

    #[test]
    fn rfc1035_short_or_response_is_dropped() {
        assert!(parse(&[0; 11]).is_none());
        let mut p = query(NAME, 1, &[], 0);
        p[2] |= 0x80;
        assert!(parse(&p).is_none());
    }

    #[test]
    fn rfc1035_compression_pointer_in_question_is_formerr() {
        let p = query(b"\xc0\x0c", 1, &[], 0);
        assert_eq!(parse(&p).map(|r| r.kind), Some(Kind::FormErr));
    }

    #[test]
    fn rfc6891_version_1_is_badvers_and_two_opts_formerr() {
        let p = query(NAME, 1, &opt(1, &[]), 1);
        assert_eq!(parse(&p).map(|r| r.kind), Some(Kind::BadVers));
        let mut two = opt(0, &[]);
        two.extend(opt(0, &[]));
        let p = query(NAME, 1, &two, 2);
        assert_eq!(parse(&p).map(|r| r.kind), Some(Kind::FormErr));
    }

    #[test]
    fn rfc7871_ecs_parsed_and_bad_ones_formerr() {
        let p = query(NAME, 1, &opt(0, &[0, 8, 0, 7, 0, 1, 24, 0, 81, 2, 69]), 1);
        let r = parse(&p).expect("parsed");
        assert_eq!(r.kind, Kind::Query);
        let ecs = r.edns.and_then(|e| e.ecs).expect("ecs");
        assert_eq!(ecs.addr, IpAddr::V4(Ipv4Addr::new(81, 2, 69, 0)));
        // bits past the prefix
        let p = query(NAME, 1, &opt(0, &[0, 8, 0, 7, 0, 1, 23, 0, 81, 2, 69]), 1);
        assert_eq!(parse(&p).map(|r| r.kind), Some(Kind::FormErr));
        // prefix longer than the family
        let p = query(NAME, 1, &opt(0, &[0, 8, 0, 8, 0, 1, 33, 0, 1, 2, 3, 4]), 1);
        assert_eq!(parse(&p).map(|r| r.kind), Some(Kind::FormErr));
        // /0 carries no address
        let p = query(NAME, 1, &opt(0, &[0, 8, 0, 4, 0, 1, 0, 0]), 1);
        assert_eq!(parse(&p).map(|r| r.kind), Some(Kind::Query));
    }

    #[test]
    fn rfc7873_cookie_option_read_and_bad_lengths_marked() {
        let cookie = |data: &[u8]| {
            let mut o = vec![0, 10];
            o.extend_from_slice(&(data.len() as u16).to_be_bytes());
            o.extend_from_slice(data);
            let p = query(NAME, 1, &opt(0, &o), 1);
            let r = parse(&p).expect("parsed");
            assert_eq!(r.kind, Kind::Query);
            r.edns.and_then(|e| e.cookie)
        };
        let Some(CookieIn::Present {
            client, server_len, ..
        }) = cookie(&[1, 2, 3, 4, 5, 6, 7, 8])
        else {
            panic!("client cookie");
        };
        assert_eq!((client, server_len), ([1, 2, 3, 4, 5, 6, 7, 8], 0));
        let Some(CookieIn::Present {
            server, server_len, ..
        }) = cookie(&[7; 24])
        else {
            panic!("both cookies");
        };
        assert_eq!(&server[..server_len as usize], &[7; 16]);
        for bad in [0usize, 7, 9, 15, 41] {
            assert_eq!(cookie(&vec![1; bad]), Some(CookieIn::Malformed), "{bad}");
        }
        assert!(matches!(cookie(&[1; 40]), Some(CookieIn::Present { .. })));
    }

    #[test]
    fn notimp_for_other_opcodes() {
        let mut p = query(NAME, 1, &[], 0);
        p[2] = 0x02 << 3;
        let r = parse(&p).expect("parsed");
        assert_eq!(r.kind, Kind::NotImp);
        assert!(r.question.is_some());
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 0x9e3779b97f4a7c15u64;
        for len in 0..600 {
            let mut p = vec![0u8; len % 300];
            for b in p.iter_mut() {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                *b = seed as u8;
            }
            let _ = parse(&p);
        }
    }
}
