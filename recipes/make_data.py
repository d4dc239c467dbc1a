"""Simulates a search log and writes it as the data artifact every later stage reads.

Usage:
    python recipes/make_data.py --config recipes/configs/demo/data.yaml --output_dir outputs/demo/data

Writes ``items.parquet``, ``requests.parquet``, ``impressions.parquet``, ``stats.json`` and
``stage.json`` into ``--output_dir`` (atomically) and prints the summary statistics. Every
``SimulatorConfig`` field can be set in the YAML or on the command line (e.g. ``--seed 1``). The
stage is :func:`eg_grpo.stages.data.run_simulated`.
"""

import _recipe_path  # noqa: F401  (first: see recipes/_recipe_path.py)

from eg_grpo.cli import StageParser
from eg_grpo.stages.data import MakeDataArguments, run_simulated

main = run_simulated
__all__ = ["MakeDataArguments", "main"]

if __name__ == "__main__":
    parser = StageParser((MakeDataArguments,))
    (script_args,) = parser.parse_args_and_config()
    run_simulated(script_args)
