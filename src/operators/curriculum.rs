//! `curriculum`: which guidance levels enter each training stage (METHOD §5). Fixed schedules
//! are known from the start; the adaptive one decides stage s+1 from the trainer's validation
//! progress after s+1 stages: per image, p_true now minus p_true at the previous evaluation,
//! outliers beyond 1.5·IQR dropped per level, the level with the largest mean progress wins
//! (ties to the lower, more diverse level). Every schedule ends with a real-only stage.

use crate::record::{Level, Progress, SampleId, StagePlan, REAL_LEVEL};
use differential_dataflow::input::Input;
use differential_dataflow::VecCollection;
use std::collections::BTreeMap;
use timely::dataflow::Scope;

/// One evaluation's values per (validation image, level).
type Evaluation<V> = BTreeMap<(SampleId, Level), V>;

/// How levels are ordered over the curriculum stages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schedule {
    /// Levels ascending, one stage each (DisCL for long-tail data).
    DiverseToSpecific,
    /// Levels descending, one stage each.
    SpecificToDiverse,
    /// One level in every stage.
    Fixed(Level),
    /// Every level mixed in every stage.
    AllLevels,
    /// One level per stage chosen by keyed hash of (seed, stage).
    Random,
    /// λ = 0 (text only) in every stage.
    TextOnly,
    /// Chosen from validation progress (DisCL for low-quality data).
    Adaptive,
    /// No synthetic images in any stage: the baselines (plain, or with the hard real images
    /// oversampled by the mix's `oversample_real`) trained as long as a curriculum.
    RealOnly,
}

/// A curriculum: the schedule, the levels it draws from, and the stage lengths.
#[derive(Clone, Debug, PartialEq)]
pub struct Curriculum {
    pub schedule: Schedule,
    /// Levels in per mille, ascending.
    pub levels: Vec<Level>,
    /// Curriculum stages (the level-ordered ones take one per level).
    pub stages: u32,
    pub epochs_per_stage: u32,
    /// Epochs of the final real-only stage (0: none).
    pub real_epochs: u32,
    /// Keys the random schedule.
    pub seed: u64,
    /// The adaptive schedule's first level.
    pub start_level: Level,
}

impl Curriculum {
    /// Stages before the real-only one.
    pub fn curriculum_stages(&self) -> u32 {
        match self.schedule {
            Schedule::DiverseToSpecific | Schedule::SpecificToDiverse => self.levels.len() as u32,
            _ => self.stages,
        }
    }

    /// The plans known without any progress: every stage of a fixed schedule; the first and
    /// the real-only stage of the adaptive one.
    pub fn static_plans(&self) -> Vec<StagePlan> {
        let n = self.curriculum_stages();
        let plan = |stage: u32, levels: Vec<Level>| StagePlan {
            stage,
            levels,
            epochs: self.epochs_per_stage,
        };
        let mut plans: Vec<StagePlan> = match self.schedule {
            Schedule::DiverseToSpecific => (0..n)
                .map(|s| plan(s, vec![self.levels[s as usize]]))
                .collect(),
            Schedule::SpecificToDiverse => (0..n)
                .map(|s| plan(s, vec![self.levels[(n - 1 - s) as usize]]))
                .collect(),
            Schedule::Fixed(level) => (0..n).map(|s| plan(s, vec![level])).collect(),
            Schedule::AllLevels => (0..n).map(|s| plan(s, self.levels.clone())).collect(),
            Schedule::Random => (0..n)
                .map(|s| {
                    plan(
                        s,
                        vec![self.levels[keyed_index(self.seed, s, self.levels.len())]],
                    )
                })
                .collect(),
            Schedule::TextOnly => (0..n).map(|s| plan(s, vec![0])).collect(),
            Schedule::RealOnly => (0..n).map(|s| plan(s, Vec::new())).collect(),
            Schedule::Adaptive => (0..n.min(1))
                .map(|s| plan(s, vec![self.start_level]))
                .collect(),
        };
        if self.real_epochs > 0 {
            plans.push(StagePlan {
                stage: n,
                levels: Vec::new(),
                epochs: self.real_epochs,
            });
        }
        plans
    }

    /// The adaptive plans for stages 1.. that the evaluations decide: stage s needs the
    /// evaluation after s stages; the previous one (after s − 1) is the baseline, or zero
    /// when the trainer sent none.
    pub fn adaptive_plans(&self, progress: &[Progress]) -> Vec<StagePlan> {
        if self.schedule != Schedule::Adaptive {
            return Vec::new();
        }
        // Several lines for one image and level (one per seed, say) count as their mean.
        let mut sums: BTreeMap<u32, Evaluation<(f64, u32)>> = BTreeMap::new();
        for p in progress.iter().filter(|p| self.levels.contains(&p.level)) {
            let entry = sums
                .entry(p.after_stages)
                .or_default()
                .entry((p.sample, p.level))
                .or_default();
            *entry = (entry.0 + p.p_true.0 as f64, entry.1 + 1);
        }
        let evaluations: BTreeMap<u32, Evaluation<f64>> = sums
            .into_iter()
            .map(|(after, images)| {
                let means = images.into_iter().map(|(k, (sum, n))| (k, sum / n as f64));
                (after, means.collect())
            })
            .collect();
        (1..self.curriculum_stages())
            .filter_map(|stage| {
                let now = evaluations.get(&stage)?;
                let level = pick_level(now, evaluations.get(&(stage - 1)))?;
                Some(StagePlan {
                    stage,
                    levels: vec![level],
                    epochs: self.epochs_per_stage,
                })
            })
            .collect()
    }
}

/// The level with the largest mean progress (p now − p before), outliers beyond 1.5·IQR
/// dropped per level; ties go to the lower level. Without a previous evaluation p before counts
/// as 0; with one, images it did not evaluate are left out (their change is unknown).
pub fn pick_level(now: &Evaluation<f64>, before: Option<&Evaluation<f64>>) -> Option<Level> {
    let mut by_level: BTreeMap<Level, Vec<f64>> = BTreeMap::new();
    for (&(sample, level), &p) in now {
        let previous = match before {
            None => 0.0,
            Some(before) => match before.get(&(sample, level)) {
                Some(previous) => *previous,
                None => continue,
            },
        };
        by_level.entry(level).or_default().push(p - previous);
    }
    let mut best: Option<(Level, f64)> = None;
    for (level, values) in by_level {
        let Some(mean) = mean_without_outliers(values) else {
            continue;
        };
        // Levels ascend, so a strictly larger mean is needed to replace an earlier level.
        if best.is_none_or(|(_, b)| mean > b) {
            best = Some((level, mean));
        }
    }
    best.map(|(level, _)| level)
}

/// The mean of the values within [Q1 − 1.5·IQR, Q3 + 1.5·IQR] (quartiles by linear
/// interpolation, as numpy's default).
pub fn mean_without_outliers(mut values: Vec<f64>) -> Option<f64> {
    values.retain(|v| v.is_finite());
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let (q1, q3) = (quantile(&values, 0.25), quantile(&values, 0.75));
    let (low, high) = (q1 - 1.5 * (q3 - q1), q3 + 1.5 * (q3 - q1));
    let kept: Vec<f64> = values
        .into_iter()
        .filter(|v| (low..=high).contains(v))
        .collect();
    Some(kept.iter().sum::<f64>() / kept.len() as f64)
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    let position = q * (sorted.len() - 1) as f64;
    let (below, above) = (position.floor() as usize, position.ceil() as usize);
    sorted[below] + (sorted[above] - sorted[below]) * (position - below as f64)
}

/// A keyed choice in `0..n` for a stage.
fn keyed_index(seed: u64, stage: u32, n: usize) -> usize {
    let mut hasher = blake3::Hasher::new_derive_key("discl 2026-11 random curriculum v1");
    hasher.update(&seed.to_le_bytes());
    hasher.update(&stage.to_le_bytes());
    let bytes: [u8; 8] = hasher.finalize().as_bytes()[..8]
        .try_into()
        .expect("8 bytes");
    (u64::from_le_bytes(bytes) % n as u64) as usize
}

/// The stage plans of a curriculum: the static ones at `first_version`, and — for the adaptive
/// schedule — those its progress input decides, recomputed as progress changes.
pub fn stage_plans<'scope>(
    scope: Scope<'scope, u64>,
    curriculum: &Curriculum,
    progress: Option<VecCollection<'scope, u64, Progress>>,
    first_version: u64,
) -> VecCollection<'scope, u64, StagePlan> {
    // Worker 0 alone states the fixed plans; the dataflow spreads them.
    let fixed: Vec<(StagePlan, u64, isize)> = match scope.index() {
        0 => curriculum
            .static_plans()
            .into_iter()
            .map(|plan| (plan, first_version, 1))
            .collect(),
        _ => Vec::new(),
    };
    let (_input, plans) = scope.new_collection_from_raw(fixed);
    let Some(progress) = progress else {
        return plans;
    };
    let adaptive = curriculum.clone();
    let decided = progress
        .filter(|p| p.level != REAL_LEVEL)
        .map(|p| ((), p))
        .reduce_named("AdaptiveCurriculum", move |_, input, output| {
            let progress: Vec<Progress> = input.iter().map(|(p, _)| (*p).clone()).collect();
            for plan in adaptive.adaptive_plans(&progress) {
                output.push((plan, 1));
            }
        })
        .map(|((), plan)| plan);
    plans.concat(decided)
}

#[cfg(test)]
mod tests;
