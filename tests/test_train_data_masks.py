"""The stroke masks are pinned: training masks (the batches of every seed and step, hence resume)
and mask-set masks (the evaluation pairs' masks) must stay the masks that the generator drew
before it was made faster (issue 16: one `random` call per stroke, one `draw_lines` call for
all segments, Pillow drawing into a numpy array, only the stroke's rows read back). The digests
below were computed with the earlier generator (masks/generate.py at commit a247600) by
`_digests`."""
import hashlib

import numpy as np
import pytest

from inpaintbench.config import derive_seed
from inpaintbench.errors import InpaintBenchError
from inpaintbench.masks import generate

PINNED = {
    "training-32": "b91f9eeb59f2a21b27aa6611f8b2d53671c44d81edc24ee938dd7e7f111fe93b",
    "training-64": "11942214e89e360efd5f1d0bc705cc49d195ba781b6c359e5968016b292b3cf8",
    "training-256": "7d427df8fb8cc93bca8fd89ca5a1a6cc82b6a63e20afa2c30fdab81970827043",
    "maskset-32": "2d363266ea5851fccee2c3c1070f3604eb2d250172154d6fca726b8bb1fdcb21",
    "maskset-64": "cae2c49387eecb0d58110eeac956b6b05527d10297eb95d391f18a9868b659bc",
    "maskset-256": "53af8c38d33d081cbe299ca974ce5549e12d1312e3070a3fb77ab53ccd481205",
    "edge": "a69be17056b0d97a6fae90d8fb60c81a7c06996e0186f621b79666e5377a7f72",
}


def _digests(gen) -> dict[str, str]:
    out = {}
    for size, steps in ((32, 40), (64, 40), (256, 8)):  # as StepBatches draws them: 8 masks per step rng
        h = hashlib.sha256()
        for step in range(steps):
            rng = np.random.default_rng(derive_seed(123, "batch", step))
            for _ in range(8):
                h.update(np.packbits(gen.training_mask(size, rng, (0.05, 0.6)) > 0.5).tobytes())
            h.update(rng.bytes(8))  # the generator's state afterwards: the same draws were made
        out[f"training-{size}"] = h.hexdigest()
    for size in (32, 64, 256):  # generate_maskset's seeds and targets, 40 masks
        h = hashlib.sha256()
        for i in range(40):
            rng = np.random.default_rng(derive_seed(0, "maskset", "generated", size, i))
            centre = 0.05 + (0.65 - 0.05) * (i + 0.5) / 40
            m = gen.stroke_mask(size, rng, (max(0.0, centre - 0.02), centre + 0.02))
            assert m.dtype == np.float32 and m.shape == (size, size)
            h.update(m.tobytes())
        out[f"maskset-{size}"] = h.hexdigest()
    h = hashlib.sha256()  # narrow and unreachable targets (best effort, undo), tiny sizes (width-1 lines)
    for size, target in ((16, (0.30, 0.301)), (24, (0.0, 0.02)), (48, (0.2, 0.3)), (20, (0.9, 0.92)), (64, (0.6, 0.61))):
        for s in range(12):
            h.update(gen.stroke_mask(size, np.random.default_rng(s), target).tobytes())
    out["edge"] = h.hexdigest()
    return out


def test_stroke_masks_are_the_pinned_masks():
    assert _digests(generate) == PINNED


def test_holes_equal_the_float_mask_and_reject_bad_targets():
    for s in range(5):
        holes = generate.training_holes(64, np.random.default_rng(s), (0.1, 0.5))
        assert holes.dtype == np.bool_
        assert np.array_equal(holes.astype(np.float32), generate.training_mask(64, np.random.default_rng(s), (0.1, 0.5)))
    with pytest.raises(InpaintBenchError, match="hole-ratio target"):
        generate.stroke_holes(32, np.random.default_rng(0), (0.5, 0.4))


def test_stroke_rows_hold_every_pixel_the_stroke_sets():
    """The rows read back after a stroke must contain all its pixels, else the running hole
    count would be wrong (and the masks would differ from a full recount)."""
    rng = np.random.default_rng(3)
    for size in (16, 32, 64, 256):
        for scale in (1.0, 0.6, 0.2, 0.05):
            for _ in range(40):
                canvas = generate._Canvas(size)
                width, points, (y0, y1) = generate._stroke_geometry(size, rng, scale)
                canvas.stroke(width, points)
                full = canvas.array > 127
                assert full.sum() == full[y0:y1].sum() > 0


def test_pillow_draws_into_the_canvas_array():
    """The fast path: Pillow's primitives write into the numpy array itself (else `_Canvas`
    copies the image back after each stroke: same masks, slower)."""
    assert generate._SHARED
    canvas = generate._Canvas(8)
    canvas.stroke(3, [(1.0, 1.0), (6.0, 6.0)])
    assert canvas.image is None and canvas.array.max() == 255 and set(np.unique(canvas.array)) == {0, 255}


@pytest.mark.parametrize("fallback", ["_SHARED", "_AFFINE"])
def test_the_fallbacks_draw_the_same_masks(monkeypatch, fallback):
    """Where Pillow cannot draw into the array (`_SHARED`) or numpy fuses its uniform draw
    (`_AFFINE`), the slower path draws the same masks."""
    monkeypatch.setattr(generate, fallback, False)
    if fallback == "_SHARED":
        assert generate._Canvas(8).image is not None
    assert _digests(generate)["maskset-32"] == PINNED["maskset-32"]
