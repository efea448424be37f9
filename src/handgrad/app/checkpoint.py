"""Checkpoints: a model's arrays and JSON metadata in one ``.npz`` file, written atomically, loaded safely.

Format (an ordinary NumPy ``.npz`` archive, readable with ``np.load(path, allow_pickle=False)``):

    __handgrad__            uint8 array: UTF-8 JSON header (below)
    param/<name>            every trained parameter, by dotted name ("param/0.W", "param/0.b", ...)
    state/<name>            every layer's non-trained state (batch-norm running statistics, ...)
    optim/<path>            the array part of the optimiser's ``state_dict()`` (velocities, ...)

The header is ``{"format": "handgrad-checkpoint", "format_version": 1, "handgrad_version": ...,
"metadata": {...}, "optimizer": <state_dict with arrays replaced by {"__array__": "optim/..."}>,
"rng_state": <np.random.Generator.bit_generator.state> or null}``. ``metadata`` is the caller's dict and
must hold ``"arch"`` (see :mod:`handgrad.app.models`); the training loop adds the dataset, class names,
configuration, epoch, metrics and history.

Writing goes to a temporary file in the same folder, which is flushed, fsync'ed and then renamed over the
target with ``os.replace`` — atomic on POSIX and Windows — so a reader, or a run killed mid-write, sees
either the previous complete checkpoint or the new one, never a torn file. Loading never unpickles and
checks every array's name, shape and dtype against the architecture rebuilt from the metadata; anything
else raises :class:`CheckpointError` with a message that says what is wrong.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import tempfile
import zipfile
from typing import NamedTuple

import numpy as np

from .. import __version__
from .models import ArchitectureError, build_model, named_params, named_state

__all__ = ["CheckpointError", "Checkpoint", "save_checkpoint", "load_checkpoint", "load_model",
           "restore_into", "resolve_checkpoint_path", "FORMAT", "FORMAT_VERSION"]

FORMAT = "handgrad-checkpoint"
FORMAT_VERSION = 1
HEADER_KEY = "__handgrad__"


class CheckpointError(ValueError):
    """A file is not a usable handgrad checkpoint: missing, not an .npz, another format, a mismatched
    architecture, missing or extra arrays, or arrays of the wrong shape or dtype."""


class Checkpoint(NamedTuple):
    """What ``load_checkpoint`` returns; unpacks as ``params, metadata, *rest``."""

    params: dict  # dotted name -> array
    metadata: dict  # the dict given to save_checkpoint (arch, dataset, classes, epoch, metrics, ...)
    state: dict  # dotted name -> layer state array
    optimizer_state: dict | None  # as given to save_checkpoint (arrays restored), or None
    rng_state: dict | None  # np.random.Generator().bit_generator.state, or None
    path: str = ""
    handgrad_version: str = ""


# ----------------------------------------------------------------------------------------------------
# Saving
# ----------------------------------------------------------------------------------------------------


def _split_arrays(obj, path, arrays):
    """Replace every ndarray inside nested dicts/lists by a reference, collecting it in ``arrays``."""
    if isinstance(obj, np.ndarray):
        key = "optim/" + "/".join(path)
        arrays[key] = obj
        return {"__array__": key}
    if isinstance(obj, dict):
        return {str(k): _split_arrays(v, (*path, str(k)), arrays) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_split_arrays(v, (*path, str(i)), arrays) for i, v in enumerate(obj)]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _join_arrays(obj, data):
    if isinstance(obj, dict):
        if set(obj) == {"__array__"}:
            key = obj["__array__"]
            if key not in data:
                raise CheckpointError(f"optimizer state refers to a missing array {key!r}")
            return data[key]
        return {k: _join_arrays(v, data) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_join_arrays(v, data) for v in obj]
    return obj


def _fsync_dir(directory):
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_savez(path, arrays: dict) -> None:
    """``np.savez(path, **arrays)`` through a temporary file, fsync and ``os.replace``."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def save_checkpoint(path, model, metadata: dict, optimizer_state=None, rng_state=None) -> pathlib.Path:
    """Write ``model``'s parameters and layer state, ``metadata`` (JSON-able, with an ``"arch"``), the
    optimiser's ``state_dict()`` and a generator's ``bit_generator.state`` to ``path`` atomically."""
    if not isinstance(metadata, dict) or "arch" not in metadata:
        raise ValueError("metadata must be a dict holding the model's 'arch'")
    arrays = {f"param/{k}": np.asarray(v) for k, v in named_params(model).items()}
    arrays.update({f"state/{k}": np.asarray(v) for k, v in named_state(model).items()})
    optim = None if optimizer_state is None else _split_arrays(optimizer_state, (), arrays)
    header = {"format": FORMAT, "format_version": FORMAT_VERSION, "handgrad_version": __version__,
              "metadata": metadata, "optimizer": optim, "rng_state": rng_state}
    text = json.dumps(header, allow_nan=True)  # NaN metrics (a diverged epoch) stay representable
    arrays[HEADER_KEY] = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    atomic_savez(path, arrays)
    return pathlib.Path(path)


# ----------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------


def resolve_checkpoint_path(path) -> pathlib.Path:
    """A checkpoint file's path; a run folder stands for its ``best.npz``. CheckpointError if absent."""
    p = pathlib.Path(path)
    if p.is_dir():
        if (p / "best.npz").is_file():
            return p / "best.npz"
        raise CheckpointError(f"{p} is a folder without best.npz; give a checkpoint file such as RUN_DIR/best.npz")
    if not p.exists():
        raise CheckpointError(f"checkpoint {p} not found; check the path (training writes runs/<timestamp>/best.npz)")
    return p


def _expected_arrays(arch):
    try:
        model = build_model(arch, rng=0)
    except ArchitectureError as err:
        raise CheckpointError(f"the checkpoint's architecture is not usable: {err}") from None
    return model, named_params(model), named_state(model)


def _compare(kind, expected, found, path):
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {kind} {missing[:6]}")
        if extra:
            parts.append(f"unexpected {kind} {extra[:6]}")
        raise CheckpointError(f"{path} does not match the architecture it describes: {', '.join(parts)}")
    for name, ref in expected.items():
        arr = found[name]
        if arr.shape != ref.shape or arr.dtype != ref.dtype:
            raise CheckpointError(f"{path}: {kind[:-1]} {name!r} has shape {arr.shape} and dtype {arr.dtype}, "
                                  f"but the architecture needs {ref.shape} {ref.dtype}")


def _read(path):
    """Header dict and {key: array} of an .npz file, or CheckpointError."""
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
        if magic != b"PK\x03\x04":
            what = "an empty file" if not magic else "not an .npz archive"
            raise CheckpointError(f"{path} is not a handgrad checkpoint ({what}); give a best.npz or last.npz "
                                  "written by 'handgrad train'")
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise CheckpointError(f"{path} is a single .npy array, not a handgrad checkpoint (.npz)")
        with data:
            arrays = {k: data[k] for k in data.files}
    except CheckpointError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as err:
        if isinstance(err, PermissionError):
            raise CheckpointError(f"cannot read {path}: permission denied") from None
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CheckpointError(f"{path} is not a handgrad checkpoint (not a readable .npz archive: {reason})") from None
    if HEADER_KEY not in arrays:
        raise CheckpointError(f"{path} is an .npz archive but not a handgrad checkpoint (no {HEADER_KEY} header)")
    raw = arrays.pop(HEADER_KEY)
    try:
        if raw.dtype != np.uint8 or raw.ndim != 1:
            raise ValueError("header is not a byte array")
        header = json.loads(raw.tobytes().decode("utf-8"))
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
    except (ValueError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} has a damaged checkpoint header ({err})") from None
    if header.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a handgrad checkpoint (format {header.get('format')!r})")
    if header.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format version {header.get('format_version')!r}; "
                              f"this handgrad {__version__} reads version {FORMAT_VERSION}")
    return header, arrays


def load_checkpoint(path) -> Checkpoint:
    """Load and validate a checkpoint (a file, or a run folder meaning its best.npz).

    Raises CheckpointError for a missing file, a file that is not a handgrad checkpoint, an unknown or
    malformed architecture, and parameters or state that are missing, unexpected, or of the wrong shape
    or dtype for that architecture.
    """
    path = resolve_checkpoint_path(path)
    header, arrays = _read(path)
    metadata = header.get("metadata")
    if not isinstance(metadata, dict) or not isinstance(metadata.get("arch"), dict):
        raise CheckpointError(f"{path} has no architecture in its metadata")
    _, want_params, want_state = _expected_arrays(metadata["arch"])
    params = {k[len("param/"):]: v for k, v in arrays.items() if k.startswith("param/")}
    state = {k[len("state/"):]: v for k, v in arrays.items() if k.startswith("state/")}
    _compare("parameters", want_params, params, path)
    _compare("states", want_state, state, path)
    optim = header.get("optimizer")
    if optim is not None:
        optim = _join_arrays(optim, {k: v for k, v in arrays.items() if k.startswith("optim/")})
    rng_state = header.get("rng_state")
    if rng_state is not None and not isinstance(rng_state, dict):
        raise CheckpointError(f"{path} has a malformed random-generator state")
    return Checkpoint(params, metadata, state, optim, rng_state, str(path), str(header.get("handgrad_version", "")))


def restore_into(model, ckpt: Checkpoint) -> None:
    """Copy a checkpoint's parameters and state into ``model``'s own arrays, in place (same architecture)."""
    own_params, own_state = named_params(model), named_state(model)
    _compare("parameters", own_params, ckpt.params, ckpt.path or "checkpoint")
    _compare("states", own_state, ckpt.state, ckpt.path or "checkpoint")
    for name, arr in own_params.items():
        np.copyto(arr, ckpt.params[name])
    for name, arr in own_state.items():
        np.copyto(arr, ckpt.state[name])


def load_model(path):
    """(model in eval mode, Checkpoint) for a checkpoint file or run folder."""
    ckpt = load_checkpoint(path)
    model = build_model(ckpt.metadata["arch"], rng=0)
    restore_into(model, ckpt)
    model.eval()
    return model, ckpt
