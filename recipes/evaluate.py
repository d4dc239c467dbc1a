"""Evaluates a SID generator: constrained beam search over a split → eval_results.json + a sweep PNG.

Usage:
    python recipes/evaluate.py --config recipes/configs/tiny/evaluate.yaml \
        --data_dir outputs/tiny/data --sid_dir outputs/tiny/sids --model_dir outputs/tiny/sft \
        --output_dir outputs/tiny/eval

Writes ``OUTPUT_DIR/eval_results.json`` (hr@K, ndcg@K, click_hitrate@B, semantic_hitrate@B,
recall@N_items, valid_sid_rate, distinct_sids, num_examples, seconds; see
:mod:`eg_grpo.eval.evaluator`), ``OUTPUT_DIR/beam_sweep.png`` and ``OUTPUT_DIR/per_request.csv``
(``request_id, target_rank``: what ``recipes/compare.py --eval_dirs`` pairs models on).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import _recipe_path  # noqa: F401  (first: see recipes/_recipe_path.py)
import pandas as pd
import torch
from trl import TrlParser

from eg_grpo.data.schema import SearchLog
from eg_grpo.data.sft_dataset import check_codebook_matches, check_tokenizer_has_sids, load_codebook
from eg_grpo.eval.evaluator import EvalSettings, evaluate_model, plot_beam_sweep
from eg_grpo.io import write_json
from eg_grpo.modeling import load_model_and_tokenizer


@dataclass
class EvaluateArguments:
    """Script arguments.

    Args:
        data_dir: folder with items/requests/impressions.parquet.
        sid_dir: output folder of build_sids.py (holds ``codebook/``).
        model_dir: a model folder saved by sft.py or eg_grpo.py (or any causal LM with the SID tokens).
        output_dir: where eval_results.json and beam_sweep.png go.
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
        num_threads: torch CPU threads (None: torch's default).
    """

    data_dir: str = field(default="outputs/tiny/data", metadata={"help": "Data folder."})
    sid_dir: str = field(default="outputs/tiny/sids", metadata={"help": "SID folder from build_sids.py."})
    model_dir: str = field(default="outputs/tiny/sft", metadata={"help": "Model folder."})
    output_dir: str = field(default="outputs/tiny/eval", metadata={"help": "Output folder."})
    device: str = field(default="auto", metadata={"help": "auto, cpu or cuda."})
    num_threads: int | None = field(default=None, metadata={"help": "torch CPU threads."})


def main(script_args: EvaluateArguments, settings: EvalSettings) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if script_args.num_threads:
        torch.set_num_threads(script_args.num_threads)
    # Inputs are checked before decoding starts: data, codebook, split, then the model's tokens.
    log = SearchLog.load(script_args.data_dir)
    codebook = load_codebook(script_args.sid_dir)
    check_codebook_matches(log, codebook)
    log.split(settings.split)
    if not (Path(script_args.model_dir) / "config.json").exists():
        raise FileNotFoundError(
            f"{script_args.model_dir} holds no model (config.json); train one with recipes/sft.py"
        )
    model, tokenizer = load_model_and_tokenizer(script_args.model_dir)
    check_tokenizer_has_sids(tokenizer, codebook)
    device = script_args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)

    results = evaluate_model(model, tokenizer, log, codebook, settings)
    results["model_dir"], results["sid_dir"], results["data_dir"] = (
        script_args.model_dir, script_args.sid_dir, script_args.data_dir,
    )  # fmt: skip
    out = Path(script_args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    # per_request.csv first: eval_results.json is what marks the evaluation as done
    pd.DataFrame(results.pop("per_request")).to_csv(out / "per_request.csv", index=False)
    write_json(out / "eval_results.json", results)
    plot_beam_sweep(
        results, out / "beam_sweep.png", title=f"{Path(script_args.model_dir).name} on {settings.split}"
    )
    summary = {k: v for k, v in results.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    print(json.dumps(summary, indent=2))
    return results


if __name__ == "__main__":
    parser = TrlParser((EvaluateArguments, EvalSettings))
    main(*parser.parse_args_and_config())
