"""Run ``handgrad.app.train`` on a list of cases, in one process or as one rank under mpiexec.

    python tests/mpi_train.py CASES.json OUT_DIR            # one process
    mpiexec -n 2 python tests/mpi_train.py CASES.json OUT_DIR

CASES.json is a list of objects: ``name``, ``config`` (TrainConfig fields; ``out`` is OUT_DIR/name), and
the test-only switches ``float64`` (build every layer's arrays and feed the inputs in float64) and
``nan_at`` ([rank, step]: that rank's loss becomes NaN at that step). After training, rank 0 writes
OUT_DIR/name.npz with the final parameters and layer state (before ``finish`` restores the best ones).
"""

import json
import os
import pathlib
import sys

import numpy as np

from handgrad.app import TrainConfig, training
from handgrad.app.models import named_params, named_state


def _float64_model(build):
    """``build_model`` in float64: the layers made in that dtype, so fused stages share their arrays."""

    def build64(arch, rng=None):
        return build(arch, rng, dtype=np.float64)

    return build64


def run_case(case, out):
    config = TrainConfig(**{**case["config"], "out": str(out / case["name"])})
    saved = {}
    originals = training.build_model, training.prepare_inputs, training.finish
    loss_forward = training.SoftmaxCrossEntropy.forward

    def finish(run, started):
        saved.update({f"param/{k}": v.copy() for k, v in named_params(run.model).items()})
        saved.update({f"state/{k}": v.copy() for k, v in named_state(run.model).items()})
        if case.get("float64"):  # a float64 best.npz does not match the float32 architecture: stop here
            return None
        return originals[2](run, started)

    if case.get("float64"):
        training.build_model = _float64_model(originals[0])
        training.prepare_inputs = lambda arch, X: originals[1](arch, X).astype(np.float64)
    if case.get("nan_at"):
        rank, step = case["nan_at"]
        calls = [0]

        def forward(self, logits, y):
            calls[0] += 1
            loss = loss_forward(self, logits, y)
            me = int(os.environ.get("PMI_RANK", 0))
            return float("nan") if (me, calls[0]) == (rank, step) else loss

        training.SoftmaxCrossEntropy.forward = forward
    training.finish = finish
    try:
        with open(os.devnull, "w") as quiet:
            training.train(config, stdout=quiet)
    finally:
        training.build_model, training.prepare_inputs, training.finish = originals
        training.SoftmaxCrossEntropy.forward = loss_forward
    if int(os.environ.get("PMI_RANK", 0)) == 0:
        np.savez(out / f"{case['name']}.npz", **saved)


if __name__ == "__main__":
    cases, out = json.loads(pathlib.Path(sys.argv[1]).read_text()), pathlib.Path(sys.argv[2])
    for case in cases:
        run_case(case, out)
