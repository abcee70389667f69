//! The answer store: model answers (classifier scores, quality scores) kept across runs in an
//! embedded database, `<output>/state/answers.redb` (process p > 0 of a timely cluster:
//! `answers-pN.redb`, as the image index), one table per answer kind. A key is an answer's
//! content key — a hash of the model's digest, the input's content digest and every parameter
//! that decides the answer — and the value is the answer in bincode. Entries are written one
//! transaction per model call's batch.
//!
//! The store is a cache, never a dead end: a database that cannot be opened (corrupt, an
//! unknown format) is moved aside to `answers.redb.broken` and rebuilt empty, with a warning; a
//! database another process holds open, or a failed read or write, means answers are computed
//! (and, for a failed write, not kept) as if the store were not there.

use crate::record::Digest;
use redb::{Database, ReadableDatabase, TableDefinition, TableError};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// The answers of one output folder (of one process).
pub struct AnswerStore {
    path: PathBuf,
    db: Option<Database>,
    /// Whether a failed read or write was reported already (once per run is enough).
    warned: AtomicBool,
}

impl AnswerStore {
    /// Opens (or creates, or rebuilds) the store of `output` for `process`; see the module
    /// header for what happens when that fails.
    pub fn open(output: &Path, process: usize) -> AnswerStore {
        let path = match process {
            0 => output.join("state/answers.redb"),
            p => output.join(format!("state/answers-p{p}.redb")),
        };
        let db = open_or_rebuild(&path);
        AnswerStore {
            path,
            db,
            warned: AtomicBool::new(false),
        }
    }

    /// A store that keeps nothing (every lookup misses).
    pub fn disabled() -> AnswerStore {
        AnswerStore {
            path: PathBuf::new(),
            db: None,
            warned: AtomicBool::new(true),
        }
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether answers are kept (the database is open).
    pub fn is_open(&self) -> bool {
        self.db.is_some()
    }

    /// The stored bytes for each key of `table`, in order (`None`: not stored).
    pub fn get_many(&self, table: &str, keys: &[Digest]) -> Vec<Option<Vec<u8>>> {
        let misses = || vec![None; keys.len()];
        let Some(db) = &self.db else {
            return misses();
        };
        let found = (|| -> Result<Vec<Option<Vec<u8>>>, redb::Error> {
            let txn = db.begin_read()?;
            let table = match txn.open_table(definition(table)) {
                Ok(table) => table,
                Err(TableError::TableDoesNotExist(_)) => return Ok(misses()),
                Err(e) => return Err(e.into()),
            };
            keys.iter()
                .map(|key| Ok(table.get(key.0.as_slice())?.map(|v| v.value().to_vec())))
                .collect()
        })();
        found.unwrap_or_else(|e| {
            self.warn(&e);
            misses()
        })
    }

    /// Stores `entries` in `table`, in one transaction.
    pub fn put_many(&self, table: &str, entries: &[(Digest, Vec<u8>)]) {
        let (Some(db), false) = (&self.db, entries.is_empty()) else {
            return;
        };
        let stored = (|| -> Result<(), redb::Error> {
            let txn = db.begin_write()?;
            {
                let mut table = txn.open_table(definition(table))?;
                for (key, value) in entries {
                    table.insert(key.0.as_slice(), value.as_slice())?;
                }
            }
            txn.commit()?;
            Ok(())
        })();
        if let Err(e) = stored {
            self.warn(&e);
        }
    }

    fn warn(&self, error: &redb::Error) {
        if !self.warned.swap(true, Ordering::Relaxed) {
            eprintln!(
                "warning: {}: {error}; answers are computed again and may not be kept",
                self.path.display()
            );
        }
    }
}

fn definition(table: &str) -> TableDefinition<'_, &'static [u8], &'static [u8]> {
    TableDefinition::new(table)
}

/// `Database::create`, with a panic inside redb (it asserts on some truncated files) turned
/// into a corruption error: a damaged file is bad input, and bad input never panics a run.
pub(crate) fn create_database(path: &Path) -> Result<Database, redb::Error> {
    std::panic::catch_unwind(|| Database::create(path).map_err(redb::Error::from)).unwrap_or_else(
        |panic| {
            let why = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "redb panicked".into());
            Err(redb::Error::Corrupted(why))
        },
    )
}

/// Opens the database, moving a broken one aside and starting empty; `None` (with a warning)
/// when no database can be had.
fn open_or_rebuild(path: &Path) -> Option<Database> {
    let shown = path.display();
    if let Some(folder) = path.parent() {
        if let Err(e) = std::fs::create_dir_all(folder) {
            eprintln!("warning: {shown}: {e}; model answers are not kept across runs");
            return None;
        }
    }
    match create_database(path) {
        Ok(db) => return Some(db),
        Err(redb::Error::DatabaseAlreadyOpen) => {
            eprintln!(
                "warning: {shown} is in use by another process; model answers are not kept \
                 across runs by this one"
            );
            return None;
        }
        Err(e) => {
            let aside = path.with_extension("redb.broken");
            eprintln!(
                "warning: {shown}: cannot open the answer store ({e}); moved to {} and \
                 rebuilt empty",
                aside.display()
            );
            if let Err(e) = std::fs::rename(path, &aside) {
                eprintln!("warning: {shown}: cannot move it aside: {e}");
                let _ = std::fs::remove_file(path);
            }
        }
    }
    create_database(path)
        .inspect_err(|e| eprintln!("warning: {shown}: {e}; model answers are not kept across runs"))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_persist_across_reopens_per_table() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (Digest::of(b"a"), Digest::of(b"b"));
        {
            let store = AnswerStore::open(dir.path(), 0);
            assert!(store.is_open());
            assert_eq!(store.get_many("classify", &[a]), vec![None]);
            store.put_many("classify", &[(a, b"one".to_vec())]);
        }
        let store = AnswerStore::open(dir.path(), 0);
        assert_eq!(
            store.get_many("classify", &[b, a]),
            vec![None, Some(b"one".to_vec())]
        );
        // Tables are separate.
        assert_eq!(store.get_many("quality", &[a]), vec![None]);
        // Another process of a cluster keeps its own file.
        assert_eq!(
            AnswerStore::open(dir.path(), 1).get_many("classify", &[a]),
            vec![None]
        );
        assert!(dir.path().join("state/answers-p1.redb").exists());
        assert_eq!(
            AnswerStore::disabled().get_many("classify", &[a]),
            vec![None]
        );
    }

    #[test]
    fn a_broken_database_is_moved_aside_and_rebuilt_empty() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("state/answers.redb");
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, vec![0x5a; 10_000]).unwrap();
        let store = AnswerStore::open(dir.path(), 0);
        assert!(store.is_open());
        assert!(dir.path().join("state/answers.redb.broken").exists());
        let key = Digest::of(b"k");
        assert_eq!(store.get_many("classify", &[key]), vec![None]);
        store.put_many("classify", &[(key, b"v".to_vec())]);
        assert_eq!(
            store.get_many("classify", &[key]),
            vec![Some(b"v".to_vec())]
        );
    }

    #[test]
    fn a_database_held_by_another_handle_runs_without_it() {
        let dir = tempfile::tempdir().unwrap();
        let first = AnswerStore::open(dir.path(), 0);
        let second = AnswerStore::open(dir.path(), 0);
        assert!(first.is_open());
        assert!(!second.is_open(), "never rebuilds a database in use");
        let key = Digest::of(b"k");
        second.put_many("classify", &[(key, b"v".to_vec())]);
        assert_eq!(first.get_many("classify", &[key]), vec![None]);
    }
}
