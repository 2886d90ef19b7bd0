"""``python -m parallel_saver ls|verify|cp ...``: see :func:`parallel_saver.main`."""

import sys

from ._cli import main

if __name__ == "__main__":
    sys.exit(main())
