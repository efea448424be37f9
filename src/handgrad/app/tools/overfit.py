"""``handgrad train --overfit N``: can the model fit a tiny dataset? (book §11.5, "fit a tiny dataset")

A model that cannot reach 100% accuracy on a handful of training examples has a bug, or too little
capacity or too low a learning rate for anything larger. The run trains on the first N training examples
(augmentation and dropout off unless asked for: ``TrainConfig.overfit``); after each epoch this hook adds
``overfit_accuracy`` to metrics.csv — the accuracy on those N examples in eval mode, the parameters as they
are after the epoch — and at the end it prints one line: the epoch at which 100% was first reached, or the
best accuracy reached instead.

For a character language model N counts **characters**: the run trains on the first N characters of the
training text (at least one batch, ``batch_size`` streams × ``seq_len`` characters, + 1), read as
training reads them. ``overfit_accuracy`` is then the next-character accuracy on them and
``overfit_bpc`` their bits per character, both measured the way training reads them (``batch_size``
streams, windows of ``seq_len``, the state carried), in eval mode. The text is fitted at 100%
next-character accuracy **or** under ``OVERFIT_BPC`` = 0.1 bits per character (of some 4 to 6 at the
start): 100% can be out of reach for a text, since the first character of each stream is predicted from
that one character alone, and two streams that start alike may go on differently.
"""

from __future__ import annotations

from ..training import TrainingHook

__all__ = ["OverfitCheck", "overfit_verdict", "OVERFIT_BPC"]

OVERFIT_BPC = 0.1  # a language model fits its N characters below this many bits per character


def _fitted(row) -> bool:
    return row["overfit_accuracy"] >= 1.0 or row.get("overfit_bpc", OVERFIT_BPC + 1) < OVERFIT_BPC


def overfit_verdict(history, n):
    """(reached: bool, the line to print) from the rows of metrics.csv."""
    rows = [r for r in history if "overfit_accuracy" in r]
    if not rows:
        return False, f"overfit {n}: no epoch was trained"
    if "overfit_bpc" in rows[0]:
        return _text_verdict(rows, n)
    hit = next((r for r in rows if _fitted(r)), None)
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


def _text_verdict(rows, n):
    """A language model's verdict: 100% next-character accuracy or under OVERFIT_BPC (module docstring)."""
    hit = next((r for r in rows if _fitted(r)), None)
    if hit is not None:
        return True, (
            f"overfit {n}: fitted the {n} training characters at epoch {hit['epoch']} of {len(rows)} "
            f"({hit['overfit_bpc']:.4f} bits per character, next-character accuracy "
            f"{100 * hit['overfit_accuracy']:.2f}%): the model can fit a tiny dataset (§11.5)"
        )
    best = min(rows, key=lambda r: r["overfit_bpc"])
    return False, (
        f"overfit {n}: did NOT fit the {n} training characters in {len(rows)} epochs (100% "
        f"next-character accuracy or under {OVERFIT_BPC:g} bits per character; best "
        f"{best['overfit_bpc']:.4f} bpc, {100 * best['overfit_accuracy']:.2f}% at epoch {best['epoch']}): "
        "train longer, raise the learning rate or the capacity, or look for a bug (§11.5)"
    )


class OverfitCheck(TrainingHook):
    """The ``overfit_accuracy`` (and for a language model ``overfit_bpc``) column and the verdict line
    (module docstring)."""

    def epoch_metrics(self, run, epoch, row):
        row.update(run.data.fit(run))

    def report(self, run, result):
        result.overfit_reached, line = overfit_verdict(run.history, run.config.overfit)
        run.log(line)
