"""Download, verification, resume, HTML-instead-of-archive detection, safe extraction and terms
acceptance, through the functions the CLI calls, against a loopback server (127.0.0.1)."""
from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest

from inpaintbench.data.fetch import ENV_ACCEPT, ENV_MIRROR, download, fetch_source, safe_extract, verify_source
from inpaintbench.data.sources import SOURCES, get_source
from inpaintbench.errors import InpaintBenchError

from fakedata import (  # noqa: F401  (fake_server is a fixture)
    celeba_files, fake_server, md5, nvidia_files, sha256, tar_bytes, urban100_files, zip_bytes,
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    monkeypatch.delenv(ENV_ACCEPT, raising=False)
    monkeypatch.delenv(ENV_MIRROR, raising=False)


PAYLOAD = bytes(range(256)) * 200  # 51,200 bytes


# ---------------------------------------------------------------------------------- download
def test_download_streams_verifies_and_leaves_no_part(fake_server, tmp_path):
    url = fake_server.add("f.bin", PAYLOAD)
    dest = download(url, tmp_path / "f.bin", md5=md5(PAYLOAD), sha256=sha256(PAYLOAD),
                    size=len(PAYLOAD), progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert not (tmp_path / "f.bin.part").exists()
    # an existing, matching file is kept without a new request
    n = len(fake_server.requests)
    download(url, dest, md5=md5(PAYLOAD), progress=False)
    assert len(fake_server.requests) == n


def test_checksum_mismatch_names_file_and_expected_and_leaves_nothing(fake_server, tmp_path):
    url = fake_server.add("data.zip", PAYLOAD)
    wrong = "0" * 32
    with pytest.raises(InpaintBenchError) as err:
        download(url, tmp_path / "data.zip", md5=wrong, progress=False)
    msg = str(err.value)
    assert "data.zip" in msg and wrong in msg and md5(PAYLOAD) in msg
    assert not (tmp_path / "data.zip").exists()
    assert not (tmp_path / "data.zip.part").exists()


def test_size_mismatch_is_an_error(fake_server, tmp_path):
    url = fake_server.add("s.bin", PAYLOAD)
    with pytest.raises(InpaintBenchError, match="s.bin"):
        download(url, tmp_path / "s.bin", size=len(PAYLOAD) + 5, retries=0, progress=False)
    assert not (tmp_path / "s.bin").exists()


def test_truncated_download_then_resume_with_range(fake_server, tmp_path):
    url = fake_server.add("big.tar", PAYLOAD)
    fake_server.cut("big.tar", 10_000)
    dest = tmp_path / "big.tar"
    with pytest.raises(InpaintBenchError, match="resume"):
        download(url, dest, md5=md5(PAYLOAD), size=len(PAYLOAD), retries=0, progress=False)
    part = tmp_path / "big.tar.part"
    assert part.stat().st_size == 10_000 and not dest.exists()
    download(url, dest, md5=md5(PAYLOAD), size=len(PAYLOAD), retries=0, progress=False)
    assert dest.read_bytes() == PAYLOAD and not part.exists()
    assert fake_server.requests[-1] == ("big.tar", "bytes=10000-")


def test_broken_connection_is_retried_by_resuming(fake_server, tmp_path):
    url = fake_server.add("r.bin", PAYLOAD)
    fake_server.cut("r.bin", 3_000, times=2)
    dest = download(url, tmp_path / "r.bin", sha256=sha256(PAYLOAD), retries=3, backoff=0, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert [r for _, r in fake_server.requests] == [None, "bytes=3000-", "bytes=6000-"]


def test_server_ignoring_range_restarts_cleanly(fake_server, tmp_path):
    url = fake_server.add("n.bin", PAYLOAD)
    fake_server.ignore_range("n.bin")
    (tmp_path / "n.bin.part").write_bytes(PAYLOAD[:777])
    dest = download(url, tmp_path / "n.bin", md5=md5(PAYLOAD), retries=0, progress=False)
    assert dest.read_bytes() == PAYLOAD


def test_html_page_instead_of_zip_is_detected(fake_server, tmp_path):
    fake_server.serve_html("img_align_celeba.zip")
    with pytest.raises(InpaintBenchError) as err:
        download(fake_server.url("img_align_celeba.zip"), tmp_path / "img_align_celeba.zip",
                 md5="0" * 32, kind="zip", retries=0, progress=False)
    assert "HTML page" in str(err.value) and "Google Drive" in str(err.value)
    assert not (tmp_path / "img_align_celeba.zip").exists()
    assert not (tmp_path / "img_align_celeba.zip.part").exists()


# ------------------------------------------------------------------------------- extraction
def _assert_nothing_escaped(tmp_path: Path, dest: Path) -> None:
    assert not (tmp_path / "evil.txt").exists()
    assert not any(p.name.startswith(".extract-") for p in dest.iterdir())


def test_zip_path_traversal_is_refused(tmp_path):
    archive = tmp_path / "bad.zip"
    archive.write_bytes(zip_bytes({"ok/fine.txt": b"x", "../evil.txt": b"pwned"}))
    dest = tmp_path / "out"
    with pytest.raises(InpaintBenchError, match=r"leaves the target folder"):
        safe_extract(archive, dest)
    _assert_nothing_escaped(tmp_path, dest)
    assert not (dest / "ok").exists()  # refused before anything was written


def test_zip_absolute_path_and_symlink_escape_are_refused(tmp_path):
    archive = tmp_path / "abs.zip"
    archive.write_bytes(zip_bytes({"/etc/evil.txt": b"x"}))
    with pytest.raises(InpaintBenchError, match="leaves the target folder"):
        safe_extract(archive, tmp_path / "out")
    # a zip symlink entry (unix mode S_IFLNK) pointing outside
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        info = zipfile.ZipInfo("link")
        info.external_attr = (0o120777 << 16)
        zf.writestr(info, "../../outside")
    archive.write_bytes(buf.getvalue())
    with pytest.raises(InpaintBenchError, match="symlink"):
        safe_extract(archive, tmp_path / "out2")
    assert not (tmp_path / "out2" / "link").exists()


def test_tar_path_traversal_and_symlink_escape_are_refused(tmp_path):
    dest = tmp_path / "out"
    archive = tmp_path / "bad.tar"
    archive.write_bytes(tar_bytes({"data/a.txt": b"a", "../evil.txt": b"pwned"}))
    with pytest.raises(InpaintBenchError, match="leaves the target folder"):
        safe_extract(archive, dest)
    _assert_nothing_escaped(tmp_path, dest)
    assert not (dest / "data").exists()
    # symlink to a parent folder, then a file written through it
    archive.write_bytes(tar_bytes({}, links={"data/up": "../../"}))
    with pytest.raises(InpaintBenchError, match="symlink"):
        safe_extract(archive, dest)
    archive.write_bytes(tar_bytes({}, links={"abs": "/etc"}))
    with pytest.raises(InpaintBenchError, match="symlink"):
        safe_extract(archive, dest)
    assert not (dest / "abs").exists() and not (dest / "data").exists()
    # every link is refused, even one that stays inside (dataset archives hold none; a chain of
    # links can escape, tests/test_faults_security.py)
    archive.write_bytes(tar_bytes({"data/a.txt": b"a"}, links={"data/b.txt": "a.txt"}))
    with pytest.raises(InpaintBenchError, match="symlink"):
        safe_extract(archive, dest)
    assert not (dest / "data").exists()


def test_truncated_archive_error_names_file_and_checksum(tmp_path):
    good = tar_bytes({f"d/{i}.bin": bytes(5000) for i in range(5)}, compression="gz")
    archive = tmp_path / "cut.tar.gz"
    archive.write_bytes(good[: len(good) // 2])
    with pytest.raises(InpaintBenchError) as err:
        safe_extract(archive, tmp_path / "out", expected="md5 " + md5(good))
    assert "cut.tar.gz" in str(err.value) and md5(good) in str(err.value)
    assert not (tmp_path / "out" / "d").exists()


def test_uncompressed_tar_named_tar_gz_extracts(tmp_path):
    archive = tmp_path / "dtd-r1.0.1.tar.gz"
    archive.write_bytes(tar_bytes({"dtd/images/x.txt": b"1"}, compression=""))
    assert safe_extract(archive, tmp_path / "out") == ["dtd"]


# -------------------------------------------------------------------------------- sources
def test_registry_has_every_real_source_with_checksums_where_published():
    for name in ("celeba", "places365", "places365-val", "dtd", "urban100", "paris-streetview",
                 "nvidia-irregular-test", "qd-imd"):
        assert name in SOURCES
    celeba = get_source("celeba")
    assert celeba.file("img_align_celeba.zip").md5 == "00d2c5bc6d35e252742224ab0c1e8fcb"
    assert celeba.file("list_eval_partition.txt").md5 == "d32c9cbf5e040fd4025c592c306e6668"
    assert get_source("dtd").file("dtd-r1.0.1.tar.gz").md5 == "fff73e5086ae6bdbea199a49dfb8a4c1"
    assert get_source("places365").file("val_256.tar").md5 == "e27b17d8d44f4af9a78502beb927f808"
    assert celeba.terms and get_source("places365").terms and get_source("nvidia-irregular-test").terms
    with pytest.raises(InpaintBenchError, match="known sources"):
        get_source("imagenet")


def test_celeba_requires_accepting_terms_before_any_download(fake_server, tmp_path, monkeypatch, capsys):
    override = fake_server.publish("celeba", celeba_files(4))
    with pytest.raises(InpaintBenchError) as err:
        fetch_source("celeba", tmp_path, accept_terms=False, urls_override=override, progress=False)
    msg = str(err.value)
    assert "NON-COMMERCIAL" in msg and "--accept-terms" in msg and ENV_ACCEPT in msg
    assert fake_server.requests == [] and not (tmp_path / "celeba").exists()
    with pytest.raises(InpaintBenchError):  # accepting another source's terms is not enough
        fetch_source("celeba", tmp_path, accept_terms=["places365"], urls_override=override, progress=False)
    monkeypatch.setenv(ENV_ACCEPT, "dtd,celeba")
    root = fetch_source("celeba", tmp_path, accept_terms=False, urls_override=override, progress=False)
    assert "NON-COMMERCIAL" in capsys.readouterr().err  # the terms are shown
    assert json.loads((root / "TERMS_ACCEPTED.json").read_text())["accepted_via"] == "environment"


def test_fetch_writes_complete_last_and_is_idempotent(fake_server, tmp_path):
    files = celeba_files(4)
    override = fake_server.publish("celeba", files)
    root = fetch_source("celeba", tmp_path, accept_terms=True, urls_override=override, progress=False)
    info = json.loads((root / ".complete").read_text())
    by_name = {f["name"]: f for f in info["files"]}
    assert set(by_name) == set(files)
    assert by_name["img_align_celeba.zip"]["md5"] == md5(files["img_align_celeba.zip"])
    assert by_name["list_attr_celeba.txt"]["sha256"] == sha256(files["list_attr_celeba.txt"])
    assert (root / "img_align_celeba" / "000001.jpg").is_file()
    assert (root / "list_eval_partition.txt").read_bytes() == files["list_eval_partition.txt"]
    n = len(fake_server.requests)
    fetch_source("celeba", tmp_path, accept_terms=True, urls_override=override, progress=False)
    assert len(fake_server.requests) == n  # nothing fetched again


def test_fetch_source_drive_quota_page_is_reported(fake_server, tmp_path):
    override = fake_server.publish("celeba", celeba_files(4))
    fake_server.serve_html("celeba/img_align_celeba.zip")
    with pytest.raises(InpaintBenchError) as err:
        fetch_source("celeba", tmp_path, accept_terms=True, urls_override=override, progress=False)
    assert "img_align_celeba.zip" in str(err.value) and "HTML page" in str(err.value)
    assert not (tmp_path / "celeba" / "archives" / "img_align_celeba.zip").exists()
    assert not (tmp_path / "celeba" / ".complete").exists()


def test_quota_page_saved_by_hand_as_the_zip_is_reported(fake_server, tmp_path):
    override = fake_server.publish("celeba", celeba_files(4))
    placed = tmp_path / "celeba" / "archives" / "img_align_celeba.zip"
    placed.parent.mkdir(parents=True)
    placed.write_bytes(b"<!DOCTYPE html>\n<html><body>Quota exceeded</body></html>")
    with pytest.raises(InpaintBenchError, match="HTML page"):
        fetch_source("celeba", tmp_path, accept_terms=True, urls_override=override, progress=False)


def test_wrong_file_placed_by_hand_is_not_overwritten(fake_server, tmp_path):
    files = celeba_files(4)
    override = fake_server.publish("celeba", files)
    placed = tmp_path / "celeba" / "list_eval_partition.txt"
    placed.parent.mkdir(parents=True)
    placed.write_bytes(b"000001.jpg 0\n")
    with pytest.raises(InpaintBenchError) as err:
        fetch_source("celeba", tmp_path, accept_terms=True, urls_override=override, progress=False)
    msg = str(err.value)
    assert "already exists" in msg and md5(files["list_eval_partition.txt"]) in msg
    assert placed.read_bytes() == b"000001.jpg 0\n"


def test_fetch_source_checksum_mismatch_names_file_and_expected(fake_server, tmp_path):
    files = urban100_files(2)
    url = fake_server.add("u/Urban100_HR.tar.gz", files["Urban100_HR.tar.gz"])
    override = {"Urban100_HR.tar.gz": {"url": url, "sha256": "ab" * 32}}
    with pytest.raises(InpaintBenchError) as err:
        fetch_source("urban100", tmp_path, accept_terms=False, urls_override=override, progress=False)
    assert "Urban100_HR.tar.gz" in str(err.value) and "ab" * 32 in str(err.value)
    assert not (tmp_path / "urban100" / "archives" / "Urban100_HR.tar.gz").exists()


def test_unpublished_checksum_is_recorded_then_enforced(fake_server, tmp_path):
    files = nvidia_files(3)
    url = fake_server.add("nv/test_mask.zip", files["test_mask.zip"])
    root = fetch_source("nvidia-irregular-test", tmp_path, accept_terms=True,
                        urls_override={"test_mask.zip": url}, progress=False)
    record = root / "archives" / "test_mask.zip.sha256"
    assert record.read_text().split()[0] == sha256(files["test_mask.zip"])
    info = json.loads((root / ".complete").read_text())
    assert info["files"][0]["checksum"] == "recorded"
    verify_source("nvidia-irregular-test", tmp_path)
    # the server now sends another file: the recorded checksum rejects it
    (root / "archives" / "test_mask.zip").unlink()
    fake_server.add("nv/test_mask.zip", nvidia_files(2)["test_mask.zip"])
    with pytest.raises(InpaintBenchError) as err:
        fetch_source("nvidia-irregular-test", tmp_path, accept_terms=True,
                     urls_override={"test_mask.zip": url}, progress=False, force=True)
    assert "test_mask.zip" in str(err.value) and sha256(files["test_mask.zip"]) in str(err.value)


def test_corrupt_archive_without_published_checksum(fake_server, tmp_path):
    good = urban100_files(3)["Urban100_HR.tar.gz"]
    url = fake_server.add("u/Urban100_HR.tar.gz", good[: len(good) - 40])
    with pytest.raises(InpaintBenchError) as err:
        fetch_source("urban100", tmp_path, accept_terms=False,
                     urls_override={"Urban100_HR.tar.gz": url}, progress=False)
    assert "Urban100_HR.tar.gz" in str(err.value) and "corrupt or truncated" in str(err.value)
    # the recorded checksum of a corrupt first download is dropped with it
    assert not (tmp_path / "urban100" / "archives" / "Urban100_HR.tar.gz.sha256").exists()
    assert not (tmp_path / "urban100" / ".complete").exists()


def test_mirror_env_var_is_tried_first(fake_server, tmp_path, monkeypatch):
    data = urban100_files(2)["Urban100_HR.tar.gz"]
    fake_server.add("mirror/urban100/Urban100_HR.tar.gz", data)
    monkeypatch.setenv(ENV_MIRROR, fake_server.url("mirror"))
    root = fetch_source("urban100", tmp_path, accept_terms=False, progress=False)
    assert fake_server.requests[0][0] == "mirror/urban100/Urban100_HR.tar.gz"
    assert sorted(p.name for p in (root / "Urban100_HR").iterdir()) == ["img_001.png", "img_002.png"]
