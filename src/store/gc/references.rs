//! What the kept snapshots refer to: every `vNNNNNN` folder of every sink under the output
//! folder is read (JSONL where written, Parquet otherwise) for the synthetic images its rows
//! name and the contact sheets they are drawn on.

use super::super::error::StoreError;
use super::super::manifest::parse_version_dir;
use crate::record::Digest;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// The files under `synthetic/` and `report/` that some kept snapshot needs.
#[derive(Debug, Default)]
pub struct References {
    /// Content keys of the images rows name (by file name, wherever the path points).
    pub images: HashSet<Digest>,
    /// `report/spectrum/<stem>-<sample>.png` of every source image with synthetic rows.
    pub spectrum: HashSet<String>,
    /// `report/stages/<sink>-<input>-stage-N.png` of every stage a snapshot holds.
    pub stages: HashSet<String>,
    /// Snapshot folders read.
    pub snapshots: usize,
}

/// Reads every kept snapshot of every sink under `output`.
pub fn references(output: &Path) -> Result<References, StoreError> {
    let mut found = References::default();
    for sink in subfolders(output)? {
        let sink_name = file_name(&sink);
        for snapshot in subfolders(&sink)? {
            if parse_version_dir(&file_name(&snapshot)).is_none() {
                continue;
            }
            found.snapshots += 1;
            for (table, stage_of) in tables(&snapshot)? {
                if let Some((input, stage)) = stage_of {
                    found
                        .stages
                        .insert(format!("{sink_name}-{input}-stage-{stage}.png"));
                }
                for row in read_table(&table)? {
                    found.add(&row);
                }
            }
        }
    }
    Ok(found)
}

impl References {
    /// Notes what one row refers to.
    fn add(&mut self, row: &serde_json::Value) {
        strings(row, &mut |text| {
            if let Some(key) = image_key(text) {
                self.images.insert(key);
            }
        });
        // A synthetic row (JSONL nests its sample under `key`; Parquet is flat).
        let sample = row
            .get("key")
            .and_then(|k| k.get("sample"))
            .or(row.get("sample"));
        if let (Some(source), Some(sample)) = (
            row.get("source").and_then(|s| s.as_str()),
            sample.and_then(|s| s.as_u64()),
        ) {
            let stem = Path::new(source)
                .file_stem()
                .map_or("sample".into(), |s| s.to_string_lossy().into_owned());
            self.spectrum.insert(format!("{stem}-{sample:016x}.png"));
        }
    }
}

/// The content key a path names, if its file name is `<64 hex digits>.png`.
pub fn image_key(path: &str) -> Option<Digest> {
    let name = path.rsplit('/').next()?;
    Digest::from_hex(name.strip_suffix(".png")?)
}

/// Calls `each` with every string inside a JSON value.
fn strings(value: &serde_json::Value, each: &mut impl FnMut(&str)) {
    match value {
        serde_json::Value::String(s) => each(s),
        serde_json::Value::Array(items) => items.iter().for_each(|v| strings(v, each)),
        serde_json::Value::Object(fields) => fields.values().for_each(|v| strings(v, each)),
        _ => {}
    }
}

/// A table file of a snapshot, with its (input, stage) when it is a stage file.
type Table = (PathBuf, Option<(String, String)>);

/// The tables of a snapshot folder — `<input>.jsonl` (or `.parquet` where no JSONL was
/// written) and `<input>/stage-N.*`.
fn tables(snapshot: &Path) -> Result<Vec<Table>, StoreError> {
    let mut out: Vec<_> = chosen_files(snapshot)?
        .into_iter()
        .map(|file| (file, None))
        .collect();
    for folder in subfolders(snapshot)? {
        let input = file_name(&folder);
        for file in chosen_files(&folder)? {
            let stem = file.file_stem().map(|s| s.to_string_lossy().into_owned());
            let stage = stem.as_deref().and_then(|s| s.strip_prefix("stage-"));
            let stage_of = stage.map(|stage| (input.clone(), stage.to_string()));
            out.push((file, stage_of));
        }
    }
    Ok(out)
}

/// The `.jsonl` files of a folder, and the `.parquet` files with no `.jsonl` beside them.
fn chosen_files(folder: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let mut files = Vec::new();
    for entry in read_dir(folder)? {
        let path = entry.path();
        let extension = path.extension().and_then(|e| e.to_str());
        let chosen = match extension {
            Some("jsonl") => true,
            Some("parquet") => !path.with_extension("jsonl").exists(),
            _ => false,
        };
        if chosen && entry.file_type().is_ok_and(|t| t.is_file()) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// The rows of a table file as JSON objects (Parquet rows with their columns as fields).
fn read_table(file: &Path) -> Result<Vec<serde_json::Value>, StoreError> {
    let fail = |e| StoreError::io(file, e);
    if file.extension().is_some_and(|e| e == "jsonl") {
        let text = std::fs::read_to_string(file).map_err(fail)?;
        return text
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| {
                serde_json::from_str(line).map_err(|source| StoreError::Json {
                    path: file.to_path_buf(),
                    source,
                })
            })
            .collect();
    }
    use parquet::file::reader::SerializedFileReader;
    use parquet::record::Field;
    let unreadable = |e: parquet::errors::ParquetError| fail(std::io::Error::other(e));
    let opened = std::fs::File::open(file).map_err(fail)?;
    let reader = SerializedFileReader::new(opened).map_err(unreadable)?;
    let mut rows = Vec::new();
    for row in reader {
        let mut object = serde_json::Map::new();
        for (name, field) in row.map_err(unreadable)?.get_column_iter() {
            let value = match field {
                Field::Str(s) => s.clone().into(),
                Field::ULong(v) => (*v).into(),
                Field::Long(v) if *v >= 0 => (*v as u64).into(),
                _ => continue,
            };
            object.insert(name.clone(), value);
        }
        rows.push(object.into());
    }
    Ok(rows)
}

fn read_dir(folder: &Path) -> Result<Vec<std::fs::DirEntry>, StoreError> {
    match std::fs::read_dir(folder) {
        Ok(entries) => Ok(entries.filter_map(|e| e.ok()).collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(StoreError::io(folder, e)),
    }
}

/// The folders directly inside `folder` (not following links), in name order.
pub fn subfolders(folder: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let mut out: Vec<PathBuf> = read_dir(folder)?
        .into_iter()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    out.sort();
    Ok(out)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map_or(String::new(), |n| n.to_string_lossy().into_owned())
}
