"""The RL stage's set-up: offline tracking without a key, and config errors that say what to change."""

from __future__ import annotations

import os

import pytest

from eg_grpo.config import EGGRPOConfig
from eg_grpo.rl import configure_tracking


def config(tmp_path, sid_dir, **overrides):
    settings = dict(output_dir=str(tmp_path / "root" / "eg_grpo"), sid_dir=sid_dir and str(sid_dir), num_generations=4,
                    per_device_train_batch_size=8, use_cpu=True, report_to="none")  # fmt: skip
    return EGGRPOConfig(**{**settings, **overrides})


def test_wandb_without_a_key_runs_offline_and_groups_runs_by_output_root(tmp_path, tiny_sid_dir, monkeypatch):
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_RUN_GROUP"):
        monkeypatch.delenv(name, raising=False)
    configure_tracking(config(tmp_path, tiny_sid_dir, report_to=["wandb"]))
    assert os.environ["WANDB_MODE"] == "offline"
    assert os.environ["WANDB_RUN_GROUP"] == "root"


def test_a_key_keeps_wandb_online(tmp_path, tiny_sid_dir, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    configure_tracking(config(tmp_path, tiny_sid_dir, report_to=["wandb"]))
    assert "WANDB_MODE" not in os.environ


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"num_expert_samples": 4}, "num_expert_samples=4 must be in"),
        ({"expert_source": ["viewed"]}, "expert_source"),
        ({"expert_schedule": "sometimes"}, "expert_schedule"),
        ({"rollout_mode": "beam", "constrained_decoding": False}, "needs constrained_decoding"),
        ({"sid_dir": None}, "sid_dir is required"),
    ],
)
def test_bad_settings_are_clear_errors(tmp_path, tiny_sid_dir, overrides, message):
    with pytest.raises(ValueError, match=message):
        config(tmp_path, overrides.pop("sid_dir", tiny_sid_dir), **overrides)
