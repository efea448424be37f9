"""Downloads against a local HTTP server on 127.0.0.1: good, corrupt, truncated and unreachable mirrors."""

import dataclasses
import gzip
import hashlib
import http.server
import socket
import threading

import numpy as np
import pytest

from handgrad.datasets import (
    ChecksumError,
    DatasetNotFoundError,
    cache_dir,
    download_file,
    load_dataset,
    payload_sha256,
    registry,
    write_idx,
)
from handgrad.datasets.idx import idx_bytes


class Handler(http.server.BaseHTTPRequestHandler):
    files = {}  # path -> bytes, filled by the fixture
    hits = []

    def do_GET(self):
        self.hits.append(self.path)
        mode, _, name = self.path.strip("/").partition("/")
        body = self.files.get(name)
        if body is None:
            self.send_error(404)
            return
        if mode == "corrupt":  # a valid gzip of different content: only the checksum can tell
            body = gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x03abc")
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if mode == "truncated":  # promise the whole file, send half of it, hang up
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    Handler.files, Handler.hits = {}, []
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def dead_url():
    """A URL on a port of 127.0.0.1 that nothing listens on (bound, then closed)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def dataset(monkeypatch, tmp_path):
    """A tiny 'mnist' served by the test server: registry checksums patched, cache in tmp_path."""
    monkeypatch.delenv("HANDGRAD_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, size=(20, 28, 28), dtype=np.uint8)
    y = (np.arange(20) % 10).astype(np.uint8)
    files, sums = {}, {}
    for split in ("train", "test"):
        for stem, a in zip(registry.STEMS[split], (X, y)):
            files[stem + ".gz"] = gzip.compress(idx_bytes(a))
            sums[stem] = hashlib.sha256(idx_bytes(a)).hexdigest()
    Handler.files.update(files)

    def use_mirrors(*mirrors):
        spec = dataclasses.replace(registry.REGISTRY["mnist"], sha256=sums, mirrors=tuple(mirrors))
        monkeypatch.setitem(registry.REGISTRY, "mnist", spec)

    return X, y.astype(np.int64), sums, use_mirrors


STEM = "train-images-idx3-ubyte"


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_cache_dir_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_dir() == tmp_path / "handgrad"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "handgrad"


def test_good_file_is_verified_and_placed(server, dataset, tmp_path):
    _, _, sums, _ = dataset
    dest = tmp_path / "c" / f"{STEM}.gz"
    assert download_file([f"{server}/good/{STEM}.gz"], dest, sums[STEM], progress=False) == dest
    assert payload_sha256(dest) == sums[STEM]
    assert dest.read_bytes() == Handler.files[f"{STEM}.gz"]
    assert leftovers(dest.parent) == [dest.name]  # no temporary file left behind


def test_corrupt_file_is_rejected_and_not_kept(server, dataset, tmp_path):
    _, _, sums, _ = dataset
    dest = tmp_path / "c" / f"{STEM}.gz"
    with pytest.raises(ChecksumError) as info:
        download_file([f"{server}/corrupt/{STEM}.gz"], dest, sums[STEM], progress=False)
    msg = str(info.value)
    found = hashlib.sha256(b"\x00\x00\x08\x01\x00\x00\x00\x03abc").hexdigest()
    assert STEM in msg and sums[STEM] in msg and found in msg
    assert leftovers(dest.parent) == []


def test_truncated_transfer_is_rejected_and_not_kept(server, dataset, tmp_path):
    _, _, sums, _ = dataset
    dest = tmp_path / "c" / f"{STEM}.gz"
    with pytest.raises(DatasetNotFoundError, match="transfer ended after"):
        download_file([f"{server}/truncated/{STEM}.gz"], dest, sums[STEM], progress=False, timeout=5)
    assert leftovers(dest.parent) == []


def test_dead_mirror_then_good_one(server, dead_url, dataset, tmp_path):
    _, _, sums, _ = dataset
    dest = tmp_path / "c" / f"{STEM}.gz"
    urls = [
        f"{dead_url}/{STEM}.gz",
        f"{server}/truncated/{STEM}.gz",
        f"{server}/corrupt/{STEM}.gz",
        f"{server}/good/{STEM}.gz",
    ]
    download_file(urls, dest, sums[STEM], progress=False, timeout=5)
    assert payload_sha256(dest) == sums[STEM]
    assert Handler.hits == [f"/truncated/{STEM}.gz", f"/corrupt/{STEM}.gz", f"/good/{STEM}.gz"]
    assert leftovers(dest.parent) == [dest.name]


def test_only_dead_mirrors_is_not_found(dead_url, dataset, tmp_path):
    _, _, sums, _ = dataset
    with pytest.raises(DatasetNotFoundError, match="could not download"):
        download_file(
            [f"{dead_url}/a.gz", "file:///etc/passwd"],
            tmp_path / "a.gz",
            sums[STEM],
            progress=False,
            timeout=5,
        )
    assert leftovers(tmp_path) == []


def test_load_dataset_downloads_into_the_cache_then_works_offline(server, dead_url, dataset, tmp_path):
    X, y, _sums, use_mirrors = dataset
    use_mirrors(f"{dead_url}/", f"{server}/good/")
    Xl, yl = load_dataset("mnist", split="test", progress=False)
    np.testing.assert_array_equal(Xl, X)
    np.testing.assert_array_equal(yl, y)
    cached = tmp_path / "xdg" / "handgrad" / "mnist"
    assert leftovers(cached) == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    use_mirrors()  # offline now: the cache is enough
    np.testing.assert_array_equal(load_dataset("mnist", split="test", download=False)[0], X)


def test_load_dataset_offline_says_where_it_looked(dead_url, dataset, tmp_path):
    *_, use_mirrors = dataset
    use_mirrors(f"{dead_url}/")
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("mnist", tmp_path / "mine", progress=False)
    msg = str(info.value)
    assert str(tmp_path / "mine" / "mnist") in msg and str(tmp_path / "xdg" / "handgrad" / "mnist") in msg
    assert "HANDGRAD_DATA" in msg and "--data-dir" in msg
    assert leftovers(tmp_path / "xdg" / "handgrad" / "mnist") == []


def test_load_dataset_corrupt_mirror_is_an_error_not_a_fallback(server, dataset, tmp_path):
    *_, use_mirrors = dataset
    use_mirrors(f"{server}/corrupt/")
    with pytest.raises(ChecksumError, match="expected"):
        load_dataset("mnist", split="test", progress=False)
    assert leftovers(tmp_path / "xdg" / "handgrad" / "mnist") == []


def test_progress_bar_shows_only_when_asked(server, dataset, tmp_path, capsys):
    _, _, sums, _ = dataset
    download_file([f"{server}/good/{STEM}.gz"], tmp_path / "a.gz", sums[STEM], progress=True)
    assert "a.gz" in capsys.readouterr().err  # the bar is labelled with the file being fetched
    download_file([f"{server}/good/{STEM}.gz"], tmp_path / "b.gz", sums[STEM], progress=False)
    assert capsys.readouterr().err == ""


def test_local_file_written_by_write_idx_verifies(tmp_path):
    write_idx(tmp_path / "a.gz", np.arange(5, dtype=np.uint8))
    expected = hashlib.sha256(idx_bytes(np.arange(5, dtype=np.uint8))).hexdigest()
    assert payload_sha256(tmp_path / "a.gz") == expected
    write_idx(tmp_path / "a", np.arange(5, dtype=np.uint8))
    assert payload_sha256(tmp_path / "a") == expected
