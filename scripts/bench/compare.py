#!/usr/bin/env python3
"""Generation against its peers, interleaved in one sitting, on one SD-shaped model folder (issue 12's benchmark).

    .venv-export/bin/python scripts/bench/compare.py --model MODEL [--rounds 3] [--json OUT]

MODEL is an optimum-layout export (`scripts/models/make_sd_shaped.py --preset sd15-half --image 64 --torch --out
MODEL` makes one; `--torch` adds MODEL/torch for the diffusers peer). The workload: --sources images (the first
images of the first 8 classes of tests/fixtures/fashion-tiny, in turn), --seeds images each, λ = --level (strength
1 − λ), --steps DDIM steps, guidance --guidance, prompt "a photo of a {display name}".

What runs, each measurement a fresh process:
  discl           `discl run` on a generated graph (source manifest → generate → sink), an empty image store each
                  time; `discl int8`, `discl fused` and `discl fused+int8` the same with `quantize = "int8"`,
                  `attention = "fused"` or both (--forms; each rewritten UNet made once beforehand, timed apart in
                  `rewrite_s`)
  plain           a plain Python onnxruntime loop (plain_ort.py's PlainSd: one session per model file, DDIM in
                  numpy, batch 1, prompts embedded once, sources encoded once)
  optimum         optimum's ORTStableDiffusionImg2ImgPipeline, B items per call; one thread tries every --batches
                  and the whole machine uses the best
  diffusers       diffusers' PyTorch StableDiffusionImg2ImgPipeline, once per image (needs MODEL/torch)
Modes:
  one thread      discl: 1 session × 1 thread; peers: one process, 1 thread
  whole machine   discl: its defaults (`discl run` chooses); peers: one 1-thread process per core, each making every
                  P-th image, started together (wall time: the last to finish), and one process with P threads
Two clocks per measurement: `whole` is the process's wall time from exec to exit (imports, model loads, generation);
`loaded` is the time it took once its models were loaded (discl: its run summary's seconds, which also cover reading
sources and writing PNGs; peers: their own clock around the image loop, images kept in memory). Rounds interleave
every measurement (the order reversed every other round), so drift of a shared machine spreads over all of them;
medians are printed with the ratios. Peak RSS is each process's own (ru_maxrss from wait4), summed over a peer's
processes when it runs one per core.
"""
import argparse
import json
import math
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests" / "fixtures" / "fashion-tiny"
CLASSES = ["tshirt-top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker"]


def display_names():
    import tomllib
    meta = tomllib.loads((REPO / "models" / "fashion-cnn" / "discl.toml").read_text())
    return dict(zip(meta["classes"], meta["display_names"]))


def workload(a):
    """(path, class, prompt, seed) per image, in a fixed order."""
    names = display_names()
    per = math.ceil(a.sources / len(CLASSES))
    sources = [(c, sorted((FIXTURE / c).glob("*.png"))[i]) for i in range(per) for c in CLASSES][:a.sources]
    return [(str(path), c, f"a photo of a {names[c]}", seed) for c, path in sources for seed in range(a.seeds)]


# ------------------------------------------------------------------------------------------------------ child side
def child(a):
    """One peer process: loads its models, makes its share of the images, writes {load_s, loaded_s, images}."""
    os.environ["OMP_NUM_THREADS"] = str(a.threads)
    started = time.perf_counter()
    items = workload(a)[a.part::a.parts]
    folder = pathlib.Path(a.model)
    size = json.loads((folder / "vae_encoder" / "config.json").read_text())["sample_size"]
    from PIL import Image
    images = {p: Image.open(p).convert("RGB").resize((size, size), Image.BILINEAR) for p, _, _, _ in items}
    strength = 1.0 - a.level
    if a.child == "plain":
        sys.path.insert(0, str(REPO / "scripts" / "bench"))
        from plain_ort import PlainSd
        pipe = PlainSd(folder, a.steps, a.guidance, a.threads)
        loaded = time.perf_counter()
        out = [pipe.generate(images[p], p, prompt, strength, seed) for p, _, prompt, seed in items]
    else:
        import torch
        torch.set_num_threads(a.threads)
        pipe = load_pipeline(a, folder)
        loaded = time.perf_counter()
        out = []
        for s in range(0, len(items), a.batch):
            chunk = items[s:s + a.batch]
            one = len(chunk) == 1
            prompts = [c[2] for c in chunk]
            out += pipe(prompt=prompts[0] if one else prompts, image=images[chunk[0][0]] if one else
                        [images[c[0]] for c in chunk], strength=strength, num_inference_steps=a.steps,
                        guidance_scale=a.guidance, eta=0.0, generator=torch.Generator().manual_seed(chunk[0][3]),
                        output_type="pil").images
    done = time.perf_counter()
    assert len(out) == len(items)
    pathlib.Path(a.json).write_text(json.dumps({"load_s": loaded - started, "loaded_s": done - loaded,
                                                "images": len(items)}))


def load_pipeline(a, folder):
    from diffusers import DDIMScheduler
    scheduler = DDIMScheduler.from_config(json.loads((folder / "scheduler" / "scheduler_config.json").read_text()))
    if a.child == "optimum":
        import onnxruntime as ort
        from optimum.onnxruntime import ORTStableDiffusionImg2ImgPipeline
        so = ort.SessionOptions()
        so.intra_op_num_threads = a.threads
        so.inter_op_num_threads = 1
        pipe = ORTStableDiffusionImg2ImgPipeline.from_pretrained(
            str(folder), export=False, provider="CPUExecutionProvider", session_options=so, scheduler=scheduler,
            local_files_only=True)
    else:
        from diffusers import AutoencoderKL, StableDiffusionImg2ImgPipeline, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer
        t = folder / "torch"
        pipe = StableDiffusionImg2ImgPipeline(
            vae=AutoencoderKL.from_pretrained(str(t / "vae")),
            text_encoder=CLIPTextModel.from_pretrained(str(t / "text_encoder")),
            tokenizer=CLIPTokenizer.from_pretrained(str(t / "tokenizer")),
            unet=UNet2DConditionModel.from_pretrained(str(t / "unet")), scheduler=scheduler, safety_checker=None,
            feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# ----------------------------------------------------------------------------------------------------- parent side
def wait_all(procs):
    """Waits for every process; returns the wall time of the last and each one's peak RSS in MB."""
    rss = []
    for p in procs:
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        rss.append(usage.ru_maxrss / 1024)
        if p.returncode != 0:
            sys.exit(f"{p.args} failed with exit code {p.returncode}")
    return rss


def run_peer(a, peer, parts, threads, batch=1):
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="discl-compare-"))
    procs = []
    started = time.perf_counter()
    for k in range(parts):
        args = [sys.executable, __file__, "--child", peer, "--part", str(k), "--parts", str(parts), "--threads",
                str(threads), "--batch", str(batch), "--json", str(tmp / f"{k}.json")] + common_args(a)
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        procs.append(subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL))
    rss = wait_all(procs)
    whole = time.perf_counter() - started
    parts_out = [json.loads((tmp / f"{k}.json").read_text()) for k in range(parts)]
    shutil.rmtree(tmp)
    return {"whole_s": whole, "loaded_s": max(p["loaded_s"] for p in parts_out),
            "images": sum(p["images"] for p in parts_out), "rss_mb": sum(rss)}


def common_args(a):
    return ["--model", a.model, "--sources", str(a.sources), "--seeds", str(a.seeds), "--level", str(a.level),
            "--steps", str(a.steps), "--guidance", str(a.guidance)]


FORMS = {"fp32": "", "int8": 'quantize = "int8"\n', "fused": 'attention = "fused"\n',
         "fused+int8": 'attention = "fused"\nquantize = "int8"\n', "batch1": "batch_size = 1\n",
         "batch2": "batch_size = 2\n", "batch4": "batch_size = 4\n", "batch8": "batch_size = 8\n", "batch16": "batch_size = 16\n"}


def discl_graph(a, out, one_thread, form):
    names = display_names()
    manifest = out.parent / f"{out.name}-sources.jsonl"
    seen = []
    for path, c, _, _ in workload(a):
        if (path, c) not in seen:
            seen.append((path, c))
    manifest.write_text("".join(json.dumps({"path": p, "label": c}) + "\n" for p, c in seen))
    model = "sessions = 1\nthreads = 1\n" if one_thread else ""
    quantize = FORMS[form]
    assert all(c in names for _, c in seen)
    graph = out.parent / f"{out.name}.toml"
    graph.write_text(f"""[pipeline]
name = "compare"
output = "{out}"
seed = 1
[models.cnn]
path = "{REPO / 'models' / 'fashion-cnn'}"
[models.gen]
path = "{pathlib.Path(a.model).resolve()}"
{model}[nodes.images]
op = "source"
format = "manifest"
path = "{manifest}"
[nodes.synthetic]
op = "generate"
inputs = ["images"]
model = "gen"
classes_from = "cnn"
levels = [{a.level}]
seeds = {a.seeds}
steps = {a.steps}
guidance_scale = {a.guidance}
scheduler = "ddim"
{quantize}[nodes.out]
op = "sink"
inputs = ["synthetic"]
""")
    return graph


def run_discl(a, work, one_thread, form):
    out = work / f"discl-{'1' if one_thread else 'all'}-{form}"
    graph = discl_graph(a, out, one_thread, form)
    if out.exists():  # an empty image store each time; a rewritten UNet (state/models) is kept
        for entry in out.iterdir():
            if entry.name != "state":
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        for entry in (out / "state").iterdir():
            if entry.name != "models":
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    summary = work / "summary.json"
    started = time.perf_counter()
    proc = subprocess.Popen([a.discl, "run", str(graph), "--summary-json", str(summary)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    rss = wait_all([proc])
    whole = time.perf_counter() - started
    s = json.loads(summary.read_text())
    made = s["nodes"]["synthetic"]["computed"]
    if made != len(workload(a)):
        sys.exit(f"discl made {made} images, expected {len(workload(a))}: {proc.stdout.read()}")
    said = proc.stdout.read().splitlines()
    return {"whole_s": whole, "loaded_s": s["seconds"], "images": made, "rss_mb": rss[0],
            "generator_busy_s": s["nodes"]["synthetic"]["seconds"], "configuration": said[:2],
            "measured": [line for line in said if "measured fastest" in line]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--discl", default=str(REPO / "target" / "release" / "discl"))
    ap.add_argument("--sources", type=int, default=16)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--level", type=float, default=0.5)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batches", default="1,2,4")
    ap.add_argument("--peers", default="plain,optimum,diffusers")
    ap.add_argument("--forms", default="int8,fused",
                    help="discl's rewritten UNets to run beside the exported one: int8, fused, fused+int8; or a fixed batch "
                         "instead of the measured one: batch1, batch2, batch4, batch8, batch16 (comma list)")
    ap.add_argument("--json")
    for hidden in ("--child", "--part", "--parts", "--threads", "--batch"):
        ap.add_argument(hidden, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        a.part, a.parts, a.threads, a.batch = int(a.part), int(a.parts), int(a.threads), int(a.batch)
        return child(a)

    cores = os.cpu_count() or 1
    peers = [p for p in a.peers.split(",") if p]
    if "diffusers" in peers and not (pathlib.Path(a.model) / "torch").is_dir():
        print(f"diffusers peer skipped: {a.model}/torch is missing (make_sd_shaped.py --torch)", flush=True)
        peers.remove("diffusers")
    batches = [int(b) for b in a.batches.split(",")]
    work = pathlib.Path(tempfile.mkdtemp(prefix="discl-compare-work-"))
    forms = list(dict.fromkeys(f for f in a.forms.split(",") if f))
    unknown = [f for f in forms if f not in FORMS or f == "fp32"]
    if unknown:
        sys.exit(f"--forms: unknown {unknown}; expected some of int8, fused, fused+int8, batch1, batch2, batch4, batch8, batch16")
    rewrite_s = {}
    rewrites = [f for f in forms if not f.startswith("batch")]
    for form in rewrites:  # each made once, outside every timed run; the whole-machine runs open the same file
        started = time.perf_counter()
        run_discl(a, work, True, form)
        rewrite_s[form] = time.perf_counter() - started
        src, dst = work / f"discl-1-{form}" / "state" / "models", work / f"discl-all-{form}" / "state" / "models"
        shutil.copytree(src, dst)

    plan = [("discl", "one thread", lambda: run_discl(a, work, True, "fp32"))]
    for form in forms:
        plan.append((f"discl {form}", "one thread", lambda form=form: run_discl(a, work, True, form)))
    for peer in peers:
        if peer == "optimum":
            for b in batches:
                plan.append((f"optimum b{b}", "one thread", lambda b=b: run_peer(a, "optimum", 1, 1, b)))
        else:
            plan.append((peer, "one thread", lambda peer=peer: run_peer(a, peer, 1, 1)))
    results = {}
    for r in range(a.rounds):
        for name, mode, fn in (plan if r % 2 == 0 else plan[::-1]):
            res = fn()
            results.setdefault((name, mode), []).append(res)
            print(f"round {r + 1}: {mode:13s} {name:14s} whole {res['whole_s']:7.2f} s, loaded {res['loaded_s']:7.2f} s,"
                  f" {res['rss_mb']:6.0f} MB", flush=True)
    best_b = min(batches, key=lambda b: med(results, f"optimum b{b}", "one thread", "loaded_s")) \
        if "optimum" in peers else 1

    whole = [("discl", "whole machine", lambda: run_discl(a, work, False, "fp32"))]
    for form in forms:
        whole.append((f"discl {form}", "whole machine", lambda form=form: run_discl(a, work, False, form)))
    for peer in peers:
        b = best_b if peer == "optimum" else 1
        label = f"optimum b{b}" if peer == "optimum" else peer
        whole.append((f"{label} ×{cores}", "whole machine", lambda peer=peer, b=b: run_peer(a, peer, cores, 1, b)))
        whole.append((f"{label} {cores}t", "whole machine", lambda peer=peer, b=b: run_peer(a, peer, 1, cores, b)))
    if cores > 1:
        for r in range(a.rounds):
            for name, mode, fn in (whole if r % 2 == 0 else whole[::-1]):
                res = fn()
                results.setdefault((name, mode), []).append(res)
                print(f"round {r + 1}: {mode:13s} {name:14s} whole {res['whole_s']:7.2f} s, loaded "
                      f"{res['loaded_s']:7.2f} s, {res['rss_mb']:6.0f} MB", flush=True)
    shutil.rmtree(work)
    report(a, results, rewrite_s, cores, best_b)


def med(results, name, mode, key):
    return statistics.median(r[key] for r in results[(name, mode)])


def report(a, results, rewrite_s, cores, best_b):
    n = len(workload(a))
    print(f"\n{n} images ({a.sources} sources × {a.seeds} seeds), λ = {a.level}, {a.steps} DDIM steps, guidance "
          f"{a.guidance}; medians of {a.rounds} interleaved rounds; {cores} cores")
    for form, seconds in rewrite_s.items():
        print(f"discl's {form} UNet made once in {seconds:.1f} s (a whole run, models loaded, included)")
    rows = []
    for mode in ("one thread", "whole machine"):
        names = [name for (name, m) in results if m == mode]
        if not names:
            continue
        print(f"\n{mode:14s} | s/image whole process | s/image models loaded | peak RSS MB")
        for name in names:
            w, l = med(results, name, mode, "whole_s") / n, med(results, name, mode, "loaded_s") / n
            rss = med(results, name, mode, "rss_mb")
            row = {"mode": mode, "name": name, "whole_s_per_image": w, "loaded_s_per_image": l, "rss_mb": rss}
            busy = ""
            if "generator_busy_s" in results[(name, mode)][0]:
                row["generator_busy_s_per_image"] = med(results, name, mode, "generator_busy_s") / n
                busy = f"   (generator busy {row['generator_busy_s_per_image']:.3f} s/image, all sessions together)"
            rows.append(row)
            print(f"  {name:16s} | {w:8.3f} | {l:8.3f} | {rss:6.0f}{busy}")
        for d in [x for x in names if x.startswith("discl")]:
            for p in [x for x in names if not x.startswith("discl")]:
                rw = med(results, p, mode, "whole_s") / med(results, d, mode, "whole_s")
                rl = med(results, p, mode, "loaded_s") / med(results, d, mode, "loaded_s")
                print(f"  {d} against {p}: {rl:.3f}x models loaded, {rw:.3f}x whole process")
    if a.json:
        pathlib.Path(a.json).write_text(json.dumps({"rows": rows, "rewrite_s": rewrite_s, "best_optimum_batch": best_b,
                                                    "images": n, "cores": cores,
                                                    "raw": [{"name": k[0], "mode": k[1], "runs": v}
                                                            for k, v in results.items()]}, indent=2))


if __name__ == "__main__":
    main()
