//! Network partitions, for real: three nodes, each in a network namespace a test creates,
//! joined by veth pairs to a bridge in another namespace.
//!
//! - Node 3's link is cut: it keeps answering DNS from its last state and refuses writes with
//!   503, while the majority keeps committing; once the link is back, node 3 converges.
//! - A follower cut off for several election timeouts comes back without deposing the leader
//!   (pre-vote): the majority's leader and term stay as they were.
//! - The leader cut off or killed is replaced, and a write accepted, within 6 s (the figures
//!   are printed).
//! - A health-checked backend in a namespace of its own on the same bridge is cut off from one
//!   node, then two: one node's failed probes do not drain the site, a majority's do (on every
//!   node, also the one that still reaches it), and it comes back once the routes heal.
//!
//! The addresses (10.77.0.0/24) exist only inside the namespaces a test creates; each test has
//! its own set, and the tests run one at a time. Where namespaces cannot be created (not root,
//! no CAP_SYS_ADMIN, no `ip`), a test says so and passes without running.

mod common;

use common::two_sites::{DCS, SERVICES, ZONE};

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::http;
use common::netns::{in_ns, must, Lab};

const LON: &str = "198.51.100.1";
const IAD: &str = "198.51.100.2";

/// The backend namespace's addresses: lon's HTTP check, iad's TCP check. Only the first is
/// ever cut off.
const LON_BACKEND: &str = "10.77.0.10";
const IAD_BACKEND: &str = "10.77.0.11";

/// lon checked over HTTP, iad over TCP, both against the backend namespace.
fn health_checked_dcs() -> String {
    let check = r#"interval = "500ms", timeout = "300ms", rise = 2, fall = 2"#;
    format!(
        r#"
[[datacenter]]
id = "lon"
location = {{ lat = 51.5074, lon = -0.1278 }}
addresses = ["198.51.100.1"]
health_check = {{ kind = "http", url = "http://{LON_BACKEND}/health", {check} }}

[[datacenter]]
id = "iad"
location = {{ lat = 38.9519, lon = -77.4480 }}
addresses = ["198.51.100.2"]
health_check = {{ kind = "tcp", address = "{IAD_BACKEND}:81", {check} }}
"#
    )
}

/// The tests run one at a time: each starts three nodes, and there are two cores to share.
/// (A test's lock: clippy.toml's ban is about the query path.)
#[allow(clippy::disallowed_types)]
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// How long a backend thread may live, whatever happens: bounded, like every loop here.
const BACKEND_LIFETIME: Duration = Duration::from_secs(300);

/// Listeners in the backend namespace, served from ordinary threads (a socket stays in the
/// namespace it was made in); stopped and joined on drop.
struct Backend {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Backend {
    /// Serve `listener` until stopped: `200 ok` to every HTTP request, or (`http` false) accept
    /// and close, for a TCP check.
    fn serve(&mut self, listener: TcpListener, http: bool) {
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = self.stop.clone();
        self.threads.push(std::thread::spawn(move || {
            let start = Instant::now();
            while !stop.load(Ordering::Relaxed) && start.elapsed() < BACKEND_LIFETIME {
                match listener.accept() {
                    Ok((s, _)) if http => respond_ok(s),
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        }));
    }
}

/// Read one request head (bounded), answer `200 ok` and close.
fn respond_ok(mut s: std::net::TcpStream) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// One node's view of a datacenter: its health and each node's opinion (up or not).
#[derive(Debug, PartialEq)]
struct View {
    health: String,
    up: BTreeMap<u64, bool>,
}

impl View {
    fn is(&self, health: &str, up: [bool; 3]) -> bool {
        self.health == health && self.up == BTreeMap::from([(1, up[0]), (2, up[1]), (3, up[2])])
    }
}

impl Lab {
    /// The backend namespace on the bridge: lon's HTTP responder on `LON_BACKEND:80`, iad's
    /// TCP listener on `IAD_BACKEND:81`. Checked from node 1's namespace before returning.
    fn start_backend(&mut self) -> Backend {
        let ns = self.add_namespace("be", "vb", &[LON_BACKEND, IAD_BACKEND]);
        let mut backend = Backend {
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
        };
        for (addr, http) in [((LON_BACKEND, 80), true), ((IAD_BACKEND, 81), false)] {
            let listener = in_ns(&ns, || TcpListener::bind(addr))
                .unwrap_or_else(|e| panic!("bind {addr:?} in {ns}: {e}"));
            backend.serve(listener, http);
        }
        let web = SocketAddr::from(([10, 77, 0, 10], 80));
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let r = in_ns(self.ns(1), || http(web, "GET", "/health", None, None));
            if matches!(r, Some((200, _))) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "backend not reachable from node 1: {r:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        backend
    }

    /// Three nodes of the two-site world, with `datacenters`.
    fn start_two_sites(&mut self, datacenters: &str) {
        self.start_nodes(&[
            ("example.com.zone", ZONE),
            ("datacenters.toml", datacenters),
            ("services.toml", SERVICES),
        ]);
    }

    /// A London client's answer from node `id`, asked from inside its namespace.
    fn london(&self, id: usize) -> Vec<String> {
        self.node(id)
            .dig(&["+subnet=81.2.69.142/32", "www.example.com", "A"])
            .answer_data("A")
    }

    fn patch_state(&self, id: usize, dc: &str, state: &str) -> Option<(u16, String)> {
        let body = format!("{{\"state\": \"{state}\"}}");
        self.node(id).http(
            "PATCH",
            &format!("/api/v1/datacenters/{dc}"),
            Some(("application/json", &body)),
            &[],
        )
    }

    /// Retry a write on node `id` until it is accepted (200); the time it took.
    fn write_until_accepted(&self, id: usize, dc: &str, state: &str, limit: Duration) -> Duration {
        let start = Instant::now();
        loop {
            let r = self.patch_state(id, dc, state);
            if matches!(r, Some((200, _))) {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < limit,
                "node {id} did not accept {dc}={state} within {limit:?}; last: {r:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Poll until every listed node answers `want`; the time it took.
    fn converge(&self, ids: &[usize], want: &str, limit: Duration) -> Duration {
        let start = Instant::now();
        loop {
            let answers: Vec<Vec<String>> = ids.iter().map(|&i| self.london(i)).collect();
            if answers.iter().all(|a| a == &[want]) {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < limit,
                "nodes {ids:?} did not converge on {want} within {limit:?}: {answers:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Node `id`'s view of datacenter `dc`.
    fn view(&self, id: usize, dc: &str) -> Option<View> {
        let v = self
            .node(id)
            .get_json(&format!("/api/v1/datacenters/{dc}"))?;
        let up = v["opinions"]
            .as_array()?
            .iter()
            .map(|o| Some((o["node"].as_u64()?, o["up"].as_bool()?)))
            .collect::<Option<_>>()?;
        Some(View {
            health: v["health"].as_str()?.to_string(),
            up,
        })
    }

    /// Node `id`'s opinion of `dc` as node `asked` has it: (up, reason).
    fn opinion(&self, asked: usize, dc: &str, id: usize) -> Option<(bool, String)> {
        let v = self
            .node(asked)
            .get_json(&format!("/api/v1/datacenters/{dc}"))?;
        let o = v["opinions"]
            .as_array()?
            .iter()
            .find(|o| o["node"].as_u64() == Some(id as u64))?;
        Some((
            o["up"].as_bool()?,
            o["reason"].as_str().unwrap_or("").to_string(),
        ))
    }

    /// Poll until every node's view of `dc` is `health` with opinions `up`; the time it took.
    fn views_settle(&self, dc: &str, health: &str, up: [bool; 3], limit: Duration) -> Duration {
        let start = Instant::now();
        loop {
            let views: Vec<Option<View>> = (1..=3).map(|i| self.view(i, dc)).collect();
            if views
                .iter()
                .all(|v| v.as_ref().is_some_and(|v| v.is(health, up)))
            {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < limit,
                "{dc} not {health} with opinions {up:?} on every node within {limit:?}: {views:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Make lon's backend unreachable from node `id` (a route, so connects fail at once), or
    /// reachable again.
    fn cut_backend(&self, id: usize, cut: bool) {
        let target = format!("{LON_BACKEND}/32");
        let op = if cut { "add" } else { "del" };
        must(&["-n", &self.node(id).ns, "route", op, "unreachable", &target]);
    }
}

#[test]
fn cut_off_node_serves_last_state_and_converges_after_heal() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let total = Instant::now();
    let Some(mut lab) = Lab::create("cut", 3) else {
        return;
    };
    lab.start_two_sites(DCS);
    lab.converge(&[1, 2, 3], LON, Duration::from_secs(10));
    let leader = lab
        .leader_among(&[1, 2, 3], Duration::from_secs(10))
        .expect("no leader within 10 s");
    eprintln!(
        "cluster up after {:?}; leader is node {leader}",
        total.elapsed()
    );

    // Cut node 3 off.
    lab.set_link(3, false);
    let cut = Instant::now();

    // The majority keeps committing (re-electing first if node 3 led).
    let accepted = lab.write_until_accepted(1, "lon", "drained", Duration::from_secs(15));
    let seen = lab.converge(&[1, 2], IAD, Duration::from_secs(5));
    eprintln!("majority: drain accepted after {accepted:?}, answered by both after {seen:?} more");

    // Node 3 keeps answering from its last state, stays healthy, and refuses writes.
    assert_eq!(lab.london(3), [LON], "the cut-off node lost its last state");
    assert_eq!(
        lab.node(3).healthz(),
        Some(200),
        "the cut-off node is not healthy"
    );
    let t = Instant::now();
    let refused = lab.patch_state(3, "iad", "drained");
    let took = t.elapsed();
    let (status, body) = refused.expect("node 3's admin answered");
    assert_eq!(status, 503, "a write on the cut-off node: {body}");
    assert!(body.contains("\"error\""), "{body}");
    assert!(took < Duration::from_secs(10), "the 503 took {took:?}");
    eprintln!("cut-off node: write refused with 503 after {took:?}");
    assert_eq!(lab.london(3), [LON], "the cut-off node lost its last state");
    assert_eq!(
        lab.node(3).healthz(),
        Some(200),
        "the cut-off node is not healthy"
    );
    assert_eq!(lab.london(1), [IAD]);
    eprintln!("partition lasted {:?}", cut.elapsed());

    // Heal: node 3 converges on the majority's state.
    lab.set_link(3, true);
    let caught_up = lab.converge(&[3], IAD, Duration::from_secs(10));
    eprintln!("healed: node 3 answers iad after {caught_up:?}");
    lab.converge(&[1, 2, 3], IAD, Duration::from_secs(2));

    // And it is a full member again: a write through node 3 reaches everyone.
    let accepted = lab.write_until_accepted(3, "lon", "active", Duration::from_secs(15));
    let seen = lab.converge(&[1, 2, 3], LON, Duration::from_secs(5));
    eprintln!("write via node 3 accepted after {accepted:?}, seen by all after {seen:?} more");

    // Failover, measured: the leader cut off (twice) or killed (twice); the time from the
    // fault to a write accepted by the other two.
    let mut figures = Vec::new();
    for round in 0..4 {
        let (leader, term) = lab.agreed_leader(&[1, 2, 3], Duration::from_secs(10));
        let leader = leader as usize;
        let other = if leader == 1 { 2 } else { 1 };
        let cut = round % 2 == 0;
        if cut {
            lab.set_link(leader, false);
        } else {
            lab.node_mut(leader).kill9();
        }
        let state = if round % 2 == 0 { "drained" } else { "active" };
        let took = lab.write_until_accepted(other, "lon", state, Duration::from_secs(15));
        let rest: Vec<usize> = (1..=3).filter(|&i| i != leader).collect();
        let (new_leader, new_term) = lab.agreed_leader(&rest, Duration::from_secs(5));
        eprintln!(
            "failover: leader {leader} (term {term}) {}: a write accepted via node {other} after {took:?}; node {new_leader} leads term {new_term}",
            if cut { "cut off" } else { "killed" }
        );
        figures.push(took);
        if cut {
            lab.set_link(leader, true);
        } else {
            lab.node_mut(leader).restart();
            lab.node_mut(leader).wait_healthy(Duration::from_secs(30));
        }
        // The old leader rejoins under the new one.
        lab.agreed_leader(&[1, 2, 3], Duration::from_secs(10));
    }
    for line in lab.log_lines(&["pre-vote won", "this node is the leader", "election"]) {
        eprintln!("{line}");
    }
    figures.sort();
    let (median, worst) = (figures[figures.len() / 2], figures[figures.len() - 1]);
    eprintln!(
        "failover (fault to a write accepted): {figures:?}; median {median:?}, worst {worst:?}"
    );
    assert!(
        worst < Duration::from_secs(6),
        "a failover took {worst:?}: {figures:?}"
    );
    eprintln!("total {:?}", total.elapsed());
}

/// Pre-vote (Raft thesis §9.6): a follower cut off for several election timeouts never
/// raises its term, so when it comes back the leader and the term of the majority stay as
/// they were, and the node follows that leader again. Without pre-vote the returning node's
/// higher term makes the leader step down (openraft 0.9 takes a higher vote in a
/// replication reply, whatever its leader lease).
#[test]
fn returning_node_does_not_depose_the_leader_prevote() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let total = Instant::now();
    let Some(mut lab) = Lab::create("back", 3) else {
        return;
    };
    lab.start_two_sites(DCS);
    let (leader, term) = lab.agreed_leader(&[1, 2, 3], Duration::from_secs(15));
    let away = (1..=3).rev().find(|&i| i != leader as usize).unwrap_or(3);
    let majority: Vec<usize> = (1..=3).filter(|&i| i != away).collect();
    eprintln!("node {leader} leads term {term}; cutting node {away} off");

    // Cut off for five election timeouts: the majority's leader and term never change.
    lab.set_link(away, false);
    let cut = Instant::now();
    let mut away_terms = BTreeSet::new();
    while cut.elapsed() < Duration::from_secs(6) {
        for &i in &majority {
            let seen = lab.node(i).leader_term();
            assert_eq!(
                seen,
                Some((Some(leader), term)),
                "node {i} while node {away} is cut off"
            );
        }
        if let Some((_, t)) = lab.node(away).leader_term() {
            away_terms.insert(t);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "node {away} cut off for {:?}; its terms meanwhile: {away_terms:?}",
        cut.elapsed()
    );
    // Pre-vote: alone, it never won a majority's yes, so it never raised its term.
    assert!(
        !away_terms.is_empty() && away_terms.iter().all(|&t| t == term),
        "node {away} raised its term while cut off: {away_terms:?} (term {term})"
    );

    // Back: for five more election timeouts the majority keeps its leader and term, and the
    // returning node follows that leader in that term.
    lab.set_link(away, true);
    let healed = Instant::now();
    let mut rejoined = None;
    while healed.elapsed() < Duration::from_secs(6) {
        for &i in &majority {
            let seen = lab.node(i).leader_term();
            assert_eq!(
                seen,
                Some((Some(leader), term)),
                "node {i} after node {away} came back (its terms while away: {away_terms:?})"
            );
        }
        if rejoined.is_none() && lab.node(away).leader_term() == Some((Some(leader), term)) {
            rejoined = Some(healed.elapsed());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let rejoined = rejoined.unwrap_or_else(|| {
        panic!(
            "node {away} does not follow node {leader} in term {term} after it came back: {:?}",
            lab.node(away).leader_term()
        )
    });
    eprintln!("healed: node {away} follows node {leader} in term {term} after {rejoined:?}");
    let accepted = lab.write_until_accepted(away, "lon", "drained", Duration::from_secs(10));
    lab.converge(&[1, 2, 3], IAD, Duration::from_secs(5));
    eprintln!(
        "a write via node {away} accepted after {accepted:?}; total {:?}",
        total.elapsed()
    );
}

#[test]
fn health_needs_a_majority_to_drain_a_site() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let total = Instant::now();
    let Some(mut lab) = Lab::create("hc", 3) else {
        return;
    };
    let _backend = lab.start_backend();
    lab.start_two_sites(&health_checked_dcs());
    let settled = lab.views_settle("lon", "healthy", [true; 3], Duration::from_secs(20));
    lab.views_settle("iad", "healthy", [true; 3], Duration::from_secs(5));
    lab.converge(&[1, 2, 3], LON, Duration::from_secs(5));
    eprintln!(
        "cluster up, lon healthy with 3 opinions after {:?} ({settled:?} after the nodes)",
        total.elapsed()
    );

    // Node 3 alone loses the backend: its opinion goes down, the site stays.
    lab.cut_backend(3, true);
    let cut = Instant::now();
    let reason = loop {
        if let Some((false, reason)) = lab.opinion(1, "lon", 3) {
            break reason;
        }
        assert!(
            cut.elapsed() < Duration::from_secs(10),
            "node 3's opinion of lon not down within 10 s: {:?}",
            lab.view(1, "lon")
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    eprintln!("node 3 sees lon down after {:?} ({reason})", cut.elapsed());
    lab.views_settle(
        "lon",
        "healthy",
        [true, true, false],
        Duration::from_secs(5),
    );
    let watch = Instant::now();
    let mut rounds = 0;
    while watch.elapsed() < Duration::from_secs(3) {
        for i in 1..=3 {
            let v = lab.view(i, "lon");
            assert!(
                v.as_ref()
                    .is_some_and(|v| v.is("healthy", [true, true, false])),
                "one node's failed probes changed lon, on node {i}: {v:?}"
            );
            assert_eq!(
                lab.london(i),
                [LON],
                "node {i} left lon with one node's opinion down"
            );
        }
        rounds += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "lon stayed healthy and answered by every node for {:?} ({rounds} rounds)",
        watch.elapsed()
    );

    // Node 2 loses it too: a majority sees it down, and every node drains it, node 1 as well.
    lab.cut_backend(2, true);
    let drained = lab.converge(&[1, 2, 3], IAD, Duration::from_secs(10));
    eprintln!("second node cut: every node answers iad after {drained:?}");
    assert!(
        drained < Duration::from_secs(5),
        "draining took {drained:?}"
    );
    lab.views_settle(
        "lon",
        "unhealthy",
        [true, false, false],
        Duration::from_secs(2),
    );
    lab.views_settle("iad", "healthy", [true; 3], Duration::from_secs(2));

    // Heal both: lon is healthy again and back in every node's answers.
    lab.cut_backend(2, false);
    lab.cut_backend(3, false);
    let back = lab.converge(&[1, 2, 3], LON, Duration::from_secs(10));
    eprintln!("healed: every node answers lon after {back:?}");
    assert!(back < Duration::from_secs(5), "coming back took {back:?}");
    lab.views_settle("lon", "healthy", [true; 3], Duration::from_secs(5));
    eprintln!("total {:?}", total.elapsed());
}
