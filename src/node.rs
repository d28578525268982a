//! Wiring one node: load its state, publish the first snapshot, bind the DNS and admin
//! sockets, serve, and stop cleanly on SIGTERM or SIGINT.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;

use crate::admin::{self, Readiness};
use crate::cluster::{self, State};
use crate::config::NodeConfig;
use crate::dns::{tcp, udp};
use crate::geo::GeoDb;
use crate::health;
use crate::model::{Datacenter, DatacentersFile, Service, ServicesFile};
use crate::publisher;
use crate::snapshot::{self, Builder, Inputs, Snapshot};

use crate::zone::{self, ZoneFile};

/// Everything `meridian check` validates, loaded without opening a store or binding a port.
pub struct Loaded {
    pub zones: Vec<ZoneFile>,
    /// (origin, text) of each zone file, as the bootstrap import sends them.
    pub zone_texts: Vec<(String, String)>,
    pub datacenters: Vec<Datacenter>,
    pub services: Vec<Service>,
    /// `tsig.toml`: keys, secrets decoded.
    pub tsig_keys: Vec<crate::zoneconf::TsigKey>,
    /// `zone-settings.toml`: (origin, settings).
    pub zone_settings: Vec<(String, crate::zoneconf::ZoneSettings)>,
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
        zone_texts: Vec::new(),
        datacenters: Vec::new(),
        services: Vec::new(),
        tsig_keys: Vec::new(),
        zone_settings: Vec::new(),
        geo: Arc::new(geo),
    };
    if let Some(dir) = &config.bootstrap_dir {
        match zone::load_zone_dir(dir) {
            Ok(files) => loaded.zones = files,
            Err(errors) => problems.extend(errors.iter().map(|e| e.to_string())),
        }
        match zone_texts(dir) {
            Ok(t) => loaded.zone_texts = t,
            Err(e) => problems.push(format!("{}: {e}", dir.display())),
        }
        let dcs = dir.join("datacenters.toml");
        if let Some(f) = read_toml::<DatacentersFile>(&dcs, &mut problems) {
            loaded.datacenters = f.datacenter;
        }
        let svcs = dir.join("services.toml");
        if let Some(f) = read_toml::<ServicesFile>(&svcs, &mut problems) {
            loaded.services = f.service;
        }
        let tsig = dir.join("tsig.toml");
        if let Some(f) = read_toml::<crate::zoneconf::TsigFile>(&tsig, &mut problems) {
            for spec in f.key {
                let name = spec.name.clone().unwrap_or_default();
                match spec.to_key(&name) {
                    Ok(k) => loaded.tsig_keys.push(k),
                    Err(e) => problems.push(format!("{}: key {name:?}: {e}", tsig.display())),
                }
            }
        }
        let settings = dir.join("zone-settings.toml");
        if let Some(f) = read_toml::<crate::zoneconf::ZoneSettingsFile>(&settings, &mut problems) {
            loaded.zone_settings = f.zone.into_iter().map(|z| (z.origin, z.settings)).collect();
        }
    }
    if !problems.is_empty() {
        return Err(LoadError(problems));
    }
    let mut builder = Builder::new(config.node_id, loaded.geo.clone());
    let snap = builder.build(&loaded.inputs()).map_err(LoadError)?;
    Ok((loaded, builder, snap))
}

/// The text of every `NAME.zone` in a directory, with its origin `NAME.`.
fn zone_texts(dir: &Path) -> std::io::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        if let Some(origin) = name.strip_suffix(".zone") {
            out.push((format!("{origin}."), std::fs::read_to_string(&path)?));
        }
    }
    out.sort();
    Ok(out)
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

/// The longest a node takes to stop after SIGTERM or SIGINT.
const SHUTDOWN_LIMIT: std::time::Duration = std::time::Duration::from_secs(15);

/// Run a node until SIGTERM or SIGINT.
pub async fn run(config: NodeConfig) -> anyhow::Result<()> {
    // Raise the open-file limit, then share it out: DNS over TCP, the admin API and Raft each
    // get a cap, and a reserve stays for the store, GeoIP, probes and outgoing Raft.
    let tcp_limits = tcp::TcpLimits::default();
    let open_files = match tcp::raise_fd_limit() {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read or raise the open-file limit");
            1024
        }
    };
    let (admin_limits, raft_limits) =
        crate::serve::Limits::fit(open_files, tcp_limits.max_connections as u64);
    let ready = Readiness::default();
    // SIGHUP asks for a reload (subscribe with `service.reloads()`); systemd hears READY=1
    // when `ready` is set.
    let service = crate::service::Service::start(ready.clone()).context("cannot catch SIGHUP")?;

    // Claim the admin and Raft ports first.
    let admin_listener = tokio::net::TcpListener::bind(config.admin_listen)
        .await
        .with_context(|| format!("cannot bind the admin API to {}", config.admin_listen))?;
    let raft_listener = tokio::net::TcpListener::bind(config.raft_listen)
        .await
        .with_context(|| format!("cannot bind Raft to {}", config.raft_listen))?;

    // The bootstrap files are checked before anything starts: a broken file is an error at
    // start, never a half-imported cluster.
    let mut bootstrap = match &config.bootstrap_dir {
        // A restart: the state is in the store and the directory will not be imported, so
        // it is not read (a million-record zone would add tens of seconds to every start).
        Some(dir) if cluster::store::holds_applied_state(&config.data_dir.join("raft")) => {
            tracing::info!(
                dir = %dir.display(),
                "the store holds the cluster's state; the bootstrap directory is not read"
            );
            None
        }
        Some(_) => {
            let (loaded, builder, snap) = load(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
            // The texts go on (the import), and the parsed zones to the import's apply
            // (below); what else the check built is freed off the start's path (a zone of
            // a million records takes a while to free).
            std::thread::spawn(move || drop((builder, snap)));
            Some(loaded)
        }
        None => None,
    };
    // TLS material is read now (a bad file stops the start) and re-read when it changes.
    let load_tls = |files: &Option<crate::tls::TlsFiles>, what: &'static str| {
        let tls = files.clone().map(crate::tls::Tls::load).transpose();
        let tls = tls.with_context(|| format!("[{what}] tls"))?;
        if let Some(t) = &tls {
            t.spawn_watch(what);
        }
        anyhow::Ok(tls)
    };
    let raft_tls = load_tls(&config.raft_tls, "raft")?;
    let admin_tls = load_tls(&config.admin_tls, "admin")?;
    let geo = Arc::new(open_geo(&config)?);
    tracing::info!(geoip = %geo.describe(), "GeoIP database loaded");

    let started = cluster::start(cluster::ClusterConfig {
        node_id: config.node_id,
        data_dir: config.data_dir.clone(),
        raft_addr: config.raft_listen.to_string(),
        admin_addr: config.admin_listen.to_string(),
        peers: config
            .raft_peers
            .iter()
            .map(|(id, a)| (*id, a.to_string()))
            .collect(),
        secret: config.raft_secret.clone(),
        tls: raft_tls.clone(),
        max_snapshot: config.raft_max_snapshot,
    })
    .await
    .context("cannot start the control plane")?;
    let handle = started.handle.clone();
    let raft_mode = cluster::network::Transport {
        secret: config.raft_secret.clone(),
        tls: raft_tls,
        max_snapshot: config.raft_max_snapshot,
    }
    .listener(config.raft_listen);
    let raft_task = tokio::spawn(crate::serve::serve(
        raft_listener,
        started.rpc,
        raft_mode,
        raft_limits,
        "raft",
    ));

    // The builder keeps the query counters across snapshots; the first, empty one counts
    // into them too.
    let builder = Builder::new(config.node_id, geo);
    let publisher = snapshot::channel(builder.empty());
    let reader = publisher.reader();
    let import_expected = bootstrap.is_some()
        && config.raft_peers.contains_key(&config.node_id)
        && !started.restarted;
    let gate = ReadyGate {
        ready: ready.clone(),
        import_expected,
        import_done: Arc::new(AtomicBool::new(false)),
        dns_listening: Arc::new(AtomicBool::new(false)),
        started: std::time::Instant::now(),
    };
    let (updates, updates_rx) = tokio::sync::mpsc::channel(16);
    let (verdict_tx, verdicts) = tokio::sync::mpsc::channel(256);
    let prober = Arc::new(health::Prober::start(verdict_tx));
    // `/metrics` reads the prober's statistics; the health loop alone keeps it alive.
    let probe_stats: admin::ProbeStatsFn = {
        let prober = Arc::downgrade(&prober);
        Arc::new(move || prober.upgrade().map(|p| p.stats()).unwrap_or_default())
    };
    let health_task = tokio::spawn(health_loop(
        started.applied.clone(),
        handle.clone(),
        prober,
        verdicts,
    ));
    let (published_tx, published) = tokio::sync::watch::channel(None);
    let on_publish: publisher::OnPublish = {
        let gate = gate.clone();
        Box::new(move |state, last_applied| gate.check(state, last_applied))
    };
    let publisher_task = tokio::spawn(publisher::run(
        crate::notify::tee(started.changes, handle.clone()),
        updates_rx,
        builder,
        publisher,
        published_tx,
        on_publish,
    ));
    let geo_watch = tokio::spawn(watch_geoip(config.geoip_databases.clone(), updates.clone()));
    if let Some(b) = &mut bootstrap {
        let parsed = std::mem::take(&mut b.zones);
        if import_expected {
            // Applying the import parses the same texts: it takes these instead.
            let texts: HashMap<hickory_proto::rr::Name, &str> = b
                .zone_texts
                .iter()
                .filter_map(|(origin, text)| {
                    let name = hickory_proto::rr::Name::from_ascii(origin).ok()?;
                    Some((name.to_lowercase(), text.as_str()))
                })
                .collect();
            for file in parsed {
                if let Some(text) = texts.get(&file.origin) {
                    zone::handover::offer(&file.origin.clone(), text, file);
                }
            }
        } else {
            std::thread::spawn(move || drop(parsed));
        }
    }
    let import_task = bootstrap.filter(|_| import_expected).map(|b| {
        tokio::spawn(import_bootstrap(
            handle.clone(),
            b,
            gate.import_done.clone(),
            updates.clone(),
        ))
    });

    let cookie_task = tokio::spawn(ensure_cookie_secret(handle.clone()));
    let rollover_task = tokio::spawn(cluster::rollover::run(handle.clone()));

    let stop = Arc::new(AtomicBool::new(false));
    let dns_options = crate::dns::Options {
        rate_limit: config.rate_limit,
        cookies: config.cookies,
    };
    if let Some(rl) = &config.rate_limit {
        tracing::info!(
            responses_per_second = rl.responses_per_second,
            slip = rl.slip,
            ipv4_prefix = rl.ipv4_prefix,
            ipv6_prefix = rl.ipv6_prefix,
            "response rate limiting on (UDP)"
        );
    }
    let threads = udp::worker_count();
    let mut udp_threads = Vec::new();
    let pool = tcp::Pool::new(tcp_limits);
    if open_files < pool.fds_wanted() {
        tracing::warn!(
            open_files,
            wanted = pool.fds_wanted(),
            "the open-file limit is below the TCP connection cap; \
             idle connections will be closed early to make room"
        );
    }
    let mut tcp_tasks = Vec::new();
    let dnstap = crate::dnstap::start_logged(config.dnstap.as_ref())?;
    let tcp_tap = dnstap.as_ref().map(crate::dnstap::Dnstap::tap);
    let special = crate::dns::xfr::Context {
        updater: Some(Arc::new(crate::dnsupdate::ClusterUpdater::new(
            handle.clone(),
            Some(published.clone()),
        ))),
    };
    for addr in &config.dns_listen {
        let sockets = udp::bind_group(*addr, threads)
            .with_context(|| format!("cannot bind DNS (UDP) to {addr}"))?;
        let slow = match sockets.first().map(|s| s.try_clone()) {
            Some(Ok(s)) => Some(crate::dns::xfr::UdpSlowPath::start(
                s,
                reader.clone(),
                special.clone(),
            )),
            _ => None,
        };
        udp_threads.extend(
            udp::spawn(
                sockets,
                reader.clone(),
                stop.clone(),
                dnstap.as_ref(),
                dns_options,
                slow,
            )
            .context("cannot start UDP workers")?,
        );
        let listener =
            bind_tcp(*addr).with_context(|| format!("cannot bind DNS (TCP) to {addr}"))?;
        tcp_tasks.push(tokio::spawn(tcp::serve(
            listener,
            pool.clone(),
            reader.clone(),
            tcp_tap.clone(),
            dns_options,
            special.clone(),
        )));
        tracing::info!(%addr, "DNS listening (UDP and TCP)");
    }
    let admin_token = admin::token_cell(admin::Access::of(&config));
    let reload_task = tokio::spawn(reload_on_sighup(
        service.reloads(),
        config.source.clone(),
        admin_token.clone(),
    ));
    let admin = admin::router(admin::AdminContext {
        cluster: handle.clone(),
        reader: reader.clone(),
        ready: ready.clone(),
        token: admin_token.clone(),
        probes: Some(probe_stats),
        published: Some(published),
        max_body: config.admin_max_body,
        hosts: config.admin_hosts.clone(),
    });
    let admin_mode = match admin_tls {
        Some(t) => crate::serve::Transport::Tls(t),
        None => crate::serve::Transport::Plain,
    };
    let admin_task = tokio::spawn(crate::serve::serve(
        admin_listener,
        admin,
        admin_mode,
        admin_limits,
        "admin",
    ));
    // Logs a geo_nearest service without coordinates and a service failing open.
    let degraded_task = tokio::spawn(crate::degraded::watch(reader.clone()));
    // DNS is listening: the publish of a loaded state may now say ready.
    gate.dns_listening.store(true, Ordering::Release);
    let _ = updates.send(publisher::Update::Recheck).await;
    {
        let updates = updates.clone();
        tokio::spawn(async move {
            tokio::time::sleep(COOKIE_WAIT).await;
            let _ = updates.send(publisher::Update::Recheck).await;
        });
    }
    tracing::info!(admin = %config.admin_listen, raft = %config.raft_listen, "node started");

    shutdown_signal().await;
    tracing::info!("stopping");
    // Shutdown is bounded: every write was flushed before it was acknowledged, so nothing is
    // lost if a part that will not stop (a store stuck flushing on a full disk) is cut short.
    std::thread::spawn(|| {
        std::thread::sleep(SHUTDOWN_LIMIT);
        tracing::warn!(limit = ?SHUTDOWN_LIMIT, "shutdown is taking too long; exiting now");
        std::process::exit(0);
    });
    service.stopping();
    stop.store(true, Ordering::Relaxed);
    for t in tcp_tasks {
        t.abort();
    }
    admin_task.abort();
    degraded_task.abort();
    geo_watch.abort();
    health_task.abort();
    cookie_task.abort();
    rollover_task.abort();
    reload_task.abort();
    if let Some(t) = import_task {
        t.abort();
    }
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), handle.shutdown()).await;
    raft_task.abort();
    publisher_task.abort();
    let joined = tokio::task::spawn_blocking(move || {
        for t in udp_threads {
            let _ = t.join();
        }
    });
    let _ = tokio::time::timeout(std::time::Duration::from_secs(3), joined).await;
    crate::dnstap::finish_within(dnstap, std::time::Duration::from_secs(3)).await;
    Ok(())
}

fn open_geo(config: &NodeConfig) -> anyhow::Result<GeoDb> {
    if config.geoip_databases.is_empty() {
        return Ok(GeoDb::empty());
    }
    let db = GeoDb::open(&config.geoip_databases).map_err(|e| anyhow::anyhow!("{e}"))?;
    release_free_memory();
    Ok(db)
}

/// Give the heap that loading a GeoIP database used and freed back to the system: the walk
/// of a large database peaks at more than twice what the tables keep.
fn release_free_memory() {
    // SAFETY: malloc_trim only releases free memory at the top of glibc's heaps.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// When `/healthz` may say 200: DNS listens, and the state is published — after a restart,
/// the node's own; on a new cluster, once the bootstrap import is (when this node imports).
#[derive(Clone)]
struct ReadyGate {
    ready: Readiness,
    import_expected: bool,
    import_done: Arc<AtomicBool>,
    dns_listening: Arc<AtomicBool>,
    /// Readiness waits for the cluster's cookie secret (so that a client's first cookie
    /// stays valid on every node), but no longer than [`COOKIE_WAIT`] after the start (a
    /// node that cannot reach a quorum serves with its own secret meanwhile).
    started: std::time::Instant,
}

/// How long readiness waits for the cluster's DNS cookie secret.
const COOKIE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

impl ReadyGate {
    fn check(&self, state: &State, last_applied: Option<u64>) {
        let loaded = !state.is_empty()
            || (self.import_expected && self.import_done.load(Ordering::Acquire))
            || (!self.import_expected && last_applied.is_some());
        let cookies = state.cookie_secrets().is_some() || self.started.elapsed() >= COOKIE_WAIT;
        if loaded && cookies && self.dns_listening.load(Ordering::Acquire) && !self.ready.is_ready()
        {
            self.ready.set_ready();
            tracing::info!("node ready: state published");
        }
    }
}

/// Import the bootstrap directory once, through the log, on a new cluster. Each initial
/// peer tries while it leads; the state machine applies the first import only.
async fn import_bootstrap(
    handle: cluster::Handle,
    files: Loaded,
    done: Arc<AtomicBool>,
    updates: tokio::sync::mpsc::Sender<publisher::Update>,
) {
    let cmd = cluster::Command::Import {
        zones: files.zone_texts,
        datacenters: files.datacenters,
        services: files.services,
        tsig_keys: files.tsig_keys,
        zone_settings: files.zone_settings,
    };
    let mut attempts = 0u32;
    let import_id = cluster::new_request_id();
    loop {
        if !handle.state().is_empty() {
            break;
        }
        if handle.status().leader == Some(handle.node_id()) {
            // One id for every attempt: an import applies once.
            let req = cluster::Request::with_id(cmd.clone(), import_id.clone()).by("bootstrap");
            match handle.propose(req).await.map(|c| c.response) {
                Ok(cluster::Response::Rejected { why }) => {
                    tracing::error!(error = why.message(), "bootstrap import rejected");
                    break;
                }
                Ok(r) => {
                    tracing::info!(result = ?r, "bootstrap import done");
                    break;
                }
                Err(e) => {
                    attempts += 1;
                    if attempts % 10 == 1 {
                        tracing::warn!(error = %e, "bootstrap import waits for a quorum");
                    }
                    if matches!(e, cluster::WriteError::Unknown(_)) {
                        // The import is in this leader's log (a large one takes a while to
                        // commit): it is proposed again only if this node stops leading
                        // that term, when it may be gone.
                        let term = handle.status().term;
                        loop {
                            let s = handle.status();
                            if !handle.state().is_empty()
                                || s.leader != Some(handle.node_id())
                                || s.term != term
                            {
                                break;
                            }
                            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                        }
                    }
                }
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // Applied (or rejected): a parsed zone the apply did not take is of no further use.
    zone::handover::clear();
    done.store(true, Ordering::Release);
    let _ = updates.send(publisher::Update::Recheck).await;
}

/// At each SIGHUP, read the config file again and put its admin token in force (a file
/// that no longer loads leaves the token as it was). Certificates need no signal: they are
/// re-read when their files change.
async fn reload_on_sighup(
    mut reloads: tokio::sync::watch::Receiver<u64>,
    source: Option<std::path::PathBuf>,
    token: admin::TokenCell,
) {
    while reloads.changed().await.is_ok() {
        let Some(path) = &source else {
            tracing::info!("SIGHUP: no config file to re-read (defaults); nothing reloaded");
            continue;
        };
        match crate::config::NodeConfig::load(path) {
            Ok(c) => {
                let access = admin::Access::of(&c);
                let changed = token.load().tokens != access.tokens;
                token.store(Arc::new(access));
                for w in &c.warnings {
                    tracing::warn!("{w}");
                }
                tracing::info!(
                    config = %path.display(),
                    token_changed = changed,
                    "SIGHUP: admin tokens re-read (certificates are re-read when their files change)"
                );
            }
            Err(e) => tracing::error!(
                config = %path.display(),
                error = %e,
                "SIGHUP: the config file does not load; the admin tokens stay as they were"
            ),
        }
    }
}

/// Draw the cluster's first DNS cookie secret: whichever node leads while the state has
/// none proposes one (one request id for every attempt, so it applies once). Until it is
/// applied, each node makes cookies with a secret of its own.
async fn ensure_cookie_secret(handle: cluster::Handle) {
    let cmd = cluster::Command::RotateCookieSecret {
        secret: cluster::CookieSecret::random(),
    };
    let id = cluster::new_request_id();
    loop {
        if handle.state().cookie_secrets().is_some() {
            return;
        }
        if handle.status().leader == Some(handle.node_id()) {
            // No operator asked: DESIGN's actor for the cluster's own steps is `system`.
            let req = cluster::Request::with_id(cmd.clone(), id.clone()).by("system");
            match handle.propose(req).await {
                Ok(_) => tracing::info!("DNS cookie secret drawn for the cluster"),
                Err(e) => tracing::debug!(error = %e, "DNS cookie secret not drawn yet"),
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// Probe every datacenter with a health check, and propose this node's verdicts (the
/// first, each transition, the periodic re-affirmation) to the log. The probers follow the
/// applied state: a datacenter added, changed or removed starts, restarts or stops its.
async fn health_loop(
    mut applied: tokio::sync::watch::Receiver<cluster::Applied>,
    handle: cluster::Handle,
    prober: Arc<health::Prober>,
    mut verdicts: tokio::sync::mpsc::Receiver<health::Verdict>,
) {
    let node = handle.node_id();
    loop {
        let dcs: Vec<crate::model::Datacenter> = applied
            .borrow_and_update()
            .state
            .datacenters()
            .map(|e| (*e.dc).clone())
            .collect();
        prober.update(&dcs);
        tokio::select! {
            changed = applied.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            verdict = verdicts.recv() => {
                let Some(v) = verdict else { return };
                // A learner (a node being added) probes, but only voters' opinions count.
                if !handle.state().is_voter(node) {
                    continue;
                }
                let handle = handle.clone();
                // Proposals must not hold up probing; a lost one is repeated by the next
                // re-affirmation.
                tokio::spawn(async move {
                    let cmd = cluster::Command::HealthReport {
                        node,
                        dc: v.dc.clone(),
                        up: v.up,
                        reason: v.reason.clone(),
                    };
                    let req = cluster::Request::with_id(cmd, cluster::new_request_id()).by("health");
                    match handle.propose(req).await {
                        Ok(_) => tracing::debug!(dc = %v.dc, up = v.up, reason = %v.reason, "health verdict logged"),
                        Err(e) => tracing::warn!(dc = %v.dc, up = v.up, error = %e, "health verdict not logged"),
                    }
                });
            }
        }
    }
}

/// How often the GeoIP files are looked at for a replacement.
const GEOIP_POLL: std::time::Duration = std::time::Duration::from_secs(2);

/// Pick up a GeoIP database replaced on disk (by rename, so its inode changes; or
/// rewritten). A file that does not open is logged and the old database stays.
async fn watch_geoip(
    paths: Vec<std::path::PathBuf>,
    updates: tokio::sync::mpsc::Sender<publisher::Update>,
) {
    if paths.is_empty() {
        return;
    }
    let mut last = crate::config::fingerprint(&paths);
    loop {
        tokio::time::sleep(GEOIP_POLL).await;
        let now = crate::config::fingerprint(&paths);
        if now == last {
            continue;
        }
        last = now;
        let p = paths.clone();
        match tokio::task::spawn_blocking(move || GeoDb::open(&p)).await {
            Ok(Ok(db)) => {
                release_free_memory();
                tracing::info!(geoip = %db.describe(), "GeoIP database replaced");
                if updates
                    .send(publisher::Update::Geo(Arc::new(db)))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "new GeoIP database refused; keeping the old one")
            }
            Err(e) => tracing::warn!(error = %e, "GeoIP reload failed"),
        }
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
    let config = match path {
        Some(p) => NodeConfig::load(p).map_err(|e| anyhow::anyhow!("{e}"))?,
        None => NodeConfig::defaults(),
    };
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    Ok(config)
}
