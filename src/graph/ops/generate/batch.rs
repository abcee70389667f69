//! How many images a generate node puts in one UNet call, and in one job for its runners: the
//! graph's `batch_size`; without one, 8 on a GPU and, on the CPU, the fastest of 1, 2, 4 and 8
//! as measured while generating (`runtime::diffusion::batch_tuner`) among the sizes whose
//! activations stay within the weights' size; on the CPU never more than the model's memory
//! budget holds.

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
    /// beside its session's weights, and a measured default no more than
    /// [`memory::measured_batch_most`] allows.
    pub(super) fn batch_size_on(&self, pool: &ModelPool, device: Device) -> usize {
        self.batch_and_cap(pool, device).0
    }

    fn batch_and_cap(&self, pool: &ModelPool, device: Device) -> (usize, Cap) {
        let asked = self.batch_size.unwrap_or(DEFAULT);
        let folder = &pool.spec(&self.model).path;
        let (Device::Cpu, Some(image)) = (device, memory::unet_image_bytes(folder)) else {
            return (asked, Cap::None);
        };
        let (runners, session) = (pool.sessions(&self.model), memory::session_bytes(folder));
        let budget = pool.memory_budget(&self.model);
        let within_budget = memory::batch_within(budget, runners, session, image);
        let within_weights = match self.batch_size {
            Some(_) => usize::MAX,
            None => memory::measured_batch_most(session, image),
        };
        match asked.min(within_budget).min(within_weights) {
            b if b == asked => (b, Cap::None),
            b if b == within_budget => (b, Cap::Budget),
            b => (b, Cap::Weights { image, session }),
        }
    }

    /// The configuration line's batch part, e.g. `batch 1 to 8 (the fastest measured) image(s)
    /// per UNet call (default)`.
    pub(super) fn batch_description(&self, pool: &ModelPool) -> String {
        let device = crate::runtime::onnx::resolved_device(&pool.session_options(&self.model));
        let (batch, cap) = self.batch_and_cap(pool, device);
        let asked = self.batch_size.unwrap_or(DEFAULT);
        let chosen = match (self.batch_size, cap) {
            (None, Cap::Budget) => format!(" (default; the model's memory budget holds {batch})"),
            (Some(_), Cap::Budget) => {
                format!(" ({asked} asked; the model's memory budget holds {batch})")
            }
            (_, Cap::Weights { image, session }) => {
                let more = match batch {
                    1 => "more".to_string(),
                    b => format!("more than {b}"),
                };
                let what = match session >= memory::MEASURED_FLOOR {
                    true => "the weights' size",
                    false => "what a small model may always hold",
                };
                format!(
                    " (default; at ~{} of activations an image, {more} would hold over {}, {what})",
                    memory::ByteSize(image),
                    memory::ByteSize(session.max(memory::MEASURED_FLOOR))
                )
            }
            (Some(_), Cap::None) => String::new(),
            (None, Cap::None) => " (default)".into(),
        };
        let size = match self.measures_batch(device, batch) {
            true => format!("1 to {batch} (the fastest measured)"),
            false => batch.to_string(),
        };
        format!("batch {size} image(s) per UNet call{chosen}")
    }
}

/// What holds a CPU batch below the one asked.
enum Cap {
    None,
    /// The model's memory budget.
    Budget,
    /// A measured default's activations kept within the weights' size: an image's bytes and
    /// the session's.
    Weights { image: u64, session: u64 },
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
