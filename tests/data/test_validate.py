"""`validate_data_dir`: every problem of a user's data folder in one report."""

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
