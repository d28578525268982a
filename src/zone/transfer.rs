//! What a zone transfer (RFC 5936 AXFR, RFC 1995 IXFR) sends: a zone's records as the
//! cluster publishes them (its SOA with the cluster's serial, its text records, each
//! service's unlocated answer) and the journal of its recent versions.

use std::collections::VecDeque;
use std::sync::Arc;

use hickory_proto::rr::{Name, RData, Record};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder, NameEncoding};

use super::{Rr, ZoneFile};
use crate::zoneconf::ZoneSettings;

/// The differences between two consecutive versions of a zone (RFC 1995 §4): the records
/// that went and came (each whole record in wire form, as a transfer sends it: owner
/// lower-case, names uncompressed), with the SOA before and after.
#[derive(Debug, Clone)]
pub struct JournalEntry {
    pub old_soa: Record,
    pub new_soa: Record,
    pub removed: Vec<Box<[u8]>>,
    pub added: Vec<Box<[u8]>>,
}

/// One record a transfer sends: from the zone's store, already in wire form (the
/// journal's), or a hickory record (the SOA, the services' answers).
#[derive(Debug, Clone, Copy)]
pub enum XfrRr<'a> {
    Stored(Rr<'a>),
    Wire(&'a [u8]),
    Record(&'a Record),
}

impl XfrRr<'_> {
    /// Append the whole record in wire form (names uncompressed; RFC 5936 §3 does not ask
    /// for compression) to `out`; `false` (nothing written) when a hickory record does not
    /// encode.
    pub fn write_wire(&self, out: &mut Vec<u8>) -> bool {
        match self {
            XfrRr::Stored(rr) => rr.write_wire(out),
            XfrRr::Wire(bytes) => out.extend_from_slice(bytes),
            XfrRr::Record(r) => match record_wire(r) {
                Some(bytes) => out.extend_from_slice(&bytes),
                None => return false,
            },
        }
        true
    }
}

/// A hickory record in wire form (names uncompressed, case kept).
pub fn record_wire(r: &Record) -> Option<Vec<u8>> {
    let mut buf = Vec::with_capacity(64);
    let mut enc = BinEncoder::new(&mut buf);
    enc.set_name_encoding(NameEncoding::Uncompressed);
    r.emit(&mut enc).ok()?;
    Some(buf)
}

impl JournalEntry {
    pub fn from_serial(&self) -> u32 {
        soa_serial(&self.old_soa)
    }

    pub fn to_serial(&self) -> u32 {
        soa_serial(&self.new_soa)
    }

    /// Records this entry holds (for bounding the journal).
    pub fn size(&self) -> usize {
        self.removed.len() + self.added.len() + 2
    }
}

/// A zone's recent versions, oldest first.
pub type Journal = VecDeque<Arc<JournalEntry>>;

/// Everything a transfer of one zone needs, as of one serial.
#[derive(Debug, Clone)]
pub struct XfrZone {
    pub origin: Name,
    pub serial: u32,
    /// The apex SOA with `serial`.
    pub soa: Record,
    /// The zone text's records (its SOA among them, with the text's serial: skipped).
    pub file: Arc<ZoneFile>,
    /// Each service's A/AAAA as an unlocated client gets them.
    pub services: Arc<Vec<Record>>,
    pub journal: Arc<Journal>,
    pub settings: Arc<ZoneSettings>,
}

impl XfrZone {
    /// Every record but the SOA, text first, then the services'.
    pub fn body(&self) -> impl Iterator<Item = XfrRr<'_>> {
        self.file
            .rrs()
            .filter(|r| r.rtype != SOA)
            .map(XfrRr::Stored)
            .chain(self.services.iter().map(XfrRr::Record))
    }

    /// The journal entries from `serial` to the current one, when the journal still has
    /// an unbroken chain of them.
    pub fn changes_since(&self, serial: u32) -> Option<Vec<Arc<JournalEntry>>> {
        let start = self
            .journal
            .iter()
            .position(|e| e.from_serial() == serial)?;
        let chain: Vec<Arc<JournalEntry>> = self.journal.iter().skip(start).cloned().collect();
        let linked = chain
            .windows(2)
            .all(|w| w[0].to_serial() == w[1].from_serial());
        let ends = chain.last().is_some_and(|e| e.to_serial() == self.serial);
        (linked && ends).then_some(chain)
    }
}

/// A SOA record's serial (0 for anything else).
pub fn soa_serial(r: &Record) -> u32 {
    match &r.data {
        RData::SOA(soa) => soa.serial,
        _ => 0,
    }
}

/// The SOA record type.
const SOA: u16 = 6;

/// The serial of the zone text's SOA (0 without one).
pub fn text_serial(file: &ZoneFile) -> u32 {
    file.soa()
        .and_then(|soa| {
            let counters = soa.rdata.len().checked_sub(20)?;
            let serial = soa.rdata.get(counters..counters + 4)?;
            Some(u32::from_be_bytes(serial.try_into().ok()?))
        })
        .unwrap_or(0)
}

/// The zone text's SOA record with another serial.
pub fn soa_with_serial(file: &ZoneFile, serial: u32) -> Option<Record> {
    let mut soa = file.soa()?.to_record().ok()?;
    if let RData::SOA(s) = &mut soa.data {
        s.serial = serial;
    }
    Some(soa)
}

/// RFC 1982 serial number arithmetic: `a` is after `b`.
pub fn serial_after(a: u32, b: u32) -> bool {
    a != b && a.wrapping_sub(b) < 0x8000_0000
}
