"""Checks that stop training on garbage rewards, naming the reward and the batch.

A reward that returns the wrong number of values, a NaN or infinity, something that is not a
number, or that raises, is a :class:`RewardError` whose message names the reward and the batch
(request ids, trainer step). ``None`` stays allowed: it is TRL's "does not apply".

Use :func:`checked` to wrap a reward (``build_reward_funcs`` does so by default), or call
:func:`validate_rewards` on values you obtained yourself.
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np


def get_callable_name(func) -> str:
    """The name a reward is logged under: its own ``__name__``, else that of the function a
    ``functools.partial`` wraps (as ``trl.trainer.utils.get_callable_name``), else its class name."""
    name = getattr(func, "__name__", None)
    while name is None and isinstance(func, functools.partial):
        func = func.func
        name = getattr(func, "__name__", None)
    return name or type(func).__name__


def is_async_callable(func) -> bool:
    """Whether calling ``func`` returns a coroutine (mirrors ``trl.trainer.utils.is_async_callable``).

    Kept local so importing the rewards does not import TRL (seconds), e.g. in the ranker recipe.
    """
    while isinstance(func, functools.partial):
        func = func.func
    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(func.__call__)


class RewardError(RuntimeError):
    """A reward function misbehaved. The message names the reward and the batch."""


def describe_batch(columns: dict[str, Any], batch_size: int, max_ids: int = 8) -> str:
    """A short human description of a batch: its size, request ids and trainer step, where known."""
    parts = [f"{batch_size} completions"]
    ids = columns.get("request_id")
    if ids is not None:
        ids = list(ids)
        distinct = list(dict.fromkeys(ids))
        shown = ", ".join(str(i) for i in distinct[:max_ids])
        parts.append(f"request_id [{shown}{', ...' if len(distinct) > max_ids else ''}]")
    state = columns.get("trainer_state")
    if state is not None and getattr(state, "global_step", None) is not None:
        parts.append(f"step {state.global_step}")
    return ", ".join(parts)


def validate_rewards(name: str, values: Any, batch_size: int, batch_info: str = "") -> list[float | None]:
    """Checks one reward function's output and returns it as ``list[float | None]``.

    Args:
        name: the reward's name, for the message.
        values: what the reward returned.
        batch_size: the number of completions it was given.
        batch_info: a description of the batch (e.g. from :func:`describe_batch`).

    Returns:
        The values as Python floats, ``None`` kept.

    Raises:
        RewardError: wrong type or length, a non-number, NaN or infinity.
    """
    where = f"reward '{name}' on batch ({batch_info or f'{batch_size} completions'})"
    if hasattr(values, "tolist") and not isinstance(values, list):  # numpy array or torch tensor
        values = values.tolist()
    if isinstance(values, str | bytes) or not isinstance(values, Sequence):
        raise RewardError(
            f"{where} returned {type(values).__name__}; it must return a list with one float per completion"
        )
    if len(values) != batch_size:
        raise RewardError(
            f"{where} returned {len(values)} values for {batch_size} completions; it must return exactly one "
            "per completion (None where it does not apply)"
        )
    if all(type(v) is float for v in values) and np.isfinite(np.asarray(values, dtype=np.float64)).all():
        return list(values)  # the common case, checked without a Python loop per value
    out: list[float | None] = []
    for i, v in enumerate(values):
        if v is None:
            out.append(None)
            continue
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise RewardError(
                f"{where} returned {v!r} ({type(v).__name__}) at position {i}; rewards are floats or None"
            )
        v = float(v)
        if not math.isfinite(v):
            raise RewardError(
                f"{where} returned {v} at position {i}; return None for 'does not apply', never NaN or infinity"
            )
        out.append(v)
    return out


class CheckedReward:
    """Wraps a reward so that every call is validated (see :func:`validate_rewards`).

    Picklable when the wrapped reward is; keeps its ``__name__`` so TRL logs it unchanged.
    """

    def __init__(self, reward_fn):
        self.reward_fn = reward_fn
        self.__name__ = get_callable_name(reward_fn)

    def __call__(self, prompts, completions, completion_ids, **columns: Any) -> list[float | None]:
        n = len(completion_ids)
        try:
            values = self.reward_fn(
                prompts=prompts, completions=completions, completion_ids=completion_ids, **columns
            )
        except Exception as exc:
            raise self._failure(exc, columns, n) from exc
        return validate_rewards(self.__name__, values, n, describe_batch(columns, n))

    def _failure(self, exc: Exception, columns: dict, n: int) -> RewardError:
        """The error to raise when the wrapped reward raised ``exc`` (a RewardError passes through)."""
        if isinstance(exc, RewardError):
            return exc
        return RewardError(
            f"reward '{self.__name__}' raised {type(exc).__name__}: {exc} on batch ({describe_batch(columns, n)})"
        )

    def __repr__(self) -> str:
        return f"checked({self.reward_fn!r})"


class CheckedAsyncReward(CheckedReward):
    """:class:`CheckedReward` for ``async`` rewards, so TRL still runs them concurrently."""

    async def __call__(self, prompts, completions, completion_ids, **columns: Any) -> list[float | None]:
        n = len(completion_ids)
        try:
            values = await self.reward_fn(
                prompts=prompts, completions=completions, completion_ids=completion_ids, **columns
            )
        except Exception as exc:
            raise self._failure(exc, columns, n) from exc
        return validate_rewards(self.__name__, values, n, describe_batch(columns, n))


def checked(reward_fn) -> CheckedReward:
    """Returns ``reward_fn`` wrapped with output validation; idempotent.

    Example:
        >>> funcs = [checked(f) for f in my_reward_funcs]
        >>> trainer = EGGRPOTrainer(model, reward_funcs=funcs, args=args, train_dataset=ds)
    """
    if isinstance(reward_fn, CheckedReward):
        return reward_fn
    if not callable(reward_fn):
        raise TypeError(f"a reward must be callable, got {type(reward_fn).__name__}")
    return CheckedAsyncReward(reward_fn) if is_async_callable(reward_fn) else CheckedReward(reward_fn)
