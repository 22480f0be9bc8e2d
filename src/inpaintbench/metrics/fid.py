"""Fréchet Inception Distance (Heusel et al. 2017) with pytorch-fid's Inception network.

FID between two image sets is the Fréchet distance between Gaussians fitted to their
Inception features (2048-d pool3, the final average pooling of the FID Inception network
ported from TensorFlow by pytorch-fid):

    FID = ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))

Weights: ``pt_inception-2015-12-05-6726825d.pth`` read from the torch.hub cache
($TORCH_HOME/hub/checkpoints). Offline, a missing file is an ``InpaintBenchError`` that names
the file and the folder (``inpaintbench.train.perceptual.cached_weights``). With fewer than
2048 images per set the 2048x2048 covariance cannot be full rank; the distance is still
computed but ``flagged`` so the report can mark the bucket (DESIGN.md, Metrics).

``FIDFeatures(random_init=True)`` builds the same architecture with seeded random weights and
needs no file: tests and smoke runs only, its numbers are *not* FID.
"""
from __future__ import annotations

import contextlib
import pickle
from typing import Mapping

import numpy as np
import torch
from torch import nn

from ..errors import InpaintBenchError

FID_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
FID_WEIGHTS_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{FID_WEIGHTS_FILE}"
FEATURE_DIM = 2048
FULL_RANK_MIN_IMAGES = FEATURE_DIM  # below this the covariance is rank deficient -> flagged
INPUT_SIZE = 299  # pytorch-fid resizes every image bilinearly to 299x299


# ---------------------------------------------------------------- Fréchet distance
def activation_stats(feats: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean vector and (unbiased, N-1) covariance matrix of an N x D feature matrix."""
    feats = _feature_matrix(feats)
    mu = feats.mean(axis=0)
    sigma = np.cov(feats, rowvar=False)
    return mu, np.atleast_2d(sigma)


def _feature_matrix(feats) -> np.ndarray:
    if isinstance(feats, torch.Tensor):
        feats = feats.detach().cpu().numpy()
    feats = np.asarray(feats, dtype=np.float64)
    if feats.ndim != 2:
        raise InpaintBenchError(f"FID features must be an N x D matrix, got shape {feats.shape}")
    if feats.shape[0] < 2:
        raise InpaintBenchError(
            f"FID needs at least 2 images per set to estimate a covariance, got {feats.shape[0]}; "
            "evaluate more images or disable FID for this bucket."
        )
    return feats


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix (negative
    eigenvalues from round-off are clipped to 0)."""
    sym = (matrix + matrix.T) / 2.0
    vals, vecs = np.linalg.eigh(sym)
    return (vecs * np.sqrt(np.clip(vals, 0.0, None))) @ vecs.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2).

    Tr((S1 S2)^(1/2)) is computed as the sum of square roots of the eigenvalues of the
    symmetric PSD matrix S1^(1/2) S2 S1^(1/2), which is similar to S1 S2. Unlike a general
    ``sqrtm(S1 @ S2)`` this stays real and finite when the covariances are singular (fewer
    images than feature dimensions), so no epsilon offset is needed.
    """
    mu1 = np.atleast_1d(np.asarray(mu1, dtype=np.float64))
    mu2 = np.atleast_1d(np.asarray(mu2, dtype=np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, dtype=np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, dtype=np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise InpaintBenchError(
            f"FID statistics do not match: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs {sigma2.shape}"
        )
    root1 = _psd_sqrt(sigma1)
    middle = root1 @ sigma2 @ root1
    eig = np.linalg.eigvalsh((middle + middle.T) / 2.0)
    tr_covmean = float(np.sqrt(np.clip(eig, 0.0, None)).sum())
    diff = mu1 - mu2
    value = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)
    return max(value, 0.0)  # tiny negatives are round-off of identical statistics


def frechet_distance_from_features(feats1, feats2) -> float:
    """The same Fréchet distance as ``frechet_distance(*activation_stats(f1), *activation_stats(f2))``,
    computed without D x D matrices: with centred, (n-1)^(-1/2)-scaled features A and B,
    S1 = A^T A and S2 = B^T B, and Tr((S1 S2)^(1/2)) is the sum of the singular values of
    A B^T (n1 x n2). Exact, and much cheaper when there are fewer images than dimensions."""
    f1, f2 = _feature_matrix(feats1), _feature_matrix(feats2)
    if f1.shape[1] != f2.shape[1]:
        raise InpaintBenchError(f"FID features do not match: {f1.shape[1]} vs {f2.shape[1]} dimensions")
    a = (f1 - f1.mean(0)) / np.sqrt(f1.shape[0] - 1)
    b = (f2 - f2.mean(0)) / np.sqrt(f2.shape[0] - 1)
    tr_covmean = float(np.linalg.svd(a @ b.T, compute_uv=False).sum())
    diff = f1.mean(0) - f2.mean(0)
    value = float(diff @ diff + (a * a).sum() + (b * b).sum() - 2.0 * tr_covmean)
    return max(value, 0.0)


# ---------------------------------------------------------------- the Inception network
def _fid_inception_architecture() -> nn.Module:
    """pytorch-fid's FID Inception layout (torchvision Inception v3, 1008 classes, no aux
    head, with the FID-specific Mixed blocks) with untrained weights."""
    from pytorch_fid import inception as pf

    net = pf._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    net.Mixed_5b = pf.FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = pf.FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = pf.FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = pf.FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = pf.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = pf.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = pf.FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = pf.FIDInceptionE_1(1280)
    net.Mixed_7c = pf.FIDInceptionE_2(2048)
    return net


def _seeded_random_init(net: nn.Module, seed: int) -> None:
    """He-normal convolutions and identity batch norms from a private generator, so the
    random network is the same on every machine and the global RNG is untouched."""
    gen = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.fill_(1.0)
                m.bias.zero_()
                m.running_mean.zero_()
                m.running_var.fill_(1.0)
            elif isinstance(m, nn.Linear):
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * (1.0 / m.in_features) ** 0.5)
                m.bias.zero_()


def _weights_path(weights_cfg: Mapping | None):
    from ..train.perceptual import cached_weights

    cfg = dict(weights_cfg or {})
    return cached_weights(FID_WEIGHTS_FILE, FID_WEIGHTS_URL, bool(cfg.get("allow_download", False)), "FID Inception (pytorch-fid)")


class FIDFeatures(nn.Module):
    """pytorch-fid's ``InceptionV3`` returning the 2048-d pool3 features, frozen, eval mode.

    Input: N x 3 x H x W float RGB in [0, 1]; resized bilinearly to ``input_size`` (299, the
    FID standard) and scaled to [-1, 1] inside the network, as pytorch-fid does.
    ``random_init=True``: same architecture, seeded random weights, no file (tests only).
    ``input_size`` other than 299 exists only to keep tests fast; such numbers are not FID.
    """

    def __init__(self, *, random_init: bool = False, seed: int = 0, allow_download: bool = False, input_size: int = INPUT_SIZE):
        super().__init__()
        from pytorch_fid import inception as pf

        arch = _fid_inception_architecture()
        if random_init:
            _seeded_random_init(arch, seed)
        else:
            path = _weights_path({"allow_download": allow_download})
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
                arch.load_state_dict(state)
            except (RuntimeError, OSError, ValueError, EOFError, pickle.UnpicklingError) as exc:
                raise InpaintBenchError(
                    f"cannot load FID Inception weights from {path}: {exc}. Delete the file and put a fresh "
                    f"copy of {FID_WEIGHTS_FILE} (from {FID_WEIGHTS_URL}) there."
                ) from exc
        # pytorch-fid's InceptionV3 builds its own network through fid_inception_v3(), which
        # downloads; hand it the network built above instead.
        with _patched(pf, "fid_inception_v3", lambda: arch):
            self.net = pf.InceptionV3(
                output_blocks=[pf.InceptionV3.BLOCK_INDEX_BY_DIM[FEATURE_DIM]],
                resize_input=False,
                normalize_input=True,
                requires_grad=False,
                use_fid_inception=True,
            )
        self.input_size = int(input_size)
        self.random_init = bool(random_init)
        self.eval()

    def train(self, mode: bool = True):  # frozen: always eval (batch norm uses running stats)
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise InpaintBenchError(f"FID expects N x 3 x H x W images, got shape {tuple(images.shape)}")
        x = images.float()
        if x.shape[-2:] != (self.input_size, self.input_size):
            x = nn.functional.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        pooled = self.net(x)[0]
        return pooled.flatten(1)


@contextlib.contextmanager
def _patched(module, name: str, value):
    old = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, old)


def build_fid_features(weights_cfg: Mapping | None = None) -> FIDFeatures:
    """FIDFeatures from the params block ``metrics.fid`` (keys: ``random_init``, ``seed``,
    ``allow_download``, ``input_size``)."""
    cfg = dict(weights_cfg or {})
    return FIDFeatures(
        random_init=bool(cfg.get("random_init", False)),
        seed=int(cfg.get("seed", 0)),
        allow_download=bool(cfg.get("allow_download", False)),
        input_size=int(cfg.get("input_size", INPUT_SIZE)),
    )


def _as_tensor(images, what: str) -> torch.Tensor:
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.ascontiguousarray(images))
    if not isinstance(images, torch.Tensor):
        raise InpaintBenchError(f"{what} images must be a numpy array or torch tensor, got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise InpaintBenchError(f"{what} images must be N x 3 x H x W, got shape {tuple(images.shape)}")
    return images


@torch.no_grad()
def extract_features(model: FIDFeatures, images, *, device: str | torch.device = "cpu", batch_size: int = 50) -> np.ndarray:
    """N x 2048 float64 features of N x 3 x H x W images in [0, 1], in batches."""
    images = _as_tensor(images, "FID")
    model = model.to(device)
    out = []
    for start in range(0, images.shape[0], max(1, int(batch_size))):
        batch = images[start : start + batch_size].to(device=device, dtype=torch.float32)
        out.append(model(batch).double().cpu().numpy())
    return np.concatenate(out, axis=0) if out else np.zeros((0, FEATURE_DIM))


def fid_between(
    real,
    fake,
    *,
    device: str | torch.device = "cpu",
    batch_size: int = 50,
    weights_cfg: Mapping | None = None,
    model: FIDFeatures | None = None,
) -> dict:
    """FID between two image sets (N x 3 x H x W float in [0, 1]).

    Returns ``{"fid", "n", "n_real", "n_fake", "flagged"}``; ``n`` is the smaller set size and
    ``flagged`` is True when n < 2048 (covariance not full rank). Pass ``model`` to reuse one
    network across buckets; otherwise it is built from ``weights_cfg``.
    """
    real = _as_tensor(real, "real")
    fake = _as_tensor(fake, "fake")
    net = model if model is not None else build_fid_features(weights_cfg)
    feats_real = extract_features(net, real, device=device, batch_size=batch_size)
    feats_fake = extract_features(net, fake, device=device, batch_size=batch_size)
    n = int(min(real.shape[0], fake.shape[0]))
    if max(real.shape[0], fake.shape[0]) < FEATURE_DIM:
        value = frechet_distance_from_features(feats_real, feats_fake)
    else:
        value = frechet_distance(*activation_stats(feats_real), *activation_stats(feats_fake))
    return {
        "fid": value,
        "n": n,
        "n_real": int(real.shape[0]),
        "n_fake": int(fake.shape[0]),
        "flagged": n < FULL_RANK_MIN_IMAGES,
    }


def fid_status(weights_cfg: Mapping | None) -> tuple[bool, str]:
    """Whether FID can be computed with these settings, and a sentence for the report."""
    cfg = dict(weights_cfg or {})
    if not bool(cfg.get("enabled", True)):
        return False, "FID not computed: disabled in params.yaml (metrics.fid.enabled: false)."
    if bool(cfg.get("random_init", False)):
        return True, (
            "FID computed with a randomly initialised Inception (metrics.fid.random_init: true): "
            "a smoke-test number, not comparable with published FID."
        )
    if bool(cfg.get("allow_download", False)):
        return True, f"FID with pytorch-fid Inception weights {FID_WEIGHTS_FILE} (downloaded if missing)."
    try:
        path = _weights_path(cfg)
    except InpaintBenchError as exc:
        return False, f"FID not computed: {exc}"
    return True, f"FID with pytorch-fid Inception weights {path}."
