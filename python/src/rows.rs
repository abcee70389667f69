//! Rows between Python and the engine: samples and feedback pushed from Python become engine
//! records (feedback lines are read by the engine's own feedback-file parser, so a pushed row
//! and a line of `checkpoint-N.jsonl` obey one rule), and a sink input's committed snapshot
//! becomes the Parquet bytes the sink itself would write for it (its columns, README
//! "Manifest columns"), which the package opens as a `pyarrow.Table`.

use discl::graph::Compiled;
use discl::operators::feedback::{parse_line, parse_progress};
use discl::record::{sample_id, Digest, Progress, RecordKind, Sample, Score};
use discl::store::manifest::{Row, TableKind};
use discl::store::table_columns::encode_rows;
use serde_json::Value;

/// A sample row from Python: name, label, path, id (default: the id of the name), digest
/// (64 hex digits; default: BLAKE3 of the file at `path`), and its diff (+1 / -1).
pub type SampleRow = (String, String, String, Option<u64>, Option<String>, isize);

/// A feedback row: a `checkpoint-N.jsonl` line, its checkpoint N, its diff.
pub type ScoreRow = (String, u64, isize);

/// A progress row: a `progress-N.jsonl` line, its N (stages trained), its diff.
pub type ProgressRow = (String, u32, isize);

fn diff_of(diff: isize, row: usize) -> Result<isize, String> {
    match diff {
        1 | -1 => Ok(diff),
        other => Err(format!(
            "row {row}: diff must be 1 (insert) or -1 (retract), got {other}"
        )),
    }
}

/// Samples from rows; an error names the row (0-based) and what is wrong with it.
pub fn samples(rows: Vec<SampleRow>) -> Result<Vec<(Sample, isize)>, String> {
    rows.into_iter()
        .enumerate()
        .map(|(row, (name, label, path, id, digest, diff))| {
            let digest = match digest {
                Some(hex) => Digest::from_hex(&hex)
                    .ok_or_else(|| format!("row {row}: digest must be 64 hex digits"))?,
                None => Digest::of(
                    &std::fs::read(&path)
                        .map_err(|e| format!("row {row}: cannot read {path}: {e}"))?,
                ),
            };
            let sample = Sample {
                id: id.unwrap_or_else(|| sample_id(&name)),
                name,
                label,
                path,
                digest,
            };
            Ok((sample, diff_of(diff, row)?))
        })
        .collect()
}

/// Scores from feedback rows, read as `checkpoint-N.jsonl` lines are.
pub fn scores(rows: Vec<ScoreRow>) -> Result<Vec<(Score, isize)>, String> {
    rows.into_iter()
        .enumerate()
        .map(|(row, (line, checkpoint, diff))| {
            let score = parse_line(&line, checkpoint).map_err(|e| format!("row {row}: {e}"))?;
            Ok((score, diff_of(diff, row)?))
        })
        .collect()
}

/// Progress records from rows, read as `progress-N.jsonl` lines are.
pub fn progress(rows: Vec<ProgressRow>) -> Result<Vec<(Progress, isize)>, String> {
    rows.into_iter()
        .enumerate()
        .map(|(row, (line, after, diff))| {
            let progress = parse_progress(&line, after).map_err(|e| format!("row {row}: {e}"))?;
            Ok((progress, diff_of(diff, row)?))
        })
        .collect()
}

/// The kind of record input `input` of sink `sink` carries.
pub fn input_kind(compiled: &Compiled, sink: &str, input: &str) -> Result<RecordKind, String> {
    let node = compiled
        .nodes
        .get(sink)
        .ok_or_else(|| format!("no node `{sink}` in this pipeline"))?;
    let position = node.info.inputs.iter().position(|i| i == input);
    position
        .and_then(|p| node.info.input_kinds.get(p).copied())
        .ok_or_else(|| {
            format!(
                "sink `{sink}` has no input `{input}` (its inputs: {})",
                node.info.inputs.join(", ")
            )
        })
}

/// A snapshot's JSON rows, of kind `kind`, as the sink's Parquet file.
pub fn parquet(kind: RecordKind, rows: Vec<Value>) -> Result<Vec<u8>, String> {
    let row = |value: Value| -> Result<Row, serde_json::Error> {
        Ok(match kind {
            RecordKind::Sample => Row::Sample(serde_json::from_value(value)?),
            RecordKind::Score => Row::Score(serde_json::from_value(value)?),
            RecordKind::Synthetic => Row::Synthetic(serde_json::from_value(value)?),
            RecordKind::Progress => Row::Progress(serde_json::from_value(value)?),
            RecordKind::StagePlan => Row::StagePlan(serde_json::from_value(value)?),
            RecordKind::StageItem => Row::StageItem(serde_json::from_value(value)?),
        })
    };
    let rows: Vec<Row> = rows
        .into_iter()
        .enumerate()
        .map(|(i, value)| row(value).map_err(|e| format!("snapshot row {i}: {e}")))
        .collect::<Result<_, _>>()?;
    let refs: Vec<&Row> = rows.iter().collect();
    encode_rows(TableKind::from(kind), &refs).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pushed_feedback_obeys_the_file_rules() {
        let ok = scores(vec![(
            r#"{"sample": "coat/a.png", "p_true": 0.25, "predicted": "shirt"}"#.into(),
            3,
            1,
        )])
        .unwrap();
        assert_eq!(ok[0].0.sample, sample_id("coat/a.png"));
        assert_eq!(ok[0].0.checkpoint, 3);
        assert!((ok[0].0.loss.0 - 0.25f32.ln().abs()).abs() < 1e-6);
        let bad = scores(vec![
            (
                r#"{"sample": 1, "p_true": 0.5, "predicted": "x"}"#.into(),
                1,
                1,
            ),
            (
                r#"{"sample": 1, "p_true": 1.5, "predicted": "x"}"#.into(),
                1,
                1,
            ),
        ])
        .unwrap_err();
        assert!(
            bad.starts_with("row 1: p_true must be a probability"),
            "{bad}"
        );
        let bad = scores(vec![(
            r#"{"sample": 1, "p_true": 0.5, "predicted": "x"}"#.into(),
            1,
            2,
        )])
        .unwrap_err();
        assert!(bad.contains("diff must be 1"), "{bad}");
    }

    #[test]
    fn pushed_samples_take_their_digest_from_the_file() {
        let dir = std::env::temp_dir().join(format!("discl-python-rows-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("a.png");
        std::fs::write(&file, b"bytes").unwrap();
        let path = file.display().to_string();
        let rows = vec![(
            "coat/a.png".into(),
            "coat".into(),
            path.clone(),
            None,
            None,
            -1,
        )];
        let (sample, diff) = samples(rows).unwrap().remove(0);
        assert_eq!(
            (sample.id, sample.digest, diff),
            (sample_id("coat/a.png"), Digest::of(b"bytes"), -1)
        );
        let missing = samples(vec![(
            "x".into(),
            "coat".into(),
            dir.join("none.png").display().to_string(),
            Some(7),
            None,
            1,
        )])
        .unwrap_err();
        assert!(missing.starts_with("row 0: cannot read"), "{missing}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn snapshot_rows_encode_with_the_sink_columns() {
        let rows = vec![serde_json::json!({
            "sample": 1, "checkpoint": 2, "p_true": 0.5, "loss": 0.69, "predicted": "coat"
        })];
        let bytes = parquet(RecordKind::Score, rows).unwrap();
        assert_eq!(&bytes[..4], b"PAR1");
        let wrong = parquet(RecordKind::Sample, vec![serde_json::json!({"id": 1})]).unwrap_err();
        assert!(wrong.starts_with("snapshot row 0:"), "{wrong}");
    }
}
