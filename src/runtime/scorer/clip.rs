//! A CLIP export exactly as optimum writes it for `zero-shot-image-classification`: one
//! `model.onnx` taking `input_ids`, `pixel_values` and `attention_mask` and giving
//! `text_embeds` and `image_embeds` (plus logits we ignore), beside `preprocessor_config.json`,
//! `config.json` and the tokenizer files. The model always wants both a text and an image
//! batch, so a call with only one side passes a stand-in for the other (an empty prompt, or
//! all-zero pixel values: the mean colour) and drops its output.

use super::error::{read_json, ScorerError};
use super::preprocess::{ClipImageConfig, PREPROCESSOR_FILE};
use super::text::{PromptTokenizer, TokenBatch};
use super::Embeddings;
use crate::runtime::onnx::{self, SessionOptions, TensorDecl, TensorElementType};
use crate::runtime::shared_session::SharedSession;
use ort::session::Session;
use ort::value::TensorRef;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The ONNX file of an optimum CLIP export.
pub const MODEL_FILE: &str = "model.onnx";

/// A loaded CLIP export; clones share its session.
#[derive(Clone)]
pub struct ClipModel {
    session: Arc<SharedSession>,
    file: PathBuf,
    tokenizer: Arc<PromptTokenizer>,
    images: ClipImageConfig,
    /// (height, width) of `pixel_values`.
    image_size: (usize, usize),
}

/// What `config.json` says that matters here (each `None` when absent).
#[derive(Default)]
struct ModelConfig {
    /// The text model's `max_position_embeddings`.
    positions: Option<usize>,
    /// The vision model's `image_size`.
    image_side: Option<usize>,
    /// The vision model's `num_channels`.
    channels: Option<u64>,
}

fn find<'a>(decls: &'a [TensorDecl], name: &str, what: &str) -> Result<&'a TensorDecl, String> {
    decls.iter().find(|d| d.name == name).ok_or_else(|| {
        let names: Vec<_> = decls.iter().map(|d| d.name.as_str()).collect();
        format!("has no {what} `{name}` (its {what}s: {names:?}); export with optimum's task zero-shot-image-classification")
    })
}

/// Checks the inputs and outputs an optimum CLIP export declares.
fn check_io(session: &Session, image_size: (usize, usize)) -> Result<(), String> {
    let inputs = onnx::inputs(session);
    for name in ["input_ids", "attention_mask"] {
        let decl = find(&inputs, name, "input")?;
        if !decl.is(TensorElementType::Int64) || decl.shape.len() != 2 {
            return Err(format!(
                "input `{name}` is {} {:?}, expected Int64 [batch, sequence]",
                decl.element, decl.shape
            ));
        }
    }
    let pixels = find(&inputs, "pixel_values", "input")?;
    let (h, w) = (image_size.0 as i64, image_size.1 as i64);
    let fits = pixels.shape.len() == 4
        && pixels.shape[1..]
            .iter()
            .zip([3, h, w])
            .all(|(&got, want)| got == -1 || got == want);
    if !pixels.is(TensorElementType::Float32) || !fits {
        return Err(format!(
            "input `pixel_values` is {} {:?}, expected Float32 [batch, 3, {h}, {w}] (the preprocessor's output size)",
            pixels.element, pixels.shape
        ));
    }
    let outputs = onnx::outputs(session);
    for name in ["text_embeds", "image_embeds"] {
        let decl = find(&outputs, name, "output")?;
        if !decl.is(TensorElementType::Float32) || decl.shape.len() != 2 {
            return Err(format!(
                "output `{name}` is {} {:?}, expected Float32 [batch, dim]",
                decl.element, decl.shape
            ));
        }
    }
    Ok(())
}

/// Reads `folder/config.json` when there is one.
fn model_config(folder: &Path) -> Result<ModelConfig, ScorerError> {
    let file = folder.join("config.json");
    if !file.is_file() {
        return Ok(ModelConfig::default());
    }
    let json = read_json(&file)?;
    let number = |v: &serde_json::Value| v.as_u64().map(|n| n as usize);
    Ok(ModelConfig {
        positions: number(&json["text_config"]["max_position_embeddings"]),
        image_side: number(&json["vision_config"]["image_size"]),
        channels: json["vision_config"]["num_channels"].as_u64(),
    })
}

impl ClipModel {
    /// Opens the export in `folder` and checks its files agree with one another.
    pub fn open(folder: &Path, options: &SessionOptions) -> Result<ClipModel, ScorerError> {
        let preprocessor = folder.join(PREPROCESSOR_FILE);
        let images = ClipImageConfig::load(&preprocessor)?;
        let image_size = images.output_size().ok_or_else(|| {
            ScorerError::bad(
                &preprocessor,
                "images keep their own aspect ratio (no centre crop, shortest-edge resize), so they cannot share a batch",
            )
        })?;
        let config = model_config(folder)?;
        if let Some(side) = config.image_side.filter(|&s| (s, s) != image_size) {
            return Err(ScorerError::bad(
                &preprocessor,
                format!(
                    "prepares {}x{} images but config.json's vision model takes {side}x{side}",
                    image_size.0, image_size.1
                ),
            ));
        }
        if let Some(n) = config.channels.filter(|&n| n != 3) {
            return Err(ScorerError::bad(
                folder.join("config.json"),
                format!("the vision model takes {n} channels; CLIP scorers take RGB"),
            ));
        }
        let tokenizer = PromptTokenizer::open(folder, config.positions)?;
        let file = folder.join(MODEL_FILE);
        let session = onnx::open_shared(&file, options).map_err(ScorerError::Runtime)?;
        check_io(session.session(), image_size).map_err(|e| ScorerError::model(&file, e))?;
        Ok(ClipModel {
            session: Arc::new(session),
            file,
            tokenizer: Arc::new(tokenizer),
            images,
            image_size,
        })
    }

    /// Whether clones may run at once (a CPU session).
    pub fn shareable(&self) -> bool {
        self.session.shareable()
    }

    /// The image preparation read from `preprocessor_config.json`.
    pub fn image_config(&self) -> &ClipImageConfig {
        &self.images
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &PromptTokenizer {
        &self.tokenizer
    }

    /// Floats in one prepared image.
    pub fn image_len(&self) -> usize {
        3 * self.image_size.0 * self.image_size.1
    }

    /// One model call: embeds `prompts` and the `count` prepared images in `pixels`.
    pub fn run(
        &self,
        prompts: &[&str],
        pixels: &[f32],
        count: usize,
    ) -> Result<Embeddings, ScorerError> {
        let (h, w) = self.image_size;
        if pixels.len() != count * self.image_len() {
            return Err(ScorerError::model(
                &self.file,
                format!("{} floats for {count} images of 3x{h}x{w}", pixels.len()),
            ));
        }
        let tokens: TokenBatch =
            self.tokenizer
                .batch(if prompts.is_empty() { &[""] } else { prompts })?;
        let blank;
        let (pixels, images) = if count == 0 {
            blank = vec![0.0; self.image_len()];
            (blank.as_slice(), 1)
        } else {
            (pixels, count)
        };
        let fail = |e: ort::Error| ScorerError::model(&self.file, e);
        let text_shape = [tokens.count, tokens.length];
        let ids = TensorRef::from_array_view((text_shape, tokens.ids.as_slice())).map_err(fail)?;
        let mask =
            TensorRef::from_array_view((text_shape, tokens.mask.as_slice())).map_err(fail)?;
        let image = TensorRef::from_array_view(([images, 3, h, w], pixels)).map_err(fail)?;
        let inputs = [
            ("input_ids", &ids.into_dyn()),
            ("pixel_values", &image.into_dyn()),
            ("attention_mask", &mask.into_dyn()),
        ];
        let outputs = self
            .session
            .run_outputs(&inputs, &["text_embeds", "image_embeds"])
            .map_err(fail)?;
        let rows = |k: usize, n: usize| -> Result<Vec<Vec<f32>>, ScorerError> {
            let name = ["text_embeds", "image_embeds"][k];
            let (shape, data) = outputs[k].try_extract_tensor::<f32>().map_err(fail)?;
            if shape.len() != 2 || shape[0] as usize != n || shape[1] < 1 {
                return Err(ScorerError::model(
                    &self.file,
                    format!("`{name}` came back with shape {shape:?}, expected [{n}, dim]"),
                ));
            }
            Ok(data
                .chunks(shape[1] as usize)
                .map(<[f32]>::to_vec)
                .collect())
        };
        let texts = rows(0, tokens.count)?;
        let images = rows(1, images)?;
        Ok(Embeddings {
            texts: if prompts.is_empty() {
                Vec::new()
            } else {
                texts
            },
            images: if count == 0 { Vec::new() } else { images },
        })
    }
}
