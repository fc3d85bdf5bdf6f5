//! Switchyard's shared library: the config model both sides speak, its
//! validation, snapshots, and the control-plane <-> data-plane protocol.

pub mod model;
pub mod object;
pub mod proto;
pub mod snapshot;
pub mod telemetry;
pub mod text;
pub mod tls;
pub mod validate;

pub use model::{
    Algorithm, Cluster, Compress, Config, CookieRewrite, Dur, HashOn, HeaderRules, HealthCheck,
    Member, MemberState, OutlierDetection, Policy, Protocol, RetryOn, RetryPolicy, Route, Sticky,
};
pub use snapshot::{ConfigDocument, Snapshot, config_hash, written_config_hash};
pub use validate::{ConfigError, ErrorKind, MemberAddr, Scheme};
