"""Datasets carry their shape, and the application follows it: the spec facts of every registered dataset,
registering a dataset of its own, and an MLP and a CNN trained, checkpointed, evaluated and asked to
predict end to end on the 3x16x16 four-class ``synthetic-color``."""

import dataclasses
import functools
import io
import json
import math
import pathlib
import tempfile

import numpy as np
import pytest
from PIL import Image

from handgrad import datasets
from handgrad.app import TrainConfig, evaluate, predict, train
from handgrad.app.checkpoint import load_checkpoint
from handgrad.app.predict import Predictor
from handgrad.app.server import PredictionService
from handgrad.datasets import (
    DATASET_NAMES,
    DatasetError,
    DatasetSpec,
    get_spec,
    load_dataset,
    load_image,
    load_splits,
    make_synthetic_color,
    register_dataset,
    registry,
)

COLOR_CLASSES = ["red square", "green disc", "blue stripes", "yellow cross"]
DIGITS = [str(d) for d in range(10)]
FASHION = [
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

# name -> (input_shape, classes, kind, source): the facts each dataset is documented to have.
SPEC_FACTS = {
    "mnist": ((28, 28), DIGITS, "images", "files"),
    "fashion-mnist": ((28, 28), FASHION, "images", "files"),
    "mnist-sample": ((28, 28), DIGITS, "images", "bundled"),
    "synthetic": ((28, 28), DIGITS, "images", "generated"),
    "synthetic-color": ((3, 16, 16), COLOR_CLASSES, "images", "generated"),
    "fortunes": ((), [], "text", "files"),  # a corpus: the vocabulary comes from the text
    "fortunes-min": ((), [], "text", "bundled"),
}


# ---------------------------------------------------------------- the spec facts


def test_every_registered_dataset_has_its_documented_shape_classes_and_kind():
    assert set(DATASET_NAMES) == set(SPEC_FACTS)
    for name, (shape, classes, kind, source) in SPEC_FACTS.items():
        spec = get_spec(name)
        assert spec.input_shape == shape, name
        assert list(spec.classes) == classes and spec.n_classes == len(classes), name
        assert spec.kind == kind and spec.source == source, name


@pytest.mark.parametrize("name", ["mnist-sample", "synthetic", "synthetic-color"])
def test_splits_carry_the_spec_and_the_arrays_follow_it(name):
    s = load_splits(name)
    shape, classes, kind, _ = SPEC_FACTS[name]
    assert s.spec is get_spec(name) and s.input_shape == shape and s.n_classes == len(classes)
    assert s.kind == kind and s.classes == classes
    for X, y in (s.train, s.val, s.test):
        assert X.dtype == np.float32 and X.shape[1:] == shape and X.min() >= 0 and X.max() <= 1
        assert y.dtype == np.int64 and y.min() >= 0 and y.max() == len(classes) - 1


def test_synthetic_color_is_deterministic_balanced_and_colour_carries_the_class():
    X, y = make_synthetic_color(400, seed=3)
    assert X.shape == (400, 3, 16, 16) and X.dtype == np.uint8 and y.dtype == np.int64
    assert np.bincount(y).tolist() == [100] * 4
    X2, y2 = make_synthetic_color(400, seed=3)
    assert np.array_equal(X, X2) and np.array_equal(y, y2)
    assert not np.array_equal(make_synthetic_color(400, seed=4)[0], X)
    Xtr, _ = load_dataset("synthetic-color", split="train")
    Xte, _ = load_dataset("synthetic-color", split="test")
    assert Xtr.shape == (3000, 3, 16, 16) and Xte.shape == (600, 3, 16, 16)
    assert not np.array_equal(Xtr[:600], Xte)  # the test split is drawn from another seed
    # The brightest pixels of each class lean to its colour: red, green, blue, red + green (yellow).
    top = X.reshape(400, 3, -1).astype(np.float64)
    bright = np.take_along_axis(top, np.argsort(top.sum(axis=1), axis=1)[:, None, -20:], axis=2).mean(axis=2)
    mean_rgb = np.stack([bright[y == k].mean(axis=0) for k in range(4)]) / 255
    assert mean_rgb[0, 0] > 0.6 > mean_rgb[0, 2] and mean_rgb[1, 1] > 0.6 > mean_rgb[1, 0]
    assert mean_rgb[2, 2] > 0.6 > mean_rgb[2, 0] and min(mean_rgb[3, :2]) > 0.6 > mean_rgb[3, 2]


def test_registering_a_generated_dataset_of_its_own(monkeypatch):
    monkeypatch.setattr(registry, "REGISTRY", dict(registry.REGISTRY))

    def stripes(n, seed):
        rng = np.random.default_rng(seed)
        y = rng.integers(0, 3, n)
        X = np.zeros((n, 5, 7), np.uint8)
        for i, k in enumerate(y):
            X[i, :, k::3] = 200
        return X, y

    spec = register_dataset(
        DatasetSpec(
            name="tiny-stripes",
            classes=["a", "b", "c"],
            source="generated",
            input_shape=[5, 7],
            generator=stripes,
            sizes={"train": 60, "test": 12},
        )
    )
    assert spec.input_shape == (5, 7) and spec.n_classes == 3 and spec.kind == "images"
    assert "tiny-stripes" in datasets.DATASET_NAMES and "tiny-stripes" in registry.DATASET_NAMES
    s = load_splits("tiny-stripes")
    assert s.input_shape == (5, 7) and len(s.train[0]) == 50 and len(s.val[0]) == 10
    assert s.test[0].shape == (12, 5, 7)
    # A generator that breaks its own spec is caught by the same checks as a file.
    bad = dataclasses.replace(
        spec, name="bad-labels", generator=lambda n, seed: (np.zeros((n, 5, 7), np.uint8), np.full(n, 3))
    )
    register_dataset(bad)
    with pytest.raises(DatasetError, match=r"labels must be 0-2 \(3 classes\), found 3"):
        load_dataset("bad-labels")
    wrong_shape = dataclasses.replace(spec, name="bad-shape", input_shape=(7, 5))
    register_dataset(wrong_shape)
    with pytest.raises(DatasetError, match=r"uint8 \(n, 7, 5\) for bad-shape, got uint8 \(60, 5, 7\)"):
        load_dataset("bad-shape")


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(input_shape=(28,)), "input_shape must be"),
        (dict(input_shape=(3, 0, 16)), "input_shape must be"),
        (dict(classes=["only"]), "two or more distinct class names"),
        (dict(classes=["a", "a"]), "two or more distinct class names"),
        (dict(kind="video"), "kind must be one of images"),
        (dict(source="cloud"), "source must be one of files, bundled, generated"),
        (dict(generator=None), "needs a generator"),
    ],
)
def test_a_malformed_spec_is_refused_when_made(changes, message):
    with pytest.raises(DatasetError, match=message):
        dataclasses.replace(get_spec("synthetic-color"), **changes)
    with pytest.raises(TypeError, match="expects a DatasetSpec"):
        register_dataset({"name": "x"})


def test_idx_checks_use_the_specs_shape_and_class_count(tmp_path, monkeypatch):
    import hashlib

    from handgrad.datasets import write_idx
    from handgrad.datasets.idx import idx_bytes

    monkeypatch.setattr(registry, "REGISTRY", dict(registry.REGISTRY))
    X = np.zeros((6, 3, 16, 16), np.uint8)
    folder = tmp_path / "colour-files"
    folder.mkdir()
    sums = {}
    for labels, split in (
        (np.array([0, 1, 2, 3, 0, 1], np.uint8), "train"),
        (np.array([0, 1, 2, 3, 4, 0], np.uint8), "test"),
    ):
        for stem, a in zip(registry.STEMS[split], (X, labels)):
            write_idx(folder / (stem + ".gz"), a)
            sums[stem] = hashlib.sha256(idx_bytes(a)).hexdigest()
    register_dataset(
        DatasetSpec(
            name="colour-files", classes=COLOR_CLASSES, source="files", input_shape=(3, 16, 16), sha256=sums
        )
    )
    Xl, yl = load_dataset("colour-files", tmp_path, "train", download=False)
    assert Xl.shape == (6, 3, 16, 16) and yl.tolist() == [0, 1, 2, 3, 0, 1]
    with pytest.raises(DatasetError, match=r"labels must be 0-3 \(4 classes\), found 4"):
        load_dataset("colour-files", tmp_path, "test", download=False)
    register_dataset(
        DatasetSpec(
            name="colour-files", classes=COLOR_CLASSES, source="files", input_shape=(28, 28), sha256=sums
        )
    )
    with pytest.raises(DatasetError, match=r"images must be uint8 \(n, 28, 28\) for colour-files"):
        load_dataset("colour-files", tmp_path, "train", download=False)


# ---------------------------------------------------------------- load_image for a target shape


def png(array):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_load_image_resizes_colour_to_the_target_shape():
    rgb = np.zeros((64, 32, 3), np.uint8)
    rgb[:32, :, 0] = 255  # red top half
    rgb[32:, :, 2] = 128  # half-blue bottom half
    out = load_image(png(rgb), (3, 16, 8))
    assert out.shape == (3, 16, 8) and out.dtype == np.float32
    np.testing.assert_allclose(out[0, :8], 1.0)
    np.testing.assert_allclose(out[0, 8:], 0.0)
    np.testing.assert_allclose(out[2, 8:], 128 / 255, atol=1e-6)
    np.testing.assert_allclose(out[1], 0.0)
    grey = load_image(png(rgb), (1, 4, 4))
    assert grey.shape == (1, 4, 4)
    np.testing.assert_allclose(grey[0, :2], 0.299, atol=0.01)  # Pillow's luminance of pure red
    # 2-D shapes keep the MNIST procedure, with its box and centre as fractions of the field.
    digit = np.zeros((100, 100), np.uint8)
    digit[20:80, 45:55] = 255
    out = load_image(png(digit), (14, 14))
    rows, cols = np.flatnonzero(out.any(axis=1)), np.flatnonzero(out.any(axis=0))
    assert out.shape == (14, 14) and rows[-1] - rows[0] + 1 == 10  # 20/28 of 14
    assert (
        cols.size <= 3 and abs((rows[0] + rows[-1]) / 2 - 7) <= 1 and abs((cols[0] + cols[-1]) / 2 - 7) <= 1
    )
    assert load_image(png(digit)).shape == (28, 28)  # the default is MNIST's field
    with pytest.raises(DatasetError, match=r"cannot prepare images for examples of shape \(2, 8, 8\)"):
        load_image(png(rgb), (2, 8, 8))


# ---------------------------------------------------------------- training, evaluation and prediction


def colour_png(path, class_index):
    """A clean picture of class ``class_index`` drawn at 64x64, which predict scales down to 16x16."""
    X, y = make_synthetic_color(40, seed=11)
    k = int(np.flatnonzero(y == class_index)[0])
    big = np.kron(X[k].transpose(1, 2, 0), np.ones((4, 4, 1), np.uint8))
    Image.fromarray(big, mode="RGB").save(path)
    return path


@functools.cache
def trained(model):
    out = tempfile.mkdtemp(prefix=f"handgrad-shapes-{model}-")
    settings = dict(
        mlp=dict(hidden=(64,), lr=0.05),
        cnn=dict(channels=(8, 16), hidden=(32,), augment=False, batch_size=64, dropout=0.0),
    )[model]
    config = TrainConfig(
        dataset="synthetic-color", model=model, epochs=2, out=out + "/run", plots=True, quiet=True, **settings
    )
    return train(config, stdout=open("/dev/null", "w"))


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_train_checkpoint_evaluate_predict_on_colour_images(model, tmp_path):
    result = trained(model)
    assert result.dataset == "synthetic-color" and result.epochs == 2
    assert result.test_accuracy > 0.9 and result.best_val_accuracy > 0.9  # chance is 0.25
    ckpt = load_checkpoint(result.run_dir + "/best.npz")
    arch = ckpt.metadata["arch"]
    assert arch["type"] == model and arch["input_shape"] == [3, 16, 16] and arch["n_classes"] == 4
    assert ckpt.metadata["classes"] == COLOR_CLASSES
    if model == "mlp":
        assert ckpt.params["0.W"].shape == (3 * 16 * 16, 64) and ckpt.params["2.W"].shape == (64, 4)
    else:
        assert ckpt.params["0.W"].shape == (8, 3, 3, 3)
    for name in ("curves.png", "confusion.png", "misclassified.png", "weights.png"):
        with Image.open(f"{result.run_dir}/{name}") as img:
            assert img.format == "PNG" and img.size[0] > 100

    report = evaluate(result.run_dir, plots_dir=tmp_path / "plots")
    assert report.dataset == "synthetic-color" and report.n == 600 and report.classes == COLOR_CLASSES
    assert report.accuracy == pytest.approx(result.test_accuracy)
    assert np.array(report.confusion).shape == (4, 4) and np.sum(report.confusion) == 600
    assert sorted(pathlib.Path(p).name for p in report.plots) == [
        "confusion.png",
        "coverage.png",
        "misclassified.png",
    ]

    paths = [colour_png(tmp_path / f"class{k}.png", k) for k in range(4)]
    answers = predict(result.run_dir, paths)
    for k, answer in enumerate(answers):
        assert answer["classes"] == COLOR_CLASSES and len(answer["probabilities"]) == 4
        assert math.isclose(sum(answer["probabilities"]), 1.0, rel_tol=1e-9)
        assert np.array(answer["input"]).shape == (3, 16, 16)
        assert answer["label"] == COLOR_CLASSES[k] and answer["confidence"] > 0.5
    predictor = Predictor.from_checkpoint(result.run_dir)
    assert predictor.input_shape == (3, 16, 16)
    assert PredictionService(predictor).info()["input_shape"] == [3, 16, 16]
    json.dumps(answers, default=str)


def test_evaluate_refuses_a_dataset_of_another_shape_or_class_count():
    run = trained("mlp").run_dir
    with pytest.raises(DatasetError, match=r"mnist-sample has 10 classes but the model predicts 4"):
        evaluate(run, dataset="mnist-sample")
    register = dataclasses.replace(
        get_spec("synthetic"),
        name="synthetic-4",
        classes=DIGITS[:4],
        generator=lambda n, seed: (np.zeros((n, 28, 28), np.uint8), np.arange(n) % 4),
    )
    old = dict(registry.REGISTRY)
    try:
        register_dataset(register)
        with pytest.raises(DatasetError, match=r"shape \(28, 28\) but the model takes \(3, 16, 16\)"):
            evaluate(run, dataset="synthetic-4")
    finally:
        registry.REGISTRY.clear()
        registry.REGISTRY.update(old)


# ---------------------------------------------------------------- plots of any image shape


def test_plots_lay_out_grey_and_colour_images_channels_last():
    from handgrad.app import plots

    rng = np.random.default_rng(0)
    X = rng.random((5, 3, 4, 6))
    pictures = plots._pictures(X, (3, 4, 6))
    assert pictures.shape == (5, 4, 6, 3)
    assert pictures[2, 1, 5, 0] == X[2, 0, 1, 5] and pictures[4, 3, 0, 2] == X[4, 2, 3, 0]
    assert plots._pictures(X[:, :1], (1, 4, 6)).shape == (5, 4, 6)
    flat = X.reshape(5, -1)[:, :24]
    assert np.array_equal(plots._pictures(flat, (4, 6)), flat.reshape(5, 4, 6))
    mosaic, rows = plots._mosaic(pictures, cols=2, pad=1, fill=1.0)
    assert mosaic.shape == (3 * 5 + 1, 2 * 7 + 1, 3) and rows == 3
    assert np.array_equal(mosaic[1 + 5 : 1 + 5 + 4, 1 + 7 : 1 + 7 + 6], pictures[3])  # row 1, column 1
    assert mosaic[0, 0].tolist() == [1.0, 1.0, 1.0]


def test_plots_draw_colour_images_in_colour(tmp_path):
    from handgrad.app import plots

    pytest.importorskip("matplotlib")

    red = np.zeros((4, 3, 16, 16), np.float32)
    red[:, 0] = 1.0
    truth, guess = [0, 1, 2, 3], [1, 1, 0, 0]
    path = plots.plot_misclassified(red, truth, guess, COLOR_CLASSES, tmp_path / "m.png", cols=2)
    rgb = np.asarray(Image.open(path).convert("RGB")).astype(int)
    pure_red = (rgb[..., 0] > 200) & (rgb[..., 1] < 40) & (rgb[..., 2] < 40)
    assert pure_red.sum() > 1000  # the tiles are drawn in their own colour, not as grey levels
    grey = plots.plot_misclassified(red[:, 0], truth, guess, COLOR_CLASSES, tmp_path / "g.png", cols=2)
    g = np.asarray(Image.open(grey).convert("RGB")).astype(int)
    assert ((g[..., 0] > 200) & (g[..., 1] < 40) & (g[..., 2] < 40)).sum() < 300  # only the crimson labels
    W = np.random.default_rng(1).normal(size=(3 * 16 * 16, 9))
    assert plots.plot_first_layer(W, tmp_path / "w.png", (3, 16, 16)).is_file()
    assert plots.plot_first_layer(np.ones((4, 3, 3, 3)), tmp_path / "c.png", (3, 16, 16)).is_file()
    assert plots.plot_first_layer(W, tmp_path / "x.png", (5, 5)) is None  # weights of another input size
