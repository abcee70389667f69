//! `op = "sample"`: keeps a fraction of the records chosen by keyed hash, so the same inputs
//! and seed keep the same records whatever the worker count. By default the choice is per
//! sample id, so sampling the samples, their scores and their synthetic images with one seed
//! keeps matching subsets; `by = "record"` chooses each record on its own.

use super::{Dataflow, GraphContext, ModelPool, Node, NodeInfo, Op, OpError, Opened, Ready, Stream};
use crate::operators::NodeStats;
use crate::record::{Progress, RecordKind, Sample, Score, StageItem, Synthetic};
use differential_dataflow::VecCollection;
use serde::Deserialize;
use std::sync::Arc;

/// `op = "sample"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SampleConfig {
    /// The share of records kept, in (0, 1].
    pub fraction: f64,
    /// What the choice is keyed by: `"sample"` (default: the sample id, consistent across
    /// record kinds) or `"record"` (each record on its own).
    #[serde(default)]
    pub by: SampleBy,
    /// Seed of the keyed hash; the pipeline's seed when absent.
    #[serde(default)]
    pub seed: Option<u64>,
}

/// What the keyed choice is keyed by.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum SampleBy {
    #[default]
    Sample,
    Record,
}

/// The identity a record is chosen by.
pub trait SampleKey {
    /// The sample id the record is about.
    fn sample(&self) -> u64;
    /// Bytes that identify the record itself.
    fn identity(&self) -> Vec<u8>;
}

impl SampleKey for Sample {
    fn sample(&self) -> u64 {
        self.id
    }
    fn identity(&self) -> Vec<u8> {
        self.id.to_le_bytes().to_vec()
    }
}

impl SampleKey for Score {
    fn sample(&self) -> u64 {
        self.sample
    }
    fn identity(&self) -> Vec<u8> {
        [self.sample.to_le_bytes(), self.checkpoint.to_le_bytes()].concat()
    }
}

impl SampleKey for Synthetic {
    fn sample(&self) -> u64 {
        self.key.sample
    }
    fn identity(&self) -> Vec<u8> {
        let key = &self.key;
        let mut bytes = [key.sample.to_le_bytes(), (key.level as u64).to_le_bytes(), (key.seed as u64).to_le_bytes()].concat();
        bytes.extend_from_slice(key.prompt.as_bytes());
        bytes
    }
}

impl SampleKey for Progress {
    fn sample(&self) -> u64 {
        self.sample
    }
    fn identity(&self) -> Vec<u8> {
        [self.sample.to_le_bytes(), (self.level as u64).to_le_bytes(), (self.after_stages as u64).to_le_bytes()].concat()
    }
}

impl SampleKey for StageItem {
    fn sample(&self) -> u64 {
        self.sample
    }
    fn identity(&self) -> Vec<u8> {
        let mut bytes = [self.sample.to_le_bytes(), (self.level as u64).to_le_bytes(), self.seed.map_or(u64::MAX, u64::from).to_le_bytes()].concat();
        bytes.extend_from_slice(&self.stage.to_le_bytes());
        bytes.extend_from_slice(&self.epoch.to_le_bytes());
        bytes.extend_from_slice(self.prompt.as_deref().unwrap_or("").as_bytes());
        bytes
    }
}

/// Whether a record with these key bytes is kept: a keyed hash below `fraction` of the range.
pub fn chosen(seed: u64, key: &[u8], fraction: f64) -> bool {
    let mut hasher = blake3::Hasher::new_derive_key("discl 2026-11 sample op v1");
    hasher.update(&seed.to_le_bytes());
    hasher.update(key);
    let bytes: [u8; 8] = hasher.finalize().as_bytes()[..8].try_into().expect("8 bytes");
    // 53 bits: exactly representable, so the threshold comparison is exact.
    let unit = (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64;
    unit < fraction
}

impl Op for SampleConfig {
    fn kind(&self) -> &'static str {
        "sample"
    }
    fn arity(&self) -> (usize, usize) {
        (1, 1)
    }
    fn check(&self, _graph: &GraphContext) -> Vec<OpError> {
        if !(self.fraction > 0.0 && self.fraction <= 1.0) {
            let message = format!("fraction = {} must be in (0, 1]", self.fraction);
            return vec![OpError::field("fraction", message)];
        }
        Vec::new()
    }
    fn output(&self, inputs: &[RecordKind]) -> Result<Option<RecordKind>, OpError> {
        match inputs {
            [RecordKind::StagePlan] => Err(OpError::field("inputs", "stage plans are not sampled")),
            [kind] => Ok(Some(*kind)),
            _ => Err(super::wrong_inputs("one input", inputs)),
        }
    }
    fn dot_detail(&self) -> String {
        format!("{} by {:?}", self.fraction, self.by).to_lowercase()
    }
    fn open(&self, _node: &NodeInfo, _pool: &mut ModelPool) -> Result<Box<dyn Opened>, Vec<OpError>> {
        Ok(Box::new(Ready(self.clone())))
    }
}

impl Node for SampleConfig {
    fn build<'scope>(
        &self,
        dataflow: &mut Dataflow<'scope>,
        node: &NodeInfo,
        inputs: &[Stream<'scope>],
    ) -> Stream<'scope> {
        let stats = dataflow.stats_of(&node.name);
        let choice = Choice {
            seed: self.seed.unwrap_or(dataflow.run.seed),
            fraction: self.fraction,
            by: self.by,
        };
        match &inputs[0] {
            Stream::Samples(c) => Stream::Samples(sampled(c, choice, stats)),
            Stream::Scores(c) => Stream::Scores(sampled(c, choice, stats)),
            Stream::Synthetics(c) => Stream::Synthetics(sampled(c, choice, stats)),
            Stream::Progress(c) => Stream::Progress(sampled(c, choice, stats)),
            Stream::StageItems(c) => Stream::StageItems(sampled(c, choice, stats)),
            Stream::Plans(_) => unreachable!("the compiler refuses stage plans"),
            Stream::Nothing => unreachable!("the compiler refuses sinks as inputs"),
        }
    }
}

#[derive(Clone, Copy)]
struct Choice {
    seed: u64,
    fraction: f64,
    by: SampleBy,
}

impl Choice {
    fn keeps(&self, record: &impl SampleKey) -> bool {
        match self.by {
            SampleBy::Sample => chosen(self.seed, &record.sample().to_le_bytes(), self.fraction),
            SampleBy::Record => chosen(self.seed, &record.identity(), self.fraction),
        }
    }
}

fn sampled<'scope, D>(
    records: &VecCollection<'scope, u64, D>,
    choice: Choice,
    stats: Arc<NodeStats>,
) -> VecCollection<'scope, u64, D>
where
    D: SampleKey + differential_dataflow::Data,
{
    let counted = Arc::clone(&stats);
    records
        .clone()
        .inspect(move |(_, _, d)| counted.records_in(*d))
        .filter(move |record| choice.keeps(record))
        .inspect(move |(_, _, d)| stats.records_out(*d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_about_the_fraction_and_the_same_records_for_the_same_seed() {
        let kept: Vec<u64> = (0..10_000u64).filter(|i| chosen(7, &i.to_le_bytes(), 0.1)).collect();
        assert!((900..1100).contains(&kept.len()), "{}", kept.len());
        let again: Vec<u64> = (0..10_000u64).filter(|i| chosen(7, &i.to_le_bytes(), 0.1)).collect();
        assert_eq!(kept, again);
        let other: Vec<u64> = (0..10_000u64).filter(|i| chosen(8, &i.to_le_bytes(), 0.1)).collect();
        assert_ne!(kept, other);
        assert!((0..1000u64).all(|i| chosen(1, &i.to_le_bytes(), 1.0)));
    }

    #[test]
    fn a_smaller_fraction_keeps_a_subset() {
        let small: Vec<u64> = (0..5000u64).filter(|i| chosen(3, &i.to_le_bytes(), 0.2)).collect();
        assert!(small.iter().all(|i| chosen(3, &i.to_le_bytes(), 0.5)));
    }
}
