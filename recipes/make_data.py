"""Simulates a search log and writes it as the data artifact every later stage reads.

Usage:
    python recipes/make_data.py --config recipes/configs/demo/data.yaml --output_dir outputs/demo/data

Writes ``items.parquet``, ``requests.parquet``, ``impressions.parquet``, ``stats.json`` and
``stage.json`` into ``--output_dir`` (atomically) and prints the summary statistics. Every
``SimulatorConfig`` field can be set in the YAML or on the command line (e.g. ``--seed 1``). The
stage is :func:`eg_grpo.stages.data.run_simulated`.
"""

import sys

import _recipe_path  # noqa: F401  (first: see recipes/_recipe_path.py)


def __getattr__(name: str):
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    # Loaded on first use (the modules import torch), so `--help` answers at once.
    from eg_grpo.stages import data

    return {"MakeDataArguments": data.MakeDataArguments, "main": data.run_simulated}[name]


__all__ = ["MakeDataArguments", "main"]  # noqa: F822  (module __getattr__)

if __name__ == "__main__":
    from eg_grpo.cli import run_recipe

    sys.exit(run_recipe("data", own=("eg_grpo.stages.data:MakeDataArguments",)))
