"""Expert-guided GRPO on semantic IDs.

    # the whole demo chain (data → SIDs → ranker → SFT → vanilla & expert-guided GRPO → eval → report)
    accelerate launch recipes/eg_grpo.py

    # one RL run; missing or stale earlier stages are built first from `stage_configs`
    accelerate launch recipes/eg_grpo.py --config recipes/configs/tiny/eg_grpo.yaml

    # resume a killed run from its newest checkpoint
    accelerate launch recipes/eg_grpo.py --config recipes/configs/demo/eg_grpo.yaml --resume_from_checkpoint last
"""


import sys

import _recipe_path  # noqa: F401  (first: see recipes/_recipe_path.py)
from accelerate import PartialState
from trl import ModelConfig, TrlParser

from eg_grpo.config import EGGRPOConfig
from eg_grpo.pipeline import ensure_upstream, run_chain
from eg_grpo.rl import EGGRPOScriptArguments, train

DEMO_CHAIN = "recipes/configs/demo/chain.yaml"


def main(script_args: EGGRPOScriptArguments, training_args: EGGRPOConfig, model_args: ModelConfig):
    if script_args.chain and script_args.stage_configs:
        with PartialState().main_process_first():  # rank 0 builds; the others then find it up to date
            ensure_upstream(script_args.data_dir, training_args.sid_dir, model_args.model_name_or_path,
                            script_args.ranker_dir, script_args.stage_configs)  # fmt: skip
    output_dir = train(script_args, training_args, model_args)
    PartialState().print(f"model, log history and checkpoints in {output_dir}")


if __name__ == "__main__":
    parser = TrlParser((EGGRPOScriptArguments, EGGRPOConfig, ModelConfig))
    main(*parser.parse_args_and_config()) if len(sys.argv) > 1 else run_chain(DEMO_CHAIN)
