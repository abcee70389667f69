//! Curriculum data at scale, metadata only: a long-tailed training set's scores → hard set →
//! its synthetic images (SYNTHETIC records: samples × levels × seeds) → a diverse-to-specific
//! curriculum → stage manifests, built in one timely worker. Prints the full build's seconds,
//! the seconds to absorb `CHANGED` new feedback scores (a new checkpoint for that many samples,
//! moving some in or out of the hard set), the manifest rows, and the process's peak RSS.
//! `scripts/bench/curriculum_pandas.py` does the same full recompute with pandas, for the ratio.
//!
//! Runs `RUNS` times (3) and prints medians; then runs the pandas script (with
//! `.venv-test/bin/python` or `PANDAS_PYTHON`) on the same sizes and prints the ratios side by
//! side: the full build against pandas' full recompute, and absorbing the change against
//! pandas' full recompute (pandas has no incremental path: a change means recomputing all).
//! The clock leaves out making the input records, as the pandas script does.
//!
//!   cargo bench --bench curriculum                 # 1,000,000 synthetic records
//!   SYNTHETIC=100000 RUNS=5 cargo bench --bench curriculum

use differential_dataflow::input::Input;
use discl::operators::curriculum::{stage_plans, Curriculum, Schedule};
use discl::operators::mix::{mix, MixRule};
use discl::operators::{Combine, HardExt, HardSampleRule};
use discl::record::{Digest, GenKey, Sample, Score, Synthetic, Value};
use std::time::{Duration, Instant};
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

/// The first `hard` ids are hard (p_true < 0.5) at checkpoint 0; an odd checkpoint flips one
/// sample in ten of those it scores, an even one flips them back.
fn score(id: u64, checkpoint: u64, hard: u64) -> Score {
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

/// What one run measured.
struct Run {
    full: f64,
    /// Seconds to absorb each new checkpoint.
    deltas: Vec<f64>,
    /// Seconds spent making inputs, off the clock.
    making: f64,
    full_rows: i64,
    delta_rows: i64,
}

/// Time spent making the bench's input records, which the clock leaves out (the pandas
/// script, too, builds its frames before its clock starts).
#[derive(Default)]
struct Making(Duration);

impl Making {
    /// Makes a chunk of records off the clock.
    fn chunk<T>(&mut self, make: impl FnOnce() -> Vec<T>) -> Vec<T> {
        let started = Instant::now();
        let chunk = make();
        self.0 += started.elapsed();
        chunk
    }
}

const CHUNK: u64 = 4096;

fn run_once(wanted: u64, changed: u64, checkpoints: u64) -> Run {
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
        let mut making = Making::default();
        let started = Instant::now();
        for from in (0..samples_n).step_by(CHUNK as usize) {
            let ids = from..(from + CHUNK).min(samples_n);
            let chunk = making.chunk(|| {
                ids.map(|id| (sample(id), score(id, 0, candidates)))
                    .collect()
            });
            for (sample, score) in chunk {
                samples_in.insert(sample);
                scores_in.insert(score);
            }
        }
        for id in 0..candidates {
            let chunk = making.chunk(|| {
                let mut images = Vec::with_capacity(per_sample as usize);
                for &level in &LEVELS {
                    for seed in 0..SEEDS {
                        images.push(synthetic(id, level, seed));
                    }
                }
                images
            });
            for image in chunk {
                synthetic_in.insert(image);
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
        let full = (started.elapsed() - making.0).as_secs_f64();
        let (full_rows, mut delta_rows) = (rows.get(), 0);
        // New checkpoints for `changed` samples, spread over the ids so that hard and other
        // samples both change.
        let step = (samples_n / changed.max(1)).max(1);
        let mut deltas = Vec::new();
        for checkpoint in 1..=checkpoints {
            let scores = (0..samples_n)
                .step_by(step as usize)
                .take(changed as usize)
                .map(|id| score(id, checkpoint, candidates))
                .collect::<Vec<_>>();
            let started = Instant::now();
            for score in scores {
                scores_in.insert(score);
            }
            let time = checkpoint + 1;
            for input in [
                &mut samples_in as &mut dyn Advance,
                &mut scores_in,
                &mut synthetic_in,
            ] {
                input.to(time);
            }
            while probe.less_than(&time) {
                worker.step();
            }
            deltas.push(started.elapsed().as_secs_f64());
            if checkpoint == 1 {
                delta_rows = rows.get();
            }
        }
        Run {
            full,
            deltas,
            making: making.0.as_secs_f64(),
            full_rows,
            delta_rows,
        }
    })
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The pandas script's median full recompute on the same data, if its Python is there.
fn pandas_seconds(wanted: u64, runs: usize) -> Option<(f64, String)> {
    let repo = env!("CARGO_MANIFEST_DIR");
    let python = std::env::var("PANDAS_PYTHON").unwrap_or(format!("{repo}/.venv-test/bin/python"));
    let output = std::process::Command::new(&python)
        .arg(format!("{repo}/scripts/bench/curriculum_pandas.py"))
        .args(["--synthetic", &wanted.to_string()])
        .args(["--repeat", &runs.to_string()])
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let seconds = text
        .split("median ")
        .nth(1)?
        .split(' ')
        .next()?
        .parse()
        .ok()?;
    // Its own peak RSS line is left out: a child started from this process inherits its
    // high-water mark.
    let line = text.trim().replace('\n', "; ");
    let line = line
        .split("; peak RSS")
        .next()
        .unwrap_or_default()
        .to_string();
    Some((seconds, line))
}

fn main() {
    let env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (wanted, changed, runs, checkpoints) = (
        env("SYNTHETIC", 1_000_000),
        env("CHANGED", 10_000),
        env("RUNS", 3).max(1),
        env("CHECKPOINTS", 1).max(1),
    );
    let results: Vec<Run> = (0..runs)
        .map(|_| run_once(wanted, changed, checkpoints))
        .collect();
    let per_sample = LEVELS.len() as u64 * SEEDS;
    let candidates = (wanted / per_sample).max(1);
    println!(
        "curriculum bench: {} samples, {} synthetic records, {} manifest rows ({} after the change)",
        candidates * 50,
        candidates * per_sample,
        results[0].full_rows,
        results[0].delta_rows
    );
    let full = median(results.iter().map(|r| r.full).collect());
    let first = |r: &Run| r.deltas[0];
    let delta = median(results.iter().map(first).collect());
    let shown = |pick: &dyn Fn(&Run) -> f64| {
        let runs: Vec<String> = results.iter().map(|r| format!("{:.3}", pick(r))).collect();
        runs.join(", ")
    };
    println!(
        "full build   median {full:.3} s  (runs: {}; making the inputs took {} s more, off the clock)",
        shown(&|r| r.full),
        shown(&|r| r.making)
    );
    println!(
        "absorb {changed} new feedback scores  median {delta:.4} s  (runs: {})",
        shown(&first)
    );
    if checkpoints > 1 {
        let all: Vec<f64> = results.iter().flat_map(|r| r.deltas.clone()).collect();
        let n = all.len();
        println!(
            "  over {checkpoints} checkpoints a run: median {:.4} s of {n}",
            median(all)
        );
    }
    println!("peak RSS {:.0} MB (the largest run)", peak_rss_mb());
    match pandas_seconds(wanted, runs as usize) {
        Some((pandas, line)) => {
            println!("{line}");
            println!("ratios, pandas full recompute ÷ ours (higher is better for discl):");
            println!(
                "  full build against pandas' full recompute     {:>6.2}×",
                pandas / full
            );
            println!(
                "  absorbing the change against pandas' full recompute (pandas has no incremental path) {:>6.2}×",
                pandas / delta
            );
        }
        None => println!(
            "pandas: not run (no .venv-test; PANDAS_PYTHON=… or scripts/setup.sh --test-env)"
        ),
    }
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
