"""DeepSpeed ZeRO-2 and ZeRO-3 through a real `accelerate launch` (one process), on the tiny config.

What can break under ZeRO, and is checked here:

- ZeRO-3 partitions every parameter at load time (`zero3_init_flag`), so a weight read outside a
  gathered context has shape `(0,)`: the trainer must size its trie from the real shape (`ds_shape`),
  and rollouts and the held-out SID evaluation run on gathered weights (`ds3_gather_for_generation`);
- the saved model must hold the full weights (`zero3_save_16bit_model`), not empty placeholders;
- `mixed_precision: bf16` in the accelerate config turns DeepSpeed's bf16 on, so the trainer gets
  `--bf16 true` to agree with it (the tiny config is a CPU config: `use_cpu`, fp32 by default).

`gpu` runs use `accelerate_configs/zero2.yaml` / `zero3.yaml` unchanged (`pytest -m gpu tests/test_deepspeed.py`).
The `slow` CPU runs use the same configs with `use_cpu: true` and no mixed precision (DeepSpeed's CPU
accelerator, gloo; it compiles a small communication op on first use). Both need `pip install -e ".[deepspeed]"`.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys

import pytest
import torch
import yaml
from transformers import AutoTokenizer

from eg_grpo.modeling import load_model_and_tokenizer
from eg_grpo.pipeline import REPO_ROOT
from eg_grpo.sid.codebook import SIDCodebook

G, K, BATCH, STEPS = 8, 2, 16, 4

# skipif marks are evaluated before the fixtures, so a machine without DeepSpeed builds no SFT model for nothing.
NO_DEEPSPEED = pytest.mark.skipif(
    importlib.util.find_spec("deepspeed") is None, reason='needs deepspeed (pip install -e ".[deepspeed]")'
)
GPU = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    NO_DEEPSPEED,
]
CPU = [pytest.mark.slow, NO_DEEPSPEED]


def accelerate_config(stage: str, device: str, tmp_path):
    path = REPO_ROOT / f"accelerate_configs/{stage}.yaml"
    if device == "cuda":
        return path
    config = {**yaml.safe_load(path.read_text()), "use_cpu": True, "mixed_precision": "no"}
    (tmp_path / f"{stage}_cpu.yaml").write_text(yaml.safe_dump(config))
    return tmp_path / f"{stage}_cpu.yaml"


def launch_zero(
    config, device: str, out, data_dir, sid_dir, model_dir, port: int
) -> subprocess.CompletedProcess:
    argv = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file",
        str(config), "--num_processes", "1", "--main_process_port", str(port),
        str(REPO_ROOT / "recipes/eg_grpo.py"), "--config", str(REPO_ROOT / "recipes/configs/tiny/eg_grpo.yaml"),
        "--data_dir", str(data_dir), "--sid_dir", str(sid_dir), "--model_name_or_path", str(model_dir),
        "--output_dir", str(out), "--chain", "false", "--rewards", '[{"name": "sid_match"}]',
        "--use_cpu", str(device == "cpu").lower(), "--bf16", str(device == "cuda").lower(),
        # Exposed items too: every tiny request then has >= 5 distinct expert SIDs, so each group gets
        # exactly K experts even when the policy already sampled some of them (those are skipped).
        "--expert_source", "purchased", "clicked", "exposed", "--num_expert_samples", str(K),
        "--num_generations", str(G), "--per_device_train_batch_size", str(BATCH), "--max_steps", str(STEPS),
        "--logging_steps", "1", "--save_strategy", "no", "--sid_eval_steps", str(STEPS // 2),
        "--sid_eval_examples", "32", "--disable_tqdm", "true",
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
           "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}  # fmt: skip
    if device == "cpu":
        env["DS_ACCELERATOR"] = "cpu"  # DeepSpeed would otherwise pick CUDA where there is one
    return subprocess.run(argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.parametrize(
    "stage, device, port",
    [pytest.param("zero2", "cuda", 29621, marks=GPU), pytest.param("zero3", "cuda", 29623, marks=GPU),
     pytest.param("zero2", "cpu", 29625, marks=CPU), pytest.param("zero3", "cpu", 29627, marks=CPU)],
)  # fmt: skip
def test_zero_run_trains_on_valid_sids_and_saves_full_weights(
    stage, device, port, tmp_path, tiny_data_dir, tiny_sid_dir, tiny_sft_dir
):
    out = tmp_path / stage
    config = accelerate_config(stage, device, tmp_path)
    done = launch_zero(config, device, out, tiny_data_dir, tiny_sid_dir, tiny_sft_dir, port)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-6000:]

    history = json.loads((out / "log_history.json").read_text())
    steps = [h for h in history if "eg/expert_frac" in h]
    assert [h["step"] for h in steps] == list(range(1, STEPS + 1))
    for h in steps:
        # The valid mass is π(y) / π_c(y) = Z(prefix) per token, TRL's full-vocabulary head over the constrained
        # head: at most 1 only when both read the same gathered LM head at the same temperature (a partitioned,
        # stale or differently scaled copy breaks it).
        assert 0 < h["eg/valid_mass_first"] <= 1 + 1e-6 and 0 < h["eg/valid_mass"] <= 1 + 1e-6, h
        assert h["eg/expert_frac"] == K / G  # experts placed as planned: K of every group of G
        assert math.isfinite(h["loss"])
    assert any("valid/hr@1" in h for h in history), "the held-out SID evaluation ran on the ZeRO model"

    # The saved model is complete: every tensor has the SFT model's shape (ZeRO-3 placeholders are (0,)).
    codebook = SIDCodebook.load(tiny_sid_dir / "codebook")
    trained, tokenizer = load_model_and_tokenizer(str(out), codebook.codebook_sizes)
    reference, _ = load_model_and_tokenizer(str(tiny_sft_dir))
    shapes = {n: p.shape for n, p in trained.state_dict().items()}
    assert shapes == {n: p.shape for n, p in reference.state_dict().items()}
    assert all(torch.isfinite(p).all() for p in trained.parameters())
    # ... and it was trained: ZeRO applied the constrained policy's gradient to the weights.
    before = reference.state_dict()
    changed = [n for n, p in trained.state_dict().items() if not torch.equal(p, before[n])]
    assert changed, "no weight changed under ZeRO"
    assert tokenizer.get_vocab() == AutoTokenizer.from_pretrained(str(tiny_sft_dir)).get_vocab()
