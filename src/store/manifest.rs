//! Manifest snapshots: the rows of each input of a sink, written as JSONL and/or Parquet into
//! a version folder that is renamed into place whole, then `current` is pointed at it.

use super::atomic::{replace_symlink, sync_dir, write_file};
use super::parquet_table::{encode, Column};
use crate::record::{ErrorRecord, Sample, Score, Synthetic};
use serde::Serialize;
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
    Error(ErrorRecord),
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
/// and drops versions older than the newest `keep`.
pub fn write_snapshot(
    folder: &Path,
    version: u64,
    inputs: &[String],
    tables: &[Vec<(&Row, isize)>],
    formats: &[ManifestFormat],
    keep: usize,
) -> Result<(), String> {
    let name = version_dir(version);
    let target = folder.join(&name);
    let staging = folder.join(format!(".{name}.tmp-{}", std::process::id()));
    let fail = |p: &Path, e: std::io::Error| format!("{}: {e}", p.display());
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir_all(&staging).map_err(|e| fail(&staging, e))?;
    let mut counts = serde_json::Map::new();
    for (input, rows) in inputs.iter().zip(tables) {
        let rows: Vec<&Row> = rows
            .iter()
            .flat_map(|(row, count)| std::iter::repeat_n(*row, (*count).max(0) as usize))
            .collect();
        counts.insert(input.clone(), rows.len().into());
        for format in formats {
            let bytes = match format {
                ManifestFormat::Jsonl => jsonl(&rows),
                ManifestFormat::Parquet => parquet(&rows)?,
            };
            write_file(
                &staging.join(format!("{input}.{}", format.extension())),
                &bytes,
            )?;
        }
    }
    let info = serde_json::json!({ "version": version, "rows": counts });
    write_file(
        &staging.join("_snapshot.json"),
        &serde_json::to_vec_pretty(&info).expect("json"),
    )?;
    if target.exists() {
        fs::remove_dir_all(&target).map_err(|e| fail(&target, e))?;
    }
    fs::rename(&staging, &target).map_err(|e| fail(&target, e))?;
    sync_dir(folder)?;
    replace_symlink(&folder.join("current"), &name)?;
    prune(folder, version, keep)
}

fn prune(folder: &Path, current: u64, keep: usize) -> Result<(), String> {
    let mut versions: Vec<u64> = fs::read_dir(folder)
        .map_err(|e| format!("{}: {e}", folder.display()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.strip_prefix('v')?.parse().ok())
        .filter(|v| *v < current)
        .collect();
    versions.sort_unstable();
    let drop = versions.len().saturating_sub(keep);
    for v in &versions[..drop] {
        let dir = folder.join(version_dir(*v));
        fs::remove_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
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
            Row::Error(r) => serde_json::to_writer(&mut out, r),
        };
        written.expect("rows serialise");
        out.push(b'\n');
    }
    out
}

/// Rows of one input share a kind; an empty table is written with the schema of an error table.
fn parquet(rows: &[&Row]) -> Result<Vec<u8>, String> {
    let text = |f: &dyn Fn(&Row) -> String| Column::Text(rows.iter().map(|r| f(r)).collect());
    let u64s = |f: &dyn Fn(&Row) -> u64| Column::U64(rows.iter().map(|r| f(r)).collect());
    let f32s = |f: &dyn Fn(&Row) -> f32| Column::F32(rows.iter().map(|r| f(r)).collect());
    let sample = |r: &Row| match r {
        Row::Sample(s) => s.clone(),
        other => panic!("mixed row kinds in one manifest: {other:?}"),
    };
    let score = |r: &Row| match r {
        Row::Score(s) => s.clone(),
        other => panic!("mixed row kinds in one manifest: {other:?}"),
    };
    let synthetic = |r: &Row| match r {
        Row::Synthetic(s) => s.clone(),
        other => panic!("mixed row kinds in one manifest: {other:?}"),
    };
    let score_or_nan = |v: Option<crate::record::Value>| v.map_or(f32::NAN, |v| v.0);
    let error = |r: &Row| match r {
        Row::Error(e) => e.clone(),
        other => panic!("mixed row kinds in one manifest: {other:?}"),
    };
    match rows.first() {
        Some(Row::Sample(_)) => encode(&[
            ("id", u64s(&|r| sample(r).id)),
            ("name", text(&|r| sample(r).name)),
            ("label", text(&|r| sample(r).label)),
            ("path", text(&|r| sample(r).path)),
            ("digest", text(&|r| sample(r).digest.to_hex())),
        ]),
        Some(Row::Score(_)) => encode(&[
            ("sample", u64s(&|r| score(r).sample)),
            ("checkpoint", u64s(&|r| score(r).checkpoint)),
            ("p_true", f32s(&|r| score(r).p_true.0)),
            ("loss", f32s(&|r| score(r).loss.0)),
            ("predicted", text(&|r| score(r).predicted)),
        ]),
        Some(Row::Synthetic(_)) => encode(&[
            ("sample", u64s(&|r| synthetic(r).key.sample)),
            ("level", f32s(&|r| synthetic(r).key.level as f32 / 1000.0)),
            ("seed", u64s(&|r| synthetic(r).key.seed as u64)),
            ("prompt", text(&|r| synthetic(r).key.prompt)),
            ("label", text(&|r| synthetic(r).label)),
            ("path", text(&|r| synthetic(r).path)),
            ("digest", text(&|r| synthetic(r).digest.to_hex())),
            ("source", text(&|r| synthetic(r).source)),
            (
                "text_score",
                f32s(&|r| score_or_nan(synthetic(r).text_score)),
            ),
            (
                "image_score",
                f32s(&|r| score_or_nan(synthetic(r).image_score)),
            ),
        ]),
        Some(Row::Error(_)) | None => encode(&[
            ("node", text(&|r| error(r).node)),
            ("location", text(&|r| error(r).location)),
            ("message", text(&|r| error(r).message)),
        ]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Digest, Value};

    #[test]
    fn rows_cross_processes_through_bincode() {
        let row = Row::Score(Score {
            sample: 1,
            checkpoint: 2,
            p_true: Value(0.5),
            loss: Value(0.7),
            predicted: "c".into(),
        });
        let back: Row = bincode::deserialize(&bincode::serialize(&(3usize, row.clone())).unwrap())
            .map(|(_, r): (usize, Row)| r)
            .unwrap();
        assert_eq!(back, row);
    }

    #[test]
    fn snapshots_are_versioned_current_and_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let s = Row::Sample(Sample {
            id: 7,
            name: "c/a.png".into(),
            label: "c".into(),
            path: "/x/c/a.png".into(),
            digest: Digest::of(b"a"),
        });
        let e = Row::Score(Score {
            sample: 7,
            checkpoint: 0,
            p_true: Value(0.5),
            loss: Value(0.7),
            predicted: "c".into(),
        });
        let inputs = vec!["samples".to_string(), "scores".to_string()];
        let formats = [ManifestFormat::Jsonl, ManifestFormat::Parquet];
        for version in 0..4 {
            let tables = vec![vec![(&s, 2)], vec![(&e, 1)]];
            write_snapshot(dir.path(), version, &inputs, &tables, &formats, 1).unwrap();
        }
        let current = dir.path().join("current");
        assert_eq!(fs::read_link(&current).unwrap().to_str(), Some("v000003"));
        let jsonl = fs::read_to_string(current.join("samples.jsonl")).unwrap();
        assert_eq!(jsonl.lines().count(), 2, "a count of 2 is two rows");
        let row: serde_json::Value = serde_json::from_str(jsonl.lines().next().unwrap()).unwrap();
        assert_eq!(row["label"], "c");
        assert_eq!(row["digest"], Digest::of(b"a").to_hex());
        assert!(current.join("scores.parquet").exists());
        let info: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(current.join("_snapshot.json")).unwrap())
                .unwrap();
        assert_eq!(info["version"], 3);
        assert_eq!(info["rows"]["samples"], 2);
        let mut left: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, vec!["current", "v000002", "v000003"]);
    }
}
