#!/usr/bin/env python3
"""Choose the generator's checkpoint and guidance scale by the judge's recognition rate at
lambda = 0 (class only, DDIM 25 steps), on two seeds of --n images each — never on the test set:
the judge is trained on half B and the samples are generated, so no labelled test image is read.

  OMP_NUM_THREADS=1 nice -n 10 .venv-train/bin/python training/select_unet.py \
      [--snapshots DIR] [--last 6] [--guidance 1.5 2 2.5] [--screen 200] [--n 500] [--top 3]

1. Screen: the --last EMA snapshots (training/train_unet.py writes one per 1000 steps) × every
   guidance, one seed, --screen images (about 4 CPU minutes per 200 images on one thread).
2. Confirm: the --top (snapshot, guidance) pairs of the screen, two seeds × --n images.
3. Pick the pair with the best worst-seed overall rate among those whose every class is at least
   --min-class on both seeds (else the best worst-seed rate), export it into models/fashion-unet
   (training/export_unet.py) and write training/selection.json with every figure.
Each snapshot is exported to a scratch folder first (ONNX, checked against PyTorch).
"""
import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import unet_common as uc  # noqa: E402
from eval_unet import Generator, Judge, to_u8  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def export(snapshot, folder):
    subprocess.run([sys.executable, os.path.join(HERE, "export_unet.py"), "--ckpt", snapshot, "--out", folder],
                   check=True, stdout=subprocess.DEVNULL)


def recognition(folder, judge, guidance, n, seed, steps):
    gen = Generator(folder, guidance, steps)
    labels = np.repeat(np.arange(10), n // 10)
    seeds = seed * 100000 + np.arange(len(labels))
    cos = judge.cosines(to_u8(gen.generate(labels, seeds)))
    hit = cos.argmax(1) == labels
    return {"overall": round(float(hit.mean()), 4),
            "per_class": {common.CLASSES[c]: round(float(hit[labels == c].mean()), 4) for c in range(10)}}


def shown_path(value):
    """A path as the report records it: relative to the repository or to ~, never a machine's absolute path."""
    if not isinstance(value, str) or not os.path.isabs(value):
        return value
    home = os.path.expanduser("~")
    if value.startswith(common.REPO + os.sep):
        return os.path.relpath(value, common.REPO)
    if value.startswith(home + os.sep):
        return "~/" + os.path.relpath(value, home)
    return "<" + os.path.basename(value) + ">"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--snapshots", default=os.path.join(uc.train_dir(), "snapshots"))
    ap.add_argument("--last", type=int, default=6, help="screen only the newest N snapshots")
    ap.add_argument("--guidance", type=float, nargs="+", default=[1.5, 2.0, 2.5])
    ap.add_argument("--screen", type=int, default=200)
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--top", type=int, default=3)
    ap.add_argument("--seeds", type=int, nargs=2, default=[7, 8])
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--min-class", type=float, default=0.75)
    ap.add_argument("--judge", default=os.path.join(common.REPO, "models", "fashion-judge"))
    ap.add_argument("--out", default=os.path.join(common.REPO, "models", "fashion-unet"))
    ap.add_argument("--dry-run", action="store_true", help="choose, but export nothing into --out")
    args = ap.parse_args()
    common.setup_threads(1)
    judge = Judge(args.judge)
    snapshots = sorted(glob.glob(os.path.join(args.snapshots, "ema-step-*.pt")))[-args.last:]
    if not snapshots:
        sys.exit(f"no snapshots under {args.snapshots}")
    t0 = time.time()
    report = {"screen": [], "confirm": [], "settings": {k: shown_path(v) for k, v in vars(args).items()}}
    with tempfile.TemporaryDirectory() as scratch:
        folders = {}
        for snap in snapshots:
            folder = os.path.join(scratch, os.path.basename(snap)[:-3])
            export(snap, folder)
            folders[snap] = folder
            for g in args.guidance:
                r = recognition(folder, judge, g, args.screen, args.seeds[0], args.steps)
                report["screen"].append({"snapshot": os.path.basename(snap), "guidance": g, **r})
                print(f"screen {os.path.basename(snap)} w={g}: {r['overall']:.3f}", flush=True)
        ranked = sorted(report["screen"], key=lambda r: -r["overall"])[: args.top]
        for cand in ranked:
            snap = os.path.join(args.snapshots, cand["snapshot"])
            runs = [recognition(folders[snap], judge, cand["guidance"], args.n, s, args.steps) for s in args.seeds]
            worst = min(r["overall"] for r in runs)
            class_floor = min(min(r["per_class"].values()) for r in runs)
            row = {"snapshot": cand["snapshot"], "guidance": cand["guidance"], "seeds": args.seeds, "runs": runs,
                   "worst_seed_overall": worst, "worst_class": class_floor}
            report["confirm"].append(row)
            print(f"confirm {cand['snapshot']} w={cand['guidance']}: worst seed {worst:.3f}, "
                  f"worst class {class_floor:.3f}", flush=True)
    eligible = [r for r in report["confirm"] if r["worst_class"] >= args.min_class] or report["confirm"]
    best = max(eligible, key=lambda r: (r["worst_seed_overall"], r["worst_class"]))
    report["chosen"] = {k: best[k] for k in ("snapshot", "guidance", "worst_seed_overall", "worst_class")}
    report["wall_seconds"] = round(time.time() - t0, 1)
    with open(os.path.join(HERE, "selection.json"), "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    print(f"chosen: {report['chosen']}")
    if not args.dry_run:
        export(os.path.join(args.snapshots, best["snapshot"]), args.out)
        print(f"exported into {args.out}; run training/eval_unet.py --guidance {best['guidance']} for the README")


if __name__ == "__main__":
    main()
