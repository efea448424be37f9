"""Finding, verifying and loading the datasets; the float32 train/validation/test splits.

Where files are looked for, in order (each root holds one folder per dataset, e.g. ``<root>/mnist/``):

1. the ``data_dir`` argument (the application's ``--data-dir``),
2. the ``HANDGRAD_DATA`` environment variable,
3. the user cache, ``$XDG_CACHE_HOME/handgrad`` or ``~/.cache/handgrad`` (where downloads go),
4. for Fashion-MNIST, Debian's ``/usr/share/datasets/fashion-mnist/``
   (``apt-get install dataset-fashion-mnist``).

Each file may be named ``train-images-idx3-ubyte.gz``, ``train-images-idx3-ubyte``,
``train-images.idx3-ubyte.gz`` or ``train-images.idx3-ubyte``; each file is looked up on its own, the
first hit wins. Files that are missing everywhere are downloaded into the cache when ``download=True``.

Every file is verified on every load against the SHA-256 of its decompressed content: the digest is
computed while the file is read, which adds about 0.1 s to loading full MNIST, and it means a damaged or
mislabelled file can never be used silently (a mismatch raises :class:`ChecksumError` naming the file and
both digests).
"""

from __future__ import annotations

import os
import pathlib
from typing import NamedTuple

import numpy as np

from .._checks import check_choice, check_int
from . import download as _download
from . import registry
from .errors import ChecksumError, DatasetError, DatasetNotFoundError
from .idx import read_idx_with_sha256

SPLITS = ("train", "test")
#: Validation images held out of a full-size training set.
FULL_VAL_SIZE = 10_000


def search_roots(data_dir=None):
    """The root folders searched, in order (before any dataset-specific system folders)."""
    roots = []
    if data_dir is not None:
        roots.append(pathlib.Path(data_dir).expanduser())
    env = os.environ.get("HANDGRAD_DATA")
    if env:
        roots.append(pathlib.Path(env).expanduser())
    roots.append(_download.cache_dir())
    return roots


def candidate_folders(name, data_dir=None):
    spec = registry.get_spec(name)
    return [root / name for root in search_roots(data_dir)] + [pathlib.Path(d) for d in spec.system_dirs]


def file_variants(stem):
    """Accepted file names for a stem: ``train-images-idx3-ubyte(.gz)``, ``train-images.idx3-ubyte(.gz)``."""
    dotted = stem.replace("-idx", ".idx", 1)
    return [stem + ".gz", stem, dotted + ".gz", dotted]


def find_file(stem, folders):
    for folder in folders:
        for variant in file_variants(stem):
            path = folder / variant
            if path.is_file():
                return path
    return None


def _not_found_message(name, stems, folders, reason):
    wanted = ", ".join(s + ".gz" for s in stems)
    looked = "\n  ".join(str(f) for f in folders)
    return (
        f"{name}: {reason}. Looked for {wanted} in:\n  {looked}\n"
        f"Provide the files by putting them in <DIR>/{name}/ and setting HANDGRAD_DATA=<DIR> (or passing "
        f"--data-dir <DIR>), or let handgrad download them into {_download.cache_dir() / name} "
        "(needs network access)."
    )


def _read_verified(path, expected):
    array, found = read_idx_with_sha256(path)
    if expected is not None and found != expected:
        raise ChecksumError(
            f"{path}: SHA-256 of the decompressed file is {found}, expected {expected}; the file is damaged "
            "or not the one its name says (delete it to download a fresh copy)"
        )
    return array


def _check_pair(X, y, where, spec):
    """Images uint8 (n, *spec.input_shape) and labels in 0 … n_classes − 1 (uint8 in IDX files, any
    integer type from a generator), the same number of each; returns (X, y as int64)."""
    shape = spec.input_shape
    if X.shape[1:] != shape or X.dtype != np.uint8:
        wanted = ", ".join(map(str, ("n", *shape)))
        raise DatasetError(
            f"{where}: images must be uint8 ({wanted}) for {spec.name}, got {X.dtype} {X.shape}"
        )
    if y.ndim != 1 or y.dtype.kind not in "iu" or (spec.source != "generated" and y.dtype != np.uint8):
        raise DatasetError(
            f"{where}: labels must be {'integers' if spec.source == 'generated' else 'uint8'} "
            f"(n,), got {y.dtype} {y.shape}"
        )
    if len(X) != len(y):
        raise DatasetError(f"{where}: {len(X):,} images but {len(y):,} labels; the counts must agree")
    if len(y) and (y.min() < 0 or y.max() >= spec.n_classes):
        bad = int(y.min()) if y.min() < 0 else int(y.max())
        raise DatasetError(
            f"{where}: labels must be 0-{spec.n_classes - 1} ({spec.n_classes} classes), found {bad}"
        )
    return X, y.astype(np.int64)


def _load_files(name, data_dir, split, download, progress):
    spec = registry.get_spec(name)
    stems = registry.STEMS[split]
    folders = candidate_folders(name, data_dir)
    paths = [find_file(stem, folders) for stem in stems]
    missing = [stem for stem, path in zip(stems, paths) if path is None]
    if missing and not download:
        raise DatasetNotFoundError(
            _not_found_message(name, missing, folders, "files not found and download=False")
        )
    for i, stem in enumerate(stems):
        if paths[i] is None:
            urls = [base + stem + ".gz" for base in spec.mirrors]
            target = _download.cache_dir() / name / (stem + ".gz")
            try:
                paths[i] = _download.download_file(urls, target, spec.sha256[stem], progress=progress)
            except DatasetNotFoundError as e:
                raise DatasetNotFoundError(
                    _not_found_message(name, missing, folders, f"files not found ({e})")
                ) from e
    X = _read_verified(paths[0], spec.sha256[stems[0]])
    y = _read_verified(paths[1], spec.sha256[stems[1]])
    return _check_pair(X, y, f"{name} {split} ({paths[0]}, {paths[1]})", spec)


def _load_sample(spec, split):
    manifest = registry.sample_manifest()
    stems = registry.STEMS[split]
    arrays = []
    for stem in stems:
        entry = manifest["files"][stem]
        arrays.append(_read_verified(registry.SAMPLE_DIR / entry["file"], entry["sha256"]))
    return _check_pair(arrays[0], arrays[1], f"{spec.name} {split}", spec)


def load_dataset(name, data_dir=None, split="train", download=True, *, progress=None, seed=0):
    """Load one split of a dataset as ``(X uint8 (n, *input_shape), y int64 (n,))``, ``input_shape`` being
    the dataset's (``get_spec(name).input_shape``: ``(28, 28)`` for the MNIST family, channels first for
    colour images such as ``synthetic-color``'s ``(3, 16, 16)``).

    Parameters
    ----------
    name : one of :data:`DATASET_NAMES` (``mnist``, ``fashion-mnist``, ``mnist-sample``, ``synthetic``,
        ``synthetic-color`` and any registered with :func:`register_dataset`)
    data_dir : path, optional
        A root folder holding ``<name>/`` sub-folders, searched first (see the module docstring).
    split : ``"train"`` or ``"test"``
    download : bool
        Download missing files into the user cache; with ``False`` a missing file raises
        :class:`DatasetNotFoundError`.
    progress : bool or None
        Download progress bar (``None``: only on a terminal).
    seed : int
        Only for generated datasets: the training set is ``generator(sizes["train"], seed)`` and the test
        set ``generator(sizes["test"], [seed, 1])``, so the two never coincide (for ``synthetic``:
        ``make_synthetic_digits(6000, seed)`` and ``make_synthetic_digits(1000, [seed, 1])``).

    Raises
    ------
    DatasetNotFoundError
        The files are nowhere and could not be downloaded; the message says where it looked and what to do.
    ChecksumError, DatasetError
        A file is malformed or fails verification, the images are not of the dataset's shape, a label is
        outside its classes, or the image and label counts disagree.
    """
    spec = registry.get_spec(name)
    if spec.kind == "text":
        raise DatasetError(
            f"{name} is a text corpus, not a dataset of images: train a character language "
            f"model on it (handgrad train --model lstm --dataset {name})"
        )
    check_choice(split, "split", SPLITS)
    if spec.source == "generated":
        X, y = spec.generator(spec.sizes[split], seed if split == "train" else [seed, 1])
        return _check_pair(np.asarray(X), np.asarray(y), f"{name} {split} (generated)", spec)
    if spec.source == "bundled":
        return _load_sample(spec, split)
    return _load_files(name, data_dir, split, download, progress)


class Splits(NamedTuple):
    """A dataset ready for training: ``train``, ``val`` and ``test`` are each ``(X, y)`` with X float32
    ``(n, *input_shape)`` in [0, 1] and y int64 ``(n,)``; ``classes`` are the class names (index = label);
    ``spec`` is the dataset's :class:`~handgrad.datasets.registry.DatasetSpec`, whose ``input_shape``,
    ``n_classes`` and ``kind`` are also read here directly."""

    name: str
    classes: list
    train: tuple
    val: tuple
    test: tuple
    spec: registry.DatasetSpec

    @property
    def input_shape(self) -> tuple:
        """One example's shape, e.g. ``(28, 28)`` or ``(3, 16, 16)``."""
        return self.spec.input_shape

    @property
    def n_classes(self) -> int:
        return self.spec.n_classes

    @property
    def kind(self) -> str:
        """The kind of data (``"images"``)."""
        return self.spec.kind


def default_val_size(n_train):
    """``min(10,000, n_train // 6)``: the standard 50,000/10,000 split for full MNIST and Fashion-MNIST,
    and one sixth of a small training set (1,000 of the 6,000 of ``mnist-sample`` and ``synthetic``)."""
    return min(FULL_VAL_SIZE, n_train // 6)


def to_float(X):
    """uint8 pixels -> float32 in [0, 1] (x / 255)."""
    out = X.astype(np.float32)
    out /= 255.0
    return out


def load_splits(name, data_dir=None, download=True, val_size=None, *, progress=None, seed=0):
    """Load ``name`` as float32 train/validation/test splits (a :class:`Splits`).

    The validation set is the **last** ``val_size`` images of the official training set (not a random
    split), so it is the same on every machine and for every seed; the default is
    :func:`default_val_size` (10,000 for the full datasets, one sixth for the small ones). The bundled
    ``mnist-sample`` is ordered so that its last 1,000 training images hold exactly 100 per class.
    ``val_size=0`` keeps every training image for training (``val`` is then empty). Every ``X`` is float32
    in [0, 1] of shape ``(n, *input_shape)``, whatever the dataset's shape.
    """
    X_train, y_train = load_dataset(name, data_dir, "train", download, progress=progress, seed=seed)
    X_test, y_test = load_dataset(name, data_dir, "test", download, progress=progress, seed=seed)
    n = len(X_train)
    if val_size is None:
        val_size = default_val_size(n)
    val_size = check_int(val_size, f"val_size for {name} ({n:,} training images)", low=0, high=n - 1)
    cut = n - val_size
    X = to_float(X_train)
    spec = registry.get_spec(name)
    return Splits(
        name=name,
        classes=list(spec.classes),
        train=(X[:cut], y_train[:cut]),
        val=(X[cut:], y_train[cut:]),
        test=(to_float(X_test), y_test),
        spec=spec,
    )
