"""Mask generation, hole ratio, bucketing and pairing determinism."""
import numpy as np
import pytest

from inpaintbench.config import Bucket
from inpaintbench.data.builtin import build_builtin
from inpaintbench.errors import InpaintBenchError
from inpaintbench.io import load_mask, read_csv, save_mask
from inpaintbench.masks.buckets import bucket_of, make_pairs
from inpaintbench.masks.generate import generate_maskset, hole_ratio, stroke_mask


def test_hole_ratio_is_computed_on_the_binarised_mask():
    m = np.zeros((10, 10), np.float32)
    m[:2] = 1.0
    m[2, :5] = 0.6  # above 0.5 counts as hole
    m[3, :5] = 0.4  # below does not
    assert hole_ratio(m) == pytest.approx(0.25)


@pytest.mark.parametrize("target", [(0.1, 0.15), (0.3, 0.34), (0.5, 0.55)])
def test_stroke_mask_hits_the_target_interval(target):
    rng = np.random.default_rng(1)
    for _ in range(10):
        r = hole_ratio(stroke_mask(64, rng, target))
        assert target[0] <= r <= target[1]


def test_stroke_masks_are_seeded():
    a = stroke_mask(48, np.random.default_rng(7), (0.2, 0.3))
    b = stroke_mask(48, np.random.default_rng(7), (0.2, 0.3))
    c = stroke_mask(48, np.random.default_rng(8), (0.2, 0.3))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_bucket_of():
    buckets = [Bucket.parse("(0.1, 0.3]"), Bucket.parse("(0.3, 0.5]")]
    assert bucket_of(0.3, buckets) == "(0.1, 0.3]"
    assert bucket_of(0.31, buckets) == "(0.3, 0.5]"
    assert bucket_of(0.05, buckets) is None


@pytest.fixture(scope="module")
def data_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    images = build_builtin("photos", {"images": "photos", "size": 32, "n_train": 4, "n_val": 2, "n_test": 9}, root / "photos", seed=0)
    masks = generate_maskset("generated", {"count": 40, "ratio_range": [0.05, 0.6]}, root / "masks", 32, seed=0)
    return root, images, masks


def test_maskset_manifest_ratios_match_files(data_dirs):
    root, _, masks = data_dirs
    for row in read_csv(masks)[:10]:
        m = load_mask(masks.parent / row["path"], 32)
        assert hole_ratio(m) == pytest.approx(float(row["hole_ratio"]), abs=1e-6)


def _pairs(data_dirs, out, seed=0, parts=("exp", "photos")):
    root, images, masks = data_dirs
    buckets = [Bucket.parse("(0.1, 0.3]"), Bucket.parse("(0.3, 0.5]")]
    return make_pairs(image_manifest=images, mask_manifest=masks, buckets=buckets, split="test", per_bucket=5,
                      seed_parts=parts, out_csv=out, seed=seed)


def test_pairs_are_deterministic_and_respect_buckets(data_dirs, tmp_path):
    a = read_csv(_pairs(data_dirs, tmp_path / "a.csv"))
    b = read_csv(_pairs(data_dirs, tmp_path / "b.csv"))
    c = read_csv(_pairs(data_dirs, tmp_path / "c.csv", seed=1))
    assert a == b
    assert a != c
    assert [r["bucket"] for r in a].count("(0.1, 0.3]") == 5
    for r in a:
        assert Bucket.parse(r["bucket"]).contains(float(r["hole_ratio"]))
        assert r["image_id"].startswith("test-")


def test_pairs_error_when_a_bucket_has_no_mask(data_dirs, tmp_path):
    root, images, masks = data_dirs
    with pytest.raises(InpaintBenchError, match=r"no mask with hole ratio in \(0.9, 0.95\]"):
        make_pairs(image_manifest=images, mask_manifest=masks, buckets=[Bucket.parse("(0.9, 0.95]")], split="test",
                   per_bucket=2, seed_parts=("e", "d"), out_csv=tmp_path / "x.csv", seed=0)
    assert not (tmp_path / "x.csv").exists()


def test_mask_of_the_wrong_size_is_a_clear_error(tmp_path):
    save_mask(tmp_path / "m.png", np.zeros((40, 40)))
    with pytest.raises(InpaintBenchError, match="is 40x40 but the experiment evaluates at 32x32"):
        load_mask(tmp_path / "m.png", 32)


def test_builtin_splits_do_not_share_crops(data_dirs):
    _, images, _ = data_dirs
    rows = read_csv(images)
    assert {r["split"] for r in rows} == {"train", "val", "test"}
    hashes = [r["sha256"] for r in rows]
    assert len(set(hashes)) == len(hashes)
    assert (images.parent / "labels.txt").read_text().split()
