//! CLIP's BPE tokenizer, built with the `tokenizers` crate from a Stable Diffusion export's
//! `tokenizer/` folder (`vocab.json` + `merges.txt`; SD 1.x ships no `tokenizer.json`), set up
//! the way transformers converts CLIPTokenizer: NFC, whitespace folded, lower case, CLIP's
//! split pattern, byte-level BPE with `</w>` word ends, then BOS … EOS padded to 77.

use crate::runtime::error::RuntimeError;
use serde_json::Value as Json;
use std::path::Path;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::{Lowercase, Replace, Sequence as Normalizers, NFC};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizers;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{SplitDelimiterBehavior, Tokenizer};

const CLIP_PATTERN: &str = r"'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

/// A CLIP tokenizer that pads every prompt to the text encoder's length.
pub struct ClipTokenizer {
    tokenizer: Tokenizer,
    bos: u32,
    eos: u32,
    pad: u32,
    pub max_length: usize,
}

fn special(config: &Json, name: &str) -> Option<String> {
    match &config[name] {
        Json::String(s) => Some(s.clone()),
        Json::Object(o) => o.get("content").and_then(Json::as_str).map(str::to_string),
        _ => None,
    }
}

impl ClipTokenizer {
    /// Builds the tokenizer from `folder/vocab.json`, `merges.txt` and the special-token files.
    pub fn from_folder(folder: &Path) -> Result<ClipTokenizer, RuntimeError> {
        let vocab = folder.join("vocab.json");
        let merges = folder.join("merges.txt");
        for file in [&vocab, &merges] {
            if !file.is_file() {
                return Err(RuntimeError::Missing {
                    path: file.to_path_buf(),
                    what: "missing tokenizer file",
                });
            }
        }
        let mut config = Json::Null;
        let mut max_length = 77;
        for name in ["tokenizer_config.json", "special_tokens_map.json"] {
            let file = folder.join(name);
            if let Ok(text) = std::fs::read_to_string(&file) {
                let json: Json = serde_json::from_str(&text)
                    .map_err(|source| RuntimeError::TokenizerConfig { file, source })?;
                if let Some(n) = json["model_max_length"]
                    .as_u64()
                    .filter(|n| (3..100_000).contains(n))
                {
                    max_length = n as usize;
                }
                if config.is_null() {
                    config = json.clone();
                }
                if let (Json::Object(into), Json::Object(from)) = (&mut config, json) {
                    for (k, v) in from {
                        into.entry(k).or_insert(v);
                    }
                }
            }
        }
        let bos_token = special(&config, "bos_token").unwrap_or_else(|| "<|startoftext|>".into());
        let eos_token = special(&config, "eos_token").unwrap_or_else(|| "<|endoftext|>".into());
        let pad_token = special(&config, "pad_token").unwrap_or_else(|| eos_token.clone());
        let unk_token = special(&config, "unk_token").unwrap_or_else(|| eos_token.clone());
        let fail = |source: tokenizers::Error| RuntimeError::Tokenizer {
            folder: folder.to_path_buf(),
            source,
        };
        let bpe = BPE::from_file(&vocab.to_string_lossy(), &merges.to_string_lossy())
            .end_of_word_suffix("</w>".into())
            .unk_token(unk_token)
            .build()
            .map_err(fail)?;
        let mut tokenizer = Tokenizer::new(bpe);
        tokenizer
            .with_normalizer(Some(Normalizers::new(vec![
                NFC.into(),
                Replace::new(
                    tokenizers::normalizers::replace::ReplacePattern::Regex(r"\s+".into()),
                    " ",
                )
                .map_err(fail)?
                .into(),
                Lowercase.into(),
            ])))
            .map_err(fail)?;
        tokenizer.with_pre_tokenizer(Some(PreTokenizers::new(vec![
            Split::new(
                SplitPattern::Regex(CLIP_PATTERN.into()),
                SplitDelimiterBehavior::Removed,
                true,
            )
            .map_err(fail)?
            .into(),
            ByteLevel::new(false, true, true).into(),
        ])));
        let id = |token: &str| {
            tokenizer
                .token_to_id(token)
                .ok_or_else(|| RuntimeError::UnknownToken {
                    folder: folder.to_path_buf(),
                    token: token.to_string(),
                })
        };
        let (bos, eos, pad) = (id(&bos_token)?, id(&eos_token)?, id(&pad_token)?);
        Ok(ClipTokenizer {
            tokenizer,
            bos,
            eos,
            pad,
            max_length,
        })
    }

    /// Token ids of `prompt`: BOS, at most `max_length - 2` tokens, EOS, then padding.
    pub fn encode(&self, prompt: &str) -> Result<Vec<u32>, RuntimeError> {
        let encoding = self
            .tokenizer
            .encode(prompt.trim(), false)
            .map_err(|source| RuntimeError::Tokenize {
                prompt: prompt.to_string(),
                source,
            })?;
        let mut ids = Vec::with_capacity(self.max_length);
        ids.push(self.bos);
        ids.extend(encoding.get_ids().iter().take(self.max_length - 2));
        ids.push(self.eos);
        ids.resize(self.max_length, self.pad);
        Ok(ids)
    }
}
