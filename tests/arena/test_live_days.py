"""The live catalogue day by day: daily SID versions, the per-day play, and the days adding up to the whole run."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from eg_grpo.arena.channels import GenerativeChannel, ItemCFChannel, RequestBatch, cluster_item_scores
from eg_grpo.arena.config import ArenaArguments
from eg_grpo.arena.days import (
    DAY,
    DailyChannel,
    day_slices,
    new_item_figures,
    play_by_day,
    plot_days,
    summarise,
)
from eg_grpo.arena.live import COUNTED, on_sale_channels
from eg_grpo.arena.run import play_arena, split_rows
from eg_grpo.data.cutoff import launch_times
from eg_grpo.data.sft_dataset import load_codebook
from eg_grpo.io import read_stage
from eg_grpo.sid.add_items import check_keeps_sids
from eg_grpo.stages.cutoff import NEW_ITEMS_FILE


def _script():
    """benchmarks/live_days.py, imported by path."""
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "live_days.py"
    spec = importlib.util.spec_from_file_location("live_days_script", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def days(live, sid_versions, tiny_sft_dir, tmp_path_factory):
    """The tiny live log's test split played day by day: control ``item_cf`` (it cannot know new items), the
    generator on the SIDs built before the launches (``unrefreshed``) and the same generator refreshed daily.

    ``channels()`` builds the channels afresh (the daily one starts again from the first version)."""
    from eg_grpo.eval.recall import RecallChannel
    from eg_grpo.modeling import load_model_and_tokenizer

    root, oracle, (v0, _) = tmp_path_factory.mktemp("live_days"), live["oracle"], sid_versions
    args = ArenaArguments(data_dir=str(live["data"]), sid_dir=str(v0), control=["item_cf:24"], channels=[],
                          generative=[f"unrefreshed={tiny_sft_dir}", f"daily={tiny_sft_dir}"], beam=8,
                          budget_modes=["supplement"])  # fmt: skip
    rows = split_rows(args, oracle.log)
    versions = _script().add_items_by_day(v0, live["cut"] / NEW_ITEMS_FILE, sorted(day_slices(rows, oracle.timestamp)),
                                          root / "versions", live["root"] / "new.npy")  # fmt: skip
    model, tokenizer = load_model_and_tokenizer(str(tiny_sft_dir))
    scores, item_cf = cluster_item_scores(oracle.log), ItemCFChannel(oracle.log)

    def generative(name):
        inner = RecallChannel.from_model(
            model, tokenizer, load_codebook(v0), item_scores=scores, item_order="prior"
        )
        return GenerativeChannel.from_recall_channel(name, inner, beam=8)

    def channels():
        daily = DailyChannel(generative("gen_daily"), versions, oracle.timestamp)
        return on_sale_channels({"item_cf": item_cf, "gen_unrefreshed": generative("gen_unrefreshed"),
                                 "gen_daily": daily}, oracle)  # fmt: skip

    played_with = channels()
    played = play_by_day(args, oracle, played_with, None)
    return {"args": args, "rows": rows, "v0": v0, "versions": versions, "channels": channels,
            "daily": played_with["gen_daily"].inner, "played": played, "summary": summarise(played)}  # fmt: skip


def _items(folder) -> set[int]:
    return set(load_codebook(folder).item_ids.tolist())


def test_each_day_version_holds_exactly_the_items_launched_by_the_days_end(live, days):
    new = pd.read_parquet(live["cut"] / NEW_ITEMS_FILE)
    times, ids = launch_times(new), new["item_id"].to_numpy()
    before, parent = _items(days["v0"]), Path(days["v0"])
    assert list(days["versions"]) == [12, 13]  # the tiny log's test period: its last two days
    for day, folder in days["versions"].items():
        end = (day + 1) * DAY
        assert _items(folder) == before | set(ids[times < end].tolist())
        assert not _items(folder) & set(ids[times >= end].tolist())
        # a chain: each version's parent is the previous day's
        assert Path(read_stage(folder)["inputs"]["parent"]["path"]).resolve() == parent.resolve()
        parent = folder
    assert 0 < len(_items(days["versions"][12])) - len(before) < len(new)  # launches on both days


def test_old_items_keep_their_sids_across_days(days):
    books = [load_codebook(days["v0"])] + [load_codebook(f) for f in days["versions"].values()]
    for earlier, later in zip(books, books[1:]):
        check_keeps_sids(earlier, later)
        check_keeps_sids(books[0], later)
    # the running channel was refreshed to the last day's version
    served = days["daily"].inner.inner.codebook
    assert set(served.item_ids.tolist()) == _items(days["versions"][13])


def test_the_day_partition_covers_every_test_request_exactly_once(live, days):
    rows, stamps = days["rows"], live["oracle"].timestamp
    slices = day_slices(rows, stamps)
    together = np.concatenate(list(slices.values()))
    assert np.array_equal(np.sort(together), np.arange(len(rows))) and len(together) == len(rows)
    for day, at in slices.items():
        assert ((stamps[rows[at]] >= day * DAY) & (stamps[rows[at]] < (day + 1) * DAY)).all()
    assert [d["requests"] for d in days["summary"]["days"]] == [len(at) for at in slices.values()]
    assert (
        sum(d["results"]["num_requests"] for d in days["played"]["days"]) == days["summary"]["num_requests"]
    )


def test_the_unrefreshed_arm_gets_no_new_item_on_any_day(days):
    daily_share = 0.0
    for day in days["summary"]["days"]:
        arms = day["figures"]["legacy"]["supplement"]
        assert list(arms) == ["control", "+gen_unrefreshed", "+gen_daily"]
        for arm in ("control", "+gen_unrefreshed"):  # item_cf and SIDs built before the launches
            assert all(arms[arm]["share"][w] == 0.0 for w in COUNTED), (day["day"], arm)
        assert day["recalled_new_share"]["gen_unrefreshed"] == 0.0
        daily_share = max(daily_share, arms["+gen_daily"]["share"]["exposures"])
    assert daily_share > 0  # the refreshed arm does reach new items: the zeros above are not vacuous


def test_the_days_add_up_to_the_whole_run_the_arena_reports(live, days):
    aggregated = days["summary"]["aggregated"]["legacy"]["supplement"]
    # the arena's own run over the same requests, recalled afresh (the daily channel from its first version)
    arena = new_item_figures(play_arena(days["args"], live["oracle"], days["channels"]()))["legacy"][
        "supplement"
    ]
    assert list(aggregated) == list(arena)
    for arm, figures in arena.items():
        for w in COUNTED:
            assert aggregated[arm][w] == pytest.approx(figures["share"][w], abs=1e-9, rel=0), (arm, w)
            whole = days["summary"]["whole"]["legacy"]["supplement"][arm]["share"][w]
            assert whole == pytest.approx(figures["share"][w], abs=1e-9, rel=0), (arm, w)
    assert arena["+gen_daily"]["share"]["exposures"] > 0


def test_a_daily_channel_refuses_to_go_back_a_day(days):
    channel = days["channels"]()["gen_daily"].inner
    channel.serve(13)
    with pytest.raises(ValueError, match="time order"):
        channel.serve(12)
    with pytest.raises(ValueError, match="no SID version"):
        channel.serve(14)


def test_the_plot_is_written(days, tmp_path):
    path = tmp_path / "days.png"
    plot_days(days["summary"], path)
    assert path.stat().st_size > 1000 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_each_days_requests_are_recalled_from_that_days_version(live, days):
    """The on-sale filter hides items not launched yet, so a channel serving a later version would leave no
    trace in the funnel: check the daily channel's own lists (unfiltered) and the refreshes it made."""
    oracle, rows = live["oracle"], days["rows"]
    daily = days["channels"]()["gen_daily"].inner  # the DailyChannel, outside its on-sale filter
    recall_channel, refreshed = daily.inner.inner, []
    original = recall_channel.refresh

    def spy(folder):
        refreshed.append(Path(folder))
        return original(folder)

    recall_channel.refresh = spy  # an instance attribute: DailyChannel calls it per new day
    lists = daily.recall(RequestBatch.from_log(oracle.log, rows), 24)
    slices = day_slices(rows, oracle.timestamp)
    assert refreshed == [Path(days["versions"][day]) for day in slices]  # once per day, in order
    first, second = (_items(days["versions"][day]) for day in (12, 13))
    recalled_on = {
        day: set().union(*(set(np.asarray(lists[i]).tolist()) for i in at)) for day, at in slices.items()
    }
    assert not recalled_on[12] & (second - first)  # nothing added only for day 13 reaches day 12
    assert recalled_on[12] <= first and recalled_on[13] <= second
    assert recalled_on[12] & (first - _items(days["v0"]))  # day 12's own launches are reachable: not vacuous


def test_requests_out_of_time_order_are_refused(live, days, monkeypatch):
    import eg_grpo.arena.days as days_module

    monkeypatch.setattr(days_module, "split_rows", lambda args, log: days["rows"][::-1].copy())
    with pytest.raises(ValueError, match="not in time order"):
        play_by_day(days["args"], live["oracle"], days["channels"]())
