"""Items that launch during the simulated log: nothing of an item shows before its launch."""

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from eg_grpo.data.schema import SearchLog, table_problems
from eg_grpo.data.sim_launches import Launches
from eg_grpo.data.sim_logs import legacy_candidates
from eg_grpo.data.simulator import (
    SimulatorConfig,
    build_world,
    data_stage_record,
    simulate,
    simulator_config_of,
    summary_statistics,
)
from eg_grpo.data.validate import validate_data_dir

REPO = Path(__file__).resolve().parents[2]
# Not the defaults, so the test sees the fields act; a fifth of the tiny catalogue is 100 items.
LIVE = SimulatorConfig.preset("tiny", launch_share=0.2, launch_test_share=0.5)


@pytest.fixture(scope="module")
def live_log() -> SearchLog:
    return simulate(LIVE)


def _launch(log: SearchLog) -> pd.Series:
    """item_id -> launch time (float, NaN for items on sale before the log)."""
    return pd.Series(log.items["launch_time"].astype(float).to_numpy(), index=log.items["item_id"].to_numpy())


def _test_start(log: SearchLog) -> int:
    return int(log.requests.loc[log.requests["split"] == "test", "timestamp"].min())


def test_the_shares_are_as_configured(live_log):
    launch = _launch(live_log)
    launched = launch.dropna()
    assert len(launched) == round(0.2 * 500) == 100
    assert (launched >= _test_start(live_log)).sum() == 50  # half of them in the test period
    stamps = live_log.requests["timestamp"]
    assert stamps.min() <= launched.min() and launched.max() <= stamps.max()  # inside the log's window
    assert (launched < _test_start(live_log)).any()  # and some before the test period
    assert live_log.items["launch_time"].dtype == "Int64"
    assert summary_statistics(live_log)["launches"]["items"] == 100


def test_no_impression_before_launch_and_launched_items_are_shown_after(live_log):
    imps = live_log.impressions
    launched = imps["item_id"].map(_launch(live_log)).to_numpy()
    shown_at = imps["request_id"].map(live_log.requests.set_index("request_id")["timestamp"]).to_numpy()
    of_launched = ~np.isnan(launched)
    assert (shown_at[of_launched] >= launched[of_launched]).all()
    # the legacy retrieval finds launched items: many of them, clicked too, some launched during the test
    assert imps.loc[of_launched, "item_id"].nunique() >= 50
    assert imps.loc[of_launched, "clicked"].sum() > 0
    test_launches = _launch(live_log)[lambda s: s >= _test_start(live_log)].index
    assert imps["item_id"].isin(test_launches).sum() > 0


def test_the_cold_start_prior_holds_new_items_back(live_log):
    """During its ramp a launched item is shown less often per request than after it."""
    imps, requests = live_log.impressions, live_log.requests.set_index("request_id")
    launch = _launch(live_log)
    ramp = LIVE.launch_ramp_days * 86_400
    early_launches = launch[launch < requests["timestamp"].max() - ramp - 3 * 86_400].dropna()
    assert len(early_launches) >= 10
    shows = imps[imps["item_id"].isin(early_launches.index)]
    age = shows["request_id"].map(requests["timestamp"]).to_numpy() - shows["item_id"].map(launch).to_numpy()
    # per second of exposure: the requests are spread evenly over time
    during = (age < ramp).sum() / (ramp * len(early_launches))
    after = (age >= ramp).sum() / np.sum(requests["timestamp"].max() - early_launches.to_numpy() - ramp)
    assert during < 0.8 * after


def test_no_history_entry_before_launch(live_log):
    launch = _launch(live_log)
    entries = live_log.requests[["timestamp", "history"]].explode("history").dropna(subset=["history"])
    launched = entries["history"].astype(int).map(launch).to_numpy()
    of_launched = ~np.isnan(launched)
    assert of_launched.sum() > 0  # clicked launched items do enter later histories
    assert (entries["timestamp"].to_numpy()[of_launched] > launched[of_launched]).all()


def test_no_candidate_before_launch():
    w = build_world(LIVE)
    rng = np.random.default_rng(1)
    cand, usable = legacy_candidates(LIVE, w.taxonomy, w.catalogue, w.users, w.requests, rng, w.launches)
    launch = w.launches.time[cand]  # (R, C); -inf for items on sale before the log
    stamps = w.requests["timestamp"].to_numpy()[:, None]
    assert (launch[usable] <= np.broadcast_to(stamps, cand.shape)[usable]).all()
    assert usable.mean() > 0.9  # unlaunched draws are redrawn, not just dropped
    assert np.isfinite(launch[usable]).sum() > 0  # launched items are candidates once launched


def test_the_prior_ramps_from_its_start_to_one():
    launches = Launches(np.array([100.0, -np.inf]), ramp_seconds=1000.0, prior_start=0.1, rng=None)
    at = np.array([99.0, 100.0, 600.0, 1100.0, 5000.0])
    assert launches.prior(np.zeros(5, dtype=int), at).tolist() == pytest.approx([0.0, 0.1, 0.55, 1.0, 1.0])
    assert launches.prior(np.ones(5, dtype=int), at).tolist() == [1.0] * 5  # on sale before the log
    assert launches.log_prior(np.array([0]), np.array([0.0]))[0] == -np.inf


def test_launches_change_only_what_can_be_shown(live_log, tiny_log):
    # who searches, when and for what is the log without launches
    columns = ["request_id", "user_id", "query", "timestamp", "split", "gt_intent", "gt_category"]
    pd.testing.assert_frame_equal(live_log.requests[columns], tiny_log.requests[columns])
    pd.testing.assert_frame_equal(live_log.items.drop(columns="launch_time"), tiny_log.items)


def test_share_zero_is_the_log_without_launches(tiny_log):
    # the other launch fields do nothing at share 0: same tables, no column, the same stage record
    config = SimulatorConfig.preset("tiny", launch_test_share=0.9, launch_ramp_days=1.0)
    log = simulate(config)
    assert "launch_time" not in log.items.columns
    for name in ("items", "requests", "impressions"):
        pd.testing.assert_frame_equal(getattr(log, name), getattr(tiny_log, name))
    assert data_stage_record(config) == data_stage_record(SimulatorConfig.preset("tiny"))
    assert "launch_share" not in data_stage_record(config)["config"]["simulator"]
    assert data_stage_record(LIVE)["config"]["simulator"]["launch_share"] == 0.2


def test_validate_data_flags_items_before_their_launch(live_log, tmp_path):
    live_log.save(tmp_path / "ok")
    report = validate_data_dir(tmp_path / "ok")
    assert report.ok, report.render()
    loaded = SearchLog.load(tmp_path / "ok")  # nulls survive parquet
    assert loaded.items["launch_time"].isna().sum() == 400

    # plant one impression and one history entry of a test-period launch in the first request
    launch = _launch(live_log)
    item = int(launch.idxmax())
    first = live_log.requests.iloc[0]
    imps = pd.concat(
        [live_log.impressions, pd.DataFrame({"request_id": [first["request_id"]], "item_id": [item], "position": [20],
                                             "clicked": [False], "purchased": [False]})],
        ignore_index=True,
    )  # fmt: skip
    requests = live_log.requests.copy()
    requests.at[requests.index[0], "history"] = [*first["history"], item]
    SearchLog(live_log.items, requests, imps).save(tmp_path / "bad")
    report = validate_data_dir(tmp_path / "bad")
    assert not report.ok
    text = " | ".join(report.errors)
    assert "1 impression(s) of 1 item(s) predate the item's launch_time" in text
    assert "1 history entr(ies) of 1 item(s) predate the item's launch_time" in text
    assert f"item {item} in request {first['request_id']}" in text


def test_the_schema_checks_launch_time():
    items = pd.DataFrame({"item_id": [0, 1], "title": ["a", "b"], "category_path": [["x"], ["x"]],
                          "brand": ["b", "b"], "price": [1.0, 2.0]})  # fmt: skip
    for ok in ([None, 5], [np.nan, 5.0], [3, 5]):
        assert table_problems("items", items.assign(launch_time=ok)) == []
    assert table_problems("items", items.assign(launch_time=pd.array([None, 5], dtype="Int64"))) == []
    for bad in ([1.5, None], ["soon", None]):
        (problem,) = table_problems("items", items.assign(launch_time=bad))
        assert problem.column == "launch_time" and "integers or nulls" in problem.problem


def test_bad_launch_settings_are_refused():
    for field, value in (("launch_share", 1.5), ("launch_test_share", -0.1), ("launch_prior_start", 2.0)):
        with pytest.raises(ValueError, match=field):
            SimulatorConfig.preset("tiny", **{field: value}).validate()
    with pytest.raises(ValueError, match="launch_ramp_days"):
        SimulatorConfig.preset("tiny", launch_ramp_days=-1.0).validate()


def test_demo_live_config_is_the_preset():
    from trl import TrlParser

    spec = importlib.util.spec_from_file_location("make_data_recipe", REPO / "recipes" / "make_data.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    config = REPO / "recipes" / "configs" / "demo_live" / "data.yaml"
    (args,) = TrlParser((recipe.MakeDataArguments,)).parse_args_and_config(["--config", str(config)])
    live = SimulatorConfig.preset("demo_live")
    assert simulator_config_of(args) == live
    assert live.launch_share == 0.1 and live == SimulatorConfig.preset("demo", launch_share=0.1)
