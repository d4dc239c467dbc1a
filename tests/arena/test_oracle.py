import json
import shutil

import numpy as np
import pandas as pd
import pytest
from sim_content import FLOAT_RTOL, REFERENCE_FILE, content_summary, differences

from eg_grpo.arena.oracle import Oracle, load_simulator_config
from eg_grpo.data.schema import SearchLog
from eg_grpo.data.simulator import SimulatorConfig, write_simulated_data

# The simulator's output as it was before its click model and legacy ranker were factored into
# functions the arena shares (the refactor must not move an id, a click or a probability), and the
# share-0 default of every simulator option added since. Compared by content (tests/arena/sim_content.py).
CONFIGS = {
    "tiny": SimulatorConfig.preset("tiny"),
    "tiny_seed3_rl": SimulatorConfig.preset("tiny", seed=3, n_requests=1500, rl_fraction=0.1),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_simulated_data_holds_the_reference_content(name, sim_data_dir, tmp_path):
    path = sim_data_dir if name == "tiny" else tmp_path / "data"
    if name != "tiny":
        write_simulated_data(CONFIGS[name], path)
    reference = json.loads(REFERENCE_FILE.read_text())[name]
    assert differences(content_summary(path), reference) == []


def test_the_content_check_sees_one_changed_click_and_a_moved_probability(sim_data_dir, tmp_path):
    reference = json.loads(REFERENCE_FILE.read_text())["tiny"]
    imps = pd.read_parquet(sim_data_dir / "impressions.parquet")
    for table in ("items", "requests"):
        shutil.copy(sim_data_dir / f"{table}.parquet", tmp_path / f"{table}.parquet")
    flipped = imps.copy()
    flipped.loc[123, "clicked"] = not flipped.loc[123, "clicked"]
    flipped.to_parquet(tmp_path / "impressions.parquet")
    assert differences(content_summary(tmp_path), reference) == ["impressions.clicked: values changed"]
    nudged = imps.copy()
    nudged["gt_click_prob"] *= 1 + 1e-8  # far above float noise, far below what a reader would see
    nudged.to_parquet(tmp_path / "impressions.parquet")
    assert differences(content_summary(tmp_path), reference) == [
        f"impressions.gt_click_prob: {stat} differs beyond rtol {FLOAT_RTOL}"
        for stat in ("sum", "sum_sq", "sample")
    ]


def test_oracle_reproduces_the_logged_click_probability_exactly(oracle):
    imps = oracle.log.impressions
    req, item = oracle.request_rows(imps["request_id"]), oracle.item_rows(imps["item_id"])
    probs = oracle.probabilities(req, item, imps["position"].to_numpy())
    assert np.array_equal(probs.click, imps["gt_click_prob"].to_numpy())  # to the bit
    assert np.array_equal(oracle.relevance(req, item), imps["gt_relevance"].to_numpy())
    # examination is the position bias alone; the purchase model is a probability
    assert np.array_equal(probs.examine, (imps["position"].to_numpy() + 1.0) ** -0.7)
    assert ((probs.purchase_given_click > 0) & (probs.purchase_given_click < 1)).all()
    # the logged purchases agree with the model: buy rate after a click ~ mean P(purchase | click)
    clicked = imps["clicked"].to_numpy(bool)
    rate = imps["purchased"].to_numpy(bool)[clicked].mean()
    expected = probs.purchase_given_click[clicked].mean()
    assert abs(rate - expected) < 4 * np.sqrt(expected * (1 - expected) / clicked.sum())


def test_oracle_best_items_are_the_most_relevant_then_most_attractive(oracle):
    for row in range(0, 2000, 97):
        best = oracle.best_items(row, 30)
        rel = oracle.relevance(np.full(len(best), row), best)
        assert (rel > 0).all() and (np.diff(rel) <= 0).all()
        if len(best):
            # nothing outside the list is more relevant than the list's worst
            everything = np.arange(len(oracle.log.items))
            all_rel = oracle.relevance(np.full(len(everything), row), everything)
            assert rel[0] == all_rel.max()
            assert (all_rel > rel[-1]).sum() <= len(best)


def test_a_data_folder_without_ground_truth_gives_a_clear_error(sim_data_dir, tmp_path):
    log = SearchLog.load(sim_data_dir)
    bare = tmp_path / "real"
    log.save(bare)  # tables without stage.json: e.g. a user's own logs
    with pytest.raises(FileNotFoundError, match="needs a simulated data folder"):
        Oracle.from_data_dir(bare)
    (bare / "stage.json").write_text(json.dumps({"fingerprint": "x", "stage": "data"}))  # Amazon-like
    with pytest.raises(ValueError, match="records no simulator_config"):
        load_simulator_config(bare)
    no_gt = SearchLog(
        items=log.items.drop(columns=["gt_noun"]), requests=log.requests.drop(columns=["gt_intent"]),
        impressions=log.impressions,
    )  # fmt: skip
    with pytest.raises(ValueError, match="no ground-truth columns"):
        Oracle(no_gt, SimulatorConfig.preset("tiny"))
    with pytest.raises(ValueError, match="catalogue rebuilt"):
        Oracle(log, SimulatorConfig.preset("tiny", seed=1))


def test_an_edited_click_model_in_stage_json_is_refused(sim_data_dir, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(sim_data_dir, data)
    Oracle.from_data_dir(data)  # the copy as simulated is accepted
    record = json.loads((data / "stage.json").read_text())
    record["config"]["simulator"]["click_bias"] += 1.5  # more clicks than the log holds
    (data / "stage.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match="does not reproduce the logged gt_click_prob.*re-simulate"):
        Oracle.from_data_dir(data)
