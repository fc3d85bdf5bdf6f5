//! Reading the files: each parsed into its tree, with every `Include` and
//! `IncludeOptional` replaced by the trees of the files it names (globs
//! expanded in name order, as Apache does; a relative path is taken from
//! `ServerRoot`, or without one from the including file's folder). A file that
//! includes itself, directly or not, is refused.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use switchyard_shared::text::quoted;

use super::parser::{self, Node};
use super::{ImportError, Location};

/// The most files one import reads (a glob gone wrong is refused, not followed).
pub const MAX_FILES: usize = 1000;
/// The deepest chain of includes followed.
pub const MAX_INCLUDE_DEPTH: usize = 32;
/// The largest file read.
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// What is read: where relative includes start and the files open now.
struct Loader {
    server_root: Option<PathBuf>,
    /// The files being read, outermost first (canonical paths), to find cycles.
    open: Vec<PathBuf>,
    files_read: usize,
}

/// Reads `files` (in order) and everything they include.
pub fn load(files: &[PathBuf], server_root: Option<&Path>) -> Result<Vec<Node>, ImportError> {
    let mut loader = Loader {
        server_root: server_root.map(Path::to_path_buf),
        open: Vec::new(),
        files_read: 0,
    };
    let mut out = Vec::new();
    for file in files {
        out.extend(loader.file(file, None)?);
    }
    Ok(out)
}

impl Loader {
    fn file(&mut self, path: &Path, from: Option<&Location>) -> Result<Vec<Node>, ImportError> {
        let shown: Arc<str> = Arc::from(path.display().to_string());
        let cannot = |why: String| match from {
            Some(at) => ImportError::new(at, why),
            None => ImportError::file(&shown, why),
        };
        let canonical = path
            .canonicalize()
            .map_err(|e| cannot(format!("cannot read {}: {e}", quoted(&shown))))?;
        if let Some(first) = self.open.iter().position(|p| *p == canonical) {
            let chain = self.open[first..]
                .iter()
                .chain(std::iter::once(&canonical))
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(" -> ");
            return Err(cannot(format!("include cycle: {chain}")));
        }
        if self.open.len() >= MAX_INCLUDE_DEPTH {
            return Err(cannot(format!(
                "includes nested more than {MAX_INCLUDE_DEPTH} deep"
            )));
        }
        self.files_read += 1;
        if self.files_read > MAX_FILES {
            return Err(cannot(format!("more than {MAX_FILES} files included")));
        }
        let size = std::fs::metadata(&canonical)
            .map_err(|e| cannot(format!("cannot read {}: {e}", quoted(&shown))))?
            .len();
        if size > MAX_FILE_BYTES {
            return Err(cannot(format!(
                "{} is larger than {MAX_FILE_BYTES} bytes",
                quoted(&shown)
            )));
        }
        let bytes = std::fs::read(&canonical)
            .map_err(|e| cannot(format!("cannot read {}: {e}", quoted(&shown))))?;
        let text = String::from_utf8_lossy(&bytes);
        let nodes = parser::parse(&text, &shown)?;
        self.open.push(canonical);
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let expanded = self.expand(nodes, &dir);
        self.open.pop();
        expanded
    }

    /// Replaces the includes among `nodes` (at any depth) by what they name.
    fn expand(&mut self, nodes: Vec<Node>, dir: &Path) -> Result<Vec<Node>, ImportError> {
        let mut out = Vec::with_capacity(nodes.len());
        for mut node in nodes {
            if node.is("ServerRoot") {
                if let [root] = node.args.as_slice() {
                    self.server_root = Some(PathBuf::from(root));
                }
                out.push(node);
                continue;
            }
            let optional = node.is("IncludeOptional");
            if optional || node.is("Include") {
                let [pattern] = node.args.as_slice() else {
                    return Err(ImportError::new(
                        &node.at,
                        format!("{} takes one path", node.name),
                    ));
                };
                for path in self.resolve(pattern, dir, optional, &node.at)? {
                    out.extend(self.file(&path, Some(&node.at))?);
                }
                continue;
            }
            if let Some(children) = node.children.take() {
                node.children = Some(self.expand(children, dir)?);
            }
            out.push(node);
        }
        Ok(out)
    }

    /// The files an include names, in order.
    fn resolve(
        &self,
        pattern: &str,
        dir: &Path,
        optional: bool,
        at: &Location,
    ) -> Result<Vec<PathBuf>, ImportError> {
        let path = Path::new(pattern);
        let full = if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.server_root.as_deref().unwrap_or(dir).join(path)
        };
        if pattern.contains(['*', '?', '[']) {
            let text = full.to_string_lossy();
            let paths = glob::glob(&text).map_err(|e| {
                ImportError::new(at, format!("include pattern {}: {e}", quoted(pattern)))
            })?;
            let mut files: Vec<PathBuf> = paths
                .filter_map(Result::ok)
                .filter(|p| p.is_file())
                .collect();
            files.sort();
            if files.is_empty() && !optional {
                return Err(ImportError::new(
                    at,
                    format!(
                        "no file matches the wildcard {} (IncludeOptional would allow that)",
                        quoted(&text)
                    ),
                ));
            }
            return Ok(files);
        }
        if full.is_dir() {
            let entries = std::fs::read_dir(&full).map_err(|e| {
                ImportError::new(at, format!("cannot read folder {}: {e}", quoted(pattern)))
            })?;
            let mut files: Vec<PathBuf> = entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect();
            files.sort();
            return Ok(files);
        }
        if !full.exists() {
            if optional {
                return Ok(Vec::new());
            }
            return Err(ImportError::new(
                at,
                format!(
                    "included file {} does not exist",
                    quoted(&full.display().to_string())
                ),
            ));
        }
        Ok(vec![full])
    }
}
