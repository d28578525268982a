//! `meridian export DIR` (the logical backup) and `meridian apply --prune`, with the real
//! binary over real HTTP: an export bootstraps a fresh node, and applies onto an empty one,
//! that answer exactly as the source does (static names, a geo name for several client
//! subnets, a weighted name, datacenter states, zone settings and TSIG keys).

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{eventually, get_json, http, Node, NodeRef, Setup};

const TOKEN: &str = "test-token";
const SECRET: &str = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTEyMzQ=";

const ZONE: &str = "$ORIGIN example.com.\n$TTL 300\n@ 3600 IN SOA ns1 hostmaster 42 7200 3600 1209600 300\n@ IN NS ns1\nns1 IN A 127.0.0.1\nstatic IN A 192.0.2.99\nstatic IN AAAA 2001:db8::99\n@ IN MX 10 mail\nmail IN A 192.0.2.98\ntxt IN TXT \"exported\"\nalias IN CNAME static\n*.wild IN A 192.0.2.97\n";
const OTHER: &str = "$ORIGIN other.test.\n$TTL 300\n@ IN SOA ns1 hostmaster 7 7200 3600 1209600 300\n@ IN NS ns1\nns1 IN A 127.0.0.1\nhost IN A 198.51.100.7\n";

/// lon and nyc active (nyc with weight 0: never in a weighted answer), sgp drained with a
/// health check whose URL carries credentials (drained, its health changes no answer).
const DCS: &str = r#"[[datacenter]]
id = "lon"
location = { lat = 51.5, lon = -0.1 }
addresses = ["192.0.2.10", "2001:db8:1::10"]

[[datacenter]]
id = "nyc"
location = { lat = 40.7, lon = -74.0 }
addresses = ["192.0.2.20"]
weight = 0

[[datacenter]]
id = "sgp"
location = { lat = 1.35, lon = 103.8 }
addresses = ["192.0.2.30"]
state = "drained"
health_check = { kind = "http", url = "http://probe:hunter2@127.0.0.1:9/health?token=abc", interval = "1s" }
"#;

const SERVICES: &str = r#"[[service]]
zone = "example.com"
name = "www"
policy = "geo_nearest"
datacenters = ["lon", "nyc", "sgp"]
ttl = 30
overrides = { "country:SE" = ["nyc"] }

[[service]]
zone = "example.com"
name = "api"
policy = "weighted"
datacenters = ["lon", "nyc", "sgp"]
answers = 3
"#;

const TSIG: &str = "[[key]]\nname = \"xfr-key\"\nalgorithm = \"hmac-sha256\"\nsecret = \"c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTEyMzQ=\"\n";

const SETTINGS: &str = r#"[[zone]]
origin = "example.com"
allow_transfer = ["key:xfr-key"]
notify_key = "xfr-key"
[[zone.allow_update]]
key = "xfr-key"
name = "_acme-challenge.example.com."
match = "subdomain"
types = ["TXT"]
"#;

const FILES: [(&str, &str); 6] = [
    ("example.com.zone", ZONE),
    ("other.test.zone", OTHER),
    ("datacenters.toml", DCS),
    ("services.toml", SERVICES),
    ("tsig.toml", TSIG),
    ("zone-settings.toml", SETTINGS),
];

/// Client subnets for the geo name: London, Milton (US), Linköping (SE: the override),
/// Changchun (CN), and the default (no location).
const SUBNETS: [&str; 5] = [
    "+subnet=81.2.69.142/32",
    "+subnet=216.160.83.56/32",
    "+subnet=89.160.20.112/32",
    "+subnet=175.16.199.0/24",
    "+subnet=0.0.0.0/0",
];

/// (name, type) of the static questions compared.
const STATIC: [(&str, &str); 9] = [
    ("example.com", "SOA"),
    ("example.com", "NS"),
    ("example.com", "MX"),
    ("static.example.com", "A"),
    ("static.example.com", "AAAA"),
    ("txt.example.com", "TXT"),
    ("alias.example.com", "A"),
    ("x.wild.example.com", "A"),
    ("host.other.test", "A"),
];

/// The source node, shared by the tests that only read it.
fn source() -> &'static NodeRef {
    static NODE: OnceLock<NodeRef> = OnceLock::new();
    common::shared(&NODE, || {
        Node::start(&Setup {
            files: &FILES,
            extra_config: "",
        })
    })
}

fn meridian(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(args)
        .env_remove("MERIDIAN_ADMIN_TOKEN")
        .output()
        .expect("run meridian")
}

fn out(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn admin(n: &NodeRef) -> String {
    format!("http://{}", n.admin)
}

fn export(n: &NodeRef, token: Option<&str>, dir: &Path) -> Output {
    let url = admin(n);
    let mut args = vec!["export", "--admin", url.as_str()];
    if let Some(t) = token {
        args.extend(["--token", t]);
    }
    let dir = dir.display().to_string();
    args.push(&dir);
    meridian(&args)
}

fn apply(n: &NodeRef, extra: &[&str], dir: &Path) -> Output {
    let url = admin(n);
    let dir = dir.display().to_string();
    let mut args = vec!["apply", "--admin", url.as_str(), "--token", TOKEN];
    args.extend(extra);
    args.push(&dir);
    meridian(&args)
}

/// Every file of a directory: name → text.
fn read_dir(dir: &Path) -> BTreeMap<String, String> {
    std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| {
            let p = e.expect("entry").path();
            let name = p
                .file_name()
                .and_then(|n| n.to_str())
                .expect("name")
                .to_string();
            (name, std::fs::read_to_string(&p).expect("read"))
        })
        .collect()
}

/// Start a node bootstrapped from the files of `dir`.
fn node_from(dir: &Path) -> Node {
    let files = read_dir(dir);
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    Node::start(&Setup {
        files: &files,
        extra_config: "",
    })
}

/// What a node answers, as comparable text: static names, the geo name for each subnet
/// (A and AAAA), the weighted name, and every datacenter's definition and state.
fn answers(n: &NodeRef) -> Vec<String> {
    let mut out = Vec::new();
    let mut ask = |args: &[&str]| {
        let d = n.dig(args);
        let mut rrs: Vec<String> = d
            .answer
            .iter()
            .map(|r| format!("{} {} {} {}", r.name, r.ttl, r.rtype, r.data))
            .collect();
        rrs.sort();
        out.push(format!("{args:?}: {} {rrs:?}", d.status));
    };
    for (name, qtype) in STATIC {
        ask(&[name, qtype]);
    }
    for subnet in SUBNETS {
        ask(&[subnet, "www.example.com", "A"]);
        ask(&[subnet, "www.example.com", "AAAA"]);
        ask(&[subnet, "api.example.com", "A"]);
    }
    ask(&["nothere.example.com", "A"]);
    for dc in get_json(n.admin, "/api/v1/datacenters")
        .as_array()
        .expect("list")
    {
        out.push(format!(
            "dc {} state={} weight={} location={} addresses={} health_check={}",
            dc["id"],
            dc["state"],
            dc["weight"],
            dc["location"],
            dc["addresses"],
            dc["health_check"]
        ));
    }
    out
}

/// `answers` without the SOA question.
fn no_soa(a: Vec<String>) -> Vec<String> {
    a.into_iter().filter(|l| !l.contains("\"SOA\"")).collect()
}

/// example.com's SOA serial as `dig` sees it.
fn serial(n: &NodeRef) -> u32 {
    let soa = n.dig(&["example.com", "SOA"]).answer_data("SOA");
    soa.first()
        .and_then(|s| s.split_whitespace().nth(2))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no SOA serial in {soa:?}"))
}

/// Whether `dig -y KEY AXFR example.com` transfers the zone from `n`.
fn signed_axfr(n: &NodeRef, key: Option<&str>) -> bool {
    let mut args = vec![];
    let y;
    if let Some(k) = key {
        y = format!("hmac-sha256:xfr-key:{k}");
        args.extend(["-y", y.as_str()]);
    }
    args.extend(["example.com", "AXFR"]);
    let d = n.dig(&args);
    d.raw.matches("\tSOA\t").count() >= 2 && !d.raw.contains("failed")
}

fn fill_secret(dir: &Path) {
    let path = dir.join("tsig.toml");
    let text = std::fs::read_to_string(&path).expect("tsig.toml");
    assert!(text.contains("secret = \"\""), "{text}");
    assert!(!text.contains(SECRET), "a secret left the cluster: {text}");
    std::fs::write(
        &path,
        text.replace("secret = \"\"", &format!("secret = \"{SECRET}\"")),
    )
    .expect("write");
}

#[test]
fn export_round_trips_through_a_fresh_bootstrap_and_through_apply_onto_an_empty_node() {
    let src = source();
    let want = answers(src);
    // Sanity: the state is what the files say (drained sgp never answers; nyc's weight 0
    // keeps it out of the weighted name; Sweden gets its override).
    let text = want.join("\n");
    assert!(
        want.iter()
            .filter(|l| !l.starts_with("dc "))
            .all(|l| !l.contains("192.0.2.30")),
        "{text}"
    );
    assert!(
        want.iter()
            .any(|l| l.contains("89.160.20.112") && l.contains("www") && l.contains("192.0.2.20")),
        "{text}"
    );
    assert!(signed_axfr(src, Some(SECRET)) && !signed_axfr(src, None));

    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("backup");
    let o = export(src, Some(TOKEN), &dir);
    assert!(o.status.success(), "{}", out(&o));
    let files = read_dir(&dir);
    let names: Vec<&str> = files.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "datacenters.toml",
            "example.com.zone",
            "other.test.zone",
            "services.toml",
            "tsig.toml",
            "zone-settings.toml"
        ],
        "{}",
        out(&o)
    );
    assert_eq!(files["example.com.zone"], ZONE);
    assert!(
        files["datacenters.toml"].contains("http://probe:hunter2@127.0.0.1:9/health?token=abc"),
        "the write token gets the URL unmasked:\n{}",
        files["datacenters.toml"]
    );
    assert!(files["datacenters.toml"].contains("state = \"drained\""));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!stderr.contains("masked"), "{}", out(&o));
    assert!(stderr.contains("fill in"), "{}", out(&o));

    // An import, and an apply, refuse the empty secret and say to fill it in.
    let check_dir = tempfile::tempdir().expect("tmp");
    std::fs::write(
        check_dir.path().join("node.toml"),
        format!(
            "node_id = 1\ndata_dir = \"data\"\n[dns]\nlisten = [\"127.0.0.1:1\"]\n[admin]\nlisten = \"127.0.0.1:2\"\n[raft]\nlisten = \"127.0.0.1:3\"\npeers = {{ \"1\" = \"127.0.0.1:3\" }}\n[bootstrap]\ndir = \"{}\"\n",
            dir.display()
        ),
    )
    .expect("config");
    let node_toml = check_dir.path().join("node.toml");
    let o = meridian(&["check", "--config", &node_toml.display().to_string()]);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("tsig.toml")
            && String::from_utf8_lossy(&o.stderr).contains("fill in"),
        "{}",
        out(&o)
    );
    let o = apply(src, &["--dry-run"], &dir);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("fill in"),
        "{}",
        out(&o)
    );

    fill_secret(&dir);

    // A fresh node bootstrapped from the export answers as the source does.
    let copy = node_from(&dir);
    assert_eq!(answers(&copy), want, "bootstrapped from the export");
    assert!(signed_axfr(&copy, Some(SECRET)) && !signed_axfr(&copy, None));
    assert_eq!(
        get_json(copy.admin, "/api/v1/zones/example.com/settings")["allow_update"],
        get_json(src.admin, "/api/v1/zones/example.com/settings")["allow_update"]
    );
    // And its own export is the same directory, byte for byte (secret aside).
    let again = tmp.path().join("again");
    let o = export(&copy, Some(TOKEN), &again);
    assert!(o.status.success(), "{}", out(&o));
    let mut first = read_dir(&dir);
    first.insert("tsig.toml".into(), files["tsig.toml"].clone());
    assert_eq!(read_dir(&again), first);

    // `meridian apply` of the export onto an empty node: the same answers.
    let empty = Node::start(&Setup {
        files: &[],
        extra_config: "",
    });
    let o = apply(&empty, &[], &dir);
    assert!(o.status.success(), "{}", out(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("9 created, 0 replaced, 0 unchanged"),
        "1 key, 3 datacenters, 2 zones, 1 zone's settings, 2 services:\n{}",
        out(&o)
    );
    // The same answers, but the SOA serial: each service put into the zone after it moves
    // it on (increment), so it is higher here, never lower.
    let deadline = Instant::now() + Duration::from_secs(10);
    while no_soa(answers(&empty)) != no_soa(want.clone()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        no_soa(answers(&empty)),
        no_soa(want.clone()),
        "applied onto an empty node"
    );
    assert!(serial(&empty) >= serial(src));
    assert!(signed_axfr(&empty, Some(SECRET)) && !signed_axfr(&empty, None));
    // Applying again changes nothing.
    let o = apply(&empty, &[], &dir);
    assert!(o.status.success(), "{}", out(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("0 created, 0 replaced, 9 unchanged"),
        "{}",
        out(&o)
    );
}

#[test]
fn export_refuses_a_non_empty_directory_and_warns_when_credentials_come_back_masked() {
    let src = source();
    let tmp = tempfile::tempdir().expect("tmp");
    std::fs::write(tmp.path().join("keep.txt"), "mine").expect("write");
    let o = export(src, Some(TOKEN), tmp.path());
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains(&tmp.path().display().to_string()) && stderr.contains("not empty"),
        "{}",
        out(&o)
    );
    assert_eq!(read_dir(tmp.path()).len(), 1, "nothing written");

    // Without a token reads still work, but the health-check credentials are masked, and
    // export says so.
    let empty = tempfile::tempdir().expect("tmp");
    let o = export(src, None, empty.path());
    assert!(o.status.success(), "{}", out(&o));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("masked") && stderr.contains("sgp"),
        "{}",
        out(&o)
    );
    let dcs = std::fs::read_to_string(empty.path().join("datacenters.toml")).expect("dcs");
    assert!(dcs.contains("***") && !dcs.contains("hunter2"), "{dcs}");
}

#[test]
fn apply_prune_dry_run_lists_the_deletions_and_changes_nothing_then_prune_deletes() {
    let files: Vec<(&str, &str)> = FILES.to_vec();
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    for (name, text) in &files {
        std::fs::write(dir.join(name), text).expect("write");
    }
    // A node with more than the files name: a service, a zone with a service of its own,
    // and a datacenter.
    let extra_zone = "$ORIGIN gone.test.\n$TTL 300\n@ IN SOA ns1 hostmaster 1 7200 3600 1209600 300\n@ IN NS ns1\nns1 IN A 127.0.0.1\n";
    let extra_dcs = format!(
        "{DCS}\n[[datacenter]]\nid = \"old\"\nlocation = {{ lat = 0.0, lon = 0.0 }}\naddresses = [\"192.0.2.40\"]\n"
    );
    let extra_services = format!(
        "{SERVICES}\n[[service]]\nzone = \"example.com\"\nname = \"legacy\"\npolicy = \"round_robin\"\ndatacenters = [\"old\"]\n\n[[service]]\nzone = \"gone.test\"\nname = \"www\"\npolicy = \"round_robin\"\ndatacenters = [\"lon\"]\n"
    );
    let node = Node::start(&Setup {
        files: &[
            ("example.com.zone", ZONE),
            ("other.test.zone", OTHER),
            ("gone.test.zone", extra_zone),
            ("datacenters.toml", &extra_dcs),
            ("services.toml", &extra_services),
            ("tsig.toml", TSIG),
            ("zone-settings.toml", SETTINGS),
        ],
        extra_config: "",
    });
    let before = answers(&node);
    assert_eq!(
        node.dig(&["legacy.example.com", "A"]).answer_data("A"),
        ["192.0.2.40"]
    );

    let o = apply(&node, &["--prune", "--dry-run"], dir);
    assert!(o.status.success(), "{}", out(&o));
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    let deletions: Vec<&str> = stdout.lines().filter(|l| l.starts_with("delete")).collect();
    assert_eq!(
        deletions,
        [
            "delete    service legacy in example.com.",
            "delete    service www in gone.test.",
            "delete    zone gone.test.",
            "delete    datacenter old",
        ],
        "{}",
        out(&o)
    );
    assert!(
        stdout.contains("0 to create, 0 to replace, 4 to delete, 9 unchanged; nothing was changed"),
        "{}",
        out(&o)
    );
    assert_eq!(answers(&node), before, "a dry run changes nothing");
    assert_eq!(
        node.dig(&["legacy.example.com", "A"]).answer_data("A"),
        ["192.0.2.40"]
    );
    assert_eq!(
        http(node.admin, "GET", "/api/v1/datacenters/old", None, None).map(|r| r.0),
        Some(200)
    );

    let o = apply(&node, &["--prune"], dir);
    assert!(o.status.success(), "{}", out(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout)
            .contains("0 created, 0 replaced, 9 unchanged, 4 deleted"),
        "{}",
        out(&o)
    );
    for path in [
        "/api/v1/zones/example.com/services/legacy",
        "/api/v1/zones/gone.test",
        "/api/v1/datacenters/old",
    ] {
        assert_eq!(
            http(node.admin, "GET", path, None, None).map(|r| r.0),
            Some(404),
            "{path}"
        );
    }
    eventually("the pruned names are gone from DNS", || {
        let legacy = node.dig(&["legacy.example.com", "A"]);
        let gone = node.dig(&["www.gone.test", "A"]);
        (legacy.status == "NXDOMAIN" && gone.status == "REFUSED").then_some(())
    });
    // As the files say; but the SOA serial, which the deletion of a service of the zone
    // moved on.
    assert_eq!(
        no_soa(answers(&node)),
        no_soa(answers(source())),
        "now as the files say"
    );

    // Nothing left to prune.
    let o = apply(&node, &["--prune"], dir);
    assert!(o.status.success(), "{}", out(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout)
            .contains("0 created, 0 replaced, 9 unchanged, 0 deleted"),
        "{}",
        out(&o)
    );
}

#[test]
fn export_warns_that_dnssec_keys_are_not_exported_and_writes_none() {
    let node = Node::start(&Setup {
        files: &[("other.test.zone", OTHER)],
        extra_config: "",
    });
    let (status, body) = http(
        node.admin,
        "PUT",
        "/api/v1/zones/other.test/dnssec",
        Some(("application/json", r#"{"algorithm": "ED25519"}"#)),
        Some(TOKEN),
    )
    .expect("PUT dnssec");
    assert_eq!(status, 201, "{body}");
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("backup");
    let o = export(&node, Some(TOKEN), &dir);
    assert!(o.status.success(), "{}", out(&o));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("DNSSEC keys are never exported")
            && stderr.contains("other.test. (ED25519)")
            && stderr.contains("DS"),
        "{}",
        out(&o)
    );
    let files = read_dir(&dir);
    assert!(files.contains_key("other.test.zone"), "{:?}", files.keys());
    for (name, text) in files {
        for bad in ["DNSKEY", "RRSIG", "PRIVATE", "private"] {
            assert!(!text.contains(bad), "{name} holds {bad}:\n{text}");
        }
    }
}

/// RFC 1982 serials: a cluster restored from an export must not publish a lower serial
/// than the source did (its secondaries would stop transferring, RFC 1995 §4): the export
/// writes the serial the cluster publishes, which a drain moved past the text's.
#[test]
fn export_keeps_the_published_soa_serial_so_a_restore_does_not_go_back() {
    let files = [
        ("example.com.zone", ZONE),
        ("other.test.zone", OTHER),
        ("datacenters.toml", DCS),
        ("services.toml", SERVICES),
    ];
    let src = Node::start(&Setup {
        files: &files,
        extra_config: "",
    });
    assert_eq!(serial(&src), 42);
    // Draining lon changes www's unlocated answer, so example.com's serial moves.
    let (status, body) = http(
        src.admin,
        "PATCH",
        "/api/v1/datacenters/lon",
        Some(("application/json", r#"{"state": "drained"}"#)),
        Some(TOKEN),
    )
    .expect("PATCH");
    assert_eq!(status, 200, "{body}");
    let published = eventually("the serial moves", || {
        let s = serial(&src);
        (s > 42).then_some(s)
    });
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("backup");
    let o = export(&src, Some(TOKEN), &dir);
    assert!(o.status.success(), "{}", out(&o));
    let written = read_dir(&dir);
    assert_eq!(
        written["example.com.zone"],
        ZONE.replace(
            "SOA ns1 hostmaster 42 ",
            &format!("SOA ns1 hostmaster {published} ")
        ),
        "only the serial changes"
    );
    assert_eq!(
        written["other.test.zone"], OTHER,
        "a serial that did not move"
    );
    let copy = node_from(&dir);
    assert_eq!(
        serial(&copy),
        published,
        "restored with the published serial"
    );
}
