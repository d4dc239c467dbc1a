"""Building rewards by name: built-ins, dotted paths (the README example), errors, pickling."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from reward_helpers import call

from reward_models import BUILTINS, RewardError, build_reward_funcs
from reward_models.validation import CheckedReward


def _batch(tiny_log, codebook, vocab, n_requests=6, n_sids=3):
    """A TRL-like batch over real requests: their logged SID columns, and SIDs of items they were shown."""
    req = tiny_log.requests[
        (tiny_log.requests["history"].map(len) > 0) & (tiny_log.requests["gt_category"] != "")
    ]
    imp = tiny_log.impressions.set_index("request_id")
    sids, columns = (
        [],
        {k: [] for k in ("request_id", "clicked_sids", "purchased_sids", "exposed_sids", "query_category")},
    )
    for r in req.head(n_requests).itertuples():
        shown = imp.loc[[r.request_id]]
        logged = {
            "clicked_sids": codebook.sids_of(shown["item_id"][shown["clicked"]]).tolist(),
            "purchased_sids": codebook.sids_of(shown["item_id"][shown["purchased"]]).tolist(),
            "exposed_sids": codebook.sids_of(shown["item_id"]).tolist(),
        }
        for sid in logged["exposed_sids"][:n_sids]:
            sids.append(tuple(sid))
            columns["request_id"].append(r.request_id)
            columns["query_category"].append(r.gt_category.split(" > ")[0])
            for key, value in logged.items():
                columns[key].append(value)
    return sids, columns


def test_builtins_by_short_name_with_weights(context):
    specs = [
        {"name": "sid_match"},
        {"name": "ctr", "weight": 0.5, "aggregate": "mean_top_n", "top_n": 2},
        {"name": "gmv", "weight": 0.25},
    ]
    funcs, weights = build_reward_funcs(specs, context)
    assert [f.__name__ for f in funcs] == ["sid_match", "ctr", "gmv"]
    assert weights == [1.0, 0.5, 0.25]
    assert all(isinstance(f, CheckedReward) for f in funcs)
    assert funcs[1].reward_fn.scorer.aggregate == "mean_top_n" and funcs[1].reward_fn.scorer.top_n == 2


def test_a_list_of_mappings_and_its_json_are_the_one_shape(context):
    specs = [{"name": "ctr", "weight": 0.5, "aggregate": "mean_top_n"}, {"name": "valid_sid"}]
    for shape in (specs, json.dumps(specs)):
        funcs, weights = build_reward_funcs(shape, context)
        assert [f.__name__ for f in funcs] == ["ctr", "valid_sid"] and weights == [0.5, 1.0]
        assert funcs[0].reward_fn.scorer.aggregate == "mean_top_n"


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        ("sid_match,ctr", "not valid JSON.*write a list like"),
        ({"sid_match": 1.0, "ctr": 0.5}, "must be a non-empty list of mappings"),
        ({"name": "ctr", "weight": 0.5}, "must be a non-empty list of mappings"),
        (["sid_match"], "reward spec 0 must be a mapping with a 'name'"),
        ('[{"name": "ctr"}, "valid_sid"]', "reward spec 1 must be a mapping with a 'name'"),
        ([{"name": "ctr", "kwargs": {"aggregate": "max"}}], "beside 'name'.*not under 'kwargs'"),
        ([{"name": ""}], "'name' must be a reward name"),
    ],
)
def test_other_shapes_are_clear_errors(context, specs, message):
    with pytest.raises(ValueError, match=message):
        build_reward_funcs(specs, context)


def test_a_function_as_name_from_python(context):
    funcs, weights = build_reward_funcs([{"name": scaled_length, "weight": 0.5, "scale": 3.0}], context)
    assert weights == [0.5] and funcs[0].__name__ == "scaled_length"
    assert funcs[0](prompts=["p"], completions=["c"], completion_ids=[[1, 2]]) == [6.0]


def test_a_reward_module_beside_the_config_imports_without_pythonpath(context, tmp_path, monkeypatch):
    (tmp_path / "my_house_rewards.py").write_text(
        "def constant(prompts, completions, completion_ids, value=1.0, **columns):\n"
        "    return [value] * len(completion_ids)\n"
    )
    config = tmp_path / "eg_grpo.yaml"
    config.write_text("rewards: []\n")
    spec = [{"name": "my_house_rewards:constant", "value": 0.25}]
    with pytest.raises(
        ImportError, match="cannot import module 'my_house_rewards'.*put it beside your config"
    ):
        build_reward_funcs(spec, context)
    monkeypatch.setattr("sys.argv", ["recipes/eg_grpo.py", "--config", str(config)])
    monkeypatch.setattr(
        "sys.path", list(__import__("sys").path)
    )  # the folder it adds is undone after the test
    funcs, _ = build_reward_funcs(spec, context)
    assert funcs[0](prompts=["p"], completions=["c"], completion_ids=[[1], [2]]) == [0.25, 0.25]


def test_unknown_name_lists_the_builtins(context):
    with pytest.raises(ValueError, match="unknown reward 'clickthrough'") as info:
        build_reward_funcs([{"name": "clickthrough"}], context)
    for name in BUILTINS:
        assert name in str(info.value)
    assert "package.module:Name" in str(info.value)


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        ([{"name": "ctr"}, {"name": "ctr"}], "two rewards are logged as 'ctr'"),
        ([{"name": "ctr", "weight": "high"}], "weight must be a finite number"),
        ([{"name": "ctr", "aggregat": "max"}], "reward 'ctr': bad keyword arguments"),
        ([{"weight": 1.0}], "must be a mapping with a 'name'"),
        ([], "non-empty"),
        ([{"name": "custom_reward_example:NoSuchReward"}], "has no attribute 'NoSuchReward'"),
        ([{"name": "no_such_module_xyz:Reward"}], "cannot import module 'no_such_module_xyz'"),
    ],
)
def test_bad_specs_are_clear_errors(context, specs, message):
    with pytest.raises((ValueError, ImportError, AttributeError), match=message):
        build_reward_funcs(specs, context)


def test_readme_custom_reward_by_dotted_path(context, tiny_log, rm_codebook, rm_vocab):
    funcs, weights = build_reward_funcs(
        [{"name": "custom_reward_example:BrandAffinityReward", "weight": 0.5, "min_history": 1}], context
    )
    (fn,) = funcs
    assert fn.__name__ == "brand_affinity" and weights == [0.5]
    sids, columns = _batch(tiny_log, rm_codebook, rm_vocab)
    out = call(fn, rm_vocab, sids, **columns)
    # recomputed independently from the tables
    brand = tiny_log.items.set_index("item_id")["brand"]
    history = tiny_log.requests.set_index("request_id")["history"]
    for value, sid, rid in zip(out, sids, columns["request_id"]):
        liked = set(brand[list(history[rid])])
        assert value == pytest.approx(np.mean([brand[i] in liked for i in rm_codebook.items_of(sid)]))
    assert call(fn, rm_vocab, [None], request_id=[columns["request_id"][0]]) == [-1.0]


def test_function_by_dotted_path_with_kwargs_and_log_name(context, tiny_log):
    funcs, _ = build_reward_funcs(
        [{"name": "test_reward_registry:scaled_length", "scale": 2.0, "log_name": "length2"}], context
    )
    assert funcs[0].__name__ == "length2"
    assert funcs[0](prompts=["p"], completions=["c"], completion_ids=[[1, 2, 3]]) == [6.0]
    assert pickle.loads(pickle.dumps(funcs[0]))(prompts=["p"], completions=["c"], completion_ids=[[1]]) == [
        2.0
    ]


def scaled_length(prompts, completions, completion_ids, scale=1.0, **columns):
    return [scale * len(ids) for ids in completion_ids]


def test_every_builtin_pickles_and_scores_the_same(context, tiny_log, rm_codebook, rm_vocab):
    specs = [
        {"name": name}
        for name in ("sid_match", "category_consistency", "valid_sid", "relevance", "ctr", "cvr", "gmv")
    ] + [
        {"name": "custom_objective", "item_score_fn": "custom_reward_example:click_times_relevance"},
        {"name": "custom_reward_example:BrandAffinityReward"},
    ]
    funcs, _ = build_reward_funcs(specs, context)
    assert [f.__name__ for f in funcs][-2:] == ["click_times_relevance", "brand_affinity"]
    sids, columns = _batch(tiny_log, rm_codebook, rm_vocab)
    before = [call(f, rm_vocab, sids, **columns) for f in funcs]
    clones = pickle.loads(pickle.dumps(funcs))  # as a multi-process launch would ship them
    after = [call(f, rm_vocab, sids, **columns) for f in clones]
    assert after == before
    assert [f.__name__ for f in clones] == [f.__name__ for f in funcs]
    assert all(any(v not in (None, 0.0) for v in values) for values in before)  # each reward says something


def test_checked_by_default_names_reward_and_batch(context, tiny_log, rm_codebook, rm_vocab):
    funcs, _ = build_reward_funcs([{"name": "ctr"}], context)
    sid = tuple(int(c) for c in rm_codebook.valid_sids()[0])
    with pytest.raises(RewardError, match=r"reward 'ctr' raised KeyError.*request_id \[424242\]"):
        call(funcs[0], rm_vocab, [sid], request_id=[424242])
    raw, _ = build_reward_funcs([{"name": "ctr"}], context, check=False)
    with pytest.raises(KeyError):
        call(raw[0], rm_vocab, [sid], request_id=[424242])


def test_rewards_on_the_real_rl_rows(context, tiny_log, rm_codebook, rm_tokenizer):
    """The RL rows (eg_grpo.data.rl_dataset) carry every column the built-ins read; experts score as logged."""
    from eg_grpo.data.rl_dataset import build_rl_dataset

    rows = build_rl_dataset(tiny_log, rm_codebook, context.vocab, rm_tokenizer, split="train", max_rows=16)
    batch = rows.to_dict()
    completion_ids = [ids[0] for ids in batch.pop("expert_completion_ids")]
    prompts = batch.pop("prompt")
    funcs, _ = build_reward_funcs(
        [
            {"name": "sid_match", "sources": {"purchased": 1.0, "clicked": 1.0}},
            {"name": "category_consistency"},
            {"name": "ctr"},
        ],
        context,
    )
    out = {
        f.__name__: f(
            prompts=prompts, completions=[""] * len(prompts), completion_ids=completion_ids, **batch
        )
        for f in funcs
    }
    assert out["sid_match"] == [1.0] * len(prompts)  # the first expert is a purchased or clicked SID
    assert all(v is None or 0.0 <= v <= 1.0 for v in out["category_consistency"])
    assert all(0.0 < v < 1.0 for v in out["ctr"])


def test_rl_rows_keep_the_latest_when_asked(context, tiny_log, rm_codebook, rm_tokenizer):
    from eg_grpo.data.rl_dataset import build_rl_dataset

    every = build_rl_dataset(tiny_log, rm_codebook, context.vocab, rm_tokenizer, split="train")
    latest = build_rl_dataset(
        tiny_log, rm_codebook, context.vocab, rm_tokenizer, split="train", max_rows=10, keep_rows="latest"
    )
    time_of = tiny_log.requests.set_index("request_id")["timestamp"]
    kept, rest = (
        time_of.loc[latest["request_id"]],
        time_of.loc[sorted(set(every["request_id"]) - set(latest["request_id"]))],
    )
    assert len(kept) == 10 and kept.min() >= rest.max()
    with pytest.raises(ValueError, match="keep_rows"):
        build_rl_dataset(tiny_log, rm_codebook, context.vocab, rm_tokenizer, keep_rows="newest")
