//! Manifest snapshots: the rows of each input of a sink, written as JSONL and/or Parquet into
//! a version folder that is renamed into place whole, then `current` is pointed at it.

use super::atomic::{replace_symlink, sync_dir, write_file};
use super::error::StoreError;
use super::parquet_table::encode_rows;
use crate::record::{
    ErrorRecord, Progress, RecordKind, Sample, Score, StageItem, StagePlan, Synthetic,
};
use serde::Serialize;
use std::fmt;
use std::fs;
use std::path::Path;

/// A row of any record kind a sink can write.
/// Tagged when serialised (bincode, between processes, cannot read untagged enums); the
/// manifests write the inner record alone.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize)]
pub enum Row {
    Sample(Sample),
    Score(Score),
    Synthetic(Synthetic),
    Progress(Progress),
    StagePlan(StagePlan),
    StageItem(StageItem),
    Error(ErrorRecord),
}

/// The kind of record a manifest table holds: it fixes the table's columns, so an empty table
/// is written with the same schema as a full one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TableKind {
    Sample,
    Score,
    Synthetic,
    Progress,
    StagePlan,
    StageItem,
    /// Error records: only the built-in `errors` sink writes these.
    Error,
}

impl TableKind {
    /// The kind of a row.
    pub fn of(row: &Row) -> Self {
        match row {
            Row::Sample(_) => TableKind::Sample,
            Row::Score(_) => TableKind::Score,
            Row::Synthetic(_) => TableKind::Synthetic,
            Row::Progress(_) => TableKind::Progress,
            Row::StagePlan(_) => TableKind::StagePlan,
            Row::StageItem(_) => TableKind::StageItem,
            Row::Error(_) => TableKind::Error,
        }
    }
}

impl From<RecordKind> for TableKind {
    fn from(kind: RecordKind) -> Self {
        match kind {
            RecordKind::Sample => TableKind::Sample,
            RecordKind::Score => TableKind::Score,
            RecordKind::Synthetic => TableKind::Synthetic,
            RecordKind::Progress => TableKind::Progress,
            RecordKind::StagePlan => TableKind::StagePlan,
            RecordKind::StageItem => TableKind::StageItem,
        }
    }
}

impl fmt::Display for TableKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TableKind::Sample => "Sample",
            TableKind::Score => "Score",
            TableKind::Synthetic => "Synthetic",
            TableKind::Progress => "Progress",
            TableKind::StagePlan => "StagePlan",
            TableKind::StageItem => "StageItem",
            TableKind::Error => "Error",
        })
    }
}

/// A manifest file format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ManifestFormat {
    Jsonl,
    Parquet,
}

impl ManifestFormat {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "jsonl" => Some(ManifestFormat::Jsonl),
            "parquet" => Some(ManifestFormat::Parquet),
            _ => None,
        }
    }
    fn extension(self) -> &'static str {
        match self {
            ManifestFormat::Jsonl => "jsonl",
            ManifestFormat::Parquet => "parquet",
        }
    }
}

/// The folder name of a version.
pub fn version_dir(version: u64) -> String {
    format!("v{version:06}")
}

/// Writes `<folder>/v{version}/<input>.<ext>` for every input and format, then makes it current
/// and drops versions older than the newest `keep` ([`publish_snapshot`]). `kinds[i]` is the
/// kind of record input `i` carries; a row of another kind is an error and nothing is written.
pub fn write_snapshot(
    folder: &Path,
    version: u64,
    layout: &Layout,
    tables: &[Vec<(&Row, isize)>],
) -> Result<(), StoreError> {
    let content = super::content::content_digest(layout, tables);
    write_snapshot_with(folder, version, layout, tables, &content)?;
    publish_snapshot(folder, version, layout.keep)
}

/// Makes a written version the one `<folder>/current` points at, atomically, then drops the
/// versions older than the newest `keep` before it.
pub fn publish_snapshot(folder: &Path, version: u64, keep: usize) -> Result<(), StoreError> {
    replace_symlink(&folder.join("current"), &version_dir(version))?;
    prune(folder, version, keep)
}

/// The version `<folder>/current` points at, if it points at a version folder.
pub fn current_version(folder: &Path) -> Option<u64> {
    let target = std::fs::read_link(folder.join("current")).ok()?;
    parse_version_dir(target.to_str()?)
}

/// The version a `vNNNNNN` folder name stands for.
pub fn parse_version_dir(name: &str) -> Option<u64> {
    let digits = name.strip_prefix('v')?;
    let all_digits = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
    all_digits.then(|| digits.parse().ok()).flatten()
}

/// [`write_snapshot`]'s first half, given the tables' content digest for `_snapshot.json`: the
/// version folder is renamed into place whole (and the rename made durable), but not made
/// current — readers do not see it until [`publish_snapshot`].
pub(super) fn write_snapshot_with(
    folder: &Path,
    version: u64,
    layout: &Layout,
    tables: &[Vec<(&Row, isize)>],
    content: &crate::record::Digest,
) -> Result<(), StoreError> {
    let Layout {
        inputs,
        kinds,
        formats,
        keep: _,
        provenance,
    } = *layout;
    if inputs.len() != kinds.len() || inputs.len() != tables.len() {
        return Err(StoreError::SnapshotShape {
            folder: folder.to_path_buf(),
            inputs: inputs.len(),
            kinds: kinds.len(),
            tables: tables.len(),
        });
    }
    for ((input, kind), rows) in inputs.iter().zip(kinds).zip(tables) {
        if let Some((row, _)) = rows.iter().find(|(row, _)| TableKind::of(row) != *kind) {
            return Err(StoreError::WrongKind {
                folder: folder.to_path_buf(),
                input: input.clone(),
                kind: *kind,
                found: TableKind::of(row),
            });
        }
    }
    let name = version_dir(version);
    let target = folder.join(&name);
    let staging = folder.join(format!(".{name}.tmp-{}", std::process::id()));
    let fail = StoreError::io;
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir_all(&staging).map_err(|e| fail(&staging, e))?;
    let mut counts = serde_json::Map::new();
    for ((input, kind), rows) in inputs.iter().zip(kinds).zip(tables) {
        let rows: Vec<&Row> = rows
            .iter()
            .flat_map(|(row, count)| std::iter::repeat_n(*row, (*count).max(0) as usize))
            .collect();
        if *kind == TableKind::StageItem {
            // One file per stage, in a folder named after the input.
            let mut stages: std::collections::BTreeMap<u32, Vec<&Row>> = Default::default();
            for row in rows {
                if let Row::StageItem(item) = row {
                    stages.entry(item.stage).or_default().push(row);
                }
            }
            let dir = staging.join(input);
            fs::create_dir_all(&dir).map_err(|e| fail(&dir, e))?;
            let mut per_stage = serde_json::Map::new();
            for (stage, rows) in stages {
                per_stage.insert(format!("stage-{stage}"), rows.len().into());
                write_table(
                    &dir,
                    &format!("stage-{stage}"),
                    *kind,
                    &rows,
                    formats,
                    input,
                )?;
            }
            counts.insert(input.clone(), per_stage.into());
            continue;
        }
        counts.insert(input.clone(), rows.len().into());
        write_table(&staging, input, *kind, &rows, formats, input)?;
    }
    let mut info =
        serde_json::json!({ "version": version, "rows": counts, "content": content.to_hex() });
    for (key, value) in provenance {
        info[key] = value.clone();
    }
    write_file(
        &staging.join("_snapshot.json"),
        &serde_json::to_vec_pretty(&info).expect("json"),
    )?;
    if target.exists() {
        fs::remove_dir_all(&target).map_err(|e| fail(&target, e))?;
    }
    fs::rename(&staging, &target).map_err(|e| fail(&target, e))?;
    sync_dir(folder)
}

/// How a sink lays out its snapshots.
#[derive(Clone, Copy)]
pub struct Layout<'a> {
    /// File stem for each input.
    pub inputs: &'a [String],
    /// The kind of record each input carries (it fixes the columns).
    pub kinds: &'a [TableKind],
    pub formats: &'a [ManifestFormat],
    /// Past versions kept beside the current one.
    pub keep: usize,
    /// What produced the snapshot (graph and model digests), written into `_snapshot.json`.
    pub provenance: &'a serde_json::Map<String, serde_json::Value>,
}

/// Writes one table as `<dir>/<stem>.<ext>` in every format.
fn write_table(
    dir: &Path,
    stem: &str,
    kind: TableKind,
    rows: &[&Row],
    formats: &[ManifestFormat],
    input: &str,
) -> Result<(), StoreError> {
    for format in formats {
        let bytes = match format {
            ManifestFormat::Jsonl => jsonl(rows),
            ManifestFormat::Parquet => encode_rows(kind, rows).map_err(|e| StoreError::Table {
                input: input.to_string(),
                source: Box::new(e),
            })?,
        };
        write_file(&dir.join(format!("{stem}.{}", format.extension())), &bytes)?;
    }
    Ok(())
}

fn prune(folder: &Path, current: u64, keep: usize) -> Result<(), StoreError> {
    let mut versions: Vec<u64> = fs::read_dir(folder)
        .map_err(|e| StoreError::io(folder, e))?
        .filter_map(|e| e.ok())
        .filter_map(|e| parse_version_dir(e.file_name().to_str()?))
        .filter(|v| *v < current)
        .collect();
    versions.sort_unstable();
    let drop = versions.len().saturating_sub(keep);
    for v in &versions[..drop] {
        let dir = folder.join(version_dir(*v));
        fs::remove_dir_all(&dir).map_err(|e| StoreError::io(&dir, e))?;
    }
    Ok(())
}

fn jsonl(rows: &[&Row]) -> Vec<u8> {
    let mut out = Vec::new();
    for row in rows {
        let written = match row {
            Row::Sample(r) => serde_json::to_writer(&mut out, r),
            Row::Score(r) => serde_json::to_writer(&mut out, r),
            Row::Synthetic(r) => serde_json::to_writer(&mut out, r),
            Row::Progress(r) => serde_json::to_writer(&mut out, r),
            Row::StagePlan(r) => serde_json::to_writer(&mut out, r),
            Row::StageItem(r) => serde_json::to_writer(&mut out, r),
            Row::Error(r) => serde_json::to_writer(&mut out, r),
        };
        written.expect("rows serialise");
        out.push(b'\n');
    }
    out
}

#[cfg(test)]
mod tests;
