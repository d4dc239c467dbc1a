import numpy as np
import pytest

from eg_grpo.arena.channels import Channel
from eg_grpo.arena.config import ArenaArguments, build_arms, fixed_budget_quotas
from eg_grpo.arena.funnel import legacy_ranking_stage, merge, pair_normal, play
from eg_grpo.arena.report import render_arena_section
from eg_grpo.arena.run import build_channels, play_arena, split_rows
from eg_grpo.arena.stats import Z95, clustered_se, holm, paired_lift


def test_merge_attribution_on_a_hand_made_case():
    # request 0: a brings [5, 7, 9] (its quota of 2 keeps [5, 7]), b brings [7, 2];
    # request 1: a brings nothing, b brings [3, 4]
    recalled = {
        "a": [np.array([5, 7, 9]), np.array([], dtype=np.int64)],
        "b": [np.array([7, 2]), np.array([3, 4])],
    }
    cand = merge(recalled, {"a": 2, "b": 2}, {"a": 0, "b": 1})
    got = {(int(s), int(i)): int(m) for s, i, m in zip(cand.slot, cand.item, cand.sources)}
    assert got == {
        (0, 5): 0b01,
        (0, 7): 0b11,
        (0, 2): 0b10,
        (1, 3): 0b10,
        (1, 4): 0b10,
    }  # 9 is over a's quota
    arrival = {(int(s), int(i)): int(a) for s, i, a in zip(cand.slot, cand.item, cand.arrival)}
    # 7 arrived with a (its rank 1), before b's items: a's list comes first
    assert arrival[(0, 5)] < arrival[(0, 7)] < arrival[(0, 2)]


def test_pair_normal_is_a_function_of_the_pair_and_standard_normal():
    r, i = np.arange(200_000) // 400, np.arange(200_000) % 400
    z = pair_normal(3, r, i)
    assert np.array_equal(z[::7], pair_normal(3, r[::7], i[::7]))  # independent of what else is drawn
    assert not np.array_equal(z, pair_normal(4, r, i))
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1) < 0.01
    assert abs(np.corrcoef(z[:-1], z[1:])[0, 1]) < 0.01


def test_paired_standard_error_against_a_hand_computation():
    t = np.array([1.0, 2.0, 4.0, 3.0])
    c = np.array([1.0, 1.0, 2.0, 2.0])
    out = paired_lift(t, c)
    # d = [0, 1, 2, 1]: mean 1, sample var ((1)+0+1+0)/3 = 2/3, SE = sqrt(2/3 / 4)
    assert out["diff"] == pytest.approx(1.0)
    assert out["diff_se"] == pytest.approx(np.sqrt(2 / 3 / 4))
    assert out["diff_ci95"] == pytest.approx([1 - Z95 * np.sqrt(1 / 6), 1 + Z95 * np.sqrt(1 / 6)])
    # ratio R = 2.5 / 1.5; residuals t - R c = [-2/3, 1/3, 2/3, -1/3], sample var = 10/27
    assert out["lift"] == pytest.approx(2.5 / 1.5 - 1)
    assert out["lift_se"] == pytest.approx(np.sqrt(10 / 27 / 4) / 1.5)
    with pytest.raises(ValueError, match="aligned"):
        paired_lift(t, c[:3])


def test_clustered_standard_error_against_a_hand_computation():
    t = np.array([1.0, 2.0, 4.0, 3.0])
    c = np.array([1.0, 1.0, 2.0, 2.0])
    users = np.array([7, 7, 3, 9])  # the first two requests are one user's
    out = paired_lift(t, c, users)
    # d - mean(d) = [-1, 0, 1, 0]; per-user sums: 7 -> -1, 3 -> 1, 9 -> 0; G = 3
    # SE = sqrt(G / (G - 1) * (1 + 1 + 0)) / n = sqrt(3) / 4
    assert out["diff"] == pytest.approx(1.0)
    assert out["diff_se"] == pytest.approx(np.sqrt(3) / 4)
    # t - R c = [-2/3, 1/3, 2/3, -1/3]; per-user sums -1/3, 2/3, -1/3: sum of squares 2/3
    # lift SE = sqrt(3/2 * 2/3) / 4 / mean(c) = (1/4) / 1.5 = 1/6; z = (2/3) / (1/6) = 4
    assert out["lift_se"] == pytest.approx(1 / 6)
    assert out["p"] == pytest.approx(6.334248366623996e-05, rel=1e-9)  # erfc(4 / sqrt(2))
    # one request per user: the unclustered formula
    assert clustered_se(t - c - 1, np.arange(4)) == pytest.approx(np.sqrt(2 / 3 / 4))
    assert paired_lift(t, c, np.arange(4))["lift_se"] == pytest.approx(paired_lift(t, c)["lift_se"])


def test_holm_steps_down_and_stops_at_the_first_failure():
    # m = 4: d 0.005 <= 0.05/4, a 0.015 <= 0.05/3 (Bonferroni's 0.0125 would refuse it), c 0.03 > 0.05/2: stop,
    # so b (0.04, below 0.05 uncorrected) is not significant either
    got = holm({"a": 0.015, "b": 0.04, "c": 0.03, "d": 0.005})
    assert got == {"a": True, "b": False, "c": False, "d": True}
    assert holm({"a": float("nan"), "b": 0.001}) == {"a": False, "b": True}  # 0.001 <= 0.05 / 2


def test_max_requests_is_a_seeded_random_sample_of_the_split(oracle, sim_data_dir):
    log = oracle.log
    split = np.flatnonzero((log.requests["split"] == "test").to_numpy())
    args = ArenaArguments(data_dir=str(sim_data_dir), max_requests=30, seed=5)
    rows = split_rows(args, log)
    expected = np.sort(np.random.default_rng(5).choice(split, size=30, replace=False))
    assert np.array_equal(rows, expected) and not np.array_equal(rows, split[:30])
    assert np.array_equal(rows, split_rows(args, log))  # the same seed, the same sample
    assert not np.array_equal(
        rows, split_rows(ArenaArguments(data_dir=str(sim_data_dir), max_requests=30), log)
    )
    assert np.array_equal(split_rows(ArenaArguments(data_dir=str(sim_data_dir)), log), split)  # 0 = all


def test_fixed_budget_takes_the_added_quota_pro_rata():
    assert fixed_budget_quotas({"a": 30, "b": 10}, 8) == {"a": 24, "b": 8}
    q = fixed_budget_quotas({"a": 7, "b": 5, "c": 3}, 4)
    assert sum(q.values()) == 11 and all(v >= 1 for v in q.values())
    arms = build_arms({"logged": 40}, {"bm25": 10}, "fixed_budget")
    assert arms[1].quotas == {"logged": 30, "bm25": 10}
    assert build_arms({"logged": 40}, {"bm25": 10}, "supplement")[1].quotas == {"logged": 40, "bm25": 10}


class EmptyChannel(Channel):
    name = "empty"

    def recall(self, batch, quota):
        return [np.empty(0, dtype=np.int64) for _ in range(len(batch))]


def test_a_channel_that_returns_nothing_leaves_treatment_equal_to_control(oracle, sim_data_dir):
    args = ArenaArguments(data_dir=str(sim_data_dir), channels=["bm25:20"], budget_modes=["supplement"])
    channels = {"logged": build_channels(ArenaArguments(data_dir=str(sim_data_dir), channels=[]), oracle)["logged"],
                "bm25": EmptyChannel()}  # fmt: skip
    res = play_arena(args, oracle, channels)["stages"]["legacy"]["supplement"]
    lifts = res["arms"]["+bm25"]["lifts"]
    for fig, lift in lifts.items():
        assert lift["treatment"] == lift["control"], fig  # to the last digit
        assert lift["diff"] == 0.0 and lift["diff_se"] == 0.0 and lift["lift"] == 0.0
    assert res["arms"]["+bm25"]["shares"]["any"] == {"exposures": 0.0, "clicks": 0.0, "purchases": 0.0}


def test_common_random_numbers_make_arms_differ_only_by_their_candidates(oracle, test_batch):
    stage = legacy_ranking_stage(oracle, seed=0)
    rows = test_batch.rows[:50]
    items = np.arange(40)
    # the same pairs score the same, whatever else is in the candidate set or in which order
    a = stage(np.repeat(rows, 40), np.tile(items, 50))
    b = stage(np.repeat(rows, 40)[::-1], np.tile(items, 50)[::-1])[::-1]
    assert np.array_equal(a, b)
    n_exposed = np.full(50, 10)
    bits = {"x": 0, "y": 1}
    lists = [np.arange(20) for _ in rows]
    one = play(merge({"x": lists}, {"x": 20}, bits), rows, n_exposed, oracle, stage, bits)
    both = play(merge({"x": lists, "y": [x[::-1] for x in lists]}, {"x": 20, "y": 20}, bits), rows, n_exposed,
                oracle, stage, bits)  # fmt: skip
    for m in ("clicks", "purchases", "gmv", "relevance"):
        assert np.array_equal(one.per_request[m], both.per_request[m])  # same candidate set, same outcome
    assert both.by_channel["y"]["only"]["exposures"] == 0 and both.by_channel["y"]["any"]["exposures"] == 500


def test_exposed_figures_are_the_oracle_expectations_of_the_top_n(oracle, test_batch):
    stage = legacy_ranking_stage(oracle, seed=0)
    rows = test_batch.rows[:3]
    lists = [np.array([4, 9, 1, 30, 7]), np.array([2, 3]), np.array([11, 12, 13])]
    out = play(merge({"x": lists}, {"x": 5}, {"x": 0}), rows, np.array([3, 3, 1]), oracle, stage, {"x": 0})
    for b, (r, items) in enumerate(zip(rows, lists)):
        scores = stage(np.full(len(items), r), items)
        top = items[np.argsort(-scores, kind="stable")][: [3, 3, 1][b]]
        p = oracle.probabilities(np.full(len(top), r), top, np.arange(len(top)))
        assert out.per_request["clicks"][b] == pytest.approx(p.click.sum(), rel=1e-12)
        assert out.per_request["gmv"][b] == pytest.approx(
            (p.click * p.purchase_given_click * oracle.price[top]).sum(), rel=1e-12
        )
        assert out.per_request["exposures"][b] == len(top)


@pytest.mark.parametrize("mode", ["supplement", "fixed_budget"])
def test_the_oracle_arm_beats_control_on_every_figure(oracle, sim_data_dir, mode):
    args = ArenaArguments(data_dir=str(sim_data_dir), channels=["oracle:16"], budget_modes=[mode])
    results = play_arena(args, oracle, build_channels(args, oracle))
    arm = results["stages"]["legacy"][mode]["arms"]["+oracle"]
    for fig, lift in arm["lifts"].items():
        assert lift["lift"] > 0 and lift["lift_ci95"][0] > 0, fig
    assert arm["shares"]["any"]["purchases"] > arm["shares"]["any"]["exposures"]  # it brings what sells


def test_a_fixed_budget_arm_gets_exactly_the_controls_count_per_request():
    # control a:4 brings 3 items for request 0 (under its quota) and 4 for request 1: budget [3, 4].
    # The fixed-budget arm takes a:2 + b:2; entries are taken in the order of (rank + 1) / quota, ties by
    # channel order. Request 0: a1 (.5), b5 (.5), a2 (1), b6 (1), a3 (1.5) -> the first 3 items {1, 5, 2}
    # (the quotas alone would give 4). Request 1: a1, b2, a2 (repeat), b7, a3 (1.5), a4 (2) -> {1, 2, 7, 3}:
    # the quotas alone give {1, 2, 7}, one short, so a's next item tops it up.
    recalled = {
        "a": [np.array([1, 2, 3]), np.array([1, 2, 3, 4])],
        "b": [np.array([5, 6]), np.array([2, 7])],
    }
    bits = {"a": 0, "b": 1}
    control = merge(recalled, {"a": 4}, bits)
    budget = np.bincount(control.slot, minlength=2)
    assert budget.tolist() == [3, 4]
    assert np.bincount(merge(recalled, {"a": 2, "b": 2}, bits).slot).tolist() == [4, 3]  # without the budget
    arm = merge(recalled, {"a": 2, "b": 2}, bits, budget)
    got = {(int(s), int(i)): int(m) for s, i, m in zip(arm.slot, arm.item, arm.sources)}
    assert got == {
        (0, 1): 0b01,
        (0, 5): 0b10,
        (0, 2): 0b01,
        (1, 1): 0b01,
        (1, 2): 0b11,
        (1, 7): 0b10,
        (1, 3): 0b01,
    }
    # the control under its own budget is itself
    same = merge(recalled, {"a": 4}, bits, budget)
    assert np.array_equal(same.item, control.item) and np.array_equal(same.sources, control.sources)


class ShortLogged(Channel):
    """Hand-built control channel: 5 items (rows 0..4) for even slots, 3 for odd ones, whatever the quota."""

    name = "logged"

    def recall(self, batch, quota):
        return [np.arange(5 if i % 2 == 0 else 3, dtype=np.int64)[:quota] for i in range(len(batch))]


class Shifted(Channel):
    """Hand-built added channel: rows 10, 11, ... up to its quota."""

    name = "bm25"

    def recall(self, batch, quota):
        return [np.arange(10, 10 + quota, dtype=np.int64) for _ in range(len(batch))]


def test_arena_reports_every_arms_candidates_and_fixes_the_budget(oracle, sim_data_dir):
    # control logged:8 delivers 5 / 3 items (mean 4); +bm25:4 in fixed_budget gets logged:4 + bm25:4 = up to 8
    # by quota, cut to 5 / 3 per request; in supplement it brings 5 + 4 / 3 + 4 (mean 8)
    args = ArenaArguments(
        data_dir=str(sim_data_dir), control=["logged:8"], channels=["bm25:4"], max_requests=40
    )
    item_ids = oracle.log.items["item_id"].to_numpy()

    class ById(Channel):
        def __init__(self, inner):
            self.inner = inner

        def recall(self, batch, quota):
            return [item_ids[r] for r in self.inner.recall(batch, quota)]

    results = play_arena(args, oracle, {"logged": ById(ShortLogged()), "bm25": ById(Shifted())})
    fixed, supplement = (results["stages"]["legacy"][m] for m in ("fixed_budget", "supplement"))
    assert fixed["control_mean_candidates"] == supplement["control_mean_candidates"] == 4.0
    assert fixed["arms"]["+bm25"]["mean_candidates"] == 4.0
    assert supplement["arms"]["+bm25"]["mean_candidates"] == 8.0
    assert results["num_requests"] == 40 and results["sample"] == "random"
    # the comparisons are named before play and corrected together: 2 modes x 1 arm x 5 figures
    assert results["comparisons"]["method"] == "holm" and len(results["comparisons"]["family"]) == 10
    assert "legacy/fixed_budget/+bm25/ctr" in results["comparisons"]["family"]
    md = render_arena_section(results)
    assert "| arm | cand |" in md and "| +bm25 | 4.0 |" in md and "| +bm25 | 8.0 |" in md
    assert "Holm's correction over the 10 comparisons" in md
    significant = len(results["comparisons"]["significant"])
    assert f"Significant of named, by view: leading view: {significant} of 10." in md


def test_a_channel_that_returns_nothing_leaves_a_fixed_budget_arm_equal_to_control(oracle, sim_data_dir):
    args = ArenaArguments(data_dir=str(sim_data_dir), channels=["bm25:20"], budget_modes=["fixed_budget"])
    channels = {"logged": build_channels(ArenaArguments(data_dir=str(sim_data_dir), channels=[]), oracle)["logged"],
                "bm25": EmptyChannel()}  # fmt: skip
    res = play_arena(args, oracle, channels)["stages"]["legacy"]["fixed_budget"]
    # logged:28 by quota, topped up to the control's own count from logged's list: control's candidates
    assert res["arms"]["+bm25"]["mean_candidates"] == res["control_mean_candidates"]
    for fig, lift in res["arms"]["+bm25"]["lifts"].items():
        assert lift["treatment"] == lift["control"] and lift["significant"] is False, fig
