//! Probers against real loopback servers.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{timeout, Instant};

use super::probe::fmt_duration;
use super::*;
use crate::model::CheckDuration;

const HOUR: Duration = Duration::from_secs(3600);

fn dc(id: &str, hc: HealthCheck) -> Datacenter {
    Datacenter {
        health_check: Some(hc),
        ..crate::model::fixtures::datacenter(id, 0.0, 0.0, "192.0.2.1")
    }
}

fn http(url: String, interval: &str, timeout: Option<&str>, rise: u32, fall: u32) -> HealthCheck {
    HealthCheck::Http {
        url,
        interval: Some(CheckDuration::parse(interval).expect("interval")),
        timeout: timeout.map(|t| CheckDuration::parse(t).expect("timeout")),
        rise: Some(rise),
        fall: Some(fall),
    }
}

fn tcp(address: String, interval: &str, rise: u32, fall: u32) -> HealthCheck {
    HealthCheck::Tcp {
        address,
        interval: Some(CheckDuration::parse(interval).expect("interval")),
        timeout: None,
        rise: Some(rise),
        fall: Some(fall),
    }
}

fn prober(reaffirm_every: Duration) -> (Prober, mpsc::Receiver<Verdict>) {
    let (tx, rx) = mpsc::channel(64);
    let settings = Settings {
        reaffirm_every,
        ..Settings::default()
    };
    (Prober::start_with(tx, settings), rx)
}

async fn next(rx: &mut mpsc::Receiver<Verdict>, within: Duration) -> Verdict {
    timeout(within, rx.recv())
        .await
        .expect("a verdict before the deadline")
        .expect("channel open")
}

/// Every verdict that arrives within `window`.
async fn collect(rx: &mut mpsc::Receiver<Verdict>, window: Duration) -> Vec<(Instant, Verdict)> {
    let deadline = Instant::now() + window;
    let mut out = Vec::new();
    while let Ok(Some(v)) = tokio::time::timeout_at(deadline, rx.recv()).await {
        out.push((Instant::now(), v));
    }
    out
}

/// A port nothing listens on.
async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    l.local_addr().expect("addr")
}

/// A tiny HTTP server: 200 while `healthy`, else 503; counts what it served.
struct HttpServer {
    addr: SocketAddr,
    healthy: Arc<AtomicBool>,
    served_ok: Arc<AtomicU64>,
    served_bad: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn http_server() -> HttpServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let healthy = Arc::new(AtomicBool::new(true));
    let served_ok = Arc::new(AtomicU64::new(0));
    let served_bad = Arc::new(AtomicU64::new(0));
    let (h, ok, bad) = (healthy.clone(), served_ok.clone(), served_bad.clone());
    let task = tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let (h, ok, bad) = (h.clone(), ok.clone(), bad.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                // Until the end of the headers, or a TLS record (answered in plain text).
                while !buf.windows(4).any(|w| w == b"\r\n\r\n")
                    && buf.first() != Some(&0x16)
                    && buf.len() < 16384
                {
                    match conn.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let status = if h.load(Ordering::SeqCst) {
                    ok.fetch_add(1, Ordering::SeqCst);
                    "200 OK"
                } else {
                    bad.fetch_add(1, Ordering::SeqCst);
                    "503 Service Unavailable"
                };
                let response =
                    format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                let _ = conn.write_all(response.as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    HttpServer {
        addr,
        healthy,
        served_ok,
        served_bad,
        task,
    }
}

/// A listener that accepts and drops connections; abort the task to close it.
async fn tcp_server() -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            drop(conn);
        }
    });
    (addr, task)
}

#[test]
fn tracker_rise_fall() {
    let mut t = Tracker::new(2, 3);
    assert_eq!(t.record(true), None);
    assert_eq!(t.record(false), None, "a failure resets the success streak");
    assert_eq!(t.record(true), None);
    assert_eq!(t.record(true), Some(true), "first verdict at rise");
    assert_eq!(t.record(true), None, "no repeat");
    assert_eq!(t.record(false), None);
    assert_eq!(t.record(false), None);
    assert_eq!(t.record(false), Some(false), "down at fall");
    assert_eq!(t.record(false), None);
    assert_eq!(t.record(true), None);
    assert_eq!(t.record(true), Some(true));

    let mut t = Tracker::new(2, 1);
    assert_eq!(t.record(false), Some(false), "first verdict may be down");
    let mut t = Tracker::new(0, 0);
    assert_eq!(t.record(true), Some(true), "rise 0 acts as 1");
}

#[test]
fn check_defaults_and_clamp() {
    let c = Check::resolve(&HealthCheck::Tcp {
        address: "127.0.0.1:1".into(),
        interval: None,
        timeout: None,
        rise: None,
        fall: None,
    });
    assert_eq!(c.interval, DEFAULT_INTERVAL);
    assert_eq!(c.timeout, DEFAULT_TIMEOUT);
    assert_eq!((c.rise, c.fall), (DEFAULT_RISE, DEFAULT_FALL));
    assert!(DEFAULT_TIMEOUT < DEFAULT_INTERVAL);

    let c = Check::resolve(&http("http://x/".into(), "100ms", Some("5s"), 0, 3));
    assert_eq!(c.interval, Duration::from_millis(100));
    assert_eq!(
        c.timeout,
        Duration::from_millis(90),
        "timeout clamped below interval"
    );
    assert_eq!((c.rise, c.fall), (1, 3));

    // A duration that does not parse, or is zero, never gets this far: it is refused when
    // the datacenter is read.
    assert!(CheckDuration::parse("bogus").is_err());
    assert!(CheckDuration::parse("0ms").is_err());
    let json = r#"{"kind": "tcp", "address": "127.0.0.1:1", "interval": "0ms"}"#;
    let err = serde_json::from_str::<HealthCheck>(json)
        .map(|_| ())
        .unwrap_err();
    assert!(err.to_string().contains("must be more than 0"), "{err}");
    let json = r#"{"kind": "tcp", "address": "127.0.0.1:1", "interval": "1.5s"}"#;
    let hc: HealthCheck = serde_json::from_str(json).expect("parses");
    assert_eq!(
        serde_json::to_value(&hc).expect("json")["interval"],
        "1.5s",
        "read back as written"
    );
    let c = Check::resolve(&hc);
    assert_eq!(c.interval, Duration::from_millis(1500));
}

#[test]
fn histogram_buckets() {
    let mut s = ProbeStats::new("lon", "tcp");
    for ms in [0.5, 1.0, 3.0, 120.0, 5000.0] {
        s.record(true, Duration::from_secs_f64(ms / 1000.0));
    }
    s.record(false, Duration::from_millis(7));
    assert_eq!(s.latency_buckets, [2, 1, 1, 0, 0, 0, 1, 0, 0, 1]);
    assert_eq!(s.cumulative_buckets(), [2, 3, 4, 4, 4, 4, 5, 5, 5, 6]);
    assert_eq!((s.probes, s.failures), (6, 1));
    assert_eq!(s.last_latency_ms, Some(7.0));
    assert_eq!(fmt_duration(Duration::from_millis(500)), "500ms");
    assert_eq!(fmt_duration(Duration::from_secs(2)), "2s");
    assert_eq!(fmt_duration(Duration::from_millis(1500)), "1.5s");
}

#[tokio::test]
async fn http_up_then_one_down_then_one_up() {
    let server = http_server().await;
    let (p, mut rx) = prober(HOUR);
    let url = format!("http://{}/health", server.addr);
    p.update(&[dc("lon", http(url, "100ms", None, 2, 2))]);

    let v = next(&mut rx, Duration::from_secs(2)).await;
    assert_eq!((v.dc.as_str(), v.up), ("lon", true), "{v:?}");
    assert!(v.reason.starts_with("ok ("), "{v:?}");
    assert!(
        server.served_ok.load(Ordering::SeqCst) >= 2,
        "up only after rise probes"
    );

    server.healthy.store(false, Ordering::SeqCst);
    let v = next(&mut rx, Duration::from_secs(2)).await;
    assert_eq!((v.up, v.reason.as_str()), (false, "HTTP 503"), "{v:?}");
    assert!(
        server.served_bad.load(Ordering::SeqCst) >= 2,
        "down only after fall probes"
    );
    assert!(
        collect(&mut rx, Duration::from_millis(250))
            .await
            .is_empty(),
        "one transition"
    );

    server.healthy.store(true, Ordering::SeqCst);
    let v = next(&mut rx, Duration::from_secs(2)).await;
    assert!(v.up, "{v:?}");
    assert!(
        collect(&mut rx, Duration::from_millis(250))
            .await
            .is_empty(),
        "one transition"
    );

    let stats = p.stats();
    assert_eq!(stats.len(), 1);
    assert_eq!(
        (stats[0].dc.as_str(), stats[0].kind, stats[0].up),
        ("lon", "http", Some(true))
    );
    assert!(
        stats[0].failures >= 2 && stats[0].probes > stats[0].failures,
        "{stats:?}"
    );
    assert!(stats[0].last_latency_ms.is_some());
}

#[tokio::test]
async fn tcp_up_then_listener_dropped_is_down() {
    let (addr, listener) = tcp_server().await;
    let (p, mut rx) = prober(HOUR);
    p.update(&[dc("nyc", tcp(addr.to_string(), "100ms", 2, 2))]);
    let v = next(&mut rx, Duration::from_secs(2)).await;
    assert!(v.up, "{v:?}");

    listener.abort();
    let v = next(&mut rx, Duration::from_secs(2)).await;
    assert_eq!(
        (v.up, v.reason.as_str()),
        (false, "connect refused"),
        "{v:?}"
    );
}

#[tokio::test]
async fn wrong_port_is_down_without_flood() {
    let port = closed_port().await;
    let (p, mut rx) = prober(HOUR);
    let started = Instant::now();
    p.update(&[
        dc("tcp", tcp(port.to_string(), "100ms", 2, 2)),
        dc("http", http(format!("http://{port}/"), "100ms", None, 2, 2)),
    ]);
    let mut seen = Vec::new();
    while seen.len() < 2 {
        seen.push(next(&mut rx, Duration::from_secs(2)).await);
    }
    for v in &seen {
        assert_eq!(
            (v.up, v.reason.as_str()),
            (false, "connect refused"),
            "{v:?}"
        );
    }
    tokio::time::sleep_until(started + Duration::from_secs(1)).await;
    for s in p.stats() {
        assert!(
            (7..=13).contains(&s.probes),
            "about 10 probes in 1 s at 100ms: {s:?}"
        );
        assert_eq!(s.failures, s.probes);
    }
    assert!(collect(&mut rx, Duration::from_millis(50)).await.is_empty());
}

#[tokio::test]
async fn server_that_never_answers_times_out() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = listener.accept().await {
            held.push(conn);
        }
    });
    let (p, mut rx) = prober(HOUR);
    p.update(&[dc(
        "sin",
        http(format!("http://{addr}/"), "200ms", Some("50ms"), 1, 1),
    )]);
    let v = next(&mut rx, Duration::from_secs(2)).await;
    assert_eq!(
        (v.up, v.reason.as_str()),
        (false, "timeout after 50ms"),
        "{v:?}"
    );
    let s = &p.stats()[0];
    let ms = s.last_latency_ms.expect("latency");
    assert!((45.0..190.0).contains(&ms), "{s:?}");
    silent.abort();
}

#[tokio::test]
async fn https_is_supported() {
    // A plain-HTTP server spoken to over TLS: the handshake fails, as a down verdict.
    let server = http_server().await;
    let (p, mut rx) = prober(HOUR);
    p.update(&[dc(
        "fra",
        http(format!("https://{}/", server.addr), "100ms", None, 1, 1),
    )]);
    let v = next(&mut rx, Duration::from_secs(2)).await;
    assert!(!v.up, "{v:?}");
    assert_eq!(
        v.reason, "connect error",
        "a TLS handshake failure, not a timeout or an unsupported scheme: {v:?}"
    );
}

#[tokio::test]
async fn reasons_name_no_url_or_credentials() {
    let port = closed_port().await;
    let (p, mut rx) = prober(HOUR);
    p.update(&[dc(
        "ams",
        http(
            format!("http://monitor:hunter2@{port}/health?api_key=s3cret"),
            "100ms",
            None,
            1,
            1,
        ),
    )]);
    let v = next(&mut rx, Duration::from_secs(2)).await;
    assert_eq!(
        (v.up, v.reason.as_str()),
        (false, "connect refused"),
        "{v:?}"
    );
}

#[tokio::test]
async fn update_removing_a_dc_stops_its_reports() {
    let port = closed_port().await;
    let (p, mut rx) = prober(Duration::from_millis(150));
    let lon = dc("lon", tcp(port.to_string(), "50ms", 1, 1));
    let nyc = dc("nyc", tcp(port.to_string(), "50ms", 1, 1));
    p.update(&[lon.clone(), nyc]);
    let mut seen = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(2);
    while seen.len() < 2 {
        let left = deadline.saturating_duration_since(Instant::now());
        seen.insert(next(&mut rx, left).await.dc);
    }

    // A current-thread runtime: once update returns, nyc's task never runs again.
    p.update(&[lon]);
    while rx.try_recv().is_ok() {}
    let later = collect(&mut rx, Duration::from_millis(500)).await;
    assert!(later.iter().all(|(_, v)| v.dc == "lon"), "{later:?}");
    assert!(!later.is_empty(), "lon still re-affirms");
    let stats = p.stats();
    assert_eq!(stats.len(), 1);
    assert_eq!(stats[0].dc, "lon");
}

#[tokio::test]
async fn reaffirms_current_verdict() {
    let (addr, _listener) = tcp_server().await;
    let (p, mut rx) = prober(Duration::from_millis(300));
    p.update(&[dc("syd", tcp(addr.to_string(), "50ms", 1, 1))]);
    let first = next(&mut rx, Duration::from_secs(1)).await;
    assert!(first.up);
    let t0 = Instant::now();
    let again = collect(&mut rx, Duration::from_millis(1000)).await;
    assert!((2..=4).contains(&again.len()), "{again:?}");
    let mut prev = t0;
    for (i, (at, v)) in again.iter().enumerate() {
        assert_eq!((v.dc.as_str(), v.up), ("syd", true));
        if i > 0 {
            assert!(
                at.duration_since(prev) >= Duration::from_millis(250),
                "{again:?}"
            );
        }
        prev = *at;
    }
}

#[tokio::test]
async fn unchanged_check_keeps_running_changed_check_restarts() {
    let (addr, _listener) = tcp_server().await;
    let (p, mut rx) = prober(HOUR);
    let dcs = [dc("ams", tcp(addr.to_string(), "50ms", 1, 1))];
    p.update(&dcs);
    assert!(next(&mut rx, Duration::from_secs(1)).await.up);
    for _ in 0..3 {
        p.update(&dcs);
    }
    assert!(
        collect(&mut rx, Duration::from_millis(250))
            .await
            .is_empty(),
        "an unchanged check is not restarted (a restart would send a new first verdict)"
    );

    let port = closed_port().await;
    p.update(&[dc("ams", tcp(port.to_string(), "50ms", 1, 1))]);
    let v = next(&mut rx, Duration::from_secs(1)).await;
    assert_eq!((v.dc.as_str(), v.up), ("ams", false), "{v:?}");

    // No check any more: the prober stops.
    let mut plain = dc("ams", tcp(port.to_string(), "50ms", 1, 1));
    plain.health_check = None;
    p.update(&[plain]);
    assert!(p.stats().is_empty());
}

#[tokio::test]
async fn drop_stops_everything() {
    let port = closed_port().await;
    let (p, mut rx) = prober(Duration::from_millis(50));
    p.update(&[dc("lon", tcp(port.to_string(), "20ms", 1, 1))]);
    next(&mut rx, Duration::from_secs(1)).await;
    drop(p);
    // Every sender (the prober's and its tasks') is gone: the channel drains and closes.
    timeout(Duration::from_secs(1), async {
        while rx.recv().await.is_some() {}
    })
    .await
    .expect("channel closes once the prober is dropped");
}
