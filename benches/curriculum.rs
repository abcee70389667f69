//! Curriculum data at scale, metadata only: a long-tailed training set's scores → hard set →
//! its synthetic images (SYNTHETIC records: samples × levels × seeds) → a diverse-to-specific
//! curriculum → stage manifests, built in one timely worker. Prints the full build's seconds,
//! the seconds to absorb `CHANGED` new feedback scores (a new checkpoint for that many samples,
//! moving some in or out of the hard set), the manifest rows, and the process's peak RSS.
//! `scripts/bench/curriculum_pandas.py` does the same full recompute with pandas, for the ratio.
//!
//!   cargo bench --bench curriculum                 # 1,000,000 synthetic records
//!   SYNTHETIC=100000 cargo bench --bench curriculum

use differential_dataflow::input::Input;
use discl::operators::curriculum::{stage_plans, Curriculum, Schedule};
use discl::operators::mix::{mix, MixRule};
use discl::operators::{Combine, HardExt, HardSampleRule};
use discl::record::{Digest, GenKey, Sample, Score, Synthetic, Value};
use std::time::Instant;
use timely::dataflow::operators::probe::Handle;

const LEVELS: [u16; 5] = [100, 300, 500, 700, 900];
const SEEDS: u64 = 100;

/// A deterministic pseudo-random number in [0, 1) for (a, b) — the same in the pandas script.
fn unit(a: u64, b: u64) -> f64 {
    let mut x = a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    x ^= x >> 33;
    x = x.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    x ^= x >> 33;
    (x >> 11) as f64 / (1u64 << 53) as f64
}

fn sample(id: u64) -> Sample {
    let label = format!("c{}", id % 100);
    Sample {
        id,
        name: format!("{label}/{id}.png"),
        path: format!("data/{label}/{id}.png"),
        label,
        digest: Digest::default(),
    }
}

/// The first `hard` ids are hard (p_true < 0.5) at checkpoint 0; a later checkpoint flips one
/// sample in ten of those it scores.
fn score(id: u64, checkpoint: u64, hard: u64) -> Score {
    let flipped = checkpoint > 0 && unit(id, 7) < 0.1;
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

fn synthetic(id: u64, level: u16, seed: u64) -> Synthetic {
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

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

fn main() {
    let wanted: u64 = std::env::var("SYNTHETIC")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let changed: u64 = std::env::var("CHANGED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    // The hard samples (2% of the training set, as a long tail) have every synthetic record.
    let per_sample = LEVELS.len() as u64 * SEEDS;
    let candidates = (wanted / per_sample).max(1);
    let samples_n = candidates * 50;
    let curriculum = Curriculum {
        schedule: Schedule::DiverseToSpecific,
        levels: LEVELS.to_vec(),
        stages: LEVELS.len() as u32,
        epochs_per_stage: 3,
        real_epochs: 2,
        seed: 0,
        start_level: 100,
    };
    let rule = MixRule {
        head_fraction: 0.3,
        tail_share: 0.136,
        oversample_real: false,
        seed: 0,
    };
    timely::execute_directly(move |worker| {
        let probe = Handle::new();
        let (mut samples_in, mut scores_in, mut synthetic_in, rows) =
            worker.dataflow::<u64, _, _>(|scope| {
                let (samples_in, samples) = scope.new_collection::<Sample, isize>();
                let (scores_in, scores) = scope.new_collection::<Score, isize>();
                let (synthetic_in, synthetic) = scope.new_collection::<Synthetic, isize>();
                let hard =
                    samples
                        .clone()
                        .hard(scores, &[HardSampleRule::PTrueBelow(0.5)], Combine::Any);
                // Only hard samples' images enter (as the generate node would make them).
                let hard_ids = hard.clone().map(|s| s.id);
                let pool = synthetic
                    .map(|s| (s.key.sample, s))
                    .semijoin(hard_ids.distinct())
                    .map(|(_, s)| s);
                let plans = stage_plans(scope, &curriculum, None, 0);
                let items = mix(samples, hard, pool, plans, rule);
                let rows = std::rc::Rc::new(std::cell::Cell::new(0i64));
                let counted = rows.clone();
                items
                    .inspect(move |(_, _, d)| counted.set(counted.get() + *d as i64))
                    .probe_with(&probe);
                (samples_in, scores_in, synthetic_in, rows)
            });
        let started = Instant::now();
        for id in 0..samples_n {
            samples_in.insert(sample(id));
            scores_in.insert(score(id, 0, candidates));
        }
        for id in 0..candidates {
            for &level in &LEVELS {
                for seed in 0..SEEDS {
                    synthetic_in.insert(synthetic(id, level, seed));
                }
            }
        }
        for input in [
            &mut samples_in as &mut dyn Advance,
            &mut scores_in,
            &mut synthetic_in,
        ] {
            input.to(1);
        }
        while probe.less_than(&1) {
            worker.step();
        }
        let full = started.elapsed().as_secs_f64();
        let full_rows = rows.get();
        // A new checkpoint for `changed` samples.
        let started = Instant::now();
        // Spread over the ids so that hard and other samples both change.
        let step = (samples_n / changed.max(1)).max(1);
        for id in (0..samples_n).step_by(step as usize).take(changed as usize) {
            scores_in.insert(score(id, 1, candidates));
        }
        for input in [
            &mut samples_in as &mut dyn Advance,
            &mut scores_in,
            &mut synthetic_in,
        ] {
            input.to(2);
        }
        while probe.less_than(&2) {
            worker.step();
        }
        let delta = started.elapsed().as_secs_f64();
        println!(
            "curriculum bench: {} samples, {} synthetic records, {} manifest rows",
            samples_n,
            candidates * per_sample,
            full_rows
        );
        println!("full build {full:.2} s; absorb {changed} new feedback scores {delta:.3} s; rows now {}", rows.get());
        println!("peak RSS {:.0} MB", peak_rss_mb());
    });
}

/// Advancing any input session to a time.
trait Advance {
    fn to(&mut self, time: u64);
}

impl<D: differential_dataflow::Data> Advance
    for differential_dataflow::input::InputSession<u64, D, isize>
{
    fn to(&mut self, time: u64) {
        self.advance_to(time);
        self.flush();
    }
}
