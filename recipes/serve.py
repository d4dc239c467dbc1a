"""Serve a trained model's recall channel over HTTP (Ray Serve); see docs/serving.md.

    python recipes/serve.py --model_dir outputs/demo/sft --sid_dir outputs/demo/sids --port 8000

Options are those of `python -m eg_grpo.serve --help`. Needs the serve extra: `pip install -e ".[serve]"`.
"""

import sys

import _recipe_path  # noqa: F401  (first: see recipes/_recipe_path.py)

from eg_grpo.serve.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
