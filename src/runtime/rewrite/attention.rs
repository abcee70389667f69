//! Attention fused into one operator. PyTorch exports `scaled_dot_product_attention` (what
//! diffusers' UNets call) as a dozen nodes per block: the projected query, key and value
//! `[B, S, H·D]` reshaped to heads and transposed, each of query and key multiplied by √scale,
//! `MatMul`, `Softmax`, `MatMul` with the value, transposed and reshaped back to `[B, S, H·D]`.
//! Each such block becomes ONNX Runtime's `com.microsoft.MultiHeadAttention` over the three
//! projections (`num_heads` from the reshape; `scale` when the export's is not the default
//! 1/√D), and the nodes nothing reads any more are dropped. A block in any other form (a mask
//! added to the scores, heads split another way) is left as it is. Initializers are untouched.

use super::node::{self, contrib_node, NewAttribute, Node, GRAPH, GRAPH_OUTPUT, INITIALIZER, NODE};
use super::tensor::Tensor;
use super::wire::{self, Field};
use std::collections::{HashMap, HashSet};

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

/// How the scores are scaled before the softmax.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Scale {
    /// 1/√D, `MultiHeadAttention`'s own default.
    Default,
    Fixed(f32),
}

/// One attention block to replace: the node at `at` (the final reshape) becomes the fused one.
struct Fusion<'a> {
    at: usize,
    query: &'a str,
    key: &'a str,
    value: &'a str,
    output: &'a str,
    heads: i64,
    scale: Scale,
}

struct Graph<'a> {
    nodes: Vec<Node<'a>>,
    producer: HashMap<&'a str, usize>,
    consumers: HashMap<&'a str, Vec<usize>>,
    initializers: HashMap<&'a str, Tensor<'a>>,
}

impl<'a> Graph<'a> {
    fn producer(&self, name: &str) -> Option<&Node<'a>> {
        self.producer.get(name).map(|i| &self.nodes[*i])
    }

    /// The node making `name` when it is the standard operator `op_type`.
    fn made_by(&self, name: &str, op_type: &str) -> Option<&Node<'a>> {
        self.producer(name).filter(|n| n.is(op_type))
    }

    /// `name`, or what it is a `Cast` of (repeatedly).
    fn through_casts(&self, mut name: &'a str) -> &'a str {
        while let Some(cast) = self.made_by(name, "Cast") {
            name = cast.inputs[0];
        }
        name
    }

    /// The one node reading `name`, when exactly one does.
    fn only_reader(&self, name: &str) -> Option<(usize, &Node<'a>)> {
        match self.consumers.get(name).map(Vec::as_slice) {
            Some([i]) => Some((*i, &self.nodes[*i])),
            _ => None,
        }
    }

    /// `read` applied to a constant: an initializer or a `Constant` node's value.
    fn constant<R>(&self, name: &str, read: impl Fn(&Tensor<'a>) -> Option<R>) -> Option<R> {
        match self.made_by(name, "Constant") {
            Some(node) => read(&node.attribute("value")?.tensor()?),
            None => read(self.initializers.get(name)?),
        }
    }

    fn ints(&self, name: &str) -> Option<Vec<i64>> {
        if let Some(node) = self.made_by(name, "Constant") {
            if let Some(a) = node.attribute("value_ints") {
                return a.ints();
            }
            if let Some(a) = node.attribute("value_int") {
                return a.int().map(|v| vec![v]);
            }
        }
        self.constant(name, Tensor::ints)
    }

    /// A constant holding one float.
    fn float(&self, name: &str) -> Option<f32> {
        if let Some(a) = self
            .made_by(name, "Constant")
            .and_then(|n| n.attribute("value_float"))
        {
            return a.float();
        }
        self.constant(name, |t| (t.values() == 1).then(|| t.scalar())?)
    }

    fn perm(&self, name: &str) -> Option<(&Node<'a>, Vec<i64>)> {
        let t = self.made_by(name, "Transpose")?;
        Some((t, t.attribute("perm")?.ints()?))
    }

    /// `name` = `Transpose(Reshape(x, [B, S, H, D]), perm)`: x and H.
    fn heads_split(&self, name: &str, perm: &[i64]) -> Option<(&'a str, i64)> {
        let (transpose, found) = self.perm(name)?;
        (found == perm).then_some(())?;
        let reshape = self.made_by(transpose.inputs[0], "Reshape")?;
        Some((
            reshape.inputs[0],
            self.heads_in_shape(reshape.inputs.get(1)?)?,
        ))
    }

    /// The key split into heads and transposed for the product: `[B, H, D, L]`, in one
    /// transpose or two.
    fn key_split(&self, name: &str) -> Option<(&'a str, i64)> {
        if let Some(found) = self.heads_split(name, &[0, 2, 3, 1]) {
            return Some(found);
        }
        let (transpose, perm) = self.perm(name)?;
        (perm == [0, 1, 3, 2]).then_some(())?;
        self.heads_split(transpose.inputs[0], &[0, 2, 1, 3])
    }

    /// H of a reshape to `[B, S, H, D]`: a constant shape, or a `Concat` of four pieces whose
    /// third is a constant.
    fn heads_in_shape(&self, shape: &str) -> Option<i64> {
        let heads = match self.ints(shape) {
            Some(dims) if dims.len() == 4 => dims[2],
            Some(_) => return None,
            None => {
                let concat = self.made_by(shape, "Concat")?;
                (concat.inputs.len() == 4).then_some(())?;
                match self.ints(concat.inputs[2])?.as_slice() {
                    [h] => *h,
                    _ => return None,
                }
            }
        };
        (heads > 0).then_some(heads)
    }

    /// Whether a reshape's `shape` has three entries.
    fn is_rank3_shape(&self, shape: &str) -> bool {
        if let Some(dims) = self.ints(shape) {
            return dims.len() == 3;
        }
        let Some(concat) = self.made_by(shape, "Concat") else {
            return false;
        };
        let pieces: Option<usize> = concat
            .inputs
            .iter()
            .map(|piece| match self.ints(piece) {
                Some(values) => Some(values.len()),
                // A scalar made one-element: how exporters build shapes from `Shape` lookups.
                None => self.made_by(piece, "Unsqueeze").map(|_| 1),
            })
            .sum();
        pieces == Some(3)
    }

    /// Whether `name` is the last dimension of one of `tensors`, as a one-element tensor.
    fn is_last_dim(&self, name: &str, tensors: &[&str]) -> bool {
        let shape_of = |name: &str| {
            self.made_by(name, "Shape")
                .filter(|s| tensors.contains(&s.inputs[0]))
        };
        let Some(node) = self.producer(name) else {
            return false;
        };
        if node.is("Slice")
            && shape_of(node.inputs[0]).is_some_and(|s| s.attribute("start").is_none())
        {
            let arg = |i: usize| {
                node.inputs
                    .get(i)
                    .filter(|n| !n.is_empty())
                    .map(|n| self.ints(n))
            };
            let starts = arg(1).flatten();
            let ends = arg(2).flatten();
            return starts.as_deref() == Some(&[-1])
                && matches!(ends.as_deref(), Some([end]) if *end >= i64::from(i32::MAX))
                && arg(3).is_none_or(|axes| axes.as_deref() == Some(&[0][..]))
                && arg(4).is_none_or(|steps| steps.as_deref() == Some(&[1][..]));
        }
        if node.is("Shape") && tensors.contains(&node.inputs[0]) {
            return node.attribute("start").and_then(|a| a.int()) == Some(-1)
                && node.attribute("end").is_none();
        }
        false
    }

    /// Whether `name` is √(1/√D) computed from the query's shape: the factor PyTorch's export
    /// multiplies query and key by for `scaled_dot_product_attention`'s default scale.
    fn is_default_root(&self, name: &'a str, query: &[&str]) -> bool {
        let step = |name: &'a str, op: &str| self.made_by(self.through_casts(name), op);
        let Some(outer) = step(name, "Sqrt") else {
            return false;
        };
        let Some(div) = step(outer.inputs[0], "Div") else {
            return false;
        };
        let Some(inner) = step(div.inputs[1], "Sqrt") else {
            return false;
        };
        self.float(self.through_casts(div.inputs[0])) == Some(1.0)
            && self.is_last_dim(self.through_casts(inner.inputs[0]), query)
    }

    /// `name` without a `Mul` by a scale factor: the tensor (a transpose's output) and the
    /// factor's name.
    fn unscaled(&self, name: &'a str) -> (&'a str, Option<&'a str>) {
        if let Some(mul) = self.made_by(name, "Mul") {
            if let [a, b] = mul.inputs[..] {
                match (self.perm(a).is_some(), self.perm(b).is_some()) {
                    (true, false) => return (a, Some(b)),
                    (false, true) => return (b, Some(a)),
                    _ => {}
                }
            }
        }
        (name, None)
    }

    fn find(&self, softmax: &Node<'a>, opset: u64) -> Option<Fusion<'a>> {
        let axis = softmax.attribute("axis").and_then(|a| a.int());
        let last_axis = matches!(axis, Some(-1) | Some(3)) || (axis.is_none() && opset >= 13);
        last_axis.then_some(())?;
        // Scores, maybe scaled after the product by a constant.
        let mut scores = softmax.inputs[0];
        let mut after = 1.0f32;
        if let Some(op) = self.producer(scores).filter(|n| n.is("Mul") || n.is("Div")) {
            let [a, b] = op.inputs[..] else { return None };
            let (product, factor) = match self.made_by(a, "MatMul") {
                Some(_) => (a, self.float(b)?),
                None if op.is("Mul") => (b, self.float(a)?),
                None => return None,
            };
            scores = product;
            after = if op.is("Mul") { factor } else { 1.0 / factor };
        }
        let product = self.made_by(scores, "MatMul")?;
        let [q, k] = product.inputs[..] else {
            return None;
        };
        let ((q, q_factor), (k, k_factor)) = (self.unscaled(q), self.unscaled(k));
        let (query, heads) = self.heads_split(q, &[0, 2, 1, 3])?;
        let (key, key_heads) = self.key_split(k)?;
        // The query as split into heads, and before its transpose: both end in D.
        let split = [q, self.producer(q)?.inputs[0]];
        let scale = match (q_factor, k_factor) {
            (Some(a), Some(b))
                if self.is_default_root(a, &split) && self.is_default_root(b, &split) =>
            {
                (after == 1.0).then_some(Scale::Default)?
            }
            (a, b) => {
                let factor = |f: Option<&str>| f.map_or(Some(1.0), |f| self.float(f));
                Scale::Fixed(after * factor(a)? * factor(b)?)
            }
        };
        let (_, weighted) = self.only_reader(softmax.outputs.first()?)?;
        let [probabilities, v] = weighted.inputs[..] else {
            return None;
        };
        (weighted.is("MatMul") && probabilities == softmax.outputs[0]).then_some(())?;
        let (value, value_heads) = self.heads_split(v, &[0, 2, 1, 3])?;
        (heads == key_heads && heads == value_heads).then_some(())?;
        let (_, merge) = self.only_reader(weighted.outputs.first()?)?;
        (merge.is("Transpose") && merge.attribute("perm")?.ints()? == [0, 2, 1, 3]).then_some(())?;
        let (at, reshape) = self.only_reader(merge.outputs.first()?)?;
        (reshape.is("Reshape") && self.is_rank3_shape(reshape.inputs.get(1)?)).then_some(())?;
        Some(Fusion {
            at,
            query,
            key,
            value,
            output: reshape.outputs.first()?,
            heads,
            scale,
        })
    }
}

/// Fuses every attention block of `model` (an ONNX file's bytes) it recognises. External data
/// references are kept as they are.
pub fn fuse(model: &[u8]) -> Result<(Vec<u8>, Summary), String> {
    let model_fields = wire::fields(model)?;
    let opset = node::onnx_opset(&model_fields)?.unwrap_or(0);
    let graph_bytes = model_fields
        .iter()
        .find(|f| f.number == GRAPH)
        .and_then(Field::bytes)
        .ok_or("the file has no graph")?;
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
    let mut replaced: HashMap<usize, Vec<u8>> = HashMap::new();
    let mut reads: HashMap<usize, Vec<&str>> = HashMap::new();
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
        replaced.insert(found.at, bytes);
        reads.insert(found.at, inputs.to_vec());
        summary.fused += 1;
    }

    // Nodes kept: those whose outputs something still reads, traced back from the graph's
    // outputs (not by list order: converters such as float16's append nodes out of order, and
    // ONNX Runtime sorts the graph itself). A graph with subgraphs keeps all: their reads are
    // not among the node inputs above.
    let outputs = node::value_names(&graph_fields, GRAPH_OUTPUT)?;
    let mut needed: HashSet<&str> = HashSet::new();
    let mut keep = vec![subgraphs; graph.nodes.len()];
    let mut wanted: Vec<&str> = outputs.iter().map(String::as_str).collect();
    for (i, node) in graph.nodes.iter().enumerate() {
        if subgraphs || node.outputs.is_empty() {
            keep[i] = true;
            wanted.extend(reads.get(&i).unwrap_or(&node.inputs));
        }
    }
    while let Some(name) = wanted.pop() {
        if !needed.insert(name) {
            continue;
        }
        if let Some(&i) = graph.producer.get(name) {
            if !keep[i] {
                keep[i] = true;
                wanted.extend(reads.get(&i).unwrap_or(&graph.nodes[i].inputs));
            }
        }
    }
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
                        (true, Some(bytes)) => wire::put_bytes(&mut new_graph, NODE, bytes),
                        (true, None) => wire::put(&mut new_graph, field),
                    }
                }
            }
            NODE => {}
            INITIALIZER => {
                let name = Tensor::parse(field.bytes().unwrap_or_default())?.name;
                // An initializer only the dropped nodes read goes with them.
                let dropped =
                    !subgraphs && !needed.contains(name) && graph.consumers.contains_key(name);
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
        wire::put_bytes(&mut model, GRAPH, &graph);
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
