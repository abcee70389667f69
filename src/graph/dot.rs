//! `discl graph`: a compiled graph as Graphviz DOT.

use super::compile::Compiled;
use super::config::OpConfig;
use std::fmt::Write;

/// The DOT text of a graph: one box per node (name and op), one edge per input.
pub fn to_dot(compiled: &Compiled) -> String {
    let mut out = String::new();
    let escape = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    writeln!(out, "digraph \"{}\" {{", escape(&compiled.pipeline.name)).unwrap();
    writeln!(
        out,
        "  rankdir=LR;\n  node [shape=box, fontname=\"Helvetica\"];"
    )
    .unwrap();
    for node in compiled.nodes.values() {
        let (op, detail) = match &node.op {
            OpConfig::Source(s) => ("source", s.path.display().to_string()),
            OpConfig::Classify(c) => ("classify", format!("model {}", c.model)),
            OpConfig::Feedback(f) => ("feedback", f.path.display().to_string()),
            OpConfig::Hard(h) => ("hard", format!("{} rule(s)", h.rules.len())),
            OpConfig::Generate(g) => (
                "generate",
                format!("model {}, λ {:?} × {} seed(s)", g.model, g.levels, g.seeds),
            ),
            OpConfig::Sink(s) => ("sink", s.formats.join(", ")),
        };
        let shape = match node.op {
            OpConfig::Source(_) | OpConfig::Feedback(_) => ", shape=invhouse",
            OpConfig::Sink(_) => ", shape=house",
            _ => "",
        };
        writeln!(
            out,
            "  \"{}\" [label=\"{}\\n{op}: {}\"{shape}];",
            escape(&node.name),
            escape(&node.name),
            escape(&detail)
        )
        .unwrap();
    }
    for node in compiled.nodes.values() {
        for input in &node.inputs {
            writeln!(
                out,
                "  \"{}\" -> \"{}\";",
                escape(input),
                escape(&node.name)
            )
            .unwrap();
        }
    }
    out.push_str("}\n");
    out
}
