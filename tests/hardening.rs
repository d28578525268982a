//! Reads that do not leak and a node that keeps its judgement, against the real binary:
//! health-check credentials masked in reads, health reasons without URLs, the admin API
//! refusing foreign `Host` names (DNS rebinding), a node out of descriptors giving no health
//! opinion rather than "down", and secret files others can read named at start.

mod common;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{Node, NodeRef, Setup, TOKEN};

const ZONE: &str = "$ORIGIN example.com.\n$TTL 300\n@ IN SOA ns1 hostmaster 1 7200 3600 1209600 300\n@ IN NS ns1\nns1 IN A 127.0.0.1\n";
const SERVICES: &str = "[[service]]\nzone = \"example.com\"\nname = \"www\"\npolicy = \"round_robin\"\ndatacenters = [\"lon\"]\n";

/// A port nothing listens on (bound, read, released).
fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// The node whose datacenter's HTTP check carries credentials (to a closed port), with
/// `[admin] hosts = ["meridian.test"]`.
fn node() -> &'static NodeRef {
    static NODE: OnceLock<NodeRef> = OnceLock::new();
    common::shared(&NODE, || {
        let dcs = format!(
            "[[datacenter]]\nid = \"lon\"\nlocation = {{ lat = 51.5, lon = -0.1 }}\naddresses = [\"192.0.2.1\"]\nhealth_check = {{ kind = \"http\", url = \"http://monitor:hunter2@127.0.0.1:{}/health?api_key=s3cret\", interval = \"100ms\", rise = 1, fall = 1 }}\n",
            closed_port()
        );
        let dcs: &'static str = Box::leak(dcs.into_boxed_str());
        Node::start(&Setup {
            files: &[
                ("example.com.zone", ZONE),
                ("datacenters.toml", dcs),
                ("services.toml", SERVICES),
            ],
            extra_config: "[admin]\nhosts = [\"meridian.test\"]\n",
        })
    })
}

/// `curl -s` against the admin API: (status, body).
fn curl(admin: SocketAddr, path: &str, args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "5", "-w", "\n%{http_code}"])
        .args(args)
        .arg(format!("http://{admin}{path}"))
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// Poll until `f` holds or `limit` passes: whether it held.
fn wait_for(limit: Duration, f: impl FnMut() -> bool) -> bool {
    common::wait_until(limit, f).is_some()
}

#[test]
fn health_check_credentials_are_masked_for_readers_without_the_write_token() {
    let node = node();
    // Wait for this node's opinion (the check fails: connect refused).
    assert!(
        wait_for(Duration::from_secs(10), || {
            curl(node.admin, "/api/v1/datacenters/lon", &[])
                .1
                .contains("\"reason\"")
        }),
        "no opinion recorded:\n{}",
        node.log()
    );
    for path in [
        "/api/v1/datacenters",
        "/api/v1/datacenters/lon",
        "/api/v1/datacenters/lon/events",
    ] {
        let (status, body) = curl(node.admin, path, &[]);
        assert_eq!(status, 200, "{body}");
        assert!(!body.contains("hunter2"), "{path}: {body}");
        assert!(!body.contains("s3cret"), "{path}: {body}");
    }
    let (_, body) = curl(node.admin, "/api/v1/datacenters/lon", &[]);
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    let port = v["health_check"]["url"]
        .as_str()
        .and_then(|u| u.split(':').nth(3))
        .and_then(|p| p.split('/').next())
        .unwrap_or("");
    assert_eq!(
        v["health_check"]["url"],
        format!("http://monitor:***@127.0.0.1:{port}/health?api_key=***")
    );
    // The reason says what failed, no more.
    assert_eq!(v["opinions"][0]["node"], 1, "{body}");
    assert_eq!(v["opinions"][0]["reason"], "connect refused", "{body}");
    // With the write token (who could set the URL anyway): as written.
    let auth = format!("Authorization: Bearer {TOKEN}");
    let (_, body) = curl(node.admin, "/api/v1/datacenters/lon", &["-H", &auth]);
    assert!(
        body.contains("monitor:hunter2@") && body.contains("api_key=s3cret"),
        "{body}"
    );
}

#[test]
fn dns_rebinding_host_is_refused_with_421() {
    let node = node();
    let (status, body) = curl(
        node.admin,
        "/api/v1/datacenters",
        &["-H", "Host: attacker.example"],
    );
    assert_eq!(status, 421, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("a JSON error");
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("attacker.example")),
        "{body}"
    );
    // /healthz and /metrics too: nothing is served under a foreign name.
    assert_eq!(
        curl(node.admin, "/healthz", &["-H", "Host: attacker.example"]).0,
        421
    );
    // The address itself, localhost and a configured name are served.
    let port = node.admin.port();
    for host in [
        format!("Host: 127.0.0.1:{port}"),
        format!("Host: localhost:{port}"),
        format!("Host: meridian.test:{port}"),
        "Host: MERIDIAN.TEST".to_string(),
    ] {
        let (status, body) = curl(node.admin, "/api/v1/datacenters", &["-H", &host]);
        assert_eq!(status, 200, "{host}: {body}");
    }
    // curl's own Host (the address it was given).
    assert_eq!(curl(node.admin, "/healthz", &[]).0, 200);
}

#[test]
fn a_token_file_others_can_read_is_a_warning_at_start() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("temp dir");
    let token = dir.path().join("token");
    std::fs::write(&token, "t0ken\n").expect("write");
    let config = dir.path().join("node.toml");
    std::fs::write(
        &config,
        "node_id = 1\n[dns]\nlisten = [\"127.0.0.1:1\"]\n[admin]\nlisten = \"127.0.0.1:2\"\ntoken_file = \"token\"\n[raft]\nlisten = \"127.0.0.1:3\"\npeers = { \"1\" = \"127.0.0.1:3\" }\n",
    )
    .expect("write");
    let check = || {
        let out = Command::new(env!("CARGO_BIN_EXE_meridian"))
            .args(["check", "--config"])
            .arg(&config)
            .output()
            .expect("run meridian check");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let quiet = check();
    assert!(!quiet.contains("readable"), "{quiet}");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let warned = check();
    assert!(
        warned.contains("WARN")
            && warned.contains("[admin] token_file")
            && warned.contains("readable by its group or others (mode 0644)"),
        "{warned}"
    );
}

#[test]
fn a_probe_failing_for_a_local_reason_is_no_opinion_never_down() {
    // A datacenter whose TCP check succeeds, on a node that may open few files.
    let up = TcpListener::bind("127.0.0.1:0").expect("bind");
    let up_addr = up.local_addr().expect("addr");
    let accepter = std::thread::spawn(move || {
        // Accept (and drop) until the test ends; bounded by the listener going away.
        for conn in up.incoming().take(100_000) {
            drop(conn);
        }
    });
    let dcs = format!(
        "[[datacenter]]\nid = \"lon\"\nlocation = {{ lat = 51.5, lon = -0.1 }}\naddresses = [\"192.0.2.1\"]\nhealth_check = {{ kind = \"tcp\", address = \"{up_addr}\", interval = \"100ms\", rise = 1, fall = 2 }}\n"
    );
    let limit = 72;
    let node = Node::start_limited(
        &Setup {
            files: &[
                ("example.com.zone", ZONE),
                ("datacenters.toml", &dcs),
                ("services.toml", SERVICES),
            ],
            extra_config: "",
        },
        Some(limit),
    );
    let health = |node: &Node| {
        let (_, body) = curl(node.admin, "/api/v1/datacenters/lon", &[]);
        serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["health"].as_str().map(str::to_string))
    };
    assert!(
        wait_for(Duration::from_secs(10), || health(&node).as_deref()
            == Some("healthy")),
        "never healthy: {:?}\n{}",
        health(&node),
        node.log()
    );
    // Take every descriptor the node has left: connections to its admin port, which it
    // accepts until it cannot (the admin cap keeps a reserve of descriptors, but never
    // goes below 64 connections, and this limit is too low for both).
    let mut hogs = Vec::new();
    for _ in 0..limit + 64 {
        match TcpStream::connect_timeout(&node.admin, Duration::from_secs(1)) {
            Ok(s) => hogs.push(s),
            Err(_) => break,
        }
    }
    assert!(
        wait_for(Duration::from_secs(10), || node
            .log()
            .contains("probe failed for a local reason")),
        "the node never ran out of descriptors ({} connections):\n{}",
        hogs.len(),
        node.log()
    );
    // Twenty probe rounds without descriptors: with fall = 2 that would be "down" ten times.
    std::thread::sleep(Duration::from_secs(2));
    drop(hogs);
    assert!(
        wait_for(Duration::from_secs(15), || health(&node).is_some()),
        "the API did not answer:\n{}",
        node.log()
    );
    assert_eq!(health(&node).as_deref(), Some("healthy"), "{}", node.log());
    let (_, events) = curl(node.admin, "/api/v1/datacenters/lon/events", &[]);
    assert!(!events.contains("unhealthy"), "{events}");
    drop(node);
    // Unblock the accepter: one last connection after the node is gone, then it ends with
    // the test process anyway.
    let _ = TcpStream::connect(up_addr);
    drop(accepter);
}

/// Accept (and drop) connections on `listener` until `stop` is set: a TCP health check
/// target that is up.
fn accept_until(listener: TcpListener, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) {
    listener.set_nonblocking(true).expect("nonblocking");
    let deadline = Instant::now() + Duration::from_secs(300);
    while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline {
        match listener.accept() {
            Ok((c, _)) => drop(c),
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// Raise this process's soft open-file limit to the hard one; the limit now in force.
fn raise_open_files() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        return hard;
    }
    soft
}

/// DESIGN.md "Abuse resistance": some 20,000 idle connections to the admin port (from many
/// loopback addresses, under the per-address cap) leave `/healthz`, DNS over TCP and the
/// health probes working: at its cap the admin listener closes the connection idle longest
/// to make room, and its cap leaves descriptors in reserve for the probes.
#[test]
fn twenty_thousand_idle_admin_connections_leave_healthz_dns_tcp_and_probes_working() {
    let up = TcpListener::bind("127.0.0.1:0").expect("bind");
    let up_addr = up.local_addr().expect("addr");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let accepter = {
        let stop = stop.clone();
        std::thread::spawn(move || accept_until(up, stop))
    };
    let dcs = format!(
        "[[datacenter]]\nid = \"lon\"\nlocation = {{ lat = 51.5, lon = -0.1 }}\naddresses = [\"192.0.2.1\"]\nhealth_check = {{ kind = \"tcp\", address = \"{up_addr}\", interval = \"200ms\", rise = 1, fall = 1 }}\n"
    );
    let node = Node::start(&Setup {
        files: &[
            ("example.com.zone", ZONE),
            ("datacenters.toml", &dcs),
            ("services.toml", SERVICES),
        ],
        extra_config: "",
    });
    let health = |node: &Node| {
        common::http_get(node.admin, "/api/v1/datacenters/lon").and_then(|(_, body)| {
            serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["health"].as_str().map(str::to_string))
        })
    };
    assert!(
        wait_for(Duration::from_secs(10), || health(&node).as_deref()
            == Some("healthy")),
        "never healthy:\n{}",
        node.log()
    );
    // The flood: as many idle connections as this process may open, up to 20,000, 200 per
    // source address (the per-address cap is 256).
    let wanted = 20_000usize.min(raise_open_files().saturating_sub(300) as usize);
    let mut flood = Vec::with_capacity(wanted);
    let started = Instant::now();
    for i in 0..wanted {
        if started.elapsed() > Duration::from_secs(120) {
            break;
        }
        let n = i / 200;
        let src = std::net::Ipv4Addr::new(127, 1, (n / 250) as u8, (n % 250 + 1) as u8);
        let Ok(sock) = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
        else {
            break;
        };
        if sock
            .bind(&SocketAddr::from((src, 0)).into())
            .and_then(|_| sock.connect_timeout(&node.admin.into(), Duration::from_millis(50)))
            .is_ok()
        {
            flood.push(sock);
        }
    }
    eprintln!(
        "{} of {wanted} idle connections opened in {:?}",
        flood.len(),
        started.elapsed()
    );
    assert!(
        flood.len() >= wanted * 9 / 10,
        "only {} connections",
        flood.len()
    );
    // /healthz still answers.
    assert!(
        wait_for(Duration::from_secs(10), || common::http_get(
            node.admin, "/healthz"
        )
        .is_some_and(|(code, _)| code == 200)),
        "/healthz did not answer under the flood:\n{}",
        node.log()
    );
    // DNS over TCP still answers.
    let d = node.dig(&["+tcp", "example.com", "SOA"]);
    assert_eq!(d.status, "NOERROR", "{}", d.raw);
    // The probes still run: take the target down and the verdict follows (a probe without
    // descriptors would be no opinion, and the site would stay healthy).
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    accepter.join().expect("accepter");
    assert!(
        wait_for(Duration::from_secs(10), || health(&node).as_deref()
            == Some("unhealthy")),
        "the probes did not see the target go down under the flood: {:?}\n{}",
        health(&node),
        node.log()
    );
    drop(flood);
}
