//! `meridian explain` and `GET /explain`: the answer a client would get, and why.
//!
//! The answer is the real one: a query is built and run through the same [`answer`] as
//! the data plane (with the client as a /32 or /128 EDNS Client Subnet), then decoded.
//! The reasons (where the client is, each candidate's distance, weight, state and health)
//! are worked out beside it from the same snapshot. An [`Explanation`] reads back from the
//! JSON it is sent as, so `meridian explain --admin` prints a live node's answer exactly as
//! the offline form prints its own.

use std::net::IpAddr;

use hickory_proto::op::Message;
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use hickory_proto::rr::{Name, RecordType};
use serde::{Deserialize, Serialize};

use crate::dns::{self, answer, Client, Transport};
use crate::geo::distance_km;
use crate::model::{DcState, Health, PolicyKind};
use crate::snapshot::Snapshot;
use crate::zone::wire_lower;

/// The answer and its reasons.
#[derive(Debug, Serialize, Deserialize)]
pub struct Explanation {
    pub name: String,
    pub qtype: String,
    pub client: IpAddr,
    pub rcode: String,
    pub authoritative: bool,
    pub answers: Vec<String>,
    pub authority: Vec<String>,
    /// The ECS scope prefix the answer holds for.
    pub ecs_scope: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceWhy>,
}

/// Why a service answered as it did.
#[derive(Debug, Serialize, Deserialize)]
pub struct ServiceWhy {
    pub policy: PolicyKind,
    pub client_location: Option<ClientPlace>,
    /// The database network the client is in (prefix length).
    pub client_network_prefix: u8,
    pub candidates: Vec<Candidate>,
    pub answers_cap: Option<usize>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ClientPlace {
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    pub country: Option<String>,
    pub continent: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Candidate {
    pub id: String,
    pub distance_km: Option<f64>,
    pub weight: u16,
    pub state: DcState,
    pub health: Health,
    pub eligible: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error("bad name {0:?}: {1}")]
    Name(String, String),
    #[error("unknown record type {0:?}")]
    Type(String),
    #[error("the reply could not be decoded: {0}")]
    Decode(String),
}

/// Explain the answer to `name`/`qtype` for a client at `client`.
pub fn explain(
    snap: &Snapshot,
    name: &str,
    qtype: &str,
    client: IpAddr,
) -> Result<Explanation, ExplainError> {
    let mut qname = Name::from_ascii(name.trim())
        .map_err(|e| ExplainError::Name(name.into(), e.to_string()))?;
    qname.set_fqdn(true);
    let rtype: RecordType = qtype
        .trim()
        .to_ascii_uppercase()
        .parse()
        .map_err(|_| ExplainError::Type(qtype.into()))?;
    let query = build_query(&qname, u16::from(rtype), client);
    let req = dns::parse(&query).ok_or_else(|| ExplainError::Decode("query".into()))?;
    let mut out = Vec::new();
    answer(
        snap,
        &req,
        &Client {
            source: client,
            transport: Transport::Tcp,
            cookie: crate::dns::Cookie::None,
        },
        &mut out,
    );
    let msg = Message::from_vec(&out).map_err(|e| ExplainError::Decode(e.to_string()))?;
    let ecs_scope = msg
        .edns
        .as_ref()
        .and_then(|e| match e.option(EdnsCode::Subnet) {
            Some(EdnsOption::Subnet(cs)) => Some(cs.scope_prefix()),
            _ => None,
        });
    let service = service_why(snap, &qname, client);
    Ok(Explanation {
        name: qname.to_string(),
        qtype: rtype.to_string(),
        client,
        rcode: rcode_name(u16::from(msg.metadata.response_code)),
        authoritative: msg.metadata.authoritative,
        answers: msg.answers.iter().map(|r| r.to_string()).collect(),
        authority: msg.authorities.iter().map(|r| r.to_string()).collect(),
        ecs_scope,
        service,
    })
}

/// RCODE mnemonics as dig prints them.
fn rcode_name(code: u16) -> String {
    match code {
        0 => "NOERROR".into(),
        1 => "FORMERR".into(),
        2 => "SERVFAIL".into(),
        3 => "NXDOMAIN".into(),
        4 => "NOTIMP".into(),
        5 => "REFUSED".into(),
        16 => "BADVERS".into(),
        n => format!("RCODE{n}"),
    }
}

fn build_query(name: &Name, qtype: u16, client: IpAddr) -> Vec<u8> {
    let mut p = vec![0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1];
    p.extend_from_slice(&crate::zone::wire(name));
    p.extend_from_slice(&qtype.to_be_bytes());
    p.extend_from_slice(&[0, 1]);
    let (family, addr): (u16, Vec<u8>) = match client {
        IpAddr::V4(a) => (1, a.octets().to_vec()),
        IpAddr::V6(a) => (2, a.octets().to_vec()),
    };
    let ecs_len = 4 + addr.len();
    p.extend_from_slice(&[0, 0, 41, 0xff, 0xff, 0, 0, 0, 0]);
    p.extend_from_slice(&((4 + ecs_len) as u16).to_be_bytes());
    p.extend_from_slice(&8u16.to_be_bytes());
    p.extend_from_slice(&(ecs_len as u16).to_be_bytes());
    p.extend_from_slice(&family.to_be_bytes());
    p.push((addr.len() * 8) as u8);
    p.push(0);
    p.extend_from_slice(&addr);
    p
}

fn service_why(snap: &Snapshot, qname: &Name, client: IpAddr) -> Option<ServiceWhy> {
    let lower = wire_lower(qname);
    let zone = snap.zones.find(&lower)?;
    let idx = zone.node(&lower)?.service()?;
    let plan = snap.plans.get(idx as usize)?.as_deref()?;
    let (loc, prefix) = snap.geo.locate(client);
    let coords = loc.and_then(|l| l.coords);
    let code = |c: Option<[u8; 2]>| c.map(|c| String::from_utf8_lossy(&c).into_owned());
    let candidates = plan
        .members
        .iter()
        .map(|&m| {
            let e = &snap.dcs.entries[m as usize];
            let here = (e.def.location.lat, e.def.location.lon);
            Candidate {
                id: e.def.id.clone(),
                distance_km: coords.map(|c| (distance_km(c, here) * 10.0).round() / 10.0),
                weight: e.def.weight,
                state: e.def.state,
                health: e.def.health,
                eligible: e.def.state == DcState::Active && e.def.health != Health::Unhealthy,
            }
        })
        .collect();
    Some(ServiceWhy {
        policy: plan.service.policy,
        client_location: loc.map(|l| ClientPlace {
            lat: l.coords.map(|c| c.0),
            lon: l.coords.map(|c| c.1),
            country: code(l.country),
            continent: code(l.continent),
        }),
        client_network_prefix: prefix,
        candidates,
        answers_cap: (plan.cap != usize::MAX).then_some(plan.cap),
    })
}

impl std::fmt::Display for Explanation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "question: {} {} from {}",
            self.name, self.qtype, self.client
        )?;
        writeln!(
            f,
            "answer:   {}{}",
            self.rcode,
            if self.authoritative {
                " (authoritative)"
            } else {
                ""
            }
        )?;
        for a in &self.answers {
            writeln!(f, "  {a}")?;
        }
        for a in &self.authority {
            writeln!(f, "  authority: {a}")?;
        }
        if let Some(s) = self.ecs_scope {
            writeln!(f, "ecs scope: /{s}")?;
        }
        if let Some(svc) = &self.service {
            writeln!(f, "service policy: {:?}", svc.policy)?;
            match &svc.client_location {
                Some(l) => writeln!(
                    f,
                    "client location: {} {} ({}, {}) in a /{} network",
                    l.country.as_deref().unwrap_or("-"),
                    l.continent.as_deref().unwrap_or("-"),
                    l.lat.map_or("-".into(), |v| v.to_string()),
                    l.lon.map_or("-".into(), |v| v.to_string()),
                    svc.client_network_prefix
                )?,
                None => writeln!(
                    f,
                    "client location: not in the database (/{} network): datacenters in listed order",
                    svc.client_network_prefix
                )?,
            }
            writeln!(f, "candidates:")?;
            for c in &svc.candidates {
                writeln!(
                    f,
                    "  {:<16} {:>10} weight {:>4}  {:?}/{:?}{}",
                    c.id,
                    c.distance_km.map_or("-".into(), |d| format!("{d:.0} km")),
                    c.weight,
                    c.state,
                    c.health,
                    if c.eligible { "" } else { "  (not eligible)" }
                )?;
            }
        }
        Ok(())
    }
}
