"""What handgrad knows about each dataset: its example shape, class names and kind of data, where it comes
from (file names, checksums and mirrors, or the function that generates it).

A dataset joins with :func:`register_dataset`; :data:`DATASET_NAMES` (here and in
:mod:`handgrad.datasets`) always lists the registered names, so the command line offers a new dataset as
soon as it is registered.

Checksums are the SHA-256 of the **decompressed** IDX file (header + payload), so a recompressed copy
verifies like the original. The values for MNIST and Fashion-MNIST are the published ones; those of the
bundled ``mnist-sample`` are read from ``data/mnist-sample/manifest.json``, written by
``scripts/build_mnist_sample.py``.
"""

from __future__ import annotations

import json
import numbers
import pathlib
from collections.abc import Callable
from dataclasses import dataclass, field

from .errors import DatasetError
from .synthetic import COLOR_CLASSES, COLOR_SHAPE, make_synthetic_color, make_synthetic_digits

DIGITS = ("0", "1", "2", "3", "4", "5", "6", "7", "8", "9")
FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
#: The example shape of MNIST and Fashion-MNIST (and of the synthetic digits made in their image): 28x28
#: grayscale.
MNIST_SHAPE = (28, 28)
#: Kinds of data a dataset can hold: "images" are (H, W) grayscale or (C, H, W) channels first; "text" is
#: a UTF-8 corpus for character language models (:mod:`handgrad.datasets.text`), one file.
KINDS = ("images", "text")
#: Where a dataset's examples come from.
SOURCES = ("files", "bundled", "generated")

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
    """One dataset: what its examples are and where they come from.

    ``input_shape`` is one example's shape (``(28, 28)`` for MNIST, ``(3, 16, 16)`` for colour images,
    channels first); ``classes`` are the class names, index = label (so ``n_classes`` is their number);
    ``kind`` is the kind of data, one of :data:`KINDS`. ``source`` is ``"files"`` (looked up on disk,
    downloaded if missing), ``"bundled"`` (shipped in the package) or ``"generated"`` (made on the fly by
    ``generator(n, seed) -> (X uint8 (n, *input_shape), y int64 (n,))``, ``sizes[split]`` examples per split).
    ``sha256`` maps each file stem to its decompressed SHA-256; ``mirrors`` are base URLs to which
    ``<stem>.gz`` is appended; ``system_dirs`` are folders searched after the user cache (they hold the
    files directly). A malformed spec raises :class:`DatasetError` when it is made.
    """

    name: str
    classes: tuple
    source: str
    input_shape: tuple
    kind: str = "images"
    sha256: dict = field(default_factory=dict)
    mirrors: tuple = ()
    system_dirs: tuple = ()
    generator: Callable | None = None
    sizes: dict = field(default_factory=dict)
    description: str = ""
    file: str = ""

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise DatasetError(f"a dataset name must be a non-empty string, got {self.name!r}")
        if self.kind == "text":
            if self.source not in ("files", "bundled") or not self.file or self.classes or self.input_shape:
                raise DatasetError(
                    f"dataset {self.name}: a text dataset is one file (source 'files' or "
                    "'bundled', a file name) with no classes or input_shape"
                )
            object.__setattr__(self, "classes", ())
            object.__setattr__(self, "input_shape", ())
            return
        classes = tuple(str(c) for c in self.classes)
        if len(classes) < 2 or len(set(classes)) != len(classes):
            raise DatasetError(f"dataset {self.name}: needs two or more distinct class names, got {classes}")
        shape = tuple(self.input_shape)
        if not 2 <= len(shape) <= 3 or not all(
            isinstance(d, numbers.Integral) and not isinstance(d, bool) and d > 0 for d in shape
        ):
            raise DatasetError(
                f"dataset {self.name}: input_shape must be (H, W) or (C, H, W) of positive "
                f"integers, got {self.input_shape!r}"
            )
        if self.kind not in KINDS:
            raise DatasetError(
                f"dataset {self.name}: kind must be one of {', '.join(KINDS)}, got {self.kind!r}"
            )
        if self.source not in SOURCES:
            raise DatasetError(
                f"dataset {self.name}: source must be one of {', '.join(SOURCES)}, got {self.source!r}"
            )
        generated = self.source == "generated"
        if generated and (not callable(self.generator) or set(self.sizes) != {"train", "test"}):
            raise DatasetError(
                f"dataset {self.name}: a generated dataset needs a generator(n, seed) and "
                "sizes for 'train' and 'test'"
            )
        object.__setattr__(self, "classes", classes)
        object.__setattr__(self, "input_shape", tuple(int(d) for d in shape))

    @property
    def n_classes(self) -> int:
        """The number of classes (labels are 0 … n_classes − 1)."""
        return len(self.classes)


REGISTRY = {
    "mnist": DatasetSpec(
        name="mnist",
        classes=DIGITS,
        source="files",
        input_shape=MNIST_SHAPE,
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
        source="files",
        input_shape=MNIST_SHAPE,
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
        source="bundled",
        input_shape=MNIST_SHAPE,
        description="a stratified subset of real MNIST bundled with handgrad (6,000 + 1,000)",
    ),
    "synthetic": DatasetSpec(
        name="synthetic",
        classes=DIGITS,
        source="generated",
        input_shape=MNIST_SHAPE,
        generator=make_synthetic_digits,
        sizes={"train": 6000, "test": 1000},
        description="seven-segment block digits with noise, generated from a seed (6,000 + 1,000 by default)",
    ),
    "synthetic-color": DatasetSpec(
        name="synthetic-color",
        classes=COLOR_CLASSES,
        source="generated",
        input_shape=COLOR_SHAPE,
        generator=make_synthetic_color,
        sizes={"train": 3000, "test": 600},
        description="coloured shapes on a dark background with noise, 3x16x16, generated from a seed "
        "(3,000 + 600)",
    ),
    "fortunes": DatasetSpec(
        name="fortunes",
        classes=(),
        source="files",
        input_shape=(),
        kind="text",
        file="text/fortunes.txt.gz",
        description="31 collections of the BSD fortune program's sayings (Debian's fortunes and "
        "fortunes-min, BSD licence), 2.2 MB of UTF-8: <root>/text/fortunes.txt.gz",
    ),
    "fortunes-min": DatasetSpec(
        name="fortunes-min",
        classes=(),
        source="bundled",
        input_shape=(),
        kind="text",
        file="text/fortunes",
        description="the 'fortunes' collection of Debian's fortunes-min (BSD licence), 24 KB, bundled",
    ),
}


def register_dataset(spec):
    """Add (or replace) the dataset ``spec`` describes under its name; returns it.

    It is then loadable by :func:`~handgrad.datasets.load_splits` and listed in :data:`DATASET_NAMES`.
    """
    if not isinstance(spec, DatasetSpec):
        raise TypeError(f"register_dataset expects a DatasetSpec, got {type(spec).__name__}")
    REGISTRY[spec.name] = spec
    return spec


def dataset_names():
    """The registered dataset names, in registration order."""
    return tuple(REGISTRY)


def __getattr__(name):
    if name == "DATASET_NAMES":  # computed on each access, so a registered dataset is listed at once
        return dataset_names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def get_spec(name):
    """The :class:`DatasetSpec` for ``name``, or a :class:`DatasetError` listing the known names."""
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        raise DatasetError(f"unknown dataset {name!r}; choose one of: {', '.join(dataset_names())}") from None


def class_names(name):
    """The class names of dataset ``name``, index = label (``"0"``, ``"1"``, … for the digit sets)."""
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
