//! What a source lists before reading any image: the files of an image folder (one sub-folder
//! per class) or the rows of a JSONL/CSV manifest, each with its name, label and origin.

use super::IMAGE_EXTENSIONS;
use crate::runtime::input_file::read_regular;
use std::path::{Path, PathBuf};

/// One entry a scan found, before its bytes are read.
#[derive(Clone, Debug)]
pub(super) struct Entry {
    pub(super) name: String,
    pub(super) label: String,
    pub(super) path: PathBuf,
    /// Where the entry was declared (the manifest line), for error messages.
    pub(super) origin: String,
}

pub(super) type Listed = Result<Vec<Result<Entry, (String, String)>>, (String, String)>;

/// The files under `root/<class>/` with an image ending, in name order. A file that is a
/// symbolic link to a file outside `root` is an error entry unless `allow_outside_links`.
pub(super) fn list_image_folder(root: &Path, allow_outside_links: bool) -> Listed {
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
    let canonical_root = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
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
            if !allow_outside_links {
                if let Some(target) = outside_link(&path, &canonical_root) {
                    let message = format!(
                        "symbolic link to {}, outside the image folder (set \
                         `allow_outside_links = true` on the source to read it)",
                        target.display()
                    );
                    entries.push(Err((origin, message)));
                    continue;
                }
            }
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

/// Where `path` leads if it is a symbolic link whose target (all links resolved) is not under
/// `root` (canonical). A dangling link is left for the read to report.
fn outside_link(path: &Path, root: &Path) -> Option<PathBuf> {
    let link = std::fs::symlink_metadata(path).ok()?;
    if !link.file_type().is_symlink() {
        return None;
    }
    let target = path.canonicalize().ok()?;
    (!target.starts_with(root)).then_some(target)
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

/// The largest manifest read: 1 GiB (some ten million rows).
const MAX_MANIFEST_BYTES: u64 = 1 << 30;

pub(super) fn read_manifest(file: &Path) -> Listed {
    let unreadable = |e: String| {
        (
            file.display().to_string(),
            format!("cannot read manifest: {e}"),
        )
    };
    let bytes = read_regular(file, MAX_MANIFEST_BYTES).map_err(|e| unreadable(e.to_string()))?;
    let text = String::from_utf8(bytes).map_err(|e| unreadable(e.to_string()))?;
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
