"""Cuts a data folder with launches at a time: the catalogue on sale then, and the items launched since.

Usage:
    python recipes/cutoff_data.py --data_dir outputs/demo_live/data --output_dir outputs/demo_live/data_cutoff \
        [--cutoff TIMESTAMP]

Writes a data folder (items launched before the cut-off, requests and impressions dated before it; SIDs
are built and models trained on it as on any other) plus ``new_items.parquet``, the items launched at or
after the cut-off, ready for ``recipes/add_items.py --new_items``. The default cut-off is the first test
request. The stage is :func:`eg_grpo.stages.cutoff.run`.
"""

import _recipe_path  # noqa: F401  (first: see recipes/_recipe_path.py)

from eg_grpo.cli import StageParser
from eg_grpo.stages.cutoff import CutoffArguments, run

main = run
__all__ = ["CutoffArguments", "main"]

if __name__ == "__main__":
    parser = StageParser((CutoffArguments,))
    (script_args,) = parser.parse_args_and_config()
    run(script_args)
