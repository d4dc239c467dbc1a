"""The command line of every stage: TRL's parser with our options first in ``--help``.

``TrlParser`` lists a dataclass's fields in definition order, so for ``EGGRPOConfig`` (a
``GRPOConfig`` → ``TrainingArguments`` subclass) the ~30 options this project adds came after
~300 inherited ones, and ``--config`` was not listed at all. :class:`StageParser` parses exactly as
``TrlParser`` does; only the help is arranged differently: ``--config``, then each dataclass's own
options (fields it declares itself), then the options inherited from TRL / transformers classes.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys

from trl import TrlParser

_OWN_PACKAGES = ("eg_grpo", "reward_models", "recipes", "__main__")


def _declared_by_us(dtype: type, name: str) -> bool:
    """True when the field is declared by a class of this project (not inherited from TRL / transformers)."""
    for cls in dtype.__mro__:
        if name in getattr(cls, "__annotations__", {}):
            return cls.__module__.split(".")[0] in _OWN_PACKAGES or cls.__module__.startswith("tests")
    return True


class StageParser(TrlParser):
    """``TrlParser`` whose ``--help`` shows ``--config`` and this project's options before inherited ones.

    Args:
        dataclass_types: the stage's argument dataclasses, as for ``TrlParser``.
    """

    def __init__(self, dataclass_types, **kwargs):
        self._deferred: list[tuple[type, list[dataclasses.Field], bool]] = []
        kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
        kwargs.setdefault("usage", "%(prog)s [--config YAML] [--OPTION VALUE ...]  (options: --help)")
        super().__init__(dataclass_types, **kwargs)
        for dtype, inherited, has_own in self._deferred:
            if not inherited:
                continue
            title = f"{dtype.__name__}: options inherited from TRL / transformers"
            if not has_own:  # the dataclass itself is TRL's (SFTConfig, ModelConfig)
                title = f"{dtype.__module__.split('.')[0]}.{dtype.__name__} options"
            group = self.add_argument_group(title)
            for f in inherited:
                self._parse_dataclass_field(group, f)

    def _add_dataclass_arguments(self, dtype):
        from typing import get_type_hints

        if not self._deferred and not any(a.dest == "config" for a in self._actions):
            self.add_argument("--config", metavar="YAML", default=argparse.SUPPRESS,
                              help="YAML file whose keys set any option below; the command line overrides it")  # fmt: skip
        hints = get_type_hints(dtype)
        own, inherited = [], []
        for f in dataclasses.fields(dtype):
            if f.init:
                f.type = hints[f.name]
                (own if _declared_by_us(dtype, f.name) else inherited).append(f)
        if own:
            group = self.add_argument_group(f"{dtype.__name__} options")
            for f in own:
                self._parse_dataclass_field(group, f)
        self._deferred.append((dtype, inherited, bool(own)))


def command_line() -> str:
    """The command that started this process, as a user would retype it (for resume hints)."""
    argv = list(sys.argv)
    if argv and argv[0].endswith(".py"):
        return shlex.join(["python", *argv])
    return shlex.join([sys.executable.rsplit("/", 1)[-1], *argv])
