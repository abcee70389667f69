//! Refresh is exact and cheap across runs: model answers (scores, images, quality scores) come
//! from the output folder's stores, not from a process's memory, and a run that changes nothing
//! writes nothing. Three runs, each a fresh `Pipeline::run`: from scratch; after trainer
//! feedback moves two of the 120 samples in and out of the hard set; with nothing changed.
//! Every version's manifests equal, byte for byte, those of a from-scratch run on the same
//! inputs in a fresh folder.

use crate::common;

use common::*;
use discl::{Pipeline, RunOptions, RunSummary};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// classify → feedback → hard → generate (tiny pixel UNet) → quality (judge) → sink.
fn graph(out: &Path, images: &Path, feedback: &Path) -> String {
    format!(
        r#"[pipeline]
name = "across"
output = "{out}"
seed = 3

[models.cnn]
path = "{repo}/models/fashion-cnn"

[models.gen]
path = "{repo}/models/tiny-pixel-unet"

[models.judge]
path = "{repo}/models/fashion-judge"

[nodes.train]
op = "source"
format = "image_folder"
path = "{images}"

[nodes.scores]
op = "classify"
inputs = ["train"]
model = "cnn"
batch_size = 16

[nodes.trainer]
op = "feedback"
inputs = ["train"]
path = "{feedback}"

[nodes.hard]
op = "hard"
inputs = ["train", "scores", "trainer"]
rules = [{{ p_true_below = 0.5 }}]

[nodes.synthetic]
op = "generate"
inputs = ["hard"]
model = "gen"
classes_from = "cnn"
levels = [0.0, 0.5]
seeds = 1
steps = 4
guidance_scale = 2.0
batch_size = 8

[nodes.quality]
op = "quality"
inputs = ["synthetic"]
model = "judge"
threshold = 0.2

[nodes.manifests]
op = "sink"
inputs = ["hard", "scores", "quality", "quality.rejected"]
formats = ["jsonl", "parquet"]
"#,
        out = out.display(),
        repo = REPO,
        images = images.display(),
        feedback = feedback.display(),
    )
}

fn run(out: &Path, images: &Path, feedback: &Path) -> RunSummary {
    let text = graph(out, images, feedback);
    let pipeline = Pipeline::from_toml("across.toml", &text).unwrap_or_else(|e| panic!("{e}"));
    let options = RunOptions {
        timely_args: vec!["-w".into(), "2".into()],
        progress: false,
        ..Default::default()
    };
    pipeline.run(&options).unwrap_or_else(|e| panic!("{e}"))
}

/// (model calls, answers computed, cache hits) of a node.
fn work(summary: &RunSummary, node: &str) -> (u64, u64, u64) {
    let n = &summary.nodes[node];
    (n.model_calls, n.computed, n.cache_hits)
}

fn total(summary: &RunSummary, what: impl Fn(&(u64, u64, u64)) -> u64) -> u64 {
    ["scores", "synthetic", "quality"]
        .iter()
        .map(|node| what(&work(summary, node)))
        .sum()
}

/// Every file of a version folder, by path relative to it.
fn files(folder: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![folder.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                out.insert(path.strip_prefix(folder).unwrap().to_path_buf(), bytes);
            }
        }
    }
    out
}

/// A version folder's files equal a from-scratch run's, byte for byte; `_snapshot.json` may
/// differ only in the version number and the graph's digest (the graph names its output).
fn assert_same_snapshot(ours: &Path, scratch: &Path) {
    let (mut ours_files, mut scratch_files) = (files(ours), files(scratch));
    let info = |files: &mut BTreeMap<PathBuf, Vec<u8>>| {
        let mut info: serde_json::Value =
            serde_json::from_slice(&files.remove(Path::new("_snapshot.json")).unwrap()).unwrap();
        let info = info.as_object_mut().unwrap();
        info.remove("version");
        info.remove("graph");
        info.clone()
    };
    assert_eq!(
        info(&mut ours_files),
        info(&mut scratch_files),
        "{}",
        ours.display()
    );
    assert_eq!(
        ours_files.keys().collect::<Vec<_>>(),
        scratch_files.keys().collect::<Vec<_>>()
    );
    for (file, bytes) in &ours_files {
        assert!(
            *bytes == scratch_files[file],
            "{} differs from the from-scratch run's",
            ours.join(file).display()
        );
    }
}

fn names(out: &Path) -> Vec<String> {
    read_jsonl(out, "manifests", "hard")
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect()
}

fn run_state(out: &Path) -> String {
    std::fs::read_to_string(out.join("state/run.json")).unwrap()
}

#[test]
fn three_runs_compute_only_what_changed_and_equal_from_scratch_runs() {
    let dir = tempfile::tempdir().unwrap();
    let images = copy_fixture(dir.path());
    let feedback = dir.path().join("feedback");
    std::fs::create_dir_all(&feedback).unwrap();
    let out = dir.path().join("out");

    // Run 1, from scratch.
    let first = run(&out, &images, &feedback);
    assert_eq!(first.versions_written, vec![0]);
    let hard = names(&out);
    let generated = first.nodes["synthetic"].computed;
    assert_eq!(
        generated,
        2 * hard.len() as u64,
        "2 levels × 1 seed per hard sample"
    );
    assert_eq!(work(&first, "scores").1, 120);
    assert_eq!(first.nodes["quality"].computed, generated);
    assert!(out.join("state/answers.redb").exists());

    // Trainer feedback moves 2 of 120 samples: a sure trouser becomes hard, a hard sample not.
    let trouser = std::fs::read_dir(images.join("trouser"))
        .unwrap()
        .map(|e| format!("trouser/{}", e.unwrap().file_name().to_str().unwrap()))
        .find(|name| !hard.contains(name))
        .unwrap();
    let leaving = hard[0].clone();
    let label = leaving.split('/').next().unwrap();
    std::fs::write(
        feedback.join("checkpoint-1.jsonl"),
        format!(
            "{{\"sample\": \"{trouser}\", \"p_true\": 0.1, \"predicted\": \"dress\"}}\n\
             {{\"sample\": \"{leaving}\", \"p_true\": 0.99, \"predicted\": \"{label}\"}}\n"
        ),
    )
    .unwrap();

    // Run 2: a new process-like run; every earlier answer comes from the output folder.
    let second = run(&out, &images, &feedback);
    assert_eq!(second.versions_written, vec![1]);
    let now_hard = names(&out);
    assert!(now_hard.contains(&trouser) && !now_hard.contains(&leaving));
    assert_eq!(now_hard.len(), hard.len());
    // No image is classified again; only the trouser's 2 images are made and scored.
    assert_eq!(work(&second, "scores"), (0, 0, 120));
    let synthetic = work(&second, "synthetic");
    assert_eq!((synthetic.1, synthetic.2), (2, generated - 2));
    assert!(synthetic.0 > 0);
    let quality = work(&second, "quality");
    assert_eq!((quality.1, quality.2), (2, generated - 2));
    assert_eq!(quality.0, 1, "one scorer call for the two new images");
    // Model work only for the moved samples: 1 of the 120 samples needed any model call.
    let computed = |s: &RunSummary| total(s, |w| w.1);
    let calls = |s: &RunSummary| total(s, |w| w.0);
    for (run, summary) in [(1, &first), (2, &second)] {
        let per_node: Vec<_> = ["scores", "synthetic", "quality"]
            .iter()
            .map(|node| format!("{node} {:?}", work(summary, node)))
            .collect();
        println!("run {run} (calls, computed, hits): {}", per_node.join(", "));
    }
    assert!(computed(&second) * 100 <= 2 * computed(&first));
    let state = run_state(&out);

    // Run 3: nothing changed — no model call, no version, the run state stays.
    let third = run(&out, &images, &feedback);
    assert_eq!(third.versions_written, Vec::<u64>::new());
    assert_eq!((calls(&third), computed(&third)), (0, 0));
    assert_eq!(run_state(&out), state);
    assert_eq!(
        std::fs::read_link(out.join("manifests/current")).unwrap(),
        Path::new("v000001")
    );
    assert!(!out.join("manifests/v000002").exists());

    // Each version equals a from-scratch run on the same inputs, in a fresh folder.
    let scratch = dir.path().join("scratch-1");
    let empty = dir.path().join("no-feedback");
    std::fs::create_dir_all(&empty).unwrap();
    run(&scratch, &images, &empty);
    assert_same_snapshot(
        &out.join("manifests/v000000"),
        &scratch.join("manifests/v000000"),
    );
    let scratch = dir.path().join("scratch-2");
    run(&scratch, &images, &feedback);
    assert_same_snapshot(
        &out.join("manifests/v000001"),
        &scratch.join("manifests/v000000"),
    );
    assert!(files(&out.join("manifests/v000001"))
        .keys()
        .any(|f| f.ends_with("quality.parquet")));
    assert_same_snapshot(&out.join("errors/current"), &scratch.join("errors/current"));
}

#[test]
fn a_broken_answer_store_is_rebuilt_and_the_run_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_pipeline(dir.path(), "[{ p_true_below = 0.5 }]");
    let out = dir.path().join("out");
    let pipeline = Pipeline::from_file(&file).unwrap();
    let first = pipeline.run(&RunOptions::default()).unwrap();
    assert_eq!(first.nodes["scores"].computed, 120);
    std::fs::write(out.join("state/answers.redb"), b"not a database").unwrap();
    let second = pipeline.run(&RunOptions::default()).unwrap();
    // Nothing was kept, so everything is computed again; the manifests are unchanged.
    assert_eq!(second.nodes["scores"].computed, 120);
    assert_eq!(second.versions_written, Vec::<u64>::new());
    assert!(out.join("state/answers.redb.broken").exists());
    let third = pipeline.run(&RunOptions::default()).unwrap();
    assert_eq!(third.nodes["scores"].model_calls, 0);
}
