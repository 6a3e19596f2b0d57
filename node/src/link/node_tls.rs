//! TLS 1.3 configurations in which both ends prove a node key, for the bulk data port
//! ([`super::bulk`]).
//!
//! The certificate is libp2p's (`libp2p-tls`: self-signed, with an extension in which the node's
//! ed25519 key signs the certificate's own key), generated and parsed by that crate, so a node
//! has one identity on both data planes. The configurations are built here rather than taken
//! from `libp2p_tls::make_*_config` for one reason: those prefer ChaCha20-Poly1305, while on
//! machines with AES instructions AES-GCM is the faster cipher for bulk data (the cipher order
//! below is the server's and the client's preference; a peer without AES-GCM still gets
//! ChaCha20-Poly1305).

use std::sync::Arc;

use libp2p::identity::Keypair;
use libp2p::PeerId;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::ResolvesClientCert;
use rustls::crypto::aws_lc_rs::cipher_suite;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::ResolvesServerCert;
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, Error, ServerConfig,
    SignatureScheme,
};

/// Builds both configurations for a node key; `expected` (client side) is the peer the
/// server must prove to be.
pub(super) struct NodeTls {
    cert: Arc<OneCert>,
    alpn: Vec<u8>,
}

/// The node's one certificate, for every handshake. (Given as a resolver: rustls's
/// `with_single_cert` checks the certificate with webpki, which refuses libp2p's critical
/// extension.)
#[derive(Debug)]
struct OneCert(Arc<CertifiedKey>);

impl ResolvesServerCert for OneCert {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

impl ResolvesClientCert for OneCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _schemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

impl NodeTls {
    /// A certificate for `keypair`, speaking `alpn`.
    pub(super) fn new(keypair: &Keypair, alpn: &[u8]) -> Result<Self, String> {
        let (cert, key) = libp2p::tls::certificate::generate(keypair).map_err(|e| e.to_string())?;
        let key = Self::provider()
            .key_provider
            .load_private_key(key)
            .map_err(|e| e.to_string())?;
        Ok(Self {
            cert: Arc::new(OneCert(Arc::new(CertifiedKey::new(vec![cert], key)))),
            alpn: alpn.to_vec(),
        })
    }

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        let mut p = rustls::crypto::aws_lc_rs::default_provider();
        p.cipher_suites = vec![
            cipher_suite::TLS13_AES_128_GCM_SHA256,
            cipher_suite::TLS13_AES_256_GCM_SHA384,
            cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        ];
        Arc::new(p)
    }

    /// The server side: every client must present a node certificate.
    pub(super) fn server(&self) -> Result<ServerConfig, String> {
        let mut c = ServerConfig::builder_with_provider(Self::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| e.to_string())?
            .with_client_cert_verifier(Arc::new(NodeCertVerifier { expected: None }))
            .with_cert_resolver(self.cert.clone());
        c.alpn_protocols = vec![self.alpn.clone()];
        c.ignore_client_order = true;
        // Every connection does a full handshake: no tickets, no session cache.
        c.send_tls13_tickets = 0;
        c.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        Ok(c)
    }

    /// The client side, for a server that must prove `expected`.
    pub(super) fn client(&self, expected: PeerId) -> Result<ClientConfig, String> {
        let mut c = ClientConfig::builder_with_provider(Self::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NodeCertVerifier {
                expected: Some(expected),
            }))
            .with_client_cert_resolver(self.cert.clone());
        c.alpn_protocols = vec![self.alpn.clone()];
        c.resumption = rustls::client::Resumption::disabled();
        // The certificate's key is what is checked; no name to send.
        c.enable_sni = false;
        Ok(c)
    }
}

/// Accepts exactly one libp2p node certificate (of `expected`, when set) and checks the
/// handshake's signature against its key.
#[derive(Debug)]
struct NodeCertVerifier {
    expected: Option<PeerId>,
}

/// The signature schemes of libp2p certificate keys this node can check.
const SCHEMES: [SignatureScheme; 3] = [
    SignatureScheme::ECDSA_NISTP256_SHA256,
    SignatureScheme::ECDSA_NISTP384_SHA384,
    SignatureScheme::ED25519,
];

impl NodeCertVerifier {
    fn check(&self, end: &CertificateDer<'_>, more: &[CertificateDer<'_>]) -> Result<(), Error> {
        if !more.is_empty() {
            return Err(Error::General(
                "a node presents exactly one certificate".into(),
            ));
        }
        let peer = libp2p::tls::certificate::parse(end)
            .map_err(|_| Error::InvalidCertificate(CertificateError::BadSignature))?
            .peer_id();
        match self.expected {
            Some(e) if e != peer => Err(Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            )),
            _ => Ok(()),
        }
    }

    fn signature(
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        libp2p::tls::certificate::parse(cert)
            .map_err(|_| Error::InvalidCertificate(CertificateError::BadSignature))?
            .verify_signature(dss.scheme, message, dss.signature())
            .map_err(|_| Error::InvalidCertificate(CertificateError::BadSignature))?;
        Ok(HandshakeSignatureValid::assertion())
    }
}

impl ServerCertVerifier for NodeCertVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        self.check(end_entity, intermediates)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        Err(Error::General("TLS 1.2 is not spoken here".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        Self::signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        SCHEMES.to_vec()
    }
}

impl ClientCertVerifier for NodeCertVerifier {
    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        self.check(end_entity, intermediates)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        Err(Error::General("TLS 1.2 is not spoken here".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        Self::signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        SCHEMES.to_vec()
    }
}
