"""The protocol file: every arm gets the same grid size, bad files are refused naming the key, and the test
runs are checked to be comparable arms except in what each arm tuned."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from stage_records import write_rl_stage

from eg_grpo.eval.comparability import ComparabilityError
from eg_grpo.protocol import ProtocolConfig
from eg_grpo.protocol.run import check_comparable, read_selection

DEMO = Path(__file__).resolve().parents[2] / "recipes" / "configs" / "demo" / "protocol" / "protocol.yaml"


def test_the_demo_protocol_gives_every_arm_eight_trials_of_its_own_grid():
    config = ProtocolConfig.load(DEMO)
    assert list(config.arms) == ["vanilla_grpo", "eg_grpo", "continued_sft", "rejection_sft"]
    for arm in config.arms.values():
        trials = arm.trials()
        assert len(trials) == 8 and len({t.name for t in trials}) == 8
        assert {t.steps for t in trials} == {120, 240}
    eg = config.arms["eg_grpo"].trials()
    assert eg[0].settings == {"learning_rate": 5e-5, "max_steps": 120, "num_expert_samples": 1}
    assert eg[-1].name == "lr0.0001_steps240_k2"
    assert config.test.seeds == [0, 1, 2, 3, 4] and config.tune.seeds == [0]
    assert config.comparisons[0] == ("eg_grpo", "sft") and len(config.comparisons) == 4


def _write(tmp_path, **changes):
    """The demo protocol with ``changes`` (None drops a key), its relative paths made absolute, in tmp_path."""
    raw = yaml.safe_load(DEMO.read_text())
    for arm in raw["arms"].values():
        arm["config"] = str(DEMO.parent / arm["config"])
    for phase in ("tune", "test"):
        raw[phase] = {
            k: str(DEMO.parent / v) if k in ("evaluate", "arena") else v for k, v in raw[phase].items()
        }
    for key, value in changes.items():
        if value is None:
            raw.pop(key)
        else:
            raw[key] = value
    path = tmp_path / "protocol.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"seeds": [0]}, "unknown key"),
        ({"jobs": 0}, "jobs must be a whole number"),
        ({"comparisons": [["eg_grpo", "reinforce"]]}, "must name two of"),
        (
            {"arms": {"sft": {"config": "../eg_grpo.yaml", "grid": {"max_steps": [1]}}}},
            "may not be named 'sft'",
        ),
        (
            {
                "arms": {
                    "a": {"config": "../eg_grpo.yaml", "grid": {"max_steps": [1, 2]}},
                    "b": {"config": "../vanilla_grpo.yaml", "grid": {"max_steps": [1, 2, 3]}},
                },
                "comparisons": [["a", "b"]],
            },
            "same tuning budget",
        ),
        (
            {
                "test": {
                    "seeds": [0],
                    "evaluate": str(DEMO.parent / "evaluate_test.yaml"),
                    "arena": str(DEMO.parent / "arena_test.yaml"),
                }
            },
            "at least two",
        ),  # fmt: skip
        (
            {
                "tune": {
                    "seed": 0,
                    "evaluate": str(DEMO.parent / "evaluate_valid.yaml"),
                    "arena": str(DEMO.parent / "arena_test.yaml"),
                }
            },
            "tune must read the valid split",
        ),  # fmt: skip
        ({"rl_overrides": {"seed": 3}}, "rl_overrides may not set \\['seed'\\]"),
        ({"rl_overrides": {"max_steps": 3}}, "may not set \\['max_steps'\\]"),
        ({"comparisons": [["eg_grpo", "sft"], ["sft", "eg_grpo"]]}, "named twice"),
        ({"selection": {"metric": "ctr"}}, "selection.metric must be one of"),
        ({"inputs": None}, "missing key"),
    ],
)
def test_bad_protocol_files_are_refused_naming_the_key(tmp_path, changes, message):
    ProtocolConfig.load(_write(tmp_path))  # unchanged, it loads
    with pytest.raises(ValueError, match=message):
        ProtocolConfig.load(_write(tmp_path, **changes))


def test_test_runs_may_differ_in_their_tuned_keys_only(tmp_path):
    config = ProtocolConfig.load(DEMO)
    runs = []
    for arm, training in (("eg_grpo", {"learning_rate": 5e-5, "max_steps": 120}),
                          ("vanilla_grpo", {"num_expert_samples": 0, "learning_rate": 1e-4, "max_steps": 240})):  # fmt: skip
        for seed in (0, 1):
            runs.append(write_rl_stage(tmp_path / arm / "models" / f"s{seed}", seed=seed, **training))
    check_comparable(config, runs)  # learning rate and steps were tuned per arm: comparable
    odd = write_rl_stage(tmp_path / "continued_sft" / "models" / "s0", training_objective="continued_sft",
                         lr_scheduler_type="cosine")  # fmt: skip
    with pytest.raises(ComparabilityError, match="lr_scheduler_type"):
        check_comparable(config, [*runs, odd])
    # a tuned key may differ between arms, never between the seeds of one arm
    other_lr = write_rl_stage(
        tmp_path / "eg_grpo" / "models" / "s2", seed=2, learning_rate=1e-4, max_steps=120
    )
    with pytest.raises(ComparabilityError, match="learning_rate: the runs of eg_grpo differ"):
        check_comparable(config, [*runs, other_lr])
    tuning = [runs[0], runs[2], write_rl_stage(tmp_path / "eg_grpo" / "models" / "t2", learning_rate=1e-4)]
    check_comparable(config, tuning, what="tuning", same_setting=False)  # the trials of one arm may differ


def test_the_test_step_needs_the_selection_first(tmp_path):
    config = ProtocolConfig.load(DEMO)
    config = type(config)(**{**config.__dict__, "output_root": tmp_path})
    with pytest.raises(FileNotFoundError, match="--step select"):
        read_selection(config)
    (tmp_path / "selection.json").write_text('{"arms": {"eg_grpo": {}}}')
    with pytest.raises(ValueError, match="re-run the tuning and --step select"):
        read_selection(config)
