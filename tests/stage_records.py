"""Hand-made stage records for tests of the comparability checks (eg_grpo.eval.comparability)."""

from __future__ import annotations

from pathlib import Path

# Hand-made stage records of the comparability checks (eg_grpo.eval.comparability): an RL run as
# eg_grpo.rl.stage.rl_stage_record writes it (the keys the checks read), and an evaluation naming it.
TINY_RL_TRAINING = {"training_objective": "grpo", "num_expert_samples": 2, "max_steps": 6, "learning_rate": 5e-4,
                    "lr_scheduler_type": "constant", "warmup_steps": 0, "optim": "adamw_torch", "seed": 0,
                    "per_device_train_batch_size": 16, "gradient_accumulation_steps": 1, "num_generations": 8}  # fmt: skip


def write_rl_stage(folder, built_by=None, start_model="fp-model", **training) -> Path:
    """``folder/stage.json`` of an RL run of the tiny settings, with ``training`` keys replaced."""
    from eg_grpo.io import stage_record, write_stage

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = {"script": {"train_split": "train", "max_train_rows": 256, "keep_train_rows": "random"},
              "training": {**TINY_RL_TRAINING, **training}, "model": {}}  # fmt: skip
    record = stage_record("rl", config)
    record["inputs"] = {
        name: {"path": f"/data/{name}", "fingerprint": f"fp-{name}"} for name in ("data", "sids")
    }
    record["inputs"]["model"] = {"path": "/data/sft", "fingerprint": start_model}
    write_stage(folder, record, built_by=built_by)
    return folder


def write_eval_stage(folder, model_dir, **results) -> Path:
    """An evaluation folder of ``model_dir``: its ``eval_results.json`` and a ``stage.json`` naming the model."""
    import json

    from eg_grpo.io import stage_record, write_stage

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "eval_results.json").write_text(
        json.dumps({"split": "test", "model_dir": str(model_dir), **results})
    )
    write_stage(folder, stage_record("evaluate", {"settings": {"split": "test"}}, {"model": model_dir}))
    return folder
