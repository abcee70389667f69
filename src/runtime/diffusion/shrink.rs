//! Batches after an allocation failure: a UNet or VAE decoder call that runs out of memory is
//! made again with half the images, and the generator keeps the smaller batch for the rest of
//! the run. Images are the same bits at any batch size, so nothing else changes. Also how a
//! generator measuring its batch (`batch_tuner`) sizes and times its UNet calls.

use super::batch_tuner::SharedTuner;
use super::img2img::Generator;
use crate::runtime::error::RuntimeError;

impl Generator {
    /// Images per call: the settings' batch, or less after a call ran out of memory.
    pub(super) fn batch(&self, asked: usize) -> usize {
        self.batch_limit
            .map_or(asked, |limit| limit.min(asked))
            .max(1)
    }

    /// Halves the batch after a call on `images` images ran out of memory; says so once per
    /// halving.
    pub(super) fn shrink(&mut self, images: usize, error: &RuntimeError) -> usize {
        let next = (images / 2).max(1);
        self.batch_limit = Some(next);
        if let Some(tuner) = &self.tuner {
            tuner.cap(next);
        }
        eprintln!("discl: a call on {images} images ran out of memory ({error}); continuing at {next} per call");
        next
    }

    /// Chooses the images per UNet call with `tuner` (shared with the model's other
    /// generators) instead of always making them as large as the batch allows.
    pub fn measure_batch(&mut self, tuner: SharedTuner) {
        self.tuner = Some(tuner);
    }

    /// Images in the next UNet call: `batch`, or fewer while the tuner measures or after it
    /// chose fewer.
    pub(super) fn call_size(&self, batch: usize) -> usize {
        self.tuner.as_ref().map_or(batch, |t| t.size().min(batch))
    }

    /// A UNet call on `images` images took `seconds`.
    pub(super) fn timed(&self, images: usize, seconds: f64) {
        if let Some(tuner) = &self.tuner {
            tuner.record(images, seconds);
        }
    }
}
