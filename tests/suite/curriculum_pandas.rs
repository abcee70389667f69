//! The curriculum bench compares like with like: at a small size (10,000 synthetic records,
//! two new checkpoints of 100 scores), `scripts/bench/curriculum_pandas.py --dump` writes the
//! same manifest rows, version by version, as discl's dataflow (the bench's own, from
//! benches/support/curriculum_world.rs). Needs .venv-test (scripts/setup.sh --test-env):
//! without it the test is skipped with a note, unless `CI` is set, where it fails.

#[path = "../../benches/support/curriculum_world.rs"]
mod world;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::rc::Rc;
use timely::dataflow::operators::probe::Handle;

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const SYNTHETIC: u64 = 10_000;
const CHANGED: u64 = 100;
const CHECKPOINTS: u64 = 2;

/// Every version's manifest rows from discl, as `version\trow` lines.
fn discl_rows() -> Vec<String> {
    let (candidates, samples_n) = world::sizes(SYNTHETIC);
    timely::execute_directly(move |worker| {
        let probe = Handle::new();
        let rows = Rc::new(RefCell::new(BTreeMap::<String, isize>::new()));
        let (mut inputs, kept) = worker.dataflow::<u64, _, _>(|scope| {
            let (inputs, items) = world::manifests(scope);
            let kept = rows.clone();
            items
                .inspect(move |(item, _, diff)| {
                    *kept.borrow_mut().entry(world::row_line(item)).or_default() += diff;
                })
                .probe_with(&probe);
            (inputs, rows)
        });
        for id in 0..samples_n {
            inputs.samples.insert(world::sample(id));
            inputs.scores.insert(world::score(id, 0, candidates));
        }
        for id in 0..candidates {
            for image in world::images_of(id) {
                inputs.synthetic.insert(image);
            }
        }
        let mut lines = Vec::new();
        for version in 0..=CHECKPOINTS {
            if version > 0 {
                for id in world::changed_ids(samples_n, CHANGED) {
                    inputs.scores.insert(world::score(id, version, candidates));
                }
            }
            inputs.advance_to(version + 1);
            while probe.less_than(&(version + 1)) {
                worker.step();
            }
            for (row, count) in kept.borrow().iter().filter(|(_, c)| **c != 0) {
                assert_eq!(
                    *count, 1,
                    "version {version}: {row} has multiplicity {count}"
                );
                lines.push(format!("{version}\t{row}"));
            }
        }
        lines
    })
}

#[test]
fn pandas_script_writes_discls_manifest_rows() {
    let python = Path::new(REPO).join(".venv-test/bin/python");
    let works = Command::new(&python)
        .args(["-c", "import numpy, pandas"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !works {
        assert!(
            std::env::var_os("CI").is_none(),
            "{} is missing or lacks numpy/pandas; CI must run scripts/setup.sh --test-env first",
            python.display()
        );
        eprintln!(
            "note: skipping curriculum_pandas: no usable {}",
            python.display()
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("rows.tsv");
    let output = Command::new(&python)
        .arg(Path::new(REPO).join("scripts/bench/curriculum_pandas.py"))
        .args(["--synthetic", &SYNTHETIC.to_string()])
        .args(["--changed", &CHANGED.to_string()])
        .args(["--checkpoints", &CHECKPOINTS.to_string()])
        .args(["--repeat", "1"])
        .arg("--dump")
        .arg(&dump)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut pandas: Vec<String> = std::fs::read_to_string(&dump)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    pandas.sort();
    let mut ours = discl_rows();
    ours.sort();
    // Every version holds heads, hard real images and synthetic images.
    for version in 0..=CHECKPOINTS {
        let of = |level: &str| {
            ours.iter()
                .filter(|l| l.starts_with(&format!("{version}\t")))
                .filter(|l| l.split('\t').nth(4) == Some(level))
                .count()
        };
        assert!(
            of("1000") > 0 && of("100") > 0 && of("900") > 0,
            "version {version}"
        );
    }
    let missing: Vec<_> = ours
        .iter()
        .filter(|l| pandas.binary_search(l).is_err())
        .take(5)
        .collect();
    let extra: Vec<_> = pandas
        .iter()
        .filter(|l| ours.binary_search(l).is_err())
        .take(5)
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty() && ours.len() == pandas.len(),
        "discl {} rows, pandas {}; only discl's: {missing:?}; only pandas': {extra:?}",
        ours.len(),
        pandas.len()
    );
}
