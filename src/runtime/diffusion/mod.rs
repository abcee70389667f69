//! Image-guided diffusion on ONNX models in the diffusers/optimum folder layout: loading and
//! checking a model folder (`model`, with the UNet's interface in `unet`) and its cached
//! digest (`digest`), the CLIP tokenizer (`tokenizer`), keyed per-image noise (`noise`), the
//! VAE posterior of a source (`posterior`), what a model has encoded (`encodings`), what is
//! asked for (`request`), and batched img2img over the λ spectrum (`img2img`), with the UNet's
//! IO binding on CUDA (`device_io`), smaller batches after an allocation failure (`shrink`) and
//! the batch chosen by measurement (`batch_tuner`).

pub mod batch_tuner;
pub mod codec;
mod device_io;
pub mod digest;
pub mod encodings;
pub mod img2img;
pub mod model;
pub mod noise;
pub mod posterior;
mod request;
mod shrink;
pub mod tokenizer;
pub mod unet;

pub use img2img::{Condition, GenerationSettings, ImageRequest};
pub use model::DiffusionModel;
pub use noise::{ImageNoise, NoiseKey};
pub use posterior::VaeLatent;
