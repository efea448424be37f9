"""Verified downloads into the user cache.

A file is fetched from each mirror in turn (``urllib``, with a timeout and a tqdm progress bar) into a
temporary file in the destination folder, checked for completeness (Content-Length) and against the
SHA-256 of its decompressed payload, and only then renamed into place with :func:`os.replace`. Whatever
fails is deleted, so the cache only ever holds verified files.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pathlib
import tempfile
import urllib.error
import urllib.request
import zlib

from .errors import ChecksumError, DatasetError, DatasetNotFoundError
from .idx import GZIP_MAGIC, MAX_IDX_BYTES

#: Seconds to wait for a mirror to connect or send the next block.
DOWNLOAD_TIMEOUT = 30.0
USER_AGENT = "handgrad-datasets/0.1 (+python urllib)"
_BLOCK = 1 << 16


def cache_dir():
    """The user cache root: ``$XDG_CACHE_HOME/handgrad``, or ``~/.cache/handgrad``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "handgrad"


def payload_sha256(path, max_bytes=MAX_IDX_BYTES):
    """SHA-256 (hex) of a file's decompressed content (gzip detected by its magic; raw files as they are).

    Streams in blocks, reading at most ``max_bytes`` decompressed bytes so a gzip bomb cannot run forever.
    A truncated or corrupt gzip stream raises :class:`DatasetError` naming the file.
    """
    h = hashlib.sha256()
    with open(path, "rb") as raw:
        compressed = raw.read(2) == GZIP_MAGIC
        raw.seek(0)
        stream = gzip.GzipFile(fileobj=raw, mode="rb") if compressed else raw
        total = 0
        try:
            while True:
                block = stream.read(1 << 20)
                if not block:
                    break
                total += len(block)
                if total > max_bytes:
                    raise DatasetError(f"{path}: decompresses to more than {max_bytes:,} bytes; refusing it")
                h.update(block)
        except (EOFError, zlib.error, gzip.BadGzipFile) as e:
            raise DatasetError(f"{path}: truncated or corrupt gzip stream ({e or type(e).__name__})") from e
    return h.hexdigest()


def _progress_bar(total, desc, progress):
    """A tqdm bar, or a do-nothing stand-in when tqdm is missing; ``progress=None`` means "if a tty"."""
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is an app dependency

        class _Silent:
            def update(self, n):
                pass

            def close(self):
                pass

        return _Silent()
    return tqdm(
        total=total,
        desc=desc,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        leave=False,
        disable=None if progress is None else not progress,
    )


def _fetch(url, tmp, timeout, progress, desc):
    """Stream ``url`` into the open file ``tmp``; raise ``OSError`` if the body is shorter than announced."""
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"refusing {url!r}: only http and https URLs are used")
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        length = response.headers.get("Content-Length")
        expected = int(length) if length and length.isdigit() else None
        bar = _progress_bar(expected, desc, progress)
        got = 0
        try:
            while True:
                block = response.read(_BLOCK)
                if not block:
                    break
                tmp.write(block)
                got += len(block)
                bar.update(len(block))
        finally:
            bar.close()
    if expected is not None and got != expected:
        raise OSError(f"transfer ended after {got:,} of {expected:,} bytes")


def download_file(urls, dest, sha256, *, timeout=None, progress=None):
    """Download the first mirror in ``urls`` whose file verifies, and place it at ``dest`` atomically.

    Parameters
    ----------
    urls : sequence of str
        Full URLs of the same file, tried in order.
    dest : path
        Final location; its folder is created. A temporary ``.part`` file beside it receives the data.
    sha256 : str
        Expected SHA-256 of the decompressed content.
    timeout : float, optional
        Socket timeout per mirror (default :data:`DOWNLOAD_TIMEOUT`).
    progress : bool or None
        Show a progress bar; ``None`` shows it only on a terminal.

    Returns the destination path. Raises :class:`ChecksumError` if some mirror served a file that failed
    verification and none served a good one (the message names file, expected and found digests), and
    :class:`DatasetNotFoundError` if every mirror was unreachable.
    """
    dest = pathlib.Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    timeout = DOWNLOAD_TIMEOUT if timeout is None else timeout
    failures, bad = [], []
    for url in urls:
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as tmp:
                _fetch(url, tmp, timeout, progress, dest.name)
            found = payload_sha256(tmp_name)
            if found != sha256:
                raise ChecksumError(
                    f"{dest.name} from {url}: SHA-256 of the decompressed file is {found}, expected {sha256}"
                )
            os.replace(tmp_name, dest)
            return dest
        except ChecksumError as e:
            bad.append(str(e))
        except DatasetError as e:  # a corrupt gzip stream
            bad.append(f"{dest.name} from {url}: {e}")
        except (OSError, urllib.error.URLError, ValueError) as e:  # unreachable, timeout, truncated
            failures.append(f"{url}: {getattr(e, 'reason', None) or e}")
        finally:
            if os.path.exists(tmp_name):
                os.remove(tmp_name)
    if bad:
        raise ChecksumError("download failed verification, nothing was kept: " + "; ".join(bad + failures))
    raise DatasetNotFoundError(f"could not download {dest.name}: " + "; ".join(failures or ["no mirrors"]))
