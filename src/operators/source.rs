//! `source`: turns an image folder (one sub-folder per class) or a JSONL/CSV manifest
//! (`path,label[,id]`) into `Sample`s with stable ids and content digests. Each scan is diffed
//! against the previous one, so a rescan (watch mode) emits only what changed: new files as
//! insertions, removed or rewritten files as retractions. Unreadable or corrupt images become
//! error records naming their path.
//!
//! Samples can also be pushed through the API ([`SourceState::push`]). The source emits one
//! collection from both, by one rule: **a sample id is present if the folder (this worker's
//! share of it) has it or the API pushed it; a present id has multiplicity 1.** When both hold
//! a sample for the id, the pushed one is emitted: an explicit push overrides the file until
//! it is retracted, and then the file's sample comes back.

#[cfg(test)]
mod hostile_tests;
mod listing;
#[cfg(test)]
mod tests;

use listing::{list_image_folder, read_manifest};

use crate::record::{sample_id, Digest, ErrorRecord, Sample, SampleId};
use crate::runtime::image_input::{check_decodes, max_file_bytes, DEFAULT_MAX_PIXELS};
use crate::runtime::input_file::read_regular;
use std::collections::{btree_map, BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Image file endings an image folder source reads.
pub const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg"];

/// Where a source reads from.
#[derive(Clone, Debug, PartialEq)]
pub enum SourceLocation {
    /// `<root>/<class>/**/<image>`.
    ImageFolder(PathBuf),
    /// A `.jsonl` or `.csv` manifest; relative image paths are relative to its folder.
    Manifest(PathBuf),
}

/// What a source accepts: how large an image may be, and whether an image folder may link to
/// files outside itself.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SourceOptions {
    /// Pixels an image may have (width × height, read from its header before decoding).
    pub max_pixels: u64,
    /// Read files of an image folder that are symbolic links to files outside the folder.
    pub allow_outside_links: bool,
}

impl Default for SourceOptions {
    fn default() -> Self {
        SourceOptions {
            max_pixels: DEFAULT_MAX_PIXELS,
            allow_outside_links: false,
        }
    }
}

/// The samples and errors of one scan.
#[derive(Debug, Default)]
pub struct Scan {
    pub samples: BTreeMap<SampleId, Sample>,
    pub errors: BTreeSet<ErrorRecord>,
}

/// The worker whose share of a source holds sample `id`: it scans the file, and samples pushed
/// through the API go to it, so it can tell the two apart.
pub fn worker_for(id: SampleId, peers: usize) -> usize {
    (id % peers.max(1) as u64) as usize
}

/// A source and what it saw last time, so rescans produce diffs.
pub struct SourceState {
    node: String,
    location: SourceLocation,
    options: SourceOptions,
    /// The folder's or manifest's samples (this worker's share) and errors at the last scan.
    last: Scan,
    /// Samples pushed through the API, by id, with how many pushes are not yet retracted.
    pushed: BTreeMap<SampleId, (Sample, usize)>,
    /// (size, modified) → digest, so rescans do not re-read unchanged files; only files the
    /// last scan saw, so a long watch over churning folders does not grow it without bound.
    digests: HashMap<PathBuf, (u64, SystemTime, Digest)>,
    /// Why the whole source could not be read at the last scan, if it could not.
    unreadable: Option<ErrorRecord>,
}

/// Updates of one rescan.
#[derive(Debug, Default, PartialEq)]
pub struct SourceDiff {
    pub samples: Vec<(Sample, isize)>,
    pub errors: Vec<(ErrorRecord, isize)>,
}

impl SourceState {
    pub fn new(node: &str, location: SourceLocation) -> Self {
        SourceState {
            node: node.to_string(),
            location,
            options: SourceOptions::default(),
            last: Scan::default(),
            pushed: BTreeMap::new(),
            digests: HashMap::new(),
            unreadable: None,
        }
    }

    /// The same source with other limits.
    pub fn with_options(mut self, options: SourceOptions) -> Self {
        self.options = options;
        self
    }

    /// Rescans and returns what changed. Only entries whose id falls in this worker's share
    /// ([`worker_for`]) are read, so workers split the hashing and decoding. Changes to ids the
    /// API pushed are not emitted: the pushed sample stays present (see the module header).
    pub fn rescan(&mut self, index: usize, peers: usize) -> SourceDiff {
        let Some(scan) = self.scan(index, peers) else {
            // The whole source is unreadable (moved, unmounted): report it and keep what was
            // there, rather than retracting every sample until it comes back.
            let error = self.unreadable.clone().filter(|_| index == 0);
            let mut diff = SourceDiff::default();
            diff.errors.extend(
                error
                    .iter()
                    .filter(|e| !self.last.errors.contains(e))
                    .map(|e| (e.clone(), 1)),
            );
            self.last.errors.extend(error);
            return diff;
        };
        self.unreadable = None;
        let mut diff = SourceDiff::default();
        for (id, sample) in &scan.samples {
            match self.last.samples.get(id) {
                Some(old) if old == sample => {}
                Some(old) => {
                    diff.samples.push((old.clone(), -1));
                    diff.samples.push((sample.clone(), 1));
                }
                None => diff.samples.push((sample.clone(), 1)),
            }
        }
        for (id, old) in &self.last.samples {
            if !scan.samples.contains_key(id) {
                diff.samples.push((old.clone(), -1));
            }
        }
        diff.errors.extend(
            scan.errors
                .difference(&self.last.errors)
                .map(|e| (e.clone(), 1)),
        );
        diff.errors.extend(
            self.last
                .errors
                .difference(&scan.errors)
                .map(|e| (e.clone(), -1)),
        );
        diff.samples
            .retain(|(s, _)| !self.pushed.contains_key(&s.id));
        self.last = scan;
        diff
    }

    /// Takes a sample pushed through the API (`diff` > 0 pushes it, < 0 retracts it) and returns
    /// the updates to emit, by the presence rule of the module header: pushing a sample the
    /// folder already has, or retracting one it still has, emits nothing. Pushes of one sample
    /// count up and retractions count down; retracting what was not pushed changes nothing, and
    /// pushing a different sample for a pushed id replaces it. Call it on the worker whose share
    /// holds the id ([`worker_for`]); elsewhere it cannot see the folder's copy.
    pub fn push(&mut self, sample: Sample, diff: isize) -> Vec<(Sample, isize)> {
        let id = sample.id;
        let before = self.present(id).cloned();
        let count = diff.unsigned_abs();
        match self.pushed.entry(id) {
            btree_map::Entry::Occupied(mut pushed) if pushed.get().0 == sample => {
                let held = &mut pushed.get_mut().1;
                if diff > 0 {
                    *held += count;
                } else if *held > count {
                    *held -= count;
                } else {
                    pushed.remove();
                }
            }
            btree_map::Entry::Occupied(mut pushed) if diff > 0 => {
                *pushed.get_mut() = (sample, count);
            }
            btree_map::Entry::Vacant(slot) if diff > 0 => {
                slot.insert((sample, count));
            }
            _ => {}
        }
        let after = self.present(id);
        if before.as_ref() == after {
            return Vec::new();
        }
        let after = after.cloned();
        before
            .map(|s| (s, -1))
            .into_iter()
            .chain(after.map(|s| (s, 1)))
            .collect()
    }

    /// The sample emitted for `id`: the pushed one, else the folder's.
    fn present(&self, id: SampleId) -> Option<&Sample> {
        match self.pushed.get(&id) {
            Some((sample, _)) => Some(sample),
            None => self.last.samples.get(&id),
        }
    }

    fn scan(&mut self, index: usize, peers: usize) -> Option<Scan> {
        let mut scan = Scan::default();
        let entries = match &self.location {
            SourceLocation::ImageFolder(root) => {
                list_image_folder(root, self.options.allow_outside_links)
            }
            SourceLocation::Manifest(file) => read_manifest(file),
        };
        let entries = match entries {
            Ok(entries) => entries,
            Err((location, message)) => {
                self.unreadable = Some(ErrorRecord {
                    node: self.node.clone(),
                    location,
                    message,
                });
                return None;
            }
        };
        let mut seen = HashSet::new();
        for entry in entries {
            let entry = match entry {
                Ok(entry) => entry,
                Err((location, message)) => {
                    if index == 0 {
                        scan.errors.insert(ErrorRecord {
                            node: self.node.clone(),
                            location,
                            message,
                        });
                    }
                    continue;
                }
            };
            let id = sample_id(&entry.name);
            if worker_for(id, peers) != index {
                continue;
            }
            seen.insert(entry.path.clone());
            match self.digest(&entry.path) {
                Ok(digest) => {
                    if let Some(previous) = scan.samples.get(&id) {
                        let message = format!(
                            "duplicate sample name `{}` (first at {})",
                            entry.name, previous.path
                        );
                        scan.errors.insert(ErrorRecord {
                            node: self.node.clone(),
                            location: entry.origin,
                            message,
                        });
                        continue;
                    }
                    let path = entry.path.to_string_lossy().into_owned();
                    scan.samples.insert(
                        id,
                        Sample {
                            id,
                            name: entry.name,
                            label: entry.label,
                            path,
                            digest,
                        },
                    );
                }
                Err(message) => {
                    let location = entry.path.display().to_string();
                    scan.errors.insert(ErrorRecord {
                        node: self.node.clone(),
                        location,
                        message,
                    });
                }
            }
        }
        self.digests.retain(|path, _| seen.contains(path));
        Some(scan)
    }

    /// The digest of a file, checking once that it is a regular file that decodes as an image
    /// within the pixel budget.
    fn digest(&mut self, path: &Path) -> Result<Digest, String> {
        let meta = std::fs::metadata(path).map_err(|e| format!("cannot read image: {e}"))?;
        let stamp = (
            meta.len(),
            meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        );
        match self.digests.get(path) {
            Some((size, modified, digest)) if meta.is_file() && (*size, *modified) == stamp => {
                return Ok(*digest);
            }
            _ => {}
        }
        let limit = max_file_bytes(self.options.max_pixels);
        let bytes = read_regular(path, limit).map_err(|e| format!("cannot read image: {e}"))?;
        check_decodes(&bytes, self.options.max_pixels)?;
        let digest = Digest::of(&bytes);
        self.digests
            .insert(path.to_path_buf(), (stamp.0, stamp.1, digest));
        Ok(digest)
    }
}
