//! The curriculum bench's world, shared by `benches/curriculum.rs` and
//! `tests/suite/curriculum_pandas.rs`: the synthetic records (the same as
//! `scripts/bench/curriculum_pandas.py` makes), the curriculum and mix rule, and the dataflow
//! from scores to stage manifests.

#![allow(dead_code)]

use differential_dataflow::input::{Input, InputSession};
use differential_dataflow::VecCollection;
use discl::operators::curriculum::{stage_plans, Curriculum, Schedule};
use discl::operators::mix::{mix, MixRule};
use discl::operators::{Combine, HardExt, HardSampleRule};
use discl::record::{Digest, GenKey, Sample, Score, StageItem, Synthetic, Value};
use timely::dataflow::Scope;

pub const LEVELS: [u16; 5] = [100, 300, 500, 700, 900];
pub const SEEDS: u64 = 100;
pub const PER_SAMPLE: u64 = LEVELS.len() as u64 * SEEDS;

/// (hard samples, which have every synthetic image; all samples) for `wanted` synthetic
/// records: the hard samples are 2% of the training set, as a long tail.
pub fn sizes(wanted: u64) -> (u64, u64) {
    let candidates = (wanted / PER_SAMPLE).max(1);
    (candidates, candidates * 50)
}

/// A deterministic pseudo-random number in [0, 1) for (a, b) — the same in the pandas script.
pub fn unit(a: u64, b: u64) -> f64 {
    let mut x = a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    x ^= x >> 33;
    x = x.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    x ^= x >> 33;
    (x >> 11) as f64 / (1u64 << 53) as f64
}

pub fn sample(id: u64) -> Sample {
    let label = format!("c{}", id % 100);
    Sample {
        id,
        name: format!("{label}/{id}.png"),
        path: format!("data/{label}/{id}.png"),
        label,
        digest: Digest::default(),
    }
}

/// The first `hard` ids are hard (p_true < 0.5) at checkpoint 0; an odd checkpoint flips one
/// sample in ten of those it scores, an even one flips them back.
pub fn score(id: u64, checkpoint: u64, hard: u64) -> Score {
    let flipped = checkpoint % 2 == 1 && unit(id, 7) < 0.1;
    let low = (id < hard) != flipped;
    let p = (unit(id, checkpoint) * 0.5 + if low { 0.0 } else { 0.5 }) as f32;
    Score {
        sample: id,
        checkpoint,
        p_true: Value(p),
        loss: Value(-(p.max(1e-6)).ln()),
        predicted: "c0".into(),
    }
}

/// The ids a new checkpoint scores: `changed` samples spread over the ids, so that hard and
/// other samples both change.
pub fn changed_ids(samples_n: u64, changed: u64) -> impl Iterator<Item = u64> {
    let step = (samples_n / changed.max(1)).max(1);
    (0..samples_n).step_by(step as usize).take(changed as usize)
}

pub fn synthetic(id: u64, level: u16, seed: u64) -> Synthetic {
    Synthetic {
        key: GenKey {
            sample: id,
            level,
            seed: seed as u32,
            prompt: format!("c{}", id % 100),
        },
        label: format!("c{}", id % 100),
        path: format!("synthetic/{id}-{level}-{seed}.png"),
        digest: Digest::default(),
        source: format!("data/{id}.png"),
        text_score: Some(Value(0.5)),
        image_score: None,
        retry: None,
    }
}

/// A hard sample's synthetic images.
pub fn images_of(id: u64) -> Vec<Synthetic> {
    let mut images = Vec::with_capacity(PER_SAMPLE as usize);
    for &level in &LEVELS {
        for seed in 0..SEEDS {
            images.push(synthetic(id, level, seed));
        }
    }
    images
}

pub fn curriculum() -> Curriculum {
    Curriculum {
        schedule: Schedule::DiverseToSpecific,
        levels: LEVELS.to_vec(),
        stages: LEVELS.len() as u32,
        epochs_per_stage: 3,
        real_epochs: 2,
        seed: 0,
        start_level: 100,
    }
}

pub fn rule() -> MixRule {
    MixRule {
        head_fraction: 0.3,
        tail_share: 0.136,
        oversample_real: false,
        seed: 0,
    }
}

/// The dataflow's inputs.
pub struct Inputs {
    pub samples: InputSession<u64, Sample, isize>,
    pub scores: InputSession<u64, Score, isize>,
    pub synthetic: InputSession<u64, Synthetic, isize>,
}

impl Inputs {
    /// Advances every input to `time` and flushes it.
    pub fn advance_to(&mut self, time: u64) {
        self.samples.advance_to(time);
        self.scores.advance_to(time);
        self.synthetic.advance_to(time);
        self.samples.flush();
        self.scores.flush();
        self.synthetic.flush();
    }
}

/// Scores → hard set (p_true below 0.5) → the hard samples' synthetic images → the
/// diverse-to-specific curriculum → stage manifests.
pub fn manifests<'scope>(
    scope: Scope<'scope, u64>,
) -> (Inputs, VecCollection<'scope, u64, StageItem>) {
    let (samples_in, samples) = scope.new_collection::<Sample, isize>();
    let (scores_in, scores) = scope.new_collection::<Score, isize>();
    let (synthetic_in, synthetic) = scope.new_collection::<Synthetic, isize>();
    let hard = samples
        .clone()
        .hard(scores, &[HardSampleRule::PTrueBelow(0.5)], Combine::Any);
    // Only hard samples' images enter (as the generate node would make them).
    let hard_ids = hard.clone().map(|s| s.id);
    let pool = synthetic
        .map(|s| (s.key.sample, s))
        .semijoin(hard_ids.distinct())
        .map(|(_, s)| s);
    let plans = stage_plans(scope, &curriculum(), None, 0);
    let items = mix(samples, hard, pool, plans, rule());
    let inputs = Inputs {
        samples: samples_in,
        scores: scores_in,
        synthetic: synthetic_in,
    };
    (inputs, items)
}

/// A manifest row as `curriculum_pandas.py --dump` writes it, after its version.
pub fn row_line(item: &StageItem) -> String {
    let seed = item.seed.map_or("-".to_string(), |s| s.to_string());
    let prompt = item.prompt.as_deref().unwrap_or("-");
    format!(
        "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
        item.stage,
        item.epoch,
        item.sample,
        item.level,
        seed,
        prompt,
        item.label,
        item.path,
        item.copies
    )
}
