//! TSIG (RFC 8945) glue: verify a request's TSIG and sign replies, the first and the later
//! messages of a transfer. hickory-proto reads and writes the TSIG record and gives the
//! data to be signed; RustCrypto's `hmac` computes and checks (in constant time) the MACs
//! of all six algorithms. Off the query path: only requests that carry a TSIG come here.

use std::sync::Arc;

use hickory_proto::rr::rdata::tsig::{
    make_tsig_record, signed_bitmessage_to_buf, TsigAlgorithm as HAlg, TsigError, TSIG,
};
use hickory_proto::rr::Name;
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};
use hmac::{Hmac, Mac};

use crate::snapshot::TsigKeys;
use crate::zoneconf::{TsigAlgorithm, TsigKey};

/// The fudge Meridian signs with (RFC 8945 §10 recommends 300 s).
pub const FUDGE: u16 = 300;

/// TSIG errors (RFC 8945 §3).
pub const BADSIG: u16 = 16;
pub const BADKEY: u16 = 17;
pub const BADTIME: u16 = 18;

fn hmac_of<M: Mac + hmac::digest::KeyInit>(key: &[u8], parts: &[&[u8]]) -> M {
    // Any key length is valid for HMAC: `new_from_slice` cannot fail here.
    let mut m = <M as hmac::digest::KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| <M as hmac::digest::KeyInit>::new(&Default::default()));
    for p in parts {
        m.update(p);
    }
    m
}

/// The MAC of `data` under `key` with `alg`.
pub fn mac(alg: TsigAlgorithm, key: &[u8], data: &[u8]) -> Vec<u8> {
    let d = &[data];
    match alg {
        TsigAlgorithm::HmacMd5 => hmac_of::<Hmac<md5::Md5>>(key, d)
            .finalize()
            .into_bytes()
            .to_vec(),
        TsigAlgorithm::HmacSha1 => hmac_of::<Hmac<sha1::Sha1>>(key, d)
            .finalize()
            .into_bytes()
            .to_vec(),
        TsigAlgorithm::HmacSha224 => hmac_of::<Hmac<sha2::Sha224>>(key, d)
            .finalize()
            .into_bytes()
            .to_vec(),
        TsigAlgorithm::HmacSha256 => hmac_of::<Hmac<sha2::Sha256>>(key, d)
            .finalize()
            .into_bytes()
            .to_vec(),
        TsigAlgorithm::HmacSha384 => hmac_of::<Hmac<sha2::Sha384>>(key, d)
            .finalize()
            .into_bytes()
            .to_vec(),
        TsigAlgorithm::HmacSha512 => hmac_of::<Hmac<sha2::Sha512>>(key, d)
            .finalize()
            .into_bytes()
            .to_vec(),
    }
}

/// Whether `tag` is the MAC of `data`, compared in constant time. A truncated MAC is
/// accepted down to half the output and at least 10 bytes (RFC 8945 §5.2.2.1).
pub fn verify_mac(alg: TsigAlgorithm, key: &[u8], data: &[u8], tag: &[u8]) -> bool {
    let d = &[data];
    macro_rules! check {
        ($t:ty) => {{
            let m = hmac_of::<Hmac<$t>>(key, d);
            let full = <Hmac<$t> as hmac::digest::OutputSizeUser>::output_size();
            if tag.len() == full {
                m.verify_slice(tag).is_ok()
            } else if tag.len() >= (full / 2).max(10) && tag.len() < full {
                m.verify_truncated_left(tag).is_ok()
            } else {
                false
            }
        }};
    }
    match alg {
        TsigAlgorithm::HmacMd5 => check!(md5::Md5),
        TsigAlgorithm::HmacSha1 => check!(sha1::Sha1),
        TsigAlgorithm::HmacSha224 => check!(sha2::Sha224),
        TsigAlgorithm::HmacSha256 => check!(sha2::Sha256),
        TsigAlgorithm::HmacSha384 => check!(sha2::Sha384),
        TsigAlgorithm::HmacSha512 => check!(sha2::Sha512),
    }
}

fn hickory_alg(alg: TsigAlgorithm) -> HAlg {
    match alg {
        TsigAlgorithm::HmacMd5 => HAlg::HmacMd5,
        TsigAlgorithm::HmacSha1 => HAlg::HmacSha1,
        TsigAlgorithm::HmacSha224 => HAlg::HmacSha224,
        TsigAlgorithm::HmacSha256 => HAlg::HmacSha256,
        TsigAlgorithm::HmacSha384 => HAlg::HmacSha384,
        TsigAlgorithm::HmacSha512 => HAlg::HmacSha512,
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Signs the replies to one signed request (RFC 8945 §5.3): the first with the request's
/// MAC and every TSIG variable, each later one of a transfer with the previous MAC and the
/// timers only (§5.3.1).
#[derive(Clone)]
pub struct Signer {
    pub key: Arc<TsigKey>,
    key_name: Name,
    /// The MAC the next reply chains to: the request's, then each reply's.
    prior_mac: Vec<u8>,
    first: bool,
    /// The request's original ID.
    oid: u16,
    /// The request's MAC.
    request_mac: Vec<u8>,
    /// The algorithm name exactly as the request spelled it.
    alg: HAlg,
}

impl Signer {
    /// The verified request's MAC (unique to that signed message).
    pub fn request_mac(&self) -> &[u8] {
        &self.request_mac
    }

    /// Append a TSIG record to `msg` (a complete reply without one), signed; `error` and
    /// `other` as RFC 8945 §5.3.2 says (BADTIME: the server's time in `other`).
    pub fn sign(&mut self, msg: &mut Vec<u8>, error: u16, other: Vec<u8>) {
        let now = unix_now();
        let stub = TSIG::new(
            self.alg.clone(),
            now,
            FUDGE,
            Vec::new(),
            self.oid,
            (error != 0).then(|| TsigError::from(error)),
            other,
        );
        let mut tbs = Vec::with_capacity(msg.len() + 128);
        tbs.extend_from_slice(&(self.prior_mac.len() as u16).to_be_bytes());
        tbs.extend_from_slice(&self.prior_mac);
        tbs.extend_from_slice(msg);
        if self.first {
            // A BinEncoder writes from the start of its buffer: a buffer of its own.
            let mut vars = Vec::with_capacity(64);
            let mut enc = BinEncoder::new(&mut vars);
            if stub.emit_tsig_for_mac(&mut enc, &self.key_name).is_err() {
                return;
            }
            tbs.extend_from_slice(&vars);
        } else {
            tbs.extend_from_slice(&((now >> 32) as u16).to_be_bytes());
            tbs.extend_from_slice(&(now as u32).to_be_bytes());
            tbs.extend_from_slice(&FUDGE.to_be_bytes());
        }
        let mac = mac(self.key.algorithm, &self.key.secret, &tbs);
        self.prior_mac = mac.clone();
        self.first = false;
        append_tsig(msg, &self.key_name, stub.set_mac(mac));
    }
}

/// Sign a request we send (a NOTIFY, RFC 8945 §5.1): append a TSIG record with the MAC
/// of the message and the TSIG variables. Returns the MAC (the answer's chains to it);
/// `None` when the key's name is not a domain name (the message is left unsigned).
pub fn sign_request(key: &TsigKey, msg: &mut Vec<u8>) -> Option<Vec<u8>> {
    if msg.len() < 12 {
        return None;
    }
    let mut key_name = Name::from_ascii(&key.name).ok()?;
    key_name.set_fqdn(true);
    let oid = u16::from_be_bytes([msg[0], msg[1]]);
    let stub = TSIG::new(
        hickory_alg(key.algorithm),
        unix_now(),
        FUDGE,
        Vec::new(),
        oid,
        None,
        Vec::new(),
    );
    let mut vars = Vec::with_capacity(64);
    let mut enc = BinEncoder::new(&mut vars);
    stub.emit_tsig_for_mac(&mut enc, &key_name).ok()?;
    let mut tbs = Vec::with_capacity(msg.len() + vars.len());
    tbs.extend_from_slice(msg);
    tbs.extend_from_slice(&vars);
    let mac = mac(key.algorithm, &key.secret, &tbs);
    append_tsig(msg, &key_name, stub.set_mac(mac.clone()));
    Some(mac)
}

/// Append a TSIG record and count it in ARCOUNT.
fn append_tsig(msg: &mut Vec<u8>, key_name: &Name, rdata: TSIG) {
    let record = make_tsig_record(key_name.clone(), rdata);
    let mut buf = Vec::new();
    let mut enc = BinEncoder::new(&mut buf);
    if record.emit(&mut enc).is_err() || msg.len() < 12 {
        return;
    }
    msg.extend_from_slice(&buf);
    let ar = u16::from_be_bytes([msg[10], msg[11]]).saturating_add(1);
    msg[10..12].copy_from_slice(&ar.to_be_bytes());
}

/// A request that failed verification: answer NOTAUTH with this.
pub struct Failure {
    pub error: u16,
    key_name: Name,
    alg: HAlg,
    oid: u16,
    /// BADTIME replies are signed (RFC 8945 §5.2.3).
    signer: Option<Signer>,
}

impl Failure {
    /// Append the TSIG of the error reply: unsigned (MAC size 0) for BADKEY and BADSIG,
    /// signed with the server's time in Other Data for BADTIME.
    pub fn append(&mut self, msg: &mut Vec<u8>) {
        let now = unix_now();
        match &mut self.signer {
            Some(signer) => {
                let other = now.to_be_bytes()[2..].to_vec();
                signer.sign(msg, self.error, other);
            }
            None => {
                let rdata = TSIG::new(
                    self.alg.clone(),
                    now,
                    FUDGE,
                    Vec::new(),
                    self.oid,
                    Some(TsigError::from(self.error)),
                    Vec::new(),
                );
                append_tsig(msg, &self.key_name, rdata);
            }
        }
    }
}

/// What a request's TSIG said.
pub enum Verified {
    /// No TSIG.
    Unsigned,
    /// Valid: sign the replies with this.
    Signed(Signer),
    /// Invalid: NOTAUTH.
    Failed(Failure),
    /// A TSIG that cannot be read, or not last: FORMERR (RFC 8945 §5.2).
    Malformed,
}

/// Verify `msg`'s TSIG against the cluster's keys at `now` (RFC 8945 §5.2).
pub fn verify(msg: &[u8], keys: &TsigKeys, now: u64) -> Verified {
    let (tbs, rr) = match signed_bitmessage_to_buf(msg, None, true) {
        Ok(v) => v,
        Err(_) => return Verified::Malformed,
    };
    let tsig = &rr.data;
    let key_name = rr.name.clone();
    let mut lower = key_name.to_lowercase().to_ascii();
    if lower.ends_with('.') {
        lower.pop();
    }
    let alg_name = tsig.algorithm.to_name().to_ascii();
    let fail = |error, signer| {
        Verified::Failed(Failure {
            error,
            key_name: key_name.clone(),
            alg: tsig.algorithm.clone(),
            oid: tsig.oid,
            signer,
        })
    };
    let Some(key) = keys.get(&lower) else {
        return fail(BADKEY, None);
    };
    if TsigAlgorithm::from_wire_name(&alg_name) != Some(key.algorithm) {
        return fail(BADKEY, None);
    }
    if !verify_mac(key.algorithm, &key.secret, &tbs, &tsig.mac) {
        return fail(BADSIG, None);
    }
    let signer = Signer {
        key: key.clone(),
        key_name: key_name.clone(),
        prior_mac: tsig.mac.clone(),
        request_mac: tsig.mac.clone(),
        first: true,
        oid: tsig.oid,
        alg: hickory_alg(key.algorithm),
    };
    if now.abs_diff(tsig.time) > u64::from(tsig.fudge) {
        return fail(BADTIME, Some(signer));
    }
    Verified::Signed(signer)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request we sign verifies as a request would (RFC 8945 §5.1, §5.2).
    #[test]
    fn rfc8945_5_1_signed_request_verifies() {
        use hickory_proto::op::{Message, MessageType, OpCode, Query};
        use hickory_proto::rr::RecordType;
        let key = Arc::new(TsigKey {
            name: "notify-key".into(),
            algorithm: TsigAlgorithm::HmacSha256,
            secret: b"0123456789abcdef".to_vec(),
        });
        let mut m = Message::new(7, MessageType::Query, OpCode::Notify);
        m.queries.push(Query::query(
            Name::from_ascii("example.com.").unwrap(),
            RecordType::SOA,
        ));
        let mut msg = m.to_vec().unwrap();
        assert!(sign_request(&key, &mut msg).is_some());
        let mut keys = crate::snapshot::TsigKeys::new();
        keys.insert("notify-key".into(), key);
        assert!(matches!(
            verify(&msg, &keys, unix_now()),
            Verified::Signed(_)
        ));
        msg[3] ^= 0x10; // change a header bit: the MAC no longer matches
        assert!(matches!(
            verify(&msg, &keys, unix_now()),
            Verified::Failed(_)
        ));
    }

    /// RFC 4231 test case 2 (HMAC-SHA-256) and RFC 2202 (HMAC-MD5, HMAC-SHA1).
    #[test]
    fn rfc4231_and_rfc2202_vectors() {
        let hex = |v: &[u8]| v.iter().map(|b| format!("{b:02x}")).collect::<String>();
        let data = b"what do ya want for nothing?";
        assert_eq!(
            hex(&mac(TsigAlgorithm::HmacSha256, b"Jefe", data)),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            hex(&mac(TsigAlgorithm::HmacMd5, b"Jefe", data)),
            "750c783e6ab0b503eaa86e310a5db738"
        );
        assert_eq!(
            hex(&mac(TsigAlgorithm::HmacSha1, b"Jefe", data)),
            "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
        );
        for alg in TsigAlgorithm::ALL {
            let m = mac(alg, b"k", b"d");
            assert!(verify_mac(alg, b"k", b"d", &m));
            assert!(!verify_mac(alg, b"x", b"d", &m));
        }
    }
}
