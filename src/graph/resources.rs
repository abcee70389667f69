//! Phase 4 of compiling a graph: once its structure is valid, each op opens the files and
//! models it names and checks they fit (model sessions are shared by the nodes that name the
//! same model), and the output folder may not lie in an image folder a source reads. `validate`
//! stops here; a run keeps what was opened and starts it.

use super::compile::Compiled;
use super::ops::context::RunInfo;
use super::ops::{ModelPool, Node, OpError, Opened};
use super::output_folder::is_within;
use super::spec::GraphError;
use indexmap::IndexMap;
use std::sync::Arc;

/// What a valid graph opened (phase 4), ready to start.
pub struct Resources {
    opened: IndexMap<String, Box<dyn Opened>>,
    pool: ModelPool,
}

/// The graph's models, not yet opened, with the nodes using each.
fn model_pool(compiled: &Compiled) -> ModelPool {
    let mut users: IndexMap<String, Vec<String>> = IndexMap::new();
    for node in compiled.nodes.values() {
        if let Some(model) = node.op.model() {
            users
                .entry(model.to_string())
                .or_default()
                .push(format!("node `{}`", node.name()));
        }
    }
    let specs = compiled
        .models
        .iter()
        .map(|(name, (spec, _))| (name.clone(), spec.clone()))
        .collect();
    ModelPool::new(specs, users, compiled.pipeline.output.clone())
}

/// What a run of the graph will use, one line each: every model's device and sessions, and
/// each node's own choices (batch sizes), defaults resolved.
pub fn configuration(compiled: &Compiled) -> Vec<String> {
    let pool = model_pool(compiled);
    let mut lines = pool.configuration();
    lines.extend(compiled.nodes.values().filter_map(|node| {
        let chosen = node.op.configuration(&pool)?;
        Some(format!("node {}: {chosen}", node.name()))
    }));
    lines
}

/// Phase 4: every node opens what it needs; every error is reported.
pub fn check_resources(compiled: &Compiled) -> Result<Resources, Vec<GraphError>> {
    let mut pool = model_pool(compiled);
    let mut opened = IndexMap::new();
    let mut errors = Vec::new();
    for node in compiled.nodes.values() {
        match node.op.open(&node.info, &mut pool) {
            Ok(ready) => {
                opened.insert(node.name().to_string(), ready);
            }
            Err(found) => errors.extend(found.into_iter().map(|e| compiled.op_error(node, e))),
        }
        let output = &compiled.pipeline.output;
        if let Some(folder) = node.op.sample_folder().filter(|f| is_within(output, f)) {
            let message = format!(
                "the pipeline's output `{}` is this image folder or inside it ({}): the next \
                 run would read what this one writes as samples",
                output.display(),
                folder.display()
            );
            errors.push(compiled.op_error(node, OpError::field("path", message)));
        }
    }
    if errors.is_empty() {
        Ok(Resources { opened, pool })
    } else {
        Err(errors)
    }
}

impl Resources {
    /// Starts every node for a run (inference services, the image store), in graph order.
    pub fn start(self, run: RunInfo) -> Result<IndexMap<String, Arc<dyn Node>>, String> {
        let mut context = self.pool.into_start(run);
        let mut nodes = IndexMap::new();
        for (name, opened) in self.opened {
            let node = opened
                .start(&mut context)
                .map_err(|e| format!("node `{name}`: {e}"))?;
            nodes.insert(name, node);
        }
        Ok(nodes)
    }
}
