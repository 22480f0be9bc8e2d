"""fetch -> prepare -> mask import for every real source, end to end through the functions the
CLI calls, on tiny archives with the real layouts served from 127.0.0.1."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inpaintbench.data.fetch import ENV_ACCEPT, ENV_MIRROR, fetch_source
from inpaintbench.data.prepare import Item, prepare_real, select_splits
from inpaintbench.errors import InpaintBenchError
from inpaintbench.masks.nvidia import import_maskset

from fakedata import (  # noqa: F401  (fake_server is a fixture)
    CELEBA_ATTRS, DTD_CLASSES, celeba_files, dtd_files, fake_server, nvidia_files, paris_folder,
    places_files, qdimd_files, urban100_files,
)

SIZE = 16
MANIFEST = ["id", "path", "split", "source", "sha256", "labels"]
MASK_MANIFEST = ["id", "path", "hole_ratio", "source"]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    monkeypatch.delenv(ENV_ACCEPT, raising=False)
    monkeypatch.delenv(ENV_MIRROR, raising=False)


def read(path: Path) -> tuple[list[str], list[dict]]:
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        return reader.fieldnames, list(reader)


def check_images(out: Path, rows: list[dict]) -> None:
    for r in rows:
        with Image.open(out / r["path"]) as im:
            assert im.mode == "RGB" and im.size == (SIZE, SIZE)


# ------------------------------------------------------------------------------------ CelebA
def test_celeba_official_split_labels_and_corrupt_image(fake_server, tmp_path, capsys):
    files = celeba_files(12, corrupt=(3,))
    raw = tmp_path / "raw"
    fetch_source("celeba", raw, accept_terms=["celeba"], urls_override=fake_server.publish("celeba", files),
                 progress=False)
    out = tmp_path / "prep"
    manifest = prepare_real("celeba", {"source": "celeba", "size": SIZE, "split": "official"}, raw, out, seed=1, workers=1)
    fields, rows = read(manifest)
    assert fields == MANIFEST
    assert len(rows) == 11  # 12 minus the corrupt one
    _, skipped = read(out / "skipped.csv")
    assert [s["path"] for s in skipped] == ["celeba/img_align_celeba/000003.jpg"]
    assert "SKIPPED 1" in capsys.readouterr().err
    # the official partition: first 80% train (ids 1..10 minus the corrupt one), then val, test
    part = {ln.split()[0][:-4]: ln.split()[1] for ln in files["list_eval_partition.txt"].decode().splitlines()}
    for r in rows:
        assert r["split"] == {"0": "train", "1": "val", "2": "test"}[part[r["id"]]]
        assert r["source"] == f"celeba/img_align_celeba/{r['id']}.jpg"
    assert (out / "labels.txt").read_text().split() == CELEBA_ATTRS
    # labels are exactly the attributes marked 1 in list_attr_celeba.txt
    attr_rows = {ln.split()[0][:-4]: ln.split()[1:] for ln in files["list_attr_celeba.txt"].decode().splitlines()[2:]}
    for r in rows:
        want = [a for a, v in zip(CELEBA_ATTRS, attr_rows[r["id"]]) if v == "1"]
        assert r["labels"].split(";") == want
    check_images(out, rows)
    import hashlib
    assert all(hashlib.sha256((out / r["path"]).read_bytes()).hexdigest() == r["sha256"] for r in rows)


def test_celeba_ccsa_subset_is_deterministic_and_parallel_matches_serial(fake_server, tmp_path):
    raw = tmp_path / "raw"
    fetch_source("celeba", raw, accept_terms=True,
                 urls_override=fake_server.publish("celeba", celeba_files(20)), progress=False)
    spec = {"source": "celeba", "size": SIZE, "subset": {"n": 10, "holdout": 0.2}}
    _, a = read(prepare_real("celeba-ccsa", spec, raw, tmp_path / "a", seed=5, workers=2))
    _, b = read(prepare_real("celeba-ccsa", spec, raw, tmp_path / "b", seed=5, workers=1))
    _, c = read(prepare_real("celeba-ccsa", spec, raw, tmp_path / "c", seed=6, workers=1))
    assert a == b  # same seed, same files, whatever the worker count
    # no val in the subset: one image from outside the subset (10 % of 8 training images) is the
    # validation image: never a test image, and the training set keeps its size
    assert len(a) == 11 and sum(r["split"] == "test" for r in a) == 2 and sum(r["split"] == "train" for r in a) == 8
    assert sum(r["split"] == "val" for r in a) == 1
    assert {r["id"] for r in a} != {r["id"] for r in c} or [r["split"] for r in a] != [r["split"] for r in c]
    with pytest.raises(InpaintBenchError, match="subset.n"):
        prepare_real("celeba-ccsa", {**spec, "subset": {"n": 999, "holdout": 0.1}}, raw, tmp_path / "d", seed=5, workers=1)


def test_subset_logic_at_scale_30000_with_10_percent_holdout():
    items = [Item(id=f"{i:06d}", path=Path("x"), source="x", split="train") for i in range(1, 40001)]
    sel = select_splits(items, {"subset": {"n": 30000, "holdout": 0.1}}, seed=0, dataset="celeba-ccsa")
    splits = [it.split for it in sel]
    # the paper's 27,000 / 3,000, plus 200 validation images from outside the 30,000 (none from test)
    assert splits.count("test") == 3000 and splits.count("train") == 27000 and splits.count("val") == 200
    assert len(sel) == 30200
    again = select_splits([Item(id=f"{i:06d}", path=Path("x"), source="x", split="train") for i in range(1, 40001)],
                          {"subset": {"n": 30000, "holdout": 0.1}}, seed=0, dataset="celeba-ccsa")
    assert [(it.id, it.split) for it in sel] == [(it.id, it.split) for it in again]
    capped = select_splits([Item(id=f"{i:03d}", path=Path("x"), source="x", split="test") for i in range(100)],
                           {"split": "official", "max_per_split": {"test": 12}}, seed=0, dataset="d")
    assert len(capped) == 12


def test_celeba_prepare_before_fetch_says_what_to_run(tmp_path):
    with pytest.raises(InpaintBenchError, match="inpaintbench fetch celeba"):
        prepare_real("celeba", {"source": "celeba", "size": SIZE}, tmp_path, tmp_path / "o", seed=0, workers=1)


# ---------------------------------------------------------------------------------- Places365
def test_places365_categories_official_and_per_category_holdout(fake_server, tmp_path):
    raw = tmp_path / "raw"
    fetch_source("places365", raw, accept_terms=True,
                 urls_override=fake_server.publish("places365", places_files(train_per_cat=4, val_per_cat=2)),
                 progress=False)
    assert (raw / "places365" / "data_256" / "a" / "airfield" / "00000001.jpg").is_file()
    spec = {"source": "places365", "size": SIZE, "categories": ["airfield", "/a/apartment_building/outdoor"]}
    out = tmp_path / "p"
    _, rows = read(prepare_real("places2", spec, raw, out, seed=0, workers=1))
    assert len(rows) == 2 * (4 + 2)
    assert {r["labels"] for r in rows} == {"airfield", "apartment_building/outdoor"}
    assert sum(r["split"] == "test" for r in rows) == 4  # the official val images
    assert (out / "labels.txt").read_text().split() == ["airfield", "apartment_building/outdoor"]
    check_images(out, rows)
    # SAHN: k images per category held out at random, categories drawn at random
    spec2 = {"source": "places365", "size": SIZE, "categories": 3, "test_per_category": 2}
    _, rows2 = read(prepare_real("places2-sahn", spec2, raw, tmp_path / "p2", seed=0, workers=1))
    cats = {r["labels"] for r in rows2}
    assert len(cats) == 3 and len(rows2) == 3 * 6
    for c in cats:
        assert sum(r["split"] == "test" and r["labels"] == c for r in rows2) == 2
    with pytest.raises(InpaintBenchError, match="not a Places365 category"):
        prepare_real("x", {**spec, "categories": ["moon_base"]}, raw, tmp_path / "p3", seed=0, workers=1)


def test_places365_fetch_extracts_only_requested_categories(fake_server, tmp_path):
    raw = tmp_path / "raw"
    override = fake_server.publish("places365", places_files(train_per_cat=2, val_per_cat=1))
    fetch_source("places365", raw, accept_terms=True, urls_override=override, progress=False,
                 categories=["/a/airfield"])
    data = raw / "places365" / "data_256"
    assert sorted(p.relative_to(data).as_posix() for p in data.rglob("*.jpg")) == [
        "a/airfield/00000001.jpg", "a/airfield/00000002.jpg"]
    spec = {"source": "places365", "size": SIZE, "categories": ["airfield", "bedroom"]}
    with pytest.raises(InpaintBenchError, match="--categories airfield,bedroom"):
        prepare_real("p", spec, raw, tmp_path / "o", seed=0, workers=1)
    n = len(fake_server.requests)
    fetch_source("places365", raw, accept_terms=True, urls_override=override, progress=False,
                 categories=["airfield", "bedroom"])
    assert len(fake_server.requests) == n  # re-extracted from the kept archives
    _, rows = read(prepare_real("p", spec, raw, tmp_path / "o", seed=0, workers=1))
    assert len(rows) == 2 * (2 + 1)
    # a subset of what was extracted needs no new fetch
    fetch_source("places365", raw, accept_terms=False, urls_override=override, progress=False, categories=["bedroom"])


def test_places365_val_only_source(fake_server, tmp_path):
    raw = tmp_path / "raw"
    files = places_files(train_per_cat=1, val_per_cat=3)
    files.pop("train_256_places365standard.tar")
    fetch_source("places365-val", raw, accept_terms=True, urls_override=fake_server.publish("places365-val", files),
                 progress=False)
    _, rows = read(prepare_real("pv", {"source": "places365-val", "size": SIZE, "test_per_category": 1}, raw,
                                tmp_path / "o", seed=0, workers=1))
    assert len(rows) == 12 and sum(r["split"] == "test" for r in rows) == 4


# ---------------------------------------------------------------------------- DTD, Urban100
def test_dtd_fold_split_from_uncompressed_tar_gz(fake_server, tmp_path):
    raw = tmp_path / "raw"
    fetch_source("dtd", raw, accept_terms=True, urls_override=fake_server.publish("dtd", dtd_files(3)), progress=False)
    out = tmp_path / "d"
    _, rows = read(prepare_real("dtd", {"source": "dtd", "size": SIZE, "fold": 2}, raw, out, seed=0, workers=1))
    assert len(rows) == 9 and {r["split"] for r in rows} == {"train", "val", "test"}
    train2 = (raw / "dtd" / "dtd" / "labels" / "train2.txt").read_text().split()
    assert sorted(r["source"].split("dtd/images/")[1] for r in rows if r["split"] == "train") == sorted(train2)
    assert all(r["labels"] == r["id"].rsplit("_", 1)[0] for r in rows)
    assert (out / "labels.txt").read_text().split() == DTD_CLASSES
    check_images(out, rows)


def test_urban100_all_test_no_labels(fake_server, tmp_path):
    raw = tmp_path / "raw"
    url = fake_server.add("u/Urban100_HR.tar.gz", urban100_files(4)["Urban100_HR.tar.gz"])
    fetch_source("urban100", raw, accept_terms=False, urls_override={"Urban100_HR.tar.gz": url}, progress=False)
    out = tmp_path / "u"
    _, rows = read(prepare_real("urban100", {"source": "urban100", "size": SIZE}, raw, out, seed=0, workers=1))
    assert [r["id"] for r in rows] == ["img_001", "img_002", "img_003", "img_004"]
    assert {r["split"] for r in rows} == {"test"} and {r["labels"] for r in rows} == {""}
    assert (out / "labels.txt").read_text() == ""
    check_images(out, rows)
    # random crops are seeded: same seed -> same pixels
    spec = {"source": "urban100", "size": SIZE, "crop": "random"}
    _, r1 = read(prepare_real("u", spec, raw, tmp_path / "r1", seed=3, workers=1))
    _, r2 = read(prepare_real("u", spec, raw, tmp_path / "r2", seed=3, workers=1))
    assert [r["sha256"] for r in r1] == [r["sha256"] for r in r2]


# ----------------------------------------------------------------------------------- Paris
def test_paris_user_folder_and_empty_folder_error(tmp_path):
    folder = tmp_path / "user" / "paris_streetview"
    folder.mkdir(parents=True)
    spec = {"source": "paris-streetview", "size": SIZE, "folder": str(folder)}
    with pytest.raises(InpaintBenchError) as err:
        prepare_real("paris", spec, tmp_path / "raw", tmp_path / "o", seed=0, workers=1)
    msg = str(err.value)
    assert str(folder) in msg and "paris_train_original" in msg and "paris_eval_gt" in msg and "e-mail" in msg
    with pytest.raises(InpaintBenchError, match="no public download"):
        fetch_source("paris-streetview", tmp_path / "raw", accept_terms=False, folder=folder)
    paris_folder(folder, n_train=3, n_test=2)
    fetch_source("paris-streetview", tmp_path / "raw", accept_terms=False, folder=folder)
    assert (tmp_path / "raw" / "paris-streetview" / ".complete").exists()
    out = tmp_path / "o"
    _, rows = read(prepare_real("paris", spec, tmp_path / "raw", out, seed=0, workers=1))
    # Paris has no validation split: one of the 3 training images becomes val (val_from_train default)
    assert sum(r["split"] == "train" for r in rows) == 2 and sum(r["split"] == "test" for r in rows) == 2
    assert [r["source"].split("/")[1] for r in rows if r["split"] == "val"] == ["paris_train_original"]
    assert all(r["source"].startswith("paris_streetview/paris_") for r in rows)
    check_images(out, rows)


# ----------------------------------------------------------------------------------- masks
def _mask(out: Path, row: dict) -> np.ndarray:
    with Image.open(out / row["path"]) as im:
        assert im.mode == "L" and im.size == (SIZE, SIZE)
        arr = np.asarray(im)
    assert set(np.unique(arr)) <= {0, 255}
    return arr > 127


def test_nvidia_masks_import_wrong_size_resized_and_corrupt_skipped(fake_server, tmp_path, capsys):
    raw = tmp_path / "raw"
    url = fake_server.add("nv/test_mask.zip", nvidia_files(5, size=32, odd_size=20, corrupt=(4,))["test_mask.zip"])
    with pytest.raises(InpaintBenchError, match="CC BY-NC-SA"):
        fetch_source("nvidia-irregular-test", raw, accept_terms=False, urls_override={"test_mask.zip": url}, progress=False)
    fetch_source("nvidia-irregular-test", raw, accept_terms=["nvidia-irregular-test"],
                 urls_override={"test_mask.zip": url}, progress=False)
    out = tmp_path / "m"
    fields, rows = read(import_maskset("nvidia", {"source": "nvidia-irregular-test"}, raw, out, size=SIZE, workers=1))
    assert fields == MASK_MANIFEST
    assert [r["id"] for r in rows] == ["00000", "00001", "00002", "00003"]
    _, skipped = read(out / "skipped.csv")
    assert [s["path"] for s in skipped] == ["nvidia-irregular-test/mask/testing_mask_dataset/00004.png"]
    assert "SKIPPED 1 unreadable mask" in capsys.readouterr().err
    for r in rows:
        hole = _mask(out, r)
        assert float(r["hole_ratio"]) == pytest.approx(hole.mean(), abs=1e-6)
    # mask i covers the top (i+1)/8 of its rows (white = hole in this set)
    assert float(rows[3]["hole_ratio"]) == pytest.approx(0.5, abs=1e-6)
    # mask 0 was 20x20 with round(20/8)=2 hole rows (ratio 0.10); nearest resize to 16 keeps
    # source rows 0,1 (src row = floor((y+0.5)*20/16)) -> 2/16 = 0.125: recomputed, not copied
    assert float(rows[0]["hole_ratio"]) == pytest.approx(2 / 16, abs=1e-6)
    assert rows[0]["source"] == "nvidia-irregular-test/mask/testing_mask_dataset/00000.png"


def test_qdimd_black_hole_polarity_and_split(fake_server, tmp_path):
    raw = tmp_path / "raw"
    url = fake_server.add("q/qd_imd.tar.gz", qdimd_files(n_train=2, n_test=3, size=32)["qd_imd.tar.gz"])
    fetch_source("qd-imd", raw, accept_terms=False, urls_override={"qd_imd.tar.gz": url}, progress=False)
    out = tmp_path / "q"
    _, rows = read(import_maskset("qd-test", {"source": "qd-imd", "split": "test"}, raw, out, size=SIZE, workers=2))
    assert [r["id"] for r in rows] == ["00000_test", "00001_test", "00002_test"]
    # hole = black in the files: mask i has its top (i+1)/4 black -> ratio (i+1)/4 after import
    assert [float(r["hole_ratio"]) for r in rows] == pytest.approx([0.25, 0.5, 0.75])
    top = _mask(out, rows[0])
    assert top[0].all() and not top[-1].any()  # the hole (top rows) is white in the output
    _, train = read(import_maskset("qd-train", {"source": "qd-imd", "split": "train"}, raw, tmp_path / "qt", size=SIZE, workers=1))
    assert len(train) == 2
    with pytest.raises(InpaintBenchError, match="not 'val'"):
        import_maskset("x", {"source": "qd-imd", "split": "val"}, raw, tmp_path / "x", size=SIZE)
