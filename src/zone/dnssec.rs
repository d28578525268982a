//! DNSSEC for a zone: its keys as the cluster stores them (made once by the node that takes
//! the request, then replicated), their public forms (DNSKEY, DS, CDS, CDNSKEY), and the
//! signer that makes RRSIG RDATA from RRsets in wire form — at index build time for every
//! static RRset, and per answer for what cannot be made ahead (compact denial).
//!
//! Keys are made with hickory's ring-backed generators and their DNSKEY, key tag and DS
//! come from hickory's rdata types. Signing calls ring directly on a to-be-signed buffer we
//! lay out ourselves (RFC 4034 §3.1.8.1): with a stack buffer and ring's fixed-size
//! signatures a per-answer signature allocates nothing.

use std::fmt;

use base64::Engine as _;
use hickory_proto::dnssec::crypto::{EcdsaSigningKey, Ed25519SigningKey};
use hickory_proto::dnssec::rdata::{DNSKEY, DS};
use hickory_proto::dnssec::{
    Algorithm as HAlg, DigestType, PublicKey as _, PublicKeyBuf, SigningKey as _,
};
use hickory_proto::rr::Name;
use ring::rand::SystemRandom;
use ring::signature::{
    EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING,
};
use serde::{Deserialize, Serialize};

/// The RRSIG, NSEC, DNSKEY, CDS, CDNSKEY and NXNAME type numbers.
pub mod types {
    pub const RRSIG: u16 = 46;
    pub const NSEC: u16 = 47;
    pub const DNSKEY: u16 = 48;
    pub const CDS: u16 = 59;
    pub const CDNSKEY: u16 = 60;
    /// RFC 9824: the pseudo-type that marks a name that does not exist.
    pub const NXNAME: u16 = 128;
}

/// How long before now a signature starts to hold (clock skew between us and resolvers).
pub const INCEPTION_BACK_SECS: u32 = 3600;
/// How long a signature holds from its making: 14 days (at least 7 are asked for; they are
/// remade when a quarter is left).
pub const VALIDITY_SECS: u32 = 14 * 24 * 3600;
/// The TTL of the DNSKEY, CDS and CDNSKEY RRsets: the zone's SOA TTL (as Knot's default
/// `dnskey-ttl`), so a rollover's waits follow the zone's own TTLs.
pub fn dnskey_ttl(soa_ttl: u32) -> u32 {
    soa_ttl
}

/// What a rollover step waits beyond a TTL: the time a change takes to be published on every
/// node (DESIGN.md: within 5 s), RFC 7583's propagation delay.
pub const PROPAGATION_MS: u64 = 5_000;

/// Why keys could not be made or used.
#[derive(Debug, thiserror::Error)]
pub enum DnssecError {
    #[error("cannot generate a {0} key: {1}")]
    Generate(&'static str, String),
    #[error("a stored {0} key does not load: {1}")]
    BadKey(&'static str, String),
    #[error("the RRset at {0} is too large to sign")]
    TooLarge(String),
}

/// Why a rollover, a rollover step or `ds-seen` does not apply to a zone's keys.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RollError {
    /// A roll of that role is under way, or the step is not (or no longer) due.
    #[error("{0}")]
    Conflict(String),
    /// The request does not fit the zone's keys (a `csk` roll in a KSK+ZSK zone).
    #[error("{0}")]
    Invalid(String),
}

/// A signing algorithm we offer (RFC 8624 recommends both).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Algorithm {
    /// 13, the default.
    #[serde(rename = "ECDSAP256SHA256")]
    EcdsaP256Sha256,
    /// 15.
    #[serde(rename = "ED25519")]
    Ed25519,
}

impl Algorithm {
    pub fn number(self) -> u8 {
        match self {
            Algorithm::EcdsaP256Sha256 => 13,
            Algorithm::Ed25519 => 15,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Algorithm::EcdsaP256Sha256 => "ECDSAP256SHA256",
            Algorithm::Ed25519 => "ED25519",
        }
    }

    fn hickory(self) -> HAlg {
        match self {
            Algorithm::EcdsaP256Sha256 => HAlg::ECDSAP256SHA256,
            Algorithm::Ed25519 => HAlg::ED25519,
        }
    }
}

/// What a key does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Csk,
    Ksk,
    Zsk,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Csk => "csk",
            Role::Ksk => "ksk",
            Role::Zsk => "zsk",
        }
    }

    /// DNSKEY flags: zone key, plus secure entry point for a KSK or CSK (RFC 4034 §2.1.1).
    pub fn flags(self) -> u16 {
        match self {
            Role::Csk | Role::Ksk => 257,
            Role::Zsk => 256,
        }
    }
}

/// Where a key is in its life (RFC 6781 §4.1.1.1 pre-publication): `published` in the
/// DNSKEY RRset without signing zone data, `active` signing it, `retired` still in the
/// DNSKEY RRset (signatures it made may be cached) but no longer signing zone data. A key
/// leaves the list (and the DNSKEY RRset) at the end of its roll.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyState {
    Published,
    Active,
    Retired,
}

/// The zone's key layout, as `PUT .../dnssec` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// One combined signing key (flags 257) signs everything.
    Csk,
    /// A KSK (257) signs the DNSKEY, CDS and CDNSKEY RRsets, a ZSK (256) the rest.
    KskZsk,
}

impl Layout {
    pub fn parse(s: &str) -> Option<Layout> {
        match s {
            "csk" => Some(Layout::Csk),
            "ksk+zsk" => Some(Layout::KskZsk),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Layout::Csk => "csk",
            Layout::KskZsk => "ksk+zsk",
        }
    }
}

/// An automatic rollover step, proposed by the leader when due and checked again when
/// applied (so every node applies the same).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    /// The published key `tag` starts signing; the key it replaces retires.
    Activate { tag: u16 },
    /// The retired key `tag` leaves the DNSKEY RRset (its roll is over).
    Remove { tag: u16 },
}

/// The TTLs a zone's rollover waits for, from the zone itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timings {
    /// The DNSKEY RRset's TTL ([`dnskey_ttl`]).
    pub dnskey_ttl: u32,
    /// The largest TTL of anything a zone-data key signs: every record, every service's
    /// answers, the negative TTL, the DNSKEY RRset.
    pub max_ttl: u32,
}

/// A private key (PKCS#8 DER). Base64 in the Raft state and the store; never in a `Debug`
/// line, an API body, an export, a metric or `explain`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PrivateKey(Box<[u8]>);

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(<redacted>)")
    }
}

impl From<PrivateKey> for String {
    fn from(k: PrivateKey) -> String {
        base64::engine::general_purpose::STANDARD.encode(&k.0)
    }
}

impl TryFrom<String> for PrivateKey {
    type Error = String;
    fn try_from(s: String) -> Result<PrivateKey, String> {
        base64::engine::general_purpose::STANDARD
            .decode(s.as_bytes())
            .map(|b| PrivateKey(b.into_boxed_slice()))
            .map_err(|e| format!("a private key is base64: {e}"))
    }
}

/// One key of a zone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZoneKey {
    pub tag: u16,
    pub flags: u16,
    pub role: Role,
    pub state: KeyState,
    /// The DNSKEY public key field (base64 in JSON).
    #[serde(with = "b64")]
    pub public: Vec<u8>,
    pub private: PrivateKey,
    /// When the key entered `state` (ms since the epoch: the committed entry's time, never
    /// a node's clock). 0 in keys stored before rollover existed.
    #[serde(default)]
    pub since_ms: u64,
    /// During a roll, on the new key: the tag of the key it replaces (cleared when that
    /// one leaves).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces: Option<u16>,
    /// On a new KSK or CSK: the parent's DS for it is not confirmed yet (`ds-seen`); the
    /// key it replaces stays until it is.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub awaiting_ds: bool,
}

mod b64 {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s.as_bytes())
            .map_err(serde::de::Error::custom)
    }
}

/// A zone's keys: what `PUT /zones/{origin}/dnssec` makes and the cluster replicates.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZoneKeys {
    pub algorithm: Algorithm,
    pub keys: Vec<ZoneKey>,
}

impl ZoneKey {
    /// A new key of `role` (flags from the role), active, made with the system's random
    /// source.
    pub fn generate(algorithm: Algorithm, role: Role) -> Result<ZoneKey, DnssecError> {
        let gen = |e: &dyn fmt::Display| DnssecError::Generate(algorithm.name(), e.to_string());
        let (pkcs8, public) = match algorithm {
            Algorithm::EcdsaP256Sha256 => {
                let der =
                    EcdsaSigningKey::generate_pkcs8(HAlg::ECDSAP256SHA256).map_err(|e| gen(&e))?;
                let key = EcdsaSigningKey::from_pkcs8(&der, HAlg::ECDSAP256SHA256)
                    .map_err(|e| gen(&e))?;
                let public = key.to_public_key().map_err(|e| gen(&e))?;
                (der.secret_pkcs8_der().to_vec(), public)
            }
            Algorithm::Ed25519 => {
                let der = Ed25519SigningKey::generate_pkcs8().map_err(|e| gen(&e))?;
                let key = Ed25519SigningKey::from_pkcs8(&der).map_err(|e| gen(&e))?;
                let public = key.to_public_key().map_err(|e| gen(&e))?;
                (der.secret_pkcs8_der().to_vec(), public)
            }
        };
        let flags = role.flags();
        let public = public.public_bytes().to_vec();
        let tag = dnskey(flags, algorithm, &public)
            .calculate_key_tag()
            .map_err(|e| gen(&e))?;
        Ok(ZoneKey {
            tag,
            flags,
            role,
            state: KeyState::Active,
            public,
            private: PrivateKey(pkcs8.into_boxed_slice()),
            since_ms: 0,
            replaces: None,
            awaiting_ds: false,
        })
    }

    /// A secure entry point (flags 257): a parent's DS may point at it, so it signs the
    /// DNSKEY, CDS and CDNSKEY RRsets.
    pub fn is_sep(&self) -> bool {
        self.flags & 1 == 1
    }
}

impl ZoneKeys {
    /// One new combined signing key (flags 257: zone key, secure entry point), active.
    pub fn generate_csk(algorithm: Algorithm) -> Result<ZoneKeys, DnssecError> {
        ZoneKeys::generate(algorithm, Layout::Csk)
    }

    /// New keys in `layout`, active.
    pub fn generate(algorithm: Algorithm, layout: Layout) -> Result<ZoneKeys, DnssecError> {
        let keys = match layout {
            Layout::Csk => vec![ZoneKey::generate(algorithm, Role::Csk)?],
            Layout::KskZsk => {
                let ksk = ZoneKey::generate(algorithm, Role::Ksk)?;
                let mut zsk = ZoneKey::generate(algorithm, Role::Zsk)?;
                // Distinct tags, so a validator never has to try two keys for one RRSIG.
                for _ in 0..16 {
                    if zsk.tag != ksk.tag {
                        break;
                    }
                    zsk = ZoneKey::generate(algorithm, Role::Zsk)?;
                }
                vec![ksk, zsk]
            }
        };
        Ok(ZoneKeys { algorithm, keys })
    }

    /// The key layout: a KSK+ZSK zone has a KSK.
    pub fn layout(&self) -> Layout {
        if self.keys.iter().any(|k| k.role != Role::Csk) {
            Layout::KskZsk
        } else {
            Layout::Csk
        }
    }

    /// The keys in the DNSKEY RRset: every key of the zone (a key leaves the list when it
    /// leaves the RRset).
    pub fn published(&self) -> impl Iterator<Item = &ZoneKey> {
        self.keys.iter()
    }

    /// The keys a parent's DS may point at (secure entry points in the DNSKEY set): during
    /// a KSK or CSK roll both the old and the new one. `GET` shows their DS; each signs the
    /// DNSKEY, CDS and CDNSKEY RRsets.
    pub fn entry_points(&self) -> impl Iterator<Item = &ZoneKey> {
        self.published().filter(|k| k.is_sep())
    }

    /// The keys the parent should have a DS for from now on (RFC 7344 CDS and CDNSKEY):
    /// the entry points, less any a roll is replacing.
    pub fn cds_keys(&self) -> impl Iterator<Item = &ZoneKey> {
        self.entry_points().filter(|k| !self.is_replaced(k.tag))
    }

    /// Whether a roll in progress replaces the key `tag`.
    fn is_replaced(&self, tag: u16) -> bool {
        self.keys.iter().any(|k| k.replaces == Some(tag))
    }

    /// The key that signs zone data: the active key that is not a KSK (exactly one at any
    /// time, whatever roll is under way).
    pub fn data_key(&self) -> Option<&ZoneKey> {
        self.keys
            .iter()
            .find(|k| k.state == KeyState::Active && k.role != Role::Ksk)
    }

    /// The role of the key a rollover of `asked` replaces here: in a one-key zone every
    /// role names its CSK; in a KSK+ZSK zone `csk` names nothing.
    pub fn roll_role(&self, asked: Role) -> Result<Role, RollError> {
        match (self.layout(), asked) {
            (Layout::Csk, _) => Ok(Role::Csk),
            (Layout::KskZsk, Role::Csk) => Err(RollError::Invalid(
                "the zone has a KSK and a ZSK: roll \"ksk\" or \"zsk\"".into(),
            )),
            (Layout::KskZsk, r) => Ok(r),
        }
    }

    /// Start a roll (RFC 6781 §4.1.1.1 pre-publication): `new` (made by the proposing
    /// node) joins the DNSKEY RRset as `published` at `at_ms`, replacing the current key of
    /// `role`; a KSK or CSK also waits for `ds-seen`. Refused while a roll of that role is
    /// under way.
    pub fn roll(&mut self, role: Role, mut new: ZoneKey, at_ms: u64) -> Result<(), RollError> {
        let conflict = |m: String| Err(RollError::Conflict(m));
        if new.role != role || new.flags != role.flags() {
            return Err(RollError::Invalid(format!(
                "a new {} key must have flags {}",
                role.name(),
                role.flags()
            )));
        }
        if self
            .keys
            .iter()
            .any(|k| k.role == role && k.replaces.is_some())
        {
            return conflict(format!("a {} roll is already under way", role.name()));
        }
        if self.keys.iter().any(|k| k.tag == new.tag) {
            return conflict(format!("key tag {} is taken; try again", new.tag));
        }
        let Some(old) = self
            .keys
            .iter()
            .find(|k| k.role == role && k.state == KeyState::Active)
        else {
            return conflict(format!("the zone has no active {} to roll", role.name()));
        };
        new.state = KeyState::Published;
        new.since_ms = at_ms;
        new.replaces = Some(old.tag);
        new.awaiting_ds = new.is_sep();
        self.keys.push(new);
        Ok(())
    }

    /// The parent has the new DS (`ds-seen`): every key waiting for it stops waiting.
    /// `false` when none was waiting.
    pub fn ds_seen(&mut self) -> bool {
        let mut any = false;
        for k in self.keys.iter_mut().filter(|k| k.awaiting_ds) {
            k.awaiting_ds = false;
            any = true;
        }
        any
    }

    /// Whether a KSK or CSK roll is under way whose parent DS is not confirmed yet.
    pub fn awaits_ds(&self) -> bool {
        self.keys.iter().any(|k| k.awaiting_ds)
    }

    /// Whether some key is mid-roll (so [`ZoneKeys::due`] may have something to do).
    pub fn rolling(&self) -> bool {
        self.keys.iter().any(|k| k.replaces.is_some())
    }

    /// The automatic steps due at `now_ms`: a published key starts signing once the DNSKEY
    /// TTL (and the propagation delay) has passed since it was published; a retired key
    /// leaves once the largest TTL it signed for has passed since it retired (the DNSKEY
    /// TTL for a KSK), and for a KSK or CSK not before `ds-seen`.
    pub fn due(&self, t: &Timings, now_ms: u64) -> Vec<Step> {
        let after = |since: u64, ttl: u32| {
            now_ms >= since.saturating_add(u64::from(ttl) * 1000 + PROPAGATION_MS)
        };
        let mut steps = Vec::new();
        for k in &self.keys {
            if k.state == KeyState::Published
                && k.replaces.is_some()
                && after(k.since_ms, t.dnskey_ttl)
            {
                steps.push(Step::Activate { tag: k.tag });
            }
        }
        for old in self.keys.iter().filter(|k| k.state == KeyState::Retired) {
            let Some(new) = self.keys.iter().find(|k| k.replaces == Some(old.tag)) else {
                continue;
            };
            let wait = match old.role {
                Role::Ksk => t.dnskey_ttl,
                Role::Csk | Role::Zsk => t.max_ttl.max(t.dnskey_ttl),
            };
            if !new.awaiting_ds && after(old.since_ms, wait) {
                steps.push(Step::Remove { tag: old.tag });
            }
        }
        steps
    }

    /// Take `step` at `at_ms` if it is due then (so a step proposed late, twice, or after
    /// the keys changed is refused, and every node decides alike).
    pub fn take(&mut self, step: Step, t: &Timings, at_ms: u64) -> Result<(), RollError> {
        if !self.due(t, at_ms).contains(&step) {
            return Err(RollError::Conflict(format!("{step:?} is not due")));
        }
        self.apply_step(step, at_ms)
    }

    fn apply_step(&mut self, step: Step, at_ms: u64) -> Result<(), RollError> {
        let missing = |tag: u16| RollError::Conflict(format!("no key {tag}"));
        match step {
            Step::Activate { tag } => {
                let old = self
                    .keys
                    .iter()
                    .find(|k| k.tag == tag)
                    .and_then(|k| k.replaces)
                    .ok_or_else(|| missing(tag))?;
                for k in &mut self.keys {
                    if k.tag == tag {
                        k.state = KeyState::Active;
                        k.since_ms = at_ms;
                    } else if k.tag == old {
                        k.state = KeyState::Retired;
                        k.since_ms = at_ms;
                    }
                }
            }
            Step::Remove { tag } => {
                let before = self.keys.len();
                self.keys.retain(|k| k.tag != tag);
                if self.keys.len() == before {
                    return Err(missing(tag));
                }
                for k in &mut self.keys {
                    if k.replaces == Some(tag) {
                        k.replaces = None;
                    }
                }
            }
        }
        Ok(())
    }
}

impl ZoneKey {
    /// The DNSKEY RDATA in presentation form (`257 3 13 BASE64`).
    pub fn dnskey_text(&self, algorithm: Algorithm) -> String {
        format!(
            "{} 3 {} {}",
            self.flags,
            algorithm.number(),
            base64::engine::general_purpose::STANDARD.encode(&self.public)
        )
    }

    /// The DNSKEY RDATA in wire form.
    pub fn dnskey_wire(&self, algorithm: Algorithm) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + self.public.len());
        out.extend_from_slice(&self.flags.to_be_bytes());
        out.push(3);
        out.push(algorithm.number());
        out.extend_from_slice(&self.public);
        out
    }

    /// The DS (SHA-256, RFC 4509) of this key at `origin`.
    pub fn ds(&self, algorithm: Algorithm, origin: &Name) -> Result<DS, DnssecError> {
        let key = dnskey(self.flags, algorithm, &self.public);
        let bad = |e: &dyn fmt::Display| DnssecError::BadKey(algorithm.name(), e.to_string());
        let digest = key
            .to_digest(origin, DigestType::SHA256)
            .map_err(|e| bad(&e))?;
        Ok(DS::new(
            self.tag,
            algorithm.hickory(),
            DigestType::SHA256,
            digest.as_ref().to_vec(),
        ))
    }
}

fn dnskey(flags: u16, algorithm: Algorithm, public: &[u8]) -> DNSKEY {
    DNSKEY::with_flags(
        flags,
        PublicKeyBuf::new(public.to_vec(), algorithm.hickory()),
    )
}

/// The DS RDATA wire form (for CDS).
pub fn ds_wire(ds: &DS) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + ds.digest().len());
    out.extend_from_slice(&ds.key_tag().to_be_bytes());
    out.push(u8::from(ds.algorithm()));
    out.push(u8::from(ds.digest_type()));
    out.extend_from_slice(ds.digest());
    out
}

enum Pair {
    Ecdsa(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

/// Signs RRsets of one zone with one key: the zone's data signer is shared by the zone's
/// index (read-only, so every worker signs with it without a lock). The validity window is fixed when the
/// signer is made (when the zone is built), so per-answer signatures need no clock.
pub struct Signer {
    algorithm: Algorithm,
    tag: u16,
    pair: Pair,
    rng: SystemRandom,
    /// The zone's origin, lower-case wire form: the signer's name.
    signer: Box<[u8]>,
    inception: u32,
    expiration: u32,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("algorithm", &self.algorithm)
            .field("tag", &self.tag)
            .field("inception", &self.inception)
            .field("expiration", &self.expiration)
            .finish_non_exhaustive()
    }
}

/// The most to-be-signed bytes a per-answer signature takes (owner and RDATA of a compact
/// denial NSEC or a small synthesized RRset).
pub const MAX_TBS: usize = 2048;
/// The RRSIG RDATA fields before the signer's name (RFC 4034 §3.1), as `Signer::head`
/// writes them.
pub const RRSIG_HEAD: usize = 18;
/// The signature length of both algorithms we sign with (ECDSA P-256, Ed25519).
pub const SIG_LEN: usize = 64;

/// A fixed buffer for a to-be-signed message.
struct Buf<'a> {
    b: &'a mut [u8],
    n: usize,
    over: bool,
}

impl Buf<'_> {
    fn put(&mut self, s: &[u8]) {
        match self.b.get_mut(self.n..self.n + s.len()) {
            Some(dst) => {
                dst.copy_from_slice(s);
                self.n += s.len();
            }
            None => self.over = true,
        }
    }
}

/// The number of labels of a lower-case wire name (root 0), a leading `*` not counted
/// (RFC 4034 §3.1.3).
pub fn labels(name: &[u8]) -> u8 {
    let mut n = 0u8;
    let mut i = 0;
    while i < name.len() && name[i] != 0 {
        n = n.saturating_add(1);
        i += 1 + name[i] as usize;
    }
    if name.starts_with(b"\x01*") {
        n = n.saturating_sub(1);
    }
    n
}

impl Signer {
    /// The zone-data signer of `origin` (lower-case wire): the one active key that is not
    /// a KSK ([`ZoneKeys::data_key`]), its window from `now` (seconds since the epoch).
    /// Every RRset but the apex DNSKEY, CDS and CDNSKEY is signed with it, at build time
    /// and per answer.
    pub fn new(origin: &[u8], keys: &ZoneKeys, now: u64) -> Result<Signer, DnssecError> {
        let key = keys.data_key().ok_or_else(|| {
            DnssecError::BadKey(keys.algorithm.name(), "no active zone-data key".into())
        })?;
        Signer::with_key(origin, keys.algorithm, key, now)
    }

    /// The signers of the apex DNSKEY, CDS and CDNSKEY RRsets: every secure entry point in
    /// the DNSKEY RRset (during a KSK or CSK roll the old and the new one), so a validator
    /// whose DS points at either validates.
    pub fn key_signers(
        origin: &[u8],
        keys: &ZoneKeys,
        now: u64,
    ) -> Result<Vec<Signer>, DnssecError> {
        keys.entry_points()
            .map(|k| Signer::with_key(origin, keys.algorithm, k, now))
            .collect()
    }

    /// The signer of `origin` with one `key`.
    pub fn with_key(
        origin: &[u8],
        alg: Algorithm,
        key: &ZoneKey,
        now: u64,
    ) -> Result<Signer, DnssecError> {
        let bad = |e: &dyn fmt::Display| DnssecError::BadKey(alg.name(), e.to_string());
        let pair = match alg {
            Algorithm::EcdsaP256Sha256 => Pair::Ecdsa(
                EcdsaKeyPair::from_pkcs8(
                    &ECDSA_P256_SHA256_FIXED_SIGNING,
                    &key.private.0,
                    &SystemRandom::new(),
                )
                .map_err(|e| bad(&e))?,
            ),
            Algorithm::Ed25519 => {
                Pair::Ed25519(Ed25519KeyPair::from_pkcs8(&key.private.0).map_err(|e| bad(&e))?)
            }
        };
        let public_ok = match &pair {
            Pair::Ecdsa(p) => p.public_key().as_ref().get(1..) == Some(&key.public[..]),
            Pair::Ed25519(p) => p.public_key().as_ref() == &key.public[..],
        };
        if !public_ok {
            return Err(bad(&"the private key does not match its public key"));
        }
        // RFC 4034 §3.1.5: serial number arithmetic on 32 bits.
        let now = now as u32;
        Ok(Signer {
            algorithm: alg,
            tag: key.tag,
            pair,
            rng: SystemRandom::new(),
            signer: origin.into(),
            inception: now.wrapping_sub(INCEPTION_BACK_SECS),
            expiration: now.wrapping_add(VALIDITY_SECS),
        })
    }

    /// The key tag of the key this signer signs with.
    pub fn tag(&self) -> u16 {
        self.tag
    }

    /// (inception, expiration) of every signature this signer makes.
    pub fn window(&self) -> (u32, u32) {
        (self.inception, self.expiration)
    }

    /// The RRSIG RDATA before the signature (RFC 4034 §3.1).
    fn head(&self, rtype: u16, labels: u8, ttl: u32, out: &mut Buf<'_>) {
        out.put(&rtype.to_be_bytes());
        out.put(&[self.algorithm.number(), labels]);
        out.put(&ttl.to_be_bytes());
        out.put(&self.expiration.to_be_bytes());
        out.put(&self.inception.to_be_bytes());
        out.put(&self.tag.to_be_bytes());
        out.put(&self.signer);
    }

    /// Sign an RRset: `owner` lower-case wire, `rdatas` in canonical form (RFC 4034 §6.2)
    /// and canonical order (§6.3). Writes the whole RRSIG RDATA into `out` and returns its
    /// length; `None` when it does not fit. `scratch` holds the to-be-signed bytes.
    pub fn sign_into<'r>(
        &self,
        owner: &[u8],
        rtype: u16,
        ttl: u32,
        rdatas: impl Iterator<Item = &'r [u8]>,
        scratch: &mut [u8],
        out: &mut [u8],
    ) -> Option<usize> {
        let labels = labels(owner);
        let mut tbs = Buf {
            b: scratch,
            n: 0,
            over: false,
        };
        self.head(rtype, labels, ttl, &mut tbs);
        let head_len = tbs.n;
        for rd in rdatas {
            tbs.put(owner);
            tbs.put(&rtype.to_be_bytes());
            tbs.put(&[0, 1]);
            tbs.put(&ttl.to_be_bytes());
            tbs.put(&(rd.len() as u16).to_be_bytes());
            tbs.put(rd);
        }
        if tbs.over {
            return None;
        }
        let n = tbs.n;
        let msg = &tbs.b[..n];
        let mut o = Buf {
            b: out,
            n: 0,
            over: false,
        };
        o.put(&msg[..head_len]);
        match &self.pair {
            Pair::Ecdsa(p) => match p.sign(&self.rng, msg) {
                Ok(sig) => o.put(sig.as_ref()),
                Err(_) => return None,
            },
            Pair::Ed25519(p) => o.put(p.sign(msg).as_ref()),
        }
        (!o.over).then_some(o.n)
    }

    /// [`Signer::sign_into`] for build time: the RDATA as a box, RDATAs in any order and
    /// any size.
    pub fn sign(
        &self,
        owner: &[u8],
        rtype: u16,
        ttl: u32,
        mut rdatas: Vec<Vec<u8>>,
    ) -> Result<Box<[u8]>, DnssecError> {
        rdatas.sort();
        rdatas.dedup();
        let refs: Vec<&[u8]> = rdatas.iter().map(|r| &r[..]).collect();
        let need: usize = 32
            + self.signer.len()
            + refs
                .iter()
                .map(|r| owner.len() + 10 + r.len())
                .sum::<usize>();
        let mut scratch = vec![0u8; need];
        let mut out = vec![0u8; 18 + self.signer.len() + 64];
        let n = self
            .sign_into(
                owner,
                rtype,
                ttl,
                refs.iter().copied(),
                &mut scratch,
                &mut out,
            )
            .ok_or_else(|| DnssecError::TooLarge(crate::zone::display(owner)))?;
        out.truncate(n);
        Ok(out.into_boxed_slice())
    }
}

/// An NSEC type bitmap (RFC 4034 §4.1.2) of `types` (sorted, deduplicated by the caller or
/// not: both work), appended to `out`.
pub fn type_bitmap(types: &[u16], out: &mut Vec<u8>) {
    let mut window: [u8; 32];
    let mut sorted: Vec<u16> = types.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut i = 0;
    while i < sorted.len() {
        let w = (sorted[i] >> 8) as u8;
        window = [0; 32];
        let mut len = 0;
        while i < sorted.len() && (sorted[i] >> 8) as u8 == w {
            let low = (sorted[i] & 0xff) as usize;
            window[low / 8] |= 0x80 >> (low % 8);
            len = len.max(low / 8 + 1);
            i += 1;
        }
        out.push(w);
        out.push(len as u8);
        out.extend_from_slice(&window[..len]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_round_trips_and_its_private_part_never_shows_in_debug() {
        for alg in [Algorithm::EcdsaP256Sha256, Algorithm::Ed25519] {
            let keys = ZoneKeys::generate_csk(alg).expect("generate");
            let json = serde_json::to_string(&keys).expect("json");
            let back: ZoneKeys = serde_json::from_str(&json).expect("back");
            assert_eq!(back, keys);
            let dbg = format!("{keys:?}");
            assert!(dbg.contains("<redacted>"));
            let private: String = keys.keys[0].private.clone().into();
            assert!(!dbg.contains(&private));
            let origin = b"\x07example\x03com\x00";
            let s = Signer::new(origin, &keys, 1_700_000_000).expect("signer");
            let sig = s
                .sign(origin, 1, 300, vec![vec![192, 0, 2, 1]])
                .expect("sign");
            assert_eq!(sig.len(), 18 + origin.len() + 64);
            let name = Name::from_ascii("example.com.").expect("name");
            let ds = keys.keys[0].ds(alg, &name).expect("ds");
            assert_eq!(ds.key_tag(), keys.keys[0].tag);
        }
    }

    /// The key tag of an RRSIG RDATA (RFC 4034 §3.1: after type, algorithm, labels, TTL,
    /// expiration and inception).
    fn sig_tag(sig: &[u8]) -> u16 {
        u16::from_be_bytes([sig[16], sig[17]])
    }

    #[test]
    fn rfc6781_ksk_signs_the_key_rrsets_zsk_the_rest_and_both_ksks_sign_during_a_roll() {
        let text = "$TTL 300\n@ 60 IN SOA ns1 h 1 2 3 4 5\n@ IN NS ns1\nns1 IN A 192.0.2.1\n";
        let origin: Name = "example.com.".parse().expect("name");
        let file = crate::zone::parse_zone(text, "z.zone", &origin).expect("zone");
        let mut keys =
            ZoneKeys::generate(Algorithm::EcdsaP256Sha256, Layout::KskZsk).expect("keys");
        let tag = |r: Role| keys.keys.iter().find(|k| k.role == r).expect("key").tag;
        let (ksk, zsk) = (tag(Role::Ksk), tag(Role::Zsk));
        let signed = |keys: &ZoneKeys| {
            let mut z = crate::zone::Zone::build(&file, &[]).expect("build");
            z.sign(keys, 1_700_000_000).expect("sign");
            z
        };
        let z = signed(&keys);
        let apex = z.node(b"\x07example\x03com\x00").expect("apex");
        let dnskey = apex.get(types::DNSKEY).expect("DNSKEY");
        assert_eq!(dnskey.rdatas().count(), 2);
        assert_eq!(dnskey.ttl(), 60, "the DNSKEY TTL is the SOA's");
        assert_eq!(dnskey.sigs().map(sig_tag).collect::<Vec<_>>(), [ksk]);
        for t in [types::CDS, types::CDNSKEY] {
            let set = apex.get(t).expect("key set");
            assert_eq!(set.rdatas().count(), 1, "only the KSK");
            assert_eq!(set.sigs().map(sig_tag).collect::<Vec<_>>(), [ksk]);
        }
        let a = z
            .node(b"\x03ns1\x07example\x03com\x00")
            .and_then(|n| n.get(1))
            .expect("A");
        assert_eq!(a.sigs().map(sig_tag).collect::<Vec<_>>(), [zsk]);
        assert_eq!(z.signer().map(Signer::tag), Some(zsk));

        // A KSK roll: the new KSK is published and signs the key RRsets beside the old one;
        // CDS names only the new one; zone data stays with the ZSK.
        let new = ZoneKey::generate(Algorithm::EcdsaP256Sha256, Role::Ksk).expect("new");
        let new_tag = new.tag;
        keys.roll(Role::Ksk, new, 1).expect("roll");
        let z = signed(&keys);
        let apex = z.node(b"\x07example\x03com\x00").expect("apex");
        let dnskey = apex.get(types::DNSKEY).expect("DNSKEY");
        assert_eq!(dnskey.rdatas().count(), 3);
        let mut tags: Vec<u16> = dnskey.sigs().map(sig_tag).collect();
        tags.sort_unstable();
        let mut want = vec![ksk, new_tag];
        want.sort_unstable();
        assert_eq!(tags, want);
        let cds = apex.get(types::CDS).expect("CDS");
        assert_eq!(cds.rdatas().count(), 1);
        assert_eq!(keys.entry_points().count(), 2, "GET lists both DS");
        assert_eq!(z.signer().map(Signer::tag), Some(zsk));
    }

    #[test]
    fn rfc4034_4_1_2_type_bitmap() {
        let mut out = Vec::new();
        // RFC 4034 §4.3's example: A MX RRSIG NSEC TYPE1234.
        type_bitmap(&[1, 15, 46, 47, 1234], &mut out);
        let mut want = vec![0x00, 0x06, 0x40, 0x01, 0x00, 0x00, 0x00, 0x03, 0x04, 0x1b];
        want.extend([0u8; 26]);
        want.push(0x20);
        assert_eq!(out, want);
        // RFC 9824 §3: RRSIG NSEC NXNAME, as the answer path writes it.
        out.clear();
        type_bitmap(&[types::RRSIG, types::NSEC, types::NXNAME], &mut out);
        let mut want = vec![0x00, 0x11, 0, 0, 0, 0, 0, 0x03];
        want.extend([0u8; 10]);
        want.push(0x80);
        assert_eq!(out, want);
    }
}
