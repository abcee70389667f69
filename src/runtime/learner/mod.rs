//! The built-in trainer: a small CNN (the shape of `models/fashion-cnn`) trained from scratch in
//! pure Rust on the rows of a curriculum's stage manifests, through candle's CPU tensors and
//! autograd. Every random choice is keyed by the seed (see [`keyed`]), the work runs on a rayon
//! pool of a fixed number of threads, and so two runs with the same seed, threads and rows give
//! bit-identical weights. The learner saves and loads checkpoints (safetensors, weights and
//! optimiser state) and exports itself as an ONNX classifier folder the `classify` operator
//! opens like any other.

mod checkpoint;
pub mod data;
pub mod error;
pub mod export;
mod im2col;
pub mod keyed;
pub mod net;
pub mod optim;

pub use data::{ImageCache, LearnerImage, TrainRow};
pub use error::LearnerError;

use crate::runtime::image_input::ImageSpec;
use candle_core::{Device, Tensor};
use error::TensorContext;
use keyed::{key, purpose};
use net::Net;
use optim::AdamW;
use std::path::Path;
use std::time::Instant;

/// How the learner trains.
#[derive(Clone, Debug)]
pub struct LearnerConfig {
    /// Keys every random choice: initial weights, epoch order, augmentation, dropout.
    pub seed: u64,
    /// Threads of the learner's rayon pool (candle's matrix products run on it). candle's
    /// element-wise ops run on a process-wide pool of its own, sized once from
    /// `CANDLE_NUM_THREADS` (else `RAYON_NUM_THREADS`, else the physical cores); on a loaded
    /// machine `CANDLE_NUM_THREADS=1` is fastest. Results were bit-identical across 1 and 2
    /// threads of either pool on the test machine; the promise is per thread count.
    pub threads: usize,
    /// Rows per optimiser step (the last batch of an epoch may be smaller).
    pub batch_size: usize,
    /// AdamW's learning rate (constant; [`Learner::set_learning_rate`] changes it between epochs).
    pub learning_rate: f64,
    /// AdamW's decoupled weight decay.
    pub weight_decay: f64,
    /// Random flips and shifts of training images, as train_cnn.py.
    pub augment: bool,
    /// Input size and normalisation; the export's `discl.toml` repeats it.
    pub image: ImageSpec,
    /// Output channels of the five conv blocks (`net::WIDTHS`, fashion-cnn's, by default; the
    /// experiment's learner is narrower to fit its time budget).
    pub widths: [usize; 5],
}

impl LearnerConfig {
    /// train_cnn.py's settings (batch 64, AdamW 2e-3, weight decay 1e-4, augmentation) for
    /// Fashion-MNIST's 28×28 grey images, one thread, seed 0.
    pub fn fashion() -> LearnerConfig {
        LearnerConfig {
            seed: 0,
            threads: 1,
            batch_size: 64,
            learning_rate: 2e-3,
            weight_decay: 1e-4,
            augment: true,
            widths: net::WIDTHS,
            image: ImageSpec {
                channels: 1,
                height: 28,
                width: 28,
                mean: vec![0.2860],
                std: vec![0.3530],
            },
        }
    }
}

/// One row of numbers per image (logits, probabilities or features).
pub type Rows = Vec<Vec<f32>>;

/// What one epoch did.
#[derive(Clone, Debug, PartialEq)]
pub struct EpochStats {
    /// The epoch's number, from 1.
    pub epoch: u64,
    /// Examples seen (rows times copies).
    pub examples: usize,
    /// Mean training cross-entropy over the epoch's examples.
    pub loss: f64,
    /// Fraction of the epoch's examples the model got right as it trained on them.
    pub accuracy: f64,
    /// Wall-clock seconds.
    pub seconds: f64,
}

/// A learner: network, optimiser state, epoch count, thread pool and image cache.
pub struct Learner {
    config: LearnerConfig,
    classes: Vec<String>,
    net: Net,
    optimiser: AdamW,
    epoch: u64,
    pool: rayon::ThreadPool,
    cache: ImageCache,
}

impl Learner {
    /// A fresh learner for `classes` (output order), weights drawn from `config.seed`.
    pub fn new(config: LearnerConfig, classes: Vec<String>) -> Result<Learner, LearnerError> {
        let spec = &config.image;
        if config.threads == 0 || config.batch_size == 0 {
            return Err(LearnerError::config(
                "threads and batch_size must be at least 1",
            ));
        }
        if classes.is_empty() {
            return Err(LearnerError::config("no classes"));
        }
        if spec.mean.len() != spec.channels || spec.std.len() != spec.channels || spec.is_empty() {
            return Err(LearnerError::config(
                "image spec needs one mean and std per channel and a non-empty size",
            ));
        }
        if config.widths.contains(&0) {
            return Err(LearnerError::config("every width must be at least 1"));
        }
        if spec.height < 4 || spec.width < 4 {
            return Err(LearnerError::config(
                "images must be at least 4×4 (two 2×2 pools)",
            ));
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(config.threads)
            .thread_name(|i| format!("discl-learner-{i}"))
            .build()
            .map_err(|source| LearnerError::Threads {
                threads: config.threads,
                source,
            })?;
        let net = Net::new(spec.channels, classes.len(), config.widths, config.seed)?;
        let optimiser = AdamW::new(&net.params())?;
        Ok(Learner {
            cache: ImageCache::new(spec.clone()),
            config,
            classes,
            net,
            optimiser,
            epoch: 0,
            pool,
        })
    }

    pub fn config(&self) -> &LearnerConfig {
        &self.config
    }
    pub fn classes(&self) -> &[String] {
        &self.classes
    }
    /// Epochs trained so far (restored by [`Learner::load`]).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }
    /// Trainable values (140,458 for the Fashion shape).
    pub fn parameter_count(&self) -> usize {
        self.net.parameter_count()
    }
    /// The decoded-image cache.
    pub fn cache(&self) -> &ImageCache {
        &self.cache
    }
    /// Changes the learning rate for the next epochs (a schedule is the caller's).
    pub fn set_learning_rate(&mut self, learning_rate: f64) {
        self.config.learning_rate = learning_rate;
    }

    /// Trains one epoch on `rows`, each counted `copies` times, in an order keyed by the seed,
    /// the epoch number and each row's image content and label (not by the order of `rows`, nor
    /// by where the files are).
    pub fn train_epoch(&mut self, rows: &[TrainRow]) -> Result<EpochStats, LearnerError> {
        let start = Instant::now();
        let classes = self.classes.len();
        let seed = self.config.seed;
        let epoch = self.epoch;
        if let Some(row) = rows.iter().find(|row| row.label >= classes) {
            return Err(LearnerError::Label {
                label: row.label,
                classes,
            });
        }
        let pixels = rows
            .iter()
            .map(|row| self.cache.get(&row.image))
            .collect::<Result<Vec<_>, _>>()?;
        let mut order = Vec::new();
        for (i, row) in rows.iter().enumerate() {
            // Keyed by content, so the same images in another folder train the same way.
            let image_key = data::pixel_key(&pixels[i]);
            for copy in 0..row.copies {
                let k = key(&[
                    seed,
                    purpose::ORDER,
                    epoch,
                    image_key,
                    row.label as u64,
                    copy as u64,
                ]);
                order.push((k, image_key, i, copy));
            }
        }
        if order.is_empty() {
            return Err(LearnerError::Empty);
        }
        order.sort_unstable();
        let (spec, batch_size) = (self.config.image.clone(), self.config.batch_size);
        let (lr, wd, augment) = (
            self.config.learning_rate,
            self.config.weight_decay,
            self.config.augment,
        );
        let (net, optimiser, pool) = (&mut self.net, &mut self.optimiser, &self.pool);
        let (loss_sum, correct) = pool.install(|| -> Result<(f64, usize), LearnerError> {
            let (mut loss_sum, mut correct) = (0.0f64, 0usize);
            for (b, batch) in order.chunks(batch_size).enumerate() {
                let mut x = Vec::with_capacity(batch.len() * spec.len());
                let mut labels = Vec::with_capacity(batch.len());
                for &(_, image_key, i, copy) in batch {
                    let src = &pixels[i];
                    if augment {
                        let k = key(&[seed, purpose::AUGMENT, epoch, image_key, copy as u64]);
                        data::augment_into(src, &spec, k, &mut x);
                    } else {
                        x.extend_from_slice(src);
                    }
                    labels.push(rows[i].label);
                }
                let n = batch.len();
                let x =
                    Tensor::from_vec(x, (n, spec.channels, spec.height, spec.width), &Device::Cpu)
                        .ctx("batch")?;
                let logits =
                    net.forward_train(&x, key(&[seed, purpose::DROPOUT, epoch, b as u64]))?;
                let (loss, right) = net::cross_entropy(&logits, &labels)?;
                let grads = loss.backward().ctx("backward")?;
                optimiser.step(&net.params(), &grads, lr, wd)?;
                loss_sum += f64::from(loss.to_scalar::<f32>().ctx("loss")?) * n as f64;
                correct += right;
            }
            Ok((loss_sum, correct))
        })?;
        self.epoch += 1;
        let examples = order.len();
        Ok(EpochStats {
            epoch: self.epoch,
            examples,
            loss: loss_sum / examples as f64,
            accuracy: correct as f64 / examples as f64,
            seconds: start.elapsed().as_secs_f64(),
        })
    }

    /// Logits and features of `images` with the running batch-norm statistics (the exported
    /// model's computation), in batches of `batch_size`.
    pub fn logits_and_features(
        &self,
        images: &[LearnerImage],
    ) -> Result<(Rows, Rows), LearnerError> {
        let folded = self.net.fold()?;
        let spec = &self.config.image;
        let (mut logits, mut features) = (Vec::new(), Vec::new());
        self.pool.install(|| {
            for chunk in images.chunks(self.config.batch_size.max(64)) {
                let mut x = Vec::with_capacity(chunk.len() * spec.len());
                for image in chunk {
                    x.extend_from_slice(&self.cache.get(image)?);
                }
                let shape = (chunk.len(), spec.channels, spec.height, spec.width);
                let x = Tensor::from_vec(x, shape, &Device::Cpu).ctx("batch")?;
                let (l, f) = folded.forward(&x)?;
                logits.extend(l.to_vec2::<f32>().ctx("logits")?);
                features.extend(f.to_vec2::<f32>().ctx("features")?);
            }
            Ok((logits, features))
        })
    }

    /// Logits of `images`, one row per image.
    pub fn logits(&self, images: &[LearnerImage]) -> Result<Vec<Vec<f32>>, LearnerError> {
        Ok(self.logits_and_features(images)?.0)
    }

    /// Class probabilities of `images` (softmax of the logits), one row per image.
    pub fn predict(&self, images: &[LearnerImage]) -> Result<Vec<Vec<f32>>, LearnerError> {
        Ok(self
            .logits(images)?
            .iter()
            .map(|row| softmax(row))
            .collect())
    }

    /// The probability of each row's true class.
    pub fn p_true(&self, rows: &[TrainRow]) -> Result<Vec<f32>, LearnerError> {
        let images: Vec<LearnerImage> = rows.iter().map(|r| r.image.clone()).collect();
        let logits = self.logits(&images)?;
        rows.iter()
            .zip(logits)
            .map(|(row, l)| match l.get(row.label) {
                Some(_) => Ok(crate::runtime::classifier::score_logits(&l, row.label).p_true),
                None => Err(LearnerError::Label {
                    label: row.label,
                    classes: l.len(),
                }),
            })
            .collect()
    }

    /// Writes a checkpoint (safetensors): parameters, batch-norm statistics, AdamW moments,
    /// step and epoch counts.
    pub fn save(&self, path: &Path) -> Result<(), LearnerError> {
        checkpoint::save(self, path)
    }

    /// Restores a checkpoint written by [`Learner::save`] for the same shape of learner.
    pub fn load(&mut self, path: &Path) -> Result<(), LearnerError> {
        checkpoint::load(self, path)
    }

    /// Writes `<folder>/model.onnx` and `<folder>/discl.toml` (input `input`, outputs `logits`
    /// and `features`, this learner's image spec and classes).
    pub fn export_onnx(&self, folder: &Path) -> Result<(), LearnerError> {
        export::write(folder, &self.net.fold()?, &self.config.image, &self.classes)
    }
}

/// Softmax of one row of logits.
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
    let sum: f32 = exp.iter().sum();
    exp.iter().map(|e| e / sum).collect()
}
