//! The mix's keyed choices and budgets, and whole stage manifests built in a dataflow.

use super::*;
use crate::record::{Digest, GenKey, Level};
use differential_dataflow::input::Input;
use std::collections::BTreeMap;
use timely::dataflow::operators::capture::{Capture, Extract};

fn rule() -> MixRule {
    MixRule {
        head_fraction: 0.5,
        tail_share: 0.5,
        oversample_real: true,
        seed: 3,
    }
}

#[test]
fn budgets_and_fills() {
    let lt = MixRule {
        tail_share: 0.136,
        ..rule()
    };
    assert_eq!(tail_budget(&lt, 100), 16, "ceil(100 · 0.136 / 0.864)");
    assert_eq!(
        tail_budget(
            &MixRule {
                tail_share: 0.0,
                ..rule()
            },
            100
        ),
        0
    );
    assert_eq!(
        fill(5, 2),
        vec![3, 2],
        "with replacement when the pool is short"
    );
    assert_eq!(fill(3, 5), vec![1, 1, 1, 0, 0]);
    assert_eq!(fill(3, 0), Vec::<u32>::new());
}

#[test]
fn head_choices_are_keyed_and_fresh_per_epoch() {
    let r = rule();
    let epoch0: Vec<u64> = (0..2000).filter(|s| head_chosen(&r, 0, 0, *s)).collect();
    let epoch1: Vec<u64> = (0..2000).filter(|s| head_chosen(&r, 0, 1, *s)).collect();
    assert!((900..1100).contains(&epoch0.len()), "{}", epoch0.len());
    assert_ne!(epoch0, epoch1, "a fresh share each epoch");
    assert_eq!(
        epoch0,
        (0..2000)
            .filter(|s| head_chosen(&r, 0, 0, *s))
            .collect::<Vec<_>>()
    );
    let all = MixRule {
        head_fraction: 1.0,
        ..r
    };
    assert!((0..2000).all(|s| head_chosen(&all, 4, 2, s)));
}

fn sample(id: u64, label: &str) -> Sample {
    Sample {
        id,
        name: format!("{label}/{id}.png"),
        label: label.into(),
        path: format!("/d/{label}/{id}.png"),
        digest: Digest::of(&id.to_le_bytes()),
    }
}

fn image(sample: u64, level: Level, seed: u32) -> Synthetic {
    Synthetic {
        key: GenKey {
            sample,
            level,
            seed,
            prompt: "bag".into(),
        },
        label: "bag".into(),
        path: format!("synthetic/{sample}-{level}-{seed}.png"),
        digest: Digest::of(&[sample as u8, seed as u8]),
        source: format!("/d/bag/{sample}.png"),
        text_score: None,
        image_score: None,
        retry: None,
    }
}

/// Stage 0 at λ 0.1 for two epochs, then one real-only epoch: 100 samples, 10 of them hard,
/// each hard one with two images at λ 0.1 and two at λ 0.3.
fn manifests(workers: usize) -> Vec<StageItem> {
    let config = timely::Config::process(workers);
    let guards = timely::execute(config, move |worker| {
        let (mut inputs, captured) = worker.dataflow::<u64, _, _>(|scope| {
            let (samples_in, samples) = scope.new_collection::<Sample, isize>();
            let (hard_in, hard) = scope.new_collection::<Sample, isize>();
            let (synthetic_in, synthetic) = scope.new_collection::<Synthetic, isize>();
            let (plans_in, plans) = scope.new_collection::<StagePlan, isize>();
            let items = mix(samples, hard, synthetic, plans, rule());
            (
                (samples_in, hard_in, synthetic_in, plans_in),
                items.inner.capture(),
            )
        });
        if worker.index() == 0 {
            for id in 0..100 {
                let label = if id >= 90 { "bag" } else { "coat" };
                inputs.0.insert(sample(id, label));
                if id >= 90 {
                    inputs.1.insert(sample(id, label));
                    for (level, seed) in [(100, 0), (100, 1), (300, 0), (300, 1)] {
                        inputs.2.insert(image(id, level, seed));
                    }
                }
            }
            inputs.3.insert(StagePlan {
                stage: 0,
                levels: vec![100],
                epochs: 2,
            });
            inputs.3.insert(StagePlan {
                stage: 1,
                levels: vec![],
                epochs: 1,
            });
        }
        drop(inputs);
        while worker.step() {}
        captured
    })
    .unwrap();
    let mut items: Vec<StageItem> = guards
        .join()
        .into_iter()
        .flat_map(|r| r.unwrap().extract())
        .flat_map(|(_, batch)| batch)
        .map(|(item, _, diff)| {
            assert_eq!(diff, 1);
            item
        })
        .collect();
    items.sort();
    items
}

#[test]
fn stages_hold_heads_all_tails_and_a_filled_budget() {
    let items = manifests(1);
    let mut per_epoch: BTreeMap<(u32, u32), (u64, u64, u64)> = BTreeMap::new();
    for item in &items {
        let entry = per_epoch.entry((item.stage, item.epoch)).or_default();
        match (item.level, item.sample >= 90) {
            (REAL_LEVEL, false) => entry.0 += item.copies as u64,
            (REAL_LEVEL, true) => entry.1 += item.copies as u64,
            (level, _) => {
                assert_eq!(level, 100, "only the stage's level");
                assert_eq!(item.stage, 0, "no synthetic images in a real-only stage");
                entry.2 += item.copies as u64;
            }
        }
    }
    assert_eq!(per_epoch.len(), 3);
    for ((stage, _), (heads, tails, synthetic)) in &per_epoch {
        assert!((30..70).contains(heads), "about half of 90: {heads}");
        // tail_share 0.5: the tail fills as many slots as the heads.
        assert_eq!(tails + synthetic, *heads, "stage {stage}");
        if *stage == 0 {
            assert_eq!(*tails, 10, "every hard real image once");
        } else {
            assert_eq!(*synthetic, 0);
        }
    }
    // Two epochs of one stage choose different heads.
    let heads = |epoch| -> Vec<u64> {
        items
            .iter()
            .filter(|i| i.stage == 0 && i.epoch == epoch && i.sample < 90)
            .map(|i| i.sample)
            .collect()
    };
    assert_ne!(heads(0), heads(1));
}

#[test]
fn manifests_are_the_same_whatever_the_workers() {
    assert_eq!(manifests(1), manifests(3));
}

/// One version of a script: updates of samples, hard samples, synthetic images and plans.
type Version = (
    Vec<(Sample, isize)>,
    Vec<(Sample, isize)>,
    Vec<(Synthetic, isize)>,
    Vec<(StagePlan, isize)>,
);

/// Four versions: a first pool; samples moving in and out of the hard set (their images
/// with them); a changed plan and new head images; most of the hard set leaving.
fn script() -> Vec<Version> {
    let plan = |stage, levels: Vec<Level>, epochs| StagePlan {
        stage,
        levels,
        epochs,
    };
    let images = |id: u64, diff: isize| -> Vec<(Synthetic, isize)> {
        let mut out = Vec::new();
        for level in [100, 300, 500] {
            for seed in 0..(1 + id % 7) as u32 {
                out.push((image(id, level, seed), diff));
            }
        }
        out
    };
    let hard = |ids: &mut dyn Iterator<Item = u64>, diff: isize| {
        let (mut samples, mut pool) = (Vec::new(), Vec::new());
        for id in ids {
            samples.push((sample(id, "bag"), diff));
            pool.extend(images(id, diff));
        }
        (samples, pool)
    };
    let all: Vec<(Sample, isize)> = (0..400)
        .map(|id| (sample(id, if id >= 340 { "bag" } else { "coat" }), 1))
        .collect();
    let (first_hard, first_pool) = hard(&mut (340..400), 1);
    let plans = vec![
        (plan(0, vec![100], 2), 1),
        (plan(1, vec![300, 500], 2), 1),
        (plan(2, vec![], 1), 1),
    ];
    let (gone, gone_pool) = hard(&mut (340..350), -1);
    let (came, came_pool) = hard(&mut (300..320), 1);
    let new_heads: Vec<(Sample, isize)> = (400..430).map(|id| (sample(id, "coat"), 1)).collect();
    let replan = vec![(plan(1, vec![300, 500], 2), -1), (plan(1, vec![500], 3), 1)];
    let (most, most_pool) = hard(&mut (300..320).chain(350..395), -1);
    vec![
        (all, first_hard, first_pool, plans),
        (
            Vec::new(),
            [gone, came].concat(),
            [gone_pool, came_pool].concat(),
            Vec::new(),
        ),
        (new_heads, Vec::new(), Vec::new(), replan),
        (Vec::new(), most, most_pool, Vec::new()),
    ]
}

/// The updates (item, version, diff) a mix gives for the script, consolidated per version.
fn run_script(workers: usize, rule: MixRule, reference: bool) -> Vec<(StageItem, u64, isize)> {
    let config = timely::Config::process(workers);
    let guards = timely::execute(config, move |worker| {
        let (mut inputs, captured) = worker.dataflow::<u64, _, _>(|scope| {
            let (samples_in, samples) = scope.new_collection::<Sample, isize>();
            let (hard_in, hard) = scope.new_collection::<Sample, isize>();
            let (synthetic_in, synthetic) = scope.new_collection::<Synthetic, isize>();
            let (plans_in, plans) = scope.new_collection::<StagePlan, isize>();
            let items = if reference {
                reference::reference_mix(samples, hard, synthetic, plans, rule)
            } else {
                mix(samples, hard, synthetic, plans, rule)
            };
            let inputs = (samples_in, hard_in, synthetic_in, plans_in);
            (inputs, items.consolidate().inner.capture())
        });
        for (version, (samples, hard, synthetic, plans)) in script().into_iter().enumerate() {
            let version = version as u64;
            inputs.0.advance_to(version);
            inputs.1.advance_to(version);
            inputs.2.advance_to(version);
            inputs.3.advance_to(version);
            if worker.index() == 0 {
                samples.into_iter().for_each(|(s, d)| inputs.0.update(s, d));
                hard.into_iter().for_each(|(s, d)| inputs.1.update(s, d));
                synthetic
                    .into_iter()
                    .for_each(|(s, d)| inputs.2.update(s, d));
                plans.into_iter().for_each(|(p, d)| inputs.3.update(p, d));
            }
        }
        drop(inputs);
        while worker.step() {}
        captured
    })
    .unwrap();
    let mut updates: BTreeMap<(StageItem, u64), isize> = BTreeMap::new();
    for (item, time, diff) in guards
        .join()
        .into_iter()
        .flat_map(|r| r.unwrap().extract())
        .flat_map(|(_, batch)| batch)
    {
        *updates.entry((item, time)).or_default() += diff;
    }
    updates
        .into_iter()
        .filter(|(_, diff)| *diff != 0)
        .map(|((item, time), diff)| (item, time, diff))
        .collect()
}

#[test]
fn the_sharded_mix_equals_the_reference_update_for_update() {
    let rules = [
        (
            1,
            MixRule {
                tail_share: 0.3,
                head_fraction: 1.0,
                oversample_real: false,
                seed: 0,
            },
        ),
        (
            2,
            MixRule {
                tail_share: 0.5,
                ..rule()
            },
        ),
        (
            3,
            MixRule {
                tail_share: 0.95,
                head_fraction: 0.8,
                oversample_real: true,
                seed: 9,
            },
        ),
    ];
    for (workers, rule) in rules {
        let ours = run_script(workers, rule, false);
        let reference = run_script(1, rule, true);
        assert!(ours
            .iter()
            .any(|(item, t, _)| *t == 3 && item.level != REAL_LEVEL));
        assert!(ours
            .iter()
            .any(|(item, _, d)| *d < 0 && item.level != REAL_LEVEL));
        assert_eq!(ours, reference, "{rule:?}");
    }
}

#[test]
fn the_prepared_keyed_hash_is_blake3_derive_key() {
    for (seed, stage, epoch, item) in [(0, 0, 0, &b""[..]), (7, 3, 14, &b"an item of bytes"[..])] {
        assert_eq!(
            keyed(seed, stage, epoch, item),
            reference::reference_keyed(seed, stage, epoch, item)
        );
    }
}
