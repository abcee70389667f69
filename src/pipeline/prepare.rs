//! Turning checked resources into what every worker shares: inference services for the
//! classifiers and generators, per-node counters and sink logs.

use crate::graph::build::{Shared, ERRORS_SINK};
use crate::graph::config::OpConfig;
use crate::graph::{Compiled, Resources};
use crate::operators::generate::Prompts;
use crate::operators::sink::SinkLog;
use crate::operators::{GenerateParams, GenerateWorker, NodeStats};
use crate::runtime::diffusion::img2img::Generator;
use crate::runtime::InferenceService;
use crate::store::images::ImageStore;
use indexmap::IndexMap;
use std::sync::{Arc, Mutex};

/// Starts the services a compiled graph needs and gathers what its workers share; `process`
/// is this process's index in a timely cluster (0 alone).
pub fn prepare(
    compiled: &Compiled,
    resources: Resources,
    first_version: u64,
    process: usize,
) -> Result<Shared, String> {
    let output = compiled.pipeline.output.clone();
    let mut services = IndexMap::new();
    let mut classes = IndexMap::new();
    let mut digests = IndexMap::new();
    for (model, sessions) in resources.classifiers {
        classes.insert(model.clone(), Arc::new(sessions[0].meta().classes.clone()));
        digests.insert(model.clone(), sessions[0].digest());
        services.insert(
            model.clone(),
            Arc::new(InferenceService::start(&model, sessions)),
        );
    }
    let mut stats: IndexMap<String, Arc<NodeStats>> = compiled
        .nodes
        .keys()
        .map(|n| (n.clone(), Arc::new(NodeStats::default())))
        .collect();
    stats.insert(ERRORS_SINK.into(), Arc::new(NodeStats::default()));
    let mut generators = IndexMap::new();
    if !resources.generators.is_empty() {
        let store = Arc::new(ImageStore::open(&output, process)?);
        for (node, generator) in resources.generators {
            let model_digest = generator.models[0].digest;
            // Jobs large enough to batch across levels, small enough to keep every session busy.
            let job_size = (generator.settings.batch_size * 8 / generator.models.len())
                .max(generator.settings.batch_size);
            let workers = generator
                .models
                .into_iter()
                .map(|model| GenerateWorker {
                    generator: Generator::new(model),
                    settings: generator.settings.clone(),
                    store: Arc::clone(&store),
                })
                .collect();
            let OpConfig::Generate(config) = &compiled.nodes[&node].op else {
                unreachable!("a generate node")
            };
            let prompts = match (&config.prompt, &config.prompts) {
                (_, Some(lists)) => Prompts::PerClass(lists.clone()),
                (Some(template), None) => Prompts::Template(template.clone()),
                (None, None) => Prompts::Template("a photo of a {class}".into()),
            };
            let params = GenerateParams {
                node: node.clone(),
                service: Arc::new(InferenceService::start(&node, workers)),
                job_size,
                settings: generator.settings,
                levels: generator.levels,
                seeds: config.seeds,
                prompts,
                classes: generator.classes,
                class_conditional: generator.class_conditional,
                pipeline_seed: compiled.pipeline.seed,
                model_digest,
                stats: Arc::clone(&stats[&node]),
            };
            generators.insert(node, params);
        }
    }
    let mut sink_logs: IndexMap<String, Arc<Mutex<SinkLog>>> = compiled
        .nodes
        .values()
        .filter(|n| matches!(n.op, OpConfig::Sink(_)))
        .map(|n| (n.name.clone(), Arc::default()))
        .collect();
    sink_logs.insert(ERRORS_SINK.into(), Arc::default());
    Ok(Shared {
        compiled: compiled.clone(),
        generators,
        services,
        classes,
        digests,
        stats,
        sink_logs,
        first_version,
    })
}
