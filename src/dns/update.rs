//! DNS UPDATE (RFC 2136) on the data plane's side: TSIG required, the sections prescanned,
//! every added or deleted record granted by an `allow_update` rule (checked here on the
//! published snapshot for a cheap early answer, and again by the state machine), then
//! handed to the cluster (through [`Updater`]) which checks the prerequisites against the
//! committed zone and applies it all or nothing. The reply comes after the commit, signed
//! with the request's key.
//!
//! [`Updater`]: crate::dns::xfr::Updater

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{DNSClass, RecordType};

use crate::dns::tsig::Signer;
use crate::dns::xfr::{Context, UpdateRequest};
use crate::snapshot::Snapshot;
use crate::zone::update::{self, UpdateRr};
use crate::zone::wire_lower;

/// Answer an UPDATE: one reply, signed when the request was.
pub async fn handle(
    snap: &Snapshot,
    req: &Message,
    signer: Option<Signer>,
    ctx: &Context,
) -> Vec<Vec<u8>> {
    let rcode = decide(snap, req, signer.as_ref(), ctx).await;
    let mut m = Message::response(req.metadata.id, req.metadata.op_code);
    m.metadata.response_code = rcode;
    // The zone section is echoed; the others are not (RFC 2136 §3.8).
    m.queries = req.queries.clone();
    let mut out = m.to_vec().unwrap_or_default();
    if let Some(mut s) = signer {
        s.sign(&mut out, 0, Vec::new());
    }
    vec![out]
}

async fn decide(
    snap: &Snapshot,
    req: &Message,
    signer: Option<&Signer>,
    ctx: &Context,
) -> ResponseCode {
    // Only TSIG-signed updates (a failed signature was answered NOTAUTH before here).
    let Some(signer) = signer else {
        return ResponseCode::Refused;
    };
    let key = signer.key.name.as_str();
    // RFC 2136 §3.1.1: one zone, type SOA.
    let [zq] = &req.queries[..] else {
        return ResponseCode::FormErr;
    };
    if zq.query_type() != RecordType::SOA || zq.query_class() != DNSClass::IN {
        return ResponseCode::FormErr;
    }
    let origin = wire_lower(&zq.name().to_lowercase());
    let Some(zone) = snap.xfr.get(&origin[..]) else {
        // RFC 2136 §3.1.2 says NOTAUTH; DESIGN.md answers what is not granted REFUSED, and
        // keeps NOTAUTH for TSIG failures.
        return ResponseCode::Refused;
    };
    let (prereqs, updates) = (&req.answers, &req.authorities);
    if let Err(rcode) = update::prescan(&zone.origin, prereqs, updates) {
        return rcode;
    }
    // The early look at the grants and the untouchable (the state machine decides).
    let services: Vec<_> = zone.services.iter().map(|r| &r.name).collect();
    for rr in updates {
        if rr.record_type() == RecordType::SOA || services.contains(&&rr.name) {
            return ResponseCode::Refused;
        }
        if rr.record_type() == RecordType::ANY
            && !zone
                .settings
                .update_name_granted(key, &rr.name.to_lowercase())
        {
            return ResponseCode::Refused;
        }
    }
    for (name, rtype) in update::touched(&zone.origin, &zone.file, updates) {
        if !zone.settings.update_granted(key, &name, rtype) {
            tracing::info!(key, %name, %rtype, "update refused: not granted");
            return ResponseCode::Refused;
        }
    }
    let encode = |rrs: &[hickory_proto::rr::Record]| -> Option<Vec<UpdateRr>> {
        rrs.iter().map(UpdateRr::from_record).collect()
    };
    let (Some(prerequisites), Some(updates)) = (encode(prereqs), encode(updates)) else {
        return ResponseCode::FormErr;
    };
    let Some(updater) = &ctx.updater else {
        return ResponseCode::NotImp;
    };
    let mac: String = signer
        .request_mac()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let request = UpdateRequest {
        zone: zone.origin.to_lowercase().to_ascii(),
        key: key.to_string(),
        prerequisites,
        updates,
        request_id: format!("dns-update:{key}:{mac}"),
    };
    updater.update(request).await
}
