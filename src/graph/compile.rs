//! Compiling a graph file in phases, each reporting every error it finds, each error naming
//! node, line and (where known) field: (1) ops and their fields, read through the op registry
//! and checked by each op, (2) shape — inputs that exist, arity, no cycles, (3) record types
//! along every edge; only once all that holds, phase (4) in `resources` opens files and models.

use super::fields::read_every_field;
use super::ops::{self, GraphContext, NodeInfo, Op, OpError, Place};
use super::order::topological_order;
use super::spec::{GraphError, GraphFile, ModelSpec, NodeSpec, PipelineSpec};
use super::toml_spans::ReadError;
use crate::record::RecordKind;
use indexmap::IndexMap;
use std::collections::HashMap;
use std::sync::Arc;

/// A node that passed the structural phases.
#[derive(Clone, Debug)]
pub struct CompiledNode {
    pub info: NodeInfo,
    pub op: Arc<dyn Op>,
    /// Line of each field the node writes (for errors of later phases).
    pub field_lines: IndexMap<String, usize>,
}

impl CompiledNode {
    /// The node's name.
    pub fn name(&self) -> &str {
        &self.info.name
    }
}

/// A graph whose structure is valid; nodes are in dependency order.
#[derive(Clone, Debug)]
pub struct Compiled {
    pub file: String,
    /// BLAKE3 of the graph file's text.
    pub digest: crate::record::Digest,
    pub pipeline: PipelineSpec,
    pub models: IndexMap<String, (ModelSpec, usize)>,
    pub nodes: IndexMap<String, CompiledNode>,
}

impl Compiled {
    /// A graph error about a node, placed by an op's error.
    pub fn op_error(&self, node: &CompiledNode, error: OpError) -> GraphError {
        place_error(
            &self.file,
            &self.models,
            &node.info,
            &node.field_lines,
            error,
        )
    }
}

fn place_error(
    file: &str,
    models: &IndexMap<String, (ModelSpec, usize)>,
    node: &NodeInfo,
    field_lines: &IndexMap<String, usize>,
    error: OpError,
) -> GraphError {
    let (label, line, field) = match &error.place {
        Place::Field(field) => (
            format!("node `{}`", node.name),
            field_lines.get(*field).copied().unwrap_or(node.line),
            Some(field.to_string()),
        ),
        Place::Node => (format!("node `{}`", node.name), node.line, None),
        Place::Model(model) => (
            format!("models.{model}"),
            models.get(model).map_or(node.line, |(_, line)| *line),
            None,
        ),
    };
    GraphError {
        file: file.to_string(),
        line,
        node: Some(label),
        field,
        message: error.message,
    }
}

/// Phases 1–3. No file other than the graph file is touched.
pub fn compile(graph: GraphFile) -> Result<Compiled, Vec<GraphError>> {
    let mut errors = Vec::new();
    let ops = read_ops(&graph, &mut errors);
    check_shape(&graph, &ops, &mut errors);
    let order = match topological_order(&graph.nodes) {
        Ok(order) => order,
        Err(cycles) => {
            for cycle in cycles {
                let first = &graph.nodes[&cycle[0]];
                let message = format!("cycle: {}", cycle.join(" → "));
                errors.push(node_error(
                    &graph.file,
                    first,
                    first.line_of("inputs"),
                    message,
                ));
            }
            Vec::new()
        }
    };
    let kinds = check_types(&graph, &ops, &order, &mut errors);
    if !errors.is_empty() {
        errors.sort_by_key(|e| e.line);
        return Err(errors);
    }
    let Some(pipeline) = graph.pipeline.clone() else {
        return Err(vec![node_less(&graph.file, "missing [pipeline] section")]);
    };
    let nodes = order
        .iter()
        .map(|name| {
            let spec = &graph.nodes[name];
            let info = NodeInfo {
                name: name.clone(),
                line: spec.line,
                inputs: spec.inputs.clone(),
                input_kinds: spec
                    .inputs
                    .iter()
                    .filter_map(|i| kinds[i.as_str()])
                    .collect(),
            };
            let node = CompiledNode {
                info,
                op: Arc::clone(&ops[name]),
                field_lines: spec.field_lines.clone(),
            };
            (name.clone(), node)
        })
        .collect();
    Ok(Compiled {
        file: graph.file.clone(),
        digest: graph.digest,
        pipeline,
        models: graph.models.clone(),
        nodes,
    })
}

fn node_error(file: &str, node: &NodeSpec, line: usize, message: String) -> GraphError {
    GraphError {
        file: file.to_string(),
        line,
        node: Some(format!("node `{}`", node.name)),
        field: None,
        message,
    }
}

fn node_less(file: &str, message: &str) -> GraphError {
    GraphError {
        file: file.to_string(),
        line: 1,
        node: None,
        field: None,
        message: message.to_string(),
    }
}

/// Phase 1: each node's op read through the registry, then checked by the op itself.
fn read_ops(graph: &GraphFile, errors: &mut Vec<GraphError>) -> IndexMap<String, Arc<dyn Op>> {
    let mut ops = IndexMap::new();
    for (name, node) in &graph.nodes {
        let Some(op) = &node.op else { continue };
        let Some(parse) = ops::lookup(op) else {
            let message = format!("unknown op `{op}` (expected one of {})", ops::names());
            errors.push(node_error(&graph.file, node, node.line_of("op"), message));
            continue;
        };
        let read = |value| parse(value).map_err(ReadError::from);
        match read_every_field(&node.fields, &node.lines, node.line, read) {
            Ok(config) => {
                ops.insert(name.clone(), config);
            }
            Err(found) => {
                let label = format!("node `{name}`");
                let place = |e| GraphError::of_field(&graph.file, Some(&label), e);
                errors.extend(found.into_iter().map(place));
            }
        }
    }
    let models: Vec<&str> = graph.models.keys().map(String::as_str).collect();
    for (name, op) in &ops {
        let node = &graph.nodes[name];
        let info = NodeInfo {
            name: name.clone(),
            line: node.line,
            inputs: node.inputs.clone(),
            input_kinds: Vec::new(),
        };
        let context = GraphContext {
            node: name,
            models: models.clone(),
            input_ops: node
                .inputs
                .iter()
                .map(|input| ops.get(node_of(input)).map(|op| op.kind()))
                .collect(),
        };
        let mut found = op.check(&context);
        if let Some(model) = op.model() {
            if !graph.models.contains_key(model) {
                let message = format!("unknown model `{model}` (models: {models:?})");
                found.push(OpError::field("model", message));
            }
        }
        for error in found {
            errors.push(place_error(
                &graph.file,
                &graph.models,
                &info,
                &node.field_lines,
                error,
            ));
        }
    }
    ops
}

/// Phase 2: inputs name nodes, and each op gets as many as it takes.
fn check_shape(
    graph: &GraphFile,
    ops: &IndexMap<String, Arc<dyn Op>>,
    errors: &mut Vec<GraphError>,
) {
    for (name, node) in &graph.nodes {
        let line = node.line_of("inputs");
        for input in &node.inputs {
            if node_of(input) == name {
                errors.push(node_error(
                    &graph.file,
                    node,
                    line,
                    "a node cannot be its own input".into(),
                ));
            } else if !graph.nodes.contains_key(node_of(input)) {
                errors.push(node_error(
                    &graph.file,
                    node,
                    line,
                    format!("input `{input}` is not a node"),
                ));
            }
        }
        if let Some(op) = ops.get(name) {
            let (least, most) = op.arity();
            let n = node.inputs.len();
            if n < least || n > most {
                let expected = if least == most {
                    format!("{least}")
                } else if most == usize::MAX {
                    format!("at least {least}")
                } else {
                    format!("{least} to {most}")
                };
                let message = format!("takes {expected} inputs, has {n}");
                errors.push(node_error(&graph.file, node, line, message));
            }
        }
    }
}

/// Phase 3: record kinds along every edge, in dependency order so each node's input kinds are
/// known. Gives each node's output kind.
fn check_types<'a>(
    graph: &'a GraphFile,
    ops: &IndexMap<String, Arc<dyn Op>>,
    order: &'a [String],
    errors: &mut Vec<GraphError>,
) -> HashMap<&'a str, Option<RecordKind>> {
    let mut kinds: HashMap<&str, Option<RecordKind>> = HashMap::new();
    let mut input_kinds: HashMap<&str, Vec<RecordKind>> = HashMap::new();
    for name in order {
        let Some(op) = ops.get(name) else { continue };
        let node = &graph.nodes[name];
        let mut inputs = Vec::new();
        let mut known = true;
        for input in &node.inputs {
            if let Some((from, port)) = input.split_once('.') {
                match (ops.get(from), input_kinds.get(from)) {
                    (Some(op), Some(given)) => match op.port(port, given) {
                        Some(kind) => inputs.push(kind),
                        None => {
                            let message = format!("node `{from}` has no output `{port}`");
                            errors.push(node_error(
                                &graph.file,
                                node,
                                node.line_of("inputs"),
                                message,
                            ));
                            known = false;
                        }
                    },
                    _ => known = false,
                }
                continue;
            }
            match kinds.get(input.as_str()) {
                Some(Some(kind)) => inputs.push(*kind),
                Some(None) => {
                    let message = format!("input `{input}` is a sink and produces nothing");
                    errors.push(node_error(
                        &graph.file,
                        node,
                        node.line_of("inputs"),
                        message,
                    ));
                    known = false;
                }
                None => known = false,
            }
        }
        if !known {
            continue;
        }
        input_kinds.insert(name, inputs.clone());
        match op.output(&inputs) {
            Ok(kind) => {
                kinds.insert(name, kind);
            }
            Err(error) => {
                let info = NodeInfo {
                    name: name.clone(),
                    line: node.line,
                    inputs: node.inputs.clone(),
                    input_kinds: inputs.clone(),
                };
                errors.push(place_error(
                    &graph.file,
                    &graph.models,
                    &info,
                    &node.field_lines,
                    error,
                ));
            }
        }
    }
    kinds
        .into_iter()
        .chain(port_kinds(graph, ops, &input_kinds))
        .collect()
}

/// The kinds of every `node.port` some node reads.
fn port_kinds<'a>(
    graph: &'a GraphFile,
    ops: &IndexMap<String, Arc<dyn Op>>,
    input_kinds: &HashMap<&str, Vec<RecordKind>>,
) -> Vec<(&'a str, Option<RecordKind>)> {
    let mut out = Vec::new();
    for node in graph.nodes.values() {
        for input in &node.inputs {
            let Some((from, port)) = input.split_once('.') else {
                continue;
            };
            if let (Some(op), Some(given)) = (ops.get(from), input_kinds.get(from)) {
                out.push((input.as_str(), op.port(port, given)));
            }
        }
    }
    out
}

/// The node an input names: `node` or `node.port`.
pub fn node_of(input: &str) -> &str {
    input.split_once('.').map_or(input, |(node, _)| node)
}

#[cfg(test)]
mod tests;
