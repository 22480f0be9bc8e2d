"""DDNM: zero-shot image restoration with the denoising diffusion null-space model (Wang, Yu & Zhang,
ICLR 2023; official code wyhuai/DDNM). Inpainting is the linear degradation y = A x with
A = the mask operator that keeps the known pixels, A = diag(1 − M), and its pseudo-inverse A† = A
(official ``A = lambda z: z*mask; Ap = A``), so A A† A = A and A† y = (1 − M) ⊙ y.

* **Prior**: an unconditional diffusion model ε_θ(x_t, t) (diffusers ``UNet2DModel``) with the
  DDPM linear β schedule (1e-4 … 0.02, 1000 steps, official configs). DDNM itself trains nothing
  for inpainting; here the workflow's ``train`` step trains this prior on the experiment's training
  images with the DDPM objective ‖ε − ε_θ(√ᾱ_t x_0 + √(1−ᾱ_t) ε, t)‖² (Ho et al. 2020, Eq. 14), so
  the built-in run and any offline user get a real DDNM row. The mask of each training batch is
  ignored (the prior is unconditional).
* **Null-space sampler** (paper Sec. 3.2, Algorithm 1; official ``simplified_ddnm_plus`` with
  σ_y = 0): for each sampling step t,
    x_{0|t} = (x_t − √(1−ᾱ_t) ε_θ(x_t, t)) / √ᾱ_t                         (paper Eq. 12)
    x̂_{0|t} = A† y + (I − A† A) x_{0|t}  = (1 − M) ⊙ y + M ⊙ x_{0|t}      (paper Eq. 13, the range-
                                                                          null-space decomposition)
    x_{t−1} ~ p(x_{t−1} | x_t, x̂_{0|t})  — a diffusers ``DDIMScheduler`` step with
  ``prediction_type="sample"`` given x̂_{0|t} (η = ``eta``, official default 0.85; the official code
  also samples with DDIM). Choice: diffusers recomputes the DDIM direction ε from x̂_{0|t} and x_t,
  the official code reuses ε_θ; both use the same x̂_{0|t}. x_{0|t} is clamped to [−1, 1] before the
  null-space step (``clip_x0``, as guided-diffusion's ``clip_denoised``): a briefly trained prior
  otherwise predicts x_{0|t} far outside the data range at large t (1/√ᾱ_t ≈ 158 at t = 999). The last step has ᾱ_prev = 1, so the
  output is x̂_{0|1}: the known pixels are exactly y. DDNM's "time travel" (resampling) is the
  official default travel_length = 1, i.e. none, and is not implemented.
* Images are mapped to [−1, 1] for the diffusion model and back.

Released priors (issue 12; OpenAI's 256×256 unconditional ADM for scenes, the CelebA-HQ DDPM of
the SDEdit release for faces; DDNM's own priors): ``prior: released-adm`` or
``released-celebahq`` replaces the trained prior by the release, built and converted in
models/ddnm_priors.py (both are diffusers ``UNet2DModel``s; architecture, converter, parameter
counts and the official code they follow are documented there). The architecture args
(``channels``, ``layers_per_block``, ``attention``, ``norm_groups``) are then unused and the
schedule must be the releases' (1000 steps, linear β 1e-4 … 0.02). The file is read with
``torch.load(weights_only=True)`` (models/released.py ``safe_load``) and its sha256 recorded on
first use and verified from then on (released.py ``verify``). Two ways in:

* a params model with ``weights: {format: adm-256-uncond | ddpm-celebahq, file, sha256, url}``
  (models/released.py): evaluated with the released prior, never trained, scored when the file is
  present (an experiment's ``released:`` list), ``file`` a torch.hub-cache name or a path. The
  schema requires ``weights`` for ``arch: ddnm`` with ``prior: released-*``, so such a model is
  never handed to the trainer (fine-tuning a released prior is not what DDNM does).
* ``registry.build("ddnm", {"prior": "released-adm"}, ...)`` directly: the file is looked up in
  the torch.hub cache, with an error naming the file, the URL and the folder when it is missing.

ADM predicts 6 channels (ε and the learned-variance interpolation v); the sampler uses ε only
(channels 0-2), as the official DDNM: DDIM with η takes its variance from the schedule, so the
learned variance is unused.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InpaintBenchError
from ..train.perceptual import hub_checkpoint_dir
from .base import BuildContext, InpaintModel, StepOutput
from .registry import register

DEFAULT_ARGS = {
    "channels": [8, 16, 16],   # UNet2DModel block_out_channels (built-in tiny prior)
    "layers_per_block": 1,
    "attention": False,        # an attention block at the lowest resolution (down and up)
    "norm_groups": 4,
    "train_timesteps": 1000,   # DDPM T (official configs)
    "beta_start": 1.0e-4,
    "beta_end": 0.02,
    "sampling_steps": 20,      # DDIM steps of the null-space sampler (official T_sampling 100)
    "eta": 0.85,               # DDIM η (official default)
    "sample_seed": 0,          # x_T and the DDIM noise are drawn from this seed
    "clip_x0": True,           # clamp x_{0|t} to the data range [−1, 1] (the DDPM/ADM samplers' clip_denoised)
    "prior": "trained",        # trained | released-adm | released-celebahq (models/ddnm_priors.py)
}
RELEASED_SCHEDULE = {"train_timesteps": 1000, "beta_start": 1.0e-4, "beta_end": 0.02}  # both releases' β schedule
# published-scale trained prior: the CelebA-HQ DDPM architecture the DDNM repository uses for faces
# (configs/celeba_hq.yml: ch 128, ch_mult 1,1,2,2,4,4, 2 res blocks, attention at 16×16)
PAPER_ARGS = {**DEFAULT_ARGS, "channels": [128, 128, 256, 256, 512, 512], "layers_per_block": 2,
              "attention": True, "norm_groups": 32, "sampling_steps": 100}
RELEASED_PRIORS = {
    "released-adm": {
        "file": "256x256_diffusion_uncond.pt",
        "url": "https://openaipublic.blob.core.windows.net/diffusion/jul-2021/256x256_diffusion_uncond.pt",
        "what": "OpenAI guided-diffusion 256x256 unconditional ADM (DDNM's prior for scenes)",
        "format": "adm-256-uncond",
    },
    "released-celebahq": {
        "file": "celeba_hq.ckpt",
        "url": "https://image-editing-test-12345.s3-us-west-2.amazonaws.com/checkpoints/celeba_hq.ckpt",
        "what": "CelebA-HQ DDPM (SDEdit release; DDNM's prior for faces)",
        "format": "ddpm-celebahq",
    },
}
PRIORS = ("trained", *RELEASED_PRIORS)
FORMAT_PRIOR = {info["format"]: name for name, info in RELEASED_PRIORS.items()}  # released.py weights.format


def resolve_args(args: dict) -> dict:
    unknown = set(args) - set(DEFAULT_ARGS)
    if unknown:
        raise InpaintBenchError(f"unknown DDNM args {sorted(unknown)}; known: {sorted(DEFAULT_ARGS)}")
    a = {**DEFAULT_ARGS, **args}
    if a["prior"] not in PRIORS:
        raise InpaintBenchError(f"DDNM prior {a['prior']!r}; choose one of {', '.join(PRIORS)}")
    if int(a["sampling_steps"]) < 1 or int(a["sampling_steps"]) > int(a["train_timesteps"]):
        raise InpaintBenchError(f"DDNM sampling_steps must be in 1..{a['train_timesteps']}, got {a['sampling_steps']}")
    if a["prior"] != "trained":
        changed = {k: a[k] for k, v in RELEASED_SCHEDULE.items() if float(a[k]) != float(v)}
        if changed:
            raise InpaintBenchError(f"DDNM prior {a['prior']} was trained with {RELEASED_SCHEDULE}; "
                                    f"its schedule cannot change (got {changed})")
    return a


def build_unet(a: dict, size: int) -> nn.Module:
    from diffusers import UNet2DModel

    n = len(a["channels"])
    down = ["DownBlock2D"] * n
    up = ["UpBlock2D"] * n
    if a["attention"]:  # attention at the second-lowest resolution, as the DDPM CelebA-HQ model (16×16 of 256)
        k = max(0, n - 2)
        down[k], up[n - 1 - k] = "AttnDownBlock2D", "AttnUpBlock2D"
    if size % 2 ** (n - 1):
        raise InpaintBenchError(f"DDNM's UNet with {n} levels needs image sides divisible by {2 ** (n - 1)}, got {size}")
    return UNet2DModel(sample_size=size, in_channels=3, out_channels=3, layers_per_block=int(a["layers_per_block"]),
                       block_out_channels=tuple(int(c) for c in a["channels"]), down_block_types=tuple(down),
                       up_block_types=tuple(up), norm_num_groups=int(a["norm_groups"]))


def null_space_step(x0_t: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """x̂_{0|t} = A† y + (I − A† A) x_{0|t} with A = A† = diag(1 − M) (M = 1 on holes)."""
    keep = 1 - mask
    return keep * y + (x0_t - keep * x0_t)


class DDNM(InpaintModel):
    def __init__(self, unet: nn.Module, args: dict):
        super().__init__()
        from diffusers import DDIMScheduler, DDPMScheduler

        self.unet = unet
        self.args = dict(args)
        # ADM (released-adm) predicts [ε, v]: only ε is used (module docstring)
        common = {"num_train_timesteps": int(args["train_timesteps"]), "beta_schedule": "linear",
                  "beta_start": float(args["beta_start"]), "beta_end": float(args["beta_end"]), "clip_sample": False}
        self.noise_schedule = DDPMScheduler(**common)  # q(x_t | x_0) for the prior's training
        self.sampler = DDIMScheduler(**common, prediction_type="sample", set_alpha_to_one=True,
                                     timestep_spacing="trailing")

    # ---- prior training (DDPM objective) --------------------------------------------------
    def generator_losses(self, image: torch.Tensor, mask: torch.Tensor) -> StepOutput:
        x0 = image * 2 - 1
        noise = torch.randn_like(x0)
        t = torch.randint(0, self.noise_schedule.config.num_train_timesteps, (x0.shape[0],), device=x0.device)
        xt = self.noise_schedule.add_noise(x0, noise, t)
        eps = self.eps(xt, t)
        loss = F.mse_loss(eps, noise)
        # pred: the prior's one-step estimate x_{0|t} of the batch (for logging/tests), in [0, 1]
        a = self.noise_schedule.alphas_cumprod.to(x0)[t].view(-1, 1, 1, 1)
        x0_t = ((xt - (1 - a).sqrt() * eps.detach()) / a.sqrt()).clamp(-1, 1)
        return StepOutput(loss, {"eps_mse": loss.detach()}, (x0_t + 1) / 2)

    # ---- null-space sampling ---------------------------------------------------------------
    def eps(self, xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """ε_θ(x_t, t): the prior's first 3 output channels (ADM's last 3 are its learned variance)."""
        return self.unet(xt, t).sample[:, :3]

    def x0_from_eps(self, xt: torch.Tensor, eps: torch.Tensor, t: int) -> torch.Tensor:
        a = self.sampler.alphas_cumprod[t].to(xt)
        return (xt - (1 - a).sqrt() * eps) / a.sqrt()

    @torch.no_grad()
    def sample(self, image: torch.Tensor, mask: torch.Tensor, steps: int | None = None,
               record: list | None = None) -> torch.Tensor:
        """The DDNM sampler; returns x_0 in [−1, 1]. `record` (a list) receives one dict per step
        with t, x_t, x_{0|t} and x̂_{0|t} (for tests)."""
        y = (image * 2 - 1) * (1 - mask)  # y = A x (A† y = y since A is a projection)
        gen = torch.Generator(device="cpu").manual_seed(int(self.args["sample_seed"]))
        x = torch.randn(image.shape, generator=gen).to(image)
        self.sampler.set_timesteps(int(steps or self.args["sampling_steps"]))
        for t in self.sampler.timesteps:
            ti = int(t)
            eps = self.eps(x, torch.full((x.shape[0],), ti, device=x.device, dtype=torch.long))
            x0_t = self.x0_from_eps(x, eps, ti)
            if self.args["clip_x0"]:
                x0_t = x0_t.clamp(-1, 1)
            x0_hat = null_space_step(x0_t, y, mask)
            noise = torch.randn(x.shape, generator=gen).to(x)
            x_next = self.sampler.step(x0_hat, ti, x, eta=float(self.args["eta"]), variance_noise=noise).prev_sample
            if record is not None:
                record.append({"t": ti, "x_t": x, "x0_t": x0_t, "x0_hat": x0_hat, "x_prev": x_next, "eps": eps})
            x = x_next
        return x

    def forward(self, image_in: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # image_in = image ⊙ (1 − M): exactly the information y = A x carries
        return (self.sample(image_in, mask) + 1) / 2

    def parameter_counts(self) -> dict[str, int]:
        return {"prior": sum(p.numel() for p in self.unet.parameters())}


def released_prior_path(name: str):
    info = RELEASED_PRIORS[name]
    path = hub_checkpoint_dir() / info["file"]
    if not path.exists():
        raise InpaintBenchError(
            f"DDNM prior {name}: {info['what']} is not in the torch.hub cache: put {info['file']} (from "
            f"{info['url']}) into {path.parent} (set TORCH_HOME to move the cache), or use `prior: trained` "
            f"(the workflow trains a prior on the experiment's training set).")
    return path


def _check_size(name: str, size: int) -> None:
    from .ddnm_priors import PRIOR_FORMATS

    cfg = PRIOR_FORMATS[name][3]
    levels = len(cfg.get("channel_mult") or cfg["ch_mult"])  # 6 for both releases (256 … 8 px)
    if size % 2 ** (levels - 1):
        raise InpaintBenchError(f"DDNM prior {name} has {levels} resolution levels: image sides must be divisible "
                                f"by {2 ** (levels - 1)}, got {size} (the release was trained at 256)")


def build_with_released_prior(a: dict, path, image_size: int) -> DDNM:
    """DDNM (resolved args `a`) over the released prior in `path` (verified by the caller): read
    safely, converted strictly (models/ddnm_priors.py) and loaded."""
    from .ddnm_priors import build_prior
    from .released import safe_load

    _check_size(a["prior"], image_size)
    state = safe_load(path)
    unet = build_prior(a["prior"], state).eval()
    del state
    return DDNM(unet, a)


def build_released_ddnm(name: str, spec: dict, path, image_size: int) -> DDNM:
    """The params model `name` (models/released.py entry, ``weights.format`` adm-256-uncond or
    ddpm-celebahq, file already verified) as DDNM over that released prior."""
    fmt = spec["weights"]["format"]
    prior = FORMAT_PRIOR[fmt]
    if spec["arch"] != "ddnm":
        raise InpaintBenchError(f"models.{name}: format {fmt} holds a DDNM diffusion prior, but arch is {spec['arch']!r}")
    args = dict(spec.get("args") or {})
    if args.get("prior", prior) != prior:
        raise InpaintBenchError(f"models.{name}: weights.format {fmt} is the prior {prior}, but args.prior is {args['prior']!r}")
    return build_with_released_prior(resolve_args({**args, "prior": prior}), path, int(image_size))


@register("ddnm")
def build(args: dict, loss: dict, ctx: BuildContext) -> DDNM:
    a = resolve_args(args)
    if loss:
        raise InpaintBenchError(f"DDNM takes no loss params (its prior is trained with the DDPM objective), got {sorted(loss)}")
    if a["prior"] != "trained":
        from .released import verify

        path = released_prior_path(a["prior"])
        verify(path, None, f"ddnm (prior {a['prior']})")  # sha256 recorded on first use, then enforced
        return build_with_released_prior(a, path, int(ctx.image_size))
    return DDNM(build_unet(a, int(ctx.image_size)), a)
