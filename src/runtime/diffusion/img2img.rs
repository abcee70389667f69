//! Batched image-guided generation (SDEdit) over the guidance spectrum. Each request is one
//! image: a source (or none, for λ = 0), a condition (prompt or class), a level λ and keyed
//! noise. Sources are encoded once and prompts once per model (`encodings`); items advance on their
//! own scheduler state, and every UNet call carries as many items as share a timestep (or any
//! items, when the UNet takes one timestep per item), guided and unguided halves together.

use super::batch_tuner::SharedTuner;
use super::device_io::UnetBinding;
use super::model::{Conditioning, DiffusionModel, TimestepShape};
use super::noise::ImageNoise;
use super::posterior::{Encoded, VaeLatent};
use crate::record::Digest;
use crate::runtime::device::Device;
use crate::runtime::error::RuntimeError;
use crate::runtime::scheduler::{ItemState, Schedule, Scheduler, SchedulerError, SchedulerKind};
use crate::runtime::service::ServiceStats;
use ort::value::TensorRef;
use std::collections::HashMap;
use std::sync::Arc;

pub use super::codec::to_png;
pub use super::request::{Condition, GenerationSettings, ImageRequest};

/// Loaded model plus what it has already computed this run. On the CPU, the generators of one
/// model share its sessions (one copy of the weights), each calling them from its own thread.
pub struct Generator {
    pub model: Arc<DiffusionModel>,
    pub(super) schedules: HashMap<(SchedulerKind, usize), Arc<Schedule>>,
    /// This generator's view of its model's prompt states (`model.encodings`).
    pub(super) prompts: HashMap<String, Arc<Vec<f32>>>,
    /// Its view of the model's encoded sources: posteriors (or latents as given), keyed by the
    /// source's digest.
    pub(super) latents: HashMap<Digest, Arc<Encoded>>,
    /// The UNet's IO binding, made on the first call when the model runs on CUDA.
    binding: Option<UnetBinding>,
    /// Images per call after a call ran out of memory (halved each time), for the rest of the run.
    pub(super) batch_limit: Option<usize>,
    /// Chooses the images per UNet call by timing them (`None`: the settings' batch).
    pub(super) tuner: Option<SharedTuner>,
}

struct Item {
    state: ItemState,
    x: Vec<f32>,
    condition: Condition,
}

impl Generator {
    pub fn new(model: impl Into<Arc<DiffusionModel>>) -> Self {
        let model = model.into();
        Generator {
            model,
            schedules: HashMap::new(),
            prompts: HashMap::new(),
            latents: HashMap::new(),
            binding: None,
            batch_limit: None,
            tuner: None,
        }
    }

    fn schedule(
        &mut self,
        kind: SchedulerKind,
        steps: usize,
    ) -> Result<Arc<Schedule>, RuntimeError> {
        if let Some(s) = self.schedules.get(&(kind, steps)) {
            return Ok(Arc::clone(s));
        }
        let file = self.model.folder.join("scheduler/scheduler_config.json");
        let schedule = Scheduler::new(&self.model.scheduler_config, kind)
            .and_then(|s| s.schedule(steps))
            .map_err(|source| RuntimeError::SchedulerConfig { file, source })?;
        let schedule = Arc::new(schedule);
        self.schedules.insert((kind, steps), Arc::clone(&schedule));
        Ok(schedule)
    }

    /// The index of the first step an item at `level` runs: strength 1 − λ through the
    /// scheduler's one img2img rule ([`Schedule::start_index_per_mille`]).
    pub fn start_index(schedule: &Schedule, level: u16) -> Result<usize, RuntimeError> {
        if level >= 1000 {
            return Err(RuntimeError::LevelOutOfRange { level });
        }
        schedule
            .start_index_per_mille(1000 - level)
            .map_err(|e| match e {
                SchedulerError::NoSteps { steps, .. } => RuntimeError::NoSteps { level, steps },
                other => RuntimeError::Scheduler(other),
            })
    }

    /// Makes every requested image; returns each as CHW floats in [-1, 1] (not yet clamped).
    pub fn generate(
        &mut self,
        requests: &[ImageRequest],
        settings: &GenerationSettings,
        stats: &ServiceStats,
    ) -> Result<Vec<Vec<f32>>, RuntimeError> {
        let latent_len = self.model.latent_len();
        let sampled = settings.vae_latent == VaeLatent::Sample && self.model.has_posterior();
        let noises = requests
            .iter()
            .map(|r| ImageNoise::keyed(&r.noise, latent_len, sampled && r.level > 0))
            .collect();
        self.generate_from_noise(requests, noises, settings, stats)
    }

    /// As [`Generator::generate`], with each request's noise given — the add-noise noise and,
    /// where the VAE posterior is sampled, the posterior's (the requests' noise keys are not
    /// used): for landing on a reference that recorded its own draws.
    pub fn generate_from_noise(
        &mut self,
        requests: &[ImageRequest],
        noises: Vec<ImageNoise>,
        settings: &GenerationSettings,
        stats: &ServiceStats,
    ) -> Result<Vec<Vec<f32>>, RuntimeError> {
        let schedule = self.schedule(settings.scheduler, settings.steps)?;
        let guided = settings.guidance_scale > 1.0;
        if let Conditioning::Text(_) = self.model.conditioning {
            let mut prompts: Vec<String> = requests
                .iter()
                .filter_map(|r| match &r.condition {
                    Condition::Prompt(p) => Some(p.clone()),
                    Condition::Class(_) => None,
                })
                .collect();
            if guided {
                prompts.push(String::new());
            }
            self.encode_prompts(prompts)?;
        }
        let sources: Vec<(Digest, Arc<Vec<f32>>)> = requests
            .iter()
            .filter(|r| r.level > 0)
            .filter_map(|r| r.source.clone())
            .collect();
        self.encode_sources(sources)?;

        let latent_len = self.model.latent_len();
        if noises.len() != requests.len() {
            return Err(RuntimeError::request(format!(
                "{} noises for {} requests",
                noises.len(),
                requests.len()
            )));
        }
        let mut items = Vec::with_capacity(requests.len());
        for (request, noise) in requests.iter().zip(noises) {
            let ImageNoise {
                add: mut x,
                posterior,
            } = noise;
            if x.len() != latent_len {
                return Err(RuntimeError::request(format!(
                    "noise has {} values, the latent {latent_len}",
                    x.len()
                )));
            }
            let start = Self::start_index(&schedule, request.level)?;
            let state = schedule.start_at(start)?;
            if request.level == 0 {
                schedule.init_noise(&mut x);
            } else {
                let (digest, _) = request
                    .source
                    .as_ref()
                    .ok_or_else(|| RuntimeError::request("a level above 0 needs a source image"))?;
                let mut noised =
                    self.latents[digest].latent(settings.vae_latent, posterior.as_deref())?;
                schedule.add_noise(&state, &mut noised, &x)?;
                x = noised;
            }
            items.push(Item {
                state,
                x,
                condition: request.condition.clone(),
            });
        }

        let mut batch = self.batch(settings.batch_size);
        while let Some(group) = self.next_group(&schedule, &items, self.call_size(batch)) {
            // A call that runs out of memory changes no item: it is made again, smaller.
            let started = std::time::Instant::now();
            let w = settings.guidance_scale;
            match self.denoise(&schedule, &mut items, &group, w, stats) {
                Ok(()) => self.timed(group.len(), started.elapsed().as_secs_f64()),
                Err(e) if e.is_out_of_memory() && group.len() > 1 => {
                    batch = self.shrink(group.len(), &e);
                }
                Err(e) => return Err(e),
            }
        }
        let latents: Vec<Vec<f32>> = items.into_iter().map(|i| i.x).collect();
        self.decode(latents, batch)
    }

    /// The items for the next UNet call: those at the latest pending timestep, and, when the
    /// UNet takes a timestep per item, others after them, up to the batch size.
    fn next_group(&self, schedule: &Schedule, items: &[Item], batch: usize) -> Option<Vec<usize>> {
        let mut pending: Vec<(f32, usize)> = items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| schedule.timestep(&item.state).map(|t| (t, i)))
            .collect();
        let first = pending
            .iter()
            .map(|(t, _)| *t)
            .fold(f32::NEG_INFINITY, f32::max);
        if pending.is_empty() {
            return None;
        }
        if self.model.unet_io.timestep_shape != TimestepShape::PerItem {
            pending.retain(|(t, _)| t.to_bits() == first.to_bits());
        }
        pending.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        Some(
            pending
                .into_iter()
                .take(batch.max(1))
                .map(|(_, i)| i)
                .collect(),
        )
    }

    fn denoise(
        &mut self,
        schedule: &Schedule,
        items: &mut [Item],
        group: &[usize],
        w: f32,
        stats: &ServiceStats,
    ) -> Result<(), RuntimeError> {
        let model = &*self.model;
        let guided = w > 1.0;
        let n = group.len();
        let rows = if guided { 2 * n } else { n };
        let len = model.latent_shape.iter().product::<usize>();
        let mut sample = vec![0.0f32; rows * len];
        let mut times = Vec::with_capacity(rows);
        for (k, &i) in group.iter().enumerate() {
            let item = &items[i];
            let t = schedule.timestep(&item.state).expect("pending");
            let row = if guided { n + k } else { k };
            schedule.scale_model_input(
                &item.state,
                &item.x,
                &mut sample[row * len..(row + 1) * len],
            )?;
            if guided {
                let (uncond, cond) = sample.split_at_mut(n * len);
                uncond[k * len..(k + 1) * len].copy_from_slice(&cond[k * len..(k + 1) * len]);
            }
            times.push(t);
        }
        let row_times: Vec<f32> = if guided {
            times.iter().chain(times.iter()).copied().collect()
        } else {
            times.clone()
        };
        let [c, h, wd] = model.latent_shape;
        let io = model.unet_io.clone();
        let unet_file = model.unet_file.clone();
        let fail = |source: ort::Error| RuntimeError::Inference {
            file: unet_file.clone(),
            source,
        };
        let sample_tensor =
            TensorRef::from_array_view(([rows, c, h, wd], sample.as_slice())).map_err(fail)?;
        let (t_f32, t_i64): (Vec<f32>, Vec<i64>) = match io.timestep_shape {
            TimestepShape::PerItem => (
                row_times.clone(),
                row_times.iter().map(|t| t.round() as i64).collect(),
            ),
            _ => (vec![row_times[0]], vec![row_times[0].round() as i64]),
        };
        let t_shape: Vec<usize> = match io.timestep_shape {
            TimestepShape::Scalar => vec![],
            TimestepShape::One => vec![1],
            TimestepShape::PerItem => vec![rows],
        };
        let timestep = if io.timestep_is_int {
            TensorRef::from_array_view((t_shape.clone(), t_i64.as_slice()))
                .map_err(fail)?
                .into_dyn()
        } else {
            TensorRef::from_array_view((t_shape.clone(), t_f32.as_slice()))
                .map_err(fail)?
                .into_dyn()
        };
        // The condition rows: the unguided half first, as diffusers orders them.
        let mut labels: Vec<i64> = Vec::new();
        let mut hidden: Vec<f32> = Vec::new();
        let condition = match &model.conditioning {
            Conditioning::Class { null_class } => {
                if guided {
                    labels.extend(std::iter::repeat_n(*null_class, n));
                }
                for &i in group {
                    match items[i].condition {
                        Condition::Class(label) => labels.push(label),
                        Condition::Prompt(_) => {
                            return Err(RuntimeError::request(
                                "a class-conditional model was given a prompt",
                            ))
                        }
                    }
                }
                TensorRef::from_array_view(([rows], labels.as_slice()))
                    .map_err(fail)?
                    .into_dyn()
            }
            Conditioning::Text(text) => {
                if guided {
                    (0..n).for_each(|_| hidden.extend_from_slice(&self.prompts[""]));
                }
                for &i in group {
                    match &items[i].condition {
                        Condition::Prompt(p) => hidden.extend_from_slice(&self.prompts[p]),
                        Condition::Class(_) => {
                            return Err(RuntimeError::request(
                                "a text-conditioned model was given a class label",
                            ))
                        }
                    }
                }
                let seq = text.tokenizer.max_length;
                let width = hidden.len() / rows / seq;
                TensorRef::from_array_view(([rows, seq, width], hidden.as_slice()))
                    .map_err(fail)?
                    .into_dyn()
            }
        };
        if crate::store::failpoint::allocation_refused(n) {
            return Err(RuntimeError::simulated_out_of_memory(&unet_file, n));
        }
        stats.model_call();
        if let (None, Device::Cuda(id)) = (&self.binding, model.device) {
            self.binding = Some(UnetBinding::new(model.unet.session(), id).map_err(fail)?);
        }
        let eps = match &mut self.binding {
            Some(binding) => {
                let key = (
                    guided,
                    group.iter().map(|&i| items[i].condition.clone()).collect(),
                );
                let unet = super::device_io::unet_alone(&mut self.model)?;
                binding
                    .run(
                        unet,
                        &io,
                        [sample_tensor.into_dyn(), timestep],
                        key,
                        condition,
                    )
                    .map_err(fail)?
            }
            None => {
                let inputs = [
                    (io.sample.as_str(), &sample_tensor.into_dyn()),
                    (io.timestep.as_str(), &timestep),
                    (io.condition.as_str(), &condition),
                ];
                let out = model.unet.run(&inputs, &io.output).map_err(fail)?;
                let (_, eps) = out.try_extract_tensor::<f32>().map_err(fail)?;
                eps.to_vec()
            }
        };
        if eps.len() != rows * len {
            return Err(RuntimeError::Output {
                file: unet_file,
                message: format!(
                    "UNet returned {} values for {rows} items of {len}",
                    eps.len()
                ),
            });
        }
        let mut guided_eps = vec![0.0f32; len];
        for (k, &i) in group.iter().enumerate() {
            let out = if guided {
                let (u, c) = (
                    &eps[k * len..(k + 1) * len],
                    &eps[(n + k) * len..(n + k + 1) * len],
                );
                for j in 0..len {
                    guided_eps[j] = u[j] + w * (c[j] - u[j]);
                }
                &guided_eps[..]
            } else {
                &eps[k * len..(k + 1) * len]
            };
            let item = &mut items[i];
            schedule.step(&mut item.state, out, &mut item.x)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::scheduler::SchedulerConfig;

    fn schedule(steps: usize) -> Schedule {
        let config = SchedulerConfig::from_json_str(r#"{"_class_name": "DDIMScheduler"}"#).unwrap();
        Scheduler::from_config(&config)
            .unwrap()
            .schedule(steps)
            .unwrap()
    }

    #[test]
    fn levels_start_where_the_scheduler_rule_says() {
        let s50 = schedule(50);
        for (level, start) in [(0, 0), (100, 5), (500, 25)] {
            assert_eq!(
                Generator::start_index(&s50, level).unwrap(),
                start,
                "λ = {level}‰"
            );
            assert_eq!(s50.start_index_per_mille(1000 - level).unwrap(), start);
        }
        let err = Generator::start_index(&s50, 999).unwrap_err();
        assert!(
            matches!(
                err,
                RuntimeError::NoSteps {
                    level: 999,
                    steps: 50
                }
            ),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .starts_with("λ = 0.999 leaves no denoising step out of 50"),
            "{err}"
        );
        assert_eq!(Generator::start_index(&schedule(25), 500).unwrap(), 13);
        for level in [1000, 1001, u16::MAX] {
            let err = Generator::start_index(&s50, level).unwrap_err().to_string();
            assert!(err.contains("is outside [0, 1)"), "{err}");
        }
    }
}
