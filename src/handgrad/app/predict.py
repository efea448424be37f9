"""Inference: one code path from a checkpoint and an image to class probabilities.

``handgrad predict`` and the draw-a-digit page both call :meth:`Predictor.predict_image`, which reads the
image with the datasets' ``load_image`` for the shape the model was trained on (the architecture's
``input_shape``, which came from the dataset's spec): for grayscale ``(H, W)`` models the MNIST procedure
(white on black, cropped, scaled into a box of 20/28 of the field, centred by mass: 20×20 in 28×28 for
MNIST), for colour ``(C, H, W)`` models a plain resize to H×W; ``datasets.images.procedure_for`` decides.
Then it runs the model's forward pass in eval mode.
"""

from __future__ import annotations

import pathlib
import threading

import numpy as np

from .. import ShapeError
from ..ch04_numerical import softmax
from .checkpoint import load_model
from .models import prepare_inputs

__all__ = ["Predictor", "predict"]


class Predictor:
    """A trained model ready for inference.

    Attributes: ``classes`` (class names, index = label), ``dataset`` (what it was trained on), ``arch``
    (the architecture dict), ``input_shape`` (one example's shape, from the architecture), ``metadata``
    (the checkpoint's), ``model`` (the network, in eval mode).
    Calls are serialised by a lock, so one Predictor may serve several threads.
    """

    def __init__(self, model, arch, classes, dataset, metadata=None):
        self.model = model.eval()
        self.arch = arch
        self.classes = [str(c) for c in classes]
        self.dataset = dataset
        self.metadata = metadata or {}
        self.input_shape = tuple(int(d) for d in arch["input_shape"])
        self._lock = threading.Lock()

    @classmethod
    def from_checkpoint(cls, path) -> Predictor:
        """Load a checkpoint (a file or a run folder, meaning its best.npz); CheckpointError if unusable."""
        from .models import input_kind

        model, ckpt = load_model(path)
        meta = ckpt.metadata
        arch = meta["arch"]
        if input_kind(arch) != "images":
            from .checkpoint import CheckpointError

            raise CheckpointError(
                f"{ckpt.path} holds a character language model ({arch['type']}), which "
                f"reads text, not images; generate text with: handgrad sample {ckpt.path}"
            )
        classes = meta.get("classes") or [str(k) for k in range(arch["n_classes"])]
        if len(classes) != arch["n_classes"]:
            from .checkpoint import CheckpointError

            raise CheckpointError(
                f"{ckpt.path}: {len(classes)} class names for a model with {arch['n_classes']} outputs"
            )
        return cls(model, arch, classes, meta.get("dataset", "unknown"), meta)

    def predict_arrays(self, x) -> np.ndarray:
        """Probabilities (n, K) float64 for images float32 (n, *input_shape) in [0, 1] (or one image)."""
        x = np.asarray(x, dtype=np.float32)
        if x.shape == self.input_shape:
            x = x[None]
        if x.ndim != len(self.input_shape) + 1 or x.shape[1:] != self.input_shape:
            raise ShapeError(
                f"expected images of shape (n, {', '.join(map(str, self.input_shape))}), got {x.shape}"
            )
        inputs = prepare_inputs(self.arch, x)
        with self._lock:
            logits = self.model.forward(inputs)
        return softmax(np.asarray(logits, dtype=np.float64))

    def predict_image(self, source) -> dict:
        """Predict one image (a path, bytes, or a binary file object).

        Returns ``{"prediction": int, "label": str, "confidence": float, "probabilities": [float, ...],
        "classes": [str, ...], "input": nested list of floats of input_shape}`` where ``input`` is what the
        model saw (H×W for a grayscale model, C×H×W for a colour one).
        Raises DatasetError for data that is not a readable image and OSError for a file that cannot be
        opened.
        """
        from ..datasets import load_image

        image = load_image(source, self.input_shape)
        probs = self.predict_arrays(image)[0]
        k = int(np.argmax(probs))
        return {
            "prediction": k,
            "label": self.classes[k],
            "confidence": float(probs[k]),
            "probabilities": [float(p) for p in probs],
            "classes": list(self.classes),
            "input": np.asarray(image, dtype=np.float64).tolist(),
        }


def predict(checkpoint, images) -> list:
    """``predict_image`` for each image path, each result with its ``path`` first (``handgrad predict``).

    Raises CheckpointError for an unusable checkpoint and DatasetError for an image that cannot be read.
    """
    from ..datasets import DatasetError

    predictor = Predictor.from_checkpoint(checkpoint)
    out = []
    for image in images:
        try:
            result = predictor.predict_image(image)
        except OSError as err:  # missing, unreadable, a folder ...
            raise DatasetError(f"cannot read image {image}: {err.strerror or err}") from None
        out.append({"path": str(image) if isinstance(image, (str, pathlib.Path)) else None, **result})
    return out
