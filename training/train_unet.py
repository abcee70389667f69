#!/usr/bin/env python3
"""Train the class-conditional pixel-space diffusion generator on the balanced half B only. Resumable.

  OMP_NUM_THREADS=1 nohup nice -n 10 .venv-train/bin/python training/train_unet.py >/dev/null 2>&1 &

State lives in ${DISCL_TRAIN_DIR:-$HOME/.cache/discl-train}/fashion-unet-v2/ (--dir):
  ckpt-last.pt   model, EMA, optimizer, step, RNG states, cumulative CPU seconds (written atomically every
                 --ckpt-minutes and on exit; the previous one is kept as ckpt-prev.pt)
  snapshots/ema-step-NNNNNN.pt
                 the EMA weights (and step, CPU seconds, args) every --snapshot-every steps, so that
                 training/select_unet.py can pick the checkpoint by the judge's recognition rate
  train.log      one line per --log-every steps
  STOP           create this file to make the run checkpoint and exit cleanly (SIGTERM/SIGINT do the same)
Restarting the same command resumes from ckpt-last.pt: weights, EMA, optimizer, step, the data permutation and all
RNG states are restored (so a resumed run continues the same data order and noise; steps done after the last
checkpoint are redone). It stops by itself at --max-steps (16000 by default, about 4.5 CPU hours on one thread).

Model: diffusers UNet2DModel, 28x28x1, block_out_channels (32, 64, 64), one layer per block, attention at the lowest
level only, 11 class embeddings (10 classes + null class 10), 10% label dropout for classifier-free guidance,
epsilon prediction, linear betas 1e-4..0.02 over 1000 steps, AdamW 1e-3 (200-step warm-up, then cosine decay to
--min-lr at --max-steps; --schedule constant keeps the first model's constant rate), EMA.
Pixels are scaled to [-1, 1]; training data augmented by random horizontal flips.
"""
import argparse
import math
import os
import random
import signal
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import unet_common as uc  # noqa: E402

STOP = {"flag": False}


def log(path, msg):
    line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {msg}"
    with open(path, "a") as f:
        f.write(line + "\n")
    print(line, flush=True)


def ema_decay(step, max_decay):
    return min(max_decay, (1 + step) / (10 + step))


def save(path, state):
    tmp = path + ".tmp"
    torch.save(state, tmp)
    last = os.path.join(os.path.dirname(path), "ckpt-last.pt")
    prev = os.path.join(os.path.dirname(path), "ckpt-prev.pt")
    if os.path.exists(last):
        os.replace(last, prev)
    os.replace(tmp, last)


def learning_rate(step, args):
    """Linear warm-up, then constant or cosine decay from --lr to --min-lr at --max-steps."""
    warm = min(1.0, (step + 1) / args.warmup)
    if args.schedule == "constant" or step < args.warmup:
        return args.lr * warm
    frac = min(1.0, (step - args.warmup) / max(1, args.max_steps - args.warmup))
    return args.min_lr + 0.5 * (args.lr - args.min_lr) * (1.0 + math.cos(math.pi * frac))


def snapshot(folder, step, ema, cpu_seconds, args):
    """The EMA weights at this step, written atomically (what export_unet.py --ckpt reads)."""
    d = os.path.join(folder, "snapshots")
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, f"ema-step-{step:06d}.pt")
    torch.save({"ema": ema.state_dict(), "step": step, "cpu_seconds": cpu_seconds, "args": vars(args)}, path + ".tmp")
    os.replace(path + ".tmp", path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-steps", type=int, default=16000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--schedule", choices=("cosine", "constant"), default="cosine")
    ap.add_argument("--min-lr", type=float, default=1e-5)
    ap.add_argument("--snapshot-every", type=int, default=1000)
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--label-dropout", type=float, default=0.1)
    ap.add_argument("--ckpt-minutes", type=float, default=10.0)
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--seed", type=int, default=2)
    ap.add_argument("--dir", default=uc.train_dir("fashion-unet-v2"))
    args = ap.parse_args()
    common.setup_threads(1)
    os.makedirs(args.dir, exist_ok=True)
    logf = os.path.join(args.dir, "train.log")
    ckpt = os.path.join(args.dir, "ckpt-last.pt")
    stop_file = os.path.join(args.dir, "STOP")
    if os.path.exists(stop_file):
        os.remove(stop_file)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: STOP.update(flag=True))

    u8, labels, _ = common.load_folder(os.path.join(common.DATA, "fashion-b", "train"))
    data = torch.from_numpy(u8.astype(np.float32)[:, None] / 127.5 - 1.0)
    labels = torch.from_numpy(labels)
    n = len(labels)

    common.seed_everything(args.seed)
    model = uc.make_unet()
    ema = uc.make_unet()
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    noise_sched = uc.make_train_scheduler()
    gen = torch.Generator().manual_seed(args.seed)
    step, cpu_total, perm, pos = 0, 0.0, None, 0

    if os.path.exists(ckpt):
        st = torch.load(ckpt, map_location="cpu", weights_only=False)
        model.load_state_dict(st["model"])
        ema.load_state_dict(st["ema"])
        opt.load_state_dict(st["optimizer"])
        step, cpu_total = st["step"], st["cpu_seconds"]
        perm, pos = st["perm"], st["pos"]
        gen.set_state(st["rng"]["data"])
        torch.set_rng_state(st["rng"]["torch"])
        np.random.set_state(st["rng"]["numpy"])
        random.setstate(st["rng"]["python"])
        log(logf, f"resumed from {ckpt} at step {step} (cpu so far {cpu_total / 3600:.2f} h)")
    else:
        log(logf, f"start: {sum(p.numel() for p in model.parameters())} parameters, half B {n} images, "
                  f"args {vars(args)}")

    def state():
        return {"model": model.state_dict(), "ema": ema.state_dict(), "optimizer": opt.state_dict(),
                "step": step, "cpu_seconds": cpu_total + time.process_time() - cpu0, "perm": perm, "pos": pos,
                "args": vars(args),
                "rng": {"data": gen.get_state(), "torch": torch.get_rng_state(), "numpy": np.random.get_state(),
                        "python": random.getstate()}}

    cpu0, last_ckpt, t_log = time.process_time(), time.time(), time.time()
    loss_acc, loss_n = 0.0, 0
    model.train()
    while step < args.max_steps and not STOP["flag"] and not os.path.exists(stop_file):
        if perm is None or pos + args.batch > n:
            perm, pos = torch.randperm(n, generator=gen), 0
        idx = perm[pos:pos + args.batch]
        pos += args.batch
        x0, y = data[idx], labels[idx].clone()
        b = len(idx)
        flip = torch.rand(b, generator=gen) < 0.5
        x0 = torch.where(flip[:, None, None, None], x0.flip(3), x0)
        y[torch.rand(b, generator=gen) < args.label_dropout] = uc.NULL_CLASS
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, uc.TRAIN_TIMESTEPS, (b,), generator=gen)
        xt = noise_sched.add_noise(x0, noise, t)
        for g in opt.param_groups:
            g["lr"] = learning_rate(step, args)
        loss = F.mse_loss(model(xt, t, class_labels=y).sample, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        d = ema_decay(step, args.ema)
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.mul_(d).add_(pm.detach(), alpha=1 - d)
            for be, bm in zip(ema.buffers(), model.buffers()):
                be.copy_(bm)
        if args.snapshot_every and step % args.snapshot_every == 0:
            snapshot(args.dir, step, ema, cpu_total + time.process_time() - cpu0, args)
            log(logf, f"EMA snapshot at step {step}")
        loss_acc += loss.item()
        loss_n += 1
        if step % args.log_every == 0:
            now = time.time()
            log(logf, f"step {step} loss {loss_acc / loss_n:.5f} lr {opt.param_groups[0]['lr']:.2e} "
                      f"{(now - t_log) / loss_n:.2f} s/step cpu {(cpu_total + time.process_time() - cpu0) / 3600:.3f} h")
            loss_acc, loss_n, t_log = 0.0, 0, now
        if time.time() - last_ckpt > args.ckpt_minutes * 60:
            save(ckpt, state())
            last_ckpt = time.time()
            log(logf, f"checkpoint at step {step}")
    save(ckpt, state())
    why = "max steps reached" if step >= args.max_steps else "stop requested"
    log(logf, f"checkpoint at step {step}; exiting ({why})")


if __name__ == "__main__":
    main()
