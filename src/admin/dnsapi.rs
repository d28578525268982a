//! The routes of the DNS-side protocols' settings: TSIG keys (`/tsig-keys`) and zone
//! settings (`/zones/{origin}/settings`). A key's secret is taken, never shown.

use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response as HttpResponse};
use axum::Json;
use serde::Serialize;

use crate::admin::error::{ApiError, JsonBody};
use crate::admin::routes::{deleted, etag, put_status, write, write_at, zone_key, WriteMeta};
use crate::admin::App;
use crate::cluster::Command;
use crate::name::KeyName;
use crate::zoneconf::{TsigKeySpec, ZoneSettings};

type St = State<Arc<App>>;
type Res<T> = Result<T, ApiError>;

/// A key as the API shows it: never its secret.
#[derive(Serialize)]
pub struct TsigKeyView {
    pub name: String,
    pub algorithm: &'static str,
    pub version: u64,
}

/// Zone settings as the API shows them, with their version.
#[derive(Serialize)]
pub struct SettingsView {
    #[serde(flatten)]
    pub settings: ZoneSettings,
    pub version: u64,
}

pub async fn list_tsig_keys(State(app): St) -> Json<Vec<TsigKeyView>> {
    let state = app.cluster.state();
    Json(
        state
            .tsig_keys()
            .map(|k| TsigKeyView {
                name: k.key.name.clone(),
                algorithm: k.key.algorithm.as_str(),
                version: k.version,
            })
            .collect(),
    )
}

pub async fn get_tsig_key(
    State(app): St,
    path: Result<Path<String>, PathRejection>,
) -> Res<HttpResponse> {
    let Path(name) = path?;
    let name = KeyName::parse(&name)?;
    let state = app.cluster.state();
    let k = state
        .tsig_key(&name)
        .ok_or_else(|| ApiError::NotFound(format!("no TSIG key {name:?}")))?;
    let view = TsigKeyView {
        name: k.key.name.clone(),
        algorithm: k.key.algorithm.as_str(),
        version: k.version,
    };
    Ok((etag(k.version), Json(view)).into_response())
}

pub async fn put_tsig_key(
    State(app): St,
    key: WriteMeta,
    path: Result<Path<String>, PathRejection>,
    JsonBody(spec): JsonBody<TsigKeySpec>,
) -> Res<HttpResponse> {
    let Path(name) = path?;
    let name = KeyName::parse(&name)?;
    if let Some(body_name) = &spec.name {
        if KeyName::parse(body_name).ok().as_ref() != Some(&name) {
            return Err(ApiError::BadRequest(format!(
                "the body's name {body_name:?} does not match the URL's {name:?}"
            )));
        }
    }
    let tsig = spec
        .to_key(name.as_str())
        .map_err(|e| ApiError::Unprocessable(e.to_string()))?;
    let algorithm = tsig.algorithm.as_str();
    let r = write(&app, Command::PutTsigKey { key: tsig }, &key).await?;
    let status = put_status(&r)?;
    let version = app.cluster.state().tsig_key(&name).map_or(0, |k| k.version);
    let view = TsigKeyView {
        name: name.to_string(),
        algorithm,
        version,
    };
    Ok((status, etag(version), Json(view)).into_response())
}

pub async fn delete_tsig_key(
    State(app): St,
    key: WriteMeta,
    path: Result<Path<String>, PathRejection>,
) -> Res<HttpResponse> {
    let Path(name) = path?;
    let name = KeyName::parse(&name)?.to_string();
    let status = deleted(&write(&app, Command::DeleteTsigKey { name }, &key).await?)?;
    Ok(status.into_response())
}

pub async fn get_zone_settings(
    State(app): St,
    path: Result<Path<String>, PathRejection>,
) -> Res<HttpResponse> {
    let Path(origin) = path?;
    let origin = zone_key(&origin)?;
    let state = app.cluster.state();
    if state.zone(&origin).is_none() {
        return Err(ApiError::NotFound(format!("no zone {origin}")));
    }
    let (settings, version) = match state.zone_settings(&origin) {
        Some(s) => ((*s.settings).clone(), s.version),
        None => (ZoneSettings::default(), 0),
    };
    Ok((etag(version), Json(SettingsView { settings, version })).into_response())
}

pub async fn put_zone_settings(
    State(app): St,
    key: WriteMeta,
    path: Result<Path<String>, PathRejection>,
    JsonBody(settings): JsonBody<ZoneSettings>,
) -> Res<HttpResponse> {
    let Path(origin) = path?;
    let origin = zone_key(&origin)?;
    // Shape checks here, so that a bad rule is 422 before anything is proposed; whether the
    // zone and the keys it names exist is the state machine's to say (this node may not
    // have applied a zone or key just written through another).
    let kept = settings
        .normalised(|_| true)
        .map_err(ApiError::Unprocessable)?;
    let (r, version) = write_at(
        &app,
        Command::PutZoneSettings {
            origin: origin.to_string(),
            settings,
        },
        &key,
    )
    .await?;
    let status = put_status(&r)?;
    // What this node holds once it has applied the write; until then (it waited its while
    // for that), what was written, as the state keeps it.
    let view = match app.cluster.state().zone_settings(&origin) {
        Some(s) => SettingsView {
            settings: (*s.settings).clone(),
            version: s.version,
        },
        None => SettingsView {
            settings: kept,
            version,
        },
    };
    Ok((status, etag(view.version), Json(view)).into_response())
}
