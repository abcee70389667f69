//! Curriculum data at scale, metadata only: a long-tailed training set's scores → hard set →
//! its synthetic images (SYNTHETIC records: samples × levels × seeds) → a diverse-to-specific
//! curriculum → stage manifests, built in one timely worker. Prints the full build's seconds,
//! the seconds to absorb `CHANGED` new feedback scores (a new checkpoint for that many samples,
//! moving some in or out of the hard set), the manifest rows, and the process's peak RSS.
//! `scripts/bench/curriculum_pandas.py` does the same work with pandas, for the ratio: the same
//! records, rules, BLAKE3 keyed hashes and whole manifest rows (`tests/suite/curriculum_pandas.rs`
//! checks at a small size that its rows equal these).
//!
//! Runs `RUNS` times (3) and prints medians; then runs the pandas script (with
//! `.venv-test/bin/python` or `PANDAS_PYTHON`) on the same sizes and prints the ratios side by
//! side: the full build against pandas' full recompute, and absorbing the change against
//! pandas' recompute after the same change (pandas has no incremental path: a change means
//! recomputing all). The clock leaves out making the input records, as the pandas script does.
//!
//!   cargo bench --bench curriculum                 # 1,000,000 synthetic records
//!   SYNTHETIC=100000 RUNS=5 cargo bench --bench curriculum
//!   CHECKPOINTS=3 cargo bench --bench curriculum   # three changes a run; the ratio for each too

#[path = "support/curriculum_world.rs"]
mod world;

/// The allocator the `discl` binary uses (src/main.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::{Duration, Instant};
use timely::dataflow::operators::probe::Handle;
use world::{changed_ids, images_of, sample, score, sizes};

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
    let (candidates, samples_n) = sizes(wanted);
    timely::execute_directly(move |worker| {
        let probe = Handle::new();
        let (mut inputs, rows) = worker.dataflow::<u64, _, _>(|scope| {
            let (inputs, items) = world::manifests(scope);
            let rows = std::rc::Rc::new(std::cell::Cell::new(0i64));
            let counted = rows.clone();
            items
                .inspect(move |(_, _, d)| counted.set(counted.get() + *d as i64))
                .probe_with(&probe);
            (inputs, rows)
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
                inputs.samples.insert(sample);
                inputs.scores.insert(score);
            }
        }
        for id in 0..candidates {
            for image in making.chunk(|| images_of(id)) {
                inputs.synthetic.insert(image);
            }
        }
        inputs.advance_to(1);
        while probe.less_than(&1) {
            worker.step();
        }
        let full = (started.elapsed() - making.0).as_secs_f64();
        let (full_rows, mut delta_rows) = (rows.get(), 0);
        let mut deltas = Vec::new();
        for checkpoint in 1..=checkpoints {
            let scores = changed_ids(samples_n, changed)
                .map(|id| score(id, checkpoint, candidates))
                .collect::<Vec<_>>();
            let started = Instant::now();
            for score in scores {
                inputs.scores.insert(score);
            }
            let time = checkpoint + 1;
            inputs.advance_to(time);
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

/// What the pandas script measured on the same data, if its Python is there.
struct Pandas {
    /// Its median full recompute on the first checkpoint's scores.
    full: f64,
    /// Its median recompute after the new checkpoint (a full one: it has no incremental path).
    after: f64,
    /// What it printed, less its peak RSS.
    line: String,
}

/// The seconds after `label` … "median " in the pandas script's output.
fn median_after(text: &str, label: &str) -> Option<f64> {
    let rest = &text[text.find(label)?..];
    rest.split("median ")
        .nth(1)?
        .split(' ')
        .next()?
        .parse()
        .ok()
}

fn pandas_seconds(wanted: u64, changed: u64, runs: usize) -> Option<Pandas> {
    let repo = env!("CARGO_MANIFEST_DIR");
    let python = std::env::var("PANDAS_PYTHON").unwrap_or(format!("{repo}/.venv-test/bin/python"));
    let output = std::process::Command::new(&python)
        .arg(format!("{repo}/scripts/bench/curriculum_pandas.py"))
        .args(["--synthetic", &wanted.to_string()])
        .args(["--changed", &changed.to_string()])
        .args(["--repeat", &runs.to_string()])
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    // Its own peak RSS is left out: a child started from this process inherits its
    // high-water mark.
    let line = text
        .trim()
        .lines()
        .map(|l| l.split("; peak RSS").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("; ");
    Some(Pandas {
        full: median_after(&text, "full recompute")?,
        after: median_after(&text, "recompute after")?,
        line,
    })
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
    let (candidates, samples_n) = sizes(wanted);
    println!(
        "curriculum bench: {} samples, {} synthetic records, {} manifest rows ({} after the change)",
        samples_n,
        candidates * world::PER_SAMPLE,
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
    let every_delta = (checkpoints > 1).then(|| {
        let all: Vec<f64> = results.iter().flat_map(|r| r.deltas.clone()).collect();
        let n = all.len();
        let every = median(all);
        println!("  over {checkpoints} checkpoints a run: median {every:.4} s of {n}");
        every
    });
    println!("peak RSS {:.0} MB (the largest run)", peak_rss_mb());
    match pandas_seconds(wanted, changed, runs as usize) {
        Some(pandas) => {
            println!("{}", pandas.line);
            println!("ratios, pandas ÷ ours (higher is better for discl; the rows are the same, tests/suite/curriculum_pandas.rs):");
            println!(
                "  full build against pandas' full recompute     {:>6.2}×",
                pandas.full / full
            );
            println!(
                "  absorbing the change against pandas' recompute after it (pandas has no incremental path) {:>6.2}×",
                pandas.after / delta
            );
            if let Some(every) = every_delta {
                println!(
                    "  the same, every checkpoint's delta (not only the first)  {:>6.2}×",
                    pandas.after / every
                );
            }
        }
        None => println!(
            "pandas: not run (no .venv-test; PANDAS_PYTHON=… or scripts/setup.sh --test-env)"
        ),
    }
}
