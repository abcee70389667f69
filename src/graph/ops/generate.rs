//! `op = "generate"`: synthetic variants of every sample over the guidance spectrum (levels λ ×
//! seeds), made by a diffusion model folder on the node's own inference service and kept in
//! the content-addressed image store.

mod batch;

use super::context::Regenerator;
use super::{Dataflow, GraphContext, ModelPool, Node, NodeInfo, Op, OpError, Opened, StartContext, Stream};
use crate::operators::generate::{ClassNames, Prompts, DEFAULT_PROMPT};
use crate::operators::{GenerateExt, GenerateParams, GenerateWorker};
use crate::record::{Level, RecordKind};
use crate::runtime::diffusion::batch_tuner::SharedTuner;
use crate::runtime::diffusion::img2img::Generator;
use crate::runtime::diffusion::model::Conditioning;
use crate::runtime::device::Device;
use crate::runtime::rewrite::{Attention, Quantize, UnetForm};
use crate::runtime::diffusion::{DiffusionModel, GenerationSettings, VaeLatent};
use crate::runtime::scheduler::{Scheduler, SchedulerKind};
use crate::runtime::{InferenceService, ModelMeta};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;

/// `op = "generate"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerateConfig {
    /// A diffusion model folder under `[models]`.
    pub model: String,
    /// Guidance levels λ in [0, 1), on the per-mille grid (0 = text only, towards 1 = the real
    /// image); kept as per-mille integers.
    pub levels: Levels,
    /// Images per (sample, level).
    #[serde(default = "one_seed")]
    pub seeds: u32,
    /// Inference steps T; a level λ runs the last ⌊T·(1−λ)⌋ of them.
    #[serde(default = "default_steps")]
    pub steps: usize,
    /// Classifier-free guidance scale w (1 = no guidance).
    #[serde(default = "default_guidance")]
    pub guidance_scale: f32,
    /// `pndm`, `ddim`, `euler` or `dpm++`, configured from the model's own scheduler config;
    /// the model's own scheduler when absent.
    #[serde(default, deserialize_with = "super::some_from_str")]
    pub scheduler: Option<SchedulerKind>,
    /// Images per UNet call (each call carries the guided and unguided halves); by default 8 on
    /// a GPU, and on the CPU chosen by measuring 1, 2, 4 and 8 (within the memory budget).
    #[serde(default)]
    pub batch_size: Option<usize>,
    /// `sample` (default: the VAE posterior's mean + std · noise, with the image's keyed
    /// posterior noise, as diffusers' img2img) or `mean`; only for models whose VAE encoder
    /// gives the posterior (`latent_parameters`), and part of their images' content keys.
    #[serde(default, deserialize_with = "super::some_from_str")]
    pub vae_latent: Option<VaeLatent>,
    /// Prompt template; `{class}` becomes the class's display name.
    #[serde(default)]
    pub prompt: Option<String>,
    /// Descriptions per class name, one chosen per image by keyed hash.
    #[serde(default)]
    pub prompts: Option<BTreeMap<String, Vec<String>>>,
    /// A `[models]` entry whose `discl.toml` names the classes (and display names), in
    /// class-label order; class-conditional generators need this, `classes` or their own.
    #[serde(default)]
    pub classes_from: Option<String>,
    /// Class names in class-label order.
    #[serde(default)]
    pub classes: Option<Vec<String>>,
    /// `"int8"`: the UNet's weight matrices in int8 (dynamic quantisation for the CPU, made once
    /// per model under the output folder, see `runtime::rewrite`); faster, slightly different
    /// images, part of their content keys. `"none"` (the default) runs the model as exported.
    #[serde(default, deserialize_with = "super::some_from_str")]
    pub quantize: Option<Quantize>,
    /// `"fused"`: each attention block of the UNet as one ONNX Runtime `MultiHeadAttention`
    /// (made once per model under the output folder); images within float rounding of the
    /// exported graph's, part of their content keys. `"as-exported"` is the default.
    #[serde(default, deserialize_with = "super::some_from_str")]
    pub attention: Option<Attention>,
}

fn one_seed() -> u32 {
    1
}
fn default_steps() -> usize {
    50
}
fn default_guidance() -> f32 {
    3.0
}

/// Guidance levels in per mille, ascending and distinct.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(try_from = "Vec<f64>")]
pub struct Levels(pub Vec<Level>);

impl TryFrom<Vec<f64>> for Levels {
    type Error = String;
    fn try_from(levels: Vec<f64>) -> Result<Self, String> {
        if levels.is_empty() {
            return Err("`levels` is empty".into());
        }
        let mut out = Vec::new();
        for level in levels {
            if !(0.0..1.0).contains(&level) {
                return Err(format!("level λ = {level} is outside [0, 1)"));
            }
            let per_mille = (level * 1000.0).round();
            if (per_mille / 1000.0 - level).abs() > 1e-9 {
                return Err(format!("level λ = {level} is not a multiple of 0.001"));
            }
            out.push(per_mille as Level);
        }
        out.sort_unstable();
        out.dedup();
        Ok(Levels(out))
    }
}

impl Op for GenerateConfig {
    fn kind(&self) -> &'static str {
        "generate"
    }
    fn arity(&self) -> (usize, usize) {
        (1, 1)
    }
    fn check(&self, graph: &GraphContext) -> Vec<OpError> {
        let mut errors = Vec::new();
        let mut at_least_one = |field: &'static str, value: usize| {
            if value == 0 {
                errors.push(OpError::field(field, format!("{field} must be at least 1")));
            }
        };
        at_least_one("seeds", self.seeds as usize);
        at_least_one("batch_size", self.batch_size.unwrap_or(1));
        at_least_one("steps", self.steps);
        for &level in &self.levels.0 {
            let kept = (self.steps as u128) * u128::from(1000u16.saturating_sub(level)) / 1000;
            if self.steps > 0 && kept == 0 {
                let message = format!(
                    "level λ = {} leaves no denoising step out of {} steps",
                    level as f64 / 1000.0,
                    self.steps
                );
                errors.push(OpError::field("levels", message));
            }
        }
        if self.prompt.is_some() && self.prompts.is_some() {
            errors.push(OpError::field(
                "prompts",
                "give `prompt` (a template) or `prompts` (lists per class), not both",
            ));
        }
        if let Some(from) = &self.classes_from {
            if !graph.models.contains(&from.as_str()) {
                let message = format!("classes_from names unknown model `{from}`");
                errors.push(OpError::field("classes_from", message));
            }
        }
        errors
    }
    fn output(&self, inputs: &[RecordKind]) -> Result<Option<RecordKind>, OpError> {
        match inputs {
            [RecordKind::Sample] => Ok(Some(RecordKind::Synthetic)),
            _ => Err(super::wrong_inputs("one input of Sample", inputs)),
        }
    }
    fn model(&self) -> Option<&str> {
        Some(&self.model)
    }
    fn unet_form(&self) -> Option<UnetForm> {
        let (attention, quantize) = (self.attention.unwrap_or_default(), self.quantize.unwrap_or_default());
        Some(UnetForm { attention, quantize })
    }
    fn dot_detail(&self) -> String {
        let levels: Vec<f64> = self.levels.0.iter().map(|l| *l as f64 / 1000.0).collect();
        format!("model {}, λ {levels:?} × {} seed(s)", self.model, self.seeds)
    }
    fn configuration(&self, pool: &ModelPool) -> Option<String> {
        let batch = self.batch_description(pool);
        let form = Op::unet_form(self).unwrap_or_default();
        let mut unet = String::new();
        if form.attention == Attention::Fused {
            unet.push_str(", UNet attention fused");
        }
        if form.quantize == Quantize::Int8 {
            unet.push_str(", UNet weights int8");
        }
        Some(format!("{batch}{unet}"))
    }
    fn open(&self, node: &NodeInfo, pool: &mut ModelPool) -> Result<Box<dyn Opened>, Vec<OpError>> {
        self.open_models(&node.name, pool).map(|opened| Box::new(opened) as Box<dyn Opened>)
    }
}

impl GenerateConfig {
    /// Opens the node's sessions and resolves scheduler and classes; an error names the model
    /// when it is the model's fault.
    fn open_models(&self, node: &str, pool: &ModelPool) -> Result<OpenedGenerate, Vec<OpError>> {
        let spec = pool.spec(&self.model);
        let in_model = |m: String| vec![OpError::model(&self.model, format!("{m} {}", pool.used_by(&self.model)))];
        let options = pool.session_options(&self.model);
        let unet_file = self.unet_file(pool)?;
        // On the CPU the model is opened once and its runners share it (one copy of the
        // weights); on CUDA each runner opens its own (IO binding is per session).
        let runners = pool.sessions(&self.model);
        let shared = crate::runtime::onnx::resolved_device(&options) == Device::Cpu;
        let mut models = Vec::new();
        for _ in 0..if shared { 1 } else { runners } {
            let model = DiffusionModel::open_with_unet(&spec.path, &options, unet_file.clone());
            models.push(Arc::new(model.map_err(|e| in_model(e.to_string()))?));
        }
        if shared {
            models = std::iter::repeat_n(Arc::clone(&models[0]), runners).collect();
        }
        let model = &*models[0];
        let scheduler_file = spec.path.join("scheduler/scheduler_config.json");
        let kind = match self.scheduler {
            Some(kind) => kind,
            None => model
                .scheduler_config
                .class_kind()
                .map_err(|e| in_model(format!("{}: {e}", scheduler_file.display())))?,
        };
        Scheduler::new(&model.scheduler_config, kind)
            .and_then(|s| s.schedule(self.steps))
            .map_err(|e| {
                let message = format!("scheduler {kind} from {}: {e}", scheduler_file.display());
                vec![OpError::field("scheduler", message)]
            })?;
        let classes = self.class_names(pool, model)?;
        if let Conditioning::Class { null_class } = model.conditioning {
            if classes.names.len() as i64 != null_class {
                let message = if classes.names.is_empty() {
                    format!("the generator is class-conditional ({null_class} classes): name them with `classes_from`, `classes` or a `discl.toml` in the model folder")
                } else {
                    format!(
                        "{} classes named, but the generator has {null_class} (plus the null class)",
                        classes.names.len()
                    )
                };
                return Err(vec![OpError::node(message)]);
            }
        }
        if let (Some(mode), false) = (self.vae_latent, model.has_posterior()) {
            let why = match &model.vae {
                None => "the model has no VAE (a pixel-space UNet)",
                Some(_) => "the model's VAE encoder gives a latent (`latent_sample`), not the posterior's mean and log-variance",
            };
            let message = format!("vae_latent = \"{mode}\" cannot apply: {why}; leave it out");
            return Err(vec![OpError::field("vae_latent", message)]);
        }
        let class_conditional = matches!(model.conditioning, Conditioning::Class { .. });
        let settings = GenerationSettings {
            steps: self.steps,
            guidance_scale: self.guidance_scale,
            scheduler: kind,
            batch_size: self.batch_size_on(pool, model.device),
            vae_latent: self.vae_latent.unwrap_or_default(),
        };
        Ok(OpenedGenerate {
            node: node.to_string(),
            config: self.clone(),
            vae_posterior: model.has_posterior(),
            models,
            settings,
            classes,
            class_conditional,
        })
    }

    /// The UNet file to open instead of the folder's own: its rewritten form when the node
    /// asks for one (made now unless an earlier run made it).
    fn unet_file(&self, pool: &ModelPool) -> Result<Option<std::path::PathBuf>, Vec<OpError>> {
        let form = Op::unet_form(self).unwrap_or_default();
        if form.variant().is_none() {
            return Ok(None);
        }
        let device = crate::runtime::onnx::resolved_device(&pool.session_options(&self.model));
        if device != Device::Cpu && form.quantize == Quantize::Int8 {
            let message = format!("quantize = \"int8\" is for the CPU; the model runs on {device} (leave it out there)");
            return Err(vec![OpError::field("quantize", message)]);
        }
        let folder = &pool.spec(&self.model).path;
        let in_model = |m: String| vec![OpError::model(&self.model, format!("{m} {}", pool.used_by(&self.model)))];
        let digest = crate::runtime::diffusion::digest::folder_digest(folder).map_err(|e| in_model(e.to_string()))?;
        crate::runtime::rewrite::rewritten_unet(folder, &digest, pool.output(), form).map_err(|e| in_model(e.to_string()))
    }

    fn class_names(&self, pool: &ModelPool, model: &DiffusionModel) -> Result<ClassNames, Vec<OpError>> {
        Ok(match (&self.classes_from, &self.classes) {
            (Some(from), _) => {
                let (meta, _) = ModelMeta::load(&pool.spec(from).path)
                    .map_err(|e| vec![OpError::field("classes_from", format!("classes_from: {e}"))])?;
                let display = meta.display_names.clone().unwrap_or_else(|| meta.classes.clone());
                ClassNames {
                    names: meta.classes,
                    display,
                }
            }
            (None, Some(names)) => ClassNames {
                names: names.clone(),
                display: names.clone(),
            },
            // A generator may name its own classes in a `discl.toml` beside its configs.
            (None, None) => match model.class_names.clone() {
                Some((names, display)) => ClassNames { names, display },
                None => ClassNames {
                    names: Vec::new(),
                    display: Vec::new(),
                },
            },
        })
    }

    fn prompts(&self) -> Prompts {
        match (&self.prompt, &self.prompts) {
            (_, Some(lists)) => Prompts::PerClass(lists.clone()),
            (Some(template), None) => Prompts::Template(template.clone()),
            (None, None) => Prompts::Template(DEFAULT_PROMPT.into()),
        }
    }
}

struct OpenedGenerate {
    node: String,
    config: GenerateConfig,
    models: Vec<Arc<DiffusionModel>>,
    settings: GenerationSettings,
    classes: ClassNames,
    class_conditional: bool,
    vae_posterior: bool,
}

impl Opened for OpenedGenerate {
    fn start(self: Box<Self>, run: &mut StartContext) -> Result<Arc<dyn Node>, String> {
        let store = run.image_store()?;
        let model_digest = self.models[0].digest;
        let unet_variant = Op::unet_form(&self.config).and_then(|f| f.variant());
        let sessions = self.models.len();
        let batch = self.settings.batch_size;
        let measured = self.config.measures_batch(self.models[0].device, batch);
        let job_size = batch::job_size(batch, sessions, measured);
        let tuner = measured.then(|| SharedTuner::new(&self.node, batch));
        let workers = self
            .models
            .into_iter()
            .map(|model| {
                let mut generator = Generator::new(model);
                if let Some(tuner) = &tuner {
                    generator.measure_batch(tuner.clone());
                }
                GenerateWorker {
                    generator,
                    settings: self.settings.clone(),
                    store: Arc::clone(&store),
                }
            })
            .collect();
        let service = Arc::new(InferenceService::start(&self.config.model, workers));
        Ok(Arc::new(GenerateNode {
            service,
            job_size,
            settings: self.settings,
            prompts: self.config.prompts(),
            config: self.config,
            classes: self.classes,
            class_conditional: self.class_conditional,
            vae_posterior: self.vae_posterior,
            model_digest,
            pipeline_seed: run.run.seed,
            unet_variant,
        }))
    }
}

struct GenerateNode {
    config: GenerateConfig,
    service: Arc<InferenceService<GenerateWorker>>,
    job_size: usize,
    settings: GenerationSettings,
    prompts: Prompts,
    classes: ClassNames,
    class_conditional: bool,
    vae_posterior: bool,
    model_digest: crate::record::Digest,
    pipeline_seed: u64,
    unet_variant: Option<String>,
}

impl Node for GenerateNode {
    fn build<'scope>(
        &self,
        dataflow: &mut Dataflow<'scope>,
        node: &NodeInfo,
        inputs: &[Stream<'scope>],
    ) -> Stream<'scope> {
        let params = GenerateParams {
            node: node.name.clone(),
            service: Arc::clone(&self.service),
            job_size: self.job_size,
            settings: self.settings.clone(),
            levels: self.config.levels.0.clone(),
            seeds: self.config.seeds,
            prompts: self.prompts.clone(),
            classes: self.classes.clone(),
            class_conditional: self.class_conditional,
            pipeline_seed: self.pipeline_seed,
            model_digest: self.model_digest,
            vae_posterior: self.vae_posterior,
            unet_variant: self.unet_variant.clone(),
            stats: dataflow.stats_of(&node.name),
        };
        let samples = inputs[0].samples();
        let regenerator = Regenerator {
            samples: samples.clone(),
            params: params.clone(),
        };
        dataflow.generators.insert(node.name.clone(), regenerator);
        let (good, failed) = samples.generate(params);
        dataflow.errors.push(failed);
        Stream::Synthetics(good)
    }
    fn model_seconds(&self) -> f64 {
        self.service.stats().snapshot().3
    }
}
