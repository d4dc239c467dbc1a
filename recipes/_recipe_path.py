"""Imported first by every recipe: keeps `recipes/eg_grpo.py` from shadowing the `eg_grpo` package.

Python puts a script's own folder first on `sys.path`, so inside `recipes/` the name `eg_grpo` would
resolve to the launcher `recipes/eg_grpo.py` instead of the library. Dropping the folder from the
path (this module is already imported by then) makes `import eg_grpo` find the package.
"""

import sys
from pathlib import Path

_RECIPES = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _RECIPES]
