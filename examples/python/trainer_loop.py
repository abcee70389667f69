#!/usr/bin/env python3
"""A trainer that follows discl's trainer feedback protocol (README: "The trainer feedback protocol").

Run it beside `discl run --watch PIPELINE`. For each stage N = 0, 1, ...:

1. wait until the stage index (`<output>/<sink>/current/<plans>.jsonl`) lists stage N, resolve
   `current` once and read stage N's manifest (`<mix>/stage-N.jsonl` or `.parquet`) from that
   version folder;
2. train a softmax-regression head (numpy) on the 128-d `features` of the shipped classifier
   (models/fashion-cnn, computed with onnxruntime; normalisation from its discl.toml): for each
   of the stage's epochs, every row `copies` times, shuffled, minibatch SGD;
3. write into the feedback folder, each file whole (`.name.tmp`, then rename):
   `checkpoint-(N+1).jsonl` (p_true, loss and predicted class of every real training sample the
   stage showed) and `progress-(N+1).jsonl` (p_true of every validation image at every level:
   the validation sink's synthetic images, averaged over seeds and prompts per image and level,
   and the real ones at level 1000);
4. go on with stage N+1, which discl plans (for the adaptive schedule) from that progress.

`progress-0.jsonl` (the untrained head) is written before stage 0. Everything is seeded: the same
manifests and seed give the same files, byte for byte.

    .venv-test/bin/python examples/python/trainer_loop.py out/adaptive-tiny --stages 3

Needs numpy, pandas, pyarrow, onnxruntime and pillow (scripts/requirements-test.txt).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import tomllib
from pathlib import Path

# The feedback files have one definition: the discl Python package's `discl.feedback`, which
# needs neither its native extension nor any other package, so a checkout's copy (python/)
# serves when discl is not installed.
sys.path.append(str(Path(__file__).resolve().parents[2] / "python"))
from discl.feedback import write_progress, write_scores  # noqa: E402

REAL_LEVEL = 1000
STAGE_COLUMNS = ("stage", "epoch", "sample", "level", "label", "path", "copies")


class TrainerError(Exception):
    """A problem the user must fix (missing or malformed input); printed without a traceback."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Train a softmax head stage by stage on discl's stage manifests and write "
        "checkpoint-K.jsonl / progress-K.jsonl feedback.",
    )
    p.add_argument("output", type=Path, help="the pipeline's output folder (its [pipeline] output)")
    p.add_argument("--feedback", type=Path, help="the feedback node's folder (default: OUTPUT/feedback)")
    p.add_argument("--stages", type=int, default=1, help="how many stages to train (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the head's init and shuffling (default 0)")
    p.add_argument("--sink", default="manifests", help="the sink holding the stage index and manifests")
    p.add_argument("--plans", default="stages", help="the sink input with the stage index (the curriculum node)")
    p.add_argument("--mix", default="mix", help="the sink input with the stage rows (the mix node)")
    p.add_argument("--validation-sink", default="validation", help="the sink holding the validation images")
    p.add_argument("--validation-real", default="val", help="its input with the real validation images (a source)")
    p.add_argument(
        "--validation-synthetic", default="val_synthetic", help="its input with their synthetic images (a generate node)"
    )
    p.add_argument("--model", type=Path, default=Path("models/fashion-cnn"), help="classifier folder (discl.toml)")
    p.add_argument("--format", choices=("auto", "jsonl", "parquet"), default="auto", help="manifest format to read")
    p.add_argument(
        "--root", type=Path, default=Path("."), help="folder relative image paths are relative to (where discl runs)"
    )
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for each stage (default 300)")
    p.add_argument("--poll", type=float, default=0.2, help="seconds between looks at the stage index")
    p.add_argument("--lr", type=float, default=0.1, help="SGD learning rate (default 0.1)")
    p.add_argument("--batch-size", type=int, default=16, help="SGD minibatch size (default 16)")
    p.add_argument("--summary", type=Path, help="also write a JSON summary of every stage here")
    args = p.parse_args(argv)
    if args.stages < 1:
        p.error("--stages must be at least 1")
    if args.feedback is None:
        args.feedback = args.output / "feedback"
    return args


# ---------------------------------------------------------------------------------------------
# Reading what discl wrote


def read_jsonl(path: Path) -> list[dict]:
    """Rows of a JSONL file; a bad line is an error naming file and line."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise TrainerError(f"{path}:{number}: malformed JSON: {e}") from None
            if not isinstance(row, dict):
                raise TrainerError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
            rows.append(row)
    return rows


def read_table(folder: Path, stem: str, fmt: str):
    """`<folder>/<stem>.jsonl` or `.parquet` as a pandas DataFrame (None if neither exists)."""
    import pandas as pd

    jsonl, parquet = folder / f"{stem}.jsonl", folder / f"{stem}.parquet"
    if fmt in ("auto", "jsonl") and jsonl.is_file():
        # Through json, not pd.read_json: ids are u64 and must not go through doubles.
        return pd.DataFrame.from_records(read_jsonl(jsonl))
    if fmt in ("auto", "parquet") and parquet.is_file():
        try:
            return pd.read_parquet(parquet)
        except Exception as e:  # pyarrow raises several kinds for a damaged file
            raise TrainerError(f"{parquet}: not a readable Parquet file: {e}") from None
    return None


class VersionGone(Exception):
    """The version folder was deleted (keep_versions) while we read it: resolve `current` again."""


def current_version(sink: Path) -> Path | None:
    """The version folder `<sink>/current` points to, resolved once (None before the first)."""
    link = sink / "current"
    try:
        target = os.readlink(link)
    except FileNotFoundError:
        return None
    except OSError:
        raise TrainerError(f"{link}: not a symlink to a version folder") from None
    return (sink / target).resolve()


def version_number(folder: Path) -> int:
    info = folder / "_snapshot.json"
    try:
        return int(json.loads(info.read_text())["version"])
    except FileNotFoundError:
        raise VersionGone() from None
    except (ValueError, KeyError, TypeError) as e:
        raise TrainerError(f"{info}: malformed snapshot info: {e}") from None


def wait_for(what: str, timeout: float, poll: float, look):
    """Calls `look()` until it returns something other than None; an error after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = look()
        except VersionGone:
            found = None
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise TrainerError(f"gave up after {timeout:g} s waiting for {what} (is `discl run --watch` running?)")
        time.sleep(poll)


def require_columns(df, columns, where: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise TrainerError(f"{where}: malformed manifest: missing column(s) {', '.join(missing)}")


class Manifests:
    """The stage index and stage manifests of one sink, read as the protocol says."""

    def __init__(self, args: argparse.Namespace):
        self.sink = args.output / args.sink
        self.plans, self.mix, self.fmt = args.plans, args.mix, args.format
        self.timeout, self.poll = args.timeout, args.poll

    def index(self, version: Path) -> dict[int, list[int]]:
        """stage → levels, from one version folder."""
        df = read_table(version, self.plans, self.fmt)
        if df is None:
            if not version.is_dir():
                raise VersionGone()
            raise TrainerError(f"{version}: no stage index {self.plans}.jsonl / .parquet (is --plans right?)")
        where = f"{version / self.plans} (stage index)"
        require_columns(df, ("stage", "levels", "epochs"), where)
        try:
            return {int(s): [int(l) for l in levels] for s, levels in zip(df["stage"], df["levels"])}
        except (TypeError, ValueError) as e:
            raise TrainerError(f"{where}: malformed stage index: {e}") from None

    def wait_stage(self, stage: int):
        """Waits until the current version's index lists `stage`; returns (version folder,
        version number, index, rows) all from that one version."""

        def look():
            version = current_version(self.sink)
            if version is None:
                return None
            number = version_number(version)
            index = self.index(version)
            if stage not in index:
                return None
            rows = self.read_stage(version, stage)
            return version, number, index, rows

        return wait_for(f"stage {stage} in {self.sink}/current/{self.plans}", self.timeout, self.poll, look)

    def read_stage(self, version: Path, stage: int):
        folder = version / self.mix
        df = read_table(folder, f"stage-{stage}", self.fmt)
        if df is None:
            if not version.is_dir():
                raise VersionGone()
            raise TrainerError(
                f"{folder}/stage-{stage}.jsonl (or .parquet): stage manifest missing, though the stage index "
                f"of {version.name} lists stage {stage} (is --mix right?)"
            )
        where = f"{folder}/stage-{stage}"
        if len(df) == 0:
            raise TrainerError(f"{where}: the stage manifest has no rows")
        require_columns(df, STAGE_COLUMNS, where)
        if set(int(s) for s in df["stage"]) != {stage}:
            raise TrainerError(f"{where}: malformed manifest: rows of other stages {sorted(set(df['stage']))}")
        try:
            copies = [int(c) for c in df["copies"]]
        except (TypeError, ValueError) as e:
            raise TrainerError(f"{where}: malformed manifest: copies: {e}") from None
        if any(c < 0 for c in copies):
            raise TrainerError(f"{where}: malformed manifest: negative copies")
        return df


def validation_set(args: argparse.Namespace, classes: list[str]):
    """The validation images: (sample id, level, class index, path) for every synthetic image of the
    validation sink and every real one (level 1000)."""
    sink = args.output / args.validation_sink

    def look():
        version = current_version(sink)
        if version is None:
            return None
        real = read_table(version, args.validation_real, args.format)
        synthetic = read_table(version, args.validation_synthetic, args.format)
        if real is None or synthetic is None:
            if not version.is_dir():
                raise VersionGone()
            raise TrainerError(
                f"{version}: needs {args.validation_real} and {args.validation_synthetic} (.jsonl or .parquet); "
                "check --validation-real / --validation-synthetic"
            )
        return real, synthetic

    real, synthetic = wait_for(f"{sink}/current", args.timeout, args.poll, look)
    items = []
    if len(real):
        require_columns(real, ("id", "label", "path"), f"{sink} {args.validation_real}")
        for sid, label, path in zip(real["id"], real["label"], real["path"]):
            items.append((int(sid), REAL_LEVEL, class_index(classes, label, sink), resolve(args.root, path)))
    if len(synthetic):
        if "key" in synthetic.columns:  # JSONL nests the generation key
            keys = synthetic["key"]
            samples, levels = [k["sample"] for k in keys], [k["level"] for k in keys]
        else:
            require_columns(synthetic, ("sample", "level"), f"{sink} {args.validation_synthetic}")
            samples, levels = list(synthetic["sample"]), list(synthetic["level"])
        require_columns(synthetic, ("label", "path"), f"{sink} {args.validation_synthetic}")
        for sid, level, label, path in zip(samples, levels, synthetic["label"], synthetic["path"]):
            # Synthetic paths in a sink are relative to the output folder.
            items.append((int(sid), int(level), class_index(classes, label, sink), args.output / path))
    if not items:
        raise TrainerError(f"{sink}/current: no validation images")
    return items


def resolve(root: Path, path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() else root / p


def class_index(classes: list[str], label, where) -> int:
    try:
        return classes.index(label)
    except ValueError:
        raise TrainerError(f"{where}: unknown class {label!r} (the model knows {', '.join(classes)})") from None


# ---------------------------------------------------------------------------------------------
# Features from the shipped classifier


class Features:
    """The classifier's `features` output per image file, cached by path."""

    def __init__(self, model_dir: Path):
        import numpy as np

        # ONNX Runtime 1.29+ writes a telemetry database under ~/.cache unless this is set
        # before it starts (as discl itself does); the caller's own setting wins.
        os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
        import onnxruntime as ort

        toml = model_dir / "discl.toml"
        try:
            meta = tomllib.loads(toml.read_text())
        except FileNotFoundError:
            raise TrainerError(f"{toml}: no such file (is --model a discl model folder?)") from None
        self.np = np
        self.classes: list[str] = list(meta["classes"])
        self.input = meta.get("input", "input")
        self.shape = tuple(meta["input_shape"])  # channels, height, width
        self.mean = np.asarray(meta["mean"], dtype=np.float32).reshape(-1, 1, 1)
        self.std = np.asarray(meta["std"], dtype=np.float32).reshape(-1, 1, 1)
        self.output = meta.get("outputs", {}).get("features")
        if self.output is None:
            raise TrainerError(f"{toml}: no [outputs] features = ... (the trainer needs the feature output)")
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # deterministic, and polite beside discl
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            str(model_dir / meta.get("onnx", "model.onnx")), options, providers=["CPUExecutionProvider"]
        )
        self.cache: dict[Path, object] = {}

    def pixels(self, path: Path):
        from PIL import Image

        channels, height, width = self.shape
        try:
            with Image.open(path) as img:
                img = img.convert("L" if channels == 1 else "RGB")
                if img.size != (width, height):
                    img = img.resize((width, height), Image.Resampling.BILINEAR)
                x = self.np.asarray(img, dtype=self.np.float32) / 255.0
        except (OSError, ValueError) as e:
            raise TrainerError(f"{path}: cannot read image: {e}") from None
        x = x[None] if channels == 1 else x.transpose(2, 0, 1)
        return (x - self.mean) / self.std

    def __call__(self, paths: list[Path]):
        np = self.np
        todo = [p for p in dict.fromkeys(paths) if p not in self.cache]
        for start in range(0, len(todo), 64):
            batch = todo[start : start + 64]
            x = np.stack([self.pixels(p) for p in batch]).astype(np.float32)
            (features,) = self.session.run([self.output], {self.input: x})
            for p, f in zip(batch, features):
                self.cache[p] = f.astype(np.float64)
        return np.stack([self.cache[p] for p in paths]) if paths else np.zeros((0, 0))


# ---------------------------------------------------------------------------------------------
# The head


class Head:
    """Softmax regression on standardised features (mean and std per feature, fitted once on the
    first stage's images and then frozen), trained by minibatch SGD with a seeded generator."""

    def __init__(self, fit_on, classes: int, rng, lr: float, batch_size: int):
        import numpy as np

        self.np, self.rng = np, rng
        self.mean, self.std = fit_on.mean(axis=0), fit_on.std(axis=0) + 1e-6
        self.w = rng.normal(0.0, 0.01, size=(fit_on.shape[1], classes))
        self.b = np.zeros(classes)
        self.lr, self.batch_size = lr, batch_size

    def probabilities(self, x):
        np = self.np
        z = ((x - self.mean) / self.std) @ self.w + self.b
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def epoch(self, x, y) -> None:
        np = self.np
        order = self.rng.permutation(len(y))
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            grad = self.probabilities(x[idx])
            grad[np.arange(len(idx)), y[idx]] -= 1.0
            grad /= len(idx)
            z = (x[idx] - self.mean) / self.std
            self.w -= self.lr * (z.T @ grad + 1e-4 * self.w)
            self.b -= self.lr * grad.sum(axis=0)


# ---------------------------------------------------------------------------------------------
# Writing feedback: discl.feedback (write_scores, write_progress) writes each file whole


def evaluate(head: Head, features: Features, items) -> tuple[list[dict], dict[int, float], float]:
    """progress lines (one per validation image and level: p_true averaged over its synthetic
    images), mean p_true per level, and accuracy on the real validation images."""
    np = head.np
    x = features([path for _, _, _, path in items])
    y = np.array([label for _, _, label, _ in items])
    p = head.probabilities(x)
    p_true = p[np.arange(len(y)), y]
    grouped: dict[tuple[int, int], list[float]] = {}
    for (sample, level, _, _), value in zip(items, p_true):
        grouped.setdefault((sample, level), []).append(float(value))
    lines = [
        {"sample": sample, "level": level, "p_true": min(1.0, max(0.0, float(np.mean(values))))}
        for (sample, level), values in sorted(grouped.items())
    ]
    by_level: dict[int, list[float]] = {}
    for line in lines:
        by_level.setdefault(line["level"], []).append(line["p_true"])
    means = {level: float(np.mean(v)) for level, v in sorted(by_level.items())}
    real = np.array([level == REAL_LEVEL for _, level, _, _ in items])
    accuracy = float((p.argmax(axis=1)[real] == y[real]).mean()) if real.any() else float("nan")
    return lines, means, accuracy


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import numpy as np

    features = Features(args.model)
    classes = features.classes
    rng = np.random.default_rng(args.seed)
    manifests = Manifests(args)

    head = None
    summary = []
    for stage in range(args.stages):
        version, number, index, df = manifests.wait_stage(stage)
        where = f"{version / args.mix}/stage-{stage}"
        labels = np.array([class_index(classes, label, where) for label in df["label"]])
        paths = [resolve(args.root, p) for p in df["path"]]
        for path in dict.fromkeys(paths):
            if not path.is_file():
                raise TrainerError(f"{where}: image {path} does not exist (is --root where discl runs?)")
        x_rows = features(paths)
        if head is None:
            # The untrained head, its standardisation fitted on stage 0's images; progress-0 is
            # its validation p_true, the baseline of the adaptive schedule's first pick.
            head = Head(features(list(dict.fromkeys(paths))), len(classes), rng, args.lr, args.batch_size)
            lines, _, _ = evaluate(head, features, validation_set(args, classes))
            write_progress(args.feedback, 0, lines)
        copies = np.array([int(c) for c in df["copies"]])
        epochs = sorted(set(int(e) for e in df["epoch"]))
        shown = 0
        for epoch in epochs:
            rows = np.flatnonzero(np.array([int(e) == epoch for e in df["epoch"]]))
            expanded = np.repeat(rows, copies[rows])  # every row `copies` times
            shown += len(expanded)
            head.epoch(x_rows[expanded], labels[expanded])

        p = head.probabilities(x_rows)
        weights = copies.astype(np.float64)
        train_accuracy = float(((p.argmax(axis=1) == labels) * weights).sum() / max(weights.sum(), 1.0))

        # checkpoint-(N+1): every real training sample the stage showed.
        real = {}
        for i, (sample, level) in enumerate(zip(df["sample"], df["level"])):
            if int(level) == REAL_LEVEL:
                real.setdefault(int(sample), i)
        checkpoint = []
        for sample, i in sorted(real.items()):
            p_true = float(p[i, labels[i]])
            checkpoint.append(
                {
                    "sample": sample,
                    "p_true": p_true,
                    "loss": -math.log(max(p_true, 1e-12)),
                    "predicted": classes[int(p[i].argmax())],
                }
            )
        write_scores(args.feedback, stage + 1, checkpoint)

        validation = validation_set(args, classes)
        lines, means, val_accuracy = evaluate(head, features, validation)
        write_progress(args.feedback, stage + 1, lines)

        levels = index[stage]
        mean_text = " ".join(f"{level}:{mean:.3f}" for level, mean in means.items())
        print(
            f"stage {stage}: level(s) {levels or 'real only'} (version {number}), {len(df)} rows, "
            f"{len(epochs)} epoch(s), {shown} shown; train acc {train_accuracy:.3f}, "
            f"val acc {val_accuracy:.3f}; val p_true by level {mean_text}",
            flush=True,
        )
        summary.append(
            {
                "stage": stage,
                "version": number,
                "index": sorted(index),
                "levels": levels,
                "rows": len(df),
                "shown": shown,
                "train_accuracy": train_accuracy,
                "val_accuracy": val_accuracy,
                "val_p_true_by_level": {str(k): v for k, v in means.items()},
            }
        )
    if args.summary:
        args.summary.parent.mkdir(parents=True, exist_ok=True)
        args.summary.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except TrainerError as e:
        print(f"trainer_loop: error: {e}", file=sys.stderr)
        sys.exit(1)
    except ImportError as e:
        print(f"trainer_loop: error: {e} (install scripts/requirements-test.txt; scripts/setup.sh makes .venv-test)",
              file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
