//! `discl graph`: a compiled graph as Graphviz DOT.

use super::compile::Compiled;
use super::ops::Role;
use std::fmt::Write;

/// The DOT text of a graph: one box per node (name, op and its detail), one edge per input.
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
        let shape = match node.op.role() {
            Role::Input => ", shape=invhouse",
            Role::Output => ", shape=house",
            Role::Transform => "",
        };
        writeln!(
            out,
            "  \"{}\" [label=\"{}\\n{}: {}\"{shape}];",
            escape(node.name()),
            escape(node.name()),
            node.op.kind(),
            escape(&node.op.dot_detail())
        )
        .unwrap();
    }
    for node in compiled.nodes.values() {
        for input in &node.info.inputs {
            writeln!(
                out,
                "  \"{}\" -> \"{}\";",
                escape(input),
                escape(node.name())
            )
            .unwrap();
        }
    }
    out.push_str("}\n");
    out
}
