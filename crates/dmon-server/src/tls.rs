//! TLS for the Riemann TCP and HTTP listeners, and for dmon's own Riemann
//! client (`dmon send --riemann`, `dmon query`, the shell's `--connect`):
//! rustls with the ring provider, no OpenSSL.
//!
//! - [`ServerTls`] holds the listeners' certificate, key and, for mutual
//!   TLS, the CA client certificates must be signed by. [`ServerTls::reload`]
//!   reads the files again (on SIGHUP): new connections get the new
//!   certificate, open ones keep the session they have. A reload that fails
//!   keeps the previous configuration.
//! - [`ClientTls`] is what a client trusts and, for mutual TLS, presents.
//!
//! Every file error names the flag it came from and says what was expected,
//! since these are met at start-up by someone setting up a deployment.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// A TLS file or configuration that cannot be used, worded for the user.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(String);

/// The one provider dmon uses, whatever else is compiled in.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A PEM file given with `flag`.
#[derive(Debug, Clone)]
pub struct PemFile {
    pub flag: &'static str,
    pub path: PathBuf,
}

impl PemFile {
    pub fn new(flag: &'static str, path: impl Into<PathBuf>) -> Self {
        PemFile {
            flag,
            path: path.into(),
        }
    }

    fn error(&self, what: impl std::fmt::Display) -> TlsError {
        TlsError(format!("{} {}: {what}", self.flag, self.path.display()))
    }

    /// Reading problems said plainly; "no items found" is a file that holds
    /// no PEM block of the expected kind.
    fn pem_error(&self, e: pem::Error, expected: &str) -> TlsError {
        match e {
            pem::Error::Io(io) => self.error(io),
            pem::Error::NoItemsFound => self.error(format_args!(
                "no {expected} in it (expected PEM, a `-----BEGIN {expected}-----` block)"
            )),
            other => self.error(format_args!("not a valid PEM file: {other:?}")),
        }
    }

    fn certificates(&self) -> Result<Vec<CertificateDer<'static>>, TlsError> {
        let certs = CertificateDer::pem_file_iter(&self.path)
            .map_err(|e| self.pem_error(e, "CERTIFICATE"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.pem_error(e, "CERTIFICATE"))?;
        if certs.is_empty() {
            return Err(self.pem_error(pem::Error::NoItemsFound, "CERTIFICATE"));
        }
        Ok(certs)
    }

    fn private_key(&self) -> Result<PrivateKeyDer<'static>, TlsError> {
        PrivateKeyDer::from_pem_file(&self.path).map_err(|e| self.pem_error(e, "PRIVATE KEY"))
    }

    /// The certificates of this file as a trust store.
    fn roots(&self) -> Result<RootCertStore, TlsError> {
        let mut roots = RootCertStore::empty();
        for cert in self.certificates()? {
            roots
                .add(cert)
                .map_err(|e| self.error(format_args!("not a usable CA certificate: {e}")))?;
        }
        Ok(roots)
    }
}

/// A certificate and its key.
#[derive(Debug, Clone)]
pub struct Identity {
    pub cert: PemFile,
    pub key: PemFile,
}

impl Identity {
    /// The files `--tls-cert` and `--tls-key` name.
    pub fn from_flags(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        Identity {
            cert: PemFile::new("--tls-cert", cert),
            key: PemFile::new("--tls-key", key),
        }
    }

    fn load(&self) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
        Ok((self.cert.certificates()?, self.key.private_key()?))
    }

    fn mismatch(&self, e: rustls::Error) -> TlsError {
        match e {
            rustls::Error::InconsistentKeys(_) => TlsError(format!(
                "{} {} is not the key of the certificate in {} {}",
                self.key.flag,
                self.key.path.display(),
                self.cert.flag,
                self.cert.path.display()
            )),
            other => self.cert.error(other),
        }
    }
}

/// The listeners' TLS: what `--tls-cert`, `--tls-key` and `--tls-client-ca`
/// name, loaded.
pub struct ServerTls {
    identity: Identity,
    client_ca: Option<PemFile>,
    config: RwLock<Arc<ServerConfig>>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("identity", &self.identity)
            .field("client_ca", &self.client_ca)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Reads and checks the files: each must exist, hold what it should,
    /// and the key must be the certificate's.
    pub fn load(identity: Identity, client_ca: Option<PemFile>) -> Result<ServerTls, TlsError> {
        let config = Self::build(&identity, client_ca.as_ref())?;
        Ok(ServerTls {
            identity,
            client_ca,
            config: RwLock::new(Arc::new(config)),
        })
    }

    fn build(identity: &Identity, client_ca: Option<&PemFile>) -> Result<ServerConfig, TlsError> {
        let (certs, key) = identity.load()?;
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError(format!("TLS setup: {e}")))?;
        let builder = match client_ca {
            Some(ca) => {
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(ca.roots()?), provider())
                        .build()
                        .map_err(|e| ca.error(e))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        builder
            .with_single_cert(certs, key)
            .map_err(|e| identity.mismatch(e))
    }

    /// Reads the files again. New connections use them from now on; open
    /// connections are untouched. On error the previous files stay in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = Self::build(&self.identity, self.client_ca.as_ref())?;
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
        Ok(())
    }

    /// Whether clients must present a certificate.
    pub fn requires_client_certificates(&self) -> bool {
        self.client_ca.is_some()
    }

    /// The certificate file, for messages.
    pub fn cert_path(&self) -> &Path {
        &self.identity.cert.path
    }

    fn acceptor(&self) -> TlsAcceptor {
        let config = self.config.read().unwrap_or_else(|e| e.into_inner());
        TlsAcceptor::from(Arc::clone(&config))
    }

    /// The server side of a handshake on `stream`, within `deadline` (a
    /// client that connects and says nothing must not hold a slot for
    /// ever). The error says why, in words for a log line.
    pub async fn accept<S>(&self, stream: S, deadline: Duration) -> Result<TlsStream<S>, String>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        match tokio::time::timeout(deadline, self.acceptor().accept(stream)).await {
            Ok(Ok(tls)) => Ok(tls),
            Ok(Err(e)) => Err(self.handshake_error(&e)),
            Err(_) => Err(format!(
                "TLS handshake not finished within {deadline:?} (--idle-timeout)"
            )),
        }
    }

    fn handshake_error(&self, e: &std::io::Error) -> String {
        let inner = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>());
        match inner {
            Some(rustls::Error::InvalidMessage(_)) => {
                "TLS handshake failed: the client does not speak TLS (a plain-text client on a TLS port?)"
                    .to_owned()
            }
            Some(rustls::Error::NoCertificatesPresented) => {
                "TLS handshake failed: the client presented no certificate, and --tls-client-ca requires one"
                    .to_owned()
            }
            Some(rustls::Error::InvalidCertificate(why)) => {
                format!("TLS handshake failed: the client's certificate was refused: {why:?}")
            }
            _ => format!("TLS handshake failed: {e}"),
        }
    }
}

/// What a client trusts (`--tls-ca`), whom it expects
/// (`--tls-server-name`, else the address it connects to) and, for mutual
/// TLS, what it presents (`--tls-cert`, `--tls-key`).
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<ClientConfig>,
    server_name: Option<ServerName<'static>>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    pub fn load(
        ca: &PemFile,
        identity: Option<&Identity>,
        server_name: Option<&str>,
    ) -> Result<ClientTls, TlsError> {
        Self::load_named(ca, identity, server_name, "--tls-server-name")
    }

    /// For a sink connecting to `host` (a name or an address): the
    /// server's certificate must carry it.
    pub fn for_host(
        ca: &PemFile,
        identity: Option<&Identity>,
        host: &str,
    ) -> Result<ClientTls, TlsError> {
        Self::load_named(ca, identity, Some(host), "host")
    }

    /// `name_from` is where `server_name` came from, for its error.
    fn load_named(
        ca: &PemFile,
        identity: Option<&Identity>,
        server_name: Option<&str>,
        name_from: &str,
    ) -> Result<ClientTls, TlsError> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError(format!("TLS setup: {e}")))?
            .with_root_certificates(ca.roots()?);
        let config = match identity {
            Some(identity) => {
                let (certs, key) = identity.load()?;
                builder
                    .with_client_auth_cert(certs, key)
                    .map_err(|e| identity.mismatch(e))?
            }
            None => builder.with_no_client_auth(),
        };
        let server_name = server_name
            .map(|name| {
                ServerName::try_from(name.to_owned())
                    .map_err(|e| TlsError(format!("{name_from} {name:?}: {e}")))
            })
            .transpose()?;
        Ok(ClientTls {
            config: Arc::new(config),
            server_name,
        })
    }

    /// The name the server's certificate must carry: `--tls-server-name`,
    /// else the IP address connected to.
    pub fn server_name(&self, addr: std::net::SocketAddr) -> ServerName<'static> {
        self.server_name
            .clone()
            .unwrap_or_else(|| ServerName::IpAddress(addr.ip().into()))
    }

    pub fn config(&self) -> Arc<ClientConfig> {
        Arc::clone(&self.config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn missing(flag: &'static str) -> PemFile {
        PemFile::new(flag, "/nonexistent/dmon-test.pem")
    }

    #[test]
    fn a_missing_file_is_named_with_its_flag() {
        let e = ServerTls::load(
            Identity {
                cert: missing("--tls-cert"),
                key: missing("--tls-key"),
            },
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("--tls-cert /nonexistent/dmon-test.pem: "),
            "{e}"
        );
        assert!(e.contains("No such file"), "{e}");
    }

    #[test]
    fn a_file_without_pem_blocks_says_what_was_expected() {
        let dir = std::env::temp_dir().join(format!("dmon-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("empty.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let e = ClientTls::load(&PemFile::new("--tls-ca", &path), None, None)
            .unwrap_err()
            .to_string();
        assert!(
            e.ends_with(
                "no CERTIFICATE in it (expected PEM, a `-----BEGIN CERTIFICATE-----` block)"
            ),
            "{e}"
        );
        assert!(e.starts_with("--tls-ca "), "{e}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
