//! The admin API's request and response bodies, shared with `meridian apply`.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::cluster::ClusterStatus;
use crate::model::{
    Coordinates, Datacenter, DcState, Health, HealthCheck, OnAllDown, PolicyKind, Service,
    DEFAULT_SERVICE_TTL, DEFAULT_WEIGHT,
};

/// Every error body: `{"error": "..."}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    /// For a write: what became of it, `not_applied` (refused before it was proposed) or
    /// `unknown` (proposed, not seen committed in time: it may still apply).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
}

/// `PUT /datacenters/{id}`: a datacenter's definition. `id` may be left out (it comes from
/// the URL) or must match it; `state` is changed only when named; `health` is accepted (so
/// that a `GET` body can be sent back) and ignored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatacenterSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub location: Coordinates,
    pub addresses: Vec<IpAddr>,
    #[serde(default = "default_weight")]
    pub weight: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<DcState>,
    /// Ignored: health is the probes' verdict, not a definition.
    #[serde(default, skip_serializing)]
    pub health: Option<Health>,
    /// Ignored: the nodes' health opinions, as a GET shows them (so a GET body can be
    /// sent back as a PUT).
    #[serde(default, skip_serializing)]
    pub opinions: Option<serde_json::Value>,
    /// Ignored: the version a GET shows (send it as `If-Match` instead).
    #[serde(default, skip_serializing)]
    pub version: Option<serde_json::Value>,
    /// Ignored: this node's share of answers, as a GET shows it.
    #[serde(default, skip_serializing)]
    pub answers_share: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
}

fn default_weight() -> u16 {
    DEFAULT_WEIGHT
}

impl DatacenterSpec {
    /// The definition of `dc`; its state only when `with_state`.
    pub fn from_datacenter(dc: &Datacenter, with_state: bool) -> DatacenterSpec {
        DatacenterSpec {
            id: Some(dc.id.clone()),
            location: dc.location,
            addresses: dc.addresses.clone(),
            weight: dc.weight,
            state: with_state.then_some(dc.state),
            health: None,
            opinions: None,
            version: None,
            answers_share: None,
            health_check: dc.health_check.clone(),
        }
    }

    /// The datacenter `id` this defines (state active and health unknown until the state
    /// machine merges it with what it has), and the state to set, if named.
    pub fn to_datacenter(&self, id: &str) -> (Datacenter, Option<DcState>) {
        let dc = Datacenter {
            id: id.to_string(),
            location: self.location,
            addresses: self.addresses.clone(),
            weight: self.weight,
            state: self.state.unwrap_or_default(),
            health: Health::Unknown,
            health_check: self.health_check.clone(),
        };
        (dc, self.state)
    }

    /// Whether `dc` already has this definition (and this state, when it names one).
    pub fn matches(&self, dc: &Datacenter) -> bool {
        self.location == dc.location
            && self.addresses == dc.addresses
            && self.weight == dc.weight
            && self.health_check == dc.health_check
            && self.state.is_none_or(|s| s == dc.state)
    }
}

/// `PATCH /datacenters/{id}`: a new weight and/or state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatacenterPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<DcState>,
}

/// `PUT /zones/{origin}/services/{name}`: a service's definition. `zone` and `name` come
/// from the URL; when the body names them they must match it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub policy: PolicyKind,
    pub datacenters: Vec<String>,
    #[serde(default = "default_ttl")]
    pub ttl: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answers: Option<u16>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub overrides: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub on_all_down: OnAllDown,
    /// Ignored: the version a GET shows (send it as `If-Match` instead).
    #[serde(default, skip_serializing)]
    pub version: Option<serde_json::Value>,
}

fn default_ttl() -> u32 {
    DEFAULT_SERVICE_TTL
}

impl ServiceSpec {
    /// The definition of `svc`, without its zone and name.
    pub fn from_service(svc: &Service) -> ServiceSpec {
        ServiceSpec {
            zone: None,
            name: None,
            policy: svc.policy,
            datacenters: svc.datacenters.clone(),
            ttl: svc.ttl,
            answers: svc.answers,
            overrides: svc.overrides.clone(),
            on_all_down: svc.on_all_down,
            version: None,
        }
    }

    /// The service `name` in `zone` this defines.
    pub fn to_service(
        &self,
        zone: &crate::name::ZoneName,
        name: &crate::name::ServiceName,
    ) -> Service {
        Service {
            zone: zone.to_string(),
            name: name.to_string(),
            policy: self.policy,
            datacenters: self.datacenters.clone(),
            ttl: self.ttl,
            answers: self.answers,
            overrides: self.overrides.clone(),
            on_all_down: self.on_all_down,
        }
    }

    /// Whether `svc` already has this definition (zone and name aside).
    pub fn matches(&self, svc: &Service) -> bool {
        self.policy == svc.policy
            && self.datacenters == svc.datacenters
            && self.ttl == svc.ttl
            && self.answers == svc.answers
            && self.overrides == svc.overrides
            && self.on_all_down == svc.on_all_down
    }
}

/// `POST /cluster/members`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberRequest {
    pub id: u64,
    /// The new node's Raft address, `ip:port`.
    pub addr: String,
    /// Its admin API address, `ip:port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<String>,
    /// A voter (default) or a learner that only follows.
    #[serde(default = "yes")]
    pub voter: bool,
}

fn yes() -> bool {
    true
}

/// This node's GeoIP database.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GeoInfo {
    pub build_epoch: u64,
    pub description: String,
}

/// `GET /cluster`: the Raft view plus what this node serves from.
#[derive(Clone, Debug, Serialize)]
pub struct ClusterView {
    #[serde(flatten)]
    pub status: ClusterStatus,
    /// The generation of the snapshot this node answers from.
    pub snapshot_generation: u64,
    pub geoip: GeoInfo,
}

/// `GET /explain` query parameters.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ExplainQuery {
    pub name: Option<String>,
    #[serde(rename = "type")]
    pub qtype: Option<String>,
    pub client: Option<String>,
}
