//! What can go wrong keeping things on disk. Every variant names the file or folder it is
//! about; the messages are the ones the engine has always printed.

use super::manifest::TableKind;
use std::path::{Path, PathBuf};

/// An error of the store: atomic writes, the run state, manifests, the image store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A file or folder could not be read, written, renamed or synced.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A JSON file of the store (the run state) does not parse.
    #[error("{path}: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    // --- The image store's index (redb) ---------------------------------------------------
    /// The index database could not be opened or created.
    #[error("{path}: cannot open image index: {source}")]
    OpenIndex {
        path: PathBuf,
        #[source]
        source: redb::Error,
    },
    /// The index database is held by a running discl, so `gc` removes nothing.
    #[error("{path}: in use by a running discl; stop it before removing anything")]
    InUse { path: PathBuf },
    /// A transaction, table or lookup of the index database failed.
    #[error("{path}: {source}")]
    Index {
        path: PathBuf,
        #[source]
        source: redb::Error,
    },
    /// An index entry that does not decode.
    #[error("corrupt image index entry: {0}")]
    IndexEntry(#[source] bincode::Error),

    // --- Manifests ------------------------------------------------------------------------
    /// A snapshot asked for with inputs, kinds and tables that do not line up.
    #[error("{folder}: {inputs} inputs, {kinds} kinds and {tables} tables")]
    SnapshotShape {
        folder: PathBuf,
        inputs: usize,
        kinds: usize,
        tables: usize,
    },
    /// A sink input carries records of another kind than its table holds.
    #[error("{folder}: input `{input}` carries {kind} records, not {found}")]
    WrongKind {
        folder: PathBuf,
        input: String,
        kind: TableKind,
        found: TableKind,
    },
    /// A row of another kind in a table being encoded.
    #[error("a {row} row in a table of {table} records")]
    WrongRow { row: TableKind, table: TableKind },
    /// The Parquet table of a sink input could not be encoded.
    #[error("input `{input}`: {source}")]
    Table {
        input: String,
        #[source]
        source: Box<StoreError>,
    },
    /// The Parquet writer failed.
    #[error(transparent)]
    Parquet(#[from] parquet::errors::ParquetError),

    // --- Contact sheets -------------------------------------------------------------------
    /// An image of a contact sheet could not be read.
    #[error("{path}: {source}")]
    Image {
        path: PathBuf,
        #[source]
        source: image::ImageError,
    },
    /// A contact sheet could not be encoded as PNG.
    #[error("{0}")]
    Encode(#[source] image::ImageError),
}

impl StoreError {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        StoreError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// An error of the index database at `path`.
    pub fn index(path: &Path, source: impl Into<redb::Error>) -> Self {
        StoreError::Index {
            path: path.to_path_buf(),
            source: source.into(),
        }
    }
}

/// For callers that still report errors as text (the pipeline and the operators): `?` turns a
/// store error into its message.
impl From<StoreError> for String {
    fn from(error: StoreError) -> String {
        error.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::atomic::write_file;
    use crate::store::state::RunState;

    #[test]
    fn a_write_under_a_file_is_an_io_error_naming_the_target() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("a-file");
        std::fs::write(&blocker, b"not a folder").unwrap();
        let target = blocker.join("state/run.json");
        match write_file(&target, b"{}").unwrap_err() {
            StoreError::Io { path, .. } => assert_eq!(path, target),
            other => panic!("expected Io, got {other:?}"),
        }
    }

    #[test]
    fn a_corrupt_run_state_is_a_json_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("state/run.json");
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, "{").unwrap();
        let err = RunState::load(dir.path()).unwrap_err();
        assert!(
            matches!(&err, StoreError::Json { path, .. } if *path == file),
            "{err:?}"
        );
        assert!(err
            .to_string()
            .starts_with(&format!("{}: ", file.display())));
    }
}
