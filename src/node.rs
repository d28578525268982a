//! Wiring one node: load its state, publish the first snapshot, bind the DNS and admin
//! sockets, serve, and stop cleanly on SIGTERM or SIGINT.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;

use crate::admin::{self, Readiness};
use crate::config::NodeConfig;
use crate::dns::{tcp, udp};
use crate::snapshot::{self, Snapshot};
use crate::zone::{self, Zone, ZoneSet};

/// Everything `meridian check` validates, loaded without opening a store or binding a port.
pub struct Loaded {
    pub zones: ZoneSet,
}

/// Why the node's files cannot be served: one line per problem, `file:line: message`.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.join("\n"))]
pub struct LoadError(pub Vec<String>);

/// Read and check the bootstrap directory (zones). Used by `serve` and by `check`.
pub fn load(config: &NodeConfig) -> Result<Loaded, LoadError> {
    let mut problems = Vec::new();
    let mut zones = Vec::new();
    if let Some(dir) = &config.bootstrap_dir {
        match zone::load_zone_dir(dir) {
            Ok(files) => {
                for file in files {
                    match Zone::build(&file) {
                        Ok(z) => zones.push(z),
                        Err(e) => problems.push(format!("{}: {e}", file.origin)),
                    }
                }
            }
            Err(errors) => problems.extend(errors.iter().map(|e| e.to_string())),
        }
    }
    if problems.is_empty() {
        Ok(Loaded {
            zones: ZoneSet::new(zones),
        })
    } else {
        Err(LoadError(problems))
    }
}

/// Run a node until SIGTERM or SIGINT.
pub async fn run(config: NodeConfig) -> anyhow::Result<()> {
    raise_fd_limit();
    let ready = Readiness::default();

    // The admin API comes up first so that /healthz says 503 while we load.
    let admin_listener = tokio::net::TcpListener::bind(config.admin_listen)
        .await
        .with_context(|| format!("cannot bind the admin API to {}", config.admin_listen))?;
    let admin_task = tokio::spawn(serve_admin(admin_listener, ready.clone()));

    let loaded = load(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut first = Snapshot::empty(config.node_id);
    first.zones = Arc::new(loaded.zones);
    tracing::info!(zones = first.zones.len(), "zones loaded");
    let publisher = snapshot::channel(first);
    let reader = publisher.reader();

    let stop = Arc::new(AtomicBool::new(false));
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get().min(4));
    let mut udp_threads = Vec::new();
    let pool = tcp::Pool::new(tcp::TcpLimits::default());
    let mut tcp_tasks = Vec::new();
    for addr in &config.dns_listen {
        let socket = udp::bind(*addr).with_context(|| format!("cannot bind DNS (UDP) to {addr}"))?;
        udp_threads.extend(
            udp::spawn(socket, threads, reader.clone(), stop.clone())
                .context("cannot start UDP workers")?,
        );
        let listener = bind_tcp(*addr).with_context(|| format!("cannot bind DNS (TCP) to {addr}"))?;
        tcp_tasks.push(tokio::spawn(tcp::serve(listener, pool.clone(), reader.clone())));
        tracing::info!(%addr, "DNS listening (UDP and TCP)");
    }
    ready.set_ready();
    tracing::info!(admin = %config.admin_listen, "node ready");

    shutdown_signal().await;
    tracing::info!("stopping");
    stop.store(true, Ordering::Relaxed);
    for t in tcp_tasks {
        t.abort();
    }
    admin_task.abort();
    let joined = tokio::task::spawn_blocking(move || {
        for t in udp_threads {
            let _ = t.join();
        }
    });
    let _ = tokio::time::timeout(std::time::Duration::from_secs(3), joined).await;
    drop(publisher);
    Ok(())
}

async fn serve_admin(listener: tokio::net::TcpListener, ready: Readiness) {
    if let Err(e) = axum::serve(listener, admin::router(ready)).await {
        tracing::error!(error = %e, "admin API stopped");
    }
}

fn bind_tcp(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let domain = if addr.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let socket = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    tokio::net::TcpListener::from_std(socket.into())
}

/// TCP connections need file descriptors: take what the hard limit allows.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// The config `serve` and `check` use: the file, or the built-in defaults.
pub fn config_from(path: Option<&Path>) -> anyhow::Result<NodeConfig> {
    match path {
        Some(p) => NodeConfig::load(p).map_err(|e| anyhow::anyhow!("{e}")),
        None => Ok(NodeConfig::defaults()),
    }
}
