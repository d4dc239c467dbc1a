"""The ranker stage: the downstream ranking simulator the ranker-based rewards read."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from eg_grpo.io import require_dir, up_to_date
from reward_models.ranker import RankerConfig, ranker_stage_record, train_ranker


@dataclass
class TrainRankerArguments(RankerConfig):
    """Arguments of the ranker stage: the ranker config plus where to read the log and write the ranker.

    Args:
        data_dir: the data stage's folder.
        output_dir: folder of ``ranker.pkl``, ``ranker_metrics.json`` and ``stage.json``.
        eval_split: the split the AUCs are measured on.
        overwrite: replace an output folder that holds a ranker of another config or data.
    """

    data_dir: str | None = field(default=None, metadata={"help": "Folder written by recipes/make_data.py."})
    output_dir: str | None = field(default=None, metadata={"help": "Folder to write the ranker into."})
    eval_split: str = field(default="valid", metadata={"help": "Split the AUCs are measured on."})
    overwrite: bool = field(default=False, metadata={"help": "Replace an output folder of another config."})


def run(args: TrainRankerArguments) -> dict:
    """Trains the ranker (skipped when ``output_dir`` holds this config's); returns its metrics."""
    data = require_dir(args.data_dir, "data_dir", "the folder written by recipes/make_data.py")
    if not args.output_dir:
        raise ValueError("no output folder: pass --output_dir DIR")
    record = ranker_stage_record(args, data, args.eval_split)
    if up_to_date(args.output_dir, record, args.overwrite):
        return json.loads((Path(args.output_dir) / "ranker_metrics.json").read_text())
    metrics = train_ranker(args, data, args.output_dir, args.eval_split)
    print(json.dumps(metrics, indent=2))
    return metrics


def stage_arguments():
    return (TrainRankerArguments,)


def ranker_record(args: TrainRankerArguments) -> dict:
    return ranker_stage_record(
        args, require_dir(args.data_dir, "data_dir", "the data stage's folder"), args.eval_split
    )
