"""Does data parallelism change results? One EG-GRPO config run in 1 and in 2 CPU processes. Prints JSON.

    python benchmarks/process_parity.py        # the demo config; needs outputs/demo/{data,sids,ranker,sft}
    python benchmarks/process_parity.py --config recipes/configs/tiny/eg_grpo.yaml --max_steps 10 --eval_examples 200

Runs of the same config, all through a real `accelerate launch` (CPU, gloo), with the same global
batch (groups per step × G), for each seed in ``--seeds``:

- ``one_process/seed{s}``: 1 process, ``per_device_train_batch_size = B``;
- ``two_processes/seed{s}``: 2 processes, ``B / 2`` each. Each process samples with its own RNG
  stream, so the runs cannot be bit-identical; they must agree within seed noise.

For each run: the means over training of the logged reward, ``rewards/sid_match/mean`` and
``eg/hit_rate_sampled``, and test HR@10 / NDCG@10 of the final model (constrained beam search on a
seeded sample of the test split). ``parity`` holds, per metric, the mean over seeds of two − one
and the seed noise: the largest difference between two seeds of the same setting. Also the
binomial standard error of HR@10 on the evaluated sample.
"""

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import yaml

from eg_grpo.data.schema import SearchLog
from eg_grpo.data.sft_dataset import load_codebook
from eg_grpo.eval.evaluator import EvalSettings, evaluate_model
from eg_grpo.modeling import load_model_and_tokenizer
from eg_grpo.pipeline import REPO_ROOT

TRAINING_METRICS = ("reward", "rewards/sid_match/mean", "eg/hit_rate_sampled")


def launch(config: Path, out: Path, processes: int, per_device: int, seed: int, max_steps: int) -> None:
    argv = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file",
        str(REPO_ROOT / "accelerate_configs/cpu.yaml"), "--num_processes", str(processes),
        str(REPO_ROOT / "recipes/eg_grpo.py"), "--config", str(config), "--output_dir", str(out),
        "--chain", "false", "--per_device_train_batch_size", str(per_device), "--seed", str(seed),
        "--max_steps", str(max_steps), "--save_strategy", "no", "--sid_eval_steps", "0", "--disable_tqdm", "true",
    ]  # fmt: skip
    # One torch thread per process: two processes on two cores, no oversubscription.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"run {out.name} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")


def summarise(out: Path, log: SearchLog, codebook, settings: EvalSettings) -> dict:
    history = json.loads((out / "log_history.json").read_text())
    result = {}
    for key in TRAINING_METRICS:
        values = [h[key] for h in history if key in h]
        result[key] = sum(values) / len(values) if values else None
    model, tokenizer = load_model_and_tokenizer(str(out))
    metrics = evaluate_model(model, tokenizer, log, codebook, settings)
    result.update({k: metrics[k] for k in ("hr@10", "ndcg@10", "num_examples")})
    return result


def main(args) -> dict:
    torch.set_num_threads(1)
    config_path = Path(args.config)
    config = yaml.safe_load(config_path.read_text())
    per_device = int(config["per_device_train_batch_size"])
    if per_device % (2 * int(config["num_generations"])):
        raise ValueError(
            f"per_device_train_batch_size={per_device} must split into whole groups over 2 processes"
        )
    log = SearchLog.load(REPO_ROOT / config["data_dir"])
    codebook = load_codebook(REPO_ROOT / config["sid_dir"])
    settings = EvalSettings(split="test", num_beams=10, ks=[10], beam_sizes=[10], recall_num_items=[10],
                            max_examples=args.eval_examples, max_history=int(config.get("max_history", 10)))  # fmt: skip
    result = {"config": str(config_path), "max_steps": args.max_steps, "global_batch": per_device, "runs": {}}
    layouts = {"one_process": (1, per_device), "two_processes": (2, per_device // 2)}
    with tempfile.TemporaryDirectory(prefix="parity_") as tmp:
        for seed in args.seeds:
            for name, (processes, batch) in layouts.items():
                out = Path(tmp) / f"{name}_seed{seed}"
                launch(config_path, out, processes, batch, seed, args.max_steps)
                result["runs"][f"{name}/seed{seed}"] = summarise(out, log, codebook, settings)
                print(out.name, json.dumps(result["runs"][f"{name}/seed{seed}"]), file=sys.stderr)
    by_layout = {name: [result["runs"][f"{name}/seed{s}"] for s in args.seeds] for name in layouts}
    result["parity"] = {}
    for key in (*TRAINING_METRICS, "hr@10", "ndcg@10"):
        one = [r[key] for r in by_layout["one_process"]]
        two = [r[key] for r in by_layout["two_processes"]]
        if None in one or None in two:
            continue
        result["parity"][key] = {
            "two_minus_one": statistics.mean(two) - statistics.mean(one),
            "seed_noise": max(max(one) - min(one), max(two) - min(two)),
        }
    first = by_layout["one_process"][0]
    n, p = first["num_examples"], first["hr@10"]
    result["hr@10_standard_error"] = math.sqrt(p * (1 - p) / n)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default=str(REPO_ROOT / "recipes/configs/demo/eg_grpo.yaml"))
    parser.add_argument("--max_steps", type=int, default=120)
    parser.add_argument("--eval_examples", type=int, default=1000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    print(json.dumps(main(parser.parse_args()), indent=2))
