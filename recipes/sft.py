"""Supervised warm start: prompt (query + history SIDs) -> target SID + eos, on TRL's SFTTrainer.

Usage:
    python recipes/sft.py --config recipes/configs/tiny/sft.yaml \
        --data_dir outputs/tiny/data --sid_dir outputs/tiny/sids --output_dir outputs/tiny/sft

The stage lives in :mod:`eg_grpo.sft.stage` (``SFTScriptArguments``, ``run``); ``python -m eg_grpo.stages
sft ...`` runs the same code without this file. Writes OUTPUT_DIR (model, tokenizer,
``sft_metrics.json``, ``stage.json``) atomically; an OUTPUT_DIR of other settings is kept unless
``--overwrite true``.
"""

import sys

import _recipe_path  # noqa: F401  (first: see recipes/_recipe_path.py)


def __getattr__(name: str):
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    # `main` and the dataclass load on first use (they import torch), so `--help` answers at once.
    from eg_grpo.sft import stage

    return {"main": stage.run, "SFTScriptArguments": stage.SFTScriptArguments}[name]


__all__ = ["SFTScriptArguments", "main"]  # noqa: F822  (module __getattr__)

if __name__ == "__main__":
    from eg_grpo.cli import run_recipe

    sys.exit(
        run_recipe(
            "sft",
            own=("eg_grpo.sft.stage:SFTScriptArguments",),
            inherited=("trl.SFTConfig", "trl.ModelConfig"),
        )
    )
