"""Model / scheduler definitions shared by train_unet.py, export_unet.py and eval_unet.py."""
import os

NUM_CLASSES = 10
NULL_CLASS = 10          # class index used for the unconditional branch of classifier-free guidance
TRAIN_TIMESTEPS = 1000
BETA_START, BETA_END = 1e-4, 0.02


def train_dir(run="fashion-unet-v2"):
    """Where a training run keeps its checkpoints (the first model's run was "fashion-unet")."""
    base = os.environ.get("DISCL_TRAIN_DIR", os.path.join(os.path.expanduser("~"), ".cache", "discl-train"))
    return os.path.join(base, run)


def make_unet():
    from diffusers import UNet2DModel
    return UNet2DModel(
        sample_size=28,
        in_channels=1,
        out_channels=1,
        block_out_channels=(32, 64, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
        attention_head_dim=32,
        num_class_embeds=NUM_CLASSES + 1,
    )


def make_train_scheduler():
    from diffusers import DDPMScheduler
    return DDPMScheduler(num_train_timesteps=TRAIN_TIMESTEPS, beta_schedule="linear", beta_start=BETA_START,
                         beta_end=BETA_END, prediction_type="epsilon", clip_sample=True)


def make_ddim_scheduler():
    """The sampling scheduler shipped in models/fashion-unet/scheduler/ (same betas as training)."""
    from diffusers import DDIMScheduler
    return DDIMScheduler(num_train_timesteps=TRAIN_TIMESTEPS, beta_schedule="linear", beta_start=BETA_START,
                         beta_end=BETA_END, prediction_type="epsilon", clip_sample=True, clip_sample_range=1.0,
                         set_alpha_to_one=True, steps_offset=1, timestep_spacing="leading")
