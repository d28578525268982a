//! The admin API end to end through the router, over a real one-node cluster (Raft and its
//! store in a temporary directory; a second node where membership is tested).

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

use super::testing::{test_api, TestApi};
use super::*;
use crate::cluster;

const TOKEN: &str = "s3cret";
const ZONE: &str = "$TTL 300\n@ IN SOA ns1 h 1 2 3 4 5\n@ IN NS ns1\nns1 IN A 192.0.2.1\n";

struct Reply {
    status: StatusCode,
    content_type: String,
    headers: axum::http::HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// An error reply: JSON `{"error": "..."}`; its message.
    fn error(&self) -> String {
        assert!(
            self.content_type.starts_with("application/json"),
            "error content type {:?}",
            self.content_type
        );
        let v = self.json();
        v["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error field: {v}"))
            .to_string()
    }
}

async fn call(
    router: &Router,
    method: Method,
    uri: &str,
    token: Option<&str>,
    content_type: Option<&str>,
    body: impl Into<Body>,
) -> Reply {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    if let Some(ct) = content_type {
        req = req.header(header::CONTENT_TYPE, ct);
    }
    exchange(router, req.body(body.into()).expect("request")).await
}

/// Send one request through the router and read the whole reply.
async fn exchange(router: &Router, req: Request<Body>) -> Reply {
    let resp = router.clone().oneshot(req).await.expect("infallible");
    let status = resp.status();
    let headers = resp.headers().clone();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = resp
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes()
        .to_vec();
    Reply {
        status,
        content_type,
        headers,
        body,
    }
}

async fn get(router: &Router, uri: &str) -> Reply {
    call(router, Method::GET, uri, None, None, Body::empty()).await
}

async fn send_json(router: &Router, method: Method, uri: &str, body: Value) -> Reply {
    call(
        router,
        method,
        uri,
        Some(TOKEN),
        Some("application/json"),
        body.to_string(),
    )
    .await
}

async fn put_zone(router: &Router, origin: &str, text: &str) -> Reply {
    call(
        router,
        Method::PUT,
        &format!("/api/v1/zones/{origin}"),
        Some(TOKEN),
        Some("text/dns"),
        text.to_string(),
    )
    .await
}

async fn delete(router: &Router, uri: &str) -> Reply {
    call(
        router,
        Method::DELETE,
        uri,
        Some(TOKEN),
        None,
        Body::empty(),
    )
    .await
}

fn dc_body(lat: f64) -> Value {
    json!({"location": {"lat": lat, "lon": -0.1}, "addresses": ["192.0.2.10", "2001:db8::10"]})
}

async fn api() -> TestApi {
    test_api(Some(TOKEN)).await
}

#[tokio::test]
async fn healthz_is_503_until_ready_then_200() {
    let t = api().await;
    let r = get(&t.router, "/healthz").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    t.ready.set_ready();
    let r = get(&t.router, "/healthz").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.text(), "ok\n");
}

#[tokio::test]
async fn mutating_calls_need_the_token() {
    let t = api().await;
    let uri = "/api/v1/zones/example.com";
    let r = call(&t.router, Method::PUT, uri, None, Some("text/dns"), ZONE).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.error().contains("Bearer"), "{}", r.error());
    assert!(r.headers.contains_key(header::WWW_AUTHENTICATE));
    let r = call(
        &t.router,
        Method::PUT,
        uri,
        Some("wrong"),
        Some("text/dns"),
        ZONE,
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.error().contains("wrong"));
    let r = call(
        &t.router,
        Method::PUT,
        uri,
        Some("s3cre"),
        Some("text/dns"),
        ZONE,
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::UNAUTHORIZED,
        "a prefix of the token is not the token"
    );
    // A scheme other than Bearer.
    let req = Request::put(uri)
        .header(header::AUTHORIZATION, format!("Basic {TOKEN}"))
        .body(Body::from(ZONE))
        .expect("request");
    let resp = t.router.clone().oneshot(req).await.expect("infallible");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    // Nothing was written.
    assert_eq!(t.cluster.state().zones().count(), 0);
    let r = call(
        &t.router,
        Method::PUT,
        uri,
        Some(TOKEN),
        Some("text/dns"),
        ZONE,
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    // GETs need none.
    assert_eq!(get(&t.router, uri).await.status, StatusCode::OK);
}

#[tokio::test]
async fn no_configured_token_refuses_every_write() {
    for token in [None, Some("")] {
        let t = test_api(token).await;
        let r = call(
            &t.router,
            Method::DELETE,
            "/api/v1/datacenters/lon",
            Some("anything"),
            None,
            Body::empty(),
        )
        .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert!(
            r.error().contains("no admin token is configured"),
            "{}",
            r.error()
        );
        let r = call(
            &t.router,
            Method::DELETE,
            "/api/v1/datacenters/lon",
            Some(""),
            None,
            Body::empty(),
        )
        .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
}

#[tokio::test]
async fn bad_json_is_400_and_wrong_shapes_are_422() {
    let t = api().await;
    let uri = "/api/v1/datacenters/lon";
    let r = call(
        &t.router,
        Method::PUT,
        uri,
        Some(TOKEN),
        Some("application/json"),
        "{not json",
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.error().contains("not valid JSON"), "{}", r.error());
    let r = call(
        &t.router,
        Method::PUT,
        uri,
        Some(TOKEN),
        Some("application/json"),
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    r.error();
    let r = send_json(
        &t.router,
        Method::PUT,
        uri,
        json!({"location": "here", "addresses": []}),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    r.error();
    let mut body = dc_body(51.5);
    body["colour"] = json!("blue");
    let r = send_json(&t.router, Method::PUT, uri, body).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "unknown fields are 400");
    assert!(r.error().contains("colour"), "{}", r.error());
    let r = send_json(
        &t.router,
        Method::PUT,
        uri,
        json!({"addresses": ["192.0.2.1"]}),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.error().contains("location"), "{}", r.error());
    // Invalid values (latitude out of range) are 422 too.
    let r = send_json(&t.router, Method::PUT, uri, dc_body(123.0)).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    r.error();
    // JSON must say so: curl's default form type, text/plain (what a cross-site form can
    // send) and no type at all are 415, saying nothing was applied.
    for ct in [
        Some("application/x-www-form-urlencoded"),
        Some("text/plain"),
        None,
    ] {
        let r = call(
            &t.router,
            Method::PUT,
            uri,
            Some(TOKEN),
            ct,
            dc_body(51.5).to_string(),
        )
        .await;
        assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{ct:?}");
        assert_eq!(r.json()["outcome"], "not_applied");
    }
    let r = call(
        &t.router,
        Method::PUT,
        uri,
        Some(TOKEN),
        Some("application/json; charset=utf-8"),
        dc_body(51.5).to_string(),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
}

#[tokio::test]
async fn oversize_body_is_413_json() {
    let t = api().await;
    let big = "; padding\n".repeat(BODY_LIMIT / 10 + 10);
    let r = put_zone(&t.router, "example.com", &big).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(r.error().contains("limit"), "{}", r.error());
    let big_json = format!("{{\"weight\": 1, \"pad\": \"{}\"}}", "x".repeat(BODY_LIMIT));
    let r = call(
        &t.router,
        Method::PATCH,
        "/api/v1/datacenters/lon",
        Some(TOKEN),
        Some("application/json"),
        big_json,
    )
    .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    r.error();
}

#[tokio::test]
async fn unknown_routes_are_404_json_and_wrong_methods_405_json() {
    let t = api().await;
    let r = get(&t.router, "/api/v1/nope").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.error().contains("/api/v1/nope"));
    let r = get(&t.router, "/index.html").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    r.error();
    // The root is the dashboard.
    let r = get(&t.router, "/").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.content_type.starts_with("text/html"));
    let r = call(
        &t.router,
        Method::POST,
        "/api/v1/zones",
        Some(TOKEN),
        None,
        Body::empty(),
    )
    .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    r.error();
}

#[tokio::test]
async fn writes_without_quorum_are_503_json() {
    // A node whose only peer is never there: no leader, no quorum.
    let t = super::testing::no_quorum_api(Some(TOKEN)).await;
    let r = put_zone(&t.router, "example.com", ZONE).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.error().contains("no quorum"), "{}", r.error());
    let r = send_json(
        &t.router,
        Method::PUT,
        "/api/v1/datacenters/lon",
        dc_body(51.5),
    )
    .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    r.error();
    let r = send_json(
        &t.router,
        Method::POST,
        "/api/v1/cluster/members",
        json!({"id": 3, "addr": "127.0.0.1:9"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
    r.error();
    // Reads still answer.
    assert_eq!(get(&t.router, "/api/v1/zones").await.status, StatusCode::OK);
}

#[tokio::test]
async fn openapi_lists_every_route() {
    let t = api().await;
    let r = get(&t.router, "/api/v1/openapi.json").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.content_type.starts_with("application/json"));
    let doc = r.json();
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    let paths = doc["paths"].as_object().expect("paths");
    for (method, path) in ROUTES {
        let doc_path = path.strip_prefix(API_PREFIX).unwrap_or(path);
        let item = paths
            .get(doc_path)
            .unwrap_or_else(|| panic!("openapi.json has no path {doc_path}"));
        let op = &item[method.to_ascii_lowercase()];
        assert!(op.is_object(), "openapi.json has no {method} {doc_path}");
        assert!(
            op["responses"].is_object(),
            "{method} {doc_path} has no responses"
        );
    }
    let documented: usize = paths
        .values()
        .map(|item| {
            ["get", "put", "post", "patch", "delete"]
                .iter()
                .filter(|m| item.get(**m).is_some())
                .count()
        })
        .sum();
    assert_eq!(
        documented,
        ROUTES.len(),
        "openapi.json documents routes the router lacks"
    );
    // Every listed route exists in the router (neither 404 nor 405 from routing).
    for (method, path) in ROUTES {
        let uri = path
            .replace("{id}", "1")
            .replace("{origin}", "example.com")
            .replace("{name}", "www");
        let method: Method = method.parse().expect("method");
        let r = call(
            &t.router,
            method.clone(),
            &uri,
            Some(TOKEN),
            None,
            Body::empty(),
        )
        .await;
        assert_ne!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{method} {uri}");
        if r.status == StatusCode::NOT_FOUND {
            assert!(
                !r.error().starts_with("no route"),
                "{method} {uri}: {}",
                r.error()
            );
        }
    }
}

#[tokio::test]
async fn zones_put_get_delete_in_any_case_with_or_without_the_dot() {
    let t = api().await;
    let r = put_zone(&t.router, "Example.COM", ZONE).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.content_type, "text/dns");
    assert_eq!(r.text(), ZONE);
    for origin in ["example.com", "example.com.", "EXAMPLE.Com.", "Example.COM"] {
        let r = get(&t.router, &format!("/api/v1/zones/{origin}")).await;
        assert_eq!(r.status, StatusCode::OK, "{origin}");
        assert_eq!(r.content_type, "text/dns");
        assert_eq!(r.text(), ZONE);
    }
    let r = get(&t.router, "/api/v1/zones").await;
    assert_eq!(r.json(), json!(["example.com."]));
    // Replace: 200. Plain text and no content type are zones too.
    let r = call(
        &t.router,
        Method::PUT,
        "/api/v1/zones/example.com.",
        Some(TOKEN),
        Some("text/plain; charset=utf-8"),
        ZONE,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = call(
        &t.router,
        Method::PUT,
        "/api/v1/zones/example.com",
        Some(TOKEN),
        None,
        ZONE,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = call(
        &t.router,
        Method::PUT,
        "/api/v1/zones/example.com",
        Some(TOKEN),
        Some("application/json"),
        "{}",
    )
    .await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    r.error();
    // A parse error is 400 with its line, and the old zone stays.
    let bad = format!("{ZONE}www IN A not-an-address\n");
    let r = put_zone(&t.router, "example.com", &bad).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.error().contains(":5"), "{}", r.error());
    assert_eq!(
        get(&t.router, "/api/v1/zones/example.com").await.text(),
        ZONE
    );
    let r = get(&t.router, "/api/v1/zones/bad..name").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    r.error();
    let r = delete(&t.router, "/api/v1/zones/EXAMPLE.com.").await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = get(&t.router, "/api/v1/zones/example.com").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    r.error();
    let r = delete(&t.router, "/api/v1/zones/example.com").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    r.error();
}

#[tokio::test]
async fn datacenters_put_patch_delete() {
    let t = api().await;
    let uri = "/api/v1/datacenters/lon";
    let r = send_json(&t.router, Method::PUT, uri, dc_body(51.5)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let dc = r.json();
    assert_eq!(dc["id"], "lon");
    assert_eq!(dc["weight"], 100);
    assert_eq!(dc["state"], "active");
    assert_eq!(dc["health"], "unknown");
    // A body id must match the URL.
    let mut body = dc_body(51.5);
    body["id"] = json!("par");
    let r = send_json(&t.router, Method::PUT, uri, body).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    r.error();
    // Drain, then re-PUT the definition: the drain stays.
    let r = send_json(&t.router, Method::PATCH, uri, json!({"state": "drained"})).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["state"], "drained");
    let r = send_json(&t.router, Method::PUT, uri, dc_body(51.6)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["state"], "drained");
    assert_eq!(r.json()["location"]["lat"], 51.6);
    // The GET body can be sent back (health is ignored), and a named state is applied.
    let mut back = get(&t.router, uri).await.json();
    back["state"] = json!("active");
    back["health"] = json!("healthy");
    let r = send_json(&t.router, Method::PUT, uri, back).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["state"], "active");
    assert_eq!(r.json()["health"], "unknown");
    let r = send_json(&t.router, Method::PATCH, uri, json!({"weight": 7})).await;
    assert_eq!(r.json()["weight"], 7);
    for bad in [
        json!({}),
        json!({"weight": 5000}),
        json!({"state": "unhealthy"}),
    ] {
        let r = send_json(&t.router, Method::PATCH, uri, bad.clone()).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
        r.error();
    }
    // An unknown field is 400.
    let r = send_json(&t.router, Method::PATCH, uri, json!({"health": "up"})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = send_json(
        &t.router,
        Method::PATCH,
        "/api/v1/datacenters/nope",
        json!({"weight": 1}),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    r.error();
    let list = get(&t.router, "/api/v1/datacenters").await.json();
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    // the drain and its undo above are the datacenter's events
    let r = get(&t.router, "/api/v1/datacenters/lon/events").await;
    assert_eq!(r.status, StatusCode::OK);
    let events = r.json();
    let tos: Vec<&str> = events
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["to"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(tos, vec!["drained", "active"], "{events}");
    assert_eq!(
        get(&t.router, "/api/v1/datacenters/nope/events")
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(&t.router, "/api/v1/datacenters/nope").await.status,
        StatusCode::NOT_FOUND
    );
    // In use: 409.
    put_zone(&t.router, "example.com", ZONE).await;
    let r = send_json(
        &t.router,
        Method::PUT,
        "/api/v1/zones/example.com/services/www",
        json!({"policy": "geo_nearest", "datacenters": ["lon"]}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let r = delete(&t.router, uri).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    r.error();
    assert_eq!(
        delete(&t.router, "/api/v1/zones/example.com/services/www")
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(delete(&t.router, uri).await.status, StatusCode::NO_CONTENT);
    assert_eq!(get(&t.router, uri).await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn services_put_get_list_delete() {
    let t = api().await;
    put_zone(&t.router, "example.com", ZONE).await;
    send_json(
        &t.router,
        Method::PUT,
        "/api/v1/datacenters/lon",
        dc_body(51.5),
    )
    .await;
    let body = json!({"policy": "round_robin", "datacenters": ["lon"], "ttl": 30});
    let r = send_json(
        &t.router,
        Method::PUT,
        "/api/v1/zones/Example.com./services/WWW",
        body.clone(),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let s = r.json();
    assert_eq!(
        (s["zone"].clone(), s["name"].clone()),
        (json!("example.com."), json!("www"))
    );
    let r = send_json(
        &t.router,
        Method::PUT,
        "/api/v1/zones/example.com/services/www",
        body.clone(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = get(&t.router, "/api/v1/zones/EXAMPLE.COM/services/Www").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["ttl"], 30);
    // The GET body (with its zone and name) can be sent back.
    let r = send_json(
        &t.router,
        Method::PUT,
        "/api/v1/zones/example.com/services/www",
        r.json(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let mut other = body.clone();
    other["name"] = json!("api");
    let r = send_json(
        &t.router,
        Method::PUT,
        "/api/v1/zones/example.com/services/www",
        other,
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    r.error();
    // The apex.
    let r = send_json(
        &t.router,
        Method::PUT,
        "/api/v1/zones/example.com/services/@",
        body.clone(),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let list = get(&t.router, "/api/v1/zones/example.com/services")
        .await
        .json();
    assert_eq!(list.as_array().map(Vec::len), Some(2));
    // An unknown datacenter is 422; an unknown zone 404; a bad policy 422.
    let r = send_json(
        &t.router,
        Method::PUT,
        "/api/v1/zones/example.com/services/api",
        json!({"policy": "weighted", "datacenters": ["nowhere"]}),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.error().contains("nowhere"));
    let r = send_json(
        &t.router,
        Method::PUT,
        "/api/v1/zones/example.org/services/www",
        body.clone(),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    r.error();
    assert_eq!(
        get(&t.router, "/api/v1/zones/example.org/services")
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let r = send_json(
        &t.router,
        Method::PUT,
        "/api/v1/zones/example.com/services/api",
        json!({"policy": "nearest", "datacenters": ["lon"]}),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    r.error();
    assert_eq!(
        delete(&t.router, "/api/v1/zones/example.com/services/@")
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    let r = delete(&t.router, "/api/v1/zones/example.com/services/@").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    r.error();
    assert_eq!(
        get(&t.router, "/api/v1/zones/example.com/services/nope")
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn explain_checks_its_parameters() {
    let t = api().await;
    for uri in [
        "/api/v1/explain",
        "/api/v1/explain?type=A&client=192.0.2.1",
        "/api/v1/explain?name=www.example.com&client=nope",
        "/api/v1/explain?name=www.example.com",
        "/api/v1/explain?name=www.example.com&type=BOGUS&client=192.0.2.1",
    ] {
        let r = get(&t.router, uri).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{uri}");
        r.error();
    }
    let r = get(
        &t.router,
        "/api/v1/explain?name=www.example.com&type=aaaa&client=2001:db8::1",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let v = r.json();
    assert_eq!(v["rcode"], "REFUSED", "{v}");
}

#[tokio::test]
async fn cluster_status_and_membership() {
    let t = api().await;
    let v = get(&t.router, "/api/v1/cluster").await.json();
    assert_eq!(v["node_id"], 1);
    assert_eq!(v["leader"], 1);
    assert_eq!(v["members"][0]["addr"], t.raft.to_string());
    assert_eq!(v["geoip"]["build_epoch"], 0);
    assert_eq!(v["geoip"]["description"], "none");
    // A second real node, started empty, joins as a learner.
    let two = super::testing::start_node(2, None).await;
    let uri = "/api/v1/cluster/members";
    let add =
        json!({"id": 2, "addr": two.raft.to_string(), "admin": "127.0.0.2:8053", "voter": false});
    let join = [("Idempotency-Key", "join-2")];
    let r = send_with(&t.router, Method::POST, uri, &join, add.clone()).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(r.json()["members"].as_array().map(Vec::len), Some(2));
    // The same key again: the first attempt's 201; without it, "already a member".
    let r = send_with(&t.router, Method::POST, uri, &join, add.clone()).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(r.json()["members"].as_array().map(Vec::len), Some(2));
    let r = send_json(&t.router, Method::POST, uri, add).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    // A key whose first write was refused (no such zone) made no membership change: 409.
    let spent = [("Idempotency-Key", "spent-1")];
    let r = delete_keyed(&t.router, "/api/v1/zones/absent.example", &spent).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text());
    let r = delete_keyed(&t.router, "/api/v1/cluster/members/2", &spent).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text());
    // The key of that addition is not the first result of another change: 409, node 2 kept.
    let r = delete_keyed(&t.router, "/api/v1/cluster/members/2", &join).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text());
    let v = get(&t.router, "/api/v1/cluster").await.json();
    assert_eq!(v["members"].as_array().map(Vec::len), Some(2), "{v}");
    // A node that is not there is not added: 503, membership as it was.
    let r = send_json(
        &t.router,
        Method::POST,
        uri,
        json!({"id": 3, "addr": "127.0.0.1:9", "voter": false}),
    )
    .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
    assert_eq!(r.json()["outcome"], "not_applied");
    let r = send_json(
        &t.router,
        Method::POST,
        uri,
        json!({"id": 3, "addr": "somewhere"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    r.error();
    let leave = [("Idempotency-Key", "leave-2")];
    for _ in 0..2 {
        let r = delete_keyed(&t.router, "/api/v1/cluster/members/2", &leave).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    }
    let r = delete(&t.router, "/api/v1/cluster/members/2").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    r.error();
    let r = delete(&t.router, "/api/v1/cluster/members/two").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    r.error();
    // Both changes are history, under the token's name (`admin`); adding again was not.
    let list = get(&t.router, "/api/v1/history?limit=1000").await.json();
    let kinds: Vec<(String, String, String)> = list
        .as_array()
        .map(|l| {
            l.iter()
                .map(|e| {
                    let s = |k: &str| e[k].as_str().unwrap_or("").to_string();
                    (s("kind"), s("target"), s("actor"))
                })
                .collect()
        })
        .unwrap_or_default();
    let member = |k: &str| (k.to_string(), "member/2".to_string(), "admin".to_string());
    assert_eq!(kinds, [member("remove_member"), member("add_member")]);
}

#[tokio::test]
async fn metrics_are_prometheus_text() {
    let t = api().await;
    t.publisher.publish(crate::snapshot::Snapshot::empty(1));
    let r = get(&t.router, "/metrics").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.content_type.starts_with("text/plain"));
    let text = r.text();
    let status = t.cluster.status();
    let term = format!("meridian_raft_term {}", status.term);
    let applied = format!(
        "meridian_raft_last_applied {}",
        status.last_applied.unwrap_or(0)
    );
    for line in [
        "meridian_up 1",
        "meridian_snapshot_generation 1",
        "meridian_raft_leader 1",
        &term,
        &applied,
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
    }
}

#[test]
fn token_comparison() {
    assert!(constant_time_eq(b"abc", b"abc"));
    assert!(!constant_time_eq(b"abc", b"abd"));
    assert!(!constant_time_eq(b"abc", b"abcd"));
    assert!(!constant_time_eq(b"", b"a"));
    assert!(constant_time_eq(b"", b""));
}

#[test]
fn membership_errors_map_by_message() {
    use crate::cluster::WriteError;
    let s = |m: &str| ApiError::from(WriteError::Membership(m.into())).status();
    assert_eq!(s("node 9 is not a member"), StatusCode::NOT_FOUND);
    assert_eq!(
        s("this node is not the leader; send it to node 2"),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        s("a membership change is already in progress"),
        StatusCode::CONFLICT
    );
    assert_eq!(s("bad"), StatusCode::BAD_REQUEST);
}

/// A JSON write with extra headers.
async fn send_with(
    router: &Router,
    method: Method,
    uri: &str,
    headers: &[(&str, &str)],
    body: Value,
) -> Reply {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .header(header::CONTENT_TYPE, "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    exchange(
        router,
        req.body(Body::from(body.to_string())).expect("request"),
    )
    .await
}

/// A DELETE with extra headers (an `Idempotency-Key`).
async fn delete_keyed(router: &Router, uri: &str, headers: &[(&str, &str)]) -> Reply {
    send_with(router, Method::DELETE, uri, headers, Value::Null).await
}

/// The newest history entry of `kind`, with its before and after.
async fn newest_entry(router: &Router, kind: &str) -> Value {
    let list = get(router, "/api/v1/history?limit=1000").await.json();
    let index = list
        .as_array()
        .and_then(|l| l.iter().find(|e| e["kind"] == kind))
        .and_then(|e| e["index"].as_u64())
        .unwrap_or_else(|| panic!("no {kind} entry in {list}"));
    get(router, &format!("/api/v1/history/{index}"))
        .await
        .json()
}

#[tokio::test]
async fn history_shows_tsig_keys_settings_and_dnssec_before_and_after_without_secrets() {
    let t = api().await;
    let r = &t.router;
    assert_eq!(
        put_zone(r, "example.com", ZONE).await.status,
        StatusCode::CREATED
    );
    let key = "/api/v1/tsig-keys/k1";
    let secret = |s: &str| json!({"algorithm": "hmac-sha256", "secret": s});
    assert_eq!(
        send_json(r, Method::PUT, key, secret("c2VjcmV0MQ=="))
            .await
            .status,
        StatusCode::CREATED
    );
    let e = newest_entry(r, "put_tsig_key").await;
    assert_eq!(e["target"], "tsig/k1");
    assert_eq!(e["before"], Value::Null);
    assert_eq!(
        e["after"],
        json!({"name": "k1", "algorithm": "hmac-sha256"})
    );
    assert_eq!(
        send_json(r, Method::PUT, key, secret("c2VjcmV0Mg=="))
            .await
            .status,
        StatusCode::OK
    );
    let e = newest_entry(r, "put_tsig_key").await;
    assert_eq!(
        e["before"], e["after"],
        "a new secret shows as the same key"
    );
    assert!(!e.to_string().contains("c2VjcmV0"), "{e}");

    let settings = json!({"allow_transfer": ["key:k1", "127.0.0.0/8"]});
    let uri = "/api/v1/zones/example.com/settings";
    assert_eq!(
        send_json(r, Method::PUT, uri, settings).await.status,
        StatusCode::CREATED
    );
    let e = newest_entry(r, "put_zone_settings").await;
    assert_eq!(e["target"], "settings/example.com.");
    assert_eq!(e["before"], Value::Null);
    assert_eq!(
        e["after"]["allow_transfer"],
        json!(["key:k1", "127.0.0.0/8"])
    );

    let dnssec = "/api/v1/zones/example.com/dnssec";
    let signed = send_json(r, Method::PUT, dnssec, json!({})).await;
    assert_eq!(signed.status, StatusCode::CREATED);
    let mut shown = signed.json();
    shown.as_object_mut().map(|o| o.remove("version"));
    let e = newest_entry(r, "put_dnssec").await;
    assert_eq!(e["target"], "dnssec/example.com.");
    assert_eq!(e["before"], Value::Null);
    assert_eq!(e["after"], shown, "the GET body without its version");
    let rolled = send_json(
        r,
        Method::POST,
        "/api/v1/zones/example.com/dnssec/rollover",
        json!({"role": "csk"}),
    )
    .await;
    assert_eq!(rolled.status, StatusCode::ACCEPTED);
    let e = newest_entry(r, "rollover").await;
    assert_eq!(e["before"], shown);
    assert_eq!(e["after"]["keys"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        delete(r, dnssec).await.status,
        StatusCode::NO_CONTENT,
        "unsign"
    );
    let e = newest_entry(r, "delete_dnssec").await;
    assert_eq!(e["after"], Value::Null);
    assert_eq!(e["before"]["keys"].as_array().map(Vec::len), Some(2));
    assert!(!e.to_string().to_lowercase().contains("private"), "{e}");
    assert_eq!(
        send_json(r, Method::PUT, uri, json!({})).await.status,
        StatusCode::OK
    );
    assert_eq!(delete(r, key).await.status, StatusCode::NO_CONTENT);
    let e = newest_entry(r, "delete_tsig_key").await;
    assert_eq!(
        e["before"],
        json!({"name": "k1", "algorithm": "hmac-sha256"})
    );
    assert_eq!(e["after"], Value::Null);
}

#[tokio::test]
async fn a_repeated_dnssec_put_is_a_write_and_honours_its_idempotency_key() {
    let t = api().await;
    let r = &t.router;
    put_zone(r, "example.com", ZONE).await;
    let uri = "/api/v1/zones/example.com/dnssec";
    let key = [("Idempotency-Key", "sign-1")];
    let first = send_with(r, Method::PUT, uri, &key, json!({"keys": "ksk+zsk"})).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text());
    // The same key again: the first result (201), not a second answer of its own.
    let again = send_with(r, Method::PUT, uri, &key, json!({"keys": "ksk+zsk"})).await;
    assert_eq!(again.status, StatusCode::CREATED, "{}", again.text());
    assert_eq!(again.json()["keys"], first.json()["keys"]);
    // Without a key: 200 with the same keys, whether or not the layout is named.
    for body in [json!({}), json!({"keys": "ksk+zsk"})] {
        let same = send_json(r, Method::PUT, uri, body).await;
        assert_eq!(same.status, StatusCode::OK, "{}", same.text());
        assert_eq!(same.json()["keys"], first.json()["keys"]);
    }
    let e = newest_entry(r, "put_dnssec").await;
    assert_eq!(e["summary"], "no change", "{e}");
    assert_eq!(e["before"], e["after"]);
    for other in [json!({"algorithm": "ED25519"}), json!({"keys": "csk"})] {
        let r = send_json(r, Method::PUT, uri, other).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text());
    }
    // A second roll of the same role while one runs: the state's 409.
    let roll = "/api/v1/zones/example.com/dnssec/rollover";
    let zsk = json!({"role": "zsk"});
    assert_eq!(
        send_json(r, Method::POST, roll, zsk.clone()).await.status,
        StatusCode::ACCEPTED
    );
    let again = send_json(r, Method::POST, roll, zsk).await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.text());
    assert!(again.error().contains("under way"), "{}", again.error());
    let csk = send_json(r, Method::POST, roll, json!({"role": "csk"})).await;
    assert_eq!(
        csk.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        csk.text()
    );
    let missing = send_json(r, Method::PUT, "/api/v1/zones/nope.test/dnssec", json!({})).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn if_match_star_is_checked_when_applied_and_means_exists() {
    let t = api().await;
    let r = &t.router;
    put_zone(r, "example.com", ZONE).await;
    let uri = "/api/v1/datacenters/lon";
    let star = [("If-Match", "*")];
    let missing = send_with(r, Method::PUT, uri, &star, dc_body(51.5)).await;
    assert_eq!(missing.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(missing.json()["outcome"], "not_applied");
    assert_eq!(
        send_json(r, Method::PUT, uri, dc_body(51.5)).await.status,
        StatusCode::CREATED
    );
    let ok = send_with(r, Method::PUT, uri, &star, dc_body(52.0)).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text());
    // The entry carries "exists", not the version read when it was proposed: another
    // change committed in between does not make it fail.
    let state = t.cluster.state();
    let target = crate::cluster::state::Target::Datacenter("lon".into());
    let req = cluster::Request::new(cluster::Command::PatchDatacenter {
        id: "lon".into(),
        weight: Some(5),
        state: None,
    })
    .if_exists(target);
    let mut next = (*state).clone();
    let (moved, _) = next.apply_request(
        &cluster::Request::new(cluster::Command::PatchDatacenter {
            id: "lon".into(),
            weight: Some(7),
            state: None,
        }),
        100,
    );
    assert!(matches!(moved, cluster::Response::Updated { .. }));
    let (r, _) = next.apply_request(&req, 101);
    assert!(matches!(r, cluster::Response::Updated { .. }), "{r:?}");
    // Format 3: what a member must apply for it to be proposed.
    assert_eq!(req.v, 3);
}
