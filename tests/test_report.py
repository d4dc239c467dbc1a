"""eg_grpo.report.paired_table and recipes/compare.py on evaluation folders alone."""

import json

import pandas as pd
import pytest

from eg_grpo.report import paired_table


def _eval_dir(path, ranks, hr10):
    path.mkdir()
    (path / "eval_results.json").write_text(json.dumps({"hr@10": hr10, "ndcg@10": 0.1}))
    pd.DataFrame({"request_id": list(ranks), "target_rank": list(ranks.values())}).to_csv(
        path / "per_request.csv", index=False
    )
    return path


def test_paired_table_pairs_rows_by_request_id(tmp_path):
    # sft hits requests 1, 2; rl hits 2, 3 and was scored on one extra request (9) that sft lacks
    sft = _eval_dir(tmp_path / "sft", {1: 0, 2: 4, 3: -1, 4: 12}, 0.5)
    rl = _eval_dir(tmp_path / "rl", {9: 0, 4: -1, 3: 1, 2: 0, 1: 20}, 0.6)
    table = paired_table([sft, rl], k=10)
    row = table.splitlines()[2]
    # on the 4 shared requests: HR@10 sft 2/4, rl 2/4 -> Δ 0, one hit only in each
    assert row.startswith("| rl | +0.0000 ± ") and "| 1 / 1 | 4 |" in row
    assert paired_table([sft], k=10) == ""  # nothing to pair with


def test_compare_recipe_with_eval_dirs_only(tmp_path, capsys):
    from recipes.compare import main

    sft = _eval_dir(tmp_path / "sft", {1: 0, 2: -1}, 0.5)
    rl = _eval_dir(tmp_path / "rl", {1: 0, 2: 3}, 1.0)
    main(
        type(
            "Args", (), {"run_dirs": [], "eval_dirs": [str(sft), str(rl)], "output_dir": str(tmp_path / "c")}
        )
    )
    text = (tmp_path / "c" / "comparison.md").read_text()
    assert "| rl | +0.5000 ± 0.5000 |" in text and not (tmp_path / "c" / "curves.png").exists()
    with pytest.raises(SystemExit, match="give RL run folders"):
        main(type("Args", (), {"run_dirs": [], "eval_dirs": [], "output_dir": str(tmp_path / "c")}))
