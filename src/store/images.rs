//! The content-addressed store of synthetic images: PNG files under `<output>/synthetic/`
//! named by their content key (a hash of everything that determines the image), and an
//! index in an embedded database (`<output>/state/synthetic.redb`) from content key to file.
//! Files are renamed into place (never torn) before their index entries are committed, one
//! transaction per batch; a hit is checked against the digest the index recorded, so an
//! interrupted run resumes with every finished image and regenerates any that a crash lost.
//! The index is derivable from the files: a missing or empty one is filled from them, and one
//! that does not open (a crash inside its creation) is moved aside to `synthetic.redb.broken`
//! and rebuilt from them, with a message; never a dead end. A file whose entry a crash lost is
//! taken back when its key is asked for.

use super::atomic::write_file_with;
use super::error::StoreError;
use super::image_scan;
use crate::record::Digest;
use redb::{Database, ReadableDatabase, ReadableTableMetadata, TableDefinition};
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

/// Opens (or creates) the index database and its table.
fn open_index(path: &Path) -> Result<Database, redb::Error> {
    let db = super::answers::create_database(path)?;
    let txn = db.begin_write()?;
    txn.open_table(IMAGES)?;
    txn.commit()?;
    Ok(db)
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
        let existed = index.exists();
        let db = match open_index(&index) {
            Ok(db) => db,
            // Another process holds it: never rebuild a database in use.
            Err(e @ redb::Error::DatabaseAlreadyOpen) => {
                return Err(StoreError::OpenIndex {
                    path: index,
                    source: e,
                })
            }
            Err(e) => {
                let aside = index.with_extension("redb.broken");
                eprintln!(
                    "warning: {}: cannot open the image index ({e}); moved to {} and rebuilt \
                     from the images under synthetic/",
                    index.display(),
                    aside.display()
                );
                std::fs::rename(&index, &aside).map_err(|e| StoreError::io(&index, e))?;
                open_index(&index).map_err(|e| StoreError::OpenIndex {
                    path: index.clone(),
                    source: e,
                })?
            }
        };
        let store = ImageStore {
            root: output.to_path_buf(),
            index,
            db,
        };
        if !existed || store.is_empty()? {
            let found = image_scan::stored_images(output);
            if !found.is_empty() {
                store.insert(&found)?;
                eprintln!(
                    "note: {}: rebuilt the image index from {} images under synthetic/",
                    store.index.display(),
                    found.len()
                );
            }
        }
        Ok(store)
    }

    /// Whether the index lists no image.
    fn is_empty(&self) -> Result<bool, StoreError> {
        let fail = |e: redb::Error| StoreError::index(&self.index, e);
        let txn = self.db.begin_read().map_err(|e| fail(e.into()))?;
        let table = txn.open_table(IMAGES).map_err(|e| fail(e.into()))?;
        table.is_empty().map_err(|e| fail(e.into()))
    }

    /// Adds index entries in one transaction.
    fn insert(&self, entries: &[(Digest, StoredImage)]) -> Result<(), StoreError> {
        let fail = |e: redb::Error| StoreError::index(&self.index, e);
        let txn = self.db.begin_write().map_err(|e| fail(e.into()))?;
        {
            let mut table = txn.open_table(IMAGES).map_err(|e| fail(e.into()))?;
            for (key, entry) in entries {
                let bytes = bincode::serialize(entry).expect("serialisable");
                table
                    .insert(key.0.as_slice(), bytes.as_slice())
                    .map_err(|e| fail(e.into()))?;
            }
        }
        txn.commit().map_err(|e| fail(e.into()))
    }

    /// The stored image for a content key, if it exists and its file is still there.
    pub fn get(&self, key: &Digest) -> Result<Option<StoredImage>, StoreError> {
        let fail = |e: redb::Error| StoreError::index(&self.index, e);
        let txn = self.db.begin_read().map_err(|e| fail(e.into()))?;
        let table = txn.open_table(IMAGES).map_err(|e| fail(e.into()))?;
        let Some(value) = table.get(key.0.as_slice()).map_err(|e| fail(e.into()))? else {
            // Not indexed, but a crash may have lost only the entry: take the file back.
            let Some(stored) = image_scan::stored_image(&self.root, key) else {
                return Ok(None);
            };
            self.insert(&[(*key, stored.clone())])?;
            return Ok(Some(stored));
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
        let mut stored = Vec::with_capacity(images.len());
        for (key, png) in images {
            let file = image_scan::image_file(key);
            write_file_with(&self.root.join(&file), png, false)?;
            stored.push(StoredImage {
                file,
                digest: Digest::of(png),
            });
        }
        let entries: Vec<(Digest, StoredImage)> = images
            .iter()
            .map(|(key, _)| *key)
            .zip(stored.iter().cloned())
            .collect();
        self.insert(&entries)?;
        Ok(stored)
    }

    /// Drops the index entries of images whose files were removed (`discl gc`), in one
    /// transaction.
    pub fn forget(&self, keys: &[Digest]) -> Result<(), StoreError> {
        let fail = |e: redb::Error| StoreError::index(&self.index, e);
        let txn = self.db.begin_write().map_err(|e| fail(e.into()))?;
        {
            let mut table = txn.open_table(IMAGES).map_err(|e| fail(e.into()))?;
            for key in keys {
                table.remove(key.0.as_slice()).map_err(|e| fail(e.into()))?;
            }
        }
        txn.commit().map_err(|e| fail(e.into()))
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

    fn png(value: u8) -> Vec<u8> {
        let mut bytes = Vec::new();
        image::GrayImage::from_pixel(2, 2, image::Luma([value]))
            .write_to(
                &mut std::io::Cursor::new(&mut bytes),
                image::ImageFormat::Png,
            )
            .unwrap();
        bytes
    }

    #[test]
    fn a_missing_truncated_or_corrupt_index_is_rebuilt_from_the_images() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, torn) = (Digest::of(b"a"), Digest::of(b"b"), Digest::of(b"torn"));
        let stored = ImageStore::open(dir.path(), 0)
            .unwrap()
            .put_many(&[(a, png(1)), (b, png(2)), (torn, png(3))])
            .unwrap();
        // A torn file is not taken back; neither are files the store did not name.
        std::fs::write(dir.path().join(&stored[2].file), b"\x89PNG torn").unwrap();
        let junk = dir.path().join("synthetic/00");
        std::fs::create_dir_all(&junk).unwrap();
        std::fs::write(junk.join("notes.png"), png(4)).unwrap();
        std::fs::write(junk.join(format!("{}.png", a.to_hex())), png(5)).unwrap();
        let index = dir.path().join("state/synthetic.redb");
        let damage: [&dyn Fn(); 3] = [
            &|| std::fs::write(&index, vec![0x5a; 10_000]).unwrap(),
            &|| std::fs::remove_file(&index).unwrap(),
            &|| std::fs::File::create(&index).unwrap().set_len(0).unwrap(),
        ];
        for damage in damage {
            damage();
            let store = ImageStore::open(dir.path(), 0).unwrap();
            assert_eq!(store.get(&a).unwrap().as_ref(), Some(&stored[0]));
            assert_eq!(store.get(&b).unwrap().as_ref(), Some(&stored[1]));
            assert_eq!(store.get(&torn).unwrap(), None);
        }
        assert!(dir.path().join("state/synthetic.redb.broken").exists());
        // A file whose index entry was lost (a kill between the rename and the commit).
        let lost = Digest::of(b"lost");
        let file = dir.path().join(image_scan::image_file(&lost));
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, png(6)).unwrap();
        let store = ImageStore::open(dir.path(), 0).unwrap();
        assert_eq!(
            store.get(&lost).unwrap().unwrap().digest,
            Digest::of(&png(6))
        );
    }
}
