//! The built-in trainer closes the loop on the tiny fixture: a `train` node trains the learner
//! stage by stage on the stage manifests a sink writes and writes checkpoint-K files into its
//! feedback node's folder; the next stage's manifest is planned from them (its synthetic
//! images are those of the learner's hardest samples, not the CNN's). Two runs into fresh
//! folders give the same report, bit for bit, and a rerun resumes without training again.

use crate::common;

use common::*;
use discl::trainer::TrainingReport;
use discl::{Pipeline, RunOptions};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

const HARDEST: usize = 6;

fn graph(out: &Path, stages: &str) -> String {
    format!(
        r#"[pipeline]
name = "loop"
output = "{out}"
seed = 11

[models.cnn]
path = "{repo}/models/fashion-cnn"

[models.gen]
path = "{repo}/models/tiny-pixel-unet"

[nodes.train]
op = "source"
format = "image_folder"
path = "{repo}/tests/fixtures/fashion-tiny"

[nodes.scores]
op = "classify"
inputs = ["train"]
model = "cnn"

[nodes.trainer]
op = "feedback"
inputs = ["train"]
path = "{out}/feedback"

[nodes.hardest]
op = "hard"
inputs = ["train", "scores", "trainer"]
rules = [{{ top_k_loss = {HARDEST} }}]

[nodes.synthetic]
op = "generate"
inputs = ["hardest"]
model = "gen"
classes_from = "cnn"
levels = [0.3, 0.7]
seeds = 1
steps = 4
guidance_scale = 2.0
batch_size = 8

[nodes.stages]
op = "curriculum"
schedule = "diverse_to_specific"
levels = [0.3, 0.7]
epochs_per_stage = 2
real_epochs = 1

[nodes.mix]
op = "mix"
inputs = ["train", "hardest", "synthetic", "stages"]
head_fraction = 0.5
tail_share = 0.3

[nodes.manifests]
op = "sink"
inputs = ["train", "scores", "stages", "mix"]
keep_versions = 10

[nodes.learner]
op = "train"
inputs = ["train", "stages", "mix", "trainer"]
like = "cnn"
batch_size = 20
learning_rate = 0.003
test = "{repo}/tests/fixtures/fashion-tiny"
many_above = 11
few_below = 5
{stages}
"#,
        out = out.display(),
        repo = REPO,
    )
}

fn run(out: &Path, stages: &str) -> TrainingReport {
    let pipeline =
        Pipeline::from_toml("loop.toml", &graph(out, stages)).unwrap_or_else(|e| panic!("{e}"));
    let options = RunOptions {
        timely_args: vec!["-w".into(), "1".into()],
        ..Default::default()
    };
    let summary = pipeline.run(&options).unwrap_or_else(|e| panic!("{e}"));
    summary.training.expect("a train node reports")
}

fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The samples with synthetic rows in a stage manifest of a version.
fn synthetic_samples(out: &Path, version: u64, stage: u32) -> BTreeSet<u64> {
    let file = out.join(format!("manifests/v{version:06}/mix/stage-{stage}.jsonl"));
    lines(&file)
        .iter()
        .filter(|r| r["level"].as_u64() != Some(1000))
        .map(|r| r["sample"].as_u64().unwrap())
        .collect()
}

/// The `HARDEST` samples by loss in a list of score rows (ties by id, as the hard op).
fn hardest(rows: &[serde_json::Value]) -> BTreeSet<u64> {
    let mut by_loss: Vec<(f64, u64)> = rows
        .iter()
        .map(|r| (r["loss"].as_f64().unwrap(), r["sample"].as_u64().unwrap()))
        .collect();
    by_loss.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    by_loss.iter().take(HARDEST).map(|(_, id)| *id).collect()
}

#[test]
fn the_learner_trains_stage_by_stage_and_its_feedback_plans_the_next_stage() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("a");
    let report = run(&out, "");
    let table = report.table();
    println!("{table}");
    assert_eq!(report.stages.len(), 3, "{table}");
    let levels: Vec<Vec<u16>> = report.stages.iter().map(|s| s.levels.clone()).collect();
    assert_eq!(levels, vec![vec![300], vec![700], vec![]]);
    // One version per stage: each stage read the version made after the previous one's feedback.
    let versions: Vec<u64> = report.stages.iter().map(|s| s.version).collect();
    assert!(versions.windows(2).all(|w| w[1] > w[0]), "{versions:?}");
    assert!(report.stages[0].synthetic_examples > 0 && report.stages[2].synthetic_examples == 0);
    let groups = report.groups.as_ref().unwrap();
    assert_eq!(
        groups.many.len() + groups.medium.len() + groups.few.len(),
        10
    );
    let test = report.stages[2]
        .test
        .as_ref()
        .expect("a test folder was given");
    assert!(test.all > 0.2, "above chance (0.1) on the fixture: {table}");

    // checkpoint-K scores every training sample; stage K's synthetic images are those of
    // the learner's hardest samples after stage K-1.
    let checkpoint = lines(&out.join("feedback/checkpoint-1.jsonl"));
    assert_eq!(checkpoint.len(), 120);
    assert_eq!(
        synthetic_samples(&out, versions[1], 1),
        hardest(&checkpoint)
    );
    let cnn = lines(&out.join(format!("manifests/v{:06}/scores.jsonl", versions[0])));
    assert_eq!(synthetic_samples(&out, versions[0], 0), hardest(&cnn));
    assert_ne!(
        hardest(&checkpoint),
        hardest(&cnn),
        "the feedback changed the hard set"
    );

    // The learner is exported as a classifier folder discl opens.
    let model = Path::new(report.model.as_ref().unwrap());
    assert!(model.join("model.onnx").is_file() && model.join("discl.toml").is_file());

    // A second run into a fresh folder: the same report, bit for bit (seconds aside).
    let again = run(&dir.path().join("b"), "");
    let bits = |r: &TrainingReport| -> Vec<(u64, u64, usize, BTreeMap<String, u64>)> {
        r.stages
            .iter()
            .map(|s| {
                let classes = s
                    .test
                    .as_ref()
                    .unwrap()
                    .per_class
                    .iter()
                    .map(|(c, a)| (c.clone(), a.to_bits()));
                (
                    s.loss.to_bits(),
                    s.train_accuracy.to_bits(),
                    s.examples,
                    classes.collect(),
                )
            })
            .collect()
    };
    assert_eq!(bits(&report), bits(&again));
    let weights = |root: &Path| std::fs::read(root.join("learner/learner-3.safetensors")).unwrap();
    assert!(
        weights(&out) == weights(&dir.path().join("b")),
        "weights differ between runs"
    );

    // A rerun of the same graph resumes: every stage is done, nothing is trained again.
    let rerun = run(&out, "");
    assert_eq!(bits(&rerun), bits(&report));
}

#[test]
fn a_stage_limit_stops_early_and_a_changed_graph_starts_over() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("a");
    let first = run(&out, "stages = 1");
    assert_eq!(first.stages.len(), 1);
    assert!(out.join("feedback/checkpoint-1.jsonl").is_file());
    // Another graph (two stages): the old feedback is the old run's, so it starts over.
    let report = run(&out, "stages = 2");
    assert_eq!(report.stages.len(), 2);
    assert!(
        report.stages[0].version > first.stages[0].version,
        "trained again from this run's first version"
    );
}

#[test]
fn a_train_node_without_a_sink_for_its_inputs_is_an_error_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let text = graph(&dir.path().join("a"), "").replace(
        r#"inputs = ["train", "scores", "stages", "mix"]"#,
        r#"inputs = ["scores", "stages", "mix"]"#,
    );
    let pipeline = Pipeline::from_toml("loop.toml", &text).unwrap();
    let error = pipeline
        .run(&RunOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("node `learner`"), "{error}");
    assert!(error.contains("no sink writes `train`"), "{error}");

    let text = graph(&dir.path().join("b"), "").replace(
        r#"inputs = ["train", "stages", "mix", "trainer"]"#,
        r#"inputs = ["train", "stages", "mix", "scores"]"#,
    );
    let error = Pipeline::from_toml("loop.toml", &text)
        .err()
        .unwrap()
        .to_string();
    assert!(
        error.contains("needs the feedback node it writes to among its inputs"),
        "{error}"
    );
}
