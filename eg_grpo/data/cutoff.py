"""A log as it stood at a cut-off time: the catalogue on sale then, and the items launched since.

A model deployed at time ``T`` was trained on what existed before ``T``; the items launched after
``T`` reach it only through a refreshed SID version (the ``add_items`` stage). :func:`catalogue_as_of`
cuts a data folder with ``items.launch_time`` at ``T``, :func:`launched_since` lists the items a
refresh adds. The stage around them is :mod:`eg_grpo.stages.cutoff`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from eg_grpo.data.schema import SearchLog


def launch_times(items: pd.DataFrame) -> np.ndarray:
    """``(N,)`` float launch time per item row; ``-inf`` for items on sale before the log (null or no column)."""
    if "launch_time" not in items.columns:
        return np.full(len(items), -np.inf)
    return items["launch_time"].astype("Float64").fillna(-np.inf).to_numpy(dtype=float)


def default_cutoff(log: SearchLog) -> int:
    """The first test request's timestamp: a model trained on every split before the test period.

    Raises:
        ValueError: the log has no test requests.
    """
    test = log.requests.loc[log.requests["split"] == "test", "timestamp"]
    if test.empty:
        raise ValueError("the log has no test requests to take the cut-off from; pass the cut-off time")
    return int(test.min())


def catalogue_as_of(log: SearchLog, cutoff: int) -> SearchLog:
    """The log as it stood just before ``cutoff``: requests (and their impressions) dated before it, and
    the items launched before it. Request splits are kept as they are.

    Raises:
        ValueError: the log has no ``launch_time`` column, or a kept request shows or remembers an
            item launched at or after the cut-off (a log that contradicts its launch times).
    """
    if "launch_time" not in log.items.columns:
        raise ValueError(
            "items.parquet has no launch_time column: every item was on sale before the log, so a cut-off "
            "changes only the requests; simulate launches with --launch_share (recipes/make_data.py)"
        )
    on_sale = launch_times(log.items) < cutoff
    items = log.items[on_sale].reset_index(drop=True)
    requests = log.requests[log.requests["timestamp"].to_numpy() < cutoff].reset_index(drop=True)
    impressions = log.impressions[log.impressions["request_id"].isin(requests["request_id"])]
    known = set(items["item_id"].tolist())
    shown = set(pd.unique(impressions["item_id"]).tolist()) - known
    remembered = {i for h in requests["history"] for i in h} - known
    if shown or remembered:
        example = min(shown | remembered)
        raise ValueError(
            f"{len(shown)} item(s) shown and {len(remembered)} remembered before the cut-off {cutoff} launch at or "
            f"after it (e.g. item {example}): the log contradicts its launch times (recipes/validate_data.py)"
        )
    return SearchLog(items, requests, impressions.reset_index(drop=True))


def launched_since(log: SearchLog, cutoff: int) -> pd.DataFrame:
    """The items launched at or after ``cutoff``, in launch order, with every ``items.parquet`` column
    (what ``add_items --new_items`` reads)."""
    times = launch_times(log.items)
    new = log.items[times >= cutoff]
    return new.iloc[np.argsort(times[times >= cutoff], kind="stable")].reset_index(drop=True)
