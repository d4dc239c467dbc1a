import dataclasses
import importlib
import json

import numpy as np
import pandas as pd
import pytest

from eg_grpo.arena import ArenaArguments, render_arena_section, run
from eg_grpo.arena.config import fixed_budget_quotas, parse_quotas


def _args(data_dir, tmp_path, **overrides):
    base = {
        "data_dir": str(data_dir),
        "output_dir": str(tmp_path / "arena"),
        "channels": ["bm25:16", "oracle:16"],
    }
    return ArenaArguments(**{**base, **overrides})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"channels": ["bm42:10"]}, "unknown channel 'bm42'"),
        ({"channels": ["bm25:0"]}, "quota of 'bm25' must be >= 1"),
        ({"channels": ["bm25:-3"]}, "quota of 'bm25' must be >= 1"),
        ({"channels": ["bm25"]}, "must be name:quota"),
        ({"control": ["logged:10", "logged:20"]}, "appears twice"),
        ({"control": ["oracle:10"]}, "ceiling"),
        ({"channels": ["logged:10"]}, "both in control and added"),
        ({"channels": ["bm25:48"]}, "fewer than one slot .* control's 48"),
        # 3 - 2 = 1 slot for two control channels that keep one each: 4 candidates against a budget of 3
        (
            {"control": ["logged:2", "dense:1"], "channels": ["bm25:2"]},
            "fewer than one slot for each of the 2",
        ),
        ({"generative": ["sft"]}, "must be name=model_dir"),
        ({"generative": ["sft=x"]}, "need sid_dir"),
        ({"generative": ["sft=x,"]}, "need sid_dir"),
        ({"generative": ["sft=x"], "sid_dir": "s", "generative_quota": 0}, "generative_quota must be >= 1"),
        ({"ranking_stages": ["neural"]}, "ranking_stages must be"),
        ({"ranking_stages": ["learned"]}, "needs ranker_dir"),
        ({"budget_modes": []}, "budget_modes must be"),
        ({"beam": 0}, "beam must be >= 1"),
    ],
)
def test_bad_configs_give_clear_errors(sim_data_dir, tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        run(_args(sim_data_dir, tmp_path, **overrides))
    assert not (tmp_path / "arena").exists()


def test_missing_folders_give_clear_errors(sim_data_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="make_data.py"):
        run(_args(tmp_path / "nowhere", tmp_path))
    with pytest.raises(FileNotFoundError, match="train_ranker.py"):
        run(_args(sim_data_dir, tmp_path, ranking_stages=["learned"], ranker_dir=str(tmp_path / "none")))
    with pytest.raises(FileNotFoundError, match="holds no model"):
        run(
            _args(sim_data_dir, tmp_path, generative=["sft=" + str(tmp_path / "none")], sid_dir=str(tmp_path))
        )


def _nothing_may_be_loaded(monkeypatch):
    """Makes loading the log or building a channel fail the test: inputs are checked before either."""
    arena_run = importlib.import_module("eg_grpo.arena.run")  # the package exports `run`, the function

    def loaded(*args, **kwargs):
        raise AssertionError("the arena loaded data before refusing a bad input")

    monkeypatch.setattr(arena_run.SearchLog, "load", loaded)
    monkeypatch.setattr(arena_run, "build_channels", loaded)


def test_a_misspelt_split_is_one_line_and_exit_2_naming_the_splits(
    sim_data_dir, tmp_path, monkeypatch, capsys
):
    from eg_grpo.cli import run_recipe
    from recipes.arena import main

    _nothing_may_be_loaded(monkeypatch)
    argv = ["--config", "recipes/configs/tiny/arena.yaml", "--data_dir", str(sim_data_dir), "--output_dir",
            str(tmp_path / "arena"), "--split", "tset"]  # fmt: skip
    assert run_recipe("arena", main, argv=argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown split 'tset'" in err, err
    assert all(f"'{split}'" in err for split in ("train", "rl", "valid", "test")), err
    assert not (tmp_path / "arena").exists()


def test_missing_inputs_are_refused_before_anything_is_loaded(
    sim_data_dir, tiny_sft_dir, tiny_sid_dir, tmp_path, monkeypatch
):
    _nothing_may_be_loaded(monkeypatch)
    nowhere = str(tmp_path / "nowhere")
    cases = [
        ({"generative": [f"sft={nowhere}"], "sid_dir": str(tiny_sid_dir)}, "'sft': .*holds no model"),
        ({"generative": [f"sft={tiny_sft_dir}", f"late={nowhere}"], "sid_dir": str(tiny_sid_dir)},
         "'late': .*holds no model"),
        ({"generative": [f"sft={tiny_sft_dir},{nowhere}"]}, "SID folder .*nowhere not found"),
        ({"ranking_stages": ["learned"], "ranker_dir": nowhere}, "holds no ranker.pkl.*train_ranker.py"),
        ({"channels": ["dense:16"], "dense_encoder": nowhere + ".npz"}, "no such lookup table"),
    ]  # fmt: skip
    for overrides, message in cases:
        with pytest.raises(FileNotFoundError, match=message):
            run(_args(sim_data_dir, tmp_path, **overrides))
    assert not (tmp_path / "arena").exists() and not (tmp_path / "arena_index").exists()


def test_batch_size_is_not_part_of_the_fingerprint(sim_data_dir, tmp_path, capsys):
    from eg_grpo.arena.run import arena_stage_record

    small = _args(sim_data_dir, tmp_path, max_requests=20, budget_modes=["supplement"], batch_size=8)
    large = dataclasses.replace(small, batch_size=64)
    assert arena_stage_record(small)["fingerprint"] == arena_stage_record(large)["fingerprint"]
    assert "batch_size" not in arena_stage_record(small)["config"]
    # a setting that changes the figures still changes it
    assert (
        arena_stage_record(dataclasses.replace(small, seed=1))["fingerprint"]
        != arena_stage_record(small)["fingerprint"]
    )
    run(small)
    capsys.readouterr()
    run(large)  # only the latency would differ: nothing to redo
    assert "is up to date; nothing to do" in capsys.readouterr().out


def test_parse_quotas_keeps_the_order():
    assert list(parse_quotas(["b:2", "a:1"], "x").items()) == [("b", 2), ("a", 1)]


def test_fixed_budget_quotas_keep_the_controls_total_or_refuse():
    # 48 - 24 = 24 slots shared 30:18 -> 15 and 9 (exact); 20 left for 30:18 -> 12.5 and 7.5, rounded to 13 + 7
    assert fixed_budget_quotas({"logged": 30, "dense": 18}, 24) == {"logged": 15, "dense": 9}
    assert sum(fixed_budget_quotas({"logged": 30, "dense": 18}, 28).values()) + 28 == 48
    with pytest.raises(ValueError, match="budget would be exceeded"):
        fixed_budget_quotas({"logged": 2, "dense": 1}, 2)  # 1 slot for 2 channels that keep one each


def test_the_tiny_recipe_writes_results_report_and_figures(
    parse_recipe, sim_data_dir, tiny_sft_dir, tiny_sid_dir, lookup_encoder, tmp_path
):
    from recipes.arena import ArenaArguments as RecipeArguments
    from recipes.arena import main

    out = tmp_path / "arena"
    (args,) = parse_recipe(
        (RecipeArguments,),
        ["--config", "recipes/configs/tiny/arena.yaml", "--data_dir", sim_data_dir, "--output_dir", out,
         "--dense_encoder", lookup_encoder, "--max_requests", 60, "--generative", f"sft={tiny_sft_dir}",
         f"own_sids={tiny_sft_dir},{tiny_sid_dir}", "--sid_dir", tiny_sid_dir, "--beam", 4, "--device", "cpu",
         "--per_request", "true"],
    )  # fmt: skip
    assert args.channels == ["bm25:24", "dense:24", "item_cf:24", "oracle:24"]  # from the YAML
    assert main(args) == out
    results = json.loads((out / "arena_results.json").read_text())
    assert results["simulated"] is True and results["num_requests"] == 60
    assert set(results["channels"]) == {
        "logged",
        "bm25",
        "dense",
        "item_cf",
        "oracle",
        "gen_sft",
        "gen_own_sids",
    }
    arms = results["stages"]["legacy"]["supplement"]["arms"]
    assert set(arms) == {"+bm25", "+dense", "+item_cf", "+oracle", "+gen_sft", "+gen_own_sids"}
    # the same model and SIDs named twice: the same arm to the last digit, and a paired lift of 0
    assert arms["+gen_sft"]["lifts"] == arms["+gen_own_sids"]["lifts"]
    versus = results["stages"]["legacy"]["supplement"]["versus_first_generative"]
    assert versus["baseline"] == "+gen_sft"
    assert all(v["diff"] == 0 and v["diff_se"] == 0 for v in versus["arms"]["+gen_own_sids"].values())
    assert set(results["stages"]["legacy"]) == {"supplement", "fixed_budget"}
    # supplement: the added channel's 24 come on top of the control's candidates (fewer where they repeat them)
    control_mean = results["stages"]["legacy"]["supplement"]["control_mean_candidates"]
    for arm in arms.values():
        assert arm["quotas"] == {"logged": 48, arm["added"]: 24}
        assert control_mean < arm["mean_candidates"] <= control_mean + 24
        assert np.isfinite(arm["lifts"]["gmv"]["lift_se"])
    # fixed_budget: the control's 48 slots shared 24 + 24, and exactly the control's candidates per request
    fixed = results["stages"]["legacy"]["fixed_budget"]
    assert fixed["control_mean_candidates"] == control_mean
    for arm in fixed["arms"].values():
        assert arm["quotas"] == {"logged": 24, arm["added"]: 24}
        assert arm["mean_candidates"] == pytest.approx(control_mean, abs=1e-12)
    # the oracle channel brings the items users want: its exposures are mostly its own, a random one's are not
    assert arms["+oracle"]["shares"]["only"]["clicks"] > arms["+bm25"]["shares"]["only"]["clicks"]
    # per_request.parquet: the leading view's figures request by request, averaging to the results' means
    frame = pd.read_parquet(out / "per_request.parquet")
    requests = pd.read_parquet(sim_data_dir / "requests.parquet").set_index("request_id")
    assert (frame["user_id"].to_numpy() == requests.loc[frame["request_id"], "user_id"].to_numpy()).all()
    # requests x ranking stages x budget modes x (control + 6 arms)
    assert len(frame) == 60 * len(results["stages"]) * 2 * 7
    for mode in ("supplement", "fixed_budget"):
        stage = results["stages"]["legacy"][mode]
        part = frame[(frame["stage"] == "legacy") & (frame["budget_mode"] == mode)]
        assert part.loc[part["arm"] == "control", "purchases"].mean() == pytest.approx(
            stage["control"]["ctcvr"], rel=1e-12
        )
        for arm, result in stage["arms"].items():
            assert part.loc[part["arm"] == arm, "gmv"].mean() == pytest.approx(
                result["lifts"]["gmv"]["treatment"], rel=1e-12
            )
    for name in ("arena.md", "arena_lifts.png", "arena_shares.png", "stage.json"):
        assert (out / name).stat().st_size > 0
    md = render_arena_section(results)
    assert md.startswith("## Search-funnel arena (simulated") and "+gen_sft" in md and "50.25" in md
    assert "against `+gen_sft`" in md
    assert (out.parent / "arena_index" / "bm25" / "stage.json").exists()


def test_learned_ranking_stage(sim_data_dir, tmp_path):
    from reward_models.ranker import RankerConfig, train_ranker

    train_ranker(RankerConfig(max_iter=200), sim_data_dir, tmp_path / "ranker")
    out = run(_args(sim_data_dir, tmp_path, ranking_stages=["legacy", "learned"], ranker_dir=str(tmp_path / "ranker"),
                    budget_modes=["supplement"], max_requests=80))  # fmt: skip
    results = json.loads((out / "arena_results.json").read_text())
    legacy, learned = (results["stages"][s]["supplement"] for s in ("legacy", "learned"))
    assert legacy["control"] != learned["control"]  # another ranker exposes other items
    assert learned["arms"]["+oracle"]["lifts"]["ctr"]["lift"] > 0
