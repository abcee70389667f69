//! The built-in trainer on the tiny Fashion fixture (12 images × 10 classes): it learns, two runs
//! are bit-identical (whatever order the rows come in), a checkpoint resumes bit for bit, and the
//! ONNX export opens with the project's `Classifier` and gives the learner's logits.

use discl::runtime::classifier::Classifier;
use discl::runtime::image_input::decode_into;
use discl::runtime::learner::{EpochStats, Learner, LearnerConfig, LearnerImage, TrainRow};
use discl::runtime::onnx::SessionOptions;
use discl::runtime::ModelMeta;
use std::path::{Path, PathBuf};

const CLASSES: [&str; 10] = [
    "tshirt-top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle-boot",
];

fn classes() -> Vec<String> {
    CLASSES.iter().map(|c| c.to_string()).collect()
}

/// Every fixture image with its class index, sorted.
fn rows() -> Vec<TrainRow> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fashion-tiny");
    let mut out = Vec::new();
    for (label, class) in CLASSES.iter().enumerate() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(root.join(class))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        out.extend(files.into_iter().map(|f| TrainRow::new(f, label)));
    }
    assert_eq!(out.len(), 120);
    out
}

fn config() -> LearnerConfig {
    LearnerConfig {
        seed: 7,
        threads: 1,
        batch_size: 20,
        learning_rate: 3e-3,
        ..LearnerConfig::fashion()
    }
}

/// Accuracy of the learner's arg-max (inference mode) on `rows`.
fn accuracy(learner: &Learner, rows: &[TrainRow]) -> f64 {
    let images: Vec<LearnerImage> = rows.iter().map(|r| r.image.clone()).collect();
    let probs = learner.predict(&images).unwrap();
    let right = probs
        .iter()
        .zip(rows)
        .filter(|(p, r)| {
            let best = p
                .iter()
                .enumerate()
                .fold(0, |b, (i, v)| if *v > p[b] { i } else { b });
            best == r.label
        })
        .count();
    right as f64 / rows.len() as f64
}

fn train(learner: &mut Learner, rows: &[TrainRow], epochs: usize) -> Vec<EpochStats> {
    (0..epochs)
        .map(|_| {
            let stats = learner.train_epoch(rows).unwrap();
            println!(
                "epoch {} loss {:.4} acc {:.3} {:.2}s ({:.2} epochs/s)",
                stats.epoch,
                stats.loss,
                stats.accuracy,
                stats.seconds,
                1.0 / stats.seconds
            );
            stats
        })
        .collect()
}

#[test]
fn learns_is_bit_identical_across_runs_and_resumes_from_a_checkpoint() {
    let rows = rows();
    let dir = tempfile::tempdir().unwrap();
    const EPOCHS: usize = 6;

    let mut a = Learner::new(config(), classes()).unwrap();
    assert_eq!(a.parameter_count(), 140_458);
    let before = accuracy(&a, &rows);
    let mut history = train(&mut a, &rows, EPOCHS / 2);
    a.save(&dir.path().join("half.safetensors")).unwrap();
    history.extend(train(&mut a, &rows, EPOCHS / 2));
    let after = accuracy(&a, &rows);
    println!("inference accuracy on the training rows: {before:.3} -> {after:.3}");
    let (first, last) = (&history[0], &history[EPOCHS - 1]);
    assert!(
        last.loss < 0.7 * first.loss,
        "loss {} -> {}",
        first.loss,
        last.loss
    );
    assert!(
        last.accuracy > first.accuracy + 0.2,
        "{} -> {}",
        first.accuracy,
        last.accuracy
    );
    assert!(after > before + 0.25, "{before} -> {after}");
    assert_eq!(a.cache().len(), 120);
    a.save(&dir.path().join("a.safetensors")).unwrap();

    // Same seed, rows listed in reverse, a pool of two threads instead of one: the same bits.
    let reversed: Vec<TrainRow> = rows.iter().rev().cloned().collect();
    let mut b = Learner::new(
        LearnerConfig {
            threads: 2,
            ..config()
        },
        classes(),
    )
    .unwrap();
    let history_b = train(&mut b, &reversed, EPOCHS);
    let bits = |h: &[EpochStats]| {
        h.iter()
            .map(|s| (s.loss.to_bits(), s.accuracy.to_bits()))
            .collect::<Vec<_>>()
    };
    assert_eq!(bits(&history), bits(&history_b));
    b.save(&dir.path().join("b.safetensors")).unwrap();
    let read = |name: &str| std::fs::read(dir.path().join(name)).unwrap();
    assert!(
        read("a.safetensors") == read("b.safetensors"),
        "weights differ between runs"
    );
    println!(
        "final loss bits {:#018x}, checkpoint blake3 {}",
        history[EPOCHS - 1].loss.to_bits(),
        blake3::hash(&read("a.safetensors")).to_hex()
    );

    // Resumed from the half-way checkpoint: the same bits again.
    // The seed keys order, augmentation and dropout: a checkpoint resumes under its run's seed.
    let mut c = Learner::new(config(), classes()).unwrap();
    c.load(&dir.path().join("half.safetensors")).unwrap();
    assert_eq!(c.epoch(), (EPOCHS / 2) as u64);
    let history_c = train(&mut c, &rows, EPOCHS / 2);
    assert_eq!(bits(&history[EPOCHS / 2..]), bits(&history_c));
    c.save(&dir.path().join("c.safetensors")).unwrap();
    assert!(
        read("a.safetensors") == read("c.safetensors"),
        "resumed weights differ"
    );
}

#[test]
fn the_onnx_export_opens_as_a_classifier_and_gives_the_learners_logits() {
    let rows = rows();
    let mut learner = Learner::new(config(), classes()).unwrap();
    train(&mut learner, &rows, 2);
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("learner");
    learner.export_onnx(&folder).unwrap();

    let (meta, _) = ModelMeta::load(&folder).unwrap();
    assert_eq!(meta.input, "input");
    assert_eq!(meta.input_shape, [1, 28, 28]);
    assert_eq!(meta.classes, classes());
    assert_eq!(meta.output("features").unwrap(), "features");

    let classifier = Classifier::open(&folder, &SessionOptions::default()).unwrap();
    let spec = classifier.spec().clone();
    let mut pixels = Vec::new();
    for row in &rows {
        let LearnerImage::File(path) = &row.image else {
            unreachable!()
        };
        decode_into(&std::fs::read(path).unwrap(), &spec, &mut pixels).unwrap();
    }
    let onnx = classifier.logits(&pixels, rows.len()).unwrap();
    let images: Vec<LearnerImage> = rows.iter().map(|r| r.image.clone()).collect();
    let rust = learner.logits(&images).unwrap();
    let mut max_diff = 0f32;
    for (o, r) in onnx.iter().zip(&rust) {
        for (x, y) in o.iter().zip(r) {
            max_diff = max_diff.max((x - y).abs());
        }
    }
    let scale = rust.iter().flatten().fold(0f32, |m, v| m.max(v.abs()));
    println!("ONNX Runtime vs learner: max |Δlogit| {max_diff:.2e} over {} images (max |logit| {scale:.2})", rows.len());
    assert!(max_diff < 1e-4, "{max_diff}");
    // A batch of one through the dynamic batch axis.
    let one = classifier.logits(&pixels[..spec.len()], 1).unwrap();
    assert!(one[0]
        .iter()
        .zip(&rust[0])
        .all(|(x, y)| (x - y).abs() < 1e-4));
    // p_true agrees with the classifier's scoring of the same logits.
    let p = learner.p_true(&rows[..3]).unwrap();
    for (i, p) in p.iter().enumerate() {
        let expected = discl::runtime::classifier::score_logits(&onnx[i], rows[i].label).p_true;
        assert!((p - expected).abs() < 1e-4);
    }
}

#[test]
fn bad_rows_and_checkpoints_are_typed_errors() {
    use discl::runtime::learner::LearnerError;
    let mut learner = Learner::new(config(), classes()).unwrap();
    let err = learner
        .train_epoch(&[TrainRow::new(PathBuf::from("x.png"), 10)])
        .unwrap_err();
    assert!(
        matches!(
            err,
            LearnerError::Label {
                label: 10,
                classes: 10
            }
        ),
        "{err:?}"
    );
    let err = learner.train_epoch(&[]).unwrap_err();
    assert!(matches!(err, LearnerError::Empty), "{err:?}");
    let err = learner
        .train_epoch(&[TrainRow::new(PathBuf::from("/no/such.png"), 1)])
        .unwrap_err();
    assert!(matches!(err, LearnerError::Io { .. }), "{err:?}");
    let dir = tempfile::tempdir().unwrap();
    let other = Learner::new(config(), vec!["a".into(), "b".into()]).unwrap();
    other.save(&dir.path().join("two.safetensors")).unwrap();
    let err = learner
        .load(&dir.path().join("two.safetensors"))
        .unwrap_err();
    assert!(matches!(err, LearnerError::Checkpoint { .. }), "{err:?}");
    assert!(err.to_string().contains("head.weight"), "{err}");
    assert_eq!(learner.epoch(), 0);
}
