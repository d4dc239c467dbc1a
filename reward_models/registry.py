"""Building reward functions by name from a config.

A spec names a built-in by its short name (see :data:`BUILTINS`) or any reward by a dotted path
``package.module:Name`` (a class, instantiated with the spec's keyword arguments, and with the
:class:`~reward_models.base.RewardContext` when its constructor has a ``context`` argument; or a
plain function). A module beside the ``--config`` file (or in the working directory) imports as it
is: ``my_rewards:MyReward`` finds ``my_rewards.py`` there (:mod:`eg_grpo.plugins`).

The specs are one shape: a list of mappings, in YAML::

    rewards:
      - {name: sid_match}                                 # weight 1.0, default arguments
      - {name: ctr, weight: 0.5, aggregate: mean_top_n, top_n: 3}
      - {name: my_pkg.rewards:MyReward, weight: 0.2, alpha: 2.0, log_name: mine}

or the same list as a JSON string on the command line
(``--rewards '[{"name": "sid_match"}, {"name": "ctr", "weight": 0.5}]'``). Keys other than ``name``,
``weight`` and ``log_name`` are the reward's keyword arguments. From Python, ``name`` may also be
the reward function itself.
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Callable, Mapping
from typing import Any

from eg_grpo.plugins import import_object
from reward_models.base import RewardContext
from reward_models.objectives import RankerObjective
from reward_models.rank_aware import RankAwareReward
from reward_models.rule_based import CategoryConsistencyReward, SIDMatchReward, ValidSIDReward
from reward_models.tiered import TieredLogMatchReward
from reward_models.validation import checked, is_async_callable

# short name -> (class, fixed kwargs)
BUILTINS: dict[str, tuple[type, dict]] = {
    "sid_match": (SIDMatchReward, {}),
    "tiered_log_match": (TieredLogMatchReward, {}),
    "category_consistency": (CategoryConsistencyReward, {}),
    "valid_sid": (ValidSIDReward, {}),
    "rank_aware": (RankAwareReward, {}),
    "relevance": (RankerObjective, {"objective": "relevance"}),
    "ctr": (RankerObjective, {"objective": "ctr"}),
    "cvr": (RankerObjective, {"objective": "cvr"}),
    "gmv": (RankerObjective, {"objective": "gmv"}),
    "custom_objective": (RankerObjective, {"objective": "custom"}),
}
SPEC_KEYS = ("name", "weight", "log_name")


SPEC_EXAMPLE = '[{"name": "sid_match", "weight": 1.0}, {"name": "ctr", "weight": 0.5, "aggregate": "max"}]'


def _normalise(specs: Any) -> list[dict]:
    """The spec list (or its JSON string) → a list of ``{name, weight, kwargs, log_name}`` dicts.

    Raises:
        ValueError: anything but a non-empty list of mappings with a ``name``, naming the shape to use.
    """
    if isinstance(specs, str):
        try:
            specs = json.loads(specs)
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"reward specs: not valid JSON ({exc.msg}); write a list like {SPEC_EXAMPLE}"
            ) from exc
    if not isinstance(specs, list | tuple) or not specs:
        raise ValueError(
            f"reward specs must be a non-empty list of mappings like {SPEC_EXAMPLE}, got {specs!r}"
        )
    out = []
    for i, spec in enumerate(specs):
        if not isinstance(spec, Mapping) or "name" not in spec:
            raise ValueError(
                f'reward spec {i} must be a mapping with a \'name\', like {{"name": "sid_match", "weight": 1.0}}; '
                f"got {spec!r}"
            )
        name = spec["name"]
        if not (isinstance(name, str) and name.strip()) and not callable(name):
            raise ValueError(
                f"reward spec {i}: 'name' must be a reward name, a dotted path or a function, got {name!r}"
            )
        weight = spec.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight):
            raise ValueError(f"reward {name!r}: weight must be a finite number, got {weight!r}")
        if "kwargs" in spec:
            raise ValueError(
                f'reward {name!r}: write its keyword arguments beside \'name\' ({{"name": ..., "top_n": 3}}), '
                "not under 'kwargs'"
            )
        out.append(
            {
                "name": name.strip() if isinstance(name, str) else name,
                "weight": float(weight),
                "kwargs": {k: v for k, v in spec.items() if k not in SPEC_KEYS},
                "log_name": spec.get("log_name"),
            }
        )
    return out


def _accepts(cls_or_fn, argument: str) -> bool:
    try:
        params = inspect.signature(cls_or_fn).parameters
    except (TypeError, ValueError):
        return False
    return argument in params


def build_reward(
    spec_name: Any, kwargs: dict, context: RewardContext | None, log_name: str | None = None
) -> Callable:
    """One reward function from a name (built-in or dotted path) and keyword arguments.

    Raises:
        ValueError: an unknown short name (the message lists the built-ins), or bad kwargs.
    """
    if callable(spec_name) and not inspect.isclass(spec_name):
        fn = _bind(spec_name, kwargs, log_name)
    elif spec_name in BUILTINS:
        cls, fixed = BUILTINS[spec_name]
        clash = set(fixed) & set(kwargs)
        if clash:
            raise ValueError(
                f"reward '{spec_name}' fixes {sorted(clash)}; use the matching built-in name instead"
            )
        if log_name is not None:
            kwargs = {**kwargs, "name": log_name}
        fn = _instantiate(cls, spec_name, {**fixed, **kwargs}, context)
    elif isinstance(spec_name, str) and ":" in spec_name:
        target = import_object(spec_name, "reward")
        if inspect.isclass(target):
            fn = _instantiate(target, spec_name, kwargs, context)
        elif callable(target):
            fn = _bind(target, kwargs, log_name)
        else:
            raise ValueError(f"{spec_name!r} is neither a class nor a function")
    else:
        raise ValueError(
            f"unknown reward {spec_name!r}. Built-in rewards: {', '.join(BUILTINS)}; or name your own class "
            "or function by a dotted path 'package.module:Name'"
        )
    if log_name is not None and getattr(fn, "__name__", None) != log_name:
        fn.__name__ = log_name  # an instance attribute of a reward object, never a module's function
    return fn


def _bind(fn: Callable, kwargs: dict, log_name: str | None) -> Callable:
    """A reward function as it is, or bound to its keyword arguments and logged name."""
    if not kwargs and log_name is None:
        return fn
    return (AsyncBoundReward if is_async_callable(fn) else BoundReward)(fn, kwargs, log_name)


class BoundReward:
    """A module-level reward function with fixed keyword arguments and a logged name; picklable."""

    def __init__(self, fn: Callable, kwargs: dict, name: str | None = None):
        self.fn, self.kwargs = fn, dict(kwargs)
        self.__name__ = name or fn.__name__

    def __call__(self, *args, **columns):
        return self.fn(*args, **columns, **self.kwargs)


class AsyncBoundReward(BoundReward):
    async def __call__(self, *args, **columns):
        return await self.fn(*args, **columns, **self.kwargs)


def _instantiate(cls: type, spec_name: str, kwargs: dict, context: RewardContext | None):
    if _accepts(cls, "context"):
        if context is None:
            raise ValueError(f"reward {spec_name!r} needs a RewardContext; pass one to build_reward_funcs")
        kwargs = {"context": context, **kwargs}
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ValueError(f"reward {spec_name!r}: bad keyword arguments {sorted(kwargs)}: {exc}") from exc


def build_reward_funcs(
    specs: Any, context: RewardContext | None = None, check: bool = True
) -> tuple[list[Callable], list[float]]:
    """Builds the reward functions and their weights, ready for ``GRPOTrainer(reward_funcs=...)``.

    Args:
        specs: a list of reward specs, or its JSON string (see the module docstring).
        context: what the rewards need (codebook, vocab, search log, ranker folder).
        check: wrap each reward with :func:`reward_models.validation.checked`, so a wrong length,
            NaN or exception stops training with a message naming the reward and the batch.

    Returns:
        ``(funcs, weights)``; pass ``weights`` as ``reward_weights`` in the trainer config. Each
        function's ``__name__`` is unique and is what TRL logs (``rewards/<name>/mean``).

    Raises:
        ValueError: an unknown name (listing the built-ins), a bad spec, or two rewards with the
            same logged name (set ``log_name`` on one).
    """
    funcs, weights, names = [], [], set()
    for spec in _normalise(specs):
        fn = build_reward(spec["name"], spec["kwargs"], context, spec["log_name"])
        name = getattr(fn, "__name__", type(fn).__name__)
        if name in names:
            raise ValueError(f"two rewards are logged as '{name}'; give one of them a distinct `log_name`")
        names.add(name)
        funcs.append(checked(fn) if check else fn)
        weights.append(spec["weight"])
    return funcs, weights
