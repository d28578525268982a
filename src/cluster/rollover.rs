//! The leader's rollover clock: every second, the node that leads looks for DNSSEC roll
//! steps that are due (a published key whose DNSKEY TTL has passed, a retired key whose
//! signatures have expired from caches) and proposes them as ordinary writes, actor
//! `system`. The decision is checked again when the entry is applied, at the entry's own
//! time, so a late, repeated or stale proposal changes nothing.

use std::time::Duration;

use crate::cluster::{new_request_id, Command, Handle, Request, Response};

/// How often the leader looks for due steps: a step is at most this late.
pub const TICK: Duration = Duration::from_secs(1);

/// Run until the task is aborted (at shutdown).
pub async fn run(handle: Handle) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if handle.status().leader != Some(handle.node_id()) {
            continue;
        }
        let now_ms = crate::cluster::types::now_ms();
        let state = handle.state();
        // A roll that an older leader started waits for the cluster's format to allow its
        // steps (every member applies them).
        let due = state.due_rollover_steps(now_ms);
        for cmd in due.into_iter().filter(|c| c.format() <= state.format()) {
            propose(&handle, cmd).await;
        }
    }
}

async fn propose(handle: &Handle, cmd: Command) {
    let (origin, step) = match &cmd {
        Command::RolloverStep { origin, step, .. } => (origin.clone(), format!("{step:?}")),
        _ => (String::new(), String::new()),
    };
    match handle
        .propose(Request::with_id(cmd, new_request_id()).by("system"))
        .await
    {
        Ok(c) => match c.response {
            Response::Rejected { why } => {
                tracing::debug!(zone = %origin, step, why = why.message(), "rollover step not taken")
            }
            _ => tracing::info!(zone = %origin, step, index = c.index, "rollover step taken"),
        },
        Err(e) => tracing::warn!(zone = %origin, step, error = %e, "rollover step not proposed"),
    }
}
