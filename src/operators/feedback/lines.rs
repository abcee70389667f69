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

/// `checkpoint-12.jsonl` → 12.
pub fn checkpoint_of(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    name.strip_prefix("checkpoint-")?
        .strip_suffix(".jsonl")?
        .parse()
        .ok()
}

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

/// `progress-3.jsonl` → 3.
pub fn progress_of(path: &Path) -> Option<u32> {
    let name = path.file_name()?.to_str()?;
    name.strip_prefix("progress-")?
        .strip_suffix(".jsonl")?
        .parse()
        .ok()
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
