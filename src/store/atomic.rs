//! Atomic file and folder writes: write beside the target, fsync, rename into place, fsync the
//! parent, so a reader sees the old file or the new one, never a torn one.

use super::error::StoreError;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

/// A temporary sibling name for `target` that is unique to this process.
pub fn temp_sibling(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Unique per process, thread and call: two writers of one target never share a temp file.
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    target.with_file_name(format!(".{name}.tmp-{}-{n}", std::process::id()))
}

/// Whether `name` is a [`temp_sibling`] of a process still running on this machine (a write
/// in progress, not a crash's leftover). Names of no temporary file are `false`.
pub fn is_live_temp(name: &str) -> bool {
    let Some((_, owner)) = name.rsplit_once(".tmp-") else {
        return false;
    };
    let pid = owner.split_once('-').map_or(owner, |(pid, _)| pid);
    match pid.parse::<libc::pid_t>() {
        Ok(pid) if pid > 0 => process_alive(pid),
        _ => false,
    }
}

/// `kill(pid, 0)`: the process exists (EPERM: it exists but is another user's).
fn process_alive(pid: libc::pid_t) -> bool {
    // SAFETY: signal 0 sends nothing; it only checks that `pid` names a process.
    let sent = unsafe { libc::kill(pid, 0) } == 0;
    sent || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Writes `bytes` to `target` atomically and durably (fsync of the file and its folder).
pub fn write_file(target: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    write_file_with(target, bytes, true)
}

/// Writes `bytes` to `target` atomically; with `sync`, durably too. Without it a crash may
/// lose the file (never tear it): for content-addressed files whose reader checks the digest.
pub fn write_file_with(target: &Path, bytes: &[u8], sync: bool) -> Result<(), StoreError> {
    let fail = |e| StoreError::io(target, e);
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent).map_err(fail)?;
    }
    let temp = temp_sibling(target);
    let mut file = File::create(&temp).map_err(fail)?;
    file.write_all(bytes).map_err(fail)?;
    if sync {
        file.sync_all().map_err(fail)?;
    }
    drop(file);
    fs::rename(&temp, target).map_err(fail)?;
    if sync {
        sync_dir(target.parent().unwrap_or(Path::new(".")))?;
    }
    Ok(())
}

/// Fsyncs a folder so renames inside it are durable.
pub fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(dir, e))
}

/// Points the symlink `link` at `target` (a sibling name) atomically.
pub fn replace_symlink(link: &Path, target: &str) -> Result<(), StoreError> {
    let temp = temp_sibling(link);
    let _ = fs::remove_file(&temp);
    std::os::unix::fs::symlink(target, &temp).map_err(|e| StoreError::io(&temp, e))?;
    fs::rename(&temp, link).map_err(|e| StoreError::io(link, e))?;
    sync_dir(link.parent().unwrap_or(Path::new(".")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_replace_whole_files() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("a/b.txt");
        write_file(&target, b"one").unwrap();
        write_file(&target, b"two").unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"two");
        let leftovers: Vec<_> = fs::read_dir(dir.path().join("a")).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file is left behind");
        replace_symlink(&dir.path().join("a/current"), "b.txt").unwrap();
        assert_eq!(fs::read(dir.path().join("a/current")).unwrap(), b"two");
    }

    #[test]
    fn temporary_files_of_live_processes_are_told_apart() {
        let mine = temp_sibling(Path::new("/x/model-unet-form"));
        let mine = mine.file_name().unwrap().to_str().unwrap();
        assert!(is_live_temp(mine), "{mine}: this process is running");
        // pid_max is at most 2^22 on Linux: this pid names no process.
        assert!(!is_live_temp(".model-unet-form.tmp-2147483000-0"));
        assert!(!is_live_temp("ab12.png"));
        assert!(!is_live_temp(".x.tmp-notapid-3"));
        assert!(!is_live_temp(".x.tmp-0-3"), "pid 0 is not a writer");
    }
}
