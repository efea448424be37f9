"""``handgrad evaluate``'s metrics of §11.1 and §11.5: coverage at an accuracy, the most confident
mistakes."""

import functools
import json
import tempfile

import numpy as np
import pytest

from handgrad import cli
from handgrad.app import TrainConfig, train
from handgrad.app.checkpoint import load_checkpoint
from handgrad.app.config import ConfigError
from handgrad.app.evaluation import (
    coverage_at_accuracy,
    coverage_at_threshold,
    coverage_curve,
    evaluate,
    worst_mistakes,
)
from handgrad.datasets import load_splits

CONF = [0.9, 0.8, 0.7, 0.6, 0.5]
RIGHT = [True, True, False, True, False]


def test_coverage_at_threshold_0_is_everything_with_the_plain_accuracy():
    assert coverage_at_threshold(CONF, RIGHT, 0.0) == (1.0, 0.6)
    assert coverage_at_threshold(CONF, RIGHT, 0.75) == (0.4, 1.0)
    assert coverage_at_threshold(CONF, RIGHT, 0.95)[0] == 0.0


def test_coverage_at_an_accuracy_on_a_hand_made_set():
    # answered, most confident first: 1/1, 2/2, 2/3, 3/4, 3/5 right
    assert coverage_at_accuracy(CONF, RIGHT, 0.99) == (0.4, 0.8)
    assert coverage_at_accuracy(CONF, RIGHT, 0.75) == (0.8, 0.6)
    assert coverage_at_accuracy(CONF, RIGHT, 0.6) == (1.0, 0.5)
    assert coverage_at_accuracy([0.9, 0.8], [False, True], 0.99) == (0.0, None)
    thresholds, coverage, accuracy = coverage_curve(CONF, RIGHT)
    np.testing.assert_allclose(coverage, [0.2, 0.4, 0.6, 0.8, 1.0])
    np.testing.assert_allclose(accuracy, [1, 1, 2 / 3, 3 / 4, 3 / 5])
    np.testing.assert_allclose(thresholds, CONF)


def test_tied_confidences_are_answered_together():
    # the right one of the tie sorts first, but a threshold cannot split a tie: 1 of 2 right at 0.9
    thresholds, coverage, accuracy = coverage_curve([0.9, 0.9, 0.8], [True, False, True])
    np.testing.assert_allclose(thresholds, [0.9, 0.8])
    np.testing.assert_allclose(coverage, [2 / 3, 1.0])
    np.testing.assert_allclose(accuracy, [0.5, 2 / 3])
    assert coverage_at_accuracy([0.9, 0.9, 0.8], [True, False, True], 0.99) == (0.0, None)


def test_worst_mistakes_are_the_wrong_answers_of_highest_confidence():
    got = worst_mistakes([0.5, 0.99, 0.7, 0.95, 0.6], [0, 1, 2, 3, 4], [0, 2, 2, 1, 0], 2)
    assert got == [
        {"index": 1, "true": 1, "predicted": 2, "confidence": 0.99},
        {"index": 3, "true": 3, "predicted": 1, "confidence": 0.95},
    ]
    assert len(worst_mistakes([0.5], [1], [0], 5)) == 1 and worst_mistakes([0.5], [1], [1], 5) == []


@functools.cache
def run_dir():
    out = tempfile.mkdtemp(prefix="handgrad-test-eval-") + "/run"
    with open("/dev/null", "w") as devnull:
        train(
            TrainConfig(
                dataset="mnist-sample", epochs=2, limit=2000, hidden=(32,), out=out, plots=False, quiet=True
            ),
            stdout=devnull,
        )
    return out


def _independent_confidences():
    """Softmax confidences and predictions of the best checkpoint on the test set, from its arrays alone."""
    p = load_checkpoint(run_dir() + "/best.npz").params
    X, y = load_splits("mnist-sample").test
    z = np.maximum(X.reshape(len(X), -1) @ p["0.W"] + p["0.b"], 0) @ p["2.W"] + p["2.b"]
    z = z.astype(np.float64)
    prob = np.exp(z - z.max(1, keepdims=True))
    prob /= prob.sum(1, keepdims=True)
    return prob.max(1), prob.argmax(1), y


def test_evaluate_reports_the_coverage_a_brute_force_search_finds():
    result = evaluate(run_dir())
    conf, pred, y = _independent_confidences()
    right = pred == y
    assert result.accuracy == pytest.approx(right.mean())
    for entry, target in zip(result.coverage, (0.99, 0.995)):
        best = max((np.mean(conf >= t) for t in conf if right[conf >= t].mean() >= target), default=0.0)
        assert entry["accuracy"] == target
        assert entry["coverage"] == pytest.approx(best, abs=1.5 / len(y))  # float32 vs float64 ties
        assert 0.0 < entry["coverage"] < 1.0  # the model is below 99% overall, some examples reach it


def test_evaluate_worst_k_lists_the_most_confident_mistakes_and_draws_them(tmp_path, capsys):
    conf, pred, y = _independent_confidences()
    wrong = np.flatnonzero(pred != y)
    expected = wrong[np.argsort(-conf[wrong])][:4]
    assert cli.main(["evaluate", run_dir(), "--worst", "4", "--plots", str(tmp_path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [w["index"] for w in out["worst"]] == expected.tolist()
    assert [w["true"] for w in out["worst"]] == y[expected].tolist()
    np.testing.assert_allclose([w["confidence"] for w in out["worst"]], conf[expected], rtol=1e-4)
    assert [c["accuracy"] for c in out["coverage"]] == [0.99, 0.995]
    for name in ("coverage.png", "worst.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    assert cli.main(["evaluate", run_dir(), "--worst", "3"]) == 0
    text = capsys.readouterr().out
    assert "coverage at 99% accuracy: " in text and "coverage at 99.5% accuracy: " in text
    table = text.split("the 3 most confident mistakes\n")[1].splitlines()
    assert table[0].split() == ["index", "true", "predicted", "confidence"]
    assert [int(line.split()[0]) for line in table[1:4]] == expected[:3].tolist()


def test_a_negative_worst_is_a_one_line_error(capsys):
    assert cli.main(["evaluate", run_dir(), "--worst", "-1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("handgrad: error: worst must be") and err.count("\n") == 1
    with pytest.raises(ConfigError):
        evaluate(run_dir(), worst=-2)
