//! What an operator sees: `answers_share` moving with the answers sent (dig), and the
//! dashboard at `GET /` in headless Chromium — its DOM, a screenshot, a page kept open
//! that follows a drain made through the API, and a drain clicked on the page.
//! One node is shared; each test works on datacenters of its own.

mod common;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{http, Node, NodeRef};
use serde_json::Value;

const ZONE: &str = "$ORIGIN example.com.\n$TTL 300\n@ IN SOA ns1 hostmaster 1 7200 3600 1209600 300\n@ IN NS ns1\nns1 IN A 127.0.0.1\n";

/// `lon`, `iad` and `sin` serve `www` (only the share test queries it); `fra`, `syd`, `gru`
/// and `nrt` are the dashboard tests' to drain and reweight; `hkg` is unhealthy.
const DCS: &str = r#"
[[datacenter]]
id = "lon"
location = { lat = 51.5074, lon = -0.1278 }
addresses = ["198.51.100.1"]

[[datacenter]]
id = "iad"
location = { lat = 38.9519, lon = -77.4480 }
addresses = ["198.51.100.2"]

[[datacenter]]
id = "sin"
location = { lat = 1.3521, lon = 103.8198 }
addresses = ["198.51.100.3"]

[[datacenter]]
id = "fra"
location = { lat = 50.1109, lon = 8.6821 }
addresses = ["198.51.100.4"]

[[datacenter]]
id = "syd"
location = { lat = -33.8688, lon = 151.2093 }
addresses = ["198.51.100.5"]

[[datacenter]]
id = "gru"
location = { lat = -23.4356, lon = -46.4731 }
addresses = ["198.51.100.6"]

[[datacenter]]
id = "nrt"
location = { lat = 35.7720, lon = 140.3929 }
addresses = ["198.51.100.7"]

# Probed on a port nothing listens on: unhealthy, with a "down" opinion to show.
[[datacenter]]
id = "hkg"
location = { lat = 22.3193, lon = 114.1694 }
addresses = ["198.51.100.8"]
health_check = { kind = "tcp", address = "127.0.0.1:1", interval = "1s", timeout = "500ms" }
"#;

const SERVICES: &str = r#"
[[service]]
zone = "example.com"
name = "www"
policy = "geo_nearest"
datacenters = ["lon", "iad", "sin"]
ttl = 60
"#;

/// GeoIP test database clients.
const LONDON: &str = "+subnet=81.2.69.142/32";
const SINGAPORE: &str = "+subnet=214.0.0.0/24";

fn node() -> &'static NodeRef {
    static NODE: OnceLock<NodeRef> = OnceLock::new();
    common::shared(&NODE, || Node::start_example(ZONE, DCS, SERVICES))
}

/// `GET path` on the shared node, parsed as JSON.
fn get_json(path: &str) -> Value {
    let (status, body) =
        http(node().admin, "GET", path, None, None).unwrap_or_else(|| panic!("GET {path}"));
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

/// Each datacenter's `answers_share` in `GET /api/v1/datacenters`, by id.
fn shares() -> Vec<(String, f64)> {
    let list = get_json("/api/v1/datacenters");
    list.as_array()
        .map(|a| {
            a.iter()
                .map(|d| {
                    let id = d["id"].as_str().unwrap_or("").to_string();
                    let share = d["answers_share"]
                        .as_f64()
                        .unwrap_or_else(|| panic!("no answers_share in {d}"));
                    (id, share)
                })
                .collect()
        })
        .unwrap_or_default()
}

fn share_of(shares: &[(String, f64)], id: &str) -> f64 {
    shares
        .iter()
        .find(|(i, _)| i == id)
        .map(|(_, s)| *s)
        .unwrap_or_else(|| panic!("no datacenter {id} in {shares:?}"))
}

/// Send `n` queries for `www` from `client` and check each is answered with `address`.
fn ask(n: usize, client: &str, address: &str) {
    for _ in 0..n {
        let d = node().dig(&["www.example.com", "A", client]);
        assert_eq!(d.answer_data("A"), vec![address.to_string()], "{}", d.raw);
    }
}

/// Poll `check` on the shares until it holds, at most `limit`.
fn wait_shares(limit: Duration, check: impl Fn(&[(String, f64)]) -> bool) -> Vec<(String, f64)> {
    let deadline = Instant::now() + limit;
    loop {
        let s = shares();
        if check(&s) || Instant::now() > deadline {
            return s;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn answers_share_follows_the_answers_sent() {
    let close = |a: f64, b: f64| (a - b).abs() < 1e-6;
    // Nothing answered yet: every share is 0, and each datacenter has one.
    let s = shares();
    assert!(s.len() >= 8, "{s:?}");
    assert!(s.iter().all(|(_, v)| *v == 0.0), "{s:?}");
    let one = get_json("/api/v1/datacenters/lon");
    assert_eq!(one["answers_share"].as_f64(), Some(0.0), "{one}");

    ask(10, LONDON, "198.51.100.1");
    let s = wait_shares(Duration::from_secs(5), |s| close(share_of(s, "lon"), 1.0));
    assert!(close(share_of(&s, "lon"), 1.0), "{s:?}");
    assert!(close(share_of(&s, "sin"), 0.0), "{s:?}");

    ask(30, SINGAPORE, "198.51.100.3");
    let s = wait_shares(Duration::from_secs(5), |s| close(share_of(s, "sin"), 0.75));
    assert!(close(share_of(&s, "sin"), 0.75), "{s:?}");
    assert!(close(share_of(&s, "lon"), 0.25), "{s:?}");
    assert!(close(share_of(&s, "iad"), 0.0), "{s:?}");
    let total: f64 = s.iter().map(|(_, v)| v).sum();
    assert!(close(total, 1.0), "{s:?}");
    let one = get_json("/api/v1/datacenters/sin");
    assert!(
        one["answers_share"]
            .as_f64()
            .is_some_and(|v| close(v, 0.75)),
        "{one}"
    );
}

// ---- the page, without a browser ----------------------------------------------------

/// A raw `GET path` with the given `Host`: (status, headers and body as text).
fn get_with_host(path: &str, host: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&node().admin, Duration::from_secs(2))
        .expect("connect to the admin listener");
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (status, text)
}

#[test]
fn dashboard_is_served_offline_without_a_token_and_only_to_our_host() {
    let host = node().admin.to_string();
    let (status, page) = get_with_host("/", &host);
    assert_eq!(status, 200, "{page}");
    let lower = page.to_ascii_lowercase();
    assert!(lower.contains("content-type: text/html"), "{page}");
    assert!(
        lower.contains("content-security-policy: default-src 'none'"),
        "{page}"
    );
    assert!(lower.contains("x-frame-options: deny"), "{page}");
    assert!(page.contains(r#"type="password""#) && page.contains(">token</label>"));
    assert!(
        page.contains(r#"class="land""#),
        "the world outline is in the page"
    );
    let (s_js, script) = get_with_host("/dashboard.js", &host);
    let (s_css, style) = get_with_host("/dashboard.css", &host);
    assert_eq!((s_js, s_css), (200, 200));
    // Nothing is loaded from elsewhere (the SVG namespace is a name, not a fetch).
    for (what, text) in [("page", &page), ("script", &script), ("style", &style)] {
        let outside: Vec<&str> = text
            .match_indices("http")
            .map(|(i, _)| &text[i..text.len().min(i + 40)])
            .filter(|u| {
                (u.starts_with("http://") || u.starts_with("https://"))
                    && !u.starts_with("http://www.w3.org/2000/svg")
            })
            .collect();
        assert!(outside.is_empty(), "the {what} refers to {outside:?}");
    }
    // The DNS-rebinding check covers the page too.
    let (status, body) = get_with_host("/", "attacker.example");
    assert_eq!(status, 421, "{body}");
    let (status, body) = get_with_host("/dashboard.js", "attacker.example:8053");
    assert_eq!(status, 421, "{body}");
}

// ---- headless Chromium --------------------------------------------------------------

/// One Chromium at a time: the machine is small, and the live-update test measures time.
#[allow(clippy::disallowed_types)]
static BROWSER: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[allow(clippy::disallowed_types)]
fn browser_lock() -> std::sync::MutexGuard<'static, ()> {
    BROWSER.lock().unwrap_or_else(|e| e.into_inner())
}

fn page_url() -> String {
    format!("http://{}/", node().admin)
}

fn artifacts() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&dir).expect("create target/test-artifacts");
    dir
}

/// A Chromium process (in a process group of its own, killed with it on drop) with a
/// profile directory of its own.
struct Chromium {
    child: std::process::Child,
    /// Removed on drop, after the browser is gone.
    _profile: tempfile::TempDir,
}

impl Chromium {
    fn spawn(args: &[&str]) -> Chromium {
        use std::os::unix::process::CommandExt;
        let profile = tempfile::tempdir().expect("profile dir");
        let mut cmd = std::process::Command::new("chromium");
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--hide-scrollbars",
            "--window-size=1440,900",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .process_group(0);
        let child = common::spawn_owned(&mut cmd);
        Chromium {
            child,
            _profile: profile,
        }
    }

    /// Run to completion within `limit` (killed after): what it printed.
    fn output(mut self, limit: Duration) -> String {
        use std::io::Read;
        let mut out = self.child.stdout.take().expect("stdout piped");
        let reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            s
        });
        let deadline = Instant::now() + limit;
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => break,
                _ if Instant::now() > deadline => panic!("chromium did not finish in {limit:?}"),
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        reader.join().unwrap_or_default()
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let pgid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// `(state, health)` of a datacenter's row in a DOM dump.
fn row_in_dom(dom: &str, id: &str) -> Option<(String, String)> {
    let at = dom.find(&format!(r#"<tr data-dc="{id}">"#))?;
    let row = &dom[at..at + dom[at..].find("</tr>")?];
    let tag = |cell: &str| -> Option<String> {
        let c = &row[row.find(&format!(r#"<td class="{cell}">"#))?..];
        let t = &c[c.find("<span class=\"tag ")?..];
        let text = &t[t.find('>')? + 1..];
        Some(text[..text.find('<')?].to_string())
    };
    Some((tag("state")?, tag("health")?))
}

#[test]
fn dashboard_dom_shows_every_datacenter_with_its_state_and_health() {
    let _one = browser_lock();
    let url = page_url();
    let dom = Chromium::spawn(&["--dump-dom", "--virtual-time-budget=5000", &url])
        .output(Duration::from_secs(60));
    for id in ["lon", "iad", "sin", "fra", "syd", "gru", "nrt", "hkg"] {
        let (state, health) =
            row_in_dom(&dom, id).unwrap_or_else(|| panic!("no row for {id} in {dom}"));
        assert!(
            state == "active" || state == "drained",
            "{id}: state {state:?}"
        );
        assert!(
            ["healthy", "unhealthy", "unknown"].contains(&health.as_str()),
            "{id}: health {health:?}"
        );
        assert!(
            dom.contains(&format!(r#"data-dc="{id}""#)),
            "{id} on the map"
        );
    }
    assert_eq!(row_in_dom(&dom, "lon").map(|r| r.1), Some("unknown".into()));
    // The cluster panel and the history panel (404 until the history API exists).
    assert!(dom.contains("quorum"), "{dom}");
    assert!(
        dom.contains("127.0.0.1:"),
        "members with their addresses: {dom}"
    );
    assert!(
        dom.contains("history not available") || dom.contains("data-index="),
        "{dom}"
    );
}

/// Distinct colours, and the pixels of a colour, in a PNG.
fn png_colours(path: &std::path::Path) -> (usize, std::collections::HashMap<[u8; 3], usize>) {
    let file = std::fs::File::open(path).expect("screenshot file");
    let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size().expect("PNG size")];
    let info = reader.next_frame(&mut buf).expect("a PNG frame");
    let step = match info.color_type {
        png::ColorType::Rgba => 4,
        png::ColorType::Rgb => 3,
        other => panic!("unexpected PNG colour type {other:?}"),
    };
    let mut counts = std::collections::HashMap::new();
    for px in buf[..info.buffer_size()].chunks_exact(step) {
        *counts.entry([px[0], px[1], px[2]]).or_insert(0usize) += 1;
    }
    ((info.width * info.height) as usize, counts)
}

#[test]
fn dashboard_screenshot_is_a_filled_map() {
    let _one = browser_lock();
    // Wait for hkg's verdict, so the map shows a red marker and a "down" opinion.
    let deadline = Instant::now() + Duration::from_secs(20);
    while get_json("/api/v1/datacenters/hkg")["health"] != "unhealthy" {
        assert!(Instant::now() < deadline, "hkg never became unhealthy");
        std::thread::sleep(Duration::from_millis(200));
    }
    let path = artifacts().join("dashboard.png");
    let _ = std::fs::remove_file(&path);
    let shot = format!("--screenshot={}", path.display());
    let url = page_url();
    Chromium::spawn(&[&shot, "--virtual-time-budget=5000", &url]).output(Duration::from_secs(60));
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let (pixels, colours) = png_colours(&path);
    assert_eq!(pixels, 1440 * 900);
    let count = |rgb: [u8; 3]| colours.get(&rgb).copied().unwrap_or(0);
    // The map's sea and land (dashboard.css) each fill a good part of the page, the
    // unhealthy marker's red is there, and the page is far from one flat colour.
    let sea = count([0xdb, 0xe9, 0xf4]);
    let land = count([0xe9, 0xec, 0xdf]);
    eprintln!(
        "screenshot {}: {size} bytes, {} colours, sea {sea} px, land {land} px",
        path.display(),
        colours.len()
    );
    assert!(sea > pixels / 20, "sea: {sea} of {pixels} pixels");
    assert!(land > pixels / 40, "land: {land} of {pixels} pixels");
    assert!(colours.len() > 200, "{} colours", colours.len());
    let biggest = colours.values().max().copied().unwrap_or(0);
    assert!(
        biggest < pixels * 3 / 4,
        "one colour covers {biggest} of {pixels}"
    );
    assert!(size > 20_000, "screenshot of {size} bytes");
}
