"""handgrad: deep learning rebuilt from Goodfellow, Bengio & Courville, *Deep Learning* (2016), in NumPy.

One module per chapter of the book (``ch02_linear_algebra`` … ``ch09_convolution``); later chapters import
earlier ones and never the reverse. Every gradient is derived and written by hand.
"""

__version__ = "0.1.0"


class ShapeError(ValueError):
    """An array had a shape the operation cannot accept; the message names the shapes involved."""


__all__ = ["ShapeError", "__version__"]
