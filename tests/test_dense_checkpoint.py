"""Activation checkpointing of the residual dense blocks (issue 11 item 5): SPL/SPN's trunk
(layers/semantic_prior.py) and RDN (models/rdn.py) recompute each block in the backward pass
with `checkpoint: true|auto` and change no math; CPU, fast, seeded."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from inpaintbench.errors import InpaintBenchError
from inpaintbench.models import rdn, spl, spn
from inpaintbench.models.layers import semantic_prior
from inpaintbench.models.layers.semantic_prior import DENSE_CHECKPOINT_MIN_ELEMENTS, dense_checkpoint

TEACHER = [8, 16, 32]


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _batch(n, size, seed=0):
    gen = torch.Generator().manual_seed(seed)
    image = torch.rand(n, 3, size, size, generator=gen)
    mask = torch.zeros(n, 1, size, size)
    mask[..., size // 4: size // 2 + size // 8, size // 8: size // 2] = 1.0
    return image, mask


def _make(arch, checkpoint):
    torch.manual_seed(0)
    if arch == "rdn":
        return rdn.RDN(blocks=3, layers=3, growth=8, g0=8, checkpoint=checkpoint)
    mod = spl if arch == "spl" else spn
    return mod.build_generator({"rdb_count": 3, "rdb_layers": 3, "checkpoint": checkpoint}, TEACHER)


def _dense_blocks(model):
    return [m for m in model.modules() if isinstance(m, (semantic_prior.ResidualDenseBlock, rdn.RDB))]


def _loss(model, arch, image, mask):
    out = model(image, mask)
    if arch == "rdn":
        return out.square().mean() + out.mean()
    pred, priors = out
    return pred.square().mean() + sum(p.square().mean() for p in priors)


def _saved_bytes(fn):
    total = [0]

    def pack(t):
        total[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = fn()
    return loss, total[0]


@pytest.mark.parametrize("arch", ["spl", "spn", "rdn"])
def test_outputs_and_gradients_equal_with_and_without_checkpointing(arch):
    image, mask = _batch(2, 32)
    plain, ckpt = _make(arch, False), _make(arch, True)
    assert _dense_blocks(ckpt) and all(b.concat_channels > 0 for b in _dense_blocks(ckpt))
    for a, b in zip(plain.state_dict().values(), ckpt.state_dict().values()):
        assert torch.equal(a, b)
    image_p, image_c = image.clone().requires_grad_(), image.clone().requires_grad_()
    loss_p, bytes_p = _saved_bytes(lambda: _loss(plain, arch, image_p, mask))
    loss_c, bytes_c = _saved_bytes(lambda: _loss(ckpt, arch, image_c, mask))
    loss_p.backward()
    loss_c.backward()
    assert torch.allclose(loss_p, loss_c, rtol=0, atol=1e-6)
    assert torch.allclose(image_p.grad, image_c.grad, rtol=0, atol=1e-6)
    for (name, p), q in zip(plain.named_parameters(), ckpt.parameters()):
        assert p.grad is not None and q.grad is not None, name
        assert torch.allclose(p.grad, q.grad, rtol=1e-5, atol=1e-6), name
    # checkpointing really happened: the dense blocks' concatenations were not kept
    assert bytes_c < bytes_p
    # eval / no_grad: the same forward, nothing recomputed
    with torch.no_grad():
        out_p, out_c = plain(image, mask), ckpt(image, mask)
    out_p, out_c = (out_p, out_c) if arch == "rdn" else (out_p[0], out_c[0])
    assert torch.equal(out_p, out_c)


@pytest.mark.parametrize("arch", ["spl", "spn", "rdn"])
def test_checkpointed_blocks_hold_no_batch_norm_or_dropout(arch):
    """Recomputing a block would update batch-norm running statistics twice (momentum applied
    twice) or draw new dropout masks (torch would restore the RNG, but not the statistics): the
    checkpointed segments are conv + ReLU only."""
    for block in _dense_blocks(_make(arch, True)):
        for m in block.modules():
            assert not isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd,
                                      nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)), m
        assert not any(True for _ in block.buffers())


def test_auto_checkpoints_only_large_blocks(monkeypatch):
    calls = []
    real = torch.utils.checkpoint.checkpoint

    def counting(*a, **k):
        calls.append(k.get("use_reentrant"))
        return real(*a, **k)

    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", counting)
    block = nn.Conv2d(1, 1, 1)
    x = torch.rand(1, 1, 8, 8, requires_grad=True)
    small = DENSE_CHECKPOINT_MIN_ELEMENTS // 64 - 1
    dense_checkpoint(block, x, "auto", small)
    dense_checkpoint(block, x, False, 10 ** 9)
    with torch.no_grad():
        dense_checkpoint(block, x, True, 10 ** 9)
    assert calls == []
    dense_checkpoint(block, x, "auto", small + 1)
    dense_checkpoint(block, x, True, 1)
    assert calls == [False, False]
    # the rule per image: the published trunks are checkpointed, the built-in ones are not
    per_image = lambda channels, side: channels * side * side  # noqa: E731
    a = spl.PAPER_ARGS
    assert per_image(a["sem_width"] + a["rdb_growth"] * a["rdb_layers"], 128 // 4) >= DENSE_CHECKPOINT_MIN_ELEMENTS
    assert per_image(64 + 64 * 8, 64) >= DENSE_CHECKPOINT_MIN_ELEMENTS                 # rdn-pub, even at 64 px
    assert per_image(8 + 8 * 2, 64) < DENSE_CHECKPOINT_MIN_ELEMENTS                    # built-in rdn, 64 px
    d = spl.DEFAULT_ARGS
    assert per_image(d["sem_width"] + d["rdb_growth"] * d["rdb_layers"], 64 // 4) < DENSE_CHECKPOINT_MIN_ELEMENTS


def test_checkpoint_arg_is_known_and_checked():
    assert spl.DEFAULT_ARGS["checkpoint"] == "auto" and spn.DEFAULT_ARGS["checkpoint"] == "auto"
    assert spl.PAPER_ARGS["checkpoint"] == "auto"
    assert rdn.RDN(1, 1, 2, 2).checkpoint == "auto"
    for bad in ("yes", 1, None):
        with pytest.raises(InpaintBenchError, match="checkpoint"):
            rdn.RDN(1, 1, 2, 2, checkpoint=bad)
        with pytest.raises(InpaintBenchError, match="checkpoint"):
            spl.build_generator({"checkpoint": bad}, TEACHER)
