//! The config stream's TLS files, read the same way on both sides (a
//! certificate chain and the key that matches it, a CA file), each error
//! naming the flag and the file; and the node id a replica's certificate
//! names ([`node_id_of`]), so that both sides agree on it.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

/// A file given by a flag, for messages: `--grpc-tls-cert /etc/cp.pem`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlagFile {
    pub flag: &'static str,
    pub path: PathBuf,
}

impl FlagFile {
    pub fn new(flag: &'static str, path: &Path) -> Self {
        FlagFile {
            flag,
            path: path.to_path_buf(),
        }
    }
}

impl std::fmt::Display for FlagFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.flag, self.path.display())
    }
}

/// Why a TLS file cannot be used; the message starts with the flag and the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsFileError {
    #[error("{0}: cannot read it: {1}")]
    Read(FlagFile, io::Error),
    #[error("{0}: not PEM ({1})")]
    NotPem(FlagFile, String),
    #[error("{0}: holds no PEM certificate (\"-----BEGIN CERTIFICATE-----\")")]
    NoCertificate(FlagFile),
    #[error("{0}: holds no PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    NoKey(FlagFile),
    #[error("{0}: the private key cannot be used: {1}")]
    BadKey(FlagFile, rustls::Error),
    #[error("{0}: the certificate cannot be parsed: {1}")]
    BadCertificate(FlagFile, String),
    #[error("{0}: certificate {1} in it is not a usable CA certificate: {2}")]
    BadCa(FlagFile, usize, rustls::Error),
    #[error("{key}: the private key does not match the certificate of {cert}")]
    Mismatch { cert: FlagFile, key: FlagFile },
}

/// A certificate chain and its private key, checked to match.
#[derive(Debug)]
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// The files as read (PEM), for libraries that take PEM.
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    /// The node id the certificate names ([`node_id_of`]), if it names one.
    pub name: Option<String>,
}

/// The crypto provider of the workspace (ring).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads a PEM certificate chain and the PEM private key of its first
/// certificate; the first problem (missing file, not PEM, a key that does
/// not match) is an error naming its flag and file.
pub fn load_identity(cert: FlagFile, key: FlagFile) -> Result<Identity, TlsFileError> {
    let cert_pem = read(&cert)?;
    let key_pem = read(&key)?;
    let chain = certificates(&cert, &cert_pem)?;
    let Some(leaf) = chain.first() else {
        return Err(TlsFileError::NoCertificate(cert));
    };
    let name = match x509_parser::parse_x509_certificate(leaf) {
        Ok((_, parsed)) => name_of(&parsed),
        Err(e) => return Err(TlsFileError::BadCertificate(cert, e.to_string())),
    };
    if !looks_like_pem(&key_pem) {
        return Err(TlsFileError::NotPem(key, "no \"-----BEGIN \" line".into()));
    }
    let private = match PrivateKeyDer::from_pem_slice(&key_pem) {
        Ok(private) => private,
        Err(pem::Error::NoItemsFound) => return Err(TlsFileError::NoKey(key)),
        Err(e) => return Err(TlsFileError::NotPem(key, e.to_string())),
    };
    let signing = provider()
        .key_provider
        .load_private_key(private.clone_key())
        .map_err(|e| TlsFileError::BadKey(key.clone(), e))?;
    match CertifiedKey::new(chain.clone(), signing).keys_match() {
        // Some key types cannot tell; the handshake will.
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(_)) => {
            return Err(TlsFileError::Mismatch { cert, key });
        }
        Err(e) => return Err(TlsFileError::BadCertificate(cert, e.to_string())),
    }
    Ok(Identity {
        chain,
        key: private,
        cert_pem,
        key_pem,
        name,
    })
}

/// The CA certificates of a PEM file (one or several), as trust roots.
pub fn load_cas(file: FlagFile) -> Result<(RootCertStore, Vec<u8>), TlsFileError> {
    let pem = read(&file)?;
    let mut roots = RootCertStore::empty();
    for (index, certificate) in certificates(&file, &pem)?.into_iter().enumerate() {
        roots
            .add(certificate)
            .map_err(|e| TlsFileError::BadCa(file.clone(), index + 1, e))?;
    }
    Ok((roots, pem))
}

/// The node id a replica's certificate (DER) names: its first DNS
/// subjectAltName, else its subject's first common name, exactly as written;
/// `None` if it names neither (or cannot be parsed).
pub fn node_id_of(certificate: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(certificate).ok()?;
    name_of(&parsed)
}

fn name_of(parsed: &x509_parser::certificate::X509Certificate<'_>) -> Option<String> {
    let san = parsed.subject_alternative_name().ok().flatten();
    let dns = san.and_then(|san| {
        san.value.general_names.iter().find_map(|name| match name {
            x509_parser::extensions::GeneralName::DNSName(dns) if !dns.is_empty() => {
                Some((*dns).to_owned())
            }
            _ => None,
        })
    });
    dns.or_else(|| {
        parsed
            .subject()
            .iter_common_name()
            .find_map(|cn| cn.as_str().ok().filter(|cn| !cn.is_empty()))
            .map(str::to_owned)
    })
}

fn read(file: &FlagFile) -> Result<Vec<u8>, TlsFileError> {
    std::fs::read(&file.path).map_err(|e| TlsFileError::Read(file.clone(), e))
}

/// Every certificate of a PEM file; none is an error.
fn certificates(file: &FlagFile, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    if !looks_like_pem(pem) {
        return Err(TlsFileError::NotPem(
            file.clone(),
            "no \"-----BEGIN \" line".into(),
        ));
    }
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsFileError::NotPem(file.clone(), e.to_string()))?;
    if chain.is_empty() {
        return Err(TlsFileError::NoCertificate(file.clone()));
    }
    Ok(chain)
}

/// Whether the bytes have a PEM section at all ("not PEM" rather than "no key").
fn looks_like_pem(bytes: &[u8]) -> bool {
    bytes.windows(11).any(|w| w == b"-----BEGIN ")
}

#[cfg(test)]
mod tests;
