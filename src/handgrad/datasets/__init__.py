"""Datasets for the application: a registry in which each dataset knows its example shape, classes and kind
of data, IDX files, verified downloads, a bundled sample, synthetic digits and coloured shapes, and the
preprocessing of the user's own images (MNIST-style for digits, a plain resize for colour images).

Application support, not a chapter of the book: it uses the standard library and NumPy (plus Pillow for
images and tqdm for progress bars, both imported only when needed) and never imports ``handgrad.app``.
Text corpora for character language models are in :mod:`.text`.

>>> X, y = load_dataset("mnist-sample", split="test")
>>> X.shape, X.dtype, y.dtype
((1000, 28, 28), dtype('uint8'), dtype('int64'))
"""

from .download import cache_dir, download_file, payload_sha256
from .errors import ChecksumError, DatasetError, DatasetNotFoundError
from .idx import MAX_IDX_BYTES, read_idx, write_idx
from .images import load_image, preprocess_image
from .loaders import Splits, default_val_size, load_dataset, load_splits, search_roots
from .registry import DatasetSpec, class_names, dataset_names, get_spec, register_dataset
from .synthetic import make_synthetic_color, make_synthetic_digits
from .text import TextSplits, encode, load_text, read_text, split_text


def __getattr__(name):
    if name == "DATASET_NAMES":  # the registered names at the time of asking (register_dataset adds one)
        return dataset_names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DATASET_NAMES",
    "MAX_IDX_BYTES",
    "ChecksumError",
    "DatasetError",
    "DatasetNotFoundError",
    "DatasetSpec",
    "Splits",
    "TextSplits",
    "cache_dir",
    "class_names",
    "dataset_names",
    "default_val_size",
    "download_file",
    "encode",
    "get_spec",
    "load_dataset",
    "load_image",
    "load_splits",
    "load_text",
    "make_synthetic_color",
    "make_synthetic_digits",
    "payload_sha256",
    "preprocess_image",
    "read_idx",
    "read_text",
    "register_dataset",
    "search_roots",
    "split_text",
    "write_idx",
]
