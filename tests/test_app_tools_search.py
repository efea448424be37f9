"""handgrad search (``handgrad.app.tools.search``): the space syntax, random and grid draws, a search that
resumes without re-running finished trials and ranks by validation accuracy, parallel trials with one BLAS
thread each, the best trial's command, and bad spaces as one line before any training."""

import csv
import json
import math
import shlex

import numpy as np
import pytest

from handgrad.app import TrainConfig
from handgrad.app.tools._trials import train_command
from handgrad.app.tools.search import grid, parse_space, sample_random, search
from handgrad.cli import TRAIN_OPTIONS, build_parser, main

BASE = dict(dataset="mnist-sample", limit=600, epochs=2, batch_size=100, hidden=(32,), plots=False)
SPACE = "lr=log(0.01,1) hidden=choice(16,32)"
quiet = lambda *a: None  # noqa: E731


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_the_space_syntax_gives_values_of_each_fields_kind():
    dims = parse_space(
        [
            "lr=log(1e-3,1)",
            "hidden=choice(256,1024-512,none)",
            "dropout=uniform(0,0.5)",
            "epochs=int(5,20)",
            "batch-norm=choice(on,off)",
            "optimizer=choice(momentum,adam)",
        ]
    )
    assert [(d.name, d.kind) for d in dims] == [
        ("lr", "log"),
        ("hidden", "choice"),
        ("dropout", "uniform"),
        ("epochs", "int"),
        ("batch_norm", "choice"),
        ("optimizer", "choice"),
    ]
    assert dims[1].args == ((256,), (1024, 512), ()) and dims[4].args == (True, False)
    assert dims[0].args == (1e-3, 1.0) and dims[3].args == (5, 20)
    assert str(dims[1]) == "hidden=choice(256,1024-512,none)"
    assert parse_space("lr=log(1e-3,1)   momentum=uniform(0.8,0.99)") == parse_space(
        ["lr=log(1e-3,1)", "momentum=uniform(0.8,0.99)"]
    )


def test_random_draws_are_log_uniform_uniform_and_inclusive_integers():
    dims = parse_space("lr=log(1e-3,1) dropout=uniform(0,0.5) epochs=int(5,7) hidden=choice(16,32)")
    draws = sample_random(dims, 4000, seed=1)
    assert draws[:50] == sample_random(dims, 50, seed=1)  # trial i does not depend on how many are drawn
    log_lr = np.log10([d["lr"] for d in draws])
    assert log_lr.min() >= -3 and log_lr.max() <= 0
    assert abs(log_lr.mean() + 1.5) < 0.03 and abs(log_lr.std() - 3 / math.sqrt(12)) < 0.03
    dropout = np.array([d["dropout"] for d in draws])
    assert abs(dropout.mean() - 0.25) < 0.01 and dropout.min() >= 0 and dropout.max() <= 0.5
    assert sorted({d["epochs"] for d in draws}) == [5, 6, 7]
    assert {d["hidden"] for d in draws} == {(16,), (32,)}
    assert all(isinstance(d["epochs"], int) and d["lr"] == float(f"{d['lr']:.3g}") for d in draws)


def test_grid_points_are_geometric_even_and_every_choice():
    dims = parse_space("lr=log(1e-3,1) momentum=uniform(0.5,0.9) hidden=choice(16,32)")
    points = grid(dims, 3)
    assert len(points) == 3 * 3 * 2
    assert sorted({p["lr"] for p in points}) == [0.001, 0.0316, 1.0]
    assert sorted({p["momentum"] for p in points}) == [0.5, 0.7, 0.9]
    assert points[0] == {"lr": 0.001, "momentum": 0.5, "hidden": (16,)}
    assert points[1] == {"lr": 0.001, "momentum": 0.5, "hidden": (32,)}  # the last dimension fastest


def test_a_search_ranks_by_validation_and_resumes_without_rerunning(tmp_path):
    out = tmp_path / "s"
    first = search(SPACE, BASE, trials=2, out=out, log=quiet)
    assert (first.ran, first.skipped) == (2, 0)
    stamps = {t: (out / f"trial-00{t}" / "result.json").stat().st_mtime_ns for t in (1, 2)}
    more = search(SPACE, BASE, trials=3, out=out, log=quiet)  # one more trial: the first two are read back
    assert (more.ran, more.skipped) == (1, 2)
    assert {t: (out / f"trial-00{t}" / "result.json").stat().st_mtime_ns for t in (1, 2)} == stamps
    # Trial 3 interrupted after its last epoch, before its result was stored: continued from last.npz.
    (out / "trial-003" / "result.json").unlink()
    again = search(SPACE, BASE, trials=3, out=out, log=quiet)
    assert (again.ran, again.skipped) == (1, 2)
    by_trial = {t["trial"]: t for t in again.trials}
    assert by_trial[3]["val_accuracy"] == {t["trial"]: t for t in more.trials}[3]["val_accuracy"]

    accs = [t["val_accuracy"] for t in again.trials]
    assert accs == sorted(accs, reverse=True) and [t["rank"] for t in again.trials] == [1, 2, 3]
    for t in again.trials:  # each trial's validation accuracy is its run's best epoch's
        with open(out / f"trial-{t['trial']:03d}" / "metrics.csv", newline="") as f:
            history = list(csv.DictReader(f))
        assert t["val_accuracy"] == pytest.approx(max(float(r["val_accuracy"]) for r in history))
        assert t["settings"] == sample_random(parse_space(SPACE), 3)[t["trial"] - 1]
    with open(again.csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["trial"]) for r in rows] == [t["trial"] for t in again.trials]
    assert [float(r["val_accuracy"]) for r in rows] == pytest.approx(accs, abs=5e-5)
    assert {"lr", "hidden", "seconds", "epochs", "command"} <= set(rows[0])


def test_another_search_in_the_same_folder_is_refused(tmp_path, capsys):
    search(SPACE, BASE, trials=1, out=tmp_path / "s", log=quiet)
    code, _, err = run(
        capsys, "search", "lr=log(0.1,1)", "--dataset", "mnist-sample", "--out", str(tmp_path / "s")
    )
    assert code == 1 and err.count("\n") == 1 and "holds another search" in err


def test_the_best_trials_command_trains_the_same_configuration(tmp_path, capsys):
    code, out, err = run(
        capsys,
        "search",
        "lr=log(0.05,0.5)",
        "batch-norm=choice(on,off)",
        "--method",
        "grid",
        "--grid-points",
        "2",
        "--dataset",
        "mnist-sample",
        "--limit",
        "600",
        "--epochs",
        "1",
        "--hidden",
        "32",
        "--no-plots",
        "--out",
        str(tmp_path / "g"),
    )
    assert code == 0, err
    with open(tmp_path / "g" / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and {(r["lr"], r["batch_norm"]) for r in rows} == {
        ("0.05", "on"),
        ("0.05", "off"),
        ("0.5", "on"),
        ("0.5", "off"),
    }
    command = out.strip().splitlines()[-1].removeprefix("train it with: ")
    assert command == rows[0]["command"]
    args = build_parser().parse_args(shlex.split(command)[1:])
    rebuilt = TrainConfig(**{d: getattr(args, d) for d in set(TRAIN_OPTIONS.values()) if hasattr(args, d)})
    saved = json.loads((tmp_path / "g" / f"trial-{int(rows[0]['trial']):03d}" / "config.json").read_text())
    keep = lambda d: {k: v for k, v in d.items() if k not in ("out", "resume", "plots", "quiet")}  # noqa: E731
    assert keep(rebuilt.to_dict()) == keep(saved)


def test_train_command_names_only_what_differs_from_the_models_recipe():
    assert train_command(TrainConfig()) == "handgrad train"
    assert train_command(TrainConfig(model="cnn", batch_norm=False, lr=0.01, hidden=())) == (
        "handgrad train --model cnn --hidden none --no-batch-norm --lr 0.01"
    )


def test_jobs_run_in_processes_with_one_blas_thread(tmp_path):
    result = search("lr=log(0.05,0.5)", BASE, trials=2, jobs=2, out=tmp_path / "p", log=quiet)
    serial = search("lr=log(0.05,0.5)", BASE, trials=2, jobs=1, out=tmp_path / "q", log=quiet)
    for t in result.trials:
        assert json.loads((tmp_path / "p" / f"trial-{t['trial']:03d}" / "result.json").read_text())[
            "blas_threads"
        ] in (1, None)
    assert [t["settings"] for t in sorted(result.trials, key=lambda t: t["trial"])] == [
        t["settings"] for t in sorted(serial.trials, key=lambda t: t["trial"])
    ]
    in_order = lambda r: sorted(r.trials, key=lambda t: t["trial"])  # noqa: E731
    for a, b in zip(in_order(result), in_order(serial)):
        assert abs(a["val_accuracy"] - b["val_accuracy"]) <= 0.005  # the same runs, other BLAS threads


@pytest.mark.parametrize(
    ("space", "fragment"),
    [
        ([], "the search space is empty"),
        (["lr=log(0.1,1"], "malformed search space at 'lr=log(0.1,1'"),
        (["lr:log(0.1,1)"], "malformed search space"),
        (["lrr=log(0.1,1)"], "unknown field 'lrr' in the search space (did you mean lr?"),
        (["lr=log(1,0.1)"], "the range's min (1) must be below its max (0.1)"),
        (["dropout=uniform(0.5,0.5)"], "must be below its max"),
        (["epochs=int(9,3)"], "must be below its max"),
        (["lr=log(0,1)"], "a log() range must be positive"),
        (["lr=normal(0,1)"], "unknown kind 'normal'"),
        (["hidden=choice(12,x)"], "'x' is not layer sizes"),
        (["optimizer=log(1,2)"], "optimizer is not a number"),
        (["lr=log(0.1,1)", "lr=choice(1)"], "names lr more than once"),
        (["out=choice(a,b)"], "out cannot be searched"),
        (["dropout=uniform(0.5,1.5)"], "dropout must be in [0, 1)"),
    ],
)
def test_bad_spaces_are_one_line_before_any_training(tmp_path, capsys, monkeypatch, space, fragment):
    import handgrad.app.tools._trials as trials

    monkeypatch.setattr(trials, "run_in_folder", lambda *a: pytest.fail("a trial was started"))
    code, _, err = run(capsys, "search", *space, "--dataset", "mnist-sample", "--out", str(tmp_path / "s"))
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and lines[0].startswith("handgrad: error: "), err
    assert fragment in lines[0]
    assert not (tmp_path / "s").exists()


# ----------------------------------------------------------------------------------------------------
# Character language models: ranked by validation bits per character, lower first
# ----------------------------------------------------------------------------------------------------

# The first 4,001 characters of fortunes-min: 16 streams of 250, 5 windows of 50 an epoch.
LM_BASE = dict(
    model="gru",
    dataset="fortunes-min",
    limit=4001,
    batch_size=16,
    seq_len=50,
    hidden=(16,),
    embedding_dim=8,
    epochs=2,
    plots=False,
)
LM_SPACE = "lr=log(1e-3,1e-1)"


def test_a_language_model_search_ranks_by_validation_bpc_and_resumes_without_rerunning(tmp_path):
    from handgrad.app.checkpoint import load_checkpoint
    from handgrad.app.tools.search import format_table

    out = tmp_path / "s"
    first = search(LM_SPACE, LM_BASE, trials=3, out=out, log=quiet)
    assert (first.ran, first.skipped) == (3, 0)
    bpc = [t["val_bpc"] for t in first.trials]
    assert bpc == sorted(bpc) and len(set(bpc)) == 3 and [t["rank"] for t in first.trials] == [1, 2, 3]
    for t in first.trials:  # each trial's bpc is its best epoch's, as its run chose and saved it
        folder = out / f"trial-{t['trial']:03d}"
        meta = load_checkpoint(folder / "best.npz").metadata
        assert t["val_bpc"] == meta["best_val_bpc"] and t["best_epoch"] == meta["best_epoch"]
        with open(folder / "metrics.csv", newline="") as f:
            history = list(csv.DictReader(f))
        assert t["val_bpc"] <= min(float(r["val_bpc"]) for r in history)
        assert t["best_epoch"] >= 1 and t["test_bpc"] == pytest.approx(meta["metrics"]["test_bpc"], rel=1e-12)
        assert "val_accuracy" not in t and 2 < t["val_bpc"] < 7

    stamps = {t: (out / f"trial-00{t}" / "result.json").stat().st_mtime_ns for t in (1, 2, 3)}
    more = search(LM_SPACE, LM_BASE, trials=4, out=out, log=quiet)
    assert (more.ran, more.skipped) == (1, 3)
    assert {t: (out / f"trial-00{t}" / "result.json").stat().st_mtime_ns for t in (1, 2, 3)} == stamps
    (out / "trial-004" / "result.json").unlink()  # interrupted after its last epoch: continued, not rerun
    again = search(LM_SPACE, LM_BASE, trials=4, out=out, log=quiet)
    assert (again.ran, again.skipped) == (1, 3)
    assert {t["trial"]: t["val_bpc"] for t in again.trials} == {t["trial"]: t["val_bpc"] for t in more.trials}
    with open(again.csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[:4] == ["rank", "trial", "val_bpc", "test_bpc_monitor"]
    assert [float(r["val_bpc"]) for r in rows] == pytest.approx(
        [t["val_bpc"] for t in again.trials], abs=5e-5
    )
    table = format_table(again).splitlines()
    best = again.trials[0]
    assert table[0].split()[:6] == ["rank", "trial", "val", "bpc", "test", "(monitor)"]
    assert table[1].split()[:4] == [
        "1",
        str(best["trial"]),
        f"{best['val_bpc']:.4f}",
        f"{best['test_bpc']:.4f}",
    ]
    assert table[-2].startswith(
        f"best by validation bits per character: trial {best['trial']} ({best['val_bpc']:.4f} bpc); wrote "
    )
    assert table[-1] == f"train it with: {best['command']}" and "--dataset fortunes-min" in best["command"]


def test_the_corpus_is_not_searchable(tmp_path):
    from handgrad.app import ConfigError

    with pytest.raises(ConfigError, match="text cannot be searched"):
        search("text=choice(a.txt,b.txt)", LM_BASE, out=tmp_path / "s", log=quiet)
