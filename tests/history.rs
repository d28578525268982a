//! History, rollback, versions and named tokens (DESIGN.md "Interface contract v2": "Named
//! tokens, roles and the actor of a change", "Optimistic concurrency", "History, rollback,
//! export"), against real nodes over real HTTP and DNS.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::two_sites::{DCS, SERVICES, ZONE};
use common::{call, get_json, http, http_with, json, Node, Setup, TestCluster, TOKEN};
use serde_json::Value;

const JSON: &str = "application/json";

/// A write with the test token; (status, body).
fn write(admin: SocketAddr, method: &str, path: &str, body: Option<(&str, &str)>) -> (u16, String) {
    call(admin, method, path, body, Some(TOKEN))
}

fn patch(admin: SocketAddr, dc: &str, body: &str) -> Value {
    let (status, text) = common::patch_datacenter(admin, dc, body);
    assert_eq!(status, 200, "{text}");
    json(&text)
}

/// The newest history entry's index.
fn newest(admin: SocketAddr) -> u64 {
    get_json(admin, "/api/v1/history?limit=1")[0]["index"]
        .as_u64()
        .expect("an entry")
}

/// Poll until `f` holds or 2 s pass (the contract: a committed write reaches every live
/// member's DNS within 2 s).
fn within_2s(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(2);
    while !f() {
        assert!(Instant::now() < deadline, "not within 2 s: {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[test]
fn rollback_on_three_nodes_restores_drains_weights_deleted_services_and_zone_records() {
    let cluster = TestCluster::start(
        3,
        &[
            ("example.com.zone", ZONE),
            ("datacenters.toml", DCS),
            ("services.toml", SERVICES),
        ],
    );
    let admin = cluster.nodes[0].at.admin;
    // The first leader draws the cookie secret (an entry of its own): let it land first.
    let deadline = Instant::now() + Duration::from_secs(15);
    while !get_json(admin, "/api/v1/history?limit=10")
        .as_array()
        .is_some_and(|a| a.iter().any(|e| e["kind"] == "rotate_cookie_secret"))
    {
        assert!(Instant::now() < deadline, "no cookie secret drawn");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The point to come back to: lon weighs 5.
    let v = patch(admin, "lon", r#"{"weight": 5}"#);
    let point = v["version"].as_u64().expect("version");
    assert_eq!(newest(admin), point, "the PATCH is the newest entry");
    // Then: iad drained, lon reweighted, a record added, the service deleted.
    patch(admin, "iad", r#"{"state": "drained"}"#);
    patch(admin, "lon", r#"{"weight": 9}"#);
    let zone = format!("{ZONE}extra IN A 192.0.2.9\n");
    let (s, b) = write(
        admin,
        "PUT",
        "/api/v1/zones/example.com",
        Some(("text/dns", &zone)),
    );
    assert_eq!(s, 200, "{b}");
    let zone_put = newest(admin);
    let (s, b) = write(
        admin,
        "DELETE",
        "/api/v1/zones/example.com/services/www",
        None,
    );
    assert_eq!(s, 204, "{b}");
    let before_rollback = newest(admin);
    for n in &cluster.nodes {
        within_2s("the changes on every node", || {
            n.at.dig(&["extra.example.com", "A"]).answer_data("A") == ["192.0.2.9"]
                && n.at.dig(&["www.example.com", "A"]).status == "NXDOMAIN"
        });
    }

    // History: newest first, with actor, kind and target; pages with `before`.
    let page = get_json(admin, "/api/v1/history?limit=2");
    assert_eq!(page.as_array().map(Vec::len), Some(2));
    assert_eq!(page[0]["kind"], "delete_service");
    assert_eq!(page[0]["target"], "service/example.com./www");
    assert_eq!(page[0]["actor"], "admin");
    assert_eq!(page[1]["kind"], "put_zone");
    let next = get_json(
        admin,
        &format!("/api/v1/history?limit=2&before={}", page[1]["index"]),
    );
    assert_eq!(next[0]["kind"], "patch_datacenter");
    assert_eq!(next[0]["target"], "datacenter/lon");
    assert!(next[0]["index"].as_u64() < page[1]["index"].as_u64());
    assert!(next[0]["time"].as_str().is_some_and(|t| t.ends_with('Z')));

    // One entry, before and after: a PATCH and a zone PUT.
    let e = get_json(admin, &format!("/api/v1/history/{point}"));
    assert_eq!(e["kind"], "patch_datacenter");
    assert_eq!(e["after"]["weight"], 5, "{e}");
    assert_ne!(e["before"]["weight"], 5, "{e}");
    let e = get_json(admin, &format!("/api/v1/history/{zone_put}"));
    let (before, after) = (
        e["before"].as_str().expect("text"),
        e["after"].as_str().expect("text"),
    );
    assert!(
        !before.contains("192.0.2.9") && after.contains("192.0.2.9"),
        "{e}"
    );
    assert!(
        e["summary"].as_str().is_some_and(|s| s.contains("+1")),
        "{e}"
    );

    // A future index is not a history entry.
    let (s, b) = write(
        admin,
        "POST",
        "/api/v1/rollback",
        Some((JSON, r#"{"to": 999999}"#)),
    );
    assert_eq!(s, 404, "{b}");

    // The rollback, through another node: one change, on every node.
    let other = cluster.nodes[1].at.admin;
    let (s, b) = write(
        other,
        "POST",
        "/api/v1/rollback",
        Some((JSON, &format!(r#"{{"to": {point}}}"#))),
    );
    assert_eq!(s, 200, "{b}");
    let r = json(&b);
    let changed: Vec<&str> = r["changed"]
        .as_array()
        .expect("changed")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for t in [
        "datacenter/iad",
        "datacenter/lon",
        "zone/example.com.",
        "service/example.com./www",
    ] {
        assert!(changed.contains(&t), "{t} not in {changed:?}");
    }
    for n in &cluster.nodes {
        within_2s("the rollback on every node", || {
            let d = n.at.dig(&["www.example.com", "A"]);
            d.status == "NOERROR"
                && !d.answer_data("A").is_empty()
                && n.at.dig(&["extra.example.com", "A"]).status == "NXDOMAIN"
        });
        let dcs = get_json(n.at.admin, "/api/v1/datacenters");
        let dc = |id: &str| {
            dcs.as_array()
                .and_then(|a| a.iter().find(|d| d["id"] == id))
                .cloned()
                .unwrap_or_default()
        };
        assert_eq!(dc("iad")["state"], "active", "node {}", n.id);
        assert_eq!(dc("lon")["weight"], 5, "node {}", n.id);
    }
    let entry = &get_json(admin, "/api/v1/history?limit=1")[0];
    assert_eq!(entry["kind"], "rollback");
    assert_eq!(entry["target"], Value::Null);

    // The rollback is itself undone like any change.
    let (s, b) = write(
        admin,
        "POST",
        "/api/v1/rollback",
        Some((JSON, &format!(r#"{{"to": {before_rollback}}}"#))),
    );
    assert_eq!(s, 200, "{b}");
    for n in &cluster.nodes {
        within_2s("the undone rollback on every node", || {
            n.at.dig(&["extra.example.com", "A"]).answer_data("A") == ["192.0.2.9"]
                && n.at.dig(&["www.example.com", "A"]).status == "NXDOMAIN"
        });
    }
}

fn single(extra: &str) -> Node {
    Node::start(&Setup {
        files: &[
            ("example.com.zone", ZONE),
            ("datacenters.toml", DCS),
            ("services.toml", SERVICES),
        ],
        extra_config: extra,
    })
}

#[test]
fn if_match_lets_exactly_one_of_two_racing_writers_through() {
    let node = single("");
    let admin = node.admin;
    let (status, body) = http(admin, "GET", "/api/v1/datacenters/lon", None, None).expect("GET");
    assert_eq!(status, 200);
    let version = json(&body)["version"].as_u64().expect("version");
    // Ten rounds of two writers with the same If-Match: exactly one wins each.
    let mut version = version;
    for round in 0..10 {
        let tag = format!("\"{version}\"");
        let racers: Vec<_> = [3, 4]
            .into_iter()
            .map(|w| {
                let tag = tag.clone();
                std::thread::spawn(move || {
                    http_with(
                        admin,
                        "PATCH",
                        "/api/v1/datacenters/lon",
                        Some((JSON, &format!(r#"{{"weight": {w}}}"#))),
                        Some(TOKEN),
                        &[("If-Match", &tag)],
                    )
                    .expect("PATCH")
                })
            })
            .collect();
        let results: Vec<(u16, String)> = racers
            .into_iter()
            .map(|t| t.join().expect("racer"))
            .collect();
        let mut codes: Vec<u16> = results.iter().map(|r| r.0).collect();
        codes.sort();
        assert_eq!(codes, [200, 412], "round {round}: {results:?}");
        let lost = results.iter().find(|r| r.0 == 412).expect("loser");
        assert_eq!(json(&lost.1)["outcome"], "not_applied", "{}", lost.1);
        let won = results.iter().find(|r| r.0 == 200).expect("winner");
        version = json(&won.1)["version"].as_u64().expect("new version");
    }
    // A stale version is refused and changes nothing; the ETag is the version.
    let (s, b) = http_with(
        admin,
        "PATCH",
        "/api/v1/datacenters/lon",
        Some((JSON, r#"{"weight": 50}"#)),
        Some(TOKEN),
        &[("If-Match", "\"1\"")],
    )
    .expect("PATCH");
    assert_eq!(s, 412, "{b}");
    let dc = get_json(admin, "/api/v1/datacenters/lon");
    assert_ne!(dc["weight"], 50);
    assert_eq!(dc["version"].as_u64(), Some(version));
    // Zones carry their version in the ETag; a PUT against a stale one is refused.
    let (s, b) = http_with(
        admin,
        "PUT",
        "/api/v1/zones/example.com",
        Some(("text/dns", ZONE)),
        Some(TOKEN),
        &[("If-Match", "\"999999\"")],
    )
    .expect("PUT");
    assert_eq!(s, 412, "{b}");
    // A service's GET body (with its version) goes back as a PUT.
    let svc = get_json(admin, "/api/v1/zones/example.com/services/www");
    assert!(svc["version"].as_u64().is_some_and(|v| v > 0), "{svc}");
    let (s, b) = http_with(
        admin,
        "PUT",
        "/api/v1/zones/example.com/services/www",
        Some((JSON, &svc.to_string())),
        Some(TOKEN),
        &[("If-Match", &format!("\"{}\"", svc["version"]))],
    )
    .expect("PUT");
    assert_eq!(s, 200, "{b}");
    // `If-Match: *` means "exists": checked when applied, so racing writers all get
    // through (a change committed between a handler's read and the apply is no 412).
    for round in 0..5 {
        let racers: Vec<_> = [5, 6, 7]
            .into_iter()
            .map(|w| {
                std::thread::spawn(move || {
                    http_with(
                        admin,
                        "PATCH",
                        "/api/v1/datacenters/lon",
                        Some((JSON, &format!(r#"{{"weight": {w}}}"#))),
                        Some(TOKEN),
                        &[("If-Match", "*")],
                    )
                    .expect("PATCH")
                })
            })
            .collect();
        for r in racers {
            let (s, b) = r.join().expect("racer");
            assert_eq!(s, 200, "round {round}: {b}");
        }
    }
    let (s, b) = http_with(
        admin,
        "PATCH",
        "/api/v1/datacenters/nowhere",
        Some((JSON, r#"{"weight": 5}"#)),
        Some(TOKEN),
        &[("If-Match", "*")],
    )
    .expect("PATCH");
    assert_eq!(s, 412, "{b}");
}

/// DESIGN "History, rollback, export": `GET /history/{index}` shows the object a change
/// changed before and after, TSIG keys included (never their secret).
#[test]
fn a_tsig_key_change_shows_before_and_after_without_its_secret() {
    let node = single("");
    let admin = node.admin;
    let secret = "c2VjcmV0LXNlY3JldC1zZWNyZXQ=";
    let body = format!(r#"{{"algorithm": "hmac-sha256", "secret": "{secret}"}}"#);
    let (s, b) = write(admin, "PUT", "/api/v1/tsig-keys/xfr", Some((JSON, &body)));
    assert_eq!(s, 201, "{b}");
    let e = get_json(admin, &format!("/api/v1/history/{}", newest(admin)));
    assert_eq!(e["kind"], "put_tsig_key");
    assert_eq!(e["target"], "tsig/xfr");
    assert_eq!(e["actor"], "admin");
    assert_eq!(e["before"], Value::Null);
    assert_eq!(
        e["after"],
        serde_json::json!({"name": "xfr", "algorithm": "hmac-sha256"})
    );
    let (s, b) = write(admin, "DELETE", "/api/v1/tsig-keys/xfr", None);
    assert_eq!(s, 204, "{b}");
    let e = get_json(admin, &format!("/api/v1/history/{}", newest(admin)));
    assert_eq!(
        (&e["kind"], &e["after"]),
        (&"delete_tsig_key".into(), &Value::Null)
    );
    assert_eq!(e["before"]["name"], "xfr");
    assert!(!e.to_string().contains(secret), "{e}");
}

#[test]
fn named_tokens_read_is_403_on_writes_reads_need_a_token_and_no_token_is_logged() {
    let node = Node::spawn(
        &Setup {
            files: &[
                ("example.com.zone", ZONE),
                ("datacenters.toml", DCS),
                ("services.toml", SERVICES),
            ],
            extra_config: "[admin]\nreads_need_token = true\ntokens = [{ name = \"ops\", token = \"ops-s3cret-token\", role = \"write\" }, { name = \"grafana\", token = \"grafana-s3cret-token\", role = \"read\" }]\n",
        },
        &[("MERIDIAN_LOG", "debug")],
    );
    let mut node = node;
    node.wait_healthy(Duration::from_secs(30));
    let admin = node.admin;
    // Reads need a token, any role; /healthz and /metrics stay open.
    let (s, _) = http(admin, "GET", "/api/v1/datacenters", None, None).expect("GET");
    assert_eq!(s, 401);
    let (s, _) = http(admin, "GET", "/api/v1/openapi.json", None, Some("wrong")).expect("GET");
    assert_eq!(s, 401);
    let (s, _) = http(
        admin,
        "GET",
        "/api/v1/datacenters",
        None,
        Some("grafana-s3cret-token"),
    )
    .expect("GET");
    assert_eq!(s, 200);
    assert_eq!(
        http(admin, "GET", "/healthz", None, None).map(|r| r.0),
        Some(200)
    );
    assert_eq!(
        http(admin, "GET", "/metrics", None, None).map(|r| r.0),
        Some(200)
    );
    // A read token on a write: 403, nothing applied.
    let (s, b) = http(
        admin,
        "PATCH",
        "/api/v1/datacenters/lon",
        Some((JSON, r#"{"weight": 8}"#)),
        Some("grafana-s3cret-token"),
    )
    .expect("PATCH");
    assert_eq!(s, 403, "{b}");
    assert_eq!(json(&b)["outcome"], "not_applied");
    // The write token writes, and the change is its name's.
    let (s, b) = http(
        admin,
        "PATCH",
        "/api/v1/datacenters/lon",
        Some((JSON, r#"{"weight": 8}"#)),
        Some("ops-s3cret-token"),
    )
    .expect("PATCH");
    assert_eq!(s, 200, "{b}");
    let (_, h) = http(
        admin,
        "GET",
        "/api/v1/history?limit=1",
        None,
        Some("ops-s3cret-token"),
    )
    .expect("history");
    let h = json(&h);
    assert_eq!(h[0]["actor"], "ops", "{h}");
    // The v1 token is the write token named admin.
    let (s, _) = http(
        admin,
        "PATCH",
        "/api/v1/datacenters/lon",
        Some((JSON, r#"{"weight": 9}"#)),
        Some(TOKEN),
    )
    .expect("PATCH");
    assert_eq!(s, 200);
    let log = node.log();
    assert!(log.contains("write committed"), "writes are logged:\n{log}");
    assert!(log.contains("actor=ops"), "with their actor:\n{log}");
    for secret in ["ops-s3cret-token", "grafana-s3cret-token", TOKEN] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
    }
}

#[test]
fn two_tokens_with_the_same_name_or_value_are_a_config_error() {
    for tokens in [
        "[{ name = \"a\", token = \"one-token\", role = \"read\" }, { name = \"a\", token = \"two-token\", role = \"read\" }]",
        "[{ name = \"a\", token = \"one-token\", role = \"read\" }, { name = \"b\", token = \"one-token\", role = \"write\" }]",
        "[{ name = \"admin\", token = \"x-token\", role = \"read\" }]",
    ] {
        let dir = tempfile::tempdir().expect("dir");
        let config = dir.path().join("node.toml");
        std::fs::write(
            &config,
            format!("node_id = 1\ndata_dir = \"data\"\n[dns]\nlisten = [\"127.0.0.1:5301\"]\n[admin]\nlisten = \"127.0.0.1:5302\"\ntoken = \"test-token\"\ntokens = {tokens}\n[raft]\nlisten = \"127.0.0.1:5303\"\npeers = {{ \"1\" = \"127.0.0.1:5303\" }}\n"),
        )
        .expect("config");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_meridian"))
            .args(["check", "--config"])
            .arg(&config)
            .output()
            .expect("run meridian check");
        let said = String::from_utf8_lossy(&out.stderr).to_string()
            + &String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success(), "{tokens} accepted: {said}");
        assert!(said.contains("[admin] tokens"), "{said}");
    }
}
