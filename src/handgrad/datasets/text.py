"""Text corpora for character-level language models: reading UTF-8 text, the vocabulary, contiguous splits.

A corpus is one UTF-8 file (gzip-compressed or not), from a path (``handgrad train --text FILE``) or a
registered dataset of kind ``"text"`` (``fortunes``, found as ``<root>/text/fortunes.txt.gz`` under the
dataset roots — ``--data-dir``, ``HANDGRAD_DATA``, the cache —, and ``fortunes-min``, bundled). It is split
into three **contiguous** parts, the first 90% for training, the next 5% for validation and the last 5%
for testing, so the held-out text is text the model has never read, not characters interleaved with it.

The vocabulary is the sorted set of the characters of the training part (id = index); a character of the
held-out parts that the training part lacks cannot be predicted, so it is left out of them and counted
(``TextSplits.dropped``). Each part is an int32 array of character ids.

>>> s = split_text("abcabcabc" * 20 + "xyz")
>>> s.vocab, len(s.train), len(s.val), len(s.test), s.dropped
('abc', 165, 9, 6, 3)
"""

from __future__ import annotations

import gzip
import pathlib
import zlib
from typing import NamedTuple

import numpy as np

from . import registry
from .errors import DatasetError, DatasetNotFoundError

__all__ = ["TextSplits", "read_text", "encode", "split_text", "load_text", "VAL_FRACTION", "TEST_FRACTION"]

VAL_FRACTION = 0.05
TEST_FRACTION = 0.05
MAX_TEXT_BYTES = 512 * 2**20  # a corpus is read whole into memory


class TextSplits(NamedTuple):
    """A corpus ready for a language model: ``train``, ``val`` and ``test`` are int32 character ids,
    ``vocab`` the characters (id = index), ``dropped`` the held-out characters outside the vocabulary,
    ``name`` the dataset name or the file's path."""

    name: str
    vocab: str
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    dropped: int = 0


def read_text(path) -> str:
    """The text of a UTF-8 file (gzip-compressed when it starts with gzip's magic bytes).

    DatasetError, one line each, for a missing or unreadable file, an empty one, and one that is not
    UTF-8 text (invalid UTF-8, or NUL bytes: a binary file), naming the byte offset of the first fault.
    """
    path = pathlib.Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            with gzip.open(path, "rb") as f:
                raw = f.read(MAX_TEXT_BYTES + 1)
    except FileNotFoundError:
        raise DatasetNotFoundError(f"text file {path} not found") from None
    except IsADirectoryError:
        raise DatasetError(f"{path} is a folder; --text takes a UTF-8 text file") from None
    except (OSError, EOFError, zlib.error) as err:
        raise DatasetError(f"cannot read {path}: {getattr(err, 'strerror', None) or err}") from None
    if len(raw) > MAX_TEXT_BYTES:
        raise DatasetError(
            f"{path} holds more than {MAX_TEXT_BYTES // 2**20} MB of text; use a smaller corpus"
        )
    if not raw.strip():
        raise DatasetError(
            f"{path} is empty{' (only white space)' if raw else ''}; a language model needs text"
        )
    nul = raw.find(b"\x00")
    if nul >= 0:
        raise DatasetError(
            f"{path} is not a text file (a NUL byte at offset {nul:,}: binary data); --text takes UTF-8 text"
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DatasetError(
            f"{path} is not UTF-8 text (invalid byte 0x{raw[err.start]:02x} at offset "
            f"{err.start:,}); convert it to UTF-8 first, e.g. with iconv"
        ) from None


def encode(text, vocab, what="text"):
    """int32 ids of ``text``'s characters in ``vocab``; DatasetError naming the first unknown character."""
    index = {c: i for i, c in enumerate(vocab)}
    try:
        return np.fromiter((index[c] for c in text), dtype=np.int32, count=len(text))
    except KeyError as err:
        c = err.args[0]
        raise DatasetError(
            f"{what} holds the character {c!r} (U+{ord(c):04X}), which is not in the model's "
            f"vocabulary of {len(vocab)} characters"
        ) from None


def _known(text, vocab):
    """(ids of the characters of ``text`` that are in ``vocab``, how many were not)."""
    index = {c: i for i, c in enumerate(vocab)}
    ids = np.fromiter((index.get(c, -1) for c in text), dtype=np.int32, count=len(text))
    keep = ids >= 0
    return ids[keep], int(len(ids) - np.count_nonzero(keep))


def split_text(text, name="text", vocab=None, val_fraction=VAL_FRACTION, test_fraction=TEST_FRACTION):
    """A :class:`TextSplits` of ``text``: the first 1 − val − test of it for training, then validation,
    then test, contiguous. ``vocab`` (a string of characters) is the training part's characters, sorted,
    unless given (a trained model's, to evaluate it on the same split)."""
    n = len(text)
    n_val, n_test = int(n * val_fraction), int(n * test_fraction)
    cut_val, cut_test = n - n_val - n_test, n - n_test
    if n_val < 2 or n_test < 2:
        raise DatasetError(
            f"{name} holds {n:,} characters, too few to hold out {val_fraction:.0%} for "
            f"validation and {test_fraction:.0%} for testing (at least 2 each: "
            f"{int(2 / min(val_fraction, test_fraction)) + 1:,} characters)"
        )
    train_text = text[:cut_val]
    if vocab is None:
        vocab = "".join(sorted(set(train_text)))
    train, dropped_train = _known(train_text, vocab)
    val, dropped_val = _known(text[cut_val:cut_test], vocab)
    test, dropped_test = _known(text[cut_test:], vocab)
    return TextSplits(name, vocab, train, val, test, dropped_train + dropped_val + dropped_test)


def text_dataset_path(name, data_dir=None):
    """The file of the registered text dataset ``name``: under the search roots, or bundled."""
    from .loaders import search_roots

    spec = registry.get_spec(name)
    if spec.kind != "text":
        raise DatasetError(f"{name} is a dataset of {spec.kind}, not a text corpus")
    if spec.source == "bundled":
        return registry.BUNDLED_DIR / spec.file
    candidates = [root / spec.file for root in search_roots(data_dir)]
    for path in candidates:
        if path.is_file():
            return path
    looked = ", ".join(str(p) for p in candidates)
    raise DatasetNotFoundError(
        f"{name}: {spec.file} not found (looked in {looked}); put it under DIR/ and "
        "set HANDGRAD_DATA=DIR or pass --data-dir DIR (or train on the bundled "
        "fortunes-min)"
    )


def load_text(path=None, dataset=None, data_dir=None, vocab=None):
    """The :class:`TextSplits` of a text file ``path`` or of the registered text ``dataset``."""
    if (path is None) == (dataset is None):
        raise ValueError("load_text takes a path or a dataset name, one of the two")
    file = pathlib.Path(path) if path is not None else text_dataset_path(dataset, data_dir)
    return split_text(read_text(file), str(path) if path is not None else dataset, vocab=vocab)
