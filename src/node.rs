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
use crate::geo::GeoDb;
use crate::model::{Datacenter, DatacentersFile, Service, ServicesFile};
use crate::snapshot::{self, Builder, Inputs, Snapshot};

use crate::zone::{self, ZoneFile};

/// Everything `meridian check` validates, loaded without opening a store or binding a port.
pub struct Loaded {
    pub zones: Vec<ZoneFile>,
    pub datacenters: Vec<Datacenter>,
    pub services: Vec<Service>,
    pub geo: Arc<GeoDb>,
}

impl Loaded {
    pub fn inputs(&self) -> Inputs<'_> {
        Inputs {
            zones: &self.zones,
            datacenters: &self.datacenters,
            services: &self.services,
        }
    }
}

/// Why the node's files cannot be served: one line per problem, `file:line: message`.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.join("\n"))]
pub struct LoadError(pub Vec<String>);

/// Read and check the GeoIP database and the bootstrap directory (zones, datacenters,
/// services), and build a snapshot from them. Used by `serve` and by `check`.
pub fn load(config: &NodeConfig) -> Result<(Loaded, Builder, Snapshot), LoadError> {
    let mut problems = Vec::new();
    let geo = if config.geoip_databases.is_empty() {
        GeoDb::empty()
    } else {
        match GeoDb::open(&config.geoip_databases) {
            Ok(db) => db,
            Err(e) => {
                problems.push(e.to_string());
                GeoDb::empty()
            }
        }
    };
    let mut loaded = Loaded {
        zones: Vec::new(),
        datacenters: Vec::new(),
        services: Vec::new(),
        geo: Arc::new(geo),
    };
    if let Some(dir) = &config.bootstrap_dir {
        match zone::load_zone_dir(dir) {
            Ok(files) => loaded.zones = files,
            Err(errors) => problems.extend(errors.iter().map(|e| e.to_string())),
        }
        let dcs = dir.join("datacenters.toml");
        if let Some(f) = read_toml::<DatacentersFile>(&dcs, &mut problems) {
            loaded.datacenters = f.datacenter;
        }
        let svcs = dir.join("services.toml");
        if let Some(f) = read_toml::<ServicesFile>(&svcs, &mut problems) {
            loaded.services = f.service;
        }
    }
    if !problems.is_empty() {
        return Err(LoadError(problems));
    }
    let mut builder = Builder::new(config.node_id, loaded.geo.clone());
    let snap = builder.build(&loaded.inputs()).map_err(LoadError)?;
    Ok((loaded, builder, snap))
}

/// Read an optional TOML file; errors become `file:line: message`.
fn read_toml<T: serde::de::DeserializeOwned>(path: &Path, problems: &mut Vec<String>) -> Option<T> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            problems.push(format!("{}: {e}", path.display()));
            return None;
        }
    };
    match toml::from_str(&text) {
        Ok(v) => Some(v),
        Err(e) => {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            let msg = e.message().replace('\n', " ");
            problems.push(match line {
                Some(l) => format!("{}:{l}: {msg}", path.display()),
                None => format!("{}: {msg}", path.display()),
            });
            None
        }
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

    let (loaded, builder, first) = load(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
    tracing::info!(
        zones = first.zones.len(),
        datacenters = loaded.datacenters.len(),
        services = loaded.services.len(),
        geoip = %loaded.geo.describe(),
        "state loaded"
    );
    let publisher = snapshot::channel(first);
    let reader = publisher.reader();
    let (updates, updates_rx) = tokio::sync::mpsc::channel(16);
    let publisher_task = tokio::spawn(publish_loop(updates_rx, builder, loaded, publisher));
    let geo_watch = tokio::spawn(watch_geoip(config.geoip_databases.clone(), updates));

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
    geo_watch.abort();
    publisher_task.abort();
    let joined = tokio::task::spawn_blocking(move || {
        for t in udp_threads {
            let _ = t.join();
        }
    });
    let _ = tokio::time::timeout(std::time::Duration::from_secs(3), joined).await;
    Ok(())
}

/// What makes the data plane's snapshot change.
enum Update {
    /// A new GeoIP database was opened.
    Geo(Arc<GeoDb>),
}

/// The one writer of snapshots: every change arrives here, is built into a new snapshot
/// and published. A change that does not build is logged and the old snapshot stays.
async fn publish_loop(
    mut updates: tokio::sync::mpsc::Receiver<Update>,
    mut builder: Builder,
    loaded: Loaded,
    publisher: snapshot::SnapshotPublisher,
) {
    while let Some(update) = updates.recv().await {
        match update {
            Update::Geo(db) => builder.set_geo(db),
        }
        match builder.build(&loaded.inputs()) {
            Ok(snap) => {
                publisher.publish(snap);
                tracing::info!(generation = publisher.current().generation, "snapshot published");
            }
            Err(problems) => {
                tracing::warn!(problems = %problems.join("; "), "new snapshot refused; keeping the old one")
            }
        }
    }
}

/// How often the GeoIP files are looked at for a replacement.
const GEOIP_POLL: std::time::Duration = std::time::Duration::from_secs(2);

/// Pick up a GeoIP database replaced on disk (by rename, so its inode changes; or
/// rewritten). A file that does not open is logged and the old database stays.
async fn watch_geoip(paths: Vec<std::path::PathBuf>, updates: tokio::sync::mpsc::Sender<Update>) {
    if paths.is_empty() {
        return;
    }
    let mut last = fingerprint(&paths);
    loop {
        tokio::time::sleep(GEOIP_POLL).await;
        let now = fingerprint(&paths);
        if now == last {
            continue;
        }
        last = now;
        let p = paths.clone();
        match tokio::task::spawn_blocking(move || GeoDb::open(&p)).await {
            Ok(Ok(db)) => {
                tracing::info!(geoip = %db.describe(), "GeoIP database replaced");
                if updates.send(Update::Geo(Arc::new(db))).await.is_err() {
                    return;
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "new GeoIP database refused; keeping the old one"),
            Err(e) => tracing::warn!(error = %e, "GeoIP reload failed"),
        }
    }
}

/// Identity of each file: device, inode, size and modification time.
fn fingerprint(paths: &[std::path::PathBuf]) -> Vec<Option<(u64, u64, u64, std::time::SystemTime)>> {
    use std::os::unix::fs::MetadataExt;
    paths
        .iter()
        .map(|p| {
            std::fs::metadata(p)
                .ok()
                .map(|m| (m.dev(), m.ino(), m.len(), m.modified().unwrap_or(std::time::UNIX_EPOCH)))
        })
        .collect()
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
