"""Released checkpoints of the baselines as methods of their own (issue 13).

A model entry in params.yaml may name released weights instead of being trained here:

    big-lama-released:
      arch: lama_fourier
      label: LaMa (big-lama, released)
      weights: {format: lama, file: big-lama.ckpt, sha256: null, url: https://…}

Such an entry is not trained (``Params.is_learned`` is False for it); the evaluation step builds
the architecture from the checkpoint, converts the official state dict to ours and scores it on
the same pairs as the trained models. ``file`` is a path (absolute, or relative to the project)
or a file name looked up in the torch.hub cache ($TORCH_HOME/hub/checkpoints). EdgeConnect's
release is two files, so ``file`` (and ``sha256``) may map a role to a file:
``{edge: EdgeModel_gen.pth, inpaint: InpaintingModel_gen.pth}``.

Checksums: a published ``sha256`` is verified. Where the authors published none (LaMa,
EdgeConnect, RFR: Google-Drive folders), ``sha256: null`` records the file's hash on first use in
``<file>.sha256`` beside it and verifies it from then on (the README says so). MMagic/OpenMMLab
file names end in the first 8 hex digits of the file's sha256 (``…_20200619-c96e5f12.pth``);
that prefix is checked as well.

Loading is safe: ``torch.load(weights_only=True)``; a file that needs more (LaMa's Lightning
checkpoints hold OmegaConf hyper-parameters and callback objects) is read by a restricted
unpickler that resolves only the names torch's weights-only loader allows and replaces every
other class or function by an inert stub, so no code from the file runs; only tensors are used.

Formats (the official code's conventions; each converter lands on our conventions — images in
[0, 1], masks 1 = hole — which for these three equal the official ones except where noted):
* ``lama``: Lightning checkpoint of advimman/lama, ``state_dict`` with ``generator.`` keys of the
  FFCResNetGenerator (models/lama.py convert_official_generator). Input [0, 1] image ⊙ (1 − m)
  ∥ m, mask 1 = hole, sigmoid output in [0, 1].
* ``edgeconnect``: knazeri/edge-connect ``{'iteration', 'generator'}`` .pth pair (edge, inpaint).
  Input [0, 1], mask 1 = hole, holes filled with 1; Canny σ 2 on the known region (config SIGMA).
* ``rfr``: jingyuanli001/RFR-Inpainting ``{'n_iter', 'generator', …}``. Input [0, 1] image ⊙ M
  with M 1 = *valid* (3 channels): the converter's model takes our hole mask and inverts it.
* ``mmagic-pconv``: mmengine/mmediting checkpoint ``{'meta', 'state_dict'}`` with
  ``generator.encoder.enc*`` / ``generator.decoder.dec*`` keys (7 layers). Images in [-1, 1]
  (DataPreprocessor mean = std = 127.5), mask 1 = valid for the network: the model is built with
  ``value_range: pm1`` and inverts our hole mask.
* ``mmagic-deepfill``: the same mmengine layout for DeepFill v2 (``generator.stage1.*``,
  ``generator.stage2.*``): our deepfill_v2 with ``variant: mmagic`` (reflect padding, so images of
  at least 72 px) and its wider refinement decoder; [-1, 1] inside the model as always, mask 1 = hole.
* ``ctsdg``: Xiefan-Guo/CTSDG ``{'n_iter', 'generator', 'discriminator', …}``; models/ctsdg.py keeps
  the official generator's key names (helper H2), so ``generator`` loads as it is; the
  architecture comes from the entry's ``args`` (published: base 64, depth 7: sides multiples of
  128). [-1, 1] inside the model, mask 1 = valid for the network (converted), Canny σ 2.
* ``adm-256-uncond`` / ``ddpm-celebahq``: DDNM's diffusion priors (``arch: ddnm``), OpenAI
  guided-diffusion's ``256x256_diffusion_uncond.pt`` and the SDEdit ``celeba_hq.ckpt`` (ermongroup
  DDPM layout): models/ddnm.py ``build_released_ddnm`` converts them (models/ddnm_priors.py) and
  builds the null-space sampler over them; images in [-1, 1] inside the model, mask 1 = hole.
* ``deepfill-tf``: the released TF checkpoints of JiahuiYu/generative_inpainting (``snap-0.index``
  + ``snap-0.data-00000-of-00001``; ``file`` the ``.index`` (the data file beside it) or
  ``{index: …, data: …}``), read without TensorFlow (models/tf_checkpoint.py); the
  ``inpaint_net/*`` variables convert to our deepfill_v2 ``variant: tf`` (models/deepfill_v2.py
  convert_tf). Images [-1, 1] inside the model, mask 1 = hole, as the released code.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import re
import sys
from pathlib import Path

from ..errors import InpaintBenchError

FORMATS = ("lama", "edgeconnect", "rfr", "mmagic-pconv", "mmagic-deepfill", "ctsdg", "adm-256-uncond", "ddpm-celebahq",
           "deepfill-tf")
DDNM_FORMATS = ("adm-256-uncond", "ddpm-celebahq")  # DDNM's diffusion priors (models/ddnm.py, ddnm_priors.py)
_MMLAB_HASH = re.compile(r"-([0-9a-f]{8})\.pth$")


# ---------------------------------------------------------------------------- safe loading

class _Stub:
    """Stands in for a class or function the file names but that is not a tensor building block."""

    def __init__(self, *args, **kwargs):
        self._args, self._kwargs = args, kwargs

    def __setstate__(self, state):
        self._state = state

    def __setitem__(self, key, value):  # dict subclasses (e.g. AttributeDict) are rebuilt item by item
        self.__dict__.setdefault("_items", {})[key] = value


def _stub(module: str, name: str) -> type:
    return type(name, (_Stub,), {"__module__": f"inpaintbench.models.released.stub.{module}"})


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        from torch import _weights_only_unpickler as wou

        allowed = wou._get_allowed_globals()
        full = f"{module}.{name}"
        if full in allowed:
            return allowed[full]
        return _stub(module, name)


class _RestrictedPickle:
    """A ``pickle_module`` for torch.load whose Unpickler is the restricted one."""

    Unpickler = _RestrictedUnpickler
    UnpicklingError = pickle.UnpicklingError

    @staticmethod
    def load(file, **kwargs):
        return _RestrictedUnpickler(file, **kwargs).load()


def safe_load(path: str | Path) -> dict:
    """The file's object with tensors on the CPU; never runs code the file names."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        pass  # a global outside torch's weights-only allowlist: read it with stubs instead
    except Exception as exc:
        raise InpaintBenchError(f"released weights {path} cannot be read ({exc}); download the file again") from exc
    try:
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=_RestrictedPickle)
    except Exception as exc:
        raise InpaintBenchError(f"released weights {path} cannot be read ({exc}); download the file again") from exc


# ---------------------------------------------------------------------------- files and checksums

def hub_dir() -> Path:
    """$TORCH_HOME/hub/checkpoints. torch.hub's own answer when torch is loaded (it may have been
    set with torch.hub.set_dir); else the same rule without importing torch (TORCH_HOME, else
    $XDG_CACHE_HOME/torch, else ~/.cache/torch): params validation asks `present` in every
    workflow job, and the data steps need no torch (~1.2 s CPU to import)."""
    if "torch" in sys.modules:
        return Path(sys.modules["torch"].hub.get_dir()) / "checkpoints"
    home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache"), "torch")
    return Path(os.path.expanduser(home)) / "hub" / "checkpoints"


def _roles(weights: dict) -> dict[str, str]:
    file = weights["file"]
    return dict(file) if isinstance(file, dict) else {"file": file}


def candidate(file: str) -> Path:
    p = Path(file).expanduser()
    if p.is_absolute() or p.exists():
        return p
    return hub_dir() / file


def present(spec: dict) -> bool:
    """Whether every file of a released entry is on this machine (no hashing)."""
    return all(candidate(f).is_file() for f in _roles(spec["weights"]).values())


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify(path: Path, expected: str | None, name: str) -> str:
    """Check `path` against a published sha256, the MMLab file-name prefix, or the hash recorded
    on first use; returns the file's sha256."""
    digest = sha256_of(path)
    m = _MMLAB_HASH.search(path.name)
    if m and not digest.startswith(m.group(1)):
        raise InpaintBenchError(
            f"models.{name}: {path} has sha256 {digest}, which does not start with the {m.group(1)} its name "
            f"publishes; the file is corrupt or not the released one: download it again")
    if expected:
        if digest != expected.lower():
            raise InpaintBenchError(
                f"models.{name}: {path} has sha256 {digest}, expected {expected} (weights.sha256 in params.yaml); "
                f"the file is corrupt or not the released one: download it again")
        return digest
    record = path.with_name(path.name + ".sha256")
    if record.exists():
        known = record.read_text(encoding="utf-8").split()[0]
        if digest != known:
            raise InpaintBenchError(
                f"models.{name}: {path} has sha256 {digest}, but {record} recorded {known} when it was first used; "
                f"the file changed: download it again (and delete {record.name})")
    else:
        from ..io import atomic_path

        with atomic_path(record) as tmp:
            Path(tmp).write_text(f"{digest}  {path.name}\n", encoding="utf-8")
    return digest


def resolve(name: str, spec: dict) -> dict[str, Path]:
    """{role: verified path} of a released entry; a clear error naming file and URL when missing."""
    weights = spec["weights"]
    sums = weights.get("sha256")
    out = {}
    for role, file in _roles(weights).items():
        path = candidate(file)
        if not path.is_file():
            url = weights.get("url", "(no url given)")
            raise InpaintBenchError(
                f"models.{name}: released weights {file} not found (looked for {path}). Download them from {url} "
                f"and put {Path(file).name} into {hub_dir()} (set TORCH_HOME to move the cache), or set "
                f"models.{name}.weights.file to its path. This machine cannot download them itself.")
        expected = sums.get(role) if isinstance(sums, dict) else sums
        verify(path, expected, name)
        out[role] = path
    return out


# ---------------------------------------------------------------------------- converters

def _tensors(state: dict, where: str) -> dict:
    import torch

    if not isinstance(state, dict) or not state or not all(torch.is_tensor(v) for v in state.values()):
        raise InpaintBenchError(f"{where} is not a state dict of tensors; is the file in the named format?")
    return state


def convert(fmt: str, objects: dict[str, dict]) -> tuple[str, dict, dict[str, dict]]:
    """(arch, args, {sub-module of our model: its state dict}) from the loaded official objects."""
    if fmt == "lama":
        from .lama import convert_official_generator

        (obj,) = objects.values()
        state = obj.get("state_dict", obj) if isinstance(obj, dict) else obj
        gen = {k[len("generator."):]: v for k, v in state.items() if k.startswith("generator.")}
        args, converted = convert_official_generator(_tensors(gen, "the checkpoint's generator.* entries"))
        return "lama_fourier", args, {"generator": converted}
    if fmt == "edgeconnect":
        from .layers.edge_blocks import convert_official_generator, official_generator_args

        if set(objects) != {"edge", "inpaint"}:
            raise InpaintBenchError("format edgeconnect needs weights.file {edge: EdgeModel_gen.pth, inpaint: InpaintingModel_gen.pth}")
        g1 = _tensors(objects["edge"].get("generator"), "EdgeModel_gen.pth['generator']")
        g2 = _tensors(objects["inpaint"].get("generator"), "InpaintingModel_gen.pth['generator']")
        args = official_generator_args(g1)
        return "edgeconnect", args, {"g1": convert_official_generator(g1), "g2": convert_official_generator(g2)}
    if fmt == "rfr":
        from .rfr import convert_official

        (obj,) = objects.values()
        state = obj.get("generator", obj)
        args, converted = convert_official(_tensors(state, "the checkpoint's 'generator' entry"))
        return "rfr", args, {"": converted}
    if fmt == "mmagic-pconv":
        from .pconv import convert_mmagic

        (obj,) = objects.values()
        state = obj.get("state_dict", obj)
        args, converted = convert_mmagic(_tensors(state, "the checkpoint's 'state_dict'"))
        return "pconv_unet", args, {"": converted}
    if fmt == "mmagic-deepfill":
        from .deepfill_v2 import convert_mmagic

        (obj,) = objects.values()
        args, converted = convert_mmagic(_tensors(obj.get("state_dict", obj), "the checkpoint's 'state_dict'"))
        return "deepfill_v2", args, {"": converted}
    if fmt == "ctsdg":
        (obj,) = objects.values()
        state = _tensors(obj.get("generator", obj), "the checkpoint's 'generator' entry")
        return "ctsdg", {}, {"generator": {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}}
    if fmt == "deepfill-tf":
        from .deepfill_v2 import convert_tf

        (variables,) = objects.values()
        try:
            args, converted = convert_tf(variables)
        except KeyError as exc:
            raise InpaintBenchError(f"the TF checkpoint does not hold a DeepFill v2 inpaint_net ({exc})") from None
        return "deepfill_v2", args, {"": converted}
    raise InpaintBenchError(f"unknown released-weights format {fmt!r}; known: {', '.join(FORMATS)}")


def build_released(name: str, spec: dict, device: str = "cpu", image_size: int = 64):
    """Our model with the released weights of entry `name` loaded (eval mode)."""
    from . import registry
    from .base import BuildContext

    fmt = spec["weights"]["format"]
    paths = resolve(name, spec)
    if fmt in DDNM_FORMATS:  # one 0.1-0.5 G-parameter file: models/ddnm.py reads, converts and loads it once
        from .ddnm import build_released_ddnm

        if len(paths) != 1:
            raise InpaintBenchError(f"models.{name}: format {fmt} is one file; give weights.file as a string")
        return build_released_ddnm(name, spec, next(iter(paths.values())), image_size).to(device).eval()
    if fmt == "deepfill-tf":  # a TF checkpoint: .index (+ .data beside it or as role `data`)
        from .tf_checkpoint import read_checkpoint

        objects = {"variables": read_checkpoint(paths.get("index", paths.get("file")), paths.get("data"))}
    else:
        objects = {role: safe_load(p) for role, p in paths.items()}
    arch, args, states = convert(fmt, objects)
    if spec["arch"] != arch:
        raise InpaintBenchError(f"models.{name}: format {fmt} holds a {arch} model, but arch is {spec['arch']!r}")
    args = {**args, **(spec.get("args") or {})}
    ctx = BuildContext(image_size=image_size, perceptual={"backbone": "none"}, device=device)
    model = registry.build(arch, args, {}, ctx)
    for sub, state in states.items():
        module = model.get_submodule(sub) if sub else model
        try:
            missing, unexpected = module.load_state_dict(state, strict=False)
        except RuntimeError as exc:  # shape mismatches raise even with strict=False
            detail = "; ".join(line.strip() for line in str(exc).splitlines()[1:4])
            raise InpaintBenchError(f"models.{name}: the released weights do not fit {arch}{' ' + sub if sub else ''} "
                                    f"({detail}); check weights.format and args") from None
        missing = [k for k in missing if not k.startswith("discriminator.")]  # only the generator is released
        if missing or unexpected:
            raise InpaintBenchError(
                f"models.{name}: the released weights do not fit {arch}{' ' + sub if sub else ''} "
                f"(missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}); check weights.format and args")
    return model.to(device).eval()
