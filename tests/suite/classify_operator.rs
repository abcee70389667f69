//! The `classify` operator alone, on the shipped ONNX classifier: exact differential output,
//! retractions answered from the memo without a model call.

use crate::common;

use common::*;
use differential_dataflow::input::Input;
use discl::operators::{ClassifyExt, ClassifyParams, NodeStats};
use discl::record::{sample_id, Digest, Sample};
use discl::runtime::onnx::SessionOptions;
use discl::runtime::{Classifier, InferenceService, Persisted};
use std::sync::Arc;
use timely::dataflow::operators::capture::Capture;

fn sample(class: &str) -> Sample {
    let dir = fixture().join(class);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let path = &files[0];
    let name = format!("{class}/{}", path.file_name().unwrap().to_str().unwrap());
    Sample {
        id: sample_id(&name),
        name,
        label: class.into(),
        path: path.display().to_string(),
        digest: Digest::of(&std::fs::read(path).unwrap()),
    }
}

#[test]
fn emits_exact_diffs_and_answers_retractions_from_the_memo() {
    let classifier = Classifier::open(&classifier(), &SessionOptions::default()).unwrap();
    let classes = Arc::new(classifier.meta().classes.clone());
    let model_digest = classifier.digest();
    let service = Arc::new(InferenceService::start(
        "test",
        vec![Persisted::alone(classifier)],
    ));
    let stats = Arc::new(NodeStats::default());
    let (coat, bag, trouser) = (sample("coat"), sample("bag"), sample("trouser"));
    let mut stranger = sample("coat");
    stranger.label = "hat".into();
    let params = ClassifyParams {
        node: "scores".into(),
        service: Arc::clone(&service),
        model_digest,
        classes,
        checkpoint: 2,
        batch_size: 8,
        stats: Arc::clone(&stats),
    };
    let inputs = (coat.clone(), bag.clone(), trouser.clone(), stranger.clone());
    let (scores, errors) = timely::execute_directly(move |worker| {
        let (mut input, captured) = worker.dataflow::<u64, _, _>(|scope| {
            let (input, samples) = scope.new_collection::<Sample, isize>();
            let (scores, errors) = samples.classify(params.clone());
            let scores = scores
                .map(|s| (s.sample, s.checkpoint, s.predicted))
                .inner
                .capture();
            let errors = errors.map(|e| (e.node, e.message)).inner.capture();
            (input, (scores, errors))
        });
        let (coat, bag, trouser, stranger) = inputs.clone();
        input.update_at(coat.clone(), 0, 1);
        input.update_at(bag, 0, 1);
        input.update_at(trouser.clone(), 0, 1);
        input.update_at(stranger, 0, 1);
        input.update_at(coat.clone(), 1, -1);
        input.update_at(coat, 2, 1);
        input.update_at(trouser, 2, -1);
        input.close();
        captured
    });
    let ok = |s: &Sample, t: u64, d: isize| ((s.id, 2u64, s.label.clone()), t, d);
    let mut expected = vec![
        ok(&coat, 0, 1),
        ok(&coat, 1, -1),
        ok(&coat, 2, 1),
        ok(&bag, 0, 1),
        ok(&trouser, 0, 1),
        ok(&trouser, 2, -1),
    ];
    expected.sort();
    // The first image of each of these classes is one the shipped CNN gets right.
    assert_eq!(sorted_updates(scores), expected);
    // The stranger's error is on the error output only.
    assert_eq!(
        sorted_updates(errors),
        vec![(("scores".to_string(), "class `hat` is not one of the model's classes [\"tshirt-top\", \"trouser\", \"pullover\", \"dress\", \"coat\", \"sandal\", \"shirt\", \"sneaker\", \"bag\", \"ankle-boot\"]".to_string()), 0, 1)]
    );
    // One batch of three images; the retractions and the re-insertion were memo hits.
    let (batches, items, calls, _) = service.stats().snapshot();
    assert_eq!((batches, items, calls), (1, 3, 1));
    let summary = stats.summary(0.0);
    assert_eq!(summary.model_calls, calls);
    assert_eq!(summary.cache_hits, 3);
    assert_eq!(summary.records_in, 7);
    assert_eq!(summary.records_out, 6);
    assert_eq!(summary.errors, 1);
}

#[test]
fn nodes_sharing_a_model_count_their_own_model_calls() {
    let classifier = Classifier::open(&classifier(), &SessionOptions::default()).unwrap();
    let classes = Arc::new(classifier.meta().classes.clone());
    let model_digest = classifier.digest();
    let service = Arc::new(InferenceService::start(
        "shared",
        vec![Persisted::alone(classifier)],
    ));
    let node = |name: &str, batch_size: usize| ClassifyParams {
        node: name.into(),
        service: Arc::clone(&service),
        model_digest,
        classes: Arc::clone(&classes),
        checkpoint: 0,
        batch_size,
        stats: Arc::new(NodeStats::default()),
    };
    // Three images: in batches of two (two calls) and in one batch of three (one call).
    let (pairs, triple) = (node("pairs", 2), node("triple", 3));
    let (pairs_stats, triple_stats) = (Arc::clone(&pairs.stats), Arc::clone(&triple.stats));
    let samples = [sample("coat"), sample("bag"), sample("trouser")];
    timely::execute_directly(move |worker| {
        let mut input = worker.dataflow::<u64, _, _>(|scope| {
            let (input, samples) = scope.new_collection::<Sample, isize>();
            samples.clone().classify(pairs.clone());
            samples.classify(triple.clone());
            input
        });
        for s in samples.iter().cloned() {
            input.insert(s);
        }
        input.close();
    });
    let (pairs, triple) = (pairs_stats.summary(0.0), triple_stats.summary(0.0));
    assert_eq!((pairs.model_calls, triple.model_calls), (2, 1));
    assert_eq!(
        pairs.model_calls + triple.model_calls,
        service.stats().snapshot().2
    );
}

#[test]
fn a_pipeline_reports_each_classify_nodes_own_model_calls() {
    let dir = tempfile::tempdir().unwrap();
    let images = copy_fixture(dir.path());
    let text = format!(
        r#"[pipeline]
name = "two-heads"
output = "{out}"

[models.cnn]
path = "{model}"

[nodes.train]
op = "source"
format = "image_folder"
path = "{images}"

[nodes.small]
op = "classify"
inputs = ["train"]
model = "cnn"
batch_size = 16

[nodes.large]
op = "classify"
inputs = ["train"]
model = "cnn"
batch_size = 40

[nodes.manifests]
op = "sink"
inputs = ["small", "large"]
formats = ["jsonl"]
"#,
        out = dir.path().join("out").display(),
        model = classifier().display(),
        images = images.display(),
    );
    let pipeline =
        discl::Pipeline::from_toml("two-heads.toml", &text).unwrap_or_else(|e| panic!("{e}"));
    let options = discl::RunOptions {
        timely_args: vec!["-w".into(), "1".into()],
        progress: false,
        ..Default::default()
    };
    let summary = pipeline.run(&options).unwrap_or_else(|e| panic!("{e}"));
    // 120 images: at most 8 calls in batches of 16 and 3 in batches of 40, and up to one more
    // for each further runner (one per core) what is left when the version completes is
    // spread over; neither node reports the other's. The nodes share the answer store (same
    // model, same images), so an image one node has scored by the time the other's batch runs
    // is a hit for the other.
    let (small, large) = (&summary.nodes["small"], &summary.nodes["large"]);
    assert!(
        (small.model_calls as usize) < 8 + runners()
            && (large.model_calls as usize) < 3 + runners(),
        "{small:?} {large:?}"
    );
    for node in [small, large] {
        assert_eq!(node.computed + node.cache_hits, 120);
        assert_eq!(node.model_calls > 0, node.computed > 0);
    }
    assert!(
        small.computed + large.computed >= 120,
        "every image scored once at least"
    );
}
