"""Expert-guided GRPO on semantic IDs.

    # the whole demo chain (data -> SIDs -> ranker -> SFT -> vanilla & expert-guided GRPO -> eval -> report)
    accelerate launch recipes/eg_grpo.py

    # one RL run; missing earlier stages are built first from `stage_configs`
    accelerate launch recipes/eg_grpo.py --config recipes/configs/tiny/eg_grpo.yaml

    # resume a killed run from its newest intact checkpoint (a killed run prints this command)
    accelerate launch recipes/eg_grpo.py --config recipes/configs/demo/eg_grpo.yaml --resume_from_checkpoint last

The stage is :func:`eg_grpo.rl.stage.run` (``python -m eg_grpo.stages rl ...`` runs it without this file);
the chain is :func:`eg_grpo.pipeline.run_chain`.
"""

import sys

import _recipe_path  # noqa: F401  (first: see recipes/_recipe_path.py)


def main(script_args, training_args, model_args):
    from eg_grpo.rl.stage import run

    output_dir = run(script_args, training_args, model_args)
    print(f"model, log history and checkpoints in {output_dir}")


if __name__ == "__main__":
    from eg_grpo.cli import guarded, run_recipe

    if len(sys.argv) == 1:  # no arguments: the demo chain
        from eg_grpo.pipeline import run_chain

        sys.exit(guarded("chain", lambda: run_chain("demo")))
    sys.exit(run_recipe("rl", main, own=("eg_grpo.rl.inputs:EGGRPOScriptArguments", "eg_grpo.rl.config:EGGRPOConfig"),
                        inherited=("trl.GRPOConfig", "trl.ModelConfig")))  # fmt: skip
