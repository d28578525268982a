//! What an operator sees: `answers_share` moving with the answers sent (dig), and the
//! dashboard at `GET /` in headless Chromium — its DOM, a screenshot, a page kept open
//! that follows a drain made through the API, and a drain clicked on the page.
//! One node is shared; each test works on datacenters of its own.

mod common;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{http, Node, NodeRef, TOKEN};
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
    common::get_json(node().admin, path)
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

/// One Chromium at a time (the machine is small, and the live-update test measures time),
/// and no write while the rollback test may roll everything back.
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
            dom.matches(&format!(r#"data-dc="{id}""#)).count() >= 2,
            "{id} in the table and on the map"
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

/// A page kept open in Chromium, driven over the DevTools protocol (a websocket).
struct Page {
    ws: tungstenite::WebSocket<std::net::TcpStream>,
    next_id: u64,
    _browser: Chromium,
}

impl Page {
    /// Open `url` in a headless Chromium with remote debugging on a port it picks.
    fn open(url: &str) -> Page {
        let browser = Chromium::spawn(&["--remote-debugging-port=0", url]);
        // Chromium writes the port it listens on into the profile directory.
        let port_file = browser._profile.path().join("DevToolsActivePort");
        let deadline = Instant::now() + Duration::from_secs(30);
        let port: u16 = loop {
            let text = std::fs::read_to_string(&port_file).unwrap_or_default();
            if let Some(p) = text.lines().next().and_then(|l| l.trim().parse().ok()) {
                break p;
            }
            assert!(
                Instant::now() < deadline,
                "chromium opened no debugging port"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        let devtools: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
        let ws_url = loop {
            let targets = devtools_get(devtools, "/json/list")
                .and_then(|body| serde_json::from_str::<Value>(&body).ok())
                .unwrap_or(Value::Null);
            let page = targets.as_array().and_then(|list| {
                list.iter().find(|t| {
                    t["type"] == "page" && t["url"].as_str().is_some_and(|u| u.starts_with(url))
                })
            });
            if let Some(u) = page.and_then(|p| p["webSocketDebuggerUrl"].as_str()) {
                break u.to_string();
            }
            assert!(Instant::now() < deadline, "no page target: {targets}");
            std::thread::sleep(Duration::from_millis(100));
        };
        let stream = std::net::TcpStream::connect_timeout(&devtools, Duration::from_secs(5))
            .expect("connect to DevTools");
        stream.set_read_timeout(Some(Duration::from_secs(10))).ok();
        stream.set_write_timeout(Some(Duration::from_secs(10))).ok();
        let (ws, _) = tungstenite::client(ws_url.as_str(), stream).expect("DevTools websocket");
        Page {
            ws,
            next_id: 1,
            _browser: browser,
        }
    }

    /// Evaluate `expr` in the page (awaiting a promise): its value as JSON.
    fn eval(&mut self, expr: &str) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let msg = serde_json::json!({
            "id": id,
            "method": "Runtime.evaluate",
            "params": {"expression": expr, "returnByValue": true, "awaitPromise": true},
        });
        self.ws
            .send(tungstenite::Message::text(msg.to_string()))
            .expect("send to DevTools");
        // Events may come first; each read is bounded by the socket's timeout.
        for _ in 0..1000 {
            let reply = self.ws.read().expect("DevTools answer");
            let Ok(text) = reply.to_text() else { continue };
            let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
            if v["id"] == id {
                if let Some(e) = v["result"].get("exceptionDetails") {
                    panic!("{expr}: {e}");
                }
                return v["result"]["result"]["value"].clone();
            }
        }
        panic!("no answer to {expr}");
    }

    /// Poll `expr` until it is `want`, at most `limit`: how long it took, or the last value.
    fn wait_for(&mut self, expr: &str, want: &Value, limit: Duration) -> Result<Duration, Value> {
        let start = Instant::now();
        loop {
            let v = self.eval(expr);
            if &v == want {
                return Ok(start.elapsed());
            }
            if start.elapsed() > limit {
                return Err(v);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `GET path` from Chromium's DevTools HTTP endpoint, which keeps the connection open: the
/// body is read up to its `Content-Length`.
fn devtools_get(addr: std::net::SocketAddr, path: &str) -> Option<String> {
    use std::io::{BufRead, Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut r = std::io::BufReader::new(s);
    let mut len = 0usize;
    for _ in 0..100 {
        let mut line = String::new();
        r.read_line(&mut line).ok()?;
        let line = line.trim();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().ok()?;
            }
        }
    }
    let mut body = vec![0; len.min(1 << 20)];
    r.read_exact(&mut body).ok()?;
    String::from_utf8(body).ok()
}

/// The text of a datacenter's state cell on the page (null until its row exists).
fn state_cell(id: &str) -> String {
    format!(r#"document.querySelector('tr[data-dc="{id}"] td.state')?.textContent ?? null"#)
}

/// PATCH datacenter `id` of the shared node with `body`, which must be accepted (200).
fn patch(id: &str, body: &str) {
    let (status, answer) = common::patch_datacenter(node().admin, id, body);
    assert_eq!(status, 200, "{answer}");
}

fn set_state(id: &str, state: &str) {
    patch(id, &format!(r#"{{"state": "{state}"}}"#));
}

#[test]
fn dashboard_kept_open_follows_a_drain_made_through_the_api_within_2s() {
    let _one = browser_lock();
    let mut page = Page::open(&page_url());
    let active = Value::from("active");
    let drained = Value::from("drained");
    page.wait_for(&state_cell("fra"), &active, Duration::from_secs(15))
        .expect("the page shows fra active");
    set_state("fra", "drained");
    let took = page
        .wait_for(&state_cell("fra"), &drained, Duration::from_secs(10))
        .expect("the page shows the drain");
    eprintln!("the page showed the drain after {took:?}");
    assert!(took <= Duration::from_secs(2), "the page took {took:?}");
    // The map shows it too (a hollow marker).
    let marker = r#"document.querySelector('#markers g[data-dc="fra"]').getAttribute('class')"#;
    let class = page.eval(marker);
    assert!(
        class.as_str().is_some_and(|c| c.contains("drained")),
        "{class}"
    );
    set_state("fra", "active");
    page.wait_for(&state_cell("fra"), &active, Duration::from_secs(2))
        .expect("the page shows the restore within 2 s");
}

/// Type `token` into the page's token field as a user would.
fn type_token(page: &mut Page, token: &str) {
    let js = format!(
        r#"(() => {{ const i = document.getElementById('token'); i.focus(); i.value = {t};
            i.dispatchEvent(new Event('input', {{bubbles: true}}));
            i.dispatchEvent(new Event('change', {{bubbles: true}})); return true; }})()"#,
        t = Value::from(token)
    );
    assert_eq!(page.eval(&js), Value::Bool(true));
}

/// Click a button of a datacenter's row once it is enabled and shown.
fn click(page: &mut Page, id: &str, button: &str) {
    let ready = format!(
        r#"(() => {{ const b = document.querySelector('tr[data-dc="{id}"] button.{button}');
            return !!b && !b.disabled && !b.hidden; }})()"#
    );
    page.wait_for(&ready, &Value::Bool(true), Duration::from_secs(10))
        .unwrap_or_else(|v| panic!("{id}'s {button} button is not clickable: {v}"));
    let js =
        format!(r#"document.querySelector('tr[data-dc="{id}"] button.{button}').click(), true"#);
    assert_eq!(page.eval(&js), Value::Bool(true));
}

/// Poll the API until `check` holds on datacenter `id`, at most `limit`.
fn wait_api(id: &str, limit: Duration, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let dc = get_json(&format!("/api/v1/datacenters/{id}"));
        if check(&dc) || Instant::now() > deadline {
            return dc;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn dashboard_drain_restore_and_reweight_clicked_on_the_page_reach_the_api() {
    let _one = browser_lock();
    let mut page = Page::open(&page_url());
    page.wait_for(
        &state_cell("syd"),
        &Value::from("active"),
        Duration::from_secs(15),
    )
    .expect("the page shows syd active");
    // Without a token the buttons are disabled.
    let disabled = r#"document.querySelector('tr[data-dc="syd"] button.drain').disabled"#;
    assert_eq!(page.eval(disabled), Value::Bool(true));

    // A wrong token: the node refuses, the page says so, nothing changes.
    type_token(&mut page, "not-the-token");
    click(&mut page, "syd", "drain");
    let msg = r#"(() => { const m = document.getElementById('message');
        return m.hidden ? '' : m.textContent; })()"#;
    let deadline = Instant::now() + Duration::from_secs(10);
    let said = loop {
        let v = page.eval(msg);
        if v.as_str().is_some_and(|s| !s.is_empty()) || Instant::now() > deadline {
            break v;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        said.as_str().is_some_and(|s| s.contains("wrong token")),
        "{said}"
    );
    assert_eq!(get_json("/api/v1/datacenters/syd")["state"], "active");

    // The write token: Drain, then Restore, then a new weight.
    type_token(&mut page, TOKEN);
    click(&mut page, "syd", "drain");
    let dc = wait_api("syd", Duration::from_secs(10), |d| d["state"] == "drained");
    assert_eq!(dc["state"], "drained", "{dc}");
    page.wait_for(
        &state_cell("syd"),
        &Value::from("drained"),
        Duration::from_secs(5),
    )
    .expect("the page shows its own drain");

    click(&mut page, "syd", "restore");
    let dc = wait_api("syd", Duration::from_secs(10), |d| d["state"] == "active");
    assert_eq!(dc["state"], "active", "{dc}");

    let js = r#"(() => { const i = document.querySelector('tr[data-dc="syd"] input.weight');
        i.focus(); i.value = '42'; i.dispatchEvent(new Event('input', {bubbles: true}));
        return true; })()"#;
    assert_eq!(page.eval(js), Value::Bool(true));
    click(&mut page, "syd", "reweight");
    let dc = wait_api("syd", Duration::from_secs(10), |d| d["weight"] == 42);
    assert_eq!(dc["weight"], 42, "{dc}");
    let weight_cell = r#"document.querySelector('tr[data-dc="syd"] td.weight').textContent"#;
    page.wait_for(weight_cell, &Value::from("42"), Duration::from_secs(5))
        .expect("the page shows the new weight");
    // The token never left the page's memory.
    let stored = r#"localStorage.length + sessionStorage.length + document.cookie.length"#;
    assert_eq!(page.eval(stored), Value::from(0));
}

/// The newest history entry (index) of `kind` on `target`, when the node has history.
fn history_entry(kind: &str, target: &str) -> Option<u64> {
    let (status, body) = http(node().admin, "GET", "/api/v1/history?limit=50", None, None)?;
    if status != 200 {
        return None;
    }
    let list: Value = serde_json::from_str(&body).ok()?;
    list.as_array()?
        .iter()
        .find(|e| e["kind"] == kind && e["target"] == target)
        .and_then(|e| e["index"].as_u64())
}

fn set_weight(id: &str, weight: u16) {
    patch(id, &format!(r#"{{"weight": {weight}}}"#));
}

/// The last changes: "history not available" while the node has no history API; once it
/// has one, the entries with a Rollback button that rolls back (DESIGN.md "History,
/// rollback, export").
#[test]
fn dashboard_lists_the_last_changes_and_rolls_back_from_the_page() {
    let _one = browser_lock();
    let (status, _) =
        http(node().admin, "GET", "/api/v1/history?limit=20", None, None).expect("answered");
    let mut page = Page::open(&page_url());
    page.wait_for(
        &state_cell("gru"),
        &Value::from("active"),
        Duration::from_secs(15),
    )
    .expect("the page shows gru");
    // History is served: the page must list it (its "not available" note is for nodes
    // without the route).
    assert_eq!(status, 200, "GET /api/v1/history");
    set_weight("gru", 7);
    let first = history_entry("patch_datacenter", "datacenter/gru").expect("the change is listed");
    set_weight("gru", 9);
    let entry =
        format!(r#"!!document.querySelector('#history li[data-index="{first}"] button.rollback')"#);
    page.wait_for(&entry, &Value::Bool(true), Duration::from_secs(5))
        .expect("the page lists the change with a Rollback button");
    type_token(&mut page, TOKEN);
    // The page asks before it rolls back; say yes.
    let click = format!(
        r#"(() => {{ window.confirm = () => true;
            const b = document.querySelector('#history li[data-index="{first}"] button.rollback');
            if (!b || b.disabled) return false; b.click(); return true; }})()"#
    );
    page.wait_for(&click, &Value::Bool(true), Duration::from_secs(5))
        .expect("Rollback clicked");
    let dc = wait_api("gru", Duration::from_secs(10), |d| d["weight"] == 7);
    assert_eq!(dc["weight"], 7, "{dc}");
}

/// With `[admin] reads_need_token = true` the page itself loads without a token, asks for
/// one, and shows the data once it is typed in.
#[test]
fn dashboard_asks_for_a_token_when_reads_need_one() {
    let _one = browser_lock();
    let locked_node = Node::start(&common::Setup {
        files: &[
            ("example.com.zone", ZONE),
            ("datacenters.toml", DCS),
            ("services.toml", SERVICES),
        ],
        extra_config: "[admin]\nreads_need_token = true\n",
    });
    let (status, _) =
        http(locked_node.admin, "GET", "/api/v1/datacenters", None, None).expect("answered");
    assert_eq!(status, 401, "reads need a token on this node");
    let url = format!("http://{}/", locked_node.admin);
    let (status, _) = http(locked_node.admin, "GET", "/", None, None).expect("answered");
    assert_eq!(status, 200, "the page itself loads without a token");
    let mut page = Page::open(&url);
    let asks = r#"document.getElementById('locked') !== null
        && !document.getElementById('locked').hidden
        && document.querySelectorAll('#dcs tbody tr').length === 0"#;
    page.wait_for(asks, &Value::Bool(true), Duration::from_secs(10))
        .expect("the page asks for a token and shows no data");
    type_token(&mut page, TOKEN);
    page.wait_for(
        &state_cell("lon"),
        &Value::from("active"),
        Duration::from_secs(5),
    )
    .expect("the page shows the data once the token is typed");
}

// ---- meridian explain --admin ---------------------------------------------------------

/// `meridian ARGS…` with a deadline: (success, stdout, stderr).
fn meridian(args: &[&str]) -> (bool, String, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_meridian"));
    cmd.args(args)
        .env_remove("MERIDIAN_ADMIN_TOKEN")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = common::spawn_owned(&mut cmd);
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().ok().flatten().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("meridian {args:?} did not finish in 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("meridian's output");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A client the test GeoIP database puts in Milton, WA: `iad` is nearest.
const MILTON_US: &str = "216.160.83.56";

#[test]
fn explain_admin_asks_the_live_node_and_the_offline_form_reads_files() {
    // It drains iad for a moment: not while a rollback test may run.
    let _one = browser_lock();
    let admin = format!("http://{}", node().admin);
    let live = |extra: &[&str]| {
        let mut args = vec!["explain", "--admin", admin.as_str()];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["www.example.com", "A", MILTON_US]);
        meridian(&args)
    };
    let (ok, text, err) = live(&[]);
    assert!(ok, "{err}");
    assert!(
        text.contains("www.example.com. 60 IN A 198.51.100.2"),
        "{text}"
    );
    assert!(
        text.contains("candidates:") && text.contains("iad"),
        "{text}"
    );
    assert!(
        text.contains(&format!("source: the live node at {admin}")),
        "{text}"
    );
    // --json is the API's own answer.
    let (ok, json, err) = live(&["--json"]);
    assert!(ok, "{err}");
    let from_cli: Value = serde_json::from_str(&json).expect("JSON from explain --json");
    let from_api = get_json(&format!(
        "/api/v1/explain?name=www.example.com&type=A&client={MILTON_US}"
    ));
    assert_eq!(from_cli, from_api);

    // A drain made through the API: the live node sees it, the files do not.
    let config = node().log_path.with_file_name("node.toml");
    let config = config.to_str().expect("utf-8 path");
    set_state("iad", "drained");
    let (ok, text, err) = live(&[]);
    let (ok_off, offline, err_off) = meridian(&[
        "explain",
        "--config",
        config,
        "www.example.com",
        "A",
        MILTON_US,
    ]);
    set_state("iad", "active");
    assert!(ok, "{err}");
    assert!(text.contains("IN A 198.51.100.1"), "{text}");
    assert!(text.contains("Drained"), "{text}");
    assert!(ok_off, "{err_off}");
    assert!(offline.contains("IN A 198.51.100.2"), "{offline}");
    assert!(
        offline.contains("source: offline, from the files of"),
        "{offline}"
    );

    // A token is sent when given (a wrong one is harmless on an open read); errors are
    // the node's, with a failing exit.
    let (ok, _, err) = live(&["--token", TOKEN]);
    assert!(ok, "{err}");
    let (ok, _, err) = meridian(&[
        "explain",
        "--admin",
        &admin,
        "www.example.com",
        "BOGUS",
        MILTON_US,
    ]);
    assert!(!ok);
    assert!(err.contains("400") && err.contains("BOGUS"), "{err}");
    let (ok, _, err) = meridian(&[
        "explain",
        "--admin",
        "http://127.0.0.1:1",
        "www.example.com",
        "A",
        MILTON_US,
    ]);
    assert!(!ok);
    assert!(err.contains("127.0.0.1:1"), "{err}");
    // --config and --admin do not go together.
    let (ok, _, err) = meridian(&[
        "explain",
        "--admin",
        &admin,
        "--config",
        config,
        "www.example.com",
        "A",
        MILTON_US,
    ]);
    assert!(!ok, "{err}");
}
