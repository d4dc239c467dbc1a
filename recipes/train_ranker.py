"""Trains the ranking simulator (the downstream ranker used as a reward) on a search log.

Usage:
    python recipes/train_ranker.py --config recipes/configs/demo/ranker.yaml --data_dir DATA --output_dir DIR

Reads ``DATA/{items,requests,impressions}.parquet`` (written by ``recipes/make_data.py``), trains the
click, purchase and relevance heads on the train split, and writes into ``DIR`` (atomically):
``ranker.pkl``, ``ranker_metrics.json`` (``click_auc``, ``purchase_auc``, ``relevance_auc`` and
``oracle_click_auc`` on the eval split) and ``stage.json``. Every ``RankerConfig`` field can be set
in the YAML or on the command line (e.g. ``--model_type hgb``).
"""

import json
from dataclasses import dataclass, field

import _recipe_path  # noqa: F401  (first: see recipes/_recipe_path.py)
from trl import TrlParser

from reward_models.ranker import RankerConfig, train_ranker


@dataclass
class TrainRankerArguments(RankerConfig):
    """Script arguments: the ranker config plus where to read the log and write the ranker."""

    data_dir: str | None = field(default=None, metadata={"help": "Folder written by recipes/make_data.py."})
    output_dir: str | None = field(
        default=None, metadata={"help": "Folder to write the ranker into (replaced atomically if it exists)."}
    )
    eval_split: str = field(default="valid", metadata={"help": "Split the AUCs are measured on."})


def main(args: TrainRankerArguments) -> dict:
    metrics = train_ranker(args, args.data_dir, args.output_dir, args.eval_split)
    print(json.dumps(metrics, indent=2))
    return metrics


if __name__ == "__main__":
    (script_args,) = TrlParser((TrainRankerArguments,)).parse_args_and_config()
    main(script_args)
