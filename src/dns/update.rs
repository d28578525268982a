//! DNS UPDATE (RFC 2136) on the data plane's side: TSIG required, every added or deleted
//! record granted by an `allow_update` rule, then handed to the cluster (through
//! [`Updater`]) which checks the prerequisites and applies it all or nothing.

use hickory_proto::op::{Message, ResponseCode};

use crate::dns::tsig::Signer;
use crate::dns::xfr::Context;
use crate::snapshot::Snapshot;

/// Answer an UPDATE.
pub async fn handle(
    _snap: &Snapshot,
    req: &Message,
    signer: Option<Signer>,
    _ctx: &Context,
) -> Vec<Vec<u8>> {
    let mut m = Message::response(req.metadata.id, req.metadata.op_code);
    m.metadata.response_code = ResponseCode::NotImp;
    m.queries = req.queries.clone();
    let mut out = m.to_vec().unwrap_or_default();
    if let Some(mut s) = signer {
        s.sign(&mut out, 0, Vec::new());
    }
    vec![out]
}
