//! HTTPS for the portal (`portal.tls_cert`, `portal.tls_key`): a listener that completes each
//! TLS handshake on its own task and hands axum only finished connections, so a slow or silent
//! client never holds up the others. Bounded against an anonymous client on the network:
//! handshakes take at most [`HANDSHAKE_TIME`], at most [`HANDSHAKES_PER_ADDRESS`] at once from
//! one address; open connections number at most [`CONNECTIONS`] in all and
//! [`CONNECTIONS_PER_ADDRESS`] from one address (an IPv6 address counts by its /64), each
//! holding its place until it closes. [`serve`] runs each connection with hyper's header-read
//! timeout ([`HEADER_TIME`]: a client that sends no request, or no next one, is let go), and a
//! write that waits [`super::idle::IDLE`] for a client that stopped reading fails
//! ([`super::idle::Idle`]), and a request body that stops arriving for 30 s ends its request
//! (the portal router's body timeout); a request being handled keeps its connection however
//! long it takes.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::idle::{Idle, IDLE};

/// A request's head (or, on a kept-alive connection, the next one) not read in this time ends
/// the connection.
const HEADER_TIME: Duration = Duration::from_secs(30);
/// A handshake not finished in this time is dropped.
const HANDSHAKE_TIME: Duration = Duration::from_secs(3);
/// Handshakes under way at once from one address; more are refused at once.
const HANDSHAKES_PER_ADDRESS: usize = 8;
/// Connections open at once (handshaking or served); more wait in the kernel's backlog.
const CONNECTIONS: usize = 512;
/// Connections open at once from one address; more are closed at once.
const CONNECTIONS_PER_ADDRESS: usize = 64;

/// Why a site's TLS (the portal's, the gateway's) could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read.
    #[error("{path}: {message}; give a PEM file ({site}.tls_cert: the certificate chain, {site}.tls_key: its private key)")]
    Pem {
        /// The settings' section: `portal` or `gateway`.
        site: &'static str,
        /// The file.
        path: String,
        /// What was wrong.
        message: String,
    },
    /// rustls refused the certificate and key.
    #[error("{site}.tls_cert and {site}.tls_key do not make a usable TLS identity: {error}")]
    Config {
        /// The settings' section.
        site: &'static str,
        /// What rustls said.
        error: rustls::Error,
    },
}

/// Reads the certificate chain and key of `site` (`portal`, `gateway`: named in errors) into a
/// TLS acceptor (TLS 1.2 and 1.3, HTTP/1.1).
pub fn acceptor(site: &'static str, cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    let pem = |path: &Path, e: &dyn std::fmt::Display| TlsError::Pem {
        site,
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let refused = |error| TlsError::Config { site, error };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| pem(cert, &e))?
        .collect::<Result<_, _>>()
        .map_err(|e| pem(cert, &e))?;
    if certs.is_empty() {
        return Err(pem(cert, &"no certificate in it"));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| pem(key, &e))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(refused)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(refused)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Connections open per source address (an IPv6 address by its /64), and handshakes.
#[derive(Default)]
struct PerAddress(std::sync::Mutex<HashMap<IpAddr, (usize, usize)>>);

/// The address a source counts under.
fn counted(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => {
            let mut s = v6.segments();
            s[4..].fill(0);
            IpAddr::V6(s.into())
        }
        v4 => v4,
    }
}

impl PerAddress {
    /// Takes a connection place for `ip` (and a handshake place), if it has one left.
    fn enter(self: &Arc<Self>, ip: IpAddr) -> Option<Place> {
        let ip = counted(ip);
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let e = m.entry(ip).or_default();
        if e.0 >= CONNECTIONS_PER_ADDRESS || e.1 >= HANDSHAKES_PER_ADDRESS {
            return None;
        }
        *e = (e.0 + 1, e.1 + 1);
        Some(Place {
            table: self.clone(),
            ip,
            handshaking: true,
        })
    }
}

/// A connection's place in [`PerAddress`], given back when it is dropped.
struct Place {
    table: Arc<PerAddress>,
    ip: IpAddr,
    handshaking: bool,
}

impl Place {
    fn handshake_done(&mut self) {
        if self.handshaking {
            self.handshaking = false;
            let mut m = self.table.0.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(e) = m.get_mut(&self.ip) {
                e.1 = e.1.saturating_sub(1);
            }
        }
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.handshake_done();
        let mut m = self.table.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = m.get_mut(&self.ip) {
            e.0 = e.0.saturating_sub(1);
            if *e == (0, 0) {
                m.remove(&self.ip);
            }
        }
    }
}

/// A served connection: the TLS stream and the places it holds until it closes.
pub struct Conn {
    inner: Idle<TlsStream<TcpStream>>,
    _place: Place,
    _permit: OwnedSemaphorePermit,
}

impl tokio::io::AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Connections whose handshake has finished.
pub struct TlsListener {
    ready: mpsc::Receiver<(Conn, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Accepts on `tcp` until `shutdown`, handshaking with `acceptor`.
    pub fn new(
        tcp: TcpListener,
        acceptor: TlsAcceptor,
        shutdown: CancellationToken,
    ) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        let permits = Arc::new(Semaphore::new(CONNECTIONS));
        let per_address = Arc::new(PerAddress::default());
        tokio::spawn(async move {
            loop {
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    return;
                };
                let accepted = tokio::select! {
                    () = shutdown.cancelled() => return,
                    a = tcp.accept() => a,
                };
                let (stream, from) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "portal: cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let Some(mut place) = per_address.enter(from.ip()) else {
                    tracing::debug!(peer = %from, "portal: too many connections from one address");
                    continue;
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIME, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            place.handshake_done();
                            let conn = Conn {
                                inner: Idle::new(tls, IDLE),
                                _place: place,
                                _permit: permit,
                            };
                            let _ = tx.send((conn, from)).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(peer = %from, error = %e, "portal: TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(peer = %from, "portal: TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Self { ready, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = Conn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The accept task ended (shutdown): wait for axum's graceful shutdown to stop us.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// Serves `app` on the finished TLS connections of `listener` until `shutdown` (each one then
/// ends after its request in flight): HTTP/1.1 with hyper's header-read timeout, the client's
/// address available to handlers as `ConnectInfo<SocketAddr>`.
pub async fn serve(
    mut listener: TlsListener,
    app: axum::Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    use axum::serve::Listener as _;
    loop {
        let (conn, from) = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            c = listener.accept() => c,
        };
        let (app, shutdown) = (app.clone(), shutdown.clone());
        tokio::spawn(async move {
            let app = app.layer(axum::Extension(axum::extract::ConnectInfo(from)));
            let svc = hyper_util::service::TowerToHyperService::new(app);
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIME);
            let served = builder.serve_connection(hyper_util::rt::TokioIo::new(conn), svc);
            tokio::pin!(served);
            let result = tokio::select! {
                r = served.as_mut() => r,
                () = shutdown.cancelled() => {
                    served.as_mut().graceful_shutdown();
                    served.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(peer = %from, error = %e, "portal: connection ended with an error");
            }
        });
    }
}
