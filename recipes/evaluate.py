"""Evaluates a SID generator: constrained beam search over a split -> eval_results.json + a sweep PNG.

Usage:
    python recipes/evaluate.py --config recipes/configs/tiny/evaluate.yaml \
        --data_dir outputs/tiny/data --sid_dir outputs/tiny/sids --model_dir outputs/tiny/sft \
        --output_dir outputs/tiny/eval

Writes ``OUTPUT_DIR/eval_results.json`` (hr@K, ndcg@K, click_hitrate@B, semantic_hitrate@B,
recall@N_items, valid_sid_rate, distinct_sids, num_examples, seconds; see
:mod:`eg_grpo.eval.evaluator`), ``beam_sweep.png``, ``per_request.csv`` (``request_id,
target_rank``: what ``recipes/compare.py --eval_dirs`` pairs models on) and ``stage.json``,
atomically. SIDs built from other data, or a model trained with other SIDs, are refused. The stage
is :func:`eg_grpo.stages.evaluate.run`.
"""

import sys

import _recipe_path  # noqa: F401  (first: see recipes/_recipe_path.py)


def __getattr__(name: str):
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    # Loaded on first use (the modules import torch), so `--help` answers at once.
    from eg_grpo.stages import evaluate

    return {"EvaluateArguments": evaluate.EvaluateArguments, "main": evaluate.run}[name]


__all__ = ["EvaluateArguments", "main"]  # noqa: F822  (module __getattr__)

if __name__ == "__main__":
    from eg_grpo.cli import run_recipe

    sys.exit(
        run_recipe(
            "evaluate",
            own=(
                "eg_grpo.stages.evaluate:EvaluateArguments",
                "eg_grpo.eval.evaluator:EvalSettings",
            ),
        )
    )
