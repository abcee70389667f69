//! An ONNX image classifier described by a `discl.toml`: checks the file's inputs and outputs
//! against the metadata, runs batches, and turns logits into (p_true, loss, predicted). Its
//! digest, computed once when it opens, covers everything that decides a score (the ONNX file,
//! any external-data files beside it, and the metadata); `classify` puts it in its memo key.

use super::error::RuntimeError;
use super::image_input::{decode_into, ImageSpec};
use super::input_file::{read_regular, MAX_CHECKED_INPUT_BYTES};
use super::model_meta::{ModelMeta, META_FILE};
use super::onnx::{self, SessionOptions};
use super::persisted::Persist;
use super::service::{BatchWorker, ServiceStats};
use super::shared_session::SharedSession;
use crate::record::Digest;
use ort::session::Session;
use ort::value::TensorRef;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A loaded classifier. Clones share its session (on the CPU, one copy of the weights, called
/// from each clone's thread).
#[derive(Clone)]
pub struct Classifier {
    session: Arc<SharedSession>,
    meta: ModelMeta,
    spec: ImageSpec,
    logits_name: String,
    file: PathBuf,
    digest: Digest,
}

/// The verdict on one image.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClassifierOutput {
    pub p_true: f32,
    pub loss: f32,
    pub predicted: usize,
}

impl Classifier {
    /// Opens the model folder's ONNX file and checks it fits its metadata.
    pub fn open(folder: &Path, options: &SessionOptions) -> Result<Classifier, RuntimeError> {
        let (meta, meta_file) = ModelMeta::load(folder)?;
        let file = folder.join(&meta.onnx);
        let digest = model_digest(&file, &meta_file)?;
        let session = onnx::open_shared(&file, options)?;
        let logits_name = meta
            .output("logits")
            .map_err(|e| RuntimeError::config(&folder.join(META_FILE), e.to_string()))?
            .to_string();
        check_io(session.session(), &meta, &logits_name, &file)?;
        let spec = meta.image_spec();
        Ok(Classifier {
            session: Arc::new(session),
            meta,
            spec,
            logits_name,
            file,
            digest,
        })
    }

    /// Whether clones may run at once (a CPU session); otherwise each runner opens its own.
    pub fn shareable(&self) -> bool {
        self.session.shareable()
    }

    /// The model's metadata.
    pub fn meta(&self) -> &ModelMeta {
        &self.meta
    }
    /// How images must be prepared.
    pub fn spec(&self) -> &ImageSpec {
        &self.spec
    }
    /// Content hash of the model: its ONNX file, external-data files beside it (named after
    /// it, as `model.onnx.data`) and its metadata file. `classify` keys its memo with it.
    pub fn digest(&self) -> Digest {
        self.digest
    }

    /// Runs the model on `n` prepared images laid out back to back; returns `n` rows of logits.
    pub fn logits(&self, pixels: &[f32], n: usize) -> Result<Vec<Vec<f32>>, RuntimeError> {
        let [c, h, w] = self.meta.input_shape;
        let shape = [n, c, h, w];
        let input = TensorRef::from_array_view((shape, pixels))?;
        let fail = |source: ort::Error| RuntimeError::Inference {
            file: self.file.clone(),
            source,
        };
        let output = self
            .session
            .run(&[(&self.meta.input, &input.into_dyn())], &self.logits_name)
            .map_err(fail)?;
        let (shape, data) = output.try_extract_tensor::<f32>().map_err(fail)?;
        let classes = self.meta.classes.len();
        if shape.len() != 2 || shape[0] as usize != n || shape[1] as usize != classes {
            return Err(RuntimeError::Output {
                file: self.file.clone(),
                message: format!(
                    "logits came back with shape {shape:?}, expected [{n}, {classes}]"
                ),
            });
        }
        Ok(data.chunks(classes).map(<[f32]>::to_vec).collect())
    }
}

/// Hashes the ONNX file, the files beside it whose names extend its name (external data) and
/// the metadata file, each with its name and length so no two sets hash alike.
fn model_digest(onnx: &Path, meta_file: &Path) -> Result<Digest, RuntimeError> {
    let read = |path: &Path| std::fs::read(path).map_err(|e| RuntimeError::io(path, e));
    let onnx_bytes = read(onnx)?;
    let name = onnx.file_name().map(|n| n.to_string_lossy().into_owned());
    let mut data_files: Vec<_> = match (onnx.parent(), &name) {
        (Some(folder), Some(name)) => std::fs::read_dir(folder)
            .map_err(|e| RuntimeError::io(folder, e))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| {
                path.file_name()
                    .map(|n| n.to_string_lossy())
                    .is_some_and(|n| n.len() > name.len() && n.starts_with(name.as_str()))
                    && path.is_file()
            })
            .collect(),
        _ => Vec::new(),
    };
    data_files.sort();
    let mut hasher = blake3::Hasher::new_derive_key("discl 2026-11 classifier model v1");
    let mut add = |label: &str, bytes: &[u8]| {
        hasher.update(&(label.len() as u64).to_le_bytes());
        hasher.update(label.as_bytes());
        hasher.update(&(bytes.len() as u64).to_le_bytes());
        hasher.update(bytes);
    };
    add("onnx", &onnx_bytes);
    for path in &data_files {
        let file = path.file_name().expect("listed").to_string_lossy();
        add(&file, &read(path)?);
    }
    add("meta", &read(meta_file)?);
    Ok(Digest(*hasher.finalize().as_bytes()))
}

fn check_io(
    session: &Session,
    meta: &ModelMeta,
    logits: &str,
    file: &Path,
) -> Result<(), RuntimeError> {
    let fail = |message: String| RuntimeError::interface(file, message);
    let inputs = onnx::inputs(session);
    let input = inputs
        .iter()
        .find(|i| i.name == meta.input)
        .ok_or_else(|| {
            let names: Vec<_> = inputs.iter().map(|i| i.name.as_str()).collect();
            fail(format!(
                "has no input `{}` (its inputs: {names:?})",
                meta.input
            ))
        })?;
    if !input.is(onnx::TensorElementType::Float32) {
        return Err(fail(format!(
            "input `{}` is {}, expected Float32",
            input.name, input.element
        )));
    }
    let [c, h, w] = meta.input_shape;
    let wanted = [-1, c as i64, h as i64, w as i64];
    let fits = input.shape.len() == 4
        && input
            .shape
            .iter()
            .zip(wanted)
            .skip(1)
            .all(|(&got, want)| got == -1 || got == want);
    if fits && input.shape[0] != -1 {
        return Err(fail(format!(
            "input `{}` has a fixed batch of {}; export the model with a dynamic batch dimension",
            input.name, input.shape[0]
        )));
    }
    if !fits {
        return Err(fail(format!(
            "input `{}` has shape {:?}, expected [batch, {c}, {h}, {w}]",
            input.name, input.shape
        )));
    }
    let outputs = onnx::outputs(session);
    let output = outputs.iter().find(|o| o.name == logits).ok_or_else(|| {
        let names: Vec<_> = outputs.iter().map(|o| o.name.as_str()).collect();
        fail(format!("has no output `{logits}` (its outputs: {names:?})"))
    })?;
    let classes = meta.classes.len() as i64;
    match output.shape.last() {
        Some(&n) if n == classes || n == -1 => Ok(()),
        _ => Err(fail(format!(
            "output `{logits}` has shape {:?}, expected [batch, {classes}] for {classes} classes",
            output.shape
        ))),
    }
}

/// p(true class), cross-entropy loss and the arg-max class from one row of logits.
pub fn score_logits(logits: &[f32], label: usize) -> ClassifierOutput {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let log_sum = logits.iter().map(|l| (l - max).exp()).sum::<f32>().ln() + max;
    let loss = log_sum - logits[label];
    let predicted = logits
        .iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &l)| {
            if l > best.1 {
                (i, l)
            } else {
                best
            }
        })
        .0;
    ClassifierOutput {
        p_true: (-loss).exp(),
        loss,
        predicted,
    }
}

/// One image to classify.
#[derive(Clone, Debug)]
pub struct ClassifyItem {
    pub path: PathBuf,
    /// Index of the true class in the model's classes.
    pub label: usize,
}

/// The result for one [`ClassifyItem`].
pub type ClassifyResult = Result<ClassifierOutput, String>;

impl BatchWorker for Classifier {
    type Item = ClassifyItem;
    type Output = ClassifyResult;

    fn failed(message: &str) -> ClassifyResult {
        Err(message.to_string())
    }

    fn run(&mut self, items: Vec<ClassifyItem>, stats: &ServiceStats) -> Vec<ClassifyResult> {
        let mut pixels = Vec::with_capacity(items.len() * self.spec.len());
        let mut prepared = Vec::with_capacity(items.len());
        let mut results: Vec<Option<Result<ClassifierOutput, String>>> = vec![None; items.len()];
        for (i, item) in items.iter().enumerate() {
            let loaded = read_regular(&item.path, MAX_CHECKED_INPUT_BYTES)
                .map_err(|e| format!("cannot read image: {e}"))
                .and_then(|bytes| {
                    decode_into(&bytes, &self.spec, &mut pixels).map_err(|e| e.to_string())
                });
            match loaded {
                Ok(()) => prepared.push(i),
                Err(e) => results[i] = Some(Err(e)),
            }
        }
        if !prepared.is_empty() {
            stats.model_call();
            match self.logits(&pixels, prepared.len()) {
                Ok(rows) => {
                    for (row, &i) in rows.iter().zip(&prepared) {
                        results[i] = Some(Ok(score_logits(row, items[i].label)));
                    }
                }
                Err(e) => {
                    let message = e.to_string();
                    for &i in &prepared {
                        results[i] = Some(Err(message.clone()));
                    }
                }
            }
        }
        results
            .into_iter()
            .map(|result| result.expect("every item answered"))
            .collect()
    }
}

impl Persist for Classifier {
    const TABLE: &'static str = "classify";
    type Stored = ClassifierOutput;
    fn to_stored(output: &ClassifyResult) -> Option<ClassifierOutput> {
        output.as_ref().ok().cloned()
    }
    fn from_stored(stored: ClassifierOutput) -> ClassifyResult {
        Ok(stored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_logits() {
        let out = score_logits(&[0.0, 0.0], 1);
        assert!((out.p_true - 0.5).abs() < 1e-6);
        assert!((out.loss - std::f32::consts::LN_2).abs() < 1e-6);
        let out = score_logits(&[1.0, 5.0, 2.0], 0);
        assert_eq!(out.predicted, 1);
        assert!(out.p_true < 0.05);
        // Large logits stay finite.
        let out = score_logits(&[1000.0, -1000.0], 0);
        assert!(out.loss.abs() < 1e-6 && (out.p_true - 1.0).abs() < 1e-6);
    }

    #[test]
    fn the_model_digest_covers_weights_external_data_and_metadata_only() {
        let dir = tempfile::tempdir().unwrap();
        let (onnx, meta) = (dir.path().join("model.onnx"), dir.path().join("discl.toml"));
        std::fs::write(&onnx, b"graph").unwrap();
        std::fs::write(&meta, b"kind = \"classifier\"").unwrap();
        let first = model_digest(&onnx, &meta).unwrap();
        assert_eq!(model_digest(&onnx, &meta).unwrap(), first);
        // Documentation beside the model does not decide a score.
        std::fs::write(dir.path().join("README.md"), b"notes").unwrap();
        assert_eq!(model_digest(&onnx, &meta).unwrap(), first);
        // External weights do, and so does the metadata (normalisation, classes).
        std::fs::write(dir.path().join("model.onnx.data"), b"weights").unwrap();
        let with_data = model_digest(&onnx, &meta).unwrap();
        assert_ne!(with_data, first);
        std::fs::write(&meta, b"kind = \"judge\"").unwrap();
        assert_ne!(model_digest(&onnx, &meta).unwrap(), with_data);
    }
}
