//! What reads must not give away: the credentials in health-check URLs (userinfo and query
//! values) are shown as `***` to any caller that does not hold the write token (who could
//! set the URL anyway), and the same scrubbing is applied to URLs inside health reasons.

use crate::model::HealthCheck;

/// What a credential is shown as.
pub const MASK: &str = "***";

/// `hc` with the credentials of its URL masked.
pub fn health_check(hc: &HealthCheck) -> HealthCheck {
    let mut hc = hc.clone();
    if let HealthCheck::Http { url, .. } = &mut hc {
        *url = url_credentials(url);
    }
    hc
}

/// A URL with its userinfo (`user:pass@` → `user:***@`, `token@` → `***@`), every query
/// value and the fragment masked; scheme, host, port and path as written.
pub fn url_credentials(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let (head, rest) = url.split_at(scheme_end);
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let mut out = String::with_capacity(url.len());
    out.push_str(head);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            match userinfo.split_once(':') {
                Some((user, _password)) => {
                    out.push_str(user);
                    out.push(':');
                    out.push_str(MASK);
                }
                None => out.push_str(MASK),
            }
            out.push('@');
            out.push_str(host);
        }
        None => out.push_str(authority),
    }
    let (before_fragment, fragment) = match tail.split_once('#') {
        Some((b, f)) => (b, Some(f)),
        None => (tail, None),
    };
    match before_fragment.split_once('?') {
        Some((path, query)) => {
            out.push_str(path);
            out.push('?');
            let masked: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((key, _)) => format!("{key}={MASK}"),
                    None if pair.is_empty() => String::new(),
                    None => MASK.to_string(),
                })
                .collect();
            out.push_str(&masked.join("&"));
        }
        None => out.push_str(before_fragment),
    }
    if let Some(f) = fragment {
        out.push('#');
        if !f.is_empty() {
            out.push_str(MASK);
        }
    }
    out
}

/// Free text (a health reason) with every `scheme://…` URL in it masked as
/// [`url_credentials`] does; a URL ends at white space, a quote or a closing bracket.
pub fn text(s: &str) -> String {
    if !s.contains("://") {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find("://") {
        // The scheme: the letters right before "://".
        let start = rest[..at]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
            .map_or(0, |i| i + 1);
        let end = rest[at..]
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | ')' | '>' | ']'))
            .map_or(rest.len(), |i| at + i);
        out.push_str(&rest[..start]);
        out.push_str(&url_credentials(&rest[start..end]));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_and_query_values_are_masked() {
        assert_eq!(
            url_credentials("http://monitor:hunter2@10.0.0.1:8080/health?api_key=s3cret&x=1#frag"),
            "http://monitor:***@10.0.0.1:8080/health?api_key=***&x=***#***"
        );
        assert_eq!(
            url_credentials("https://ghp_token@example.com/"),
            "https://***@example.com/"
        );
        assert_eq!(
            url_credentials("https://[2001:db8::1]:443/status?token"),
            "https://[2001:db8::1]:443/status?***"
        );
        // Nothing to mask: as written.
        for plain in [
            "http://192.0.2.1:80/healthz",
            "https://h/",
            "http://h",
            "not a url",
        ] {
            assert_eq!(url_credentials(plain), plain);
        }
        // An '@' in the path is not userinfo.
        assert_eq!(url_credentials("http://h/a@b?k=v"), "http://h/a@b?k=***");
    }

    #[test]
    fn urls_inside_text_are_masked() {
        assert_eq!(
            text("request error: error sending request for url (http://u:p@h:1/x?k=v): refused"),
            "request error: error sending request for url (http://u:***@h:1/x?k=***): refused"
        );
        assert_eq!(text("HTTP 503"), "HTTP 503");
    }

    /// `GET /datacenters[/{id}]` through the router: masked without the write token, as
    /// written with it.
    #[tokio::test]
    async fn reads_mask_health_check_credentials_unless_the_caller_holds_the_write_token() {
        use axum::body::Body;
        use axum::http::{header, Method, Request, StatusCode};
        use http_body_util::BodyExt;
        use tower::ServiceExt;

        let api = crate::admin::testing::test_api(Some("tok")).await;
        let url = "http://monitor:hunter2@192.0.2.9:8080/health?api_key=s3cret";
        let call = |method: Method, uri: &str, token: Option<&str>, body: String| {
            let mut req = Request::builder().method(method).uri(uri);
            if let Some(t) = token {
                req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
            }
            let req = req
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body))
                .expect("request");
            let router = api.router.clone();
            async move {
                let resp = router.oneshot(req).await.expect("infallible");
                let status = resp.status();
                let body = resp.into_body().collect().await.expect("body").to_bytes();
                (status, String::from_utf8_lossy(&body).into_owned())
            }
        };
        let dc = serde_json::json!({
            "location": {"lat": 1.0, "lon": 2.0},
            "addresses": ["192.0.2.9"],
            "health_check": {"kind": "http", "url": url},
        });
        let (status, body) = call(
            Method::PUT,
            "/api/v1/datacenters/lon",
            Some("tok"),
            dc.to_string(),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        for uri in ["/api/v1/datacenters", "/api/v1/datacenters/lon"] {
            for token in [None, Some("wrong")] {
                let (status, body) = call(Method::GET, uri, token, String::new()).await;
                assert_eq!(status, StatusCode::OK);
                assert!(
                    !body.contains("hunter2") && !body.contains("s3cret"),
                    "{body}"
                );
                assert!(
                    body.contains("http://monitor:***@192.0.2.9:8080/health?api_key=***"),
                    "{body}"
                );
            }
            let (_, body) = call(Method::GET, uri, Some("tok"), String::new()).await;
            assert!(body.contains(url), "{body}");
        }
    }

    #[test]
    fn tcp_checks_are_unchanged() {
        let hc = HealthCheck::Tcp {
            address: "192.0.2.1:443".into(),
            interval: None,
            timeout: None,
            rise: None,
            fall: None,
        };
        assert_eq!(health_check(&hc), hc);
    }
}
