"""``python -m phaseo_notebook``: the same command line as ``phaseo-notebook``."""

from __future__ import annotations

import sys

from phaseo_notebook._cli import main

if __name__ == "__main__":
    sys.exit(main())
