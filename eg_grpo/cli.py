"""The command line of every stage: TRL's parser with our options first in ``--help``.

``TrlParser`` lists a dataclass's fields in definition order, so for ``EGGRPOConfig`` (a
``GRPOConfig`` → ``TrainingArguments`` subclass) the ~30 options this project adds came after
~300 inherited ones, and ``--config`` was not listed at all. :class:`StageParser` parses exactly as
``TrlParser`` does; only the help is arranged differently: ``--config``, then each dataclass's own
options (fields it declares itself), then the options inherited from TRL / transformers classes.

Every recipe runs through :func:`run_recipe`, as ``python -m eg_grpo.stages`` does: a bad setting is
one line on stderr and exit 2, an output folder that may not be replaced exit 3 (no traceback after
the seconds of imports). ``--help`` answers at once, without importing torch: :func:`quick_help`
reads this project's argument dataclasses from their source and lists the model path first; the
~300 inherited TRL / transformers options are behind ``--help_all``.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

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

    def error(self, message):
        """One line instead of argparse's usage block (exit 2, as a bad setting found later)."""
        self.exit(2, f"{self.prog}: error: {message} (--help lists the options)\n")


def _source_fields(target: str) -> list[tuple[str, str, str]]:
    """``(option, default, help)`` of the fields a dataclass of this project declares, read from its source.

    Parsing the source, not importing the module, is what keeps ``--help`` fast: the modules import
    torch and transformers (10-20 s on a busy machine).
    """
    module, _, name = target.partition(":")
    root = Path(__file__).resolve().parents[1]
    path = root.joinpath(*module.split("."))
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    tree = ast.parse(path.read_text())
    cls = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == name)
    fields = []
    for node in cls.body:
        if not isinstance(node, ast.AnnAssign) or not isinstance(node.target, ast.Name):
            continue
        default, help_text = "" if node.value is None else ast.unparse(node.value), ""
        if isinstance(node.value, ast.Call) and getattr(node.value.func, "id", "") == "field":
            keywords = {k.arg: k.value for k in node.value.keywords}
            default = ast.unparse(keywords["default"]) if "default" in keywords else "[]"
            meta = keywords.get("metadata")
            if isinstance(meta, ast.Dict):
                for key, value in zip(meta.keys, meta.values):
                    if isinstance(key, ast.Constant) and key.value == "help":
                        help_text = ast.literal_eval(value) if isinstance(value, ast.Constant) else ""
        fields.append((f"--{node.target.id}", default, help_text))
    return fields


def quick_help(prog: str, own: Sequence[str], inherited: Sequence[str] = (), model_path: bool = False) -> str:
    """``--help`` of a recipe from source: ``--config``, the model path, then each own dataclass's options.

    Args:
        prog: the command, as the usage line shows it.
        own: ``"module:Class"`` of this project's argument dataclasses (their own fields are listed).
        inherited: the TRL / transformers classes whose options ``--help_all`` lists.
        model_path: the recipe takes TRL's ``ModelConfig``: ``--model_name_or_path`` comes first.
    """
    lines = [f"usage: {prog} [--config YAML] [--OPTION VALUE ...]", "",
             "  --config YAML  YAML file whose keys set any option below; the command line overrides it"]  # fmt: skip
    if model_path:
        lines.append(
            "  --model_name_or_path PATH  the model to start from: a stage folder, a hub id or `tiny`"
        )
    for target in own:
        lines += ["", f"{target.rpartition(':')[2]} options:"]
        for option, default, help_text in _source_fields(target):
            lines.append(f"  {option} (default: {default})" + (f"  {help_text}" if help_text else ""))
    if inherited:
        lines += ["", f"Plus the options of {', '.join(inherited)} (learning_rate, num_train_epochs, ...): "
                  f"{prog} --help_all lists all of them."]  # fmt: skip
    return "\n".join(lines)


def guarded(name: str, run: Callable[[], object]) -> int:
    """Runs ``run()`` with the stages' error contract: 0 done (or ``run``'s own int exit status), 2 bad input
    (one line), 3 an output folder that may not be replaced."""
    from eg_grpo.io import StageConflict

    try:
        result = run()
    except StageConflict as err:
        print(f"[{name}] {err}", file=sys.stderr)
        return 3
    except (FileNotFoundError, ValueError) as err:  # bad input: our messages name the fix
        print(f"[{name}] error: {err}", file=sys.stderr)
        return 2
    return result if isinstance(result, int) and not isinstance(result, bool) else 0


def run_recipe(stage: str, run: Callable | None = None, *, own: Sequence[str] = (), inherited: Sequence[str] = (),
               argv: list[str] | None = None) -> int:  # fmt: skip
    """The ``__main__`` of a recipe: fast ``--help``, then the stage's parsing and ``run`` under :func:`guarded`.

    Args:
        stage: the stage's name in :data:`eg_grpo.stages.STAGES` (its dataclasses; shown in messages).
        run: called with the parsed dataclasses (default: the stage's ``run``).
        own, inherited: what ``--help`` lists (see :func:`quick_help`); ``--help_all`` lists everything.
        argv: the arguments (default: ``sys.argv[1:]``).
    """
    from eg_grpo.stages import get_stage

    argv = sys.argv[1:] if argv is None else argv
    prog = (
        shlex.join(["python", sys.argv[0]])
        if sys.argv[0].endswith(".py")
        else f"python -m eg_grpo.stages {stage}"
    )
    if "-h" in argv or "--help" in argv:
        print(quick_help(prog, own, inherited, model_path=any("ModelConfig" in c for c in inherited)))
        return 0
    entry = get_stage(stage)
    if "--help_all" in argv:
        StageParser(entry.argument_types(), prog=prog).print_help()
        return 0
    parser = StageParser(entry.argument_types(), prog=prog)
    return guarded(stage, lambda: (run or entry.run_function())(*parser.parse_args_and_config(args=argv)))


def command_line() -> str:
    """The command that started this process, as a user would retype it (for resume hints)."""
    argv = list(sys.argv)
    if argv and argv[0].endswith(".py"):
        return shlex.join(["python", *argv])
    return shlex.join([sys.executable.rsplit("/", 1)[-1], *argv])
