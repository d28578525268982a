//! `meridian explain --admin URL NAME TYPE CLIENT`: a live node's `GET /explain`, from its
//! current state (the offline form reads the config's files).

use std::net::IpAddr;
use std::path::Path;

use reqwest::{Method, StatusCode};

use super::{Api, ClientError};
use crate::explain::Explanation;

/// Ask the node at `admin` how it would answer `client` for `name`/`qtype`. `token` is
/// needed only where reads need one.
pub async fn explain_remote(
    admin: &str,
    token: Option<&str>,
    cacert: Option<&Path>,
    name: &str,
    qtype: &str,
    client: IpAddr,
) -> Result<Explanation, ClientError> {
    let api = Api::new(admin, token, cacert)?;
    let client = client.to_string();
    let query = [("name", name), ("type", qtype), ("client", client.as_str())];
    let (status, body) = api
        .send_query(Method::GET, &["explain"], &query, None)
        .await?;
    if status != StatusCode::OK {
        return Err(api.failure(&Method::GET, &["explain"], status, &body));
    }
    serde_json::from_slice(&body).map_err(|e| ClientError::Decode {
        method: Method::GET,
        path: "/api/v1/explain".into(),
        why: e.to_string(),
    })
}
