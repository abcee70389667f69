//! Checkpoints: one safetensors file holding every parameter (`block{i}.weight|gamma|beta`,
//! `head.weight|bias`), the batch-norm running statistics (`block{i}.running_mean|var`), the
//! AdamW moments (`adam.m.<name>`, `adam.v.<name>`) and the step and epoch counts
//! (`state.step`, `state.epoch`, i64), so a resumed learner continues bit for bit.

use super::error::{LearnerError, TensorContext};
use super::Learner;
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::path::Path;

pub fn save(learner: &Learner, path: &Path) -> Result<(), LearnerError> {
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    let params = learner.net.params();
    for (i, (name, var)) in params.iter().enumerate() {
        tensors.insert(name.clone(), var.as_tensor().clone());
        tensors.insert(format!("adam.m.{name}"), learner.optimiser.first[i].clone());
        tensors.insert(
            format!("adam.v.{name}"),
            learner.optimiser.second[i].clone(),
        );
    }
    for (i, b) in learner.net.blocks.iter().enumerate() {
        tensors.insert(format!("block{i}.running_mean"), b.running_mean.clone());
        tensors.insert(format!("block{i}.running_var"), b.running_var.clone());
    }
    let counter = |v: u64| Tensor::new(&[v as i64], &Device::Cpu).ctx("checkpoint counter");
    tensors.insert("state.step".into(), counter(learner.optimiser.step)?);
    tensors.insert("state.epoch".into(), counter(learner.epoch)?);
    candle_core::safetensors::save(&tensors, path).map_err(|e| LearnerError::Checkpoint {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

pub fn load(learner: &mut Learner, path: &Path) -> Result<(), LearnerError> {
    let fail = |message: String| LearnerError::Checkpoint {
        path: path.to_path_buf(),
        message,
    };
    if !path.exists() {
        return Err(LearnerError::io(
            path,
            std::io::Error::from(std::io::ErrorKind::NotFound),
        ));
    }
    let mut tensors =
        candle_core::safetensors::load(path, &Device::Cpu).map_err(|e| fail(e.to_string()))?;
    let mut take = |name: &str, like: &Tensor| -> Result<Tensor, LearnerError> {
        let t = tensors
            .remove(name)
            .ok_or_else(|| fail(format!("has no tensor `{name}`")))?;
        if t.dims() != like.dims() || t.dtype() != like.dtype() {
            return Err(fail(format!(
                "`{name}` is {:?} {:?}, this learner needs {:?} {:?}",
                t.dtype(),
                t.dims(),
                like.dtype(),
                like.dims()
            )));
        }
        Ok(t)
    };
    // Read everything before changing anything, so a bad file leaves the learner as it was.
    let params = learner.net.params();
    let mut values = Vec::new();
    for (i, (name, var)) in params.iter().enumerate() {
        values.push((
            take(name, var.as_tensor())?,
            take(&format!("adam.m.{name}"), &learner.optimiser.first[i])?,
            take(&format!("adam.v.{name}"), &learner.optimiser.second[i])?,
        ));
    }
    let mut stats = Vec::new();
    for (i, b) in learner.net.blocks.iter().enumerate() {
        stats.push((
            take(&format!("block{i}.running_mean"), &b.running_mean)?,
            take(&format!("block{i}.running_var"), &b.running_var)?,
        ));
    }
    let like = Tensor::new(&[0i64], &Device::Cpu).ctx("checkpoint counter")?;
    let counter = |t: Tensor| -> Result<u64, LearnerError> {
        Ok(t.to_vec1::<i64>().ctx("checkpoint counter")?[0].max(0) as u64)
    };
    let step = counter(take("state.step", &like)?)?;
    let epoch = counter(take("state.epoch", &like)?)?;
    for (i, ((_, var), (value, m, v))) in params.iter().zip(values).enumerate() {
        var.set(&value).ctx("restore a parameter")?;
        learner.optimiser.first[i] = m;
        learner.optimiser.second[i] = v;
    }
    for (b, (mean, var)) in learner.net.blocks.iter_mut().zip(stats) {
        b.running_mean = mean;
        b.running_var = var;
    }
    learner.optimiser.step = step;
    learner.epoch = epoch;
    Ok(())
}
