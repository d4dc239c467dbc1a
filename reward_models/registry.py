"""Building reward functions by name from a config.

A spec names a built-in by its short name (see :data:`BUILTINS`) or any reward by a dotted path
``package.module:Name`` (a class, instantiated with the spec's ``kwargs``, and with the
:class:`~reward_models.base.RewardContext` when its constructor has a ``context`` argument; or a
plain function). Accepted shapes, e.g. in YAML::

    rewards:
      - sid_match                                  # a name: weight 1.0, default kwargs
      - {name: ctr, weight: 0.5, aggregate: mean_top_n, top_n: 3}
      - {name: my_pkg.rewards:MyReward, weight: 0.2, alpha: 2.0, log_name: mine}

Keys other than ``name``, ``weight`` and ``log_name`` are the reward's keyword arguments (they may
also be nested under ``kwargs:``). Also accepted: a mapping ``{sid_match: 1.0, ctr: {weight: 0.5,
aggregate: max}}``, or either shape as a JSON string (handy on a command line).
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from reward_models.base import RewardContext
from reward_models.objectives import RankerObjective, import_object
from reward_models.rule_based import CategoryConsistencyReward, SIDMatchReward, ValidSIDReward
from reward_models.tiered import TieredLogMatchReward
from reward_models.validation import checked, is_async_callable

# short name -> (class, fixed kwargs)
BUILTINS: dict[str, tuple[type, dict]] = {
    "sid_match": (SIDMatchReward, {}),
    "tiered_log_match": (TieredLogMatchReward, {}),
    "category_consistency": (CategoryConsistencyReward, {}),
    "valid_sid": (ValidSIDReward, {}),
    "relevance": (RankerObjective, {"objective": "relevance"}),
    "ctr": (RankerObjective, {"objective": "ctr"}),
    "cvr": (RankerObjective, {"objective": "cvr"}),
    "gmv": (RankerObjective, {"objective": "gmv"}),
    "custom_objective": (RankerObjective, {"objective": "custom"}),
}
SPEC_KEYS = ("name", "weight", "kwargs", "log_name")


def _normalise(specs: Any) -> list[dict]:
    """Any accepted spec shape → a list of ``{name, weight, kwargs, log_name}`` dicts."""
    if isinstance(specs, str):
        stripped = specs.strip()
        specs = (
            json.loads(stripped) if stripped[:1] in "[{" else [s for s in stripped.split(",") if s.strip()]
        )
    if isinstance(specs, Mapping) and "name" not in specs:  # {name: weight | {weight, kwargs}}
        specs = [{"name": k, **(v if isinstance(v, Mapping) else {"weight": v})} for k, v in specs.items()]
    elif isinstance(specs, Mapping) or callable(specs):
        specs = [specs]
    if not isinstance(specs, Sequence) or not specs:
        raise ValueError(f"reward specs must be a non-empty list (or mapping) of rewards, got {specs!r}")
    out = []
    for spec in specs:
        if callable(spec):
            out.append({"name": spec, "weight": 1.0, "kwargs": {}, "log_name": None})
            continue
        if isinstance(spec, str):
            spec = {"name": spec.strip()}
        if not isinstance(spec, Mapping) or "name" not in spec:
            raise ValueError(f"a reward spec needs a 'name', got {spec!r}")
        weight = spec.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight):
            raise ValueError(f"reward {spec['name']!r}: weight must be a finite number, got {weight!r}")
        kwargs = spec.get("kwargs") or {}
        if not isinstance(kwargs, Mapping):
            raise ValueError(f"reward {spec['name']!r}: kwargs must be a mapping, got {kwargs!r}")
        # Keys beside name/weight/log_name are keyword arguments too: {name: ctr, aggregate: max}.
        kwargs = {**{k: v for k, v in spec.items() if k not in SPEC_KEYS}, **kwargs}
        out.append(
            {
                "name": spec["name"],
                "weight": float(weight),
                "kwargs": dict(kwargs),
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
    if callable(spec_name):
        fn = spec_name
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
        target = import_object(spec_name)
        if inspect.isclass(target):
            fn = _instantiate(target, spec_name, kwargs, context)
        elif callable(target):
            fn = target
            if kwargs or log_name is not None:
                fn = (AsyncBoundReward if is_async_callable(target) else BoundReward)(
                    target, kwargs, log_name
                )
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
        specs: the reward specs (see the module docstring for the accepted shapes).
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
