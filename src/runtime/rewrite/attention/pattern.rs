//! Finding the attention blocks of a graph: from each `Softmax`, back through the scaled
//! product of query and key to their head-splitting reshapes, and forward through the product
//! with the value to the reshape merging the heads; the scale checked to be PyTorch's default
//! (computed from the query's shape) or read from constants.

use super::super::node::Node;
use super::super::tensor::Tensor;
use std::collections::HashMap;

/// How the scores are scaled before the softmax.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Scale {
    /// 1/√D, `MultiHeadAttention`'s own default.
    Default,
    Fixed(f32),
}

/// One attention block to replace: the node at `at` (the final reshape) becomes the fused one.
pub(super) struct Fusion<'a> {
    pub(super) at: usize,
    pub(super) query: &'a str,
    pub(super) key: &'a str,
    pub(super) value: &'a str,
    pub(super) output: &'a str,
    pub(super) heads: i64,
    pub(super) scale: Scale,
}

/// A graph's nodes indexed by what they make and what they read, and its initializers.
pub(super) struct Graph<'a> {
    pub(super) nodes: Vec<Node<'a>>,
    pub(super) producer: HashMap<&'a str, usize>,
    pub(super) consumers: HashMap<&'a str, Vec<usize>>,
    pub(super) initializers: HashMap<&'a str, Tensor<'a>>,
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
        // Bounded: a malformed graph may chain casts in a cycle.
        for _ in 0..self.nodes.len() {
            match self.made_by(name, "Cast").and_then(|cast| cast.input(0)) {
                Some(input) => name = input,
                None => break,
            }
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
        let reshape = self.made_by(transpose.input(0)?, "Reshape")?;
        Some((
            reshape.input(0)?,
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
        self.heads_split(transpose.input(0)?, &[0, 2, 1, 3])
    }

    /// H of a reshape to `[B, S, H, D]`: a constant shape, or a `Concat` of four pieces whose
    /// third is a constant.
    fn heads_in_shape(&self, shape: &str) -> Option<i64> {
        let heads = match self.ints(shape) {
            Some(dims) if dims.len() == 4 => dims[2],
            Some(_) => return None,
            None => {
                let pieces = self.concat_pieces(shape)?;
                (pieces.len() == 4 && pieces.iter().all(|(len, _)| *len == 1)).then_some(())?;
                match self.ints(pieces[2].1)?.as_slice() {
                    [h] => *h,
                    _ => return None,
                }
            }
        };
        (heads > 0).then_some(heads)
    }

    /// Whether a reshape's `shape` has three entries.
    fn is_rank3_shape(&self, shape: &str) -> bool {
        match self.ints(shape) {
            Some(dims) => dims.len() == 3,
            None => self
                .concat_pieces(shape)
                .is_some_and(|pieces| pieces.iter().map(|(len, _)| len).sum::<usize>() == 3),
        }
    }

    /// The pieces of a shape made by `Concat` on axis 0: each one's length and name.
    fn concat_pieces(&self, shape: &str) -> Option<Vec<(usize, &'a str)>> {
        let concat = self.made_by(shape, "Concat")?;
        (concat.attribute("axis")?.int()? == 0).then_some(())?;
        concat
            .inputs
            .iter()
            .map(|piece| match self.ints(piece) {
                Some(values) => Some((values.len(), *piece)),
                // A scalar made one-element: how exporters build shapes from `Shape` lookups.
                None => self.made_by(piece, "Unsqueeze").map(|_| (1, *piece)),
            })
            .collect()
    }

    /// Whether `name` is the last dimension of one of `tensors`, as a one-element tensor.
    fn is_last_dim(&self, name: &str, tensors: &[&str]) -> bool {
        let last_dim = || {
            let node = self.producer(name)?;
            let shape_of = |name: &str| {
                let shape = self.made_by(name, "Shape")?;
                tensors.contains(&shape.input(0)?).then_some(shape)
            };
            if node.is("Shape") {
                shape_of(node.outputs.first()?)?;
                return Some(
                    node.attribute("start").and_then(|a| a.int()) == Some(-1)
                        && node.attribute("end").is_none(),
                );
            }
            let shape = shape_of(node.input(0)?)?;
            let whole = shape.attribute("start").is_none() && shape.attribute("end").is_none();
            let arg = |i: usize| {
                node.input(i)
                    .filter(|n| !n.is_empty())
                    .map(|n| self.ints(n))
            };
            let (starts, ends) = (arg(1).flatten(), arg(2).flatten());
            Some(
                node.is("Slice")
                    && whole
                    && starts.as_deref() == Some(&[-1])
                    && matches!(ends.as_deref(), Some([end]) if *end >= i64::from(i32::MAX))
                    && arg(3).is_none_or(|axes| axes.as_deref() == Some(&[0][..]))
                    && arg(4).is_none_or(|steps| steps.as_deref() == Some(&[1][..])),
            )
        };
        last_dim() == Some(true)
    }

    /// Whether `name` is √(1/√D) computed from the query's shape: the factor PyTorch's export
    /// multiplies query and key by for `scaled_dot_product_attention`'s default scale.
    fn is_default_root(&self, name: &'a str, query: &[&str]) -> bool {
        let step = |name: &'a str, op: &str| self.made_by(self.through_casts(name), op);
        let root = || {
            let outer = step(name, "Sqrt")?;
            let div = step(outer.input(0)?, "Div")?;
            let inner = step(div.input(1)?, "Sqrt")?;
            Some(
                self.float(self.through_casts(div.input(0)?)) == Some(1.0)
                    && self.is_last_dim(self.through_casts(inner.input(0)?), query),
            )
        };
        root() == Some(true)
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

    /// The attention block around `softmax` (a model of ONNX `opset`), when it has the form
    /// `MultiHeadAttention` can replace.
    pub(super) fn find(&self, softmax: &Node<'a>, opset: u64) -> Option<Fusion<'a>> {
        let axis = softmax.attribute("axis").and_then(|a| a.int());
        let last_axis = matches!(axis, Some(-1) | Some(3)) || (axis.is_none() && opset >= 13);
        last_axis.then_some(())?;
        // Scores, maybe scaled after the product by a constant.
        let mut scores = softmax.input(0)?;
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
        let split = [q, self.producer(q)?.input(0)?];
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
        (weighted.is("MatMul") && Some(&probabilities) == softmax.outputs.first()).then_some(())?;
        let (value, value_heads) = self.heads_split(v, &[0, 2, 1, 3])?;
        (heads == key_heads && heads == value_heads).then_some(())?;
        let (_, merge) = self.only_reader(weighted.outputs.first()?)?;
        let merged = merge.outputs.first()?;
        (self.perm(merged)?.1 == [0, 2, 1, 3]).then_some(())?;
        let (at, reshape) = self.only_reader(merged)?;
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
