//! Test harness: start the real `meridian` binary on free loopback ports with a config and
//! zone directory of the test's own, wait for `/healthz`, and ask it with the real `dig`.
#![allow(dead_code)]

pub mod netns;
pub mod unbound;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running node. Killed (SIGKILL) when dropped, and when the test process dies.
pub struct Node {
    /// First, so dropped (the process killed) before its directory is deleted.
    child: Proc,
    pub dir: tempfile::TempDir,
    pub at: NodeRef,
}

/// Where a node listens; what tests talk to.
#[derive(Clone, Debug)]
pub struct NodeRef {
    pub dns: SocketAddr,
    pub admin: SocketAddr,
    pub raft: SocketAddr,
    pub log_path: PathBuf,
}

impl NodeRef {
    /// `dig @node -p PORT +norec +time=2 +tries=1 ARGS…`
    pub fn dig(&self, args: &[&str]) -> Dig {
        dig_at(self.dns, args)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl std::ops::Deref for Node {
    type Target = NodeRef;
    fn deref(&self) -> &NodeRef {
        &self.at
    }
}

/// One node shared by every test of a file: started once, by a thread that lives as long as
/// the test process (the child dies with it).
pub fn shared(cell: &'static std::sync::OnceLock<NodeRef>, make: fn() -> Node) -> &'static NodeRef {
    cell.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let node = make();
            let _ = tx.send(node.at.clone());
            loop {
                std::thread::park();
            }
        });
        rx.recv().expect("shared node started")
    })
}

/// A child process of the test's own, or none (not started, or gone): what a node, a
/// cluster node, a node in a namespace and Unbound each hold. Killed (SIGKILL) and reaped
/// when dropped.
#[derive(Default)]
pub struct Proc(Option<Child>);

/// Why [`Proc::wait_for`] gave up.
#[derive(Debug)]
pub enum NotReady {
    /// The process is gone (its status, when this wait saw it exit).
    Exited(Option<std::process::ExitStatus>),
    /// Still running, but not ready within the limit.
    Timeout,
}

impl Proc {
    pub fn new(child: Child) -> Proc {
        Proc(Some(child))
    }

    /// Send `signal` (nothing when there is no process); no `kill` binary needed.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        if let Some(c) = &self.0 {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), signal);
        }
    }

    /// SIGSTOP: the process holds its sockets but answers nothing (a hung or paused node).
    pub fn pause(&self) {
        self.signal(nix::sys::signal::Signal::SIGSTOP);
    }

    /// SIGCONT after [`Proc::pause`].
    pub fn resume(&self) {
        self.signal(nix::sys::signal::Signal::SIGCONT);
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.0.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// The exit status once the process has exited (there is no process after that).
    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.0.as_mut()?.try_wait().ok()??;
        self.0 = None;
        Some(status)
    }

    /// SIGKILL, no goodbye; reaped.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, and wait (bounded) for the exit status; `None` when there was no process or
    /// it still runs after `limit`.
    pub fn terminate(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        self.0.as_ref()?;
        self.signal(nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Poll `ready` every 50 ms until it holds, for at most `limit`; give up at once when
    /// the process is gone.
    pub fn wait_for(
        &mut self,
        limit: Duration,
        mut ready: impl FnMut() -> bool,
    ) -> Result<(), NotReady> {
        let deadline = Instant::now() + limit;
        loop {
            if !self.is_running() {
                return Err(NotReady::Exited(self.exited()));
            }
            if ready() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(NotReady::Timeout);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Poll `f` until it gives `Some`, for at most 10 s; fails the test with `what` after that.
pub fn eventually<T>(what: &str, f: impl FnMut() -> Option<T>) -> T {
    eventually_within(Duration::from_secs(10), what, f)
}

/// [`eventually`] with a limit of the caller's.
pub fn eventually_within<T>(limit: Duration, what: &str, f: impl FnMut() -> Option<T>) -> T {
    poll(limit, f).unwrap_or_else(|| panic!("not within {limit:?}: {what}"))
}

/// Poll `f` every 25 ms until it gives `Some`; `None` once `limit` has passed (so bounded
/// in time, and in count).
pub fn poll<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Poll `f` until it holds: how long that took, or `None` once `limit` has passed.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    poll(limit, || f().then(|| start.elapsed()))
}

/// A loopback port free for both UDP and TCP, below the kernel's ephemeral range (32768 and
/// up by default), so that no outgoing connection of another test takes it between now and
/// the server's bind.
pub fn free_port() -> u16 {
    for _ in 0..500 {
        let port = 20_000 + rand::random::<u16>() % 12_000;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let Ok(_tcp) = TcpListener::bind(addr) else {
            continue;
        };
        if UdpSocket::bind(addr).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port found");
}

pub fn geoip_db() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("geoip/GeoIP2-City-Test.mmdb")
}

/// The files a node starts from: zone files and TOML definitions, by file name.
pub struct Setup<'a> {
    pub files: &'a [(&'a str, &'a str)],
    /// Extra TOML appended to the generated config; one with its own `[geoip]` section
    /// replaces the default database, and the keys of a `[dns]` or `[admin]` section in it
    /// join the generated table.
    pub extra_config: &'a str,
}

impl Node {
    /// A node on the defaults with an `example.com` zone, datacenters and services.
    pub fn start_example(zone: &str, datacenters: &str, services: &str) -> Node {
        Node::start(&Setup {
            files: &[
                ("example.com.zone", zone),
                ("datacenters.toml", datacenters),
                ("services.toml", services),
            ],
            extra_config: "",
        })
    }

    pub fn start(setup: &Setup<'_>) -> Node {
        Node::start_limited(setup, None)
    }

    /// [`Node::start`] with the open-file limit (soft and hard) of the process set to
    /// `open_files`, when given: to make the node run out of descriptors.
    pub fn start_limited(setup: &Setup<'_>, open_files: Option<u64>) -> Node {
        // A port picked free can still be taken before the node binds it: start again on
        // fresh ports then (bounded).
        for _ in 0..3 {
            let mut node = Node::spawn_with(setup, &[], open_files);
            match node.try_wait_healthy(Duration::from_secs(30)) {
                Ok(()) => return node,
                Err(log) if log.contains("Address already in use") => continue,
                Err(log) => panic!("{log}"),
            }
        }
        panic!("no node started: its ports were taken three times");
    }

    /// Start a node with extra environment variables, without waiting for it to be ready.
    pub fn spawn(setup: &Setup<'_>, env: &[(&str, &str)]) -> Node {
        Node::spawn_with(setup, env, None)
    }

    fn spawn_with(setup: &Setup<'_>, env: &[(&str, &str)], open_files: Option<u64>) -> Node {
        let dir = tempfile::tempdir().expect("temp dir");
        let zones = dir.path().join("zones");
        std::fs::create_dir_all(&zones).expect("zones dir");
        for (name, text) in setup.files {
            std::fs::write(zones.join(name), text).expect("write zone");
        }
        let port = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        let (dns, admin, raft) = (port(free_port()), port(free_port()), port(free_port()));
        let geoip = if setup.extra_config.contains("[geoip]") {
            String::new()
        } else {
            format!("[geoip]\ndatabase = \"{}\"\n", geoip_db().display())
        };
        let (dns_extra, admin_extra, extra) = split_sections(setup.extra_config);
        let config = format!(
            "node_id = 1\ndata_dir = \"data\"\n\n[dns]\nlisten = [\"{dns}\"]\n{dns_extra}\n[admin]\nlisten = \"{admin}\"\ntoken = \"test-token\"\n{admin_extra}\n[raft]\nlisten = \"{raft}\"\npeers = {{ \"1\" = \"{raft}\" }}\n\n{geoip}\n[bootstrap]\ndir = \"zones\"\n{extra}\n"
        );
        let config_path = dir.path().join("node.toml");
        std::fs::write(&config_path, config).expect("write config");
        let log = std::fs::File::create(dir.path().join("node.log")).expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_meridian"));
        cmd.arg("serve")
            .arg("--config")
            .arg(&config_path)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(n) = open_files {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    let lim = libc::rlimit {
                        rlim_cur: n,
                        rlim_max: n,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = spawn_owned(&mut cmd);
        let log_path = dir.path().join("node.log");
        Node {
            dir,
            at: NodeRef {
                dns,
                admin,
                raft,
                log_path,
            },
            child: Proc::new(child),
        }
    }

    /// The node's config file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("node.toml")
    }

    pub fn wait_healthy(&mut self, limit: Duration) {
        if let Err(why) = self.try_wait_healthy(limit) {
            panic!("{why}");
        }
    }

    /// Wait until `/healthz` says 200; the error says why not, with the node's log.
    pub fn try_wait_healthy(&mut self, limit: Duration) -> Result<(), String> {
        let admin = self.at.admin;
        match self.child.wait_for(limit, || healthz(admin)) {
            Ok(()) => Ok(()),
            Err(NotReady::Exited(status)) => Err(format!(
                "meridian exited early ({}):\n{}",
                status.map_or("gone".to_string(), |s| s.to_string()),
                self.log()
            )),
            Err(NotReady::Timeout) => Err(format!(
                "meridian not healthy within {limit:?}:\n{}",
                self.log()
            )),
        }
    }

    /// Send a signal to the node (while it runs).
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        self.child.signal(signal);
    }

    /// Whether the node's process still runs.
    pub fn is_running(&mut self) -> bool {
        self.child.is_running()
    }

    /// Send SIGTERM and wait (bounded) for the exit status.
    pub fn terminate(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        self.child.terminate(limit)
    }
}

/// Whether the admin listener at `admin` answers `/healthz` with 200.
pub fn healthz(admin: SocketAddr) -> bool {
    http_get(admin, "/healthz").map(|(s, _)| s) == Some(200)
}

/// The bodies of a `[dns]` and an `[admin]` section in `extra` (each up to the next
/// table), and the rest.
fn split_sections(extra: &str) -> (String, String, String) {
    let (mut dns, mut admin, mut rest) = (String::new(), String::new(), String::new());
    let mut into = 2;
    for line in extra.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            into = match t {
                "[dns]" => 0,
                "[admin]" => 1,
                _ => 2,
            };
            if into < 2 {
                continue;
            }
        }
        let target = match into {
            0 => &mut dns,
            1 => &mut admin,
            _ => &mut rest,
        };
        target.push_str(line);
        target.push('\n');
    }
    (dns, admin, rest)
}

/// Spawn a child that the kernel kills if this test process dies first.
pub fn spawn_owned(cmd: &mut Command) -> Child {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cmd.spawn().expect("spawn meridian")
}

/// A minimal HTTP/1.1 GET: (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let status = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    Some((status, body))
}

/// What dig printed, sorted out.
#[derive(Debug, Default)]
pub struct Dig {
    pub raw: String,
    pub status: String,
    pub flags: Vec<String>,
    pub question: Vec<String>,
    pub answer: Vec<Rr>,
    pub authority: Vec<Rr>,
    pub additional: Vec<Rr>,
    /// The `;; OPT PSEUDOSECTION:` lines.
    pub opt: Vec<String>,
    pub id: u16,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Rr {
    pub name: String,
    pub ttl: u32,
    pub rtype: String,
    pub data: String,
}

impl Dig {
    pub fn has_flag(&self, f: &str) -> bool {
        self.flags.iter().any(|x| x == f)
    }

    pub fn answer_data(&self, rtype: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .answer
            .iter()
            .filter(|r| r.rtype == rtype)
            .map(|r| r.data.clone())
            .collect();
        v.sort();
        v
    }

    pub fn opt_line(&self, key: &str) -> Option<&str> {
        self.opt
            .iter()
            .find(|l| l.trim_start_matches("; ").starts_with(key))
            .map(|s| s.as_str())
    }
}

pub fn dig_at(server: SocketAddr, args: &[&str]) -> Dig {
    let out = Command::new("dig")
        .arg(format!("@{}", server.ip()))
        .arg("-p")
        .arg(server.port().to_string())
        .args(["+norec", "+time=2", "+tries=1", "+nocookie"])
        .args(args)
        .output()
        .expect("run dig (install bind9-dnsutils)");
    parse_dig(&String::from_utf8_lossy(&out.stdout))
}

pub fn parse_dig(text: &str) -> Dig {
    let mut d = Dig {
        raw: text.to_string(),
        ..Dig::default()
    };
    let mut section = "";
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix(";; ->>HEADER<<- ") {
            for part in rest.split(", ") {
                if let Some(s) = part.strip_prefix("status: ") {
                    d.status = s.to_string();
                }
                if let Some(s) = part.strip_prefix("id: ") {
                    d.id = s.trim().parse().unwrap_or(0);
                }
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix(";; flags:") {
            let flags = rest.split(';').next().unwrap_or("");
            d.flags = flags.split_whitespace().map(str::to_string).collect();
            continue;
        }
        if line.starts_with(";; ") && line.ends_with("SECTION:") || line == ";; OPT PSEUDOSECTION:"
        {
            section = if line.contains("OPT") {
                "opt"
            } else if line.contains("QUESTION") {
                "question"
            } else if line.contains("ANSWER") {
                "answer"
            } else if line.contains("AUTHORITY") {
                "authority"
            } else {
                "additional"
            };
            continue;
        }
        if line.trim().is_empty() {
            if section != "opt" {
                section = "";
            }
            continue;
        }
        match section {
            "opt" => {
                if line.starts_with(";; ") {
                    section = "";
                    if line.ends_with("SECTION:") {
                        section = if line.contains("QUESTION") {
                            "question"
                        } else {
                            ""
                        };
                    }
                } else {
                    d.opt.push(line.to_string());
                }
            }
            "question" => d.question.push(line.trim_start_matches(';').to_string()),
            "answer" | "authority" | "additional" => {
                let mut it = line.split_whitespace();
                let name = it.next().unwrap_or("").to_string();
                let ttl = it.next().and_then(|t| t.parse().ok()).unwrap_or(0);
                let _class = it.next();
                let rtype = it.next().unwrap_or("").to_string();
                let data = it.collect::<Vec<_>>().join(" ");
                let rr = Rr {
                    name,
                    ttl,
                    rtype,
                    data,
                };
                match section {
                    "answer" => d.answer.push(rr),
                    "authority" => d.authority.push(rr),
                    _ => d.additional.push(rr),
                }
            }
            _ => {}
        }
    }
    d
}

/// Send raw bytes over UDP and wait (bounded) for one reply.
pub fn udp_exchange(server: SocketAddr, packet: &[u8], wait: Duration) -> Option<Vec<u8>> {
    let sock = UdpSocket::bind("127.0.0.1:0").ok()?;
    sock.set_read_timeout(Some(wait)).ok()?;
    sock.send_to(packet, server).ok()?;
    let mut buf = vec![0u8; 65535];
    let (n, _) = sock.recv_from(&mut buf).ok()?;
    buf.truncate(n);
    Some(buf)
}

/// A minimal HTTP/1.1 request: (status, body).
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<(&str, &str)>,
    token: Option<&str>,
) -> Option<(u16, String)> {
    http_with(addr, method, path, body, token, &[])
}

/// [`http`] with extra headers.
pub fn http_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<(&str, &str)>,
    token: Option<&str>,
    headers: &[(&str, &str)],
) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(15))).ok()?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    let (ctype, data) = body.unwrap_or(("application/json", ""));
    if body.is_some() || method != "GET" {
        req.push_str(&format!(
            "Content-Type: {ctype}\r\nContent-Length: {}\r\n",
            data.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(data);
    s.write_all(req.as_bytes()).ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Some((status, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    for _ in 0..10_000 {
        let Some((size, rest)) = s.split_once("\r\n") else {
            break;
        };
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// [`http`] that must answer: fails the test, naming the request, when it does not.
pub fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<(&str, &str)>,
    token: Option<&str>,
) -> (u16, String) {
    http(addr, method, path, body, token).unwrap_or_else(|| panic!("{method} {path}: no answer"))
}

/// `body` parsed as JSON; fails the test, with the body, when it is not JSON.
pub fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// An authorised request with a JSON `body`: (status, the answer parsed, `Null` when
/// empty). An answer that is not JSON fails the test (every answer of the API is).
pub fn api(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, serde_json::Value) {
    let (status, text) = call(
        addr,
        method,
        path,
        body.map(|b| ("application/json", b)),
        Some(TOKEN),
    );
    if text.trim().is_empty() {
        return (status, serde_json::Value::Null);
    }
    let v = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{method} {path} → {status}: not JSON ({e}): {text}"));
    (status, v)
}

/// `PATCH /api/v1/datacenters/{dc}` with the JSON `body` and the token; it must answer.
pub fn patch_datacenter(addr: SocketAddr, dc: &str, body: &str) -> (u16, String) {
    call(
        addr,
        "PATCH",
        &format!("/api/v1/datacenters/{dc}"),
        Some(("application/json", body)),
        Some(TOKEN),
    )
}

/// `GET path` (with the token, so also where reads need one), which must answer 200 with
/// JSON: parsed.
pub fn get_json(addr: SocketAddr, path: &str) -> serde_json::Value {
    let (status, body) = call(addr, "GET", path, None, Some(TOKEN));
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {body}"))
}

/// One node of a test cluster: can be killed and restarted on the same data.
pub struct ClusterNode {
    pub id: u64,
    pub config: PathBuf,
    pub at: NodeRef,
    /// The binary it runs (this build's unless a test upgrades from another).
    pub bin: PathBuf,
    child: Proc,
}

impl ClusterNode {
    /// Write node `id`'s `config` (node`ID`.toml) in `dir` and start it on `bin`, its log
    /// node`ID`.log beside; without waiting for it.
    fn launch(
        dir: &Path,
        id: u64,
        (dns, admin, raft): (SocketAddr, SocketAddr, SocketAddr),
        config: &str,
        bin: &Path,
    ) -> ClusterNode {
        let path = dir.join(format!("node{id}.toml"));
        std::fs::write(&path, config).expect("write config");
        let mut node = ClusterNode {
            id,
            config: path,
            at: NodeRef {
                dns,
                admin,
                raft,
                log_path: dir.join(format!("node{id}.log")),
            },
            bin: bin.to_path_buf(),
            child: Proc::default(),
        };
        node.spawn();
        node
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.at.log_path)
            .expect("log file");
        self.child = Proc::new(spawn_owned(
            Command::new(&self.bin)
                .arg("serve")
                .arg("--config")
                .arg(&self.config)
                .stdout(Stdio::null())
                .stderr(log),
        ));
    }

    pub fn is_running(&mut self) -> bool {
        self.child.is_running()
    }

    /// SIGKILL, no goodbye.
    pub fn kill9(&mut self) {
        self.child.kill9();
    }

    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// SIGSTOP: the process holds its sockets but answers nothing (a hung or paused node).
    pub fn pause(&self) {
        self.child.pause();
    }

    /// SIGCONT after [`ClusterNode::pause`].
    pub fn resume(&self) {
        self.child.resume();
    }

    /// SIGTERM, and wait (bounded) for the process to end; SIGKILL after `limit`.
    pub fn stop(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let status = self.child.terminate(limit);
        if status.is_none() {
            self.kill9();
        }
        status
    }

    pub fn healthy(&self) -> bool {
        healthz(self.at.admin)
    }

    pub fn wait_healthy(&mut self, limit: Duration) {
        if let Err(log) = self.try_wait_healthy(limit) {
            panic!("node {} exited:\n{log}", self.id);
        }
    }

    /// [`ClusterNode::wait_healthy`], but a node that exited is `Err(its log)`, for the
    /// caller to decide (a port taken by another test between [`free_port`] and the bind
    /// is worth another try); not healthy within `limit` still panics.
    pub fn try_wait_healthy(&mut self, limit: Duration) -> Result<(), String> {
        let admin = self.at.admin;
        match self.child.wait_for(limit, || healthz(admin)) {
            Ok(()) => Ok(()),
            Err(NotReady::Exited(_)) => Err(self.at.log()),
            Err(NotReady::Timeout) => panic!(
                "node {} not healthy within {limit:?}:\n{}",
                self.id,
                self.at.log()
            ),
        }
    }
}

pub const TOKEN: &str = "test-token";

/// N nodes on loopback forming one cluster, all named as initial peers.
pub struct TestCluster {
    pub dir: tempfile::TempDir,
    pub nodes: Vec<ClusterNode>,
    peers: String,
}

fn cluster_config(
    id: u64,
    dns: SocketAddr,
    admin: SocketAddr,
    raft: SocketAddr,
    peers: &str,
    dns_extra: &str,
) -> String {
    format!(
        "node_id = {id}\ndata_dir = \"data{id}\"\n\n[dns]\nlisten = [\"{dns}\"]\n{dns_extra}\n\n[admin]\nlisten = \"{admin}\"\ntoken = \"{TOKEN}\"\n\n[raft]\nlisten = \"{raft}\"\npeers = {{ {peers} }}\n\n[geoip]\ndatabase = \"{}\"\n\n[bootstrap]\ndir = \"zones\"\n",
        geoip_db().display()
    )
}

impl TestCluster {
    pub fn start(n: u64, files: &[(&str, &str)]) -> TestCluster {
        TestCluster::start_with(n, files, "")
    }

    /// [`TestCluster::start`] with more lines in every node's `[dns]` section.
    pub fn start_with(n: u64, files: &[(&str, &str)], dns_extra: &str) -> TestCluster {
        TestCluster::start_on(
            Path::new(env!("CARGO_BIN_EXE_meridian")),
            n,
            files,
            dns_extra,
        )
    }

    /// [`TestCluster::start_with`], every node running `bin`.
    pub fn start_on(bin: &Path, n: u64, files: &[(&str, &str)], dns_extra: &str) -> TestCluster {
        // Ports come from `free_port`, which another test may take before a node binds
        // them: a node that exits for that is retried, with fresh ports, twice at most.
        for _ in 0..2 {
            match TestCluster::try_start(bin, n, files, dns_extra) {
                Ok(c) => return c,
                Err(log) if log.contains("Address already in use") => continue,
                Err(log) => panic!("a node exited:\n{log}"),
            }
        }
        TestCluster::try_start(bin, n, files, dns_extra)
            .unwrap_or_else(|log| panic!("a node exited:\n{log}"))
    }

    fn try_start(
        bin: &Path,
        n: u64,
        files: &[(&str, &str)],
        dns_extra: &str,
    ) -> Result<TestCluster, String> {
        let dir = tempfile::tempdir().expect("temp dir");
        let zones = dir.path().join("zones");
        std::fs::create_dir_all(&zones).expect("zones dir");
        for (name, text) in files {
            std::fs::write(zones.join(name), text).expect("write file");
        }
        let port = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        let addrs: Vec<(SocketAddr, SocketAddr, SocketAddr)> = (0..n)
            .map(|_| (port(free_port()), port(free_port()), port(free_port())))
            .collect();
        let peers = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| format!("\"{}\" = \"{}\"", i + 1, a.2))
            .collect::<Vec<_>>()
            .join(", ");
        let mut nodes = Vec::new();
        for (i, (dns, admin, raft)) in addrs.into_iter().enumerate() {
            let id = i as u64 + 1;
            let config = cluster_config(id, dns, admin, raft, &peers, dns_extra);
            nodes.push(ClusterNode::launch(
                dir.path(),
                id,
                (dns, admin, raft),
                &config,
                bin,
            ));
        }
        for node in nodes.iter_mut() {
            // On Err, dropping `nodes` stops the others.
            node.try_wait_healthy(Duration::from_secs(30))?;
        }
        Ok(TestCluster { dir, nodes, peers })
    }

    /// Start one more node, not among the initial peers: it waits to be added.
    pub fn spawn_extra(&mut self) -> u64 {
        self.spawn_extra_on(Path::new(env!("CARGO_BIN_EXE_meridian")))
    }

    /// [`TestCluster::spawn_extra`], running `bin`.
    pub fn spawn_extra_on(&mut self, bin: &Path) -> u64 {
        let id = self.nodes.len() as u64 + 1;
        let port = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        let (dns, admin, raft) = (port(free_port()), port(free_port()), port(free_port()));
        let config = cluster_config(id, dns, admin, raft, &self.peers, "");
        let node = ClusterNode::launch(self.dir.path(), id, (dns, admin, raft), &config, bin);
        self.nodes.push(node);
        id
    }

    /// The leader as some node reports it (polls up to `limit`).
    pub fn leader(&self, limit: Duration) -> Option<u64> {
        poll(limit, || {
            self.nodes.iter().find_map(|n| {
                let (200, body) = http_get(n.at.admin, "/api/v1/cluster")? else {
                    return None;
                };
                serde_json::from_str::<serde_json::Value>(&body).ok()?["leader"].as_u64()
            })
        })
    }

    pub fn node(&mut self, id: u64) -> &mut ClusterNode {
        &mut self.nodes[id as usize - 1]
    }

    /// Every node's log lines that contain one of `patterns`, prefixed with the node's id.
    pub fn log_lines(&self, patterns: &[&str]) -> Vec<String> {
        log_lines(
            self.nodes.iter().map(|n| (n.id, n.at.log_path.as_path())),
            patterns,
        )
    }
}

/// The lines of each `(node id, log file)` that contain one of `patterns`, prefixed
/// `node ID: `, node by node in the order given.
pub fn log_lines<'a>(
    logs: impl IntoIterator<Item = (u64, &'a Path)>,
    patterns: &[&str],
) -> Vec<String> {
    let mut out = Vec::new();
    for (id, path) in logs {
        let log = std::fs::read_to_string(path).unwrap_or_default();
        for line in log
            .lines()
            .filter(|l| patterns.iter().any(|p| l.contains(p)))
        {
            out.push(format!("node {id}: {line}"));
        }
    }
    out
}

/// A two-site world shared by the cluster, partition and metrics tests: zone `example.com`,
/// datacenters `lon` (198.51.100.1) and `iad` (198.51.100.2), and a `geo_nearest` `www`.
pub mod two_sites {
    pub const ZONE: &str = "$ORIGIN example.com.\n$TTL 300\n@ IN SOA ns1 hostmaster 1 7200 3600 1209600 300\n@ IN NS ns1\nns1 IN A 127.0.0.1\n";

    pub const DCS: &str = r#"
[[datacenter]]
id = "lon"
location = { lat = 51.5074, lon = -0.1278 }
addresses = ["198.51.100.1"]

[[datacenter]]
id = "iad"
location = { lat = 38.9519, lon = -77.4480 }
addresses = ["198.51.100.2"]
"#;

    pub const SERVICES: &str = r#"
[[service]]
zone = "example.com"
name = "www"
policy = "geo_nearest"
datacenters = ["lon", "iad"]
"#;
}

/// `PUT /api/v1/zones/{origin}/dnssec` with `body` (e.g. `{"algorithm": "ED25519"}`) on
/// `admin`, which must answer 201: the keys, parsed. Waits for nothing: each test polls for
/// what it needs, within its own limit.
pub fn sign_zone(admin: SocketAddr, origin: &str, body: &str) -> serde_json::Value {
    let (status, v) = api(
        admin,
        "PUT",
        &format!("/api/v1/zones/{origin}/dnssec"),
        Some(body),
    );
    assert_eq!(status, 201, "{v}");
    v
}

/// The first DS of a dnssec GET or PUT body.
pub fn first_ds(keys: &serde_json::Value) -> String {
    keys["ds"][0]
        .as_str()
        .unwrap_or_else(|| panic!("no DS: {keys}"))
        .to_string()
}
