"""The plain Python ONNX Runtime loop, a peer of scripts/bench/peers.py: the same img2img workload written as a user
would write it with no pipeline library — one `onnxruntime.InferenceSession` per model file (default session
options but the thread counts), DDIM (eta 0) in numpy, batch 1 (one image per UNet call, [uncond, cond] rows),
prompts embedded once and sources encoded once. It is the floor an engine's steady state is measured against.

Each image's noise comes from numpy's generator seeded with the item's seed: the images differ from the other peers'
(torch's generator) but the calls are the same, which is what a speed comparison needs.
"""
import json

import numpy as np


class Ddim:
    """DDIM (eta 0) from a diffusers scheduler_config.json: "leading" spacing, img2img truncation as get_timesteps."""

    def __init__(self, config, steps):
        n = config["num_train_timesteps"]
        if config.get("beta_schedule") == "scaled_linear":
            betas = np.linspace(config["beta_start"] ** 0.5, config["beta_end"] ** 0.5, n, dtype=np.float32) ** 2
        else:
            betas = np.linspace(config["beta_start"], config["beta_end"], n, dtype=np.float32)
        self.alphas = np.cumprod(1.0 - betas, dtype=np.float32)
        self.final = np.float32(1.0) if config.get("set_alpha_to_one", True) else self.alphas[0]
        self.ratio = n // steps
        self.timesteps = (np.arange(steps) * self.ratio).round()[::-1].astype(np.int64) + config.get("steps_offset", 0)
        self.steps = steps

    def from_strength(self, strength):
        return self.timesteps[self.steps - min(int(self.steps * strength), self.steps):]

    def add_noise(self, x0, noise, t):
        a = self.alphas[t]
        return np.sqrt(a) * x0 + np.sqrt(1.0 - a) * noise

    def step(self, eps, t, x):
        prev = t - self.ratio
        a, a_prev = self.alphas[t], (self.alphas[prev] if prev >= 0 else self.final)
        x0 = (x - np.sqrt(1.0 - a) * eps) / np.sqrt(a)
        return np.sqrt(a_prev) * x0 + np.sqrt(1.0 - a_prev) * eps


def sessions(folder, names, threads):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return {m: ort.InferenceSession(str(folder / m / "model.onnx"), so, providers=["CPUExecutionProvider"])
            for m in names}


class PlainSd:
    """A text-conditioned latent-diffusion export (optimum's layout). Its `unet`, `text_encoder`, `vae_encoder` and
    `vae_decoder` methods are the model calls (peers.py's CallLog counts them)."""

    def __init__(self, folder, steps, guidance, threads):
        from transformers import CLIPTokenizer
        self.s = sessions(folder, ("text_encoder", "vae_encoder", "unet", "vae_decoder"), threads)
        self.tokenizer = CLIPTokenizer.from_pretrained(str(folder / "tokenizer"))
        self.scaling = json.loads((folder / "vae_encoder" / "config.json").read_text())["scaling_factor"]
        self.ddim = Ddim(json.loads((folder / "scheduler" / "scheduler_config.json").read_text()), steps)
        self.guidance = guidance
        self.prompts, self.sources = {}, {}

    def text_encoder(self, ids):
        return self.s["text_encoder"].run(["last_hidden_state"], {"input_ids": ids})[0]

    def vae_encoder(self, image):
        return self.s["vae_encoder"].run(None, {"sample": image})[0]

    def unet(self, sample, t, hidden):
        return self.s["unet"].run(None, {"sample": sample, "timestep": t, "encoder_hidden_states": hidden})[0]

    def vae_decoder(self, latent):
        return self.s["vae_decoder"].run(None, {"latent_sample": latent})[0]

    def embed(self, prompt):
        if prompt not in self.prompts:
            ids = self.tokenizer(prompt, padding="max_length", max_length=self.tokenizer.model_max_length,
                                 truncation=True, return_tensors="np").input_ids.astype(np.int64)
            self.prompts[prompt] = self.text_encoder(ids)
        return self.prompts[prompt]

    def generate(self, image, path, prompt, strength, seed):
        """`image`: a PIL RGB image; returns a PIL image."""
        from PIL import Image
        rng = np.random.default_rng(seed)
        hidden = np.concatenate([self.embed(""), self.embed(prompt)])
        if path not in self.sources:
            pixels = np.asarray(image, dtype=np.float32).transpose(2, 0, 1)[None] / 127.5 - 1.0
            self.sources[path] = self.vae_encoder(pixels)
        mean, logvar = np.split(self.sources[path], 2, axis=1)
        latent = (mean + np.exp(0.5 * np.clip(logvar, -30, 20)) * rng.standard_normal(mean.shape)) * self.scaling
        timesteps = self.ddim.from_strength(strength)
        x = self.ddim.add_noise(latent, rng.standard_normal(latent.shape), timesteps[0]).astype(np.float32)
        for t in timesteps:
            eps = self.unet(np.concatenate([x, x]), np.array(t, dtype=np.float32), hidden)
            eps = eps[:1] + self.guidance * (eps[1:] - eps[:1])
            x = self.ddim.step(eps, t, x).astype(np.float32)
        out = self.vae_decoder(x / self.scaling)[0]
        return Image.fromarray((np.clip(out / 2 + 0.5, 0, 1) * 255).round().astype(np.uint8).transpose(1, 2, 0))


class PlainPixel:
    """A class-conditional pixel-space UNet (`sample`, `timestep` [batch] int64, `class_labels`)."""

    def __init__(self, folder, steps, guidance, null_class, threads):
        self.s = sessions(folder, ("unet",), threads)
        self.ddim = Ddim(json.loads((folder / "scheduler" / "scheduler_config.json").read_text()), steps)
        self.guidance, self.null_class = guidance, null_class

    def unet(self, sample, t, labels):
        return self.s["unet"].run(None, {"sample": sample, "timestep": t, "class_labels": labels})[0]

    def generate(self, image, label, strength, seed):
        """`image`: float32 [1, 1, h, w] in [-1, 1]; returns a uint8 [h, w] array."""
        rng = np.random.default_rng(seed)
        timesteps = self.ddim.from_strength(strength)
        x = self.ddim.add_noise(image, rng.standard_normal(image.shape), timesteps[0]).astype(np.float32)
        labels = np.array([self.null_class, label], dtype=np.int64)
        for t in timesteps:
            eps = self.unet(np.concatenate([x, x]), np.array([t, t], dtype=np.int64), labels)
            eps = eps[:1] + self.guidance * (eps[1:] - eps[:1])
            x = self.ddim.step(eps, t, x).astype(np.float32)
        return ((np.clip(x[0, 0], -1, 1) + 1) * 127.5).round().astype(np.uint8)
