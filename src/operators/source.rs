//! `source`: turns an image folder (one sub-folder per class) or a JSONL/CSV manifest
//! (`path,label[,id]`) into `Sample`s with stable ids and content digests. Each scan is diffed
//! against the previous one, so a rescan (watch mode) emits only what changed: new files as
//! insertions, removed or rewritten files as retractions. Unreadable or corrupt images become
//! error records naming their path.

use crate::record::{sample_id, Digest, ErrorRecord, Sample, SampleId};
use crate::runtime::image_input::check_decodes;
use std::collections::{BTreeMap, BTreeSet, HashMap};
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

/// One entry a scan found, before its bytes are read.
#[derive(Clone, Debug)]
struct Entry {
    name: String,
    label: String,
    path: PathBuf,
    /// Where the entry was declared (the manifest line), for error messages.
    origin: String,
}

/// The samples and errors of one scan.
#[derive(Debug, Default)]
pub struct Scan {
    pub samples: BTreeMap<SampleId, Sample>,
    pub errors: BTreeSet<ErrorRecord>,
}

/// A source and what it saw last time, so rescans produce diffs.
pub struct SourceState {
    node: String,
    location: SourceLocation,
    last: Scan,
    /// (size, modified) → digest, so rescans do not re-read unchanged files.
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
            last: Scan::default(),
            digests: HashMap::new(),
            unreadable: None,
        }
    }

    /// Rescans and returns what changed. Only entries whose id falls in this worker's share
    /// (`id % peers == index`) are read, so workers split the hashing and decoding.
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
        self.last = scan;
        diff
    }

    fn scan(&mut self, index: usize, peers: usize) -> Option<Scan> {
        let mut scan = Scan::default();
        let entries = match &self.location {
            SourceLocation::ImageFolder(root) => list_image_folder(root),
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
            if id % peers as u64 != index as u64 {
                continue;
            }
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
        Some(scan)
    }

    /// The digest of a file, checking once that it decodes as an image.
    fn digest(&mut self, path: &Path) -> Result<Digest, String> {
        let meta = std::fs::metadata(path).map_err(|e| format!("cannot read image: {e}"))?;
        let stamp = (
            meta.len(),
            meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        );
        if let Some((size, modified, digest)) = self.digests.get(path) {
            if (*size, *modified) == stamp {
                return Ok(*digest);
            }
        }
        let bytes = std::fs::read(path).map_err(|e| format!("cannot read image: {e}"))?;
        check_decodes(&bytes)?;
        let digest = Digest::of(&bytes);
        self.digests
            .insert(path.to_path_buf(), (stamp.0, stamp.1, digest));
        Ok(digest)
    }
}

type Listed = Result<Vec<Result<Entry, (String, String)>>, (String, String)>;

fn list_image_folder(root: &Path) -> Listed {
    let read = |dir: &Path| {
        std::fs::read_dir(dir).map_err(|e| {
            (
                dir.display().to_string(),
                format!("cannot read image folder: {e}"),
            )
        })
    };
    let mut classes: Vec<PathBuf> = read(root)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    classes.sort();
    if classes.is_empty() {
        return Err((
            root.display().to_string(),
            "image folder has no class sub-folders".into(),
        ));
    }
    let mut entries = Vec::new();
    for class_dir in classes {
        let label = class_dir
            .file_name()
            .expect("a folder name")
            .to_string_lossy()
            .into_owned();
        let mut files = Vec::new();
        collect_images(&class_dir, &mut files);
        files.sort();
        for path in files {
            let relative = path.strip_prefix(root).expect("under root");
            let name = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            let origin = path.display().to_string();
            entries.push(Ok(Entry {
                name,
                label: label.clone(),
                path,
                origin,
            }));
        }
    }
    Ok(entries)
}

fn collect_images(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(read) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in read.filter_map(|e| e.ok()) {
        let path = entry.path();
        // Links to folders are not followed: a link back up would never end.
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            collect_images(&path, out);
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        {
            out.push(path);
        }
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestRow {
    path: String,
    label: String,
    #[serde(default)]
    id: Option<String>,
}

fn read_manifest(file: &Path) -> Listed {
    let text = std::fs::read_to_string(file).map_err(|e| {
        (
            file.display().to_string(),
            format!("cannot read manifest: {e}"),
        )
    })?;
    let base = file.parent().unwrap_or(Path::new("."));
    let is_csv = file
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    let mut rows: Vec<(usize, Result<ManifestRow, String>)> = Vec::new();
    if is_csv {
        let mut reader = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .from_reader(text.as_bytes());
        let line = |e: &csv::Error| e.position().map_or(0, |p| p.line() as usize);
        let headers = reader.headers().cloned().map_err(|e| {
            (
                format!("{}:{}", file.display(), line(&e)),
                format!("bad manifest header: {e}"),
            )
        })?;
        let mut record = csv::StringRecord::new();
        loop {
            match reader.read_record(&mut record) {
                Ok(false) => break,
                Ok(true) => {
                    let at = record.position().map_or(0, |p| p.line() as usize);
                    rows.push((
                        at,
                        record
                            .deserialize::<ManifestRow>(Some(&headers))
                            .map_err(|e| e.to_string()),
                    ));
                }
                Err(e) => {
                    rows.push((line(&e), Err(e.to_string())));
                    break;
                }
            }
        }
    } else {
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            rows.push((
                i + 1,
                serde_json::from_str::<ManifestRow>(line).map_err(|e| e.to_string()),
            ));
        }
    }
    Ok(rows
        .into_iter()
        .map(|(line, row)| {
            let origin = format!("{}:{line}", file.display());
            let row = row.map_err(|e| (origin.clone(), format!("bad manifest row: {e}")))?;
            let path = base.join(&row.path);
            let name = row.id.unwrap_or(row.path);
            Ok(Entry {
                name,
                label: row.label,
                path,
                origin,
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(path: &Path, value: u8) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        image::GrayImage::from_pixel(4, 4, image::Luma([value]))
            .save(path)
            .unwrap();
    }

    #[test]
    fn image_folder_scans_diff_and_report_corrupt_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        png(&root.join("coat/a.png"), 1);
        png(&root.join("coat/b.png"), 2);
        png(&root.join("shirt/c.png"), 3);
        std::fs::write(root.join("shirt/broken.png"), b"\x89PNG not really").unwrap();
        let mut state = SourceState::new("train", SourceLocation::ImageFolder(root.to_path_buf()));
        let first = state.rescan(0, 1);
        let names: Vec<_> = first
            .samples
            .iter()
            .map(|(s, d)| (s.name.as_str(), s.label.as_str(), *d))
            .collect();
        assert_eq!(names.len(), 3);
        assert!(names.contains(&("coat/a.png", "coat", 1)));
        assert!(names.contains(&("shirt/c.png", "shirt", 1)));
        assert_eq!(first.errors.len(), 1);
        assert!(first.errors[0].0.location.ends_with("broken.png"));
        assert!(first.errors[0].0.message.contains("cannot decode image"));

        // Nothing changed: an empty diff.
        assert_eq!(state.rescan(0, 1), SourceDiff::default());

        // Remove one, rewrite one, fix the broken one.
        std::fs::remove_file(root.join("coat/a.png")).unwrap();
        png(&root.join("coat/b.png"), 9);
        std::fs::remove_file(root.join("shirt/broken.png")).unwrap();
        let old_b = state.last.samples[&sample_id("coat/b.png")].clone();
        let diff = state.rescan(0, 1);
        let changes: Vec<_> = diff
            .samples
            .iter()
            .map(|(s, d)| (s.name.as_str(), *d))
            .collect();
        assert_eq!(changes.len(), 3);
        assert!(changes.contains(&("coat/a.png", -1)));
        assert!(diff.samples.contains(&(old_b.clone(), -1)));
        assert!(diff
            .samples
            .iter()
            .any(|(s, d)| s.name == "coat/b.png" && *d == 1 && s.digest != old_b.digest));
        assert_eq!(diff.errors.len(), 1);
        assert_eq!(diff.errors[0].1, -1);
    }

    #[test]
    fn an_unreadable_source_keeps_its_samples_and_reports_once() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("images");
        png(&root.join("coat/a.png"), 1);
        let mut state = SourceState::new("train", SourceLocation::ImageFolder(root.clone()));
        assert_eq!(state.rescan(0, 1).samples.len(), 1);
        std::fs::rename(&root, dir.path().join("moved")).unwrap();
        let diff = state.rescan(0, 1);
        assert!(diff.samples.is_empty(), "nothing is retracted: {diff:?}");
        assert_eq!(diff.errors.len(), 1);
        assert!(diff.errors[0]
            .0
            .message
            .contains("cannot read image folder"));
        assert_eq!(state.rescan(0, 1), SourceDiff::default(), "reported once");
    }

    #[test]
    fn workers_split_the_samples() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..20 {
            png(&dir.path().join(format!("c/{i}.png")), i);
        }
        let location = SourceLocation::ImageFolder(dir.path().to_path_buf());
        let a = SourceState::new("s", location.clone()).rescan(0, 2).samples;
        let b = SourceState::new("s", location).rescan(1, 2).samples;
        assert_eq!(a.len() + b.len(), 20);
        assert!(!a.is_empty() && !b.is_empty());
    }

    #[test]
    fn manifests_name_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        png(&dir.path().join("img/x.png"), 5);
        let jsonl = dir.path().join("m.jsonl");
        std::fs::write(
            &jsonl,
            "{\"path\": \"img/x.png\", \"label\": \"coat\", \"id\": \"x1\"}\n{\"path\": \"img/missing.png\", \"label\": \"coat\"}\n{\"label\": 3}\n",
        )
        .unwrap();
        let diff = SourceState::new("m", SourceLocation::Manifest(jsonl)).rescan(0, 1);
        assert_eq!(diff.samples.len(), 1);
        assert_eq!(diff.samples[0].0.id, sample_id("x1"));
        let errors: Vec<_> = diff
            .errors
            .iter()
            .map(|(e, _)| (e.location.clone(), e.message.clone()))
            .collect();
        assert_eq!(errors.len(), 2);
        assert!(errors
            .iter()
            .any(|(l, m)| l.ends_with("m.jsonl:3") && m.contains("bad manifest row")));
        assert!(errors
            .iter()
            .any(|(l, m)| l.ends_with("missing.png") && m.contains("cannot read image")));

        let csv = dir.path().join("m.csv");
        std::fs::write(&csv, "path,label\nimg/x.png,coat\n").unwrap();
        let diff = SourceState::new("m", SourceLocation::Manifest(csv.clone())).rescan(0, 1);
        assert_eq!(diff.samples[0].0.name, "img/x.png");
        std::fs::write(&csv, "path,label\n\nimg/x.png,coat\nimg/x.png\n").unwrap();
        let diff = SourceState::new("m", SourceLocation::Manifest(csv)).rescan(0, 1);
        assert!(
            diff.errors
                .iter()
                .any(|(e, _)| e.location.ends_with("m.csv:4")),
            "{diff:?}"
        );
        assert_eq!(diff.samples[0].0.label, "coat");
    }
}
