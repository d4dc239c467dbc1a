"""Every stage in one shape: its arguments dataclasses and a ``run(*arguments)``, found by name.

    python -m eg_grpo.stages sft --config recipes/configs/tiny/sft.yaml --data_dir D --sid_dir S --output_dir O

is what ``python recipes/sft.py ...`` runs, without needing the ``recipes/`` folder (a non-editable
install has none). The chain (:mod:`eg_grpo.pipeline`) calls stages this way, in the user's working
directory. A stage is one :class:`Stage` entry in :data:`STAGES`; adding one (e.g. a new
evaluation) is one line here plus its module.

The table names the SFT, RL and arena stages by dotted path (``"eg_grpo.rl.stage:run"``), loaded on use,
so this package imports none of them; ``cli`` only inside :meth:`Stage.parse` (it imports TRL, and
``python -m eg_grpo.stages --help`` answers without it).

May import: eg_grpo.cli, eg_grpo.data, eg_grpo.eval, eg_grpo.io, eg_grpo.modeling, eg_grpo.sid, eg_grpo.tracking
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass


def _resolve(target: str):
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class Stage:
    """A stage found by name.

    Args:
        name: what ``python -m eg_grpo.stages NAME`` and the chain call it.
        arguments: ``"module:attr"``: a dataclass, a tuple of dataclasses, or a function returning the tuple.
        run: ``"module:function"`` taking the parsed dataclasses, in order; writes the stage folder with
            ``stage.json`` (see :mod:`eg_grpo.io`).
        record: optional ``"module:function"`` with ``run``'s signature returning the ``stage.json``
            record it would write, so the chain skips a current stage without starting a process.
    """

    name: str
    arguments: str
    run: str
    record: str | None = None

    def argument_types(self) -> tuple[type, ...]:
        value = _resolve(self.arguments)
        if dataclasses.is_dataclass(value):
            return (value,)
        return tuple(value() if callable(value) and not isinstance(value, tuple) else value)

    def run_function(self):
        return _resolve(self.run)

    def record_function(self):
        return _resolve(self.record) if self.record else None

    def parse(self, argv: list[str]) -> tuple:
        from eg_grpo.cli import StageParser

        return StageParser(
            self.argument_types(), prog=f"python -m eg_grpo.stages {self.name}"
        ).parse_args_and_config(args=[str(a) for a in argv])


STAGES: dict[str, Stage] = {s.name: s for s in [
    Stage("data", "eg_grpo.stages.data:simulated_arguments", "eg_grpo.stages.data:run_simulated",
          "eg_grpo.stages.data:simulated_record"),
    Stage("amazon_data", "eg_grpo.stages.data:amazon_arguments", "eg_grpo.stages.data:run_amazon"),
    Stage("sids", "eg_grpo.stages.sids:stage_arguments", "eg_grpo.stages.sids:run",
          "eg_grpo.stages.sids:sids_stage_record"),
    Stage("add_items", "eg_grpo.stages.add_items:stage_arguments", "eg_grpo.stages.add_items:run",
          "eg_grpo.stages.add_items:add_items_record"),
    Stage("data_cutoff", "eg_grpo.stages.cutoff:stage_arguments", "eg_grpo.stages.cutoff:run",
          "eg_grpo.stages.cutoff:cutoff_record"),
    Stage("ranker", "eg_grpo.stages.ranker:stage_arguments", "eg_grpo.stages.ranker:run",
          "eg_grpo.stages.ranker:ranker_record"),
    Stage("sft", "eg_grpo.sft.stage:stage_arguments", "eg_grpo.sft.stage:run", "eg_grpo.sft.stage:sft_stage_record"),
    Stage("rl", "eg_grpo.rl.stage:stage_arguments", "eg_grpo.rl.stage:run", "eg_grpo.rl.inputs:rl_stage_record"),
    Stage("evaluate", "eg_grpo.stages.evaluate:stage_arguments", "eg_grpo.stages.evaluate:run",
          "eg_grpo.stages.evaluate:evaluate_stage_record"),
    Stage("arena", "eg_grpo.arena.config:ArenaArguments", "eg_grpo.arena.run:run",
          "eg_grpo.arena.run:arena_stage_record"),
]}  # fmt: skip


def get_stage(name: str) -> Stage:
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; known: {', '.join(STAGES)}")
    return STAGES[name]
