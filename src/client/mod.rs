//! The command-line clients of the admin API — `meridian apply` ([`apply`]) and `meridian
//! export` ([`export`]) — and the HTTP client they share ([`Api`]): the admin URL, the
//! optional bearer token, the trusted CA, and lenient readers of the API's answers.
//!
//! The read types here accept fields they do not know: a newer server may add fields to
//! its answers (a `version`, say) without breaking an older client.

pub mod apply;
pub mod explain;
pub mod export;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use reqwest::{header, Method, StatusCode, Url};
use serde::Deserialize;

use crate::admin::ErrorBody;
use crate::model::{
    Coordinates, Datacenter, DcState, Health, HealthCheck, OnAllDown, PolicyKind, Service,
    DEFAULT_SERVICE_TTL, DEFAULT_WEIGHT,
};
use crate::zoneconf::{SerialPolicy, UpdateRule, ZoneSettings};

/// Why a call to the admin API failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("bad admin URL {0:?}")]
    BadUrl(String),
    #[error("the HTTP client could not be built: {0}")]
    Build(String),
    #[error("{method} {url}: {source}")]
    Transport {
        method: Method,
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// 401: no token, or a wrong one.
    #[error("{method} {path}: 401 Unauthorized: {message}{hint}")]
    Unauthorized {
        method: Method,
        path: String,
        message: String,
        /// What to do about it.
        hint: &'static str,
    },
    #[error("{method} {path}: {status}: {message}")]
    Status {
        method: Method,
        path: String,
        status: StatusCode,
        message: String,
    },
    #[error("{method} {path}: the answer is not what was expected: {why}")]
    Decode {
        method: Method,
        path: String,
        why: String,
    },
}

/// A client of one node's admin API.
pub struct Api {
    client: reqwest::Client,
    base: Url,
    token: Option<String>,
}

impl Api {
    /// `admin` is `http(s)://host:port` (scheme optional, `/api/v1` optional); `token` is
    /// sent as `Authorization: Bearer` when given; `cacert` (PEM), when given, is the only
    /// CA trusted for an `https://` URL.
    pub fn new(
        admin: &str,
        token: Option<&str>,
        cacert: Option<&Path>,
    ) -> Result<Api, ClientError> {
        let admin = admin.trim();
        let with_scheme = if admin.contains("://") {
            admin.to_string()
        } else {
            format!("http://{admin}")
        };
        let mut base =
            Url::parse(&with_scheme).map_err(|_| ClientError::BadUrl(admin.to_string()))?;
        if base.cannot_be_a_base() {
            return Err(ClientError::BadUrl(admin.to_string()));
        }
        let path = base.path().trim_end_matches('/').to_string();
        let path = if path.ends_with("/api/v1") {
            path
        } else {
            format!("{path}/api/v1")
        };
        base.set_path(&path);
        let builder = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .no_proxy();
        let client = crate::tls::trust_only(builder, cacert)
            .map_err(|e| ClientError::Build(e.to_string()))?
            .build()
            .map_err(|e| ClientError::Build(e.to_string()))?;
        let token = token.map(str::trim).filter(|t| !t.is_empty());
        Ok(Api {
            client,
            base,
            token: token.map(str::to_string),
        })
    }

    /// Whether a token is sent.
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    async fn send(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<(&'static str, Vec<u8>)>,
    ) -> Result<(StatusCode, Vec<u8>), ClientError> {
        self.send_query(method, segments, &[], body).await
    }

    /// [`Api::send`] with query parameters.
    async fn send_query(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Option<(&'static str, Vec<u8>)>,
    ) -> Result<(StatusCode, Vec<u8>), ClientError> {
        self.send_full(method, segments, query, body)
            .await
            .map(|(status, _, bytes)| (status, bytes))
    }

    /// [`Api::send_query`] with the answer's headers.
    async fn send_full(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Option<(&'static str, Vec<u8>)>,
    ) -> Result<(StatusCode, reqwest::header::HeaderMap, Vec<u8>), ClientError> {
        let mut url = self.url(segments);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let mut req = self.client.request(method.clone(), url.clone());
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        if let Some((content_type, bytes)) = body {
            req = req.header(header::CONTENT_TYPE, content_type).body(bytes);
        }
        let transport = |source| ClientError::Transport {
            method: method.clone(),
            url: url.to_string(),
            source,
        };
        let resp = req.send().await.map_err(transport)?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.map_err(transport)?;
        Ok((status, headers, bytes.to_vec()))
    }

    fn failure(
        &self,
        method: &Method,
        segments: &[&str],
        status: StatusCode,
        body: &[u8],
    ) -> ClientError {
        let message = serde_json::from_slice::<ErrorBody>(body)
            .map(|e| e.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(body).trim().to_string());
        let path = self.url(segments).path().to_string();
        if status == StatusCode::UNAUTHORIZED {
            let hint = if self.token.is_some() {
                " (the token given was refused)"
            } else {
                " (this server needs a token: give --token or set MERIDIAN_ADMIN_TOKEN)"
            };
            return ClientError::Unauthorized {
                method: method.clone(),
                path,
                message,
                hint,
            };
        }
        ClientError::Status {
            method: method.clone(),
            path,
            status,
            message,
        }
    }

    /// A JSON answer; `None` on 404.
    pub async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        segments: &[&str],
    ) -> Result<Option<T>, ClientError> {
        match self.get(segments).await? {
            None => Ok(None),
            Some(body) => {
                serde_json::from_slice(&body)
                    .map(Some)
                    .map_err(|e| ClientError::Decode {
                        method: Method::GET,
                        path: self.url(segments).path().to_string(),
                        why: e.to_string(),
                    })
            }
        }
    }

    /// A text answer (a zone); `None` on 404.
    pub async fn get_text(&self, segments: &[&str]) -> Result<Option<String>, ClientError> {
        Ok(self
            .get(segments)
            .await?
            .map(|b| String::from_utf8_lossy(&b).into_owned()))
    }

    /// The body of a 200; `None` on 404.
    pub async fn get(&self, segments: &[&str]) -> Result<Option<Vec<u8>>, ClientError> {
        Ok(self.get_with_headers(segments).await?.map(|(_, body)| body))
    }

    /// [`Api::get`] with the answer's headers.
    async fn get_with_headers(
        &self,
        segments: &[&str],
    ) -> Result<Option<(reqwest::header::HeaderMap, Vec<u8>)>, ClientError> {
        let (status, headers, body) = self.send_full(Method::GET, segments, &[], None).await?;
        match status {
            StatusCode::OK => Ok(Some((headers, body))),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(self.failure(&Method::GET, segments, status, &body)),
        }
    }

    pub async fn put_json<T: serde::Serialize>(
        &self,
        segments: &[&str],
        value: &T,
    ) -> Result<(), ClientError> {
        let bytes = serde_json::to_vec(value).map_err(|e| ClientError::Decode {
            method: Method::PUT,
            path: self.url(segments).path().to_string(),
            why: e.to_string(),
        })?;
        self.write(Method::PUT, segments, Some(("application/json", bytes)))
            .await
    }

    pub async fn put_text(&self, segments: &[&str], text: &str) -> Result<(), ClientError> {
        self.write(
            Method::PUT,
            segments,
            Some(("text/dns", text.as_bytes().to_vec())),
        )
        .await
    }

    pub async fn delete(&self, segments: &[&str]) -> Result<(), ClientError> {
        self.write(Method::DELETE, segments, None).await
    }

    async fn write(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<(&'static str, Vec<u8>)>,
    ) -> Result<(), ClientError> {
        let (status, answer) = self.send(method.clone(), segments, body).await?;
        if status.is_success() {
            Ok(())
        } else {
            Err(self.failure(&method, segments, status, &answer))
        }
    }

    // ---- the reads both clients need ------------------------------------------------

    /// Every datacenter, as `GET /datacenters` shows it.
    pub async fn datacenters(&self) -> Result<Vec<DatacenterRead>, ClientError> {
        Ok(self.get_json(&["datacenters"]).await?.unwrap_or_default())
    }

    /// One datacenter; `None` when there is none of that id.
    pub async fn datacenter(&self, id: &str) -> Result<Option<DatacenterRead>, ClientError> {
        self.get_json(&["datacenters", id]).await
    }

    /// Every zone's origin (with its final dot), sorted.
    pub async fn zones(&self) -> Result<Vec<String>, ClientError> {
        let list: Vec<ZoneListItem> = self.get_json(&["zones"]).await?.unwrap_or_default();
        let mut origins: Vec<String> = list.into_iter().map(ZoneListItem::origin).collect();
        origins.sort();
        Ok(origins)
    }

    /// A zone's text; `None` when there is no such zone.
    pub async fn zone_text(&self, origin: &str) -> Result<Option<String>, ClientError> {
        self.get_text(&["zones", origin]).await
    }

    /// A zone's text and the SOA serial the cluster publishes for it (`None` from a server
    /// that does not say); `None` when there is no such zone.
    pub async fn zone_with_serial(
        &self,
        origin: &str,
    ) -> Result<Option<(String, Option<u32>)>, ClientError> {
        let Some((headers, body)) = self.get_with_headers(&["zones", origin]).await? else {
            return Ok(None);
        };
        let serial = headers
            .get(crate::admin::SERIAL_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        Ok(Some((String::from_utf8_lossy(&body).into_owned(), serial)))
    }

    /// The services of a zone (none when the zone does not exist).
    pub async fn services(&self, origin: &str) -> Result<Vec<ServiceRead>, ClientError> {
        Ok(self
            .get_json(&["zones", origin, "services"])
            .await?
            .unwrap_or_default())
    }

    /// One service; `None` when there is none (or no such zone).
    pub async fn service(
        &self,
        origin: &str,
        name: &str,
    ) -> Result<Option<ServiceRead>, ClientError> {
        self.get_json(&["zones", origin, "services", name]).await
    }

    /// A zone's settings; `None` when there is no such zone.
    pub async fn zone_settings(&self, origin: &str) -> Result<Option<ZoneSettings>, ClientError> {
        Ok(self
            .get_json::<SettingsRead>(&["zones", origin, "settings"])
            .await?
            .map(SettingsRead::settings))
    }

    /// The DNSSEC algorithm a zone is signed with, `None` when it is not signed.
    pub async fn dnssec_algorithm(&self, origin: &str) -> Result<Option<String>, ClientError> {
        #[derive(Deserialize)]
        struct DnssecRead {
            algorithm: String,
        }
        Ok(self
            .get_json::<DnssecRead>(&["zones", origin, "dnssec"])
            .await?
            .map(|d| d.algorithm))
    }

    /// Every TSIG key's name and algorithm (never a secret).
    pub async fn tsig_keys(&self) -> Result<Vec<TsigKeyRead>, ClientError> {
        Ok(self.get_json(&["tsig-keys"]).await?.unwrap_or_default())
    }
}

// ---- what the API answers, read leniently --------------------------------------------

/// A datacenter as `GET /datacenters[/{id}]` shows it (status fields beside the definition
/// are ignored but for `state`).
#[derive(Clone, Debug, Deserialize)]
pub struct DatacenterRead {
    pub id: String,
    pub location: Coordinates,
    pub addresses: Vec<IpAddr>,
    #[serde(default = "default_weight")]
    pub weight: u16,
    #[serde(default)]
    pub state: DcState,
    #[serde(default)]
    pub health_check: Option<HealthCheck>,
}

fn default_weight() -> u16 {
    DEFAULT_WEIGHT
}

impl DatacenterRead {
    pub fn to_datacenter(&self) -> Datacenter {
        Datacenter {
            id: self.id.clone(),
            location: self.location,
            addresses: self.addresses.clone(),
            weight: self.weight,
            state: self.state,
            health: Health::Unknown,
            health_check: self.health_check.clone(),
        }
    }
}

/// A service as `GET /zones/{origin}/services[/{name}]` shows it.
#[derive(Clone, Debug, Deserialize)]
pub struct ServiceRead {
    pub zone: String,
    pub name: String,
    pub policy: PolicyKind,
    pub datacenters: Vec<String>,
    #[serde(default = "default_ttl")]
    pub ttl: u32,
    #[serde(default)]
    pub answers: Option<u16>,
    #[serde(default)]
    pub overrides: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub on_all_down: OnAllDown,
}

fn default_ttl() -> u32 {
    DEFAULT_SERVICE_TTL
}

impl ServiceRead {
    pub fn to_service(&self) -> Service {
        Service {
            zone: self.zone.clone(),
            name: self.name.clone(),
            policy: self.policy,
            datacenters: self.datacenters.clone(),
            ttl: self.ttl,
            answers: self.answers,
            overrides: self.overrides.clone(),
            on_all_down: self.on_all_down,
        }
    }
}

/// Zone settings as `GET /zones/{origin}/settings` shows them (with a `version`).
#[derive(Clone, Debug, Deserialize)]
struct SettingsRead {
    #[serde(default)]
    allow_transfer: Vec<String>,
    #[serde(default)]
    notify: Vec<std::net::SocketAddr>,
    #[serde(default)]
    notify_key: Option<String>,
    #[serde(default)]
    allow_update: Vec<UpdateRule>,
    #[serde(default)]
    serial: SerialPolicy,
}

impl SettingsRead {
    fn settings(self) -> ZoneSettings {
        ZoneSettings {
            allow_transfer: self.allow_transfer,
            notify: self.notify,
            notify_key: self.notify_key,
            allow_update: self.allow_update,
            serial: self.serial,
        }
    }
}

/// A TSIG key as `GET /tsig-keys` shows it.
#[derive(Clone, Debug, Deserialize)]
pub struct TsigKeyRead {
    pub name: String,
    pub algorithm: String,
}

/// An entry of `GET /zones`: the origin, or an object that names it.
#[derive(Deserialize)]
#[serde(untagged)]
enum ZoneListItem {
    Origin(String),
    Object { origin: String },
}

impl ZoneListItem {
    fn origin(self) -> String {
        match self {
            ZoneListItem::Origin(o) | ZoneListItem::Object { origin: o } => o,
        }
    }
}

/// A runtime for one command: the clients are one-shot.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_urls_are_normalised() {
        for admin in [
            "127.0.0.1:8053",
            "http://127.0.0.1:8053",
            "http://127.0.0.1:8053/",
            "http://127.0.0.1:8053/api/v1/",
        ] {
            let api = Api::new(admin, Some("tok"), None).expect("url");
            assert_eq!(
                api.url(&["zones", "example.com."]).as_str(),
                "http://127.0.0.1:8053/api/v1/zones/example.com.",
                "{admin}"
            );
        }
        let api = Api::new("http://h:1/prefix", None, None).expect("url");
        assert!(!api.has_token());
        assert_eq!(
            api.url(&["zones", "x", "services", "@"]).as_str(),
            "http://h:1/prefix/api/v1/zones/x/services/@"
        );
    }

    #[test]
    fn reads_accept_fields_a_newer_server_adds() {
        let dc: DatacenterRead = serde_json::from_str(
            r#"{"id":"lon","location":{"lat":1,"lon":2},"addresses":["192.0.2.1"],"weight":5,
               "state":"drained","health":"healthy","version":7,"opinions":[],"answers_share":0.5}"#,
        )
        .expect("datacenter");
        assert_eq!((dc.weight, dc.state), (5, DcState::Drained));
        let s: SettingsRead = serde_json::from_str(
            r#"{"allow_transfer":["::1/128"],"serial":"unixtime","version":3}"#,
        )
        .expect("settings");
        assert_eq!(s.settings().serial, SerialPolicy::Unixtime);
        let z: Vec<ZoneListItem> =
            serde_json::from_str(r#"["a.", {"origin": "b.", "version": 2}]"#).expect("zones");
        let z: Vec<String> = z.into_iter().map(ZoneListItem::origin).collect();
        assert_eq!(z, ["a.", "b."]);
    }

    /// A server that wants a token for reads (`reads_need_token`): the error says what to do.
    #[tokio::test]
    async fn a_401_on_a_read_asks_for_a_token() {
        let router = axum::Router::new().fallback(|| async {
            (
                axum::http::StatusCode::UNAUTHORIZED,
                axum::Json(serde_json::json!({"error": "this needs a token"})),
            )
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        let dir = tempfile::tempdir().expect("tmp");
        let url = format!("http://{addr}");
        let e = export::export(&url, None, None, &dir.path().join("x"))
            .await
            .expect_err("401");
        let msg = format!("{e:#}");
        assert!(
            msg.contains("401") && msg.contains("give --token or set MERIDIAN_ADMIN_TOKEN"),
            "{msg}"
        );
        assert!(!dir.path().join("x").exists(), "nothing written");
        let e = export::export(&url, Some("wrong"), None, &dir.path().join("x"))
            .await
            .expect_err("401");
        assert!(
            format!("{e:#}").contains("the token given was refused"),
            "{e:#}"
        );
    }
}
