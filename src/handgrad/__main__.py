"""``python -m handgrad``: the ``handgrad`` command (see :mod:`handgrad.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
