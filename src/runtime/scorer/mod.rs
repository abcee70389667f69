//! Quality scorers (METHOD §4): the raw cosine between a synthetic image's embedding and the
//! text embedding of its class prompt, and between the image and the real image it was made
//! from. Two kinds behind one API, told apart by the files in the model folder:
//! - a CLIP export exactly as optimum writes it for `zero-shot-image-classification`
//!   ([`clip`]): open vocabulary, images prepared as its `preprocessor_config.json` says;
//! - a judge ([`judge`]): an image encoder plus a table of class text embeddings, described by a
//!   `discl.toml` of `kind = "judge"`; closed vocabulary.
//!
//! Prompt embeddings and source-image embeddings are cached (bounded), so each prompt and each
//! source is embedded once however many synthetic images share it. [`Scorer`] runs on the
//! inference service as a `BatchWorker` (see `worker`). Errors are the `thiserror` enum
//! [`ScorerError`]; the service's outputs carry its message as a `String`, as the classifier's do.

mod cache;
pub mod clip;
mod error;
pub mod judge;
pub mod preprocess;
pub mod resample;
pub mod text;
mod worker;

pub use error::ScorerError;
pub use worker::{QualityScore, ScoreItem, ScoreResult, SourceImage};

use crate::record::Digest;
use crate::runtime::diffusion::digest::folder_digest;
use crate::runtime::model_meta::META_FILE;
use crate::runtime::onnx::SessionOptions;
use cache::EmbeddingCache;
use clip::{ClipModel, MODEL_FILE};
use judge::Judge;
use preprocess::PREPROCESSOR_FILE;
use std::path::{Path, PathBuf};

/// How many prompt embeddings a scorer keeps by default.
pub const PROMPT_CACHE: usize = 4096;
/// How many source-image embeddings a scorer keeps by default.
pub const SOURCE_CACHE: usize = 16_384;

/// The text side of a score.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TextQuery {
    /// The judge's class with this index (label order). A CLIP export has no classes.
    Class(usize),
    /// A prompt, e.g. `a photo of a coat`. A judge answers only the prompts its table was made from.
    Prompt(String),
}

/// Which kind of scorer a folder holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScorerKind {
    Clip,
    Judge,
}

#[derive(Clone)]
enum Model {
    Clip(Box<ClipModel>),
    Judge(Box<Judge>),
}

/// Text and image embeddings from one call.
pub struct Embeddings {
    pub texts: Vec<Vec<f32>>,
    pub images: Vec<Vec<f32>>,
}

/// A loaded scorer with its embedding caches.
pub struct Scorer {
    model: Model,
    folder: PathBuf,
    digest: Digest,
    model_calls: u64,
    texts: EmbeddingCache<TextQuery>,
    sources: EmbeddingCache<Digest>,
}

/// The raw cosine of two embeddings, accumulated in f64; 0 when either is all zeros.
///
/// # Panics
/// When the lengths differ (embeddings of one scorer always agree).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "embeddings of different lengths");
    let (mut dot, mut aa, mut bb) = (0.0f64, 0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (f64::from(x), f64::from(y));
        dot += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa == 0.0 || bb == 0.0 {
        0.0
    } else {
        (dot / (aa.sqrt() * bb.sqrt())) as f32
    }
}

impl Scorer {
    /// Opens the scorer in `folder`: a judge when it has a `discl.toml`, a CLIP export when it
    /// has `preprocessor_config.json` (with `model.onnx` and the tokenizer files).
    pub fn open(folder: &Path, options: &SessionOptions) -> Result<Scorer, ScorerError> {
        let model = if folder.join(META_FILE).is_file() {
            Model::Judge(Box::new(Judge::open(folder, options)?))
        } else if folder.join(PREPROCESSOR_FILE).is_file() {
            Model::Clip(Box::new(ClipModel::open(folder, options)?))
        } else {
            let why = if folder.join(MODEL_FILE).is_file() {
                format!(
                    "{} has no {PREPROCESSOR_FILE} beside it; a CLIP export needs it (optimum writes it with the tokenizer files)",
                    folder.join(MODEL_FILE).display()
                )
            } else if !folder.is_dir() {
                "no such folder".to_string()
            } else {
                format!(
                    "expected a {META_FILE} of kind \"judge\", or an optimum CLIP export ({MODEL_FILE}, {PREPROCESSOR_FILE}, tokenizer files)"
                )
            };
            return Err(ScorerError::NotAScorer {
                folder: folder.to_path_buf(),
                why,
            });
        };
        Ok(Scorer {
            model,
            folder: folder.to_path_buf(),
            digest: folder_digest(folder).map_err(ScorerError::Runtime)?,
            model_calls: 0,
            texts: EmbeddingCache::new(PROMPT_CACHE),
            sources: EmbeddingCache::new(SOURCE_CACHE),
        })
    }

    /// Another scorer on the same model for another runner: on the CPU it shares this one's
    /// session (one copy of the weights); on a GPU it opens its own. Its caches start empty.
    pub fn another(&self, options: &SessionOptions) -> Result<Scorer, ScorerError> {
        let shareable = match &self.model {
            Model::Clip(clip) => clip.shareable(),
            Model::Judge(judge) => judge.shareable(),
        };
        if !shareable {
            return Scorer::open(&self.folder, options);
        }
        Ok(Scorer {
            model: self.model.clone(),
            folder: self.folder.clone(),
            digest: self.digest,
            model_calls: 0,
            texts: EmbeddingCache::new(self.texts.capacity()),
            sources: EmbeddingCache::new(self.sources.capacity()),
        })
    }

    /// Which kind of scorer this is.
    pub fn kind(&self) -> ScorerKind {
        match self.model {
            Model::Clip(_) => ScorerKind::Clip,
            Model::Judge(_) => ScorerKind::Judge,
        }
    }
    /// The model folder.
    pub fn folder(&self) -> &Path {
        &self.folder
    }
    /// Content hash of the model folder (every file but documentation): a memo key part.
    pub fn digest(&self) -> Digest {
        self.digest
    }
    /// A judge's class names in label order; `None` for a CLIP export.
    pub fn classes(&self) -> Option<&[String]> {
        match &self.model {
            Model::Clip(_) => None,
            Model::Judge(judge) => Some(&judge.meta().classes),
        }
    }
    /// Model (session) calls made so far.
    pub fn model_calls(&self) -> u64 {
        self.model_calls
    }
    /// How many (prompt, source-image) embeddings are cached now.
    pub fn cached_embeddings(&self) -> (usize, usize) {
        (self.texts.len(), self.sources.len())
    }
    /// Changes how many prompt and source-image embeddings are kept.
    pub fn set_cache_limits(&mut self, prompts: usize, sources: usize) {
        self.texts.set_capacity(prompts);
        self.sources.set_capacity(sources);
    }

    /// Decodes an image file's bytes, prepares it for the model and appends its CHW floats.
    pub fn prepare_image(&self, bytes: &[u8], out: &mut Vec<f32>) -> Result<(), ScorerError> {
        match &self.model {
            Model::Clip(clip) => {
                let image = image::load_from_memory(bytes)
                    .map_err(|e| ScorerError::Image(format!("cannot decode image: {e}")))?;
                clip.image_config().prepare(&image, out);
                Ok(())
            }
            Model::Judge(judge) => judge.prepare(bytes, out),
        }
    }

    /// Whether this scorer can embed `query`; the error says why not.
    pub fn check_query(&self, query: &TextQuery) -> Result<(), ScorerError> {
        match (&self.model, query) {
            (Model::Clip(_), TextQuery::Class(i)) => Err(ScorerError::Query(format!(
                "{}: a CLIP export has no class table (asked for class {i}); give the prompt text",
                self.folder.display()
            ))),
            (Model::Clip(clip), TextQuery::Prompt(p)) => clip.tokenizer().encode(p).map(drop),
            (Model::Judge(judge), TextQuery::Class(i)) => judge.class_embedding(*i).map(drop),
            (Model::Judge(judge), TextQuery::Prompt(p)) => judge.prompt_embedding(p).map(drop),
        }
    }

    /// Embeds new `texts` and `count` prepared images, in one model call where there is any
    /// model work; returns (text embeddings, image embeddings).
    fn embed_prepared(
        &mut self,
        texts: &[TextQuery],
        pixels: &[f32],
        count: usize,
    ) -> Result<Embeddings, ScorerError> {
        match &mut self.model {
            Model::Clip(clip) => {
                let mut prompts = Vec::with_capacity(texts.len());
                for query in texts {
                    match query {
                        TextQuery::Prompt(p) => prompts.push(p.as_str()),
                        TextQuery::Class(i) => {
                            return Err(ScorerError::Query(format!(
                                "{}: a CLIP export has no class table (asked for class {i}); give the prompt text",
                                self.folder.display()
                            )))
                        }
                    }
                }
                if prompts.is_empty() && count == 0 {
                    return Ok(Embeddings {
                        texts: Vec::new(),
                        images: Vec::new(),
                    });
                }
                self.model_calls += 1;
                clip.run(&prompts, pixels, count)
            }
            Model::Judge(judge) => {
                let texts = texts
                    .iter()
                    .map(|q| match q {
                        TextQuery::Class(i) => judge.class_embedding(*i).map(<[f32]>::to_vec),
                        TextQuery::Prompt(p) => judge.prompt_embedding(p).map(<[f32]>::to_vec),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let images = if count == 0 {
                    Vec::new()
                } else {
                    self.model_calls += 1;
                    judge.embed(pixels, count)?
                };
                Ok(Embeddings { texts, images })
            }
        }
    }

    /// Text embeddings of `queries`, in order; each new query is embedded once (all new ones
    /// in one model call) and remembered.
    pub fn embed_texts(&mut self, queries: &[TextQuery]) -> Result<Vec<Vec<f32>>, ScorerError> {
        let mut missing: Vec<TextQuery> = Vec::new();
        for query in queries {
            if !self.texts.contains(query) && !missing.contains(query) {
                self.check_query(query)?;
                missing.push(query.clone());
            }
        }
        let new = self.embed_prepared(&missing, &[], 0)?.texts;
        let out = queries
            .iter()
            .map(|q| match missing.iter().position(|m| m == q) {
                Some(i) => new[i].clone(),
                None => self.texts.get(q).expect("cached").clone(),
            })
            .collect();
        for (query, embedding) in missing.into_iter().zip(new) {
            self.texts.insert(query, embedding);
        }
        Ok(out)
    }

    /// Image embeddings of encoded images (PNG or JPEG bytes), in one model call.
    pub fn embed_images(&mut self, images: &[&[u8]]) -> Result<Vec<Vec<f32>>, ScorerError> {
        self.embed_labelled(
            images
                .iter()
                .enumerate()
                .map(|(i, b)| (format!("image {i}"), *b)),
        )
    }

    /// Image embeddings of image files, in one model call.
    pub fn embed_image_files<P: AsRef<Path>>(
        &mut self,
        paths: &[P],
    ) -> Result<Vec<Vec<f32>>, ScorerError> {
        let mut files = Vec::with_capacity(paths.len());
        for path in paths {
            let path = path.as_ref();
            let bytes = std::fs::read(path).map_err(|source| ScorerError::Read {
                file: path.to_path_buf(),
                source,
            })?;
            files.push((path.display().to_string(), bytes));
        }
        self.embed_labelled(
            files
                .iter()
                .map(|(label, bytes)| (label.clone(), bytes.as_slice())),
        )
    }

    fn embed_labelled<'a>(
        &mut self,
        images: impl Iterator<Item = (String, &'a [u8])>,
    ) -> Result<Vec<Vec<f32>>, ScorerError> {
        let (mut pixels, mut count) = (Vec::new(), 0);
        for (label, bytes) in images {
            self.prepare_image(bytes, &mut pixels)
                .map_err(|e| ScorerError::Image(format!("{label}: {e}")))?;
            count += 1;
        }
        Ok(self.embed_prepared(&[], &pixels, count)?.images)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_is_raw_and_scale_free() {
        assert!((cosine(&[1.0, 0.0], &[0.0, 2.0])).abs() < 1e-7);
        assert!((cosine(&[1.0, 1.0], &[3.0, 3.0]) - 1.0).abs() < 1e-7);
        assert!((cosine(&[1.0, 0.0], &[-1.0, 1.0]) + std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-7);
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 2.0]), 0.0);
        // f64 accumulation: no overflow for large f32 values.
        assert!((cosine(&[1e30, 1e30], &[1e30, 1e30]) - 1.0).abs() < 1e-6);
    }

    #[test]
    fn folders_that_are_no_scorer_say_what_was_expected() {
        let dir = tempfile::tempdir().unwrap();
        let err = Scorer::open(dir.path(), &SessionOptions::default())
            .err()
            .unwrap();
        assert!(matches!(err, ScorerError::NotAScorer { .. }), "{err}");
        assert!(
            err.to_string().contains("preprocessor_config.json"),
            "{err}"
        );
        std::fs::write(dir.path().join(MODEL_FILE), b"onnx").unwrap();
        let err = Scorer::open(dir.path(), &SessionOptions::default())
            .err()
            .unwrap();
        assert!(
            err.to_string()
                .contains("has no preprocessor_config.json beside it"),
            "{err}"
        );
        let err = Scorer::open(&dir.path().join("nothing"), &SessionOptions::default())
            .err()
            .unwrap();
        assert!(err.to_string().contains("no such folder"), "{err}");
    }
}
