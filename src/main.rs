//! The `meridian` command line: parses arguments and hands over to the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "meridian", version, about = "GeoDNS authoritative name server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node (with no --config: a single-node server on the built-in defaults).
    Serve {
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Validate a node config and its zone directory; exit 1 with `file:line: message`.
    Check {
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Push zone files, datacenters.toml and services.toml through the admin API
    /// (idempotent: unchanged objects are not sent).
    Apply {
        /// The admin API, e.g. http://127.0.0.1:8053
        #[arg(long, value_name = "URL")]
        admin: String,
        /// The bearer token (default: env MERIDIAN_ADMIN_TOKEN)
        #[arg(long)]
        token: Option<String>,
        /// Print what would change and change nothing
        #[arg(long)]
        dry_run: bool,
        /// Trust only this CA (PEM) for an https:// admin URL; the host is verified too
        #[arg(long, value_name = "FILE")]
        cacert: Option<PathBuf>,
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
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
    /// The answer a client would get, and why (offline: reads the config and its files).
    Explain {
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
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
    let cli = Cli::parse();
    // A node logs what it does; the one-shot commands only what goes wrong.
    init_tracing(if matches!(cli.command, Command::Serve { .. }) {
        "info"
    } else {
        "warn"
    });
    match cli.command {
        Command::Serve { config } => {
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
            cacert,
            paths,
        } => {
            let Some(token) = token.or_else(|| std::env::var("MERIDIAN_ADMIN_TOKEN").ok()) else {
                eprintln!("meridian apply: give --token or set MERIDIAN_ADMIN_TOKEN");
                return ExitCode::FAILURE;
            };
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => return fail(&e.into()),
            };
            match runtime.block_on(meridian::apply::apply_with_ca(
                &admin,
                &token,
                &paths,
                dry_run,
                cacert.as_deref(),
            )) {
                Ok(report) => {
                    print!("{report}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("meridian apply: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Explain {
            config,
            name,
            qtype,
            client_ip,
            json,
        } => {
            let result = meridian::node::config_from(config.as_deref())
                .and_then(|c| meridian::node::load(&c).map_err(Into::into))
                .and_then(|(_, _, snap)| {
                    meridian::explain::explain(&snap, &name, &qtype, client_ip).map_err(Into::into)
                });
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

fn init_tracing(level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("MERIDIAN_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| {
            EnvFilter::new(format!(
                "{level},hickory_proto=warn,openraft=warn,openraft::replication=off,openraft::network=off,openraft::engine::handler::replication_handler=off,sled=warn"
            ))
        });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
