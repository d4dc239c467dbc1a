"""The search-log simulator: determinism, statistical properties, the make_data recipe."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from eg_grpo.data.schema import SearchLog
from eg_grpo.data.simulator import (
    SimulatorConfig,
    data_stage_record,
    simulate,
    simulator_config_of,
    summary_statistics,
)
from eg_grpo.data.vocabulary import LEAVES
from eg_grpo.io import StageConflict, read_stage

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes" / "make_data.py"


def _assert_same(a: SearchLog, b: SearchLog) -> None:
    for name in ("items", "requests", "impressions"):
        pd.testing.assert_frame_equal(getattr(a, name), getattr(b, name))


def test_same_seed_gives_identical_tables(tiny_log):
    _assert_same(simulate(SimulatorConfig.preset("tiny")), tiny_log)


def test_different_seed_differs(tiny_log):
    other = simulate(SimulatorConfig.preset("tiny", seed=1))
    assert (other.items["title"] != tiny_log.items["title"]).mean() > 0.9
    assert (other.requests["query"] != tiny_log.requests["query"]).mean() > 0.5
    assert not other.impressions[["request_id", "item_id"]].equals(
        tiny_log.impressions[["request_id", "item_id"]]
    )


def test_taxonomy_and_titles(tiny_log):
    items = tiny_log.items
    assert all(len(p) == 3 for p in items["category_path"])
    assert {tuple(p) for p in items["category_path"]} == {
        leaf.path for leaf in LEAVES
    }  # every leaf has items
    assert len(LEAVES) >= 40 and len({leaf.path[0] for leaf in LEAVES}) >= 6
    assert items["title"].str.split().str.len().between(1, 12).all()
    # the product noun is in the title (case-insensitive), which is what makes titles readable
    has_noun = [n.lower() in t.lower() for n, t in zip(items["gt_noun"], items["title"])]
    assert all(has_noun)
    assert (items["price"] > 0).all() and items["gt_quality"].between(0, 1).all()
    # Zipf-like popularity: the top 10 % of items hold most of the attention
    pop = np.sort(items["gt_popularity"].to_numpy())[::-1]
    assert pop[: len(pop) // 10].sum() / pop.sum() > 0.4


def test_click_rate_falls_with_position(tiny_log):
    imp = tiny_log.impressions
    buckets = pd.cut(imp["position"], [-1, 1, 4, 9, 20])
    ctr = imp["clicked"].groupby(buckets, observed=True).mean().to_numpy()
    assert len(ctr) == 4 and np.all(np.diff(ctr) < 0), ctr


def test_relevant_items_are_clicked_more(tiny_log):
    imp = tiny_log.impressions
    relevant = imp["gt_relevance"] >= 2
    assert imp.loc[relevant, "clicked"].mean() > 3 * imp.loc[~relevant, "clicked"].mean()
    # also at a fixed position, so it is not only the ranker putting relevant items on top
    top = imp[imp["position"] < 3]
    assert (
        top.loc[top["gt_relevance"] >= 2, "clicked"].mean()
        > 2 * top.loc[top["gt_relevance"] < 2, "clicked"].mean()
    )
    # the stored click probability is what the clicks were drawn from
    assert abs(imp["gt_click_prob"].mean() - imp["clicked"].mean()) < 0.01


def test_rates_are_plausible(tiny_log):
    s = summary_statistics(tiny_log)
    assert 0.02 < s["ctr"] < 0.15
    assert 0.05 < s["purchases_per_click"] < 0.35
    assert s["ctr_by_position"][0] > s["ctr_by_position"][10] > 0
    assert len(s["ctr_by_position"]) == 20 and s["ctr_by_relevance"] == sorted(s["ctr_by_relevance"])
    assert s["ctr"] == round(float(tiny_log.impressions["clicked"].mean()), 4)
    assert sum(s["split_sizes"].values()) == s["requests"] == 2000
    assert abs(s["empty_query_share"] - 0.1) < 0.03
    assert json.loads(json.dumps(s)) == s


def test_purchases_only_after_clicks(tiny_log):
    imp = tiny_log.impressions
    assert imp["purchased"].sum() > 0
    assert not (imp["purchased"] & ~imp["clicked"]).any()


def test_impression_lists(tiny_log):
    imp = tiny_log.impressions
    sizes = imp.groupby("request_id").size()
    assert sizes.between(10, 20).all() and len(sizes) == len(tiny_log.requests)
    # positions are 0..n-1 in each list
    assert (imp.groupby("request_id")["position"].agg(lambda p: sorted(p) == list(range(len(p))))).all()


def test_splits_are_temporal(tiny_log):
    req = tiny_log.requests
    ts = {s: req.loc[req["split"] == s, "timestamp"] for s in ("train", "valid", "test")}
    assert ts["train"].max() < ts["valid"].min() and ts["valid"].max() < ts["test"].min()
    assert req["timestamp"].is_unique
    assert (req["split"] == "rl").sum() == 0  # rl_fraction defaults to 0


def test_rl_fraction_relabels_the_latest_training_requests_only(tiny_log):
    log = simulate(SimulatorConfig.preset("tiny", rl_fraction=0.1))
    req, before = log.requests, tiny_log.requests
    # the same simulation: only labels move, and exactly the 200 latest train requests become rl
    pd.testing.assert_frame_equal(req.drop(columns="split"), before.drop(columns="split"))
    moved = req["split"] != before["split"]
    assert (
        moved.sum() == 200
        and set(req.loc[moved, "split"]) == {"rl"}
        and set(before.loc[moved, "split"]) == {"train"}
    )
    ts = {s: req.loc[req["split"] == s, "timestamp"] for s in ("train", "rl", "valid")}
    assert ts["train"].max() < ts["rl"].min() and ts["rl"].max() < ts["valid"].min()


def test_histories_hold_only_earlier_clicks(tiny_log):
    req = tiny_log.requests.sort_values("timestamp")
    imp = tiny_log.impressions
    clicks = (
        imp[imp["clicked"]].sort_values(["request_id", "position"]).groupby("request_id")["item_id"].agg(list)
    )
    max_history = SimulatorConfig.preset("tiny").max_history
    checked = 0
    for _, rows in req.groupby("user_id"):
        prev = None
        for row in rows.itertuples():
            if prev is not None:
                expected = (list(prev.history) + clicks.get(prev.request_id, []))[-max_history:]
                assert list(row.history) == expected, (prev.request_id, row.request_id)
                checked += 1
            prev = row
    assert checked > 1000
    assert req["history"].map(len).max() == max_history


def test_queries_carry_the_intent(tiny_log):
    req = tiny_log.requests
    empty = req["gt_intent"] == "empty"
    assert (req.loc[empty, "query"] == "").all() and (req.loc[~empty, "query"] != "").all()
    assert set(req["gt_intent"]) == {"category", "attribute", "brand", "empty"}
    attr = req[req["gt_intent"] == "attribute"]
    said = [a.split()[-1] in q for a, q in zip(attr["gt_attribute"], attr["query"])]
    assert np.mean(said) > 0.8  # typos and dropped words take the rest
    # query words come from the vocabulary of the intended leaf's items (what a text encoder aligns)
    items = tiny_log.items
    leaf_words = (
        items.assign(
            leaf=items["category_path"].map(" > ".join), text=items["title"] + " " + items["description"]
        )
        .groupby("leaf")["text"]
        .agg(lambda t: set(re.findall(r"[a-z0-9]+", " ".join(t).lower())))
    )
    named = req[(req["gt_category"] != "") & (req["query"] != "")]
    shares = [
        bool(set(re.findall(r"[a-z0-9]+", q)) & leaf_words[c])
        for q, c in zip(named["query"], named["gt_category"])
    ]
    assert np.mean(shares) > 0.95  # the rest are typos and dropped words


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="preset"):
        SimulatorConfig.preset("huge")
    with pytest.raises(ValueError, match="n_items"):
        simulate(SimulatorConfig.preset("tiny", n_items=0))
    with pytest.raises(ValueError, match="max_impressions"):
        simulate(SimulatorConfig.preset("tiny", min_impressions=30))
    with pytest.raises(ValueError, match="split"):
        simulate(SimulatorConfig.preset("tiny", n_requests=3, test_fraction=0.1))
    with pytest.raises(ValueError, match="rl_fraction=0.8 leaves a split empty"):
        simulate(SimulatorConfig.preset("tiny", rl_fraction=0.8))


def _recipe():
    spec = importlib.util.spec_from_file_location("make_data_recipe", RECIPE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("size", ["tiny", "demo", "large"])
def test_yaml_configs_match_presets(size):
    recipe = _recipe()
    from trl import TrlParser

    config = REPO / "recipes" / "configs" / size / "data.yaml"
    assert config.read_text().startswith("# python recipes/make_data.py --config")
    (args,) = TrlParser((recipe.MakeDataArguments,)).parse_args_and_config(["--config", str(config)])
    assert simulator_config_of(args) == SimulatorConfig.preset(size)


def test_recipe_writes_the_data_artifact(tmp_path, tiny_log):
    recipe = _recipe()
    from trl import TrlParser

    parser = TrlParser((recipe.MakeDataArguments,))
    config = str(REPO / "recipes" / "configs" / "tiny" / "data.yaml")
    out = tmp_path / "data"
    (args,) = parser.parse_args_and_config(["--config", config, "--output_dir", str(out)])
    assert args.output_dir == str(out)  # the command line wins over the YAML
    stats = recipe.main(args)
    assert sorted(p.name for p in out.iterdir()) == [
        "impressions.parquet", "items.parquet", "requests.parquet", "stage.json", "stats.json",
    ]  # fmt: skip
    loaded = SearchLog.load(out)
    pd.testing.assert_frame_equal(loaded.impressions, tiny_log.impressions, check_dtype=False)
    assert (
        json.loads((out / "stats.json").read_text())["ctr"]
        == stats["ctr"]
        == summary_statistics(tiny_log)["ctr"]
    )
    fingerprint = read_stage(out)["fingerprint"]
    assert fingerprint == data_stage_record(SimulatorConfig.preset("tiny"))["fingerprint"]
    assert fingerprint != data_stage_record(SimulatorConfig.preset("tiny", seed=1))["fingerprint"]
    assert not list(tmp_path.glob(".*partial*"))  # the temporary folder was renamed into place

    # --seed overrides the YAML; the folder of another seed is replaced only when asked to
    (args,) = parser.parse_args_and_config(["--config", config, "--output_dir", str(out), "--seed", "3"])
    with pytest.raises(StageConflict, match=r"config.simulator.seed: 0 -> 3"):
        recipe.main(args)
    args.overwrite = True
    recipe.main(args)
    assert (
        read_stage(out)["fingerprint"]
        == data_stage_record(SimulatorConfig.preset("tiny", seed=3))["fingerprint"]
    )

    bad = tmp_path / "bad.yaml"
    bad.write_text(Path(config).read_text() + "n_itemz: 10\n")
    with pytest.raises(ValueError, match="n_itemz"):
        parser.parse_args_and_config(["--config", str(bad)])


def test_recipe_command_line(tmp_path):
    out = tmp_path / "data"
    config = REPO / "recipes" / "configs" / "tiny" / "data.yaml"
    done = subprocess.run(
        [sys.executable, str(RECIPE), "--config", str(config), "--output_dir", str(out), "--n_requests", "500"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert '"ctr"' in done.stdout
    assert len(SearchLog.load(out).requests) == 500
