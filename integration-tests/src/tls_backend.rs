//! An `https://` backend in the test process: a hyper HTTP/1.1 server over
//! TLS on `127.0.0.1:0`, with a certificate for `localhost` and `127.0.0.1`
//! signed by a CA made for the test ([`TestCa`], written as PEM for
//! `--upstream-ca`). It answers every path with its fixed body and echoes
//! what it saw: `X-Seen-Host`, the SNI (`X-Seen-Sni`, `-` without one) and the
//! ALPN protocol agreed (`X-Seen-Alpn`, `-` without one).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::ServerConfig;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

/// A certificate authority made for one test, and the server certificates it signs.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

impl TestCa {
    /// A new self-signed CA named `name`.
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("a CA key");
        let issuer = CertifiedIssuer::self_signed(params, key).expect("a self-signed CA");
        TestCa { issuer }
    }

    /// The CA certificate, PEM.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// Writes the CA certificate as PEM to `path` (for `--upstream-ca`) and returns `path`.
    pub fn write_pem(&self, path: &Path) -> PathBuf {
        std::fs::write(path, self.pem()).expect("the CA file can be written");
        path.to_path_buf()
    }

    /// A certificate for `names` (DNS names or IP addresses) signed by this
    /// CA and its private key, both PEM (for `--tls-cert` / `--tls-key`).
    pub fn server_pem(&self, names: &[&str]) -> (String, String) {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let params = CertificateParams::new(names).expect("server certificate parameters");
        let key = KeyPair::generate().expect("a server key");
        let certificate = params
            .signed_by(&key, &*self.issuer)
            .expect("the CA signs the server certificate");
        (certificate.pem(), key.serialize_pem())
    }

    /// A server config with a certificate for `names` (DNS names or IP
    /// addresses) signed by this CA, offering ALPN `http/1.1`.
    pub fn server_config(&self, names: &[&str]) -> Arc<ServerConfig> {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).expect("server certificate parameters");
        params
            .distinguished_name
            .push(DnType::CommonName, "switchyard test backend");
        let key = KeyPair::generate().expect("a server key");
        let certificate = params
            .signed_by(&key, &*self.issuer)
            .expect("the CA signs the server certificate");
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(vec![certificate.der().clone()], key)
            .expect("a usable server certificate");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

/// A running TLS backend; dropping it stops it (its port then refuses connections).
#[derive(Debug)]
pub struct TlsBackend {
    addr: SocketAddr,
    body: String,
    requests: Arc<AtomicUsize>,
    server: JoinHandle<()>,
}

/// Starts a TLS backend answering `body` on `127.0.0.1:<a free port>`, with a
/// certificate for `localhost` and `127.0.0.1` signed by `ca`.
pub async fn spawn_tls_backend(body: &str, ca: &TestCa) -> TlsBackend {
    spawn_tls_backend_for(body, ca, &["localhost", "127.0.0.1"]).await
}

/// Like [`spawn_tls_backend`], with a certificate for `names` only.
pub async fn spawn_tls_backend_for(body: &str, ca: &TestCa, names: &[&str]) -> TlsBackend {
    let config = ca.server_config(names);
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a backend can bind 127.0.0.1:0");
    let addr = listener
        .local_addr()
        .expect("a bound listener has an address");
    let requests = Arc::new(AtomicUsize::new(0));
    let server = tokio::spawn(serve(
        listener,
        TlsAcceptor::from(config),
        Arc::from(body),
        requests.clone(),
    ));
    TlsBackend {
        addr,
        body: body.to_owned(),
        requests,
        server,
    }
}

impl TlsBackend {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The body it answers.
    pub fn body(&self) -> &str {
        &self.body
    }

    /// How many requests it answered (TLS handshakes that failed are not requests).
    pub fn request_count(&self) -> usize {
        self.requests.load(Ordering::Relaxed)
    }

    /// Stops it and waits until its listener is closed: its port refuses
    /// connections once this returns.
    pub async fn stop(mut self) {
        self.server.abort();
        // The task was aborted: its end (a cancellation) is all there is to wait for.
        let _cancelled = (&mut self.server).await;
    }
}

impl Drop for TlsBackend {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    body: Arc<str>,
    requests: Arc<AtomicUsize>,
) {
    // Connections live in the set, so stopping the server closes them too.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let (acceptor, body, requests) = (acceptor.clone(), body.clone(), requests.clone());
                    connections.spawn(async move {
                        let stream = match acceptor.accept(stream).await {
                            Ok(stream) => stream,
                            Err(e) => {
                                tracing::debug!(error = %e, "TLS backend handshake failed");
                                return;
                            }
                        };
                        let (_, session) = stream.get_ref();
                        let sni = session.server_name().unwrap_or("-").to_owned();
                        let alpn = session
                            .alpn_protocol()
                            .map_or_else(|| "-".to_owned(), |p| String::from_utf8_lossy(p).into_owned());
                        let service = service_fn(move |request| {
                            requests.fetch_add(1, Ordering::Relaxed);
                            std::future::ready(answer(&body, &sni, &alpn, &request))
                        });
                        if let Err(e) = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await
                        {
                            tracing::debug!(error = %e, "TLS backend connection ended with an error");
                        }
                    });
                }
                Err(e) => tracing::warn!(error = %e, "TLS backend cannot accept"),
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

fn answer(
    body: &str,
    sni: &str,
    alpn: &str,
    request: &Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_owned())));
    let headers = response.headers_mut();
    if let Some(host) = request.headers().get(http::header::HOST) {
        headers.insert("x-seen-host", host.clone());
    }
    for (name, value) in [("x-seen-sni", sni), ("x-seen-alpn", alpn)] {
        if let Ok(value) = HeaderValue::try_from(value) {
            headers.insert(name, value);
        }
    }
    Ok(response)
}
