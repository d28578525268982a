//! The zone index: every name of every zone, keyed by its lower-case wire form, with the
//! delegation cuts, CNAMEs and wildcards worked out when the index is built, so that a query
//! is a few hash look-ups over borrowed byte slices and never allocates.

use std::sync::Arc;

use rustc_hash::FxHashMap as HashMap;

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
/// is its final wire form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rdata {
    /// Ready wire bytes (A, AAAA, TXT, SRV, CAA, …).
    Raw(Box<[u8]>),
    /// NS, CNAME, PTR: one compressible name (uncompressed wire form, original case).
    Name(Box<[u8]>),
    /// MX: preference, then a compressible name.
    Mx(u16, Box<[u8]>),
    /// SOA: two compressible names and the 20 bytes of counters.
    Soa(Box<[u8]>, Box<[u8]>, [u8; 20]),
}

/// All records of one type at one name.
#[derive(Clone, Debug)]
pub struct RrSet {
    pub rtype: u16,
    pub ttl: u32,
    pub rdatas: Vec<Rdata>,
    /// The RRSIG RDATA over this RRset at its own owner, in a signed zone (empty
    /// otherwise, and for glue and delegation NS, which are not signed).
    pub sigs: Vec<Box<[u8]>>,
    /// At a wildcard owner of a signed zone: the RDATAs in canonical form and order, so an
    /// answer made from it is signed as the query name without an allocation.
    pub canon: Box<[Box<[u8]>]>,
}

impl RrSet {
    /// The name in each RDATA that may need address records in the additional section
    /// (NS, MX and SRV targets).
    pub fn targets(&self) -> impl Iterator<Item = &[u8]> {
        self.rdatas
            .iter()
            .filter_map(move |r| match (self.rtype, r) {
                (rtype::NS, Rdata::Name(n)) | (_, Rdata::Mx(_, n)) => Some(&n[..]),
                (rtype::SRV, Rdata::Raw(raw)) if raw.len() > 6 => Some(&raw[6..]),
                _ => None,
            })
    }
}

/// One name in a zone: its RRsets (sorted by type) and what the index worked out about it.
#[derive(Clone, Debug, Default)]
pub struct Node {
    pub rrsets: Vec<RrSet>,
    /// NS records below the apex: a delegation; the node's other data (but DS) is glue.
    pub is_cut: bool,
    /// `*.<this name>` exists.
    pub has_wildcard_child: bool,
    /// The service at this name (an index into the snapshot's services), whose A and AAAA
    /// answers come from a policy rather than from records.
    pub service: Option<u32>,
    /// In a signed zone: the NSEC at this name that denies the types it lacks (RFC 9824
    /// compact form, next name `\000.<name>`), with its RRSIG.
    pub nsec: Option<Box<SignedNsec>>,
}

/// A ready NSEC RDATA and its RRSIG RDATA.
#[derive(Clone, Debug)]
pub struct SignedNsec {
    pub rdata: Box<[u8]>,
    pub sig: Box<[u8]>,
}

impl Node {
    pub fn get(&self, rtype: u16) -> Option<&RrSet> {
        self.rrsets.iter().find(|s| s.rtype == rtype)
    }

    /// An empty non-terminal: a name that exists only because names exist below it.
    pub fn is_empty(&self) -> bool {
        self.rrsets.is_empty()
    }
}

/// One zone, ready to answer from.
#[derive(Debug)]
pub struct Zone {
    origin: Name,
    origin_wire: Box<[u8]>,
    /// Shared, so that a new serial ([`Zone::with_serial`]) costs no re-index.
    nodes: Arc<HashMap<Box<[u8]>, Node>>,
    /// The apex SOA as published: its serial may differ from the text's (the cluster's
    /// serial); answers take the SOA from here, never from the apex node.
    soa: RrSet,
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
    /// in it (lower-case wire name, service index).
    pub fn build(file: &ZoneFile, services: &[(Box<[u8]>, u32)]) -> Result<Zone, IndexError> {
        let origin = file.origin.to_lowercase();
        let origin_wire = wire_lower(&origin);
        let mut nodes: HashMap<Box<[u8]>, Node> = HashMap::default();
        let mut soa_fields = None;
        for rr in file.rrs() {
            let owner: Box<[u8]> = rr.owner.into();
            if !is_subdomain(&owner, &origin_wire) {
                return Err(IndexError::OutOfZone(crate::zone::display(rr.owner)));
            }
            let rdata = rr_rdata(&rr)?;
            if let Rdata::Soa(_, _, c) = &rdata {
                let field = |i: usize| u32::from_be_bytes([c[i], c[i + 1], c[i + 2], c[i + 3]]);
                soa_fields = Some((rr.ttl, field(16), field(0)));
            }
            let rt = rr.rtype;
            let node = nodes.entry(owner).or_default();
            match node.rrsets.iter_mut().find(|s| s.rtype == rt) {
                // RFC 2181 §5.2: one TTL per RRset; the lowest wins, as most servers do.
                Some(set) => {
                    set.ttl = set.ttl.min(rr.ttl);
                    if !set.rdatas.contains(&rdata) {
                        set.rdatas.push(rdata);
                    }
                }
                None => node.rrsets.push(RrSet {
                    rtype: rt,
                    ttl: rr.ttl,
                    rdatas: vec![rdata],
                    sigs: Vec::new(),
                    canon: Box::new([]),
                }),
            }
        }
        for (name, idx) in services {
            if !is_subdomain(name, &origin_wire) {
                return Err(IndexError::OutOfZone(crate::zone::display(name)));
            }
            let node = nodes.entry(name.clone()).or_default();
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
            node.service = Some(*idx);
        }
        let (soa_ttl, minimum, serial) = soa_fields.ok_or(IndexError::NoSoa)?;
        let soa = nodes
            .get(&origin_wire)
            .and_then(|n| n.get(rtype::SOA))
            .cloned()
            .ok_or(IndexError::NoSoa)?;

        // Empty non-terminals: every ancestor of a name, up to the origin, exists. Only the
        // missing ones are collected (not every name: a zone may have a million).
        let mut missing: rustc_hash::FxHashSet<Box<[u8]>> = Default::default();
        let mut wildcard_parents: Vec<Box<[u8]>> = Vec::new();
        for name in nodes.keys() {
            if name.len() > origin_wire.len() && name.starts_with(b"\x01*") {
                wildcard_parents.push(parent(name).into());
            }
            let mut rest: &[u8] = name;
            while rest.len() > origin_wire.len() {
                rest = parent(rest);
                if nodes.contains_key(rest) || !missing.insert(rest.into()) {
                    break;
                }
            }
        }
        for name in missing {
            nodes.insert(name, Node::default());
        }
        for name in wildcard_parents {
            if let Some(n) = nodes.get_mut(&name) {
                n.has_wildcard_child = true;
            }
        }
        for (name, node) in nodes.iter_mut() {
            node.rrsets.sort_by_key(|s| s.rtype);
            // Most names hold one RRset of one record: no spare capacity kept per name.
            node.rrsets.shrink_to_fit();
            for set in node.rrsets.iter_mut() {
                set.rdatas.shrink_to_fit();
            }
            node.is_cut = name[..] != origin_wire[..] && node.get(rtype::NS).is_some();
        }
        nodes.shrink_to_fit();
        // A service below a delegation would never be reached.
        for (name, _) in services {
            let mut rest: &[u8] = name;
            while rest.len() > origin_wire.len() {
                if nodes.get(rest).is_some_and(|n| n.is_cut) {
                    return Err(IndexError::ServiceConflict(
                        crate::zone::display(name),
                        "a delegation at or above it",
                    ));
                }
                rest = parent(rest);
            }
        }
        Ok(Zone {
            origin,
            origin_wire,
            nodes: Arc::new(nodes),
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
        let fail =
            |e: &dyn std::fmt::Display| IndexError::Encode(self.origin.to_string(), e.to_string());
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
        let mut nodes = (*self.nodes).clone();
        // The apex's key RRsets.
        let dnskeys: Vec<Rdata> = keys
            .published()
            .map(|k| Rdata::Raw(k.dnskey_wire(alg).into()))
            .collect();
        // CDS and CDNSKEY (RFC 7344) name the keys the parent should point at from now on.
        let cdnskeys: Vec<Rdata> = keys
            .cds_keys()
            .map(|k| Rdata::Raw(k.dnskey_wire(alg).into()))
            .collect();
        let mut cds = Vec::new();
        for k in keys.cds_keys() {
            let ds = k.ds(alg, &self.origin).map_err(|e| fail(&e))?;
            cds.push(Rdata::Raw(dnssec::ds_wire(&ds).into()));
        }
        if let Some(apex) = nodes.get_mut(&self.origin_wire) {
            for (rtype, rdatas) in [
                (types::DNSKEY, dnskeys),
                (types::CDS, cds),
                (types::CDNSKEY, cdnskeys),
            ] {
                apex.rrsets.retain(|s| s.rtype != rtype);
                apex.rrsets.push(RrSet {
                    rtype,
                    ttl: key_ttl,
                    rdatas,
                    sigs: Vec::new(),
                    canon: Box::new([]),
                });
            }
            apex.rrsets.sort_by_key(|s| s.rtype);
        }
        let neg_ttl = self.negative_ttl;
        let occluded: rustc_hash::FxHashSet<Box<[u8]>> = nodes
            .keys()
            .filter(|n| below_cut(&nodes, n, &self.origin_wire))
            .cloned()
            .collect();
        for (name, node) in nodes.iter_mut() {
            if occluded.contains(name) {
                continue; // glue: not signed (RFC 4035 §2.2)
            }
            let wild = name.starts_with(b"\x01*");
            let apex = name[..] == self.origin_wire[..];
            let prev_node = reuse.prev.and_then(|p| p.nodes.get(name));
            for set in node.rrsets.iter_mut() {
                set.sigs.clear();
                if node.is_cut && set.rtype != rtype::DS {
                    continue; // delegation NS (and glue at the cut) are not signed
                }
                if apex && set.rtype == rtype::SOA {
                    continue; // answers take the SOA (and its RRSIG) from `self.soa`
                }
                // The last build's RRset, when it is exactly this one.
                let old = prev_node
                    .and_then(|n| n.get(set.rtype))
                    .filter(|o| o.ttl == set.ttl && o.rdatas == set.rdatas);
                let canon = |set: &RrSet| -> Vec<Vec<u8>> {
                    set.rdatas.iter().map(|r| canonical(set.rtype, r)).collect()
                };
                if wild {
                    let mut sorted = canon(set);
                    sorted.sort();
                    sorted.dedup();
                    set.canon = sorted.into_iter().map(Vec::into_boxed_slice).collect();
                }
                let is_key_set =
                    apex && matches!(set.rtype, types::DNSKEY | types::CDS | types::CDNSKEY);
                let signers: &[Signer] = if is_key_set {
                    &key_signers
                } else {
                    std::slice::from_ref(&signer)
                };
                for s in signers {
                    let kept = old.and_then(|o| reuse.find(&o.sigs, set.rtype, set.ttl, s));
                    let sig = match kept {
                        Some(sig) => {
                            stats.kept += 1;
                            Box::from(sig)
                        }
                        None => {
                            stats.made += 1;
                            s.sign(name, set.rtype, set.ttl, canon(set))
                                .map_err(|e| fail(&e))?
                        }
                    };
                    oldest.see_sig(&sig);
                    set.sigs.push(sig);
                }
            }
            // The NSEC that denies what this name lacks: its types, RRSIG and NSEC.
            let mut types: Vec<u16> = node.rrsets.iter().map(|s| s.rtype).collect();
            if node.is_cut {
                types.retain(|&t| t == rtype::NS || t == rtype::DS);
            }
            types.extend([types::RRSIG, types::NSEC]);
            let mut rdata = Vec::with_capacity(name.len() + 40);
            rdata.extend_from_slice(b"\x01\x00");
            rdata.extend_from_slice(name);
            dnssec::type_bitmap(&types, &mut rdata);
            let kept = prev_node
                .and_then(|n| n.nsec.as_deref())
                .filter(|n| n.rdata[..] == rdata[..])
                .and_then(|n| {
                    reuse.find(std::slice::from_ref(&n.sig), types::NSEC, neg_ttl, &signer)
                });
            let sig = match kept {
                Some(sig) => {
                    stats.kept += 1;
                    Box::from(sig)
                }
                None => {
                    stats.made += 1;
                    signer
                        .sign(name, types::NSEC, neg_ttl, vec![rdata.clone()])
                        .map_err(|e| fail(&e))?
                }
            };
            oldest.see_sig(&sig);
            node.nsec = Some(Box::new(SignedNsec {
                rdata: rdata.into_boxed_slice(),
                sig,
            }));
        }
        let mut soa = self.soa.clone();
        let kept = reuse
            .prev
            .map(|p| &p.soa)
            .filter(|o| o.ttl == soa.ttl && o.rdatas == soa.rdatas)
            .and_then(|o| reuse.find(&o.sigs, rtype::SOA, soa.ttl, &signer));
        let sig = match kept {
            Some(sig) => {
                stats.kept += 1;
                Box::from(sig)
            }
            None => {
                stats.made += 1;
                let canon = soa
                    .rdatas
                    .iter()
                    .map(|r| canonical(rtype::SOA, r))
                    .collect();
                signer
                    .sign(&self.origin_wire, rtype::SOA, soa.ttl, canon)
                    .map_err(|e| fail(&e))?
            }
        };
        oldest.see_sig(&sig);
        soa.sigs = vec![sig];
        self.soa = soa;
        self.nodes = Arc::new(nodes);
        self.signer = Some(Arc::new(signer));
        self.signing_keys = signing_keys;
        self.oldest_expiration = Some(oldest.expiration);
        self.sig_generation = crate::dns::sigcache::next_generation();
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
        for r in &mut soa.rdatas {
            if let Rdata::Soa(_, _, counters) = r {
                counters[0..4].copy_from_slice(&serial.to_be_bytes());
            }
        }
        // The SOA changed: in a signed zone its RRSIG is made again (one signature).
        if let Some(signer) = &self.signer {
            let canon = soa
                .rdatas
                .iter()
                .map(|r| canonical(rtype::SOA, r))
                .collect();
            match signer.sign(&self.origin_wire, rtype::SOA, soa.ttl, canon) {
                Ok(sig) => soa.sigs = vec![sig],
                Err(e) => {
                    tracing::error!(zone = %self.origin, error = %e, "the SOA cannot be signed")
                }
            }
        }
        Zone {
            origin: self.origin.clone(),
            origin_wire: self.origin_wire.clone(),
            nodes: self.nodes.clone(),
            soa,
            negative_ttl: self.negative_ttl,
            serial,
            signer: self.signer.clone(),
            signing_keys: self.signing_keys.clone(),
            oldest_expiration: self.oldest_expiration,
            sig_generation: self.sig_generation,
        }
    }

    /// The apex SOA RRset.
    pub fn soa(&self) -> &RrSet {
        &self.soa
    }

    /// RFC 2308 negative-answer TTL.
    pub fn negative_ttl(&self) -> u32 {
        self.negative_ttl
    }

    /// The node at a lower-case wire name, if the name exists (empty non-terminals included).
    pub fn node(&self, name: &[u8]) -> Option<&Node> {
        self.nodes.get(name)
    }

    /// Number of names (empty non-terminals included).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
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
        sigs: &'s [Box<[u8]>],
        rtype: u16,
        ttl: u32,
        signer: &Signer,
    ) -> Option<&'s [u8]> {
        let alg = self.algorithm;
        if !self.same_keys.contains(&(alg, signer.tag())) {
            return None;
        }
        sigs.iter().map(|s| &s[..]).find(|s| {
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
/// snapshot's set shares every zone that did not change.
#[derive(Clone, Debug, Default)]
pub struct ZoneSet {
    zones: HashMap<Arc<[u8]>, Arc<Zone>>,
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
        self.zones.insert(zone.origin_wire.clone().into(), zone);
    }

    /// The zone with exactly this origin (lower-case wire form).
    pub fn get(&self, origin: &[u8]) -> Option<&Arc<Zone>> {
        self.zones.get(origin)
    }

    /// Remove the zone with this origin (lower-case wire form).
    pub fn remove(&mut self, origin: &[u8]) {
        self.zones.remove(origin);
    }

    /// The zone with the longest origin that `name` (lower-case wire form) is at or under.
    pub fn find(&self, name: &[u8]) -> Option<&Zone> {
        let mut rest = name;
        loop {
            if let Some(z) = self.zones.get(rest) {
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
        self.zones.values().map(|z| &**z)
    }

    pub fn len(&self) -> usize {
        self.zones.len()
    }

    pub fn is_empty(&self) -> bool {
        self.zones.is_empty()
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
}

/// The wire form of a name, lower-cased (the index's key form).
pub fn wire_lower(name: &Name) -> Box<[u8]> {
    let mut out = Vec::with_capacity(name.len() + 2);
    for label in name.iter() {
        out.push(label.len() as u8);
        out.extend(label.iter().map(u8::to_ascii_lowercase));
    }
    out.push(0);
    out.into_boxed_slice()
}

/// The wire form of a name, case kept.
pub fn wire(name: &Name) -> Box<[u8]> {
    let mut out = Vec::with_capacity(name.len() + 2);
    for label in name.iter() {
        out.push(label.len() as u8);
        out.extend_from_slice(label);
    }
    out.push(0);
    out.into_boxed_slice()
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

/// A stored record's RDATA prepared for the encoder: NS, CNAME and PTR RDATA is one name,
/// MX a preference and a name, SOA two names and 20 bytes of counters; the rest is raw.
fn rr_rdata(rr: &super::Rr<'_>) -> Result<Rdata, IndexError> {
    use super::records::name_len;
    let d = rr.rdata;
    let bad = || IndexError::Encode(crate::zone::display(rr.owner), "malformed RDATA".into());
    Ok(match rr.rtype {
        rtype::NS | rtype::CNAME | rtype::PTR => Rdata::Name(d.into()),
        rtype::MX => {
            let (pref, name) = d.split_first_chunk::<2>().ok_or_else(bad)?;
            Rdata::Mx(u16::from_be_bytes(*pref), name.into())
        }
        rtype::SOA => {
            let m = name_len(d);
            let r = m + name_len(&d[m..]);
            let counters: [u8; 20] = d[r..].try_into().map_err(|_| bad())?;
            Rdata::Soa(d[..m].into(), d[m..r].into(), counters)
        }
        _ => Rdata::Raw(d.into()),
    })
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

/// Whether `name` is strictly below a delegation of the zone (its data is glue).
fn below_cut(nodes: &HashMap<Box<[u8]>, Node>, name: &[u8], origin: &[u8]) -> bool {
    let mut rest = name;
    while rest.len() > origin.len() {
        rest = parent(rest);
        if rest.len() > origin.len() && nodes.get(rest).is_some_and(|n| n.is_cut) {
            return true;
        }
    }
    false
}

fn lower_name(n: &[u8]) -> Vec<u8> {
    n.iter().map(u8::to_ascii_lowercase).collect()
}

/// An RDATA in DNSSEC canonical form (RFC 4034 §6.2: names of the types it lists
/// lower-cased, uncompressed).
pub fn canonical(rt: u16, r: &Rdata) -> Vec<u8> {
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
