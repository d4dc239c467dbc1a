"""The Amazon-layout loader (eg_grpo.data.amazon) and recipes/make_amazon_data.py."""

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from eg_grpo.data.amazon import AmazonConfig, load_amazon
from eg_grpo.data.schema import SearchLog

# The public Amazon Office files (docs/amazon.md): data/amazon_office in the repo, or $EG_GRPO_AMAZON_DIR.
AMAZON_OFFICE = Path(
    os.environ.get("EG_GRPO_AMAZON_DIR", Path(__file__).resolve().parents[2] / "data" / "amazon_office")
)

# user A1: valid rows 4, 5 then test row 8; A2: valid 7, test 13; A3 only in test (target 12).
VALID = [("A1", [1, 2, 3], 4), ("A1", [1, 2, 3, 4], 5), ("A2", [6], 7)]
TEST = [("A1", [1, 2, 3, 4, 5], 8), ("A3", [9, 10, 11], 12), ("A2", [6, 7], 13)]


def _write_csv(path, rows):
    pd.DataFrame(
        {
            "user_id": [u for u, _, _ in rows],
            "history_item_title": ["[]"] * len(rows),
            "item_title": ["x"] * len(rows),
            "history_item_id": [str(h) for _, h, _ in rows],
            "item_id": [t for _, _, t in rows],
        }
    ).to_csv(path, index=False)


@pytest.fixture
def dataset_dir(tmp_path):
    d = tmp_path / "ds"
    d.mkdir()
    _write_csv(d / "valid.csv", VALID)
    _write_csv(d / "test.csv", TEST)
    items = {
        str(i): {"title": f"Item &amp; {i}", "description": "", "brand": "b", "categories": ""}
        for i in range(1, 14)
    }
    (d / "items.json").write_text(json.dumps(items))
    (d / "reference_sids.json").write_text(
        json.dumps({str(i): ["<a_0>", "<b_0>", f"<c_{i}>"] for i in range(1, 14)})
    )
    return d


def _rows(log, split):
    req = log.requests[log.requests["split"] == split]
    target = log.impressions.set_index("request_id").loc[req["request_id"], "item_id"].tolist()
    return sorted(zip(req["user_key"], map(tuple, req["history"]), target, req["source"]))


def test_test_target_layout(dataset_dir):
    log, prov = load_amazon(dataset_dir, AmazonConfig(target_split="test"))
    assert _rows(log, "train") == sorted(
        [
            ("A1", (1,), 2, "window:valid_history"),
            ("A1", (1, 2), 3, "window:valid_history"),
            ("A3", (9,), 10, "window:test_history"),
            ("A3", (9, 10), 11, "window:test_history"),
            ("A1", (1, 2, 3), 4, "valid_row"),
            ("A1", (1, 2, 3, 4), 5, "valid_row"),
            ("A2", (6,), 7, "valid_row"),
        ]
    )
    assert [t for _, _, t, _ in _rows(log, "test")] == [8, 13, 12]
    assert (log.requests["split"] == "valid").sum() == 0
    assert prov["rows"] == {
        "train/window:valid_history": 2,
        "train/window:test_history": 2,
        "train/valid_row": 3,
        "test/test_row": 3,
    }
    # no test target is trained on, as a target or inside a history
    train = _rows(log, "train")
    assert not {8, 12, 13} & ({t for *_, t, _ in train} | {i for _, h, _, _ in train for i in h})
    imp = log.impressions
    assert imp["clicked"].all() and not imp["purchased"].any() and (imp["position"] == 0).all()
    assert (log.requests["query"] == "").all()
    assert log.items.set_index("item_id").loc[3, "title"] == "Item & 3"  # html entities decoded


def test_valid_target_layout_trains_on_no_valid_target(dataset_dir):
    log, prov = load_amazon(dataset_dir, AmazonConfig(target_split="valid"))
    train = _rows(log, "train")
    assert {s for *_, s in train} == {"window:valid_history", "window:test_history"}
    assert len(train) == 4
    assert [t for _, _, t, _ in _rows(log, "valid")] == [4, 5, 7]
    assert not {4, 5, 7, 8, 12, 13} & {t for _, _, t, _ in train}


def test_options_change_the_rows(dataset_dir):
    log, _ = load_amazon(dataset_dir, AmazonConfig(window_test_histories=False, max_history=2))
    train = _rows(log, "train")
    assert "window:test_history" not in {s for *_, s in train}
    assert max(len(h) for _, h, _, _ in train) == 2
    assert ("A1", (3, 4), 5, "valid_row") in train
    # every valid user held back: valid rows form the valid split, none is trained on
    log, prov = load_amazon(dataset_dir, AmazonConfig(valid_holdout_fraction=0.999))
    assert "train/valid_row" not in prov["rows"] and prov["rows"]["valid/valid_row"] == 3
    # the latest third of the valid rows (csv order = target time) held back: only the last row (A2 → 7)
    log, _ = load_amazon(dataset_dir, AmazonConfig(valid_holdout_tail=0.34))
    assert _rows(log, "valid") == [("A2", (6,), 7, "valid_row")]
    assert {("A1", (1, 2, 3), 4, "valid_row"), ("A1", (1, 2, 3, 4), 5, "valid_row")} <= set(
        _rows(log, "train")
    )
    # 3 valid rows: the last (A2 → 7) held back as valid, the one before it (A1 → 5) kept for RL
    log, prov = load_amazon(dataset_dir, AmazonConfig(valid_holdout_tail=0.34, rl_tail=0.33))
    assert _rows(log, "valid") == [("A2", (6,), 7, "valid_row")]
    assert _rows(log, "rl") == [("A1", (1, 2, 3, 4), 5, "valid_row")]
    assert ("A1", (1, 2, 3), 4, "valid_row") in _rows(log, "train")
    assert not any(t == 5 and s == "valid_row" for _, _, t, s in _rows(log, "train"))
    assert prov["splits"]["rl"] == 1
    log, _ = load_amazon(dataset_dir, AmazonConfig(target_purchased=True))
    assert log.impressions["purchased"].all()


def test_bad_input_is_a_clear_error(dataset_dir):
    with pytest.raises(ValueError, match="target_split"):
        AmazonConfig(target_split="train")
    with pytest.raises(ValueError, match="valid_holdout_tail \\+ rl_tail < 1"):
        AmazonConfig(valid_holdout_tail=0.5, rl_tail=0.5)
    with pytest.raises(ValueError, match="train_on_valid_rows=True"):
        AmazonConfig(rl_tail=0.2, train_on_valid_rows=False)
    items = json.loads((dataset_dir / "items.json").read_text())
    del items["12"]
    (dataset_dir / "items.json").write_text(json.dumps(items))
    with pytest.raises(ValueError, match="not in items.json, e.g. 12"):
        load_amazon(dataset_dir)
    (dataset_dir / "valid.csv").unlink()
    with pytest.raises(FileNotFoundError, match="valid.csv"):
        load_amazon(dataset_dir)


def test_recipe_writes_tables_reference_sids_and_provenance(dataset_dir, tmp_path):
    from recipes.make_amazon_data import MakeAmazonDataArguments, main

    out = tmp_path / "data"
    main(MakeAmazonDataArguments(dataset_dir=str(dataset_dir), output_dir=str(out)), AmazonConfig())
    log = SearchLog.load(out)
    assert len(log.split("train")) == 7 and len(log.split("test")) == 3
    assert json.loads((out / "reference_sids.json").read_text())["5"] == ["<a_0>", "<b_0>", "<c_5>"]
    prov = json.loads((out / "amazon_provenance.json").read_text())
    assert prov["splits"] == {"train": 7, "rl": 0, "valid": 0, "test": 3} and prov["reference_sids"] is True
    assert (out / "stage.json").exists()


@pytest.mark.skipif(
    not AMAZON_OFFICE.exists(), reason="the Amazon Office files are not here (docs/amazon.md)"
)
def test_amazon_office_counts():
    log, prov = load_amazon(AMAZON_OFFICE)
    assert prov["splits"] == {"train": 14350, "rl": 0, "valid": 0, "test": 4866}
    assert prov["rows"]["train/valid_row"] == 4866
    assert len(log.items) == 3459
