"""The select and report steps end to end on hand-made tuning and test outputs (no model is trained): the
chosen trials, the refusals, and the report's figures against values computed here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from eg_grpo.protocol import ProtocolConfig
from eg_grpo.protocol.report import write_report
from eg_grpo.protocol.select import select_all

DEMO = Path(__file__).resolve().parents[2] / "recipes" / "configs" / "demo" / "protocol"
USERS = np.array([0, 0, 1, 1, 2, 3])  # six requests of four users
IDS = np.arange(100, 106)


def _config(tmp_path) -> ProtocolConfig:
    raw = {
        "output_root": str(tmp_path / "out"),
        "inputs": {k: str(tmp_path / k) for k in ("data_dir", "sid_dir", "ranker_dir", "model_name_or_path")},
        "arms": {
            "eg_grpo": {"config": str(DEMO.parent / "eg_grpo.yaml"), "grid": {"max_steps": [120, 240]}},
            "vanilla_grpo": {"config": str(DEMO.parent / "vanilla_grpo.yaml"), "grid": {"max_steps": [120, 240]}},
        },
        "tune": {"seed": 0, "evaluate": str(DEMO / "evaluate_valid.yaml"), "arena": str(DEMO / "arena_valid.yaml")},
        "test": {"seeds": [0, 1], "evaluate": str(DEMO / "evaluate_test.yaml"), "arena": str(DEMO / "arena_test.yaml")},
        "comparisons": [["eg_grpo", "sft"], ["eg_grpo", "vanilla_grpo"]],
    }  # fmt: skip
    path = tmp_path / "protocol.yaml"
    path.write_text(yaml.safe_dump(raw))
    return ProtocolConfig.load(path)


def _arena(folder: Path, split: str, arms: dict[str, np.ndarray], candidates: float = 90.0) -> None:
    """An arena folder as the arena stage writes it (the parts the protocol reads)."""
    folder.mkdir(parents=True)
    rows = [
        pd.DataFrame(
            {
                "request_id": IDS,
                "user_id": USERS,
                "stage": "legacy",
                "budget_mode": "supplement",
                "arm": arm,
                "clicks": 2 * v,
                "purchases": v,
                "gmv": 10 * v,
                "exposures": 10.0,
            }
        )  # fmt: skip
        for arm, v in {"control": np.full(6, 0.1), **{f"+gen_{k}": v for k, v in arms.items()}}.items()
    ]
    pd.concat(rows).to_parquet(folder / "per_request.parquet")
    stage = {"control": {"ctcvr": 0.1}, "control_mean_candidates": 80.0,
             "arms": {f"+gen_{k}": {"mean_candidates": candidates,
                                    "lifts": {"ctcvr": {"lift": v.mean() / 0.1 - 1}, "gmv": {"lift": 0.5}}}
                      for k, v in arms.items()}}  # fmt: skip
    results = {"split": split, "num_requests": 6, "num_users": 4, "leading_view": {"name": "classical"},
               "stages": {"legacy": {"supplement": stage}}}  # fmt: skip
    (folder / "arena_results.json").write_text(json.dumps(results))


def _eval(folder: Path, hr10: float) -> None:
    folder.mkdir(parents=True)
    (folder / "eval_results.json").write_text(json.dumps({"hr@10": hr10}))


def _tuning(root: Path, split: str = "valid") -> None:
    _eval(root / "tune" / "sft_eval", 0.62)
    base = np.full(6, 0.2)
    noisy = base + np.array([0.01, -0.01, 0.02, -0.02, 0.0, 0.006])  # 0.001 above base: within one SE
    _arena(root / "tune" / "eg_grpo" / "arena", split, {"sft": base, "steps120": base, "steps240": noisy})
    _arena(
        root / "tune" / "vanilla_grpo" / "arena",
        split,
        {"sft": base, "steps120": base - 0.05, "steps240": base},
    )
    for arm, hr in (("eg_grpo", {"steps120": 0.61, "steps240": 0.60}), ("vanilla_grpo", {"steps120": 0.7, "steps240": 0.5})):  # fmt: skip
        for trial, value in hr.items():
            _eval(root / "tune" / arm / "eval" / trial, value)


def test_select_then_report_on_hand_made_outputs(tmp_path):
    config = _config(tmp_path)
    root = config.output_root
    _tuning(root)
    selection = select_all(config)
    # eg_grpo: steps240 leads by 0.001, less than one SE: tied, and steps120 has the higher HR@10
    assert selection["arms"]["eg_grpo"]["leader"] == "steps240"
    assert selection["arms"]["eg_grpo"]["chosen"]["settings"] == {"max_steps": 120}
    # vanilla: steps120 is 0.05 below on every request (SE 0): not tied, whatever its HR@10
    assert selection["arms"]["vanilla_grpo"]["chosen"]["name"] == "steps240"

    # the test step's outputs: eg_grpo's two seeds +0.01 and +0.03 over sft on every request, vanilla +0.01
    sft = np.array([0.2, 0.3, 0.1, 0.2, 0.4, 0.2])
    models = {"sft": sft, "eg_grpo_s0": sft + 0.01, "eg_grpo_s1": sft + 0.03, "vanilla_grpo_s0": sft + 0.01,
              "vanilla_grpo_s1": sft + 0.01}  # fmt: skip
    _arena(root / "test" / "arena", "test", models)
    _eval(root / "test" / "sft_eval", 0.6)
    for arm in ("eg_grpo", "vanilla_grpo"):
        for seed in (0, 1):
            _eval(root / "test" / arm / "eval" / f"s{seed}", 0.6 + seed / 100)
    (root / "test" / "selection.json").write_text(json.dumps(selection))
    report = write_report(config)
    results = json.loads((root / "results.json").read_text())["test"]["metrics"]
    eg_sft = results["purchases"]["comparisons"]["eg_grpo - sft"]
    assert eg_sft["diff"] == pytest.approx(0.02) and eg_sft["per_seed_diff"] == pytest.approx([0.01, 0.03])
    assert eg_sft["diff_se"] == pytest.approx(0.0, abs=1e-12) and eg_sft["seed_sd"] == pytest.approx(
        0.02**0.5 / 10
    )
    assert results["purchases"]["comparisons"]["eg_grpo - vanilla_grpo"]["diff"] == pytest.approx(0.01)
    assert "significant_holm" not in results["clicks"]["comparisons"]["eg_grpo - sft"]  # descriptive
    text = report.read_text()
    assert (
        "| eg_grpo | steps120 |" in text
        and "valid HR@10 0.6200" in text
        and "+0.02000 ± 0.00000" in text
        and "(start)" in text
    )
    assert (root / "protocol_lifts.png").stat().st_size > 0
    # the descriptive table, the mean of the seeds' lifts: sft 0.2333 / 0.1 - 1; eg_grpo (1.4333 + 1.6333) / 2
    row = "| classical | legacy | supplement | +133.33 / +50.00 % | +153.33 / +50.00 % | +143.33 / +50.00 % |"
    assert row in text

    # a later selection that would choose otherwise, once test has run, is refused
    _arena_override = root / "tune" / "vanilla_grpo" / "arena"
    frame = pd.read_parquet(_arena_override / "per_request.parquet")
    frame.loc[frame["arm"] == "+gen_steps120", "purchases"] += 0.2
    frame.to_parquet(_arena_override / "per_request.parquet")
    with pytest.raises(ValueError, match="reads test once"):
        select_all(config)


def test_select_refuses_a_tuning_arena_on_another_split_or_grid(tmp_path):
    config = _config(tmp_path)
    with pytest.raises(FileNotFoundError, match="run the tuning first"):
        select_all(config)
    _tuning(config.output_root, split="test")
    with pytest.raises(ValueError, match="selection reads valid only"):
        select_all(config)
    grown = type(config)(**{**config.__dict__})
    grown.arms["eg_grpo"].grid["max_steps"].append(360)  # the grid edited after the tuning
    data = json.loads((config.output_root / "tune" / "eg_grpo" / "arena" / "arena_results.json").read_text())
    data["split"] = "valid"
    for arm in ("eg_grpo", "vanilla_grpo"):
        (config.output_root / "tune" / arm / "arena" / "arena_results.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"no arm for the trial\(s\) \['steps360'\]"):
        select_all(grown)


def _hits_eval(folder: Path, split: str, ranks: list[int]) -> None:
    """An evaluation folder: per_request.csv of 0-based target ranks (-1: missed) and its HR@10."""
    folder.mkdir(parents=True)
    pd.DataFrame({"request_id": IDS, "target_rank": ranks}).to_csv(folder / "per_request.csv", index=False)
    hr10 = float(np.mean([0 <= r < 10 for r in ranks]))
    (folder / "eval_results.json").write_text(json.dumps({"split": split, "hr@10": hr10}))


def test_real_data_without_a_funnel_selects_and_reports_on_the_evaluations_hr10(tmp_path):
    amazon = Path(__file__).resolve().parents[2] / "recipes" / "configs" / "amazon_office" / "protocol"
    raw = yaml.safe_load((amazon / "protocol.yaml").read_text())
    raw["output_root"] = str(tmp_path / "out")
    raw["inputs"] = {
        p: {**raw["inputs"][p], "data_dir": str(tmp_path / f"data_{p}")} for p in ("tune", "test")
    }
    raw["arms"] = {a: {**raw["arms"][a], "config": str(amazon / raw["arms"][a]["config"])} for a in ("eg_grpo", "vanilla_grpo")}  # fmt: skip
    raw["arms"]["eg_grpo"]["grid"] = raw["arms"]["vanilla_grpo"]["grid"] = {"max_steps": [150, 300]}
    raw["tune"]["evaluate"], raw["test"]["evaluate"] = (
        str(amazon / raw[p]["evaluate"]) for p in ("tune", "test")
    )
    raw["comparisons"] = [["eg_grpo", "sft"], ["eg_grpo", "vanilla_grpo"]]
    raw["test"]["seeds"] = [0, 1]
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(raw))
    for bad in ("hr@0", "hr@51"):  # the evaluations' beam is 50 wide
        (tmp_path / "bad.yaml").write_text(yaml.safe_dump({**raw, "selection": {"metric": bad}}))
        with pytest.raises(ValueError, match="needs 1 <= K <= the evaluations' num_beams"):
            ProtocolConfig.load(tmp_path / "bad.yaml")
    config = ProtocolConfig.load(tmp_path / "p.yaml")
    assert config.hit_k == 10 and config.tune.arena is None and config.inputs["tune"]["ranker_dir"] is None
    for phase in ("tune", "test"):
        (tmp_path / f"data_{phase}").mkdir()
        pd.DataFrame({"request_id": IDS, "user_id": USERS}).to_parquet(
            tmp_path / f"data_{phase}" / "requests.parquet"
        )
    root = config.output_root
    _hits_eval(root / "tune" / "sft_eval", "valid", [0, 12, -1, 3, -1, 9])
    _hits_eval(root / "tune" / "eg_grpo" / "eval" / "steps150", "valid", [0, 1, -1, 3, -1, 9])  # 4 hits
    _hits_eval(root / "tune" / "eg_grpo" / "eval" / "steps300", "valid", [0, 1, 2, 3, -1, 9])  # 5 hits
    _hits_eval(root / "tune" / "vanilla_grpo" / "eval" / "steps150", "valid", [0, 12, -1, 3, -1, 9])
    _hits_eval(root / "tune" / "vanilla_grpo" / "eval" / "steps300", "test", [0, 12, -1, 3, -1, 9])
    with pytest.raises(ValueError, match="evaluated the 'test' split; this step reads valid"):
        select_all(config)
    (root / "tune" / "vanilla_grpo" / "eval" / "steps300" / "eval_results.json").write_text(
        json.dumps({"split": "valid", "hr@10": 0.5})
    )
    other = root / "tune" / "eg_grpo" / "eval" / "steps150" / "eval_results.json"
    other.write_text(json.dumps({**json.loads(other.read_text()), "data_fingerprint": "another-layout"}))
    with pytest.raises(ValueError, match="evaluated other data than"):
        select_all(config)
    other.write_text(json.dumps({"split": "valid", "hr@10": 4 / 6}))
    for arm, trial, weights in (("vanilla_grpo", "steps150", b"w"), ("vanilla_grpo", "steps300", b"w"),
                                ("eg_grpo", "steps150", b"w"), ("eg_grpo", "steps300", b"v")):  # fmt: skip
        (root / "tune" / arm / "models" / trial).mkdir(parents=True)
        (root / "tune" / arm / "models" / trial / "model.safetensors").write_bytes(weights)
    selection = select_all(config)
    same = {a: [t["same_model_as"] for t in s["trials"]] for a, s in selection["arms"].items()}
    assert same == {
        "eg_grpo": [None, None],
        "vanilla_grpo": [None, "steps150"],
    }  # a knob that changed nothing
    # eg: steps300 leads by one request of six (user 1's); the clustered SE of that shortfall is
    # sqrt(4/3 * 22/36) / 6 = .150 < 1/6: not tied, the leader is chosen. vanilla: equal trials -> fewer steps.
    eg = {t["name"]: t for t in selection["arms"]["eg_grpo"]["trials"]}
    assert eg["steps150"]["shortfall"] == pytest.approx(1 / 6) and not eg["steps150"]["tied"]
    assert eg["steps150"]["shortfall_se"] == pytest.approx((4 / 3 * 22 / 36) ** 0.5 / 6)
    assert selection["arms"]["eg_grpo"]["chosen"]["name"] == "steps300"
    assert selection["arms"]["vanilla_grpo"]["chosen"]["name"] == "steps150"
    assert selection["arms"]["eg_grpo"]["start_model_mean"] == pytest.approx(3 / 6)

    _hits_eval(root / "test" / "sft_eval", "test", [0, -1, -1, 3, -1, 20])  # 2 hits
    for seed, ranks in ((0, [0, 1, -1, 3, -1, 20]), (1, [0, 1, 2, 3, -1, 20])):  # 3 and 4 hits
        _hits_eval(root / "test" / "eg_grpo" / "eval" / f"s{seed}", "test", ranks)
        _hits_eval(root / "test" / "vanilla_grpo" / "eval" / f"s{seed}", "test", [0, -1, -1, 3, -1, 20])
    (root / "test" / "selection.json").write_text(json.dumps(selection))
    text = write_report(config).read_text()
    results = json.loads((root / "results.json").read_text())["test"]
    eg_sft = results["metrics"]["hr@10"]["comparisons"]["eg_grpo - sft"]
    assert eg_sft["diff"] == pytest.approx(1.5 / 6) and eg_sft["per_seed_diff"] == pytest.approx(
        [1 / 6, 2 / 6]
    )
    assert "(simulated)" not in text and "(no funnel)" in text and "Every view" not in text
    assert "vanilla_grpo: 2 trials, 1 distinct model (a knob" in text and "eg_grpo: 2 trials" not in text


def test_runs_refuse_inputs_that_are_not_built(tmp_path):
    from eg_grpo.protocol.run import Runner

    config = _config(tmp_path)
    for name in ("data_dir", "sid_dir", "ranker_dir"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "stage.json").write_text("{}")
    (tmp_path / "model_name_or_path").mkdir()  # a folder, but no model in it
    with pytest.raises(
        FileNotFoundError, match=r"inputs not built \(model_name_or_path: .*\); build them first"
    ):
        Runner(config, "tune")
    (tmp_path / "model_name_or_path" / "config.json").write_text("{}")
    assert Runner(config, "tune").inputs["data_dir"] == (tmp_path / "data_dir").resolve()
