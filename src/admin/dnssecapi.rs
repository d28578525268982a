//! The DNSSEC routes (`/zones/{origin}/dnssec`): keys are made here, by the node that takes
//! the request, and proposed inside the command; what comes back shows public forms only
//! (DNSKEY, DS), never a private key.

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
use crate::zone::dnssec::{Algorithm, KeyState, Role, ZoneKeys};

type St = State<Arc<App>>;
type Res<T> = Result<T, ApiError>;

/// `PUT /zones/{origin}/dnssec`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutDnssec {
    #[serde(default = "default_algorithm")]
    pub algorithm: Algorithm,
    /// `csk` (the default); `ksk+zsk` is not offered yet.
    #[serde(default)]
    pub keys: Option<String>,
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
    let state = app.cluster.state();
    match state.dnssec(&origin) {
        Some(e) => answer(StatusCode::OK, &origin, e),
        None if state.zone(&origin).is_none() => {
            Err(ApiError::NotFound(format!("no zone {origin}")))
        }
        None => Err(ApiError::NotFound(format!("zone {origin} is not signed"))),
    }
}

pub async fn put_dnssec(
    State(app): St,
    meta: WriteMeta,
    path: Result<Path<String>, PathRejection>,
    JsonBody(body): JsonBody<PutDnssec>,
) -> Res<HttpResponse> {
    let Path(origin) = path?;
    let origin = zone_key(&origin)?;
    if let Some(k) = body.keys.as_deref().filter(|k| *k != "csk") {
        return Err(ApiError::Unprocessable(format!(
            "keys {k:?}: only \"csk\" is offered"
        )));
    }
    {
        let state = app.cluster.state();
        if state.zone(&origin).is_none() {
            return Err(ApiError::NotFound(format!("no zone {origin}")));
        }
        // The same algorithm again: nothing to make or propose.
        if let Some(e) = state.dnssec(&origin) {
            if e.keys.algorithm == body.algorithm {
                return answer(StatusCode::OK, &origin, e);
            }
        }
    }
    let keys =
        ZoneKeys::generate_csk(body.algorithm).map_err(|e| ApiError::Internal(e.to_string()))?;
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
