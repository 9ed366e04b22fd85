"""``python -m rxbot ...``: the same command line as the ``rxbot`` console script."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
