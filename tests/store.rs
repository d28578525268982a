//! The store fails closed and stays bounded: a node whose store lost something it had
//! acknowledged refuses to start (naming the store), and a node keeps its state and a
//! bounded `data_dir` across a thousand writes and a restart.

mod common;

use std::time::{Duration, Instant};

use common::two_sites::{DCS, SERVICES, ZONE};
use common::{http_get, TestCluster, TOKEN};

fn files() -> Vec<(&'static str, &'static str)> {
    vec![
        ("example.com.zone", ZONE),
        ("datacenters.toml", DCS),
        ("services.toml", SERVICES),
    ]
}

fn patch_weight(node: &common::NodeRef, weight: u32) -> (u16, String) {
    common::patch_datacenter(node.admin, "lon", &format!("{{\"weight\": {weight}}}"))
}

fn weight(node: &common::NodeRef) -> Option<u64> {
    let (_, body) = http_get(node.admin, "/api/v1/datacenters/lon")?;
    serde_json::from_str::<serde_json::Value>(&body).ok()?["weight"].as_u64()
}

fn dir_size(path: &std::path::Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(path) {
        for e in entries.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => total += dir_size(&e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

/// Every file under `dir` is 0600 and every directory 0700 (DESIGN.md: the store holds
/// private keys). Answers the paths that are not, with their modes.
fn too_open(dir: &std::path::Path) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    let mut bad = Vec::new();
    let top = std::fs::metadata(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    if top.permissions().mode() & 0o777 != 0o700 {
        bad.push(format!(
            "{} {:o}",
            dir.display(),
            top.permissions().mode() & 0o777
        ));
    }
    let mut dirs = vec![dir.to_path_buf()];
    let mut seen = 0;
    while let Some(d) = dirs.pop() {
        let entries = std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
        for e in entries.flatten() {
            seen += 1;
            assert!(seen < 100_000, "runaway walk of {}", dir.display());
            let Ok(m) = e.metadata() else { continue };
            let mode = m.permissions().mode() & 0o777;
            let want = if m.is_dir() { 0o700 } else { 0o600 };
            if mode != want {
                bad.push(format!("{} {mode:o}", e.path().display()));
            }
            if m.is_dir() {
                dirs.push(e.path());
            }
        }
    }
    assert!(seen > 0, "nothing under {}", dir.display());
    bad
}

#[test]
fn a_thousand_writes_keep_data_dir_bounded_and_survive_a_restart() {
    let mut c = TestCluster::start(1, &files());
    let node = c.node(1).at.clone();
    let data = c.dir.path().join("data1");
    let before = dir_size(&data);
    let start = Instant::now();
    for i in 1..=1000u32 {
        let (status, body) = patch_weight(&node, i % 1000);
        assert_eq!(status, 200, "write {i}: {body}");
    }
    let took = start.elapsed();
    let after = dir_size(&data);
    eprintln!(
        "1,000 writes in {took:?} ({:?} each); data_dir {before} -> {after} bytes",
        took / 1000
    );
    assert!(
        after < 32 << 20,
        "data_dir grew to {after} bytes after 1,000 small writes"
    );
    assert_eq!(weight(&node), Some(0));
    assert_eq!(
        too_open(&data),
        Vec::<String>::new(),
        "files made while serving are more open than 0600/0700"
    );
    assert_eq!(
        c.node(1).stop(Duration::from_secs(10)).map(|s| s.success()),
        Some(true)
    );
    let t = Instant::now();
    c.node(1).restart();
    c.node(1).wait_healthy(Duration::from_secs(10));
    eprintln!("restart to /healthz 200 in {:?}", t.elapsed());
    assert!(
        c.node(1)
            .at
            .log()
            .contains("the bootstrap directory is not read"),
        "a restart reads no bootstrap directory:\n{}",
        c.node(1).at.log()
    );
    assert_eq!(
        too_open(&data),
        Vec::<String>::new(),
        "files under data_dir more open than 0600/0700"
    );
    assert_eq!(
        weight(&node),
        Some(0),
        "the last write survived the restart"
    );
}

#[test]
fn a_store_that_lost_an_acknowledged_write_is_refused_at_start() {
    let mut c = TestCluster::start(1, &files());
    let node = c.node(1).at.clone();
    for i in 1..=20u32 {
        assert_eq!(patch_weight(&node, i).0, 200);
    }
    assert_eq!(
        c.node(1).stop(Duration::from_secs(10)).map(|s| s.success()),
        Some(true)
    );
    // Flip one bit in the newest part of the database file: sled finds the damaged record
    // and rolls back to before it, silently; the node must notice and refuse.
    let db = c.dir.path().join("data1/raft/db");
    let mut bytes = std::fs::read(&db).expect("read db");
    let at = bytes.len().saturating_sub(300);
    bytes[at] ^= 0x40;
    std::fs::write(&db, &bytes).expect("write db");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_meridian"))
        .arg("serve")
        .arg("--config")
        .arg(c.dir.path().join("node1.toml"))
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a damaged store was served:\n{stderr}"
    );
    assert!(
        stderr.contains("lost data it had acknowledged") && stderr.contains("data1/raft"),
        "{stderr}"
    );
}

/// Unmounts a tmpfs the test mounted, however the test ends.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Free bytes on the file system of `path`.
fn free_bytes(path: &std::path::Path) -> u64 {
    let st = nix::sys::statvfs::statvfs(path).expect("statvfs");
    st.blocks_available() as u64 * st.fragment_size() as u64
}

/// DESIGN.md "Write outcomes": a full disk stops writes with 503 `not_applied` (never a
/// storage error that stops Raft for good), DNS keeps answering, `/readyz` and `GET
/// /cluster` say why, and writes resume when space returns, nothing acknowledged lost.
#[test]
fn a_full_disk_stops_writes_with_503_and_they_resume_when_space_returns() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=48m", "tmpfs"])
        .arg(&data)
        .status()
        .expect("run mount");
    assert!(mounted.success(), "mounting a tmpfs needs root");
    let _mount = Mounted(data.clone());
    let zones = dir.path().join("zones");
    std::fs::create_dir_all(&zones).expect("zones");
    for (name, text) in files() {
        std::fs::write(zones.join(name), text).expect("write");
    }
    let port = |p: u16| std::net::SocketAddr::from(([127, 0, 0, 1], p));
    let (dns, admin, raft) = (
        port(common::free_port()),
        port(common::free_port()),
        port(common::free_port()),
    );
    let config = dir.path().join("node.toml");
    std::fs::write(
        &config,
        format!(
            "node_id = 1\ndata_dir = \"data\"\n[dns]\nlisten = [\"{dns}\"]\n[admin]\nlisten = \"{admin}\"\ntoken = \"{TOKEN}\"\n[raft]\nlisten = \"{raft}\"\npeers = {{ \"1\" = \"{raft}\" }}\n[geoip]\ndatabase = \"{}\"\n[bootstrap]\ndir = \"zones\"\n",
            common::geoip_db().display()
        ),
    )
    .expect("config");
    let log = std::fs::File::create(dir.path().join("node.log")).expect("log");
    let mut child = common::spawn_owned(
        std::process::Command::new(env!("CARGO_BIN_EXE_meridian"))
            .args(["serve", "--config"])
            .arg(&config)
            .stdout(log.try_clone().expect("log"))
            .stderr(log),
    );
    let node = common::NodeRef {
        dns,
        admin,
        raft,
        log_path: dir.path().join("node.log"),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while http_get(admin, "/healthz").map(|r| r.0) != Some(200) {
        assert!(Instant::now() < deadline, "never healthy:\n{}", node.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(patch_weight(&node, 2).0, 200);
    assert_eq!(http_get(admin, "/readyz").map(|r| r.0), Some(200));

    // Fill the disk to within 1 MiB.
    let filler = data.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).expect("filler");
        let chunk = vec![0xa5u8; 1 << 20];
        for _ in 0..64 {
            if free_bytes(&data) < 2 << 20 || f.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = f.sync_all();
    }
    assert!(free_bytes(&data) < 2 << 20, "the disk did not fill");
    let (status, body) = patch_weight(&node, 3);
    assert_eq!(status, 503, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["outcome"], "not_applied", "{body}");
    assert!(
        v["error"].as_str().is_some_and(|e| e.contains("disk full")),
        "{body}"
    );
    let (_, cluster) = http_get(admin, "/api/v1/cluster").expect("cluster");
    assert!(
        cluster.contains("\"control_plane\":\"disk_full\""),
        "{cluster}"
    );
    assert_eq!(http_get(admin, "/readyz").map(|r| r.0), Some(503));
    // DNS keeps answering, and so does /healthz.
    assert_eq!(node.dig(&["www.example.com", "A"]).status, "NOERROR");
    assert_eq!(http_get(admin, "/healthz").map(|r| r.0), Some(200));

    // Space returns: writes resume, nothing acknowledged is lost.
    std::fs::remove_file(&filler).expect("remove filler");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = patch_weight(&node, 4);
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "writes never resumed: {body}\n{}",
            node.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(weight(&node), Some(4));
    assert_eq!(http_get(admin, "/readyz").map(|r| r.0), Some(200));
    let _ = child.kill();
    let _ = child.wait();
}
