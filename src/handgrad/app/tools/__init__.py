"""Chapter 11's practical methodology as tools, each a command of its own.

    lr_find         the learning-rate range test: an exponential ramp of the learning rate over mini-batch
                    steps, the loss smoothed, two suggestions (``handgrad lr-find``; §11.4.1, §8.1.3)
    search          random (§11.4.4) and grid (§11.4.3) search over TrainConfig fields, one run folder per
                    trial, resumable, in parallel processes (``handgrad search``)
    learning_curve  training and validation error against the training-set size (§11.3, "determining
                    whether to gather more data") (``handgrad learning-curve``)
    monitor         per layer and epoch: activation statistics, dead units, gradient norm and the update
                    ratio ‖Δθ‖/‖θ‖ (``handgrad train --monitor``; §11.5)
    overfit         can the model fit a tiny dataset? (``handgrad train --overfit N``; §11.5)
    gradcheck       back-propagation against central differences in float64 (``handgrad gradcheck``; §11.5)

Each takes a ``TrainConfig`` for the model, data and optimiser, builds them the way ``handgrad train``
does (:mod:`handgrad.app.training`), and chooses on the validation set only: the test set is never used
to pick anything (a run's test accuracy is reported as a monitor, as ``train`` does). Every model type of
the registry is taken, the image classifiers (MLP, CNN, the recurrent models over rows of pixels) and the
character language models (``--text FILE`` or a text ``--dataset``): for these the metric is bits per
character (lower is better) in place of accuracy, a step is one window of the training text taken in
order (the state carried, §10.2.2), and a training-set size counts characters.
"""

from .learning_curve import LearningCurveResult, learning_curve
from .lr_find import LRFindResult, lr_find
from .search import SearchResult, parse_space, search

__all__ = [
    "lr_find",
    "LRFindResult",
    "search",
    "SearchResult",
    "parse_space",
    "learning_curve",
    "LearningCurveResult",
]
