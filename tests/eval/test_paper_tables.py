"""The paper's tables from evaluation folders: gains computed as the paper's, seeds averaged, commands listed."""

from __future__ import annotations

import json

import pytest

from eg_grpo.eval.paper_tables import (
    PAPER_TABLE1,
    PAPER_TABLE3,
    PAPER_TABLE4,
    TABLE4_METRICS,
    PaperTables,
    matching_beam,
    relative_gain,
)


def _eval_dir(path, **metrics):
    path.mkdir(parents=True)
    results = {**metrics, "model_dir": f"models/{path.name}", "sid_dir": "sids", "data_dir": "data",
               "settings": {"split": "test", "num_beams": 100, "beam_sizes": [1, 10, 100], "item_budgets": [1000]}}  # fmt: skip
    (path / "eval_results.json").write_text(json.dumps(results))
    return path


def test_relative_gain_reproduces_the_papers_percentages():
    base, cq = PAPER_TABLE1["RQ-VAE"], PAPER_TABLE1["CQ-SID"]
    assert [round(relative_gain(c, b), 2) for c, b in zip(cq, base)] == [26.76, 22.57, 18.89]
    assert round(relative_gain(PAPER_TABLE3["CQ-SID"][0], PAPER_TABLE3["RQ-VAE"][0]), 2) == 11.11
    assert relative_gain(0.5, 0.0) is None and relative_gain(None, 0.3) is None


def test_tables_from_folders(tmp_path):
    # our folders hold the paper's own Table 1 numbers: our gains must come out as the paper's
    t1 = {name: _eval_dir(tmp_path / name.replace("/", "_").replace(" ", "_"),
                          **{f"click_hitrate@{b}": v for b, v in zip((1, 10, 100), vals)},
                          **{f"budget_hitrate@{b}_top1000": v for b, v in zip((1, 10, 100), vals)})
          for name, vals in PAPER_TABLE1.items()}  # fmt: skip
    sft = _eval_dir(tmp_path / "sft", **dict(zip(TABLE4_METRICS, PAPER_TABLE4["SFT"])))
    eg = [_eval_dir(tmp_path / f"eg{s}", **{m: v + d for m, v in zip(TABLE4_METRICS, PAPER_TABLE4["SFT"])})
          for s, d in enumerate((0.01, 0.03))]  # fmt: skip
    tables = PaperTables(
        table1=t1, table4={"SFT": sft, "EG-GRPO (K=2)": eg}, beams=[1, 10, 100], item_budget=1000
    )
    text = tables.markdown()
    assert "| CQ-SID vs RQ-VAE | +26.76 % | +22.57 % | +18.89 % |" in text  # the paper's row ...
    assert text.count("| CQ-SID vs RQ-VAE | +26.76 % | +22.57 % | +18.89 % |") == 2  # ... and ours
    assert "| CQ-SID vs RQ-VAE | +11.11 % | +7.31 % |" in text  # Table 3, paper's beams 1 and 100
    # Table 4: two seeds averaged (mean +0.02, sample std 0.0141), gain against SFT
    row = next(line for line in text.splitlines() if line.startswith("| EG-GRPO (K=2) (2 runs)"))
    assert row.split(" | ")[1] == f"{PAPER_TABLE4['SFT'][0] + 0.02:.4f} ± 0.0141"
    gain = next(
        line for line in text.splitlines() if line.startswith("| EG-GRPO (K=2) vs SFT |") and "13.2" in line
    )
    assert f"{relative_gain(PAPER_TABLE4['SFT'][0] + 0.02, PAPER_TABLE4['SFT'][0]):+.2f} %" in gain
    # Table 2: the beam RQ-VAE needs for CQ-SID's hit rate
    assert "| 1 | 0.0758 | 10 |" in text and "| 100 | 0.6181 | > 100 |" in text
    # every folder's command, rebuilt from its results
    assert "python recipes/evaluate.py --data_dir data --sid_dir sids --model_dir models/sft" in text
    assert (
        "--output_dir {} --num_beams 100 --beam_sizes 1 10 100 --item_budgets 1000`".format(tmp_path / "sft")
        in text
    )


def test_matching_beam_and_errors(tmp_path):
    assert matching_beam({10: 0.2, 30: 0.4, 65: 0.45}, 0.42) == "65"
    assert matching_beam({10: 0.2}, 0.5) == "> 10" and matching_beam({}, 0.5) == "—"
    with pytest.raises(ValueError, match="not the paper's"):
        PaperTables(table1={"TIGER": tmp_path})
    with pytest.raises(FileNotFoundError, match="evaluate the model first"):
        PaperTables(table1={"CQ-SID": tmp_path / "missing"}).markdown()


def test_recipe_writes_the_markdown(tmp_path):
    from recipes.paper_tables import main

    a = _eval_dir(tmp_path / "a", **{"click_hitrate@1": 0.1, "click_hitrate@10": 0.4})
    b = _eval_dir(tmp_path / "b", **{"click_hitrate@1": 0.12, "click_hitrate@10": 0.5})
    text = main(
        {"table1": {"RQ-VAE": str(a), "CQ-SID": str(b)}, "beams": [1, 10], "output": str(tmp_path / "t.md")}
    )
    assert (tmp_path / "t.md").read_text() == text
    assert "| CQ-SID vs RQ-VAE | +20.00 % | +25.00 % |" in text
    with pytest.raises(SystemExit, match="unknown keys \\['tabel1'\\]"):
        main({"tabel1": {}})


@pytest.mark.parametrize("size", ["tiny", "demo"])
def test_committed_configs_name_the_papers_rows(size):
    from pathlib import Path

    import yaml

    from recipes.paper_tables import KEYS

    config = yaml.safe_load((Path("recipes/configs") / size / "paper_tables.yaml").read_text())
    assert set(config) <= set(KEYS)
    PaperTables(
        **{k: v for k, v in config.items() if k != "output"}
    )  # row names checked, folders read lazily


def test_table4_paired_rows_from_per_request_columns(tmp_path):
    """Each RL run minus SFT on the requests both scored, with the paired standard error by hand."""
    import numpy as np
    import pandas as pd

    base = {m: np.array([0.0, 1.0, 0.0, 1.0]) for m in TABLE4_METRICS}
    runs = {"sft": base, "eg0": {m: v + np.array([1.0, 0.0, 1.0, 0.0]) for m, v in base.items()},
            "eg1": {m: v.copy() for m, v in base.items()}}  # fmt: skip
    folders = {}
    for name, columns in runs.items():
        folders[name] = _eval_dir(tmp_path / name, **{m: float(v.mean()) for m, v in columns.items()})
        ids = [10, 11, 12, 13] if name != "eg1" else [11, 12, 13, 14]  # eg1 scored one other request
        pd.DataFrame({"request_id": ids, "target_rank": -1, **columns}).to_csv(
            folders[name] / "per_request.csv"
        )
    tables = PaperTables(table1={"CQ-SID": folders["sft"]},
                         table4={"SFT": folders["sft"], "EG-GRPO (K=2)": [folders["eg0"], folders["eg1"]]})  # fmt: skip
    text = tables.table_4()
    # eg0 - sft = [1, 0, 1, 0]: mean 0.5, sample std 0.5774, SE 0.2887 (not > 2 SE, no star)
    row0 = next(line for line in text.splitlines() if line.startswith("| EG-GRPO (K=2) run 1 (eg0)"))
    assert row0.count("+0.5000 ± 0.2887 |") == len(TABLE4_METRICS)
    # eg1 on requests 11..13: its values [0, 1, 0] (shifted ids) minus sft's [1, 0, 1]
    row1 = next(line for line in text.splitlines() if line.startswith("| EG-GRPO (K=2) run 2 (eg1)"))
    diff = np.array([0.0, 1.0, 0.0]) - np.array([1.0, 0.0, 1.0])
    expected = f"{diff.mean():+.4f} ± {diff.std(ddof=1) / np.sqrt(3):.4f}"
    assert expected in row1
    # without per-request files there is no paired section
    for name in runs:
        (folders[name] / "per_request.csv").unlink()
    assert (
        "paired standard error"
        not in PaperTables(
            table1={"CQ-SID": folders["sft"]},
            table4={"SFT": folders["sft"], "EG-GRPO (K=2)": [folders["eg0"]]},
        ).table_4()
    )


def _arm(tmp_path, name, model_stage=None, **training):
    """An evaluation folder (Table 4's metrics) of a hand-made model: an RL run of ``training``, or an SFT model."""
    from stage_records import write_eval_stage, write_rl_stage

    from eg_grpo.io import stage_record, write_stage

    model = tmp_path / "models" / name
    if model_stage == "sft":
        model.mkdir(parents=True)
        write_stage(model, stage_record("sft", {"training": {"seed": 0}}))
    else:
        write_rl_stage(model, **training)
    return write_eval_stage(tmp_path / "eval" / name, model, **dict(zip(TABLE4_METRICS, PAPER_TABLE4["SFT"])))


def _table4(tmp_path, eg_training, **kwargs):
    rows = {"SFT": _arm(tmp_path, "sft", model_stage="sft"),
            "GRPO (K=0)": _arm(tmp_path, "vanilla", num_expert_samples=0),
            "EG-GRPO (K=2)": _arm(tmp_path, "eg", **eg_training)}  # fmt: skip
    return PaperTables(table1={"CQ-SID": rows["SFT"]}, table4=rows, **kwargs)


@pytest.mark.parametrize(
    ("eg_training", "expected"),
    [({"max_steps": 8}, "max_steps: 6 (GRPO (K=0): vanilla) vs 8 (EG-GRPO (K=2): eg)"),
     ({"learning_rate": 1e-4}, "learning_rate: 0.0005 (GRPO (K=0): vanilla) vs 0.0001 (EG-GRPO (K=2): eg)"),
     ({"training_objective": "continued_sft"}, 'training_objective "continued_sft" (the label needs "grpo")'),
     ({"num_expert_samples": 4}, 'num_expert_samples 4 (the label needs 2)')],
)  # fmt: skip
def test_table4_refuses_rows_that_are_not_comparable(tmp_path, eg_training, expected):
    from eg_grpo.eval.comparability import ComparabilityError

    with pytest.raises(ComparabilityError) as err:
        _table4(tmp_path, eg_training).markdown()
    assert expected in str(err.value) and "--allow_incomparable true" in str(err.value)


def test_table4_of_comparable_seeds_is_built(tmp_path):
    rows = {"SFT": _arm(tmp_path, "sft", model_stage="sft"),
            "GRPO (K=0)": [_arm(tmp_path, f"v{s}", num_expert_samples=0, seed=s) for s in (0, 1)],
            "EG-GRPO (K=2)": [_arm(tmp_path, f"eg{s}", seed=s) for s in (0, 1)]}  # fmt: skip
    text = PaperTables(table1={"CQ-SID": rows["SFT"]}, table4=rows).markdown()
    assert "| EG-GRPO (K=2) (2 runs) |" in text and "NOT comparable" not in text
    # the seeds of one arm may differ, but not the seeds of the arms
    rows["EG-GRPO (K=2)"] = [_arm(tmp_path, f"eg{s}", seed=s) for s in (2, 3)]
    with pytest.raises(ValueError, match=r"seed: \[0, 1\] .* vs \[2, 3\]"):
        PaperTables(table1={"CQ-SID": rows["SFT"]}, table4=rows).markdown()


def test_allow_incomparable_builds_the_tables_under_a_warning(tmp_path, capsys):
    from recipes.paper_tables import main

    text = _table4(tmp_path, {"max_steps": 8}, allow_incomparable=True).markdown()
    assert text.startswith("> **WARNING: NOT COMPARABLE.**")
    assert "> - max_steps: 6 (GRPO (K=0): vanilla) vs 8 (EG-GRPO (K=2): eg)" in text
    assert "Table 4's rows are NOT comparable" in capsys.readouterr().err
    rows = {"GRPO (K=0)": str(tmp_path / "eval" / "vanilla"), "EG-GRPO (K=2)": str(tmp_path / "eval" / "eg")}
    assert "NOT COMPARABLE" in main({"table1": {"CQ-SID": rows["GRPO (K=0)"]}, "table4": rows,
                                     "allow_incomparable": True})  # fmt: skip
