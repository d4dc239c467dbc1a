"""Trains the ranking simulator (the downstream ranker used as a reward) on a search log.

Usage:
    python recipes/train_ranker.py --config recipes/configs/demo/ranker.yaml --data_dir DATA --output_dir DIR

Reads ``DATA/{items,requests,impressions}.parquet``, trains the click, purchase and relevance heads
on the train split, and writes into ``DIR`` (atomically): ``ranker.pkl``, ``ranker_metrics.json``
(``click_auc``, ``purchase_auc``, ``relevance_auc`` and ``oracle_click_auc`` on the eval split) and
``stage.json``. Every ``RankerConfig`` field can be set in the YAML or on the command line (e.g.
``--model_type hgb``). The stage is :func:`eg_grpo.stages.ranker.run`.
"""

import sys

import _recipe_path  # noqa: F401  (first: see recipes/_recipe_path.py)


def __getattr__(name: str):
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    # Loaded on first use (the modules import torch), so `--help` answers at once.
    from eg_grpo.stages import ranker

    return {"TrainRankerArguments": ranker.TrainRankerArguments, "main": ranker.run}[name]


__all__ = ["TrainRankerArguments", "main"]  # noqa: F822  (module __getattr__)

if __name__ == "__main__":
    from eg_grpo.cli import run_recipe

    sys.exit(run_recipe("ranker", own=("eg_grpo.stages.ranker:TrainRankerArguments",)))
