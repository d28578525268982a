//! Meridian as a service: the systemd unit in `dist/` passes `systemd-analyze verify` (and
//! its security review), the node tells systemd `READY=1` only once `/healthz` says 200 and
//! `STOPPING=1` on SIGTERM, and SIGHUP is a reload request, not the end of the process.

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::two_sites::{DCS, SERVICES, ZONE};
use common::{http_get, Node, Setup};
use nix::sys::signal::Signal;

/// The unit with its `ExecStart` pointed at the binary under test, in a file of its own.
fn unit_for_test(dir: &Path) -> std::path::PathBuf {
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("dist/meridian.service"),
    )
    .expect("dist/meridian.service");
    let path = dir.join("meridian.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/meridian", env!("CARGO_BIN_EXE_meridian")),
    )
    .expect("write unit");
    path
}

#[test]
fn systemd_analyze_verifies_the_unit() {
    let dir = tempfile::tempdir().expect("temp dir");
    let unit = unit_for_test(dir.path());
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .expect("run systemd-analyze (install systemd)");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // verify exits 0 on settings it ignores; a clean unit makes it say nothing at all.
    assert!(out.status.success() && said.trim().is_empty(), "{said}");

    let text = std::fs::read_to_string(&unit).expect("unit");
    for line in [
        "Type=notify",
        "User=meridian",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "StateDirectory=meridian",
        "Restart=on-failure",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "NoNewPrivileges=yes",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line}");
    }

    // systemd's own review of the sandbox: "OK" or better (exposure ≤ 2.5 of 10).
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--threshold=25"])
        .arg(&unit)
        .output()
        .expect("run systemd-analyze security");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn sd_notify_ready_once_healthz_says_200_and_sighup_reloads() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind notify socket");
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let setup = Setup {
        files: &[
            ("example.com.zone", ZONE),
            ("datacenters.toml", DCS),
            ("services.toml", SERVICES),
        ],
        extra_config: "",
    };
    let notify = sock_path.to_str().expect("utf-8 path");
    let mut node = Node::spawn(&setup, &[("NOTIFY_SOCKET", notify)]);
    let mut buf = [0u8; 512];
    let n = sock.recv(&mut buf).expect("READY=1 within 30 s");
    // Asked right after READY=1: the node must already be ready.
    let health = http_get(node.admin, "/healthz").map(|r| r.0);
    let msg = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(msg.lines().any(|l| l == "READY=1"), "{msg:?}");
    assert_eq!(health, Some(200), "READY=1 came before /healthz said 200");

    // SIGHUP: logged as a reload request; the node keeps serving.
    node.signal(Signal::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !node.log().contains("reload requested") {
        assert!(node.is_running(), "SIGHUP ended the node:\n{}", node.log());
        assert!(Instant::now() < deadline, "no reload:\n{}", node.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(node.is_running());
    let d = node.dig(&["www.example.com", "A"]);
    assert_eq!(d.status, "NOERROR", "{}", d.raw);
    assert_eq!(http_get(node.admin, "/healthz").map(|r| r.0), Some(200));

    // SIGTERM: STOPPING=1, then a clean exit.
    let status = node.terminate(Duration::from_secs(10)).expect("node exits");
    assert!(status.success(), "{status}");
    let n = sock.recv(&mut buf).expect("STOPPING=1");
    let msg = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(msg.lines().any(|l| l == "STOPPING=1"), "{msg:?}");
}

#[test]
fn help_describes_every_flag_default_environment_variable_and_signal() {
    let help = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_meridian"))
            .args(args)
            .arg("--help")
            .output()
            .expect("run meridian --help");
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let serve = help(&["serve"]);
    for needle in [
        "--config <FILE>",
        "127.0.0.1:1053",
        "127.0.0.1:8053",
        "127.0.0.1:9053",
        "./data",
        "./geoip/GeoIP2-City-Test.mmdb",
        "./zones",
        "MERIDIAN_ADMIN_TOKEN",
        "RUST_LOG",
        "MERIDIAN_LOG_FORMAT",
        "SIGTERM",
        "SIGINT",
        "SIGHUP",
    ] {
        assert!(
            serve.contains(needle),
            "serve --help lacks {needle}:\n{serve}"
        );
    }
    let apply = help(&["apply"]);
    for needle in [
        "--admin <URL>",
        "--token",
        "--dry-run",
        "MERIDIAN_ADMIN_TOKEN",
    ] {
        assert!(
            apply.contains(needle),
            "apply --help lacks {needle}:\n{apply}"
        );
    }
    let apply = help(&["apply"]);
    for needle in [
        "--prune",
        "--send-secrets",
        "zone-settings.toml",
        "tsig.toml",
    ] {
        assert!(
            apply.contains(needle),
            "apply --help lacks {needle}:\n{apply}"
        );
    }
    let export = help(&["export"]);
    for needle in [
        "--admin <URL>",
        "--token",
        "--cacert",
        "<DIR>",
        "empty",
        "secret = \"\"",
        "masked",
        "MERIDIAN_ADMIN_TOKEN",
    ] {
        assert!(
            export.contains(needle),
            "export --help lacks {needle}:\n{export}"
        );
    }
    for cmd in ["check", "explain", "apply", "export"] {
        let text = help(&[cmd]);
        assert!(text.contains("MERIDIAN_LOG_FORMAT"), "{cmd}:\n{text}");
        assert!(text.contains("RUST_LOG"), "{cmd}:\n{text}");
    }
    let explain = help(&["explain"]);
    assert!(
        explain.contains("--json") && explain.contains("offline"),
        "{explain}"
    );
}

#[test]
fn logs_are_plain_text_off_a_terminal_and_json_when_asked() {
    let setup = Setup {
        files: &[
            ("example.com.zone", ZONE),
            ("datacenters.toml", DCS),
            ("services.toml", SERVICES),
        ],
        extra_config: "",
    };
    // The harness sends stderr to a file: no colour codes there.
    let mut text = Node::spawn(&setup, &[]);
    text.wait_healthy(Duration::from_secs(30));
    let mut json = Node::spawn(&setup, &[("MERIDIAN_LOG_FORMAT", "json")]);
    json.wait_healthy(Duration::from_secs(30));
    for node in [&mut text, &mut json] {
        let status = node.terminate(Duration::from_secs(10)).expect("exits");
        assert!(status.success(), "{status}");
    }
    let log = text.log();
    assert!(log.contains("node ready"), "{log}");
    assert!(!log.contains('\u{1b}'), "ANSI escapes in a file:\n{log}");

    let log = json.log();
    let mut messages = Vec::new();
    for line in log.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v["level"].is_string() && v["timestamp"].is_string(),
            "{line}"
        );
        messages.push(v["fields"]["message"].as_str().unwrap_or("").to_string());
    }
    assert!(
        messages.iter().any(|m| m == "node ready: state published"),
        "{log}"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["check", "--config", "/nonexistent.toml"])
        .env("MERIDIAN_LOG_FORMAT", "xml")
        .output()
        .expect("run meridian");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("MERIDIAN_LOG_FORMAT"), "{err}");
}

/// DESIGN.md "Transport security"/the security issue: SIGHUP re-reads the admin token from
/// the config file, so a leaked token is replaced without a restart.
#[test]
fn sighup_puts_a_changed_admin_token_in_force() {
    let mut node = Node::start(&Setup {
        files: &[
            ("example.com.zone", ZONE),
            ("datacenters.toml", DCS),
            ("services.toml", SERVICES),
        ],
        extra_config: "",
    });
    let admin = node.admin;
    let patch = |token: &str| {
        common::http(
            admin,
            "PATCH",
            "/api/v1/datacenters/lon",
            Some(("application/json", r#"{"weight": 7}"#)),
            Some(token),
        )
        .map(|r| r.0)
    };
    assert_eq!(patch(common::TOKEN), Some(200));
    let path = node.config_path();
    let text = std::fs::read_to_string(&path).expect("config");
    assert!(text.contains("token = \"test-token\""), "{text}");
    std::fs::write(
        &path,
        text.replace("token = \"test-token\"", "token = \"rotated-token\""),
    )
    .expect("rewrite config");
    // Nothing changes before the signal.
    assert_eq!(patch("rotated-token"), Some(401));
    node.signal(Signal::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while patch("rotated-token") != Some(200) {
        assert!(node.is_running(), "SIGHUP ended the node:\n{}", node.log());
        assert!(
            Instant::now() < deadline,
            "new token never in force:\n{}",
            node.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(patch(common::TOKEN), Some(401), "the old token is refused");
    assert!(
        !node.log().contains("rotated-token"),
        "a token in the log:\n{}",
        node.log()
    );
    // A config that no longer loads leaves the token in force.
    std::fs::write(&path, "this is not toml [").expect("break config");
    node.signal(Signal::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !node.log().contains("does not load") {
        assert!(
            Instant::now() < deadline,
            "no error logged:\n{}",
            node.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(patch("rotated-token"), Some(200));
}
