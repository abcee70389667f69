//! `mix`: the training manifest of every stage and epoch (METHOD §5). Each epoch holds a fresh
//! keyed-hash share of the non-hard ("head") real images; all hard ("tail") real images; and a
//! tail budget — so that tail items make up `tail_share` of the epoch — filled with synthetic
//! images of the stage's levels, chosen by keyed hash, with replacement when there are too few.
//! A real-only stage fills the budget with copies of the hard real images when asked to.
//! Every choice is a keyed hash of (seed, stage, epoch, item), so the same inputs give the same
//! manifests whatever the workers or the order updates arrive in.
//!
//! Built to stay cheap at a million synthetic images: heads are chosen inside the join with the
//! epochs (no samples × epochs collection); an epoch's tail (hard real images, and how many
//! synthetic slots remain) is one small reduce; the synthetic pool is split into shards by
//! the top bits of each image's keyed hash, and only the shards the budget reaches are ranked
//! (see [`pool`]), so a changed budget or pool re-ranks a shard, not an epoch.

mod pool;
#[cfg(test)]
mod reference;

use crate::record::{Sample, StageItem, StagePlan, Synthetic, REAL_LEVEL};
use blake3::hazmat::HasherExt;
use differential_dataflow::operators::CountTotal;
use differential_dataflow::VecCollection;
use serde::{Deserialize, Serialize};
use std::sync::OnceLock;

/// How a mix fills each epoch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MixRule {
    /// Share of the non-hard real images in each epoch (1.0: all of them).
    pub head_fraction: f64,
    /// Share of the epoch that hard items (real and synthetic) make up.
    pub tail_share: f64,
    /// In real-only stages, fill the tail budget with copies of hard real images.
    pub oversample_real: bool,
    pub seed: u64,
}

/// The mix's hasher for one epoch: BLAKE3 in derive-key mode ("discl 2026-11 mix v1") over
/// (seed, stage, epoch, item); the context is hashed once per process, not per item.
fn epoch_hasher(seed: u64, stage: u32, epoch: u32) -> blake3::Hasher {
    static CONTEXT: OnceLock<blake3::hazmat::ContextKey> = OnceLock::new();
    let context =
        CONTEXT.get_or_init(|| blake3::hazmat::hash_derive_key_context("discl 2026-11 mix v1"));
    let mut hasher = blake3::Hasher::new_from_context_key(context);
    hasher.update(&seed.to_le_bytes());
    hasher.update(&stage.to_le_bytes());
    hasher.update(&epoch.to_le_bytes());
    hasher
}

fn first_u64(hasher: &blake3::Hasher) -> u64 {
    let bytes: [u8; 8] = hasher.finalize().as_bytes()[..8]
        .try_into()
        .expect("8 bytes");
    u64::from_le_bytes(bytes)
}

/// A keyed hash of an item in one epoch.
fn keyed(seed: u64, stage: u32, epoch: u32, item: &[u8]) -> u64 {
    let mut hasher = epoch_hasher(seed, stage, epoch);
    hasher.update(item);
    first_u64(&hasher)
}

/// Whether a head image enters an epoch.
pub fn head_chosen(rule: &MixRule, stage: u32, epoch: u32, sample: u64) -> bool {
    let unit =
        (keyed(rule.seed, stage, epoch, &sample.to_le_bytes()) >> 11) as f64 / (1u64 << 53) as f64;
    unit < rule.head_fraction
}

/// The tail budget of an epoch with `heads` head images.
pub fn tail_budget(rule: &MixRule, heads: u64) -> u64 {
    if rule.tail_share <= 0.0 {
        return 0;
    }
    (heads as f64 * rule.tail_share / (1.0 - rule.tail_share)).ceil() as u64
}

/// Copies of each of `pool` (already in keyed-hash order) filling `needed` slots: every item
/// `needed / n` times, the first `needed % n` once more.
pub fn fill(needed: u64, pool: usize) -> Vec<u32> {
    if pool == 0 {
        return Vec::new();
    }
    let (each, extra) = (needed / pool as u64, (needed % pool as u64) as usize);
    (0..pool)
        .map(|i| (each + u64::from(i < extra)) as u32)
        .collect()
}

fn real_item(stage: u32, epoch: u32, sample: &Sample, copies: u32) -> StageItem {
    StageItem {
        stage,
        epoch,
        sample: sample.id,
        level: REAL_LEVEL,
        seed: None,
        prompt: None,
        label: sample.label.clone(),
        path: sample.path.clone(),
        copies,
    }
}

fn synthetic_item(stage: u32, epoch: u32, image: &Synthetic, copies: u32) -> StageItem {
    StageItem {
        stage,
        epoch,
        sample: image.key.sample,
        level: image.key.level,
        seed: Some(image.key.seed),
        prompt: Some(image.key.prompt.clone()),
        label: image.label.clone(),
        path: image.path.clone(),
        copies,
    }
}

/// What an epoch's tail reduce sees.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
enum Part {
    /// How many head images the epoch holds.
    Heads(u64),
    /// How many hard real images it holds.
    Tails(u64),
    /// A hard real image (only in real-only epochs that oversample them).
    Tail(Sample),
    /// The epoch exists, and whether it is real only.
    Epoch(bool),
}

/// What an epoch's tail reduce gives: an oversampled hard real image's row, or how many
/// synthetic slots the budget leaves.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
enum TailOut {
    Item(StageItem),
    Slots(u64),
}

/// The stage manifests: `samples` are all real training images, `hard` the hard ones among
/// them, `synthetic` the (filtered) synthetic images of hard images, `plans` the curriculum.
/// Each hard sample and synthetic image is expected once (as every op gives them).
pub fn mix<'scope>(
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
        .map(|(stage, epoch, levels)| ((), (stage, epoch, levels.is_empty())))
        .arrange_by_key_named("MixEpochs");
    let hard_ids = hard.clone().map(|s| s.id);
    // Each head image is tried against each epoch inside the join; only those chosen come out.
    let heads = samples
        .map(|s| (s.id, s))
        .antijoin(hard_ids)
        .map(|(_, s)| ((), s))
        .join_core(
            every_epoch.clone(),
            move |(), sample, &(stage, epoch, _)| {
                head_chosen(&rule, stage, epoch, sample.id)
                    .then(|| real_item(stage, epoch, sample, 1))
            },
        );
    let head_counts = heads
        .clone()
        .map(|item| (item.stage, item.epoch))
        .count_total()
        .map(|(key, n)| (key, Part::Heads(n as u64)));
    // Every hard real image is in every epoch once; a real-only epoch that oversamples them
    // ranks them in its tail reduce instead.
    let oversampled = move |real_only: bool| real_only && rule.oversample_real;
    let hard = hard.map(|s| ((), s)).arrange_by_key_named("MixHard");
    let tail_rows = hard.clone().join_core(
        every_epoch.clone(),
        move |(), sample, &(stage, epoch, real_only)| {
            (!oversampled(real_only)).then(|| real_item(stage, epoch, sample, 1))
        },
    );
    let to_rank = hard.clone().join_core(
        every_epoch.clone(),
        move |(), sample, &(stage, epoch, real_only)| {
            oversampled(real_only).then(|| ((stage, epoch), Part::Tail(sample.clone())))
        },
    );
    let tail_counts = hard
        .as_collection(|(), _| ())
        .count_total()
        .join_core(every_epoch.clone(), |(), n, &(stage, epoch, _)| {
            Some(((stage, epoch), Part::Tails(*n as u64)))
        });
    let marks = every_epoch
        .as_collection(|(), &(stage, epoch, real_only)| ((stage, epoch), Part::Epoch(real_only)));
    let tail = head_counts
        .concat(tail_counts)
        .concat(to_rank)
        .concat(marks)
        .reduce_named("MixTail", move |&(stage, epoch), input, output| {
            for out in epoch_tail(&rule, stage, epoch, input) {
                output.push((out, 1));
            }
        });
    let ranked_rows = tail.clone().flat_map(|(_, out)| match out {
        TailOut::Item(item) => Some(item),
        TailOut::Slots(_) => None,
    });
    let slots = tail.flat_map(|(key, out)| match out {
        TailOut::Slots(n) => Some((key, n)),
        TailOut::Item(_) => None,
    });
    let chosen = pool::synthetic_items(synthetic, epochs, slots, rule);
    heads.concat(tail_rows).concat(ranked_rows).concat(chosen)
}

/// One epoch's tail: the synthetic slots the budget leaves after the hard real images; in a
/// real-only stage asked to oversample, the hard real images with the remainder as extra
/// copies instead.
fn epoch_tail(rule: &MixRule, stage: u32, epoch: u32, input: &[(&Part, isize)]) -> Vec<TailOut> {
    let (mut heads, mut tails, mut real_only) = (0u64, 0u64, false);
    let mut ranked = Vec::new();
    for (part, count) in input {
        if *count <= 0 {
            continue;
        }
        match part {
            Part::Heads(n) => heads = *n,
            Part::Tails(n) => tails = *n,
            Part::Epoch(r) => real_only = *r,
            Part::Tail(sample) => ranked.push(sample),
        }
    }
    if !real_only {
        let needed = tail_budget(rule, heads).saturating_sub(tails);
        return if needed > 0 {
            vec![TailOut::Slots(needed)]
        } else {
            Vec::new()
        };
    }
    if !rule.oversample_real {
        return Vec::new();
    }
    let needed = tail_budget(rule, heads).saturating_sub(ranked.len() as u64);
    let mut by_hash: Vec<(u64, usize)> = ranked
        .iter()
        .enumerate()
        .map(|(i, s)| (keyed(rule.seed, stage, epoch, &s.id.to_le_bytes()), i))
        .collect();
    by_hash.sort_unstable();
    let mut extra = vec![0u32; ranked.len()];
    for ((_, i), copies) in by_hash.iter().zip(fill(needed, ranked.len())) {
        extra[*i] = copies;
    }
    ranked
        .iter()
        .zip(extra)
        .map(|(sample, more)| TailOut::Item(real_item(stage, epoch, sample, 1 + more)))
        .collect()
}

#[cfg(test)]
mod tests;
