//! How many images a generate node puts in one UNet call, and in one job for its runners: the
//! graph's `batch_size`; without one, 8 on a GPU and, on the CPU, the fastest of 1, 2, 4 and 8
//! as measured while generating (`runtime::diffusion::batch_tuner`); on the CPU never more than
//! the model's memory budget holds.

use super::GenerateConfig;
use crate::graph::ops::ModelPool;
use crate::runtime::device::Device;
use crate::runtime::memory;

/// The batch when the graph gives none: on a GPU; on the CPU the most a measurement tries.
const DEFAULT: usize = 8;

impl GenerateConfig {
    /// Whether the node chooses its batch by measurement: on the CPU when the graph gives no
    /// `batch_size` (on a GPU more images per call pay, and its default is fixed) and the
    /// memory budget holds more than one image (`most`, from [`Self::batch_size_on`]).
    pub(super) fn measures_batch(&self, device: Device, most: usize) -> bool {
        self.batch_size.is_none() && device == Device::Cpu && most > 1
    }

    /// Images per UNet call on `device` (when measuring: the most tried): the graph's
    /// `batch_size`, else the default; on the CPU no more than the model's memory budget holds
    /// beside its session's weights.
    pub(super) fn batch_size_on(&self, pool: &ModelPool, device: Device) -> usize {
        let asked = self.batch_size.unwrap_or(DEFAULT);
        let folder = &pool.spec(&self.model).path;
        match (device, memory::unet_image_bytes(folder)) {
            (Device::Cpu, Some(image)) => {
                let (runners, session) = (pool.sessions(&self.model), memory::session_bytes(folder));
                let budget = pool.memory_budget(&self.model);
                asked.min(memory::batch_within(budget, runners, session, image))
            }
            _ => asked,
        }
    }

    /// The configuration line's batch part, e.g. `batch 1 to 8 (the fastest measured) image(s)
    /// per UNet call (default)`.
    pub(super) fn batch_description(&self, pool: &ModelPool) -> String {
        let device = crate::runtime::onnx::resolved_device(&pool.session_options(&self.model));
        let batch = self.batch_size_on(pool, device);
        let asked = self.batch_size.unwrap_or(DEFAULT);
        let chosen = match (self.batch_size, batch < asked) {
            (None, true) => format!(" (default; the model's memory budget holds {batch})"),
            (Some(_), true) => format!(" ({asked} asked; the model's memory budget holds {batch})"),
            (Some(_), false) => String::new(),
            (None, false) => " (default)".into(),
        };
        let size = match self.measures_batch(device, batch) {
            true => format!("1 to {batch} (the fastest measured)"),
            false => batch.to_string(),
        };
        format!("batch {size} image(s) per UNet call{chosen}")
    }
}

/// Images per job sent to the runners. Measuring, the largest batch tried (and no more, so a
/// small workload still spreads over the runners). Otherwise jobs large enough to batch across
/// levels and small enough to keep every session busy; images made one per call have nothing
/// to batch: one a job, so even a refresh of two images keeps two runners busy.
pub(super) fn job_size(batch: usize, sessions: usize, measured: bool) -> usize {
    match measured {
        true => batch,
        false if batch <= 1 => 1,
        false => (batch * 8 / sessions.max(1)).max(batch),
    }
}
