//! A foreground Unbound of the test's own (Debian `unbound`), with a stub zone for
//! `example.com` at a Meridian node: killed when dropped and when the test process dies.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{dig_at, free_port, spawn_owned, Dig, NotReady, Proc};

pub const UNBOUND: &str = "/usr/sbin/unbound";

pub struct Unbound {
    /// First, so dropped (the process killed) before its directory is deleted.
    child: Proc,
    dir: tempfile::TempDir,
    pub addr: SocketAddr,
}

impl Unbound {
    /// Start Unbound stub to `meridian` for `example.com`, with `server_extra` lines in its
    /// `server:` section (modules, ECS, a trust anchor…), and wait (bounded) until it
    /// answers. Retries on a fresh port if it exits early (a port taken since it was picked).
    pub fn start(meridian: SocketAddr, server_extra: &str) -> Unbound {
        let mut last = String::new();
        for _ in 0..3 {
            match Unbound::try_start(meridian, server_extra) {
                Ok(u) => return u,
                Err(log) => last = log,
            }
        }
        panic!("unbound did not start:\n{last}");
    }

    fn try_start(meridian: SocketAddr, server_extra: &str) -> Result<Unbound, String> {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let d = dir.path().display();
        let config = format!(
            r#"server:
    interface: 127.0.0.1@{port}
    port: {port}
    do-ip6: no
    so-reuseport: no
    num-threads: 1
    outgoing-range: 64
    access-control: 127.0.0.0/8 allow
    do-not-query-localhost: no
    username: ""
    chroot: ""
    directory: "{d}"
    pidfile: "{d}/unbound.pid"
    use-syslog: no
    logfile: ""
    verbosity: 1
    harden-referral-path: no
    qname-minimisation: no
    target-fetch-policy: "0 0 0 0 0"
{server_extra}
remote-control:
    control-enable: no

stub-zone:
    name: "example.com"
    stub-addr: {ip}@{mport}
    stub-first: no
"#,
            ip = meridian.ip(),
            mport = meridian.port(),
        );
        let conf = dir.path().join("unbound.conf");
        std::fs::write(&conf, config).expect("write unbound.conf");
        let log = std::fs::File::create(dir.path().join("unbound.log")).expect("unbound log");
        let child = spawn_owned(
            Command::new(UNBOUND)
                .arg("-d")
                .arg("-c")
                .arg(&conf)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log),
        );
        let mut u = Unbound {
            dir,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child: Proc::new(child),
        };
        // Ready when it answers from its own built-in `localhost` zone (no upstream needed).
        let addr = u.addr;
        let ready = u.child.wait_for(Duration::from_secs(15), || {
            let d = dig_at(addr, &["+rec", "localhost", "A"]);
            d.status == "NOERROR" && d.answer_data("A") == ["127.0.0.1"]
        });
        match ready {
            Ok(()) => Ok(u),
            Err(NotReady::Exited(status)) => {
                Err(format!("exited early ({status:?}):\n{}", u.log()))
            }
            Err(NotReady::Timeout) => Err(format!("no answer within 15s:\n{}", u.log())),
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("unbound.log")).unwrap_or_default()
    }

    /// `dig @unbound +rec +dnssec ARGS…`
    pub fn ask(&self, args: &[&str]) -> Dig {
        let mut all = vec!["+rec", "+dnssec"];
        all.extend_from_slice(args);
        dig_at(self.addr, &all)
    }

    /// Ask `name rtype` and require NOERROR with AD; the error has the answer and
    /// Unbound's log, for the caller to add its own context.
    pub fn validated(&self, name: &str, rtype: &str) -> Result<Dig, String> {
        let d = self.ask(&[name, rtype]);
        if d.status == "NOERROR" && d.has_flag("ad") {
            Ok(d)
        } else {
            Err(format!(
                "{name} {rtype}: want NOERROR with AD:\n{}\nunbound log:\n{}",
                d.raw,
                self.log()
            ))
        }
    }
}

/// A validating Unbound stub to `meridian` for example.com, with `ds` (DS RDATA in
/// presentation form, as the dnssec API's GET gives it) as its only trust anchor.
pub fn validator(meridian: SocketAddr, ds: &str) -> Unbound {
    assert!(
        std::path::Path::new(UNBOUND).exists(),
        "{UNBOUND} is missing: run scripts/test.sh, which installs unbound"
    );
    Unbound::start(
        meridian,
        &format!(
            "    val-log-level: 2\n    module-config: \"validator iterator\"\n    trust-anchor: \"example.com. IN DS {ds}\"\n"
        ),
    )
}

/// `delv @at +root=example.com ARGS…` with `ds` (DS RDATA in presentation form, as the
/// dnssec API's GET gives it) as the only trust anchor: delv's whole output.
pub fn delv(at: SocketAddr, ds: &str, args: &[&str]) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let anchors = dir.path().join("anchors.conf");
    let parts: Vec<&str> = ds.split_whitespace().collect();
    assert_eq!(parts.len(), 4, "a DS RDATA has four fields: {ds:?}");
    std::fs::write(
        &anchors,
        format!(
            "trust-anchors {{ example.com. static-ds {} {} {} \"{}\"; }};\n",
            parts[0], parts[1], parts[2], parts[3]
        ),
    )
    .expect("anchors");
    let out = Command::new("delv")
        .arg(format!("@{}", at.ip()))
        .arg("-p")
        .arg(at.port().to_string())
        .arg("-a")
        .arg(&anchors)
        .arg("+root=example.com")
        .args(args)
        .output()
        .expect("run delv (scripts/test.sh installs bind9-dnsutils)");
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}
