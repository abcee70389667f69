#!/usr/bin/env python3
"""The curriculum bench's full recompute in pandas, for the ratio against `cargo bench --bench curriculum`,
doing the same work as discl's path row for row: the same records (scores per checkpoint, the synthetic images
of the hard samples, with their labels, paths and prompts) → each sample's latest score → the hard set
(p_true below 0.5, in f32) → the pool of the hard samples' synthetic images → diverse-to-specific plans →
stage manifests: per stage and epoch a 30% keyed-hash share of the non-hard images, every hard real image, and
synthetic images of the stage's level filling a 13.6% tail budget, ranked by keyed hash (ties by the image)
with `slots // n` copies each and one more for the first `slots % n`. Every key is discl's: BLAKE3 in
derive-key mode over (seed, stage, epoch, item) (`blake3_np`, vectorised). The manifests are whole rows, as
discl's StageItems are (stage, epoch, sample, level, seed, prompt, label, path, copies).
`tests/suite/curriculum_pandas.rs` checks at a small size that these rows equal discl's.

Times the recompute on the first checkpoint's scores, and again after `--checkpoints` more checkpoints of
`--changed` samples each (pandas has no incremental path: absorbing new feedback is a full recompute).

  .venv-test/bin/python scripts/bench/curriculum_pandas.py [--synthetic 1000000] [--repeat 3]
      [--changed 10000] [--checkpoints 1] [--dump FILE]
"""
import argparse
import math
import os
import resource
import sys
import time

import numpy as np
import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import blake3_np  # noqa: E402

LEVELS = [100, 300, 500, 700, 900]
SEEDS = 100
EPOCHS, REAL_EPOCHS = 3, 2
HEAD, TAIL, SEED = 0.3, 0.136, 0
REAL_LEVEL = 1000
PROMPT_BYTES = 28  # a synthetic image's key is 36 bytes before its prompt; one block holds 64
KEY = blake3_np.derive_key_context("discl 2026-11 mix v1")
U32 = np.uint32


def unit(a, b):
    """The bench's `unit(a, b)`: a 64-bit mix of two integers, scaled to [0, 1)."""
    with np.errstate(over="ignore"):
        a = np.asarray(a, dtype=np.uint64)
        b = np.asarray(b, dtype=np.uint64)
        x = (a * np.uint64(0x9E3779B97F4A7C15)) ^ (b * np.uint64(0xC2B2AE3D27D4EB4F))
        x ^= x >> np.uint64(33)
        x = x * np.uint64(0xFF51AFD7ED558CCD)
        x ^= x >> np.uint64(33)
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def sizes(synthetic):
    per = len(LEVELS) * SEEDS
    candidates = max(1, synthetic // per)
    return candidates, candidates * 50


def scores_at(checkpoint, ids, hard):
    """The bench's `score(id, checkpoint, hard)` for these ids."""
    flipped = (checkpoint % 2 == 1) & (unit(ids, 7) < 0.1)
    low = (ids < np.uint64(hard)) != flipped
    p = (unit(ids, checkpoint) * 0.5 + np.where(low, 0.0, 0.5)).astype(np.float32)
    return pd.DataFrame({"sample": ids, "checkpoint": np.uint64(checkpoint), "p_true": p})


def data(synthetic):
    """The bench's records: samples, their first checkpoint's scores, and the synthetic images."""
    candidates, n = sizes(synthetic)
    ids = np.arange(n, dtype=np.uint64)
    labels = np.array([f"c{i % 100}" for i in range(n)], dtype=object)
    paths = np.array([f"data/c{i % 100}/{i}.png" for i in range(n)], dtype=object)
    samples = pd.DataFrame({"id": ids, "label": labels, "path": paths})
    per = len(LEVELS) * SEEDS
    s = np.repeat(np.arange(candidates, dtype=np.uint64), per)
    lv = np.tile(np.repeat(np.array(LEVELS, dtype=np.uint64), SEEDS), candidates)
    sd = np.tile(np.arange(SEEDS, dtype=np.uint64), candidates * len(LEVELS))
    names = np.array([f"c{i % 100}" for i in s.tolist()], dtype=object)
    spaths = np.array([f"synthetic/{a}-{b}-{c}.png" for a, b, c in zip(s.tolist(), lv.tolist(), sd.tolist())],
                      dtype=object)
    synth = pd.DataFrame({"sample": s, "level": lv, "seed": sd, "prompt": names, "label": names, "path": spaths})
    return samples, scores_at(0, ids, candidates), synth


def changed_scores(synthetic, changed, checkpoint):
    """The bench's new checkpoint: scores for `changed` samples spread over the ids."""
    candidates, n = sizes(synthetic)
    step = max(1, n // max(1, changed))
    ids = np.arange(0, n, step, dtype=np.uint64)[:changed]
    return scores_at(checkpoint, ids, candidates)


def keyed(stage, epoch, words, block_len, n):
    """discl's keyed hash of `n` items in one epoch: `words` are the items' message words after
    (seed, stage, epoch)."""
    head = [U32(SEED & 0xFFFFFFFF), U32(SEED >> 32), U32(stage), U32(epoch)]
    head = [w or None for w in head]
    message = head + list(words) + [None] * (12 - len(words))
    return blake3_np.derive_key_first_u64(KEY, message, block_len, n)


def real_rows(stage, epoch, frame, copies=1):
    return pd.DataFrame({"stage": stage, "epoch": epoch, "sample": frame["id"].values, "level": np.uint64(REAL_LEVEL),
                         "seed": None, "prompt": None, "label": frame["label"].values, "path": frame["path"].values,
                         "copies": copies})


def recompute(samples, scores, synth):
    """Every stage's manifest rows from the records."""
    latest = scores.sort_values(["sample", "checkpoint"]).drop_duplicates("sample", keep="last")
    hard_ids = latest.loc[latest.p_true < np.float32(0.5), "sample"]
    is_hard = samples["id"].isin(hard_ids)
    heads_all, tails = samples[~is_hard], samples[is_hard]
    head_words = blake3_np.u64_words(heads_all["id"].values)
    pool = synth[synth["sample"].isin(hard_ids)]
    prompts, lengths = blake3_np.bytes_words(pool["prompt"].values, PROMPT_BYTES)
    assert (pool["prompt"].str.len().values == lengths).all(), "a prompt too long for one block"
    pool_words = [*blake3_np.u64_words(pool["sample"].values), *blake3_np.u64_words(pool["level"].values),
                  pool["seed"].values.astype(U32), *prompts]
    pool_lengths = U32(36) + lengths
    plans = [(i, [lv], EPOCHS) for i, lv in enumerate(LEVELS)] + [(len(LEVELS), [], REAL_EPOCHS)]
    frames = []
    for stage, levels, epochs in plans:
        in_level = pool["level"].isin(levels).values
        level_pool = pool[in_level]
        level_words = [w[in_level] for w in pool_words]
        for epoch in range(epochs):
            hashes = keyed(stage, epoch, head_words, 24, len(heads_all))
            chosen = (hashes >> np.uint64(11)).astype(np.float64) / float(1 << 53) < HEAD
            heads = heads_all[chosen]
            frames.append(real_rows(stage, epoch, heads))
            frames.append(real_rows(stage, epoch, tails))
            budget = math.ceil(len(heads) * TAIL / (1.0 - TAIL)) if TAIL > 0 else 0
            needed = max(0, budget - len(tails))
            if not levels or not needed or not len(level_pool):
                continue
            order = keyed(stage, epoch, level_words, pool_lengths[in_level], len(level_pool))
            each, extra = divmod(needed, len(level_pool))
            if each == 0:
                # Only the first `extra` by rank get a copy: rank those alone.
                ranked = np.argpartition(order, extra - 1)[:extra] if extra < len(order) else np.arange(len(order))
            else:
                ranked = np.arange(len(order))
            picked = level_pool.iloc[ranked]
            by = np.lexsort((picked["prompt"].values, picked["seed"].values, picked["level"].values,
                             picked["sample"].values, order[ranked]))
            picked = picked.iloc[by]
            copies = np.full(len(picked), each) + (np.arange(len(picked)) < extra)
            frames.append(pd.DataFrame({"stage": stage, "epoch": epoch, "sample": picked["sample"].values,
                                        "level": picked["level"].values, "seed": picked["seed"].values,
                                        "prompt": picked["prompt"].values, "label": picked["label"].values,
                                        "path": picked["path"].values, "copies": copies}))
    return pd.concat(frames, ignore_index=True)


def dump(manifest, version, out):
    """Rows as `version stage epoch sample level seed prompt label path copies`, tab-separated."""
    for row in manifest.itertuples(index=False):
        seed = "-" if row.seed is None else str(int(row.seed))
        prompt = "-" if row.prompt is None else row.prompt
        out.write(f"{version}\t{row.stage}\t{row.epoch}\t{row.sample}\t{int(row.level)}\t{seed}\t{prompt}\t"
                  f"{row.label}\t{row.path}\t{row.copies}\n")


def timed(repeat, *frames):
    times, manifest = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        manifest = recompute(*frames)
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2], manifest


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--synthetic", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--changed", type=int, default=10_000)
    ap.add_argument("--checkpoints", type=int, default=1)
    ap.add_argument("--dump", help="write every version's manifest rows to this file")
    args = ap.parse_args()
    samples, scores, synth = data(args.synthetic)
    out = open(args.dump, "w") if args.dump else None
    full, manifest = timed(args.repeat, samples, scores, synth)
    rows = len(manifest)
    if out:
        dump(manifest, 0, out)
    after = None
    for checkpoint in range(1, args.checkpoints + 1):
        scores = pd.concat([scores, changed_scores(args.synthetic, args.changed, checkpoint)], ignore_index=True)
        seconds, manifest = timed(args.repeat if checkpoint == 1 else 1, samples, scores, synth)
        after = seconds if after is None else after
        if out:
            dump(manifest, checkpoint, out)
    if out:
        out.close()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"pandas curriculum: {len(samples)} samples, {len(synth)} synthetic records, {rows} manifest rows")
    print(f"full recompute median {full:.3f} s over {args.repeat}; peak RSS {rss:.0f} MB")
    if after is not None:
        print(f"recompute after {args.changed} new scores (pandas has no incremental path) median {after:.3f} s")


if __name__ == "__main__":
    main()
