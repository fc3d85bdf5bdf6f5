//! `switchyard-control-plane import-apache FILE...`: Apache httpd's mod_proxy
//! configuration read and turned into a Switchyard config.
//!
//! # Layout
//! - [`lexer`]: logical lines (comments, `\` continuations) and words (quotes).
//! - [`parser`]: one file's directives tree, each node with its file and line.
//! - [`include`](mod@include): the files read, `Include`/`IncludeOptional` expanded, cycles refused.
//! - [`translate`]: the tree turned into a [`Config`] and the warnings for
//!   everything that was not translated; [`pattern`] says when a regex is a prefix.
//! - [`output`]: the JSON, `--apply` through the REST API, and `--dry-run`'s diff.
//!
//! A config that Apache itself would refuse is refused ([`ImportError`]:
//! file, line, reason; exit code 2) and nothing is printed or applied.

pub mod include;
pub mod lexer;
pub mod output;
pub mod parser;
pub mod pattern;
pub mod translate;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use switchyard_shared::Config;

/// Where a directive was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: Arc<str>,
    /// 1-based.
    pub line: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// A config Apache would refuse, or that cannot be read: where and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ImportError {
    /// The file and line, or just the file (`line` 0), or nothing for the
    /// config as a whole.
    pub at: Option<Location>,
    pub reason: String,
}

impl fmt::Display for ImportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.at {
            Some(at) if at.line > 0 => write!(f, "{at}: {}", self.reason),
            Some(at) => write!(f, "{}: {}", at.file, self.reason),
            None => f.write_str(&self.reason),
        }
    }
}

impl ImportError {
    pub fn new(at: &Location, reason: impl Into<String>) -> Self {
        ImportError {
            at: Some(at.clone()),
            reason: reason.into(),
        }
    }

    /// An error about a whole file (it cannot be read).
    pub fn file(file: &Arc<str>, reason: impl Into<String>) -> Self {
        ImportError {
            at: Some(Location {
                file: Arc::clone(file),
                line: 0,
            }),
            reason: reason.into(),
        }
    }
}

/// Something in the input that the output does not carry, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub at: Location,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: warning: {}", self.at, self.message)
    }
}

/// The result of an import: a config that passed validation, and the warnings.
#[derive(Debug, Clone)]
pub struct Imported {
    pub config: Config,
    pub warnings: Vec<Warning>,
}

/// Reads `files` (and what they include) and translates them.
pub fn import(files: &[PathBuf], server_root: Option<&Path>) -> Result<Imported, ImportError> {
    let nodes = include::load(files, server_root)?;
    translate::translate(&nodes)
}

/// Translates one configuration text without reading any file (an `Include`
/// is left unread, with a warning). For tests and the fuzz target.
pub fn import_str(text: &str, file: &str) -> Result<Imported, ImportError> {
    let nodes = parser::parse(text, &Arc::from(file))?;
    translate::translate(&nodes)
}

#[cfg(test)]
mod tests;
