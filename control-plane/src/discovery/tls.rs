//! TLS on the config stream's listener (`--grpc-tls-cert`, `--grpc-tls-key`),
//! mutual with `--grpc-client-ca`: every replica then presents a certificate
//! signed by that CA, and its node id is the one the certificate names
//! ([`switchyard_shared::tls::node_id_of`]: the first DNS subjectAltName, else
//! the CN).
//!
//! The handshakes are this module's own (tokio-rustls), not tonic's, so that a
//! refused one is logged with the peer's address and counted by reason
//! (`switchyard_grpc_tls_handshake_errors_total`), and so the name of the
//! verified certificate reaches each stream as a request extension ([`Peer`]).
//! Handshakes run side by side, each within [`HANDSHAKE_TIMEOUT`], owned by
//! the accept loop, which ends when the server stops taking connections.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use switchyard_shared::tls::{self as files, FlagFile, TlsFileError};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tonic::transport::server::Connected;
use tracing::{debug, warn};

use crate::metrics::{HandshakeFailure, Metrics};

/// How long a new connection may take to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; beyond, new connections wait in the backlog.
const MAX_HANDSHAKES: usize = 256;
/// Connections past their handshake that wait for the gRPC server to take them.
pub(super) const HANDED_OVER: usize = 16;
/// The pause after an accept error (out of file descriptors), so it does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// What ALPN offers: the config stream is gRPC, HTTP/2 only.
const ALPN_H2: &[u8] = b"h2";

/// The listener's TLS: its server config and whether replicas must present
/// a certificate.
#[derive(Debug, Clone)]
pub struct GrpcTls {
    config: Arc<ServerConfig>,
    mutual: bool,
}

/// Why the TLS flags cannot be used; the message names the flag and file.
#[derive(Debug, thiserror::Error)]
pub enum GrpcTlsError {
    #[error(transparent)]
    File(#[from] TlsFileError),
    #[error("{0}: cannot verify client certificates with these CAs: {1}")]
    Verifier(FlagFile, String),
    #[error("cannot set up TLS with {0}: {1}")]
    Config(FlagFile, rustls::Error),
}

impl GrpcTls {
    /// Loads the certificate and key (and the client CA, for mutual TLS);
    /// TLS 1.3 and 1.2, ALPN `h2`.
    pub fn load(
        cert: FlagFile,
        key: FlagFile,
        client_ca: Option<FlagFile>,
    ) -> Result<Self, GrpcTlsError> {
        let identity = files::load_identity(cert.clone(), key)?;
        let builder = ServerConfig::builder_with_provider(files::provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| GrpcTlsError::Config(cert.clone(), e))?;
        let mutual = client_ca.is_some();
        let builder = match client_ca {
            Some(ca) => {
                let (roots, _) = files::load_cas(ca.clone())?;
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), files::provider())
                        .build()
                        .map_err(|e| GrpcTlsError::Verifier(ca, e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(identity.chain, identity.key)
            .map_err(|e| GrpcTlsError::Config(cert, e))?;
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        Ok(GrpcTls {
            config: Arc::new(config),
            mutual,
        })
    }

    /// Whether every replica must present a certificate signed by the client CA.
    pub fn is_mutual(&self) -> bool {
        self.mutual
    }
}

/// Who is at the other end of a TLS config stream (a request extension).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub addr: SocketAddr,
    /// With mutual TLS: what the verified client certificate names.
    pub certified: Option<Certified>,
}

/// What a verified client certificate says the replica is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Certified {
    /// Its node id (first DNS SAN, else CN).
    Node(String),
    /// It names no node id: no DNS SAN, no CN.
    Nameless,
}

/// A replica's connection after its handshake.
#[derive(Debug)]
pub struct ReplicaIo {
    stream: TlsStream<TcpStream>,
    peer: Peer,
}

impl Connected for ReplicaIo {
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Peer {
        self.peer.clone()
    }
}

impl AsyncRead for ReplicaIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for ReplicaIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Accepts connections on `listener`, runs their handshakes side by side and
/// hands each one that succeeded to `incoming` (the gRPC server's stream of
/// connections); ends when `incoming` is closed. A handshake that fails is
/// logged and counted, and its connection closed.
pub async fn accept(
    listener: TcpListener,
    tls: GrpcTls,
    metrics: Arc<Metrics>,
    incoming: mpsc::Sender<io::Result<ReplicaIo>>,
) {
    let acceptor = TlsAcceptor::from(tls.config.clone());
    let mut handshakes = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept(), if handshakes.len() < MAX_HANDSHAKES => match accepted {
                Ok((tcp, addr)) => {
                    if let Err(e) = tcp.set_nodelay(true) {
                        debug!(peer.addr = %addr, error = %e, "Cannot set TCP_NODELAY");
                    }
                    let acceptor = acceptor.clone();
                    handshakes.spawn(async move {
                        (addr, tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await)
                    });
                }
                Err(e) => {
                    warn!(error = %e, "Cannot accept a config stream connection");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            },
            Some(joined) = handshakes.join_next(), if !handshakes.is_empty() => {
                // A handshake task only ends by returning (they are never aborted while here).
                let Ok((addr, handshake)) = joined else { continue };
                let failure = match handshake {
                    Ok(Ok(stream)) => {
                        let io = ReplicaIo { peer: peer(&stream, addr, tls.mutual), stream };
                        if incoming.send(Ok(io)).await.is_err() {
                            return;
                        }
                        continue;
                    }
                    Ok(Err(error)) => (HandshakeFailure::of(&error), error.to_string()),
                    Err(_) => (HandshakeFailure::Timeout, format!("no handshake within {HANDSHAKE_TIMEOUT:?}")),
                };
                let (reason, error) = failure;
                metrics.handshake_failed(reason);
                warn!(
                    peer.addr = %addr,
                    reason = reason.as_str(),
                    %error,
                    "Refused a config stream connection: its TLS handshake failed"
                );
            },
            () = incoming.closed() => return,
        }
    }
}

/// Who the handshake says is at the other end.
fn peer(stream: &TlsStream<TcpStream>, addr: SocketAddr, mutual: bool) -> Peer {
    let certified = mutual.then(|| {
        let leaf = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first());
        match leaf.and_then(files::node_id_of) {
            Some(name) => Certified::Node(name),
            None => Certified::Nameless,
        }
    });
    Peer { addr, certified }
}

impl HandshakeFailure {
    /// The kind of a failed handshake, from the rustls error inside.
    pub fn of(error: &io::Error) -> Self {
        let tls = error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>());
        match tls {
            Some(rustls::Error::NoCertificatesPresented) => HandshakeFailure::NoCertificate,
            Some(
                rustls::Error::InvalidCertificate(_)
                | rustls::Error::AlertReceived(rustls::AlertDescription::BadCertificate),
            ) => HandshakeFailure::BadCertificate,
            Some(
                rustls::Error::InvalidMessage(_)
                | rustls::Error::InappropriateMessage { .. }
                | rustls::Error::InappropriateHandshakeMessage { .. },
            ) => HandshakeFailure::NotTls,
            _ => HandshakeFailure::Other,
        }
    }
}
