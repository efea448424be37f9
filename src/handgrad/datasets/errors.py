"""The errors of :mod:`handgrad.datasets`; all are ``ValueError`` subclasses, so callers can catch them
together."""


class DatasetError(ValueError):
    """A data file or image is malformed, fails verification, or cannot be used; the message names it."""


class DatasetNotFoundError(DatasetError):
    """The dataset's files are nowhere on disk and could not be downloaded (offline, or ``download=False``).

    The message lists every folder that was searched and how to provide the files.
    """


class ChecksumError(DatasetError):
    """A file's decompressed SHA-256 differs from the recorded one; the message names the file and both."""
