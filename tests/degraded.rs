//! Degradations that must not be silent: a `geo_nearest` service over a GeoIP database
//! without coordinates (a Country edition) is a warning in `meridian check` and in a
//! running node's log; a service that fails open (every datacenter drained) is a metric and
//! a log line, and its end is logged too.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::two_sites::{DCS, SERVICES, ZONE};
use common::{http_get, Node, Setup};

/// MaxMind's test Country database: countries and continents, no coordinates.
fn country_db() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/geoip/GeoIP2-Country-Test.mmdb")
}

/// As check says it (the zone as the file names it) and as a node does (its origin).
const WARNING: [&str; 2] = [
    "service www in example.com",
    " is geo_nearest, but the GeoIP database (GeoIP2-Country) has no coordinates",
];

#[test]
fn check_warns_about_geo_nearest_over_a_country_database() {
    let dir = tempfile::tempdir().expect("tmp");
    let zones = dir.path().join("zones");
    std::fs::create_dir(&zones).expect("mkdir");
    for (name, text) in [
        ("example.com.zone", ZONE),
        ("datacenters.toml", DCS),
        ("services.toml", SERVICES),
    ] {
        std::fs::write(zones.join(name), text).expect("write");
    }
    let config = |db: &std::path::Path| {
        format!(
            "node_id = 1\n[dns]\nlisten = [\"127.0.0.1:1\"]\n[admin]\nlisten = \"127.0.0.1:2\"\n[raft]\nlisten = \"127.0.0.1:3\"\npeers = {{ \"1\" = \"127.0.0.1:3\" }}\n[geoip]\ndatabase = \"{}\"\n[bootstrap]\ndir = \"zones\"\n",
            db.display()
        )
    };
    let path = dir.path().join("node.toml");
    let check = || {
        Command::new(env!("CARGO_BIN_EXE_meridian"))
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .expect("run meridian check")
    };
    std::fs::write(&path, config(&country_db())).expect("config");
    let out = check();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "a warning does not fail the check: {stderr}"
    );
    assert!(stdout.starts_with("ok:"), "{stdout}");
    assert!(
        stderr.contains(&format!("warning: {}{}", WARNING[0], WARNING[1])),
        "{stderr}"
    );

    // A City database has coordinates: nothing to say.
    std::fs::write(&path, config(&common::geoip_db())).expect("config");
    let out = check();
    assert!(out.status.success());
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("warning"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn metric(node: &Node, series: &str) -> Option<f64> {
    let (_, text) = http_get(node.admin, "/metrics")?;
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Poll until `f` holds, at most `limit`.
fn wait_for(limit: Duration, what: &str, node: &Node, f: impl FnMut() -> bool) {
    assert!(
        common::wait_until(limit, f).is_some(),
        "{what}:\n{}",
        node.log()
    );
}

fn set_state(node: &Node, dc: &str, state: &str) {
    let r = common::patch_datacenter(node.admin, dc, &format!("{{\"state\": \"{state}\"}}"));
    assert_eq!(r.0, 200, "{r:?}");
}

#[test]
fn node_logs_the_geoip_warning_and_failing_open_is_a_metric_and_a_log_line() {
    let extra = format!("[geoip]\ndatabase = \"{}\"\n", country_db().display());
    let node = Node::start(&Setup {
        files: &[
            ("example.com.zone", ZONE),
            ("datacenters.toml", DCS),
            ("services.toml", SERVICES),
        ],
        extra_config: &extra,
    });
    wait_for(Duration::from_secs(10), "no GeoIP warning", &node, || {
        let log = node.log();
        log.contains(WARNING[0]) && log.contains(WARNING[1])
    });

    const FAIL_OPEN: &str = r#"meridian_service_fail_open{zone="example.com.",service="www"}"#;
    assert_eq!(metric(&node, FAIL_OPEN), Some(0.0));
    set_state(&node, "lon", "drained");
    set_state(&node, "iad", "drained");
    wait_for(
        Duration::from_secs(10),
        "no fail-open metric",
        &node,
        || metric(&node, FAIL_OPEN) == Some(1.0),
    );
    wait_for(
        Duration::from_secs(10),
        "no fail-open log line",
        &node,
        || node.log().contains("service fails open"),
    );
    // Failing open: both datacenters in the answer.
    let d = node.dig(&["www.example.com", "A"]);
    assert_eq!(
        d.answer_data("A"),
        vec!["198.51.100.1", "198.51.100.2"],
        "{}",
        d.raw
    );
    let lines = node
        .log()
        .lines()
        .filter(|l| l.contains("service fails open"))
        .count();
    assert_eq!(
        lines,
        1,
        "logged when it starts, not per query:\n{}",
        node.log()
    );

    set_state(&node, "iad", "active");
    wait_for(
        Duration::from_secs(10),
        "fail-open metric stays",
        &node,
        || metric(&node, FAIL_OPEN) == Some(0.0),
    );
    wait_for(
        Duration::from_secs(10),
        "no end of fail-open logged",
        &node,
        || node.log().contains("service no longer fails open"),
    );
}
