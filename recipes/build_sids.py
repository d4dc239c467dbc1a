"""Builds the semantic IDs of a catalogue (CQ-SID or a baseline) and their statistics.

Usage:
    python recipes/build_sids.py --config recipes/configs/demo/sids.yaml --data_dir DATA --output_dir DIR

Writes ``DIR/codebook/`` (the :class:`eg_grpo.sid.codebook.SIDCodebook` folder, with the frozen
model that assigns new items), ``DIR/stats.json`` and ``DIR/stage.json`` (which records the data
fingerprint, so later stages refuse other data), atomically. The stage is :func:`eg_grpo.stages.sids.run`.
"""

import sys

import _recipe_path  # noqa: F401  (first: see recipes/_recipe_path.py)


def __getattr__(name: str):
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    # Loaded on first use (the modules import torch), so `--help` answers at once.
    from eg_grpo.sid.build import SIDConfig
    from eg_grpo.stages import sids

    return {"BuildSidsArguments": sids.BuildSidsArguments, "SIDConfig": SIDConfig, "main": sids.run}[name]


__all__ = ["BuildSidsArguments", "SIDConfig", "main"]  # noqa: F822  (module __getattr__)

if __name__ == "__main__":
    from eg_grpo.cli import run_recipe

    sys.exit(
        run_recipe(
            "sids",
            own=(
                "eg_grpo.stages.sids:BuildSidsArguments",
                "eg_grpo.sid.build:SIDConfig",
            ),
        )
    )
