//! The bulk data port: the data protocol's frames over TCP + TLS 1.3, beside the libp2p
//! connection, for chunk transfers (issue #14). Both ends prove their node key exactly as
//! libp2p's own TLS handshake does (a self-signed certificate carrying the ed25519 key's
//! signature over the TLS key, `libp2p-tls`), so a stream here has the same proven [`PeerId`]
//! as a libp2p stream, and the provider decides every request on it the same way.
//!
//! One TCP connection carries one stream. Before any TLS the listener admits only addresses
//! that hold a direct libp2p connection (which only members get: the network gate refuses
//! others), at most [`HANDSHAKES_PER_IP`] at once from one address and [`MAX_HANDSHAKES`] in
//! all, each for at most [`HANDSHAKE_TIMEOUT`]; what a handshaken peer may do is the data
//! server's business (stream count per peer, membership, grants).
//!
//! Why not the libp2p connection: measured on the 2-core CI machine class, libp2p's QUIC and
//! TCP+noise+yamux carry 290–350 MiB/s on one stream, a kernel TCP socket with rustls's
//! AES-GCM or ChaCha20-Poly1305 several times that (docs/benchmarks.md).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::PeerId;
use tokio::io::BufReader;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};
use tokio_util::sync::CancellationToken;

use super::node_tls::NodeTls;
use tracing::{debug, warn};

/// A stream on the bulk data port.
pub type BulkStream = Compat<tokio_rustls::TlsStream<BufReader<TcpStream>>>;

/// Bytes read from the socket at once: rustls asks for 4 KiB per read, which costs a system
/// call per 4 KiB of chunk data without a buffer beneath it (measured: the TLS plane was then
/// slower than libp2p's).
const READ_BUFFER: usize = 256 * 1024;

/// Longest a TCP connect plus TLS handshake may take, either side.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Handshakes the listener runs at once; more connections wait in the kernel's backlog.
pub const MAX_HANDSHAKES: usize = 32;
/// Handshakes one address may have in progress at once; more are closed. A pull opens its 8
/// streams at once, and one address may be several members' (a shared NAT, a test machine).
pub const HANDSHAKES_PER_IP: usize = 16;
/// How long a provider whose bulk data port could not be reached is not tried again.
pub const UNREACHABLE_FOR: Duration = Duration::from_secs(600);

/// Whether an address may begin a handshake (it holds a direct libp2p connection).
pub type Admit = Arc<dyn Fn(IpAddr) -> futures::future::BoxFuture<'static, bool> + Send + Sync>;

/// Why the bulk data port could not be set up or reached.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BulkError {
    /// The TLS configuration could not be built from the node key.
    #[error("cannot build the bulk data port's TLS certificate from the node key: {0}")]
    Certificate(String),
    /// The listening socket could not be opened.
    #[error("cannot listen on {addr} for the bulk data port (network.data_listen): {source}; choose a free port, or \"off\"")]
    Listen {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// Connecting to a provider's port failed.
    #[error("cannot reach the provider's bulk data port at {addr}: {reason}")]
    Dial {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        reason: String,
    },
}

/// TLS settings for both directions, built once from the node key, and the providers whose
/// port could not be reached lately.
pub struct BulkTls {
    tls: NodeTls,
    server: Arc<tokio_rustls::rustls::ServerConfig>,
    unreachable: std::sync::Mutex<std::collections::HashMap<PeerId, std::time::Instant>>,
}

impl BulkTls {
    /// The settings for a node's libp2p key pair.
    pub fn new(keypair: Keypair) -> Result<Self, BulkError> {
        let tls = NodeTls::new(&keypair, huitong_protocol::wire::DATA_TLS_ALPN)
            .map_err(BulkError::Certificate)?;
        let server = tls.server().map_err(BulkError::Certificate)?;
        Ok(Self {
            tls,
            server: Arc::new(server),
            unreachable: Default::default(),
        })
    }

    /// Whether `peer`'s port failed within [`UNREACHABLE_FOR`] (then its pulls go straight to
    /// the libp2p connection instead of waiting for the port again).
    pub fn recently_unreachable(&self, peer: &PeerId) -> bool {
        let mut map = self.unreachable.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, at| at.elapsed() < UNREACHABLE_FOR);
        map.contains_key(peer)
    }

    /// Remembers that `peer`'s port could not be used.
    pub fn mark_unreachable(&self, peer: PeerId) {
        let mut map = self.unreachable.lock().unwrap_or_else(|p| p.into_inner());
        // Only members are dialled, so this stays small; forget the oldest past a bound anyway.
        if map.len() >= 4096 {
            map.clear();
        }
        map.insert(peer, std::time::Instant::now());
    }

    /// Opens a stream to `peer`'s bulk data port at `addr`; the handshake fails unless the
    /// other end proves `peer`'s key.
    pub async fn dial(&self, peer: PeerId, addr: SocketAddr) -> Result<BulkStream, BulkError> {
        let fail = |reason: String| BulkError::Dial { addr, reason };
        let client = self.tls.client(peer).map_err(BulkError::Certificate)?;
        let connector = TlsConnector::from(Arc::new(client));
        // libp2p's TLS names no host: the certificate's key is what is checked.
        let name = ServerName::try_from("huitong").map_err(|e| fail(e.to_string()))?;
        let connect = async {
            let tcp = TcpStream::connect(addr)
                .await
                .map_err(|e| fail(e.to_string()))?;
            tcp.set_nodelay(true).map_err(|e| fail(e.to_string()))?;
            connector
                .connect(name, BufReader::with_capacity(READ_BUFFER, tcp))
                .await
                .map_err(|e| fail(format!("TLS handshake: {e}")))
        };
        let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, connect)
            .await
            .map_err(|_| {
                fail(format!(
                    "no answer within {} s",
                    HANDSHAKE_TIMEOUT.as_secs()
                ))
            })??;
        if tls.get_ref().1.alpn_protocol() != Some(huitong_protocol::wire::DATA_TLS_ALPN) {
            return Err(fail(
                "the port does not speak the data protocol (ALPN)".into(),
            ));
        }
        Ok(tokio_rustls::TlsStream::Client(tls).compat())
    }
}

/// Where the bulk data port listens, from `network.data_listen`: `None` for `off`; unset, the
/// host of the first TCP listen address (else every IPv4 address) with a free port.
pub fn listen_addr(
    setting: Option<&str>,
    listen: &[libp2p::Multiaddr],
) -> Result<Option<SocketAddr>, String> {
    match setting.map(str::trim) {
        Some("off") => Ok(None),
        Some(s) => s.parse().map(Some).map_err(|_| {
            format!("network.data_listen = {s:?} is not an IP:PORT address (e.g. \"0.0.0.0:7401\") or \"off\"")
        }),
        None => {
            let host = listen
                .iter()
                .find_map(|a| {
                    let mut ip = None;
                    let mut tcp = false;
                    for p in a.iter() {
                        match p {
                            libp2p::multiaddr::Protocol::Ip4(v) => ip = Some(IpAddr::V4(v)),
                            libp2p::multiaddr::Protocol::Ip6(v) => ip = Some(IpAddr::V6(v)),
                            libp2p::multiaddr::Protocol::Tcp(_) => tcp = true,
                            _ => {}
                        }
                    }
                    ip.filter(|_| tcp)
                })
                .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
            Ok(Some(SocketAddr::new(host, 0)))
        }
    }
}

/// The bound listener of the bulk data port.
pub struct BulkListener {
    tcp: TcpListener,
    tls: Arc<BulkTls>,
    admit: Admit,
}

impl BulkListener {
    /// Binds `addr`; `admit` says which addresses may begin a handshake.
    pub async fn bind(
        addr: SocketAddr,
        tls: Arc<BulkTls>,
        admit: Admit,
    ) -> Result<Self, BulkError> {
        let tcp = TcpListener::bind(addr)
            .await
            .map_err(|source| BulkError::Listen { addr, source })?;
        Ok(Self { tcp, tls, admit })
    }

    /// The bound address (with the port the system chose for port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// Accepts connections until `shutdown`, handing each handshaken stream and the peer it
    /// proved to `streams`.
    pub async fn run(
        self,
        streams: mpsc::Sender<(PeerId, BulkStream)>,
        shutdown: CancellationToken,
    ) {
        let acceptor = TlsAcceptor::from(self.tls.server.clone());
        let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
        let per_ip = crate::per_key::PerKey::<IpAddr>::new(HANDSHAKES_PER_IP);
        loop {
            let Ok(permit) = handshakes.clone().acquire_owned().await else {
                return;
            };
            let (tcp, from) = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = self.tcp.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of file descriptors and the like: wait rather than spin.
                        warn!(error = %e, "bulk data port: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let Some(slot) = per_ip.take(from.ip()) else {
                debug!(%from, limit = HANDSHAKES_PER_IP, "bulk data port: closed, too many handshakes from this address");
                continue;
            };
            let (acceptor, streams, admit) =
                (acceptor.clone(), streams.clone(), self.admit.clone());
            tokio::spawn(async move {
                let (_permit, _slot) = (permit, slot);
                if !admit(from.ip()).await {
                    debug!(%from, "bulk data port: closed, no member is connected from this address");
                    return;
                }
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, accept(&acceptor, tcp)).await {
                    Ok(Ok((peer, stream))) => {
                        let _ = streams.send((peer, stream)).await;
                    }
                    Ok(Err(e)) => debug!(%from, error = %e, "bulk data port: handshake failed"),
                    Err(_) => debug!(%from, "bulk data port: handshake timed out"),
                }
            });
        }
    }
}

/// The server side of one handshake: the stream and the peer its certificate proves.
async fn accept(acceptor: &TlsAcceptor, tcp: TcpStream) -> Result<(PeerId, BulkStream), String> {
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    // The provider only reads requests (small frames) here.
    let tls = acceptor
        .accept(BufReader::with_capacity(16 * 1024, tcp))
        .await
        .map_err(|e| e.to_string())?;
    let (_, conn) = tls.get_ref();
    if conn.alpn_protocol() != Some(huitong_protocol::wire::DATA_TLS_ALPN) {
        return Err("the client did not agree on the data protocol (ALPN)".into());
    }
    // The verifier accepted exactly one certificate whose libp2p extension is signed by the
    // key it names; parsed again here only to learn that key.
    let cert = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or("no client certificate")?;
    let peer = libp2p::tls::certificate::parse(cert)
        .map_err(|e| e.to_string())?
        .peer_id();
    Ok((peer, tokio_rustls::TlsStream::Server(tls).compat()))
}

#[cfg(test)]
mod tests {
    use super::*;

    type Pair = (
        Keypair,
        Keypair,
        Arc<BulkTls>,
        SocketAddr,
        mpsc::Receiver<(PeerId, BulkStream)>,
    );

    async fn pair() -> Pair {
        let (server_key, client_key) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
        let server = Arc::new(BulkTls::new(server_key.clone()).unwrap());
        let client = Arc::new(BulkTls::new(client_key.clone()).unwrap());
        let admit: Admit = Arc::new(|_| Box::pin(async { true }));
        let listener = BulkListener::bind("127.0.0.1:0".parse().unwrap(), server.clone(), admit)
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(listener.run(tx, CancellationToken::new()));
        (server_key, client_key, client, addr, rx)
    }

    #[tokio::test]
    async fn both_ends_learn_the_key_the_other_proved() {
        use futures::{AsyncReadExt, AsyncWriteExt};
        let (server_key, client_key, client, addr, mut rx) = pair().await;
        let server_peer = server_key.public().to_peer_id();
        let mut out = client.dial(server_peer, addr).await.unwrap();
        out.write_all(b"hello").await.unwrap();
        out.flush().await.unwrap();
        let (peer, mut inbound) = rx.recv().await.unwrap();
        assert_eq!(peer, client_key.public().to_peer_id());
        let mut buf = [0u8; 5];
        inbound.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hello");
    }

    #[tokio::test]
    async fn a_port_answered_by_another_key_is_refused() {
        let (_, _, client, addr, _rx) = pair().await;
        let expected = Keypair::generate_ed25519().public().to_peer_id();
        let err = client.dial(expected, addr).await.unwrap_err();
        assert!(err.to_string().contains("TLS handshake"), "{err}");
    }

    #[test]
    fn the_listen_address_follows_the_setting_or_the_tcp_listener() {
        let listen: Vec<libp2p::Multiaddr> = vec![
            "/ip4/127.0.0.1/udp/7400/quic-v1".parse().unwrap(),
            "/ip4/127.0.0.1/tcp/7400".parse().unwrap(),
        ];
        assert_eq!(
            listen_addr(None, &listen).unwrap(),
            Some("127.0.0.1:0".parse().unwrap())
        );
        assert_eq!(listen_addr(Some("off"), &listen).unwrap(), None);
        assert_eq!(
            listen_addr(Some("0.0.0.0:7401"), &listen).unwrap(),
            Some("0.0.0.0:7401".parse().unwrap())
        );
        let err = listen_addr(Some("7401"), &listen).unwrap_err();
        assert!(err.contains("IP:PORT"), "{err}");
    }
}
