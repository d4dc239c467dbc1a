"""The optional user profile: simulated from the latent user, validated by the schema, rendered by the prompt."""

from __future__ import annotations

import pandas as pd
import pytest

from eg_grpo.data.prompts import build_prompt
from eg_grpo.data.schema import SchemaError, SearchLog, format_profile, parse_profile
from eg_grpo.data.sft_dataset import dataset_texts, request_prompts
from eg_grpo.data.simulator import SimulatorConfig, simulate
from eg_grpo.sid.tokens import sid_to_text


@pytest.fixture(scope="module")
def profiled_log() -> SearchLog:
    return simulate(SimulatorConfig.preset("tiny", user_profile=True))


def test_profile_off_by_default_and_on_changes_nothing_else(tiny_log, profiled_log):
    assert SimulatorConfig().user_profile is False
    assert "profile" not in tiny_log.requests.columns
    pd.testing.assert_frame_equal(profiled_log.requests.drop(columns=["profile"]), tiny_log.requests)
    pd.testing.assert_frame_equal(profiled_log.impressions, tiny_log.impressions)
    pd.testing.assert_frame_equal(profiled_log.items, tiny_log.items)


def test_data_record_names_the_profile_only_when_on():
    from eg_grpo.data.simulator import data_stage_record

    plain, profiled = SimulatorConfig.preset("tiny"), SimulatorConfig.preset("tiny", user_profile=True)
    assert "user_profile" not in data_stage_record(plain)["config"]["simulator"]
    assert data_stage_record(profiled)["config"]["simulator"]["user_profile"] is True
    assert data_stage_record(plain)["fingerprint"] != data_stage_record(profiled)["fingerprint"]


def test_simulated_profile_is_the_users_purchasing_power(profiled_log):
    requests = profiled_log.requests
    # one profile per user, from a closed set of tiers
    assert (requests.groupby("user_id")["profile"].nunique() == 1).all()
    assert set(requests["profile"]) <= {"power=budget", "power=mid", "power=premium"}
    assert requests["profile"].nunique() == 3
    # it is the tier the purchase model prices for: premium users buy dearer items than budget users
    bought = profiled_log.impressions[profiled_log.impressions["purchased"]]
    bought = bought.merge(requests[["request_id", "profile"]]).merge(profiled_log.items[["item_id", "price"]])
    median = bought.groupby("profile")["price"].median()
    assert median["power=premium"] > median["power=budget"]


def test_parse_and_format_profile():
    assert parse_profile("power=premium;age=25-34") == {"power": "premium", "age": "25-34"}
    assert parse_profile("") == {}
    assert format_profile({"power": "mid", "gender": "f"}) == "power=mid;gender=f"
    assert format_profile(None) == ""
    for bad in ("power", "power=a b", "power=mid;power=low", "=mid"):
        with pytest.raises(ValueError, match="profile"):
            parse_profile(bad)


def test_schema_rejects_a_malformed_profile_naming_the_column(profiled_log):
    requests = profiled_log.requests.copy()
    requests.loc[requests.index[5], "profile"] = "power premium"
    with pytest.raises(SchemaError) as err:
        SearchLog(profiled_log.items, requests, profiled_log.impressions)
    assert (err.value.table, err.value.column) == ("requests", "profile")
    assert "row 5" in str(err.value) and "key=value" in str(err.value)
    requests["profile"] = None
    with pytest.raises(SchemaError, match="missing value"):
        SearchLog(profiled_log.items, requests, profiled_log.impressions)


def test_prompt_renders_the_profile_first_and_nothing_without_one():
    plain = build_prompt("red pen", [(3, 9, 1)])
    assert build_prompt("red pen", [(3, 9, 1)], profile="power=premium;age=25-34") == (
        "user: power=premium age=25-34\nhistory: <a_3><b_9><c_1>\nquery: red pen\nsid:"
    )
    assert build_prompt("", [], profile={"power": "mid"}) == "user: power=mid\nsid:"
    for absent in (None, "", {}):
        assert build_prompt("red pen", [(3, 9, 1)], profile=absent) == plain


def test_request_prompts_without_profile_are_byte_identical(tiny_log, profiled_log, tiny_codebook):
    """Every prompt of the tiny log, rebuilt by hand in the layout used before profiles existed."""
    sid = {
        int(i): sid_to_text(c) for i, c in zip(tiny_codebook.item_ids.tolist(), tiny_codebook.codes.tolist())
    }
    requests = tiny_log.requests
    expected = []
    for query, history in zip(requests["query"], requests["history"]):
        lines = [f"history: {''.join(sid[int(i)] for i in list(history)[-10:])}"] if len(history) else []
        lines += [f"query: {' '.join(query.split())}"] if query.strip() else []
        expected.append("\n".join([*lines, "sid:"]))
    assert request_prompts(tiny_log, requests, tiny_codebook) == expected
    # the same requests with a profile: the user line, then exactly the old prompt
    with_profile = request_prompts(profiled_log, profiled_log.requests, tiny_codebook)
    profiles = profiled_log.requests["profile"].tolist()
    assert with_profile == [f"user: {p}\n{e}" for p, e in zip(profiles, expected)]
    # a profile column of empty strings is no profile
    blank = profiled_log.requests.assign(profile="")
    assert request_prompts(profiled_log, blank, tiny_codebook) == expected
    # the tiny tokenizer's texts change only when the data has profiles
    assert not any(t.startswith("user:") for t in dataset_texts(tiny_log))
    assert "user: power=mid" in dataset_texts(profiled_log)
