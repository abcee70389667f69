//! What the built-in trainer writes, each file whole (atomic): the feedback files of the
//! protocol (`checkpoint-K.jsonl`, `progress-K.jsonl`), the learner's weights after each stage,
//! `report.json` and the final ONNX export; and how a run resumes from them.

use super::plan::TrainPlan;
use super::report::{StageReport, TrainingReport};
use super::tables::{SampleRow, Version};
use crate::runtime::classifier::score_logits;
use crate::runtime::learner::{Learner, LearnerImage};
use crate::store::atomic::{temp_sibling, write_file};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

/// The report so far, and where a resumed run picks up.
pub struct Resume {
    plan: TrainPlan,
    pub report: TrainingReport,
}

fn report_path(plan: &TrainPlan) -> PathBuf {
    plan.folder.join("report.json")
}

/// `checkpoint-N.jsonl` or `progress-N.jsonl`.
fn is_feedback_file(name: &str) -> bool {
    ["checkpoint-", "progress-"].iter().any(|prefix| {
        name.strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix(".jsonl"))
            .is_some_and(|n| n.parse::<u64>().is_ok())
    })
}

impl Resume {
    /// Resumes when `report.json` was written under the same graph and node settings and
    /// the learner's weights and feedback files of its last stage are there; otherwise starts
    /// over, removing the previous run's feedback files (the node owns its feedback folder)
    /// and learner files.
    pub fn open(plan: &TrainPlan) -> Result<Resume, String> {
        let fresh = TrainingReport {
            node: plan.node.clone(),
            seed: plan.learner.seed,
            trained_under: plan.trained_under.clone(),
            groups: None,
            stages: Vec::new(),
            model: None,
        };
        let previous: Option<TrainingReport> = std::fs::read(report_path(plan))
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok());
        if let Some(report) = previous.filter(|r| r.trained_under == plan.trained_under) {
            let done = report.stages.len();
            let feedback_there = (1..=done as u32).all(|k| {
                !plan.config.score_training || plan.feedback_file("checkpoint", k).is_file()
            });
            if done > 0 && feedback_there && plan.weights(done).is_file() {
                return Ok(Resume {
                    plan: plan.clone(),
                    report: TrainingReport {
                        model: None,
                        ..report
                    },
                });
            }
        }
        for folder in [&plan.feedback, &plan.folder] {
            let Ok(entries) = std::fs::read_dir(folder) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let ours = is_feedback_file(&name)
                    || (folder == &plan.folder
                        && (name.starts_with("learner-") || name == "report.json"));
                if ours && entry.file_type().is_ok_and(|t| t.is_file()) {
                    std::fs::remove_file(entry.path())
                        .map_err(|e| format!("{}: {e}", entry.path().display()))?;
                }
            }
        }
        Ok(Resume {
            plan: plan.clone(),
            report: fresh,
        })
    }

    /// The weights to resume from, if resuming.
    pub fn weights(&self) -> Option<PathBuf> {
        let done = self.report.stages.len();
        (done > 0).then(|| self.plan.weights(done))
    }

    /// Saves the learner after a stage, records the stage and rewrites `report.json`; the
    /// previous stage's weights are removed once the new ones are in place.
    pub fn finish_stage(&mut self, learner: &Learner, stage: StageReport) -> Result<(), String> {
        let done = self.report.stages.len() + 1;
        let target = self.plan.weights(done);
        std::fs::create_dir_all(&self.plan.folder)
            .map_err(|e| format!("{}: {e}", self.plan.folder.display()))?;
        let temp = temp_sibling(&target);
        learner.save(&temp).map_err(|e| e.to_string())?;
        std::fs::rename(&temp, &target).map_err(|e| format!("{}: {e}", target.display()))?;
        self.report.stages.push(stage);
        self.write_report()?;
        let _ = std::fs::remove_file(self.plan.weights(done - 1));
        Ok(())
    }

    /// Exports the learner as an ONNX classifier folder `<output>/<node>/model`.
    pub fn export(&mut self, learner: &Learner) -> Result<(), String> {
        let target = self.plan.folder.join("model");
        let temp = temp_sibling(&target);
        learner.export_onnx(&temp).map_err(|e| e.to_string())?;
        if target.exists() {
            std::fs::remove_dir_all(&target).map_err(|e| format!("{}: {e}", target.display()))?;
        }
        std::fs::rename(&temp, &target).map_err(|e| format!("{}: {e}", target.display()))?;
        self.report.model = Some(target.display().to_string());
        self.write_report()
    }

    fn write_report(&self) -> Result<(), String> {
        let bytes = serde_json::to_vec_pretty(&self.report).expect("report serialises");
        write_file(&report_path(&self.plan), &bytes).map_err(|e| e.to_string())
    }
}

/// `checkpoint-K.jsonl`: p_true, loss and predicted class of every training sample.
pub fn checkpoint(
    plan: &TrainPlan,
    learner: &Learner,
    samples: &[SampleRow],
    k: u32,
) -> Result<(), String> {
    let images: Vec<LearnerImage> = samples
        .iter()
        .map(|s| LearnerImage::File(s.path.clone().into()))
        .collect();
    let logits = learner.logits(&images).map_err(|e| e.to_string())?;
    let mut text = String::new();
    for (sample, row) in samples.iter().zip(&logits) {
        let Some(label) = plan.class_index(&sample.label) else {
            continue; // a class the learner does not have: no score to give
        };
        let scored = score_logits(row, label);
        let line = serde_json::json!({
            "sample": sample.id,
            "p_true": scored.p_true,
            "loss": scored.loss,
            "predicted": plan.classes[scored.predicted],
        });
        writeln!(text, "{line}").expect("write to a string");
    }
    write_file(&plan.feedback_file("checkpoint", k), text.as_bytes()).map_err(|e| e.to_string())
}

/// `progress-K.jsonl`: p_true of every validation image at every level, synthetic images
/// averaged over seeds and prompts per image and level.
pub fn progress(
    plan: &TrainPlan,
    learner: &Learner,
    version: &Version,
    k: u32,
) -> Result<(), String> {
    let (_, real, synthetic) = plan.validation.as_ref().expect("a validation set");
    let images = version.validation(real, synthetic, &plan.output)?;
    let files: Vec<LearnerImage> = images
        .iter()
        .map(|i| LearnerImage::File(i.path.clone()))
        .collect();
    let logits = learner.logits(&files).map_err(|e| e.to_string())?;
    let mut sums: BTreeMap<(u64, u16), (f64, u32)> = BTreeMap::new();
    for (image, row) in images.iter().zip(&logits) {
        let Some(label) = plan.class_index(&image.label) else {
            continue;
        };
        let entry = sums.entry((image.sample, image.level)).or_default();
        entry.0 += f64::from(score_logits(row, label).p_true);
        entry.1 += 1;
    }
    let mut text = String::new();
    for ((sample, level), (sum, n)) in sums {
        let line =
            serde_json::json!({"sample": sample, "level": level, "p_true": sum / f64::from(n)});
        writeln!(text, "{line}").expect("write to a string");
    }
    write_file(&plan.feedback_file("progress", k), text.as_bytes()).map_err(|e| e.to_string())
}

/// A bar over a stage's epochs (hidden unless `shown`).
pub fn bar(shown: bool, stage: u32, epochs: usize) -> indicatif::ProgressBar {
    if !shown {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(epochs as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{prefix} [{elapsed}] {bar:30} epoch {pos}/{len}")
            .expect("template"),
    );
    bar.set_prefix(format!("train stage {stage}"));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_numbered_feedback_files_are_ours() {
        assert!(is_feedback_file("checkpoint-3.jsonl"));
        assert!(is_feedback_file("progress-0.jsonl"));
        assert!(!is_feedback_file("checkpoint-x.jsonl"));
        assert!(!is_feedback_file("notes.jsonl"));
        assert!(!is_feedback_file(".checkpoint-1.jsonl.tmp-1-0"));
    }
}
