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

import _recipe_path  # noqa: F401  (first: see recipes/_recipe_path.py)

from eg_grpo.cli import StageParser
from eg_grpo.eval.evaluator import EvalSettings
from eg_grpo.stages.evaluate import EvaluateArguments, run

main = run
__all__ = ["EvaluateArguments", "main"]

if __name__ == "__main__":
    parser = StageParser((EvaluateArguments, EvalSettings))
    script_args, settings = parser.parse_args_and_config()
    run(script_args, settings)
