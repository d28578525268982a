//! The shared nouns: datacenters, services and their policies, with their validation. The
//! same types are read from the bootstrap TOML files and (later) the admin API's JSON, so a
//! definition means the same wherever it comes from.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Highest datacenter weight.
pub const MAX_WEIGHT: u16 = 1000;
/// Weight when a definition names none.
pub const DEFAULT_WEIGHT: u16 = 100;
/// Service TTL when a definition names none.
pub const DEFAULT_SERVICE_TTL: u32 = 60;

/// Where a datacenter is, in degrees.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Coordinates {
    pub lat: f64,
    pub lon: f64,
}

/// Whether operators want a datacenter in the answers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DcState {
    #[default]
    Active,
    Drained,
}

/// What the health checks agree on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Healthy,
    Unhealthy,
    #[default]
    Unknown,
}

/// How a datacenter is probed (the probes themselves come with the health issue).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum HealthCheck {
    Http {
        url: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        interval: Option<CheckDuration>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout: Option<CheckDuration>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rise: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fall: Option<u32>,
    },
    Tcp {
        address: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        interval: Option<CheckDuration>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout: Option<CheckDuration>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rise: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fall: Option<u32>,
    },
}

/// A health check's interval or timeout: kept as the operator wrote it (`"500ms"`, `"1.5s"`,
/// so it reads back unchanged) and parsed once, when it is read, into a positive duration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CheckDuration {
    text: String,
    value: Duration,
}

impl CheckDuration {
    pub fn parse(text: &str) -> Result<CheckDuration, String> {
        let value = parse_duration(text)?;
        if value.is_zero() {
            return Err(format!("duration {text:?} must be more than 0"));
        }
        Ok(CheckDuration {
            text: text.to_string(),
            value,
        })
    }

    pub fn get(&self) -> Duration {
        self.value
    }
}

impl TryFrom<String> for CheckDuration {
    type Error = String;
    fn try_from(text: String) -> Result<CheckDuration, String> {
        CheckDuration::parse(&text)
    }
}

impl From<CheckDuration> for String {
    fn from(d: CheckDuration) -> String {
        d.text
    }
}

/// A datacenter: a place with addresses that services answer with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Datacenter {
    pub id: String,
    pub location: Coordinates,
    pub addresses: Vec<IpAddr>,
    #[serde(default = "default_weight")]
    pub weight: u16,
    #[serde(default)]
    pub state: DcState,
    #[serde(default)]
    pub health: Health,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
}

fn default_weight() -> u16 {
    DEFAULT_WEIGHT
}

/// How a service picks datacenters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyKind {
    RoundRobin,
    Weighted,
    GeoNearest,
}

/// What a service answers when no datacenter is eligible.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnAllDown {
    /// Fail open: every datacenter of the service.
    #[default]
    All,
    /// NODATA.
    None,
}

/// A service: a name in a zone whose A/AAAA answers come from a pool of datacenters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// The zone's origin.
    pub zone: String,
    /// Relative to the zone; `@` for the apex.
    pub name: String,
    pub policy: PolicyKind,
    pub datacenters: Vec<String>,
    #[serde(default = "default_ttl")]
    pub ttl: u32,
    /// How many addresses go out; default 1 for `geo_nearest` and `weighted`, all for
    /// `round_robin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answers: Option<u16>,
    /// `country:GB` or `continent:EU` → datacenters to prefer, in order.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub overrides: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub on_all_down: OnAllDown,
}

fn default_ttl() -> u32 {
    DEFAULT_SERVICE_TTL
}

impl Service {
    /// The cap on addresses per answer, defaults applied.
    pub fn answer_cap(&self) -> usize {
        match (self.answers, self.policy) {
            (Some(n), _) => n as usize,
            (None, PolicyKind::RoundRobin) => usize::MAX,
            (None, _) => 1,
        }
    }
}

/// An override key: which clients it applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OverrideKey {
    Country([u8; 2]),
    Continent([u8; 2]),
}

impl OverrideKey {
    /// `country:GB` / `continent:EU` (any case).
    pub fn parse(s: &str) -> Result<OverrideKey, ModelError> {
        let bad = || {
            ModelError::Invalid(format!(
                "override key {s:?} must be country:XX or continent:XX"
            ))
        };
        let (kind, code) = s.split_once(':').ok_or_else(bad)?;
        let code = code.trim().to_ascii_uppercase();
        let bytes: [u8; 2] = code.as_bytes().try_into().map_err(|_| bad())?;
        if !bytes.iter().all(u8::is_ascii_alphabetic) {
            return Err(bad());
        }
        match kind.trim().to_ascii_lowercase().as_str() {
            "country" => Ok(OverrideKey::Country(bytes)),
            "continent" => Ok(OverrideKey::Continent(bytes)),
            _ => Err(bad()),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ModelError {
    #[error("{0}")]
    Invalid(String),
    #[error("unknown datacenter {0:?}")]
    UnknownDatacenter(String),
}

/// A datacenter id: 1–63 characters of `a-z`, `0-9`, `-`, `_`.
pub fn validate_id(id: &str) -> Result<(), ModelError> {
    let ok = !id.is_empty()
        && id.len() <= 63
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ModelError::Invalid(format!(
            "datacenter id {id:?} must be 1-63 characters of a-z, 0-9, '-' and '_'"
        )))
    }
}

impl Datacenter {
    pub fn validate(&self) -> Result<(), ModelError> {
        validate_id(&self.id)?;
        let Coordinates { lat, lon } = self.location;
        if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
            return Err(ModelError::Invalid(format!(
                "datacenter {}: location ({lat}, {lon}) is not a latitude in -90..90 and a longitude in -180..180",
                self.id
            )));
        }
        if self.addresses.is_empty() {
            return Err(ModelError::Invalid(format!(
                "datacenter {}: at least one address is required",
                self.id
            )));
        }
        if self.weight > MAX_WEIGHT {
            return Err(ModelError::Invalid(format!(
                "datacenter {}: weight {} is over {MAX_WEIGHT}",
                self.id, self.weight
            )));
        }
        if let Some(hc) = &self.health_check {
            validate_health_check(hc).map_err(|e| {
                ModelError::Invalid(format!("datacenter {}: health_check: {e}", self.id))
            })?;
        }
        Ok(())
    }
}

fn validate_health_check(hc: &HealthCheck) -> Result<(), String> {
    let (rise, fall) = match hc {
        HealthCheck::Http {
            url, rise, fall, ..
        } => {
            let rest = url
                .strip_prefix("http://")
                .or_else(|| url.strip_prefix("https://"))
                .ok_or_else(|| format!("url {url:?} must start with http:// or https://"))?;
            let hostport = rest.split('/').next().unwrap_or("");
            if hostport.is_empty() {
                return Err(format!("url {url:?} has no host"));
            }
            (rise, fall)
        }
        HealthCheck::Tcp {
            address,
            rise,
            fall,
            ..
        } => {
            address
                .parse::<SocketAddr>()
                .map_err(|_| format!("address {address:?} must be ip:port"))?;
            (rise, fall)
        }
    };
    for (what, n) in [("rise", rise), ("fall", fall)] {
        if *n == Some(0) {
            return Err(format!("{what} must be at least 1"));
        }
    }
    Ok(())
}

/// `"500ms"`, `"1s"`, `"2m"`, `"1.5s"`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map(|i| s.split_at(i))
        .ok_or_else(|| format!("duration {s:?} needs a unit (ms, s, m)"))?;
    let n: f64 = num
        .parse()
        .map_err(|_| format!("duration {s:?} is not a number with a unit"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("duration {s:?}: unit must be ms, s or m")),
    };
    if !(0.0..=86400.0).contains(&secs) {
        return Err(format!("duration {s:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

impl Service {
    /// Check the definition against the known datacenter ids.
    pub fn validate<'a>(&self, mut known: impl FnMut(&str) -> bool + 'a) -> Result<(), ModelError> {
        let who = format!("service {} in {}", self.name, self.zone);
        if self.name.trim().is_empty() {
            return Err(ModelError::Invalid(format!("{who}: name is empty")));
        }
        if self.datacenters.is_empty() {
            return Err(ModelError::Invalid(format!(
                "{who}: at least one datacenter is required"
            )));
        }
        for dc in self
            .datacenters
            .iter()
            .chain(self.overrides.values().flatten())
        {
            if !known(dc) {
                return Err(ModelError::UnknownDatacenter(dc.clone()));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for dc in &self.datacenters {
            if !seen.insert(dc) {
                return Err(ModelError::Invalid(format!(
                    "{who}: datacenter {dc:?} is listed twice"
                )));
            }
        }
        for key in self.overrides.keys() {
            OverrideKey::parse(key).map_err(|e| ModelError::Invalid(format!("{who}: {e}")))?;
        }
        if self.answers == Some(0) {
            return Err(ModelError::Invalid(format!(
                "{who}: answers must be at least 1"
            )));
        }
        if self.ttl > 604_800 {
            return Err(ModelError::Invalid(format!(
                "{who}: ttl {} is over a week",
                self.ttl
            )));
        }
        Ok(())
    }
}

/// The bootstrap `datacenters.toml`: `[[datacenter]]` tables.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatacentersFile {
    #[serde(default)]
    pub datacenter: Vec<Datacenter>,
}

/// The bootstrap `services.toml`: `[[service]]` tables.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServicesFile {
    #[serde(default)]
    pub service: Vec<Service>,
}

/// Definitions for the unit tests of every module: one shape, with the values a test cares
/// about as arguments (change a field with `Datacenter { weight, ..datacenter(…) }`).
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    /// An active datacenter of unknown health, weight 100, one address, no health check.
    pub fn datacenter(id: &str, lat: f64, lon: f64, addr: &str) -> Datacenter {
        Datacenter {
            id: id.into(),
            location: Coordinates { lat, lon },
            addresses: vec![addr.parse().expect("ip")],
            weight: 100,
            state: DcState::Active,
            health: Health::Unknown,
            health_check: None,
        }
    }

    /// A service over `dcs` in their order: TTL 60, the policy's default answer count,
    /// no overrides, failing open.
    pub fn service(zone: &str, name: &str, policy: PolicyKind, dcs: &[&str]) -> Service {
        Service {
            zone: zone.into(),
            name: name.into(),
            policy,
            datacenters: dcs.iter().map(|s| s.to_string()).collect(),
            ttl: 60,
            answers: None,
            overrides: Default::default(),
            on_all_down: OnAllDown::All,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dc() -> Datacenter {
        fixtures::datacenter("lon", 51.5, -0.1, "192.0.2.1")
    }

    #[test]
    fn datacenter_validation() {
        assert!(dc().validate().is_ok());
        let mut bad = dc();
        bad.location.lat = 91.0;
        assert!(bad.validate().is_err());
        let mut bad = dc();
        bad.weight = 1001;
        assert!(bad.validate().is_err());
        let mut bad = dc();
        bad.id = "Bad Id".into();
        assert!(bad.validate().is_err());
        let mut bad = dc();
        bad.addresses.clear();
        assert!(bad.validate().is_err());
    }

    #[test]
    fn toml_datacenters_and_services() {
        let dcs: DatacentersFile = toml::from_str(
            "[[datacenter]]\nid = \"lon\"\nlocation = { lat = 51.5, lon = -0.1 }\naddresses = [\"192.0.2.1\", \"2001:db8::1\"]\nhealth_check = { kind = \"tcp\", address = \"127.0.0.1:80\", interval = \"500ms\" }\n",
        )
        .expect("parse");
        assert_eq!(dcs.datacenter[0].weight, DEFAULT_WEIGHT);
        assert!(dcs.datacenter[0].validate().is_ok());
        let svcs: ServicesFile = toml::from_str(
            "[[service]]\nzone = \"example.com\"\nname = \"www\"\npolicy = \"geo_nearest\"\ndatacenters = [\"lon\"]\noverrides = { \"country:GB\" = [\"lon\"] }\n",
        )
        .expect("parse");
        let s = &svcs.service[0];
        assert_eq!(s.answer_cap(), 1);
        assert!(s.validate(|id| id == "lon").is_ok());
        assert_eq!(
            s.validate(|_| false),
            Err(ModelError::UnknownDatacenter("lon".into()))
        );
        let bad: Result<ServicesFile, _> = toml::from_str(
            "[[service]]\nzone = \"example.com\"\nname = \"www\"\npolicy = \"nearest\"\ndatacenters = [\"lon\"]\n",
        );
        assert!(bad.is_err(), "unknown policy refused");
    }

    #[test]
    fn override_keys_and_durations() {
        assert_eq!(
            OverrideKey::parse("country:gb"),
            Ok(OverrideKey::Country(*b"GB"))
        );
        assert_eq!(
            OverrideKey::parse("continent:EU"),
            Ok(OverrideKey::Continent(*b"EU"))
        );
        assert!(OverrideKey::parse("city:London").is_err());
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert!(parse_duration("5").is_err());
    }
}
