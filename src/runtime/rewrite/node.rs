//! The nodes of an ONNX graph as the rewrites read and write them: a node's fields kept as read
//! (so an untouched node is copied byte for byte), its operator, inputs, outputs and the
//! attributes the rewrites look at; and new nodes of ONNX Runtime's contrib operators.

use super::tensor::Tensor;
use super::wire::{self, Field, Value};

/// `ModelProto` and `GraphProto` field numbers.
pub const GRAPH: u32 = 7;
pub const OPSET_IMPORT: u32 = 8;
pub const NODE: u32 = 1;
pub const INITIALIZER: u32 = 5;
pub const GRAPH_INPUT: u32 = 11;
pub const GRAPH_OUTPUT: u32 = 12;

/// `NodeProto` field numbers.
pub const NODE_INPUT: u32 = 1;
const NODE_OUTPUT: u32 = 2;
const NODE_NAME: u32 = 3;
pub const NODE_OP_TYPE: u32 = 4;
const NODE_ATTRIBUTE: u32 = 5;
pub const NODE_DOMAIN: u32 = 7;

/// `AttributeProto` field numbers.
const ATTRIBUTE_NAME: u32 = 1;
const ATTRIBUTE_FLOAT: u32 = 2;
const ATTRIBUTE_INT: u32 = 3;
const ATTRIBUTE_TENSOR: u32 = 5;
const ATTRIBUTE_GRAPH: u32 = 6;
const ATTRIBUTE_INTS: u32 = 8;
const ATTRIBUTE_GRAPHS: u32 = 11;
const ATTRIBUTE_TYPE: u32 = 20;

/// The domain of ONNX Runtime's contrib operators.
pub const MICROSOFT: &str = "com.microsoft";

/// One node of a graph.
pub struct Node<'a> {
    pub fields: Vec<Field<'a>>,
    pub name: &'a str,
    pub op_type: &'a str,
    pub domain: &'a str,
    pub inputs: Vec<&'a str>,
    pub outputs: Vec<&'a str>,
}

impl<'a> Node<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<Self, String> {
        let fields = wire::fields(bytes)?;
        let text = |n: u32| fields.iter().find(|f| f.number == n).and_then(Field::text);
        let all = |n: u32| {
            fields
                .iter()
                .filter(|f| f.number == n)
                .map(|f| f.text().unwrap_or(""))
                .collect()
        };
        Ok(Node {
            name: text(NODE_NAME).unwrap_or(""),
            op_type: text(NODE_OP_TYPE).unwrap_or(""),
            domain: text(NODE_DOMAIN).unwrap_or(""),
            inputs: all(NODE_INPUT),
            outputs: all(NODE_OUTPUT),
            fields,
        })
    }

    /// Input `i`, when the node has it (a malformed node may have fewer than its operator's).
    pub fn input(&self, i: usize) -> Option<&'a str> {
        self.inputs.get(i).copied()
    }

    /// Whether this is the standard ONNX operator `op_type`.
    pub fn is(&self, op_type: &str) -> bool {
        self.op_type == op_type && matches!(self.domain, "" | "ai.onnx")
    }

    fn attributes(&self) -> impl Iterator<Item = Result<Vec<Field<'a>>, String>> + '_ {
        self.fields
            .iter()
            .filter(|f| f.number == NODE_ATTRIBUTE)
            .map(|f| wire::fields(f.bytes().unwrap_or_default()))
    }

    /// Whether an attribute holds a graph (`If`, `Loop`, `Scan`): names used inside it are
    /// not among the graph's node inputs.
    pub fn has_subgraph(&self) -> Result<bool, String> {
        for attribute in self.attributes() {
            if attribute?
                .iter()
                .any(|f| f.number == ATTRIBUTE_GRAPH || f.number == ATTRIBUTE_GRAPHS)
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The attribute called `name`, when the node has it and it reads.
    pub fn attribute(&self, name: &str) -> Option<Attribute<'a>> {
        self.attributes().filter_map(Result::ok).find_map(|fields| {
            let named = fields
                .iter()
                .any(|f| f.number == ATTRIBUTE_NAME && f.text() == Some(name));
            named.then_some(Attribute { fields })
        })
    }
}

/// One attribute of a node.
pub struct Attribute<'a> {
    fields: Vec<Field<'a>>,
}

impl<'a> Attribute<'a> {
    fn field(&self, number: u32) -> Option<&Field<'a>> {
        self.fields.iter().find(|f| f.number == number)
    }

    /// An `int` attribute.
    pub fn int(&self) -> Option<i64> {
        match self.field(ATTRIBUTE_INT) {
            Some(field) => field.varint().map(|v| v as i64),
            // An INT attribute (type 2) whose value is 0 may be written without it.
            None => (self.field(ATTRIBUTE_TYPE)?.varint()? == 2).then_some(0),
        }
    }

    /// A `float` attribute.
    pub fn float(&self) -> Option<f32> {
        match self.field(ATTRIBUTE_FLOAT)?.value {
            Value::Fixed32(bits) => Some(f32::from_bits(bits)),
            _ => None,
        }
    }

    /// An `ints` attribute, packed or not (an empty list when it has none).
    pub fn ints(&self) -> Option<Vec<i64>> {
        let values = wire::repeated_varints(&self.fields, ATTRIBUTE_INTS).ok()?;
        Some(values.into_iter().map(|v| v as i64).collect())
    }

    /// A `tensor` attribute.
    pub fn tensor(&self) -> Option<Tensor<'a>> {
        Tensor::parse(self.field(ATTRIBUTE_TENSOR)?.bytes()?).ok()
    }
}

/// An attribute value of a new node.
pub enum NewAttribute {
    Int(i64),
    Float(f32),
}

/// A new node of ONNX Runtime's contrib domain.
pub fn contrib_node(
    name: &str,
    op_type: &str,
    inputs: &[&str],
    outputs: &[&str],
    attributes: &[(&str, NewAttribute)],
) -> Vec<u8> {
    let mut out = Vec::new();
    for input in inputs {
        wire::put_bytes(&mut out, NODE_INPUT, input.as_bytes());
    }
    for output in outputs {
        wire::put_bytes(&mut out, NODE_OUTPUT, output.as_bytes());
    }
    wire::put_bytes(&mut out, NODE_NAME, name.as_bytes());
    wire::put_bytes(&mut out, NODE_OP_TYPE, op_type.as_bytes());
    for (key, value) in attributes {
        let mut attribute = Vec::new();
        wire::put_bytes(&mut attribute, ATTRIBUTE_NAME, key.as_bytes());
        // `AttributeProto.AttributeType`: FLOAT = 1, INT = 2.
        let kind = match value {
            NewAttribute::Float(v) => {
                let bits = Value::Fixed32(v.to_bits());
                wire::put(
                    &mut attribute,
                    &Field {
                        number: ATTRIBUTE_FLOAT,
                        value: bits,
                    },
                );
                1
            }
            NewAttribute::Int(v) => {
                wire::put_varint_field(&mut attribute, ATTRIBUTE_INT, *v as u64);
                2
            }
        };
        wire::put_varint_field(&mut attribute, ATTRIBUTE_TYPE, kind);
        wire::put_bytes(&mut out, NODE_ATTRIBUTE, &attribute);
    }
    wire::put_bytes(&mut out, NODE_DOMAIN, MICROSOFT.as_bytes());
    out
}

/// The graph of a model (a `ModelProto`'s fields): its bytes.
pub fn graph_of<'a>(model: &[Field<'a>]) -> Result<&'a [u8], String> {
    model
        .iter()
        .find(|f| f.number == GRAPH)
        .and_then(Field::bytes)
        .ok_or_else(|| "the file has no graph".to_string())
}

/// The names in the `ValueInfoProto`s numbered `number` of a graph (its inputs or outputs).
pub fn value_names(graph: &[Field<'_>], number: u32) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for field in graph.iter().filter(|f| f.number == number) {
        let info = wire::fields(field.bytes().unwrap_or_default())?;
        if let Some(name) = info.iter().find(|f| f.number == 1).and_then(Field::text) {
            out.push(name.to_string());
        }
    }
    Ok(out)
}

/// `model` (a `ModelProto`'s fields) with `graph` as its graph, importing ONNX Runtime's
/// contrib domain when `contrib` and the model does not already.
pub fn model_with_graph(
    model: &[Field<'_>],
    graph: &[u8],
    contrib: bool,
) -> Result<Vec<u8>, String> {
    let mut has_microsoft = false;
    for field in model.iter().filter(|f| f.number == OPSET_IMPORT) {
        let opset = wire::fields(field.bytes().unwrap_or_default())?;
        has_microsoft |= opset
            .iter()
            .any(|f| f.number == 1 && f.text() == Some(MICROSOFT));
    }
    let mut out = Vec::with_capacity(graph.len() + 1024);
    wire::put_replacing(&mut out, model, GRAPH, graph);
    if contrib && !has_microsoft {
        let mut opset = Vec::new();
        wire::put_bytes(&mut opset, 1, MICROSOFT.as_bytes());
        wire::put_varint_field(&mut opset, 2, 1);
        wire::put_bytes(&mut out, OPSET_IMPORT, &opset);
    }
    Ok(out)
}

/// The version of the standard ONNX domain the model imports.
pub fn onnx_opset(model: &[Field<'_>]) -> Result<Option<u64>, String> {
    for field in model.iter().filter(|f| f.number == OPSET_IMPORT) {
        let opset = wire::fields(field.bytes().unwrap_or_default())?;
        let domain = opset.iter().find(|f| f.number == 1).and_then(Field::text);
        if matches!(domain, None | Some("") | Some("ai.onnx")) {
            return Ok(opset.iter().find(|f| f.number == 2).and_then(Field::varint));
        }
    }
    Ok(None)
}
