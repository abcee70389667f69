#!/usr/bin/env python3
"""Writes tests/fixtures/img2img_reference.json: reference img2img / text-to-image runs of models/tiny-sd and
models/tiny-pixel-unet, for checking discl's own implementation.

tiny-sd, per scheduler discl runs (PNDM, DDIM, Euler, DPM-Solver++), three whole runs of diffusers' own PyTorch
pipelines, whose image (decoded, unclamped) and 8-bit output are the reference:
  - img2img at strength 0.5, UNPATCHED: StableDiffusionImg2ImgPipeline with a seeded torch.Generator samples the VAE
    posterior (mean + std * randn, times scaling_factor) and draws the add-noise noise itself; both draws are
    recorded as they happen (randn_tensor is wrapped, not replaced) as posterior_noise and add_noise, for discl to
    inject (vae_latent = "sample").
  - img2img at strength 0.5 with the posterior's MEAN (diffusers' retrieve_latents patched to latent_dist.mode() and
    its noise to the fixture's `noise`): discl's vae_latent = "mean".
  - text-to-image (strength 1.0): StableDiffusionPipeline with latents = `noise`.
Each is also run as a loop over the shipped ONNX files (the loop below mirrors diffusers 0.39's pipelines:
get_timesteps, set_begin_index, add_noise, scale_model_input, classifier-free guidance on a [uncond, cond] batch,
scheduler.step with eta=0) with the same inputs; its differences from the pipeline are recorded under
"torch_check", and its latents at the start and after the first step are kept to localise mismatches.

tiny-pixel-unet (no VAE, no pipeline): the same loop with the ONNX UNet is the reference, checked against the PyTorch
UNet ("torch_check").

Run from the repository root after make_tiny_sd.py and make_tiny_pixel_unet.py:
    HF_HUB_OFFLINE=1 nice -n 10 .venv-export/bin/python scripts/models/dump_img2img_reference.py
"""
import inspect
import json
import os
import pathlib
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
OUT = REPO / "tests" / "fixtures" / "img2img_reference.json"
SD_DIR = REPO / "models" / "tiny-sd"
PIX_DIR = REPO / "models" / "tiny-pixel-unet"

STEPS = 10
GUIDANCE = 3.0
STRENGTHS = [0.5, 1.0]
# tiny-sd: img2img with the VAE posterior sampled (diffusers' default) and with its mean, and text-to-image.
CASES = [(0.5, "sample"), (0.5, "mean"), (1.0, None)]
GENERATOR_SEED = 20261127  # the torch.Generator of diffusers' own img2img runs
PROMPT, NEGATIVE = "a photo of a coat", ""
CLASS_LABEL, NULL_CLASS = 4, 10
EMBED_ROWS = 8  # rows of the prompt embeddings recorded (to localise text-encoder mismatches)


def out_list(a):
    """Outputs: 6 significant digits (float32 carries ~7)."""
    return [float(f"{v:.6g}") for v in np.asarray(a, dtype=np.float64).ravel()]


def exact_list(a):
    """Recorded float32 draws: 9 significant digits give back the exact float32."""
    return [float(f"{v:.9g}") for v in np.asarray(a, dtype=np.float32).astype(np.float64).ravel()]


def in_list(a):
    """Inputs are made with 4 decimals, so these decimals are exactly the float32 values used."""
    return [round(float(v), 4) for v in np.asarray(a, dtype=np.float64).ravel()]


def sd_source_image(h, w):
    c, y, x = np.meshgrid(np.arange(3), np.arange(h), np.arange(w), indexing="ij")
    v = 0.85 * np.sin(0.41 * y + 0.27 * (c + 1) * x + 1.3 * c) * np.cos(0.19 * (x - y)) + 0.1 * (c - 1)
    return np.round(np.clip(v, -1, 1), 4).astype(np.float32)[None]


def pixel_source_image(h, w):
    y, x = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    blob = np.exp(-(((y - 13.5) / 9.0) ** 2 + ((x - 13.5) / 6.5) ** 2) ** 2)
    v = 1.9 * blob - 1.0 + 0.15 * np.sin(0.9 * y) * blob
    return np.round(np.clip(v, -1, 1), 4).astype(np.float32)[None, None]


def make_noise(shape, seed):
    rng = np.random.default_rng(seed)
    return np.round(rng.standard_normal(shape), 4).astype(np.float32)


def session(path):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def schedulers(dpm=False):
    """The schedulers discl runs; tiny-sd's whole runs also take DPM-Solver++ (dpm=True)."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler, PNDMScheduler
    kinds = {"PNDMScheduler": PNDMScheduler, "DDIMScheduler": DDIMScheduler,
             "EulerDiscreteScheduler": EulerDiscreteScheduler}
    if dpm:
        kinds["DPMSolverMultistepScheduler"] = DPMSolverMultistepScheduler
    return kinds


def run_case(sched, strength, z0, noise, eps_fn):
    """One img2img (strength < 1) or text-to-image (strength == 1) run. eps_fn(model_input [2,...], t) -> [2,...]
    noise predictions for the [uncond, cond] batch. Returns a dict of torch tensors / lists."""
    sched.set_timesteps(STEPS)
    if strength >= 1.0:  # StableDiffusionPipeline: all timesteps, latents = noise * init_noise_sigma
        mode, t_start = "txt2img", 0
        timesteps = sched.timesteps
        init_sigma = float(sched.init_noise_sigma)
        latents = noise * sched.init_noise_sigma
    else:  # StableDiffusionImg2ImgPipeline.get_timesteps + prepare_latents
        mode = "img2img"
        init_timestep = min(int(STEPS * strength), STEPS)
        t_start = max(STEPS - init_timestep, 0)
        timesteps = sched.timesteps[t_start * sched.order:]
        if hasattr(sched, "set_begin_index"):
            sched.set_begin_index(t_start * sched.order)
        init_sigma = None
        latents = sched.add_noise(z0, noise, timesteps[:1].repeat(z0.shape[0]))
    start = latents.clone()
    params = set(inspect.signature(sched.step).parameters)
    extra = {k: v for k, v in (("eta", 0.0), ("generator", None)) if k in params}
    first = None
    for i, t in enumerate(timesteps):
        model_input = sched.scale_model_input(torch.cat([latents] * 2), t)
        eps_u, eps_c = eps_fn(model_input, t).chunk(2)
        eps = eps_u + GUIDANCE * (eps_c - eps_u)
        latents = sched.step(eps, t, latents, **extra, return_dict=False)[0]
        if i == 0:
            first = latents.clone()
    tl = timesteps.tolist()
    return {"mode": mode, "t_start_index": t_start * sched.order,
            "timesteps": [int(v) if float(v).is_integer() else float(v) for v in tl],
            "init_noise_sigma": init_sigma, "start": start, "first": first, "final": latents}


def recording(module, draws, tag):
    """Wraps module.randn_tensor so each draw is kept (tag, tensor); diffusers' behaviour is unchanged."""
    original = module.randn_tensor

    def randn_tensor(*args, **kwargs):
        out = original(*args, **kwargs)
        draws.append((tag, out.clone()))
        return out
    module.randn_tensor = randn_tensor
    return original


def tiny_sd(versions):
    import make_tiny_sd as mts
    from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionPipeline
    from diffusers.models.autoencoders import vae as vae_mod
    from diffusers.pipelines.stable_diffusion import pipeline_stable_diffusion_img2img as img2img_mod
    from transformers import CLIPTokenizer

    te, unet = session(SD_DIR / "text_encoder" / "model.onnx"), session(SD_DIR / "unet" / "model.onnx")
    enc, dec = session(SD_DIR / "vae_encoder" / "model.onnx"), session(SD_DIR / "vae_decoder" / "model.onnx")
    sched_cfg = json.loads((SD_DIR / "scheduler" / "scheduler_config.json").read_text())
    vae_cfg = json.loads((SD_DIR / "vae_encoder" / "config.json").read_text())
    sf = vae_cfg["scaling_factor"]
    f = 2 ** (len(vae_cfg["block_out_channels"]) - 1)
    size = vae_cfg["sample_size"]
    tok = CLIPTokenizer.from_pretrained(str(SD_DIR / "tokenizer"))

    def ids_of(text):
        return tok(text, padding="max_length", max_length=tok.model_max_length, truncation=True,
                   return_tensors="np").input_ids.astype(np.int64)

    cond_ids, uncond_ids = ids_of(PROMPT), ids_of(NEGATIVE)
    cond_emb = te.run(["last_hidden_state"], {"input_ids": cond_ids})[0]
    uncond_emb = te.run(["last_hidden_state"], {"input_ids": uncond_ids})[0]
    embeds = np.concatenate([uncond_emb, cond_emb])  # [uncond, cond] as diffusers

    image = sd_source_image(size, size)
    params = enc.run(["latent_parameters"], {"sample": image})[0]
    mean_onnx, logvar_onnx = torch.from_numpy(params[:, :4]), torch.from_numpy(params[:, 4:])
    std_onnx = torch.exp(0.5 * torch.clamp(logvar_onnx, -30.0, 20.0))  # DiagonalGaussianDistribution
    z0_mean = mean_onnx * sf
    noise = torch.from_numpy(make_noise((1, 4, size // f, size // f), 20261124))

    def eps_onnx(x, t):
        return torch.from_numpy(unet.run(["out_sample"], {
            "sample": x.numpy().astype(np.float32), "timestep": np.array(float(t), dtype=np.float32),
            "encoder_hidden_states": embeds})[0])

    def decode_onnx(lat):
        return dec.run(["sample"], {"latent_sample": (lat / sf).numpy().astype(np.float32)})[0]

    # PyTorch pipelines (same seeded weights as the exported ONNX files).
    modules = dict(vae=mts.make_vae(), text_encoder=mts.make_text_encoder(), tokenizer=tok, unet=mts.make_unet(),
                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    with torch.no_grad():
        dist_torch = modules["vae"].encode(torch.from_numpy(image)).latent_dist
    enc_diff = float((dist_torch.mean * sf - z0_mean).abs().max())
    std_diff = float((dist_torch.std - std_onnx).abs().max())

    def finish(pipe, latents):
        """What the pipeline does after its loop (output_type "pil"): decode, denormalise, 8 bits."""
        with torch.no_grad():
            img = pipe.vae.decode(latents / sf, return_dict=False)[0]
        u8 = (pipe.image_processor.postprocess(img, output_type="np") * 255).round().astype("uint8")
        return img.numpy(), u8

    cases, checks = [], []
    posterior_noise = add_noise = None
    for name, cls in schedulers(dpm=True).items():
        kw = dict(prompt=PROMPT, num_inference_steps=STEPS, guidance_scale=GUIDANCE)
        for strength, vae_latent in CASES:
            if vae_latent == "sample":
                # diffusers' own img2img, unpatched: it samples the posterior (mean + std * randn) and draws the
                # add-noise noise from the generator; both draws are recorded as they happen.
                pipe = StableDiffusionImg2ImgPipeline(scheduler=cls.from_config(sched_cfg), **modules)
                draws = []
                saved = recording(vae_mod, draws, "posterior"), recording(img2img_mod, draws, "add_noise")
                try:
                    with torch.no_grad():
                        lat_t = pipe(image=torch.from_numpy(image), strength=strength, output_type="latent",
                                     generator=torch.Generator().manual_seed(GENERATOR_SEED), **kw).images
                finally:
                    vae_mod.randn_tensor, img2img_mod.randn_tensor = saved
                assert [t for t, _ in draws] == ["posterior", "add_noise"], [t for t, _ in draws]
                post, add = draws[0][1], draws[1][1]
                if posterior_noise is None:
                    posterior_noise, add_noise = post, add
                assert torch.equal(post, posterior_noise) and torch.equal(add, add_noise), "one seed, one draw"
                with torch.no_grad():  # the pipeline's default output, for the 8-bit check below
                    pil = pipe(image=torch.from_numpy(image), strength=strength,
                               generator=torch.Generator().manual_seed(GENERATOR_SEED), **kw).images[0]
                img_t, u8 = finish(pipe, lat_t)
                assert np.array_equal(np.asarray(pil), u8[0]), "the pipeline's own PIL output"
                # The same run as a loop over the ONNX files, with both recorded noises.
                z0 = (mean_onnx + std_onnx * posterior_noise) * sf
                r = run_case(cls.from_config(sched_cfg), strength, z0, add_noise, eps_onnx)
            elif vae_latent == "mean":
                # discl's vae_latent = "mean": the loop over the ONNX files with the posterior's mean; checked against
                # diffusers' img2img with the latent taken as the mean (retrieve_latents' "argmax" mode).
                r = run_case(cls.from_config(sched_cfg), strength, z0_mean, noise, eps_onnx)
                pipe = StableDiffusionImg2ImgPipeline(scheduler=cls.from_config(sched_cfg), **modules)
                saved = img2img_mod.retrieve_latents, img2img_mod.randn_tensor
                img2img_mod.retrieve_latents = lambda enc_out, generator=None, sample_mode="": \
                    enc_out.latent_dist.mode()
                img2img_mod.randn_tensor = lambda shape, **_: noise.clone()
                try:
                    with torch.no_grad():
                        lat_t = pipe(image=torch.from_numpy(image), strength=strength, output_type="latent",
                                     **kw).images
                finally:
                    img2img_mod.retrieve_latents, img2img_mod.randn_tensor = saved
                img_t, u8 = finish(pipe, lat_t)
            else:  # text-to-image: diffusers' own StableDiffusionPipeline with latents = the recorded noise
                r = run_case(cls.from_config(sched_cfg), strength, None, noise, eps_onnx)
                pipe = StableDiffusionPipeline(scheduler=cls.from_config(sched_cfg), **modules)
                with torch.no_grad():
                    lat_t = pipe(latents=noise.clone(), height=size, width=size, output_type="latent", **kw).images
                img_t, u8 = finish(pipe, lat_t)
            img_onnx = decode_onnx(r["final"])
            checks.append({"scheduler": name, "strength": strength, "vae_latent": vae_latent,
                           "final_latents_max_abs_diff": float((lat_t - r["final"]).abs().max()),
                           "image_max_abs_diff": float(np.abs(img_t - img_onnx).max())})
            cases.append({"scheduler": name, "strength": strength, "vae_latent": vae_latent, "mode": r["mode"],
                          "t_start_index": r["t_start_index"], "timesteps": r["timesteps"],
                          "unet_calls": len(r["timesteps"]), "init_noise_sigma": r["init_noise_sigma"],
                          "latents_start": out_list(r["start"]), "latents_after_first_step": out_list(r["first"]),
                          "image": out_list(img_t), "image_u8": u8.transpose(0, 3, 1, 2).ravel().tolist(),
                          "image_range": [float(img_t.min()), float(img_t.max())]})
            print(f"tiny-sd {name:24s} strength {strength} {vae_latent}: {len(r['timesteps'])} calls, ONNX check "
                  f"{checks[-1]}")
    te_t = modules["text_encoder"](torch.from_numpy(cond_ids)).last_hidden_state.detach().numpy()
    return {
        "model_dir": "models/tiny-sd",
        "space": "latent",
        "image_shape": list(image.shape[1:]),
        "latent_shape": list(noise.shape[1:]),
        "scaling_factor": sf,
        "num_inference_steps": STEPS,
        "guidance_scale": GUIDANCE,
        "prompt": PROMPT,
        "negative_prompt": NEGATIVE,
        "cond_input_ids": cond_ids[0].tolist(),
        "uncond_input_ids": uncond_ids[0].tolist(),
        "embeds_rows": EMBED_ROWS,
        "cond_embeds_head": out_list(cond_emb[0, :EMBED_ROWS]),
        "uncond_embeds_head": out_list(uncond_emb[0, :EMBED_ROWS]),
        "source_image": in_list(image),
        "z0": out_list(z0_mean),
        "posterior_std": out_list(std_onnx),
        "noise": in_list(noise),
        "generator_seed": GENERATOR_SEED,
        "posterior_noise": exact_list(posterior_noise),
        "add_noise": exact_list(add_noise),
        "scheduler_config": sched_cfg,
        "cases": cases,
        "torch_check": {"text_encoder_max_abs_diff": float(np.abs(te_t - cond_emb).max()),
                        "vae_encoder_mean_x_sf_max_abs_diff": enc_diff, "vae_encoder_std_max_abs_diff": std_diff,
                        "runs": checks},
    }


def tiny_pixel(versions):
    import make_tiny_pixel_unet as mtp
    sess = session(PIX_DIR / "unet" / "model.onnx")
    sched_cfg = json.loads((PIX_DIR / "scheduler" / "scheduler_config.json").read_text())
    ucfg = json.loads((PIX_DIR / "unet" / "config.json").read_text())
    size, ch = ucfg["sample_size"], ucfg["in_channels"]
    labels = np.array([NULL_CLASS, CLASS_LABEL], dtype=np.int64)  # [uncond, cond]
    unet_t = mtp.make_unet()

    def eps_onnx(x, t):
        return torch.from_numpy(sess.run(["out_sample"], {
            "sample": x.numpy().astype(np.float32), "timestep": np.full(x.shape[0], int(t), dtype=np.int64),
            "class_labels": labels})[0])

    def eps_torch(x, t):
        with torch.no_grad():
            return unet_t(x, torch.full((x.shape[0],), int(t), dtype=torch.int64),
                          class_labels=torch.from_numpy(labels)).sample

    image = torch.from_numpy(pixel_source_image(size, size))
    noise = torch.from_numpy(make_noise((1, ch, size, size), 4))
    cases, checks = [], []
    for name, cls in schedulers().items():
        if name == "PNDMScheduler":
            continue
        for strength in STRENGTHS:
            r = run_case(cls.from_config(sched_cfg), strength, image, noise, eps_onnx)
            rt = run_case(cls.from_config(sched_cfg), strength, image, noise, eps_torch)
            checks.append({"scheduler": name, "strength": strength,
                           "final_max_abs_diff": float((rt["final"] - r["final"]).abs().max())})
            cases.append({"scheduler": name, "strength": strength, "mode": r["mode"],
                          "t_start_index": r["t_start_index"], "timesteps": r["timesteps"],
                          "unet_calls": len(r["timesteps"]), "init_noise_sigma": r["init_noise_sigma"],
                          "latents_start": out_list(r["start"]), "latents_after_first_step": out_list(r["first"]),
                          "image": out_list(r["final"]),
                          "image_range": [float(r["final"].min()), float(r["final"].max())]})
            print(f"tiny-pixel-unet {name:24s} strength {strength}: {len(r['timesteps'])} calls, torch check "
                  f"{checks[-1]}")
    return {
        "model_dir": "models/tiny-pixel-unet",
        "space": "pixel",
        "image_shape": list(image.shape[1:]),
        "num_inference_steps": STEPS,
        "guidance_scale": GUIDANCE,
        "class_label": CLASS_LABEL,
        "null_class": NULL_CLASS,
        "source_image": in_list(image),
        "noise": in_list(noise),
        "scheduler_config": sched_cfg,
        "cases": cases,
        "torch_check": {"runs": checks},
    }


def main():
    torch.set_num_threads(1)
    import diffusers
    import onnxruntime
    import transformers
    versions = {"diffusers": diffusers.__version__, "transformers": transformers.__version__,
                "torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "numpy": np.__version__}
    doc = {
        "description": (
            "Reference img2img (strength < 1) and text-to-image (strength 1) runs with explicit inputs; "
            "written by scripts/models/dump_img2img_reference.py (see its docstring)."),
        "layout": (
            "Arrays are flat, row-major (C order) with the batch dimension of 1 dropped: images [C,H,W] in [-1,1] "
            "(outputs are not clamped), latents [4,h,w]; image_u8 is the pipeline's 8-bit output, also [C,H,W]. Inputs "
            "(source_image, noise) have 4 decimals and are the exact float32 values used; the recorded draws "
            "(posterior_noise, add_noise) have 9 significant digits, also exact; outputs have 6 significant digits."),
        "algorithm": (
            "scheduler = <kind>.from_config(scheduler_config); scheduler.set_timesteps(num_inference_steps). "
            "img2img: init = min(int(steps*strength), steps); t_start = steps - init; timesteps = "
            "scheduler.timesteps[t_start*order:]; set_begin_index(t_start*order) if the scheduler has it; "
            "latents = add_noise(z0, noise, timesteps[0]) with z0 = (mean + std * posterior_noise) * scaling_factor "
            "and noise = add_noise (tiny-sd, vae_latent sample; std = exp(0.5 * clamp(logvar, -30, 20))), z0 = mean * "
            "scaling_factor and the fixture's noise (tiny-sd, vae_latent mean), or z0 = the source image (pixel). txt2img (strength 1): all timesteps, latents = noise * init_noise_sigma. Each "
            "step: x = scale_model_input(cat[latents, latents], t); UNet on the [uncond, cond] batch; "
            "eps = eps_u + guidance_scale*(eps_c - eps_u); latents = step(eps, t, latents, eta=0). tiny-sd: "
            "UNet timestep = float32 rank-0 t, encoder_hidden_states = text_encoder(ids).last_hidden_state for "
            "[uncond_input_ids, cond_input_ids]; image = vae_decoder(latents / scaling_factor). pixel: timestep "
            "= int64 [t, t], class_labels = [null_class, class_label]; image = final latents."),
        "versions": versions,
        "models": {"tiny-sd": tiny_sd(versions), "tiny-pixel-unet": tiny_pixel(versions)},
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with open(OUT, "w") as fh:
        json.dump(doc, fh, separators=(",", ":"))
        fh.write("\n")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
