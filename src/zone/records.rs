//! The compact record store of a parsed zone ([`ZoneFile`]): every record in file order as
//! wire bytes in one arena, with one small fixed-size slot per record, so a zone of a
//! million records costs its wire bytes plus 16 bytes a record, and no allocation per
//! record. hickory [`Record`]s are made on demand ([`Rr::to_record`]) for the few paths
//! that still need them.

use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{
    BinDecodable, BinDecoder, BinEncodable, BinEncoder, DecodeError, NameEncoding, Restrict,
};

/// One stored record: owner (lower-case uncompressed wire), type, TTL, RDATA (uncompressed
/// wire, names as written).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Rr<'a> {
    pub owner: &'a [u8],
    pub rtype: u16,
    pub ttl: u32,
    pub rdata: &'a [u8],
}

/// Why a stored record (or one given to [`ZoneFile::from_records`]) could not be converted.
#[derive(Debug, thiserror::Error)]
pub enum RrError {
    /// The wire bytes do not decode as hickory reads them.
    #[error("record does not decode: {0}")]
    Decode(#[from] DecodeError),
    /// The owner or RDATA has bytes left after the name or data.
    #[error("{0} has trailing bytes")]
    Trailing(&'static str),
    /// A record could not be written in wire form.
    #[error("{rtype} record at {name}: {error}")]
    Encode {
        name: String,
        rtype: String,
        error: String,
    },
    /// The store holds at most 4 GiB of wire bytes.
    #[error("the zone is larger than 4 GiB in wire form")]
    TooLarge,
}

impl Rr<'_> {
    /// The record as hickory's (class IN), for code that still needs one.
    pub fn to_record(&self) -> Result<Record, RrError> {
        let mut dec = BinDecoder::new(self.owner);
        let name = Name::read(&mut dec)?;
        if !dec.is_empty() {
            return Err(RrError::Trailing("the owner name"));
        }
        let mut dec = BinDecoder::new(self.rdata);
        let data = RData::read(
            &mut dec,
            RecordType::from(self.rtype),
            Restrict::new(self.rdata.len() as u16),
        )?;
        if !dec.is_empty() {
            return Err(RrError::Trailing("the RDATA"));
        }
        let mut record = Record::from_rdata(name, self.ttl, data);
        record.dns_class = DNSClass::IN;
        Ok(record)
    }

    /// Append the whole record in wire form (RFC 1035 §4.1.3, class IN, names
    /// uncompressed) to `out`, as a zone transfer sends it.
    pub fn write_wire(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.owner);
        out.extend_from_slice(&self.rtype.to_be_bytes());
        out.extend_from_slice(&1u16.to_be_bytes());
        out.extend_from_slice(&self.ttl.to_be_bytes());
        out.extend_from_slice(&(self.rdata.len() as u16).to_be_bytes());
        out.extend_from_slice(self.rdata);
    }
}

/// The place of one record in the arena: 16 bytes.
#[derive(Clone, Copy, Debug)]
struct Slot {
    /// Where the owner starts (records with the owner of the one before share its bytes).
    owner: u32,
    rdata: u32,
    ttl: u32,
    rtype: u16,
    rdlen: u16,
}

/// One parsed zone: its origin and every record, in file order.
///
/// Owner names are absolute and lower-cased; names inside record data are kept as the
/// parser made them (absolute). Exact duplicate records (same owner, type and data, names
/// in the data compared without case) are dropped, keeping the first.
#[derive(Clone, Debug)]
pub struct ZoneFile {
    /// The zone's origin (absolute, lower-cased).
    pub origin: Name,
    bytes: Vec<u8>,
    slots: Vec<Slot>,
}

impl PartialEq for ZoneFile {
    fn eq(&self, other: &Self) -> bool {
        self.origin == other.origin && self.len() == other.len() && self.rrs().eq(other.rrs())
    }
}

impl Eq for ZoneFile {}

impl ZoneFile {
    /// An empty store for `origin` (made absolute and lower-cased), with room for about
    /// `bytes` of wire and `records` records.
    pub(super) fn with_capacity(origin: &Name, bytes: usize, records: usize) -> ZoneFile {
        let mut origin = origin.to_lowercase();
        origin.set_fqdn(true);
        ZoneFile {
            origin,
            bytes: Vec::with_capacity(bytes),
            slots: Vec::with_capacity(records),
        }
    }

    /// Build a store from records (for tests: an UPDATE writes zone text and parses it):
    /// owners lower-cased, exact duplicates dropped. No zone rule is checked here (that is
    /// [`super::parse_zone`]'s).
    #[cfg(test)]
    pub fn from_records(
        origin: Name,
        records: impl IntoIterator<Item = Record>,
    ) -> Result<ZoneFile, RrError> {
        let mut file = ZoneFile::with_capacity(&origin, 0, 0);
        let mut seen = Seen::default();
        let mut owner = Vec::new();
        let mut rdata = Vec::new();
        for r in records {
            owner.clear();
            super::push_wire(&r.name, true, &mut owner);
            rdata.clear();
            emit_rdata(&r.data, &mut rdata).map_err(|error| RrError::Encode {
                name: r.name.to_string(),
                rtype: r.record_type().to_string(),
                error,
            })?;
            let rr = Rr {
                owner: &owner,
                rtype: u16::from(r.record_type()),
                ttl: r.ttl,
                rdata: &rdata,
            };
            if seen.insert(&rr, &file) {
                file.push(rr)?;
            }
        }
        file.shrink();
        Ok(file)
    }

    /// Every record, in file order.
    pub fn rrs(&self) -> impl ExactSizeIterator<Item = Rr<'_>> + Clone + '_ {
        self.slots.iter().map(move |s| self.rr(s))
    }

    /// The record at `i` (file order).
    pub fn get(&self, i: usize) -> Option<Rr<'_>> {
        self.slots.get(i).map(|s| self.rr(s))
    }

    /// The number of records.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The zone's SOA record (the first; a parsed zone has exactly one).
    pub fn soa(&self) -> Option<Rr<'_>> {
        self.rrs().find(|r| r.rtype == u16::from(RecordType::SOA))
    }

    /// Every record as hickory's, in file order (UPDATE, tests).
    pub fn to_records(&self) -> Result<Vec<Record>, RrError> {
        self.rrs().map(|r| r.to_record()).collect()
    }

    /// Bytes held: the arena and the slots (for tests and reports).
    pub fn heap_bytes(&self) -> usize {
        self.bytes.capacity() + self.slots.capacity() * std::mem::size_of::<Slot>()
    }

    fn rr(&self, s: &Slot) -> Rr<'_> {
        let owner = &self.bytes[s.owner as usize..];
        let rdata = s.rdata as usize;
        Rr {
            owner: &owner[..name_len(owner)],
            rtype: s.rtype,
            ttl: s.ttl,
            rdata: &self.bytes[rdata..rdata + s.rdlen as usize],
        }
    }

    /// Append a record (not checked for duplicates: see [`Seen`]).
    pub(super) fn push(&mut self, rr: Rr<'_>) -> Result<(), RrError> {
        let rdlen = u16::try_from(rr.rdata.len()).map_err(|_| RrError::Encode {
            name: super::display(rr.owner),
            rtype: RecordType::from(rr.rtype).to_string(),
            error: "RDATA longer than 65535 bytes".to_owned(),
        })?;
        let owner = match self.slots.last() {
            Some(last) if self.rr(last).owner == rr.owner => last.owner,
            _ => {
                let at = self.bytes.len();
                self.bytes.extend_from_slice(rr.owner);
                at.try_into().map_err(|_| RrError::TooLarge)?
            }
        };
        let rdata: u32 = self.bytes.len().try_into().map_err(|_| RrError::TooLarge)?;
        self.bytes.extend_from_slice(rr.rdata);
        if self.bytes.len() > u32::MAX as usize {
            return Err(RrError::TooLarge);
        }
        self.slots.push(Slot {
            owner,
            rdata,
            ttl: rr.ttl,
            rtype: rr.rtype,
            rdlen,
        });
        Ok(())
    }

    /// Give back spare capacity once every record is in.
    pub(super) fn shrink(&mut self) {
        self.bytes.shrink_to_fit();
        self.slots.shrink_to_fit();
    }
}

/// The length of the wire name at the start of `b` (all of `b` if it is not one).
fn name_len(b: &[u8]) -> usize {
    super::name_len(b).unwrap_or(b.len())
}

/// `data` in uncompressed wire form (names as they are), appended to `out`.
pub(super) fn emit_rdata(data: &RData, out: &mut Vec<u8>) -> Result<(), String> {
    let mut enc = BinEncoder::new(out);
    enc.set_name_encoding(NameEncoding::Uncompressed);
    data.emit(&mut enc).map_err(|e| e.to_string())
}

/// The parts of an RDATA that are names hickory compares without case: NS, CNAME, PTR,
/// DNAME and ANAME (all of it), MX (after 2 bytes), SRV (after 6), SOA (its two names).
/// Everything else compares byte for byte.
fn fold_rdata(rtype: u16, rdata: &[u8], mut f: impl FnMut(&[u8], bool)) {
    match rtype {
        2 | 5 | 12 | 39 | 65305 => f(rdata, true),
        15 | 33 => {
            let skip = if rtype == 15 { 2 } else { 6 }.min(rdata.len());
            f(&rdata[..skip], false);
            f(&rdata[skip..], true);
        }
        6 => {
            let m = name_len(rdata);
            let r = m + name_len(&rdata[m..]);
            f(&rdata[..r], true);
            f(&rdata[r..], false);
        }
        _ => f(rdata, false),
    }
}

/// Whether two records are the same (owner, type and data; names in data without case).
fn same(a: &Rr<'_>, b: &Rr<'_>) -> bool {
    if a.owner != b.owner || a.rtype != b.rtype || a.rdata.len() != b.rdata.len() {
        return false;
    }
    let folded = |r: &Rr<'_>| {
        let mut out = Vec::with_capacity(r.rdata.len());
        fold_rdata(r.rtype, r.rdata, |part, fold| {
            if fold {
                out.extend(part.iter().map(u8::to_ascii_lowercase));
            } else {
                out.extend_from_slice(part);
            }
        });
        out
    };
    folded(a) == folded(b)
}

/// The records already stored, to drop exact duplicates: a 64-bit hash of each and the
/// index of the first record with it, not a copy of any record.
#[derive(Default)]
pub(super) struct Seen {
    first: rustc_hash::FxHashMap<u64, u32>,
    /// The rare records whose hash another, different record has.
    collided: Vec<(Vec<u8>, u16, Vec<u8>)>,
}

impl Seen {
    /// The hash of a record: owner, type, data (names in it lower-cased).
    fn hash(rr: &Rr<'_>) -> u64 {
        use std::hash::Hasher;
        // Fx is enough: zone text is the operator's, and a collision only costs a look in
        // `collided`.
        let mut h = rustc_hash::FxHasher::default();
        h.write(rr.owner);
        h.write_u16(rr.rtype);
        fold_rdata(rr.rtype, rr.rdata, |part, fold| {
            if fold {
                for &b in part {
                    h.write_u8(b.to_ascii_lowercase());
                }
            } else {
                h.write(part);
            }
        });
        h.finish()
    }

    /// Whether `rr` is new (it is then remembered as at index `file.len()`: push it).
    pub(super) fn insert(&mut self, rr: &Rr<'_>, file: &ZoneFile) -> bool {
        let hash = Self::hash(rr);
        match self.first.get(&hash) {
            None => {
                self.first.insert(hash, file.len() as u32);
                true
            }
            Some(&i) => {
                if file.get(i as usize).is_some_and(|other| same(&other, rr)) {
                    return false;
                }
                let dup = self.collided.iter().any(|(o, t, d)| {
                    same(
                        &Rr {
                            owner: o,
                            rtype: *t,
                            ttl: 0,
                            rdata: d,
                        },
                        rr,
                    )
                });
                if !dup {
                    self.collided
                        .push((rr.owner.to_vec(), rr.rtype, rr.rdata.to_vec()));
                }
                !dup
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::{CNAME, MX, SOA, TXT};

    fn name(s: &str) -> Name {
        Name::from_ascii(s).expect("name")
    }

    fn rec(owner: &str, ttl: u32, data: RData) -> Record {
        Record::from_rdata(name(owner), ttl, data)
    }

    #[test]
    fn slots_are_16_bytes() {
        assert_eq!(std::mem::size_of::<Slot>(), 16);
    }

    #[test]
    fn from_records_round_trips_and_shares_owners() {
        let records = vec![
            rec(
                "Example.com.",
                300,
                RData::SOA(SOA::new(
                    name("ns1.example.com."),
                    name("Host.example.com."),
                    7,
                    1,
                    2,
                    3,
                    4,
                )),
            ),
            rec(
                "example.com.",
                300,
                RData::A("192.0.2.1".parse().expect("ip")),
            ),
            rec(
                "example.com.",
                60,
                RData::MX(MX::new(10, name("Mail.example.com."))),
            ),
            rec(
                "www.example.com.",
                60,
                RData::CNAME(CNAME(name("Target.example.net."))),
            ),
            rec(
                "t.example.com.",
                60,
                RData::TXT(TXT::new(vec!["a b".into(), "c".into()])),
            ),
        ];
        let file = ZoneFile::from_records(name("example.com."), records.clone()).expect("file");
        assert_eq!(file.len(), 5);
        let back = file.to_records().expect("records");
        for (a, b) in records.iter().zip(&back) {
            assert_eq!(a.name.to_lowercase(), b.name);
            assert_eq!(a.ttl, b.ttl);
            // Debug shows the case of names in the data, which `==` ignores.
            assert_eq!(format!("{:?}", a.data), format!("{:?}", b.data));
        }
        // The owner is lower-cased and stored once for the three records at the apex.
        let rrs: Vec<Rr<'_>> = file.rrs().collect();
        assert_eq!(rrs[0].owner, b"\x07example\x03com\x00");
        assert!(std::ptr::eq(rrs[0].owner.as_ptr(), rrs[2].owner.as_ptr()));
        // Names in data keep their case.
        assert_eq!(&rrs[3].rdata[..7], b"\x06Target");
        // The whole record in wire form reads back as hickory's.
        let mut wire = Vec::new();
        rrs[2].write_wire(&mut wire);
        let r = Record::read(&mut BinDecoder::new(&wire)).expect("reads");
        assert_eq!(r, back[2]);
    }

    #[test]
    fn duplicates_are_dropped_names_in_data_without_case() {
        let records = vec![
            rec("a.example.com.", 1, RData::CNAME(CNAME(name("x.example.")))),
            rec("A.example.com.", 2, RData::CNAME(CNAME(name("X.Example.")))),
            rec("b.example.com.", 1, RData::TXT(TXT::new(vec!["X".into()]))),
            rec("b.example.com.", 1, RData::TXT(TXT::new(vec!["x".into()]))),
            rec("b.example.com.", 1, RData::TXT(TXT::new(vec!["x".into()]))),
        ];
        let file = ZoneFile::from_records(name("example.com."), records).expect("file");
        let got: Vec<(u16, u32, Vec<u8>)> = file
            .rrs()
            .map(|r| (r.rtype, r.ttl, r.rdata.to_vec()))
            .collect();
        assert_eq!(
            got,
            vec![
                (5, 1, b"\x01x\x07example\x00".to_vec()),
                (16, 1, b"\x01X".to_vec()),
                (16, 1, b"\x01x".to_vec()),
            ]
        );
    }

    #[test]
    fn colliding_hashes_keep_different_records() {
        let file = ZoneFile::from_records(
            name("example.com."),
            vec![rec(
                "a.example.com.",
                1,
                RData::A("192.0.2.1".parse().expect("ip")),
            )],
        )
        .expect("file");
        let first = file.get(0).expect("rr");
        let other = Rr {
            rdata: &[192, 0, 2, 2],
            ..first
        };
        let mut seen = Seen::default();
        seen.first.insert(Seen::hash(&first), 0);
        assert!(!seen.insert(&first, &file), "the same record");
        // Another record whose hash is taken by the first one: kept, once.
        seen.first.insert(Seen::hash(&other), 0);
        assert!(seen.insert(&other, &file));
        assert!(!seen.insert(&other, &file));
    }
}
