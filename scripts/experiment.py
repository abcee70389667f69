#!/usr/bin/env python3
"""DisCL in miniature: every arm of the experiment on the long-tailed Fashion-MNIST split, one command.

    python3 scripts/experiment.py                 # all arms, 3 seeds, 2 jobs: report/experiment/
    python3 scripts/experiment.py --seeds 1 --arms ce discl --epochs 1   # a quick look

Each arm × seed is a `discl run` of a graph written from the template below into
out/experiment/graphs/ (same split, same generator, judge and hard set, same stage lengths; only the
curriculum, the mix's oversampling and the learner's seed change) whose `train` node trains the
built-in learner stage by stage and evaluates it on the official test set. Arms:

  ce                   real data only (the CE baseline)
  oversample           real data only, hard (tail) images oversampled to the tail share
  text_only            synthetic λ = 0 (class prompt only) in every curriculum stage
  fixed_0.5            λ = 0.5 in every stage
  all_levels           every λ mixed in every stage
  random               one λ per stage by keyed hash
  specific_to_diverse  λ descending
  discl                λ ascending: DisCL's diverse-to-specific curriculum
  oversample_tail30, discl_tail30
                       a follow-up, not run by default: the tail share of each epoch raised to 0.3
  lq_ce, lq_oversample, lq_discl, lq_adaptive
                       the same on a low-quality (blurred, noised) copy of the training set
                       (scripts/data/make_lq.py): real only, real oversampled, diverse-to-specific, and the adaptive
                       schedule that picks each next λ from the learner's progress on a held-out
                       validation set with every level.

Generation is shared through the store: the first run of a lane generates (both cores), its output
folder is then copied for the second lane, and every later run finds every image in the store.
Writes report/experiment/README.md (the table, the command, the wall time), experiment.json
(`arms` → arm → group → {mean, sd, values}) and experiment.png (needs Pillow; skipped without it).
"""
import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LEVELS = [0.1, 0.3, 0.5, 0.7, 0.9]
GROUPS = ["many", "medium", "few", "all"]

# arm → (data, schedule fields, mix fields). Every arm but the CE baselines sees the hard (tail)
# classes at the same share of every epoch: the oversample baseline by copies of the real tail
# images, the synthetic arms by synthetic images in the curriculum stages and by the same copies in
# their final real-only stage, so each synthetic arm differs from `oversample` only by what fills
# the tail budget of its curriculum stages.
SYNTHETIC = "oversample_real = true"
ARMS = {
    "ce": ("lt", 'schedule = "real_only"', "oversample_real = false"),
    "oversample": ("lt", 'schedule = "real_only"', "oversample_real = true"),
    "text_only": ("lt", 'schedule = "text_only"\nlevels = [0.0]\nstages = 5', SYNTHETIC),
    "fixed_0.5": ("lt", 'schedule = "fixed"\nlevel = 0.5', SYNTHETIC),
    "all_levels": ("lt", 'schedule = "all_levels"', SYNTHETIC),
    "random": ("lt", 'schedule = "random"', SYNTHETIC),
    "specific_to_diverse": ("lt", 'schedule = "specific_to_diverse"', SYNTHETIC),
    "discl": ("lt", 'schedule = "diverse_to_specific"', SYNTHETIC),
    # A follow-up on the budget (not in the default arms): the tail's share of each epoch raised
    # from METHOD's 0.136 to 0.3, so synthetic images make up about a quarter of every curriculum
    # epoch instead of about 7%.
    "oversample_tail30": ("lt", 'schedule = "real_only"', "oversample_real = true\ntail_share = 0.3"),
    "discl_tail30": ("lt", 'schedule = "diverse_to_specific"', SYNTHETIC + "\ntail_share = 0.3"),
    "lq_ce": ("lq", 'schedule = "real_only"', "oversample_real = false"),
    "lq_oversample": ("lq", 'schedule = "real_only"', "oversample_real = true"),
    "lq_discl": ("lq", 'schedule = "diverse_to_specific"', SYNTHETIC),
    "lq_adaptive": ("lq", 'schedule = "adaptive"\ninputs = ["trainer.progress"]\nstart_level = 0.1', SYNTHETIC),
}

DATA = {
    "lt": {"train": "data/fashion-lt/train", "val": None},
    "lq": {"train": "data/fashion-lt-lq/train", "val": "data/fashion-lt-lq/val"},
}

TEMPLATE = """# Written by scripts/experiment.py: arm {arm}, seed {seed}.
[pipeline]
name = "experiment-{arm}-{seed}"
output = "{out}"
seed = 0

[models.classifier]
path = "models/fashion-cnn"
threads = 1
sessions = 1

[models.generator]
path = "models/fashion-unet"

[models.judge]
path = "models/fashion-judge"

[nodes.train]
op = "source"
format = "image_folder"
path = "{train}"

[nodes.scores]
op = "classify"
inputs = ["train"]
model = "classifier"
batch_size = 128

[nodes.trainer]
op = "feedback"
inputs = ["train"]
path = "{out}/feedback"

# METHOD §2 (long tail): every image of a few-shot class is hard.
[nodes.hard]
op = "hard"
inputs = ["train", "scores", "trainer"]
rules = [{{ tail_classes_below = 95 }}]

[nodes.synthetic]
op = "generate"
inputs = ["hard"]
model = "generator"
classes_from = "classifier"
levels = {gen_levels}
seeds = {gen_seeds}
steps = 25
guidance_scale = {guidance}
scheduler = "ddim"

[nodes.quality]
op = "quality"
inputs = ["synthetic"]
model = "judge"
threshold = {threshold}
{validation}
[nodes.stages]
op = "curriculum"
{schedule}
{levels_line}epochs_per_stage = {epochs}
real_epochs = {real_epochs}

[nodes.mix]
op = "mix"
inputs = ["train", "hard", "quality", "stages"]
head_fraction = 0.3
tail_share = 0.136
{mix}

[nodes.manifests]
op = "sink"
inputs = ["train", "stages", "mix"]
keep_versions = 2

[nodes.learner]
op = "train"
inputs = {train_inputs}
like = "classifier"
seed = {seed}
widths = {widths}
score_training = false
test = "data/fashion-lt/test"
test_every_stage = false
many_above = 361
few_below = 95
"""

VALIDATION = """
[nodes.val]
op = "source"
format = "image_folder"
path = "{val}"

[nodes.val_synthetic]
op = "generate"
inputs = ["val"]
model = "generator"
classes_from = "classifier"
levels = {levels}
seeds = 1
steps = 25
guidance_scale = {guidance}
scheduler = "ddim"

[nodes.validation]
op = "sink"
inputs = ["val", "val_synthetic"]
keep_versions = 2
"""


def graph(arm, seed, out, args):
    data, schedule, mix = ARMS[arm]
    lq = data == "lq"
    gen_levels = LEVELS if lq else [0.0] + LEVELS
    validation = VALIDATION.format(val=DATA[data]["val"], levels=LEVELS, guidance=args.guidance) if lq else ""
    train_inputs = ["train", "stages", "mix", "trainer"] + (["val", "val_synthetic"] if arm == "lq_adaptive" else [])
    levels_line = "" if "levels =" in schedule else f"levels = {LEVELS}\n"
    template = TEMPLATE.replace("tail_share = 0.136\n", "") if "tail_share" in mix else TEMPLATE
    return template.format(
        arm=arm, seed=seed, out=out, train=DATA[data]["train"], gen_levels=gen_levels,
        gen_seeds=args.gen_seeds, guidance=args.guidance, threshold=args.threshold, validation=validation,
        schedule=schedule, levels_line=levels_line, epochs=args.epochs, real_epochs=args.real_epochs,
        mix=mix, train_inputs=json.dumps(train_inputs), widths=json.dumps(args.widths),
    )


def run(binary, graph_path, log_path):
    env = dict(os.environ, CANDLE_NUM_THREADS="1", RAYON_NUM_THREADS="1")
    started = time.time()
    with open(log_path, "w") as log:
        code = subprocess.call([binary, "run", graph_path, "-w", "1"], cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env)
    if code != 0:
        raise SystemExit(f"{graph_path}: discl exited {code}; see {log_path}")
    return time.time() - started


def summarise(values):
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": round(mean, 4), "sd": round(sd, 4), "values": [round(v, 4) for v in values]}


def table(results, arms):
    lines = ["| arm | " + " | ".join(GROUPS) + " |", "|---|" + "---|" * len(GROUPS)]
    for arm in arms:
        cells = [f"{100 * results[arm][g]['mean']:.1f} ± {100 * results[arm][g]['sd']:.1f}" for g in GROUPS]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(results, arms, path):
    try:
        from PIL import Image, ImageDraw
    except ImportError:
        print("note: no Pillow, no experiment.png", file=sys.stderr)
        return False
    width, height, left, bottom = 120 + 90 * len(arms), 420, 50, 80
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    colours = {"many": (70, 110, 180), "medium": (120, 170, 90), "few": (210, 90, 60), "all": (120, 120, 120)}
    top = 30
    scale = (height - bottom - top) / 100.0
    for tick in range(0, 101, 20):
        y = height - bottom - tick * scale
        draw.line([(left, y), (width - 10, y)], fill=(225, 225, 225))
        draw.text((8, y - 6), f"{tick}%", fill="black")
    for i, arm in enumerate(arms):
        x0 = left + 10 + i * 90
        for j, group in enumerate(GROUPS):
            mean, sd = results[arm][group]["mean"] * 100, results[arm][group]["sd"] * 100
            x = x0 + j * 18
            draw.rectangle([x, height - bottom - mean * scale, x + 15, height - bottom], fill=colours[group])
            draw.line([(x + 7, height - bottom - (mean + sd) * scale), (x + 7, height - bottom - (mean - sd) * scale)], fill="black")
        draw.text((x0, height - bottom + 6), arm[:14], fill="black")
    for j, group in enumerate(GROUPS):
        draw.rectangle([left + 10 + j * 80, 8, left + 22 + j * 80, 20], fill=colours[group])
        draw.text((left + 26 + j * 80, 8), group, fill="black")
    draw.text((left, height - 30), "test accuracy per group, mean and sd over seeds", fill="black")
    image.save(path)
    return True


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arms", nargs="+", default=[a for a in ARMS if not a.endswith("_tail30")], choices=list(ARMS))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=2, help="epochs per curriculum stage (5 stages)")
    ap.add_argument("--real-epochs", type=int, default=1, help="epochs of the final real-only stage")
    ap.add_argument("--gen-seeds", type=int, default=3, help="synthetic images per (hard image, level)")
    ap.add_argument("--guidance", type=float, default=1.25, help="the generator's (training/selection.json)")
    ap.add_argument("--widths", type=int, nargs=5, default=[16, 16, 32, 32, 64], help="the learner's conv widths")
    ap.add_argument("--threshold", type=float, default=0.3)
    ap.add_argument("--binary", default=os.path.join(REPO, "target", "release", "discl"))
    ap.add_argument("--out", default=os.path.join(REPO, "out", "experiment"))
    ap.add_argument("--report", default=os.path.join(REPO, "report", "experiment"))
    args = ap.parse_args()
    if not os.path.isfile(args.binary):
        raise SystemExit(f"{args.binary}: build it first (cargo build --release)")
    if any(ARMS[a][0] == "lq" for a in args.arms) and not os.path.isdir(os.path.join(REPO, "data", "fashion-lt-lq")):
        subprocess.check_call([sys.executable, os.path.join(REPO, "scripts", "data", "make_lq.py")])
    started = time.time()
    os.makedirs(os.path.join(args.out, "graphs"), exist_ok=True)
    jobs = {"lt": [], "lq": []}
    for seed in range(args.seeds):
        for arm in args.arms:
            jobs[ARMS[arm][0]].append((arm, seed))

    def lane(data, name):
        return os.path.join(args.out, f"{data}-{name}")

    runs = os.path.join(args.out, "runs")
    os.makedirs(runs, exist_ok=True)

    def execute(arm, seed, folder):
        done = os.path.join(runs, f"{arm}-{seed}.json")
        text = graph(arm, seed, os.path.relpath(folder, REPO), args)
        key = graph(arm, seed, "OUT", args)  # the same graph whichever lane runs it
        if os.path.isfile(done):  # a rerun resumes: a finished run of the same graph is kept
            with open(done) as f:
                kept = json.load(f)
            if kept.get("key") == key:
                return kept["report"], kept["seconds"]
        path = os.path.join(args.out, "graphs", f"{arm}-{seed}.toml")
        with open(path, "w") as f:
            f.write(text)
        seconds = run(args.binary, path, os.path.join(args.out, "graphs", f"{arm}-{seed}.log"))
        with open(os.path.join(folder, "learner", "report.json")) as f:
            report = json.load(f)
        print(f"{arm} seed {seed}: {seconds:.0f} s, few {report['stages'][-1]['test']['few']:.3f}", flush=True)
        with open(done + ".tmp", "w") as f:
            json.dump({"report": report, "seconds": seconds, "graph": text, "key": key}, f)
        os.replace(done + ".tmp", done)
        return report, seconds

    reports = {}
    failures = []

    def guarded(arm, seed, folder):
        try:
            reports[(arm, seed)] = execute(arm, seed, folder)
        except BaseException as e:  # noqa: BLE001 — a failed run is reported, the others go on
            failures.append(f"{arm} seed {seed}: {e}")
            print(f"FAILED {arm} seed {seed}: {e}", flush=True)
    # Phase 1: the first job of each kind of data generates its images, both kinds at once.
    firsts = [(d, jobs[d].pop(0)) for d in ("lt", "lq") if jobs[d]]
    threads = []
    for data, (arm, seed) in firsts:
        def first(data=data, arm=arm, seed=seed):
            guarded(arm, seed, lane(data, "a"))
        threads.append(threading.Thread(target=first))
        threads[-1].start()
    for t in threads:
        t.join()
    for data, _ in firsts:
        if os.path.isdir(lane(data, "b")):
            shutil.rmtree(lane(data, "b"))
        shutil.copytree(lane(data, "a"), lane(data, "b"), symlinks=True)
    # Phase 2: two workers, each on its own copy of every store.
    queue = [(d, job) for d in ("lt", "lq") for job in jobs[d]]
    lock = threading.Lock()

    def worker(name):
        while True:
            with lock:
                if not queue:
                    return
                data, (arm, seed) = queue.pop(0)
            guarded(arm, seed, lane(data, name))

    threads = [threading.Thread(target=worker, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.time() - started
    if failures:
        raise SystemExit("failed runs (rerun the same command to finish them):\n  " + "\n  ".join(failures))

    results = {}
    for arm in args.arms:
        finals = [reports[(arm, s)][0]["stages"][-1]["test"] for s in range(args.seeds)]
        results[arm] = {g: summarise([f[g] for f in finals]) for g in GROUPS}
    os.makedirs(args.report, exist_ok=True)
    # The command as run, without machine paths (the binary is a release build of this commit).
    shown = []
    for arg in sys.argv[1:]:
        if shown and shown[-1] == "--binary":
            arg = "<release build>"
        elif shown and shown[-1] in ("--out", "--report"):
            inside = os.path.abspath(arg).startswith(REPO + os.sep)
            arg = os.path.relpath(os.path.abspath(arg), REPO) if inside else "<a folder>"
        shown.append(arg)
    command = "python3 scripts/experiment.py " + " ".join(shown)
    run_seconds = sum(s for (_, s) in reports.values())
    settings = {k: v for k, v in vars(args).items() if k not in ("binary", "out", "report")}
    doc = {
        "command": command.strip(),
        "wall_seconds": round(wall),
        "run_seconds_total": round(run_seconds),
        "settings": settings,
        "arms": results,
        "runs": {f"{arm}/{seed}": {"seconds": round(s), "stages": r["stages"]} for (arm, seed), (r, s) in sorted(reports.items())},
    }
    with open(os.path.join(args.report, "experiment.json"), "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    plotted = plot(results, args.arms, os.path.join(args.report, "experiment.png"))
    text = table(results, args.arms)
    print(text)
    with open(os.path.join(args.report, "README.md"), "w") as f:
        f.write("# DisCL in miniature: the experiment\n\n")
        f.write(f"Command: `{command.strip()}` — wall time {wall / 60:.1f} min on this machine "
                f"(the runs themselves: {run_seconds / 60:.1f} min, two at a time; a rerun keeps finished runs).\n\n")
        f.write(f"Test accuracy (%) on the official Fashion-MNIST test set, mean ± sd over {args.seeds} learner seeds:\n\n")
        f.write(text + "\n\n")
        if plotted:
            f.write("![per-group accuracy](experiment.png)\n\n")
        f.write("Settings: " + json.dumps(settings) + "\n")
        if os.path.isfile(os.path.join(args.report, "ANALYSIS.md")):
            f.write("\nWhat the table shows, and why: [ANALYSIS.md](ANALYSIS.md).\n")
    print(f"wrote {args.report} in {wall / 60:.1f} min")


if __name__ == "__main__":
    main()
