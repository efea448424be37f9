"""Chapter 9 of the book, *Convolutional Networks*: §9.1 the convolution operation, §9.3 pooling,
§9.5 variants of the basic convolution function (stride, zero padding, multichannel kernels).

- ``convolution``: ``Conv2D`` (§9.1, §9.5) by im2col — every receptive field copied into one row of a
  matrix, so the whole layer is one matrix product — and ``Flatten``, the bridge to chapter 6's dense layers;
- ``pooling``: ``MaxPool2D`` and ``AvgPool2D`` (§9.3);
- ``fused``: a fast path, ``ConvBNReLUPool`` (convolution, batch norm, ReLU and 2×2 max-pool in one pass,
  channels-last inside, proven equal to the four layers) and ``FusedSequential``, which runs such runs of
  layers as one block while keeping the separate layers' names and checkpoints.

All layers take NCHW batches (N examples, C channels, H rows, W columns) as PyTorch does, keep chapter 6's
``params``/``grads``/``forward``/``backward`` convention and its train/eval modes, and contain no Python
loop over examples or output pixels: the only loops run over the kh·kw offsets of a kernel.
"""

from .convolution import Conv2D, Flatten, col2im, conv_output_size, im2col
from .fused import ConvBNReLUPool, FusedSequential
from .pooling import AvgPool2D, MaxPool2D

__all__ = [
    "Conv2D",
    "Flatten",
    "MaxPool2D",
    "AvgPool2D",
    "im2col",
    "col2im",
    "conv_output_size",
    "ConvBNReLUPool",
    "FusedSequential",
]
