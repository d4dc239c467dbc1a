import hashlib
import json

import numpy as np
import pytest

from eg_grpo.arena.oracle import Oracle, load_simulator_config
from eg_grpo.data.schema import SearchLog
from eg_grpo.data.simulator import SimulatorConfig, write_simulated_data

# sha256 of the parquet files written by the simulator before its click model and legacy ranker
# were factored into functions the arena shares: the refactor must not move a single byte.
REFERENCE = {
    "tiny": {
        "items.parquet": "690c4d1e722277cbf8a7feb95a6612d3894186e394c66754319bced2fefad211",
        "requests.parquet": "359d82317372bc3ec72594bbb32c5bae74231d744088b8bd8e2172eda78ee2ca",
        "impressions.parquet": "26116d92933ef15f5dc3b42f359b103f570da9c48796b065e48628268c85fd16",
    },
    "tiny_seed3_rl": {
        "items.parquet": "8ee346d8485b7031d6744c3125267607c651ee485641a5f0a395adba410f4410",
        "requests.parquet": "4c1c6e55db143789ded485001e9cd233e8894ad299ac561222e760da1ec78094",
        "impressions.parquet": "04f57653f04e9ef6f6a7b7ea95d023f2fb81af50817af42ad21002d3aa5fac78",
    },
}
CONFIGS = {
    "tiny": SimulatorConfig.preset("tiny"),
    "tiny_seed3_rl": SimulatorConfig.preset("tiny", seed=3, n_requests=1500, rl_fraction=0.1),
}


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_simulated_data_is_byte_identical_to_before_the_refactor(name, sim_data_dir, tmp_path):
    path = sim_data_dir if name == "tiny" else tmp_path / "data"
    if name != "tiny":
        write_simulated_data(CONFIGS[name], path)
    got = {f: hashlib.sha256((path / f).read_bytes()).hexdigest() for f in REFERENCE[name]}
    assert got == REFERENCE[name]


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
