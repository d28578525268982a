//! The zone index: every name of every zone, keyed by its lower-case wire form, with the
//! delegation cuts, CNAMEs and wildcards worked out when the index is built, so that a query
//! is a few hash look-ups over borrowed byte slices and never allocates.
//!
//! The index is flat, so that its memory is per record and not per allocation (issue 9: a
//! zone of a million records): one byte arena holds the names and the RDATA, fixed-size
//! node and RRset entries refer into it by offset, and the hash table from name to node
//! holds only the node's number. A signed zone keeps its RRSIGs, NSECs and the canonical
//! forms of its wildcards in a second arena, beside the first. Readers get borrowed views
//! ([`NodeRef`], [`RrSetRef`], [`Rdata`]).

use std::hash::BuildHasher;
use std::sync::Arc;

use hashbrown::hash_table::Entry;
use hashbrown::HashTable;
use rustc_hash::FxBuildHasher;

use hickory_proto::rr::Name;

use super::dnssec::{self, types, Signer, ZoneKeys};
use super::ZoneFile;

/// Record types used by the index (numeric, as on the wire).
pub mod rtype {
    pub const A: u16 = 1;
    pub const NS: u16 = 2;
    pub const CNAME: u16 = 5;
    pub const SOA: u16 = 6;
    pub const PTR: u16 = 12;
    pub const MX: u16 = 15;
    pub const AAAA: u16 = 28;
    pub const SRV: u16 = 33;
    pub const OPT: u16 = 41;
    pub const DS: u16 = 43;
    pub const IXFR: u16 = 251;
    pub const AXFR: u16 = 252;
    pub const ANY: u16 = 255;
}

/// One RDATA, prepared for the encoder. Names that RFC 3597 §4 lets us compress are kept as
/// names so that the encoder can point them at earlier names in the message; everything else
/// is its final wire form. The shape follows from the type: the index stores the wire form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rdata<'a> {
    /// Ready wire bytes (A, AAAA, TXT, SRV, CAA, …).
    Raw(&'a [u8]),
    /// NS, CNAME, PTR: one compressible name (uncompressed wire form, original case).
    Name(&'a [u8]),
    /// MX: preference, then a compressible name.
    Mx(u16, &'a [u8]),
    /// SOA: two compressible names and the 20 bytes of counters.
    Soa(&'a [u8], &'a [u8], &'a [u8; 20]),
}

impl<'a> Rdata<'a> {
    /// The shape of an RDATA of type `rt` in uncompressed wire form (`Raw` when it does not
    /// parse as its type says, which the build rules out).
    pub fn of(rt: u16, wire: &'a [u8]) -> Rdata<'a> {
        match rt {
            rtype::NS | rtype::CNAME | rtype::PTR if name_len(wire) == Some(wire.len()) => {
                Rdata::Name(wire)
            }
            rtype::MX if wire.len() > 2 && name_len(&wire[2..]) == Some(wire.len() - 2) => {
                Rdata::Mx(u16::from_be_bytes([wire[0], wire[1]]), &wire[2..])
            }
            rtype::SOA => {
                let soa = name_len(wire).and_then(|m| {
                    let r = name_len(&wire[m..])?;
                    let counters: &[u8; 20] = wire.get(m + r..)?.try_into().ok()?;
                    Some(Rdata::Soa(&wire[..m], &wire[m..m + r], counters))
                });
                soa.unwrap_or(Rdata::Raw(wire))
            }
            _ => Rdata::Raw(wire),
        }
    }
}

/// The length of the uncompressed wire name at the start of `b`, if a well-formed one is
/// there (labels of at most 63 bytes, at most 255 in all).
pub fn name_len(b: &[u8]) -> Option<usize> {
    let mut i = 0;
    loop {
        let l = *b.get(i)? as usize;
        i += 1 + l;
        if l == 0 {
            return (i <= 255).then_some(i);
        }
        if l > 63 {
            return None;
        }
    }
}

/// A list of byte strings in an arena: each one its big-endian `u16` length, then its bytes.
#[derive(Clone, Copy, Debug, Default)]
pub struct List<'a>(&'a [u8]);

impl<'a> Iterator for List<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let (len, rest) = self.0.split_first_chunk::<2>()?;
        let len = u16::from_be_bytes(*len) as usize;
        let item = rest.get(..len)?;
        self.0 = &rest[len..];
        Some(item)
    }
}

impl List<'_> {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Append one item to a [`List`] being written.
fn push_item(out: &mut Vec<u8>, item: &[u8]) {
    out.extend_from_slice(&(item.len() as u16).to_be_bytes());
    out.extend_from_slice(item);
}

/// The RDATAs of an RRset, in their shapes.
#[derive(Clone, Copy, Debug)]
pub struct Rdatas<'a> {
    rtype: u16,
    list: List<'a>,
}

impl<'a> Iterator for Rdatas<'a> {
    type Item = Rdata<'a>;

    fn next(&mut self) -> Option<Rdata<'a>> {
        self.list.next().map(|w| Rdata::of(self.rtype, w))
    }
}

/// All records of one type at one name: a view into the index.
#[derive(Clone, Copy, Debug)]
pub struct RrSetRef<'z> {
    rtype: u16,
    ttl: u32,
    rdatas: &'z [u8],
    sigs: &'z [u8],
    canon: &'z [u8],
}

impl<'z> RrSetRef<'z> {
    pub fn rtype(&self) -> u16 {
        self.rtype
    }

    pub fn ttl(&self) -> u32 {
        self.ttl
    }

    /// The RDATAs, in zone-file order (duplicates dropped).
    pub fn rdatas(&self) -> Rdatas<'z> {
        Rdatas {
            rtype: self.rtype,
            list: List(self.rdatas),
        }
    }

    /// The RRSIG RDATAs over this RRset at its own owner, in a signed zone (none otherwise,
    /// and for glue and delegation NS, which are not signed).
    pub fn sigs(&self) -> List<'z> {
        List(self.sigs)
    }

    /// At a wildcard owner of a signed zone: the RDATAs in canonical form and order, so an
    /// answer made from it is signed as the query name without an allocation.
    pub fn canon(&self) -> List<'z> {
        List(self.canon)
    }

    /// Same type, TTL and RDATA (in order) as `other`: what signature reuse asks.
    pub fn same_data(&self, other: &RrSetRef<'_>) -> bool {
        self.rtype == other.rtype && self.ttl == other.ttl && self.rdatas == other.rdatas
    }

    /// The name in each RDATA that may need address records in the additional section
    /// (NS, MX and SRV targets).
    pub fn targets(&self) -> impl Iterator<Item = &'z [u8]> + 'z {
        let rt = self.rtype;
        self.rdatas().filter_map(move |r| match (rt, r) {
            (rtype::NS, Rdata::Name(n)) | (_, Rdata::Mx(_, n)) => Some(n),
            (rtype::SRV, Rdata::Raw(raw)) if raw.len() > 6 => Some(&raw[6..]),
            _ => None,
        })
    }
}

/// A ready NSEC RDATA and its RRSIG RDATA.
#[derive(Clone, Copy, Debug)]
pub struct SignedNsec<'z> {
    pub rdata: &'z [u8],
    pub sig: &'z [u8],
}

impl<'z> SignedNsec<'z> {
    /// The type bitmap: the RDATA after its next-name field.
    pub fn bitmap(&self) -> &'z [u8] {
        let next = name_len(self.rdata).unwrap_or(self.rdata.len());
        &self.rdata[next..]
    }
}

/// One name in a zone: its RRsets (sorted by type) and what the index worked out about it.
#[derive(Clone, Copy)]
pub struct NodeRef<'z> {
    index: &'z Index,
    id: u32,
    entry: &'z NodeEntry,
}

impl std::fmt::Debug for NodeRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeRef")
            .field("name", &crate::zone::display(self.name()))
            .field("rrsets", &self.rrsets().collect::<Vec<_>>())
            .field("is_cut", &self.is_cut())
            .field("service", &self.service())
            .finish()
    }
}

impl<'z> NodeRef<'z> {
    /// The name, lower-case wire form.
    pub fn name(&self) -> &'z [u8] {
        self.index.name(self.entry)
    }

    /// The RRsets, sorted by type.
    pub fn rrsets(&self) -> impl Iterator<Item = RrSetRef<'z>> + Clone + 'z {
        let index = self.index;
        let start = self.entry.sets;
        (start..start + u32::from(self.entry.nsets)).map(move |s| index.set(s))
    }

    pub fn get(&self, rtype: u16) -> Option<RrSetRef<'z>> {
        let start = self.entry.sets as usize;
        let sets = self
            .index
            .sets
            .get(start..start + self.entry.nsets as usize)?;
        let i = sets.iter().position(|s| s.rtype == rtype)?;
        Some(self.index.set((start + i) as u32))
    }

    /// An empty non-terminal: a name that exists only because names exist below it.
    pub fn is_empty(&self) -> bool {
        self.entry.nsets == 0
    }

    /// NS records below the apex: a delegation; the node's other data (but DS) is glue.
    pub fn is_cut(&self) -> bool {
        self.entry.flags & CUT != 0
    }

    /// `*.<this name>` exists.
    pub fn has_wildcard_child(&self) -> bool {
        self.entry.flags & WILD_CHILD != 0
    }

    /// The service at this name (an index into the snapshot's services), whose A and AAAA
    /// answers come from a policy rather than from records.
    pub fn service(&self) -> Option<u32> {
        (self.entry.service != NONE).then_some(self.entry.service)
    }

    /// In a signed zone: the NSEC at this name that denies the types it lacks (RFC 9824
    /// compact form, next name `\000.<name>`), with its RRSIG.
    pub fn nsec(&self) -> Option<SignedNsec<'z>> {
        let r = self.index.nsecs.get(self.id as usize)?;
        let mut list = List(self.index.sig_data.get(r.range())?);
        Some(SignedNsec {
            rdata: list.next()?,
            sig: list.next()?,
        })
    }
}

/// "None" in the index's `u32` fields.
const NONE: u32 = u32::MAX;
/// [`NodeEntry::flags`]: a delegation.
const CUT: u8 = 1;
/// [`NodeEntry::flags`]: `*.<name>` exists.
const WILD_CHILD: u8 = 2;

/// A name: 16 bytes, its name and RRsets in the index's arrays.
#[derive(Clone, Copy, Debug)]
struct NodeEntry {
    /// Offset of the lower-case wire name in `data`.
    name: u32,
    /// The first of its RRsets in `sets` (`nsets` of them, sorted by type).
    sets: u32,
    nsets: u16,
    name_len: u8,
    flags: u8,
    /// The service at this name, or [`NONE`].
    service: u32,
}

/// An RRset: 16 bytes, its RDATA a [`List`] in `data`.
#[derive(Clone, Copy, Debug)]
struct SetEntry {
    rtype: u16,
    ttl: u32,
    rdata: u32,
    len: u32,
}

/// A range of an arena.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Span {
    off: u32,
    len: u32,
}

impl Span {
    fn range(self) -> std::ops::Range<usize> {
        self.off as usize..self.off as usize + self.len as usize
    }
}

/// What signing adds to an RRset: its RRSIGs and, at a wildcard, its canonical RDATAs.
#[derive(Clone, Copy, Debug, Default)]
struct SetSigs {
    sigs: Span,
    canon: Span,
}

/// The flat index of one zone.
#[derive(Clone, Default)]
struct Index {
    /// Names (lower-case wire) and RDATA lists.
    data: Vec<u8>,
    nodes: Vec<NodeEntry>,
    sets: Vec<SetEntry>,
    /// Node numbers, hashed by their names.
    table: HashTable<u32>,
    /// Signed zones: RRSIG lists, canonical wildcard RDATA, NSEC + RRSIG pairs.
    sig_data: Vec<u8>,
    /// By set number; empty in an unsigned zone.
    set_sigs: Vec<SetSigs>,
    /// By node number: a [`List`] of the NSEC RDATA and its RRSIG; empty when unsigned.
    nsecs: Vec<Span>,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index")
            .field("names", &self.nodes.len())
            .field("rrsets", &self.sets.len())
            .field("bytes", &self.data.len())
            .field("sig_bytes", &self.sig_data.len())
            .finish()
    }
}

fn hash(name: &[u8]) -> u64 {
    FxBuildHasher.hash_one(name)
}

fn name_at<'a>(nodes: &[NodeEntry], data: &'a [u8], id: u32) -> &'a [u8] {
    let n = &nodes[id as usize];
    &data[n.name as usize..n.name as usize + n.name_len as usize]
}

impl Index {
    fn name(&self, e: &NodeEntry) -> &[u8] {
        &self.data[e.name as usize..e.name as usize + e.name_len as usize]
    }

    fn find(&self, name: &[u8]) -> Option<u32> {
        self.table
            .find(hash(name), |&id| {
                name_at(&self.nodes, &self.data, id) == name
            })
            .copied()
    }

    fn node(&self, id: u32) -> NodeRef<'_> {
        NodeRef {
            index: self,
            id,
            entry: &self.nodes[id as usize],
        }
    }

    fn set(&self, id: u32) -> RrSetRef<'_> {
        let s = &self.sets[id as usize];
        let extra = self.set_sigs.get(id as usize).copied().unwrap_or_default();
        let arena = |span: Span| self.sig_data.get(span.range()).unwrap_or(&[]);
        RrSetRef {
            rtype: s.rtype,
            ttl: s.ttl,
            rdatas: &self.data[s.rdata as usize..s.rdata as usize + s.len as usize],
            sigs: arena(extra.sigs),
            canon: arena(extra.canon),
        }
    }

    /// The node of `name`, made (without RRsets) when it is not there.
    fn node_id(&mut self, name: &[u8]) -> Result<u32, IndexError> {
        let Index {
            data, nodes, table, ..
        } = self;
        let entry = table.entry(
            hash(name),
            |&id| name_at(nodes, data, id) == name,
            |&id| hash(name_at(nodes, data, id)),
        );
        match entry {
            Entry::Occupied(e) => Ok(*e.get()),
            Entry::Vacant(v) => {
                let id = u32::try_from(nodes.len()).map_err(|_| too_big())?;
                nodes.push(NodeEntry {
                    name: offset(data.len())?,
                    sets: 0,
                    nsets: 0,
                    name_len: u8::try_from(name.len()).map_err(|_| too_big())?,
                    flags: 0,
                    service: NONE,
                });
                data.extend_from_slice(name);
                v.insert(id);
                Ok(id)
            }
        }
    }

    /// Whether `name` is strictly below a delegation of the zone (its data is glue).
    fn below_cut(&self, name: &[u8], origin: &[u8]) -> bool {
        let mut rest = name;
        while rest.len() > origin.len() {
            rest = parent(rest);
            if rest.len() > origin.len()
                && self
                    .find(rest)
                    .is_some_and(|id| self.nodes[id as usize].flags & CUT != 0)
            {
                return true;
            }
        }
        false
    }
}

fn too_big() -> IndexError {
    IndexError::TooLarge
}

fn offset(at: usize) -> Result<u32, IndexError> {
    u32::try_from(at).map_err(|_| too_big())
}

/// One record as read, before the index is laid out: its RDATA in the builder's scratch.
#[derive(Clone, Copy)]
struct Pending {
    node: u32,
    rtype: u16,
    len: u16,
    ttl: u32,
    off: u32,
}

/// The build of one zone's index: records go in one at a time ([`Builder::add`]).
pub struct Builder {
    origin_wire: Box<[u8]>,
    index: Index,
    pending: Vec<Pending>,
    scratch: Vec<u8>,
    /// The SOA's TTL, MINIMUM and serial.
    soa_fields: Option<(u32, u32, u32)>,
}

impl Builder {
    /// A build for the zone at `origin_wire` (lower-case wire form) that expects about
    /// `records` records.
    pub fn new(origin_wire: &[u8], records: usize) -> Builder {
        let mut index = Index::default();
        index.table.reserve(records, |_| 0);
        index.nodes.reserve(records);
        Builder {
            origin_wire: origin_wire.into(),
            index,
            pending: Vec::with_capacity(records),
            scratch: Vec::new(),
            soa_fields: None,
        }
    }

    /// One record: its owner (lower-case, uncompressed wire), type, TTL and RDATA
    /// (uncompressed wire, names as written).
    pub fn add(
        &mut self,
        owner: &[u8],
        rtype: u16,
        ttl: u32,
        rdata: &[u8],
    ) -> Result<(), IndexError> {
        if !is_subdomain(owner, &self.origin_wire) {
            return Err(IndexError::OutOfZone(crate::zone::display(owner)));
        }
        let len = u16::try_from(rdata.len()).map_err(|_| {
            IndexError::Encode(
                crate::zone::display(owner),
                "RDATA longer than 65535 bytes".into(),
            )
        })?;
        if rtype == rtype::SOA {
            if let Rdata::Soa(_, _, c) = Rdata::of(rtype, rdata) {
                let field = |i: usize| u32::from_be_bytes([c[i], c[i + 1], c[i + 2], c[i + 3]]);
                self.soa_fields = Some((ttl, field(16), field(0)));
            }
        }
        let node = self.index.node_id(owner)?;
        self.pending.push(Pending {
            node,
            rtype,
            len,
            ttl,
            off: offset(self.scratch.len())?,
        });
        self.scratch.extend_from_slice(rdata);
        Ok(())
    }

    /// The index, with the services that live in the zone (lower-case wire name, service
    /// index).
    pub fn finish(self, origin: Name, services: &[(Box<[u8]>, u32)]) -> Result<Zone, IndexError> {
        let Builder {
            origin_wire,
            mut index,
            mut pending,
            scratch,
            soa_fields,
        } = self;
        for (name, _) in services {
            if !is_subdomain(name, &origin_wire) {
                return Err(IndexError::OutOfZone(crate::zone::display(name)));
            }
            index.node_id(name)?;
        }

        // The RRsets: each node's records together, by type, in file order within a type.
        pending.sort_by_key(|p| (u64::from(p.node) << 16) | u64::from(p.rtype));
        index.data.reserve(scratch.len() + 2 * pending.len());
        index.sets.reserve(pending.len());
        let mut i = 0;
        while i < pending.len() {
            let node = pending[i].node;
            let first_set = offset(index.sets.len())?;
            while i < pending.len() && pending[i].node == node {
                let rt = pending[i].rtype;
                let mut ttl = u32::MAX;
                let start = index.data.len();
                let mut j = i;
                // No duplicates to drop: the zone file dropped every record equal to an
                // earlier one (names in RDATA compared without case, so more than bytes).
                while j < pending.len() && pending[j].node == node && pending[j].rtype == rt {
                    let p = &pending[j];
                    // RFC 2181 §5.2: one TTL per RRset; the lowest wins, as most servers do.
                    ttl = ttl.min(p.ttl);
                    push_item(
                        &mut index.data,
                        &scratch[p.off as usize..p.off as usize + p.len as usize],
                    );
                    j += 1;
                }
                index.sets.push(SetEntry {
                    rtype: rt,
                    ttl,
                    rdata: offset(start)?,
                    len: offset(index.data.len() - start)?,
                });
                i = j;
            }
            let e = &mut index.nodes[node as usize];
            e.sets = first_set;
            e.nsets =
                u16::try_from(index.sets.len() - first_set as usize).map_err(|_| too_big())?;
        }
        drop(pending);
        drop(scratch);

        for (name, idx) in services {
            let Some(id) = index.find(name) else { continue };
            let node = index.node(id);
            if node.get(rtype::CNAME).is_some() {
                return Err(IndexError::ServiceConflict(
                    crate::zone::display(name),
                    "a CNAME",
                ));
            }
            if node.get(rtype::A).is_some() || node.get(rtype::AAAA).is_some() {
                return Err(IndexError::ServiceConflict(
                    crate::zone::display(name),
                    "A or AAAA records",
                ));
            }
            index.nodes[id as usize].service = *idx;
        }
        let (soa_ttl, minimum, serial) = soa_fields.ok_or(IndexError::NoSoa)?;
        let soa = index
            .find(&origin_wire)
            .and_then(|id| index.node(id).get(rtype::SOA))
            .map(OwnedSet::of)
            .ok_or(IndexError::NoSoa)?;

        // Empty non-terminals: every ancestor of a name, up to the origin, exists. Names
        // added here are walked in turn, so each missing ancestor is added once.
        let mut id = 0;
        let mut buf = [0u8; 256];
        while id < index.nodes.len() {
            let e = index.nodes[id];
            let name = index.name(&e);
            let wild = name.len() > origin_wire.len() && name.starts_with(b"\x01*");
            if name.len() > origin_wire.len() {
                let p = parent(name);
                let plen = p.len();
                buf[..plen].copy_from_slice(p);
                let pid = match index.find(&buf[..plen]) {
                    Some(pid) => pid,
                    None => index.node_id(&buf[..plen])?,
                };
                if wild {
                    index.nodes[pid as usize].flags |= WILD_CHILD;
                }
            }
            id += 1;
        }
        for e in index.nodes.iter_mut() {
            let name = &index.data[e.name as usize..e.name as usize + e.name_len as usize];
            let sets = &index.sets[e.sets as usize..e.sets as usize + e.nsets as usize];
            if name != &origin_wire[..] && sets.iter().any(|s| s.rtype == rtype::NS) {
                e.flags |= CUT;
            }
        }
        // A service below a delegation would never be reached.
        for (name, _) in services {
            let mut rest: &[u8] = name;
            while rest.len() > origin_wire.len() {
                if index.find(rest).is_some_and(|id| index.node(id).is_cut()) {
                    return Err(IndexError::ServiceConflict(
                        crate::zone::display(name),
                        "a delegation at or above it",
                    ));
                }
                rest = parent(rest);
            }
        }
        let Index {
            data,
            nodes,
            sets,
            table,
            ..
        } = &mut index;
        data.shrink_to_fit();
        nodes.shrink_to_fit();
        sets.shrink_to_fit();
        table.shrink_to_fit(|&id| hash(name_at(nodes, data, id)));
        Ok(Zone {
            origin,
            origin_wire,
            index: Arc::new(index),
            soa,
            // RFC 2308 §5: the lesser of the SOA's TTL and its MINIMUM field.
            negative_ttl: soa_ttl.min(minimum),
            serial,
            signer: None,
            signing_keys: Box::new([]),
            oldest_expiration: None,
            sig_generation: 0,
        })
    }
}

/// An RRset held outside the index (the published SOA).
#[derive(Clone, Debug)]
struct OwnedSet {
    rtype: u16,
    ttl: u32,
    rdatas: Box<[u8]>,
    sigs: Box<[u8]>,
}

impl OwnedSet {
    fn of(set: RrSetRef<'_>) -> OwnedSet {
        OwnedSet {
            rtype: set.rtype,
            ttl: set.ttl,
            rdatas: set.rdatas.into(),
            sigs: set.sigs.into(),
        }
    }

    fn view(&self) -> RrSetRef<'_> {
        RrSetRef {
            rtype: self.rtype,
            ttl: self.ttl,
            rdatas: &self.rdatas,
            sigs: &self.sigs,
            canon: &[],
        }
    }
}

/// One zone, ready to answer from.
#[derive(Debug)]
pub struct Zone {
    origin: Name,
    origin_wire: Box<[u8]>,
    /// Shared, so that a new serial ([`Zone::with_serial`]) costs no re-index.
    index: Arc<Index>,
    /// The apex SOA as published: its serial may differ from the text's (the cluster's
    /// serial); answers take the SOA from here, never from the apex node.
    soa: OwnedSet,
    negative_ttl: u32,
    serial: u32,
    /// The signer of a signed zone (shared by every worker, no lock: signing is `&self`).
    signer: Option<Arc<Signer>>,
    /// The keys whose signatures the zone holds, so the next build knows which of them it
    /// may keep (a key tag alone could collide).
    signing_keys: Box<[SigningKey]>,
    /// In a signed zone: the expiration of the signature that expires first (the window of
    /// the per-answer ones included), so the renewal pass costs one comparison per zone.
    oldest_expiration: Option<u32>,
    /// The signer's generation for the shared signature cache (`dns::sigcache`): a new
    /// signer, a new generation, so no answer gets an old signer's cached signature.
    sig_generation: u64,
}

impl Zone {
    /// Build the index of one parsed (and validated) zone file, with the services that live
    /// in it (lower-case wire name, service index). Every record goes through
    /// [`Builder::add`] as (owner, type, TTL, RDATA wire); the RDATA is emitted from the
    /// parsed record here until the zone file keeps its records in wire form itself.
    pub fn build(file: &ZoneFile, services: &[(Box<[u8]>, u32)]) -> Result<Zone, IndexError> {
        let origin = file.origin.to_lowercase();
        let origin_wire = wire_lower(&origin);
        let mut b = Builder::new(&origin_wire, file.len());
        for rr in file.rrs() {
            b.add(rr.owner, rr.rtype, rr.ttl, rr.rdata)?;
        }
        b.finish(origin, services)
    }

    /// Sign the zone with `keys`, the signatures valid from an hour before `now` (seconds
    /// since the epoch): every RRset but glue and delegation NS gets its RRSIG, every
    /// name its NODATA NSEC, and the apex DNSKEY, CDS and CDNSKEY (RFC 7344).
    pub fn sign(&mut self, keys: &ZoneKeys, now: u64) -> Result<SignStats, IndexError> {
        self.sign_reusing(keys, now, None)
    }

    /// [`Zone::sign`], keeping the signatures of `prev` (the zone's last build) that are
    /// still good: an RRset whose owner, type, TTL and RDATA did not change, signed by the
    /// same key (algorithm, tag and public key), with more than [`RENEW_LEFT_SECS`] of its
    /// validity left, keeps its RRSIG. Only what changed, what a new key must sign and what
    /// is aging is signed, so a one-record change to a large zone costs a few signatures
    /// instead of one per RRset.
    pub fn sign_reusing(
        &mut self,
        keys: &ZoneKeys,
        now: u64,
        prev: Option<&Zone>,
    ) -> Result<SignStats, IndexError> {
        let origin = &self.origin;
        let fail =
            |e: &dyn std::fmt::Display| IndexError::Encode(origin.to_string(), e.to_string());
        let signer = Signer::new(&self.origin_wire, keys, now).map_err(|e| fail(&e))?;
        // The apex key RRsets are signed by every key a parent's DS may point at.
        let key_signers =
            Signer::key_signers(&self.origin_wire, keys, now).map_err(|e| fail(&e))?;
        let alg = keys.algorithm;
        let signing_keys: Box<[SigningKey]> = keys
            .data_key()
            .into_iter()
            .chain(keys.entry_points())
            .map(|k| SigningKey {
                algorithm: alg.number(),
                tag: k.tag,
                public: k.public.clone().into_boxed_slice(),
            })
            .collect();
        let reuse = Reuse::new(prev, alg.number(), &signing_keys, now);
        let mut stats = SignStats::default();
        let mut oldest = Oldest::new(now);
        oldest.see(signer.window().1);
        let key_ttl = dnssec::dnskey_ttl(self.soa.ttl);
        // The apex's key RRsets.
        let dnskeys: Vec<Vec<u8>> = keys.published().map(|k| k.dnskey_wire(alg)).collect();
        // CDS and CDNSKEY (RFC 7344) name the keys the parent should point at from now on.
        let cdnskeys: Vec<Vec<u8>> = keys.cds_keys().map(|k| k.dnskey_wire(alg)).collect();
        let mut cds = Vec::new();
        for k in keys.cds_keys() {
            let ds = k.ds(alg, &self.origin).map_err(|e| fail(&e))?;
            cds.push(dnssec::ds_wire(&ds));
        }
        let origin_wire = &self.origin_wire[..];
        let index = Arc::make_mut(&mut self.index);
        if let Some(apex) = index.find(origin_wire) {
            let e = index.nodes[apex as usize];
            let mut sets: Vec<SetEntry> = index.sets
                [e.sets as usize..e.sets as usize + e.nsets as usize]
                .iter()
                .filter(|s| !matches!(s.rtype, types::DNSKEY | types::CDS | types::CDNSKEY))
                .copied()
                .collect();
            // Exactly the room needed: the build left these arrays without spare room, and
            // a push past it would double a million-record zone's arrays.
            let bytes: usize = [&dnskeys, &cds, &cdnskeys]
                .iter()
                .flat_map(|l| l.iter())
                .map(|r| 2 + r.len())
                .sum();
            index.data.reserve_exact(bytes);
            index.sets.reserve_exact(sets.len() + 3);
            for (rt, rdatas) in [
                (types::DNSKEY, dnskeys),
                (types::CDS, cds),
                (types::CDNSKEY, cdnskeys),
            ] {
                let start = index.data.len();
                for r in &rdatas {
                    push_item(&mut index.data, r);
                }
                sets.push(SetEntry {
                    rtype: rt,
                    ttl: key_ttl,
                    rdata: offset(start)?,
                    len: offset(index.data.len() - start)?,
                });
            }
            sets.sort_by_key(|s| s.rtype);
            let n = &mut index.nodes[apex as usize];
            n.sets = offset(index.sets.len())?;
            n.nsets = u16::try_from(sets.len()).map_err(|_| too_big())?;
            index.sets.extend(sets);
        }
        let index: &Index = index;
        let neg_ttl = self.negative_ttl;
        let mut sig_data: Vec<u8> = Vec::new();
        let mut set_sigs = vec![SetSigs::default(); index.sets.len()];
        let mut nsecs = vec![Span::default(); index.nodes.len()];
        let mut types_buf: Vec<u16> = Vec::new();
        for id in 0..index.nodes.len() as u32 {
            let node = index.node(id);
            let name = node.name();
            if index.below_cut(name, origin_wire) {
                continue; // glue: not signed (RFC 4035 §2.2)
            }
            let wild = name.starts_with(b"\x01*");
            let apex = name == origin_wire;
            let prev_node = reuse
                .prev
                .and_then(|p| p.index.find(name).map(|id| p.index.node(id)));
            for (k, set) in node.rrsets().enumerate() {
                let set_id = node.entry.sets as usize + k;
                if node.is_cut() && set.rtype != rtype::DS {
                    continue; // delegation NS (and glue at the cut) are not signed
                }
                if apex && set.rtype == rtype::SOA {
                    continue; // answers take the SOA (and its RRSIG) from `self.soa`
                }
                // The last build's RRset, when it is exactly this one.
                let old = prev_node
                    .and_then(|n| n.get(set.rtype))
                    .filter(|o| o.same_data(&set));
                let canon = |set: &RrSetRef<'_>| -> Vec<Vec<u8>> {
                    set.rdatas().map(|r| canonical(set.rtype, r)).collect()
                };
                if wild {
                    let mut sorted = canon(&set);
                    sorted.sort();
                    sorted.dedup();
                    let start = sig_data.len();
                    for c in &sorted {
                        push_item(&mut sig_data, c);
                    }
                    set_sigs[set_id].canon = Span {
                        off: offset(start)?,
                        len: offset(sig_data.len() - start)?,
                    };
                }
                let is_key_set =
                    apex && matches!(set.rtype, types::DNSKEY | types::CDS | types::CDNSKEY);
                let signers: &[Signer] = if is_key_set {
                    &key_signers
                } else {
                    std::slice::from_ref(&signer)
                };
                let start = sig_data.len();
                for s in signers {
                    let kept = old.and_then(|o| reuse.find(o.sigs(), set.rtype, set.ttl, s));
                    let made;
                    let sig: &[u8] = match kept {
                        Some(sig) => {
                            stats.kept += 1;
                            sig
                        }
                        None => {
                            stats.made += 1;
                            made = s
                                .sign(name, set.rtype, set.ttl, canon(&set))
                                .map_err(|e| fail(&e))?;
                            &made
                        }
                    };
                    oldest.see_sig(sig);
                    push_item(&mut sig_data, sig);
                }
                set_sigs[set_id].sigs = Span {
                    off: offset(start)?,
                    len: offset(sig_data.len() - start)?,
                };
            }
            // The NSEC that denies what this name lacks: its types, RRSIG and NSEC.
            types_buf.clear();
            types_buf.extend(node.rrsets().map(|s| s.rtype));
            if node.is_cut() {
                types_buf.retain(|&t| t == rtype::NS || t == rtype::DS);
            }
            types_buf.extend([types::RRSIG, types::NSEC]);
            let mut rdata = Vec::with_capacity(name.len() + 40);
            rdata.extend_from_slice(b"\x01\x00");
            rdata.extend_from_slice(name);
            dnssec::type_bitmap(&types_buf, &mut rdata);
            let kept = prev_node
                .and_then(|n| n.nsec())
                .filter(|n| n.rdata == &rdata[..])
                .and_then(|n| reuse.find(std::iter::once(n.sig), types::NSEC, neg_ttl, &signer));
            let made;
            let sig: &[u8] = match kept {
                Some(sig) => {
                    stats.kept += 1;
                    sig
                }
                None => {
                    stats.made += 1;
                    made = signer
                        .sign(name, types::NSEC, neg_ttl, vec![rdata.clone()])
                        .map_err(|e| fail(&e))?;
                    &made
                }
            };
            oldest.see_sig(sig);
            let start = sig_data.len();
            push_item(&mut sig_data, &rdata);
            push_item(&mut sig_data, sig);
            nsecs[id as usize] = Span {
                off: offset(start)?,
                len: offset(sig_data.len() - start)?,
            };
        }
        let mut soa = self.soa.clone();
        let kept = reuse
            .prev
            .map(|p| p.soa.view())
            .filter(|o| o.same_data(&soa.view()))
            .and_then(|o| reuse.find(o.sigs(), rtype::SOA, soa.ttl, &signer))
            .map(Box::<[u8]>::from);
        let sig = match kept {
            Some(sig) => {
                stats.kept += 1;
                sig
            }
            None => {
                stats.made += 1;
                let canon = soa
                    .view()
                    .rdatas()
                    .map(|r| canonical(rtype::SOA, r))
                    .collect();
                signer
                    .sign(&self.origin_wire, rtype::SOA, soa.ttl, canon)
                    .map_err(|e| fail(&e))?
            }
        };
        oldest.see_sig(&sig);
        let mut list = Vec::with_capacity(sig.len() + 2);
        push_item(&mut list, &sig);
        soa.sigs = list.into_boxed_slice();
        self.soa = soa;
        sig_data.shrink_to_fit();
        let index = Arc::make_mut(&mut self.index);
        index.sig_data = sig_data;
        index.set_sigs = set_sigs;
        index.nsecs = nsecs;
        self.signer = Some(Arc::new(signer));
        self.signing_keys = signing_keys;
        self.oldest_expiration = Some(oldest.expiration);
        self.sig_generation = crate::dns::sigcache::next_generation();
        // The shared signature cache (7 MiB) is made here, on the control plane, not by
        // the first signed answer on a worker.
        crate::dns::sigcache::global();
        Ok(stats)
    }

    /// Whether a signature of this signed zone (one made at build time, or the window of
    /// those made per answer) has [`RENEW_LEFT_SECS`] or less of its validity left at `now`
    /// (seconds since the epoch): the zone is to be built again, which signs only those.
    /// Never for an unsigned zone.
    pub fn renewal_due(&self, now: u64) -> bool {
        self.oldest_expiration
            .is_some_and(|e| secs_left(e, now) <= RENEW_LEFT_SECS)
    }

    /// The signer, in a signed zone.
    pub fn signer(&self) -> Option<&Signer> {
        self.signer.as_deref()
    }

    /// The signer's generation (0 in an unsigned zone): part of every signature cache key.
    pub fn sig_generation(&self) -> u64 {
        self.sig_generation
    }

    pub fn origin(&self) -> &Name {
        &self.origin
    }

    /// The origin's lower-case wire form.
    pub fn origin_wire(&self) -> &[u8] {
        &self.origin_wire
    }

    pub fn serial(&self) -> u32 {
        self.serial
    }

    /// The same zone published with another SOA serial (the cluster's): the index is shared.
    pub fn with_serial(&self, serial: u32) -> Zone {
        let mut soa = self.soa.clone();
        let mut rdatas = soa.rdatas.to_vec();
        let mut at = 0;
        while at + 2 <= rdatas.len() {
            let len = u16::from_be_bytes([rdatas[at], rdatas[at + 1]]) as usize;
            let item = at + 2..at + 2 + len;
            if let Some(Rdata::Soa(m, r, _)) =
                rdatas.get(item.clone()).map(|w| Rdata::of(rtype::SOA, w))
            {
                let s = item.start + m.len() + r.len();
                rdatas[s..s + 4].copy_from_slice(&serial.to_be_bytes());
            }
            at = item.end;
        }
        soa.rdatas = rdatas.into_boxed_slice();
        // The SOA changed: in a signed zone its RRSIG is made again (one signature).
        if let Some(signer) = &self.signer {
            let canon = soa
                .view()
                .rdatas()
                .map(|r| canonical(rtype::SOA, r))
                .collect();
            match signer.sign(&self.origin_wire, rtype::SOA, soa.ttl, canon) {
                Ok(sig) => {
                    let mut list = Vec::with_capacity(sig.len() + 2);
                    push_item(&mut list, &sig);
                    soa.sigs = list.into_boxed_slice();
                }
                Err(e) => {
                    tracing::error!(zone = %self.origin, error = %e, "the SOA cannot be signed")
                }
            }
        }
        Zone {
            origin: self.origin.clone(),
            origin_wire: self.origin_wire.clone(),
            index: self.index.clone(),
            soa,
            negative_ttl: self.negative_ttl,
            serial,
            signer: self.signer.clone(),
            signing_keys: self.signing_keys.clone(),
            oldest_expiration: self.oldest_expiration,
            sig_generation: self.sig_generation,
        }
    }

    /// [`Zone::with_serial`] in place: the index stays unshared, so signing next does not
    /// copy it.
    pub fn set_serial(&mut self, serial: u32) {
        *self = self.with_serial(serial);
    }

    /// The apex SOA RRset.
    pub fn soa(&self) -> RrSetRef<'_> {
        self.soa.view()
    }

    /// RFC 2308 negative-answer TTL.
    pub fn negative_ttl(&self) -> u32 {
        self.negative_ttl
    }

    /// The node at a lower-case wire name, if the name exists (empty non-terminals included).
    #[inline]
    pub fn node(&self, name: &[u8]) -> Option<NodeRef<'_>> {
        self.index.find(name).map(|id| self.index.node(id))
    }

    /// Number of names (empty non-terminals included).
    pub fn len(&self) -> usize {
        self.index.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.nodes.is_empty()
    }

    /// The bytes the index holds on the heap (arrays, arenas and hash table), for the
    /// memory figures.
    pub fn index_bytes(&self) -> usize {
        let i = &*self.index;
        i.data.capacity()
            + i.nodes.capacity() * std::mem::size_of::<NodeEntry>()
            + i.sets.capacity() * std::mem::size_of::<SetEntry>()
            + i.table.allocation_size()
            + i.sig_data.capacity()
            + i.set_sigs.capacity() * std::mem::size_of::<SetSigs>()
            + i.nsecs.capacity() * std::mem::size_of::<Span>()
    }
}

/// A signature made at build time is made again once this much of its validity or less is
/// left: half of it (7 of 14 days), well before the quarter DESIGN.md allows, so a renewal
/// pass that runs late or a build that fails still leaves days of margin.
pub const RENEW_LEFT_SECS: u32 = dnssec::VALIDITY_SECS / 2;

/// What a signing pass did: signatures made and signatures kept from the last build.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SignStats {
    pub made: usize,
    pub kept: usize,
}

/// One key that signed a zone: algorithm number, key tag and DNSKEY public key field.
#[derive(Clone, Debug, PartialEq, Eq)]
struct SigningKey {
    algorithm: u8,
    tag: u16,
    public: Box<[u8]>,
}

/// The seconds from `now` to `expiration`, in RFC 4034 §3.1.5 serial arithmetic (0 when
/// it is past).
fn secs_left(expiration: u32, now: u64) -> u32 {
    let left = expiration.wrapping_sub(now as u32) as i32;
    left.max(0) as u32
}

/// Which signatures of the last build a new build may keep.
struct Reuse<'a> {
    prev: Option<&'a Zone>,
    /// (algorithm, tag) of the keys that signed the last build and sign this one, with the
    /// same public key.
    same_keys: Vec<(u8, u16)>,
    /// The zone's algorithm number (every key of a zone has it).
    algorithm: u8,
    now: u64,
}

impl<'a> Reuse<'a> {
    fn new(prev: Option<&'a Zone>, algorithm: u8, keys: &[SigningKey], now: u64) -> Reuse<'a> {
        let same_keys = prev
            .map(|p| {
                keys.iter()
                    .filter(|k| p.signing_keys.contains(k))
                    .map(|k| (k.algorithm, k.tag))
                    .collect()
            })
            .unwrap_or_default();
        Reuse {
            prev,
            same_keys,
            algorithm,
            now,
        }
    }

    /// Among `sigs` (RRSIG RDATAs of an unchanged RRset), one `signer` made, or could have
    /// made: same type covered, algorithm, original TTL and key (RFC 4034 §3.1), with more
    /// than [`RENEW_LEFT_SECS`] left.
    fn find<'s>(
        &self,
        sigs: impl IntoIterator<Item = &'s [u8]>,
        rtype: u16,
        ttl: u32,
        signer: &Signer,
    ) -> Option<&'s [u8]> {
        let alg = self.algorithm;
        if !self.same_keys.contains(&(alg, signer.tag())) {
            return None;
        }
        sigs.into_iter().find(|s| {
            s.len() > 18
                && s[0..2] == rtype.to_be_bytes()
                && s[2] == alg
                && s[4..8] == ttl.to_be_bytes()
                && s[16..18] == signer.tag().to_be_bytes()
                && sig_expiration(s).is_some_and(|e| secs_left(e, self.now) > RENEW_LEFT_SECS)
        })
    }
}

/// The expiration field of an RRSIG RDATA.
fn sig_expiration(sig: &[u8]) -> Option<u32> {
    sig.get(8..12)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_be_bytes)
}

/// The signature that expires first, in serial arithmetic from `now`.
struct Oldest {
    now: u64,
    expiration: u32,
    left: u32,
}

impl Oldest {
    fn new(now: u64) -> Oldest {
        Oldest {
            now,
            expiration: 0,
            left: u32::MAX,
        }
    }

    fn see(&mut self, expiration: u32) {
        let left = secs_left(expiration, self.now);
        if left < self.left {
            self.left = left;
            self.expiration = expiration;
        }
    }

    fn see_sig(&mut self, sig: &[u8]) {
        if let Some(e) = sig_expiration(sig) {
            self.see(e);
        }
    }
}

/// All zones a node serves, found by longest suffix. Each zone is an `Arc`, so the next
/// snapshot's set shares every zone that did not change; and the set is in
/// [`ZONE_SHARDS`] shards, each an `Arc` too, so a publish that adds or replaces one zone
/// copies one shard, not the whole set (with 10,000 zones, one node's CPU per zone PUT
/// went from 5.75 to 2.95 ms with the shards, `benches/control/run.sh`). A look-up hashes
/// the name once, as a single map did: the hash picks the shard (by bits the tables do not
/// use) and the entry (`benches/lookup.rs` `lookup_10k_zones`: 0-5% faster than the map).
#[derive(Clone, Debug)]
pub struct ZoneSet {
    shards: Box<[Arc<HashTable<Arc<Zone>>>]>,
}

/// How many shards a [`ZoneSet`] has (a power of two).
pub const ZONE_SHARDS: usize = 64;

impl Default for ZoneSet {
    fn default() -> ZoneSet {
        ZoneSet {
            shards: (0..ZONE_SHARDS).map(|_| Arc::default()).collect(),
        }
    }
}

fn origin_hash(origin: &[u8]) -> u64 {
    FxBuildHasher.hash_one(origin)
}

/// A hash's shard: bits 32 and up, which a table uses neither for its position (the low
/// bits) nor for its tags (the top seven) until it has 2^32 entries.
fn shard_of(hash: u64) -> usize {
    (hash >> 32) as usize & (ZONE_SHARDS - 1)
}

impl ZoneSet {
    pub fn new(zones: impl IntoIterator<Item = Zone>) -> ZoneSet {
        let mut set = ZoneSet::default();
        for z in zones {
            set.insert(Arc::new(z));
        }
        set
    }

    /// Add or replace a zone (by its origin).
    pub fn insert(&mut self, zone: Arc<Zone>) {
        let hash = origin_hash(&zone.origin_wire);
        let shard = Arc::make_mut(&mut self.shards[shard_of(hash)]);
        let same = |z: &Arc<Zone>| z.origin_wire == zone.origin_wire;
        match shard.entry(hash, same, |z| origin_hash(&z.origin_wire)) {
            Entry::Occupied(mut e) => *e.get_mut() = zone,
            Entry::Vacant(e) => {
                e.insert(zone);
            }
        }
    }

    /// The zone with exactly this origin (lower-case wire form).
    pub fn get(&self, origin: &[u8]) -> Option<&Arc<Zone>> {
        let hash = origin_hash(origin);
        self.shards[shard_of(hash)].find(hash, |z| *z.origin_wire == *origin)
    }

    /// Remove the zone with this origin (lower-case wire form).
    pub fn remove(&mut self, origin: &[u8]) {
        if self.get(origin).is_none() {
            return; // no shard copied for nothing
        }
        let hash = origin_hash(origin);
        let shard = Arc::make_mut(&mut self.shards[shard_of(hash)]);
        if let Ok(e) = shard.find_entry(hash, |z| *z.origin_wire == *origin) {
            e.remove();
        }
    }

    /// The zone with the longest origin that `name` (lower-case wire form) is at or under.
    pub fn find(&self, name: &[u8]) -> Option<&Zone> {
        let mut rest = name;
        loop {
            if let Some(z) = self.get(rest) {
                return Some(&**z);
            }
            if rest.len() <= 1 {
                return None;
            }
            rest = parent(rest);
        }
    }

    /// The zone strictly above `origin` (for DS queries at a child apex we also serve).
    pub fn find_parent(&self, origin: &[u8]) -> Option<&Zone> {
        if origin.len() <= 1 {
            return None;
        }
        self.find(parent(origin))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Zone> {
        self.shards.iter().flat_map(|s| s.iter()).map(|z| &**z)
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.shards.iter().all(|s| s.is_empty())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("the zone has no SOA record at its origin")]
    NoSoa,
    #[error("{0} is outside the zone")]
    OutOfZone(String),
    #[error("service {0} conflicts with {1} in the zone")]
    ServiceConflict(String, &'static str),
    #[error("record for {0} cannot be encoded: {1}")]
    Encode(String, String),
    #[error("the zone is too large for the index (4 GiB of names and RDATA, 4 billion names, 65535 types at a name)")]
    TooLarge,
}

/// The wire form of a name, lower-cased (the index's key form).
pub fn wire_lower(name: &Name) -> Box<[u8]> {
    let mut out = Vec::with_capacity(name.len() + 2);
    push_wire(name, true, &mut out);
    out.into_boxed_slice()
}

/// The wire form of a name, case kept.
pub fn wire(name: &Name) -> Box<[u8]> {
    let mut out = Vec::with_capacity(name.len() + 2);
    push_wire(name, false, &mut out);
    out.into_boxed_slice()
}

/// Append the wire form of `name` (absolute) to `out`, lower-cased when `lower`.
pub fn push_wire(name: &Name, lower: bool, out: &mut Vec<u8>) {
    for label in name.iter() {
        out.push(label.len() as u8);
        if lower {
            out.extend(label.iter().map(u8::to_ascii_lowercase));
        } else {
            out.extend_from_slice(label);
        }
    }
    out.push(0);
}

/// The parent of a non-root wire name (drops the first label).
pub fn parent(name: &[u8]) -> &[u8] {
    let skip = 1 + name[0] as usize;
    &name[skip.min(name.len() - 1)..]
}

/// Whether `name` is `zone` or below it (both lower-case wire names).
pub fn is_subdomain(name: &[u8], zone: &[u8]) -> bool {
    let mut rest = name;
    loop {
        if rest.len() < zone.len() {
            return false;
        }
        if rest.len() == zone.len() {
            return rest == zone;
        }
        rest = parent(rest);
    }
}

/// Why a service could not sit at `name` in this zone file: a CNAME or address records at
/// the name, or a delegation at or above it (the service would never be reached). `None`
/// when it can. One pass over the records, without building the index: what the state
/// machine checks before it accepts a service or a zone text.
pub fn service_conflict(file: &ZoneFile, name: &Name) -> Option<&'static str> {
    let name = wire_lower(name);
    let origin = wire_lower(&file.origin);
    for rr in file.rrs() {
        if rr.owner == &name[..] {
            match rr.rtype {
                rtype::CNAME => return Some("a CNAME"),
                rtype::A | rtype::AAAA => return Some("A or AAAA records"),
                _ => {}
            }
        }
        if rr.rtype == rtype::NS && rr.owner != &origin[..] && is_subdomain(&name, rr.owner) {
            return Some("a delegation at or above it");
        }
    }
    None
}

fn lower_name(n: &[u8]) -> Vec<u8> {
    n.iter().map(u8::to_ascii_lowercase).collect()
}

/// An RDATA in DNSSEC canonical form (RFC 4034 §6.2: names of the types it lists
/// lower-cased, uncompressed).
pub fn canonical(rt: u16, r: Rdata<'_>) -> Vec<u8> {
    match r {
        Rdata::Name(n) => lower_name(n),
        Rdata::Mx(p, n) => {
            let mut v = p.to_be_bytes().to_vec();
            v.extend(lower_name(n));
            v
        }
        Rdata::Soa(m, r, c) => {
            let mut v = lower_name(m);
            v.extend(lower_name(r));
            v.extend_from_slice(c);
            v
        }
        Rdata::Raw(raw) if rt == rtype::SRV && raw.len() > 6 => {
            let mut v = raw[..6].to_vec();
            v.extend(lower_name(&raw[6..]));
            v
        }
        Rdata::Raw(raw) => raw.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(text: &str, services: &[(Box<[u8]>, u32)]) -> Result<Zone, IndexError> {
        let origin: Name = "example.com.".parse().expect("name");
        let file = crate::zone::parse_zone(text, "z.zone", &origin).expect("zone");
        Zone::build(&file, services)
    }

    fn w(name: &str) -> Box<[u8]> {
        wire_lower(&name.parse::<Name>().expect("name"))
    }

    const ZONE: &str = "$TTL 300\n@ IN SOA ns1 h 7 2 3 4 5\n@ IN NS ns1\nns1 IN A 192.0.2.1\n\
        www 60 IN A 192.0.2.2\nwww 30 IN A 192.0.2.3\nwww IN A 192.0.2.2\nWWW IN AAAA ::1\n\
        mail IN MX 10 Mx.Example.com.\nalias IN CNAME WWW\na.b.c IN TXT \"deep\"\n\
        *.wild IN A 192.0.2.9\nsub IN NS ns.sub\nns.sub IN A 192.0.2.4\n\
        _sip._tcp IN SRV 1 2 5060 ns1\n";

    #[test]
    fn rrsets_keep_file_order_drop_duplicates_and_take_the_lowest_ttl() {
        let z = build(ZONE, &[]).expect("build");
        let www = z.node(&w("www.example.com.")).expect("www");
        let types: Vec<u16> = www.rrsets().map(|s| s.rtype()).collect();
        assert_eq!(types, [rtype::A, rtype::AAAA]);
        let a = www.get(rtype::A).expect("A");
        assert_eq!(a.ttl(), 30, "RFC 2181 §5.2: the lowest TTL");
        let rdatas: Vec<Rdata<'_>> = a.rdatas().collect();
        assert_eq!(
            rdatas,
            [Rdata::Raw(&[192, 0, 2, 2]), Rdata::Raw(&[192, 0, 2, 3])]
        );
        assert!(www.get(rtype::MX).is_none());
    }

    #[test]
    fn names_in_rdata_keep_their_case_and_shape() {
        let z = build(ZONE, &[]).expect("build");
        let mx = z
            .node(&w("mail.example.com."))
            .and_then(|n| n.get(rtype::MX));
        let mx: Vec<Rdata<'_>> = mx.expect("MX").rdatas().collect();
        let [Rdata::Mx(10, n)] = mx[..] else {
            panic!("{mx:?}");
        };
        assert!(n.eq_ignore_ascii_case(b"\x02mx\x07example\x03com\x00"));
        let cname = z
            .node(&w("alias.example.com."))
            .and_then(|n| n.get(rtype::CNAME));
        let cname: Vec<Rdata<'_>> = cname.expect("CNAME").rdatas().collect();
        let [Rdata::Name(n)] = cname[..] else {
            panic!("{cname:?}");
        };
        assert!(n.eq_ignore_ascii_case(b"\x03www\x07example\x03com\x00"));
        let soa: Vec<Rdata<'_>> = z.soa().rdatas().collect();
        let [Rdata::Soa(m, r, c)] = soa[..] else {
            panic!("{soa:?}");
        };
        assert_eq!(
            (m, r),
            (
                &b"\x03ns1\x07example\x03com\x00"[..],
                &b"\x01h\x07example\x03com\x00"[..]
            )
        );
        assert_eq!(c[0..4], 7u32.to_be_bytes());
        let srv = z
            .node(&w("_sip._tcp.example.com."))
            .and_then(|n| n.get(rtype::SRV));
        let targets: Vec<&[u8]> = srv.expect("SRV").targets().collect();
        assert_eq!(targets, [&b"\x03ns1\x07example\x03com\x00"[..]]);
        let z2 = z.with_serial(42);
        let [Rdata::Soa(_, _, c)] = z2.soa().rdatas().collect::<Vec<_>>()[..] else {
            panic!("soa");
        };
        assert_eq!(c[0..4], 42u32.to_be_bytes());
        assert_eq!(z2.serial(), 42);
    }

    #[test]
    fn empty_non_terminals_cuts_and_wildcards_are_worked_out() {
        let z = build(ZONE, &[]).expect("build");
        for ent in [
            "b.c.example.com.",
            "c.example.com.",
            "wild.example.com.",
            "_tcp.example.com.",
        ] {
            assert!(z.node(&w(ent)).expect(ent).is_empty(), "{ent}");
        }
        assert!(z.node(&w("example.com.")).is_some_and(|n| !n.is_cut()));
        assert!(z.node(&w("sub.example.com.")).is_some_and(|n| n.is_cut()));
        assert!(z
            .node(&w("wild.example.com."))
            .is_some_and(|n| n.has_wildcard_child()));
        assert!(z
            .node(&w("www.example.com."))
            .is_some_and(|n| !n.has_wildcard_child()));
        assert!(z.node(&w("nope.example.com.")).is_none());
        // Every name and empty non-terminal once.
        assert_eq!(z.len(), 14);
    }

    #[test]
    fn services_sit_at_names_without_address_records_or_cnames() {
        let at = |n: &str| vec![(w(n), 3u32)];
        let z = build(ZONE, &at("geo.example.com.")).expect("build");
        assert_eq!(
            z.node(&w("geo.example.com.")).and_then(|n| n.service()),
            Some(3)
        );
        assert_eq!(
            z.node(&w("www.example.com.")).and_then(|n| n.service()),
            None
        );
        for (name, why) in [
            ("www.example.com.", "A or AAAA records"),
            ("alias.example.com.", "a CNAME"),
            ("x.sub.example.com.", "a delegation at or above it"),
        ] {
            match build(ZONE, &at(name)) {
                Err(IndexError::ServiceConflict(_, w)) => assert_eq!(w, why, "{name}"),
                other => panic!("{name}: {other:?}"),
            }
        }
        assert!(matches!(
            build(ZONE, &at("www.example.net.")),
            Err(IndexError::OutOfZone(_))
        ));
    }

    /// Issue 9: the index of an A/CNAME zone costs well under 80 bytes per record (its
    /// arrays and arenas at their capacity, the hash table's allocation included).
    #[test]
    fn index_memory_is_per_record_not_per_allocation() {
        let (n, m) = (100_000usize, 10_000usize);
        let mut text =
            String::from("$TTL 300\n@ IN SOA ns1 h 1 2 3 4 5\n@ IN NS ns1\nns1 IN A 192.0.2.1\n");
        for i in 0..n {
            text.push_str(&format!(
                "h{i} IN A 10.{}.{}.{}\n",
                (i >> 16) & 255,
                (i >> 8) & 255,
                i & 255
            ));
        }
        for i in 0..m {
            text.push_str(&format!("c{i} IN CNAME h{}\n", (i * 7) % n));
        }
        let z = build(&text, &[]).expect("build");
        let per_record = z.index_bytes() / (n + m);
        eprintln!("index: {} bytes, {per_record} per record", z.index_bytes());
        assert!(per_record <= 80, "{per_record} bytes per record");
        assert!(z
            .node(&w("h99999.example.com."))
            .and_then(|n| n.get(rtype::A))
            .is_some());
    }

    /// A set of many zones: each found by longest suffix; a copy that replaces, adds or
    /// removes one zone shares every other shard with the original (a publish copies one
    /// shard of zones, not all of them).
    #[test]
    fn a_zone_set_change_copies_one_shard() {
        let zone = |origin: &str| {
            let name: Name = origin.parse().expect("name");
            let text = "@ 300 IN SOA ns1 h 1 2 3 4 5\n@ IN NS ns1\nns1 IN A 192.0.2.1\n";
            let file = crate::zone::parse_zone(text, "z.zone", &name).expect("zone");
            Zone::build(&file, &[]).expect("index")
        };
        let set = ZoneSet::new((0..1000).map(|i| zone(&format!("z{i}.example."))));
        assert_eq!(set.len(), 1000);
        let found = set
            .find(&w("www.z7.example."))
            .map(|z| z.origin().to_string());
        assert_eq!(found.as_deref(), Some("z7.example."));
        assert!(set.find(&w("z7.example.org.")).is_none());
        let shared = |a: &ZoneSet, b: &ZoneSet| {
            let same = a.shards.iter().zip(b.shards.iter());
            same.filter(|(x, y)| Arc::ptr_eq(x, y)).count()
        };
        let mut next = set.clone();
        next.insert(Arc::new(zone("z7.example.")));
        assert_eq!((next.len(), shared(&set, &next)), (1000, ZONE_SHARDS - 1));
        let mut next = set.clone();
        next.insert(Arc::new(zone("new.example.")));
        assert_eq!((next.len(), shared(&set, &next)), (1001, ZONE_SHARDS - 1));
        next.remove(&w("z7.example."));
        next.remove(&w("absent.example."));
        assert_eq!(next.len(), 1000);
        assert!(next.get(&w("z7.example.")).is_none() && set.get(&w("z7.example.")).is_some());
        assert_eq!(next.iter().count(), 1000);
    }
}
