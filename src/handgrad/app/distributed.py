"""Chapter 12, data parallelism over MPI (book §12.1.3): K processes train one model by synchronous SGD.

    mpiexec -n K handgrad train [options]

The training loop (:mod:`handgrad.app.training`) imports this module only when ``mpiexec`` started more
than one rank; everything MPI lives here, sent through mpi4py's buffer interface (``Bcast``,
``Allreduce`` on NumPy arrays: no pickling on the per-step path).

One step. Every rank shuffles with the same generator (the run's seed), so all agree on each global
mini-batch of B examples; rank k takes the k-th of K contiguous shards (``np.array_split``: B_k = ⌊B/K⌋
or ⌈B/K⌉ examples, unequal on a last batch that K does not divide). With g_k the mean gradient of shard k,

    g = (1/B) Σ_{i ∈ batch} ∇L_i = Σ_k (B_k / B) g_k,

so each rank scales its loss gradient by B_k / B before back-propagation (weights by shard size, not 1/K)
and one ``Allreduce`` (a sum) of every gradient, packed in one contiguous buffer of the parameters'
dtype (float32 by default), gives every rank the whole-batch gradient g. Weight decay and the optimiser
step then run on identical numbers, so every rank holds the same parameters after every step. The initial
parameters (and, on ``--resume``, everything restored from ``last.npz``) are broadcast from rank 0.

Batch normalisation computes its statistics over the whole global batch: each BatchNorm layer's
``sum_across`` hook (chapter 8, which never imports MPI) is set to an ``Allreduce`` of its partial sums,
so K ranks compute what one process computes on the batch (three small reductions per layer and step).

Randomness. Shuffling draws from the run's generator, identical on every rank. Dropout masks and
augmentation draw from a per-rank stream, ``SeedSequence(seed).spawn(K)[k]`` (independent streams derived
from the seed), so the ranks do not repeat each other's masks; ``last.npz`` holds every rank's stream, and
a resume with the same K continues bit for bit.

Rank 0 alone prints, logs, plots and writes files. Evaluation is shared: each rank evaluates a slice of
the validation and test sets and the loss sums and correct counts are summed.

Faults. An exception on any rank (unreadable data, a NaN loss, a full disk on rank 0) prints one line
``handgrad: error: rank k/K: ...`` and calls ``MPI_Abort``, which ends every rank at once with a non-zero
status instead of leaving the others waiting in a collective. Checkpoints are written atomically (a
temporary file renamed over the old one), so an abort leaves the previous complete file.

The linear scaling rule (Goyal et al. 2017, "Accurate, large minibatch SGD"): when the global batch grows
with K, ``--lr-batch N`` makes ``--lr`` the rate for batches of N and trains with lr × B/N, after a
gradual warmup from lr to lr × B/N over ``--warmup-epochs`` (see :func:`handgrad.app.recipes.lr_schedule`).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import traceback

import numpy as np

try:
    from mpi4py import MPI
except ImportError:  # pragma: no cover - depends on the installation
    MPI = None

from ..ch07_regularization import Dropout
from .config import ConfigError
from .evaluation import evaluate_arrays
from .training import launched_ranks

__all__ = ["DataParallel", "context"]


def context():
    """The DataParallel context of this process under mpiexec; ConfigError when mpi4py is missing."""
    if MPI is None:
        raise ConfigError(
            f"launched by mpiexec with {launched_ranks()} ranks, but mpi4py is not installed: "
            "pip install 'handgrad[mpi]' (or run without mpiexec)"
        )
    if os.environ.get("PMI_FD") and "MPI_LOCALNRANKS" not in os.environ:  # MPICH's mpiexec.gforker
        # gforker (MPICH 5.0.2) ends a rank's output at its first non-ASCII byte and the rank's next write
        # fails with a broken pipe (measured), so under it the text goes out as ASCII with \u escapes.
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(AttributeError, ValueError):
                stream.reconfigure(encoding="ascii", errors="backslashreplace")
    return DataParallel(MPI.COMM_WORLD)


def _state(layer):
    """A layer's non-trained arrays (batch norm's running statistics), or none."""
    return (getattr(layer, "state", None) or {}).values()


def _layers(model):
    """Every layer of a model, nested Sequentials included."""
    for layer in getattr(model, "layers", ()):
        yield layer
        yield from _layers(layer)


class DataParallel:
    """The training loop's partner under MPI: shards, the gradient all-reduce, broadcasts and faults."""

    def __init__(self, comm):
        self.comm, self.rank, self.size = comm, comm.Get_rank(), comm.Get_size()
        self.is_root = self.rank == 0
        self.shard_weight = 1.0  # B_k / B of the shard last yielded by shards()
        self.rank_rng = None
        self.grad_buffer = None
        self.allreduce_seconds, self.allreduce_calls = 0.0, 0

    def __repr__(self):
        return f"DataParallel(rank {self.rank} of {self.size})"

    # ------------------------------------------------------------------------------------------------
    # Faults and objects from rank 0
    # ------------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def guard(self):
        """Run the block; an exception on this rank prints one line and aborts every rank (MPI_Abort)."""
        try:
            yield self
        except BaseException as err:  # every way out must take the other ranks with it
            status = 130 if isinstance(err, KeyboardInterrupt) else 1
            text = " ".join(str(err).split()) or type(err).__name__
            expected = (ValueError, OSError, RuntimeError, KeyboardInterrupt)  # user errors, NaN loss, Ctrl-C
            if not isinstance(err, expected):  # a bug: show where
                traceback.print_exc()
                text = f"{type(err).__name__}: {text}"
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                print(f"handgrad: error: rank {self.rank}/{self.size}: {text}", file=sys.stderr, flush=True)
            self.comm.Abort(status)

    def root_call(self, fn, *args):
        """``fn(*args)`` on rank 0 alone; its result (a small picklable object) is returned on every rank."""
        result = fn(*args) if self.is_root else None
        return self.comm.bcast(result, root=0)

    def agreed(self, callback):
        """``callback`` wrapped so that every rank acts on rank 0's return value."""

        def agreed_callback(*args):
            return self.comm.bcast(callback(*args) if self.is_root else None, root=0)

        return agreed_callback

    def check_same(self, what, value):
        """ConfigError unless every rank holds the same ``value`` (data sets read on different machines)."""
        values = self.comm.allgather(value)
        if any(v != values[0] for v in values):
            found = ", ".join(f"rank {k}: {v}" for k, v in enumerate(values))
            raise ConfigError(f"the ranks disagree on {what} ({found}); give every machine the same data")

    # ------------------------------------------------------------------------------------------------
    # The run: start (broadcasts, streams, hooks), the shards, the all-reduce, evaluation, checkpoints
    # ------------------------------------------------------------------------------------------------

    def rank_generator(self, seed):
        """This rank's stream for dropout and augmentation, ``SeedSequence(seed).spawn(K)[rank]``; ``start``
        moves it to the saved state on resume."""
        self.rank_rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(self.rank,)))
        return self.rank_rng

    def start(self, run, resumed):
        """Make every rank's ``run`` rank 0's: parameters, state and (on resume) optimiser, generators,
        history and best epoch; give dropout and augmentation this rank's stream; hook batch norm."""
        data = run.data
        config, n, B, K = run.config, len(data.y_train), run.config.batch_size, self.size
        self.check_same(
            "the training, validation and test set sizes",
            (len(data.y_train), len(data.y_val), len(data.y_test)),
        )
        last = n % B
        if B < K or 0 < last < K:
            raise ConfigError(
                f"{K} ranks need at least {K} images in every mini-batch, but batches of {B} "
                f"from {n:,} images leave {min(B, last or B)}; change --batch-size or --limit"
            )
        layer_state = [a for layer in _layers(run.model) for a in _state(layer)]
        self._bcast_arrays([p for _, p, _ in run.model.parameters()] + layer_state)
        bundle = None
        if self.is_root:
            bundle = {
                "rng": run.rng.bit_generator.state,
                "history": run.history,
                "stopper": run.stopper.state_dict(),
                "start_epoch": run.start_epoch,
                "step": run.step,
                "saved": run.saved,
                "optimizer": run.optimizer.state_dict(),
                "rank_states": self._saved_rank_states(run) if resumed else None,
            }
        bundle = self.comm.bcast(bundle, root=0)
        if not self.is_root:
            run.rng.bit_generator.state = bundle["rng"]
            run.history, run.start_epoch, run.step = bundle["history"], bundle["start_epoch"], bundle["step"]
            run.saved = bundle["saved"]
            run.stopper.load_state_dict(bundle["stopper"])
            if resumed:
                run.optimizer.load_state_dict(bundle["optimizer"])
        states = bundle["rank_states"]
        if resumed and states is not None and len(states) == K:
            self.rank_rng.bit_generator.state = states[self.rank]
        elif resumed:
            run.say(
                f"note: {run.run_dir} was trained by {len(states) if states else 1} process(es), not "
                f"{K}: dropout and augmentation continue from new streams"
            )
            fresh = np.random.SeedSequence(config.seed, spawn_key=(self.rank, run.start_epoch))
            self.rank_rng.bit_generator.state = np.random.default_rng(fresh).bit_generator.state
        for layer in _layers(run.model):
            if isinstance(layer, Dropout):
                layer.rng = self.rank_rng
            if hasattr(layer, "sum_across"):
                layer.sum_across = self.allreduce_sum
        run.bar_disabled = run.bar_disabled or not self.is_root
        grads = list(run.grads.values())
        self.grad_buffer = np.empty(sum(g.size for g in grads), np.result_type(*grads))
        self._grad_slices = []
        offset = 0
        for g in grads:
            self._grad_slices.append((g, slice(offset, offset + g.size)))
            offset += g.size
        shard = f"{B // K}" if B % K == 0 else f"{B // K}-{B // K + 1}"
        run.say(
            f"data-parallel SGD on {K} ranks: each batch of {B} in shards of {shard}, one Allreduce of "
            f"{self.grad_buffer.nbytes:,} bytes ({self.grad_buffer.dtype}) per step"
        )

    def _saved_rank_states(self, run):
        """Every rank's stream as ``last.npz`` holds it (rank 0, on resume), or None."""
        path = run.run_dir / "last.npz"
        if not path.exists():
            return None
        from .checkpoint import load_checkpoint

        return (load_checkpoint(path).metadata.get("distributed") or {}).get("rank_rng_states")

    def _bcast_arrays(self, arrays):
        """Copy rank 0's ``arrays`` into every rank's, in one ``Bcast`` of a packed buffer."""
        if not arrays:
            return
        buf = np.concatenate([a.ravel() for a in arrays]).astype(np.result_type(*arrays), copy=False)
        self.comm.Bcast(buf, root=0)
        offset = 0
        for a in arrays:
            a[...] = buf[offset : offset + a.size].reshape(a.shape)
            offset += a.size

    def shards(self, X, y, batch_size, rng):
        """This rank's shard of each global mini-batch of ``batch_iterator``'s shuffle (``rng`` advances as
        it does in one process); ``shard_weight`` is set to B_k / B before each shard is yielded."""
        from ..ch05_ml_basics import batch_iterator

        K, k = self.size, self.rank
        for idx, _ in batch_iterator(np.arange(len(y)), y, batch_size, shuffle=True, rng=rng):
            B = len(idx)
            lo, hi = k * (B // K) + min(k, B % K), (k + 1) * (B // K) + min(k + 1, B % K)  # np.array_split's
            mine = idx[lo:hi]
            self.shard_weight = (hi - lo) / B
            yield X[mine], y[mine]

    def allreduce_grads(self, run):
        """Σ_k of every gradient (each already weighted by B_k / B): one ``Allreduce`` of a packed buffer."""
        buf = self.grad_buffer
        for g, sl in self._grad_slices:
            buf[sl] = g.ravel()
        t0 = time.perf_counter()
        self.comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
        self.allreduce_seconds += time.perf_counter() - t0
        self.allreduce_calls += 1
        for g, sl in self._grad_slices:
            g[...] = buf[sl].reshape(g.shape)

    def allreduce_sum(self, a):
        """Batch normalisation's hook: the elementwise sum of ``a`` over the ranks (same dtype and shape)."""
        a = np.ascontiguousarray(a)
        out = np.empty_like(a)
        self.comm.Allreduce(a, out, op=MPI.SUM)
        return out

    def sum_counts(self, loss_sum, correct, seen):
        """The epoch's summed loss, correct predictions and examples over every rank."""
        total = np.array([loss_sum, correct, seen], np.float64)
        self.comm.Allreduce(MPI.IN_PLACE, total, op=MPI.SUM)
        return float(total[0]), round(total[1]), round(total[2])

    def evaluate(self, model, X, y, batch_size):
        """(mean loss, accuracy, None) on (X, y), each rank evaluating a contiguous slice."""
        n = len(y)
        lo, hi = self.rank * n // self.size, (self.rank + 1) * n // self.size
        loss_sum, correct = 0.0, 0
        if hi > lo:
            loss, _, preds = evaluate_arrays(model, X[lo:hi], y[lo:hi], batch_size)
            loss_sum, correct = loss * (hi - lo), int(np.count_nonzero(preds == y[lo:hi]))
        loss_sum, correct, seen = self.sum_counts(loss_sum, correct, hi - lo)
        return loss_sum / seen, correct / seen, None

    def checkpoint_meta(self, resumable):
        """What a checkpoint written under MPI adds to its metadata (gathers every rank's stream)."""
        states = self.comm.gather(self.rank_rng.bit_generator.state, root=0) if resumable else None
        meta = {"ranks": self.size}
        if resumable:
            meta["rank_rng_states"] = states
        return {"distributed": meta}
