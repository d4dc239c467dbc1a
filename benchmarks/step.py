"""Training-step cost of EG-GRPO against stock TRL GRPO, measured in one run. Prints one JSON object.

    python benchmarks/step.py                       # builds the tiny artifacts under outputs/bench_step
    python benchmarks/step.py --data_dir D --sid_dir S --model_dir M --steps 20

`step_ratio` = median wall time of an `EGGRPOTrainer` step (sample rollouts, k=2, trie on) ÷ that of a
stock `GRPOTrainer` step with the same model, rows, reward, group size and batch. The first
`--warmup` steps of each are dropped; the two trainers alternate in rounds so that a change in the
machine's load hits both alike.
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import TrainerCallback
from trl import GRPOConfig, GRPOTrainer, ModelConfig

from eg_grpo.pipeline import REPO_ROOT, run_stage
from eg_grpo.rl.config import EGGRPOConfig
from eg_grpo.rl.inputs import EGGRPOScriptArguments
from eg_grpo.rl.stage import build_trainer


class StepTimer(TrainerCallback):
    def __init__(self):
        self.times, self._start = [], None

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self._start)


def tiny_artifacts(root: Path) -> tuple[Path, Path, Path]:
    configs = REPO_ROOT / "recipes/configs/tiny"
    run_stage("data", "data", configs / "data.yaml", root / "data")
    run_stage("sids", "sids", configs / "sids_rqkmeans.yaml", root / "sids", {"data_dir": root / "data"})
    run_stage(
        "sft",
        "sft",
        configs / "sft.yaml",
        root / "sft",
        {"data_dir": root / "data", "sid_dir": root / "sids"},
    )
    return root / "data", root / "sids", root / "sft"


def common_settings(args, out: str) -> dict:
    return dict(
        output_dir=out, num_generations=args.num_generations, per_device_train_batch_size=args.batch,
        gradient_accumulation_steps=1, max_steps=args.steps, learning_rate=1e-5, max_completion_length=8,
        logging_steps=10_000, save_strategy="no", report_to="none", use_cpu=not torch.cuda.is_available(),
        gradient_checkpointing=False, seed=0, disable_tqdm=True, beta=0.0, bf16=torch.cuda.is_available(),
    )  # fmt: skip


def timed_steps(trainer, steps: int) -> list[float]:
    timer = StepTimer()
    trainer.add_callback(timer)
    trainer.train()
    return timer.times


def main(args):
    if args.threads:
        torch.set_num_threads(args.threads)
    root = Path(args.work_dir)
    data_dir, sid_dir, model_dir = (
        (Path(args.data_dir), Path(args.sid_dir), Path(args.model_dir))
        if args.data_dir
        else tiny_artifacts(root)
    )
    script = EGGRPOScriptArguments(data_dir=str(data_dir), rewards=[{"name": "sid_match"}],
                                   max_train_rows=args.batch * args.steps * args.rounds, chain=False)  # fmt: skip
    model_args = ModelConfig(model_name_or_path=str(model_dir))
    eg_times, stock_times = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            eg_args = EGGRPOConfig(**common_settings(args, f"{tmp}/eg{round_}"), sid_dir=str(sid_dir),
                                   num_expert_samples=2, rollout_mode="sample", constrained_decoding=True)  # fmt: skip
            eg = build_trainer(script, eg_args, model_args)
            stock = GRPOTrainer(model=str(model_dir), reward_funcs=eg.reward_funcs, train_dataset=eg.train_dataset,
                                processing_class=eg.processing_class,
                                args=GRPOConfig(**common_settings(args, f"{tmp}/stock{round_}")))  # fmt: skip
            eg_times += timed_steps(eg, args.steps)[args.warmup :]
            stock_times += timed_steps(stock, args.steps)[args.warmup :]
    eg_median, stock_median = statistics.median(eg_times), statistics.median(stock_times)
    result = {
        "step_ratio": round(eg_median / stock_median, 4),
        "eg_grpo_step_ms": round(eg_median * 1e3, 2),
        "stock_grpo_step_ms": round(stock_median * 1e3, 2),
        "steps_timed_each": len(eg_times),
        "num_generations": args.num_generations,
        "batch": args.batch,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "torch_threads": torch.get_num_threads(),
        "model_dir": str(model_dir),
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data_dir"), parser.add_argument("--sid_dir"), parser.add_argument("--model_dir")
    parser.add_argument("--work_dir", default="outputs/bench_step", help="where the tiny artifacts are built")
    parser.add_argument("--steps", type=int, default=12, help="steps per trainer per round")
    parser.add_argument("--warmup", type=int, default=2, help="first steps of each round not timed")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--num_generations", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.data_dir and not (args.sid_dir and args.model_dir):
        sys.exit("--data_dir needs --sid_dir and --model_dir too")
    main(args)
