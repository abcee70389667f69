//! The content-addressed store of synthetic images: PNG files under `<output>/synthetic/`
//! named by their content key (a hash of everything that determines the image), and an
//! index in an embedded database (`<output>/state/synthetic.redb`) from content key to file.
//! Files are renamed into place (never torn) before their index entries are committed, one
//! transaction per batch; a hit is checked against the digest the index recorded, so an
//! interrupted run resumes with every finished image and regenerates any that a crash lost.

use super::atomic::write_file_with;
use super::error::StoreError;
use crate::record::Digest;
use redb::{Database, ReadableDatabase, TableDefinition};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

const IMAGES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("synthetic_images");

/// What the index holds for one image.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredImage {
    /// Path relative to the output folder.
    pub file: String,
    pub digest: Digest,
}

/// The image store of one output folder.
pub struct ImageStore {
    root: PathBuf,
    /// The index database's file, for messages.
    index: PathBuf,
    db: Database,
}

impl ImageStore {
    /// Opens (or creates) the store under `output`. Each process of a timely cluster keeps
    /// its own index (the database is locked by one process), over the shared image folder.
    pub fn open(output: &Path, process: usize) -> Result<ImageStore, StoreError> {
        let index = match process {
            0 => output.join("state/synthetic.redb"),
            p => output.join(format!("state/synthetic-p{p}.redb")),
        };
        std::fs::create_dir_all(index.parent().expect("state folder"))
            .map_err(|e| StoreError::io(&index, e))?;
        let db = Database::create(&index).map_err(|e| StoreError::OpenIndex {
            path: index.clone(),
            source: e.into(),
        })?;
        let txn = db.begin_write().map_err(|e| StoreError::index(&index, e))?;
        txn.open_table(IMAGES)
            .map_err(|e| StoreError::index(&index, e))?;
        txn.commit().map_err(|e| StoreError::index(&index, e))?;
        Ok(ImageStore {
            root: output.to_path_buf(),
            index,
            db,
        })
    }

    /// The stored image for a content key, if it exists and its file is still there.
    pub fn get(&self, key: &Digest) -> Result<Option<StoredImage>, StoreError> {
        let fail = |e: redb::Error| StoreError::index(&self.index, e);
        let txn = self.db.begin_read().map_err(|e| fail(e.into()))?;
        let table = txn.open_table(IMAGES).map_err(|e| fail(e.into()))?;
        let Some(value) = table.get(key.0.as_slice()).map_err(|e| fail(e.into()))? else {
            return Ok(None);
        };
        let stored: StoredImage =
            bincode::deserialize(value.value()).map_err(StoreError::IndexEntry)?;
        let intact = std::fs::read(self.root.join(&stored.file))
            .is_ok_and(|bytes| Digest::of(&bytes) == stored.digest);
        Ok(intact.then_some(stored))
    }

    /// Writes `png` for `key` (file first, then the index entry) and returns the entry.
    pub fn put(&self, key: &Digest, png: &[u8]) -> Result<StoredImage, StoreError> {
        Ok(self.put_many(&[(*key, png.to_vec())])?.remove(0))
    }

    /// Writes several images: every file first, then their index entries in one transaction.
    pub fn put_many(&self, images: &[(Digest, Vec<u8>)]) -> Result<Vec<StoredImage>, StoreError> {
        let fail = |e: redb::Error| StoreError::index(&self.index, e);
        let mut stored = Vec::with_capacity(images.len());
        for (key, png) in images {
            let hex = key.to_hex();
            let file = format!("synthetic/{}/{hex}.png", &hex[..2]);
            write_file_with(&self.root.join(&file), png, false)?;
            stored.push(StoredImage {
                file,
                digest: Digest::of(png),
            });
        }
        let txn = self.db.begin_write().map_err(|e| fail(e.into()))?;
        {
            let mut table = txn.open_table(IMAGES).map_err(|e| fail(e.into()))?;
            for ((key, _), entry) in images.iter().zip(&stored) {
                let bytes = bincode::serialize(entry).expect("serialisable");
                table
                    .insert(key.0.as_slice(), bytes.as_slice())
                    .map_err(|e| fail(e.into()))?;
            }
        }
        txn.commit().map_err(|e| fail(e.into()))?;
        Ok(stored)
    }

    /// The absolute path of a stored image.
    pub fn path(&self, stored: &StoredImage) -> PathBuf {
        self.root.join(&stored.file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_and_finds_images_across_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let key = Digest::of(b"content key");
        {
            let store = ImageStore::open(dir.path(), 0).unwrap();
            assert_eq!(store.get(&key).unwrap(), None);
            let stored = store.put(&key, b"png bytes").unwrap();
            assert_eq!(std::fs::read(store.path(&stored)).unwrap(), b"png bytes");
        }
        let store = ImageStore::open(dir.path(), 0).unwrap();
        let found = store.get(&key).unwrap().unwrap();
        assert_eq!(found.digest, Digest::of(b"png bytes"));
        // An index entry whose file was damaged or is gone is not a hit.
        std::fs::write(store.path(&found), b"png byte").unwrap();
        assert_eq!(store.get(&key).unwrap(), None);
        std::fs::remove_file(store.path(&found)).unwrap();
        assert_eq!(store.get(&key).unwrap(), None);
        let many = store
            .put_many(&[
                (Digest::of(b"a"), b"1".to_vec()),
                (Digest::of(b"b"), b"2".to_vec()),
            ])
            .unwrap();
        assert_eq!(many.len(), 2);
        assert_eq!(store.get(&Digest::of(b"b")).unwrap(), Some(many[1].clone()));
    }
}
