//! Health checking across a real 3-node cluster: real HTTP and TCP backends on loopback; a
//! dead backend leaves every node's answers, comes back when it recovers, and the service
//! fails open when everything is down.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{http_get, NodeRef, TestCluster};

/// How long a backend thread may live: bounded, like every loop here.
const BACKEND_LIFETIME: Duration = Duration::from_secs(180);

/// An HTTP backend answering 200 while `up`, 503 otherwise.
struct HttpBackend {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
}

impl HttpBackend {
    fn start() -> HttpBackend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        listener.set_nonblocking(true).expect("nonblocking");
        let up = Arc::new(AtomicBool::new(true));
        let flag = up.clone();
        std::thread::spawn(move || {
            let start = Instant::now();
            while start.elapsed() < BACKEND_LIFETIME {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        let _ = s.set_nonblocking(false);
                        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
                        let mut buf = [0u8; 1024];
                        let _ = s.read(&mut buf);
                        let status = if flag.load(Ordering::Relaxed) {
                            "200 OK"
                        } else {
                            "503 Service Unavailable"
                        };
                        let _ = write!(
                            s,
                            "HTTP/1.1 {status}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                        );
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        HttpBackend { addr, up }
    }
}

/// A TCP backend that can be closed (connections refused) and opened again on its port.
struct TcpBackend {
    addr: SocketAddr,
    open: Arc<AtomicBool>,
}

impl TcpBackend {
    fn start() -> TcpBackend {
        let port = common::free_port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let open = Arc::new(AtomicBool::new(true));
        let flag = open.clone();
        std::thread::spawn(move || {
            let start = Instant::now();
            let mut listener: Option<TcpListener> = None;
            while start.elapsed() < BACKEND_LIFETIME {
                let want = flag.load(Ordering::Relaxed);
                if want && listener.is_none() {
                    listener = TcpListener::bind(addr).ok();
                    if let Some(l) = &listener {
                        let _ = l.set_nonblocking(true);
                    }
                } else if !want {
                    listener = None;
                }
                if let Some(l) = &listener {
                    while let Ok((s, _)) = l.accept() {
                        drop(s);
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        TcpBackend { addr, open }
    }
}

fn london(node: &NodeRef) -> Vec<String> {
    node.dig(&["+subnet=81.2.69.142/32", "www.example.com", "A"])
        .answer_data("A")
}

/// Wait until every node answers `want` for a London client; the time it took.
fn all_answer(nodes: &[NodeRef], want: &[&str], limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let answers: Vec<Vec<String>> = nodes.iter().map(london).collect();
        if answers.iter().all(|a| a == want) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "not every node answers {want:?} after {limit:?}: {answers:?}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn health_of(node: &NodeRef, dc: &str) -> String {
    http_get(node.admin, &format!("/api/v1/datacenters/{dc}"))
        .and_then(|(_, body)| serde_json::from_str::<serde_json::Value>(&body).ok())
        .and_then(|v| v["health"].as_str().map(String::from))
        .unwrap_or_default()
}

/// Three nodes probing lon (HTTP), iad (TCP) and sin (a closed port), all at 500 ms with
/// rise = fall = 2, with a geo_nearest `www` over the three.
fn three_probed_sites() -> (HttpBackend, TcpBackend, TestCluster) {
    let web = HttpBackend::start();
    let tcp = TcpBackend::start();
    let closed = common::free_port(); // nothing listens there
    let zone = "$ORIGIN example.com.\n$TTL 300\n@ IN SOA ns1 hostmaster 1 7200 3600 1209600 300\n@ IN NS ns1\nns1 IN A 127.0.0.1\n";
    let dcs = format!(
        r#"
[[datacenter]]
id = "lon"
location = {{ lat = 51.5074, lon = -0.1278 }}
addresses = ["198.51.100.1"]
health_check = {{ kind = "http", url = "http://{}/health", interval = "500ms", timeout = "300ms", rise = 2, fall = 2 }}

[[datacenter]]
id = "iad"
location = {{ lat = 38.9519, lon = -77.4480 }}
addresses = ["198.51.100.2"]
health_check = {{ kind = "tcp", address = "{}", interval = "500ms", timeout = "300ms", rise = 2, fall = 2 }}

[[datacenter]]
id = "sin"
location = {{ lat = 1.3521, lon = 103.8198 }}
addresses = ["198.51.100.3"]
health_check = {{ kind = "tcp", address = "127.0.0.1:{closed}", interval = "500ms", timeout = "300ms" }}
"#,
        web.addr, tcp.addr
    );
    let services = "[[service]]\nzone = \"example.com\"\nname = \"www\"\npolicy = \"geo_nearest\"\ndatacenters = [\"lon\", \"iad\", \"sin\"]\n";
    let c = TestCluster::start(
        3,
        &[
            ("example.com.zone", zone),
            ("datacenters.toml", &dcs),
            ("services.toml", services),
        ],
    );
    (web, tcp, c)
}

#[test]
fn failed_sites_leave_the_answers_and_come_back() {
    let (web, tcp, c) = three_probed_sites();
    let nodes: Vec<NodeRef> = c.nodes.iter().map(|n| n.at.clone()).collect();

    // Every node agrees: lon and iad healthy, sin (wrong port) unhealthy.
    let start = Instant::now();
    while !(health_of(&nodes[0], "lon") == "healthy"
        && health_of(&nodes[0], "iad") == "healthy"
        && health_of(&nodes[0], "sin") == "unhealthy")
    {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "health never settled: lon {} iad {} sin {}",
            health_of(&nodes[0], "lon"),
            health_of(&nodes[0], "iad"),
            health_of(&nodes[0], "sin")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    all_answer(&nodes, &["198.51.100.1"], Duration::from_secs(5));

    // The HTTP backend fails: lon is drained from every node's answers.
    web.up.store(false, Ordering::Relaxed);
    let drained = all_answer(&nodes, &["198.51.100.2"], Duration::from_secs(10));
    eprintln!("lon drained from every node's answers {drained:?} after its backend failed");
    assert!(drained < Duration::from_secs(5), "took {drained:?}");

    // It recovers: back in the answers.
    web.up.store(true, Ordering::Relaxed);
    let back = all_answer(&nodes, &["198.51.100.1"], Duration::from_secs(10));
    eprintln!("lon back in every node's answers {back:?} after its backend recovered");
    assert!(back < Duration::from_secs(5), "took {back:?}");

    // Everything down: the service fails open with all its datacenters.
    web.up.store(false, Ordering::Relaxed);
    tcp.open.store(false, Ordering::Relaxed);
    all_answer(
        &nodes,
        &["198.51.100.1", "198.51.100.2", "198.51.100.3"],
        Duration::from_secs(10),
    );

    // The transitions are recorded with each node's opinion.
    let (status, body) =
        http_get(nodes[1].admin, "/api/v1/datacenters/lon/events").expect("events");
    assert_eq!(status, 200);
    let events: serde_json::Value = serde_json::from_str(&body).expect("json");
    let events = events.as_array().expect("a list");
    assert!(
        events
            .iter()
            .any(|e| e["to"] == "unhealthy"
                && e["opinions"].as_object().is_some_and(|o| o.len() == 3)),
        "{body}"
    );
    let (_, dc) = http_get(nodes[2].admin, "/api/v1/datacenters/lon").expect("dc");
    let dc: serde_json::Value = serde_json::from_str(&dc).expect("json");
    assert_eq!(dc["opinions"].as_array().map(|o| o.len()), Some(3), "{dc}");
}

/// The figure for the health issue's note, not a CI test: detection-to-drain time over 20
/// failures (`cargo test --test health -- --ignored --nocapture`).
#[test]
#[ignore]
fn drain_time_over_20_failures() {
    let (web, _tcp, c) = three_probed_sites();
    let nodes: Vec<NodeRef> = c.nodes.iter().map(|n| n.at.clone()).collect();
    all_answer(&nodes, &["198.51.100.1"], Duration::from_secs(15));
    let (mut drains, mut returns) = (Vec::new(), Vec::new());
    for _ in 0..20 {
        web.up.store(false, Ordering::Relaxed);
        drains.push(all_answer(
            &nodes,
            &["198.51.100.2"],
            Duration::from_secs(20),
        ));
        web.up.store(true, Ordering::Relaxed);
        returns.push(all_answer(
            &nodes,
            &["198.51.100.1"],
            Duration::from_secs(20),
        ));
    }
    drains.sort();
    returns.sort();
    eprintln!(
        "drain: median {:?}, worst {:?}; return: median {:?}, worst {:?}",
        drains[10], drains[19], returns[10], returns[19]
    );
}
