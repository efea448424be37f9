"""What handgrad knows about each dataset: names, file names, checksums, class names and mirrors.

Checksums are the SHA-256 of the **decompressed** IDX file (header + payload), so a recompressed copy
verifies like the original. The values for MNIST and Fashion-MNIST are the published ones; those of the
bundled ``mnist-sample`` are read from ``data/mnist-sample/manifest.json``, written by
``scripts/build_mnist_sample.py``.
"""

from __future__ import annotations

import json
import pathlib
from dataclasses import dataclass, field

from .errors import DatasetError

DIGITS = [str(d) for d in range(10)]
FASHION_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]

#: Where the bundled files live inside the installed package.
BUNDLED_DIR = pathlib.Path(__file__).resolve().parent / "data"
SAMPLE_DIR = BUNDLED_DIR / "mnist-sample"

#: The file stems per split: (images, labels).
STEMS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset: its class names, the decompressed SHA-256 per file stem, mirrors and extra folders.

    ``kind`` is ``"files"`` (looked up on disk, downloaded if missing), ``"bundled"`` (shipped in the
    package) or ``"generated"`` (made on the fly). ``mirrors`` are base URLs to which ``<stem>.gz`` is
    appended; ``system_dirs`` are folders searched after the user cache (they hold the files directly).
    """

    name: str
    classes: list
    kind: str
    sha256: dict = field(default_factory=dict)
    mirrors: tuple = ()
    system_dirs: tuple = ()
    description: str = ""


REGISTRY = {
    "mnist": DatasetSpec(
        name="mnist",
        classes=DIGITS,
        kind="files",
        sha256={
            "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        },
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
        description="MNIST handwritten digits (LeCun, Cortes & Burges; CC BY-SA 3.0), 60,000 + 10,000",
    ),
    "fashion-mnist": DatasetSpec(
        name="fashion-mnist",
        classes=FASHION_CLASSES,
        kind="files",
        sha256={
            "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
        mirrors=(
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        ),
        system_dirs=("/usr/share/datasets/fashion-mnist",),
        description="Fashion-MNIST clothing images (Zalando Research; MIT), 60,000 + 10,000",
    ),
    "mnist-sample": DatasetSpec(
        name="mnist-sample",
        classes=DIGITS,
        kind="bundled",
        description="a stratified subset of real MNIST bundled with handgrad (6,000 + 1,000)",
    ),
    "synthetic": DatasetSpec(
        name="synthetic",
        classes=DIGITS,
        kind="generated",
        description="seven-segment block digits with noise, generated from a seed (6,000 + 1,000 by default)",
    ),
}

#: The names :func:`handgrad.datasets.load_dataset` accepts.
DATASET_NAMES = tuple(REGISTRY)


def get_spec(name):
    """The :class:`DatasetSpec` for ``name``, or a :class:`DatasetError` listing the known names."""
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        raise DatasetError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASET_NAMES)}") from None


def class_names(name):
    """The class names of dataset ``name``, index = label (``"0"`` … ``"9"`` for the digit sets)."""
    return list(get_spec(name).classes)


def sample_manifest():
    """The bundled sample's manifest (file names, decompressed SHA-256 sums, counts, how it was built)."""
    path = SAMPLE_DIR / "manifest.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DatasetError(
            f"the bundled mnist-sample is missing or damaged ({path}: {e}); reinstall handgrad or rebuild it "
            "with scripts/build_mnist_sample.py"
        ) from e
