//! The nouns of the DNS-side protocols: TSIG keys (RFC 8945) and a zone's transfer, notify,
//! update and serial settings, with their validation. Replicated through Raft; the data
//! plane reads them from the snapshot.

use std::net::{IpAddr, SocketAddr};

use base64::Engine;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::name::{KeyName, NameError};

/// The HMAC algorithms of RFC 8945 §6, in the lower-case spelling the API uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum TsigAlgorithm {
    #[serde(rename = "hmac-md5")]
    HmacMd5,
    #[serde(rename = "hmac-sha1")]
    HmacSha1,
    #[serde(rename = "hmac-sha224")]
    HmacSha224,
    #[serde(rename = "hmac-sha256")]
    HmacSha256,
    #[serde(rename = "hmac-sha384")]
    HmacSha384,
    #[serde(rename = "hmac-sha512")]
    HmacSha512,
}

impl TsigAlgorithm {
    pub const ALL: [TsigAlgorithm; 6] = [
        TsigAlgorithm::HmacMd5,
        TsigAlgorithm::HmacSha1,
        TsigAlgorithm::HmacSha224,
        TsigAlgorithm::HmacSha256,
        TsigAlgorithm::HmacSha384,
        TsigAlgorithm::HmacSha512,
    ];

    /// The API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            TsigAlgorithm::HmacMd5 => "hmac-md5",
            TsigAlgorithm::HmacSha1 => "hmac-sha1",
            TsigAlgorithm::HmacSha224 => "hmac-sha224",
            TsigAlgorithm::HmacSha256 => "hmac-sha256",
            TsigAlgorithm::HmacSha384 => "hmac-sha384",
            TsigAlgorithm::HmacSha512 => "hmac-sha512",
        }
    }

    /// The algorithm name in the TSIG RDATA (RFC 8945 §6), without the final dot.
    pub fn wire_name(self) -> &'static str {
        match self {
            TsigAlgorithm::HmacMd5 => "hmac-md5.sig-alg.reg.int",
            other => other.as_str(),
        }
    }

    /// From the TSIG RDATA's algorithm name (any case, final dot or not).
    pub fn from_wire_name(name: &str) -> Option<TsigAlgorithm> {
        let n = name.trim_end_matches('.').to_ascii_lowercase();
        TsigAlgorithm::ALL.into_iter().find(|a| a.wire_name() == n)
    }

    pub fn parse(s: &str) -> Option<TsigAlgorithm> {
        TsigAlgorithm::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// A TSIG key. Its secret travels in the Raft log and the store only: `Debug` hides it and
/// no API answer, log line or export shows it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TsigKey {
    /// Lower case, without the final dot.
    pub name: String,
    pub algorithm: TsigAlgorithm,
    #[serde(with = "b64")]
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for TsigKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TsigKey")
            .field("name", &self.name)
            .field("algorithm", &self.algorithm)
            .field("secret", &"<redacted>")
            .finish()
    }
}

mod b64 {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s.trim())
            .map_err(serde::de::Error::custom)
    }
}

/// Why a key or a setting is invalid.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfError {
    #[error(transparent)]
    KeyName(#[from] NameError),
    #[error("unknown TSIG algorithm {0:?} (hmac-sha256, hmac-sha384, hmac-sha512, hmac-sha224, hmac-sha1, hmac-md5)")]
    Algorithm(String),
    #[error("the secret is empty: fill in the key's base64 secret")]
    EmptySecret,
    #[error("the secret is not base64: {0}")]
    Secret(String),
    #[error("allow_transfer entry {0:?}: neither key:NAME nor an address or network")]
    TransferEntry(String),
    #[error("allow_update rule for {0:?}: {1}")]
    UpdateRule(String, String),
}

/// Decode a base64 secret; an empty one is refused with a message that says to fill it in.
pub fn decode_secret(secret: &str) -> Result<Vec<u8>, ConfError> {
    if secret.trim().is_empty() {
        return Err(ConfError::EmptySecret);
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(secret.trim())
        .map_err(|e| ConfError::Secret(e.to_string()))?;
    if bytes.is_empty() {
        return Err(ConfError::EmptySecret);
    }
    Ok(bytes)
}

/// `match` of an update rule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NameMatch {
    /// The name alone.
    #[default]
    Name,
    /// The name and every name below it.
    Subdomain,
}

/// One `allow_update` grant: records of `types` at names that `match` `name`, to `key`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateRule {
    pub key: String,
    pub name: String,
    #[serde(rename = "match", default)]
    pub name_match: NameMatch,
    /// Record type mnemonics (upper case); empty: every type.
    #[serde(default)]
    pub types: Vec<String>,
}

/// How a zone's published serial moves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SerialPolicy {
    /// max(text serial, previous + 1)
    #[default]
    Increment,
    /// max(commit time in seconds, previous + 1)
    Unixtime,
}

/// A zone's settings for transfer, NOTIFY, UPDATE and its serial.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneSettings {
    /// Alternatives: `key:NAME`, or an address or network of the client.
    #[serde(default)]
    pub allow_transfer: Vec<String>,
    #[serde(default)]
    pub notify: Vec<SocketAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify_key: Option<String>,
    #[serde(default)]
    pub allow_update: Vec<UpdateRule>,
    #[serde(default)]
    pub serial: SerialPolicy,
}

/// An `allow_transfer` entry, read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransferAcl {
    Key(String),
    Net(IpNet),
}

impl ZoneSettings {
    /// Canonicalise key names and types, check every entry; `key_exists` says whether a
    /// TSIG key is defined. Returns the settings as they are kept, or the first problem
    /// and whether it is a missing key (422 either way).
    pub fn normalised(&self, key_exists: impl Fn(&str) -> bool) -> Result<ZoneSettings, String> {
        let mut out = self.clone();
        let need_key = |name: &str| -> Result<String, String> {
            let k = KeyName::parse(name).map_err(|e| e.to_string())?;
            if !key_exists(k.as_str()) {
                return Err(format!("no TSIG key {k:?}"));
            }
            Ok(k.into())
        };
        out.allow_transfer = Vec::with_capacity(self.allow_transfer.len());
        for entry in &self.allow_transfer {
            match parse_transfer_entry(entry).map_err(|e| e.to_string())? {
                TransferAcl::Key(k) => out.allow_transfer.push(format!("key:{}", need_key(&k)?)),
                TransferAcl::Net(n) => out.allow_transfer.push(n.to_string()),
            }
        }
        if let Some(k) = &self.notify_key {
            out.notify_key = Some(need_key(k)?);
        }
        for rule in &mut out.allow_update {
            rule.key = need_key(&rule.key)?;
            let mut n = hickory_proto::rr::Name::from_ascii(rule.name.trim())
                .map_err(|e| ConfError::UpdateRule(rule.name.clone(), e.to_string()).to_string())?;
            n.set_fqdn(true);
            rule.name = n.to_lowercase().to_ascii();
            for t in &mut rule.types {
                let up = t.trim().to_ascii_uppercase();
                if up.parse::<hickory_proto::rr::RecordType>().is_err() {
                    return Err(ConfError::UpdateRule(
                        rule.name.clone(),
                        format!("unknown record type {t:?}"),
                    )
                    .to_string());
                }
                *t = up;
            }
        }
        Ok(out)
    }

    /// The TSIG keys these settings name.
    pub fn keys(&self) -> impl Iterator<Item = String> + '_ {
        self.allow_transfer
            .iter()
            .filter_map(|e| e.strip_prefix("key:").map(str::to_string))
            .chain(self.notify_key.iter().cloned())
            .chain(self.allow_update.iter().map(|r| r.key.clone()))
    }

    /// Whether some `allow_update` rule grants `key` (canonical name) records of `rtype`
    /// at `name`: the rule's key, its name (`name`: that name alone; `subdomain`: it and
    /// every name below it) and its types (none listed: every type).
    pub fn update_granted(
        &self,
        key: &str,
        name: &hickory_proto::rr::Name,
        rtype: hickory_proto::rr::RecordType,
    ) -> bool {
        let rtype = rtype.to_string();
        self.allow_update.iter().any(|rule| {
            if rule.key != key {
                return false;
            }
            let Ok(rule_name) = hickory_proto::rr::Name::from_ascii(&rule.name) else {
                return false;
            };
            let name_ok = match rule.name_match {
                NameMatch::Name => rule_name == *name,
                NameMatch::Subdomain => rule_name.zone_of(name),
            };
            name_ok && (rule.types.is_empty() || rule.types.contains(&rtype))
        })
    }

    /// Whether some `allow_update` rule of `key` covers `name` at all (a deletion of
    /// every type at a name that holds nothing).
    pub fn update_name_granted(&self, key: &str, name: &hickory_proto::rr::Name) -> bool {
        self.allow_update.iter().any(|rule| {
            rule.key == key
                && hickory_proto::rr::Name::from_ascii(&rule.name).is_ok_and(|n| {
                    match rule.name_match {
                        NameMatch::Name => n == *name,
                        NameMatch::Subdomain => n.zone_of(name),
                    }
                })
        })
    }

    /// Whether a transfer from `source`, signed with `key` (canonical name) or not, may go.
    pub fn transfer_allowed(&self, source: IpAddr, key: Option<&str>) -> bool {
        self.allow_transfer
            .iter()
            .any(|e| match parse_transfer_entry(e) {
                Ok(TransferAcl::Key(k)) => key == Some(k.as_str()),
                Ok(TransferAcl::Net(n)) => n.contains(&source),
                Err(_) => false,
            })
    }
}

/// `key:NAME`, an address (a /32 or /128) or a network.
pub fn parse_transfer_entry(entry: &str) -> Result<TransferAcl, ConfError> {
    let e = entry.trim();
    if let Some(k) = e.strip_prefix("key:") {
        return Ok(TransferAcl::Key(KeyName::parse(k)?.into()));
    }
    if let Ok(n) = e.parse::<IpNet>() {
        return Ok(TransferAcl::Net(n.trunc()));
    }
    if let Ok(a) = e.parse::<IpAddr>() {
        return Ok(TransferAcl::Net(IpNet::from(a)));
    }
    Err(ConfError::TransferEntry(entry.into()))
}

/// The bootstrap `tsig.toml`: `[[key]]` tables with `name`, `algorithm`, `secret`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TsigFile {
    #[serde(default)]
    pub key: Vec<TsigKeySpec>,
}

/// A key as files and the API give it: the secret in base64.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TsigKeySpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub algorithm: String,
    pub secret: String,
}

impl std::fmt::Debug for TsigKeySpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TsigKeySpec")
            .field("name", &self.name)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl TsigKeySpec {
    /// The key, named `name` (the URL's, or the file's).
    pub fn to_key(&self, name: &str) -> Result<TsigKey, ConfError> {
        let algorithm = TsigAlgorithm::parse(self.algorithm.trim())
            .ok_or_else(|| ConfError::Algorithm(self.algorithm.clone()))?;
        Ok(TsigKey {
            name: KeyName::parse(name)?.into(),
            algorithm,
            secret: decode_secret(&self.secret)?,
        })
    }
}

/// The bootstrap `zone-settings.toml`: `[[zone]]` tables with `origin` and the settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneSettingsFile {
    #[serde(default)]
    pub zone: Vec<ZoneSettingsEntry>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneSettingsEntry {
    pub origin: String,
    #[serde(flatten)]
    pub settings: ZoneSettings,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc8945_algorithm_names_round_trip() {
        for a in TsigAlgorithm::ALL {
            assert_eq!(TsigAlgorithm::from_wire_name(a.wire_name()), Some(a));
            assert_eq!(TsigAlgorithm::parse(a.as_str()), Some(a));
        }
        assert_eq!(
            TsigAlgorithm::from_wire_name("HMAC-MD5.SIG-ALG.REG.INT."),
            Some(TsigAlgorithm::HmacMd5)
        );
    }

    #[test]
    fn secrets_never_show_in_debug() {
        let k = TsigKey {
            name: "k".into(),
            algorithm: TsigAlgorithm::HmacSha256,
            secret: b"topsecret".to_vec(),
        };
        assert!(!format!("{k:?}").contains("topsecret"));
        assert_eq!(decode_secret(""), Err(ConfError::EmptySecret));
    }

    #[test]
    fn transfer_acl_matches_keys_and_networks() {
        let s = ZoneSettings {
            allow_transfer: vec!["key:xfr".into(), "127.0.0.0/8".into(), "::1".into()],
            ..ZoneSettings::default()
        }
        .normalised(|k| k == "xfr")
        .expect("valid");
        assert!(s.transfer_allowed("127.1.2.3".parse().expect("ip"), None));
        assert!(s.transfer_allowed("::1".parse().expect("ip"), None));
        assert!(!s.transfer_allowed("10.0.0.1".parse().expect("ip"), None));
        assert!(s.transfer_allowed("10.0.0.1".parse().expect("ip"), Some("xfr")));
        let bad = ZoneSettings {
            notify_key: Some("nope".into()),
            ..ZoneSettings::default()
        };
        assert!(bad.normalised(|_| false).is_err());
    }
}
