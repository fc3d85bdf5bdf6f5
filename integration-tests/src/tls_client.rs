//! A client of a replica's `--tls-listen`: rustls over a socket with the
//! SNI, ALPN and TLS versions a test asks for, then HTTP/1.1 or h2 (by what
//! ALPN agreed) with hyper, on one connection kept open for several requests.
//!
//! It trusts a test CA ([`Trust::Ca`]), or — to see which certificate the
//! replica picked for any name — every certificate ([`Trust::Any`]); either
//! way the certificate the replica sent is kept ([`TlsConnection::peer_certificate`]).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    ClientConfig, DigitallySignedStruct, ProtocolVersion, RootCertStore, SignatureScheme,
    SupportedProtocolVersion,
};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Which certificates the client accepts.
#[derive(Debug, Clone)]
pub enum Trust {
    /// Those signed by this CA (PEM), for the name asked.
    Ca(String),
    /// Any (the test looks at which one came).
    Any,
}

/// How to connect.
#[derive(Debug, Clone)]
pub struct TlsOptions {
    /// The name sent as SNI; an IP address sends none.
    pub server_name: String,
    /// The ALPN protocols offered (none: no ALPN extension).
    pub alpn: Vec<Vec<u8>>,
    /// The TLS versions offered.
    pub versions: Vec<&'static SupportedProtocolVersion>,
    pub trust: Trust,
}

impl TlsOptions {
    /// SNI `server_name`, ALPN `http/1.1`, TLS 1.2 and 1.3, `trust`.
    pub fn new(server_name: &str, trust: Trust) -> Self {
        TlsOptions {
            server_name: server_name.to_owned(),
            alpn: vec![b"http/1.1".to_vec()],
            versions: vec![&rustls::version::TLS13, &rustls::version::TLS12],
            trust,
        }
    }

    /// Offers these ALPN protocols instead.
    pub fn alpn(mut self, protocols: &[&[u8]]) -> Self {
        self.alpn = protocols.iter().map(|p| p.to_vec()).collect();
        self
    }

    /// Offers only these TLS versions.
    pub fn versions(mut self, versions: &[&'static SupportedProtocolVersion]) -> Self {
        self.versions = versions.to_vec();
        self
    }
}

/// One TLS connection to a replica, with its HTTP client.
pub struct TlsConnection {
    /// The DER of the certificate the replica sent first (its leaf).
    pub peer_certificate: Vec<u8>,
    pub version: Option<ProtocolVersion>,
    pub alpn: Option<Vec<u8>>,
    sender: Sender,
    authority: String,
    driver: JoinHandle<()>,
}

impl std::fmt::Debug for TlsConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConnection")
            .field("version", &self.version)
            .field("alpn", &self.alpn)
            .finish_non_exhaustive()
    }
}

enum Sender {
    Http1(http1::SendRequest<Full<Bytes>>),
    Http2(http2::SendRequest<Full<Bytes>>),
}

impl Drop for TlsConnection {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// What a request over TLS got.
#[derive(Debug)]
pub struct TlsResponse {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: String,
}

/// Connects to `addr` and completes the handshake; the TLS stream as it is
/// (for bytes written by hand), or an error if the handshake failed.
pub async fn connect_raw(
    addr: SocketAddr,
    options: &TlsOptions,
) -> Result<TlsStream<TcpStream>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&options.versions)
        .map_err(|e| format!("TLS versions: {e}"))?;
    let mut config = match &options.trust {
        Trust::Ca(pem) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let cert = cert.map_err(|e| format!("the CA PEM: {e}"))?;
                roots.add(cert).map_err(|e| format!("the CA: {e}"))?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Trust::Any => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
            .with_no_client_auth(),
    };
    config.alpn_protocols = options.alpn.clone();
    let name = ServerName::try_from(options.server_name.clone())
        .map_err(|e| format!("server name {:?}: {e}", options.server_name))?;
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake with {addr}: {e}"))
}

/// Connects to `addr`, completes the handshake and starts HTTP/1.1 or h2
/// (by the ALPN agreed); an error if any of it failed.
pub async fn connect(addr: SocketAddr, options: &TlsOptions) -> Result<TlsConnection, String> {
    let tls = connect_raw(addr, options).await?;
    let (_, session) = tls.get_ref();
    let peer_certificate = session
        .peer_certificates()
        .and_then(|certs| certs.first())
        .map(|cert| cert.as_ref().to_vec())
        .unwrap_or_default();
    let version = session.protocol_version();
    let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
    let io = TokioIo::new(tls);
    let (sender, driver) = if alpn.as_deref() == Some(b"h2") {
        let (sender, conn) = http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(|e| format!("h2 handshake: {e}"))?;
        (
            Sender::Http2(sender),
            tokio::spawn(async move {
                drop(conn.await);
            }),
        )
    } else {
        let (sender, conn) = http1::handshake(io)
            .await
            .map_err(|e| format!("HTTP/1.1 handshake: {e}"))?;
        (
            Sender::Http1(sender),
            tokio::spawn(async move {
                drop(conn.await);
            }),
        )
    };
    Ok(TlsConnection {
        peer_certificate,
        version,
        alpn,
        sender,
        authority: options.server_name.clone(),
        driver,
    })
}

impl TlsConnection {
    /// `GET path` on this connection with `Host` (h2: `:authority`) the server name.
    pub async fn get(&mut self, path: &str) -> Result<TlsResponse, String> {
        let (sender_version, uri) = match &self.sender {
            Sender::Http1(_) => (Version::HTTP_11, path.to_owned()),
            Sender::Http2(_) => (Version::HTTP_2, format!("https://{}{path}", self.authority)),
        };
        let mut request = Request::get(uri)
            .version(sender_version)
            .body(Full::new(Bytes::new()))
            .map_err(|e| format!("request: {e}"))?;
        if sender_version == Version::HTTP_11 {
            let host = http::HeaderValue::try_from(self.authority.as_str())
                .map_err(|e| format!("host: {e}"))?;
            request.headers_mut().insert(http::header::HOST, host);
        }
        let response = match &mut self.sender {
            Sender::Http1(sender) => {
                sender
                    .ready()
                    .await
                    .map_err(|e| format!("connection not ready: {e}"))?;
                sender.send_request(request).await
            }
            Sender::Http2(sender) => {
                sender
                    .ready()
                    .await
                    .map_err(|e| format!("connection not ready: {e}"))?;
                sender.send_request(request).await
            }
        }
        .map_err(|e| format!("GET {path}: {e}"))?;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| format!("GET {path}: the body: {e}"))?
            .to_bytes();
        Ok(TlsResponse {
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
}

/// Accepts every certificate (signatures are still checked).
#[derive(Debug)]
struct AcceptAny(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The DER of the first certificate in `pem`.
pub fn der_of(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .expect("a PEM certificate")
        .as_ref()
        .to_vec()
}
