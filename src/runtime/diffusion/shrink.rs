//! Batches after an allocation failure: a UNet or VAE call that runs out of memory is made again
//! with half the images ([`in_chunks`] for the VAE), and after a UNet or decoder failure the
//! generator keeps the smaller batch for the rest of the run. Images are the same bits at any
//! batch size, so nothing else changes. Also how a generator measuring its batch (`batch_tuner`)
//! sizes and times its UNet calls.

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
        let next = halve(images, error);
        self.batch_limit = Some(next);
        if let Some(tuner) = &self.tuner {
            tuner.cap(next);
        }
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

/// Half of `images` (at least one) after a call on them ran out of memory; says so.
pub(super) fn halve(images: usize, error: &RuntimeError) -> usize {
    let next = (images / 2).max(1);
    eprintln!("discl: a call on {images} images ran out of memory ({error}); continuing at {next} per call");
    next
}

/// `call` over `items` in consecutive chunks of at most `size`, its results in order. A chunk
/// whose call runs out of memory is made again smaller: `halved` hears its size and the error and
/// gives the size from then on; a single item's failure, or any other error, is returned.
pub(super) fn in_chunks<T, U>(
    items: &[T],
    size: usize,
    mut call: impl FnMut(&[T]) -> Result<Vec<U>, RuntimeError>,
    mut halved: impl FnMut(usize, &RuntimeError) -> usize,
) -> Result<Vec<U>, RuntimeError> {
    let mut results = Vec::with_capacity(items.len());
    let (mut start, mut size) = (0, size.max(1));
    while start < items.len() {
        let end = (start + size).min(items.len());
        match call(&items[start..end]) {
            Ok(got) => {
                results.extend(got);
                start = end;
            }
            Err(e) if e.is_out_of_memory() && end - start > 1 => {
                size = halved(end - start, &e).clamp(1, end - start - 1);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// Calls on more than `limit` items fail as out of memory; the sizes called are kept.
    fn refusing(
        limit: usize,
        calls: &mut Vec<usize>,
    ) -> impl FnMut(&[u32]) -> Result<Vec<u32>, RuntimeError> + '_ {
        move |chunk| {
            calls.push(chunk.len());
            if chunk.len() > limit {
                return Err(RuntimeError::simulated_out_of_memory(
                    Path::new("vae_encoder/model.onnx"),
                    chunk.len(),
                ));
            }
            Ok(chunk.iter().map(|i| i * 10).collect())
        }
    }

    #[test]
    fn a_chunk_out_of_memory_is_made_again_at_half_its_size() {
        let items: Vec<u32> = (0..10).collect();
        let mut calls = Vec::new();
        let mut heard = Vec::new();
        let got = in_chunks(&items, 8, refusing(2, &mut calls), |n, e| {
            heard.push(n);
            halve(n, e)
        })
        .unwrap();
        assert_eq!(got, (0..10).map(|i| i * 10).collect::<Vec<_>>());
        assert_eq!(calls, [8, 4, 2, 2, 2, 2, 2]);
        assert_eq!(heard, [8, 4]);
    }

    #[test]
    fn one_item_out_of_memory_or_another_error_is_returned() {
        let items: Vec<u32> = (0..3).collect();
        let mut calls = Vec::new();
        let err = in_chunks(&items, 4, refusing(0, &mut calls), halve).unwrap_err();
        assert!(err.is_out_of_memory(), "{err}");
        assert_eq!(calls, [3, 1]);

        let mut calls = 0;
        let err = in_chunks(
            &items,
            4,
            |_| {
                calls += 1;
                Err::<Vec<u32>, _>(RuntimeError::request("not a memory error"))
            },
            halve,
        )
        .unwrap_err();
        assert!(
            !err.is_out_of_memory() && err.to_string().contains("not a memory error"),
            "{err}"
        );
        assert_eq!(calls, 1, "no smaller call after another error");
    }

    #[test]
    fn a_halving_that_gives_no_smaller_size_still_shrinks() {
        let items: Vec<u32> = (0..4).collect();
        let mut calls = Vec::new();
        let got = in_chunks(&items, 4, refusing(1, &mut calls), |n, _| n).unwrap();
        assert_eq!(got.len(), 4);
        assert_eq!(calls, [4, 3, 2, 1, 1, 1, 1]);
    }
}
