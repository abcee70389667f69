#!/usr/bin/env python3
"""The curriculum bench's full recompute in pandas, for the ratio against `cargo bench --bench curriculum`:
the same data (scores → hard set → synthetic pool of the hard samples → diverse-to-specific plans → stage
manifests: per stage and epoch a 30% head share, every hard real image, and synthetic images of the stage's
level filling a 13.6% tail budget, chosen by hash with replacement). The hash is a vectorised mix instead of
BLAKE3 (same work shape, different bits), so row counts match the Rust bench only approximately.

  .venv-test/bin/python scripts/bench/curriculum_pandas.py [--synthetic 1000000] [--repeat 3]
"""
import argparse
import resource
import time

import numpy as np
import pandas as pd

LEVELS = [100, 300, 500, 700, 900]
SEEDS = 100
EPOCHS, REAL_EPOCHS = 3, 2
HEAD, TAIL = 0.3, 0.136
M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


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


def data(synthetic):
    per = len(LEVELS) * SEEDS
    candidates = max(1, synthetic // per)
    n = candidates * 50
    ids = np.arange(n, dtype=np.uint64)
    samples = pd.DataFrame({"id": ids, "label": (ids % 100).astype(np.int64)})
    low = ids < candidates
    scores = pd.DataFrame({"sample": ids, "p_true": unit(ids, 0) * 0.5 + np.where(low, 0.0, 0.5)})
    s = np.repeat(np.arange(candidates, dtype=np.uint64), per)
    lv = np.tile(np.repeat(np.array(LEVELS, dtype=np.uint64), SEEDS), candidates)
    sd = np.tile(np.arange(SEEDS, dtype=np.uint64), candidates * len(LEVELS))
    synth = pd.DataFrame({"sample": s, "level": lv, "seed": sd})
    return samples, scores, synth


def recompute(samples, scores, synth):
    hard_ids = scores.loc[scores.p_true < 0.5, "sample"]
    is_hard = samples.id.isin(hard_ids)
    heads_all, tails = samples[~is_hard], samples[is_hard]
    pool = synth[synth["sample"].isin(hard_ids)]
    plans = [(i, [lv], EPOCHS) for i, lv in enumerate(LEVELS)] + [(len(LEVELS), [], REAL_EPOCHS)]
    frames = []
    for stage, levels, epochs in plans:
        level_pool = pool[pool.level.isin(levels)] if levels else pool.iloc[0:0]
        for epoch in range(epochs):
            key = np.uint64(stage * 1000 + epoch)
            heads = heads_all[unit(heads_all.id.values, key) < HEAD]
            budget = int(np.ceil(len(heads) * TAIL / (1 - TAIL)))
            needed = max(0, budget - len(tails))
            real = pd.concat([heads, tails])
            frames.append(pd.DataFrame({"stage": stage, "epoch": epoch, "sample": real.id.values, "level": 1000,
                                        "seed": -1, "label": real.label.values, "copies": 1}))
            if needed and len(level_pool):
                order = unit(level_pool["sample"].values * np.uint64(1_000_003)
                             + level_pool.level.values * np.uint64(101) + level_pool.seed.values, key)
                ranked = level_pool.assign(h=order).sort_values("h")
                each, extra = divmod(needed, len(ranked))
                copies = np.full(len(ranked), each) + (np.arange(len(ranked)) < extra)
                keep = copies > 0
                picked = ranked[keep]
                frames.append(pd.DataFrame({"stage": stage, "epoch": epoch, "sample": picked["sample"].values,
                                            "level": picked.level.values, "seed": picked.seed.values,
                                            "label": (picked["sample"].values % 100).astype(np.int64),
                                            "copies": copies[keep]}))
    manifest = pd.concat(frames, ignore_index=True)
    manifest["path"] = manifest["sample"].astype(str)  # rows carry a path, as the engine's do
    return len(manifest)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--synthetic", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    samples, scores, synth = data(args.synthetic)
    times = []
    for _ in range(args.repeat):
        t = time.perf_counter()
        rows = recompute(samples, scores, synth)
        times.append(time.perf_counter() - t)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"pandas curriculum: {len(samples)} samples, {len(synth)} synthetic records, {rows} manifest rows")
    print(f"full recompute median {sorted(times)[len(times) // 2]:.2f} s over {args.repeat}; peak RSS {rss:.0f} MB")


if __name__ == "__main__":
    main()
