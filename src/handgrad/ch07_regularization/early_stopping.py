"""Early stopping (book §7.8, Algorithm 7.1): stop training when the validation metric has not improved for
``patience`` evaluations in a row, and go back to the parameters of the best evaluation.

Training time is then a hyperparameter chosen on the validation set, almost for free; §7.8 shows that for
a quadratic loss and gradient descent it acts like an L2 penalty whose strength shrinks as training goes on.

Algorithm 7.1 in the form used here (one ``step`` per evaluation, e.g. per epoch):

    best ← −∞ (mode "max") or +∞ (mode "min");  j ← 0
    on each evaluation with metric v and parameters θ:
        if v improves on best by more than min_delta:   best ← v;  θ* ← copy of θ;  j ← 0
        else:                                           j ← j + 1
        stop when j = patience
    after stopping: θ ← θ*
"""

import numpy as np

from .. import ShapeError
from .._checks import check_choice, check_int, check_number

__all__ = ["EarlyStopping"]


def _items(params):
    """(name, array) pairs of a dict name → ndarray or a list/tuple of ndarrays (names "0", "1", …)."""
    if isinstance(params, dict):
        items = [(str(k), v) for k, v in params.items()]
    elif isinstance(params, (list, tuple)):
        items = [(str(i), v) for i, v in enumerate(params)]
    else:
        kind = type(params).__name__
        raise TypeError(f"params must be a dict name -> ndarray or a list of ndarrays, got {kind}")
    for name, v in items:
        if not isinstance(v, np.ndarray):
            kind = type(v).__name__
            raise TypeError(f"parameter {name!r} must be a NumPy array (restored in place), got {kind}")
    return items


class EarlyStopping:
    """Patience on a validation metric, keeping a copy of the best parameters (book §7.8, Algorithm 7.1).

    ``step(metric, params, epoch=None)`` records one evaluation and returns True when training should stop:
    after ``patience`` consecutive evaluations that did not improve on the best by more than
    ``min_delta`` (mode "max": metric > best + min_delta, e.g. accuracy; mode "min": metric < best −
    min_delta, e.g. loss). A NaN metric never improves. On an improvement the parameters are copied
    (``params``: a dict name → ndarray — e.g. ``dict(model.params)``, plus any ``layer.state`` arrays such
    as batch-norm running statistics — or a list of ndarrays); ``restore(params)`` copies the best ones back
    into the same arrays, in place.

    Attributes: ``best_metric`` (None before the first step), ``best_epoch`` (the ``epoch`` passed with it,
    by default the 1-based count of ``step`` calls), ``bad_epochs`` (j of Algorithm 7.1), ``stopped``.
    ``state_dict()``/``load_state_dict()`` save and restore all of it, best parameters included.
    """

    def __init__(self, patience, mode="max", min_delta=0.0):
        self.patience = check_int(patience, "patience", low=1)
        self.mode = check_choice(mode, "mode", ("max", "min"))
        self.min_delta = check_number(min_delta, "min_delta", low=0)
        self.best_metric = None
        self.best_epoch = None
        self.bad_epochs = 0
        self.epochs_seen = 0
        self.best_params = {}

    def __repr__(self):
        return f"EarlyStopping(patience={self.patience}, mode={self.mode!r}, min_delta={self.min_delta})"

    @property
    def stopped(self):
        return self.bad_epochs >= self.patience

    def improves(self, metric):
        """Whether ``metric`` beats the best so far by more than ``min_delta``."""
        if np.isnan(metric):
            return False
        if self.best_metric is None:
            return True
        if self.mode == "max":
            return metric > self.best_metric + self.min_delta
        return metric < self.best_metric - self.min_delta

    def step(self, metric, params, epoch=None):
        """Record one evaluation; True when training should stop (``patience`` bad evaluations in a row)."""
        metric = float(metric)
        items = _items(params)
        self.epochs_seen += 1
        epoch = self.epochs_seen if epoch is None else epoch
        if self.improves(metric):
            self.best_metric, self.best_epoch, self.bad_epochs = metric, epoch, 0
            if {k for k, _ in items} != self.best_params.keys():
                self.best_params = {}
            for name, p in items:
                kept = self.best_params.get(name)
                if kept is None or kept.shape != p.shape or kept.dtype != p.dtype:
                    self.best_params[name] = p.copy()
                else:
                    np.copyto(kept, p)  # θ* ← θ, reusing the copy of the previous best
        else:
            self.bad_epochs += 1
        return self.stopped

    def restore(self, params):
        """Copy the best parameters back into ``params`` in place (θ ← θ*); same names/order as in step."""
        if self.best_metric is None:
            raise RuntimeError("EarlyStopping.restore: no evaluation has improved yet, nothing to restore")
        items = _items(params)
        names = [k for k, _ in items]
        if set(names) != self.best_params.keys():
            kept = sorted(self.best_params)
            raise ValueError(f"params have names {sorted(names)}, the kept best ones {kept}")
        for name, p in items:
            best = self.best_params[name]
            if p.shape != best.shape:
                raise ShapeError(f"parameter {name!r} has shape {p.shape}, the kept best one {best.shape}")
            np.copyto(p, best)

    def state_dict(self):
        """Everything needed to resume as one flat dict (best parameters as "best.<name>"), for ``np.savez``."""
        d = {
            "patience": self.patience,
            "mode": self.mode,
            "min_delta": self.min_delta,
            "best_metric": np.nan if self.best_metric is None else self.best_metric,
            "best_epoch": -1 if self.best_epoch is None else self.best_epoch,
            "bad_epochs": self.bad_epochs,
            "epochs_seen": self.epochs_seen,
        }
        d.update({f"best.{k}": v.copy() for k, v in self.best_params.items()})
        return d

    def load_state_dict(self, d):
        """Restore what ``state_dict`` returned (also after a round trip through ``np.savez``/``np.load``)."""

        def scalar(key):
            v = d[key]
            return v.item() if isinstance(v, np.ndarray) else v

        try:
            self.__init__(int(scalar("patience")), str(scalar("mode")), float(scalar("min_delta")))
            best = float(scalar("best_metric"))
            epoch = scalar("best_epoch")
            self.bad_epochs, self.epochs_seen = int(scalar("bad_epochs")), int(scalar("epochs_seen"))
        except KeyError as missing:
            raise ValueError(f"early-stopping state lacks {missing}") from None
        self.best_metric = None if np.isnan(best) else best
        self.best_epoch = None if self.best_metric is None else epoch
        self.best_params = {k[5:]: np.array(v, copy=True) for k, v in d.items() if k.startswith("best.")}
