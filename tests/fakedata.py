"""Tiny stand-ins for the real dataset and mask archives, with the REAL layouts (same folder
and file names, the same partition/attribute/list file formats), and a loopback HTTP server
(127.0.0.1 only) that serves them with Range support and can misbehave on purpose: serve an
HTML page in place of a file (Google Drive quota page) or cut a response short.
"""
from __future__ import annotations

import hashlib
import io
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CELEBA_ATTRS = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose "
    "Black_Hair Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee "
    "Gray_Hair Heavy_Makeup High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes "
    "No_Beard Oval_Face Pale_Skin Pointy_Nose Receding_Hairline Rosy_Cheeks Sideburns Smiling "
    "Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat Wearing_Lipstick Wearing_Necklace "
    "Wearing_Necktie Young"
).split()
assert len(CELEBA_ATTRS) == 40

HTML_QUOTA_PAGE = (
    b"<!DOCTYPE html><html><head><title>Google Drive - Quota exceeded</title></head><body>"
    b"<p>Too many users have viewed or downloaded this file recently. Please try accessing the "
    b"file again later.</p></body></html>"
)


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def image_bytes(w: int, h: int, seed: int, fmt: str = "JPEG") -> bytes:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def corrupt_jpeg() -> bytes:
    # a JPEG header followed by garbage: PIL cannot decode it
    return b"\xff\xd8\xff\xe0" + b"this is not image data" * 4


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def tar_bytes(members: dict[str, bytes], compression: str = "", links: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=f"w:{compression}") as tf:
        dirs = sorted({str(Path(n).parent) for n in members if str(Path(n).parent) != "."})
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tf.addfile(info)
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tf.addfile(info)
    return buf.getvalue()


# --------------------------------------------------------------------------------------------
# builders: {file name: bytes} as the real sources name them
# --------------------------------------------------------------------------------------------
def celeba_files(n: int = 12, corrupt: tuple[int, ...] = ()) -> dict[str, bytes]:
    """img_align_celeba.zip (img_align_celeba/000001.jpg ... 178x218 JPEG),
    list_eval_partition.txt ("000001.jpg 0"), list_attr_celeba.txt (count, names, rows)."""
    names = [f"{i:06d}.jpg" for i in range(1, n + 1)]
    members = {}
    for i, name in enumerate(names, start=1):
        members[f"img_align_celeba/{name}"] = corrupt_jpeg() if i in corrupt else image_bytes(178, 218, i)
    # official partition in the real proportions (first ~80% train, then val, then test)
    n_train, n_val = round(n * 0.8), round(n * 0.1)
    part = "".join(f"{name} {0 if i < n_train else (1 if i < n_train + n_val else 2)}\r\n"
                   for i, name in enumerate(names))
    rng = np.random.default_rng(7)
    rows = []
    for name in names:
        vals = rng.choice([-1, 1], size=40)
        rows.append(name + " " + " ".join(f"{v:2d}" for v in vals))
    attr = f"{n}\r\n" + " ".join(CELEBA_ATTRS) + " \r\n" + "\r\n".join(rows) + "\r\n"
    return {
        "img_align_celeba.zip": zip_bytes(members),
        "list_eval_partition.txt": part.encode(),
        "list_attr_celeba.txt": attr.encode(),
    }


PLACES_CATEGORIES = ["/a/airfield", "/a/apartment_building/outdoor", "/b/bedroom", "/c/canyon"]


def places_files(train_per_cat: int = 4, val_per_cat: int = 2, categories: list[str] | None = None) -> dict[str, bytes]:
    """filelist_places365-standard.tar (categories_places365.txt, places365_train_standard.txt,
    places365_val.txt at the archive root), val_256.tar (val_256/Places365_val_00000001.jpg),
    train_256_places365standard.tar (data_256/a/airfield/00000001.jpg)."""
    categories = categories or PLACES_CATEGORIES
    cats = "".join(f"{c} {i}\n" for i, c in enumerate(categories))
    train_list, train_members, val_list, val_members = [], {}, [], {}
    k = 0
    for i, c in enumerate(categories):
        for j in range(1, train_per_cat + 1):
            rel = f"{c}/{j:08d}.jpg"
            train_list.append(f"{rel} {i}\n")
            train_members[f"data_256{rel}"] = image_bytes(256, 256, 1000 + 10 * i + j)
    for j in range(val_per_cat):
        for i, c in enumerate(categories):
            k += 1
            name = f"Places365_val_{k:08d}.jpg"
            val_list.append(f"{name} {i}\n")
            val_members[f"val_256/{name}"] = image_bytes(256, 256, 5000 + k)
    filelist = tar_bytes({
        "categories_places365.txt": cats.encode(),
        "places365_train_standard.txt": "".join(train_list).encode(),
        "places365_val.txt": "".join(val_list).encode(),
        "places365_test.txt": b"Places365_test_00000001.jpg\n",
    })
    return {
        "filelist_places365-standard.tar": filelist,
        "val_256.tar": tar_bytes(val_members),
        "train_256_places365standard.tar": tar_bytes(train_members),
    }


DTD_CLASSES = ["banded", "blotchy", "zigzagged"]


def dtd_files(per_class: int = 3) -> dict[str, bytes]:
    """dtd-r1.0.1.tar.gz that is really an UNCOMPRESSED tar (the real file's quirk), with
    dtd/images/<class>/<class>_0001.jpg and dtd/labels/{train,val,test}{1..10}.txt."""
    members = {}
    rels = []
    for ci, cls in enumerate(DTD_CLASSES):
        for j in range(1, per_class + 1):
            rel = f"{cls}/{cls}_{j:04d}.jpg"
            rels.append(rel)
            members[f"dtd/images/{rel}"] = image_bytes(300 + 10 * ci, 280, 200 + 10 * ci + j)
    for fold in range(1, 11):
        by_split = {"train": [], "val": [], "test": []}
        for idx, rel in enumerate(rels):
            by_split[("train", "val", "test")[(idx + fold) % 3]].append(rel)
        for split, lst in by_split.items():
            members[f"dtd/labels/{split}{fold}.txt"] = ("\n".join(lst) + "\n").encode()
    members["dtd/labels/labels_joint_anno.txt"] = "".join(f"{r} {r.split('/')[0]}\n" for r in rels).encode()
    return {"dtd-r1.0.1.tar.gz": tar_bytes(members, compression="")}


def urban100_files(n: int = 4) -> dict[str, bytes]:
    """Urban100_HR.tar.gz (gzip) with Urban100_HR/img_001.png ..."""
    members = {f"Urban100_HR/img_{i:03d}.png": image_bytes(64 + 8 * i, 48, 300 + i, "PNG") for i in range(1, n + 1)}
    return {"Urban100_HR.tar.gz": tar_bytes(members, compression="gz")}


def paris_folder(folder: Path, n_train: int = 3, n_test: int = 2) -> Path:
    """The layout the Context Encoders authors distribute: paris_train_original/*.JPG
    (936x537) and paris_eval_gt/*.png (227x227); smaller here."""
    (folder / "paris_train_original").mkdir(parents=True, exist_ok=True)
    (folder / "paris_eval_gt").mkdir(parents=True, exist_ok=True)
    for i in range(n_train):
        (folder / "paris_train_original" / f"48.84{i}_2.34{i}_90_-004.JPG").write_bytes(image_bytes(94, 54, 400 + i))
    for i in range(1, n_test + 1):
        (folder / "paris_eval_gt" / f"{i:03d}_im.png").write_bytes(image_bytes(57, 57, 450 + i, "PNG"))
    return folder


def hole_png(hole: np.ndarray, hole_white: bool, mode: str = "L") -> bytes:
    arr = (hole if hole_white else ~hole).astype(np.uint8) * 255
    im = Image.fromarray(arr, "L")
    if mode == "1":
        im = im.convert("1")
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def rect_hole(size: int, frac_rows: float) -> np.ndarray:
    hole = np.zeros((size, size), dtype=bool)
    hole[: int(round(size * frac_rows)), :] = True
    return hole


def nvidia_files(n: int = 4, size: int = 32, odd_size: int | None = None, corrupt: tuple[int, ...] = ()) -> dict[str, bytes]:
    """test_mask.zip with mask/readme.txt and mask/testing_mask_dataset/00000.png (white = hole).
    Mask i covers the top (i+1)/8 of the rows; `odd_size` makes mask 0 that size instead."""
    members = {"mask/readme.txt": b"testing mask dataset, CC BY-NC-SA 4.0\n"}
    for i in range(n):
        s = odd_size if (odd_size and i == 0) else size
        data = b"not a png" if i in corrupt else hole_png(rect_hole(s, (i + 1) / 8), hole_white=True)
        members[f"mask/testing_mask_dataset/{i:05d}.png"] = data
    return {"test_mask.zip": zip_bytes(members)}


def qdimd_files(n_train: int = 2, n_test: int = 3, size: int = 32) -> dict[str, bytes]:
    """qd_imd.tar.gz with qd_imd/{train,test}/00000_<split>.png, 1-bit, hole = BLACK."""
    members = {}
    for split, n in (("train", n_train), ("test", n_test)):
        for i in range(n):
            members[f"qd_imd/{split}/{i:05d}_{split}.png"] = hole_png(rect_hole(size, (i + 1) / 4), hole_white=False, mode="1")
    return {"qd_imd.tar.gz": tar_bytes(members, compression="gz")}


# --------------------------------------------------------------------------------------------
# loopback HTTP server
# --------------------------------------------------------------------------------------------
class FakeServer:
    """Serves registered bytes at /<path>; honours `Range: bytes=N-`; records every request.

    `serve_html(path)` answers that path with a Drive-style quota page (text/html);
    `cut(path, nbytes, times=1)` sends the full Content-Length but only `nbytes` of the body,
    then closes, for the next `times` requests of that path; `ignore_range(path)` always sends
    the whole file with 200.
    """

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.html: set[str] = set()
        self.cuts: dict[str, list[int]] = {}
        self.no_range: set[str] = set()
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # keep test output quiet
                pass

            def do_GET(self) -> None:
                path = self.path.split("?")[0].lstrip("/")
                rng = self.headers.get("Range")
                server.requests.append((path, rng))
                if path in server.html:
                    body = HTML_QUOTA_PAGE
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html; charset=utf-8")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                if path not in server.files:
                    self.send_error(404)
                    return
                data = server.files[path]
                start = 0
                if rng and rng.startswith("bytes=") and path not in server.no_range:
                    start = int(rng[6:].split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                cut = server.cuts.get(path)
                if cut:
                    self.send_header("Connection", "close")
                self.end_headers()
                if cut:
                    n = cut.pop(0)
                    if not cut:
                        del server.cuts[path]
                    self.wfile.write(body[:n])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    @property
    def base(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def add(self, path: str, data: bytes) -> str:
        self.files[path] = data
        return f"{self.base}/{path}"

    def url(self, path: str) -> str:
        return f"{self.base}/{path}"

    def serve_html(self, path: str) -> None:
        self.html.add(path)

    def cut(self, path: str, nbytes: int, times: int = 1) -> None:
        self.cuts[path] = [nbytes] * times

    def ignore_range(self, path: str) -> None:
        self.no_range.add(path)

    def publish(self, source: str, files: dict[str, bytes]) -> dict:
        """Serve every file under /<source>/<name>; return a urls_override with their md5s
        (the fake files are not the published ones, so the registry's checksums cannot apply)."""
        return {name: {"url": self.add(f"{source}/{name}", data), "md5": md5(data), "size": len(data)}
                for name, data in files.items()}

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def fake_server():
    server = FakeServer()
    try:
        yield server
    finally:
        server.close()
