//! `op = "curriculum"`: which guidance levels enter each training stage, by one of METHOD §5's
//! schedules; the adaptive one reads the trainer's validation progress (a feedback node's
//! `progress` output) and decides each next stage as evaluations arrive.

use super::generate::Levels;
use super::{Dataflow, GraphContext, ModelPool, Node, NodeInfo, Op, OpError, Opened, Ready, Stream};
use crate::operators::curriculum::{stage_plans, Curriculum, Schedule};
use crate::record::{Level, RecordKind};
use serde::Deserialize;
use std::sync::Arc;

/// `op = "curriculum"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CurriculumConfig {
    /// `diverse_to_specific`, `specific_to_diverse`, `fixed`, `all_levels`, `random`,
    /// `text_only`, `adaptive` or `real_only` (a baseline: real data in every stage).
    pub schedule: ScheduleName,
    /// The guidance levels λ the schedule draws from (those the generate node makes).
    pub levels: Levels,
    /// The one level of the `fixed` schedule.
    #[serde(default)]
    pub level: Option<f64>,
    /// Curriculum stages for the schedules that are not one stage per level (default: as
    /// many as levels, so every schedule trains as long).
    #[serde(default)]
    pub stages: Option<u32>,
    /// Epochs of each curriculum stage.
    #[serde(default = "default_epochs")]
    pub epochs_per_stage: u32,
    /// Epochs of the final real-only stage (0: none).
    #[serde(default = "default_real_epochs")]
    pub real_epochs: u32,
    /// Seed of the `random` schedule; the pipeline's when absent.
    #[serde(default)]
    pub seed: Option<u64>,
    /// The adaptive schedule's first level (default: the lowest, most diverse).
    #[serde(default)]
    pub start_level: Option<f64>,
}

fn default_epochs() -> u32 {
    15
}
fn default_real_epochs() -> u32 {
    5
}

/// A schedule's name in graph files.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleName {
    DiverseToSpecific,
    SpecificToDiverse,
    Fixed,
    AllLevels,
    Random,
    TextOnly,
    Adaptive,
    RealOnly,
}

/// λ as per mille, if on the grid and in [0, 1).
fn per_mille(level: f64) -> Option<Level> {
    let scaled = (level * 1000.0).round();
    ((0.0..1.0).contains(&level) && (scaled / 1000.0 - level).abs() < 1e-9).then_some(scaled as Level)
}

impl CurriculumConfig {
    fn curriculum(&self, seed: u64) -> Curriculum {
        let levels = self.levels.0.clone();
        let schedule = match self.schedule {
            ScheduleName::DiverseToSpecific => Schedule::DiverseToSpecific,
            ScheduleName::SpecificToDiverse => Schedule::SpecificToDiverse,
            ScheduleName::Fixed => Schedule::Fixed(self.level.and_then(per_mille).unwrap_or(levels[0])),
            ScheduleName::AllLevels => Schedule::AllLevels,
            ScheduleName::Random => Schedule::Random,
            ScheduleName::TextOnly => Schedule::TextOnly,
            ScheduleName::Adaptive => Schedule::Adaptive,
            ScheduleName::RealOnly => Schedule::RealOnly,
        };
        Curriculum {
            schedule,
            stages: self.stages.unwrap_or(levels.len() as u32),
            epochs_per_stage: self.epochs_per_stage,
            real_epochs: self.real_epochs,
            seed: self.seed.unwrap_or(seed),
            start_level: self.start_level.and_then(per_mille).unwrap_or(levels[0]),
            levels,
        }
    }
}

impl Op for CurriculumConfig {
    fn kind(&self) -> &'static str {
        "curriculum"
    }
    fn arity(&self) -> (usize, usize) {
        if self.schedule == ScheduleName::Adaptive {
            (1, 1)
        } else {
            (0, 0)
        }
    }
    fn check(&self, _graph: &GraphContext) -> Vec<OpError> {
        let mut errors = Vec::new();
        let single = |field: &'static str, value: Option<f64>, errors: &mut Vec<OpError>| {
            if let Some(level) = value {
                match per_mille(level) {
                    Some(l) if self.levels.0.contains(&l) => {}
                    _ => errors.push(OpError::field(
                        field,
                        format!("{field} = {level} is not one of `levels`"),
                    )),
                }
            }
        };
        single("level", self.level, &mut errors);
        single("start_level", self.start_level, &mut errors);
        match self.schedule {
            ScheduleName::Fixed if self.level.is_none() => {
                errors.push(OpError::field("level", "the fixed schedule needs `level`"))
            }
            ScheduleName::TextOnly if !self.levels.0.contains(&0) => errors.push(OpError::field(
                "levels",
                "the text_only schedule needs level 0 among `levels`",
            )),
            _ => {}
        }
        if self.stages == Some(0) {
            errors.push(OpError::field("stages", "stages must be at least 1"));
        }
        if self.epochs_per_stage == 0 {
            errors.push(OpError::field("epochs_per_stage", "epochs_per_stage must be at least 1"));
        }
        errors
    }
    fn output(&self, inputs: &[RecordKind]) -> Result<Option<RecordKind>, OpError> {
        match (self.schedule, inputs) {
            (ScheduleName::Adaptive, [RecordKind::Progress]) | (_, []) => Ok(Some(RecordKind::StagePlan)),
            (ScheduleName::Adaptive, _) => Err(super::wrong_inputs(
                "one input of Progress (a feedback node's `progress` output)",
                inputs,
            )),
            _ => Err(OpError::field("inputs", "only the adaptive schedule takes an input")),
        }
    }
    fn dot_detail(&self) -> String {
        format!("{:?}", self.schedule).to_lowercase()
    }
    fn open(&self, _node: &NodeInfo, _pool: &mut ModelPool) -> Result<Box<dyn Opened>, Vec<OpError>> {
        Ok(Box::new(Ready(self.clone())))
    }
}

impl Node for CurriculumConfig {
    fn build<'scope>(
        &self,
        dataflow: &mut Dataflow<'scope>,
        node: &NodeInfo,
        inputs: &[Stream<'scope>],
    ) -> Stream<'scope> {
        let stats = dataflow.stats_of(&node.name);
        let curriculum = self.curriculum(dataflow.run.seed);
        let progress = inputs.first().map(Stream::progress);
        let plans = stage_plans(dataflow.scope, &curriculum, progress, dataflow.run.first_version);
        let counted = Arc::clone(&stats);
        Stream::Plans(plans.inspect(move |(_, _, d)| counted.records_out(*d)))
    }
}
