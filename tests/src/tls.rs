//! Throwaway key material for TLS listener tests: a CA, a broker certificate it signed for
//! `localhost` and `127.0.0.1`, a client certificate it signed, and a second CA that signed
//! nothing here (a client trusting only it must refuse the broker). Files are PEM.

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// PEM files in a directory of the caller's.
#[derive(Debug, Clone)]
pub struct Pki {
    /// The CA that signed the broker and client certificates.
    pub ca: PathBuf,
    /// Broker certificate (SANs `localhost`, `127.0.0.1`).
    pub server_cert: PathBuf,
    /// Broker private key.
    pub server_key: PathBuf,
    /// Client certificate (CN `sediment-test-client`).
    pub client_cert: PathBuf,
    /// Client private key.
    pub client_key: PathBuf,
    /// A CA unrelated to everything else here.
    pub other_ca: PathBuf,
}

fn ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate().expect("CA key");
    let cert = params.self_signed(&key).expect("CA certificate");
    (cert.pem(), Issuer::new(params, key))
}

fn leaf(
    issuer: &Issuer<'static, KeyPair>,
    names: &[&str],
    cn: &str,
    usage: ExtendedKeyUsagePurpose,
) -> (String, String) {
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .expect("leaf params");
    params.distinguished_name.push(DnType::CommonName, cn);
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate().expect("leaf key");
    let cert = params.signed_by(&key, issuer).expect("leaf certificate");
    (cert.pem(), key.serialize_pem())
}

impl Pki {
    /// Generates everything into `dir`.
    pub fn generate(dir: &Path) -> Self {
        let (ca_pem, issuer) = ca("sediment test CA");
        let (other_pem, _) = ca("unrelated test CA");
        let (server_pem, server_key) = leaf(
            &issuer,
            &["localhost", "127.0.0.1"],
            "localhost",
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (client_pem, client_key) = leaf(
            &issuer,
            &[],
            "sediment-test-client",
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            fs::write(&path, text).expect("write PEM");
            path
        };
        Self {
            ca: write("ca.pem", &ca_pem),
            server_cert: write("server.pem", &server_pem),
            server_key: write("server.key", &server_key),
            client_cert: write("client.pem", &client_pem),
            client_key: write("client.key", &client_key),
            other_ca: write("other-ca.pem", &other_pem),
        }
    }

    /// Environment that gives a broker a TLS listener on a free loopback port.
    pub fn broker_env(&self) -> Vec<(String, String)> {
        [
            ("SEDIMENT_KAFKA_TLS_LISTEN", "127.0.0.1:0".to_string()),
            ("SEDIMENT_KAFKA_TLS_CERT_FILE", path(&self.server_cert)),
            ("SEDIMENT_KAFKA_TLS_KEY_FILE", path(&self.server_key)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

fn path(p: &Path) -> String {
    p.display().to_string()
}
