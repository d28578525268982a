//! DNS UPDATE (RFC 2136) into the cluster: the data plane's [`Updater`] that proposes an
//! update as one Raft command (forwarded to the leader like any write) and maps the
//! committed result to the reply's RCODE.

use hickory_proto::op::ResponseCode;

use crate::cluster::Handle;
use crate::dns::xfr::{UpdateRequest, Updater};

/// Proposes updates through this node's Raft handle.
pub struct ClusterUpdater {
    #[allow(dead_code)]
    handle: Handle,
}

impl ClusterUpdater {
    pub fn new(handle: Handle) -> ClusterUpdater {
        ClusterUpdater { handle }
    }
}

impl Updater for ClusterUpdater {
    fn update(
        &self,
        _request: UpdateRequest,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ResponseCode> + Send + '_>> {
        Box::pin(async { ResponseCode::NotImp })
    }
}
