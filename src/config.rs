//! The node config file: its TOML spec (serde, unknown keys refused) and the validated `NodeConfig`.
//!
//! A config file looks like this (every key shown; relative paths are relative to the file):
//!
//! ```toml
//! node_id = 1
//! data_dir = "data/node1"              # default "data"
//!
//! [dns]
//! listen = ["127.0.0.1:1053", "[::1]:1053"]
//! # Response rate limiting, off when absent; every key optional (these are the defaults).
//! rate_limit = { responses_per_second = 20, slip = 2, ipv4_prefix = 24, ipv6_prefix = 56 }
//! cookies = true                       # DNS cookies (RFC 7873, RFC 9018); the default
//!
//! [admin]
//! listen = "127.0.0.1:8053"
//! token_file = "token"                 # or token = "…"; else env MERIDIAN_ADMIN_TOKEN
//! tls = { cert = "admin.crt", key = "admin.key" }   # optional: HTTPS only
//! hosts = ["meridian.example.com"]     # names the API may be reached by (Host header)
//!
//! [raft]
//! listen = "127.0.0.1:9053"
//! peers = { "1" = "127.0.0.1:9053", "2" = "127.0.0.1:9054" }   # the initial voters
//! secret_file = "raft-secret"          # or secret = "…"; optional
//! tls = { cert = "node1.crt", key = "node1.key", ca = "ca.crt" }   # optional: mutual TLS
//! max_snapshot = "1GiB"                # the largest snapshot received (bytes or KiB/MiB/GiB)
//!
//! [geoip]                              # optional
//! database = "GeoIP2-City-Test.mmdb"   # or a list: ["v4.mmdb", "v6.mmdb"]
//!
//! [bootstrap]                          # optional; absent: nothing is imported
//! dir = "zones"
//!
//! [dnstap]                             # optional query log; absent: none
//! file = "queries.dnstap"              # or socket = "/run/meridian/dnstap.sock"
//! identity = "ns1"                     # default: the host name
//! version = "meridian 0.1.0"           # default: "meridian VERSION"
//! ```
//!
//! [`NodeConfig::load`] reads and validates a file; errors read `FILE:LINE: message` (or
//! `FILE: message` when no line applies). [`NodeConfig::defaults`] is what `meridian serve`
//! runs with no `--config`.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::tls::TlsFiles;

/// Default of `[raft] max_snapshot`: 1 GiB.
pub const DEFAULT_MAX_SNAPSHOT: u64 = 1 << 30;

/// Node id of the built-in single-node config.
pub const DEFAULT_NODE_ID: u64 = 1;
/// DNS listen address (UDP and TCP) of the built-in config.
pub const DEFAULT_DNS_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 1053));
/// Admin API listen address of the built-in config.
pub const DEFAULT_ADMIN_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8053));
/// Raft listen address of the built-in config (also its only peer, node [`DEFAULT_NODE_ID`]).
pub const DEFAULT_RAFT_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9053));
/// Data directory: of the built-in config (relative to the current directory), and of a
/// file that has no `data_dir` (relative to the file's directory).
pub const DEFAULT_DATA_DIR: &str = "data";
/// GeoIP database of the built-in config, relative to the current directory.
pub const DEFAULT_GEOIP_DATABASE: &str = "geoip/GeoIP2-City-Test.mmdb";
/// Bootstrap directory of the built-in config, relative to the current directory.
pub const DEFAULT_BOOTSTRAP_DIR: &str = "zones";
/// `[admin] max_body` when unset: a zone of about a million records fits.
pub const DEFAULT_ADMIN_MAX_BODY: usize = 64 * 1024 * 1024;

/// The name of the v1 token (`[admin] token`, `token_file`, `MERIDIAN_ADMIN_TOKEN`).
pub const V1_TOKEN_NAME: &str = "admin";

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Read,
    Write,
}

/// An admin token, its name and its role. The token itself never appears in a `Debug` line.
#[derive(Clone, PartialEq, Eq)]
pub struct NamedToken {
    pub name: String,
    pub token: String,
    pub role: Role,
}

impl fmt::Debug for NamedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NamedToken")
            .field("name", &self.name)
            .field("token", &"<redacted>")
            .field("role", &self.role)
            .finish()
    }
}

/// Environment variable holding the admin token when the config names none.
pub const ADMIN_TOKEN_ENV: &str = "MERIDIAN_ADMIN_TOKEN";
/// The longest path a unix socket address holds (`sun_path` is 108 bytes with its NUL).
const MAX_UNIX_PATH: usize = 107;

/// Response rate limiting (`[dns] rate_limit`), as in Knot's and NSD's RRL: UDP replies to
/// one client network in one response class beyond `responses_per_second` (with a burst of
/// one second's worth) are dropped, every `slip`-th of them sent truncated instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Replies per second per client network and response class (the burst is one
    /// second's worth). For comparison, NSD's `rrl-ratelimit` defaults to 200 and Knot's
    /// RRL documentation uses 200 in its example.
    pub responses_per_second: u32,
    /// Every `slip`-th limited reply goes out truncated (TC, no records) so that a real
    /// client retries over TCP; the rest are dropped. 0: all dropped; 1: all truncated.
    pub slip: u32,
    /// Clients in one IPv4 network of this prefix length share their limits.
    pub ipv4_prefix: u8,
    /// Clients in one IPv6 network of this prefix length share their limits.
    pub ipv6_prefix: u8,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            responses_per_second: 20,
            slip: 2,
            ipv4_prefix: 24,
            ipv6_prefix: 56,
        }
    }
}

/// The largest `responses_per_second`: beyond it a limit protects nothing.
pub const MAX_RESPONSES_PER_SECOND: u32 = 1_000_000;
/// The largest `slip` (BIND's bound too).
pub const MAX_SLIP: u32 = 10;

/// A validated node configuration. Paths are resolved (relative to the config file's
/// directory, or to the current directory for [`NodeConfig::defaults`]) but not checked
/// for existence.
#[derive(Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// This node's id (≥ 1).
    pub node_id: u64,
    /// Where this node keeps its Raft log and state.
    pub data_dir: PathBuf,
    /// DNS listen addresses, UDP and TCP on each (at least one, no duplicates).
    pub dns_listen: Vec<SocketAddr>,
    /// Admin HTTP API listen address.
    pub admin_listen: SocketAddr,
    /// Bearer token that mutating admin calls must carry; `None`: no token configured.
    /// It is also in [`NodeConfig::admin_tokens`], as the write token named `admin`.
    pub admin_token: Option<String>,
    /// Every admin token with its name (the actor of its writes) and role.
    pub admin_tokens: Vec<NamedToken>,
    /// `[admin] reads_need_token`: every GET under `/api/v1` needs a read or write token.
    pub reads_need_token: bool,
    /// The largest admin request body, in bytes (`[admin] max_body`, 64 MiB by default).
    pub admin_max_body: usize,
    /// Raft RPC listen address.
    pub raft_listen: SocketAddr,
    /// The initial voters, by node id. May omit this node (it joins later).
    pub raft_peers: BTreeMap<u64, SocketAddr>,
    /// Shared secret every Raft RPC must carry; `None`: none.
    pub raft_secret: Option<String>,
    /// `[raft] tls`: mutual TLS between nodes (certificate, key, CA); `None`: plain HTTP.
    pub raft_tls: Option<TlsFiles>,
    /// `[raft] max_snapshot`: the largest snapshot this node receives, in bytes.
    pub raft_max_snapshot: u64,
    /// `[admin] tls`: the admin API over HTTPS only (certificate and key; no CA).
    pub admin_tls: Option<TlsFiles>,
    /// GeoIP (mmdb) files, e.g. one IPv4 and one IPv6; empty when `[geoip]` is absent.
    pub geoip_databases: Vec<PathBuf>,
    /// Directory imported on the first start of a new cluster; `None`: import nothing.
    pub bootstrap_dir: Option<PathBuf>,
    /// Response rate limiting of UDP replies; `None` (the default): off.
    pub rate_limit: Option<RateLimit>,
    /// DNS cookies (RFC 7873): on by default; off, the COOKIE option is ignored.
    pub cookies: bool,
    /// Names the admin API may be reached by (its `Host` header), besides address literals
    /// and `localhost`: any other is refused, so that a web page cannot reach the API by
    /// rebinding its own name to the node's address.
    pub admin_hosts: Vec<String>,
    /// What is allowed but unwise (a token file others can read…), one line each: `serve`
    /// logs them at start, `check` shows them.
    pub warnings: Vec<String>,
    /// The file this was read from (`None`: the defaults): SIGHUP re-reads its tokens.
    pub source: Option<PathBuf>,
    /// The dnstap query log; `None`: queries are not logged.
    pub dnstap: Option<DnstapConfig>,
}

/// Where the dnstap query log goes (`[dnstap]`), and what each message says it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnstapConfig {
    pub sink: DnstapSink,
    /// `identity` of every message (default: the host name).
    pub identity: String,
    /// `version` of every message (default: `meridian VERSION`).
    pub version: String,
}

/// A dnstap destination: a file written from scratch at start, or a reader's unix socket
/// that the node connects to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DnstapSink {
    File(PathBuf),
    Socket(PathBuf),
}

impl fmt::Debug for NodeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeConfig")
            .field("node_id", &self.node_id)
            .field("data_dir", &self.data_dir)
            .field("dns_listen", &self.dns_listen)
            .field("admin_listen", &self.admin_listen)
            .field("admin_token", &Redacted(&self.admin_token))
            .field("raft_listen", &self.raft_listen)
            .field("raft_peers", &self.raft_peers)
            .field("raft_secret", &Redacted(&self.raft_secret))
            .field("raft_tls", &self.raft_tls)
            .field("raft_max_snapshot", &self.raft_max_snapshot)
            .field("admin_tls", &self.admin_tls)
            .field("geoip_databases", &self.geoip_databases)
            .field("bootstrap_dir", &self.bootstrap_dir)
            .field("dnstap", &self.dnstap)
            .field("rate_limit", &self.rate_limit)
            .field("cookies", &self.cookies)
            .field("admin_hosts", &self.admin_hosts)
            .field("warnings", &self.warnings)
            .finish()
    }
}

/// Prints `Some(<redacted>)` or `None`, never the secret.
struct Redacted<'a>(&'a Option<String>);

impl fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(_) => f.write_str("Some(<redacted>)"),
            None => f.write_str("None"),
        }
    }
}

/// Where an error is: a file name and, when known, a 1-based line. Shows as `FILE:LINE` or `FILE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: String,
    pub line: Option<usize>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}", self.file, line),
            None => f.write_str(&self.file),
        }
    }
}

/// Why a config could not be loaded. Each shows as `FILE:LINE: message` or `FILE: message`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file itself could not be read.
    #[error("{at}: cannot read the config file: {source}")]
    Read {
        at: Location,
        #[source]
        source: io::Error,
    },
    /// Not TOML, or not this spec: syntax, unknown key, missing key, wrong type.
    #[error("{at}: {message}")]
    Syntax { at: Location, message: String },
    /// Well-formed but invalid: bad address, bad node id, conflicting keys…
    #[error("{at}: {message}")]
    Invalid { at: Location, message: String },
    /// A `token_file` or `secret_file` could not be read.
    #[error("{at}: {key}: cannot read {}: {source}", path.display())]
    SecretFile {
        at: Location,
        /// The key naming the file, e.g. `[admin] token_file`.
        key: &'static str,
        /// The resolved path.
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl ConfigError {
    /// Where the error is.
    pub fn location(&self) -> &Location {
        match self {
            ConfigError::Read { at, .. }
            | ConfigError::Syntax { at, .. }
            | ConfigError::Invalid { at, .. }
            | ConfigError::SecretFile { at, .. } => at,
        }
    }
}

// ---------------------------------------------------------------------------------------
// The file spec.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    node_id: Spanned<i64>,
    data_dir: Option<Spanned<String>>,
    dns: DnsSpec,
    admin: AdminSpec,
    raft: RaftSpec,
    geoip: Option<GeoipSpec>,
    bootstrap: Option<BootstrapSpec>,
    dnstap: Option<Spanned<DnstapSpec>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DnsSpec {
    listen: Spanned<Vec<Spanned<String>>>,
    rate_limit: Option<RateLimitSpec>,
    cookies: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RateLimitSpec {
    responses_per_second: Option<Spanned<i64>>,
    slip: Option<Spanned<i64>>,
    ipv4_prefix: Option<Spanned<i64>>,
    ipv6_prefix: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AdminSpec {
    listen: Spanned<String>,
    token: Option<Spanned<String>>,
    token_file: Option<Spanned<String>>,
    max_body: Option<Spanned<i64>>,
    tls: Option<Spanned<TlsSpec>>,
    hosts: Option<Vec<Spanned<String>>>,
    tokens: Option<Vec<Spanned<TokenSpec>>>,
    reads_need_token: Option<bool>,
}

/// One entry of `[admin] tokens`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenSpec {
    name: String,
    token: Option<Spanned<String>>,
    token_file: Option<Spanned<String>>,
    role: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RaftSpec {
    listen: Spanned<String>,
    peers: BTreeMap<String, Spanned<String>>,
    secret: Option<Spanned<String>>,
    secret_file: Option<Spanned<String>>,
    tls: Option<Spanned<TlsSpec>>,
    max_snapshot: Option<Spanned<toml::Value>>,
}

/// `{ cert = "…", key = "…", ca = "…" }` (`ca` only for `[raft]`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsSpec {
    cert: String,
    key: String,
    ca: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GeoipSpec {
    database: Spanned<OneOrMany>,
}

/// `"path"` or `["path", …]`.
#[derive(Debug)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a path or a list of paths")
            }
            fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany::One(value.to_string()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<OneOrMany, A::Error> {
                let mut paths = Vec::new();
                while let Some(path) = seq.next_element::<String>()? {
                    paths.push(path);
                }
                Ok(OneOrMany::Many(paths))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BootstrapSpec {
    dir: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DnstapSpec {
    socket: Option<Spanned<String>>,
    file: Option<Spanned<String>>,
    identity: Option<Spanned<String>>,
    version: Option<Spanned<String>>,
}

// ---------------------------------------------------------------------------------------
// Loading and validation.

impl NodeConfig {
    /// The built-in defaults of `meridian serve` with no `--config`: node 1, DNS
    /// 127.0.0.1:1053, admin 127.0.0.1:8053, Raft 127.0.0.1:9053 with peers
    /// {1: 127.0.0.1:9053}, data `./data`, GeoIP `./geoip/GeoIP2-City-Test.mmdb`, bootstrap
    /// `./zones`, no token but `MERIDIAN_ADMIN_TOKEN` when set and not empty. Paths are
    /// relative to the current directory.
    pub fn defaults() -> NodeConfig {
        NodeConfig {
            node_id: DEFAULT_NODE_ID,
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            dns_listen: vec![DEFAULT_DNS_LISTEN],
            admin_listen: DEFAULT_ADMIN_LISTEN,
            admin_token: env_admin_token(),
            admin_tokens: env_admin_token()
                .map(|token| NamedToken {
                    name: V1_TOKEN_NAME.into(),
                    token,
                    role: Role::Write,
                })
                .into_iter()
                .collect(),
            reads_need_token: false,
            admin_max_body: DEFAULT_ADMIN_MAX_BODY,
            raft_listen: DEFAULT_RAFT_LISTEN,
            raft_peers: BTreeMap::from([(DEFAULT_NODE_ID, DEFAULT_RAFT_LISTEN)]),
            raft_secret: None,
            raft_tls: None,
            raft_max_snapshot: DEFAULT_MAX_SNAPSHOT,
            admin_tls: None,
            geoip_databases: vec![PathBuf::from(DEFAULT_GEOIP_DATABASE)],
            bootstrap_dir: Some(PathBuf::from(DEFAULT_BOOTSTRAP_DIR)),
            dnstap: None,
            rate_limit: None,
            cookies: true,
            admin_hosts: Vec::new(),
            warnings: Vec::new(),
            source: None,
        }
    }

    /// Read and validate a file. Relative paths in the file are relative to the file's
    /// directory. Errors name the file as `path` is given.
    pub fn load(path: &Path) -> Result<NodeConfig, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            at: Location {
                file: file.clone(),
                line: None,
            },
            source,
        })?;
        let base = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let mut config = NodeConfig::from_toml(&text, &file, base)?;
        config.source = Some(path.to_path_buf());
        Ok(config)
    }

    /// Same as [`NodeConfig::load`], from text: `base` is the directory relative paths
    /// resolve against and `file` the name used in errors.
    pub fn from_toml(text: &str, file: &str, base: &Path) -> Result<NodeConfig, ConfigError> {
        from_toml_with_env(text, file, base, env_admin_token())
    }
}

/// This machine's host name, the default dnstap identity (`meridian` when it has none).
fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|name| name.into_string().ok())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "meridian".to_string())
}

/// The default dnstap version: `meridian` and this build's version.
fn default_dnstap_version() -> String {
    format!("meridian {}", env!("CARGO_PKG_VERSION"))
}

/// The admin token from the environment; an unset or empty variable is none.
fn env_admin_token() -> Option<String> {
    std::env::var(ADMIN_TOKEN_ENV)
        .ok()
        .filter(|token| !token.trim().is_empty())
}

/// [`NodeConfig::from_toml`] with the environment's admin token passed in (for tests).
fn from_toml_with_env(
    text: &str,
    file: &str,
    base: &Path,
    env_token: Option<String>,
) -> Result<NodeConfig, ConfigError> {
    let cx = Cx { text, file, base };
    let spec: FileSpec = toml::from_str(text).map_err(|e| ConfigError::Syntax {
        at: cx.at(e.span()),
        message: one_line(e.message()),
    })?;
    cx.validate(spec, env_token)
}

/// toml's message on one line: its parts joined with "; ".
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// What validation needs to turn spans into lines and relative paths into paths.
struct Cx<'a> {
    text: &'a str,
    file: &'a str,
    base: &'a Path,
}

impl Cx<'_> {
    fn at(&self, span: Option<Range<usize>>) -> Location {
        let line = span.map(|span| {
            let end = span.start.min(self.text.len());
            let before = self.text.get(..end).unwrap_or(self.text);
            before.bytes().filter(|&b| b == b'\n').count() + 1
        });
        Location {
            file: self.file.to_string(),
            line,
        }
    }

    fn invalid(&self, span: Range<usize>, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            at: self.at(Some(span)),
            message: message.into(),
        }
    }

    fn validate(
        &self,
        spec: FileSpec,
        env_token: Option<String>,
    ) -> Result<NodeConfig, ConfigError> {
        let node_id = self.node_id(&spec.node_id)?;

        let data_dir = match &spec.data_dir {
            Some(dir) => self.path("data_dir", dir)?,
            None => self.base.join(DEFAULT_DATA_DIR),
        };

        let listen = &spec.dns.listen;
        if listen.get_ref().is_empty() {
            return Err(self.invalid(
                listen.span(),
                "[dns] listen: the list is empty; give at least one \"ip:port\"",
            ));
        }
        let mut dns_listen = Vec::with_capacity(listen.get_ref().len());
        for entry in listen.get_ref() {
            let addr = self.addr("[dns] listen", entry)?;
            if dns_listen.contains(&addr) {
                return Err(self.invalid(
                    entry.span(),
                    format!("[dns] listen: {addr} is listed twice"),
                ));
            }
            dns_listen.push(addr);
        }

        let rate_limit = match &spec.dns.rate_limit {
            None => None,
            Some(spec) => Some(self.rate_limit(spec)?),
        };

        let admin_listen = self.addr("[admin] listen", &spec.admin.listen)?;
        let admin_max_body = match &spec.admin.max_body {
            None => DEFAULT_ADMIN_MAX_BODY,
            Some(n) => match usize::try_from(*n.get_ref()) {
                Ok(b) if b >= 1024 => b,
                _ => {
                    return Err(self.invalid(
                        n.span(),
                        "[admin] max_body must be a number of bytes, at least 1024",
                    ))
                }
            },
        };
        let mut admin_hosts = Vec::new();
        for name in spec.admin.hosts.iter().flatten() {
            let n = name.get_ref().trim();
            let ok = !n.is_empty()
                && n.len() <= 253
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
            if !ok {
                return Err(self.invalid(
                    name.span(),
                    format!("[admin] hosts: {n:?} is not a host name (no port, no scheme)"),
                ));
            }
            admin_hosts.push(n.to_ascii_lowercase());
        }
        let raft_listen = self.addr("[raft] listen", &spec.raft.listen)?;
        if admin_listen == raft_listen {
            return Err(self.invalid(
                spec.raft.listen.span(),
                format!("[raft] listen: {raft_listen} is also [admin] listen"),
            ));
        }
        for (key, addr, span) in [
            ("[admin] listen", admin_listen, spec.admin.listen.span()),
            ("[raft] listen", raft_listen, spec.raft.listen.span()),
        ] {
            if dns_listen.contains(&addr) {
                return Err(self.invalid(
                    span,
                    format!("{key}: {addr} is also a [dns] listen address (DNS uses TCP too)"),
                ));
            }
        }

        let raft_peers = self.peers(node_id, raft_listen, &spec.raft)?;

        let admin_token = match self.secret(
            ("[admin] token", spec.admin.token.as_ref()),
            ("[admin] token_file", spec.admin.token_file.as_ref()),
        )? {
            Some(token) => Some(token),
            None => env_token,
        };
        let mut admin_tokens: Vec<NamedToken> = admin_token
            .iter()
            .map(|token| NamedToken {
                name: V1_TOKEN_NAME.into(),
                token: token.clone(),
                role: Role::Write,
            })
            .collect();
        let mut token_warnings = Vec::new();
        for entry in spec.admin.tokens.iter().flatten() {
            let t = entry.get_ref();
            let name = t.name.trim();
            if name.is_empty() || name.len() > 64 || name.chars().any(|c| c.is_control()) {
                return Err(self.invalid(
                    entry.span(),
                    "[admin] tokens: `name` must be 1 to 64 printable characters",
                ));
            }
            let role = match t.role.as_str() {
                "read" => Role::Read,
                "write" => Role::Write,
                other => {
                    return Err(self.invalid(
                        entry.span(),
                        format!("[admin] tokens: role {other:?}: give \"read\" or \"write\""),
                    ))
                }
            };
            let Some(token) = self.secret(
                ("[admin] tokens: token", t.token.as_ref()),
                ("[admin] tokens: token_file", t.token_file.as_ref()),
            )?
            else {
                return Err(self.invalid(
                    entry.span(),
                    format!("[admin] tokens: {name:?} has neither `token` nor `token_file`"),
                ));
            };
            if let Some(file) = &t.token_file {
                token_warnings.extend(self.loose_mode("[admin] tokens: token_file", file));
            }
            for other in &admin_tokens {
                if other.name == name {
                    return Err(self.invalid(
                        entry.span(),
                        format!("[admin] tokens: two tokens are named {name:?}"),
                    ));
                }
                if other.token == token {
                    return Err(self.invalid(
                        entry.span(),
                        format!(
                            "[admin] tokens: {name:?} has the same token as {:?}",
                            other.name
                        ),
                    ));
                }
            }
            admin_tokens.push(NamedToken {
                name: name.to_string(),
                token,
                role,
            });
        }
        let raft_secret = self.secret(
            ("[raft] secret", spec.raft.secret.as_ref()),
            ("[raft] secret_file", spec.raft.secret_file.as_ref()),
        )?;
        let mut warnings = token_warnings;
        for (key, file) in [
            ("[admin] token_file", spec.admin.token_file.as_ref()),
            ("[raft] secret_file", spec.raft.secret_file.as_ref()),
        ] {
            if let Some(file) = file {
                warnings.extend(self.loose_mode(key, file));
            }
        }

        let raft_tls = match &spec.raft.tls {
            None => None,
            Some(t) => {
                if t.get_ref().ca.is_none() {
                    return Err(self.invalid(
                        t.span(),
                        "[raft] tls: `ca` is required: peers are verified against it (mutual TLS)",
                    ));
                }
                Some(self.tls_files("[raft] tls", t)?)
            }
        };
        let admin_tls = match &spec.admin.tls {
            None => None,
            Some(t) => {
                if t.get_ref().ca.is_some() {
                    return Err(self.invalid(
                        t.span(),
                        "[admin] tls: `ca` is not used (the admin API asks no client certificate); remove it",
                    ));
                }
                Some(self.tls_files("[admin] tls", t)?)
            }
        };
        let raft_max_snapshot = match &spec.raft.max_snapshot {
            None => DEFAULT_MAX_SNAPSHOT,
            Some(v) => parse_size(v.get_ref()).ok_or_else(|| {
                self.invalid(
                    v.span(),
                    "[raft] max_snapshot: give a size in bytes (1073741824) or with a unit (\"1GiB\", \"512MiB\")",
                )
            })?,
        };

        let geoip_databases = match &spec.geoip {
            None => Vec::new(),
            Some(geoip) => {
                let span = geoip.database.span();
                let names = match geoip.database.get_ref() {
                    OneOrMany::One(name) => vec![name.as_str()],
                    OneOrMany::Many(names) => names.iter().map(String::as_str).collect(),
                };
                if names.is_empty() {
                    return Err(self.invalid(
                        span,
                        "[geoip] database: the list is empty; give at least one path, or remove [geoip]",
                    ));
                }
                let mut paths = Vec::with_capacity(names.len());
                for name in names {
                    paths.push(self.resolve("[geoip] database", name, span.clone())?);
                }
                paths
            }
        };

        let bootstrap_dir = match &spec.bootstrap {
            None => None,
            Some(bootstrap) => Some(self.path("[bootstrap] dir", &bootstrap.dir)?),
        };

        let dnstap = match &spec.dnstap {
            None => None,
            Some(dnstap) => Some(self.dnstap(dnstap)?),
        };

        Ok(NodeConfig {
            node_id,
            data_dir,
            dns_listen,
            admin_listen,
            admin_token,
            admin_tokens,
            reads_need_token: spec.admin.reads_need_token.unwrap_or(false),
            admin_max_body,
            raft_listen,
            raft_peers,
            raft_secret,
            raft_tls,
            raft_max_snapshot,
            admin_tls,
            geoip_databases,
            bootstrap_dir,
            dnstap,
            rate_limit,
            cookies: spec.dns.cookies.unwrap_or(true),
            admin_hosts,
            warnings,
            source: None,
        })
    }

    /// `[dns] rate_limit`: each key within its range, the defaults for those left out.
    fn rate_limit(&self, spec: &RateLimitSpec) -> Result<RateLimit, ConfigError> {
        let d = RateLimit::default();
        let int = |key: &str, v: &Option<Spanned<i64>>, min: i64, max: i64, default: i64| {
            let Some(v) = v else {
                return Ok(default);
            };
            let n = *v.get_ref();
            if n < min || n > max {
                return Err(self.invalid(
                    v.span(),
                    format!("[dns] rate_limit.{key}: {n} is out of range ({min} to {max})"),
                ));
            }
            Ok(n)
        };
        Ok(RateLimit {
            responses_per_second: int(
                "responses_per_second",
                &spec.responses_per_second,
                1,
                i64::from(MAX_RESPONSES_PER_SECOND),
                i64::from(d.responses_per_second),
            )? as u32,
            slip: int(
                "slip",
                &spec.slip,
                0,
                i64::from(MAX_SLIP),
                i64::from(d.slip),
            )? as u32,
            ipv4_prefix: int(
                "ipv4_prefix",
                &spec.ipv4_prefix,
                0,
                32,
                i64::from(d.ipv4_prefix),
            )? as u8,
            ipv6_prefix: int(
                "ipv6_prefix",
                &spec.ipv6_prefix,
                0,
                128,
                i64::from(d.ipv6_prefix),
            )? as u8,
        })
    }

    /// `[dnstap]`: exactly one of `socket` and `file`; identity and version default.
    fn dnstap(&self, spec: &Spanned<DnstapSpec>) -> Result<DnstapConfig, ConfigError> {
        let table = spec.get_ref();
        let sink = match (&table.socket, &table.file) {
            (Some(_), Some(file)) => {
                return Err(self.invalid(
                    file.span(),
                    "[dnstap] file: socket is set too; give only one of them",
                ))
            }
            (None, None) => {
                return Err(self.invalid(
                    spec.span(),
                    "[dnstap]: give socket = \"/path/to/unix.sock\" or file = \"queries.dnstap\"",
                ))
            }
            (Some(socket), None) => {
                let path = self.path("[dnstap] socket", socket)?;
                if path.as_os_str().len() > MAX_UNIX_PATH {
                    return Err(self.invalid(
                        socket.span(),
                        format!(
                            "[dnstap] socket: {} is longer than a unix socket path may be ({MAX_UNIX_PATH} bytes)",
                            path.display()
                        ),
                    ));
                }
                DnstapSink::Socket(path)
            }
            (None, Some(file)) => DnstapSink::File(self.path("[dnstap] file", file)?),
        };
        let text = |key: &str, value: &Option<Spanned<String>>, default: fn() -> String| match value
        {
            None => Ok(default()),
            Some(v) if v.get_ref().trim().is_empty() => {
                Err(self.invalid(v.span(), format!("[dnstap] {key}: empty")))
            }
            Some(v) => Ok(v.get_ref().clone()),
        };
        Ok(DnstapConfig {
            sink,
            identity: text("identity", &table.identity, host_name)?,
            version: text("version", &table.version, default_dnstap_version)?,
        })
    }

    fn node_id(&self, node_id: &Spanned<i64>) -> Result<u64, ConfigError> {
        match u64::try_from(*node_id.get_ref()) {
            Ok(id) if id >= 1 => Ok(id),
            _ => Err(self.invalid(
                node_id.span(),
                format!(
                    "node_id: {} is not a node id (a positive integer)",
                    node_id.get_ref()
                ),
            )),
        }
    }

    fn addr(&self, key: &str, value: &Spanned<String>) -> Result<SocketAddr, ConfigError> {
        value.get_ref().trim().parse::<SocketAddr>().map_err(|_| {
            self.invalid(
                value.span(),
                format!(
                    "{key}: {:?} is not an \"ip:port\" address (IPv6 as \"[::1]:53\")",
                    value.get_ref()
                ),
            )
        })
    }

    fn peers(
        &self,
        node_id: u64,
        raft_listen: SocketAddr,
        raft: &RaftSpec,
    ) -> Result<BTreeMap<u64, SocketAddr>, ConfigError> {
        let mut peers = BTreeMap::new();
        let mut seen = HashSet::new();
        for (key, value) in &raft.peers {
            // Only canonical decimal: "1", not "01" or "+1", so two keys never name one node.
            let id = key
                .parse::<u64>()
                .ok()
                .filter(|id| *id >= 1 && id.to_string() == *key)
                .ok_or_else(|| {
                    self.invalid(
                        value.span(),
                        format!(
                            "[raft] peers: key {key:?} is not a node id (a positive decimal integer such as \"1\")"
                        ),
                    )
                })?;
            let addr = self.addr(&format!("[raft] peers.{key}"), value)?;
            if addr.ip().is_unspecified() {
                return Err(self.invalid(
                    value.span(),
                    format!(
                        "[raft] peers.{key}: {addr} is a wildcard address; give one the other nodes can connect to"
                    ),
                ));
            }
            if !seen.insert(addr) {
                return Err(self.invalid(
                    value.span(),
                    format!("[raft] peers.{key}: {addr} is the address of another peer too"),
                ));
            }
            if id == node_id {
                let matches = if raft_listen.ip().is_unspecified() {
                    addr.port() == raft_listen.port()
                } else {
                    addr == raft_listen
                };
                if !matches {
                    let what = if raft_listen.ip().is_unspecified() {
                        "its port must be the port of"
                    } else {
                        "it must equal"
                    };
                    return Err(self.invalid(
                        value.span(),
                        format!(
                            "[raft] peers.{key}: this node (node_id {node_id}) is listed at {addr}, but [raft] listen is {raft_listen}; {what} [raft] listen"
                        ),
                    ));
                }
            }
            peers.insert(id, addr);
        }
        Ok(peers)
    }

    /// A secret given inline or by file (contents trimmed); both set or empty is an error.
    fn secret(
        &self,
        (inline_key, inline): (&'static str, Option<&Spanned<String>>),
        (file_key, file): (&'static str, Option<&Spanned<String>>),
    ) -> Result<Option<String>, ConfigError> {
        match (inline, file) {
            (Some(_), Some(file)) => Err(self.invalid(
                file.span(),
                format!("{file_key}: {inline_key} is set too; give only one of them"),
            )),
            (Some(inline), None) => {
                if inline.get_ref().trim().is_empty() {
                    return Err(self.invalid(inline.span(), format!("{inline_key}: empty")));
                }
                Ok(Some(inline.get_ref().clone()))
            }
            (None, Some(file)) => {
                let path = self.path(file_key, file)?;
                let contents =
                    std::fs::read_to_string(&path).map_err(|source| ConfigError::SecretFile {
                        at: self.at(Some(file.span())),
                        key: file_key,
                        path: path.clone(),
                        source,
                    })?;
                let secret = contents.trim();
                if secret.is_empty() {
                    return Err(self.invalid(
                        file.span(),
                        format!("{file_key}: {} is empty", path.display()),
                    ));
                }
                Ok(Some(secret.to_string()))
            }
            (None, None) => Ok(None),
        }
    }

    fn tls_files(&self, key: &str, spec: &Spanned<TlsSpec>) -> Result<TlsFiles, ConfigError> {
        let t = spec.get_ref();
        let span = spec.span();
        Ok(TlsFiles {
            cert: self.resolve(&format!("{key}.cert"), &t.cert, span.clone())?,
            key: self.resolve(&format!("{key}.key"), &t.key, span.clone())?,
            ca: match &t.ca {
                Some(ca) => Some(self.resolve(&format!("{key}.ca"), ca, span)?),
                None => None,
            },
        })
    }

    /// A warning when a secret's file can be read (or written) by its group or others.
    fn loose_mode(&self, key: &str, file: &Spanned<String>) -> Option<String> {
        use std::os::unix::fs::PermissionsExt;
        let path = self.path(key, file).ok()?;
        let mode = std::fs::metadata(&path).ok()?.permissions().mode() & 0o777;
        (mode & 0o077 != 0).then(|| {
            format!(
                "{}: {key}: {} is readable by its group or others (mode {mode:04o}); `chmod 600` it",
                self.at(Some(file.span())),
                path.display()
            )
        })
    }

    fn path(&self, key: &str, value: &Spanned<String>) -> Result<PathBuf, ConfigError> {
        self.resolve(key, value.get_ref(), value.span())
    }

    fn resolve(&self, key: &str, value: &str, span: Range<usize>) -> Result<PathBuf, ConfigError> {
        if value.trim().is_empty() {
            return Err(self.invalid(span, format!("{key}: empty path")));
        }
        Ok(self.base.join(value))
    }
}

/// A size: an integer number of bytes, or a string with a binary unit (`"1GiB"`, `"512 MiB"`,
/// `"64KiB"`, `"100B"`); at least 1.
fn parse_size(v: &toml::Value) -> Option<u64> {
    match v {
        toml::Value::Integer(n) => u64::try_from(*n).ok().filter(|n| *n > 0),
        toml::Value::String(s) => {
            let s = s.trim();
            let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
            let n: u64 = s[..digits].parse().ok()?;
            let unit: u64 = match s[digits..].trim() {
                "" | "B" => 1,
                "KiB" => 1 << 10,
                "MiB" => 1 << 20,
                "GiB" => 1 << 30,
                "TiB" => 1 << 40,
                _ => return None,
            };
            n.checked_mul(unit).filter(|n| *n > 0)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
node_id = 2
data_dir = "state"

[dns]
listen = ["127.0.0.1:1053", "[::1]:1053"]

[admin]
listen = "127.0.0.1:8053"
token = "s3cret-token"

[raft]
listen = "0.0.0.0:9054"
peers = { "1" = "10.0.0.1:9053", "2" = "10.0.0.2:9054", "3" = "10.0.0.3:9055" }
secret = "raft-s3cret"

[geoip]
database = ["v4.mmdb", "/abs/v6.mmdb"]

[bootstrap]
dir = "../zones"
"#;

    const MINIMAL: &str = r#"
node_id = 1
[dns]
listen = ["127.0.0.1:1053"]
[admin]
listen = "127.0.0.1:8053"
[raft]
listen = "127.0.0.1:9053"
peers = { "1" = "127.0.0.1:9053" }
"#;

    fn parse(text: &str) -> Result<NodeConfig, ConfigError> {
        from_toml_with_env(text, "node.toml", Path::new("/etc/meridian"), None)
    }

    fn parse_err(text: &str) -> String {
        match parse(text) {
            Ok(config) => panic!("expected an error, got {config:?}"),
            Err(e) => e.to_string(),
        }
    }

    /// A fresh empty directory under the system temp dir.
    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "meridian-config-test-{}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        dir
    }

    #[test]
    fn defaults_are_the_single_node_try_out_cluster() {
        let c = NodeConfig::defaults();
        assert_eq!(c.node_id, 1);
        assert_eq!(c.dns_listen, vec!["127.0.0.1:1053".parse().unwrap()]);
        assert_eq!(c.admin_listen, "127.0.0.1:8053".parse().unwrap());
        assert_eq!(c.raft_listen, "127.0.0.1:9053".parse().unwrap());
        assert_eq!(
            c.raft_peers,
            BTreeMap::from([(1, "127.0.0.1:9053".parse().unwrap())])
        );
        assert_eq!(c.data_dir, PathBuf::from("data"));
        assert_eq!(
            c.geoip_databases,
            vec![PathBuf::from("geoip/GeoIP2-City-Test.mmdb")]
        );
        assert_eq!(c.bootstrap_dir, Some(PathBuf::from("zones")));
        assert_eq!(c.raft_secret, None);
        assert_eq!(c.admin_token, env_admin_token());
    }

    #[test]
    fn full_file_with_every_key_is_valid() {
        let c = parse(FULL).unwrap();
        assert_eq!(c.node_id, 2);
        assert_eq!(c.data_dir, PathBuf::from("/etc/meridian/state"));
        assert_eq!(
            c.dns_listen,
            vec![
                "127.0.0.1:1053".parse().unwrap(),
                "[::1]:1053".parse().unwrap()
            ]
        );
        assert_eq!(c.admin_listen, "127.0.0.1:8053".parse().unwrap());
        assert_eq!(c.admin_token.as_deref(), Some("s3cret-token"));
        assert_eq!(c.raft_listen, "0.0.0.0:9054".parse().unwrap());
        assert_eq!(c.raft_peers.len(), 3);
        assert_eq!(c.raft_peers[&3], "10.0.0.3:9055".parse().unwrap());
        assert_eq!(c.raft_secret.as_deref(), Some("raft-s3cret"));
        assert_eq!(
            c.geoip_databases,
            vec![
                PathBuf::from("/etc/meridian/v4.mmdb"),
                PathBuf::from("/abs/v6.mmdb")
            ]
        );
        assert_eq!(
            c.bootstrap_dir,
            Some(PathBuf::from("/etc/meridian/../zones"))
        );
    }

    #[test]
    fn minimal_file_defaults_data_dir_and_omits_geoip_and_bootstrap() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/etc/meridian/data"));
        assert!(c.geoip_databases.is_empty());
        assert_eq!(c.bootstrap_dir, None);
        assert_eq!(c.admin_token, None);
        assert_eq!(c.raft_secret, None);
    }

    #[test]
    fn geoip_database_as_string() {
        let c = parse(&format!("{MINIMAL}[geoip]\ndatabase = \"city.mmdb\"\n")).unwrap();
        assert_eq!(
            c.geoip_databases,
            vec![PathBuf::from("/etc/meridian/city.mmdb")]
        );
    }

    #[test]
    fn geoip_database_as_list() {
        let c = parse(&format!(
            "{MINIMAL}[geoip]\ndatabase = [\"v4.mmdb\", \"v6.mmdb\"]\n"
        ))
        .unwrap();
        assert_eq!(
            c.geoip_databases,
            vec![
                PathBuf::from("/etc/meridian/v4.mmdb"),
                PathBuf::from("/etc/meridian/v6.mmdb")
            ]
        );
    }

    #[test]
    fn geoip_database_of_another_type_is_refused() {
        let e = parse_err(&format!("{MINIMAL}[geoip]\ndatabase = 5\n"));
        assert!(
            e.starts_with("node.toml:11: ") && e.contains("a path or a list of paths"),
            "{e}"
        );
        let e = parse_err(&format!("{MINIMAL}[geoip]\ndatabase = [\"a\", 5]\n"));
        assert!(e.starts_with("node.toml:11: "), "{e}");
    }

    #[test]
    fn geoip_empty_list_is_refused() {
        let e = parse_err(&format!("{MINIMAL}[geoip]\ndatabase = []\n"));
        assert!(e.contains("[geoip] database"), "{e}");
    }

    #[test]
    fn relative_paths_resolve_against_the_config_files_directory() {
        let dir = temp_dir("relative");
        let path = dir.join("node.toml");
        let text = format!(
            "data_dir = \"d/n1\"\n{MINIMAL}[geoip]\ndatabase = \"../g.mmdb\"\n[bootstrap]\ndir = \"/abs/zones\"\n"
        );
        std::fs::write(&path, text).unwrap();
        let c = NodeConfig::load(&path).unwrap();
        assert_eq!(c.data_dir, dir.join("d/n1"));
        assert_eq!(c.geoip_databases, vec![dir.join("../g.mmdb")]);
        assert_eq!(c.bootstrap_dir, Some(PathBuf::from("/abs/zones")));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn unknown_top_level_key_is_named_with_its_line() {
        let e = parse_err(&MINIMAL.replace("node_id = 1\n", "node_id = 1\nnode_name = \"x\"\n"));
        // MINIMAL starts with a blank line, so node_id is line 2 and node_name line 3.
        assert!(e.starts_with("node.toml:3: "), "{e}");
        assert!(e.contains("node_name"), "{e}");
    }

    #[test]
    fn unknown_key_in_dns_is_named_with_its_line() {
        let text = MINIMAL.replace(
            "listen = [\"127.0.0.1:1053\"]\n",
            "listen = [\"127.0.0.1:1053\"]\nport = 53\n",
        );
        let e = parse_err(&text);
        assert!(e.starts_with("node.toml:5: "), "{e}");
        assert!(e.contains("port"), "{e}");
    }

    #[test]
    fn missing_required_key_is_an_error() {
        for (key, text) in [
            ("node_id", MINIMAL.replace("node_id = 1\n", "")),
            (
                "listen",
                MINIMAL.replace("listen = \"127.0.0.1:8053\"\n", ""),
            ),
            (
                "peers",
                MINIMAL.replace("peers = { \"1\" = \"127.0.0.1:9053\" }\n", ""),
            ),
            (
                "dns",
                MINIMAL.replace("[dns]\nlisten = [\"127.0.0.1:1053\"]\n", ""),
            ),
        ] {
            let e = parse_err(&text);
            assert!(e.starts_with("node.toml"), "{e}");
            assert!(e.contains("missing field") && e.contains(key), "{key}: {e}");
        }
    }

    #[test]
    fn bad_address_is_an_error_with_its_line() {
        let text = MINIMAL.replace("listen = \"127.0.0.1:8053\"", "listen = \"localhost:8053\"");
        let e = parse_err(&text);
        assert!(
            e.starts_with("node.toml:6: [admin] listen: \"localhost:8053\""),
            "{e}"
        );
        let e = parse_err(&MINIMAL.replace("\"127.0.0.1:1053\"", "\"::1:53\""));
        assert!(e.contains("[dns] listen") && e.contains("[::1]:53"), "{e}");
        let e = parse_err(&MINIMAL.replace("\"127.0.0.1:1053\"", "\"127.0.0.1\""));
        assert!(e.contains("[dns] listen"), "{e}");
    }

    #[test]
    fn empty_and_duplicate_dns_listen_are_refused() {
        let e = parse_err(&MINIMAL.replace("[\"127.0.0.1:1053\"]", "[]"));
        assert!(e.contains("[dns] listen") && e.contains("empty"), "{e}");
        let e = parse_err(&MINIMAL.replace(
            "[\"127.0.0.1:1053\"]",
            "[\"127.0.0.1:1053\", \"127.0.0.1:1053\"]",
        ));
        assert!(e.contains("listed twice"), "{e}");
    }

    #[test]
    fn listen_addresses_must_not_collide() {
        let e = parse_err(
            &MINIMAL.replace("listen = \"127.0.0.1:8053\"", "listen = \"127.0.0.1:1053\""),
        );
        assert!(
            e.contains("[admin] listen") && e.contains("[dns] listen"),
            "{e}"
        );
    }

    #[test]
    fn bad_node_id_is_refused() {
        let e = parse_err(&MINIMAL.replace("node_id = 1", "node_id = 0"));
        assert!(e.starts_with("node.toml:2: node_id"), "{e}");
        let e = parse_err(&MINIMAL.replace("node_id = 1", "node_id = -3"));
        assert!(e.contains("node_id"), "{e}");
    }

    #[test]
    fn bad_peer_key_is_refused() {
        for key in ["0", "abc", "01", "-1", "+1"] {
            let text = MINIMAL.replace(
                "\"1\" = \"127.0.0.1:9053\"",
                &format!("\"{key}\" = \"127.0.0.1:9053\""),
            );
            let e = parse_err(&text);
            assert!(
                e.starts_with("node.toml:9: [raft] peers: key"),
                "{key}: {e}"
            );
            assert!(e.contains(&format!("{key:?}")), "{key}: {e}");
        }
    }

    #[test]
    fn bad_peer_address_is_refused() {
        let e = parse_err(&MINIMAL.replace("\"1\" = \"127.0.0.1:9053\"", "\"1\" = \"nowhere\""));
        assert!(e.contains("[raft] peers.1"), "{e}");
    }

    #[test]
    fn own_peer_entry_must_match_raft_listen() {
        let text = MINIMAL.replace("\"1\" = \"127.0.0.1:9053\"", "\"1\" = \"127.0.0.1:9999\"");
        let e = parse_err(&text);
        assert!(
            e.contains("node_id 1") && e.contains("[raft] listen"),
            "{e}"
        );
        // A wildcard listen only needs the port to match…
        let text = MINIMAL
            .replace("listen = \"127.0.0.1:9053\"", "listen = \"0.0.0.0:9053\"")
            .replace("\"1\" = \"127.0.0.1:9053\"", "\"1\" = \"10.1.2.3:9053\"");
        assert!(parse(&text).is_ok());
        let e = parse_err(&text.replace("10.1.2.3:9053", "10.1.2.3:9054"));
        assert!(e.contains("port"), "{e}");
    }

    #[test]
    fn node_not_in_peers_is_valid() {
        let text = MINIMAL.replace("node_id = 1", "node_id = 4");
        let c = parse(&text).unwrap();
        assert_eq!(c.node_id, 4);
        assert!(!c.raft_peers.contains_key(&4));
    }

    #[test]
    fn duplicate_and_wildcard_peer_addresses_are_refused() {
        let text = MINIMAL.replace(
            "{ \"1\" = \"127.0.0.1:9053\" }",
            "{ \"1\" = \"127.0.0.1:9053\", \"2\" = \"127.0.0.1:9053\" }",
        );
        assert!(parse_err(&text).contains("another peer"));
        let text = MINIMAL.replace(
            "{ \"1\" = \"127.0.0.1:9053\" }",
            "{ \"1\" = \"127.0.0.1:9053\", \"2\" = \"0.0.0.0:9054\" }",
        );
        assert!(parse_err(&text).contains("wildcard"));
    }

    #[test]
    fn token_and_token_file_both_set_is_an_error() {
        let text = MINIMAL.replace(
            "listen = \"127.0.0.1:8053\"\n",
            "listen = \"127.0.0.1:8053\"\ntoken = \"a\"\ntoken_file = \"t\"\n",
        );
        let e = parse_err(&text);
        assert!(e.contains("token_file") && e.contains("only one"), "{e}");
        let text = MINIMAL.replace(
            "peers = {",
            "secret = \"a\"\nsecret_file = \"s\"\npeers = {",
        );
        assert!(parse_err(&text).contains("secret_file"));
    }

    #[test]
    fn token_file_is_read_and_trimmed() {
        let dir = temp_dir("token");
        std::fs::write(dir.join("token"), "  tok-123\n\n").unwrap();
        std::fs::write(dir.join("secret"), "raft-sec\n").unwrap();
        let text = MINIMAL
            .replace(
                "listen = \"127.0.0.1:8053\"\n",
                "listen = \"127.0.0.1:8053\"\ntoken_file = \"token\"\n",
            )
            .replace("peers = {", "secret_file = \"secret\"\npeers = {");
        let c = from_toml_with_env(&text, "n.toml", &dir, Some("env-tok".into())).unwrap();
        assert_eq!(c.admin_token.as_deref(), Some("tok-123"));
        assert_eq!(c.raft_secret.as_deref(), Some("raft-sec"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn unreadable_token_file_names_the_path() {
        let text = MINIMAL.replace(
            "listen = \"127.0.0.1:8053\"\n",
            "listen = \"127.0.0.1:8053\"\ntoken_file = \"no-such-token\"\n",
        );
        let e = parse_err(&text);
        assert!(
            e.starts_with(
                "node.toml:7: [admin] token_file: cannot read /etc/meridian/no-such-token"
            ),
            "{e}"
        );
    }

    #[test]
    fn secret_files_others_can_read_are_a_warning() {
        use std::os::unix::fs::PermissionsExt;
        let dir = temp_dir("modes");
        let token = dir.join("token");
        let secret = dir.join("raft-secret");
        std::fs::write(&token, "t0ken\n").expect("write");
        std::fs::write(&secret, "s3cret\n").expect("write");
        let text = MINIMAL
            .replace(
                "listen = \"127.0.0.1:8053\"",
                "listen = \"127.0.0.1:8053\"\ntoken_file = \"token\"",
            )
            .replace(
                "listen = \"127.0.0.1:9053\"",
                "listen = \"127.0.0.1:9053\"\nsecret_file = \"raft-secret\"",
            );
        let load = || from_toml_with_env(&text, "node.toml", &dir, None).expect("valid");
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o400)).expect("chmod");
        assert!(load().warnings.is_empty(), "{:?}", load().warnings);
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        let w = load().warnings;
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(
            w[0].starts_with("node.toml:7: [admin] token_file: "),
            "{w:?}"
        );
        assert!(w[0].contains("(mode 0644)"), "{w:?}");
        assert!(
            w[1].contains("[raft] secret_file") && w[1].contains("(mode 0640)"),
            "{w:?}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn empty_token_is_an_error() {
        let text = MINIMAL.replace(
            "listen = \"127.0.0.1:8053\"\n",
            "listen = \"127.0.0.1:8053\"\ntoken = \"\"\n",
        );
        assert!(parse_err(&text).contains("[admin] token: empty"));
        let dir = temp_dir("empty-token");
        std::fs::write(dir.join("token"), "\n").unwrap();
        let text = MINIMAL.replace(
            "listen = \"127.0.0.1:8053\"\n",
            "listen = \"127.0.0.1:8053\"\ntoken_file = \"token\"\n",
        );
        let e = from_toml_with_env(&text, "n.toml", &dir, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("is empty"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn env_token_is_used_only_when_the_file_names_none() {
        let base = Path::new("/etc/meridian");
        let c = from_toml_with_env(MINIMAL, "n.toml", base, Some("from-env".into())).unwrap();
        assert_eq!(c.admin_token.as_deref(), Some("from-env"));
        let text = MINIMAL.replace(
            "listen = \"127.0.0.1:8053\"\n",
            "listen = \"127.0.0.1:8053\"\ntoken = \"from-file\"\n",
        );
        let c = from_toml_with_env(&text, "n.toml", base, Some("from-env".into())).unwrap();
        assert_eq!(c.admin_token.as_deref(), Some("from-file"));
        // The public entry point reads the real environment.
        let c = NodeConfig::from_toml(MINIMAL, "n.toml", base).unwrap();
        assert_eq!(c.admin_token, env_admin_token());
    }

    #[test]
    fn rate_limit_is_off_by_default_and_every_key_optional() {
        assert_eq!(parse(MINIMAL).unwrap().rate_limit, None);
        assert_eq!(NodeConfig::defaults().rate_limit, None);
        let with = |table: &str| {
            MINIMAL.replace(
                "listen = [\"127.0.0.1:1053\"]",
                &format!("listen = [\"127.0.0.1:1053\"]\nrate_limit = {table}"),
            )
        };
        assert_eq!(
            parse(&with("{}")).unwrap().rate_limit,
            Some(RateLimit {
                responses_per_second: 20,
                slip: 2,
                ipv4_prefix: 24,
                ipv6_prefix: 56
            })
        );
        let c = parse(&with(
            "{ responses_per_second = 200, slip = 0, ipv6_prefix = 64 }",
        ))
        .unwrap();
        assert_eq!(
            c.rate_limit,
            Some(RateLimit {
                responses_per_second: 200,
                slip: 0,
                ipv4_prefix: 24,
                ipv6_prefix: 64
            })
        );
        let e = parse_err(&with("{ ipv4_prefix = 33 }"));
        assert!(e.starts_with("node.toml:5: "), "{e}");
        assert!(
            e.contains("ipv4_prefix: 33 is out of range (0 to 32)"),
            "{e}"
        );
        let e = parse_err(&with("{ responses_per_second = 0 }"));
        assert!(e.contains("responses_per_second: 0 is out of range"), "{e}");
        let e = parse_err(&with("{ slip = 11 }"));
        assert!(e.contains("slip: 11 is out of range (0 to 10)"), "{e}");
        let e = parse_err(&with("{ rate = 5 }"));
        assert!(e.contains("unknown field `rate`"), "{e}");
    }

    #[test]
    fn admin_hosts_are_names() {
        assert!(parse(MINIMAL).unwrap().admin_hosts.is_empty());
        let with = |v: &str| {
            MINIMAL.replace(
                "listen = \"127.0.0.1:8053\"",
                &format!("listen = \"127.0.0.1:8053\"\nhosts = {v}"),
            )
        };
        let c = parse(&with("[\"Meridian.Example.com\", \"dns-admin\"]")).unwrap();
        assert_eq!(c.admin_hosts, ["meridian.example.com", "dns-admin"]);
        let e = parse_err(&with("[\"example.com:8053\"]"));
        assert!(
            e.contains("[admin] hosts: \"example.com:8053\" is not a host name"),
            "{e}"
        );
        let e = parse_err(&with("[\"\"]"));
        assert!(e.contains("is not a host name"), "{e}");
    }

    #[test]
    fn cookies_are_on_by_default() {
        assert!(parse(MINIMAL).unwrap().cookies);
        assert!(NodeConfig::defaults().cookies);
        let off = MINIMAL.replace(
            "listen = [\"127.0.0.1:1053\"]",
            "listen = [\"127.0.0.1:1053\"]\ncookies = false",
        );
        assert!(!parse(&off).unwrap().cookies);
    }

    #[test]
    fn debug_redacts_token_and_secret() {
        let c = parse(FULL).unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cret-token"), "{shown}");
        assert!(!shown.contains("raft-s3cret"), "{shown}");
        assert!(shown.contains("admin_token: Some(<redacted>)"), "{shown}");
        assert!(shown.contains("raft_secret: Some(<redacted>)"), "{shown}");
        assert!(shown.contains("node_id: 2"), "{shown}");
    }

    #[test]
    fn unreadable_config_file_is_a_read_error() {
        let e = NodeConfig::load(Path::new("/nonexistent/meridian.toml")).unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }));
        assert!(e
            .to_string()
            .starts_with("/nonexistent/meridian.toml: cannot read"));
    }

    #[test]
    fn syntax_error_has_a_line() {
        let e = parse_err(&format!("{MINIMAL}[geoip\n"));
        assert!(e.starts_with("node.toml:10: "), "{e}");
        assert!(!e.contains('\n'), "one line: {e}");
    }

    #[test]
    fn cluster_example_configs_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("cluster");
        let mut raft = Vec::new();
        for n in 1..=3u16 {
            let c = NodeConfig::load(&dir.join(format!("node{n}.toml")))
                .unwrap_or_else(|e| panic!("node{n}.toml: {e}"));
            assert_eq!(c.node_id, u64::from(n));
            assert_eq!(
                c.dns_listen,
                vec![SocketAddr::from(([127, 0, 0, 1], 1052 + n))]
            );
            assert_eq!(c.admin_listen, SocketAddr::from(([127, 0, 0, 1], 8052 + n)));
            assert_eq!(c.raft_listen, SocketAddr::from(([127, 0, 0, 1], 9052 + n)));
            assert_eq!(c.data_dir, dir.join(format!("data/node{n}")));
            assert_eq!(c.admin_token.as_deref(), Some("dev-token-change-me"));
            assert_eq!(
                c.geoip_databases,
                vec![dir.join("../geoip/GeoIP2-City-Test.mmdb")]
            );
            assert_eq!(c.bootstrap_dir, Some(dir.join("../zones")));
            raft.push(c.raft_peers);
        }
        assert_eq!(raft[0].len(), 3);
        assert!(raft.iter().all(|peers| *peers == raft[0]));
    }

    #[test]
    fn dnstap_file_with_defaults() {
        let c = parse(&format!("{MINIMAL}\n[dnstap]\nfile = \"q.dnstap\"\n")).expect("valid");
        let d = c.dnstap.expect("dnstap");
        assert_eq!(
            d.sink,
            DnstapSink::File(PathBuf::from("/etc/meridian/q.dnstap"))
        );
        assert_eq!(d.identity, host_name());
        assert!(!d.identity.is_empty());
        assert_eq!(d.version, format!("meridian {}", env!("CARGO_PKG_VERSION")));
        assert_eq!(parse(MINIMAL).expect("valid").dnstap, None);
    }

    #[test]
    fn dnstap_socket_with_identity_and_version() {
        let c = parse(&format!(
            "{MINIMAL}\n[dnstap]\nsocket = \"/run/dt.sock\"\nidentity = \"ns1\"\nversion = \"v9\"\n"
        ))
        .expect("valid");
        let d = c.dnstap.expect("dnstap");
        assert_eq!(d.sink, DnstapSink::Socket(PathBuf::from("/run/dt.sock")));
        assert_eq!((d.identity.as_str(), d.version.as_str()), ("ns1", "v9"));
    }

    #[test]
    fn dnstap_needs_exactly_one_sink_and_known_keys() {
        let base = MINIMAL.lines().count() + 2;
        let e = parse_err(&format!("{MINIMAL}\n[dnstap]\nidentity = \"x\"\n"));
        assert!(
            e.contains("give socket = ") && e.starts_with("node.toml:"),
            "{e}"
        );
        let e = parse_err(&format!(
            "{MINIMAL}\n[dnstap]\nsocket = \"/a.sock\"\nfile = \"b\"\n"
        ));
        assert_eq!(
            e,
            format!(
                "node.toml:{}: [dnstap] file: socket is set too; give only one of them",
                base + 2
            )
        );
        let e = parse_err(&format!(
            "{MINIMAL}\n[dnstap]\nfile = \"b\"\nformat = \"x\"\n"
        ));
        assert!(e.contains("unknown field `format`"), "{e}");
        let e = parse_err(&format!(
            "{MINIMAL}\n[dnstap]\nfile = \"b\"\nidentity = \" \"\n"
        ));
        assert!(e.ends_with("[dnstap] identity: empty"), "{e}");
        let long = format!("/{}", "x".repeat(120));
        let e = parse_err(&format!("{MINIMAL}\n[dnstap]\nsocket = \"{long}\"\n"));
        assert!(e.contains("longer than a unix socket path"), "{e}");
    }
}

#[cfg(test)]
mod tls_tests {
    use super::*;

    const BASE: &str = r#"
node_id = 1
[dns]
listen = ["127.0.0.1:1053"]
[admin]
listen = "127.0.0.1:8053"
"#;

    fn parse(admin_extra: &str, raft_extra: &str) -> Result<NodeConfig, ConfigError> {
        let text = format!(
            "{BASE}{admin_extra}\n[raft]\nlisten = \"127.0.0.1:9053\"\npeers = {{ \"1\" = \"127.0.0.1:9053\" }}\n{raft_extra}\n"
        );
        from_toml_with_env(&text, "node.toml", Path::new("/etc/meridian"), None)
    }

    #[test]
    fn tls_paths_are_relative_to_the_file() {
        let c = parse(
            "tls = { cert = \"admin.crt\", key = \"/k/admin.key\" }",
            "tls = { cert = \"node1.crt\", key = \"node1.key\", ca = \"ca.crt\" }\nmax_snapshot = \"512MiB\"",
        )
        .expect("valid");
        let raft = c.raft_tls.expect("raft tls");
        assert_eq!(raft.cert, PathBuf::from("/etc/meridian/node1.crt"));
        assert_eq!(raft.ca, Some(PathBuf::from("/etc/meridian/ca.crt")));
        let admin = c.admin_tls.expect("admin tls");
        assert_eq!(admin.key, PathBuf::from("/k/admin.key"));
        assert_eq!(admin.ca, None);
        assert_eq!(c.raft_max_snapshot, 512 << 20);
        let c = parse("", "").expect("valid");
        assert_eq!((c.raft_tls, c.admin_tls), (None, None));
        assert_eq!(c.raft_max_snapshot, DEFAULT_MAX_SNAPSHOT);
    }

    #[test]
    fn tls_errors() {
        let e = parse("", "tls = { cert = \"a\", key = \"b\" }").expect_err("no ca");
        assert!(e.to_string().contains("`ca` is required"), "{e}");
        let e = parse("tls = { cert = \"a\", key = \"b\", ca = \"c\" }", "").expect_err("ca");
        assert!(e.to_string().contains("[admin] tls"), "{e}");
        let e = parse("", "tls = { cert = \"a\", key = \"b\", ca = \"c\", x = 1 }").expect_err("x");
        assert!(e.to_string().contains("unknown field"), "{e}");
        for bad in ["0", "-5", "\"1 GB\"", "\"lots\"", "1.5"] {
            let e = parse("", &format!("max_snapshot = {bad}")).expect_err(bad);
            assert!(e.to_string().contains("max_snapshot"), "{bad}: {e}");
        }
        assert_eq!(
            parse("", "max_snapshot = 4096")
                .expect("int")
                .raft_max_snapshot,
            4096
        );
    }
}

/// The identity of each file (device, inode, size, modification time; `None`: missing), to
/// see a file replaced on disk (by rename, or rewritten): GeoIP databases, certificates.
pub fn fingerprint<P: AsRef<Path>>(
    paths: impl IntoIterator<Item = P>,
) -> Vec<Option<(u64, u64, u64, std::time::SystemTime)>> {
    use std::os::unix::fs::MetadataExt;
    paths
        .into_iter()
        .map(|p| {
            std::fs::metadata(p.as_ref()).ok().map(|m| {
                (
                    m.dev(),
                    m.ino(),
                    m.len(),
                    m.modified().unwrap_or(std::time::UNIX_EPOCH),
                )
            })
        })
        .collect()
}
