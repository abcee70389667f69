//! The `classify` operator alone, on the shipped ONNX classifier: exact differential output,
//! retractions answered from the memo without a model call.

mod common;

use common::*;
use differential_dataflow::input::Input;
use discl::operators::{ClassifyExt, ClassifyParams, NodeStats};
use discl::record::{sample_id, Digest, Sample};
use discl::runtime::onnx::SessionOptions;
use discl::runtime::{Classifier, InferenceService};
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
    let service = Arc::new(InferenceService::start("test", vec![classifier]));
    let stats = Arc::new(NodeStats::default());
    let (coat, bag, trouser) = (sample("coat"), sample("bag"), sample("trouser"));
    let mut stranger = sample("coat");
    stranger.label = "hat".into();
    let params = ClassifyParams {
        node: "scores".into(),
        service: Arc::clone(&service),
        classes,
        checkpoint: 2,
        batch_size: 8,
        stats: Arc::clone(&stats),
    };
    let inputs = (coat.clone(), bag.clone(), trouser.clone(), stranger.clone());
    let captured = timely::execute_directly(move |worker| {
        let (mut input, captured) = worker.dataflow::<u64, _, _>(|scope| {
            let (input, samples) = scope.new_collection::<Sample, isize>();
            let out = samples
                .classify(params.clone())
                .map(|r| {
                    r.map(|s| (s.sample, s.checkpoint, s.predicted))
                        .map_err(|e| (e.node, e.message))
                })
                .inner
                .capture();
            (input, out)
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
    let out = sorted_updates(captured);
    let ok = |s: &Sample, t: u64, d: isize| (Ok((s.id, 2u64, s.label.clone())), t, d);
    let mut expected = vec![
        ok(&coat, 0, 1),
        ok(&coat, 1, -1),
        ok(&coat, 2, 1),
        ok(&bag, 0, 1),
        ok(&trouser, 0, 1),
        ok(&trouser, 2, -1),
        (Err(("scores".to_string(), "class `hat` is not one of the model's classes [\"tshirt-top\", \"trouser\", \"pullover\", \"dress\", \"coat\", \"sandal\", \"shirt\", \"sneaker\", \"bag\", \"ankle-boot\"]".to_string())), 0, 1),
    ];
    expected.sort();
    // The first image of each of these classes is one the shipped CNN gets right.
    assert_eq!(out, expected);
    // One batch of three images; the retractions and the re-insertion were memo hits.
    let (batches, items, calls, _) = service.stats().snapshot();
    assert_eq!((batches, items, calls), (1, 3, 1));
    let summary = stats.summary(calls, 0.0);
    assert_eq!(summary.cache_hits, 3);
    assert_eq!(summary.records_in, 7);
    assert_eq!(summary.records_out, 6);
    assert_eq!(summary.errors, 1);
}
