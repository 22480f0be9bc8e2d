"""Download, verify and extract the real datasets and mask sets (issue 5).

* `download`: streamed with a tqdm progress bar into ``<dest>.part``, resumed with an HTTP
  ``Range`` request when a ``.part`` is already there, checked (size, md5 and/or sha256), and
  renamed onto ``dest`` only when everything matches: nothing is ever left at the final path by
  a failed or corrupt download.
* `safe_extract`: unpacks zip and tar (any compression, sniffed from the bytes, not the name)
  into a staging folder, refusing every member whose path leaves the target folder and every
  symlink or hard link (dataset archives hold only files and folders; a chain of links such as
  ``sub/a -> ..``, ``sub/a/b -> ..``, ``c -> b/..`` could reach outside), and bounded: at most
  `max_members` members, `max_bytes` bytes in all (default: EXTRACT_SIZE_MARGIN x the archive's
  size, at least EXTRACT_MIN_BYTES) and a compression ratio of `max_ratio` (per zip member and
  over the whole archive), so a zip bomb is refused; then moves the result into place.
* `fetch_source`: everything one registry source needs, into ``raw_root/<source>/``, with
  ``raw_root/<source>/.complete`` (JSON: files, sizes, checksums) written last.

Mirrors and tests: `fetch_source(..., urls_override={file name: url or {url, md5, sha256,
size}})` points single files elsewhere (a plain URL keeps the registry's checksums, a dict
replaces them); the environment variable ``INPAINTBENCH_MIRROR=<base url>`` makes every file be
tried first at ``<base url>/<source>/<file name>`` (registry checksums apply).

Terms of use: sources with restrictive terms need explicit acceptance before the first
download: ``accept_terms=True`` (all), ``accept_terms=["celeba", ...]`` (the CLI's
``--accept-terms celeba`` and params.yaml ``downloads: {accept_terms: [celeba]}``), or the
environment variable ``INPAINTBENCH_ACCEPT_TERMS=celeba,places365`` (or ``all``).
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
import socket
import stat
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable

from ..errors import InpaintBenchError
from ..io import write_json, write_text
from .sources import RemoteFile, Source, get_source

ENV_MIRROR = "INPAINTBENCH_MIRROR"
ENV_ACCEPT = "INPAINTBENCH_ACCEPT_TERMS"
COMPLETE = ".complete"
CHUNK = 1 << 20
# extraction bounds (safe_extract): real dataset archives hold JPEG/PNG files (ratio ~1) and text
# lists (ratio < 20); Places365's training archive has 1.8 M members
EXTRACT_MAX_MEMBERS = 5_000_000
EXTRACT_MAX_RATIO = 100.0
EXTRACT_RATIO_MIN_BYTES = 1 << 20     # ratios are checked once this much is written
EXTRACT_SIZE_MARGIN = 4               # total bytes <= margin x archive size ...
EXTRACT_MIN_BYTES = 1 << 30           # ... but at least 1 GiB
USER_AGENT = "inpaintbench-fetch/0.1 (+https://github.com/; research benchmark)"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


# --------------------------------------------------------------------------------------------
# checksums and content sniffing
# --------------------------------------------------------------------------------------------
def file_hashes(path: Path) -> dict[str, str]:
    """md5 and sha256 of a file in one pass."""
    md5 = hashlib.md5(usedforsecurity=False)
    sha = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(CHUNK)
            if not block:
                break
            md5.update(block)
            sha.update(block)
    return {"md5": md5.hexdigest(), "sha256": sha.hexdigest()}


def _looks_like_html(head: bytes) -> bool:
    text = head.lstrip()[:512].lower()
    return text.startswith(b"<!doctype html") or text.startswith(b"<html") or (
        text.startswith(b"<") and b"<html" in text
    )


def _sniff_kind(path: Path) -> str:
    """'zip', 'tar', 'html' or 'other', from the content (DTD's .tar.gz is a plain tar)."""
    with open(path, "rb") as fh:
        head = fh.read(1024)
    if _looks_like_html(head):
        return "html"
    if head[:4] == b"PK\x03\x04" or head[:4] == b"PK\x05\x06":
        return "zip"
    if head[:2] == b"\x1f\x8b" or head[:3] == b"BZh" or head[:6] == b"\xfd7zXZ\x00":
        return "tar"  # compressed; whether a tar is inside shows at extraction
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    return "other"


def _html_error(name: str, path_hint: Path | str, url: str | None) -> InpaintBenchError:
    where = f" from {url}" if url else ""
    return InpaintBenchError(
        f"{name}{where} is an HTML page, not the expected file: this is what Google Drive "
        f"serves when a file's download quota is exceeded or a sign-in/confirmation is needed "
        f"(and what a browser saves under the file's name). Download {name} by hand in a "
        f"browser, check it is a real archive, put it at {path_hint} and run the fetch again; "
        f"or point {ENV_MIRROR} at a mirror that has it."
    )


def _verify(path: Path, name: str, *, md5: str | None, sha256: str | None,
            size: int | None) -> dict[str, str]:
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        expected = f"md5 {md5}" if md5 else (f"sha256 {sha256}" if sha256 else "no checksum")
        raise InpaintBenchError(
            f"{name} has {actual_size} bytes but {size} were expected ({expected}): the file "
            f"is truncated or not the published one. Delete it and fetch again."
        )
    hashes = file_hashes(path)
    for algo, want in (("md5", md5), ("sha256", sha256)):
        if want and hashes[algo] != want.lower():
            raise InpaintBenchError(
                f"checksum mismatch for {name}: expected {algo} {want.lower()}, got "
                f"{hashes[algo]}. The download is corrupt or the server sent another file; it "
                f"was discarded. Run the fetch again, or download {name} by hand and compare "
                f"its {algo}."
            )
    return hashes


# --------------------------------------------------------------------------------------------
# download
# --------------------------------------------------------------------------------------------
def _progress_bar(name: str, total: int | None, initial: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024,
                desc=name, disable=not enabled, file=sys.stderr, leave=False)


def _parse_content_range(value: str | None) -> tuple[int, int | None] | None:
    # "bytes 100-199/1000" -> (100, 1000)
    if not value or not value.startswith("bytes "):
        return None
    try:
        span, total = value[6:].split("/")
        start = int(span.split("-")[0])
        return start, (None if total == "*" else int(total))
    except ValueError:
        return None


class _Retry(Exception):
    """A transient failure: the .part file stays and the next attempt resumes it."""


def _fetch_once(url: str, part: Path, name: str, *, size: int | None, kind: str | None,
                progress: bool, timeout: float) -> None:
    offset = part.stat().st_size if part.exists() else 0
    if size is not None and offset > size:
        part.unlink()
        offset = 0
    if size is not None and offset == size:
        return  # already complete; verified by the caller
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:
            return  # the part already holds every byte; the checksum decides
        if exc.code >= 500 or exc.code == 429:
            raise _Retry(f"HTTP {exc.code} from {url}") from exc
        raise InpaintBenchError(
            f"downloading {name} from {url} failed: HTTP {exc.code} {exc.reason}."
        ) from exc
    except (urllib.error.URLError, socket.timeout, ConnectionError) as exc:
        raise _Retry(f"cannot reach {url}: {getattr(exc, 'reason', exc)}") from exc

    with response:
        status = getattr(response, "status", None) or 200
        length = response.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        if status == 206:
            rng = _parse_content_range(response.headers.get("Content-Range"))
            if rng is None or rng[0] != offset:
                part.unlink(missing_ok=True)
                raise _Retry(f"{url} answered the range request with another range")
            mode = "ab"
        else:
            offset, mode = 0, "wb"  # server ignored Range: start over
        total = offset + length if length is not None else size
        ctype = (response.headers.get("Content-Type") or "").lower()
        received = offset
        bar = _progress_bar(name, total, offset, progress)
        try:
            with open(part, mode) as fh:
                first = True
                while True:
                    try:
                        block = response.read(CHUNK)
                    except (socket.timeout, ConnectionError, OSError) as exc:
                        raise _Retry(f"connection to {url} broke: {exc}") from exc
                    if not block:
                        break
                    if first and offset == 0:
                        first = False
                        html = _looks_like_html(block) or ("text/html" in ctype and kind != "text")
                        if html and kind in ("zip", "tar", "text"):
                            fh.close()
                            part.unlink(missing_ok=True)
                            raise _html_error(name, part.with_name(name), url)
                    fh.write(block)
                    received += len(block)
                    bar.update(len(block))
        finally:
            bar.close()
    if total is not None and received < total:
        raise _Retry(f"{url} stopped after {received} of {total} bytes")


def download(url: str, dest: str | os.PathLike, *, md5: str | None = None,
             sha256: str | None = None, size: int | None = None, progress: bool = True,
             kind: str | None = None, retries: int = 3, timeout: float = 60.0,
             backoff: float = 1.0) -> Path:
    """Download `url` to `dest`: streamed, resumable, verified, atomic.

    Bytes go to ``dest.part``; an existing ``.part`` is resumed with ``Range: bytes=N-``
    (a server that ignores the header makes it start over). A transient failure (broken
    connection, short response, 5xx) is retried `retries` times, each time resuming; when
    they run out the ``.part`` stays for the next call to resume. On completion size and
    checksums are verified; a mismatch deletes the ``.part`` and raises an error naming the
    file and the expected checksum. Only a verified file is renamed onto `dest`.
    An existing `dest` is verified and kept (no download) when it matches.
    `kind` ("zip", "tar", "text") enables detection of an HTML page served in its place.
    """
    return _download(url, dest, md5=md5, sha256=sha256, size=size, progress=progress,
                     kind=kind, retries=retries, timeout=timeout, backoff=backoff)[0]


def _download(url, dest, *, md5, sha256, size, progress, kind, retries=3, timeout=60.0,
              backoff=1.0) -> tuple[Path, dict[str, str]]:
    dest = Path(dest)
    name = dest.name
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():  # already downloaded, or placed there by hand: check, never overwrite
        if kind in ("zip", "tar") and _sniff_kind(dest) == "html":
            raise _html_error(name, dest, None)
        try:
            return dest, _verify(dest, name, md5=md5, sha256=sha256, size=size)
        except InpaintBenchError as exc:
            raise InpaintBenchError(
                f"{dest} already exists but is not the expected file: "
                f"{str(exc).split('. ')[0]}. Delete it (or put the right file there) and run again."
            ) from None
    part = dest.with_name(name + ".part")
    last_error = ""
    for attempt in range(retries + 1):
        try:
            _fetch_once(url, part, name, size=size, kind=kind, progress=progress, timeout=timeout)
            break
        except _Retry as exc:
            last_error = str(exc)
            if attempt < retries:
                time.sleep(backoff * (attempt + 1))
    else:
        have = part.stat().st_size if part.exists() else 0
        expect = f" of {size}" if size else ""
        raise InpaintBenchError(
            f"download of {name} did not complete ({last_error}); {have}{expect} bytes are kept "
            f"in {part}. Run the same command again to resume it."
        )
    if not part.exists():
        raise InpaintBenchError(f"download of {name} from {url} produced no data.")
    if kind in ("zip", "tar") and _sniff_kind(part) == "html":
        part.unlink()
        raise _html_error(name, dest, url)
    try:
        hashes = _verify(part, name, md5=md5, sha256=sha256, size=size)
    except InpaintBenchError:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, dest)
    return dest, hashes


# --------------------------------------------------------------------------------------------
# safe extraction
# --------------------------------------------------------------------------------------------
def _member_path(name: str, archive: Path) -> PurePosixPath:
    """The member's relative path, or an error if it would leave the target folder."""
    raw = name.replace("\\", "/")
    rel = PurePosixPath(raw)
    parts = [p for p in rel.parts if p not in ("", ".")]
    if raw.startswith("/") or (parts and len(parts[0]) == 2 and parts[0][1] == ":") or ".." in parts:
        raise InpaintBenchError(
            f"{archive.name} contains the member {name!r}, whose path leaves the target "
            f"folder; extraction refused (the archive is malformed or malicious). Delete it and "
            f"download it again from the official source."
        )
    return PurePosixPath(*parts) if parts else PurePosixPath(".")


def _refuse_link(archive: Path, name: str, target: str, *, hard: bool) -> None:
    """Links are refused outright: no real dataset archive needs one, and a link checked as a
    string can still escape through earlier links (``sub/a -> ..``, ``sub/a/b -> ..``, ``c -> b/..``)."""
    raise InpaintBenchError(
        f"{archive.name} contains the {'hard link' if hard else 'symlink'} {name!r} -> {target!r}; "
        f"dataset archives hold only files and folders, so links are refused (a chain of links can "
        f"point outside the target folder). Delete the archive and download it again from the "
        f"official source."
    )


class _Budget:
    """Counts members and bytes written while extracting; raises once a bound is passed."""

    def __init__(self, archive: Path, max_bytes: int, max_members: int, max_ratio: float, ratio_min_bytes: int):
        self.archive, self.max_bytes, self.max_members = archive, max_bytes, max_members
        self.max_ratio, self.ratio_min_bytes = max_ratio, ratio_min_bytes
        self.compressed = max(1, archive.stat().st_size)
        self.members = self.written = 0

    def _error(self, what: str) -> InpaintBenchError:
        return InpaintBenchError(
            f"{self.archive.name}: {what}; extraction refused (a damaged or malicious archive, e.g. a "
            f"zip bomb). Delete it and download it again from the official source; if the archive is "
            f"genuine, raise the bound (safe_extract max_bytes / max_members / max_ratio).")

    def member(self) -> None:
        self.members += 1
        if self.members > self.max_members:
            raise self._error(f"more than {self.max_members} members")

    def declared(self, name: str, size: int, compressed: int) -> None:
        """A zip member's declared sizes, checked before anything is written."""
        if size >= self.ratio_min_bytes and size > self.max_ratio * max(1, compressed):
            raise self._error(f"member {name!r} expands {size / max(1, compressed):.0f}-fold "
                              f"({compressed} -> {size} bytes; the bound is {self.max_ratio:g}-fold)")

    def add(self, n: int) -> None:
        self.written += n
        if self.written > self.max_bytes:
            raise self._error(f"it expands to more than {self.max_bytes} bytes")
        if self.written >= self.ratio_min_bytes and self.written > self.max_ratio * self.compressed:
            raise self._error(f"it expands more than {self.max_ratio:g}-fold ({self.compressed} bytes -> "
                              f"over {self.written})")

    def copy(self, src, dst) -> None:
        while True:
            chunk = src.read(CHUNK)
            if not chunk:
                return
            self.add(len(chunk))
            dst.write(chunk)


def _inside(root: Path, path: Path) -> bool:
    root_real = os.path.realpath(root)
    real = os.path.realpath(path)
    return real == root_real or real.startswith(root_real + os.sep)


def _safe_target(staging: Path, rel: PurePosixPath, archive: Path, name: str) -> Path:
    target = staging / rel
    # a parent that is a symlink made by an earlier member must not lead outside either
    if not _inside(staging, target.parent):
        raise InpaintBenchError(
            f"{archive.name}: member {name!r} would be written through a link outside the "
            f"target folder; extraction refused."
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        target.unlink()
    return target


def _extract_zip(archive: Path, staging: Path, include: Callable[[str], bool] | None, budget: _Budget) -> None:
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        declared = 0
        for info in infos:  # validate every path, link and size before writing anything
            _member_path(info.filename, archive)
            budget.member()
            if (info.external_attr >> 16) & 0o170000 == stat.S_IFLNK:
                _refuse_link(archive, info.filename, zf.read(info).decode("utf-8", "replace"), hard=False)
            if include is None or include(info.filename):
                budget.declared(info.filename, info.file_size, info.compress_size)
                declared += info.file_size
        if declared > budget.max_bytes:
            raise budget._error(f"its members declare {declared} bytes, more than the bound of {budget.max_bytes}")
        for info in infos:
            if include is not None and not include(info.filename):
                continue
            rel = _member_path(info.filename, archive)
            if info.is_dir():
                (staging / rel).mkdir(parents=True, exist_ok=True)
                continue
            target = _safe_target(staging, rel, archive, info.filename)
            with zf.open(info) as src, open(target, "wb") as dst:
                budget.copy(src, dst)


def _extract_tar(archive: Path, staging: Path, include: Callable[[str], bool] | None, budget: _Budget) -> None:
    # One forward pass over the members; `members` is cleared as we go so a 1.8M-member
    # archive does not pile up TarInfo objects. Compression is detected from the bytes.
    with tarfile.open(archive, mode="r:*") as tf:
        for count, member in enumerate(tf):
            rel = _member_path(member.name, archive)
            budget.member()
            if member.issym() or member.islnk():
                _refuse_link(archive, member.name, member.linkname, hard=member.islnk())
            if include is not None and not include(member.name):
                continue
            if member.isdir():
                (staging / rel).mkdir(parents=True, exist_ok=True)
            elif member.isfile():
                target = _safe_target(staging, rel, archive, member.name)
                src = tf.extractfile(member)
                with open(target, "wb") as dst:
                    budget.copy(src, dst)
            else:
                raise InpaintBenchError(
                    f"{archive.name} contains {member.name!r}, a device or pipe; extraction "
                    f"refused (datasets contain only files and folders)."
                )
            if count % 1000 == 999:
                tf.members = []
        # tarfile stops quietly when the data ends on a header boundary: a whole archive ends
        # with a zero block, and reading a compressed stream to its end checks its trailer
        # (CRC, length), so a truncated download cannot pass as a smaller archive.
        tf.fileobj.seek(tf.offset)
        end = tf.fileobj.read(tarfile.BLOCKSIZE)
        if len(end) < tarfile.BLOCKSIZE or end.count(0) != tarfile.BLOCKSIZE:
            raise tarfile.ReadError("the archive ends without its end-of-archive marker")
        while tf.fileobj.read(CHUNK):
            pass


def safe_extract(archive: str | os.PathLike, dest: str | os.PathLike, *,
                 expected: str | None = None,
                 include: Callable[[str], bool] | None = None,
                 max_bytes: int | None = None, max_members: int = EXTRACT_MAX_MEMBERS,
                 max_ratio: float = EXTRACT_MAX_RATIO, ratio_min_bytes: int = EXTRACT_RATIO_MIN_BYTES) -> list[str]:
    """Extract a zip or tar (any compression) into `dest`, refusing escaping paths and links,
    bounded in members, bytes and compression ratio (see the module doc).

    The archive type is sniffed from its bytes. Members are unpacked into a staging folder
    inside `dest` and moved into place only when the whole archive went through, so a corrupt
    or malicious archive leaves `dest` as it was. Absolute paths, ``..`` components and
    every symlink/hard link are refused with an error, as is an archive that passes
    `max_members`, `max_bytes` (default: the archive's size x EXTRACT_SIZE_MARGIN, at least
    EXTRACT_MIN_BYTES) or `max_ratio` (uncompressed/compressed bytes). A corrupt or
    truncated archive is an error naming the file (and `expected`, its expected checksum,
    where given). `include(member_name)` may skip members. Returns the top-level names.
    """
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise InpaintBenchError(f"archive {archive} does not exist; fetch it first.")
    dest.mkdir(parents=True, exist_ok=True)
    kind = _sniff_kind(archive)
    if kind == "html":
        raise _html_error(archive.name, archive, None)
    if max_bytes is None:
        max_bytes = max(EXTRACT_MIN_BYTES, EXTRACT_SIZE_MARGIN * archive.stat().st_size)
    budget = _Budget(archive, max_bytes, max_members, max_ratio, ratio_min_bytes)
    staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest))
    hint = f" (expected {expected})" if expected else ""
    try:
        try:
            if kind == "zip" and zipfile.is_zipfile(archive):
                _extract_zip(archive, staging, include, budget)
            else:
                _extract_tar(archive, staging, include, budget)
        except InpaintBenchError:
            raise
        except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, OSError,
                ValueError, UnicodeError) as exc:
            raise InpaintBenchError(
                f"archive {archive.name} is corrupt or truncated{hint}: {exc}. Delete {archive} "
                f"and fetch it again."
            ) from exc
        names = sorted(os.listdir(staging))
        for top in names:
            final = dest / top
            if final.is_symlink() or final.is_file():
                final.unlink()
            elif final.is_dir():
                shutil.rmtree(final)
            os.replace(staging / top, final)
        return names
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# terms of use
# --------------------------------------------------------------------------------------------
def _accepted(source: str, accept_terms: bool | Iterable[str] | None) -> str | None:
    """How the terms were accepted ('argument' / 'environment'), or None."""
    if accept_terms is True:
        return "argument"
    if accept_terms and not isinstance(accept_terms, (bool, str)) and source in set(accept_terms):
        return "argument"
    if isinstance(accept_terms, str) and source in {s.strip() for s in accept_terms.split(",")}:
        return "argument"
    env = os.environ.get(ENV_ACCEPT, "")
    names = {s.strip().lower() for s in env.split(",") if s.strip()}
    if names & {"all", "1", "yes", "true"} or source in names:
        return "environment"
    return None


def _require_terms(src: Source, root: Path, accept_terms) -> None:
    if not src.terms:
        return
    how = _accepted(src.name, accept_terms)
    if how is None:
        raise InpaintBenchError(
            f"{src.title} has terms of use that must be accepted before it is downloaded:\n\n"
            f"  {src.terms}\n\n"
            f"If you agree, accept them explicitly with one of: "
            f"`inpaintbench fetch {src.name} --accept-terms {src.name}`, the environment "
            f"variable {ENV_ACCEPT}={src.name} (comma-separated names, or 'all'), or "
            f"`downloads: {{accept_terms: [{src.name}]}}` in params.yaml."
        )
    print(f"[inpaintbench] Terms of use for {src.name} (accepted via {how}):\n  {src.terms}",
          file=sys.stderr)
    write_json(root / "TERMS_ACCEPTED.json", {
        "source": src.name, "terms": src.terms, "accepted_via": how,
        "accepted_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    })


# --------------------------------------------------------------------------------------------
# sources
# --------------------------------------------------------------------------------------------
def _candidates(src: Source, rf: RemoteFile, urls_override: dict | None) -> tuple[list[str], dict]:
    """(urls to try, expected {md5, sha256, size}) for one file."""
    expect = {"md5": rf.md5, "sha256": rf.sha256, "size": rf.size}
    urls = list(rf.urls)
    override = (urls_override or {}).get(rf.name)
    if isinstance(override, str):
        urls = [override]
    elif isinstance(override, dict):
        given = override.get("urls") or [override["url"]]
        urls = list(given)
        if any(k in override for k in ("md5", "sha256", "size")):
            expect = {k: override.get(k) for k in ("md5", "sha256", "size")}
    elif override is not None:
        raise InpaintBenchError(f"urls_override[{rf.name!r}] must be a URL or a dict with 'url'.")
    mirror = os.environ.get(ENV_MIRROR)
    if mirror and override is None:
        urls.insert(0, f"{mirror.rstrip('/')}/{src.name}/{rf.name}")
    return urls, expect


def _local_path(root: Path, rf: RemoteFile) -> Path:
    return root / ("archives" if rf.kind in ("zip", "tar") else "") / rf.name


def _record_path(local: Path) -> Path:
    return local.with_name(local.name + ".sha256")


def _read_record(local: Path) -> str | None:
    rec = _record_path(local)
    if not rec.exists():
        return None
    text = rec.read_text(encoding="utf-8").split()
    return text[0].lower() if text else None


def _describe_expected(expect: dict) -> str:
    if expect.get("md5"):
        return f"md5 {expect['md5']}"
    if expect.get("sha256"):
        return f"sha256 {expect['sha256']}"
    return "no published checksum"


def _complete_is_valid(root: Path) -> bool:
    marker = root / COMPLETE
    if not marker.exists():
        return False
    try:
        info = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    for entry in info.get("files", []):
        path = root / entry["path"]
        if not path.is_file() or path.stat().st_size != entry["size"]:
            return False
    return all((root / name).exists() for name in info.get("extracted", []))


def _fetch_file(src: Source, rf: RemoteFile, root: Path, urls_override, progress: bool) -> dict:
    local = _local_path(root, rf)
    urls, expect = _candidates(src, rf, urls_override)
    origin = "published" if (expect["md5"] or expect["sha256"]) else None
    recorded = None
    if origin is None:
        recorded = _read_record(local)
        if recorded:
            expect = {**expect, "sha256": recorded}
            origin = "recorded"
    errors: list[tuple[str, InpaintBenchError]] = []
    hashes = None
    if local.exists():
        urls = urls[:1]  # a file already there is only verified, never re-downloaded
    for url in urls:
        try:
            _, hashes = _download(url, local, md5=expect["md5"], sha256=expect["sha256"],
                                  size=expect["size"], progress=progress, kind=rf.kind)
            break
        except InpaintBenchError as exc:
            errors.append((url, exc))
    if hashes is None:
        if len(errors) == 1:
            raise errors[0][1]
        raise InpaintBenchError(
            f"could not fetch {rf.name} for {src.name} (expected {_describe_expected(expect)}); "
            f"every source failed:\n" + "\n".join(f"  {u}: {e}" for u, e in errors)
        )
    if origin is None:
        # no published checksum: trust on first use, record it beside the file, check later
        write_text(_record_path(local), f"{hashes['sha256']}  {rf.name}\n")
        origin = "recorded-now"
    return {"name": rf.name, "path": str(local.relative_to(root)), "size": local.stat().st_size,
            "md5": hashes["md5"], "sha256": hashes["sha256"], "checksum": origin,
            "kind": rf.kind, "expected": _describe_expected(expect)}


def user_folder_images(src: Source, folder: str | os.PathLike | None) -> dict[str, list[Path]]:
    """{split: sorted image paths} of a user-filled dataset folder (Paris StreetView); a clear
    error, saying how to obtain the data and where to put it, when the folder holds none."""
    folder = Path(folder or src.user_folder)
    found: dict[str, list[Path]] = {}
    for split, names in src.layout.items():
        for sub in names:
            d = folder / sub
            if d.is_dir():
                files = sorted(p for p in d.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
                if files:
                    found[split] = files
                    break
    if not found:
        expected = "; ".join(f"{split}: {' or '.join(names)}/" for split, names in src.layout.items())
        raise InpaintBenchError(
            f"{src.title} has no public download and the folder {folder} holds no images "
            f"(looked for {expected}). {src.description} Then run the fetch again "
            f"(or set `folder:` of this dataset in params.yaml to where the images are)."
        )
    return found


def _fetch_user_folder(src: Source, root: Path, folder: str | os.PathLike | None) -> Path:
    folder = Path(folder or src.user_folder)
    found = user_folder_images(src, folder)
    entries = []
    for split, files in found.items():
        for p in files:
            entries.append({"split": split, "path": str(p.relative_to(folder)), "size": p.stat().st_size})
    root.mkdir(parents=True, exist_ok=True)
    write_json(root / COMPLETE, {
        "source": src.name, "folder": str(folder.resolve()), "user_supplied": True,
        "counts": {k: len(v) for k, v in found.items()}, "images": entries, "files": [],
        "extracted": [],
        "completed_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    })
    return root


def short_category(name: str) -> str:
    """'/a/apartment_building/outdoor' or 'apartment_building/outdoor' -> the latter."""
    parts = name.strip("/").split("/")
    return "/".join(parts[1:]) if len(parts) > 1 and len(parts[0]) == 1 else "/".join(parts)


def choose_categories(all_cats: list[str], wanted, seed: int) -> list[str]:
    """The Places365 categories a dataset uses: all (None), the names listed, or, for an integer
    k, k categories drawn at random with `seed` (SAHN Sec. 4.1: "five complete categories").
    fetch and prepare call this with the same seed, so fetch extracts exactly what prepare reads."""
    from ..config import derive_seed

    if wanted is None:
        return list(all_cats)
    if isinstance(wanted, int) and not isinstance(wanted, bool):
        if not 0 < wanted <= len(all_cats):
            raise InpaintBenchError(f"categories: {wanted} must be between 1 and {len(all_cats)}.")
        import numpy as np

        rng = np.random.default_rng(derive_seed(seed, "places-categories"))
        picked = rng.choice(len(all_cats), size=wanted, replace=False)
        return [all_cats[i] for i in sorted(picked)]
    chosen = []
    for w in wanted:
        name = short_category(str(w))
        if name not in all_cats:
            close = [c for c in all_cats if name.split("/")[0] in c][:5]
            raise InpaintBenchError(
                f"categories: {w!r} is not a Places365 category"
                + (f" (did you mean {', '.join(close)}?)" if close else "")
                + "; see categories_places365.txt in the fetched filelist."
            )
        chosen.append(name)
    return chosen


def _resolve_categories(src: Source, root: Path, categories, seed: int) -> list[str] | None:
    """`categories` as names: entries that are integers k (k categories drawn at random) are
    resolved against the fetched category list (categories_places365.txt); None = all."""
    if categories is None:
        return None
    if isinstance(categories, (int, str)):
        categories = [categories]
    names = [c for c in categories if not isinstance(c, int)]
    counts = [c for c in categories if isinstance(c, int)]
    if counts:
        listing = root / src.layout.get("categories", "categories_places365.txt")
        if not listing.exists():
            raise InpaintBenchError(f"{listing} is missing; the category list must be fetched before "
                                    f"categories can be drawn by count. Run the fetch again with --force.")
        lines = [ln.split() for ln in listing.read_text(encoding="utf-8").splitlines() if ln.strip()]
        all_cats = [short_category(raw) for raw, _ in sorted(lines, key=lambda x: int(x[1]))]
        for k in counts:
            names += choose_categories(all_cats, k, seed)
    return sorted({short_category(c) for c in names})


def _category_filter(src: Source, categories: Iterable[str] | None) -> Callable[[str], bool] | None:
    """Member filter for Places365's training archive: keep only the chosen categories'
    folders (``data_256/<letter>/<category>/...``); other archives pass whole."""
    if categories is None:
        return None
    if "train_images" not in src.layout:
        raise InpaintBenchError(f"categories= applies to Places365 only, not {src.name}.")
    top = src.layout["train_images"]
    prefixes = tuple(f"{top}/{c[0]}/{c}/" for c in (short_category(c) for c in categories))

    def keep(name: str) -> bool:
        name = name.lstrip("./")
        if not name.startswith(top + "/") and name != top:
            return True
        return name.startswith(prefixes) or any(p.startswith(name.rstrip("/") + "/") for p in prefixes)

    return keep


def _train_archive_name(src: Source) -> str | None:
    return next((rf.name for rf in src.files if rf.name.startswith("train_")), None)


def fetch_source(source: str, raw_root: str | os.PathLike, *,
                 accept_terms: bool | list[str] = False, urls_override: dict | None = None,
                 folder: str | os.PathLike | None = None, progress: bool = True,
                 force: bool = False, categories: list[str | int] | int | None = None, seed: int = 0) -> Path:
    """Download, verify and extract everything `source` needs into ``raw_root/<source>/``.

    Returns that folder. ``raw_root/<source>/.complete`` (JSON: files, sizes, md5/sha256,
    where each checksum came from) is written last, so its presence means the source is whole;
    a second call with a valid ``.complete`` does nothing. Restrictive terms must be accepted
    (`accept_terms`, see the module doc) before anything is downloaded. For Paris StreetView
    (no public download) `folder` (default ``data/user/paris_streetview``) is checked instead.
    `categories` (Places365 only, names like ``airfield`` or ``/a/airfield``) extracts only
    those categories from the 26 GB training archive (which is still downloaded whole);
    asking later for a category not extracted re-extracts from the kept archive. An integer k
    (alone or in the list) stands for k categories drawn with `seed` (`choose_categories`, the
    draw prepare makes), resolved from the category list once the file list is extracted.
    """
    src = get_source(source)
    root = Path(raw_root) / src.name
    if src.user_folder is not None:
        return _fetch_user_folder(src, root, folder)
    by_count = categories is not None and any(isinstance(c, int) for c in (
        categories if isinstance(categories, (list, tuple)) else [categories]))
    listing = root / src.layout.get("categories", "")
    wanted = (_resolve_categories(src, root, categories, seed)
              if categories is not None and (not by_count or listing.is_file()) else None)
    if not force and _complete_is_valid(root):
        done = json.loads((root / COMPLETE).read_text(encoding="utf-8")).get("categories")
        if done is None or (wanted is not None and set(wanted) <= set(done)):
            return root
    if categories is not None and "train_images" not in src.layout:
        raise InpaintBenchError(f"categories= applies to Places365 only, not {src.name}.")
    keep_member = _category_filter(src, wanted) if wanted is not None else None
    (root / COMPLETE).unlink(missing_ok=True)
    _require_terms(src, root, accept_terms)  # before anything is created or downloaded
    root.mkdir(parents=True, exist_ok=True)
    entries = [_fetch_file(src, rf, root, urls_override, progress) for rf in src.files]
    extracted: list[str] = []
    for entry in entries:
        if entry["kind"] not in ("zip", "tar"):
            continue
        archive = root / entry["path"]
        if categories is not None and wanted is None:
            # categories drawn by count: the category list comes with the file list (the first
            # archive); resolve before the training archive is extracted
            if listing.is_file():
                wanted = _resolve_categories(src, root, categories, seed)
                keep_member = _category_filter(src, wanted)
            elif entry["name"] == _train_archive_name(src):
                raise InpaintBenchError(f"{listing} was not in the file list; cannot draw categories by count.")
        try:
            names = safe_extract(archive, root, expected=entry["expected"], include=keep_member)
        except InpaintBenchError:
            if entry["checksum"] == "recorded-now":
                # the first download of a file without a published checksum is corrupt:
                # its recorded checksum is worthless, drop both so the next run starts clean
                archive.unlink(missing_ok=True)
                _record_path(archive).unlink(missing_ok=True)
            raise
        extracted.extend(n for n in names if n not in extracted)
    for entry in entries:
        if entry["checksum"] == "recorded-now":
            entry["checksum"] = "recorded"
    write_json(root / COMPLETE, {
        "source": src.name, "files": entries, "extracted": sorted(extracted),
        "categories": wanted,
        "completed_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    })
    return root


def verify_source(source: str, raw_root: str | os.PathLike) -> dict:
    """Re-hash every downloaded file of a fetched source against the registry (or the
    recorded sha256 where none is published); raises on the first mismatch."""
    src = get_source(source)
    root = Path(raw_root) / src.name
    marker = root / COMPLETE
    if not marker.exists():
        raise InpaintBenchError(f"{src.name} is not fetched yet ({marker} missing); run `inpaintbench fetch {src.name}`.")
    info = json.loads(marker.read_text(encoding="utf-8"))
    for entry in info.get("files", []):
        rf = src.file(entry["name"])
        path = root / entry["path"]
        if not path.exists():
            raise InpaintBenchError(f"{path} is missing; run `inpaintbench fetch {src.name}` again.")
        sha = rf.sha256 or (None if rf.published_checksum else _read_record(path)) or None
        _verify(path, rf.name, md5=rf.md5, sha256=sha, size=rf.size)
    return info
