"""SFT step time with the LM head scoring only labelled positions (``SIDSFTTrainer``) against TRL's CPU
path (every position projected, then masked), measured in one run. Prints one JSON object.

    python benchmarks/sft_step.py --data_dir outputs/demo/data --sid_dir outputs/demo/sids
    python benchmarks/sft_step.py --config recipes/configs/tiny/sft.yaml --data_dir D --sid_dir S --steps 10

Each round trains ``--steps`` SFT steps from the config's start twice, once per head, in alternating
order (so a change in the machine's load hits both alike), and reads transformers' ``train_runtime``.
``speedup`` = median full-head runtime ÷ median compact-head runtime. The two runs see the same rows
in the same order from the same initial weights, so their logged losses must agree (to float
summation order): ``max_loss_diff`` is printed beside the times as the check that only speed changed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import tempfile

import torch

import eg_grpo.sft.trainer as sft_trainer
from eg_grpo.sft.stage import run
from eg_grpo.stages import get_stage


def train_once(argv: list[str], compact: bool) -> tuple[float, list[float]]:
    """(train_runtime in s, the logged losses) of one SFT run; ``compact=False`` leaves TRL's CPU path."""
    original = sft_trainer.labelled_positions_only
    if not compact:
        sft_trainer.labelled_positions_only = contextlib.nullcontext  # SIDSFTTrainer looks it up per step
    try:
        metrics = run(*get_stage("sft").parse(argv))
    finally:
        sft_trainer.labelled_positions_only = original
    losses = [row["loss"] for row in metrics["log_history"] if "loss" in row]
    return float(metrics["train_runtime"]), losses


def main(args) -> dict:
    times: dict[str, list[float]] = {"compact": [], "full": []}
    losses: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            order = ("compact", "full") if round_ % 2 == 0 else ("full", "compact")
            for head in order:
                argv = ["--config", args.config, "--data_dir", args.data_dir, "--sid_dir", args.sid_dir,
                        "--output_dir", f"{tmp}/{head}{round_}", "--max_steps", args.steps, "--logging_steps", 1,
                        "--save_strategy", "no", "--report_to", "none", "--max_eval_rows", 1,
                        "--num_threads", args.threads, "--disable_tqdm", "true"]  # fmt: skip
                runtime, losses[head] = train_once([str(a) for a in argv], compact=head == "compact")
                times[head].append(runtime)
    compact, full = statistics.median(times["compact"]), statistics.median(times["full"])
    result = {
        "speedup": round(full / compact, 3),
        "compact_head_s": round(compact, 2),
        "full_head_s": round(full, 2),
        "runtimes_s": {head: [round(t, 2) for t in ts] for head, ts in times.items()},
        "max_loss_diff": max(abs(a - b) for a, b in zip(losses["compact"], losses["full"], strict=True)),
        "steps": args.steps,
        "rounds": args.rounds,
        "torch_threads": args.threads,
        "config": args.config,
        "device": "cpu",
        "torch": torch.__version__,
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default="recipes/configs/demo/sft.yaml", help="an SFT config (one stage)")
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--sid_dir", required=True)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    main(parser.parse_args())
