//! The DNSSEC routes (`/zones/{origin}/dnssec`, `.../rollover`, `.../ds-seen`): keys are
//! made here, by the node that takes the request, and proposed inside the command; what
//! comes back shows public forms only (DNSKEY, DS), never a private key.

use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response as HttpResponse};
use axum::Json;
use serde::Deserialize;

use crate::admin::error::{ApiError, JsonBody};
use crate::admin::routes::{deleted, etag, put_status, write, zone_key, Versioned, WriteMeta};
use crate::admin::App;
use crate::cluster::state::DnssecEntry;
use crate::cluster::Command;
use crate::name::ZoneName;
use crate::zone::dnssec::{Algorithm, Layout, Role, ZoneKey, ZoneKeys};

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

/// A signed zone as the API shows it: the keys' public forms, with their version.
fn answer(status: StatusCode, origin: &ZoneName, e: &DnssecEntry) -> HttpResponse {
    let view = Versioned {
        object: e.public(origin),
        version: e.version,
    };
    (status, etag(e.version), Json(view)).into_response()
}

pub async fn get_dnssec(
    State(app): St,
    path: Result<Path<String>, PathRejection>,
) -> Res<HttpResponse> {
    let Path(origin) = path?;
    let origin = zone_key(&origin)?;
    let state = app.cluster.state();
    let e = state.signed(&origin)?;
    Ok(answer(StatusCode::OK, &origin, e))
}

/// Sign a zone. Every PUT is proposed, a repeated one too, so that it is answered like any
/// write (an `Idempotency-Key` gets its first result); the state says what it came to:
/// the same algorithm and layout again changes nothing (200, the same keys), another is
/// 409. Without `"keys"`, the layout is the zone's own when it is signed already.
pub async fn put_dnssec(
    State(app): St,
    meta: WriteMeta,
    path: Result<Path<String>, PathRejection>,
    JsonBody(body): JsonBody<PutDnssec>,
) -> Res<HttpResponse> {
    let Path(origin) = path?;
    let origin = zone_key(&origin)?;
    let layout = match body.keys.as_deref() {
        None => {
            // The zone's own layout, as the leader has it.
            app.cluster.catch_up().await?;
            app.cluster
                .state()
                .dnssec(&origin)
                .map_or(Layout::Csk, |e| e.keys.layout())
        }
        Some(k) => Layout::parse(k).ok_or_else(|| {
            ApiError::Unprocessable(format!("keys {k:?}: \"csk\" or \"ksk+zsk\""))
        })?,
    };
    let keys = ZoneKeys::generate(body.algorithm, layout)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let r = write(
        &app,
        Command::PutDnssec {
            origin: origin.to_string(),
            keys,
        },
        &meta,
    )
    .await?;
    let status = put_status(&r)?;
    after_write(&app, status, &origin)
}

pub async fn delete_dnssec(
    State(app): St,
    meta: WriteMeta,
    path: Result<Path<String>, PathRejection>,
) -> Res<HttpResponse> {
    let Path(origin) = path?;
    let origin = zone_key(&origin)?.to_string();
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
    // The key is made here, so its role (`zsk` names the one combined key of a CSK zone)
    // is worked out here, from the zone's keys as the leader has them; whether a roll may
    // start is the state's to say when it applies.
    app.cluster.catch_up().await?;
    let (algorithm, role, taken) = {
        let state = app.cluster.state();
        let e = state.signed(&origin)?;
        let role = e
            .keys
            .roll_role(body.role)
            .map_err(|e| ApiError::Unprocessable(e.to_string()))?;
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
            origin: origin.to_string(),
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
    write(
        &app,
        Command::DsSeen {
            origin: origin.to_string(),
        },
        &meta,
    )
    .await?;
    after_write(&app, StatusCode::OK, &origin)
}

/// The GET body after a committed write.
fn after_write(app: &App, status: StatusCode, origin: &ZoneName) -> Res<HttpResponse> {
    let state = app.cluster.state();
    let e = state.signed(origin)?;
    Ok(answer(status, origin, e))
}
