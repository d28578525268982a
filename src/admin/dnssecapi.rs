//! The DNSSEC routes (`/zones/{origin}/dnssec`, `.../rollover`, `.../ds-seen`): keys are
//! made here, by the node that takes the request, and proposed inside the command; what
//! comes back shows public forms only (DNSKEY, DS), never a private key.

use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response as HttpResponse};
use axum::Json;
use hickory_proto::rr::Name;
use serde::{Deserialize, Serialize};

use crate::admin::error::{ApiError, JsonBody};
use crate::admin::routes::{deleted, put_status, write, zone_key, WriteMeta};
use crate::admin::App;
use crate::cluster::state::DnssecEntry;
use crate::cluster::Command;
use crate::zone::dnssec::{Algorithm, KeyState, Layout, Role, ZoneKey, ZoneKeys};

type St = State<Arc<App>>;
type Res<T> = Result<T, ApiError>;

/// `PUT /zones/{origin}/dnssec`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutDnssec {
    #[serde(default = "default_algorithm")]
    pub algorithm: Algorithm,
    /// `csk` (the default) or `ksk+zsk`.
    #[serde(default)]
    pub keys: Option<String>,
}

/// `POST /zones/{origin}/dnssec/rollover`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostRollover {
    pub role: Role,
}

fn default_algorithm() -> Algorithm {
    Algorithm::EcdsaP256Sha256
}

/// One key as the API shows it.
#[derive(Serialize)]
pub struct KeyView {
    pub tag: u16,
    pub flags: u16,
    pub role: Role,
    pub dnskey: String,
    pub state: KeyState,
}

/// A signed zone as the API shows it.
#[derive(Serialize)]
pub struct DnssecView {
    pub algorithm: Algorithm,
    pub keys: Vec<KeyView>,
    pub ds: Vec<String>,
    pub version: u64,
}

fn view(origin: &str, e: &DnssecEntry) -> Res<DnssecView> {
    let name = Name::from_ascii(origin).map_err(|e| ApiError::Internal(e.to_string()))?;
    let alg = e.keys.algorithm;
    let keys = e
        .keys
        .keys
        .iter()
        .map(|k| KeyView {
            tag: k.tag,
            flags: k.flags,
            role: k.role,
            dnskey: k.dnskey_text(alg),
            state: k.state,
        })
        .collect();
    let ds = e
        .keys
        .entry_points()
        .map(|k| k.ds(alg, &name).map(|d| d.to_string()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(DnssecView {
        algorithm: alg,
        keys,
        ds,
        version: e.version,
    })
}

fn answer(status: StatusCode, origin: &str, e: &DnssecEntry) -> Res<HttpResponse> {
    let etag = [(header::ETAG, format!("\"{}\"", e.version))];
    Ok((status, etag, Json(view(origin, e)?)).into_response())
}

pub async fn get_dnssec(
    State(app): St,
    path: Result<Path<String>, PathRejection>,
) -> Res<HttpResponse> {
    let Path(origin) = path?;
    let origin = zone_key(&origin)?;
    answer(
        StatusCode::OK,
        &origin,
        signed(&app.cluster.state(), &origin)?,
    )
}

pub async fn put_dnssec(
    State(app): St,
    meta: WriteMeta,
    path: Result<Path<String>, PathRejection>,
    JsonBody(body): JsonBody<PutDnssec>,
) -> Res<HttpResponse> {
    let Path(origin) = path?;
    let origin = zone_key(&origin)?;
    let layout = match body.keys.as_deref() {
        None => None,
        Some(k) => Some(Layout::parse(k).ok_or_else(|| {
            ApiError::Unprocessable(format!("keys {k:?}: \"csk\" or \"ksk+zsk\""))
        })?),
    };
    {
        let state = app.cluster.state();
        if state.zone(&origin).is_none() {
            return Err(ApiError::NotFound(format!("no zone {origin}")));
        }
        // The same algorithm (and layout, when named) again: nothing to make or propose.
        if let Some(e) = state.dnssec(&origin) {
            if e.keys.algorithm == body.algorithm && layout.is_none_or(|l| l == e.keys.layout()) {
                return answer(StatusCode::OK, &origin, e);
            }
        }
    }
    let keys = ZoneKeys::generate(body.algorithm, layout.unwrap_or(Layout::Csk))
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let r = write(
        &app,
        Command::PutDnssec {
            origin: origin.clone(),
            keys,
        },
        &meta,
    )
    .await?;
    let status = put_status(&r)?;
    let state = app.cluster.state();
    let Some(e) = state.dnssec(&origin) else {
        return Err(ApiError::Internal("keys not found after commit".into()));
    };
    answer(status, &origin, e)
}

pub async fn delete_dnssec(
    State(app): St,
    meta: WriteMeta,
    path: Result<Path<String>, PathRejection>,
) -> Res<HttpResponse> {
    let Path(origin) = path?;
    let origin = zone_key(&origin)?;
    let status = deleted(&write(&app, Command::DeleteDnssec { origin }, &meta).await?)?;
    Ok(status.into_response())
}

/// The most attempts at a new key whose tag no key of the zone has (RFC 4034 Appendix B:
/// tags are not unique; distinct ones spare validators trying two keys).
const TAG_TRIES: usize = 16;

/// `POST /zones/{origin}/dnssec/rollover`: a new key for `role`, published at once, made
/// here and carried in the command. 202: the roll goes on by itself (and, for a KSK or
/// CSK, waits for `ds-seen`).
pub async fn post_rollover(
    State(app): St,
    meta: WriteMeta,
    path: Result<Path<String>, PathRejection>,
    JsonBody(body): JsonBody<PostRollover>,
) -> Res<HttpResponse> {
    let Path(origin) = path?;
    let origin = zone_key(&origin)?;
    let (algorithm, role, taken) = {
        let state = app.cluster.state();
        let e = signed(&state, &origin)?;
        let role = e
            .keys
            .roll_role(body.role)
            .map_err(|e| ApiError::Unprocessable(e.to_string()))?;
        if e.keys
            .keys
            .iter()
            .any(|k| k.role == role && k.replaces.is_some())
        {
            return Err(ApiError::Conflict(format!(
                "a {} roll of {origin} is already under way",
                role.name()
            )));
        }
        let taken: Vec<u16> = e.keys.keys.iter().map(|k| k.tag).collect();
        (e.keys.algorithm, role, taken)
    };
    let mut key = None;
    for _ in 0..TAG_TRIES {
        let k =
            ZoneKey::generate(algorithm, role).map_err(|e| ApiError::Internal(e.to_string()))?;
        if !taken.contains(&k.tag) {
            key = Some(k);
            break;
        }
    }
    let key = key.ok_or_else(|| ApiError::Internal("no key with a free tag".into()))?;
    write(
        &app,
        Command::Rollover {
            origin: origin.clone(),
            role,
            key,
        },
        &meta,
    )
    .await?;
    after_write(&app, StatusCode::ACCEPTED, &origin)
}

/// `POST /zones/{origin}/dnssec/ds-seen`: the parent now has the new DS of a KSK or CSK
/// roll, so the old key may leave (as Knot's `zone-ksk-submitted`). 409 when no roll waits.
pub async fn post_ds_seen(
    State(app): St,
    meta: WriteMeta,
    path: Result<Path<String>, PathRejection>,
) -> Res<HttpResponse> {
    let Path(origin) = path?;
    let origin = zone_key(&origin)?;
    signed(&app.cluster.state(), &origin)?;
    write(
        &app,
        Command::DsSeen {
            origin: origin.clone(),
        },
        &meta,
    )
    .await?;
    after_write(&app, StatusCode::OK, &origin)
}

/// The zone's keys, or 404 (no zone, or not signed).
fn signed<'s>(state: &'s crate::cluster::State, origin: &str) -> Res<&'s DnssecEntry> {
    match state.dnssec(origin) {
        Some(e) => Ok(e),
        None if state.zone(origin).is_none() => {
            Err(ApiError::NotFound(format!("no zone {origin}")))
        }
        None => Err(ApiError::NotFound(format!("zone {origin} is not signed"))),
    }
}

/// The GET body after a committed write.
fn after_write(app: &App, status: StatusCode, origin: &str) -> Res<HttpResponse> {
    let state = app.cluster.state();
    match state.dnssec(origin) {
        Some(e) => answer(status, origin, e),
        None => Err(ApiError::NotFound(format!("zone {origin} is not signed"))),
    }
}
