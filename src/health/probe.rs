//! One probe: an HTTP(S) `GET` (2xx is success) or a TCP connect, bounded by a timeout, with
//! a short reason either way. Reasons are coarse on purpose (`connect refused`, `timeout
//! after 500ms`, `HTTP 503`…): they are replicated and shown to API readers, so they name no
//! URL, credential, certificate or OS message (those go to this node's debug log). A probe
//! that could not be made for a reason on this node (out of descriptors, memory or buffer
//! space, no local port) is *local*: it says nothing about the datacenter.

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
    /// The probe failed for a reason on this node: no opinion about the datacenter.
    pub local: bool,
}

/// Why a probe failed.
#[derive(Debug, PartialEq, Eq)]
enum Failure {
    /// The datacenter's fault (or the network's): a coarse reason.
    Remote(String),
    /// This node's: out of descriptors, memory, buffers or local ports.
    Local(String),
}

pub(super) async fn probe(
    client: &Result<reqwest::Client, String>,
    target: &Target,
    timeout: Duration,
) -> Outcome {
    let start = Instant::now();
    let result = tokio::time::timeout(timeout, attempt(client, target)).await;
    let latency = start.elapsed();
    let (ok, reason, local) = match result {
        Ok(Ok(())) => (true, format!("ok ({} ms)", latency.as_millis()), false),
        Ok(Err(Failure::Remote(reason))) => (false, reason, false),
        Ok(Err(Failure::Local(reason))) => (false, reason, true),
        Err(_) => (
            false,
            format!("timeout after {}", fmt_duration(timeout)),
            false,
        ),
    };
    Outcome {
        ok,
        reason,
        latency,
        local,
    }
}

async fn attempt(client: &Result<reqwest::Client, String>, target: &Target) -> Result<(), Failure> {
    match target {
        Target::Tcp(address) => {
            TcpStream::connect(address.as_str())
                .await
                .map_err(|e| io_failure(&e))?;
            Ok(())
        }
        Target::Http(url) => {
            let client = client
                .as_ref()
                .map_err(|_| Failure::Local("HTTP client unavailable".to_string()))?;
            let response = client.get(url).send().await.map_err(|e| http_failure(&e))?;
            let status = response.status();
            if status.is_success() {
                Ok(())
            } else {
                Err(Failure::Remote(format!("HTTP {}", status.as_u16())))
            }
        }
    }
}

/// Whether an error is this node's own shortage: descriptors (EMFILE, ENFILE), memory
/// (ENOMEM), buffer space (ENOBUFS) or local ports (EADDRNOTAVAIL on connect).
fn is_local(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::ENOBUFS | libc::EADDRNOTAVAIL)
    ) || e.kind() == io::ErrorKind::OutOfMemory
}

/// `"connect refused"` and friends for the common connect failures.
fn io_failure(e: &io::Error) -> Failure {
    if is_local(e) {
        return Failure::Local(format!("local error: {e}"));
    }
    Failure::Remote(
        match e.kind() {
            io::ErrorKind::ConnectionRefused => "connect refused",
            io::ErrorKind::ConnectionReset => "connection reset",
            io::ErrorKind::ConnectionAborted => "connection aborted",
            io::ErrorKind::UnexpectedEof => "connection closed",
            io::ErrorKind::TimedOut => "connect timed out",
            io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => "unreachable",
            _ => "connect error",
        }
        .to_string(),
    )
}

/// The class of a failed request, from the innermost I/O error when there is one. The
/// details (without the URL, which may hold credentials) go to the debug log only.
fn http_failure(e: &reqwest::Error) -> Failure {
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<io::Error>() {
            if is_local(io) {
                return Failure::Local(format!("local error: {io}"));
            }
            if io.kind() != io::ErrorKind::Other {
                return io_failure(io);
            }
        }
        source = s.source();
    }
    // The error's causes, not the error itself: its text names the URL.
    let mut chain = Vec::new();
    let mut source = e.source();
    while let Some(s) = source {
        chain.push(s.to_string());
        source = s.source();
    }
    tracing::debug!(cause = %chain.join(": "), "health: probe request failed");
    let class = if e.is_builder() {
        "bad url"
    } else if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect error"
    } else {
        "request error"
    };
    Failure::Remote(class.to_string())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_shortages_are_no_opinion_and_the_rest_coarse() {
        for errno in [
            libc::EMFILE,
            libc::ENFILE,
            libc::ENOMEM,
            libc::ENOBUFS,
            libc::EADDRNOTAVAIL,
        ] {
            let e = io::Error::from_raw_os_error(errno);
            assert!(matches!(io_failure(&e), Failure::Local(_)), "{e}");
        }
        let refused = io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert_eq!(
            io_failure(&refused),
            Failure::Remote("connect refused".into())
        );
        let other = io::Error::from_raw_os_error(libc::EPROTO);
        assert_eq!(io_failure(&other), Failure::Remote("connect error".into()));
        let unreachable = io::Error::from_raw_os_error(libc::EHOSTUNREACH);
        assert_eq!(
            io_failure(&unreachable),
            Failure::Remote("unreachable".into())
        );
    }
}
