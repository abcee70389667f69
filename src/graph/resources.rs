//! Phase 4 of compiling a graph: once its structure is valid, the files it names exist and
//! every model opens and fits its op. This phase loads the models; the run keeps them.

use super::compile::{Compiled, CompiledNode};
use super::config::{GenerateConfig, OpConfig};
use super::spec::{GraphError, ModelSpec};
use crate::operators::generate::ClassNames;
use crate::runtime::diffusion::model::Conditioning;
use crate::runtime::diffusion::{DiffusionModel, GenerationSettings};
use crate::runtime::onnx::SessionOptions;
use crate::runtime::scheduler::Scheduler;
use crate::runtime::{Classifier, ModelMeta};
use indexmap::IndexMap;

/// Models and files a valid graph needs, opened and checked (phase 4).
pub struct Resources {
    /// Sessions per classifier model, one per service thread.
    pub classifiers: IndexMap<String, Vec<Classifier>>,
    /// Per `generate` node: its sessions and resolved settings.
    pub generators: IndexMap<String, GeneratorResources>,
}

/// What a `generate` node runs with.
pub struct GeneratorResources {
    pub models: Vec<DiffusionModel>,
    pub settings: GenerationSettings,
    pub levels: Vec<crate::record::Level>,
    pub classes: ClassNames,
    pub class_conditional: bool,
}

/// Phase 4: files exist; every model opens and fits its op. Loads the models.
pub fn check_resources(compiled: &Compiled) -> Result<Resources, Vec<GraphError>> {
    let file = &compiled.file;
    let mut errors = Vec::new();
    let node_err = |node: &CompiledNode, message: String| GraphError {
        file: file.clone(),
        line: node.line,
        node: Some(format!("node `{}`", node.name)),
        message,
    };
    let model_err = |model: &str, message: String| GraphError {
        file: file.clone(),
        line: compiled.models[model].1,
        node: Some(format!("models.{model}")),
        message,
    };
    for node in compiled.nodes.values() {
        match &node.op {
            OpConfig::Source(source) => {
                use super::config::SourceFormat;
                let path = &source.path;
                let (ok, what) = match source.format {
                    SourceFormat::ImageFolder => (path.is_dir(), "image folder"),
                    SourceFormat::Manifest => (path.is_file(), "manifest file"),
                };
                if !ok {
                    errors.push(node_err(
                        node,
                        format!("{}: no such {what}", path.display()),
                    ));
                }
            }
            OpConfig::Feedback(feedback) if feedback.path.exists() && !feedback.path.is_dir() => {
                errors.push(node_err(
                    node,
                    format!("{}: not a folder", feedback.path.display()),
                ));
            }
            _ => {}
        }
    }
    let mut classifiers = IndexMap::new();
    for (model, users) in models_by_use(compiled, |op| matches!(op, OpConfig::Classify(_))) {
        let (spec, _) = &compiled.models[&model];
        let mut sessions = Vec::new();
        for _ in 0..spec.sessions.max(1) {
            match Classifier::open(&spec.path, &session_options(spec)) {
                Ok(classifier) => sessions.push(classifier),
                Err(message) => {
                    errors.push(model_err(
                        &model,
                        format!("{message} (used by {})", users.join(", ")),
                    ));
                    break;
                }
            }
        }
        classifiers.insert(model, sessions);
    }
    let mut generators = IndexMap::new();
    for node in compiled.nodes.values() {
        let OpConfig::Generate(config) = &node.op else {
            continue;
        };
        match open_generator(compiled, config) {
            Ok(resources) => {
                generators.insert(node.name.clone(), resources);
            }
            Err((Some(model), message)) => errors.push(model_err(
                &model,
                format!("{message} (used by node `{}`)", node.name),
            )),
            Err((None, message)) => errors.push(node_err(node, message)),
        }
    }
    if errors.is_empty() {
        Ok(Resources {
            classifiers,
            generators,
        })
    } else {
        Err(errors)
    }
}

fn session_options(spec: &ModelSpec) -> SessionOptions {
    SessionOptions {
        device: spec.device.parse().expect("checked in phase 1"),
        fallback_to_cpu: spec.fallback.is_some(),
        intra_threads: spec.threads,
    }
}

/// Opens a generate node's model and resolves its settings; an error names the model when
/// it is the model's fault.
fn open_generator(
    compiled: &Compiled,
    config: &GenerateConfig,
) -> Result<GeneratorResources, (Option<String>, String)> {
    let (spec, _) = &compiled.models[&config.model];
    let in_model = |message: String| (Some(config.model.clone()), message);
    let mut models = Vec::new();
    for _ in 0..spec.sessions.max(1) {
        models.push(DiffusionModel::open(&spec.path, &session_options(spec)).map_err(in_model)?);
    }
    let model = &models[0];
    let scheduler_file = spec.path.join("scheduler/scheduler_config.json");
    let kind = match config.scheduler_kind().expect("checked in phase 1") {
        Some(kind) => kind,
        None => model
            .scheduler_config
            .class_kind()
            .map_err(|e| in_model(format!("{}: {e}", scheduler_file.display())))?,
    };
    Scheduler::new(&model.scheduler_config, kind)
        .and_then(|s| s.schedule(config.steps))
        .map_err(|e| {
            (
                None,
                format!("scheduler {kind} from {}: {e}", scheduler_file.display()),
            )
        })?;
    let classes = match (&config.classes_from, &config.classes) {
        (Some(from), _) => {
            let (meta, _) = ModelMeta::load(&compiled.models[from].0.path)
                .map_err(|e| (None, format!("classes_from: {e}")))?;
            let display = meta
                .display_names
                .clone()
                .unwrap_or_else(|| meta.classes.clone());
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
        (None, None) => model.class_names.clone().map_or(
            ClassNames {
                names: Vec::new(),
                display: Vec::new(),
            },
            |(names, display)| ClassNames { names, display },
        ),
    };
    let class_conditional = matches!(model.conditioning, Conditioning::Class { .. });
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
            return Err((None, message));
        }
    }
    let settings = GenerationSettings {
        steps: config.steps,
        guidance_scale: config.guidance_scale,
        scheduler: kind,
        batch_size: config.batch_size,
    };
    Ok(GeneratorResources {
        models,
        settings,
        levels: config.levels().expect("checked in phase 1"),
        classes,
        class_conditional,
    })
}

/// Models in use, each with the nodes that use it.
fn models_by_use(
    compiled: &Compiled,
    by: impl Fn(&OpConfig) -> bool,
) -> IndexMap<String, Vec<String>> {
    let mut used: IndexMap<String, Vec<String>> = IndexMap::new();
    for node in compiled.nodes.values().filter(|n| by(&n.op)) {
        if let Some(model) = node.op.model() {
            used.entry(model.to_string())
                .or_default()
                .push(format!("node `{}`", node.name));
        }
    }
    used
}
