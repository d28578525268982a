//! TLS material that follows its files: a certificate, its key and (for mutual TLS) the CA,
//! read from PEM files and re-read when they change on disk or on SIGHUP, so certificates
//! rotate without a restart. It hands out rustls server and client configurations whose
//! certificate resolvers and verifiers always use the newest material, and reads the node id
//! a peer's certificate names (DNS SAN `node-N`).
//!
//! rustls with the ring provider only (no OpenSSL, no aws-lc build).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};

/// How often the files are looked at for a change.
pub const POLL: Duration = Duration::from_secs(2);

/// Where the PEM files are. `ca` is the CA peers' certificates must chain to (mutual TLS);
/// `None` for a server that asks no client certificate (the admin API).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: Option<PathBuf>,
}

/// Why TLS material could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: no PEM certificate in it", .0.display())]
    NoCertificate(PathBuf),
    #[error("{}: not a PEM private key: {why}", path.display())]
    BadKey { path: PathBuf, why: String },
    #[error("{} and {}: {why}", cert.display(), key.display())]
    KeyMismatch {
        cert: PathBuf,
        key: PathBuf,
        why: String,
    },
    #[error("{}: not a usable CA: {why}", path.display())]
    BadCa { path: PathBuf, why: String },
}

/// One generation of material.
struct Material {
    key: Arc<CertifiedKey>,
    /// Verifies clients (mutual TLS); `None` without a CA.
    clients: Option<Arc<dyn ClientCertVerifier>>,
    /// Verifies servers this node connects to; `None` without a CA.
    servers: Option<Arc<WebPkiServerVerifier>>,
}

impl std::fmt::Debug for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Material")
            .field("chain", &self.key.cert.len())
            .field("mutual", &self.clients.is_some())
            .finish()
    }
}

/// TLS material that reloads itself; cheap to clone (every clone sees every reload).
#[derive(Clone)]
pub struct Tls {
    files: Arc<TlsFiles>,
    current: Arc<ArcSwap<Material>>,
    provider: Arc<CryptoProvider>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("files", &self.files).finish()
    }
}

/// The crypto provider: ring, whatever else is linked in.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Tls {
    /// Read the files; an error names the file at fault.
    pub fn load(files: TlsFiles) -> Result<Tls, TlsError> {
        let provider = provider();
        let material = read_material(&files, &provider)?;
        Ok(Tls {
            files: Arc::new(files),
            current: Arc::new(ArcSwap::from_pointee(material)),
            provider,
        })
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// Whether peers must present a certificate signed by the CA.
    pub fn is_mutual(&self) -> bool {
        self.files.ca.is_some()
    }

    /// Re-read the files now. On an error the old material stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let material = read_material(&self.files, &self.provider)?;
        self.current.store(Arc::new(material));
        Ok(())
    }

    /// The DER of the certificate currently served.
    pub fn certificate(&self) -> Option<CertificateDer<'static>> {
        self.current.load().key.cert.first().cloned()
    }

    /// A server configuration: this certificate, and with a CA a client certificate that
    /// chains to it required (with the clientAuth key usage).
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
        let builder = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()?;
        let builder = if self.is_mutual() {
            builder.with_client_cert_verifier(Arc::new(ClientVerifier(self.current.clone())))
        } else {
            builder.with_no_client_auth()
        };
        let mut config = builder.with_cert_resolver(Arc::new(Resolver(self.current.clone())));
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// A client configuration (mutual TLS only): this certificate as the client's, servers
    /// verified against the CA and the name the connection is made to.
    pub fn client_config(&self) -> Result<rustls::ClientConfig, rustls::Error> {
        let config = rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ServerVerifier(self.current.clone())))
            .with_client_cert_resolver(Arc::new(Resolver(self.current.clone())));
        Ok(config)
    }

    /// Re-read the files when they change (polled every [`POLL`]) and on SIGHUP, for as
    /// long as the runtime runs. `what` names the material in logs.
    pub fn spawn_watch(&self, what: &'static str) -> tokio::task::JoinHandle<()> {
        let tls = self.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let mut hup = signal(SignalKind::hangup()).ok();
            let mut last = fingerprint(&tls.files);
            loop {
                let forced = tokio::select! {
                    _ = tokio::time::sleep(POLL) => false,
                    Some(()) = async {
                        match hup.as_mut() {
                            Some(h) => h.recv().await,
                            None => std::future::pending().await,
                        }
                    } => true,
                };
                let now = fingerprint(&tls.files);
                if !forced && now == last {
                    continue;
                }
                let files = tls.files.clone();
                let provider = tls.provider.clone();
                match tokio::task::spawn_blocking(move || read_material(&files, &provider)).await {
                    Ok(Ok(m)) => {
                        tls.current.store(Arc::new(m));
                        last = now;
                        tracing::info!(what, cert = %tls.files.cert.display(), sighup = forced, "TLS certificate and key reloaded");
                    }
                    // A half-written set is retried at the next poll; the old material stays.
                    Ok(Err(e)) => {
                        last = now;
                        tracing::warn!(what, error = %e, "TLS files changed but do not load; keeping the previous ones")
                    }
                    Err(e) => tracing::warn!(what, error = %e, "TLS reload failed"),
                }
            }
        })
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(path.to_path_buf()));
    }
    Ok(certs)
}

fn read_material(files: &TlsFiles, provider: &Arc<CryptoProvider>) -> Result<Material, TlsError> {
    let chain = read_certs(&files.cert)?;
    let key_pem = read(&files.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::BadKey {
        path: files.key.clone(),
        why: e.to_string(),
    })?;
    let mismatch = |why: String| TlsError::KeyMismatch {
        cert: files.cert.clone(),
        key: files.key.clone(),
        why,
    };
    let certified =
        CertifiedKey::from_der(chain, key, provider).map_err(|e| mismatch(e.to_string()))?;
    certified
        .keys_match()
        .map_err(|e| mismatch(e.to_string()))?;
    let (clients, servers) = match &files.ca {
        None => (None, None),
        Some(ca) => {
            let bad = |why: String| TlsError::BadCa {
                path: ca.clone(),
                why,
            };
            let mut roots = RootCertStore::empty();
            for c in read_certs(ca)? {
                roots.add(c).map_err(|e| bad(e.to_string()))?;
            }
            let roots = Arc::new(roots);
            let clients =
                WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
                    .build()
                    .map_err(|e| bad(e.to_string()))?;
            let servers = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .map_err(|e| bad(e.to_string()))?;
            (Some(clients), Some(servers))
        }
    };
    Ok(Material {
        key: Arc::new(certified),
        clients,
        servers,
    })
}

/// A client of an HTTPS admin API (`apply`, `export`, `explain --admin`): with `cacert`, only
/// the CA in that PEM file is trusted (the host in the URL is verified as always).
pub fn trust_only(
    builder: reqwest::ClientBuilder,
    cacert: Option<&Path>,
) -> Result<reqwest::ClientBuilder, TlsError> {
    let Some(path) = cacert else {
        return Ok(builder);
    };
    let mut builder = builder.tls_built_in_root_certs(false);
    for der in read_certs(path)? {
        let cert = reqwest::Certificate::from_der(&der).map_err(|e| TlsError::BadCa {
            path: path.to_path_buf(),
            why: e.to_string(),
        })?;
        builder = builder.add_root_certificate(cert);
    }
    Ok(builder)
}

/// Identity of each file: device, inode, size and modification time.
type Fingerprint = Vec<Option<(u64, u64, u64, std::time::SystemTime)>>;

fn fingerprint(files: &TlsFiles) -> Fingerprint {
    let paths = [Some(&files.cert), Some(&files.key), files.ca.as_ref()];
    crate::config::fingerprint(paths.into_iter().flatten())
}

/// The node id a certificate names as its one DNS SAN `node-N`; `None` when it names none,
/// or more than one (a certificate speaks for one node).
pub fn node_id_of(cert: &CertificateDer<'_>) -> Option<u64> {
    use x509_parser::extensions::GeneralName;
    let (_, x509) = x509_parser::parse_x509_certificate(cert).ok()?;
    let san = x509.subject_alternative_name().ok()??;
    let mut ids = san.value.general_names.iter().filter_map(|n| match n {
        GeneralName::DNSName(d) => d
            .strip_prefix("node-")
            .filter(|n| !n.starts_with('0') && n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| n.parse::<u64>().ok()),
        _ => None,
    });
    let id = ids.next()?;
    match ids.next() {
        None => Some(id),
        Some(_) => None,
    }
}

/// Hands out the current certificate, as a server and as a client.
#[derive(Debug)]
struct Resolver(Arc<ArcSwap<Material>>);

impl rustls::server::ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load().key.clone())
    }
}

impl rustls::client::ResolvesClientCert for Resolver {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load().key.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

fn no_ca() -> rustls::Error {
    rustls::Error::General("no CA configured".into())
}

/// Verifies client certificates against the current CA.
#[derive(Debug)]
struct ClientVerifier(Arc<ArcSwap<Material>>);

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // The hints would borrow from material that may be replaced; an empty list tells a
        // client to send whatever certificate it has.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let m = self.0.load();
        let v = m.clients.as_ref().ok_or_else(no_ca)?;
        v.verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let m = self.0.load();
        let v = m.clients.as_ref().ok_or_else(no_ca)?;
        v.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let m = self.0.load();
        let v = m.clients.as_ref().ok_or_else(no_ca)?;
        v.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        let m = self.0.load();
        m.clients
            .as_ref()
            .map(|v| v.supported_verify_schemes())
            .unwrap_or_default()
    }
}

/// Verifies server certificates against the current CA and the name connected to.
#[derive(Debug)]
struct ServerVerifier(Arc<ArcSwap<Material>>);

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let m = self.0.load();
        let v = m.servers.as_ref().ok_or_else(no_ca)?;
        v.verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let m = self.0.load();
        let v = m.servers.as_ref().ok_or_else(no_ca)?;
        v.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let m = self.0.load();
        let v = m.servers.as_ref().ok_or_else(no_ca)?;
        v.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        let m = self.0.load();
        m.servers
            .as_ref()
            .map(|v| v.supported_verify_schemes())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &Path, stem: &str) -> TlsFiles {
        TlsFiles {
            cert: dir.join(format!("{stem}.crt")),
            key: dir.join(format!("{stem}.key")),
            ca: Some(dir.join("ca.crt")),
        }
    }

    #[test]
    fn loads_and_names_the_node() {
        let dir = tempfile::tempdir().expect("tmp");
        crate::certs::generate(dir.path(), 3, &[]).expect("certs");
        let tls = Tls::load(files(dir.path(), "node3")).expect("load");
        assert_eq!(tls.certificate().and_then(|c| node_id_of(&c)), Some(3));
        let admin = Tls::load(TlsFiles {
            ca: None,
            ..files(dir.path(), "admin")
        })
        .expect("admin");
        assert_eq!(admin.certificate().and_then(|c| node_id_of(&c)), None);
        assert!(tls.server_config().is_ok() && tls.client_config().is_ok());
    }

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().expect("tmp");
        crate::certs::generate(dir.path(), 2, &[]).expect("certs");
        // A key of another certificate.
        let mut f = files(dir.path(), "node1");
        f.key = dir.path().join("node2.key");
        let e = Tls::load(f).expect_err("mismatch").to_string();
        assert!(e.contains("node1.crt") && e.contains("node2.key"), "{e}");
        let mut f = files(dir.path(), "node1");
        f.cert = dir.path().join("missing.crt");
        let e = Tls::load(f).expect_err("missing").to_string();
        assert!(e.contains("missing.crt"), "{e}");
        std::fs::write(dir.path().join("junk.crt"), "junk").expect("write");
        let mut f = files(dir.path(), "node1");
        f.ca = Some(dir.path().join("junk.crt"));
        let e = Tls::load(f).expect_err("junk ca").to_string();
        assert!(e.contains("junk.crt"), "{e}");
    }

    #[test]
    fn reload_keeps_old_material_on_error() {
        let dir = tempfile::tempdir().expect("tmp");
        crate::certs::generate(dir.path(), 1, &[]).expect("certs");
        let tls = Tls::load(files(dir.path(), "node1")).expect("load");
        let before = tls.certificate();
        crate::certs::generate(dir.path(), 1, &[]).expect("renew");
        tls.reload().expect("reload");
        let after = tls.certificate();
        assert_ne!(before, after);
        std::fs::write(dir.path().join("node1.key"), "junk").expect("write");
        assert!(tls.reload().is_err());
        assert_eq!(tls.certificate(), after);
    }
}
