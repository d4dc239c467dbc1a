"""`validate_data_dir`: every problem of a user's data folder in one report."""

import pandas as pd
import pytest

from eg_grpo.data.validate import main, validate_data_dir


def _copy(tiny_log, path, **tables):
    path.mkdir()
    for name in ("items", "requests", "impressions"):
        tables.get(name, getattr(tiny_log, name)).to_parquet(path / f"{name}.parquet", index=False)
    return path


def test_the_simulated_folder_is_valid(tiny_data_dir):
    report = validate_data_dir(tiny_data_dir)
    assert report.ok, report.render()
    assert report.counts["items"] == 500
    assert report.counts["requests in split train"] > 0


def test_every_problem_is_reported_at_once(tiny_log, tmp_path):
    items = tiny_log.items.drop(columns=["brand"])
    impressions = tiny_log.impressions.copy()
    impressions.loc[impressions.index[0], "clicked"] = False
    impressions.loc[impressions.index[0], "purchased"] = True
    report = validate_data_dir(_copy(tiny_log, tmp_path / "d", items=items, impressions=impressions))
    assert not report.ok
    text = " | ".join(report.errors)
    assert "table 'items', column 'brand': required column is missing" in text
    assert "purchase(s) without a click" in text  # the second table is still checked after the first fails


def test_missing_file_and_unreadable_file(tiny_log, tmp_path):
    path = _copy(tiny_log, tmp_path / "d")
    (path / "requests.parquet").unlink()
    (path / "items.parquet").write_text("not parquet")
    errors = " | ".join(validate_data_dir(path).errors)
    assert "requests.parquet is missing" in errors and "items.parquet cannot be read as parquet" in errors


def test_warnings_do_not_fail(tiny_log, tmp_path):
    requests = tiny_log.requests.copy()
    requests["split"] = requests["split"].replace({"valid": "train"})
    requests.at[requests.index[0], "history"] = [10**9]
    report = validate_data_dir(_copy(tiny_log, tmp_path / "d", requests=requests))
    assert report.ok
    assert any("split 'valid' is empty" in w for w in report.warnings)
    assert any("1 history entr" in w for w in report.warnings)


def test_an_empty_test_split_is_an_error(tiny_log, tmp_path):
    requests = tiny_log.requests.assign(split="train")
    report = validate_data_dir(_copy(tiny_log, tmp_path / "d", requests=requests))
    assert any("split 'test' has no requests" in e for e in report.errors)


def test_not_a_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        validate_data_dir(tmp_path / "nope")


def test_command_exit_code(tiny_data_dir, tmp_path, capsys):
    assert main([str(tiny_data_dir)]) == 0
    assert "OK" in capsys.readouterr().out
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty")]) == 1


def test_seven_planted_problems_are_reported_in_one_pass(tiny_log, tmp_path):
    items = tiny_log.items.drop(columns=["brand"])  # 1. a missing column
    items.loc[items.index[3], "price"] = -5.0  # 2. a negative price (the GMV rewards use price)
    items = pd.concat([items, items.iloc[[7]]], ignore_index=True)  # 3. a duplicate item id
    impressions = tiny_log.impressions.copy()
    impressions.loc[impressions.index[0], ["clicked", "purchased"]] = [
        False,
        True,
    ]  # 4. purchase without click
    impressions.loc[impressions.index[1], "item_id"] = 10**9  # 5. an item that is not in items.parquet
    requests = tiny_log.requests.drop(
        columns=[c for c in tiny_log.requests.columns if c.startswith("gt_")]
    )  # 7.
    first_test = requests.index[requests["split"] == "test"][0]
    requests.loc[first_test, "timestamp"] = (
        requests["timestamp"].min() - 1
    )  # 6. a test request older than all
    report = validate_data_dir(_copy(tiny_log, tmp_path / "d", items=items, requests=requests,
                                     impressions=impressions))  # fmt: skip
    errors, warnings = " | ".join(report.errors), " | ".join(report.warnings)
    assert "table 'items', column 'brand': required column is missing" in errors
    assert "table 'items', column 'price': 1 negative price(s), e.g. -5: the GMV rewards" in errors
    assert (
        f"table 'items', column 'item_id': 1 duplicate key(s), e.g. ({items['item_id'].iloc[7]},)" in errors
    )
    assert "1 purchase(s) without a click" in errors
    assert "column 'item_id': 1 id(s) not in items.parquet, e.g. 1000000000" in errors
    assert "1 test request(s) are dated before every training request" in warnings
    assert "no ground-truth columns" in warnings and "arena" in warnings and "oracle curves" in warnings
    assert len(report.errors) == 5, report.render()
    rendered = report.render()
    assert "np." not in rendered and rendered.splitlines()[0].endswith(
        f"5 error(s), {len(report.warnings)} warning(s)"
    )
    assert report.counts["items"] == len(items) and report.counts["requests in split test"] > 0
