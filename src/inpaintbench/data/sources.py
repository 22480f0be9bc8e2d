"""Registry of the real datasets and mask sets: where each file comes from, how to check it,
what licence governs it and how it is laid out once extracted.

Facts come from /work/shared/SOURCES.md (URLs, md5s and sizes as torchvision and the dataset
pages publish them). `fetch.py` downloads what is listed here; `prepare.py` and
`masks/nvidia.py` read the extracted layouts named here. Nothing in this module touches the
network or the disk.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import InpaintBenchError

#: Google Drive's direct-download endpoint; `confirm=t` skips the "cannot scan for viruses"
#: page for large files. Drive still serves an HTML quota page when the file's daily quota is
#: spent: fetch.py detects that page and says what to do.
GDRIVE_URL = "https://drive.usercontent.google.com/download?id={id}&export=download&confirm=t"


@dataclass(frozen=True)
class RemoteFile:
    """One file a source needs.

    `kind` is what the bytes must be: "zip", "tar" (plain or compressed; DTD's .tar.gz is in
    fact an uncompressed tar, so the kind is sniffed from content, never from the name) or
    "text". Archives are extracted into the source's folder; text files are kept as they are.
    A file with neither md5 nor sha256 has no published checksum: its sha256 is recorded the
    first time it is downloaded (``<name>.sha256`` beside it) and checked from then on.
    """

    name: str
    urls: tuple[str, ...]
    kind: str
    md5: str | None = None
    sha256: str | None = None
    size: int | None = None
    note: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ("zip", "tar", "text"):
            raise ValueError(f"unknown kind {self.kind!r} for {self.name}")

    @property
    def published_checksum(self) -> bool:
        return bool(self.md5 or self.sha256)


@dataclass(frozen=True)
class Source:
    """A dataset or mask set as a whole.

    `terms` is shown to the user before the first download and must be accepted explicitly
    (fetch.py: `accept_terms`, the env var INPAINTBENCH_ACCEPT_TERMS, or the CLI flag);
    `None` means an open licence that needs no acceptance. `user_folder` marks a dataset
    with no public download (Paris StreetView): the user fills that folder by hand.
    """

    name: str
    title: str
    kind: str  # "images" or "masks"
    licence: str
    homepage: str
    files: tuple[RemoteFile, ...] = ()
    terms: str | None = None
    user_folder: str | None = None
    layout: dict = field(default_factory=dict)
    description: str = ""

    def file(self, name: str) -> RemoteFile:
        for f in self.files:
            if f.name == name:
                return f
        raise KeyError(name)


_CELEBA_TERMS = (
    "CelebA (The Chinese University of Hong Kong, MMLAB) is available for NON-COMMERCIAL "
    "RESEARCH PURPOSES ONLY. You agree not to reproduce, duplicate, copy, sell, trade, resell "
    "or exploit for any commercial purposes any portion of the images or derived data, and "
    "not to further copy, publish or distribute any portion of the dataset. The images are "
    "collected from the Internet and are not the property of MMLAB. Full agreement: "
    "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"
)
_PLACES_TERMS = (
    "Places365 (MIT CSAIL) is provided for NON-COMMERCIAL RESEARCH AND EDUCATIONAL PURPOSES "
    "only. The images are not owned by MIT; you accept full responsibility for your use of the "
    "data and shall defend and indemnify MIT against any claims arising from it. Terms: "
    "http://places2.csail.mit.edu/download.html"
)
_DTD_TERMS = (
    "The Describable Textures Dataset (Oxford VGG) is made available for RESEARCH PURPOSES "
    "only; the images come from Flickr and remain the property of their owners. Terms: "
    "https://www.robots.ox.ac.uk/~vgg/data/dtd/"
)
_NVIDIA_TERMS = (
    "The NVIDIA Irregular Mask Dataset (testing set, Liu et al. 2018) is licensed under "
    "CC BY-NC-SA 4.0 (NON-COMMERCIAL, share-alike; attribution required) and is 'used for "
    "research purpose only'. Licence: https://creativecommons.org/licenses/by-nc-sa/4.0/"
)

_PLACES_BASE = "http://data.csail.mit.edu/places/places365/"

SOURCES: dict[str, Source] = {}


def _add(src: Source) -> None:
    SOURCES[src.name] = src


_add(Source(
    name="celeba",
    title="CelebA, aligned & cropped (178x218 JPEG, 202,599 faces)",
    kind="images",
    licence="non-commercial research only (CelebA agreement)",
    homepage="https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html",
    terms=_CELEBA_TERMS,
    files=(
        RemoteFile(
            name="img_align_celeba.zip",
            urls=(
                "https://s3.amazonaws.com/pytorch-tutorial-assets/img_align_celeba.zip",
                GDRIVE_URL.format(id="0B7EVK8r0v71pZjFTYXZWM3FlRnM"),
            ),
            kind="zip",
            md5="00d2c5bc6d35e252742224ab0c1e8fcb",
            sha256="46fb89443c578308acf364d7d379fe1b9efb793042c0af734b6112e4fd3a8c74",
            size=1_443_490_838,
        ),
        RemoteFile(
            name="list_eval_partition.txt",
            urls=(GDRIVE_URL.format(id="0B7EVK8r0v71pY0NSMzRuSXJEVkk"),),
            kind="text",
            md5="d32c9cbf5e040fd4025c592c306e6668",
            size=2_836_386,
            note="0/1/2 = train/val/test (162,770 / 19,867 / 19,962)",
        ),
        RemoteFile(
            name="list_attr_celeba.txt",
            urls=(GDRIVE_URL.format(id="0B7EVK8r0v71pblRyaVFSWGxPY0U"),),
            kind="text",
            md5="75e246fa4810816ffd6ee81facbd244c",
            size=26_721_026,
            note="40 binary attributes (-1/1)",
        ),
    ),
    layout={"images": "img_align_celeba", "partition": "list_eval_partition.txt",
            "attributes": "list_attr_celeba.txt"},
))

_PLACES_FILELIST = RemoteFile(
    name="filelist_places365-standard.tar",
    urls=(_PLACES_BASE + "filelist_places365-standard.tar",),
    kind="tar",
    md5="35a0585fee1fa656440f3ab298f8479c",
    size=67_498_496,
    note="categories_places365.txt, places365_train_standard.txt, places365_val.txt",
)
_PLACES_VAL = RemoteFile(
    name="val_256.tar",
    urls=(_PLACES_BASE + "val_256.tar",),
    kind="tar",
    md5="e27b17d8d44f4af9a78502beb927f808",
    size=525_158_400,
    note="36,500 validation images, 256x256, in val_256/",
)
_PLACES_TRAIN = RemoteFile(
    name="train_256_places365standard.tar",
    urls=(_PLACES_BASE + "train_256_places365standard.tar",),
    kind="tar",
    md5="53ca1c756c3d1e7809517cc47c5561c5",
    size=26_103_685_120,
    note="1,803,460 training images, 256x256, in data_256/<letter>/<category>/",
)
_PLACES_LAYOUT = {"categories": "categories_places365.txt",
                  "train_list": "places365_train_standard.txt",
                  "val_list": "places365_val.txt",
                  "train_images": "data_256", "val_images": "val_256"}

_add(Source(
    name="places365",
    title="Places365-Standard, small images (256x256): train + val",
    kind="images",
    licence="non-commercial research and education (MIT CSAIL terms)",
    homepage="http://places2.csail.mit.edu/download.html",
    terms=_PLACES_TERMS,
    files=(_PLACES_FILELIST, _PLACES_VAL, _PLACES_TRAIN),
    layout=_PLACES_LAYOUT,
    description="26 GB training archive; the category subset is chosen at prepare time.",
))
_add(Source(
    name="places365-val",
    title="Places365-Standard, small images (256x256): validation set only",
    kind="images",
    licence="non-commercial research and education (MIT CSAIL terms)",
    homepage="http://places2.csail.mit.edu/download.html",
    terms=_PLACES_TERMS,
    files=(_PLACES_FILELIST, _PLACES_VAL),
    layout=_PLACES_LAYOUT,
    description="525 MB; 100 images per category. For quick runs without the 26 GB archive.",
))

_add(Source(
    name="dtd",
    title="Describable Textures Dataset r1.0.1 (5,640 images, 47 classes)",
    kind="images",
    licence="research purposes only (Oxford VGG)",
    homepage="https://www.robots.ox.ac.uk/~vgg/data/dtd/",
    terms=_DTD_TERMS,
    files=(
        RemoteFile(
            name="dtd-r1.0.1.tar.gz",
            urls=("https://www.robots.ox.ac.uk/~vgg/data/dtd/download/dtd-r1.0.1.tar.gz",),
            kind="tar",
            md5="fff73e5086ae6bdbea199a49dfb8a4c1",
            size=625_239_812,
            note="named .tar.gz but really an uncompressed tar",
        ),
    ),
    layout={"images": "dtd/images", "labels": "dtd/labels"},
))

_add(Source(
    name="urban100",
    title="Urban100 HR (100 urban scenes, test only)",
    kind="images",
    licence="images from Flickr under CC licences (CC BY 4.0 per the Hugging Face card)",
    homepage="https://github.com/jbhuang0604/SelfExSR",
    files=(
        RemoteFile(
            name="Urban100_HR.tar.gz",
            urls=("https://huggingface.co/datasets/eugenesiow/Urban100/resolve/main/data/Urban100_HR.tar.gz",),
            kind="tar",
            note="no published checksum: sha256 recorded on first download",
        ),
    ),
    layout={"images": "Urban100_HR"},
))

_add(Source(
    name="paris-streetview",
    title="Paris StreetView (Doersch et al. 2012; 14,900 train + 100 test)",
    kind="images",
    licence="by request to the authors (research use); no public link",
    homepage="https://github.com/pathak22/context-encoder",
    user_folder="data/user/paris_streetview",
    layout={"train": ("paris_train_original", "train"), "test": ("paris_eval_gt", "test")},
    description=(
        "No public download: e-mail the Context Encoders authors (Pathak et al., "
        "https://github.com/pathak22/context-encoder#paris-streetview) for the archive, then "
        "put the training images in <folder>/paris_train_original/ (or <folder>/train/) and "
        "the 100 test images in <folder>/paris_eval_gt/ (or <folder>/test/)."
    ),
))

_add(Source(
    name="nvidia-irregular-test",
    title="NVIDIA Irregular Mask Dataset, testing set (12,000 masks, 512x512)",
    kind="masks",
    licence="CC BY-NC-SA 4.0",
    homepage="https://nv-adlr.github.io/publication/partialconv-inpainting",
    terms=_NVIDIA_TERMS,
    files=(
        RemoteFile(
            name="test_mask.zip",
            urls=("https://www.dropbox.com/s/01dfayns9s0kevy/test_mask.zip?dl=1",),
            kind="zip",
            note="no published checksum: sha256 recorded on first download",
        ),
    ),
    # white strokes = hole; 6 ratio bins x (border / no border) x 1,000, index->bin mapping
    # undocumented, so the hole ratio is recomputed on import.
    layout={"splits": {"test": "mask/testing_mask_dataset"}, "hole": "white"},
))

_add(Source(
    name="qd-imd",
    title="QD-IMD, Quick Draw Irregular Mask Dataset (50,000 train + 10,000 test, 512x512)",
    kind="masks",
    licence="MIT (code) + CC BY 4.0 (Quick Draw strokes)",
    homepage="https://github.com/karfly/qd-imd",
    files=(
        RemoteFile(
            name="qd_imd.tar.gz",
            urls=("https://www.dropbox.com/s/ui4zgw7dhe9v1ju/qd_imd.tar.gz?dl=1",),
            kind="tar",
            note="no published checksum: sha256 recorded on first download",
        ),
    ),
    # hole = BLACK in this set (the generator counts `mask == False` as the hole).
    layout={"splits": {"train": "qd_imd/train", "test": "qd_imd/test"}, "hole": "black"},
))


def get_source(name: str) -> Source:
    try:
        return SOURCES[name]
    except KeyError:
        raise InpaintBenchError(
            f"unknown data source {name!r}; known sources: {', '.join(sorted(SOURCES))}."
        ) from None
