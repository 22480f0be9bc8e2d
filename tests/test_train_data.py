"""The input pipeline (train/data.py): the same batches as the original per-step sampler, with and
without worker processes; the uint8 store; training masks drawn from a mask set."""
import numpy as np
import pandas as pd
import pytest
import torch

from inpaintbench import paths
from inpaintbench.cli import main
from inpaintbench.config import derive_seed, load_params
from inpaintbench.errors import InpaintBenchError
from inpaintbench.evaluate import to_tensor
from inpaintbench.io import load_image, load_mask, read_csv, write_csv
from inpaintbench.masks.generate import training_mask
from inpaintbench.train import data
from inpaintbench.train.trainer import train_job

from conftest import tiny_params, write_params


def reference_batch(files, seed, step, batch_size, ratio_range):
    """The trainer's batch definition before the pipeline existed (its `sample_batch` on PNGs
    decoded with `load_image`), kept verbatim as the reference."""
    rng = np.random.default_rng(derive_seed(seed, "batch", step))
    idx = rng.choice(len(files), batch_size, replace=len(files) < batch_size)
    flips = rng.random(batch_size) < 0.5
    images = [load_image(files[int(i)]) for i in idx]
    imgs = [im[:, ::-1] if f else im for im, f in zip(images, flips)]
    size = images[0].shape[0]
    masks = [training_mask(size, rng, tuple(ratio_range)) for _ in range(batch_size)]
    return imgs, masks


@pytest.fixture
def photos(project):
    assert main(["prepare", "photos"]) == 0
    manifest = paths.prepared_manifest("photos")
    rows = sorted((r for r in read_csv(manifest) if r["split"] == "train"), key=lambda r: r["id"])
    return manifest, [manifest.parent / r["path"] for r in rows]


@pytest.mark.parametrize("workers,ring", [(0, None), (0, False), (2, True), (2, False)])
def test_pipeline_gives_the_reference_batches(photos, workers, ring):
    manifest, files = photos
    store = data.train_images(manifest, 32)
    assert store.dtype == np.uint8 and store.shape == (len(files), 32, 32, 3)
    batches = data.StepBatches(store, seed=123, batch_size=5, ratio_range=(0.1, 0.5))
    start, stop = 3, 9  # a resumed run starts mid-way: the steps, not the loader, fix the batch
    loader = data.make_loader(batches, start, stop, workers, pin_memory=False, ring=ring)
    seen = 0
    for step, (img_u8, mask_u8) in zip(range(start, stop), loader):
        image, mask = data.to_device(img_u8, mask_u8, "cpu")
        ref_imgs, ref_masks = reference_batch(files, 123, step, 5, (0.1, 0.5))
        ref_image, ref_mask = to_tensor(ref_imgs, "cpu"), to_tensor(ref_masks, "cpu")
        assert torch.equal(image, ref_image) and torch.equal(mask, ref_mask), step
        assert image.stride() == ref_image.stride() and mask.shape == ref_mask.shape
        seen += 1
    assert seen == stop - start
    # another step is another batch (the test above would pass for a constant batch otherwise)
    a, b = batches[3], batches[4]
    assert not torch.equal(a[0], b[0]) and not torch.equal(a[1], b[1])


def test_ring_wraps_and_keeps_the_last_two_batches(photos):
    """The ring's slots are reused many times over (6 slots, 40 steps, two workers racing): every
    batch is the in-process one, and the batch before the current one is still intact."""
    manifest, _ = photos
    batches = data.StepBatches(data.train_images(manifest, 32), seed=5, batch_size=3, ratio_range=(0.1, 0.5))
    loader = data.make_loader(batches, 10, 50, 2, pin_memory=False, prefetch_factor=2)
    assert loader.ring is not None and loader.ring.slots == 6
    previous, seen = None, 0
    for step, (img, msk) in zip(range(10, 50), loader):
        ref = batches[step]
        assert torch.equal(img, ref[0]) and torch.equal(msk, ref[1]), step
        if previous is not None:
            p_img, p_msk, p_step = previous
            p_ref = batches[p_step]
            assert torch.equal(p_img, p_ref[0]) and torch.equal(p_msk, p_ref[1]), p_step
        previous, seen = (img, msk, step), seen + 1
    assert seen == 40


def test_store_is_written_once_and_follows_the_manifest(photos):
    manifest, files = photos
    first = data.train_images(manifest, 32)
    path = first.filename
    mtime = paths.Path(path).stat().st_mtime_ns
    assert paths.Path(data.train_images(manifest, 32).filename).stat().st_mtime_ns == mtime  # reused
    assert not str(path).startswith(str(paths.prepared_dir("photos")))  # never inside a DVC output
    # a changed manifest (one train image dropped) gets its own store; the stale one is removed
    rows = read_csv(manifest)
    drop = min((r for r in rows if r["split"] == "train"), key=lambda r: r["id"])
    write_csv(manifest, [r for r in rows if r is not drop], list(rows[0].keys()))
    second = data.train_images(manifest, 32)
    assert len(second) == len(files) - 1 and second.filename != path and not paths.Path(path).exists()
    assert np.array_equal(np.asarray(second[0]), np.rint(load_image(files[1]) * 255).astype(np.uint8))


def test_training_masks_from_a_mask_set(project):
    p = tiny_params()
    p["masks"]["bank"] = {"source": "generated", "count": 24, "ratio_range": [0.05, 0.6]}
    p["training"].update(masks="bank", mask_ratio=[0.2, 0.45])
    write_params(project, p)
    assert main(["prepare", "photos"]) == 0
    with pytest.raises(InpaintBenchError, match="inpaintbench masks bank --size 32"):
        data.maskset_bank("bank", 32, (0.2, 0.45))
    assert main(["masks", "bank", "--size", "32"]) == 0
    rows = read_csv(paths.maskset_manifest("bank", 32))
    chosen = [load_mask(paths.maskset_dir("bank", 32) / r["path"]) for r in rows if 0.2 <= float(r["hole_ratio"]) <= 0.45]
    bank = data.maskset_bank("bank", 32, (0.2, 0.45))
    assert 0 < len(bank) == len(chosen) < len(rows)
    variants = [np.asarray(data._dihedral(m, k)) for m in chosen for k in range(8)]
    batches = data.StepBatches(data.train_images(paths.prepared_manifest("photos"), 32), 7, 6, (0.2, 0.45), bank)
    drawn = [batches[s][1].numpy() for s in range(5)]
    for masks in drawn:
        for m in masks:  # every training mask is one of the set's masks (in range), flipped/rotated
            assert any(np.array_equal(m, v) for v in variants)
            assert 0.2 <= m.mean() <= 0.45
    assert len({m.tobytes() for masks in drawn for m in masks}) > 10  # not one mask over and over
    # the trainer uses it end to end
    for argv in (["masks", "generated", "--size", "32"], ["pairs", "tiny", "photos", "--split", "val"]):
        assert main(argv) == 0
    params = load_params()
    final = train_job(params, "tiny", "photos", "pconv", track=False, progress=False)
    assert final.exists()
    hist = pd.read_csv(paths.run_dir("tiny", "photos", "pconv") / "history.csv")
    assert list(hist["step"]) == list(range(1, 7))


def test_default_workers(monkeypatch):
    monkeypatch.setenv("INPAINTBENCH_THREADS", "4")
    assert data.default_workers("auto", 1) == 3
    assert data.default_workers(2, 1) == 2
    monkeypatch.setenv("INPAINTBENCH_THREADS", "1")
    assert data.default_workers("auto", 1) == 0
    with pytest.raises(InpaintBenchError):
        data.default_workers(-1, 1)


@pytest.fixture
def tiny_run(project):
    for argv in (["prepare", "photos"], ["masks", "generated", "--size", "32"], ["pairs", "tiny", "photos", "--split", "val"]):
        assert main(argv) == 0
    return project


def test_channels_last_trains_on_cpu(tiny_run):
    p = load_params()
    p.raw["training"].update(channels_last=True, compile=False, num_workers=1)
    final = train_job(p, "tiny", "photos", "pconv", track=False, progress=False)
    hist = pd.read_csv(paths.run_dir("tiny", "photos", "pconv") / "history.csv")
    assert final.exists() and list(hist["step"]) == list(range(1, 7)) and np.isfinite(hist["loss"]).all()
    p.raw["training"]["channels_last"] = "sideways"
    with pytest.raises(InpaintBenchError, match="true, false or 'cuda'"):
        train_job(p, "tiny", "photos", "pconv", track=False, progress=False)


def test_divergence_is_caught_at_its_step(tiny_run, monkeypatch):
    from inpaintbench.train import trainer

    calls = []
    original = trainer.train_step

    def poisoned(*args, **kwargs):
        out, d = original(*args, **kwargs)
        calls.append(1)
        if len(calls) == 3:
            out.total = torch.tensor(float("nan"))
        return out, d

    monkeypatch.setattr(trainer, "train_step", poisoned)
    with pytest.raises(InpaintBenchError, match="diverged at step 2"):
        train_job(load_params(), "tiny", "photos", "pconv", track=False, progress=False)
