"""IDX files, the dataset registry and look-up, the bundled sample, synthetic digits, and the real data."""

import gzip
import hashlib
import json
import os
import pathlib
import struct
import tracemalloc

import numpy as np
import pytest
from conftest import real_data_dir

from handgrad.datasets import (
    DATASET_NAMES,
    MAX_IDX_BYTES,
    ChecksumError,
    DatasetError,
    DatasetNotFoundError,
    Splits,
    class_names,
    load_dataset,
    load_splits,
    make_synthetic_digits,
    read_idx,
    registry,
    write_idx,
)
from handgrad.datasets.idx import idx_bytes

DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]
CODES = [0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E]
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def random_array(dtype, shape, rng):
    info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else None
    if info is not None:
        return rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype)
    return rng.standard_normal(shape).astype(dtype)


def header(code, dims):
    return bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)


# ---------------------------------------------------------------- IDX round trips


@pytest.mark.parametrize("dtype,code", list(zip(DTYPES, CODES)))
@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("shape", [(7,), (3, 4, 5), (2, 1, 3, 2)])
def test_round_trip_every_type_code(tmp_path, rng, dtype, code, suffix, shape):
    a = random_array(dtype, shape, rng)
    path = tmp_path / f"a.idx{suffix}"
    write_idx(path, a)
    raw = path.read_bytes()
    assert (raw[:2] == b"\x1f\x8b") == (suffix == ".gz")
    payload = gzip.decompress(raw) if suffix else raw
    assert payload[:4] == bytes([0, 0, code, len(shape)])  # the documented header, big-endian dims
    assert struct.unpack(f">{len(shape)}I", payload[4 : 4 + 4 * len(shape)]) == shape
    b = read_idx(path)
    assert b.dtype == np.dtype(dtype) and b.dtype.isnative and b.flags.writeable
    np.testing.assert_array_equal(a, b)


def test_gzip_is_chosen_by_content_not_name(tmp_path, rng):
    a = random_array(np.int16, (4, 5), rng)
    raw_named_gz = tmp_path / "raw.gz"
    write_idx(raw_named_gz, a, compress=False)
    gz_named_raw = tmp_path / "compressed.idx"
    write_idx(gz_named_raw, a, compress=True)
    assert gz_named_raw.read_bytes()[:2] == b"\x1f\x8b"
    np.testing.assert_array_equal(read_idx(raw_named_gz), a)
    np.testing.assert_array_equal(read_idx(gz_named_raw), a)
    with open(gz_named_raw, "rb") as f:  # a file object
        np.testing.assert_array_equal(read_idx(f), a)


def test_big_endian_payload_matches_numpy(rng):
    a = random_array(np.float64, (3, 2), rng)
    assert idx_bytes(a)[12:] == a.astype(">f8").tobytes()


def test_gzip_output_is_deterministic(tmp_path):
    a = np.arange(100, dtype=np.uint8)
    write_idx(tmp_path / "a.gz", a)
    first = (tmp_path / "a.gz").read_bytes()
    write_idx(tmp_path / "a.gz", a)
    assert (tmp_path / "a.gz").read_bytes() == first


def test_write_rejects_unsupported_dtype(tmp_path):
    with pytest.raises(DatasetError, match="cannot store dtype int64"):
        write_idx(tmp_path / "a", np.arange(3))
    with pytest.raises(DatasetError, match="1 to 255 dimensions"):
        write_idx(tmp_path / "a", np.uint8(3))


# ---------------------------------------------------------------- malformed IDX


def bad_cases():
    good = header(0x08, (2, 3)) + bytes(6)
    return {
        "wrong magic": (b"\x01\x00" + good[2:], "magic number 0100"),
        "unknown type code": (header(0x0A, (2, 3)) + bytes(6), "unknown IDX type code 0x0A"),
        "short payload": (good[:-1], "shorter than the header says.*needs 6 bytes, found 5"),
        "long payload": (good + b"\x00\x00", "longer than the header says.*found 2 more"),
        "truncated header": (header(0x08, (2, 3))[:9], "header truncated"),
        "tiny": (b"\x00\x00", "only 2 bytes"),
        "zero dims": (bytes([0, 0, 8, 0]), "0 dimensions"),
        # 16 bytes asking for 4e9 * 4e9 * 8 bytes: refused before anything is allocated
        "huge": (header(0x0E, (4_000_000_000, 4_000_000_000)) + bytes(4), "above the limit"),
    }


@pytest.mark.parametrize("case", list(bad_cases()))
@pytest.mark.parametrize("compressed", [False, True])
def test_malformed_files_raise_dataset_error_naming_file(tmp_path, case, compressed):
    data, message = bad_cases()[case]
    path = tmp_path / f"bad-{case.replace(' ', '_')}"
    path.write_bytes(gzip.compress(data) if compressed else data)
    tracemalloc.start()
    try:
        with pytest.raises(DatasetError, match=message) as info:
            read_idx(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)
    assert peak < 50 * 2**20  # none of the malformed cases allocates more than a few MB


def test_gzip_bomb_is_refused_before_decompressing_it_all(tmp_path):
    # A valid header declaring 3 GB followed by highly compressible zeros: refused from the header alone.
    bomb = gzip.compress(header(0x08, (3_000_000_000,)) + bytes(10_000_000), compresslevel=9)
    path = tmp_path / "bomb.gz"
    path.write_bytes(bomb)
    with pytest.raises(DatasetError, match="above the limit"):
        read_idx(path)
    # Within a small limit a real payload is refused too; the limit is a module constant.
    assert MAX_IDX_BYTES == 2 * 1024**3
    write_idx(tmp_path / "ok.gz", np.zeros(1000, np.uint8))
    with pytest.raises(DatasetError, match="above the limit of 999 bytes"):
        read_idx(tmp_path / "ok.gz", max_bytes=999)


def test_gzip_claiming_more_than_it_holds_reads_only_what_is_there(tmp_path):
    # Declares 1.5 GB (under the limit) but holds 10 bytes: must fail without allocating the declared size.
    path = tmp_path / "liar.gz"
    path.write_bytes(gzip.compress(header(0x08, (1_500_000_000,)) + bytes(10)))
    tracemalloc.start()
    try:
        with pytest.raises(DatasetError, match="found 10"):
            read_idx(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50 * 2**20


@pytest.mark.parametrize("damage", ["truncate", "flip", "trailing-garbage-crc"])
def test_truncated_or_corrupt_gzip(tmp_path, rng, damage):
    data = bytearray(gzip.compress(idx_bytes(random_array(np.uint8, (50, 28, 28), rng))))
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip":
        data[len(data) // 2] ^= 0xFF
    else:  # break the CRC stored in the trailer
        data[-8] ^= 0xFF
    path = tmp_path / "damaged.gz"
    path.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match=r"damaged.gz.*(truncated or corrupt gzip|shorter|longer)"):
        read_idx(path)


def test_missing_file_is_an_os_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "nope.gz")


# ---------------------------------------------------------------- registry, look-up, errors


def test_names_and_classes():
    assert set(DATASET_NAMES) == {
        "mnist",
        "fashion-mnist",
        "mnist-sample",
        "synthetic",
        "synthetic-color",
        "fortunes",
        "fortunes-min",
    }  # the last two: text corpora
    assert class_names("mnist") == [str(d) for d in range(10)] == class_names("mnist-sample")
    assert class_names("fashion-mnist") == [
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
    ]
    with pytest.raises(DatasetError, match=r"unknown dataset 'cifar'.*mnist"):
        load_dataset("cifar")
    with pytest.raises(ValueError, match="split must be one of train, test; got 'validation'"):
        load_dataset("mnist-sample", split="validation")


def write_fake(root, name, n=12, n_labels=None, stem_style="standard", seed=0):
    """A tiny dataset under root/name with its checksums; returns (X, y, sha256 per stem)."""
    rng = np.random.default_rng(seed)
    folder = pathlib.Path(root) / name
    folder.mkdir(parents=True, exist_ok=True)
    X = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    y = (np.arange(n if n_labels is None else n_labels) % 10).astype(np.uint8)
    sums = {}
    for split in ("train", "test"):
        for stem, a in zip(registry.STEMS[split], (X, y)):
            fname = {
                "standard": stem + ".gz",
                "raw": stem,
                "dotted": stem.replace("-idx", ".idx", 1) + ".gz",
                "dotted-raw": stem.replace("-idx", ".idx", 1),
            }[stem_style]
            write_idx(folder / fname, a)
            sums[stem] = hashlib.sha256(idx_bytes(a)).hexdigest()
    return X, y, sums


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """No HANDGRAD_DATA, an empty cache, no system folders, no mirrors: nothing outside tmp_path is seen."""
    monkeypatch.delenv("HANDGRAD_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

    def patch(name, **changes):
        import dataclasses

        spec = dataclasses.replace(registry.REGISTRY[name], **changes)
        monkeypatch.setitem(registry.REGISTRY, name, spec)
        return spec

    patch("mnist", mirrors=())
    patch("fashion-mnist", mirrors=(), system_dirs=(str(tmp_path / "system"),))
    return patch


@pytest.mark.parametrize("style", ["standard", "raw", "dotted", "dotted-raw"])
def test_file_name_variants_and_data_dir(tmp_path, isolated, style):
    X, y, sums = write_fake(tmp_path / "root", "mnist", stem_style=style)
    isolated("mnist", mirrors=(), sha256=sums)
    Xl, yl = load_dataset("mnist", tmp_path / "root", "test", download=False)
    assert Xl.dtype == np.uint8 and yl.dtype == np.int64
    np.testing.assert_array_equal(Xl, X)
    np.testing.assert_array_equal(yl, y)


def test_look_up_order(tmp_path, isolated, monkeypatch):
    # The same stems in data_dir, HANDGRAD_DATA and the cache, with different content: the order decides.
    X1, _, s1 = write_fake(tmp_path / "arg", "mnist", seed=1)
    X2, _, s2 = write_fake(tmp_path / "env", "mnist", seed=2)
    X3, _, s3 = write_fake(tmp_path / "cache" / "handgrad", "mnist", seed=3)
    monkeypatch.setenv("HANDGRAD_DATA", str(tmp_path / "env"))
    isolated("mnist", sha256=s1)
    np.testing.assert_array_equal(load_dataset("mnist", tmp_path / "arg", download=False)[0], X1)
    isolated("mnist", sha256=s2)
    np.testing.assert_array_equal(load_dataset("mnist", None, download=False)[0], X2)
    monkeypatch.delenv("HANDGRAD_DATA")
    isolated("mnist", sha256=s3)
    np.testing.assert_array_equal(load_dataset("mnist", None, download=False)[0], X3)


def test_fashion_system_folder_is_searched_last(tmp_path, isolated):
    X, _, sums = write_fake(tmp_path / "sys-root", "fashion-mnist", seed=4)
    isolated("fashion-mnist", sha256=sums, system_dirs=(str(tmp_path / "sys-root" / "fashion-mnist"),))
    np.testing.assert_array_equal(load_dataset("fashion-mnist", tmp_path / "empty", download=False)[0], X)


def test_not_found_says_where_it_looked_and_what_to_do(tmp_path, isolated, monkeypatch):
    monkeypatch.setenv("HANDGRAD_DATA", str(tmp_path / "env"))
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("fashion-mnist", tmp_path / "arg", download=False)
    msg = str(info.value)
    for where in [
        tmp_path / "arg" / "fashion-mnist",
        tmp_path / "env" / "fashion-mnist",
        tmp_path / "cache" / "handgrad" / "fashion-mnist",
        tmp_path / "system",
    ]:
        assert str(where) in msg
    assert "HANDGRAD_DATA" in msg and "--data-dir" in msg and "download" in msg
    assert "train-images-idx3-ubyte.gz" in msg
    assert isinstance(info.value, DatasetError)


def test_checksum_mismatch_names_file_and_digests(tmp_path, isolated):
    _, _, sums = write_fake(tmp_path / "root", "mnist")
    wrong = dict(sums, **{"train-images-idx3-ubyte": "0" * 64})
    isolated("mnist", sha256=wrong)
    with pytest.raises(ChecksumError) as info:
        load_dataset("mnist", tmp_path / "root", "train", download=False)
    msg = str(info.value)
    assert "train-images-idx3-ubyte.gz" in msg and "0" * 64 in msg and sums["train-images-idx3-ubyte"] in msg


def test_image_and_label_counts_must_agree(tmp_path, isolated):
    _, _, sums = write_fake(tmp_path / "root", "mnist", n=12, n_labels=11)
    isolated("mnist", sha256=sums)
    with pytest.raises(DatasetError, match="12 images but 11 labels"):
        load_dataset("mnist", tmp_path / "root", "test", download=False)


# ---------------------------------------------------------------- bundled sample and synthetic digits


SAMPLE_DIR = registry.SAMPLE_DIR


def test_bundled_sample_shapes_counts_and_size():
    X, y = load_dataset("mnist-sample")
    Xt, yt = load_dataset("mnist-sample", split="test")
    assert X.shape == (6000, 28, 28) and X.dtype == np.uint8 and y.dtype == np.int64
    assert Xt.shape == (1000, 28, 28) and yt.shape == (1000,)
    assert np.bincount(y).tolist() == [600] * 10
    assert np.bincount(y[-1000:]).tolist() == [100] * 10  # the validation part is stratified too
    assert np.bincount(yt).tolist() == [100] * 10
    total = sum(p.stat().st_size for p in SAMPLE_DIR.iterdir())
    assert total <= 3 * 1024**2
    manifest = json.loads((SAMPLE_DIR / "manifest.json").read_text())
    assert set(manifest["files"]) >= {"train-images-idx3-ubyte", "t10k-labels-idx1-ubyte"}


def test_sample_splits_and_float_features():
    s = load_splits("mnist-sample")
    assert isinstance(s, Splits) and s.name == "mnist-sample" and s.classes == class_names("mnist")
    assert [len(p[0]) for p in (s.train, s.val, s.test)] == [5000, 1000, 1000]
    for X, y in (s.train, s.val, s.test):
        assert X.dtype == np.float32 and X.shape[1:] == (28, 28) and y.dtype == np.int64
        assert X.min() >= 0 and X.max() <= 1
    Xu, yu = load_dataset("mnist-sample")
    np.testing.assert_array_equal(s.val[0], Xu[-1000:] / np.float32(255))
    np.testing.assert_array_equal(s.val[1], yu[-1000:])
    assert len(load_splits("mnist-sample", val_size=0).val[0]) == 0
    expected = r"val_size for mnist-sample \(6,000 training images\) must be an integer in \[0, 5999\]"
    with pytest.raises(ValueError, match=expected + ", got 6000"):
        load_splits("mnist-sample", val_size=6000)
    with pytest.raises(ValueError, match=expected + ", got 1.5"):
        load_splits("mnist-sample", val_size=1.5)


def test_damaged_sample_is_refused(tmp_path, monkeypatch):
    import shutil

    copy = tmp_path / "mnist-sample"
    shutil.copytree(SAMPLE_DIR, copy)
    labels = copy / "t10k-labels-idx1-ubyte.gz"
    y = read_idx(labels)
    y[0] = (y[0] + 1) % 10
    write_idx(labels, y)
    monkeypatch.setattr(registry, "SAMPLE_DIR", copy)
    with pytest.raises(ChecksumError, match=r"t10k-labels-idx1-ubyte.gz"):
        load_dataset("mnist-sample", split="test")


def test_sample_pixels_equal_the_full_mnist_images():
    root = real_data_dir()
    for split, prefix in (("train", "train"), ("test", "t10k")):
        X, y = load_dataset("mnist-sample", split=split)
        index = read_idx(SAMPLE_DIR / f"{prefix}-indices-idx1-int.gz")
        Xf, yf = load_dataset("mnist", root, split, download=False)
        assert len(np.unique(index)) == len(index)
        np.testing.assert_array_equal(X, Xf[index])
        np.testing.assert_array_equal(y, yf[index])


def test_synthetic_is_deterministic_balanced_and_learnable():
    X, y = make_synthetic_digits(500, seed=3)
    X2, y2 = make_synthetic_digits(500, seed=3)
    X3, _ = make_synthetic_digits(500, seed=4)
    np.testing.assert_array_equal(X, X2)
    np.testing.assert_array_equal(y, y2)
    assert not np.array_equal(X, X3)
    assert X.shape == (500, 28, 28) and X.dtype == np.uint8 and y.dtype == np.int64
    assert np.bincount(y).tolist() == [50] * 10
    assert make_synthetic_digits(0)[0].shape == (0, 28, 28)
    assert make_synthetic_digits(7)[0].shape == (7, 28, 28)
    # Learnable: a ridge-regression linear classifier fitted on one seed scores > 90% on another seed.
    Xa, ya = make_synthetic_digits(2000, seed=1)
    A = np.c_[Xa.reshape(-1, 784) / 255.0, np.ones(len(Xa))]
    W = np.linalg.solve(A.T @ A + np.eye(785), A.T @ np.eye(10)[ya])
    Xt, yt = make_synthetic_digits(500, seed=9)
    pred = np.argmax(np.c_[Xt.reshape(-1, 784) / 255.0, np.ones(len(Xt))] @ W, axis=1)
    assert (pred == yt).mean() > 0.9
    with pytest.raises(ValueError, match="n must be a non-negative integer, got -1"):
        make_synthetic_digits(-1)


def test_synthetic_through_load_dataset_and_splits():
    X, _y = load_dataset("synthetic")
    Xt, _ = load_dataset("synthetic", split="test")
    assert X.shape == (6000, 28, 28) and Xt.shape == (1000, 28, 28)
    np.testing.assert_array_equal(X, make_synthetic_digits(6000, seed=0)[0])
    assert not np.array_equal(Xt, X[:1000])
    s = load_splits("synthetic")
    assert [len(p[0]) for p in (s.train, s.val, s.test)] == [5000, 1000, 1000]
    assert s.classes == [str(d) for d in range(10)]


# ---------------------------------------------------------------- the real datasets (HANDGRAD_DATA)


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_real_datasets_load_and_verify(name):
    root = real_data_dir()
    X, y = load_dataset(name, root, "train", download=False)
    Xt, yt = load_dataset(name, root, "test", download=False)
    assert X.shape == (60000, 28, 28) and Xt.shape == (10000, 28, 28)
    assert X.dtype == np.uint8 and y.dtype == np.int64
    # Independent check of the published checksums on the decompressed files.
    for stem, expected in registry.REGISTRY[name].sha256.items():
        with gzip.open(os.path.join(root, name, stem + ".gz")) as f:
            assert hashlib.sha256(f.read()).hexdigest() == expected
    if name == "mnist":
        assert np.bincount(y).tolist() == MNIST_TRAIN_COUNTS
        assert np.bincount(yt).tolist() == MNIST_TEST_COUNTS
        assert y[:5].tolist() == [5, 0, 4, 1, 9]
    else:  # Fashion-MNIST is balanced
        assert np.bincount(y).tolist() == [6000] * 10 and np.bincount(yt).tolist() == [1000] * 10


def test_real_mnist_splits():
    root = real_data_dir()
    s = load_splits("mnist", root, download=False)
    assert [len(p[0]) for p in (s.train, s.val, s.test)] == [50000, 10000, 10000]
    assert s.train[0].dtype == np.float32 and s.train[0].max() == 1.0 and s.train[0].min() == 0.0
    assert s.train[1][:5].tolist() == [5, 0, 4, 1, 9]
    assert (np.bincount(s.train[1]) + np.bincount(s.val[1])).tolist() == MNIST_TRAIN_COUNTS
