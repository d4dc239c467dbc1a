"""Builds the semantic IDs of a catalogue (CQ-SID or a baseline) and their statistics.

Usage:
    python recipes/build_sids.py --config recipes/configs/demo/sids.yaml --data_dir DATA --output_dir DIR

Writes ``DIR/codebook/`` (the :class:`eg_grpo.sid.codebook.SIDCodebook` folder, with the frozen
model that assigns new items), ``DIR/stats.json`` and ``DIR/stage.json``, atomically.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

import _recipe_path  # noqa: F401  (first: see recipes/_recipe_path.py)
from trl import TrlParser

from eg_grpo.data.schema import SearchLog
from eg_grpo.io import atomic_dir, mark_stage_done, write_json
from eg_grpo.sid.build import SIDConfig, build_codebook


@dataclass
class BuildSidsArguments:
    """Script arguments.

    Args:
        data_dir: folder with items/requests/impressions.parquet (from make_data.py).
        output_dir: where ``codebook/``, ``stats.json`` and ``stage.json`` go.
    """

    data_dir: str = field(default="outputs/demo/data", metadata={"help": "Input data folder."})
    output_dir: str = field(default="outputs/demo/sids", metadata={"help": "Output SID folder."})


def main(script_args: BuildSidsArguments, sid_config: SIDConfig) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    log = SearchLog.load(script_args.data_dir)
    codebook, stats = build_codebook(log, sid_config, data_dir=script_args.data_dir)
    with atomic_dir(script_args.output_dir) as tmp:
        codebook.save(tmp / "codebook")
        write_json(tmp / "stats.json", stats)
        mark_stage_done(tmp, {"data_dir": script_args.data_dir, "sids": sid_config}, stage="sids")
    print(json.dumps(stats, indent=2))


if __name__ == "__main__":
    parser = TrlParser((BuildSidsArguments, SIDConfig))
    main(*parser.parse_args_and_config())
