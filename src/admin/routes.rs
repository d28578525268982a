//! The route handlers: parse, check, propose, answer.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response as HttpResponse};
use axum::Json;

use crate::admin::error::{parse_json, ApiError, JsonBody, ZoneText};
use crate::admin::types::{
    ClusterView, DatacenterPatch, DatacenterSpec, ExplainQuery, GeoInfo, MemberRequest, ServiceSpec,
};
use crate::admin::{redact, App};
use crate::cluster::{self, Command, Response};
use crate::model::{Datacenter, DcState, Health, Service, MAX_WEIGHT};
use crate::name::{ServiceName, ZoneName};

type St = State<Arc<App>>;
type Res<T> = Result<T, ApiError>;

/// The header `GET /zones/{origin}` names the zone's published SOA serial in (an extension).
pub const SERIAL_HEADER: &str = "meridian-serial";

/// The media type zone text is answered with.
const TEXT_DNS: &str = "text/dns";

/// How long a committed write waits for this node's DNS to show it before it answers.
const PUBLISH_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// A write's `Idempotency-Key` header, if it has one.
pub struct WriteMeta {
    /// `Idempotency-Key`.
    key: Option<String>,
    /// Who writes: the token's name (set by the token check).
    actor: String,
    /// `If-Match`: the version the object must still have.
    if_match: Option<IfMatch>,
}

/// An `If-Match` header.
#[derive(Clone, Copy, Debug)]
enum IfMatch {
    /// `"N"` (or weak, `W/"N"`): exactly that version.
    Version(u64),
    /// `*`: whatever version the object has, as long as it exists.
    Any,
}

/// The name of the token a request carries (set by the token check), the actor of its writes.
#[derive(Clone, Debug)]
pub struct Actor(pub String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for WriteMeta {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, ApiError> {
        let actor = parts
            .extensions
            .get::<Actor>()
            .map_or_else(|| "admin".to_string(), |a| a.0.clone());
        let key = match parts.headers.get("idempotency-key") {
            None => None,
            Some(v) => {
                let key = v.to_str().unwrap_or("").trim();
                if key.is_empty() || key.len() > 255 {
                    return Err(ApiError::BadRequest(
                        "Idempotency-Key must be 1 to 255 visible ASCII characters".into(),
                    ));
                }
                Some(key.to_string())
            }
        };
        let if_match = match parts.headers.get(header::IF_MATCH) {
            None => None,
            Some(v) => {
                let text = v.to_str().unwrap_or("").trim();
                if text == "*" {
                    Some(IfMatch::Any)
                } else {
                    let n = text
                        .trim_start_matches("W/")
                        .strip_prefix('"')
                        .and_then(|t| t.strip_suffix('"'))
                        .and_then(|t| t.parse::<u64>().ok())
                        .ok_or_else(|| {
                            ApiError::BadRequest(format!(
                                "If-Match must be a version in quotes, as the ETag gives it (\"42\"), or *, not {text:?}"
                            ))
                        })?;
                    Some(IfMatch::Version(n))
                }
            }
        };
        Ok(WriteMeta {
            key,
            actor,
            if_match,
        })
    }
}

/// An object with its version, as the API shows it.
#[derive(serde::Serialize)]
pub struct Versioned<T> {
    #[serde(flatten)]
    pub object: T,
    pub version: u64,
}

/// `ETag: "N"` for an object at version `version`.
pub(crate) fn etag(version: u64) -> [(header::HeaderName, String); 1] {
    [(header::ETAG, format!("\"{version}\""))]
}

/// Forgets an in-flight `Idempotency-Key` when its write is done, however it ends.
struct InFlight<'a>(&'a App, Option<String>);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let (Some(id), Ok(mut set)) = (&self.1, self.0.inflight.lock()) {
            set.remove(id);
        }
    }
}

/// The request id of a write: derived from its `Idempotency-Key` (and the token), so that a
/// retry finds the first attempt's result, or a fresh one. The guard holds the key as under
/// way on this node until the write is done; a second attempt meanwhile is a 409.
fn request_id<'a>(app: &'a App, meta: &WriteMeta) -> Res<(String, InFlight<'a>)> {
    let Some(k) = &meta.key else {
        return Ok((cluster::new_request_id(), InFlight(app, None)));
    };
    let id = format!("idem:{}:{k}", meta.actor);
    let fresh = app
        .inflight
        .lock()
        .map(|mut set| set.insert(id.clone()))
        .unwrap_or(false);
    if !fresh {
        return Err(ApiError::InFlight(
            "a write with this Idempotency-Key is still under way; its outcome is not known yet"
                .into(),
        ));
    }
    Ok((id.clone(), InFlight(app, Some(id))))
}

/// Propose a command, wait until this node's DNS shows it, and answer what applying it
/// said; a rejection becomes its HTTP error. With an `Idempotency-Key`, the request id is
/// derived from it (and the token), so a retry gets the first attempt's result.
#[tracing::instrument(level = "info", skip_all, fields(cmd = cmd.name()))]
pub(crate) async fn write(app: &App, cmd: Command, meta: &WriteMeta) -> Res<Response> {
    write_at(app, cmd, meta).await.map(|(r, _)| r)
}

/// [`write`], with the log index the write was committed at (the object's new version).
pub(crate) async fn write_at(app: &App, cmd: Command, meta: &WriteMeta) -> Res<(Response, u64)> {
    let target = crate::cluster::state::history::target_of(&cmd);
    let (id, _guard) = request_id(app, meta)?;
    let mut req = cluster::Request::with_id(cmd, id).by(&meta.actor);
    if let Some(wanted) = meta.if_match {
        let Some(target) = target.clone() else {
            return Err(ApiError::BadRequest(
                "If-Match is not taken by this call".into(),
            ));
        };
        // Either way the check is made when the entry is applied, in log order: `*` holds
        // while the object exists, whatever changes commit meanwhile.
        req = match wanted {
            IfMatch::Version(v) => req.if_match(target, v),
            IfMatch::Any => req.if_exists(target),
        };
    }
    let committed = app.cluster.propose(req).await?;
    if let Some(published) = &app.published {
        let mut rx = published.clone();
        let index = committed.index;
        let shown =
            tokio::time::timeout(PUBLISH_WAIT, rx.wait_for(|p| p.is_some_and(|p| p >= index)))
                .await;
        if !matches!(shown, Ok(Ok(_))) {
            tracing::warn!(index, "committed, but this node's DNS does not show it yet");
        }
    }
    match committed.response {
        Response::Rejected { why } => Err(why.into()),
        r => {
            tracing::info!(
                actor = %meta.actor,
                target = %target.as_ref().map_or_else(|| "-".to_string(), |t| t.to_string()),
                index = committed.index,
                result = ?r,
                "write committed"
            );
            // The object's version as this node now has it (a repeated request answers the
            // first one's result; its object may have moved on since).
            let version = target
                .as_ref()
                .map(|t| app.cluster.state().version_of(t))
                .filter(|v| *v > 0)
                .unwrap_or(committed.index);
            Ok((r, version))
        }
    }
}

/// 201 for Created, 200 for Replaced (or nothing to do).
pub(crate) fn put_status(r: &Response) -> Res<StatusCode> {
    match r {
        Response::Created => Ok(StatusCode::CREATED),
        Response::Replaced | Response::Noop => Ok(StatusCode::OK),
        other => Err(unexpected(other)),
    }
}

pub(crate) fn deleted(r: &Response) -> Res<StatusCode> {
    match r {
        Response::Deleted | Response::Noop => Ok(StatusCode::NO_CONTENT),
        other => Err(unexpected(other)),
    }
}

fn unexpected(r: &Response) -> ApiError {
    ApiError::Internal(format!("unexpected answer from the cluster: {r:?}"))
}

/// A zone origin from a URL or a body, canonicalised here once and passed on as such.
pub(crate) fn zone_key(origin: &str) -> Res<ZoneName> {
    Ok(ZoneName::parse(origin)?)
}

// ---- cluster ------------------------------------------------------------------------

fn cluster_view(app: &App) -> ClusterView {
    let snap = app.reader.load();
    ClusterView {
        status: app.cluster.status(),
        snapshot_generation: snap.generation,
        geoip: GeoInfo {
            build_epoch: snap.geo.build_epoch(),
            description: snap.geo.describe(),
        },
    }
}

pub async fn get_cluster(State(app): St) -> Json<ClusterView> {
    Json(cluster_view(&app))
}

fn check_addr(what: &str, addr: &str) -> Res<()> {
    addr.parse::<SocketAddr>()
        .map(|_| ())
        .map_err(|_| ApiError::Unprocessable(format!("{what} {addr:?} must be ip:port")))
}

pub async fn add_member(
    State(app): St,
    meta: WriteMeta,
    JsonBody(req): JsonBody<MemberRequest>,
) -> Res<HttpResponse> {
    check_addr("addr", &req.addr)?;
    if let Some(admin) = &req.admin {
        check_addr("admin", admin)?;
    }
    let (id, _guard) = request_id(&app, &meta)?;
    // A membership change is openraft's own entry, not a command: its history entry carries
    // the request id, and a key found there was a node added (201) by the first attempt.
    if meta.key.is_some() && member_change_done(&app, &id, "add_member", req.id).await? {
        return Ok((StatusCode::CREATED, Json(cluster_view(&app))).into_response());
    }
    let existed = app.cluster.status().members.iter().any(|m| m.id == req.id);
    app.cluster
        .add_member(
            req.id,
            req.addr,
            req.admin.unwrap_or_default(),
            req.voter,
            // Only an addition is answered 201 again; a retried edit of a member is made
            // again, which changes nothing.
            &meta.actor,
            (!existed).then_some(id),
        )
        .await?;
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(cluster_view(&app))).into_response())
}

/// Whether the first attempt of a membership write with this request id (an
/// `Idempotency-Key`'s) made this change: its history entry, which carries the id, is a
/// `kind` of member `member`. A key its token used for another write is a 409: its first
/// result is not this call's to answer.
async fn member_change_done(app: &App, request: &str, kind: &str, member: u64) -> Res<bool> {
    app.cluster.catch_up().await?;
    let state = app.cluster.state();
    let Some(record) = state.request(request) else {
        return Ok(false);
    };
    let target = Some(cluster::state::Target::Member(member));
    // A membership change's history entry answers `Noop`; a write refused, or another
    // kind, answered something else (and a refused one has no history entry).
    if record.response == Response::Noop {
        match state.history_entry(record.index) {
            Some(e) if e.kind == kind && e.target == target => return Ok(true),
            // History keeps fewer entries than request records live: an entry older than
            // the oldest kept is known to have been made, not what it was.
            None if state
                .history()
                .next()
                .is_some_and(|e| e.index > record.index) =>
            {
                return Ok(true)
            }
            _ => {}
        }
    }
    Err(ApiError::Conflict(format!(
        "this Idempotency-Key was used for another write (log index {}), not for this {kind} of node {member}",
        record.index
    )))
}

pub async fn remove_member(
    State(app): St,
    meta: WriteMeta,
    path: Result<Path<String>, PathRejection>,
) -> Res<StatusCode> {
    let Path(id) = path?;
    let id: u64 = id
        .trim()
        .parse()
        .map_err(|_| ApiError::BadRequest(format!("member id {id:?} is not a number")))?;
    let (request, _guard) = request_id(&app, &meta)?;
    // As for an addition: the first attempt's history entry carries the key.
    if meta.key.is_some() && member_change_done(&app, &request, "remove_member", id).await? {
        return Ok(StatusCode::NO_CONTENT);
    }
    app.cluster
        .remove_member(id, &meta.actor, Some(request))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- datacenters --------------------------------------------------------------------

/// A datacenter as the API shows it: its definition, state and health, and each node's
/// latest health opinion.
#[derive(serde::Serialize)]
pub struct DatacenterView {
    #[serde(flatten)]
    pub dc: Datacenter,
    /// The log index of its last change (also its `ETag`).
    pub version: u64,
    /// Each node's latest health opinion; empty without a health check.
    pub opinions: Vec<OpinionView>,
    /// This node's share (0–1) of the last minute's answers that carried this datacenter's
    /// addresses, among all datacenters' ([`crate::admin::share`]).
    pub answers_share: f64,
}

/// One node's latest opinion of a datacenter.
#[derive(serde::Serialize)]
pub struct OpinionView {
    pub node: u64,
    pub up: bool,
    /// When the leader logged it (RFC 3339).
    pub at: String,
    pub at_ms: u64,
    pub reason: String,
}

/// `reveal`: the caller holds the write token and sees the health-check URL as it is;
/// anyone else sees its credentials masked ([`redact`]).
fn view(
    state: &crate::cluster::State,
    entry: &crate::cluster::state::DcEntry,
    reveal: bool,
    shares: &std::collections::HashMap<String, f64>,
) -> DatacenterView {
    let opinions = state
        .status(&entry.dc.id)
        .opinions
        .iter()
        .map(|(&node, o)| OpinionView {
            node,
            up: o.up,
            at: humantime::format_rfc3339_millis(
                std::time::UNIX_EPOCH + std::time::Duration::from_millis(o.at_ms),
            )
            .to_string(),
            at_ms: o.at_ms,
            reason: redact::text(&o.reason),
        })
        .collect();
    let mut dc = (*entry.dc).clone();
    if !reveal {
        dc.health_check = dc.health_check.as_ref().map(redact::health_check);
    }
    let answers_share = shares.get(&dc.id).copied().unwrap_or(0.0);
    DatacenterView {
        dc,
        version: entry.version,
        opinions,
        answers_share,
    }
}

/// Whether a read carries the write token (and may see credentials).
fn holds_token(app: &App, headers: &HeaderMap) -> bool {
    crate::admin::holds_write_token(app, headers.get(header::AUTHORIZATION))
}

pub async fn list_datacenters(State(app): St, headers: HeaderMap) -> Json<Vec<DatacenterView>> {
    let state = app.cluster.state();
    let reveal = holds_token(&app, &headers);
    let shares = app.shares.current(&app.reader.load());
    Json(
        state
            .datacenters()
            .map(|d| view(&state, d, reveal, &shares))
            .collect(),
    )
}

fn no_datacenter(id: &str) -> ApiError {
    ApiError::NotFound(format!("no datacenter {id:?}"))
}

pub async fn get_datacenter(
    State(app): St,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Res<HttpResponse> {
    let Path(id) = path?;
    let state = app.cluster.state();
    let reveal = holds_token(&app, &headers);
    let shares = app.shares.current(&app.reader.load());
    state
        .datacenter(&id)
        .map(|d| (etag(d.version), Json(view(&state, d, reveal, &shares))).into_response())
        .ok_or_else(|| no_datacenter(&id))
}

pub async fn put_datacenter(
    State(app): St,
    key: WriteMeta,
    path: Result<Path<String>, PathRejection>,
    JsonBody(spec): JsonBody<DatacenterSpec>,
) -> Res<HttpResponse> {
    let Path(id) = path?;
    if let Some(body_id) = &spec.id {
        if *body_id != id {
            return Err(ApiError::BadRequest(format!(
                "the body's id {body_id:?} does not match the URL's {id:?}"
            )));
        }
    }
    let (mut dc, set_state) = spec.to_datacenter(&id);
    dc.validate()
        .map_err(|e| ApiError::Unprocessable(e.to_string()))?;
    let (r, version) = write_at(
        &app,
        Command::PutDatacenter {
            dc: dc.clone(),
            set_state,
        },
        &key,
    )
    .await?;
    let status = put_status(&r)?;
    // What the state machine stored: the old state unless one was named, the old health.
    let old = app.cluster.state().datacenter(&id).map(|e| e.dc.clone());
    dc.state = set_state.unwrap_or_else(|| old.as_ref().map_or(DcState::Active, |o| o.state));
    dc.health = old.map_or(Health::Unknown, |o| o.health);
    Ok((
        status,
        etag(version),
        Json(Versioned {
            object: dc,
            version,
        }),
    )
        .into_response())
}

pub async fn patch_datacenter(
    State(app): St,
    key: WriteMeta,
    path: Result<Path<String>, PathRejection>,
    JsonBody(patch): JsonBody<DatacenterPatch>,
) -> Res<HttpResponse> {
    let Path(id) = path?;
    if patch.weight.is_none() && patch.state.is_none() {
        return Err(ApiError::Unprocessable(
            "nothing to change: name \"weight\" and/or \"state\"".into(),
        ));
    }
    if let Some(w) = patch.weight {
        if w > MAX_WEIGHT {
            return Err(ApiError::Unprocessable(format!(
                "weight {w} is over {MAX_WEIGHT}"
            )));
        }
    }
    let (r, version) = write_at(
        &app,
        Command::PatchDatacenter {
            id,
            weight: patch.weight,
            state: patch.state,
        },
        &key,
    )
    .await?;
    match r {
        Response::Updated { dc } => Ok((
            etag(version),
            Json(Versioned {
                object: *dc,
                version,
            }),
        )
            .into_response()),
        other => Err(unexpected(&other)),
    }
}

pub async fn delete_datacenter(
    State(app): St,
    key: WriteMeta,
    path: Result<Path<String>, PathRejection>,
) -> Res<StatusCode> {
    let Path(id) = path?;
    deleted(&write(&app, Command::DeleteDatacenter { id }, &key).await?)
}

/// Recent health and state transitions, oldest first, each health one with every node's
/// opinion at the time.
pub async fn datacenter_events(
    State(app): St,
    path: Result<Path<String>, PathRejection>,
) -> Res<Json<Vec<crate::cluster::state::Event>>> {
    let Path(id) = path?;
    let state = app.cluster.state();
    if state.datacenter(&id).is_none() {
        return Err(no_datacenter(&id));
    }
    let mut events: Vec<crate::cluster::state::Event> =
        state.status(&id).events.iter().cloned().collect();
    for o in events.iter_mut().flat_map(|e| e.opinions.values_mut()) {
        o.reason = redact::text(&o.reason);
    }
    Ok(Json(events))
}

// ---- history and rollback ----------------------------------------------------------

/// `GET /history` query: `limit` (default 50, at most 1,000) entries with an index below
/// `before`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    limit: Option<usize>,
    before: Option<u64>,
}

/// A history entry as the API shows it.
#[derive(serde::Serialize)]
pub struct HistoryView {
    index: u64,
    time: String,
    actor: String,
    kind: String,
    target: Option<crate::cluster::state::Target>,
    summary: String,
}

fn history_view(e: &crate::cluster::state::HistoryEntry) -> HistoryView {
    HistoryView {
        index: e.index,
        time: rfc3339(e.at_ms),
        actor: e.actor.clone(),
        kind: e.kind.clone(),
        target: e.target.clone(),
        summary: e.summary.clone(),
    }
}

/// Milliseconds since the epoch as RFC 3339 (UTC).
fn rfc3339(at_ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(at_ms);
    humantime::format_rfc3339_millis(t).to_string()
}

pub async fn list_history(
    State(app): St,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Res<Json<Vec<HistoryView>>> {
    let Query(q) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit {limit}: give 1 to 1000"
        )));
    }
    let state = app.cluster.state();
    let list = state
        .history_before(q.before.unwrap_or(u64::MAX), limit)
        .iter()
        .map(|e| history_view(e))
        .collect();
    Ok(Json(list))
}

/// An object as the API shows it, for `before`/`after` (without its version, which is the
/// entry's index or an earlier one).
fn shown_json(shown: Option<crate::cluster::state::Shown>) -> serde_json::Value {
    use crate::cluster::state::Shown;
    match shown {
        None => serde_json::Value::Null,
        Some(Shown::Datacenter(dc)) => {
            let mut dc = (*dc).clone();
            if let Some(check) = dc.health_check.as_mut() {
                *check = redact::health_check(check);
            }
            serde_json::to_value(dc).unwrap_or_default()
        }
        Some(Shown::Service(s)) => serde_json::to_value(&*s).unwrap_or_default(),
        Some(Shown::Zone(text)) => serde_json::Value::String(text),
        // Name and algorithm: the secret is never shown.
        Some(Shown::TsigKey(k)) => serde_json::to_value(k).unwrap_or_default(),
        Some(Shown::ZoneSettings(s)) => serde_json::to_value(&*s).unwrap_or_default(),
        // The GET .../dnssec body: public keys and DS only.
        Some(Shown::Dnssec(d)) => serde_json::to_value(&*d).unwrap_or_default(),
    }
}

pub async fn get_history_entry(
    State(app): St,
    path: Result<Path<u64>, PathRejection>,
) -> Res<Json<serde_json::Value>> {
    let Path(index) = path?;
    let state = app.cluster.state();
    let entry = state
        .history_entry(index)
        .ok_or_else(|| ApiError::NotFound(format!("no history entry {index}")))?;
    let mut body = serde_json::to_value(history_view(entry)).unwrap_or_default();
    // Every object the entry changed, before and after; `before`/`after` are the entry's
    // target's (a rollback, which changes many, has them in `changes` only; a membership
    // change has neither).
    let changes: Vec<serde_json::Value> = entry
        .undo
        .iter()
        .map(|(target, _)| {
            serde_json::json!({
                "target": target,
                "before": shown_json(state.shown_before(target, index)),
                "after": shown_json(state.shown_after(target, index)),
            })
        })
        .collect();
    let (before, after) = match &entry.target {
        Some(t) => (
            shown_json(state.shown_before(t, index)),
            shown_json(state.shown_after(t, index)),
        ),
        None => (serde_json::Value::Null, serde_json::Value::Null),
    };
    body["before"] = before;
    body["after"] = after;
    body["changes"] = serde_json::Value::Array(changes);
    Ok(Json(body))
}

/// `POST /rollback` body.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    to: u64,
}

pub async fn rollback(
    State(app): St,
    key: WriteMeta,
    JsonBody(req): JsonBody<RollbackRequest>,
) -> Res<Json<serde_json::Value>> {
    let (r, index) = write_at(&app, Command::Rollback { to: req.to }, &key).await?;
    match r {
        Response::RolledBack { changed } => Ok(Json(
            serde_json::json!({ "index": index, "changed": changed }),
        )),
        other => Err(unexpected(&other)),
    }
}

// ---- DNS cookies -------------------------------------------------------------------

/// The body of a rotation: nothing, or an empty JSON object.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateRequest {}

/// `POST /api/v1/cookie-secret/rotate`: a new cluster-wide server cookie secret; cookies
/// made with the current one stay valid (for the rest of their hour).
pub async fn rotate_cookie_secret(
    State(app): St,
    key: WriteMeta,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Res<Json<serde_json::Value>> {
    if !body.iter().all(u8::is_ascii_whitespace) {
        let ct = headers
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !ct.to_ascii_lowercase().starts_with("application/json") {
            return Err(ApiError::UnsupportedMediaType(format!(
                "send no body, or {{}} as Content-Type: application/json, not {ct:?}"
            )));
        }
        let _: RotateRequest = parse_json(&body)?;
    }
    let cmd = Command::RotateCookieSecret {
        secret: cluster::CookieSecret::random(),
    };
    let (_, index) = write_at(&app, cmd, &key).await?;
    Ok(Json(serde_json::json!({ "rotated": true, "index": index })))
}

// ---- zones --------------------------------------------------------------------------

fn zone_text(status: StatusCode, text: String) -> HttpResponse {
    (status, [(header::CONTENT_TYPE, TEXT_DNS)], text).into_response()
}

pub async fn list_zones(State(app): St) -> Json<Vec<ZoneName>> {
    Json(
        app.cluster
            .state()
            .zones()
            .map(|(o, _)| o.clone())
            .collect(),
    )
}

pub async fn get_zone(
    State(app): St,
    path: Result<Path<String>, PathRejection>,
) -> Res<HttpResponse> {
    let Path(origin) = path?;
    let key = zone_key(&origin)?;
    let state = app.cluster.state();
    let (text, version) = state
        .zone(&key)
        .map(|z| (z.text.to_string(), z.version))
        .ok_or_else(|| ApiError::NotFound(format!("no zone {key}")))?;
    // The serial the cluster publishes, which may be ahead of the text's (a drain, a
    // verdict, an UPDATE move it): what `meridian export` writes into the SOA.
    let serial = state.serial(&key).unwrap_or(0);
    let headers = [(SERIAL_HEADER, serial.to_string())];
    Ok((etag(version), headers, zone_text(StatusCode::OK, text)).into_response())
}

pub async fn put_zone(
    State(app): St,
    key: WriteMeta,
    path: Result<Path<String>, PathRejection>,
    ZoneText(text): ZoneText,
) -> Res<HttpResponse> {
    let Path(origin) = path?;
    let origin = zone_key(&origin)?;
    let (r, version) = write_at(
        &app,
        Command::PutZone {
            origin: origin.to_string(),
            text: text.clone(),
        },
        &key,
    )
    .await?;
    Ok((etag(version), zone_text(put_status(&r)?, text)).into_response())
}

pub async fn delete_zone(
    State(app): St,
    key: WriteMeta,
    path: Result<Path<String>, PathRejection>,
) -> Res<StatusCode> {
    let Path(origin) = path?;
    let origin = zone_key(&origin)?.to_string();
    deleted(&write(&app, Command::DeleteZone { origin }, &key).await?)
}

// ---- services -----------------------------------------------------------------------

pub async fn list_services(
    State(app): St,
    path: Result<Path<String>, PathRejection>,
) -> Res<Json<Vec<Versioned<Service>>>> {
    let Path(origin) = path?;
    let key = zone_key(&origin)?;
    let state = app.cluster.state();
    if state.zone(&key).is_none() {
        return Err(ApiError::NotFound(format!("no zone {key}")));
    }
    let list = state
        .services_in(&key)
        .map(|(_, s)| Versioned {
            object: (*s.service).clone(),
            version: s.version,
        })
        .collect();
    Ok(Json(list))
}

/// The zone and service name from the URL.
fn service_key(
    path: Result<Path<(String, String)>, PathRejection>,
) -> Res<(ZoneName, ServiceName)> {
    let Path((origin, name)) = path?;
    let zone = zone_key(&origin)?;
    let name = ServiceName::parse(&zone, &name)?;
    Ok((zone, name))
}

pub async fn get_service(
    State(app): St,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Res<HttpResponse> {
    let (zone, name) = service_key(path)?;
    let state = app.cluster.state();
    if state.zone(&zone).is_none() {
        return Err(ApiError::NotFound(format!("no zone {zone}")));
    }
    state
        .service(&zone, &name)
        .map(|s| {
            let view = Versioned {
                object: (*s.service).clone(),
                version: s.version,
            };
            (etag(s.version), Json(view)).into_response()
        })
        .ok_or_else(|| ApiError::NotFound(format!("no service {name} in {zone}")))
}

pub async fn put_service(
    State(app): St,
    key: WriteMeta,
    path: Result<Path<(String, String)>, PathRejection>,
    JsonBody(spec): JsonBody<ServiceSpec>,
) -> Res<HttpResponse> {
    let (zone, name) = service_key(path)?;
    if let Some(z) = &spec.zone {
        if zone_key(z)? != zone {
            return Err(ApiError::BadRequest(format!(
                "the body's zone {z:?} does not match the URL's {zone}"
            )));
        }
    }
    if let Some(n) = &spec.name {
        if ServiceName::parse(&zone, n)? != name {
            return Err(ApiError::BadRequest(format!(
                "the body's name {n:?} does not match the URL's {name}"
            )));
        }
    }
    let service = spec.to_service(&zone, &name);
    // Shape checks here; which datacenters exist is the state machine's to say.
    service
        .validate(|_| true)
        .map_err(|e| ApiError::Unprocessable(e.to_string()))?;
    let (r, version) = write_at(
        &app,
        Command::PutService {
            service: service.clone(),
        },
        &key,
    )
    .await?;
    let view = Versioned {
        object: service,
        version,
    };
    Ok((put_status(&r)?, etag(version), Json(view)).into_response())
}

pub async fn delete_service(
    State(app): St,
    key: WriteMeta,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Res<StatusCode> {
    let (zone, name) = service_key(path)?;
    let cmd = Command::DeleteService {
        zone: zone.to_string(),
        name: name.to_string(),
    };
    deleted(&write(&app, cmd, &key).await?)
}

// ---- explain ------------------------------------------------------------------------

pub async fn explain(
    State(app): St,
    query: Result<Query<ExplainQuery>, QueryRejection>,
) -> Res<Json<crate::explain::Explanation>> {
    let Query(q) = query?;
    let name = q
        .name
        .filter(|n| !n.trim().is_empty())
        .ok_or_else(|| ApiError::BadRequest("the query parameter name is required".into()))?;
    let qtype = q.qtype.unwrap_or_else(|| "A".into());
    let client = q.client.ok_or_else(|| {
        ApiError::BadRequest("the query parameter client (an IP address) is required".into())
    })?;
    let client: IpAddr = client
        .trim()
        .parse()
        .map_err(|_| ApiError::BadRequest(format!("client {client:?} is not an IP address")))?;
    let snap = app.reader.load();
    crate::explain::explain(&snap, &name, &qtype, client)
        .map(Json)
        .map_err(|e| ApiError::BadRequest(e.to_string()))
}
