//! The mix as it was first written — one reduce per (stage, epoch) over every synthetic image
//! of its levels — kept as the reference the sharded mix must equal, update for update.

use super::{fill, real_item, synthetic_item, tail_budget, MixRule};
use crate::record::{Level, Sample, StageItem, StagePlan, Synthetic};
use differential_dataflow::VecCollection;
use serde::{Deserialize, Serialize};

/// What one epoch's tail is chosen from.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
enum Part {
    /// How many head images the epoch holds.
    Heads(u64),
    /// A hard real image.
    Tail(Sample),
    /// A synthetic image at one of the stage's levels.
    Synthetic(Synthetic),
    /// The epoch exists (so a real-only epoch without synthetic images still gets its tail).
    Epoch(bool),
}

/// The stage manifests: `samples` are all real training images, `hard` the hard ones among
/// them, `synthetic` the (filtered) synthetic images of hard images, `plans` the curriculum.
pub fn reference_mix<'scope>(
    samples: VecCollection<'scope, u64, Sample>,
    hard: VecCollection<'scope, u64, Sample>,
    synthetic: VecCollection<'scope, u64, Synthetic>,
    plans: VecCollection<'scope, u64, StagePlan>,
    rule: MixRule,
) -> VecCollection<'scope, u64, StageItem> {
    let epochs = plans.flat_map(|plan| {
        (0..plan.epochs).map(move |epoch| (plan.stage, epoch, plan.levels.clone()))
    });
    let every_epoch = epochs
        .clone()
        .map(|(stage, epoch, levels)| ((), (stage, epoch, levels.is_empty())));
    let hard_ids = hard.clone().map(|s| (s.id, ()));
    let heads = samples
        .map(|s| (s.id, s))
        .antijoin(hard_ids.map(|(id, ())| id))
        .map(|(_, s)| ((), s))
        .join_map(
            every_epoch.clone(),
            move |(), sample, &(stage, epoch, _)| (stage, epoch, sample.clone()),
        )
        .filter(move |(stage, epoch, sample)| {
            reference_head_chosen(&rule, *stage, *epoch, sample.id)
        })
        .map(|(stage, epoch, sample)| real_item(stage, epoch, &sample, 1));
    let head_counts = heads
        .clone()
        .map(|item| (item.stage, item.epoch))
        .count()
        .map(|(key, n)| (key, Part::Heads(n as u64)));
    let tails = hard
        .map(|s| ((), s))
        .join_map(every_epoch.clone(), |(), sample, &(stage, epoch, _)| {
            ((stage, epoch), Part::Tail(sample.clone()))
        });
    let pool = synthetic.map(|s| (s.key.level, s)).join_map(
        epochs.clone().flat_map(|(stage, epoch, levels)| {
            levels
                .into_iter()
                .map(move |level: Level| (level, (stage, epoch)))
        }),
        |_, image, &(stage, epoch)| ((stage, epoch), Part::Synthetic(image.clone())),
    );
    let marks =
        every_epoch.map(|((), (stage, epoch, real_only))| ((stage, epoch), Part::Epoch(real_only)));
    let tail_items = head_counts
        .concat(tails)
        .concat(pool)
        .concat(marks)
        .reduce_named("MixTail", move |&(stage, epoch), input, output| {
            for item in epoch_tail(&rule, stage, epoch, input) {
                output.push((item, 1));
            }
        })
        .map(|(_, item)| item);
    heads.concat(tail_items)
}

/// One epoch's tail: every hard real image, then the budget's remainder filled from the
/// synthetic pool (or, in a real-only stage asked to oversample, from the hard real images).
fn epoch_tail(rule: &MixRule, stage: u32, epoch: u32, input: &[(&Part, isize)]) -> Vec<StageItem> {
    let (mut heads, mut real_only) = (0u64, false);
    let (mut tails, mut pool) = (Vec::new(), Vec::new());
    for (part, count) in input {
        if *count <= 0 {
            continue;
        }
        match part {
            Part::Heads(n) => heads = *n,
            Part::Epoch(r) => real_only = *r,
            Part::Tail(sample) => tails.push(sample),
            Part::Synthetic(image) => pool.push(image),
        }
    }
    let needed = tail_budget(rule, heads).saturating_sub(tails.len() as u64);
    let order = |bytes: Vec<u8>| reference_keyed(rule.seed, stage, epoch, &bytes);
    let mut extra = vec![0u32; tails.len()];
    if real_only && rule.oversample_real {
        let mut by_hash: Vec<(u64, usize)> = tails
            .iter()
            .enumerate()
            .map(|(i, s)| (order(s.id.to_le_bytes().to_vec()), i))
            .collect();
        by_hash.sort_unstable();
        for ((_, i), copies) in by_hash.iter().zip(fill(needed, tails.len())) {
            extra[*i] = copies;
        }
    }
    let mut items: Vec<StageItem> = tails
        .iter()
        .zip(extra)
        .map(|(sample, more)| real_item(stage, epoch, sample, 1 + more))
        .collect();
    if !real_only {
        let mut by_hash: Vec<(u64, &Synthetic)> = pool
            .iter()
            .map(|image| {
                let key = &image.key;
                let mut bytes =
                    [key.sample.to_le_bytes(), (key.level as u64).to_le_bytes()].concat();
                bytes.extend_from_slice(&key.seed.to_le_bytes());
                bytes.extend_from_slice(key.prompt.as_bytes());
                (order(bytes), *image)
            })
            .collect();
        by_hash.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1)));
        for ((_, image), copies) in by_hash.iter().zip(fill(needed, by_hash.len())) {
            if copies > 0 {
                items.push(synthetic_item(stage, epoch, image, copies));
            }
        }
    }
    items
}

/// The keyed hash as first written (a derive-key hasher made per call).
pub fn reference_keyed(seed: u64, stage: u32, epoch: u32, item: &[u8]) -> u64 {
    let mut hasher = blake3::Hasher::new_derive_key("discl 2026-11 mix v1");
    hasher.update(&seed.to_le_bytes());
    hasher.update(&stage.to_le_bytes());
    hasher.update(&epoch.to_le_bytes());
    hasher.update(item);
    u64::from_le_bytes(
        hasher.finalize().as_bytes()[..8]
            .try_into()
            .expect("8 bytes"),
    )
}

fn reference_head_chosen(rule: &MixRule, stage: u32, epoch: u32, sample: u64) -> bool {
    let key = reference_keyed(rule.seed, stage, epoch, &sample.to_le_bytes());
    ((key >> 11) as f64 / (1u64 << 53) as f64) < rule.head_fraction
}
