//! A diffusion model folder as diffusers/optimum lay it out, read unchanged: `model_index.json`,
//! `scheduler/scheduler_config.json`, `unet/model.onnx`, optional `vae_encoder/` +
//! `vae_decoder/` (latent models), and either `text_encoder/` + `tokenizer/` (prompts) or a
//! UNet with a `class_labels` input (class conditioning, last class = null for guidance).
//! Input and output names are discovered from the ONNX files and checked against what the
//! engine needs; every error names the file.

use super::encodings::Encodings;
use super::tokenizer::ClipTokenizer;
use super::unet::{find, names, unet_io};
pub use super::unet::{TimestepShape, UnetIo};
use crate::record::Digest;
use crate::runtime::device::Device;
use crate::runtime::error::RuntimeError;
use crate::runtime::onnx::{self, SessionOptions, TensorElementType};
use crate::runtime::scheduler::SchedulerConfig;
use crate::runtime::shared_session::SharedSession;
use serde_json::Value as Json;
use std::path::{Path, PathBuf};

/// What the UNet is conditioned on.
pub enum Conditioning {
    Text(Box<TextEncoder>),
    /// Class labels; `null_class` is the unconditional label used for guidance.
    Class {
        null_class: i64,
    },
}

/// The text encoder and its tokenizer.
pub struct TextEncoder {
    pub session: SharedSession,
    pub tokenizer: ClipTokenizer,
    pub input: String,
    pub input_is_int32: bool,
    pub output: String,
    pub file: PathBuf,
}

/// VAE encoder and decoder of a latent model.
pub struct Vae {
    pub encoder: SharedSession,
    pub decoder: SharedSession,
    pub encoder_input: String,
    pub encoder_output: String,
    /// The encoder gives mean and log-variance (8 channels) rather than a sampled latent.
    pub encoder_gives_parameters: bool,
    pub decoder_input: String,
    pub decoder_output: String,
    pub scaling_factor: f32,
    pub encoder_file: PathBuf,
    pub decoder_file: PathBuf,
}

/// A loaded diffusion model.
pub struct DiffusionModel {
    pub folder: PathBuf,
    /// Hash of every ONNX file and config: part of every memo key.
    pub digest: Digest,
    pub scheduler_config: SchedulerConfig,
    pub unet: SharedSession,
    pub unet_io: UnetIo,
    pub unet_file: PathBuf,
    /// Where the sessions run: the device asked for, or the CPU after a fallback.
    pub device: Device,
    /// Channels, height, width of the UNet's sample (latent or pixels).
    pub latent_shape: [usize; 3],
    /// Channels, height, width of images in and out.
    pub image_shape: [usize; 3],
    pub vae: Option<Vae>,
    pub conditioning: Conditioning,
    /// Class names and display names from an optional `discl.toml` in the folder
    /// (class-conditional generators: class label i is `classes[i]`).
    pub class_names: Option<ClassNames>,
    /// The prompts and sources this model has encoded, for every generator holding it.
    pub encodings: Encodings,
}

/// Class names and their display names, in label order.
pub type ClassNames = (Vec<String>, Vec<String>);

/// The optional `discl.toml` of a generator folder.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct GeneratorMeta {
    kind: String,
    classes: Vec<String>,
    #[serde(default)]
    display_names: Option<Vec<String>>,
}

fn read_generator_meta(folder: &Path) -> Result<Option<ClassNames>, RuntimeError> {
    let file = folder.join("discl.toml");
    let Ok(text) = std::fs::read_to_string(&file) else {
        return Ok(None);
    };
    let meta: GeneratorMeta = toml::from_str(&text).map_err(|source| RuntimeError::Toml {
        file: file.clone(),
        source,
    })?;
    if meta.kind != "generator" {
        return Err(RuntimeError::config(
            &file,
            format!("kind is `{}`, expected `generator`", meta.kind),
        ));
    }
    let display = meta.display_names.unwrap_or_else(|| meta.classes.clone());
    if display.len() != meta.classes.len() {
        return Err(RuntimeError::config(
            &file,
            format!(
                "{} display names for {} classes",
                display.len(),
                meta.classes.len()
            ),
        ));
    }
    Ok(Some((meta.classes, display)))
}

fn read_json(file: &Path) -> Result<Json, RuntimeError> {
    let text = std::fs::read_to_string(file).map_err(|e| RuntimeError::io(file, e))?;
    serde_json::from_str(&text).map_err(|source| RuntimeError::Json {
        file: file.to_path_buf(),
        source,
    })
}

impl DiffusionModel {
    /// Opens and checks a model folder.
    pub fn open(folder: &Path, options: &SessionOptions) -> Result<DiffusionModel, RuntimeError> {
        Self::open_with_unet(folder, options, None)
    }

    /// As [`DiffusionModel::open`], with the UNet read from `unet_file` instead of the folder's
    /// own (a rewrite of it, such as its int8 form); the digest stays the folder's.
    pub fn open_with_unet(
        folder: &Path,
        options: &SessionOptions,
        unet_file: Option<PathBuf>,
    ) -> Result<DiffusionModel, RuntimeError> {
        let index_file = folder.join("model_index.json");
        if !index_file.is_file() {
            return Err(RuntimeError::Missing {
                path: index_file,
                what: "missing (not a diffusers model folder)",
            });
        }
        read_json(&index_file)?;
        let scheduler_file = folder.join("scheduler/scheduler_config.json");
        if !scheduler_file.is_file() {
            return Err(RuntimeError::Missing {
                path: scheduler_file,
                what: "missing scheduler config",
            });
        }
        let scheduler_config = SchedulerConfig::from_file(&scheduler_file).map_err(|source| {
            RuntimeError::SchedulerConfig {
                file: scheduler_file.clone(),
                source,
            }
        })?;

        let unet_file = unet_file.unwrap_or_else(|| folder.join("unet/model.onnx"));
        let unet = onnx::open_shared(&unet_file, options)?;
        let unet_config = read_json(&folder.join("unet/config.json"))?;
        let unet_io = unet_io(
            &unet_file,
            &onnx::inputs(unet.session()),
            &onnx::outputs(unet.session()),
        )?;
        let in_channels = unet_config["in_channels"].as_u64().unwrap_or(4) as usize;
        let (h, w) = match &unet_config["sample_size"] {
            Json::Number(n) => (
                n.as_u64().unwrap_or(0) as usize,
                n.as_u64().unwrap_or(0) as usize,
            ),
            Json::Array(a) if a.len() == 2 => (
                a[0].as_u64().unwrap_or(0) as usize,
                a[1].as_u64().unwrap_or(0) as usize,
            ),
            _ => (0, 0),
        };
        if h == 0 || w == 0 {
            return Err(RuntimeError::config(
                &folder.join("unet/config.json"),
                "no usable sample_size",
            ));
        }
        let latent_shape = [in_channels, h, w];

        let vae = if folder.join("vae_decoder/model.onnx").exists()
            || folder.join("vae_encoder/model.onnx").exists()
        {
            let encoder_file = folder.join("vae_encoder/model.onnx");
            let decoder_file = folder.join("vae_decoder/model.onnx");
            Some(open_vae(folder, encoder_file, decoder_file, options)?)
        } else {
            None
        };
        let image_shape = match &vae {
            Some(_) => {
                let config = read_json(&folder.join("vae_decoder/config.json"))?;
                let blocks = config["block_out_channels"]
                    .as_array()
                    .map_or(1, Vec::len)
                    .max(1);
                let factor = 1usize << (blocks - 1);
                let channels = config["out_channels"].as_u64().unwrap_or(3) as usize;
                [channels, h * factor, w * factor]
            }
            None => latent_shape,
        };
        if image_shape[0] != 1 && image_shape[0] != 3 {
            return Err(RuntimeError::interface(
                folder,
                format!(
                    "images with {} channels; 1 (grey) or 3 (RGB) are supported",
                    image_shape[0]
                ),
            ));
        }

        let conditioning = if unet_io.condition == "class_labels" {
            let classes = unet_config["num_class_embeds"].as_i64().ok_or_else(|| {
                RuntimeError::config(
                    &folder.join("unet/config.json"),
                    "class-conditional UNet without num_class_embeds",
                )
            })?;
            Conditioning::Class {
                null_class: classes - 1,
            }
        } else {
            let file = folder.join("text_encoder/model.onnx");
            Conditioning::Text(Box::new(open_text_encoder(folder, file, options)?))
        };
        Ok(DiffusionModel {
            device: onnx::resolved_device(options),
            folder: folder.to_path_buf(),
            digest: super::digest::folder_digest(folder)?,
            class_names: read_generator_meta(folder)?,
            encodings: Encodings::default(),
            scheduler_config,
            unet,
            unet_io,
            unet_file,
            latent_shape,
            image_shape,
            vae,
            conditioning,
        })
    }

    /// Floats in one latent.
    pub fn latent_len(&self) -> usize {
        self.latent_shape.iter().product()
    }
    /// Floats in one image.
    pub fn image_len(&self) -> usize {
        self.image_shape.iter().product()
    }
    /// Whether the VAE encoder gives a posterior (`latent_parameters`: mean and log-variance),
    /// so that `vae_latent` decides a source's latent.
    pub fn has_posterior(&self) -> bool {
        self.vae
            .as_ref()
            .is_some_and(|v| v.encoder_gives_parameters)
    }
}

fn open_vae(
    folder: &Path,
    encoder_file: PathBuf,
    decoder_file: PathBuf,
    options: &SessionOptions,
) -> Result<Vae, RuntimeError> {
    let encoder = onnx::open_shared(&encoder_file, options)?;
    let decoder = onnx::open_shared(&decoder_file, options)?;
    let (ein, eout) = (
        onnx::inputs(encoder.session()),
        onnx::outputs(encoder.session()),
    );
    let fail = |file: &Path, message: String| RuntimeError::interface(file, message);
    let encoder_input = find(&ein, &["sample"]).ok_or_else(|| {
        fail(
            &encoder_file,
            format!("no `sample` input (inputs: {:?})", names(&ein)),
        )
    })?;
    let (encoder_output, encoder_gives_parameters) = match (
        find(&eout, &["latent_parameters"]),
        find(&eout, &["latent_sample"]),
    ) {
        (Some(p), _) => (p.name.clone(), true),
        (None, Some(s)) => (s.name.clone(), false),
        _ => {
            return Err(fail(
                &encoder_file,
                format!(
                    "no `latent_parameters` or `latent_sample` output (outputs: {:?})",
                    names(&eout)
                ),
            ))
        }
    };
    let (din, dout) = (
        onnx::inputs(decoder.session()),
        onnx::outputs(decoder.session()),
    );
    let decoder_input = find(&din, &["latent_sample"]).ok_or_else(|| {
        fail(
            &decoder_file,
            format!("no `latent_sample` input (inputs: {:?})", names(&din)),
        )
    })?;
    let decoder_output = find(&dout, &["sample"])
        .or(dout.first())
        .ok_or_else(|| fail(&decoder_file, "no outputs".into()))?;
    let mut scaling_factor = 0.18215;
    for config in ["vae_encoder/config.json", "vae_decoder/config.json"] {
        let file = folder.join(config);
        if file.exists() {
            if let Some(s) = read_json(&file)?["scaling_factor"].as_f64() {
                scaling_factor = s as f32;
            }
        }
    }
    Ok(Vae {
        encoder_input: encoder_input.name.clone(),
        encoder_output,
        encoder_gives_parameters,
        decoder_input: decoder_input.name.clone(),
        decoder_output: decoder_output.name.clone(),
        encoder,
        decoder,
        scaling_factor,
        encoder_file,
        decoder_file,
    })
}

fn open_text_encoder(
    folder: &Path,
    file: PathBuf,
    options: &SessionOptions,
) -> Result<TextEncoder, RuntimeError> {
    if !file.exists() {
        return Err(RuntimeError::Missing {
            path: file,
            what: "missing (the UNet takes encoder_hidden_states, so a text encoder is needed)",
        });
    }
    let tokenizer = ClipTokenizer::from_folder(&folder.join("tokenizer"))?;
    let session = onnx::open_shared(&file, options)?;
    let (inputs, outputs) = (
        onnx::inputs(session.session()),
        onnx::outputs(session.session()),
    );
    let input = find(&inputs, &["input_ids"]).ok_or_else(|| {
        RuntimeError::interface(
            &file,
            format!("no `input_ids` input (inputs: {:?})", names(&inputs)),
        )
    })?;
    let input_is_int32 = match input.element_type {
        Some(TensorElementType::Int64) => false,
        Some(TensorElementType::Int32) => true,
        _ => {
            return Err(RuntimeError::interface(
                &file,
                format!("`input_ids` is {}, expected Int64 or Int32", input.element),
            ))
        }
    };
    let output = find(&outputs, &["last_hidden_state"]).ok_or_else(|| {
        RuntimeError::interface(
            &file,
            format!(
                "no `last_hidden_state` output (outputs: {:?})",
                names(&outputs)
            ),
        )
    })?;
    Ok(TextEncoder {
        input: input.name.clone(),
        input_is_int32,
        output: output.name.clone(),
        session,
        tokenizer,
        file,
    })
}
