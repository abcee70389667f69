//! `discl gc`: the generated images (`synthetic/`) and contact sheets (`report/spectrum/`,
//! `report/stages/`) that no kept snapshot refers to any more — their samples left the hard
//! set, their versions were pruned, a retry that was not kept — and, when asked, their
//! removal. Listing is the default; removing takes the image indexes first (so it refuses
//! while a run holds them), deletes the files, then forgets their index entries. A later run
//! that needs a removed image makes it again. Also listed: the rewritten UNets under
//! `state/models/` that the graph no longer asks for (another model, another form) and the
//! folders of rewrites a killed run left unfinished. A temporary file or folder whose writer is
//! still running on this machine (its name carries the pid) is a write in progress, never
//! garbage. Quality histograms and answers are left alone.

mod references;

pub use references::{image_key, references, References};

use super::atomic::is_live_temp;
use super::error::StoreError;
use super::images::ImageStore;
use std::path::{Path, PathBuf};

/// What `gc` found: paths relative to the output folder, and their size.
#[derive(Debug, Default, PartialEq)]
pub struct Garbage {
    /// Images under `synthetic/` no snapshot names (and files there that are no image the
    /// store wrote, such as a crash's temporary files).
    pub images: Vec<String>,
    /// Contact sheets of sources or stages no snapshot has.
    pub sheets: Vec<String>,
    /// Entries of `state/models/` (rewritten UNets) not in use, and unfinished rewrites.
    pub models: Vec<String>,
    pub bytes: u64,
    /// Snapshot folders read.
    pub snapshots: usize,
}

/// Lists what no kept snapshot under `output` refers to, and the entries of `state/models/`
/// not named in `models_in_use`; removes nothing.
pub fn find(output: &Path, models_in_use: &[String]) -> Result<Garbage, StoreError> {
    let kept = references(output)?;
    let mut garbage = Garbage {
        snapshots: kept.snapshots,
        ..Garbage::default()
    };
    for prefix in references::subfolders(&output.join("synthetic"))? {
        for (path, relative) in files(output, &prefix)? {
            let name = relative.rsplit('/').next().unwrap_or_default();
            if is_live_temp(name) {
                continue;
            }
            if image_key(name).is_none_or(|key| !kept.images.contains(&key)) {
                garbage.bytes += size(&path);
                garbage.images.push(relative);
            }
        }
    }
    for (folder, names) in [("spectrum", &kept.spectrum), ("stages", &kept.stages)] {
        for (path, relative) in files(output, &output.join("report").join(folder))? {
            let name = relative.rsplit('/').next().unwrap_or_default();
            if !names.contains(name) {
                garbage.bytes += size(&path);
                garbage.sheets.push(relative);
            }
        }
    }
    let models = output.join(crate::runtime::rewrite::FOLDER);
    let entries = match std::fs::read_dir(&models) {
        Ok(entries) => entries.filter_map(|e| e.ok()).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(StoreError::io(&models, e)),
    };
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !models_in_use.contains(&name) && !is_live_temp(&name) {
            garbage.bytes += tree_size(&entry.path());
            let relative = entry.path();
            let relative = relative.strip_prefix(output).unwrap_or(&relative);
            garbage.models.push(relative.to_string_lossy().into_owned());
        }
    }
    garbage.images.sort();
    garbage.sheets.sort();
    garbage.models.sort();
    Ok(garbage)
}

/// Removes what [`find`] listed: every image index of the folder is opened first (a run that
/// holds one makes this an error, before anything is removed), then the files go, then the
/// indexes forget the removed images.
pub fn remove(output: &Path, garbage: &Garbage) -> Result<(), StoreError> {
    let open = |process| match ImageStore::open(output, process) {
        Err(StoreError::OpenIndex {
            path,
            source: redb::Error::DatabaseAlreadyOpen,
        }) => Err(StoreError::InUse { path }),
        other => other,
    };
    let stores: Vec<ImageStore> = index_processes(output)?
        .into_iter()
        .map(open)
        .collect::<Result<_, _>>()?;
    let listed = garbage
        .images
        .iter()
        .chain(&garbage.sheets)
        .chain(&garbage.models);
    for relative in listed {
        let path = output.join(relative);
        let removed = match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(&path),
            Ok(_) => std::fs::remove_file(&path),
            Err(e) => Err(e),
        };
        match removed {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::io(&path, e)),
        }
    }
    let keys: Vec<_> = garbage.images.iter().filter_map(|f| image_key(f)).collect();
    for store in &stores {
        store.forget(&keys)?;
    }
    Ok(())
}

/// The cluster processes with an image index under `state/` (0 for `synthetic.redb`, p for
/// `synthetic-pP.redb`).
fn index_processes(output: &Path) -> Result<Vec<usize>, StoreError> {
    let state = output.join("state");
    let mut processes = Vec::new();
    for (_, name) in files(output, &state)? {
        let name = name.rsplit('/').next().unwrap_or_default();
        let Some(rest) = name
            .strip_prefix("synthetic")
            .and_then(|n| n.strip_suffix(".redb"))
        else {
            continue;
        };
        match rest.strip_prefix("-p").map(str::parse) {
            None if rest.is_empty() => processes.push(0),
            Some(Ok(process)) => processes.push(process),
            _ => {}
        }
    }
    processes.sort_unstable();
    Ok(processes)
}

/// The regular files directly in `folder`, with their paths relative to `output`.
fn files(output: &Path, folder: &Path) -> Result<Vec<(PathBuf, String)>, StoreError> {
    let entries = match std::fs::read_dir(folder) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StoreError::io(folder, e)),
    };
    let mut out = Vec::new();
    for entry in entries.filter_map(|e| e.ok()) {
        if !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let path = entry.path();
        let relative = path.strip_prefix(output).unwrap_or(&path);
        out.push((path.clone(), relative.to_string_lossy().into_owned()));
    }
    Ok(out)
}

fn size(path: &Path) -> u64 {
    std::fs::symlink_metadata(path).map_or(0, |m| m.len())
}

/// The bytes of the files under `path` (links not followed).
fn tree_size(path: &Path) -> u64 {
    let folder = std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir());
    match std::fs::read_dir(path) {
        Ok(entries) if folder => entries
            .filter_map(|e| e.ok())
            .map(|e| tree_size(&e.path()))
            .sum(),
        _ => size(path),
    }
}

#[cfg(test)]
mod tests;
