//! The trainer feedback protocol end to end: `discl run --watch` on an adaptive curriculum
//! (examples/python/adaptive-tiny.toml) beside examples/python/trainer_loop.py, a Python trainer
//! that reads each stage's manifest and writes checkpoint-K / progress-K files; discl plans each
//! next stage from that progress. Needs .venv-test (scripts/setup.sh --test-env): without it the
//! test is skipped with a note, unless `CI` is set, where it fails.

use crate::common;

use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

/// The curriculum's levels (per mille) in examples/python/adaptive-tiny.toml.
const LEVELS: [u64; 2] = [300, 700];
const STAGES: u32 = 3;

/// `.venv-test/bin/python` if it has the trainer's packages; `None` (and a note) when it is
/// missing outside CI; a panic when it is missing in CI.
fn test_python() -> Option<PathBuf> {
    let python = Path::new(REPO).join(".venv-test/bin/python");
    let works = Command::new(&python)
        .args(["-c", "import numpy, pandas, pyarrow, onnxruntime, PIL"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    match (works, std::env::var_os("CI").is_some()) {
        (true, _) => Some(python),
        (false, true) => panic!(
            "{} is missing or lacks numpy/pandas/pyarrow/onnxruntime/pillow; \
             CI must run scripts/setup.sh --test-env first (scripts/test.sh does)",
            python.display()
        ),
        (false, false) => {
            eprintln!(
                "note: skipping trainer_loop: no usable {} (make it with scripts/setup.sh --test-env)",
                python.display()
            );
            None
        }
    }
}

/// Kills the watched discl if the test fails before stopping it.
struct Watch(Option<Child>);

impl Drop for Watch {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn read_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: {l}: {e}", path.display())))
        .collect()
}

/// stage → levels, from a stage index file.
fn plans(path: &Path) -> BTreeMap<u64, Vec<u64>> {
    read_lines(path)
        .iter()
        .map(|p| {
            let levels = p["levels"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l.as_u64().unwrap());
            (p["stage"].as_u64().unwrap(), levels.collect())
        })
        .collect()
}

/// (sample, level) → p_true of a progress file, as discl reads it (an f32), curriculum levels only.
fn progress(path: &Path) -> BTreeMap<(u64, u64), f64> {
    read_lines(path)
        .iter()
        .map(|l| {
            let p = l["p_true"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&p), "{l}");
            (
                (l["sample"].as_u64().unwrap(), l["level"].as_u64().unwrap()),
                p as f32 as f64,
            )
        })
        .filter(|((_, level), _)| LEVELS.contains(level))
        .collect()
}

/// README's adaptive rule, restated: per level, the mean gain in p_true per validation image
/// after dropping values beyond 1.5·IQR (numpy's linear quartiles); the largest mean wins, ties
/// to the lower level.
fn expected_pick(now: &BTreeMap<(u64, u64), f64>, before: &BTreeMap<(u64, u64), f64>) -> u64 {
    let mut gains: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
    for (&(sample, level), &p) in now {
        let previous = before.get(&(sample, level)).copied().unwrap_or(0.0);
        gains.entry(level).or_default().push(p - previous);
    }
    let quantile = |v: &[f64], q: f64| {
        let at = q * (v.len() - 1) as f64;
        let (lo, hi) = (at.floor() as usize, at.ceil() as usize);
        v[lo] + (v[hi] - v[lo]) * (at - lo as f64)
    };
    let mut best: Option<(u64, f64)> = None;
    for (level, mut values) in gains {
        values.sort_by(f64::total_cmp);
        let (q1, q3) = (quantile(&values, 0.25), quantile(&values, 0.75));
        let (low, high) = (q1 - 1.5 * (q3 - q1), q3 + 1.5 * (q3 - q1));
        let kept: Vec<f64> = values
            .into_iter()
            .filter(|v| *v >= low && *v <= high)
            .collect();
        let mean = kept.iter().sum::<f64>() / kept.len() as f64;
        if best.is_none_or(|(_, b)| mean > b) {
            best = Some((level, mean));
        }
    }
    best.expect("progress at some curriculum level").0
}

#[test]
fn a_python_trainer_drives_an_adaptive_curriculum_through_feedback_files() {
    let Some(python) = test_python() else {
        return;
    };
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let (out, feedback) = (dir.path().join("out"), dir.path().join("feedback"));
    let example =
        std::fs::read_to_string(Path::new(REPO).join("examples/python/adaptive-tiny.toml"))
            .unwrap();
    let text = example
        .replace(
            "output = \"out/adaptive-tiny\"",
            &format!("output = \"{}\"", out.display()),
        )
        .replace(
            "path = \"out/adaptive-tiny/feedback\"",
            &format!("path = \"{}\"", feedback.display()),
        );
    assert_eq!(
        text.matches(&*dir.path().display().to_string()).count(),
        2,
        "both paths moved"
    );
    let file = dir.path().join("adaptive.toml");
    std::fs::write(&file, text).unwrap();

    // discl runs where the example's relative paths (fixture, models) resolve: the repository.
    let mut child = Command::new(env!("CARGO_BIN_EXE_discl"))
        .current_dir(REPO)
        .args([
            "run",
            file.to_str().unwrap(),
            "--watch",
            "--interval",
            "0.5",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let stdout = child.stdout.take().unwrap();
    let mut watch = Watch(Some(child));
    let reader = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map(|l| l.unwrap())
            .collect::<Vec<String>>()
    });

    let summary = dir.path().join("summary.json");
    let trainer = Command::new(&python)
        .current_dir(REPO)
        .arg("examples/python/trainer_loop.py")
        .arg(&out)
        .arg("--feedback")
        .arg(&feedback)
        .args([
            "--stages",
            &STAGES.to_string(),
            "--seed",
            "0",
            "--timeout",
            "90",
        ])
        .arg("--summary")
        .arg(&summary)
        .output()
        .unwrap();
    let trainer_stdout = String::from_utf8_lossy(&trainer.stdout);
    println!("{trainer_stdout}");
    assert!(
        trainer.status.success(),
        "trainer failed:\n{trainer_stdout}\n{}",
        String::from_utf8_lossy(&trainer.stderr)
    );
    let trained = started.elapsed();

    // Wait until discl has read the last checkpoint, then Ctrl-C it: it stops cleanly.
    let scores_file = out.join("manifests/current/trainer.jsonl");
    let has_last = || {
        std::fs::read_to_string(&scores_file).is_ok_and(|t| {
            t.lines()
                .any(|l| l.contains(&format!("\"checkpoint\":{STAGES},")))
        })
    };
    while !has_last() {
        assert!(
            started.elapsed().as_secs() < 150,
            "discl never read checkpoint-{STAGES}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let status = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut child = watch.0.take().unwrap();
    assert!(child.wait().unwrap().success());
    let discl_lines = reader.join().unwrap();
    println!("{}", discl_lines.join("\n"));
    println!(
        "trainer done after {trained:.1?}, all done after {:.1?}",
        started.elapsed()
    );
    assert!(
        discl_lines.last().unwrap().ends_with(" 0 error record(s)"),
        "{discl_lines:?}"
    );

    // Three checkpoints and four progress files (0: before training), each parsing.
    for k in 1..=STAGES {
        let lines = read_lines(&feedback.join(format!("checkpoint-{k}.jsonl")));
        assert!(!lines.is_empty());
        for l in &lines {
            assert!(l["sample"].is_u64(), "{l}");
            let p = l["p_true"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&p), "{l}");
            assert!(
                (l["loss"].as_f64().unwrap() + p.max(1e-12).ln()).abs() < 1e-9,
                "{l}"
            );
            assert!(CLASSES.contains(&l["predicted"].as_str().unwrap()), "{l}");
        }
    }
    let evaluations: Vec<BTreeMap<(u64, u64), f64>> = (0..=STAGES)
        .map(|k| {
            let file = feedback.join(format!("progress-{k}.jsonl"));
            let all = read_lines(&file);
            // 16 validation images, each at both levels and real.
            assert_eq!(all.len(), 16 * 3, "{}", file.display());
            progress(&file)
        })
        .collect();
    let leftovers: Vec<_> = std::fs::read_dir(&feedback)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");

    // The stage index grew as progress arrived: every version (keep_versions = 20 keeps them
    // all) lists a superset of the previous one's stages, from {0, real} to {0, 1, 2, real}.
    let mut versions: Vec<PathBuf> = std::fs::read_dir(out.join("manifests"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with('v'))
        .collect();
    versions.sort();
    let seen: Vec<BTreeSet<u64>> = versions
        .iter()
        .map(|v| plans(&v.join("stages.jsonl")).into_keys().collect())
        .collect();
    let mut distinct = seen.clone();
    distinct.dedup();
    assert_eq!(
        distinct,
        vec![
            BTreeSet::from([0, 3]),
            BTreeSet::from([0, 1, 3]),
            BTreeSet::from([0, 1, 2, 3])
        ],
        "{seen:?}"
    );

    // Stages 1 and 2 each got the level the trainer's progress favoured.
    let current = plans(&out.join("manifests/current/stages.jsonl"));
    assert_eq!(current[&0], vec![700], "stage 0: start_level");
    assert_eq!(current[&3], Vec::<u64>::new(), "the real-only stage");
    for stage in 1..STAGES as u64 {
        let s = stage as usize;
        let pick = expected_pick(&evaluations[s], &evaluations[s - 1]);
        assert_eq!(current[&stage], vec![pick], "stage {stage}");
    }
    // Stage 1's manifest trains on that level; the trainer read it and said so.
    let stage1 = read_lines(&out.join("manifests/current/mix/stage-1.jsonl"));
    let synthetic: Vec<_> = stage1.iter().filter(|r| r["level"] != 1000).collect();
    assert!(!synthetic.is_empty());
    assert!(
        synthetic.iter().all(|r| r["level"] == current[&1][0]),
        "{synthetic:?}"
    );
    let stages: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    assert_eq!(stages.len(), STAGES as usize);
    for (stage, s) in stages.iter().enumerate() {
        let levels: Vec<u64> = s["levels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_u64().unwrap())
            .collect();
        assert_eq!(levels, current[&(stage as u64)], "{s}");
        let index: BTreeSet<u64> = s["index"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_u64().unwrap())
            .collect();
        if stage + 1 < STAGES as usize {
            assert!(
                !index.contains(&(stage as u64 + 1)),
                "stage {stage} read before the next was planned: {s}"
            );
        }
    }

    // discl read the trainer's last checkpoint, and nothing was an error.
    let scores = read_jsonl(&out, "manifests", "trainer");
    let last = read_lines(&feedback.join(format!("checkpoint-{STAGES}.jsonl")));
    let latest = scores.iter().filter(|s| s["checkpoint"] == STAGES).count();
    assert_eq!(
        latest,
        last.len(),
        "every score of checkpoint-{STAGES} reached the sink"
    );
    let errors = std::fs::read_to_string(out.join("errors/current/errors.jsonl")).unwrap();
    assert!(errors.is_empty(), "{errors}");
}
