//! Diffusion schedulers (PNDM, DDIM, Euler, DPM-Solver++ multistep), numerically matching diffusers.
//!
//! The engine batches items that sit at different steps (and different img2img start points) into one
//! UNet call, so the API is split in two:
//! - [`Schedule`]: immutable, built once per (config, kind, number of inference steps) and shared by
//!   all items: timesteps, sigmas, alphas tables.
//! - [`ItemState`]: per item (one latent): where it is in the schedule plus the history multistep
//!   methods need. Each item advances on its own with [`Schedule::step`].
//!
//! Samples are one item's latent flattened to `&[f32]`. Arithmetic mirrors diffusers' float32 tensor
//! expressions (same operand order), so results agree with PyTorch to ~1e-6.

mod betas;
mod config;
mod ddim;
mod dpm;
mod euler;
mod params;
mod pndm;
mod start;

#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;

pub use config::SchedulerConfig;
pub use params::{BetaSchedule, Prediction, SchedulerParams, SolverType, Spacing};
pub use start::{img2img_first_step, img2img_steps};

/// Everything that can go wrong configuring or running a scheduler.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error("scheduler config is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("cannot read scheduler config {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "unsupported scheduler class {0:?} (supported: PNDMScheduler, DDIMScheduler, \
         EulerDiscreteScheduler, DPMSolverMultistepScheduler)"
    )]
    UnsupportedClass(String),
    #[error("scheduler config has no _class_name: pick the scheduler kind explicitly")]
    MissingClass,
    #[error("{kind}: unsupported {option} = {value}: {why}")]
    Unsupported {
        kind: SchedulerKind,
        option: &'static str,
        value: String,
        why: &'static str,
    },
    #[error("{kind}: invalid {option}: {why}")]
    Invalid {
        kind: SchedulerKind,
        option: &'static str,
        why: String,
    },
    #[error("number of inference steps must be in 1..={max}, got {got}")]
    InvalidSteps { got: usize, max: usize },
    #[error("strength must be a number in [0, 1] in steps of 0.001, got {0}")]
    InvalidStrength(f64),
    #[error(
        "strength {strength} leaves no denoising step out of {steps} (needs steps * strength >= 1)"
    )]
    NoSteps { strength: f64, steps: usize },
    #[error("start index {start} is past the end of the {len}-entry schedule")]
    StartOutOfRange { start: usize, len: usize },
    #[error("{what} has {got} values, the sample has {expected}")]
    LengthMismatch {
        what: &'static str,
        got: usize,
        expected: usize,
    },
    #[error("item has already taken every step of its schedule")]
    Finished,
    #[error("item state belongs to a different schedule")]
    WrongSchedule,
    #[error("{kind}: timestep {timestep} is outside the trained range 0..{num_train}")]
    TimestepOutOfRange {
        kind: SchedulerKind,
        timestep: i64,
        num_train: usize,
    },
}

pub type Result<T, E = SchedulerError> = std::result::Result<T, E>;

/// The scheduler algorithm, named as diffusers' class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SchedulerKind {
    /// `PNDMScheduler` with `skip_prk_steps` (PLMS), SD 1.x's default.
    Pndm,
    /// `DDIMScheduler`, deterministic (eta = 0).
    Ddim,
    /// `EulerDiscreteScheduler`, deterministic (s_churn = 0).
    EulerDiscrete,
    /// `DPMSolverMultistepScheduler` with `dpmsolver++` (DPM++ 2M by default).
    DpmSolverMultistep,
}

impl SchedulerKind {
    pub const ALL: [SchedulerKind; 4] = [
        SchedulerKind::Pndm,
        SchedulerKind::Ddim,
        SchedulerKind::EulerDiscrete,
        SchedulerKind::DpmSolverMultistep,
    ];

    /// Parses diffusers' class name (`_class_name`).
    pub fn from_class_name(name: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|k| k.class_name() == name)
            .ok_or_else(|| SchedulerError::UnsupportedClass(name.to_string()))
    }

    pub fn class_name(self) -> &'static str {
        match self {
            SchedulerKind::Pndm => "PNDMScheduler",
            SchedulerKind::Ddim => "DDIMScheduler",
            SchedulerKind::EulerDiscrete => "EulerDiscreteScheduler",
            SchedulerKind::DpmSolverMultistep => "DPMSolverMultistepScheduler",
        }
    }
}

impl fmt::Display for SchedulerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.class_name())
    }
}

impl std::str::FromStr for SchedulerKind {
    type Err = SchedulerError;
    /// Accepts the class name or a short name (`pndm`, `ddim`, `euler`, `dpm++`/`dpm`).
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "pndm" | "plms" => Ok(SchedulerKind::Pndm),
            "ddim" => Ok(SchedulerKind::Ddim),
            "euler" | "euler_discrete" => Ok(SchedulerKind::EulerDiscrete),
            "dpm" | "dpm++" | "dpmpp" | "dpm_solver" | "dpmsolver" => {
                Ok(SchedulerKind::DpmSolverMultistep)
            }
            _ => Self::from_class_name(s),
        }
    }
}

/// A configured scheduler (betas resolved): builds [`Schedule`]s for any step count.
#[derive(Debug, Clone)]
pub struct Scheduler {
    params: Arc<SchedulerParams>,
    alphas_cumprod: Arc<[f32]>,
}

impl Scheduler {
    /// The config's own class (`_class_name`).
    pub fn from_config(config: &SchedulerConfig) -> Result<Self> {
        Self::new(config, config.class_kind()?)
    }

    /// Any supported kind reading the same config, like diffusers' `Kind.from_config(config)`:
    /// keys the kind does not know are ignored, keys it knows but the file lacks take its defaults.
    pub fn new(config: &SchedulerConfig, kind: SchedulerKind) -> Result<Self> {
        let params = config.resolve(kind)?;
        let alphas_cumprod = betas::alphas_cumprod(&params)?.into();
        Ok(Scheduler {
            params: Arc::new(params),
            alphas_cumprod,
        })
    }

    pub fn kind(&self) -> SchedulerKind {
        self.params.kind
    }

    pub fn params(&self) -> &SchedulerParams {
        &self.params
    }

    /// Cumulative product of alphas over the training timesteps (float32, as diffusers keeps it).
    pub fn alphas_cumprod(&self) -> &[f32] {
        &self.alphas_cumprod
    }

    /// The schedule for `num_inference_steps`, as diffusers' `set_timesteps(num_inference_steps)`.
    pub fn schedule(&self, num_inference_steps: usize) -> Result<Schedule> {
        let max = self.params.num_train_timesteps;
        if num_inference_steps == 0 || num_inference_steps > max {
            return Err(SchedulerError::InvalidSteps {
                got: num_inference_steps,
                max,
            });
        }
        let p = &*self.params;
        let ac = &*self.alphas_cumprod;
        let (timesteps, sigmas) = match p.kind {
            SchedulerKind::Pndm => (pndm::timesteps(p, num_inference_steps)?, Vec::new()),
            SchedulerKind::Ddim => (ddim::timesteps(p, num_inference_steps)?, Vec::new()),
            SchedulerKind::EulerDiscrete => euler::timesteps(p, ac, num_inference_steps)?,
            SchedulerKind::DpmSolverMultistep => dpm::timesteps(p, ac, num_inference_steps)?,
        };
        let init_noise_sigma = match p.kind {
            SchedulerKind::EulerDiscrete => euler::init_noise_sigma(p, &sigmas),
            _ => 1.0,
        };
        let final_alpha_cumprod = if p.set_alpha_to_one { 1.0 } else { ac[0] };
        Ok(Schedule {
            params: Arc::clone(&self.params),
            alphas_cumprod: Arc::clone(&self.alphas_cumprod),
            final_alpha_cumprod,
            num_inference_steps,
            timesteps,
            sigmas,
            init_noise_sigma,
        })
    }
}

/// The immutable schedule for one number of inference steps, shared by every item using it.
#[derive(Debug, Clone)]
pub struct Schedule {
    params: Arc<SchedulerParams>,
    alphas_cumprod: Arc<[f32]>,
    final_alpha_cumprod: f32,
    num_inference_steps: usize,
    timesteps: Vec<f32>,
    sigmas: Vec<f32>,
    init_noise_sigma: f32,
}

/// One item's position in a [`Schedule`] and the history its multistep method needs.
#[derive(Debug, Clone)]
pub struct ItemState {
    kind: SchedulerKind,
    len: usize,
    start: usize,
    index: usize,
    /// PNDM: previous model outputs (`ets`, oldest first, at most 4).
    /// DPM: previous converted outputs (x0 predictions, oldest first, at most `solver_order`).
    history: Vec<Vec<f32>>,
    /// PNDM: the sample at its first step, re-used by the second (`cur_sample`).
    saved_sample: Vec<f32>,
}

impl ItemState {
    /// Index of the item's next step in [`Schedule::timesteps`].
    pub fn step_index(&self) -> usize {
        self.index
    }
    /// Index where this item started (img2img's `t_start * order`).
    pub fn start_index(&self) -> usize {
        self.start
    }
    /// Steps (UNet calls) already taken.
    pub fn steps_taken(&self) -> usize {
        self.index - self.start
    }
    /// Steps (UNet calls) still to take.
    pub fn steps_left(&self) -> usize {
        self.len - self.index
    }
    pub fn is_finished(&self) -> bool {
        self.index >= self.len
    }
}

impl Schedule {
    pub fn kind(&self) -> SchedulerKind {
        self.params.kind
    }
    pub fn params(&self) -> &SchedulerParams {
        &self.params
    }
    pub fn num_inference_steps(&self) -> usize {
        self.num_inference_steps
    }
    /// diffusers' `scheduler.order` (1 for all four kinds: one UNet call per list entry).
    pub fn order(&self) -> usize {
        1
    }
    /// The full timestep list (one entry per UNet call; PNDM repeats one near the start).
    pub fn timesteps(&self) -> &[f32] {
        &self.timesteps
    }
    /// Euler / DPM: sigmas, one per timestep plus the final one. Empty for PNDM / DDIM.
    pub fn sigmas(&self) -> &[f32] {
        &self.sigmas
    }
    /// Scale of the initial noise for text-to-image (no init image): `latent = noise * this`.
    pub fn init_noise_sigma(&self) -> f32 {
        self.init_noise_sigma
    }

    /// A fresh item starting at index `start` of [`Schedule::timesteps`].
    pub fn start_at(&self, start: usize) -> Result<ItemState> {
        let len = self.timesteps.len();
        if start >= len {
            return Err(SchedulerError::StartOutOfRange { start, len });
        }
        Ok(ItemState {
            kind: self.kind(),
            len,
            start,
            index: start,
            history: Vec::new(),
            saved_sample: Vec::new(),
        })
    }

    fn check(&self, item: &ItemState) -> Result<()> {
        if item.kind != self.kind() || item.len != self.timesteps.len() {
            return Err(SchedulerError::WrongSchedule);
        }
        if item.is_finished() {
            return Err(SchedulerError::Finished);
        }
        Ok(())
    }

    /// The timestep to feed the UNet for the item's next step; `None` once it is finished.
    pub fn timestep(&self, item: &ItemState) -> Option<f32> {
        self.timesteps.get(item.index).copied()
    }

    /// Noises an init latent to the item's current (first) timestep, in place:
    /// `sample = add_noise(sample, noise, t)` as diffusers' img2img `prepare_latents`.
    pub fn add_noise(&self, item: &ItemState, sample: &mut [f32], noise: &[f32]) -> Result<()> {
        self.check(item)?;
        same_len("noise", noise, sample)?;
        match self.kind() {
            SchedulerKind::Pndm | SchedulerKind::Ddim => {
                let t = self.train_index(self.timesteps[item.index] as i64)?;
                let a = self.alphas_cumprod[t];
                let (sa, sb) = (a.sqrt(), (1.0 - a).sqrt());
                for (x, n) in sample.iter_mut().zip(noise) {
                    *x = sa * *x + sb * *n;
                }
            }
            SchedulerKind::EulerDiscrete => {
                let sigma = self.sigmas[item.index];
                for (x, n) in sample.iter_mut().zip(noise) {
                    *x += *n * sigma;
                }
            }
            SchedulerKind::DpmSolverMultistep => {
                let (alpha_t, sigma_t) = dpm::alpha_sigma(self.sigmas[item.index]);
                for (x, n) in sample.iter_mut().zip(noise) {
                    *x = alpha_t * *x + sigma_t * *n;
                }
            }
        }
        Ok(())
    }

    /// Text-to-image start latent in place: `noise * init_noise_sigma` (diffusers' `prepare_latents`).
    pub fn init_noise(&self, noise: &mut [f32]) {
        let s = self.init_noise_sigma;
        noise.iter_mut().for_each(|x| *x *= s);
    }

    /// Factor the UNet input is multiplied by at the item's next step (Euler: 1/sqrt(sigma²+1)).
    pub fn model_input_scale(&self, item: &ItemState) -> f32 {
        match (self.kind(), self.sigmas.get(item.index)) {
            (SchedulerKind::EulerDiscrete, Some(&s)) => 1.0 / (s * s + 1.0).sqrt(),
            _ => 1.0,
        }
    }

    /// Writes the UNet input for the item's next step into `out` (`scale_model_input`).
    pub fn scale_model_input(
        &self,
        item: &ItemState,
        sample: &[f32],
        out: &mut [f32],
    ) -> Result<()> {
        self.check(item)?;
        same_len("model input buffer", out, sample)?;
        match self.kind() {
            SchedulerKind::EulerDiscrete => {
                let s = self.sigmas[item.index];
                // diffusers divides by the root (not multiplies by its inverse): keep that rounding.
                let d = (s * s + 1.0).sqrt();
                out.iter_mut().zip(sample).for_each(|(o, x)| *o = *x / d);
            }
            _ => out.copy_from_slice(sample),
        }
        Ok(())
    }

    /// One denoising step for one item: updates `sample` in place from the (guided) model output
    /// and advances the item.
    pub fn step(
        &self,
        item: &mut ItemState,
        model_output: &[f32],
        sample: &mut [f32],
    ) -> Result<()> {
        self.check(item)?;
        same_len("model output", model_output, sample)?;
        match self.kind() {
            SchedulerKind::Pndm => pndm::step(self, item, model_output, sample)?,
            SchedulerKind::Ddim => ddim::step(self, item, model_output, sample)?,
            SchedulerKind::EulerDiscrete => euler::step(self, item, model_output, sample),
            SchedulerKind::DpmSolverMultistep => dpm::step(self, item, model_output, sample),
        }
        item.index += 1;
        Ok(())
    }

    /// alphas_cumprod index for a (PNDM / DDIM) timestep, refusing ones outside the table.
    fn train_index(&self, t: i64) -> Result<usize> {
        let n = self.params.num_train_timesteps;
        if t < 0 || t as usize >= n {
            return Err(SchedulerError::TimestepOutOfRange {
                kind: self.kind(),
                timestep: t,
                num_train: n,
            });
        }
        Ok(t as usize)
    }

    /// alpha_cumprod at a "previous" timestep: below 0 means the final (clean) alpha.
    fn alpha_prev(&self, t: i64) -> Result<f32> {
        if t < 0 {
            Ok(self.final_alpha_cumprod)
        } else {
            Ok(self.alphas_cumprod[self.train_index(t)?])
        }
    }
}

fn same_len(what: &'static str, got: &[f32], sample: &[f32]) -> Result<()> {
    if got.len() != sample.len() {
        return Err(SchedulerError::LengthMismatch {
            what,
            got: got.len(),
            expected: sample.len(),
        });
    }
    Ok(())
}
