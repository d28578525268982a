//! Network namespaces for cluster tests: each node in a namespace of its own, joined by a
//! veth pair to a bridge in another namespace (10.77.0.N/24). A node's link can be cut at
//! the bridge end (a silent partition: packets are dropped, connections time out) and
//! restored; its process can be killed, restarted on the same data, paused and resumed.
//! The test talks to a node from inside the node's namespace (a thread that entered it).
//!
//! Everything a [`Lab`] made is killed and deleted when it is dropped, also when the test
//! panics; namespaces an earlier, killed run left behind are deleted at the next start.
//! Where namespaces cannot be made (not root, no `ip`), [`Lab::create`] fails the test,
//! unless `MERIDIAN_SKIP_NETNS=1` says to skip on purpose: then it says so and returns
//! `None`.

use std::fs::File;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{geoip_db, http, http_with, NotReady, Proc, TOKEN};

/// Run `ip ARGS…`; its stderr on failure.
pub fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `ip`: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

pub fn must(args: &[&str]) {
    if let Err(e) = ip(args) {
        panic!("{e}");
    }
}

/// Run `f` on a thread that has entered network namespace `ns`: its sockets, and the
/// processes it spawns (`dig`), live there. The test's own thread stays where it was.
pub fn in_ns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    let path = format!("/var/run/netns/{ns}");
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
            // SAFETY: setns on a valid descriptor; it changes only this thread's namespace.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {ns}: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .expect("namespace thread")
    })
}

/// Delete namespaces a killed earlier run of a test left behind (its pid is gone).
fn remove_stale_namespaces() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(pid) = name.strip_prefix("mrd-").and_then(|r| r.split('-').next()) else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

/// Start `meridian serve` inside `ns`, its stderr appended to `log`; the kernel kills it if
/// the test process dies first.
fn spawn_in_ns(ns: &str, config: &Path, log: &Path) -> Child {
    use std::os::unix::process::CommandExt;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns])
        .arg(env!("CARGO_BIN_EXE_meridian"))
        .arg("serve")
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec. `ip netns
    // exec` execs the command in the same process (no fork), so the death signal stays set
    // and the child's pid is meridian's.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cmd.spawn().expect("spawn ip netns exec meridian")
}

/// One node in its namespace.
pub struct NsNode {
    pub id: u64,
    pub ns: String,
    pub dns: SocketAddr,
    pub admin: SocketAddr,
    pub config: PathBuf,
    pub log: PathBuf,
    child: Proc,
}

impl NsNode {
    /// SIGKILL, no goodbye.
    pub fn kill9(&mut self) {
        self.child.kill9();
    }

    /// Start again on the same data (killing it first if it runs).
    pub fn restart(&mut self) {
        self.kill9();
        self.child = Proc::new(spawn_in_ns(&self.ns, &self.config, &self.log));
    }

    /// SIGSTOP: the process holds its sockets but answers nothing.
    pub fn pause(&self) {
        self.child.pause();
    }

    /// SIGCONT after [`NsNode::pause`].
    pub fn resume(&self) {
        self.child.resume();
    }

    pub fn is_running(&mut self) -> bool {
        self.child.is_running()
    }

    /// An HTTP request to the node's admin API, from inside its namespace.
    pub fn http(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, &str)>,
        headers: &[(&str, &str)],
    ) -> Option<(u16, String)> {
        in_ns(&self.ns, || {
            http_with(self.admin, method, path, body, Some(TOKEN), headers)
        })
    }

    pub fn healthz(&self) -> Option<u16> {
        healthz_in(&self.ns, self.admin)
    }

    /// `GET path` on the node's admin API, from inside its namespace, parsed; `None` when
    /// it does not answer, or not with JSON.
    pub fn get_json(&self, path: &str) -> Option<serde_json::Value> {
        let (_, body) = self.http("GET", path, None, &[])?;
        serde_json::from_str(&body).ok()
    }

    /// `GET /api/v1/cluster`, parsed.
    pub fn cluster(&self) -> Option<serde_json::Value> {
        self.get_json("/api/v1/cluster")
    }

    /// The leader and term this node reports.
    pub fn leader_term(&self) -> Option<(Option<u64>, u64)> {
        let v = self.cluster()?;
        Some((v["leader"].as_u64(), v["term"].as_u64()?))
    }

    /// `dig` at the node, from inside its namespace.
    pub fn dig(&self, args: &[&str]) -> super::Dig {
        in_ns(&self.ns, || super::dig_at(self.dns, args))
    }

    /// Wait until `/healthz` answers 200; panics with the log's tail after `limit`.
    pub fn wait_healthy(&mut self, limit: Duration) {
        let (ns, admin) = (self.ns.clone(), self.admin);
        match self
            .child
            .wait_for(limit, || healthz_in(&ns, admin) == Some(200))
        {
            Ok(()) => {}
            Err(NotReady::Exited(_)) => {
                panic!("node {} exited:\n{}", self.id, tail(&self.log, 40))
            }
            Err(NotReady::Timeout) => panic!(
                "node {} not healthy within {limit:?}:\n{}",
                self.id,
                tail(&self.log, 40)
            ),
        }
    }
}

/// The status of `/healthz` at `admin`, asked from inside namespace `ns`.
fn healthz_in(ns: &str, admin: SocketAddr) -> Option<u16> {
    in_ns(ns, || http(admin, "GET", "/healthz", None, None)).map(|r| r.0)
}

/// The last `n` lines of a log file.
pub fn tail(path: &Path, n: usize) -> String {
    let log = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = log.lines().rev().take(n).collect();
    lines.into_iter().rev().collect::<Vec<_>>().join("\n")
}

/// Everything a test made: killed and deleted on drop, also when the test panics.
pub struct Lab {
    pub dir: tempfile::TempDir,
    pub tag: String,
    pub bridge_ns: String,
    pub nodes: Vec<NsNode>,
    node_ns: Vec<String>,
    /// Namespaces added with [`Lab::add_namespace`].
    extra_ns: Vec<String>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        for n in &mut self.nodes {
            n.kill9();
            if panicking {
                eprintln!("--- {} log (last 40 lines) ---\n{}", n.ns, tail(&n.log, 40));
            }
        }
        let hosts = self.node_ns.iter().chain(&self.extra_ns);
        for ns in hosts.chain(std::iter::once(&self.bridge_ns)) {
            if let Err(e) = ip(&["netns", "del", ns]) {
                eprintln!("cleanup: {e}");
            }
        }
    }
}

/// Node `i`'s address on the bridge.
pub fn node_ip(i: u8) -> [u8; 4] {
    [10, 77, 0, i]
}

impl Lab {
    /// The bridge and `n` node namespaces (on 10.77.0.1…n), named after the test process and
    /// `label`. Where namespaces cannot be made the test fails (it needs root: run
    /// `scripts/test.sh` as root, as CI does), unless `MERIDIAN_SKIP_NETNS=1` says to skip on purpose:
    /// then `None`, after saying so.
    pub fn create(label: &str, n: u8) -> Option<Lab> {
        remove_stale_namespaces();
        let tag = format!("mrd-{}-{label}", std::process::id());
        let bridge_ns = format!("{tag}-br");
        if let Err(e) = ip(&["netns", "add", &bridge_ns]) {
            assert!(
                std::env::var_os("MERIDIAN_SKIP_NETNS").is_some_and(|v| v == "1"),
                "cannot create network namespaces (run as root, or set MERIDIAN_SKIP_NETNS=1 to skip): {e}"
            );
            eprintln!("skipping on MERIDIAN_SKIP_NETNS=1: cannot create network namespaces: {e}");
            return None;
        }
        let mut lab = Lab {
            dir: tempfile::tempdir().expect("temp dir"),
            tag: tag.clone(),
            bridge_ns: bridge_ns.clone(),
            nodes: Vec::new(),
            node_ns: Vec::new(),
            extra_ns: Vec::new(),
        };
        let br = bridge_ns.as_str();
        must(&["-n", br, "link", "set", "lo", "up"]);
        must(&["-n", br, "link", "add", "br0", "type", "bridge"]);
        must(&["-n", br, "link", "set", "br0", "up"]);
        for i in 1..=n {
            let ns = format!("{tag}-{i}");
            must(&["netns", "add", &ns]);
            lab.node_ns.push(ns.clone());
            lab.attach(&ns, &format!("v{i}"), &[&format!("10.77.0.{i}")]);
        }
        Some(lab)
    }

    /// Another namespace on the bridge (`suffix` names it, `port` is its bridge port) with
    /// `addrs`; deleted with the lab.
    pub fn add_namespace(&mut self, suffix: &str, port: &str, addrs: &[&str]) -> String {
        let ns = format!("{}-{suffix}", self.tag);
        must(&["netns", "add", &ns]);
        self.extra_ns.push(ns.clone());
        self.attach(&ns, port, addrs);
        ns
    }

    /// Join namespace `ns` to the bridge: its `eth0`, the bridge's `port`, `addrs` (/24).
    fn attach(&self, ns: &str, port: &str, addrs: &[&str]) {
        let br = self.bridge_ns.as_str();
        must(&[
            "link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", port, "netns", br,
        ]);
        must(&["-n", br, "link", "set", port, "master", "br0"]);
        must(&["-n", br, "link", "set", port, "up"]);
        for a in addrs {
            must(&["-n", ns, "addr", "add", &format!("{a}/24"), "dev", "eth0"]);
        }
        must(&["-n", ns, "link", "set", "eth0", "up"]);
        must(&["-n", ns, "link", "set", "lo", "up"]);
    }

    /// Write `files` into the zones directory and start one node per namespace, all named
    /// as initial peers, Raft with a secret (it crosses addresses other than loopback); wait
    /// until every node is healthy.
    pub fn start_nodes(&mut self, files: &[(&str, &str)]) {
        let dir = self.dir.path().to_path_buf();
        let zones = dir.join("zones");
        std::fs::create_dir_all(&zones).expect("zones dir");
        for (name, text) in files {
            std::fs::write(zones.join(name), text).expect("write file");
        }
        let n = self.node_ns.len() as u8;
        let addr = |i: u8, port: u16| SocketAddr::from((node_ip(i), port));
        let peers = (1..=n)
            .map(|i| format!("\"{i}\" = \"{}\"", addr(i, 9053)))
            .collect::<Vec<_>>()
            .join(", ");
        for i in 1..=n {
            let (dns, admin, raft) = (addr(i, 53), addr(i, 8053), addr(i, 9053));
            let config = format!(
                "node_id = {i}\ndata_dir = \"data{i}\"\n\n[dns]\nlisten = [\"{dns}\"]\n\n[admin]\nlisten = \"{admin}\"\ntoken = \"{TOKEN}\"\n\n[raft]\nlisten = \"{raft}\"\npeers = {{ {peers} }}\n# Raft across addresses other than loopback needs TLS or a secret.\nsecret = \"partition-test\"\n\n[geoip]\ndatabase = \"{}\"\n\n[bootstrap]\ndir = \"zones\"\n",
                geoip_db().display()
            );
            let path = dir.join(format!("node{i}.toml"));
            std::fs::write(&path, config).expect("write config");
            let log = dir.join(format!("node{i}.log"));
            let ns = self.node_ns[i as usize - 1].clone();
            let child = spawn_in_ns(&ns, &path, &log);
            self.nodes.push(NsNode {
                id: i as u64,
                ns,
                dns,
                admin,
                config: path,
                log,
                child: Proc::new(child),
            });
        }
        for node in &mut self.nodes {
            node.wait_healthy(Duration::from_secs(30));
        }
    }

    /// Node `id`'s namespace (also before the nodes start).
    pub fn ns(&self, id: usize) -> &str {
        &self.node_ns[id - 1]
    }

    pub fn node(&self, id: usize) -> &NsNode {
        &self.nodes[id - 1]
    }

    pub fn node_mut(&mut self, id: usize) -> &mut NsNode {
        &mut self.nodes[id - 1]
    }

    /// The leader some node among `ids` reports, polled up to `limit`.
    pub fn leader_among(&self, ids: &[usize], limit: Duration) -> Option<u64> {
        super::poll(limit, || {
            ids.iter()
                .find_map(|&i| self.node(i).leader_term().and_then(|(l, _)| l))
        })
    }

    /// Poll until every node in `ids` reports the same leader, in the same term, and that
    /// leader is among `ids`; (leader, term).
    pub fn agreed_leader(&self, ids: &[usize], limit: Duration) -> (u64, u64) {
        let deadline = Instant::now() + limit;
        loop {
            let seen: Vec<Option<(Option<u64>, u64)>> =
                ids.iter().map(|&i| self.node(i).leader_term()).collect();
            if let Some(Some((Some(l), t))) = seen.first() {
                if ids.contains(&(*l as usize)) && seen.iter().all(|s| *s == Some((Some(*l), *t))) {
                    return (*l, *t);
                }
            }
            assert!(
                Instant::now() < deadline,
                "nodes {ids:?} did not agree on a leader among them within {limit:?}: {seen:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every node's log lines that contain one of `patterns`, prefixed with the node's id.
    pub fn log_lines(&self, patterns: &[&str]) -> Vec<String> {
        super::log_lines(self.nodes.iter().map(|n| (n.id, n.log.as_path())), patterns)
    }

    /// Cut (or restore) node `id`'s only link, at the bridge end: a silent partition.
    pub fn set_link(&self, id: usize, up: bool) {
        let port = format!("v{id}");
        must(&[
            "-n",
            &self.bridge_ns,
            "link",
            "set",
            &port,
            if up { "up" } else { "down" },
        ]);
    }
}
