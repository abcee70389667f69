//! Classify throughput: the `classify` operator inside a timely dataflow (inference service,
//! batching, memo, capabilities) against a bare loop of ONNX Runtime calls doing the same work
//! (read, decode, normalise, run) over the same images, model and batch size, side by side.
//! Prints images/s for both and the ratio (target ≥ 0.95). Run: `cargo bench --bench classify`.

use differential_dataflow::input::Input;
use discl::operators::{ClassifyExt, ClassifyParams, NodeStats, SourceLocation, SourceState};
use discl::record::{Digest, Sample};
use discl::runtime::image_input::decode_into;
use discl::runtime::onnx::SessionOptions;
use discl::runtime::{Classifier, InferenceService, Persisted};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

const BATCH: usize = 128;
const ROUNDS: usize = 7;

fn main() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let data = repo.join("data/fashion-lt/train");
    let images = if data.is_dir() {
        data
    } else {
        repo.join("tests/fixtures/fashion-tiny")
    };
    let samples: Vec<Sample> =
        SourceState::new("bench", SourceLocation::ImageFolder(images.clone()))
            .rescan(0, 1)
            .samples
            .into_iter()
            .map(|(s, _)| s)
            .collect();
    let model = repo.join("models/fashion-cnn");
    let options = SessionOptions::default();
    let mut bare = Classifier::open(&model, &options).unwrap();
    let engine = Classifier::open(&model, &options).unwrap();
    let classes = Arc::new(engine.meta().classes.clone());
    let model_digest = engine.digest();
    let service = Arc::new(InferenceService::start(
        "bench",
        vec![Persisted::alone(engine)],
    ));
    println!(
        "classify: {} images from {}, batch {BATCH}, 1 ONNX Runtime thread, {ROUNDS} rounds each",
        samples.len(),
        images.display()
    );

    let mut engine_rates = Vec::new();
    let mut bare_rates = Vec::new();
    for _ in 0..ROUNDS {
        bare_rates.push(samples.len() as f64 / bare_loop(&mut bare, &samples));
        engine_rates.push(
            samples.len() as f64 / through_engine(&service, model_digest, &classes, &samples),
        );
    }
    let (engine, bare) = (median(engine_rates), median(bare_rates));
    println!("engine (timely + inference service): {engine:9.1} images/s (median)");
    println!("bare ONNX Runtime loop:              {bare:9.1} images/s (median)");
    println!("ratio engine / bare: {:.3} (target >= 0.95)", engine / bare);
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn bare_loop(classifier: &mut Classifier, samples: &[Sample]) -> f64 {
    let started = Instant::now();
    let spec = classifier.spec().clone();
    let mut checksum = 0.0f32;
    for chunk in samples.chunks(BATCH) {
        let mut pixels = Vec::with_capacity(chunk.len() * spec.len());
        for s in chunk {
            decode_into(&std::fs::read(&s.path).unwrap(), &spec, &mut pixels).unwrap();
        }
        let rows = classifier.logits(&pixels, chunk.len()).unwrap();
        checksum += rows.iter().map(|r| r[0]).sum::<f32>();
    }
    std::hint::black_box(checksum);
    started.elapsed().as_secs_f64()
}

fn through_engine(
    service: &Arc<InferenceService<Persisted<Classifier>>>,
    model_digest: Digest,
    classes: &Arc<Vec<String>>,
    samples: &[Sample],
) -> f64 {
    let params = ClassifyParams {
        node: "bench".into(),
        service: Arc::clone(service),
        model_digest,
        classes: Arc::clone(classes),
        checkpoint: 0,
        batch_size: BATCH,
        stats: Arc::new(NodeStats::default()),
    };
    let samples = samples.to_vec();
    let started = Instant::now();
    timely::execute_directly(move |worker| {
        let (mut input, probe) = worker.dataflow::<u64, _, _>(|scope| {
            let (input, collection) = scope.new_collection::<Sample, isize>();
            let (probe, _) = collection.classify(params.clone()).0.probe();
            (input, probe)
        });
        for s in samples.iter().cloned() {
            input.insert(s);
        }
        input.close();
        while !probe.done() {
            worker.step_or_park(None);
        }
    });
    started.elapsed().as_secs_f64()
}
