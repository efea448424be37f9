"""``handgrad train --overfit N``: can the model fit a tiny dataset? (book §11.5, "fit a tiny dataset")

A model that cannot reach 100% accuracy on a handful of training examples has a bug, or too little
capacity or too low a learning rate for anything larger. The run trains on the first N training examples
(augmentation and dropout off unless asked for: ``TrainConfig.overfit``); after each epoch this hook adds
``overfit_accuracy`` to metrics.csv — the accuracy on those N examples in eval mode, the parameters as they
are after the epoch — and at the end it prints one line: the epoch at which 100% was first reached, or the
best accuracy reached instead.
"""

from __future__ import annotations

from ..training import TrainingHook

__all__ = ["OverfitCheck", "overfit_verdict"]


def overfit_verdict(history, n):
    """(reached: bool, the line to print) from the rows of metrics.csv."""
    rows = [r for r in history if "overfit_accuracy" in r]
    if not rows:
        return False, f"overfit {n}: no epoch was trained"
    hit = next((r for r in rows if r["overfit_accuracy"] >= 1.0), None)
    if hit is not None:
        return True, (
            f"overfit {n}: reached 100% training accuracy on the {n} examples at epoch "
            f"{hit['epoch']} of {len(rows)}: the model can fit a tiny dataset (§11.5)"
        )
    best = max(rows, key=lambda r: r["overfit_accuracy"])
    return False, (
        f"overfit {n}: did NOT reach 100% training accuracy on the {n} examples in {len(rows)} "
        f"epochs (best {100 * best['overfit_accuracy']:.2f}% at epoch {best['epoch']}): "
        "train longer, raise the learning rate or the capacity, or look for a bug (§11.5)"
    )


class OverfitCheck(TrainingHook):
    """The ``overfit_accuracy`` column and the verdict line (module docstring)."""

    def epoch_metrics(self, run, epoch, row):
        row.update(run.data.fit(run))

    def report(self, run, result):
        result.overfit_reached, line = overfit_verdict(run.history, run.config.overfit)
        run.log(line)
