//! What runs around the UNet: the text encoder (each prompt once per model, `encodings`), the VAE
//! encoder (each source once; its posterior, sampled or its mean taken per image, see
//! `posterior`) and decoder, and PNG encoding of the results. On the CPU the VAE takes one image
//! per call ([`vae_batch`]).

use super::encodings::ENCODED_LIMIT;
use super::img2img::Generator;
use super::model::{Conditioning, DiffusionModel, TextEncoder, Vae};
use super::posterior::Encoded;
use super::shrink::{halve, in_chunks};
use crate::record::Digest;
use crate::runtime::device::Device;
use crate::runtime::error::RuntimeError;
use crate::runtime::shared_session::SharedSession;
use ort::value::TensorRef;
use std::path::Path;
use std::sync::Arc;

impl Generator {
    /// Fills this generator's view of its model's prompt states (`model.encodings`) with `prompts`.
    pub(super) fn encode_prompts(&mut self, prompts: Vec<String>) -> Result<(), RuntimeError> {
        let model = Arc::clone(&self.model);
        let Conditioning::Text(text) = &model.conditioning else {
            return Ok(());
        };
        let mut missing: Vec<(String, ())> = prompts
            .into_iter()
            .filter(|p| !self.prompts.contains_key(p))
            .map(|p| (p, ()))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        missing.sort();
        let got = model
            .encodings
            .prompts
            .get_or_encode(missing, |todo| encode_text(text, todo))?;
        self.prompts.extend(got);
        Ok(())
    }

    /// Fills this generator's view of its model's source latents (`model.encodings`) with
    /// `sources`.
    pub(super) fn encode_sources(
        &mut self,
        sources: Vec<(Digest, Arc<Vec<f32>>)>,
    ) -> Result<(), RuntimeError> {
        // Evict before deciding what is missing, so nothing this batch needs is dropped.
        if self.latents.len() + sources.len() > ENCODED_LIMIT {
            self.latents.clear();
        }
        let missing: Vec<(Digest, Arc<Vec<f32>>)> = sources
            .into_iter()
            .filter(|(digest, _)| !self.latents.contains_key(digest))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let model = Arc::clone(&self.model);
        let got = model
            .encodings
            .latents
            .get_or_encode(missing, |todo| encode_images(&model, todo))?;
        self.latents.extend(got);
        Ok(())
    }

    /// The images of `latents`, `batch` being the UNet's; a decoder call that runs out of memory
    /// halves this generator's batch ([`Generator::shrink`]).
    pub(super) fn decode(
        &mut self,
        latents: Vec<Vec<f32>>,
        batch: usize,
    ) -> Result<Vec<Vec<f32>>, RuntimeError> {
        let model = Arc::clone(&self.model);
        let Some(vae) = &model.vae else {
            return Ok(latents);
        };
        in_chunks(
            &latents,
            vae_batch(model.device, batch),
            |chunk| decode_chunk(&model, vae, chunk),
            |images, error| self.shrink(images, error),
        )
    }
}

/// The images of `chunk`'s latents in one VAE-decoder call.
fn decode_chunk(
    model: &DiffusionModel,
    vae: &Vae,
    chunk: &[Vec<f32>],
) -> Result<Vec<Vec<f32>>, RuntimeError> {
    let [c, h, w] = model.latent_shape;
    let image_len = model.image_len();
    let scaled: Vec<f32> = chunk
        .iter()
        .flat_map(|l| l.iter().map(|v| v / vae.scaling_factor))
        .collect();
    let (session, file) = (&vae.decoder, &vae.decoder_file);
    let names = (vae.decoder_input.as_str(), vae.decoder_output.as_str());
    vae_call(
        session,
        file,
        names,
        [chunk.len(), c, h, w],
        &scaled,
        |data| {
            if data.len() != chunk.len() * image_len {
                return Err(RuntimeError::Output {
                    file: file.clone(),
                    message: format!(
                        "decoder gave {} values for {} images of {image_len}",
                        data.len(),
                        chunk.len()
                    ),
                });
            }
            Ok(data.chunks(image_len).map(<[f32]>::to_vec).collect())
        },
    )
}

/// One VAE call: `session` (of `file`) on `data` of `shape` under `names` (input, output), its
/// output read by `read`. A call on more images than `DISCL_FAIL_ALLOC` allows fails as out of
/// memory.
fn vae_call<U>(
    session: &SharedSession,
    file: &Path,
    (input, output): (&str, &str),
    shape: [usize; 4],
    data: &[f32],
    read: impl FnOnce(&[f32]) -> Result<Vec<U>, RuntimeError>,
) -> Result<Vec<U>, RuntimeError> {
    if crate::store::failpoint::allocation_refused(shape[0]) {
        return Err(RuntimeError::simulated_out_of_memory(file, shape[0]));
    }
    let fail = |source: ort::Error| RuntimeError::Inference {
        file: file.to_path_buf(),
        source,
    };
    let value = TensorRef::from_array_view((shape, data)).map_err(fail)?;
    let out = session
        .run(&[(input, &value.into_dyn())], output)
        .map_err(fail)?;
    let (_, values) = out.try_extract_tensor::<f32>().map_err(fail)?;
    read(values)
}

/// Encodes a CHW image with values in [-1, 1] as PNG (grey for one channel, RGB for three).
pub fn to_png(image: &[f32], shape: [usize; 3]) -> Result<Vec<u8>, RuntimeError> {
    let [c, h, w] = shape;
    let plane = h * w;
    let byte = |v: f32| (((v.clamp(-1.0, 1.0) + 1.0) * 0.5) * 255.0).round() as u8;
    let mut bytes = Vec::new();
    let mut cursor = std::io::Cursor::new(&mut bytes);
    let result = match c {
        1 => image::GrayImage::from_fn(w as u32, h as u32, |x, y| {
            image::Luma([byte(image[y as usize * w + x as usize])])
        })
        .write_to(&mut cursor, image::ImageFormat::Png),
        3 => image::RgbImage::from_fn(w as u32, h as u32, |x, y| {
            let i = y as usize * w + x as usize;
            image::Rgb([
                byte(image[i]),
                byte(image[plane + i]),
                byte(image[2 * plane + i]),
            ])
        })
        .write_to(&mut cursor, image::ImageFormat::Png),
        channels => return Err(RuntimeError::Channels { channels }),
    };
    result.map_err(|source| RuntimeError::Encode { source })?;
    Ok(bytes)
}

/// The states of `prompts` in one text-encoder call, one per prompt.
fn encode_text(
    text: &TextEncoder,
    prompts: &[(String, ())],
) -> Result<Vec<Vec<f32>>, RuntimeError> {
    let seq = text.tokenizer.max_length;
    let mut ids = Vec::with_capacity(prompts.len() * seq);
    for (prompt, _) in prompts {
        ids.extend(text.tokenizer.encode(prompt)?.into_iter().map(i64::from));
    }
    let fail = |source: ort::Error| RuntimeError::Inference {
        file: text.file.clone(),
        source,
    };
    let shape = [prompts.len(), seq];
    let out = if text.input_is_int32 {
        let ids: Vec<i32> = ids.iter().map(|i| *i as i32).collect();
        let input = TensorRef::from_array_view((shape, ids.as_slice())).map_err(fail)?;
        text.session
            .run(&[(text.input.as_str(), &input.into_dyn())], &text.output)
            .map_err(fail)?
    } else {
        let input = TensorRef::from_array_view((shape, ids.as_slice())).map_err(fail)?;
        text.session
            .run(&[(text.input.as_str(), &input.into_dyn())], &text.output)
            .map_err(fail)?
    };
    let (_, hidden) = out.try_extract_tensor::<f32>().map_err(fail)?;
    let per = hidden.len() / prompts.len();
    Ok(hidden.chunks(per).map(<[f32]>::to_vec).collect())
}

/// The encodings of `sources` (the images as given, for a model without a VAE), one per source;
/// a VAE-encoder call that runs out of memory is made again with half the images.
fn encode_images(
    model: &DiffusionModel,
    sources: &[(Digest, Arc<Vec<f32>>)],
) -> Result<Vec<Encoded>, RuntimeError> {
    let image_len = model.image_len();
    if let Some((_, image)) = sources.iter().find(|(_, image)| image.len() != image_len) {
        return Err(RuntimeError::request(format!(
            "source image has {} values, the model takes {:?}",
            image.len(),
            model.image_shape
        )));
    }
    let Some(vae) = &model.vae else {
        return Ok(sources
            .iter()
            .map(|(_, image)| Encoded::given(Arc::clone(image), 1.0))
            .collect());
    };
    in_chunks(
        sources,
        vae_batch(model.device, sources.len()),
        |chunk| encode_chunk(model, vae, chunk),
        halve,
    )
}

/// The encodings of `chunk`'s images in one VAE-encoder call.
fn encode_chunk(
    model: &DiffusionModel,
    vae: &Vae,
    chunk: &[(Digest, Arc<Vec<f32>>)],
) -> Result<Vec<Encoded>, RuntimeError> {
    let [c, h, w] = model.image_shape;
    let latent_len = model.latent_shape.iter().product::<usize>();
    // latent_parameters hold the mean then the log-variance; latent_sample is a latent.
    let expected = if vae.encoder_gives_parameters {
        2 * latent_len
    } else {
        latent_len
    };
    let pixels: Vec<f32> = chunk
        .iter()
        .flat_map(|(_, image)| image.iter().copied())
        .collect();
    let (session, file) = (&vae.encoder, &vae.encoder_file);
    let names = (vae.encoder_input.as_str(), vae.encoder_output.as_str());
    vae_call(
        session,
        file,
        names,
        [chunk.len(), c, h, w],
        &pixels,
        |data| {
            let per = data.len() / chunk.len();
            if per != expected {
                return Err(RuntimeError::Output {
                    file: file.clone(),
                    message: format!("encoder gave {per} values per image, expected {expected}"),
                });
            }
            Ok(data
                .chunks(per)
                .map(|image| match vae.encoder_gives_parameters {
                    true => Encoded::posterior(image, vae.scaling_factor),
                    false => Encoded::given(Arc::new(image.to_vec()), vae.scaling_factor),
                })
                .collect())
        },
    )
}

/// Images per VAE call, encoder and decoder, where the UNet takes `batch`: on the CPU one.
/// Measured on an SD VAE at 64² (ONNX Runtime 1.31, one thread), eight images per decoder call
/// took 238 ms an image against 239 ms one at a time while holding 206 MB more (the encoder:
/// 99 against 111 ms, once per source, 42 MB more); at 512² one image's activations pass a
/// gigabyte. The convolutions at image resolution keep a core busy with one image; on a GPU
/// more images per call pay.
fn vae_batch(device: Device, batch: usize) -> usize {
    match device {
        Device::Cpu => 1,
        _ => batch.max(1),
    }
}
