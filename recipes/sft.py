"""Supervised warm start: prompt (query + history SIDs) -> target SID + eos, on TRL's SFTTrainer.

Usage:
    python recipes/sft.py --config recipes/configs/tiny/sft.yaml \
        --data_dir outputs/tiny/data --sid_dir outputs/tiny/sids --output_dir outputs/tiny/sft

The stage lives in :mod:`eg_grpo.sft` (``SFTScriptArguments``, ``run``); ``python -m eg_grpo.stages
sft ...`` runs the same code without this file. Writes OUTPUT_DIR (model, tokenizer,
``sft_metrics.json``, ``stage.json``) atomically; an OUTPUT_DIR of other settings is kept unless
``--overwrite true``.
"""

import _recipe_path  # noqa: F401  (first: see recipes/_recipe_path.py)

from eg_grpo.cli import StageParser
from eg_grpo.sft import SFTScriptArguments, run, stage_arguments

main = run  # the name tests and notebooks import
__all__ = ["SFTScriptArguments", "main"]

if __name__ == "__main__":
    parser = StageParser(stage_arguments())
    script_args, training_args, model_args = parser.parse_args_and_config()
    run(script_args, training_args, model_args)
