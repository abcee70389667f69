#!/usr/bin/env python3
"""Writes tests/fixtures/clip_tokens.json: the input_ids transformers' CLIPTokenizer produces from
models/tiny-sd/tokenizer (the real CLIP BPE vocabulary) for a few prompts, padded / truncated as Stable Diffusion's
pipelines do: tokenizer(prompt, padding="max_length", max_length=77, truncation=True).

Run from the repository root after make_tiny_sd.py:
    HF_HUB_OFFLINE=1 .venv-export/bin/python scripts/models/dump_clip_tokens.py

Also checks that the fast (Rust `tokenizers`) CLIPTokenizerFast built from the same files gives identical ids.
ftfy is not installed, so the slow tokenizer normalises text with BERT's BasicTokenizer (NFC, whitespace clean-up,
lower case, accents kept); for these prompts that equals what OpenAI's ftfy-based SimpleTokenizer does.
"""
import json
import os
import pathlib

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = pathlib.Path(__file__).resolve().parents[2]
TOKENIZER = REPO / "models" / "tiny-sd" / "tokenizer"
OUT = REPO / "tests" / "fixtures" / "clip_tokens.json"

PROMPTS = [
    ("basic", "a photo of a cat"),
    ("upper_case_punctuation", "A Photo of a COAT, on a white background!"),
    ("digits_symbols", "an ankle-boot (size 42) for $19.99; 100% leather, 3x zoom"),
    ("accents", "café crème brûlée, naïve Ångström"),
    ("extra_whitespace", "   a   t-shirt\tand\n  trousers   "),
    ("contractions", "it's a pullover... isn't it? they'll say we're fine"),
    ("empty", ""),
    ("emoji_bytes", "a dress \U0001F457 with a bag \U0001F45C"),
    ("long", "a highly detailed photograph of a sneaker, " * 12 + "studio lighting, sharp focus, 8k"),
]


def main():
    import transformers
    from transformers import CLIPTokenizer, CLIPTokenizerFast

    slow = CLIPTokenizer.from_pretrained(str(TOKENIZER))
    fast = CLIPTokenizerFast.from_pretrained(str(TOKENIZER), from_slow=True)
    assert slow.model_max_length == 77 and slow.pad_token_id == 49407
    cases = []
    for name, prompt in PROMPTS:
        kw = dict(padding="max_length", max_length=77, truncation=True)
        ids = slow(prompt, **kw).input_ids
        ids_fast = fast(prompt, **kw).input_ids
        assert ids == ids_fast, (name, ids, ids_fast)
        full = slow(prompt).input_ids  # unpadded, untruncated
        cases.append({
            "name": name,
            "prompt": prompt,
            "input_ids": ids,
            "num_tokens": len(full),
            "truncated": len(full) > 77,
            "tokens": slow.convert_ids_to_tokens(ids[:ids.index(slow.eos_token_id) + 1]),
        })
        print(f"{name:24s} {len(full):3d} {ids[:12]}")
    assert cases[0]["input_ids"][:7] == [49406, 320, 1125, 539, 320, 2368, 49407]
    doc = {
        "description": "CLIPTokenizer input_ids for models/tiny-sd/tokenizer, as SD pipelines call it: "
                       "padding='max_length', max_length=77, truncation=True (bos 49406, eos = pad = 49407). "
                       "num_tokens = length before padding/truncation incl. bos and eos; tokens = the BPE tokens "
                       "of input_ids up to and including the first eos (byte-level unicode, as in vocab.json). Written by scripts/models/dump_clip_tokens.py.",
        "tokenizer": "models/tiny-sd/tokenizer",
        "transformers_version": transformers.__version__,
        "max_length": 77,
        "bos_token_id": slow.bos_token_id,
        "eos_token_id": slow.eos_token_id,
        "pad_token_id": slow.pad_token_id,
        "cases": cases,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
