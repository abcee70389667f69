//! The batch chosen by measurement (a CPU generate node that leaves `batch_size` out): whether
//! more images per UNet call pay depends on the processor (caches, memory bandwidth), not only
//! on the model, so the node measures instead of guessing. It makes its first images 1 per call,
//! then 2, 4, … up to its most (the memory budget's), timing real UNet calls, and keeps the
//! smallest size after which doubling stopped saving at least 3% per image. Images are the same
//! bits at any batch size, so only speed depends on the choice. One tuner serves every runner of
//! a node (they share the processor, so they are measured together).

use std::sync::{Arc, Mutex, PoisonError};

/// Calls timed at each size before the next is tried.
const CALLS: usize = 3;
/// A larger batch is kept only when its seconds per image are at most this share of the
/// smaller's.
const GAIN: f64 = 0.97;

/// The sizes tried, what each measured and the size chosen.
#[derive(Debug)]
pub struct BatchTuner {
    /// 1, 2, 4, … and the largest allowed.
    sizes: Vec<usize>,
    /// Fastest seconds per image seen in a call of each size, and how many calls were timed.
    seconds: Vec<(f64, usize)>,
    /// The size being measured (index into `sizes`).
    trying: usize,
    chosen: Option<usize>,
}

impl BatchTuner {
    /// A tuner choosing among 1, 2, 4, … and `most` (at least 1).
    pub fn new(most: usize) -> Self {
        let most = most.max(1);
        let mut sizes: Vec<usize> = std::iter::successors(Some(1usize), |s| s.checked_mul(2))
            .take_while(|s| *s < most)
            .collect();
        sizes.push(most);
        BatchTuner {
            seconds: vec![(f64::INFINITY, 0); sizes.len()],
            chosen: (sizes.len() == 1).then_some(most),
            sizes,
            trying: 0,
        }
    }

    /// Images for the next call: the chosen size, or the one being measured.
    pub fn size(&self) -> usize {
        self.chosen.unwrap_or(self.sizes[self.trying])
    }

    /// The size chosen, once measurement has ended.
    pub fn chosen(&self) -> Option<usize> {
        self.chosen
    }

    /// Records a UNet call on `images` images that took `seconds`; calls of another size than
    /// the one being measured (the last of a job, an allocation failure's smaller retry) are
    /// not counted. Returns true when this call ended the measurement.
    pub fn record(&mut self, images: usize, seconds: f64) -> bool {
        if self.chosen.is_some() || images != self.sizes[self.trying] || images == 0 {
            return false;
        }
        let (best, calls) = &mut self.seconds[self.trying];
        *best = best.min(seconds / images as f64);
        *calls += 1;
        if *calls < CALLS {
            return false;
        }
        let i = self.trying;
        if i > 0 && self.seconds[i].0 > self.seconds[i - 1].0 * GAIN {
            self.chosen = Some(self.sizes[i - 1]);
        } else if i + 1 == self.sizes.len() {
            self.chosen = Some(self.sizes[i]);
        } else {
            self.trying += 1;
        }
        self.chosen.is_some()
    }

    /// Caps the sizes at `most` (a call ran out of memory): a larger chosen or measured size
    /// becomes `most`, chosen.
    pub fn cap(&mut self, most: usize) {
        if self.size() > most {
            self.chosen = Some(most.max(1));
        }
    }

    /// What was measured, e.g. `1 → 0.081 s, 2 → 0.070 s, 4 → 0.071 s` (seconds per image in
    /// one UNet call).
    pub fn measured(&self) -> String {
        let parts: Vec<String> = self
            .sizes
            .iter()
            .zip(&self.seconds)
            .filter(|(_, (_, calls))| *calls > 0)
            .map(|(size, (best, _))| format!("{size} → {best:.4} s"))
            .collect();
        parts.join(", ")
    }
}

/// A tuner shared by a node's runners, with the node's name for its one message.
#[derive(Clone, Debug)]
pub struct SharedTuner {
    node: Arc<str>,
    tuner: Arc<Mutex<BatchTuner>>,
}

impl SharedTuner {
    pub fn new(node: &str, most: usize) -> Self {
        SharedTuner {
            node: node.into(),
            tuner: Arc::new(Mutex::new(BatchTuner::new(most))),
        }
    }

    pub fn size(&self) -> usize {
        self.lock().size()
    }

    /// Records a timed call; says on standard error, once, what was chosen and why.
    pub fn record(&self, images: usize, seconds: f64) {
        let mut tuner = self.lock();
        if tuner.record(images, seconds) {
            eprintln!(
                "discl: node {}: {} image(s) per UNet call measured fastest here (seconds per image: {})",
                self.node,
                tuner.size(),
                tuner.measured()
            );
        }
    }

    pub fn cap(&self, most: usize) {
        self.lock().cap(most);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BatchTuner> {
        self.tuner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `per_image(size)` seconds per image until the tuner chooses.
    fn choose(most: usize, per_image: impl Fn(usize) -> f64) -> (usize, usize) {
        let mut tuner = BatchTuner::new(most);
        let mut calls = 0;
        while tuner.chosen().is_none() {
            let size = tuner.size();
            tuner.record(size, per_image(size) * size as f64);
            calls += 1;
            assert!(calls < 100, "never chose");
        }
        (tuner.size(), calls)
    }

    #[test]
    fn keeps_doubling_while_it_saves_and_stops_when_it_does_not() {
        // Larger batches pay up to 4 images, then cost the same.
        let per = |s: usize| [0.0, 1.0, 0.8, 0.0, 0.7, 0.0, 0.0, 0.0, 0.69][s];
        assert_eq!(choose(8, per), (4, 12));
        // Batching never pays: two sizes measured, 1 kept.
        assert_eq!(choose(8, |_| 1.0), (1, 6));
        // Always pays: the largest allowed, which need not be a power of two.
        assert_eq!(choose(6, |s| 1.0 / s as f64), (6, 12));
        // Nothing to choose.
        assert_eq!(choose(1, |_| 1.0), (1, 0));
    }

    #[test]
    fn the_fastest_call_counts_and_other_sizes_are_ignored() {
        let mut tuner = BatchTuner::new(2);
        // One slow outlier among the size-1 calls does not decide.
        for seconds in [5.0, 1.0, 1.0] {
            tuner.record(1, seconds);
        }
        assert_eq!(tuner.size(), 2);
        // A call of 1 image while 2 are measured (the job's last) is not counted.
        assert!(!tuner.record(1, 0.1));
        tuner.record(2, 1.0);
        tuner.record(2, 1.0);
        assert!(tuner.record(2, 1.0), "the third call of 2 decides");
        assert_eq!(tuner.chosen(), Some(2), "the largest allowed, and faster");
        assert_eq!(tuner.measured(), "1 → 1.0000 s, 2 → 0.5000 s");
        // Once chosen, nothing changes it but an allocation failure.
        tuner.record(2, 100.0);
        assert_eq!(tuner.size(), 2);
        tuner.cap(1);
        assert_eq!(tuner.size(), 1);
    }
}
