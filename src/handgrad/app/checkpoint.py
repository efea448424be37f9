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
either the previous complete checkpoint or the new one, never a torn file. A failed write (a full disk)
raises :class:`CheckpointWriteError`, naming the file and saying whether its previous version is intact.

Loading trusts nothing in the file before checking it, so a damaged or hostile archive can neither
unpickle nor exhaust memory: every member's ``.npy`` header (dtype, shape) is read from the zip and checked
against the zip directory's sizes, the architecture's parameter count (computed without building it) and
then the names, shapes and dtypes of the model it builds, all before a single array is allocated.
Anything else raises :class:`CheckpointError` with one line naming the file, the member and what is wrong.
"""

from __future__ import annotations

import collections
import contextlib
import json
import math
import os
import pathlib
import re
import tempfile
import zipfile
import zlib
from typing import NamedTuple

import numpy as np
from numpy.lib import format as fmt

from .. import __version__
from .models import ArchitectureError, build_model, count_parameters, named_params, named_state

__all__ = [
    "CheckpointError",
    "CheckpointWriteError",
    "Checkpoint",
    "save_checkpoint",
    "load_checkpoint",
    "load_model",
    "restore_into",
    "resolve_checkpoint_path",
    "FORMAT",
    "FORMAT_VERSION",
]

FORMAT = "handgrad-checkpoint"
FORMAT_VERSION = 1
HEADER_KEY = "__handgrad__"

# Limits a checkpoint is checked against before anything is allocated (see load_checkpoint).
MEMBER_NAME = re.compile(r"__handgrad__\.npy|(param|state|optim)/[^/\x00][^\x00]*\.npy")
MAX_HEADER_BYTES = 8 * 2**20  # the JSON header: metadata, history, optimiser hyperparameters
MAX_NPY_HEADER = 10_000  # an .npy header's text (NumPy's own default)
MAX_NDIM = 32  # NumPy's (NPY_MAXDIMS before NumPy 2)
MAX_COMPRESSION_RATIO = 100  # deflate rarely beats 10x on trained weights; a bomb reaches 1000x
RATIO_FREE_BYTES = 2**20  # members (and archives) this small may compress better (zero biases)
SMALL_MODEL_NUMBERS = 2**22  # an architecture this small is built even if the archive holds fewer numbers
MAX_OPTIMIZER_COPIES = 4  # optimiser arrays mirror the parameters: momentum 1 copy, Adam 2


class CheckpointError(ValueError):
    """A file is not a usable handgrad checkpoint: missing, not an .npz, another format, a mismatched
    architecture, missing or extra arrays, arrays of the wrong shape or dtype, or a damaged or hostile
    archive (unexpected members, sizes that disagree with the zip directory, a zip bomb)."""


class CheckpointWriteError(CheckpointError, OSError):
    """Writing a checkpoint failed (a full disk, no permission ...); the message names the file and says
    whether its previous version is intact. Also an OSError, with the original ``errno``.

    ``path`` is the checkpoint that was being written (a ``pathlib.Path``) and ``previous_intact`` whether
    an earlier complete file is still there, so a caller can add which epoch that file holds.
    """

    def __init__(self, path, cause: OSError, previous_intact: bool):
        reason = cause.strerror or str(cause) or type(cause).__name__
        after = f"the previous {path} is intact" if previous_intact else "nothing was written"
        super().__init__(f"cannot write checkpoint {path}: {reason}; {after}")
        self.path, self.previous_intact = pathlib.Path(path), previous_intact
        self.errno, self.strerror, self.filename = cause.errno, cause.strerror, str(path)

    def __str__(self):  # the message alone, not OSError's "[Errno 28] ...: 'file'"
        return str(self.args[0])


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
    optimiser's ``state_dict()`` and a generator's ``bit_generator.state`` to ``path`` atomically.

    An OSError while writing (a full disk, no permission) becomes a :class:`CheckpointWriteError` naming
    ``path`` and saying whether its previous version is intact; the temporary file is removed first."""
    if not isinstance(metadata, dict) or "arch" not in metadata:
        raise ValueError("metadata must be a dict holding the model's 'arch'")
    arrays = {f"param/{k}": np.asarray(v) for k, v in named_params(model).items()}
    arrays.update({f"state/{k}": np.asarray(v) for k, v in named_state(model).items()})
    optim = None if optimizer_state is None else _split_arrays(optimizer_state, (), arrays)
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "handgrad_version": __version__,
        "metadata": metadata,
        "optimizer": optim,
        "rng_state": rng_state,
    }
    text = json.dumps(header, allow_nan=True)  # NaN metrics (a diverged epoch) stay representable
    arrays[HEADER_KEY] = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    path = pathlib.Path(path)
    previous_intact = path.is_file()  # os.replace is the last step: until it succeeds, this file is untouched
    try:
        atomic_savez(path, arrays)
    except OSError as err:
        raise CheckpointWriteError(path, err, previous_intact) from err
    return path


# ----------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------


def resolve_checkpoint_path(path) -> pathlib.Path:
    """A checkpoint file's path; a run folder stands for its ``best.npz``. CheckpointError if absent."""
    p = pathlib.Path(path)
    if p.is_dir():
        if (p / "best.npz").is_file():
            return p / "best.npz"
        raise CheckpointError(
            f"{p} is a folder without best.npz; give a checkpoint file such as RUN_DIR/best.npz"
        )
    if not p.exists():
        raise CheckpointError(
            f"checkpoint {p} not found; check the path (training writes runs/<timestamp>/best.npz)"
        )
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
            raise CheckpointError(
                f"{path}: {kind[:-1]} {name!r} has shape {arr.shape} and dtype {arr.dtype}, "
                f"but the architecture needs {ref.shape} {ref.dtype}"
            )


class _Member(NamedTuple):
    """One archive member as its zip directory entry and ``.npy`` header describe it (nothing read yet)."""

    info: zipfile.ZipInfo
    dtype: np.dtype
    shape: tuple
    fortran_order: bool

    @property
    def size(self):  # number of elements, as a Python int (no overflow for hostile shapes)
        return math.prod(self.shape)


def _unreadable(path, err):
    reason = str(err).splitlines()[0] if str(err) else type(err).__name__
    return CheckpointError(f"{path} is not a handgrad checkpoint (not a readable .npz archive: {reason})")


def _check_entry(path, info):
    """The member's name, flags, compression and declared sizes, from the zip directory alone."""
    name = info.filename
    if not MEMBER_NAME.fullmatch(name):
        raise CheckpointError(
            f"{path}: unexpected member {name!r}; a checkpoint holds only "
            f"{HEADER_KEY}.npy, param/*.npy, state/*.npy and optim/*.npy"
        )
    if info.flag_bits & 0x1:
        raise CheckpointError(f"{path}: member {name!r} is encrypted; handgrad checkpoints are not")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise CheckpointError(
            f"{path}: member {name!r} uses zip compression method {info.compress_type}; "
            "handgrad reads stored or deflated members only"
        )
    if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
        raise CheckpointError(
            f"{path}: member {name!r} is stored uncompressed but its directory entry "
            f"gives {info.compress_size:,} bytes on disk for {info.file_size:,}; "
            "the file is damaged"
        )
    if info.file_size > max(MAX_COMPRESSION_RATIO * info.compress_size, RATIO_FREE_BYTES):
        raise CheckpointError(
            f"{path}: member {name!r} would inflate {info.compress_size:,} bytes to "
            f"{info.file_size:,} (more than {MAX_COMPRESSION_RATIO}x); "
            "refusing a likely zip bomb"
        )


def _npy_header(path, zf, info):
    """(dtype, shape, fortran_order) from the member's ``.npy`` header, checked against its declared size."""
    name = info.filename
    try:
        with zf.open(info) as f:
            version = fmt.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = fmt.read_array_header_1_0(f, max_header_size=MAX_NPY_HEADER)
            elif version in ((2, 0), (3, 0)):
                shape, fortran, dtype = fmt.read_array_header_2_0(f, max_header_size=MAX_NPY_HEADER)
            else:
                raise ValueError(f"unsupported .npy format version {version}")
            offset = f.tell()
    except (
        ValueError,
        EOFError,
        SyntaxError,
        TypeError,
        OverflowError,
        zipfile.BadZipFile,
        OSError,
        zlib.error,
    ) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CheckpointError(f"{path}: member {name!r} is not .npy data ({reason})") from None
    if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None or dtype.kind not in "biufc":
        raise CheckpointError(
            f"{path}: member {name!r} has dtype {dtype.str!r}; a checkpoint holds plain "
            "numeric arrays only (no objects, pickles, records or raw bytes)"
        )
    if any(n < 0 for n in shape) or len(shape) > MAX_NDIM:
        raise CheckpointError(
            f"{path}: member {name!r} declares an impossible shape {shape}; the file is damaged"
        )
    member = _Member(info, dtype, tuple(int(n) for n in shape), bool(fortran))
    needed = offset + member.size * dtype.itemsize
    if needed != info.file_size:
        raise CheckpointError(
            f"{path}: member {name!r} declares a {'x'.join(map(str, shape)) or 'scalar'} "
            f"{dtype} array ({needed:,} bytes with its header) but holds "
            f"{info.file_size:,} bytes; the file is damaged"
        )
    return member


def _scan(path):
    """Every member's name, dtype and shape, checked against the zip directory; reads no array data."""
    try:
        zf = zipfile.ZipFile(path)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as err:
        if isinstance(err, PermissionError):
            raise CheckpointError(f"cannot read {path}: permission denied") from None
        raise _unreadable(path, err) from None
    infos = zf.infolist()
    names = [info.filename for info in infos]
    if HEADER_KEY + ".npy" not in names:
        zf.close()
        raise CheckpointError(
            f"{path} is an .npz archive but not a handgrad checkpoint (no {HEADER_KEY} header)"
        )
    try:
        twice = sorted(n for n, k in collections.Counter(names).items() if k > 1)
        if twice:
            raise CheckpointError(f"{path}: member {twice[0]!r} appears more than once; the file is damaged")
        for info in infos:
            _check_entry(path, info)
        packed, unpacked = sum(i.compress_size for i in infos), sum(i.file_size for i in infos)
        if unpacked > max(MAX_COMPRESSION_RATIO * packed, RATIO_FREE_BYTES):
            raise CheckpointError(
                f"{path}: its members would inflate {packed:,} bytes to {unpacked:,} "
                f"(more than {MAX_COMPRESSION_RATIO}x); refusing a likely zip bomb"
            )
        members = {info.filename[: -len(".npy")]: _npy_header(path, zf, info) for info in infos}
    except BaseException:
        zf.close()
        raise
    return zf, members


def _read_member(path, zf, member):
    """The array of a checked member (its size is known to match the zip directory)."""
    try:
        with zf.open(member.info) as f:  # zipfile checks the CRC as the last byte is read
            arr = fmt.read_array(f, allow_pickle=False, max_header_size=MAX_NPY_HEADER)
    except (ValueError, EOFError, OSError, zipfile.BadZipFile, zlib.error) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CheckpointError(
            f"{path}: member {member.info.filename!r} cannot be read ({reason}); the file is damaged"
        ) from None
    return arr


def _read_header(path, zf, member):
    if member.dtype != np.uint8 or len(member.shape) != 1:
        raise CheckpointError(
            f"{path} has a damaged checkpoint header (member {HEADER_KEY!r} is not a byte array)"
        )
    if member.size > MAX_HEADER_BYTES:
        raise CheckpointError(
            f"{path}: member {HEADER_KEY!r} holds a {member.size:,}-byte header, more than "
            f"the {MAX_HEADER_BYTES:,} a checkpoint may have; the file is damaged"
        )
    raw = _read_member(path, zf, member)
    try:
        header = json.loads(raw.tobytes().decode("utf-8"))
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
    except (ValueError, UnicodeDecodeError, RecursionError) as err:
        raise CheckpointError(f"{path} has a damaged checkpoint header ({str(err)[:200]})") from None
    if header.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a handgrad checkpoint (format {header.get('format')!r})")
    if header.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {header.get('format_version')!r}; "
            f"this handgrad {__version__} reads version {FORMAT_VERSION}"
        )
    return header


def _check_model_size(path, arch, members):
    """Refuse an architecture that claims more numbers than the archive holds, before building it."""
    try:
        claimed = count_parameters(arch)
    except ArchitectureError as err:
        raise CheckpointError(f"the checkpoint's architecture is not usable: {err}") from None
    held = sum(m.size for k, m in members.items() if k.startswith(("param/", "state/")))
    if claimed > max(held, SMALL_MODEL_NUMBERS):
        raise CheckpointError(
            f"{path}: the architecture in its header describes a model of {claimed:,} "
            f"numbers but the archive holds {held:,} for parameters and state; "
            "the file is damaged"
        )


def _check_optimizer_members(path, members, params):
    """Optimiser arrays mirror the parameters (a velocity, a first moment ...): bound each and all of them."""
    largest = max((m.size for m in params.values()), default=0)
    total = sum(m.size for m in params.values())
    optim = {k: m for k, m in members.items() if k.startswith("optim/")}
    for m in optim.values():
        if m.size > max(largest, 1024):
            raise CheckpointError(
                f"{path}: member {m.info.filename!r} holds {m.size:,} numbers, more than "
                f"the largest parameter ({largest:,}); the file is damaged"
            )
    if sum(m.size for m in optim.values()) > MAX_OPTIMIZER_COPIES * total + 1024:
        raise CheckpointError(
            f"{path}: its optimizer state holds more than {MAX_OPTIMIZER_COPIES} copies of "
            f"the parameters ({total:,} numbers); the file is damaged"
        )
    return optim


def load_checkpoint(path) -> Checkpoint:
    """Load and validate a checkpoint (a file, or a run folder meaning its best.npz).

    Every member's ``.npy`` header is read from the zip and checked before any array is allocated: the
    JSON header first, then the architecture it names (its parameter count, computed without building,
    must not exceed what the archive holds), then each parameter and state array's name, shape and dtype
    against the model that architecture builds, and the optimiser arrays' sizes against the parameters'.

    Raises CheckpointError for a missing file, a file that is not a handgrad checkpoint, an unknown or
    malformed architecture, parameters or state that are missing, unexpected, or of the wrong shape or
    dtype for that architecture, and archives that are damaged or hostile (unexpected members, object or
    record dtypes, sizes that disagree with the zip directory, zip bombs).
    """
    path = resolve_checkpoint_path(path)
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as err:
        if isinstance(err, PermissionError):
            raise CheckpointError(f"cannot read {path}: permission denied") from None
        raise _unreadable(path, err) from None
    if magic != b"PK\x03\x04":
        what = "an empty file" if not magic else "not an .npz archive"
        raise CheckpointError(
            f"{path} is not a handgrad checkpoint ({what}); give a best.npz or last.npz "
            "written by 'handgrad train'"
        )
    zf, members = _scan(path)
    with zf:
        header = _read_header(path, zf, members.pop(HEADER_KEY))
        metadata = header.get("metadata")
        if not isinstance(metadata, dict) or not isinstance(metadata.get("arch"), dict):
            raise CheckpointError(f"{path} has no architecture in its metadata")
        _check_model_size(path, metadata["arch"], members)
        _, want_params, want_state = _expected_arrays(metadata["arch"])
        found_params = {k[len("param/") :]: m for k, m in members.items() if k.startswith("param/")}
        found_state = {k[len("state/") :]: m for k, m in members.items() if k.startswith("state/")}
        _compare("parameters", want_params, found_params, path)
        _compare("states", want_state, found_state, path)
        found_optim = _check_optimizer_members(path, members, found_params)
        # Only now, with every member checked, is any array read.
        params = {k: _read_member(path, zf, m) for k, m in found_params.items()}
        state = {k: _read_member(path, zf, m) for k, m in found_state.items()}
        optim = header.get("optimizer")
        if optim is not None:
            optim = _join_arrays(optim, {k: _read_member(path, zf, m) for k, m in found_optim.items()})
    rng_state = header.get("rng_state")
    if rng_state is not None and not isinstance(rng_state, dict):
        raise CheckpointError(f"{path} has a malformed random-generator state")
    version = str(header.get("handgrad_version", ""))
    return Checkpoint(params, metadata, state, optim, rng_state, str(path), version)


def restore_into(model, ckpt: Checkpoint, optimizer=None, rng=None) -> None:
    """Copy a checkpoint's parameters and state into ``model``'s own arrays, in place (same architecture),
    and, to continue a run, its optimiser state into ``optimizer`` and its generator state into ``rng``
    (each when given and saved)."""
    own_params, own_state = named_params(model), named_state(model)
    _compare("parameters", own_params, ckpt.params, ckpt.path or "checkpoint")
    _compare("states", own_state, ckpt.state, ckpt.path or "checkpoint")
    for name, arr in own_params.items():
        np.copyto(arr, ckpt.params[name])
    for name, arr in own_state.items():
        np.copyto(arr, ckpt.state[name])
    if optimizer is not None and ckpt.optimizer_state is not None:
        optimizer.load_state_dict(ckpt.optimizer_state)
    if rng is not None and ckpt.rng_state is not None:
        rng.bit_generator.state = ckpt.rng_state


def check_saved_steps(run_dir, meta, steps_per_epoch, data) -> None:
    """CheckpointError unless a run's metadata counts ``steps_per_epoch`` steps for each finished epoch:
    otherwise the data it was trained on had another size. ``data`` says what the steps read ("50,000
    training images in batches of 128; was the dataset changed?"), for the message."""
    done = int(meta["epoch"]) * steps_per_epoch
    if int(meta.get("steps", done)) != done:
        raise CheckpointError(f"{run_dir}: the saved step count does not match {data}")


def load_model(path):
    """(model in eval mode, Checkpoint) for a checkpoint file or run folder."""
    ckpt = load_checkpoint(path)
    model = build_model(ckpt.metadata["arch"], rng=0)
    restore_into(model, ckpt)
    model.eval()
    return model, ckpt
