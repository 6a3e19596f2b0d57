//! A raw HTTPS request for the tests of the portal's and the gateway's TLS listeners: one
//! `GET` over TLS to a loopback port, trusting only the given roots, the answer as text.

use std::sync::Arc;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// `GET path` over TLS to `port` on loopback: the server name `sni` (checked against the
/// certificate), the `Host` header `host`, and `headers`; the raw answer.
pub async fn get(
    roots: &rustls::RootCertStore,
    port: u16,
    (sni, host): (&str, &str),
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(
            rustls::pki_types::ServerName::try_from(sni.to_string())?,
            tcp,
        )
        .await?;
    let mut head = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    tls.write_all(head.as_bytes()).await?;
    let mut out = Vec::new();
    tls.read_to_end(&mut out).await?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}
