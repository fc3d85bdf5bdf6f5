//! The config store: the current snapshot, kept durably before a change is
//! answered, and published on a `watch` channel that every config stream
//! follows. Two backends keep it:
//!
//! - a JSON state file (the default, nothing else to run): **a change is
//!   answered only after it is on disk** (temp file, fsync, rename, fsync of
//!   the directory), so `kill -9` loses nothing acknowledged;
//! - etcd ([`etcd`], `--store etcd://…`), shared by several control-plane
//!   nodes: **a change is answered only after etcd committed it**, in one
//!   transaction that compares the revision the change was made on.
//!
//! **Versions only go up and the store id never changes**: both live in the
//! state file or the etcd key, so a restarted control plane never makes
//! replicas go backwards.
//!
//! [`Store`] is one type over an enum of the two backends rather than a trait:
//! `update` is generic over the change closure (a trait with it would not be
//! object-safe), there are exactly two backends, and everything around them
//! (validation, canonical order, the hash, the `watch` channel) is shared.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use switchyard_shared::proto::v1;
use switchyard_shared::text::bounded;
use switchyard_shared::validate::validate_config;
use switchyard_shared::{
    Config, ConfigDocument, ConfigError, Snapshot, config_hash, written_config_hash,
};
use tokio::sync::{Mutex, watch};
use tracing::info;

/// The current snapshot and its protobuf message, converted once per version
/// and shared by every config stream.
#[derive(Debug, Clone)]
pub struct Published {
    pub snapshot: Arc<Snapshot>,
    pub message: Arc<v1::ControlPlaneMessage>,
}

/// The store; cheap to clone (all clones share one state).
#[derive(Debug, Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    backend: Backend,
    /// One writer at a time; owned so that a write survives its caller going away.
    writer: Arc<Mutex<()>>,
    current: Arc<watch::Sender<Published>>,
    /// [`Store::cut_off`] of the state file: always false, and never closed.
    never_cut_off: watch::Sender<bool>,
}

/// Where the snapshots are kept.
#[derive(Debug)]
enum Backend {
    File(PathBuf),
    Etcd(etcd::EtcdStore),
}

/// Where a store lives: a state file or an etcd cluster.
#[derive(Debug, Clone)]
pub enum Location {
    File(PathBuf),
    Etcd(etcd::EtcdOptions),
}

/// Why the store could not be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot read state file {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "state file {} is corrupt: {reason}; fix or move it away (it is never replaced silently)",
        path.display()
    )]
    Corrupt { path: PathBuf, reason: String },
    #[error("cannot write state file {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
    #[error("bootstrap config {}: {reason}", path.display())]
    Bootstrap { path: PathBuf, reason: String },
    #[error("a store task failed: {0}")]
    Task(String),
    /// etcd did not answer, lost its quorum, or refused the request.
    #[error("{0}")]
    Unavailable(String),
    /// etcd refused a request, or its key holds no valid snapshot.
    #[error("{0}")]
    Etcd(String),
}

impl StoreError {
    /// Whether the store could not be reached at all (503), rather than
    /// failing on its own (500).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

/// Why a write was not done. Either way the state is unchanged.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The change is invalid or clashes with the current config.
    #[error(transparent)]
    Rejected(#[from] ConfigError),
    /// The change is valid but could not be made durable.
    #[error(transparent)]
    Storage(StoreError),
}

/// What a successful write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written<R> {
    /// The version that holds the change (the current one if nothing changed).
    pub version: u64,
    /// Whether a new version was stored.
    pub changed: bool,
    /// What the change function returned.
    pub value: R,
}

impl Published {
    pub(crate) fn new(snapshot: Snapshot) -> Self {
        let message = v1::ControlPlaneMessage {
            kind: Some(v1::control_plane_message::Kind::Snapshot(
                v1::Snapshot::from(&snapshot),
            )),
        };
        Published {
            snapshot: Arc::new(snapshot),
            message: Arc::new(message),
        }
    }
}

impl Store {
    /// Opens the state file at `path`, or creates it (with a new store id) if
    /// it does not exist, applying the `bootstrap` config document to the new
    /// store, or to a store that was never written to (version 0). The
    /// bootstrap file is checked even when it is not applied.
    pub async fn open(path: PathBuf, bootstrap: Option<PathBuf>) -> Result<Store, StoreError> {
        tokio::task::spawn_blocking(move || Store::open_blocking(&path, bootstrap.as_deref()))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?
    }

    /// Opens the store at `location`: [`Store::open`] for a state file,
    /// [`etcd::EtcdStore::open`] for etcd (the same bootstrap rules).
    pub async fn open_at(
        location: Location,
        bootstrap: Option<PathBuf>,
    ) -> Result<Store, StoreError> {
        match location {
            Location::File(path) => Store::open(path, bootstrap).await,
            Location::Etcd(options) => {
                let bootstrap = match bootstrap {
                    Some(path) => Some(
                        tokio::task::spawn_blocking(move || read_bootstrap(&path))
                            .await
                            .map_err(|e| StoreError::Task(e.to_string()))??,
                    ),
                    None => None,
                };
                let (backend, current) = etcd::EtcdStore::open(options, bootstrap).await?;
                Ok(Store {
                    inner: Arc::new(Inner {
                        backend: Backend::Etcd(backend),
                        writer: Arc::new(Mutex::new(())),
                        current,
                        never_cut_off: watch::Sender::new(false),
                    }),
                })
            }
        }
    }

    /// [`Store::open`] for callers outside of async code.
    pub fn open_blocking(path: &Path, bootstrap: Option<&Path>) -> Result<Store, StoreError> {
        let bootstrap = bootstrap.map(read_bootstrap).transpose()?;
        let snapshot = match (load(path)?, bootstrap) {
            // Never written to (version 0): the store is empty, so the bootstrap applies.
            (Some(empty), Some(config)) if empty.version == 0 && config != Config::default() => {
                let snapshot = Snapshot::new(1, empty.store_id, config);
                persist(path, &snapshot)?;
                info!(
                    state.file = %path.display(),
                    store.id = %snapshot.store_id,
                    "The store was empty; applied the bootstrap config as version 1"
                );
                snapshot
            }
            (Some(snapshot), bootstrap) => {
                if bootstrap.is_some() {
                    info!(
                        state.file = %path.display(),
                        "The store has a config; the bootstrap config is not applied"
                    );
                }
                info!(
                    state.file = %path.display(),
                    store.id = %snapshot.store_id,
                    config.version = snapshot.version,
                    "Loaded the store"
                );
                snapshot
            }
            (None, bootstrap) => {
                let config = bootstrap.unwrap_or_default();
                let version = if config == Config::default() { 0 } else { 1 };
                let snapshot = Snapshot::new(version, new_store_id(), config);
                persist(path, &snapshot)?;
                info!(
                    state.file = %path.display(),
                    store.id = %snapshot.store_id,
                    config.version = snapshot.version,
                    "Created a new store"
                );
                snapshot
            }
        };
        let (current, _) = watch::channel(Published::new(snapshot));
        Ok(Store {
            inner: Arc::new(Inner {
                backend: Backend::File(path.to_owned()),
                writer: Arc::new(Mutex::new(())),
                current: Arc::new(current),
                never_cut_off: watch::Sender::new(false),
            }),
        })
    }

    /// The current snapshot.
    pub fn current(&self) -> Arc<Snapshot> {
        self.inner.current.borrow().snapshot.clone()
    }

    /// Follows the current snapshot; a slow reader sees only the latest one.
    pub fn subscribe(&self) -> watch::Receiver<Published> {
        self.inner.current.subscribe()
    }

    /// The etcd backend, if the store is on etcd.
    pub(crate) fn etcd(&self) -> Option<&etcd::EtcdStore> {
        match &self.inner.backend {
            Backend::File(_) => None,
            Backend::Etcd(etcd) => Some(etcd),
        }
    }

    /// Turns true while this node cannot reach its store (etcd) for a while,
    /// so it should send its replicas elsewhere; never for the state file.
    pub fn cut_off(&self) -> watch::Receiver<bool> {
        match &self.inner.backend {
            Backend::File(_) => self.inner.never_cut_off.subscribe(),
            Backend::Etcd(etcd) => etcd.cut_off(),
        }
    }

    /// Why the current snapshot may be behind the store (etcd has not
    /// answered lately); `None` when it is known to be current, and always
    /// for the state file.
    pub fn stale(&self) -> Option<String> {
        match &self.inner.backend {
            Backend::File(_) => None,
            Backend::Etcd(etcd) => etcd.stale(),
        }
    }

    /// Applies `change` to a copy of the current config, validates the result
    /// and, if it differs from the current config, stores it as the next
    /// version and publishes it. Writes are serialized. On any error the
    /// state is unchanged. `change` also gets the current snapshot (for
    /// compare-and-set on its version). With etcd, a write that lost a race
    /// to another node is made again on the newer snapshot, so `change` may
    /// run more than once (on a clone): it must depend only on its arguments.
    ///
    /// The write runs to its end even if the returned future is dropped, so a
    /// client that goes away cannot leave the store and the memory apart.
    pub async fn update<R, F>(&self, change: F) -> Result<Written<R>, WriteError>
    where
        F: FnOnce(&mut Config, &Snapshot) -> Result<R, ConfigError> + Clone + Send + 'static,
        R: Send + 'static,
    {
        let guard = self.inner.writer.clone().lock_owned().await;
        let inner = self.inner.clone();
        let task = match &self.inner.backend {
            Backend::File(_) => tokio::task::spawn_blocking(move || {
                let written = inner.apply_to_file(change);
                drop(guard);
                written
            }),
            Backend::Etcd(_) => tokio::spawn(async move {
                let written = match &inner.backend {
                    Backend::Etcd(etcd) => etcd.update(&inner.current, change).await,
                    Backend::File(_) => Err(WriteError::Storage(StoreError::Task(
                        "the backend changed".to_owned(),
                    ))),
                };
                drop(guard);
                written
            }),
        };
        task.await
            .map_err(|e| WriteError::Storage(StoreError::Task(e.to_string())))?
    }
}

/// What a change makes of a snapshot: nothing new, or the next version.
pub(crate) enum Prepared<R> {
    Unchanged(R),
    Next(Snapshot, R),
}

/// Applies `change` to a copy of `current`'s config, validates and
/// canonicalizes the result: the next snapshot, or `Unchanged` if its hash is
/// the current one.
pub(crate) fn prepare<R, F>(current: &Snapshot, change: F) -> Result<Prepared<R>, ConfigError>
where
    F: FnOnce(&mut Config, &Snapshot) -> Result<R, ConfigError>,
{
    let mut config = current.config.clone();
    let value = change(&mut config, current)?;
    validate_config(&mut config)?;
    canonicalize(&mut config);
    let hash = config_hash(&config);
    if hash == current.hash {
        return Ok(Prepared::Unchanged(value));
    }
    Ok(Prepared::Next(
        Snapshot {
            version: current.version + 1,
            store_id: current.store_id.clone(),
            hash,
            config,
        },
        value,
    ))
}

impl Inner {
    fn apply_to_file<R, F>(&self, change: F) -> Result<Written<R>, WriteError>
    where
        F: FnOnce(&mut Config, &Snapshot) -> Result<R, ConfigError>,
    {
        let Backend::File(path) = &self.backend else {
            return Err(WriteError::Storage(StoreError::Task(
                "the backend changed".to_owned(),
            )));
        };
        let current = self.current.borrow().snapshot.clone();
        let (next, value) = match prepare(&current, change)? {
            Prepared::Unchanged(value) => {
                return Ok(Written {
                    version: current.version,
                    changed: false,
                    value,
                });
            }
            Prepared::Next(next, value) => (next, value),
        };
        persist(path, &next).map_err(WriteError::Storage)?;
        let version = next.version;
        self.current.send_replace(Published::new(next));
        info!(config.version = version, "Stored a new config version");
        Ok(Written {
            version,
            changed: true,
            value,
        })
    }
}

/// Sorts clusters and routes by name, which makes the config's JSON (and so
/// its hash) canonical. Members keep their order: it breaks balancing ties.
fn canonicalize(config: &mut Config) {
    config.clusters.sort_by(|a, b| a.name.cmp(&b.name));
    config.routes.sort_by(|a, b| a.name.cmp(&b.name));
}

/// A new store id: 128 random bits in hex.
pub(crate) fn new_store_id() -> String {
    format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}

/// Reads and checks a bootstrap config document (the `GET /api/v1/config` shape).
fn read_bootstrap(path: &Path) -> Result<Config, StoreError> {
    let bad = |reason: String| StoreError::Bootstrap {
        path: path.to_owned(),
        reason,
    };
    let text = fs::read(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
    let document: ConfigDocument = serde_json::from_slice(&text)
        .map_err(|e| bad(format!("invalid JSON: {}", bounded(e.to_string()))))?;
    let mut config = document.into_config();
    validate_config(&mut config).map_err(|e| bad(e.message))?;
    canonicalize(&mut config);
    Ok(config)
}

/// Loads the state file; `None` if there is none yet.
fn load(path: &Path) -> Result<Option<Snapshot>, StoreError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StoreError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    decode(&bytes)
        .map(Some)
        .map_err(|reason| StoreError::Corrupt {
            path: path.to_owned(),
            reason,
        })
}

/// Reads a snapshot as the state file (or the etcd key) holds it: valid
/// JSON, a store id, a valid config whose hash matches.
pub(crate) fn decode(bytes: &[u8]) -> Result<Snapshot, String> {
    let mut snapshot: Snapshot = serde_json::from_slice(bytes)
        .map_err(|e| format!("invalid JSON: {}", bounded(e.to_string())))?;
    if snapshot.store_id.is_empty() {
        return Err("it has no store_id".to_owned());
    }
    validate_config(&mut snapshot.config).map_err(|e| e.message)?;
    canonicalize(&mut snapshot.config);
    if config_hash(&snapshot.config) != snapshot.hash {
        // Written by a build whose model had fewer fields: its hash is of the
        // config as that build wrote it; from now on, of the config as it is read.
        if written_hash(bytes).as_deref() != Some(snapshot.hash.as_str()) {
            return Err(
                "its hash does not match its clusters and routes (was it edited by hand?)"
                    .to_owned(),
            );
        }
        snapshot.hash = config_hash(&snapshot.config);
    }
    Ok(snapshot)
}

/// The hash of the config in a state file as it was written (see
/// [`written_config_hash`]); `None` if the file has no such parts.
fn written_hash(bytes: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Written<'a> {
        #[serde(borrow)]
        clusters: &'a serde_json::value::RawValue,
        #[serde(borrow)]
        routes: &'a serde_json::value::RawValue,
    }
    let written: Written<'_> = serde_json::from_slice(bytes).ok()?;
    Some(written_config_hash(
        written.clusters.get(),
        written.routes.get(),
    ))
}

/// Writes `snapshot` to `path` durably: a temp file in the same directory,
/// fsync, rename over the old file, fsync of the directory.
fn persist(path: &Path, snapshot: &Snapshot) -> Result<(), StoreError> {
    let write_error = |source: io::Error| StoreError::Write {
        path: path.to_owned(),
        source,
    };
    let json = serde_json::to_vec_pretty(snapshot).map_err(|e| write_error(e.into()))?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| write_error(io::Error::other("the path has no file name")))?;
    let mut temp_name = name.to_os_string();
    temp_name.push(format!(
        ".tmp-{}-{:08x}",
        std::process::id(),
        fastrand::u32(..)
    ));
    let temp = dir.join(temp_name);
    let written = write_synced(&temp, &json).and_then(|()| fs::rename(&temp, path));
    if let Err(e) = written {
        // The temp file is garbage now; failing to remove it changes nothing.
        drop(fs::remove_file(&temp));
        return Err(write_error(e));
    }
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(write_error)
}

fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = File::create(path)?;
    file.write_all(bytes)?;
    file.write_all(b"\n")?;
    file.sync_all()
}

pub mod etcd;

#[cfg(test)]
mod tests;
