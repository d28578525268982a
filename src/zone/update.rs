//! DNS UPDATE (RFC 2136) as pure functions over a zone's records: the prescans of the
//! prerequisite and update sections (§3.2, §3.4.1), the prerequisite checks (§2.4, §3.2),
//! the update itself (§3.4.2), which names and types an update touches (for the
//! `allow_update` grants), and the zone text written back from the updated records. Both
//! the data plane (a cheap early answer) and the state machine (the authoritative check,
//! at apply time, so racing updates serialise) use these.

use std::collections::BTreeMap;

use base64::Engine;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
use serde::{Deserialize, Serialize};

use super::ZoneFile;

/// One record of an update's prerequisite or update section, as it travels in the Raft
/// log: the record's uncompressed wire form (RFC 1035 §4.1.3), base64 in JSON. The wire
/// form keeps what presentation text cannot (class NONE/ANY, empty RDATA).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UpdateRr(pub Vec<u8>);

impl UpdateRr {
    /// The wire form of `r` (names uncompressed).
    pub fn from_record(r: &Record) -> Option<UpdateRr> {
        super::transfer::record_wire(r).map(UpdateRr)
    }

    /// The record back; `None` when the bytes are not one whole record.
    pub fn record(&self) -> Option<Record> {
        let mut dec = BinDecoder::new(&self.0);
        let r = Record::read(&mut dec).ok()?;
        dec.is_empty().then_some(r)
    }
}

impl std::fmt::Debug for UpdateRr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.record() {
            Some(r) => write!(
                f,
                "{} {} {} {}",
                r.name,
                r.dns_class,
                r.record_type(),
                r.ttl
            ),
            None => f.write_str("<unreadable record>"),
        }
    }
}

impl From<UpdateRr> for String {
    fn from(r: UpdateRr) -> String {
        base64::engine::general_purpose::STANDARD.encode(r.0)
    }
}

impl TryFrom<String> for UpdateRr {
    type Error = String;
    fn try_from(s: String) -> Result<UpdateRr, String> {
        base64::engine::general_purpose::STANDARD
            .decode(s.as_bytes())
            .map(UpdateRr)
            .map_err(|e| format!("an update record is base64: {e}"))
    }
}

/// Read a section back; FORMERR when a record does not decode.
pub fn records(rrs: &[UpdateRr]) -> Result<Vec<Record>, ResponseCode> {
    rrs.iter()
        .map(|r| r.record().ok_or(ResponseCode::FormErr))
        .collect()
}

/// Meta types that may not appear as data in an update (RFC 2136 §3.4.1.2).
fn is_meta(t: RecordType) -> bool {
    matches!(
        u16::from(t),
        41 | 249 | 250 | 251 | 252 | 253 | 254 | 255 // OPT TKEY TSIG IXFR AXFR MAILB MAILA ANY
    )
}

fn is_empty_rdata(r: &Record) -> bool {
    matches!(r.data, RData::Update0(_))
}

/// RFC 2136 §3.2.1–§3.2.3 on the prerequisite section and §3.4.1 on the update section,
/// before anything is looked up: FORMERR for a malformed record, NOTZONE for one outside
/// the zone.
pub fn prescan(origin: &Name, prereqs: &[Record], updates: &[Record]) -> Result<(), ResponseCode> {
    for rr in prereqs {
        if rr.ttl != 0 {
            return Err(ResponseCode::FormErr);
        }
        if !origin.zone_of(&rr.name) {
            return Err(ResponseCode::NotZone);
        }
        let t = rr.record_type();
        match rr.dns_class {
            DNSClass::ANY | DNSClass::NONE => {
                if !is_empty_rdata(rr) || (is_meta(t) && t != RecordType::ANY) {
                    return Err(ResponseCode::FormErr);
                }
            }
            DNSClass::IN => {
                if is_meta(t) || is_empty_rdata(rr) {
                    return Err(ResponseCode::FormErr);
                }
            }
            _ => return Err(ResponseCode::FormErr),
        }
    }
    for rr in updates {
        if !origin.zone_of(&rr.name) {
            return Err(ResponseCode::NotZone);
        }
        let t = rr.record_type();
        match rr.dns_class {
            DNSClass::IN => {
                if is_meta(t) || is_empty_rdata(rr) {
                    return Err(ResponseCode::FormErr);
                }
            }
            DNSClass::ANY => {
                if rr.ttl != 0 || !is_empty_rdata(rr) || (is_meta(t) && t != RecordType::ANY) {
                    return Err(ResponseCode::FormErr);
                }
            }
            DNSClass::NONE => {
                if rr.ttl != 0 || is_meta(t) || is_empty_rdata(rr) {
                    return Err(ResponseCode::FormErr);
                }
            }
            _ => return Err(ResponseCode::FormErr),
        }
    }
    Ok(())
}

/// The zone's records at the names a set of records mention, lower-cased owner → records,
/// in one pass over the zone's store (only the records found are made hickory's).
fn at_names(zone: &ZoneFile, names: &[&Name]) -> BTreeMap<Name, Vec<Record>> {
    let mut out: BTreeMap<Name, Vec<Record>> = BTreeMap::new();
    let mut wires: rustc_hash::FxHashMap<Box<[u8]>, Name> = Default::default();
    for n in names {
        let lower = n.to_lowercase();
        wires.insert(super::wire_lower(&lower), lower.clone());
        out.insert(lower, Vec::new());
    }
    if wires.is_empty() {
        return out;
    }
    for rr in zone.rrs() {
        if let Some(name) = wires.get(rr.owner) {
            if let (Some(v), Ok(r)) = (out.get_mut(name), rr.to_record()) {
                v.push(r);
            }
        }
    }
    out
}

/// RFC 2136 §3.2: check the prerequisites against the zone's records (`zone`, owners
/// lower-cased) and `extra` (records that are not in the text but exist: a service's
/// answer at its name). The first failing one gives the RCODE.
pub fn check_prereqs(
    zone: &ZoneFile,
    extra: &[Record],
    prereqs: &[Record],
) -> Result<(), ResponseCode> {
    if prereqs.is_empty() {
        return Ok(());
    }
    let names: Vec<&Name> = prereqs.iter().map(|r| &r.name).collect();
    let mut found = at_names(zone, &names);
    for r in extra {
        if let Some(v) = found.get_mut(&r.name.to_lowercase()) {
            v.push(r.clone());
        }
    }
    let empty = Vec::new();
    let at = |n: &Name| found.get(&n.to_lowercase()).unwrap_or(&empty);
    // Value-dependent prerequisites (§3.2.3), gathered by (name, type).
    let mut wanted: BTreeMap<(Name, u16), Vec<&Record>> = BTreeMap::new();
    for rr in prereqs {
        let t = rr.record_type();
        let here = at(&rr.name);
        match (rr.dns_class, t) {
            (DNSClass::ANY, RecordType::ANY) if here.is_empty() => {
                return Err(ResponseCode::NXDomain)
            }
            (DNSClass::ANY, _)
                if t != RecordType::ANY && !here.iter().any(|r| r.record_type() == t) =>
            {
                return Err(ResponseCode::NXRRSet)
            }
            (DNSClass::NONE, RecordType::ANY) if !here.is_empty() => {
                return Err(ResponseCode::YXDomain)
            }
            (DNSClass::NONE, _)
                if t != RecordType::ANY && here.iter().any(|r| r.record_type() == t) =>
            {
                return Err(ResponseCode::YXRRSet)
            }
            (DNSClass::IN, _) => wanted
                .entry((rr.name.to_lowercase(), u16::from(t)))
                .or_default()
                .push(rr),
            _ => {}
        }
    }
    for ((name, t), want) in wanted {
        let have: Vec<&Record> = at(&name)
            .iter()
            .filter(|r| u16::from(r.record_type()) == t)
            .collect();
        let same = have.len() == dedup_len(&want)
            && have.iter().all(|h| want.iter().any(|w| w.data == h.data))
            && want.iter().all(|w| have.iter().any(|h| h.data == w.data));
        if !same {
            return Err(ResponseCode::NXRRSet);
        }
    }
    Ok(())
}

/// Records with distinct data.
fn dedup_len(rs: &[&Record]) -> usize {
    let mut seen: Vec<&RData> = Vec::with_capacity(rs.len());
    for r in rs {
        if !seen.contains(&&r.data) {
            seen.push(&r.data);
        }
    }
    seen.len()
}

/// The (name, type) pairs an update adds or deletes, for the grants: a deletion of every
/// type at a name (class ANY, type ANY) counts as each type the zone holds there (but
/// the apex SOA and NS, which it never deletes, §3.4.2.3).
pub fn touched(origin: &Name, zone: &ZoneFile, updates: &[Record]) -> Vec<(Name, RecordType)> {
    let mut out = Vec::with_capacity(updates.len());
    let any_names: Vec<&Name> = updates
        .iter()
        .filter(|r| r.record_type() == RecordType::ANY)
        .map(|r| &r.name)
        .collect();
    let found = at_names(zone, &any_names);
    for rr in updates {
        let name = rr.name.to_lowercase();
        if rr.record_type() != RecordType::ANY {
            out.push((name, rr.record_type()));
            continue;
        }
        for r in found.get(&name).into_iter().flatten() {
            let t = r.record_type();
            let kept = name == *origin && matches!(t, RecordType::SOA | RecordType::NS);
            if !kept && !out.contains(&(name.clone(), t)) {
                out.push((name.clone(), t));
            }
        }
    }
    out
}

/// RFC 2136 §3.4.2: the zone's records after the update (file order kept, additions at
/// the end). Additions that duplicate a record replace its TTL, and an RRset takes the TTL
/// of the last record added to it (RFC 2181 §5.2); a CNAME is not added beside other data
/// nor other data beside a CNAME (§3.4.2.2); the apex SOA and NS RRsets are never deleted
/// whole, nor the last apex NS (§3.4.2.3, §3.4.2.4).
pub fn apply_updates(origin: &Name, zone: &[Record], updates: &[Record]) -> Vec<Record> {
    let mut out: Vec<Record> = zone.to_vec();
    for rr in updates {
        let name = rr.name.to_lowercase();
        let t = rr.record_type();
        let apex = name == *origin;
        match rr.dns_class {
            DNSClass::IN => {
                let mut has_cname = false;
                let mut has_other = false;
                for r in out.iter().filter(|r| r.name == name) {
                    match r.record_type() {
                        RecordType::CNAME => has_cname = true,
                        // RFC 4035 §2.5 types may sit beside a CNAME: none are in zone text.
                        _ => has_other = true,
                    }
                }
                if (t == RecordType::CNAME && has_other) || (t != RecordType::CNAME && has_cname) {
                    continue;
                }
                if t == RecordType::CNAME {
                    // One CNAME per name: a new one replaces the old.
                    out.retain(|r| !(r.name == name && r.record_type() == RecordType::CNAME));
                }
                for r in out
                    .iter_mut()
                    .filter(|r| r.name == name && r.record_type() == t)
                {
                    r.ttl = rr.ttl;
                }
                if !out
                    .iter()
                    .any(|r| r.name == name && r.record_type() == t && r.data == rr.data)
                {
                    let mut add = rr.clone();
                    add.name = name;
                    out.push(add);
                }
            }
            DNSClass::ANY => {
                out.retain(|r| {
                    let rt = r.record_type();
                    r.name != name
                        || (t != RecordType::ANY && rt != t)
                        || (apex && matches!(rt, RecordType::SOA | RecordType::NS))
                });
            }
            DNSClass::NONE => {
                if apex && t == RecordType::SOA {
                    continue;
                }
                if apex && t == RecordType::NS {
                    let ns = out
                        .iter()
                        .filter(|r| r.name == name && r.record_type() == RecordType::NS)
                        .count();
                    let hit = out
                        .iter()
                        .any(|r| r.name == name && r.record_type() == t && r.data == rr.data);
                    if hit && ns <= 1 {
                        continue;
                    }
                }
                out.retain(|r| !(r.name == name && r.record_type() == t && r.data == rr.data));
            }
            _ => {}
        }
    }
    out
}

/// Whether a record list and a zone's store are the same zone content, TTLs included, in
/// order (each stored record is made hickory's in turn, never all at once).
pub fn same_records(a: &[Record], b: &ZoneFile) -> bool {
    a.len() == b.len()
        && a.iter().zip(b.rrs()).all(|(x, y)| {
            y.to_record().is_ok_and(|y| {
                x.name == y.name && x.ttl == y.ttl && x.dns_class == y.dns_class && x.data == y.data
            })
        })
}

/// A character-string in zone text: quoted, `"` and `\` escaped, bytes outside printable
/// ASCII as `\DDD` (RFC 1035 §5.1).
fn quoted(out: &mut String, s: &[u8]) {
    out.push('"');
    for &b in s {
        match b {
            b'"' | b'\\' => {
                out.push('\\');
                out.push(b as char);
            }
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\{b:03}")),
        }
    }
    out.push('"');
}

/// Zone text for `records` (owner names absolute, every TTL and class written), as the
/// cluster keeps it after an update. TXT and SPF strings are quoted here (hickory's
/// `Display` does not quote them); other types use hickory's presentation form. The
/// caller checks that the text reads back to the same records.
pub fn zone_text(origin: &Name, records: &[Record]) -> String {
    let mut out = String::with_capacity(64 + records.len() * 48);
    out.push_str("; written by Meridian after a DNS UPDATE (RFC 2136)\n$ORIGIN ");
    out.push_str(&origin.to_ascii());
    out.push('\n');
    for r in records {
        out.push_str(&r.name.to_ascii());
        out.push(' ');
        out.push_str(&r.ttl.to_string());
        out.push_str(" IN ");
        out.push_str(&r.record_type().to_string());
        out.push(' ');
        match &r.data {
            RData::TXT(txt) => {
                for (i, s) in txt.txt_data.iter().enumerate() {
                    if i > 0 {
                        out.push(' ');
                    }
                    quoted(&mut out, s);
                }
                if txt.txt_data.is_empty() {
                    out.push_str("\"\"");
                }
            }
            data => out.push_str(&data.to_string()),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zone::parse_zone;

    const ZONE: &str = "$ORIGIN example.com.\n$TTL 300\n@ IN SOA ns1 h 1 2 3 4 5\n@ IN NS ns1\n@ IN NS ns2\nns1 IN A 192.0.2.1\nns2 IN AAAA 2001:db8::2\nwww IN CNAME ns1\n@ IN MX 10 mail\nmail IN A 192.0.2.25\n_sip._udp IN SRV 10 60 5060 sip\ncaa IN CAA 0 issue \"letsencrypt.org\"\ntxt IN TXT \"a \\\"quoted\\\" \\\\ string\" \"two\" \"caf\\195\\169\"\nsub IN NS ns.elsewhere.\nsub IN DS 60485 5 1 2BB183AF5F22588179A53B0A98631FAD1A292118\nptr IN PTR www\n*.wild IN A 192.0.2.99\nsshfp IN SSHFP 1 1 123456789abcdef67890123456789abcdef67890\ntlsa IN TLSA 3 1 1 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\nnaptr IN NAPTR 100 10 \"u\" \"E2U+sip\" \"!^.*$!sip:info@example.com!\" .\nhinfo IN HINFO \"PC\" \"Linux\"\n";

    fn origin() -> Name {
        Name::from_ascii("example.com.").unwrap()
    }

    /// Records as a zone's store.
    fn file(records: &[Record]) -> ZoneFile {
        ZoneFile::from_records(origin(), records.to_vec()).unwrap()
    }

    fn zone() -> Vec<Record> {
        parse_zone(ZONE, "t", &origin())
            .unwrap()
            .to_records()
            .unwrap()
    }

    fn rr(text: &str, class: DNSClass, ttl: u32) -> Record {
        // "name TYPE rdata" through the zone parser, then the class and TTL set.
        let z = format!(
            "$ORIGIN example.com.\n$TTL 300\n@ IN SOA ns1 h 1 2 3 4 5\n@ IN NS ns1\n{text}\n"
        );
        let mut r = parse_zone(&z, "t", &origin())
            .unwrap()
            .to_records()
            .unwrap()
            .pop()
            .unwrap();
        r.dns_class = class;
        r.ttl = ttl;
        r
    }

    fn empty(name: &str, t: RecordType, class: DNSClass) -> Record {
        let mut r = Record::update0(Name::from_ascii(name).unwrap(), 0, t);
        r.dns_class = class;
        r
    }

    #[test]
    fn zone_text_reads_back_to_the_same_records() {
        let recs = zone();
        let text = zone_text(&origin(), &recs);
        let back = parse_zone(&text, "t", &origin()).unwrap();
        assert!(same_records(&recs, &back), "{text}");
    }

    #[test]
    fn update_rr_round_trips_through_json() {
        let r = empty("x.example.com.", RecordType::TXT, DNSClass::ANY);
        let w = UpdateRr::from_record(&r).unwrap();
        let json = serde_json::to_string(&w).unwrap();
        let back: UpdateRr = serde_json::from_str(&json).unwrap();
        assert_eq!(back.record().unwrap(), r);
    }

    #[test]
    fn rfc2136_3_2_prerequisites() {
        let z = file(&zone());
        let ok = |p: Vec<Record>| check_prereqs(&z, &[], &p);
        use DNSClass::{ANY, NONE};
        assert_eq!(
            ok(vec![empty("mail.example.com.", RecordType::ANY, ANY)]),
            Ok(())
        );
        assert_eq!(
            ok(vec![empty("no.example.com.", RecordType::ANY, ANY)]),
            Err(ResponseCode::NXDomain)
        );
        assert_eq!(
            ok(vec![empty("mail.example.com.", RecordType::TXT, ANY)]),
            Err(ResponseCode::NXRRSet)
        );
        assert_eq!(
            ok(vec![empty("mail.example.com.", RecordType::ANY, NONE)]),
            Err(ResponseCode::YXDomain)
        );
        assert_eq!(
            ok(vec![empty("mail.example.com.", RecordType::A, NONE)]),
            Err(ResponseCode::YXRRSet)
        );
        assert_eq!(
            ok(vec![empty("no.example.com.", RecordType::A, NONE)]),
            Ok(())
        );
        let a = rr("mail IN A 192.0.2.25", DNSClass::IN, 0);
        assert_eq!(ok(vec![a.clone()]), Ok(()));
        let b = rr("mail IN A 192.0.2.26", DNSClass::IN, 0);
        assert_eq!(ok(vec![a, b]), Err(ResponseCode::NXRRSet));
        // A service's answer counts as data at its name.
        let svc = rr("svc IN A 198.51.100.1", DNSClass::IN, 60);
        assert_eq!(
            check_prereqs(&z, &[svc], &[empty("svc.example.com.", RecordType::A, ANY)]),
            Ok(())
        );
    }

    #[test]
    fn rfc2136_3_4_prescan() {
        let o = origin();
        let out = rr("x IN TXT \"a\"", DNSClass::IN, 0);
        let mut other = out.clone();
        other.name = Name::from_ascii("x.example.org.").unwrap();
        assert_eq!(prescan(&o, &[], &[other]), Err(ResponseCode::NotZone));
        let mut ttl = empty("x.example.com.", RecordType::TXT, DNSClass::ANY);
        ttl.ttl = 5;
        assert_eq!(prescan(&o, &[], &[ttl]), Err(ResponseCode::FormErr));
        assert_eq!(
            prescan(
                &o,
                &[],
                &[empty("x.example.com.", RecordType::AXFR, DNSClass::ANY)]
            ),
            Err(ResponseCode::FormErr)
        );
        assert_eq!(prescan(&o, &[], &[out]), Ok(()));
    }

    #[test]
    fn rfc2136_3_4_2_updates() {
        let o = origin();
        let z = zone();
        let add = rr("_acme-challenge IN TXT \"tok\"", DNSClass::IN, 60);
        let after = apply_updates(&o, &z, std::slice::from_ref(&add));
        assert_eq!(after.len(), z.len() + 1);
        // Adding it again changes nothing.
        assert!(same_records(
            &apply_updates(&o, &after, std::slice::from_ref(&add)),
            &file(&after)
        ));
        // Delete it by value, by RRset, by name.
        let mut del = add.clone();
        del.dns_class = DNSClass::NONE;
        del.ttl = 0;
        assert!(same_records(&apply_updates(&o, &after, &[del]), &file(&z)));
        let rrset = empty(
            "_acme-challenge.example.com.",
            RecordType::TXT,
            DNSClass::ANY,
        );
        assert!(same_records(
            &apply_updates(&o, &after, &[rrset]),
            &file(&z)
        ));
        // The apex keeps its SOA and NS when everything there is deleted.
        let all = empty("example.com.", RecordType::ANY, DNSClass::ANY);
        let left = apply_updates(&o, &z, &[all]);
        assert!(left.iter().any(|r| r.record_type() == RecordType::SOA));
        assert_eq!(
            left.iter()
                .filter(|r| r.name == o && r.record_type() == RecordType::NS)
                .count(),
            2
        );
        assert!(!left.iter().any(|r| r.record_type() == RecordType::MX));
        // No A beside the CNAME at www.
        let a = rr("www IN A 192.0.2.7", DNSClass::IN, 60);
        assert!(same_records(&apply_updates(&o, &z, &[a]), &file(&z)));
        // The TTL of an RRset follows the last addition.
        let a2 = rr("mail IN A 192.0.2.26", DNSClass::IN, 60);
        let after = apply_updates(&o, &z, &[a2]);
        assert!(
            after
                .iter()
                .filter(|r| r.name.to_ascii() == "mail.example.com."
                    && r.record_type() == RecordType::A)
                .all(|r| r.ttl == 60)
        );
        // touched(): ANY at a name is every type there.
        let t = touched(
            &o,
            &file(&z),
            &[empty("mail.example.com.", RecordType::ANY, DNSClass::ANY)],
        );
        assert_eq!(
            t,
            vec![(
                Name::from_ascii("mail.example.com.").unwrap(),
                RecordType::A
            )]
        );
    }
}
