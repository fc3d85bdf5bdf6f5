//! A snapshot: the whole config at one version, as pushed to data planes,
//! kept in the control plane's state file and in the data planes' cache files.

use serde::ser::SerializeStruct;
use serde::{Deserialize, Serialize, Serializer};
use sha2::{Digest, Sha256};

use crate::model::{Cluster, Config, Route};

/// The whole config at one version of one store.
///
/// Its JSON is the shape of `GET /api/v1/config`:
/// `{ "version", "store_id", "hash", "clusters": [...], "routes": [...] }`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub version: u64,
    /// The id (epoch) of the store that made this version: a fresh store gets a new one.
    pub store_id: String,
    /// The hash of the canonical config (see [`config_hash`]).
    pub hash: String,
    pub config: Config,
}

/// The JSON document of a snapshot or of a whole config: `version`, `store_id`
/// and `hash` are optional so that a config read with `GET` can be sent back.
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, remote = "Self")]
pub struct ConfigDocument {
    #[serde(default)]
    pub version: Option<u64>,
    #[serde(default)]
    pub store_id: Option<String>,
    #[serde(default)]
    pub hash: Option<String>,
    #[serde(default)]
    pub clusters: Vec<Cluster>,
    #[serde(default)]
    pub routes: Vec<Route>,
}

crate::objects_only!(ConfigDocument => "a config object {\"clusters\": [...], \"routes\": [...]}");

impl ConfigDocument {
    pub fn into_config(self) -> Config {
        Config {
            clusters: self.clusters,
            routes: self.routes,
        }
    }
}

impl Serialize for Snapshot {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("Snapshot", 5)?;
        s.serialize_field("version", &self.version)?;
        s.serialize_field("store_id", &self.store_id)?;
        s.serialize_field("hash", &self.hash)?;
        s.serialize_field("clusters", &self.config.clusters)?;
        s.serialize_field("routes", &self.config.routes)?;
        s.end()
    }
}

impl<'de> Deserialize<'de> for Snapshot {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // The trait's (objects only), not the inherent derived function.
        let doc = <ConfigDocument as Deserialize>::deserialize(deserializer)?;
        Ok(Snapshot {
            version: doc.version.unwrap_or(0),
            store_id: doc.store_id.clone().unwrap_or_default(),
            hash: doc.hash.clone().unwrap_or_default(),
            config: doc.into_config(),
        })
    }
}

/// The SHA-256 (hex) of a config's canonical JSON. The control plane keeps
/// clusters and routes sorted by name, which makes its JSON canonical.
pub fn config_hash(config: &Config) -> String {
    let mut hasher = Sha256::new();
    // Serializing plain structs of strings and numbers cannot fail.
    if let Ok(json) = serde_json::to_vec(config) {
        hasher.update(&json);
    }
    hex(&hasher.finalize())
}

/// The hash that a build whose model had other fields gave a config it
/// wrote: `clusters` and `routes` are the config's JSON as that build stored
/// it (pretty or not; its fields in its order), hashed as [`config_hash`]
/// hashed them then. A state file written before an upgrade that added a
/// field (with its default) has this hash, not the one of the config as
/// this build reads it.
pub fn written_config_hash(clusters: &str, routes: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"{\"clusters\":");
    hasher.update(compact(clusters));
    hasher.update(b",\"routes\":");
    hasher.update(compact(routes));
    hasher.update(b"}");
    hex(&hasher.finalize())
}

/// JSON text without the whitespace between its tokens (what serde_json's
/// pretty printer adds); strings are kept byte for byte.
fn compact(json: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for &byte in json.as_bytes() {
        if in_string {
            out.push(byte);
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
        } else if !byte.is_ascii_whitespace() {
            in_string = byte == b'"';
            out.push(byte);
        }
    }
    out
}

fn hex(digest: &[u8]) -> String {
    let mut hex = String::with_capacity(digest.len() * 2);
    for byte in digest {
        hex.push_str(&format!("{byte:02x}"));
    }
    hex
}

impl Snapshot {
    /// A snapshot of `config` at `version`, with its hash computed.
    pub fn new(version: u64, store_id: impl Into<String>, config: Config) -> Self {
        let hash = config_hash(&config);
        Snapshot {
            version,
            store_id: store_id.into(),
            hash,
            config,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape_round_trips_and_refuses_unknown_fields() {
        let snapshot = Snapshot::new(
            3,
            "s1",
            Config {
                clusters: vec![Cluster::new("c")],
                routes: vec![],
            },
        );
        let json = serde_json::to_value(&snapshot).unwrap();
        assert_eq!(json["version"], 3);
        assert_eq!(json["clusters"][0]["name"], "c");
        let back: Snapshot = serde_json::from_value(json).unwrap();
        assert_eq!(back, snapshot);
        assert!(serde_json::from_str::<Snapshot>(r#"{"clustres": []}"#).is_err());
    }

    /// Serde's derive would take a struct from an array of its fields; every
    /// model struct, at every depth, takes only an object.
    #[test]
    fn arrays_are_not_objects_at_any_depth() {
        let member = r#"{"url": "http://127.0.0.1:1"}"#;
        let cluster = format!(r#"{{"name": "c", "members": [{member}]}}"#);
        let good = format!(r#"{{"clusters": [{cluster}], "routes": []}}"#);
        serde_json::from_str::<Snapshot>(&good).unwrap();
        for bad in [
            r#"[[], []]"#.to_owned(),
            r#"{"clusters": [["c", "round_robin", []]]}"#.to_owned(),
            r#"{"clusters": [{"name": "c", "members": [["", "http://127.0.0.1:1", 1, "active"]]}]}"#
                .to_owned(),
            r#"{"clusters": [{"name": "c", "retry": [1]}]}"#.to_owned(),
            r#"{"clusters": [{"name": "c", "outlier_detection": [1]}]}"#.to_owned(),
            r#"{"clusters": [{"name": "c", "health_check": ["/"]}]}"#.to_owned(),
            r#"{"clusters": [{"name": "c", "sticky": ["JSESSIONID"]}]}"#.to_owned(),
            r#"{"routes": [["r", null, "/", "c"]]}"#.to_owned(),
        ] {
            let err = serde_json::from_str::<Snapshot>(&bad).unwrap_err().to_string();
            assert!(err.contains("invalid type: sequence"), "{bad}: {err}");
            assert!(err.contains("object"), "{bad}: {err}");
            let value: serde_json::Value = serde_json::from_str(&bad).unwrap();
            assert!(serde_json::from_value::<Snapshot>(value).is_err(), "{bad}");
        }
        assert!(serde_json::from_str::<Cluster>(r#"["c"]"#).is_err());
        // `hash_on` is a string or a one-key object, never an array.
        let hash_on =
            |h: &str| format!(r#"{{"name": "c", "policy": "consistent_hash", "hash_on": {h}}}"#);
        for good in [
            r#""client_ip""#,
            r#"{"header": "x-user"}"#,
            r#"{"cookie": "u"}"#,
        ] {
            serde_json::from_str::<Cluster>(&hash_on(good)).unwrap();
        }
        for bad in [
            r#"["header", "x"]"#,
            r#""header""#,
            r#"{"query": "x"}"#,
            r#"{"header": "x", "cookie": "y"}"#,
        ] {
            assert!(
                serde_json::from_str::<Cluster>(&hash_on(bad)).is_err(),
                "{bad}"
            );
        }
        assert!(serde_json::from_str::<Config>(r#"[[], []]"#).is_err());
    }
}
