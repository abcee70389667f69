//! int8 dynamic quantisation of a UNet for the CPU: every `MatMul` whose second input is a
//! constant float matrix [K, N] becomes ONNX Runtime's `com.microsoft.DynamicQuantizeMatMul`
//! with that matrix in int8, symmetric per column (scale = max |column| / 127, zero point 0);
//! its activations are quantized to uint8 on the fly, call by call. Float matrices no other
//! node reads are dropped. Everything else in the file is copied field for field. Convolutions
//! stay float: ONNX Runtime's `ConvInteger` measured slower than its float convolutions.

use super::node::{self, Node, GRAPH_INPUT, GRAPH_OUTPUT, INITIALIZER, NODE};
use super::node::{MICROSOFT, NODE_DOMAIN, NODE_INPUT, NODE_OP_TYPE};
use super::tensor::{self, DataFile, Tensor, FLOAT, INT8};
use super::wire;
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::Path;

/// What the rewrite did.
#[derive(Debug, Default, PartialEq)]
pub struct Summary {
    /// MatMul nodes now running in int8.
    pub matmuls: usize,
    /// Distinct weight matrices quantized.
    pub weights: usize,
    /// Float weights kept because something else reads them.
    pub kept: usize,
}

/// `node` as `DynamicQuantizeMatMul` over `inputs`; its name, outputs and any other fields
/// unchanged.
fn dynamic_quantized(node: &Node<'_>, inputs: [&str; 4]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut inputs_written = false;
    for field in &node.fields {
        match field.number {
            NODE_INPUT if !inputs_written => {
                inputs
                    .iter()
                    .for_each(|i| wire::put_bytes(&mut out, NODE_INPUT, i.as_bytes()));
                inputs_written = true;
            }
            NODE_INPUT | NODE_DOMAIN => {}
            NODE_OP_TYPE => wire::put_bytes(&mut out, NODE_OP_TYPE, b"DynamicQuantizeMatMul"),
            _ => wire::put(&mut out, field),
        }
    }
    wire::put_bytes(&mut out, NODE_DOMAIN, MICROSOFT.as_bytes());
    out
}

/// A float matrix [K, N] as int8, one scale per column.
pub fn quantize_columns(values: &[f32], k: usize, n: usize) -> (Vec<i8>, Vec<f32>) {
    let mut scales = vec![0.0f32; n];
    for row in values.chunks_exact(n) {
        for (s, v) in scales.iter_mut().zip(row) {
            *s = s.max(v.abs());
        }
    }
    for s in &mut scales {
        *s = if *s > 0.0 && s.is_finite() {
            *s / 127.0
        } else {
            1.0
        };
    }
    let mut q = Vec::with_capacity(k * n);
    for row in values.chunks_exact(n) {
        q.extend(
            row.iter()
                .zip(&scales)
                .map(|(v, s)| (v / s).round().clamp(-127.0, 127.0) as i8),
        );
    }
    (q, scales)
}

/// Rewrites `model` (the bytes of an ONNX file in `folder`, whose external data it may read);
/// external tensors, and the new int8 ones when there are any, go to `data`.
pub fn quantize_matmuls<W: Write>(
    model: &[u8],
    folder: &Path,
    data: &mut DataFile<W>,
) -> Result<(Vec<u8>, Summary), String> {
    rewrite(model, folder, data, true)
}

/// `model` as it is but for its external tensors, copied to `data` (a model rewritten in
/// another folder than its own).
pub fn move_external_data<W: Write>(
    model: &[u8],
    folder: &Path,
    data: &mut DataFile<W>,
) -> Result<Vec<u8>, String> {
    rewrite(model, folder, data, false).map(|(out, _)| out)
}

fn rewrite<W: Write>(
    model: &[u8],
    folder: &Path,
    data: &mut DataFile<W>,
    quantize: bool,
) -> Result<(Vec<u8>, Summary), String> {
    let model_fields = wire::fields(model)?;
    let graph_bytes = node::graph_of(&model_fields)?;
    let graph = wire::fields(graph_bytes)?;

    let mut initializers: HashMap<&str, Tensor<'_>> = HashMap::new();
    for field in graph.iter().filter(|f| f.number == INITIALIZER) {
        let t = Tensor::parse(field.bytes().unwrap_or_default())?;
        initializers.insert(t.name, t);
    }
    let external = initializers.values().any(|t| t.external.is_some());
    let mut nodes = Vec::new();
    let mut uses: HashMap<&str, usize> = HashMap::new();
    let mut subgraphs = false;
    for field in graph.iter().filter(|f| f.number == NODE) {
        let node = Node::parse(field.bytes().unwrap_or_default())?;
        node.inputs
            .iter()
            .for_each(|i| *uses.entry(i).or_default() += 1);
        subgraphs |= node.has_subgraph()?;
        nodes.push(node);
    }
    let graph_inputs: HashSet<String> = node::value_names(&graph, GRAPH_INPUT)?
        .into_iter()
        .collect();
    let graph_outputs: HashSet<String> = node::value_names(&graph, GRAPH_OUTPUT)?
        .into_iter()
        .collect();

    let mut summary = Summary::default();
    let mut quantized: HashMap<&str, [String; 3]> = HashMap::new();
    let mut new_tensors: Vec<Vec<u8>> = Vec::new();
    let mut rewritten: Vec<Option<Vec<u8>>> = Vec::with_capacity(nodes.len());
    let mut rewritten_uses: HashMap<&str, usize> = HashMap::new();
    for node in &nodes {
        let weight = match (node.op_type, node.domain, node.inputs.as_slice()) {
            ("MatMul", "" | "ai.onnx", [_, w]) if quantize => initializers.get(w).filter(|t| {
                t.data_type == FLOAT && t.dims.len() == 2 && t.dims.iter().all(|d| *d > 0)
            }),
            _ => None,
        };
        let Some(weight) = weight else {
            rewritten.push(None);
            continue;
        };
        if !quantized.contains_key(weight.name) {
            let (k, n) = (weight.dims[0] as usize, weight.dims[1] as usize);
            let (q, scales) = quantize_columns(&weight.floats(folder)?, k, n);
            let stem = format!("discl_int8/{}", summary.weights);
            let names = [
                format!("{stem}/weight"),
                format!("{stem}/scale"),
                format!("{stem}/zero_point"),
            ];
            let q_bytes: Vec<u8> = q.iter().map(|v| *v as u8).collect();
            let scale_bytes: Vec<u8> = scales.iter().flat_map(|s| s.to_le_bytes()).collect();
            new_tensors.push(tensor::encode(
                &names[0],
                INT8,
                &weight.dims,
                &q_bytes,
                external.then_some(&mut *data),
            )?);
            new_tensors.push(tensor::encode::<W>(
                &names[1],
                FLOAT,
                &[n as u64],
                &scale_bytes,
                None,
            )?);
            new_tensors.push(tensor::encode::<W>(
                &names[2],
                INT8,
                &[n as u64],
                &vec![0u8; n],
                None,
            )?);
            quantized.insert(weight.name, names);
            summary.weights += 1;
        }
        let names = &quantized[weight.name];
        rewritten.push(Some(dynamic_quantized(
            node,
            [node.inputs[0], &names[0], &names[1], &names[2]],
        )));
        *rewritten_uses.entry(weight.name).or_default() += 1;
        summary.matmuls += 1;
    }

    let dropped = |name: &str| {
        rewritten_uses
            .get(name)
            .is_some_and(|n| uses.get(name) == Some(n))
            && !subgraphs
            && !graph_inputs.contains(name)
            && !graph_outputs.contains(name)
    };
    summary.kept = quantized.keys().filter(|name| !dropped(name)).count();
    let mut new_graph = Vec::with_capacity(graph_bytes.len());
    let mut next_node = rewritten.into_iter();
    for field in &graph {
        match field.number {
            NODE => match next_node.next().flatten() {
                Some(bytes) => wire::put_bytes(&mut new_graph, NODE, &bytes),
                None => wire::put(&mut new_graph, field),
            },
            INITIALIZER => {
                let t = Tensor::parse(field.bytes().unwrap_or_default())?;
                if dropped(t.name) {
                    continue;
                }
                match t.external {
                    Some(_) => wire::put_bytes(
                        &mut new_graph,
                        INITIALIZER,
                        &tensor::relocate(&t, folder, data)?,
                    ),
                    None => wire::put(&mut new_graph, field),
                }
            }
            _ => wire::put(&mut new_graph, field),
        }
    }
    new_tensors
        .iter()
        .for_each(|t| wire::put_bytes(&mut new_graph, INITIALIZER, t));

    let out = node::model_with_graph(&model_fields, &new_graph, summary.matmuls > 0)?;
    Ok((out, summary))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_scale_by_their_own_largest_value() {
        // [K = 2, N = 3]: column 1 is all zeros, column 2 reaches -4.
        let w = [1.0, 0.0, -4.0, -0.5, 0.0, 2.0];
        let (q, scales) = quantize_columns(&w, 2, 3);
        assert_eq!(scales, [1.0 / 127.0, 1.0, 4.0 / 127.0]);
        assert_eq!(q, [127, 0, -127, -64, 0, 64]);
        for (i, (q, w)) in q.iter().zip(w).enumerate() {
            let back = *q as f32 * scales[i % 3];
            assert!(
                (back - w).abs() <= scales[i % 3] / 2.0 + 1e-6,
                "{i}: {back} vs {w}"
            );
        }
    }
}
