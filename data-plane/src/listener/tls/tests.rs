use std::path::Path;

use rcgen::{CertificateParams, KeyPair, date_time_ymd};

use super::*;

/// A self-signed certificate for `names` and its key, PEM.
fn certificate(names: &[&str]) -> (String, String) {
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let made = rcgen::generate_simple_self_signed(names).expect("a test certificate");
    (made.cert.pem(), made.signing_key.serialize_pem())
}

/// Writes a pair into `dir` as `<stem>.crt` / `<stem>.key`.
fn write_pair(dir: &Path, stem: &str, (cert, key): &(String, String)) -> CertPair {
    let pair = CertPair {
        cert: dir.join(format!("{stem}.crt")),
        key: dir.join(format!("{stem}.key")),
    };
    std::fs::write(&pair.cert, cert).expect("write the certificate");
    std::fs::write(&pair.key, key).expect("write the key");
    pair
}

fn temp_dir(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("switchyard-tls-unit-{name}-{}", std::process::id()));
    drop(std::fs::remove_dir_all(&dir));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    dir
}

/// The names of the certificate `picked` would send for `sni`.
fn picked_names(served: &Served, sni: Option<&str>) -> Vec<String> {
    let key = served.pick(sni).expect("a certificate");
    served
        .pairs
        .iter()
        .find(|pair| Arc::ptr_eq(&pair.key, key))
        .map(|pair| pair.names.clone())
        .unwrap_or_default()
}

#[test]
fn sni_picks_an_exact_name_then_a_wildcard_else_the_first_pair() {
    let dir = temp_dir("sni");
    let pairs = vec![
        write_pair(&dir, "default", &certificate(&["default.test"])),
        write_pair(&dir, "wild", &certificate(&["*.example.test"])),
        write_pair(
            &dir,
            "exact",
            &certificate(&["api.example.test", "Other.Test"]),
        ),
    ];
    let served = load_all(&pairs).expect("the pairs load");
    let exact = vec!["api.example.test".to_owned(), "other.test".to_owned()];
    assert_eq!(picked_names(&served, Some("api.example.test")), exact);
    assert_eq!(picked_names(&served, Some("OTHER.test")), exact);
    assert_eq!(
        picked_names(&served, Some("www.example.test")),
        ["*.example.test"]
    );
    // A wildcard stands for one label only.
    assert_eq!(
        picked_names(&served, Some("a.b.example.test")),
        ["default.test"]
    );
    assert_eq!(
        picked_names(&served, Some("example.test")),
        ["default.test"]
    );
    assert_eq!(picked_names(&served, None), ["default.test"]);
    assert_eq!(
        picked_names(&served, Some("unknown.test")),
        ["default.test"]
    );
}

#[test]
fn a_bad_pair_is_refused_with_the_file_and_the_reason() {
    let dir = temp_dir("bad");
    let good = certificate(&["a.test"]);
    let other = certificate(&["b.test"]);
    let cases = [
        (
            "not-pem",
            ("just text".to_owned(), good.1.clone()),
            "not PEM",
        ),
        (
            "no-cert",
            (good.1.clone(), good.1.clone()),
            "holds no PEM certificate",
        ),
        (
            "no-key",
            (good.0.clone(), good.0.clone()),
            "holds no PEM private key",
        ),
        (
            "key-not-pem",
            (good.0.clone(), "garbage".to_owned()),
            "key file",
        ),
        (
            "mismatch",
            (good.0.clone(), other.1.clone()),
            "does not match the certificate",
        ),
    ];
    for (stem, files, reason) in cases {
        let pair = write_pair(&dir, stem, &files);
        let error = load_all(std::slice::from_ref(&pair))
            .expect_err(stem)
            .to_string();
        assert!(error.contains(reason), "{stem}: {error}");
        assert!(error.contains(stem), "{stem}: the file is named: {error}");
    }
    let missing = CertPair {
        cert: dir.join("missing.crt"),
        key: dir.join("missing.key"),
    };
    let error = load_all(&[missing]).expect_err("missing").to_string();
    assert!(
        error.contains("missing.crt") && error.contains("cannot read"),
        "{error}"
    );
}

#[test]
fn an_expired_certificate_is_served() {
    let dir = temp_dir("expired");
    let mut params = CertificateParams::new(vec!["old.test".to_owned()]).expect("params");
    params.not_before = date_time_ymd(2000, 1, 1);
    params.not_after = date_time_ymd(2001, 1, 1);
    let key = KeyPair::generate().expect("a key");
    let cert = params.self_signed(&key).expect("a certificate");
    let pair = write_pair(&dir, "old", &(cert.pem(), key.serialize_pem()));
    let served = load_all(&[pair]).expect("an expired certificate only warns");
    assert_eq!(picked_names(&served, Some("old.test")), ["old.test"]);
}

#[test]
fn a_reload_takes_new_files_and_keeps_the_running_ones_on_an_error() {
    let dir = temp_dir("reload");
    let pair = write_pair(&dir, "site", &certificate(&["one.test"]));
    let certificates = Certificates::load(vec![pair.clone()]).expect("the pair loads");
    assert!(
        !certificates.reload().expect("unchanged"),
        "nothing changed"
    );

    write_pair(&dir, "site", &certificate(&["two.test"]));
    assert!(certificates.reload().expect("the new pair loads"));
    assert_eq!(
        picked_names(&certificates.served.load(), None),
        ["two.test"]
    );

    std::fs::write(&pair.cert, "broken").expect("write");
    let error = certificates.reload().expect_err("a broken file");
    assert!(error.to_string().contains("site.crt"), "{error}");
    assert_eq!(
        picked_names(&certificates.served.load(), None),
        ["two.test"],
        "the running certificate stays"
    );
}

#[test]
fn the_server_config_offers_h2_then_http1() {
    let dir = temp_dir("config");
    let pair = write_pair(&dir, "site", &certificate(&["one.test"]));
    let certificates = Certificates::load(vec![pair]).expect("the pair loads");
    let config = certificates.server_config().expect("a config");
    assert_eq!(
        config.alpn_protocols,
        [b"h2".to_vec(), b"http/1.1".to_vec()]
    );
}
