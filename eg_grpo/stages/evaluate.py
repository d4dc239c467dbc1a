"""The evaluation stage: loads data, SIDs and a model, checks their lineage, writes the results atomically.

The metrics themselves come from :func:`eg_grpo.eval.evaluator.evaluate_model`. The folder holds
``eval_results.json``, ``per_request.csv`` (``request_id, target_rank``: what ``recipes/compare.py``
pairs models on), ``beam_sweep.png`` and ``stage.json``; its ``inputs`` name the data, SID and model
fingerprints, so two evaluations are comparable only when their data fingerprints and splits match.
``beam_score`` (what ranked the beams) is in ``eval_results.json`` and ``stage.json``; it enters the
record's ``config`` (and so its fingerprint) only when it is not the default ``"model"``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from eg_grpo.io import (
    atomic_dir,
    check_lineage,
    content_config,
    read_stage,
    require_dir,
    stage_record,
    up_to_date,
    write_json,
    write_stage,
)

logger = logging.getLogger(__name__)


@dataclass
class EvaluateArguments:
    """Arguments of the evaluation stage that are not the ``EvalSettings``.

    Args:
        data_dir: folder with items/requests/impressions.parquet.
        sid_dir: the SID folder (holds ``codebook/``), built from ``data_dir``.
        model_dir: a model folder saved by the SFT or RL stage (or any causal LM with the SID tokens),
            trained with ``sid_dir``.
        output_dir: where eval_results.json, per_request.csv, beam_sweep.png and stage.json go.
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
        num_threads: torch CPU threads (None: torch's default).
        report_to: ``wandb`` writes the test metrics to the summary of the W&B run that trained the
            model (recorded in its ``stage.json``), or of the run active in this process; ``none``.
        overwrite: replace an output folder that holds another evaluation.
    """

    data_dir: str | None = field(default=None, metadata={"help": "Data folder (required)."})
    sid_dir: str | None = field(default=None, metadata={"help": "SID folder built from data_dir (required)."})
    model_dir: str | None = field(default=None, metadata={"help": "Model folder (required)."})
    output_dir: str | None = field(default=None, metadata={"help": "Output folder (required)."})
    device: str = field(default="auto", metadata={"help": "auto, cpu or cuda."})
    num_threads: int | None = field(default=None, metadata={"help": "torch CPU threads."})
    report_to: str = field(default="none", metadata={"help": "wandb: test metrics into the model's W&B run."})
    overwrite: bool = field(
        default=False, metadata={"help": "Replace an output folder of another evaluation."}
    )


def evaluate_stage_record(script_args: EvaluateArguments, settings) -> dict:
    data = require_dir(script_args.data_dir, "data_dir", "the folder written by recipes/make_data.py")
    sids = require_dir(script_args.sid_dir, "sid_dir", "the folder written by recipes/build_sids.py")
    model = require_dir(
        script_args.model_dir, "model_dir", "a folder written by recipes/sft.py or recipes/eg_grpo.py"
    )
    # A setting added after evaluations were recorded leaves the record at its default (the results it
    # gives are the earlier ones), so an earlier evaluation's folder stays current.
    unset = ("beam_score",) if settings.beam_score == "model" else ()
    return stage_record(
        "evaluate",
        {"settings": content_config(settings, drop=unset)},
        {"data": data, "sids": sids, "model": model},
    )


def run(script_args: EvaluateArguments, settings) -> dict:
    """Evaluates the model on ``settings.split``; returns the results ({} when already current).

    Raises:
        ValueError: the SIDs were built from other data or the model trained with other SIDs.
        StageConflict: ``output_dir`` holds another evaluation (``--overwrite true`` replaces it).
    """
    import pandas as pd
    import torch

    from eg_grpo.data.schema import SearchLog
    from eg_grpo.data.sft_dataset import check_codebook_matches, check_tokenizer_has_sids, load_codebook
    from eg_grpo.eval.evaluator import evaluate_model, plot_beam_sweep
    from eg_grpo.modeling import load_model_and_tokenizer

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not script_args.output_dir:
        raise ValueError("no output folder: pass --output_dir DIR")
    record = evaluate_stage_record(script_args, settings)
    if up_to_date(script_args.output_dir, record, script_args.overwrite):
        return {}
    if script_args.num_threads:
        torch.set_num_threads(script_args.num_threads)
    # Inputs are checked before decoding starts: lineage, data, codebook, split, then the model's tokens.
    check_lineage(data_dir=script_args.data_dir, sid_dir=script_args.sid_dir, model_dir=script_args.model_dir)
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

    start = time.perf_counter()
    results = evaluate_model(model, tokenizer, log, codebook, settings)
    results["model_dir"], results["sid_dir"], results["data_dir"] = (
        script_args.model_dir, script_args.sid_dir, script_args.data_dir,
    )  # fmt: skip
    results["split"] = settings.split
    results["data_fingerprint"] = record["inputs"]["data"]["fingerprint"]
    per_request = pd.DataFrame(results.pop("per_request"))
    with atomic_dir(script_args.output_dir) as tmp:
        per_request.to_csv(tmp / "per_request.csv", index=False)
        write_json(tmp / "eval_results.json", results)
        plot_beam_sweep(
            results, tmp / "beam_sweep.png", title=f"{Path(script_args.model_dir).name} on {settings.split}"
        )
        # Named beside the record too, so the folder says what ranked the beams even at the default.
        write_stage(tmp, record, time.perf_counter() - start, beam_score=settings.beam_score)
    summary = {k: v for k, v in results.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    if script_args.report_to == "wandb" and (run := report_to_wandb(summary, script_args.model_dir, settings.split,
                                                                    script_args.output_dir)):  # fmt: skip
        write_json(
            Path(script_args.output_dir) / "stage.json",
            {**read_stage(script_args.output_dir), "tracking": {"wandb": run}},
        )
    print(json.dumps(summary, indent=2))
    return results


def report_to_wandb(
    summary: dict, model_dir: str | Path, split: str, eval_dir: str | Path | None = None
) -> dict | None:
    """Writes ``{split}/{metric}`` into the active W&B run, else into an evaluation run of its own linked to
    the model's training run (:func:`eg_grpo.tracking.start_evaluation_run`); returns that run's record."""
    import wandb

    from eg_grpo.tracking import start_evaluation_run, tracked_run

    metrics = {f"{split}/{k}": v for k, v in summary.items()}
    if wandb.run is not None:
        wandb.run.summary.update(metrics)
        return None
    trained = ((read_stage(model_dir) or {}).get("tracking") or {}).get("wandb")
    if not trained:
        logger.warning(
            "report_to=wandb: %s records no W&B run and none is active; nothing reported", model_dir
        )
        return None
    run = start_evaluation_run(trained, model_dir, split, eval_dir or model_dir)
    run.summary.update(metrics)
    info = {**tracked_run(), "evaluates": trained["id"]}
    run.finish()
    return info


def stage_arguments():
    from eg_grpo.eval.evaluator import EvalSettings

    return (EvaluateArguments, EvalSettings)
