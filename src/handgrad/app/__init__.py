"""The MNIST application: training, evaluation and prediction on top of the chapter modules.

    from handgrad.app import TrainConfig, train, evaluate, predict
    result = train(TrainConfig(dataset="mnist-sample", epochs=5))
    print(result.test_accuracy, result.run_dir)

Modules: ``config`` (TrainConfig), ``models`` (architectures as data, the model registry, one module per
family), ``recipes`` (optimisers and schedules by name), ``training`` (the loop), ``checkpoint`` (atomic .npz
checkpoints), ``evaluation``, ``predict`` (Predictor), ``plots``; ``language_model`` (character language
models: their data for the training loop, a stream of text, bits per character, ``sample``).
``handgrad.cli`` parses arguments and calls one function from here per command.
"""

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .config import ConfigError, TrainConfig
from .evaluation import EvalResult, evaluate
from .models import build_model
from .predict import Predictor, predict
from .training import TrainingDiverged, TrainResult, train

__all__ = [
    "TrainConfig",
    "ConfigError",
    "train",
    "TrainResult",
    "TrainingDiverged",
    "evaluate",
    "EvalResult",
    "predict",
    "Predictor",
    "build_model",
    "save_checkpoint",
    "load_checkpoint",
    "CheckpointError",
]
