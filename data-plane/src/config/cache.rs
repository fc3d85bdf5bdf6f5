//! The data plane's cache of its last good snapshot, so that a replica that
//! restarts while the control plane is down still serves.
//!
//! Writes are durable and atomic (temporary file, fsync, rename, fsync of the
//! directory); a background writer keeps only the latest snapshot to write.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use switchyard_shared::Snapshot;
use tokio::sync::watch;
use tracing::{debug, warn};

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cannot read cache file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cache file {path} is not a valid snapshot: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("cannot write cache file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Reads the cached snapshot; `Ok(None)` when there is no cache file yet.
pub fn load(path: &Path) -> Result<Option<Snapshot>, CacheError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(CacheError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| CacheError::Parse {
            path: path.to_owned(),
            source,
        })
}

/// Writes `snapshot` to `path` durably: readers see the old file or the new one, never half.
pub fn save(path: &Path, snapshot: &Snapshot) -> Result<(), CacheError> {
    let error = |source| CacheError::Write {
        path: path.to_owned(),
        source,
    };
    let json = serde_json::to_vec(snapshot).map_err(|e| error(std::io::Error::other(e)))?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
    let mut file = std::fs::File::create(&tmp).map_err(error)?;
    file.write_all(&json).map_err(error)?;
    file.sync_all().map_err(error)?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(error)?;
    std::fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(error)?;
    Ok(())
}

/// A background writer of the latest applied snapshot.
#[derive(Debug, Clone)]
pub struct CacheWriter {
    latest: Arc<watch::Sender<Option<Arc<Snapshot>>>>,
}

impl CacheWriter {
    /// Starts the writer task; it ends when every `CacheWriter` is dropped.
    pub fn spawn(path: PathBuf) -> Self {
        let (latest, mut receiver) = watch::channel(None::<Arc<Snapshot>>);
        tokio::spawn(async move {
            while receiver.changed().await.is_ok() {
                let Some(snapshot) = receiver.borrow_and_update().clone() else {
                    continue;
                };
                let path = path.clone();
                let written = tokio::task::spawn_blocking(move || {
                    save(&path, &snapshot).map(|()| snapshot.version)
                })
                .await;
                match written {
                    Ok(Ok(version)) => debug!(version, "Cached snapshot"),
                    Ok(Err(error)) => warn!(%error, "Could not cache the snapshot"),
                    Err(error) => warn!(%error, "Cache writer failed"),
                }
            }
        });
        CacheWriter {
            latest: Arc::new(latest),
        }
    }

    /// Queues `snapshot` to be written; a newer one replaces it if not yet written.
    pub fn store(&self, snapshot: Arc<Snapshot>) {
        self.latest.send_replace(Some(snapshot));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_shared::{Cluster, Config};

    #[test]
    fn round_trip_and_missing_and_corrupt_files() {
        let dir = std::env::temp_dir().join(format!("sy-cache-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("cache.json");
        assert!(load(&path).unwrap().is_none());
        let snapshot = Snapshot::new(
            4,
            "s",
            Config {
                clusters: vec![Cluster::new("c")],
                routes: vec![],
            },
        );
        save(&path, &snapshot).unwrap();
        assert_eq!(load(&path).unwrap(), Some(snapshot));
        std::fs::write(&path, b"{not json").unwrap();
        assert!(matches!(load(&path), Err(CacheError::Parse { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
