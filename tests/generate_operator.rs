//! The `generate` operator alone on the tiny pixel UNet: exact differential output, and
//! retractions (and re-insertions) answered without a model call.

mod common;

use common::*;
use differential_dataflow::input::Input;
use discl::operators::generate::{ClassNames, Prompts};
use discl::operators::{GenerateExt, GenerateParams, GenerateWorker, NodeStats};
use discl::record::{sample_id, Digest, Sample};
use discl::runtime::diffusion::img2img::Generator;
use discl::runtime::diffusion::{DiffusionModel, GenerationSettings};
use discl::runtime::onnx::SessionOptions;
use discl::runtime::scheduler::SchedulerKind;
use discl::runtime::InferenceService;
use discl::store::images::ImageStore;
use std::path::Path;
use std::sync::Arc;
use timely::dataflow::operators::capture::Capture;

fn sample(class: &str) -> Sample {
    let mut files: Vec<_> = std::fs::read_dir(fixture().join(class))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let name = format!(
        "{class}/{}",
        files[0].file_name().unwrap().to_str().unwrap()
    );
    Sample {
        id: sample_id(&name),
        name,
        label: class.into(),
        path: files[0].display().to_string(),
        digest: Digest::of(&std::fs::read(&files[0]).unwrap()),
    }
}

#[test]
fn retractions_never_call_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let model = DiffusionModel::open(
        &Path::new(REPO).join("models/tiny-pixel-unet"),
        &SessionOptions::default(),
    )
    .unwrap();
    let model_digest = model.digest;
    let settings = GenerationSettings {
        steps: 6,
        guidance_scale: 2.0,
        scheduler: SchedulerKind::Ddim,
        batch_size: 4,
    };
    let store = Arc::new(ImageStore::open(dir.path(), 0).unwrap());
    let worker = GenerateWorker {
        generator: Generator::new(model),
        settings: settings.clone(),
        store,
    };
    let service = Arc::new(InferenceService::start("gen", vec![worker]));
    let names: Vec<String> = CLASSES.map(String::from).to_vec();
    let stats = Arc::new(NodeStats::default());
    let params = GenerateParams {
        node: "synthetic".into(),
        service: Arc::clone(&service),
        settings,
        levels: vec![0, 500],
        seeds: 2,
        prompts: Prompts::Template("a photo of a {class}".into()),
        classes: ClassNames {
            display: names.clone(),
            names,
        },
        class_conditional: true,
        pipeline_seed: 3,
        model_digest,
        job_size: 16,
        stats: Arc::clone(&stats),
    };
    let (coat, bag) = (sample("coat"), sample("bag"));
    let inputs = (coat.clone(), bag.clone());
    let (captured, errors) = timely::execute_directly(move |worker| {
        let (mut input, captured) = worker.dataflow::<u64, _, _>(|scope| {
            let (input, samples) = scope.new_collection::<Sample, isize>();
            let (synthetics, errors) = samples.generate(params.clone());
            let out = synthetics
                .map(|s| {
                    (
                        s.key.sample,
                        s.key.level,
                        s.key.seed,
                        s.key.prompt,
                        s.digest,
                    )
                })
                .inner
                .capture();
            (input, (out, errors.inner.capture()))
        });
        let (coat, bag) = inputs.clone();
        input.update_at(coat.clone(), 0, 1);
        input.update_at(bag.clone(), 0, 1);
        input.update_at(bag.clone(), 1, -1);
        input.update_at(bag, 2, 1);
        input.close();
        captured
    });
    let out = sorted_updates(captured);
    assert_eq!(sorted_updates(errors), Vec::new());
    let images = |s: &Sample, display: &str| -> Vec<(u64, u16, u32, String)> {
        [0u16, 500]
            .iter()
            .flat_map(|&l| (0..2).map(move |seed| (s.id, l, seed, display.to_string())))
            .collect()
    };
    let mut expected = Vec::new();
    for key in images(&coat, "coat") {
        expected.push((key, 0, 1));
    }
    for key in images(&bag, "bag") {
        expected.extend([(key.clone(), 0, 1), (key.clone(), 1, -1), (key, 2, 1)]);
    }
    expected.sort();
    let got: Vec<_> = out
        .iter()
        .map(|(r, t, d)| {
            let (sample, level, seed, prompt, _) = r.clone();
            ((sample, level, seed, prompt), *t, *d)
        })
        .collect();
    let mut got = got;
    got.sort();
    assert_eq!(got, expected);
    // Every update of one image carries the same file.
    let digests: std::collections::BTreeSet<_> = out.iter().map(|(r, _, _)| r.4).collect();
    assert_eq!(digests.len(), 8);
    let summary = stats.summary(0.0);
    assert_eq!(summary.model_calls, service.stats().snapshot().2);
    assert_eq!(summary.computed, 8, "eight images made once");
    assert_eq!(
        summary.cache_hits, 8,
        "the retraction and re-insertion of bag's four images"
    );
    // Items: 4 at λ = 0 (6 steps) and 4 at λ = 0.5 (3 steps), 4 per call, per-item timesteps.
    assert_eq!(service.stats().snapshot().2, 9);
}
