"""What a comparison of training arms holds equal: facts read through an evaluation to its model, the
differences between arms (seeds may differ within an arm only), and row labels checked against the model."""

from __future__ import annotations

from stage_records import write_eval_stage, write_rl_stage

from eg_grpo.eval.comparability import check_rows, differences, expected_for_label, label_problem, run_facts


def test_an_evaluation_is_read_through_to_its_models_training_config(tmp_path):
    model = write_rl_stage(tmp_path / "eg_grpo", gradient_accumulation_steps=2)
    facts = run_facts(write_eval_stage(tmp_path / "eval_eg", model))
    assert (facts.stage, facts.objective, facts.num_expert_samples, facts.seed) == ("rl", "grpo", 2, 0)
    assert facts.held["max_steps"] == 6 and facts.held["prompts_per_step"] == 4  # 16 × 2 / 8
    assert facts.held["start_model"] == "fp-model" and facts.held["max_train_rows"] == 256


def test_a_model_rebuilt_after_its_evaluation_is_not_read_as_the_evaluated_one(tmp_path):
    model = write_rl_stage(tmp_path / "eg_grpo")
    evaluation = write_eval_stage(tmp_path / "eval_eg", model)
    write_rl_stage(
        tmp_path / "eg_grpo", max_steps=8
    )  # the chain rebuilt it; the evaluation is of the old one
    facts = run_facts(evaluation)
    assert facts.stage is None and "was rebuilt after" in facts.note and "re-evaluate" in facts.note


def test_differences_name_the_key_and_both_values(tmp_path):
    vanilla = run_facts(write_rl_stage(tmp_path / "vanilla", num_expert_samples=0))
    control = run_facts(write_rl_stage(tmp_path / "control", training_objective="continued_sft"))
    eg = run_facts(write_rl_stage(tmp_path / "eg", max_steps=8, learning_rate=1e-4))
    assert differences([vanilla, control]) == []  # the arms differ in objective and k only: comparable
    diffs = differences([vanilla, control, eg])
    assert "max_steps: 6 (control, vanilla) vs 8 (eg)" in diffs
    assert "learning_rate: 0.0005 (control, vanilla) vs 0.0001 (eg)" in diffs


def test_seeds_may_differ_within_an_arm_not_across_arms(tmp_path):
    eg = [run_facts(write_rl_stage(tmp_path / f"eg{s}", seed=s)) for s in (0, 1)]
    vanilla = [run_facts(write_rl_stage(tmp_path / f"v{s}", seed=s, num_expert_samples=0)) for s in (0, 1)]
    assert differences(eg) == [] and differences(eg + vanilla) == []
    assert differences([eg[0], vanilla[1]]) == ["seed: [0] (eg0) vs [1] (v1)"]


def test_labels_are_checked_against_the_model():
    assert expected_for_label("EG-GRPO (K=2)") == {
        "stage": "rl",
        "objective": "grpo",
        "num_expert_samples": 2,
    }
    assert expected_for_label("GRPO (K=0)")["num_expert_samples"] == 0
    assert expected_for_label("vanilla_grpo")["num_expert_samples"] == 0
    assert expected_for_label("continued SFT")["objective"] == "continued_sft"
    assert expected_for_label("rejection_sft")["objective"] == "rejection_sft"
    assert expected_for_label("SFT") == {"stage": "sft"} and expected_for_label("CQ-SID") is None


def test_a_continued_sft_model_under_an_eg_grpo_label_is_refused(tmp_path):
    control = write_rl_stage(tmp_path / "control", training_objective="continued_sft")
    problem = label_problem("EG-GRPO (K=2)", run_facts(control))
    assert 'training_objective "continued_sft" (the label needs "grpo")' in problem
    rows = {"EG-GRPO (K=2)": [write_eval_stage(tmp_path / "eval_control", control)]}
    problems, notes = check_rows(rows)
    assert len(problems) == 1 and "continued_sft" in problems[0] and notes == []
