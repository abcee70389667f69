//! Prompts to token ids for a CLIP export, as transformers' `CLIPProcessor(text=..., padding=True,
//! truncation=True)` makes them: start token, BPE tokens, end token, cut to the text model's
//! length, the batch padded to its longest prompt with the pad token (CLIP's end-of-text) and an
//! attention mask of ones then zeros. The tokenizer comes from `tokenizer.json` when the export
//! has one, else from `vocab.json` + `merges.txt` through the project's CLIP tokenizer.

use super::error::{read_json, ScorerError};
use crate::runtime::diffusion::tokenizer::ClipTokenizer;
use serde_json::Value as Json;
use std::path::{Path, PathBuf};
use tokenizers::{Tokenizer, TruncationParams};

/// Token ids and attention mask for a batch of prompts, row-major [count, length].
#[derive(Clone, Debug, PartialEq)]
pub struct TokenBatch {
    pub ids: Vec<i64>,
    pub mask: Vec<i64>,
    pub count: usize,
    pub length: usize,
}

enum Encoder {
    /// A `tokenizer.json`, whose post-processor adds the start and end tokens.
    Json(Box<Tokenizer>),
    /// The project's CLIP tokenizer, which pads to its own length; `eos` ends the prompt.
    Vocab {
        tokenizer: Box<ClipTokenizer>,
        eos: u32,
    },
}

/// A CLIP export's tokenizer.
pub struct PromptTokenizer {
    encoder: Encoder,
    pad: u32,
    max_length: usize,
    folder: PathBuf,
}

/// A special token's text, written as a string or as `{"content": ...}`.
fn special(config: &Json, name: &str) -> Option<String> {
    match &config[name] {
        Json::String(s) => Some(s.clone()),
        Json::Object(o) => o.get("content").and_then(Json::as_str).map(str::to_string),
        _ => None,
    }
}

impl PromptTokenizer {
    /// Opens the tokenizer in `folder`; `positions` is the text model's
    /// `max_position_embeddings` when `config.json` gives it.
    pub fn open(folder: &Path, positions: Option<usize>) -> Result<PromptTokenizer, ScorerError> {
        let mut config = Json::Null;
        for name in ["tokenizer_config.json", "special_tokens_map.json"] {
            let file = folder.join(name);
            if file.is_file() {
                let json = read_json(&file)?;
                if config.is_null() {
                    config = json;
                } else if let (Json::Object(into), Json::Object(from)) = (&mut config, json) {
                    for (k, v) in from {
                        into.entry(k).or_insert(v);
                    }
                }
            }
        }
        // transformers writes a huge number for "no limit".
        let declared = config["model_max_length"]
            .as_u64()
            .filter(|n| (3..100_000).contains(n))
            .map(|n| n as usize);
        let max_length = match (declared, positions) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b).unwrap_or(77),
        };
        let json_file = folder.join("tokenizer.json");
        let (encoder, default_pad) = if json_file.is_file() {
            let mut tokenizer = Tokenizer::from_file(&json_file)
                .map_err(|e| ScorerError::bad(&json_file, e.to_string()))?;
            tokenizer
                .with_truncation(Some(TruncationParams {
                    max_length,
                    ..TruncationParams::default()
                }))
                .map_err(|e| ScorerError::bad(&json_file, e.to_string()))?;
            let empty = tokenizer
                .encode("", true)
                .map_err(|e| ScorerError::bad(&json_file, e.to_string()))?;
            let &[_, eos] = empty.get_ids() else {
                return Err(ScorerError::bad(
                    &json_file,
                    format!(
                        "an empty prompt gives {:?}; a CLIP tokenizer adds a start and an end token",
                        empty.get_ids()
                    ),
                ));
            };
            (Encoder::Json(Box::new(tokenizer)), eos)
        } else {
            let tokenizer = ClipTokenizer::from_folder(folder).map_err(ScorerError::Runtime)?;
            // It pads an empty prompt to [start, end, pad, pad, ...].
            let probe = tokenizer
                .encode("")
                .map_err(|e| ScorerError::Query(e.to_string()))?;
            let (eos, pad) = (probe[1], probe.get(2).copied().unwrap_or(probe[1]));
            (
                Encoder::Vocab {
                    tokenizer: Box::new(tokenizer),
                    eos,
                },
                pad,
            )
        };
        let pad = match (&encoder, special(&config, "pad_token")) {
            (Encoder::Json(t), Some(token)) => t.token_to_id(&token).unwrap_or(default_pad),
            _ => default_pad,
        };
        Ok(PromptTokenizer {
            encoder,
            pad,
            max_length,
            folder: folder.to_path_buf(),
        })
    }

    /// The longest token sequence, start and end tokens included.
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// `prompt`'s ids: start token, at most `max_length - 2` tokens, end token.
    pub fn encode(&self, prompt: &str) -> Result<Vec<u32>, ScorerError> {
        let fail = |e: &dyn std::fmt::Display| {
            ScorerError::Query(format!(
                "{}: cannot tokenize {prompt:?}: {e}",
                self.folder.display()
            ))
        };
        match &self.encoder {
            Encoder::Json(tokenizer) => Ok(tokenizer
                .encode(prompt, true)
                .map_err(|e| fail(&e))?
                .get_ids()
                .to_vec()),
            Encoder::Vocab { tokenizer, eos } => {
                let mut ids = tokenizer.encode(prompt).map_err(|e| fail(&e))?;
                let end = ids[1..]
                    .iter()
                    .position(|id| id == eos)
                    .map_or(ids.len(), |p| p + 2);
                ids.truncate(end.min(self.max_length));
                if ids.last() != Some(eos) {
                    *ids.last_mut().expect("at least the start token") = *eos;
                }
                Ok(ids)
            }
        }
    }

    /// Encodes `prompts` together, padded to the longest.
    pub fn batch(&self, prompts: &[&str]) -> Result<TokenBatch, ScorerError> {
        let encoded = prompts
            .iter()
            .map(|p| self.encode(p))
            .collect::<Result<Vec<_>, _>>()?;
        let length = encoded.iter().map(Vec::len).max().unwrap_or(0);
        let mut batch = TokenBatch {
            ids: Vec::with_capacity(encoded.len() * length),
            mask: Vec::with_capacity(encoded.len() * length),
            count: encoded.len(),
            length,
        };
        for ids in &encoded {
            batch.ids.extend(ids.iter().map(|&id| i64::from(id)));
            batch
                .ids
                .extend(std::iter::repeat_n(i64::from(self.pad), length - ids.len()));
            batch.mask.extend(std::iter::repeat_n(1, ids.len()));
            batch
                .mask
                .extend(std::iter::repeat_n(0, length - ids.len()));
        }
        Ok(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPO: &str = env!("CARGO_MANIFEST_DIR");

    #[test]
    fn both_tokenizer_sources_agree_and_pad_to_the_longest() {
        let clip = Path::new(REPO).join("models/tiny-clip");
        let json = PromptTokenizer::open(&clip, Some(77)).unwrap();
        // The same vocabulary without tokenizer.json goes through vocab.json + merges.txt.
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "vocab.json",
            "merges.txt",
            "tokenizer_config.json",
            "special_tokens_map.json",
        ] {
            std::fs::copy(clip.join(name), dir.path().join(name)).unwrap();
        }
        let vocab = PromptTokenizer::open(dir.path(), Some(77)).unwrap();
        let prompts = [
            "a photo of a coat",
            "  A Photo of an ANKLE boot, on white!  ",
            "",
        ];
        let a = json.batch(&prompts).unwrap();
        assert_eq!(a, vocab.batch(&prompts).unwrap());
        assert_eq!(&a.ids[..8], &[4094, 320, 1125, 539, 320, 622, 536, 4095]);
        assert_eq!((a.count, a.length), (3, a.ids.len() / 3));
        let last = &a.ids[2 * a.length..];
        assert_eq!(&last[..3], &[4094, 4095, 4095]);
        assert_eq!(a.mask[2 * a.length..].iter().sum::<i64>(), 2);
        // Long prompts are cut to the text model's length, still ending with the end token.
        let long = "a very long prompt ".repeat(40);
        for tokenizer in [&json, &vocab] {
            let ids = tokenizer.encode(&long).unwrap();
            assert_eq!((ids.len(), ids[76]), (77, 4095));
        }
        let short = PromptTokenizer::open(&clip, Some(5)).unwrap();
        assert_eq!(short.encode(&long).unwrap().len(), 5);
    }
}
