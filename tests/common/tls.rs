//! Certificates made by the tests themselves (rcgen): a CA, server
//! certificates for `localhost` and `127.0.0.1`, and client certificates,
//! written as PEM files in a temporary directory.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

use super::TempDir;

/// A certificate authority and the files it has written.
pub struct Pki {
    dir: TempDir,
    name: String,
    issuer: Issuer<'static, KeyPair>,
    /// The CA's certificate (PEM), what clients and `--tls-client-ca` trust.
    pub ca: PathBuf,
}

/// A certificate and its key, as PEM files.
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pki {
    /// A new CA named `name` (its files are named after it too, so two CAs
    /// can share a directory's conventions without clashing).
    pub fn new(name: &str) -> Pki {
        let dir = TempDir::new();
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("{name} test CA"));
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("ca key");
        let cert = params.self_signed(&key).expect("self-signed ca");
        let ca = dir.path().join(format!("{name}-ca.pem"));
        std::fs::write(&ca, cert.pem()).expect("write ca");
        Pki {
            dir,
            name: name.to_owned(),
            issuer: Issuer::new(params, key),
            ca,
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A server certificate for `localhost` and `127.0.0.1`, written as
    /// `<file>.pem` and `<file>-key.pem`.
    pub fn server(&self, file: &str) -> CertFiles {
        self.issue(
            file,
            vec!["localhost".into(), "127.0.0.1".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A client certificate whose common name is `file`.
    pub fn client(&self, file: &str) -> CertFiles {
        self.issue(file, Vec::new(), ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn issue(&self, file: &str, names: Vec<String>, usage: ExtendedKeyUsagePurpose) -> CertFiles {
        let mut params = CertificateParams::new(names).expect("params");
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("{} {file}", self.name));
        params.distinguished_name = dn;
        params.extended_key_usages = vec![usage];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        let files = CertFiles {
            cert: self.dir.path().join(format!("{file}.pem")),
            key: self.dir.path().join(format!("{file}-key.pem")),
        };
        std::fs::write(&files.cert, cert.pem()).expect("write cert");
        std::fs::write(&files.key, key.serialize_pem()).expect("write key");
        files
    }
}
