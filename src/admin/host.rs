//! The `Host` check that defeats DNS rebinding: a web page on a name its author controls
//! can have that name resolve to a node's admin address, and the operator's browser then
//! sends the node requests that carry the page's name in `Host`. So a request is served only
//! when its `Host` names this node: an IP address literal (a page cannot be served from an
//! address its author does not hold, so no rebinding is possible through one), `localhost`,
//! or a name listed in `[admin] hosts`. Anything else is refused with 421 and a JSON error.
//! A request without `Host` (HTTP/1.0 tools) cannot come from a browser and is served.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};

use crate::admin::types::ErrorBody;

/// The names, besides address literals and `localhost`, that requests may be sent to.
#[derive(Clone, Debug, Default)]
pub struct AllowedHosts {
    /// Lower case, without a final dot.
    names: Vec<String>,
}

impl AllowedHosts {
    pub fn new<S: AsRef<str>>(names: &[S]) -> AllowedHosts {
        AllowedHosts {
            names: names.iter().map(|n| normalize(n.as_ref())).collect(),
        }
    }

    /// Whether a `Host` header value (`name`, `name:port`, `[v6]:port`) names this node.
    pub fn allows(&self, host: &str) -> bool {
        let host = host.trim();
        let name = if let Some(rest) = host.strip_prefix('[') {
            match rest.split_once(']') {
                Some((v6, _)) => v6,
                None => return false,
            }
        } else {
            host.split(':').next().unwrap_or("")
        };
        let name = normalize(name);
        name.parse::<IpAddr>().is_ok() || name == "localhost" || self.names.contains(&name)
    }
}

fn normalize(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// `router` with every request's `Host` checked against `hosts`.
pub fn layer(router: Router, hosts: AllowedHosts) -> Router {
    router.layer(middleware::from_fn_with_state(Arc::new(hosts), check))
}

async fn check(State(hosts): State<Arc<AllowedHosts>>, req: Request, next: Next) -> Response {
    let host = match req.headers().get(header::HOST) {
        Some(v) => Some(v.to_str().unwrap_or("\u{fffd}").to_string()),
        None => req.uri().authority().map(|a| a.to_string()),
    };
    match host {
        Some(h) if !hosts.allows(&h) => (
            StatusCode::MISDIRECTED_REQUEST,
            Json(ErrorBody {
                outcome: None,
                error: format!(
                    "Host {h:?} is not a name of this node: use its address, localhost, or a name listed in [admin] hosts"
                ),
            }),
        )
            .into_response(),
        _ => next.run(req).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_localhost_and_listed_names_only() {
        let h = AllowedHosts::new(&["Meridian.Example.com."]);
        for ok in [
            "127.0.0.1",
            "127.0.0.1:8053",
            "10.1.2.3:80",
            "[::1]:8053",
            "[2001:db8::1]",
            "localhost",
            "LOCALHOST:8053",
            "meridian.example.com:8053",
            "meridian.example.com.",
        ] {
            assert!(h.allows(ok), "{ok}");
        }
        for refused in [
            "evil.example",
            "evil.example:8053",
            "127.0.0.1.evil.example",
            "localhost.evil.example",
            "x",
            "",
            "[::1",
            "example.com",
        ] {
            assert!(!h.allows(refused), "{refused}");
        }
    }

    #[tokio::test]
    async fn another_host_gets_421_with_a_json_error() {
        use axum::body::Body;
        use http_body_util::BodyExt;
        use tower::ServiceExt;

        let api = crate::admin::testing::test_api(Some("tok")).await;
        let router = layer(api.router.clone(), AllowedHosts::new(&["dns.example.net"]));
        let get = |host: Option<&'static str>| {
            let mut req = axum::http::Request::builder().uri("/api/v1/datacenters");
            if let Some(h) = host {
                req = req.header(header::HOST, h);
            }
            let req = req.body(Body::empty()).expect("request");
            let router = router.clone();
            async move {
                let resp = router.oneshot(req).await.expect("infallible");
                let status = resp.status();
                let ct = resp
                    .headers()
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                let body = resp.into_body().collect().await.expect("body").to_bytes();
                (status, ct, String::from_utf8_lossy(&body).into_owned())
            }
        };
        let (status, ct, body) = get(Some("attacker.example:8053")).await;
        assert_eq!(status, StatusCode::MISDIRECTED_REQUEST);
        assert!(ct.starts_with("application/json"), "{ct}");
        assert!(
            body.contains("\"error\"") && body.contains("[admin] hosts"),
            "{body}"
        );
        for ok in [
            None,
            Some("127.0.0.1:8053"),
            Some("dns.example.net"),
            Some("localhost"),
        ] {
            assert_eq!(get(ok).await.0, StatusCode::OK, "{ok:?}");
        }
    }
}
