use super::*;

use rcgen::{CertificateParams, DnType, KeyPair};

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "switchyard-shared-tls-{name}-{}-{}",
            std::process::id(),
            fastrand_suffix()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }

    fn write(&self, name: &str, content: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, content).unwrap();
        path
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn fastrand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// A self-signed certificate with these DNS SANs and CN, and its key (PEM).
fn certificate(sans: &[&str], cn: Option<&str>) -> (String, String, CertificateDer<'static>) {
    let mut params =
        CertificateParams::new(sans.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    if let Some(cn) = cn {
        params.distinguished_name.push(DnType::CommonName, cn);
    }
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem(), cert.der().clone())
}

#[test]
fn the_node_id_is_the_first_dns_san_else_the_cn() {
    let (_, _, der) = certificate(&["dp-1.example", "other"], Some("cn-name"));
    assert_eq!(node_id_of(&der).as_deref(), Some("dp-1.example"));
    let (_, _, der) = certificate(&[], Some("Replica-7"));
    assert_eq!(node_id_of(&der).as_deref(), Some("Replica-7"));
    let (_, _, der) = certificate(&["127.0.0.1"], Some("by-cn"));
    assert_eq!(
        node_id_of(&der).as_deref(),
        Some("by-cn"),
        "an IP SAN is no name"
    );
    let (_, _, der) = certificate(&[], None);
    assert_eq!(node_id_of(&der), None);
    assert_eq!(node_id_of(&CertificateDer::from(vec![1, 2, 3])), None);
}

#[test]
fn an_identity_is_loaded_with_its_name() {
    let dir = Dir::new("identity");
    let (cert, key, _) = certificate(&["dp-a"], None);
    let identity = load_identity(
        FlagFile::new("--cert", &dir.write("c.pem", &cert)),
        FlagFile::new("--key", &dir.write("k.pem", &key)),
    )
    .unwrap();
    assert_eq!(identity.name.as_deref(), Some("dp-a"));
    assert_eq!(identity.chain.len(), 1);
    assert_eq!(identity.cert_pem, cert.as_bytes());
}

#[test]
fn bad_files_are_refused_naming_the_flag_and_file() {
    let dir = Dir::new("bad");
    let (cert, key, _) = certificate(&["dp-a"], None);
    let (_, other_key, _) = certificate(&["dp-b"], None);
    let cert = dir.write("c.pem", &cert);
    let key = dir.write("k.pem", &key);
    let other_key = dir.write("other.pem", &other_key);
    let garbage = dir.write("garbage.pem", "not pem at all");
    let missing = dir.0.join("missing.pem");
    let load = |c: &Path, k: &Path| {
        load_identity(FlagFile::new("--cert", c), FlagFile::new("--key", k))
            .map(|_| ())
            .unwrap_err()
    };

    let error = load(&missing, &key);
    assert!(matches!(error, TlsFileError::Read(..)), "{error}");
    assert!(
        error
            .to_string()
            .starts_with(&format!("--cert {}: cannot read it", missing.display())),
        "{error}"
    );
    let error = load(&garbage, &key);
    assert!(matches!(error, TlsFileError::NotPem(..)), "{error}");
    assert!(error.to_string().starts_with("--cert "), "{error}");
    let error = load(&cert, &garbage);
    assert!(error.to_string().starts_with("--key "), "{error}");
    // A certificate where the key should be: PEM, but no key in it.
    let error = load(&cert, &cert);
    assert!(matches!(error, TlsFileError::NoKey(..)), "{error}");
    let error = load(&cert, &other_key);
    assert!(matches!(error, TlsFileError::Mismatch { .. }), "{error}");
    assert!(
        error.to_string().contains(&format!(
            "--key {}: the private key does not match the certificate of --cert {}",
            other_key.display(),
            cert.display()
        )),
        "{error}"
    );
}

#[test]
fn a_ca_file_holds_certificates() {
    let dir = Dir::new("cas");
    let (one, _, _) = certificate(&["ca-1"], None);
    let (two, _, _) = certificate(&["ca-2"], None);
    let both = dir.write("cas.pem", &format!("{one}{two}"));
    let (roots, _) = load_cas(FlagFile::new("--ca", &both)).unwrap();
    assert_eq!(roots.len(), 2);
    let (_, key, _) = certificate(&["x"], None);
    let key_only = dir.write("key.pem", &key);
    let error = load_cas(FlagFile::new("--ca", &key_only)).unwrap_err();
    assert!(matches!(error, TlsFileError::NoCertificate(..)), "{error}");
}
