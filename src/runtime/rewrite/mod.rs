//! Rewrites of a diffusion model's UNet that discl makes itself (no Python, no ONNX toolchain),
//! each off unless a `generate` node asks for it: int8 weight matrices for the CPU
//! (`quantize = "int8"`, [`int8`]) and attention fused into one ONNX Runtime operator
//! (`attention = "fused"`, [`attention`]). The rewritten file is made once per model digest and
//! form under the run's output folder (`state/models/<digest>-unet-<form>/`) and reused by every
//! later run; the form is part of each image's content key. Also here: the in-place view every
//! ONNX file is opened through ([`in_place`]), and the protobuf reading both share.

pub mod attention;
pub mod in_place;
pub mod int8;
pub mod node;
pub mod tensor;
pub mod wire;

use crate::record::Digest;
use crate::runtime::error::RuntimeError;
use std::path::{Path, PathBuf};

/// The version of the int8 rewrite; a new one makes new files (and new content keys).
pub const INT8_VERSION: &str = "int8-dynamic-matmul-v1";
/// The version of the attention fusion.
pub const FUSED_ATTENTION_VERSION: &str = "fused-attention-v1";

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
        let choices = [("none", Quantize::None), ("int8", Quantize::Int8)];
        crate::runtime::choice::one_of("quantize", text, &choices)
    }
}

/// How the UNet computes attention.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Attention {
    /// The operators as exported (matrix products, softmax, reshapes).
    #[default]
    AsExported,
    /// One `com.microsoft.MultiHeadAttention` per attention block.
    Fused,
}

impl std::str::FromStr for Attention {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let choices = [
            ("as-exported", Attention::AsExported),
            ("fused", Attention::Fused),
        ];
        crate::runtime::choice::one_of("attention", text, &choices)
    }
}

/// The form of the UNet a generator runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnetForm {
    pub attention: Attention,
    pub quantize: Quantize,
}

impl UnetForm {
    /// The form's name in content keys and folder names; `None` for the model as exported.
    pub fn variant(&self) -> Option<String> {
        let parts: Vec<&str> = [
            (self.attention == Attention::Fused).then_some(FUSED_ATTENTION_VERSION),
            (self.quantize == Quantize::Int8).then_some(INT8_VERSION),
        ]
        .into_iter()
        .flatten()
        .collect();
        (!parts.is_empty()).then(|| parts.join("+"))
    }
}

/// Where rewritten UNets live, under a run's output folder.
pub const FOLDER: &str = "state/models";

/// The folder (under [`FOLDER`]) of the UNet of the model with `digest` in `form`; `None` for
/// the model as exported.
pub fn folder_name(digest: &Digest, form: UnetForm) -> Option<String> {
    let variant = form.variant()?;
    Some(format!("{}-unet-{variant}", digest.to_hex()))
}

/// The UNet file of the model folder `model` (whose digest is `digest`) in `form`, made now
/// unless a run made it before; `None` for the model as exported. Errors name the file that
/// could not be read, rewritten or written.
pub fn rewritten_unet(
    model: &Path,
    digest: &Digest,
    output: &Path,
    form: UnetForm,
) -> Result<Option<PathBuf>, RuntimeError> {
    let Some(name) = folder_name(digest, form) else {
        return Ok(None);
    };
    let folder = output.join(FOLDER).join(name);
    let file = folder.join("model.onnx");
    if file.is_file() {
        return Ok(Some(file));
    }
    let source = model.join("unet/model.onnx");
    let bytes = std::fs::read(&source).map_err(|e| RuntimeError::io(&source, e))?;
    let parent = folder.parent().expect("under state/models");
    std::fs::create_dir_all(parent).map_err(|e| RuntimeError::io(parent, e))?;
    // Made in a folder of its own beside the final one, then renamed into place whole.
    let temp = crate::store::atomic::temp_sibling(&folder);
    std::fs::create_dir_all(&temp).map_err(|e| RuntimeError::io(&temp, e))?;
    let made = write_rewritten(&bytes, &source, &temp, form);
    let made = made.and_then(|done| match std::fs::rename(&temp, &folder) {
        Ok(()) => {
            eprintln!(
                "discl: {} rewritten ({done}) into {}",
                source.display(),
                folder.display()
            );
            Ok(())
        }
        // Another process made it first: theirs is the same file.
        Err(_) if file.is_file() => Ok(()),
        Err(e) => Err(RuntimeError::io(&folder, e)),
    });
    if made.is_err() || temp.exists() {
        let _ = std::fs::remove_dir_all(&temp);
    }
    made.map(|()| Some(file))
}

fn write_rewritten(
    bytes: &[u8],
    source: &Path,
    temp: &Path,
    form: UnetForm,
) -> Result<String, RuntimeError> {
    use std::io::Write;
    let data_path = temp.join("model.onnx_data");
    let out = std::fs::File::create(&data_path).map_err(|e| RuntimeError::io(&data_path, e))?;
    let mut data = tensor::DataFile {
        name: "model.onnx_data".into(),
        out: std::io::BufWriter::new(out),
        written: 0,
    };
    let source_folder = source.parent().expect("unet/model.onnx");
    let fail = |what: &str| {
        let what = what.to_string();
        move |message: String| RuntimeError::interface(source, format!("{what}: {message}"))
    };
    let mut done = Vec::new();
    let fused;
    let bytes = match form.attention {
        Attention::AsExported => bytes,
        Attention::Fused => {
            let (model, summary) = attention::fuse(bytes).map_err(fail("fusing attention"))?;
            if summary.fused == 0 {
                return Err(fail("attention = \"fused\"")(summary.nothing_fused()));
            }
            let (fused_blocks, blocks) = (summary.fused, summary.softmaxes);
            done.push(format!(
                "attention fused in {fused_blocks} of {blocks} blocks"
            ));
            fused = model;
            &fused
        }
    };
    // External tensors are read from the source's folder and copied beside the new file.
    let model = match form.quantize {
        Quantize::Int8 => {
            let (model, summary) = int8::quantize_matmuls(bytes, source_folder, &mut data)
                .map_err(fail("int8 quantisation"))?;
            done.push(format!("{} MatMuls int8", summary.matmuls));
            model
        }
        Quantize::None => {
            int8::move_external_data(bytes, source_folder, &mut data).map_err(fail("rewriting"))?
        }
    };
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
        .map_err(|e| RuntimeError::io(&model_path, e))?;
    Ok(done.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_form_has_its_own_name_and_the_exported_one_none() {
        let form = |attention, quantize| {
            UnetForm {
                attention,
                quantize,
            }
            .variant()
        };
        assert_eq!(form(Attention::AsExported, Quantize::None), None);
        assert_eq!(
            form(Attention::AsExported, Quantize::Int8).as_deref(),
            Some("int8-dynamic-matmul-v1")
        );
        assert_eq!(
            form(Attention::Fused, Quantize::None).as_deref(),
            Some("fused-attention-v1")
        );
        assert_eq!(
            form(Attention::Fused, Quantize::Int8).as_deref(),
            Some("fused-attention-v1+int8-dynamic-matmul-v1")
        );
    }
}
