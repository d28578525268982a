//! The `meridian` command line: parses arguments and hands over to the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Said after every subcommand's help: how logging is chosen.
const LOG_ENV_HELP: &str = "\
Environment:
  MERIDIAN_LOG, RUST_LOG  What is logged, as a tracing filter (MERIDIAN_LOG wins): \"debug\",
                          \"meridian=debug,openraft=info\"… Default: info for serve, warn
                          for the other commands.
  MERIDIAN_LOG_FORMAT     \"text\" (the default; colours only when stderr is a terminal) or
                          \"json\" (one JSON object per line). Logs go to stderr.";

const APPLY_HELP: &str = "\
In a directory, every NAME.zone, datacenters.toml, services.toml, zone-settings.toml and
tsig.toml is read (the files `meridian export` writes). Order: TSIG keys, datacenters,
zones, zone settings, services; each object is sent only when it differs from the
cluster's. A datacenter's state is sent only when its table names one, so re-applying
definitions never undoes a drain. A TSIG key with an empty secret is refused (fill it in);
an existing key of the same algorithm is not sent again unless --send-secrets.

With --prune, the files are the whole truth: services, zones and datacenters they do not
name (nor a named service needs) are deleted, services first, then zones, then
datacenters; a named zone's settings the files do not give are reset to the defaults. TSIG
keys are never deleted. With --dry-run, everything that would be created, replaced or
deleted is printed and nothing is changed.

Environment:
  MERIDIAN_ADMIN_TOKEN    The bearer token when --token is not given.
  MERIDIAN_LOG, RUST_LOG  What is logged, as a tracing filter (MERIDIAN_LOG wins). Default: warn.
  MERIDIAN_LOG_FORMAT     \"text\" (the default) or \"json\". Logs go to stderr.";

const EXPORT_HELP: &str = "\
Writes NAME.zone for every zone (NAME: the origin without its final dot),
datacenters.toml (each datacenter with its state), services.toml, zone-settings.toml (the
zones whose settings are not the defaults) and, when TSIG keys exist, tsig.toml with each
key's name and algorithm and secret = \"\": secrets never leave the cluster; fill them in
before importing (an empty secret is refused). A new cluster bootstrapped from DIR, or
`meridian apply DIR` onto an empty one, gives the same answers.

DIR is created, or must be empty. Reads need no token unless the server asks for one
([admin] reads_need_token). Without the write token, credentials in health-check URLs
come back masked (***); export then says so on stderr.

Environment:
  MERIDIAN_ADMIN_TOKEN    The bearer token when --token is not given.
  MERIDIAN_LOG, RUST_LOG  What is logged, as a tracing filter (MERIDIAN_LOG wins). Default: warn.
  MERIDIAN_LOG_FORMAT     \"text\" (the default) or \"json\". Logs go to stderr.";

const EXPLAIN_HELP: &str = "\
Without --admin, explain reads files: the answer is the one a node freshly started from
that config would give, before any change made through the API.

Environment:
  MERIDIAN_ADMIN_TOKEN    With --admin: the bearer token when --token is not given.
  MERIDIAN_LOG, RUST_LOG  What is logged, as a tracing filter (MERIDIAN_LOG wins). Default: warn.
  MERIDIAN_LOG_FORMAT     \"text\" (the default) or \"json\". Logs go to stderr.";

const SERVE_HELP: &str = "\
Without --config, a single-node cluster for trying it out: DNS on 127.0.0.1:1053 (UDP and
TCP), admin API on 127.0.0.1:8053, Raft on 127.0.0.1:9053, data in ./data, GeoIP database
./geoip/GeoIP2-City-Test.mmdb, and on the first start the example zones, datacenters.toml
and services.toml of ./zones imported into the cluster.

Environment:
  MERIDIAN_ADMIN_TOKEN    The admin API's bearer token when the config names none
                          ([admin] token or token_file). Without any, writes are refused.
  MERIDIAN_LOG, RUST_LOG  What is logged, as a tracing filter (MERIDIAN_LOG wins): \"debug\",
                          \"meridian=debug,openraft=info\"… Default: info.
  MERIDIAN_LOG_FORMAT     \"text\" (the default; colours only when stderr is a terminal) or
                          \"json\" (one JSON object per line). Logs go to stderr.
  NOTIFY_SOCKET           Set by systemd for Type=notify: READY=1 is sent there once
                          /healthz says 200, STOPPING=1 when the node stops.

Signals:
  SIGTERM, SIGINT  Stop: DNS stops, the dnstap log is flushed, Raft shuts down; exit 0.
  SIGHUP           A reload request: logged (\"reload requested\"); the admin token is read
                   again from the config file; the node keeps running.

/healthz answers 200 once the node serves DNS with its state loaded; /metrics is Prometheus
text. See README.md for the config file (every key) and the admin API.";

#[derive(Parser)]
#[command(
    name = "meridian",
    version,
    about = "GeoDNS authoritative name server",
    after_help = LOG_ENV_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node (with no --config: a single-node server on the built-in defaults).
    #[command(after_help = SERVE_HELP)]
    Serve {
        /// The node config (TOML); relative paths in it are relative to the file. Default:
        /// the built-in single-node config described below
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Validate a node config and its zone directory; exit 1 with `file:line: message`.
    ///
    /// It only reads: it opens no store and binds no port, so it runs beside a live node
    /// with the same config. Warnings (such as a geo_nearest service over a GeoIP database
    /// without coordinates) are printed and do not fail the check.
    #[command(after_help = LOG_ENV_HELP)]
    Check {
        /// The node config to check. Default: the built-in single-node config (./zones,
        /// ./geoip/GeoIP2-City-Test.mmdb)
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Push zone files, datacenters.toml, services.toml, zone-settings.toml and tsig.toml
    /// through the admin API (idempotent: unchanged objects are not sent).
    #[command(after_help = APPLY_HELP)]
    Apply {
        /// The admin API, e.g. http://127.0.0.1:8053
        #[arg(long, value_name = "URL")]
        admin: String,
        /// The bearer token (a write token). Default: env MERIDIAN_ADMIN_TOKEN
        #[arg(long)]
        token: Option<String>,
        /// Print what would be created, replaced or deleted, and change nothing
        #[arg(long)]
        dry_run: bool,
        /// Also delete the services, zones and datacenters the files do not name
        #[arg(long)]
        prune: bool,
        /// Send every TSIG key of the files, even one that exists with the same algorithm
        /// (secrets cannot be read back to compare)
        #[arg(long)]
        send_secrets: bool,
        /// Trust only this CA (PEM) for an https:// admin URL; the host is verified too
        #[arg(long, value_name = "FILE")]
        cacert: Option<PathBuf>,
        /// Zone files (NAME.zone), datacenters.toml, services.toml, zone-settings.toml,
        /// tsig.toml, or directories of them
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
    },
    /// Write the routing state as a bootstrap directory (zones, datacenters with their
    /// state, services, zone settings, TSIG key names): the logical backup.
    #[command(after_help = EXPORT_HELP)]
    Export {
        /// The admin API, e.g. http://127.0.0.1:8053
        #[arg(long, value_name = "URL")]
        admin: String,
        /// The bearer token: needed when the server wants one for reads; the write token
        /// also gets health-check URLs unmasked. Default: env MERIDIAN_ADMIN_TOKEN
        #[arg(long)]
        token: Option<String>,
        /// Trust only this CA (PEM) for an https:// admin URL; the host is verified too
        #[arg(long, value_name = "FILE")]
        cacert: Option<PathBuf>,
        /// The directory to write (created; an existing one must be empty)
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// Make a CA and certificates for trying mTLS out: ca.crt/ca.key, nodeN.crt/nodeN.key
    /// (DNS SAN node-N; server and client use) and admin.crt/admin.key (server use only).
    /// A directory that already holds ca.crt and ca.key keeps its CA (renewal).
    Certs {
        /// Where to write the PEM files (created when missing)
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// How many node certificates (node1 … nodeN)
        #[arg(long, value_name = "N")]
        nodes: u64,
        /// A further name or address every certificate names (besides 127.0.0.1, ::1, localhost)
        #[arg(long = "host", value_name = "NAME")]
        hosts: Vec<String>,
    },
    /// The answer a client would get, and why (offline from the files, or from a live node
    /// with --admin).
    ///
    /// Offline (the default): reads the config and the files it names (zones,
    /// datacenters.toml, services.toml, the GeoIP database), not a live node's state, so
    /// drains, weights and health verdicts made since are not seen. With --admin: asks a
    /// live node (GET /api/v1/explain) and prints its answer from its current state.
    #[command(after_help = EXPLAIN_HELP)]
    Explain {
        /// Offline: the node config whose files are read. Default: the built-in
        /// single-node config (./zones, ./geoip)
        #[arg(long, value_name = "FILE", conflicts_with = "admin")]
        config: Option<PathBuf>,
        /// Ask this live node's admin API instead of reading files, e.g. http://127.0.0.1:8053
        #[arg(long, value_name = "URL")]
        admin: Option<String>,
        /// With --admin: a read (or write) token, for a node whose reads need one.
        /// Default: env MERIDIAN_ADMIN_TOKEN, else none
        #[arg(long, requires = "admin")]
        token: Option<String>,
        /// With --admin: trust only this CA (PEM) for an https:// URL; the host is verified too
        #[arg(long, value_name = "FILE", requires = "admin")]
        cacert: Option<PathBuf>,
        /// The name asked for, e.g. www.example.com
        name: String,
        /// The record type, e.g. A
        #[arg(value_name = "TYPE")]
        qtype: String,
        /// The client's address (as the EDNS Client Subnet would give it)
        client_ip: std::net::IpAddr,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    meridian::memory::configure_allocator();
    let cli = Cli::parse();
    // A node logs what it does; the one-shot commands only what goes wrong.
    let level = if matches!(cli.command, Command::Serve { .. }) {
        "info"
    } else {
        "warn"
    };
    if let Err(e) = init_tracing(level) {
        eprintln!("meridian: {e}");
        return ExitCode::FAILURE;
    }
    match cli.command {
        Command::Serve { config } => {
            // The store under `data_dir` holds private keys and secrets, and sled makes new
            // files as it goes: every file the node makes is 0600, every directory 0700.
            nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
            let config = match meridian::node::config_from(config.as_deref()) {
                Ok(c) => c,
                Err(e) => return fail(&e),
            };
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("meridian")
                .build()
            {
                Ok(r) => r,
                Err(e) => return fail(&e.into()),
            };
            match runtime.block_on(meridian::node::run(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&e),
            }
        }
        Command::Apply {
            admin,
            token,
            dry_run,
            prune,
            send_secrets,
            cacert,
            paths,
        } => {
            let Some(token) = token.or_else(|| std::env::var("MERIDIAN_ADMIN_TOKEN").ok()) else {
                eprintln!("meridian apply: give --token or set MERIDIAN_ADMIN_TOKEN");
                return ExitCode::FAILURE;
            };
            let runtime = match meridian::client::runtime() {
                Ok(r) => r,
                Err(e) => return fail(&e.into()),
            };
            let options = meridian::client::apply::Options {
                dry_run,
                prune,
                send_secrets,
            };
            match runtime.block_on(meridian::client::apply::apply(
                &admin,
                &token,
                cacert.as_deref(),
                &paths,
                options,
            )) {
                Ok(report) => {
                    println!("{report}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("meridian apply: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Export {
            admin,
            token,
            cacert,
            dir,
        } => {
            let token = token.or_else(|| std::env::var("MERIDIAN_ADMIN_TOKEN").ok());
            let runtime = match meridian::client::runtime() {
                Ok(r) => r,
                Err(e) => return fail(&e.into()),
            };
            match runtime.block_on(meridian::client::export::export(
                &admin,
                token.as_deref(),
                cacert.as_deref(),
                &dir,
            )) {
                Ok(report) => {
                    println!("{report}");
                    for w in report.warnings() {
                        eprintln!("warning: {w}");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("meridian export: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Explain {
            config,
            admin,
            token,
            cacert,
            name,
            qtype,
            client_ip,
            json,
        } => {
            // Said under the text answer: where it came from.
            let source = match (&admin, &config) {
                (Some(url), _) => format!("source: the live node at {url} (its current state)"),
                (None, Some(cfg)) => format!(
                    "source: offline, from the files of {} (changes made since through the API are not seen; ask a node with --admin)",
                    cfg.display()
                ),
                (None, None) => "source: offline, from the files of the built-in config (./zones, ./geoip; changes made through the API are not seen; ask a node with --admin)".to_string(),
            };
            let result = match admin {
                Some(admin) => {
                    let token = token.or_else(|| std::env::var("MERIDIAN_ADMIN_TOKEN").ok());
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(anyhow::Error::from)
                        .and_then(|rt| {
                            rt.block_on(meridian::client::explain::explain_remote(
                                &admin,
                                token.as_deref(),
                                cacert.as_deref(),
                                &name,
                                &qtype,
                                client_ip,
                            ))
                            .map_err(anyhow::Error::from)
                        })
                }
                None => meridian::node::config_from(config.as_deref())
                    .and_then(|c| meridian::node::load(&c).map_err(Into::into))
                    .and_then(|(_, _, snap)| {
                        meridian::explain::explain(&snap, &name, &qtype, client_ip)
                            .map_err(Into::into)
                    }),
            };
            match result {
                Ok(e) if json => match serde_json::to_string_pretty(&e) {
                    Ok(text) => {
                        println!("{text}");
                        ExitCode::SUCCESS
                    }
                    Err(err) => fail(&err.into()),
                },
                Ok(e) => {
                    print!("{e}");
                    println!("{source}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
        Command::Certs { dir, nodes, hosts } => {
            match meridian::certs::generate(&dir, nodes, &hosts) {
                Ok(w) => {
                    if !w.new_ca {
                        println!("kept the CA in {}", dir.display());
                    }
                    for f in w.files {
                        println!("wrote {}", f.display());
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("meridian certs: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Check { config } => {
            let result = meridian::node::config_from(config.as_deref())
                .and_then(|c| meridian::node::load(&c).map_err(Into::into));
            match result {
                Ok((loaded, _, _)) => {
                    // What works but not as the operator expects: said, not fatal.
                    for w in meridian::degraded::geo_warnings(&loaded.geo, &loaded.services) {
                        eprintln!("warning: {w}");
                    }
                    println!(
                        "ok: {} zone(s), {} datacenter(s), {} service(s)",
                        loaded.zones.len(),
                        loaded.datacenters.len(),
                        loaded.services.len()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn fail(e: &anyhow::Error) -> ExitCode {
    eprintln!("meridian: {e:#}");
    ExitCode::FAILURE
}

/// Logs to stderr: plain text (coloured only on a terminal, so files and journals get no
/// escape codes) or, with `MERIDIAN_LOG_FORMAT=json`, one JSON object per line.
fn init_tracing(level: &str) -> Result<(), String> {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("MERIDIAN_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| {
            EnvFilter::new(format!(
                "{level},hickory_proto=warn,openraft=warn,openraft::replication=off,openraft::network=off,openraft::engine::handler::replication_handler=off,sled=warn"
            ))
        });
    let format = std::env::var("MERIDIAN_LOG_FORMAT").unwrap_or_default();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format.trim().to_ascii_lowercase().as_str() {
        "" | "text" => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        "json" => builder.json().with_ansi(false).init(),
        other => {
            return Err(format!(
                "MERIDIAN_LOG_FORMAT is {other:?}; it takes \"text\" or \"json\""
            ))
        }
    }
    Ok(())
}
