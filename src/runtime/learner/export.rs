//! Writes the learner as an ONNX model (`model.onnx`) and its `discl.toml`, in the layout of
//! `models/fashion-cnn`, so [`Classifier::open`](crate::runtime::Classifier::open) opens it
//! unchanged. The protobuf is encoded by hand: the graph is a short chain of Conv (batch norm
//! folded in), Relu, MaxPool, GlobalAveragePool, Flatten and Gemm with float initialisers,
//! which needs only varints, length-delimited fields and a few message types of onnx.proto.

use super::error::{LearnerError, TensorContext};
use super::net::{Folded, POOL_AFTER};
use crate::runtime::image_input::ImageSpec;
use candle_core::Tensor;
use serde::Serialize;
use std::path::Path;

/// The opset and IR version written (those of the shipped export).
pub const OPSET: u64 = 17;
const IR_VERSION: u64 = 8;
/// ONNX's FLOAT element type.
const FLOAT: u64 = 1;
/// Attribute types of onnx.proto.
const ATTR_INT: u64 = 2;
const ATTR_INTS: u64 = 7;

/// A protobuf message under construction.
#[derive(Default)]
struct Msg(Vec<u8>);

impl Msg {
    fn raw_varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }
    fn varint(&mut self, field: u64, v: u64) -> &mut Self {
        self.raw_varint(field << 3);
        self.raw_varint(v);
        self
    }
    fn bytes(&mut self, field: u64, b: &[u8]) -> &mut Self {
        self.raw_varint((field << 3) | 2);
        self.raw_varint(b.len() as u64);
        self.0.extend_from_slice(b);
        self
    }
    fn string(&mut self, field: u64, s: &str) -> &mut Self {
        self.bytes(field, s.as_bytes())
    }
    fn msg(&mut self, field: u64, m: &Msg) -> &mut Self {
        self.bytes(field, &m.0)
    }
}

/// A float tensor initialiser (TensorProto: dims 1, data_type 2, name 8, raw_data 9).
fn initializer(name: &str, t: &Tensor) -> Result<Msg, LearnerError> {
    let mut m = Msg::default();
    for &d in t.dims() {
        m.varint(1, d as u64);
    }
    m.varint(2, FLOAT).string(8, name);
    let values = t
        .flatten_all()
        .and_then(|t| t.to_vec1::<f32>())
        .ctx("export weights")?;
    let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    m.bytes(9, &raw);
    Ok(m)
}

/// A float tensor's ValueInfoProto; `None` dims are the symbolic `batch`.
fn value_info(name: &str, dims: &[Option<usize>]) -> Msg {
    let mut shape = Msg::default();
    for d in dims {
        let mut dim = Msg::default();
        match d {
            Some(v) => dim.varint(1, *v as u64),
            None => dim.string(2, "batch"),
        };
        shape.msg(1, &dim);
    }
    let mut tensor = Msg::default();
    tensor.varint(1, FLOAT).msg(2, &shape);
    let mut ty = Msg::default();
    ty.msg(1, &tensor);
    let mut info = Msg::default();
    info.string(1, name).msg(2, &ty);
    info
}

enum Attr<'a> {
    Int(&'a str, i64),
    Ints(&'a str, &'a [i64]),
}

/// A NodeProto (input 1, output 2, name 3, op_type 4, attribute 5).
fn node(op: &str, name: &str, inputs: &[&str], output: &str, attrs: &[Attr]) -> Msg {
    let mut m = Msg::default();
    for i in inputs {
        m.string(1, i);
    }
    m.string(2, output).string(3, name).string(4, op);
    for a in attrs {
        let mut attr = Msg::default();
        match a {
            Attr::Int(n, v) => {
                attr.string(1, n).varint(3, *v as u64).varint(20, ATTR_INT);
            }
            Attr::Ints(n, vs) => {
                attr.string(1, n);
                for v in *vs {
                    attr.varint(8, *v as u64);
                }
                attr.varint(20, ATTR_INTS);
            }
        }
        m.msg(5, &attr);
    }
    m
}

/// The serialised ModelProto of the folded network for images of `spec`.
pub fn model_bytes(net: &Folded, spec: &ImageSpec, input: &str) -> Result<Vec<u8>, LearnerError> {
    let mut graph = Msg::default();
    let mut current = input.to_string();
    let mut inits = Vec::new();
    for (i, (w, b)) in net.convs.iter().enumerate() {
        let (wn, bn) = (format!("block{i}.weight"), format!("block{i}.bias"));
        inits.push(initializer(&wn, w)?);
        inits.push(initializer(&bn, b)?);
        let conv = format!("block{i}.conv");
        graph.msg(
            1,
            &node(
                "Conv",
                &conv,
                &[&current, &wn, &bn],
                &conv,
                &[
                    Attr::Ints("kernel_shape", &[3, 3]),
                    Attr::Ints("pads", &[1, 1, 1, 1]),
                    Attr::Ints("strides", &[1, 1]),
                ],
            ),
        );
        let relu = format!("block{i}.relu");
        graph.msg(1, &node("Relu", &relu, &[&conv], &relu, &[]));
        current = relu;
        if POOL_AFTER.contains(&i) {
            let pool = format!("block{i}.pool");
            let attrs = [
                Attr::Ints("kernel_shape", &[2, 2]),
                Attr::Ints("strides", &[2, 2]),
            ];
            graph.msg(1, &node("MaxPool", &pool, &[&current], &pool, &attrs));
            current = pool;
        }
    }
    graph.msg(
        1,
        &node("GlobalAveragePool", "gap", &[&current], "gap", &[]),
    );
    graph.msg(
        1,
        &node(
            "Flatten",
            "flatten",
            &["gap"],
            "features",
            &[Attr::Int("axis", 1)],
        ),
    );
    inits.push(initializer("head.weight", &net.head_weight)?);
    inits.push(initializer("head.bias", &net.head_bias)?);
    graph.msg(
        1,
        &node(
            "Gemm",
            "head",
            &["features", "head.weight", "head.bias"],
            "logits",
            &[Attr::Int("transB", 1)],
        ),
    );
    graph.string(2, "discl-learner");
    for init in &inits {
        graph.msg(5, init);
    }
    let (classes, features) = (
        net.head_weight.dim(0).ctx("shape")?,
        net.head_weight.dim(1).ctx("shape")?,
    );
    let image = [
        None,
        Some(spec.channels),
        Some(spec.height),
        Some(spec.width),
    ];
    graph.msg(11, &value_info(input, &image));
    graph.msg(12, &value_info("logits", &[None, Some(classes)]));
    graph.msg(12, &value_info("features", &[None, Some(features)]));

    let mut opset = Msg::default();
    opset.string(1, "").varint(2, OPSET);
    let mut model = Msg::default();
    model
        .varint(1, IR_VERSION)
        .string(2, "discl")
        .string(3, env!("CARGO_PKG_VERSION"))
        .msg(7, &graph)
        .msg(8, &opset);
    Ok(model.0)
}

/// The `discl.toml` written beside the export (the keys of `models/fashion-cnn/discl.toml`).
#[derive(Serialize)]
struct Meta<'a> {
    kind: &'a str,
    onnx: &'a str,
    input: &'a str,
    input_shape: [usize; 3],
    mean: &'a [f32],
    std: &'a [f32],
    classes: &'a [String],
    outputs: Outputs<'a>,
}

#[derive(Serialize)]
struct Outputs<'a> {
    logits: &'a str,
    features: &'a str,
}

/// Writes `<folder>/model.onnx` and `<folder>/discl.toml`, creating the folder.
pub fn write(
    folder: &Path,
    net: &Folded,
    spec: &ImageSpec,
    classes: &[String],
) -> Result<(), LearnerError> {
    std::fs::create_dir_all(folder).map_err(|e| LearnerError::io(folder, e))?;
    let input = "input";
    let onnx = folder.join("model.onnx");
    let bytes = model_bytes(net, spec, input)?;
    std::fs::write(&onnx, bytes).map_err(|e| LearnerError::io(&onnx, e))?;
    let meta = Meta {
        kind: "classifier",
        onnx: "model.onnx",
        input,
        input_shape: [spec.channels, spec.height, spec.width],
        mean: &spec.mean,
        std: &spec.std,
        classes,
        outputs: Outputs {
            logits: "logits",
            features: "features",
        },
    };
    let text = toml::to_string(&meta)
        .map_err(|e| LearnerError::config(format!("cannot write discl.toml: {e}")))?;
    let file = folder.join(crate::runtime::model_meta::META_FILE);
    std::fs::write(&file, text).map_err(|e| LearnerError::io(&file, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_encode_as_protobuf_does() {
        let mut m = Msg::default();
        m.varint(1, 300);
        assert_eq!(m.0, [0x08, 0xac, 0x02]);
        let mut m = Msg::default();
        m.string(2, "hi");
        assert_eq!(m.0, [0x12, 2, b'h', b'i']);
        let mut m = Msg::default();
        m.varint(20, 7);
        assert_eq!(m.0, [0xa0, 0x01, 7]);
    }
}
