"""Trains the ranking simulator (the downstream ranker used as a reward) on a search log.

Usage:
    python recipes/train_ranker.py --config recipes/configs/demo/ranker.yaml --data_dir DATA --output_dir DIR

Reads ``DATA/{items,requests,impressions}.parquet``, trains the click, purchase and relevance heads
on the train split, and writes into ``DIR`` (atomically): ``ranker.pkl``, ``ranker_metrics.json``
(``click_auc``, ``purchase_auc``, ``relevance_auc`` and ``oracle_click_auc`` on the eval split) and
``stage.json``. Every ``RankerConfig`` field can be set in the YAML or on the command line (e.g.
``--model_type hgb``). The stage is :func:`eg_grpo.stages.ranker.run`.
"""

import _recipe_path  # noqa: F401  (first: see recipes/_recipe_path.py)

from eg_grpo.cli import StageParser
from eg_grpo.stages.ranker import TrainRankerArguments, run

main = run
__all__ = ["TrainRankerArguments", "main"]

if __name__ == "__main__":
    parser = StageParser((TrainRankerArguments,))
    (script_args,) = parser.parse_args_and_config()
    run(script_args)
