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


def test_the_semantic_ids_section_is_a_table_not_a_json_dump(tmp_path):
    from eg_grpo.report import write_report

    sids = tmp_path / "sids"
    sids.mkdir()
    stats = {"method": "cq_sid", "num_items": 20000, "num_sids": 3328, "build_seconds": 674.04,
             "cluster_size": {"mean": 6.01, "p50": 2.0, "p99": 47.0, "max": 50},
             "level_utilization": [0.890625, 1, 1], "level_perplexity": [34.90, 39.63, 53.85],
             "l1_category_purity": 1, "item_vectors_sha256": "1fb4c4054ab8ac01",
             "query_item_agreement": {"l1": 0.7287, "l12": 0.4130, "num_pairs": 3690}}  # fmt: skip
    (sids / "stats.json").write_text(json.dumps(stats))
    text = write_report(tmp_path, sids, [], []).read_text()
    section = text.split("## Semantic IDs\n\n", 1)[1].split("\n\n", 1)[0]
    assert "```" not in text and "item_vectors_sha256" not in text
    rows = dict(line.strip("| ").split(" | ") for line in section.splitlines()[2:])
    assert rows == {
        "method": "cq_sid",
        "SIDs / items": "3,328 / 20,000",
        "items per SID: p50 / p99 / max": "2 / 47 / 50",
        "codes used per level": "89% · 100% · 100%",
        "perplexity per level": "34.9 · 39.6 · 53.9",
        "level-1 category purity": "100%",
        "query-item agreement: level 1 / levels 1-2": "73% / 41% (3,690 pairs)",
        "build seconds": "674",
    }
    # reference SIDs: no query model, so no agreement; the table says so instead of failing
    (sids / "stats.json").write_text(
        json.dumps({"num_sids": 5, "num_items": 9, "query_item_agreement": None})
    )
    assert "| query-item agreement | – |" in write_report(tmp_path, sids, [], []).read_text()
