"""Builds the semantic IDs of a catalogue (CQ-SID or a baseline) and their statistics.

Usage:
    python recipes/build_sids.py --config recipes/configs/demo/sids.yaml --data_dir DATA --output_dir DIR

Writes ``DIR/codebook/`` (the :class:`eg_grpo.sid.codebook.SIDCodebook` folder, with the frozen
model that assigns new items), ``DIR/stats.json`` and ``DIR/stage.json`` (which records the data
fingerprint, so later stages refuse other data), atomically. The stage is :func:`eg_grpo.stages.sids.run`.
"""

import _recipe_path  # noqa: F401  (first: see recipes/_recipe_path.py)

from eg_grpo.cli import StageParser
from eg_grpo.sid.build import SIDConfig
from eg_grpo.stages.sids import BuildSidsArguments, run

main = run
__all__ = ["BuildSidsArguments", "main"]

if __name__ == "__main__":
    parser = StageParser((BuildSidsArguments, SIDConfig))
    script_args, sid_config = parser.parse_args_and_config()
    run(script_args, sid_config)
