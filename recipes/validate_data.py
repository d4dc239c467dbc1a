"""Checks a data folder before any stage reads it: every schema error and warning in one report.

Usage:
    python recipes/validate_data.py DATA_DIR

Exits 0 when the folder can be used (warnings may remain), 1 when a stage would refuse it.
"""

import sys

import _recipe_path  # noqa: F401  (first: see recipes/_recipe_path.py)

from eg_grpo.cli import guarded
from eg_grpo.data.validate import main

if __name__ == "__main__":
    sys.exit(guarded("validate_data", main))
