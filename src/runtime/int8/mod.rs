//! int8 dynamic quantisation of a diffusion model's UNet for the CPU, made by discl itself
//! (no Python, no ONNX toolchain): the weight matrices of its `MatMul`s (attention projections,
//! feed-forward layers) become int8 with a scale per column, run by ONNX Runtime's
//! `DynamicQuantizeMatMul`; convolutions stay in float (ONNX Runtime's `ConvInteger` measured
//! slower than float convolutions). The quantized file is made once per model digest under the
//! run's output folder (`state/models/<digest>-unet-int8-v1/`) and reused by every later run.
//!
//! It changes the images slightly, so it is off unless a `generate` node asks for it, and then
//! it is part of each image's content key.

pub mod in_place;
pub mod rewrite;
pub mod tensor;
pub mod wire;

use crate::record::Digest;
use crate::runtime::error::RuntimeError;
use std::path::{Path, PathBuf};

/// The version of the rewrite; a new one makes new files (and new content keys).
pub const VERSION: &str = "int8-dynamic-matmul-v1";

/// How the UNet's weights are stored while generating.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Quantize {
    /// As exported.
    #[default]
    None,
    /// int8 weight matrices, activations quantized call by call.
    Int8,
}

impl std::str::FromStr for Quantize {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "none" => Ok(Quantize::None),
            "int8" => Ok(Quantize::Int8),
            other => Err(format!(
                "unknown quantize `{other}` (expected \"none\" or \"int8\")"
            )),
        }
    }
}

/// The folder holding the int8 UNet of the model with `digest`, under `output`.
pub fn cache_folder(output: &Path, digest: &Digest) -> PathBuf {
    output
        .join("state/models")
        .join(format!("{}-unet-{VERSION}", digest.to_hex()))
}

/// The int8 UNet file of the model folder `model` (whose digest is `digest`), made now unless a
/// run made it before; errors name the file that could not be read or written.
pub fn int8_unet(model: &Path, digest: &Digest, output: &Path) -> Result<PathBuf, RuntimeError> {
    let folder = cache_folder(output, digest);
    let file = folder.join("model.onnx");
    if file.is_file() {
        return Ok(file);
    }
    let source = model.join("unet/model.onnx");
    let bytes = std::fs::read(&source).map_err(|e| RuntimeError::io(&source, e))?;
    let parent = folder.parent().expect("under state/models");
    std::fs::create_dir_all(parent).map_err(|e| RuntimeError::io(parent, e))?;
    // Made in a folder of its own beside the final one, then renamed into place whole.
    let temp = crate::store::atomic::temp_sibling(&folder);
    std::fs::create_dir_all(&temp).map_err(|e| RuntimeError::io(&temp, e))?;
    let made = write_quantized(&bytes, &source, &temp);
    let made = made.and_then(|()| match std::fs::rename(&temp, &folder) {
        Ok(()) => Ok(()),
        // Another process made it first: theirs is the same file.
        Err(_) if file.is_file() => Ok(()),
        Err(e) => Err(RuntimeError::io(&folder, e)),
    });
    if made.is_err() || temp.exists() {
        let _ = std::fs::remove_dir_all(&temp);
    }
    made.map(|()| file)
}

fn write_quantized(bytes: &[u8], source: &Path, temp: &Path) -> Result<(), RuntimeError> {
    use std::io::Write;
    let data_path = temp.join("model.onnx_data");
    let out = std::fs::File::create(&data_path).map_err(|e| RuntimeError::io(&data_path, e))?;
    let mut data = tensor::DataFile {
        name: "model.onnx_data".into(),
        out: std::io::BufWriter::new(out),
        written: 0,
    };
    let source_folder = source.parent().expect("unet/model.onnx");
    let (model, _) =
        rewrite::quantize_matmuls(bytes, source_folder, &mut data).map_err(|message| {
            RuntimeError::interface(source, format!("int8 quantisation: {message}"))
        })?;
    let file = data
        .out
        .into_inner()
        .map_err(|e| RuntimeError::io(&data_path, e.into_error()))?;
    file.sync_all()
        .map_err(|e| RuntimeError::io(&data_path, e))?;
    if data.written == 0 {
        std::fs::remove_file(&data_path).map_err(|e| RuntimeError::io(&data_path, e))?;
    }
    let model_path = temp.join("model.onnx");
    let mut out =
        std::fs::File::create(&model_path).map_err(|e| RuntimeError::io(&model_path, e))?;
    out.write_all(&model)
        .and_then(|()| out.sync_all())
        .map_err(|e| RuntimeError::io(&model_path, e))
}
