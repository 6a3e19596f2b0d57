//! HTTP clients that never speak TLS: the CLI's client of its own node and the proxy to a
//! department's backends (both `http://` only). reqwest, built with rustls for the HTTPS
//! collection sources, would otherwise load the system's trust store for every client it
//! builds, and fail where a machine has none; these clients get an empty one instead.
//!
//! Layering: a leaf; names no other module.

use std::sync::Arc;

/// A reqwest client builder whose TLS trusts nothing: any `https://` request through it fails
/// certificate checks, which none of its users make.
pub fn builder() -> Result<reqwest::ClientBuilder, rustls::Error> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    Ok(reqwest::Client::builder().tls_backend_preconfigured(tls))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_plain_client_builds_without_a_trust_store() {
        let client = super::builder()
            .and_then(|b| b.build().map_err(|e| rustls::Error::General(e.to_string())));
        assert!(client.is_ok(), "{:?}", client.err());
    }
}
