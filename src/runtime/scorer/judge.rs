//! A judge: an image encoder ONNX file plus a table of class text embeddings
//! (`text_embeds.json`, one row per class in label order), described by a `discl.toml` of
//! `kind = "judge"` (the shipped `models/fashion-judge`). It has no text encoder, so it can only
//! answer for its classes, or for the exact prompts its table was made from.

use super::error::{read_json, ScorerError};
use crate::runtime::image_input::{decode_into, ImageSpec};
use crate::runtime::model_meta::{ModelMeta, META_FILE};
use crate::runtime::onnx::{self, SessionOptions, TensorElementType};
use crate::runtime::shared_session::SharedSession;
use ort::session::Session;
use ort::value::TensorRef;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A loaded judge; clones share its session.
#[derive(Clone)]
pub struct Judge {
    session: Arc<SharedSession>,
    file: PathBuf,
    meta: ModelMeta,
    spec: ImageSpec,
    output: String,
    table_file: PathBuf,
    /// One embedding per class, in the order of `meta.classes`.
    table: Vec<Vec<f32>>,
    /// The prompt each row was made from, when the table says.
    prompts: Vec<String>,
}

fn load_table(file: &Path, classes: usize) -> Result<(Vec<Vec<f32>>, Vec<String>), ScorerError> {
    let json = read_json(file)?;
    let rows = json["embeds"]
        .as_array()
        .ok_or_else(|| ScorerError::bad(file, "has no `embeds` list"))?;
    if rows.len() != classes {
        return Err(ScorerError::bad(
            file,
            format!(
                "has {} embeddings for the {classes} classes of {META_FILE}",
                rows.len()
            ),
        ));
    }
    let mut table = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        let values: Option<Vec<f32>> = row
            .as_array()
            .map(|a| a.iter().map(|v| v.as_f64().map(|x| x as f32)).collect())
            .unwrap_or(None);
        match values {
            Some(v) if !v.is_empty() && v.iter().all(|x| x.is_finite()) => table.push(v),
            _ => {
                return Err(ScorerError::bad(
                    file,
                    format!("embeds[{i}] is not a list of numbers"),
                ))
            }
        }
        if table[i].len() != table[0].len() {
            return Err(ScorerError::bad(
                file,
                format!(
                    "embeds[{i}] has {} values, embeds[0] has {}",
                    table[i].len(),
                    table[0].len()
                ),
            ));
        }
    }
    let prompts: Vec<String> = match &json["prompts"] {
        serde_json::Value::Null => Vec::new(),
        serde_json::Value::Array(a) if a.len() == classes && a.iter().all(|p| p.is_string()) => a
            .iter()
            .map(|p| p.as_str().unwrap_or_default().to_string())
            .collect(),
        _ => {
            return Err(ScorerError::bad(
                file,
                format!("`prompts` must list {classes} strings, one per class"),
            ))
        }
    };
    Ok((table, prompts))
}

impl Judge {
    /// Opens a judge folder: its `discl.toml`, ONNX file and embedding table.
    pub fn open(folder: &Path, options: &SessionOptions) -> Result<Judge, ScorerError> {
        let (meta, meta_file) = ModelMeta::load(folder).map_err(ScorerError::Runtime)?;
        if meta.kind != "judge" {
            return Err(ScorerError::bad(
                &meta_file,
                format!(
                    "kind = {:?} is not a scorer (a judge has kind = \"judge\")",
                    meta.kind
                ),
            ));
        }
        let role = |name: &str| {
            meta.output(name)
                .map(str::to_string)
                .map_err(|e| ScorerError::bad(&meta_file, e))
        };
        let output = role("image_embeds")?;
        let table_file = folder.join(role("text_embeds")?);
        let (table, prompts) = load_table(&table_file, meta.classes.len())?;
        let file = folder.join(&meta.onnx);
        let session = onnx::open_shared(&file, options).map_err(ScorerError::Runtime)?;
        check_io(session.session(), &meta, &output, table[0].len())
            .map_err(|e| ScorerError::model(&file, e))?;
        let spec = meta.image_spec();
        Ok(Judge {
            session: Arc::new(session),
            file,
            meta,
            spec,
            output,
            table_file,
            table,
            prompts,
        })
    }

    /// Whether clones may run at once (a CPU session).
    pub fn shareable(&self) -> bool {
        self.session.shareable()
    }

    /// The judge's metadata (classes, display names).
    pub fn meta(&self) -> &ModelMeta {
        &self.meta
    }

    /// The text embedding of class `index`.
    pub fn class_embedding(&self, index: usize) -> Result<&[f32], ScorerError> {
        self.table.get(index).map(Vec::as_slice).ok_or_else(|| {
            ScorerError::Query(format!(
                "{}: class {index} does not exist (the judge has {} classes)",
                self.table_file.display(),
                self.table.len()
            ))
        })
    }

    /// The text embedding of `prompt`, which must be one the table was made from.
    pub fn prompt_embedding(&self, prompt: &str) -> Result<&[f32], ScorerError> {
        match self.prompts.iter().position(|p| p == prompt) {
            Some(i) => Ok(&self.table[i]),
            None => Err(ScorerError::Query(format!(
                "{}: a judge has no text encoder and cannot embed {prompt:?}; ask for one of its classes {:?}{}",
                self.table_file.display(),
                self.meta.classes,
                if self.prompts.is_empty() {
                    String::new()
                } else {
                    format!(" or the prompts it was trained with {:?}", self.prompts)
                }
            ))),
        }
    }

    /// Decodes an image file's bytes and appends its normalised pixels to `out`.
    pub fn prepare(&self, bytes: &[u8], out: &mut Vec<f32>) -> Result<(), ScorerError> {
        decode_into(bytes, &self.spec, out).map_err(|e| ScorerError::Image(e.to_string()))
    }

    /// Embeds `count` prepared images.
    pub fn embed(&self, pixels: &[f32], count: usize) -> Result<Vec<Vec<f32>>, ScorerError> {
        let [c, h, w] = self.meta.input_shape;
        let fail = |e: ort::Error| ScorerError::model(&self.file, e);
        let input = TensorRef::from_array_view(([count, c, h, w], pixels)).map_err(fail)?;
        let output = self
            .session
            .run(&[(&self.meta.input, &input.into_dyn())], &self.output)
            .map_err(fail)?;
        let (shape, data) = output.try_extract_tensor::<f32>().map_err(fail)?;
        let dim = self.table[0].len();
        if shape.len() != 2 || shape[0] as usize != count || shape[1] as usize != dim {
            return Err(ScorerError::model(
                &self.file,
                format!(
                    "`{}` came back with shape {shape:?}, expected [{count}, {dim}]",
                    self.output
                ),
            ));
        }
        Ok(data.chunks(dim).map(<[f32]>::to_vec).collect())
    }
}

fn check_io(session: &Session, meta: &ModelMeta, output: &str, dim: usize) -> Result<(), String> {
    let inputs = onnx::inputs(session);
    let names = |d: &[onnx::TensorDecl]| d.iter().map(|t| t.name.clone()).collect::<Vec<_>>();
    let input = inputs
        .iter()
        .find(|i| i.name == meta.input)
        .ok_or_else(|| {
            format!(
                "has no input `{}` (its inputs: {:?})",
                meta.input,
                names(&inputs)
            )
        })?;
    let [c, h, w] = meta.input_shape;
    let fits = input.shape.len() == 4
        && input.shape[1..]
            .iter()
            .zip([c as i64, h as i64, w as i64])
            .all(|(&got, want)| got == -1 || got == want);
    if !input.is(TensorElementType::Float32) || !fits {
        return Err(format!(
            "input `{}` is {} {:?}, expected Float32 [batch, {c}, {h}, {w}]",
            input.name, input.element, input.shape
        ));
    }
    let outputs = onnx::outputs(session);
    let out = outputs.iter().find(|o| o.name == output).ok_or_else(|| {
        format!(
            "has no output `{output}` (its outputs: {:?})",
            names(&outputs)
        )
    })?;
    match out.shape.last() {
        Some(&n) if n == dim as i64 || n == -1 => Ok(()),
        _ => Err(format!(
            "output `{output}` has shape {:?}, but the text embeddings have {dim} values",
            out.shape
        )),
    }
}
