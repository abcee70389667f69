//! Scoring batches on the inference service: each item is a synthetic image, the text it should
//! show and optionally the real image it was made from. A batch makes at most one model call:
//! its synthetic images, its source images not seen before and (for CLIP) its prompts not seen
//! before go in together. Prompt embeddings are remembered by query and source embeddings by the
//! source file's content digest, both in bounded caches, so each is embedded once.

use super::{cosine, Embeddings, Scorer, ScorerError, TextQuery};
use crate::record::Digest;
use crate::runtime::input_file::{read_regular, MAX_CHECKED_INPUT_BYTES};
use crate::runtime::persisted::Persist;
use crate::runtime::service::{BatchWorker, ServiceStats};
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The real image a synthetic one was made from.
#[derive(Clone, Debug, PartialEq)]
pub struct SourceImage {
    pub path: PathBuf,
    /// The blake3 digest of the file's bytes (`Digest::of`, as the source operator records
    /// it), which lets a cached embedding be used without reading the file; `None`: the file is
    /// read and hashed.
    pub digest: Option<Digest>,
}

/// One synthetic image to score.
#[derive(Clone, Debug, PartialEq)]
pub struct ScoreItem {
    /// The synthetic image file.
    pub image: PathBuf,
    /// The text it should show: its class prompt.
    pub text: TextQuery,
    /// The real image it was made from, for the image-to-image score.
    pub source: Option<SourceImage>,
}

/// The scores of one synthetic image.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct QualityScore {
    /// Raw cosine between the image's and the text's embeddings (not CLIPScore's 2.5x).
    pub text_score: f32,
    /// Raw cosine between the image's and its source image's embeddings, when a source was given.
    pub image_score: Option<f32>,
}

/// The result for one [`ScoreItem`]; the error names the file or query at fault.
pub type ScoreResult = Result<QualityScore, String>;

/// Where an item's source embedding comes from.
#[derive(Clone, Copy)]
enum Source {
    None,
    Cached(Digest),
    /// Index in this batch's images.
    New(usize),
}

/// One batch on its way to the model: its images prepared back to back, and why items failed.
struct Batch {
    pixels: Vec<f32>,
    count: usize,
    failed: Vec<Option<String>>,
}

impl Batch {
    /// Prepares one more image; returns its index in the batch.
    fn add(&mut self, scorer: &Scorer, bytes: &[u8]) -> Result<usize, ScorerError> {
        let mark = self.pixels.len();
        scorer
            .prepare_image(bytes, &mut self.pixels)
            .inspect_err(|_| self.pixels.truncate(mark))?;
        self.count += 1;
        Ok(self.count - 1)
    }
}

impl Scorer {
    /// Scores a batch (see the module header); one result per item, in order.
    pub fn score(&mut self, items: &[ScoreItem]) -> Vec<ScoreResult> {
        let mut batch = Batch {
            pixels: Vec::new(),
            count: 0,
            failed: vec![None; items.len()],
        };
        let new_texts = self.new_texts(items, &mut batch);
        let synthetic = self.add_synthetic(items, &mut batch);
        let (sources, new_sources) = self.add_sources(items, &mut batch);
        let Batch {
            pixels,
            count,
            mut failed,
        } = batch;
        let Embeddings { texts, images } = match self.embed_prepared(&new_texts, &pixels, count) {
            Ok(embedded) => embedded,
            Err(e) => {
                let message = e.to_string();
                return failed
                    .into_iter()
                    .map(|f| Err(f.unwrap_or_else(|| message.clone())))
                    .collect();
            }
        };
        let results = items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                if let Some(e) = failed[i].take() {
                    return Err(e);
                }
                let image = &images[synthetic[i]];
                let text = match new_texts.iter().position(|t| *t == item.text) {
                    Some(j) => &texts[j],
                    None => self
                        .texts
                        .get(&item.text)
                        .expect("cached before this batch"),
                };
                let source = match sources[i] {
                    Source::None => None,
                    Source::New(at) => Some(&images[at]),
                    Source::Cached(digest) => {
                        Some(self.sources.get(&digest).expect("cached before this batch"))
                    }
                };
                Ok(QualityScore {
                    text_score: cosine(image, text),
                    image_score: source.map(|s| cosine(image, s)),
                })
            })
            .collect();
        // Remembered only now: inserting may evict entries this batch was still using.
        for (query, embedding) in new_texts.into_iter().zip(texts) {
            self.texts.insert(query, embedding);
        }
        for (digest, at) in new_sources {
            self.sources.insert(digest, images[at].clone());
        }
        results
    }

    /// The distinct queries not embedded yet. A query the scorer cannot answer fails its
    /// items (each is checked, so repeats of a bad query fail too).
    fn new_texts(&self, items: &[ScoreItem], batch: &mut Batch) -> Vec<TextQuery> {
        let mut new_texts: Vec<TextQuery> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            if self.texts.contains(&item.text) || new_texts.contains(&item.text) {
                continue;
            }
            match self.check_query(&item.text) {
                Ok(()) => new_texts.push(item.text.clone()),
                Err(e) => batch.failed[i] = Some(e.to_string()),
            }
        }
        new_texts
    }

    /// Prepares each item's synthetic image; returns their indices in the batch.
    fn add_synthetic(&self, items: &[ScoreItem], batch: &mut Batch) -> Vec<usize> {
        let mut at = vec![0usize; items.len()];
        for (i, item) in items.iter().enumerate() {
            if batch.failed[i].is_some() {
                continue;
            }
            let path = item.image.display();
            let added = std::fs::read(&item.image)
                .map_err(|e| format!("cannot read image {path}: {e}"))
                .and_then(|bytes| {
                    batch
                        .add(self, &bytes)
                        .map_err(|e| format!("image {path}: {e}"))
                });
            match added {
                Ok(index) => at[i] = index,
                Err(e) => batch.failed[i] = Some(e),
            }
        }
        at
    }

    /// Finds each item's source embedding by content: in the cache (without reading the file
    /// when the item gives its digest), else prepared into the batch once per distinct source.
    fn add_sources(
        &self,
        items: &[ScoreItem],
        batch: &mut Batch,
    ) -> (Vec<Source>, IndexMap<Digest, usize>) {
        let mut new_sources: IndexMap<Digest, usize> = IndexMap::new();
        let mut sources = vec![Source::None; items.len()];
        let known = |new: &IndexMap<Digest, usize>, digest: Digest| match new.get(&digest) {
            Some(&at) => Some(Source::New(at)),
            None => self
                .sources
                .contains(&digest)
                .then_some(Source::Cached(digest)),
        };
        for (i, item) in items.iter().enumerate() {
            let (Some(source), None) = (&item.source, &batch.failed[i]) else {
                continue;
            };
            if let Some(found) = source.digest.and_then(|d| known(&new_sources, d)) {
                sources[i] = found;
                continue;
            }
            let path = source.path.display();
            let bytes = match read_regular(&source.path, MAX_CHECKED_INPUT_BYTES) {
                Ok(bytes) => bytes,
                Err(e) => {
                    batch.failed[i] = Some(format!("cannot read source image {path}: {e}"));
                    continue;
                }
            };
            let digest = source.digest.unwrap_or_else(|| Digest::of(&bytes));
            if let Some(found) = known(&new_sources, digest) {
                sources[i] = found;
                continue;
            }
            match batch.add(self, &bytes) {
                Ok(at) => {
                    new_sources.insert(digest, at);
                    sources[i] = Source::New(at);
                }
                Err(e) => batch.failed[i] = Some(format!("source image {path}: {e}")),
            }
        }
        (sources, new_sources)
    }
}

impl BatchWorker for Scorer {
    type Item = ScoreItem;
    type Output = ScoreResult;

    fn failed(message: &str) -> ScoreResult {
        Err(message.to_string())
    }

    fn run(&mut self, items: Vec<ScoreItem>, stats: &ServiceStats) -> Vec<ScoreResult> {
        let before = self.model_calls;
        let results = self.score(&items);
        for _ in before..self.model_calls {
            stats.model_call();
        }
        results
    }
}

impl Persist for Scorer {
    const TABLE: &'static str = "quality";
    type Stored = QualityScore;
    /// Adds the source image's content digest to the operator's key (scorer, synthetic image,
    /// text): the image score depends on the source's bytes, which only this thread reads.
    /// The digest found is handed on to the scorer, which then need not hash the file again.
    fn answer_key(&mut self, key: Digest, item: &mut ScoreItem) -> Option<Digest> {
        let mut h = blake3::Hasher::new_derive_key("discl 2026-11 quality answer source v1");
        h.update(&key.0);
        if let Some(source) = &mut item.source {
            let digest = match source.digest {
                Some(digest) => digest,
                None => Digest::of(&std::fs::read(&source.path).ok()?),
            };
            source.digest = Some(digest);
            h.update(&[1]);
            h.update(&digest.0);
        } else {
            h.update(&[0]);
        }
        Some(Digest(*h.finalize().as_bytes()))
    }
    fn to_stored(output: &ScoreResult) -> Option<QualityScore> {
        output.as_ref().ok().copied()
    }
    fn from_stored(stored: QualityScore) -> ScoreResult {
        Ok(stored)
    }
}
