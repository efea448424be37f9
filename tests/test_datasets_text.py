"""Text corpora (datasets/text.py): reading UTF-8, the bad files, the contiguous splits and the vocabulary."""

import gzip
import hashlib

import numpy as np
import pytest
from conftest import real_data_dir

from handgrad.datasets import DatasetError, DatasetNotFoundError, get_spec, load_splits, load_text, read_text
from handgrad.datasets.registry import BUNDLED_DIR
from handgrad.datasets.text import encode, split_text


def test_the_split_is_contiguous_and_the_vocabulary_is_the_training_parts():
    text = "".join(chr(ord("a") + (i * 7) % 26) for i in range(1000))
    s = split_text(text, "t")
    assert (len(s.train), len(s.val), len(s.test), s.dropped) == (900, 50, 50, 0)
    decoded = "".join(s.vocab[i] for i in np.concatenate([s.train, s.val, s.test]))
    assert decoded == text and s.vocab == "".join(sorted(set(text[:900])))
    assert s.train.dtype == np.int32
    # A character the training part lacks cannot be predicted: it is left out of the held-out parts, counted.
    s = split_text("ab" * 95 + "abcabcabcz", "t")
    assert s.vocab == "ab" and s.dropped == 4 and len(s.test) == 6


def test_encode_names_an_unknown_character():
    assert encode("abba", "ab").tolist() == [0, 1, 1, 0]
    with pytest.raises(
        DatasetError,
        match=r"--prime holds the character 'é' \(U\+00E9\), which is not in the "
        r"model's vocabulary of 2 characters",
    ):
        encode("abé", "ab", what="--prime")


def test_gzip_and_plain_files_read_alike(tmp_path):
    text = "héllo, wörld\n" * 20
    (tmp_path / "a.txt").write_text(text, encoding="utf-8")
    (tmp_path / "a.txt.gz").write_bytes(gzip.compress(text.encode()))
    assert read_text(tmp_path / "a.txt") == read_text(tmp_path / "a.txt.gz") == text


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "is empty; a language model needs text"),
        (b" \n\t\n", r"is empty \(only white space\)"),
        (b"abc\x00def", r"is not a text file \(a NUL byte at offset 3: binary data\)"),
        (b"abc\xff\xfe" + b"z" * 10, r"is not UTF-8 text \(invalid byte 0xff at offset 3\)"),
    ],
)
def test_bad_files_are_one_line_errors(tmp_path, content, message):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(DatasetError, match=message) as info:
        read_text(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_a_missing_file_a_folder_and_a_tiny_text(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="not found"):
        read_text(tmp_path / "nope.txt")
    with pytest.raises(DatasetError, match="is a folder"):
        read_text(tmp_path)
    with pytest.raises(DatasetError, match=r"holds 30 characters, too few to hold out 5% for validation"):
        split_text("x" * 30, "tiny")


def test_the_bundled_corpus_is_fortunes_min_with_its_licence():
    spec = get_spec("fortunes-min")
    assert (spec.kind, spec.source, spec.classes, spec.input_shape) == ("text", "bundled", (), ())
    raw = (BUNDLED_DIR / spec.file).read_bytes()
    assert len(raw) == 24_516
    assert (
        hashlib.sha256(raw).hexdigest() == "8819e6b83bacd6b7e8a4a2483f41e126b3b4b3ef8cd2aca907a53b163f082fd5"
    )
    licence = (BUNDLED_DIR / "text" / "LICENSE").read_text()
    assert "The Regents of the University of California" in licence and "Redistribution and use" in licence
    s = load_text(dataset="fortunes-min")
    assert len(s.vocab) == 79 and len(s.train) + len(s.val) + len(s.test) + s.dropped == len(raw.decode())
    with pytest.raises(DatasetError, match="fortunes-min is a text corpus, not a dataset of images"):
        load_splits("fortunes-min")


def test_the_shared_corpus_is_found_through_the_dataset_setting(tmp_path, monkeypatch):
    data = real_data_dir()
    monkeypatch.delenv("HANDGRAD_DATA")
    with pytest.raises(DatasetNotFoundError, match=r"fortunes: text/fortunes.txt.gz not found"):
        load_text(dataset="fortunes", data_dir=tmp_path)
    s = load_text(dataset="fortunes", data_dir=data)
    n = len(s.train) + len(s.val) + len(s.test) + s.dropped
    text = read_text(f"{data}/text/fortunes.txt.gz")
    assert len(text.encode("utf-8")) == 2_165_434 and len(set(text)) == 112  # the data README's facts
    assert n == len(text) and len(s.vocab) == 111 and s.dropped == 1  # one character is only held out
    monkeypatch.setenv("HANDGRAD_DATA", data)
    assert load_text(dataset="fortunes").vocab == s.vocab
