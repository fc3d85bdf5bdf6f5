//! TLS to `https://` members: the client config (the public webpki roots plus
//! the CAs of `--upstream-ca`), built once at start-up, the server name a
//! member is checked against, and the stream a member connection runs over,
//! plain TCP or TLS.

use std::io;
use std::net::IpAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use arc_swap::ArcSwapOption;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// What ALPN offers to `http1` members: the pool speaks HTTP/1.1 to them.
const ALPN_HTTP1: &[u8] = b"http/1.1";
/// What ALPN offers to `h2` members, and what they must pick.
pub(crate) const ALPN_H2: &[u8] = b"h2";

/// Why the TLS client config could not be built (the CLI says which flag and file).
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    #[error("cannot read it: {0}")]
    Read(pem::Error),
    #[error("it holds no PEM certificate")]
    NoCertificate,
    #[error("certificate {index} in it is not a usable CA certificate: {error}")]
    BadCertificate { index: usize, error: rustls::Error },
    #[error("cannot set up TLS: {0}")]
    Config(rustls::Error),
}

/// The CA certificates in the PEM file at `path` (one or several).
pub fn load_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(TlsConfigError::Read)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(TlsConfigError::Read)?;
    if certificates.is_empty() {
        return Err(TlsConfigError::NoCertificate);
    }
    Ok(certificates)
}

/// The client config for `https://` members: certificates are verified
/// against the webpki roots plus `extra_cas`; ALPN offers `http/1.1` only.
pub fn client_config(
    extra_cas: Vec<CertificateDer<'static>>,
) -> Result<Arc<ClientConfig>, TlsConfigError> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for (index, certificate) in extra_cas.into_iter().enumerate() {
        roots
            .add(certificate)
            .map_err(|error| TlsConfigError::BadCertificate {
                index: index + 1,
                error,
            })?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsConfigError::Config)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
    Ok(Arc::new(config))
}

/// The config every TLS connection to a member uses; set once by `run`.
static CLIENT_CONFIG: ArcSwapOption<ClientConfig> = ArcSwapOption::const_empty();

/// The same config with ALPN `h2`, for clusters of protocol `h2`.
static H2_CLIENT_CONFIG: ArcSwapOption<ClientConfig> = ArcSwapOption::const_empty();

/// Makes `config` the one TLS connections to members use from now on.
pub fn set_client_config(config: Arc<ClientConfig>) {
    H2_CLIENT_CONFIG.store(Some(with_alpn_h2(&config)));
    CLIENT_CONFIG.store(Some(config));
}

/// `config` offering `h2` only by ALPN.
fn with_alpn_h2(config: &ClientConfig) -> Arc<ClientConfig> {
    let mut h2 = config.clone();
    h2.alpn_protocols = vec![ALPN_H2.to_vec()];
    Arc::new(h2)
}

/// The connector for connections to `h2` members: [`connector`]'s config,
/// with ALPN `h2` in place of `http/1.1`.
pub(crate) fn h2_connector() -> Result<TlsConnector, String> {
    if let Some(config) = H2_CLIENT_CONFIG.load_full() {
        return Ok(TlsConnector::from(config));
    }
    connector()?;
    let config = CLIENT_CONFIG
        .load_full()
        .ok_or_else(|| "no TLS client config".to_owned())?;
    let h2 = with_alpn_h2(&config);
    H2_CLIENT_CONFIG.compare_and_swap(&None::<Arc<ClientConfig>>, Some(h2.clone()));
    Ok(TlsConnector::from(h2))
}
/// The connector for member connections: the config `run` set, or (when the
/// library runs without `run`) one with the webpki roots only, made once.
pub(crate) fn connector() -> Result<TlsConnector, String> {
    if let Some(config) = CLIENT_CONFIG.load_full() {
        return Ok(TlsConnector::from(config));
    }
    let config = client_config(Vec::new()).map_err(|e| e.to_string())?;
    CLIENT_CONFIG.compare_and_swap(&None::<Arc<ClientConfig>>, Some(config.clone()));
    Ok(TlsConnector::from(config))
}

/// The name a member's certificate must match, and the SNI sent: the host as
/// a DNS name, or as an IP address (then no SNI is sent).
pub(crate) fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(ServerName::IpAddress(ip.into()));
    }
    ServerName::try_from(host.to_owned())
        .map_err(|e| format!("{host:?} cannot be a TLS server name: {e}"))
}

/// A connection to a member: plain TCP for `http://`, TLS over TCP for `https://`.
#[derive(Debug)]
pub enum MemberStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for MemberStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MemberStream::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            MemberStream::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for MemberStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MemberStream::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            MemberStream::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MemberStream::Plain(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            MemberStream::Tls(stream) => Pin::new(stream.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            MemberStream::Plain(stream) => stream.is_write_vectored(),
            MemberStream::Tls(stream) => stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MemberStream::Plain(stream) => Pin::new(stream).poll_flush(cx),
            MemberStream::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MemberStream::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            MemberStream::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_are_dns_names_or_ip_addresses() {
        assert!(matches!(
            server_name("localhost"),
            Ok(ServerName::DnsName(_))
        ));
        assert!(matches!(
            server_name("127.0.0.1"),
            Ok(ServerName::IpAddress(_))
        ));
        assert!(matches!(server_name("::1"), Ok(ServerName::IpAddress(_))));
        assert!(server_name("not a name").is_err());
    }

    #[test]
    fn the_default_config_offers_http1_only() {
        let config = client_config(Vec::new()).expect("the default config builds");
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }

    #[test]
    fn the_h2_connector_offers_h2_only_and_keeps_the_roots() {
        let config = client_config(Vec::new()).expect("the default config builds");
        let h2 = with_alpn_h2(&config);
        assert_eq!(h2.alpn_protocols, vec![b"h2".to_vec()]);
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
        assert!(h2_connector().is_ok());
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let path =
            std::env::temp_dir().join(format!("switchyard-no-ca-{}.pem", std::process::id()));
        std::fs::write(&path, "not a certificate\n").expect("a temporary file");
        let loaded = load_ca_file(&path);
        let _ = std::fs::remove_file(&path);
        assert!(
            matches!(loaded, Err(TlsConfigError::NoCertificate)),
            "{loaded:?}"
        );
        assert!(matches!(
            load_ca_file(Path::new("/nonexistent/switchyard-ca.pem")),
            Err(TlsConfigError::Read(_))
        ));
    }
}
