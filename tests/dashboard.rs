//! What an operator sees: `answers_share` moving with the answers sent (dig), and the
//! dashboard at `GET /` in headless Chromium — its DOM, a screenshot, a page kept open
//! that follows a drain made through the API, and a drain clicked on the page.
//! One node is shared; each test works on datacenters of its own.

mod common;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{http, Node, NodeRef};
use serde_json::Value;

const ZONE: &str = "$ORIGIN example.com.\n$TTL 300\n@ IN SOA ns1 hostmaster 1 7200 3600 1209600 300\n@ IN NS ns1\nns1 IN A 127.0.0.1\n";

/// `lon`, `iad` and `sin` serve `www` (only the share test queries it); `fra`, `syd`, `gru`
/// and `nrt` are the dashboard tests' to drain and reweight.
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

[[datacenter]]
id = "fra"
location = { lat = 50.1109, lon = 8.6821 }
addresses = ["198.51.100.4"]

[[datacenter]]
id = "syd"
location = { lat = -33.8688, lon = 151.2093 }
addresses = ["198.51.100.5"]

[[datacenter]]
id = "gru"
location = { lat = -23.4356, lon = -46.4731 }
addresses = ["198.51.100.6"]

[[datacenter]]
id = "nrt"
location = { lat = 35.7720, lon = 140.3929 }
addresses = ["198.51.100.7"]
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
const SINGAPORE: &str = "+subnet=214.0.0.0/24";

fn node() -> &'static NodeRef {
    static NODE: OnceLock<NodeRef> = OnceLock::new();
    common::shared(&NODE, || Node::start_example(ZONE, DCS, SERVICES))
}

/// `GET path` on the shared node, parsed as JSON.
fn get_json(path: &str) -> Value {
    let (status, body) =
        http(node().admin, "GET", path, None, None).unwrap_or_else(|| panic!("GET {path}"));
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

/// Each datacenter's `answers_share` in `GET /api/v1/datacenters`, by id.
fn shares() -> Vec<(String, f64)> {
    let list = get_json("/api/v1/datacenters");
    list.as_array()
        .map(|a| {
            a.iter()
                .map(|d| {
                    let id = d["id"].as_str().unwrap_or("").to_string();
                    let share = d["answers_share"]
                        .as_f64()
                        .unwrap_or_else(|| panic!("no answers_share in {d}"));
                    (id, share)
                })
                .collect()
        })
        .unwrap_or_default()
}

fn share_of(shares: &[(String, f64)], id: &str) -> f64 {
    shares
        .iter()
        .find(|(i, _)| i == id)
        .map(|(_, s)| *s)
        .unwrap_or_else(|| panic!("no datacenter {id} in {shares:?}"))
}

/// Send `n` queries for `www` from `client` and check each is answered with `address`.
fn ask(n: usize, client: &str, address: &str) {
    for _ in 0..n {
        let d = node().dig(&["www.example.com", "A", client]);
        assert_eq!(d.answer_data("A"), vec![address.to_string()], "{}", d.raw);
    }
}

/// Poll `check` on the shares until it holds, at most `limit`.
fn wait_shares(limit: Duration, check: impl Fn(&[(String, f64)]) -> bool) -> Vec<(String, f64)> {
    let deadline = Instant::now() + limit;
    loop {
        let s = shares();
        if check(&s) || Instant::now() > deadline {
            return s;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn answers_share_follows_the_answers_sent() {
    let close = |a: f64, b: f64| (a - b).abs() < 1e-6;
    // Nothing answered yet: every share is 0, and each datacenter has one.
    let s = shares();
    assert_eq!(s.len(), 7, "{s:?}");
    assert!(s.iter().all(|(_, v)| *v == 0.0), "{s:?}");
    let one = get_json("/api/v1/datacenters/lon");
    assert_eq!(one["answers_share"].as_f64(), Some(0.0), "{one}");

    ask(10, LONDON, "198.51.100.1");
    let s = wait_shares(Duration::from_secs(5), |s| close(share_of(s, "lon"), 1.0));
    assert!(close(share_of(&s, "lon"), 1.0), "{s:?}");
    assert!(close(share_of(&s, "sin"), 0.0), "{s:?}");

    ask(30, SINGAPORE, "198.51.100.3");
    let s = wait_shares(Duration::from_secs(5), |s| close(share_of(s, "sin"), 0.75));
    assert!(close(share_of(&s, "sin"), 0.75), "{s:?}");
    assert!(close(share_of(&s, "lon"), 0.25), "{s:?}");
    assert!(close(share_of(&s, "iad"), 0.0), "{s:?}");
    let total: f64 = s.iter().map(|(_, v)| v).sum();
    assert!(close(total, 1.0), "{s:?}");
    let one = get_json("/api/v1/datacenters/sin");
    assert!(
        one["answers_share"]
            .as_f64()
            .is_some_and(|v| close(v, 0.75)),
        "{one}"
    );
}
