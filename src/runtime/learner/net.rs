//! The learner's network, the shape of `models/fashion-cnn` (training/train_cnn.py): five
//! 3×3 conv–batch-norm–ReLU blocks of widths 32, 32 | 64, 64 | 128 with a 2×2 max-pool after the
//! second and fourth, global average pooling to the 128-d `features`, dropout 0.2 and a linear
//! head to the `logits`: 140,458 parameters for one grey channel and ten classes.
//!
//! Training uses batch statistics and updates running ones (momentum 0.1, as PyTorch); inference
//! folds each batch norm into its convolution (a weight scale and a bias), which is also the
//! graph the ONNX export writes, so the two compute the same thing.

use super::error::{LearnerError, TensorContext};
use super::im2col::im2col3x3;
use super::keyed::{key, purpose, Stream};
use candle_core::{DType, Device, Tensor, Var, D};

/// Output channels of the convolutions; a 2×2 max-pool follows the blocks listed in [`POOL_AFTER`].
pub const WIDTHS: [usize; 5] = [32, 32, 64, 64, 128];
/// Blocks followed by a max-pool.
pub const POOL_AFTER: [usize; 2] = [1, 3];
const BN_EPS: f64 = 1e-5;
const BN_MOMENTUM: f64 = 0.1;
const DROPOUT: f32 = 0.2;

/// One conv–batch-norm block.
pub struct Block {
    pub weight: Var,
    pub gamma: Var,
    pub beta: Var,
    pub running_mean: Tensor,
    pub running_var: Tensor,
}

/// The parameters and batch-norm statistics.
pub struct Net {
    pub blocks: Vec<Block>,
    pub head_weight: Var,
    pub head_bias: Var,
}

/// An inference-ready copy: batch norm folded into conv weights and biases.
pub struct Folded {
    pub convs: Vec<(Tensor, Tensor)>,
    pub head_weight: Tensor,
    pub head_bias: Tensor,
}

fn uniform(shape: &[usize], bound: f32, seed: u64, index: u64) -> Result<Tensor, LearnerError> {
    let mut stream = Stream::new(key(&[seed, purpose::INIT, index]));
    let n: usize = shape.iter().product();
    let values: Vec<f32> = (0..n)
        .map(|_| (stream.unit() * 2.0 - 1.0) * bound)
        .collect();
    Tensor::from_vec(values, shape, &Device::Cpu).ctx("initialise weights")
}

fn full(n: usize, value: f32) -> Result<Tensor, LearnerError> {
    Tensor::from_vec(vec![value; n], n, &Device::Cpu).ctx("initialise batch norm")
}

fn var(t: Tensor) -> Result<Var, LearnerError> {
    Var::from_tensor(&t).ctx("make a parameter")
}

impl Net {
    /// Fresh weights: PyTorch's defaults (uniform ±1/√fan_in for convolutions and the head,
    /// γ = 1, β = 0), drawn from keyed streams of `seed`.
    /// `widths`: output channels of the five blocks ([`WIDTHS`] is fashion-cnn's).
    pub fn new(
        channels: usize,
        classes: usize,
        widths: [usize; 5],
        seed: u64,
    ) -> Result<Net, LearnerError> {
        let mut blocks = Vec::new();
        let mut c_in = channels;
        for (i, &c_out) in widths.iter().enumerate() {
            let fan_in = (c_in * 9) as f32;
            blocks.push(Block {
                weight: var(uniform(
                    &[c_out, c_in, 3, 3],
                    fan_in.powf(-0.5),
                    seed,
                    i as u64,
                )?)?,
                gamma: var(full(c_out, 1.0)?)?,
                beta: var(full(c_out, 0.0)?)?,
                running_mean: full(c_out, 0.0)?,
                running_var: full(c_out, 1.0)?,
            });
            c_in = c_out;
        }
        let features = widths[4];
        let bound = (features as f32).powf(-0.5);
        Ok(Net {
            blocks,
            head_weight: var(uniform(&[classes, features], bound, seed, 100)?)?,
            head_bias: var(uniform(&[classes], bound, seed, 101)?)?,
        })
    }

    /// Every trainable parameter with its checkpoint name, in a fixed order.
    pub fn params(&self) -> Vec<(String, &Var)> {
        let mut out = Vec::new();
        for (i, b) in self.blocks.iter().enumerate() {
            out.push((format!("block{i}.weight"), &b.weight));
            out.push((format!("block{i}.gamma"), &b.gamma));
            out.push((format!("block{i}.beta"), &b.beta));
        }
        out.push(("head.weight".into(), &self.head_weight));
        out.push(("head.bias".into(), &self.head_bias));
        out
    }

    /// Number of trainable values.
    pub fn parameter_count(&self) -> usize {
        self.params().iter().map(|(_, v)| v.elem_count()).sum()
    }

    /// The training forward pass on a batch `x` of shape (n, c, h, w): batch statistics (and
    /// the running ones updated), dropout from `dropout_key`. Returns the logits.
    pub fn forward_train(&mut self, x: &Tensor, dropout_key: u64) -> Result<Tensor, LearnerError> {
        let mut h = channels_first(x).ctx("layout")?;
        for (i, b) in self.blocks.iter_mut().enumerate() {
            let y = conv3x3(&h, b.weight.as_tensor()).ctx("convolution")?;
            let dims = y.dims4().ctx("shape")?;
            let (c, n, hh, ww) = dims;
            // (c, n·h·w): the statistics and broadcasts run along the contiguous last dimension.
            let y = y.reshape((c, n * hh * ww)).ctx("batch norm")?;
            let mean = y.mean_keepdim(1).ctx("batch mean")?;
            let centred = y.broadcast_sub(&mean).ctx("batch norm")?;
            let var = centred
                .sqr()
                .ctx("batch var")?
                .mean_keepdim(1)
                .ctx("batch var")?;
            let inv = (var.clone() + BN_EPS)
                .ctx("batch norm")?
                .sqrt()
                .ctx("batch norm")?
                .recip()
                .ctx("batch norm")?;
            let gamma = b.gamma.as_tensor().reshape((c, 1)).ctx("batch norm")?;
            let beta = b.beta.as_tensor().reshape((c, 1)).ctx("batch norm")?;
            let y = centred
                .broadcast_mul(&inv.broadcast_mul(&gamma).ctx("batch norm")?)
                .ctx("batch norm")?
                .broadcast_add(&beta)
                .ctx("batch norm")?
                .reshape(dims)
                .ctx("batch norm")?;
            // Running statistics (unbiased variance), outside the graph.
            let count = (n * hh * ww) as f64;
            let unbias = if count > 1.0 {
                count / (count - 1.0)
            } else {
                1.0
            };
            let update = |running: &Tensor, batch: &Tensor, scale: f64| {
                let batch = batch
                    .detach()
                    .flatten_all()?
                    .affine(BN_MOMENTUM * scale, 0.0)?;
                running.affine(1.0 - BN_MOMENTUM, 0.0)? + batch
            };
            b.running_mean = update(&b.running_mean, &mean, 1.0).ctx("running mean")?;
            b.running_var = update(&b.running_var, &var, unbias).ctx("running var")?;
            h = y.relu().ctx("relu")?;
            if POOL_AFTER.contains(&i) {
                h = h.max_pool2d(2).ctx("max-pool")?;
            }
        }
        let features = average_pool(&h)?;
        let (n, f) = features.dims2().ctx("shape")?;
        let mut stream = Stream::new(dropout_key);
        let keep = 1.0 - DROPOUT;
        let mask: Vec<f32> = (0..n * f)
            .map(|_| {
                if stream.unit() < keep {
                    1.0 / keep
                } else {
                    0.0
                }
            })
            .collect();
        let mask = Tensor::from_vec(mask, (n, f), &Device::Cpu).ctx("dropout")?;
        let features = features.mul(&mask).ctx("dropout")?;
        linear(
            &features,
            self.head_weight.as_tensor(),
            self.head_bias.as_tensor(),
        )
    }

    /// Batch norm folded into the convolutions, with the running statistics.
    pub fn fold(&self) -> Result<Folded, LearnerError> {
        let mut convs = Vec::new();
        for b in &self.blocks {
            let scale = (b.running_var.clone() + BN_EPS)
                .and_then(|v| v.sqrt())
                .and_then(|s| b.gamma.as_tensor().div(&s))
                .ctx("fold batch norm")?;
            let bias = b
                .beta
                .as_tensor()
                .sub(&b.running_mean.mul(&scale).ctx("fold")?)
                .ctx("fold")?;
            let c = scale.dim(0).ctx("shape")?;
            let weight = b
                .weight
                .as_tensor()
                .broadcast_mul(&scale.reshape((c, 1, 1, 1)).ctx("fold")?)
                .ctx("fold batch norm")?;
            convs.push((weight.detach(), bias.detach()));
        }
        Ok(Folded {
            convs,
            head_weight: self.head_weight.as_tensor().detach(),
            head_bias: self.head_bias.as_tensor().detach(),
        })
    }
}

impl Folded {
    /// Inference: (logits, features) for a batch `x` of shape (n, c, h, w).
    pub fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor), LearnerError> {
        let mut h = channels_first(x).ctx("layout")?;
        for (i, (w, b)) in self.convs.iter().enumerate() {
            let c = b.dim(0).ctx("shape")?;
            h = conv3x3(&h, w)
                .and_then(|y| y.broadcast_add(&b.reshape((c, 1, 1, 1))?))
                .and_then(|y| y.relu())
                .ctx("convolution")?;
            if POOL_AFTER.contains(&i) {
                h = h.max_pool2d(2).ctx("max-pool")?;
            }
        }
        let features = average_pool(&h)?;
        let logits = linear(&features, &self.head_weight, &self.head_bias)?;
        Ok((logits, features))
    }
}

/// A batch (n, c, h, w) in the network's layout (c, n, h, w): channels first, so that a
/// convolution is one matrix product over the whole batch and batch norm's statistics are
/// sums along a contiguous row. (In candle, sums over dimensions (0, 2, 3) of (n, c, h, w),
/// and the gradients of the broadcasts they feed, were 56% of an epoch; this layout made an
/// epoch 2.1× faster: `cargo bench --bench learner`, 10.5 → 5.0 s.)
fn channels_first(x: &Tensor) -> candle_core::Result<Tensor> {
    x.transpose(0, 1)?.contiguous()
}

/// Global average pooling of (c, n, h, w) to the (n, c) features.
fn average_pool(h: &Tensor) -> Result<Tensor, LearnerError> {
    h.mean((2, 3))
        .and_then(|f| f.t())
        .and_then(|f| f.contiguous())
        .ctx("average pool")
}

/// A 3×3 convolution, stride 1, padding 1, of `x` in the (c, n, h, w) layout, giving
/// (c_out, n, h, w): [`im2col3x3`] and one matrix product over the whole batch. (candle's own
/// `conv2d` backward runs a direct `conv_transpose2d` loop that made an epoch several times
/// slower.)
pub fn conv3x3(x: &Tensor, weight: &Tensor) -> candle_core::Result<Tensor> {
    let (c, n, h, w) = x.dims4()?;
    let c_out = weight.dim(0)?;
    let kernel = weight.reshape((c_out, c * 9))?;
    kernel.matmul(&im2col3x3(x)?)?.reshape((c_out, n, h, w))
}

fn linear(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor, LearnerError> {
    x.matmul(&weight.t().ctx("linear")?)
        .and_then(|y| y.broadcast_add(bias))
        .ctx("linear")
}

/// Mean cross-entropy of `logits` (n, k) against one-hot rows, and the number of rows whose
/// arg-max is the label.
pub fn cross_entropy(logits: &Tensor, labels: &[usize]) -> Result<(Tensor, usize), LearnerError> {
    let (n, k) = logits.dims2().ctx("shape")?;
    let mut onehot = vec![0f32; n * k];
    for (row, &label) in labels.iter().enumerate() {
        onehot[row * k + label] = 1.0;
    }
    let onehot = Tensor::from_vec(onehot, (n, k), &Device::Cpu).ctx("one-hot")?;
    let lse = logits.log_sum_exp(D::Minus1).ctx("log-softmax")?;
    let log_p = logits
        .broadcast_sub(&lse.unsqueeze(1).ctx("log-softmax")?)
        .ctx("log-softmax")?;
    let loss = log_p
        .mul(&onehot)
        .and_then(|t| t.sum_all())
        .and_then(|t| t.affine(-1.0 / n as f64, 0.0))
        .ctx("loss")?;
    let predicted = logits
        .argmax(D::Minus1)
        .ctx("arg-max")?
        .to_vec1::<u32>()
        .ctx("arg-max")?;
    let correct = predicted
        .iter()
        .zip(labels)
        .filter(|(p, l)| **p as usize == **l)
        .count();
    Ok((loss, correct))
}

/// Zeros like `t` (an optimiser moment).
pub fn zeros_like(t: &Tensor) -> Result<Tensor, LearnerError> {
    Tensor::zeros(t.shape(), DType::F32, &Device::Cpu).ctx("zeros")
}
