//! Batches after an allocation failure: a UNet or VAE decoder call that runs out of memory is
//! made again with half the images, and the generator keeps the smaller batch for the rest of
//! the run. Images are the same bits at any batch size, so nothing else changes.

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
        eprintln!("discl: a call on {images} images ran out of memory ({error}); continuing at {next} per call");
        next
    }
}
