//! The `sample` op in real pipelines over the shipped tiny image set and classifier: a keyed-hash
//! fraction, the same whatever the workers, matching across samples and their scores.

use crate::common;

use common::*;
use discl::Pipeline;
use std::path::Path;

#[test]
fn sample_keeps_the_same_samples_and_their_scores_whatever_the_workers() {
    let nodes = r#"
[nodes.some]
op = "sample"
inputs = ["train"]
fraction = 0.25

[nodes.some_scores]
op = "sample"
inputs = ["scores"]
fraction = 0.25

[nodes.out]
op = "sink"
inputs = ["some", "some_scores"]
"#;
    let mut kept = Vec::new();
    for workers in [1, 2] {
        let dir = tempfile::tempdir().unwrap();
        let images = copy_fixture(dir.path());
        let out = dir.path().join("out");
        run_text(&scored_graph(&out, &images, nodes), workers);
        let samples = ids(&read_jsonl(&out, "out", "some"), "id");
        let scores = ids(&read_jsonl(&out, "out", "some_scores"), "sample");
        assert!((15..=45).contains(&samples.len()), "{}", samples.len());
        assert_eq!(
            samples, scores,
            "by sample id: the same samples and their scores"
        );
        kept.push(samples);
    }
    assert_eq!(kept[0], kept[1]);
}

#[test]
fn a_fraction_outside_zero_to_one_names_its_line() {
    let nodes = "\n[nodes.c]\nop = \"sample\"\ninputs = [\"train\"]\nfraction = 1.5\n";
    let text = scored_graph(Path::new("out"), Path::new("images"), nodes);
    let error = Pipeline::from_toml("g.toml", &text)
        .err()
        .unwrap()
        .to_string();
    assert_eq!(
        error,
        "g.toml:23: node `c`: fraction = 1.5 must be in (0, 1]"
    );
}
