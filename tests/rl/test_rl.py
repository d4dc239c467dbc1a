"""The RL stage's set-up: offline tracking without a key, and config errors that say what to change."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from eg_grpo.rl.config import EGGRPOConfig
from eg_grpo.tracking import configure_tracking


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


def test_the_wandb_run_config_holds_reward_specs_and_lineage(tmp_path, tiny_data_dir, tiny_sid_dir, tiny_sft_dir,
                                                             monkeypatch):  # fmt: skip
    """A one-step run logged to an offline W&B folder: the config there names the rewards and the inputs."""
    import glob

    import wandb
    from trl import ModelConfig

    from eg_grpo.io import folder_fingerprint
    from eg_grpo.rl.inputs import EGGRPOScriptArguments
    from eg_grpo.rl.stage import build_trainer

    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_PROJECT", "WANDB_TAGS", "WANDB_RUN_GROUP"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    rewards = [
        {"name": "sid_match", "weight": 1.0},
        {"name": "valid_sid", "weight": 0.5, "invalid_penalty": -7},
    ]
    script = EGGRPOScriptArguments(
        data_dir=str(tiny_data_dir), rewards=rewards, max_train_rows=16, chain=False
    )
    args = config(tmp_path, tiny_sid_dir, report_to=["wandb"], max_steps=1, logging_steps=1, save_strategy="no",
                  num_expert_samples=1, disable_tqdm=True, run_name="tiny-eg")  # fmt: skip
    trainer = build_trainer(script, args, ModelConfig(model_name_or_path=str(tiny_sft_dir)))
    try:
        trainer.train()
        run_id = wandb.run.id
    finally:
        wandb.finish()
        wandb.teardown()  # stops the W&B service, which flushes the run file
    (path,) = glob.glob(str(tmp_path / "wandb" / f"offline-run-*-{run_id}" / f"run-{run_id}.wandb"))
    run_record, config_updates = read_offline_run(path)
    assert run_record.project == "eg-grpo" and list(run_record.tags)[0] == "eg"
    logged = config_updates["eg_grpo"]
    assert [r["name"] for r in logged["rewards"]] == ["sid_match", "valid_sid"]
    assert logged["rewards"][1]["invalid_penalty"] == -7
    assert logged["inputs"]["sids"] == folder_fingerprint(tiny_sid_dir)
    assert logged["inputs"]["model"] == folder_fingerprint(tiny_sft_dir)


def read_offline_run(path):
    """The run record and the config updates of an offline W&B run file (a LevelDB-style record log)."""
    import struct

    from wandb.proto import wandb_internal_pb2 as pb

    raw, block, pos, buf = Path(path).read_bytes(), 32768, 7, b""  # 7: the ":W&B" file header
    run, config = None, {}
    while pos + 7 <= len(raw):
        if block - pos % block < 7:  # a block trailer too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", raw[pos : pos + 7])
        buf, pos = buf + raw[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind in (1, 4):  # FULL or LAST chunk: a whole record
            record = pb.Record()
            record.ParseFromString(buf)
            buf = b""
            kind_name = record.WhichOneof("record_type")
            if kind_name == "run":
                run = record.run
            updates = (
                record.config.update
                if kind_name == "config"
                else run.config.update
                if kind_name == "run"
                else []
            )
            config.update({u.key: json.loads(u.value_json) for u in updates})
    return run, config
