//! TSIG keys and zone settings through the API, and zone transfers out (RFC 5936 AXFR,
//! RFC 1995 IXFR) signed with TSIG (RFC 8945), checked with the real `kdig`.

mod common;

use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{http, http_with, udp_exchange, Node, NodeRef, Setup};

const TOKEN: &str = "test-token";
const SHA256: &str = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTEyMzQ=";

const ZONE: &str = "$ORIGIN example.com.\n$TTL 300\n@ 3600 IN SOA ns1 hostmaster 100 7200 3600 1209600 300\n@ IN NS ns1\nns1 IN A 127.0.0.1\nstatic IN A 192.0.2.10\nsub IN NS ns.elsewhere.\nsub IN DS 60485 5 1 2BB183AF5F22588179A53B0A98631FAD1A292118\n";
/// A zone of its own for the settings test (the other tests rely on example.com's).
const OTHER: &str = "$ORIGIN other.test.\n$TTL 300\n@ IN SOA ns1 hostmaster 1 7200 3600 1209600 300\n@ IN NS ns1\nns1 IN A 127.0.0.1\n";
const DCS: &str = "[[datacenter]]\nid = \"lon\"\nlocation = { lat = 51.5, lon = -0.1 }\naddresses = [\"198.51.100.1\", \"2001:db8:1::1\"]\n\n[[datacenter]]\nid = \"iad\"\nlocation = { lat = 38.9, lon = -77.4 }\naddresses = [\"198.51.100.2\"]\n";
const SERVICES: &str = "[[service]]\nzone = \"example.com\"\nname = \"www\"\npolicy = \"geo_nearest\"\ndatacenters = [\"lon\", \"iad\"]\nttl = 60\n";

/// One key per algorithm (name = algorithm), all allowed to transfer.
fn tsig_toml() -> String {
    let mut out = String::new();
    for alg in ALGS {
        out.push_str(&format!(
            "[[key]]\nname = \"{alg}\"\nalgorithm = \"{alg}\"\nsecret = \"{SHA256}\"\n\n"
        ));
    }
    out
}

const ALGS: [&str; 6] = [
    "hmac-sha256",
    "hmac-sha384",
    "hmac-sha512",
    "hmac-sha224",
    "hmac-sha1",
    "hmac-md5",
];

fn settings_toml() -> String {
    let keys: Vec<String> = ALGS.iter().map(|a| format!("\"key:{a}\"")).collect();
    format!(
        "[[zone]]\norigin = \"example.com\"\nallow_transfer = [{}]\n",
        keys.join(", ")
    )
}

fn node() -> &'static NodeRef {
    static NODE: OnceLock<NodeRef> = OnceLock::new();
    common::shared(&NODE, || {
        let tsig = tsig_toml();
        let settings = settings_toml();
        let tsig: &'static str = Box::leak(tsig.into_boxed_str());
        let settings: &'static str = Box::leak(settings.into_boxed_str());
        Node::start(&Setup {
            files: &[
                ("example.com.zone", ZONE),
                ("other.test.zone", OTHER),
                ("datacenters.toml", DCS),
                ("services.toml", SERVICES),
                ("tsig.toml", tsig),
                ("zone-settings.toml", settings),
            ],
            extra_config: "",
        })
    })
}

/// `kdig @node ARGS…`: (stdout, stderr).
fn kdig(n: &NodeRef, args: &[&str]) -> (String, String) {
    let out = Command::new("kdig")
        .arg(format!("@{}", n.dns.ip()))
        .arg("-p")
        .arg(n.dns.port().to_string())
        .args(["+time=3", "+retry=0"])
        .args(args)
        .output()
        .expect("kdig runs (scripts/test.sh installs knot-dnsutils)");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn key(alg: &str) -> String {
    format!("{alg}:{alg}:{SHA256}")
}

/// The zone's SOA serial as `dig` sees it.
fn serial(n: &NodeRef) -> u32 {
    let d = n.dig(&["example.com", "SOA"]);
    let soa = d.answer_data("SOA");
    soa.first()
        .and_then(|s| s.split_whitespace().nth(2))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no SOA serial in {soa:?}"))
}

/// Records (owner, type, data) of a transfer's output.
fn records(out: &str) -> Vec<(String, String, String)> {
    out.lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 5).then(|| (f[0].to_string(), f[3].to_string(), f[4..].join(" ")))
        })
        .collect()
}

#[test]
fn rfc5936_axfr_signed_with_each_of_the_six_algorithms() {
    let n = node();
    for alg in ALGS {
        let (out, err) = kdig(n, &["-y", &key(alg), "AXFR", "example.com"]);
        assert!(
            !err.contains("ERROR") && !err.contains("WARNING"),
            "{alg}: {err}\n{out}"
        );
        let recs = records(&out);
        let soas = recs.iter().filter(|r| r.1 == "SOA").count();
        assert_eq!(soas, 2, "{alg}: SOA first and last: {out}");
        assert!(
            recs.iter()
                .any(|r| r.0 == "static.example.com." && r.2 == "192.0.2.10"),
            "{alg}: {out}"
        );
        // The service's unlocated answer: its first eligible datacenter.
        assert!(
            recs.iter().any(|r| r.0 == "www.example.com." && r.1 == "A"),
            "{alg}: {out}"
        );
        assert!(
            out.contains("TSIG"),
            "{alg}: every message is signed: {out}"
        );
    }
}

#[test]
fn rfc8945_unsigned_bad_mac_and_unknown_key_are_refused_or_notauth() {
    let n = node();
    let (out, err) = kdig(n, &["AXFR", "example.com"]);
    assert!(err.contains("REFUSED"), "unsigned: {err}\n{out}");
    let bad = format!("hmac-sha256:hmac-sha256:{}", "AAAA".to_string() + SHA256);
    let (_, err) = kdig(n, &["-y", &bad, "AXFR", "example.com"]);
    assert!(err.contains("BADSIG"), "bad MAC: {err}");
    let (_, err) = kdig(
        n,
        &[
            "-y",
            &format!("hmac-sha256:nokey:{SHA256}"),
            "AXFR",
            "example.com",
        ],
    );
    assert!(err.contains("BADKEY"), "unknown key: {err}");
}

#[test]
fn rfc5936_axfr_over_udp_is_refused() {
    let n = node();
    // A plain AXFR query for example.com over UDP.
    let mut q = vec![0x12, 0x34, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    q.extend_from_slice(b"\x07example\x03com\x00\x00\xfc\x00\x01");
    let reply = udp_exchange(n.dns, &q, Duration::from_secs(2)).expect("a reply");
    assert_eq!(reply[3] & 0x0f, 5, "REFUSED");
}

#[test]
fn rfc1995_ixfr_after_a_drain_sends_the_difference() {
    let n = node();
    let before = serial(n);
    let (status, body) = http(
        n.admin,
        "PATCH",
        "/api/v1/datacenters/lon",
        Some(("application/json", r#"{"state":"drained"}"#)),
        Some(TOKEN),
    )
    .expect("patch");
    assert_eq!(status, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while serial(n) == before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let after = serial(n);
    assert_eq!(after, before + 1, "a drain moves the serial once");
    let ixfr = format!("IXFR={before}");
    let (out, err) = kdig(n, &["-y", &key("hmac-sha256"), &ixfr, "example.com"]);
    assert!(!err.contains("ERROR"), "{err}");
    let recs = records(&out);
    let soas: Vec<&String> = recs.iter().filter(|r| r.1 == "SOA").map(|r| &r.2).collect();
    assert_eq!(soas.len(), 4, "new, old, new, new: {out}");
    assert!(soas[1].contains(&format!(" {before} ")), "{out}");
    // lon's address left www, iad's came.
    assert!(recs
        .iter()
        .any(|r| r.0 == "www.example.com." && r.2 == "198.51.100.1"));
    assert!(recs
        .iter()
        .any(|r| r.0 == "www.example.com." && r.2 == "198.51.100.2"));
    // A current client gets the SOA alone; over UDP too.
    let cur = format!("IXFR={after}");
    let (out, _) = kdig(n, &["-y", &key("hmac-sha256"), &cur, "example.com"]);
    assert_eq!(
        records(&out).iter().filter(|r| r.1 == "SOA").count(),
        1,
        "{out}"
    );
    let (out, err) = kdig(
        n,
        &["-y", &key("hmac-sha256"), "+notcp", &ixfr, "example.com"],
    );
    assert!(!err.contains("ERROR"), "{err}");
    assert_eq!(
        records(&out).iter().filter(|r| r.1 == "SOA").count(),
        1,
        "UDP: SOA alone: {out}"
    );
    let (_, err) = kdig(n, &["+notcp", &ixfr, "example.com"]);
    assert!(err.contains("REFUSED"), "UDP, unsigned: {err}");
    // Restore.
    let (status, _) = http(
        n.admin,
        "PATCH",
        "/api/v1/datacenters/lon",
        Some(("application/json", r#"{"state":"active"}"#)),
        Some(TOKEN),
    )
    .expect("patch");
    assert_eq!(status, 200);
}

#[test]
fn tsig_keys_api_never_shows_a_secret_and_refuses_deleting_a_key_in_use() {
    let n = node();
    let (status, body) = http(n.admin, "GET", "/api/v1/tsig-keys", None, None).expect("get");
    assert_eq!(status, 200);
    assert!(
        body.contains("\"hmac-md5\"") && !body.contains(SHA256),
        "{body}"
    );
    assert!(!body.contains("secret"), "{body}");
    let put = |name: &str, body: &str| {
        http(
            n.admin,
            "PUT",
            &format!("/api/v1/tsig-keys/{name}"),
            Some(("application/json", body)),
            Some(TOKEN),
        )
        .expect("put")
    };
    let spec = format!(r#"{{"algorithm":"hmac-sha512","secret":"{SHA256}"}}"#);
    let (s, b) = put("acme", &spec);
    assert_eq!(s, 201, "{b}");
    assert!(!b.contains(SHA256) && b.contains("\"version\""), "{b}");
    assert_eq!(put("acme", &spec).0, 200);
    assert_eq!(
        put("bad", r#"{"algorithm":"hmac-sha3","secret":"AAAA"}"#).0,
        422
    );
    assert_eq!(
        put("bad", r#"{"algorithm":"hmac-sha256","secret":""}"#).0,
        422
    );
    assert_eq!(
        put(
            "bad",
            r#"{"algorithm":"hmac-sha256","secret":"AAAA","x":1}"#
        )
        .0,
        400
    );
    // In use by example.com's settings: 409; unused: 204.
    let del = |name: &str| {
        http(
            n.admin,
            "DELETE",
            &format!("/api/v1/tsig-keys/{name}"),
            None,
            Some(TOKEN),
        )
        .expect("delete")
        .0
    };
    assert_eq!(del("hmac-md5"), 409);
    assert_eq!(del("acme"), 204);
    assert_eq!(del("acme"), 404);
}

#[test]
fn zone_settings_api_validates_keys_zones_and_fields() {
    let n = node();
    let (status, body) = http(
        n.admin,
        "GET",
        "/api/v1/zones/EXAMPLE.com/settings",
        None,
        None,
    )
    .expect("get");
    assert_eq!(status, 200);
    assert!(
        body.contains("key:hmac-md5") && body.contains("\"serial\":\"increment\""),
        "{body}"
    );
    let put = |path: &str, body: &str, h: &[(&str, &str)]| {
        http_with(
            n.admin,
            "PUT",
            path,
            Some(("application/json", body)),
            Some(TOKEN),
            h,
        )
        .expect("put")
    };
    let p = "/api/v1/zones/other.test/settings";
    assert_eq!(put(p, r#"{"allow_transfer":["key:nokey"]}"#, &[]).0, 422);
    assert_eq!(put(p, r#"{"notify_key":"nokey"}"#, &[]).0, 422);
    assert_eq!(put(p, r#"{"allow_transfer":["not a net"]}"#, &[]).0, 422);
    assert_eq!(put(p, r#"{"bogus":1}"#, &[]).0, 400);
    assert_eq!(put("/api/v1/zones/nozone.test/settings", "{}", &[]).0, 404);
    let body = r#"{"allow_transfer":["key:hmac-sha1","127.0.0.0/8"],"serial":"unixtime"}"#;
    assert_eq!(put(p, body, &[("If-Match", "\"1\"")]).0, 412);
    let (s, b) = put(p, body, &[]);
    assert_eq!(s, 201, "{b}");
    assert!(b.contains("127.0.0.0/8") && b.contains("unixtime"), "{b}");
    assert_eq!(put(p, body, &[]).0, 200);
    // A network entry lets an unsigned client from it transfer.
    let (out, err) = kdig(n, &["AXFR", "other.test"]);
    assert!(!err.contains("ERROR"), "{err}\n{out}");
    assert_eq!(records(&out).iter().filter(|r| r.1 == "SOA").count(), 2);
}

#[test]
fn rfc4035_ds_at_a_delegation_is_served_from_the_parent_side() {
    let n = node();
    let d = n.dig(&["sub.example.com", "DS"]);
    assert!(d.has_flag("aa"), "{d:?}");
    let ds = d.answer_data("DS");
    assert_eq!(ds.len(), 1, "{d:?}");
    assert!(ds[0].starts_with("60485 5 1"), "{ds:?}");
    // DNSSEC records in zone text are refused with a pointer to the API.
    let text = format!("{ZONE}@ IN NSEC3PARAM 1 0 0 -\n");
    let (status, body) = http(
        n.admin,
        "PUT",
        "/api/v1/zones/example.com",
        Some(("text/dns", &text)),
        Some(TOKEN),
    )
    .expect("put");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("/dnssec"), "{body}");
}
