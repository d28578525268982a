//! The admin HTTP API (axum). For now: `GET /healthz`, which outside checks poll until the
//! node serves DNS with its state loaded.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;

/// Whether the node is serving: set once DNS listens with the first snapshot published.
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set_ready(&self) {
        self.0.store(true, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Every route of the admin API.
pub fn router(ready: Readiness) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .with_state(ready)
}

async fn healthz(State(ready): State<Readiness>) -> (StatusCode, &'static str) {
    if ready.is_ready() {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n")
    }
}
