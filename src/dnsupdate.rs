//! DNS UPDATE (RFC 2136) into the cluster: the data plane's [`Updater`] that proposes an
//! update as one Raft command (forwarded to the leader like any write, under a request id
//! so a retried forward never applies twice) and maps the committed result to the reply's
//! RCODE once this node's DNS shows it.

use std::time::Duration;

use hickory_proto::op::ResponseCode;

use crate::cluster::{Command, Handle, Request, Response};
use crate::dns::xfr::{UpdateRequest, Updater};

/// How long an accepted update waits for this node's DNS to show it before answering.
const PUBLISH_WAIT: Duration = Duration::from_secs(2);

/// Proposes updates through this node's Raft handle.
pub struct ClusterUpdater {
    handle: Handle,
    /// The log index this node's DNS reflects.
    published: Option<tokio::sync::watch::Receiver<Option<u64>>>,
}

impl ClusterUpdater {
    pub fn new(
        handle: Handle,
        published: Option<tokio::sync::watch::Receiver<Option<u64>>>,
    ) -> ClusterUpdater {
        ClusterUpdater { handle, published }
    }

    async fn propose(&self, request: UpdateRequest) -> ResponseCode {
        let key = request.key.clone();
        let zone = request.zone.clone();
        let actor = format!("dns-update:{}", request.key);
        let cmd = Command::DnsUpdate {
            zone: request.zone,
            key: request.key,
            prereqs: request.prerequisites,
            updates: request.updates,
        };
        let req = Request::with_id(cmd, request.request_id).by(&actor);
        let committed = match self.handle.propose(req).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(%zone, %key, error = %e, "DNS update not committed");
                return ResponseCode::ServFail;
            }
        };
        let rcode = match committed.response {
            Response::DnsUpdate { rcode } => <ResponseCode as From<u16>>::from(rcode),
            other => {
                tracing::error!(%zone, response = ?other, "unexpected answer to a DNS update");
                return ResponseCode::ServFail;
            }
        };
        if rcode == ResponseCode::NoError {
            if let Some(published) = &self.published {
                let mut rx = published.clone();
                let index = committed.index;
                let shown = tokio::time::timeout(
                    PUBLISH_WAIT,
                    rx.wait_for(|p| p.is_some_and(|p| p >= index)),
                )
                .await;
                if !matches!(shown, Ok(Ok(_))) {
                    tracing::warn!(
                        index,
                        "update committed, but this node's DNS does not show it yet"
                    );
                }
            }
        }
        tracing::info!(%zone, %key, index = committed.index, %rcode, "DNS update");
        rcode
    }
}

impl Updater for ClusterUpdater {
    fn update(
        &self,
        request: UpdateRequest,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ResponseCode> + Send + '_>> {
        Box::pin(self.propose(request))
    }
}
