//! The files a trainer writes into a feedback folder and how one line of each is read:
//! `checkpoint-N.jsonl` (scores of training samples at checkpoint N) and `progress-N.jsonl`
//! (p(true class) of validation images per guidance level after N stages).

use crate::record::{sample_id, Level, Progress, Score, Value, REAL_LEVEL};
use std::path::Path;

/// One line of a feedback file.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FeedbackLine {
    /// The sample's id (a number) or its dataset-relative name (a string).
    sample: SampleRef,
    p_true: f64,
    loss: Option<f64>,
    predicted: String,
}

#[derive(serde::Deserialize)]
#[serde(untagged)]
enum SampleRef {
    Id(u64),
    Name(String),
}

/// A feedback file by kind and number.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FileKind {
    Checkpoint(u64),
    Progress(u32),
}

/// What a file's name makes it: `None` for a file that is no feedback file (`notes.txt`,
/// `.checkpoint-3.jsonl.tmp`), an error for `checkpoint-N.jsonl` or `progress-N.jsonl` whose
/// N is not a number the protocol allows (`checkpoint--1.jsonl`, a number past u64).
pub fn kind_of(path: &Path) -> Option<Result<FileKind, String>> {
    let name = path.file_name()?.to_str()?;
    let number = |prefix: &str| name.strip_prefix(prefix)?.strip_suffix(".jsonl");
    let bad = |kind: &str, number: &str, max: u64| {
        format!(
            "cannot read the {kind} number of this file: `{number}` is not a whole number from 0 \
             to {max} (expected {kind}-N.jsonl)"
        )
    };
    if let Some(n) = number("checkpoint-") {
        return Some(
            n.parse()
                .map(FileKind::Checkpoint)
                .map_err(|_| bad("checkpoint", n, u64::MAX)),
        );
    }
    let n = number("progress-")?;
    Some(
        n.parse()
            .map(FileKind::Progress)
            .map_err(|_| bad("progress", n, u32::MAX.into())),
    )
}

/// One line of `checkpoint-N.jsonl` as a score at `checkpoint`; `loss` defaults to −ln p_true.
pub fn parse_line(line: &str, checkpoint: u64) -> Result<Score, String> {
    let parsed: FeedbackLine =
        serde_json::from_str(line).map_err(|e| format!("bad feedback line: {e}"))?;
    if !(0.0..=1.0).contains(&parsed.p_true) {
        return Err(format!(
            "p_true must be a probability in [0, 1], got {}",
            parsed.p_true
        ));
    }
    let loss = parsed.loss.unwrap_or(-parsed.p_true.max(1e-12).ln());
    if !loss.is_finite() || loss < 0.0 {
        return Err(format!(
            "loss must be a finite, non-negative number, got {loss}"
        ));
    }
    let sample = match parsed.sample {
        SampleRef::Id(id) => id,
        SampleRef::Name(name) => sample_id(&name),
    };
    Ok(Score {
        sample,
        checkpoint,
        p_true: Value(parsed.p_true as f32),
        loss: Value(loss as f32),
        predicted: parsed.predicted,
    })
}

/// One line of a progress file.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ProgressLine {
    /// The validation image's id (a number) or its dataset-relative name (a string).
    sample: SampleRef,
    /// Guidance level in per mille, as in the stage manifests (1000: the real image).
    level: u32,
    p_true: f64,
}

/// A progress line evaluated after `after_stages` stages.
pub fn parse_progress(line: &str, after_stages: u32) -> Result<Progress, String> {
    let parsed: ProgressLine =
        serde_json::from_str(line).map_err(|e| format!("bad progress line: {e}"))?;
    if !(0.0..=1.0).contains(&parsed.p_true) {
        return Err(format!(
            "p_true must be a probability in [0, 1], got {}",
            parsed.p_true
        ));
    }
    if parsed.level > REAL_LEVEL as u32 {
        return Err(format!(
            "level {} is not a level in per mille (0 to {REAL_LEVEL})",
            parsed.level
        ));
    }
    let sample = match parsed.sample {
        SampleRef::Id(id) => id,
        SampleRef::Name(name) => sample_id(&name),
    };
    Ok(Progress {
        after_stages,
        sample,
        level: parsed.level as Level,
        p_true: Value(parsed.p_true as f32),
    })
}
