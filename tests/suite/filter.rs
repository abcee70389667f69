//! The `filter` op in real pipelines over the shipped tiny image set and classifier: what it
//! keeps, on samples and on scores, and its graph-file errors.

use crate::common;

use common::*;
use discl::Pipeline;
use std::collections::BTreeSet;
use std::path::Path;

#[test]
fn filter_keeps_records_whose_field_meets_every_condition() {
    let dir = tempfile::tempdir().unwrap();
    let images = copy_fixture(dir.path());
    let out = dir.path().join("out");
    let nodes = r#"
[nodes.footwear]
op = "filter"
inputs = ["train"]
field = "label"
one_of = ["sandal", "sneaker", "ankle-boot"]

[nodes.unsure]
op = "filter"
inputs = ["scores"]
field = "p_true"
at_least = 0.2
below = 0.9

[nodes.out]
op = "sink"
inputs = ["train", "scores", "footwear", "unsure"]
"#;
    let summary = run_text(&scored_graph(&out, &images, nodes), 2);
    let footwear = read_jsonl(&out, "out", "footwear");
    assert_eq!(footwear.len(), 36, "12 images in each of three classes");
    assert!(footwear
        .iter()
        .all(|r| ["sandal", "sneaker", "ankle-boot"].contains(&r["label"].as_str().unwrap())));
    let scores = read_jsonl(&out, "out", "scores");
    let expected: BTreeSet<u64> = scores
        .iter()
        .filter(|r| {
            let p = r["p_true"].as_f64().unwrap() as f32 as f64;
            (0.2..0.9).contains(&p)
        })
        .map(|r| r["sample"].as_u64().unwrap())
        .collect();
    let unsure = read_jsonl(&out, "out", "unsure");
    assert!(
        !expected.is_empty() && expected.len() < 120,
        "{}",
        expected.len()
    );
    assert_eq!(ids(&unsure, "sample"), expected);
    assert_eq!(summary.nodes["footwear"].records_in, 120);
    assert_eq!(summary.nodes["footwear"].records_out, 36);
    assert_eq!(summary.nodes["unsure"].records_out, expected.len() as u64);
}

#[test]
fn filter_errors_name_node_line_and_reason() {
    let nodes = r#"
[nodes.a]
op = "filter"
inputs = ["train"]
field = "colour"
equals = "red"

[nodes.b]
op = "filter"
inputs = ["scores"]
field = "predicted"
below = 3

[nodes.d]
op = "filter"
inputs = ["train"]
field = "label"
"#;
    let text = scored_graph(Path::new("out"), Path::new("images"), nodes);
    let error = Pipeline::from_toml("g.toml", &text)
        .err()
        .unwrap()
        .to_string();
    let lines: Vec<&str> = error.lines().collect();
    assert_eq!(
        lines,
        vec![
            "g.toml:23: node `a`: Sample has no field `colour` (fields: id, name, label, path, digest)",
            "g.toml:29: node `b`: `predicted` is text: below, above, at_most and at_least need a number field",
                        "g.toml:32: node `d`: give a condition: equals, not_equals, one_of, not_one_of, below, above, at_most or at_least",
        ]
    );
}
