import numpy as np
import pytest

from eg_grpo.sid.stats import sid_stats


def test_stats_on_a_hand_made_assignment():
    codes = np.array([[0, 0], [0, 0], [0, 1], [1, 0]])
    tops = np.array(["A", "A", "B", "B"], dtype=object)
    s = sid_stats(
        codes,
        (2, 4),
        tops,
        query_codes=np.array([[0, 0], [1, 1]]),
        pair_item_codes=np.array([[0, 0], [1, 0]]),
    )
    assert s["num_items"] == 4 and s["num_sids"] == 3
    assert s["cluster_size"] == {
        "mean": pytest.approx(4 / 3),
        "p50": 1.0,
        "p99": pytest.approx(1.98),
        "max": 2,
    }
    assert s["level_utilization"] == [1.0, 0.5]
    assert s["level_perplexity"][0] == pytest.approx(np.exp(-(0.75 * np.log(0.75) + 0.25 * np.log(0.25))))
    # level-1 code 0 holds A, A, B -> majority A: the B item there is impure
    assert s["l1_category_purity"] == 0.75
    assert s["query_item_agreement"] == {"l1": 1.0, "l12": 0.5, "num_pairs": 2}
    assert sid_stats(codes, (2, 4))["l1_category_purity"] is None
