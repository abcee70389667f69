//! Compiling a graph file in phases, each reporting every error it finds, each error naming
//! node and line: (1) ops and their fields, (2) shape — inputs that exist, arity, no cycles,
//! (3) record types along every edge; only once all that holds, phase (4) in `resources`
//! checks files and models.

use super::config::OpConfig;
use super::spec::{GraphError, GraphFile, ModelSpec, NodeSpec, PipelineSpec};
use crate::record::RecordKind;
use crate::runtime::Device;
use indexmap::IndexMap;
use std::collections::{HashMap, HashSet};

/// A node that passed the structural phases.
#[derive(Clone, Debug)]
pub struct CompiledNode {
    pub name: String,
    pub line: usize,
    pub op: OpConfig,
    pub inputs: Vec<String>,
}

/// A graph whose structure is valid; nodes are in dependency order.
#[derive(Clone, Debug)]
pub struct Compiled {
    pub file: String,
    pub pipeline: PipelineSpec,
    pub models: IndexMap<String, (ModelSpec, usize)>,
    pub nodes: IndexMap<String, CompiledNode>,
}

/// Every `back-ticked` word of a message, in order.
fn all_backticked(message: &str) -> impl Iterator<Item = &str> {
    message.split('`').skip(1).step_by(2)
}

/// Phases 1–3. No file other than the graph file is touched.
pub fn compile(graph: GraphFile) -> Result<Compiled, Vec<GraphError>> {
    let file = graph.file.clone();
    let err = |line: usize, node: &str, message: String| GraphError {
        file: file.clone(),
        line,
        node: Some(format!("node `{node}`")),
        message,
    };
    let mut errors = Vec::new();

    // Phase 1: ops and fields.
    let mut ops: IndexMap<String, (OpConfig, &NodeSpec)> = IndexMap::new();
    for (name, node) in &graph.nodes {
        let Some(op) = &node.op else { continue };
        match OpConfig::parse(op, node.fields.clone()) {
            Ok(config) => {
                ops.insert(name.clone(), (config, node));
            }
            Err(message) => {
                let line = if message.starts_with("unknown op") {
                    node.line_of("op")
                } else {
                    // The first back-ticked word that is a field of the node (serde names
                    // the bad value first for an unknown variant).
                    all_backticked(&message)
                        .find(|word| node.field_lines.contains_key(*word))
                        .map_or(node.line, |field| node.line_of(field))
                };
                errors.push(err(line, name, message));
            }
        }
    }
    for (name, (config, node)) in &ops {
        let checked = match config {
            OpConfig::Hard(hard) => hard.rules().map(drop).map_err(|e| (e, "rules")),
            OpConfig::Sink(sink) => sink.formats().map(drop).map_err(|e| (e, "formats")),
            OpConfig::Classify(c) if c.batch_size == 0 => {
                Err(("batch_size must be at least 1".into(), "batch_size"))
            }
            OpConfig::Generate(g) => {
                check_generate(g, &graph.models.keys().cloned().collect::<Vec<_>>())
            }
            _ => Ok(()),
        };
        if let Err((message, field)) = checked {
            errors.push(err(node.line_of(field), name, message));
        }
        if matches!(config, OpConfig::Sink(_)) && super::spec::RESERVED.contains(&name.as_str()) {
            errors.push(err(
                node.line,
                name,
                format!("a sink cannot be named `{name}`: the run writes its own `{name}/` folder"),
            ));
        }
        if let Some(model) = config.model() {
            if !graph.models.contains_key(model) {
                let known: Vec<_> = graph.models.keys().map(String::as_str).collect();
                errors.push(err(
                    node.line_of("model"),
                    name,
                    format!("unknown model `{model}` (models: {known:?})"),
                ));
            }
        }
    }
    for (name, (spec, line)) in &graph.models {
        if let Err(message) = spec.device.parse::<Device>() {
            errors.push(GraphError {
                file: file.clone(),
                line: *line,
                node: Some(format!("models.{name}")),
                message,
            });
        }
        if spec.fallback.as_deref().is_some_and(|f| f != "cpu") {
            let message = "fallback must be \"cpu\" when given".to_string();
            errors.push(GraphError {
                file: file.clone(),
                line: *line,
                node: Some(format!("models.{name}")),
                message,
            });
        }
    }

    // Phase 2: shape.
    for (name, node) in &graph.nodes {
        for input in &node.inputs {
            if input == name {
                errors.push(err(
                    node.line_of("inputs"),
                    name,
                    "a node cannot be its own input".into(),
                ));
            } else if !graph.nodes.contains_key(input) {
                errors.push(err(
                    node.line_of("inputs"),
                    name,
                    format!("input `{input}` is not a node"),
                ));
            }
        }
        if let Some((config, _)) = ops.get(name) {
            let (least, most) = config.arity();
            let n = node.inputs.len();
            if n < least || n > most {
                let expected = if least == most {
                    format!("{least}")
                } else if most == usize::MAX {
                    format!("at least {least}")
                } else {
                    format!("{least} to {most}")
                };
                errors.push(err(
                    node.line_of("inputs"),
                    name,
                    format!("takes {expected} inputs, has {n}"),
                ));
            }
        }
    }
    let order = match topological_order(&graph.nodes) {
        Ok(order) => order,
        Err(cycles) => {
            for cycle in cycles {
                let first = &graph.nodes[&cycle[0]];
                errors.push(err(
                    first.line_of("inputs"),
                    &cycle[0],
                    format!("cycle: {}", cycle.join(" → ")),
                ));
            }
            Vec::new()
        }
    };

    // Phase 3: record types, in dependency order so each node's input kinds are known.
    let mut kinds: HashMap<&str, Option<RecordKind>> = HashMap::new();
    for name in &order {
        let Some((config, node)) = ops.get(name) else {
            continue;
        };
        let mut inputs = Vec::new();
        let mut known = true;
        for input in &node.inputs {
            match kinds.get(input.as_str()) {
                Some(Some(kind)) => inputs.push(*kind),
                Some(None) => {
                    errors.push(err(
                        node.line_of("inputs"),
                        name,
                        format!("input `{input}` is a sink and produces nothing"),
                    ));
                    known = false;
                }
                None => known = false,
            }
        }
        if known {
            if let Err(message) = config.check_inputs(&inputs) {
                errors.push(err(node.line_of("inputs"), name, message));
            }
        }
        kinds.insert(name, config.output());
    }

    if !errors.is_empty() {
        errors.sort_by_key(|e| e.line);
        return Err(errors);
    }
    let pipeline = graph.pipeline.clone().expect("checked while parsing");
    let nodes = order
        .iter()
        .map(|name| {
            let (op, node) = ops[name].clone();
            (
                name.clone(),
                CompiledNode {
                    name: name.clone(),
                    line: node.line,
                    op,
                    inputs: node.inputs.clone(),
                },
            )
        })
        .collect();
    Ok(Compiled {
        file,
        pipeline,
        models: graph.models.clone(),
        nodes,
    })
}

fn check_generate(
    g: &super::config::GenerateConfig,
    models: &[String],
) -> Result<(), (String, &'static str)> {
    g.levels().map_err(|e| (e, "levels"))?;
    g.scheduler_kind().map_err(|e| (e, "scheduler"))?;
    if g.seeds == 0 {
        return Err(("seeds must be at least 1".into(), "seeds"));
    }
    if g.batch_size == 0 {
        return Err(("batch_size must be at least 1".into(), "batch_size"));
    }
    if g.steps == 0 {
        return Err(("steps must be at least 1".into(), "steps"));
    }
    if g.prompt.is_some() && g.prompts.is_some() {
        return Err((
            "give `prompt` (a template) or `prompts` (lists per class), not both".into(),
            "prompts",
        ));
    }
    if let Some(from) = &g.classes_from {
        if !models.contains(from) {
            return Err((
                format!("classes_from names unknown model `{from}`"),
                "classes_from",
            ));
        }
    }
    Ok(())
}

/// Nodes in dependency order, or every cycle (as node lists) when there are some.
fn topological_order(nodes: &IndexMap<String, NodeSpec>) -> Result<Vec<String>, Vec<Vec<String>>> {
    let mut order = Vec::new();
    let mut state: HashMap<&str, u8> = HashMap::new(); // 1: on the stack, 2: done
    let mut cycles = Vec::new();
    let mut in_cycle: HashSet<String> = HashSet::new();
    fn visit<'a>(
        name: &'a str,
        nodes: &'a IndexMap<String, NodeSpec>,
        state: &mut HashMap<&'a str, u8>,
        stack: &mut Vec<&'a str>,
        order: &mut Vec<String>,
        cycles: &mut Vec<Vec<String>>,
        in_cycle: &mut HashSet<String>,
    ) {
        match state.get(name) {
            Some(2) => return,
            Some(1) => {
                let start = stack.iter().position(|n| *n == name).expect("on the stack");
                let mut cycle: Vec<String> = stack[start..].iter().map(|n| n.to_string()).collect();
                if cycle.iter().all(|n| !in_cycle.contains(n)) {
                    in_cycle.extend(cycle.iter().cloned());
                    cycle.push(name.to_string());
                    cycles.push(cycle);
                }
                return;
            }
            _ => {}
        }
        state.insert(name, 1);
        stack.push(name);
        for input in &nodes[name].inputs {
            if let Some((key, _)) = nodes.get_key_value(input) {
                if key != name {
                    visit(key, nodes, state, stack, order, cycles, in_cycle);
                }
            }
        }
        stack.pop();
        state.insert(name, 2);
        order.push(name.to_string());
    }
    for name in nodes.keys() {
        visit(
            name,
            nodes,
            &mut state,
            &mut Vec::new(),
            &mut order,
            &mut cycles,
            &mut in_cycle,
        );
    }
    if cycles.is_empty() {
        Ok(order)
    } else {
        Err(cycles)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        let graph = GraphFile::parse("g.toml", text).unwrap();
        compile(graph)
            .unwrap_err()
            .iter()
            .map(|e| e.to_string())
            .collect()
    }

    const HEAD: &str =
        "[pipeline]\nname = \"p\"\noutput = \"out\"\n[models.m]\npath = \"models/m\"\n";

    #[test]
    fn reports_three_different_mistakes_at_once() {
        let text = format!(
            "{HEAD}[nodes.train]\nop = \"source\"\nformat = \"image_folder\"\npath = \"d\"\n\
             [nodes.scores]\nop = \"clasify\"\ninputs = [\"train\"]\n\
             [nodes.hard]\nop = \"hard\"\ninputs = [\"train\", \"scorez\"]\nrules = [{{ misclassified = true }}]\n\
             [nodes.out]\nop = \"sink\"\ninputs = [\"hard\"]\nformat = [\"jsonl\"]\n"
        );
        let shown = errors(&text);
        assert_eq!(
            shown,
            vec![
                "g.toml:11: node `scores`: unknown op `clasify` (expected one of source, classify, feedback, hard, generate, sink)",
                "g.toml:15: node `hard`: input `scorez` is not a node",
                "g.toml:20: node `out`: unknown field `format`, expected `formats` or `keep_versions`",
            ]
        );
    }

    #[test]
    fn finds_cycles_and_type_errors() {
        let text = format!(
            "{HEAD}[nodes.a]\nop = \"hard\"\ninputs = [\"b\", \"b\"]\nrules = [{{ misclassified = true }}]\n\
             [nodes.b]\nop = \"hard\"\ninputs = [\"a\", \"a\"]\nrules = [{{ misclassified = true }}]\n"
        );
        let shown = errors(&text);
        assert_eq!(shown.len(), 1, "{shown:?}");
        assert!(shown[0].contains("cycle: a → b → a"), "{shown:?}");
        let text = format!(
            "{HEAD}[nodes.train]\nop = \"source\"\nformat = \"image_folder\"\npath = \"d\"\n\
             [nodes.s]\nop = \"classify\"\ninputs = [\"train\"]\nmodel = \"nope\"\n\
             [nodes.h]\nop = \"hard\"\ninputs = [\"s\", \"train\"]\nrules = [{{ p_true_below = 2.0 }}]\n"
        );
        let shown = errors(&text);
        assert_eq!(shown.len(), 3, "{shown:?}");
        assert!(
            shown[0].starts_with("g.toml:13: node `s`: unknown model `nope`"),
            "{shown:?}"
        );
        assert!(
            shown[1].starts_with("g.toml:16: node `h`: takes [Sample, Score, ...]"),
            "{shown:?}"
        );
        assert!(
            shown[2].starts_with("g.toml:17: node `h`: p_true_below = 2 is not a probability"),
            "{shown:?}"
        );
    }

    #[test]
    fn orders_nodes_by_dependency() {
        let text = format!(
            "{HEAD}[nodes.out]\nop = \"sink\"\ninputs = [\"s\"]\n\
             [nodes.s]\nop = \"classify\"\ninputs = [\"train\"]\nmodel = \"m\"\n\
             [nodes.train]\nop = \"source\"\nformat = \"image_folder\"\npath = \"d\"\n"
        );
        let compiled = compile(GraphFile::parse("g.toml", &text).unwrap()).unwrap();
        assert_eq!(
            compiled.nodes.keys().collect::<Vec<_>>(),
            vec!["train", "s", "out"]
        );
    }
}
