"""The IDX file format used by MNIST and Fashion-MNIST: read and write, raw or gzip-compressed.

An IDX file is a header followed by a payload, all big-endian::

    bytes 0-1   zero
    byte  2     type code: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64
    byte  3     number of dimensions d
    4 * d       the dimensions, each an unsigned 32-bit integer
    ...         prod(dims) * itemsize bytes of data, C order

:func:`read_idx` decides between gzip and raw by the content (the gzip magic ``1f 8b``), never the name. It
reads the header first and refuses a declared size above :data:`MAX_IDX_BYTES` before allocating
anything, then reads the payload in bounded chunks, so a short file or a gzip bomb cannot make it ask
for more memory than the data it actually holds.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import zlib

import numpy as np

from .errors import DatasetError

#: Largest payload (bytes) :func:`read_idx` accepts; full MNIST training images are 47 MB.
MAX_IDX_BYTES = 2 * 1024**3

#: IDX type code -> big-endian NumPy dtype.
IDX_TYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODE_OF_KIND = {(dt.kind, dt.itemsize): code for code, dt in IDX_TYPES.items()}

GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 24  # 16 MiB per read: memory grows only with the data actually present

# Errors the gzip/zlib machinery raises on a truncated or corrupt stream.
_GZIP_ERRORS = (EOFError, zlib.error, gzip.BadGzipFile, OSError)


class _Prefixed:
    """A read-only stream that first returns ``prefix`` and then the rest of ``raw`` (to un-read a peek)."""

    def __init__(self, prefix, raw):
        self._prefix, self._raw = prefix, raw

    def read(self, n=-1):
        if not self._prefix:
            return self._raw.read(n)
        if n is None or n < 0:
            out, self._prefix = self._prefix + self._raw.read(), b""
            return out
        out, self._prefix = self._prefix[:n], self._prefix[n:]
        if len(out) < n:
            out += self._raw.read(n - len(out))
        return out


def _name_of(source):
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    return str(getattr(source, "name", "<stream>"))


def _read_exactly(stream, n, name, hasher):
    """Read up to ``n`` bytes in bounded chunks (feeding ``hasher``); fewer only at end of data."""
    chunks, have = [], 0
    while have < n:
        chunk = stream.read(min(_CHUNK, n - have))
        if not chunk:
            break
        chunks.append(chunk)
        have += len(chunk)
        hasher.update(chunk)
    return b"".join(chunks)


def read_idx_with_sha256(source, max_bytes=None):
    """Read an IDX file and return ``(array, sha256 hex of the decompressed file)``.

    The digest covers header and payload exactly as :func:`handgrad.datasets.registry` records them, so
    a recompressed copy verifies like the original. See :func:`read_idx` for the arguments and errors.
    """
    limit = MAX_IDX_BYTES if max_bytes is None else max_bytes
    name = _name_of(source)
    own = isinstance(source, (str, os.PathLike))
    raw = open(source, "rb") if own else source  # a missing file raises FileNotFoundError (an OSError)
    try:
        magic = raw.read(2)
        stream = _Prefixed(magic, raw)
        compressed = magic == GZIP_MAGIC
        if compressed:
            stream = gzip.GzipFile(fileobj=stream, mode="rb")
        try:
            return _parse(stream, name, limit)
        except _GZIP_ERRORS as e:
            if not compressed or isinstance(e, FileNotFoundError):
                raise
            raise DatasetError(f"{name}: truncated or corrupt gzip stream ({e or type(e).__name__})") from e
    finally:
        if own:
            raw.close()


def _parse(stream, name, limit):
    hasher = hashlib.sha256()
    head = _read_exactly(stream, 4, name, hasher)
    if len(head) < 4:
        raise DatasetError(f"{name}: not an IDX file (only {len(head)} bytes, the header alone needs 4)")
    if head[0] != 0 or head[1] != 0:
        raise DatasetError(f"{name}: not an IDX file (magic number {head.hex()} should start with 0000)")
    code, ndim = head[2], head[3]
    if code not in IDX_TYPES:
        known = ", ".join(f"0x{c:02X}" for c in IDX_TYPES)
        raise DatasetError(f"{name}: unknown IDX type code 0x{code:02X} (known: {known})")
    if ndim == 0:
        raise DatasetError(f"{name}: IDX header declares 0 dimensions")
    dim_bytes = _read_exactly(stream, 4 * ndim, name, hasher)
    if len(dim_bytes) < 4 * ndim:
        raise DatasetError(
            f"{name}: header truncated ({ndim} dimensions need {4 * ndim} bytes, got {len(dim_bytes)})"
        )
    dims = tuple(int(d) for d in np.frombuffer(dim_bytes, dtype=">u4"))
    dtype = IDX_TYPES[code]
    size = dtype.itemsize
    for d in dims:  # Python ints: no overflow however large the header's claim
        size *= d
    if size > limit:
        raise DatasetError(
            f"{name}: header declares shape {dims} of {dtype.name} = {size:,} bytes, above the limit of "
            f"{limit:,} bytes (handgrad.datasets.idx.MAX_IDX_BYTES); refusing to allocate it"
        )
    payload = _read_exactly(stream, size, name, hasher)
    if len(payload) < size:
        raise DatasetError(
            f"{name}: payload shorter than the header says: shape {dims} of {dtype.name} needs {size:,} bytes, "
            f"found {len(payload):,}"
        )
    extra = 0
    while True:  # reading to the end also makes gzip check the stream's CRC and length
        more = stream.read(_CHUNK)
        if not more:
            break
        extra += len(more)
    if extra:
        raise DatasetError(
            f"{name}: payload longer than the header says: shape {dims} of {dtype.name} needs {size:,} bytes, "
            f"found {extra:,} more"
        )
    array = np.frombuffer(payload, dtype=dtype).reshape(dims)
    return array.astype(dtype.newbyteorder("=")), hasher.hexdigest()


def read_idx(source, max_bytes=None):
    """Read an IDX file (raw or gzip, decided by content) into a native-endian, writable ndarray.

    Parameters
    ----------
    source : str, os.PathLike or binary file object
    max_bytes : int, optional
        Refuse payloads larger than this (default :data:`MAX_IDX_BYTES`), checked before allocating.

    Raises
    ------
    DatasetError
        Wrong magic number, unknown type code, payload shorter or longer than the header says, a size over
        the limit, or a truncated/corrupt gzip stream; the message names the file and the problem.
    OSError
        The file cannot be opened (e.g. ``FileNotFoundError``).

    >>> import io; buf = io.BytesIO(); write_idx(buf, np.arange(6, dtype=np.uint8).reshape(2, 3))
    >>> read_idx(io.BytesIO(buf.getvalue())).tolist()
    [[0, 1, 2], [3, 4, 5]]
    """
    return read_idx_with_sha256(source, max_bytes)[0]


def idx_bytes(array):
    """The uncompressed IDX encoding (header + big-endian payload) of ``array``."""
    array = np.asarray(array)
    code = _CODE_OF_KIND.get((array.dtype.kind, array.dtype.itemsize))
    if code is None:
        raise DatasetError(
            f"IDX cannot store dtype {array.dtype}; use uint8, int8, int16, int32, float32 or float64"
        )
    if not 1 <= array.ndim <= 255:
        raise DatasetError(f"IDX needs 1 to 255 dimensions, got an array of shape {array.shape}")
    if any(d >= 2**32 for d in array.shape):
        raise DatasetError(f"IDX dimensions must be below 2**32, got shape {array.shape}")
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    return header + np.ascontiguousarray(array, dtype=IDX_TYPES[code]).tobytes()


def write_idx(path, array, compress=None):
    """Write ``array`` as an IDX file at ``path`` (a path or a binary file object).

    ``compress=None`` (default) gzips exactly when the path ends with ``.gz``; ``True``/``False`` force
    it. The gzip output is deterministic (no timestamp or file name in its header), so rebuilding a file
    from the same array gives the same bytes. A path is written to a temporary file first and renamed
    into place, so a crash never leaves a half-written file under the final name.
    """
    data = idx_bytes(array)
    name = _name_of(path)
    if compress is None:
        compress = name.endswith(".gz")
    if compress:
        buf = io.BytesIO()
        with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as gz:
            gz.write(data)
        data = buf.getvalue()
    if not isinstance(path, (str, os.PathLike)):
        path.write(data)
        return
    tmp = f"{os.fspath(path)}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
