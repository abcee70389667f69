//! The built-in trainer's speed: epochs of the learner on long-tailed Fashion-MNIST training
//! images (`data/fashion-lt/train`, made by `scripts/setup.sh --data`), one thread, as the
//! experiment trains it. Prints each epoch's seconds, the median and images per second.
//!
//!   cargo bench --bench learner                         # 2048 images, 3 epochs, the experiment's widths
//!   IMAGES=4096 EPOCHS=5 WIDTHS=32,32,64,64,128 cargo bench --bench learner

use discl::runtime::learner::{Learner, LearnerConfig, TrainRow};
use std::path::Path;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn rows(limit: usize) -> (Vec<TrainRow>, Vec<String>) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/fashion-lt/train");
    let mut classes: Vec<String> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e} (scripts/setup.sh --data)", root.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    classes.sort();
    let mut per_class: Vec<Vec<std::path::PathBuf>> = classes
        .iter()
        .map(|class| {
            let mut files: Vec<_> = std::fs::read_dir(root.join(class))
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            files.sort();
            files.reverse();
            files
        })
        .collect();
    // Round-robin over the classes, so a small set still holds every class.
    let mut out = Vec::new();
    while out.len() < limit && per_class.iter().any(|f| !f.is_empty()) {
        for (label, files) in per_class.iter_mut().enumerate() {
            if let Some(file) = files.pop() {
                if out.len() < limit {
                    out.push(TrainRow::new(file, label));
                }
            }
        }
    }
    (out, classes)
}

fn main() {
    let env = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let widths: [usize; 5] = std::env::var("WIDTHS")
        .ok()
        .map(|w| {
            let v: Vec<usize> = w.split(',').map(|x| x.trim().parse().unwrap()).collect();
            v.try_into().expect("WIDTHS: five numbers")
        })
        .unwrap_or([16, 16, 32, 32, 64]);
    let (images, epochs) = (env("IMAGES", 2048), env("EPOCHS", 3).max(1));
    let (rows, classes) = rows(images);
    let config = LearnerConfig {
        widths,
        ..LearnerConfig::fashion()
    };
    let mut learner = Learner::new(config, classes).expect("learner");
    let mut seconds = Vec::new();
    for _ in 0..epochs {
        let stats = learner.train_epoch(&rows).expect("epoch");
        println!(
            "epoch {}: {:.3} s, loss {:.4}, accuracy {:.3}",
            stats.epoch, stats.seconds, stats.loss, stats.accuracy
        );
        seconds.push(stats.seconds);
    }
    // The first epoch also decodes the images into the learner's cache.
    let mut steady: Vec<f64> = seconds.iter().skip(1).copied().collect();
    if steady.is_empty() {
        steady = seconds.clone();
    }
    steady.sort_by(f64::total_cmp);
    let median = steady[steady.len() / 2];
    println!(
        "learner {widths:?}, {} images: median epoch {median:.3} s after the first ({:.0} images/s, one thread)",
        rows.len(),
        rows.len() as f64 / median
    );
}
