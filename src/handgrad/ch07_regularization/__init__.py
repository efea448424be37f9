"""Chapter 7 — Regularisation for deep learning (design report §3.6).

Split by the book's sections: ``penalties`` (§7.1.1, L2 weight decay, eqs. 20–21), ``augmentation``
(§7.4 dataset augmentation), ``early_stopping`` (§7.8, Algorithm 7.1) and ``dropout`` (§7.12).
"""

from .augmentation import Augmenter, augment_batch, elastic_displacement, transform_images
from .dropout import Dropout
from .early_stopping import EarlyStopping
from .penalties import add_l2_grad_, is_bias, l2_grad, l2_penalty

__all__ = ["is_bias", "l2_penalty", "l2_grad", "add_l2_grad_"]
__all__ += ["augment_batch", "Augmenter", "transform_images", "elastic_displacement"]
__all__ += ["EarlyStopping", "Dropout"]
