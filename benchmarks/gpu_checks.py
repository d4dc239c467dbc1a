"""Every GPU check in one command (speed and memory of a 0.5B LoRA step, DeepSpeed ZeRO-2/3, vLLM); prints ONE JSON object (also `$OUT/gpu_checks.json`).

    python benchmarks/gpu_checks.py                 # GPU machine: all checks (benchmarks/README.md)
    python benchmarks/gpu_checks.py --smoke         # CPU: the same code paths, tiny model, 2 steps
    python benchmarks/gpu_checks.py --only eg_grpo_lora_0.5b,zero3

Data: the demo log and CQ-SIDs (`outputs/demo/{data,sids}`). Policy: a random-init model of Qwen2.5-0.5B's
sizes (151,936 embedding rows: the logits are as wide as the real model's), a BPE tokenizer trained on the
data plus the SID tokens, bf16 (`--smoke`: the tiny test model). LoRA, prompt, G and batch are those of
`recipes/configs/qwen2.5-0.5b/eg_grpo.yaml`. Checks: ``prepare`` (builds that model once; device, versions),
``eg_grpo_lora_0.5b`` (EG-GRPO vs stock `GRPOTrainer` steps, timed as `benchmarks/step.py` does:
``step_ratio`` and peak GPU memory), ``zero2``/``zero3`` (`recipes/eg_grpo.py` through
`accelerate launch` with `accelerate_configs/zeroN.yaml`, one process; ``--smoke`` uses DeepSpeed's CPU
accelerator where deepspeed is installed, else `cpu.yaml` for zero2 only) and ``vllm_colocate`` (where vLLM is installed: the engine with our trie processor, valid-SID rate and SIDs/s).

Each check runs in its own process under a time limit, so a crash, hang or CUDA error is recorded and the
next check still runs; all together stop at ``--budget_s``. ``status`` is ``ok``, ``failed`` (``error``,
``log_tail``), ``timeout`` or ``skipped`` (``reason``). Logs: ``--work_dir``/logs, and `$OUT/gpu_checks.log`.
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import importlib.util
import json
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path
from types import SimpleNamespace

import torch
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
RECIPE = REPO_ROOT / "recipes/configs/qwen2.5-0.5b/eg_grpo.yaml"
RECIPE_ARGS = yaml.safe_load(RECIPE.read_text())
LORA = {
    k: RECIPE_ARGS[k] for k in ("use_peft", "lora_r", "lora_alpha", "lora_dropout", "lora_target_modules")
}
PROMPT = {k: RECIPE_ARGS[k] for k in ("max_history", "use_titles")}
# Seconds each check may take: a hang or a slow start must not eat the others' time.
LIMITS = {"prepare": 150, "eg_grpo_lora_0.5b": 240, "zero2": 150, "zero3": 180, "vllm_colocate": 180}
CUDA = torch.cuda.is_available()  # creates no CUDA context: the parent process leaves the GPU to the checks
PACKAGES = ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "deepspeed", "vllm")


class Skip(Exception):
    """Raised by a check that cannot run here; recorded as ``skipped`` with its reason."""


def model_dir(args) -> Path:
    return Path(args.work_dir) / ("policy_tiny" if args.smoke else "policy_0.5b")


def load_data(args):
    from eg_grpo.data.schema import SearchLog
    from eg_grpo.sid.codebook import SIDCodebook

    codebook_dir = Path(args.sid_dir) / "codebook"
    if not Path(args.data_dir).is_dir() or not codebook_dir.is_dir():
        raise FileNotFoundError(f"{args.data_dir} or {codebook_dir} missing: build them with the demo chain and "
                                "carry both folders (benchmarks/README.md)")  # fmt: skip
    return SearchLog.load(args.data_dir), SIDCodebook.load(codebook_dir)


# --------------------------------------------------------------------------------------------------
# Checks; each runs in a child process (`--child NAME`) and returns its JSON fields.
def check_prepare(args) -> dict:
    from transformers import Qwen2ForCausalLM

    from eg_grpo import modeling
    from eg_grpo.data.sft_dataset import dataset_texts

    if not args.smoke and not CUDA:
        raise RuntimeError("no CUDA device (use --smoke on a CPU machine)")
    log, codebook = load_data(args)
    sizes = list(codebook.codebook_sizes)
    info = {"device": torch.cuda.get_device_name() if CUDA else "cpu",
            "versions": {n: importlib.metadata.version(n) if importlib.util.find_spec(n) else None for n in PACKAGES},
            "data": {"items": len(log.items), "requests": len(log.requests), "codebook_sizes": sizes}}  # fmt: skip
    out, texts = model_dir(args), dataset_texts(log)
    marker = out / "ready.json"
    if marker.exists() and json.loads(marker.read_text())["codebook_sizes"] == sizes:
        return {**info, **json.loads(marker.read_text()), "reused": True}
    shutil.rmtree(out, ignore_errors=True)
    if args.smoke:
        model, tokenizer, _ = modeling.build_tiny_model_and_tokenizer(texts, sizes, "test")
    else:
        tokenizer = modeling.build_tiny_tokenizer(texts, vocab_size=4096, model_max_length=2048)
        config = (
            modeling.qwen2_5_0_5b_config()
        )  # rows > len(tokenizer): SID tokens take spare rows, as in Qwen
        config.bos_token_id, config.eos_token_id = None, tokenizer.eos_token_id
        config.pad_token_id = tokenizer.pad_token_id
        with torch.device("cuda"):  # a random init of 0.5B parameters takes a minute on the CPU
            model = Qwen2ForCausalLM(config)
        modeling.add_sid_tokens(model, tokenizer, sizes, init="random")
        model.generation_config = modeling.clean_generation_config(tokenizer)
        model = model.to(torch.bfloat16)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    built = {"model_dir": str(out), "parameters_m": round(model.num_parameters() / 1e6, 1),
             "embedding_rows": model.get_input_embeddings().weight.shape[0], "tokenizer_len": len(tokenizer),
             "codebook_sizes": sizes}  # fmt: skip
    marker.write_text(json.dumps(built))
    return {**info, **built, "reused": False}


def measured_train(trainer, args) -> dict:
    """Trains; step times as benchmarks/step.py takes them, and the GPU memory of this `train()`."""
    from step import timed_steps

    if CUDA:
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    times = timed_steps(trainer, args.steps)[args.warmup :]
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    result = {"step_ms_median": round(statistics.median(times) * 1e3, 2), "steps_timed": len(times),
              "trainable_parameters_m": round(trainable / 1e6, 1)}  # fmt: skip
    if CUDA:
        result["gpu_mem_before_train_gib"] = round(before / 2**30, 2)
        result["peak_gpu_mem_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return result


def check_eg_grpo_lora(args) -> dict:
    from step import common_settings
    from trl import GRPOConfig, GRPOTrainer, ModelConfig

    from eg_grpo.rl.config import EGGRPOConfig
    from eg_grpo.rl.inputs import EGGRPOScriptArguments
    from eg_grpo.rl.stage import build_trainer
    from eg_grpo.sft.model import lora_config
    from eg_grpo.sid.codebook import SIDCodebook

    if not args.smoke and not CUDA:
        raise Skip("needs CUDA")
    ns = SimpleNamespace(num_generations=args.num_generations, batch=args.batch, steps=args.steps)
    # A random-init policy never ends free text by itself: with TRL's length of 8 the stock trainer would
    # generate twice the tokens of a SID (L + 1), which is what a trained policy emits.
    length = SIDCodebook.load(Path(args.sid_dir) / "codebook").num_levels + 1

    def settings(name):  # one log, at the last step: its eg/* metrics are means over all steps
        return {**common_settings(ns, str(Path(args.work_dir) / name)), "logging_steps": args.steps,
                "max_completion_length": length}  # fmt: skip

    dtype = "bfloat16" if CUDA else "float32"
    model_args = ModelConfig(model_name_or_path=str(model_dir(args)), dtype=dtype, **LORA)
    script = EGGRPOScriptArguments(data_dir=args.data_dir, rewards=[{"name": "sid_match"}],
                                   max_train_rows=args.batch * args.steps, chain=False, **PROMPT)  # fmt: skip
    eg_args = EGGRPOConfig(**settings("eg"), sid_dir=args.sid_dir, rollout_mode="sample", constrained_decoding=True,
                           num_expert_samples=RECIPE_ARGS["num_expert_samples"])  # fmt: skip
    eg = build_trainer(script, eg_args, model_args)
    eg_run = measured_train(eg, args)
    logged = next(h for h in reversed(eg.state.log_history) if "eg/valid_sid_rate" in h)
    eg_run.update(valid_sid_rate=logged["eg/valid_sid_rate"], expert_frac=logged["eg/expert_frac"],
                  loss=logged["loss"])  # fmt: skip
    rewards, dataset, tokenizer = eg.reward_funcs, eg.train_dataset, eg.processing_class
    del eg  # before the stock trainer loads its copy, so that its memory figures are its own
    gc.collect()
    if CUDA:
        torch.cuda.empty_cache()
    stock = GRPOTrainer(model=str(model_dir(args)), reward_funcs=rewards, train_dataset=dataset,
                        processing_class=tokenizer, peft_config=lora_config(model_args),
                        args=GRPOConfig(**settings("stock"), model_init_kwargs={"dtype": dtype}))  # fmt: skip
    stock_run = measured_train(stock, args)
    return {
        "step_ratio": round(eg_run["step_ms_median"] / stock_run["step_ms_median"], 4),
        "eg_grpo": eg_run, "stock_grpo": stock_run,
        "settings": {"steps": args.steps, "warmup": args.warmup, "num_generations": args.num_generations,
                     "per_device_train_batch_size": args.batch, "num_expert_samples": eg_args.num_expert_samples,
                     "bf16": CUDA, "max_completion_length": length, "gradient_checkpointing": False, **PROMPT},
        "passed": eg_run["valid_sid_rate"] == 1.0 and math.isfinite(eg_run["loss"]),
    }  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_zero(args, stage: str) -> dict:
    config, env = REPO_ROOT / f"accelerate_configs/{stage}.yaml", dict(os.environ)
    has_deepspeed = importlib.util.find_spec("deepspeed") is not None
    if args.smoke and has_deepspeed:  # the same ZeRO config on DeepSpeed's CPU accelerator (gloo), fp32
        cpu_config = {**yaml.safe_load(config.read_text()), "use_cpu": True, "mixed_precision": "no"}
        config = Path(args.work_dir) / f"{stage}_cpu.yaml"
        config.write_text(yaml.safe_dump(cpu_config))
        env["DS_ACCELERATOR"] = "cpu"
    elif args.smoke:
        if stage == "zero3":
            raise Skip(
                "deepspeed is not installed; --smoke ran the zero2 launch with accelerate_configs/cpu.yaml"
            )
        config = REPO_ROOT / "accelerate_configs/cpu.yaml"
    elif not CUDA:
        raise Skip("needs CUDA")
    elif not has_deepspeed:
        raise Skip('deepspeed is not installed (pip install -e ".[deepspeed]", or the sdist in .whl/)')
    out, steps = Path(args.work_dir) / stage, args.zero_steps
    shutil.rmtree(out, ignore_errors=True)
    argv = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config), "--num_processes", "1",
        "--main_process_port", str(free_port()), str(REPO_ROOT / "recipes/eg_grpo.py"), "--config", str(RECIPE),
        "--data_dir", args.data_dir, "--sid_dir", args.sid_dir, "--model_name_or_path", str(model_dir(args)),
        "--output_dir", str(out), "--chain", "false", "--rewards", '[{"name": "sid_match"}]',
        "--max_train_rows", str(args.batch * steps), "--num_generations", str(args.num_generations),
        "--per_device_train_batch_size", str(args.batch), "--max_steps", str(steps), "--logging_steps", "1",
        "--save_strategy", "no", "--report_to", "none", "--disable_tqdm", "true",
        "--sid_eval_steps", str(steps), "--sid_eval_examples", "64", "--sid_eval_beams", "10",
    ]  # fmt: skip
    if args.smoke:  # CPU: fp32 (the accelerate config has no mixed precision), no checkpointing
        argv += [
            "--use_cpu",
            "true",
            "--bf16",
            "false",
            "--dtype",
            "float32",
            "--gradient_checkpointing",
            "false",
        ]
    else:  # the accelerate config's mixed_precision is bf16: the trainer's flag must agree with DeepSpeed's
        argv += ["--bf16", "true"]
    start = time.perf_counter()
    rc = subprocess.run(argv, cwd=REPO_ROOT, env=env).returncode  # its output goes to this check's log
    wall = time.perf_counter() - start
    if rc != 0:
        raise RuntimeError(f"accelerate launch exited with {rc} after {wall:.0f} s (see log_tail)")
    history = json.loads((out / "log_history.json").read_text())
    logged = [h for h in history if "eg/valid_sid_rate" in h]
    step_times = [h["step_time"] for h in logged if "step_time" in h][args.warmup :]
    result = {
        "config": os.path.relpath(config, REPO_ROOT), "launch_wall_s": round(wall, 1), "steps_logged": len(logged),
        "step_time_s_median": round(statistics.median(step_times), 3) if step_times else None,
        "valid_sid_rate_min": min(h["eg/valid_sid_rate"] for h in logged),
        "expert_frac_mean": round(statistics.mean(h["eg/expert_frac"] for h in logged), 4),
        "loss_finite": all(math.isfinite(h["loss"]) for h in logged),
        "heldout": {k: v for h in history for k, v in h.items() if k.startswith("valid/")},
        "train_runtime_s": next((h["train_runtime"] for h in history if "train_runtime" in h), None),
        "saved": saved_tensors(out),
    }  # fmt: skip
    problems = {"steps missing": len(logged) != steps, "valid SID rate < 1": result["valid_sid_rate_min"] != 1.0,
                "loss not finite": not result["loss_finite"], "no held-out evaluation": not result["heldout"],
                "empty saved tensors": result["saved"]["empty"] > 0 or not result["saved"]["tensors"]}  # fmt: skip
    problems = [name for name, bad in problems.items() if bad]
    if problems:
        raise RuntimeError(f"{stage}: {', '.join(problems)}; result: {json.dumps(result)}")
    return result


def saved_tensors(out: Path) -> dict:
    """Tensor count and empty tensors of the saved model or adapter (ZeRO-3 placeholders have 0 elements)."""
    from safetensors import safe_open

    files, shapes = sorted(out.glob("*.safetensors")), {}
    for file in files:
        with safe_open(str(file), "pt") as f:
            shapes.update({k: f.get_slice(k).get_shape() for k in f.keys()})  # noqa: SIM118
    return {"files": [f.name for f in files], "tensors": len(shapes),
            "empty": sum(1 for s in shapes.values() if math.prod(s) == 0)}  # fmt: skip


def check_vllm(args) -> dict:
    try:
        import vllm
    except ImportError:
        raise Skip("vllm not installed") from None
    if not CUDA:
        raise Skip("needs CUDA")
    import trl.generation.vllm_generation as trl_vllm
    from transformers import AutoTokenizer

    from eg_grpo.data.rl_dataset import build_rl_dataset
    from eg_grpo.rl.vllm_rollouts import check_colocate_calls, colocate_llm_with_trie, trie_generation_kwargs
    from eg_grpo.sid.tokens import SIDVocab

    log, codebook = load_data(args)
    path = str(model_dir(args))
    with colocate_llm_with_trie() as calls:  # the symbol and the wrapper of the trainer's colocate path
        llm = trl_vllm.LLM(model=path, dtype="bfloat16", seed=0, gpu_memory_utilization=0.3, max_model_len=1024,
                           enforce_eager=True, logprobs_mode="processed_logprobs")  # fmt: skip
    check_colocate_calls(calls)
    tokenizer = AutoTokenizer.from_pretrained(path)
    vocab = SIDVocab(tokenizer, codebook.codebook_sizes)
    valid = {tuple(ids) for ids in codebook.sid_token_ids(vocab)}  # L SID tokens + eos
    rows = build_rl_dataset(log, codebook, vocab, tokenizer, max_rows=args.vllm_prompts, **PROMPT)
    prompts = [{"prompt_token_ids": tokenizer(p)["input_ids"]} for p in rows["prompt"]]
    params = vllm.SamplingParams(n=args.num_generations, temperature=1.0, max_tokens=8,
                                 **trie_generation_kwargs(None, "colocate", args.sid_dir))  # fmt: skip
    llm.generate(prompts[:8], sampling_params=params, use_tqdm=False)  # warm-up
    start = time.perf_counter()
    outputs = llm.generate(prompts, sampling_params=params, use_tqdm=False)
    seconds = time.perf_counter() - start
    completions = [tuple(o.token_ids) for out in outputs for o in out.outputs]
    rate = sum(c in valid for c in completions) / len(completions)
    result = {"valid_sid_rate": rate, "sids_per_s": round(len(completions) / seconds, 1), "sids": len(completions),
              "prompts": len(prompts), "samples_per_prompt": args.num_generations,
              "generate_s": round(seconds, 3)}  # fmt: skip
    if rate != 1.0:
        raise RuntimeError(f"constrained vLLM samples are not all valid SIDs: {json.dumps(result)}")
    return result


CHECKS = {
    "prepare": check_prepare,
    "eg_grpo_lora_0.5b": check_eg_grpo_lora,
    "zero2": lambda args: check_zero(args, "zero2"),
    "zero3": lambda args: check_zero(args, "zero3"),
    "vllm_colocate": check_vllm,
}


# --------------------------------------------------------------------------------------------------
# Driver
def child_main(args) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        result = {"status": "ok", **CHECKS[args.child](args)}
        if result.pop("passed", True) is False:
            result.update(status="failed", error="criteria not met (valid_sid_rate 1.0, finite loss)")
    except Skip as skip:
        result = {"status": "skipped", "reason": str(skip)}
    except Exception:
        result = {"status": "failed", "error": traceback.format_exc()[-3000:]}
    Path(args.result).write_text(json.dumps(result, default=str))


def run_child(name: str, args, limit_s: float) -> dict:
    logs = Path(args.work_dir) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path, result_path = logs / f"{name}.log", logs / f"{name}.json"
    result_path.unlink(missing_ok=True)
    argv = [sys.executable, str(Path(__file__).resolve()), "--child", name, "--result", str(result_path)]
    for key in ("data_dir", "sid_dir", "work_dir", "steps", "warmup", "zero_steps", "batch", "num_generations",
                "vllm_prompts", "threads"):  # fmt: skip
        if getattr(args, key) is not None:
            argv += [f"--{key}", str(getattr(args, key))]
    argv += ["--smoke"] if args.smoke else []
    path = os.pathsep.join(p for p in [str(REPO_ROOT), os.environ.get("PYTHONPATH", "")] if p)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": path}
    env.setdefault("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with open(log_path, "w") as log:
        # A session of its own: on timeout the whole group (accelerate, its workers, vLLM's engine) is killed.
        proc = subprocess.Popen(argv, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
        try:
            proc.wait(timeout=limit_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    if result_path.exists():
        result = json.loads(result_path.read_text())
    elif proc.returncode == -signal.SIGKILL:
        result = {"status": "timeout", "error": f"stopped at its limit of {limit_s:.0f} s"}
    else:
        result = {"status": "failed", "error": f"exited with {proc.returncode} without a result"}
    if result["status"] in ("failed", "timeout"):
        result["log_tail"] = log_path.read_text(errors="replace")[-3000:]
    return {**result, "seconds": round(time.perf_counter() - start, 1)}


def main(args) -> dict:
    start, out = time.perf_counter(), os.environ.get("OUT")
    names = args.only.split(",") if args.only else list(CHECKS)
    if set(names) - set(CHECKS):
        sys.exit(f"unknown check(s) {sorted(set(names) - set(CHECKS))}; choose from {list(CHECKS)}")
    names = ["prepare"] + [
        n for n in names if n != "prepare"
    ]  # every check needs the model (reused if built)
    report = {"smoke": args.smoke, "device": None, "versions": None, "data": None, "data_dir": args.data_dir,
              "sid_dir": args.sid_dir, "total_s": None, "checks": {}}  # fmt: skip
    for name in names:
        left = args.budget_s - (time.perf_counter() - start)
        if name != "prepare" and report["checks"]["prepare"]["status"] != "ok":
            result = {"status": "skipped", "reason": "prepare failed"}
        elif left < 30:
            result = {"status": "skipped", "reason": f"--budget_s {args.budget_s:.0f} spent"}
        else:
            print(f"[gpu_checks] {name} (limit {min(LIMITS[name], left):.0f} s)", file=sys.stderr, flush=True)
            result = run_child(name, args, min(LIMITS[name], left))
            print(
                f"[gpu_checks] {name}: {result['status']} ({result['seconds']} s)",
                file=sys.stderr,
                flush=True,
            )
        if name == "prepare":  # the device and versions head the report
            report.update({k: result.pop(k) for k in ("device", "versions", "data") if k in result})
        report["checks"][name] = result
        report["total_s"] = round(time.perf_counter() - start, 1)
        if out:  # written after every check: what is done survives a killed command
            Path(out).mkdir(parents=True, exist_ok=True)
            Path(out, "gpu_checks.json").write_text(json.dumps(report, indent=2, default=str))
    if out:
        logs = sorted((Path(args.work_dir) / "logs").glob("*.log"))
        text = "".join(f"===== {p.name}\n{p.read_text(errors='replace')}" for p in logs)
        Path(out, "gpu_checks.log").write_text(text)
    print(json.dumps(report, indent=2, default=str))
    return report


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="CPU: tiny model, 2 steps, no vLLM")
    parser.add_argument("--only", help=f"comma-separated subset of {list(CHECKS)}")
    parser.add_argument("--data_dir", default="outputs/demo/data")
    parser.add_argument("--sid_dir", default="outputs/demo/sids")
    parser.add_argument("--work_dir", help="default: outputs/gpu_checks (--smoke: outputs/gpu_checks_smoke)")
    parser.add_argument(
        "--steps", type=int, help="steps of each trainer in eg_grpo_lora_0.5b (20; --smoke 2)"
    )
    parser.add_argument("--warmup", type=int, help="first steps not timed (2; --smoke 1)")
    parser.add_argument("--zero_steps", type=int, help="steps of each ZeRO run (10; --smoke 2)")
    parser.add_argument("--batch", type=int, help="per_device_train_batch_size (the recipe's; --smoke 8)")
    parser.add_argument("--num_generations", type=int, help="G (the recipe's; --smoke 4)")
    parser.add_argument("--vllm_prompts", type=int, default=256)
    parser.add_argument("--budget_s", type=float, default=420, help="all checks together stop here")
    parser.add_argument("--threads", type=int, help="torch CPU threads in each check")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    # GPU: the recipe's G and batch; --smoke: the smallest that still forms whole groups.
    defaults = dict(steps=2, warmup=1, zero_steps=2, batch=8, num_generations=4) if args.smoke else dict(
        steps=20, warmup=2, zero_steps=10, batch=RECIPE_ARGS["per_device_train_batch_size"],
        num_generations=RECIPE_ARGS["num_generations"])  # fmt: skip
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.work_dir = args.work_dir or ("outputs/gpu_checks_smoke" if args.smoke else "outputs/gpu_checks")
    for key in ("data_dir", "sid_dir", "work_dir"):  # children and accelerate run from the repo root
        setattr(args, key, str(Path(getattr(args, key)).resolve()))
    return args


if __name__ == "__main__":
    parsed = parse_args()
    child_main(parsed) if parsed.child else main(parsed)
