//! discl's own trainer: the client side of the trainer feedback protocol (README), run by the
//! driver for a graph's `train` node. For each stage N it reads the stage index and stage N's
//! manifest from the sink's current version, trains the built-in learner on them epoch by
//! epoch, writes `checkpoint-(N+1).jsonl` (p_true of every training sample) and, with a
//! validation set, `progress-(N+1).jsonl` into the feedback node's folder, and refreshes the
//! pipeline, whose next version plans and mixes stage N+1 from that feedback. The learner's
//! weights after each stage and its final ONNX export land under `<output>/<node>/`.

pub mod evaluate;
mod plan;
pub mod report;
pub mod tables;
mod write;

pub use plan::TrainPlan;
pub use report::{StageReport, TrainingReport};

use crate::pipeline::{PipelineError, RunningPipeline};
use crate::record::StagePlan;
use crate::runtime::learner::{Learner, LearnerImage, TrainRow};
use evaluate::{accuracy, Groups, TestSet};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use tables::Version;

fn run_error(e: impl std::fmt::Display) -> PipelineError {
    PipelineError::Run(e.to_string())
}

/// Trains stage after stage, refreshing `running` after each, until the curriculum has no
/// next stage, the node's `stages` are done, or `stop` is raised (between epochs).
pub fn drive(
    running: &mut RunningPipeline,
    plan: &TrainPlan,
    stop: Option<&AtomicBool>,
    progress: bool,
) -> Result<TrainingReport, PipelineError> {
    let stopped = || stop.is_some_and(|s| s.load(Ordering::SeqCst));
    let mut state = write::Resume::open(plan).map_err(run_error)?;
    let mut learner =
        Learner::new(plan.learner.clone(), plan.classes.clone()).map_err(run_error)?;
    if let Some(weights) = state.weights() {
        learner.load(&weights).map_err(run_error)?;
    }
    let test = match &plan.config.test {
        Some(folder) => Some(TestSet::read(folder, &plan.classes).map_err(run_error)?),
        None => None,
    };
    let mut version = running.refresh()?;
    let mut groups = None;
    if plan.validation.is_some() && state.report.stages.is_empty() {
        // progress-0: the untrained learner, the adaptive schedule's first baseline.
        let current = Version::current(&plan.sink(plan.validation_sink())).map_err(run_error)?;
        write::progress(plan, &learner, &current, 0).map_err(run_error)?;
    }
    let mut stage = state.report.stages.len() as u32;
    while !stopped() && plan.config.stages.is_none_or(|limit| stage < limit) {
        let current = Version::current(&plan.sink(&plan.items_sink)).map_err(run_error)?;
        let plans = current.plans(&plan.plans_input).map_err(run_error)?;
        let Some(stage_plan) = plans.iter().find(|p| p.stage == stage).cloned() else {
            break;
        };
        let items = current.stage(&plan.items_input, stage).map_err(run_error)?;
        let samples: Vec<tables::SampleRow> = Version::current(&plan.sink(&plan.samples_sink))
            .and_then(|v| v.rows(&plan.samples_input, None))
            .map_err(run_error)?;
        if groups.is_none() {
            groups = Some(plan.groups(&samples));
        }
        let started = Instant::now();
        let mut by_epoch: BTreeMap<u32, Vec<TrainRow>> = BTreeMap::new();
        let (mut examples, mut synthetic_examples) = (0, 0);
        for item in &items {
            let label = plan.class_index(&item.label).ok_or_else(|| {
                run_error(format!(
                    "{}: stage {stage}: class `{}` is not one of the learner's",
                    current.folder.display(),
                    item.label
                ))
            })?;
            examples += item.copies as usize;
            if item.level != crate::record::REAL_LEVEL {
                synthetic_examples += item.copies as usize;
            }
            let image = LearnerImage::File(item.path.clone().into());
            by_epoch.entry(item.epoch).or_default().push(TrainRow {
                image,
                label,
                copies: item.copies,
            });
        }
        let bar = write::bar(progress, stage, by_epoch.len());
        let total = planned_epochs(&plans, plan.config.stages);
        let mut last = None;
        for rows in by_epoch.values() {
            if stopped() {
                break;
            }
            let config = &plan.config;
            learner.set_learning_rate(config.lr_schedule.rate(
                config.learning_rate,
                learner.epoch(),
                total,
            ));
            last = Some(learner.train_epoch(rows).map_err(run_error)?);
            bar.inc(1);
        }
        bar.finish_and_clear();
        if stopped() {
            break;
        }
        let done = stage + 1;
        // The last stage: no listed stage comes after it (an adaptive stage still to be decided
        // lies before the listed real-only stage, so it does not end the run).
        let last_stage = plan.config.stages == Some(done) || plans.iter().all(|p| p.stage < done);
        let test_accuracy = match (&test, &groups) {
            (Some(test), Some(groups)) if plan.config.test_every_stage || last_stage => {
                Some(accuracy(&learner, test, groups).map_err(run_error)?.into())
            }
            _ => None,
        };
        if plan.config.score_training {
            write::checkpoint(plan, &learner, &samples, done).map_err(run_error)?;
        }
        if plan.validation.is_some() {
            let current =
                Version::current(&plan.sink(plan.validation_sink())).map_err(run_error)?;
            write::progress(plan, &learner, &current, done).map_err(run_error)?;
        }
        let last = last.expect("a planned stage has at least one epoch");
        let report = StageReport {
            stage,
            levels: stage_plan.levels.clone(),
            epochs: stage_plan.epochs,
            version,
            examples,
            synthetic_examples,
            loss: last.loss,
            train_accuracy: last.accuracy,
            seconds: started.elapsed().as_secs_f64(),
            test: test_accuracy,
        };
        state.report.groups = groups.as_ref().map(Into::into);
        state.finish_stage(&learner, report).map_err(run_error)?;
        version = running.refresh()?;
        stage = done;
    }
    if !state.report.stages.is_empty() && !stopped() {
        state.export(&learner).map_err(run_error)?;
    }
    Ok(state.report)
}

/// Every epoch the stage index plans, up to its last stage. A stage the index does not list yet
/// (an adaptive stage still to be decided) is counted with the epochs of the listed stage
/// before it, which is what the curriculum gives it. `limit`: the node's `stages`.
fn planned_epochs(plans: &[StagePlan], limit: Option<u32>) -> u64 {
    let mut sorted: Vec<&StagePlan> = plans
        .iter()
        .filter(|p| limit.is_none_or(|l| p.stage < l))
        .collect();
    sorted.sort_by_key(|p| p.stage);
    let (mut total, mut next, mut epochs) = (0u64, 0u32, 0u64);
    for plan in sorted {
        total += u64::from(plan.stage - next) * epochs;
        epochs = u64::from(plan.epochs);
        total += epochs;
        next = plan.stage + 1;
    }
    total
}

impl TrainPlan {
    /// Class counts of the training samples, in the learner's class order, and the groups.
    fn groups(&self, samples: &[tables::SampleRow]) -> Groups {
        let mut counts: indexmap::IndexMap<String, usize> =
            self.classes.iter().map(|c| (c.clone(), 0)).collect();
        for s in samples {
            if let Some(n) = counts.get_mut(&s.label) {
                *n += 1;
            }
        }
        Groups::by_count(&counts, self.config.many_above, self.config.few_below)
    }
}

#[cfg(test)]
mod tests {
    use super::planned_epochs;
    use crate::graph::ops::train::LrSchedule;
    use crate::record::StagePlan;

    fn plan(stage: u32, epochs: u32) -> StagePlan {
        StagePlan {
            stage,
            levels: Vec::new(),
            epochs,
        }
    }

    #[test]
    fn planned_epochs_count_the_stages_still_to_be_decided() {
        // Five curriculum stages of 2 epochs and a real-only stage of 1, listed in full …
        let full: Vec<StagePlan> = (0..5).map(|s| plan(s, 2)).chain([plan(5, 1)]).collect();
        assert_eq!(planned_epochs(&full, None), 11);
        // … or, adaptive, with stages 1–4 still to be decided.
        assert_eq!(planned_epochs(&[plan(5, 1), plan(0, 2)], None), 11);
        assert_eq!(planned_epochs(&full, Some(2)), 4);
        assert_eq!(planned_epochs(&[], None), 0);
    }

    #[test]
    fn the_cosine_falls_from_the_peak_towards_zero() {
        let rates: Vec<f64> = (0..4).map(|e| LrSchedule::Cosine.rate(1.0, e, 4)).collect();
        assert_eq!(rates[0], 1.0);
        assert!(rates.windows(2).all(|w| w[1] < w[0]), "{rates:?}");
        assert!((rates[2] - 0.5).abs() < 1e-12 && rates[3] > 0.0);
        assert_eq!(LrSchedule::Cosine.rate(1.0, 9, 4), 0.0);
        assert_eq!(LrSchedule::Constant.rate(0.5, 3, 4), 0.5);
    }
}
