//! Pre-vote (Raft thesis §9.6), which openraft 0.9 lacks: this node campaigns only after a
//! majority of the voters said they would vote for it, so that a node cut off from the
//! others never raises its term and, when it comes back, never deposes a healthy leader.
//!
//! openraft's own elections are off (`Config::enable_elect = false`, which also drops its
//! `seen_greater_log` penalty of 2 × `election_timeout_max`): [`campaign`] is the only
//! timer. When this node has heard from no leader, and its vote has not moved, for its
//! election timeout (drawn anew for each attempt), it asks every other voter over
//! `POST /raft/prevote` (served, like the other Raft routes, to peers only); a voter says
//! yes only if it has itself heard from no leader, and its vote has not moved, for
//! [`GRANT_AFTER`], and the candidate's last log id is at least its own — the checks a
//! real vote makes (openraft refuses a vote while its leader lease runs, which is
//! `election_timeout_max` since the leader was last heard: [`GRANT_AFTER`] is that lease,
//! so a pre-vote granted is a vote that will be). On a majority of every voter set (a joint
//! membership has two), the node calls `raft.trigger().elect()`.
//!
//! "Heard from a leader" is [`Contact::heard_within`]: an AppendEntries accepted from a
//! leader, or, on the leader, a quorum of acknowledgements (see `raft.rs`). "Its vote has
//! not moved" is openraft's own lease clock ([`vote_age`]): a node that just voted for a
//! candidate waits for that candidate's heartbeats instead of starting another election
//! (seen in the fault test: a second election right after one was won).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Extension, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;
use openraft::LogId;
use serde::{Deserialize, Serialize};

use crate::cluster::network::{Contact, ForwardError, Network};
use crate::cluster::types::Raft;
use crate::serve::Peer;

/// The route a candidate asks its peers on.
pub const PATH: &str = "/raft/prevote";

/// How long a voter must have heard from no leader before it grants a pre-vote: openraft's
/// leader lease (`election_timeout_max`), after which it grants a real vote too.
pub const GRANT_AFTER: Duration = Duration::from_millis(1200);

/// The range this node's election timeout is drawn from, for each attempt: past
/// [`GRANT_AFTER`] by at least a heartbeat or so (the peers heard the last heartbeat about
/// when this node did), spread wide enough that two candidates seldom ask at once.
const TIMEOUT_MIN: Duration = Duration::from_millis(1350);
const TIMEOUT_MAX: Duration = Duration::from_millis(1950);
/// How often the campaign timer looks.
const TICK: Duration = Duration::from_millis(50);
/// How long a candidate waits for each peer's answer (a peer cut off does not answer at all).
const ASK_TIMEOUT: Duration = Duration::from_millis(500);
/// How often the only voter of a cluster tries again when it does not lead.
const SOLE_VOTER_RETRY: Duration = Duration::from_millis(500);
/// Body limit of `/raft/prevote`.
const MAX_BODY: usize = 16 * 1024;

/// What a candidate asks: would you vote for me?
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreVoteRequest {
    pub candidate: u64,
    /// The candidate's current term (it would campaign in the next one); for the logs.
    pub term: u64,
    /// The candidate's last log id.
    pub last_log_id: Option<LogId<u64>>,
}

/// A voter's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreVoteAnswer {
    pub granted: bool,
    /// The voter's current term.
    pub term: u64,
    /// Why not, when not granted.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// How long ago this node's vote last changed or was renewed by its leader (openraft's lease
/// clock: a vote granted, or an AppendEntries of the leader voted for); `None`: never, or
/// Raft has stopped.
pub async fn vote_age(raft: &Raft) -> Option<Duration> {
    raft.with_raft_state(|st| st.vote_last_modified().map(|t| t.elapsed()))
        .await
        .ok()
        .flatten()
}

/// Whether this node would vote for `req`, and why not: only when its log is not longer
/// than the candidate's, it has heard from no leader for [`GRANT_AFTER`], and its vote has
/// not moved for as long (a node that just voted for another candidate waits for that
/// candidate's heartbeats first, as a follower that grants a vote restarts its timer).
pub async fn judge(raft: &Raft, contact: &Contact, req: &PreVoteRequest) -> PreVoteAnswer {
    let term = raft.metrics().borrow().current_term;
    let mine = raft.data_metrics().borrow().last_log;
    let reason = if req.last_log_id < mine {
        format!(
            "the candidate's log ({:?}) is behind this node's ({mine:?})",
            req.last_log_id
        )
    } else if contact.heard_within(GRANT_AFTER) {
        "a leader was heard within the election timeout".to_string()
    } else if vote_age(raft).await.is_some_and(|age| age < GRANT_AFTER) {
        "this node voted, or heard its leader, within the election timeout".to_string()
    } else {
        String::new()
    };
    PreVoteAnswer {
        granted: reason.is_empty(),
        term,
        reason,
    }
}

#[derive(Clone)]
struct Served {
    raft: Raft,
    contact: Arc<Contact>,
}

/// The `/raft/prevote` route; merged into the Raft router, behind its peer checks (secret,
/// member certificate, JSON).
pub fn routes(raft: Raft, contact: Arc<Contact>) -> Router {
    Router::new()
        .route(PATH, post(serve).layer(DefaultBodyLimit::max(MAX_BODY)))
        .with_state(Served { raft, contact })
}

async fn serve(
    State(st): State<Served>,
    peer: Option<Extension<Peer>>,
    body: Result<Bytes, BytesRejection>,
) -> axum::response::Response {
    let req: PreVoteRequest = match body.map(|b| serde_json::from_slice(&b)) {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            return ForwardError::BadRequest(format!("not a pre-vote request: {e}")).into_response()
        }
        Err(r) => return ForwardError::BadRequest(r.body_text()).into_response(),
    };
    // Over mutual TLS a node asks for itself only.
    if let Some(Extension(Peer {
        authenticated: true,
        node_id,
        ..
    })) = peer
    {
        if node_id != Some(req.candidate) {
            return ForwardError::Forbidden(format!(
                "a pre-vote for node {} from the certificate of node {node_id:?}",
                req.candidate
            ))
            .into_response();
        }
    }
    let answer = judge(&st.raft, &st.contact, &req).await;
    tracing::debug!(candidate = req.candidate, granted = answer.granted, reason = %answer.reason, "pre-vote asked");
    (StatusCode::OK, axum::Json(answer)).into_response()
}

/// Whether `yes` (voters that granted, this node included) is a majority of every set in
/// `configs` (one, or two during a joint membership change).
pub fn is_majority(configs: &[BTreeSet<u64>], yes: &BTreeSet<u64>) -> bool {
    !configs.is_empty()
        && configs
            .iter()
            .all(|c| c.intersection(yes).count() * 2 > c.len())
}

fn draw_timeout() -> Duration {
    let spread = (TIMEOUT_MAX - TIMEOUT_MIN).as_millis() as u64;
    TIMEOUT_MIN + Duration::from_millis(rand::random::<u64>() % (spread + 1))
}

/// The campaign timer of node `me`: ends with the Raft node (when `alive` says so).
pub async fn campaign(
    raft: Raft,
    network: Network,
    me: u64,
    alive: impl Fn() -> bool + Send + 'static,
) {
    let mut timeout = draw_timeout();
    let mut last_attempt: Option<Instant> = None;
    loop {
        tokio::time::sleep(TICK).await;
        if !alive() {
            return;
        }
        let m = raft.metrics().borrow().clone();
        if m.running_state.is_err() {
            return;
        }
        let membership = m.membership_config.membership().clone();
        if m.current_leader == Some(me) || !membership.voter_ids().any(|v| v == me) {
            continue;
        }
        let configs: Vec<BTreeSet<u64>> = membership.get_joint_config().clone();
        // The only voter has nobody to wait for or to ask.
        if is_majority(&configs, &BTreeSet::from([me])) {
            if last_attempt.is_none_or(|t| t.elapsed() >= SOLE_VOTER_RETRY) {
                last_attempt = Some(Instant::now());
                if let Err(e) = raft.trigger().elect().await {
                    tracing::warn!(error = %e, "cannot start an election");
                    return;
                }
            }
            continue;
        }
        if network.contact.heard_within(timeout)
            || last_attempt.is_some_and(|t| t.elapsed() < timeout)
        {
            continue;
        }
        // A node that voted lately (for a candidate whose heartbeats are on their way)
        // waits as long as if it had heard a leader.
        if vote_age(&raft).await.is_some_and(|age| age < timeout) {
            continue;
        }
        let asked_at = Instant::now();
        last_attempt = Some(asked_at);
        timeout = draw_timeout();
        let req = PreVoteRequest {
            candidate: me,
            term: m.current_term,
            last_log_id: raft.data_metrics().borrow().last_log,
        };
        let voters: BTreeSet<u64> = configs.iter().flatten().copied().collect();
        let mut asks = tokio::task::JoinSet::new();
        for &v in voters.iter().filter(|&&v| v != me) {
            let Some(node) = membership.get_node(&v) else {
                continue;
            };
            let (addr, network, req) = (node.raft.clone(), network.clone(), req.clone());
            asks.spawn(async move { (v, network.prevote(v, &addr, &req, ASK_TIMEOUT).await) });
        }
        let mut yes = BTreeSet::from([me]);
        let mut refusals = Vec::new();
        // Until a majority said yes (a peer cut off is not waited for) or all answered.
        while !is_majority(&configs, &yes) {
            let Some(answer) = asks.join_next().await else {
                break;
            };
            let Ok((v, r)) = answer else { continue };
            match r {
                // A peer from before pre-vote has no route for it: its answer is the real
                // vote (openraft still checks the log), so a rolling upgrade can elect.
                Ok(PreVoteAnswer { granted: true, .. }) | Err(ForwardError::NotServed(_)) => {
                    yes.insert(v);
                }
                Ok(a) => refusals.push(format!("{v}: {}", a.reason)),
                Err(e) => refusals.push(format!("{v}: {e}")),
            }
        }
        asks.abort_all();
        // A leader heard meanwhile (an election that ended while this node asked, or a
        // heartbeat that crossed the question): stand down.
        let now = raft.metrics().borrow().clone();
        if network.contact.heard_within(asked_at.elapsed()) || now.current_term != m.current_term {
            continue;
        }
        if is_majority(&configs, &yes) {
            tracing::info!(term = m.current_term, granted = ?yes, "pre-vote won: campaigning for the next term");
            if let Err(e) = raft.trigger().elect().await {
                tracing::warn!(error = %e, "cannot start an election");
                return;
            }
        } else {
            tracing::debug!(term = m.current_term, granted = ?yes, ?refusals, "pre-vote lost: not campaigning");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majority_of_every_config() {
        let c = |v: &[u64]| v.iter().copied().collect::<BTreeSet<u64>>();
        assert!(is_majority(&[c(&[1, 2, 3])], &c(&[1, 2])));
        assert!(!is_majority(&[c(&[1, 2, 3])], &c(&[1])));
        assert!(!is_majority(&[c(&[1, 2, 3, 4])], &c(&[1, 2])));
        // Joint: both sets need a majority.
        assert!(!is_majority(
            &[c(&[1, 2, 3]), c(&[3, 4, 5])],
            &c(&[1, 2, 3])
        ));
        assert!(is_majority(&[c(&[1, 2, 3]), c(&[3, 4, 5])], &c(&[1, 3, 4])));
        assert!(!is_majority(&[], &c(&[1])));
    }

    /// `/raft/prevote` is served behind the Raft routes' checks (here the secret), and a
    /// node that heard from a leader lately (a node that just started counts as having
    /// heard one) or has a longer log says no.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn served_to_peers_only_and_refused_while_a_leader_is_heard() {
        use crate::cluster::network::{self, Committed, MembersFn, WriteFn};
        let tmp = tempfile::tempdir().expect("tempdir");
        let config = Arc::new(openraft::Config::default().validate().expect("config"));
        let (log, sm) = crate::cluster::store::open(tmp.path()).expect("store");
        let raft = Raft::new(1, config, Network::new(None), log, sm)
            .await
            .expect("raft");
        let write: WriteFn = Arc::new(|_| {
            Box::pin(async {
                Ok(Committed {
                    response: crate::cluster::Response::Noop,
                    index: 0,
                })
            })
        });
        let members: MembersFn = Arc::new(|_| Box::pin(async { Ok(()) }));
        let app = network::router(raft.clone(), Some("s3cret".into()), write, members);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let req = PreVoteRequest {
            candidate: 2,
            term: 0,
            last_log_id: None,
        };
        let t = Duration::from_secs(5);
        // Without the secret: refused before the question is read.
        let r = Network::new(None).prevote(1, &addr, &req, t).await;
        assert!(matches!(r, Err(ForwardError::Unauthorized)), "{r:?}");
        let r = Network::new(Some("wrong".into()))
            .prevote(1, &addr, &req, t)
            .await;
        assert!(matches!(r, Err(ForwardError::Unauthorized)), "{r:?}");
        // A peer: answered, and refused (this node just started).
        let answer = Network::new(Some("s3cret".into()))
            .prevote(1, &addr, &req, t)
            .await
            .expect("answer");
        assert!(!answer.granted, "{answer:?}");
        assert!(answer.reason.contains("leader was heard"), "{answer:?}");
        let candidate_ahead = PreVoteRequest {
            last_log_id: Some(LogId::new(openraft::CommittedLeaderId::new(9, 2), 9)),
            ..req.clone()
        };
        // Once no leader was heard for the election timeout, yes; a shorter log, no.
        let quiet = Contact::silent();
        // (A node that just started counts its start as its vote's last change.)
        let until = Instant::now() + Duration::from_secs(5);
        loop {
            let a = judge(&raft, &quiet, &req).await;
            if a.granted {
                break;
            }
            assert!(Instant::now() < until, "{a:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        raft.initialize(std::collections::BTreeMap::from([(
            1,
            crate::cluster::types::NodeInfo {
                raft: addr.clone(),
                admin: String::new(),
            },
        )]))
        .await
        .expect("initialize");
        raft.wait(Some(t))
            .metrics(|m| m.last_log_index.is_some(), "a log entry")
            .await
            .expect("logged");
        let behind = judge(&raft, &quiet, &req).await;
        assert!(
            !behind.granted && behind.reason.contains("behind"),
            "{behind:?}"
        );
        // A candidate ahead, but this node voted (for itself) a moment ago.
        let voted = judge(&raft, &quiet, &candidate_ahead).await;
        assert!(
            !voted.granted && voted.reason.contains("voted"),
            "{voted:?}"
        );
        let _ = raft.shutdown().await;
    }

    #[test]
    fn timeouts_start_after_the_grant_window() {
        for _ in 0..100 {
            let t = draw_timeout();
            assert!(t >= TIMEOUT_MIN && t <= TIMEOUT_MAX && t > GRANT_AFTER);
        }
    }
}
