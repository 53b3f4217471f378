"""`python -m a3c_core ...`: see a3c_core.cli."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
