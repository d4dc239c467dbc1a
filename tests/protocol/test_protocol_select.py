"""The protocol's selection rule and its seed-averaged comparisons, on hand-made per-request figures with
values derived by hand."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from eg_grpo.protocol.config import Trial
from eg_grpo.protocol.select import (
    arm_figures,
    identical_models,
    named_comparisons,
    seed_comparison,
    select_trial,
)


def _trials(*specs):
    return [Trial("arm", name, {"max_steps": steps}) for name, steps in specs]


def test_the_leader_wins_unless_a_tied_trial_has_the_higher_hr10():
    users = np.array([0, 0, 1, 1, 2, 2])
    lead = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    # 0.01 below the leader on average, with a paired spread that makes that less than one SE: tied
    close = lead - np.array([0.05, 0.03, -0.04, -0.04, 0.02, 0.04])
    far = lead - 0.5  # far below: never tied, whatever its HR@10
    trials = _trials(("lead", 240), ("close", 240), ("far", 120))
    values = {"lead": lead, "close": close, "far": far}
    # shortfall of close: d = lead - close per request; user sums of d - mean(d) give the clustered SE
    d = lead - close
    e = np.bincount(users, weights=d - d.mean())
    se = math.sqrt(3 / 2 * float(np.sum(e**2))) / 6
    assert d.mean() == pytest.approx(0.01) and d.mean() < se
    out = select_trial(values, users, {"lead": 0.60, "close": 0.61, "far": 0.99}, trials)
    rows = {r["name"]: r for r in out["trials"]}
    assert out["leader"] == "lead" and rows["close"]["shortfall_se"] == pytest.approx(se, rel=1e-12)
    assert [rows[n]["tied"] for n in ("lead", "close", "far")] == [True, True, False]
    assert out["chosen"] == {"name": "close", "settings": {"max_steps": 240}}
    # the same figures with the leader ahead on HR@10: the leader stays
    assert (
        select_trial(values, users, {"lead": 0.62, "close": 0.61, "far": 0.99}, trials)["chosen"]["name"]
        == "lead"
    )


def test_a_tie_on_hr10_goes_to_fewer_steps_then_to_the_grid_order():
    users = np.arange(4)
    same = np.array([1.0, 2.0, 3.0, 4.0])
    trials = _trials(("long", 240), ("short", 120), ("short_too", 120))
    values = {"long": same, "short": same.copy(), "short_too": same.copy()}
    out = select_trial(values, users, {"long": 0.5, "short": 0.5, "short_too": 0.5}, trials)
    assert out["leader"] == "long"  # equal means: the first in the grid leads
    assert out["chosen"]["name"] == "short"


def test_seed_averaged_comparison_is_the_paired_difference_of_the_seed_means():
    users = np.array([0, 0, 1, 2, 2])
    a = [np.array([1.0, 2.0, 0.0, 1.0, 3.0]), np.array([3.0, 2.0, 2.0, 1.0, 1.0])]
    b = [np.array([1.0, 1.0, 1.0, 1.0, 1.0])]  # one model playing both seeds (the start model)
    out = seed_comparison(a, b, users)
    d = np.array([1.0, 1.0, 0.0, 0.0, 1.0])  # mean of a over seeds minus b
    e = np.bincount(users, weights=d - d.mean())  # per user: [0.8, -0.6, -0.2]
    assert out["diff"] == pytest.approx(0.6)
    assert out["diff_se"] == pytest.approx(math.sqrt(3 / 2 * float(np.sum(e**2))) / 5)
    assert out["per_seed_diff"] == pytest.approx([0.4, 0.8])
    assert out["seed_sd"] == pytest.approx(math.sqrt(0.08))  # sd of (0.4, 0.8), ddof 1
    assert out["p"] == pytest.approx(math.erfc(0.6 / out["diff_se"] / math.sqrt(2)))
    with pytest.raises(ValueError, match="pairs the same seeds"):
        seed_comparison(a, [b[0], b[0], b[0]], users)


def _shifted(mu: float, n: int = 101) -> np.ndarray:
    """``mu`` plus alternating +-1 (n odd: one extra +1 removed): mean ``mu``, SE of the mean 1/sqrt(n-1)."""
    signs = np.where(np.arange(n) % 2 == 0, 1.0, -1.0)
    signs[-1] = 0.0  # the signs sum to 0, so the mean is mu exactly
    return mu + signs


def test_named_comparisons_are_holm_corrected_as_one_family():
    n = 101
    users = np.arange(n)  # one request per user: the SE is the plain one, sqrt(sum e^2 * n/(n-1)) / n
    figures = {"sft": np.zeros(n), "a_s0": _shifted(0.21), "b_s0": _shifted(0.22), "c_s0": _shifted(0.40),
               "e_s0": _shifted(0.23)}  # fmt: skip
    arms = {"sft": ["sft"], **{k: [f"{k}_s0"] for k in "abce"}}
    pair = named_comparisons(figures, users, arms, [("a", "sft"), ("b", "sft")])
    # p = .036 and .028: both below .05 uncorrected, but Holm needs the smaller below .05 / 2 first
    assert 0.025 < pair["b - sft"]["p"] < pair["a - sft"]["p"] < 0.05
    assert not pair["a - sft"]["significant_holm"] and not pair["b - sft"]["significant_holm"]
    # c (p < .001) passes .05 / 3, but b (.028) fails .05 / 2 and the walk stops: a is not reached
    trio = named_comparisons(figures, users, arms, [("c", "sft"), ("b", "sft"), ("a", "sft")])
    assert [trio[k]["significant_holm"] for k in ("c - sft", "b - sft", "a - sft")] == [True, False, False]
    # with e (.021 < .05 / 2) in b's place the walk goes on to a (.036 < .05 / 1)
    trio = named_comparisons(figures, users, arms, [("c", "sft"), ("e", "sft"), ("a", "sft")])
    assert [trio[k]["significant_holm"] for k in ("c - sft", "e - sft", "a - sft")] == [True, True, True]
    # reversed order reads the one model on the left as playing every seed, and flips the sign
    flipped = named_comparisons(figures, users, arms, [("sft", "a")], holm_family=False)["sft - a"]
    assert flipped["diff"] == pytest.approx(-0.21) and "significant_holm" not in flipped


def test_arm_figures_align_every_arm_on_the_controls_requests():
    rows = []
    for arm, value in (("control", 1.0), ("+gen_sft", 2.0), ("+gen_eg_grpo_s0", 3.0)):
        for rid, user in ((7, 1), (3, 2)):  # written out of request order
            rows.append({"request_id": rid, "user_id": user, "stage": "legacy", "budget_mode": "supplement",
                         "arm": arm, "purchases": value + rid})  # fmt: skip
    frame = pd.DataFrame(rows)
    figures, users = arm_figures(frame, "legacy", "supplement", "purchases")
    assert set(figures) == {"control", "sft", "eg_grpo_s0"}
    assert figures["eg_grpo_s0"].tolist() == [6.0, 10.0] and users.tolist() == [2, 1]
    with pytest.raises(ValueError, match="no figures for ranking stage 'learned'"):
        arm_figures(frame, "learned", "supplement", "purchases")
    frame.loc[len(frame) - 1, "request_id"] = 99
    with pytest.raises(ValueError, match="not played on the control's requests"):
        arm_figures(frame, "legacy", "supplement", "purchases")


def test_a_new_choice_is_refused_once_test_runs_exist(tmp_path):
    from eg_grpo.protocol.select import _refuse_a_new_choice_after_test

    chosen = {"arms": {"eg_grpo": {"chosen": {"name": "a", "settings": {"max_steps": 120}}}}}
    other = {"arms": {"eg_grpo": {"chosen": {"name": "b", "settings": {"max_steps": 240}}}}}
    _refuse_a_new_choice_after_test(tmp_path, other)  # no test runs yet: choosing again is fine
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "selection.json").write_text(json.dumps(chosen))  # what the test step ran under
    _refuse_a_new_choice_after_test(tmp_path, chosen)  # the same choice: fine
    with pytest.raises(ValueError, match="reads test once"):
        _refuse_a_new_choice_after_test(tmp_path, other)


def test_when_hr10_is_the_metric_itself_ties_go_to_fewer_steps():
    users = np.array([0, 0, 1, 1, 2, 3])
    short = np.array([0.0, 0, 1, 1, 0, 1])  # 3 hits
    long = np.array([1.0, 1, 0, 1, 0, 1])  # 4 hits: leads by 1/6, with a clustered SE of .41: tied
    trials = _trials(("steps150", 150), ("steps300", 300))
    values = {"steps150": short, "steps300": long}
    out = select_trial(values, users, None, trials)
    assert out["leader"] == "steps300" and all(r["tied"] for r in out["trials"])
    assert out["chosen"]["name"] == "steps150"
    # a tie-break by the metric itself would always keep the leader
    by_metric = {"steps150": 0.5, "steps300": 4 / 6}
    assert select_trial(values, users, by_metric, trials)["chosen"]["name"] == "steps300"


def test_identical_models_are_found_by_their_bytes_whatever_the_weight_files(tmp_path):
    """Copies are the folders whose weight files (full, adapter, .bin, shards) hold the same bytes; equal sizes
    with other bytes are not copies, training_args.bin is not weights, folders without weights are skipped."""

    def folder(name: str, files: dict[str, bytes]) -> Path:
        (tmp_path / name).mkdir()
        for file, data in files.items():
            (tmp_path / name / file).write_bytes(data)
        return tmp_path / name

    shards = {"model-00001-of-00002.safetensors": b"ab", "model-00002-of-00002.safetensors": b"cd"}
    dirs = {
        "a": folder("a", {"adapter_model.safetensors": b"w1", "training_args.bin": b"x"}),
        "b": folder("b", {"adapter_model.safetensors": b"w2"}),  # same size, other bytes
        "c": folder("c", {"adapter_model.safetensors": b"w1", "training_args.bin": b"other"}),
        "d": folder("d", {"pytorch_model.bin": b"bin"}),
        "e": folder("e", {"pytorch_model.bin": b"bin"}),
        "f": folder("f", shards),
        "g": folder("g", shards),
        "h": folder("h", {**shards, "model-00002-of-00002.safetensors": b"ce"}),
        "empty": folder("empty", {"config.json": b"{}"}),
        "missing": tmp_path / "never_written",
    }
    assert identical_models(dirs) == {"c": "a", "e": "d", "g": "f"}
