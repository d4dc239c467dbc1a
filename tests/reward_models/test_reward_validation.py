"""Bad rewards stop training with an error naming the reward and the batch."""

from __future__ import annotations

import asyncio
import pickle

import numpy as np
import pytest

from reward_models import RewardError, checked, validate_rewards
from reward_models.validation import CheckedAsyncReward, get_callable_name, is_async_callable


def short_reward(prompts, completions, completion_ids, **columns):
    return [1.0] * (len(completion_ids) - 1)


def nan_reward(prompts, completions, completion_ids, **columns):
    return [float("nan")] + [0.0] * (len(completion_ids) - 1)


def raising_reward(prompts, completions, completion_ids, **columns):
    raise ZeroDivisionError("boom")


def good_reward(prompts, completions, completion_ids, **columns):
    return np.arange(len(completion_ids), dtype=np.float32)  # numpy output is accepted


async def async_reward(prompts, completions, completion_ids, **columns):
    return [None] * len(completion_ids)


async def async_short_reward(prompts, completions, completion_ids, **columns):
    return []


def _batch(n=4):
    return {
        "prompts": ["p"] * n,
        "completions": ["c"] * n,
        "completion_ids": [[1, 2]] * n,
        "request_id": [101, 101, 202, 202][:n],
    }


@pytest.mark.parametrize(
    ("fn", "message"),
    [
        (
            short_reward,
            r"reward 'short_reward' .*request_id \[101, 202\].* returned 3 values for 4 completions",
        ),
        (nan_reward, r"reward 'nan_reward' .*request_id \[101, 202\].* returned nan at position 0"),
        (
            raising_reward,
            r"reward 'raising_reward' raised ZeroDivisionError: boom on batch .*request_id \[101, 202\]",
        ),
    ],
)
def test_bad_rewards_raise_naming_reward_and_batch(fn, message):
    with pytest.raises(RewardError, match=message) as info:
        checked(fn)(**_batch())
    if fn is raising_reward:
        assert isinstance(info.value.__cause__, ZeroDivisionError)


def test_good_rewards_pass_through_as_floats_and_none():
    assert checked(good_reward)(**_batch()) == [0.0, 1.0, 2.0, 3.0]
    assert validate_rewards("r", [None, 1, 2.5], 3) == [None, 1.0, 2.5]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ([float("inf")], "returned inf"),
        (["1.0"], "returned '1.0' \\(str\\)"),
        ([True], "returned True"),
        (0.5, "returned float"),
        ("x", "returned str"),
    ],
)
def test_validate_rewards_rejects_non_numbers(values, message):
    with pytest.raises(RewardError, match=f"reward 'r' on batch \\(step 7\\).*{message}"):
        validate_rewards("r", values, 1, "step 7")


def test_checked_keeps_name_is_idempotent_and_pickles():
    wrapped = checked(good_reward)
    assert wrapped.__name__ == get_callable_name(wrapped) == "good_reward"
    assert checked(wrapped) is wrapped
    clone = pickle.loads(pickle.dumps(wrapped))
    assert clone(**_batch()) == wrapped(**_batch())
    with pytest.raises(TypeError, match="must be callable"):
        checked(3)


def test_async_rewards_stay_async_and_are_checked():
    wrapped = checked(async_reward)
    assert isinstance(wrapped, CheckedAsyncReward) and is_async_callable(wrapped)
    assert asyncio.run(wrapped(**_batch())) == [None] * 4
    with pytest.raises(RewardError, match="async_short_reward.*returned 0 values for 4"):
        asyncio.run(checked(async_short_reward)(**_batch()))
