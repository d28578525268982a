//! The admin REST API and `meridian apply` as a new user tries them: real HTTP against the
//! real binary, with `dig` to see each change reach the DNS answers.
//! One node is shared; every test works on datacenters and zones of its own (the bootstrap
//! `example.com` with `lon`/`iad`/`sin` is only read), so the tests may run in parallel.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use common::{eventually, Node, NodeRef, TOKEN};
use serde_json::{json, Value};

const ZONE: &str = "$ORIGIN example.com.\n$TTL 300\n@ IN SOA ns1 hostmaster 1 7200 3600 1209600 300\n@ IN NS ns1\nns1 IN A 127.0.0.1\n";

const DCS: &str = r#"
[[datacenter]]
id = "lon"
location = { lat = 51.5074, lon = -0.1278 }
addresses = ["198.51.100.1"]

[[datacenter]]
id = "iad"
location = { lat = 38.9519, lon = -77.4480 }
addresses = ["198.51.100.2"]

[[datacenter]]
id = "sin"
location = { lat = 1.3521, lon = 103.8198 }
addresses = ["198.51.100.3"]
"#;

const SERVICES: &str = r#"
[[service]]
zone = "example.com"
name = "www"
policy = "geo_nearest"
datacenters = ["lon", "iad", "sin"]
ttl = 60
"#;

/// GeoIP test database clients.
const LONDON: &str = "+subnet=81.2.69.142/32";
const MILTON_US: &str = "+subnet=216.160.83.56/32";
const SINGAPORE: &str = "+subnet=214.0.0.0/24";

const LON: (f64, f64) = (51.5074, -0.1278);
const IAD: (f64, f64) = (38.9519, -77.4480);

fn node() -> &'static NodeRef {
    static NODE: OnceLock<NodeRef> = OnceLock::new();
    common::shared(&NODE, || Node::start_example(ZONE, DCS, SERVICES))
}

// ---- helpers ------------------------------------------------------------------------

/// One request to the shared node; panics when it does not answer.
fn call(
    method: &str,
    path: &str,
    body: Option<(&str, &str)>,
    token: Option<&str>,
) -> (u16, String) {
    common::call(node().admin, method, path, body, token)
}

/// An authorised JSON call; the answer parsed (`Null` when empty).
fn api(method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    common::api(
        node().admin,
        method,
        path,
        body.map(Value::to_string).as_deref(),
    )
}

fn get(path: &str) -> (u16, Value) {
    let (status, body) = call("GET", path, None, None);
    let v = serde_json::from_str(&body).unwrap_or(Value::String(body));
    (status, v)
}

/// An authorised request with a raw body of the given content type.
fn send_raw(method: &str, path: &str, content_type: &str, body: &str) -> (u16, String) {
    call(method, path, Some((content_type, body)), Some(TOKEN))
}

/// The `error` of a `{"error": "..."}` body, asserting that shape.
fn error_of(status: u16, body: &str) -> String {
    let v: Value = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("{status}: error body is not JSON ({e}): {body:?}"));
    let msg = v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{status}: no \"error\" string: {body}"));
    assert!(!msg.is_empty(), "{status}: empty error");
    msg.to_string()
}

fn expect_error(what: &str, got: (u16, String), want: u16) -> String {
    assert_eq!(got.0, want, "{what}: {}", got.1);
    error_of(got.0, &got.1)
}

fn dc_body(lat_lon: (f64, f64), addr: &str) -> Value {
    json!({"location": {"lat": lat_lon.0, "lon": lat_lon.1}, "addresses": [addr]})
}

/// A zone for `origin` (relative names), with `extra` lines after the apex records.
fn zone_text(extra: &str) -> String {
    format!("$TTL 300\n@ IN SOA ns1 hostmaster 1 7200 3600 1209600 300\n@ IN NS ns1\nns1 IN A 127.0.0.1\n{extra}")
}

fn put_zone(origin: &str, text: &str) -> (u16, String) {
    send_raw("PUT", &format!("/api/v1/zones/{origin}"), "text/dns", text)
}

/// The A addresses a client gets for `name`.
fn a_for(name: &str, subnet: &str) -> Vec<String> {
    node().dig(&[subnet, name, "A"]).answer_data("A")
}

/// Wait until `name` answers exactly `want` to that client.
fn wait_answer(name: &str, subnet: &str, want: &[&str]) {
    eventually(&format!("{name} for {subnet} answers {want:?}"), || {
        (a_for(name, subnet) == want).then_some(())
    });
}

fn meridian_apply(args: &[&str], paths: &[&Path]) -> Output {
    let admin = format!("http://{}", node().admin);
    Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["apply", "--admin", &admin, "--token", TOKEN])
        .args(args)
        .args(paths)
        .output()
        .expect("run meridian apply")
}

fn out(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

// ---- reads --------------------------------------------------------------------------

#[test]
fn reads_need_no_token_healthz_cluster_openapi_and_prometheus_metrics() {
    let (status, body) = call("GET", "/healthz", None, None);
    assert_eq!(status, 200, "{body}");

    let (status, c) = get("/api/v1/cluster");
    assert_eq!(status, 200, "{c}");
    assert_eq!(c["node_id"], 1, "{c}");
    assert_eq!(c["leader"], 1, "{c}");
    assert!(c["term"].is_u64(), "{c}");
    let members = c["members"].as_array().expect("members");
    assert_eq!(members.len(), 1, "{c}");
    assert_eq!(members[0]["id"], 1);
    assert_eq!(members[0]["voter"], true);
    assert_eq!(members[0]["addr"], node().raft.to_string());
    assert!(
        c["geoip"]["build_epoch"].as_u64().is_some_and(|e| e > 0),
        "{c}"
    );

    let (status, body) = call("GET", "/api/v1/openapi.json", None, None);
    assert_eq!(status, 200);
    let doc: Value = serde_json::from_str(&body).expect("openapi.json is JSON");
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with('3')),
        "{}",
        doc["openapi"]
    );
    for path in [
        "/datacenters",
        "/datacenters/{id}",
        "/zones/{origin}",
        "/explain",
    ] {
        assert!(doc["paths"].get(path).is_some(), "openapi lists {path}");
    }

    let (status, text) = call("GET", "/metrics", None, None);
    assert_eq!(status, 200);
    assert!(text.contains("# TYPE meridian_up gauge"), "{text}");
    assert!(text.lines().any(|l| l == "meridian_up 1"), "{text}");
    assert!(
        text.lines().any(|l| l == "meridian_raft_is_leader 1"),
        "{text}"
    );
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        // name{label="value",…} value
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        let name = match series.split_once('{') {
            Some((name, labels)) => {
                assert!(
                    labels.ends_with('}') && labels.contains('='),
                    "labels: {line}"
                );
                name
            }
            None => series,
        };
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "metric name: {line}"
        );
        assert!(value.parse::<f64>().is_ok(), "metric value: {line}");
    }
}

#[test]
fn explain_shows_the_answer_and_the_clients_country() {
    let (status, e) = get("/api/v1/explain?name=www.example.com&type=A&client=81.2.69.142");
    assert_eq!(status, 200, "{e}");
    assert_eq!(e["rcode"], "NOERROR", "{e}");
    let answers = e["answers"].as_array().expect("answers");
    assert_eq!(answers.len(), 1, "{e}");
    assert!(
        answers[0]
            .as_str()
            .is_some_and(|a| a.contains("198.51.100.1")),
        "{e}"
    );
    assert_eq!(e["service"]["client_location"]["country"], "GB", "{e}");
    assert_eq!(e["service"]["candidates"][0]["id"], "lon", "{e}");
    // a missing parameter is a JSON 400
    let got = call(
        "GET",
        "/api/v1/explain?name=www.example.com&type=A",
        None,
        None,
    );
    expect_error("explain without client", got, 400);
}

// ---- datacenters --------------------------------------------------------------------

#[test]
fn datacenter_put_creates_201_replaces_200_and_patch_validates() {
    let path = "/api/v1/datacenters/crud-a";
    let (status, dc) = api("PUT", path, Some(&dc_body(LON, "192.0.2.1")));
    assert_eq!(status, 201, "{dc}");
    assert_eq!(dc["id"], "crud-a");
    assert_eq!(dc["weight"], 100, "default weight: {dc}");
    assert_eq!(dc["state"], "active");
    let (status, list) = get("/api/v1/datacenters");
    assert_eq!(status, 200);
    let listed = list
        .as_array()
        .expect("list")
        .iter()
        .find(|d| d["id"] == "crud-a");
    let listed = listed.unwrap_or_else(|| panic!("crud-a listed: {list}"));
    assert_eq!(listed["addresses"], json!(["192.0.2.1"]));
    assert!(listed["health"].is_string(), "{listed}");

    let (status, dc) = api("PUT", path, Some(&dc_body(LON, "192.0.2.2")));
    assert_eq!(status, 200, "replaced: {dc}");
    assert_eq!(get(path).1["addresses"], json!(["192.0.2.2"]));

    let (status, dc) = api("PATCH", path, Some(&json!({"weight": 250})));
    assert_eq!(status, 200, "{dc}");
    assert_eq!(dc["weight"], 250);
    assert_eq!(get(path).1["weight"], 250);

    for bad in [r#"{}"#, r#"{"weight": 5000}"#, r#"{"state": "asleep"}"#] {
        let got = send_raw("PATCH", path, "application/json", bad);
        expect_error(&format!("PATCH {bad}"), got, 422);
    }
    // An unknown field is 400; every error answer to a write says it was not applied.
    let got = send_raw("PATCH", path, "application/json", r#"{"wieght": 5}"#);
    let body: Value = serde_json::from_str(&got.1).expect("json");
    expect_error("PATCH wieght", got, 400);
    assert_eq!(body["outcome"], "not_applied", "{body}");
    assert_eq!(
        get(path).1["weight"],
        250,
        "a refused PATCH changes nothing"
    );
    let got = send_raw(
        "PATCH",
        "/api/v1/datacenters/no-such-dc",
        "application/json",
        r#"{"weight": 5}"#,
    );
    expect_error("PATCH unknown", got, 404);

    let (status, _) = api("DELETE", path, None);
    assert_eq!(status, 204);
    expect_error("GET deleted", call("GET", path, None, None), 404);
    expect_error(
        "DELETE deleted",
        call("DELETE", path, None, Some(TOKEN)),
        404,
    );
    expect_error(
        "DELETE unknown",
        call(
            "DELETE",
            "/api/v1/datacenters/no-such-dc",
            None,
            Some(TOKEN),
        ),
        404,
    );
}

#[test]
fn drained_datacenter_moves_clients_to_the_next_site_and_re_put_keeps_the_drain() {
    let lon = "/api/v1/datacenters/dr-lon";
    assert_eq!(api("PUT", lon, Some(&dc_body(LON, "192.0.2.11"))).0, 201);
    assert_eq!(
        api(
            "PUT",
            "/api/v1/datacenters/dr-iad",
            Some(&dc_body(IAD, "192.0.2.12"))
        )
        .0,
        201
    );
    assert_eq!(put_zone("drain.test", &zone_text("")).0, 201);
    let svc = json!({"policy": "geo_nearest", "datacenters": ["dr-lon", "dr-iad"]});
    let (status, body) = api("PUT", "/api/v1/zones/drain.test/services/www", Some(&svc));
    assert_eq!(status, 201, "{body}");
    wait_answer("www.drain.test", LONDON, &["192.0.2.11"]);

    let (status, dc) = api("PATCH", lon, Some(&json!({"state": "drained"})));
    assert_eq!(status, 200, "{dc}");
    assert_eq!(dc["state"], "drained", "{dc}");
    assert_eq!(dc["id"], "dr-lon");
    wait_answer("www.drain.test", LONDON, &["192.0.2.12"]);

    // Re-PUT of the definition (no state): still drained.
    let (status, dc) = api("PUT", lon, Some(&dc_body(LON, "192.0.2.11")));
    assert_eq!(status, 200, "{dc}");
    assert_eq!(dc["state"], "drained", "PUT answer: {dc}");
    assert_eq!(get(lon).1["state"], "drained");
    assert_eq!(a_for("www.drain.test", LONDON), ["192.0.2.12"]);

    // A PUT that names the state does change it.
    let mut body = dc_body(LON, "192.0.2.11");
    body["state"] = json!("active");
    assert_eq!(api("PUT", lon, Some(&body)).0, 200);
    assert_eq!(get(lon).1["state"], "active");
    wait_answer("www.drain.test", LONDON, &["192.0.2.11"]);

    let msg = expect_error("DELETE in use", call("DELETE", lon, None, Some(TOKEN)), 409);
    assert!(msg.contains("www"), "names the service: {msg}");
    assert_eq!(get(lon).0, 200, "still there");
}

// ---- zones --------------------------------------------------------------------------

#[test]
fn zone_put_serves_a_broken_zone_is_400_with_its_line_and_delete_refuses() {
    let good = zone_text("www IN A 192.0.2.80\n");
    let (status, body) = put_zone("zones.test", &good);
    assert_eq!(status, 201, "{body}");
    let www = || node().dig(&["www.zones.test", "A"]);
    eventually("the new zone answers", || {
        (www().answer_data("A") == ["192.0.2.80"]).then_some(())
    });
    let (status, list) = get("/api/v1/zones");
    assert_eq!(status, 200);
    assert!(
        list.as_array()
            .expect("list")
            .contains(&json!("zones.test.")),
        "{list}"
    );
    assert_eq!(put_zone("zones.test.", &good).0, 200, "replaced");

    // Line 6 is bad.
    let broken = zone_text("www IN A 192.0.2.81\nbad IN A 999.1.2.3\n");
    let msg = expect_error("broken zone", put_zone("zones.test", &broken), 400);
    assert!(msg.contains(":6"), "the error names line 6: {msg}");
    let d = www();
    assert_eq!(d.status, "NOERROR", "{}", d.raw);
    assert_eq!(d.answer_data("A"), ["192.0.2.80"], "the old zone stays");

    // Any letter case, with or without the final dot.
    for origin in ["ZONES.Test", "zones.test.", "Zones.TEST."] {
        let (status, text) = call("GET", &format!("/api/v1/zones/{origin}"), None, None);
        assert_eq!(
            (status, text.as_str()),
            (200, good.as_str()),
            "GET {origin}"
        );
    }

    let svc = json!({"policy": "round_robin", "datacenters": ["lon"]});
    assert_eq!(
        api("PUT", "/api/v1/zones/zones.test/services/svc", Some(&svc)).0,
        201
    );
    let msg = expect_error(
        "DELETE a zone with services",
        call("DELETE", "/api/v1/zones/zones.test", None, Some(TOKEN)),
        409,
    );
    assert!(msg.contains("svc"), "{msg}");
    assert_eq!(www().status, "NOERROR");
    assert_eq!(
        api("DELETE", "/api/v1/zones/Zones.Test./services/SVC", None).0,
        204
    );
    assert_eq!(api("DELETE", "/api/v1/zones/ZONES.test", None).0, 204);
    eventually("the deleted zone is REFUSED", || {
        (www().status == "REFUSED").then_some(())
    });
    expect_error(
        "GET deleted zone",
        call("GET", "/api/v1/zones/zones.test", None, None),
        404,
    );
    expect_error(
        "DELETE unknown zone",
        call("DELETE", "/api/v1/zones/zones.test", None, Some(TOKEN)),
        404,
    );
}

// ---- services -----------------------------------------------------------------------

#[test]
fn services_put_geo_nearest_apex_list_and_delete_to_nxdomain_or_nodata() {
    assert_eq!(
        put_zone("svc.test", &zone_text("named IN TXT \"here\"\n")).0,
        201
    );
    let geo = json!({"policy": "geo_nearest", "datacenters": ["lon", "iad", "sin"], "ttl": 45});
    let (status, svc) = api("PUT", "/api/v1/zones/svc.test/services/geo", Some(&geo));
    assert_eq!(status, 201, "{svc}");
    assert_eq!(svc["name"], "geo");
    assert_eq!(svc["ttl"], 45);
    wait_answer("geo.svc.test", LONDON, &["198.51.100.1"]);
    assert_eq!(a_for("geo.svc.test", MILTON_US), ["198.51.100.2"]);
    assert_eq!(a_for("geo.svc.test", SINGAPORE), ["198.51.100.3"]);
    let (status, _) = api("PUT", "/api/v1/zones/svc.test/services/geo", Some(&geo));
    assert_eq!(status, 200, "replaced");

    let bad = json!({"policy": "geo_nearest", "datacenters": ["lon", "nowhere"]});
    let got = send_raw(
        "PUT",
        "/api/v1/zones/svc.test/services/bad",
        "application/json",
        &bad.to_string(),
    );
    let msg = expect_error("unknown datacenter", got, 422);
    assert!(msg.contains("nowhere"), "{msg}");
    let got = send_raw(
        "PUT",
        "/api/v1/zones/nozone.test/services/x",
        "application/json",
        &geo.to_string(),
    );
    expect_error("service in an unknown zone", got, 404);

    // The apex, and a name that has other records.
    assert_eq!(
        api("PUT", "/api/v1/zones/svc.test/services/@", Some(&geo)).0,
        201
    );
    assert_eq!(
        api("PUT", "/api/v1/zones/svc.test/services/named", Some(&geo)).0,
        201
    );
    wait_answer("svc.test", SINGAPORE, &["198.51.100.3"]);
    wait_answer("named.svc.test", MILTON_US, &["198.51.100.2"]);

    let (status, list) = get("/api/v1/zones/SVC.test./services");
    assert_eq!(status, 200);
    let mut names: Vec<&str> = list
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["@", "geo", "named"], "{list}");
    assert_eq!(
        get("/api/v1/zones/svc.test/services/GEO").1["datacenters"],
        json!(["lon", "iad", "sin"])
    );

    assert_eq!(
        api("DELETE", "/api/v1/zones/svc.test/services/geo", None).0,
        204
    );
    eventually("deleted service is NXDOMAIN", || {
        (node().dig(&["geo.svc.test", "A"]).status == "NXDOMAIN").then_some(())
    });
    assert_eq!(
        api("DELETE", "/api/v1/zones/svc.test/services/named", None).0,
        204
    );
    let d = eventually("deleted service with other records is NODATA", || {
        let d = node().dig(&["named.svc.test", "A"]);
        (d.status == "NOERROR" && d.answer.is_empty()).then_some(d)
    });
    assert_eq!(
        d.authority.first().map(|r| r.rtype.as_str()),
        Some("SOA"),
        "{}",
        d.raw
    );
    assert_eq!(
        node().dig(&["named.svc.test", "TXT"]).answer_data("TXT"),
        ["\"here\""]
    );
    expect_error(
        "DELETE unknown service",
        call(
            "DELETE",
            "/api/v1/zones/svc.test/services/geo",
            None,
            Some(TOKEN),
        ),
        404,
    );
}

// ---- auth and errors ----------------------------------------------------------------

#[test]
fn every_mutating_route_needs_the_bearer_token_and_reads_do_not() {
    let dc = dc_body(LON, "192.0.2.99").to_string();
    let svc = json!({"policy": "geo_nearest", "datacenters": ["lon"]}).to_string();
    let zone = zone_text("");
    let member = json!({"id": 9, "addr": "127.0.0.1:9", "voter": false}).to_string();
    let writes: [(&str, &str, &str, &str); 9] = [
        ("PUT", "/api/v1/datacenters/auth-x", "application/json", &dc),
        (
            "PATCH",
            "/api/v1/datacenters/auth-x",
            "application/json",
            r#"{"weight": 5}"#,
        ),
        (
            "DELETE",
            "/api/v1/datacenters/auth-x",
            "application/json",
            "",
        ),
        ("PUT", "/api/v1/zones/auth.test", "text/dns", &zone),
        ("DELETE", "/api/v1/zones/auth.test", "application/json", ""),
        (
            "PUT",
            "/api/v1/zones/example.com/services/auth",
            "application/json",
            &svc,
        ),
        (
            "DELETE",
            "/api/v1/zones/example.com/services/auth",
            "application/json",
            "",
        ),
        (
            "POST",
            "/api/v1/cluster/members",
            "application/json",
            &member,
        ),
        (
            "DELETE",
            "/api/v1/cluster/members/9",
            "application/json",
            "",
        ),
    ];
    for (method, path, ctype, body) in writes {
        for token in [None, Some("wrong-token"), Some("")] {
            let got = call(method, path, Some((ctype, body)), token);
            expect_error(&format!("{method} {path} with token {token:?}"), got, 401);
        }
    }
    assert_eq!(
        get("/api/v1/datacenters/auth-x").0,
        404,
        "nothing was created"
    );
    assert_eq!(get("/api/v1/zones/auth.test").0, 404, "nothing was created");
    assert_eq!(
        get("/api/v1/cluster").1["members"].as_array().map(Vec::len),
        Some(1)
    );

    for path in [
        "/healthz",
        "/metrics",
        "/api/v1/openapi.json",
        "/api/v1/cluster",
        "/api/v1/datacenters",
        "/api/v1/datacenters/lon",
        "/api/v1/datacenters/lon/events",
        "/api/v1/zones",
        "/api/v1/zones/example.com",
        "/api/v1/zones/example.com/services",
        "/api/v1/zones/example.com/services/www",
        "/api/v1/explain?name=www.example.com&type=A&client=192.0.2.1",
    ] {
        assert_eq!(
            call("GET", path, None, None).0,
            200,
            "GET {path} without a token"
        );
    }
}

#[test]
fn errors_are_json_bad_json_400_wrong_type_422_unknown_route_404() {
    let path = "/api/v1/datacenters/err-x";
    for bad in [r#"{"location": {"lat": 1,"#, "not json", ""] {
        let got = send_raw("PUT", path, "application/json", bad);
        expect_error(&format!("PUT {bad:?}"), got, 400);
    }
    for wrong in [
        r#"{"location": {"lat": "north", "lon": 0}, "addresses": ["192.0.2.1"]}"#,
        r#"{"location": {"lat": 1, "lon": 0}, "addresses": "192.0.2.1"}"#,
        r#"{"location": {"lat": 1, "lon": 0}, "addresses": ["not-an-ip"]}"#,
        r#"{"location": {"lat": 1, "lon": 0}}"#,
        r#"{"location": {"lat": 1, "lon": 0}, "addresses": ["192.0.2.1"], "weight": -1}"#,
    ] {
        let got = send_raw("PUT", path, "application/json", wrong);
        expect_error(&format!("PUT {wrong}"), got, 422);
    }
    let unknown =
        r#"{"location": {"lat": 1, "lon": 0}, "addresses": ["192.0.2.1"], "colour": "red"}"#;
    let got = send_raw("PUT", path, "application/json", unknown);
    expect_error("unknown field", got, 400);
    // JSON must say so.
    let got = send_raw(
        "PUT",
        path,
        "text/plain",
        r#"{"location": {"lat": 1, "lon": 0}, "addresses": ["192.0.2.1"]}"#,
    );
    expect_error("text/plain JSON", got, 415);
    assert_eq!(get(path).0, 404, "nothing half-applied");
    for (method, p) in [
        ("GET", "/api/v1/nope"),
        ("GET", "/nope"),
        ("DELETE", "/api/v1/nope/x"),
    ] {
        let got = call(method, p, None, Some(TOKEN));
        let msg = expect_error(&format!("{method} {p}"), got, 404);
        assert!(msg.contains(p), "{msg}");
    }
}

/// PUT a body of `len` bytes while reading the answer, so an early answer is not lost.
fn put_large(path: &str, len: usize) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&node().admin, Duration::from_secs(2)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    let mut w = s.try_clone().expect("clone");
    w.set_write_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: text/dns\r\nContent-Length: {len}\r\n\r\n",
        addr = node().admin
    );
    let writer = std::thread::spawn(move || {
        let chunk = vec![b';'; 64 * 1024];
        if w.write_all(head.as_bytes()).is_err() {
            return;
        }
        let mut left = len;
        while left > 0 {
            let n = left.min(chunk.len());
            if w.write_all(&chunk[..n]).is_err() {
                return;
            }
            left -= n;
        }
    });
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    // Until EOF or an error (a reset after the answer).
    while let Ok(n) = s.read(&mut chunk) {
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let _ = s.shutdown(std::net::Shutdown::Both);
    let _ = writer.join();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok());
    let status = status.unwrap_or_else(|| panic!("no HTTP answer: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

#[test]
fn body_over_the_limit_is_413_json() {
    let msg = expect_error(
        "a zone over the 64 MiB default",
        put_large("/api/v1/zones/big.test", (64 << 20) + 4096),
        413,
    );
    assert!(msg.contains("limit"), "{msg}");
    assert_eq!(get("/api/v1/zones/big.test").0, 404);
}

// ---- meridian apply -----------------------------------------------------------------

const APPLY_DCS: &str = r#"
[[datacenter]]
id = "ap-lon"
location = { lat = 51.5074, lon = -0.1278 }
addresses = ["192.0.2.31"]

[[datacenter]]
id = "ap-iad"
location = { lat = 38.9519, lon = -77.4480 }
addresses = ["192.0.2.32"]
"#;

const APPLY_SERVICES: &str = r#"
[[service]]
zone = "apply.test"
name = "www"
policy = "geo_nearest"
datacenters = ["ap-lon", "ap-iad"]
"#;

#[test]
fn meridian_apply_creates_is_idempotent_dry_runs_keeps_drains_and_refuses_broken_files() {
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    let write = |name: &str, text: &str| std::fs::write(d.join(name), text).expect("write");
    write("apply.test.zone", &zone_text("txt IN TXT \"applied\"\n"));
    write("datacenters.toml", APPLY_DCS);
    write("services.toml", APPLY_SERVICES);

    let o = meridian_apply(&[], &[d]);
    assert!(o.status.success(), "{}", out(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("4 created, 0 replaced, 0 unchanged"),
        "{}",
        out(&o)
    );
    assert_eq!(
        get("/api/v1/datacenters/ap-lon").1["addresses"],
        json!(["192.0.2.31"])
    );
    assert_eq!(
        get("/api/v1/zones/apply.test/services/www").1["policy"],
        "geo_nearest"
    );
    wait_answer("www.apply.test", LONDON, &["192.0.2.31"]);

    let o = meridian_apply(&[], &[d]);
    assert!(o.status.success(), "{}", out(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("0 created, 0 replaced, 4 unchanged"),
        "{}",
        out(&o)
    );

    // Drain through the API, then edit both definitions (no state in the file).
    assert_eq!(
        api(
            "PATCH",
            "/api/v1/datacenters/ap-lon",
            Some(&json!({"state": "drained"}))
        )
        .0,
        200
    );
    let edited = APPLY_DCS
        .replace(
            "addresses = [\"192.0.2.31\"]",
            "addresses = [\"192.0.2.31\"]\nweight = 150",
        )
        .replace(
            "addresses = [\"192.0.2.32\"]",
            "addresses = [\"192.0.2.32\"]\nweight = 250",
        );
    write("datacenters.toml", &edited);
    let o = meridian_apply(&["--dry-run"], &[d]);
    assert!(o.status.success(), "{}", out(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("ap-iad") && l.contains("weight 100 -> 250")),
        "{}",
        out(&o)
    );
    assert!(stdout.contains("nothing was changed"), "{}", out(&o));
    assert_eq!(
        get("/api/v1/datacenters/ap-iad").1["weight"],
        100,
        "a dry run changes nothing"
    );
    assert_eq!(
        get("/api/v1/datacenters/ap-lon").1["weight"],
        100,
        "a dry run changes nothing"
    );

    let o = meridian_apply(&[], &[d]);
    assert!(o.status.success(), "{}", out(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("0 created, 2 replaced, 2 unchanged"),
        "{}",
        out(&o)
    );
    assert_eq!(get("/api/v1/datacenters/ap-iad").1["weight"], 250);
    let lon = get("/api/v1/datacenters/ap-lon").1;
    assert_eq!(
        (&lon["weight"], &lon["state"]),
        (&json!(150), &json!("drained")),
        "{lon}"
    );
    wait_answer("www.apply.test", LONDON, &["192.0.2.32"]);

    // A broken zone file: exit 1 with file:line, and nothing sent (not even the datacenters,
    // which come first).
    write(
        "datacenters.toml",
        &edited.replace("weight = 250", "weight = 300"),
    );
    write(
        "apply.test.zone",
        &zone_text("txt IN TXT \"applied\"\nbad IN A 999.1.2.3\n"),
    );
    let o = meridian_apply(&[], &[d]);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("apply.test.zone:6"),
        "{}",
        out(&o)
    );
    assert_eq!(
        get("/api/v1/datacenters/ap-iad").1["weight"],
        250,
        "nothing sent"
    );
    let (_, zone) = call("GET", "/api/v1/zones/apply.test", None, None);
    assert!(!zone.contains("999.1.2.3"), "{zone}");
}
