"""Faults, class "security" (issue 15): no code runs from a checkpoint, no file escapes an archive,
no archive expands without bound. Each test fails on the code before the fix."""
from __future__ import annotations

import os
import pickle
from collections import OrderedDict

import numpy as np
import pytest
import torch

from inpaintbench.errors import InpaintBenchError
from inpaintbench.train import checkpoints


class _Evil:
    """A pickle payload: unpickling it calls a function (here: write a marker file)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (_write_marker, (self.marker,))


def _write_marker(path):
    with open(path, "w") as fh:
        fh.write("code from a checkpoint ran")
    return {}


@pytest.mark.parametrize("name", ["model.pt", "last.pt"])
def test_malicious_checkpoint_is_refused_without_running(tmp_path, name):
    marker = tmp_path / "marker"
    path = tmp_path / name
    torch.save({"model": {"w": torch.zeros(2)}, "state": _Evil(marker)}, path)
    with pytest.raises(InpaintBenchError, match="refused"):
        checkpoints.load(path)
    assert not marker.exists()


def test_plain_pickle_with_code_is_refused(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "model.pt"
    path.write_bytes(pickle.dumps({"x": _Evil(marker)}, protocol=2))
    with pytest.raises(InpaintBenchError):
        checkpoints.load(path)
    assert not marker.exists()


def test_saved_state_round_trips_under_weights_only(tmp_path):
    state = {"model": OrderedDict(w=torch.arange(3.0)), "opt": {"betas": (0.9, 0.999), "lr": 1e-3},
             "state": {"step": np.int64(7), "history": [{"loss": np.float32(0.5)}], "run": None},
             "context": {"artifacts": {"teacher": tmp_path / "teacher.pt"}}}
    path = tmp_path / "last.pt"
    checkpoints.save(path, state)
    back = torch.load(path, weights_only=True)  # what `load` does: no full pickle needed
    assert back["state"]["step"] == 7 and isinstance(back["state"]["step"], int)
    assert back["context"]["artifacts"]["teacher"] == str(tmp_path / "teacher.pt")
    assert torch.equal(checkpoints.load(path)["model"]["w"], torch.arange(3.0))


def test_saving_an_arbitrary_object_is_refused(tmp_path):
    with pytest.raises(TypeError):
        checkpoints.save(tmp_path / "x.pt", {"obj": object()})
    assert not (tmp_path / "x.pt").exists()


def test_empty_and_foreign_checkpoints_are_clear_errors(tmp_path):
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(InpaintBenchError, match="empty"):
        checkpoints.load(tmp_path / "empty.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(InpaintBenchError, match="not an inpaintbench checkpoint"):
        checkpoints.load(tmp_path / "list.pt")


# ---- archives: links -------------------------------------------------------------------------
import io
import tarfile
import zipfile

from inpaintbench.data.fetch import safe_extract

CHAIN = [("sub/a", ".."), ("sub/a/b", ".."), ("c", "b/..")]  # each link alone "stays inside"


def _tar_with_links(links, files=None, hard=False) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, target in links:
            info = tarfile.TarInfo(name)
            info.type = tarfile.LNKTYPE if hard else tarfile.SYMTYPE
            info.linkname = target
            tf.addfile(info)
        for name, data in (files or {}).items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _zip_with_links(links, files=None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, target in links:
            info = zipfile.ZipInfo(name)
            info.external_attr = 0o120777 << 16
            zf.writestr(info, target)
        for name, data in (files or {}).items():
            zf.writestr(name, data)
    return buf.getvalue()


def _nothing_outside(tmp_path, dest):
    allowed = {dest, tmp_path / "a.tar", tmp_path / "a.zip", tmp_path / "secret.txt"}
    for p in tmp_path.rglob("*"):
        assert p in allowed or dest in p.parents, f"{p} was written outside {dest}"
    assert not any(p.is_symlink() for p in dest.rglob("*"))


@pytest.mark.parametrize("kind", ["tar", "zip"])
def test_symlink_chain_is_refused(tmp_path, kind):
    (tmp_path / "secret.txt").write_text("outside the data folder")
    dest = tmp_path / "raw" / "src"
    archive = tmp_path / f"a.{kind}"
    make = _tar_with_links if kind == "tar" else _zip_with_links
    # the chain, then a file read/written through it: c -> b/.. resolves to sub/a/b/.. -> outside
    archive.write_bytes(make(CHAIN, {"ok.txt": b"fine"}))
    with pytest.raises(InpaintBenchError, match="symlink .*refused"):
        safe_extract(archive, dest)
    assert not (dest / "ok.txt").exists() and not (dest / "sub").exists() and not (dest / "c").exists()
    _nothing_outside(tmp_path, tmp_path / "raw")


def test_hard_link_is_refused(tmp_path):
    dest = tmp_path / "raw"
    archive = tmp_path / "a.tar"
    archive.write_bytes(_tar_with_links([("x", "secret.txt")], {"secret.txt": b"s"}, hard=True))
    with pytest.raises(InpaintBenchError, match="hard link"):
        safe_extract(archive, dest)
    assert not (dest / "x").exists()


# ---- archives: bounds --------------------------------------------------------------------------
def _zip_bomb(n: int = 1 << 20) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("zeros.bin", bytes(n))
    return buf.getvalue()


def test_zip_bomb_ratio_is_refused_before_writing(tmp_path):
    archive = tmp_path / "a.zip"
    archive.write_bytes(_zip_bomb())  # 1 MiB of zeros -> about 1 KB
    assert archive.stat().st_size < 20_000
    with pytest.raises(InpaintBenchError, match=r"zeros\.bin' expands \d+-fold"):
        safe_extract(archive, tmp_path / "raw")
    assert not list((tmp_path / "raw").rglob("zeros.bin"))


def test_total_bytes_are_capped(tmp_path):
    archive = tmp_path / "a.zip"
    archive.write_bytes(_zip_bomb())
    with pytest.raises(InpaintBenchError, match=r"declare 1048576 bytes, more than the bound of 100000"):
        safe_extract(archive, tmp_path / "raw", max_bytes=100_000, max_ratio=1e9)
    # a tar is bounded while it streams (its sizes are only known member by member)
    tar = tmp_path / "a.tar"
    tar.write_bytes(_tar_with_links([], {"a.bin": bytes(60_000), "b.bin": bytes(60_000)}))
    with pytest.raises(InpaintBenchError, match=r"expands to more than 100000 bytes"):
        safe_extract(tar, tmp_path / "raw", max_bytes=100_000)
    assert not (tmp_path / "raw" / "a.bin").exists()  # nothing of a refused archive lands
    # the same archive within generous bounds extracts
    safe_extract(archive, tmp_path / "ok", max_ratio=1e9)
    assert (tmp_path / "ok" / "zeros.bin").stat().st_size == 1 << 20


def test_gzip_tar_bomb_is_refused_while_streaming(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        info = tarfile.TarInfo("zeros.bin")
        info.size = 4 << 20
        tf.addfile(info, io.BytesIO(bytes(info.size)))
    archive = tmp_path / "a.tar"
    archive.write_bytes(buf.getvalue())  # 4 MiB -> a few KB
    with pytest.raises(InpaintBenchError, match="expands more than 100-fold"):
        safe_extract(archive, tmp_path / "raw")
    assert not (tmp_path / "raw" / "zeros.bin").exists()


def test_member_count_is_capped(tmp_path):
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for i in range(20):
            zf.writestr(f"f{i}.txt", b"x")
    with pytest.raises(InpaintBenchError, match="more than 10 members"):
        safe_extract(archive, tmp_path / "raw", max_members=10)
    assert safe_extract(archive, tmp_path / "ok", max_members=20)
