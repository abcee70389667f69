//! The synthetic images of each epoch's tail. An epoch with `slots` synthetic slots and a pool
//! of n images of its levels ranks the pool by keyed hash (ties by the image itself) and gives
//! the image at rank r `slots / n` copies, one more when r < `slots % n` (with replacement when
//! the pool is short). Ranking the whole pool of an epoch whenever anything changes costs a
//! pass over every image; instead each (epoch, image) lands in one of [`SHARDS`] shards by the
//! top bits of its hash, so shards hold consecutive ranks. A count per shard (kept by
//! differential, not recomputed) gives each shard its first rank. Of the shards the slots
//! reach, every image of a shard the slots cover (or of which no image gets one more) gets the
//! same copies, so those rows come from a join of image and shard, one row per image; only
//! the shard where the slots end is ranked, on its own. A new checkpoint that moves a few hard
//! samples changes their images' rows and re-ranks one shard an epoch, not every epoch's pool.

use super::{epoch_hasher, first_u64, synthetic_item, MixRule};
use crate::record::{Level, StageItem, Synthetic};
use differential_dataflow::operators::CountTotal;
use differential_dataflow::VecCollection;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Shards per epoch (the top 10 bits of the hash).
pub const SHARDS: u64 = 1024;

/// (stage, epoch, shard).
type ShardKey = (u32, u32, u16);

/// How a reached shard's images get their copies.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
enum Share {
    /// Every image gets this many copies (the slots cover the shard, or none of its images
    /// gets one more): no ranking needed, so each image's row follows that image alone.
    Uniform(u64),
    /// Copies of every image, and how many (the first by rank) get one more.
    Ranked(u64, u64),
}

/// What a ranked shard's reduce sees: its share of the slots, and its images in rank order.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
enum Ranked {
    /// Copies of every image, and how many (the first) get one more.
    Share(u64, u64),
    /// An image and its keyed hash in this epoch.
    Image(u64, Arc<Synthetic>),
}

/// What an epoch's share reduce sees: the slots to fill, and each shard's image count.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
enum Count {
    Slots(u64),
    Shard(u16, u64),
}

/// The keyed hash that orders an image in an epoch.
fn rank_hash(rule: &MixRule, stage: u32, epoch: u32, image: &Synthetic) -> u64 {
    let key = &image.key;
    let mut hasher = epoch_hasher(rule.seed, stage, epoch);
    hasher.update(&key.sample.to_le_bytes());
    hasher.update(&(key.level as u64).to_le_bytes());
    hasher.update(&key.seed.to_le_bytes());
    hasher.update(key.prompt.as_bytes());
    first_u64(&hasher)
}

fn shard_of(hash: u64) -> u16 {
    (hash / (u64::MAX / SHARDS + 1)) as u16
}

/// The synthetic rows of every epoch: `epochs` are (stage, epoch, levels), `slots` the
/// synthetic slots each epoch's budget leaves.
pub fn synthetic_items<'scope>(
    synthetic: VecCollection<'scope, u64, Synthetic>,
    epochs: VecCollection<'scope, u64, (u32, u32, Vec<Level>)>,
    slots: VecCollection<'scope, u64, ((u32, u32), u64)>,
    rule: MixRule,
) -> VecCollection<'scope, u64, StageItem> {
    let by_level = epochs
        .flat_map(|(stage, epoch, levels)| {
            levels.into_iter().map(move |level| (level, (stage, epoch)))
        })
        .arrange_by_key_named("MixEpochsByLevel");
    // One allocation per image, shared by every epoch it enters.
    let entries = synthetic
        .map(|image| (image.key.level, Arc::new(image)))
        .join_core(by_level, move |_, image, &(stage, epoch)| {
            let hash = rank_hash(&rule, stage, epoch, image);
            Some(((stage, epoch, shard_of(hash)), (hash, Arc::clone(image))))
        });
    let counts = entries
        .clone()
        .map(|(key, _)| key)
        .count_total()
        .map(|((stage, epoch, shard), n)| ((stage, epoch), Count::Shard(shard, n as u64)));
    let shares = slots
        .map(|(key, n)| (key, Count::Slots(n)))
        .concat(counts)
        .reduce_named("MixPoolShares", |_, input, output| {
            for share in shard_shares(input) {
                output.push((share, 1));
            }
        })
        .map(|((stage, epoch), (shard, share))| ((stage, epoch, shard), share));
    // Only the shard where the slots end is ranked; the others' rows come from a join, so an
    // image that leaves or enters a covered shard moves its own row and no other.
    let covered = shares
        .clone()
        .flat_map(|(key, share)| match share {
            Share::Uniform(copies) => Some((key, copies as u32)),
            Share::Ranked(..) => None,
        })
        .arrange_by_key_named("MixPoolCovered");
    let ranked_shares = shares.flat_map(|(key, share)| match share {
        Share::Ranked(each, first) => Some((key, Ranked::Share(each, first))),
        Share::Uniform(_) => None,
    });
    let boundary = ranked_shares
        .clone()
        .map(|(key, _)| (key, ()))
        .arrange_by_key_named("MixPoolBoundary");
    let entries = entries.arrange_by_key_named("MixPoolEntries");
    let covered_rows = entries
        .clone()
        .join_core(covered, |&(stage, epoch, _), (_, image), copies| {
            Some(synthetic_item(stage, epoch, image, *copies))
        });
    let to_rank = entries.join_core(boundary, |key, (hash, image), ()| {
        Some((*key, Ranked::Image(*hash, Arc::clone(image))))
    });
    to_rank
        .concat(ranked_shares)
        .reduce_named("MixPoolRank", |_: &ShardKey, input, output| {
            let (mut each, mut first) = (0, 0);
            let mut rank = 0;
            for (ranked, count) in input {
                if *count <= 0 {
                    continue;
                }
                match ranked {
                    Ranked::Share(e, f) => (each, first) = (*e, *f),
                    Ranked::Image(hash, image) => {
                        let copies = each + u64::from(rank < first);
                        if copies > 0 {
                            output.push(((*hash, Arc::clone(image), copies as u32), 1));
                        }
                        rank += 1;
                    }
                }
            }
        })
        // Rows are made only for what changed: a re-ranked shard compares shared images.
        .map(|((stage, epoch, _), (_, image, copies))| synthetic_item(stage, epoch, &image, copies))
        .concat(covered_rows)
}

/// Per shard reached by an epoch's slots: (shard, how its images get their copies).
fn shard_shares(input: &[(&Count, isize)]) -> Vec<(u16, Share)> {
    let mut slots = 0;
    let mut shards = Vec::new();
    for (count, diff) in input {
        match count {
            Count::Slots(n) if *diff > 0 => slots = *n,
            Count::Shard(shard, n) if *diff > 0 && *n > 0 => shards.push((*shard, *n)),
            _ => {}
        }
    }
    let pool: u64 = shards.iter().map(|(_, n)| n).sum();
    if slots == 0 || pool == 0 {
        return Vec::new();
    }
    let (each, extra) = (slots / pool, slots % pool);
    let mut before = 0;
    let mut out = Vec::new();
    for (shard, n) in shards {
        let first = extra.saturating_sub(before).min(n);
        if first == n {
            out.push((shard, Share::Uniform(each + 1)));
        } else if first > 0 {
            out.push((shard, Share::Ranked(each, first)));
        } else if each > 0 {
            out.push((shard, Share::Uniform(each)));
        }
        before += n;
    }
    out
}
