"""recipes/compare.py on evaluation folders: a missing folder is an error, other data is not paired."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from eg_grpo.compare import CompareArguments, run


def eval_dir(path, ranks, data_fingerprint, split="test"):
    """An evaluation folder as the evaluation stage writes it (the lineage fields that matter here)."""
    path.mkdir()
    results = {"hr@10": sum(0 <= r < 10 for r in ranks.values()) / len(ranks), "ndcg@10": 0.1,
               "split": split, "data_fingerprint": data_fingerprint}  # fmt: skip
    (path / "eval_results.json").write_text(json.dumps(results))
    pd.DataFrame({"request_id": list(ranks), "target_rank": list(ranks.values())}).to_csv(
        path / "per_request.csv", index=False
    )
    return str(path)


def test_a_missing_evaluation_folder_is_an_error(tmp_path):
    sft = eval_dir(tmp_path / "sft", {1: 0, 2: -1}, "aaaa")
    with pytest.raises(FileNotFoundError, match="eval_eg_grpo does not exist"):
        run(CompareArguments(eval_dirs=[sft, str(tmp_path / "eval_eg_grpo")], output_dir=str(tmp_path / "c")))
    with pytest.raises(FileNotFoundError, match="RL run folder .*nope does not exist"):
        run(CompareArguments(run_dirs=[str(tmp_path / "nope")], output_dir=str(tmp_path / "c")))


def test_evaluations_of_other_data_or_split_are_not_paired(tmp_path):
    # request ids 0..3 in all three: only the fingerprints tell that "other" is another dataset
    sft = eval_dir(tmp_path / "sft", {0: 0, 1: 4, 2: -1, 3: 12}, "aaaa")
    rl = eval_dir(tmp_path / "rl", {0: 0, 1: 0, 2: 1, 3: -1}, "aaaa")
    other = eval_dir(tmp_path / "other", {0: 0, 1: 0, 2: 0, 3: 0}, "bbbb")
    valid = eval_dir(tmp_path / "valid", {0: 0, 1: 0, 2: 0, 3: 0}, "aaaa", split="valid")
    text = run(CompareArguments(eval_dirs=[sft, rl, other, valid], output_dir=str(tmp_path / "c")))
    paired = [line for line in text.splitlines() if line.startswith("| rl |") and "±" in line]
    assert len(paired) == 1 and paired[0].startswith("| rl | +0.2500 ± ")  # HR@10 2/4 -> 3/4 on the same rows
    assert not any(line.startswith(("| other | +", "| valid | +")) for line in text.splitlines())
    assert "other: not paired with sft: other data (fingerprint bbbb vs aaaa)" in text
    assert "valid: not paired with sft: split 'valid' vs 'test'" in text


def test_a_training_folder_given_as_an_evaluation_is_refused(tmp_path):
    # a user passed the RL output beside an evaluation: it used to drop out of the table silently
    sft = eval_dir(tmp_path / "sft", {1: 0, 2: -1}, "aaaa")
    (tmp_path / "eg_grpo" / "checkpoint-2").mkdir(parents=True)
    (tmp_path / "eg_grpo" / "log_history.json").write_text("[]")
    args = CompareArguments(eval_dirs=[sft, str(tmp_path / "eg_grpo")], output_dir=str(tmp_path / "c"))
    with pytest.raises(ValueError) as err:
        run(args)
    message = str(err.value)
    assert "\n" not in message
    assert f"{tmp_path / 'eg_grpo'} is not an evaluation" in message
    assert "training output" in message and "without eval_results.json" in message
    assert "recipes/evaluate.py --model_dir" in message
    assert not (tmp_path / "c" / "comparison.md").exists()


def _rl_run(path, **training):
    """An RL run folder as compare.py reads it: a hand-made stage.json and a short log."""
    from stage_records import write_rl_stage

    write_rl_stage(path, **training)
    (path / "log_history.json").write_text(json.dumps([{"step": 1, "loss": 0.1, "reward": 0.2}]))
    return str(path)


@pytest.mark.parametrize(
    ("eg_training", "expected"),
    [({"max_steps": 8}, "RL runs: max_steps: 6 (vanilla_grpo) vs 8 (eg_grpo)"),
     ({"learning_rate": 1e-4}, "RL runs: learning_rate: 0.0005 (vanilla_grpo) vs 0.0001 (eg_grpo)"),
     ({"training_objective": "continued_sft"}, 'training_objective "continued_sft" (the label needs "grpo")')],
)  # fmt: skip
def test_rl_arms_that_differ_in_what_is_held_equal_are_refused(tmp_path, eg_training, expected):
    from eg_grpo.eval.comparability import ComparabilityError

    runs = [
        _rl_run(tmp_path / "vanilla_grpo", num_expert_samples=0),
        _rl_run(tmp_path / "eg_grpo", **eg_training),
    ]
    with pytest.raises(ComparabilityError) as err:
        run(CompareArguments(run_dirs=runs, output_dir=str(tmp_path / "c")))
    assert expected in str(err.value) and "--allow_incomparable true" in str(err.value)
    assert not (tmp_path / "c" / "comparison.md").exists()


def test_evaluations_of_incomparable_arms_are_refused_unless_allowed(tmp_path):
    from stage_records import write_eval_stage

    from eg_grpo.eval.comparability import ComparabilityError

    vanilla = write_eval_stage(
        tmp_path / "eval" / "vanilla", _rl_run(tmp_path / "v", num_expert_samples=0), hr=0.1
    )
    control = write_eval_stage(
        tmp_path / "eval" / "control", _rl_run(tmp_path / "c", training_objective="continued_sft")
    )
    eg = write_eval_stage(tmp_path / "eval" / "eg", _rl_run(tmp_path / "e", max_steps=8))
    # vanilla GRPO beside the continued-SFT control: other objective and k, the rest equal: comparable
    assert "WARNING" not in run(
        CompareArguments(eval_dirs=[str(vanilla), str(control)], output_dir=str(tmp_path / "o"))
    )
    args = CompareArguments(eval_dirs=[str(vanilla), str(control), str(eg)], output_dir=str(tmp_path / "o"))
    with pytest.raises(
        ComparabilityError, match=r"evaluated models: max_steps: 6 \(control, vanilla\) vs 8 \(eg\)"
    ):
        run(args)
    args.allow_incomparable = True
    text = run(args)
    assert text.startswith("**WARNING: not comparable** (allow_incomparable): evaluated models: max_steps: 6")
