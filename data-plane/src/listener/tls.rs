//! TLS for clients (`--tls-listen`): the certificates of `--tls-cert` /
//! `--tls-key` pairs, the one chosen for each handshake by SNI from the
//! certificate's own names, the rustls server config (TLS 1.2 and 1.3, ALPN
//! `h2` and `http/1.1`), and the watcher that replaces the certificates when
//! their files change (or on SIGHUP) without touching open connections.
//!
//! A replacement is one `ArcSwap::store`: a handshake loads the set once, so
//! it sees the old set or the new one, never a mix; connections already open
//! keep the keys they agreed on. A set that fails to load changes nothing.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};
use tokio::sync::{Notify, watch};
use tracing::{debug, info, warn};

/// What ALPN offers, in the server's order of preference.
pub(crate) const ALPN_H2: &[u8] = b"h2";
const ALPN_HTTP1: &[u8] = b"http/1.1";

/// How often the watcher looks at the files' size and modification time.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// One `--tls-cert FILE --tls-key FILE` pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertPair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Why a certificate pair cannot be used; it names the file.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("{file} {}: cannot read it: {error}", path.display())]
    Read {
        file: &'static str,
        path: PathBuf,
        error: io::Error,
    },
    #[error("{file} {}: not PEM ({why})", path.display())]
    NotPem {
        file: &'static str,
        path: PathBuf,
        why: String,
    },
    #[error("certificate file {}: holds no PEM certificate (\"-----BEGIN CERTIFICATE-----\")", .0.display())]
    NoCertificate(PathBuf),
    #[error("key file {}: holds no PEM private key (PKCS#8, PKCS#1 or SEC1)", .0.display())]
    NoKey(PathBuf),
    #[error("key file {}: the private key cannot be used: {error}", path.display())]
    BadKey { path: PathBuf, error: rustls::Error },
    #[error("certificate file {}: the certificate cannot be parsed: {why}", path.display())]
    BadCertificate { path: PathBuf, why: String },
    #[error("key file {}: the private key does not match the certificate of {}", key.display(), cert.display())]
    Mismatch { cert: PathBuf, key: PathBuf },
    #[error("cannot set up TLS: {0}")]
    Config(rustls::Error),
}

/// One loaded pair: the names it is chosen by, and what the handshake sends.
#[derive(Debug)]
struct Named {
    /// Lower-case DNS names; `*.example.com` is kept as a wildcard.
    names: Vec<String>,
    key: Arc<CertifiedKey>,
}

/// The certificates served now, in the order of the flags (the first is the default).
#[derive(Debug)]
struct Served {
    pairs: Vec<Named>,
    /// Of every file's content: a reload with nothing new changes nothing.
    digest: [u8; 32],
}

impl Served {
    /// The pair for `sni`: an exact name first, then a wildcard, else the first.
    fn pick(&self, sni: Option<&str>) -> Option<&Arc<CertifiedKey>> {
        let by_name = sni.and_then(|sni| {
            let exact = self
                .pairs
                .iter()
                .find(|pair| pair.names.iter().any(|n| n.eq_ignore_ascii_case(sni)));
            exact.or_else(|| {
                self.pairs
                    .iter()
                    .find(|pair| pair.names.iter().any(|n| wildcard_matches(n, sni)))
            })
        });
        by_name.or_else(|| self.pairs.first()).map(|pair| &pair.key)
    }
}

/// Whether `*.example.com` matches `sni`: exactly one label in place of the `*`.
fn wildcard_matches(name: &str, sni: &str) -> bool {
    let Some(suffix) = name.strip_prefix("*.") else {
        return false;
    };
    match sni.split_once('.') {
        Some((label, rest)) => !label.is_empty() && rest.eq_ignore_ascii_case(suffix),
        None => false,
    }
}

/// The client-facing certificates of a replica, shared by every worker's
/// TLS listener (as the rustls certificate resolver) and the watcher.
#[derive(Debug)]
pub struct Certificates {
    pairs: Vec<CertPair>,
    served: ArcSwap<Served>,
}

impl Certificates {
    /// Loads every pair; the first error stops the start.
    pub fn load(pairs: Vec<CertPair>) -> Result<Arc<Self>, CertError> {
        let served = load_all(&pairs)?;
        stats().record_success();
        Ok(Arc::new(Certificates {
            pairs,
            served: ArcSwap::from_pointee(served),
        }))
    }

    /// Loads the files again; `Ok(true)` if they changed and are served now,
    /// `Ok(false)` if their content is what is served. On an error the
    /// running certificates stay.
    pub fn reload(&self) -> Result<bool, CertError> {
        let served = load_all(&self.pairs)?;
        if served.digest == self.served.load().digest {
            return Ok(false);
        }
        self.served.store(Arc::new(served));
        Ok(true)
    }

    /// The server config of the TLS listeners: TLS 1.3 and 1.2 only, ALPN
    /// `h2` then `http/1.1`, the certificate chosen per handshake by `self`.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<ServerConfig>, CertError> {
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(CertError::Config)?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec()];
        Ok(Arc::new(config))
    }

    /// The size and modification time of every file, to tell a change.
    fn signature(&self) -> Vec<Option<(SystemTime, u64)>> {
        self.pairs
            .iter()
            .flat_map(|pair| [&pair.cert, &pair.key])
            .map(|path| {
                let meta = std::fs::metadata(path).ok()?;
                Some((meta.modified().ok()?, meta.len()))
            })
            .collect()
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.served.load().pick(client_hello.server_name()).cloned()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn load_all(pairs: &[CertPair]) -> Result<Served, CertError> {
    let mut digest = Sha256::new();
    let mut loaded = Vec::with_capacity(pairs.len());
    for pair in pairs {
        let cert = read(&pair.cert, "certificate file")?;
        let key = read(&pair.key, "key file")?;
        digest.update(Sha256::digest(&cert));
        digest.update(Sha256::digest(&key));
        loaded.push(load_pair(pair, &cert, &key)?);
    }
    Ok(Served {
        pairs: loaded,
        digest: digest.finalize().into(),
    })
}

fn read(path: &Path, file: &'static str) -> Result<Vec<u8>, CertError> {
    std::fs::read(path).map_err(|error| CertError::Read {
        file,
        path: path.to_path_buf(),
        error,
    })
}

/// One pair from the files' bytes: the chain, the key that matches its
/// first certificate, its names. An expired certificate is served, with a warning.
fn load_pair(pair: &CertPair, cert: &[u8], key: &[u8]) -> Result<Named, CertError> {
    let not_pem = |file: &'static str, path: &Path, error: pem::Error| CertError::NotPem {
        file,
        path: path.to_path_buf(),
        why: error.to_string(),
    };
    if !looks_like_pem(cert) {
        return Err(not_pem(
            "certificate file",
            &pair.cert,
            pem::Error::NoItemsFound,
        ));
    }
    let chain = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| not_pem("certificate file", &pair.cert, e))?;
    let Some(leaf) = chain.first() else {
        return Err(CertError::NoCertificate(pair.cert.clone()));
    };
    let names = names_of(leaf, &pair.cert)?;
    if !looks_like_pem(key) {
        return Err(not_pem("key file", &pair.key, pem::Error::NoItemsFound));
    }
    let private = match PrivateKeyDer::from_pem_slice(key) {
        Ok(private) => private,
        Err(pem::Error::NoItemsFound) => return Err(CertError::NoKey(pair.key.clone())),
        Err(e) => return Err(not_pem("key file", &pair.key, e)),
    };
    let signing = provider()
        .key_provider
        .load_private_key(private)
        .map_err(|error| CertError::BadKey {
            path: pair.key.clone(),
            error,
        })?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(_)) => {
            return Err(CertError::Mismatch {
                cert: pair.cert.clone(),
                key: pair.key.clone(),
            });
        }
        Err(error) => {
            return Err(CertError::BadCertificate {
                path: pair.cert.clone(),
                why: error.to_string(),
            });
        }
    }
    Ok(Named {
        names,
        key: Arc::new(certified),
    })
}

/// Whether the bytes have a PEM section at all ("not PEM" rather than "no key").
fn looks_like_pem(bytes: &[u8]) -> bool {
    memchr::memmem::find(bytes, b"-----BEGIN ").is_some()
}

/// The DNS names of a certificate (its SAN, or its CN without one), lower
/// case; warns when it is not valid now (expired or not yet valid).
fn names_of(leaf: &CertificateDer<'_>, path: &Path) -> Result<Vec<String>, CertError> {
    let bad = |why: String| CertError::BadCertificate {
        path: path.to_path_buf(),
        why,
    };
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf).map_err(|e| bad(e.to_string()))?;
    let validity = parsed.validity();
    if !validity.is_valid() {
        warn!(
            tls.cert = %path.display(),
            not_before = %validity.not_before,
            not_after = %validity.not_after,
            "The TLS certificate is not valid now (expired or not yet valid); serving it anyway"
        );
    }
    let mut names: Vec<String> = match parsed.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                x509_parser::extensions::GeneralName::DNSName(dns) => {
                    Some(dns.to_ascii_lowercase())
                }
                _ => None,
            })
            .collect(),
        Ok(None) => Vec::new(),
        Err(e) => return Err(bad(format!("its subjectAltName: {e}"))),
    };
    if names.is_empty() {
        names = parsed
            .subject()
            .iter_common_name()
            .filter_map(|cn| cn.as_str().ok())
            .map(str::to_ascii_lowercase)
            .collect();
    }
    Ok(names)
}

/// Replaces the certificates when their files change (checked every
/// [`POLL_INTERVAL`]; a change is loaded once the files have stayed the same
/// for one more look, so a certificate and key written one after the other
/// are taken together) or when `hup` is notified (SIGHUP), until `shutdown`.
pub async fn watch(
    certificates: Arc<Certificates>,
    hup: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut seen = certificates.signature();
    let mut loaded = seen.clone();
    let mut ticks = tokio::time::interval(POLL_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {
                let now = certificates.signature();
                if now != seen {
                    seen = now;
                    continue;
                }
                if now == loaded {
                    continue;
                }
                loaded = now;
                reload(&certificates, "files changed").await;
            }
            () = hup.notified() => {
                loaded = certificates.signature();
                seen = loaded.clone();
                reload(&certificates, "SIGHUP").await;
            }
            () = crate::stopped(&mut shutdown) => return,
        }
    }
}

/// One reload, off the runtime's thread (files are read and keys parsed).
async fn reload(certificates: &Arc<Certificates>, why: &'static str) {
    let certificates = certificates.clone();
    let reloaded = tokio::task::spawn_blocking(move || certificates.reload()).await;
    match reloaded {
        Ok(Ok(true)) => {
            stats().record_success();
            info!(reason = why, "TLS certificates reloaded");
        }
        Ok(Ok(false)) => debug!(reason = why, "TLS certificate files unchanged"),
        Ok(Err(error)) => {
            stats().reload_errors.fetch_add(1, Ordering::Relaxed);
            warn!(reason = why, %error, "TLS certificates not reloaded; the running ones stay");
        }
        Err(error) => {
            stats().reload_errors.fetch_add(1, Ordering::Relaxed);
            warn!(reason = why, %error, "TLS certificate reload failed; the running ones stay");
        }
    }
}

/// The TLS counters of the replica (admin `/metrics`).
#[derive(Debug, Default)]
pub struct TlsStats {
    /// Certificate sets loaded, the one at start included.
    reloads: AtomicU64,
    reload_errors: AtomicU64,
    /// Seconds since the epoch of the last successful load (0: never).
    last_reload: AtomicU64,
    /// Handshakes that failed (protocol version, no shared cipher, garbage…).
    handshake_errors: AtomicU64,
}

static STATS: TlsStats = TlsStats {
    reloads: AtomicU64::new(0),
    reload_errors: AtomicU64::new(0),
    last_reload: AtomicU64::new(0),
    handshake_errors: AtomicU64::new(0),
};

pub fn stats() -> &'static TlsStats {
    &STATS
}

impl TlsStats {
    fn record_success(&self) {
        self.reloads.fetch_add(1, Ordering::Relaxed);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.last_reload.store(now, Ordering::Relaxed);
    }

    /// Counts a client handshake that failed.
    pub(crate) fn handshake_failed(&self) {
        self.handshake_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// `(name, type, help, value)` of each TLS metric.
    pub fn metrics(&self) -> [(&'static str, &'static str, &'static str, u64); 4] {
        [
            (
                "switchyard_tls_reloads_total",
                "counter",
                "Sets of client TLS certificates loaded (the one at start included).",
                self.reloads.load(Ordering::Relaxed),
            ),
            (
                "switchyard_tls_reload_errors_total",
                "counter",
                "Reloads of client TLS certificates that failed (the running ones stayed).",
                self.reload_errors.load(Ordering::Relaxed),
            ),
            (
                "switchyard_tls_last_reload_timestamp_seconds",
                "gauge",
                "When the client TLS certificates were last loaded (Unix time; 0: never).",
                self.last_reload.load(Ordering::Relaxed),
            ),
            (
                "switchyard_tls_handshake_errors_total",
                "counter",
                "Client TLS handshakes that failed (timeouts: switchyard_client_limits_total).",
                self.handshake_errors.load(Ordering::Relaxed),
            ),
        ]
    }
}

#[cfg(test)]
mod tests;
