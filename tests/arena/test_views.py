"""Control views: one run plays the requests under several controls, recalling every channel once; each
view's figures are those of a run with that control alone, and one Holm family covers every view."""

import dataclasses
import importlib
import json

import numpy as np
import pytest

from eg_grpo.arena import ArenaArguments, render_arena_section, run
from eg_grpo.arena.channels import Channel
from eg_grpo.arena.run import build_channels, play_arena
from eg_grpo.arena.stats import ALPHA, holm

CLASSICAL = ["logged:48", "bm25:16", "item_cf:16"]


class FakeGenerative(Channel):
    """A stand-in generative channel that records every request it is asked for: the oracle's best
    items after the first ``skip`` (deterministic, so two runs recall the same lists)."""

    def __init__(self, oracle, skip: int):
        self.oracle, self.skip, self.requests = oracle, skip, []
        self.item_ids = oracle.log.items["item_id"].to_numpy()

    def recall(self, batch, quota):
        self.requests += [int(r) for r in batch.request_ids]
        best = (self.oracle.best_items(int(r), quota + self.skip)[self.skip :] for r in batch.rows)
        return [self.item_ids[rows].astype(np.int64) for rows in best]


def _args(sim_data_dir, tmp_path, **overrides) -> ArenaArguments:
    base = {
        "data_dir": str(sim_data_dir),
        "output_dir": str(tmp_path / "arena"),
        "index_dir": str(tmp_path / "index"),
        "control": CLASSICAL,
        "control_name": "classical",
        "control_views": ["legacy=logged:48"],
        "channels": ["bm25:16", "item_cf:16", "oracle:16"],
        "generative": ["a=model_a", "b=model_b"],
        "generative_quota": 16,
        "sid_dir": "sids",
        "max_requests": 60,
        "batch_size": 16,
    }
    return ArenaArguments(**{**base, **overrides})


def _play(args, oracle):
    """Plays ``args`` on the classical channels and two fresh fake generative ones; returns the results
    and the fakes (to count their calls)."""
    args.validate()
    channels = build_channels(dataclasses.replace(args, generative=[]), oracle)
    fakes = {"gen_a": FakeGenerative(oracle, 4), "gen_b": FakeGenerative(oracle, 8)}
    return play_arena(args, oracle, {**channels, **fakes}), fakes


def _without_stars(stages: dict) -> str:
    """The stages as JSON without the Holm stars (their family is the run's), NaNs comparable."""

    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k != "significant"}
        return value

    return json.dumps(strip(stages), sort_keys=True)


@pytest.fixture(scope="module")
def with_views(oracle, sim_data_dir, tmp_path_factory):
    return _play(_args(sim_data_dir, tmp_path_factory.mktemp("views")), oracle)


def test_views_recall_each_channel_once_and_equal_runs_with_one_control(
    with_views, oracle, sim_data_dir, tmp_path
):
    results, fakes = with_views
    # each generative channel was asked once per request, though two views play it
    for fake in fakes.values():
        assert len(fake.requests) == len(set(fake.requests)) == results["num_requests"] == 60
    assert results["leading_view"] == {"name": "classical", "control": CLASSICAL}
    assert [(v["name"], v["control"]) for v in results["control_views"]] == [("legacy", ["logged:48"])]
    # the leading view: + oracle and + each generative channel; the legacy view: + every added channel
    assert set(results["stages"]["legacy"]["supplement"]["arms"]) == {"+oracle", "+gen_a", "+gen_b"}
    legacy_view = results["control_views"][0]["stages"]
    assert set(legacy_view["legacy"]["fixed_budget"]["arms"]) == {
        "+bm25",
        "+item_cf",
        "+oracle",
        "+gen_a",
        "+gen_b",
    }
    # a run with each control alone, on the same requests: the same figures to the last digit
    alone = {
        "classical": _args(sim_data_dir, tmp_path, control_views=[], channels=["oracle:16"]),
        "legacy": _args(
            sim_data_dir, tmp_path, control=["logged:48"], control_name="legacy", control_views=[]
        ),
    }
    single = {name: _play(args, oracle)[0] for name, args in alone.items()}
    assert _without_stars(results["stages"]) == _without_stars(single["classical"]["stages"])
    assert _without_stars(legacy_view) == _without_stars(single["legacy"]["stages"])
    assert single["legacy"]["control_views"] == []
    for name, channel in single["legacy"]["channels"].items():
        for key in ("quota", "mean_items", "recall_of_logged_clicks"):
            assert results["channels"][name][key] == channel[key], (name, key)


def test_fixed_budget_arms_get_their_own_views_control_count(oracle, sim_data_dir, tmp_path, monkeypatch):
    views = importlib.import_module("eg_grpo.arena.views")
    merge, calls = views.merge, []

    def recording(recalled, quotas, bits, budget=None):
        candidates = merge(recalled, quotas, bits, budget)
        count = np.bincount(candidates.slot, minlength=len(next(iter(recalled.values()))))
        calls.append((list(quotas), budget, count))
        return candidates

    monkeypatch.setattr(views, "merge", recording)
    results, _ = _play(_args(sim_data_dir, tmp_path, budget_modes=["fixed_budget"]), oracle)
    # per view: its control (no budget), then its arms, each held to that control's count request by request
    assert [(q, b is None) for q, b, _ in calls] == [
        (["logged", "bm25", "item_cf"], True),
        *[(["logged", "bm25", "item_cf", added], False) for added in ("oracle", "gen_a", "gen_b")],
        (["logged"], True),
        *[(["logged", added], False) for added in ("bm25", "item_cf", "oracle", "gen_a", "gen_b")],
    ]
    controls = [count for _, budget, count in calls if budget is None]
    assert (
        controls[0].mean() > controls[1].mean()
    )  # the classical stack brings more than the legacy retrieval
    budget = None
    for _, given, count in calls:
        if given is None:
            budget = count
        else:
            assert np.array_equal(given, budget) and np.array_equal(count, budget)
    for out in (results["stages"]["legacy"]["fixed_budget"],
                results["control_views"][0]["stages"]["legacy"]["fixed_budget"]):  # fmt: skip
        for arm in out["arms"].values():
            assert arm["mean_candidates"] == pytest.approx(out["control_mean_candidates"], abs=1e-12)
    assert results["stages"]["legacy"]["fixed_budget"]["control_mean_candidates"] == pytest.approx(
        controls[0].mean()
    )


def test_one_holm_family_covers_every_view(with_views):
    results, _ = with_views
    comparisons = results["comparisons"]
    family = comparisons["family"]
    # per view: 2 budget modes x (its arms x 5 figures + 1 later generative arm vs the first x 5 figures)
    assert len(family) == len(set(family)) == 2 * (3 * 5 + 5) + 2 * (5 * 5 + 5)
    assert "legacy/fixed_budget/+oracle/ctr" in family and "legacy:legacy/fixed_budget/+bm25/ctr" in family
    assert "legacy:legacy/supplement/+gen_b vs +gen_a/gmv" in family
    lifts = {}
    for prefix, stages in (
        ("", results["stages"]),
        ("legacy:", results["control_views"][0]["stages"]),
    ):
        for stage, modes in stages.items():
            for mode, out in modes.items():
                for arm, res in out["arms"].items():
                    lifts |= {f"{prefix}{stage}/{mode}/{arm}/{f}": v for f, v in res["lifts"].items()}
                for arm, figs in out["versus_first_generative"]["arms"].items():
                    lifts |= {f"{prefix}{stage}/{mode}/{arm} vs +gen_a/{f}": v for f, v in figs.items()}
    assert set(lifts) == set(family)
    # the stars are Holm's over the whole family, not over each view's part
    expected = holm({name: lifts[name]["p"] for name in family}, ALPHA)
    assert all(lifts[name]["significant"] == expected[name] for name in family)
    assert comparisons["num_significant"] == sum(expected.values())
    assert comparisons["significant"] == [name for name in family if expected[name]]
    # the report counts them per view instead of listing the family
    per_view = {"": 0, "legacy:": 0}
    for name in comparisons["significant"]:
        per_view["legacy:" if name.startswith("legacy:") else ""] += 1
    section = render_arena_section(results)
    assert (f"Significant of named, by view: leading view: {per_view['']} of 40; "
            f"legacy: {per_view['legacy:']} of 60.") in section  # fmt: skip
    assert "`legacy/fixed_budget/+oracle/ctr`" not in section


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"control_views": ["legacy"]}, "control_views entry 'legacy' must be name=channel:quota"),
        ({"control_views": ["legacy="]}, "must be name=channel:quota"),
        ({"control_views": ["9 lives=logged:48"]}, "must be name=channel:quota"),
        ({"control_views": ["legacy=logged"]}, "control view 'legacy' entry 'logged' must be name:quota"),
        ({"control_views": ["legacy=logged:48+bm42:10"]}, "unknown channel 'bm42'"),
        ({"control_views": ["legacy=logged:48+oracle:16"]}, "ceiling.*'legacy'"),
        ({"control_views": ["classical=logged:48"]}, "'classical' is named twice"),
        ({"control_views": ["legacy=logged:48", "legacy=logged:48+bm25:16"]}, "'legacy' is named twice"),
        ({"control_views": ["legacy=logged:40"]}, "'logged' has quota 40 in control view 'legacy' but 48"),
        ({"control_views": ["legacy=logged:48+bm25:16+item_cf:16"], "channels": ["bm25:16", "item_cf:16"],
          "generative": []}, r"\['bm25', 'item_cf'\] are in every control view's control"),
        ({"control_views": ["full=logged:48+bm25:16+item_cf:16+dense:8"], "channels": ["bm25:16", "item_cf:16"],
          "control": ["logged:48"], "generative": []}, r"control view\(s\) \['full'\] .* no arm"),
        ({"control_views": ["small=dense:16"]}, "fewer than one slot .* the `small` control's 16"),
        ({"control_name": "two words"}, "control_name 'two words' must be letters"),
    ],
)  # fmt: skip
def test_bad_control_views_give_clear_errors(sim_data_dir, tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        run(_args(sim_data_dir, tmp_path, **overrides))
    assert not (tmp_path / "arena").exists()


def test_the_command_line_and_the_chain_config_name_the_views(parse_recipe, sim_data_dir, tmp_path):
    from recipes.arena import ArenaArguments as RecipeArguments

    (args,) = parse_recipe(
        (RecipeArguments,),
        ["--config", "recipes/configs/demo/arena_chain.yaml", "--generative", "sft=outputs/demo/sft",
         "rl=outputs/demo/eg_grpo"],
    )  # fmt: skip
    lead, legacy = args.views()
    assert (lead.name, legacy.name) == ("classical", "legacy")
    assert lead.control == {"logged": 48, "bm25": 24, "dense": 24, "item_cf": 24}
    assert list(lead.added) == ["oracle", "gen_sft", "gen_rl"]
    assert legacy.control == {"logged": 48}
    assert list(legacy.added) == ["bm25", "dense", "item_cf", "oracle", "gen_sft", "gen_rl"]
    args.validate()
    (cli,) = parse_recipe(
        (RecipeArguments,),
        ["--config", "recipes/configs/tiny/arena.yaml", "--control_views", "legacy=logged:24", "two=logged:48+bm25:24"],
    )  # fmt: skip
    assert cli.control_views == ["legacy=logged:24", "two=logged:48+bm25:24"]
    assert [v.control for v in cli.views()[1:]] == [{"logged": 24}, {"logged": 48, "bm25": 24}]


def test_the_report_leads_with_the_first_view_and_titles_each_control(sim_data_dir, tmp_path):
    from eg_grpo.arena.run import arena_stage_record
    from eg_grpo.report import write_report

    args = _args(sim_data_dir, tmp_path, generative=[], channels=["bm25:16", "item_cf:16", "oracle:16"],
                 budget_modes=["supplement"], max_requests=40)  # fmt: skip
    out = run(args)
    md = (out / "arena.md").read_text()
    lead = md.index("## Lifts over control `classical` (logged:48 + bm25:16 + item_cf:16)")
    assert lead < md.index("## Lifts over control `legacy` (logged:48)")
    assert "Each arm adds one channel to this control: `+oracle`." in md
    assert "Significant of named, by view: leading view: " in md and "; legacy: " in md
    for name in ("arena_lifts.png", "arena_shares.png", "arena_lifts_legacy.png", "arena_shares_legacy.png"):
        assert (out / name).stat().st_size > 0
    results = json.loads((out / "arena_results.json").read_text())
    # from the JSON too (its objects' keys are sorted): the controls in their configured order
    assert "### Lifts over control `classical` (logged:48 + bm25:16 + item_cf:16)" in render_arena_section(
        results
    )
    report = write_report(
        tmp_path / "chain", sid_dir=tmp_path / "none", rl_dirs=[], eval_dirs=[], arena_dir=out
    )
    text = report.read_text()
    assert (
        text.index("control `classical`") < text.index("control `legacy`")
        and "arena_lifts_legacy.png" in text
    )
    # the views' options at their defaults leave the stage record as it was before them
    plain = arena_stage_record(_args(sim_data_dir, tmp_path, control_name="main", control_views=[], generative=[],
                                     channels=["oracle:16"]))  # fmt: skip
    assert "control_views" not in plain["config"] and "control_name" not in plain["config"]
    assert arena_stage_record(args)["config"]["control_views"] == ["legacy=logged:48"]


def test_the_report_counts_each_comparison_under_its_own_view():
    from eg_grpo.arena.report import _family_counts

    family = ["legacy/supplement/+gen_a:b/ctr", "legacy/supplement/+gen_a:b vs +gen_sft/gmv",
              "legacy:learned/fixed_budget/+bm25/ctr"]  # fmt: skip
    counts = _family_counts({"family": family, "significant": family[:1]})
    assert counts == "Significant of named, by view: leading view: 1 of 2; legacy: 0 of 1."
