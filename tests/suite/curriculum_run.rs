//! The DisCL loop's data side in a real pipeline: hard samples → guidance spectrum (the shipped
//! generator) → quality filter (the judge) → curriculum → stage manifests, on the tiny fixture.

use crate::common;

use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Bags and ankle boots are the "tail"; their 24 images get 2 levels × 2 seeds each.
fn graph(out: &Path, images: &Path, schedule: &str) -> String {
    format!(
        r#"[pipeline]
name = "curriculum"
output = "{out}"
seed = 5

[models.cnn]
path = "{repo}/models/fashion-cnn"

[models.generator]
path = "{repo}/models/fashion-unet"

[models.judge]
path = "{repo}/models/fashion-judge"

[nodes.train]
op = "source"
format = "image_folder"
path = "{images}"

[nodes.tail]
op = "filter"
inputs = ["train"]
field = "label"
one_of = ["bag", "ankle-boot"]

[nodes.synthetic]
op = "generate"
inputs = ["tail"]
model = "generator"
levels = [0.3, 0.7]
seeds = 2
steps = 10
guidance_scale = 2.0
batch_size = 16

[nodes.quality]
op = "quality"
inputs = ["synthetic"]
model = "judge"
threshold = 0.2

[nodes.stages]
op = "curriculum"
{schedule}
levels = [0.3, 0.7]
epochs_per_stage = 2
real_epochs = 1

[nodes.mix]
op = "mix"
inputs = ["train", "tail", "quality", "stages"]
head_fraction = 0.5
tail_share = 0.6

[nodes.manifests]
op = "sink"
inputs = ["stages", "mix", "quality", "quality.rejected"]
formats = ["jsonl", "parquet"]
"#,
        out = out.display(),
        repo = REPO,
        images = images.display(),
    )
}

fn read_stage(out: &Path, stage: u32) -> Vec<serde_json::Value> {
    let path = out.join(format!("manifests/current/mix/stage-{stage}.jsonl"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn diverse_to_specific_stages_hold_scored_images_of_their_level() {
    let dir = tempfile::tempdir().unwrap();
    let images = copy_fixture(dir.path());
    let out = dir.path().join("out");
    let summary = run_text(
        &graph(&out, &images, "schedule = \"diverse_to_specific\""),
        2,
    );
    assert_eq!(summary.errors, 0);
    assert_eq!(
        summary.nodes["synthetic"].records_out, 96,
        "24 images × 2 levels × 2 seeds"
    );

    let kept = read_jsonl(&out, "manifests", "quality");
    let rejected = read_jsonl(&out, "manifests", "quality.rejected");
    assert_eq!(kept.len() + rejected.len(), 96);
    assert!(!kept.is_empty());
    for row in kept.iter().chain(&rejected) {
        let score = row["text_score"].as_f64().expect("scored");
        assert!(row["image_score"].as_f64().is_some());
        assert_eq!(score >= 0.2, kept.contains(row), "{row}");
    }

    let plans = read_jsonl(&out, "manifests", "stages");
    let plan: BTreeMap<u64, (Vec<u64>, u64)> = plans
        .iter()
        .map(|p| {
            let levels = p["levels"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l.as_u64().unwrap())
                .collect();
            (
                p["stage"].as_u64().unwrap(),
                (levels, p["epochs"].as_u64().unwrap()),
            )
        })
        .collect();
    assert_eq!(
        plan,
        BTreeMap::from([(0, (vec![300], 2)), (1, (vec![700], 2)), (2, (vec![], 1))])
    );

    let kept_paths: BTreeSet<String> = kept
        .iter()
        .map(|r| out.join(r["path"].as_str().unwrap()).display().to_string())
        .collect();
    for (stage, level) in [(0u32, 300u64), (1, 700)] {
        let rows = read_stage(&out, stage);
        let epochs: BTreeSet<u64> = rows.iter().map(|r| r["epoch"].as_u64().unwrap()).collect();
        assert_eq!(epochs, BTreeSet::from([0, 1]));
        let synthetic: Vec<&serde_json::Value> =
            rows.iter().filter(|r| r["level"] != 1000).collect();
        assert!(!synthetic.is_empty());
        for row in &synthetic {
            assert_eq!(row["level"], level, "only the stage's level");
            assert!(
                kept_paths.contains(row["path"].as_str().unwrap()),
                "only images that passed"
            );
            assert!(Path::new(row["path"].as_str().unwrap()).is_file());
        }
        // All 24 tail images are in every epoch.
        for epoch in 0..2 {
            let tails = rows
                .iter()
                .filter(|r| r["epoch"] == epoch && r["level"] == 1000)
                .filter(|r| ["bag", "ankle-boot"].contains(&r["label"].as_str().unwrap()))
                .count();
            assert_eq!(tails, 24);
        }
    }
    let real_only = read_stage(&out, 2);
    assert!(real_only
        .iter()
        .all(|r| r["level"] == 1000 && r["seed"].is_null()));
    let info: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("manifests/current/_snapshot.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(info["graph"]["digest"].as_str().unwrap().len(), 64);
    assert_eq!(info["models"].as_object().unwrap().len(), 3);
}

#[test]
fn stage_manifests_are_the_same_bytes_whatever_the_workers() {
    let mut stages = Vec::new();
    for workers in [1, 3] {
        let dir = tempfile::tempdir().unwrap();
        let images = copy_fixture(dir.path());
        let out = dir.path().join("out");
        run_text(
            &graph(&out, &images, "schedule = \"random\"\nstages = 3"),
            workers,
        );
        let read = |file: &str| {
            std::fs::read_to_string(out.join("manifests/current/mix").join(file))
                .unwrap()
                .replace(&dir.path().display().to_string(), "<dir>")
        };
        stages.push((
            read("stage-0.jsonl"),
            read("stage-2.jsonl"),
            read("stage-3.jsonl"),
        ));
    }
    assert_eq!(stages[0], stages[1]);
}
