//! The admin HTTP API (axum): one list of every route ([`ROUTES`]), one [`ApiError`] that
//! every failure becomes (`{"error": "..."}` JSON), bearer-token auth on every mutating
//! call, and the request types shared with `meridian apply`.
//!
//! Routes are under `/api/v1`, but `/healthz`, `/metrics` and the dashboard (`/`,
//! [`dashboard`]) at the root. Writes go to the
//! cluster as [`Command`]s through its [`Handle`]; reads come from the state applied on
//! this node (and `/explain` from the snapshot it answers from). The OpenAPI document,
//! `GET /api/v1/openapi.json`, is `openapi.json` beside this file.

mod dashboard;
mod dnsapi;
mod dnssecapi;
mod error;
mod host;
mod metrics;
mod redact;
mod routes;
mod share;
mod types;

#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response as HttpResponse};
use axum::routing::{get, post, put};
use axum::Router;

use crate::cluster::Handle;
#[cfg(doc)]
use crate::cluster::RaftNode;
use crate::config::{NamedToken, Role};
use crate::snapshot::SnapshotReader;

pub use error::{ApiError, BODY_LIMIT};
pub use metrics::ProbeStatsFn;
pub use routes::SERIAL_HEADER;
pub use types::{
    ClusterView, DatacenterPatch, DatacenterSpec, ErrorBody, ExplainQuery, GeoInfo, MemberRequest,
    ServiceSpec,
};

/// The API's path prefix.
pub const API_PREFIX: &str = "/api/v1";

/// Every route: method and path (axum syntax). The OpenAPI document lists each one.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/"),
    ("GET", "/dashboard.js"),
    ("GET", "/dashboard.css"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/api/v1/openapi.json"),
    ("GET", "/api/v1/cluster"),
    ("POST", "/api/v1/cluster/members"),
    ("DELETE", "/api/v1/cluster/members/{id}"),
    ("GET", "/api/v1/datacenters"),
    ("GET", "/api/v1/datacenters/{id}"),
    ("PUT", "/api/v1/datacenters/{id}"),
    ("PATCH", "/api/v1/datacenters/{id}"),
    ("DELETE", "/api/v1/datacenters/{id}"),
    ("GET", "/api/v1/datacenters/{id}/events"),
    ("GET", "/api/v1/zones"),
    ("GET", "/api/v1/zones/{origin}"),
    ("PUT", "/api/v1/zones/{origin}"),
    ("DELETE", "/api/v1/zones/{origin}"),
    ("GET", "/api/v1/zones/{origin}/services"),
    ("GET", "/api/v1/zones/{origin}/services/{name}"),
    ("PUT", "/api/v1/zones/{origin}/services/{name}"),
    ("DELETE", "/api/v1/zones/{origin}/services/{name}"),
    ("POST", "/api/v1/cookie-secret/rotate"),
    ("GET", "/api/v1/history"),
    ("GET", "/api/v1/history/{index}"),
    ("POST", "/api/v1/rollback"),
    ("GET", "/api/v1/explain"),
    ("GET", "/api/v1/tsig-keys"),
    ("GET", "/api/v1/tsig-keys/{name}"),
    ("PUT", "/api/v1/tsig-keys/{name}"),
    ("DELETE", "/api/v1/tsig-keys/{name}"),
    ("GET", "/api/v1/zones/{origin}/settings"),
    ("PUT", "/api/v1/zones/{origin}/settings"),
    ("GET", "/api/v1/zones/{origin}/dnssec"),
    ("PUT", "/api/v1/zones/{origin}/dnssec"),
    ("DELETE", "/api/v1/zones/{origin}/dnssec"),
    ("POST", "/api/v1/zones/{origin}/dnssec/rollover"),
    ("POST", "/api/v1/zones/{origin}/dnssec/ds-seen"),
];

/// The OpenAPI 3 document of this API.
pub const OPENAPI_JSON: &str = include_str!("openapi.json");

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

/// What the admin API needs from the node.
pub struct AdminContext {
    /// The control plane: writes, the applied state, membership.
    pub cluster: Handle,
    /// The snapshot this node answers from (`/explain`, `/metrics`, GeoIP info).
    pub reader: SnapshotReader,
    pub ready: Readiness,
    /// The bearer token mutating calls must carry. `None` (or empty): every mutating call
    /// is refused with 401. A cell, so that SIGHUP can put a re-read token in.
    pub token: TokenCell,
    /// This node's health probe statistics, for `/metrics` (`None`: no probe metrics).
    pub probes: Option<ProbeStatsFn>,
    /// The log index this node's DNS reflects (from the publisher): a write answers once
    /// it is there. `None`: writes answer at commit.
    pub published: Option<tokio::sync::watch::Receiver<Option<u64>>>,
    /// The largest request body (`[admin] max_body`).
    pub max_body: usize,
    /// Names (`[admin] hosts`) requests may carry in `Host` besides address literals and
    /// `localhost`; any other is refused (DNS rebinding).
    pub hosts: Vec<String>,
}

/// Every route of the admin API.
pub fn router(ctx: AdminContext) -> Router {
    let router = build(App {
        cluster: ctx.cluster,
        reader: ctx.reader,
        ready: ctx.ready,
        token: ctx.token,
        published: ctx.published,
        inflight: Default::default(),
        max_body: ctx.max_body,
        shares: Default::default(),
    });
    let router = match ctx.probes {
        Some(p) => router.layer(axum::Extension(metrics::Probes(p))),
        None => router,
    };
    host::layer(router, host::AllowedHosts::new(&ctx.hosts))
}

/// Who may do what: the named tokens and whether reads need one.
#[derive(Clone, Debug, Default)]
pub struct Access {
    pub tokens: Vec<NamedToken>,
    pub reads_need_token: bool,
}

impl Access {
    /// The access a node config gives.
    pub fn of(config: &crate::config::NodeConfig) -> Access {
        Access {
            tokens: config.admin_tokens.clone(),
            reads_need_token: config.reads_need_token,
        }
    }

    /// The v1 form: one write token named `admin` (an empty one is none).
    pub fn single(token: Option<String>) -> Access {
        Access {
            tokens: token
                .filter(|t| !t.is_empty())
                .map(|token| NamedToken {
                    name: crate::config::V1_TOKEN_NAME.into(),
                    token,
                    role: Role::Write,
                })
                .into_iter()
                .collect(),
            reads_need_token: false,
        }
    }

    /// The token `given` is, compared with every token in constant time.
    fn find(&self, given: &str) -> Option<&NamedToken> {
        let mut found = None;
        for t in &self.tokens {
            if constant_time_eq(given.as_bytes(), t.token.as_bytes()) {
                found = Some(t);
            }
        }
        found
    }
}

/// The access in force, replaced whole on reload (SIGHUP).
pub type TokenCell = Arc<arc_swap::ArcSwap<Access>>;

/// A cell holding `access`.
pub fn token_cell(access: Access) -> TokenCell {
    Arc::new(arc_swap::ArcSwap::from_pointee(access))
}

/// The routes' shared state.
pub(crate) struct App {
    /// The control plane: writes go to [`RaftNode::propose`] as they are; the admin unit
    /// tests run a real one-node cluster in a temporary directory.
    pub cluster: Handle,
    pub reader: SnapshotReader,
    pub ready: Readiness,
    pub token: TokenCell,
    pub published: Option<tokio::sync::watch::Receiver<Option<u64>>>,
    /// `Idempotency-Key`s whose first write is still under way on this node.
    pub inflight: std::sync::Mutex<std::collections::HashSet<String>>,
    pub max_body: usize,
    /// Recent answer counts per datacenter, for `answers_share` (sampled by a task that
    /// [`build`] starts).
    pub shares: Arc<share::AnswerShares>,
}

/// The router over any control plane.
pub(crate) fn build(app: App) -> Router {
    use routes::*;
    let app = Arc::new(app);
    share::spawn(app.reader.clone(), Arc::downgrade(&app.shares));
    let api = Router::new()
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/cluster", get(get_cluster))
        .route("/api/v1/cluster/members", post(add_member))
        .route(
            "/api/v1/cluster/members/{id}",
            axum::routing::delete(remove_member),
        )
        .route("/api/v1/datacenters", get(list_datacenters))
        .route(
            "/api/v1/datacenters/{id}",
            get(get_datacenter)
                .put(put_datacenter)
                .patch(patch_datacenter)
                .delete(delete_datacenter),
        )
        .route("/api/v1/datacenters/{id}/events", get(datacenter_events))
        .route("/api/v1/zones", get(list_zones))
        .route(
            "/api/v1/zones/{origin}",
            get(get_zone).put(put_zone).delete(delete_zone),
        )
        .route("/api/v1/zones/{origin}/services", get(list_services))
        .route(
            "/api/v1/zones/{origin}/services/{name}",
            put(put_service).get(get_service).delete(delete_service),
        )
        .route("/api/v1/cookie-secret/rotate", post(rotate_cookie_secret))
        .route("/api/v1/history", get(list_history))
        .route("/api/v1/history/{index}", get(get_history_entry))
        .route("/api/v1/rollback", post(rollback))
        .route("/api/v1/tsig-keys", get(dnsapi::list_tsig_keys))
        .route(
            "/api/v1/tsig-keys/{name}",
            get(dnsapi::get_tsig_key)
                .put(dnsapi::put_tsig_key)
                .delete(dnsapi::delete_tsig_key),
        )
        .route(
            "/api/v1/zones/{origin}/settings",
            get(dnsapi::get_zone_settings).put(dnsapi::put_zone_settings),
        )
        .route(
            "/api/v1/zones/{origin}/dnssec",
            get(dnssecapi::get_dnssec)
                .put(dnssecapi::put_dnssec)
                .delete(dnssecapi::delete_dnssec),
        )
        .route(
            "/api/v1/zones/{origin}/dnssec/rollover",
            post(dnssecapi::post_rollover),
        )
        .route(
            "/api/v1/zones/{origin}/dnssec/ds-seen",
            post(dnssecapi::post_ds_seen),
        )
        .route("/api/v1/explain", get(explain))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/", get(dashboard::page))
        .route("/dashboard.js", get(dashboard::script))
        .route("/dashboard.css", get(dashboard::style))
        .route("/metrics", get(metrics::metrics))
        .route_layer(middleware::from_fn_with_state(app.clone(), require_token))
        .layer(middleware::from_fn(write_outcome));
    api.fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(app.max_body))
        .with_state(app)
}

async fn not_found(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound(format!("no route {method} {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::MethodNotAllowed(format!("{method} is not allowed on {}", uri.path()))
}

/// Every error answer to a write says what became of it: `not_applied` unless the error
/// itself says `unknown` (a write refused by validation or auth was never proposed).
async fn write_outcome(req: Request, next: Next) -> HttpResponse {
    let mutating = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let response = next.run(req).await;
    if !mutating || response.status().is_success() {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 1 << 20).await else {
        return ApiError::Internal("an error answer could not be read".into()).into_response();
    };
    let mut value: serde_json::Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(_) => return HttpResponse::from_parts(parts, axum::body::Body::from(bytes)),
    };
    if let Some(obj) = value.as_object_mut() {
        obj.entry("outcome")
            .or_insert_with(|| serde_json::Value::from("not_applied"));
    }
    let body = serde_json::to_vec(&value).unwrap_or_else(|_| bytes.to_vec());
    parts.headers.remove(header::CONTENT_LENGTH);
    HttpResponse::from_parts(parts, axum::body::Body::from(body))
}

/// Mutating calls (anything but GET, HEAD and OPTIONS) need a write token; with
/// `reads_need_token`, every GET under `/api/v1` needs a read or write token. The token's
/// name goes with the request as its [`routes::Actor`].
async fn require_token(State(app): State<Arc<App>>, mut req: Request, next: Next) -> HttpResponse {
    let reading = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let access = app.token.load();
    // `/healthz`, `/metrics` and the dashboard's files are open whatever is configured.
    let guarded_read = access.reads_need_token && req.uri().path().starts_with("/api/v1");
    if !reading && access.tokens.is_empty() {
        return ApiError::Unauthorized(
            "no admin token is configured on this node ([admin] token, token_file, tokens or MERIDIAN_ADMIN_TOKEN); writes are refused"
                .into(),
        )
        .into_response();
    }
    let holder = match holder(&access, req.headers().get(header::AUTHORIZATION)) {
        Ok(h) => h,
        // A read that needs no token is served whatever its Authorization says.
        Err(_) if reading && !guarded_read => None,
        Err(e) => return e.into_response(),
    };
    if reading {
        if guarded_read && holder.is_none() {
            return ApiError::Unauthorized(
                "reads need a token on this node ([admin] reads_need_token): send Authorization: Bearer TOKEN"
                    .into(),
            )
            .into_response();
        }
    } else {
        match &holder {
            None => {
                return ApiError::Unauthorized(
                    "this call needs an Authorization: Bearer TOKEN header".into(),
                )
                .into_response()
            }
            Some(t) if t.role != Role::Write => {
                return ApiError::Forbidden(format!(
                    "the token {:?} may read only; this call needs a write token",
                    t.name
                ))
                .into_response()
            }
            Some(_) => {}
        }
    }
    if let Some(t) = holder {
        req.extensions_mut().insert(routes::Actor(t.name.clone()));
    }
    next.run(req).await
}

/// The token an `Authorization` header carries: `Ok(None)` without one, an error for a
/// malformed header or a token that is none of ours.
fn holder(
    access: &Access,
    header: Option<&axum::http::HeaderValue>,
) -> Result<Option<NamedToken>, ApiError> {
    let Some(value) = header else {
        return Ok(None);
    };
    let value = value.to_str().unwrap_or("").trim();
    let given = match value.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        _ => {
            return Err(ApiError::Unauthorized(
                "the Authorization header must be Bearer TOKEN".into(),
            ))
        }
    };
    match access.find(given) {
        Some(t) => Ok(Some(t.clone())),
        None => Err(ApiError::Unauthorized("wrong admin token".into())),
    }
}

/// Whether a request carries a write token (it may see health-check credentials).
pub(crate) fn holds_write_token(app: &App, header: Option<&axum::http::HeaderValue>) -> bool {
    let access = app.token.load();
    matches!(holder(&access, header), Ok(Some(t)) if t.role == Role::Write)
}

/// Compare without an early exit: the time depends on the lengths only.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    std::hint::black_box(diff) == 0
}

/// Whether the control plane takes writes: 200 `ready` when Raft runs, this node has a
/// quorum and the store has room; 503 with the reason otherwise. (`/healthz` says whether
/// DNS is served.)
async fn readyz(State(app): State<Arc<App>>) -> (StatusCode, String) {
    let status = app.cluster.status();
    let why = match status.control_plane {
        "ok" if status.quorum => return (StatusCode::OK, "ready\n".into()),
        "ok" => "no quorum".to_string(),
        "disk_full" => "disk full: writes are refused until the store has room".to_string(),
        other => format!("control plane {other}: restart the node"),
    };
    (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n"))
}

async fn healthz(State(app): State<Arc<App>>) -> (StatusCode, &'static str) {
    if app.ready.is_ready() {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n")
    }
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON)
}
