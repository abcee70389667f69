//! The digest of a diffusion model folder: what the engine reads of it — the files at its top
//! and in the component folders (`COMPONENTS`), but documentation — path and bytes, in sorted
//! order. Other folders (PyTorch weights in `torch/`, a safety checker) change nothing it
//! computes, so they are neither read nor part of any key. A Stable Diffusion export is
//! gigabytes, so the digest is cached against each file's identity (size, modification time
//! and, on Unix, device, inode and change time): in process memory and, when
//! `DISCL_DIGEST_CACHE` names a file, on disk there (replaced atomically), so separate runs
//! skip the hashing too. Nothing is ever written into a model
//! folder, nor outside the output folder unless that variable asks for it.

use crate::record::Digest;
use crate::runtime::error::RuntimeError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime};

/// A file modified this recently is not trusted to keep its stamp: a rewrite within the
/// file system's timestamp granularity would not change it (git's "racily clean" entries).
const SETTLE: Duration = Duration::from_secs(2);

/// What identifies one file's content without reading it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct FileStamp {
    /// Path relative to the folder.
    path: String,
    size: u64,
    /// Modification time: seconds and nanoseconds since the Unix epoch (negative before it).
    modified: (i64, u32),
    /// Unix device, inode and change time (which no tool sets back): a same-size file renamed
    /// into place, or rewritten with its old modification time restored, still differs.
    identity: (u64, u64, i64, i64),
}

/// A folder's digest and the stamps of the files it was computed from.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Cached {
    files: Vec<FileStamp>,
    digest: String,
}

/// The on-disk cache: canonical folder path → digest.
#[derive(Default, Serialize, Deserialize)]
struct CacheFile {
    folders: BTreeMap<String, Cached>,
}

/// Folder digests cached in memory and, when given a file, on disk.
pub struct FolderDigests {
    memory: Mutex<BTreeMap<PathBuf, Cached>>,
    file: Option<PathBuf>,
    files_hashed: AtomicUsize,
}

/// The digest of `folder`, through the process-wide cache (see the module header).
pub fn folder_digest(folder: &Path) -> Result<Digest, RuntimeError> {
    static CACHE: OnceLock<FolderDigests> = OnceLock::new();
    CACHE
        .get_or_init(|| FolderDigests::new(default_cache_file()))
        .digest(folder)
}

/// The on-disk cache file, only when `DISCL_DIGEST_CACHE` names one: a run writes nothing
/// outside its output folder unless asked to (DESIGN "Outputs"). Without it the cache lives in
/// the process, which covers `validate` then `start`, and every refresh of a watch run.
pub fn default_cache_file() -> Option<PathBuf> {
    std::env::var_os("DISCL_DIGEST_CACHE")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
}

impl FolderDigests {
    /// A cache kept in memory, and in `file` when given one.
    pub fn new(file: Option<PathBuf>) -> Self {
        FolderDigests {
            memory: Mutex::new(BTreeMap::new()),
            file,
            files_hashed: AtomicUsize::new(0),
        }
    }

    /// How many files this cache has read to hash them.
    pub fn files_hashed(&self) -> usize {
        self.files_hashed.load(Ordering::Relaxed)
    }

    /// The digest of `folder`, read from the cache when no file's stamp changed.
    pub fn digest(&self, folder: &Path) -> Result<Digest, RuntimeError> {
        let key = std::fs::canonicalize(folder).map_err(|e| RuntimeError::io(folder, e))?;
        let files = list(folder)?;
        let now = SystemTime::now();
        let stamps = stamps(&files)?;
        let known = |c: &Cached| {
            (c.files == stamps)
                .then(|| Digest::from_hex(&c.digest))
                .flatten()
        };
        if let Some(digest) = self
            .memory
            .lock()
            .expect("digest cache")
            .get(&key)
            .and_then(known)
        {
            return Ok(digest);
        }
        if let Some(digest) = self
            .load()
            .folders
            .get(&key.to_string_lossy().into_owned())
            .and_then(known)
        {
            self.remember(&key, stamps, digest, false);
            return Ok(digest);
        }
        let digest = self.hash(&files)?;
        // Cache only what was stable throughout: unchanged while read, and settled before.
        let settled = |s: &FileStamp| {
            let modified = SystemTime::UNIX_EPOCH + Duration::from_secs(s.modified.0.max(0) as u64);
            modified + SETTLE < now
        };
        if stamps.iter().all(settled) && self::stamps(&files)? == stamps {
            self.remember(&key, stamps, digest, true);
        }
        Ok(digest)
    }

    fn hash(&self, files: &[(PathBuf, String)]) -> Result<Digest, RuntimeError> {
        let mut hasher = blake3::Hasher::new();
        let mut buffer = Vec::with_capacity(HASH_PIECE as usize);
        for (file, relative) in files {
            self.files_hashed.fetch_add(1, Ordering::Relaxed);
            hasher.update(relative.as_bytes());
            hasher.update(&[0]);
            hash_file(&mut hasher, file, &mut buffer).map_err(|e| RuntimeError::io(file, e))?;
        }
        Ok(Digest(*hasher.finalize().as_bytes()))
    }

    fn load(&self) -> CacheFile {
        self.file
            .as_ref()
            .and_then(|f| std::fs::read(f).ok())
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
    }

    /// Keeps a digest in memory and, with `persist`, on disk (dropping folders that are gone).
    /// The cache is an optimisation: a cache file that cannot be written is left as it is.
    fn remember(&self, key: &Path, files: Vec<FileStamp>, digest: Digest, persist: bool) {
        let cached = Cached {
            files,
            digest: digest.to_hex(),
        };
        let mut memory = self.memory.lock().expect("digest cache");
        memory.insert(key.to_path_buf(), cached.clone());
        let Some(file) = self.file.as_ref().filter(|_| persist) else {
            return;
        };
        // Under the memory lock, so this process's writers do not undo each other.
        let mut disk = self.load();
        disk.folders.retain(|folder, _| Path::new(folder).is_dir());
        disk.folders
            .insert(key.to_string_lossy().into_owned(), cached);
        if let Ok(bytes) = serde_json::to_vec(&disk) {
            let _ = crate::store::atomic::write_file_with(file, &bytes, false);
        }
    }
}

/// Bytes of a file read, then hashed on every core, at a time.
const HASH_PIECE: u64 = 8 << 20;

/// Adds `file`'s bytes to `hasher` a piece at a time, each hashed on every core (the same digest
/// as hashed in one piece; read, not mapped, so the file's pages are not counted in this
/// process's memory while it loads its models).
fn hash_file(
    hasher: &mut blake3::Hasher,
    file: &Path,
    buffer: &mut Vec<u8>,
) -> std::io::Result<()> {
    use std::io::Read;
    let mut reader = std::fs::File::open(file)?;
    loop {
        buffer.clear();
        if (&mut reader).take(HASH_PIECE).read_to_end(buffer)? == 0 {
            return Ok(());
        }
        hasher.update_rayon(buffer);
    }
}

/// The folders of a model the engine reads (`model.rs`, `tokenizer.rs`).
const COMPONENTS: [&str; 6] = [
    "scheduler",
    "text_encoder",
    "tokenizer",
    "unet",
    "vae_decoder",
    "vae_encoder",
];

/// The files that make up a model, sorted as paths, with their names relative to `folder`:
/// those at its top and anywhere under its component folders; documentation does not change
/// what a model computes.
fn list(folder: &Path) -> Result<Vec<(PathBuf, String)>, RuntimeError> {
    fn walk(folder: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), RuntimeError> {
        let entries = std::fs::read_dir(dir).map_err(|e| RuntimeError::io(dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| RuntimeError::io(dir, e))?;
            let kind = entry
                .file_type()
                .map_err(|e| RuntimeError::io(&entry.path(), e))?;
            if kind.is_dir() {
                if dir != folder || COMPONENTS.iter().any(|c| entry.file_name() == *c) {
                    walk(folder, &entry.path(), out)?;
                }
            } else {
                out.push(entry.path());
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    walk(folder, folder, &mut files)?;
    files.sort();
    Ok(files
        .into_iter()
        .map(|file| {
            let relative = file
                .strip_prefix(folder)
                .unwrap_or(&file)
                .to_string_lossy()
                .into_owned();
            (file, relative)
        })
        .filter(|(_, relative)| !relative.ends_with(".md"))
        .collect())
}

fn stamps(files: &[(PathBuf, String)]) -> Result<Vec<FileStamp>, RuntimeError> {
    files
        .iter()
        .map(|(file, relative)| {
            let meta = std::fs::metadata(file).map_err(|e| RuntimeError::io(file, e))?;
            let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            let modified = match modified.duration_since(SystemTime::UNIX_EPOCH) {
                Ok(d) => (d.as_secs() as i64, d.subsec_nanos()),
                Err(e) => (-(e.duration().as_secs() as i64) - 1, 0),
            };
            #[cfg(unix)]
            let identity = {
                use std::os::unix::fs::MetadataExt;
                (meta.dev(), meta.ino(), meta.ctime(), meta.ctime_nsec())
            };
            #[cfg(not(unix))]
            let identity = (0, 0, 0, 0);
            Ok(FileStamp {
                path: relative.clone(),
                size: meta.len(),
                modified,
                identity,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const WEEK_AGO: Duration = Duration::from_secs(7 * 24 * 3600);

    fn write(path: &Path, bytes: &[u8], age: Duration) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
        let file = std::fs::File::options().write(true).open(path).unwrap();
        file.set_modified(SystemTime::now() - age).unwrap();
    }

    /// A small model folder; `weights` stands for the multi-gigabyte UNet.
    fn model_folder(dir: &Path, age: Duration) {
        write(&dir.join("model_index.json"), b"{}", age);
        write(&dir.join("README.md"), b"docs", age);
        write(&dir.join("unet/config.json"), br#"{"a": 1}"#, age);
        let weights: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        write(&dir.join("unet/model.onnx"), &weights, age);
        write(
            &dir.join("scheduler/scheduler_config.json"),
            b"{\"x\": 2}",
            age,
        );
    }

    #[test]
    fn the_digest_is_the_one_stores_were_keyed_by() {
        // Computed by the uncached digest this module replaced: memo keys stay valid.
        let dir = tempfile::tempdir().unwrap();
        model_folder(dir.path(), WEEK_AGO);
        let digest = FolderDigests::new(None).digest(dir.path()).unwrap();
        assert_eq!(
            digest.to_hex(),
            "aab78e9c6457f6fd40e5f4ff4af2ebac3693ca171bfebd7b7de3dd78519f23a0"
        );
    }

    #[test]
    fn a_file_hashed_in_pieces_has_its_digest_in_one() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("weights.bin");
        let bytes: Vec<u8> = (0..HASH_PIECE + 3).map(|i| (i * 31 % 253) as u8).collect();
        std::fs::write(&file, &bytes).unwrap();
        let mut hasher = blake3::Hasher::new();
        hash_file(&mut hasher, &file, &mut Vec::new()).unwrap();
        assert_eq!(hasher.finalize(), blake3::hash(&bytes));
    }

    #[test]
    fn folders_the_engine_does_not_read_are_not_part_of_the_model() {
        let dir = tempfile::tempdir().unwrap();
        model_folder(dir.path(), WEEK_AGO);
        let before = FolderDigests::new(None).digest(dir.path()).unwrap();
        write(&dir.path().join("torch/unet/weights.bin"), b"w", WEEK_AGO);
        write(
            &dir.path().join("safety_checker/model.onnx"),
            b"s",
            WEEK_AGO,
        );
        let cache = FolderDigests::new(None);
        assert_eq!(cache.digest(dir.path()).unwrap(), before);
        assert_eq!(
            cache.files_hashed(),
            4,
            "neither torch/ nor safety_checker/ read"
        );
        // Everything under a component folder counts, nested folders included.
        write(
            &dir.path().join("unet/extra/model.onnx_data"),
            b"d",
            WEEK_AGO,
        );
        assert_ne!(FolderDigests::new(None).digest(dir.path()).unwrap(), before);
    }

    #[test]
    fn an_unchanged_folder_is_not_read_again_in_this_process_or_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("model");
        let cache_file = dir.path().join("cache/model-digests.json");
        model_folder(&model, WEEK_AGO);
        let cache = FolderDigests::new(Some(cache_file.clone()));
        let first = cache.digest(&model).unwrap();
        assert_eq!(
            cache.files_hashed(),
            4,
            "README.md is not part of the model"
        );
        assert_eq!(cache.digest(&model).unwrap(), first);
        assert_eq!(cache.files_hashed(), 4, "the second digest read no file");

        // Another process: the cache file answers.
        let next = FolderDigests::new(Some(cache_file.clone()));
        assert_eq!(next.digest(&model).unwrap(), first);
        assert_eq!(next.files_hashed(), 0);

        // New weights of the same size, their modification time set back a day later.
        let mut weights = std::fs::read(model.join("unet/model.onnx")).unwrap();
        weights[500] ^= 1;
        write(
            &model.join("unet/model.onnx"),
            &weights,
            WEEK_AGO - Duration::from_secs(86400),
        );
        let changed = next.digest(&model).unwrap();
        assert_ne!(changed, first);
        assert_eq!(next.files_hashed(), 4);
        assert_eq!(FolderDigests::new(None).digest(&model).unwrap(), changed);
        let reopened = FolderDigests::new(Some(cache_file.clone()));
        assert_eq!(reopened.digest(&model).unwrap(), changed);
        assert_eq!(
            reopened.files_hashed(),
            0,
            "the cache file holds the new digest"
        );

        // A file that appears changes the digest too; a corrupt cache file is ignored.
        write(&model.join("vae_decoder/config.json"), b"{}", WEEK_AGO);
        std::fs::write(&cache_file, b"{ not json").unwrap();
        let grown = FolderDigests::new(Some(cache_file));
        assert_ne!(grown.digest(&model).unwrap(), changed);
        assert_eq!(grown.files_hashed(), 5);
    }

    #[test]
    fn files_written_just_now_are_not_trusted_to_keep_their_stamp() {
        let dir = tempfile::tempdir().unwrap();
        model_folder(dir.path(), Duration::ZERO);
        let cache = FolderDigests::new(None);
        let first = cache.digest(dir.path()).unwrap();
        assert_eq!(cache.digest(dir.path()).unwrap(), first);
        assert_eq!(cache.files_hashed(), 8, "read twice");
    }
}
