"""SAHN's deformable conv keeps only its inputs for the backward pass (checkpointing), with the
same outputs and gradients as the plain grid_sample path."""
import torch

from inpaintbench.models.layers.sahn_deform import DeformableConv2d


def _layer(checkpoint: bool) -> DeformableConv2d:
    torch.manual_seed(0)
    layer = DeformableConv2d(36, 8, backend="grid_sample", checkpoint=checkpoint)
    with torch.no_grad():  # non-zero offsets, so the sampling is really deformable
        layer.offset.weight.normal_(0, 0.3)
        layer.offset.bias.normal_(0, 0.5)
    return layer


def _run(layer, x):
    saved = []

    def pack(t):
        saved.append(t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = layer(x)
    out.square().sum().backward()
    return out.detach(), x.grad.clone(), [p.grad.clone() for p in layer.parameters()], sum(saved)


def test_checkpointed_deform_conv_matches_and_saves_less():
    x0 = torch.rand(2, 36, 20, 24)  # SAHN's widths: channels well above the 18 offset channels
    x1, x2 = x0.clone().requires_grad_(), x0.clone().requires_grad_()
    out_a, gx_a, gp_a, saved_a = _run(_layer(False), x1)
    out_b, gx_b, gp_b, saved_b = _run(_layer(True), x2)
    assert torch.equal(out_a, out_b)
    assert torch.allclose(gx_a, gx_b, atol=1e-6) and all(torch.allclose(a, b, atol=1e-5) for a, b in zip(gp_a, gp_b))
    input_bytes = x0.numel() * x0.element_size()
    assert saved_a > 9 * input_bytes  # the plain path keeps the 9x sampled tensor (and more)
    assert saved_b < 3 * input_bytes, (saved_b, input_bytes)  # checkpointed: the inputs and the offsets


def test_no_grad_path_is_the_plain_function():
    layer = _layer(True)
    x = torch.rand(1, 36, 16, 16)
    with torch.no_grad():
        a = layer(x)
    layer.checkpoint = False
    with torch.no_grad():
        b = layer(x)
    assert torch.equal(a, b)


def test_auto_checkpoints_only_large_sampled_tensors(monkeypatch):
    """checkpoint="auto" (the default): the built-in 64 px layers keep their small sampled tensor
    (no second grid_sample per step), a layer whose sampled tensor reaches the threshold recomputes
    it; outputs and gradients are those of the plain path either way."""
    import inpaintbench.models.layers.sahn_deform as sd

    assert DeformableConv2d(4, 4).checkpoint == "auto"
    x0 = torch.rand(2, 36, 20, 24)
    ref = _run(_layer(False), x0.clone().requires_grad_())
    small = _run(_layer("auto"), x0.clone().requires_grad_())
    input_bytes = x0.numel() * x0.element_size()
    assert small[3] > 9 * input_bytes  # 2*36*9*20*24 elements < CHECKPOINT_MIN_ELEMENTS: not checkpointed
    monkeypatch.setattr(sd, "CHECKPOINT_MIN_ELEMENTS", 2 * 36 * 9 * 20 * 24)
    large = _run(_layer("auto"), x0.clone().requires_grad_())
    assert large[3] < 3 * input_bytes  # at the threshold: checkpointed
    for got in (small, large):
        assert torch.equal(got[0], ref[0]) and torch.allclose(got[1], ref[1], atol=1e-6)
        assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(got[2], ref[2]))
    try:
        DeformableConv2d(4, 4, checkpoint="yes")
    except ValueError as exc:
        assert "checkpoint" in str(exc)
    else:
        raise AssertionError("an unknown checkpoint setting must be an error")
