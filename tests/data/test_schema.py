"""Schema validation: the simulated tables pass, each kind of malformed table is a SchemaError naming it."""

from __future__ import annotations

import pandas as pd
import pytest

from eg_grpo.data.schema import SchemaError, SearchLog, validate_table


def _tables(log: SearchLog) -> dict[str, pd.DataFrame]:
    return {"items": log.items.copy(), "requests": log.requests.copy(), "impressions": log.impressions.copy()}


def test_simulated_tables_pass(tiny_log):
    for name, df in _tables(tiny_log).items():
        assert validate_table(name, df) is df
    SearchLog(**_tables(tiny_log))


def test_save_load_round_trip(tiny_log, tiny_data_dir):
    loaded = SearchLog.load(tiny_data_dir)
    for name, df in _tables(tiny_log).items():
        got = getattr(loaded, name)
        assert list(got.columns) == list(df.columns)
        assert len(got) == len(df)
    assert loaded.requests["history"].tolist() == tiny_log.requests["history"].tolist()
    assert loaded.items["category_path"].tolist() == tiny_log.items["category_path"].tolist()
    pd.testing.assert_frame_equal(loaded.impressions, tiny_log.impressions, check_dtype=False)
    assert len(loaded.split("train")) + len(loaded.split("valid")) + len(loaded.split("test")) == len(
        loaded.requests
    )


def _drop_title(t):
    t["items"] = t["items"].drop(columns=["title"])


def _price_as_text(t):
    t["items"]["price"] = t["items"]["price"].astype(str)


def _duplicate_item(t):
    t["items"] = pd.concat([t["items"], t["items"].iloc[:1]], ignore_index=True)


def _duplicate_impression(t):
    t["impressions"] = pd.concat([t["impressions"], t["impressions"].iloc[:1]], ignore_index=True)


def _purchase_without_click(t):
    imp = t["impressions"]
    row = imp.index[~imp["clicked"]][0]
    imp.loc[row, "purchased"] = True


def _empty_requests(t):
    t["requests"] = t["requests"].iloc[:0]


def _unknown_item(t):
    t["impressions"].loc[t["impressions"].index[0], "item_id"] = int(t["items"]["item_id"].max()) + 1000


def _unknown_request(t):
    t["impressions"].loc[t["impressions"].index[0], "request_id"] = (
        int(t["requests"]["request_id"].max()) + 1000
    )


def _bad_split(t):
    t["requests"].loc[t["requests"].index[0], "split"] = "dev"


def _history_not_list(t):
    t["requests"]["history"] = t["requests"]["history"].map(lambda h: ",".join(map(str, h)))


def _missing_query(t):
    t["requests"].loc[t["requests"].index[3], "query"] = None


def _negative_position(t):
    t["impressions"].loc[t["impressions"].index[0], "position"] = -1


def _float_ids(t):
    t["requests"]["user_id"] = t["requests"]["user_id"].astype(float) + 0.5


@pytest.mark.parametrize(
    "corrupt, table, column",
    [
        (_drop_title, "items", "title"),
        (_price_as_text, "items", "price"),
        (_duplicate_item, "items", "item_id"),
        (_duplicate_impression, "impressions", "request_id,item_id"),
        (_purchase_without_click, "impressions", "purchased"),
        (_empty_requests, "requests", None),
        (_unknown_item, "impressions", "item_id"),
        (_unknown_request, "impressions", "request_id"),
        (_bad_split, "requests", "split"),
        (_history_not_list, "requests", "history"),
        (_missing_query, "requests", "query"),
        (_negative_position, "impressions", "position"),
        (_float_ids, "requests", "user_id"),
    ],
)
def test_malformed_table_is_named(tiny_log, corrupt, table, column):
    tables = _tables(tiny_log)
    corrupt(tables)
    with pytest.raises(SchemaError) as err:
        SearchLog(**tables)
    assert err.value.table == table
    assert err.value.column == column
    assert f"table '{table}'" in str(err.value)
    if column:
        assert f"column '{column}'" in str(err.value)
    # the fixture itself is untouched (copies were corrupted)
    SearchLog(**_tables(tiny_log))
