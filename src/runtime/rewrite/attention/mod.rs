//! Attention fused into one operator. PyTorch exports `scaled_dot_product_attention` (what
//! diffusers' UNets call) as a dozen nodes per block: the projected query, key and value
//! `[B, S, H·D]` reshaped to heads and transposed, each of query and key multiplied by √scale,
//! `MatMul`, `Softmax`, `MatMul` with the value, transposed and reshaped back to `[B, S, H·D]`.
//! Each such block becomes ONNX Runtime's `com.microsoft.MultiHeadAttention` over the three
//! projections (`num_heads` from the reshape; `scale` when the export's is not the default
//! 1/√D), and the nodes nothing reads any more are dropped. A block in any other form (a mask
//! added to the scores, heads split another way) is left as it is. Initializers are copied as
//! read, but for those only dropped nodes read. The matching itself is in [`pattern`].

use super::node::{self, contrib_node, NewAttribute, Node, GRAPH_OUTPUT, INITIALIZER, NODE};
use super::tensor::Tensor;
use super::wire;
use pattern::{Graph, Scale};
use std::collections::{HashMap, HashSet};

mod pattern;

/// What the fusion did.
#[derive(Debug, Default, PartialEq)]
pub struct Summary {
    /// `Softmax` nodes in the graph: one per attention block, fused or not.
    pub softmaxes: usize,
    /// Attention blocks now one `MultiHeadAttention`.
    pub fused: usize,
    /// Nodes no longer read, dropped.
    pub removed: usize,
}

impl Summary {
    /// Why a model gained nothing, for an error.
    pub fn nothing_fused(&self) -> String {
        match self.softmaxes {
            0 => "the UNet has no attention (no Softmax node) to fuse; leave the option out".into(),
            n => format!(
                "none of the UNet's {n} Softmax node(s) is in the form discl fuses (PyTorch's \
                 scaled_dot_product_attention export: heads split by Reshape and Transpose, \
                 MatMul, Softmax, MatMul); leave the option out"
            ),
        }
    }
}

/// The nodes still needed (by index) and the names they read, traced back from the graph's
/// `outputs` with each replaced node reading its new inputs. Not by list order: converters
/// such as float16's append nodes out of order, and ONNX Runtime sorts the graph itself.
fn live_nodes<'a>(
    graph: &Graph<'a>,
    replaced: &HashMap<usize, (Vec<u8>, Vec<&'a str>)>,
    outputs: &'a [String],
) -> (Vec<bool>, HashSet<&'a str>) {
    let reads = |i: usize| match replaced.get(&i) {
        Some((_, inputs)) => inputs,
        None => &graph.nodes[i].inputs,
    };
    let mut keep = vec![false; graph.nodes.len()];
    let mut wanted: Vec<&str> = outputs.iter().map(String::as_str).collect();
    for (i, node) in graph.nodes.iter().enumerate() {
        if node.outputs.is_empty() {
            keep[i] = true;
            wanted.extend(reads(i));
        }
    }
    let mut needed = HashSet::new();
    while let Some(name) = wanted.pop() {
        if !needed.insert(name) {
            continue;
        }
        if let Some(&i) = graph.producer.get(name) {
            if !keep[i] {
                keep[i] = true;
                wanted.extend(reads(i));
            }
        }
    }
    (keep, needed)
}

/// Fuses every attention block of `model` (an ONNX file's bytes) it recognises. External data
/// references are kept as they are.
pub fn fuse(model: &[u8]) -> Result<(Vec<u8>, Summary), String> {
    let model_fields = wire::fields(model)?;
    let opset = node::onnx_opset(&model_fields)?.unwrap_or(0);
    let graph_bytes = node::graph_of(&model_fields)?;
    let graph_fields = wire::fields(graph_bytes)?;
    let mut graph = Graph {
        nodes: Vec::new(),
        producer: HashMap::new(),
        consumers: HashMap::new(),
        initializers: HashMap::new(),
    };
    let mut subgraphs = false;
    for field in &graph_fields {
        match field.number {
            NODE => {
                let node = Node::parse(field.bytes().unwrap_or_default())?;
                subgraphs |= node.has_subgraph()?;
                let at = graph.nodes.len();
                node.outputs.iter().for_each(|o| {
                    graph.producer.insert(o, at);
                });
                node.inputs.iter().filter(|i| !i.is_empty()).for_each(|i| {
                    graph.consumers.entry(i).or_default().push(at);
                });
                graph.nodes.push(node);
            }
            INITIALIZER => {
                let t = Tensor::parse(field.bytes().unwrap_or_default())?;
                graph.initializers.insert(t.name, t);
            }
            _ => {}
        }
    }

    let mut summary = Summary::default();
    // Node index → the fused node's bytes and its inputs.
    let mut replaced: HashMap<usize, (Vec<u8>, Vec<&str>)> = HashMap::new();
    for softmax in graph.nodes.iter().filter(|n| n.is("Softmax")) {
        summary.softmaxes += 1;
        let Some(found) = graph.find(softmax, opset) else {
            continue;
        };
        let mut attributes = vec![("num_heads", NewAttribute::Int(found.heads))];
        if let Scale::Fixed(scale) = found.scale {
            attributes.push(("scale", NewAttribute::Float(scale)));
        }
        let name = match softmax.name {
            "" => format!("discl_fused_attention_{}", summary.fused),
            named => format!("{named}/discl_fused_attention"),
        };
        let inputs = [found.query, found.key, found.value];
        let bytes = contrib_node(
            &name,
            "MultiHeadAttention",
            &inputs,
            &[found.output],
            &attributes,
        );
        replaced.insert(found.at, (bytes, inputs.to_vec()));
        summary.fused += 1;
    }

    let outputs = node::value_names(&graph_fields, GRAPH_OUTPUT)?;
    let inputs = node::value_names(&graph_fields, node::GRAPH_INPUT)?;
    let (keep, needed) = match subgraphs {
        // Names read inside subgraphs are not among the node inputs: keep every node.
        true => (vec![true; graph.nodes.len()], HashSet::new()),
        false => live_nodes(&graph, &replaced, &outputs),
    };
    summary.removed = keep.iter().filter(|k| !**k).count();

    let mut new_graph = Vec::with_capacity(graph_bytes.len());
    let mut nodes_written = false;
    for field in &graph_fields {
        match field.number {
            NODE if !nodes_written => {
                nodes_written = true;
                for (i, field) in graph_fields.iter().filter(|f| f.number == NODE).enumerate() {
                    match (keep[i], replaced.get(&i)) {
                        (false, _) => {}
                        (true, Some((bytes, _))) => wire::put_bytes(&mut new_graph, NODE, bytes),
                        (true, None) => wire::put(&mut new_graph, field),
                    }
                }
            }
            NODE => {}
            INITIALIZER => {
                let name = Tensor::parse(field.bytes().unwrap_or_default())?.name;
                // An initializer only the dropped nodes read goes with them (not one also listed
                // as a graph input: without it that input would become a required one).
                let dropped = !subgraphs
                    && !needed.contains(name)
                    && graph.consumers.contains_key(name)
                    && !inputs.iter().any(|i| i == name);
                if !dropped {
                    wire::put(&mut new_graph, field);
                }
            }
            _ => wire::put(&mut new_graph, field),
        }
    }
    let out = node::model_with_graph(&model_fields, &new_graph, summary.fused > 0)?;
    Ok((out, summary))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A model whose graph is `y = Softmax(x)` over the last axis.
    fn softmax_alone() -> Vec<u8> {
        let value = |name: &str| {
            let mut info = Vec::new();
            wire::put_bytes(&mut info, 1, name.as_bytes());
            info
        };
        let (x, y) = (value("x"), value("y"));
        let mut softmax = Vec::new();
        wire::put_bytes(&mut softmax, 1, b"x");
        wire::put_bytes(&mut softmax, 2, b"y");
        wire::put_bytes(&mut softmax, 4, b"Softmax");
        let mut graph = Vec::new();
        wire::put_bytes(&mut graph, NODE, &softmax);
        wire::put_bytes(&mut graph, 11, &x);
        wire::put_bytes(&mut graph, GRAPH_OUTPUT, &y);
        let mut opset = Vec::new();
        wire::put_bytes(&mut opset, 1, b"");
        wire::put_varint_field(&mut opset, 2, 17);
        let mut model = Vec::new();
        wire::put_varint_field(&mut model, 1, 8);
        wire::put_bytes(&mut model, node::OPSET_IMPORT, &opset);
        wire::put_bytes(&mut model, node::GRAPH, &graph);
        model
    }

    #[test]
    fn a_softmax_outside_attention_is_left_as_it_is() {
        let model = softmax_alone();
        let (out, summary) = fuse(&model).unwrap();
        assert_eq!(
            summary,
            Summary {
                softmaxes: 1,
                fused: 0,
                removed: 0
            }
        );
        assert_eq!(out, model, "the file is copied byte for byte");
        assert!(summary
            .nothing_fused()
            .contains("none of the UNet's 1 Softmax node(s)"));
        assert!(Summary::default().nothing_fused().contains("no attention"));
    }

    #[test]
    fn bytes_that_are_not_a_model_are_an_error() {
        assert!(fuse(b"\x0b").unwrap_err().contains("wire type 3"));
        let mut only_ir = Vec::new();
        wire::put_varint_field(&mut only_ir, 1, 8);
        assert_eq!(fuse(&only_ir).unwrap_err(), "the file has no graph");
    }
}
