//! The command line and the node's life cycle: `check`, bad configs, SIGTERM, listening on
//! IPv6 and on wildcard addresses.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::Duration;

use common::{Node, Setup};

const ZONE: &str = "$ORIGIN example.net.\n$TTL 300\n@ IN SOA ns1 hostmaster 1 7200 3600 1209600 300\n@ IN NS ns1\nns1 IN A 127.0.0.1\nwww IN A 192.0.2.80\n";

fn meridian(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(args)
        .output()
        .expect("run meridian")
}

fn write_config(dir: &std::path::Path, body: &str) -> std::path::PathBuf {
    let path = dir.join("node.toml");
    std::fs::write(&path, body).expect("write config");
    path
}

fn minimal_config(dns: &str) -> String {
    let admin = common::free_port();
    let raft = common::free_port();
    format!(
        "node_id = 1\n[dns]\nlisten = [{dns}]\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n[raft]\nlisten = \"127.0.0.1:{raft}\"\npeers = {{ \"1\" = \"127.0.0.1:{raft}\" }}\n[bootstrap]\ndir = \"zones\"\n"
    )
}

#[test]
fn check_accepts_a_good_config_and_zone() {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::create_dir(dir.path().join("zones")).expect("mkdir");
    std::fs::write(dir.path().join("zones/example.net.zone"), ZONE).expect("zone");
    let cfg = write_config(dir.path(), &minimal_config("\"127.0.0.1:1\""));
    let out = meridian(&["check", "--config", cfg.to_str().expect("utf8")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn check_reports_a_broken_zone_as_file_line_and_exits_1() {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::create_dir(dir.path().join("zones")).expect("mkdir");
    let broken = format!("{ZONE}bad IN A 999.1.2.3\n");
    std::fs::write(dir.path().join("zones/example.net.zone"), broken).expect("zone");
    let cfg = write_config(dir.path(), &minimal_config("\"127.0.0.1:1\""));
    let out = meridian(&["check", "--config", cfg.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("example.net.zone:7:"), "{err}");
    // serve refuses it too, and says why
    let out = meridian(&["serve", "--config", cfg.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("example.net.zone:7:"));
}

#[test]
fn check_binds_no_port() {
    // The DNS port is taken by someone else: check still passes (it never binds).
    let taken = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::create_dir(dir.path().join("zones")).expect("mkdir");
    std::fs::write(dir.path().join("zones/example.net.zone"), ZONE).expect("zone");
    let cfg = write_config(
        dir.path(),
        &minimal_config(&format!("\"127.0.0.1:{port}\"")),
    );
    let out = meridian(&["check", "--config", cfg.to_str().expect("utf8")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !dir.path().join("data").exists(),
        "check created the data dir"
    );
}

#[test]
fn unknown_config_key_is_named() {
    let dir = tempfile::tempdir().expect("tmp");
    let body = minimal_config("\"127.0.0.1:1\"").replace("[admin]\n", "[admin]\nlisten_port = 5\n");
    let cfg = write_config(dir.path(), &body);
    for cmd in ["check", "serve"] {
        let out = meridian(&[cmd, "--config", cfg.to_str().expect("utf8")]);
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("listen_port"), "{cmd}: {err}");
    }
}

#[test]
fn sigterm_stops_the_node_within_seconds() {
    let mut node = Node::start(&Setup {
        files: &[("example.net.zone", ZONE)],
        extra_config: "",
    });
    assert_eq!(
        node.dig(&["www.example.net"]).answer_data("A"),
        vec!["192.0.2.80"]
    );
    let status = node
        .terminate(Duration::from_secs(5))
        .expect("exited within 5 s");
    assert!(status.success(), "{status}");
}

#[test]
fn serves_ipv6_and_replies_from_the_address_queried_on_a_wildcard() {
    let port = common::free_port();
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::create_dir(dir.path().join("zones")).expect("mkdir");
    std::fs::write(dir.path().join("zones/example.net.zone"), ZONE).expect("zone");
    // 0.0.0.0 is only ever sent to on loopback addresses here.
    let body = minimal_config(&format!("\"0.0.0.0:{port}\", \"[::1]:{port}\""));
    let admin: SocketAddr = body
        .lines()
        .find_map(|l| l.strip_prefix("listen = \"127.0.0.1:"))
        .and_then(|p| p.trim_end_matches('"').parse::<u16>().ok())
        .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
        .expect("admin port");
    let cfg = write_config(dir.path(), &body);
    let mut child = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["serve", "--config", cfg.to_str().expect("utf8")])
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while common::http_get(admin, "/healthz").map(|r| r.0) != Some(200) {
        assert!(std::time::Instant::now() < deadline, "not healthy");
        std::thread::sleep(Duration::from_millis(50));
    }
    let v6 = common::dig_at(
        SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port)),
        &["www.example.net"],
    );
    assert_eq!(v6.answer_data("A"), vec!["192.0.2.80"], "{}", v6.raw);
    // Ask 127.0.0.2 on the wildcard socket: the reply must come from 127.0.0.2.
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let mut q = vec![0xab, 0xcd, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    q.extend_from_slice(b"\x03www\x07example\x03net\x00\x00\x01\x00\x01");
    let to = SocketAddr::from(([127, 0, 0, 2], port));
    sock.send_to(&q, to).expect("send");
    let mut buf = [0u8; 512];
    let (n, from) = sock.recv_from(&mut buf).expect("a reply");
    assert!(n > 12);
    assert_eq!(from, to, "reply left from another address");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn explain_gives_the_answer_and_the_reasons() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().expect("tmp");
    let zones = dir.path().join("zones");
    std::fs::create_dir(&zones).expect("mkdir");
    for f in ["example.com.zone", "datacenters.toml", "services.toml"] {
        std::fs::copy(root.join("zones").join(f), zones.join(f)).expect("copy");
    }
    let body = minimal_config("\"127.0.0.1:1\"")
        + &format!("[geoip]\ndatabase = \"{}\"\n", common::geoip_db().display());
    let cfg = write_config(dir.path(), &body);
    let cfg = cfg.to_str().expect("utf8");
    let out = meridian(&[
        "explain",
        "--config",
        cfg,
        "www.example.com",
        "A",
        "81.2.69.142",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("198.51.100.1"), "{text}");
    assert!(text.contains("GB EU"), "{text}");
    assert!(text.contains("ecs scope: /"), "{text}");
    let out = meridian(&[
        "explain",
        "--config",
        cfg,
        "--json",
        "www.example.com",
        "A",
        "175.16.199.1",
    ]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        json["answers"][0]
            .as_str()
            .map(|s| s.ends_with("198.51.100.3")),
        Some(true),
        "{json}"
    );
    assert_eq!(json["service"]["client_location"]["country"], "CN");
}
