"""Adds launched items to a trained SID version: a new SID folder, no SID rebuild, no retraining.

Usage:
    python recipes/add_items.py --sid_dir outputs/demo/sids --new_items new_items.parquet \
        --output_dir outputs/demo/sids_v2 [--unknown_category all_codes] [--new_item_vectors NEW.npy]

Every item of ``--sid_dir`` keeps its SID; each new item gets one from the frozen SID model and joins
a cluster the trained generator already writes (a full cluster's overflow goes to a free code beside
it). ``DIR/add_items_report.json`` says where the new items went; ``DIR/stage.json`` names the parent,
so a model trained on it accepts the new version. The stage is :func:`eg_grpo.stages.add_items.run`.
"""

import _recipe_path  # noqa: F401  (first: see recipes/_recipe_path.py)

from eg_grpo.cli import StageParser
from eg_grpo.stages.add_items import AddItemsArguments, run

main = run
__all__ = ["AddItemsArguments", "main"]

if __name__ == "__main__":
    parser = StageParser((AddItemsArguments,))
    (script_args,) = parser.parse_args_and_config()
    run(script_args)
