//! Certificates made at start: a test CA, and a server certificate signed by
//! it for `IP:127.0.0.1` and `DNS:localhost` (Python's `ssl` and rustls both
//! check the SAN, and Python 3.13's strict mode wants the CA's key usage and
//! the authority key identifier too).

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::{self, ServerConfig};

/// The test CA (PEM) and a TLS configuration serving the certificate it signed.
pub(crate) struct Tls {
    pub(crate) ca_pem: String,
    /// The server's certificate and key (PEM), for other test servers
    /// (Azurite over https) that should be trusted through the same CA.
    pub(crate) server_pem: (String, String),
    pub(crate) config: Arc<ServerConfig>,
}

pub(crate) fn make() -> Tls {
    let ca_key = KeyPair::generate().expect("generate the test CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "flr-kvtest CA (tests only)");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).expect("self-sign the test CA");

    let key = KeyPair::generate().expect("generate the server key");
    let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .expect("server certificate parameters");
    leaf.distinguished_name
        .push(DnType::CommonName, "localhost");
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.use_authority_key_identifier_extension = true;
    let leaf_cert = leaf
        .signed_by(&key, &ca_cert, &ca_key)
        .expect("sign the server certificate");

    let chain: Vec<CertificateDer<'static>> = vec![leaf_cert.der().clone()];
    let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .expect("server certificate and key");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Tls {
        ca_pem: ca_cert.pem(),
        server_pem: (leaf_cert.pem(), key.serialize_pem()),
        config: Arc::new(config),
    }
}
