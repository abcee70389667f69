//! AdamW with PyTorch's semantics (decoupled weight decay, bias-corrected moments), its state
//! kept in named tensors so a checkpoint can resume training exactly.

use super::error::{LearnerError, TensorContext};
use super::net::zeros_like;
use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

/// Adam's β₁, β₂ and ε (PyTorch's defaults).
const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const EPS: f64 = 1e-8;

/// The moments of every parameter and the step count.
pub struct AdamW {
    pub first: Vec<Tensor>,
    pub second: Vec<Tensor>,
    pub step: u64,
}

impl AdamW {
    /// Zero moments for `params`.
    pub fn new(params: &[(String, &Var)]) -> Result<AdamW, LearnerError> {
        let first = params
            .iter()
            .map(|(_, v)| zeros_like(v.as_tensor()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(AdamW {
            second: first.clone(),
            first,
            step: 0,
        })
    }

    /// One step on every parameter with a gradient.
    pub fn step(
        &mut self,
        params: &[(String, &Var)],
        grads: &GradStore,
        lr: f64,
        weight_decay: f64,
    ) -> Result<(), LearnerError> {
        self.step += 1;
        let t = self.step as i32;
        let correct1 = 1.0 - BETA1.powi(t);
        let correct2 = 1.0 - BETA2.powi(t);
        for (i, (_, var)) in params.iter().enumerate() {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            let m = (self.first[i].affine(BETA1, 0.0).ctx("adam")?
                + g.affine(1.0 - BETA1, 0.0).ctx("adam")?)
            .ctx("adam")?;
            let v = (self.second[i].affine(BETA2, 0.0).ctx("adam")?
                + g.sqr()
                    .and_then(|g2| g2.affine(1.0 - BETA2, 0.0))
                    .ctx("adam")?)
            .ctx("adam")?;
            let denom = v
                .affine(1.0 / correct2, 0.0)
                .and_then(|v| v.sqrt())
                .and_then(|s| s.affine(1.0, EPS))
                .ctx("adam")?;
            let update = m
                .affine(lr / correct1, 0.0)
                .and_then(|m| m.div(&denom))
                .ctx("adam")?;
            let p = var
                .as_tensor()
                .affine(1.0 - lr * weight_decay, 0.0)
                .and_then(|p| p.sub(&update))
                .ctx("adam")?;
            var.set(&p).ctx("adam")?;
            self.first[i] = m;
            self.second[i] = v;
        }
        Ok(())
    }
}
