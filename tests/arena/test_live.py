"""The arena on a live catalogue: the cut-off data, no item before its launch, and the new-item figures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from eg_grpo.arena.channels import GenerativeChannel, LoggedChannel, OracleChannel, RequestBatch
from eg_grpo.arena.config import ArenaArguments
from eg_grpo.arena.funnel import legacy_ranking_stage, merge, play
from eg_grpo.arena.live import NewItemFigures, OnSaleChannel, lineage_data_dir, ratio_diff
from eg_grpo.arena.oracle import Oracle
from eg_grpo.data.cutoff import launch_times
from eg_grpo.data.schema import SearchLog
from eg_grpo.data.simulator import SimulatorConfig, write_simulated_data
from eg_grpo.io import check_lineage, read_stage
from eg_grpo.stages.cutoff import NEW_ITEMS_FILE, CutoffArguments
from eg_grpo.stages.cutoff import run as cut


def _test_rows(oracle) -> np.ndarray:
    return np.flatnonzero((oracle.log.requests["split"] == "test").to_numpy())


def test_the_cutoff_folder_is_the_catalogue_before_the_first_test_request(live):
    full, before = live["oracle"].log, SearchLog.load(live["cut"])
    new = pd.read_parquet(live["cut"] / NEW_ITEMS_FILE)
    cutoff = read_stage(live["cut"])["cutoff_time"]
    assert cutoff == int(full.requests.loc[full.requests["split"] == "test", "timestamp"].min())
    assert (launch_times(before.items) < cutoff).all() and (new["launch_time"] >= cutoff).all()
    assert sorted(before.items["item_id"].tolist() + new["item_id"].tolist()) == sorted(full.items["item_id"])
    assert len(new) == 50 and list(new.columns) == list(full.items.columns)
    assert (before.requests["timestamp"] < cutoff).all() and "test" not in set(before.requests["split"])
    assert len(before.requests) == int((full.requests["timestamp"] < cutoff).sum())
    assert set(before.impressions["request_id"]) <= set(before.requests["request_id"])
    with pytest.raises(ValueError, match="launch_time"):  # a log without launches has nothing to cut
        cut(CutoffArguments(data_dir=str(_no_launch_dir(live)), output_dir=str(live["root"] / "cut_none")))


def _no_launch_dir(live) -> Path:
    folder = live["root"] / "plain"
    if not folder.exists():
        write_simulated_data(SimulatorConfig.preset("tiny"), folder)
    return folder


def test_the_legacy_and_oracle_channels_never_offer_an_item_before_its_launch(live):
    oracle = live["oracle"]
    launched = launch_times(oracle.log.items)
    rows = np.arange(len(oracle.log.requests))
    batch = RequestBatch.from_log(oracle.log, rows)
    stamps = oracle.log.requests["timestamp"].to_numpy()
    for channel in (LoggedChannel(oracle, seed=0), OracleChannel(oracle)):
        found = channel.recall(batch, 48)
        times = [launched[oracle.item_rows(items)] for items in found]
        assert all((t <= s).all() for t, s in zip(times, stamps)), channel.name
        # launched items are offered once on sale (the channel is not simply blind to them)
        assert any((np.isfinite(t) & (t <= s)).any() for t, s in zip(times, stamps)), channel.name
    # unlaunched draws are redrawn, not just dropped: the lists stay nearly as long as without launches
    # (the tiny catalogue's legacy retrieval draws many repeats either way)
    with_launches = np.mean([len(x) for x in LoggedChannel(oracle).recall(batch, 48)])
    blind = Oracle.__new__(Oracle)
    blind.__dict__.update(oracle.__dict__, launches=None)
    assert with_launches > 0.9 * np.mean([len(x) for x in LoggedChannel(blind).recall(batch, 48)])


def test_the_on_sale_filter_drops_unlaunched_items_and_keeps_the_quota(live):
    oracle = live["oracle"]

    class Everything:  # every item, unlaunched ones first
        name = "everything"

        def recall(self, batch, quota):
            order = np.argsort(-launch_times(oracle.log.items), kind="stable")
            return [oracle.log.items["item_id"].to_numpy()[order][:quota] for _ in range(len(batch))]

    rows = _test_rows(oracle)[:5]
    found = OnSaleChannel(Everything(), oracle).recall(RequestBatch.from_log(oracle.log, rows), 30)
    for row, items in zip(rows, found):
        assert len(items) == 30 and oracle.on_sale(np.full(30, row), oracle.item_rows(items)).all()


def test_new_item_shares_and_recalls_on_hand_built_candidates(live):
    oracle = live["oracle"]
    log, rows = oracle.log, _test_rows(oracle)[-6:]  # late test requests: many test launches on sale
    args = ArenaArguments(data_dir=str(live["data"]))
    figures = NewItemFigures.build(args, oracle, rows, log.requests["user_id"].to_numpy()[rows])
    assert figures.cutoff == read_stage(live["cut"])["cutoff_time"] and figures.source == "first test request"
    new_rows, old_rows = np.flatnonzero(figures.is_new), np.flatnonzero(~figures.is_new)
    on_sale = [new_rows[oracle.on_sale(np.full(len(new_rows), r), new_rows)][:4] for r in rows]
    assert all(len(x) == 4 for x in on_sale)
    recalled = {"old": [old_rows[:8] for _ in rows], "new": on_sale}
    bits, n_exposed = {"old": 0, "new": 1}, np.full(len(rows), 12)
    ranking = legacy_ranking_stage(oracle)
    control_cands = merge(recalled, {"old": 8}, bits)
    arm_cands = merge(recalled, {"old": 8, "new": 4}, bits)
    control = play(control_cands, rows, n_exposed, oracle, ranking, bits)
    arm = play(arm_cands, rows, n_exposed, oracle, ranking, bits)
    # logged clicks chosen by hand: one new item the arm brings per request, and one old item
    figures.click_slot = np.repeat(np.arange(len(rows)), 2)
    figures.click_item = np.stack([[x[0], old_rows[0]] for x in on_sale]).ravel()
    figures.click_new = figures.is_new[figures.click_item]
    res = figures.compare(figures.side(arm, arm_cands), figures.side(control, control_cands))
    # exposures: all 12 slots of each request are filled (8 old + 4 new), so every new item is exposed
    exp = res["share"]["exposures"]
    assert exp["treatment"] == pytest.approx(4 / 12) and exp["control"] == 0.0
    assert exp["diff"] == pytest.approx(4 / 12) and exp["diff_se"] == pytest.approx(0.0, abs=1e-12)
    shown = arm.exposed
    probs = oracle.probabilities(rows[shown["slot"]], shown["item"], shown["position"])
    new = figures.is_new[shown["item"]]
    assert res["share"]["clicks"]["treatment"] == pytest.approx(probs.click[new].sum() / probs.click.sum())
    assert res["per_request"]["new"]["clicks"]["treatment"] == pytest.approx(
        probs.click[new].sum() / len(rows)
    )
    assert (
        res["recall_of_clicks"]["new"]["treatment"] == 1.0
        and res["recall_of_clicks"]["new"]["control"] == 0.0
    )
    assert res["recall_of_clicks"]["old"]["treatment"] == res["recall_of_clicks"]["old"]["control"] == 1.0
    summary = figures.summary({"old": recalled["old"], "new": recalled["new"]})
    assert summary["channels"]["old"]["new"] == 0.0 and summary["channels"]["new"]["new"] == 1.0
    assert summary["channels"]["new"]["new_item_share"] == 1.0 and summary["logged_clicks"] == {
        "new": 6,
        "old": 6,
    }


def test_ratio_diff_is_the_paired_delta_method():
    num_t, num_c, den = np.array([1.0, 2, 0, 3]), np.array([0.0, 1, 0, 1]), np.array([2.0, 2, 1, 3])
    out = ratio_diff(num_t, den, num_c, den)
    assert out["treatment"] == pytest.approx(6 / 8) and out["control"] == pytest.approx(2 / 8)
    d = (num_t - num_c) - out["diff"] * den  # same denominators: the residual of a paired mean ratio
    assert out["diff_se"] == pytest.approx(np.sqrt(4 / 3 * np.sum((d / den.mean()) ** 2)) / 4)
    assert np.isnan(ratio_diff(num_t, 0 * den, num_c, den)["treatment"])


def test_an_unrefreshed_generator_recalls_no_new_item_and_a_refreshed_one_does(
    live, sid_versions, tiny_sft_dir
):
    from eg_grpo.data.sft_dataset import load_codebook
    from eg_grpo.eval.recall import RecallChannel
    from eg_grpo.modeling import load_model_and_tokenizer

    oracle, (v0, v1) = live["oracle"], sid_versions
    # the SIDs built before the launches are accepted beside the full log: their data is its cut-off
    assert Path(lineage_data_dir(live["data"], v1)) == Path(live["cut"]).resolve()
    assert Path(lineage_data_dir(live["data"], live["data"])) == Path(live["data"])
    check_lineage(data_dir=lineage_data_dir(live["data"], v1), sid_dir=v1)
    model, tokenizer = load_model_and_tokenizer(str(tiny_sft_dir))
    arms = {}
    for name, refresh in (("unrefreshed", False), ("refreshed", True)):
        inner = RecallChannel.from_model(model, tokenizer, load_codebook(v0))
        if refresh:
            inner.refresh(v1)
        arms[name] = OnSaleChannel(GenerativeChannel.from_recall_channel(name, inner, beam=8), oracle)
    rows = _test_rows(oracle)[-40:]
    batch = RequestBatch.from_log(oracle.log, rows)
    is_new = launch_times(oracle.log.items) >= read_stage(live["cut"])["cutoff_time"]
    found = {name: channel.recall(batch, 40) for name, channel in arms.items()}
    new_counts = {n: sum(int(is_new[oracle.item_rows(x)].sum()) for x in lists) for n, lists in found.items()}
    assert new_counts["unrefreshed"] == 0 and new_counts["refreshed"] > 0
    # the refreshed SIDs hold items launched after these requests too: never offered early
    for row, items in zip(rows, found["refreshed"]):
        assert oracle.on_sale(np.full(len(items), row), oracle.item_rows(items)).all()


def test_the_arena_reports_new_item_figures_on_live_data(live, tmp_path):
    from eg_grpo.arena.run import run

    out = run(ArenaArguments(data_dir=str(live["data"]), output_dir=str(tmp_path / "arena"),
                             channels=["item_cf:24", "oracle:24"], budget_modes=["supplement"]))  # fmt: skip
    results = json.loads((out / "arena_results.json").read_text())
    record = results["new_items"]
    assert record["cutoff"] == read_stage(live["cut"])["cutoff_time"] and record["new_items"] == 50
    assert record["channels"]["item_cf"]["new_item_share"] == 0.0  # no co-clicks: it cannot know new items
    arm = results["stages"]["legacy"]["supplement"]["arms"]["+oracle"]["new_items"]
    assert set(arm) == {"share", "per_request", "recall_of_clicks"} and arm["share"]["exposures"]["diff"] > 0
    report = (out / "arena.md").read_text()
    assert "**New items**" in report and "`item_cf` cannot recall new items" in report
    # a log without launches gets no new-item figures
    plain = run(ArenaArguments(data_dir=str(_no_launch_dir(live)), output_dir=str(tmp_path / "plain"),
                               channels=["oracle:24"], budget_modes=["supplement"]))  # fmt: skip
    assert "new_items" not in json.loads((plain / "arena_results.json").read_text())


def test_the_live_options_at_their_defaults_leave_the_stage_record_as_before(live):
    from dataclasses import replace

    from eg_grpo.arena.run import arena_stage_record

    base = ArenaArguments(data_dir=str(live["data"]), channels=["oracle:24"])
    record = arena_stage_record(base)
    assert "launch_cutoff" not in record["config"] and "item_order" not in record["config"]
    for changed in (replace(base, item_order="prior"), replace(base, launch_cutoff=5)):
        assert arena_stage_record(changed)["fingerprint"] != record["fingerprint"]
    with pytest.raises(ValueError, match="item_order"):
        replace(base, item_order="newest").validate()


def test_every_control_view_reports_its_arms_new_item_figures(live, tmp_path):
    from eg_grpo.arena.run import run

    out = run(ArenaArguments(data_dir=str(live["data"]), output_dir=str(tmp_path / "arena"), max_requests=200,
                             control=["logged:48", "item_cf:24"], control_name="stack",
                             control_views=["legacy=logged:48"], channels=["item_cf:24", "oracle:24"],
                             budget_modes=["supplement"]))  # fmt: skip
    results = json.loads((out / "arena_results.json").read_text())
    (legacy,) = results["control_views"]
    views = {"stack": results["stages"], "legacy": legacy["stages"]}
    assert set(views["stack"]["legacy"]["supplement"]["arms"]) == {"+oracle"}
    assert set(views["legacy"]["legacy"]["supplement"]["arms"]) == {"+item_cf", "+oracle"}
    for stages in views.values():
        for arm in stages["legacy"]["supplement"]["arms"].values():
            assert set(arm["new_items"]) == {"share", "per_request", "recall_of_clicks"}
    # the two controls differ, so do the oracle arm's new-item shares against them
    shares = [
        s["legacy"]["supplement"]["arms"]["+oracle"]["new_items"]["share"]["exposures"]
        for s in views.values()
    ]
    assert shares[0]["control"] != shares[1]["control"]
    report = (out / "arena.md").read_text()
    stack = report.index("Over control `stack` (logged:48 + item_cf:24), ranking stage `legacy`")
    assert stack < report.index("Over control `legacy` (logged:48), ranking stage `legacy`")
