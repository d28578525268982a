//! One probe: an HTTP(S) `GET` (2xx is success) or a TCP connect, bounded by a timeout, with
//! a short human-readable reason either way.

use std::error::Error as _;
use std::io;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

use super::Target;

/// What one probe found.
#[derive(Debug)]
pub(super) struct Outcome {
    pub ok: bool,
    pub reason: String,
    pub latency: Duration,
}

pub(super) async fn probe(
    client: &Result<reqwest::Client, String>,
    target: &Target,
    timeout: Duration,
) -> Outcome {
    let start = Instant::now();
    let result = tokio::time::timeout(timeout, attempt(client, target)).await;
    let latency = start.elapsed();
    let (ok, reason) = match result {
        Ok(Ok(())) => (true, format!("ok ({} ms)", latency.as_millis())),
        Ok(Err(reason)) => (false, reason),
        Err(_) => (false, format!("timeout after {}", fmt_duration(timeout))),
    };
    Outcome {
        ok,
        reason,
        latency,
    }
}

async fn attempt(client: &Result<reqwest::Client, String>, target: &Target) -> Result<(), String> {
    match target {
        Target::Tcp(address) => {
            TcpStream::connect(address.as_str())
                .await
                .map_err(|e| io_reason(&e))?;
            Ok(())
        }
        Target::Http(url) => {
            let client = client
                .as_ref()
                .map_err(|e| format!("HTTP client unavailable: {e}"))?;
            let response = client.get(url).send().await.map_err(|e| http_reason(&e))?;
            let status = response.status();
            if status.is_success() {
                Ok(())
            } else {
                Err(format!("HTTP {}", status.as_u16()))
            }
        }
    }
}

/// `"connect refused"` and friends for the common connect failures.
fn io_reason(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "connect refused".to_string(),
        io::ErrorKind::ConnectionReset => "connection reset".to_string(),
        io::ErrorKind::ConnectionAborted => "connection aborted".to_string(),
        io::ErrorKind::UnexpectedEof => "connection closed".to_string(),
        io::ErrorKind::TimedOut => "connect timed out".to_string(),
        io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => {
            format!("unreachable: {e}")
        }
        _ => format!("connect error: {e}"),
    }
}

/// The cause of a failed request, from the innermost error that says something useful.
fn http_reason(e: &reqwest::Error) -> String {
    let mut deepest: Option<String> = None;
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<io::Error>() {
            match io.kind() {
                io::ErrorKind::ConnectionRefused
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::UnexpectedEof
                | io::ErrorKind::TimedOut
                | io::ErrorKind::HostUnreachable
                | io::ErrorKind::NetworkUnreachable => return io_reason(io),
                _ => {}
            }
        }
        deepest = Some(s.to_string());
        source = s.source();
    }
    let class = if e.is_builder() {
        "bad url"
    } else if e.is_connect() {
        "connect error"
    } else {
        "request error"
    };
    match deepest {
        Some(cause) => format!("{class}: {cause}"),
        None => format!("{class}: {e}"),
    }
}

/// `500ms`, `2s`, `1.5s`.
pub(super) fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{}s", d.as_secs_f64())
    }
}
