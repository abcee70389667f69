//! One CPU session run by several threads at once (`runtime::shared_session`), as a generate
//! node's runners and a classifier's do by default: generators on one opened model, calling it
//! from their own threads at the same time, make bit for bit the images one generator makes
//! alone, and so do classifier clones.

use crate::common;

use common::diffusion_requests;
use discl::runtime::diffusion::img2img::Generator;
use discl::runtime::diffusion::{DiffusionModel, GenerationSettings, VaeLatent};
use discl::runtime::onnx::SessionOptions;
use discl::runtime::scheduler::SchedulerKind;
use discl::runtime::{Classifier, ServiceStats};
use std::path::Path;
use std::sync::Arc;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

fn settings() -> GenerationSettings {
    GenerationSettings {
        steps: 6,
        guidance_scale: 2.0,
        scheduler: SchedulerKind::Ddim,
        batch_size: 2,
        vae_latent: VaeLatent::Sample,
    }
}

#[test]
fn generators_sharing_one_model_make_the_images_one_makes_alone() {
    let folder = Path::new(REPO).join("models/tiny-sd");
    let model = Arc::new(DiffusionModel::open(&folder, &SessionOptions::default()).unwrap());
    assert!(model.unet.shareable(), "a CPU session is shared");
    let requests = diffusion_requests(&model, 3, 2, 9);
    let alone = Generator::new(Arc::clone(&model))
        .generate(&requests, &settings(), &ServiceStats::default())
        .unwrap();
    // Four generators on the same sessions, each making every image several times over, all
    // at once: text encoder, VAE encoder, UNet and decoder calls overlap.
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (model, requests) = (Arc::clone(&model), requests.clone());
            std::thread::spawn(move || {
                let mut generator = Generator::new(model);
                (0..3)
                    .map(|_| {
                        generator
                            .generate(&requests, &settings(), &ServiceStats::default())
                            .unwrap()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for thread in threads {
        for images in thread.join().unwrap() {
            assert!(
                images == alone,
                "an image differs when the session is shared"
            );
        }
    }
    assert_eq!(Arc::strong_count(&model), 1);
}

#[test]
fn classifier_clones_run_one_session_at_once_with_the_same_logits() {
    let folder = Path::new(REPO).join("models/fashion-cnn");
    let classifier = Classifier::open(&folder, &SessionOptions::default()).unwrap();
    assert!(classifier.shareable());
    let [c, h, w] = classifier.meta().input_shape;
    let n = 16;
    let pixels: Vec<f32> = (0..n * c * h * w)
        .map(|i| ((i * 31) % 89) as f32 / 89.0)
        .collect();
    let alone = classifier.logits(&pixels, n).unwrap();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (clone, pixels) = (classifier.clone(), pixels.clone());
            std::thread::spawn(move || {
                (0..50)
                    .map(|_| clone.logits(&pixels, n).unwrap())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for thread in threads {
        for logits in thread.join().unwrap() {
            assert_eq!(logits, alone);
        }
    }
}
