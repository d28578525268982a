//! `meridian certs`: a small certificate authority for trying mTLS out — a CA, one
//! certificate per node (DNS SAN `node-N`, server and client use) and one for the admin API
//! (server use only), as PEM files an operator can later replace with their own PKI's.
//!
//! Every certificate names 127.0.0.1, ::1, `localhost` and each `--host`. A directory that
//! already holds `ca.crt` and `ca.key` keeps its CA: running the command again renews the
//! node and admin certificates under the same CA, which is how certificates are rotated
//! without touching the peers' trust. Files are written to a temporary name and renamed,
//! so a node that re-reads them never sees half a file; keys are 0600.

use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};

/// How long a generated CA is valid.
const CA_DAYS: i64 = 3650;
/// How long a generated node or admin certificate is valid.
const LEAF_DAYS: i64 = 825;

/// The DNS SAN that names node `id` in its certificate (DESIGN.md "Transport security").
pub fn node_name(id: u64) -> String {
    format!("node-{id}")
}

/// Why certificates could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    #[error("--nodes must be at least 1")]
    NoNodes,
    #[error("--host {0:?} is neither an IP address nor a DNS name")]
    BadHost(String),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not a usable CA ({what}); remove ca.crt and ca.key to make a new CA", path.display())]
    BadCa { path: PathBuf, what: String },
    #[error("cannot generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// What [`generate`] wrote.
#[derive(Debug)]
pub struct Written {
    /// Whether the CA was made now (false: the one in the directory was reused).
    pub new_ca: bool,
    pub files: Vec<PathBuf>,
}

/// Write `ca.crt`/`ca.key` (unless both exist), `node1..=nodes` `.crt`/`.key` and
/// `admin.crt`/`admin.key` into `dir` (created when missing).
pub fn generate(dir: &Path, nodes: u64, hosts: &[String]) -> Result<Written, CertsError> {
    if nodes == 0 {
        return Err(CertsError::NoNodes);
    }
    let mut names = vec!["127.0.0.1".to_string(), "::1".into(), "localhost".into()];
    for h in hosts {
        let h = h.trim().to_string();
        // rcgen takes anything that parses as an IP as one, the rest as a DNS name.
        if h.is_empty()
            || (h.parse::<std::net::IpAddr>().is_err()
                && rustls_pki_types::DnsName::try_from(h.as_str()).is_err())
        {
            return Err(CertsError::BadHost(h));
        }
        if !names.contains(&h) {
            names.push(h);
        }
    }
    std::fs::create_dir_all(dir).map_err(|source| io(dir, source))?;
    let mut written = Written {
        new_ca: false,
        files: Vec::new(),
    };

    let (ca_crt, ca_key) = (dir.join("ca.crt"), dir.join("ca.key"));
    let (issuer, ca_pem) = if ca_crt.exists() && ca_key.exists() {
        let cert_pem = read(&ca_crt)?;
        let key_pem = read(&ca_key)?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| CertsError::BadCa {
            path: ca_key.clone(),
            what: e.to_string(),
        })?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key).map_err(|e| CertsError::BadCa {
            path: ca_crt.clone(),
            what: e.to_string(),
        })?;
        (issuer, None)
    } else {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = dn("Meridian cluster CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        validity(&mut params, CA_DAYS);
        let cert = params.self_signed(&key)?;
        let pems = (cert.pem(), key.serialize_pem());
        (Issuer::new(params, key), Some(pems))
    };
    if let Some((cert, key)) = ca_pem {
        write_file(&ca_crt, cert.as_bytes(), 0o644)?;
        write_file(&ca_key, key.as_bytes(), 0o600)?;
        written.new_ca = true;
        written.files.extend([ca_crt, ca_key]);
    }

    let mut leaf = |stem: &str, san: Option<String>, client: bool| -> Result<(), CertsError> {
        let mut sans = names.clone();
        if let Some(s) = &san {
            sans.insert(0, s.clone());
        }
        let mut params = CertificateParams::new(sans)?;
        params.distinguished_name = dn(san.as_deref().unwrap_or("Meridian admin API"));
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        if client {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        params.use_authority_key_identifier_extension = true;
        validity(&mut params, LEAF_DAYS);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &issuer)?;
        let (crt_path, key_path) = (
            dir.join(format!("{stem}.crt")),
            dir.join(format!("{stem}.key")),
        );
        // The key first: a node that reloads between the two writes sees a mismatched
        // pair, refuses it and keeps its old one until the certificate follows.
        write_file(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
        write_file(&crt_path, cert.pem().as_bytes(), 0o644)?;
        written.files.extend([crt_path, key_path]);
        Ok(())
    };
    for id in 1..=nodes {
        leaf(&format!("node{id}"), Some(node_name(id)), true)?;
    }
    leaf("admin", None, false)?;
    Ok(written)
}

fn dn(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Meridian");
    dn.push(DnType::CommonName, common_name);
    dn
}

/// Valid from an hour ago (clock skew between nodes) for `days`, with a random serial.
fn validity(params: &mut CertificateParams, days: i64) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(days);
    let mut serial: [u8; 16] = rand::random();
    serial[0] &= 0x7f; // positive
    params.serial_number = Some(SerialNumber::from_slice(&serial));
}

fn io(path: &Path, source: std::io::Error) -> CertsError {
    CertsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn read(path: &Path) -> Result<String, CertsError> {
    std::fs::read_to_string(path).map_err(|e| io(path, e))
}

/// Write `data` to `path` with `mode`, through a temporary file renamed over it.
fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), CertsError> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        // The mode given to open is masked by the umask; a key must be 0600 regardless.
        std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(mode))?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(|e| io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use x509_parser::prelude::*;

    fn sans(path: &Path) -> (Vec<String>, Vec<String>, bool, bool) {
        let pem = std::fs::read(path).expect("read");
        let (_, pem) = parse_x509_pem(&pem).expect("pem");
        let cert = pem.parse_x509().expect("x509");
        let mut names = Vec::new();
        let mut ips = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for n in &san.value.general_names {
                match n {
                    GeneralName::DNSName(d) => names.push(d.to_string()),
                    GeneralName::IPAddress(b) => ips.push(format!("{b:?}")),
                    _ => {}
                }
            }
        }
        let eku = cert.extended_key_usage().ok().flatten().expect("eku");
        (names, ips, eku.value.server_auth, eku.value.client_auth)
    }

    #[test]
    fn writes_ca_nodes_and_admin() {
        let dir = tempfile::tempdir().expect("tmp");
        let w = generate(
            dir.path(),
            2,
            &["meridian.example".into(), "10.0.0.7".into()],
        )
        .expect("certs");
        assert!(w.new_ca);
        for f in [
            "ca.crt",
            "ca.key",
            "node1.crt",
            "node1.key",
            "node2.crt",
            "node2.key",
            "admin.crt",
            "admin.key",
        ] {
            let meta = std::fs::metadata(dir.path().join(f)).expect(f);
            if f.ends_with(".key") {
                assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{f}");
            }
        }
        let (names, ips, server, client) = sans(&dir.path().join("node2.crt"));
        assert_eq!(names, ["node-2", "localhost", "meridian.example"]);
        assert_eq!(ips.len(), 3, "{ips:?}");
        assert!(server && client);
        let (names, _, server, client) = sans(&dir.path().join("admin.crt"));
        assert_eq!(names, ["localhost", "meridian.example"]);
        assert!(server && !client);

        // Again: the CA stays, the node certificates are new.
        let ca = std::fs::read(dir.path().join("ca.crt")).expect("ca");
        let n1 = std::fs::read(dir.path().join("node1.crt")).expect("n1");
        let w = generate(dir.path(), 2, &[]).expect("again");
        assert!(!w.new_ca);
        assert_eq!(std::fs::read(dir.path().join("ca.crt")).expect("ca"), ca);
        assert_ne!(std::fs::read(dir.path().join("node1.crt")).expect("n1"), n1);
    }

    #[test]
    fn bad_input() {
        let dir = tempfile::tempdir().expect("tmp");
        assert!(matches!(
            generate(dir.path(), 0, &[]),
            Err(CertsError::NoNodes)
        ));
        assert!(matches!(
            generate(dir.path(), 1, &["not a name".into()]),
            Err(CertsError::BadHost(_))
        ));
        std::fs::write(dir.path().join("ca.crt"), "junk").expect("write");
        std::fs::write(dir.path().join("ca.key"), "junk").expect("write");
        assert!(matches!(
            generate(dir.path(), 1, &[]),
            Err(CertsError::BadCa { .. })
        ));
    }
}
